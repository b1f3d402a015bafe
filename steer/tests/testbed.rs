//! Fault tests on the multi-host test bed (`docker/testbed.sh`): Postgres, a coordinator, three
//! workers and the replay LLM server, each a container with its own address on a private
//! network, the workers' sandboxes on this machine's engine. Each test breaks something for real
//! (SIGKILL, a cut network cable, restarts, LLM storms, engine errors, SIGTERM), lets the sweep
//! finish, and prints and checks, from the database: runs expected / completed exactly once /
//! duplicated / lost. Every test also checks that no secret the bed was made with (model API
//! key, worker and admin tokens, registry password, database password) reached a log or a table.
//!
//! Needs the Docker engine and the fixture images (scripts/ensure-images); the coordinator and
//! worker images are built from this build's `steer` binary by the first test. Skipped when the
//! engine is missing unless CI is set. The beds run one at a time (2 cores).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn testbed_script() -> PathBuf {
    workspace().join("docker/testbed.sh")
}

/// One bed at a time; the first test to get here builds the images.
static BEDS: Mutex<bool> = Mutex::new(false);

/// Takes the bed lock and makes sure the images exist; None (skip) without Docker unless CI.
fn bed_lock() -> Option<MutexGuard<'static, bool>> {
    let mut built = BEDS.lock().unwrap_or_else(PoisonError::into_inner);
    let ci = std::env::var_os("CI").is_some();
    let engine = Command::new("docker").arg("info").output().map(|o| o.status.success()).unwrap_or(false);
    if !engine {
        assert!(!ci, "CI is set and no Docker engine answers `docker info`");
        eprintln!("skipping: no Docker engine");
        return None;
    }
    let fixture = "steerbench/sweb.eval.x86_64.steerbench_1776_minicalc-1:latest";
    if !run_ok(Command::new("docker").args(["image", "inspect", fixture])) {
        assert!(!ci, "CI is set and the fixture images are missing: run scripts/ensure-images");
        eprintln!("skipping: the fixture images are missing (scripts/ensure-images)");
        return None;
    }
    if !*built {
        remove_stale_beds();
        let out = Command::new(testbed_script())
            .arg("images")
            .env("STEER_BIN", env!("CARGO_BIN_EXE_steer"))
            .output()
            .expect("running docker/testbed.sh images");
        assert!(out.status.success(), "building the test bed's images failed:\n{}", text(&out.stderr));
        *built = true;
    }
    Some(built)
}

/// Removes the beds of test processes that are gone (killed before their beds' guards ran).
fn remove_stale_beds() {
    let labels = docker(&[
        "ps",
        "-a",
        "--filter",
        "label=steerbench.testbed",
        "--format",
        "{{.Label \"steerbench.testbed\"}}",
    ]);
    let mut stale: Vec<&str> = labels
        .lines()
        .filter(|bed| {
            let pid = bed.strip_prefix("sbt").and_then(|rest| rest.split('-').next());
            pid.and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect();
    stale.sort_unstable();
    stale.dedup();
    for bed in stale {
        eprintln!("removing the stale test bed {bed}");
        let _ = Command::new(testbed_script()).args(["down", bed]).output();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run_ok(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}{}", text(&out.stdout), text(&out.stderr));
    out
}

fn docker(args: &[&str]) -> String {
    text(&run(Command::new("docker").args(args)).stdout)
}

fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A running test bed; removed when dropped (unless STEER_TESTBED_KEEP is set).
struct Bed {
    name: String,
    env: HashMap<String, String>,
    _lock: MutexGuard<'static, bool>,
}

/// What a sweep ended with, per run.
#[derive(Debug, PartialEq)]
struct Accounting {
    expected: i64,
    once: i64,
    duplicated: i64,
    /// Ended in state `error` (attempts used up), with the cause on the run: accounted for.
    errored: i64,
    /// Neither done nor ended in error.
    lost: i64,
}

impl Bed {
    fn up(name: &str, options: &[&str]) -> Option<Bed> {
        let lock = bed_lock()?;
        // The process id keeps beds of test processes running at once apart.
        let name = format!("sbt{}-{name}", std::process::id());
        let out = run(Command::new(testbed_script()).arg("up").arg(&name).args(options));
        let env_file = text(&out.stdout).trim().to_string();
        let env = std::fs::read_to_string(&env_file)
            .unwrap_or_else(|e| panic!("reading {env_file}: {e}"))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Bed { name, env, _lock: lock })
    }

    fn var(&self, key: &str) -> &str {
        self.env.get(key).unwrap_or_else(|| panic!("the env file has no {key}"))
    }

    fn container(&self, role: &str) -> String {
        format!("{}-{role}", self.name)
    }

    fn psql(&self, sql: &str) -> String {
        let out = Command::new(testbed_script()).args(["psql", &self.name, sql]).output().expect("psql");
        assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    }

    /// `psql` without failing the test: for polling while Postgres restarts.
    fn try_psql(&self, sql: &str) -> Option<String> {
        let out = Command::new(testbed_script()).args(["psql", &self.name, sql]).output().ok()?;
        out.status.success().then(|| text(&out.stdout).trim().to_string())
    }

    fn count(&self, sql: &str) -> i64 {
        self.psql(sql).parse().unwrap_or_else(|e| panic!("{sql}: not a number: {e}"))
    }

    /// Submits a sweep with the host's `steer`, against the bed's coordinator; its id.
    fn submit(&self, name: &str, toml: &str) -> i64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        run(Command::new(env!("CARGO_BIN_EXE_steer"))
            .args(["sweep", "submit"])
            .arg(&path)
            .env("STEER_COORDINATOR", self.var("STEER_COORDINATOR"))
            .env("STEER_TOKEN", self.var("STEER_TOKEN")));
        self.count(&format!("SELECT max(id) FROM sweeps WHERE name = '{name}'"))
    }

    fn wait_finished(&self, sweep: i64, limit: Duration) {
        let sql =
            format!("SELECT count(*) FROM runs WHERE sweep_id = {sweep} AND state NOT IN ('done', 'error')");
        wait_until(limit, &format!("sweep {sweep} to finish"), || {
            self.try_psql(&sql).is_some_and(|n| n == "0")
        });
    }

    /// A run that worker `i` holds and has already recorded a step of (so it is mid-run).
    fn wait_run_held_by(&self, sweep: i64, worker: u32, limit: Duration) -> i64 {
        let sql = format!(
            "SELECT r.id FROM runs r JOIN workers w ON w.id = r.lease_owner
              WHERE r.sweep_id = {sweep} AND r.state = 'running' AND w.name = '{}'
                AND EXISTS (SELECT 1 FROM steps s WHERE s.run_id = r.id AND s.attempt = r.attempt)
              ORDER BY r.id LIMIT 1",
            self.container(&format!("worker-{worker}"))
        );
        let mut found = None;
        wait_until(limit, &format!("worker {worker} to be mid-run"), || {
            found = self.try_psql(&sql).filter(|s| !s.is_empty());
            found.is_some()
        });
        found.unwrap().parse().unwrap()
    }

    fn storm(&self, kind: &str, seconds: u32) {
        run(Command::new("curl").args([
            "-fsS",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-H",
            &format!("authorization: Bearer {}", self.var("SECRET_REPLAY_KEY")),
            "-d",
            &format!("{{\"kind\": \"{kind}\", \"seconds\": {seconds}}}"),
            &format!("{}/replay/storm", self.var("REPLAY_URL")),
        ]));
    }

    fn logs(&self, role: &str) -> String {
        let out = run(Command::new("docker").args(["logs", &self.container(role)]));
        text(&out.stdout) + &text(&out.stderr)
    }

    /// Per run, from the attempt ledger: done with exactly one completed attempt, with more
    /// than one, ended in error, or neither. Printed, as every fault test reports it.
    fn accounting(&self, sweep: i64) -> Accounting {
        let completed =
            "(SELECT count(*) FROM run_attempts a WHERE a.run_id = r.id AND a.ending = 'completed')";
        let a = Accounting {
            expected: self.count(&format!("SELECT count(*) FROM runs WHERE sweep_id = {sweep}")),
            once: self.count(&format!(
                "SELECT count(*) FROM runs r WHERE r.sweep_id = {sweep} AND r.state = 'done' AND {completed} = 1"
            )),
            duplicated: self
                .count(&format!("SELECT count(*) FROM runs r WHERE r.sweep_id = {sweep} AND {completed} > 1")),
            errored: self.count(&format!("SELECT count(*) FROM runs WHERE sweep_id = {sweep} AND state = 'error'")),
            lost: self.count(&format!(
                "SELECT count(*) FROM runs WHERE sweep_id = {sweep} AND state NOT IN ('done', 'error')"
            )),
        };
        println!(
            "[{}] sweep {sweep}: runs expected {} / completed exactly once {} / duplicated {} / lost {} (ended in error: {})",
            self.name, a.expected, a.once, a.duplicated, a.lost, a.errored
        );
        a
    }

    /// Every run done exactly once, and its final attempt's steps are the ones it counts.
    fn assert_exactly_once(&self, sweep: i64, runs: i64) {
        let a = self.accounting(sweep);
        assert_eq!(a, Accounting { expected: runs, once: runs, duplicated: 0, errored: 0, lost: 0 });
        let mixed = self.count(&format!(
            "SELECT count(*) FROM runs r WHERE r.sweep_id = {sweep}
               AND r.steps <> (SELECT count(*) FROM steps s WHERE s.run_id = r.id AND s.attempt = r.attempt)"
        ));
        assert_eq!(mixed, 0, "runs whose totals do not match their final attempt's steps");
    }

    fn outcomes(&self, sweep: i64) -> String {
        self.psql(&format!(
            "SELECT string_agg(o || '=' || n, ',' ORDER BY o) FROM
               (SELECT coalesce(outcome, state) o, count(*) n FROM runs WHERE sweep_id = {sweep} GROUP BY 1) t"
        ))
    }

    /// No secret the bed was made with is in what the API shows users of the sweep: its
    /// status, its runs, and each run's trajectory (attempt ledger, steps and model calls).
    fn assert_no_secret_in_api(&self, sweep: i64) {
        let get = |path: &str| {
            let out = run(Command::new("curl").args([
                "-fsS",
                "-H",
                &format!("authorization: Bearer {}", self.var("STEER_TOKEN")),
                &format!("{}/api/v1{path}", self.var("STEER_COORDINATOR")),
            ]));
            text(&out.stdout)
        };
        let mut haystack = get(&format!("/sweeps/{sweep}")) + &get(&format!("/sweeps/{sweep}/runs"));
        let runs = self.psql(&format!("SELECT string_agg(id::text, ' ') FROM runs WHERE sweep_id = {sweep}"));
        for run_id in runs.split_whitespace() {
            haystack += &get(&format!("/runs/{run_id}/trajectory"));
        }
        assert!(haystack.contains("[redacted]"), "the API shows no scrubbed error: is the echo storm on?");
        for key in ["SECRET_REPLAY_KEY", "SECRET_WORKER_TOKEN", "SECRET_REGISTRY_PASSWORD"] {
            assert!(!haystack.contains(self.var(key)), "{key} appears in what the API returns");
        }
    }

    /// No secret the bed was made with is in any container's log or in the database.
    fn assert_no_secret_leaked(&self) {
        let mut haystack = String::new();
        let names = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=steerbench.testbed={}", self.name),
            "--format",
            "{{.Names}}",
        ]);
        for name in names.lines() {
            let out = run(Command::new("docker").args(["logs", name]));
            haystack += &text(&out.stdout);
            haystack += &text(&out.stderr);
        }
        let dump = run(Command::new("docker").args([
            "exec",
            "-u",
            "postgres",
            &self.container("postgres"),
            "pg_dump",
            "-U",
            "steer",
            "--data-only",
            "steerbench",
        ]));
        haystack += &text(&dump.stdout);
        assert!(haystack.len() > 10_000, "logs and dump are suspiciously small: {} bytes", haystack.len());
        for key in [
            "SECRET_REPLAY_KEY",
            "SECRET_WORKER_TOKEN",
            "SECRET_ADMIN_TOKEN",
            "SECRET_REGISTRY_PASSWORD",
            "SECRET_PG_PASSWORD",
        ] {
            let secret = self.var(key);
            assert!(secret.len() >= 16, "{key} is too short to search for");
            assert!(!haystack.contains(secret), "{key} appears in a log or in the database");
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::env::var_os("STEER_TESTBED_KEEP").is_some() {
            eprintln!("keeping test bed {} (STEER_TESTBED_KEEP)", self.name);
            return;
        }
        let _ = Command::new(testbed_script()).args(["down", &self.name]).output();
    }
}

fn fixtures_dataset() -> String {
    workspace().join("docker/fixtures/dataset.jsonl").display().to_string()
}

/// The replay agent on the 8 fixture tasks; it solves every one.
fn agent_sweep(name: &str, max_attempts: u32, extra: &str) -> String {
    format!(
        r#"name = "{name}"
max_attempts = {max_attempts}
{extra}
[dataset]
name = "fixtures"
path = "{dataset}"

[executor]
kind = "agent"
preset = "paper"

[[agents]]
name = "replay"
base_url = "http://replay:18080/v1"
model = "replay"
api_key_env = "REPLAY_API_KEY"
price = {{ input_per_mtok = 0.15, output_per_mtok = 1.50 }}

[[critics]]
name = "none"
kind = "none"
"#,
        dataset = fixtures_dataset()
    )
}

const FIXTURE_RUNS: i64 = 8;

/// The ledger row of a run's attempt: (worker name, ending).
fn attempt_of(bed: &Bed, run: i64, attempt: i64) -> String {
    bed.psql(&format!(
        "SELECT coalesce(w.name, '?') || ' ' || coalesce(a.ending, 'held') FROM run_attempts a
           LEFT JOIN workers w ON w.id = a.worker_id WHERE a.run_id = {run} AND a.attempt = {attempt}"
    ))
}

#[test]
fn worker_killed_mid_run_its_runs_finish_elsewhere_and_its_sandboxes_are_reaped() {
    let Some(bed) = Bed::up("kill", &["--lease-ttl", "6s", "--llm-delay-ms", "1500"]) else { return };
    let sweep = bed.submit("kill", &agent_sweep("kill", 5, ""));
    let run = bed.wait_run_held_by(sweep, 1, Duration::from_secs(120));
    let worker = bed.container("worker-1");
    docker(&["kill", "--signal", "KILL", &worker]);
    let label = format!("label=steerbench.worker={worker}");
    let orphans = docker(&["ps", "-aq", "--filter", &label]);
    assert!(!orphans.trim().is_empty(), "the killed worker's sandbox should still be there");

    bed.wait_finished(sweep, Duration::from_secs(300));
    bed.assert_exactly_once(sweep, FIXTURE_RUNS);
    assert_eq!(bed.outcomes(sweep), format!("resolved={FIXTURE_RUNS}"));
    assert_eq!(attempt_of(&bed, run, 1), format!("{worker} expired"));
    assert!(bed.count(&format!("SELECT attempt FROM runs WHERE id = {run}")) >= 2);

    // Back again, the worker removes what its earlier incarnation left.
    docker(&["start", &worker]);
    wait_until(Duration::from_secs(60), "the restarted worker to reap its old sandboxes", || {
        docker(&["ps", "-aq", "--filter", &label]).trim().is_empty()
    });
    bed.assert_no_secret_leaked();
}

#[test]
fn worker_cut_off_from_the_network_is_fenced_and_its_run_is_redone_elsewhere() {
    let Some(bed) =
        Bed::up("cut", &["--lease-ttl", "6s", "--llm-delay-ms", "1500", "--llm-max-backoff", "2s"])
    else {
        return;
    };
    let sweep = bed.submit("cut", &agent_sweep("cut", 5, ""));
    let run = bed.wait_run_held_by(sweep, 2, Duration::from_secs(120));
    let worker = bed.container("worker-2");
    let network = bed.var("TESTBED_NETWORK").to_string();
    docker(&["network", "disconnect", &network, &worker]);
    // The lease expires and another worker takes the run.
    wait_until(Duration::from_secs(60), "the cut-off worker's run to be claimed again", || {
        bed.count(&format!("SELECT attempt FROM runs WHERE id = {run}")) >= 2
    });
    docker(&["network", "connect", &network, &worker]);
    // Back on the network, whatever the worker reports for its old lease is refused.
    wait_until(Duration::from_secs(90), "the reconnected worker to be told its lease is lost", || {
        bed.logs("worker-2").contains("lease lost")
    });
    bed.wait_finished(sweep, Duration::from_secs(300));
    bed.assert_exactly_once(sweep, FIXTURE_RUNS);
    assert_eq!(bed.outcomes(sweep), format!("resolved={FIXTURE_RUNS}"));
    assert_eq!(attempt_of(&bed, run, 1), format!("{worker} expired"));
    bed.assert_no_secret_leaked();
}

#[test]
fn coordinator_restarted_mid_sweep_workers_carry_on() {
    let Some(bed) = Bed::up("coord", &["--lease-ttl", "10s", "--llm-delay-ms", "1000"]) else { return };
    let sweep = bed.submit("coord", &agent_sweep("coord", 5, ""));
    bed.wait_run_held_by(sweep, 1, Duration::from_secs(120));
    docker(&["restart", "--time", "10", &bed.container("coordinator")]);
    bed.wait_finished(sweep, Duration::from_secs(300));
    bed.assert_exactly_once(sweep, FIXTURE_RUNS);
    assert_eq!(bed.outcomes(sweep), format!("resolved={FIXTURE_RUNS}"));
    // The workers rode it out: none exited.
    for i in 1..=3 {
        let state = docker(&[
            "inspect",
            "--format",
            "{{.State.Running}} {{.RestartCount}}",
            &bed.container(&format!("worker-{i}")),
        ]);
        assert_eq!(state.trim(), "true 0", "worker {i}");
    }
    bed.assert_no_secret_leaked();
}

#[test]
fn postgres_restarted_mid_sweep_the_coordinator_reconnects() {
    let Some(bed) = Bed::up("pg", &["--lease-ttl", "10s", "--llm-delay-ms", "1000"]) else { return };
    let sweep = bed.submit("pg", &agent_sweep("pg", 5, ""));
    bed.wait_run_held_by(sweep, 1, Duration::from_secs(120));
    docker(&["restart", "--time", "10", &bed.container("postgres")]);
    bed.wait_finished(sweep, Duration::from_secs(300));
    bed.assert_exactly_once(sweep, FIXTURE_RUNS);
    assert_eq!(bed.outcomes(sweep), format!("resolved={FIXTURE_RUNS}"));
    let coordinator = docker(&[
        "inspect",
        "--format",
        "{{.State.Running}} {{.RestartCount}}",
        &bed.container("coordinator"),
    ]);
    assert_eq!(coordinator.trim(), "true 0", "the coordinator kept running through the restart");
    bed.assert_no_secret_leaked();
}

#[test]
fn llm_storms_slow_runs_then_requeue_them_as_infra_errors_never_agent_failures() {
    let options = [
        "--lease-ttl",
        "10s",
        "--llm-delay-ms",
        "300",
        "--llm-attempts",
        "3",
        "--llm-timeout",
        "4s",
        "--llm-max-backoff",
        "1s",
    ];
    let Some(bed) = Bed::up("storm", &options) else { return };
    let sweep = bed.submit("storm", &agent_sweep("storm", 30, ""));
    bed.wait_run_held_by(sweep, 1, Duration::from_secs(120));
    // `500-echo` repeats the API key in its error message, as some endpoints do.
    for kind in ["429", "500-echo", "hang"] {
        bed.storm(kind, 12);
        std::thread::sleep(Duration::from_secs(12));
    }
    bed.wait_finished(sweep, Duration::from_secs(400));
    bed.assert_exactly_once(sweep, FIXTURE_RUNS);
    // Every run still resolved: the storms cost attempts, never an agent failure.
    assert_eq!(bed.outcomes(sweep), format!("resolved={FIXTURE_RUNS}"));
    let failed = bed.count(&format!(
        "SELECT count(*) FROM run_attempts a JOIN runs r ON r.id = a.run_id
          WHERE r.sweep_id = {sweep} AND a.ending = 'failed'"
    ));
    assert!(failed >= 1, "some attempts should have ended as infrastructure failures");
    // Those failures opened the endpoint's breaker, which rested it instead of letting every
    // worker burn attempts on it (59 attempts failed here before there was one), and a call
    // that succeeded after the storms closed it.
    let outages = bed.count(&format!(
        "SELECT count(*) FROM run_attempts a JOIN runs r ON r.id = a.run_id
          WHERE r.sweep_id = {sweep} AND a.ending = 'failed' AND a.reason LIKE 'model endpoint unavailable: %'"
    ));
    assert_eq!(outages, failed, "every failed attempt was the endpoint's outage, reported as such");
    assert!(failed <= 20, "the breaker should bound the attempts spent on a storm; {failed} failed");
    let closed = bed.count(
        "SELECT count(*) FROM endpoints WHERE base_url = 'http://replay:18080/v1'
            AND outage_failures = 0 AND cooldown_until IS NULL",
    );
    assert_eq!(closed, 1, "the breaker closed again once calls succeeded");
    for status in [429, 500] {
        let seen = bed.count(&format!(
            "SELECT count(*) FROM llm_calls c JOIN runs r ON r.id = c.run_id
              WHERE r.sweep_id = {sweep} AND c.http_status = {status}"
        ));
        assert!(seen >= 1, "no model call recorded a {status}");
    }
    // Calls that got through after retries: the runs slowed down rather than failed.
    let retried = bed.count(&format!(
        "SELECT count(*) FROM llm_calls c JOIN runs r ON r.id = c.run_id
          WHERE r.sweep_id = {sweep} AND c.status = 'ok' AND c.retries > 0"
    ));
    println!("[{}] attempts ended by infrastructure failures: {failed}; calls that succeeded after retries: {retried}", bed.name);
    // The echoed key reached the workers, which scrubbed it from what they stored and logged.
    let scrubbed = bed.count(&format!(
        "SELECT count(*) FROM llm_calls c JOIN runs r ON r.id = c.run_id
          WHERE r.sweep_id = {sweep} AND c.error LIKE '%you sent Authorization: Bearer [redacted]%'"
    ));
    assert!(scrubbed >= 1, "no model call recorded the echoing endpoint's error, scrubbed");
    bed.assert_no_secret_in_api(sweep);
    bed.assert_no_secret_leaked();
}

#[test]
fn engine_errors_end_runs_as_infrastructure_errors() {
    // No registry is reachable here: one pull attempt per run attempt, not five with backoff.
    let Some(bed) = Bed::up("engine", &["--lease-ttl", "10s", "--pull-attempts", "1"]) else { return };
    // A sandbox too small for the test run (OOM-killed while grading), and an image no
    // registry has.
    // In so small a sandbox the agent's own test commands are killed too and wait out their
    // command limit; a short one keeps the test short.
    let oom =
        agent_sweep("oom", 2, "[select]\nids = [\"steerbench__minicalc-1\"]\n[sandbox]\nmemory_mb = 16\n")
            .replace("preset = \"paper\"", "preset = \"paper\"\ncommand_timeout_s = 10");
    let missing = agent_sweep(
        "missing",
        2,
        "[select]\nids = [\"steerbench__minicalc-2\"]\n[sandbox]\n\
         image_overrides = { \"steerbench__minicalc-2\" = \"steerbench/no-such-image:never\" }\n",
    );
    let oom = bed.submit("oom", &oom);
    let missing = bed.submit("missing", &missing);
    bed.wait_finished(oom, Duration::from_secs(420));
    bed.wait_finished(missing, Duration::from_secs(420));
    for (sweep, expected) in [(oom, "memory limit"), (missing, "no-such-image")] {
        let row = bed.psql(&format!(
            "SELECT state || ' | ' || coalesce(last_error, '') FROM runs WHERE sweep_id = {sweep}"
        ));
        println!("[{}] sweep {sweep}: {row}", bed.name);
        assert!(row.starts_with("error | "), "an infrastructure error, not an outcome: {row}");
        assert!(row.contains(expected), "the error names the cause ({expected}): {row}");
        let failed = bed.count(&format!(
            "SELECT count(*) FROM run_attempts a JOIN runs r ON r.id = a.run_id
              WHERE r.sweep_id = {sweep} AND a.ending = 'failed'"
        ));
        assert_eq!(failed, 2, "both attempts failed on infrastructure");
        let a = bed.accounting(sweep);
        assert_eq!(a, Accounting { expected: 1, once: 0, duplicated: 0, errored: 1, lost: 0 });
    }
    bed.assert_no_secret_leaked();
}

#[test]
fn sigterm_drains_a_worker_which_hands_back_its_runs_and_exits() {
    let options = ["--lease-ttl", "30s", "--llm-delay-ms", "1500", "--drain-timeout", "3s"];
    let Some(bed) = Bed::up("drain", &options) else { return };
    let sweep = bed.submit("drain", &agent_sweep("drain", 5, ""));
    let run = bed.wait_run_held_by(sweep, 3, Duration::from_secs(120));
    let worker = bed.container("worker-3");
    let started = Instant::now();
    docker(&["stop", "--time", "60", &worker]);
    let took = started.elapsed();
    let exit = docker(&["inspect", "--format", "{{.State.ExitCode}}", &worker]);
    assert_eq!(exit.trim(), "0", "the drained worker exits cleanly");
    // Well within the 30 s lease: handed back, not left to expire.
    assert!(took < Duration::from_secs(20), "drain took {took:?}");
    let ending = attempt_of(&bed, run, bed.count(&format!("SELECT min(attempt) FROM run_attempts WHERE run_id = {run} AND worker_id = (SELECT id FROM workers WHERE name = '{worker}' ORDER BY registered_at DESC LIMIT 1)")));
    assert!(ending == format!("{worker} released") || ending == format!("{worker} completed"), "{ending}");
    bed.wait_finished(sweep, Duration::from_secs(300));
    bed.assert_exactly_once(sweep, FIXTURE_RUNS);
    assert_eq!(bed.outcomes(sweep), format!("resolved={FIXTURE_RUNS}"));
    bed.assert_no_secret_leaked();
}

#[test]
fn sandboxes_reach_neither_the_coordinator_nor_postgres() {
    // The replay server reads its scenarios from this copy of examples/replay; the probe
    // scenario is added once the addresses it probes are known.
    let scenarios = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(workspace().join("examples/replay")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, scenarios.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let dir = scenarios.path().display().to_string();
    let Some(bed) = Bed::up("probe", &["--workers", "1", "--scenarios", &dir]) else { return };
    let ip = |role: &str| {
        docker(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &bed.container(role),
        ])
        .trim()
        .to_string()
    };
    let targets = vec![(ip("coordinator"), 8420), (ip("postgres"), 5432)];
    let probe = format!(
        "import socket\nfor host, port in {targets:?}:\n    try:\n        socket.create_connection((host, port), timeout=3).close()\n        print('PROBE', host, 'reachable')\n    except OSError as e:\n        print('PROBE', host, 'unreachable', type(e).__name__)\n"
    );
    // The control: the same probe from a container on the bed's network does connect.
    let control = docker(&[
        "run",
        "--rm",
        "--network",
        bed.var("TESTBED_NETWORK"),
        "steerbench/fixture-base:bookworm",
        "python3",
        "-c",
        &probe,
    ]);
    assert_eq!(control.matches("reachable").count() - control.matches("unreachable").count(), 2, "{control}");

    let fence = "```";
    let scenario = format!(
        "description = \"probes the coordinator and Postgres from the sandbox\"\n\
         [[turns]]\ncontent = '''THOUGHT: probe\n\n{fence}bash\npython3 - <<'PY'\n{probe}PY\n{fence}'''\n\
         [[turns]]\ncontent = '''THOUGHT: done\n\n{fence}bash\necho COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT\n{fence}'''\n"
    );
    std::fs::write(scenarios.path().join("probe.toml"), scenario).unwrap();
    docker(&["restart", &bed.container("replay")]);
    let models = format!("{}/v1/models", bed.var("REPLAY_URL"));
    let auth = format!("authorization: Bearer {}", bed.var("SECRET_REPLAY_KEY"));
    wait_until(Duration::from_secs(30), "the replay server to serve the probe", || {
        Command::new("curl")
            .args(["-fsS", "-H", &auth, &models])
            .output()
            .is_ok_and(|o| o.status.success() && text(&o.stdout).contains("replay/probe"))
    });

    // From inside a sandbox the worker starts, with and without the sweep asking for a network.
    for network in [false, true] {
        let name = format!("probe-{network}");
        let select =
            format!("[select]\nids = [\"steerbench__minicalc-1\"]\n[sandbox]\nnetwork = {network}\n");
        let toml = agent_sweep(&name, 1, &select).replace("model = \"replay\"", "model = \"replay/probe\"");
        let sweep = bed.submit(&name, &toml);
        bed.wait_finished(sweep, Duration::from_secs(120));
        let observation = bed.psql(&format!(
            "SELECT string_agg(s.observation, '') FROM steps s JOIN runs r ON r.id = s.run_id WHERE r.sweep_id = {sweep}"
        ));
        println!("[{}] network = {network}: {observation}", bed.name);
        assert_eq!(observation.matches("PROBE").count(), 2, "both probes ran: {observation}");
        assert_eq!(observation.matches("unreachable").count(), 2, "neither is reachable: {observation}");
    }
    bed.assert_no_secret_leaked();
}
