//! Bounds on the work one request may cause: the runs a sweep expands into, the size of a
//! bulk upload, and how many bulk uploads are read at once. Whatever a request asks, the
//! coordinator's memory and time stay within these.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use protocol::ErrorCode;
use tokio::sync::Semaphore;

use super::error::ApiErr;
use super::AppState;
use crate::store::sweeps::DEFAULT_MAX_RUNS_PER_SWEEP;

/// The coordinator's limits (`steer serve --max-runs-per-sweep`, ...).
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Runs one sweep may expand into (instances x agents x critics x repeats).
    pub max_runs_per_sweep: u64,
    /// Largest body of a dataset or predictions upload, in bytes.
    pub max_upload_bytes: usize,
    /// Dataset and predictions uploads read and imported at once; others wait their turn.
    pub uploads_at_once: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_runs_per_sweep: DEFAULT_MAX_RUNS_PER_SWEEP,
            // SWE-bench's full test split is about 100 MB as JSON.
            max_upload_bytes: 256 * 1024 * 1024,
            uploads_at_once: 2,
        }
    }
}

/// How long an upload waits for its turn before it is told to come back later.
const UPLOAD_QUEUE_WAIT: Duration = Duration::from_secs(60);

/// The uploads' shared turn-taking, built from [`RequestLimits::uploads_at_once`].
pub fn upload_slots(limits: &RequestLimits) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(limits.uploads_at_once.max(1)))
}

/// Middleware of the bulk upload routes: a body announced over the limit is refused before it
/// is read (bodies without a length are cut at the limit by the body-limit layer), and at most
/// `uploads_at_once` bodies are read and imported at a time.
pub async fn gate_uploads(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.limits.max_upload_bytes;
    let announced =
        req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = announced.filter(|&n| n > limit as u64) {
        return too_large(length, limit).into_response();
    }
    let permit =
        match tokio::time::timeout(UPLOAD_QUEUE_WAIT, state.upload_slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) | Err(_) => {
                return ApiErr::new(
                    ErrorCode::Unavailable,
                    format!(
                        "{} uploads are being imported and this one waited {}s for its turn; try again later",
                        state.limits.uploads_at_once,
                        UPLOAD_QUEUE_WAIT.as_secs()
                    ),
                )
                .into_response()
            }
        };
    let resp = next.run(req).await;
    drop(permit);
    resp
}

fn too_large(length: u64, limit: usize) -> ApiErr {
    ApiErr::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "the upload is {length} bytes, over this coordinator's limit of {limit} bytes \
             (`steer serve --max-upload-mib`); split the dataset or ask the operator to raise the limit"
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::post;
    use sqlx::postgres::PgPoolOptions;

    use super::*;
    use crate::queue::Queue;

    /// A server whose one route is behind the gate, with these limits (no database needed).
    async fn gated(limits: RequestLimits) -> (String, AppState) {
        let pool = PgPoolOptions::new().connect_lazy("postgres://steer@127.0.0.1:1/steer").unwrap();
        let state = AppState::new(
            Queue::new(pool, Duration::from_secs(30)),
            limits,
            crate::queue::desk::DeskConfig::default(),
            None,
            tokio_util::sync::CancellationToken::new(),
            &tokio_util::task::TaskTracker::new(),
        );
        let app = axum::Router::new()
            .route("/upload", post(|body: String| async move { body.len().to_string() }))
            .route_layer(axum::middleware::from_fn_with_state(state.clone(), gate_uploads));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/upload"), state)
    }

    #[tokio::test]
    async fn an_announced_body_over_the_limit_is_413_naming_the_limit() {
        let (url, _state) = gated(RequestLimits { max_upload_bytes: 100, ..Default::default() }).await;
        let http = reqwest::Client::new();
        let resp = http.post(&url).body("x".repeat(200)).send().await.unwrap();
        assert_eq!(resp.status(), 413);
        let text = resp.text().await.unwrap();
        assert!(text.contains("200 bytes") && text.contains("limit of 100 bytes"), "{text}");
        let resp = http.post(&url).body("x".repeat(100)).send().await.unwrap();
        assert_eq!((resp.status().as_u16(), resp.text().await.unwrap()), (200, "100".into()));
    }

    #[tokio::test]
    async fn uploads_past_the_concurrency_limit_wait_their_turn() {
        let (url, state) = gated(RequestLimits { uploads_at_once: 1, ..Default::default() }).await;
        let held = state.upload_slots.clone().acquire_owned().await.unwrap();
        let upload = tokio::spawn(reqwest::Client::new().post(&url).body("data").send());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!upload.is_finished(), "the upload waits while the only turn is taken");
        drop(held);
        let resp = tokio::time::timeout(Duration::from_secs(5), upload).await.unwrap().unwrap().unwrap();
        assert_eq!(resp.status(), 200);
    }
}
