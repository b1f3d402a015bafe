//! Critics: a model or rules that read an agent's trajectory while it runs and steer it.
//!
//! One interface for every kind: [`CriticHook`] implements the agent loop's
//! [`StepHook`](crate::agent::hook::StepHook). After each step (and, when asked, before a
//! submission) the policy (`policy`) decides whether the critic is asked; the critic answers
//! with feedback (and for scorers a score); the hook turns that into a verdict: continue,
//! inject the feedback (rendered by `feedback` as one supervisor message that folds in the
//! earlier ones), or stop the run (only when the condition asks for it). Every call is
//! recorded (`critic_calls`), failed ones too: a failed call means the agent goes on without
//! feedback.
//!
//! Kinds: `none` ([`crate::agent::hook::NoCritic`]), `heuristic` (rules, no cost), `remote` (a
//! model behind an OpenAI-compatible endpoint, the paper's teacher baseline).

pub use protocol::feedback;
pub mod heuristic;
pub mod input;
pub mod local;
pub mod offline;
pub mod onnx;
pub mod policy;
pub mod remote;

use std::sync::LazyLock;
use std::time::Instant;

use protocol::{
    ClaimedRun, CriticCallRecord, CriticCallStatus, CriticDecision, CriticKind, CriticParams, CriticSettings,
};
use regex::Regex;

use crate::agent::hook::{Guidance, Moment, NoCritic, Review, ReviewFuture, StepHook, StepView};
use crate::executor::ExecError;
use crate::llm::{Keyring, RetryPolicy};

/// What is wrong with a critic condition's settings on this worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `remote` condition without its endpoint.
    #[error("critic `{critic}`: no endpoint")]
    NoEndpoint { critic: String },
    /// An `onnx` condition without its model.
    #[error("critic `{critic}`: no model")]
    NoModel { critic: String },
    /// The condition's model cannot be loaded here.
    #[error("critic `{critic}`: {source}")]
    Model { critic: String, source: onnx::OnnxError },
    /// The condition's endpoint cannot be called from here (its API key is not set, ...).
    #[error("critic `{critic}`: {source}")]
    Endpoint { critic: String, source: remote::Error },
}

/// The hook for a run's critic condition (an error names what is wrong with its settings).
pub fn hook_for(run: &ClaimedRun, keys: &Keyring) -> Result<Box<dyn StepHook>, Error> {
    Ok(match critic_hook(&run.critic, keys)? {
        Some(hook) => Box::new(hook),
        None => Box::new(NoCritic),
    })
}

/// The critic of a condition (None for kind `none`); a remote critic takes its API key from
/// `keys`.
pub fn critic_hook(critic: &protocol::CriticSpec, keys: &Keyring) -> Result<Option<CriticHook>, Error> {
    let name = || critic.name.clone();
    let (params, backend) = match &critic.settings {
        CriticSettings::None => return Ok(None),
        CriticSettings::Heuristic(params) => (
            params,
            Backend::Heuristic(heuristic::Heuristic::new(params.heuristic.clone().unwrap_or_default())),
        ),
        CriticSettings::Onnx(params) => {
            let spec = params.onnx.as_ref().ok_or_else(|| Error::NoModel { critic: name() })?;
            let local = local::Local::new(spec).map_err(|source| Error::Model { critic: name(), source })?;
            (params, Backend::Local(Box::new(local)))
        }
        CriticSettings::Remote(params) => {
            let spec = params.remote.as_ref().ok_or_else(|| Error::NoEndpoint { critic: name() })?;
            let remote = remote::Remote::new(spec, keys, RetryPolicy::default())
                .map_err(|source| Error::Endpoint { critic: name(), source })?;
            (params, Backend::Remote(Box::new(remote)))
        }
    };
    Ok(Some(CriticHook {
        params: params.clone(),
        backend,
        history: Vec::new(),
        interventions: 0,
        refused_submission: false,
    }))
}

enum Backend {
    Heuristic(heuristic::Heuristic),
    Remote(Box<remote::Remote>),
    Local(Box<local::Local>),
}

/// A critic attached to one run: its settings, its backend, and what it said so far.
pub struct CriticHook {
    params: CriticParams,
    backend: Backend,
    /// (1-based step, text) of every feedback given to the agent, oldest first.
    history: Vec<(u32, String)>,
    interventions: u32,
    /// A submission is refused at most once per run, so a critic cannot keep a run going.
    refused_submission: bool,
}

impl StepHook for CriticHook {
    fn wants_changes(&self) -> bool {
        matches!(self.backend, Backend::Heuristic(_))
            || self.params.events.contains(&protocol::CriticEvent::Edit)
    }

    fn observation_note(&self, step: u32, max_steps: u32) -> Option<String> {
        let done = step + 1;
        self.params.step_aware_after.filter(|after| done >= *after).map(|_| {
            format!(
                "NOTE: you have used {done} of your {max_steps} steps. Work that is not submitted is lost: \
                 stop repeating commands, and if your changes already address the issue, submit now."
            )
        })
    }

    fn reviews_submissions(&self) -> bool {
        !self.refused_submission && self.params.events.contains(&protocol::CriticEvent::Submit)
    }

    fn review<'a>(&'a mut self, view: StepView<'a>) -> ReviewFuture<'a> {
        Box::pin(async move {
            let Some(facts) = view.facts.last() else { return Ok(Review::proceed()) };
            let Some(trigger) = policy::trigger(&self.params, view.moment, facts, self.interventions) else {
                return Ok(Review::proceed());
            };
            self.ask(view, trigger).await
        })
    }
}

impl CriticHook {
    /// Asks the critic now, whatever the policy says (`steer critic run` does), and turns its
    /// answer into a verdict.
    pub async fn ask(&mut self, view: StepView<'_>, trigger: &str) -> Result<Review, ExecError> {
        {
            let done_steps = view.step + 1;
            let mut record = CriticCallRecord {
                step_index: view.step as i32,
                trigger: trigger.into(),
                decision: CriticDecision::Continue,
                status: CriticCallStatus::Ok,
                ..Default::default()
            };
            let started = Instant::now();
            let (feedback, status) = match &mut self.backend {
                Backend::Heuristic(rules) => {
                    record.kind = CriticKind::Heuristic;
                    record.prompt = serde_json::json!({"facts_seen": view.facts.len(), "moment": format!("{:?}", view.moment)});
                    let said = rules.review(view.moment, view.facts);
                    record.latency_ms = started.elapsed().as_millis() as i64;
                    (said, None)
                }
                Backend::Remote(critic) => {
                    let messages = remote::messages(
                        &self.params,
                        view.messages,
                        &self.history,
                        done_steps,
                        view.max_steps,
                    );
                    match critic.critique(messages, &mut record).await {
                        Some(c) => (Some(c.text), c.status),
                        None => (None, None),
                    }
                }
                Backend::Local(critic) => {
                    let said = critic
                        .ask(
                            &self.params,
                            view.messages,
                            &self.history,
                            done_steps,
                            view.max_steps,
                            &mut record,
                        )
                        .await;
                    match said {
                        Some(s) => (s.feedback, s.status),
                        None => (None, None),
                    }
                }
            };
            let guidance = self.verdict(feedback, status.as_deref(), done_steps, view.moment, &mut record)?;
            Ok(Review { guidance, calls: vec![record] })
        }
    }

    /// Turns what the critic said into a verdict, and records it.
    fn verdict(
        &mut self,
        feedback: Option<String>,
        status: Option<&str>,
        done_steps: u32,
        moment: Moment,
        record: &mut CriticCallRecord,
    ) -> Result<Guidance, ExecError> {
        // A scorer's stop: its on-track probability (recorded by the backend) below the bar.
        if let (Some(stop_below), Some(score)) = (self.params.stop_below_score, record.score) {
            if score < stop_below {
                record.decision = CriticDecision::Stop;
                record.feedback = feedback;
                return Ok(Guidance::Stop(format!(
                    "on-track score below {stop_below} after step {done_steps}"
                )));
            }
        }
        if let (Some(stop_on), Some(status)) = (&self.params.stop_on_status, status) {
            if status.eq_ignore_ascii_case(stop_on) {
                record.decision = CriticDecision::Stop;
                record.feedback = feedback;
                return Ok(Guidance::Stop(format!("task status `{status}` after step {done_steps}")));
            }
        }
        let Some(text) = feedback else { return Ok(Guidance::Continue) };
        let message = feedback::render(
            &self.params.feedback_template,
            &text,
            done_steps,
            &self.history,
            self.params.fold_chars,
        )
        .map_err(ExecError::infra)?;
        record.decision = CriticDecision::Inject;
        record.feedback = Some(text.clone());
        self.history.push((done_steps, text));
        self.interventions += 1;
        if moment == Moment::BeforeSubmit {
            self.refused_submission = true;
        }
        Ok(Guidance::Feedback(message))
    }
}

/// Does this command run tests? (pytest, unittest, tox, nox, Django's and sympy's runners, ...)
pub fn looks_like_tests(command: &str) -> bool {
    static TESTS: LazyLock<Regex> = LazyLock::new(|| {
        // A runner in command position: at the start, or after `&&`, `||`, `;`, `|` or `(`,
        // maybe behind `timeout N` and `python -m`.
        Regex::new(
            r"(?m)(^|&&|\|\||;|\||\()\s*(timeout\s+\S+\s+)?(\S*python[\d.]*\s+(-\w+\s+)*)?(-m\s+)?(\S*/)?(pytest|py\.test|tox|nox|unittest|nosetests|runtests\.py|manage\.py\s+test|bin/test)\b",
        )
        .expect("static regex")
    });
    TESTS.is_match(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_commands_are_recognised() {
        for yes in [
            "python -m pytest -q",
            "pytest tests/test_eval.py",
            "cd x && ./runtests.py",
            "python manage.py test app",
            "bin/test sympy/core",
            "tox -e py3",
        ] {
            assert!(looks_like_tests(yes), "{yes}");
        }
        for no in ["ls tests/", "cat test_eval.py", "grep -rn pytest setup.cfg"] {
            assert!(!looks_like_tests(no), "{no}");
        }
    }
}

#[cfg(test)]
mod note_tests {
    use super::*;

    #[test]
    fn the_step_aware_note_starts_at_its_step() {
        let critic = protocol::CriticSpec {
            name: "rules".into(),
            settings: CriticSettings::Heuristic(CriticParams {
                step_aware_after: Some(100),
                ..Default::default()
            }),
        };
        let hook = critic_hook(&critic, &Keyring::default()).unwrap().unwrap();
        assert_eq!(hook.observation_note(98, 150), None);
        assert!(hook.observation_note(99, 150).unwrap().contains("used 100 of your 150 steps"));
    }
}

#[cfg(test)]
mod scorer_policy_tests {
    use super::*;
    use crate::agent::hook::StepFacts;
    use serde_json::json;

    fn scorer(extra: serde_json::Value) -> Option<CriticHook> {
        if let Err(e) = onnx::runtime_library() {
            assert!(std::env::var_os("CI").is_none(), "CI is set and ONNX Runtime is missing: {e}");
            eprintln!("skipping: {e}");
            return None;
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/scorer");
        let mut params = json!({"every_k": 1, "onnx": {"model": dir}});
        for (k, v) in extra.as_object().unwrap() {
            params[k] = v.clone();
        }
        let spec: protocol::CriticSpec =
            serde_json::from_value(json!({"name": "s", "kind": "onnx", "params": params})).unwrap();
        Some(critic_hook(&spec, &Keyring::default()).unwrap().unwrap())
    }

    /// An agent that runs `ls` over and over.
    fn looping() -> (Vec<serde_json::Value>, Vec<StepFacts>) {
        let mut messages = vec![
            json!({"role": "system", "content": "You are a helpful assistant that can interact with a computer shell to solve programming tasks."}),
            json!({"role": "user", "content": "<pr_description>\nFix the calculator.\n</pr_description>"}),
        ];
        let mut facts = Vec::new();
        for i in 0..8 {
            messages.push(json!({"role": "assistant", "content": "THOUGHT: Let me look at the files in the repository.\n\n```bash\nls\n```"}));
            messages.push(json!({"role": "user", "content": "<returncode>0</returncode>\n<output>\nREADME.md\nminicalc\ntests\n</output>"}));
            facts.push(StepFacts {
                step: i,
                command: Some("ls".into()),
                exit_code: Some(0),
                ..Default::default()
            });
        }
        (messages, facts)
    }

    #[tokio::test]
    async fn a_scorer_intervenes_below_its_threshold_and_stops_only_when_asked() {
        let (messages, facts) = looping();
        for (extra, expected) in [
            (json!({"score_threshold": 0.5}), "inject"),
            (json!({"score_threshold": 0.0}), "continue"),
            (json!({"score_threshold": 0.5, "stop_below_score": 0.9}), "stop"),
        ] {
            let Some(mut hook) = scorer(extra.clone()) else { return };
            let review = hook
                .review(StepView {
                    moment: Moment::AfterStep,
                    step: 7,
                    max_steps: 150,
                    messages: &messages,
                    facts: &facts,
                })
                .await
                .unwrap();
            let call = &review.calls[0];
            assert_eq!(call.decision, expected, "{extra}: {call:?}");
            assert!(call.score.unwrap() < 0.5, "a loop is off track: {call:?}");
            match expected {
                "inject" => assert!(matches!(review.guidance, Guidance::Feedback(_))),
                "stop" => assert!(matches!(review.guidance, Guidance::Stop(_))),
                _ => assert_eq!(review.guidance, Guidance::Continue),
            }
        }
    }
}
