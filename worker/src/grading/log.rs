//! Reading an eval log the way `get_logs_eval` does: the harness's markers, the slice between
//! them, the fallback to the whole log, and v5's validity checks (evidence that a suite ran,
//! the recorded exit status of the test command). Also v5's post-hoc failure classification
//! (`swebench.harness.infra_failure`), which is advisory and never changes a grade.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

use super::parsers::{self, ParserKind};
use super::{Error, Profile, StatusMap, TestStatus};

/// Printed (through `set -x`) right before the test command.
pub const START_TEST_OUTPUT: &str = ">>>>> Start Test Output";
/// Printed (through `set -x`) right after the test command.
pub const END_TEST_OUTPUT: &str = ">>>>> End Test Output";
/// v5: the eval script echoes the test command's own `$?` after this, outside the slice.
pub const TEST_EXIT_CODE: &str = ">>>>> Test Exit Code";
/// v5: the shell variable the eval script keeps that `$?` in.
pub const TEST_EXIT_CODE_VAR: &str = "SWEBENCH_TEST_EXIT_CODE";
pub const APPLY_PATCH_FAIL: &str = ">>>>> Patch Apply Failed";
pub const APPLY_PATCH_PASS: &str = ">>>>> Applied Patch";
pub const RESET_FAILED: &str = ">>>>> Reset Failed";
pub const TESTS_ERROR: &str = ">>>>> Tests Errored";
pub const TESTS_TIMEOUT: &str = ">>>>> Tests Timed Out";

/// Any of these anywhere in the log makes it unusable (`bad_codes`), in v4 and v5 alike.
pub const BAD_CODES: [&str; 4] = [APPLY_PATCH_FAIL, RESET_FAILED, TESTS_ERROR, TESTS_TIMEOUT];

/// The part of `full_log` the harness parses: after the first start marker, up to the next
/// end marker (or the next start marker, or the end of the log, whichever comes first).
/// `None` unless both markers occur somewhere in the log, as the harness requires.
///
/// This is `content.split(START)[1].split(END)[0]`, quirks included: the markers need not
/// be in order, and a second start marker also ends the slice.
pub fn test_output(full_log: &str) -> Option<&str> {
    if !(full_log.contains(START_TEST_OUTPUT) && full_log.contains(END_TEST_OUTPUT)) {
        return None;
    }
    let (_, after) = full_log.split_once(START_TEST_OUTPUT)?;
    let after = after.split(START_TEST_OUTPUT).next().unwrap_or(after);
    Some(after.split(END_TEST_OUTPUT).next().unwrap_or(after))
}

/// The log as the harness reads `test_output.txt` back (`open()` in text mode, universal
/// newlines): every `\r\n` and every lone `\r` becomes `\n`.
pub fn universal_newlines(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\r') {
        std::borrow::Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Why a log gave no usable result (`found = False` in the harness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogProblem {
    /// No log was given at all.
    Missing,
    /// One of [`BAD_CODES`] occurs in the log.
    BadCode(&'static str),
    /// The start or the end marker is missing.
    MissingMarkers,
    /// v5: nothing parsed, and no sign in the log that a suite ran (`SUITE_RAN`).
    NoSuiteEvidence,
    /// v5: the recorded test exit status is non-zero, yet no test parsed as FAILED or ERROR.
    ExitCodeMismatch { exit_code: String },
    /// v4: the output is not valid UTF-8; the harness's strict decode raises (no report).
    NotUtf8,
    /// No parser is known for the instance (the harness would raise a `KeyError`).
    UnknownParser(String),
    /// The harness's parser would raise on this log; it writes no report (an error).
    ParserCrash { parser: &'static str, line: String },
}

impl LogProblem {
    /// True when the harness would still write a report (with `patch_successfully_applied`
    /// false); false when it would raise and write none.
    pub fn report_written(&self) -> bool {
        !matches!(self, LogProblem::NotUtf8 | LogProblem::UnknownParser(_) | LogProblem::ParserCrash { .. })
    }
}

impl fmt::Display for LogProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogProblem::Missing => write!(f, "no eval log"),
            LogProblem::BadCode(code) => write!(f, "log contains `{code}`"),
            LogProblem::MissingMarkers => write!(f, "test output markers missing"),
            LogProblem::NoSuiteEvidence => write!(f, "no test result parsed and no sign the suite ran"),
            LogProblem::ExitCodeMismatch { exit_code } => {
                write!(f, "test command exited {exit_code} but no test failed in the log")
            }
            LogProblem::NotUtf8 => write!(f, "test output is not valid UTF-8"),
            LogProblem::UnknownParser(name) => write!(f, "no log parser `{name}`"),
            LogProblem::ParserCrash { parser, line } => write!(f, "parser {parser} raises on line {line:?}"),
        }
    }
}

/// v5's `SUITE_RAN`: every count non-zero. `\s` and `\w` widened as Python's (see parsers).
static SUITE_RAN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?m)Executed [1-9]\d* of \d+",
        r"|TOTAL: [1-9]\d* (?:SUCCESS|FAILED)",
        r"|[1-9]\d* passing",
        r"|Tests:[\s\x1C-\x1F]+[1-9]\d*",
        r"|Test Suites:[\s\x1C-\x1F]+(?:\d+ \w+, )*[1-9]\d* total",
        r"|^# tests [1-9]\d*",
        r"|[1-9]\d* specs?, \d+ failures?",
        r"|': ok$",
    ))
    .expect("valid regex")
});

static TEST_EXIT_CODE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r"{}:[\s\x1C-\x1F]*(-?\d+)", regex::escape(TEST_EXIT_CODE))).expect("valid regex")
});

/// The test command's exit status as recorded in the log (v5's `parse_test_exit_code`: the
/// FIRST `>>>>> Test Exit Code: N` anywhere in the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedExitCode {
    /// The digits as written (Python's `int()` accepts any Unicode decimal digits).
    pub text: String,
    /// `int(text) == 0`.
    pub is_zero: bool,
}

pub fn recorded_exit_code(content: &str) -> Option<RecordedExitCode> {
    let caps = TEST_EXIT_CODE_RE.captures(content)?;
    let text = caps.get(1)?.as_str().to_string();
    let is_zero = text.chars().filter(|&c| c != '-').all(|c| decimal_value(c) == Some(0));
    Some(RecordedExitCode { text, is_zero })
}

static ND: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\d$").expect("valid regex"));

/// The value of a Unicode decimal digit (`Nd`). Unicode assigns these only in contiguous runs
/// 0..9, so a digit's value is its distance from the start of its block, modulo 10.
fn decimal_value(c: char) -> Option<u32> {
    if let Some(d) = c.to_digit(10) {
        return Some(d);
    }
    let is_nd = |c: char| {
        let mut buf = [0u8; 4];
        ND.is_match(c.encode_utf8(&mut buf))
    };
    if !is_nd(c) {
        return None;
    }
    let mut steps = 0u32;
    let mut cp = c as u32;
    while steps < 1000 {
        match cp.checked_sub(1).and_then(char::from_u32) {
            Some(prev) if is_nd(prev) => {
                steps += 1;
                cp -= 1;
            }
            _ => break,
        }
    }
    Some(steps % 10)
}

/// What `get_logs_eval` returns: a status map when `found`, else the reason it is not.
#[derive(Debug, Clone)]
pub struct LogsEval {
    pub status_map: StatusMap,
    pub problem: Option<LogProblem>,
    /// The map came from the whole log (the slice between the markers gave nothing).
    pub parsed_whole_log: bool,
}

impl LogsEval {
    pub fn found(&self) -> bool {
        self.problem.is_none()
    }

    /// The text the status map was parsed from: the slice between the markers, or the whole
    /// `content` when the harness fell back to it.
    pub fn parsed_text<'c>(&self, content: &'c str) -> &'c str {
        if self.parsed_whole_log {
            content
        } else {
            test_output(content).unwrap_or("")
        }
    }

    pub(crate) fn invalid(problem: LogProblem) -> Self {
        LogsEval { status_map: StatusMap::new(), problem: Some(problem), parsed_whole_log: false }
    }
}

/// `get_logs_eval(test_spec, test_output.txt)` for the given profile.
pub fn logs_eval(profile: Profile, parser: ParserKind, content: &str) -> LogsEval {
    if let Some(code) = BAD_CODES.iter().find(|c| content.contains(*c)) {
        return LogsEval::invalid(LogProblem::BadCode(code));
    }
    let Some(sliced) = test_output(content) else {
        return LogsEval::invalid(LogProblem::MissingMarkers);
    };
    let parse = |text: &str| parsers::parse(parser, profile, text);
    let mut status_map = match parse(sliced) {
        Ok(map) => map,
        Err(e) => return LogsEval::invalid(crash_problem(e)),
    };
    let parsed_whole_log = status_map.is_empty();
    if parsed_whole_log {
        // some runners print their results outside the markers: parse the whole log
        status_map = match parse(content) {
            Ok(map) => map,
            Err(e) => return LogsEval::invalid(crash_problem(e)),
        };
    }
    if profile == Profile::V5 {
        if status_map.is_empty() && !SUITE_RAN.is_match(content) {
            return LogsEval::invalid(LogProblem::NoSuiteEvidence);
        }
        if let Some(code) = recorded_exit_code(content) {
            let any_failure =
                status_map.iter().any(|(_, s)| matches!(s, TestStatus::Failed | TestStatus::Error));
            if !code.is_zero && !status_map.is_empty() && !any_failure {
                return LogsEval::invalid(LogProblem::ExitCodeMismatch { exit_code: code.text });
            }
        }
    }
    LogsEval { status_map, problem: None, parsed_whole_log }
}

fn crash_problem(e: Error) -> LogProblem {
    match e {
        Error::ParserCrash { parser, line } => LogProblem::ParserCrash { parser, line },
        other => LogProblem::UnknownParser(other.to_string()),
    }
}

// ------------------------------------------------------------------ v5 failure classification

/// How sure v5's classifier is that a failure is the environment's, not the patch's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureTier {
    /// Cannot plausibly be caused by patching the repository (`infra_failure_ids`).
    Environment,
    /// Could be either (`ambiguous_failure_ids`).
    Ambiguous,
}

/// One hit of v5's `classify_text`: the reason (e.g. `out_of_memory`) and its tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureClass {
    pub reason: &'static str,
    pub tier: FailureTier,
}

static SIGNATURES: LazyLock<Vec<(&'static str, FailureTier, Regex)>> = LazyLock::new(|| {
    use FailureTier::{Ambiguous, Environment};
    [
        ("browser_launch_failed", Environment, r"Failed to launch|Failed to connect to the bus"),
        (
            "display_unavailable",
            Environment,
            r"cannot open display|Missing X server|unable to open X display",
        ),
        ("out_of_memory", Environment, r"Cannot allocate memory|OutOfMemoryError|^Killed$"),
        (
            "container_unavailable",
            Environment,
            r"Error response from daemon|Cannot connect to the Docker daemon",
        ),
        ("network_unreachable", Environment, r"Could not resolve host|Temporary failure in name resolution"),
        ("missing_module", Ambiguous, r"Cannot find module|MODULE_NOT_FOUND|ModuleNotFoundError"),
        ("no_tests_collected", Ambiguous, r"no tests ran|collected 0 items"),
        ("tests_timed_out", Ambiguous, r"Timeout error: \d+ seconds exceeded"),
    ]
    .into_iter()
    .map(|(reason, tier, p)| (reason, tier, Regex::new(&format!("(?m){p}")).expect("valid regex")))
    .collect()
});

/// v5's `classify_text`: the first matching signature, in the harness's order.
pub fn classify_text(text: &str) -> Option<FailureClass> {
    if text.is_empty() {
        return None;
    }
    SIGNATURES
        .iter()
        .find(|(_, _, re)| re.is_match(text))
        .map(|(reason, tier, _)| FailureClass { reason, tier: *tier })
}

// ------------------------------------------------------------------ diagnostics

/// Something odd about a log that the harness does not act on but a reader should know:
/// the usual trace of a forged marker. Never changes a grade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogWarning {
    /// A marker occurs other than exactly once (the eval script's `set -x` prints each once).
    MarkerCount { marker: &'static str, count: usize },
    /// The recorded exit codes in the log disagree; the harness believes the first.
    ExitCodesDisagree { first: String, last: String },
}

impl fmt::Display for LogWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogWarning::MarkerCount { marker, count } => {
                write!(f, "`{marker}` occurs {count} times in the log (expected once)")
            }
            LogWarning::ExitCodesDisagree { first, last } => {
                write!(f, "recorded test exit codes disagree: first {first} (the one graded), last {last}")
            }
        }
    }
}

pub fn warnings(content: &str) -> Vec<LogWarning> {
    let mut out = Vec::new();
    for marker in [START_TEST_OUTPUT, END_TEST_OUTPUT] {
        let count = content.matches(marker).count();
        if count != 1 {
            out.push(LogWarning::MarkerCount { marker, count });
        }
    }
    let codes: Vec<&str> =
        TEST_EXIT_CODE_RE.captures_iter(content).filter_map(|c| c.get(1)).map(|m| m.as_str()).collect();
    if let (Some(first), Some(last)) = (codes.first(), codes.last()) {
        if first != last {
            out.push(LogWarning::ExitCodesDisagree { first: first.to_string(), last: last.to_string() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_follows_python_split_semantics() {
        let log = format!("a\n+ : '{START_TEST_OUTPUT}'\nbody\n+ : '{END_TEST_OUTPUT}'\nafter");
        assert_eq!(test_output(&log), Some("'\nbody\n+ : '"));
        // end marker only before the start marker: the slice runs to the end of the log
        let odd = format!("{END_TEST_OUTPUT} x {START_TEST_OUTPUT} tail");
        assert_eq!(test_output(&odd), Some(" tail"));
        // a second start marker ends the slice
        let two = format!("{START_TEST_OUTPUT}A{START_TEST_OUTPUT}B{END_TEST_OUTPUT}");
        assert_eq!(test_output(&two), Some("A"));
        assert_eq!(test_output("no markers"), None);
        assert_eq!(test_output(START_TEST_OUTPUT), None);
    }

    #[test]
    fn exit_code_takes_the_first_record_and_any_decimal_digits() {
        let log = format!("{TEST_EXIT_CODE}: 0\n{TEST_EXIT_CODE}: 1\n");
        assert_eq!(recorded_exit_code(&log).map(|c| c.is_zero), Some(true));
        assert_eq!(recorded_exit_code(&format!("{TEST_EXIT_CODE}: -0")).map(|c| c.is_zero), Some(true));
        // ARABIC-INDIC DIGIT ZERO and ONE
        assert_eq!(recorded_exit_code(&format!("{TEST_EXIT_CODE}: \u{660}")).map(|c| c.is_zero), Some(true));
        assert_eq!(recorded_exit_code(&format!("{TEST_EXIT_CODE}: \u{661}")).map(|c| c.is_zero), Some(false));
        // MATHEMATICAL BOLD DIGIT ZERO .. and the second run's ZERO (U+1D7D8)
        assert_eq!(decimal_value('\u{1D7CE}'), Some(0));
        assert_eq!(decimal_value('\u{1D7D8}'), Some(0));
        assert_eq!(decimal_value('\u{1D7DB}'), Some(3));
        assert_eq!(recorded_exit_code("nothing"), None);
    }

    #[test]
    fn classifier_keeps_harness_order() {
        let c = classify_text("collected 0 items\nKilled\n").unwrap();
        assert_eq!((c.reason, c.tier), ("out_of_memory", FailureTier::Environment));
        assert_eq!(classify_text("Timeout error: 1800 seconds exceeded.").unwrap().reason, "tests_timed_out");
        assert_eq!(classify_text("all good"), None);
    }
}
