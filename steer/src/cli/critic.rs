//! `steer critic run`: one critic call on a saved trajectory, printed as JSON, for trying a
//! critic condition before a sweep.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use worker::agent::hook::{Guidance, Moment, StepView};

use orchestrator::sweep_file;

#[derive(Subcommand, Debug)]
pub enum CriticCommand {
    /// Ask a critic condition of a sweep file about a saved trajectory (the format of
    /// `steer export trajectories` and `GET /api/v1/runs/{id}/trajectory`), and print its verdict.
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The sweep file holding the critic condition.
    #[arg(long, required_unless_present = "model", conflicts_with = "model")]
    pub sweep: Option<PathBuf>,
    /// Or: a local critic model directory (kind `onnx`, default settings).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The critic condition's name (default: the first one that is not `none`).
    #[arg(long)]
    pub critic: Option<String>,
    /// The trajectory (a mini-swe-agent trajectory: `messages` and `info`).
    #[arg(long)]
    pub trajectory: PathBuf,
    /// Ask as if the agent were submitting (the critic's `submit` review).
    #[arg(long)]
    pub before_submit: bool,
}

pub async fn run(cmd: CriticCommand) -> anyhow::Result<ExitCode> {
    let CriticCommand::Run(args) = cmd;
    let (critic, max_steps) = match (&args.sweep, &args.model) {
        (Some(path), _) => from_sweep(path, args.critic.as_deref())?,
        (None, Some(dir)) => (model_critic(dir)?, 150),
        (None, None) => anyhow::bail!("give --sweep FILE or --model DIR"),
    };
    let critic = &critic;
    // Run by a user on their own trajectory: the critic may read the key variable its own file
    // names (never a `STEER_*` setting, which the sweep parser refuses).
    let allow = protocol::keys::KeyAllowList::new(critic.api_key_env()).map_err(anyhow::Error::msg)?;
    let keys = worker::llm::Keyring::capture(allow, super::serve::process_env());
    let Some(mut hook) = worker::critic::critic_hook(critic, &keys).map_err(anyhow::Error::msg)? else {
        anyhow::bail!("critic `{}` is of kind `none`: it never says anything", critic.name);
    };

    let raw = std::fs::read_to_string(&args.trajectory)
        .with_context(|| format!("reading {}", args.trajectory.display()))?;
    let trajectory: Value =
        serde_json::from_str(&raw).with_context(|| format!("{}: not JSON", args.trajectory.display()))?;
    let messages = trajectory.get("messages").and_then(Value::as_array).with_context(|| {
        format!("{}: no `messages` list (is it a trajectory?)", args.trajectory.display())
    })?;
    let view_messages = worker::critic::offline::agent_view(messages);
    let facts = worker::critic::offline::facts(messages);
    anyhow::ensure!(!facts.is_empty(), "{}: the trajectory has no agent step", args.trajectory.display());
    let step = facts.len() as u32 - 1;
    let moment = if args.before_submit { Moment::BeforeSubmit } else { Moment::AfterStep };
    let view = StepView { moment, step, max_steps, messages: &view_messages, facts: &facts };
    let review = hook.ask(view, "manual").await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let (decision, message) = match &review.guidance {
        Guidance::Continue => ("continue", None),
        Guidance::Feedback(m) => ("inject", Some(m.clone())),
        Guidance::Stop(reason) => ("stop", Some(reason.clone())),
    };
    let out = json!({
        "critic": critic.name,
        "kind": critic.kind(),
        "steps_read": facts.len(),
        "decision": decision,
        "message_to_agent": message,
        "calls": review.calls,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

/// The named critic condition of a sweep file (or its first that is not `none`), and the
/// step limit of its first agent.
fn from_sweep(path: &std::path::Path, name: Option<&str>) -> anyhow::Result<(protocol::CriticSpec, u32)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file_name = path.display().to_string();
    let sweep = sweep_file::parse(&text, &file_name)?;
    let critic = match name {
        Some(name) => sweep.critics.iter().find(|c| c.name == name).with_context(|| {
            let names: Vec<&str> = sweep.critics.iter().map(|c| c.name.as_str()).collect();
            format!("{file_name} has no critic condition `{name}` (it has: {})", names.join(", "))
        })?,
        None => sweep
            .critics
            .iter()
            .find(|c| c.kind() != protocol::CriticKind::None)
            .with_context(|| format!("{file_name} has no critic condition besides `none`"))?,
    };
    Ok((critic.clone(), sweep.agents.first().map_or(150, |a| a.limits.max_steps)))
}

/// A critic condition of kind `onnx` with default settings for a model directory.
fn model_critic(dir: &std::path::Path) -> anyhow::Result<protocol::CriticSpec> {
    let toml = format!(
        "name = \"t\"\n[dataset]\nname = \"d\"\n[[agents]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n\
         [[critics]]\nname = \"model\"\nkind = \"onnx\"\nevery_k = 1\nmodel = {}\n",
        toml_edit::Value::from(dir.display().to_string())
    );
    let sweep = sweep_file::parse(&toml, "--model")?;
    Ok(sweep.critics[0].clone())
}
