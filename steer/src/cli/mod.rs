//! The `steer` command line (clap). Flags and their environment variables are the binary's
//! configuration layer: each subcommand turns them into the typed config its component takes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

mod client;
mod critic;
mod dataset;
mod eval;
mod exit;
mod export;
mod grade_log;
mod images;
mod log_scrub;
mod mock_llm;
mod report;
mod serve;
mod slurm;
mod sweep;
mod token;
mod up;
mod workers;

#[derive(Parser, Debug)]
#[command(
    name = "steer",
    version,
    about = "Run code agents on SWE-bench at scale, with and without a critic, and measure accuracy and cost."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start everything on this machine: Postgres (embedded unless DATABASE_URL is set), the coordinator and a worker.
    Up(up::UpArgs),
    /// Run the coordinator (HTTP API, queue, scheduler) against DATABASE_URL.
    Serve(serve::ServeArgs),
    /// Run a worker that claims runs from a coordinator.
    Worker(serve::WorkerArgs),
    /// Import and list datasets.
    #[command(subcommand)]
    Dataset(dataset::DatasetCommand),
    /// Submit, watch and control sweeps.
    #[command(subcommand)]
    Sweep(sweep::SweepCommand),
    /// Grade predictions (or the gold patches) across the fleet and write the harness's reports.
    Eval(eval::EvalArgs),
    /// List the fleet's workers: slots, running runs, images held, what they are doing.
    Workers(workers::WorkersArgs),
    /// Pre-pull the instance images a sweep needs on this machine.
    #[command(subcommand)]
    Images(images::ImagesCommand),
    /// Start workers on a Slurm cluster (a job array, one worker per task).
    #[command(subcommand)]
    Slurm(slurm::SlurmCommand),
    /// Grade a saved test log offline and print the harness's one-instance report.
    GradeLog(grade_log::GradeLogArgs),
    /// Create, list and revoke API tokens: through the coordinator's API with an admin token, or straight to DATABASE_URL.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Benchmarks that print one JSON object.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Per-condition resolve rates with intervals, costs, outcomes, the frontier and transfer.
    Report(report::ReportArgs),
    /// A paired comparison of two conditions on the same instances.
    Compare(report::CompareArgs),
    /// Try a critic condition on a saved trajectory.
    #[command(subcommand)]
    Critic(critic::CriticCommand),
    /// Export results in other tools' formats (trajectories as mini-swe-agent writes them).
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// Serve the replay agent: scripted answers over OpenAI's Chat Completions API (not a model).
    MockLlm(mock_llm::MockLlmArgs),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Claim + heartbeat + complete cycles against DATABASE_URL, and the bare-SQL ceiling.
    Queue(crate::bench::queue::QueueBenchArgs),
    /// Round trips of a trivial command through the persistent shell, an API exec and a `docker exec` subprocess.
    Sandbox(crate::bench::docker::SandboxBenchArgs),
    /// Fixture instances graded per minute at several concurrencies.
    Grade(crate::bench::docker::GradeBenchArgs),
    /// Agent-loop overhead per step, and worker memory with 1, 16 and 64 runs in flight.
    Agent(crate::bench::agent::AgentBenchArgs),
    /// Critic model latency at 512/2048/8192 tokens, throughput with and without micro-batching, against Python onnxruntime.
    Critic(crate::bench::critic::CriticBenchArgs),
    /// A simulated fleet (no containers) with random worker deaths against a real coordinator and DATABASE_URL.
    Fleet(crate::bench::fleet::FleetBenchArgs),
}

/// How a client command reaches the coordinator.
#[derive(Args, Debug, Clone)]
pub struct CoordinatorArgs {
    /// Coordinator base URL, e.g. http://10.0.0.5:8420 (HOST:PORT alone means http://HOST:PORT).
    #[arg(long, env = "STEER_COORDINATOR", default_value = "http://127.0.0.1:8420")]
    pub coordinator: String,
    /// API token (user or admin). Defaults to the admin token `steer up` wrote to its data directory.
    #[arg(long, env = "STEER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where `steer up` keeps its token files, when it was started with `--data-dir`: the
    /// admin token is read from there when no token is given.
    #[arg(long, env = "STEER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// A client command whose output is piped into `head` or a pager that quits ends quietly with
/// status 141 (as a Unix tool killed by SIGPIPE), instead of panicking on the write to the
/// closed pipe. Only commands that print and exit: the Rust runtime ignores SIGPIPE, and
/// servers and commands feeding child processes keep seeing a write error instead.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        // std's `print!` panics with this message when stdout's reader has gone.
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info)
    }));
}

/// Where a command finds the database.
#[derive(Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// PostgreSQL URL, e.g. postgres://user:pass@127.0.0.1:5432/steerbench.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Daemons log what they do; client commands and `up` (whose output is its progress bar
    // and summary) log only problems. RUST_LOG overrides either.
    let daemon = matches!(cli.command, Command::Serve(_) | Command::Worker(_) | Command::MockLlm(_));
    init_tracing(if daemon { "info" } else { "warn" });
    if !daemon && !matches!(cli.command, Command::Up(_) | Command::Bench(_) | Command::Eval(_)) {
        quiet_on_closed_stdout();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            exit::of_error(&e)
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up(args) => up::run(args).await,
        Command::Serve(args) => serve::serve(args).await,
        Command::Worker(args) => serve::worker(args).await,
        Command::Dataset(cmd) => dataset::run(cmd).await,
        Command::Sweep(cmd) => sweep::run(cmd).await,
        Command::Eval(args) => eval::run(args).await,
        Command::GradeLog(args) => grade_log::run(args).await,
        Command::Images(cmd) => images::run(cmd).await,
        Command::Workers(args) => workers::run(args).await,
        Command::Slurm(cmd) => slurm::run(cmd).await,
        Command::Token(cmd) => token::run(cmd).await,
        Command::Bench(BenchCommand::Queue(args)) => crate::bench::queue::queue(args).await,
        Command::Bench(BenchCommand::Sandbox(args)) => crate::bench::docker::sandbox(args).await,
        Command::Bench(BenchCommand::Grade(args)) => crate::bench::docker::grade(args).await,
        Command::Bench(BenchCommand::Agent(args)) => crate::bench::agent::agent(args).await,
        Command::Bench(BenchCommand::Fleet(args)) => crate::bench::fleet::fleet(args).await,
        Command::Bench(BenchCommand::Critic(args)) => crate::bench::critic::critic(args).await,
        Command::MockLlm(args) => mock_llm::run(args).await,
        Command::Export(cmd) => export::run(cmd).await,
        Command::Critic(cmd) => critic::run(cmd).await,
        Command::Report(args) => report::report(args).await,
        Command::Compare(args) => report::compare(args).await,
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log_scrub::ScrubbedStderr)
        .with_ansi(log_colours())
        .try_init();
}

/// Colour codes in log lines only for a person at a terminal: a file, a pipe or a journal
/// gets plain text, and so does anyone who sets NO_COLOR (https://no-color.org: any
/// non-empty value).
fn log_colours() -> bool {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    std::io::stderr().is_terminal() && !no_color
}

/// A token that fires on the first SIGINT/SIGTERM; a second signal exits at once.
/// A token cancelled on Ctrl-C, SIGTERM or `also`; a second such signal exits at once.
pub fn shutdown_on_signals(also: Option<tokio::signal::unix::SignalKind>) -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        wait_for_signal(also).await;
        tracing::info!("shutting down (send the signal again to exit at once)");
        fire.cancel();
        wait_for_signal(also).await;
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal(also: Option<tokio::signal::unix::SignalKind>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut other = also.map(|kind| signal(kind).expect("installing a signal handler"));
    let other = async {
        match other.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = other => {}
    }
}

/// Why a flag's duration did not parse.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` is not a duration like 30s, 500ms or 2m")]
    NotANumber(String),
    #[error("`{text}`: unknown unit `{unit}` (ms, s, m or h)")]
    UnknownUnit { text: String, unit: String },
}

/// Parses "30", "30s", "500ms", "2m" into a duration (for flags).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| DurationError::NotANumber(s.to_string()))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(DurationError::UnknownUnit { text: s.to_string(), unit: unit.to_string() }),
    }
}

/// The default data directory of `steer up` (embedded Postgres, token files).
pub fn default_data_dir() -> PathBuf {
    orchestrator::embedded_pg::default_data_dir()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2 weeks").is_err());
    }
}
