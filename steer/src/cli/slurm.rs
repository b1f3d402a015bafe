//! `steer slurm workers`: a Slurm job array of workers, one per array task, written as an
//! sbatch script and submitted with `sbatch`.
//!
//! The worker token never appears in the script or on a command line: the job inherits it from
//! the submitting environment (`STEER_TOKEN`, passed on by `--export=ALL`), or reads it at start
//! from a file only its owner can read (`--token-file`). Slurm is asked to send SIGUSR1 a
//! margin before the time limit (`--signal=B:USR1@SECS`); the script `exec`s the worker, so the
//! worker itself gets the signal, stops claiming and hands back what it cannot finish within
//! its drain timeout, which is set inside the margin.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::parse_duration;

#[derive(Subcommand, Debug)]
pub enum SlurmCommand {
    /// Submit a job array of workers (one per array task) with sbatch; prints the job id.
    Workers(SlurmWorkersArgs),
}

#[derive(Args, Debug, Clone)]
pub struct SlurmWorkersArgs {
    /// Workers to start: the array's size.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    /// The coordinator, as the compute nodes reach it (HOST:PORT means http://HOST:PORT).
    #[arg(long, env = "STEER_COORDINATOR")]
    pub coordinator: String,
    /// Slurm partition (sbatch --partition).
    #[arg(long)]
    pub partition: Option<String>,
    /// Time limit of each worker job, in Slurm's forms: MINUTES, H:M:S, D-H, D-H:M, D-H:M:S.
    #[arg(long)]
    pub time: Option<String>,
    /// CPUs of each worker job (sbatch --cpus-per-task).
    #[arg(long)]
    pub cpus_per_task: Option<u32>,
    /// Memory of each worker job, as sbatch takes it (e.g. 16G).
    #[arg(long)]
    pub mem: Option<String>,
    /// Generic resources of each worker job, as sbatch takes them (e.g. gpu:1).
    #[arg(long)]
    pub gres: Option<String>,
    /// Runs each worker executes at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub slots: u32,
    /// How long before the time limit Slurm warns a worker (SIGUSR1); the worker then stops
    /// claiming and hands back, within this margin, what it has not finished.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub signal_margin: Duration,
    /// Read the worker token from this file (readable by its owner only) when the job starts,
    /// instead of taking STEER_TOKEN from the submitting environment.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The job's name; workers are named NAME-ARRAYJOB_TASK.
    #[arg(long, default_value = "steer-worker")]
    pub job_name: String,
    /// Where each task's output goes (sbatch --output; %A is the array job, %a the task).
    #[arg(long, default_value = "steer-worker-%A_%a.log")]
    pub output: String,
    /// The steer binary the jobs run, on a path the compute nodes share [default: this one].
    #[arg(long)]
    pub steer_bin: Option<PathBuf>,
    /// Print the sbatch script instead of submitting it.
    #[arg(long)]
    pub dry_run: bool,
    /// The worker token, from the environment only (never put it on a command line).
    #[arg(long = "token-from-env", env = "STEER_TOKEN", hide = true, hide_env_values = true)]
    pub token: Option<String>,
    /// More `steer worker` flags for every worker, after `--` (e.g. -- --allow-key-env OPENAI_API_KEY).
    #[arg(last = true)]
    pub worker_args: Vec<String>,
}

/// Why a Slurm time limit did not read.
#[derive(Debug, thiserror::Error)]
#[error("--time `{0}`: expected MINUTES, MINUTES:SECONDS, H:M:S, D-H, D-H:M or D-H:M:S, as sbatch takes it")]
pub struct TimeError(String);

/// A Slurm time limit (`sbatch --time`) as a duration; `UNLIMITED`/`INFINITE` are `None`.
pub fn slurm_time(text: &str) -> Result<Option<Duration>, TimeError> {
    let bad = || TimeError(text.to_string());
    if matches!(text.to_ascii_uppercase().as_str(), "UNLIMITED" | "INFINITE") {
        return Ok(None);
    }
    let number = |s: &str| s.parse::<u64>().map_err(|_| bad());
    let (days, rest) = match text.split_once('-') {
        Some((d, rest)) => (Some(number(d)?), rest),
        None => (None, text),
    };
    let parts: Vec<u64> = rest.split(':').map(number).collect::<Result<_, _>>()?;
    let seconds = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86_400 + h * 3600,
        (Some(d), [h, m]) => d * 86_400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86_400 + h * 3600 + m * 60 + s,
        _ => return Err(bad()),
    };
    Ok(Some(Duration::from_secs(seconds)))
}

/// A word the shell reads back as itself: single-quoted, with `'` written as `'\''`.
fn quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The drain timeout inside the signal margin: the margin less a quarter of it (at most a
/// minute), so that handing back finishes before Slurm's SIGTERM and SIGKILL.
fn drain_within(margin: Duration) -> Duration {
    margin.saturating_sub((margin / 4).min(Duration::from_secs(60)))
}

/// Checks that a token file is a regular file only its owner can read or write.
fn check_token_file(path: &std::path::Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("--token-file {}", path.display()))?;
    anyhow::ensure!(meta.is_file(), "--token-file {}: not a regular file", path.display());
    let mode = meta.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "--token-file {}: others can read it (mode {mode:o}); `chmod 600 {}` first",
        path.display(),
        path.display()
    );
    Ok(())
}

/// The sbatch script for `args`, running the steer binary at `steer`.
pub fn script(args: &SlurmWorkersArgs, coordinator: &str, steer: &std::path::Path) -> anyhow::Result<String> {
    let margin = args.signal_margin.as_secs().max(1);
    if let Some(limit) = args.time.as_deref().map(slurm_time).transpose()?.flatten() {
        anyhow::ensure!(
            limit.as_secs() > margin,
            "--signal-margin {margin}s is not shorter than --time {} ({}s): the workers would be told to stop as they start",
            args.time.as_deref().unwrap_or_default(),
            limit.as_secs()
        );
    }
    let mut s = String::from("#!/bin/bash\n");
    let mut directive = |flag: &str, value: &str| s.push_str(&format!("#SBATCH --{flag}={value}\n"));
    directive("job-name", &args.job_name);
    directive("array", &format!("0-{}", args.count - 1));
    directive("ntasks", "1");
    directive("output", &args.output);
    directive("signal", &format!("B:USR1@{margin}"));
    // the token travels in the environment (or a file), so the environment must go along
    directive("export", "ALL");
    if let Some(p) = &args.partition {
        directive("partition", p);
    }
    if let Some(t) = &args.time {
        directive("time", t);
    }
    if let Some(c) = args.cpus_per_task {
        directive("cpus-per-task", &c.to_string());
    }
    if let Some(m) = &args.mem {
        directive("mem", m);
    }
    if let Some(g) = &args.gres {
        directive("gres", g);
    }
    s.push_str("# steerbench workers, one per array task (`steer slurm workers`).\nset -eu\n");
    match &args.token_file {
        Some(file) => s.push_str(&format!(
            "# the worker token, read from a file only its owner can read\nSTEER_TOKEN=$(cat {})\nexport STEER_TOKEN\n",
            quoted(&file.display().to_string())
        )),
        None => s.push_str(
            "# the worker token comes from the submitting environment (STEER_TOKEN)\n: \"${STEER_TOKEN:?the worker token is not in the environment of the job}\"\n",
        ),
    }
    let mut command = vec![
        quoted(&steer.display().to_string()),
        "worker".into(),
        "--coordinator".into(),
        quoted(coordinator),
        "--slots".into(),
        args.slots.to_string(),
        "--name".into(),
        format!("{}-\"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\"", quoted(&args.job_name)),
        "--drain-timeout".into(),
        format!("{}s", drain_within(Duration::from_secs(margin)).as_secs()),
    ];
    command.extend(args.worker_args.iter().map(|a| quoted(a)));
    s.push_str("# exec: the worker itself receives Slurm's signals\nexec ");
    s.push_str(&command.join(" "));
    s.push('\n');
    Ok(s)
}

pub async fn run(cmd: SlurmCommand) -> anyhow::Result<ExitCode> {
    let SlurmCommand::Workers(args) = cmd;
    let coordinator = super::client::coordinator_url(&args.coordinator)?;
    let steer = match &args.steer_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("finding this steer binary (give --steer-bin)")?,
    };
    let text = script(&args, &coordinator, &steer)?;
    if args.dry_run {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    match &args.token_file {
        Some(file) => check_token_file(file)?,
        None => anyhow::ensure!(
            args.token.as_deref().is_some_and(|t| !t.trim().is_empty()),
            "the workers need a worker token: set STEER_TOKEN in this environment (sbatch passes it on), or give --token-file FILE (chmod 600)"
        ),
    }
    // The script goes to sbatch on its standard input: nothing is written to disk.
    let mut child = std::process::Command::new("sbatch")
        .arg("--parsable")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running sbatch (is Slurm's client installed, and SLURM_CONF set where needed?)")?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(text.as_bytes()).context("writing the script to sbatch")?;
    drop(stdin);
    let out = child.wait_with_output().context("waiting for sbatch")?;
    anyhow::ensure!(
        out.status.success(),
        "sbatch refused the job ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    // --parsable prints `JOBID` or `JOBID;CLUSTER`
    let stdout = String::from_utf8_lossy(&out.stdout);
    let job = stdout.trim().split(';').next().unwrap_or_default().to_string();
    anyhow::ensure!(!job.is_empty(), "sbatch printed no job id: {stdout:?}");
    eprintln!(
        "submitted {} worker(s) as job array {job} (tasks {job}_0 to {job}_{}); `steer workers` lists them once they start",
        args.count,
        args.count - 1
    );
    println!("{job}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SlurmWorkersArgs,
    }

    fn args(extra: &[&str]) -> SlurmWorkersArgs {
        let mut argv = vec!["steer", "--count", "3", "--coordinator", "http://10.0.0.5:8420"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn slurm_time_limits_read_as_sbatch_reads_them() {
        let t = |s: &str| slurm_time(s).unwrap().map(|d| d.as_secs());
        assert_eq!(t("30"), Some(1800));
        assert_eq!(t("2:30"), Some(150));
        assert_eq!(t("1:00:00"), Some(3600));
        assert_eq!(t("1-2"), Some(93_600));
        assert_eq!(t("1-0:30"), Some(88_200));
        assert_eq!(t("0-1:0:5"), Some(3605));
        assert_eq!(t("UNLIMITED"), None);
        assert!(slurm_time("1h").is_err());
        assert!(slurm_time("1:2:3:4").is_err());
    }

    #[test]
    fn the_script_runs_one_worker_per_task_and_holds_no_token() {
        let a = args(&[
            "--partition",
            "gpu",
            "--time",
            "2:00:00",
            "--gres",
            "gpu:1",
            "--slots",
            "2",
            "--",
            "--allow-key-env",
            "OPENAI_API_KEY",
        ]);
        let s = script(&a, "http://10.0.0.5:8420", std::path::Path::new("/shared/bin/steer")).unwrap();
        for line in [
            "#SBATCH --array=0-2\n",
            "#SBATCH --partition=gpu\n",
            "#SBATCH --time=2:00:00\n",
            "#SBATCH --gres=gpu:1\n",
            "#SBATCH --signal=B:USR1@300\n",
            "#SBATCH --export=ALL\n",
        ] {
            assert!(s.contains(line), "{line} in\n{s}");
        }
        assert!(s.contains("exec '/shared/bin/steer' worker --coordinator 'http://10.0.0.5:8420' --slots 2 --name 'steer-worker'-\"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\" --drain-timeout 240s '--allow-key-env' 'OPENAI_API_KEY'\n"), "{s}");
        assert!(s.contains("${STEER_TOKEN:?"), "{s}");
        // and bash reads it
        let check = std::process::Command::new("bash").args(["-n", "-c", &s]).output().unwrap();
        assert!(check.status.success(), "{}\n{s}", String::from_utf8_lossy(&check.stderr));
        assert!(!s.contains("stb_"), "{s}");
    }

    #[test]
    fn a_margin_longer_than_the_time_limit_is_refused() {
        let a = args(&["--time", "4", "--signal-margin", "5m"]);
        let err = script(&a, "http://c:1", std::path::Path::new("/s")).unwrap_err().to_string();
        assert!(err.contains("--signal-margin 300s is not shorter than --time 4 (240s)"), "{err}");
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "stb_x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_token_file(&file).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_token_file(&file).unwrap();
        let a = args(&["--token-file", file.to_str().unwrap()]);
        let s = script(&a, "http://c:1", std::path::Path::new("/s")).unwrap();
        assert!(s.contains(&format!("STEER_TOKEN=$(cat '{}')", file.display())), "{s}");
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(quoted("it's"), r"'it'\''s'");
    }
}
