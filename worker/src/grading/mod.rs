//! Grading a run's patch exactly as the official SWE-bench harness does.
//!
//! Two compatibility targets, chosen with [`Profile`]: swebench **5.0.2** (the default) and
//! **4.1.0** (for numbers published under 4.x). They differ in how SKIPPED tests count, in
//! v5's prefix match of truncated test ids, in v5's validity checks of the log (evidence that
//! a suite ran, the recorded exit status of the test command), in some parser details, in
//! the patch-application chain, and in the report's `infra_failure` fields.
//!
//! The flow mirrors the harness's `run_instance`: apply the model patch with
//! [`apply_commands`]; run [`eval_script`] as `/bin/bash /eval.sh`, capturing stdout and
//! stderr merged (decoded as UTF-8 with replacement); then [`grade`] the whole output. `grade`
//! slices the output between the markers ([`test_output`]), parses it with the instance's
//! parser ([`parse_log`]), checks it as `get_logs_eval` does, and builds the per-instance
//! `report.json`; [`summary_report`] builds the run's `make_run_report` JSON.
//!
//! Modules: `parsers` (the log parsers), `log` (markers, slicing, validity checks, v5's
//! failure classification), `report` (predicates, resolution, reports), `script` (eval
//! script and apply chain), `specs` (the repo/version table as data).
//!
//! # Forged output: what the harness does, and what we add
//! Grading reads only what the eval script printed, and the code under test prints into the
//! same stream. The harness's defences, reproduced here, are: the slice starts at the FIRST
//! start marker (the real one is printed by `set -x` before any test runs, unless the model's
//! diff, shown by `git diff` earlier in the log, itself contains the marker text), and in v5 a
//! non-zero recorded exit status of the test command with no FAILED/ERROR entry voids the log
//! (so a suite that fails while printing only fake `PASSED` lines is not resolved). What the
//! harness does not catch: fake `PASSED` lines for the expected tests printed *alongside* real
//! failures of other tests (later lines overwrite earlier ones); a fake `>>>>> Test Exit Code: 0`
//! printed by a test (the harness believes the first one in the log); fake results printed
//! after the runner's summary; v4 has no exit-status check at all.
//!
//! Hence, in [`GradingMode::Checked`] (the default), the [`integrity`] check reads the log for
//! the traces forgeries leave (markers counted other than a clean run prints them, results
//! after the test runner's final summary, a summary counting failures the results do not show,
//! a zero exit status without a summary) and, when it finds one, the prediction is not resolved
//! and the reason is recorded (`Graded::tampered`, `"tampered"` in the report). A deliberate
//! hardening over the harness, which can only turn a resolved instance into an unresolved one;
//! [`GradingMode::Official`] grades exactly as the harness, and [`official_report`] recovers
//! the harness's report from a checked one. [`Graded::warnings`] flags markers seen other than
//! once and disagreeing exit records in either mode; they never change the grade.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use protocol::Instance;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod harness_json;
pub mod integrity;
pub mod log;
pub mod parsers;
pub mod report;
pub mod script;
pub mod specs;

pub use integrity::Tampering;
pub use log::{
    classify_text, test_output, FailureClass, FailureTier, LogProblem, LogWarning, END_TEST_OUTPUT,
    START_TEST_OUTPUT,
};
pub use report::{
    official_report, summary_report, EvalType, InstanceResult, Leftovers, ResolutionStatus, SuccessFailure,
    SummaryInput, TestsStatus,
};
pub use script::{
    already_applied_check, apply_commands, eval_script_for, ApplyStep, EVAL_SCRIPT_PATH, PATCH_PATH,
};

use parsers::ParserKind;

/// Which harness release to agree with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Profile {
    /// swebench 5.0.2.
    #[default]
    V5,
    /// swebench 4.1.0.
    V4,
}

impl From<protocol::GradingProfile> for Profile {
    fn from(p: protocol::GradingProfile) -> Self {
        match p {
            protocol::GradingProfile::V5 => Profile::V5,
            protocol::GradingProfile::V4 => Profile::V4,
        }
    }
}

/// Whether the harness's verdict is checked against forged test output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GradingMode {
    /// The harness's verdict, unless the [`integrity`] check finds signs of forged output in
    /// the log: then not resolved, with the reason recorded.
    #[default]
    Checked,
    /// Exactly the official harness's verdict.
    Official,
}

/// What can go wrong before grading proper (a failing task is an outcome, not an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unknown log parser `{0}`")]
    UnknownParser(String),
    /// The harness's parser raises on this log (an `IndexError`); it would write no report.
    #[error("log parser {parser} raises on line {line:?}")]
    ParserCrash { parser: &'static str, line: String },
    #[error("no test specification for {repo} version {version}")]
    UnknownRepoVersion { repo: String, version: String },
    #[error("test patch cannot be parsed: {0}")]
    TestPatch(String),
}

// ------------------------------------------------------------------ statuses

/// A test's status as a parser recorded it (`TestStatus` values). Parsers store the status
/// word as found, so a word that is none of the five (`ERROR:` from a line `ERROR: not found`,
/// or `q]` from v4's pytest_v2 on an id with a space) is kept in [`TestStatus::Other`]; it
/// grades as neither passed nor failed, exactly as in the harness.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TestStatus {
    Passed,
    Failed,
    Skipped,
    Error,
    XFail,
    Other(String),
}

impl TestStatus {
    pub fn from_word(word: &str) -> TestStatus {
        match word {
            "PASSED" => TestStatus::Passed,
            "FAILED" => TestStatus::Failed,
            "SKIPPED" => TestStatus::Skipped,
            "ERROR" => TestStatus::Error,
            "XFAIL" => TestStatus::XFail,
            other => TestStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            TestStatus::Passed => "PASSED",
            TestStatus::Failed => "FAILED",
            TestStatus::Skipped => "SKIPPED",
            TestStatus::Error => "ERROR",
            TestStatus::XFail => "XFAIL",
            TestStatus::Other(word) => word,
        }
    }
}

impl fmt::Display for TestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TestStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TestStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(TestStatus::from_word(&String::deserialize(d)?))
    }
}

/// Test id to status, in the order the ids were first seen, like the harness's dict: a later
/// line for the same id overwrites the status but keeps the position. The order matters: v5
/// resolves a truncated id to the first matching key. Serialises as a JSON object in that
/// order; deserialises keeping document order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StatusMap {
    entries: Vec<(String, TestStatus)>,
    index: HashMap<String, usize>,
}

impl StatusMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, id: String, status: TestStatus) {
        match self.index.get(&id) {
            Some(&i) => self.entries[i].1 = status,
            None => {
                self.index.insert(id.clone(), self.entries.len());
                self.entries.push((id, status));
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&TestStatus> {
        self.index.get(id).map(|&i| &self.entries[i].1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// In first-seen order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TestStatus)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn to_btree(&self) -> BTreeMap<String, TestStatus> {
        self.entries.iter().cloned().collect()
    }
}

impl fmt::Debug for StatusMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for StatusMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for StatusMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StatusMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from test id to status")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StatusMap, A::Error> {
                let mut map = StatusMap::new();
                while let Some((k, v)) = access.next_entry::<String, TestStatus>()? {
                    map.insert(k, v);
                }
                Ok(map)
            }
        }
        d.deserialize_map(V)
    }
}

// ------------------------------------------------------------------ parsers and scripts

/// The instance's parser as a short name (`pytest`, `pytest_options`, `pytest_v2`, `django`,
/// `seaborn`, `sympy`, `matplotlib`): the dataset's `log_parser` when set (v5), else the
/// harness's parser for the repository (v4's `MAP_REPO_TO_PARSER`). `None` when neither is
/// known (e.g. a JavaScript parser named by the dataset).
pub fn parser_name_for(instance: &Instance) -> Option<&'static str> {
    parser_kind(Profile::V5, instance).map(ParserKind::name)
}

/// v5 reads the dataset's `log_parser`; v4 picks by repository. They agree on every SWE-bench
/// repository; each falls back to the other.
fn parser_kind(profile: Profile, instance: &Instance) -> Option<ParserKind> {
    let from_dataset = || instance.log_parser.as_deref().and_then(ParserKind::from_name);
    let from_repo = || specs::parser_for_repo(&instance.repo).and_then(ParserKind::from_name);
    match profile {
        Profile::V5 => match instance.log_parser.as_deref() {
            Some(name) if !name.trim().is_empty() => from_dataset(),
            _ => from_repo(),
        },
        Profile::V4 => from_repo().or_else(from_dataset),
    }
}

/// Parses already-sliced test output with the named parser (short or `parse_log_*` registry
/// name, aliases included), with v5 semantics. The instance is not consulted, as in the
/// harness (its parsers receive the test spec and ignore it).
pub fn parse_log(parser: &str, log: &str, instance: &Instance) -> Result<StatusMap, Error> {
    parse_log_with(Profile::V5, parser, log, instance)
}

/// [`parse_log`] under a chosen profile.
pub fn parse_log_with(
    profile: Profile,
    parser: &str,
    log: &str,
    _instance: &Instance,
) -> Result<StatusMap, Error> {
    let kind = ParserKind::from_name(parser).ok_or_else(|| Error::UnknownParser(parser.to_string()))?;
    parsers::parse(kind, profile, log)
}

/// The eval script the default (v5) harness runs for the instance: see [`eval_script_for`].
pub fn eval_script(instance: &Instance) -> Result<String, Error> {
    script::eval_script_for(instance, Profile::V5)
}

fn eval_type(profile: Profile, instance: &Instance) -> EvalType {
    const V4_FAIL_ONLY_REPOS: [&str; 3] = ["chartjs/Chart.js", "processing/p5.js", "markedjs/marked"];
    let fail_only = match profile {
        Profile::V5 => instance.extra.get("eval_type").and_then(|v| v.as_str()) == Some("fail_only"),
        Profile::V4 => V4_FAIL_ONLY_REPOS.contains(&instance.repo.as_str()),
    };
    if fail_only {
        EvalType::FailOnly
    } else {
        EvalType::PassAndFail
    }
}

// ------------------------------------------------------------------ grading

/// Everything known about one evaluated prediction.
#[derive(Debug, Clone, Copy)]
pub struct GradeInput<'a> {
    pub instance: &'a Instance,
    pub profile: Profile,
    /// Whether to check the log for forged output (see the module docs).
    pub mode: GradingMode,
    /// The model patch; `None` or `""` is an empty patch, which the harness never runs.
    pub patch: Option<&'a str>,
    /// Whether a step of the apply chain (or v5's already-applied check) exited 0.
    pub patch_applied: bool,
    /// The whole output of `/bin/bash /eval.sh` (stdout and stderr merged), markers included,
    /// decoded as UTF-8 with replacement (`String::from_utf8_lossy`, as v5 decodes). Graded as
    /// the harness reads `test_output.txt` back (`\r\n` and `\r` become `\n`). Output without
    /// the markers is not gradable, as in the harness.
    pub eval_log: Option<&'a str>,
    /// The script that printed `eval_log`: the integrity check expects its markers exactly as
    /// often as it prints them. `None` when it is not known (a saved log): then the markers
    /// of either profile's script are accepted.
    pub eval_script: Option<&'a str>,
    /// The eval script's own exit status. Not graded: the harness ignores it (it is the final
    /// `git checkout`'s); v5 reads the test command's status recorded in the log instead.
    pub eval_exit_code: Option<i64>,
    /// The eval script hit the time limit (the harness then writes no report: an error).
    pub timed_out: bool,
    /// The raw output was not valid UTF-8. v4 decodes strictly, raises, and writes no report
    /// (an error); v5 decodes with replacement and grades it.
    pub eval_log_invalid_utf8: bool,
}

/// How the grading of one prediction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GradeOutcome {
    Resolved,
    Unresolved,
    EmptyPatch,
    ApplyFailed,
    TimedOut,
    /// The log gave no usable result (see [`Graded::problem`]): not resolved.
    InvalidLog,
    /// The integrity check found signs of forged output (see [`Graded::tampered`]): not
    /// resolved, whatever the harness would say.
    Tampered,
}

impl GradeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            GradeOutcome::Resolved => "resolved",
            GradeOutcome::Unresolved => "unresolved",
            GradeOutcome::EmptyPatch => "empty_patch",
            GradeOutcome::ApplyFailed => "apply_failed",
            GradeOutcome::TimedOut => "timed_out",
            GradeOutcome::InvalidLog => "invalid_log",
            GradeOutcome::Tampered => "tampered",
        }
    }
}

/// Where the harness's summary report counts an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HarnessCategory {
    Resolved,
    Unresolved,
    EmptyPatch,
    /// No `report.json`: apply failure, timeout, a parser that raises.
    Error,
}

/// The verdict on one prediction.
#[derive(Debug, Clone)]
pub struct Graded {
    pub instance_id: String,
    pub resolved: bool,
    pub status: ResolutionStatus,
    /// The harness's per-instance `report.json` (`{instance_id: {...}}`), or `Value::Null`
    /// when the harness writes none (empty patch, apply failure, timeout, parser crash).
    pub report: serde_json::Value,
    /// The parsed test statuses (empty unless the log was usable).
    pub tests: StatusMap,
    pub outcome: GradeOutcome,
    /// `tests_status` of the report, when the log was usable.
    pub tests_status: Option<TestsStatus>,
    /// Why the log was not usable, for `InvalidLog`.
    pub problem: Option<LogProblem>,
    /// v5's advisory classification of the failure (`infra_failure_reason`), if any.
    pub failure: Option<FailureClass>,
    /// Oddities of the log that do not change the grade (see the module docs).
    pub warnings: Vec<LogWarning>,
    /// What the integrity check found ([`GradingMode::Checked`] only).
    pub tampered: Option<Tampering>,
    patch_empty: bool,
}

impl Graded {
    /// Whether the harness would have written a `report.json`.
    pub fn report_written(&self) -> bool {
        !self.report.is_null()
    }

    pub fn harness_category(&self) -> HarnessCategory {
        if self.patch_empty {
            HarnessCategory::EmptyPatch
        } else if !self.report_written() {
            HarnessCategory::Error
        } else if self.resolved {
            HarnessCategory::Resolved
        } else {
            HarnessCategory::Unresolved
        }
    }

    /// This verdict as a row of [`summary_report`]'s input.
    pub fn instance_result(&self) -> InstanceResult {
        InstanceResult {
            instance_id: self.instance_id.clone(),
            patch_empty: self.patch_empty,
            report: self.report_written().then(|| self.report.clone()),
            failure: self.failure.clone(),
        }
    }

    fn not_graded(instance_id: &str, outcome: GradeOutcome) -> Graded {
        Graded {
            instance_id: instance_id.to_string(),
            resolved: false,
            status: ResolutionStatus::No,
            report: serde_json::Value::Null,
            tests: StatusMap::new(),
            outcome,
            tests_status: None,
            problem: None,
            failure: None,
            warnings: Vec::new(),
            tampered: None,
            patch_empty: outcome == GradeOutcome::EmptyPatch,
        }
    }

    /// Overrides the harness's verdict: not resolved, the reason in the report (if any).
    fn mark_tampered(mut self, tampering: Tampering) -> Graded {
        if let Some(inner) = self.report.get_mut(&self.instance_id).and_then(|v| v.as_object_mut()) {
            inner.insert("resolved".into(), serde_json::Value::Bool(false));
            inner.insert(report::TAMPERED_KEY.into(), serde_json::Value::String(tampering.to_string()));
        }
        self.resolved = false;
        self.status = ResolutionStatus::No;
        self.outcome = GradeOutcome::Tampered;
        self.tampered = Some(tampering);
        self
    }
}

/// Grades one prediction as the harness of `input.profile` would. Never panics.
pub fn grade(input: &GradeInput<'_>) -> Graded {
    let instance = input.instance;
    let id = instance.instance_id.as_str();
    let profile = input.profile;
    if input.patch.is_none_or(str::is_empty) {
        return Graded::not_graded(id, GradeOutcome::EmptyPatch);
    }
    if !input.patch_applied {
        return Graded::not_graded(id, GradeOutcome::ApplyFailed);
    }
    // the harness grades the file it wrote, read back with universal newlines
    let normalized = input.eval_log.map(log::universal_newlines);
    let eval_log = normalized.as_deref();
    let content = eval_log.unwrap_or("");
    let classify = |text: &str| if profile == Profile::V5 { classify_text(text) } else { None };
    if input.timed_out {
        let mut graded = Graded::not_graded(id, GradeOutcome::TimedOut);
        // the harness appends this line (with its limit) to test_output.txt before giving up
        graded.failure = classify(&format!("{content}\n\nTimeout error: 0 seconds exceeded."));
        graded.warnings = log::warnings(content);
        return graded;
    }

    let mut graded = Graded::not_graded(id, GradeOutcome::InvalidLog);
    graded.warnings = log::warnings(content);
    if input.eval_log_invalid_utf8 && profile == Profile::V4 {
        graded.problem = Some(LogProblem::NotUtf8);
        return graded;
    }
    let Some(kind) = parser_kind(profile, instance) else {
        let name = instance.log_parser.clone().unwrap_or_else(|| instance.repo.clone());
        graded.problem = Some(LogProblem::UnknownParser(name));
        return graded;
    };
    let evaluated = match eval_log {
        None => log::LogsEval::invalid(LogProblem::Missing),
        Some(content) => log::logs_eval(profile, kind, content),
    };
    let tampering = match (input.mode, eval_log) {
        (GradingMode::Checked, Some(content)) => {
            let markers = match input.eval_script {
                Some(script) => integrity::ExpectedMarkers::of_script(script),
                None => integrity::ExpectedMarkers::unknown_script(),
            };
            integrity::check(&integrity::Input {
                log: content,
                parsed: evaluated.parsed_text(content),
                status_map: &evaluated.status_map,
                parser: kind,
                profile,
                markers: &markers,
            })
        }
        _ => None,
    };
    let graded = harness_verdict(graded, input, evaluated, content);
    match tampering {
        Some(t) => graded.mark_tampered(t),
        None => graded,
    }
}

/// The rest of `get_eval_report` once the log is read: `graded` is the not-yet-graded verdict.
fn harness_verdict(
    mut graded: Graded,
    input: &GradeInput<'_>,
    evaluated: log::LogsEval,
    content: &str,
) -> Graded {
    let instance = input.instance;
    let profile = input.profile;
    let classify = |text: &str| if profile == Profile::V5 { classify_text(text) } else { None };
    let eval_ref = report::ReportFacts {
        instance_id: &instance.instance_id,
        patch_is_none: false,
        tests_status: None,
        resolved: false,
        failure: None,
    };
    if let Some(problem) = evaluated.problem {
        if problem.report_written() {
            graded.failure = classify(content);
            graded.report = report::instance_report(
                profile,
                &report::ReportFacts { failure: graded.failure.as_ref(), ..eval_ref },
            );
        }
        graded.problem = Some(problem);
        return graded;
    }

    let tests = report::tests_report(
        profile,
        eval_type(profile, instance),
        &evaluated.status_map,
        &instance.fail_to_pass,
        &instance.pass_to_pass,
    );
    let status = report::resolution_status(&tests);
    let resolved = status == ResolutionStatus::Full;
    graded.report = report::instance_report(
        profile,
        &report::ReportFacts { tests_status: Some(&tests), resolved, ..eval_ref },
    );
    if !resolved {
        // the summary classifies every unresolved instance's test output (v5)
        graded.failure = classify(content);
    }
    graded.resolved = resolved;
    graded.status = status;
    graded.outcome = if resolved { GradeOutcome::Resolved } else { GradeOutcome::Unresolved };
    graded.tests = evaluated.status_map;
    graded.tests_status = Some(tests);
    graded
}

#[cfg(test)]
mod tests;
