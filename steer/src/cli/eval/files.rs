//! The files `steer eval` writes per graded instance, where the harness writes them
//! (`<report dir>/<run id>/<model>/<instance>/`): `patch.diff`, `eval.sh`, `test_output.txt`,
//! `run_instance.log` and `report.json`; and v5's failure classification read from them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use orchestrator::store::evals::EvalResult;
use protocol::GradingProfile;
use worker::grading::{self, FailureClass};

/// The harness's file names (`LOG_REPORT`, `LOG_INSTANCE`, `LOG_TEST_OUTPUT`, and the
/// patch and script it writes beside them).
pub const REPORT: &str = "report.json";
pub const INSTANCE_LOG: &str = "run_instance.log";
pub const TEST_OUTPUT: &str = "test_output.txt";
pub const PATCH: &str = "patch.diff";
pub const EVAL_SCRIPT: &str = "eval.sh";
/// The run-level file beside the model folders (`LOG_RUN_METADATA`).
pub const RUN_METADATA: &str = "run.json";

/// How many instance folders and report.json files were written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub folders: usize,
    pub reports: usize,
}

/// The folder of one graded instance: `<dir>/<run id>/<model with / as __>/<instance>`.
pub fn instance_dir(dir: &Path, run_id: &str, r: &EvalResult) -> PathBuf {
    dir.join(run_id).join(r.model_name_or_path.replace('/', "__")).join(&r.instance_id)
}

/// The run's `run_instance.log`: steerbench's own account of grading the instance (the
/// coordinator's view of the run, then the worker's log of the container, the patch
/// application, the test command and their exit statuses and timings, then the run's error).
pub fn instance_log(r: &EvalResult) -> String {
    let mut log = format!(
        "steerbench run {} of {} for {}: state {}, outcome {}\n",
        r.run_id,
        r.model_name_or_path,
        r.instance_id,
        r.state,
        r.outcome.as_deref().unwrap_or("none")
    );
    if let Some(worker_log) = &r.instance_log {
        log.push_str(worker_log);
        if !worker_log.ends_with('\n') {
            log.push('\n');
        }
    }
    if let Some(error) = &r.last_error {
        log.push_str(&format!("Error: {error}\n"));
    }
    log
}

/// v5's `classify_logs(test_output.txt, run_instance.log)`: the texts of the files that
/// exist, joined by a newline, matched against v5's signatures in order. Not done under
/// the v4 profile, whose harness has no such classification.
pub fn failure_of(profile: GradingProfile, r: &EvalResult) -> Option<FailureClass> {
    if profile != GradingProfile::V5 || !r.patch_submitted {
        return None;
    }
    let chunks: Vec<String> = r.test_output.iter().cloned().chain(std::iter::once(instance_log(r))).collect();
    grading::classify_text(&chunks.join("\n"))
}

/// Whether the harness writes a report.json for this result: not when the patch did not
/// apply, the tests timed out, or the run was never graded.
fn report_of(r: &EvalResult) -> Option<&serde_json::Value> {
    r.report.as_ref().filter(|v| !(v.is_null() || v.as_object().is_some_and(|o| o.is_empty())))
}

/// The run's `run.json` (`<dir>/<run id>/run.json`), as v5's `write_run_metadata` writes it:
/// what the run graded against, so a later re-grade is not told another dataset. `dataset`
/// is the file or name the dataset was imported from; the harness's `split` is `test` and a
/// `task_repo` recorded before is kept, as the harness keeps it.
pub fn write_run_metadata(dir: &Path, run_id: &str, dataset: &str) -> anyhow::Result<()> {
    let path = dir.join(run_id).join(RUN_METADATA);
    let task_repo = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v.get("task_repo").filter(|t| !t.is_null()).cloned())
        .unwrap_or(serde_json::Value::Null);
    let created_at = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S+00:00").to_string();
    let meta = serde_json::json!({"dataset": dataset, "split": "test", "task_repo": task_repo, "created_at": created_at});
    // `json.dumps(..., indent=2) + "\n"`
    let text = grading::harness_json::dumps_indented(&meta, 2) + "\n";
    std::fs::create_dir_all(path.parent().expect("run.json has a folder"))
        .with_context(|| format!("creating the folder of {}", path.display()))?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes each graded instance's folder as the harness would. An empty patch is not run by
/// the harness, so it gets no folder.
pub fn write_all(dir: &Path, run_id: &str, results: &[EvalResult]) -> anyhow::Result<Written> {
    let mut written = Written::default();
    for r in results.iter().filter(|r| r.patch_submitted) {
        let folder = instance_dir(dir, run_id, r);
        std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
        let write = |name: &str, text: &str| {
            let file = folder.join(name);
            std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))
        };
        write(PATCH, r.patch.as_deref().unwrap_or(""))?;
        write(INSTANCE_LOG, &instance_log(r))?;
        if let Some(script) = &r.eval_script {
            write(EVAL_SCRIPT, script)?;
        }
        if let Some(output) = &r.test_output {
            write(TEST_OUTPUT, output)?;
        }
        if let Some(report) = report_of(r) {
            // `f.write(json.dumps(report, indent=4))`: no newline at the end
            write(REPORT, &grading::harness_json::dumps(report))?;
            written.reports += 1;
        }
        written.folders += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(test_output: Option<&str>, worker_log: Option<&str>, error: Option<&str>) -> EvalResult {
        EvalResult {
            run_id: 7,
            instance_id: "o__r-1".into(),
            model_name_or_path: "org/m".into(),
            state: "done".into(),
            outcome: Some("unresolved".into()),
            resolved: Some(false),
            patch_submitted: true,
            report: None,
            last_error: error.map(Into::into),
            patch: Some("diff --git a/x b/x\n".into()),
            test_output: test_output.map(Into::into),
            eval_script: None,
            instance_log: worker_log.map(Into::into),
        }
    }

    fn reason(profile: GradingProfile, r: &EvalResult) -> Option<&'static str> {
        failure_of(profile, r).map(|c| c.reason)
    }

    #[test]
    fn failures_are_classified_from_the_test_output_and_the_instance_log_in_v5_order() {
        use worker::grading::FailureTier::{Ambiguous, Environment};
        let v5 = GradingProfile::V5;
        // Nothing recognisable: no reason.
        assert_eq!(failure_of(v5, &result(Some("FAILED t.py::x - assert 1 == 2"), None, None)), None);
        let empty = result(Some("+ pytest -rA t.py\ncollected 0 items\n\nno tests ran in 0.01s"), None, None);
        assert_eq!(
            failure_of(v5, &empty),
            Some(FailureClass { reason: "no_tests_collected", tier: Ambiguous })
        );
        let timed_out = result(Some("running\n\nTimeout error: 60 seconds exceeded."), None, None);
        assert_eq!(reason(v5, &timed_out), Some("tests_timed_out"));
        // An earlier signature wins over a later one, wherever each is found.
        let both = result(Some("ModuleNotFoundError: No module named 'x'\ncollected 0 items"), None, None);
        assert_eq!(reason(v5, &both), Some("missing_module"));
        // `^Killed$` is a whole line only.
        assert_eq!(reason(v5, &result(Some("a\nKilled\nb"), None, None)).unwrap(), "out_of_memory");
        assert_eq!(reason(v5, &result(Some("Killed by signal"), None, None)), None);
        // The instance log counts too: a worker's note, or the run's error (no test output).
        let daemon = result(None, None, Some("pulling image: Error response from daemon: manifest unknown"));
        assert_eq!(
            failure_of(v5, &daemon),
            Some(FailureClass { reason: "container_unavailable", tier: Environment })
        );
        let dns =
            result(Some("collected 0 items"), Some("fatal: Could not resolve host: github.com\n"), None);
        assert_eq!(reason(v5, &dns), Some("network_unreachable"));
        // v4 has no classification; an empty patch is never run.
        assert_eq!(failure_of(GradingProfile::V4, &empty), None);
        let mut not_run = empty.clone();
        not_run.patch_submitted = false;
        assert_eq!(failure_of(v5, &not_run), None);
    }

    #[test]
    fn the_instance_log_names_the_run_and_keeps_the_workers_account_and_the_error() {
        let r = result(None, Some("2026-01-01 00:00:00.000 - INFO - >>>>> Patch Apply Failed"), Some("boom"));
        let log = instance_log(&r);
        assert!(
            log.starts_with("steerbench run 7 of org/m for o__r-1: state done, outcome unresolved\n"),
            "{log}"
        );
        assert!(log.contains(">>>>> Patch Apply Failed\nError: boom\n"), "{log}");
    }

    #[test]
    fn folders_hold_the_files_the_harness_writes_and_none_for_an_empty_patch() {
        let dir = tempfile::tempdir().unwrap();
        let mut ran = result(Some("+ : '>>>>> Start Test Output'\n"), Some("log\n"), None);
        ran.eval_script = Some("#!/bin/bash\n".into());
        ran.report = Some(serde_json::json!({ "o__r-1": { "resolved": false } }));
        let mut failed_apply = result(None, Some("log\n"), None);
        failed_apply.instance_id = "o__r-2".into();
        failed_apply.report = Some(serde_json::json!({}));
        let mut empty = result(None, None, None);
        empty.instance_id = "o__r-3".into();
        empty.patch_submitted = false;
        let written =
            write_all(dir.path(), "run", &[ran.clone(), failed_apply.clone(), empty.clone()]).unwrap();
        assert_eq!(written, Written { folders: 2, reports: 1 });
        let files = |r: &EvalResult| {
            let mut names: Vec<String> = std::fs::read_dir(instance_dir(dir.path(), "run", r))
                .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            names.sort();
            names
        };
        assert_eq!(files(&ran), [EVAL_SCRIPT, PATCH, REPORT, INSTANCE_LOG, TEST_OUTPUT]);
        assert_eq!(files(&failed_apply), [PATCH, INSTANCE_LOG]);
        assert!(files(&empty).is_empty());
        let folder = instance_dir(dir.path(), "run", &ran);
        assert!(folder.ends_with("run/org__m/o__r-1"), "{}", folder.display());
        assert_eq!(std::fs::read_to_string(folder.join(PATCH)).unwrap(), "diff --git a/x b/x\n");
    }
}
