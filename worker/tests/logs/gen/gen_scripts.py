"""Expected eval scripts from the OFFICIAL harness's make_test_spec.

swebench 4.1.0: make_test_spec(instance).eval_script             -> <name>.eval.v4.sh
                (make_test_spec also builds the env script, which downloads requirements from
                GitHub, unreachable here; so the eval part of make_test_spec is called as it
                calls it: make_eval_script_list(...) wrapped in TestSpec(...).eval_script)
swebench 5.0.2: make_test_spec(instance + the v4 script as the
                dataset's eval_script, image, log_parser, eval_type).eval_script -> <name>.eval.v5.sh
"""
import json
import sys
from pathlib import Path

import swebench

DIR = Path(sys.argv[1])
V4 = swebench.__version__.startswith("4.")
PARSERS = {"django/django": "parse_log_django", "sympy/sympy": "parse_log_sympy",
           "pytest-dev/pytest": "parse_log_pytest", "sphinx-doc/sphinx": "parse_log_sphinx",
           "pallets/flask": "parse_log_flask"}
for f in sorted(DIR.glob("*.instance.json")):
    name = f.name[: -len(".instance.json")]
    inst = json.loads(f.read_text())
    if V4:
        from swebench.harness.constants import MAP_REPO_VERSION_TO_SPECS
        from swebench.harness.test_spec.create_scripts import make_eval_script_list
        from swebench.harness.test_spec.test_spec import TestSpec
        specs = MAP_REPO_VERSION_TO_SPECS[inst["repo"]][inst["version"]]
        eval_list = make_eval_script_list(
            inst, specs, "testbed", "/testbed", inst["base_commit"], inst["test_patch"])
        spec = TestSpec(instance_id=inst["instance_id"], repo=inst["repo"], version=inst["version"],
                        repo_script_list=[], eval_script_list=eval_list, env_script_list=[],
                        arch="x86_64", FAIL_TO_PASS=inst["FAIL_TO_PASS"], PASS_TO_PASS=inst["PASS_TO_PASS"],
                        language="py", docker_specs={}, namespace=None)
        script = spec.eval_script
        (DIR / f"{name}.eval.v4.sh").write_text(script)
    else:
        from swebench.harness.utils import make_test_spec
        inst = dict(inst, eval_script=(DIR / f"{name}.eval.v4.sh").read_text(),
                    image="swebench/sweb.eval.x86_64." + inst["instance_id"].replace("__", "_1776_") + ":latest",
                    log_parser=PARSERS[inst["repo"]], eval_type="pass_and_fail")
        script = make_test_spec(inst).eval_script
        (DIR / f"{name}.eval.v5.sh").write_text(script)
    print(swebench.__version__, name, len(script))
