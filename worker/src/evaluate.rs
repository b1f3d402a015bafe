//! The `evaluate` executor: grades a patch as the official SWE-bench harness does, in a fresh
//! sandbox from the instance's image (never the container an agent worked in).
//!
//! Steps, each recorded as a step of the run: copy the patch in; apply it with the profile's
//! fallback chain (v5 resets the tree between attempts and accepts an already-applied patch);
//! run the instance's eval script under the time limit; grade the log with the ported parsers
//! and report logic, checked for forged test output (`grading::integrity`). A task failing
//! (patch does not apply, tests fail, time limit, forged output) is an outcome; an engine or
//! image problem is an infrastructure failure that re-queues the run.

use std::time::{Duration, Instant};

use protocol::{ClaimedRun, Evaluation, ExecutorSpec, Outcome, PatchSource, RunTotals, StepRecord};

use crate::executor::{CleanupFuture, ExecError, ExecFuture, Executor, ImagesFuture, RunContext, RunResult};
use crate::grading::{self, GradeInput, GradeOutcome, GradingMode, Profile};
use crate::sandbox::{Docker, ExecLimits, ExecOutput, ImageCache, Sandbox};
use crate::sandboxes::SandboxFactory;
use crate::text::cap_chars;

/// Captured output budget of the eval script: test logs of large suites run to megabytes, and
/// the markers and results must survive (head and tail are kept).
const EVAL_OUTPUT_BYTES: usize = 32 * 1024 * 1024;
/// Time limit of each patch-application command.
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of a command's output a recorded step keeps (head and tail).
const STEP_OBSERVATION_CHARS: usize = 20_000;

/// Grades a patch for a run's instance in a fresh sandbox: what the `evaluate` executor does
/// with a given patch, and the agent executor with the patch its agent made.
#[derive(Clone)]
pub struct Grader {
    sandboxes: SandboxFactory,
}

impl Grader {
    pub fn new(sandboxes: SandboxFactory) -> Self {
        Grader { sandboxes }
    }

    /// Where its sandboxes come from.
    pub fn sandboxes(&self) -> &SandboxFactory {
        &self.sandboxes
    }

    /// Grades `patch` for the run's instance in a fresh sandbox, recording nothing as steps
    /// (the agent executor grades its patch this way).
    pub async fn grade(
        &self,
        run: &ClaimedRun,
        profile: Profile,
        patch: Option<String>,
    ) -> Result<RunResult, ExecError> {
        self.grade_recording(run, profile, patch, None).await
    }

    /// [`Grader::grade`], each command recorded as a step of the run when `ctx` is given.
    async fn grade_recording(
        &self,
        run: &ClaimedRun,
        profile: Profile,
        patch: Option<String>,
        ctx: Option<&RunContext>,
    ) -> Result<RunResult, ExecError> {
        let mut steps = Steps::default();
        let Some(patch) = patch.filter(|p| !p.is_empty()) else {
            // The harness never runs an empty patch.
            let attempt = Attempt { patch: None, applied: false, eval: None, script: None };
            return Ok(finish(run, profile, attempt, steps));
        };
        let image = protocol::images::image_for(&run.instance, &run.sandbox);
        steps.note(&format!("Grading {} ({profile:?} profile) in image {image}", run.instance.instance_id));
        let opened = Instant::now();
        let (sandbox, _image_guard) = self.sandboxes.open(run, Vec::new(), "/testbed").await?;
        steps.note(&format!(
            "Container {} ({}) started in {:.2} s",
            sandbox.name(),
            sandbox.id(),
            opened.elapsed().as_secs_f64()
        ));
        let result = grade_in(&sandbox, run, ctx, profile, &patch, &mut steps).await;
        // Removed on every path; a failure to remove is logged, the result still counts.
        if let Err(e) = sandbox.remove().await {
            tracing::warn!(run_id = run.run_id, error = %e, "could not remove the grading container");
        }
        result
    }
}

async fn grade_in(
    sandbox: &Sandbox,
    run: &ClaimedRun,
    ctx: Option<&RunContext>,
    profile: Profile,
    patch: &str,
    steps: &mut Steps,
) -> Result<RunResult, ExecError> {
    let applied = apply_recording(sandbox, profile, patch, ctx, steps).await?;
    steps.note(if applied { ">>>>> Applied Patch" } else { ">>>>> Patch Apply Failed" });
    if !applied {
        let attempt = Attempt { patch: Some(patch.to_string()), applied, eval: None, script: None };
        return Ok(finish(run, profile, attempt, std::mem::take(steps)));
    }

    let script = grading::eval_script_for(&run.instance, profile)
        .map_err(|e| ExecError::infra_in(&format!("no eval script for {}", run.instance.instance_id), e))?;
    sandbox
        .write_file(grading::EVAL_SCRIPT_PATH, script.as_bytes(), 0o755)
        .await
        .map_err(ExecError::infra)?;
    let limits = ExecLimits {
        timeout: Duration::from_secs(run.sandbox.eval_timeout_s),
        max_output_bytes: EVAL_OUTPUT_BYTES,
    };
    let command = format!("/bin/bash {}", grading::EVAL_SCRIPT_PATH);
    let out = sandbox.exec(&command, &limits).await.map_err(ExecError::infra)?;
    steps.record(ctx, &command, &out).await?;
    if out.timed_out {
        steps.note(&format!("Test timed out after {} seconds.", run.sandbox.eval_timeout_s));
    }
    // A test process killed by the memory limit says nothing about the patch: an
    // infrastructure failure (re-queued; the reason is kept on the run). The script's own
    // exit code cannot tell: it runs without `-e` and ends with the reset command, so a
    // killed test run still exits 0. The container's OOM counter is asked every time.
    if !out.timed_out && sandbox.oom_killed().await.map_err(ExecError::infra)? {
        return Err(ExecError::infra_reason(format!(
            "the test run was killed by the container's memory limit ({} MB)",
            run.sandbox.memory_mb.map_or("none".to_string(), |m| m.to_string())
        )));
    }
    let attempt = Attempt { patch: Some(patch.to_string()), applied, eval: Some(out), script: Some(script) };
    // Off the async threads: parsing and checking a maximum-size log takes about 0.1 s (release
    // build), which would stall the heartbeats and uploads of every other run on this worker.
    let (run, steps) = (run.clone(), std::mem::take(steps));
    tokio::task::spawn_blocking(move || finish(&run, profile, attempt, steps))
        .await
        .map_err(|e| ExecError::infra_in("grading stopped unexpectedly", e))
}

/// The `evaluate` executor: grades the gold patch or the run's prediction.
#[derive(Clone)]
pub struct EvaluateExecutor {
    grader: Grader,
}

impl EvaluateExecutor {
    pub fn new(docker: Docker, worker_name: &str) -> Self {
        EvaluateExecutor { grader: Grader::new(SandboxFactory::new(docker, worker_name)) }
    }

    /// The same executor taking its images through `cache` (shared with the worker's other
    /// users of it), which holds each run's image until the run ends.
    pub fn with_image_cache(self, cache: ImageCache) -> Self {
        let sandboxes = self.grader.sandboxes.with_image_cache(cache);
        EvaluateExecutor { grader: Grader::new(sandboxes) }
    }

    /// How it grades (the agent executor of the same worker grades the same way).
    pub fn grader(&self) -> &Grader {
        &self.grader
    }

    /// Grades a run without a coordinator (its steps are not uploaded anywhere): for
    /// benchmarks and offline use.
    pub async fn grade_offline(&self, run: &ClaimedRun) -> Result<RunResult, ExecError> {
        self.evaluate(run, None).await
    }

    async fn evaluate(&self, run: &ClaimedRun, ctx: Option<&RunContext>) -> Result<RunResult, ExecError> {
        let ExecutorSpec::Evaluate(spec) = &run.executor else {
            return Err(ExecError::infra_reason("the evaluate executor was handed another kind of run"));
        };
        let patch = match spec.patch {
            PatchSource::Gold => Some(run.instance.patch.clone()),
            PatchSource::Prediction => run.input_patch.clone(),
        };
        self.grader.grade_recording(run, Profile::from(spec.profile), patch, ctx).await
    }
}

impl Executor for EvaluateExecutor {
    fn status(&self) -> Option<String> {
        self.grader.sandboxes.status()
    }

    fn held_images(&self) -> ImagesFuture<'_> {
        Box::pin(self.grader.sandboxes.held_images())
    }

    fn remove_leftovers(&self) -> CleanupFuture<'_> {
        Box::pin(self.grader.sandboxes.remove_leftovers())
    }

    fn execute<'a>(&'a self, run: &'a ClaimedRun, ctx: RunContext) -> ExecFuture<'a> {
        Box::pin(async move {
            let cancel = ctx.cancel.clone();
            tokio::select! {
                // Dropping the evaluation drops its sandbox, which removes the container.
                _ = cancel.cancelled() => Err(ExecError::Stopped),
                r = self.evaluate(run, Some(&ctx)) => r,
            }
        })
    }
}

/// Copies `patch` to [`grading::PATCH_PATH`] in `sandbox` and applies it in the working
/// directory with the profile's fallback chain, as grading does; true when it applied.
pub async fn apply_patch(sandbox: &Sandbox, profile: Profile, patch: &str) -> Result<bool, ExecError> {
    apply_recording(sandbox, profile, patch, None, &mut Steps::default()).await
}

/// [`apply_patch`], recording each command as a step.
async fn apply_recording(
    sandbox: &Sandbox,
    profile: Profile,
    patch: &str,
    ctx: Option<&RunContext>,
    steps: &mut Steps,
) -> Result<bool, ExecError> {
    sandbox.write_file(grading::PATCH_PATH, patch.as_bytes(), 0o644).await.map_err(ExecError::infra)?;
    let apply_limits = ExecLimits { timeout: APPLY_TIMEOUT, max_output_bytes: 200_000 };
    for step in grading::apply_commands(profile, grading::PATCH_PATH) {
        if let Some(reset) = &step.reset_before {
            let out = sandbox.exec(reset, &apply_limits).await.map_err(ExecError::infra)?;
            steps.record(ctx, reset, &out).await?;
        }
        let out = sandbox.exec(&step.command, &apply_limits).await.map_err(ExecError::infra)?;
        steps.record(ctx, &step.command, &out).await?;
        if out.exit_code == Some(0) {
            return Ok(true);
        }
    }
    let Some(check) = grading::already_applied_check(profile, grading::PATCH_PATH) else {
        return Ok(false);
    };
    let out = sandbox.exec(&check, &apply_limits).await.map_err(ExecError::infra)?;
    steps.record(ctx, &check, &out).await?;
    Ok(out.exit_code == Some(0))
}

/// What grading saw of one patch.
struct Attempt {
    patch: Option<String>,
    applied: bool,
    /// The eval script's run, if the patch applied.
    eval: Option<ExecOutput>,
    /// The eval script that ran.
    script: Option<String>,
}

/// How much of the test output a run stores (`steer eval` writes it as `test_output.txt`): its
/// first and last 128 Ki characters past this. SWE-bench test runs print far less; a run that
/// prints more is graded from all of it (up to the capture budget) and stores the ends.
pub const STORED_TEST_OUTPUT_CHARS: usize = 256 * 1024;
/// How much of the grading's own log a run stores (`run_instance.log`).
pub const STORED_INSTANCE_LOG_CHARS: usize = 64 * 1024;

/// Grades what happened and builds the run's result.
fn finish(run: &ClaimedRun, profile: Profile, attempt: Attempt, steps: Steps) -> RunResult {
    let Attempt { patch, applied, eval, script } = attempt;
    let patch = patch.as_deref();
    // What the harness writes to test_output.txt: the script's output, then its timeout line;
    // stored with the run, so cut to its first and last characters past a budget that keeps
    // the completion well inside the coordinator's request limit (graded from the whole).
    let test_output = eval.as_ref().map(|o| {
        let mut text = crate::text::cap_chars(&o.output, STORED_TEST_OUTPUT_CHARS);
        if o.timed_out {
            text.push_str(&format!("\n\nTimeout error: {} seconds exceeded.", run.sandbox.eval_timeout_s));
        }
        text
    });
    let graded = grading::grade(&GradeInput {
        instance: &run.instance,
        profile,
        mode: GradingMode::Checked,
        patch,
        patch_applied: applied,
        eval_log: eval.as_ref().map(|o| o.output.as_str()),
        eval_script: script.as_deref(),
        eval_exit_code: eval.as_ref().and_then(|o| o.exit_code),
        timed_out: eval.as_ref().is_some_and(|o| o.timed_out),
        // The sandbox decodes output with replacement, as v5 does; v4's strict decoding of a
        // non-UTF-8 log (which makes it write no report) is not reproduced.
        eval_log_invalid_utf8: false,
    });
    let outcome = match graded.outcome {
        GradeOutcome::Resolved => Outcome::Resolved,
        // forged test output is the patch's doing: an outcome, never an infrastructure failure
        GradeOutcome::Unresolved | GradeOutcome::InvalidLog | GradeOutcome::Tampered => Outcome::Unresolved,
        GradeOutcome::EmptyPatch => Outcome::EmptyPatch,
        GradeOutcome::ApplyFailed => Outcome::ApplyFailed,
        GradeOutcome::TimedOut => Outcome::Timeout,
    };
    let apply_status = match (patch.is_some_and(|p| !p.is_empty()), applied) {
        (false, _) => "no_patch",
        (true, true) => "applied",
        (true, false) => "failed",
    };
    let tests: serde_json::Map<String, serde_json::Value> = graded
        .tests
        .iter()
        .map(|(id, st)| (id.to_string(), serde_json::Value::String(st.as_str().to_string())))
        .collect();
    let detail = match (&graded.tampered, &graded.problem) {
        (Some(t), _) => Some(format!("test output looks forged: {t}")),
        (None, Some(p)) => Some(format!("log not usable: {p:?}")),
        (None, None) => None,
    };
    RunResult {
        outcome,
        totals: RunTotals { steps: steps.count, ..Default::default() },
        patch: patch.map(str::to_string),
        evaluation: Some(Evaluation {
            apply_status: apply_status.into(),
            resolved: graded.resolved,
            tests: serde_json::Value::Object(tests),
            report: graded.report,
            test_output,
            eval_script: script,
            instance_log: steps
                .log_of_grading()
                .map(|log| crate::text::cap_chars(&log, STORED_INSTANCE_LOG_CHARS)),
        }),
        detail,
    }
}

/// The commands run so far, uploaded as steps as they happen, and the account of them that
/// becomes the evaluation's `run_instance.log`.
#[derive(Default)]
struct Steps {
    count: i32,
    log: String,
}

impl Steps {
    async fn record(
        &mut self,
        ctx: Option<&RunContext>,
        command: &str,
        out: &ExecOutput,
    ) -> Result<(), ExecError> {
        let started = Instant::now();
        let mut observation = cap_chars(&out.output, STEP_OBSERVATION_CHARS);
        if out.timed_out {
            observation
                .push_str(&format!("\n[killed after {:.0} s: time limit]", out.duration.as_secs_f64()));
        }
        let step = StepRecord {
            index: self.count,
            action: Some(command.to_string()),
            observation: Some(observation),
            exit_code: out.exit_code.map(|c| c as i32),
            duration_ms: out.duration.as_millis() as i64,
            messages: serde_json::Value::Null,
            ..Default::default()
        };
        if let Some(ctx) = ctx {
            ctx.record_step(step).await?;
        }
        self.count += 1;
        self.log_command(command, out);
        tracing::debug!(command, upload_ms = started.elapsed().as_millis() as u64, "step recorded");
        Ok(())
    }
}

/// How much of a patch-application command's output the instance log keeps (head and tail).
const LOG_COMMAND_OUTPUT_CHARS: usize = 20_000;

impl Steps {
    /// Adds a line to the instance log, stamped with the time, as the harness's logger does.
    fn note(&mut self, line: &str) {
        let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.3f");
        self.log.push_str(&format!("{now} - INFO - {line}\n"));
    }

    /// Logs a command with its exit status and runtime; its output too, except the eval
    /// script's, which is test_output.txt.
    fn log_command(&mut self, command: &str, out: &ExecOutput) {
        let status = match (out.timed_out, out.exit_code) {
            (true, _) => "killed at the time limit".to_string(),
            (false, Some(code)) => format!("exit code {code}"),
            (false, None) => "exit code unknown".to_string(),
        };
        self.note(&format!("Ran `{command}`: {status}, {:.2} s", out.duration.as_secs_f64()));
        if !command.ends_with(grading::EVAL_SCRIPT_PATH) && !out.output.is_empty() {
            self.log.push_str(&cap_chars(&out.output, LOG_COMMAND_OUTPUT_CHARS));
            if !out.output.ends_with('\n') {
                self.log.push('\n');
            }
        }
    }

    /// The instance log, if anything was logged.
    fn log_of_grading(&self) -> Option<String> {
        (!self.log.is_empty()).then(|| self.log.clone())
    }
}
