//! The `remote` critic: a strong model behind an OpenAI-compatible endpoint (the paper's
//! teacher baseline), prompted with the paper's input and parsed for its task status.

use std::time::Instant;

use protocol::{CriticCallRecord, CriticCallStatus, CriticKind, CriticParams, RemoteCritic};
use serde_json::Value;

use crate::llm::{self, secret, Keyring, LlmClient, LlmConfig, RetryPolicy};

/// Why a remote critic cannot be set up on this worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Its API key is not set here.
    #[error(transparent)]
    ApiKey(#[from] secret::Error),
    /// Its HTTP client cannot be built.
    #[error(transparent)]
    Client(#[from] llm::Error),
}

pub struct Remote {
    client: LlmClient,
    model: String,
}

/// A critique, or why there is none.
pub struct Critique {
    pub text: String,
    pub status: Option<String>,
}

impl Remote {
    pub fn new(spec: &RemoteCritic, keys: &Keyring, retry: RetryPolicy) -> Result<Remote, Error> {
        let api_key = keys.key(spec.api_key_env.as_deref(), "the remote critic")?;
        let client = LlmClient::new(LlmConfig {
            base_url: spec.base_url.clone(),
            model: spec.model.clone(),
            api_key,
            sampling: spec.sampling.clone(),
            price: spec.price.clone(),
            extra_body: Default::default(),
            retry,
            tokenizer: None,
        })?;
        Ok(Remote { client, model: spec.model.clone() })
    }

    /// One critic call on `messages` (built by `input::build`); the record is filled in
    /// whatever happens (a failed call is recorded and the agent goes on without feedback).
    pub async fn critique(&self, messages: Vec<Value>, record: &mut CriticCallRecord) -> Option<Critique> {
        let started = Instant::now();
        record.kind = CriticKind::Remote;
        record.model = Some(self.model.clone());
        record.device = Some("remote".into());
        record.batch_size = Some(1);
        let answer = self.client.chat(&messages, None).await;
        record.prompt = Value::Array(messages);
        record.latency_ms = started.elapsed().as_millis() as i64;
        match answer {
            Ok(done) => {
                record.input_tokens = done.usage.prompt_tokens;
                record.output_tokens = done.usage.completion_tokens;
                record.cost_usd = done.cost_usd;
                record.response_id = done.response_id.clone();
                record.status = CriticCallStatus::Ok;
                let (text, status) = super::input::parse_critique(&done.content);
                if text.is_empty() {
                    record.status = CriticCallStatus::Failed;
                    record.error = Some("the critic answered with no text".into());
                    return None;
                }
                Some(Critique { text, status })
            }
            Err(e) => {
                record.status = CriticCallStatus::Failed;
                record.error = Some(e.to_string());
                None
            }
        }
    }
}

/// The messages for the remote critic: the paper's input (see `input`).
pub fn messages(
    params: &CriticParams,
    agent: &[Value],
    history: &[(u32, String)],
    step: u32,
    max_steps: u32,
) -> Vec<Value> {
    super::input::build(params, agent, history, step, max_steps, &|s| s.chars().count().div_ceil(4))
}
