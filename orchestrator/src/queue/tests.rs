//! Queue tests against a real Postgres: a fresh database per test (`#[sqlx::test]`).

use std::collections::HashMap;
use std::time::Duration;

use protocol::{CompleteRun, LeaseRef, Outcome, RunTotals, StepRecord};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Lease, Queue, Requeued};
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
fn kinds() -> Vec<String> {
    vec!["placeholder".into(), "evaluate".into()]
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
    assert_eq!(moved.get("queued"), Some(&1));
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
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn stale_lease_token_is_rejected_everywhere(pool: PgPool) {
    import_demo(&pool, "demo").await;
    submit(&pool, &sweep_toml("fence", "[select]\nids = [\"steerbench__demo-1\"]", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let (old_w, new_w) = (worker(&pool).await, worker(&pool).await);
    let old = queue.claim(old_w, 1, &kinds()).await.unwrap().remove(0);
    age_leases(&pool).await;
    queue.expire_leases(100).await.unwrap();
    let new = queue.claim(new_w, 1, &kinds()).await.unwrap().remove(0);

    // The partitioned worker comes back and tries to write with its old lease.
    let step = StepRecord { index: 0, action: Some("ls".into()), ..Default::default() };
    assert!(matches!(
        queue.upload_steps(old.run_id, old.lease_token, std::slice::from_ref(&step), &[], &[]).await,
        Err(Error::LeaseLost(_))
    ));
    assert!(matches!(queue.complete(old.run_id, &done(&old, "0")).await, Err(Error::LeaseLost(_))));
    assert!(matches!(queue.fail(old.run_id, old.lease_token, "x").await, Err(Error::LeaseLost(_))));
    assert!(matches!(queue.release(old.run_id, old.lease_token, "x").await, Err(Error::LeaseLost(_))));
    let ack = queue
        .heartbeat(old_w, &[LeaseRef { run_id: old.run_id, lease_token: old.lease_token }], false, None, None)
        .await
        .unwrap();
    assert_eq!(ack.lost, vec![old.run_id]);

    // The new holder is unaffected, and its completion is idempotent.
    queue.upload_steps(new.run_id, new.lease_token, &[step], &[], &[]).await.unwrap();
    queue.complete(new.run_id, &done(&new, "0")).await.unwrap();
    queue.complete(new.run_id, &done(&new, "0")).await.unwrap();
    let steps: Vec<(i32,)> = sqlx::query_as("SELECT attempt FROM steps WHERE run_id = $1")
        .bind(new.run_id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(steps, vec![(2,)], "only the live attempt's step was stored");
    // After completion even the right token cannot fail or release the run.
    assert!(matches!(queue.fail(new.run_id, new.lease_token, "late").await, Err(Error::LeaseLost(_))));
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
    let ack = queue.heartbeat(a, &refs, false, None, None).await.unwrap();
    assert_eq!(ack.lost, vec![theirs[0].run_id]);
    let moved = queue.expire_leases(100).await.unwrap();
    assert_eq!(moved.get("queued"), Some(&1), "only the unextended lease expired");
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn budget_stops_the_sweep(pool: PgPool) {
    import_demo(&pool, "demo").await;
    let s = submit(&pool, &sweep_toml("budget", "budget_usd = 0.05", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;
    let leases = queue.claim(w, 2, &kinds()).await.unwrap();
    queue.complete(leases[0].run_id, &done(&leases[0], "0.03")).await.unwrap();
    let status = sweeps::status(&pool, s.sweep_id).await.unwrap();
    assert_eq!(status.state, protocol::SweepState::Running);
    queue.complete(leases[1].run_id, &done(&leases[1], "0.025")).await.unwrap();
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
    let ack = queue.heartbeat(w, &refs, false, None, None).await.unwrap();
    assert_eq!(ack.cancelled.len(), 2, "the worker is told to stop both");
    assert_eq!(
        queue.release(held[0].run_id, held[0].lease_token, "sweep cancelled").await.unwrap(),
        Requeued::Cancelled
    );
    // A run that finished anyway keeps its result.
    queue.complete(held[1].run_id, &done(&held[1], "0")).await.unwrap();
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
    queue.complete(first.run_id, &done(&first, "0")).await.unwrap();
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
    queue.complete(held[0].run_id, &done(&held[0], "0")).await.unwrap();
    assert_eq!(queue.claim(w, 5, &kinds()).await.unwrap().len(), 1, "a finished run frees one place");
}

#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn sweep_cap_limits_running_runs(pool: PgPool) {
    import_demo(&pool, "demo").await;
    submit(&pool, &sweep_toml("cap-sweep", "max_running = 2", "")).await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;
    assert_eq!(queue.claim(w, 6, &kinds()).await.unwrap().len(), 2);
    assert!(queue.claim(w, 6, &kinds()).await.unwrap().is_empty());
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
        assert_eq!(queue.release(l.run_id, l.lease_token, "draining").await.unwrap(), Requeued::Queued);
    }
    let l = queue.claim(w, 1, &kinds()).await.unwrap().remove(0);
    assert_eq!(
        queue.fail(l.run_id, l.lease_token, "docker daemon unreachable").await.unwrap(),
        Requeued::Queued
    );
    let l = queue.claim(w, 1, &kinds()).await.unwrap().remove(0);
    assert_eq!(l.attempt, 5);
    assert_eq!(
        queue.fail(l.run_id, l.lease_token, "docker daemon unreachable").await.unwrap(),
        Requeued::Error
    );
    let (state, _, failed, reason) = state_of(&pool, l.run_id).await;
    assert_eq!((state.as_str(), failed), ("error", 2));
    assert!(reason.unwrap().contains("docker daemon unreachable"));
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
    queue.complete(leases[0].run_id, &done(&leases[0], "0")).await.unwrap();
    assert!(queue.finish_sweeps(None).await.unwrap().is_empty(), "one run still running");
    queue.complete(leases[1].run_id, &done(&leases[1], "0")).await.unwrap();
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
        queue.claim(w, 10, &["placeholder".to_string()]).await.unwrap().is_empty(),
        "a placeholder-only worker"
    );
    assert_eq!(queue.claim(w, 10, &["evaluate".to_string()]).await.unwrap().len(), 6);
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
    queue.heartbeat(w, &[], false, Some(&held), Some("pulling x: 1 of 2 layers done")).await.unwrap();
    let stored = crate::store::workers::holdings(&pool, w).await.unwrap().unwrap();
    assert_eq!(stored.images, held);
    // The fleet listing shows what the worker holds, runs and is doing.
    let listed = crate::store::workers::list(&pool, Some(60.0)).await.unwrap();
    let me = listed.iter().find(|x| x.id == w).unwrap();
    assert_eq!((me.images, me.running), (1, 2));
    assert_eq!(me.status.as_deref(), Some("pulling x: 1 of 2 layers done"));
}
