"""Expected status maps for the committed log samples, computed by the OFFICIAL parsers.

Run once with swebench 5.0.2 (writes *.expected.json) and once with swebench 4.1.0
(writes *.expected.v4.json). The parser functions are called exactly as get_logs_eval calls
them: parser(log_text, test_spec); the Python parsers ignore test_spec.
"""
import json
import sys
from pathlib import Path

import swebench
from swebench.harness.log_parsers import python as P

LOGS = Path(sys.argv[1])
V4 = swebench.__version__.startswith("4.")
# sample -> [primary parser, extra parsers...]
SAMPLES = {
    "pytest-current": ["pytest", "pytest_options", "pytest_v2", "matplotlib"],
    "pytest-old": ["pytest", "pytest_options", "pytest_v2"],
    "pytest-classic-verbose": ["pytest_v2", "pytest"],
    "pytest-color": ["pytest_v2", "pytest"],
    "pytest-collect-error": ["pytest", "pytest_v2"],
    "seaborn-nohead": ["seaborn"],
    "seaborn-verbose": ["seaborn", "pytest_v2"],
    "matplotlib-py39": ["matplotlib", "pytest"],
    "django-3.2": ["django"],
    "django-4.2": ["django"],
    "sympy-1.5": ["sympy"],
    "sympy-1.14": ["sympy"],
}
for name, parsers in SAMPLES.items():
    # read as the harness reads test_output.txt: open() in text mode, universal newlines
    text = (LOGS / f"{name}.log").read_text()
    for i, parser in enumerate(parsers):
        fn = getattr(P, f"parse_log_{parser}")
        result = fn(text, None)
        stem = name if i == 0 else f"{name}.{parser}"
        out = LOGS / (f"{stem}.expected.v4.json" if V4 else f"{stem}.expected.json")
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(swebench.__version__, out.name, len(result))
