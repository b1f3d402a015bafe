//! `steer bench queue`: throughput and latency of the queue against a real Postgres.
//!
//! W simulated workers run claim + heartbeat + complete cycles through [`Queue`] (the same code
//! the API calls) until R runs are done. The same cycles also run as bare SQL statements (one
//! `UPDATE ... FOR UPDATE SKIP LOCKED` claim, one heartbeat `UPDATE`, one completion `UPDATE`,
//! no fencing checks, caps, fairness or transactions) as the ceiling; the two alternate over a
//! few rounds and the medians are reported. Everything happens in a
//! scratch database created on the same server and dropped afterwards.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use protocol::{CompleteRun, Heartbeat, LeaseRef, Outcome, RunTotals};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use orchestrator::db;
use orchestrator::queue::{Queue, Registrar};

use crate::bench::{percentile, ScratchDb};
use crate::cli::DatabaseArgs;

#[derive(Args, Debug)]
pub struct QueueBenchArgs {
    /// Concurrent simulated workers (each with its own connection).
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Runs to push through the queue (and again through the bare-SQL loop).
    #[arg(long, default_value_t = 5000)]
    pub runs: usize,
    /// Rounds of each loop; the figures are medians over rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Print only the JSON object (the default prints it too, after a one-line summary on stderr).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

#[derive(Debug, serde::Serialize)]
pub struct QueueBenchReport {
    pub workers: usize,
    pub runs: usize,
    pub rounds: usize,
    pub claims_per_s: f64,
    pub p50_claim_ms: f64,
    pub p99_claim_ms: f64,
    pub duplicates: usize,
    pub lost: usize,
    pub raw_claims_per_s: f64,
    pub ratio_to_raw: f64,
}

pub async fn queue(args: QueueBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.workers >= 1 && args.runs >= 1 && args.rounds >= 1,
        "--workers, --runs and --rounds must be at least 1"
    );
    let report = run_queue_bench(&args.db.database_url, args.workers, args.runs, args.rounds).await?;
    if !args.json {
        eprintln!(
            "queue: {:.0} claims/s (p50 {:.2} ms, p99 {:.2} ms), bare SQL {:.0} claims/s, {} duplicates, {} lost",
            report.claims_per_s, report.p50_claim_ms, report.p99_claim_ms, report.raw_claims_per_s, report.duplicates, report.lost
        );
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn run_queue_bench(
    database_url: &str,
    workers: usize,
    runs: usize,
    rounds: usize,
) -> anyhow::Result<QueueBenchReport> {
    let scratch = ScratchDb::create(database_url).await?;
    let result = async {
        let pool = PgPoolOptions::new()
            .max_connections(workers as u32 + 2)
            .connect_with(scratch.options.clone().options([("plan_cache_mode", "force_generic_plan")]))
            .await
            .context("connecting to the scratch database")?;
        db::MIGRATOR.run(&pool).await?;
        let report = measure(&pool, workers, runs, rounds).await;
        pool.close().await;
        report
    }
    .await;
    scratch.drop_db().await?;
    result
}

/// Alternates the two loops over `rounds` rounds (each goes first in turn, so neither always
/// meets a cold cache or a table bloated by the other) and reports the medians.
async fn measure(
    pool: &PgPool,
    workers: usize,
    runs: usize,
    rounds: usize,
) -> anyhow::Result<QueueBenchReport> {
    let mut ours = Vec::new();
    let mut raw = Vec::new();
    let mut latencies = Vec::new();
    let mut duplicates = 0;
    let mut lost = 0;
    for round in 0..rounds {
        for which in [round % 2, (round + 1) % 2] {
            if which == 0 {
                let r = queue_round(pool, workers, runs, round).await?;
                ours.push(r.claims_per_s);
                latencies.extend(r.latencies);
                duplicates += r.duplicates;
                lost += r.lost;
            } else {
                raw.push(raw_round(pool, workers, runs, round).await?);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let claims_per_s = median(&mut ours);
    let raw_claims_per_s = median(&mut raw);
    Ok(QueueBenchReport {
        workers,
        runs,
        rounds,
        claims_per_s: round(claims_per_s, 1),
        p50_claim_ms: round(percentile(&latencies, 0.50), 3),
        p99_claim_ms: round(percentile(&latencies, 0.99), 3),
        duplicates,
        lost,
        raw_claims_per_s: round(raw_claims_per_s, 1),
        ratio_to_raw: round(claims_per_s / raw_claims_per_s, 3),
    })
}

struct QueueRound {
    claims_per_s: f64,
    latencies: Vec<f64>,
    duplicates: usize,
    lost: usize,
}

async fn queue_round(pool: &PgPool, workers: usize, runs: usize, round: usize) -> anyhow::Result<QueueRound> {
    let sweep = seed(pool, &format!("bench-queue-{round}"), runs).await?;
    let queue = Queue::new(pool.clone(), Duration::from_secs(300));
    let mut ids = Vec::with_capacity(workers);
    for _ in 0..workers {
        ids.push(register_worker(pool).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = ids.into_iter().map(|w| tokio::spawn(worker_cycles(queue.clone(), w))).collect();
    let mut claimed = Vec::new();
    let mut latencies = Vec::new();
    for t in tasks {
        let (ids, lat) = t.await??;
        claimed.extend(ids);
        latencies.extend(lat);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let distinct: HashSet<i64> = claimed.iter().copied().collect();
    let done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs WHERE sweep_id = $1 AND state = 'done' AND attempt = 1",
    )
    .bind(sweep)
    .fetch_one(pool)
    .await?;
    Ok(QueueRound {
        claims_per_s: claimed.len() as f64 / elapsed,
        latencies,
        duplicates: claimed.len() - distinct.len(),
        lost: runs.saturating_sub(done as usize),
    })
}

async fn raw_round(pool: &PgPool, workers: usize, runs: usize, round: usize) -> anyhow::Result<f64> {
    let sweep = seed(pool, &format!("bench-raw-{round}"), runs).await?;
    let mut ids = Vec::with_capacity(workers);
    for _ in 0..workers {
        ids.push(register_worker(pool).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = ids.into_iter().map(|w| tokio::spawn(raw_cycles(pool.clone(), w, sweep))).collect();
    let mut n = 0usize;
    for t in tasks {
        n += t.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One simulated worker: claim one run, heartbeat it, complete it, until the queue is empty.
async fn worker_cycles(queue: Queue, worker: Uuid) -> anyhow::Result<(Vec<i64>, Vec<f64>)> {
    let kinds = [protocol::ExecutorKind::Placeholder];
    let mut ids = Vec::new();
    let mut latencies = Vec::new();
    loop {
        let t = Instant::now();
        let leases = queue.claim(worker, 1, &kinds).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        let Some(lease) = leases.into_iter().next() else { return Ok((ids, latencies)) };
        ids.push(lease.run_id);
        let beat = Heartbeat {
            leases: vec![LeaseRef { run_id: lease.run_id, lease_token: lease.lease_token }],
            ..Default::default()
        };
        let ack = queue.heartbeat(worker, Registrar::NONE, &beat).await?;
        anyhow::ensure!(ack.lost.is_empty(), "run {} lost its lease during the benchmark", lease.run_id);
        let done = CompleteRun {
            lease_token: lease.lease_token,
            outcome: Outcome::SyntheticResolved,
            totals: RunTotals::default(),
            patch: None,
            evaluation: None,
            detail: None,
        };
        queue.complete(lease.run_id, Registrar::NONE, &done).await?;
    }
}

/// The ceiling: the same three steps as bare single statements.
async fn raw_cycles(pool: PgPool, worker: Uuid, sweep: i64) -> anyhow::Result<usize> {
    let mut n = 0;
    loop {
        let claimed: Option<(i64, Uuid)> = sqlx::query_as(
            "UPDATE runs SET state = 'running', attempt = attempt + 1, lease_owner = $1, lease_token = gen_random_uuid(),
                             lease_expires_at = now() + interval '5 minutes'
             WHERE id = (SELECT id FROM runs WHERE state = 'queued' AND sweep_id = $2 ORDER BY fair_seq, id
                         LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id, lease_token",
        )
        .bind(worker)
        .bind(sweep)
        .fetch_optional(&pool)
        .await?;
        let Some((id, token)) = claimed else { return Ok(n) };
        n += 1;
        sqlx::query("UPDATE runs SET lease_expires_at = now() + interval '5 minutes' WHERE id = $1 AND lease_token = $2")
            .bind(id)
            .bind(token)
            .execute(&pool)
            .await?;
        sqlx::query(
            "UPDATE runs SET state = 'done', outcome = 'synthetic_resolved', lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND lease_token = $2",
        )
        .bind(id)
        .bind(token)
        .execute(&pool)
        .await?;
    }
}

async fn register_worker(pool: &PgPool) -> anyhow::Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO workers (id, name, host, slots, version) VALUES ($1, 'bench', 'bench', 1, 'bench')",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(id)
}

/// A sweep of `runs` queued runs (one instance, `runs` repeats, no caps, no budget).
async fn seed(pool: &PgPool, name: &str, runs: usize) -> anyhow::Result<i64> {
    let dataset: i64 = sqlx::query_scalar(
        "INSERT INTO datasets (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
    )
    .bind("bench")
    .fetch_one(pool)
    .await?;
    sqlx::query(
        "INSERT INTO instances (dataset_id, instance_id, repo, base_commit, patch, test_patch, problem_statement,
                                version, fail_to_pass, pass_to_pass)
         VALUES ($1, 'bench__bench-1', 'bench/bench', 'abc1234', '', '', '', '0', '[\"t\"]', '[]')
         ON CONFLICT DO NOTHING",
    )
    .bind(dataset)
    .execute(pool)
    .await?;
    let sweep: i64 = sqlx::query_scalar(
        "INSERT INTO sweeps (name, config_hash, config_toml, spec, dataset_id, max_attempts)
         VALUES ($1, 'bench', '', '{\"executor\": {\"kind\": \"placeholder\"}}', $2, 3) RETURNING id",
    )
    .bind(name)
    .bind(dataset)
    .fetch_one(pool)
    .await?;
    let endpoint: i64 = sqlx::query_scalar(
        "INSERT INTO endpoints (base_url) VALUES ('http://bench.invalid/v1')
         ON CONFLICT (base_url) DO UPDATE SET base_url = EXCLUDED.base_url RETURNING id",
    )
    .fetch_one(pool)
    .await?;
    let agent: i64 = sqlx::query_scalar(
        "INSERT INTO agents (sweep_id, name, endpoint_id, model, price_input_per_mtok, price_output_per_mtok,
                             price_cached_per_mtok, max_steps, max_wall_time_s, spec)
         VALUES ($1, 'bench', $2, 'bench', 0, 0, 0, 1, 1, '{}') RETURNING id",
    )
    .bind(sweep)
    .bind(endpoint)
    .fetch_one(pool)
    .await?;
    let critic: i64 = sqlx::query_scalar(
        "INSERT INTO critics (sweep_id, name, kind, spec) VALUES ($1, 'none', 'none', '{}') RETURNING id",
    )
    .bind(sweep)
    .fetch_one(pool)
    .await?;
    sqlx::query(
        "INSERT INTO runs (sweep_id, dataset_id, instance_id, agent_id, critic_id, endpoint_id, repeat_index, fair_seq)
         SELECT $1, $2, 'bench__bench-1', $3, $4, $5, g, g FROM generate_series(0, $6 - 1) AS g",
    )
    .bind(sweep)
    .bind(dataset)
    .bind(agent)
    .bind(critic)
    .bind(endpoint)
    .bind(runs as i32)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE runs").execute(pool).await?;
    Ok(sweep)
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::run_queue_bench;

    // The benchmark's own bookkeeping must hold: every run claimed once, none lost.
    #[tokio::test]
    async fn queue_bench_claims_every_run_exactly_once() {
        let url = std::env::var("DATABASE_URL").expect("DATABASE_URL must point at a test server");
        let r = run_queue_bench(&url, 3, 150, 1).await.unwrap();
        assert_eq!((r.duplicates, r.lost), (0, 0), "{r:?}");
        assert!(r.claims_per_s > 0.0 && r.raw_claims_per_s > 0.0, "{r:?}");
    }
}
