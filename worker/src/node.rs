//! A worker assembled from its settings: the one place that turns a worker's configuration into
//! a running daemon. It loads the critic models it was told to preload, connects to Docker
//! (reaping what an earlier incarnation left), builds its executors, binds its metrics endpoint,
//! then runs the lease loop until drained. `steer worker` and `steer up` only fill [`Settings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Dispatcher;
use crate::evaluate::EvaluateExecutor;
use crate::llm::{Keyring, RetryPolicy};
use crate::sandbox::{Docker, ImageCache, PullPolicy, RegistryAuth};
use crate::{critic, daemon, metrics, WorkerConfig};
use protocol::redact::Redactor;

/// Everything a worker is configured with (filled from flags and `STEER_*` variables by the
/// binary; this crate reads no environment).
#[derive(Debug, Clone)]
pub struct Settings {
    pub coordinator_url: String,
    /// A `worker` token (never logged).
    pub token: String,
    /// Name shown for this worker; the host name when unset.
    pub name: Option<String>,
    /// Runs executed at once (at least 1).
    pub slots: u32,
    /// Long-poll length of each claim.
    pub claim_wait: Duration,
    /// On drain, how long runs may finish before they are handed back.
    pub drain_timeout: Duration,
    /// Critic model directories loaded at start, so a missing ONNX Runtime library or a bad
    /// model stops the worker at once instead of failing its runs.
    pub critic_models: Vec<PathBuf>,
    /// Intra-op threads of each local critic model (0: ONNX Runtime's default).
    pub critic_threads: usize,
    /// The sandbox engine; `None`: placeholder runs only.
    pub docker: Option<DockerSettings>,
    /// How model calls are retried.
    pub llm_retry: RetryPolicy,
    /// Serve this worker's Prometheus metrics at `http://ADDR/metrics`.
    pub metrics_bind: Option<SocketAddr>,
    /// When set, that endpoint answers only `Authorization: Bearer <metrics_token>` (401
    /// otherwise).
    pub metrics_token: Option<String>,
    /// The model API keys sweeps may have this worker use: the allowed variables' values
    /// (`--allow-key-env`). The worker advertises the allow-list, so it is handed only runs
    /// whose `api_key_env` it allows.
    pub keys: Keyring,
    /// The Slurm job this worker runs in, shown in the coordinator's list of workers.
    pub slurm: Option<protocol::SlurmJob>,
}

/// How the worker reaches Docker and keeps instance images.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// `unix:///path` or `tcp://host:port`.
    pub host: String,
    /// Disk budget for kept instance images, in bytes; `None`: kept without limit.
    pub image_budget_bytes: Option<u64>,
    /// Attempts at pulling a missing image (1 fails at once).
    pub pull_attempts: u32,
    /// Credentials for pulls from a private registry.
    pub registry: Option<RegistryAuth>,
    /// Fail at start when the engine does not answer (`steer worker`); otherwise the worker
    /// runs placeholder runs only and says so (`steer up`, which serves placeholder sweeps
    /// on machines without Docker).
    pub required: bool,
    /// How often the engine is asked whether it still answers (a worker whose engine stops
    /// answering is handed placeholder runs only until it answers again).
    pub engine_check_every: Duration,
}

/// A worker ready to run: its executors built, its metrics endpoint bound.
pub struct Worker {
    config: WorkerConfig,
    /// Every secret the worker holds, scrubbed from what it sends and logs.
    redactor: Arc<Redactor>,
    executors: Arc<Dispatcher>,
    /// The metrics endpoint's listener and its token, if any.
    metrics: Option<(TcpListener, Option<String>)>,
}

impl Worker {
    /// Checks the settings and builds the worker. Fails on settings that cannot work (no slots,
    /// an empty token, a critic model that does not load, a metrics address already taken); a
    /// Docker engine that does not answer only narrows the worker to placeholder runs.
    pub async fn build(settings: Settings) -> anyhow::Result<Worker> {
        if settings.slots == 0 {
            anyhow::bail!("--slots must be at least 1");
        }
        if settings.token.trim().is_empty() {
            anyhow::bail!("STEER_TOKEN (or --token) is empty: create a worker token with `steer token create --role worker --name NAME`");
        }
        preload_critic_models(&settings.critic_models, settings.critic_threads)?;
        let name = settings.name.clone().unwrap_or_else(|| WorkerConfig::default().name);
        let redactor = Arc::new(redactor_of(&settings));
        let executors = match &settings.docker {
            Some(docker) => executors(docker, &name).await?,
            None => Dispatcher::new(None),
        }
        .with_llm_retry(settings.llm_retry.clone())
        .with_keyring(Arc::new(settings.keys));
        let metrics = match settings.metrics_bind {
            Some(bind) => Some((
                TcpListener::bind(bind)
                    .await
                    .with_context(|| format!("binding the metrics endpoint to {bind}"))?,
                settings.metrics_token.clone(),
            )),
            None => None,
        };
        let config = WorkerConfig {
            coordinator_url: settings.coordinator_url,
            token: settings.token,
            name,
            slots: settings.slots,
            claim_wait: settings.claim_wait,
            drain_timeout: settings.drain_timeout,
            capabilities: protocol::Capabilities { slurm: settings.slurm, ..executors.capabilities() },
            redactor: redactor.clone(),
        };
        Ok(Worker { config, redactor, executors: Arc::new(executors), metrics })
    }

    /// Every secret this worker holds (its token, metrics token, registry password and model
    /// keys): whoever prints what the worker says (its log) scrubs them with this.
    pub fn redactor(&self) -> Arc<Redactor> {
        self.redactor.clone()
    }

    /// The executor kinds this worker registers (`evaluate` and `agent` need Docker).
    pub fn executor_kinds(&self) -> Vec<protocol::ExecutorKind> {
        self.executors.kinds()
    }

    /// Runs the lease loop until `drain` fires and every run is finished or handed back; the
    /// metrics endpoint is served for as long.
    pub async fn run(self, drain: CancellationToken) -> anyhow::Result<()> {
        let stop_metrics = CancellationToken::new();
        let metrics_task = self
            .metrics
            .map(|(listener, token)| tokio::spawn(serve_metrics(listener, token, stop_metrics.clone())));
        let result = daemon::run(self.config, self.executors, drain).await;
        stop_metrics.cancel();
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        result
    }
}

/// The secrets in `settings`, to scrub from everything the worker sends and logs.
fn redactor_of(settings: &Settings) -> Redactor {
    let registry = settings.docker.as_ref().and_then(|d| d.registry.as_ref());
    let secrets = [Some(settings.token.as_str()), settings.metrics_token.as_deref()]
        .into_iter()
        .chain([
            registry.and_then(|r| r.password.as_deref()),
            registry.and_then(|r| r.identity_token.as_deref()),
        ])
        .flatten()
        .chain(settings.keys.values());
    Redactor::new(secrets)
}

/// Loads each critic model directory once per process (shared by all runs).
fn preload_critic_models(dirs: &[PathBuf], threads: usize) -> anyhow::Result<()> {
    critic::local::set_options(critic::onnx::OnnxOptions { intra_threads: threads, ..Default::default() });
    for dir in dirs {
        let model = critic::local::model(dir).map_err(anyhow::Error::msg)?;
        eprintln!("critic model {} loaded on {}", dir.display(), model.device());
    }
    Ok(())
}

/// The worker's executors: `evaluate` and `agent` too when the Docker engine answers. Removes
/// the containers an earlier incarnation of this worker (same name) left behind.
async fn executors(settings: &DockerSettings, name: &str) -> anyhow::Result<Dispatcher> {
    let docker = match Docker::connect_to(&settings.host).await {
        Ok(docker) => docker,
        Err(e) if settings.required => anyhow::bail!(
            "cannot reach the Docker engine at {}: {e}. Start Docker, point --docker-host (DOCKER_HOST) at \
             its socket, or pass --no-docker for a worker that takes placeholder runs only",
            settings.host
        ),
        Err(e) => {
            tracing::warn!(error = %e, "no Docker engine: this worker takes placeholder runs only");
            return Ok(Dispatcher::new(None));
        }
    };
    let docker = docker
        .with_pull_policy(PullPolicy { attempts: settings.pull_attempts as usize, ..Default::default() });
    match docker.reap(("steerbench.worker", name)).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::warn!(removed = n, worker = %name, "removed containers an earlier run of this worker left")
        }
        Err(e) => tracing::warn!(error = %e, "could not reap old containers"),
    }
    // Without a budget the cache never evicts; it still tells the coordinator which images this
    // worker holds (image-locality scheduling).
    let cache = ImageCache::new(docker.clone(), settings.image_budget_bytes.unwrap_or(u64::MAX))
        .with_auth(settings.registry.clone());
    let watch = crate::engine_watch::EngineWatch::spawn(
        docker.clone(),
        settings.host.clone(),
        settings.engine_check_every,
    );
    Ok(Dispatcher::new(Some(EvaluateExecutor::new(docker, name).with_image_cache(cache)))
        .with_engine_watch(watch))
}

/// Serves `/metrics` on `listener` until `stop`; with `token`, only to requests bearing it.
async fn serve_metrics(listener: TcpListener, token: Option<String>, stop: CancellationToken) {
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| async move {
            if let Some(token) = &token {
                let presented = headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok());
                if !protocol::bearer_matches(presented, token) {
                    let refusal = "/metrics needs `Authorization: Bearer <metrics token>`\n";
                    return (StatusCode::UNAUTHORIZED, refusal).into_response();
                }
            }
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics::METRICS.render())
                .into_response()
        }),
    );
    if let Ok(bind) = listener.local_addr() {
        tracing::info!(%bind, "worker metrics at /metrics");
    }
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
        tracing::error!(error = %e, "the worker's metrics endpoint stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers `GET /metrics` with `authorization` from an endpoint served with `token`.
    async fn get_metrics(token: Option<&str>, authorization: Option<&str>) -> (u16, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_metrics(listener, token.map(str::to_string), stop.clone()));
        let mut req = reqwest::Client::new().get(format!("http://{addr}/metrics"));
        if let Some(value) = authorization {
            req = req.header("authorization", value);
        }
        let resp = req.send().await.unwrap();
        let answer = (resp.status().as_u16(), resp.text().await.unwrap());
        stop.cancel();
        server.await.unwrap();
        answer
    }

    #[tokio::test]
    async fn worker_metrics_need_the_metrics_token_when_one_is_set() {
        for refused in [None, Some("Bearer nope"), Some("w-secret")] {
            let (status, body) = get_metrics(Some("w-secret"), refused).await;
            assert_eq!(status, 401, "{refused:?}: {body}");
            assert!(!body.contains("steer_worker"), "{body}");
        }
        let (status, body) = get_metrics(Some("w-secret"), Some("Bearer w-secret")).await;
        assert_eq!(status, 200);
        assert!(body.contains("steer_worker_runs_active"), "{body}");
        // Unset: open, as before.
        assert_eq!(get_metrics(None, None).await.0, 200);
    }
}
