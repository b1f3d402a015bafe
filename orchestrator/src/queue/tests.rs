//! Queue tests against a real Postgres: a fresh database per test (`#[sqlx::test]`).

use std::collections::HashMap;
use std::time::Duration;

use protocol::{CompleteRun, ExecutorKind, Heartbeat, LeaseRef, Outcome, RunTotals, StepRecord, UploadSteps};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Lease, Queue, Registrar, Requeued, RunState};
use crate::db::Error;
use crate::store::sweeps;
use crate::testkit::{import_demo, submit, sweep_toml};

async fn worker(pool: &PgPool) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO workers (id, name, host, slots, version) VALUES ($1, 'w', 'h', 1, 't')")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    id
}

/// Every executor kind: these tests are about the queue, not about which worker runs what.
fn kinds() -> Vec<ExecutorKind> {
    vec![ExecutorKind::Placeholder, ExecutorKind::Evaluate]
}

fn done(lease: &Lease, cost: &str) -> CompleteRun {
    CompleteRun {
        lease_token: lease.lease_token,
        outcome: Outcome::SyntheticUnresolved,
        totals: RunTotals { steps: 1, agent_cost_usd: cost.parse().unwrap(), ..Default::default() },
        patch: None,
        evaluation: None,
        detail: None,
    }
}

fn beat(leases: Vec<LeaseRef>) -> Heartbeat {
    Heartbeat { leases, ..Default::default() }
}

fn upload(lease: &Lease, steps: &[StepRecord]) -> UploadSteps {
    UploadSteps {
        lease_token: lease.lease_token,
        steps: steps.to_vec(),
        llm_calls: vec![],
        critic_calls: vec![],
    }
}

/// Makes every lease look expired, as if its worker had gone silent for the lease's length.
async fn age_leases(pool: &PgPool) {
    sqlx::query("UPDATE runs SET lease_expires_at = now() - interval '1 second' WHERE state = 'running'")
        .execute(pool)
        .await
        .unwrap();
}

async fn state_of(pool: &PgPool, run: i64) -> (String, i32, i32, Option<String>) {
    sqlx::query_as("SELECT state, attempt, failed_attempts, last_error FROM runs WHERE id = $1")
        .bind(run)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn concurrent_claimers_never_share_a_run(pool: PgPool) {
    import_demo(&pool, "demo").await;
    // 6 instances x 50 repeats = 300 runs, raced by 12 claimers taking 1 to 4 at a time.
    let s = submit(&pool, &sweep_toml("race", "repeats = 50", "")).await;
    assert_eq!(s.runs, 300);
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let mut tasks = Vec::new();
    for i in 0..12u32 {
        let queue = queue.clone();
        let w = worker(&pool).await;
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = queue.claim(w, 1 + i % 4, &kinds()).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|l| (l.run_id, l.attempt)));
            }
        }));
    }
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for t in tasks {
        for (run, attempt) in t.await.unwrap() {
            assert_eq!(attempt, 1);
            *seen.entry(run).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 300, "every run claimed");
    assert!(seen.values().all(|n| *n == 1), "no run claimed twice");
    let running: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE state = 'running'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(running, 300);
    assert_ledger_true(&pool).await;
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn expired_lease_requeues_then_errors_after_max_attempts(pool: PgPool) {
    import_demo(&pool, "demo").await;
    submit(&pool, &sweep_toml("expiry", "max_attempts = 2\n[select]\nids = [\"steerbench__demo-1\"]", ""))
        .await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;

    let first = queue.claim(w, 1, &kinds()).await.unwrap().remove(0);
    age_leases(&pool).await;
    let moved = queue.expire_leases(100).await.unwrap();
    assert_eq!(moved.get(RunState::Queued), 1);
    let (state, attempt, failed, _) = state_of(&pool, first.run_id).await;
    assert_eq!((state.as_str(), attempt, failed), ("queued", 1, 1));

    let second = queue.claim(w, 1, &kinds()).await.unwrap().remove(0);
    assert_eq!(second.run_id, first.run_id);
    assert_eq!(second.attempt, 2);
    assert_ne!(second.lease_token, first.lease_token);
    age_leases(&pool).await;
    queue.expire_leases(100).await.unwrap();
    let (state, _, failed, reason) = state_of(&pool, first.run_id).await;
    assert_eq!((state.as_str(), failed), ("error", 2));
    let reason = reason.unwrap();
    assert!(reason.contains("lease expired on attempt 2") && reason.contains("2 of 2"), "{reason}");
    // Nothing left: the sweep is over.
    assert!(queue.claim(w, 1, &kinds()).await.unwrap().is_empty());
    let status = sweeps::status(&pool, second.sweep_id).await.unwrap();
    assert_eq!(status.state, protocol::SweepState::Completed);
    assert_ledger_true(&pool).await;
}

/// A one-run sweep whose first holder's lease expired and a second worker claimed it again.
struct Reclaimed {
    queue: Queue,
    old_w: Uuid,
    new_w: Uuid,
    old: Lease,
    new: Lease,
}

async fn expired_and_reclaimed(pool: &PgPool, sweep: &str) -> Reclaimed {
    import_demo(pool, "demo").await;
    submit(pool, &sweep_toml(sweep, "[select]\nids = [\"steerbench__demo-1\"]", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let (old_w, new_w) = (worker(pool).await, worker(pool).await);
    let old = queue.claim(old_w, 1, &kinds()).await.unwrap().remove(0);
    age_leases(pool).await;
    queue.expire_leases(100).await.unwrap();
    let new = queue.claim(new_w, 1, &kinds()).await.unwrap().remove(0);
    Reclaimed { queue, old_w, new_w, old, new }
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn stale_lease_token_is_rejected_everywhere(pool: PgPool) {
    let Reclaimed { queue, old_w, old, new, .. } = expired_and_reclaimed(&pool, "fence").await;

    // The partitioned worker comes back and tries to write with its old lease.
    let step = StepRecord { index: 0, action: Some("ls".into()), ..Default::default() };
    assert!(matches!(
        queue.upload_steps(old.run_id, Registrar::NONE, &upload(&old, std::slice::from_ref(&step))).await,
        Err(Error::LeaseLost(_))
    ));
    assert!(matches!(
        queue.complete(old.run_id, Registrar::NONE, &done(&old, "0")).await,
        Err(Error::LeaseLost(_))
    ));
    assert!(matches!(
        queue.fail(old.run_id, Registrar::NONE, old.lease_token, "x").await,
        Err(Error::LeaseLost(_))
    ));
    assert!(matches!(
        queue.release(old.run_id, Registrar::NONE, old.lease_token, "x").await,
        Err(Error::LeaseLost(_))
    ));
    let ack = queue
        .heartbeat(
            old_w,
            Registrar::NONE,
            &beat(vec![LeaseRef { run_id: old.run_id, lease_token: old.lease_token }]),
        )
        .await
        .unwrap();
    assert_eq!(ack.lost, vec![old.run_id]);

    // The new holder is unaffected, and its completion is idempotent.
    queue.upload_steps(new.run_id, Registrar::NONE, &upload(&new, &[step])).await.unwrap();
    queue.complete(new.run_id, Registrar::NONE, &done(&new, "0")).await.unwrap();
    queue.complete(new.run_id, Registrar::NONE, &done(&new, "0")).await.unwrap();
    let steps: Vec<(i32,)> = sqlx::query_as("SELECT attempt FROM steps WHERE run_id = $1")
        .bind(new.run_id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(steps, vec![(2,)], "only the live attempt's step was stored");
    // After completion even the right token cannot fail or release the run.
    assert!(matches!(
        queue.fail(new.run_id, Registrar::NONE, new.lease_token, "late").await,
        Err(Error::LeaseLost(_))
    ));
    assert_ledger_true(&pool).await;
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn heartbeat_extends_only_held_leases(pool: PgPool) {
    import_demo(&pool, "demo").await;
    submit(&pool, &sweep_toml("hb", "", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let (a, b) = (worker(&pool).await, worker(&pool).await);
    let mine = queue.claim(a, 2, &kinds()).await.unwrap();
    let theirs = queue.claim(b, 1, &kinds()).await.unwrap();
    age_leases(&pool).await;
    let mut refs: Vec<LeaseRef> =
        mine.iter().map(|l| LeaseRef { run_id: l.run_id, lease_token: l.lease_token }).collect();
    // A worker cannot extend another worker's lease, even with its token.
    refs.push(LeaseRef { run_id: theirs[0].run_id, lease_token: theirs[0].lease_token });
    let ack = queue.heartbeat(a, Registrar::NONE, &beat(refs)).await.unwrap();
    assert_eq!(ack.lost, vec![theirs[0].run_id]);
    let moved = queue.expire_leases(100).await.unwrap();
    assert_eq!(moved.get(RunState::Queued), 1, "only the unextended lease expired");
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn budget_stops_the_sweep(pool: PgPool) {
    import_demo(&pool, "demo").await;
    let s = submit(&pool, &sweep_toml("budget", "budget_usd = 0.05", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;
    let leases = queue.claim(w, 2, &kinds()).await.unwrap();
    queue.complete(leases[0].run_id, Registrar::NONE, &done(&leases[0], "0.03")).await.unwrap();
    let status = sweeps::status(&pool, s.sweep_id).await.unwrap();
    assert_eq!(status.state, protocol::SweepState::Running);
    queue.complete(leases[1].run_id, Registrar::NONE, &done(&leases[1], "0.025")).await.unwrap();
    let status = sweeps::status(&pool, s.sweep_id).await.unwrap();
    assert_eq!(status.state, protocol::SweepState::Stopped);
    assert_eq!(status.spent_usd, "0.055".parse::<Decimal>().unwrap());
    assert!(status.stop_reason.as_deref().unwrap().contains("budget exhausted"), "{:?}", status.stop_reason);
    assert_eq!(status.states["cancelled"], 4);
    assert!(queue.claim(w, 10, &kinds()).await.unwrap().is_empty(), "no run of a spent sweep is claimed");
    // Resuming needs a larger budget.
    assert!(matches!(sweeps::resume(&pool, s.sweep_id, None).await, Err(Error::Conflict(_))));
    sweeps::resume(&pool, s.sweep_id, Some("1".parse().unwrap())).await.unwrap();
    assert_eq!(queue.claim(w, 10, &kinds()).await.unwrap().len(), 4);
    assert_ledger_true(&pool).await;
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn resubmitting_the_same_sweep_adds_nothing(pool: PgPool) {
    import_demo(&pool, "demo").await;
    let toml = sweep_toml("idem", "repeats = 2", "");
    let first = submit(&pool, &toml).await;
    assert!(first.created);
    // Same content, different comments and key order: same sweep.
    let reformatted = format!("# a comment\n{}", toml.replace("repeats = 2", "repeats    = 2 # two"));
    let again = submit(&pool, &reformatted).await;
    assert!(!again.created);
    assert_eq!(again.sweep_id, first.sweep_id);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs").fetch_one(&pool).await.unwrap();
    assert_eq!(runs, 12);
    // Same name, other configuration: refused rather than silently duplicated.
    let other = crate::sweep_file::parse(&sweep_toml("idem", "repeats = 3", ""), "t.toml").unwrap();
    assert!(matches!(sweeps::submit(&pool, &other, "").await, Err(Error::Conflict(_))));
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn cancel_stops_queued_and_running_runs(pool: PgPool) {
    import_demo(&pool, "demo").await;
    let s = submit(&pool, &sweep_toml("cancel", "", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;
    let held = queue.claim(w, 2, &kinds()).await.unwrap();
    let status = sweeps::cancel(&pool, s.sweep_id).await.unwrap();
    assert_eq!(status.states["cancelled"], 4);
    assert_eq!(status.states["running"], 2);
    let refs: Vec<LeaseRef> =
        held.iter().map(|l| LeaseRef { run_id: l.run_id, lease_token: l.lease_token }).collect();
    let ack = queue.heartbeat(w, Registrar::NONE, &beat(refs)).await.unwrap();
    assert_eq!(ack.cancelled.len(), 2, "the worker is told to stop both");
    assert_eq!(
        queue.release(held[0].run_id, Registrar::NONE, held[0].lease_token, "sweep cancelled").await.unwrap(),
        Requeued::Cancelled
    );
    // A run that finished anyway keeps its result.
    queue.complete(held[1].run_id, Registrar::NONE, &done(&held[1], "0")).await.unwrap();
    let status = sweeps::status(&pool, s.sweep_id).await.unwrap();
    assert_eq!((status.states["cancelled"], status.states["done"]), (5, 1));
    assert!(queue.claim(w, 10, &kinds()).await.unwrap().is_empty());
    assert!(matches!(sweeps::cancel(&pool, s.sweep_id).await, Err(Error::Conflict(_))));
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn pause_holds_back_runs_and_resume_requeues_only_unfinished(pool: PgPool) {
    import_demo(&pool, "demo").await;
    let s = submit(&pool, &sweep_toml("pause", "", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;
    let first = queue.claim(w, 1, &kinds()).await.unwrap().remove(0);
    queue.complete(first.run_id, Registrar::NONE, &done(&first, "0")).await.unwrap();
    sweeps::pause(&pool, s.sweep_id).await.unwrap();
    assert!(queue.claim(w, 10, &kinds()).await.unwrap().is_empty());
    let status = sweeps::resume(&pool, s.sweep_id, None).await.unwrap();
    assert_eq!((status.states["queued"], status.states["done"]), (5, 1));
    let rest = queue.claim(w, 10, &kinds()).await.unwrap();
    assert_eq!(rest.len(), 5);
    assert!(rest.iter().all(|l| l.run_id != first.run_id), "a finished run is not re-run");
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn concurrent_sweeps_share_the_fleet_fairly(pool: PgPool) {
    import_demo(&pool, "demo").await;
    let a = submit(&pool, &sweep_toml("fair-a", "repeats = 5", "")).await;
    let b = submit(&pool, &sweep_toml("fair-b", "repeats = 5", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;
    let first = queue.claim(w, 20, &kinds()).await.unwrap();
    let from_a = first.iter().filter(|l| l.sweep_id == a.sweep_id).count();
    let from_b = first.iter().filter(|l| l.sweep_id == b.sweep_id).count();
    assert_eq!((from_a, from_b), (10, 10), "the later sweep is not queued behind all of the earlier one");
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn endpoint_cap_holds_across_claimers_and_sweeps(pool: PgPool) {
    import_demo(&pool, "demo").await;
    submit(&pool, &sweep_toml("cap-a", "repeats = 10", "max_concurrency = 3")).await;
    // Another sweep on the same endpoint shares its cap.
    submit(&pool, &sweep_toml("cap-b", "repeats = 10", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let queue = queue.clone();
        let w = worker(&pool).await;
        tasks.push(tokio::spawn(async move { queue.claim(w, 5, &kinds()).await.unwrap() }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.extend(t.await.unwrap());
    }
    assert_eq!(held.len(), 3, "fleet-wide cap of 3 on the endpoint");
    let w = worker(&pool).await;
    queue.complete(held[0].run_id, Registrar::NONE, &done(&held[0], "0")).await.unwrap();
    assert_eq!(queue.claim(w, 5, &kinds()).await.unwrap().len(), 1, "a finished run frees one place");
    // The capped path opens its attempts too.
    assert_ledger_true(&pool).await;
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn sweep_cap_limits_running_runs(pool: PgPool) {
    import_demo(&pool, "demo").await;
    submit(&pool, &sweep_toml("cap-sweep", "max_running = 2", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;
    assert_eq!(queue.claim(w, 6, &kinds()).await.unwrap().len(), 2);
    assert!(queue.claim(w, 6, &kinds()).await.unwrap().is_empty());
    assert_ledger_true(&pool).await;
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn infra_failures_count_attempts_but_hand_backs_do_not(pool: PgPool) {
    import_demo(&pool, "demo").await;
    submit(&pool, &sweep_toml("fail", "max_attempts = 2\n[select]\nids = [\"steerbench__demo-2\"]", ""))
        .await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;
    for _ in 0..3 {
        let l = queue.claim(w, 1, &kinds()).await.unwrap().remove(0);
        assert_eq!(
            queue.release(l.run_id, Registrar::NONE, l.lease_token, "draining").await.unwrap(),
            Requeued::Queued
        );
    }
    let l = queue.claim(w, 1, &kinds()).await.unwrap().remove(0);
    assert_eq!(
        queue.fail(l.run_id, Registrar::NONE, l.lease_token, "docker daemon unreachable").await.unwrap(),
        Requeued::Queued
    );
    let l = queue.claim(w, 1, &kinds()).await.unwrap().remove(0);
    assert_eq!(l.attempt, 5);
    assert_eq!(
        queue.fail(l.run_id, Registrar::NONE, l.lease_token, "docker daemon unreachable").await.unwrap(),
        Requeued::Error
    );
    let (state, _, failed, reason) = state_of(&pool, l.run_id).await;
    assert_eq!((state.as_str(), failed), ("error", 2));
    assert!(reason.unwrap().contains("docker daemon unreachable"));
    assert_ledger_true(&pool).await;
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn maintenance_completes_a_sweep_once_its_last_run_finishes(pool: PgPool) {
    import_demo(&pool, "demo").await;
    let s = submit(
        &pool,
        &sweep_toml("finish", "[select]\nids = [\"steerbench__demo-1\", \"steerbench__demo-2\"]", ""),
    )
    .await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;
    let leases = queue.claim(w, 2, &kinds()).await.unwrap();
    queue.complete(leases[0].run_id, Registrar::NONE, &done(&leases[0], "0")).await.unwrap();
    assert!(queue.finish_sweeps(None).await.unwrap().is_empty(), "one run still running");
    queue.complete(leases[1].run_id, Registrar::NONE, &done(&leases[1], "0")).await.unwrap();
    assert_eq!(queue.finish_sweeps(None).await.unwrap(), vec![s.sweep_id]);
    let status = sweeps::status(&pool, s.sweep_id).await.unwrap();
    assert_eq!(status.state, protocol::SweepState::Completed);
    assert!(status.finished_at.is_some());
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn workers_get_only_runs_of_executor_kinds_they_can_run(pool: PgPool) {
    import_demo(&pool, "demo").await;
    let eval = sweep_toml("kinds", "", "").replace(
        "[executor]\nkind = \"placeholder\"\nduration_ms = 0\nsteps = 1",
        "[executor]\nkind = \"evaluate\"\npatch = \"gold\"",
    );
    submit(&pool, &eval).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;
    assert!(
        queue.claim(w, 10, &[ExecutorKind::Placeholder]).await.unwrap().is_empty(),
        "a placeholder-only worker"
    );
    assert_eq!(queue.claim(w, 10, &[ExecutorKind::Evaluate]).await.unwrap().len(), 6);
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn a_worker_holding_an_image_gets_runs_of_that_image_first(pool: PgPool) {
    import_demo(&pool, "demo").await;
    let s = submit(&pool, &sweep_toml("local", "", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;
    // What `steer images pull` fetches: one image per instance.
    assert_eq!(sweeps::images(&pool, s.sweep_id).await.unwrap().len(), 6);
    // Runs are stored with the image their sandbox will use.
    let image: String = sqlx::query_scalar("SELECT image FROM runs WHERE instance_id = 'steerbench__demo-5'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(image, "swebench/sweb.eval.x86_64.steerbench_1776_demo-5:latest");
    let held = vec![image.clone()];
    // demo-5 is fifth in dispatch order, but this worker has its image.
    let got = queue.claim_near(w, 1, &kinds(), &held).await.unwrap();
    assert_eq!(got[0].instance_id, "steerbench__demo-5");
    // Without a matching image it falls back to fair order.
    let got = queue.claim_near(w, 1, &kinds(), &held).await.unwrap();
    assert_eq!(got[0].instance_id, "steerbench__demo-1");
    // Heartbeats store what the worker holds.
    let status = Heartbeat {
        images: Some(held.clone()),
        status: Some("pulling x: 1 of 2 layers done".into()),
        ..Default::default()
    };
    queue.heartbeat(w, Registrar::NONE, &status).await.unwrap();
    let stored = crate::store::workers::holdings(&pool, w).await.unwrap().unwrap();
    assert_eq!(stored.images, held);
    // The fleet listing shows what the worker holds, runs and is doing.
    let listed = crate::store::workers::list(&pool, Some(60.0)).await.unwrap();
    let me = listed.iter().find(|x| x.id == w).unwrap();
    assert_eq!((me.images, me.running), (1, 2));
    assert_eq!(me.status.as_deref(), Some("pulling x: 1 of 2 layers done"));
}

/// Runs that break the attempt ledger's rules, with the rule they break: a running run has
/// exactly one open attempt (its current one, claimed by its lease owner); no other run has an
/// open attempt; a done run has exactly one completed attempt, its final one.
async fn ledger_violations(pool: &PgPool) -> Vec<(i64, String)> {
    sqlx::query_as(
        "SELECT r.id, 'running without its open attempt' FROM runs r
         WHERE r.state = 'running' AND NOT EXISTS (
             SELECT 1 FROM run_attempts a WHERE a.run_id = r.id AND a.attempt = r.attempt
               AND a.ending IS NULL AND a.worker_id = r.lease_owner)
         UNION ALL
         SELECT a.run_id, format('open attempt %s of a run that is %s', a.attempt, r.state)
         FROM run_attempts a JOIN runs r ON r.id = a.run_id
         WHERE a.ending IS NULL AND NOT (r.state = 'running' AND a.attempt = r.attempt)
         UNION ALL
         SELECT r.id, 'done without its final attempt completed' FROM runs r
         WHERE r.state = 'done' AND NOT EXISTS (
             SELECT 1 FROM run_attempts a WHERE a.run_id = r.id AND a.attempt = r.attempt AND a.ending = 'completed')
         UNION ALL
         SELECT run_id, 'more than one completed attempt' FROM run_attempts
         WHERE ending = 'completed' GROUP BY run_id HAVING count(*) > 1
         UNION ALL
         SELECT r.id, 'attempts missing from the ledger' FROM runs r
         WHERE (SELECT count(*) FROM run_attempts a WHERE a.run_id = r.id) <> r.attempt",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn assert_ledger_true(pool: &PgPool) {
    let broken = ledger_violations(pool).await;
    assert!(broken.is_empty(), "the attempt ledger disagrees with the runs: {broken:?}");
}

/// (attempt, worker, ending, reason) of each of a run's attempts, first first.
async fn attempts_of(pool: &PgPool, run: i64) -> Vec<(i32, Option<Uuid>, Option<String>, Option<String>)> {
    let attempts = crate::store::runs::attempts(pool, run).await.unwrap();
    for a in &attempts {
        assert_eq!(a.ending.is_some(), a.ended_at.is_some(), "{a:?}");
        assert!(a.ended_at.is_none_or(|end| end >= a.claimed_at), "{a:?}");
    }
    attempts
        .into_iter()
        .map(|a| (a.attempt, a.worker_id, a.ending.map(|e| e.as_str().to_string()), a.reason))
        .collect()
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn every_way_a_lease_ends_closes_exactly_its_attempt(pool: PgPool) {
    import_demo(&pool, "demo").await;
    submit(&pool, &sweep_toml("ledger", "max_attempts = 3\n[select]\nids = [\"steerbench__demo-1\"]", ""))
        .await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let ws = [worker(&pool).await, worker(&pool).await, worker(&pool).await, worker(&pool).await];

    let l1 = queue.claim(ws[0], 1, &kinds()).await.unwrap().remove(0);
    let run = l1.run_id;
    assert_eq!(
        attempts_of(&pool, run).await,
        vec![(1, Some(ws[0]), None, None)],
        "a claim opens its attempt"
    );
    assert_ledger_true(&pool).await;
    queue.release(run, Registrar::NONE, l1.lease_token, "draining").await.unwrap();

    let l2 = queue.claim(ws[1], 1, &kinds()).await.unwrap().remove(0);
    queue.fail(run, Registrar::NONE, l2.lease_token, "docker daemon unreachable").await.unwrap();
    assert_ledger_true(&pool).await;

    let l3 = queue.claim(ws[2], 1, &kinds()).await.unwrap().remove(0);
    age_leases(&pool).await;
    queue.expire_leases(100).await.unwrap();
    assert_ledger_true(&pool).await;

    let l4 = queue.claim(ws[3], 1, &kinds()).await.unwrap().remove(0);
    assert_eq!(l4.attempt, 4);
    queue.complete(run, Registrar::NONE, &done(&l4, "0")).await.unwrap();
    // A retried completion changes nothing.
    queue.complete(run, Registrar::NONE, &done(&l4, "0")).await.unwrap();

    let got = attempts_of(&pool, run).await;
    let expiry = format!("lease expired on attempt 3 (worker {}); 2 of 3 attempts failed", ws[2]);
    assert_eq!(
        got,
        vec![
            (1, Some(ws[0]), Some("released".into()), Some("handed back: draining".into())),
            (
                2,
                Some(ws[1]),
                Some("failed".into()),
                Some("infrastructure failure: docker daemon unreachable".into())
            ),
            (3, Some(ws[2]), Some("expired".into()), Some(expiry)),
            (4, Some(ws[3]), Some("completed".into()), None),
        ]
    );
    assert_eq!((l2.attempt, l3.attempt), (2, 3));
    assert_ledger_true(&pool).await;
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn cancelling_a_sweep_closes_its_held_attempts_as_their_leases_end(pool: PgPool) {
    import_demo(&pool, "demo").await;
    let s = submit(&pool, &sweep_toml("ledger-cancel", "", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;
    let held = queue.claim(w, 3, &kinds()).await.unwrap();
    sweeps::cancel(&pool, s.sweep_id).await.unwrap();
    // The sweep's cancel leaves held attempts open: their workers are told at the next heartbeat.
    assert_ledger_true(&pool).await;
    assert!(attempts_of(&pool, held[0].run_id).await.iter().all(|a| a.2.is_none()));

    // One worker hands its run back: the attempt ends as cancelled, and so does the run.
    let went = queue.release(held[0].run_id, Registrar::NONE, held[0].lease_token, "sweep cancelled").await;
    assert_eq!(went.unwrap(), Requeued::Cancelled);
    assert_eq!(
        attempts_of(&pool, held[0].run_id).await,
        vec![(1, Some(w), Some("cancelled".into()), Some("handed back: sweep cancelled".into()))]
    );
    // One finishes anyway and keeps its result.
    queue.complete(held[1].run_id, Registrar::NONE, &done(&held[1], "0")).await.unwrap();
    assert_eq!(attempts_of(&pool, held[1].run_id).await[0].2.as_deref(), Some("completed"));
    // One worker is gone: its lease runs out and the run ends cancelled, its attempt expired.
    age_leases(&pool).await;
    assert_eq!(queue.expire_leases(100).await.unwrap().get(RunState::Cancelled), 1);
    assert_eq!(attempts_of(&pool, held[2].run_id).await[0].2.as_deref(), Some("expired"));
    assert_eq!(state_of(&pool, held[2].run_id).await.0, "cancelled");
    assert_ledger_true(&pool).await;
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn a_late_completion_after_expiry_leaves_one_completed_attempt_the_new_one(pool: PgPool) {
    let Reclaimed { queue, new_w, old, new, .. } = expired_and_reclaimed(&pool, "ledger-late").await;

    // The cut-off worker completes late, before and after the new holder does: refused both
    // times, and the ledger does not move.
    let late = queue.complete(old.run_id, Registrar::NONE, &done(&old, "0")).await;
    assert!(matches!(late, Err(Error::LeaseLost(_))), "{late:?}");
    let before = attempts_of(&pool, old.run_id).await;
    assert_eq!(before[0].2.as_deref(), Some("expired"));
    assert_eq!(before[1], (2, Some(new_w), None, None));
    queue.complete(new.run_id, Registrar::NONE, &done(&new, "0")).await.unwrap();
    let late = queue.complete(old.run_id, Registrar::NONE, &done(&old, "0")).await;
    assert!(matches!(late, Err(Error::LeaseLost(_))), "{late:?}");

    let completed: Vec<(i32, Option<Uuid>)> = sqlx::query_as(
        "SELECT attempt, worker_id FROM run_attempts WHERE run_id = $1 AND ending = 'completed'",
    )
    .bind(old.run_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(completed, vec![(2, Some(new_w))]);
    assert_ledger_true(&pool).await;
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn the_ledger_refuses_a_second_completed_attempt(pool: PgPool) {
    import_demo(&pool, "demo").await;
    submit(&pool, &sweep_toml("ledger-unique", "[select]\nids = [\"steerbench__demo-1\"]", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;
    let first = queue.claim(w, 1, &kinds()).await.unwrap().remove(0);
    queue.release(first.run_id, Registrar::NONE, first.lease_token, "draining").await.unwrap();
    let second = queue.claim(w, 1, &kinds()).await.unwrap().remove(0);
    queue.complete(second.run_id, Registrar::NONE, &done(&second, "0")).await.unwrap();
    // Whatever a future bug in the fencing did, the database keeps one completion per run.
    let res = sqlx::query("UPDATE run_attempts SET ending = 'completed' WHERE run_id = $1 AND attempt = 1")
        .bind(first.run_id)
        .execute(&pool)
        .await;
    assert!(res.is_err_and(|e| e.to_string().contains("run_attempts_one_completed")));
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn a_stopping_worker_hands_back_runs_it_never_received_and_is_leased_no_more(pool: PgPool) {
    import_demo(&pool, "demo").await;
    submit(&pool, &sweep_toml("unread", "", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let (w, other) = (worker(&pool).await, worker(&pool).await);
    // Leased to `w`, whose claim response never reached it.
    let unread = queue.claim(w, 2, &kinds()).await.unwrap();
    let elsewhere = queue.claim(other, 1, &kinds()).await.unwrap().remove(0);

    // Another token cannot do it for the worker, and nothing changes.
    let err = queue.release_held(w, Registrar::token(1), "worker stopped").await.unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)), "{err:?}");
    assert!(unread.iter().all(|l| l.attempt == 1));
    assert_eq!(state_of(&pool, unread[0].run_id).await.0, "running");
    let err = queue.release_held(Uuid::new_v4(), Registrar::NONE, "worker stopped").await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");

    let mut released = queue.release_held(w, Registrar::NONE, "worker stopped").await.unwrap();
    released.sort();
    let mut expected: Vec<i64> = unread.iter().map(|l| l.run_id).collect();
    expected.sort();
    assert_eq!(released, expected);
    for lease in &unread {
        assert_eq!(state_of(&pool, lease.run_id).await.0, "queued");
        assert_eq!(
            attempts_of(&pool, lease.run_id).await,
            vec![(1, Some(w), Some("released".into()), Some("handed back: worker stopped".into()))]
        );
    }
    assert_eq!(state_of(&pool, elsewhere.run_id).await.0, "running", "another worker's run is left alone");
    let failed: i64 =
        sqlx::query_scalar("SELECT sum(failed_attempts) FROM runs").fetch_one(&pool).await.unwrap();
    assert_eq!(failed, 0, "a hand-back is not a failed attempt");
    // A claim that reaches the coordinator after the worker stopped leases it nothing; the
    // runs go to a worker that is still claiming.
    assert!(queue.claim(w, 2, &kinds()).await.unwrap().is_empty());
    assert_eq!(queue.claim(other, 2, &kinds()).await.unwrap().len(), 2);
    assert_eq!(queue.release_held(w, Registrar::NONE, "again").await.unwrap(), Vec::<i64>::new());
    assert_ledger_true(&pool).await;
}

/// The endpoint's breaker: (outage_failures, seconds of cooldown left; None when closed).
async fn breaker(pool: &PgPool, base_url: &str) -> (i32, Option<f64>) {
    sqlx::query_as(
        "SELECT outage_failures, extract(epoch FROM cooldown_until - now())::float8 FROM endpoints WHERE base_url = $1",
    )
    .bind(base_url)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn end_cooldowns(pool: &PgPool) {
    sqlx::query(
        "UPDATE endpoints SET cooldown_until = now() - interval '1 second' WHERE cooldown_until IS NOT NULL",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn an_endpoint_outage_rests_the_endpoint_then_one_run_probes_it_until_a_call_succeeds(pool: PgPool) {
    const DOWN: &str = "http://127.0.0.1:9/v1";
    import_demo(&pool, "demo").await;
    let a = submit(&pool, &sweep_toml("down", "max_attempts = 9", "")).await.sweep_id;
    let cooldown = super::EndpointCooldown { base: Duration::from_secs(60), max: Duration::from_secs(200) };
    let queue = Queue::new(pool.clone(), Duration::from_secs(60)).with_endpoint_cooldown(cooldown);
    let w = worker(&pool).await;
    let held = queue.claim(w, 3, &kinds()).await.unwrap();
    // Another sweep, on another endpoint, submitted after the claim.
    let other = sweep_toml("up", "", "").replace("127.0.0.1:9/v1", "127.0.0.1:10/v1");
    let b = submit(&pool, &other).await.sweep_id;

    // A plain infrastructure failure does not touch the breaker.
    queue.fail(held[2].run_id, Registrar::NONE, held[2].lease_token, "disk full").await.unwrap();
    assert_eq!(breaker(&pool, DOWN).await, (0, None));
    // Two runs fail in the same outage: the breaker opens once, for `base`.
    for lease in &held[..2] {
        let went =
            queue.fail_on_endpoint_outage(lease.run_id, Registrar::NONE, lease.lease_token, "429 x4").await;
        assert_eq!(went.unwrap(), Requeued::Queued);
    }
    let (failures, left) = breaker(&pool, DOWN).await;
    assert_eq!(failures, 1);
    assert!(left.is_some_and(|s| s > 55.0 && s <= 60.0), "{left:?}");
    let (state, _, _, last_error) = state_of(&pool, held[0].run_id).await;
    assert_eq!(state, "queued");
    assert_eq!(last_error.as_deref(), Some("model endpoint unavailable: 429 x4"));
    let failed: i64 =
        sqlx::query_scalar("SELECT sum(failed_attempts) FROM runs").fetch_one(&pool).await.unwrap();
    assert_eq!(failed, 3, "an outage still counts a failed attempt (max_attempts bounds a dead endpoint)");

    // While it rests, only the other endpoint's runs are handed out.
    let got = queue.claim(w, 20, &kinds()).await.unwrap();
    assert_eq!(got.len(), 6);
    assert!(got.iter().all(|l| l.sweep_id == b), "{got:?}");

    // Half-open: one run at a time probes it.
    end_cooldowns(&pool).await;
    let probe = queue.claim(w, 20, &kinds()).await.unwrap();
    assert_eq!(probe.len(), 1, "{probe:?}");
    assert_eq!(probe[0].sweep_id, a);
    assert!(queue.claim(w, 20, &kinds()).await.unwrap().is_empty(), "a second probe while one is out");
    // The probe fails too: the cooldown doubles.
    queue
        .fail_on_endpoint_outage(probe[0].run_id, Registrar::NONE, probe[0].lease_token, "503")
        .await
        .unwrap();
    let (failures, left) = breaker(&pool, DOWN).await;
    assert_eq!(failures, 2);
    assert!(left.is_some_and(|s| s > 115.0 && s <= 120.0), "{left:?}");
    assert!(queue.claim(w, 20, &kinds()).await.unwrap().is_empty());
    // ... up to `max`.
    sqlx::query("UPDATE endpoints SET outage_failures = 10").execute(&pool).await.unwrap();
    end_cooldowns(&pool).await;
    let probe = queue.claim(w, 20, &kinds()).await.unwrap().remove(0);
    queue.fail_on_endpoint_outage(probe.run_id, Registrar::NONE, probe.lease_token, "timeout").await.unwrap();
    let (_, left) = breaker(&pool, DOWN).await;
    assert!(left.is_some_and(|s| s > 195.0 && s <= 200.0), "{left:?}");

    // A probe whose model call succeeds closes it: the endpoint's runs flow again.
    end_cooldowns(&pool).await;
    let probe = queue.claim(w, 20, &kinds()).await.unwrap().remove(0);
    let mut ok = upload(&probe, &[]);
    ok.llm_calls = vec![protocol::LlmCallRecord {
        model: "demo-model".into(),
        status: protocol::CallStatus::Ok,
        ..Default::default()
    }];
    queue.upload_steps(probe.run_id, Registrar::NONE, &ok).await.unwrap();
    assert_eq!(breaker(&pool, DOWN).await, (0, None));
    let rest = queue.claim(w, 20, &kinds()).await.unwrap();
    assert_eq!(rest.len(), 5, "every other run of the endpoint: {rest:?}");
    assert_ledger_true(&pool).await;
}

mod lifecycle;

/// A worker whose registration allows these API key variables.
async fn worker_allowing(pool: &PgPool, allow: &[&str]) -> Uuid {
    let id = worker(pool).await;
    let caps = serde_json::json!({ "key_envs": allow });
    sqlx::query("UPDATE workers SET capabilities = $2 WHERE id = $1")
        .bind(id)
        .bind(caps)
        .execute(pool)
        .await
        .unwrap();
    id
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn runs_go_only_to_workers_allowing_their_key_variables(pool: PgPool) {
    import_demo(&pool, "demo").await;
    let s = submit(&pool, &sweep_toml("keyed", "", r#"api_key_env = "LAB_QWEN_KEY""#)).await;
    assert_eq!(s.runs, 6);
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let live = Duration::from_secs(60);

    // No worker allows the variable: the runs wait, and status says why.
    let unlisted = worker(&pool).await;
    let other = worker_allowing(&pool, &["OPENAI_API_KEY", "OTHER_*"]).await;
    // A list holding a reserved name (registered past the API's check) allows it nothing.
    let reserved = worker_allowing(&pool, &["STEER_*", "LAB_QWEN_KEY_NOT"]).await;
    for w in [unlisted, other, reserved] {
        assert!(queue.claim(w, 10, &kinds()).await.unwrap().is_empty());
    }
    let waiting = crate::store::waiting::waiting_runs(&pool, s.sweep_id, live).await.unwrap();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].runs, 6);
    assert!(waiting[0].reason.contains("`LAB_QWEN_KEY`"), "{}", waiting[0].reason);
    assert!(waiting[0].reason.contains("--allow-key-env LAB_QWEN_KEY"), "{}", waiting[0].reason);

    // A worker allowing it by prefix takes them; a sweep naming no key still goes to anyone.
    let by_prefix = worker_allowing(&pool, &["LAB_*"]).await;
    assert_eq!(queue.claim(by_prefix, 10, &kinds()).await.unwrap().len(), 6);
    assert!(crate::store::waiting::waiting_runs(&pool, s.sweep_id, live).await.unwrap().is_empty());
    let plain = submit(&pool, &sweep_toml("plain", "", "")).await;
    assert_eq!(queue.claim(unlisted, 10, &kinds()).await.unwrap().len(), plain.runs as usize);
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn an_exact_name_allows_that_variable_only(pool: PgPool) {
    import_demo(&pool, "demo").await;
    submit(&pool, &sweep_toml("keyed", "", r#"api_key_env = "LAB_QWEN_KEY""#)).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let near_miss = worker_allowing(&pool, &["LAB_QWEN", "LAB_QWEN_KEY2"]).await;
    assert!(queue.claim(near_miss, 10, &kinds()).await.unwrap().is_empty());
    let exact = worker_allowing(&pool, &["LAB_QWEN_KEY"]).await;
    assert_eq!(queue.claim(exact, 10, &kinds()).await.unwrap().len(), 6);
}

/// The plan of the claim window on a large queue, as `claim_batch` runs it (planned with its
/// real LIMIT): the node types that read `runs`.
async fn window_plan_on_runs(pool: &PgPool, limit: i64) -> Vec<String> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(super::PLAN_WINDOW).execute(&mut *tx).await.unwrap();
    let kinds: Vec<&str> = kinds().iter().map(|k| k.as_str()).collect();
    let plan: serde_json::Value =
        sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) {}", super::CLAIM_WINDOW))
            .bind(limit)
            .bind(&kinds)
            .bind(None::<serde_json::Value>)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.rollback().await.unwrap();
    fn walk(node: &serde_json::Value, out: &mut Vec<String>) {
        if node["Relation Name"] == "runs" {
            let index = node["Index Name"].as_str().unwrap_or("-");
            let role = node["Subplan Name"].as_str().or(node["Parent Relationship"].as_str()).unwrap_or("");
            out.push(format!("{} ({index}) {role}", node["Node Type"].as_str().unwrap_or("?")));
        }
        for child in node["Plans"].as_array().into_iter().flatten() {
            walk(child, out);
        }
    }
    let mut out = Vec::new();
    walk(&plan[0]["Plan"], &mut out);
    out
}

/// The claim window walks the claim index on a queue of 200,000 runs, both right after they were
/// inserted (statistics from when the table was nearly empty) and after ANALYZE, for a claim of
/// one run and for a batch of 512: its cost does not grow with the queue.
#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn the_claim_window_is_served_by_the_claim_index_on_a_large_queue(pool: PgPool) {
    import_demo(&pool, "demo").await;
    submit(&pool, &sweep_toml("big", "", "")).await;
    sqlx::query("ANALYZE runs").execute(&pool).await.unwrap();
    // 200,000 more queued runs, inserted behind the planner's back (no ANALYZE).
    sqlx::query(
        "INSERT INTO runs (sweep_id, dataset_id, instance_id, image, agent_id, endpoint_id, critic_id, repeat_index, fair_seq)
         SELECT r.sweep_id, r.dataset_id, r.instance_id, r.image, r.agent_id, r.endpoint_id, r.critic_id, g, r.fair_seq + g * 10
         FROM runs r, generate_series(1, 33334) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    for stats in ["stale", "fresh"] {
        if stats == "fresh" {
            sqlx::query("ANALYZE runs").execute(&pool).await.unwrap();
        }
        for limit in [1, 512] {
            let nodes = window_plan_on_runs(&pool, limit).await;
            // The window's scan of the queue walks the claim index in order; other reads of
            // `runs` (caps' running counts, prefix-replay bases) go through indexes too.
            assert!(
                nodes.first().is_some_and(|n| n.contains("runs_claim")),
                "{stats} statistics, LIMIT {limit}: the window walks runs_claim: {nodes:?}"
            );
            assert!(
                !nodes.iter().any(|n| n.starts_with("Seq Scan")),
                "{stats} statistics, LIMIT {limit}: no scan of the whole table: {nodes:?}"
            );
        }
    }
}
