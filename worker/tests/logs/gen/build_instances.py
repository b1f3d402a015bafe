"""Build the hand-made instances whose eval scripts the official harness generates."""
import json
import os
import subprocess
import tempfile
from pathlib import Path

OUT = Path("/work/main/worker/tests/logs/scripts")
OUT.mkdir(parents=True, exist_ok=True)
E2E = Path("/work/scratch/log-projects/e2e")
os.environ["GIT_CONFIG_GLOBAL"] = str(E2E / "gitconfig")


def git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def make_patch(before: dict, after: dict) -> str:
    """A `git diff` from files `before` to files `after` (None deletes)."""
    with tempfile.TemporaryDirectory() as d:
        git(d, "init", "-q")
        git(d, "config", "user.email", "fixture@steerbench.invalid")
        git(d, "config", "user.name", "fixture")
        for path, text in before.items():
            p = Path(d, path); p.parent.mkdir(parents=True, exist_ok=True); p.write_text(text)
        git(d, "add", "-A"); git(d, "commit", "-q", "--allow-empty", "-m", "base")
        for path, text in after.items():
            p = Path(d, path)
            if text is None:
                p.unlink()
            else:
                p.parent.mkdir(parents=True, exist_ok=True); p.write_text(text)
        git(d, "add", "-A")
        return git(d, "diff", "--cached")


def instance(iid, repo, version, base, test_patch, f2p, p2p, patch=""):
    return {
        "instance_id": iid, "repo": repo, "version": version, "base_commit": base,
        "patch": patch, "test_patch": test_patch, "problem_statement": "hand-made fixture",
        "hints_text": "", "created_at": "2024-01-01T00:00:00Z", "environment_setup_commit": base,
        "FAIL_TO_PASS": f2p, "PASS_TO_PASS": p2p,
    }


cases = {}
cases["django"] = instance(
    "django__django-99901", "django/django", "3.0", "a" * 40,
    make_patch(
        {"tests/auth_tests/test_validators.py": "from django.test import SimpleTestCase\n\n\nclass V(SimpleTestCase):\n    def test_old(self):\n        pass\n",
         "tests/auth_tests/fixtures/users.json": "[]\n",
         "tests/i18n/sampleproject/old.py": "x = 1\n"},
        {"tests/auth_tests/test_validators.py": "from django.test import SimpleTestCase\n\n\nclass V(SimpleTestCase):\n    def test_old(self):\n        pass\n\n    def test_new(self):\n        pass\n",
         "tests/auth_tests/fixtures/users.json": "[{}]\n",
         "tests/i18n/sampleproject/old.py": None,
         "tests/migrations/test_new_module.py": "def test():\n    pass\n"}),
    ["test_new (auth_tests.test_validators.V)"], ["test_old (auth_tests.test_validators.V)"])
cases["sympy"] = instance(
    "sympy__sympy-99902", "sympy/sympy", "1.1", "b" * 40,
    make_patch(
        {"sympy/core/tests/test_basic.py": "def test_a():\n    assert True\n",
         "sympy/printing/tests/test_latex.py": "def test_l():\n    pass\n"},
        {"sympy/core/tests/test_basic.py": "def test_a():\n    assert True\n\n\ndef test_b():\n    assert True\n",
         "sympy/printing/tests/test_latex.py": "def test_l():\n    pass\n\n\ndef test_m():\n    pass\n"}),
    ["test_b", "test_m"], ["test_a", "test_l"])
cases["pytest-dev"] = instance(
    "pytest-dev__pytest-99903", "pytest-dev/pytest", "5.4", "c" * 40,
    make_patch(
        {"testing/test_terminal.py": "def test_a():\n    pass\n", "doc/en/changelog.rst": "old\n"},
        {"testing/test_terminal.py": "def test_a():\n    pass\n\n\ndef test_b():\n    pass\n", "doc/en/changelog.rst": "new\n",
         "testing/example_scripts/data.txt": "payload\n"}),
    ["testing/test_terminal.py::test_b"], ["testing/test_terminal.py::test_a"])
cases["new-files-only"] = instance(
    "sphinx-doc__sphinx-99904", "sphinx-doc/sphinx", "3.5", "d" * 40,
    make_patch({}, {"tests/roots/test-ext/conf.py": "x = 1\n", "tests/test_ext_new.py": "def test_new():\n    pass\n"}),
    ["tests/test_ext_new.py::test_new"], [])

repo = E2E / "repo"
cases["e2e-flask"] = instance(
    "pallets__flask-99905", "pallets/flask", "2.3", git(repo, "rev-parse", "HEAD").strip(),
    (E2E / "test.patch").read_text(),
    ["tests/test_calc.py::test_add", "tests/test_calc.py::test_add_param[1-2]", "tests/test_calc.py::test_add_param[10-"],
    ["tests/test_calc.py::test_sub"],
    patch=(E2E / "model.patch").read_text())

for name, inst in cases.items():
    (OUT / f"{name}.instance.json").write_text(json.dumps(inst, indent=2) + "\n")
    print(name, inst["instance_id"])
