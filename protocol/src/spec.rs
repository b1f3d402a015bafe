//! The normalised form of what a sweep file says about agents, critics and the executor.
//!
//! The coordinator parses and validates sweep files into these types (with line numbers in its
//! errors); workers receive them with each claimed run. They hold no secrets: an agent names the
//! *environment variable* that holds its API key, never the key.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::critic::CriticParams;

/// A frozen agent: a model behind an OpenAI-compatible endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentSpec {
    pub name: String,
    /// Base URL of the OpenAI-compatible API, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    pub model: String,
    /// Name of the environment variable (on the worker) holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub sampling: Sampling,
    #[serde(default)]
    pub price: Price,
    #[serde(default)]
    pub limits: AgentLimits,
    /// Fleet-wide cap on runs using this agent's endpoint at once (None: no cap). A run makes
    /// one model call at a time, so this also caps the requests in flight to the endpoint.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Path, on the workers, of the model's `tokenizer.json`: counts tokens when the endpoint
    /// reports no usage (None: about 4 characters a token). Left out of the JSON when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// Extra fields of every request body, passed through as given (e.g. `{"top_k": 20}`).
    /// (Left out of the JSON when empty, so config hashes of sweeps without it stay as they were.)
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub extra_body: serde_json::Map<String, serde_json::Value>,
    /// A mini-swe-agent configuration file (`agent_config`), read at submit: the agent follows
    /// its templates, limits, sandbox variables, command timeout, action and submission rules.
    /// Left out of the JSON when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_config: Option<crate::mini::MiniConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sampling {
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Vec<String>,
}

/// Prices in US dollars per million tokens, kept exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Price {
    #[schema(value_type = String)]
    pub input_per_mtok: Decimal,
    #[schema(value_type = String)]
    pub output_per_mtok: Decimal,
    #[schema(value_type = String)]
    pub cached_input_per_mtok: Decimal,
}

impl Price {
    /// Exact cost of a call, in dollars. Cached prompt tokens are part of `input_tokens`
    /// (as OpenAI reports them) and are billed at the cached price instead of the input price.
    pub fn cost(&self, input_tokens: i64, cached_tokens: i64, output_tokens: i64) -> Decimal {
        let million = Decimal::from(1_000_000u32);
        let uncached = (input_tokens - cached_tokens).max(0);
        (Decimal::from(uncached) * self.input_per_mtok
            + Decimal::from(cached_tokens) * self.cached_input_per_mtok
            + Decimal::from(output_tokens) * self.output_per_mtok)
            / million
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentLimits {
    pub max_steps: u32,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub max_cost_usd: Option<Decimal>,
    /// Wall-time limit of a run in seconds; 0: none.
    pub max_wall_time_s: u64,
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits { max_steps: 150, max_cost_usd: None, max_wall_time_s: 3600 }
    }
}

/// A critic condition. On the wire `{name, kind, params}`: `params` is `{}` for kind `none` and
/// the condition's [`CriticParams`] (defaults filled in by the sweep parser) for the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WireCriticSpec", into = "WireCriticSpec")]
pub struct CriticSpec {
    pub name: String,
    pub settings: CriticSettings,
}

/// A critic condition's settings, by kind (parsed once, when the sweep file is read).
#[derive(Debug, Clone, PartialEq)]
pub enum CriticSettings {
    /// No critic: the agent runs alone.
    None,
    /// `params.heuristic` holds the rules (None: the default rules).
    Heuristic(CriticParams),
    /// `params.remote` names the endpoint (the sweep parser always sets it).
    Remote(CriticParams),
    /// `params.onnx` names the model (the sweep parser always sets it).
    Onnx(CriticParams),
}

impl CriticSettings {
    pub fn kind(&self) -> CriticKind {
        match self {
            CriticSettings::None => CriticKind::None,
            CriticSettings::Heuristic(_) => CriticKind::Heuristic,
            CriticSettings::Remote(_) => CriticKind::Remote,
            CriticSettings::Onnx(_) => CriticKind::Onnx,
        }
    }

    /// The settings of a critic that has some (None for kind `none`).
    pub fn params(&self) -> Option<&CriticParams> {
        match self {
            CriticSettings::None => None,
            CriticSettings::Heuristic(p) | CriticSettings::Remote(p) | CriticSettings::Onnx(p) => Some(p),
        }
    }

    /// The settings of a critic of kind `kind`.
    pub fn of_kind(kind: CriticKind, params: CriticParams) -> CriticSettings {
        match kind {
            CriticKind::None => CriticSettings::None,
            CriticKind::Heuristic => CriticSettings::Heuristic(params),
            CriticKind::Remote => CriticSettings::Remote(params),
            CriticKind::Onnx => CriticSettings::Onnx(params),
        }
    }
}

impl CriticSpec {
    /// The `none` condition named `name`.
    pub fn none(name: impl Into<String>) -> CriticSpec {
        CriticSpec { name: name.into(), settings: CriticSettings::None }
    }

    pub fn kind(&self) -> CriticKind {
        self.settings.kind()
    }

    /// Its settings (None for kind `none`).
    pub fn params(&self) -> Option<&CriticParams> {
        self.settings.params()
    }

    /// The environment variable a worker reads this critic's API key from (a remote critic's
    /// `api_key_env`).
    pub fn api_key_env(&self) -> Option<&str> {
        self.params().and_then(|p| p.remote.as_ref()).and_then(|r| r.api_key_env.as_deref())
    }

    /// `params` as stored and sent: `{}` for kind `none`.
    pub fn params_json(&self) -> serde_json::Value {
        match self.params() {
            None => serde_json::Value::Object(Default::default()),
            Some(p) => serde_json::to_value(p).expect("critic params serialize"),
        }
    }
}

/// How a [`CriticSpec`] is spelled in JSON.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(as = CriticSpec)]
struct WireCriticSpec {
    name: String,
    kind: CriticKind,
    /// The condition's settings: a [`CriticParams`] as JSON, defaults filled in by the sweep
    /// parser (`{}` for `none`).
    #[serde(default)]
    params: serde_json::Value,
}

impl TryFrom<WireCriticSpec> for CriticSpec {
    type Error = serde_json::Error;
    fn try_from(wire: WireCriticSpec) -> Result<Self, Self::Error> {
        let settings = match wire.kind {
            // Whatever `none` carries, it has no settings (the parser gives it `{}`).
            CriticKind::None => CriticSettings::None,
            kind => {
                let params = match wire.params {
                    serde_json::Value::Null => CriticParams::default(),
                    json => serde_json::from_value(json)?,
                };
                CriticSettings::of_kind(kind, params)
            }
        };
        Ok(CriticSpec { name: wire.name, settings })
    }
}

impl From<CriticSpec> for WireCriticSpec {
    fn from(spec: CriticSpec) -> Self {
        WireCriticSpec { params: spec.params_json(), kind: spec.kind(), name: spec.name }
    }
}

impl utoipa::PartialSchema for CriticSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <WireCriticSpec as utoipa::PartialSchema>::schema()
    }
}

impl ToSchema for CriticSpec {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("CriticSpec")
    }
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        <WireCriticSpec as ToSchema>::schemas(schemas)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CriticKind {
    /// No critic: the agent runs alone (the baseline condition).
    #[default]
    None,
    /// Cheap rules with no model (a repeated command, a repeated error, a test file edited,
    /// submitting untested work): a baseline that costs nothing.
    Heuristic,
    /// A strong model behind an OpenAI-compatible endpoint (the paper's teacher baseline).
    Remote,
    /// A small local model through ONNX Runtime: a scorer or a generative critic.
    Onnx,
}

wire_names!(CriticKind, "critic kind", {
    None => "none",
    Heuristic => "heuristic",
    Remote => "remote",
    Onnx => "onnx",
});

/// What executes a run on the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExecutorSpec {
    /// Runs no agent: waits, records synthetic steps and a synthetic outcome. For exercising
    /// the queue, the fleet and the store end to end.
    Placeholder(PlaceholderSpec),
    /// Runs no agent: grades a given patch (the dataset's gold patch, or the prediction the
    /// run carries) in a fresh sandbox, as the official SWE-bench harness does.
    Evaluate(EvaluateSpec),
    /// Runs the agent on the task in a sandbox, steered by the run's critic, then grades the
    /// patch it leaves in a fresh sandbox.
    Agent(AgentExecSpec),
}

impl ExecutorSpec {
    pub fn kind(&self) -> ExecutorKind {
        match self {
            ExecutorSpec::Placeholder(_) => ExecutorKind::Placeholder,
            ExecutorSpec::Evaluate(_) => ExecutorKind::Evaluate,
            ExecutorSpec::Agent(_) => ExecutorKind::Agent,
        }
    }
}

/// The kinds of [`ExecutorSpec`], as sweep files, worker registrations and the claim query
/// spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorKind {
    Placeholder,
    Evaluate,
    Agent,
}

wire_names!(ExecutorKind, "executor kind", {
    Placeholder => "placeholder",
    Evaluate => "evaluate",
    Agent => "agent",
});

impl ExecutorKind {
    /// Whether its runs need a container engine on the worker.
    pub fn needs_container(self) -> bool {
        matches!(self, ExecutorKind::Evaluate | ExecutorKind::Agent)
    }
}

/// Grading semantics to follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GradingProfile {
    /// The official harness v5.0.2 (the default).
    #[default]
    V5,
    /// The official harness 4.x, for comparing with numbers published under it.
    V4,
}

/// Which patch an `evaluate` run grades.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PatchSource {
    /// The patch the run carries (a prediction submitted with `steer eval`).
    #[default]
    Prediction,
    /// The dataset's gold patch (checks that images and grading agree with the dataset).
    Gold,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EvaluateSpec {
    #[serde(default)]
    pub profile: GradingProfile,
    #[serde(default)]
    pub patch: PatchSource,
}

/// How a run's sandbox is made: image naming, resources, network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SandboxSettings {
    /// Containers get a network only when this is true (some test suites need one).
    #[serde(default)]
    pub network: bool,
    /// CPUs of each container (fractional allowed), as `docker run --cpus`.
    #[serde(default = "default_cpus")]
    pub cpus: Option<f64>,
    /// Memory of each container in MiB, swap not allowed beyond it; a command past it is killed
    /// by the kernel (the command's result, not the worker's).
    #[serde(default = "default_memory_mb")]
    pub memory_mb: Option<u64>,
    #[serde(default = "default_pids_limit")]
    pub pids_limit: Option<i64>,
    /// Disk each container may write, in MiB: the storage driver's `size` option, where the
    /// engine supports it (overlay2 on xfs with `pquota`, btrfs, zfs); elsewhere the worker
    /// logs once that writes are not capped.
    #[serde(default = "default_disk_mb")]
    pub disk_mb: Option<u64>,
    /// Registry host in front of the image name, e.g. `registry.example.com:5000`.
    #[serde(default)]
    pub image_registry: Option<String>,
    /// Namespace of the official image names (`swebench/sweb.eval.x86_64.<id>`).
    #[serde(default = "default_namespace")]
    pub image_namespace: String,
    #[serde(default = "default_tag")]
    pub image_tag: String,
    /// Per-instance image names that win over everything else.
    #[serde(default)]
    pub image_overrides: std::collections::BTreeMap<String, String>,
    /// Time limit of the test run when grading (the harness's default is 1,800 s).
    #[serde(default = "default_eval_timeout")]
    pub eval_timeout_s: u64,
}

/// Default CPUs of a sandbox (SWE-bench Verified's packagings declare 2 per task).
pub const DEFAULT_SANDBOX_CPUS: f64 = 2.0;
/// Default memory of a sandbox in MiB (4 GiB, as SWE-bench Verified's packagings declare).
pub const DEFAULT_SANDBOX_MEMORY_MB: u64 = 4096;
/// Default process limit of a sandbox (fork bombs stop there).
pub const DEFAULT_SANDBOX_PIDS: i64 = 4096;
/// Default disk of a sandbox in MiB (10 GiB, as SWE-bench Verified's packagings declare).
pub const DEFAULT_SANDBOX_DISK_MB: u64 = 10 * 1024;

fn default_cpus() -> Option<f64> {
    Some(DEFAULT_SANDBOX_CPUS)
}
fn default_memory_mb() -> Option<u64> {
    Some(DEFAULT_SANDBOX_MEMORY_MB)
}
fn default_pids_limit() -> Option<i64> {
    Some(DEFAULT_SANDBOX_PIDS)
}
fn default_disk_mb() -> Option<u64> {
    Some(DEFAULT_SANDBOX_DISK_MB)
}
fn default_namespace() -> String {
    "swebench".into()
}
fn default_tag() -> String {
    "latest".into()
}
fn default_eval_timeout() -> u64 {
    1800
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            network: false,
            cpus: default_cpus(),
            memory_mb: default_memory_mb(),
            pids_limit: default_pids_limit(),
            disk_mb: default_disk_mb(),
            image_registry: None,
            image_namespace: default_namespace(),
            image_tag: default_tag(),
            image_overrides: Default::default(),
            eval_timeout_s: default_eval_timeout(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PlaceholderSpec {
    /// How long each run takes, in total.
    pub duration_ms: u64,
    /// How many synthetic steps it records (spread over the duration).
    pub steps: u32,
    /// Probability of recording `synthetic_resolved`, drawn from a generator seeded by
    /// `seed` and the run id so that a re-run gives the same outcome.
    pub resolve_probability: f64,
    /// Synthetic cost of each step.
    #[schema(value_type = String)]
    pub cost_per_step_usd: Decimal,
    pub seed: u64,
}

impl Default for PlaceholderSpec {
    fn default() -> Self {
        PlaceholderSpec {
            duration_ms: 500,
            steps: 3,
            resolve_probability: 0.3,
            cost_per_step_usd: Decimal::ZERO,
            seed: 0,
        }
    }
}

/// How the agent talks to the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scaffold {
    /// mini-swe-agent's text protocol: reasoning plus exactly one fenced bash block per reply.
    #[default]
    BashOnly,
    /// Native tool calls: a `bash` tool and a `submit` tool.
    ToolCalling,
}

impl Scaffold {
    pub fn as_str(self) -> &'static str {
        match self {
            Scaffold::BashOnly => "bash_only",
            Scaffold::ToolCalling => "tool_calling",
        }
    }
}

/// The prompt templates of an agent run (minijinja syntax). The coordinator fills in the
/// defaults, so a stored sweep records exactly the text its agents saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PromptTemplates {
    /// The system message.
    pub system: String,
    /// The first user message: the task.
    pub instance: String,
    /// The observation after a command (a user message, or a tool message with tools).
    pub observation: String,
    /// The answer to a reply that broke the format.
    pub format_error: String,
}

impl Default for PromptTemplates {
    fn default() -> Self {
        PromptTemplates {
            system: include_str!("../templates/system.j2").into(),
            instance: include_str!("../templates/instance.j2").into(),
            observation: include_str!("../templates/observation.j2").into(),
            format_error: include_str!("../templates/format_error.j2").into(),
        }
    }
}

/// The agent executor's settings (per-agent limits are in [`AgentLimits`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentExecSpec {
    #[serde(default)]
    pub scaffold: Scaffold,
    #[serde(default)]
    pub templates: PromptTemplates,
    /// Time limit of one command, in seconds.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_s: u64,
    /// Observations longer than this many characters keep their first and last halves.
    #[serde(default = "default_observation_chars")]
    pub observation_max_chars: usize,
    /// When set, a command that changed tracked files gets the edited lines, with this many
    /// lines of context, appended to its observation.
    #[serde(default)]
    pub edit_context_lines: Option<u32>,
    /// Replies that break the format (no action, several actions) before the run ends as
    /// `format_error_limit` (`u32::MAX`, as the paper preset sets it: no limit).
    #[serde(default = "default_format_errors")]
    pub max_format_errors: u32,
    /// Where the repository is in the instance image; every command starts there.
    #[serde(default = "default_workdir")]
    pub workdir: String,
    /// How the final patch is graded.
    #[serde(default)]
    pub grading: GradingProfile,
    /// The preset the settings came from (e.g. `paper`), for people.
    #[serde(default)]
    pub preset: Option<String>,
    /// Environment variables of the agent's sandbox, `NAME=value` (the paper preset sets
    /// mini-swe-agent's). Left out of the JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandbox_env: Vec<String>,
}

fn default_command_timeout() -> u64 {
    60
}
fn default_observation_chars() -> usize {
    10_000
}
fn default_format_errors() -> u32 {
    10
}
fn default_workdir() -> String {
    "/testbed".into()
}

impl Default for AgentExecSpec {
    fn default() -> Self {
        AgentExecSpec {
            scaffold: Scaffold::default(),
            templates: PromptTemplates::default(),
            command_timeout_s: default_command_timeout(),
            observation_max_chars: default_observation_chars(),
            edit_context_lines: None,
            max_format_errors: default_format_errors(),
            workdir: default_workdir(),
            grading: GradingProfile::default(),
            preset: None,
            sandbox_env: Vec::new(),
        }
    }
}

/// The command that submits in the bash-only scaffold: its output's first line is this, with
/// exit code 0 (as in mini-swe-agent).
pub const SUBMIT_SENTINEL: &str = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";
