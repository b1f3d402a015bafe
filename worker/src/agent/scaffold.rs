//! The two ways an agent acts: the bash-only text protocol (one fenced bash block per reply,
//! as mini-swe-agent v1 and the paper) and native tool calls (`bash`, `submit`). Both turn a
//! model reply into one [`Action`] and an observation into the message that carries it back.

use std::sync::LazyLock;

use protocol::Scaffold;
use regex::Regex;
use serde_json::{json, Value};

/// What a reply asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run this command; `call_id` is the tool call's id (tool-calling scaffold).
    Bash { command: String, call_id: Option<String> },
    /// The `submit` tool (the bash-only scaffold submits by a command's output instead).
    Submit { call_id: Option<String> },
    /// The reply breaks the format: `actions` actions found (0 or several), and why. Every
    /// tool call of the reply must still be answered (`call_ids`).
    FormatError { actions: usize, error: String, call_ids: Vec<String> },
}

/// ```` ```bash ```` blocks, as mini-swe-agent v1 finds them.
static BASH_BLOCK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)```bash\s*\n(.*?)\n```").expect("static regex"));

/// The tools of the tool-calling scaffold (None for bash-only).
pub fn tools(scaffold: Scaffold) -> Option<Value> {
    match scaffold {
        Scaffold::BashOnly => None,
        Scaffold::ToolCalling => Some(json!([
            {"type": "function", "function": {
                "name": "bash",
                "description": "Run one shell command in the repository (a new subshell each time) and see its exit code and output.",
                "parameters": {"type": "object", "properties": {
                    "command": {"type": "string", "description": "The command to run."}
                }, "required": ["command"]}
            }},
            {"type": "function", "function": {
                "name": "submit",
                "description": "Submit your changes to the repository as the final answer. You cannot act after this.",
                "parameters": {"type": "object", "properties": {}}
            }}
        ])),
    }
}

/// The action of a reply (`message` is the assistant message as the endpoint returned it).
pub fn parse(scaffold: Scaffold, message: &Value) -> Action {
    match scaffold {
        Scaffold::BashOnly => parse_text(message.get("content").and_then(Value::as_str).unwrap_or("")),
        Scaffold::ToolCalling => parse_tool_calls(message),
    }
}

fn parse_text(content: &str) -> Action {
    let blocks: Vec<&str> =
        BASH_BLOCK.captures_iter(content).map(|c| c.get(1).map_or("", |m| m.as_str())).collect();
    match blocks.as_slice() {
        [command] if !command.trim().is_empty() => {
            Action::Bash { command: command.trim().to_string(), call_id: None }
        }
        [_] => format_error(1, "the bash block is empty", Vec::new()),
        _ => format_error(
            blocks.len(),
            &format!("expected exactly 1 bash block, found {}", blocks.len()),
            Vec::new(),
        ),
    }
}

fn parse_tool_calls(message: &Value) -> Action {
    let calls = message.get("tool_calls").and_then(Value::as_array).cloned().unwrap_or_default();
    let ids: Vec<String> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| c.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{i}"), str::to_string))
        .collect();
    let [call] = calls.as_slice() else {
        return format_error(
            calls.len(),
            &format!("expected exactly 1 tool call, found {}", calls.len()),
            ids,
        );
    };
    let call_id = Some(ids[0].clone());
    let function = call.get("function").cloned().unwrap_or(Value::Null);
    let name = function.get("name").and_then(Value::as_str).unwrap_or("");
    // OpenAI sends arguments as a JSON-encoded string; some servers send an object.
    let arguments = match function.get("arguments") {
        Some(Value::String(s)) if s.trim().is_empty() => Ok(json!({})),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|e| e.to_string()),
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        None | Some(Value::Null) => Ok(json!({})),
        Some(other) => Err(format!("arguments are {other}, not an object")),
    };
    match (name, arguments) {
        ("submit", _) => Action::Submit { call_id },
        ("bash", Ok(args)) => match args.get("command").and_then(Value::as_str) {
            Some(c) if !c.trim().is_empty() => Action::Bash { command: c.trim().to_string(), call_id },
            _ => format_error(1, "the bash tool needs a non-empty `command` string", ids),
        },
        ("bash", Err(e)) => {
            format_error(1, &format!("the bash tool's arguments are not valid JSON ({e})"), ids)
        }
        (other, _) => {
            format_error(1, &format!("there is no tool named `{other}` (use `bash` or `submit`)"), ids)
        }
    }
}

fn format_error(actions: usize, error: &str, call_ids: Vec<String>) -> Action {
    Action::FormatError { actions, error: error.to_string(), call_ids }
}

/// The assistant message kept in the conversation: role, content and tool calls only (what
/// the endpoint added besides, e.g. `reasoning_content` or `refusal`, is not sent back).
pub fn assistant_message(message: &Value) -> Value {
    let mut kept =
        json!({"role": "assistant", "content": message.get("content").cloned().unwrap_or(Value::Null)});
    if let Some(calls) = message.get("tool_calls").filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
        kept["tool_calls"] = calls.clone();
    }
    kept
}

/// The message that answers an action: a user message (bash-only), or a tool message for
/// each of the reply's tool calls (tool-calling).
pub fn answer(text: &str, call_ids: &[String]) -> Vec<Value> {
    if call_ids.is_empty() {
        return vec![json!({"role": "user", "content": text})];
    }
    call_ids.iter().map(|id| json!({"role": "tool", "tool_call_id": id, "content": text})).collect()
}

/// Did this command submit? (mini-swe-agent: the output's first line is the sentinel and the
/// command succeeded.)
pub fn is_submission(output: &str, exit_code: Option<i64>) -> bool {
    exit_code == Some(0)
        && output.trim_start().lines().next().map(str::trim) == Some(protocol::SUBMIT_SENTINEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(content: &str) -> Value {
        json!({"role": "assistant", "content": content})
    }

    #[test]
    fn exactly_one_bash_block_is_an_action() {
        let a = parse(Scaffold::BashOnly, &text("THOUGHT: look\n\n```bash\nls -la\n```\n"));
        assert_eq!(a, Action::Bash { command: "ls -la".into(), call_id: None });
        let heredoc = "```bash\ncat > a.py <<'EOF'\nprint(1)\nEOF\n```";
        assert!(
            matches!(parse(Scaffold::BashOnly, &text(heredoc)), Action::Bash { command, .. } if command.ends_with("EOF"))
        );
    }

    #[test]
    fn zero_or_several_blocks_are_format_errors() {
        for (content, n) in
            [("no block here", 0), ("```bash\nls\n```\n```bash\npwd\n```", 2), ("```python\nx\n```", 0)]
        {
            match parse(Scaffold::BashOnly, &text(content)) {
                Action::FormatError { actions, .. } => assert_eq!(actions, n, "{content}"),
                other => panic!("{content}: {other:?}"),
            }
        }
        assert!(matches!(
            parse(Scaffold::BashOnly, &json!({"role": "assistant", "content": null})),
            Action::FormatError { actions: 0, .. }
        ));
    }

    #[test]
    fn tool_calls_become_actions() {
        let call = |name: &str, args: &str| {
            json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_7", "type": "function", "function": {"name": name, "arguments": args}}]})
        };
        assert_eq!(
            parse(Scaffold::ToolCalling, &call("bash", r#"{"command": "ls"}"#)),
            Action::Bash { command: "ls".into(), call_id: Some("call_7".into()) }
        );
        assert_eq!(
            parse(Scaffold::ToolCalling, &call("submit", "{}")),
            Action::Submit { call_id: Some("call_7".into()) }
        );
        for bad in [call("bash", "{not json"), call("bash", r#"{"cmd": "ls"}"#), call("rm", "{}")] {
            match parse(Scaffold::ToolCalling, &bad) {
                Action::FormatError { call_ids, .. } => assert_eq!(call_ids, vec!["call_7".to_string()]),
                other => panic!("{other:?}"),
            }
        }
        let two = json!({"role": "assistant", "tool_calls": [
            {"id": "a", "function": {"name": "bash", "arguments": "{\"command\": \"ls\"}"}},
            {"id": "b", "function": {"name": "bash", "arguments": "{\"command\": \"pwd\"}"}}]});
        let Action::FormatError { actions: 2, call_ids, .. } = parse(Scaffold::ToolCalling, &two) else {
            panic!()
        };
        assert_eq!(answer("one at a time", &call_ids).len(), 2, "every tool call is answered");
    }

    #[test]
    fn submission_needs_the_sentinel_first_and_success() {
        assert!(is_submission("COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n", Some(0)));
        assert!(!is_submission("COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n", Some(1)));
        assert!(!is_submission("hello\nCOMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n", Some(0)));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

        /// Any reply (text, or tool calls with any arguments) is one action or a format error.
        #[test]
        fn any_reply_is_an_action_or_a_format_error(text in ".{0,300}", name in "[a-z]{0,8}", args in ".{0,100}") {
            let _ = parse(Scaffold::BashOnly, &json!({"role": "assistant", "content": text}));
            let call = json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": name, "arguments": args}}]});
            let _ = parse(Scaffold::ToolCalling, &call);
            let _ = is_submission(&text, Some(0));
        }
    }
}
