//! Docker sandboxes: one container per run attempt, commands executed in it, files copied in
//! and out, and the final patch taken from it. The only module that imports `bollard`.
//!
//! - [`Docker`] is a cheap handle on the local engine: images ([`Docker::ensure_image`] pulls
//!   with retries), containers ([`Docker::create`]), and the reaper ([`Docker::reap`]) that
//!   removes containers left by an earlier incarnation of a worker.
//! - [`ImageCache`] keeps the instance images a worker has used up to a byte budget, evicting
//!   the least recently used idle ones; [`ImageCache::acquire`] is `ensure_image` plus a pin.
//! - [`Sandbox`] owns one started container and removes it when dropped (a removal task on the
//!   current Tokio runtime) or, preferably, when [`Sandbox::remove`] is awaited.
//! - Commands run either as one Docker API exec each ([`Sandbox::exec`]: `bash -c`, fresh state)
//!   or in a persistent bash ([`Sandbox::shell`]: cwd and environment carry over, about 100x
//!   cheaper per command). Both capture stdout and stderr interleaved under a head + tail
//!   budget, and both kill the command's processes *inside the container* when it times out.
//!
//! A command failing or timing out is data ([`ExecOutput`]), not an [`Error`]; errors are
//! infrastructure (engine unreachable, image missing, container gone).
//!
//! Containers run as root, unprivileged, with every capability dropped except the few that
//! test suites use (see [`CAPABILITIES`]), `no-new-privileges`, no network unless
//! asked, `docker-init` as PID 1 reaping orphans, and `sleep infinity` keeping them alive.
//! Every container carries the labels of its [`SandboxSpec`] plus `steerbench.sandbox=1`.

pub mod bench;
mod cache;
mod container;
mod docker;
mod exec;
mod files;
mod output;
mod shell;

#[cfg(test)]
mod tests;

use std::fmt;

pub use cache::{ImageCache, ImageGuard, INSTANCE_IMAGE_PATTERN};
pub use container::{mib, Sandbox, SandboxSpec, CAPABILITIES};
pub use docker::{Docker, Engine, PullPolicy};
pub use exec::{ExecLimits, ExecOutput};
pub use files::MAX_PATCH_BYTES;
pub use shell::Shell;

/// Boxed source of an [`Error`], so that no bollard type appears in this module's API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong in a sandbox, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Docker engine cannot be reached (or speaks no API version we know). Nothing on this
    /// worker can run: stop claiming work and report it.
    #[error("the Docker engine at {host} is unreachable: {reason}")]
    EngineUnreachable { host: String, reason: String },

    /// The image is not present and could not be pulled (after retries, if retrying made
    /// sense). The run cannot start on this worker: release it as an infrastructure failure.
    #[error("image {image} is unavailable: {reason}")]
    ImageUnavailable { image: String, reason: String },

    /// The sandbox's container no longer exists or is not running (removed, engine restarted,
    /// its PID 1 killed). Its state is lost: the attempt failed for infrastructure reasons.
    #[error("the sandbox container {container} is gone: {reason}")]
    ContainerGone { container: String, reason: String },

    /// A path inside the sandbox does not exist (or its parent could not be created).
    #[error("{path}: no such file or directory in the sandbox")]
    NotFound { path: String },

    /// A path inside the sandbox is not a regular file (a directory, a symlink, ...).
    #[error("{path} is not a regular file in the sandbox (it is a {kind})")]
    NotAFile { path: String, kind: String },

    /// A file is larger than the caller's limit; nothing was returned.
    #[error("{path} is larger than the limit of {max_bytes} bytes")]
    TooLarge { path: String, max_bytes: u64 },

    /// `git` failed while taking the diff (no repository at the workdir, git missing, ...).
    /// The output is git's, capped.
    #[error("git failed in the sandbox (exit code {exit_code:?}): {output}")]
    Git { exit_code: Option<i64>, output: String },

    /// The diff is not valid UTF-8 (a changed file in another encoding). The patch is kept
    /// byte for byte in `patch`; it cannot be stored as text without changing it.
    #[error("the diff is not valid UTF-8 (first invalid byte at offset {valid_up_to} of {} bytes)", patch.len())]
    PatchNotUtf8 { patch: Vec<u8>, valid_up_to: usize },

    /// Any other failure of a Docker API call (timeouts, server errors, a broken stream).
    /// Usually transient: release the run and let it be retried.
    #[error("Docker API call `{operation}` failed: {source}")]
    Docker {
        operation: &'static str,
        #[source]
        source: BoxError,
    },
}

/// Credentials for pulling from a private registry. `Debug` never prints secrets.
#[derive(Clone, Default)]
pub struct RegistryAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    /// An identity token (OAuth refresh token) instead of username and password.
    pub identity_token: Option<String>,
    /// The registry, e.g. `ghcr.io` (Docker Hub if unset).
    pub server_address: Option<String>,
}

/// Docker Hub, by the names its references and logins use.
const DOCKER_HUB: &str = "docker.io";

impl RegistryAuth {
    /// Whether these credentials are for the registry `image` is pulled from. Credentials go
    /// only to the registry they were configured for: an image a sweep names on another
    /// registry (an `image_overrides` entry, say) is pulled without them.
    pub fn applies_to(&self, image: &str) -> bool {
        let configured = self.server_address.as_deref().map_or(DOCKER_HUB.to_string(), normalise_registry);
        registry_of(image) == configured
    }
}

/// The registry host of an image reference, as Docker reads it: the first path component when
/// it names a host (has a `.` or `:`, or is `localhost`), Docker Hub otherwise.
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => normalise_registry(first),
        _ => DOCKER_HUB.to_string(),
    }
}

/// A registry address as configured (`https://index.docker.io/v1/`, `ghcr.io`,
/// `Registry.local:5000/`) in the form [`registry_of`] gives: the host and port, lower case,
/// Docker Hub's aliases folded into one.
fn normalise_registry(address: &str) -> String {
    let address = address.trim();
    let address = address.split_once("://").map_or(address, |(_, rest)| rest);
    let host = address.split('/').next().unwrap_or_default().to_ascii_lowercase();
    match host.as_str() {
        "" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB.to_string(),
        _ => host,
    }
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("identity_token", &redacted(&self.identity_token))
            .field("server_address", &self.server_address)
            .finish()
    }
}
