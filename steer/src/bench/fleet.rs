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
    /// The fleet-scale sitting instead of one fleet: 10,000 runs on 200 workers, 100,000 runs on
    /// 1,000 workers, then claims with 10,000 and with 1,000,000 runs queued and the
    /// 1,000,000-run sweep's submit, report and cancel (`--runs` and `--workers` are ignored).
    #[arg(long)]
    pub scale: bool,
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
    /// Requests answered `overloaded` (the workers waited as told, with jitter, and asked again).
    overloaded: u64,
    /// Requests that failed because the coordinator's connection pool timed out: what a
    /// coordinator without backpressure answers when it is overwhelmed.
    pool_timeouts: u64,
    /// Other failed requests.
    errors: u64,
}

impl Tally {
    fn failed(&mut self, e: &api_client::Error) {
        match e {
            api_client::Error::Overloaded { .. } => self.overloaded += 1,
            e if e.to_string().contains("pool timed out") => self.pool_timeouts += 1,
            _ => self.errors += 1,
        }
    }
}

/// One simulated fleet: its size and what kills its workers.
#[derive(Debug, Clone, Copy)]
struct Fleet {
    runs: usize,
    workers: usize,
    death_rate: f64,
    lease_ttl: Duration,
}

pub async fn fleet(args: FleetBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.workers >= 1 && args.runs >= 1, "--workers and --runs must be at least 1");
    let out = if args.scale {
        scale(&args).await?
    } else {
        let fleet = Fleet {
            runs: args.runs,
            workers: args.workers,
            death_rate: args.death_rate,
            lease_ttl: args.lease_ttl,
        };
        if !args.json {
            eprintln!("{} runs through {} simulated workers", args.runs, args.workers);
        }
        simulate(&args.db.database_url, fleet).await?
    };
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

/// The fleet-scale sitting: the small and the large fleet, then the queue at 1,000,000 runs.
async fn scale(args: &FleetBenchArgs) -> anyhow::Result<serde_json::Value> {
    let url = &args.db.database_url;
    let say = |what: &str| {
        if !args.json {
            eprintln!("{what}");
        }
    };
    // Each part's figures go to stderr as it ends, so a sitting cut short still tells.
    let part = |name: &str, v: &serde_json::Value| eprintln!("{name}: {v}");
    say("small fleet: 10,000 runs, 200 workers");
    let small = simulate(url, Fleet { runs: 10_000, workers: 200, ..fleet_of(args) }).await?;
    part("small", &small);
    say("large fleet: 100,000 runs, 1,000 workers");
    let large = simulate(url, Fleet { runs: 100_000, workers: 1_000, ..fleet_of(args) }).await?;
    part("large", &large);
    say("claims with 10,000 runs queued");
    let q10k = queued(url, 10_000, false).await?;
    part("10k queued", &q10k);
    say("claims with 1,000,000 runs queued, then the sweep's report and cancel");
    let q1m = queued(url, 1_000_000, true).await?;
    part("1m queued", &q1m);
    let rate = |v: &serde_json::Value| v["runs_per_s"].as_f64().unwrap_or(0.0);
    let claims = |v: &serde_json::Value| v["claims_per_s"].as_f64().unwrap_or(0.0);
    let sum = |key: &str| small[key].as_i64().unwrap_or(0) + large[key].as_i64().unwrap_or(0);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    Ok(serde_json::json!({
        "runs_per_s_small": rate(&small),
        "runs_per_s_large": rate(&large),
        "large_over_small": round(rate(&large) / rate(&small).max(f64::MIN_POSITIVE)),
        "p99_claim_ms_large": large["p99_claim_ms"],
        "pool_timeouts": sum("pool_timeouts"),
        "duplicates": sum("duplicates"),
        "ledger_duplicates": sum("ledger_duplicates"),
        "ledger_unmatched": sum("ledger_unmatched"),
        "lost": sum("lost"),
        "claims_per_s_1m_queued_over_10k": round(claims(&q1m) / claims(&q10k).max(f64::MIN_POSITIVE)),
        "report_ms_1m": q1m["report_ms"],
        "claims_per_s_10k_queued": q10k["claims_per_s"],
        "claims_per_s_1m_queued": q1m["claims_per_s"],
        "submit_ms_1m": q1m["submit_ms"],
        "report_peak_rss_mb_1m": q1m["report_peak_rss_mb"],
        "runs_page_ms_1m": q1m["runs_page_ms"],
        "pause_ms_1m": q1m["pause_ms"],
        "resume_ms_1m": q1m["resume_ms"],
        "cancel_ms_1m": q1m["cancel_ms"],
        "small": small,
        "large": large,
    }))
}

fn fleet_of(args: &FleetBenchArgs) -> Fleet {
    Fleet { runs: args.runs, workers: args.workers, death_rate: args.death_rate, lease_ttl: args.lease_ttl }
}

/// A scratch database with the demo dataset and a coordinator on it.
struct Bed {
    scratch: ScratchDb,
    pool: sqlx::PgPool,
    url: String,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Bed {
    async fn start(database_url: &str, lease_ttl: Duration) -> anyhow::Result<Bed> {
        let scratch = ScratchDb::create(database_url).await?;
        // As `steer serve` connects (db::connect), with its default pool.
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
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
        let instances = dataset::parse(dataset::Format::Jsonl, DEMO_DATASET.as_bytes())?;
        datasets::import(&pool, "demo", None, &instances).await?;
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let config = CoordinatorConfig {
            bind: "127.0.0.1:0".parse().expect("static address"),
            lease_ttl,
            maintenance_interval: Duration::from_millis(200),
            ..Default::default()
        };
        let addr = server::spawn(pool.clone(), config, stop.clone(), &tracker).await?;
        Ok(Bed { scratch, pool, url: format!("http://{addr}"), stop, tracker })
    }

    async fn close(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.pool.close().await;
        self.scratch.drop_db().await
    }
}

/// A placeholder sweep over the demo dataset with as many repeats as `runs` needs (rounded up,
/// or down with `at_most`, to stay within a limit such as the runs one sweep may have).
fn sweep_toml(name: &str, runs: usize, at_most: bool) -> String {
    let instances = DEMO_DATASET.lines().filter(|l| !l.trim().is_empty()).count();
    let repeats = if at_most { (runs / instances).max(1) } else { runs.div_ceil(instances) };
    format!(
        "name = \"{name}\"\nrepeats = {repeats}\nmax_attempts = 100\n[dataset]\nname = \"demo\"\n[executor]\nkind = \"placeholder\"\n\
         duration_ms = 0\nsteps = 1\n[[agents]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n\
         [[critics]]\nname = \"none\"\nkind = \"none\"\n"
    )
}

async fn simulate(database_url: &str, f: Fleet) -> anyhow::Result<serde_json::Value> {
    let bed = Bed::start(database_url, f.lease_ttl).await?;
    let result = run_fleet(&bed, f).await;
    bed.close().await?;
    result
}

async fn run_fleet(bed: &Bed, f: Fleet) -> anyhow::Result<serde_json::Value> {
    let pool = &bed.pool;
    let toml = sweep_toml("fleet", f.runs, false);
    let file = sweep_file::parse(&toml, "fleet.toml")?;
    let sweep = sweeps::submit(pool, &file, &toml).await?;
    let total = sweep.runs as usize;
    let token = tokens::create(pool, "fleet", Role::Worker).await?.token;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let done = CancellationToken::new();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let mut fleet = Vec::new();
    for i in 0..f.workers {
        let (url, token, tally, done) = (bed.url.clone(), token.clone(), tally.clone(), done.clone());
        let death_rate = f.death_rate;
        fleet.push(tokio::spawn(async move { worker_slot(i, &url, &token, death_rate, tally, done).await }));
    }
    // Until every run is done (or nothing moves for a minute).
    let mut last = (0i64, Instant::now());
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM runs WHERE state = 'done'").fetch_one(pool).await?;
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
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE state = 'done'").fetch_one(pool).await?;
    // What the ledger says: runs completed by more than one attempt, and runs whose state
    // disagrees with it (done without a completed attempt, or completed but not done).
    let (ledger_duplicates, ledger_unmatched): (i64, i64) = sqlx::query_as(
        "WITH c AS (
             SELECT r.state, (SELECT count(*) FROM run_attempts a
                              WHERE a.run_id = r.id AND a.ending = 'completed') AS n
             FROM runs r)
         SELECT count(*) FILTER (WHERE n > 1), count(*) FILTER (WHERE (n > 0) <> (state = 'done')) FROM c",
    )
    .fetch_one(pool)
    .await?;
    let expired: i64 = sqlx::query_scalar("SELECT count(*) FROM run_attempts WHERE ending = 'expired'")
        .fetch_one(pool)
        .await?;
    let bytes: i64 = sqlx::query_scalar(
        "SELECT (pg_total_relation_size('runs') + pg_total_relation_size('steps')
                 + pg_total_relation_size('run_attempts'))::bigint",
    )
    .fetch_one(pool)
    .await?;

    let t = tally.lock().expect("tally lock");
    let duplicates = t.completed.values().filter(|n| **n > 1).count();
    let lost = total - done_runs as usize;
    let mut claims = t.claim_ms.clone();
    claims.sort_by(f64::total_cmp);
    let pct = |q: f64| crate::bench::percentile(&claims, q);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    Ok(serde_json::json!({
        "runs": total,
        "workers": f.workers,
        "runs_per_s": round(total as f64 / elapsed),
        "claims_per_s": round(total as f64 / elapsed),
        "p50_claim_ms": round(pct(0.5)),
        "p99_claim_ms": round(pct(0.99)),
        "process_cpu_s": round(cpu),
        "process_cpu_ms_per_run": round(cpu * 1000.0 / total as f64),
        "pg_bytes_per_run": bytes / total as i64,
        "worker_deaths": t.deaths,
        "leases_expired": expired,
        "overloaded": t.overloaded,
        "pool_timeouts": t.pool_timeouts,
        "errors": t.errors,
        "duplicates": duplicates,
        "ledger_duplicates": ledger_duplicates,
        "ledger_unmatched": ledger_unmatched,
        "lost": lost,
        "seconds": round(elapsed),
    }))
}

/// Claims per second with `queued` runs waiting (50 workers claiming and completing 3,000
/// runs); with `large`, also the sweep's submit (as a user submits it, over HTTP), its report,
/// a page of its runs, pause, resume and cancel, each timed over HTTP.
async fn queued(database_url: &str, queued: usize, large: bool) -> anyhow::Result<serde_json::Value> {
    let bed = Bed::start(database_url, Duration::from_secs(30)).await?;
    let result = measure_queued(&bed, queued, large).await;
    bed.close().await?;
    result
}

async fn measure_queued(bed: &Bed, queued: usize, large: bool) -> anyhow::Result<serde_json::Value> {
    const CLAIMS: usize = 3_000;
    const WORKERS: usize = 50;
    let admin = tokens::create(&bed.pool, "bench-admin", Role::Admin).await?.token;
    let user = api_client::CoordinatorClient::new(&bed.url, &admin);
    let ms = |t: Instant| (t.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    let t = Instant::now();
    // Submitted through the store, as the route does: over HTTP a 1,000,000-run submit outlasts
    // the client's 45 s timeout (README says so).
    let toml = sweep_toml("queued", queued, true);
    let submitted = sweeps::submit(&bed.pool, &sweep_file::parse(&toml, "queued.toml")?, &toml).await?;
    let submit_ms = ms(t);
    let token = tokens::create(&bed.pool, "fleet", Role::Worker).await?.token;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let done = CancellationToken::new();
    let started = Instant::now();
    let mut fleet = Vec::new();
    for i in 0..WORKERS {
        let (url, token, tally, done) = (bed.url.clone(), token.clone(), tally.clone(), done.clone());
        fleet.push(tokio::spawn(async move { worker_slot(i, &url, &token, 0.0, tally, done).await }));
    }
    loop {
        let n = tally.lock().expect("tally lock").completed.len();
        if n >= CLAIMS {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "only {n} of {CLAIMS} claims in ten minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let claims_per_s = CLAIMS as f64 / started.elapsed().as_secs_f64();
    done.cancel();
    for w in fleet {
        let _ = w.await;
    }
    let mut out = serde_json::json!({
        "queued": submitted.runs,
        "claims_per_s": (claims_per_s * 1000.0).round() / 1000.0,
        "submit_ms": submit_ms,
    });
    if large {
        let sweep = submitted.sweep_id;
        let path = |what: &str| format!("{}/{what}", protocol::API_PREFIX);
        reset_peak_rss();
        let rss_before = rss_mb("VmRSS");
        // Each step timed over HTTP; a step that fails (the client gives up after 45 s) is
        // recorded as its error, and its figure is null.
        let t = Instant::now();
        let got: Result<serde_json::Value, _> =
            user.request::<(), _>(reqwest::Method::GET, &path(&format!("report?sweeps={sweep}")), None).await;
        out["report_ms"] = timed(&mut out, "report", t, got);
        out["report_peak_rss_mb"] = ((rss_mb("VmHWM") - rss_before).max(0.0).round()).into();
        let t = Instant::now();
        let got: Result<serde_json::Value, _> = user
            .request::<(), _>(reqwest::Method::GET, &path(&format!("sweeps/{sweep}/runs?limit=1000")), None)
            .await;
        out["runs_page_ms"] = timed(&mut out, "runs_page", t, got);
        for action in ["pause", "resume", "cancel"] {
            let t = Instant::now();
            let got: Result<serde_json::Value, _> = user
                .request(
                    reqwest::Method::POST,
                    &path(&format!("sweeps/{sweep}/{action}")),
                    Some(&serde_json::json!({})),
                )
                .await;
            out[format!("{action}_ms")] = timed(&mut out, action, t, got);
        }
    }
    Ok(out)
}

/// Milliseconds since `t` when `got` succeeded; otherwise null, with the error kept under
/// `<what>_error` in `out`.
fn timed<T>(
    out: &mut serde_json::Value,
    what: &str,
    t: Instant,
    got: Result<T, api_client::Error>,
) -> serde_json::Value {
    match got {
        Ok(_) => ((t.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0).into(),
        Err(e) => {
            out[format!("{what}_error")] = e.to_string().into();
            serde_json::Value::Null
        }
    }
}

/// Resets this process's peak resident size (VmHWM), so the next reading is the peak since.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A `/proc/self/status` size field (`VmRSS`, `VmHWM`) in MB.
fn rss_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
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
            let claimed = match claimed {
                Ok(c) => c,
                Err(e) => {
                    tally.lock().expect("tally lock").failed(&e);
                    // As a worker daemon does: wait as told (jittered), or a second.
                    let pause = e.retry_hint().unwrap_or(Duration::from_secs(1));
                    tokio::select! {
                        _ = done.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            if claimed.runs.is_empty() {
                continue;
            }
            tally.lock().expect("tally lock").claim_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            for run in claimed.runs {
                let step = StepRecord { index: 0, action: Some("true".into()), ..Default::default() };
                if let Err(e) =
                    client.upload_steps(run.run_id, run.lease_token, vec![step], vec![], vec![]).await
                {
                    tally.lock().expect("tally lock").failed(&e);
                }
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
                match client.complete(run.run_id, &req).await {
                    Ok(()) => {
                        *tally.lock().expect("tally lock").completed.entry(run.run_id).or_default() += 1
                    }
                    Err(e) => tally.lock().expect("tally lock").failed(&e),
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
