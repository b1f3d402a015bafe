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

/// `steer ARGS` as the user `token` at `url`: (exit status, stdout + stderr).
async fn steer(url: &str, token: &str, args: &[&str]) -> (i32, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_steer"))
            .args(args)
            .env("STEER_COORDINATOR", url)
            .env("STEER_TOKEN", token)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("steer finishes within 3 minutes")
    .expect("steer runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
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
        steer(&coordinator.url, &user, &["sweep", "submit", file.to_str().unwrap(), "--wait"]).await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("why runs failed or were cancelled"), "{out}");
    assert!(out.contains(&format!("2 error: infrastructure failure: agent `keyless` {REASON}")), "{out}");

    let (code, out) = steer(&coordinator.url, &user, &["sweep", "runs", "keyless"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("agent `keyless` reads its API key").count(), 2, "{out}");
    let (_, why) = steer(&coordinator.url, &user, &["sweep", "runs", "keyless", "--state", "error"]).await;
    assert!(why.contains(&format!("        | infrastructure failure: agent `keyless` {REASON}")), "{why}");

    // The run's record keeps the reason in its last error and its attempt ledger.
    let run: i64 = sqlx::query_scalar("SELECT min(id) FROM runs").fetch_one(&pool).await.unwrap();
    let (code, record) = steer(&coordinator.url, &user, &["sweep", "status", "keyless", "--json"]).await;
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

    // With only a placeholder worker live, an agent sweep's status says what it waits for.
    agent_worker.drain().await;
    let placeholder_worker =
        coordinator.start_worker("placeholder-only", 1, worker::Dispatcher::new(None)).await;
    std::fs::write(&file, agent_sweep("stranded")).unwrap();
    let (code, out) = steer(&coordinator.url, &user, &["sweep", "submit", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
    let (_, out) = steer(&coordinator.url, &user, &["sweep", "status", "stranded"]).await;
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
