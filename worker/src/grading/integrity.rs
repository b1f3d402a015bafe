//! The integrity check: signs that the test output was forged by the code under test.
//!
//! A deliberate hardening over the official harness, which believes whatever the eval script's
//! output says. The code under test (the model's patch) prints into that same stream, so it
//! can print the harness's markers and `PASSED <test>` lines of its own. This check reads the
//! log for the traces such forgeries leave and names the first one it finds:
//!
//! - **a marker count other than a clean run's**: every marker the eval script prints (through
//!   `set -x` for `: '>>>>> Start Test Output'`, through `set -x` and the command itself for
//!   `echo ">>>>> Test Exit Code: $?"`) occurs exactly that many times in a clean log, and the
//!   harness's other markers not at all; the code under test can add markers but never remove
//!   the real ones;
//! - **results after the runner's final summary**: passing results (PASSED, XFAIL, SKIPPED)
//!   the parser reads after the last summary line of the runner (pytest's `==== 1 failed,
//!   2 passed in 0.1s ====`, Django's `Ran N tests in Xs`, sympy's `tests finished: ...`),
//!   which the runner prints after every result: a later line overwrites a real failure;
//! - **a summary that contradicts the results**: the runner counts failures or errors, but no
//!   test parsed as FAILED or ERROR (the parser sees only forged `PASSED` lines);
//! - **no summary at all after a zero exit status**: the recorded test exit status is 0 and
//!   results were parsed, but the runner's summary line is missing (a process that printed
//!   results and left before the runner could summarise).
//!
//! What it cannot see: output imitating a whole clean run (forged results followed by a
//! forged summary line, with the real exit status 0), and anything that changes what the tests
//! do rather than what they print (a `conftest.py` that forces passes or deselects tests, code
//! the eval script's install step runs). The model's diff, which the eval script prints with
//! `git diff`, counts as output: a patch containing a marker's text is refused too.
//!
//! Pure: the caller passes the log, the parsed map and what the eval script prints.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

use super::log::{
    APPLY_PATCH_FAIL, APPLY_PATCH_PASS, END_TEST_OUTPUT, RESET_FAILED, START_TEST_OUTPUT, TESTS_ERROR,
    TESTS_TIMEOUT, TEST_EXIT_CODE,
};
use super::parsers::{self, ParserKind};
use super::{Profile, StatusMap, TestStatus};

/// Every marker of the harness, in the order they are checked.
const MARKERS: [&str; 8] = [
    START_TEST_OUTPUT,
    END_TEST_OUTPUT,
    TEST_EXIT_CODE,
    APPLY_PATCH_PASS,
    APPLY_PATCH_FAIL,
    RESET_FAILED,
    TESTS_ERROR,
    TESTS_TIMEOUT,
];

/// How many times a marker may occur in a clean log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    Exactly(usize),
    /// Either count (the script is not known: a v4 script prints no exit record, a v5 one two).
    Either(usize, usize),
}

impl Allowed {
    fn admits(self, n: usize) -> bool {
        match self {
            Allowed::Exactly(m) => n == m,
            Allowed::Either(a, b) => n == a || n == b,
        }
    }
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allowed::Exactly(0) => f.write_str("never"),
            Allowed::Exactly(1) => f.write_str("once"),
            Allowed::Exactly(2) => f.write_str("twice"),
            Allowed::Exactly(n) => write!(f, "{n} times"),
            Allowed::Either(a, b) => write!(f, "{a} or {b} times"),
        }
    }
}

/// How many times each harness marker occurs in the log of a clean run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedMarkers {
    counts: Vec<(&'static str, Allowed)>,
}

/// `<<WORD`, `<<'WORD'`, `<<-"WORD"`; not a here-string (`<<<`).
static HEREDOC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?:^|[^<])<<-?[ \t]*['"]?([A-Za-z0-9_]+)"#).expect("valid regex"));

impl ExpectedMarkers {
    /// What a clean run of `script` under `set -x` prints: each line once (its trace), an
    /// `echo` line twice (its trace and its output); here-document bodies are not traced.
    pub fn of_script(script: &str) -> Self {
        let mut counts = [0usize; MARKERS.len()];
        let mut heredoc: Option<&str> = None;
        for line in script.lines() {
            if let Some(delimiter) = heredoc {
                if line == delimiter {
                    heredoc = None;
                }
                continue;
            }
            heredoc = HEREDOC.captures(line).and_then(|c| c.get(1)).map(|m| m.as_str());
            let copies = if line.trim_start().starts_with("echo ") { 2 } else { 1 };
            for (count, marker) in counts.iter_mut().zip(MARKERS) {
                *count += copies * line.matches(marker).count();
            }
        }
        ExpectedMarkers { counts: MARKERS.into_iter().zip(counts.map(Allowed::Exactly)).collect() }
    }

    /// When the script that printed the log is not known (a saved log, or raw test output
    /// wrapped in the markers): the start and end markers once, and the exit record either
    /// absent (v4) or traced and printed (v5).
    pub fn unknown_script() -> Self {
        let counts = MARKERS
            .into_iter()
            .map(|m| match m {
                START_TEST_OUTPUT | END_TEST_OUTPUT => (m, Allowed::Exactly(1)),
                TEST_EXIT_CODE => (m, Allowed::Either(0, 2)),
                _ => (m, Allowed::Exactly(0)),
            })
            .collect();
        ExpectedMarkers { counts }
    }
}

/// The first sign of forged output found in a log. Its `Display` is the reason recorded with
/// the grade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tampering {
    /// A harness marker occurs a number of times a clean run never prints.
    MarkerCount { marker: &'static str, found: usize, expected: Allowed },
    /// A passing test result follows the test runner's final summary line.
    ResultAfterSummary { result: String, summary: String },
    /// The runner's final summary counts failures or errors, yet no test parsed as either.
    SummaryContradictsResults { summary: String },
    /// The test command exited 0 and results were parsed, but the runner printed no summary.
    MissingSummary,
}

impl fmt::Display for Tampering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tampering::MarkerCount { marker, found, expected } => {
                let times = if *found == 1 { "once".to_string() } else { format!("{found} times") };
                write!(f, "`{marker}` appears {times}; a clean run prints it {expected}")
            }
            Tampering::ResultAfterSummary { result, summary } => {
                write!(f, "`{result}` follows the test runner's final summary `{summary}`")
            }
            Tampering::SummaryContradictsResults { summary } => write!(
                f,
                "the test runner's final summary `{summary}` counts failures, but no test parsed as FAILED or ERROR"
            ),
            Tampering::MissingSummary => f.write_str(
                "the test command exited 0 and test results were parsed, but the test runner's final summary is missing",
            ),
        }
    }
}

/// What [`check`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The whole log, as graded (universal newlines).
    pub log: &'a str,
    /// The text the status map was parsed from (the slice, or the whole log on fallback).
    pub parsed: &'a str,
    /// The parsed map; empty when the log gave no usable result.
    pub status_map: &'a StatusMap,
    pub parser: ParserKind,
    pub profile: Profile,
    pub markers: &'a ExpectedMarkers,
}

/// The first sign of forged output in the log, or `None` for a log that looks like a clean
/// run's. Never panics.
pub fn check(input: &Input<'_>) -> Option<Tampering> {
    for (marker, expected) in &input.markers.counts {
        let found = input.log.matches(marker).count();
        if !expected.admits(found) {
            return Some(Tampering::MarkerCount { marker, found, expected: *expected });
        }
    }
    let map = input.status_map;
    if map.is_empty() {
        return None;
    }
    let Some(summary) = final_summary(input.parser, input.parsed) else {
        let exited_zero = super::log::recorded_exit_code(input.log).is_some_and(|c| c.is_zero);
        let any_pass = map.iter().any(|(_, s)| matches!(s, TestStatus::Passed | TestStatus::XFail));
        return (exited_zero && any_pass).then_some(Tampering::MissingSummary);
    };
    let after = &input.parsed[summary.end..];
    // a suffix of lines the whole text parsed from cannot make the parser raise
    if let Ok(later) = parsers::parse(input.parser, input.profile, after) {
        // only a result that can count as a success: a late FAILED line helps no forger
        let passing =
            |s: &TestStatus| matches!(s, TestStatus::Passed | TestStatus::XFail | TestStatus::Skipped);
        if let Some((id, status)) = later.iter().find(|(_, s)| passing(s)) {
            return Some(Tampering::ResultAfterSummary {
                result: shorten(&format!("{status} {id}")),
                summary: summary.text,
            });
        }
    }
    let any_failure = map.iter().any(|(_, s)| matches!(s, TestStatus::Failed | TestStatus::Error));
    if summary.failures > 0 && !any_failure {
        return Some(Tampering::SummaryContradictsResults { summary: summary.text });
    }
    None
}

// ------------------------------------------------------------------ runners' summaries

/// The test runner's last summary in a text.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    /// The summary as printed (colour codes removed, shortened).
    text: String,
    /// Byte offset in the text just past the summary line.
    end: usize,
    /// Failures plus errors it counts, as far as the parser can see them.
    failures: u64,
}

static ANSI_COLOUR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\x1b?\[[0-9;]*m").expect("valid regex"));
/// pytest's last line: `==== 1 failed, 2 passed in 0.12s ====` (`in 0.12 seconds` before
/// pytest 5, `in 61.00s (0:01:01)` past a minute, no `=` fill under `-q`).
static PYTEST_SUMMARY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^=* ?((?:\d+ [a-z][a-z-]*(?:, \d+ [a-z][a-z-]*)*|no tests ran) in [0-9.]+ ?s(?:econds)?(?: \([0-9:]+\))?) ?=*$")
        .expect("valid regex")
});
static PYTEST_FAILED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(\d+) failed\b").expect("valid regex"));
static PYTEST_ERRORS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\d+) errors?\b").expect("valid regex"));
/// unittest (Django's runner): `Ran 70 tests in 0.046s`, then `OK` or `FAILED (failures=2, ...)`.
static DJANGO_RAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^Ran \d+ tests? in [0-9.]+s\r?$").expect("valid regex"));
static DJANGO_OUTCOME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^(OK|FAILED \(([^)\n]*)\))").expect("valid regex"));
static DJANGO_COUNTS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|, )(?:failures|errors)=(\d+)").expect("valid regex"));
/// sympy's runner: `tests finished: 5 passed, 1 failed, ... in 0.20 seconds`, wrapped over lines.
static SYMPY_FINISHED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"tests finished:([^\n]*(?:\n[^\n]*)??) in [0-9.]+ seconds").expect("valid regex")
});
static SYMPY_COUNTS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\d+) (?:failed|exceptions?)\b").expect("valid regex"));

fn count(re: &Regex, text: &str) -> u64 {
    re.captures_iter(text).filter_map(|c| c.get(1)?.as_str().parse::<u64>().ok()).sum()
}

/// The end of the line that contains byte `at`.
fn line_end(text: &str, at: usize) -> usize {
    text[at..].find('\n').map_or(text.len(), |i| at + i + 1)
}

fn final_summary(parser: ParserKind, text: &str) -> Option<Summary> {
    match parser {
        ParserKind::Pytest
        | ParserKind::PytestOptions
        | ParserKind::PytestV2
        | ParserKind::Matplotlib
        | ParserKind::Seaborn => {
            let mut last = None;
            let mut start = 0;
            for line in text.split_inclusive('\n') {
                let end = start + line.len();
                // cheap filter first: a summary starts with its fill, a count, "no tests" or a
                // colour code, and says how long the run took
                let first = line.as_bytes().first().copied().unwrap_or(b' ');
                if matches!(first, b'=' | b'0'..=b'9' | b'n' | 0x1b | b'[') && line.contains(" in ") {
                    let plain = ANSI_COLOUR.replace_all(line.trim_end_matches(['\n', '\r']), "");
                    if let Some(c) = PYTEST_SUMMARY.captures(plain.trim()) {
                        last = Some((c[1].to_string(), end));
                    }
                }
                start = end;
            }
            let (counts, end) = last?;
            // the seaborn parser reads FAILED and PASSED lines only: errors are invisible to it
            let errors = if parser == ParserKind::Seaborn { 0 } else { count(&PYTEST_ERRORS, &counts) };
            let failures = count(&PYTEST_FAILED, &counts) + errors;
            Some(Summary { text: shorten(&counts), end, failures })
        }
        ParserKind::Django => {
            let ran = DJANGO_RAN.find_iter(text).last()?;
            let end = line_end(text, ran.start());
            let outcome = DJANGO_OUTCOME.captures(&text[end..]);
            let failures =
                outcome.as_ref().and_then(|c| c.get(2)).map_or(0, |m| count(&DJANGO_COUNTS, m.as_str()));
            let mut shown = ran.as_str().trim_end().to_string();
            if let Some(o) = outcome.and_then(|c| c.get(1)) {
                shown = format!("{shown}; {}", o.as_str());
            }
            Some(Summary { text: shorten(&shown), end, failures })
        }
        ParserKind::Sympy => {
            let finished = SYMPY_FINISHED.captures_iter(text).last()?;
            let whole = finished.get(0)?;
            let counts = finished.get(1).map_or("", |m| m.as_str());
            let shown = whole.as_str().split_whitespace().collect::<Vec<_>>().join(" ");
            Some(Summary {
                text: shorten(&shown),
                end: line_end(text, whole.end().saturating_sub(1)),
                failures: count(&SYMPY_COUNTS, counts),
            })
        }
    }
}

/// At most 200 characters of `s`, for a reason that stays readable.
fn shorten(s: &str) -> String {
    crate::text::shorten(s, 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_of_each_runner_are_found_with_their_failures() {
        let pytest = "x\n==== 1 failed, 2 passed, 1 error in 0.12s ====\n+ : 'tail'\n";
        let s = final_summary(ParserKind::Pytest, pytest).unwrap();
        assert_eq!((s.text.as_str(), s.failures), ("1 failed, 2 passed, 1 error in 0.12s", 2));
        assert_eq!(&pytest[s.end..], "+ : 'tail'\n");
        // seaborn's parser cannot see errors
        assert_eq!(final_summary(ParserKind::Seaborn, pytest).unwrap().failures, 1);
        for line in [
            "= 4 failed, 14 passed in 0.04 seconds =",
            "=== 3 passed, 1 warning in 61.02s (0:01:01) ===",
            "2 passed in 0.01s",
            "=== 1 passed, 1 pytest-warnings in 0.01 seconds ===",
            "==== no tests ran in 0.01s ====",
            "\x1b[31m==== \x1b[31m\x1b[1m1 failed\x1b[0m in 0.06s\x1b[0m\x1b[31m ====\x1b[0m",
        ] {
            assert!(final_summary(ParserKind::PytestV2, line).is_some(), "{line:?}");
        }
        for line in ["==== short test summary info ====", "downloaded it in a minute", "PASSED x in 3s"] {
            assert!(final_summary(ParserKind::Pytest, line).is_none(), "{line:?}");
        }
        let django = "Ran 70 tests in 0.046s\n\nFAILED (failures=2, errors=1, skipped=4)\nDestroying\n";
        let expected = "Ran 1 test in 0.001s\n\nFAILED (expected failures=1, unexpected successes=1)\n";
        assert_eq!(final_summary(ParserKind::Django, expected).unwrap().failures, 0);
        let s = final_summary(ParserKind::Django, django).unwrap();
        assert_eq!(
            (s.text.as_str(), s.failures),
            ("Ran 70 tests in 0.046s; FAILED (failures=2, errors=1, skipped=4)", 3)
        );
        assert_eq!(&django[s.end..], "\nFAILED (failures=2, errors=1, skipped=4)\nDestroying\n");
        assert_eq!(final_summary(ParserKind::Django, "Ran 1 test in 0.001s\n\nOK\n").unwrap().failures, 0);
        let sympy = " tests finished: 5 passed, 1 failed, 1 expected to fail, \n1 expected to fail but passed, 2 exceptions, in 0.20 seconds \nDO *NOT* COMMIT!\n";
        let s = final_summary(ParserKind::Sympy, sympy).unwrap();
        assert_eq!(s.failures, 3);
        assert_eq!(&sympy[s.end..], "DO *NOT* COMMIT!\n");
    }

    #[test]
    fn the_committed_real_logs_show_their_runners_summary() {
        // every sample run has failing and erroring tests (worker/tests/logs/README.md)
        macro_rules! log {
            ($name:literal) => {
                include_str!(concat!("../../tests/logs/", $name, ".log"))
            };
        }
        for (name, parser, text, failures) in [
            ("pytest-current", ParserKind::Pytest, log!("pytest-current"), 5),
            ("pytest-old", ParserKind::Pytest, log!("pytest-old"), 5),
            ("pytest-classic-verbose", ParserKind::PytestV2, log!("pytest-classic-verbose"), 5),
            ("pytest-color", ParserKind::PytestV2, log!("pytest-color"), 5),
            ("pytest-collect-error", ParserKind::Pytest, log!("pytest-collect-error"), 1),
            ("seaborn-nohead", ParserKind::Seaborn, log!("seaborn-nohead"), 4),
            ("seaborn-verbose", ParserKind::Seaborn, log!("seaborn-verbose"), 4),
            ("matplotlib-py39", ParserKind::Matplotlib, log!("matplotlib-py39"), 5),
            ("django-3.2", ParserKind::Django, log!("django-3.2"), 3),
            ("django-4.2", ParserKind::Django, log!("django-4.2"), 3),
            ("sympy-1.5", ParserKind::Sympy, log!("sympy-1.5"), 2),
            ("sympy-1.14", ParserKind::Sympy, log!("sympy-1.14"), 2),
        ] {
            let summary = final_summary(parser, text).unwrap_or_else(|| panic!("{name}: no summary"));
            assert_eq!(summary.failures, failures, "{name}: {}", summary.text);
            assert!(text[summary.end..].trim().len() < 300, "{name}: summary is not at the end");
        }
    }

    #[test]
    fn expected_markers_follow_the_script_and_skip_here_documents() {
        let script = "#!/bin/bash\nset -uxo pipefail\ngit apply -v - <<'EOF_1'\n+: '>>>>> Start Test Output'\nEOF_1\n: '>>>>> Start Test Output'\npytest\nSWEBENCH_TEST_EXIT_CODE=$?\n: '>>>>> End Test Output'\necho \">>>>> Test Exit Code: $SWEBENCH_TEST_EXIT_CODE\"\n";
        let expected = ExpectedMarkers::of_script(script);
        let allowed = |m: &str| expected.counts.iter().find(|(k, _)| *k == m).unwrap().1;
        // a here-string is no here-document: the lines after it are traced
        let here_string = "cat <<< 'x'\n: '>>>>> Start Test Output'\n";
        let after = ExpectedMarkers::of_script(here_string);
        assert_eq!(after.counts[0], (START_TEST_OUTPUT, Allowed::Exactly(1)));
        assert_eq!(allowed(START_TEST_OUTPUT), Allowed::Exactly(1));
        assert_eq!(allowed(END_TEST_OUTPUT), Allowed::Exactly(1));
        assert_eq!(allowed(TEST_EXIT_CODE), Allowed::Exactly(2));
        assert_eq!(allowed(TESTS_ERROR), Allowed::Exactly(0));
    }

    #[test]
    fn reasons_read_well() {
        let t = Tampering::MarkerCount { marker: START_TEST_OUTPUT, found: 2, expected: Allowed::Exactly(1) };
        assert_eq!(t.to_string(), "`>>>>> Start Test Output` appears 2 times; a clean run prints it once");
        let t = Tampering::MarkerCount { marker: TEST_EXIT_CODE, found: 1, expected: Allowed::Either(0, 2) };
        assert_eq!(t.to_string(), "`>>>>> Test Exit Code` appears once; a clean run prints it 0 or 2 times");
        assert_eq!(shorten(&"é".repeat(300)).chars().count(), 203);
    }
}
