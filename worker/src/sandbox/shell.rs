//! A persistent bash in the sandbox: one exec with stdin attached for the whole run, commands
//! written to it and delimited by a random sentinel that carries the exit code.
//!
//! Each command is sent as a quoted here-document read into a variable and `eval`ed, so no
//! command text (unbalanced quotes, a syntax error, a stray here-document) can swallow the
//! sentinel; its stdin is `/dev/null`, so it cannot eat what comes next; the shell's stderr is
//! its stdout, so output keeps its order. The working directory, variables, functions, shell
//! options and `$?` carry over from one command to the next.
//!
//! **Timeouts restart the shell.** A non-interactive bash cannot abandon a command list
//! half-way (after its running process is killed it would go on with the next one, and a loop
//! of builtins runs inside the shell process itself), so on timeout the shell is killed along
//! with the command's processes: those carrying its token, their descendants, and the
//! shell's children started since the command began. Background jobs of earlier commands
//! survive. The next command runs in a new shell that restores the state saved just before
//! the timed-out command: working directory, exported variables, functions and the enabled
//! `set -o`/`shopt` options (not unexported variables, nor options the user turned off). The
//! same happens when a command ends the shell (`exit`, `set -e`). A line at the end of the
//! output says so. (The state is saved to /dev/shm before every command: about 50 µs.)

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use super::container::Container;
use super::docker::container_error;
use super::exec::{new_token, InputSink, KillTarget, OutputStream, KILL_GRACE};
use super::output::CappedOutput;
use super::{Error, ExecLimits, ExecOutput, Sandbox};

/// How long a new shell may take to answer its first sentinel (it may source `BASH_ENV`).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// After a timeout, trailing output is read until the stream is quiet this long.
const TRAILING_QUIET: Duration = Duration::from_millis(200);

/// A persistent bash session in a sandbox. Holds its own reference to the container, so it
/// may outlive the borrow of the [`Sandbox`]; once the sandbox is removed it returns
/// [`Error::ContainerGone`].
pub struct Shell {
    container: Container,
    process: Option<ShellProcess>,
    /// Names the file where the shell saves its state before each command, for a
    /// replacement shell (see [`state_path_script`]).
    state_token: String,
}

struct ShellProcess {
    exec_id: String,
    /// The shell's pid inside the container.
    pid: i64,
    output: OutputStream,
    input: InputSink,
    /// Bytes read after the last sentinel (output of background jobs): they open the next
    /// command's output.
    pending: Vec<u8>,
}

impl Sandbox {
    /// Starts a persistent bash in the workdir (non-interactive; `BASH_ENV` from the spec's
    /// environment is sourced).
    pub async fn shell(&self) -> Result<Shell, Error> {
        let mut shell = Shell { container: self.container.clone(), process: None, state_token: new_token() };
        shell.process = Some(start(&shell.container, &shell.state_token).await?);
        Ok(shell)
    }
}

/// How one command in the shell ended.
enum Ending {
    /// The sentinel arrived with this exit code.
    Sentinel(i64),
    /// The shell's output stream closed: the shell exited.
    ShellExited,
    /// The deadline passed first.
    TimedOut,
}

impl Shell {
    /// Runs `command` in the shell. Timeouts and failures are data in [`ExecOutput`]; errors
    /// are infrastructure (the container is gone, the engine failed).
    pub async fn run(&mut self, command: &str, limits: &ExecLimits) -> Result<ExecOutput, Error> {
        let started = Instant::now();
        let mut process = match self.process.take() {
            Some(process) => process,
            None => start(&self.container, &self.state_token).await?,
        };
        let token = new_token();
        let script = command_script(command, &token);
        if let Err(e) = write_all(&mut process.input, script.as_bytes()).await {
            // The shell died between commands (killed from outside): one more try on a new one.
            warn!(container = %self.container.name, error = %e, "the shell is gone; starting a new one");
            process = start(&self.container, &self.state_token).await?;
            write_all(&mut process.input, script.as_bytes())
                .await
                .map_err(|e| Error::Docker { operation: "write to shell", source: e.into() })?;
        }

        let mut capture = CappedOutput::new(limits.max_output_bytes);
        let mut scanner = SentinelScanner::new(&token);
        let pending = std::mem::take(&mut process.pending);
        let mut found = scanner.feed(&pending, &mut |b| capture.push(b));
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let ending = loop {
            if let Some((code, rest)) = found.take() {
                process.pending = rest;
                break Ending::Sentinel(code);
            }
            match tokio::time::timeout_at(deadline, process.output.next()).await {
                Ok(Some(Ok(chunk))) => found = scanner.feed(&chunk.into_bytes(), &mut |b| capture.push(b)),
                Ok(Some(Err(e))) => return Err(container_error("read shell output", &self.container.id, e)),
                Ok(None) => break Ending::ShellExited,
                Err(_) => break Ending::TimedOut,
            }
        };

        let (exit_code, timed_out) = match ending {
            Ending::Sentinel(code) => {
                self.process = Some(process);
                (Some(code), false)
            }
            Ending::ShellExited => {
                scanner.flush(&mut |b| capture.push(b));
                let code = self.container.exit_code(&process.exec_id).await?;
                info!(container = %self.container.name, exit_code = ?code, "the shell exited");
                capture.push(format!("\n{}\n", restart_note("the shell exited")).as_bytes());
                (code, false)
            }
            Ending::TimedOut => {
                // Children started since the command was sent, with a margin for clock ticks.
                let window = started.elapsed() + Duration::from_millis(300);
                let target = KillTarget::ShellCommand { token: &token, shell_pid: process.pid, window };
                self.container.kill_processes(target).await?;
                // What the command printed before it died; the stream stays open while
                // background jobs of earlier commands hold it, so stop once it goes quiet.
                let until = tokio::time::Instant::now() + KILL_GRACE;
                loop {
                    let quiet = (tokio::time::Instant::now() + TRAILING_QUIET).min(until);
                    match tokio::time::timeout_at(quiet, process.output.next()).await {
                        Ok(Some(Ok(chunk))) => {
                            scanner.feed(&chunk.into_bytes(), &mut |b| capture.push(b));
                        }
                        _ => break,
                    }
                }
                scanner.flush(&mut |b| capture.push(b));
                let what =
                    format!("timed out after {:?}: the command and its shell were killed", limits.timeout);
                capture.push(format!("\n{}\n", restart_note(&what)).as_bytes());
                (None, true)
            }
        };
        let captured = capture.finish();
        Ok(ExecOutput {
            exit_code,
            output: captured.text,
            timed_out,
            truncated_bytes: captured.truncated_bytes,
            duration: started.elapsed(),
        })
    }
}

/// Starts bash, restores the state saved before the last command (if any), and waits for the
/// first sentinel, which carries the shell's pid. (A function of the container rather than a
/// method of [`Shell`], which is not `Sync`, so that the futures of `Shell` stay `Send`.)
async fn start(container: &Container, state_token: &str) -> Result<ShellProcess, Error> {
    let argv = ["bash", "--noprofile", "--norc"].map(String::from).to_vec();
    let exec = container.attach_exec(argv, Vec::new(), true).await?;
    let mut process = ShellProcess {
        exec_id: exec.exec_id,
        pid: 0,
        output: exec.output,
        input: exec.input,
        pending: Vec::new(),
    };
    let token = new_token();
    let hello = format!(
        "exec 2>&1\n{}\n[ -r \"$__steer_state\" ] && builtin source \"$__steer_state\" >/dev/null 2>&1\n{}\n",
        state_path_script(state_token),
        sentinel_printf(&token, "$$")
    );
    write_all(&mut process.input, hello.as_bytes())
        .await
        .map_err(|e| Error::Docker { operation: "start shell", source: e.into() })?;
    let mut scanner = SentinelScanner::new(&token);
    let mut early = CappedOutput::new(4096);
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, process.output.next()).await {
            Ok(Some(Ok(chunk))) => {
                if let Some((pid, rest)) = scanner.feed(&chunk.into_bytes(), &mut |b| early.push(b)) {
                    process.pid = pid;
                    process.pending = rest;
                    break;
                }
            }
            Ok(Some(Err(e))) => return Err(container_error("start shell", &container.id, e)),
            Ok(None) | Err(_) => {
                scanner.flush(&mut |b| early.push(b));
                let output = early.finish().text;
                return Err(Error::Docker {
                    operation: "start shell",
                    source: format!("bash did not start (output: {output:?})").into(),
                });
            }
        }
    }
    let early = early.finish().text;
    debug!(container = %container.name, pid = process.pid, startup_output = %early, "shell started");
    Ok(process)
}

/// The line appended to the output of a command after which the shell is replaced.
fn restart_note(what: &str) -> String {
    format!(
        "[{what}; the next command runs in a new shell with the working directory, exported \
         variables, functions and options from before this command]"
    )
}

async fn write_all(input: &mut InputSink, bytes: &[u8]) -> std::io::Result<()> {
    input.write_all(bytes).await?;
    input.flush().await
}

/// A `printf` that writes the sentinel `<<STEER:<token>:<value>>>\n`. The marker is assembled
/// from two arguments so that the literal never appears in the shell's input or in an `xtrace`
/// of it (only in what printf prints).
fn sentinel_printf(token: &str, value: &str) -> String {
    format!("builtin printf '%s%s:%d>>\\n' '<<STEER' ':{token}' \"{value}\"")
}

/// Sets `$__steer_state`, the file where the shell saves its state before each command: in
/// /dev/shm (tmpfs; writing to the container's overlay filesystem costs milliseconds), or in
/// /tmp if /dev/shm is not writable. Every shell of a [`Shell`] computes the same path.
fn state_path_script(state_token: &str) -> String {
    format!(
        "__steer_state=/dev/shm/.steer-shell-{state_token}\n\
         [ -d /dev/shm ] && [ -w /dev/shm ] || __steer_state=/tmp/.steer-shell-{state_token}"
    )
}

/// The text sent to the shell for one command: read the command from a quoted here-document
/// (its delimiter holds the token, so the command cannot end it); save the shell's state
/// (working directory, exported variables, functions, enabled options; restored by a new shell
/// if this one dies); restore the previous `$?` (unless `set -e` is on, where a failing status
/// would end the shell); `eval` the command with stdin from /dev/null and the token exported;
/// print the sentinel.
fn command_script(command: &str, token: &str) -> String {
    let newline = if command.ends_with('\n') { "" } else { "\n" };
    format!(
        "IFS= read -r -d '' __steer_cmd <<'__STEER_EOF_{token}'\n\
         {command}{newline}\
         __STEER_EOF_{token}\n\
         {{ builtin printf 'builtin cd -- %q\\n' \"$PWD\"; builtin export -p; builtin declare -f; \
         builtin printf 'shopt -s %s\\nset -o %s\\n' \"${{BASHOPTS//:/ }}\" \"${{SHELLOPTS//:/ -o }}\"; \
         }} >\"${{__steer_state:-/dev/null}}\" 2>/dev/null\n\
         __steer_rc() {{ return \"$1\"; }}\n\
         export STEER_EXEC={token}\n\
         if [[ $- != *e* ]]; then __steer_rc \"${{__steer_status:-0}}\"; fi\n\
         eval \"$__steer_cmd\" </dev/null\n\
         __steer_status=$?\n\
         unset STEER_EXEC __steer_cmd\n\
         {}\n",
        sentinel_printf(token, "$__steer_status")
    )
}

/// Finds the sentinel `<<STEER:<token>:<code>>>\n` in a byte stream fed in chunks, passing on
/// every byte before it and holding back only what could be the start of a split sentinel.
struct SentinelScanner {
    prefix: Vec<u8>,
    held: Vec<u8>,
}

impl SentinelScanner {
    fn new(token: &str) -> Self {
        SentinelScanner { prefix: format!("<<STEER:{token}:").into_bytes(), held: Vec::new() }
    }

    /// Feeds a chunk. Bytes that are surely output go to `out`; when the sentinel is
    /// complete, returns its value and the bytes that followed it.
    fn feed(&mut self, chunk: &[u8], out: &mut impl FnMut(&[u8])) -> Option<(i64, Vec<u8>)> {
        self.held.extend_from_slice(chunk);
        if let Some(at) = find(&self.held, &self.prefix) {
            let value_start = at + self.prefix.len();
            if let Some(len) = find(&self.held[value_start..], b">>\n") {
                out(&self.held[..at]);
                let value = std::str::from_utf8(&self.held[value_start..value_start + len])
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(-1);
                let rest = self.held[value_start + len + 3..].to_vec();
                self.held.clear();
                return Some((value, rest));
            }
            out(&self.held[..at]);
            self.held.drain(..at);
            return None;
        }
        // Keep what could be the beginning of a sentinel split across chunks.
        let keep = (self.prefix.len() - 1).min(self.held.len());
        let emit = self.held.len() - keep;
        out(&self.held[..emit]);
        self.held.drain(..emit);
        None
    }

    /// Passes on whatever is held back (the stream ended without a sentinel).
    fn flush(&mut self, out: &mut impl FnMut(&[u8])) {
        out(&self.held);
        self.held.clear();
    }
}

/// First position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(i) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + i;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shell")
            .field("container", &self.container.name)
            .field("pid", &self.process.as_ref().map(|p| p.pid))
            .finish()
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn scan(chunks: &[&[u8]], token: &str) -> (Vec<u8>, Option<(i64, Vec<u8>)>) {
        let mut scanner = SentinelScanner::new(token);
        let mut out = Vec::new();
        for chunk in chunks {
            if let Some(found) = scanner.feed(chunk, &mut |b| out.extend_from_slice(b)) {
                return (out, Some(found));
            }
        }
        scanner.flush(&mut |b| out.extend_from_slice(b));
        (out, None)
    }

    #[test]
    fn sentinel_is_found_wherever_the_stream_is_split() {
        let stream = b"hello\nworld<<STEER:abc:42>>\nlater";
        for split in 0..=stream.len() {
            for split2 in split..=stream.len() {
                let (out, found) =
                    scan(&[&stream[..split], &stream[split..split2], &stream[split2..]], "abc");
                let (code, rest) = found.unwrap_or_else(|| panic!("split at {split},{split2}"));
                assert_eq!(out, b"hello\nworld");
                assert_eq!(code, 42);
                // What followed the sentinel in the chunk that completed it.
                assert!(b"later".starts_with(&rest), "{rest:?}");
            }
        }
    }

    #[test]
    fn other_tokens_and_partial_sentinels_are_output() {
        let (out, found) = scan(&[b"<<STEER:zzz:1>>\n<<STE", b"ER:ab"], "abc");
        assert_eq!(found, None);
        assert_eq!(out, b"<<STEER:zzz:1>>\n<<STEER:ab");
    }

    #[test]
    fn the_script_never_contains_the_literal_sentinel() {
        let script = command_script("echo hi", "abc");
        assert!(!script.contains("<<STEER:abc:"), "{script}");
        assert!(script.contains("__STEER_EOF_abc\n"));
    }

    #[test]
    fn find_finds() {
        assert_eq!(find(b"aaab", b"ab"), Some(2));
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(find(b"", b"a"), None);
    }
}
