//! `steer bench sandbox`: what a command round trip costs through the persistent shell, one
//! API exec per command, and a `docker exec` subprocess (what mini-swe-agent and the SWE-bench
//! harness do), all on the same container; and how long a sandbox takes to be ready.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::info;

use super::{Docker, Error, ExecLimits, SandboxSpec};

/// Sandboxes created to measure create-to-ready; the median is reported.
const CREATES: usize = 5;
/// Round trips run first and not measured.
const WARMUP: usize = 3;

/// Figures of one benchmark run, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxBench {
    pub image: String,
    pub iterations: usize,
    /// `true` through [`super::Shell::run`].
    pub shell_p50_ms: f64,
    pub shell_p99_ms: f64,
    /// `true` through [`super::Sandbox::exec`] (create, start and inspect an exec).
    pub api_exec_p50_ms: f64,
    pub api_exec_p99_ms: f64,
    /// `docker exec <id> bash -c true` as a subprocess; `None` without a docker CLI.
    pub cli_exec_p50_ms: Option<f64>,
    pub cli_exec_p99_ms: Option<f64>,
    /// CLI p50 over shell p50.
    pub shell_speedup_vs_cli: Option<f64>,
    /// Median over a few sandboxes of create + start + the first `true` exec.
    pub create_to_ready_ms: f64,
    /// Median time of `remove()`.
    pub remove_ms: f64,
}

/// Runs the benchmark on `image` (which must be present and have bash) with `iterations`
/// round trips per method. Containers carry the label `steerbench.bench=sandbox`.
pub async fn run(docker: &Docker, image: &str, iterations: usize) -> Result<SandboxBench, Error> {
    run_labelled(docker, image, iterations, BTreeMap::new()).await
}

/// [`run`] with extra labels on the containers (tests add theirs).
pub(crate) async fn run_labelled(
    docker: &Docker,
    image: &str,
    iterations: usize,
    labels: BTreeMap<String, String>,
) -> Result<SandboxBench, Error> {
    let iterations = iterations.max(1);
    let mut spec = SandboxSpec::new(image);
    spec.workdir = "/".into();
    spec.labels = labels;
    spec.labels.insert("steerbench.bench".into(), "sandbox".into());
    let limits = ExecLimits { timeout: Duration::from_secs(30), max_output_bytes: 10_000 };

    let mut ready = Vec::new();
    let mut removal = Vec::new();
    for _ in 0..CREATES {
        let started = Instant::now();
        let sandbox = docker.create(&spec).await?;
        sandbox.exec("true", &limits).await?;
        ready.push(ms(started.elapsed()));
        let started = Instant::now();
        sandbox.remove().await?;
        removal.push(ms(started.elapsed()));
    }

    let sandbox = docker.create(&spec).await?;
    let mut shell = sandbox.shell().await?;
    let mut shell_ms = Vec::new();
    for i in 0..WARMUP + iterations {
        let started = Instant::now();
        let out = shell.run("true", &limits).await?;
        assert_success("shell", out.exit_code)?;
        if i >= WARMUP {
            shell_ms.push(ms(started.elapsed()));
        }
    }
    let mut api_ms = Vec::new();
    for i in 0..WARMUP + iterations {
        let started = Instant::now();
        let out = sandbox.exec("true", &limits).await?;
        assert_success("API exec", out.exit_code)?;
        if i >= WARMUP {
            api_ms.push(ms(started.elapsed()));
        }
    }
    let mut cli_ms = Vec::new();
    for i in 0..WARMUP + iterations {
        let started = Instant::now();
        let output = tokio::process::Command::new("docker")
            .args(["-H", docker.host(), "exec", sandbox.id(), "bash", "-c", "true"])
            .output()
            .await;
        match output {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(Error::Docker { operation: "docker exec (CLI)", source: e.into() }),
            Ok(o) if !o.status.success() => {
                let message = format!("docker exec failed: {}", String::from_utf8_lossy(&o.stderr));
                return Err(Error::Docker { operation: "docker exec (CLI)", source: message.into() });
            }
            Ok(_) if i >= WARMUP => cli_ms.push(ms(started.elapsed())),
            Ok(_) => {}
        }
    }
    drop(shell);
    sandbox.remove().await?;

    let (cli_p50, cli_p99) = if cli_ms.is_empty() {
        (None, None)
    } else {
        (Some(percentile(&mut cli_ms, 0.5)), Some(percentile(&mut cli_ms, 0.99)))
    };
    let shell_p50 = percentile(&mut shell_ms, 0.5);
    let bench = SandboxBench {
        image: image.to_string(),
        iterations,
        shell_p50_ms: shell_p50,
        shell_p99_ms: percentile(&mut shell_ms, 0.99),
        api_exec_p50_ms: percentile(&mut api_ms, 0.5),
        api_exec_p99_ms: percentile(&mut api_ms, 0.99),
        cli_exec_p50_ms: cli_p50,
        cli_exec_p99_ms: cli_p99,
        shell_speedup_vs_cli: cli_p50.map(|c| c / shell_p50),
        create_to_ready_ms: percentile(&mut ready, 0.5),
        remove_ms: percentile(&mut removal, 0.5),
    };
    info!(?bench, "sandbox benchmark done");
    Ok(bench)
}

fn assert_success(what: &'static str, exit_code: Option<i64>) -> Result<(), Error> {
    if exit_code == Some(0) {
        return Ok(());
    }
    let message = format!("`true` through the {what} ended with {exit_code:?}");
    Err(Error::Docker { operation: "benchmark", source: message.into() })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile (`p` in 0..=1) of a non-empty sample, rounded to 0.01 ms.
fn percentile(sample: &mut [f64], p: f64) -> f64 {
    sample.sort_by(f64::total_cmp);
    let rank = ((p * sample.len() as f64).ceil() as usize).clamp(1, sample.len());
    (sample[rank - 1] * 100.0).round() / 100.0
}

#[cfg(test)]
mod unit {
    use super::percentile;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), 50.0);
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert_eq!(percentile(&mut [7.0], 0.99), 7.0);
    }
}
