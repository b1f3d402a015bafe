//! A private PostgreSQL cluster for `steer up` when no `DATABASE_URL` is given.
//!
//! On first use it runs `initdb` under the data directory, then `pg_ctl start`; it waits until the
//! server accepts connections and creates the `steerbench` database. The server listens only on
//! 127.0.0.1 (no unix socket, so the socket path can never be too long or unwritable) and
//! requires SCRAM passwords for every connection.
//!
//! Layout under `data_dir`:
//! - `pg/`          the cluster (owned by the user that runs the server)
//! - `pg.password`  the superuser `steer`'s password, mode 0600, owned by the invoking user
//! - `pg.port`      the port in use, so restarts keep the same `DATABASE_URL`
//! - `pg.log`       the server's log (appended across runs)
//!
//! PostgreSQL refuses to run as root. When we are root, `initdb` and `pg_ctl` (and thus the
//! server) run as an unprivileged user: the owner of an existing cluster, else `postgres`, else
//! `nobody`.
//!
//! The server outlives this process unless [`EmbeddedPostgres::stop`] is called: `pg_ctl` starts
//! it in its own session so a Ctrl-C on the terminal does not kill it mid-write. A later
//! [`EmbeddedPostgres::start`] on the same data directory finds it running and reuses it.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use nix::unistd::{Gid, Uid, User};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::process::Command;

/// Superuser created by `initdb`; also the user in [`EmbeddedPostgres::database_url`].
const SUPERUSER: &str = "steer";
/// Database the coordinator uses.
const DATABASE: &str = "steerbench";
/// How long the server may take to accept connections, and `pg_ctl` to stop it.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT_SECS: &str = "60";
/// Log lines quoted in a start failure.
const LOG_TAIL_LINES: usize = 20;

const INSTALL_HINT: &str = "install PostgreSQL (`apt-get install postgresql` on Debian/Ubuntu, \
    `brew install postgresql` on macOS), or set DATABASE_URL to use an existing server instead";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `initdb`/`pg_ctl` are not installed where we looked: install PostgreSQL or set DATABASE_URL.
    #[error("PostgreSQL's initdb and pg_ctl were not found ({searched}): {INSTALL_HINT}")]
    NotInstalled { searched: String },
    /// A file or directory under the data dir could not be used: fix its permissions or path.
    #[error("{action} {}: {source}", path.display())]
    Filesystem { action: &'static str, path: PathBuf, source: std::io::Error },
    /// The data dir is in a state we will not guess about: the message says what to fix.
    #[error("{}: {problem}", path.display())]
    FixDataDir { path: PathBuf, problem: String },
    /// A PostgreSQL command exited non-zero; its output says why.
    #[error("`{command}` failed ({status}): {output}")]
    CommandFailed { command: String, status: std::process::ExitStatus, output: String },
    /// The server did not come up; the log tail usually says why (port taken, stale files...).
    #[error("PostgreSQL in {} did not start: {reason}\nlast lines of {}:\n{log_tail}", cluster.display(), log.display())]
    StartFailed { cluster: PathBuf, log: PathBuf, reason: String, log_tail: String },
    /// The server runs but a query on it failed.
    #[error("{what} on the embedded PostgreSQL at 127.0.0.1:{port}: {source}")]
    Database { what: &'static str, port: u16, source: sqlx::Error },
}

pub struct Config {
    /// Holds the cluster and its files; created (mode 0755) if missing.
    pub data_dir: PathBuf,
    /// 0 = the port remembered in `pg.port`, else a free one.
    pub port: u16,
    /// Where `initdb` and `pg_ctl` are; `None` = `PATH`, then `/usr/lib/postgresql/<newest>/bin`.
    pub bin_dir: Option<PathBuf>,
}

/// A running cluster. Call [`EmbeddedPostgres::stop`] to shut it down: dropping it leaves the
/// server running (a `Drop` cannot wait for `pg_ctl` without blocking the runtime).
pub struct EmbeddedPostgres {
    pg: Pg,
    url: String,
    stopped: bool,
}

impl EmbeddedPostgres {
    /// Starts the cluster under `config.data_dir`, creating it on first use, or reuses it if it
    /// is already running; returns once the `steerbench` database accepts connections.
    pub async fn start(config: Config) -> Result<EmbeddedPostgres, Error> {
        let bin_dir = match config.bin_dir {
            Some(dir) if has_binaries(&dir) => dir,
            Some(dir) => return Err(Error::NotInstalled { searched: dir.display().to_string() }),
            None => find_bin_dir(std::env::var_os("PATH").as_deref(), Path::new(DEBIAN_PG_ROOT))?,
        };
        let data_dir = config.data_dir;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755) // the server's user must be able to enter it when we are root
            .create(&data_dir)
            .map_err(fs_err("creating data directory", &data_dir))?;
        let cluster = data_dir.join("pg");
        let run_as = server_user(&cluster)?;
        if let Some(user) = &run_as {
            if let Some(dir) = untraversable_ancestor(&cluster, user.uid, user.gid) {
                return Err(Error::FixDataDir {
                    path: dir,
                    problem: format!(
                        "user {} (which runs PostgreSQL, as it refuses to run as root) cannot enter \
                         this directory: `chmod o+x` it or choose a data directory outside it",
                        user.name
                    ),
                });
            }
        }
        let pg = Pg { bin_dir, log: data_dir.join("pg.log"), cluster, data_dir, run_as };

        let password_file = pg.data_dir.join("pg.password");
        if !pg.cluster.join("PG_VERSION").exists() {
            pg.initdb(&password_file).await?;
        }
        let password = std::fs::read_to_string(&password_file)
            .map_err(|source| Error::FixDataDir {
                path: password_file.clone(),
                problem: format!(
                    "cannot read the password of the existing cluster in {} ({source}); \
                     restore this file or delete the cluster to create a new one",
                    pg.cluster.display()
                ),
            })?
            .trim()
            .to_owned();

        let (port, started_here) = match pg.running_port().await? {
            Some(port) => {
                tracing::info!(cluster = %pg.cluster.display(), port, "reusing running PostgreSQL");
                (port, false)
            }
            None => {
                let port = pg.choose_port(config.port)?;
                pg.start_server(port).await?;
                (port, true)
            }
        };
        let ready = async {
            write_file(&pg.data_dir.join("pg.port"), format!("{port}\n").as_bytes(), 0o644)?;
            let options = PgConnectOptions::new()
                .host("127.0.0.1")
                .port(port)
                .username(SUPERUSER)
                .password(&password)
                .database("postgres");
            let mut conn = pg.wait_until_ready(options, port, &password_file).await?;
            create_database_if_missing(&mut conn, port).await?;
            let _ = conn.close().await;
            Ok(())
        };
        if let Err(err) = ready.await {
            // The caller gets no handle to stop a server we started, so stop it here.
            if started_here {
                if let Err(stop_err) = pg.stop().await {
                    tracing::warn!(error = %stop_err, "could not stop PostgreSQL after a failed start");
                }
            }
            return Err(err);
        }

        let url = format!("postgres://{SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE}");
        Ok(EmbeddedPostgres { pg, url, stopped: false })
    }

    /// `postgres://steer:<password>@127.0.0.1:<port>/steerbench`
    pub fn database_url(&self) -> &str {
        &self.url
    }

    /// Stops the server with `pg_ctl stop -m fast` and waits until it has exited. A server that is already stopped is not an error.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.stopped = true;
        if self.pg.running_port().await?.is_none() {
            tracing::info!(cluster = %self.pg.cluster.display(), "PostgreSQL was already stopped");
            return Ok(());
        }
        self.pg.stop().await
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if !self.stopped {
            tracing::warn!(
                cluster = %self.pg.cluster.display(),
                "embedded PostgreSQL left running (stop() was not called); the next start reuses it"
            );
        }
    }
}

/// Where `steer up` keeps its cluster. Root gets /var/lib/steerbench because root's home is
/// 0700, which the unprivileged user running the server could not enter.
pub fn default_data_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .or_else(|| User::from_uid(Uid::current()).ok().flatten().map(|u| u.dir));
    data_dir_for(Uid::effective().is_root(), std::env::var_os("XDG_DATA_HOME"), home)
}

fn data_dir_for(is_root: bool, xdg_data_home: Option<std::ffi::OsString>, home: Option<PathBuf>) -> PathBuf {
    if is_root {
        return PathBuf::from("/var/lib/steerbench");
    }
    // The XDG spec says to ignore a relative XDG_DATA_HOME.
    let xdg = xdg_data_home.map(PathBuf::from).filter(|p| p.is_absolute());
    xdg.or_else(|| home.map(|h| h.join(".local/share")))
        .unwrap_or_else(|| PathBuf::from(".local/share"))
        .join("steerbench")
}

/// Debian installs each major version's binaries here and puts no `initdb` on PATH.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

fn has_binaries(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// The first PATH entry with both binaries, else `<debian_root>/<highest version>/bin`.
fn find_bin_dir(path_var: Option<&OsStr>, debian_root: &Path) -> Result<PathBuf, Error> {
    if let Some(dir) = path_var.into_iter().flat_map(std::env::split_paths).find(|d| has_binaries(d)) {
        return Ok(dir);
    }
    let version = |name: &OsStr| -> Option<Vec<u32>> {
        name.to_str()?.split('.').map(|part| part.parse().ok()).collect()
    };
    let newest = std::fs::read_dir(debian_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((version(&entry.file_name())?, entry.path().join("bin"))))
        .filter(|(_, bin)| has_binaries(bin))
        .max_by(|a, b| a.0.cmp(&b.0));
    newest.map(|(_, bin)| bin).ok_or_else(|| Error::NotInstalled {
        searched: format!("PATH and {}/<version>/bin", debian_root.display()),
    })
}

/// The account that runs the server when we are root.
struct RunAs {
    name: String,
    uid: Uid,
    gid: Gid,
}

/// `None` when we are not root (commands run as ourselves). As root: the owner of an existing
/// cluster (so it stays consistent if `postgres` is created later), else `postgres`, else `nobody`.
fn server_user(cluster: &Path) -> Result<Option<RunAs>, Error> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let lookup_err = |e: nix::Error| Error::FixDataDir {
        path: PathBuf::from("/etc/passwd"),
        problem: format!("looking up the user to run PostgreSQL as: {e}"),
    };
    let user = match std::fs::metadata(cluster) {
        Ok(meta) if meta.uid() != 0 => User::from_uid(Uid::from_raw(meta.uid())).map_err(lookup_err)?,
        _ => match User::from_name("postgres").map_err(lookup_err)? {
            Some(user) => Some(user),
            None => User::from_name("nobody").map_err(lookup_err)?,
        },
    };
    let user = user.ok_or_else(|| Error::FixDataDir {
        path: cluster.to_owned(),
        problem: "PostgreSQL refuses to run as root and neither user `postgres` nor `nobody` \
                  exists (nor the cluster owner): create user `postgres`"
            .into(),
    })?;
    Ok(Some(RunAs { name: user.name, uid: user.uid, gid: user.gid }))
}

/// The first existing ancestor of `path` that `uid`/`gid` may not enter (no search permission).
fn untraversable_ancestor(path: &Path, uid: Uid, gid: Gid) -> Option<PathBuf> {
    path.ancestors().skip(1).find_map(|dir| {
        let meta = std::fs::metadata(dir).ok()?;
        let mode = meta.mode();
        let can_enter = if meta.uid() == uid.as_raw() {
            mode & 0o100 != 0
        } else if meta.gid() == gid.as_raw() {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        (!can_enter).then(|| dir.to_owned())
    })
}

/// Paths and identity for running the PostgreSQL commands of one cluster.
struct Pg {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    cluster: PathBuf,
    log: PathBuf,
    run_as: Option<RunAs>,
}

impl Pg {
    /// Creates the cluster with a fresh random password for `steer`, saved to `password_file`.
    async fn initdb(&self, password_file: &Path) -> Result<(), Error> {
        let password = hex::encode(rand::random::<[u8; 24]>());
        // Saved first: a cluster whose password was lost could not be used.
        write_file(password_file, password.as_bytes(), 0o600)?;
        // initdb reads the password from a file (never the command line, which `ps` shows);
        // that file must be readable by the server's user, so it is a separate, short-lived one.
        let pwfile = self.data_dir.join("pg.initdb-pwfile");
        write_file(&pwfile, password.as_bytes(), 0o600)?;
        self.give_to_server_user(&pwfile)?;
        // We create the cluster dir ourselves: as root, the server's user cannot create entries
        // in the root-owned data dir. initdb accepts an existing empty directory.
        std::fs::DirBuilder::new()
            .recursive(true) // no error if it exists
            .mode(0o700)
            .create(&self.cluster)
            .map_err(fs_err("creating cluster directory", &self.cluster))?;
        self.give_to_server_user(&self.cluster)?;

        tracing::info!(cluster = %self.cluster.display(), "creating PostgreSQL cluster");
        let mut pwfile_arg = std::ffi::OsString::from("--pwfile=");
        pwfile_arg.push(&pwfile);
        let mut initdb = self.command("initdb");
        initdb.arg("-D").arg(&self.cluster).arg(pwfile_arg).args([
            "--username=steer",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            // C collation: the same sort order on every machine, whatever its locale.
            "--no-locale",
        ]);
        let result = run(&mut initdb).await;
        let _ = std::fs::remove_file(&pwfile);
        result
    }

    /// The port of the server running on this cluster, or `None` if it is not running.
    async fn running_port(&self) -> Result<Option<u16>, Error> {
        if !self.cluster.join("PG_VERSION").exists() {
            return Ok(None);
        }
        let mut status = self.pg_ctl("status");
        let output = output(&mut status).await?;
        // pg_ctl status: 0 = running, 3 = not running, 4 = no accessible data directory.
        match output.status.code() {
            Some(0) => {}
            Some(3) => return Ok(None),
            _ => return Err(command_failed(&status, &output)),
        }
        // Line 4 of postmaster.pid is the port the server listens on.
        let pid_file = self.cluster.join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).map_err(fs_err("reading", &pid_file))?;
        let port = text.lines().nth(3).and_then(|l| l.trim().parse().ok());
        port.map(Some).ok_or_else(|| Error::FixDataDir {
            path: pid_file,
            problem: "the running server's pid file has no port on line 4".into(),
        })
    }

    /// The requested port, else the remembered one if still free, else a free one.
    fn choose_port(&self, requested: u16) -> Result<u16, Error> {
        if requested != 0 {
            return Ok(requested);
        }
        let port_file = self.data_dir.join("pg.port");
        let remembered = std::fs::read_to_string(&port_file).ok().and_then(|s| s.trim().parse().ok());
        if let Some(port) = remembered {
            if port_is_free(port) {
                return Ok(port);
            }
            tracing::warn!(port, file = %port_file.display(), "remembered port is taken; picking another");
        }
        // The OS picks a free port; we release it for the server. Another process could take it
        // in between, in which case the start fails with "could not bind" in the log.
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .map_err(fs_err("binding a free port on", Path::new("127.0.0.1:0")))?;
        let port = listener.local_addr().map_err(fs_err("reading the port of", Path::new("127.0.0.1:0")))?;
        Ok(port.port())
    }

    async fn start_server(&self, port: u16) -> Result<(), Error> {
        // The log must be writable by the server's user; pg_ctl opens it as that user.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.log)
            .map_err(fs_err("creating server log", &self.log))?;
        self.give_to_server_user(&self.log)?;
        // Only TCP on 127.0.0.1: no unix socket, whose directory the server's user might not be
        // able to write and whose path has a ~100-byte limit.
        let server_options = format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''");
        let timeout = START_TIMEOUT.as_secs().to_string();
        tracing::info!(cluster = %self.cluster.display(), port, log = %self.log.display(), "starting PostgreSQL");
        let mut start = self.pg_ctl("start");
        start.arg("-l").arg(&self.log).arg("-o").arg(server_options);
        // pg_ctl waits for the server to be ready and notices quickly if it exits instead.
        start.args(["-w", "-t", &timeout]);
        let output = output(&mut start).await?;
        if !output.status.success() {
            return Err(self.start_failed(format!(
                "`pg_ctl start` exited with {}: {}",
                output.status,
                output_text(&output)
            )));
        }
        Ok(())
    }

    /// Connects until the server accepts us, for at most [`START_TIMEOUT`]. Retries only the
    /// errors of a server still starting up; a wrong password fails at once.
    async fn wait_until_ready(
        &self,
        options: PgConnectOptions,
        port: u16,
        password_file: &Path,
    ) -> Result<PgConnection, Error> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let err = match options.connect().await {
                Ok(conn) => return Ok(conn),
                Err(err) => err,
            };
            let starting_up = match &err {
                sqlx::Error::Io(_) => true,
                // 57P03: cannot_connect_now ("the database system is starting up").
                sqlx::Error::Database(db) => db.code().as_deref() == Some("57P03"),
                _ => false,
            };
            if let sqlx::Error::Database(db) = &err {
                // 28P01: invalid_password. Only our own files can cause it.
                if db.code().as_deref() == Some("28P01") {
                    return Err(Error::FixDataDir {
                        path: password_file.to_owned(),
                        problem: format!(
                            "the server on 127.0.0.1:{port} rejects this password for `steer`: \
                             restore the file or delete the cluster in {} to create a new one",
                            self.cluster.display()
                        ),
                    });
                }
            }
            if !starting_up {
                return Err(Error::Database { what: "connecting as `steer`", port, source: err });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.start_failed(format!(
                    "not accepting connections on 127.0.0.1:{port} after {}s: {err}",
                    START_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn start_failed(&self, reason: String) -> Error {
        let log = std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(unreadable: {e})"));
        let lines: Vec<&str> = log.lines().collect();
        let log_tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        Error::StartFailed { cluster: self.cluster.clone(), log: self.log.clone(), reason, log_tail }
    }

    /// Makes `path` owned by the server's user when we are root (no-op otherwise).
    fn give_to_server_user(&self, path: &Path) -> Result<(), Error> {
        if let Some(user) = &self.run_as {
            nix::unistd::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| Error::Filesystem {
                action: "handing to the PostgreSQL user",
                path: path.to_owned(),
                source: e.into(),
            })?;
        }
        Ok(())
    }

    /// Fast shutdown: open transactions are aborted, then the server exits cleanly.
    async fn stop(&self) -> Result<(), Error> {
        run(self.pg_ctl("stop").args(["-m", "fast", "-w", "-t", STOP_TIMEOUT_SECS])).await
    }

    /// `pg_ctl <action> -D <cluster>`, to which callers add options.
    fn pg_ctl(&self, action: &str) -> Command {
        let mut cmd = self.command("pg_ctl");
        cmd.arg(action).arg("-D").arg(&self.cluster);
        cmd
    }

    /// `<bin_dir>/<program>`, run as the server's user.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        // A directory the server's user can enter (our cwd, e.g. /root, may not be).
        cmd.current_dir(&self.data_dir).stdin(std::process::Stdio::null()).kill_on_drop(true);
        if let Some(user) = &self.run_as {
            // std also drops root's supplementary groups when uid is set.
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        cmd
    }
}

/// Runs `cmd` and collects its output; only a failure to spawn it is an error.
async fn output(cmd: &mut Command) -> Result<Output, Error> {
    let program = PathBuf::from(cmd.as_std().get_program());
    cmd.output().await.map_err(fs_err("running", &program))
}

/// Runs `cmd`; a non-zero exit is [`Error::CommandFailed`].
async fn run(cmd: &mut Command) -> Result<(), Error> {
    let output = output(cmd).await?;
    if output.status.success() {
        Ok(())
    } else {
        Err(command_failed(cmd, &output))
    }
}

async fn create_database_if_missing(conn: &mut PgConnection, port: u16) -> Result<(), Error> {
    let db_err = |what| move |source| Error::Database { what, port, source };
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(DATABASE)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err("checking for database `steerbench`"))?;
    if exists {
        return Ok(());
    }
    match sqlx::query("CREATE DATABASE steerbench").execute(&mut *conn).await {
        Ok(_) => Ok(()),
        // 42P04 duplicate_database: another `steer up` created it in between.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => Ok(()),
        Err(err) => Err(db_err("creating database `steerbench`")(err)),
    }
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Writes `contents` to `path` with `mode`, replacing any previous file (so a file that was
/// once more readable does not keep its old mode).
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(fs_err("creating", path))?;
    file.write_all(contents).map_err(fs_err("writing", path))
}

fn fs_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Filesystem { action, path, source }
}

fn output_text(output: &Output) -> String {
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    text.trim().to_owned()
}

fn command_failed(cmd: &Command, output: &Output) -> Error {
    let std = cmd.as_std();
    let mut command = std.get_program().to_string_lossy().into_owned();
    for arg in std.get_args() {
        command.push(' ');
        command.push_str(&arg.to_string_lossy());
    }
    Error::CommandFailed { command, status: output.status, output: output_text(output) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(dir: &Path) -> Config {
        Config { data_dir: dir.join("data"), port: 0, bin_dir: None }
    }

    /// Stops the test's server if an assertion fails before `stop`, so no postgres outlives the
    /// test (its tempdir is deleted). `pg_ctl stop` on a stopped cluster just fails quietly.
    struct StopOnPanic(PathBuf);

    impl Drop for StopOnPanic {
        fn drop(&mut self) {
            let cluster = self.0.join("data/pg");
            let (Ok(bin), Ok(meta)) = (
                find_bin_dir(std::env::var_os("PATH").as_deref(), Path::new(DEBIAN_PG_ROOT)),
                std::fs::metadata(&cluster),
            ) else {
                return;
            };
            let mut cmd = std::process::Command::new(bin.join("pg_ctl"));
            cmd.args(["stop", "-m", "immediate", "-D"]).arg(&cluster).current_dir(&self.0);
            cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
            std::os::unix::process::CommandExt::uid(&mut cmd, meta.uid());
            let _ = cmd.status();
        }
    }

    /// The whole life cycle against the installed PostgreSQL. As root (as in CI) this runs the
    /// server as `postgres`/`nobody`, so it also covers the privilege drop.
    #[tokio::test]
    async fn start_stop_restart_keeps_password_port_and_data() {
        let tmp = tempfile::tempdir().unwrap();
        // The server's user (when we are root) must enter the tempdir, which is 0700 under a
        // umask of 077 or with older tempfile versions.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let _guard = StopOnPanic(tmp.path().to_owned());

        let pg = EmbeddedPostgres::start(config(tmp.path())).await.unwrap();
        let url = pg.database_url().to_owned();
        assert!(url.starts_with("postgres://steer:") && url.ends_with("/steerbench"), "{url}");
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await.unwrap();
        assert_eq!(one, 1);
        let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&mut conn).await.unwrap();
        assert_eq!(db, "steerbench");
        sqlx::query("CREATE TABLE kept (v text)").execute(&mut conn).await.unwrap();
        sqlx::query("INSERT INTO kept VALUES ('across restarts')").execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();

        let password_file = tmp.path().join("data/pg.password");
        let meta = std::fs::metadata(&password_file).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.uid(), Uid::effective().as_raw(), "readable by the invoking user only");
        assert!(!tmp.path().join("data/pg.initdb-pwfile").exists());
        if Uid::effective().is_root() {
            let owner = std::fs::metadata(tmp.path().join("data/pg")).unwrap().uid();
            assert_ne!(owner, 0, "as root, the cluster belongs to an unprivileged user");
        }

        // A second start while running reuses the server instead of failing.
        let again = EmbeddedPostgres::start(config(tmp.path())).await.unwrap();
        assert_eq!(again.database_url(), url);
        pg.stop().await.unwrap();
        assert!(PgConnection::connect(&url).await.is_err(), "server should be down");
        again.stop().await.unwrap(); // already stopped: not an error

        let pg = EmbeddedPostgres::start(config(tmp.path())).await.unwrap();
        assert_eq!(pg.database_url(), url, "same password and port after a restart");
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let v: String = sqlx::query_scalar("SELECT v FROM kept").fetch_one(&mut conn).await.unwrap();
        assert_eq!(v, "across restarts");
        conn.close().await.unwrap();
        pg.stop().await.unwrap();
    }

    #[tokio::test]
    async fn missing_binaries_give_the_install_hint() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config { bin_dir: Some(tmp.path().join("no-such-bin")), ..config(tmp.path()) };
        let err = EmbeddedPostgres::start(config).await.err().expect("must fail");
        let message = err.to_string();
        assert!(matches!(err, Error::NotInstalled { .. }), "{message}");
        for needle in ["apt-get install postgresql", "brew install postgresql", "DATABASE_URL", "no-such-bin"]
        {
            assert!(message.contains(needle), "{needle:?} missing from: {message}");
        }
    }

    #[test]
    fn bin_search_falls_back_to_newest_debian_version() {
        let root = tempfile::tempdir().unwrap();
        for version in ["9.6", "15", "16", "not-a-version"] {
            let bin = root.path().join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("initdb"), "").unwrap();
            std::fs::write(bin.join("pg_ctl"), "").unwrap();
        }
        let empty_path = std::env::join_paths([root.path().join("nothing-here")]).unwrap();
        let found = find_bin_dir(Some(&empty_path), root.path()).unwrap();
        assert_eq!(found, root.path().join("16/bin"));

        let err = find_bin_dir(Some(&empty_path), &root.path().join("absent")).unwrap_err();
        assert!(err.to_string().contains("apt-get install postgresql"), "{err}");
    }

    #[test]
    fn default_data_dir_follows_xdg_and_avoids_roots_home() {
        let home = Some(PathBuf::from("/home/ann"));
        assert_eq!(data_dir_for(true, None, home.clone()), Path::new("/var/lib/steerbench"));
        assert_eq!(data_dir_for(false, None, home.clone()), Path::new("/home/ann/.local/share/steerbench"));
        assert_eq!(data_dir_for(false, Some("/xdg".into()), home.clone()), Path::new("/xdg/steerbench"));
        assert_eq!(
            data_dir_for(false, Some("relative".into()), home),
            Path::new("/home/ann/.local/share/steerbench"),
            "a relative XDG_DATA_HOME is ignored"
        );
    }

    #[test]
    fn a_private_ancestor_is_reported_for_the_server_user() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let nobody = (Uid::from_raw(65534), Gid::from_raw(65534));
        let cluster = tmp.path().join("data/pg");
        assert_eq!(untraversable_ancestor(&cluster, nobody.0, nobody.1), Some(tmp.path().to_owned()));
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(untraversable_ancestor(&cluster, nobody.0, nobody.1), None);
    }
}
