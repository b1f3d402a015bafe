//! `steer workers`: the fleet as the coordinator sees it.

use std::process::ExitCode;

use clap::Args;
use protocol::{WorkerInfo, API_PREFIX};
use reqwest::Method;

use super::{client, CoordinatorArgs};

#[derive(Args, Debug)]
pub struct WorkersArgs {
    /// Include workers not heard from for more than a minute (stopped or dead).
    #[arg(long)]
    pub all: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
}

pub async fn run(args: WorkersArgs) -> anyhow::Result<ExitCode> {
    let client = client::connect(&args.coordinator)?;
    let path = if args.all {
        format!("{API_PREFIX}/workers")
    } else {
        format!("{API_PREFIX}/workers?alive_within_s=60")
    };
    let workers: Vec<WorkerInfo> = client.call::<(), _>(Method::GET, &path, None).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&workers)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<16} {:<12} {:>5} {:>7} {:>6}  {:<20} {:<20} {:<20} status",
        "name",
        "host",
        "slurm job",
        "slots",
        "running",
        "images",
        "executors",
        "key variables",
        "last heartbeat"
    );
    for w in workers {
        let mut status = match (&w.status, w.draining) {
            (Some(s), true) => format!("draining; {s}"),
            (Some(s), false) => s.clone(),
            (None, true) => "draining".into(),
            (None, false) => "-".into(),
        };
        if let Some(why) = &w.degraded {
            status = format!("DEGRADED: {why}; {status}");
        }
        println!(
            "{:<20} {:<16} {:<12} {:>5} {:>7} {:>6}  {:<20} {:<20} {:<20} {status}",
            w.name,
            w.host,
            w.slurm.as_ref().map_or_else(|| "-".to_string(), protocol::SlurmJob::label),
            w.slots,
            w.running,
            w.images,
            w.executors.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(","),
            if w.key_envs.is_empty() { "-".to_string() } else { w.key_envs.join(",") },
            w.last_heartbeat.format("%Y-%m-%d %H:%M:%S")
        );
    }
    Ok(ExitCode::SUCCESS)
}
