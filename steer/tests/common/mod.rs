//! What the Docker-backed system tests share: the fixture dataset, the engine (skipping
//! without it unless CI is set), and an in-process fleet (coordinator + workers).

#![allow(dead_code)] // each test binary uses a part

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use orchestrator::store::tokens;
use orchestrator::testkit;
use protocol::{Instance, Role};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use worker::sandbox::Docker;

pub fn fixtures() -> Vec<Instance> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/fixtures/dataset.jsonl");
    orchestrator::dataset::load_path(&path).expect("fixture dataset loads")
}

/// The engine, with every fixture image present; None (skip) without them unless CI is set.
pub async fn docker_with_fixture_images(instances: &[Instance]) -> Option<Docker> {
    let ci = std::env::var_os("CI").is_some();
    let docker = match Docker::connect().await {
        Ok(d) => d,
        Err(e) if ci => panic!("CI is set and Docker is unreachable: {e}"),
        Err(e) => {
            eprintln!("skipping: {e}");
            return None;
        }
    };
    for inst in instances {
        let image = inst.image.as_deref().expect("fixtures name their images");
        if !docker.image_present(image).await.unwrap() {
            assert!(!ci, "CI is set and fixture image {image} is missing: run docker/build-fixtures.sh");
            eprintln!("skipping: fixture image {image} is missing (docker/build-fixtures.sh builds it)");
            return None;
        }
    }
    Some(docker)
}

/// A coordinator serving in process (the coordinator crate's own test harness), which can
/// also start workers in process.
pub struct Coordinator {
    pub url: String,
    inner: testkit::Coordinator,
}

pub async fn start_coordinator(pool: &PgPool, lease_ttl: Duration) -> Coordinator {
    let inner = testkit::start_coordinator(pool, lease_ttl).await;
    Coordinator { url: inner.url.clone(), inner }
}

/// A worker running in process (its own tokio task).
pub struct Worker {
    pub drain: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Coordinator {
    pub async fn start_worker(&self, name: &str, slots: u32, dispatcher: worker::Dispatcher) -> Worker {
        let token = tokens::create(&self.inner.pool, name, Role::Worker).await.unwrap().token;
        let config = worker::WorkerConfig {
            coordinator_url: self.url.clone(),
            token,
            name: name.into(),
            slots,
            claim_wait: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(10),
            capabilities: dispatcher.capabilities(),
            redactor: Default::default(),
        };
        let drain = CancellationToken::new();
        let task = tokio::spawn(worker::run(config, Arc::new(dispatcher), drain.clone()));
        Worker { drain, task }
    }

    pub async fn shutdown(self) {
        self.inner.shutdown().await;
    }
}

impl Worker {
    pub async fn drain(self) {
        self.drain.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Containers still carrying a label (`docker ps -a --filter label=...`).
pub async fn leftover_containers(label: &str) -> usize {
    let out = tokio::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// `steer ARGS` as the holder of `token` at the coordinator `url`, with no terminal on stdin:
/// (exit status, stdout then stderr). Fails the test past five minutes.
pub async fn steer_cli(url: &str, token: &str, args: &[&str]) -> (i32, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_steer"))
            .args(args)
            .env("STEER_COORDINATOR", url)
            .env("STEER_TOKEN", token)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("steer finishes within 5 minutes")
    .expect("steer runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}
