//! Sandbox tests against the real Docker engine. Without an engine they are skipped, unless
//! `CI` is set, where they fail. Every container they start carries `steerbench.test=sandbox`
//! and `steerbench.test.case=<test>`; a guard removes a test's containers however it ends, and
//! the first test of a run removes what earlier runs left behind.
//!
//! Images: `steerbench/debian-base:bookworm` (docker/build-base.sh), and for `diff`
//! `steerbench/sandbox-test:bookworm` (base + git), built on first use by
//! docker/build-sandbox-test.sh. The image cache tests build throwaway images of their own
//! (labelled `steerbench.test=image-cache`, named after a token of the test, removed by a guard;
//! the first such test of a run prunes unused labelled images older than an hour) and give
//! their caches a pattern only those names contain, so no other image is ever at risk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, ListContainersOptionsBuilder};
use tokio::sync::OnceCell;

use super::*;

const BASE_IMAGE: &str = "steerbench/debian-base:bookworm";
const GIT_IMAGE: &str = "steerbench/sandbox-test:bookworm";
const TEST_LABEL: (&str, &str) = ("steerbench.test", "sandbox");
const CASE_LABEL: &str = "steerbench.test.case";

const IMAGE_LABEL: &str = "steerbench.test=image-cache";
const MIB: u64 = 1024 * 1024;

static SWEPT: OnceCell<()> = OnceCell::const_new();
static OLD_TEST_IMAGES_PRUNED: OnceCell<()> = OnceCell::const_new();
static GIT_IMAGE_BUILT: OnceCell<()> = OnceCell::const_new();
/// The image cache tests run one at a time: on Podman, removing images while another test
/// builds its own kills that build ("while running runtime: signal: killed").
static IMAGE_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One test's handle on Docker; removes the test's containers when dropped (synchronously,
/// through the CLI, so that it also works while a panic unwinds out of the runtime).
struct Case {
    docker: Docker,
    name: &'static str,
}

impl Case {
    /// `None` (skip) when no engine is reachable, unless `CI` is set.
    async fn new(name: &'static str) -> Option<Case> {
        let docker = match Docker::connect().await {
            Ok(docker) => docker,
            Err(e) if std::env::var_os("CI").is_some() => panic!("CI is set and Docker is unreachable: {e}"),
            Err(e) => {
                eprintln!("skipping {name}: {e}");
                return None;
            }
        };
        SWEPT
            .get_or_init(|| async {
                let removed = docker.reap(TEST_LABEL).await.expect("sweep leftovers");
                if removed > 0 {
                    eprintln!("removed {removed} containers left by an earlier test run");
                }
            })
            .await;
        Some(Case { docker, name })
    }

    fn labels(&self) -> std::collections::BTreeMap<String, String> {
        [(TEST_LABEL.0, TEST_LABEL.1), (CASE_LABEL, self.name)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn spec(&self, image: &str) -> SandboxSpec {
        let mut spec = SandboxSpec::new(image);
        spec.labels = self.labels();
        spec
    }

    async fn sandbox(&self) -> Sandbox {
        self.docker.create(&self.spec(BASE_IMAGE)).await.expect("create sandbox")
    }

    /// Ids of the containers carrying `key=value`, running or not.
    async fn containers_labelled(&self, key: &str, value: &str) -> Vec<String> {
        let filters = HashMap::from([("label", vec![format!("{key}={value}")])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let list = self.docker.api.list_containers(Some(options)).await.expect("list containers");
        list.into_iter().filter_map(|c| c.id).collect()
    }

    async fn exists(&self, id: &str) -> bool {
        match self.docker.api.inspect_container(id, None).await {
            Ok(_) => true,
            Err(e) if docker::status(&e) == Some(404) => false,
            Err(e) => panic!("inspect {id}: {e}"),
        }
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let filter = format!("label={CASE_LABEL}={}", self.name);
        let Ok(out) = std::process::Command::new("docker").args(["ps", "-aq", "--filter", &filter]).output()
        else {
            return;
        };
        let ids: Vec<String> =
            String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker").args(["rm", "-f"]).args(&ids).output();
        }
    }
}

fn limits(timeout_secs: u64) -> ExecLimits {
    ExecLimits { timeout: Duration::from_secs(timeout_secs), max_output_bytes: 100_000 }
}

/// Command lines of the processes in the sandbox (through /proc: the base image has no ps).
async fn processes(sandbox: &Sandbox) -> String {
    let list = r#"for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' < "$f"; echo; done 2>/dev/null"#;
    sandbox.exec(list, &limits(30)).await.unwrap().output
}

/// Peak resident set of this test process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn repository_root() -> PathBuf {
    let file = Path::new(file!());
    let file = if file.is_absolute() {
        file.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file)
    };
    // worker/src/sandbox/tests.rs
    file.ancestors().nth(4).unwrap().to_path_buf()
}

async fn ensure_git_image() {
    GIT_IMAGE_BUILT
        .get_or_init(|| async {
            let script = repository_root().join("docker/build-sandbox-test.sh");
            let status = tokio::process::Command::new(&script).status().await;
            match status {
                Ok(s) if s.success() => {}
                other => panic!("{} failed: {other:?}", script.display()),
            }
        })
        .await;
}

#[tokio::test]
async fn sandbox_is_created_locked_down_and_removed() {
    let Some(case) = Case::new("created-locked-down-removed").await else { return };
    let mut spec = case.spec(BASE_IMAGE);
    spec.env = vec!["GREETING=hello from the spec".into()];
    spec.pids_limit = Some(256);
    spec.memory_bytes = Some(512 << 20);
    spec.cpus = Some(1.0);
    let sandbox = case.docker.create(&spec).await.unwrap();
    assert!(sandbox.name().starts_with("steer-"), "{}", sandbox.name());

    let inspect = case.docker.api.inspect_container(sandbox.id(), None).await.unwrap();
    let config = inspect.config.unwrap();
    assert_eq!(config.user.as_deref(), Some("root"));
    let labels = config.labels.unwrap();
    assert_eq!(labels.get("steerbench.sandbox").map(String::as_str), Some("1"));
    assert_eq!(labels.get(CASE_LABEL).map(String::as_str), Some(case.name));
    let host = inspect.host_config.unwrap();
    assert_eq!(host.privileged, Some(false));
    // Podman reports the defaults it dropped rather than `ALL`; the effective set is checked
    // below, inside the container, for both engines.
    if case.docker.engine() == Engine::Docker {
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    }
    assert_eq!(host.security_opt, Some(vec!["no-new-privileges".to_string()]));
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert_eq!(host.pids_limit, Some(256));
    assert_eq!(host.memory, Some(512 << 20));
    assert_eq!(host.nano_cpus, Some(1_000_000_000));

    let out = sandbox.exec("echo \"$GREETING\"; pwd; id -u", &limits(30)).await.unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.output, "hello from the spec\n/testbed\n0\n");
    assert!(!out.timed_out);
    assert_eq!(out.truncated_bytes, 0);

    // PID 1 is the engine's init (docker-init; Podman's catatonit, mounted as podman-init), keeping `sleep infinity`
    // alive and reaping orphans.
    let init = match case.docker.engine() {
        Engine::Docker => "docker-init",
        Engine::Podman => "podman-init",
    };
    let out = sandbox.exec("tr '\\0' ' ' < /proc/1/cmdline", &limits(30)).await.unwrap();
    assert!(out.output.contains(init) && out.output.contains("sleep infinity"), "{}", out.output);
    // no-new-privileges, and only the kept capabilities (CapEff is a hex mask).
    let out = sandbox.exec("grep -E '^(NoNewPrivs|CapEff)' /proc/self/status", &limits(30)).await.unwrap();
    assert!(out.output.contains("NoNewPrivs:\t1"), "{}", out.output);
    let mask =
        out.output.lines().find(|l| l.starts_with("CapEff")).unwrap().split_whitespace().nth(1).unwrap();
    // CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, FSETID 4, KILL 5, SETGID 6, SETUID 7.
    assert_eq!(u64::from_str_radix(mask, 16).unwrap(), 0b1111_1011, "{mask}");

    // Two commands at once on the same sandbox.
    let l = limits(30);
    let (a, b) = tokio::join!(sandbox.exec("sleep 0.2; echo a", &l), sandbox.exec("echo b", &l));
    assert_eq!((a.unwrap().output, b.unwrap().output), ("a\n".to_string(), "b\n".to_string()));

    let id = sandbox.id().to_string();
    sandbox.remove().await.unwrap();
    assert!(!case.exists(&id).await, "container {id} still exists after remove()");
}

#[tokio::test]
async fn exit_codes_are_reported() {
    let Some(case) = Case::new("exit-codes").await else { return };
    let sandbox = case.sandbox().await;
    for (command, code) in
        [("true", 0), ("false", 1), ("exit 3", 3), ("no-such-command", 127), ("kill -9 $$", 137)]
    {
        let out = sandbox.exec(command, &limits(30)).await.unwrap();
        assert_eq!(out.exit_code, Some(code), "{command}: {out:?}");
    }
    sandbox.remove().await.unwrap();
}

#[tokio::test]
async fn stdout_and_stderr_are_both_captured() {
    let Some(case) = Case::new("stdout-stderr").await else { return };
    let sandbox = case.sandbox().await;
    let out =
        sandbox.exec("echo to-stdout; echo to-stderr >&2; printf 'no newline'", &limits(30)).await.unwrap();
    for part in ["to-stdout\n", "to-stderr\n", "no newline"] {
        assert!(out.output.contains(part), "{part:?} missing from {:?}", out.output);
    }
    assert_eq!(out.output.len(), "to-stdout\nto-stderr\nno newline".len());
    sandbox.remove().await.unwrap();
}

#[tokio::test]
async fn non_utf8_output_becomes_replacement_characters() {
    let Some(case) = Case::new("non-utf8").await else { return };
    let sandbox = case.sandbox().await;
    let out = sandbox.exec(r"printf 'caf\351 \377\376 ok\n'", &limits(30)).await.unwrap();
    assert_eq!(out.output, "caf\u{FFFD} \u{FFFD}\u{FFFD} ok\n");
    sandbox.remove().await.unwrap();
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_inside_the_container() {
    let Some(case) = Case::new("exec-timeout").await else { return };
    let sandbox = case.sandbox().await;
    // A foreground sleep, a background one, one in a new session and one double-forked away
    // from its parent: all must die.
    let command = "sleep 1001 & setsid sleep 1002 & (sleep 1003 &); echo started; sleep 1000; echo never";
    let out = sandbox.exec(command, &limits(1)).await.unwrap();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, None);
    assert!(out.output.contains("started") && !out.output.contains("never"), "{:?}", out.output);
    assert!(out.duration >= Duration::from_secs(1) && out.duration < Duration::from_secs(10), "{out:?}");

    let left = processes(&sandbox).await;
    assert!(!left.contains("sleep 100"), "processes survived the timeout:\n{left}");
    // Reaped by docker-init, not left as zombies.
    let zombies = sandbox.exec("grep -l '^State:.*Z' /proc/[0-9]*/status", &limits(30)).await.unwrap();
    assert_eq!(zombies.output, "", "zombies left behind");
    // The sandbox is still usable.
    assert_eq!(sandbox.exec("echo ok", &limits(30)).await.unwrap().output, "ok\n");
    sandbox.remove().await.unwrap();
}

#[tokio::test]
async fn fifty_megabytes_of_output_are_capped_without_holding_them() {
    let Some(case) = Case::new("output-cap").await else { return };
    let sandbox = case.sandbox().await;
    let before = peak_rss_kib();
    let budget = ExecLimits { timeout: Duration::from_secs(120), max_output_bytes: 10_000 };
    let out = sandbox.exec("yes 0123456789 | head -c 52428800", &budget).await.unwrap();
    let grown_kib = peak_rss_kib().saturating_sub(before);
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.truncated_bytes, 52_428_800 - 10_000);
    assert!(out.output.starts_with("0123456789\n0123456789\n"), "{:?}", &out.output[..40]);
    assert!(out.output.contains("\n[... 52418800 bytes of output truncated ...]\n"));
    // 52428800 = 11 * 4766254 + 6: the last line is cut after "012345".
    assert!(out.output.ends_with("0123456789\n012345"), "{:?}", &out.output[out.output.len() - 40..]);
    assert!(out.output.len() < 10_100);
    // 50 MB held in memory would show here; the capture itself is 10 kB.
    assert!(grown_kib < 32 * 1024, "peak RSS grew by {grown_kib} KiB");
    sandbox.remove().await.unwrap();
}

#[tokio::test]
async fn shell_keeps_working_directory_environment_and_exit_codes() {
    let Some(case) = Case::new("shell-state").await else { return };
    let sandbox = case.sandbox().await;
    let mut shell = sandbox.shell().await.unwrap();
    let l = limits(30);

    let out = shell.run("cd /tmp && export FOO=bar && answer=42", &l).await.unwrap();
    assert_eq!((out.exit_code, out.output.as_str()), (Some(0), ""));
    let out = shell.run("pwd; echo \"$FOO $answer\"", &l).await.unwrap();
    assert_eq!(out.output, "/tmp\nbar 42\n");
    assert_eq!(shell.run("false", &l).await.unwrap().exit_code, Some(1));
    // `$?` carries over too.
    assert_eq!(shell.run("echo $?", &l).await.unwrap().output, "1\n");
    assert_eq!(shell.run("(exit 7)", &l).await.unwrap().exit_code, Some(7));
    // stderr is interleaved; output without a final newline stays as it is.
    let out = shell.run("echo one; echo two >&2; printf three", &l).await.unwrap();
    assert_eq!(out.output, "one\ntwo\nthree");
    // Commands cannot read the shell's input.
    let out = shell.run("cat; echo after-cat", &l).await.unwrap();
    assert_eq!(out.output, "after-cat\n");
    // A syntax error (an unbalanced quote) does not swallow the sentinel.
    let out = shell.run("echo \"unbalanced", &l).await.unwrap();
    assert_eq!(out.exit_code, Some(2), "{out:?}");
    // Here-documents and functions in commands work, and functions persist.
    let out = shell.run("f() { echo \"f:$1\"; }\ncat <<'EOF'\nline $HOME\nEOF", &l).await.unwrap();
    assert_eq!(out.output, "line $HOME\n");
    assert_eq!(shell.run("f x", &l).await.unwrap().output, "f:x\n");
    // The environment of the spec and the exec's workdir are the shell's too.
    assert_eq!(shell.run("cd - >/dev/null; pwd", &l).await.unwrap().output, "/testbed\n");
    // Large output: capped, and the sentinel is still found after it.
    let budget = ExecLimits { timeout: Duration::from_secs(60), max_output_bytes: 1000 };
    let out = shell.run("yes | head -c 5000000; echo; echo done", &budget).await.unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert!(out.output.ends_with("y\n\ndone\n"), "{:?}", out.output);
    assert_eq!(out.truncated_bytes, 5_000_000 + 6 - 1000);
    sandbox.remove().await.unwrap();
}

#[tokio::test]
async fn shell_timeout_kills_the_command_and_restores_the_state() {
    let Some(case) = Case::new("shell-timeout").await else { return };
    let sandbox = case.sandbox().await;
    let mut shell = sandbox.shell().await.unwrap();
    let l = limits(30);
    // A background job of an earlier command (aged a second) must survive the timeout.
    let setup =
        "cd /tmp; export KEPT=yes; unexported=1; f() { echo f-kept; }; set -o noglob; sleep 2000 & sleep 1";
    assert_eq!(shell.run(setup, &l).await.unwrap().exit_code, Some(0));
    let out = shell.run("echo begun; cd /; sleep 1000 | sleep 1001; echo never", &limits(1)).await.unwrap();
    assert!(out.timed_out && out.exit_code.is_none(), "{out:?}");
    assert!(out.output.starts_with("begun\n") && !out.output.contains("never"), "{:?}", out.output);
    assert!(out.output.contains("timed out after 1s"), "{:?}", out.output);
    let left = processes(&sandbox).await;
    assert!(!left.contains("sleep 100"), "processes survived the timeout:\n{left}");
    assert!(left.contains("sleep 2000"), "an earlier background job was killed:\n{left}");
    assert_eq!(left.matches("bash --noprofile --norc").count(), 0, "the old shell survived:\n{left}");
    // A new shell, with the state from before the timed-out command.
    let out = shell
        .run("pwd; echo \"$KEPT ${unexported:-lost}\"; f; [[ $- == *f* ]] && echo noglob", &l)
        .await
        .unwrap();
    assert_eq!(out.output, "/tmp\nyes lost\nf-kept\nnoglob\n");

    // A loop of builtins runs inside the shell process itself: killing the shell stops it too.
    let out = shell.run("while :; do :; done", &limits(1)).await.unwrap();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(shell.run("pwd", &l).await.unwrap().output, "/tmp\n");
    let left = processes(&sandbox).await;
    assert_eq!(left.matches("bash --noprofile --norc").count(), 1, "old shells left:\n{left}");
    sandbox.remove().await.unwrap();
}

#[tokio::test]
async fn an_exited_shell_is_replaced() {
    let Some(case) = Case::new("shell-exit").await else { return };
    let sandbox = case.sandbox().await;
    let mut shell = sandbox.shell().await.unwrap();
    shell.run("cd /tmp", &limits(30)).await.unwrap();
    let out = shell.run("echo bye; exit 5", &limits(30)).await.unwrap();
    assert_eq!(out.exit_code, Some(5));
    assert!(!out.timed_out);
    assert!(out.output.starts_with("bye\n\n[the shell exited;"), "{:?}", out.output);
    let out = shell.run("pwd; set -e; false; echo unreachable", &limits(30)).await.unwrap();
    assert_eq!(out.exit_code, Some(1));
    assert!(out.output.starts_with("/tmp\n\n[the shell exited;"), "{:?}", out.output);
    assert_eq!(shell.run("echo again; pwd", &limits(30)).await.unwrap().output, "again\n/tmp\n");
    sandbox.remove().await.unwrap();
}

#[tokio::test]
async fn files_round_trip_through_the_archive_api() {
    let Some(case) = Case::new("files").await else { return };
    let sandbox = case.sandbox().await;
    let l = limits(30);

    sandbox.write_file("/tmp/a/b/hello.txt", b"hello\n", 0o600).await.unwrap();
    assert_eq!(sandbox.read_file("/tmp/a/b/hello.txt", 1024).await.unwrap(), b"hello\n");
    let out = sandbox.exec("stat -c '%a %U' /tmp/a/b/hello.txt", &l).await.unwrap();
    assert_eq!(out.output, "600 root\n");

    // Binary, relative to the workdir, overwriting.
    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    sandbox.write_file("data.bin", b"old", 0o644).await.unwrap();
    sandbox.write_file("data.bin", &binary, 0o755).await.unwrap();
    assert_eq!(sandbox.read_file("/testbed/data.bin", 1 << 20).await.unwrap(), binary);
    assert_eq!(sandbox.exec("stat -c %a data.bin", &l).await.unwrap().output, "755\n");

    // Symlinks are followed (/etc/os-release is a relative one).
    sandbox.exec("ln -s /tmp/a/b/hello.txt /tmp/link", &l).await.unwrap();
    assert_eq!(sandbox.read_file("/tmp/link", 1024).await.unwrap(), b"hello\n");
    let os_release = sandbox.read_file("/etc/os-release", 1 << 16).await.unwrap();
    assert!(String::from_utf8(os_release).unwrap().contains("bookworm"));

    assert!(matches!(sandbox.read_file("/nope", 10).await, Err(Error::NotFound { .. })));
    assert!(matches!(sandbox.read_file("/tmp", 10).await, Err(Error::NotAFile { .. })));
    assert!(matches!(sandbox.read_file("data.bin", 99_999).await, Err(Error::TooLarge { .. })));
    sandbox.write_file("/tmp/empty", b"", 0o644).await.unwrap();
    assert_eq!(sandbox.read_file("/tmp/empty", 0).await.unwrap(), b"");
    sandbox.remove().await.unwrap();
}

#[tokio::test]
async fn diff_includes_modified_new_deleted_and_binary_files() {
    let Some(case) = Case::new("diff").await else { return };
    ensure_git_image().await;
    let sandbox = case.docker.create(&case.spec(GIT_IMAGE)).await.unwrap();
    let l = limits(60);
    let setup = "set -e
        git init -q . && git config user.email t@example.com && git config user.name t
        printf 'one\\ntwo\\n' > a.txt; printf 'gone\\n' > b.txt; echo '*.log' > .gitignore
        git add -A && git commit -qm init
        printf 'one\\n2\\n' > a.txt; rm b.txt; printf 'new\\n' > new.txt
        printf '\\000\\001\\002\\377' > blob.bin; echo noise > ignored.log
        git add a.txt";
    let out = sandbox.exec(setup, &l).await.unwrap();
    assert_eq!(out.exit_code, Some(0), "{}", out.output);
    let status_before = sandbox.exec("git status --porcelain", &l).await.unwrap().output;

    let patch = sandbox.diff().await.unwrap();
    assert!(patch.contains("diff --git a/a.txt b/a.txt") && patch.contains("-two\n+2\n"), "{patch}");
    assert!(patch.contains("diff --git a/b.txt b/b.txt\ndeleted file mode"), "{patch}");
    assert!(patch.contains("diff --git a/new.txt b/new.txt\nnew file mode"), "{patch}");
    assert!(
        patch.contains("diff --git a/blob.bin b/blob.bin\nnew file mode")
            && patch.contains("GIT binary patch")
    );
    assert!(!patch.contains("ignored.log"), "{patch}");
    // The repository's index is as it was (a.txt staged, the rest not).
    assert_eq!(sandbox.exec("git status --porcelain", &l).await.unwrap().output, status_before);

    // The patch applies with `git apply` on a clean checkout and reproduces the tree.
    sandbox.write_file("/tmp/patch.diff", patch.as_bytes(), 0o644).await.unwrap();
    let check = "set -e; git clone -q /testbed /tmp/clone; cd /tmp/clone; git apply /tmp/patch.diff
        cmp a.txt /testbed/a.txt; cmp new.txt /testbed/new.txt; cmp blob.bin /testbed/blob.bin; test ! -e b.txt";
    let out = sandbox.exec(check, &l).await.unwrap();
    assert_eq!(out.exit_code, Some(0), "{}", out.output);

    // A changed file in Latin-1: the patch is returned as bytes in the error, not mangled.
    sandbox.write_file("latin1.txt", b"caf\xe9\n", 0o644).await.unwrap();
    match sandbox.diff().await {
        Err(Error::PatchNotUtf8 { patch, valid_up_to }) => {
            assert!(patch.windows(5).any(|w| w == b"caf\xe9\n"));
            assert!(valid_up_to < patch.len());
        }
        other => panic!("expected PatchNotUtf8, got {other:?}"),
    }

    // No changes: an empty patch.
    sandbox.exec("git reset -q --hard && git clean -qfd", &l).await.unwrap();
    assert_eq!(sandbox.diff().await.unwrap(), "");
    sandbox.remove().await.unwrap();
}

#[tokio::test]
async fn diff_without_git_is_a_git_error() {
    let Some(case) = Case::new("diff-no-git").await else { return };
    let sandbox = case.sandbox().await;
    match sandbox.diff().await {
        Err(Error::Git { exit_code: Some(127), output }) => assert!(output.contains("git"), "{output}"),
        other => panic!("expected a git error, got {other:?}"),
    }
    sandbox.remove().await.unwrap();
}

#[tokio::test]
async fn reaper_removes_containers_of_an_earlier_incarnation() {
    let Some(case) = Case::new("reaper").await else { return };
    let worker = format!("test-worker-{}", exec::new_token());
    let mut spec = case.spec(BASE_IMAGE);
    spec.labels.insert("steerbench.worker".into(), worker.clone());
    // A sandbox whose owner vanished without running its destructor...
    std::mem::forget(case.docker.create(&spec).await.unwrap());
    // ... and a container made by another program (or an older version) with the same label.
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    let body = ContainerCreateBody {
        image: Some(BASE_IMAGE.into()),
        entrypoint: Some(vec!["sleep".into(), "infinity".into()]),
        labels: Some(labels.clone()),
        host_config: Some(raw_host_config(&case.docker)),
        ..Default::default()
    };
    let raw = case.docker.api.create_container(None, body).await.unwrap();
    case.docker.api.start_container(&raw.id, None).await.unwrap();
    // Another worker's sandbox must survive.
    labels.insert("steerbench.worker".into(), format!("{worker}-other"));
    let options =
        CreateContainerOptionsBuilder::new().name(&format!("steer-other-{}", exec::new_token())).build();
    let body =
        ContainerCreateBody { image: Some(BASE_IMAGE.into()), labels: Some(labels), ..Default::default() };
    let other = case.docker.api.create_container(Some(options), body).await.unwrap();

    assert_eq!(case.containers_labelled("steerbench.worker", &worker).await.len(), 2);
    assert_eq!(case.docker.reap(("steerbench.worker", &worker)).await.unwrap(), 2);
    assert_eq!(case.containers_labelled("steerbench.worker", &worker).await, Vec::<String>::new());
    assert!(case.exists(&other.id).await);
    assert_eq!(case.docker.reap(("steerbench.worker", &worker)).await.unwrap(), 0);
}

#[tokio::test]
async fn a_dropped_sandbox_is_removed() {
    let Some(case) = Case::new("dropped").await else { return };
    let sandbox = case.sandbox().await;
    let id = sandbox.id().to_string();
    let shell = sandbox.shell().await.unwrap();
    drop(sandbox);
    case.docker.wait_for_removals().await;
    assert!(!case.exists(&id).await, "container {id} still exists after drop");
    drop(shell);
}

#[tokio::test]
async fn a_cancelled_create_leaves_no_container() {
    let Some(case) = Case::new("cancelled-create").await else { return };
    let spec = case.spec(BASE_IMAGE);
    // Cancel creations ever later until one completes: each cut lands somewhere else in
    // create + start.
    let mut budget = Duration::ZERO;
    loop {
        match tokio::time::timeout(budget, case.docker.create(&spec)).await {
            Ok(sandbox) => {
                sandbox.unwrap().remove().await.unwrap();
                break;
            }
            Err(_) => {
                case.docker.wait_for_removals().await;
                let left = case.containers_labelled(CASE_LABEL, case.name).await;
                assert!(left.is_empty(), "a create cancelled after {budget:?} left {left:?}");
            }
        }
        budget = (budget * 2).max(Duration::from_millis(1));
        assert!(budget < Duration::from_secs(60), "create never completed");
    }
}

#[tokio::test]
async fn network_is_off_unless_asked_for() {
    let Some(case) = Case::new("network").await else { return };
    let sandbox = case.sandbox().await;
    let out = sandbox.exec("ls /sys/class/net", &limits(30)).await.unwrap();
    assert_eq!(out.output, "lo\n");
    sandbox.remove().await.unwrap();

    let mut spec = case.spec(BASE_IMAGE);
    spec.network = true;
    let sandbox = case.docker.create(&spec).await.unwrap();
    let out = sandbox.exec("ls /sys/class/net", &limits(30)).await.unwrap();
    assert!(out.output.contains("eth0"), "{:?}", out.output);
    sandbox.remove().await.unwrap();
}

#[tokio::test]
async fn images_present_or_unavailable() {
    let Some(case) = Case::new("images").await else { return };
    assert!(case.docker.image_present(BASE_IMAGE).await.unwrap());
    case.docker.ensure_image(BASE_IMAGE, None).await.unwrap();

    // Nothing listens on 127.0.0.1:9: every attempt fails at once, and is retried.
    let missing = "127.0.0.1:9/steerbench/missing:never";
    assert!(!case.docker.image_present(missing).await.unwrap());
    let policy = PullPolicy {
        attempts: 2,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
        stall_timeout: Duration::from_secs(60),
    };
    let docker = case.docker.clone().with_pull_policy(policy);
    match docker.ensure_image(missing, None).await {
        Err(Error::ImageUnavailable { image, reason }) => {
            assert_eq!(image, missing);
            assert!(!reason.is_empty());
        }
        other => panic!("expected ImageUnavailable, got {other:?}"),
    }
    match case.docker.create(&case.spec(missing)).await {
        Err(Error::ImageUnavailable { .. }) => {}
        other => panic!("expected ImageUnavailable, got {other:?}"),
    }
}

/// A registry address that accepts connections and never answers: a pull from it hangs.
async fn silent_registry() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        // Held open, unanswered, for as long as the test runs.
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    addr
}

#[tokio::test]
async fn a_cancelled_pull_leaves_no_pulling_status() {
    let Some(case) = Case::new("pull-cancelled").await else { return };
    let image = format!("{}/steerbench/hangs:v1", silent_registry().await);
    let docker = case.docker.clone().with_pull_policy(PullPolicy { attempts: 1, ..Default::default() });
    let pulling = |docker: &Docker| docker.pulls_in_progress().iter().any(|p| p.contains(&image));
    let mut pull = Box::pin(docker.ensure_image(&image, None));
    // The pull is under way (and reported) until it is given up...
    let waited = tokio::time::timeout(Duration::from_secs(2), &mut pull).await;
    assert!(waited.is_err(), "the pull from a silent registry ended: {waited:?}");
    assert!(pulling(&docker), "the status says what is being pulled: {:?}", docker.pulls_in_progress());
    // ...as a run cancelled, a lease lost or a drain drops it.
    drop(pull);
    assert!(!pulling(&docker), "a dropped pull is still reported: {:?}", docker.pulls_in_progress());
    assert!(!pulling(&case.docker), "clones share the status: {:?}", case.docker.pulls_in_progress());
}

#[test]
fn registry_credentials_apply_to_their_own_registry_only() {
    let auth = |server: Option<&str>| RegistryAuth {
        username: Some("u".into()),
        password: Some("p".into()),
        server_address: server.map(str::to_string),
        ..Default::default()
    };
    let private = auth(Some("https://Registry.Lab:5000/v2/"));
    assert!(private.applies_to("registry.lab:5000/sweb.eval.x86_64.a:latest"));
    assert!(
        !private.applies_to("registry.lab/sweb.eval.x86_64.a:latest"),
        "another port is another registry"
    );
    assert!(!private.applies_to("evil.example/sweb.eval.x86_64.a:latest"));
    assert!(!private.applies_to("sweb.eval.x86_64.a:latest"), "a bare name is on Docker Hub");
    let hub = auth(None);
    assert!(hub.applies_to("swebench/sweb.eval.x86_64.a:latest"));
    assert!(hub.applies_to("docker.io/swebench/x:1"));
    assert!(!hub.applies_to("localhost/x:1"));
    assert!(!hub.applies_to("ghcr.io/x/y:1"));
    assert!(auth(Some("https://index.docker.io/v1/")).applies_to("python:3.11"));
}

/// A registry that refuses every request with a Basic-auth challenge and records the
/// `Authorization` header of each: what a Docker engine sends it while pulling.
async fn challenging_registry() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut len = 0;
                // A TLS hello (the engine tries HTTPS first) never ends in a blank line: drop it.
                while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
                    match tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf[len..])).await {
                        Ok(Ok(n)) if n > 0 => len += n,
                        _ => return,
                    }
                }
                let request = String::from_utf8_lossy(&buf[..len]).to_string();
                for line in request.lines() {
                    if line.to_ascii_lowercase().starts_with("authorization:") {
                        record.lock().unwrap().push(line.to_string());
                    }
                }
                let reply = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"steer-test\"\r\n\
                             Docker-Distribution-API-Version: registry/2.0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, seen)
}

/// The host configuration a container made outside `Docker::create` needs on this engine:
/// none on Docker, limits the host allows on Podman.
fn raw_host_config(docker: &Docker) -> bollard::models::HostConfig {
    bollard::models::HostConfig {
        ulimits: (docker.engine() == Engine::Podman).then(|| SandboxSpec::new(BASE_IMAGE).podman_rlimits()),
        ..Default::default()
    }
}

#[tokio::test]
async fn registry_credentials_are_sent_to_their_registry_and_no_other() {
    let Some(case) = Case::new("registry-auth").await else { return };
    if case.docker.engine() == Engine::Podman {
        // Podman pulls over TLS only, unless registries.conf marks the registry insecure; this
        // test's registries speak plain HTTP on a random port.
        eprintln!("skipped on Podman: the test registries speak plain HTTP");
        return;
    }
    let (ours, ours_saw) = challenging_registry().await;
    let (theirs, theirs_saw) = challenging_registry().await;
    let auth = RegistryAuth {
        username: Some("steer".into()),
        password: Some("registry-password-0123".into()),
        server_address: Some(ours.clone()),
        ..Default::default()
    };
    let docker = case.docker.clone().with_pull_policy(PullPolicy { attempts: 1, ..Default::default() });
    for (registry, saw) in [(&theirs, &theirs_saw), (&ours, &ours_saw)] {
        let image = format!("{registry}/steerbench/absent:v1");
        let pulled = docker.ensure_image(&image, Some(auth.clone())).await;
        assert!(matches!(pulled, Err(Error::ImageUnavailable { .. })), "{image}: {pulled:?}");
        assert!(!saw.lock().unwrap().iter().any(|h| h.contains("registry-password")));
    }
    // The engine answered the challenge of the registry the credentials are for (so the test
    // can see credentials when they are sent)...
    use base64::Engine as _;
    let basic =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("steer:registry-password-0123"));
    assert!(ours_saw.lock().unwrap().iter().any(|h| h.ends_with(&basic)), "{:?}", ours_saw.lock().unwrap());
    // ...and sent the other registry none at all.
    assert!(theirs_saw.lock().unwrap().is_empty(), "{:?}", theirs_saw.lock().unwrap());
}

#[tokio::test]
async fn a_removed_sandbox_reports_container_gone() {
    let Some(case) = Case::new("gone").await else { return };
    let sandbox = case.sandbox().await;
    let mut shell = sandbox.shell().await.unwrap();
    case.docker.remove_container(sandbox.id()).await.unwrap();
    assert!(matches!(sandbox.exec("true", &limits(30)).await, Err(Error::ContainerGone { .. })));
    assert!(matches!(shell.run("true", &limits(30)).await, Err(Error::ContainerGone { .. })));
    assert!(matches!(sandbox.write_file("/tmp/x", b"x", 0o644).await, Err(Error::ContainerGone { .. })));
    assert!(matches!(sandbox.read_file("/etc/hostname", 100).await, Err(Error::ContainerGone { .. })));
    sandbox.remove().await.unwrap();
}

#[tokio::test]
async fn bench_measures_every_method() {
    let Some(case) = Case::new("bench").await else { return };
    let bench = bench::run_labelled(&case.docker, BASE_IMAGE, 5, case.labels()).await.unwrap();
    assert!(bench.shell_p50_ms > 0.0 && bench.api_exec_p50_ms > 0.0 && bench.create_to_ready_ms > 0.0);
    assert!(bench.shell_p50_ms <= bench.shell_p99_ms);
    let json = serde_json::to_value(&bench).unwrap();
    for key in ["shell_p50_ms", "api_exec_p99_ms", "cli_exec_p50_ms", "create_to_ready_ms"] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    assert_eq!(case.containers_labelled(CASE_LABEL, case.name).await, Vec::<String>::new());
}

/// One test's throwaway images: each built FROM the base image with a layer of its own
/// (1 MiB of random bytes), labelled, and named `steerbench-cachetest-<token>/...` so that a
/// cache given [`TestImages::pattern`] manages exactly the [`TestImages::instance`] names.
/// Removes them when dropped (declare it before the [`Case`], whose containers must go first).
struct TestImages {
    token: String,
    built: Vec<String>,
}

impl TestImages {
    fn new() -> TestImages {
        TestImages { token: exec::new_token(), built: Vec::new() }
    }

    /// What the managed names contain and no other image's name does.
    fn pattern(&self) -> String {
        format!("steerbench-cachetest-{}/sweb.eval.", self.token)
    }

    /// A name the cache manages by its pattern, like an instance image.
    fn instance(&self, name: &str) -> String {
        format!("steerbench-cachetest-{}/sweb.eval.x86_64.{name}:latest", self.token)
    }

    /// A name the cache manages only once it has acquired it.
    fn other(&self, name: &str) -> String {
        format!("steerbench-cachetest-{}/other-{name}:latest", self.token)
    }

    async fn build(&mut self, name: String) -> String {
        OLD_TEST_IMAGES_PRUNED
            .get_or_init(|| async {
                // Listed and removed one by one: Podman refuses `image prune --all` with a
                // label filter ("dangling" filter given twice).
                let out = tokio::process::Command::new("docker")
                    .args([
                        "image",
                        "ls",
                        "--quiet",
                        "--no-trunc",
                        "--filter",
                        &format!("label={IMAGE_LABEL}"),
                    ])
                    .args(["--format", "{{.ID}} {{.CreatedAt}}"])
                    .output()
                    .await
                    .expect("docker image ls");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let (id, created) = line.split_once(' ').unwrap_or((line, ""));
                    let created = created
                        .get(..19)
                        .and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").ok());
                    if created.is_some_and(|t| t.and_utc() < hour_ago) {
                        let _ = tokio::process::Command::new("docker")
                            .args(["rmi", "--force", id])
                            .output()
                            .await;
                    }
                }
            })
            .await;
        self.built.push(name.clone());
        let dockerfile =
            format!("FROM {BASE_IMAGE}\nRUN head -c {MIB} /dev/urandom > /cache-test-blob && echo {name}\n");
        let mut child = tokio::process::Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "--quiet", "--label", IMAGE_LABEL, "--tag", &name, "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker build");
        let mut stdin = child.stdin.take().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stdin, dockerfile.as_bytes()).await.unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        assert!(out.status.success(), "building {name}: {}", String::from_utf8_lossy(&out.stderr));
        name
    }

    async fn build_all<const N: usize>(&mut self, names: [String; N]) -> [String; N] {
        self.built.extend(names.iter().cloned());
        let mut builders = Vec::new();
        for name in names {
            let mut one = TestImages { token: self.token.clone(), built: Vec::new() };
            builders.push(async move {
                let name = one.build(name).await;
                one.built.clear();
                name
            });
        }
        futures_util::future::join_all(builders).await.try_into().unwrap()
    }
}

impl Drop for TestImages {
    fn drop(&mut self) {
        if !self.built.is_empty() {
            // By name: these tags are this test's own. Already removed ones fail harmlessly.
            let _ = std::process::Command::new("docker").args(["rmi", "--force"]).args(&self.built).output();
        }
    }
}

/// IDs of the images present.
async fn image_ids(docker: &Docker) -> Vec<String> {
    let list = docker.api.list_images(None::<bollard::query_parameters::ListImagesOptions>).await.unwrap();
    list.into_iter().map(|i| i.id).collect()
}

#[tokio::test]
async fn image_cache_evicts_the_least_recently_used_image_first() {
    let _one_at_a_time = IMAGE_TESTS.lock().await;
    let mut images = TestImages::new();
    let Some(case) = Case::new("image-cache-lru").await else { return };
    let [a, b, c, d] = images.build_all(["a", "b", "c", "d"].map(|n| images.other(n))).await;
    // Room for two of the 1 MiB layers; the base layer they share belongs to an unmanaged image.
    let cache =
        ImageCache::new(case.docker.clone(), 5 * MIB / 2).managing_repositories_containing(&images.pattern());
    assert_eq!(cache.held().await.unwrap(), Vec::<String>::new());

    drop(cache.acquire(&a).await.unwrap());
    drop(cache.acquire(&b).await.unwrap());
    drop(cache.acquire(&a).await.unwrap());
    assert_eq!(cache.held().await.unwrap(), [a.clone(), b.clone()]);
    let bytes = cache.managed_bytes().await.unwrap();
    assert!((2 * MIB..2 * MIB + 64 * 1024).contains(&bytes), "{bytes} bytes for two images");

    // A third does not fit: b is the least recently used.
    let c_guard = cache.acquire(&c).await.unwrap();
    assert!(!case.docker.image_present(&b).await.unwrap(), "{b} was not evicted");
    assert_eq!(cache.held().await.unwrap(), [a.clone(), c.clone()]);
    // Then a, though c is still in use.
    drop(cache.acquire(&d).await.unwrap());
    assert_eq!(cache.held().await.unwrap(), [c.clone(), d.clone()]);
    drop(c_guard);
    assert_eq!(cache.evict().await.unwrap(), Vec::<String>::new(), "under budget: nothing to evict");
}

#[tokio::test]
async fn a_zero_budget_evicts_every_image_not_in_use() {
    let _one_at_a_time = IMAGE_TESTS.lock().await;
    let mut images = TestImages::new();
    let Some(case) = Case::new("image-cache-in-use").await else { return };
    let [a, b, c] = images.build_all(["a", "b", "c"].map(|n| images.instance(n))).await;
    let cache = ImageCache::new(case.docker.clone(), 0).managing_repositories_containing(&images.pattern());
    assert_eq!(cache.held().await.unwrap(), [a.clone(), b.clone(), c.clone()]);

    // b runs a container; a is acquired (twice), which evicts the one idle image.
    let sandbox = case.docker.create(&case.spec(&b)).await.unwrap();
    let a_first = cache.acquire(&a).await.unwrap();
    assert_eq!(a_first.image(), a);
    assert_eq!(cache.held().await.unwrap(), [a.clone(), b.clone()]);
    let a_second = cache.acquire(&a).await.unwrap();
    drop(a_first);
    assert_eq!(cache.evict().await.unwrap(), Vec::<String>::new());
    drop(a_second);
    assert_eq!(cache.evict().await.unwrap(), std::slice::from_ref(&a));
    assert!(case.docker.image_present(&b).await.unwrap());
    sandbox.remove().await.unwrap();
    assert_eq!(cache.evict().await.unwrap(), std::slice::from_ref(&b));
    assert_eq!(cache.held().await.unwrap(), Vec::<String>::new());
    assert_eq!(cache.managed_bytes().await.unwrap(), 0);
}

#[tokio::test]
async fn image_cache_manages_instance_images_and_what_it_acquired_only() {
    let _one_at_a_time = IMAGE_TESTS.lock().await;
    let mut images = TestImages::new();
    let Some(case) = Case::new("image-cache-managed").await else { return };
    let before = image_ids(&case.docker).await;
    // Built one after the other: m1 arrived first, so goes first.
    let m1 = images.build(images.instance("m1")).await;
    let m2 = images.build(images.instance("m2")).await;
    let [unmanaged, acquired] = images.build_all([images.other("unmanaged"), images.other("acquired")]).await;
    let cache = ImageCache::new(case.docker.clone(), 0).managing_repositories_containing(&images.pattern());
    assert_eq!(cache.held().await.unwrap(), [m1.clone(), m2.clone()]);
    assert_eq!(cache.evict().await.unwrap(), [m1.clone(), m2.clone()]);

    let guard = cache.acquire(&acquired).await.unwrap();
    assert_eq!(cache.held().await.unwrap(), std::slice::from_ref(&acquired));
    drop(guard);
    assert_eq!(cache.evict().await.unwrap(), std::slice::from_ref(&acquired));
    assert_eq!(cache.held().await.unwrap(), Vec::<String>::new());

    assert!(case.docker.image_present(&unmanaged).await.unwrap());
    let after = image_ids(&case.docker).await;
    let lost: Vec<&String> = before.iter().filter(|id| !after.contains(id)).collect();
    assert!(lost.is_empty(), "images that were there before the test are gone: {lost:?}");
    // The default cache manages instance images only (held() changes nothing).
    let default = ImageCache::new(case.docker.clone(), 0);
    for name in default.held().await.unwrap() {
        assert!(name.contains(INSTANCE_IMAGE_PATTERN), "{name}");
    }
}

/// The worker runs sandboxes inside spawned tasks: every future here must be `Send`.
#[allow(dead_code)]
fn futures_are_send(
    docker: &Docker,
    cache: &ImageCache,
    sandbox: &Sandbox,
    shell: &mut Shell,
    limits: &ExecLimits,
) {
    fn send<T: Send>(_: T) {}
    send(cache.acquire("image"));
    send(cache.held());
    send(cache.evict());
    send(cache.managed_bytes());
    let spec = SandboxSpec::new("image");
    send(docker.create(&spec));
    send(docker.ensure_image("image", None));
    send(docker.reap(("key", "value")));
    send(docker.wait_for_removals());
    send(sandbox.exec("true", limits));
    send(sandbox.shell());
    send(sandbox.write_file("/f", b"", 0o644));
    send(sandbox.read_file("/f", 1));
    send(sandbox.diff());
    send(shell.run("true", limits));
    send(bench::run(docker, "image", 1));
}

#[tokio::test]
async fn a_command_killed_by_the_memory_limit_is_reported_as_oom() {
    let Some(case) = Case::new("oom").await else { return };
    let mut spec = case.spec(BASE_IMAGE);
    spec.memory_bytes = Some(64 * 1024 * 1024);
    let sandbox = case.docker.create(&spec).await.unwrap();
    assert!(!sandbox.oom_killed().await.unwrap(), "nothing was killed yet");
    // Holding 300 MB in a shell variable under a 64 MB limit: the kernel kills it.
    let out =
        sandbox.exec("x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo ${#x}", &limits(60)).await.unwrap();
    assert_ne!(out.exit_code, Some(0), "{out:?}");
    assert!(sandbox.oom_killed().await.unwrap(), "the engine saw the OOM kill: {out:?}");
    sandbox.remove().await.unwrap();
}

/// A sandbox without network cannot reach anything outside it: not the host (where the
/// coordinator and Postgres listen), not the Docker bridge. The same probe from a sandbox
/// with network reaches the host's listener, so the probe itself works.
#[tokio::test]
async fn a_sandbox_without_network_cannot_reach_the_host() {
    let Some(case) = Case::new("no-network-reaches-nothing").await else { return };
    // The bridge's gateway (the host's side of docker0): given, or the subnet's first address.
    let ipam = std::process::Command::new("docker")
        .args(["network", "inspect", "bridge", "-f", "{{json .IPAM.Config}}"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let ipam: serde_json::Value = serde_json::from_str(&ipam).expect("the bridge's IPAM config");
    let gateway = match ipam[0]["Gateway"].as_str() {
        Some(g) if !g.is_empty() => g.to_string(),
        _ => {
            let subnet = ipam[0]["Subnet"].as_str().expect("the bridge has a subnet");
            let base: std::net::Ipv4Addr = subnet.split('/').next().unwrap().parse().unwrap();
            std::net::Ipv4Addr::from(u32::from(base) + 1).to_string()
        }
    };
    // Stands for the coordinator or Postgres: a listener on every host address.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { while let Ok((_conn, _)) = listener.accept().await {} });
    let probe = |ip: &str| {
        format!("timeout 5 bash -c 'echo > /dev/tcp/{ip}/{port}' 2>/dev/null && echo REACHED || echo BLOCKED")
    };

    let isolated = case.sandbox().await;
    for ip in ["127.0.0.1", gateway.as_str()] {
        let out = isolated.exec(&probe(ip), &limits(30)).await.unwrap();
        assert_eq!(out.output.trim(), "BLOCKED", "{ip}:{port} was reachable from a sandbox without network");
    }
    let out =
        isolated.exec("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '", &limits(30)).await.unwrap();
    assert_eq!(out.output.trim(), "lo", "only a loopback interface");
    isolated.remove().await.unwrap();

    let mut spec = case.spec(BASE_IMAGE);
    spec.network = true;
    let connected = case.docker.create(&spec).await.unwrap();
    let out = connected.exec(&probe(&gateway), &limits(30)).await.unwrap();
    assert_eq!(out.output.trim(), "REACHED", "the probe works when the sandbox has a network");
    connected.remove().await.unwrap();
}

/// A sandbox made from the defaults is limited like a SWE-bench Verified task declares:
/// 4 GiB of memory (no swap beyond it), 2 CPUs, 4,096 processes; and 10 GiB of disk where the
/// engine's storage driver can cap it (elsewhere none, and the handle logs that once).
#[tokio::test]
async fn a_sandbox_made_from_the_defaults_has_memory_cpu_and_process_limits() {
    let Some(case) = Case::new("default-limits").await else { return };
    let sandbox = case.docker.create(&case.spec(BASE_IMAGE)).await.unwrap();
    let host = case.docker.api.inspect_container(sandbox.id(), None).await.unwrap().host_config.unwrap();
    assert_eq!(host.memory, Some(4 << 30));
    assert_eq!(host.memory_swap, Some(4 << 30));
    assert_eq!(host.nano_cpus, Some(2_000_000_000));
    assert_eq!(host.pids_limit, Some(4096));
    let disk = host.storage_opt.unwrap_or_default().get("size").cloned();
    if case.docker.disk_cap.supported() {
        assert_eq!(disk.as_deref(), Some("10737418240"));
    } else {
        assert_eq!(disk, None);
    }
    let out = sandbox.exec("true", &limits(30)).await.unwrap();
    assert_eq!(out.exit_code, Some(0));
    sandbox.remove().await.unwrap();
}

/// Past its memory limit a command is killed (its exit status is the command's result); the
/// sandbox and its shell stay usable for the next command.
#[tokio::test]
async fn a_command_past_the_memory_limit_is_killed_and_the_sandbox_stays_usable() {
    let Some(case) = Case::new("oom-stays-usable").await else { return };
    let mut spec = case.spec(BASE_IMAGE);
    spec.memory_bytes = Some(64 * 1024 * 1024);
    let sandbox = case.docker.create(&spec).await.unwrap();
    let hog = "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo ${#x}";
    let out = sandbox.exec(hog, &limits(60)).await.unwrap();
    assert_ne!(out.exit_code, Some(0), "{out:?}");
    assert!(!out.timed_out, "{out:?}");
    let after = sandbox.exec("echo still here", &limits(30)).await.unwrap();
    assert_eq!((after.exit_code, after.output.as_str()), (Some(0), "still here\n"));

    let mut shell = sandbox.shell().await.unwrap();
    let out = shell.run(hog, &limits(60)).await.unwrap();
    assert_ne!(out.exit_code, Some(0), "{out:?}");
    let after = shell.run("echo still here", &limits(30)).await.unwrap();
    assert_eq!((after.exit_code, after.output.as_str()), (Some(0), "still here\n"));
    sandbox.remove().await.unwrap();
}
