//! One Docker API exec per command, and killing a command's processes inside the container.
//!
//! Every exec carries a fresh random token in its environment (`STEER_EXEC=<token>`), which
//! its processes inherit. On timeout a second exec runs [`KILL_SCRIPT`]: it stops, then kills,
//! every process whose environment holds the token and every descendant of those (even one
//! that cleared its environment or changed user), so daemonised children (`setsid`, `nohup`,
//! double forks) die too. Killing the `docker exec` client alone, as a subprocess timeout does,
//! would leave them running.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::errors::Error as ApiError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::{Stream, StreamExt};
use rand::Rng;
use tokio::io::AsyncWrite;
use tracing::{debug, info, warn};

use super::container::Container;
use super::docker::container_error;
use super::output::CappedOutput;
use super::{Error, Sandbox};

/// Limits of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecLimits {
    /// Wall-clock limit; past it the command's processes are killed.
    pub timeout: Duration,
    /// Budget of the captured output: the first half is kept from the head, the second from
    /// the tail; what lies between is counted in [`ExecOutput::truncated_bytes`].
    pub max_output_bytes: usize,
}

impl Default for ExecLimits {
    /// 60 s and 100 000 bytes.
    fn default() -> Self {
        ExecLimits { timeout: Duration::from_secs(60), max_output_bytes: 100_000 }
    }
}

/// What a command did. A failing or timed-out command is data, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code; `None` if the command timed out (its processes were killed) or the code
    /// could not be learnt.
    pub exit_code: Option<i64>,
    /// stdout and stderr interleaved in arrival order, invalid UTF-8 replaced by U+FFFD; if
    /// over budget, head and tail joined by a line `[... N bytes of output truncated ...]`.
    pub output: String,
    /// The timeout fired and the command's processes were killed.
    pub timed_out: bool,
    /// Bytes cut from the middle of the output.
    pub truncated_bytes: u64,
    pub duration: Duration,
}

/// How long to wait, after killing a timed-out command, for its output stream to close.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(3);

/// Bash run in its own exec to kill processes. Arguments: `$1` a token: processes with
/// `STEER_EXEC=$1` in their environment, and all their descendants, are killed. `$2` optional
/// pid of a shell, `$3` a window in milliseconds: the shell's descendants whose top-level
/// ancestor under the shell started within the window are killed too (all if `$3` is empty),
/// and with `$4` = `kill-root` the shell itself. Victims are stopped (SIGSTOP) as they are
/// found so none can fork away, then all are killed. Pure bash and /proc (no procps needed);
/// prints how many processes it killed.
pub(crate) const KILL_SCRIPT: &str = r#"
tok="STEER_EXEC=$1" root=${2:-} window=${3:-} kill_root=${4:-}
since=0
if [[ -n $window ]]; then
  read -r up _ < /proc/uptime  # seconds since boot, with two decimals
  hz=$(getconf CLK_TCK 2>/dev/null) || hz=100
  since=$(( (10#${up/./} * 10 - window) * ${hz:-100} / 1000 ))  # in clock ticks, like /proc/*/stat
fi
[[ -n $root && $kill_root == kill-root ]] && kill -STOP "$root" 2>/dev/null
declare -A victim=()
for pass in 1 2 3 4 5 6; do
  declare -A parent=() start=()
  new=()
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [[ $p == "$$" || $p == "$BASHPID" ]] && continue
    read -r stat 2>/dev/null < "$d/stat" || continue
    rest=${stat##*\)}
    f=($rest)  # after the command name: state ppid ... (no glob characters)
    [[ ${f[0]} == Z || ${f[0]} == X ]] && continue
    parent[$p]=${f[1]} start[$p]=${f[19]}
    if [[ -z ${victim[$p]:-} && $p != "$root" ]]; then
      while IFS= read -r -d '' e; do
        if [[ $e == "$tok" ]]; then victim[$p]=1; new+=("$p"); break; fi
      done 2>/dev/null < "$d/environ"
    fi
  done
  for p in "${!parent[@]}"; do
    [[ -n ${victim[$p]:-} || $p == "$root" ]] && continue
    below=$p q=${parent[$p]} hops=0
    while [[ -n $q && $q != 0 ]] && (( hops++ < 100 )); do
      if [[ -n $root && $q == "$root" ]]; then
        if (( ${start[$below]:-0} >= since )); then victim[$p]=1; new+=("$p"); fi
        break
      fi
      if [[ -n ${victim[$q]:-} ]]; then victim[$p]=1; new+=("$p"); break; fi
      below=$q q=${parent[$q]:-}
    done
  done
  (( ${#new[@]} )) || break
  kill -STOP "${new[@]}" 2>/dev/null
done
targets=("${!victim[@]}")
[[ -n $root && $kill_root == kill-root ]] && targets+=("$root")
(( ${#targets[@]} )) && kill -KILL "${targets[@]}" 2>/dev/null
echo "${#targets[@]}"
"#;

/// A fresh random token (sentinels, exec markers): 24 hex digits.
pub(crate) fn new_token() -> String {
    let mut rng = rand::thread_rng();
    format!("{:016x}{:08x}", rng.gen::<u64>(), rng.gen::<u32>())
}

pub(crate) type OutputStream = Pin<Box<dyn Stream<Item = Result<LogOutput, ApiError>> + Send>>;
pub(crate) type InputSink = Pin<Box<dyn AsyncWrite + Send>>;

/// A started exec: its id, its multiplexed output, and its stdin if attached.
pub(crate) struct Attached {
    pub exec_id: String,
    pub output: OutputStream,
    pub input: InputSink,
}

/// Which processes [`Container::kill_processes`] kills.
pub(crate) enum KillTarget<'a> {
    /// Processes carrying this exec token, and their descendants.
    Token(&'a str),
    /// A shell running a command: the shell itself, the processes carrying the command's
    /// token and their descendants, and the shell's children started within the last
    /// `window` with their descendants. Older children (background jobs of earlier
    /// commands) are spared.
    ShellCommand { token: &'a str, shell_pid: i64, window: Duration },
}

impl Sandbox {
    /// Runs `bash -c <command>` in the workdir as one Docker API exec (fresh shell state every
    /// time), capturing stdout and stderr interleaved under `limits.max_output_bytes`. On
    /// timeout the command's processes are killed inside the container and `timed_out` is set.
    pub async fn exec(&self, command: &str, limits: &ExecLimits) -> Result<ExecOutput, Error> {
        let started = Instant::now();
        let mut capture = CappedOutput::new(limits.max_output_bytes);
        let argv = vec!["bash".to_string(), "-c".to_string(), command.to_string()];
        let finished =
            self.container.run_exec(argv, Some(limits.timeout), |_, bytes| capture.push(bytes)).await?;
        let captured = capture.finish();
        Ok(ExecOutput {
            exit_code: finished.exit_code,
            output: captured.text,
            timed_out: finished.timed_out,
            truncated_bytes: captured.truncated_bytes,
            duration: started.elapsed(),
        })
    }
}

impl Container {
    /// Runs `argv` in an exec carrying a fresh kill token, passing output chunks to `sink`
    /// (`true` for stderr) as they arrive. On timeout kills the processes and waits
    /// [`KILL_GRACE`] for the stream to close.
    pub(crate) async fn run_exec(
        &self,
        argv: Vec<String>,
        timeout: Option<Duration>,
        mut sink: impl FnMut(bool, &[u8]),
    ) -> Result<Finished, Error> {
        let token = new_token();
        let mut exec = self.attach_exec(argv, vec![format!("STEER_EXEC={token}")], false).await?;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut timed_out = false;
        let mut grace_end = None;
        loop {
            let wait_until = grace_end.or(deadline);
            let next = async {
                match wait_until {
                    Some(at) => tokio::time::timeout_at(at, exec.output.next()).await.ok(),
                    None => Some(exec.output.next().await),
                }
            };
            match next.await {
                Some(Some(Ok(chunk))) => {
                    let is_stderr = matches!(chunk, LogOutput::StdErr { .. });
                    sink(is_stderr, &chunk.into_bytes());
                }
                Some(Some(Err(e))) => return Err(container_error("read exec output", &self.id, e)),
                Some(None) => break,
                None if timed_out => {
                    warn!(container = %self.name, "output stream still open after the kill; giving up on it");
                    break;
                }
                None => {
                    timed_out = true;
                    self.kill_processes(KillTarget::Token(&token)).await?;
                    grace_end = Some(tokio::time::Instant::now() + KILL_GRACE);
                }
            }
        }
        let exit_code = if timed_out { None } else { self.exit_code(&exec.exec_id).await? };
        Ok(Finished { exit_code, timed_out })
    }

    /// Creates and starts an attached exec in the workdir (no TTY, stdout and stderr
    /// multiplexed; stdin attached if asked).
    pub(crate) async fn attach_exec(
        &self,
        argv: Vec<String>,
        env: Vec<String>,
        stdin: bool,
    ) -> Result<Attached, Error> {
        let options = CreateExecOptions {
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            env: Some(env),
            cmd: Some(argv),
            working_dir: Some(self.workdir.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .api
            .create_exec(&self.id, options)
            .await
            .map_err(|e| container_error("create exec", &self.id, e))?;
        let start = StartExecOptions { detach: false, tty: false, output_capacity: Some(64 * 1024) };
        match self.docker.api.start_exec(&created.id, Some(start)).await {
            Ok(StartExecResults::Attached { output, input }) => {
                Ok(Attached { exec_id: created.id, output, input })
            }
            Ok(StartExecResults::Detached) => Err(Error::Docker {
                operation: "start exec",
                source: "the engine started the exec detached".into(),
            }),
            Err(e) => Err(container_error("start exec", &self.id, e)),
        }
    }

    /// The exit code of a finished exec. The engine may record it a moment after the output
    /// stream closes, so a still-running exec is asked again, for up to about a second.
    pub(crate) async fn exit_code(&self, exec_id: &str) -> Result<Option<i64>, Error> {
        let mut delay = Duration::from_millis(2);
        for _ in 0..10 {
            let inspect = self
                .docker
                .api
                .inspect_exec(exec_id)
                .await
                .map_err(|e| container_error("inspect exec", &self.id, e))?;
            if inspect.running != Some(true) {
                if let Some(code) = inspect.exit_code {
                    return Ok(Some(code));
                }
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        warn!(container = %self.name, exec = exec_id, "the engine reported no exit code");
        Ok(None)
    }

    /// Kills processes inside the container with [`KILL_SCRIPT`], in an exec of its own.
    pub(crate) async fn kill_processes(&self, target: KillTarget<'_>) -> Result<(), Error> {
        let (token, root, window, mode) = match target {
            KillTarget::Token(token) => (token, String::new(), String::new(), ""),
            KillTarget::ShellCommand { token, shell_pid, window } => {
                (token, shell_pid.to_string(), window.as_millis().to_string(), "kill-root")
            }
        };
        let argv =
            ["bash", "-c", KILL_SCRIPT, "steer-kill", token, &root, &window, mode].map(String::from).to_vec();
        let mut exec = self.attach_exec(argv, Vec::new(), false).await?;
        let mut out = Vec::new();
        let drained = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(chunk) = exec.output.next().await {
                match chunk {
                    Ok(chunk) => out.extend_from_slice(&chunk.into_bytes()),
                    Err(e) => return Err(container_error("kill processes", &self.id, e)),
                }
            }
            Ok(())
        })
        .await;
        match drained {
            Ok(result) => result?,
            Err(_) => warn!(container = %self.name, "the kill script did not finish within 30 s"),
        }
        let killed = String::from_utf8_lossy(&out).trim().to_string();
        info!(container = %self.name, killed = %killed, "killed the processes of a timed-out command");
        debug!(exec = %exec.exec_id, "kill exec finished");
        Ok(())
    }
}

/// How an exec ended.
pub(crate) struct Finished {
    pub exit_code: Option<i64>,
    pub timed_out: bool,
}
