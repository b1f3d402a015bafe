"""Differential corpus: random logs through the OFFICIAL parsers and get_eval_report.

Usage: python fuzz_gen.py OUT.json SEED N   (run with swebench 5.0.2; it imports 4.1.0's
parsers/grading from the other venv's site-packages under a different module name).
"""
import importlib.util
import json
import random
import sys
import tempfile
import types
from pathlib import Path

out, seed, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)

import swebench.harness.log_parsers.python as P5
from swebench.harness import grading as G5
from swebench.harness.utils import make_test_spec as make5

# load v4's grading + parsers as a separate package tree
V4ROOT = Path("/work/scratch/logs-venv4/lib/python3.11/site-packages")
sys.path.insert(0, str(V4ROOT))
import importlib
for m in [k for k in sys.modules if k == "swebench" or k.startswith("swebench.")]:
    sys.modules[f"_v5_{m}"] = sys.modules.pop(m)
import swebench as sw4  # noqa
assert sw4.__version__.startswith("4."), sw4.__version__
import swebench.harness.log_parsers.python as P4
from swebench.harness import grading as G4
from swebench.harness.test_spec.test_spec import TestSpec as TS4

NAMES = ["t.py::a", "t.py::b[x", "t.py::b[x-1]", "t.py::b[x-2]", "t.py::c[/p/q/r]", "t.py::d[a b]",
         "test_a", "test_b", "test_a (m.T)", "test_b (m.T.test_b)", "s/x.py:test_a", "[1]", "[100%]",
         "t.py::e[MouseButton.LEFT]", "t.py::f[//srv]", "t.py::g[/a/*]"]
STATUS = ["PASSED", "FAILED", "SKIPPED", "ERROR", "XFAIL", "XPASS", "ERROR:", "FAIL:", "PASSEDx", "ok", "F", "E"]
SEP = [" ", "  ", "\t", "\u00a0", "\u001c", " - ", " ... ", " ...  ", "\u2003"]
JUNK = ["", "ok", "okay", "System check identified no issues (0 silenced)", "Internal Server Error: /x/",
        "Testing against Django installed in '/x' silenced).", "____ s/x.py:test_b ____",
        "\x1b[32mPASSED\x1b[0m t.py::a", "collected 0 items", "3 passing", ">>>>> Test Exit Code: 1",
        "--version is equivalent to version", "Applying sites.0002_alter_domain_unique...test_no_migrations (m.T) ... ok",
        "t.py::a PASSED [ 50%]", " PASSED ", "skipped 'x'", "\r", "\u0085"]


def fragment():
    r = rng.random()
    if r < 0.35:
        return rng.choice(STATUS) + rng.choice(SEP) + rng.choice(NAMES) + (rng.choice(SEP) + rng.choice(STATUS) if rng.random() < 0.3 else "")
    if r < 0.55:
        return rng.choice(NAMES) + rng.choice([" ... ok", " ... OK", " ...  OK", " ... FAIL", " ... ERROR", " ... skipped 'why'", " PASSED", " FAILED", " XFAIL", " ok", " F", " E", " ... "])
    if r < 0.7:
        return rng.choice(["FAIL: ", "ERROR: ", "FAILED ", "PASSED "]) + rng.choice(NAMES) + rng.choice(["", " - msg - more", " (m.T)"])
    if r < 0.8:
        return rng.choice(SEP).strip(" ") + rng.choice(JUNK)
    return "".join(rng.choice(JUNK + NAMES + STATUS + SEP) for _ in range(rng.randint(1, 4)))


def make_log():
    return "\n".join(fragment() for _ in range(rng.randint(0, 12)))


PARSERS = ["pytest", "pytest_options", "pytest_v2", "django", "seaborn", "sympy", "matplotlib"]
REPO_OF = {"pytest": "pytest-dev/pytest", "pytest_options": "psf/requests", "pytest_v2": "astropy/astropy",
           "django": "django/django", "seaborn": "mwaskom/seaborn", "sympy": "sympy/sympy", "matplotlib": "matplotlib/matplotlib"}
VERSION_OF = {"pytest-dev/pytest": "5.4", "psf/requests": "2.27", "astropy/astropy": "5.1", "django/django": "3.0",
              "mwaskom/seaborn": "0.12", "sympy/sympy": "1.1", "matplotlib/matplotlib": "3.5"}


def run(fn, *a):
    try:
        return {"ok": fn(*a)}
    except Exception as e:  # the harness would raise: no report
        return {"raises": type(e).__name__}


def pairs(result):
    # the harness's dict order matters (v5's truncated-id match takes the first key)
    return {"ok": list(result["ok"].items())} if "ok" in result else result


cases = []
for i in range(n):
    log = make_log()
    parser = rng.choice(PARSERS)
    case = {"kind": "parse", "parser": parser, "log": log,
            "v5": pairs(run(getattr(P5, f"parse_log_{parser}"), log, None)),
            "v4": pairs(run(getattr(P4, f"parse_log_{parser}"), log, None))}
    cases.append(case)
    # full-log grading
    body = make_log()
    exit_code = rng.choice([None, 0, 1, 2])
    parts = ["+ git apply -v -", rng.choice(["", make_log()])]
    if rng.random() < 0.95:
        parts.append("+ : '>>>>> Start Test Output'")
    parts.append(body)
    if exit_code is not None:
        parts.append(f"+ SWEBENCH_TEST_EXIT_CODE={exit_code}")
    if rng.random() < 0.95:
        parts.append("+ : '>>>>> End Test Output'")
    if exit_code is not None:
        parts.append(f"+ echo '>>>>> Test Exit Code: {exit_code}'\n>>>>> Test Exit Code: {exit_code}")
    parts.append(rng.choice(["", make_log(), ">>>>> Tests Errored"]) if rng.random() < 0.2 else "")
    full = "\n".join(parts)
    repo = REPO_OF[parser]
    pool = NAMES + ["t.py::b[", "t.py::b[x-", "t.py::zz"]
    f2p = rng.sample(pool, rng.randint(0, 3))
    p2p = rng.sample(pool, rng.randint(0, 3))
    inst = {"instance_id": f"fuzz__case-{i}", "repo": repo, "version": VERSION_OF[repo], "base_commit": "a" * 40,
            "patch": "", "test_patch": "", "problem_statement": "", "FAIL_TO_PASS": f2p, "PASS_TO_PASS": p2p}
    pred = {"instance_id": inst["instance_id"], "model_name_or_path": "m", "model_patch": "diff"}
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(full)
        path = f.name
    spec5 = make5(dict(inst, eval_script="true", image="x", log_parser=f"parse_log_{parser}", eval_type="pass_and_fail"))
    spec4 = TS4(instance_id=inst["instance_id"], repo=repo, version=inst["version"], repo_script_list=[],
                eval_script_list=[], env_script_list=[], arch="x86_64", FAIL_TO_PASS=f2p, PASS_TO_PASS=p2p,
                language="py", docker_specs={}, namespace=None)
    cases.append({"kind": "grade", "instance": inst, "log": full,
                  "v5": run(G5.get_eval_report, spec5, pred, path, True),
                  "v4": run(G4.get_eval_report, spec4, pred, path, True)})
    Path(path).unlink()
Path(out).write_text(json.dumps(cases, ensure_ascii=False))
print(len(cases), sum(1 for c in cases if "raises" in c["v5"] or "raises" in c["v4"]), "raise")
