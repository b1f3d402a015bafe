//! Where a worker's runs get their containers: a fresh sandbox from the run's instance image,
//! the image taken through the worker's image cache, the container labelled with the run and
//! this worker and limited as the sweep says. Grading and the agent executor both open theirs
//! here.

use protocol::ClaimedRun;

use crate::executor::ExecError;
use crate::images::image_for;
use crate::sandbox::{Docker, ImageCache, ImageGuard, Sandbox, SandboxSpec};

/// How long [`SandboxFactory::remove_leftovers`] waits for removals already under way before
/// removing by label.
const LEFTOVER_REMOVAL_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Clone)]
pub struct SandboxFactory {
    docker: Docker,
    /// Labels every container with the worker's name, so the reaper of a restarted worker
    /// finds what its previous incarnation left.
    worker_name: String,
    /// Keeps instance images between runs up to a budget; without it, images are only pulled
    /// when missing and never removed.
    image_cache: Option<ImageCache>,
}

impl SandboxFactory {
    pub fn new(docker: Docker, worker_name: &str) -> Self {
        SandboxFactory { docker, worker_name: worker_name.to_string(), image_cache: None }
    }

    /// The same factory taking its images through `cache` (shared with the worker's other
    /// users of it), which holds each run's image until the run ends.
    pub fn with_image_cache(mut self, cache: ImageCache) -> Self {
        self.image_cache = Some(cache);
        self
    }

    /// A new container from the run's instance image (taken through the image cache, whose
    /// guard keeps the image until dropped: drop it after the sandbox is removed), labelled
    /// with the run, its attempt and this worker, limited as the sweep says.
    pub async fn open(
        &self,
        run: &ClaimedRun,
        env: Vec<String>,
        workdir: &str,
    ) -> Result<(Sandbox, Option<ImageGuard>), ExecError> {
        let image = image_for(&run.instance, &run.sandbox);
        let guard = match &self.image_cache {
            Some(cache) => Some(cache.acquire(&image).await.map_err(ExecError::infra)?),
            None => {
                self.docker.ensure_image(&image, None).await.map_err(ExecError::infra)?;
                None
            }
        };
        let mut spec = self.spec(run, &image);
        spec.env = env;
        spec.workdir = workdir.to_string();
        let sandbox = self.docker.create(&spec).await.map_err(ExecError::infra)?;
        Ok((sandbox, guard))
    }

    /// Removes every container this worker's runs left: waits (for up to
    /// [`LEFTOVER_REMOVAL_WAIT`]) for the removals that sandboxes dropped with their runs (a
    /// lost lease, a cancelled sweep, the drain deadline) started in the background, then
    /// removes any container still labelled with this worker. Only once no run of this worker
    /// is in flight: it would remove a live run's sandbox too.
    pub async fn remove_leftovers(&self) {
        if tokio::time::timeout(LEFTOVER_REMOVAL_WAIT, self.docker.wait_for_removals()).await.is_err() {
            tracing::warn!(
                waited = ?LEFTOVER_REMOVAL_WAIT,
                "removals of dropped sandboxes still under way; removing this worker's containers by label"
            );
        }
        match self.docker.reap(("steerbench.worker", &self.worker_name)).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(removed = n, worker = %self.worker_name, "removed containers this worker's runs left")
            }
            Err(e) => tracing::warn!(
                error = %e,
                worker = %self.worker_name,
                "could not remove this worker's containers; the reaper removes them when it starts again"
            ),
        }
    }

    /// The images being pulled now, if any, as the worker's status.
    pub fn status(&self) -> Option<String> {
        let pulls = self.docker.pulls_in_progress();
        (!pulls.is_empty()).then(|| pulls.join("; "))
    }

    /// The instance images the cache holds (none without a cache).
    pub async fn held_images(&self) -> Vec<String> {
        match &self.image_cache {
            Some(cache) => cache.held().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not list the images this worker holds");
                Vec::new()
            }),
            None => Vec::new(),
        }
    }

    fn spec(&self, run: &ClaimedRun, image: &str) -> SandboxSpec {
        let mut spec = SandboxSpec::new(image);
        spec.network = run.sandbox.network;
        spec.cpus = run.sandbox.cpus;
        spec.memory_bytes = run.sandbox.memory_mb.map(crate::sandbox::mib);
        spec.pids_limit = run.sandbox.pids_limit;
        spec.disk_bytes = run.sandbox.disk_mb.map(crate::sandbox::mib);
        spec.labels.insert("steerbench.run".into(), run.run_id.to_string());
        spec.labels.insert("steerbench.attempt".into(), run.attempt.to_string());
        spec.labels.insert("steerbench.worker".into(), self.worker_name.clone());
        spec
    }
}
