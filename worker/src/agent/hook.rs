//! The seam between agent steps where a critic reads the trajectory and may steer it: add a
//! message the agent reads before its next action, refuse a submission once, or stop the run.
//! The agent loop knows nothing of critics beyond this trait (`crate::critic` implements it).

use std::future::Future;
use std::pin::Pin;

use protocol::CriticCallRecord;
use serde_json::Value;

use crate::executor::ExecError;

/// What one agent step did, as critics' rules and policies see it.
#[derive(Debug, Clone, Default)]
pub struct StepFacts {
    /// 0-based step index.
    pub step: u32,
    /// The command run (None: a format error, or the submit tool).
    pub command: Option<String>,
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    /// The command's output (already capped).
    pub output: String,
    /// The reply broke the format.
    pub format_error: bool,
    /// The command changed the working tree (known when the hook asks for changes).
    pub edited: bool,
    /// Tracked files modified so far (`git status`; known when the hook asks for changes).
    pub modified_files: Vec<String>,
    /// The command looks like a test run.
    pub ran_tests: bool,
}

/// When the hook is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    AfterStep,
    /// The agent has just submitted; feedback now refuses the submission and the run goes on.
    BeforeSubmit,
}

/// What the hook sees.
pub struct StepView<'a> {
    pub moment: Moment,
    /// 0-based index of the step just recorded.
    pub step: u32,
    pub max_steps: u32,
    /// The conversation as the agent sees it now, supervisor messages left out.
    pub messages: &'a [Value],
    /// Facts of every step so far (the last one is this step's).
    pub facts: &'a [StepFacts],
}

/// What the critic decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Guidance {
    Continue,
    /// A supervisor message for the agent: it replaces the previous one in the agent's view
    /// (whose text it folds in, as the paper does).
    Feedback(String),
    /// End the run (outcome `critic_stop`; the patch so far is still graded).
    Stop(String),
}

/// The hook's answer: its guidance and the critic calls it made (recorded by the loop).
pub struct Review {
    pub guidance: Guidance,
    pub calls: Vec<CriticCallRecord>,
}

impl Review {
    pub fn proceed() -> Review {
        Review { guidance: Guidance::Continue, calls: Vec::new() }
    }
}

pub type ReviewFuture<'a> = Pin<Box<dyn Future<Output = Result<Review, ExecError>> + Send + 'a>>;

/// A critic attached to one run.
pub trait StepHook: Send + Sync {
    /// Whether the loop should find out which files each step changed (a `git status` per step).
    fn wants_changes(&self) -> bool {
        false
    }
    /// Whether the hook wants to see submissions before they count.
    fn reviews_submissions(&self) -> bool {
        false
    }
    /// A note appended to the observation of 0-based step `step` (the paper's step-aware
    /// notice to the agent). None by default.
    fn observation_note(&self, _step: u32, _max_steps: u32) -> Option<String> {
        None
    }
    fn review<'a>(&'a mut self, view: StepView<'a>) -> ReviewFuture<'a>;
}

/// The baseline condition: the agent runs alone.
pub struct NoCritic;

impl StepHook for NoCritic {
    fn review<'a>(&'a mut self, _view: StepView<'a>) -> ReviewFuture<'a> {
        Box::pin(async { Ok(Review::proceed()) })
    }
}
