//! `steer report` and `steer compare`: the figures of `orchestrator::report`, fetched from the
//! coordinator and printed as a table, JSON or CSV.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use protocol::API_PREFIX;
use reqwest::Method;

use super::{client, CoordinatorArgs};
use orchestrator::report::{render, Comparison, Report};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    /// A self-contained HTML page with SVG plots.
    Html,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Sweeps (ids or names).
    #[arg(required = true)]
    pub sweeps: Vec<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// The instances selected (e.g. 500 for SWE-bench Verified): the rate over selected runs
    /// divides by N x repeats, instances without runs counting as unresolved.
    #[arg(long)]
    pub total: Option<u64>,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
}

pub async fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let client = client::connect(&args.coordinator)?;
    let mut path = format!("{API_PREFIX}/report?sweeps={}", args.sweeps.join(","));
    if let Some(total) = args.total {
        path.push_str(&format!("&total={total}"));
    }
    let report: Report = client.call::<(), _>(Method::GET, &path, None).await?;
    let text = match args.format {
        Format::Table => render::table(&report),
        Format::Json => serde_json::to_string_pretty(&report)?,
        Format::Csv => render::csv(&report),
        Format::Html => orchestrator::report::html::render(&report),
    };
    write_out(args.out.as_ref(), &text)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// `SWEEP:AGENT/CRITIC`, or `SWEEP:CRITIC` when the sweep runs one agent.
    pub a: String,
    pub b: String,
    /// Print the comparison as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub coordinator: CoordinatorArgs,
}

pub async fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let client = client::connect(&args.coordinator)?;
    let path = format!("{API_PREFIX}/compare?a={}&b={}", encode(&args.a), encode(&args.b));
    let comparison: Comparison = client.call::<(), _>(Method::GET, &path, None).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        print!("{}", render::comparison(&comparison));
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes what a condition name may hold besides letters, digits, `.`, `_` and `-`.
fn encode(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c.to_string()
            } else {
                format!("%{:02X}", c as u32)
            }
        })
        .collect()
}

fn write_out(out: Option<&PathBuf>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
