//! `steer export trajectories`: one mini-swe-agent trajectory file per run of a sweep, and a
//! `preds.json` per condition (see `crate::export` for the layout and format).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use protocol::{RunInfo, API_PREFIX};
use reqwest::Method;

use super::{client, CoordinatorArgs};
use crate::export;

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
    /// Write every finished run of a sweep as `<condition>/<instance>/<instance>.traj.json`.
    Trajectories(TrajectoriesArgs),
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
    }
}

/// Runs are listed a page at a time.
const PAGE: usize = 1000;

async fn trajectories(args: TrajectoriesArgs) -> anyhow::Result<ExitCode> {
    let client = client::connect(&args.coordinator)?;
    let mut runs: Vec<RunInfo> = Vec::new();
    loop {
        let after = runs.last().map_or(0, |r| r.id);
        let path = format!("{API_PREFIX}/sweeps/{}/runs?limit={PAGE}&after={after}", args.sweep);
        let page: Vec<RunInfo> = client.call::<(), _>(Method::GET, &path, None).await?;
        let done = page.len() < PAGE;
        runs.extend(page);
        if done {
            break;
        }
    }
    let mut preds: BTreeMap<String, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
    let mut written = 0;
    for run in runs.iter().filter(|r| r.state.is_terminal()) {
        let record: protocol::Trajectory =
            client.call::<(), _>(Method::GET, &format!("{API_PREFIX}/runs/{}/record", run.id), None).await?;
        let condition = export::condition_dir(&record);
        let dir = args.out.join(&condition).join(&run.instance_id);
        write_json(&dir.join(format!("{}.traj.json", run.instance_id)), &export::mini_swe_agent(&record))?;
        preds.entry(condition).or_default().insert(run.instance_id.clone(), export::prediction(&record));
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

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
