//! Workers launched by a real Slurm cluster (`scripts/test-slurm start`, which `scripts/test`
//! runs: munged, slurmctld and slurmd on this machine) against an in-process coordinator:
//! `steer slurm workers` submits the job array, a worker killed by Slurm mid-run loses
//! nothing, and a worker reaching its time limit drains and hands its runs back.
//!
//! Without a cluster (`SLURM_CONF` unset or `sinfo` failing) the tests say so and pass, except
//! under CI, where they fail: CI starts the cluster.

use std::time::Duration;

use orchestrator::store::tokens;
use protocol::Role;
use sqlx::PgPool;

mod common;

/// Whether a Slurm cluster answers here.
fn slurm_cluster() -> bool {
    let answers = std::env::var_os("SLURM_CONF").is_some()
        && std::process::Command::new("sinfo").arg("-h").output().is_ok_and(|o| o.status.success());
    if !answers {
        assert!(
            std::env::var_os("CI").is_none(),
            "no Slurm cluster answers (SLURM_CONF={:?}): `scripts/test-slurm start` starts one",
            std::env::var_os("SLURM_CONF")
        );
        eprintln!("skipped: no Slurm cluster (scripts/test-slurm start, then export SLURM_CONF)");
    }
    answers
}

/// A placeholder sweep over the demo dataset: `repeats` x 6 runs of `run_ms` each, with a
/// step about every second.
fn sweep_file(dir: &std::path::Path, name: &str, repeats: u32, run_ms: u64) -> std::path::PathBuf {
    let dataset = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo-dataset.jsonl");
    let text = format!(
        r#"name = "{name}"
repeats = {repeats}
[dataset]
name = "demo"
path = "{}"
[executor]
kind = "placeholder"
duration_ms = {run_ms}
steps = {steps}
[[agents]]
name = "a"
base_url = "http://127.0.0.1:9/v1"
model = "m"
price = "free"
[[critics]]
name = "none"
kind = "none"
"#,
        dataset.display(),
        steps = (run_ms / 1000).clamp(1, 10)
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Registered workers of Slurm array job `job`: (task id, worker id).
async fn slurm_workers(pool: &PgPool, job: &str) -> Vec<(String, uuid::Uuid)> {
    sqlx::query_as(
        "SELECT capabilities #>> '{slurm,array_task_id}', id FROM workers
         WHERE capabilities #>> '{slurm,array_job_id}' = $1 ORDER BY 1",
    )
    .bind(job)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn slurm(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The job's state as `scontrol` reports it (kept for a few minutes after it ends).
fn job_state(job: &str) -> String {
    let out = std::process::Command::new("scontrol").args(["show", "job", job]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().find_map(|w| w.strip_prefix("JobState=")).unwrap_or("UNKNOWN").to_string()
}

/// Cancels a Slurm job when dropped, so that a failing test leaves no worker job behind.
struct JobGuard(String);

impl Drop for JobGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("scancel").arg(&self.0).status();
    }
}

/// Submits `count` workers with `steer slurm workers`; the job id.
async fn submit_workers(url: &str, token: &str, dir: &std::path::Path, extra: &[&str]) -> String {
    let output = dir.join("%A_%a.log");
    let mut args = vec!["slurm", "workers", "--coordinator", url, "--output", output.to_str().unwrap()];
    args.extend_from_slice(extra);
    let (code, text) = common::steer_cli(url, token, &args).await;
    assert_eq!(code, 0, "{text}");
    let job = text.lines().next().unwrap().trim().to_string();
    assert!(job.parse::<u64>().is_ok(), "the job id first: {text}");
    assert!(!std::fs::read_dir(dir).unwrap().any(|e| e
        .unwrap()
        .path()
        .extension()
        .is_some_and(|x| x == "sh")));
    job
}

/// Every run of the sweep done, each completed by exactly one attempt; the attempts that ended
/// otherwise, by ending.
async fn ledger(pool: &PgPool, sweep: &str) -> Vec<(String, i64)> {
    let not_done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs r JOIN sweeps s ON s.id = r.sweep_id WHERE s.name = $1 AND r.state <> 'done'",
    )
    .bind(sweep)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(not_done, 0, "every run of {sweep} is done");
    let completions: Vec<i64> = sqlx::query_scalar(
        "SELECT count(a.*) FILTER (WHERE a.ending = 'completed') FROM runs r
         JOIN sweeps s ON s.id = r.sweep_id LEFT JOIN run_attempts a ON a.run_id = r.id
         WHERE s.name = $1 GROUP BY r.id",
    )
    .bind(sweep)
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(completions.iter().all(|&n| n == 1), "each run completed exactly once: {completions:?}");
    sqlx::query_as(
        "SELECT a.ending, count(*) FROM run_attempts a JOIN runs r ON r.id = a.run_id
         JOIN sweeps s ON s.id = r.sweep_id WHERE s.name = $1 AND a.ending <> 'completed'
         GROUP BY a.ending ORDER BY 1",
    )
    .bind(sweep)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn a_worker_killed_by_slurm_mid_run_loses_no_run(pool: PgPool) {
    if !slurm_cluster() {
        return;
    }
    let coordinator = common::start_coordinator(&pool, Duration::from_secs(3)).await;
    let url = coordinator.url.clone();
    let user = tokens::create(&pool, "alice", Role::User).await.unwrap().token;
    let worker_token = tokens::create(&pool, "slurm-workers", Role::Worker).await.unwrap().token;
    let dir = tempfile::tempdir().unwrap();

    let job = submit_workers(
        &url,
        &worker_token,
        dir.path(),
        &[
            "--count",
            "2",
            "--slots",
            "2",
            "--job-name",
            "steer-kill-test",
            "--",
            "--no-docker",
            "--claim-wait",
            "500ms",
        ],
    )
    .await;
    let _cancel = JobGuard(job.clone());
    wait_for("both workers to register", Duration::from_secs(60), || async {
        slurm_workers(&pool, &job).await.len() == 2
    })
    .await;
    let workers = slurm_workers(&pool, &job).await;
    assert_eq!(workers.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["0", "1"]);
    // `steer workers` shows each worker's job and task.
    let (code, listing) = common::steer_cli(&url, &user, &["workers"]).await;
    assert_eq!(code, 0, "{listing}");
    assert!(listing.contains(&format!("steer-kill-test-{job}_0")), "{listing}");
    assert!(listing.contains(&format!(" {job}_1 ")), "{listing}");

    // 12 runs of 6 s on 4 slots (a step every second).
    let sweep = sweep_file(dir.path(), "slurm-kill", 2, 6000);
    let (code, text) = common::steer_cli(&url, &user, &["sweep", "submit", sweep.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{text}");
    let victim = workers[0].1;
    // Mid-run: task 0 has recorded a step of a run it still holds.
    wait_for("task 0 to be working on a run", Duration::from_secs(60), || async {
        let working: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs r WHERE r.state = 'running' AND r.lease_owner = $1
               AND EXISTS (SELECT 1 FROM steps s WHERE s.run_id = r.id AND s.attempt = r.attempt)",
        )
        .bind(victim)
        .fetch_one(&pool)
        .await
        .unwrap();
        working > 0
    })
    .await;
    // Killed as preemption kills: SIGKILL, no time to hand anything back.
    slurm("scancel", &["--full", "--signal=KILL", &format!("{job}_0")]);

    wait_for("the sweep to complete", Duration::from_secs(120), || async {
        let state: String = sqlx::query_scalar("SELECT state FROM sweeps WHERE name = 'slurm-kill'")
            .fetch_one(&pool)
            .await
            .unwrap();
        state == "completed"
    })
    .await;
    let by_victim: Vec<(i64, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT run_id, ending, reason FROM run_attempts WHERE worker_id = $1 ORDER BY claimed_at",
    )
    .bind(victim)
    .fetch_all(&pool)
    .await
    .unwrap();
    let others = ledger(&pool, "slurm-kill").await;
    eprintln!(
        "attempts of the killed worker: {by_victim:?}; job {job}_0: {}",
        job_state(&format!("{job}_0"))
    );
    let expired = others.iter().find(|(e, _)| e == "expired").map_or(0, |(_, n)| *n);
    assert!(expired > 0, "the killed worker's runs were taken back when their leases expired: {others:?}");
    let by_victim_done: i64 =
        sqlx::query_scalar("SELECT count(*) FROM run_attempts WHERE worker_id = $1 AND ending = 'expired'")
            .bind(victim)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(by_victim_done, expired, "only the killed worker's attempts expired");

    coordinator.shutdown().await;
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn a_worker_at_its_time_limit_drains_and_hands_its_runs_back(pool: PgPool) {
    if !slurm_cluster() {
        return;
    }
    let coordinator = common::start_coordinator(&pool, Duration::from_secs(3)).await;
    let url = coordinator.url.clone();
    let user = tokens::create(&pool, "alice", Role::User).await.unwrap().token;
    let worker_token = tokens::create(&pool, "slurm-workers", Role::Worker).await.unwrap().token;
    let dir = tempfile::tempdir().unwrap();

    // Runs far longer than the job may live: the worker cannot finish them in time.
    let sweep = sweep_file(dir.path(), "slurm-limit", 1, 600_000);
    let (code, text) = common::steer_cli(&url, &user, &["sweep", "submit", sweep.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{text}");
    // One minute of time; Slurm warns it 40 s before the end (within its ~30 s polling).
    let job = submit_workers(
        &url,
        &worker_token,
        dir.path(),
        &[
            "--count",
            "1",
            "--slots",
            "2",
            "--time",
            "1",
            "--signal-margin",
            "40s",
            "--job-name",
            "steer-limit-test",
            "--",
            "--no-docker",
            "--claim-wait",
            "500ms",
        ],
    )
    .await;
    let _cancel = JobGuard(job.clone());
    wait_for("the worker to register", Duration::from_secs(60), || async {
        slurm_workers(&pool, &job).await.len() == 1
    })
    .await;
    let worker = slurm_workers(&pool, &job).await[0].1;
    // Warned, it hands back both runs it holds, and leaves before its time is up.
    wait_for("the worker to hand its runs back", Duration::from_secs(120), || async {
        let released: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM run_attempts WHERE worker_id = $1 AND ending = 'released'",
        )
        .bind(worker)
        .fetch_one(&pool)
        .await
        .unwrap();
        released == 2
    })
    .await;
    wait_for("the job to end", Duration::from_secs(60), || async {
        !matches!(job_state(&format!("{job}_0")).as_str(), "RUNNING" | "PENDING" | "COMPLETING")
    })
    .await;
    assert_eq!(job_state(&format!("{job}_0")), "COMPLETED", "the worker left on its own, not at the limit");
    let (expired, running): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE ending = 'expired'), count(*) FILTER (WHERE ending IS NULL)
         FROM run_attempts WHERE worker_id = $1",
    )
    .bind(worker)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((expired, running), (0, 0), "nothing left to expire");
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs r JOIN sweeps s ON s.id = r.sweep_id WHERE s.name = 'slurm-limit' AND r.state = 'queued'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(queued, 6, "every run is back in the queue for another worker");

    let (code, text) = common::steer_cli(&url, &user, &["sweep", "cancel", "slurm-limit"]).await;
    assert_eq!(code, 0, "{text}");
    coordinator.shutdown().await;
}
