//! `steer critic run`: one critic call on a saved trajectory, printed as JSON, for trying a
//! critic condition before a sweep.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use worker::agent::hook::{Guidance, Moment, StepView};

use crate::sweep_file;

#[derive(Subcommand, Debug)]
pub enum CriticCommand {
    /// Ask a critic condition of a sweep file about a saved trajectory (the format of
    /// `steer export trajectories` and `GET /api/v1/runs/{id}/trajectory`), and print its verdict.
    Run(RunArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The sweep file holding the critic condition.
    #[arg(long)]
    pub sweep: PathBuf,
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
    let text =
        std::fs::read_to_string(&args.sweep).with_context(|| format!("reading {}", args.sweep.display()))?;
    let file_name = args.sweep.display().to_string();
    let sweep = sweep_file::parse(&text, &file_name)?;
    let critic = match &args.critic {
        Some(name) => sweep.critics.iter().find(|c| &c.name == name).with_context(|| {
            let names: Vec<&str> = sweep.critics.iter().map(|c| c.name.as_str()).collect();
            format!("{file_name} has no critic condition `{name}` (it has: {})", names.join(", "))
        })?,
        None => sweep
            .critics
            .iter()
            .find(|c| c.kind != protocol::CriticKind::None)
            .with_context(|| format!("{file_name} has no critic condition besides `none`"))?,
    };
    let Some(mut hook) = worker::critic::critic_hook(critic).map_err(anyhow::Error::msg)? else {
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
    let max_steps = sweep.agents.first().map_or(150, |a| a.limits.max_steps);
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
        "kind": critic.kind,
        "steps_read": facts.len(),
        "decision": decision,
        "message_to_agent": message,
        "calls": review.calls,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
