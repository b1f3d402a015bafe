//! Routes each claimed run to the executor of its kind.

use protocol::{ClaimedRun, ExecutorKind, ExecutorSpec};

use crate::agent::AgentExecutor;
use crate::engine_watch::EngineWatch;
use crate::evaluate::EvaluateExecutor;
use crate::executor::{ExecError, ExecFuture, Executor, ImagesFuture, RunContext};
use crate::llm::RetryPolicy;
use crate::placeholder::PlaceholderExecutor;

/// The executors a worker has: the placeholder always, `evaluate` and `agent` when a Docker
/// engine is reachable. A worker registers the kinds it has, so the coordinator hands it
/// nothing else.
pub struct Dispatcher {
    placeholder: PlaceholderExecutor,
    evaluate: Option<EvaluateExecutor>,
    agent: Option<AgentExecutor>,
    /// What the agent executor's keyring allows (advertised at registration).
    key_envs: protocol::keys::KeyAllowList,
    /// Whether the container engine still answers (None: not watched).
    engine: Option<EngineWatch>,
}

impl Dispatcher {
    pub fn new(evaluate: Option<EvaluateExecutor>) -> Self {
        let agent = evaluate.as_ref().map(|e| AgentExecutor::new(e.grader().clone()));
        Dispatcher {
            placeholder: PlaceholderExecutor,
            evaluate,
            agent,
            key_envs: Default::default(),
            engine: None,
        }
    }

    /// How the agent executor retries model calls (tests shorten the waits).
    pub fn with_llm_retry(mut self, retry: RetryPolicy) -> Self {
        self.agent = self.agent.map(|a| a.with_retry_policy(retry));
        self
    }

    /// Reports the worker degraded while `engine` does not answer.
    pub fn with_engine_watch(mut self, engine: EngineWatch) -> Self {
        self.engine = Some(engine);
        self
    }

    /// The model API keys agents and critics may use.
    pub fn with_keyring(mut self, keys: std::sync::Arc<crate::llm::Keyring>) -> Self {
        self.key_envs = keys.allow_list().clone();
        self.agent = self.agent.map(|a| a.with_keyring(keys));
        self
    }

    /// What this worker registers it can do: its executor kinds and the API key variables
    /// it allows.
    pub fn capabilities(&self) -> protocol::Capabilities {
        protocol::Capabilities {
            key_envs: (!self.key_envs.is_empty()).then(|| self.key_envs.clone()),
            ..protocol::Capabilities::executors(self.kinds())
        }
    }

    /// The executor kinds this worker can run, as it registers them.
    pub fn kinds(&self) -> Vec<ExecutorKind> {
        let mut kinds = vec![ExecutorKind::Placeholder];
        if self.evaluate.is_some() {
            kinds.push(ExecutorKind::Evaluate);
        }
        if self.agent.is_some() {
            kinds.push(ExecutorKind::Agent);
        }
        kinds
    }
}

impl Executor for Dispatcher {
    fn execute<'a>(&'a self, run: &'a ClaimedRun, ctx: RunContext) -> ExecFuture<'a> {
        match (&run.executor, &self.evaluate) {
            (ExecutorSpec::Placeholder(_), _) => self.placeholder.execute(run, ctx),
            (ExecutorSpec::Evaluate(_), Some(evaluate)) => evaluate.execute(run, ctx),
            // Only reachable if the coordinator ignored our registered kinds.
            (ExecutorSpec::Evaluate(_), None) => Box::pin(async {
                Err(ExecError::infra_reason("this worker has no Docker engine and cannot evaluate"))
            }),
            (ExecutorSpec::Agent(_), _) => match &self.agent {
                Some(agent) => agent.execute(run, ctx),
                None => Box::pin(async {
                    Err(ExecError::infra_reason("this worker has no Docker engine and cannot run agents"))
                }),
            },
        }
    }

    fn status(&self) -> Option<String> {
        self.evaluate.as_ref().and_then(|e| e.status())
    }

    fn degraded(&self) -> Option<String> {
        self.engine.as_ref().and_then(EngineWatch::problem)
    }

    fn held_images(&self) -> ImagesFuture<'_> {
        match &self.evaluate {
            Some(evaluate) => evaluate.held_images(),
            None => Box::pin(async { Vec::new() }),
        }
    }
}
