//! What a model critic reads, as the paper builds it: its own system prompt; the agent's task
//! message (never the agent's system prompt); every later agent turn and observation
//! (observations as user messages, supervisor messages left out, consecutive same-role
//! messages merged); then a last user message with its own latest critiques, an optional
//! step-budget note, and the request for feedback.
//!
//! The input is kept within `context_tokens`: the task is always kept, then steps newest first
//! while they fit (older ones are dropped, with a line saying how many), and each observation
//! longer than `observation_max_chars` keeps its first and last halves.

use protocol::CriticParams;
use serde_json::{json, Value};

use crate::text::cap_chars;

/// The critic's messages.
pub fn build(
    params: &CriticParams,
    agent_messages: &[Value],
    history: &[(u32, String)],
    step: u32,
    max_steps: u32,
    count_tokens: &dyn Fn(&str) -> usize,
) -> Vec<Value> {
    let text = |m: &Value| crate::llm::tokens::message_text(m);
    // The agent's messages after its system prompt: the task, then turns and observations.
    let mut turns: Vec<(String, String)> = agent_messages
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) != Some("system"))
        .map(|m| {
            let role = match m.get("role").and_then(Value::as_str) {
                Some("assistant") => "assistant",
                _ => "user", // observations (user or tool messages)
            };
            let mut content = text(m);
            if role == "user" {
                content = cap_chars(&content, params.observation_max_chars);
            }
            (role.to_string(), content)
        })
        .collect();
    let task = if turns.is_empty() { None } else { Some(turns.remove(0)) };

    let mut closing = String::from("## Previous Supervisor Feedback History:\n");
    let recent = history.len().saturating_sub(params.history as usize);
    if history.len() == recent {
        closing.push_str("(none yet)\n");
    }
    for (i, (s, feedback)) in history.iter().enumerate().skip(recent) {
        closing.push_str(&format!("### Feedback #{} (after step {s}):\n{feedback}\n", i + 1));
    }
    if params.step_aware_after.is_some_and(|after| step >= after) {
        closing.push_str(&format!(
            "\nCRITICAL CONTEXT: the agent has used {step} of its {max_steps} steps. Work that is not \
             submitted is lost: if its changes already address the issue, or it is stuck in a loop, \
             recommend that it submits now.\n"
        ));
    }
    closing.push_str("\nPlease provide your supervisor feedback now based on the trajectory above.");

    // Fit the budget: system, task and closing always; then turns, newest first.
    let fixed = count_tokens(&params.system_prompt)
        + task.as_ref().map_or(0, |(_, t)| count_tokens(t))
        + count_tokens(&closing);
    let mut budget = params.context_tokens.saturating_sub(fixed);
    let mut kept = 0;
    for (_, content) in turns.iter().rev() {
        let cost = count_tokens(content) + 4;
        if cost > budget {
            break;
        }
        budget -= cost;
        kept += 1;
    }
    let dropped = turns.len() - kept;
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut push = |role: &str, content: String| match merged.last_mut() {
        Some((last_role, last)) if last_role == role => {
            last.push_str("\n\n");
            last.push_str(&content);
        }
        _ => merged.push((role.to_string(), content)),
    };
    if let Some((_, t)) = task {
        push("user", t);
    }
    if dropped > 0 {
        push("user", format!("[{dropped} earlier messages of the trajectory are left out for length]"));
    }
    for (role, content) in turns.into_iter().skip(dropped) {
        push(&role, content);
    }
    push("user", closing);
    let mut messages = vec![json!({"role": "system", "content": params.system_prompt})];
    messages.extend(merged.into_iter().map(|(role, content)| json!({"role": role, "content": content})));
    messages
}

/// The critique's `TASK_STATUS` (None when it has none), and its text without any
/// `<think>...</think>` block.
pub fn parse_critique(text: &str) -> (String, Option<String>) {
    let mut clean = text.to_string();
    while let (Some(start), Some(end)) = (clean.find("<think>"), clean.find("</think>")) {
        if end < start {
            break;
        }
        clean.replace_range(start..end + "</think>".len(), "");
    }
    let clean = clean.trim().to_string();
    let status = clean.lines().find_map(|l| {
        let l = l.trim().trim_start_matches(['*', '#', ' ']);
        l.strip_prefix("TASK_STATUS:").map(|s| s.trim().trim_matches(['"', '*', ' ']).to_string())
    });
    (clean, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> usize {
        s.len().div_ceil(4)
    }

    fn conversation(steps: usize) -> Vec<Value> {
        let mut m = vec![
            json!({"role": "system", "content": "AGENT SYSTEM"}),
            json!({"role": "user", "content": "TASK: fix it"}),
        ];
        for i in 0..steps {
            m.push(json!({"role": "assistant", "content": format!("THOUGHT {i}\n```bash\nls\n```")}));
            m.push(json!({"role": "user", "content": format!("<output>{i}</output>")}));
        }
        m
    }

    #[test]
    fn the_paper_input_leaves_out_the_agent_system_prompt_and_ends_with_the_history() {
        let params = CriticParams { step_aware_after: Some(3), ..Default::default() };
        let history = vec![(5, "first".to_string()), (10, "second".to_string())];
        let msgs = build(&params, &conversation(3), &history, 3, 150, &chars);
        assert_eq!(msgs[0]["role"], "system");
        assert!(!msgs.iter().any(|m| m["content"].as_str().unwrap().contains("AGENT SYSTEM")));
        assert_eq!(msgs[1]["content"], "TASK: fix it");
        let last = msgs.last().unwrap()["content"].as_str().unwrap();
        assert!(last.contains("### Feedback #2 (after step 10):\nsecond"), "{last}");
        assert!(last.contains("CRITICAL CONTEXT: the agent has used 3 of its 150 steps"), "{last}");
        assert!(last.ends_with("based on the trajectory above."));
        // Roles alternate: same-role neighbours were merged (the last observation and the closing).
        for pair in msgs[1..].windows(2) {
            assert_ne!(pair[0]["role"], pair[1]["role"], "{msgs:?}");
        }
    }

    #[test]
    fn long_trajectories_keep_the_task_and_the_newest_steps() {
        let params = CriticParams { context_tokens: 900, ..Default::default() };
        let msgs = build(&params, &conversation(200), &[], 200, 250, &chars);
        let all: String = msgs.iter().map(|m| m["content"].as_str().unwrap().to_string()).collect();
        assert!(all.contains("TASK: fix it"));
        assert!(all.contains("<output>199</output>"), "the newest step is kept");
        assert!(!all.contains("<output>0</output>"), "the oldest is dropped");
        assert!(all.contains("earlier messages of the trajectory are left out"));
        let total: usize = msgs.iter().map(|m| chars(m["content"].as_str().unwrap())).sum();
        assert!(total <= 1000, "{total}");
    }

    #[test]
    fn critiques_are_parsed_for_their_status() {
        let (text, status) = parse_critique("<think>hmm</think>\n1. ... DETECTED: No\nTASK_STATUS: Needs correction\nOVERALL_GUIDANCE: run the tests.");
        assert!(!text.contains("think"));
        assert_eq!(status.as_deref(), Some("Needs correction"));
        assert_eq!(parse_critique("**TASK_STATUS:** \"On track\"").1.as_deref(), Some("On track"));
        assert_eq!(parse_critique("no status").1, None);
    }
}
