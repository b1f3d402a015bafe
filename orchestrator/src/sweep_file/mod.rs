//! The sweep file: a TOML description of a sweep (instances x agents x critics x repeats),
//! parsed and validated into typed specs.
//!
//! `examples/full-sweep.toml` documents every key. Errors name the file, the line and the key
//! path (`sweep.toml:12: agents[1].base_url: not a valid http(s) URL ("ftp://x")`), unknown keys
//! are rejected with a suggestion, and money is kept exact as `Decimal`. The parser reads
//! toml_edit's spanned tree directly (see `reader`) rather than going through serde, so every
//! error knows its path and line without mapping spans back to keys.

mod inline;
mod reader;
#[cfg(test)]
mod tests;

pub use inline::{inline_agent_configs, inline_template_files};

use protocol::{
    AgentExecSpec, AgentLimits, AgentSpec, CriticEvent, CriticKind, CriticParams, CriticSettings, CriticSpec,
    EvaluateSpec, ExecutorKind, ExecutorSpec, GradingProfile, HeuristicRules, PatchSource, PlaceholderSpec,
    Price, PromptTemplates, RemoteCritic, Sampling, SandboxSettings, Scaffold,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use toml_edit::ImDocument;

use reader::{suggest, Source, Table};

/// A parsed, validated sweep file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepFile {
    pub name: String,
    pub description: Option<String>,
    pub repeats: u32,
    /// Infrastructure attempts per run before it ends as `error`.
    pub max_attempts: u32,
    /// Dollars the whole sweep may spend.
    pub budget_usd: Option<Decimal>,
    /// Cap on this sweep's runs running at once.
    pub max_running: Option<u32>,
    pub dataset: DatasetRef,
    pub select: Selection,
    pub executor: ExecutorSpec,
    /// How sandboxes are made (image names, resources, network).
    #[serde(default)]
    pub sandbox: SandboxSettings,
    pub agents: Vec<AgentSpec>,
    pub critics: Vec<CriticSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRef {
    /// Name of an imported dataset.
    pub name: String,
    /// File to import it from when it does not exist yet, as written: relative paths are
    /// relative to the sweep file, and resolving them is the caller's job.
    pub path: Option<String>,
}

/// Which instances of the dataset to run. The filters are applied elsewhere; here they are
/// only checked (the regex compiles, the sample is not empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub ids: Vec<String>,
    pub repos: Vec<String>,
    pub difficulty: Vec<String>,
    pub id_regex: Option<String>,
    /// Seeded random sample taken after the filters.
    pub sample: Option<Sample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub n: u32,
    pub seed: u64,
}

/// What is wrong with a sweep file, and where. The message starts with the key path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct Error {
    pub file: String,
    /// 1-based; None when the problem has no place in the file (e.g. no agents at all).
    pub line: Option<usize>,
    pub message: String,
}

impl SweepFile {
    /// SHA-256 (hex) of the spec's canonical JSON, leaving out what does not change what runs:
    /// the description and where the dataset file lies. Key order, whitespace and comments of
    /// the TOML do not matter, nor how an amount was spelled (1.5, 1.50, "1.5").
    pub fn config_hash(&self) -> String {
        let mut spec = serde_json::to_value(self).expect("a sweep file always serializes");
        let top = spec.as_object_mut().expect("a sweep file serializes to an object");
        top.remove("description");
        if let Some(dataset) = top.get_mut("dataset").and_then(Json::as_object_mut) {
            dataset.remove("path");
        }
        let mut canonical = String::new();
        write_canonical(&spec, &mut canonical);
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }
}

/// JSON with object keys sorted at every level, whatever order the map kept them in
/// (serde_json's `preserve_order` may be on elsewhere in the build, and Postgres' jsonb
/// reorders keys).
fn write_canonical(value: &Json, out: &mut String) {
    match value {
        Json::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Parses and validates a sweep file; `file_name` is only used in error messages.
pub fn parse(text: &str, file_name: &str) -> Result<SweepFile, Error> {
    let src = Source { text, file: file_name };
    let doc = ImDocument::parse(text).map_err(|e| {
        src.error(e.span(), format!("not valid TOML: {}", e.message().trim().replace('\n', "; ")))
    })?;
    sweep(&Table::root(&src, doc.as_table()))
}

const TOP_KEYS: &[&str] = &[
    "name",
    "description",
    "repeats",
    "max_attempts",
    "budget_usd",
    "max_running",
    "dataset",
    "select",
    "executor",
    "sandbox",
    "agents",
    "critics",
];
const DATASET_KEYS: &[&str] = &["name", "path"];
const SELECT_KEYS: &[&str] = &["ids", "repos", "difficulty", "id_regex", "sample"];
const SAMPLE_KEYS: &[&str] = &["n", "seed"];
const PLACEHOLDER_KEYS: &[&str] =
    &["kind", "duration_ms", "steps", "resolve_probability", "cost_per_step_usd", "seed"];
const AGENT_KEYS: &[&str] = &[
    "name",
    "base_url",
    "model",
    "api_key_env",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "stop",
    "price",
    "max_steps",
    "max_cost_usd",
    "max_wall_time_s",
    "max_concurrency",
    "extra_body",
    "tokenizer",
    "agent_config",
];
/// What `steer sweep submit` puts under an agent's `agent_config`: the path as written, the
/// file's text, and the `agents/default.py` of the mini-swe-agent package beside it (if found).
const AGENT_CONFIG_KEYS: &[&str] = &["path", "yaml", "code"];
const PRICE_KEYS: &[&str] = &["input_per_mtok", "output_per_mtok", "cached_input_per_mtok"];
const CRITIC_KEYS: &[&str] = &["name", "kind"];
const CRITIC_POLICY_KEYS: &[&str] = &[
    "preset",
    "every_k",
    "events",
    "max_interventions",
    "score_threshold",
    "stop_on_status",
    "stop_below_score",
    "history",
    "fold_chars",
    "step_aware_after",
    "context_tokens",
    "observation_max_chars",
    "feedback_template",
    "system_prompt",
    "prefix_from",
    "prefix_steps",
    "trained_on",
];
const HEURISTIC_KEYS: &[&str] =
    &["repeated_command", "repeated_error", "test_file_edited", "submit_without_tests"];
const REMOTE_CRITIC_KEYS: &[&str] =
    &["base_url", "model", "api_key_env", "temperature", "top_p", "max_tokens", "seed", "stop", "price"];
const ONNX_CRITIC_KEYS: &[&str] = &["model", "feedback", "max_new_tokens", "temperature", "seed", "stop"];
/// Critic kinds `protocol::CriticKind` knows (a test keeps this list in step with it).
const CRITIC_KINDS: &[&str] = &["none", "heuristic", "remote", "onnx"];
/// Critic kinds that are planned but not built yet, so they get a clearer message than "unknown".
const PLANNED_CRITIC_KINDS: &[&str] = &[];
const EVALUATE_KEYS: &[&str] = &["kind", "profile", "patch"];
const SANDBOX_KEYS: &[&str] = &[
    "network",
    "cpus",
    "memory_mb",
    "pids_limit",
    "disk_mb",
    "image_registry",
    "image_namespace",
    "image_tag",
    "image_overrides",
    "eval_timeout_s",
];
const AGENT_EXECUTOR_KEYS: &[&str] = &[
    "kind",
    "preset",
    "scaffold",
    "command_timeout_s",
    "observation_max_chars",
    "edit_context_lines",
    "max_format_errors",
    "workdir",
    "grading",
    "system_template",
    "instance_template",
    "observation_template",
    "format_error_template",
];
/// The template keys, and the `*_file` keys `steer sweep submit` replaces by them.
pub(crate) const TEMPLATE_KEYS: [&str; 4] =
    ["system_template", "instance_template", "observation_template", "format_error_template"];
const PRESETS: &[&str] = &["paper"];
/// The sandbox variables of mini-swe-agent's SWE-bench configurations (1.x and 2.x alike),
/// which the paper preset sets.
const PAPER_SANDBOX_ENV: &[&str] =
    &["PAGER=cat", "MANPAGER=cat", "LESS=-R", "PIP_PROGRESS_BAR=off", "TQDM_DISABLE=1"];

fn sweep(t: &Table) -> Result<SweepFile, Error> {
    t.only(TOP_KEYS)?;
    let name = name(t, "name")?;
    let description = t.string("description")?;
    let repeats = t.integer("repeats", 1)?.unwrap_or(1);
    let max_attempts = t.integer("max_attempts", 1)?.unwrap_or(3);
    let budget_usd = t.money("budget_usd")?;
    let max_running = t.integer("max_running", 1)?;
    let dataset = dataset(&t.required("dataset", t.table("dataset")?)?)?;
    let select = match t.table("select")? {
        Some(select) => selection(&select)?,
        None => Selection::default(),
    };
    let executor = match t.table("executor")? {
        Some(executor_table) => executor(&executor_table)?,
        None => ExecutorSpec::Placeholder(PlaceholderSpec::default()),
    };
    let sandbox = match t.table("sandbox")? {
        Some(table) => sandbox(&table)?,
        None => SandboxSettings::default(),
    };

    let preset = match &executor {
        ExecutorSpec::Agent(spec) => spec.preset.clone(),
        _ => None,
    };
    // Only the agent executor calls the agents' models; the others never contact them.
    let agents_call_models = matches!(executor, ExecutorSpec::Agent(_));
    let mut agents: Vec<AgentSpec> = Vec::new();
    for table in t.tables("agents")? {
        let spec = agent(&table, preset.as_deref(), agents_call_models)?;
        if agents.iter().any(|a| a.name == spec.name) {
            return Err(table.err("name", format!("another agent is already named `{}`", spec.name)));
        }
        agents.push(spec);
    }
    if agents.is_empty() {
        return Err(t.err("agents", "no agents: add at least one `[[agents]]` table"));
    }

    let mut critics: Vec<CriticSpec> = Vec::new();
    for table in t.tables("critics")? {
        let spec = critic(&table)?;
        if critics.iter().any(|c| c.name == spec.name) {
            return Err(table.err("name", format!("another critic is already named `{}`", spec.name)));
        }
        critics.push(spec);
    }
    check_prefixes(&t.tables("critics")?, &critics)?;
    if critics.is_empty() {
        return Err(t.err(
            "critics",
            "no critics: add at least one `[[critics]]` table (kind = \"none\" runs the agent alone)",
        ));
    }

    Ok(SweepFile {
        name,
        description,
        repeats,
        max_attempts,
        budget_usd,
        max_running,
        dataset,
        select,
        executor,
        sandbox,
        agents,
        critics,
    })
}

/// More CPUs than any host has: past it, `cpus` is a typo (and would overflow Docker's nano-CPUs).
const MAX_CPUS: f64 = 1024.0;

fn sandbox(t: &Table) -> Result<SandboxSettings, Error> {
    t.only(SANDBOX_KEYS)?;
    let d = SandboxSettings::default();
    Ok(SandboxSettings {
        network: t.boolean("network")?.unwrap_or(d.network),
        // Unset limits get the defaults here, so the stored spec says what every container gets.
        cpus: t.float("cpus", |x| x > 0.0 && x <= MAX_CPUS, "greater than 0 and at most 1024")?.or(d.cpus),
        memory_mb: t.integer("memory_mb", 16)?.or(d.memory_mb),
        pids_limit: t.integer("pids_limit", 16)?.or(d.pids_limit),
        disk_mb: t.integer("disk_mb", 64)?.or(d.disk_mb),
        image_registry: t.string("image_registry")?,
        image_namespace: t.string("image_namespace")?.unwrap_or(d.image_namespace),
        image_tag: t.string("image_tag")?.unwrap_or(d.image_tag),
        image_overrides: t.string_map("image_overrides")?,
        eval_timeout_s: t.integer("eval_timeout_s", 1)?.unwrap_or(d.eval_timeout_s),
    })
}

/// Checks a name of a sweep, agent, critic or dataset: it ends up in run listings, reports and
/// paths, so it is kept to letters, digits, `.`, `_` and `-`.
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || !name.chars().all(allowed) {
        return Err(InvalidName { name: name.to_string() });
    }
    Ok(())
}

/// A name with characters other than letters, digits, `.`, `_` and `-` (or none at all).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name:?} is not a valid name (use letters, digits, `.`, `_` and `-`)")]
pub struct InvalidName {
    pub name: String,
}

/// A required name of sweep, agent or critic.
fn name(t: &Table, key: &str) -> Result<String, Error> {
    let name = t.required(key, t.string(key)?)?;
    validate_name(&name).map_err(|e| t.err(key, e))?;
    Ok(name)
}

fn dataset(t: &Table) -> Result<DatasetRef, Error> {
    t.only(DATASET_KEYS)?;
    let name = t.required("name", t.string("name")?)?;
    if name.trim().is_empty() {
        return Err(t.err("name", "must not be empty"));
    }
    let path = t.string("path")?;
    if path.as_deref().is_some_and(|p| p.trim().is_empty()) {
        return Err(t.err("path", "must not be empty (leave it out instead)"));
    }
    Ok(DatasetRef { name, path })
}

fn selection(t: &Table) -> Result<Selection, Error> {
    t.only(SELECT_KEYS)?;
    let id_regex = t.string("id_regex")?;
    if let Some(Err(e)) = id_regex.as_deref().map(regex::Regex::new) {
        // regex's message draws a caret under the pattern over several lines; keep its last.
        let reason =
            e.to_string().lines().last().unwrap_or_default().trim_start_matches("error: ").to_owned();
        return Err(t.err("id_regex", format!("not a valid regular expression ({reason})")));
    }
    let sample = match t.table("sample")? {
        Some(s) => {
            s.only(SAMPLE_KEYS)?;
            let n = s.required("n", s.integer("n", 1)?)?;
            Some(Sample { n, seed: s.integer("seed", 0)?.unwrap_or(0) })
        }
        None => None,
    };
    Ok(Selection {
        ids: t.strings("ids")?,
        repos: t.strings("repos")?,
        difficulty: t.strings("difficulty")?,
        id_regex,
        sample,
    })
}

fn executor(t: &Table) -> Result<ExecutorSpec, Error> {
    let kind_name = t.required("kind", t.string("kind")?)?;
    let Ok(kind) = kind_name.parse::<ExecutorKind>() else {
        let known: Vec<&str> = ExecutorKind::ALL.iter().map(|k| k.as_str()).collect();
        return Err(t.err("kind", unknown_kind("executor", &kind_name, &known)));
    };
    match kind {
        ExecutorKind::Placeholder => {
            t.only(PLACEHOLDER_KEYS)?;
            let default = PlaceholderSpec::default();
            let in_unit = |p: f64| (0.0..=1.0).contains(&p);
            Ok(ExecutorSpec::Placeholder(PlaceholderSpec {
                duration_ms: t.integer("duration_ms", 0)?.unwrap_or(default.duration_ms),
                steps: t.integer("steps", 0)?.unwrap_or(default.steps),
                resolve_probability: t
                    .float("resolve_probability", in_unit, "between 0 and 1")?
                    .unwrap_or(default.resolve_probability),
                cost_per_step_usd: t.money("cost_per_step_usd")?.unwrap_or(default.cost_per_step_usd),
                seed: t.integer("seed", 0)?.unwrap_or(default.seed),
            }))
        }
        ExecutorKind::Evaluate => {
            t.only(EVALUATE_KEYS)?;
            let profile = grading_profile(t, "profile")?;
            let patch = match t.string("patch")?.as_deref() {
                None | Some("prediction") => PatchSource::Prediction,
                Some("gold") => PatchSource::Gold,
                Some(other) => {
                    return Err(
                        t.err("patch", format!("`{other}` is not a patch source (gold or prediction)"))
                    )
                }
            };
            Ok(ExecutorSpec::Evaluate(EvaluateSpec { profile, patch }))
        }
        ExecutorKind::Agent => agent_executor(t).map(ExecutorSpec::Agent),
    }
}

/// Sampling keys of a model's table; `defaults` (temperature, max tokens) apply where unset.
fn sampling(t: &Table, defaults: Option<(f64, u32)>) -> Result<Sampling, Error> {
    Ok(Sampling {
        temperature: t
            .float("temperature", |x| (0.0..=2.0).contains(&x), "between 0 and 2")?
            .or(defaults.map(|d| d.0)),
        top_p: t.float("top_p", |x| x > 0.0 && x <= 1.0, "greater than 0 and at most 1")?,
        max_tokens: t.integer("max_tokens", 1)?.or(defaults.map(|d| d.1)),
        seed: t.integer("seed", i64::MIN)?,
        stop: t.strings("stop")?,
    })
}

/// How to write a price, for the errors about one.
const PRICE_FORMS: &str = "set price = { input_per_mtok = ..., output_per_mtok = ... } (dollars per \
     million tokens), or price = \"free\" for an endpoint that costs nothing";

/// A model's `price`: a table of dollars per million tokens, or `"free"` (zero prices, said
/// explicitly). `caller` names who calls the model ("agent", "critic") when the price is
/// required: an unpriced model that is called would cost $0 and no budget could stop it, so
/// a missing price fails closed. `None`: the model is never called, and a missing price is zero.
fn price(t: &Table, caller: Option<&str>) -> Result<Price, Error> {
    if t.is_string("price") {
        // The value is not quoted: a misplaced key must not reach logs.
        return match t.string("price")?.as_deref() {
            Some("free") => Ok(Price::default()),
            _ => Err(t.err("price", format!("the only word a price may be is \"free\"; {PRICE_FORMS}"))),
        };
    }
    let table = t
        .table("price")
        .map_err(|_| t.err("price", format!("expected a table of prices or \"free\"; {PRICE_FORMS}")))?;
    Ok(match (table, caller) {
        (Some(p), _) => {
            p.only(PRICE_KEYS)?;
            let input_per_mtok = p.required("input_per_mtok", p.money("input_per_mtok")?)?;
            Price {
                input_per_mtok,
                output_per_mtok: p.required("output_per_mtok", p.money("output_per_mtok")?)?,
                // Without a cached price, cached tokens cost full price: cost caps stay safe.
                cached_input_per_mtok: p.money("cached_input_per_mtok")?.unwrap_or(input_per_mtok),
            }
        }
        (None, Some(caller)) => {
            let caps = if caller == "agent" { "max_cost_usd and budget_usd" } else { "budget_usd" };
            return Err(t.err(
                "price",
                format!(
                    "required: this {caller} calls a model, and without a price its calls would \
                     cost $0, so {caps} could not stop it; {PRICE_FORMS}"
                ),
            ));
        }
        (None, None) => Price::default(),
    })
}

fn grading_profile(t: &Table, key: &str) -> Result<GradingProfile, Error> {
    match t.string(key)?.as_deref() {
        None | Some("v5") => Ok(GradingProfile::V5),
        Some("v4") => Ok(GradingProfile::V4),
        Some(other) => Err(t.err(key, format!("`{other}` is not a grading profile (v5 or v4)"))),
    }
}

/// The `agent` executor. A preset sets defaults that the keys given here override.
fn agent_executor(t: &Table) -> Result<AgentExecSpec, Error> {
    for key in TEMPLATE_KEYS {
        let file_key = format!("{key}_file");
        if t.string(&file_key).is_ok_and(|v| v.is_some()) {
            return Err(t.err(
                &file_key,
                format!(
                    "template files are read by `steer sweep submit`, which puts their text in `{key}`; \
                     submit the sweep with it, or give the template's text in `{key}`"
                ),
            ));
        }
    }
    t.only(AGENT_EXECUTOR_KEYS)?;
    let preset = t.string("preset")?;
    let mut spec = AgentExecSpec::default();
    match preset.as_deref() {
        None => {}
        Some("paper") => {
            spec.edit_context_lines = Some(5);
            // mini-swe-agent 1.x, which the paper's agent forked: no limit on format errors,
            // and its sandbox variables (pagers off, no progress bars).
            spec.max_format_errors = u32::MAX;
            spec.sandbox_env = PAPER_SANDBOX_ENV.iter().map(|v| v.to_string()).collect();
        }
        Some(other) => {
            let hint = suggest(other, PRESETS).map(|c| format!("; did you mean `{c}`?")).unwrap_or_default();
            return Err(t.err("preset", format!("unknown preset `{other}` (this build has: paper){hint}")));
        }
    }
    spec.preset = preset;
    spec.scaffold = match t.string("scaffold")?.as_deref() {
        None => spec.scaffold,
        Some("bash_only") => Scaffold::BashOnly,
        Some("tool_calling") => Scaffold::ToolCalling,
        Some(other) => {
            return Err(t.err("scaffold", format!("`{other}` is not a scaffold (bash_only or tool_calling)")))
        }
    };
    spec.command_timeout_s = t.integer("command_timeout_s", 1)?.unwrap_or(spec.command_timeout_s);
    spec.observation_max_chars =
        t.integer("observation_max_chars", 100)?.unwrap_or(spec.observation_max_chars);
    if let Some(lines) = t.integer::<i64>("edit_context_lines", -1)? {
        // -1 turns the preset's edit context off.
        spec.edit_context_lines = u32::try_from(lines).ok();
    }
    spec.max_format_errors = t.integer("max_format_errors", 0)?.unwrap_or(spec.max_format_errors);
    if let Some(workdir) = t.string("workdir")? {
        if !workdir.starts_with('/') {
            return Err(t.err("workdir", format!("must be an absolute path in the image ({workdir:?})")));
        }
        spec.workdir = workdir;
    }
    spec.grading = grading_profile(t, "grading")?;
    let defaults = PromptTemplates::default();
    spec.templates = PromptTemplates {
        system: t.string("system_template")?.unwrap_or(defaults.system),
        instance: t.string("instance_template")?.unwrap_or(defaults.instance),
        observation: t.string("observation_template")?.unwrap_or(defaults.observation),
        format_error: t.string("format_error_template")?.unwrap_or(defaults.format_error),
    };
    protocol::prompts::check(&spec.templates)
        .map_err(|e| t.err(&format!("{}_template", e.name), format!("template error: {}", e.message)))?;
    Ok(spec)
}

/// An `[[agents]]` table; `calls_model`: whether the executor calls it (then it needs a price).
fn agent(t: &Table, preset: Option<&str>, calls_model: bool) -> Result<AgentSpec, Error> {
    t.only(AGENT_KEYS)?;
    let name = name(t, "name")?;
    let base_url = t.required("base_url", t.string("base_url")?)?;
    check_base_url(t, &base_url)?;
    let model = t.required("model", t.string("model")?)?;
    let api_key_env = t.string("api_key_env")?;
    if let Some(var) = &api_key_env {
        check_api_key_env(t, var)?;
    }
    // The paper's settings: temperature 0, 2,048 output tokens a turn, 150 steps, $6 a run.
    let paper = preset == Some("paper");
    let sampling = sampling(t, paper.then_some((0.0, 2048)))?;
    let price = price(t, calls_model.then_some("agent"))?;
    let agent_config = agent_config(t)?;
    let default = AgentLimits::default();
    let mut limits = AgentLimits {
        max_steps: t.integer("max_steps", 1)?.unwrap_or(if paper { 150 } else { default.max_steps }),
        max_cost_usd: t.money("max_cost_usd")?.or(if paper {
            Some(Decimal::from(6))
        } else {
            default.max_cost_usd
        }),
        // Neither the paper nor mini-swe-agent limits wall time: the paper preset sets none (0).
        max_wall_time_s: t.integer("max_wall_time_s", 1)?.unwrap_or(if paper {
            0
        } else {
            default.max_wall_time_s
        }),
    };
    // A mini-swe-agent file's limits stand where the agent sets none (0 there means none).
    // (The paper preset's numbers are the sweep's own choice and stand too.)
    if let Some(config) = agent_config.as_ref().filter(|_| !paper) {
        if !t.has("max_steps") {
            limits.max_steps = if config.step_limit == 0 { u32::MAX } else { config.step_limit };
        }
        if !t.has("max_cost_usd") {
            limits.max_cost_usd = (!config.cost_limit.is_zero()).then_some(config.cost_limit);
        }
        if !t.has("max_wall_time_s") {
            limits.max_wall_time_s = config.wall_time_limit_s;
        }
    }
    let max_concurrency = t.integer("max_concurrency", 1)?;
    let extra_body = match t.table("extra_body")? {
        Some(body) => {
            let map = body.others_as_json(&[])?;
            for reserved in ["model", "messages", "tools", "stream"] {
                if map.contains_key(reserved) {
                    return Err(
                        body.err(reserved, format!("`{reserved}` is set by the agent loop, not here"))
                    );
                }
            }
            map
        }
        None => Default::default(),
    };
    let tokenizer = t.string("tokenizer")?;
    if tokenizer.as_deref().is_some_and(|p| p.trim().is_empty()) {
        return Err(t.err("tokenizer", "must not be empty (leave it out instead)"));
    }
    Ok(AgentSpec {
        name,
        base_url,
        model,
        api_key_env,
        sampling,
        price,
        limits,
        max_concurrency,
        extra_body,
        tokenizer,
        agent_config,
    })
}

/// An agent's `agent_config`: a mini-swe-agent configuration file that `steer sweep submit`
/// read and put in the sweep (`{path, yaml, code}`), read here into the effective configuration
/// stored with the sweep.
fn agent_config(t: &Table) -> Result<Option<protocol::mini::MiniConfig>, Error> {
    if t.is_string("agent_config") {
        return Err(t.err(
            "agent_config",
            "mini-swe-agent configuration files are read by `steer sweep submit`, which puts their text \
             in the sweep; submit the sweep with it",
        ));
    }
    let Some(table) = t.table("agent_config")? else { return Ok(None) };
    table.only(AGENT_CONFIG_KEYS)?;
    let path = table.required("path", table.string("path")?)?;
    let yaml = table.required("yaml", table.string("yaml")?)?;
    let code = table.string("code")?;
    protocol::mini::MiniConfig::parse(&path, &yaml, code.as_deref())
        .map(Some)
        .map_err(|e| t.err("agent_config", format!("{path}: {e}")))
}

fn critic(t: &Table) -> Result<CriticSpec, Error> {
    let name = name(t, "name")?;
    let kind_name = t.required("kind", t.string("kind")?)?;
    // protocol decides which kinds exist; the lists here only word the error.
    let Ok(kind) = kind_name.parse::<CriticKind>() else {
        let message = if PLANNED_CRITIC_KINDS.contains(&kind_name.as_str()) {
            format!("critic kind `{kind_name}` is not available in this build yet")
        } else {
            unknown_kind("critic", &kind_name, CRITIC_KINDS)
        };
        return Err(t.err("kind", message));
    };
    let settings = match kind {
        CriticKind::None => {
            if let Some(key) = t.others_as_json(CRITIC_KEYS)?.keys().next() {
                return Err(t.err(key, "critic kind `none` takes no parameters"));
            }
            CriticSettings::None
        }
        CriticKind::Heuristic => {
            t.only(&[CRITIC_KEYS, CRITIC_POLICY_KEYS, HEURISTIC_KEYS].concat())?;
            let mut params = critic_params(
                t,
                CriticParams { every_k: Some(1), events: vec![CriticEvent::Submit], ..Default::default() },
            )?;
            let d = HeuristicRules::default();
            params.heuristic = Some(HeuristicRules {
                repeated_command: t.integer("repeated_command", 2)?.unwrap_or(d.repeated_command),
                repeated_error: t.integer("repeated_error", 2)?.unwrap_or(d.repeated_error),
                test_file_edited: t.boolean("test_file_edited")?.unwrap_or(d.test_file_edited),
                submit_without_tests: t.boolean("submit_without_tests")?.unwrap_or(d.submit_without_tests),
            });
            CriticSettings::Heuristic(params)
        }
        CriticKind::Onnx => {
            t.only(&[CRITIC_KEYS, CRITIC_POLICY_KEYS, ONNX_CRITIC_KEYS].concat())?;
            let mut params = critic_params(t, CriticParams::default())?;
            let model = t.required("model", t.string("model")?)?;
            if model.trim().is_empty() {
                return Err(t.err("model", "must name the model directory (a path on the workers)"));
            }
            let defaults: protocol::OnnxCritic =
                serde_json::from_value(serde_json::json!({ "model": model }))
                    .expect("defaults of an onnx critic");
            params.onnx = Some(protocol::OnnxCritic {
                model,
                feedback: t.string("feedback")?.unwrap_or(defaults.feedback),
                max_new_tokens: t.integer("max_new_tokens", 1)?.unwrap_or(defaults.max_new_tokens),
                temperature: t
                    .float("temperature", |x| (0.0..=2.0).contains(&x), "between 0 and 2")?
                    .unwrap_or(0.0),
                seed: t.integer("seed", 0)?.unwrap_or(0),
                stop: t.strings("stop")?,
            });
            if params.every_k.is_none() && params.events.is_empty() {
                return Err(t.err(
                    "every_k",
                    "this critic would never be asked: set `every_k` or `events` (or `preset = \"paper\"`)",
                ));
            }
            CriticSettings::Onnx(params)
        }
        CriticKind::Remote => {
            t.only(&[CRITIC_KEYS, CRITIC_POLICY_KEYS, REMOTE_CRITIC_KEYS].concat())?;
            let paper = t.string("preset")?.as_deref() == Some("paper");
            let mut params = critic_params(t, CriticParams::default())?;
            let base_url = t.required("base_url", t.string("base_url")?)?;
            check_base_url(t, &base_url)?;
            let api_key_env = t.string("api_key_env")?;
            if let Some(var) = &api_key_env {
                check_api_key_env(t, var)?;
            }
            params.remote = Some(RemoteCritic {
                base_url,
                model: t.required("model", t.string("model")?)?,
                api_key_env,
                // The paper decodes its critic greedily, up to 4,096 tokens.
                sampling: sampling(t, paper.then_some((0.0, 4096)))?,
                // A remote critic calls its model whenever it is asked (`steer critic` too).
                price: price(t, Some("critic"))?,
            });
            if params.every_k.is_none() && params.events.is_empty() {
                return Err(t.err(
                    "every_k",
                    "this critic would never be asked: set `every_k` or `events` (or `preset = \"paper\"`)",
                ));
            }
            CriticSettings::Remote(params)
        }
    };
    Ok(CriticSpec { name, settings })
}

/// The settings every critic kind has; `defaults` are the kind's.
fn critic_params(t: &Table, defaults: CriticParams) -> Result<CriticParams, Error> {
    let mut p = defaults;
    match t.string("preset")?.as_deref() {
        None => {}
        // The paper: every 5 steps, its own last 5 critiques, earlier feedback folded at 1,500
        // characters, the step-budget note from step 100.
        Some("paper") => {
            p.preset = Some("paper".into());
            p.every_k = Some(5);
            p.history = 5;
            p.fold_chars = 1500;
            p.step_aware_after = Some(100);
        }
        Some(other) => {
            return Err(t.err("preset", format!("unknown critic preset `{other}` (this build has: paper)")))
        }
    }
    if let Some(k) = t.integer("every_k", 0)? {
        p.every_k = (k > 0).then_some(k);
    }
    if t.has("events") {
        p.events = Vec::new();
        for event in t.strings("events")? {
            let known = CriticEvent::ALL.iter().find(|e| e.as_str() == event);
            let Some(e) = known else {
                let names: Vec<&str> = CriticEvent::ALL.iter().map(|e| e.as_str()).collect();
                return Err(t.err("events", format!("unknown event `{event}` (known: {})", names.join(", "))));
            };
            p.events.push(*e);
        }
    }
    p.max_interventions = t.integer("max_interventions", 1)?.or(p.max_interventions);
    p.stop_on_status = t.string("stop_on_status")?.or(p.stop_on_status);
    let scorer = t.string("kind")?.as_deref() == Some("onnx");
    for key in ["score_threshold", "stop_below_score"] {
        if t.has(key) && !scorer {
            return Err(t.err(key, "applies to scorer critics (kind `onnx`) only"));
        }
    }
    let unit = |x: f64| (0.0..=1.0).contains(&x);
    p.score_threshold = t.float("score_threshold", unit, "between 0 and 1")?.or(p.score_threshold);
    p.stop_below_score = t.float("stop_below_score", unit, "between 0 and 1")?.or(p.stop_below_score);
    p.history = t.integer("history", 0)?.unwrap_or(p.history);
    p.fold_chars = t.integer("fold_chars", 1)?.unwrap_or(p.fold_chars);
    if let Some(after) = t.integer::<i64>("step_aware_after", -1)? {
        p.step_aware_after = u32::try_from(after).ok();
    }
    p.context_tokens = t.integer("context_tokens", 256)?.unwrap_or(p.context_tokens);
    p.observation_max_chars = t.integer("observation_max_chars", 100)?.unwrap_or(p.observation_max_chars);
    if let Some(template) = t.string("feedback_template")? {
        protocol::feedback::check(&template).map_err(|e| t.err("feedback_template", e))?;
        p.feedback_template = template;
    }
    p.system_prompt = t.string("system_prompt")?.unwrap_or(p.system_prompt);
    p.prefix_from = t.string("prefix_from")?;
    p.prefix_steps = t.integer("prefix_steps", 1)?;
    p.trained_on = t.string("trained_on")?;
    if p.trained_on.as_deref().is_some_and(|a| a.trim().is_empty()) {
        return Err(t.err("trained_on", "names the agent whose trajectories trained the critic; it is empty"));
    }
    if p.trained_on.is_some() && t.string("kind")?.as_deref() == Some("heuristic") {
        return Err(
            t.err("trained_on", "a rule-based critic (kind `heuristic`) is not trained on trajectories")
        );
    }
    if p.prefix_steps.is_some() && p.prefix_from.is_none() {
        return Err(
            t.err("prefix_steps", "needs `prefix_from` (the base condition whose steps are replayed)")
        );
    }
    Ok(p)
}

/// A critic's `prefix_from` names another condition of the sweep that replays nothing itself.
fn check_prefixes(tables: &[Table], critics: &[CriticSpec]) -> Result<(), Error> {
    let base_of = |c: &CriticSpec| c.params().and_then(|p| p.prefix_from.clone());
    for (table, critic) in tables.iter().zip(critics) {
        let Some(base) = base_of(critic) else { continue };
        let found = critics.iter().find(|c| c.name == base);
        let problem = match found {
            None => Some(format!("no critic condition is named `{base}`")),
            Some(c) if c.name == critic.name => Some("a condition cannot replay itself".to_string()),
            Some(c) if base_of(c).is_some() => {
                Some(format!("`{base}` replays a prefix itself; name a condition that starts fresh"))
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            return Err(table.err("prefix_from", problem));
        }
    }
    Ok(())
}

fn unknown_kind(what: &str, kind: &str, known: &[&str]) -> String {
    let hint = match suggest(kind, known) {
        Some(close) => format!("; did you mean `{close}`?"),
        None => format!(" (this build has: {})", known.join(", ")),
    };
    format!("unknown {what} kind `{kind}`{hint}")
}

fn check_base_url(t: &Table, url: &str) -> Result<(), Error> {
    // Credentials in a URL would be stored with the sweep and shown in errors: say so without
    // echoing the URL.
    if url.contains('@') {
        return Err(t.err(
            "base_url",
            "must not contain credentials; name the environment variable holding the key in `api_key_env`",
        ));
    }
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
    let host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']');
    match host {
        Some(host)
            if !host.is_empty() && host.chars().all(host_char) && !url.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(t.err("base_url", format!("not a valid http(s) URL ({url:?})"))),
    }
}

/// `api_key_env` names the variable holding the key. The value is never echoed: if it is the
/// key itself, the error message must not carry it into logs.
fn check_api_key_env(t: &Table, var: &str) -> Result<(), Error> {
    if looks_like_secret(var) {
        return Err(t.err(
            "api_key_env",
            "this looks like an API key itself; put the NAME of the environment variable that \
             holds the key here (e.g. \"OPENAI_API_KEY\"), never the key",
        ));
    }
    if !protocol::keys::is_var_name(var) {
        return Err(t.err(
            "api_key_env",
            "not an environment variable name (letters, digits and `_`, not starting with a \
             digit); put the NAME of the variable that holds the key here",
        ));
    }
    if protocol::keys::is_reserved(var) {
        // A worker's own settings (its token among them) must never be sent to an endpoint.
        return Err(t.err(
            "api_key_env",
            format!(
                "`{var}` is one of the worker's own settings (`{}*`), which sweeps may never read; \
                 name the variable that holds the model's API key",
                protocol::keys::RESERVED_PREFIX
            ),
        ));
    }
    Ok(())
}

fn looks_like_secret(value: &str) -> bool {
    const KEY_PREFIXES: &[&str] =
        &["sk-", "sk_", "hf_", "ghp_", "gho_", "github_pat_", "xai-", "gsk_", "AKIA", "AIza", "Bearer "];
    let has = |f: fn(&char) -> bool| value.chars().any(|c| f(&c));
    // Variable names are words (OPENAI_API_KEY); keys are long and random.
    let random_looking = value.len() >= 20
        && has(char::is_ascii_lowercase)
        && has(char::is_ascii_uppercase)
        && has(char::is_ascii_digit);
    let long_unbroken = value.len() >= 32 && !value.contains('_');
    KEY_PREFIXES.iter().any(|p| value.starts_with(p)) || random_looking || long_unbroken
}
