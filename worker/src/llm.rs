//! The one place that builds HTTP requests to models: an OpenAI-compatible Chat Completions
//! client (vLLM, SGLang, llama.cpp's server, OpenRouter, OpenAI) with exact cost accounting.
//!
//! - Usage comes from each response's `usage` (prompt, completion, cached prompt and reasoning
//!   tokens where reported). A response without usage is counted with the model's tokenizer
//!   when one is configured (message texts; the chat template's tokens are not counted), else
//!   at 4 characters a token, and marked `estimated` either way, so reports can tell them apart.
//! - Cost is computed exactly from the agent's prices ([`Price::cost`], decimal, never float).
//! - 429 and 5xx answers, connection failures and timeouts are retried with exponential backoff
//!   and jitter, honouring `Retry-After`, a bounded number of times; only the answer that
//!   succeeded is billed. A malformed or truncated body (a dropped connection mid-answer, a
//!   proxy's error page) is retried the same way; if every attempt is malformed the error
//!   carries an excerpt of the last body. A successful call keeps its last failure, so a
//!   retried fault stays visible in the call's record.
//! - The API key is read by the caller from the environment variable the sweep names and is
//!   held in a [`Secret`]: it is sent as a bearer token and appears in no `Debug`, log or error.

use std::time::{Duration, Instant};

use protocol::{Price, Sampling};
use rand::Rng;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The default limit of one model answer's body: far above any chat completion (a 128k-token
/// answer is about 1 MB of JSON), far below what would strain a worker.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 32 * 1024 * 1024;

/// How failed calls are retried, and the limits of one attempt.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included).
    pub attempts: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this is cut to it.
    pub max_retry_after: Duration,
    pub connect_timeout: Duration,
    /// Limit of one attempt, from sending to the end of the body.
    pub request_timeout: Duration,
    /// Limit of one answer's body, in bytes. A longer answer is not read past the limit: the
    /// attempt fails as malformed (and is retried like one).
    pub max_reply_bytes: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(600),
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
        }
    }
}

/// Where and how to call a model.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// e.g. `http://127.0.0.1:8000/v1`; `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<Secret>,
    pub sampling: Sampling,
    pub price: Price,
    /// Passed through into the request body as given (e.g. `{"top_k": 20}`).
    pub extra_body: Map<String, Value>,
    pub retry: RetryPolicy,
    /// Counts tokens when an answer reports no usage (None: 4 characters a token).
    pub tokenizer: Option<std::sync::Arc<tokens::TokenCounter>>,
}

/// Tokens of one call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Prompt tokens served from the endpoint's cache (part of `prompt_tokens`).
    pub cached_tokens: i64,
    pub reasoning_tokens: i64,
    /// The endpoint reported no usage: the figures are an estimate.
    pub estimated: bool,
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The assistant message as the endpoint returned it (content, tool calls, ...).
    pub message: Value,
    /// Its text content ("" when there is none, e.g. only tool calls).
    pub content: String,
    pub finish_reason: Option<String>,
    /// The answer's `id` (`chatcmpl-...`), which a provider's or proxy's logs also show.
    pub response_id: Option<String>,
    pub usage: Usage,
    /// Exact cost of this call at the agent's prices.
    pub cost_usd: Decimal,
    /// From the request to the end of the successful answer, retries included.
    pub latency: Duration,
    /// Attempts that failed before this one.
    pub retries: u32,
    /// Why the last failed attempt failed (None when the first attempt succeeded).
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Retryable failures (429, 5xx, timeouts, connection errors) on every attempt: the
    /// endpoint is unavailable; the run should be re-queued as an infrastructure failure.
    #[error("the model endpoint failed {attempts} times; last: {last}")]
    Unavailable {
        attempts: u32,
        last: String,
        /// The last attempt's HTTP status, when it got an answer (429, 5xx).
        last_status: Option<u16>,
    },
    /// The endpoint refused the request (a 4xx other than 429): retrying will not help.
    #[error("the model endpoint refused the request ({status}): {body}")]
    Rejected { status: u16, body: String },
    /// The answer was not a chat completion (malformed or truncated body).
    #[error("malformed response from the model endpoint ({reason}): {excerpt}")]
    Malformed { reason: String, excerpt: String },
}

pub struct LlmClient {
    http: reqwest::Client,
    config: LlmConfig,
    url: String,
    /// The call's own API key, scrubbed from every answer before anything reads it: an
    /// endpoint that echoes the key (in an error message, say) must not have it quoted in an
    /// error, stored with a step or logged. Scrubbed before excerpts are cut, so no part of it
    /// survives either.
    own_key: protocol::redact::Redactor,
}

/// How much of a bad body an error quotes.
const EXCERPT_CHARS: usize = 500;

impl LlmClient {
    pub fn new(config: LlmConfig) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.retry.connect_timeout)
            .build()
            .map_err(|e| Error::Rejected { status: 0, body: format!("cannot build an HTTP client: {e}") })?;
        let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        let own_key = protocol::redact::Redactor::new(config.api_key.as_ref().map(Secret::expose));
        Ok(LlmClient { http, config, url, own_key })
    }

    /// How many attempts a call makes at most.
    pub fn attempts(&self) -> u32 {
        self.config.retry.attempts.max(1)
    }

    /// The request body for `messages` (and `tools`, for tool-calling scaffolds).
    pub fn body(&self, messages: &[Value], tools: Option<&Value>) -> Value {
        let s = &self.config.sampling;
        let mut body = Map::new();
        body.insert("model".into(), self.config.model.clone().into());
        body.insert("messages".into(), Value::Array(messages.to_vec()));
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                body.insert(k.into(), v);
            }
        };
        put("temperature", s.temperature.map(Value::from));
        put("top_p", s.top_p.map(Value::from));
        put("max_tokens", s.max_tokens.map(Value::from));
        put("seed", s.seed.map(Value::from));
        put("stop", (!s.stop.is_empty()).then(|| Value::from(s.stop.clone())));
        put("tools", tools.cloned());
        for (k, v) in &self.config.extra_body {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }

    /// One chat completion, retried as the policy says.
    pub async fn chat(&self, messages: &[Value], tools: Option<&Value>) -> Result<Completion, Error> {
        let body = self.body(messages, tools);
        let policy = &self.config.retry;
        let started = Instant::now();
        let mut last = String::new();
        let mut last_status = None;
        let mut last_malformed: Option<Error> = None;
        for attempt in 0..policy.attempts.max(1) {
            let wait = match self.attempt(&body).await {
                Ok(mut done) => {
                    done.latency = started.elapsed();
                    done.retries = attempt;
                    done.last_error = (attempt > 0).then(|| last.clone());
                    if done.usage.estimated {
                        done.usage = estimate(messages, &done.message, self.config.tokenizer.as_deref());
                    }
                    done.cost_usd = self.config.price.cost(
                        done.usage.prompt_tokens,
                        done.usage.cached_tokens,
                        done.usage.completion_tokens,
                    );
                    return Ok(done);
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry { reason, retry_after, malformed, status }) => {
                    tracing::warn!(url = %self.url, attempt = attempt + 1, %reason, "model call failed; retrying");
                    last = reason;
                    last_status = status;
                    last_malformed = malformed;
                    retry_after
                        .map(|d| d.min(policy.max_retry_after))
                        .unwrap_or_else(|| backoff(policy, attempt))
                }
            };
            if attempt + 1 < policy.attempts {
                tokio::time::sleep(wait).await;
            }
        }
        Err(last_malformed.unwrap_or(Error::Unavailable {
            attempts: policy.attempts.max(1),
            last,
            last_status,
        }))
    }

    async fn attempt(&self, body: &Value) -> Result<Completion, Attempt> {
        let mut req = self.http.post(&self.url).json(body).timeout(self.config.retry.request_timeout);
        if let Some(key) = &self.config.api_key {
            req = req.bearer_auth(key.expose());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            // reqwest's errors name the URL, never the headers: the key does not leak here.
            Err(e) => {
                return Err(Attempt::Retry {
                    reason: without_url_secrets(&e.to_string()),
                    retry_after: None,
                    malformed: None,
                    status: None,
                })
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match read_capped(resp, self.config.retry.max_reply_bytes, &self.own_key).await {
            Ok(t) => match self.own_key.scrub(&t) {
                std::borrow::Cow::Owned(scrubbed) => scrubbed,
                std::borrow::Cow::Borrowed(_) => t,
            },
            Err(Body::Unreadable(e)) => {
                return Err(Attempt::Retry {
                    reason: format!("reading the body: {e}"),
                    retry_after: None,
                    malformed: None,
                    status: Some(status.as_u16()),
                });
            }
            Err(Body::TooLong(e)) => {
                return Err(Attempt::Retry {
                    reason: e.to_string(),
                    retry_after: None,
                    malformed: Some(e),
                    status: Some(status.as_u16()),
                });
            }
        };
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(Attempt::Retry {
                reason: format!("{status}: {}", excerpt(&text)),
                retry_after,
                malformed: None,
                status: Some(status.as_u16()),
            });
        }
        if !status.is_success() {
            return Err(Attempt::Fatal(Error::Rejected { status: status.as_u16(), body: excerpt(&text) }));
        }
        parse_completion(&text).map_err(|e| Attempt::Retry {
            reason: e.to_string(),
            retry_after: None,
            malformed: Some(e),
            status: Some(status.as_u16()),
        })
    }
}

/// Why an answer's body was not read.
enum Body {
    Unreadable(reqwest::Error),
    /// Over the limit: a `Malformed` error quoting the body's start.
    TooLong(Error),
}

/// Reads an answer's body chunk by chunk, stopping (and dropping the connection) as soon as it
/// exceeds `limit` bytes, so a huge answer costs the worker at most `limit` bytes of memory.
async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
    own_key: &protocol::redact::Redactor,
) -> Result<String, Body> {
    let too_long = |start: &[u8]| {
        // Scrubbed past the excerpt's length, so a key straddling its end is still caught.
        let start = String::from_utf8_lossy(&start[..start.len().min(EXCERPT_CHARS * 8)]);
        Body::TooLong(Error::Malformed {
            reason: format!("the answer is longer than the limit of {limit} bytes"),
            excerpt: excerpt(&own_key.scrub(&start)),
        })
    };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_long(&[]));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Body::Unreadable)? {
        if body.len() + chunk.len() > limit {
            return Err(too_long(&body));
        }
        body.extend_from_slice(&chunk);
    }
    // As `Response::text` does for a body without a charset: invalid UTF-8 is replaced, and
    // the parser then reports what it finds.
    Ok(match String::from_utf8(body) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

enum Attempt {
    /// Worth another attempt; `malformed` holds the error when the body was not a completion.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
        malformed: Option<Error>,
        /// The HTTP status of the answer, when there was one.
        status: Option<u16>,
    },
    Fatal(Error),
}

/// Exponential backoff with full jitter: up to min_delay * 2^attempt, capped.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let cap = policy.min_delay.saturating_mul(1u32 << attempt.min(16)).min(policy.max_delay);
    let jittered = rand::thread_rng().gen_range(0.5..=1.0) * cap.as_secs_f64();
    Duration::from_secs_f64(jittered)
}

fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push_str(" [...]");
    }
    out
}

/// Strips `user:password@` from URLs in a message (keys sometimes travel in base URLs).
fn without_url_secrets(message: &str) -> String {
    let re = regex::Regex::new(r"(https?://)[^/@\s]+@").expect("static regex");
    re.replace_all(message, "$1<redacted>@").into_owned()
}

fn parse_completion(text: &str) -> Result<Completion, Error> {
    let malformed = |reason: &str| Error::Malformed { reason: reason.to_string(), excerpt: excerpt(text) };
    let v: Value = serde_json::from_str(text).map_err(|e| malformed(&format!("not JSON: {e}")))?;
    let choice = v.get("choices").and_then(|c| c.get(0)).ok_or_else(|| malformed("no choices"))?;
    let message = choice.get("message").filter(|m| m.is_object()).ok_or_else(|| malformed("no message"))?;
    let content = match message.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(malformed("message content is not a string")),
    };
    let int = |v: Option<&Value>| v.and_then(Value::as_i64).unwrap_or(0);
    let usage = match v.get("usage").filter(|u| u.is_object()) {
        Some(u) => Usage {
            prompt_tokens: int(u.get("prompt_tokens")),
            completion_tokens: int(u.get("completion_tokens")),
            cached_tokens: int(u.pointer("/prompt_tokens_details/cached_tokens")),
            reasoning_tokens: int(u.pointer("/completion_tokens_details/reasoning_tokens")),
            estimated: false,
        },
        None => Usage { estimated: true, ..Default::default() },
    };
    Ok(Completion {
        message: message.clone(),
        content,
        finish_reason: choice.get("finish_reason").and_then(Value::as_str).map(str::to_string),
        // Absent or empty on some servers: an id that is not a string is no id.
        response_id: v.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()).map(str::to_string),
        usage,
        cost_usd: Decimal::ZERO,
        latency: Duration::ZERO,
        retries: 0,
        last_error: None,
    })
}

/// Usage when the endpoint reports none, marked as estimated: counted with the model's
/// tokenizer when there is one, else at about 4 characters a token.
fn estimate(messages: &[Value], reply: &Value, tokenizer: Option<&tokens::TokenCounter>) -> Usage {
    let (prompt_tokens, completion_tokens) = match tokenizer {
        Some(t) => (t.count_messages(messages), t.count(&tokens::message_text(reply))),
        None => {
            let chars: usize = messages.iter().map(|m| m.to_string().chars().count()).sum();
            let reply_chars = tokens::message_text(reply).chars().count();
            ((chars as i64 + 3) / 4, (reply_chars as i64 + 3) / 4)
        }
    };
    Usage { prompt_tokens, completion_tokens, cached_tokens: 0, reasoning_tokens: 0, estimated: true }
}

pub mod secret;
pub mod tokens;

pub use secret::{Keyring, Secret};

#[cfg(test)]
mod tests;
