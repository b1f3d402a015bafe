//! Creating a sandbox's container, and removing it: explicitly, or from `Drop` as a tracked
//! background task so that a panic or a cancelled future never leaks a container.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerCreateBody, HostConfig, ResourcesUlimits};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use rand::Rng;
use tokio::sync::oneshot;
use tracing::{info, warn, Instrument};

use super::docker::{api_error, container_error, is_storage_opt_refusal, status, Engine};
use super::{Docker, Error};

/// Label set on every sandbox container, whatever its spec says.
pub const SANDBOX_LABEL: (&str, &str) = ("steerbench.sandbox", "1");

/// The capabilities a sandbox keeps; every other one is dropped. Docker's default set minus
/// `NET_RAW`, `NET_BIND_SERVICE`, `MKNOD`, `SYS_CHROOT`, `SETPCAP`, `SETFCAP` and `AUDIT_WRITE`,
/// which test suites do not need and which widen what a process can do to the host's network
/// or devices. Kept, because repositories' setup and tests do these things as root:
/// - `CHOWN`: `chown` files, and tar/pip/conda extracting archives with their owners;
/// - `DAC_OVERRIDE`: root reading and writing files regardless of their mode (e.g. tests that
///   `chmod 000` a file and expect root to still open it, files copied in with odd modes);
/// - `FOWNER`: `chmod`/`utime`/`setxattr` on files root does not own (repos cloned under
///   another uid, files created by `nonroot` in SWE-bench images);
/// - `FSETID`: keep set-group-ID bits when root modifies files (permission tests);
/// - `SETUID`, `SETGID`: `su`/`runuser` and tests that drop privileges to another user (some
///   suites refuse to run as root), and `apt` switching to its `_apt` user;
/// - `KILL`: signal processes that run under another uid after such a switch.
///
/// The SWE-bench harness v5 adds `SYS_ADMIN` to every evaluation container; no Python task of
/// SWE-bench Verified needs it, and it is close to root on the host, so it is not kept.
pub const CAPABILITIES: &[&str] = &["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"];

/// `mb` MiB in bytes (saturating: a limit too large to count is no tighter than the largest).
pub fn mib(mb: u64) -> i64 {
    i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)
}

/// What to start: the image, limits, labels and environment of one sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    pub image: String,
    /// Working directory of the container and of every command (`/testbed` in SWE-bench images).
    pub workdir: String,
    /// `false` (the default): `network_mode: none`, only a loopback interface.
    pub network: bool,
    /// CPUs (fractional allowed), as `docker run --cpus`.
    pub cpus: Option<f64>,
    /// Memory limit in bytes; swap is not allowed beyond it.
    pub memory_bytes: Option<i64>,
    /// Maximum number of processes (fork bombs stop there).
    pub pids_limit: Option<i64>,
    /// Bytes the container may write: the storage driver's `size` option. Engines whose driver
    /// does not support it (only overlay2 on xfs with `pquota`, btrfs and zfs do) get no cap,
    /// and the handle logs that once.
    pub disk_bytes: Option<i64>,
    /// Labels, e.g. `steerbench.run`, `steerbench.attempt`, `steerbench.worker`; the
    /// container's name is made from the first two.
    pub labels: BTreeMap<String, String>,
    /// `KEY=value` environment of the container, inherited by every command. SWE-bench images
    /// activate their conda environment from `/root/.bashrc`: pass `BASH_ENV=/root/.bashrc` so
    /// that non-interactive bash (every exec and the shell) sources it.
    pub env: Vec<String>,
}

impl SandboxSpec {
    /// A spec with the defaults: workdir `/testbed`, no network, no labels, and the limits of
    /// [`protocol::SandboxSettings::default`] (4 GiB, 2 CPUs, 4,096 processes, 10 GiB of disk).
    pub fn new(image: impl Into<String>) -> SandboxSpec {
        SandboxSpec {
            image: image.into(),
            workdir: "/testbed".into(),
            network: false,
            cpus: Some(protocol::spec::DEFAULT_SANDBOX_CPUS),
            memory_bytes: Some(mib(protocol::spec::DEFAULT_SANDBOX_MEMORY_MB)),
            pids_limit: Some(protocol::spec::DEFAULT_SANDBOX_PIDS),
            disk_bytes: Some(mib(protocol::spec::DEFAULT_SANDBOX_DISK_MB)),
            labels: BTreeMap::new(),
            env: Vec::new(),
        }
    }

    /// Resource limits for a Podman container. Docker's containers inherit its daemon's
    /// limits; Podman sets its own defaults (1,048,576 open files and processes), which runc
    /// cannot apply where they exceed the limits of the processes starting it ("error setting
    /// rlimit type 7: operation not permitted"). So ask for what this host allows: open files
    /// up to this process's own hard limit, processes as many as `pids_limit` allows (or
    /// the default sandbox's 4,096).
    pub(crate) fn podman_rlimits(&self) -> Vec<ResourcesUlimits> {
        use nix::sys::resource::{getrlimit, Resource};
        let files = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(_, hard)| hard).min(1 << 20);
        let processes = self.pids_limit.filter(|&n| n > 0).unwrap_or(4096);
        let limit =
            |name: &str, n: i64| ResourcesUlimits { name: Some(name.into()), soft: Some(n), hard: Some(n) };
        vec![limit("nofile", files as i64), limit("nproc", processes)]
    }

    /// `steer-<run>-<attempt>-<random>` (or `steer-<random>` without those labels); only
    /// characters Docker accepts in names.
    fn container_name(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '-' })
                .take(40)
                .collect()
        };
        let suffix = format!("{:08x}", rand::thread_rng().gen::<u32>());
        match (self.labels.get("steerbench.run"), self.labels.get("steerbench.attempt")) {
            (Some(run), Some(attempt)) => format!("steer-{}-{}-{suffix}", clean(run), clean(attempt)),
            (Some(run), None) => format!("steer-{}-{suffix}", clean(run)),
            _ => format!("steer-{suffix}"),
        }
    }

    /// The container's configuration for `engine`; `disk_cap` says whether the engine takes
    /// the storage driver's `size` option.
    fn container_config(&self, engine: Engine, disk_cap: bool) -> ContainerCreateBody {
        let mut labels: HashMap<String, String> =
            self.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.insert(SANDBOX_LABEL.0.into(), SANDBOX_LABEL.1.into());
        let host_config = HostConfig {
            network_mode: (!self.network).then(|| "none".to_string()),
            nano_cpus: self.cpus.map(|c| (c * 1e9).round() as i64),
            memory: self.memory_bytes,
            // Equal to `memory`: no swap on top of the limit.
            memory_swap: self.memory_bytes,
            pids_limit: self.pids_limit,
            storage_opt: self
                .disk_bytes
                .filter(|_| disk_cap)
                .map(|bytes| HashMap::from([("size".to_string(), bytes.to_string())])),
            privileged: Some(false),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(CAPABILITIES.iter().map(|c| c.to_string()).collect()),
            security_opt: Some(vec!["no-new-privileges".into()]),
            // docker-init as PID 1 reaps orphans: processes killed on timeout, whose parents
            // are gone, would otherwise stay zombies and count against `pids_limit`.
            // (Podman's init is catatonit, from the package of that name.)
            init: Some(true),
            ulimits: (engine == Engine::Podman).then(|| self.podman_rlimits()),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            user: Some("root".into()),
            working_dir: Some(self.workdir.clone()),
            env: Some(self.env.clone()),
            // Set as the entrypoint so that neither the image's entrypoint nor its command runs.
            entrypoint: Some(vec!["sleep".into(), "infinity".into()]),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// One started container. Removed when dropped (by a background task on the current Tokio
/// runtime, tracked by the [`Docker`] handle) unless [`Sandbox::remove`] was awaited first.
#[derive(Debug)]
pub struct Sandbox {
    pub(crate) container: Container,
    removed: bool,
}

/// What commands need to reach a container; shared by a [`Sandbox`] and its shells.
#[derive(Debug, Clone)]
pub(crate) struct Container {
    pub docker: Docker,
    pub id: String,
    pub name: String,
    pub workdir: String,
}

impl Docker {
    /// Creates and starts a container for `spec`; when this returns it is ready to exec.
    /// [`Error::ImageUnavailable`] if the image is not present (call [`Docker::ensure_image`]).
    ///
    /// Cancellation-safe: the work runs in a tracked task, and if the caller goes away before
    /// it ends, the task removes the container itself (otherwise the engine could create a
    /// container whose id nobody ever learns).
    pub async fn create(&self, spec: &SandboxSpec) -> Result<Sandbox, Error> {
        let (tx, rx) = oneshot::channel();
        let (docker, spec) = (self.clone(), spec.clone());
        let span = tracing::info_span!("sandbox_create", image = %spec.image);
        let task = async move {
            let created = docker.create_and_start(&spec).await;
            if let Err(Ok(sandbox)) = tx.send(created) {
                warn!(container = %sandbox.name(), "sandbox created for a caller that went away; removing it");
                if let Err(e) = sandbox.remove().await {
                    warn!(error = %e, "could not remove it; the reaper will");
                }
            }
        };
        self.background.spawn(task.instrument(span));
        rx.await.map_err(|_| Error::Docker {
            operation: "create container",
            source: "the creation task ended without an answer (its runtime is shutting down)".into(),
        })?
    }

    async fn create_and_start(&self, spec: &SandboxSpec) -> Result<Sandbox, Error> {
        let name = spec.container_name();
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let disk_cap = spec.disk_bytes.is_some() && self.disk_cap.supported();
        let mut created = self
            .api
            .create_container(Some(options.clone()), spec.container_config(self.engine(), disk_cap))
            .await;
        if disk_cap {
            if let Err(e) = &created {
                if is_storage_opt_refusal(e) {
                    self.disk_cap.unsupported(&e.to_string());
                    created = self
                        .api
                        .create_container(Some(options), spec.container_config(self.engine(), false))
                        .await;
                }
            }
        }
        let created = match created {
            Ok(created) => created,
            Err(e) if status(&e) == Some(404) => {
                return Err(Error::ImageUnavailable {
                    image: spec.image.clone(),
                    reason: format!("not present locally ({e}); call ensure_image first"),
                })
            }
            Err(e) => return Err(api_error("create container", e)),
        };
        for warning in &created.warnings {
            warn!(container = %name, warning, "Docker warned when creating the sandbox");
        }
        // From here on the guard owns the container: an error removes it.
        let sandbox = Sandbox {
            container: Container {
                docker: self.clone(),
                id: created.id,
                name,
                workdir: spec.workdir.clone(),
            },
            removed: false,
        };
        let id = &sandbox.container.id;
        self.api.start_container(id, None).await.map_err(|e| container_error("start container", id, e))?;
        info!(container = %sandbox.name(), id = %sandbox.short_id(), image = %spec.image, "sandbox started");
        Ok(sandbox)
    }
}

impl Sandbox {
    /// The container's full id.
    pub fn id(&self) -> &str {
        &self.container.id
    }

    /// The container's name (`steer-<run>-<attempt>-<random>`).
    pub fn name(&self) -> &str {
        &self.container.name
    }

    /// The working directory of commands.
    pub fn workdir(&self) -> &str {
        &self.container.workdir
    }

    fn short_id(&self) -> &str {
        let id = self.id();
        &id[..12.min(id.len())]
    }

    /// Whether the container's memory limit has killed a process in it. Docker's
    /// `State.OOMKilled` is only set once the container itself dies, so this reads the
    /// container's own cgroup counters (`oom_kill` in cgroup v2's `memory.events`, or in v1's
    /// `memory.oom_control`) and falls back to the engine's flag.
    pub async fn oom_killed(&self) -> Result<bool, Error> {
        let read = "cat /sys/fs/cgroup/memory.events 2>/dev/null || cat /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null";
        let limits =
            super::ExecLimits { timeout: std::time::Duration::from_secs(30), max_output_bytes: 10_000 };
        let out = self.exec(read, &limits).await?;
        let counted = out.output.lines().any(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some("oom_kill")
                && words.next().and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n > 0)
        });
        if counted {
            return Ok(true);
        }
        let inspect = self
            .container
            .docker
            .api
            .inspect_container(self.id(), None)
            .await
            .map_err(|e| container_error("inspect container", self.id(), e))?;
        Ok(inspect.state.and_then(|s| s.oom_killed).unwrap_or(false))
    }

    /// Removes the container (killing whatever runs in it) and waits until it is gone.
    pub async fn remove(mut self) -> Result<(), Error> {
        self.removed = true;
        self.container.docker.remove_container(&self.container.id).await?;
        info!(container = %self.container.name, "sandbox removed");
        Ok(())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let Container { docker, id, name, .. } = self.container.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!(container = %name, "sandbox dropped outside a Tokio runtime; the reaper will remove it");
            return;
        };
        let span = tracing::info_span!("sandbox_removal_on_drop", container = %name);
        let task = async move {
            match docker.remove_container(&id).await {
                Ok(_) => info!("sandbox removed after being dropped"),
                Err(e) => warn!(error = %e, "could not remove a dropped sandbox; the reaper will"),
            }
        };
        self.container.docker.background.spawn_on(task.instrument(span), &runtime);
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn names_come_from_run_and_attempt_labels() {
        let mut spec = SandboxSpec::new("img");
        spec.labels.insert("steerbench.run".into(), "42".into());
        spec.labels.insert("steerbench.attempt".into(), "2".into());
        let name = spec.container_name();
        assert!(name.starts_with("steer-42-2-") && name.len() == "steer-42-2-".len() + 8, "{name}");
        spec.labels.insert("steerbench.run".into(), "a/b c".into());
        assert!(spec.container_name().starts_with("steer-a-b-c-2-"));
        assert!(SandboxSpec::new("img").container_name().starts_with("steer-"));
    }

    #[test]
    fn containers_are_locked_down() {
        let mut spec = SandboxSpec::new("img");
        spec.cpus = Some(1.5);
        spec.memory_bytes = Some(1 << 30);
        let config = spec.container_config(Engine::Docker, true);
        let host = config.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.memory_swap, Some(1 << 30));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(config.labels.unwrap().get("steerbench.sandbox").map(String::as_str), Some("1"));
        spec.network = true;
        assert_eq!(spec.container_config(Engine::Docker, true).host_config.unwrap().network_mode, None);
    }

    #[test]
    fn the_disk_cap_is_the_storage_drivers_size_where_the_engine_takes_it() {
        let spec = SandboxSpec::new("img");
        let size =
            |disk_cap| spec.container_config(Engine::Docker, disk_cap).host_config.unwrap().storage_opt;
        let ten_gib = (10u64 << 30).to_string();
        assert_eq!(size(true), Some(HashMap::from([("size".to_string(), ten_gib)])));
        assert_eq!(size(false), None);
    }

    #[test]
    fn podman_containers_ask_for_limits_the_host_allows_and_docker_ones_inherit_the_daemons() {
        let mut spec = SandboxSpec::new("img");
        spec.pids_limit = Some(512);
        assert_eq!(spec.container_config(Engine::Docker, true).host_config.unwrap().ulimits, None);
        let limits = spec.container_config(Engine::Podman, true).host_config.unwrap().ulimits.unwrap();
        let of = |name: &str| limits.iter().find(|l| l.name.as_deref() == Some(name)).unwrap().hard.unwrap();
        let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(of("nofile") as u64, hard.min(1 << 20));
        assert_eq!(of("nproc"), 512);
    }
}
