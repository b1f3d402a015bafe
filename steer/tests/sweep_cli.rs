//! Checking and deleting through the real `steer` CLI against an in-process coordinator over
//! real Postgres: `steer sweep validate` prints what a sweep file would be and exits 0, or the
//! file's error with its line and exits 1; `steer sweep delete` and `steer dataset delete` need
//! `--yes` without a terminal to confirm on.

mod common;
#[path = "../../protocol/tests/minisweagent/venv.rs"]
mod venv;

use std::time::Duration;

use orchestrator::store::tokens;
use orchestrator::testkit;
use protocol::Role;
use sqlx::PgPool;

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn validate_prints_the_figures_and_delete_needs_confirmation(pool: PgPool) {
    testkit::import_demo(&pool, "demo").await;
    let coordinator = testkit::start_coordinator(&pool, Duration::from_secs(5)).await;
    let url = coordinator.url.clone();
    let user = tokens::create(&pool, "alice", Role::User).await.unwrap().token;
    let admin = tokens::create(&pool, "root", Role::Admin).await.unwrap().token;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, testkit::sweep_toml("good", "repeats = 2", "max_cost_usd = 0.25")).unwrap();
    let bad = dir.path().join("bad.toml");
    let bad_text = testkit::sweep_toml("bad", "", "temperature = 9");
    let line = bad_text.lines().position(|l| l == "temperature = 9").unwrap() + 1;
    std::fs::write(&bad, &bad_text).unwrap();

    let (code, out) = common::steer_cli(&url, &user, &["sweep", "validate", good.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
    for line in [
        "sweep `good` is valid (dataset `demo`)",
        "  runs: 12 in all (1 conditions x 6 instances x 2 repeats)",
        "    agent-a / none: 12 runs, at most $0.25 each",
        "  model endpoints: 127.0.0.1:9",
        "  most it can spend: $3.00 (12 runs x each agent's max_cost_usd)",
        "  budget: none (budget_usd not set)",
    ] {
        assert!(out.lines().any(|l| l == line), "missing `{line}` in:\n{out}");
    }
    assert!(out.contains("  instances: 6 selected (steerbench__demo-"), "{out}");
    assert!(out.contains("held by the 0 live worker(s)"), "{out}");
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs").fetch_one(&pool).await.unwrap();
    assert_eq!(runs, 0, "validating submits nothing");

    let (code, out) = common::steer_cli(&url, &user, &["sweep", "validate", bad.to_str().unwrap()]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("bad.toml:{line}: agents[0].temperature")), "{out}");

    // Deleting: without a terminal, --yes is the confirmation.
    let (code, out) = common::steer_cli(&url, &user, &["sweep", "submit", good.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = common::steer_cli(&url, &user, &["sweep", "delete", "good"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("pass --yes"), "{out}");
    let (code, out) = common::steer_cli(&url, &admin, &["dataset", "delete", "demo", "--yes"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is used by 1 sweep(s): `good`"), "{out}");
    let (code, out) = common::steer_cli(&url, &user, &["sweep", "delete", "good", "--yes"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("deleted sweep `good` and its 12 runs"), "{out}");
    let (code, out) = common::steer_cli(&url, &admin, &["dataset", "delete", "demo", "--yes"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("deleted dataset `demo`"), "{out}");
    coordinator.shutdown().await;
}

/// `steer sweep submit` reads an agent's mini-swe-agent file (here the one mini-swe-agent 1.17.5
/// ships, with the defaults of its package's `agents/default.py`) into the stored sweep: the
/// agent's spec holds the effective configuration, and the file's limits.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn submit_stores_a_mini_swe_agent_file_as_the_agents_configuration(pool: PgPool) {
    let python = match venv::venv("1.17.5") {
        Ok(p) => p,
        Err(reason) => return venv::cannot_run(&reason),
    };
    let file = venv::package_dir(&python).join("config/extra/swebench.yaml");
    testkit::import_demo(&pool, "demo").await;
    let coordinator = testkit::start_coordinator(&pool, Duration::from_secs(5)).await;
    let user = tokens::create(&pool, "alice", Role::User).await.unwrap().token;
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("mini.toml");
    let agent_line = format!("agent_config = {:?}", file.display().to_string());
    std::fs::write(&sweep, testkit::sweep_toml("mini", "", &agent_line)).unwrap();
    let (code, out) =
        common::steer_cli(&coordinator.url, &user, &["sweep", "submit", sweep.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}");
    let spec: serde_json::Value =
        sqlx::query_scalar("SELECT spec FROM agents WHERE name = 'agent-a'").fetch_one(&pool).await.unwrap();
    let config = &spec["agent_config"];
    assert_eq!(config["layout"], "v1", "{spec}");
    assert!(config["instance_template"].as_str().unwrap().contains("<pr_description>"), "{config}");
    assert!(
        config["timeout_template"].as_str().unwrap().contains("timed out and has been killed"),
        "{config}"
    );
    assert_eq!(config["env"][0], serde_json::json!(["PAGER", "cat"]));
    assert_eq!(
        (spec["limits"]["max_steps"].as_u64(), spec["limits"]["max_cost_usd"].as_str()),
        (Some(250), Some("3"))
    );
    coordinator.shutdown().await;
}
