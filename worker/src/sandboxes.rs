//! Where a worker's runs get their containers: a fresh sandbox from the run's instance image,
//! the image taken through the worker's image cache, the container labelled with the run and
//! this worker and limited as the sweep says. Grading and the agent executor both open theirs
//! here.

use protocol::ClaimedRun;

use crate::executor::ExecError;
use crate::images::image_for;
use crate::sandbox::{Docker, ImageCache, ImageGuard, Sandbox, SandboxSpec};

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
