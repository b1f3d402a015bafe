//! `steer sweep submit|validate|list|status|runs|cancel|pause|resume|delete`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use api_client::CoordinatorClient;
use api_client::Error as ClientError;
use clap::Subcommand;
use protocol::{RunInfo, RunState, SubmitSweep, SweepState, SweepStatus, SweepSubmitted, API_PREFIX};
use reqwest::Method;
use rust_decimal::Decimal;

use super::{client, CoordinatorArgs};
use orchestrator::sweep_file;

#[derive(Subcommand, Debug)]
pub enum SweepCommand {
    /// Submit a sweep file (TOML). Resubmitting the same file is a no-op that returns the existing sweep.
    Submit {
        /// The sweep file (every key is explained in examples/full-sweep.toml).
        file: PathBuf,
        /// Wait until the sweep ends, with a progress bar (a plain line every 30 s without a
        /// terminal). Exits 0 only when every run finished without an infrastructure error; 3
        /// when some runs ended in error, 4 when the sweep was cancelled or stopped, 5 when the
        /// coordinator could not be reached.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        coordinator: CoordinatorArgs,
    },
    /// Check a sweep file as submit would, without submitting: runs per condition, the instances
    /// selected, the images needed and whether live workers hold them, the model endpoints, and
    /// the most it can spend. Exits 0 when the file is valid, 1 when not.
    Validate {
        /// The sweep file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        coordinator: CoordinatorArgs,
    },
    /// List sweeps.
    List {
        #[command(flatten)]
        coordinator: CoordinatorArgs,
    },
    /// Show a sweep's progress, outcomes and spend (SWEEP is an id or a name).
    Status {
        /// Sweep id or name.
        sweep: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        coordinator: CoordinatorArgs,
    },
    /// List a sweep's runs.
    Runs {
        sweep: String,
        /// Only runs in this state (queued, running, paused, done, error, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only runs with this outcome.
        #[arg(long)]
        outcome: Option<String>,
        /// Print each failed run's whole reason under it (the table shows its first line).
        #[arg(long)]
        why: bool,
        #[command(flatten)]
        coordinator: CoordinatorArgs,
    },
    /// Cancel a sweep: queued runs are cancelled, running ones stop at their next heartbeat.
    Cancel {
        sweep: String,
        #[command(flatten)]
        coordinator: CoordinatorArgs,
    },
    /// Pause a sweep: no new run starts; running ones finish.
    Pause {
        sweep: String,
        #[command(flatten)]
        coordinator: CoordinatorArgs,
    },
    /// Resume a paused, cancelled or stopped sweep: re-queues only runs that did not finish.
    Resume {
        sweep: String,
        /// New budget in dollars (needed when the old one is spent).
        #[arg(long)]
        budget_usd: Option<Decimal>,
        #[command(flatten)]
        coordinator: CoordinatorArgs,
    },
    /// Delete a sweep with everything recorded for it (runs, attempts, steps, model and critic
    /// calls, evaluations). Refused while a run of it is running; only its owner or an admin may.
    Delete {
        /// Sweep id or name.
        sweep: String,
        /// Do not ask for the sweep's name to confirm.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        coordinator: CoordinatorArgs,
    },
}

pub async fn run(cmd: SweepCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SweepCommand::Submit { file, wait, coordinator } => {
            let client = client::connect(&coordinator)?;
            let submitted = submit(&client, &file).await?;
            if submitted.created {
                println!(
                    "submitted sweep `{}` (id {}): {} runs",
                    submitted.name, submitted.sweep_id, submitted.runs
                );
            } else {
                println!(
                    "sweep `{}` (id {}) was already submitted with this configuration; nothing added ({} runs)",
                    submitted.name, submitted.sweep_id, submitted.runs
                );
            }
            for warning in &submitted.warnings {
                eprintln!("warning: {warning}");
            }
            if !wait {
                return Ok(ExitCode::SUCCESS);
            }
            let status = wait_for(&client, submitted.sweep_id).await?;
            print_status(&status);
            Ok(super::exit::of_sweep(&status))
        }
        SweepCommand::Validate { file, json, coordinator } => {
            let client = client::connect(&coordinator)?;
            let checked = validate(&client, &file).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&checked)?);
            } else {
                print_validation(&checked);
            }
            for warning in &checked.warnings {
                eprintln!("warning: {warning}");
            }
            Ok(ExitCode::SUCCESS)
        }
        SweepCommand::Delete { sweep, yes, coordinator } => {
            let client = client::connect(&coordinator)?;
            confirm_deletion("sweep", &sweep, yes)?;
            let deleted: protocol::Deleted =
                client.call::<(), _>(Method::DELETE, &format!("{API_PREFIX}/sweeps/{sweep}"), None).await?;
            println!("deleted sweep `{}` and its {} runs", deleted.name, deleted.runs);
            Ok(ExitCode::SUCCESS)
        }
        SweepCommand::List { coordinator } => {
            let client = client::connect(&coordinator)?;
            let list: Vec<SweepStatus> =
                client.call::<(), _>(Method::GET, &format!("{API_PREFIX}/sweeps"), None).await?;
            println!("{:>4}  {:<28} {:<10} {:>7} {:>7}  spent", "id", "name", "state", "runs", "done");
            for s in list {
                println!(
                    "{:>4}  {:<28} {:<10} {:>7} {:>7}  ${}",
                    s.id,
                    s.name,
                    s.state.as_str(),
                    s.total_runs,
                    s.finished_runs(),
                    s.spent_usd
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SweepCommand::Status { sweep, json, coordinator } => {
            let client = client::connect(&coordinator)?;
            let status = status(&client, &sweep).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(ExitCode::SUCCESS)
        }
        SweepCommand::Runs { sweep, state, outcome, why, coordinator } => {
            let client = client::connect(&coordinator)?;
            // The whole reason when asking for failed runs, as `--why` gives it.
            let why = why || state.as_deref() == Some(RunState::Error.as_str());
            let mut query = Vec::new();
            if let Some(s) = state {
                query.push(format!("state={s}"));
            }
            if let Some(o) = outcome {
                query.push(format!("outcome={o}"));
            }
            let path = format!("{API_PREFIX}/sweeps/{sweep}/runs?{}", query.join("&"));
            let runs: Vec<RunInfo> = client.call::<(), _>(Method::GET, &path, None).await?;
            println!(
                "{:>6}  {:<28} {:<16} {:<10} {:>3} {:<9} {:<20} {:<12} reason",
                "run", "instance", "agent", "critic", "rep", "state", "outcome", "cost"
            );
            for r in runs {
                let reason = failure_reason(&r);
                println!(
                    "{:>6}  {:<28} {:<16} {:<10} {:>3} {:<9} {:<20} {:<12} {}",
                    r.id,
                    r.instance_id,
                    r.agent,
                    r.critic,
                    r.repeat_index,
                    r.state.as_str(),
                    r.outcome.map(|o| o.as_str()).unwrap_or("-"),
                    format!("${}", r.totals.total_cost()),
                    reason.map(|r| first_line(r, 80)).unwrap_or_default(),
                );
                if let (true, Some(reason)) = (why, reason) {
                    for line in reason.lines() {
                        println!("        | {line}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SweepCommand::Cancel { sweep, coordinator } => transition(&coordinator, &sweep, "cancel", None).await,
        SweepCommand::Pause { sweep, coordinator } => transition(&coordinator, &sweep, "pause", None).await,
        SweepCommand::Resume { sweep, budget_usd, coordinator } => {
            transition(&coordinator, &sweep, "resume", Some(serde_json::json!({ "budget_usd": budget_usd })))
                .await
        }
    }
}

async fn transition(
    coordinator: &CoordinatorArgs,
    sweep: &str,
    action: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<ExitCode> {
    let client = client::connect(coordinator)?;
    let body = body.unwrap_or_else(|| serde_json::json!({}));
    let status: SweepStatus =
        client.call(Method::POST, &format!("{API_PREFIX}/sweeps/{sweep}/{action}"), Some(&body)).await?;
    print_status(&status);
    Ok(ExitCode::SUCCESS)
}

/// Validates the file locally, imports its dataset if it names a path and the coordinator
/// does not have it yet, then submits it.
pub async fn submit(client: &CoordinatorClient, file: &Path) -> anyhow::Result<SweepSubmitted> {
    let (text, file_name, parsed) = read_sweep_file(file)?;
    let dataset_path = format!("{API_PREFIX}/datasets/{}", parsed.dataset.name);
    match client.request::<(), protocol::DatasetInfo>(Method::GET, &dataset_path, None).await {
        Ok(_) => {}
        Err(ClientError::Rejected { status: 404, .. }) => {
            let Some(rel) = &parsed.dataset.path else {
                anyhow::bail!(
                    "dataset `{}` is not imported: import it with `steer dataset import FILE --name {}` or set dataset.path in {}",
                    parsed.dataset.name,
                    parsed.dataset.name,
                    file_name
                );
            };
            let path = file.parent().unwrap_or(Path::new(".")).join(rel);
            let info = super::dataset::import(client, &path, &parsed.dataset.name).await?;
            eprintln!(
                "imported dataset `{}`: {} instances from {}",
                info.name,
                info.instances,
                path.display()
            );
        }
        Err(e) => return Err(e.into()),
    }
    let req = SubmitSweep { config_toml: text, file_name: Some(file_name) };
    Ok(client.call(Method::POST, &format!("{API_PREFIX}/sweeps"), Some(&req)).await?)
}

/// A sweep file as the coordinator receives it (its template files inlined), its name for
/// messages, and its parsed form (errors name the file, line and key).
fn read_sweep_file(file: &Path) -> anyhow::Result<(String, String, sweep_file::SweepFile)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading sweep file {}", file.display()))?;
    let file_name = file.display().to_string();
    let base_dir = file.parent().unwrap_or(Path::new("."));
    let text = sweep_file::inline_template_files(&text, base_dir)
        .map_err(|e| anyhow::anyhow!("{file_name}: {e}"))?;
    let text =
        sweep_file::inline_agent_configs(&text, base_dir).map_err(|e| anyhow::anyhow!("{file_name}: {e}"))?;
    let parsed = sweep_file::parse(&text, &file_name)?;
    Ok((text, file_name, parsed))
}

/// Reads and checks the file locally (errors name the file, line and key), then has the
/// coordinator check it against its datasets, limits and fleet. Imports nothing.
pub async fn validate(client: &CoordinatorClient, file: &Path) -> anyhow::Result<protocol::SweepValidation> {
    let (text, file_name, parsed) = read_sweep_file(file)?;
    let req = SubmitSweep { config_toml: text, file_name: Some(file_name.clone()) };
    match client.call(Method::POST, &format!("{API_PREFIX}/sweep-validations"), Some(&req)).await {
        Err(ClientError::Rejected { status: 404, message, .. }) if parsed.dataset.path.is_some() => {
            anyhow::bail!(
                "{message} (submitting would import it from dataset.path `{}`; its selection cannot be checked before)",
                parsed.dataset.path.as_deref().unwrap_or_default()
            )
        }
        other => Ok(other?),
    }
}

fn print_validation(v: &protocol::SweepValidation) {
    println!("sweep `{}` is valid (dataset `{}`)", v.name, v.dataset);
    if let Some(id) = v.already_submitted {
        println!("  already submitted as sweep {id}: submitting again adds nothing");
    }
    let first = v.first_instances.join(", ");
    let more = if (v.first_instances.len() as i64) < v.instances { ", ..." } else { "" };
    println!("  instances: {} selected ({first}{more})", v.instances);
    println!(
        "  runs: {} in all ({} conditions x {} instances x {} repeats)",
        v.runs,
        v.conditions.len(),
        v.instances,
        v.repeats
    );
    for c in &v.conditions {
        let cap = c
            .max_cost_usd_per_run
            .map(|d| format!("at most ${d} each"))
            .unwrap_or_else(|| "no cost cap".into());
        println!("    {} / {}: {} runs, {cap}", c.agent, c.critic, c.runs);
    }
    let i = &v.images;
    println!(
        "  images: {} needed, {} of {} held by the {} live worker(s), {} not held",
        i.needed,
        i.held,
        i.needed,
        i.live_workers,
        i.needed - i.held
    );
    if !i.missing.is_empty() {
        let more = if (i.missing.len() as i64) < i.needed - i.held { ", ..." } else { "" };
        println!("    not held: {}{more}", i.missing.join(", "));
    }
    println!("  model endpoints: {}", v.endpoints.join(", "));
    match &v.max_spend_usd {
        Some(max) => println!("  most it can spend: ${max} ({} runs x each agent's max_cost_usd)", v.runs),
        None => println!(
            "  most it can spend: unbounded (no max_cost_usd for agent(s) {})",
            v.uncapped_agents.join(", ")
        ),
    }
    match &v.budget_usd {
        Some(b) => println!("  budget: ${b}"),
        None => println!("  budget: none (budget_usd not set)"),
    }
}

/// Asks for `name` to be typed back before deleting the `what` (a sweep or a dataset) it names,
/// unless `yes`. Without a terminal to ask on, `--yes` is needed.
pub(super) fn confirm_deletion(what: &str, name: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        anyhow::bail!(
            "deleting {what} `{name}` needs confirmation: pass --yes (stdin is not a terminal to ask on)"
        );
    }
    eprint!("this deletes {what} `{name}` and everything recorded for it; type its name to confirm: ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).context("reading the confirmation")?;
    if answer.trim() != name {
        anyhow::bail!("not deleted: `{}` is not `{name}`", answer.trim());
    }
    Ok(())
}

pub async fn status(client: &CoordinatorClient, sweep: &str) -> anyhow::Result<SweepStatus> {
    Ok(client.call::<(), _>(Method::GET, &format!("{API_PREFIX}/sweeps/{sweep}"), None).await?)
}

/// How often waiting prints a progress line when there is no terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Polls the sweep until it ends, drawing a progress bar on a terminal.
pub async fn wait_for(client: &CoordinatorClient, sweep_id: i64) -> anyhow::Result<SweepStatus> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} runs  {msg}",
        )
        .expect("static progress template"),
    );
    // Why runs wait, printed once when it starts and again whenever it changes.
    let mut told_waiting = Vec::new();
    // Without a terminal there is no bar: a plain line now and then instead.
    let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last_line: Option<tokio::time::Instant> = None;
    loop {
        let s = status(client, &sweep_id.to_string()).await?;
        if plain && last_line.is_none_or(|t| t.elapsed() >= PLAIN_PROGRESS_EVERY) {
            eprintln!(
                "sweep {} `{}`: {} of {} runs finished, {} running, {} queued, {} errored, ${} spent",
                s.id,
                s.name,
                s.finished_runs(),
                s.total_runs,
                s.states.get("running").copied().unwrap_or(0),
                s.states.get("queued").copied().unwrap_or(0),
                s.states.get("error").copied().unwrap_or(0),
                s.spent_usd
            );
            last_line = Some(tokio::time::Instant::now());
        }
        if s.waiting != told_waiting {
            for w in &s.waiting {
                bar.suspend(|| eprintln!("waiting: {}", waiting_line(w)));
            }
            told_waiting = s.waiting.clone();
        }
        bar.set_length(s.total_runs as u64);
        bar.set_position(s.finished_runs() as u64);
        let running = s.states.get("running").copied().unwrap_or(0);
        let resting: String = s.resting_endpoints.iter().map(|e| format!(", {}", resting_line(e))).collect();
        bar.set_message(format!("{running} running, ${} spent{resting}", s.spent_usd));
        if !matches!(s.state, SweepState::Running | SweepState::Paused) {
            bar.finish_and_clear();
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn print_status(s: &SweepStatus) {
    println!("sweep {} `{}`: {}", s.id, s.name, s.state.as_str());
    if let Some(reason) = &s.stop_reason {
        println!("  stopped: {reason}");
    }
    let states: Vec<String> = s.states.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("  runs: {} total | {}", s.total_runs, states.join(" | "));
    if !s.outcomes.is_empty() {
        let outcomes: Vec<String> = s.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  outcomes: {}", outcomes.join(", "));
    }
    match s.budget_usd {
        Some(b) => println!("  spent: ${} of ${} budget", s.spent_usd, b),
        None => println!("  spent: ${}", s.spent_usd),
    }
    for e in &s.resting_endpoints {
        println!("  {}", resting_line(e));
    }
    for w in &s.waiting {
        println!("  waiting: {}", waiting_line(w));
    }
    if !s.reasons.is_empty() {
        println!("  why runs failed or were cancelled (most common first):");
        for g in &s.reasons {
            println!("    {} {}: {} (e.g. run {})", g.runs, g.state.as_str(), g.reason, g.example_run);
        }
    }
    println!("  config hash: {}", &s.config_hash[..s.config_hash.len().min(16)]);
}

/// Why a run failed, for runs that ended `error` or `cancelled` and unfinished runs that failed
/// an attempt (None for the others).
fn failure_reason(run: &RunInfo) -> Option<&str> {
    match (run.state, run.last_error.as_deref()) {
        (RunState::Error | RunState::Cancelled, Some(e)) => Some(e),
        (RunState::Error, None) => Some("no reason recorded"),
        (RunState::Cancelled, None) => Some("cancelled with the sweep"),
        (RunState::Queued | RunState::Running | RunState::Paused, Some(e)) => Some(e),
        _ => None,
    }
}

/// The first line of `text`, cut to `max` characters.
fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    if line.chars().count() > max {
        format!("{}...", line.chars().take(max.saturating_sub(3)).collect::<String>())
    } else {
        line.to_string()
    }
}

/// Queued runs no live worker can take, for people.
fn waiting_line(w: &protocol::WaitingRuns) -> String {
    format!("{} queued run(s): {}", w.runs, w.reason)
}

/// One resting endpoint, for people.
fn resting_line(e: &protocol::RestingEndpoint) -> String {
    if e.resting_s > 0.0 {
        format!(
            "endpoint {} resting {:.0} s more after {} outage(s)",
            e.endpoint,
            e.resting_s.ceil(),
            e.outages
        )
    } else {
        format!("endpoint {} half-open after {} outage(s): one probe run at a time", e.endpoint, e.outages)
    }
}
