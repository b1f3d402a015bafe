//! Grading through the whole fleet, against the real Docker engine and the fixture images
//! (`docker/build-fixtures.sh` builds them; `.ci/run` does before the tests). A coordinator
//! and a worker with the evaluate executor run in process; evaluations are submitted as
//! `steer eval` submits them.

use std::time::Duration;

use orchestrator::predictions::Prediction;
use orchestrator::server::{self, CoordinatorConfig};
use orchestrator::store::evals::{self, EvalRequest, EvalResult};
use orchestrator::store::{datasets, sweeps, tokens};
use protocol::{Role, SweepState};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use worker::sandbox::Docker;

const WORKER_NAME: &str = "evaluate-test";

mod common;
use common::{docker_with_fixture_images, fixtures, leftover_containers};

struct Fleet {
    coordinator: common::Coordinator,
    worker: common::Worker,
}

async fn start_fleet(pool: &PgPool, docker: Docker) -> Fleet {
    let coordinator = common::start_coordinator(pool, Duration::from_secs(30)).await;
    let dispatcher =
        worker::Dispatcher::new(Some(worker::evaluate::EvaluateExecutor::new(docker, WORKER_NAME)));
    let worker = coordinator.start_worker(WORKER_NAME, 2, dispatcher).await;
    Fleet { coordinator, worker }
}

impl Fleet {
    async fn shutdown(self) {
        self.worker.drain().await;
        self.coordinator.shutdown().await;
    }
}

async fn grade(pool: &PgPool, req: EvalRequest) -> Vec<EvalResult> {
    let submitted = evals::submit(pool, &req).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let status = sweeps::status(pool, submitted.sweep_id).await.unwrap();
        if status.state != SweepState::Running {
            assert_eq!(status.state, SweepState::Completed, "{status:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "grading took over 5 minutes: {status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    evals::results(pool, submitted.sweep_id).await.unwrap()
}

fn request(run_id: &str, gold: bool, predictions: Vec<Prediction>) -> EvalRequest {
    EvalRequest {
        dataset: "fixtures".into(),
        run_id: run_id.into(),
        profile: Default::default(),
        gold,
        instance_ids: vec![],
        predictions,
        sandbox: Default::default(),
        max_attempts: 1,
    }
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn grading_agrees_with_the_fixtures_through_the_fleet(pool: PgPool) {
    let instances = fixtures();
    let Some(docker) = docker_with_fixture_images(&instances).await else { return };
    datasets::import(&pool, "fixtures", None, &instances).await.unwrap();
    let fleet = start_fleet(&pool, docker).await;

    // Every gold patch resolves its instance.
    let gold = grade(&pool, request("gold", true, vec![])).await;
    assert_eq!(gold.len(), instances.len());
    for r in &gold {
        assert_eq!(r.outcome.as_deref(), Some("resolved"), "{r:?}");
        let report = &r.report.as_ref().unwrap()[&r.instance_id];
        assert_eq!(report["resolved"], true);
        assert!(report["tests_status"]["FAIL_TO_PASS"]["failure"].as_array().unwrap().is_empty());
    }

    // An empty patch, a patch that only touches a test file, and a malformed patch.
    let by_id = |id: &str| instances.iter().find(|i| i.instance_id == id).unwrap();
    let p = |id: &str, patch: &str| Prediction {
        instance_id: id.into(),
        model_name_or_path: "probe".into(),
        model_patch: Some(patch.into()),
    };
    let preds = vec![
        p("steerbench__minicalc-2", ""),
        p("steerbench__textkit-1", &by_id("steerbench__textkit-1").test_patch),
        p(
            "steerbench__textkit-2",
            "diff --git a/nope.py b/nope.py\n--- a/nope.py\n+++ b/nope.py\n@@ -1 +1 @@\n-x\n+y\n",
        ),
    ];
    let results = grade(&pool, request("probes", false, preds)).await;
    let outcome = |id: &str| results.iter().find(|r| r.instance_id == id).unwrap().outcome.clone().unwrap();
    assert_eq!(outcome("steerbench__minicalc-2"), "empty_patch");
    assert_eq!(outcome("steerbench__textkit-1"), "unresolved", "a test-only patch must not resolve");
    assert_eq!(outcome("steerbench__textkit-2"), "apply_failed");
    // As in the harness: no report.json for an empty or unapplied patch.
    for id in ["steerbench__minicalc-2", "steerbench__textkit-2"] {
        let r = results.iter().find(|r| r.instance_id == id).unwrap();
        assert!(r.report.as_ref().is_none_or(|v| v.is_null()), "{r:?}");
    }

    fleet.shutdown().await;
    assert_eq!(
        leftover_containers(&format!("steerbench.worker={WORKER_NAME}")).await,
        0,
        "every grading container was removed"
    );
}

/// Ids of containers carrying `label` (key=value).
async fn containers_with(label: &str) -> Vec<String> {
    let out = tokio::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label={label}")])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn worker_process(url: &str, token: &str, name: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_steer"))
        .args(["worker", "--coordinator", url, "--slots", "1", "--name", name, "--claim-wait", "500ms"])
        .env("STEER_TOKEN", token)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("starting `steer worker`")
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn a_killed_workers_container_is_reaped_when_it_restarts(pool: PgPool) {
    const NAME: &str = "reap-test";
    let instances = fixtures();
    let Some(_docker) = docker_with_fixture_images(&instances).await else { return };
    for id in containers_with(&format!("steerbench.worker={NAME}")).await {
        let _ = tokio::process::Command::new("docker").args(["rm", "-f", &id]).output().await;
    }
    datasets::import(&pool, "fixtures", None, &instances).await.unwrap();
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let config = CoordinatorConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        lease_ttl: Duration::from_secs(2),
        maintenance_interval: Duration::from_millis(100),
    };
    let addr = server::spawn(pool.clone(), config, stop.clone(), &tracker).await.unwrap();
    let url = format!("http://{addr}");
    let token = tokens::create(&pool, "w", Role::Worker).await.unwrap().token;

    // A patch whose test run hangs (pytest imports conftest.py), graded with a 5 s limit.
    let hang =
        "diff --git a/conftest.py b/conftest.py\nnew file mode 100644\n--- /dev/null\n+++ b/conftest.py\n\
                @@ -0,0 +1,2 @@\n+import time\n+time.sleep(600)\n";
    let mut req = request(
        "hang",
        false,
        vec![Prediction {
            instance_id: "steerbench__minicalc-2".into(),
            model_name_or_path: "probe".into(),
            model_patch: Some(hang.into()),
        }],
    );
    req.sandbox.eval_timeout_s = 5;
    req.max_attempts = 2;
    let sweep = evals::submit(&pool, &req).await.unwrap().sweep_id;

    // The first worker process starts grading, then dies without cleaning up.
    let mut first = worker_process(&url, &token, NAME);
    wait_for("the grading container", Duration::from_secs(60), || async {
        !containers_with(&format!("steerbench.worker={NAME}")).await.is_empty()
    })
    .await;
    let orphans = containers_with(&format!("steerbench.worker={NAME}")).await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    assert_eq!(
        containers_with(&format!("steerbench.worker={NAME}")).await,
        orphans,
        "SIGKILL cleans nothing up"
    );

    // Its next incarnation removes them at start, then the re-queued run times out there.
    let mut second = worker_process(&url, &token, NAME);
    wait_for("the orphaned container to be reaped", Duration::from_secs(60), || async {
        let now = containers_with(&format!("steerbench.worker={NAME}")).await;
        orphans.iter().all(|o| !now.iter().any(|n| o.starts_with(n.as_str()) || n.starts_with(o.as_str())))
    })
    .await;
    wait_for("the evaluation to end", Duration::from_secs(120), || async {
        sweeps::status(&pool, sweep).await.unwrap().state != SweepState::Running
    })
    .await;
    let results = evals::results(&pool, sweep).await.unwrap();
    assert_eq!(results[0].outcome.as_deref(), Some("timeout"), "{results:?}");
    let attempt: i32 = sqlx::query_scalar("SELECT attempt FROM runs WHERE sweep_id = $1")
        .bind(sweep)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempt, 2, "graded again after the first worker's lease expired");

    // SIGTERM: the worker drains and exits; nothing of it is left.
    nix_term(&second);
    tokio::time::timeout(Duration::from_secs(30), second.wait())
        .await
        .expect("worker exits on SIGTERM")
        .unwrap();
    assert!(containers_with(&format!("steerbench.worker={NAME}")).await.is_empty());
    stop.cancel();
    tracker.close();
    tracker.wait().await;
}

fn nix_term(child: &tokio::process::Child) {
    let pid = child.id().expect("running child") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
}
