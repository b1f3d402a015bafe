//! Trajectories in the format mini-swe-agent writes (`trajectory_format` "mini-swe-agent-1.1"),
//! so its users' tools read them: a `messages` list (exactly what the model saw, in order, each
//! assistant message with an `extra` holding its step's cost and tokens, and the endpoint's id
//! of the answer, `response_id`, to find it in a provider's logs) and an `info` object
//! (`exit_status`, `submission`, `model_stats`). A critic's supervisor messages are in
//! `messages` where the agent read them, marked `"supervisor": true` (each replaced the
//! previous one in the agent's view). What mini-swe-agent has no place for sits in
//! `info.steerbench`: the run, its exact totals (decimal strings), the evaluation, every
//! model and critic call, and the steps of earlier attempts (a run re-queued after an infrastructure
//! failure keeps them, apart from the final conversation).
//!
//! `steer export trajectories --sweep ID --out DIR` writes one file per run, laid out as
//! mini-swe-agent lays out a batch: a directory per condition
//! (`<agent>__<critic>__r<repeat>`) holding `<instance_id>/<instance_id>.traj.json` and a
//! `preds.json` that the SWE-bench harness (or `steer eval`) grades. Predictions name their
//! condition in `model_name_or_path` ([`model_name`]), the same in `preds.json` and in
//! `steer export preds`, so that grading several conditions keeps their reports apart.

use std::collections::BTreeMap;

use protocol::{CallStatus, Outcome, Trajectory};
use rust_decimal::prelude::ToPrimitive;
use serde_json::{json, Map, Value};

pub const FORMAT: &str = "mini-swe-agent-1.1";

/// mini-swe-agent's name for how a run ended.
pub fn exit_status(outcome: Option<Outcome>) -> &'static str {
    match outcome {
        None => "Unfinished",
        Some(Outcome::StepLimit | Outcome::CostLimit) => "LimitsExceeded",
        Some(Outcome::TimeLimit) => "TimeExceeded",
        Some(Outcome::FormatErrorLimit) => "FormatError",
        Some(Outcome::CriticStop) => "CriticStop",
        // The agent submitted (or, for runs without an agent, there was a patch to grade).
        Some(_) => "Submitted",
    }
}

/// The run's trajectory as mini-swe-agent writes it.
pub fn mini_swe_agent(t: &Trajectory) -> Value {
    let final_attempt = t.run.attempt;
    let mut messages = Vec::new();
    let mut earlier: BTreeMap<i32, Vec<Value>> = BTreeMap::new();
    // The answer each step of the final attempt was made from (a replayed step has none).
    let response_ids: BTreeMap<i32, &str> = t
        .llm_calls
        .iter()
        .filter(|c| c.attempt == final_attempt && c.call.status == CallStatus::Ok)
        .filter_map(|c| Some((c.call.step_index?, c.call.response_id.as_deref()?)))
        .collect();
    for step in &t.steps {
        let step_messages = step.messages.as_array().cloned().unwrap_or_default();
        if step.attempt != final_attempt {
            earlier.entry(step.attempt).or_default().push(json!({
                "step": step.index, "action": step.action, "observation": step.observation,
                "exit_code": step.exit_code, "messages": step_messages,
            }));
            continue;
        }
        for mut m in step_messages {
            if m.get("role").and_then(Value::as_str) == Some("assistant") {
                m["extra"] = json!({
                    "step": step.index,
                    "action": step.action,
                    "cost": step.cost_usd.to_f64(),
                    "cost_usd": step.cost_usd.to_string(),
                    "input_tokens": step.input_tokens,
                    "output_tokens": step.output_tokens,
                    "cached_tokens": step.cached_tokens,
                    "llm_ms": step.llm_ms,
                    "response_id": response_ids.get(&step.index),
                });
            } else if m.get("supervisor").is_some() {
                // A critic's message: the model saw it until the next one replaced it.
            } else if m.get("role").and_then(Value::as_str) != Some("system") && step.action.is_some() {
                m["extra"] = json!({ "returncode": step.exit_code, "command_ms": step.command_ms });
            }
            messages.push(m);
        }
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
            "exit_status": exit_status(t.run.outcome),
            "submission": t.patch.clone().unwrap_or_default(),
            "model_stats": {
                "instance_cost": totals.total_cost().to_f64(),
                "api_calls": calls_final,
            },
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
