//! `steer critic run` on saved trajectories: the binary, a sweep file and a trajectory file.

use serde_json::json;

const SWEEP: &str = r#"name = "t"
[dataset]
name = "fixtures"
[executor]
kind = "agent"
[[agents]]
name = "a"
base_url = "http://127.0.0.1:9/v1"
model = "m"
price = "free"
[[critics]]
name = "none"
kind = "none"
[[critics]]
name = "rules"
kind = "heuristic"
"#;

fn trajectory(commands: &[&str]) -> serde_json::Value {
    let mut messages =
        vec![json!({"role": "system", "content": "s"}), json!({"role": "user", "content": "task"})];
    for c in commands {
        messages.push(json!({"role": "assistant", "content": format!("THOUGHT: go.\n\n```bash\n{c}\n```")}));
        messages
            .push(json!({"role": "user", "content": "<returncode>0</returncode>\n<output>\nok\n</output>"}));
    }
    json!({"trajectory_format": "mini-swe-agent-1.1", "info": {}, "messages": messages})
}

fn steer_critic(dir: &std::path::Path, traj: &serde_json::Value, extra: &[&str]) -> std::process::Output {
    std::fs::write(dir.join("sweep.toml"), SWEEP).unwrap();
    std::fs::write(dir.join("t.json"), traj.to_string()).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_steer"))
        .args(["critic", "run", "--sweep"])
        .arg(dir.join("sweep.toml"))
        .arg("--trajectory")
        .arg(dir.join("t.json"))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_looping_trajectory_gets_feedback_and_a_productive_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = steer_critic(dir.path(), &trajectory(&["ls", "ls", "ls"]), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["critic"], "rules", "the first critic that is not `none`");
    assert_eq!(verdict["decision"], "inject");
    assert!(verdict["message_to_agent"].as_str().unwrap().contains("same command 3 times"), "{verdict}");
    assert_eq!(verdict["calls"][0]["kind"], "heuristic");

    let out = steer_critic(
        dir.path(),
        &trajectory(&["ls", "cat a.py", "python -m pytest -q"]),
        &["--before-submit"],
    );
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["decision"], "continue", "{verdict}");
}

#[test]
fn bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = steer_critic(dir.path(), &trajectory(&["ls"]), &["--critic", "teacher"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no critic condition `teacher` (it has: none, rules)"), "{err}");
    let out = steer_critic(dir.path(), &json!({"info": {}}), &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no `messages` list"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
