//! The HTTP client of the coordinator's API: the worker routes a worker daemon uses and the user
//! routes the `steer` CLI uses, with retries on transient faults. Both sides share it, so the
//! coordinator's error codes are read in one place.

use std::error::Error as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use protocol::redact::Redactor;
use protocol::{
    ApiError, ClaimRequest, ClaimResponse, CompleteRun, CriticCallRecord, ErrorCode, FailRun, Heartbeat,
    HeartbeatAck, LlmCallRecord, RegisterWorker, Registered, ReleaseHeld, ReleaseRun, ReleasedRuns,
    StepRecord, UploadSteps, API_PREFIX,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The coordinator could not be reached or answered 5xx: worth retrying. The message
    /// says which (it reads whole: "could not reach the coordinator at ...", or
    /// "coordinator unavailable: ...").
    #[error("{0}")]
    Unavailable(String),
    /// The coordinator is overloaded and asks to be called again after `retry_after`: worth
    /// retrying then, with jitter ([`Error::retry_hint`]).
    #[error("coordinator overloaded (retry in {} ms): {message}", .retry_after.as_millis())]
    Overloaded { retry_after: Duration, message: String },
    /// Our lease on the run is gone: stop working on it and write nothing more.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// The coordinator refused the request; retrying it unchanged will not help.
    /// `code` is None when the answer was not the API's error body (a proxy's page, say).
    #[error("coordinator refused the request ({status} {}): {message}", .code.map_or("unknown", ErrorCode::as_str))]
    Rejected { status: u16, code: Option<ErrorCode>, message: String },
    /// A success whose body is not what the route returns (a different version, a proxy).
    #[error("coordinator refused the request (200 bad_response): {0}")]
    BadResponse(String),
}

impl Error {
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Overloaded { .. })
    }

    /// How long to wait before asking an overloaded coordinator again: its hint plus up to
    /// half of it again at random, so that a fleet told to back off together does not come
    /// back together. None for other errors.
    pub fn retry_hint(&self) -> Option<Duration> {
        match self {
            Error::Overloaded { retry_after, .. } => Some(jittered(*retry_after)),
            _ => None,
        }
    }
}

/// A failed attempt, and whether the coordinator could not be connected to at all (as opposed
/// to answering badly), which decides whether it is retried.
struct Failure {
    error: Error,
    unreachable: bool,
}

impl Failure {
    fn answered(error: Error) -> Self {
        Failure { error, unreachable: false }
    }
}

/// `base` plus a random part of up to half of it.
fn jittered(base: Duration) -> Duration {
    use rand::Rng;
    let extra = rand::thread_rng().gen_range(0.0..=0.5);
    base + base.mul_f64(extra)
}

/// An error and its sources, `: `-joined (reqwest's message alone does not say why).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        // hyper and reqwest often repeat their source's message in their own.
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// Talks to one coordinator with one bearer token.
#[derive(Clone)]
pub struct CoordinatorClient {
    http: reqwest::Client,
    base: String,
    token: String,
    /// How long transient failures are retried before giving up.
    retry_for: Duration,
    /// Whether a coordinator that cannot be connected to at all (refused, no such host) is
    /// retried even before it has ever answered this client. A daemon waits for a coordinator
    /// still starting this way; an interactive command should say at once that nothing is there.
    retry_unreachable: bool,
    /// Whether the coordinator has answered this client (or a clone of it) at least once:
    /// from then on, losing it is a restart worth riding out (a `--wait` spanning one).
    answered: Arc<AtomicBool>,
    /// Secrets scrubbed from every request body (a worker's keys and tokens): nothing the
    /// coordinator stores, logs or shows to users can carry them.
    redactor: Arc<Redactor>,
}

impl CoordinatorClient {
    pub fn new(base_url: &str, token: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // Long enough for a claim's long poll (at most 30 s) plus slack.
            .timeout(Duration::from_secs(45))
            .build()
            .expect("reqwest client with static settings");
        CoordinatorClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            retry_for: Duration::from_secs(60),
            retry_unreachable: true,
            answered: Arc::default(),
            redactor: Arc::default(),
        }
    }

    /// Scrubs these secrets from every request body before it is sent.
    pub fn with_redactor(mut self, redactor: Arc<Redactor>) -> Self {
        self.redactor = redactor;
        self
    }

    /// How long transient failures are retried (default 60 s).
    pub fn with_retry_for(mut self, d: Duration) -> Self {
        self.retry_for = d;
        self
    }

    /// Gives up at once when the coordinator cannot be connected to (refused, no such host,
    /// no route) and has not answered this client before, instead of retrying that for
    /// `retry_for`. 5xx answers are still retried, and so is a coordinator that answered
    /// before and went away (restarting).
    pub fn without_retry_when_unreachable(mut self) -> Self {
        self.retry_unreachable = false;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// One request, no retry. `body` is sent as JSON when given.
    pub async fn request<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, Error> {
        self.attempt(method, path, body).await.map_err(|f| f.error)
    }

    /// One request, no retry, telling a coordinator that could not be connected to apart.
    async fn attempt<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, Failure> {
        let text = self.request_text(method, path, body).await?;
        let text = if text.is_empty() { "null".to_string() } else { text };
        serde_json::from_str(&text).map_err(|e| {
            Failure::answered(Error::BadResponse(format!("unexpected response body from {path}: {e}")))
        })
    }

    async fn request_text<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<String, Failure> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            let json = serde_json::to_string(b).map_err(|e| {
                Failure::answered(Error::BadResponse(format!("cannot encode the request to {path}: {e}")))
            })?;
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(
                match self.redactor.scrub(&json) {
                    // Nothing to scrub (the usual case): the body is sent as encoded, uncopied.
                    std::borrow::Cow::Borrowed(_) => json,
                    std::borrow::Cow::Owned(scrubbed) => scrubbed,
                },
            );
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                // reqwest's own message only repeats the URL; the reason (refused, no such
                // host) is in its sources.
                Failure {
                    error: Error::Unavailable(format!(
                        "could not reach the coordinator at {}: is `steer up` or `steer serve` running there? ({})",
                        self.base,
                        e.source().map_or_else(|| e.to_string(), causes)
                    )),
                    unreachable: true,
                }
            } else {
                Failure::answered(Error::Unavailable(format!("coordinator unavailable: {url}: {}", causes(&e))))
            }
        })?;
        self.answered.store(true, Ordering::Relaxed);
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            Failure::answered(Error::Unavailable(format!(
                "coordinator unavailable: {url}: reading body: {}",
                causes(&e)
            )))
        })?;
        if status.is_success() {
            return Ok(text);
        }
        let api: Option<ApiError> = serde_json::from_str(&text).ok();
        if let Some(ApiError { code: ErrorCode::Overloaded, message, retry_after_ms }) = &api {
            let retry_after = Duration::from_millis(retry_after_ms.unwrap_or(1000));
            return Err(Failure::answered(Error::Overloaded { retry_after, message: message.clone() }));
        }
        let (code, message) = match api {
            Some(a) => (Some(a.code), a.message),
            None => (None, text.chars().take(500).collect()),
        };
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            let code = code.map_or("unknown", ErrorCode::as_str);
            return Err(Failure::answered(Error::Unavailable(format!(
                "coordinator unavailable: {url}: {status} {code}: {message}"
            ))));
        }
        if code == Some(ErrorCode::LeaseLost) {
            return Err(Failure::answered(Error::LeaseLost(message)));
        }
        Err(Failure::answered(Error::Rejected { status: status.as_u16(), code, message }))
    }

    /// A request retried with exponential backoff and jitter while the coordinator is
    /// unavailable (restarting, unreachable, 5xx), for up to `retry_for`; see
    /// [`without_retry_when_unreachable`](Self::without_retry_when_unreachable) for the exception.
    pub async fn call<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, Error> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .with_total_delay(Some(self.retry_for))
            .without_max_times();
        (|| self.attempt::<B, T>(method.clone(), path, body))
            .retry(backoff)
            .when(|f: &Failure| {
                f.error.is_transient()
                    && (!f.unreachable || self.retry_unreachable || self.answered.load(Ordering::Relaxed))
            })
            // An overloaded coordinator says when to come back; that replaces the backoff step
            // (but not the end of retrying: `None` once `retry_for` is spent).
            .adjust(|f: &Failure, after| after.map(|a| f.error.retry_hint().unwrap_or(a)))
            .notify(|f, after| {
                tracing::warn!(error = %f.error, retry_in = ?after, "coordinator call failed; retrying")
            })
            .await
            .map_err(|f| f.error)
    }

    pub async fn register(&self, req: &RegisterWorker) -> Result<Registered, Error> {
        self.call(Method::POST, &format!("{API_PREFIX}/workers"), Some(req)).await
    }

    pub async fn heartbeat(&self, worker: Uuid, req: &Heartbeat) -> Result<HeartbeatAck, Error> {
        // No long retry: the next heartbeat comes soon anyway.
        self.request(Method::POST, &format!("{API_PREFIX}/workers/{worker}/heartbeat"), Some(req)).await
    }

    pub async fn claim(&self, worker: Uuid, max_runs: u32, wait: Duration) -> Result<ClaimResponse, Error> {
        let req = ClaimRequest { max_runs, wait_ms: wait.as_millis() as u64 };
        self.request(Method::POST, &format!("{API_PREFIX}/workers/{worker}/claim"), Some(&req)).await
    }

    pub async fn upload_steps(
        &self,
        run_id: i64,
        lease_token: Uuid,
        steps: Vec<StepRecord>,
        llm_calls: Vec<LlmCallRecord>,
        critic_calls: Vec<CriticCallRecord>,
    ) -> Result<(), Error> {
        let req = UploadSteps { lease_token, steps, llm_calls, critic_calls };
        self.call::<_, ()>(Method::POST, &format!("{API_PREFIX}/runs/{run_id}/steps"), Some(&req)).await
    }

    pub async fn complete(&self, run_id: i64, req: &CompleteRun) -> Result<(), Error> {
        self.call::<_, ()>(Method::POST, &format!("{API_PREFIX}/runs/{run_id}/complete"), Some(req)).await
    }

    /// Reports an infrastructure failure; `endpoint_unavailable` when it was the run's model
    /// endpoint staying unavailable through every retry.
    pub async fn fail(
        &self,
        run_id: i64,
        lease_token: Uuid,
        reason: &str,
        endpoint_unavailable: bool,
    ) -> Result<(), Error> {
        let req = FailRun { lease_token, reason: reason.to_string(), endpoint_unavailable };
        self.call::<_, ()>(Method::POST, &format!("{API_PREFIX}/runs/{run_id}/fail"), Some(&req)).await
    }

    pub async fn release(&self, run_id: i64, lease_token: Uuid, reason: &str) -> Result<(), Error> {
        let req = ReleaseRun { lease_token, reason: Some(reason.to_string()) };
        self.call::<_, ()>(Method::POST, &format!("{API_PREFIX}/runs/{run_id}/release"), Some(&req)).await
    }

    /// Hands back every run the coordinator still has leased to this worker; sent on exit,
    /// when the worker holds nothing. Returns the runs handed back. Not retried: an exiting
    /// worker should not linger, and lease expiry recovers the runs anyway.
    pub async fn release_held(&self, worker_id: Uuid, reason: &str) -> Result<Vec<i64>, Error> {
        let req = ReleaseHeld { reason: Some(reason.to_string()) };
        let res: ReleasedRuns = self
            .request(Method::POST, &format!("{API_PREFIX}/workers/{worker_id}/release"), Some(&req))
            .await?;
        Ok(res.run_ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers one HTTP request with `null`, then stops listening: a coordinator that went away.
    async fn answer_once() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await.unwrap();
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnull")
                .await
                .unwrap();
            // The listener drops here: further connections are refused.
        });
        url
    }

    /// A loopback address nothing listens on (bound, then released).
    fn closed_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    #[tokio::test]
    async fn an_unreachable_coordinator_is_not_retried_until_it_has_answered() {
        let interactive = |url: &str| {
            CoordinatorClient::new(url, "t")
                .with_retry_for(Duration::from_secs(2))
                .without_retry_when_unreachable()
        };
        // Never answered: given up at once, saying where and why.
        let url = closed_url();
        let started = Instant::now();
        let e = interactive(&url).call::<(), ()>(Method::GET, "/x", None).await.unwrap_err();
        // (a refused connection takes milliseconds; retries for 4 s would wait 100, 200, 400 ms, ...)
        assert!(started.elapsed() < Duration::from_millis(300), "not retried: {:?}", started.elapsed());
        let text = e.to_string();
        assert!(matches!(e, Error::Unavailable(_)), "{text}");
        assert!(text.starts_with(&format!("could not reach the coordinator at {url}: ")), "{text}");
        assert!(text.contains("refused"), "the cause is given: {text}");

        // A daemon's client retries the same for its whole `retry_for`.
        let started = Instant::now();
        let daemon = CoordinatorClient::new(&url, "t").with_retry_for(Duration::from_secs(1));
        assert!(daemon.call::<(), ()>(Method::GET, "/x", None).await.is_err());
        // (backoff stops before a sleep would overrun the total, so somewhat less than it)
        assert!(started.elapsed() >= Duration::from_millis(300), "retried: {:?}", started.elapsed());

        // Answered once, then gone (a restart): retried for `retry_for` before giving up.
        let client = interactive(&answer_once().await);
        client.call::<(), ()>(Method::GET, "/x", None).await.expect("the one answer");
        let started = Instant::now();
        let e = client.call::<(), ()>(Method::GET, "/x", None).await.unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(300), "retried: {:?}", started.elapsed());
    }
}
