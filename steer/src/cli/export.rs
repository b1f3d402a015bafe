//! `steer export trajectories`: one mini-swe-agent trajectory file per run of a sweep, and a
//! `preds.json` per condition (see `orchestrator::export` for the layout and format); `steer export
//! preds`: one condition's predictions as JSONL for the official harness.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use protocol::{RunInfo, API_PREFIX};
use reqwest::Method;

use super::{client, CoordinatorArgs};
use orchestrator::export;

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// Write every finished run of a sweep as `<condition>/<instance>/<instance>.traj.json`.
    Trajectories(TrajectoriesArgs),
    /// Write a condition's patches as predictions JSONL in the official harness's format.
    Preds(PredsArgs),
}

#[derive(Args, Debug)]
pub struct PredsArgs {
    /// Sweep id or name.
    #[arg(long)]
    pub sweep: String,
    /// `AGENT/CRITIC`, or `CRITIC` when the sweep runs one agent.
    #[arg(long)]
    pub condition: String,
    /// Which repeat of the condition (numbered from 0).
    #[arg(long, default_value_t = 0)]
    pub repeat: i32,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
}

#[derive(Args, Debug)]
pub struct TrajectoriesArgs {
    /// Sweep id or name.
    #[arg(long)]
    pub sweep: String,
    /// Directory to write into (created if missing).
    #[arg(long, default_value = "trajectories")]
    pub out: PathBuf,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
}

pub async fn run(cmd: ExportCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ExportCommand::Trajectories(args) => trajectories(args).await,
        ExportCommand::Preds(args) => preds(args).await,
    }
}

/// Runs are listed a page at a time.
const PAGE: usize = 1000;

/// Every run of a sweep (with `filter`, e.g. `&critic=none`), a page at a time.
async fn list_runs(
    client: &api_client::CoordinatorClient,
    sweep: &str,
    filter: &str,
) -> anyhow::Result<Vec<RunInfo>> {
    let mut runs: Vec<RunInfo> = Vec::new();
    loop {
        let after = runs.last().map_or(0, |r| r.id);
        let path = format!("{API_PREFIX}/sweeps/{sweep}/runs?limit={PAGE}&after={after}{filter}");
        let page: Vec<RunInfo> = client.call::<(), _>(Method::GET, &path, None).await?;
        let done = page.len() < PAGE;
        runs.extend(page);
        if done {
            return Ok(runs);
        }
    }
}

/// The sweep's name (`key` is its id or name).
async fn sweep_name(client: &api_client::CoordinatorClient, key: &str) -> anyhow::Result<String> {
    let status: protocol::SweepStatus =
        client.call::<(), _>(Method::GET, &format!("{API_PREFIX}/sweeps/{key}"), None).await?;
    Ok(status.name)
}

/// Predictions of one condition: one line per finished run of the chosen repeat, named as
/// `preds.json` of `steer export trajectories` names them ([`export::model_name`]).
async fn preds(args: PredsArgs) -> anyhow::Result<ExitCode> {
    let client = client::connect(&args.coordinator)?;
    let sweep = sweep_name(&client, &args.sweep).await?;
    let (agent, critic) = match args.condition.split_once('/') {
        Some((a, c)) => (Some(a.to_string()), c.to_string()),
        None => (None, args.condition.clone()),
    };
    let mut filter = format!("&critic={critic}&state=done");
    if let Some(a) = &agent {
        filter.push_str(&format!("&agent={a}"));
    }
    let runs: Vec<RunInfo> = list_runs(&client, &args.sweep, &filter)
        .await?
        .into_iter()
        .filter(|r| r.repeat_index == args.repeat)
        .collect();
    let mut agents: Vec<&str> = runs.iter().map(|r| r.agent.as_str()).collect();
    agents.sort();
    agents.dedup();
    anyhow::ensure!(
        !runs.is_empty(),
        "sweep `{}` has no finished run of `{}` in repeat {}",
        args.sweep,
        args.condition,
        args.repeat
    );
    anyhow::ensure!(
        agents.len() == 1,
        "sweep `{}` runs several agents with critic `{critic}` ({}): say which with --condition AGENT/{critic}",
        args.sweep,
        agents.join(", ")
    );
    let mut lines = String::new();
    let mut seen = std::collections::HashSet::new();
    for run in &runs {
        if !seen.insert(run.instance_id.clone()) {
            continue;
        }
        let record: protocol::Trajectory =
            client.call::<(), _>(Method::GET, &format!("{API_PREFIX}/runs/{}/record", run.id), None).await?;
        let line = export::prediction(&sweep, &record);
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    match &args.out {
        Some(path) => std::fs::write(path, &lines).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{lines}"),
    }
    eprintln!(
        "{} predictions of {}/{critic} repeat {}, as model `{}`",
        seen.len(),
        agents[0],
        args.repeat,
        export::model_name(&sweep, agents[0], &critic, args.repeat)
    );
    Ok(ExitCode::SUCCESS)
}

async fn trajectories(args: TrajectoriesArgs) -> anyhow::Result<ExitCode> {
    let client = client::connect(&args.coordinator)?;
    let sweep = sweep_name(&client, &args.sweep).await?;
    let runs = list_runs(&client, &args.sweep, "").await?;
    refuse_ambiguous_names(&sweep, &runs)?;
    let mut preds: BTreeMap<String, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    let mut written = 0;
    for run in runs.iter().filter(|r| r.state.is_terminal()) {
        let record: protocol::Trajectory =
            client.call::<(), _>(Method::GET, &format!("{API_PREFIX}/runs/{}/record", run.id), None).await?;
        let condition = export::condition_dir(&record);
        let dir = args.out.join(&condition).join(&run.instance_id);
        write_json(&dir.join(format!("{}.traj.json", run.instance_id)), &export::mini_swe_agent(&record))?;
        preds
            .entry(condition)
            .or_default()
            .insert(run.instance_id.clone(), export::prediction(&sweep, &record));
        written += 1;
    }
    for (condition, entries) in &preds {
        write_json(
            &args.out.join(condition).join("preds.json"),
            &serde_json::Value::Object(entries.clone()),
        )?;
    }
    eprintln!(
        "wrote {written} trajectories ({} conditions) to {}{}",
        preds.len(),
        args.out.display(),
        match runs.len() - written {
            0 => String::new(),
            n => format!("; {n} runs not finished yet were left out"),
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Refuses a sweep where two conditions would share a directory and a `model_name_or_path`
/// (names holding `__`: agent `a__b` with critic `c` against agent `a` with critic `b__c`).
fn refuse_ambiguous_names(sweep: &str, runs: &[RunInfo]) -> anyhow::Result<()> {
    let mut condition_of: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    for r in runs {
        let name = export::model_name(sweep, &r.agent, &r.critic, r.repeat_index);
        if let Some((agent, critic)) = condition_of.insert(name.clone(), (&r.agent, &r.critic)) {
            anyhow::ensure!(
                (agent, critic) == (r.agent.as_str(), r.critic.as_str()),
                "sweep `{sweep}`: agent `{agent}` with critic `{critic}` and agent `{}` with critic `{}` would both \
                 be exported as `{name}` (their names hold `__`); rename one in a new sweep",
                r.agent,
                r.critic
            );
        }
    }
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
