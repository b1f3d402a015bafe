//! mini-swe-agent's shipped SWE-bench configurations, rendered by steerbench and by
//! mini-swe-agent's own code, must give the same messages: the first two for every fixture
//! instance, observations (short, at and past the truncation length, non-ASCII), format
//! errors, timeouts, and the submission taken from a submitting command's output.
//!
//! mini-swe-agent is installed, pinned, into throwaway venvs under
//! `~/.cache/steerbench/minisweagent-<version>` (`STEER_CACHE_DIR` moves them) the first time.
//! Without Python or pip the test says why and passes, unless `CI` is set: then it fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;

#[path = "minisweagent/venv.rs"]
mod venv;

use protocol::mini::{CommandOutput, FormatErrorFacts, MiniConfig, MiniPrompts, RunState, TimeoutFacts};
use serde_json::{json, Value};

const VERSIONS: [&str; 2] = ["1.17.5", "2.4.6"];
/// The container id the Python side gives mini's docker environment.
fn container_id() -> String {
    format!("{}beef", "c0ffee".repeat(10))
}

fn tasks() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/fixtures/dataset.jsonl");
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["problem_statement"].as_str().unwrap().to_string())
        .collect()
}

/// The cases both sides render.
fn cases(tasks: &[String]) -> Value {
    let long: String = (0..2600).map(|i| format!("line {i} é✓\n")).collect();
    let observations = json!([
        {"command": "ls", "output": "a.py\nb.py\n", "returncode": 0},
        {"command": "false", "output": "", "returncode": 1},
        {"command": "x", "output": "x".repeat(9_999), "returncode": 0},
        {"command": "x", "output": "é".repeat(10_000), "returncode": 0},
        {"command": "x", "output": "y".repeat(10_001), "returncode": 2},
        {"command": "cat big", "output": long, "returncode": 0},
    ]);
    let timeouts = json!([
        {"command": "sleep 100", "output": ""},
        {"command": "python -c 'print(1)'; sleep 100", "output": "1\n"},
        {"command": "yes | head -c 30000; sleep 100", "output": "y\n".repeat(15_000)},
    ]);
    let submissions = json!([
        {"output": "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\ndiff --git a/x b/x\n+1\n", "returncode": 0},
        {"output": "  \nCOMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\r\nrest\r\n", "returncode": 0},
        {"output": "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\ndiff\n", "returncode": 1},
        {"output": "hello\nCOMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n", "returncode": 0},
        {"output": "MINI_SWE_AGENT_FINAL_OUTPUT\npatch\n", "returncode": 0},
    ]);
    let call =
        |id: &str, name: &str, args: &str| json!({"id": id, "function": {"name": name, "arguments": args}});
    let format_errors = json!([
        {"content": "no action here", "finish_reason": "stop"},
        {"content": "```bash\nls\n```\nand\n```bash\npwd\n```\n```mswea_bash_command\nls\n```\n```mswea_bash_command\npwd\n```", "finish_reason": "stop"},
        {"content": "THOUGHT: cut", "finish_reason": "length"},
        {"tool_calls": [], "finish_reason": "stop"},
        {"tool_calls": [call("a", "python", "{\"code\": 1}")], "finish_reason": "tool_calls"},
        {"tool_calls": [call("a", "bash", "{\"cmd\": \"ls\"}")], "finish_reason": "stop"},
    ]);
    json!({"tasks": tasks, "observations": observations, "timeouts": timeouts,
           "submissions": submissions, "format_errors": format_errors})
}

/// What steerbench renders for the cases (None where mini renders nothing: a case that does
/// not apply to the file, a command that did not submit).
fn ours(config: &MiniConfig, cases: &Value) -> Value {
    let p = MiniPrompts::new(config).unwrap();
    let state = RunState::default();
    let first: Vec<Value> = cases["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let t = t.as_str().unwrap();
            json!([p.system(t).unwrap(), p.instance(t).unwrap()])
        })
        .collect();
    let observations: Vec<Value> = cases["observations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let out = CommandOutput {
                output: c["output"].as_str().unwrap(),
                returncode: c["returncode"].as_i64().unwrap(),
                exception_info: "",
                action: c["command"].as_str().unwrap(),
            };
            json!(p.observation(&out, &state).unwrap())
        })
        .collect();
    let timeouts: Vec<Value> = cases["timeouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let facts = TimeoutFacts {
                command: c["command"].as_str().unwrap(),
                reply: "",
                output: c["output"].as_str().unwrap(),
                container_id: &container_id(),
            };
            json!(p.timeout(&facts, &state).unwrap())
        })
        .collect();
    let submissions: Vec<Value> = cases["submissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| json!(config.submission(c["output"].as_str().unwrap(), c["returncode"].as_i64())))
        .collect();
    let tool_calls = matches!(config.actions, protocol::mini::MiniActions::ToolCalls);
    let format_errors: Vec<Value> = cases["format_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let finish_reason = c["finish_reason"].as_str();
            match c.get("tool_calls") {
                Some(calls) if tool_calls => {
                    let calls = calls.as_array().unwrap();
                    let (error, has) = tool_call_error(calls);
                    let facts =
                        FormatErrorFacts { actions: &[], error: &error, finish_reason, has_tool_calls: has };
                    json!(p.format_error(&facts, &state).unwrap())
                }
                Some(_) => Value::Null,
                None if tool_calls => Value::Null,
                None => {
                    let actions = config.text_actions(c["content"].as_str().unwrap());
                    if actions.len() == 1 {
                        return Value::Null;
                    }
                    let error = format!("Expected exactly 1 action, found {}.", actions.len());
                    let facts = FormatErrorFacts {
                        actions: &actions,
                        error: &error,
                        finish_reason,
                        has_tool_calls: false,
                    };
                    json!(p.format_error(&facts, &state).unwrap())
                }
            }
        })
        .collect();
    json!({"first_messages": first, "observations": observations, "timeouts": timeouts,
           "submissions": submissions, "format_errors": format_errors})
}

/// The error mini-swe-agent's tool-call parser gives for these (valid-JSON) calls.
fn tool_call_error(calls: &[Value]) -> (String, bool) {
    if calls.is_empty() {
        return (
            "No tool calls found in the response. Every response MUST include at least one tool call.".into(),
            false,
        );
    }
    for c in calls {
        let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
        let mut e = String::new();
        if c["function"]["name"] != "bash" {
            e.push_str(&format!("Unknown tool '{}'.", c["function"]["name"].as_str().unwrap()));
        }
        if args.get("command").is_none() {
            e.push_str("Missing 'command' argument in bash tool call.");
        }
        if !e.is_empty() {
            return (e, true);
        }
    }
    (String::new(), true)
}

/// What mini-swe-agent's own code renders for the cases, with the file at `path`.
fn theirs(python: &Path, path: &Path, cases: &Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/minisweagent/render.py");
    let mut child = venv::python_command(python)
        .arg(&script)
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), cases).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "render.py failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn compare(label: &str, ours: &Value, theirs: &Value) {
    for key in ["first_messages", "observations", "timeouts", "submissions", "format_errors"] {
        let (a, b) = (ours[key].as_array().unwrap(), theirs[key].as_array().unwrap());
        assert_eq!(a.len(), b.len(), "{label}: {key}: case counts");
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            assert_eq!(a, b, "{label}: {key}[{i}] differs\n--- steerbench:\n{a}\n--- mini-swe-agent:\n{b}");
        }
    }
}

#[test]
fn shipped_swebench_configs_render_as_mini_swe_agent_renders_them() {
    let tasks = tasks();
    let cases = cases(&tasks);
    let scratch = std::env::temp_dir().join(format!("steer-mini-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut compared = 0;
    for version in VERSIONS {
        let python = match venv::venv(version) {
            Ok(p) => p,
            Err(reason) => return venv::cannot_run(&reason),
        };
        let pkg = venv::package_dir(&python);
        let code = std::fs::read_to_string(pkg.join("agents/default.py")).unwrap();
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        if version.starts_with("1.") {
            files.push(("1.x swebench.yaml".into(), pkg.join("config/extra/swebench.yaml")));
        } else {
            files.push(("2.x swebench.yaml".into(), pkg.join("config/benchmarks/swebench.yaml")));
            // The backticks file is meant for a text-based model class, which it leaves to the
            // command line; name it in a copy.
            let backticks =
                std::fs::read_to_string(pkg.join("config/benchmarks/swebench_backticks.yaml")).unwrap();
            assert!(backticks.trim_end().ends_with("drop_params: true"), "the model section ends the file");
            let copy = scratch.join("swebench_backticks.yaml");
            std::fs::write(&copy, format!("{}\n  model_class: litellm_textbased\n", backticks.trim_end()))
                .unwrap();
            files.push(("2.x swebench_backticks.yaml (text-based)".into(), copy));
        }
        for (label, path) in files {
            let yaml = std::fs::read_to_string(&path).unwrap();
            let config = MiniConfig::parse(&path.display().to_string(), &yaml, Some(&code))
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            let theirs = theirs(&python, &path, &cases);
            assert_eq!(theirs["version"], version);
            let ours = ours(&config, &cases);
            compare(&label, &ours, &theirs);
            // Each kind of message was really rendered by mini, not skipped.
            for key in ["observations", "timeouts"] {
                assert!(theirs[key].as_array().unwrap().iter().all(Value::is_string), "{label}: {key}");
            }
            assert!(theirs["format_errors"].as_array().unwrap().iter().any(Value::is_string), "{label}");
            assert!(theirs["submissions"].as_array().unwrap().iter().any(Value::is_string), "{label}");
            compared += 1;
        }
    }
    assert_eq!(compared, 3);
    let _ = std::fs::remove_dir_all(&scratch);
}
