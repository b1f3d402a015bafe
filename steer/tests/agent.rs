//! The agent loop end to end: the real coordinator, workers, Docker engine and fixture images,
//! with the bundled replay agent (a real OpenAI-compatible HTTP server answering from scripted
//! scenarios, `examples/replay/`) standing in for a paid model endpoint.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use orchestrator::store::{datasets, runs, sweeps};
use orchestrator::testkit;
use protocol::{Outcome, RunInfo, RunState, SweepState};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::{PgPool, Row};
use steer::replay::{self, Scenarios, ServeOptions};
use worker::llm::RetryPolicy;
use worker::sandbox::Docker;

use common::{docker_with_fixture_images, fixtures, leftover_containers};

/// The replay server insists on this key, so a run that resolves proves the key was sent; no
/// table and no log line may contain it.
const KEY: &str = "sk-replay-test-KEEP-OUT-OF-LOGS-8d1c4e";
const KEY_ENV: &str = "TEST_REPLAY_API_KEY";

/// Everything every test in this binary logs, at every level.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = LogSink(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter("trace,h2=info,hyper=info,hyper_util=info,sqlx=info")
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .try_init();
        buf
    })
    .clone()
}

/// Model calls are retried quickly here (the defaults wait seconds to minutes).
fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        max_retry_after: Duration::from_millis(1500),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
        max_reply_bytes: worker::llm::DEFAULT_MAX_REPLY_BYTES,
    }
}

/// An agent worker's executors, allowed to read the replay key (which it sets).
fn agent_dispatcher(docker: Docker, name: &str) -> worker::Dispatcher {
    set_key();
    let allow = protocol::keys::KeyAllowList::new([KEY_ENV]).unwrap();
    let keys = worker::llm::Keyring::capture(allow, std::env::vars());
    worker::Dispatcher::new(Some(worker::evaluate::EvaluateExecutor::new(docker, name)))
        .with_llm_retry(fast_retries())
        .with_keyring(Arc::new(keys))
}

async fn replay_server() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/replay");
    let scenarios = Scenarios::load_dir(&dir).expect("bundled scenarios load");
    let (url, _task) = replay::spawn_local(
        scenarios,
        ServeOptions { required_api_key: Some(KEY.into()), ..Default::default() },
    )
    .await
    .expect("replay server starts");
    url
}

/// Sets the key in this process's environment, where the in-process workers read it.
fn set_key() {
    // Every test sets the same value: concurrent tests race on nothing.
    std::env::set_var(KEY_ENV, KEY);
}

async fn wait_until_done(pool: &PgPool, sweep_id: i64, limit: Duration) -> protocol::SweepStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let status = sweeps::status(pool, sweep_id).await.unwrap();
        if status.state != SweepState::Running {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the sweep did not end in {limit:?}: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn all_runs(pool: &PgPool, sweep_id: i64) -> Vec<RunInfo> {
    runs::list(pool, sweep_id, &Default::default()).await.unwrap()
}

/// Sum of the model calls of a run's attempt: (cost, input tokens, output tokens, calls).
async fn call_totals(pool: &PgPool, run_id: i64, attempt: i32) -> (Decimal, i64, i64, i64) {
    let row = sqlx::query(
        "SELECT COALESCE(sum(cost_usd), 0) AS cost, COALESCE(sum(input_tokens), 0)::bigint AS input,
                COALESCE(sum(output_tokens), 0)::bigint AS output, count(*) AS n
         FROM llm_calls WHERE run_id = $1 AND attempt = $2",
    )
    .bind(run_id)
    .bind(attempt)
    .fetch_one(pool)
    .await
    .unwrap();
    (row.get("cost"), row.get("input"), row.get("output"), row.get("n"))
}

/// What an agent test starts with: the fixture dataset imported, the replay server, a
/// coordinator with `lease_ttl`; None (skip) without Docker and the fixture images.
struct Bed {
    docker: Docker,
    url: String,
    coordinator: common::Coordinator,
}

async fn bed(pool: &PgPool, lease_ttl: Duration) -> Option<Bed> {
    capture_logs();
    let instances = fixtures();
    let docker = docker_with_fixture_images(&instances).await?;
    set_key();
    datasets::import(pool, "fixtures", None, &instances).await.unwrap();
    let url = replay_server().await;
    let coordinator = common::start_coordinator(pool, lease_ttl).await;
    Some(Bed { docker, url, coordinator })
}

impl Bed {
    async fn worker(&self, name: &str, slots: u32) -> common::Worker {
        self.coordinator.start_worker(name, slots, agent_dispatcher(self.docker.clone(), name)).await
    }
}

fn sweep_toml(name: &str, url: &str, executor_extra: &str, select: &str, agents: &str) -> String {
    format!(
        r#"name = "{name}"
max_attempts = 2
{select}

[dataset]
name = "fixtures"

[executor]
kind = "agent"
preset = "paper"
{executor_extra}

{agents}

[[critics]]
name = "none"
kind = "none"
"#
    )
    .replace("URL", url)
}

fn agent(name: &str, model: &str, extra: &str) -> String {
    format!(
        r#"[[agents]]
name = "{name}"
base_url = "URL"
model = "{model}"
api_key_env = "{KEY_ENV}"
price = {{ input_per_mtok = 0.15, output_per_mtok = 1.50, cached_input_per_mtok = 0.015 }}
{extra}
"#
    )
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn the_replay_agent_solves_every_fixture_task_and_every_cent_is_accounted(pool: PgPool) {
    let logs = capture_logs();
    let instances = fixtures();
    let Some(docker) = docker_with_fixture_images(&instances).await else { return };
    set_key();
    datasets::import(&pool, "fixtures", None, &instances).await.unwrap();
    let url = replay_server().await;
    let coordinator = common::start_coordinator(&pool, Duration::from_secs(30)).await;
    let worker = coordinator.start_worker("agent-solve", 3, agent_dispatcher(docker, "agent-solve")).await;

    // Every fixture with the bash-only scaffold, two of them with tool calls too.
    let bash =
        testkit::submit(&pool, &sweep_toml("solve-bash", &url, "", "", &agent("replay", "replay", ""))).await;
    let tools = testkit::submit(
        &pool,
        &sweep_toml(
            "solve-tools",
            &url,
            r#"scaffold = "tool_calling""#,
            "[select]\nids = [\"steerbench__textkit-2\", \"steerbench__jsonpath-lite-3\"]",
            &agent("replay", "replay", ""),
        ),
    )
    .await;
    assert_eq!((bash.runs, tools.runs), (instances.len() as i64, 2));

    for sweep in [bash.sweep_id, tools.sweep_id] {
        let status = wait_until_done(&pool, sweep, Duration::from_secs(600)).await;
        assert_eq!(status.state, SweepState::Completed, "{status:?}");
        let mut spent = Decimal::ZERO;
        for run in all_runs(&pool, sweep).await {
            assert_eq!(run.state, RunState::Done, "{run:?}");
            assert_eq!((run.outcome, run.resolved), (Some(Outcome::Resolved), Some(true)), "{run:?}");
            // The run's totals are exactly the sum of its model calls.
            let (cost, input, output, calls) = call_totals(&pool, run.id, run.attempt).await;
            assert!(cost > Decimal::ZERO);
            assert_eq!(run.totals.agent_cost_usd, cost, "{run:?}");
            assert_eq!((run.totals.input_tokens, run.totals.output_tokens), (input, output));
            assert_eq!(i64::from(run.totals.steps), calls, "one model call per step");
            spent += cost;

            // The trajectory, as mini-swe-agent writes it, is the conversation the model saw.
            let record = runs::trajectory(&pool, run.id).await.unwrap();
            assert_eq!(record.steps.len(), run.totals.steps as usize);
            assert!(record.steps.len() >= 4, "looks around, edits, tests, submits: {:?}", record.steps);
            let mini = orchestrator::export::mini_swe_agent(&record);
            assert_eq!(mini["info"]["exit_status"], "Submitted");
            assert_eq!(mini["info"]["submission"].as_str(), record.patch.as_deref());
            let messages = mini["messages"].as_array().unwrap();
            assert_eq!(messages[0]["role"], "system");
            assert_eq!(messages[1]["role"], "user");
            assert!(messages[1]["content"].as_str().unwrap().contains("<pr_description>"));
            let assistant = messages.iter().filter(|m| m["role"] == "assistant").count();
            assert_eq!(assistant, record.steps.len());
            assert_eq!(mini["info"]["model_stats"]["api_calls"], calls);
            // Each call keeps the endpoint's id of its answer, a distinct one, shown on its step.
            let ids: std::collections::HashSet<&str> =
                record.llm_calls.iter().filter_map(|c| c.call.response_id.as_deref()).collect();
            assert_eq!(ids.len(), record.llm_calls.len(), "{:?}", record.llm_calls);
            assert!(ids.iter().all(|id| id.starts_with("replay-")), "{ids:?}");
            let answered = messages.iter().filter(|m| m["role"] == "assistant");
            assert!(answered
                .into_iter()
                .all(|m| m["extra"]["response_id"].as_str().is_some_and(|id| ids.contains(id))));
        }
        // The sweep was charged as the calls were made: exactly their sum.
        let status = sweeps::status(&pool, sweep).await.unwrap();
        assert_eq!(status.spent_usd, spent);
    }
    let tool_run = &all_runs(&pool, tools.sweep_id).await[0];
    let record = runs::trajectory(&pool, tool_run.id).await.unwrap();
    let first = record.steps[0].messages.as_array().unwrap();
    assert!(
        first.iter().any(|m| m.get("tool_calls").is_some()),
        "the tool-calling scaffold used tools: {first:?}"
    );

    worker.drain().await;
    coordinator.shutdown().await;
    assert_eq!(leftover_containers("steerbench.worker=agent-solve").await, 0);

    // The key never reached Postgres or a log line (and the logs are not empty: they were captured).
    for table in ["runs", "steps", "llm_calls", "sweeps", "agents", "workers", "evaluations", "endpoints"] {
        let dump: Option<String> =
            sqlx::query_scalar(&format!("SELECT string_agg(t::text, '') FROM {table} t"))
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(!dump.unwrap_or_default().contains(KEY), "the API key is stored in {table}");
    }
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("model") || logs.len() > 1000, "logs were captured");
    assert!(!logs.contains(KEY), "the API key appears in the logs");
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn misbehaving_endpoints_and_agents_end_as_they_should(pool: PgPool) {
    let Some(bed) = bed(&pool, Duration::from_secs(30)).await else { return };
    let url = bed.url.clone();
    let worker = bed.worker("agent-misbehave", 4).await;

    let agents = [
        agent("format", "replay/format-errors", ""),
        agent("loop", "replay/loop", "max_steps = 4"),
        agent("costly", "replay/loop", "max_cost_usd = 0.000001"),
        agent("slow", "replay/slow", "max_wall_time_s = 2"),
        agent("ratelimited", "replay/rate-limited", ""),
        agent("errors500", "replay/server-errors", ""),
        agent("malformed", "replay/malformed", ""),
        agent("nousage", "replay/no-usage", ""),
        agent("down", "replay/down", ""),
    ]
    .join("\n");
    let toml = sweep_toml(
        "misbehave",
        &url,
        "max_format_errors = 2",
        "[select]\nids = [\"steerbench__minicalc-1\"]",
        &agents,
    );
    let sweep = testkit::submit(&pool, &toml).await;
    let status = wait_until_done(&pool, sweep.sweep_id, Duration::from_secs(300)).await;
    assert_eq!(status.state, SweepState::Completed, "{status:?}");
    let by_agent: std::collections::HashMap<String, RunInfo> =
        all_runs(&pool, sweep.sweep_id).await.into_iter().map(|r| (r.agent.clone(), r)).collect();
    let calls = |agent: &str| {
        let run = by_agent[agent].clone();
        let pool = pool.clone();
        async move { runs::trajectory(&pool, run.id).await.unwrap().llm_calls }
    };

    // Three replies without one action (the limit is 2): each one a recorded step.
    let format = &by_agent["format"];
    assert_eq!(format.outcome, Some(Outcome::FormatErrorLimit), "{format:?}");
    assert_eq!(format.totals.steps, 3);
    let record = runs::trajectory(&pool, format.id).await.unwrap();
    assert!(record.steps.iter().all(|s| s.action.is_none()));
    assert!(record.steps[0].observation.as_deref().unwrap().contains("EXACTLY ONE action"));

    // Repeating the same command runs into the step limit; the patch is still graded.
    let looping = &by_agent["loop"];
    assert_eq!((looping.outcome, looping.totals.steps), (Some(Outcome::StepLimit), 4), "{looping:?}");
    assert_eq!(looping.resolved, Some(false));
    assert_eq!(by_agent["costly"].outcome, Some(Outcome::CostLimit), "{:?}", by_agent["costly"]);
    assert_eq!(by_agent["costly"].totals.steps, 1, "the limit is checked before each call");
    assert_eq!(by_agent["slow"].outcome, Some(Outcome::TimeLimit), "{:?}", by_agent["slow"]);

    // A 429 is retried after its Retry-After and billed once.
    let rl = calls("ratelimited").await;
    assert_eq!(rl[0].call.retries, 1, "{rl:?}");
    assert!(rl[0].call.error.as_deref().unwrap().contains("429"), "{rl:?}");
    assert_eq!(
        by_agent["ratelimited"].totals.agent_cost_usd,
        rl.iter().map(|c| c.call.cost_usd).sum::<Decimal>()
    );
    assert_eq!(by_agent["ratelimited"].outcome, Some(Outcome::EmptyPatch), "it submits without editing");
    assert_eq!(calls("errors500").await[0].call.retries, 2);

    // A malformed body is retried; the call keeps an excerpt of it.
    let bad = calls("malformed").await;
    assert_eq!(bad[0].call.status, "ok");
    assert!(bad[0].call.error.as_deref().unwrap().contains("malformed"), "{bad:?}");

    // No usage in the answer: counted by estimate, marked, and still billed.
    let nousage = calls("nousage").await;
    assert!(
        nousage.iter().all(|c| c.call.tokens_estimated && c.call.cost_usd > Decimal::ZERO),
        "{nousage:?}"
    );

    // An endpoint that keeps failing is an infrastructure error, not an agent failure: every
    // attempt is re-queued, then the run ends as `error`, each failed call recorded.
    let down = &by_agent["down"];
    assert_eq!((down.state, down.outcome), (RunState::Error, None), "{down:?}");
    assert!(down.last_error.as_deref().unwrap().contains("model endpoint"), "{down:?}");
    let down_calls = calls("down").await;
    assert_eq!(down_calls.iter().map(|c| c.attempt).collect::<Vec<_>>(), vec![1, 2]);
    assert!(down_calls.iter().all(|c| c.call.status == "unavailable"));

    worker.drain().await;
    bed.coordinator.shutdown().await;
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn a_run_killed_midway_resumes_elsewhere_and_its_first_attempt_stays_visible(pool: PgPool) {
    capture_logs();
    let instances = fixtures();
    let Some(docker) = docker_with_fixture_images(&instances).await else { return };
    set_key();
    datasets::import(&pool, "fixtures", None, &instances).await.unwrap();
    let url = replay_server().await;
    let coordinator = common::start_coordinator(&pool, Duration::from_secs(2)).await;
    // The first worker is a `steer worker` process, so that it can be killed outright.
    let token =
        orchestrator::store::tokens::create(&pool, "victim", protocol::Role::Worker).await.unwrap().token;
    let mut victim = tokio::process::Command::new(env!("CARGO_BIN_EXE_steer"))
        .args(["worker", "--coordinator", &coordinator.url, "--slots", "1", "--name", "agent-killed"])
        .env("STEER_TOKEN", &token)
        .env("STEER_ALLOW_KEY_ENV", KEY_ENV)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("starting `steer worker`");
    let toml = sweep_toml(
        "killed",
        &url,
        "",
        "[select]\nids = [\"steerbench__minicalc-2\"]",
        &agent("slow", "replay/slow", ""),
    );
    let sweep = testkit::submit(&pool, &toml).await;
    let run = all_runs(&pool, sweep.sweep_id).await.remove(0);

    // Once the first step is recorded, the worker process is SIGKILLed mid-step.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM steps WHERE run_id = $1")
            .bind(run.id)
            .fetch_one(&pool)
            .await
            .unwrap();
        if steps >= 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no step was recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    victim.start_kill().expect("SIGKILL");
    victim.wait().await.unwrap();

    let second =
        coordinator.start_worker("agent-rescue", 1, agent_dispatcher(docker.clone(), "agent-rescue")).await;
    let status = wait_until_done(&pool, sweep.sweep_id, Duration::from_secs(120)).await;
    assert_eq!(status.state, SweepState::Completed, "{status:?}");
    let done = runs::get(&pool, run.id).await.unwrap();
    assert_eq!((done.state, done.attempt), (RunState::Done, 2), "{done:?}");
    let record = runs::trajectory(&pool, run.id).await.unwrap();
    let first_attempt = record.steps.iter().filter(|s| s.attempt == 1).count();
    let second_attempt = record.steps.iter().filter(|s| s.attempt == 2).count();
    assert!(first_attempt >= 1, "the first attempt's steps are kept: {:?}", record.steps);
    assert_eq!(second_attempt as i32, done.totals.steps);
    let mini = orchestrator::export::mini_swe_agent(&record);
    assert_eq!(mini["info"]["steerbench"]["earlier_attempts"][0]["attempt"], 1);
    let assistant = mini["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "assistant").count();
    assert_eq!(assistant, second_attempt, "the conversation is the final attempt's");
    // What the first attempt spent stays charged to the sweep.
    let (cost1, ..) = call_totals(&pool, run.id, 1).await;
    let (cost2, ..) = call_totals(&pool, run.id, 2).await;
    assert!(cost1 > Decimal::ZERO);
    assert_eq!(status.spent_usd, cost1 + cost2);
    assert_eq!(done.totals.agent_cost_usd, cost2);

    second.drain().await;
    coordinator.shutdown().await;
    // What the killed process left, as a restarted worker of that name would remove it.
    docker.reap(("steerbench.worker", "agent-killed")).await.unwrap();
}

/// Sum of a run's critic calls (final attempt) and how many gave feedback.
async fn critic_totals(pool: &PgPool, run_id: i64, attempt: i32) -> (Decimal, i64, i64) {
    let row = sqlx::query(
        "SELECT COALESCE(sum(cost_usd), 0) AS cost, count(*) AS n,
                count(*) FILTER (WHERE decision = 'inject') AS injected
         FROM critic_calls WHERE run_id = $1 AND attempt = $2",
    )
    .bind(run_id)
    .bind(attempt)
    .fetch_one(pool)
    .await
    .unwrap();
    (row.get("cost"), row.get("n"), row.get("injected"))
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn critics_steer_the_agent_and_every_critic_call_is_accounted(pool: PgPool) {
    let Some(bed) = bed(&pool, Duration::from_secs(30)).await else { return };
    let url = bed.url.clone();
    let worker = bed.worker("agent-critic", 3).await;

    let critics = format!(
        r#"[[critics]]
name = "rules"
kind = "heuristic"

[[critics]]
name = "teacher"
kind = "remote"
preset = "paper"
every_k = 2
base_url = "{url}"
model = "replay/critic"
api_key_env = "{KEY_ENV}"
price = {{ input_per_mtok = 3.0, output_per_mtok = 15.0 }}

[[critics]]
name = "stopper"
kind = "remote"
every_k = 3
stop_on_status = "Critical intervention required"
base_url = "{url}"
model = "replay/critic-stop"
api_key_env = "{KEY_ENV}"
price = "free"
"#
    );
    let toml = sweep_toml(
        "critics",
        &url,
        "",
        "[select]\nids = [\"steerbench__minicalc-1\"]",
        &[agent("solver", "replay", ""), agent("looper", "replay/loop", "max_steps = 6")].join("\n"),
    )
    .replace("[[critics]]\nname = \"none\"\nkind = \"none\"\n", &critics);
    let sweep = testkit::submit(&pool, &toml).await;
    assert_eq!(sweep.runs, 6);
    let status = wait_until_done(&pool, sweep.sweep_id, Duration::from_secs(300)).await;
    assert_eq!(status.state, SweepState::Completed, "{status:?}");
    let runs: std::collections::HashMap<(String, String), RunInfo> = all_runs(&pool, sweep.sweep_id)
        .await
        .into_iter()
        .map(|r| ((r.agent.clone(), r.critic.clone()), r))
        .collect();
    let run = |agent: &str, critic: &str| runs[&(agent.to_string(), critic.to_string())].clone();
    let supervisor_messages = |record: &protocol::Trajectory| -> Vec<String> {
        record
            .steps
            .iter()
            .flat_map(|s| s.messages.as_array().cloned().unwrap_or_default())
            .filter(|m| m["supervisor"] == true)
            .map(|m| m["content"].as_str().unwrap().to_string())
            .collect()
    };

    // The rules notice the loop, once, and say so to the agent; a productive run hears nothing.
    let looped = run("looper", "rules");
    assert_eq!(looped.outcome, Some(Outcome::StepLimit), "{looped:?}");
    let (_, calls, injected) = critic_totals(&pool, looped.id, looped.attempt).await;
    assert_eq!((calls, injected), (6, 1), "asked after every step, intervened once");
    let record = runs::trajectory(&pool, looped.id).await.unwrap();
    let said = supervisor_messages(&record);
    assert_eq!(said.len(), 1);
    assert!(
        said[0].starts_with("SUPERVISOR FEEDBACK:") && said[0].contains("same command 3 times"),
        "{said:?}"
    );
    let solved = run("solver", "rules");
    assert_eq!(solved.outcome, Some(Outcome::Resolved), "{solved:?}");
    let (cost, calls, injected) = critic_totals(&pool, solved.id, solved.attempt).await;
    assert!(calls >= 5 && injected == 0 && cost == Decimal::ZERO, "{calls} calls, {injected} injected");

    // The remote critic is asked every 2 steps; its critiques reach the agent folded into one
    // supervisor message; its cost is the run's critic cost and is charged to the sweep.
    let taught = run("solver", "teacher");
    assert_eq!(taught.outcome, Some(Outcome::Resolved), "{taught:?}");
    let (cost, calls, injected) = critic_totals(&pool, taught.id, taught.attempt).await;
    assert_eq!((calls, injected), (3, 3), "after steps 2, 4 and 6 of 7");
    assert!(cost > Decimal::ZERO);
    assert_eq!(taught.totals.critic_cost_usd, cost);
    let record = runs::trajectory(&pool, taught.id).await.unwrap();
    let remote_ids = record.critic_calls.iter().filter_map(|c| c.call.response_id.as_deref());
    assert_eq!(
        remote_ids.filter(|id| id.starts_with("replay-")).count(),
        3,
        "the remote critic's answers' ids"
    );
    let said = supervisor_messages(&record);
    assert_eq!(said.len(), 3);
    assert!(
        said[2].contains("### Feedback #2 (after step 4):")
            && said[2].contains("## Current Feedback (after step 6):"),
        "{}",
        said[2]
    );
    let prompt: Value = sqlx::query_scalar(
        "SELECT prompt FROM critic_calls WHERE run_id = $1 ORDER BY call_index DESC LIMIT 1",
    )
    .bind(taught.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    let prompt_text = prompt.to_string();
    assert!(prompt_text.contains("You are a supervisor"), "the critic's own system prompt");
    assert!(!prompt_text.contains("You are a helpful assistant"), "not the agent's system prompt");
    assert!(!prompt_text.contains("SUPERVISOR FEEDBACK"), "not its earlier messages to the agent");
    assert!(prompt_text.contains("### Feedback #2 (after step 4)"), "but its own latest critiques");

    // A critic may stop a run only when the condition says so.
    for agent in ["solver", "looper"] {
        let stopped = run(agent, "stopper");
        assert_eq!(stopped.outcome, Some(Outcome::CriticStop), "{stopped:?}");
        assert_eq!(stopped.totals.steps, 3, "{stopped:?}");
    }

    // Every dollar of the sweep is a recorded model or critic call.
    let all: Decimal = sqlx::query_scalar(
        "SELECT (SELECT COALESCE(sum(cost_usd), 0) FROM llm_calls) + (SELECT COALESCE(sum(cost_usd), 0) FROM critic_calls)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(sweeps::status(&pool, sweep.sweep_id).await.unwrap().spent_usd, all);

    worker.drain().await;
    bed.coordinator.shutdown().await;
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn prefix_replay_runs_after_its_base_and_replays_its_first_steps(pool: PgPool) {
    let Some(bed) = bed(&pool, Duration::from_secs(30)).await else { return };
    let url = bed.url.clone();
    let worker = bed.worker("agent-prefix", 2).await;
    let critics = format!(
        r#"[[critics]]
name = "teacher"
kind = "remote"
every_k = 3
prefix_from = "none"
prefix_steps = 3
base_url = "{url}"
model = "replay/critic"
api_key_env = "{KEY_ENV}"
price = "free"

[[critics]]
name = "none"
kind = "none"
"#
    );
    // The critic condition comes first in dispatch order: it must still wait for its base.
    let toml = sweep_toml(
        "prefix",
        &url,
        "",
        "[select]\nids = [\"steerbench__textkit-1\"]",
        &agent("solver", "replay", ""),
    )
    .replace("[[critics]]\nname = \"none\"\nkind = \"none\"\n", &critics);
    let sweep = testkit::submit(&pool, &toml).await;
    let status = wait_until_done(&pool, sweep.sweep_id, Duration::from_secs(300)).await;
    assert_eq!(status.state, SweepState::Completed, "{status:?}");
    let runs = all_runs(&pool, sweep.sweep_id).await;
    let base = runs.iter().find(|r| r.critic == "none").unwrap();
    let steered = runs.iter().find(|r| r.critic == "teacher").unwrap();
    assert_eq!((base.outcome, steered.outcome), (Some(Outcome::Resolved), Some(Outcome::Resolved)));
    assert!(steered.started_at.unwrap() >= base.finished_at.unwrap(), "scheduled after its base run");

    let base_record = runs::trajectory(&pool, base.id).await.unwrap();
    let record = runs::trajectory(&pool, steered.id).await.unwrap();
    for i in 0..3 {
        let (b, s) = (&base_record.steps[i], &record.steps[i]);
        assert!(s.replayed && !b.replayed, "step {i}");
        assert_eq!(
            (&s.action, &s.messages, s.cost_usd),
            (&b.action, &b.messages, b.cost_usd),
            "step {i} copied"
        );
        assert_eq!(s.exit_code, b.exit_code, "step {i} re-executed with the same result");
    }
    assert!(record.steps[3..].iter().all(|s| !s.replayed));
    // No model call for the replayed steps; the critic is asked right after them.
    let calls = &record.llm_calls;
    assert_eq!(calls.len(), record.steps.len() - 3);
    assert!(calls.iter().all(|c| c.call.step_index.unwrap() >= 3));
    assert_eq!(record.critic_calls[0].call.step_index, 2, "first critique after the prefix");
    // Its feedback is the first message the agent reads at step 3.
    let first = &record.steps[3].messages[0];
    assert_eq!(first["supervisor"], true, "{first}");
    assert!(first["content"].as_str().unwrap().contains("## Current Feedback (after step 3):"), "{first}");
    // Counters are synced: the run's totals include the replayed steps' cost.
    let replayed_cost: Decimal = record.steps[..3].iter().map(|s| s.cost_usd).sum();
    let (calls_cost, ..) = call_totals(&pool, steered.id, steered.attempt).await;
    assert_eq!(steered.totals.agent_cost_usd, replayed_cost + calls_cost);

    worker.drain().await;
    bed.coordinator.shutdown().await;
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn the_shipped_scorer_intervenes_on_a_loop_and_not_on_a_productive_run(pool: PgPool) {
    capture_logs();
    if let Err(e) = worker::critic::onnx::runtime_library() {
        assert!(std::env::var_os("CI").is_none(), "CI is set and ONNX Runtime is missing: {e}");
        eprintln!("skipping: {e} (scripts/ensure-ort gets it)");
        return;
    }
    let Some(bed) = bed(&pool, Duration::from_secs(30)).await else { return };
    let url = bed.url.clone();
    let worker = bed.worker("agent-scorer", 2).await;
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/scorer");
    let critics = format!(
        "[[critics]]\nname = \"scorer\"\nkind = \"onnx\"\nmodel = \"{}\"\nevery_k = 3\nscore_threshold = 0.5\n",
        model.display()
    );
    let toml = sweep_toml(
        "scorer",
        &url,
        "",
        "[select]\nids = [\"steerbench__minicalc-3\"]",
        &[agent("solver", "replay", ""), agent("looper", "replay/loop", "max_steps = 9")].join("\n"),
    )
    .replace("[[critics]]\nname = \"none\"\nkind = \"none\"\n", &critics);
    let sweep = testkit::submit(&pool, &toml).await;
    let status = wait_until_done(&pool, sweep.sweep_id, Duration::from_secs(300)).await;
    assert_eq!(status.state, SweepState::Completed, "{status:?}");
    let runs = all_runs(&pool, sweep.sweep_id).await;
    let solver = runs.iter().find(|r| r.agent == "solver").unwrap();
    let looper = runs.iter().find(|r| r.agent == "looper").unwrap();
    assert_eq!((solver.outcome, looper.outcome), (Some(Outcome::Resolved), Some(Outcome::StepLimit)));

    let calls = |id: i64| {
        let pool = pool.clone();
        async move { runs::trajectory(&pool, id).await.unwrap().critic_calls }
    };
    let productive = calls(solver.id).await;
    let looping = calls(looper.id).await;
    assert!(!productive.is_empty() && !looping.is_empty());
    for c in productive.iter().chain(&looping) {
        assert_eq!(
            (c.call.kind.as_str(), c.call.status.as_str(), c.call.device.as_deref()),
            ("onnx", "ok", Some("cpu"))
        );
        assert!(
            c.call.score.is_some() && c.call.batch_size.unwrap() >= 1 && c.call.input_tokens > 0,
            "{c:?}"
        );
    }
    let injected =
        |cs: &[protocol::TrajectoryCriticCall]| cs.iter().filter(|c| c.call.decision == "inject").count();
    assert_eq!(injected(&productive), 0, "the productive run is left alone: {productive:?}");
    assert!(injected(&looping) >= 1, "the loop gets feedback: {looping:?}");
    let (cost, ..) = critic_totals(&pool, looper.id, looper.attempt).await;
    assert_eq!(looper.totals.critic_cost_usd, cost, "priced per CPU-hour of measured compute");

    worker.drain().await;
    bed.coordinator.shutdown().await;
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn both_exports_name_each_condition_alike_and_no_two_conditions_alike(pool: PgPool) {
    let Some(bed) = bed(&pool, Duration::from_secs(30)).await else { return };
    let url = bed.url.clone();
    let worker = bed.worker("agent-export", 3).await;
    let toml = sweep_toml(
        "named",
        &url,
        "",
        "repeats = 2\n[select]\nids = [\"steerbench__minicalc-1\", \"steerbench__textkit-1\"]",
        &agent("replay", "replay", ""),
    )
    .replace(
        "[[critics]]\nname = \"none\"\nkind = \"none\"\n",
        "[[critics]]\nname = \"none\"\nkind = \"none\"\n\n[[critics]]\nname = \"rules\"\nkind = \"heuristic\"\n",
    );
    let sweep = testkit::submit(&pool, &toml).await;
    assert_eq!(sweep.runs, 8, "2 instances x 2 critics x 2 repeats");
    let status = wait_until_done(&pool, sweep.sweep_id, Duration::from_secs(600)).await;
    assert_eq!(status.state, SweepState::Completed, "{status:?}");
    assert!(all_runs(&pool, sweep.sweep_id).await.iter().all(|r| r.state == RunState::Done));

    let user = orchestrator::store::tokens::create(&pool, "alice", protocol::Role::User).await.unwrap().token;
    let api = &bed.coordinator.url;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trajectories");
    let (code, text) = common::steer_cli(
        api,
        &user,
        &["export", "trajectories", "--sweep", "named", "--out", out.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{text}");

    let mut names = std::collections::BTreeSet::new();
    for critic in ["none", "rules"] {
        for repeat in [0, 1] {
            let expected = format!("named__replay__{critic}__r{repeat}");
            // preds.json of `export trajectories`: the condition's name on every entry.
            let path = out.join(format!("replay__{critic}__r{repeat}")).join("preds.json");
            let preds: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let entries = preds.as_object().unwrap();
            assert_eq!(entries.len(), 2, "{path:?}: {preds}");
            for entry in entries.values() {
                assert_eq!(entry["model_name_or_path"], expected.as_str(), "{path:?}");
            }
            // `export preds` of the same condition: the same name, the same patches.
            let jsonl = dir.path().join(format!("{critic}-{repeat}.jsonl"));
            let repeat_arg = repeat.to_string();
            let args = [
                "export",
                "preds",
                "--sweep",
                "named",
                "--condition",
                critic,
                "--repeat",
                &repeat_arg,
                "--out",
                jsonl.to_str().unwrap(),
            ];
            let (code, text) = common::steer_cli(api, &user, &args).await;
            assert_eq!(code, 0, "{text}");
            let lines: Vec<Value> = std::fs::read_to_string(&jsonl)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), 2, "{jsonl:?}");
            for line in &lines {
                assert_eq!(line["model_name_or_path"], expected.as_str(), "{jsonl:?}");
                let id = line["instance_id"].as_str().unwrap();
                assert_eq!(line["model_patch"], entries[id]["model_patch"], "{id} in {jsonl:?}");
            }
            names.insert(expected);
        }
    }
    assert_eq!(names.len(), 4, "one name per condition: {names:?}");
    worker.drain().await;
    bed.coordinator.shutdown().await;
    assert_eq!(leftover_containers("steerbench.worker=agent-export").await, 0);
}
