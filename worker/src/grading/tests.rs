//! Tests of the grading module against the official harness: every parser on real logs
//! (expected maps computed by swebench 5.0.2's and 4.1.0's own parsers), generated eval
//! scripts (expected from the harness's `make_test_spec`), an end-to-end eval log graded by
//! the harness's `get_eval_report`, and `grade` on constructed cases.
//! The fixtures and the script that made them are described in `worker/tests/logs/README.md`.

use protocol::Instance;
use serde_json::{json, Value};

use super::*;

/// One committed log sample read with one parser, and what the official parsers made of it.
struct Sample {
    name: &'static str,
    parser: &'static str,
    log: &'static str,
    v5: &'static str,
    v4: &'static str,
}

macro_rules! sample {
    ($log:literal, $parser:literal) => {
        Sample {
            name: $log,
            parser: $parser,
            log: include_str!(concat!("../../tests/logs/", $log, ".log")),
            v5: include_str!(concat!("../../tests/logs/", $log, ".expected.json")),
            v4: include_str!(concat!("../../tests/logs/", $log, ".expected.v4.json")),
        }
    };
    ($log:literal, $parser:literal, extra) => {
        Sample {
            name: concat!($log, " as ", $parser),
            parser: $parser,
            log: include_str!(concat!("../../tests/logs/", $log, ".log")),
            v5: include_str!(concat!("../../tests/logs/", $log, ".", $parser, ".expected.json")),
            v4: include_str!(concat!("../../tests/logs/", $log, ".", $parser, ".expected.v4.json")),
        }
    };
}

fn samples() -> Vec<Sample> {
    vec![
        sample!("pytest-current", "pytest"),
        sample!("pytest-current", "pytest_options", extra),
        sample!("pytest-current", "pytest_v2", extra),
        sample!("pytest-current", "matplotlib", extra),
        sample!("pytest-old", "pytest"),
        sample!("pytest-old", "pytest_options", extra),
        sample!("pytest-old", "pytest_v2", extra),
        sample!("pytest-classic-verbose", "pytest_v2"),
        sample!("pytest-classic-verbose", "pytest", extra),
        sample!("pytest-color", "pytest_v2"),
        sample!("pytest-color", "pytest", extra),
        sample!("pytest-collect-error", "pytest"),
        sample!("pytest-collect-error", "pytest_v2", extra),
        sample!("seaborn-nohead", "seaborn"),
        sample!("seaborn-verbose", "seaborn"),
        sample!("seaborn-verbose", "pytest_v2", extra),
        sample!("matplotlib-py39", "matplotlib"),
        sample!("matplotlib-py39", "pytest", extra),
        sample!("django-3.2", "django"),
        sample!("django-4.2", "django"),
        sample!("sympy-1.5", "sympy"),
        sample!("sympy-1.14", "sympy"),
    ]
}

fn instance(repo: &str, f2p: &[&str], p2p: &[&str]) -> Instance {
    serde_json::from_value(json!({
        "instance_id": "owner__repo-1",
        "repo": repo,
        "base_commit": "0123456789abcdef0123456789abcdef01234567",
        "patch": "",
        "test_patch": "diff --git a/tests/test_x.py b/tests/test_x.py\n--- a/tests/test_x.py\n+++ b/tests/test_x.py\n@@ -1 +1 @@\n-a\n+b\n",
        "problem_statement": "",
        "version": "0.1",
        "FAIL_TO_PASS": f2p,
        "PASS_TO_PASS": p2p,
    }))
    .expect("a valid instance")
}

fn ordered(map: &StatusMap) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn every_sample_parses_exactly_as_the_official_parsers_do() {
    let inst = instance("steerbench/minicalc", &[], &[]);
    for s in samples() {
        for (profile, expected) in [(Profile::V5, s.v5), (Profile::V4, s.v4)] {
            let expected: StatusMap = serde_json::from_str(expected).expect("expected map is JSON");
            let log = log::universal_newlines(s.log);
            let got = parse_log_with(profile, s.parser, &log, &inst).expect("parses");
            // same ids, statuses AND first-seen order
            assert_eq!(ordered(&got), ordered(&expected), "{} under {profile:?}", s.name);
        }
    }
}

#[test]
fn samples_cover_every_status_and_both_django_id_styles() {
    let django = |name| samples().into_iter().find(|s| s.name == name).unwrap();
    let d32: StatusMap = serde_json::from_str(django("django-3.2").v5).unwrap();
    let d42: StatusMap = serde_json::from_str(django("django-4.2").v5).unwrap();
    assert_eq!(d32.get("test_fail (zz_sample.tests.SampleTests)"), Some(&TestStatus::Failed));
    assert_eq!(d42.get("test_fail (zz_sample.tests.SampleTests.test_fail)"), Some(&TestStatus::Failed));
    let all: Vec<TestStatus> = samples()
        .iter()
        .flat_map(|s| ordered(&serde_json::from_str(s.v5).unwrap()))
        .map(|(_, v)| TestStatus::from_word(&v))
        .collect();
    for status in
        [TestStatus::Passed, TestStatus::Failed, TestStatus::Skipped, TestStatus::Error, TestStatus::XFail]
    {
        assert!(all.contains(&status), "no sample shows {status}");
    }
}

// ------------------------------------------------------------------ eval scripts

struct ScriptCase {
    instance: &'static str,
    v4: &'static str,
    v5: &'static str,
}

macro_rules! script_case {
    ($name:literal) => {
        ScriptCase {
            instance: include_str!(concat!("../../tests/logs/scripts/", $name, ".instance.json")),
            v4: include_str!(concat!("../../tests/logs/scripts/", $name, ".eval.v4.sh")),
            v5: include_str!(concat!("../../tests/logs/scripts/", $name, ".eval.v5.sh")),
        }
    };
}

#[test]
fn generated_eval_scripts_equal_the_harness_scripts() {
    for case in [
        script_case!("django"),
        script_case!("sympy"),
        script_case!("pytest-dev"),
        script_case!("new-files-only"),
        script_case!("e2e-flask"),
    ] {
        let mut inst: Instance = serde_json::from_str(case.instance).expect("instance JSON");
        assert_eq!(eval_script_for(&inst, Profile::V4).unwrap(), case.v4, "{}", inst.instance_id);
        // v5 without a dataset script: the v4 script as v5 loads it
        assert_eq!(eval_script_for(&inst, Profile::V5).unwrap(), case.v5, "{}", inst.instance_id);
        // v5 with the dataset carrying the v4 script (how the Verified scripts were made)
        inst.eval_script = Some(case.v4.to_string());
        assert_eq!(eval_script(&inst).unwrap(), case.v5, "{}", inst.instance_id);
    }
}

#[test]
fn test_directives_follow_the_harness() {
    let mut inst = instance("django/django", &[], &[]);
    inst.test_patch =
        "diff --git a/tests/auth_tests/test_validators.py b/tests/auth_tests/test_validators.py\n\
diff --git a/tests/i18n/data.json b/tests/i18n/data.json\n\
diff --git a/django/x.py b/django/x.py\n"
            .to_string();
    assert_eq!(script::test_directives(&inst), vec!["auth_tests.test_validators", "django.x"]);
    inst.repo = "sympy/sympy".into();
    inst.test_patch = "diff --git a/sympy/core/tests/test_basic.py b/sympy/core/tests/test_basic.py\n\
diff --git a/doc/x.csv b/doc/x.csv\n"
        .into();
    assert_eq!(script::test_directives(&inst), vec!["sympy/core/tests/test_basic.py"]);
}

#[test]
fn unknown_repo_version_is_an_error_not_a_panic() {
    let mut inst = instance("nobody/nothing", &[], &[]);
    assert!(matches!(eval_script(&inst), Err(Error::UnknownRepoVersion { .. })));
    inst.eval_script = Some("#!/bin/bash\nset -uxo pipefail\necho hi\n".into());
    assert_eq!(eval_script(&inst).unwrap(), "#!/bin/bash\nset -uxo pipefail\necho hi\n");
}

// ------------------------------------------------------------------ end to end

/// The v5 eval script that printed `e2e-flask.eval.log`.
const E2E_SCRIPT: &str = include_str!("../../tests/logs/scripts/e2e-flask.eval.v5.sh");

#[test]
fn end_to_end_log_grades_as_get_eval_report() {
    let inst: Instance =
        serde_json::from_str(include_str!("../../tests/logs/scripts/e2e-flask.instance.json")).unwrap();
    let log = include_str!("../../tests/logs/e2e-flask.eval.log");
    for (profile, expected) in [
        (Profile::V5, include_str!("../../tests/logs/e2e-flask.report.json")),
        (Profile::V4, include_str!("../../tests/logs/e2e-flask.report.v4.json")),
    ] {
        let graded = grade(&GradeInput {
            instance: &inst,
            profile,
            // the real log passes the integrity check untouched
            mode: GradingMode::Checked,
            patch: Some("diff --git a/x b/x\n"),
            patch_applied: true,
            eval_log: Some(log),
            eval_script: Some(E2E_SCRIPT),
            eval_exit_code: Some(0),
            timed_out: false,
            eval_log_invalid_utf8: false,
        });
        let expected: Value = serde_json::from_str(expected).unwrap();
        assert_eq!(graded.report, expected, "{profile:?}");
        assert_eq!(graded.warnings, vec![], "{profile:?}");
        assert_eq!(graded.tampered, None, "{profile:?}");
    }
}

// ------------------------------------------------------------------ grade on constructed logs

const F2P: &str = "tests/test_x.py::test_fix";
const P2P: &str = "tests/test_x.py::test_old";

/// A log shaped like the eval script's output under `set -x`.
fn eval_log(test_output: &str, exit_code: Option<i32>) -> String {
    let mut log = format!(
        "+ git apply -v -\nApplied patch tests/test_x.py cleanly.\n+ : '{START_TEST_OUTPUT}'\n+ pytest -rA tests/test_x.py\n{test_output}\n"
    );
    if let Some(code) = exit_code {
        log.push_str(&format!("+ SWEBENCH_TEST_EXIT_CODE={code}\n"));
    }
    log.push_str(&format!("+ : '{END_TEST_OUTPUT}'\n"));
    if let Some(code) = exit_code {
        log.push_str(&format!("+ echo '>>>>> Test Exit Code: {code}'\n>>>>> Test Exit Code: {code}\n"));
    }
    log.push_str("+ git checkout 0123456789abcdef0123456789abcdef01234567 tests/test_x.py\nUpdated 1 path from 1f2e3d4\n");
    log
}

/// Grades as the official harness (no integrity check).
fn run(profile: Profile, inst: &Instance, log: &str) -> Graded {
    grade(&GradeInput {
        instance: inst,
        profile,
        mode: GradingMode::Official,
        patch: Some("diff --git a/src/x.py b/src/x.py\n"),
        patch_applied: true,
        eval_log: Some(log),
        eval_script: None,
        eval_exit_code: Some(0),
        timed_out: false,
        eval_log_invalid_utf8: false,
    })
}

fn default_instance() -> Instance {
    instance("steerbench/minicalc", &[F2P], &[P2P])
}

#[test]
fn resolved_when_fail_to_pass_passes_and_nothing_breaks() {
    let inst = default_instance();
    let log = eval_log(&format!("PASSED {F2P}\nPASSED {P2P}\n==== 2 passed ===="), Some(0));
    for profile in [Profile::V5, Profile::V4] {
        let g = run(profile, &inst, &log);
        assert_eq!(g.outcome, GradeOutcome::Resolved);
        assert_eq!(g.status, ResolutionStatus::Full);
        assert_eq!(g.harness_category(), HarnessCategory::Resolved);
    }
    let g = run(Profile::V5, &inst, &log);
    assert_eq!(
        g.report,
        json!({"owner__repo-1": {
            "patch_is_None": false, "patch_exists": true, "patch_successfully_applied": true,
            "resolved": true, "infra_failure": false,
            "tests_status": {
                "FAIL_TO_PASS": {"success": [F2P], "failure": []},
                "PASS_TO_PASS": {"success": [P2P], "failure": []},
                "FAIL_TO_FAIL": {"success": [], "failure": []},
                "PASS_TO_FAIL": {"success": [], "failure": []}}}})
    );
    let v4 = run(Profile::V4, &inst, &log);
    assert!(v4.report["owner__repo-1"].get("infra_failure").is_none());
}

#[test]
fn fail_to_pass_still_failing_is_unresolved_and_partial_when_some_pass() {
    let inst = instance("steerbench/minicalc", &[F2P, "tests/test_x.py::test_fix2"], &[P2P]);
    let log = eval_log(
        &format!("PASSED {F2P}\nPASSED {P2P}\nFAILED tests/test_x.py::test_fix2 - assert 0"),
        Some(1),
    );
    let g = run(Profile::V5, &inst, &log);
    assert_eq!(g.outcome, GradeOutcome::Unresolved);
    assert_eq!(g.status, ResolutionStatus::Partial);
    assert!(!g.resolved);
    assert_eq!(g.report["owner__repo-1"]["resolved"], json!(false));
    assert_eq!(g.tests_status.as_ref().unwrap().fail_to_pass.failure, vec!["tests/test_x.py::test_fix2"]);
    // a test absent from the log counts as failed
    let missing = eval_log(&format!("PASSED {P2P}"), Some(1));
    assert_eq!(run(Profile::V5, &default_instance(), &missing).status, ResolutionStatus::No);
}

#[test]
fn broken_pass_to_pass_is_unresolved() {
    let log = eval_log(&format!("PASSED {F2P}\nFAILED {P2P} - regression"), Some(1));
    let g = run(Profile::V5, &default_instance(), &log);
    assert_eq!(g.outcome, GradeOutcome::Unresolved);
    assert_eq!(g.status, ResolutionStatus::No);
    assert_eq!(g.tests_status.unwrap().pass_to_pass.failure, vec![P2P]);
}

#[test]
fn empty_patch_apply_failure_and_timeout_write_no_report() {
    let inst = default_instance();
    let mut input = GradeInput {
        instance: &inst,
        profile: Profile::V5,
        mode: GradingMode::Checked,
        patch: None,
        patch_applied: false,
        eval_log: None,
        eval_script: None,
        eval_exit_code: None,
        timed_out: false,
        eval_log_invalid_utf8: false,
    };
    for patch in [None, Some("")] {
        input.patch = patch;
        let g = grade(&input);
        assert_eq!(g.outcome, GradeOutcome::EmptyPatch);
        assert_eq!(g.harness_category(), HarnessCategory::EmptyPatch);
        assert!(!g.report_written());
    }
    input.patch = Some("diff");
    let g = grade(&input);
    assert_eq!((g.outcome, g.harness_category()), (GradeOutcome::ApplyFailed, HarnessCategory::Error));
    input.patch_applied = true;
    input.timed_out = true;
    let partial = eval_log(&format!("PASSED {F2P}"), None);
    input.eval_log = Some(&partial);
    let g = grade(&input);
    assert_eq!((g.outcome, g.harness_category()), (GradeOutcome::TimedOut, HarnessCategory::Error));
    assert_eq!(g.failure.map(|f| f.reason), Some("tests_timed_out"));
    assert!(!g.resolved);
}

#[test]
fn skipped_tests_count_differently_in_v4_and_v5() {
    // every FAIL_TO_PASS test skipped: v4 drops it from both lists and calls it resolved
    let log = eval_log(&format!("SKIPPED {F2P}\nPASSED {P2P}"), Some(0));
    let v4 = run(Profile::V4, &default_instance(), &log);
    assert_eq!(v4.outcome, GradeOutcome::Resolved);
    assert_eq!(v4.tests_status.unwrap().fail_to_pass, SuccessFailure::default());
    let v5 = run(Profile::V5, &default_instance(), &log);
    assert_eq!(v5.outcome, GradeOutcome::Unresolved);
    assert_eq!(v5.tests_status.unwrap().fail_to_pass.failure, vec![F2P]);

    // a skipped PASS_TO_PASS test: v5 counts it maintained; v4 drops it
    let log = eval_log(&format!("PASSED {F2P}\nSKIPPED {P2P}"), Some(0));
    let v5 = run(Profile::V5, &default_instance(), &log);
    assert_eq!(v5.tests_status.unwrap().pass_to_pass.success, vec![P2P]);
    let v4 = run(Profile::V4, &default_instance(), &log);
    assert_eq!(v4.tests_status.unwrap().pass_to_pass, SuccessFailure::default());
}

#[test]
fn truncated_ids_match_by_prefix_in_v5_only() {
    let truncated = "tests/test_x.py::test_grammar[log(photon";
    let inst = instance("steerbench/minicalc", &[truncated], &[]);
    let log = eval_log(
        "PASSED tests/test_x.py::test_grammar[log(photon/cm**2)]\nPASSED tests/test_x.py::test_grammar[log(photon/s)]",
        Some(0),
    );
    assert_eq!(run(Profile::V5, &inst, &log).outcome, GradeOutcome::Resolved);
    assert_eq!(run(Profile::V4, &inst, &log).outcome, GradeOutcome::Unresolved);
    // candidates that disagree on pass versus fail resolve to nothing: failed
    let mixed = eval_log(
        "PASSED tests/test_x.py::test_grammar[log(photon/cm**2)]\nFAILED tests/test_x.py::test_grammar[log(photon/s)]",
        Some(1),
    );
    assert_eq!(run(Profile::V5, &inst, &mixed).outcome, GradeOutcome::Unresolved);
    // balanced brackets never fall back to prefixes
    let exact = instance("steerbench/minicalc", &["tests/test_x.py::test_grammar[a]"], &[]);
    let log = eval_log("PASSED tests/test_x.py::test_grammar[a]b", Some(0));
    assert_eq!(run(Profile::V5, &exact, &log).outcome, GradeOutcome::Unresolved);
}

#[test]
fn truncated_pass_to_pass_follows_the_first_match_in_log_order() {
    // both candidates are "not passing", so v5 takes the first one in log order
    let truncated = "tests/test_x.py::test_p[a";
    let inst = instance("steerbench/minicalc", &[F2P], &[truncated]);
    let skipped_first = eval_log(
        &format!("PASSED {F2P}\nSKIPPED tests/test_x.py::test_p[a1]\nFAILED tests/test_x.py::test_p[a2]"),
        Some(1),
    );
    assert_eq!(
        run(Profile::V5, &inst, &skipped_first).tests_status.unwrap().pass_to_pass.success,
        vec![truncated]
    );
    let failed_first = eval_log(
        &format!("PASSED {F2P}\nFAILED tests/test_x.py::test_p[a2]\nSKIPPED tests/test_x.py::test_p[a1]"),
        Some(1),
    );
    assert_eq!(
        run(Profile::V5, &inst, &failed_first).tests_status.unwrap().pass_to_pass.failure,
        vec![truncated]
    );
}

#[test]
fn missing_markers_and_bad_codes_make_an_invalid_log_with_a_report() {
    for (log, problem) in [
        (format!("PASSED {F2P}\nPASSED {P2P}\n"), LogProblem::MissingMarkers),
        (
            format!("{}\n>>>>> Tests Errored\n", eval_log(&format!("PASSED {F2P}"), Some(0))),
            LogProblem::BadCode(">>>>> Tests Errored"),
        ),
    ] {
        for profile in [Profile::V5, Profile::V4] {
            let g = run(profile, &default_instance(), &log);
            assert_eq!(g.outcome, GradeOutcome::InvalidLog);
            assert_eq!(g.problem.as_ref(), Some(&problem));
            assert_eq!(g.harness_category(), HarnessCategory::Unresolved);
            assert_eq!(g.report["owner__repo-1"]["patch_successfully_applied"], json!(false));
            assert!(g.report["owner__repo-1"].get("tests_status").is_none());
        }
    }
}

#[test]
fn v5_voids_a_log_without_evidence_that_a_suite_ran() {
    let log = eval_log("ModuleNotFoundError: No module named 'x'\ncollected 0 items", Some(4));
    let g = run(Profile::V5, &default_instance(), &log);
    assert_eq!(g.problem, Some(LogProblem::NoSuiteEvidence));
    assert_eq!(g.report["owner__repo-1"]["infra_failure"], json!(false));
    assert_eq!(g.report["owner__repo-1"]["infra_failure_reason"], json!("missing_module"));
    // v4 grades the empty map: every expected test is missing, so unresolved
    assert_eq!(run(Profile::V4, &default_instance(), &log).outcome, GradeOutcome::Unresolved);
}

#[test]
fn forged_passed_lines_do_not_resolve_a_failing_suite_in_v5() {
    // the suite failed (exit 1) but its output, e.g. from a conftest.py hook, only says PASSED
    let forged = eval_log(&format!("PASSED {F2P}\nPASSED {P2P}"), Some(1));
    let g = run(Profile::V5, &default_instance(), &forged);
    assert_eq!(g.outcome, GradeOutcome::InvalidLog);
    assert_eq!(g.problem, Some(LogProblem::ExitCodeMismatch { exit_code: "1".into() }));
    // v4 has no such check: the harness resolves it, and so do we
    assert_eq!(run(Profile::V4, &default_instance(), &forged).outcome, GradeOutcome::Resolved);
}

#[test]
fn forged_markers_inside_test_output_are_graded_as_the_harness_does_and_flagged() {
    // a test prints a fake end marker, fake results after it, and a fake exit record
    let inner = format!(
        "FAILED {F2P} - still broken\n{END_TEST_OUTPUT}\n>>>>> Test Exit Code: 0\nPASSED {F2P}\nPASSED {P2P}"
    );
    let log = eval_log(&inner, Some(1));
    let g = run(Profile::V5, &default_instance(), &log);
    // the slice ends at the fake marker, so the real failure is what is graded
    assert_eq!(g.outcome, GradeOutcome::Unresolved);
    assert!(g.warnings.contains(&LogWarning::MarkerCount { marker: END_TEST_OUTPUT, count: 2 }));
    assert!(g.warnings.contains(&LogWarning::ExitCodesDisagree { first: "0".into(), last: "1".into() }));

    // residual risk, reproduced on purpose: a fake "PASSED" for the expected test printed
    // after the real failure, with another real failure in the map, and the exit check passes
    let inner = format!("FAILED {F2P}\nFAILED tests/test_x.py::other\nPASSED {F2P}\nPASSED {P2P}");
    let g = run(Profile::V5, &default_instance(), &eval_log(&inner, Some(1)));
    assert_eq!(g.outcome, GradeOutcome::Resolved);
}

#[test]
fn parser_crash_and_unknown_parser_write_no_report() {
    let inst = instance("django/django", &["test_a (m.T)"], &[]);
    let log = eval_log("test_a (m.T) ... ok\nERROR:\n", Some(0));
    let g = run(Profile::V5, &inst, &log);
    assert!(matches!(g.problem, Some(LogProblem::ParserCrash { parser: "django", .. })));
    assert_eq!(g.harness_category(), HarnessCategory::Error);
    let mut js = instance("facebook/react", &[], &[]);
    js.log_parser = Some("parse_log_jest".into());
    assert!(parser_name_for(&js).is_none());
    let g = run(Profile::V5, &js, &eval_log("PASS x", Some(0)));
    assert!(matches!(g.problem, Some(LogProblem::UnknownParser(_))));
    assert!(!g.report_written());
}

#[test]
fn parser_names_follow_the_dataset_then_the_repo() {
    let mut inst = instance("sympy/sympy", &[], &[]);
    assert_eq!(parser_name_for(&inst), Some("sympy"));
    inst.log_parser = Some("parse_log_sphinx".into());
    assert_eq!(parser_name_for(&inst), Some("pytest_v2"));
    assert_eq!(parser_name_for(&instance("pallets/flask", &[], &[])), Some("pytest"));
    assert_eq!(parser_name_for(&instance("steerbench/textkit", &[], &[])), Some("pytest"));
    assert!(matches!(parse_log("nope", "", &inst), Err(Error::UnknownParser(_))));
}

#[test]
fn carriage_returns_are_read_back_as_newlines() {
    // progress output with bare \r: the harness re-reads test_output.txt with universal newlines
    let log = eval_log(&format!("running...\rPASSED {F2P}\r\nPASSED {P2P}"), Some(0));
    assert_eq!(run(Profile::V5, &default_instance(), &log).outcome, GradeOutcome::Resolved);
}

#[test]
fn never_panics_on_hostile_input() {
    let inst = default_instance();
    let huge = "PASSED x\n".repeat(50_000) + &"[".repeat(10_000) + "\u{fffd}\u{0}\u{1c}";
    let nasty = [
        String::new(),
        huge.clone(),
        eval_log(&huge, Some(0)),
        format!("{START_TEST_OUTPUT}{END_TEST_OUTPUT}{START_TEST_OUTPUT}"),
        format!("{START_TEST_OUTPUT}\nFAIL:\nERROR:\nFAILED\n PASSED \n{END_TEST_OUTPUT}\n>>>>> Test Exit Code: 99999999999999999999999"),
        "\u{fffd}".repeat(1000),
    ];
    for log in &nasty {
        for parser in ["pytest", "pytest_options", "pytest_v2", "django", "seaborn", "sympy", "matplotlib"] {
            for profile in [Profile::V5, Profile::V4] {
                let _ = parse_log_with(profile, parser, log, &inst);
            }
        }
        for profile in [Profile::V5, Profile::V4] {
            let _ = run(profile, &inst, log);
            let _ = run_checked(profile, &inst, log);
        }
    }
    let _ = script::modified_files("@@ -1,999999999999999999999 +1 @@\n");
    let _ = script::modified_files("diff --git a/x b/x\n@@ -1 +1 @@\n");
}

// ------------------------------------------------------------------ integrity check

/// Grades with the integrity check, the log printed by the profile's own eval script.
fn run_checked(profile: Profile, inst: &Instance, log: &str) -> Graded {
    let script = script::eval_script_for(inst, profile).ok();
    grade(&GradeInput {
        instance: inst,
        profile,
        mode: GradingMode::Checked,
        patch: Some("diff --git a/src/x.py b/src/x.py\n"),
        patch_applied: true,
        eval_log: Some(log),
        eval_script: script.as_deref(),
        eval_exit_code: Some(0),
        timed_out: false,
        eval_log_invalid_utf8: false,
    })
}

/// The reason recorded in a report, if any.
fn tampered_reason(g: &Graded) -> Option<&str> {
    g.report["owner__repo-1"].get(report::TAMPERED_KEY).and_then(Value::as_str)
}

#[test]
fn every_committed_log_passes_the_integrity_check() {
    let inst = default_instance();
    let v5_script = script::eval_script_for(&inst, Profile::V5).unwrap();
    let v4_script = script::eval_script_for(&inst, Profile::V4).unwrap();
    for s in samples() {
        let kind = parsers::ParserKind::from_name(s.parser).unwrap();
        let raw = log::universal_newlines(s.log);
        // as the v5 script prints it (with either exit status), and as the v4 script does
        for (profile, script, exit_code) in [
            (Profile::V5, &v5_script, Some(1)),
            (Profile::V5, &v5_script, Some(0)),
            (Profile::V4, &v4_script, None),
        ] {
            let log = eval_log(&raw, exit_code);
            let evaluated = log::logs_eval(profile, kind, &log);
            if exit_code == Some(0) && !evaluated.found() {
                continue; // v5 voids a failing suite that exited 0: nothing to check
            }
            assert!(!evaluated.status_map.is_empty(), "{}", s.name);
            for markers in
                [integrity::ExpectedMarkers::of_script(script), integrity::ExpectedMarkers::unknown_script()]
            {
                let found = integrity::check(&integrity::Input {
                    log: &log,
                    parsed: evaluated.parsed_text(&log),
                    status_map: &evaluated.status_map,
                    parser: kind,
                    profile,
                    markers: &markers,
                });
                assert_eq!(found, None, "{} under {profile:?}, exit {exit_code:?}", s.name);
            }
        }
    }
}

/// pytest's output for a run where `results` are the `-rA` lines and `counts` the summary.
fn pytest_output(results: &str, counts: &str) -> String {
    format!(
        "collected 2 items\n\ntests/test_x.py .F  [100%]\n\n==== short test summary info ====\n{results}\n==== {counts} in 0.12s ====\n"
    )
}

#[test]
fn a_clean_run_is_graded_as_the_harness_grades_it() {
    let inst = default_instance();
    let pass = pytest_output(&format!("PASSED {F2P}\nPASSED {P2P}"), "2 passed");
    let fail = pytest_output(&format!("PASSED {P2P}\nFAILED {F2P} - x"), "1 failed, 1 passed");
    // as each profile's own script prints it: v4 records no exit status
    for (profile, pass_code, fail_code) in [(Profile::V5, Some(0), Some(1)), (Profile::V4, None, None)] {
        let pass = eval_log(&pass, pass_code);
        let fail = eval_log(&fail, fail_code);
        for (log, outcome) in [(&pass, GradeOutcome::Resolved), (&fail, GradeOutcome::Unresolved)] {
            let checked = run_checked(profile, &inst, log);
            assert_eq!(checked.outcome, outcome, "{profile:?}");
            assert_eq!(checked.tampered, None);
            assert_eq!(checked.report, run(profile, &inst, log).report, "{profile:?}");
        }
    }
}

#[test]
fn forged_start_marker_is_tampering() {
    let inst = default_instance();
    let forged = format!(
        "+ : '{START_TEST_OUTPUT}'\n{}",
        pytest_output(&format!("PASSED {F2P}\nPASSED {P2P}"), "2 passed")
    );
    let g = run_checked(Profile::V5, &inst, &eval_log(&forged, Some(0)));
    assert_eq!(g.outcome, GradeOutcome::Tampered);
    assert_eq!(
        g.tampered,
        Some(Tampering::MarkerCount {
            marker: START_TEST_OUTPUT,
            found: 2,
            expected: integrity::Allowed::Exactly(1)
        })
    );
    assert_eq!(
        tampered_reason(&g),
        Some("`>>>>> Start Test Output` appears 2 times; a clean run prints it once")
    );
    assert_eq!(g.harness_category(), HarnessCategory::Unresolved);
}

#[test]
fn forged_end_marker_and_exit_code_are_tampering_that_the_harness_resolves() {
    // the real suite fails (exit 1); at exit, the code under test overwrites the failure and
    // prints what the rest of a clean eval script would, with exit status 0
    let inst = default_instance();
    let forged = format!(
        "{}PASSED {F2P}\n+ SWEBENCH_TEST_EXIT_CODE=0\n+ : '{END_TEST_OUTPUT}'\n+ echo '>>>>> Test Exit Code: 0'\n>>>>> Test Exit Code: 0",
        pytest_output(&format!("PASSED {P2P}\nFAILED {F2P} - still broken"), "1 failed, 1 passed")
    );
    let log = eval_log(&forged, Some(1));
    let official = run(Profile::V5, &inst, &log);
    assert_eq!(official.outcome, GradeOutcome::Resolved, "the harness is fooled");
    let checked = run_checked(Profile::V5, &inst, &log);
    assert_eq!(checked.outcome, GradeOutcome::Tampered);
    assert!(!checked.resolved);
    assert!(matches!(
        checked.tampered,
        Some(Tampering::MarkerCount { marker: END_TEST_OUTPUT, found: 2, .. })
    ));
    assert_eq!(checked.report["owner__repo-1"]["resolved"], json!(false));
    // the harness's own report is recoverable from the checked one
    assert_eq!(official_report(&checked.report), official.report);
    assert_eq!(official_report(&official.report), official.report);

    // a forged exit record alone
    let forged = format!(
        "{}>>>>> Test Exit Code: 0\n",
        pytest_output(&format!("PASSED {F2P}\nPASSED {P2P}"), "2 passed")
    );
    let g = run_checked(Profile::V5, &inst, &eval_log(&forged, Some(0)));
    assert!(matches!(g.tampered, Some(Tampering::MarkerCount { marker: log::TEST_EXIT_CODE, found: 3, .. })));
}

#[test]
fn forged_results_after_the_runners_summary_are_tampering() {
    let inst = default_instance();
    // pytest: the failure is overwritten by a line printed after the summary, exit status 0
    let forged = format!(
        "{}PASSED {F2P}\n",
        pytest_output(&format!("PASSED {P2P}\nFAILED {F2P} - x"), "1 failed, 1 passed")
    );
    let log = eval_log(&forged, Some(0));
    assert_eq!(run(Profile::V5, &inst, &log).outcome, GradeOutcome::Resolved, "the harness is fooled");
    let g = run_checked(Profile::V5, &inst, &log);
    assert_eq!(
        g.tampered,
        Some(Tampering::ResultAfterSummary {
            result: format!("PASSED {F2P}"),
            summary: "1 failed, 1 passed in 0.12s".into()
        })
    );
    assert_eq!(
        tampered_reason(&g),
        Some("`PASSED tests/test_x.py::test_fix` follows the test runner's final summary `1 failed, 1 passed in 0.12s`")
    );
    // v4 has no exit-status check at all
    let v4 = eval_log(&forged, None);
    assert_eq!(run(Profile::V4, &inst, &v4).outcome, GradeOutcome::Resolved);
    assert_eq!(run_checked(Profile::V4, &inst, &v4).outcome, GradeOutcome::Tampered);

    // Django: results after `Ran N tests`
    let mut django = instance("django/django", &["test_fix (m.T)"], &["test_old (m.T)"]);
    django.version = "4.0".into();
    let out = "test_old (m.T) ... ok\ntest_fix (m.T) ... FAIL\n\n----------------------------------------------------------------------\nRan 2 tests in 0.010s\n\nFAILED (failures=1)\ntest_fix (m.T) ... ok\n";
    let g = run_checked(Profile::V5, &django, &eval_log(out, Some(0)));
    assert_eq!(
        g.tampered,
        Some(Tampering::ResultAfterSummary {
            result: "PASSED test_fix (m.T)".into(),
            summary: "Ran 2 tests in 0.010s; FAILED (failures=1)".into()
        })
    );
    // sympy: results after `tests finished`
    let mut sympy = instance("sympy/sympy", &["test_fix"], &["test_old"]);
    sympy.version = "1.5".into();
    let out =
        "test_old ok\ntest_fix F\n\n tests finished: 1 passed, 1 failed, in 0.10 seconds \ntest_fix ok\n";
    let g = run_checked(Profile::V5, &sympy, &eval_log(out, Some(0)));
    assert!(matches!(g.tampered, Some(Tampering::ResultAfterSummary { .. })), "{g:?}");
}

#[test]
fn a_summary_counting_failures_the_results_do_not_show_is_tampering() {
    // the only failure line is gone (never printed by the real runner: forged output replaced
    // the results block), yet the runner's own summary still counts it
    let inst = default_instance();
    let forged = pytest_output(&format!("PASSED {F2P}\nPASSED {P2P}"), "1 failed, 1 passed");
    let log = eval_log(&forged, None);
    assert_eq!(run(Profile::V4, &inst, &log).outcome, GradeOutcome::Resolved, "the harness is fooled");
    let g = run_checked(Profile::V4, &inst, &log);
    assert_eq!(
        g.tampered,
        Some(Tampering::SummaryContradictsResults { summary: "1 failed, 1 passed in 0.12s".into() })
    );
    // errors count too, as failures do
    let forged = pytest_output(&format!("PASSED {F2P}\nPASSED {P2P}"), "2 passed, 1 error");
    assert!(run_checked(Profile::V4, &inst, &eval_log(&forged, None)).tampered.is_some());
}

#[test]
fn results_without_the_runners_summary_after_exit_zero_are_tampering() {
    // results printed by a process that then left with status 0 before pytest summarised
    let inst = default_instance();
    let log = eval_log(&format!("collected 2 items\nPASSED {F2P}\nPASSED {P2P}\n"), Some(0));
    assert_eq!(run(Profile::V5, &inst, &log).outcome, GradeOutcome::Resolved, "the harness is fooled");
    let g = run_checked(Profile::V5, &inst, &log);
    assert_eq!(g.tampered, Some(Tampering::MissingSummary));
    // a crash (non-zero status) without a summary is not called forgery
    let crashed =
        eval_log(&format!("collected 2 items\nPASSED {P2P}\nFAILED {F2P}\nSegmentation fault\n"), Some(139));
    assert_eq!(run_checked(Profile::V5, &inst, &crashed).tampered, None);
}

#[test]
fn official_mode_grades_exactly_as_the_harness() {
    let inst = default_instance();
    let forged = format!(
        "{}PASSED {F2P}\n",
        pytest_output(&format!("PASSED {P2P}\nFAILED {F2P} - x"), "1 failed, 1 passed")
    );
    let log = eval_log(&forged, Some(0));
    let mut input = GradeInput {
        instance: &inst,
        profile: Profile::V5,
        mode: GradingMode::Official,
        patch: Some("diff"),
        patch_applied: true,
        eval_log: Some(&log),
        eval_script: None,
        eval_exit_code: Some(0),
        timed_out: false,
        eval_log_invalid_utf8: false,
    };
    let official = grade(&input);
    assert_eq!((official.outcome, official.tampered.clone()), (GradeOutcome::Resolved, None));
    assert_eq!(GradingMode::default(), GradingMode::Checked);
    input.mode = GradingMode::default();
    assert_eq!(grade(&input).outcome, GradeOutcome::Tampered);
}

#[test]
fn non_utf8_output_decoded_with_replacement_grades_cleanly() {
    // what the sandbox makes of invalid bytes: U+FFFD, in results and around the markers
    let inst = default_instance();
    let noisy = format!(
        "\u{fffd}\u{fffd}(\n{}\u{fffd}\n",
        pytest_output(&format!("PASSED {F2P}\nPASSED {P2P} \u{fffd}"), "2 passed")
    );
    let g = run_checked(Profile::V5, &inst, &eval_log(&noisy, Some(0)));
    assert_eq!((g.outcome, g.tampered), (GradeOutcome::Resolved, None));
}

// ------------------------------------------------------------------ summary

fn result(
    id: &str,
    patch_empty: bool,
    report: Option<Value>,
    failure: Option<FailureClass>,
) -> InstanceResult {
    InstanceResult { instance_id: id.into(), patch_empty, report, failure }
}

#[test]
fn summary_counts_as_make_run_report() {
    let dataset: Vec<String> = ["a", "b", "c", "d", "e", "f"].map(String::from).to_vec();
    let oom = FailureClass { reason: "out_of_memory", tier: FailureTier::Environment };
    let results = vec![
        result("a", false, Some(json!({"a": {"resolved": true}})), None),
        result("b", false, Some(json!({"b": {"resolved": false}})), Some(oom.clone())),
        result("c", true, None, None),
        result(
            "d",
            false,
            None,
            Some(FailureClass { reason: "tests_timed_out", tier: FailureTier::Ambiguous }),
        ),
        result("e", false, Some(Value::Null), None),
    ];
    let v5 = summary_report(&SummaryInput {
        profile: Profile::V5,
        dataset_ids: &dataset,
        results: &results,
        leftovers: None,
    });
    assert_eq!(
        v5,
        json!({
            "total_instances": 6, "submitted_instances": 5, "completed_instances": 3,
            "resolved_instances": 1, "unresolved_instances": 1,
            "infra_failure_instances": 1, "ambiguous_failure_instances": 1,
            "empty_patch_instances": 1, "error_instances": 2,
            "completed_ids": ["a", "b", "e"], "incomplete_ids": ["f"], "empty_patch_ids": ["c"],
            "submitted_ids": ["a", "b", "c", "d", "e"], "resolved_ids": ["a"], "unresolved_ids": ["b"],
            "infra_failure_ids": ["b"], "ambiguous_failure_ids": ["d"],
            "failure_reasons": {"b": "out_of_memory", "d": "tests_timed_out"},
            "error_ids": ["d", "e"], "schema_version": 2
        })
    );
    let v4 = summary_report(&SummaryInput {
        profile: Profile::V4,
        dataset_ids: &dataset,
        results: &results,
        leftovers: None,
    });
    assert!(v4.get("failure_reasons").is_none() && v4.get("infra_failure_ids").is_none());
    assert_eq!(v4["error_ids"], json!(["d", "e"]));
}

#[test]
fn graded_runs_feed_the_summary() {
    let inst = default_instance();
    let ok = run(Profile::V5, &inst, &eval_log(&format!("PASSED {F2P}\nPASSED {P2P}"), Some(0)));
    let rows = vec![ok.instance_result()];
    let ids = vec![inst.instance_id.clone()];
    let s = summary_report(&SummaryInput {
        profile: Profile::V5,
        dataset_ids: &ids,
        results: &rows,
        leftovers: None,
    });
    assert_eq!(s["resolved_ids"], json!(["owner__repo-1"]));
}

#[test]
fn invalid_utf8_output_is_an_error_in_v4_only() {
    let inst = default_instance();
    let log = eval_log(&format!("PASSED {F2P}\nPASSED {P2P}\n\u{fffd}"), Some(0));
    let mut input = GradeInput {
        instance: &inst,
        profile: Profile::V4,
        mode: GradingMode::Official,
        patch: Some("diff"),
        patch_applied: true,
        eval_log: Some(&log),
        eval_script: None,
        eval_exit_code: Some(0),
        timed_out: false,
        eval_log_invalid_utf8: true,
    };
    let v4 = grade(&input);
    assert_eq!(
        (v4.problem.clone(), v4.harness_category()),
        (Some(LogProblem::NotUtf8), HarnessCategory::Error)
    );
    input.profile = Profile::V5;
    assert_eq!(grade(&input).outcome, GradeOutcome::Resolved);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]

    /// Every parser takes any log (lines that look like test results or not) without panicking.
    #[test]
    fn every_parser_takes_any_log(lines in proptest::collection::vec(
        proptest::prop_oneof![
            ".{0,80}",
            "(PASSED|FAILED|ERROR|SKIPPED|XFAIL) [a-z_/.:\\[\\]-]{0,40}",
            "[a-z_/.:]{0,30} (\\.\\.\\.|ok|ERROR|FAIL)( ok| ERROR| FAIL)?",
            "(>>>>> (Start|End) Test Output|\\+ echo >>>>>)[a-z ]{0,10}",
        ], 0..40)) {
        let log = lines.join("\n");
        let inst = instance("steerbench/minicalc", &["t"], &[]);
        for parser in ["pytest", "pytest_options", "pytest_v2", "django", "seaborn", "sympy", "matplotlib"] {
            for profile in [Profile::V5, Profile::V4] {
                let _ = parse_log_with(profile, parser, &log, &inst);
            }
        }
    }
}
