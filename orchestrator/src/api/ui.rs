//! The web UI: three static files compiled into the binary (no build step, nothing fetched
//! from elsewhere), and the server-sent events of a sweep's progress that it follows.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect};
use futures_util::Stream;

use super::error::ApiResult;
use super::AppState;
use crate::store::sweeps;

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/style.css");

/// How often a followed sweep's status is sent.
const EVERY: Duration = Duration::from_secs(1);

pub async fn root() -> Redirect {
    Redirect::to("/ui/")
}

pub async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX)
}

pub async fn app_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS)
}

pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

/// `GET /api/v1/sweeps/{sweep}/events`: the sweep's status (as `GET /sweeps/{sweep}`) every
/// second while it runs or is paused, then once more and the stream ends.
#[utoipa::path(get, path = "/api/v1/sweeps/{sweep}/events", params(("sweep" = String, Path, description = "id or name")),
    responses((status = 200, description = "text/event-stream of `status` events, each a SweepStatus"),
              (status = 404, body = protocol::ApiError)), tag = "sweeps")]
pub async fn sweep_events(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let id = sweeps::resolve(&state.pool, &key).await?;
    let pool = state.pool.clone();
    let live_window = state.live_window();
    let stream = futures_util::stream::unfold(Some(()), move |more| {
        let pool = pool.clone();
        async move {
            more?;
            let status = match sweeps::status(&pool, id).await {
                Ok(mut s) => match crate::store::waiting::waiting_runs(&pool, id, live_window).await {
                    Ok(waiting) => {
                        s.waiting = waiting;
                        s
                    }
                    Err(e) => {
                        let event = Event::default().event("error").data(e.to_string());
                        return Some((Ok(event), None));
                    }
                },
                Err(e) => {
                    let event = Event::default().event("error").data(e.to_string());
                    return Some((Ok(event), None));
                }
            };
            let live = matches!(status.state, protocol::SweepState::Running | protocol::SweepState::Paused);
            let event = Event::default().event("status").json_data(&status).unwrap_or_default();
            if live {
                tokio::time::sleep(EVERY).await;
            }
            Some((Ok(event), live.then_some(())))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
