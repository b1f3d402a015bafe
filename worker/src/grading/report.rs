//! From a status map to the harness's verdict: the per-test predicates, `tests_status`, the
//! resolution status, the per-instance `report.json` and the run's summary report
//! (`grading.py` and `reporting.py` of swebench 4.1.0 and 5.0.2).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::log::{FailureClass, FailureTier};
use super::{Profile, StatusMap, TestStatus};

/// How the expected tests are judged (`EvalType`). Every SWE-bench Verified row is
/// `PassAndFail`; `FailOnly` exists for a few JavaScript repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvalType {
    #[default]
    PassAndFail,
    /// A test fails only if it is present with status FAILED.
    FailOnly,
}

/// The harness's `ResolvedStatus`. Only `Full` sets `resolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ResolutionStatus {
    #[serde(rename = "RESOLVED_FULL")]
    Full,
    #[serde(rename = "RESOLVED_PARTIAL")]
    Partial,
    #[serde(rename = "RESOLVED_NO")]
    No,
}

impl ResolutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolutionStatus::Full => "RESOLVED_FULL",
            ResolutionStatus::Partial => "RESOLVED_PARTIAL",
            ResolutionStatus::No => "RESOLVED_NO",
        }
    }
}

/// One `{"success": [...], "failure": [...]}` of `tests_status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SuccessFailure {
    pub success: Vec<String>,
    pub failure: Vec<String>,
}

/// `tests_status` of a report. `FAIL_TO_FAIL` and `PASS_TO_FAIL` are always empty
/// (the harness grades with `calculate_to_fail=False`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TestsStatus {
    #[serde(rename = "FAIL_TO_PASS")]
    pub fail_to_pass: SuccessFailure,
    #[serde(rename = "PASS_TO_PASS")]
    pub pass_to_pass: SuccessFailure,
    #[serde(rename = "FAIL_TO_FAIL")]
    pub fail_to_fail: SuccessFailure,
    #[serde(rename = "PASS_TO_FAIL")]
    pub pass_to_fail: SuccessFailure,
}

fn is_passing(s: &TestStatus) -> bool {
    matches!(s, TestStatus::Passed | TestStatus::XFail)
}

/// v5's `_resolve_case`: the exact id, or (only for an id with more `[` than `]`, i.e. one
/// truncated mid-parameter in the dataset) the first key in log order that it prefixes,
/// provided every such key agrees on pass versus not-pass. v4 matches exactly.
fn resolve_case<'m>(profile: Profile, case: &str, sm: &'m StatusMap) -> Option<&'m TestStatus> {
    if let Some(status) = sm.get(case) {
        return Some(status);
    }
    if profile == Profile::V4 || case.matches('[').count() <= case.matches(']').count() {
        return None;
    }
    let mut matches = sm.iter().filter(|(k, _)| k.starts_with(case));
    let (_, first) = matches.next()?;
    let agree = matches.all(|(_, s)| is_passing(s) == is_passing(first));
    agree.then_some(first)
}

/// `test_passed`: PASSED or XFAIL.
pub fn test_passed(profile: Profile, case: &str, sm: &StatusMap) -> bool {
    resolve_case(profile, case, sm).is_some_and(is_passing)
}

/// `test_failed`: absent, FAILED or ERROR; v5 also SKIPPED. (A raw status word that is none
/// of the five, e.g. `ERROR:`, is neither passed nor failed: the test drops out of both lists.)
pub fn test_failed(profile: Profile, case: &str, sm: &StatusMap) -> bool {
    match resolve_case(profile, case, sm) {
        None => true,
        Some(TestStatus::Failed | TestStatus::Error) => true,
        Some(TestStatus::Skipped) => profile == Profile::V5,
        Some(_) => false,
    }
}

/// v5's `test_maintained` (PASS_TO_PASS): passed, or SKIPPED (a skip is no regression).
pub fn test_maintained(profile: Profile, case: &str, sm: &StatusMap) -> bool {
    test_passed(profile, case, sm) || matches!(resolve_case(profile, case, sm), Some(TestStatus::Skipped))
}

/// `get_eval_tests_report`.
pub fn tests_report(
    profile: Profile,
    eval_type: EvalType,
    sm: &StatusMap,
    fail_to_pass: &[String],
    pass_to_pass: &[String],
) -> TestsStatus {
    let fail_only = |case: &str, out: &mut SuccessFailure| {
        if sm.get(case) == Some(&TestStatus::Failed) {
            out.failure.push(case.to_string());
        } else {
            out.success.push(case.to_string());
        }
    };
    let pass_and_fail = |case: &str, out: &mut SuccessFailure| {
        if test_passed(profile, case, sm) {
            out.success.push(case.to_string());
        } else if test_failed(profile, case, sm) {
            out.failure.push(case.to_string());
        }
    };
    let maintained = |case: &str, out: &mut SuccessFailure| {
        let kept = match profile {
            Profile::V5 => test_maintained(profile, case, sm),
            Profile::V4 => test_passed(profile, case, sm),
        };
        if kept {
            out.success.push(case.to_string());
        } else if test_failed(profile, case, sm) {
            out.failure.push(case.to_string());
        }
    };
    let mut report = TestsStatus::default();
    for case in fail_to_pass {
        match eval_type {
            EvalType::PassAndFail => pass_and_fail(case, &mut report.fail_to_pass),
            EvalType::FailOnly => fail_only(case, &mut report.fail_to_pass),
        }
    }
    for case in pass_to_pass {
        match eval_type {
            EvalType::PassAndFail => maintained(case, &mut report.pass_to_pass),
            EvalType::FailOnly => fail_only(case, &mut report.pass_to_pass),
        }
    }
    report
}

/// `get_resolution_status`: each ratio is success / (success + failure), 1 when both are
/// empty; FULL when both are 1, PARTIAL when F2P is strictly between 0 and 1 and P2P is 1.
pub fn resolution_status(report: &TestsStatus) -> ResolutionStatus {
    let full = |sf: &SuccessFailure| sf.failure.is_empty();
    let f2p = &report.fail_to_pass;
    if full(f2p) && full(&report.pass_to_pass) {
        ResolutionStatus::Full
    } else if !f2p.success.is_empty() && !f2p.failure.is_empty() && full(&report.pass_to_pass) {
        ResolutionStatus::Partial
    } else {
        ResolutionStatus::No
    }
}

/// The key under which a report graded in [`super::GradingMode::Checked`] records why the
/// integrity check refused the log (and `resolved` is then false, whatever the harness said).
/// Not a key of the harness's report.
pub const TAMPERED_KEY: &str = "tampered";

/// The report the official harness writes, from one graded in [`super::GradingMode::Checked`]:
/// without the integrity check's [`TAMPERED_KEY`], and with `resolved` as the harness decides
/// it from `tests_status` (true only when no FAIL_TO_PASS or PASS_TO_PASS test failed, i.e.
/// `RESOLVED_FULL`). A report the check did not touch is returned as it is.
pub fn official_report(report: &Value) -> Value {
    let mut out = report.clone();
    let Some(instances) = out.as_object_mut() else { return out };
    for inner in instances.values_mut().filter_map(Value::as_object_mut) {
        if inner.remove(TAMPERED_KEY).is_none() {
            continue;
        }
        let failures_empty = |list: &str| {
            inner
                .get("tests_status")
                .and_then(|t| t.get(list))
                .and_then(|l| l.get("failure"))
                .and_then(Value::as_array)
                .map(Vec::is_empty)
        };
        let resolved = matches!(
            (failures_empty("FAIL_TO_PASS"), failures_empty("PASS_TO_PASS")),
            (Some(true), Some(true))
        );
        inner.insert("resolved".into(), Value::Bool(resolved));
    }
    out
}

/// What `get_eval_report` knows about one graded prediction.
pub(crate) struct ReportFacts<'a> {
    pub instance_id: &'a str,
    pub patch_is_none: bool,
    /// `None` when the log was not usable (`found = False`).
    pub tests_status: Option<&'a TestsStatus>,
    pub resolved: bool,
    /// v5: the classification of an unusable log.
    pub failure: Option<&'a FailureClass>,
}

/// The per-instance `report.json` of `get_eval_report(..., include_tests_status=True)`.
/// (Key order is not kept: `serde_json::Value` sorts object keys.)
pub(crate) fn instance_report(profile: Profile, facts: &ReportFacts<'_>) -> Value {
    let mut inner = Map::new();
    inner.insert("patch_is_None".into(), Value::Bool(false));
    inner.insert("patch_exists".into(), Value::Bool(false));
    inner.insert("patch_successfully_applied".into(), Value::Bool(false));
    inner.insert("resolved".into(), Value::Bool(false));
    if profile == Profile::V5 {
        inner.insert("infra_failure".into(), Value::Bool(false));
    }
    if facts.patch_is_none {
        inner.insert("patch_is_None".into(), Value::Bool(true));
    } else {
        inner.insert("patch_exists".into(), Value::Bool(true));
        match facts.tests_status {
            None => {
                if let (Profile::V5, Some(class)) = (profile, facts.failure) {
                    inner.insert("infra_failure".into(), Value::Bool(class.tier == FailureTier::Environment));
                    inner.insert("infra_failure_reason".into(), Value::String(class.reason.to_string()));
                }
            }
            Some(tests) => {
                inner.insert("patch_successfully_applied".into(), Value::Bool(true));
                inner.insert("resolved".into(), Value::Bool(facts.resolved));
                inner.insert("tests_status".into(), serde_json::to_value(tests).unwrap_or(Value::Null));
            }
        }
    }
    let mut outer = Map::new();
    outer.insert(facts.instance_id.to_string(), Value::Object(inner));
    Value::Object(outer)
}

// ------------------------------------------------------------------ summary report

/// What the summary needs about one prediction (one row of the predictions file).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceResult {
    pub instance_id: String,
    /// The prediction's `model_patch` was `""` or null: the harness never runs it.
    pub patch_empty: bool,
    /// The `report.json` the harness would have written, `None` when it writes none
    /// (apply failure, timeout, a crash). `Some(Value::Null)` stands for an empty file.
    pub report: Option<Value>,
    /// v5: the classification of the instance's logs, used if it is not resolved.
    pub failure: Option<FailureClass>,
}

/// Docker leftovers the harness lists when it has a Docker client (v5) or, inverted, none (v4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub unstopped_containers: Vec<String>,
    pub unremoved_images: Vec<String>,
}

/// The inputs of `make_run_report`.
#[derive(Debug, Clone)]
pub struct SummaryInput<'a> {
    pub profile: Profile,
    /// The dataset as evaluated (after any `--instance_ids` filter), in any order.
    pub dataset_ids: &'a [String],
    /// Every prediction; for a repeated id the last one wins, as in the harness's dict.
    pub results: &'a [InstanceResult],
    /// Emitted as `unstopped_instances`, `unstopped_containers`, `unremoved_images` when given.
    pub leftovers: Option<&'a Leftovers>,
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// `make_run_report`'s JSON (schema_version 2), without writing it anywhere.
pub fn summary_report(input: &SummaryInput<'_>) -> Value {
    let mut predictions: BTreeMap<&str, &InstanceResult> = BTreeMap::new();
    for r in input.results {
        predictions.insert(&r.instance_id, r);
    }
    let mut completed = BTreeSet::new();
    let mut resolved = BTreeSet::new();
    let mut unresolved = BTreeSet::new();
    let mut errors = BTreeSet::new();
    let mut incomplete = BTreeSet::new();
    let mut empty_patch = BTreeSet::new();
    for id in input.dataset_ids {
        let id = id.as_str();
        let Some(pred) = predictions.get(id) else {
            incomplete.insert(id);
            continue;
        };
        if pred.patch_empty {
            empty_patch.insert(id);
            continue;
        }
        let Some(report) = &pred.report else {
            errors.insert(id);
            continue;
        };
        completed.insert(id);
        match report.get(id).and_then(|r| r.get("resolved")) {
            Some(flag) if truthy(flag) => resolved.insert(id),
            Some(_) => unresolved.insert(id),
            // an empty file, or a report without the keys: an error (and still "completed")
            None => errors.insert(id),
        };
    }

    let mut infra = BTreeSet::new();
    let mut ambiguous = BTreeSet::new();
    let mut reasons = Map::new();
    for id in unresolved.iter().chain(errors.iter()) {
        if let Some(class) = predictions.get(id).and_then(|p| p.failure.as_ref()) {
            reasons.insert(id.to_string(), Value::String(class.reason.to_string()));
            match class.tier {
                FailureTier::Environment => infra.insert(*id),
                FailureTier::Ambiguous => ambiguous.insert(*id),
            };
        }
    }

    let ids = |s: &BTreeSet<&str>| json!(s.iter().collect::<Vec<_>>());
    let mut out = Map::new();
    let v5 = input.profile == Profile::V5;
    out.insert("total_instances".into(), json!(input.dataset_ids.len()));
    out.insert("submitted_instances".into(), json!(predictions.len()));
    out.insert("completed_instances".into(), json!(completed.len()));
    out.insert("resolved_instances".into(), json!(resolved.len()));
    out.insert("unresolved_instances".into(), json!(unresolved.len()));
    if v5 {
        out.insert("infra_failure_instances".into(), json!(infra.len()));
        out.insert("ambiguous_failure_instances".into(), json!(ambiguous.len()));
    }
    out.insert("empty_patch_instances".into(), json!(empty_patch.len()));
    out.insert("error_instances".into(), json!(errors.len()));
    out.insert("completed_ids".into(), ids(&completed));
    out.insert("incomplete_ids".into(), ids(&incomplete));
    out.insert("empty_patch_ids".into(), ids(&empty_patch));
    out.insert("submitted_ids".into(), json!(predictions.keys().collect::<Vec<_>>()));
    out.insert("resolved_ids".into(), ids(&resolved));
    out.insert("unresolved_ids".into(), ids(&unresolved));
    if v5 {
        out.insert("infra_failure_ids".into(), ids(&infra));
        out.insert("ambiguous_failure_ids".into(), ids(&ambiguous));
        out.insert("failure_reasons".into(), Value::Object(reasons));
    }
    out.insert("error_ids".into(), ids(&errors));
    out.insert("schema_version".into(), json!(2));
    if let Some(left) = input.leftovers {
        let containers: BTreeSet<&String> = left.unstopped_containers.iter().collect();
        let images: BTreeSet<&String> = left.unremoved_images.iter().collect();
        out.insert("unstopped_instances".into(), json!(containers.len()));
        out.insert("unstopped_containers".into(), json!(containers));
        out.insert("unremoved_images".into(), json!(images));
    }
    Value::Object(out)
}
