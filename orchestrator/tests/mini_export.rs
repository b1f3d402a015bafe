//! An exported trajectory, read by mini-swe-agent 2.4.6's own code: its inspector loads it and
//! shows every step, and its LiteLLM model replays the conversation to an endpoint that refuses
//! unknown fields in messages, as strict servers do. The same conversation with the supervisor
//! mark where it used to sit (on the message) is refused there, so the endpoint is strict.
//!
//! mini-swe-agent is installed pinned in a venv (see `venv.rs`); without Python the test says
//! why and passes, unless `CI` is set.

#[path = "../../protocol/tests/minisweagent/venv.rs"]
mod venv;

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
use serde_json::{json, Value};

/// The keys an OpenAI-compatible endpoint takes in a message.
const MESSAGE_KEYS: &[&str] = &["role", "content", "tool_calls", "tool_call_id", "name"];

/// A Chat Completions endpoint that refuses a message with any other key (400), and otherwise
/// answers with one action. Keeps every request's messages.
async fn strict(
    State(seen): State<Arc<Mutex<Vec<Value>>>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    seen.lock().unwrap().push(Value::Array(messages.clone()));
    for (i, m) in messages.iter().enumerate() {
        for key in m.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            if !MESSAGE_KEYS.contains(&key.as_str()) {
                let error = json!({"error": {"message": format!("messages[{i}]: unknown field `{key}`"), "type": "invalid_request_error"}});
                return (StatusCode::BAD_REQUEST, Json(error));
            }
        }
    }
    let answer = json!({
        "id": "chatcmpl-strict-1", "object": "chat.completion", "created": 1, "model": "steer-replay",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "THOUGHT: go on\n\n```mswea_bash_command\nls\n```"}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    });
    (StatusCode::OK, Json(answer))
}

/// A finished run of two steps with a critic's message between them, as the store returns it.
fn trajectory() -> protocol::Trajectory {
    let step = |index: i32, messages: Value, action: Option<&str>| {
        json!({"index": index, "attempt": 1, "action": action, "observation": "a.py\n", "exit_code": 0,
               "duration_ms": 20, "llm_ms": 10, "command_ms": 5, "input_tokens": 100, "output_tokens": 20,
               "cost_usd": "0.001", "messages": messages, "recorded_at": "2026-12-07T15:00:00Z"})
    };
    let call = |index: i32| {
        json!({"attempt": 1, "call_index": index, "step_index": index, "model": "m", "status": "ok",
               "latency_ms": 10, "input_tokens": 100, "output_tokens": 20, "cost_usd": "0.001",
               "finish_reason": "stop", "response_id": format!("chatcmpl-{index}")})
    };
    serde_json::from_value(json!({
        "run": {"id": 7, "sweep_id": 1, "instance_id": "steerbench__demo-1", "agent": "a", "critic": "c",
                "repeat_index": 0, "state": "done", "attempt": 1, "failed_attempts": 0, "outcome": "resolved",
                "resolved": true, "last_error": null, "worker_id": null, "queued_at": "2026-12-07T14:59:00Z",
                "started_at": null, "finished_at": null,
                "totals": {"steps": 2, "input_tokens": 200, "output_tokens": 40, "cached_tokens": 0,
                           "agent_cost_usd": "0.002", "critic_cost_usd": "0.0005"}},
        "config": {"agent": {"name": "a", "model": "m"}, "executor": {"kind": "agent", "scaffold": "bash_only"}},
        "steps": [
            step(0, json!([
                {"role": "system", "content": "You fix bugs."},
                {"role": "user", "content": "<pr_description>fix it</pr_description>"},
                {"role": "assistant", "content": "THOUGHT: look\n\n```bash\nls\n```"},
                {"role": "user", "content": "<returncode>0</returncode>\n<output>\na.py\n</output>"},
                {"role": "user", "content": "SUPERVISOR FEEDBACK: test first", "supervisor": true},
            ]), Some("ls")),
            step(1, json!([
                {"role": "assistant", "content": "THOUGHT: done\n\n```bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n```"},
            ]), Some("echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT")),
        ],
        "llm_calls": [call(0), call(1)],
        "critic_calls": [],
        "patch": "diff --git a/a.py b/a.py\n",
        "evaluation": null,
    }))
    .expect("a trajectory")
}

#[test]
fn the_export_is_mini_swe_agent_2x_shaped() {
    let t = orchestrator::export::mini_swe_agent(&trajectory());
    let messages = t["messages"].as_array().unwrap();
    // Endpoint keys on top, every other mark under `extra`.
    for m in messages {
        for key in m.as_object().unwrap().keys() {
            assert!(MESSAGE_KEYS.contains(&key.as_str()) || key == "extra", "{m}");
        }
    }
    assert_eq!(messages[4]["extra"]["supervisor"], true);
    // The task message carries no step's extras; observations and answers do.
    assert!(messages[1].get("extra").is_none(), "{}", messages[1]);
    assert_eq!(messages[2]["extra"]["actions"], json!([{"command": "ls"}]));
    assert_eq!(messages[2]["extra"]["response"]["id"], "chatcmpl-0");
    assert!(messages[2]["extra"]["timestamp"].as_f64().unwrap() > 1.7e9);
    assert_eq!(messages[3]["extra"]["returncode"], 0);
    // The exit message, with mini's status and the submission; our outcome beside.
    let exit = messages.last().unwrap();
    assert_eq!(exit["role"], "exit");
    assert_eq!(exit["extra"]["exit_status"], "Submitted");
    assert_eq!(exit["extra"]["submission"], "diff --git a/a.py b/a.py\n");
    assert_eq!(exit["extra"]["steerbench_outcome"], "resolved");
    // Agent and critic cost apart; the effective configuration.
    assert_eq!(t["info"]["model_stats"]["instance_cost"], 0.002);
    assert_eq!(t["info"]["model_stats"]["critic_cost"], 0.0005);
    assert_eq!(t["info"]["config"]["executor"]["scaffold"], "bash_only");
}

#[tokio::test(flavor = "multi_thread")]
async fn mini_swe_agent_loads_and_replays_an_exported_trajectory_on_a_strict_endpoint() {
    let python = match venv::venv("2.4.6") {
        Ok(p) => p,
        Err(reason) => return venv::cannot_run(&reason),
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().route("/v1/chat/completions", post(strict)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let exported = orchestrator::export::mini_swe_agent(&trajectory());
    let good = dir.path().join("good.traj.json");
    std::fs::write(&good, serde_json::to_vec_pretty(&exported).unwrap()).unwrap();
    // The same, with the supervisor mark on the message as exports used to carry it.
    let mut old = exported.clone();
    old["messages"][4] =
        json!({"role": "user", "content": "SUPERVISOR FEEDBACK: test first", "supervisor": true});
    let bad = dir.path().join("old.traj.json");
    std::fs::write(&bad, serde_json::to_vec_pretty(&old).unwrap()).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/minisweagent/load_and_replay.py");
    let run = |path: &Path| {
        let (python, script, path, base_url) =
            (python.clone(), script.clone(), path.to_path_buf(), base_url.clone());
        tokio::task::spawn_blocking(move || {
            let out = venv::python_command(&python).arg(&script).arg(&path).arg(&base_url).output().unwrap();
            assert!(out.status.success(), "load_and_replay.py: {}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        })
    };
    let result = run(&good).await.unwrap();
    let n = exported["messages"].as_array().unwrap().len();
    let inspector = &result["inspector"];
    assert_eq!(inspector["messages"], n, "{result}");
    // One page per assistant message after the opening one: mini groups messages so.
    assert_eq!(inspector["steps"], 3, "{result}");
    assert!(inspector["titles"][2].as_str().unwrap().contains("Step 3/3"), "{result}");
    assert_eq!(inspector["contents"][4], "SUPERVISOR FEEDBACK: test first");
    assert_eq!(result["replay"]["ok"], true, "{result}");
    assert_eq!(result["replay"]["actions"], json!([{"command": "ls"}]), "{result}");
    let sent = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent.as_array().unwrap().len(), n - 1, "every message but the exit message was sent");

    let refused = run(&bad).await.unwrap();
    assert_eq!(refused["replay"]["ok"], false, "{refused}");
    assert!(refused["replay"]["error"].as_str().unwrap().contains("unknown field `supervisor`"), "{refused}");
    server.abort();
}
