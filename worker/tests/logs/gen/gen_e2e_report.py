"""Grade the end-to-end eval log with the OFFICIAL get_eval_report (include_tests_status=True)."""
import json
import sys
from pathlib import Path

import swebench

LOGS = Path(sys.argv[1])
V4 = swebench.__version__.startswith("4.")
inst = json.loads((LOGS / "scripts/e2e-flask.instance.json").read_text())
pred = {"instance_id": inst["instance_id"], "model_name_or_path": "fixture", "model_patch": inst["patch"]}
log_path = str(LOGS / "e2e-flask.eval.log")
if V4:
    from swebench.harness.grading import get_eval_report
    from swebench.harness.test_spec.test_spec import TestSpec
    spec = TestSpec(instance_id=inst["instance_id"], repo=inst["repo"], version=inst["version"],
                    repo_script_list=[], eval_script_list=[], env_script_list=[], arch="x86_64",
                    FAIL_TO_PASS=inst["FAIL_TO_PASS"], PASS_TO_PASS=inst["PASS_TO_PASS"],
                    language="py", docker_specs={}, namespace=None)
    out = LOGS / "e2e-flask.report.v4.json"
else:
    from swebench.harness.grading import get_eval_report
    from swebench.harness.utils import make_test_spec
    spec = make_test_spec(dict(inst, eval_script=(LOGS / "scripts/e2e-flask.eval.v4.sh").read_text(),
                               image="x", log_parser="parse_log_flask", eval_type="pass_and_fail"))
    out = LOGS / "e2e-flask.report.json"
report = get_eval_report(spec, pred, log_path, include_tests_status=True)
out.write_text(json.dumps(report, indent=4) + "\n")
print(swebench.__version__, json.dumps(report))
