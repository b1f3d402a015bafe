//! Grading through the whole fleet, against the real Docker engine and the fixture images
//! (`docker/build-fixtures.sh` builds them; `.ci/run` does before the tests). A coordinator
//! and a worker with the evaluate executor run in process; evaluations are submitted as
//! `steer eval` submits them.

use std::time::Duration;

use orchestrator::predictions::Prediction;
use orchestrator::server::{self, CoordinatorConfig};
use orchestrator::store::evals::{self, EvalRequest, EvalResult};
use orchestrator::store::{datasets, sweeps, tokens};
use protocol::Instance;
use protocol::{Role, SweepState};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use worker::grading::{self, Profile};
use worker::sandbox::{Docker, ExecLimits, SandboxSpec};

const WORKER_NAME: &str = "evaluate-test";

mod common;
use common::{docker_with_fixture_images, fixtures, leftover_containers};

struct Fleet {
    coordinator: common::Coordinator,
    worker: common::Worker,
}

async fn start_fleet(pool: &PgPool, docker: Docker) -> Fleet {
    start_named_fleet(pool, docker, WORKER_NAME).await
}

/// A fleet whose worker has its own name, so that tests running at the same time never see
/// (or reap) each other's containers.
async fn start_named_fleet(pool: &PgPool, docker: Docker, worker_name: &str) -> Fleet {
    let coordinator = common::start_coordinator(pool, Duration::from_secs(30)).await;
    // With an image cache that never evicts, as `steer worker` has: it reports the images the
    // worker holds.
    let cache = worker::sandbox::ImageCache::new(docker.clone(), u64::MAX);
    let dispatcher = worker::Dispatcher::new(Some(
        worker::evaluate::EvaluateExecutor::new(docker, worker_name).with_image_cache(cache),
    ));
    let worker = coordinator.start_worker(worker_name, 2, dispatcher).await;
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

// ------------------------------------------------------------------ hostile patches

/// A `git diff` creating `path` with `text`.
fn new_file(path: &str, text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut diff = format!(
        "diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{} @@\n",
        lines.len()
    );
    for line in lines {
        diff.push_str(&format!("+{line}\n"));
    }
    diff
}

/// A Python list literal of `items` (Rust's debug quoting is Python's for plain ASCII).
fn python_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A conftest.py that, once pytest is done, prints `lines` after everything pytest printed,
/// then leaves with status 0 if `exit_zero`.
fn printing_at_exit(lines: &[String], exit_zero: bool) -> String {
    let exit = if exit_zero { "    os._exit(0)\n" } else { "" };
    format!(
        "import atexit\nimport os\nimport sys\n\nLINES = {}\n\n\ndef forge():\n    sys.stdout.flush()\n    sys.stderr.flush()\n    os.write(1, (\"\\n\".join(LINES) + \"\\n\").encode())\n{exit}\n\natexit.register(forge)\n",
        python_list(lines)
    )
}

fn by_id<'a>(instances: &'a [Instance], id: &str) -> &'a Instance {
    instances.iter().find(|i| i.instance_id == id).unwrap()
}

fn prediction(id: &str, patch: &str) -> Prediction {
    Prediction {
        instance_id: id.into(),
        model_name_or_path: "hostile".into(),
        model_patch: Some(patch.into()),
    }
}

fn result<'a>(results: &'a [EvalResult], id: &str) -> &'a EvalResult {
    results.iter().find(|r| r.instance_id == id).unwrap()
}

/// The integrity check's reason in a graded run's report, if any.
fn tampered(r: &EvalResult) -> Option<String> {
    let report = r.report.as_ref()?;
    report[&r.instance_id].get(grading::report::TAMPERED_KEY)?.as_str().map(str::to_string)
}

/// What the official harness would have said of the same log.
fn harness_resolved(r: &EvalResult) -> bool {
    grading::official_report(r.report.as_ref().unwrap())[&r.instance_id]["resolved"] == true
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn forged_test_output_is_not_resolved(pool: PgPool) {
    const NAME: &str = "evaluate-forged";
    let instances = fixtures();
    let Some(docker) = docker_with_fixture_images(&instances).await else { return };
    datasets::import(&pool, "fixtures", None, &instances).await.unwrap();
    let fleet = start_named_fleet(&pool, docker, NAME).await;
    let passed = |id: &str| -> Vec<String> {
        by_id(&instances, id).fail_to_pass.iter().map(|t| format!("PASSED {t}")).collect()
    };

    // The bug stays; at exit the tests print PASSED for every FAIL_TO_PASS test, then the rest
    // of a clean eval script's output with exit status 0 (forged end marker and exit record).
    let mut markers = passed("steerbench__minicalc-2");
    markers.extend([
        "+ SWEBENCH_TEST_EXIT_CODE=0".to_string(),
        "+ : '>>>>> End Test Output'".to_string(),
        "+ echo '>>>>> Test Exit Code: 0'".to_string(),
        ">>>>> Test Exit Code: 0".to_string(),
    ]);
    // The bug stays; at exit the tests print PASSED lines and leave with status 0.
    let after_summary = passed("steerbench__minicalc-3");
    // SWE-bench issue #631: a conftest.py that turns every failure into a pass.
    let forced = "import pytest\n\n\n@pytest.hookimpl(hookwrapper=True)\ndef pytest_runtest_makereport(item, call):\n    outcome = yield\n    report = outcome.get_result()\n    if report.failed:\n        report.outcome = \"passed\"\n";
    let preds = vec![
        prediction("steerbench__minicalc-2", &new_file("conftest.py", &printing_at_exit(&markers, false))),
        prediction(
            "steerbench__minicalc-3",
            &new_file("conftest.py", &printing_at_exit(&after_summary, true)),
        ),
        prediction("steerbench__textkit-2", &new_file("conftest.py", forced)),
    ];
    let results = grade(&pool, request("forged", false, preds)).await;

    let r = result(&results, "steerbench__minicalc-2");
    assert_eq!(r.outcome.as_deref(), Some("unresolved"), "{r:?}");
    assert_eq!(r.resolved, Some(false));
    let reason = tampered(r).expect("refused as forged");
    assert!(reason.contains("`>>>>> End Test Output` appears 2 times"), "{reason}");
    assert!(harness_resolved(r), "the official harness is fooled by this one: {r:?}");

    let r = result(&results, "steerbench__minicalc-3");
    assert_eq!(r.outcome.as_deref(), Some("unresolved"), "{r:?}");
    let reason = tampered(r).expect("refused as forged");
    assert!(reason.contains("follows the test runner's final summary"), "{reason}");
    assert!(harness_resolved(r), "the official harness is fooled by this one: {r:?}");

    // Known limit, shared with the harness: the output of this run is genuine pytest output
    // (the tests really were reported as passing), so no log check can refuse it.
    let r = result(&results, "steerbench__textkit-2");
    assert_eq!(r.outcome.as_deref(), Some("resolved"), "{r:?}");
    assert_eq!(tampered(r), None);

    fleet.shutdown().await;
    assert_eq!(leftover_containers(&format!("steerbench.worker={NAME}")).await, 0);
}

/// Patches that try to write outside /testbed: a `..` path, an absolute path, and a symbolic
/// link created by the patch itself with a file written through it.
fn escaping_patches() -> [(&'static str, String); 3] {
    let dotdot = new_file("../../etc/steer_escaped_dotdot", "escaped");
    let absolute = "--- /dev/null\n+++ /etc/steer_escaped_absolute\n@@ -0,0 +1 @@\n+escaped\n".to_string();
    let symlink = "diff --git a/link b/link\nnew file mode 120000\n--- /dev/null\n+++ b/link\n@@ -0,0 +1 @@\n+/etc\n\\ No newline at end of file\n".to_string()
        + &new_file("link/steer_escaped_symlink", "escaped");
    [("dotdot", dotdot), ("absolute", absolute), ("symlink", symlink)]
}

/// Files the patches above would have written outside /testbed, as `ls` lists them.
const ESCAPED: &str =
    "ls -d /etc/steer_escaped_* /steer_escaped_* /testbed/../steer_escaped_* 2>/dev/null; true";

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn patches_cannot_write_outside_the_repository(pool: PgPool) {
    const NAME: &str = "evaluate-escape";
    let instances = fixtures();
    let Some(docker) = docker_with_fixture_images(&instances).await else { return };

    // The apply chain of each profile, run as grading runs it, then inspected in the same container.
    let image = by_id(&instances, "steerbench__minicalc-1").image.clone().unwrap();
    let limits = ExecLimits { timeout: Duration::from_secs(30), max_output_bytes: 10_000 };
    for profile in [Profile::V5, Profile::V4] {
        for (name, patch) in escaping_patches() {
            let mut spec = SandboxSpec::new(&image);
            spec.labels.insert("steerbench.worker".into(), NAME.into());
            let sandbox = docker.create(&spec).await.unwrap();
            let applied = worker::evaluate::apply_patch(&sandbox, profile, &patch).await.unwrap();
            let escaped = sandbox.exec(ESCAPED, &limits).await.unwrap().output;
            assert_eq!(escaped, "", "{name} under {profile:?} wrote outside /testbed");
            // `+++ /etc/x` is read as `etc/x` (`-p1`): it applies, inside the repository
            let inside = sandbox.exec("cat /testbed/etc/steer_escaped_absolute", &limits).await.unwrap();
            assert_eq!(applied, name == "absolute", "{name} under {profile:?}");
            assert_eq!(
                inside.output == "escaped\n",
                name == "absolute",
                "{name} under {profile:?}: {inside:?}"
            );
            sandbox.remove().await.unwrap();
        }
    }

    // Through the fleet: the escaping patches do not apply; the absolute one is graded as the
    // harmless patch it becomes.
    datasets::import(&pool, "fixtures", None, &instances).await.unwrap();
    let fleet = start_named_fleet(&pool, docker, NAME).await;
    let [(_, dotdot), (_, absolute), (_, symlink)] = escaping_patches();
    let preds = vec![
        prediction("steerbench__minicalc-1", &dotdot),
        prediction("steerbench__minicalc-2", &absolute),
        prediction("steerbench__minicalc-3", &symlink),
    ];
    let results = grade(&pool, request("escape", false, preds)).await;
    let outcome = |id: &str| result(&results, id).outcome.clone().unwrap();
    assert_eq!(outcome("steerbench__minicalc-1"), "apply_failed");
    assert_eq!(outcome("steerbench__minicalc-2"), "unresolved");
    assert_eq!(outcome("steerbench__minicalc-3"), "apply_failed");
    fleet.shutdown().await;
    assert_eq!(leftover_containers(&format!("steerbench.worker={NAME}")).await, 0);
}

/// Peak resident set of this test process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn a_gigabyte_of_test_output_is_graded_within_the_capture_budget(pool: PgPool) {
    const NAME: &str = "evaluate-huge";
    let instances = fixtures();
    let Some(docker) = docker_with_fixture_images(&instances).await else { return };
    datasets::import(&pool, "fixtures", None, &instances).await.unwrap();
    let fleet = start_named_fleet(&pool, docker, NAME).await;

    // The gold patch, and a conftest.py that prints 1 GiB (with bytes that are not UTF-8)
    // before the tests run: the start marker stays in the head of the capture, the results
    // and the end marker in its tail.
    let loud = "import os\nimport sys\n\n\ndef pytest_sessionstart(session):\n    sys.stdout.flush()\n    chunk = (b\"noise \\xff\\xfe\\xc3( not utf-8 \" + b\"y\" * 100 + b\"\\n\") * 8192\n    written = 0\n    while written < 1 << 30:\n        written += os.write(1, chunk)\n";
    let id = "steerbench__minicalc-1";
    let patch = by_id(&instances, id).patch.clone() + &new_file("conftest.py", loud);
    let before = peak_rss_kib();
    let started = std::time::Instant::now();
    let results = grade(&pool, request("huge", false, vec![prediction(id, &patch)])).await;
    let elapsed = started.elapsed();
    let grown_mib = peak_rss_kib().saturating_sub(before) / 1024;

    let r = result(&results, id);
    assert_eq!(r.outcome.as_deref(), Some("resolved"), "{r:?}");
    assert_eq!(tampered(r), None);
    // 1 GiB held anywhere in this process (worker or coordinator) would show here.
    assert!(grown_mib < 512, "peak RSS grew by {grown_mib} MiB");
    // The recorded step of the test run shows the noise (decoded with replacement) and the
    // results after it.
    let observation: String = sqlx::query_scalar(
        "SELECT observation FROM steps WHERE run_id = $1 AND action = '/bin/bash /eval.sh'",
    )
    .bind(r.run_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(observation.contains("noise \u{fffd}\u{fffd}\u{fffd}( not utf-8"), "{}", &observation[..2000]);
    assert!(observation.contains("passed in"), "{}", &observation[observation.len() - 2000..]);
    eprintln!("1 GiB of test output graded in {elapsed:?}, peak RSS grew by {grown_mib} MiB");

    fleet.shutdown().await;
    assert_eq!(leftover_containers(&format!("steerbench.worker={NAME}")).await, 0);
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
        ..Default::default()
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

// ------------------------------------------------------------------ run ids through `steer eval`

/// The summary files (`<model>.<run id>.json`) in `dir`, by name.
fn summaries(dir: &std::path::Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), serde_json::from_str(&text).unwrap())
        })
        .collect()
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn two_predictions_files_of_one_name_are_two_evaluations_with_their_own_summaries(pool: PgPool) {
    const NAME: &str = "run-id-test";
    let instances = fixtures();
    let Some(docker) = docker_with_fixture_images(&instances).await else { return };
    datasets::import(&pool, "fixtures", None, &instances).await.unwrap();
    let fleet = start_named_fleet(&pool, docker, NAME).await;
    let user = tokens::create(&pool, "alice", Role::User).await.unwrap().token;
    let url = fleet.coordinator.url.clone();

    // Two files both called preds.jsonl, for the same model and instance: the gold patch in
    // one, an empty patch in the other.
    let id = "steerbench__minicalc-1";
    let gold = &instances.iter().find(|i| i.instance_id == id).unwrap().patch;
    let dir = tempfile::tempdir().unwrap();
    let line = |patch: &str| {
        serde_json::json!({"instance_id": id, "model_name_or_path": "probe", "model_patch": patch})
            .to_string()
    };
    let (solved, empty) = (dir.path().join("a/preds.jsonl"), dir.path().join("b/preds.jsonl"));
    for (path, patch) in [(&solved, gold.as_str()), (&empty, "")] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, line(patch) + "\n").unwrap();
    }
    let out_dir = dir.path().join("out");
    let out = out_dir.to_str().unwrap();
    let eval = |preds: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "eval".to_string(),
            "--dataset".into(),
            "fixtures".into(),
            "--predictions".into(),
            preds.to_str().unwrap().into(),
            "--image-namespace".into(),
            "steerbench".into(),
            "--summary-dir".into(),
            out.into(),
            "--report-dir".into(),
            format!("{out}/reports"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let url = url.clone();
        let user = user.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            common::steer_cli(&url, &user, &args).await
        }
    };

    let (code, first) = eval(&solved, &[]).await;
    assert_eq!(code, 0, "{first}");
    let (code, second) = eval(&empty, &[]).await;
    assert_eq!(code, 0, "{second}");
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM sweeps WHERE kind = 'eval' ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(names.len(), 2, "two evaluations: {names:?}");
    assert_ne!(names[0], names[1]);
    assert!(names.iter().all(|n| n.starts_with("preds-")), "{names:?}");

    let files = summaries(&out_dir);
    assert_eq!(files.len(), 2, "two summary files: {:?}", files.keys());
    let solved_summary = &files[&format!("probe.{}.json", names[0])];
    let empty_summary = &files[&format!("probe.{}.json", names[1])];
    assert_eq!(solved_summary["resolved_ids"], serde_json::json!([id]), "{solved_summary}");
    assert_eq!(empty_summary["resolved_ids"], serde_json::json!([]), "{empty_summary}");
    assert_eq!(empty_summary["empty_patch_ids"], serde_json::json!([id]), "{empty_summary}");
    // Per-instance reports sit under their own run id (an empty patch gets none, as in the harness).
    assert!(out_dir.join("reports").join(&names[0]).join("probe").join(id).join("report.json").is_file());

    // The same file again: the same evaluation, its files written again, nothing new.
    let (code, again) = eval(&solved, &[]).await;
    assert_eq!(code, 0, "{again}");
    assert!(
        again.contains(&format!("evaluation `{}` with these patches exists already", names[0])),
        "{again}"
    );
    // The other file under the first one's run id: refused, naming the run id and the way out.
    let (code, refused) = eval(&empty, &["--run-id", &names[0]]).await;
    assert_ne!(code, 0, "{refused}");
    assert!(refused.contains(&format!("`{}` is taken by evaluation", names[0])), "{refused}");
    assert!(refused.contains("--run-id"), "{refused}");
    let evals: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sweeps WHERE kind = 'eval'").fetch_one(&pool).await.unwrap();
    assert_eq!(evals, 2);
    assert_eq!(summaries(&out_dir), files, "no summary was overwritten with other results");

    fleet.shutdown().await;
    assert_eq!(leftover_containers(&format!("steerbench.worker={NAME}")).await, 0);
}

// ------------------------------------------------------------------ the harness's files through `steer eval`

/// The text between the eval script's start and end markers in a test output.
fn between_markers(output: &str) -> &str {
    let start = output.find("+ : '>>>>> Start Test Output'").expect("start marker");
    let end = output[start..].find("+ : '>>>>> End Test Output'").expect("end marker after the start");
    &output[start..start + end]
}

/// Every field of v5.0.2's `make_run_report` with a docker client.
const V5_SUMMARY_FIELDS: [&str; 23] = [
    "total_instances",
    "submitted_instances",
    "completed_instances",
    "resolved_instances",
    "unresolved_instances",
    "infra_failure_instances",
    "ambiguous_failure_instances",
    "empty_patch_instances",
    "error_instances",
    "completed_ids",
    "incomplete_ids",
    "empty_patch_ids",
    "submitted_ids",
    "resolved_ids",
    "unresolved_ids",
    "infra_failure_ids",
    "ambiguous_failure_ids",
    "failure_reasons",
    "error_ids",
    "schema_version",
    "unstopped_instances",
    "unstopped_containers",
    "unremoved_images",
];

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn steer_eval_writes_the_harness_files_and_classifies_failures(pool: PgPool) {
    const NAME: &str = "harness-files-test";
    let instances = fixtures();
    let Some(docker) = docker_with_fixture_images(&instances).await else { return };
    datasets::import(&pool, "fixtures", None, &instances).await.unwrap();
    let fleet = start_named_fleet(&pool, docker, NAME).await;
    let user = tokens::create(&pool, "alice", Role::User).await.unwrap().token;
    worker_reported_images(&pool).await;

    // A resolving patch, a failing one (tests only), an empty one, a malformed one, one after
    // which pytest runs no test, and one whose tests hang past the time limit.
    let gold_patch = by_id(&instances, "steerbench__minicalc-1").patch.clone();
    let no_tests = new_file("conftest.py", "def pytest_collection_modifyitems(items):\n    items.clear()\n");
    let hang = new_file("conftest.py", "import time\ntime.sleep(600)\n");
    let preds = [
        ("steerbench__minicalc-1", gold_patch.clone()),
        ("steerbench__textkit-1", by_id(&instances, "steerbench__textkit-1").test_patch.clone()),
        ("steerbench__minicalc-2", String::new()),
        (
            "steerbench__textkit-2",
            "diff --git a/nope.py b/nope.py\n--- a/nope.py\n+++ b/nope.py\n@@ -1 +1 @@\n-x\n+y\n".to_string(),
        ),
        ("steerbench__minicalc-3", no_tests.clone()),
        ("steerbench__jsonpath-lite-1", hang),
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("preds.jsonl");
    let lines: Vec<String> = preds
        .iter()
        .map(|(id, patch)| {
            serde_json::json!({"instance_id": id, "model_name_or_path": "org/probe", "model_patch": patch})
                .to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("out");
    let reports = out.join("reports");
    let (code, text) = common::steer_cli(
        &fleet.coordinator.url,
        &user,
        &[
            "eval",
            "--dataset",
            "fixtures",
            "--predictions",
            file.to_str().unwrap(),
            "--run-id",
            "files",
            "--image-namespace",
            "steerbench",
            "--timeout",
            "30",
            "--summary-dir",
            out.to_str().unwrap(),
            "--report-dir",
            reports.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("per-instance files: 5 folder(s), 3 with a report.json"), "{text}");

    let folder = |id: &str| reports.join("files").join("org__probe").join(id);
    let read = |id: &str, name: &str| {
        std::fs::read_to_string(folder(id).join(name)).unwrap_or_else(|e| panic!("{id}/{name}: {e}"))
    };
    let names = |id: &str| {
        let mut names: Vec<String> = std::fs::read_dir(folder(id))
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    let all = ["eval.sh", "patch.diff", "report.json", "run_instance.log", "test_output.txt"];

    // Graded instances: the four files beside report.json, with what ran.
    for (id, patch) in [
        ("steerbench__minicalc-1", &gold_patch),
        ("steerbench__textkit-1", &by_id(&instances, "steerbench__textkit-1").test_patch),
        ("steerbench__minicalc-3", &no_tests),
    ] {
        assert_eq!(names(id), all, "{id}");
        assert_eq!(&read(id, "patch.diff"), patch, "{id}: patch.diff is the prediction's patch");
        let script = grading::eval_script_for(by_id(&instances, id), Profile::V5).unwrap();
        assert_eq!(read(id, "eval.sh"), script, "{id}: eval.sh is the script that ran");
        let log = read(id, "run_instance.log");
        assert!(log.contains(">>>>> Applied Patch"), "{id}: {log}");
        assert!(log.contains("Ran `/bin/bash /eval.sh`: exit code"), "{id}: {log}");
        assert!(log.contains("in image steerbench/sweb.eval.x86_64."), "{id}: names the image: {log}");
        let report: serde_json::Value = serde_json::from_str(&read(id, "report.json")).unwrap();
        // A log in which no suite ran is graded without test statuses (v5), and says why.
        match id {
            "steerbench__minicalc-3" => {
                assert_eq!(report[id]["infra_failure_reason"], "no_tests_collected", "{report}");
                assert!(report[id].get("tests_status").is_none(), "{report}");
            }
            _ => assert!(report[id]["tests_status"].is_object(), "{id}: {report}"),
        }
    }
    let passed = read("steerbench__minicalc-1", "test_output.txt");
    assert!(between_markers(&passed).contains(" passed in "), "{passed}");
    let failing = read("steerbench__textkit-1", "test_output.txt");
    assert!(between_markers(&failing).contains("FAILED tests/test_slug.py::test_slugify"), "{failing}");
    let none_ran = read("steerbench__minicalc-3", "test_output.txt");
    assert!(between_markers(&none_ran).contains("no tests ran"), "{none_ran}");

    // The empty patch is not run: no folder. The malformed one: the patch and the log only.
    assert!(!folder("steerbench__minicalc-2").exists());
    assert_eq!(names("steerbench__textkit-2"), ["patch.diff", "run_instance.log"]);
    assert!(read("steerbench__textkit-2", "run_instance.log").contains(">>>>> Patch Apply Failed"));
    // The hung tests: their output with the harness's timeout line, and no report.
    let hung = "steerbench__jsonpath-lite-1";
    assert_eq!(names(hung), ["eval.sh", "patch.diff", "run_instance.log", "test_output.txt"]);
    assert!(read(hung, "test_output.txt").ends_with("\n\nTimeout error: 30 seconds exceeded."));
    assert!(read(hung, "run_instance.log").contains("killed at the time limit"));

    // The summary: every field the harness writes, failures classified as v5 does.
    let files = summaries(&out);
    let summary = &files["org__probe.files.json"];
    let mut keys: Vec<&str> = summary.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = V5_SUMMARY_FIELDS.to_vec();
    expected.sort_unstable();
    assert_eq!(keys, expected, "{summary}");
    use serde_json::json;
    assert_eq!(summary["total_instances"], instances.len(), "{summary}");
    assert_eq!(summary["submitted_instances"], 6);
    assert_eq!(summary["completed_instances"], 3);
    assert_eq!(summary["resolved_ids"], json!(["steerbench__minicalc-1"]));
    assert_eq!(summary["unresolved_ids"], json!(["steerbench__minicalc-3", "steerbench__textkit-1"]));
    assert_eq!(summary["empty_patch_ids"], json!(["steerbench__minicalc-2"]));
    assert_eq!(summary["error_ids"], json!(["steerbench__jsonpath-lite-1", "steerbench__textkit-2"]));
    assert_eq!(
        summary["failure_reasons"],
        json!({"steerbench__jsonpath-lite-1": "tests_timed_out", "steerbench__minicalc-3": "no_tests_collected"}),
        "{summary}"
    );
    assert_eq!(summary["ambiguous_failure_instances"], 2);
    assert_eq!(
        summary["ambiguous_failure_ids"],
        json!(["steerbench__jsonpath-lite-1", "steerbench__minicalc-3"])
    );
    assert_eq!(summary["infra_failure_instances"], 0);
    assert_eq!(summary["infra_failure_ids"], json!([]));
    assert_eq!(summary["unstopped_instances"], 0);
    assert_eq!(summary["unstopped_containers"], json!([]));
    // The dataset's images the worker holds (all of them here), as the harness lists the
    // dataset's images left on its engine.
    let mut images: Vec<&str> = instances.iter().filter_map(|i| i.image.as_deref()).collect();
    images.sort_unstable();
    assert_eq!(images.len(), instances.len());
    assert_eq!(summary["unremoved_images"], json!(images), "{summary}");
    assert_eq!(summary["schema_version"], 2);

    fleet.shutdown().await;
    assert_eq!(leftover_containers(&format!("steerbench.worker={NAME}")).await, 0);
}

/// Waits until a worker has reported the images it holds (its first heartbeat does), which
/// the summary's `unremoved_images` is made of.
async fn worker_reported_images(pool: &PgPool) {
    wait_for("the worker's image report", Duration::from_secs(30), || async {
        let n: Option<i32> =
            sqlx::query_scalar("SELECT max(cardinality(images)) FROM workers").fetch_one(pool).await.unwrap();
        n.unwrap_or(0) > 0
    })
    .await;
}

// ------------------------------------------------------------------ against the harness's own files

/// The official harness's outputs for `harness-reference/predictions.jsonl` (gold, failing,
/// empty, malformed and no-test patches), made by `scripts/harness-reference` with swebench
/// 5.0.2 on the fixture images and committed.
fn reference_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/harness-reference")
}

/// Every file under `dir`, by path relative to it.
fn tree(dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        out: &mut std::collections::BTreeMap<String, String>,
    ) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A test output with what differs by nature taken out: pytest's durations, and the order in
/// which the script's trace (stderr) and its commands' output (stdout) interleave, which
/// depends on when each pipe was read. The lines, sorted, are compared.
fn normalised_test_output(text: &str) -> Vec<String> {
    let duration = regex::Regex::new(r" in [0-9]+\.[0-9]+s").unwrap();
    let mut lines: Vec<String> =
        text.lines().map(|l| duration.replace_all(l, " in <t>s").into_owned()).collect();
    lines.sort();
    lines
}

/// A run.json with its time taken out; `dataset` is where the dataset was imported from,
/// which the harness was given as an absolute path.
fn normalised_run_metadata(text: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["created_at"] = "<time>".into();
    let dataset = v["dataset"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    v["dataset"] = dataset.into();
    v
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn steer_eval_writes_what_the_harness_writes(pool: PgPool) {
    const NAME: &str = "harness-reference-test";
    let instances = fixtures();
    let Some(docker) = docker_with_fixture_images(&instances).await else { return };
    // imported from the fixtures' file, as the harness was given a copy of it (with eval scripts)
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/fixtures/dataset.jsonl");
    datasets::import(&pool, "fixtures", Some(source.to_str().unwrap()), &instances).await.unwrap();
    let fleet = start_named_fleet(&pool, docker, NAME).await;
    let user = tokens::create(&pool, "alice", Role::User).await.unwrap().token;
    worker_reported_images(&pool).await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let predictions = reference_dir().join("predictions.jsonl");
    let (code, text) = common::steer_cli(
        &fleet.coordinator.url,
        &user,
        &[
            "eval",
            "--dataset",
            "fixtures",
            "--predictions",
            predictions.to_str().unwrap(),
            "--run-id",
            "reference",
            "--image-namespace",
            "steerbench",
            "--summary-dir",
            out.to_str().unwrap(),
            "--report-dir",
            out.join("logs/run_evaluation").to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{text}");

    let expected = tree(&reference_dir().join("logs"));
    let written = tree(&out.join("logs"));
    // The same files, instance by instance (an empty patch gets no folder in either).
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "steer eval's tree differs from the harness's"
    );
    for (path, want) in &expected {
        let got = &written[path];
        let name = path.rsplit('/').next().unwrap();
        match name {
            // byte for byte: the report, the patch that was applied, the script that ran
            "report.json" | "patch.diff" | "eval.sh" => assert_eq!(got, want, "{path}"),
            "test_output.txt" => {
                let (got, want) = (normalised_test_output(got), normalised_test_output(want));
                let only_in = |a: &[String], b: &[String]| -> Vec<String> {
                    a.iter().filter(|l| !b.contains(l)).cloned().collect()
                };
                assert!(
                    got == want,
                    "{path}: lines only steer eval wrote: {:?}; only the harness: {:?}",
                    only_in(&got, &want),
                    only_in(&want, &got)
                );
            }
            "run.json" => assert_eq!(normalised_run_metadata(got), normalised_run_metadata(want), "{path}"),
            // steerbench's own account of the grading (timestamps, container ids and the
            // harness's Python logging differ by nature); it says what happened to the
            // patch in the harness's words
            "run_instance.log" => {
                for marker in [">>>>> Applied Patch", ">>>>> Patch Apply Failed"] {
                    assert_eq!(got.contains(marker), want.contains(marker), "{path}: {marker}\n{got}");
                }
            }
            other => panic!("the reference holds a file the comparison does not know: {other}"),
        }
    }
    // The summary byte for byte: counts, ids, failure reasons, leftovers, key order, format.
    let summary = "org__probe.reference.json";
    assert_eq!(
        std::fs::read_to_string(out.join(summary)).unwrap(),
        std::fs::read_to_string(reference_dir().join(summary)).unwrap(),
        "{summary}"
    );

    fleet.shutdown().await;
    assert_eq!(leftover_containers(&format!("steerbench.worker={NAME}")).await, 0);
}
