//! A coordinator under more load than it can serve: it tells workers to back off (`overloaded`,
//! with a retry hint) instead of timing out on its connection pool, and loses no lease while
//! it is behind. A real coordinator on port 0 over a fresh database, spoken to over HTTP.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use orchestrator::server::{self, CoordinatorConfig, DeskConfig};
use orchestrator::store::tokens;
use orchestrator::testkit;
use protocol::{ClaimResponse, Registered, Role};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

const LEASE_TTL: Duration = Duration::from_secs(2);

struct Bed {
    base: String,
    http: reqwest::Client,
    token: String,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Bed {
    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Option<String>, Value) {
        let resp =
            self.http.post(self.url(path)).bearer_auth(&self.token).json(body).send().await.expect("request");
        let status = resp.status();
        let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        (status, retry_after, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn register(&self, name: &str) -> Uuid {
        let body = json!({"name": name, "host": "test-host", "slots": 1, "version": "test"});
        let (status, _, v) = self.post("/workers", &body).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        serde_json::from_value::<Registered>(v).unwrap().worker_id
    }
}

/// A coordinator on a pool of 8 connections (lanes of 2 and 4), with at most 16 waiting claims.
async fn start(pool: &PgPool) -> Bed {
    let small = PgPoolOptions::new()
        .max_connections(8)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let config = CoordinatorConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        lease_ttl: LEASE_TTL,
        maintenance_interval: Duration::from_millis(100),
        desk: DeskConfig { max_waiting: 16, ..DeskConfig::default() },
        ..Default::default()
    };
    let addr = server::spawn(small, config, stop.clone(), &tracker).await.expect("coordinator starts");
    Bed {
        base: format!("http://{addr}"),
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
        token: tokens::create(pool, "workers", Role::Worker).await.unwrap().token,
        stop,
        tracker,
    }
}

/// What the flood of claimers and the lease holders saw.
#[derive(Default)]
struct Seen {
    overloaded: AtomicU64,
    with_hint: AtomicU64,
    other_errors: AtomicU64,
    heartbeats_ok: AtomicU64,
    heartbeats_turned_away: AtomicU64,
    leases_lost: AtomicU64,
    runs_taken_from_holders: AtomicU64,
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn an_overloaded_coordinator_keeps_every_lease_and_tells_workers_to_back_off(pool: PgPool) {
    testkit::import_demo(&pool, "demo").await;
    let sweep = testkit::submit(&pool, &testkit::sweep_toml("held", "", "")).await;
    let bed = Arc::new(start(&pool).await);

    // Six workers hold the sweep's six runs, heartbeating every third of the lease.
    let mut holders = Vec::new();
    for i in 0..sweep.runs {
        let worker = bed.register(&format!("holder-{i}")).await;
        let (status, _, v) =
            bed.post(&format!("/workers/{worker}/claim"), &json!({"max_runs": 1, "wait_ms": 0})).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let claimed: ClaimResponse = serde_json::from_value(v).unwrap();
        assert_eq!(claimed.runs.len(), 1, "holder {i} gets a run");
        holders.push((worker, claimed.runs[0].run_id, claimed.runs[0].lease_token));
    }
    let seen = Arc::new(Seen::default());
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (worker, run_id, token) in holders.clone() {
        let (bed, seen, done) = (bed.clone(), seen.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let beat = json!({"leases": [{"run_id": run_id, "lease_token": token}], "draining": false});
            while !done.load(Ordering::Relaxed) {
                let (status, _, v) = bed.post(&format!("/workers/{worker}/heartbeat"), &beat).await;
                match status {
                    StatusCode::OK => {
                        seen.heartbeats_ok.fetch_add(1, Ordering::Relaxed);
                        if !v["lost"].as_array().unwrap().is_empty() {
                            seen.leases_lost.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    StatusCode::SERVICE_UNAVAILABLE if v["code"] == "overloaded" => {
                        seen.heartbeats_turned_away.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("heartbeat answered {other}: {v}"),
                }
                tokio::time::sleep(LEASE_TTL / 3).await;
            }
        }));
    }

    // Sixty more workers long-poll for runs that are not there: more than may wait at once.
    for i in 0..60 {
        let worker = bed.register(&format!("claimer-{i}")).await;
        let (bed, seen, done) = (bed.clone(), seen.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let (status, retry_after, v) = bed
                    .post(&format!("/workers/{worker}/claim"), &json!({"max_runs": 1, "wait_ms": 1000}))
                    .await;
                match status {
                    StatusCode::OK => {
                        // No run is free unless a held lease was taken back.
                        let n = v["runs"].as_array().unwrap().len() as u64;
                        seen.runs_taken_from_holders.fetch_add(n, Ordering::Relaxed);
                    }
                    StatusCode::SERVICE_UNAVAILABLE if v["code"] == "overloaded" => {
                        seen.overloaded.fetch_add(1, Ordering::Relaxed);
                        let hint = v["retry_after_ms"].as_u64();
                        if hint.is_some() && retry_after.is_some() {
                            seen.with_hint.fetch_add(1, Ordering::Relaxed);
                        }
                        // As told.
                        tokio::time::sleep(Duration::from_millis(hint.unwrap_or(1000))).await;
                    }
                    _ => {
                        seen.other_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    // Meanwhile the database stops answering for the workers' table for longer than a lease:
    // heartbeats pile up behind it, the lease lane fills, later heartbeats are turned away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE workers IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    let began = chrono_now();
    tokio::time::sleep(LEASE_TTL * 2).await;
    blocker.rollback().await.unwrap();
    let stall = (began, chrono_now());
    // Then it keeps up again for more than a lease lifetime.
    tokio::time::sleep(LEASE_TTL * 2).await;
    // Checked while the holders still heartbeat (once they stop, their leases lapse as they should).
    let expired: i64 = sqlx::query_scalar("SELECT count(*) FROM run_attempts WHERE ending = 'expired'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let ledger: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT run_id, to_char(claimed_at, 'HH24:MI:SS.MS'), to_char(ended_at, 'HH24:MI:SS.MS') FROM run_attempts WHERE ending = 'expired'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        expired, 0,
        "no lease was taken back while the coordinator was behind: {ledger:?} (stall {stall:?})"
    );
    for (worker, run_id, token) in holders {
        let (state, owner, lease): (String, Option<Uuid>, Option<Uuid>) =
            sqlx::query_as("SELECT state, lease_owner, lease_token FROM runs WHERE id = $1")
                .bind(run_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((state.as_str(), owner, lease), ("running", Some(worker), Some(token)), "run {run_id}");
    }

    done.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let (overloaded, with_hint) =
        (seen.overloaded.load(Ordering::Relaxed), seen.with_hint.load(Ordering::Relaxed));
    assert!(overloaded > 0, "claims beyond what may wait are answered `overloaded`");
    assert_eq!(with_hint, overloaded, "each with a retry hint, in the body and in Retry-After");
    assert_eq!(seen.other_errors.load(Ordering::Relaxed), 0, "no claim failed otherwise (no pool timeout)");
    assert!(
        seen.heartbeats_turned_away.load(Ordering::Relaxed) > 0,
        "the database stall made the coordinator turn heartbeats away (so it was behind)"
    );
    assert!(seen.heartbeats_ok.load(Ordering::Relaxed) > 0);
    assert_eq!(seen.leases_lost.load(Ordering::Relaxed), 0, "no heartbeat found its lease gone");
    assert_eq!(seen.runs_taken_from_holders.load(Ordering::Relaxed), 0, "no claimer got a held run");
    let bed = Arc::try_unwrap(bed).ok().expect("every task has ended");
    bed.stop.cancel();
    bed.tracker.close();
    tokio::time::timeout(Duration::from_secs(10), bed.tracker.wait()).await.expect("the coordinator stops");
}

/// Wall-clock time of day, for failure messages.
fn chrono_now() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let s = d.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}.{:03}", s / 3600, s / 60 % 60, s % 60, d.subsec_millis())
}
