//! The seam between the worker's lease loop and what a run actually does.

use std::future::Future;
use std::pin::Pin;

use protocol::{ClaimedRun, CriticCallRecord, Evaluation, LlmCallRecord, Outcome, RunTotals, StepRecord};
use tokio_util::sync::CancellationToken;

use crate::client::{self, CoordinatorClient};

/// How a run ended, as the executor saw it.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub outcome: Outcome,
    pub totals: RunTotals,
    pub patch: Option<String>,
    pub evaluation: Option<Evaluation>,
    pub detail: Option<String>,
}

/// An error that caused an infrastructure failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Infrastructure failed (sandbox, endpoint, coordinator): the run is re-queued. `reason`
    /// is what the attempt records; `source` is the error behind it, when there is one (its
    /// text is already part of `reason`, so print this error alone, not with its chain).
    #[error("infrastructure failure: {reason}")]
    Infra {
        reason: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The run's model endpoint stayed unavailable through every retry: the run is re-queued,
    /// and the coordinator rests the endpoint (its circuit breaker) before handing out more of
    /// its runs.
    #[error("model endpoint unavailable: {0}")]
    EndpointUnavailable(String),
    /// The run was stopped from outside (lease lost, sweep cancelled, worker draining).
    #[error("stopped")]
    Stopped,
}

impl ExecError {
    /// An infrastructure failure caused by `source`, said in its own words.
    pub fn infra(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        ExecError::Infra { reason: source.to_string(), source: Some(source) }
    }

    /// An infrastructure failure caused by `source` while doing `context`:
    /// "{context}: {source}".
    pub fn infra_in(context: &str, source: impl Into<BoxError>) -> Self {
        let source = source.into();
        ExecError::Infra { reason: format!("{context}: {source}"), source: Some(source) }
    }

    /// An infrastructure failure no other error caused.
    pub fn infra_reason(reason: impl Into<String>) -> Self {
        ExecError::Infra { reason: reason.into(), source: None }
    }
}

/// What an executor gets besides the run: where to send its steps, and when to stop.
#[derive(Clone)]
pub struct RunContext {
    client: CoordinatorClient,
    run_id: i64,
    lease_token: uuid::Uuid,
    /// Fires when the run must stop (lease lost, sweep cancelled, drain deadline).
    pub cancel: CancellationToken,
}

impl RunContext {
    pub fn new(client: CoordinatorClient, run: &ClaimedRun, cancel: CancellationToken) -> Self {
        RunContext { client, run_id: run.run_id, lease_token: run.lease_token, cancel }
    }

    /// Persists a step before the run goes on, so a crash loses at most the step in progress.
    pub async fn record_step(&self, step: StepRecord) -> Result<(), ExecError> {
        self.record(vec![step], Vec::new(), Vec::new()).await
    }

    /// Persists steps and the model and critic calls made for them (in one transaction).
    pub async fn record(
        &self,
        steps: Vec<StepRecord>,
        calls: Vec<LlmCallRecord>,
        critic_calls: Vec<CriticCallRecord>,
    ) -> Result<(), ExecError> {
        match self.client.upload_steps(self.run_id, self.lease_token, steps, calls, critic_calls).await {
            Ok(()) => Ok(()),
            Err(client::Error::LeaseLost(_)) => {
                self.cancel.cancel();
                Err(ExecError::Stopped)
            }
            Err(e) => Err(ExecError::infra_in("uploading a step", e)),
        }
    }
}

pub type ExecFuture<'a> = Pin<Box<dyn Future<Output = Result<RunResult, ExecError>> + Send + 'a>>;
pub type ImagesFuture<'a> = Pin<Box<dyn Future<Output = Vec<String>> + Send + 'a>>;
pub type CleanupFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Executes one claimed run. Implementations must return promptly (with `ExecError::Stopped`)
/// once `ctx.cancel` fires, and must treat a failing task as an outcome, not an error.
pub trait Executor: Send + Sync + 'static {
    fn execute<'a>(&'a self, run: &'a ClaimedRun, ctx: RunContext) -> ExecFuture<'a>;

    /// The instance images this worker holds, reported to the coordinator so that it can hand
    /// the worker runs whose image is already here. None by default.
    fn held_images(&self) -> ImagesFuture<'_> {
        Box::pin(async { Vec::new() })
    }

    /// What the worker is doing besides running its runs (e.g. pulling an image), for the
    /// coordinator's view of the fleet. None by default.
    fn status(&self) -> Option<String> {
        None
    }

    /// Why the worker cannot run container runs now (its engine stopped answering), for the
    /// coordinator, which then hands it no such run. None by default.
    fn degraded(&self) -> Option<String> {
        None
    }

    /// Called once the worker holds no run any more (drained, or refused by the coordinator):
    /// removes whatever its runs left in the container engine (the removals of sandboxes
    /// whose runs were dropped, still under way, and any container labelled with this worker).
    /// Nothing by default.
    fn remove_leftovers(&self) -> CleanupFuture<'_> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn an_infrastructure_failure_keeps_its_source_and_its_words() {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let e = ExecError::infra_in("uploading a step", cause);
        // The words stored with the attempt are the ones a message-only error had.
        assert_eq!(e.to_string(), "infrastructure failure: uploading a step: connection reset");
        let ExecError::Infra { reason, .. } = &e else { panic!("not an infrastructure failure: {e:?}") };
        assert_eq!(reason, "uploading a step: connection reset");
        let source = e.source().expect("the cause is kept");
        let io = source.downcast_ref::<std::io::Error>().expect("as the error it was");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn an_infrastructure_failure_without_a_cause_has_no_source() {
        let e = ExecError::infra_reason("this worker has no Docker engine and cannot evaluate");
        assert_eq!(
            e.to_string(),
            "infrastructure failure: this worker has no Docker engine and cannot evaluate"
        );
        assert!(e.source().is_none());
    }
}
