//! The eval script and the patch-application chain.
//!
//! Generation ports `make_eval_script_list_py` of swebench 4.1.0 (`test_spec/python.py`): the
//! test files are reset to the base commit, the test patch is applied from a heredoc, the
//! repo/version test command runs on the test directives between the markers, and the test
//! files are reset again. v5 ships the script in the dataset and rewrites it on load
//! (`parse_eval_script` + `record_test_exit_code`); [`eval_script_for`] does the same.

use std::sync::LazyLock;

use protocol::Instance;
use regex::Regex;

use super::log::{END_TEST_OUTPUT, START_TEST_OUTPUT, TEST_EXIT_CODE, TEST_EXIT_CODE_VAR};
use super::parsers::py_strip;
use super::specs::{self, RepoVersions};
use super::{Error, Profile};

/// Where the repository lives in the instance image.
pub const REPO_DIR: &str = "/testbed";
/// The conda environment of the instance image.
pub const ENV_NAME: &str = "testbed";
/// Where the harness copies the model patch.
pub const PATCH_PATH: &str = "/tmp/patch.diff";
/// Where the harness copies the eval script (run as `/bin/bash /eval.sh`).
pub const EVAL_SCRIPT_PATH: &str = "/eval.sh";
/// The heredoc delimiter around the test patch.
pub const HEREDOC_DELIMITER: &str = "EOF_114329324912";
/// Paths ending so are not test directives (`NON_TEST_EXTS`; `csv` has no dot in the harness).
pub const NON_TEST_EXTS: [&str; 11] =
    [".json", ".png", "csv", ".txt", ".md", ".jpg", ".jpeg", ".pkl", ".yml", ".yaml", ".toml"];

const SCRIPT_HEADER: [&str; 2] = ["#!/bin/bash", "set -uxo pipefail"];

/// The script the harness of `profile` runs for `instance`.
///
/// - v5: the dataset's `eval_script` when present, else the v4-style generated one; either way
///   normalised as v5 loads it (header lines dropped and re-added, the test command's `$?`
///   recorded after the end marker).
/// - v4: always generated from the spec table, as 4.1.0 does (the dataset's script is used
///   only for a repository the table does not know, which 4.1.0 cannot evaluate at all).
pub fn eval_script_for(instance: &Instance, profile: Profile) -> Result<String, Error> {
    let dataset = instance.eval_script.as_deref().filter(|s| !s.trim().is_empty());
    match profile {
        Profile::V5 => {
            let lines = match dataset {
                Some(script) => parse_eval_script(script),
                // as if the dataset carried the v4 script (how the Verified scripts were made)
                None => parse_eval_script(&render(&generated_lines(instance)?)),
            };
            Ok(render(&record_test_exit_code(lines)))
        }
        Profile::V4 => match (specs::lookup(&instance.repo, &instance.version), dataset) {
            (None, Some(script)) => Ok(script.to_string()),
            _ => Ok(render(&generated_lines(instance)?)),
        },
    }
}

fn render(lines: &[String]) -> String {
    let mut out: Vec<&str> = SCRIPT_HEADER.to_vec();
    out.extend(lines.iter().map(String::as_str));
    out.join("\n") + "\n"
}

/// v5's `parse_eval_script`: every line equal to a header line is dropped.
pub fn parse_eval_script(script: &str) -> Vec<String> {
    py_strip(script).split('\n').filter(|l| !SCRIPT_HEADER.contains(l)).map(str::to_string).collect()
}

/// v5's `record_test_exit_code`: around the first line containing the end marker, keep the
/// test command's `$?` and echo it after the marker (outside the parsed slice).
pub fn record_test_exit_code(mut lines: Vec<String>) -> Vec<String> {
    if let Some(i) = lines.iter().position(|l| l.contains(END_TEST_OUTPUT)) {
        lines.insert(i, format!("{TEST_EXIT_CODE_VAR}=$?"));
        lines.insert(i + 2, format!("echo \"{TEST_EXIT_CODE}: ${TEST_EXIT_CODE_VAR}\""));
    }
    lines
}

/// `make_eval_script_list_py` of 4.1.0, without the header.
fn generated_lines(instance: &Instance) -> Result<Vec<String>, Error> {
    let spec: &RepoVersions = specs::lookup(&instance.repo, &instance.version).ok_or_else(|| {
        Error::UnknownRepoVersion { repo: instance.repo.clone(), version: instance.version.clone() }
    })?;
    let base = &instance.base_commit;
    let test_files = modified_files(&instance.test_patch)?;
    // a trailing space when no file is modified, as the harness's f-string gives
    let reset = format!("git checkout {base} {}", test_files.join(" "));
    let apply =
        format!("git apply -v - <<'{HEREDOC_DELIMITER}'\n{}\n{HEREDOC_DELIMITER}", instance.test_patch);
    let mut test_command = vec![spec.test_cmd.to_string()];
    test_command.extend(test_directives(instance));

    let mut lines = vec![
        "source /opt/miniconda3/bin/activate".to_string(),
        format!("conda activate {ENV_NAME}"),
        format!("cd {REPO_DIR}"),
    ];
    lines.extend(spec.eval_commands.iter().map(ToString::to_string));
    lines.extend([
        format!("git config --global --add safe.directory {REPO_DIR}"),
        format!("cd {REPO_DIR}"),
        "git status".to_string(),
        "git show".to_string(),
        format!("git -c core.fileMode=false diff {base}"),
        "source /opt/miniconda3/bin/activate".to_string(),
        format!("conda activate {ENV_NAME}"),
    ]);
    lines.extend(spec.install.map(str::to_string));
    lines.extend([
        reset.clone(),
        apply,
        format!(": '{START_TEST_OUTPUT}'"),
        test_command.join(" "),
        format!(": '{END_TEST_OUTPUT}'"),
        reset,
    ]);
    Ok(lines)
}

static DIFF_GIT_TARGET: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"diff --git a/.* b/(.*)").expect("valid regex"));

/// `get_test_directives`: every `b/` path of a `diff --git` line (found anywhere, as
/// `re.findall` does), minus [`NON_TEST_EXTS`]; for django the module label (`.py` and a
/// leading `tests/` dropped, `/` turned into `.`).
pub fn test_directives(instance: &Instance) -> Vec<String> {
    let directives = DIFF_GIT_TARGET
        .captures_iter(&instance.test_patch)
        .filter_map(|c| c.get(1).map(|m| m.as_str()))
        .filter(|d| !NON_TEST_EXTS.iter().any(|ext| d.ends_with(ext)));
    if instance.repo == "django/django" {
        directives
            .map(|d| {
                let d = d.strip_suffix(".py").unwrap_or(d);
                let d = d.strip_prefix("tests/").unwrap_or(d);
                d.replace('/', ".")
            })
            .collect()
    } else {
        directives.map(str::to_string).collect()
    }
}

// ------------------------------------------------------------------ modified files (unidiff)

static GIT_HEADER: LazyLock<[Regex; 3]> = LazyLock::new(|| {
    [
        r#"^diff --git (?P<source>"?a/[^\t\n]+"?) (?P<target>"?b/[^\t\n]+"?)"#,
        r"^diff --git (?P<source>.*://[^\t\n]+) (?P<target>.*://[^\t\n]+)",
        r"^diff --git (?P<source>[^\t\n]+) (?P<target>[^\t\n]+)",
    ]
    .map(|p| Regex::new(p).expect("valid regex"))
});
static SOURCE_FILENAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"^--- (?P<filename>"?[^\t\n]*"?)(?:\t[^\n]+)?"#).expect("valid regex"));
static TARGET_FILENAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"^\+\+\+ (?P<filename>"?[^\t\n]*"?)(?:\t[^\n]+)?"#).expect("valid regex"));
static NEW_FILE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^new file mode \d+\n?$").expect("valid regex"));
static DELETED_FILE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^deleted file mode \d+\n?$").expect("valid regex"));
static HUNK_HEADER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@").expect("valid regex"));
static BINARY_DIFF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^Binary files? (?P<source>[^\t]+?)(?:\t[\s0-9:+-]+)?(?: and (?P<target>[^\t]+?)(?:\t[\s0-9:+-]+)?)? (differ|has changed)")
        .expect("valid regex")
});

const DEV_NULL: &str = "/dev/null";

struct PatchedFile {
    source: String,
    target: String,
    hunks: usize,
}

/// `get_modified_files` (4.1.0's `harness/utils.py`): the source path, `a/` removed, of every
/// file of the patch whose source is not `/dev/null` (new files are left out; deleted and
/// renamed ones are in), in patch order. The patch is read as unidiff's `PatchSet` reads it,
/// so that `--- ...` lines inside hunks are content, not headers; a patch unidiff rejects is
/// [`Error::TestPatch`].
pub fn modified_files(patch: &str) -> Result<Vec<String>, Error> {
    let files = patch_files(patch)?;
    Ok(files
        .into_iter()
        .filter(|f| f.source != DEV_NULL)
        .filter_map(|f| f.source.strip_prefix("a/").map(str::to_string))
        .collect())
}

fn patch_files(patch: &str) -> Result<Vec<PatchedFile>, Error> {
    let mut files: Vec<PatchedFile> = Vec::new();
    // index of the file being built, and whether its header block is still open
    let mut current: Option<usize> = None;
    let mut in_header = false;
    let mut pending_source: Option<String> = None;
    // lines as Python's StringIO yields them: split after each '\n', the '\n' kept
    let mut lines = patch.split_inclusive('\n');
    while let Some(line) = lines.next() {
        if let Some(c) = GIT_HEADER.iter().find_map(|re| re.captures(line)) {
            files.push(PatchedFile {
                source: c["source"].to_string(),
                target: c["target"].to_string(),
                hunks: 0,
            });
            pending_source = Some(c["source"].to_string());
            current = Some(files.len() - 1);
            in_header = true;
            continue;
        }
        if NEW_FILE.is_match(line) {
            let i = current.filter(|_| in_header).ok_or_else(|| bad("unexpected new file", line))?;
            files[i].source = DEV_NULL.to_string();
            continue;
        }
        if DELETED_FILE.is_match(line) {
            let i = current.filter(|_| in_header).ok_or_else(|| bad("unexpected deleted file", line))?;
            files[i].target = DEV_NULL.to_string();
            continue;
        }
        if current.is_some() && in_header && is_mode_or_index(line) {
            continue;
        }
        if let Some(c) = SOURCE_FILENAME.captures(line) {
            pending_source = Some(c["filename"].to_string());
            if current.is_some() && !in_header {
                current = None;
            }
            continue;
        }
        if let Some(c) = TARGET_FILENAME.captures(line) {
            let target = c["filename"].to_string();
            match current {
                Some(i) if files[i].target != target => return Err(bad("target without source", line)),
                Some(_) => {}
                None => {
                    let source = pending_source.take().ok_or_else(|| bad("target without source", line))?;
                    files.push(PatchedFile { source, target, hunks: 0 });
                    current = Some(files.len() - 1);
                    in_header = false;
                }
            }
            continue;
        }
        if let Some(c) = HUNK_HEADER.captures(line) {
            in_header = false;
            let Some(i) = current else { return Err(bad("unexpected hunk", line)) };
            let len = |i: usize| c.get(i).map_or(Ok(1), |m| m.as_str().parse::<u64>());
            let (Ok(src), Ok(tgt)) = (len(2), len(4)) else { return Err(bad("hunk header", line)) };
            skip_hunk(&mut lines, src, tgt)?;
            files[i].hunks += 1;
            continue;
        }
        if line.starts_with("\\ No newline at end of file") {
            if current.is_none() {
                return Err(bad("unexpected marker", line));
            }
            continue;
        }
        // a blank line after hunks belongs to the file; otherwise it is patch info
        if line == "\n" && current.is_some_and(|i| files[i].hunks > 0) {
            continue;
        }
        // anything else is patch info (commit message, index lines, ...)
        if !in_header {
            current = None;
            in_header = true;
        }
        if let Some(c) = BINARY_DIFF.captures(line) {
            if current.is_none() {
                let source = c["source"].to_string();
                let target = c.name("target").map_or(source.clone(), |m| m.as_str().to_string());
                files.push(PatchedFile { source, target, hunks: 0 });
            }
            current = None;
            in_header = false;
            continue;
        }
        if line == "GIT binary patch\n" {
            if current.is_none() {
                return Err(bad("unexpected binary patch marker", line));
            }
            current = None;
            in_header = false;
        }
    }
    Ok(files)
}

fn is_mode_or_index(line: &str) -> bool {
    static MODE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(?:old mode \d+|new mode \d+|index [0-9a-f]+\.\.[0-9a-f]+ \d+)\n?$")
            .expect("valid regex")
    });
    MODE.is_match(line)
}

/// Consumes one hunk's body as unidiff's `_parse_hunk` does: context lines count on both
/// sides, `-` on the source, `+` on the target, `\\` on neither; a line starting with a line
/// break is an empty context line; the hunk ends once both counts are reached exactly.
fn skip_hunk<'a>(lines: &mut impl Iterator<Item = &'a str>, src: u64, tgt: u64) -> Result<(), Error> {
    let (mut seen_src, mut seen_tgt) = (0u64, 0u64);
    for line in lines.by_ref() {
        match line.chars().next() {
            Some('+') => seen_tgt += 1,
            Some('-') => seen_src += 1,
            Some(' ' | '\r' | '\n') => {
                seen_src += 1;
                seen_tgt += 1;
            }
            Some('\\') => {}
            _ => return Err(bad("hunk diff line expected", line)),
        }
        if seen_src > src || seen_tgt > tgt {
            return Err(bad("hunk is longer than expected", line));
        }
        if seen_src == src && seen_tgt == tgt {
            return Ok(());
        }
    }
    if seen_src < src || seen_tgt < tgt {
        return Err(Error::TestPatch("hunk is shorter than expected".to_string()));
    }
    Ok(())
}

fn bad(what: &str, line: &str) -> Error {
    let shown: String = line.trim_end_matches('\n').chars().take(120).collect();
    Error::TestPatch(format!("{what}: {shown}"))
}

// ------------------------------------------------------------------ applying the model patch

/// One attempt of the harness's apply chain. Every command runs in [`REPO_DIR`] as root, and
/// is a single command line without shell syntax (the harness hands it to `docker exec`, which
/// splits it on spaces), except `reset_before`, which the harness runs through `/bin/bash -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStep {
    /// v5: run first (exit status ignored) to undo what a failed attempt left behind.
    pub reset_before: Option<String>,
    /// Exit status 0 means the patch applied; later steps are then skipped.
    pub command: String,
}

/// The harness's apply chain for a patch at `patch_path` (normally [`PATCH_PATH`]).
///
/// - v4: `git apply --verbose`, `git apply --verbose --reject`, `patch --batch --fuzz=5 -p1 -i`,
///   with nothing undone between attempts.
/// - v5: `git apply --verbose`, `... --3way`, `... --reject`, `patch --batch --forward
///   --fuzz=5 -p1 -i`, each after the first preceded by `git checkout -- . ; git clean -fd`;
///   if all fail, [`already_applied_check`] decides.
pub fn apply_commands(profile: Profile, patch_path: &str) -> Vec<ApplyStep> {
    let chain: &[&str] = match profile {
        Profile::V4 => {
            &["git apply --verbose", "git apply --verbose --reject", "patch --batch --fuzz=5 -p1 -i"]
        }
        Profile::V5 => &[
            "git apply --verbose",
            "git apply --verbose --3way",
            "git apply --verbose --reject",
            "patch --batch --forward --fuzz=5 -p1 -i",
        ],
    };
    chain
        .iter()
        .enumerate()
        .map(|(i, cmd)| ApplyStep {
            reset_before: (profile == Profile::V5 && i > 0)
                .then(|| "git checkout -- . ; git clean -fd".to_string()),
            command: format!("{cmd} {patch_path}"),
        })
        .collect()
}

/// v5 only: run after every step failed; exit status 0 means the patch is already applied
/// (counts as applied). v4 has no such check.
pub fn already_applied_check(profile: Profile, patch_path: &str) -> Option<String> {
    (profile == Profile::V5).then(|| format!("git apply --check --reverse {patch_path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modified_files_skips_new_files_and_hunk_content() {
        let patch = [
            "diff --git a/tests/test_a.py b/tests/test_a.py",
            "index 1111111..2222222 100644",
            "--- a/tests/test_a.py",
            "+++ b/tests/test_a.py",
            "@@ -1,2 +1,2 @@",
            "--- not a header",
            "+++ nor this",
            " context",
            "diff --git a/tests/new.py b/tests/new.py",
            "new file mode 100644",
            "index 0000000..3333333",
            "--- /dev/null",
            "+++ b/tests/new.py",
            "@@ -0,0 +1 @@",
            "+x = 1",
            "diff --git a/tests/gone.py b/tests/gone.py",
            "deleted file mode 100644",
            "index 4444444..0000000",
            "--- a/tests/gone.py",
            "+++ /dev/null",
            "@@ -1 +0,0 @@",
            "-y = 2",
        ]
        .join("\n")
            + "\n";
        assert_eq!(modified_files(&patch).unwrap(), vec!["tests/test_a.py", "tests/gone.py"]);
    }

    #[test]
    fn plain_unified_diffs_are_read_from_their_headers() {
        let patch = "--- a/x.py\t2020-01-01\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n";
        assert_eq!(modified_files(patch).unwrap(), vec!["x.py"]);
        assert!(modified_files("+++ b/x.py\n").is_err());
        assert!(modified_files("").unwrap().is_empty());
    }

    #[test]
    fn apply_chains_per_profile() {
        let v4 = apply_commands(Profile::V4, PATCH_PATH);
        assert_eq!(v4.len(), 3);
        assert!(v4.iter().all(|s| s.reset_before.is_none()));
        assert_eq!(v4[2].command, "patch --batch --fuzz=5 -p1 -i /tmp/patch.diff");
        let v5 = apply_commands(Profile::V5, PATCH_PATH);
        assert_eq!(v5[0].reset_before, None);
        assert_eq!(v5[1].command, "git apply --verbose --3way /tmp/patch.diff");
        assert_eq!(v5[3].reset_before.as_deref(), Some("git checkout -- . ; git clean -fd"));
        assert_eq!(
            already_applied_check(Profile::V5, PATCH_PATH).as_deref(),
            Some("git apply --check --reverse /tmp/patch.diff")
        );
        assert_eq!(already_applied_check(Profile::V4, PATCH_PATH), None);
    }

    #[test]
    fn exit_code_is_recorded_around_the_first_end_marker() {
        let lines = vec!["a".to_string(), format!(": '{END_TEST_OUTPUT}'"), "b".to_string()];
        let out = record_test_exit_code(lines);
        assert_eq!(
            out,
            vec![
                "a".to_string(),
                "SWEBENCH_TEST_EXIT_CODE=$?".to_string(),
                format!(": '{END_TEST_OUTPUT}'"),
                "echo \">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE\"".to_string(),
                "b".to_string(),
            ]
        );
        assert_eq!(record_test_exit_code(vec!["x".into()]), vec!["x".to_string()]);
    }
}
