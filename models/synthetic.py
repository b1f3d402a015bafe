"""Synthetic agent trajectories on the fixture tasks, for training and testing the shipped scorer.

**Synthetic data.** Nothing here was produced by a model or an agent. Each trajectory is put
together from templates: the fixture tasks' issues, repositories, gold patches and tests
(docker/fixtures/), the replay agent's scripted turns (examples/replay/), and command outputs made
up to look like what those commands print (file listings and file slices are real, test runs
and reproductions are made up from the tasks' tests and issue texts).

A trajectory is the list of messages an agent of the bash-only scaffold sees (system prompt,
instance prompt, then assistant turns and observations), as the critic reads it:

- productive (label 1): looks around, reads the code, reproduces the bug, edits, re-runs and runs
  the tests, which pass; sometimes a test fails after an edit and the agent repairs it; sometimes
  the trajectory is cut early (still on track);
- unproductive (label 0), after 0-5 productive steps: the same command run again and again; the
  same error over and over whatever the agent tries; edit after edit without ever running
  anything; format errors (no bash block, two blocks, a block in another language).

Every choice comes from a `random.Random` seeded from the example's (task, family, index), so
the data are the same on every run.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "docker" / "fixtures"
REPLAY = ROOT / "examples" / "replay"
TEMPLATES = ROOT / "protocol" / "templates"

SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"

# Tasks whose trajectories are held out of training (the scorer's test split).
HELD_OUT_TASKS = ("steerbench__textkit-2", "steerbench__jsonpath-lite-3")


@dataclass
class Task:
    instance_id: str
    repo: str  # fixture repository directory name
    package: str
    problem_statement: str
    patch: str
    test_patch: str
    fail_to_pass: list[str]
    pass_to_pass: list[str]
    files: dict[str, str]  # path -> text, the repository at its base commit
    history: list[str]  # commit messages, oldest first
    scenario: list[str]  # the replay agent's solving turns (assistant contents)
    edited: list[str] = field(default_factory=list)  # files the gold patch edits


def _jinja():
    import jinja2

    # As Hugging Face renders chat templates; the protocol's templates need no more.
    return jinja2.Environment(trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=False)


def load_tasks() -> list[Task]:
    tasks = []
    for line in (FIXTURES / "dataset.jsonl").read_text().splitlines():
        rec = json.loads(line)
        repo = rec["repo"].split("/", 1)[1]
        tree = FIXTURES / "repos" / repo / "tree"
        files = {
            str(p.relative_to(tree)): p.read_text()
            for p in sorted(tree.rglob("*"))
            if p.is_file() and p.name != "LICENSE"
        }
        meta = json.loads((FIXTURES / "repos" / repo / "repo.json").read_text())
        scenario = tomllib.loads((REPLAY / f"{rec['instance_id']}.toml").read_text())
        task = Task(
            instance_id=rec["instance_id"],
            repo=repo,
            package=meta["package"],
            problem_statement=rec["problem_statement"],
            patch=rec["patch"],
            test_patch=rec["test_patch"],
            fail_to_pass=json.loads(rec["FAIL_TO_PASS"]),
            pass_to_pass=json.loads(rec["PASS_TO_PASS"]),
            files=files,
            history=[c["message"] for c in meta["history"]],
            scenario=[t["content"].strip() for t in scenario["turns"]],
        )
        task.edited = re.findall(r"^\+\+\+ b/(\S+)", task.patch, re.M)
        tasks.append(task)
    return tasks


# ---------------------------------------------------------------------------------------------
# Command outputs


def _hash7(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:7]


def ls_la(task: Task, rng: random.Random, path: str = "") -> str:
    entries = set()
    prefix = f"{path}/" if path else ""
    for p in task.files:
        if p.startswith(prefix):
            entries.add(p[len(prefix) :].split("/", 1)[0])
    if not path:
        entries |= {".git", "LICENSE"}
    lines = [f"total {8 * len(entries) + 8}", "drwxr-xr-x 1 root root 4096 Jan 14 08:30 .",
             "drwxr-xr-x 1 root root 4096 Jan 14 08:31 .."]
    for name in sorted(entries):
        full = prefix + name
        is_dir = name == ".git" or any(p.startswith(full + "/") for p in task.files)
        size = 4096 if is_dir else len(task.files.get(full, "x" * 11357))
        kind = "drwxr-xr-x" if is_dir else "-rw-r--r--"
        lines.append(f"{kind} 1 root root {size:5d} Jan 14 08:30 {name}")
    return "\n".join(lines)


def ls_plain(task: Task, path: str) -> str:
    names = sorted({p[len(path) + 1 :].split("/", 1)[0] for p in task.files if p.startswith(path + "/")})
    return "\n".join(names)


def git_log(task: Task, n: int = 5) -> str:
    return "\n".join(f"{_hash7(m)} {m}" for m in reversed(task.history[-n:]))


def source_files(task: Task) -> list[str]:
    return [p for p in task.files if p.endswith(".py") and not p.startswith("tests/")]


def test_files(task: Task) -> list[str]:
    return [p for p in task.files if p.startswith("tests/test_")]


def sed_lines(task: Task, path: str, a: int, b: int) -> str:
    lines = task.files[path].splitlines()
    return "\n".join(lines[a - 1 : b])


def nl_lines(task: Task, path: str, a: int, b: int) -> str:
    lines = task.files[path].splitlines()
    return "\n".join(f"{i:6d}\t{lines[i - 1]}" for i in range(a, min(b, len(lines)) + 1))


def grep_n(task: Task, word: str, paths: list[str]) -> str:
    out = []
    for p in paths:
        for i, line in enumerate(task.files[p].splitlines(), 1):
            if word in line:
                out.append(f"{p}:{i}:{line}" if len(paths) > 1 else f"{i}:{line}")
    return "\n".join(out[:40])


def hunk_start(task: Task, path: str) -> int:
    m = re.search(r"^\+\+\+ b/" + re.escape(path) + r"\n@@ -(\d+)", task.patch, re.M)
    return int(m.group(1)) if m else 1


def patch_words(task: Task) -> list[str]:
    """Identifiers on the lines the gold patch removes or keeps as context: what an agent greps for."""
    words = []
    for line in task.patch.splitlines():
        if line.startswith(("-", " ")) and not line.startswith("---"):
            words += re.findall(r"[A-Za-z_][A-Za-z0-9_]{3,}", line)
    seen = []
    for w in words:
        if w not in seen and w not in ("self", "return", "def", "class", "None", "import", "from"):
            seen.append(w)
    return seen[:12] or [task.package]


def diff_stat(task: Task) -> str:
    stats = []
    for block in re.split(r"^diff --git ", task.patch, flags=re.M)[1:]:
        path = re.search(r"^\+\+\+ b/(\S+)", block, re.M)
        if not path:
            continue
        plus = sum(1 for l in block.splitlines() if l.startswith("+") and not l.startswith("+++"))
        minus = sum(1 for l in block.splitlines() if l.startswith("-") and not l.startswith("---"))
        stats.append((path.group(1), plus, minus))
    width = max(len(p) for p, _, _ in stats)
    lines = [f" {p:<{width}} | {pl + mi:2d} {'+' * pl}{'-' * mi}" for p, pl, mi in stats]
    ins = sum(s[1] for s in stats)
    dels = sum(s[2] for s in stats)
    lines.append(f" {len(stats)} file{'s' if len(stats) > 1 else ''} changed, {ins} insertions(+), {dels} deletions(-)")
    return "\n".join(lines)


def examples(task: Task) -> tuple[list[str], list[str]]:
    """The issue's `>>>` lines (inputs) and what it says they print today (the bug)."""
    inputs, outputs = [], []
    for block in re.findall(r"```python\n(.*?)```", task.problem_statement, re.S):
        for line in block.splitlines():
            if line.startswith(">>> "):
                inputs.append(line[4:])
            elif line.strip() and inputs:
                outputs.append(line)
    return inputs, outputs


def expected_values(task: Task) -> list[str]:
    """What the fixed code gives: the right-hand sides of the test patch's new assertions."""
    vals = []
    for line in task.test_patch.splitlines():
        m = re.match(r"\+\s+assert (.+?) == (.+)$", line)
        if m:
            vals.append(f"{m.group(1)} -> {m.group(2)}")
    return vals[:8] or ["ok"]


def pytest_pass(task: Task, rng: random.Random, verbose: bool = False) -> str:
    n = len(task.pass_to_pass) + len(task.fail_to_pass) // 2
    secs = rng.choice(["0.03", "0.04", "0.05", "0.06", "0.08", "0.11"])
    if verbose:
        lines = [f"PASSED {t}" for t in task.pass_to_pass[:30]]
        return "\n".join(
            ["=" * 29 + " test session starts " + "=" * 30, "platform linux -- Python 3.11.9, pytest-8.3.4",
             f"collected {n} items", "", "." * n + " " * max(1, 60 - n) + "[100%]", "",
             "=" * 28 + " short test summary info " + "=" * 27] + lines + [f"{'=' * 30} {n} passed in {secs}s {'=' * 30}"]
        )
    return "." * n + " " * max(1, 60 - n) + f"[100%]\n{n} passed in {secs}s"


def pytest_fail(task: Task, rng: random.Random, error: str) -> str:
    n = len(task.pass_to_pass)
    k = rng.randint(1, 3)
    failed = rng.sample(task.pass_to_pass, k)
    lines = ["." * (n - k) + "F" * k + " " * max(1, 60 - n) + "[100%]", "=" * 30 + " FAILURES " + "=" * 30]
    for t in failed:
        name = t.split("::")[-1]
        lines += [f"{'_' * 20} {name} {'_' * 20}", "", f"    def {name.split('[')[0]}():", f">       {error}", f"E       {error}", ""]
    lines.append("=" * 26 + " short test summary info " + "=" * 26)
    lines += [f"FAILED {t} - {error}" for t in failed]
    lines.append(f"{k} failed, {n - k} passed in 0.0{rng.randint(4, 9)}s")
    return "\n".join(lines)


def repro_script(task: Task) -> str:
    inputs, _ = examples(task)
    imports = [i for i in inputs if i.startswith(("from ", "import "))]
    calls = [i for i in inputs if not i.startswith(("from ", "import "))]
    body = "\n".join(imports) + "\n\n" + "\n".join(
        f"try:\n    print({c!r}, '->', repr({c}))\nexcept Exception as exc:\n    print({c!r}, '->', type(exc).__name__, exc)"
        for c in calls
    )
    return f"cat > /tmp/repro.py <<'EOF'\n{body.strip()}\nEOF\nPYTHONPATH=. python /tmp/repro.py"


def repro_output_before(task: Task) -> str:
    inputs, outputs = examples(task)
    calls = [i for i in inputs if not i.startswith(("from ", "import "))]
    outs = [o for o in outputs if not o.strip().startswith(("Traceback", "..."))]
    return "\n".join(f"{c} -> {outs[i] if i < len(outs) else 'None'}" for i, c in enumerate(calls))


def repro_output_after(task: Task) -> str:
    return "\n".join(expected_values(task))


# ---------------------------------------------------------------------------------------------
# Steps: (assistant content, observation text or None for a format error)


@dataclass
class Step:
    thought: str
    command: str | None  # None: a format error (the content is raw)
    output: str
    returncode: int = 0
    raw: str | None = None  # the assistant content, for format errors

    def content(self) -> str:
        if self.raw is not None:
            return self.raw
        return f"THOUGHT: {self.thought}\n\n```bash\n{self.command}\n```"


def explore_steps(task: Task, rng: random.Random) -> list[Step]:
    pkg = task.package
    pool = [
        Step("Let me start by looking at the repository layout.", "ls -la", ls_la(task, rng)),
        Step("Let me look at the repository layout and its recent history.",
             f"ls -la && git log --oneline | head -5 && ls {pkg} tests",
             ls_la(task, rng) + "\n" + git_log(task) + "\n" + ls_plain(task, pkg) + "\n" + ls_plain(task, "tests")),
        Step("I want to see which Python files the package has.", f"find . -name '*.py' -not -path './.git/*' | sort",
             "\n".join("./" + p for p in sorted(p for p in task.files if p.endswith(".py")))),
        Step("Let me read the README to understand what the project does.", "head -40 README.md",
             "\n".join(task.files["README.md"].splitlines()[:40])),
        Step("Let me check the recent history of the repository.", "git log --oneline -5", git_log(task)),
        Step("Let me list the package and the tests.", f"ls {pkg} tests", ls_plain(task, pkg) + "\n" + ls_plain(task, "tests")),
    ]
    return rng.sample(pool, rng.randint(1, 3))


def read_steps(task: Task, rng: random.Random) -> list[Step]:
    path = rng.choice(task.edited) if task.edited else rng.choice(source_files(task))
    if path not in task.files:
        path = rng.choice(source_files(task))
    words = patch_words(task)
    start = max(1, hunk_start(task, path) - rng.randint(0, 10))
    end = start + rng.randint(20, 45)
    pool = [
        Step(f"The issue points at `{path}`; let me read it.", f"cat {path}",
             "\n".join(task.files[path].splitlines()[:120])),
        Step(f"Let me look at the relevant part of `{path}`.", f"sed -n {start},{end}p {path}", sed_lines(task, path, start, end)),
        Step(f"Let me find where `{words[0]}` is used.", f"grep -rn '{words[0]}' {task.package}",
             grep_n(task, words[0], source_files(task))),
        Step(f"Let me view `{path}` with line numbers around the code in question.",
             f"nl -ba {path} | sed -n {start},{end}p", nl_lines(task, path, start, end)),
    ]
    if len(words) > 1:
        w = rng.choice(words[1:])
        pool.append(Step(f"Let me see where `{w}` appears.", f"grep -n '{w}' {path}", grep_n(task, w, [path])))
    tf = rng.choice(test_files(task))
    pool.append(Step("Let me look at the existing tests for this part of the code.", f"head -60 {tf}",
                     "\n".join(task.files[tf].splitlines()[:60])))
    return rng.sample(pool, rng.randint(1, 3))


def reproduce_step(task: Task, rng: random.Random) -> Step:
    thought = rng.choice([
        "Let me reproduce the problem from the issue before changing anything.",
        "Before editing, I will write a small script with the issue's examples to confirm the bug.",
        "Let me confirm the behaviour described in the issue with a reproduction script.",
    ])
    return Step(thought, repro_script(task), repro_output_before(task))


def edit_step(task: Task, rng: random.Random) -> Step:
    thought = rng.choice([
        "I understand the cause now. Let me apply the fix.",
        "The fix is small: let me edit the code accordingly.",
        "Now I will change the implementation so that it handles this case.",
    ])
    if rng.random() < 0.6:
        cmd = f"git apply <<'PATCH'\n{task.patch.strip()}\nPATCH\ngit diff --stat"
        return Step(thought, cmd, diff_stat(task))
    path = task.edited[0] if task.edited else source_files(task)[0]
    removed = [l[1:] for l in task.patch.splitlines() if l.startswith("-") and not l.startswith("---")]
    added = [l[1:] for l in task.patch.splitlines() if l.startswith("+") and not l.startswith("+++")]
    old = (removed or ["pass"])[0].strip().replace("'", "")
    new = (added or ["pass"])[0].strip().replace("'", "")
    cmd = f"python - <<'EOF'\nfrom pathlib import Path\n\npath = Path({path!r})\nsource = path.read_text()\nsource = source.replace({old!r}, {new!r})\npath.write_text(source)\nEOF\ngit diff --stat"
    return Step(thought, cmd, diff_stat(task))


def verify_step(task: Task, rng: random.Random) -> Step:
    return Step(rng.choice(["Let me re-run the reproduction script.", "Now let me check the fix with the reproduction script."]),
                "PYTHONPATH=. python /tmp/repro.py", repro_output_after(task))


def test_step(task: Task, rng: random.Random) -> Step:
    verbose = rng.random() < 0.3
    cmd = rng.choice(["python -m pytest -q", "pytest -q", "python -m pytest -q tests"]) if not verbose else "pytest -rA"
    return Step(rng.choice(["Let me run the test suite to check nothing else broke.", "Now the existing tests.",
                            "Let me run the repository's tests."]), cmd, pytest_pass(task, rng, verbose))


def broken_edit_pair(task: Task, rng: random.Random) -> list[Step]:
    """An edit that breaks a test, the failing run, and the repair: productive recovery."""
    err = rng.choice(["assert 'a' == 'b'", "TypeError: unsupported operand type(s)", "AttributeError: 'NoneType' object has no attribute 'kind'"])
    return [
        edit_step(task, rng),
        Step("Let me run the tests.", "python -m pytest -q", pytest_fail(task, rng, err), 1),
        Step("One case is now wrong; my edit missed it. Let me correct that branch.",
             f"sed -i 's/ is None/ is not None/' {task.edited[0] if task.edited else source_files(task)[0]} && git diff --stat",
             diff_stat(task)),
        test_step(task, rng),
    ]


def productive(task: Task, rng: random.Random) -> list[Step]:
    steps = explore_steps(task, rng) + read_steps(task, rng)
    if rng.random() < 0.8:
        steps.append(reproduce_step(task, rng))
    if rng.random() < 0.25:
        steps += broken_edit_pair(task, rng)
    else:
        steps.append(edit_step(task, rng))
        if rng.random() < 0.7:
            steps.append(verify_step(task, rng))
        steps.append(test_step(task, rng))
    if rng.random() < 0.4:
        steps.append(Step("All tests pass and the reproduction shows the expected results. Submitting.", SUBMIT, ""))
    elif rng.random() < 0.35:
        # Cut early: on track so far (at least three steps in).
        steps = steps[: rng.randint(3, len(steps))]
    return steps


def prefix(task: Task, rng: random.Random) -> list[Step]:
    steps = explore_steps(task, rng) + read_steps(task, rng)
    return steps[: rng.randint(0, min(5, len(steps)))]


def looping(task: Task, rng: random.Random) -> list[Step]:
    """The same command, again and again."""
    path = rng.choice(source_files(task))
    pool = [
        Step("Let me look at the files in the repository.", "ls", "\n".join(sorted({p.split('/')[0] for p in task.files}))),
        Step(f"Let me read `{path}` again.", f"cat {path}", "\n".join(task.files[path].splitlines()[:80])),
        Step("Let me check the tests again.", "python -m pytest -q", pytest_pass(task, rng)),
        Step("Let me search for the relevant code.", f"grep -rn '{patch_words(task)[0]}' .",
             grep_n(task, patch_words(task)[0], source_files(task))),
        Step("Let me run the reproduction again.", "PYTHONPATH=. python /tmp/repro.py", repro_output_before(task)),
        Step("Let me check what changed.", "git status", "On branch main\nnothing to commit, working tree clean"),
    ]
    step = rng.choice(pool)
    k = rng.randint(3, 9)
    vary = rng.random() < 0.4
    out = []
    for i in range(k):
        thought = step.thought
        if vary and i:
            thought = rng.choice([step.thought, "Let me try that again.", "I need to look at this once more.",
                                  "Let me check again to be sure."])
        out.append(Step(thought, step.command, step.output, step.returncode))
    return prefix(task, rng) + out


def repeated_error(task: Task, rng: random.Random) -> list[Step]:
    """Different attempts, the same error every time."""
    pkg = task.package
    path = task.edited[0] if task.edited else source_files(task)[0]
    families = [
        (f"Traceback (most recent call last):\n  File \"/tmp/repro.py\", line 1, in <module>\n    from {pkg} import *\nModuleNotFoundError: No module named '{pkg}'", 1,
         ["python /tmp/repro.py", "cd /tmp && python repro.py", "python3 /tmp/repro.py 2>&1 | tail -5", "python -c 'import sys; exec(open(\"/tmp/repro.py\").read())'"],
         ["Let me run the reproduction script.", "Maybe it needs to run from /tmp.", "Let me try python3 explicitly.", "Let me try running it differently."]),
        (f"error: patch failed: {path}:{hunk_start(task, path)}\nerror: {path}: patch does not apply", 1,
         [f"git apply /tmp/fix.patch", f"git apply --whitespace=fix /tmp/fix.patch", f"git apply -v /tmp/fix.patch 2>&1 | tail -3", f"patch -p1 --dry-run < /tmp/fix.patch && git apply /tmp/fix.patch"],
         ["Let me apply my fix as a patch.", "Maybe whitespace is the problem.", "Let me see more detail.", "Let me try once more."]),
        (f"ImportError while importing test module '/testbed/{test_files(task)[0]}'.\nE     File \"/testbed/{path}\", line {hunk_start(task, path) + 3}\nE       if self.at_op(\nE                    ^\nE   SyntaxError: '(' was never closed", 2,
         ["python -m pytest -q", "pytest -q tests", "python -m pytest -q -x", f"pytest -q {test_files(task)[0]}"],
         ["Let me run the tests.", "Let me run only the tests directory.", "Let me stop at the first failure.", "Let me run one test file."]),
        (f"sed: -e expression #1, char {rng.randint(12, 40)}: unterminated `s' command", 1,
         [f"sed -i 's/{patch_words(task)[0]}(/{patch_words(task)[0]}_fixed(' {path}", f"sed -i \"s/return node/return node\\n/\" {path}",
          f"sed -i 's/\\(.*\\)/\\1' {path}", f"sed -i -e 's/while/if/' -e 's/x/' {path}"],
         ["Let me edit the function with sed.", "Let me try a different substitution.", "Let me fix the expression.", "One more try with sed."]),
    ]
    error, code, commands, thoughts = rng.choice(families)
    k = rng.randint(3, 7)
    out = []
    for i in range(k):
        j = rng.randrange(len(commands))
        out.append(Step(thoughts[j], commands[j], error, code))
    return prefix(task, rng) + out


def edits_without_tests(task: Task, rng: random.Random) -> list[Step]:
    path = task.edited[0] if task.edited else source_files(task)[0]
    words = patch_words(task)
    out = []
    for _ in range(rng.randint(3, 7)):
        kind = rng.randrange(3)
        w = rng.choice(words)
        if kind == 0:
            out.append(Step(f"Let me change how `{w}` is handled.", f"sed -i 's/{w}/{w}_v2/g' {path}", ""))
        elif kind == 1:
            line = rng.randint(10, 60)
            out.append(Step("I will rewrite this part of the function.",
                            f"sed -i '{line}s/.*/        return self.{w}()/' {path}", ""))
        else:
            out.append(Step("Let me also adjust this other place.",
                            f"python - <<'EOF'\nfrom pathlib import Path\np = Path({path!r})\np.write_text(p.read_text().replace({w!r}, {w.upper()!r}))\nEOF", ""))
    return prefix(task, rng) + out


def format_errors(task: Task, rng: random.Random) -> list[Step]:
    raws = [
        "THOUGHT: I should start by looking at the repository layout. I will list the files and then read the README to understand the project.",
        "THOUGHT: Let me look at the files and the history at once.\n\n```bash\nls -la\n```\n\n```bash\ngit log --oneline | head -5\n```",
        "THOUGHT: Let me list the files.\n\n```sh\nls -la\n```",
        f"I think the problem is in `{task.edited[0] if task.edited else task.package}`. Let me fix it by changing the loop into a single check.",
        "```python\nfrom pathlib import Path\nprint(Path('.').resolve())\n```",
        "THOUGHT: Let me run the tests.\n\n```\npython -m pytest -q\n```",
    ]
    out = []
    for _ in range(rng.randint(2, 6)):
        raw = rng.choice(raws)
        actions = raw.count("```bash")
        out.append(Step("", None, format_error_message(actions), raw=raw))
    return prefix(task, rng) + out


UNPRODUCTIVE = {
    "loop": looping,
    "repeated-error": repeated_error,
    "edits-without-tests": edits_without_tests,
    "format-errors": format_errors,
}


# ---------------------------------------------------------------------------------------------
# Messages


def format_error_message(actions: int) -> str:
    return _jinja().from_string((TEMPLATES / "format_error.j2").read_text()).render(actions=actions, scaffold="bash_only")


def messages(task: Task, steps: list[Step]) -> list[dict]:
    env = _jinja()
    system = env.from_string((TEMPLATES / "system.j2").read_text()).render(scaffold="bash_only")
    instance = env.from_string((TEMPLATES / "instance.j2").read_text()).render(
        task=task.problem_statement, workdir="/testbed", command_timeout_s=60, max_steps=150,
        submit_sentinel="COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT", scaffold="bash_only")
    observation = env.from_string((TEMPLATES / "observation.j2").read_text())
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": instance}]
    for step in steps:
        msgs.append({"role": "assistant", "content": step.content()})
        if step.command == SUBMIT:
            break
        if step.command is None:
            msgs.append({"role": "user", "content": step.output})
        else:
            msgs.append({"role": "user", "content": observation.render(
                returncode=step.returncode, output=step.output, timed_out=False, output_truncated=False, edits="")})
    return msgs


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def make_examples(tasks: list[Task], per_task: int) -> list[dict]:
    """`per_task` productive and `per_task` unproductive (spread over the families) per task."""
    out = []
    families = list(UNPRODUCTIVE)
    for task in tasks:
        for i in range(per_task):
            rng = random.Random(_seed(task.instance_id, "productive", i))
            out.append({"task": task.instance_id, "family": "productive", "label": 1,
                        "messages": messages(task, productive(task, rng))})
        for i in range(per_task):
            family = families[i % len(families)]
            rng = random.Random(_seed(task.instance_id, family, i))
            out.append({"task": task.instance_id, "family": family, "label": 0,
                        "messages": messages(task, UNPRODUCTIVE[family](task, rng))})
    return out


def scenario_messages(task: Task) -> list[dict]:
    """The replay agent's solving scenario, with made-up observations: a productive trajectory."""
    steps = []
    edited = False
    rng = random.Random(_seed(task.instance_id, "scenario"))
    for content in task.scenario:
        cmd = re.search(r"```bash\n(.*?)\n```", content, re.S).group(1)
        if SUBMIT in cmd:
            out = ""
        elif "pytest" in cmd:
            out = pytest_pass(task, rng)
        elif "git apply" in cmd or "python - <<" in cmd or "sed -i" in cmd:
            out, edited = diff_stat(task), True
        elif "repro" in cmd:
            out = repro_output_after(task) if edited else repro_output_before(task)
        else:
            out = ls_la(task, rng) if cmd.startswith("ls") else "\n".join(task.files[source_files(task)[0]].splitlines()[:40])
        steps.append(Step("", cmd, out, raw=content))
    msgs = messages(task, steps)
    return msgs


def replay_misbehaving(task: Task, name: str, turns: int = 8) -> list[dict]:
    """A misbehaving replay scenario (examples/replay/loop.toml, format-errors.toml) on a task:
    its turns in order, the last one repeated, as the replay agent plays them."""
    scenario = [t["content"].strip() for t in tomllib.loads((REPLAY / f"{name}.toml").read_text())["turns"]]
    steps = []
    for i in range(turns):
        content = scenario[min(i, len(scenario) - 1)]
        blocks = re.findall(r"```bash\n(.*?)\n```", content, re.S)
        if len(blocks) == 1:
            steps.append(Step("", blocks[0], ls_plain_root(task), raw=content))
        else:
            steps.append(Step("", None, format_error_message(len(blocks)), raw=content))
    return messages(task, steps)


def ls_plain_root(task: Task) -> str:
    return "\n".join(sorted({p.split("/")[0] for p in task.files} | {"LICENSE"}))
