//! `steer bench agent`: what the agent loop itself costs, as one JSON object.
//!
//! - Orchestration overhead per step: the wall time of a step minus the model call's latency
//!   minus the command's time in the sandbox (rendering prompts, parsing the reply, building
//!   the request, reading the answer, bookkeeping), with the replay agent answering at once
//!   over HTTP on loopback and every command being `true`. Steps are not uploaded (there is no
//!   coordinator here); an upload is one HTTP request and one small transaction per step.
//! - Worker memory: the process's resident set while 1, 16 and 64 runs are in flight at once
//!   (each with its container, persistent shell and model connection), and the growth per
//!   extra run between the smallest and the largest level.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use protocol::{AgentExecSpec, AgentLimits, AgentSpec, ClaimedRun, CriticSpec, ExecutorSpec, Instance};
use worker::agent::AgentExecutor;
use worker::evaluate::Grader;
use worker::sandbox::Docker;
use worker::sandboxes::SandboxFactory;

use crate::bench::percentile_of;
use crate::replay::{self, Scenario, Scenarios, ServeOptions, Turn};

/// Containers of this benchmark carry this worker name (and are reaped by it).
const WORKER_NAME: &str = "bench-agent";

#[derive(Args, Debug)]
pub struct AgentBenchArgs {
    /// The fixture dataset; the first instance's image is used.
    #[arg(long, default_value = "docker/fixtures/dataset.jsonl")]
    pub dataset: PathBuf,
    /// Steps of the overhead run.
    #[arg(long, default_value_t = 300)]
    pub steps: u32,
    /// Concurrent runs at which the worker's memory is measured, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    #[arg(long, env = "DOCKER_HOST", default_value = "unix:///var/run/docker.sock")]
    pub docker_host: String,
    /// Print only the JSON object.
    #[arg(long)]
    pub json: bool,
}

pub async fn agent(args: AgentBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!args.concurrency.is_empty(), "--concurrency needs at least one level");
    let instances = orchestrator::dataset::load_path(&args.dataset)
        .with_context(|| format!("reading {}", args.dataset.display()))?;
    let instance = instances.into_iter().next().context("the dataset is empty")?;
    let docker = Docker::connect_to(&args.docker_host).await?;
    docker.reap(("steerbench.worker", WORKER_NAME)).await?;
    let scenarios = Scenarios::from_scenarios(vec![
        scenario("instant", 0),
        // Runs that stay in flight while memory is sampled.
        scenario("hold", 200),
    ])?;
    let (url, _server) = replay::spawn_local(scenarios, ServeOptions::default()).await?;
    let executor =
        Arc::new(AgentExecutor::new(Grader::new(SandboxFactory::new(docker.clone(), WORKER_NAME))));

    // Overhead: one long run of instant answers and `true` commands.
    let run = bench_run(0, &instance, &url, "replay/instant", args.steps);
    let (_, report) = executor.run_offline(&run).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        report.steps.len() == args.steps as usize,
        "the run ended after {} steps",
        report.steps.len()
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // The first steps warm connections and caches; they are left out.
    let warm = &report.steps[report.steps.len().min(10)..];
    let mut overhead: Vec<f64> = warm.iter().map(|s| ms(s.total.saturating_sub(s.llm + s.command))).collect();
    let mut llm: Vec<f64> = warm.iter().map(|s| ms(s.llm)).collect();
    let mut command: Vec<f64> = warm.iter().map(|s| ms(s.command)).collect();

    // Memory at each concurrency.
    let mut rss = Vec::new();
    for &n in &args.concurrency {
        anyhow::ensure!(n >= 1, "--concurrency values must be at least 1");
        rss.push((n, rss_with_runs_in_flight(&executor, &docker, &instance, &url, n).await?));
    }
    docker.reap(("steerbench.worker", WORKER_NAME)).await?;
    docker.wait_for_removals().await;

    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let mut out = serde_json::Map::new();
    out.insert("steps".into(), warm.len().into());
    out.insert("overhead_p50_ms".into(), round(percentile_of(&mut overhead, 0.50)).into());
    out.insert("overhead_p99_ms".into(), round(percentile_of(&mut overhead, 0.99)).into());
    out.insert("llm_p50_ms".into(), round(percentile_of(&mut llm, 0.50)).into());
    out.insert("command_p50_ms".into(), round(percentile_of(&mut command, 0.50)).into());
    for (n, mb) in &rss {
        out.insert(format!("rss_mb_{n}"), round(*mb).into());
    }
    let (first, last) = (rss.first().expect("one level"), rss.last().expect("one level"));
    let per_run = if last.0 > first.0 { (last.1 - first.1) / (last.0 - first.0) as f64 } else { 0.0 };
    out.insert("rss_mb_per_extra_run".into(), round(per_run).into());
    if !args.json {
        eprintln!(
            "agent loop: {} steps of instant answers and `true`; memory at {:?} concurrent runs",
            warm.len(),
            args.concurrency
        );
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(ExitCode::SUCCESS)
}

fn scenario(name: &str, delay_ms: u64) -> Scenario {
    let mut turn = Turn::answer("THOUGHT: nothing to do.\n\n```bash\ntrue\n```");
    turn.delay_ms = delay_ms;
    Scenario { name: name.into(), description: "benchmark".into(), matches: None, turns: vec![turn] }
}

/// The resident set (MB) of this process once `n` runs hold their sandboxes and are taking
/// steps; the runs are then dropped (their containers removed).
async fn rss_with_runs_in_flight(
    executor: &Arc<AgentExecutor>,
    docker: &Docker,
    instance: &Instance,
    url: &str,
    n: usize,
) -> anyhow::Result<f64> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (executor, run) =
                (executor.clone(), bench_run(i as i64 + 1, instance, url, "replay/hold", 100_000));
            tokio::spawn(async move { executor.run_offline(&run).await.map(|_| ()) })
        })
        .collect();
    // Every run has its container, then a few steps more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while running_containers().await? < n {
        if let Some(t) = tasks.iter().find(|t| t.is_finished()) {
            anyhow::bail!("a benchmark run ended early: {t:?}");
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{n} sandboxes did not start within 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut samples = Vec::new();
    for _ in 0..5 {
        samples.push(rss_mb()?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    docker.wait_for_removals().await;
    docker.reap(("steerbench.worker", WORKER_NAME)).await?;
    Ok(percentile_of(&mut samples, 0.5))
}

async fn running_containers() -> anyhow::Result<usize> {
    let out = tokio::process::Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label=steerbench.worker={WORKER_NAME}")])
        .output()
        .await
        .context("running `docker ps`")?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

/// This process's resident set size, in MB (from /proc/self/status).
fn rss_mb() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kb / 1024.0)
}

fn bench_run(run_id: i64, instance: &Instance, url: &str, model: &str, max_steps: u32) -> ClaimedRun {
    ClaimedRun {
        run_id,
        sweep_id: 0,
        attempt: 1,
        lease_token: uuid::Uuid::nil(),
        lease_expires_at: chrono::Utc::now(),
        repeat_index: 0,
        instance: instance.clone(),
        agent: AgentSpec {
            name: "replay".into(),
            base_url: url.into(),
            model: model.into(),
            api_key_env: None,
            sampling: Default::default(),
            price: Default::default(),
            limits: AgentLimits { max_steps, max_cost_usd: None, max_wall_time_s: 3600 },
            max_concurrency: None,
            extra_body: Default::default(),
            tokenizer: None,
            agent_config: None,
        },
        critic: CriticSpec::none("none"),
        executor: ExecutorSpec::Agent(AgentExecSpec::default()),
        sandbox: Default::default(),
        input_patch: None,
        prefix: None,
    }
}
