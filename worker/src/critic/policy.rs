//! When a critic is asked: every k agent steps, on events, or both; never again once its
//! interventions reach the cap.

use protocol::{CriticEvent, CriticParams};

use crate::agent::hook::{Moment, StepFacts};

/// Why the critic is asked now (None: it is not).
pub fn trigger(
    params: &CriticParams,
    moment: Moment,
    facts: &StepFacts,
    interventions: u32,
) -> Option<&'static str> {
    if params.max_interventions.is_some_and(|cap| interventions >= cap) {
        return None;
    }
    let wants = |e: CriticEvent| params.events.contains(&e);
    if moment == Moment::BeforeSubmit {
        return wants(CriticEvent::Submit).then_some("submit");
    }
    // The paper counts every agent step, format errors included: after steps k, 2k, ...
    if params.every_k.is_some_and(|k| k > 0 && (facts.step + 1).is_multiple_of(k)) {
        return Some("every_k");
    }
    if wants(CriticEvent::Edit) && facts.edited {
        return Some("edit");
    }
    if wants(CriticEvent::Test) && facts.ran_tests {
        return Some("test");
    }
    let failed = facts.command.is_some() && (facts.timed_out || facts.exit_code != Some(0));
    if wants(CriticEvent::Failure) && failed {
        return Some("failure");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(i: u32) -> StepFacts {
        StepFacts { step: i, command: Some("ls".into()), exit_code: Some(0), ..Default::default() }
    }

    #[test]
    fn every_k_fires_after_steps_k_2k_and_counts_format_errors() {
        let params = CriticParams { every_k: Some(5), ..Default::default() };
        let fired: Vec<u32> = (0..15)
            .filter(|&i| trigger(&params, Moment::AfterStep, &step(i), 0).is_some())
            .map(|i| i + 1)
            .collect();
        assert_eq!(fired, vec![5, 10, 15]);
        let format_error = StepFacts { step: 4, format_error: true, ..Default::default() };
        assert_eq!(trigger(&params, Moment::AfterStep, &format_error, 0), Some("every_k"));
    }

    #[test]
    fn events_fire_on_what_the_step_did() {
        let params = CriticParams {
            events: vec![CriticEvent::Edit, CriticEvent::Test, CriticEvent::Failure],
            ..Default::default()
        };
        assert_eq!(trigger(&params, Moment::AfterStep, &step(0), 0), None);
        assert_eq!(
            trigger(&params, Moment::AfterStep, &StepFacts { edited: true, ..step(1) }, 0),
            Some("edit")
        );
        assert_eq!(
            trigger(&params, Moment::AfterStep, &StepFacts { ran_tests: true, ..step(1) }, 0),
            Some("test")
        );
        let failed = StepFacts { exit_code: Some(2), ..step(1) };
        assert_eq!(trigger(&params, Moment::AfterStep, &failed, 0), Some("failure"));
        let killed = StepFacts { exit_code: None, timed_out: true, ..step(1) };
        assert_eq!(trigger(&params, Moment::AfterStep, &killed, 0), Some("failure"));
        assert_eq!(
            trigger(&params, Moment::BeforeSubmit, &step(1), 0),
            None,
            "submit is not among the events"
        );
        let with_submit = CriticParams { events: vec![CriticEvent::Submit], ..Default::default() };
        assert_eq!(trigger(&with_submit, Moment::BeforeSubmit, &step(1), 0), Some("submit"));
    }

    #[test]
    fn the_cap_silences_the_critic() {
        let params = CriticParams { every_k: Some(1), max_interventions: Some(2), ..Default::default() };
        assert!(trigger(&params, Moment::AfterStep, &step(0), 1).is_some());
        assert!(trigger(&params, Moment::AfterStep, &step(1), 2).is_none());
    }
}
