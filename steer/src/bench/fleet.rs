//! `steer bench fleet`: a simulated fleet against a real coordinator and Postgres on this
//! machine. W simulated workers (no containers, no executor: each claimed run uploads one step
//! and completes at once) speak the worker protocol over HTTP to an in-process coordinator; a
//! fraction of the runs kill their worker mid-run (it stops without completing, its lease
//! expires, a new worker takes its place). At the end every run must be done exactly once.
//!
//! Figures: runs completed per second, claim latency (p50, p99, as the workers saw it), the
//! process's CPU time (coordinator and simulated workers share this process), Postgres bytes per
//! run (runs, steps and the attempt ledger, indexes included), worker deaths, duplicates and
//! lost runs. Duplicates are counted twice: completions the workers saw accepted more than once
//! per run, and, from the attempt ledger, runs with more than one completed attempt
//! (`ledger_duplicates`); runs whose state disagrees with the ledger are `ledger_unmatched`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use protocol::{CompleteRun, Outcome, RegisterWorker, Role, RunTotals, StepRecord};
use rand::Rng;
use sqlx::postgres::PgPoolOptions;
use sqlx::ConnectOptions;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bench::ScratchDb;
use crate::cli::DatabaseArgs;
use orchestrator::server::{self, CoordinatorConfig};
use orchestrator::store::{datasets, sweeps, tokens};
use orchestrator::{dataset, db, sweep_file};

/// The bundled demo dataset (6 SWE-bench-shaped instances), repeated to the benchmark's size.
const DEMO_DATASET: &str = include_str!("../../../examples/demo-dataset.jsonl");

#[derive(Args, Debug)]
pub struct FleetBenchArgs {
    /// Runs to complete.
    #[arg(long, default_value_t = 10_000)]
    pub runs: usize,
    /// Simulated workers (each with its own HTTP client).
    #[arg(long, default_value_t = 200)]
    pub workers: usize,
    /// Probability that a run kills its worker (which stops without completing it).
    #[arg(long, default_value_t = 0.005)]
    pub death_rate: f64,
    /// Lease length: how soon a dead worker's run comes back.
    #[arg(long, default_value = "3s", value_parser = crate::cli::parse_duration)]
    pub lease_ttl: Duration,
    /// Print only the JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

/// What the simulated workers saw.
#[derive(Default)]
struct Tally {
    claim_ms: Vec<f64>,
    /// Accepted completions per run.
    completed: HashMap<i64, u32>,
    deaths: u64,
}

pub async fn fleet(args: FleetBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.workers >= 1 && args.runs >= 1, "--workers and --runs must be at least 1");
    let scratch = ScratchDb::create(&args.db.database_url).await?;
    let result = run_fleet(&scratch, &args).await;
    scratch.drop_db().await?;
    let out = result?;
    if !args.json {
        eprintln!("{} runs through {} simulated workers", args.runs, args.workers);
    }
    println!("{out}");
    // Exactly once is the point: a duplicate (seen by the workers or in the ledger), a run the
    // ledger disagrees with, or a lost run fails the command.
    let bad = ["duplicates", "ledger_duplicates", "ledger_unmatched", "lost"];
    if bad.iter().any(|key| out[key] != 0) {
        eprintln!("error: runs were duplicated, lost, or disagree with the attempt ledger");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_fleet(scratch: &ScratchDb, args: &FleetBenchArgs) -> anyhow::Result<serde_json::Value> {
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(
            scratch
                .options
                .clone()
                .options([("plan_cache_mode", "force_generic_plan")])
                .disable_statement_logging(),
        )
        .await
        .context("connecting to the scratch database")?;
    db::MIGRATOR.run(&pool).await?;
    // A placeholder sweep over the demo dataset with as many repeats as needed.
    let instances = dataset::parse(dataset::Format::Jsonl, DEMO_DATASET.as_bytes())?;
    datasets::import(&pool, "demo", None, &instances).await?;
    let repeats = args.runs.div_ceil(instances.len());
    let toml = format!(
        "name = \"fleet\"\nrepeats = {repeats}\nmax_attempts = 100\n[dataset]\nname = \"demo\"\n[executor]\nkind = \"placeholder\"\n\
         duration_ms = 0\nsteps = 1\n[[agents]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n\
         [[critics]]\nname = \"none\"\nkind = \"none\"\n"
    );
    let file = sweep_file::parse(&toml, "fleet.toml")?;
    let sweep = sweeps::submit(&pool, &file, &toml).await?;
    let total = sweep.runs as usize;

    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let config = CoordinatorConfig {
        bind: "127.0.0.1:0".parse().expect("static address"),
        lease_ttl: args.lease_ttl,
        maintenance_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let addr = server::spawn(pool.clone(), config, stop.clone(), &tracker).await?;
    let url = format!("http://{addr}");
    let token = tokens::create(&pool, "fleet", Role::Worker).await?.token;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let done = CancellationToken::new();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut fleet = Vec::new();
    for i in 0..args.workers {
        let (url, token, tally, done) = (url.clone(), token.clone(), tally.clone(), done.clone());
        let death_rate = args.death_rate;
        fleet.push(tokio::spawn(async move { worker_slot(i, &url, &token, death_rate, tally, done).await }));
    }
    // Until every run is done (or nothing moves for a minute).
    let mut last = (0i64, Instant::now());
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM runs WHERE state = 'done'").fetch_one(&pool).await?;
        if n as usize >= total {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        }
        anyhow::ensure!(
            last.1.elapsed() < Duration::from_secs(60),
            "no progress for a minute at {n} of {total} runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    done.cancel();
    for w in fleet {
        let _ = w.await;
    }
    let done_runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE state = 'done'").fetch_one(&pool).await?;
    // What the ledger says: runs completed by more than one attempt, and runs whose state
    // disagrees with it (done without a completed attempt, or completed but not done).
    let (ledger_duplicates, ledger_unmatched): (i64, i64) = sqlx::query_as(
        "WITH c AS (
             SELECT r.state, (SELECT count(*) FROM run_attempts a
                              WHERE a.run_id = r.id AND a.ending = 'completed') AS n
             FROM runs r)
         SELECT count(*) FILTER (WHERE n > 1), count(*) FILTER (WHERE (n > 0) <> (state = 'done')) FROM c",
    )
    .fetch_one(&pool)
    .await?;
    let bytes: i64 = sqlx::query_scalar(
        "SELECT (pg_total_relation_size('runs') + pg_total_relation_size('steps')
                 + pg_total_relation_size('run_attempts'))::bigint",
    )
    .fetch_one(&pool)
    .await?;
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    pool.close().await;

    let t = tally.lock().expect("tally lock");
    let duplicates = t.completed.values().filter(|n| **n > 1).count();
    let lost = total - done_runs as usize;
    let mut claims = t.claim_ms.clone();
    claims.sort_by(f64::total_cmp);
    let pct = |q: f64| crate::bench::percentile(&claims, q);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    Ok(serde_json::json!({
        "runs": total,
        "workers": args.workers,
        "claims_per_s": round(total as f64 / elapsed),
        "p50_claim_ms": round(pct(0.5)),
        "p99_claim_ms": round(pct(0.99)),
        "process_cpu_s": round(cpu),
        "process_cpu_ms_per_run": round(cpu * 1000.0 / total as f64),
        "pg_bytes_per_run": bytes / total as i64,
        "worker_deaths": t.deaths,
        "duplicates": duplicates,
        "ledger_duplicates": ledger_duplicates,
        "ledger_unmatched": ledger_unmatched,
        "lost": lost,
        "seconds": round(elapsed),
    }))
}

/// One slot of the fleet: a worker that claims, uploads a step and completes, until its run
/// kills it; then a new worker takes the slot.
async fn worker_slot(
    slot: usize,
    url: &str,
    token: &str,
    death_rate: f64,
    tally: Arc<Mutex<Tally>>,
    done: CancellationToken,
) -> anyhow::Result<()> {
    let client = api_client::CoordinatorClient::new(url, token);
    let mut incarnation = 0;
    'worker: while !done.is_cancelled() {
        incarnation += 1;
        let reg = client
            .register(&RegisterWorker {
                name: format!("sim-{slot}-{incarnation}"),
                host: "sim".into(),
                slots: 1,
                capabilities: Some(protocol::Capabilities::executors(vec![
                    protocol::ExecutorKind::Placeholder,
                ])),
                version: "sim".into(),
            })
            .await?;
        while !done.is_cancelled() {
            let t0 = Instant::now();
            let claimed = tokio::select! {
                _ = done.cancelled() => return Ok(()),
                c = client.claim(reg.worker_id, 1, Duration::from_millis(500)) => c,
            };
            let Ok(claimed) = claimed else { continue };
            if claimed.runs.is_empty() {
                continue;
            }
            tally.lock().expect("tally lock").claim_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            for run in claimed.runs {
                let step = StepRecord { index: 0, action: Some("true".into()), ..Default::default() };
                let _ = client.upload_steps(run.run_id, run.lease_token, vec![step], vec![], vec![]).await;
                if rand::thread_rng().gen_bool(death_rate) {
                    // Dies mid-run: no completion, no release; the lease runs out.
                    tally.lock().expect("tally lock").deaths += 1;
                    continue 'worker;
                }
                let req = CompleteRun {
                    lease_token: run.lease_token,
                    outcome: Outcome::SyntheticUnresolved,
                    totals: RunTotals { steps: 1, ..Default::default() },
                    patch: None,
                    evaluation: None,
                    detail: None,
                };
                if client.complete(run.run_id, &req).await.is_ok() {
                    *tally.lock().expect("tally lock").completed.entry(run.run_id).or_default() += 1;
                }
            }
        }
    }
    Ok(())
}

/// User and system CPU time of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name and state.
    (ticks(11) + ticks(12)) / 100.0
}
