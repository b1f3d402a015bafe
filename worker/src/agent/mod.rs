//! The `agent` executor: a frozen model behind an OpenAI-compatible endpoint works on the task
//! in a sandbox from the instance's image, steered between steps by the run's critic; its
//! patch (the sandbox's diff) is then graded in a fresh sandbox, as `evaluate` grades.
//!
//! One step = one model call, then (if the reply holds exactly one action) one command run in
//! the sandbox, then the observation appended to the conversation. The conversation only
//! grows, so it is exactly what the model saw; each step is uploaded as it happens with the
//! messages it appended and its model call (tokens, exact cost, retries, last fault).
//!
//! The run ends when the agent submits (the bash-only scaffold: a command whose output's
//! first line is [`protocol::SUBMIT_SENTINEL`]; tool calling: the `submit` tool), or at a
//! limit: `step_limit` (model calls), `cost_limit` (checked before each call, as
//! mini-swe-agent does: a call in flight may overshoot by its own cost), `time_limit` (wall
//! time, enforced during model calls and commands too), `format_error_limit`, or a critic's
//! `critic_stop`. Every ending grades the patch so far. A model endpoint that keeps failing,
//! refuses the request or returns malformed answers is an infrastructure failure: the run is
//! re-queued as a new attempt, and the steps of this attempt stay recorded as its own.
//!
//! An agent that names a mini-swe-agent file (`agent_config`) follows it instead of the
//! executor's templates and scaffold (`mini_act`, [`mini`]): its action rule, its messages, its
//! command timeout and sandbox variables; what it submits (the output after the sentinel line)
//! is the graded patch, and the sandbox's diff is kept in the run's detail when they differ.

mod edits;
pub mod hook;
pub mod mini;
pub use protocol::prompts;
pub mod scaffold;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{
    AgentExecSpec, CallStatus, ClaimedRun, ExecutorSpec, LlmCallRecord, Outcome, PrefixReplay, RunTotals,
    StepRecord,
};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::evaluate::Grader;
use crate::executor::{CleanupFuture, ExecError, ExecFuture, Executor, ImagesFuture, RunContext, RunResult};
use crate::llm::{self, Keyring, LlmClient, LlmConfig, RetryPolicy};
use crate::sandbox::{ExecLimits, Sandbox, Shell};
use crate::sandboxes::SandboxFactory;
use crate::text::cap_chars;
use hook::{Guidance, Moment, StepFacts, StepHook, StepView};
use prompts::{FormatErrorVars, ObservationVars, Prompts, TaskVars};
use scaffold::Action;

/// Output captured from one command before it is cut to the observation's size (head and tail
/// kept at both stages).
const COMMAND_OUTPUT_BYTES: usize = 1 << 20;
/// How far away "no deadline" is (far enough never to come, near enough for timers).
const NO_DEADLINE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
/// Time limit of the edit-context diff after a command.
const EDIT_DIFF_TIMEOUT: Duration = Duration::from_secs(30);

pub struct AgentExecutor {
    /// Grades the final patch in a fresh sandbox, and opens the agent's own sandbox (the same
    /// engine, worker name and image cache).
    grader: Grader,
    retry: RetryPolicy,
    /// The model API keys this worker may use.
    keys: Arc<Keyring>,
}

impl AgentExecutor {
    pub fn new(grader: Grader) -> Self {
        AgentExecutor { grader, retry: RetryPolicy::default(), keys: Arc::default() }
    }

    /// The model API keys the agents and critics may use (none by default).
    pub fn with_keyring(mut self, keys: Arc<Keyring>) -> Self {
        self.keys = keys;
        self
    }

    /// How model calls are retried (tests and benchmarks shorten the waits).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn sandboxes(&self) -> &SandboxFactory {
        self.grader.sandboxes()
    }
}

impl Executor for AgentExecutor {
    fn execute<'a>(&'a self, run: &'a ClaimedRun, ctx: RunContext) -> ExecFuture<'a> {
        Box::pin(async move {
            let cancel = ctx.cancel.clone();
            tokio::select! {
                // Dropping the run drops its sandbox, which removes the container.
                _ = cancel.cancelled() => Err(ExecError::Stopped),
                r = self.run(run, Some(&ctx)) => r,
            }
        })
    }

    fn held_images(&self) -> ImagesFuture<'_> {
        Box::pin(self.sandboxes().held_images())
    }

    fn remove_leftovers(&self) -> CleanupFuture<'_> {
        Box::pin(self.sandboxes().remove_leftovers())
    }

    fn status(&self) -> Option<String> {
        self.sandboxes().status()
    }
}

/// How the agent's part of a run ended.
#[derive(Debug, Clone, PartialEq)]
enum Ending {
    Submitted,
    Limit(Outcome),
    CriticStop(String),
}

/// Per-step timings of a run, for benchmarks.
#[derive(Debug, Clone, Default)]
pub struct StepTimings {
    pub total: Duration,
    pub llm: Duration,
    pub command: Duration,
}

/// What a run did, besides its result (benchmarks read it).
#[derive(Debug, Default)]
pub struct RunReport {
    pub steps: Vec<StepTimings>,
}

/// What the agent left when its loop ended: how it ended, its patch, what it spent.
struct Worked {
    ending: Ending,
    patch: String,
    totals: RunTotals,
    /// What the run's record should say besides (a submission that differs from the diff).
    detail: Option<String>,
}

impl AgentExecutor {
    /// Runs without a coordinator (nothing uploaded): for benchmarks and offline use.
    pub async fn run_offline(&self, run: &ClaimedRun) -> Result<(RunResult, RunReport), ExecError> {
        let mut report = RunReport::default();
        let result = self.run_reporting(run, None, &mut report).await?;
        Ok((result, report))
    }

    async fn run(&self, run: &ClaimedRun, ctx: Option<&RunContext>) -> Result<RunResult, ExecError> {
        self.run_reporting(run, ctx, &mut RunReport::default()).await
    }

    /// The agent works, then its patch is graded; the ending decides the outcome unless the
    /// agent submitted (then grading does).
    async fn run_reporting(
        &self,
        run: &ClaimedRun,
        ctx: Option<&RunContext>,
        report: &mut RunReport,
    ) -> Result<RunResult, ExecError> {
        let ExecutorSpec::Agent(spec) = &run.executor else {
            return Err(ExecError::infra_reason("the agent executor was handed another kind of run"));
        };
        let worked = self.work(run, spec, ctx, report).await?;
        let mut result = self.grader.grade(run, spec.grading.into(), Some(worked.patch)).await?;
        result.totals = worked.totals;
        match worked.ending {
            Ending::Submitted => {}
            Ending::Limit(outcome) => result.outcome = outcome,
            Ending::CriticStop(reason) => {
                result.outcome = Outcome::CriticStop;
                result.detail = Some(format!("stopped by the critic: {reason}"));
            }
        }
        if let Some(detail) = worked.detail {
            result.detail = Some(match result.detail.take() {
                Some(first) => format!("{first}\n{detail}"),
                None => detail,
            });
        }
        Ok(result)
    }

    /// The agent's loop in a sandbox of its own; the patch is taken whatever ended the loop (a
    /// limit grades the work so far), and the sandbox removed.
    async fn work(
        &self,
        run: &ClaimedRun,
        spec: &AgentExecSpec,
        ctx: Option<&RunContext>,
        report: &mut RunReport,
    ) -> Result<Worked, ExecError> {
        let prompts = Prompts::new(&spec.templates).map_err(ExecError::infra)?;
        let client = LlmClient::new(self.llm_config(run)?).map_err(ExecError::infra)?;
        let file = run.agent.agent_config.as_ref();
        let mini = file.map(mini::MiniRun::new).transpose().map_err(template_error)?;
        let mut env = vec![SANDBOX_ENV.to_string()];
        env.extend(spec.sandbox_env.iter().cloned());
        // A file's variables come last, so they win over ours.
        env.extend(file.map(|c| c.env_vars()).unwrap_or_default());
        let workdir = file.map_or(spec.workdir.as_str(), |c| c.cwd.as_str());
        let (sandbox, _image_guard) = self.sandboxes().open(run, env, workdir).await?;
        let hook = crate::critic::hook_for(run, &self.keys).map_err(ExecError::infra)?;
        let parts = Parts { run, spec, ctx, prompts, mini, client: &client, hook, report };
        let mut agent = AgentRun::new(parts, sandbox.id());
        let ended = agent.drive(&sandbox).await;
        let patch = match &ended {
            Ok(_) => Some(sandbox.diff().await.map_err(ExecError::infra)),
            Err(_) => None,
        };
        if let Err(e) = sandbox.remove().await {
            tracing::warn!(run_id = run.run_id, error = %e, "could not remove the agent's container");
        }
        let ending = ended?;
        let diff = patch.expect("taken when the loop ended well")?;
        let (patch, detail) = match &agent.mini {
            None => (diff, None),
            // mini-swe-agent's submission is what is graded (nothing when the run did not
            // submit); the sandbox's diff is kept beside it when the two differ.
            Some(m) => {
                let submission = m.submission.clone().unwrap_or_default();
                let detail = (submission != diff).then(|| {
                    format!(
                        "the submission (graded, as mini-swe-agent takes it) differs from the sandbox's diff \
                         against the base commit, which was:\n{diff}"
                    )
                });
                (submission, detail)
            }
        };
        Ok(Worked { ending, patch, totals: agent.totals, detail })
    }

    fn llm_config(&self, run: &ClaimedRun) -> Result<LlmConfig, ExecError> {
        let agent = &run.agent;
        let api_key = self
            .keys
            .key(agent.api_key_env.as_deref(), &format!("agent `{}`", agent.name))
            .map_err(ExecError::infra)?;
        let tokenizer = match &agent.tokenizer {
            Some(path) => Some(llm::tokens::TokenCounter::load(path).map_err(|e| ExecError::Infra {
                reason: format!("agent `{}`: {e} (the `tokenizer` path is read on the workers)", agent.name),
                source: Some(e.into()),
            })?),
            None => None,
        };
        Ok(LlmConfig {
            tokenizer,
            base_url: agent.base_url.clone(),
            model: agent.model.clone(),
            api_key,
            sampling: agent.sampling.clone(),
            price: agent.price.clone(),
            extra_body: agent.extra_body.clone(),
            retry: self.retry.clone(),
        })
    }
}

/// The container environment of an agent's sandbox: SWE-bench images activate their conda
/// environment from /root/.bashrc, which non-interactive bash reads through `BASH_ENV`.
const SANDBOX_ENV: &str = "BASH_ENV=/root/.bashrc";

/// What an agent loop starts from.
struct Parts<'a> {
    run: &'a ClaimedRun,
    spec: &'a AgentExecSpec,
    ctx: Option<&'a RunContext>,
    prompts: Prompts,
    /// Set when the agent follows a mini-swe-agent file.
    mini: Option<mini::MiniRun<'a>>,
    client: &'a LlmClient,
    hook: Box<dyn StepHook>,
    report: &'a mut RunReport,
}

/// The state of one run's agent loop.
struct AgentRun<'a> {
    run: &'a ClaimedRun,
    spec: &'a AgentExecSpec,
    ctx: Option<&'a RunContext>,
    prompts: Prompts,
    /// Set when the agent follows a mini-swe-agent file (its templates and rules then apply).
    mini: Option<mini::MiniRun<'a>>,
    /// Where commands run.
    workdir: String,
    /// Time limit of one command.
    command_timeout: Duration,
    /// The sandbox's container (2.x files quote it in timeout messages).
    container_id: String,
    /// When the loop started (2.x's `elapsed_seconds`).
    started: Instant,
    client: &'a LlmClient,
    /// The tools offered to the model (tool calling only).
    tools: Option<Value>,
    hook: Box<dyn StepHook>,
    /// The conversation, exactly as the model sees it.
    messages: Vec<Value>,
    /// Where the supervisor message the agent sees now is in `messages` (only the newest one
    /// stays; it folds in the earlier ones).
    supervisor_at: Option<usize>,
    /// What each step did, for the critic.
    facts: Vec<StepFacts>,
    /// `git status` after the last step (when the critic asks for changes).
    last_status: String,
    critic_calls: i32,
    /// Messages appended since the last recorded step (go into the next step's record).
    pending: Vec<Value>,
    totals: RunTotals,
    call_index: i32,
    format_errors: u32,
    edits: edits::EditTracker,
    report: &'a mut RunReport,
}

/// One command's result, as the loop needs it.
struct CommandResult {
    exit_code: Option<i64>,
    output: String,
    timed_out: bool,
    duration: Duration,
}

/// What a step did in the sandbox and the conversation, as its record shows it.
struct Acted {
    /// The command run, `submit` for the submit tool, None for a format error.
    action: Option<String>,
    observation: Option<String>,
    exit_code: Option<i64>,
    command_time: Duration,
    facts: StepFacts,
    ending: Option<Ending>,
}

impl Acted {
    fn new(step: u32, action: Option<String>, observation: Option<String>) -> Self {
        let facts = StepFacts { step, ..Default::default() };
        Acted { action, observation, exit_code: None, command_time: Duration::ZERO, facts, ending: None }
    }

    /// The command's result, in the record and the critic's facts.
    fn ran(&mut self, result: &CommandResult) {
        self.observation = Some(result.output.clone());
        self.exit_code = result.exit_code;
        self.command_time = result.duration;
    }
}

/// Where a step's reply came from: the model, asked now (with the record of that call), or
/// the base run whose prefix is replayed (its tokens and cost carried over, no call made).
enum Origin {
    Live { call: LlmCallRecord, llm_time: Duration },
    Replayed,
}

/// A finished step, ready to be recorded.
struct StepDone {
    index: u32,
    started: Instant,
    origin: Origin,
    acted: Acted,
    input_tokens: i64,
    output_tokens: i64,
    cached_tokens: i64,
    cost_usd: Decimal,
}

impl<'a> AgentRun<'a> {
    fn new(parts: Parts<'a>, container_id: &str) -> Self {
        let Parts { run, spec, ctx, prompts, mini, client, hook, report } = parts;
        let file = mini.as_ref().map(|m| m.config);
        AgentRun {
            run,
            spec,
            ctx,
            prompts,
            workdir: file.map_or_else(|| spec.workdir.clone(), |c| c.cwd.clone()),
            command_timeout: Duration::from_secs(file.map_or(spec.command_timeout_s, |c| c.timeout_s)),
            container_id: container_id.to_string(),
            started: Instant::now(),
            tools: match file {
                Some(c) => mini::tools(c),
                None => scaffold::tools(spec.scaffold),
            },
            mini,
            client,
            hook,
            messages: Vec::new(),
            supervisor_at: None,
            facts: Vec::new(),
            last_status: String::new(),
            critic_calls: 0,
            pending: Vec::new(),
            totals: RunTotals::default(),
            call_index: 0,
            format_errors: 0,
            edits: edits::EditTracker::default(),
            report,
        }
    }
}

impl AgentRun<'_> {
    /// The loop: start (or resume after a replayed prefix), then one step at a time until one
    /// ends the run. The limits on steps, cost and wall time are checked here, before each
    /// step; a step itself ends the run at the wall-time limit (a model call or command cut
    /// by it) or the format-error limit.
    async fn drive(&mut self, sandbox: &Sandbox) -> Result<Ending, ExecError> {
        let deadline = match self.run.agent.limits.max_wall_time_s {
            // No wall-time limit (0): a deadline that never comes.
            0 => Instant::now() + NO_DEADLINE,
            limit => Instant::now() + Duration::from_secs(limit),
        };
        let mut shell = sandbox.shell().await.map_err(ExecError::infra)?;
        let first_step = match self.begin(&mut shell, deadline).await? {
            ControlFlow::Continue(step) => step,
            ControlFlow::Break(ending) => return Ok(ending),
        };
        for step in first_step.. {
            if let Some(limit) = self.limit_reached(step, deadline) {
                return Ok(Ending::Limit(limit));
            }
            if let Some(ending) = self.step(&mut shell, step, deadline).await? {
                return Ok(ending);
            }
        }
        unreachable!("the step counter is unbounded")
    }

    /// The limit that forbids taking step `step`, if any (cost as mini-swe-agent checks it:
    /// before the call, which may overshoot by its own cost).
    fn limit_reached(&self, step: u32, deadline: Instant) -> Option<Outcome> {
        let limits = &self.run.agent.limits;
        if step >= limits.max_steps {
            Some(Outcome::StepLimit)
        } else if limits.max_cost_usd.is_some_and(|max| self.totals.agent_cost_usd >= max) {
            Some(Outcome::CostLimit)
        } else if Instant::now() >= deadline {
            Some(Outcome::TimeLimit)
        } else {
            None
        }
    }

    /// A new conversation, or the base run's prefix replayed and then the critic asked (the
    /// paper's first call after step k): the first step left to take, or how the run ended.
    async fn begin(
        &mut self,
        shell: &mut Shell,
        deadline: Instant,
    ) -> Result<ControlFlow<Ending, u32>, ExecError> {
        let Some(prefix) = &self.run.prefix else {
            self.start_conversation()?;
            return Ok(ControlFlow::Continue(0));
        };
        if let Some(ending) = self.replay_prefix(shell, prefix, deadline).await? {
            return Ok(ControlFlow::Break(ending));
        }
        let first_step = prefix.steps.len() as u32;
        match self.steer(Moment::AfterStep, first_step.saturating_sub(1)).await? {
            Some(ending) => Ok(ControlFlow::Break(ending)),
            None => Ok(ControlFlow::Continue(first_step)),
        }
    }

    /// One step: ask the model, act on its reply, record the step, then let the critic steer.
    async fn step(
        &mut self,
        shell: &mut Shell,
        step: u32,
        deadline: Instant,
    ) -> Result<Option<Ending>, ExecError> {
        let started = Instant::now();
        let completion = match self.ask_model(step, deadline).await? {
            ControlFlow::Continue(completion) => completion,
            ControlFlow::Break(ending) => return Ok(Some(ending)),
        };
        let call = self.call_record(step, &completion);
        self.push(scaffold::assistant_message(&completion.message));
        let acted = match self.mini.is_some() {
            true => self.mini_act(shell, step, &completion, deadline).await?,
            false => self.act(shell, step, &completion.message, deadline).await?,
        };
        let command_time = acted.command_time;
        let ending = self
            .record(StepDone {
                index: step,
                started,
                origin: Origin::Live { call, llm_time: completion.latency },
                acted,
                input_tokens: completion.usage.prompt_tokens,
                output_tokens: completion.usage.completion_tokens,
                cached_tokens: completion.usage.cached_tokens,
                cost_usd: completion.cost_usd,
            })
            .await?;
        let timings =
            StepTimings { total: started.elapsed(), llm: completion.latency, command: command_time };
        self.report.steps.push(timings);
        self.after_step(step, ending).await
    }

    /// One model call on the conversation so far, cut at the run's wall-time limit (which
    /// ends the run). A failed call is recorded, then is an infrastructure failure.
    async fn ask_model(
        &mut self,
        step: u32,
        deadline: Instant,
    ) -> Result<ControlFlow<Ending, llm::Completion>, ExecError> {
        let started = Instant::now();
        let chat = self.client.chat(&self.messages, self.tools.as_ref());
        match tokio::time::timeout_at(deadline.into(), chat).await {
            Ok(Ok(completion)) => Ok(ControlFlow::Continue(completion)),
            Err(_) => {
                // The wall-time limit fell during the call: nothing was billed.
                let call =
                    self.failed_call(step, CallStatus::Timeout, None, started, "the run's wall-time limit");
                self.upload(Vec::new(), vec![call], Vec::new()).await?;
                Ok(ControlFlow::Break(Ending::Limit(Outcome::TimeLimit)))
            }
            Ok(Err(e)) => Err(self.model_failed(step, started, e).await),
        }
    }

    /// Records a model call that failed and says what failed.
    async fn model_failed(&mut self, step: u32, started: Instant, e: llm::Error) -> ExecError {
        let (status, http) = match &e {
            llm::Error::Unavailable { last_status, .. } => {
                (CallStatus::Unavailable, last_status.map(i32::from))
            }
            llm::Error::Rejected { status, .. } => (CallStatus::Rejected, Some(i32::from(*status))),
            llm::Error::Malformed { .. } => (CallStatus::Malformed, None),
        };
        let call = self.failed_call(step, status, http, started, &e.to_string());
        if let Err(upload_failed) = self.upload(Vec::new(), vec![call], Vec::new()).await {
            return upload_failed;
        }
        let context = format!("model endpoint of agent `{}`", self.run.agent.name);
        // Only an outage (every retry failed) rests the endpoint; a refusal or a malformed
        // answer is this request's problem, not the endpoint's.
        match e {
            llm::Error::Unavailable { .. } => ExecError::EndpointUnavailable(format!("{context}: {e}")),
            _ => ExecError::infra_in(&context, e),
        }
    }

    /// Acts on the model's reply: a format error is answered with the format reminder, a
    /// submission taken, a command run and observed.
    async fn act(
        &mut self,
        shell: &mut Shell,
        step: u32,
        reply: &Value,
        deadline: Instant,
    ) -> Result<Acted, ExecError> {
        match scaffold::parse(self.spec.scaffold, reply) {
            Action::FormatError { actions, error, call_ids } => {
                self.format_error(step, actions, &error, &call_ids)
            }
            Action::Submit { call_id } => {
                let observation = "Submitted.".to_string();
                if let Some(id) = call_id {
                    self.push(json!({"role": "tool", "tool_call_id": id, "content": observation}));
                }
                let mut acted = Acted::new(step, Some("submit".into()), Some(observation));
                acted.ending = Some(Ending::Submitted);
                Ok(acted)
            }
            Action::Bash { command, call_id } => {
                self.run_action(shell, step, command, call_id, deadline).await
            }
        }
    }

    /// Acts on a reply as mini-swe-agent does with the run's file: a format error answered with
    /// its template (1.x: no limit; 2.x: its limit of errors in a row), else each action run
    /// in turn, each answered with its observation or timeout message, until one submits.
    async fn mini_act(
        &mut self,
        shell: &mut Shell,
        step: u32,
        completion: &llm::Completion,
        deadline: Instant,
    ) -> Result<Acted, ExecError> {
        let m = self.mini.as_ref().expect("called for mini runs");
        let actions = match mini::parse(m.config, &completion.message) {
            Ok(actions) => actions,
            Err(e) => {
                let text = m
                    .format_error_text(&e, completion.finish_reason.as_deref(), &self.mini_state())
                    .map_err(template_error)?;
                let m = self.mini.as_mut().expect("called for mini runs");
                m.consecutive_format_errors += 1;
                let ends = m.format_errors_end_run();
                self.format_errors += 1;
                self.push(json!({"role": "user", "content": text}));
                let mut acted = Acted::new(step, None, Some(text));
                acted.facts.format_error = true;
                if ends {
                    acted.ending = Some(Ending::Limit(Outcome::FormatErrorLimit));
                }
                return Ok(acted);
            }
        };
        self.mini.as_mut().expect("called for mini runs").consecutive_format_errors = 0;
        let mut acted = Acted::new(step, None, None);
        let mut commands = Vec::new();
        for action in actions {
            commands.push(action.command.clone());
            let result = self.run_command(shell, &action.command, deadline).await?;
            self.note_command(&mut acted.facts, &action.command, &result);
            acted.ran(&result);
            if result.timed_out && Instant::now() >= deadline {
                acted.ending = Some(Ending::Limit(Outcome::TimeLimit));
                break;
            }
            if !result.timed_out && self.take_submission(&result) {
                acted.ending = Some(Ending::Submitted);
                break;
            }
            let text = self
                .mini_observation(&action.command, completion, &result, step, shell, &mut acted.facts)
                .await?;
            self.push(mini::observation_message(&text, action.call_id.as_deref()));
        }
        acted.action = Some(commands.join("\n"));
        Ok(acted)
    }

    /// What a mini run's command is answered with: the file's timeout message, or its
    /// observation (the whole output: the file's template cuts it), then edited lines when asked.
    async fn mini_observation(
        &mut self,
        command: &str,
        completion: &llm::Completion,
        result: &CommandResult,
        step: u32,
        shell: &mut Shell,
        facts: &mut StepFacts,
    ) -> Result<String, ExecError> {
        let state = self.mini_state();
        let m = self.mini.as_ref().expect("called for mini runs");
        let text = if result.timed_out {
            let facts = protocol::mini::TimeoutFacts {
                command,
                reply: &completion.content,
                output: &result.output,
                container_id: &self.container_id,
            };
            m.prompts.timeout(&facts, &state)
        } else {
            let out = protocol::mini::CommandOutput {
                output: &result.output,
                returncode: result.exit_code.unwrap_or(-1),
                exception_info: "",
                action: command,
            };
            m.prompts.observation(&out, &state)
        }
        .map_err(template_error)?;
        if self.hook.wants_changes() {
            self.note_changes(shell, facts).await?;
        }
        let mut text = text;
        // The paper's edited lines (`edit_context_lines`), after the file's observation, as
        // steerbench's own observation template writes them.
        if let Some(n) = self.spec.edit_context_lines {
            let edits = self.edited_lines(shell, n).await?;
            if !edits.is_empty() {
                text = format!(
                    "{text}\n<edited_lines>\nFiles edited after running the command (edited lines with context):\n{edits}\n</edited_lines>"
                );
            }
        }
        if let Some(note) = self.hook.observation_note(step, self.run.agent.limits.max_steps) {
            text = format!("{text}\n\n{note}");
        }
        Ok(text)
    }

    /// Whether a command submitted; a mini run keeps its submission as mini-swe-agent takes it.
    fn take_submission(&mut self, result: &CommandResult) -> bool {
        match self.mini.as_mut() {
            None => scaffold::is_submission(&result.output, result.exit_code),
            Some(m) => match m.config.submission(&result.output, result.exit_code) {
                Some(submission) => {
                    m.submission = Some(submission);
                    true
                }
                None => false,
            },
        }
    }

    /// 2.x's run variables for a mini run's templates.
    fn mini_state(&self) -> protocol::mini::RunState {
        protocol::mini::RunState {
            n_model_calls: self.call_index as u32,
            model_cost: self.totals.agent_cost_usd.try_into().unwrap_or(0.0),
            elapsed_seconds: self.started.elapsed().as_secs(),
        }
    }

    /// Answers a reply that broke the format with the format reminder; too many end the run.
    fn format_error(
        &mut self,
        step: u32,
        actions: usize,
        error: &str,
        call_ids: &[String],
    ) -> Result<Acted, ExecError> {
        self.format_errors += 1;
        let scaffold = self.spec.scaffold.as_str();
        let observation = self
            .prompts
            .format_error(&FormatErrorVars { actions, error, scaffold })
            .map_err(template_error)?;
        for m in scaffold::answer(&observation, call_ids) {
            self.push(m);
        }
        let mut acted = Acted::new(step, None, Some(observation));
        acted.facts.format_error = true;
        if self.format_errors > self.spec.max_format_errors {
            acted.ending = Some(Ending::Limit(Outcome::FormatErrorLimit));
        }
        Ok(acted)
    }

    /// Runs the model's command; a submission ends the run, anything else is observed.
    async fn run_action(
        &mut self,
        shell: &mut Shell,
        step: u32,
        command: String,
        call_id: Option<String>,
        deadline: Instant,
    ) -> Result<Acted, ExecError> {
        let result = self.run_command(shell, &command, deadline).await?;
        let mut acted = Acted::new(step, None, None);
        self.note_command(&mut acted.facts, &command, &result);
        if scaffold::is_submission(&result.output, result.exit_code) {
            acted.ending = Some(Ending::Submitted);
            if let Some(id) = call_id {
                self.push(json!({"role": "tool", "tool_call_id": id, "content": result.output}));
            }
        } else {
            self.observe(shell, step, &result, call_id, &mut acted.facts).await?;
            if result.timed_out && Instant::now() >= deadline {
                acted.ending = Some(Ending::Limit(Outcome::TimeLimit));
            }
        }
        acted.action = Some(command);
        acted.ran(&result);
        Ok(acted)
    }

    /// Shows the agent what its command did: the rendered observation (with the edits it
    /// made, and the hook's note) answers its reply.
    async fn observe(
        &mut self,
        shell: &mut Shell,
        step: u32,
        result: &CommandResult,
        call_id: Option<String>,
        facts: &mut StepFacts,
    ) -> Result<(), ExecError> {
        if self.hook.wants_changes() {
            self.note_changes(shell, facts).await?;
        }
        let edits = match self.spec.edit_context_lines {
            Some(n) => self.edited_lines(shell, n).await?,
            None => String::new(),
        };
        let mut observation = self.render_observation(result, &edits, step)?;
        if let Some(note) = self.hook.observation_note(step, self.run.agent.limits.max_steps) {
            observation = format!("{observation}\n\n{note}");
        }
        let ids: Vec<String> = call_id.into_iter().collect();
        for m in scaffold::answer(&observation, &ids) {
            self.push(m);
        }
        Ok(())
    }

    /// Records a finished step, live or replayed alike: its facts for the critic, the run's
    /// totals, and its record (with its model call, if it made one) uploaded before the run
    /// goes on. Returns how the step ended the run, if it did.
    async fn record(&mut self, done: StepDone) -> Result<Option<Ending>, ExecError> {
        let StepDone { index, started, origin, acted, input_tokens, output_tokens, cached_tokens, cost_usd } =
            done;
        self.facts.push(acted.facts);
        self.totals.steps += 1;
        self.totals.input_tokens += input_tokens;
        self.totals.output_tokens += output_tokens;
        self.totals.cached_tokens += cached_tokens;
        self.totals.agent_cost_usd += cost_usd;
        let (calls, llm_time, replayed) = match origin {
            Origin::Live { call, llm_time } => (vec![call], llm_time, false),
            Origin::Replayed => (Vec::new(), Duration::ZERO, true),
        };
        let record = StepRecord {
            index: index as i32,
            attempt: 0,
            action: acted.action,
            observation: acted.observation,
            exit_code: acted.exit_code.map(|c| c as i32),
            duration_ms: started.elapsed().as_millis() as i64,
            llm_ms: llm_time.as_millis() as i64,
            command_ms: acted.command_time.as_millis() as i64,
            input_tokens,
            output_tokens,
            cached_tokens,
            cost_usd,
            messages: Value::Array(std::mem::take(&mut self.pending)),
            replayed,
            recorded_at: None,
        };
        self.upload(vec![record], calls, Vec::new()).await?;
        Ok(acted.ending)
    }

    /// After a recorded step: the critic's turn. A submission is shown to the critic first,
    /// when it asks: its feedback refuses it (the agent reads the feedback and goes on).
    async fn after_step(&mut self, step: u32, ending: Option<Ending>) -> Result<Option<Ending>, ExecError> {
        let moment = match ending {
            Some(Ending::Submitted) if self.hook.reviews_submissions() => Moment::BeforeSubmit,
            Some(ending) => return Ok(Some(ending)),
            None => Moment::AfterStep,
        };
        self.steer(moment, step).await
    }

    fn start_conversation(&mut self) -> Result<(), ExecError> {
        let inst = &self.run.instance;
        let vars = TaskVars {
            task: &inst.problem_statement,
            instance_id: &inst.instance_id,
            repo: &inst.repo,
            base_commit: &inst.base_commit,
            hints: &inst.hints_text,
            workdir: &self.workdir,
            scaffold: self.spec.scaffold.as_str(),
            max_steps: self.run.agent.limits.max_steps,
            command_timeout_s: self.spec.command_timeout_s,
            submit_sentinel: protocol::SUBMIT_SENTINEL,
        };
        let (system, instance) = match &self.mini {
            Some(m) => (
                m.prompts.system(&inst.problem_statement).map_err(template_error)?,
                m.prompts.instance(&inst.problem_statement).map_err(template_error)?,
            ),
            None => (
                self.prompts.system(&vars).map_err(template_error)?,
                self.prompts.instance(&vars).map_err(template_error)?,
            ),
        };
        self.push(json!({"role": "system", "content": system}));
        self.push(json!({"role": "user", "content": instance}));
        Ok(())
    }

    fn push(&mut self, message: Value) {
        self.messages.push(message.clone());
        self.pending.push(message);
    }

    /// A supervisor message: it replaces the previous one in the agent's view (the critic folds
    /// the earlier feedback into it); the step records keep every one, marked `supervisor`.
    fn push_supervisor(&mut self, text: String) {
        if let Some(at) = self.supervisor_at.take() {
            self.messages.remove(at);
        }
        self.supervisor_at = Some(self.messages.len());
        self.messages.push(json!({"role": "user", "content": text}));
        self.pending.push(json!({"role": "user", "content": text, "supervisor": true}));
    }

    /// Asks the critic hook after a step (or before a submission) and acts on its guidance;
    /// Some(ending) when the run ends here.
    async fn steer(&mut self, moment: Moment, step: u32) -> Result<Option<Ending>, ExecError> {
        match self.review(moment, step).await? {
            Guidance::Continue if moment == Moment::BeforeSubmit => Ok(Some(Ending::Submitted)),
            Guidance::Continue => Ok(None),
            Guidance::Feedback(text) => {
                if moment == Moment::BeforeSubmit {
                    // A refused submission is no submission: the agent goes on.
                    if let Some(m) = self.mini.as_mut() {
                        m.submission = None;
                    }
                }
                if moment == Moment::BeforeSubmit && self.spec.scaffold == protocol::Scaffold::ToolCalling {
                    // The submit call was answered "Submitted."; say it was not taken.
                    self.push_supervisor(format!("Your submission was not accepted yet.\n\n{text}"));
                } else {
                    self.push_supervisor(text);
                }
                Ok(None)
            }
            Guidance::Stop(reason) => Ok(Some(Ending::CriticStop(reason))),
        }
    }

    /// Prefix replay: the base run's steps, each command re-executed in this run's sandbox and
    /// each message copied, recorded as replayed steps (their model answers were not asked
    /// again: no model call, the base step's tokens and cost carried over so the step and cost
    /// counters match the base run's). Some(ending) when the base run submitted within them.
    async fn replay_prefix(
        &mut self,
        shell: &mut Shell,
        prefix: &PrefixReplay,
        deadline: Instant,
    ) -> Result<Option<Ending>, ExecError> {
        for base in &prefix.steps {
            let started = Instant::now();
            for m in base.messages.as_array().into_iter().flatten() {
                // A base run's own supervisor messages are not part of what is replayed.
                if m.get("supervisor").is_none() {
                    self.push(m.clone());
                }
            }
            let acted = self.replay_act(shell, base, deadline).await?;
            let done = StepDone {
                index: base.index as u32,
                started,
                origin: Origin::Replayed,
                acted,
                input_tokens: base.input_tokens,
                output_tokens: base.output_tokens,
                cached_tokens: base.cached_tokens,
                cost_usd: base.cost_usd,
            };
            if let Some(ending) = self.record(done).await? {
                return Ok(Some(ending));
            }
        }
        Ok(None)
    }

    /// A base step done again: its command re-run in this sandbox (its record shows this
    /// run's output); a format error or the submit tool as the base run had them.
    async fn replay_act(
        &mut self,
        shell: &mut Shell,
        base: &StepRecord,
        deadline: Instant,
    ) -> Result<Acted, ExecError> {
        let mut acted = Acted::new(base.index as u32, base.action.clone(), base.observation.clone());
        match base.action.as_deref() {
            None => {
                acted.facts.format_error = true;
                self.format_errors += 1;
            }
            Some("submit")
                if self.spec.scaffold == protocol::Scaffold::ToolCalling && self.mini.is_none() =>
            {
                acted.ending = Some(Ending::Submitted)
            }
            Some(command) => {
                let result = self.run_command(shell, command, deadline).await?;
                self.note_command(&mut acted.facts, command, &result);
                if self.take_submission(&result) {
                    acted.ending = Some(Ending::Submitted);
                } else if self.hook.wants_changes() {
                    self.note_changes(shell, &mut acted.facts).await?;
                }
                acted.ran(&result);
            }
        }
        Ok(acted)
    }

    /// Asks the critic hook and records the calls it made.
    async fn review(&mut self, moment: Moment, step: u32) -> Result<Guidance, ExecError> {
        let agent_view: Vec<Value> = self
            .messages
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.supervisor_at)
            .map(|(_, m)| m.clone())
            .collect();
        let view = StepView {
            moment,
            step,
            max_steps: self.run.agent.limits.max_steps,
            messages: &agent_view,
            facts: &self.facts,
        };
        let review = self.hook.review(view).await?;
        let mut calls = review.calls;
        for call in &mut calls {
            call.call_index = self.critic_calls;
            self.critic_calls += 1;
            self.totals.critic_cost_usd += call.cost_usd;
        }
        if !calls.is_empty() {
            self.upload(Vec::new(), Vec::new(), calls).await?;
        }
        Ok(review.guidance)
    }

    /// What a command did, in the step's facts for the critic.
    fn note_command(&self, facts: &mut StepFacts, command: &str, result: &CommandResult) {
        facts.command = Some(command.to_string());
        facts.exit_code = result.exit_code;
        facts.timed_out = result.timed_out;
        facts.output = cap_chars(&result.output, self.spec.observation_max_chars);
        facts.ran_tests = crate::critic::looks_like_tests(command);
    }

    /// Which tracked files the step changed (`git status`, compared with the last step's).
    async fn note_changes(&mut self, shell: &mut Shell, facts: &mut StepFacts) -> Result<(), ExecError> {
        let limits = ExecLimits { timeout: EDIT_DIFF_TIMEOUT, max_output_bytes: COMMAND_OUTPUT_BYTES };
        let command = format!("git -C '{}' status --porcelain 2>/dev/null", self.workdir);
        let out = shell.run(&command, &limits).await.map_err(ExecError::infra)?;
        if out.timed_out || out.exit_code != Some(0) {
            return Ok(());
        }
        facts.edited = out.output != self.last_status;
        // Modified tracked files (`?? new-file` lines are untracked: reproduction scripts, ...).
        facts.modified_files = out
            .output
            .lines()
            .filter(|l| !l.starts_with("??"))
            .filter_map(|l| l.get(3..))
            .map(str::to_string)
            .collect();
        self.last_status = out.output;
        Ok(())
    }

    /// Runs one command in a subshell started in the work directory (as mini-swe-agent's
    /// fresh `bash -c`: `cd` and `export` do not carry over), inside the run's persistent
    /// shell, which makes it about 100x cheaper than an exec per command.
    async fn run_command(
        &mut self,
        shell: &mut Shell,
        command: &str,
        deadline: Instant,
    ) -> Result<CommandResult, ExecError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout = self.command_timeout.min(remaining.max(Duration::from_millis(1)));
        let wrapped = format!("cd '{}' && (\n{command}\n)", self.workdir.replace('\'', r"'\''"));
        let limits = ExecLimits { timeout, max_output_bytes: COMMAND_OUTPUT_BYTES };
        let out = shell.run(&wrapped, &limits).await.map_err(ExecError::infra)?;
        Ok(CommandResult {
            exit_code: out.exit_code,
            output: out.output,
            timed_out: out.timed_out,
            duration: out.duration,
        })
    }

    async fn edited_lines(&mut self, shell: &mut Shell, context: u32) -> Result<String, ExecError> {
        let limits = ExecLimits { timeout: EDIT_DIFF_TIMEOUT, max_output_bytes: COMMAND_OUTPUT_BYTES };
        let out = shell
            .run(&edits::diff_command(&self.workdir, context), &limits)
            .await
            .map_err(ExecError::infra)?;
        if out.timed_out || out.exit_code != Some(0) {
            return Ok(String::new());
        }
        Ok(self.edits.update(&out.output))
    }

    fn render_observation(
        &self,
        result: &CommandResult,
        edits: &str,
        step: u32,
    ) -> Result<String, ExecError> {
        let output_chars = result.output.chars().count();
        let max = self.spec.observation_max_chars;
        // The paper and mini-swe-agent: observations of 10,000 characters or more keep the
        // first and last 5,000.
        let output = crate::text::cut_from(&result.output, max);
        self.prompts
            .observation(&ObservationVars {
                returncode: result.exit_code.unwrap_or(-1),
                output: &output,
                timed_out: result.timed_out,
                output_truncated: output_chars >= max,
                output_chars,
                command_timeout_s: self.spec.command_timeout_s,
                edits,
                step: step + 1,
                max_steps: self.run.agent.limits.max_steps,
                scaffold: self.spec.scaffold.as_str(),
            })
            .map_err(template_error)
    }

    fn next_call_index(&mut self) -> i32 {
        self.call_index += 1;
        self.call_index - 1
    }

    fn call_record(&mut self, step: u32, c: &llm::Completion) -> LlmCallRecord {
        LlmCallRecord {
            call_index: self.next_call_index(),
            step_index: Some(step as i32),
            model: self.run.agent.model.clone(),
            status: CallStatus::Ok,
            http_status: Some(200),
            retries: c.retries as i32,
            latency_ms: c.latency.as_millis() as i64,
            input_tokens: c.usage.prompt_tokens,
            output_tokens: c.usage.completion_tokens,
            cached_tokens: c.usage.cached_tokens,
            reasoning_tokens: c.usage.reasoning_tokens,
            tokens_estimated: c.usage.estimated,
            cost_usd: c.cost_usd,
            finish_reason: c.finish_reason.clone(),
            error: c.last_error.clone(),
            response_id: c.response_id.clone(),
        }
    }

    fn failed_call(
        &mut self,
        step: u32,
        status: CallStatus,
        http_status: Option<i32>,
        started: Instant,
        error: &str,
    ) -> LlmCallRecord {
        LlmCallRecord {
            call_index: self.next_call_index(),
            step_index: Some(step as i32),
            model: self.run.agent.model.clone(),
            status,
            http_status,
            retries: self.client.attempts().saturating_sub(1) as i32,
            latency_ms: started.elapsed().as_millis() as i64,
            cost_usd: Decimal::ZERO,
            error: Some(error.to_string()),
            ..Default::default()
        }
    }

    async fn upload(
        &self,
        steps: Vec<StepRecord>,
        calls: Vec<LlmCallRecord>,
        critic_calls: Vec<protocol::CriticCallRecord>,
    ) -> Result<(), ExecError> {
        match self.ctx {
            Some(ctx) => ctx.record(steps, calls, critic_calls).await,
            None => Ok(()),
        }
    }
}

fn template_error(e: prompts::TemplateError) -> ExecError {
    ExecError::infra_in("rendering the prompt", e)
}
