"""Differential corpus for eval-script generation: random git diffs through the OFFICIAL
get_modified_files / get_test_directives / make_eval_script_list of swebench 4.1.0."""
import json, os, random, subprocess, sys, tempfile
from pathlib import Path
from swebench.harness.constants import MAP_REPO_VERSION_TO_SPECS
from swebench.harness.test_spec.create_scripts import make_eval_script_list
from swebench.harness.test_spec.test_spec import TestSpec

out, seed, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
os.environ["GIT_CONFIG_GLOBAL"] = "/work/scratch/log-projects/e2e/gitconfig"
PATHS = ["tests/test_a.py", "tests/sub dir/test b.py", "tests/data.json", "tests/x.csv", "docs/readme.md",
         "pkg/mod.py", "tests/auth_tests/test_v.py", "sympy/core/tests/test_basic.py", "tests/img.png",
         "tests/conf.toml", "tests/a b/c.py", "testing/test_x.py", "tests/test_ünï.py"]
LINES = ["x = 1", "--- not a header", "+++ nor this", "diff --git a/fake b/fake", "", "@@ -1 +1 @@", "\\ no", "\t", "def f():", "    pass"]
REPOS = [("django/django", "3.0"), ("sympy/sympy", "1.1"), ("pytest-dev/pytest", "5.4"), ("sphinx-doc/sphinx", "3.5"), ("astropy/astropy", "1.3")]


def git(d, *a, **kw):
    return subprocess.run(["git", "-c", "core.quotepath=false", *a], cwd=d, check=True, capture_output=True, **kw).stdout


def content():
    return "\n".join(rng.choice(LINES) for _ in range(rng.randint(0, 6))) + rng.choice(["\n", ""])


cases = []
for i in range(n):
    with tempfile.TemporaryDirectory() as d:
        git(d, "init", "-q"); git(d, "config", "user.email", "f@x"); git(d, "config", "user.name", "f")
        present = {}
        for p in rng.sample(PATHS, rng.randint(0, 6)):
            present[p] = content()
            Path(d, p).parent.mkdir(parents=True, exist_ok=True)
            Path(d, p).write_text(present[p])
        git(d, "add", "-A"); git(d, "commit", "-q", "--allow-empty", "-m", "b")
        for p in list(present):
            r = rng.random()
            if r < 0.3:
                Path(d, p).unlink()
            elif r < 0.45:
                new = rng.choice(PATHS)
                if not Path(d, new).exists():
                    Path(d, new).parent.mkdir(parents=True, exist_ok=True)
                    os.rename(Path(d, p), Path(d, new))
            elif r < 0.55:
                os.chmod(Path(d, p), 0o755)
            else:
                Path(d, p).write_text(content())
        for p in rng.sample(PATHS, rng.randint(0, 2)):
            if not Path(d, p).exists():
                Path(d, p).parent.mkdir(parents=True, exist_ok=True)
                Path(d, p).write_bytes(bytes(rng.randrange(256) for _ in range(8)) if rng.random() < 0.2 else content().encode())
        git(d, "add", "-A")
        args = ["diff", "--cached"] + (["-M"] if rng.random() < 0.5 else ["--no-renames"]) + (["--binary"] if rng.random() < 0.3 else [])
        patch = git(d, *args).decode("utf-8", "replace")
    repo, version = rng.choice(REPOS)
    inst = {"instance_id": f"p__p-{i}", "repo": repo, "version": version, "base_commit": "e" * 40, "patch": "",
            "test_patch": patch, "problem_statement": "", "FAIL_TO_PASS": [], "PASS_TO_PASS": []}
    try:
        lst = make_eval_script_list(inst, MAP_REPO_VERSION_TO_SPECS[repo][version], "testbed", "/testbed", inst["base_commit"], patch)
        script = TestSpec(instance_id="x", repo=repo, version=version, repo_script_list=[], eval_script_list=lst,
                          env_script_list=[], arch="x86_64", FAIL_TO_PASS=[], PASS_TO_PASS=[], language="py",
                          docker_specs={}, namespace=None).eval_script
        cases.append({"instance": inst, "v4": {"ok": script}})
    except Exception as e:
        cases.append({"instance": inst, "v4": {"raises": type(e).__name__ + ": " + str(e)[:100]}})
Path(out).write_text(json.dumps(cases, ensure_ascii=False))
print(len(cases), sum("raises" in c["v4"] for c in cases), "raise")
