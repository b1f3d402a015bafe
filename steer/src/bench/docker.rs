//! `steer bench sandbox` and `steer bench grade`: Docker-side figures, as one JSON object each.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use protocol::{
    AgentSpec, ClaimedRun, CriticSpec, EvaluateSpec, ExecutorSpec, Instance, Outcome, PatchSource,
    SandboxSettings,
};
use tokio::sync::Semaphore;
use worker::evaluate::EvaluateExecutor;
use worker::sandbox::Docker;

#[derive(Args, Debug)]
pub struct SandboxBenchArgs {
    /// Image of the container the commands run in.
    #[arg(long, default_value = "steerbench/debian-base:bookworm")]
    pub image: String,
    /// Round trips per method.
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
    /// Docker engine.
    #[arg(long, env = "DOCKER_HOST", default_value = "unix:///var/run/docker.sock")]
    pub docker_host: String,
    /// Print only the JSON object.
    #[arg(long)]
    pub json: bool,
}

pub async fn sandbox(args: SandboxBenchArgs) -> anyhow::Result<ExitCode> {
    let docker = Docker::connect_to(&args.docker_host).await?;
    let report = worker::sandbox::bench::run(&docker, &args.image, args.iterations).await?;
    docker.wait_for_removals().await;
    if !args.json {
        eprintln!(
            "persistent shell p50 {:.2} ms, API exec {:.2} ms, `docker exec` subprocess {:?} ms",
            report.shell_p50_ms, report.api_exec_p50_ms, report.cli_exec_p50_ms
        );
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct GradeBenchArgs {
    /// The fixture dataset (its records name their images).
    #[arg(long, default_value = "docker/fixtures/dataset.jsonl")]
    pub dataset: PathBuf,
    /// Concurrent evaluations to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub concurrency: Vec<usize>,
    #[arg(long, env = "DOCKER_HOST", default_value = "unix:///var/run/docker.sock")]
    pub docker_host: String,
    /// Print only the JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Grades every fixture instance's gold patch at each concurrency and reports instances graded
/// per minute (`graded_per_min_<c>`); every instance must resolve, or the figures mean nothing.
pub async fn grade(args: GradeBenchArgs) -> anyhow::Result<ExitCode> {
    let instances = orchestrator::dataset::load_path(&args.dataset)
        .with_context(|| format!("reading {}", args.dataset.display()))?;
    let docker = Docker::connect_to(&args.docker_host).await?;
    let executor = Arc::new(EvaluateExecutor::new(docker.clone(), "bench-grade"));
    let mut report = serde_json::Map::new();
    report.insert("instances".into(), instances.len().into());
    for &c in &args.concurrency {
        anyhow::ensure!(c >= 1, "--concurrency values must be at least 1");
        let gate = Arc::new(Semaphore::new(c));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (i, inst) in instances.iter().enumerate() {
            let (gate, executor, run) = (gate.clone(), executor.clone(), gold_run(i as i64, inst.clone()));
            tasks.push(tokio::spawn(async move {
                let _slot = gate.acquire().await.expect("semaphore open");
                executor.grade_offline(&run).await.map(|r| (run.instance.instance_id.clone(), r.outcome))
            }));
        }
        for t in tasks {
            let (id, outcome) = t.await?.map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(
                outcome == Outcome::Resolved,
                "{id}: the gold patch did not resolve ({outcome:?})"
            );
        }
        let per_min = instances.len() as f64 / start.elapsed().as_secs_f64() * 60.0;
        report.insert(format!("graded_per_min_{c}"), ((per_min * 10.0).round() / 10.0).into());
    }
    docker.wait_for_removals().await;
    if !args.json {
        eprintln!(
            "gold patches of {} fixture instances graded at concurrency {:?}",
            instances.len(),
            args.concurrency
        );
    }
    println!("{}", serde_json::Value::Object(report));
    Ok(ExitCode::SUCCESS)
}

/// A run that grades the instance's gold patch, as the coordinator would hand it out.
fn gold_run(run_id: i64, instance: Instance) -> ClaimedRun {
    ClaimedRun {
        run_id,
        sweep_id: 0,
        attempt: 1,
        lease_token: uuid::Uuid::nil(),
        lease_expires_at: chrono::Utc::now(),
        repeat_index: 0,
        instance,
        agent: AgentSpec {
            name: "gold".into(),
            base_url: "predictions:".into(),
            model: "gold".into(),
            api_key_env: None,
            sampling: Default::default(),
            price: Default::default(),
            limits: Default::default(),
            max_concurrency: None,
            extra_body: Default::default(),
            tokenizer: None,
            agent_config: None,
        },
        critic: CriticSpec::none("none"),
        executor: ExecutorSpec::Evaluate(EvaluateSpec {
            profile: Default::default(),
            patch: PatchSource::Gold,
        }),
        sandbox: SandboxSettings::default(),
        input_patch: None,
        prefix: None,
    }
}
