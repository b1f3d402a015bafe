//! Failures are visible where people look: through the real `steer` CLI against a coordinator
//! and a worker (in process) over real Postgres and Docker. A sweep whose agent reads an API
//! key variable that is not set on its worker ends with every run in error; `--wait` exits 3,
//! and `sweep status`, `sweep runs` and the run's record say why. A sweep that only a missing
//! kind of worker could serve says so.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{docker_with_fixture_images, fixtures};
use orchestrator::store::{datasets, tokens};
use protocol::Role;
use sqlx::PgPool;

/// Allowed on the worker, set nowhere: every run of the sweep fails reading it.
const UNSET_KEY: &str = "STEERBENCH_FAILURES_TEST_UNSET_KEY";
const REASON: &str =
    "reads its API key from $STEERBENCH_FAILURES_TEST_UNSET_KEY, which is not set on this worker";

fn agent_sweep(name: &str) -> String {
    format!(
        r#"name = "{name}"
max_attempts = 1

[dataset]
name = "fixtures"

[select]
ids = ["steerbench__minicalc-1", "steerbench__minicalc-2"]

[executor]
kind = "agent"
preset = "paper"

[[agents]]
name = "keyless"
base_url = "http://127.0.0.1:9/v1"
model = "never-called"
api_key_env = "{UNSET_KEY}"
price = {{ input_per_mtok = 0.15, output_per_mtok = 1.50 }}

[[critics]]
name = "none"
kind = "none"
"#
    )
}

/// `GET /api/v1{path}` as the holder of `token`, its JSON body.
async fn api_get<T: serde::de::DeserializeOwned>(url: &str, token: &str, path: &str) -> T {
    let response =
        reqwest::Client::new().get(format!("{url}/api/v1{path}")).bearer_auth(token).send().await.unwrap();
    response.json().await.unwrap()
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn runs_that_fail_say_why_and_waiting_exits_non_zero(pool: PgPool) {
    assert!(std::env::var_os(UNSET_KEY).is_none(), "{UNSET_KEY} must not be set for this test");
    let instances = fixtures();
    let Some(docker) = docker_with_fixture_images(&instances).await else { return };
    datasets::import(&pool, "fixtures", None, &instances).await.unwrap();
    let coordinator = common::start_coordinator(&pool, Duration::from_secs(5)).await;
    let allow = protocol::keys::KeyAllowList::new([UNSET_KEY]).unwrap();
    let keys = worker::llm::Keyring::capture(allow, std::env::vars());
    let dispatcher =
        worker::Dispatcher::new(Some(worker::evaluate::EvaluateExecutor::new(docker, "failures")))
            .with_keyring(Arc::new(keys));
    let agent_worker = coordinator.start_worker("failures", 2, dispatcher).await;
    let user = tokens::create(&pool, "alice", Role::User).await.unwrap().token;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keyless.toml");
    std::fs::write(&file, agent_sweep("keyless")).unwrap();

    // Every run errors: `--wait` says so with status 3, and the status groups the reason.
    let (code, out) =
        common::steer_cli(&coordinator.url, &user, &["sweep", "submit", file.to_str().unwrap(), "--wait"])
            .await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("why runs failed or were cancelled"), "{out}");
    assert!(out.contains(&format!("2 error: infrastructure failure: agent `keyless` {REASON}")), "{out}");

    let (code, out) = common::steer_cli(&coordinator.url, &user, &["sweep", "runs", "keyless"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("agent `keyless` reads its API key").count(), 2, "{out}");
    let (_, why) =
        common::steer_cli(&coordinator.url, &user, &["sweep", "runs", "keyless", "--state", "error"]).await;
    assert!(why.contains(&format!("        | infrastructure failure: agent `keyless` {REASON}")), "{why}");

    // The run's record keeps the reason in its last error and its attempt ledger.
    let run: i64 = sqlx::query_scalar("SELECT min(id) FROM runs").fetch_one(&pool).await.unwrap();
    let (code, record) =
        common::steer_cli(&coordinator.url, &user, &["sweep", "status", "keyless", "--json"]).await;
    assert_eq!(code, 0, "{record}");
    let status: protocol::SweepStatus = serde_json::from_str(&record).unwrap();
    assert_eq!(status.reasons.len(), 1, "{status:?}");
    assert_eq!((status.reasons[0].runs, status.reasons[0].example_run), (2, run));
    let ledger: Vec<Option<String>> = sqlx::query_scalar("SELECT reason FROM run_attempts WHERE run_id = $1")
        .bind(run)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(ledger.iter().flatten().any(|r| r.contains(REASON)), "{ledger:?}");

    // The report counts both runs as not resolved, and says why they failed.
    let report: serde_json::Value = api_get(&coordinator.url, &user, "/report?sweeps=keyless").await;
    let condition = &report["conditions"][0];
    assert_eq!(
        (condition["resolved"].as_u64(), condition["runs_selected"].as_u64()),
        (Some(0), Some(2)),
        "{condition}"
    );
    let reasons = condition["error_reasons"].as_array().expect("error reasons");
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(reasons[0]["runs"], 2);
    assert!(
        reasons[0]["reason"].as_str().unwrap().contains("reads its API key from $STEERBENCH_"),
        "{reasons:?}"
    );
    let (_, table) = common::steer_cli(&coordinator.url, &user, &["report", "keyless"]).await;
    assert!(table.contains("reads its API key from"), "{table}");

    // With only a placeholder worker live, an agent sweep's status says what it waits for.
    agent_worker.drain().await;
    let placeholder_worker =
        coordinator.start_worker("placeholder-only", 1, worker::Dispatcher::new(None)).await;
    std::fs::write(&file, agent_sweep("stranded")).unwrap();
    let (code, out) =
        common::steer_cli(&coordinator.url, &user, &["sweep", "submit", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
    let (_, out) = common::steer_cli(&coordinator.url, &user, &["sweep", "status", "stranded"]).await;
    assert!(
        out.contains(
            "waiting: 2 queued run(s): they need a worker that runs `agent` runs (with a container engine); \
             the only live worker, `placeholder-only`, runs `placeholder` runs only"
        ),
        "{out}"
    );
    placeholder_worker.drain().await;
    coordinator.shutdown().await;
}

/// A TCP door to the local Docker engine that the test can close, as an engine that stops
/// answering: `tcp://ADDR` until `close` is cancelled.
async fn engine_door(close: tokio_util::sync::CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = tokio::select! {
                _ = close.cancelled() => return,
                accepted = listener.accept() => match accepted { Ok(c) => c, Err(_) => return },
            };
            let close = close.clone();
            tokio::spawn(async move {
                let Ok(mut engine) = tokio::net::UnixStream::connect("/var/run/docker.sock").await else {
                    return;
                };
                tokio::select! {
                    _ = close.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut client, &mut engine) => {}
                }
            });
        }
    });
    format!("tcp://{addr}")
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn a_worker_whose_engine_stops_answering_is_degraded_and_says_so(pool: PgPool) {
    let instances = fixtures();
    let Some(_docker) = docker_with_fixture_images(&instances).await else { return };
    datasets::import(&pool, "fixtures", None, &instances).await.unwrap();
    let coordinator = common::start_coordinator(&pool, Duration::from_secs(3)).await;
    let close = tokio_util::sync::CancellationToken::new();
    let host = engine_door(close.clone()).await;
    let settings = worker::node::Settings {
        coordinator_url: coordinator.url.clone(),
        token: tokens::create(&pool, "w", Role::Worker).await.unwrap().token,
        name: Some("engine-lost".into()),
        slots: 1,
        claim_wait: Duration::from_millis(500),
        drain_timeout: Duration::from_secs(5),
        critic_models: vec![],
        critic_threads: 0,
        docker: Some(worker::node::DockerSettings {
            host: host.clone(),
            image_budget_bytes: None,
            pull_attempts: 1,
            registry: None,
            required: true,
            engine_check_every: Duration::from_millis(200),
        }),
        llm_retry: Default::default(),
        metrics_bind: None,
        metrics_token: None,
        keys: Default::default(),
        slurm: None,
    };
    let node = worker::node::Worker::build(settings).await.expect("the engine answers through the door");
    assert!(node.executor_kinds().contains(&protocol::ExecutorKind::Agent));
    let drain = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(node.run(drain.clone()));
    let admin = tokens::create(&pool, "admin", Role::Admin).await.unwrap().token;
    let workers =
        || async { api_get::<Vec<protocol::WorkerInfo>>(&coordinator.url, &admin, "/workers").await };

    // The engine stops answering: within a few checks and a heartbeat, the worker is degraded.
    close.cancel();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let degraded = loop {
        if let Some(why) = workers().await.iter().find_map(|w| w.degraded.clone()) {
            break why;
        }
        assert!(tokio::time::Instant::now() < deadline, "the worker never reported its engine lost");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(degraded.contains(&format!("the container engine at {host} does not answer")), "{degraded}");

    // An agent sweep now waits, and its status says why.
    let user = tokens::create(&pool, "alice", Role::User).await.unwrap().token;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stranded.toml");
    std::fs::write(&file, agent_sweep("stranded")).unwrap();
    let (code, out) =
        common::steer_cli(&coordinator.url, &user, &["sweep", "submit", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
    let (_, out) = common::steer_cli(&coordinator.url, &user, &["sweep", "status", "stranded"]).await;
    assert!(
        out.contains("the only live worker, `engine-lost`, runs `placeholder` runs only (the container engine of `engine-lost` does not answer)"),
        "{out}"
    );
    let (_, out) = common::steer_cli(&coordinator.url, &user, &["workers"]).await;
    assert!(out.contains("DEGRADED: the container engine at"), "{out}");
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE state = 'queued'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(queued, 2, "no container run was handed to the degraded worker");

    drain.cancel();
    tokio::time::timeout(Duration::from_secs(30), task).await.expect("the worker drains").unwrap().unwrap();
    coordinator.shutdown().await;
}
