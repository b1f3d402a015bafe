//! Exit statuses a pipeline can trust. `steer sweep submit --wait`, `steer eval` and `steer up
//! --sweep` exit 0 only when every run finished without an infrastructure error; the other
//! statuses tell apart what went wrong (README lists them).

use std::process::ExitCode;

use protocol::{RunState, SweepState, SweepStatus};

/// Any other failure: bad input, a refused request, a local error.
pub const FAILED: u8 = 1;
// 2 is clap's: the command line itself is wrong.
/// The sweep finished, but some runs ended in error (an infrastructure failure: a model
/// endpoint that never answered, an image that could not be had, a key that is not set, ...).
pub const RUNS_ERRORED: u8 = 3;
/// The sweep was cancelled, or stopped by the coordinator (its budget spent), before every run
/// finished.
pub const SWEEP_STOPPED: u8 = 4;
/// The coordinator could not be reached (nothing answers at its address, or 5xx through a
/// few retries).
pub const COORDINATOR_UNREACHABLE: u8 = 5;

/// The status for a sweep that is no longer running.
pub fn of_sweep(status: &SweepStatus) -> ExitCode {
    ExitCode::from(code_of_sweep(status))
}

fn code_of_sweep(status: &SweepStatus) -> u8 {
    let errored = status.states.get(RunState::Error.as_str()).copied().unwrap_or(0);
    match status.state {
        SweepState::Cancelled | SweepState::Stopped => SWEEP_STOPPED,
        _ if errored > 0 => RUNS_ERRORED,
        SweepState::Completed => 0,
        // Still running or paused: not finished, so not a success either.
        SweepState::Running | SweepState::Paused => SWEEP_STOPPED,
    }
}

/// The status for a command that failed with `error`.
pub fn of_error(error: &anyhow::Error) -> ExitCode {
    let unreachable = error.chain().any(|cause| {
        matches!(cause.downcast_ref::<api_client::Error>(), Some(api_client::Error::Unavailable(_)))
    });
    ExitCode::from(if unreachable { COORDINATOR_UNREACHABLE } else { FAILED })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: SweepState, errored: i64) -> SweepStatus {
        SweepStatus {
            id: 1,
            name: "s".into(),
            state,
            stop_reason: None,
            config_hash: "h".into(),
            created_at: chrono::Utc::now(),
            finished_at: None,
            total_runs: 4,
            states: [("done".to_string(), 4 - errored), ("error".to_string(), errored)].into_iter().collect(),
            outcomes: Default::default(),
            spent_usd: Default::default(),
            budget_usd: None,
            resting_endpoints: vec![],
            waiting: vec![],
            reasons: vec![],
        }
    }

    #[test]
    fn only_a_clean_finish_is_success() {
        assert_eq!(code_of_sweep(&status(SweepState::Completed, 0)), 0);
        assert_eq!(code_of_sweep(&status(SweepState::Completed, 4)), RUNS_ERRORED);
        assert_eq!(code_of_sweep(&status(SweepState::Completed, 1)), RUNS_ERRORED);
        assert_eq!(code_of_sweep(&status(SweepState::Cancelled, 0)), SWEEP_STOPPED);
        assert_eq!(code_of_sweep(&status(SweepState::Stopped, 2)), SWEEP_STOPPED);
    }

    #[test]
    fn an_unreachable_coordinator_has_its_own_status() {
        let e = anyhow::Error::new(api_client::Error::Unavailable("http://x: refused".into()))
            .context("submitting");
        assert_eq!(of_error(&e), ExitCode::from(COORDINATOR_UNREACHABLE));
        assert_eq!(of_error(&anyhow::anyhow!("bad file")), ExitCode::from(FAILED));
    }
}
