//! What a critic condition says, normalised: when the critic is asked, what it reads, how its
//! feedback reaches the agent, and the kind-specific settings. The sweep parser fills in the
//! defaults (and a preset's), so a stored sweep records exactly what its critics did; workers
//! read it from `CriticSpec::params`.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::spec::{CriticKind, Price, Sampling};

/// Events after which a critic may be asked (besides every k steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CriticEvent {
    /// The step's command changed tracked files.
    Edit,
    /// The step's command ran tests (pytest, tox, `manage.py test`, ...).
    Test,
    /// The step's command failed (non-zero exit, or killed at its time limit).
    Failure,
    /// The agent is about to submit: feedback here refuses the submission once, and the agent
    /// goes on.
    Submit,
}

impl CriticEvent {
    pub const ALL: [CriticEvent; 4] =
        [CriticEvent::Edit, CriticEvent::Test, CriticEvent::Failure, CriticEvent::Submit];
    pub fn as_str(self) -> &'static str {
        match self {
            CriticEvent::Edit => "edit",
            CriticEvent::Test => "test",
            CriticEvent::Failure => "failure",
            CriticEvent::Submit => "submit",
        }
    }
}

/// A critic condition's settings (all kinds; kind-specific parts are `None` for other kinds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CriticParams {
    /// The preset the settings came from (e.g. `paper`), for people.
    #[serde(default)]
    pub preset: Option<String>,
    /// Ask after every k agent steps (the paper: 5). None: only on events.
    #[serde(default)]
    pub every_k: Option<u32>,
    #[serde(default)]
    pub events: Vec<CriticEvent>,
    /// At most this many interventions (feedback given) per run; then the critic is not asked.
    #[serde(default)]
    pub max_interventions: Option<u32>,
    /// A scorer intervenes only when its on-track probability is below this.
    #[serde(default)]
    pub score_threshold: Option<f64>,
    /// Stop the run (outcome `critic_stop`) when a critique's TASK_STATUS is this. Off by default.
    #[serde(default)]
    pub stop_on_status: Option<String>,
    /// Stop the run when a scorer's on-track probability is below this. Off by default.
    #[serde(default)]
    pub stop_below_score: Option<f64>,
    /// How many of its own latest critiques the critic reads again (the paper: 5).
    #[serde(default = "default_history")]
    pub history: u32,
    /// Earlier feedback folded into the agent's supervisor message is cut to this many
    /// characters each (the paper: 1,500).
    #[serde(default = "default_fold_chars")]
    pub fold_chars: usize,
    /// From this agent step on, the critic is told how much of the step limit is used and to
    /// recommend submitting a fix that is done, and each of the agent's observations ends with
    /// a note saying so (the paper: 100 of 150). None: never.
    #[serde(default)]
    pub step_aware_after: Option<u32>,
    /// The critic's input budget, in tokens (estimated at 4 characters a token without a
    /// tokenizer): the task is always kept, then steps newest first while they fit.
    #[serde(default = "default_context_tokens")]
    pub context_tokens: usize,
    /// Observations longer than this keep their first and last halves in the critic's input.
    #[serde(default = "default_observation_chars")]
    pub observation_max_chars: usize,
    /// How feedback reaches the agent (minijinja; variables `current`, `step`, `previous`).
    #[serde(default = "default_feedback_template")]
    pub feedback_template: String,
    /// The critic's system prompt (remote and generative critics), sent as written.
    #[serde(default = "default_critic_prompt")]
    pub system_prompt: String,
    /// Prefix replay: the name of the base condition (another critic of the sweep, usually
    /// `none`) whose run for the same instance, agent and repeat is replayed first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_from: Option<String>,
    /// How many of the base run's steps are replayed (the paper: k = 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_steps: Option<u32>,
    /// The agent whose trajectories trained this critic (an agent's `name` in sweep files), so
    /// that transfer reports tell the agents it has seen from the ones it has not. Read by
    /// reports only; it changes nothing in a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_on: Option<String>,
    #[serde(default)]
    pub remote: Option<RemoteCritic>,
    #[serde(default)]
    pub heuristic: Option<HeuristicRules>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<OnnxCritic>,
}

/// A small local model (`kind = "onnx"`): its directory on the workers, and how it is used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OnnxCritic {
    /// The model directory (`critic.toml`, the `.onnx` file, `tokenizer.json`), as a path on
    /// the workers.
    pub model: String,
    /// A scorer's feedback when it finds the run off track (a distribution scorer uses the
    /// winning label's message instead when it has one).
    #[serde(default = "default_scorer_feedback")]
    pub feedback: String,
    /// Generative critics: tokens to write at most, sampling, stop strings.
    #[serde(default = "default_new_tokens")]
    pub max_new_tokens: u32,
    #[serde(default)]
    pub temperature: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub stop: Vec<String>,
}

fn default_scorer_feedback() -> String {
    "Your recent steps do not look productive. Step back: re-read the issue, check what your last \
     commands actually showed, and change your approach instead of repeating it."
        .into()
}
fn default_new_tokens() -> u32 {
    512
}

fn default_history() -> u32 {
    5
}
fn default_fold_chars() -> usize {
    1500
}
fn default_context_tokens() -> usize {
    32_768
}
fn default_observation_chars() -> usize {
    20_000
}
fn default_feedback_template() -> String {
    include_str!("../templates/critic_feedback.j2").into()
}
fn default_critic_prompt() -> String {
    include_str!("../templates/critic_system.j2").into()
}

impl Default for CriticParams {
    fn default() -> Self {
        CriticParams {
            preset: None,
            every_k: None,
            events: Vec::new(),
            max_interventions: None,
            score_threshold: None,
            stop_on_status: None,
            stop_below_score: None,
            history: default_history(),
            fold_chars: default_fold_chars(),
            step_aware_after: None,
            context_tokens: default_context_tokens(),
            observation_max_chars: default_observation_chars(),
            feedback_template: default_feedback_template(),
            system_prompt: default_critic_prompt(),
            prefix_from: None,
            prefix_steps: None,
            trained_on: None,
            remote: None,
            heuristic: None,
            onnx: None,
        }
    }
}

/// A strong model behind an OpenAI-compatible endpoint acting as the critic (the paper's
/// teacher baseline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteCritic {
    pub base_url: String,
    pub model: String,
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub sampling: Sampling,
    #[serde(default)]
    pub price: Price,
}

/// Rules of the `heuristic` critic (no model, no cost).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeuristicRules {
    /// The same command this many times in a row.
    #[serde(default = "default_repeats")]
    pub repeated_command: u32,
    /// The same error (last line of a failing command's output) this many times.
    #[serde(default = "default_repeats")]
    pub repeated_error: u32,
    /// A test file was changed.
    #[serde(default = "yes")]
    pub test_file_edited: bool,
    /// The agent submits without having run any test.
    #[serde(default = "yes")]
    pub submit_without_tests: bool,
}

fn default_repeats() -> u32 {
    3
}
fn yes() -> bool {
    true
}

impl Default for HeuristicRules {
    fn default() -> Self {
        HeuristicRules {
            repeated_command: default_repeats(),
            repeated_error: default_repeats(),
            test_file_edited: true,
            submit_without_tests: true,
        }
    }
}

/// One call to a critic, as recorded (`critic_calls`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CriticCallRecord {
    /// 0-based, per run attempt; makes a re-sent upload idempotent.
    pub call_index: i32,
    /// The agent step after which the critic was asked.
    pub step_index: i32,
    /// `heuristic`, `remote`, `onnx`.
    pub kind: CriticKind,
    #[serde(default)]
    pub model: Option<String>,
    /// What fired it: `every_k`, `edit`, `test`, `failure`, `submit`.
    pub trigger: String,
    pub decision: CriticDecision,
    #[serde(default)]
    pub feedback: Option<String>,
    /// A scorer's on-track probability.
    #[serde(default)]
    pub score: Option<f64>,
    pub status: CriticCallStatus,
    #[serde(default)]
    pub error: Option<String>,
    pub latency_ms: i64,
    #[serde(default)]
    pub input_tokens: i64,
    #[serde(default)]
    pub output_tokens: i64,
    #[serde(default)]
    #[schema(value_type = String)]
    pub cost_usd: Decimal,
    /// `cpu`, `cuda`, or `remote`.
    #[serde(default)]
    pub device: Option<String>,
    /// How many requests the model ran together with this one.
    #[serde(default)]
    pub batch_size: Option<i32>,
    /// Exactly what the critic was given (messages, or the prompt text).
    #[serde(default)]
    pub prompt: serde_json::Value,
    /// A remote critic's endpoint's id of the answer (as `LlmCallRecord::response_id`); None
    /// for local critics, failed calls and workers that predate it.
    #[serde(default)]
    pub response_id: Option<String>,
}

/// What came of asking a critic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CriticDecision {
    /// The agent goes on as it was.
    #[default]
    Continue,
    /// The critic's feedback was given to the agent.
    Inject,
    /// The run was stopped (outcome `critic_stop`).
    Stop,
}

wire_names!(CriticDecision, "critic decision", {
    Continue => "continue",
    Inject => "inject",
    Stop => "stop",
});

/// Whether a critic call worked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CriticCallStatus {
    #[default]
    Ok,
    /// It failed: the agent went on without feedback.
    Failed,
}

wire_names!(CriticCallStatus, "critic call status", {
    Ok => "ok",
    Failed => "failed",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallStatus, ErrorCode, ExecutorKind};

    /// Each enum's `as_str` is its serde name, and parses back.
    fn names_agree<T>(all: &[T])
    where
        T: Copy + std::fmt::Debug + PartialEq + Serialize + std::fmt::Display + std::str::FromStr,
        <T as std::str::FromStr>::Err: std::fmt::Debug,
    {
        for v in all {
            let json = serde_json::to_value(v).unwrap();
            assert_eq!(json, serde_json::Value::String(v.to_string()), "{v:?}");
            assert_eq!(v.to_string().parse::<T>().unwrap(), *v);
        }
    }

    #[test]
    fn wire_names_are_the_serde_names() {
        names_agree(CriticDecision::ALL);
        names_agree(CriticCallStatus::ALL);
        names_agree(CriticKind::ALL);
        names_agree(CallStatus::ALL);
        names_agree(ErrorCode::ALL);
        names_agree(ExecutorKind::ALL);
        let e = "maybe".parse::<CriticDecision>().unwrap_err();
        assert_eq!(e.to_string(), "unknown critic decision `maybe`");
        assert!(CriticDecision::Inject == "inject" && CallStatus::Timeout != "ok");
    }

    #[test]
    fn the_openapi_schema_of_a_critic_spec_is_its_wire_form() {
        use utoipa::ToSchema;
        let mut schemas = Vec::new();
        crate::ClaimedRun::schemas(&mut schemas);
        let (_, spec) = schemas.iter().find(|(name, _)| name == "CriticSpec").expect("CriticSpec is listed");
        let json = serde_json::to_value(spec).unwrap();
        for field in ["name", "kind", "params"] {
            assert!(json["properties"].get(field).is_some(), "{field}: {json}");
        }
        assert!(schemas.iter().any(|(name, _)| name == "CriticKind"), "its kind's schema is listed too");
    }

    #[test]
    fn critic_specs_keep_their_stored_form() {
        use crate::{CriticSettings, CriticSpec};
        let none = serde_json::json!({"name": "none", "kind": "none", "params": {}});
        let spec: CriticSpec = serde_json::from_value(none.clone()).unwrap();
        assert_eq!(spec, CriticSpec::none("none"));
        assert_eq!(serde_json::to_value(&spec).unwrap(), none);

        let params = CriticParams {
            every_k: Some(5),
            heuristic: Some(HeuristicRules::default()),
            ..Default::default()
        };
        let rules = CriticSpec { name: "rules".into(), settings: CriticSettings::Heuristic(params.clone()) };
        let json = serde_json::to_value(&rules).unwrap();
        assert_eq!(json["kind"], "heuristic");
        assert_eq!(json["params"], serde_json::to_value(&params).unwrap());
        assert_eq!(json["params"]["remote"], serde_json::Value::Null, "kind parts of other kinds stay null");
        assert!(json["params"].get("onnx").is_none(), "an absent onnx part is left out");
        assert_eq!(serde_json::from_value::<CriticSpec>(json).unwrap(), rules);

        let bad = serde_json::json!({"name": "r", "kind": "remote", "params": {"every_kk": 1}});
        let e = serde_json::from_value::<CriticSpec>(bad).unwrap_err();
        assert!(e.to_string().contains("unknown field `every_kk`"), "{e}");
    }
}
