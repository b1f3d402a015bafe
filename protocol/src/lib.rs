//! Wire types shared by the coordinator and its workers.
//!
//! Every type here is what crosses HTTP between a worker (or the CLI) and the coordinator, plus
//! the normalised sweep specification that a worker needs to run a task, and what both sides
//! must compute alike: an instance's image name ([`images`]) and the rendering of the prompt
//! and feedback templates ([`prompts`], [`feedback`]), which the coordinator checks at submit
//! and the worker renders on every step. Nothing here talks to a database, a socket or the
//! environment.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[macro_use]
mod name;
pub mod critic;
pub mod feedback;
pub mod images;
pub mod keys;
pub mod mini;
pub mod prompts;
pub mod redact;
pub mod spec;

pub use critic::{
    CriticCallRecord, CriticCallStatus, CriticDecision, CriticEvent, CriticParams, HeuristicRules,
    OnnxCritic, RemoteCritic,
};
pub use name::UnknownName;
pub use spec::{
    AgentExecSpec, AgentLimits, AgentSpec, CriticKind, CriticSettings, CriticSpec, EvaluateSpec,
    ExecutorKind, ExecutorSpec, GradingProfile, PatchSource, PlaceholderSpec, Price, PromptTemplates,
    Sampling, SandboxSettings, Scaffold, SUBMIT_SENTINEL,
};

/// API version prefix of every route but `/healthz` and `/metrics`.
pub const API_PREFIX: &str = "/api/v1";

/// One SWE-bench task, as published (all fields of SWE-bench and SWE-bench Verified, plus the
/// v5 extras `image`, `eval_script` and `log_parser` when a dataset carries them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    pub instance_id: String,
    pub repo: String,
    pub base_commit: String,
    pub patch: String,
    pub test_patch: String,
    pub problem_statement: String,
    #[serde(default)]
    pub hints_text: String,
    #[serde(default)]
    pub created_at: Option<String>,
    pub version: String,
    #[serde(default)]
    pub environment_setup_commit: Option<String>,
    #[serde(rename = "FAIL_TO_PASS")]
    pub fail_to_pass: Vec<String>,
    #[serde(rename = "PASS_TO_PASS")]
    pub pass_to_pass: Vec<String>,
    /// SWE-bench Verified's difficulty bucket, e.g. "<15 min fix".
    #[serde(default)]
    pub difficulty: Option<String>,
    /// v5: the instance's prebuilt image.
    #[serde(default)]
    pub image: Option<String>,
    /// v5: the script that runs the instance's tests.
    #[serde(default)]
    pub eval_script: Option<String>,
    /// v5: the name of the log parser for the instance's test output.
    #[serde(default)]
    pub log_parser: Option<String>,
    /// Any other field the dataset row carried, kept verbatim.
    #[serde(default, flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The state of one run in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for a worker.
    Queued,
    /// Held by a worker under a lease.
    Running,
    /// Its sweep is paused; goes back to `queued` on resume.
    Paused,
    /// Finished with an outcome (resolved or not: a task failing is data).
    Done,
    /// Infrastructure failed on every allowed attempt; the reason is kept.
    Error,
    /// Cancelled before it finished (sweep cancelled or its budget spent).
    Cancelled,
}

impl RunState {
    pub const ALL: [RunState; 6] = [
        RunState::Queued,
        RunState::Running,
        RunState::Paused,
        RunState::Done,
        RunState::Error,
        RunState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Done => "done",
            RunState::Error => "error",
            RunState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Done | RunState::Error | RunState::Cancelled)
    }
}

impl std::str::FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown run state `{s}`"))
    }
}

/// How a finished run ended. Every variant is a result about the agent, never about the
/// infrastructure (infrastructure failures re-queue the run instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Resolved,
    Unresolved,
    EmptyPatch,
    ApplyFailed,
    StepLimit,
    CostLimit,
    TimeLimit,
    CriticStop,
    /// The agent's replies broke the scaffold's format too often.
    FormatErrorLimit,
    /// The evaluation's test run ran past its time limit.
    Timeout,
    /// Recorded by the placeholder executor: not the result of running any agent.
    SyntheticResolved,
    /// Recorded by the placeholder executor: not the result of running any agent.
    SyntheticUnresolved,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Resolved => "resolved",
            Outcome::Unresolved => "unresolved",
            Outcome::EmptyPatch => "empty_patch",
            Outcome::ApplyFailed => "apply_failed",
            Outcome::StepLimit => "step_limit",
            Outcome::CostLimit => "cost_limit",
            Outcome::TimeLimit => "time_limit",
            Outcome::CriticStop => "critic_stop",
            Outcome::FormatErrorLimit => "format_error_limit",
            Outcome::Timeout => "timeout",
            Outcome::SyntheticResolved => "synthetic_resolved",
            Outcome::SyntheticUnresolved => "synthetic_unresolved",
        }
    }
}

/// State of a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SweepState {
    Running,
    Paused,
    Cancelled,
    /// Stopped by the coordinator (budget spent); `stop_reason` says why.
    Stopped,
    Completed,
}

impl SweepState {
    pub fn as_str(self) -> &'static str {
        match self {
            SweepState::Running => "running",
            SweepState::Paused => "paused",
            SweepState::Cancelled => "cancelled",
            SweepState::Stopped => "stopped",
            SweepState::Completed => "completed",
        }
    }
}

impl std::str::FromStr for SweepState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            SweepState::Running,
            SweepState::Paused,
            SweepState::Cancelled,
            SweepState::Stopped,
            SweepState::Completed,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown sweep state `{s}`"))
    }
}

/// Every error body of the API.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// With `overloaded`: how long to wait before asking again, in milliseconds (also sent as
    /// the `Retry-After` header, rounded up to seconds). Clients add jitter so that a fleet
    /// told to back off at once does not come back at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// What went wrong with an API request: the closed set of codes the API answers with, each
/// with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is wrong (a bad body, path or query); resending it unchanged fails again.
    BadRequest,
    /// No valid bearer token.
    Unauthorized,
    /// The token may not do this.
    Forbidden,
    NotFound,
    /// The request conflicts with the current state (a duplicate name, a wrong state).
    Conflict,
    /// A lease-fenced write carried a token that is no longer the run's lease: stop working on
    /// that run and write nothing more for it.
    LeaseLost,
    PayloadTooLarge,
    /// The database could not be reached or timed out: try again later.
    Unavailable,
    /// The coordinator has more work in flight than it serves well: try again after
    /// `retry_after_ms` (with jitter). Nothing was done.
    Overloaded,
    /// A bug or a broken invariant.
    Internal,
}

wire_names!(ErrorCode, "error code", {
    BadRequest => "bad_request",
    Unauthorized => "unauthorized",
    Forbidden => "forbidden",
    NotFound => "not_found",
    Conflict => "conflict",
    LeaseLost => "lease_lost",
    PayloadTooLarge => "payload_too_large",
    Unavailable => "unavailable",
    Overloaded => "overloaded",
    Internal => "internal",
});

impl ErrorCode {
    /// The HTTP status the API answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict | ErrorCode::LeaseLost => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Unavailable | ErrorCode::Overloaded => 503,
            ErrorCode::Internal => 500,
        }
    }
}

// ---------------------------------------------------------------- workers

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisterWorker {
    /// A name for people (defaults to the host name).
    pub name: String,
    pub host: String,
    /// How many runs it executes at once.
    pub slots: u32,
    /// What it can do (None: nothing said, the placeholder only).
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    pub version: String,
}

/// What a worker says it can do when it registers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Capabilities {
    /// The executor kinds it runs (None: the placeholder only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executors: Option<Vec<ExecutorKind>>,
    /// The environment variables it lets sweeps read model API keys from (names, or prefixes
    /// ending in `*`; see [`keys::KeyAllowList`]). None or empty: none, so it takes no run that
    /// names an `api_key_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub key_envs: Option<keys::KeyAllowList>,
    /// The Slurm job it runs in, when Slurm started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmJob>,
    /// Anything else it reports (a GPU, ...), kept as given.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl Capabilities {
    /// A worker that runs these executor kinds.
    pub fn executors(kinds: Vec<ExecutorKind>) -> Capabilities {
        Capabilities { executors: Some(kinds), key_envs: None, slurm: None, other: Default::default() }
    }
}

/// The Slurm job a worker runs in (`SLURM_JOB_ID`, and for an array task
/// `SLURM_ARRAY_JOB_ID` and `SLURM_ARRAY_TASK_ID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SlurmJob {
    pub job_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_task_id: Option<String>,
}

impl SlurmJob {
    /// How Slurm's own tools name the job: `ARRAYJOB_TASK` for an array task (what `scancel`
    /// and `squeue` take), else the job id.
    pub fn label(&self) -> String {
        match (&self.array_job_id, &self.array_task_id) {
            (Some(array), Some(task)) => format!("{array}_{task}"),
            _ => self.job_id.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    pub worker_id: Uuid,
    /// A lease lasts this long unless a heartbeat extends it.
    pub lease_ttl_ms: u64,
    /// How often the worker should heartbeat (a fraction of the lease).
    pub heartbeat_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct LeaseRef {
    pub run_id: i64,
    pub lease_token: Uuid,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Heartbeat {
    /// The leases the worker holds; each valid one is extended.
    pub leases: Vec<LeaseRef>,
    /// The worker is draining (takes no new runs).
    #[serde(default)]
    pub draining: bool,
    /// The instance images the worker holds (sent now and then; absent: unchanged). The
    /// coordinator prefers to hand a worker runs whose image it has.
    #[serde(default)]
    pub images: Option<Vec<String>>,
    /// What the worker is doing besides its runs (e.g. pulling an image); None: nothing.
    #[serde(default)]
    pub status: Option<String>,
    /// Why the worker cannot run container runs now (its container engine stopped answering);
    /// None: it can run every kind it registered. While set, it is handed placeholder runs only.
    #[serde(default)]
    pub degraded: Option<String>,
}

/// A worker as the coordinator knows it (`GET /api/v1/workers`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerInfo {
    pub id: Uuid,
    pub name: String,
    pub host: String,
    pub slots: i32,
    pub executors: Vec<ExecutorKind>,
    /// The variables it lets sweeps read model API keys from (names and `PREFIX*`; empty: none).
    #[serde(default)]
    pub key_envs: Vec<String>,
    /// Why it cannot run container runs now (its engine stopped answering); None: it can.
    #[serde(default)]
    pub degraded: Option<String>,
    /// How many instance images it holds.
    pub images: i64,
    /// The Slurm job it runs in, when Slurm started it.
    #[serde(default)]
    pub slurm: Option<SlurmJob>,
    pub running: i64,
    pub draining: bool,
    pub status: Option<String>,
    pub registered_at: DateTime<Utc>,
    pub last_heartbeat: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAck {
    /// Runs whose lease this worker no longer holds: stop working on them, write nothing more.
    pub lost: Vec<i64>,
    /// Runs whose sweep was cancelled: stop them and hand them back.
    pub cancelled: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClaimRequest {
    /// At most this many runs.
    pub max_runs: u32,
    /// Wait up to this long for work when none is queued (long poll); 0 answers at once.
    #[serde(default)]
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ClaimResponse {
    pub runs: Vec<ClaimedRun>,
}

/// A run handed to a worker with everything it needs to execute it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClaimedRun {
    pub run_id: i64,
    pub sweep_id: i64,
    /// 1 for the first claim of this run, 2 for the second, ...
    pub attempt: i32,
    pub lease_token: Uuid,
    pub lease_expires_at: DateTime<Utc>,
    pub repeat_index: i32,
    pub instance: Instance,
    pub agent: AgentSpec,
    pub critic: CriticSpec,
    pub executor: ExecutorSpec,
    #[serde(default)]
    pub sandbox: SandboxSettings,
    /// The patch an evaluation run grades (predictions submitted with `steer eval`).
    #[serde(default)]
    pub input_patch: Option<String>,
    /// Prefix replay: the steps of the base condition's run to re-execute before the agent
    /// goes on (None: the run starts fresh).
    #[serde(default)]
    pub prefix: Option<PrefixReplay>,
}

/// The first steps of a base run that a critic condition's run re-executes in its own sandbox,
/// copying their messages (the paper's variance control for paired comparisons).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PrefixReplay {
    pub base_run_id: i64,
    /// The base run's steps (its final attempt), at most the prefix length, in order.
    pub steps: Vec<StepRecord>,
}

impl ClaimedRun {
    pub fn lease(&self) -> LeaseRef {
        LeaseRef { run_id: self.run_id, lease_token: self.lease_token }
    }
}

/// One agent step, persisted as it happens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepRecord {
    /// 0-based position in the run's attempt.
    pub index: i32,
    /// The attempt the step belongs to. Set by the coordinator from the lease (ignored on upload).
    #[serde(default)]
    pub attempt: i32,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub observation: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Wall time of the whole step.
    #[serde(default)]
    pub duration_ms: i64,
    /// Copied from a base run by prefix replay (its command re-executed here, its model answer
    /// and cost copied; no model call was made).
    #[serde(default)]
    pub replayed: bool,
    /// When the coordinator stored it (set by the coordinator; ignored on upload). Left out of
    /// the JSON when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<DateTime<Utc>>,
    /// Of which: waiting for the model (retries included).
    #[serde(default)]
    pub llm_ms: i64,
    /// Of which: running the command in the sandbox.
    #[serde(default)]
    pub command_ms: i64,
    #[serde(default)]
    pub input_tokens: i64,
    #[serde(default)]
    pub output_tokens: i64,
    #[serde(default)]
    pub cached_tokens: i64,
    #[serde(default)]
    #[schema(value_type = String)]
    pub cost_usd: Decimal,
    /// The messages this step appended to the conversation, in order (step 0 also holds the
    /// system and instance messages): concatenated over the steps they are exactly what the
    /// model saw.
    #[serde(default)]
    pub messages: serde_json::Value,
}

/// One call to a model endpoint (retries of the call included), billed or not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LlmCallRecord {
    /// 0-based, per run attempt; makes a re-sent upload idempotent.
    pub call_index: i32,
    /// The step the call belongs to (None: it failed before any step was recorded).
    #[serde(default)]
    pub step_index: Option<i32>,
    pub model: String,
    pub status: CallStatus,
    /// HTTP status of the last answer, when there was one.
    #[serde(default)]
    pub http_status: Option<i32>,
    /// Attempts that failed before the last one.
    #[serde(default)]
    pub retries: i32,
    pub latency_ms: i64,
    #[serde(default)]
    pub input_tokens: i64,
    #[serde(default)]
    pub output_tokens: i64,
    #[serde(default)]
    pub cached_tokens: i64,
    #[serde(default)]
    pub reasoning_tokens: i64,
    /// The endpoint reported no usage: the token figures are an estimate.
    #[serde(default)]
    pub tokens_estimated: bool,
    #[serde(default)]
    #[schema(value_type = String)]
    pub cost_usd: Decimal,
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// The last failure of the call (with an excerpt of a bad body), even when a retry succeeded.
    #[serde(default)]
    pub error: Option<String>,
    /// The endpoint's id of the answer (`id` of an OpenAI chat completion, `chatcmpl-...`), to
    /// join calls with a provider's or proxy's logs. None when it gave none or the call failed
    /// (and from workers that predate it).
    #[serde(default)]
    pub response_id: Option<String>,
}

/// How a call to a model endpoint ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// It answered (maybe after retries).
    #[default]
    Ok,
    /// Every attempt failed with a 429, a 5xx, a connection failure or a timeout.
    Unavailable,
    /// The endpoint refused the request (another 4xx).
    Rejected,
    /// Every answer was malformed (not the JSON of a completion).
    Malformed,
    /// The run's wall-time limit fell during the call.
    Timeout,
}

wire_names!(CallStatus, "model call status", {
    Ok => "ok",
    Unavailable => "unavailable",
    Rejected => "rejected",
    Malformed => "malformed",
    Timeout => "timeout",
});

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UploadSteps {
    pub lease_token: Uuid,
    pub steps: Vec<StepRecord>,
    /// Model calls made since the last upload. Each is charged to the sweep once.
    #[serde(default)]
    pub llm_calls: Vec<LlmCallRecord>,
    /// Critic calls made since the last upload. Each is charged to the sweep once.
    #[serde(default)]
    pub critic_calls: Vec<CriticCallRecord>,
}

/// Token and dollar totals of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunTotals {
    pub steps: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    #[schema(value_type = String)]
    pub agent_cost_usd: Decimal,
    #[schema(value_type = String)]
    pub critic_cost_usd: Decimal,
}

impl RunTotals {
    pub fn total_cost(&self) -> Decimal {
        self.agent_cost_usd + self.critic_cost_usd
    }
}

/// Result of grading a run's patch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Evaluation {
    pub apply_status: String,
    pub resolved: bool,
    /// Per-test statuses as parsed from the log.
    #[serde(default)]
    pub tests: serde_json::Value,
    /// The harness-style report.
    #[serde(default)]
    pub report: serde_json::Value,
    /// The eval script's output as the harness writes it to `test_output.txt` (with its
    /// timeout line when the time limit fired); absent when the script did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_output: Option<String>,
    /// The eval script that ran (`eval.sh`); absent when it did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_script: Option<String>,
    /// The worker's account of the grading (`run_instance.log`): image, container, each
    /// patch-application command with its exit status and output, the test command, its exit
    /// status and timings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_log: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CompleteRun {
    pub lease_token: Uuid,
    pub outcome: Outcome,
    pub totals: RunTotals,
    #[serde(default)]
    pub patch: Option<String>,
    #[serde(default)]
    pub evaluation: Option<Evaluation>,
    #[serde(default)]
    pub detail: Option<String>,
}

/// An infrastructure failure: the run goes back to the queue (or ends as `error` once its
/// attempts are used up).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FailRun {
    pub lease_token: Uuid,
    pub reason: String,
    /// The run's model endpoint stayed unavailable through every retry (429s, 5xx, timeouts):
    /// the coordinator also rests the endpoint before handing out more of its runs.
    #[serde(default)]
    pub endpoint_unavailable: bool,
}

/// Hand a run back without counting a failed attempt (graceful drain).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleaseRun {
    pub lease_token: Uuid,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Hand back every run still leased to a worker. Sent by a worker as it exits, when it
/// holds nothing: any lease left is one whose claim response it never read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ReleaseHeld {
    #[serde(default)]
    pub reason: Option<String>,
}

/// The runs a [`ReleaseHeld`] handed back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ReleasedRuns {
    pub run_ids: Vec<i64>,
}

// ---------------------------------------------------------------- users

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatasetUpload {
    pub name: String,
    /// Where it came from (a file path or hub name), for people.
    #[serde(default)]
    pub source: Option<String>,
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatasetInfo {
    pub id: i64,
    pub name: String,
    pub source: Option<String>,
    pub instances: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubmitSweep {
    /// The sweep file, verbatim (kept as submitted).
    pub config_toml: String,
    /// The file's name, used in error messages.
    #[serde(default)]
    pub file_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SweepSubmitted {
    pub sweep_id: i64,
    pub name: String,
    /// False when the same sweep (name and config hash) already existed: nothing was added.
    pub created: bool,
    pub runs: i64,
    pub config_hash: String,
    /// What may keep the sweep's runs from starting, found at submit (e.g. an `api_key_env`
    /// that no live worker allows; workers may still join).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A sweep file checked as submitting it would check it, with nothing written
/// (`POST /api/v1/sweep-validations`, `steer sweep validate`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SweepValidation {
    pub name: String,
    pub dataset: String,
    /// The sweep already submitted with this name and configuration (submitting adds nothing).
    pub already_submitted: Option<i64>,
    /// Instances the selection picks.
    pub instances: i64,
    /// The first of them (sorted), at most [`VALIDATION_SAMPLE`].
    pub first_instances: Vec<String>,
    pub repeats: u32,
    /// Runs per condition (agent x critic): instances x repeats each.
    pub conditions: Vec<ConditionRuns>,
    /// Runs in all: instances x agents x critics x repeats.
    pub runs: i64,
    pub images: ImageCheck,
    /// The model endpoints the agents call, as host:port, sorted.
    pub endpoints: Vec<String>,
    /// The most the sweep can spend: runs x each agent's per-run cap (`max_cost_usd`), or None
    /// (unbounded) when an agent has no cap; see `uncapped_agents`.
    #[schema(value_type = Option<String>)]
    pub max_spend_usd: Option<Decimal>,
    /// Agents without a per-run cost cap.
    pub uncapped_agents: Vec<String>,
    /// The sweep's own budget (`budget_usd`); None: none.
    #[schema(value_type = Option<String>)]
    pub budget_usd: Option<Decimal>,
    /// What may keep runs from starting (as submitting would warn).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// What deleting a sweep or a dataset removed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    /// The sweep's or dataset's name.
    pub name: String,
    /// The sweeps removed (for a sweep: itself), with everything recorded for them.
    pub sweeps: Vec<String>,
    /// Runs removed with them (their attempts, steps, model and critic calls, evaluations too).
    pub runs: i64,
}

/// How many instance ids [`SweepValidation::first_instances`] and missing images list.
pub const VALIDATION_SAMPLE: usize = 5;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConditionRuns {
    pub agent: String,
    pub critic: String,
    pub runs: i64,
    /// The agent's per-run cost cap; None: uncapped.
    #[schema(value_type = Option<String>)]
    pub max_cost_usd_per_run: Option<Decimal>,
}

/// The sandbox images a sweep needs, against those the live workers report holding.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageCheck {
    /// Distinct images the selected instances need.
    pub needed: i64,
    /// Of those, how many at least one live worker holds.
    pub held: i64,
    /// The first of the others (sorted), at most [`VALIDATION_SAMPLE`].
    pub missing: Vec<String>,
    /// Live workers asked (heard from within the coordinator's live window).
    pub live_workers: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SweepStatus {
    pub id: i64,
    pub name: String,
    pub state: SweepState,
    pub stop_reason: Option<String>,
    pub config_hash: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub total_runs: i64,
    /// Runs by state (every state present, zeros included).
    pub states: BTreeMap<String, i64>,
    /// Finished runs by outcome.
    pub outcomes: BTreeMap<String, i64>,
    #[schema(value_type = String)]
    pub spent_usd: Decimal,
    #[schema(value_type = Option<String>)]
    pub budget_usd: Option<Decimal>,
    /// The sweep's model endpoints whose circuit breaker is open or half-open: why queued runs
    /// may not be starting.
    #[serde(default)]
    pub resting_endpoints: Vec<RestingEndpoint>,
    /// Queued runs that no live worker can take, grouped by why (empty: none known).
    #[serde(default)]
    pub waiting: Vec<WaitingRuns>,
    /// Runs that ended `error` or `cancelled`, and unfinished runs that failed an attempt,
    /// grouped by state and reason: the most common first, at most [`REASON_GROUPS`].
    #[serde(default)]
    pub reasons: Vec<ReasonGroup>,
}

/// How many reason groups a sweep's status lists.
pub const REASON_GROUPS: usize = 5;

/// Runs in one state that ended (or last failed) for one reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReasonGroup {
    pub state: RunState,
    /// The first line of the runs' last error, cut to 160 characters ("cancelled with the
    /// sweep" for a cancelled run that never failed).
    pub reason: String,
    pub runs: i64,
    /// One of them, to look at (`steer sweep runs`, the UI's run page).
    pub example_run: i64,
}

/// Queued runs that no live worker can take now, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WaitingRuns {
    /// How many of the sweep's queued runs wait for this reason.
    pub runs: i64,
    /// Why, in words, with what would let them start.
    pub reason: String,
}

/// A model endpoint resting after outages (its circuit breaker is open or half-open).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RestingEndpoint {
    /// `host:port` of its base URL (never credentials or a path).
    pub endpoint: String,
    /// Consecutive outages so far.
    pub outages: i32,
    /// Seconds until it takes runs again; 0 when half-open (one probe run at a time).
    pub resting_s: f64,
}

impl SweepStatus {
    pub fn finished_runs(&self) -> i64 {
        RunState::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| self.states.get(s.as_str()).copied().unwrap_or(0))
            .sum()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunInfo {
    pub id: i64,
    pub sweep_id: i64,
    pub instance_id: String,
    pub agent: String,
    pub critic: String,
    pub repeat_index: i32,
    pub state: RunState,
    pub attempt: i32,
    pub failed_attempts: i32,
    pub outcome: Option<Outcome>,
    /// Whether the run's patch resolves the task (None: not graded). A run that ended at a
    /// limit still has its patch graded, so this can be true whatever the outcome says.
    #[serde(default)]
    pub resolved: Option<bool>,
    pub last_error: Option<String>,
    pub worker_id: Option<Uuid>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub totals: RunTotals,
}

/// Everything recorded of a run: its attempts, the steps of every attempt (earlier attempts
/// first; each step says its attempt), every model call, the final patch and its evaluation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Trajectory {
    pub run: RunInfo,
    /// The effective configuration the run followed, as stored with its sweep: `agent` (its
    /// spec: endpoint, sampling, limits, a mini-swe-agent file), `critic`, `executor` (scaffold,
    /// templates, ...) and `sandbox`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// Every claim of the run, first first (runs finished before the attempt ledger existed
    /// list only their final attempt).
    #[serde(default)]
    pub attempts: Vec<RunAttempt>,
    pub steps: Vec<StepRecord>,
    #[serde(default)]
    pub llm_calls: Vec<TrajectoryCall>,
    #[serde(default)]
    pub critic_calls: Vec<TrajectoryCriticCall>,
    pub patch: Option<String>,
    pub evaluation: Option<Evaluation>,
}

/// One claim of a run: who held it and how its lease ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunAttempt {
    pub attempt: i32,
    /// The worker that claimed it.
    pub worker_id: Option<Uuid>,
    pub claimed_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// None while the lease is held.
    pub ending: Option<AttemptEnding>,
    /// The failure or hand-back reason, when there is one.
    pub reason: Option<String>,
}

/// How an attempt's lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptEnding {
    /// Its worker completed the run (at most one attempt of a run).
    Completed,
    /// Its worker reported an infrastructure failure (counts against `max_attempts`).
    Failed,
    /// Its worker handed the run back (drain); the run went back to the queue or its paused sweep.
    Released,
    /// The lease ran out (counts against `max_attempts`).
    Expired,
    /// Its worker handed the run back because its sweep was cancelled; the run ended there.
    Cancelled,
}

impl AttemptEnding {
    pub const ALL: [AttemptEnding; 5] = [
        AttemptEnding::Completed,
        AttemptEnding::Failed,
        AttemptEnding::Released,
        AttemptEnding::Expired,
        AttemptEnding::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptEnding::Completed => "completed",
            AttemptEnding::Failed => "failed",
            AttemptEnding::Released => "released",
            AttemptEnding::Expired => "expired",
            AttemptEnding::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for AttemptEnding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttemptEnding::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown attempt ending `{s}`"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TrajectoryCriticCall {
    pub attempt: i32,
    #[serde(flatten)]
    pub call: CriticCallRecord,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TrajectoryCall {
    pub attempt: i32,
    #[serde(flatten)]
    pub call: LlmCallRecord,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateToken {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// Shown once; only its hash is stored.
    pub token: String,
}

/// Who a bearer token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including tokens.
    Admin,
    /// Datasets, sweeps, runs.
    User,
    /// Register, claim, heartbeat, upload, complete.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Worker => "worker",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            "worker" => Ok(Role::Worker),
            other => Err(format!("unknown role `{other}` (admin, user or worker)")),
        }
    }
}

/// Whether an `Authorization` header's value is `Bearer <expected>` (compared in time that does
/// not depend on where the token differs). For the metrics endpoints' optional token.
pub fn bearer_matches(authorization: Option<&str>, expected: &str) -> bool {
    let Some(presented) = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim) else {
        return false;
    };
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}
