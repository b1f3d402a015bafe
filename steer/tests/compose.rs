//! The compose stack of `docker/compose.yaml`, for real: Postgres, the coordinator (this build's
//! `steer` binary), three workers and Prometheus, under a project name of its own. Passes when
//! Prometheus reports every scrape target up, answers queries on the coordinator's and the
//! workers' metrics and accepts every Prometheus query of the dashboards, the workers reach the
//! Docker engine through the socket's group, and the read-only database role of Grafana's data
//! source reads but cannot write.
//!
//! Needs Docker, `docker compose` or `docker-compose`, and the images of
//! `docker/build-base.sh` (`scripts/ensure-images` builds them); the coordinator and worker
//! images are built here from the test's `steer` binary, tagged `compose-test`, and skipped
//! when they already hold it. Without any of these the test skips, unless `CI` is set.
//! The stack is removed (volumes included) by a guard, and stacks that earlier runs of this
//! test left behind are removed first.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;
use tokio::time::{sleep, Instant};

/// Every project this test starts is named `<PREFIX><pid>`.
const PROJECT_PREFIX: &str = "steer-compose-test-";
const IMAGE_TAG: &str = "compose-test";
const BASE_IMAGES: [&str; 3] =
    ["steerbench/debian-base:bookworm", "steerbench/postgres:15", "steerbench/prometheus:2.42"];
/// Longest wait for any one stage (a service healthy, the targets up, a metric's value).
const STAGE_DEADLINE: Duration = Duration::from_secs(120);
/// Pause between two polls of a condition that has no event to wait on.
const POLL: Duration = Duration::from_millis(500);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// Says why the test skips, or fails when CI is set.
fn skip(reason: &str) {
    assert!(!ci(), "CI is set and {reason}");
    eprintln!("skipping: {reason}");
}

async fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().await.is_ok_and(|o| o.status.success())
}

/// `docker compose` (v2) if the plugin is there, else `docker-compose` (v1).
async fn compose_program() -> Option<Vec<String>> {
    if succeeds("docker", &["compose", "version"]).await {
        Some(vec!["docker".into(), "compose".into()])
    } else if succeeds("docker-compose", &["version"]).await {
        Some(vec!["docker-compose".into()])
    } else {
        None
    }
}

/// One compose project, removed with its volumes when dropped.
struct Stack {
    program: Vec<String>,
    project: String,
    env: Vec<(String, String)>,
    /// An empty file given as `--env-file`, so that a developer's docker/.env does not reach
    /// the test's stack (docker-compose 1.x wants a regular file, not /dev/null).
    env_file: tempfile::NamedTempFile,
}

impl Stack {
    fn new(program: &[String], project: String, env: Vec<(String, String)>) -> Stack {
        let env_file = tempfile::NamedTempFile::new().expect("an empty env file");
        Stack { program: program.to_vec(), project, env, env_file }
    }

    fn std_command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.program[0]);
        cmd.args(&self.program[1..]).arg("--env-file").arg(self.env_file.path()).args(args);
        cmd.env("COMPOSE_FILE", repo().join("docker/compose.yaml"))
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env_remove("COMPOSE_PROFILES")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::from(self.std_command(args));
        cmd.kill_on_drop(true);
        cmd
    }

    /// Runs compose with `args`; its stdout, or a panic with both streams.
    async fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().await.expect("compose runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "compose {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// The host address (`127.0.0.1:PORT`) that `service`'s `port` is published on.
    async fn published(&self, service: &str, port: &str) -> String {
        self.run(&["port", service, port]).await.trim().to_string()
    }

    async fn logs(&self) -> String {
        let out = self.command(&["logs", "--no-color", "--tail", "40"]).output().await.unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Removes the stack: containers, network, volumes.
    fn down(&self) {
        let started = std::time::Instant::now();
        let status = self
            .std_command(&["down", "--volumes", "--remove-orphans", "--timeout", "5"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        eprintln!("removed the stack {} in {:?} ({status:?})", self.project, started.elapsed());
    }
}

impl Drop for Stack {
    /// Removes the stack even when the test fails half-way.
    fn drop(&mut self) {
        self.down();
    }
}

/// Stacks left by earlier runs of this test whose process is gone (a killed test skips its
/// guard). A stack whose test still runs, e.g. in another checkout, is left alone.
async fn sweep_leftovers(program: &[String]) {
    let mut projects = BTreeSet::new();
    for kind in [&["ps", "-a"][..], &["network", "ls"], &["volume", "ls"]] {
        let out = Command::new("docker")
            .args(kind)
            .args(["--filter", "label=com.docker.compose.project"])
            .args(["--format", "{{.Label \"com.docker.compose.project\"}}"])
            .output()
            .await
            .expect("docker runs");
        for project in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(pid) = project.strip_prefix(PROJECT_PREFIX) {
                if !Path::new("/proc").join(pid).exists() {
                    projects.insert(project.to_string());
                }
            }
        }
    }
    for project in projects {
        eprintln!("removing the stack {project} an earlier run left");
        // Dropping the guard removes the stack.
        drop(Stack::new(program, project, vec![]));
    }
}

fn secret() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Polls `check` until it returns Some, for at most STAGE_DEADLINE; `what` names the wait.
async fn wait_for<T, F, Fut>(stack: &Stack, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + STAGE_DEADLINE;
    let mut last = String::from("nothing yet");
    loop {
        match check().await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {STAGE_DEADLINE:?} waiting for {what} (last: {last})\n{}",
                stack.logs().await
            );
        }
        sleep(POLL).await;
    }
}

async fn get_json(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let resp = request.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

/// The answer of a Prometheus instant query (`data`), or its error.
async fn query_data(http: &reqwest::Client, prometheus: &str, promql: &str) -> Result<Value, String> {
    let request = http.get(format!("http://{prometheus}/api/v1/query")).query(&[("query", promql)]);
    let body = get_json(request).await?;
    match body["status"].as_str() {
        Some("success") => Ok(body["data"].clone()),
        _ => Err(format!("`{promql}`: {body}")),
    }
}

/// The value of every series a Prometheus instant query returns, by the label `by`.
async fn query(
    http: &reqwest::Client,
    prometheus: &str,
    promql: &str,
    by: &str,
) -> Result<Vec<(String, f64)>, String> {
    let data = query_data(http, prometheus, promql).await?;
    let result = data["result"].as_array().ok_or_else(|| format!("no result: {data}"))?;
    Ok(result
        .iter()
        .map(|s| {
            let label = s["metric"][by].as_str().unwrap_or_default().to_string();
            (label, s["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN))
        })
        .collect())
}

/// The compose program, once Docker, compose and the base images are there.
async fn preconditions() -> Result<Vec<String>, String> {
    if !succeeds("docker", &["info"]).await {
        return Err("no Docker engine is reachable".into());
    }
    let program =
        compose_program().await.ok_or("neither `docker compose` nor `docker-compose` is installed")?;
    for image in BASE_IMAGES {
        if !succeeds("docker", &["image", "inspect", image]).await {
            return Err(format!("{image} is missing (docker/build-base.sh builds it)"));
        }
    }
    Ok(program)
}

#[tokio::test]
async fn compose_stack_is_scraped_by_prometheus() {
    let program = match preconditions().await {
        Ok(p) => p,
        Err(reason) => return skip(&reason),
    };
    sweep_leftovers(&program).await;

    let started = Instant::now();
    let build = Command::new(repo().join("docker/build-images.sh"))
        .args(["--tag", IMAGE_TAG])
        .env("STEER_BIN", env!("CARGO_BIN_EXE_steer"))
        .output()
        .await
        .expect("build-images.sh runs");
    assert!(build.status.success(), "build-images.sh failed:\n{}", String::from_utf8_lossy(&build.stderr));
    eprintln!("coordinator and worker images ready in {:?}", started.elapsed());

    let socket_gid = std::os::unix::fs::MetadataExt::gid(&std::fs::metadata("/var/run/docker.sock").unwrap());
    let grafana_password = secret();
    let project = format!("{PROJECT_PREFIX}{}", std::process::id());
    let mut stack = Stack::new(
        &program,
        project,
        vec![
            ("STEER_IMAGE_TAG".into(), IMAGE_TAG.into()),
            ("STEER_PG_PASSWORD".into(), secret()),
            ("STEER_GRAFANA_DB_PASSWORD".into(), grafana_password.clone()),
            ("DOCKER_GID".into(), socket_gid.to_string()),
            // Any free ports, so a stack or a `steer up` already on 8420/9090 does not matter.
            ("STEER_PORT".into(), "0".into()),
            ("STEER_PROMETHEUS_PORT".into(), "0".into()),
            ("STEER_WORKER_TOKEN".into(), String::new()),
        ],
    );

    // Postgres and the coordinator (compose waits for Postgres to be healthy), then a worker
    // token, then everything else with it, as docker/README.md does it.
    let started = Instant::now();
    stack.run(&["up", "-d", "postgres", "coordinator"]).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let coordinator = stack.published("coordinator", "8420").await;
    wait_for(&stack, "the coordinator's /healthz", || async {
        let ok = http
            .get(format!("http://{coordinator}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        Ok(ok.then_some(()))
    })
    .await;
    let token = stack
        .run(&[
            "run",
            "--rm",
            "-T",
            "coordinator",
            "token",
            "create",
            "--role",
            "worker",
            "--name",
            "compose-test",
        ])
        .await;
    let token = token.trim().to_string();
    assert!(!token.is_empty() && !token.contains(char::is_whitespace), "not a token: {token:?}");
    stack.env.retain(|(k, _)| k != "STEER_WORKER_TOKEN");
    stack.env.push(("STEER_WORKER_TOKEN".into(), token));
    stack.run(&["up", "-d"]).await;
    eprintln!("stack up in {:?}", started.elapsed());

    // Every scrape target up: the coordinator, three workers, Prometheus itself.
    let prometheus = stack.published("prometheus", "9090").await;
    let started = Instant::now();
    let targets = wait_for(&stack, "every Prometheus target to be up", || async {
        let body = get_json(http.get(format!("http://{prometheus}/api/v1/targets"))).await?;
        let active = body["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
        let health: Vec<(String, String)> = active
            .iter()
            .map(|t| {
                let name = format!(
                    "{} {}",
                    t["labels"]["job"].as_str().unwrap_or("?"),
                    t["labels"]["instance"].as_str().unwrap_or("?")
                );
                let health = format!(
                    "{} {}",
                    t["health"].as_str().unwrap_or("?"),
                    t["lastError"].as_str().unwrap_or("")
                );
                (name, health)
            })
            .collect();
        let up = active.len() == 5 && active.iter().all(|t| t["health"] == "up");
        if up {
            Ok(Some(health))
        } else {
            Err(format!("{health:?}"))
        }
    })
    .await;
    eprintln!("targets up in {:?}: {targets:?}", started.elapsed());

    // A coordinator metric read from Postgres at scrape time: the three workers, alive.
    wait_for(&stack, "steer_workers_alive = 3 in Prometheus", || async {
        let series = query(&http, &prometheus, "steer_workers_alive", "job").await?;
        match series.as_slice() {
            [(job, n)] if job == "steer-coordinator" && *n == 3.0 => Ok(Some(())),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // A coordinator counter, and the workers' own metrics, one series per worker.
    let responses =
        query(&http, &prometheus, "sum by (job) (steer_http_responses_total)", "job").await.unwrap();
    assert!(
        matches!(responses.as_slice(), [(job, n)] if job == "steer-coordinator" && *n > 0.0),
        "{responses:?}"
    );
    let active = query(&http, &prometheus, "steer_worker_runs_active", "instance").await.unwrap();
    let instances: BTreeSet<&str> = active.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(instances, BTreeSet::from(["worker-1:9100", "worker-2:9100", "worker-3:9100"]), "{active:?}");

    // Every Prometheus query of the dashboards is one this Prometheus accepts.
    let mut queries = 0;
    for entry in std::fs::read_dir(repo().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            if panel["datasource"]["type"] != "prometheus" {
                continue;
            }
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                if let Err(e) = query_data(&http, &prometheus, expr).await {
                    panic!("{}: Prometheus refuses a panel's query: {e}", path.display());
                }
                queries += 1;
            }
        }
    }
    assert!(queries >= 20, "only {queries} dashboard queries found");

    // The socket's group reached the workers: they use the engine, not placeholder runs only.
    let logs = stack.run(&["logs", "--no-color", "worker-1", "worker-2", "worker-3"]).await;
    assert!(!logs.contains("no Docker engine"), "a worker cannot use the Docker socket:\n{logs}");

    // Grafana's database role: created by the one-shot service, reads, cannot write.
    stack.run(&["run", "--rm", "-T", "grafana-db-role"]).await;
    let reader = format!("postgresql://grafana_reader:{grafana_password}@127.0.0.1:5432/steerbench");
    // Each statement its own transaction (psql -c ... -c ...), in one session.
    let psql = |statements: &[&str]| {
        let mut args = vec!["exec", "-T", "postgres", "psql", reader.as_str(), "--no-psqlrc", "-At"];
        for sql in statements {
            args.extend(["-c", sql]);
        }
        let mut cmd = stack.command(&args);
        async move { cmd.output().await.expect("compose runs") }
    };
    let read = psql(&["SELECT count(*) FROM workers"]).await;
    assert!(read.status.success(), "grafana_reader cannot read: {}", String::from_utf8_lossy(&read.stderr));
    assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "3");
    let write = psql(&["DELETE FROM workers"]).await;
    let err = String::from_utf8_lossy(&write.stderr);
    assert!(!write.status.success() && err.contains("read-only transaction"), "{err}");
    let forced = psql(&["SET default_transaction_read_only = off", "DELETE FROM workers"]).await;
    let err = String::from_utf8_lossy(&forced.stderr);
    assert!(!forced.status.success() && err.contains("permission denied"), "{err}");
    // The guard removes the stack.
}
