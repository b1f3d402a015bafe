//! An agent that follows a mini-swe-agent configuration file (`agent_config`): replies parsed
//! by the file's action rule, answered with its templates as mini-swe-agent answers them
//! (`protocol::mini` renders them), and its submission taken as mini-swe-agent takes it.

use protocol::mini::{FormatErrorFacts, MiniActions, MiniConfig, MiniLayout, MiniPrompts};
use serde_json::{json, Value};

/// One action of a reply: a command, and the tool call it came in (2.x tool calls).
#[derive(Debug, Clone, PartialEq)]
pub struct MiniAction {
    pub command: String,
    pub call_id: Option<String>,
}

/// A reply that broke the format, as mini-swe-agent describes it to its format-error template.
#[derive(Debug, Clone, PartialEq)]
pub struct MiniFormatError {
    pub actions: Vec<String>,
    pub error: String,
    pub has_tool_calls: bool,
}

/// The state of a run that follows a file.
pub struct MiniRun<'a> {
    pub config: &'a MiniConfig,
    pub prompts: MiniPrompts<'a>,
    /// Format errors in a row (2.x ends the run at its limit; 1.x has none).
    pub consecutive_format_errors: u32,
    /// What the agent submitted, once it has.
    pub submission: Option<String>,
}

impl<'a> MiniRun<'a> {
    pub fn new(config: &'a MiniConfig) -> Result<Self, protocol::prompts::TemplateError> {
        Ok(MiniRun {
            config,
            prompts: MiniPrompts::new(config)?,
            consecutive_format_errors: 0,
            submission: None,
        })
    }

    /// The format error's message, with mini's facts.
    pub fn format_error_text(
        &self,
        e: &MiniFormatError,
        finish_reason: Option<&str>,
        state: &protocol::mini::RunState,
    ) -> Result<String, protocol::prompts::TemplateError> {
        self.prompts.format_error(
            &FormatErrorFacts {
                actions: &e.actions,
                error: &e.error,
                finish_reason,
                has_tool_calls: e.has_tool_calls,
            },
            state,
        )
    }

    /// Whether another format error in a row ends the run (2.x's
    /// `max_consecutive_format_errors`; 0 and 1.x: never).
    pub fn format_errors_end_run(&self) -> bool {
        let max = self.config.max_consecutive_format_errors;
        self.config.layout == MiniLayout::V2 && max > 0 && self.consecutive_format_errors >= max
    }
}

/// mini-swe-agent 2.x's `bash` tool, offered when a file's model uses tool calls (a schema, as
/// mini's `BASH_TOOL` defines it, so that requests are the ones mini sends).
pub fn tools(config: &MiniConfig) -> Option<Value> {
    match config.actions {
        MiniActions::Text { .. } => None,
        MiniActions::ToolCalls => Some(json!([{
            "type": "function",
            "function": {
                "name": "bash",
                "description": "Execute a bash command",
                "parameters": {
                    "type": "object",
                    "properties": {"command": {"type": "string", "description": "The bash command to execute"}},
                    "required": ["command"],
                },
            },
        }])),
    }
}

/// The actions of a reply, or why it broke the format, as mini-swe-agent decides: a text
/// reply needs exactly one match of the action regex (`Expected exactly 1 action, found N.`);
/// a tool-calling reply needs at least one call, each of the `bash` tool with a `command`.
pub fn parse(config: &MiniConfig, message: &Value) -> Result<Vec<MiniAction>, MiniFormatError> {
    match &config.actions {
        MiniActions::Text { .. } => {
            let content = message.get("content").and_then(Value::as_str).unwrap_or("");
            let actions = config.text_actions(content);
            if actions.len() == 1 {
                return Ok(vec![MiniAction { command: actions[0].clone(), call_id: None }]);
            }
            let error = format!("Expected exactly 1 action, found {}.", actions.len());
            Err(MiniFormatError { actions, error, has_tool_calls: false })
        }
        MiniActions::ToolCalls => parse_tool_calls(message),
    }
}

fn parse_tool_calls(message: &Value) -> Result<Vec<MiniAction>, MiniFormatError> {
    let calls = message.get("tool_calls").and_then(Value::as_array).cloned().unwrap_or_default();
    if calls.is_empty() {
        return Err(MiniFormatError {
            actions: Vec::new(),
            error: "No tool calls found in the response. Every response MUST include at least one tool call."
                .into(),
            has_tool_calls: false,
        });
    }
    let mut actions = Vec::new();
    for call in &calls {
        let function = call.get("function").cloned().unwrap_or(Value::Null);
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        let mut error = String::new();
        let args = match function.get("arguments") {
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(v) => v,
                // Python's json error text differs from serde_json's; the sentence around it is mini's.
                Err(e) => {
                    error.push_str(&format!("Error parsing tool call arguments: {e}."));
                    Value::Null
                }
            },
            Some(v @ Value::Object(_)) => v.clone(),
            _ => {
                error.push_str("Error parsing tool call arguments: the arguments are not a JSON string.");
                Value::Null
            }
        };
        if name != "bash" {
            error.push_str(&format!("Unknown tool '{name}'."));
        }
        let command = args.get("command");
        if command.is_none() {
            error.push_str("Missing 'command' argument in bash tool call.");
        }
        if !error.is_empty() {
            return Err(MiniFormatError {
                actions: Vec::new(),
                error: error.trim().into(),
                has_tool_calls: true,
            });
        }
        let command = match command {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => unreachable!("checked above"),
        };
        let call_id = call.get("id").and_then(Value::as_str).map(str::to_string);
        actions.push(MiniAction { command, call_id });
    }
    Ok(actions)
}

/// The message that carries an observation back: a tool message for a tool call, else a
/// user message.
pub fn observation_message(text: &str, call_id: Option<&str>) -> Value {
    match call_id {
        Some(id) => json!({"role": "tool", "tool_call_id": id, "content": text}),
        None => json!({"role": "user", "content": text}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> MiniConfig {
        MiniConfig::parse("test.yaml", yaml, None).unwrap()
    }

    const V1: &str = "agent:\n  system_template: s\n  instance_template: '{{task}}'\n  action_observation_template: '{{output.returncode}}'\n  format_error_template: 'found {{actions|length}}'\n  timeout_template: 'timeout {{action.action}}'\n";
    const V2_TOOLS: &str = "agent:\n  system_template: s\n  instance_template: '{{task}}'\nmodel:\n  observation_template: '{{output.returncode}}'\n  format_error_template: '{{error}}'\n";

    #[test]
    fn a_text_reply_needs_exactly_one_action() {
        let c = config(V1);
        let one = json!({"content": "THOUGHT\n```bash\nls -la\n```"});
        assert_eq!(parse(&c, &one).unwrap(), vec![MiniAction { command: "ls -la".into(), call_id: None }]);
        let two = json!({"content": "```bash\nls\n```\n```bash\npwd\n```"});
        let e = parse(&c, &two).unwrap_err();
        assert_eq!(e.actions, vec!["ls".to_string(), "pwd".to_string()]);
        assert_eq!(e.error, "Expected exactly 1 action, found 2.");
    }

    #[test]
    fn tool_calls_are_all_taken_and_any_bad_one_is_a_format_error() {
        let c = config(V2_TOOLS);
        let call = |id: &str, name: &str, args: &str| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}});
        let two = json!({"tool_calls": [call("a", "bash", r#"{"command": "ls"}"#), call("b", "bash", r#"{"command": "pwd"}"#)]});
        let actions = parse(&c, &two).unwrap();
        assert_eq!(actions.len(), 2);
        assert_eq!(actions[1], MiniAction { command: "pwd".into(), call_id: Some("b".into()) });
        let none = parse(&c, &json!({"content": "hi"})).unwrap_err();
        assert!(!none.has_tool_calls);
        assert!(none.error.starts_with("No tool calls found"));
        let bad = parse(&c, &json!({"tool_calls": [call("a", "python", r#"{"code": 1}"#)]})).unwrap_err();
        assert_eq!(bad.error, "Unknown tool 'python'.Missing 'command' argument in bash tool call.");
        assert!(bad.has_tool_calls);
        assert!(tools(&c).is_some() && tools(&config(V1)).is_none());
    }
}
