//! The placeholder executor: runs no agent. It waits, records synthetic steps, and ends with a
//! synthetic outcome (`synthetic_resolved` / `synthetic_unresolved`) drawn from a generator
//! seeded by the sweep's seed and the run id, so a re-executed run ends the same way.

use std::time::Duration;

use protocol::{ClaimedRun, ExecutorSpec, Outcome, RunTotals, StepRecord};
use rand::{Rng, SeedableRng};

use crate::executor::{ExecError, ExecFuture, Executor, RunContext, RunResult};

#[derive(Debug, Default, Clone, Copy)]
pub struct PlaceholderExecutor;

impl Executor for PlaceholderExecutor {
    fn execute<'a>(&'a self, run: &'a ClaimedRun, ctx: RunContext) -> ExecFuture<'a> {
        Box::pin(async move {
            let ExecutorSpec::Placeholder(spec) = &run.executor else {
                return Err(ExecError::infra_reason(
                    "the placeholder executor was handed another kind of run",
                ));
            };
            let steps = spec.steps.max(1);
            let per_step = Duration::from_millis(spec.duration_ms / u64::from(steps));
            let mut rng =
                rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed ^ (run.run_id as u64).rotate_left(17));
            let mut totals = RunTotals::default();
            for index in 0..steps {
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return Err(ExecError::Stopped),
                    _ = tokio::time::sleep(per_step) => {}
                }
                let step = StepRecord {
                    index: index as i32,
                    action: Some(format!("echo placeholder step {index}")),
                    observation: Some(format!("placeholder step {index}")),
                    exit_code: Some(0),
                    duration_ms: per_step.as_millis() as i64,
                    cost_usd: spec.cost_per_step_usd,
                    messages: serde_json::json!([]),
                    ..Default::default()
                };
                ctx.record_step(step).await?;
                totals.steps += 1;
                totals.agent_cost_usd += spec.cost_per_step_usd;
            }
            let resolved = rng.gen_bool(spec.resolve_probability.clamp(0.0, 1.0));
            Ok(RunResult {
                outcome: if resolved { Outcome::SyntheticResolved } else { Outcome::SyntheticUnresolved },
                totals,
                patch: None,
                evaluation: None,
                detail: Some("placeholder executor: no agent ran; the outcome is synthetic".into()),
            })
        })
    }
}
