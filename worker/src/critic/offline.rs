//! A critic on a saved trajectory (`steer critic run`): the conversation of an exported
//! trajectory turned back into what the live hook sees.

use std::sync::LazyLock;

use protocol::Scaffold;
use regex::Regex;
use serde_json::Value;

use crate::agent::hook::StepFacts;
use crate::agent::scaffold::{self, Action};

/// The conversation as the agent saw it at the end: supervisor messages (marked under `extra`
/// as exported, or on the message as steps store them) and mini's exit message left out, and
/// each message without its `extra`.
pub fn agent_view(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m.get("supervisor").is_none() && m.pointer("/extra/supervisor").is_none())
        .filter(|m| m.get("role").and_then(Value::as_str) != Some("exit"))
        .map(|m| {
            let mut m = m.clone();
            if let Some(fields) = m.as_object_mut() {
                fields.remove("extra");
            }
            m
        })
        .collect()
}

/// What each step did, read back from the messages: one step per assistant message; its
/// observation is the next user or tool message (`<returncode>` and `<output>` as the default
/// observation template writes them). Which files changed is not known offline.
pub fn facts(messages: &[Value]) -> Vec<StepFacts> {
    static RETURNCODE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"<returncode>(-?\d+)</returncode>").expect("static regex"));
    static OUTPUT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?s)<output>\n?(.*?)\n?</output>").expect("static regex"));
    let view = agent_view(messages);
    let mut facts = Vec::new();
    for (i, m) in view.iter().enumerate() {
        if m.get("role").and_then(Value::as_str) != Some("assistant") {
            continue;
        }
        let scaffold = if m.get("tool_calls").is_some() { Scaffold::ToolCalling } else { Scaffold::BashOnly };
        let mut f = StepFacts { step: facts.len() as u32, ..Default::default() };
        match scaffold::parse(scaffold, m) {
            Action::Bash { command, .. } => {
                f.ran_tests = super::looks_like_tests(&command);
                f.command = Some(command);
                let observation = view.get(i + 1).map(crate::llm::tokens::message_text).unwrap_or_default();
                f.exit_code = RETURNCODE.captures(&observation).and_then(|c| c[1].parse().ok());
                f.timed_out = f.exit_code == Some(-1);
                f.output = OUTPUT.captures(&observation).map_or(observation.clone(), |c| c[1].to_string());
            }
            Action::Submit { .. } => {}
            Action::FormatError { .. } => f.format_error = true,
        }
        facts.push(f);
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn steps_are_read_back_from_the_messages() {
        let messages = vec![
            json!({"role": "system", "content": "s"}),
            json!({"role": "user", "content": "task"}),
            json!({"role": "assistant", "content": "THOUGHT\n```bash\npython -m pytest -q\n```"}),
            json!({"role": "user", "content": "<returncode>1</returncode>\n<output>\n1 failed\n</output>"}),
            json!({"role": "user", "content": "SUPERVISOR FEEDBACK: ...", "supervisor": true}),
            json!({"role": "assistant", "content": "no block"}),
            json!({"role": "user", "content": "format error"}),
        ];
        let f = facts(&messages);
        assert_eq!(f.len(), 2);
        assert_eq!(
            (f[0].command.as_deref(), f[0].exit_code, f[0].ran_tests),
            (Some("python -m pytest -q"), Some(1), true)
        );
        assert_eq!(f[0].output, "1 failed");
        assert!(f[1].format_error);
        assert_eq!(agent_view(&messages).len(), 6);
        // As exported: the mark under `extra`, an exit message last; neither reaches the view.
        let mut exported = messages.clone();
        exported[4] =
            json!({"role": "user", "content": "SUPERVISOR FEEDBACK: ...", "extra": {"supervisor": true}});
        exported[2]["extra"] = json!({"actions": [{"command": "python -m pytest -q"}]});
        exported.push(json!({"role": "exit", "content": "", "extra": {"exit_status": "Submitted"}}));
        let view = agent_view(&exported);
        assert_eq!(view.len(), 6);
        assert!(view.iter().all(|m| m.get("extra").is_none()), "{view:?}");
        assert_eq!(facts(&exported).len(), 2);
    }
}
