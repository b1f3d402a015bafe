//! `steer grade-log` against a real eval log whose report the official harness produced
//! (worker/tests/logs: the expected reports come from swebench 5.0.2 and 4.1.0 themselves).

use std::process::Command;

fn logs() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/tests/logs")
}

fn grade(profile: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_steer"))
        .args(["grade-log", "--profile", profile, "--instance"])
        .arg(logs().join("scripts/e2e-flask.instance.json"))
        .arg("--log")
        .arg(logs().join("e2e-flask.eval.log"))
        .output()
        .expect("running steer grade-log");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("grade-log prints JSON")
}

fn expected(file: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(logs().join(file)).unwrap()).unwrap()
}

#[test]
fn grade_log_reproduces_the_harness_reports_under_both_profiles() {
    let v5 = grade("v5");
    assert_eq!(v5, expected("e2e-flask.report.json"));
    assert_eq!(v5["pallets__flask-99905"]["resolved"], true);
    // 4.x does not match truncated test ids, so the same log is not resolved there.
    let v4 = grade("v4");
    assert_eq!(v4, expected("e2e-flask.report.v4.json"));
    assert_eq!(v4["pallets__flask-99905"]["resolved"], false);
}

#[test]
fn grade_log_names_a_bad_instance_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"instance_id": "x__y-1", "repo": "x/y"}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_steer"))
        .args(["grade-log", "--instance"])
        .arg(&bad)
        .arg("--log")
        .arg(logs().join("e2e-flask.eval.log"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.json") && err.contains("base_commit"), "{err}");
}

/// `steer grade-log ... | head -1`: a reader that quits early ends the command quietly, as
/// a Unix tool (status 141), not with a panic. The reader is closed before the command starts,
/// so its first write fails every time.
#[test]
fn a_closed_stdout_ends_a_client_command_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_steer"))
        .args(["grade-log", "--instance"])
        .arg(logs().join("scripts/e2e-flask.instance.json"))
        .arg("--log")
        .arg(logs().join("e2e-flask.eval.log"))
        .stdout(writer)
        .output()
        .expect("running steer grade-log");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}
