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

mod edits;
pub mod hook;
pub use protocol::prompts;
pub mod scaffold;

use std::time::{Duration, Instant};

use protocol::{
    AgentExecSpec, CallStatus, ClaimedRun, ExecutorSpec, LlmCallRecord, Outcome, RunTotals, StepRecord,
};
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::evaluate::EvaluateExecutor;
use crate::executor::{ExecError, ExecFuture, Executor, ImagesFuture, RunContext, RunResult};
use crate::llm::{self, LlmClient, LlmConfig, RetryPolicy, Secret};
use crate::sandbox::{ExecLimits, Sandbox, Shell};
use hook::{Guidance, Moment, StepFacts, StepHook, StepView};
use prompts::{FormatErrorVars, ObservationVars, Prompts, TaskVars};
use scaffold::Action;

/// Output captured from one command before it is cut to the observation's size (head and tail
/// kept at both stages).
const COMMAND_OUTPUT_BYTES: usize = 1 << 20;
/// Time limit of the edit-context diff after a command.
const EDIT_DIFF_TIMEOUT: Duration = Duration::from_secs(30);

pub struct AgentExecutor {
    /// Grades the final patch in a fresh sandbox; also owns the engine, the worker's name and
    /// the image cache, which the agent's sandbox shares.
    grader: EvaluateExecutor,
    retry: RetryPolicy,
}

impl AgentExecutor {
    pub fn new(grader: EvaluateExecutor) -> Self {
        AgentExecutor { grader, retry: RetryPolicy::default() }
    }

    /// How model calls are retried (tests and benchmarks shorten the waits).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
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
        self.grader.held_images()
    }

    fn status(&self) -> Option<String> {
        self.grader.status()
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

    async fn run_reporting(
        &self,
        run: &ClaimedRun,
        ctx: Option<&RunContext>,
        report: &mut RunReport,
    ) -> Result<RunResult, ExecError> {
        let ExecutorSpec::Agent(spec) = &run.executor else {
            return Err(ExecError::Infra("the agent executor was handed another kind of run".into()));
        };
        let prompts = Prompts::new(&spec.templates).map_err(|e| ExecError::Infra(e.to_string()))?;
        let client = LlmClient::new(self.llm_config(run)?).map_err(|e| ExecError::Infra(e.to_string()))?;

        let (sandbox, _image_guard) =
            self.grader.open_sandbox(run, vec![SANDBOX_ENV.into()], &spec.workdir).await?;
        let mut agent = AgentRun {
            run,
            spec,
            ctx,
            prompts,
            client: &client,
            hook: crate::critic::hook_for(run).map_err(|e| ExecError::Infra(e.to_string()))?,
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
        };
        let ended = agent.drive(&sandbox).await;
        let totals = agent.totals.clone();
        // The patch is taken whatever ended the run (a limit grades the work so far).
        let patch = match &ended {
            Ok(_) => Some(sandbox.diff().await.map_err(|e| ExecError::Infra(e.to_string()))),
            Err(_) => None,
        };
        if let Err(e) = sandbox.remove().await {
            tracing::warn!(run_id = run.run_id, error = %e, "could not remove the agent's container");
        }
        let ending = ended?;
        let patch = patch.expect("taken when the loop ended well")?;

        let mut result = self.grader.grade(run, spec.grading.into(), Some(patch)).await?;
        result.totals = totals;
        match ending {
            Ending::Submitted => {}
            Ending::Limit(outcome) => result.outcome = outcome,
            Ending::CriticStop(reason) => {
                result.outcome = Outcome::CriticStop;
                result.detail = Some(format!("stopped by the critic: {reason}"));
            }
        }
        Ok(result)
    }

    fn llm_config(&self, run: &ClaimedRun) -> Result<LlmConfig, ExecError> {
        let agent = &run.agent;
        let api_key = Secret::from_env(agent.api_key_env.as_deref(), &format!("agent `{}`", agent.name))
            .map_err(|e| ExecError::Infra(e.to_string()))?;
        let tokenizer = match &agent.tokenizer {
            Some(path) => Some(llm::tokens::TokenCounter::load(path).map_err(|e| {
                ExecError::Infra(format!(
                    "agent `{}`: {e} (the `tokenizer` path is read on the workers)",
                    agent.name
                ))
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

/// The state of one run's agent loop.
struct AgentRun<'a> {
    run: &'a ClaimedRun,
    spec: &'a AgentExecSpec,
    ctx: Option<&'a RunContext>,
    prompts: Prompts,
    client: &'a LlmClient,
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

impl AgentRun<'_> {
    async fn drive(&mut self, sandbox: &Sandbox) -> Result<Ending, ExecError> {
        let started = Instant::now();
        let limits = &self.run.agent.limits;
        let deadline = started + Duration::from_secs(limits.max_wall_time_s);
        let mut shell = sandbox.shell().await.map_err(|e| ExecError::Infra(e.to_string()))?;
        let tools = scaffold::tools(self.spec.scaffold);
        let mut first_step = 0;
        match &self.run.prefix {
            Some(prefix) => {
                if let Some(ending) = self.replay_prefix(&mut shell, prefix, deadline).await? {
                    return Ok(ending);
                }
                first_step = prefix.steps.len() as u32;
                // The critic is asked right after the prefix (the paper's first call after step k).
                if let Some(ending) = self.steer(Moment::AfterStep, first_step.saturating_sub(1)).await? {
                    return Ok(ending);
                }
            }
            None => self.start_conversation()?,
        }

        for step in first_step.. {
            if step >= limits.max_steps {
                return Ok(Ending::Limit(Outcome::StepLimit));
            }
            if limits.max_cost_usd.is_some_and(|max| self.totals.agent_cost_usd >= max) {
                return Ok(Ending::Limit(Outcome::CostLimit));
            }
            if Instant::now() >= deadline {
                return Ok(Ending::Limit(Outcome::TimeLimit));
            }
            let step_started = Instant::now();
            let call_started = Instant::now();
            let called =
                tokio::time::timeout_at(deadline.into(), self.client.chat(&self.messages, tools.as_ref()))
                    .await;
            let completion = match called {
                Err(_) => {
                    // The wall-time limit fell during the call: nothing was billed.
                    let call = self.failed_call(
                        step,
                        CallStatus::Timeout,
                        None,
                        call_started,
                        "the run's wall-time limit",
                    );
                    self.upload(Vec::new(), vec![call], Vec::new()).await?;
                    return Ok(Ending::Limit(Outcome::TimeLimit));
                }
                Ok(Err(e)) => {
                    let (status, http) = match &e {
                        llm::Error::Unavailable { last_status, .. } => {
                            (CallStatus::Unavailable, last_status.map(i32::from))
                        }
                        llm::Error::Rejected { status, .. } => {
                            (CallStatus::Rejected, Some(i32::from(*status)))
                        }
                        llm::Error::Malformed { .. } => (CallStatus::Malformed, None),
                    };
                    let call = self.failed_call(step, status, http, call_started, &e.to_string());
                    self.upload(Vec::new(), vec![call], Vec::new()).await?;
                    let reason = format!("model endpoint of agent `{}`: {e}", self.run.agent.name);
                    // Only an outage (every retry failed) rests the endpoint; a refusal or a
                    // malformed answer is this request's problem, not the endpoint's.
                    return Err(match e {
                        llm::Error::Unavailable { .. } => ExecError::EndpointUnavailable(reason),
                        _ => ExecError::Infra(reason),
                    });
                }
                Ok(Ok(c)) => c,
            };
            let call = self.call_record(step, &completion);
            self.totals.input_tokens += completion.usage.prompt_tokens;
            self.totals.output_tokens += completion.usage.completion_tokens;
            self.totals.cached_tokens += completion.usage.cached_tokens;
            self.totals.agent_cost_usd += completion.cost_usd;
            self.push(scaffold::assistant_message(&completion.message));

            let mut command: Option<CommandResult> = None;
            let mut action_text = None;
            let mut ending = None;
            let mut facts = StepFacts { step, ..Default::default() };
            let observation: String;
            match scaffold::parse(self.spec.scaffold, &completion.message) {
                Action::FormatError { actions, error, call_ids } => {
                    self.format_errors += 1;
                    facts.format_error = true;
                    let scaffold = self.spec.scaffold.as_str();
                    observation = self
                        .prompts
                        .format_error(&FormatErrorVars { actions, error: &error, scaffold })
                        .map_err(template_error)?;
                    for m in scaffold::answer(&observation, &call_ids) {
                        self.push(m);
                    }
                    if self.format_errors > self.spec.max_format_errors {
                        ending = Some(Ending::Limit(Outcome::FormatErrorLimit));
                    }
                }
                Action::Submit { call_id } => {
                    action_text = Some("submit".to_string());
                    observation = "Submitted.".into();
                    if let Some(id) = call_id {
                        self.push(json!({"role": "tool", "tool_call_id": id, "content": observation}));
                    }
                    ending = Some(Ending::Submitted);
                }
                Action::Bash { command: text, call_id } => {
                    let result = self.run_command(&mut shell, &text, deadline).await?;
                    self.note_command(&mut facts, &text, &result);
                    if scaffold::is_submission(&result.output, result.exit_code) {
                        ending = Some(Ending::Submitted);
                        observation = result.output.clone();
                        if let Some(id) = call_id {
                            self.push(json!({"role": "tool", "tool_call_id": id, "content": observation}));
                        }
                    } else {
                        if self.hook.wants_changes() {
                            self.note_changes(&mut shell, &mut facts).await?;
                        }
                        let edits = match self.spec.edit_context_lines {
                            Some(n) => self.edited_lines(&mut shell, n).await?,
                            None => String::new(),
                        };
                        observation = match self.hook.observation_note(step, self.run.agent.limits.max_steps)
                        {
                            Some(note) => {
                                format!("{}\n\n{note}", self.render_observation(&result, &edits, step)?)
                            }
                            None => self.render_observation(&result, &edits, step)?,
                        };
                        let ids: Vec<String> = call_id.into_iter().collect();
                        for m in scaffold::answer(&observation, &ids) {
                            self.push(m);
                        }
                        if result.timed_out && Instant::now() >= deadline {
                            ending = Some(Ending::Limit(Outcome::TimeLimit));
                        }
                    }
                    action_text = Some(text);
                    command = Some(result);
                }
            }
            self.facts.push(facts);

            let llm_time = completion.latency;
            let command_time = command.as_ref().map_or(Duration::ZERO, |c| c.duration);
            let record = StepRecord {
                index: step as i32,
                attempt: 0,
                action: action_text,
                observation: Some(command.as_ref().map_or(observation, |c| c.output.clone())),
                exit_code: command.as_ref().and_then(|c| c.exit_code).map(|c| c as i32),
                duration_ms: step_started.elapsed().as_millis() as i64,
                llm_ms: llm_time.as_millis() as i64,
                command_ms: command_time.as_millis() as i64,
                input_tokens: completion.usage.prompt_tokens,
                output_tokens: completion.usage.completion_tokens,
                cached_tokens: completion.usage.cached_tokens,
                cost_usd: completion.cost_usd,
                messages: Value::Array(std::mem::take(&mut self.pending)),
                replayed: false,
            };
            self.totals.steps += 1;
            self.upload(vec![record], vec![call], Vec::new()).await?;
            self.report.steps.push(StepTimings {
                total: step_started.elapsed(),
                llm: llm_time,
                command: command_time,
            });

            // A submission is shown to the critic first, when it asks: its feedback refuses it
            // (the agent reads the feedback and goes on).
            let moment = match &ending {
                Some(Ending::Submitted) if self.hook.reviews_submissions() => Moment::BeforeSubmit,
                Some(ending) => return Ok(ending.clone()),
                None => Moment::AfterStep,
            };
            if let Some(ending) = self.steer(moment, step).await? {
                return Ok(ending);
            }
        }
        unreachable!("the step counter is unbounded")
    }

    fn start_conversation(&mut self) -> Result<(), ExecError> {
        let inst = &self.run.instance;
        let vars = TaskVars {
            task: &inst.problem_statement,
            instance_id: &inst.instance_id,
            repo: &inst.repo,
            base_commit: &inst.base_commit,
            hints: &inst.hints_text,
            workdir: &self.spec.workdir,
            scaffold: self.spec.scaffold.as_str(),
            max_steps: self.run.agent.limits.max_steps,
            command_timeout_s: self.spec.command_timeout_s,
            submit_sentinel: protocol::SUBMIT_SENTINEL,
        };
        let system = self.prompts.system(&vars).map_err(template_error)?;
        let instance = self.prompts.instance(&vars).map_err(template_error)?;
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
        prefix: &protocol::PrefixReplay,
        deadline: Instant,
    ) -> Result<Option<Ending>, ExecError> {
        for base in &prefix.steps {
            let started = Instant::now();
            let step = base.index as u32;
            for m in base.messages.as_array().into_iter().flatten() {
                // A base run's own supervisor messages are not part of what is replayed.
                if m.get("supervisor").is_none() {
                    self.push(m.clone());
                }
            }
            let mut facts = StepFacts { step, ..Default::default() };
            let mut ending = None;
            let mut result = None;
            match base.action.as_deref() {
                None => {
                    facts.format_error = true;
                    self.format_errors += 1;
                }
                Some("submit") if self.spec.scaffold == protocol::Scaffold::ToolCalling => {
                    ending = Some(Ending::Submitted)
                }
                Some(command) => {
                    let out = self.run_command(shell, command, deadline).await?;
                    self.note_command(&mut facts, command, &out);
                    if scaffold::is_submission(&out.output, out.exit_code) {
                        ending = Some(Ending::Submitted);
                    } else if self.hook.wants_changes() {
                        self.note_changes(shell, &mut facts).await?;
                    }
                    result = Some(out);
                }
            }
            self.facts.push(facts);
            self.totals.steps += 1;
            self.totals.input_tokens += base.input_tokens;
            self.totals.output_tokens += base.output_tokens;
            self.totals.cached_tokens += base.cached_tokens;
            self.totals.agent_cost_usd += base.cost_usd;
            let record = StepRecord {
                index: base.index,
                attempt: 0,
                action: base.action.clone(),
                observation: result.as_ref().map(|r| r.output.clone()).or_else(|| base.observation.clone()),
                exit_code: result.as_ref().and_then(|r| r.exit_code).map(|c| c as i32),
                duration_ms: started.elapsed().as_millis() as i64,
                replayed: true,
                llm_ms: 0,
                command_ms: result.as_ref().map_or(0, |r| r.duration.as_millis() as i64),
                input_tokens: base.input_tokens,
                output_tokens: base.output_tokens,
                cached_tokens: base.cached_tokens,
                cost_usd: base.cost_usd,
                messages: Value::Array(std::mem::take(&mut self.pending)),
            };
            self.upload(vec![record], Vec::new(), Vec::new()).await?;
            if ending.is_some() {
                return Ok(ending);
            }
        }
        Ok(None)
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
        facts.output = crate::evaluate::cap_chars(&result.output, self.spec.observation_max_chars);
        facts.ran_tests = crate::critic::looks_like_tests(command);
    }

    /// Which tracked files the step changed (`git status`, compared with the last step's).
    async fn note_changes(&mut self, shell: &mut Shell, facts: &mut StepFacts) -> Result<(), ExecError> {
        let limits = ExecLimits { timeout: EDIT_DIFF_TIMEOUT, max_output_bytes: COMMAND_OUTPUT_BYTES };
        let command = format!("git -C '{}' status --porcelain 2>/dev/null", self.spec.workdir);
        let out = shell.run(&command, &limits).await.map_err(|e| ExecError::Infra(e.to_string()))?;
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
        let timeout =
            Duration::from_secs(self.spec.command_timeout_s).min(remaining.max(Duration::from_millis(1)));
        let wrapped = format!("cd '{}' && (\n{command}\n)", self.spec.workdir.replace('\'', r"'\''"));
        let limits = ExecLimits { timeout, max_output_bytes: COMMAND_OUTPUT_BYTES };
        let out = shell.run(&wrapped, &limits).await.map_err(|e| ExecError::Infra(e.to_string()))?;
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
            .run(&edits::diff_command(&self.spec.workdir, context), &limits)
            .await
            .map_err(|e| ExecError::Infra(e.to_string()))?;
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
        // The paper: observations over 10,000 characters keep the first and last 5,000.
        let output = crate::evaluate::cap_chars(&result.output, max);
        self.prompts
            .observation(&ObservationVars {
                returncode: result.exit_code.unwrap_or(-1),
                output: &output,
                timed_out: result.timed_out,
                output_truncated: output_chars > max,
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
    ExecError::Infra(format!("rendering the prompt: {e}"))
}
