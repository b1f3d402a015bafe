"""Generate the Rust spec table from swebench 4.1.0's MAP_REPO_VERSION_TO_SPECS_PY."""
import json
from swebench.harness.constants.python import MAP_REPO_VERSION_TO_SPECS_PY as M
from swebench.harness.log_parsers.python import MAP_REPO_TO_PARSER_PY as P

SKIP = {"dbt-labs/dbt-core", "swe-bench/humaneval"}
def rs(s):
    return json.dumps(s, ensure_ascii=False)

out = []
for repo, vs in M.items():
    if repo in SKIP:
        continue
    groups = []
    for v, s in vs.items():
        key = (s["test_cmd"], s.get("install"), tuple(s.get("eval_commands", [])))
        for g in groups:
            if g[0] == key:
                g[1].append(v); break
        else:
            groups.append((key, [v]))
    parser = P[repo].__name__
    for (cmd, install, ev), versions in groups:
        assert isinstance(cmd, str)
        out.append("    RepoVersions {\n"
                   f"        repo: {rs(repo)},\n"
                   f"        versions: &[{', '.join(rs(v) for v in versions)}],\n"
                   f"        test_cmd: {rs(cmd)},\n"
                   f"        install: {('Some(' + rs(install) + ')') if install else 'None'},\n"
                   f"        eval_commands: &[{', '.join(rs(e) for e in ev)}],\n"
                   "    },")
print("\n".join(out))
import sys
print({r: P[r].__name__ for r in M if r not in SKIP}, file=sys.stderr)
