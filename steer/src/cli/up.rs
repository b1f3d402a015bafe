//! `steer up`: everything on one machine. Postgres (an embedded cluster under the data
//! directory unless DATABASE_URL is set), the coordinator, and a local worker, in one process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use protocol::Role;
use sqlx::PgPool;
use tokio_util::task::TaskTracker;

use super::client::ADMIN_TOKEN_FILE;
use super::serve::{CoordinatorFlags, WorkerFlags};
use super::{shutdown_on_signals, sweep};
use orchestrator::embedded_pg::{self, EmbeddedPostgres};
use orchestrator::store::tokens;
use orchestrator::{db, server};

const WORKER_TOKEN_FILE: &str = "worker-token";

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Use this database instead of an embedded cluster.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where the embedded cluster and the token files live [default: ~/.local/share/steerbench, or /var/lib/steerbench as root].
    #[arg(long, env = "STEER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the coordinator.
    #[arg(long, env = "STEER_BIND", default_value = "127.0.0.1:8420")]
    pub bind: SocketAddr,
    /// Submit this sweep file once everything is up, and show its progress.
    #[arg(long)]
    pub sweep: Option<PathBuf>,
    /// With --sweep: stop everything once the sweep has ended (exit code 0 if it completed).
    #[arg(long, requires = "sweep")]
    pub exit_when_done: bool,
    /// Also serve the replay agent (scripted answers, not a model) from the scenarios in this
    /// directory, e.g. examples/replay, as `steer mock-llm` does.
    #[arg(long, value_name = "DIR")]
    pub replay_agent: Option<PathBuf>,
    /// Where the replay agent listens (the demo sweep's agents point here).
    #[arg(long, default_value = "127.0.0.1:18080", requires = "replay_agent")]
    pub replay_bind: SocketAddr,
    #[command(flatten)]
    pub coordinator: CoordinatorFlags,
    #[command(flatten)]
    pub worker: WorkerFlags,
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.clone().unwrap_or_else(super::default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let embedded = match &args.database_url {
        Some(_) => None,
        None => {
            let config = embedded_pg::Config { data_dir: data_dir.clone(), port: 0, bin_dir: None };
            Some(EmbeddedPostgres::start(config).await.context("starting the embedded PostgreSQL")?)
        }
    };
    let database_url = match (&args.database_url, &embedded) {
        (Some(url), _) => url.clone(),
        (None, Some(pg)) => pg.database_url().to_string(),
        (None, None) => unreachable!("an embedded cluster was started when DATABASE_URL is unset"),
    };
    let result = run_with_database(&args, &data_dir, &database_url).await;
    if let Some(pg) = embedded {
        if let Err(e) = pg.stop().await {
            tracing::error!(error = %e, "stopping the embedded PostgreSQL failed");
        }
    }
    result
}

async fn run_with_database(args: &UpArgs, data_dir: &Path, database_url: &str) -> anyhow::Result<ExitCode> {
    let pool = db::connect(database_url, args.coordinator.db_connections).await?;
    let admin = token_file(&pool, &data_dir.join(ADMIN_TOKEN_FILE), "steer-up-admin", Role::Admin).await?;
    let worker_token =
        token_file(&pool, &data_dir.join(WORKER_TOKEN_FILE), "steer-up-worker", Role::Worker).await?;

    let shutdown = shutdown_on_signals(None);
    let tracker = TaskTracker::new();
    let stop_server = tokio_util::sync::CancellationToken::new();
    let addr = server::spawn(pool.clone(), args.coordinator.config(args.bind), stop_server.clone(), &tracker)
        .await?;
    let url = format!("http://{addr}");

    let mut replay_line = None;
    if let Some(dir) = &args.replay_agent {
        let scenarios = crate::replay::Scenarios::load_dir(dir)?;
        let listener = tokio::net::TcpListener::bind(args.replay_bind)
            .await
            .with_context(|| format!("binding the replay agent to {}", args.replay_bind))?;
        let count = scenarios.len();
        let stop = stop_server.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                r = crate::replay::serve(listener, scenarios, Default::default()) => {
                    if let Err(e) = r { tracing::error!(error = %e, "the replay agent stopped"); }
                }
            }
        });
        replay_line = Some(format!(
            "  replay agent (scripted answers, not a model): {count} scenarios at http://{}/v1",
            args.replay_bind
        ));
    }
    // `up` also serves placeholder sweeps on machines without Docker: an engine that does not
    // answer narrows its worker, and the banner (and sweep status) say so.
    let mut settings = args.worker.settings(&url, &worker_token)?;
    if let Some(docker) = &mut settings.docker {
        docker.required = false;
    }
    let local_worker = worker::node::Worker::build(settings).await?;
    super::log_scrub::hide(local_worker.redactor());
    let kinds = local_worker.executor_kinds();
    let drain = shutdown.child_token();
    let worker_task = tracker.spawn(local_worker.run(drain.clone()));

    println!("steerbench is up");
    println!("  coordinator: {url}   (health: {url}/healthz, metrics: {url}/metrics)");
    println!("  admin token: {admin}   (also in {})", data_dir.join(ADMIN_TOKEN_FILE).display());
    println!(
        "  local worker: {} slots, executors: {}",
        args.worker.slots,
        kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
    );
    if !kinds.contains(&protocol::ExecutorKind::Agent) {
        let why = if args.worker.no_docker {
            "--no-docker".to_string()
        } else {
            format!("no Docker engine answers at {}", args.worker.docker_host)
        };
        println!(
            "  without a container engine ({why}): agent and evaluate sweeps wait (`steer sweep status` says \
             so); placeholder sweeps run"
        );
    }
    if let Some(line) = replay_line {
        println!("{line}");
    }
    println!("  stop with Ctrl-C");

    let mut code = ExitCode::SUCCESS;
    if let Some(file) = &args.sweep {
        let client = api_client::CoordinatorClient::new(&url, &admin);
        let outcome = async {
            let submitted = sweep::submit(&client, file).await?;
            println!(
                "submitted sweep `{}` (id {}): {} runs",
                submitted.name, submitted.sweep_id, submitted.runs
            );
            sweep::wait_for(&client, submitted.sweep_id).await
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            s = outcome => {
                let s = s?;
                sweep::print_status(&s);
                code = super::exit::of_sweep(&s);
                if args.exit_when_done {
                    shutdown.cancel();
                }
            }
        }
    }
    shutdown.cancelled().await;
    // Drain the worker first (it needs the coordinator to hand runs back), then the server.
    drain.cancel();
    match worker_task.await {
        Ok(Err(e)) => tracing::error!(error = %e, "local worker stopped with an error"),
        Err(e) => tracing::error!(error = %e, "local worker task panicked"),
        Ok(Ok(())) => {}
    }
    stop_server.cancel();
    tracker.close();
    tracker.wait().await;
    pool.close().await;
    Ok(code)
}

/// Reads a token from `path` if it is still valid in this database; otherwise creates one and
/// writes it there (mode 0600).
async fn token_file(pool: &PgPool, path: &Path, name: &str, role: Role) -> anyhow::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim().to_string();
        if let Some((_, r)) = tokens::verify(pool, &existing).await? {
            if r == role {
                return Ok(existing);
            }
        }
    }
    let created = tokens::create(pool, name, role).await?;
    write_private(path, &created.token)?;
    Ok(created.token)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{contents}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
