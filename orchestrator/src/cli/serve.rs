//! `steer serve` and `steer worker`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, shutdown_on_signals, DatabaseArgs};
use crate::db;
use crate::server::{self, CoordinatorConfig, EndpointCooldown};

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Address to listen on. Binds loopback by default; use 0.0.0.0:8420 to serve other machines.
    #[arg(long, env = "STEER_BIND", default_value = "127.0.0.1:8420")]
    pub bind: SocketAddr,
    #[command(flatten)]
    pub coordinator: CoordinatorFlags,
}

/// Coordinator settings shared by `serve` and `up`.
#[derive(Args, Debug, Clone)]
pub struct CoordinatorFlags {
    /// How long a lease lasts without a heartbeat (workers heartbeat every third of it).
    #[arg(long, env = "STEER_LEASE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// How often expired leases are taken back and finished sweeps closed.
    #[arg(long, env = "STEER_MAINTENANCE_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub maintenance_interval: Duration,
    /// Database connections of this coordinator.
    #[arg(long, env = "STEER_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,
    /// How long a model endpoint takes no new runs after a run failed on its outage (every
    /// retry answered 429, 5xx or timed out); doubles with each consecutive outage.
    #[arg(long, env = "STEER_ENDPOINT_COOLDOWN", default_value = "5s", value_parser = parse_duration)]
    pub endpoint_cooldown: Duration,
    /// The longest an endpoint's cooldown grows to.
    #[arg(long, env = "STEER_ENDPOINT_COOLDOWN_MAX", default_value = "5m", value_parser = parse_duration)]
    pub endpoint_cooldown_max: Duration,
}

impl CoordinatorFlags {
    pub fn config(&self, bind: SocketAddr) -> CoordinatorConfig {
        CoordinatorConfig {
            bind,
            lease_ttl: self.lease_ttl,
            maintenance_interval: self.maintenance_interval,
            endpoint_cooldown: EndpointCooldown {
                base: self.endpoint_cooldown,
                max: self.endpoint_cooldown_max,
            },
        }
    }
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let pool = db::connect(&args.db.database_url, args.coordinator.db_connections).await?;
    let shutdown = shutdown_on_signals();
    server::serve(pool, args.coordinator.config(args.bind), shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Coordinator base URL.
    #[arg(long, env = "STEER_COORDINATOR", default_value = "http://127.0.0.1:8420")]
    pub coordinator: String,
    /// A `worker` token (create one with `steer token create --role worker`).
    #[arg(long, env = "STEER_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Serve this worker's Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "STEER_METRICS_BIND")]
    pub metrics_bind: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub worker: WorkerFlags,
}

/// Serves the worker's `/metrics` until the process ends.
async fn serve_worker_metrics(bind: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = anyhow::Context::with_context(tokio::net::TcpListener::bind(bind).await, || {
        format!("binding the metrics endpoint to {bind}")
    })?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                worker::metrics::METRICS.render(),
            )
        }),
    );
    tracing::info!(%bind, "worker metrics at /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the worker's metrics endpoint stopped");
        }
    });
    Ok(())
}

/// Worker settings shared by `worker` and `up`.
#[derive(Args, Debug, Clone)]
pub struct WorkerFlags {
    /// Runs executed at once.
    #[arg(long, env = "STEER_SLOTS", default_value_t = 2)]
    pub slots: u32,
    /// Load this critic model directory at start (repeatable), so that a missing ONNX Runtime
    /// library or a bad model stops the worker at once instead of failing its runs.
    #[arg(long = "critic-model", value_name = "DIR")]
    pub critic_models: Vec<std::path::PathBuf>,
    /// Threads each local critic model uses within one inference (0: ONNX Runtime's default).
    #[arg(long, env = "STEER_CRITIC_THREADS", default_value_t = 0)]
    pub critic_threads: usize,
    /// Name shown for this worker [default: the host name].
    #[arg(long, env = "STEER_WORKER_NAME")]
    pub name: Option<String>,
    /// On SIGTERM, how long runs may finish before they are handed back.
    #[arg(long, env = "STEER_DRAIN_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Long-poll length of each claim.
    #[arg(long, env = "STEER_CLAIM_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub claim_wait: Duration,
    /// Docker engine for sandboxes (unix:///path, tcp://host:port). Without a reachable engine
    /// the worker runs placeholder runs only.
    #[arg(long, env = "DOCKER_HOST", default_value = "unix:///var/run/docker.sock")]
    pub docker_host: String,
    /// Do not use Docker even if it is reachable (placeholder runs only).
    #[arg(long)]
    pub no_docker: bool,
    /// Disk budget for kept instance images, in GiB: past it the least recently used images
    /// not in use are removed. Unset: images are kept without limit.
    #[arg(long, env = "STEER_IMAGE_BUDGET_GB")]
    pub image_budget_gb: Option<u64>,
    /// Attempts at pulling a missing instance image, 2 s apart doubling to 60 s. 1 fails at
    /// once: for machines whose images are loaded ahead and that reach no registry.
    #[arg(long, env = "STEER_PULL_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub pull_attempts: u32,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub llm: LlmRetryArgs,
}

/// How agents' model calls are retried. A call that exhausts its attempts ends the run as an
/// infrastructure failure, which re-queues it (never an agent failure).
#[derive(Args, Debug, Clone)]
pub struct LlmRetryArgs {
    /// Attempts per model call, the first included (429, 5xx, timeouts, refused connections
    /// and malformed bodies are retried).
    #[arg(long, env = "STEER_LLM_ATTEMPTS", default_value_t = 6)]
    pub llm_attempts: u32,
    /// Limit of one model call attempt, from sending to the end of the answer.
    #[arg(long, env = "STEER_LLM_TIMEOUT", default_value = "600s", value_parser = parse_duration)]
    pub llm_timeout: Duration,
    /// Longest wait between two attempts (exponential backoff from 1 s, `Retry-After` honoured
    /// up to twice this).
    #[arg(long, env = "STEER_LLM_MAX_BACKOFF", default_value = "60s", value_parser = parse_duration)]
    pub llm_max_backoff: Duration,
}

impl LlmRetryArgs {
    pub fn policy(&self) -> worker::llm::RetryPolicy {
        let defaults = worker::llm::RetryPolicy::default();
        worker::llm::RetryPolicy {
            attempts: self.llm_attempts.max(1),
            min_delay: defaults.min_delay.min(self.llm_max_backoff),
            max_delay: self.llm_max_backoff,
            max_retry_after: self.llm_max_backoff.saturating_mul(2),
            connect_timeout: defaults.connect_timeout.min(self.llm_timeout),
            request_timeout: self.llm_timeout,
        }
    }
}

/// Credentials for pulling instance images from a private registry.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Registry for image pulls that need credentials, e.g. ghcr.io (Docker Hub if unset).
    #[arg(long, env = "STEER_REGISTRY")]
    pub registry: Option<String>,
    /// User name for pulls from the registry.
    #[arg(long, env = "STEER_REGISTRY_USERNAME")]
    pub registry_username: Option<String>,
    /// Password or access token for pulls (from the environment; never logged).
    #[arg(long, env = "STEER_REGISTRY_PASSWORD", hide_env_values = true)]
    pub registry_password: Option<String>,
}

impl RegistryArgs {
    /// Pull credentials, when a user name or password is configured.
    pub fn auth(&self) -> Option<worker::sandbox::RegistryAuth> {
        if self.registry_username.is_none() && self.registry_password.is_none() {
            return None;
        }
        Some(worker::sandbox::RegistryAuth {
            username: self.registry_username.clone(),
            password: self.registry_password.clone(),
            identity_token: None,
            server_address: self.registry.clone(),
        })
    }
}

impl WorkerFlags {
    pub fn config(
        &self,
        coordinator_url: &str,
        token: &str,
        kinds: &[protocol::ExecutorKind],
    ) -> worker::WorkerConfig {
        worker::WorkerConfig {
            coordinator_url: coordinator_url.to_string(),
            token: token.to_string(),
            name: self.worker_name(),
            slots: self.slots,
            claim_wait: self.claim_wait,
            drain_timeout: self.drain_timeout,
            capabilities: protocol::Capabilities::executors(kinds.to_vec()),
        }
    }

    /// Loads the `--critic-model` directories (each once per process, shared by all runs).
    pub fn preload_critic_models(&self) -> anyhow::Result<()> {
        worker::critic::local::set_options(worker::critic::onnx::OnnxOptions {
            intra_threads: self.critic_threads,
            ..Default::default()
        });
        for dir in &self.critic_models {
            let model = worker::critic::local::model(dir).map_err(anyhow::Error::msg)?;
            eprintln!("critic model {} loaded on {}", dir.display(), model.device());
        }
        Ok(())
    }

    fn worker_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| worker::WorkerConfig::default().name)
    }

    /// The worker's executors: `evaluate` too when the Docker engine answers. Removes the
    /// containers an earlier incarnation of this worker (same name) left behind.
    pub async fn executors(&self) -> worker::Dispatcher {
        if self.no_docker {
            return worker::Dispatcher::new(None);
        }
        let name = self.worker_name();
        match worker::sandbox::Docker::connect_to(&self.docker_host).await {
            Ok(docker) => {
                let docker = docker.with_pull_policy(worker::sandbox::PullPolicy {
                    attempts: self.pull_attempts as usize,
                    ..Default::default()
                });
                match docker.reap(("steerbench.worker", &name)).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::warn!(removed = n, worker = %name, "removed containers an earlier run of this worker left")
                    }
                    Err(e) => tracing::warn!(error = %e, "could not reap old containers"),
                }
                // Without a budget the cache never evicts; it still tells the coordinator which
                // images this worker holds (image-locality scheduling).
                let budget = self.image_budget_gb.map_or(u64::MAX, |gb| gb.saturating_mul(1 << 30));
                let cache =
                    worker::sandbox::ImageCache::new(docker.clone(), budget).with_auth(self.registry.auth());
                let evaluate = worker::evaluate::EvaluateExecutor::new(docker, &name).with_image_cache(cache);
                worker::Dispatcher::new(Some(evaluate)).with_llm_retry(self.llm.policy())
            }
            Err(e) => {
                tracing::warn!(error = %e, "no Docker engine: this worker takes placeholder runs only");
                worker::Dispatcher::new(None)
            }
        }
    }
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    if args.worker.slots == 0 {
        anyhow::bail!("--slots must be at least 1");
    }
    if args.token.trim().is_empty() {
        anyhow::bail!("STEER_TOKEN (or --token) is empty: create a worker token with `steer token create --role worker --name NAME`");
    }
    let drain = shutdown_on_signals();
    if let Some(bind) = args.metrics_bind {
        serve_worker_metrics(bind).await?;
    }
    args.worker.preload_critic_models()?;
    let executors = args.worker.executors().await;
    let config = args.worker.config(&args.coordinator, &args.token, &executors.kinds());
    worker::run(config, Arc::new(executors), drain).await?;
    Ok(ExitCode::SUCCESS)
}
