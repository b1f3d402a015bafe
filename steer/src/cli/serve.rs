//! `steer serve` and `steer worker`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, shutdown_on_signals, DatabaseArgs};
use orchestrator::db;
use orchestrator::server::{self, CoordinatorConfig, DeskConfig, EndpointCooldown, RequestLimits};

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
    /// Runs one sweep may expand into (instances x agents x critics x repeats); a larger sweep
    /// is refused at submit.
    #[arg(long, env = "STEER_MAX_RUNS_PER_SWEEP", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_runs_per_sweep: u64,
    /// Largest dataset or predictions upload, in MiB; a larger one is refused (413).
    #[arg(long, env = "STEER_MAX_UPLOAD_MIB", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_upload_mib: u32,
    /// Dataset and predictions uploads read at once; others wait their turn (up to a minute,
    /// then 503).
    #[arg(long, env = "STEER_UPLOADS_AT_ONCE", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub uploads_at_once: u32,
    /// Worker claims that may wait at once at this coordinator (they are served together, one
    /// database statement at a time); more are answered `overloaded` with a retry hint.
    #[arg(long, env = "STEER_MAX_WAITING_CLAIMS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_waiting_claims: u32,
    /// Serve /metrics only to `Authorization: Bearer <TOKEN>` (401 otherwise). Unset: open.
    #[arg(long, env = "STEER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
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
            limits: RequestLimits {
                max_runs_per_sweep: self.max_runs_per_sweep,
                max_upload_bytes: (self.max_upload_mib as usize).saturating_mul(1 << 20),
                uploads_at_once: self.uploads_at_once as usize,
            },
            metrics_token: self.metrics_token.clone(),
            desk: DeskConfig { max_waiting: self.max_waiting_claims as usize, ..DeskConfig::default() },
        }
    }
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let pool = db::connect(&args.db.database_url, args.coordinator.db_connections).await?;
    let shutdown = shutdown_on_signals(None);
    server::serve(pool, args.coordinator.config(args.bind), shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Coordinator base URL, e.g. http://10.0.0.5:8420 (HOST:PORT alone means http://HOST:PORT).
    #[arg(long, env = "STEER_COORDINATOR", default_value = "http://127.0.0.1:8420")]
    pub coordinator: String,
    /// A `worker` token (create one with `steer token create --role worker`).
    #[arg(long, env = "STEER_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Serve this worker's Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "STEER_METRICS_BIND")]
    pub metrics_bind: Option<std::net::SocketAddr>,
    /// Serve those metrics only to `Authorization: Bearer <TOKEN>` (401 otherwise). Unset: open.
    #[arg(long, env = "STEER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    #[command(flatten)]
    pub worker: WorkerFlags,
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
    /// Environment variables sweeps may have this worker read model API keys from (their
    /// `api_key_env`): names, or prefixes ending in `*` (repeatable, or comma-separated). The
    /// worker is handed only runs whose variables it allows; `STEER_*` (its own settings, its
    /// token among them) is never allowed. Default: none.
    #[arg(
        long = "allow-key-env",
        env = "STEER_ALLOW_KEY_ENV",
        value_delimiter = ',',
        value_name = "NAME|PREFIX*"
    )]
    pub allow_key_env: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub llm: LlmRetryArgs,
    #[command(flatten)]
    pub slurm: SlurmEnv,
}

/// The Slurm job a worker runs in, from the variables Slurm sets in a job's environment
/// (not meant to be given by hand).
#[derive(Args, Debug, Clone, Default)]
pub struct SlurmEnv {
    #[arg(long, env = "SLURM_JOB_ID", hide = true)]
    pub slurm_job_id: Option<String>,
    #[arg(long, env = "SLURM_ARRAY_JOB_ID", hide = true)]
    pub slurm_array_job_id: Option<String>,
    #[arg(long, env = "SLURM_ARRAY_TASK_ID", hide = true)]
    pub slurm_array_task_id: Option<String>,
}

impl SlurmEnv {
    pub fn job(&self) -> Option<protocol::SlurmJob> {
        Some(protocol::SlurmJob {
            job_id: self.slurm_job_id.clone()?,
            array_job_id: self.slurm_array_job_id.clone(),
            array_task_id: self.slurm_array_task_id.clone(),
        })
    }
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
    /// Limit of one model answer's body, in MiB. A longer answer is not read past the limit:
    /// the attempt fails as malformed and is retried; if every attempt does, the run ends as an
    /// infrastructure failure.
    #[arg(long, env = "STEER_LLM_MAX_REPLY_MIB", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub llm_max_reply_mib: u32,
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
            max_reply_bytes: (self.llm_max_reply_mib as usize).saturating_mul(1 << 20),
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

/// The process's environment variables that are valid text (others cannot be keys).
pub(crate) fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(var, value)| Some((var.into_string().ok()?, value.into_string().ok()?)))
}

impl WorkerFlags {
    /// The worker's settings, for a coordinator at `coordinator_url` and a worker token. Takes
    /// the allowed API key variables' values from the environment.
    pub fn settings(&self, coordinator_url: &str, token: &str) -> anyhow::Result<worker::node::Settings> {
        let allow = protocol::keys::KeyAllowList::new(&self.allow_key_env)
            .map_err(|e| anyhow::anyhow!("--allow-key-env (STEER_ALLOW_KEY_ENV): {e}"))?;
        Ok(worker::node::Settings {
            coordinator_url: coordinator_url.to_string(),
            token: token.to_string(),
            name: self.name.clone(),
            slots: self.slots,
            claim_wait: self.claim_wait,
            drain_timeout: self.drain_timeout,
            critic_models: self.critic_models.clone(),
            critic_threads: self.critic_threads,
            docker: (!self.no_docker).then(|| worker::node::DockerSettings {
                host: self.docker_host.clone(),
                image_budget_bytes: self.image_budget_gb.map(|gb| gb.saturating_mul(1 << 30)),
                pull_attempts: self.pull_attempts,
                registry: self.registry.auth(),
                required: true,
                engine_check_every: worker::engine_watch::CHECK_EVERY,
            }),
            llm_retry: self.llm.policy(),
            metrics_bind: None,
            metrics_token: None,
            keys: worker::llm::Keyring::capture(allow, process_env()),
            slurm: self.slurm.job(),
        })
    }
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    // SIGUSR1 too: what a Slurm job asks for (`--signal=B:USR1@MARGIN`) to be warned that its
    // time is nearly up.
    let drain = shutdown_on_signals(Some(tokio::signal::unix::SignalKind::user_defined1()));
    let settings = worker::node::Settings {
        metrics_bind: args.metrics_bind,
        metrics_token: args.metrics_token,
        ..args.worker.settings(&super::client::coordinator_url(&args.coordinator)?, &args.token)?
    };
    let worker = worker::node::Worker::build(settings).await?;
    super::log_scrub::hide(worker.redactor());
    worker.run(drain).await?;
    Ok(ExitCode::SUCCESS)
}
