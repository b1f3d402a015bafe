//! The handle on the Docker engine: connecting, images (pull with retries), the reaper, and the
//! task tracker that owns removals started by dropped sandboxes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use bollard::auth::DockerCredentials;
use bollard::errors::Error as ApiError;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{Error, RegistryAuth};

/// The engine's socket when `DOCKER_HOST` is unset.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Bound on every API request until the engine answers with headers (bollard's "timeout").
/// Streams (exec output, pulls) are not bounded by it; their own deadlines apply. Generous
/// because a busy engine answers slowly (the SWE-bench harness raised its 60 s to 1800 s).
const API_TIMEOUT: Duration = Duration::from_secs(300);

/// How image pulls are retried.
#[derive(Debug, Clone)]
pub struct PullPolicy {
    /// Attempts in total (at least 1).
    pub attempts: usize,
    /// Delay before the first retry; doubles each time (with jitter) up to `max_delay`.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// An attempt is abandoned when the engine reports no progress for this long.
    pub stall_timeout: Duration,
}

impl Default for PullPolicy {
    /// 5 attempts, 2 s doubling to 60 s between them, 120 s without progress aborts an attempt.
    fn default() -> Self {
        PullPolicy {
            attempts: 5,
            min_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(120),
        }
    }
}

/// A cheap, cloneable handle on one Docker engine. Clones share the connection pool and the
/// tracker of background removals.
#[derive(Clone)]
pub struct Docker {
    pub(crate) api: bollard::Docker,
    host: Arc<str>,
    pull: PullPolicy,
    /// Background tasks: creations (so that a cancelled `create` cannot leak a container) and
    /// removals of sandboxes dropped without [`super::Sandbox::remove`].
    pub(crate) background: TaskTracker,
    /// Pulls under way: image -> a one-line summary of their progress (the worker's status).
    pulls: Arc<std::sync::Mutex<BTreeMap<String, String>>>,
    /// Whether the engine takes the storage driver's `size` option (learnt on first refusal).
    pub(crate) disk_cap: DiskCap,
    /// Which engine answers on the socket.
    engine: Engine,
}

/// The engine behind the Docker-compatible API. Podman answers the same API with its own
/// defaults, which the sandbox must correct (see `container_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

impl Engine {
    /// An image name as Docker shows it. Podman lists fully qualified names: images pulled
    /// from Docker Hub under `docker.io/` (`docker.io/library/` for official ones), images
    /// built or loaded locally under `localhost/`. The coordinator names images as Docker
    /// does, so a worker reports them that way.
    pub fn familiar_name<'a>(&self, name: &'a str) -> &'a str {
        match self {
            Engine::Docker => name,
            Engine::Podman => ["docker.io/library/", "docker.io/", "localhost/"]
                .iter()
                .find_map(|prefix| name.strip_prefix(prefix))
                .unwrap_or(name),
        }
    }

    /// From `GET /version`: Podman names a component "Podman Engine".
    fn of(version: &bollard::models::SystemVersion) -> Engine {
        let podman = version.components.iter().flatten().any(|c| c.name.starts_with("Podman"));
        if podman {
            Engine::Podman
        } else {
            Engine::Docker
        }
    }
}

/// Whether the engine caps a container's disk (`--storage-opt size=`): assumed until the
/// engine first refuses it, which is logged once; later sandboxes are created without it.
#[derive(Debug, Clone, Default)]
pub(crate) struct DiskCap(Arc<std::sync::atomic::AtomicBool>);

impl DiskCap {
    pub fn supported(&self) -> bool {
        !self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn unsupported(&self, refusal: &str) {
        if !self.0.swap(true, std::sync::atomic::Ordering::Relaxed) {
            warn!(
                refusal,
                "the Docker engine's storage driver cannot cap a container's disk (only overlay2 on xfs \
                 with pquota, btrfs and zfs can); sandboxes' disk writes are not capped"
            );
        }
    }
}

/// The engine refused the storage driver's `size` option (`--storage-opt is not supported`,
/// `--storage-opt is supported only for overlay over xfs with 'pquota' mount option`).
pub(crate) fn is_storage_opt_refusal(e: &ApiError) -> bool {
    matches!(status(e), Some(400 | 500)) && e.to_string().contains("storage-opt")
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docker").field("host", &self.host).finish_non_exhaustive()
    }
}

impl Docker {
    /// Connects to the engine named by `DOCKER_HOST` (as the docker CLI does), else to the
    /// local socket `/var/run/docker.sock`. Prefer [`Docker::connect_to`] with a host from the
    /// worker's configuration.
    pub async fn connect() -> Result<Docker, Error> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_HOST.to_string());
        Self::connect_to(&host).await
    }

    /// Connects to `host` (`unix:///path`, `tcp://host:port` or `http://host:port`), checks that
    /// the engine answers, and settles on the highest API version both sides speak.
    pub async fn connect_to(host: &str) -> Result<Docker, Error> {
        let unreachable = |reason: String| Error::EngineUnreachable { host: host.to_string(), reason };
        let api = bollard::Docker::connect_with_host(host)
            .map_err(|e| unreachable(e.to_string()))?
            .with_timeout(API_TIMEOUT);
        // GET /version; downgrades the client's API version to the engine's if that is older
        // (bollard 0.21 speaks 1.53 by default; Engine 20.10 speaks 1.41).
        let api = api.negotiate_version().await.map_err(|e| unreachable(e.to_string()))?;
        let engine = Engine::of(&api.version().await.map_err(|e| unreachable(e.to_string()))?);
        debug!(host, api_version = %api.client_version(), ?engine, "connected to the container engine");
        Ok(Docker {
            api,
            host: host.into(),
            pull: PullPolicy::default(),
            background: TaskTracker::new(),
            pulls: Default::default(),
            disk_cap: DiskCap::default(),
            engine,
        })
    }

    /// Which engine answers (Docker or Podman).
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The same handle with another pull retry policy.
    pub fn with_pull_policy(mut self, policy: PullPolicy) -> Docker {
        self.pull = policy;
        self
    }

    /// The engine's address, as given to [`Docker::connect_to`].
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the image is present locally.
    pub async fn image_present(&self, image: &str) -> Result<bool, Error> {
        match self.api.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(api_error("inspect image", e)),
        }
    }

    /// Whether the engine answers (`GET /_ping`).
    pub async fn ping(&self) -> Result<(), Error> {
        self.api
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| Error::Docker { operation: "ping", source: Box::new(e) })
    }

    /// Makes sure the image is present: nothing to do if it is, else pulls it, retrying
    /// transient failures with exponential backoff (see [`PullPolicy`]); progress goes to the
    /// logs. [`Error::ImageUnavailable`] when it cannot be had.
    pub async fn ensure_image(&self, image: &str, auth: Option<RegistryAuth>) -> Result<(), Error> {
        if self.image_present(image).await? {
            crate::metrics::METRICS.image("hit");
            return Ok(());
        }
        // Credentials only for their own registry: never sent to one a sweep names.
        let credentials = auth.filter(|a| a.applies_to(image)).map(|a| DockerCredentials {
            username: a.username,
            password: a.password,
            identitytoken: a.identity_token,
            serveraddress: a.server_address,
            ..Default::default()
        });
        let policy = &self.pull;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.attempts.max(1) - 1)
            .with_jitter();
        let started = Instant::now();
        info!(image, "pulling image");
        // Cleared when this future ends however it ends: a pull dropped mid-way (its run
        // cancelled, its lease lost, the worker draining) must not stay "pulling" in the status.
        let _status = PullStatus::starting(self, image);
        let pulled = (|| self.pull_once(image, credentials.clone()))
            .retry(backoff)
            .when(|e: &PullFailure| e.retryable)
            .notify(|e: &PullFailure, delay: Duration| {
                warn!(image, error = %e.reason, retry_in = ?delay, "image pull failed; retrying");
            })
            .await;
        drop(_status);
        crate::metrics::METRICS.image(if pulled.is_ok() { "pulled" } else { "failed" });
        pulled.map_err(|e| Error::ImageUnavailable { image: image.to_string(), reason: e.reason })?;
        if !self.image_present(image).await? {
            return Err(Error::ImageUnavailable {
                image: image.to_string(),
                reason: "the pull succeeded but the image is not present".into(),
            });
        }
        info!(image, elapsed_s = started.elapsed().as_secs_f64(), "image pulled");
        Ok(())
    }

    async fn pull_once(
        &self,
        image: &str,
        credentials: Option<DockerCredentials>,
    ) -> Result<(), PullFailure> {
        let (name, tag) = split_reference(image);
        // An empty tag would make the engine pull every tag of the repository.
        let options = CreateImageOptionsBuilder::new().from_image(name).tag(tag).build();
        let mut stream = self.api.create_image(Some(options), None, credentials);
        let mut progress = PullProgress::default();
        loop {
            let item = match tokio::time::timeout(self.pull.stall_timeout, stream.next()).await {
                Err(_) => {
                    return Err(PullFailure {
                        retryable: true,
                        reason: format!("no progress for {:?}", self.pull.stall_timeout),
                    })
                }
                Ok(None) => return Ok(()),
                Ok(Some(item)) => item,
            };
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail {
                        let reason = detail.message.unwrap_or_else(|| "unknown pull error".into());
                        return Err(PullFailure::classify(reason));
                    }
                    if let Some(summary) = progress.update(image, &info) {
                        self.set_pull(image, Some(summary));
                    }
                }
                Err(e) => {
                    let code = status(&e);
                    let failure = PullFailure::classify(e.to_string());
                    // 401/403/404 from the engine: the reference or the credentials are wrong.
                    let permanent = matches!(code, Some(400 | 401 | 403 | 404));
                    return Err(PullFailure { retryable: failure.retryable && !permanent, ..failure });
                }
            }
        }
    }

    fn set_pull(&self, image: &str, summary: Option<String>) {
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        match summary {
            Some(s) => pulls.insert(image.to_string(), s),
            None => pulls.remove(image),
        };
        crate::metrics::METRICS.pulls_in_progress.set(pulls.len() as i64);
    }

    /// Pulls under way, one line each (`pulling <image>: <progress>`), for the worker's status.
    pub fn pulls_in_progress(&self) -> Vec<String> {
        let pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        pulls.iter().map(|(image, p)| format!("pulling {image}: {p}")).collect()
    }

    /// Removes (with force) every container carrying the label `key=value`, e.g.
    /// `("steerbench.worker", "<id>")` at a worker's start to clear what an earlier incarnation
    /// left behind. Returns how many were removed.
    pub async fn reap(&self, label_selector: (&str, &str)) -> Result<usize, Error> {
        let (key, value) = label_selector;
        let filters = HashMap::from([("label", vec![format!("{key}={value}")])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let containers =
            self.api.list_containers(Some(options)).await.map_err(|e| api_error("list containers", e))?;
        let mut removed = 0;
        for container in containers {
            let Some(id) = container.id else { continue };
            if self.remove_container(&id).await? {
                info!(container = %id, names = ?container.names, label = %format!("{key}={value}"), "reaped container");
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Waits for the removals started by sandboxes dropped without `remove()` (and for
    /// creations whose caller went away, which remove what they created). For shutdown and
    /// tests; call it from one place at a time.
    pub async fn wait_for_removals(&self) {
        self.background.close();
        self.background.wait().await;
        self.background.reopen();
    }

    /// Force-removes a container and its anonymous volumes, retrying transient failures.
    /// `Ok(false)` if it was already gone (or another removal of it is under way).
    pub(crate) async fn remove_container(&self, id: &str) -> Result<bool, Error> {
        let attempt = || async {
            let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
            match self.api.remove_container(id, Some(options)).await {
                Ok(()) => Ok(true),
                Err(e) if status(&e) == Some(404) => Ok(false),
                Err(e) if status(&e) == Some(409) && e.to_string().contains("already in progress") => {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        };
        attempt
            .retry(ExponentialBuilder::default().with_min_delay(Duration::from_millis(200)).with_max_times(3))
            .notify(|e: &ApiError, delay: Duration| {
                warn!(container = id, error = %e, retry_in = ?delay, "container removal failed; retrying");
            })
            .await
            .map_err(|e| api_error("remove container", e))
    }
}

/// An image's entry in the pulls under way, removed when dropped: the pull finished, failed or
/// was cancelled (its future dropped), the status no longer says it is pulling.
struct PullStatus<'a> {
    docker: &'a Docker,
    image: &'a str,
}

impl<'a> PullStatus<'a> {
    fn starting(docker: &'a Docker, image: &'a str) -> Self {
        docker.set_pull(image, Some("starting".into()));
        PullStatus { docker, image }
    }
}

impl Drop for PullStatus<'_> {
    fn drop(&mut self) {
        self.docker.set_pull(self.image, None);
    }
}

/// Splits `name[:tag]` or `name@digest` into the engine's `fromImage` and `tag` parameters,
/// defaulting the tag to `latest` as the docker CLI does.
pub(crate) fn split_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

/// Why one pull attempt failed, and whether another could succeed.
#[derive(Debug)]
struct PullFailure {
    retryable: bool,
    reason: String,
}

impl PullFailure {
    /// Registry answers that will not change on retry (no such repository or tag, access
    /// denied, bad reference) are permanent; anything else (network, 5xx, rate limits) is not.
    fn classify(reason: String) -> PullFailure {
        let lower = reason.to_lowercase();
        let rate_limited = lower.contains("toomanyrequests") || lower.contains("rate limit");
        let permanent = [
            "not found",
            "manifest unknown",
            "repository does not exist",
            "pull access denied",
            "unauthorized",
            "invalid reference format",
        ]
        .iter()
        .any(|p| lower.contains(p));
        PullFailure { retryable: rate_limited || !permanent, reason }
    }
}

/// Per-layer progress of a pull, logged every few seconds rather than per message.
#[derive(Default)]
struct PullProgress {
    layers: HashMap<String, (i64, i64, bool)>,
    last_log: Option<Instant>,
}

impl PullProgress {
    /// Takes one progress message; returns a one-line summary of the pull so far.
    fn update(&mut self, image: &str, info: &bollard::models::CreateImageInfo) -> Option<String> {
        let (Some(id), Some(status)) = (&info.id, &info.status) else {
            if let Some(status) = &info.status {
                debug!(image, status, "pull");
            }
            return None;
        };
        let layer = self.layers.entry(id.clone()).or_default();
        match status.as_str() {
            "Pull complete" | "Already exists" => layer.2 = true,
            "Downloading" => {
                if let Some(d) = &info.progress_detail {
                    layer.0 = d.current.unwrap_or(layer.0);
                    layer.1 = d.total.unwrap_or(layer.1);
                }
            }
            _ => {}
        }
        let done = self.layers.values().filter(|l| l.2).count();
        let downloaded: i64 = self.layers.values().map(|l| if l.2 { l.1.max(l.0) } else { l.0 }).sum();
        let total: i64 = self.layers.values().map(|l| l.1).sum();
        let summary = format!(
            "{done} of {} layers done, {} of {} MB downloaded",
            self.layers.len(),
            downloaded / 1_000_000,
            total / 1_000_000
        );
        if self.last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            self.last_log = Some(Instant::now());
            info!(
                image,
                layers_done = done,
                layers = self.layers.len(),
                downloaded_mb = downloaded / 1_000_000,
                known_total_mb = total / 1_000_000,
                "pull progress"
            );
        }
        Some(summary)
    }
}

/// The HTTP status of an engine error response, if it was one.
pub(crate) fn status(e: &ApiError) -> Option<u16> {
    match e {
        ApiError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

pub(crate) fn api_error(operation: &'static str, e: ApiError) -> Error {
    Error::Docker { operation, source: Box::new(e) }
}

/// Maps an error of a call on a container: a missing or stopped container is
/// [`Error::ContainerGone`], anything else [`Error::Docker`].
pub(crate) fn container_error(operation: &'static str, container: &str, e: ApiError) -> Error {
    let message = e.to_string();
    let gone = match status(&e) {
        Some(404) => true,
        Some(409) => ["not running", "is paused", "removal", "is restarting", "marked for removal"]
            .iter()
            .any(|p| message.contains(p)),
        _ => false,
    };
    if gone {
        Error::ContainerGone { container: container.to_string(), reason: message }
    } else {
        api_error(operation, e)
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn references_split_into_name_and_tag() {
        assert_eq!(split_reference("ubuntu"), ("ubuntu", "latest"));
        assert_eq!(split_reference("ubuntu:22.04"), ("ubuntu", "22.04"));
        assert_eq!(
            split_reference("swebench/sweb.eval.x86_64.django_1776_django-11099:latest"),
            ("swebench/sweb.eval.x86_64.django_1776_django-11099", "latest")
        );
        assert_eq!(split_reference("localhost:5000/a/b"), ("localhost:5000/a/b", "latest"));
        assert_eq!(split_reference("localhost:5000/a/b:v1"), ("localhost:5000/a/b", "v1"));
        assert_eq!(split_reference("ghcr.io/x/y@sha256:abc"), ("ghcr.io/x/y", "sha256:abc"));
    }

    #[test]
    fn pull_failures_are_classified() {
        let permanent = [
            "pull access denied for foo, repository does not exist or may require 'docker login'",
            "manifest for foo:bar not found: manifest unknown",
            "invalid reference format",
        ];
        for reason in permanent {
            assert!(!PullFailure::classify(reason.into()).retryable, "{reason}");
        }
        let transient = [
            "toomanyrequests: You have reached your pull rate limit",
            "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host",
            "received unexpected HTTP status: 503 Service Unavailable",
        ];
        for reason in transient {
            assert!(PullFailure::classify(reason.into()).retryable, "{reason}");
        }
    }
}

#[cfg(test)]
mod engine_tests {
    use super::*;

    #[test]
    fn podman_image_names_read_as_docker_shows_them() {
        let p = Engine::Podman;
        assert_eq!(p.familiar_name("docker.io/library/python:3.11"), "python:3.11");
        assert_eq!(p.familiar_name("docker.io/swebench/sweb.eval.x:latest"), "swebench/sweb.eval.x:latest");
        assert_eq!(
            p.familiar_name("localhost/steerbench/sweb.eval.y:latest"),
            "steerbench/sweb.eval.y:latest"
        );
        assert_eq!(p.familiar_name("ghcr.io/org/img:1"), "ghcr.io/org/img:1");
        assert_eq!(Engine::Docker.familiar_name("localhost/x:1"), "localhost/x:1");
    }
}
