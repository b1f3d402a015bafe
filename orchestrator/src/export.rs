//! Trajectories in the format mini-swe-agent 2.x writes (`trajectory_format`
//! "mini-swe-agent-1.1"), so its users' tools read them and its model code can replay them.
//!
//! `messages` is exactly what the model saw, in order, each message as mini-swe-agent keeps it:
//! `role` and `content` (and `tool_calls` / `tool_call_id`), everything else under `extra`,
//! which mini-swe-agent strips before it sends messages to an endpoint. An assistant message's
//! `extra` holds `actions` (a list of `{"command": ...}`), `response` (the endpoint's answer as
//! recorded: its `id`, model, finish reason and usage), `cost` and `timestamp`, plus the step's
//! exact figures; an observation's `extra` holds `raw_output`, `returncode` and `timestamp`. A
//! critic's supervisor messages are where the agent read them, marked `extra.supervisor` (each
//! replaced the previous one in the agent's view). The last message is mini's exit message
//! (`role` "exit", `extra.exit_status` and `extra.submission`). `info` holds `exit_status` (mini's
//! names: `Submitted`, `LimitsExceeded`, `TimeExceeded`, `RepeatedFormatError`; `CriticStop`
//! has no mini name), `submission`, `model_stats` (the agent's cost and calls; the critic's
//! apart), `config` (the effective configuration: the agent, critic, executor and sandbox specs
//! stored with the sweep, as mini keeps `agent`, `model` and `environment`), and
//! `steerbench`: the run, its outcome, exact totals (decimal strings), the evaluation, every
//! model and critic call, and the steps of earlier attempts (a run re-queued after an
//! infrastructure failure keeps them, apart from the final conversation).
//!
//! `steer export trajectories --sweep ID --out DIR` writes one file per run, laid out as
//! mini-swe-agent lays out a batch: a directory per condition
//! (`<agent>__<critic>__r<repeat>`) holding `<instance_id>/<instance_id>.traj.json` and a
//! `preds.json` that the SWE-bench harness (or `steer eval`) grades. Predictions name their
//! condition in `model_name_or_path` ([`model_name`]), the same in `preds.json` and in
//! `steer export preds`, so that grading several conditions keeps their reports apart.

use std::collections::BTreeMap;

use protocol::{CallStatus, LlmCallRecord, Outcome, StepRecord, Trajectory};
use rust_decimal::prelude::ToPrimitive;
use serde_json::{json, Map, Value};

pub const FORMAT: &str = "mini-swe-agent-1.1";

/// The keys a message keeps at its top level (what an OpenAI-compatible endpoint takes);
/// anything else a stored message carries moves under `extra`.
const MESSAGE_KEYS: &[&str] = &["role", "content", "tool_calls", "tool_call_id", "name"];

/// mini-swe-agent's name for how a run ended.
pub fn exit_status(outcome: Option<Outcome>) -> &'static str {
    match outcome {
        None => "Unfinished",
        Some(Outcome::StepLimit | Outcome::CostLimit) => "LimitsExceeded",
        Some(Outcome::TimeLimit) => "TimeExceeded",
        Some(Outcome::FormatErrorLimit) => "RepeatedFormatError",
        Some(Outcome::CriticStop) => "CriticStop",
        // The agent submitted (or, for runs without an agent, there was a patch to grade).
        Some(_) => "Submitted",
    }
}

/// A stored message as mini-swe-agent keeps it: endpoint keys on top, the rest (our
/// `supervisor` mark) under `extra`.
fn clean(message: Value) -> Value {
    let Value::Object(fields) = message else { return message };
    let mut kept = Map::new();
    let mut extra = Map::new();
    for (k, v) in fields {
        if MESSAGE_KEYS.contains(&k.as_str()) {
            kept.insert(k, v);
        } else if k == "extra" {
            if let Value::Object(e) = v {
                extra.extend(e);
            }
        } else {
            extra.insert(k, v);
        }
    }
    if !extra.is_empty() {
        kept.insert("extra".into(), Value::Object(extra));
    }
    Value::Object(kept)
}

fn set_extra(message: &mut Value, fields: Value) {
    let Value::Object(fields) = fields else { return };
    let extra = message
        .as_object_mut()
        .expect("messages are objects")
        .entry("extra")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(e) = extra {
        e.extend(fields);
    }
}

/// The step's time as seconds since the epoch (mini's `timestamp`), when known.
fn timestamp(step: &StepRecord) -> Value {
    step.recorded_at.map_or(Value::Null, |t| json!(t.timestamp_micros() as f64 / 1e6))
}

/// The endpoint's answer as recorded: mini keeps the whole response; steerbench keeps its id,
/// model, finish reason and usage, and the message itself.
fn response(call: Option<&LlmCallRecord>, message: &Value, step: &StepRecord) -> Value {
    let Some(call) = call else { return Value::Null };
    let mut answer = message.clone();
    if let Value::Object(m) = &mut answer {
        m.remove("extra");
    }
    json!({
        "id": call.response_id,
        "object": "chat.completion",
        "created": step.recorded_at.map(|t| t.timestamp()),
        "model": call.model,
        "choices": [{"index": 0, "message": answer, "finish_reason": call.finish_reason}],
        "usage": {
            "prompt_tokens": call.input_tokens,
            "completion_tokens": call.output_tokens,
            "total_tokens": call.input_tokens + call.output_tokens,
            "prompt_tokens_details": {"cached_tokens": call.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": call.reasoning_tokens},
        },
    })
}

/// The run's trajectory as mini-swe-agent 2.x writes it.
pub fn mini_swe_agent(t: &Trajectory) -> Value {
    let final_attempt = t.run.attempt;
    let mut messages = Vec::new();
    let mut earlier: BTreeMap<i32, Vec<Value>> = BTreeMap::new();
    // The call each step of the final attempt was answered by (a replayed step has none).
    // (Of several, the last that kept the endpoint's id of its answer.)
    let mut calls: BTreeMap<i32, &LlmCallRecord> = BTreeMap::new();
    for c in t.llm_calls.iter().filter(|c| c.attempt == final_attempt && c.call.status == CallStatus::Ok) {
        let Some(step) = c.call.step_index else { continue };
        let keeps_id = c.call.response_id.is_some();
        if keeps_id || calls.get(&step).is_none_or(|k| k.response_id.is_none()) {
            calls.insert(step, &c.call);
        }
    }
    for step in &t.steps {
        let step_messages = step.messages.as_array().cloned().unwrap_or_default();
        if step.attempt != final_attempt {
            earlier.entry(step.attempt).or_default().push(json!({
                "step": step.index, "action": step.action, "observation": step.observation,
                "exit_code": step.exit_code, "messages": step_messages.into_iter().map(clean).collect::<Vec<_>>(),
            }));
            continue;
        }
        // Messages before the step's answer (the system and task messages of step 0) carry
        // no step's extras.
        let mut answered = false;
        for m in step_messages {
            let mut m = clean(m);
            let role = m.get("role").and_then(Value::as_str).unwrap_or("").to_string();
            let supervisor = m.pointer("/extra/supervisor").is_some();
            if role == "assistant" {
                answered = true;
                // The step's command (a format error has none), with its tool call's id.
                let call_id = m.pointer("/tool_calls/0/id").cloned();
                let actions: Vec<Value> = match (&step.action, call_id) {
                    (Some(a), Some(id)) => vec![json!({"command": a, "tool_call_id": id})],
                    (Some(a), None) => vec![json!({"command": a})],
                    (None, _) => Vec::new(),
                };
                let call = calls.get(&step.index).copied();
                let response = response(call, &m, step);
                set_extra(
                    &mut m,
                    json!({
                        "actions": actions,
                        "response": response,
                        "cost": step.cost_usd.to_f64(),
                        "timestamp": timestamp(step),
                        "step": step.index,
                        "cost_usd": step.cost_usd.to_string(),
                        "input_tokens": step.input_tokens,
                        "output_tokens": step.output_tokens,
                        "cached_tokens": step.cached_tokens,
                        "llm_ms": step.llm_ms,
                        "replayed": step.replayed,
                        "response_id": call.and_then(|c| c.response_id.as_deref()),
                    }),
                );
            } else if answered && !supervisor && role != "system" {
                set_extra(
                    &mut m,
                    json!({
                        "raw_output": step.observation,
                        "returncode": step.exit_code,
                        "timestamp": timestamp(step),
                        "command_ms": step.command_ms,
                    }),
                );
            }
            messages.push(m);
        }
    }
    let status = exit_status(t.run.outcome);
    let submission = t.patch.clone().unwrap_or_default();
    if t.run.outcome.is_some() {
        let last_step = t.steps.iter().rfind(|s| s.attempt == final_attempt);
        messages.push(json!({
            "role": "exit",
            "content": if status == "Submitted" { submission.clone() } else { status.to_string() },
            "extra": {
                "exit_status": status,
                "submission": submission,
                "steerbench_outcome": t.run.outcome.map(Outcome::as_str),
                "timestamp": last_step.map_or(Value::Null, timestamp),
            },
        }));
    }
    let calls_final = t.llm_calls.iter().filter(|c| c.attempt == final_attempt).count();
    let totals = &t.run.totals;
    let mut steerbench = Map::new();
    steerbench.insert("run".into(), serde_json::to_value(&t.run).unwrap_or(Value::Null));
    steerbench.insert("outcome".into(), json!(t.run.outcome.map(Outcome::as_str)));
    steerbench.insert("evaluation".into(), serde_json::to_value(&t.evaluation).unwrap_or(Value::Null));
    steerbench.insert("llm_calls".into(), serde_json::to_value(&t.llm_calls).unwrap_or(Value::Null));
    steerbench.insert("critic_calls".into(), serde_json::to_value(&t.critic_calls).unwrap_or(Value::Null));
    steerbench.insert(
        "earlier_attempts".into(),
        Value::Array(earlier.into_iter().map(|(a, steps)| json!({"attempt": a, "steps": steps})).collect()),
    );
    json!({
        "trajectory_format": FORMAT,
        "instance_id": t.run.instance_id,
        "info": {
            "exit_status": status,
            "submission": submission,
            "model_stats": {
                // The agent's own calls, as mini counts them; the critic's apart.
                "instance_cost": totals.agent_cost_usd.to_f64(),
                "api_calls": calls_final,
                "critic_cost": totals.critic_cost_usd.to_f64(),
                "critic_calls": t.critic_calls.iter().filter(|c| c.attempt == final_attempt).count(),
            },
            "config": t.config,
            "mini_version": Value::Null,
            "producer": "steerbench",
            "steerbench": steerbench,
        },
        "messages": messages,
    })
}

/// The directory of a run's condition in an export.
pub fn condition_dir(t: &Trajectory) -> String {
    format!("{}__{}__r{}", t.run.agent, t.run.critic, t.run.repeat_index)
}

/// The `model_name_or_path` of a condition's predictions: `<sweep>__<agent>__<critic>__r<repeat>`.
/// Sweep, agent and critic names hold only letters, digits, `.`, `_` and `-`, so the name is
/// one file name component as it is (the harness writes `<model>.<run_id>.json` and a folder
/// per model), and it differs between any two conditions of any two sweeps unless a name
/// itself holds `__` in a way that shifts the parts (`a__b`/`c` against `a`/`b__c`;
/// `steer export trajectories` refuses such a sweep).
pub fn model_name(sweep: &str, agent: &str, critic: &str, repeat: i32) -> String {
    format!("{sweep}__{agent}__{critic}__r{repeat}")
}

/// A `preds.json` entry (the harness's prediction format) of a run of sweep `sweep`.
pub fn prediction(sweep: &str, t: &Trajectory) -> Value {
    json!({
        "instance_id": t.run.instance_id,
        "model_name_or_path": model_name(sweep, &t.run.agent, &t.run.critic, t.run.repeat_index),
        "model_patch": t.patch.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep_file::validate_name;

    #[test]
    fn model_names_differ_per_condition_and_are_valid_names() {
        let mut names = std::collections::HashSet::new();
        for sweep in ["s", "s2"] {
            for agent in ["a", "b"] {
                for critic in ["none", "rules"] {
                    for repeat in [0, 1] {
                        let name = model_name(sweep, agent, critic, repeat);
                        validate_name(&name).unwrap();
                        assert_eq!(
                            crate::predictions::model_slug(&name),
                            name,
                            "kept as it is by `steer eval`"
                        );
                        assert!(names.insert(name.clone()), "{name} twice");
                    }
                }
            }
        }
        assert_eq!(model_name("s", "a", "none", 1), "s__a__none__r1");
    }
}
