//! The seam between agent steps where a critic reads the trajectory and may steer it: add a
//! message the agent reads before its next action, or stop the run.

use std::future::Future;
use std::pin::Pin;

use protocol::{CriticKind, CriticSpec};
use serde_json::Value;

use crate::executor::ExecError;

/// What the critic sees after a step.
pub struct StepView<'a> {
    /// 0-based index of the step just recorded.
    pub step: u32,
    /// The whole conversation so far, exactly as the agent saw it.
    pub messages: &'a [Value],
}

/// What the critic decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Guidance {
    Continue,
    /// Append this as a user message before the agent's next action.
    Message(String),
    /// End the run (outcome `critic_stop`; the patch so far is still graded).
    Stop(String),
}

pub type GuidanceFuture<'a> = Pin<Box<dyn Future<Output = Result<Guidance, ExecError>> + Send + 'a>>;

/// A critic attached to one run.
pub trait StepHook: Send + Sync {
    fn after_step<'a>(&'a mut self, view: StepView<'a>) -> GuidanceFuture<'a>;
}

/// The baseline condition: the agent runs alone.
pub struct NoCritic;

impl StepHook for NoCritic {
    fn after_step<'a>(&'a mut self, _view: StepView<'a>) -> GuidanceFuture<'a> {
        Box::pin(async { Ok(Guidance::Continue) })
    }
}

/// The hook for a run's critic condition.
pub fn for_critic(critic: &CriticSpec) -> Box<dyn StepHook> {
    match critic.kind {
        CriticKind::None => Box::new(NoCritic),
    }
}
