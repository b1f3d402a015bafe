//! Helpers shared by the unit, API and system tests: the bundled demo dataset, sweep files
//! written inline, and a coordinator serving in process. Compiled only for tests and with the
//! `testkit` feature, never into the binary.

use std::time::Duration;

use protocol::SweepSubmitted;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::server::{self, CoordinatorConfig};

use crate::store::{datasets, sweeps};
use crate::{dataset, sweep_file};

/// The bundled demo dataset (6 SWE-bench-shaped instances).
pub const DEMO_DATASET: &str = include_str!("../../examples/demo-dataset.jsonl");

/// Imports the demo dataset under `name`.
pub async fn import_demo(pool: &PgPool, name: &str) -> i64 {
    let instances =
        dataset::parse(dataset::Format::Jsonl, DEMO_DATASET.as_bytes()).expect("demo dataset parses");
    datasets::import(pool, name, Some("examples/demo-dataset.jsonl"), &instances)
        .await
        .expect("demo import")
        .id
}

/// A small sweep file over the demo dataset; `extra` is appended to the top-level table and
/// `agent_extra` to the agent's. The agent is `price = "free"`, so tests that switch to the
/// `agent` executor (which calls it) need no price.
pub fn sweep_toml(name: &str, extra: &str, agent_extra: &str) -> String {
    format!(
        r#"name = "{name}"
{extra}

[dataset]
name = "demo"

[executor]
kind = "placeholder"
duration_ms = 0
steps = 1

[[agents]]
name = "agent-a"
base_url = "http://127.0.0.1:9/v1"
model = "demo-model"
price = "free"
{agent_extra}

[[critics]]
name = "none"
kind = "none"
"#
    )
}

/// Parses and submits a sweep file.
pub async fn submit(pool: &PgPool, toml: &str) -> SweepSubmitted {
    let file = sweep_file::parse(toml, "test.toml").expect("test sweep file parses");
    sweeps::submit(pool, &file, toml).await.expect("submit")
}

/// A coordinator serving in process on a loopback port, with a fast maintenance loop.
pub struct Coordinator {
    pub url: String,
    pub pool: PgPool,
    stop: CancellationToken,
    tracker: TaskTracker,
}

pub async fn start_coordinator(pool: &PgPool, lease_ttl: Duration) -> Coordinator {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let config = CoordinatorConfig {
        bind: "127.0.0.1:0".parse().expect("a loopback address"),
        lease_ttl,
        maintenance_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let addr =
        server::spawn(pool.clone(), config, stop.clone(), &tracker).await.expect("the coordinator starts");
    Coordinator { url: format!("http://{addr}"), pool: pool.clone(), stop, tracker }
}

impl Coordinator {
    /// Stops the coordinator and waits (at most 10 s) for its tasks to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(10), self.tracker.wait())
            .await
            .expect("the coordinator stops");
    }
}
