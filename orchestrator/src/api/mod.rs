//! The coordinator's HTTP API (axum). JSON under `/api/v1`, bearer tokens with roles,
//! `/healthz` open, `/metrics` open unless a metrics token is set. The coordinator keeps no state outside Postgres: any number
//! of replicas can serve one database.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::Router;
use protocol::Role;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::OpenApi;

use crate::metrics::{HostLabel, Metrics, StateLabel, StatusLabel, SweepLabel};
use crate::queue::desk::{ClaimDesk, DeskConfig};
use crate::queue::Queue;
use crate::store;

pub mod auth;
pub mod error;
pub mod limits;
pub mod pressure;
pub mod reports;
pub mod ui;
pub mod users;
pub mod workers;

/// Default cap on request bodies.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub queue: Queue,
    pub metrics: Arc<Metrics>,
    /// Serves every waiting claim; woken when runs may have become claimable (Postgres
    /// NOTIFY on `steer_runs`, lease expiry, a run ending).
    pub desk: ClaimDesk,
    /// The worker requests' lanes to the database, and whether the coordinator is behind.
    pub pressure: Arc<pressure::Pressure>,
    /// Bounds on the work of one request.
    pub limits: limits::RequestLimits,
    /// Turns of the bulk uploads (`limits.uploads_at_once` permits).
    pub upload_slots: Arc<tokio::sync::Semaphore>,
    /// When set, `/metrics` answers only requests bearing it (`Authorization: Bearer <token>`).
    pub metrics_token: Option<Arc<str>>,
}

impl AppState {
    /// A coordinator's state over `queue`: its lanes sized from the queue's pool, its claim
    /// desk started on `tracker` (it stops on `shutdown`).
    pub fn new(
        queue: Queue,
        limits: limits::RequestLimits,
        desk: DeskConfig,
        metrics_token: Option<Arc<str>>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let pool = queue.pool().clone();
        let pressure =
            Arc::new(pressure::Pressure::new(pool.options().get_max_connections(), queue.lease_ttl()));
        AppState {
            desk: ClaimDesk::spawn(queue.clone(), desk, shutdown, tracker),
            pressure,
            queue,
            pool,
            metrics: Arc::new(Metrics::new()),
            upload_slots: limits::upload_slots(&limits),
            limits,
            metrics_token,
        }
    }

    /// A worker heard from within this long counts as live (two lease lifetimes: a worker
    /// heartbeats three times per lease).
    pub fn live_window(&self) -> std::time::Duration {
        self.queue.lease_ttl() * 2
    }

    /// Enters a worker request's lane to the database (counting those turned away).
    pub async fn lane(
        &self,
        lane: pressure::Lane,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, error::ApiErr> {
        self.pressure.enter(lane).await.inspect_err(|_| {
            self.metrics.requests_overloaded.inc();
        })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "steerbench coordinator API", description = "Sweeps of code agents on SWE-bench: datasets, sweeps, runs, and the worker protocol."),
    paths(
        workers::register, workers::heartbeat, workers::claim, workers::upload_steps, workers::complete,
        workers::fail, workers::release, workers::release_held,
        users::import_dataset, users::list_datasets, users::get_dataset, users::dataset_instances,
        users::submit_eval, users::sweep_evaluations, users::sweep_images, users::sweep_held_images, users::list_workers,
        users::submit_sweep, users::validate_sweep, users::delete_sweep, users::delete_dataset, users::list_sweeps, users::sweep_status, users::cancel_sweep, users::pause_sweep,
        users::resume_sweep, users::sweep_runs, users::get_run, users::get_trajectory, users::get_record,
        users::create_token, users::list_tokens, users::revoke_token, reports::report, reports::report_html, reports::compare, ui::sweep_events,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

pub fn router(state: AppState) -> Router {
    const WORKERS: &[Role] = &[Role::Worker];
    const USERS: &[Role] = &[Role::User];
    const ANYONE: &[Role] = &[Role::User, Role::Worker];
    const ADMINS: &[Role] = &[];
    let guard =
        |roles: &'static [Role]| axum::middleware::from_fn_with_state((state.clone(), roles), auth::require);

    let worker_routes = Router::new()
        .route("/workers", post(workers::register))
        .route("/workers/{worker_id}/heartbeat", post(workers::heartbeat))
        .route("/workers/{worker_id}/claim", post(workers::claim))
        .route("/workers/{worker_id}/release", post(workers::release_held))
        .route("/runs/{run_id}/steps", post(workers::upload_steps))
        .route("/runs/{run_id}/complete", post(workers::complete))
        .route("/runs/{run_id}/fail", post(workers::fail))
        .route("/runs/{run_id}/release", post(workers::release))
        .route_layer(guard(WORKERS));
    // Dataset uploads and predictions carry whole datasets of patches: a larger body limit
    // (the coordinator's setting), and only a few are read at once.
    let bulk_uploads = Router::new()
        .route("/datasets", post(users::import_dataset))
        .route("/evals", post(users::submit_eval))
        .layer(DefaultBodyLimit::max(state.limits.max_upload_bytes))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), limits::gate_uploads))
        .route_layer(guard(USERS));
    let user_routes = Router::new()
        .route("/datasets", get(users::list_datasets))
        .route("/datasets/{name}", get(users::get_dataset))
        .route("/datasets/{name}/instances", get(users::dataset_instances))
        .route("/sweeps/{sweep}/evaluations", get(users::sweep_evaluations))
        .route("/sweeps/{sweep}/images", get(users::sweep_images))
        .route("/sweeps/{sweep}/held-images", get(users::sweep_held_images))
        .route("/sweeps", post(users::submit_sweep).get(users::list_sweeps))
        // Not under /sweeps/: a sweep may be named `validate`.
        .route("/sweep-validations", post(users::validate_sweep))
        .route("/sweeps/{sweep}", get(users::sweep_status).delete(users::delete_sweep))
        .route("/sweeps/{sweep}/cancel", post(users::cancel_sweep))
        .route("/sweeps/{sweep}/pause", post(users::pause_sweep))
        .route("/sweeps/{sweep}/resume", post(users::resume_sweep))
        .route("/sweeps/{sweep}/runs", get(users::sweep_runs))
        .route("/workers", get(users::list_workers))
        .route("/runs/{run_id}", get(users::get_run))
        .route("/runs/{run_id}/trajectory", get(users::get_trajectory))
        .route("/runs/{run_id}/record", get(users::get_record))
        .route("/sweeps/{sweep}/events", get(ui::sweep_events))
        .route("/report", get(reports::report))
        .route("/report/html", get(reports::report_html))
        .route("/compare", get(reports::compare))
        .route_layer(guard(USERS));
    let admin_routes = Router::new()
        .route("/tokens", post(users::create_token).get(users::list_tokens))
        .route("/tokens/{id}", delete(users::revoke_token))
        .route("/datasets/{name}", delete(users::delete_dataset))
        .route_layer(guard(ADMINS));
    let doc_routes = Router::new().route("/openapi.json", get(openapi)).route_layer(guard(ANYONE));

    let api = Router::new()
        .merge(worker_routes)
        .merge(bulk_uploads)
        .merge(user_routes)
        .merge(admin_routes)
        .merge(doc_routes)
        .fallback(|| async { error::ApiErr::not_found("no such route") });

    Router::new()
        .route("/healthz", get(healthz))
        .merge(
            Router::new().route("/metrics", get(metrics)).route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                auth::require_metrics_token,
            )),
        )
        .route("/", get(ui::root))
        .route("/ui/", get(ui::index))
        .route("/ui/app.js", get(ui::app_js))
        .route("/ui/style.css", get(ui::style))
        .nest(protocol::API_PREFIX, api)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_responses))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn count_responses(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let resp = next.run(req).await;
    let label = StatusLabel { status: resp.status().as_u16().to_string().into() };
    state.metrics.http_responses.get_or_create(&label).inc();
    resp
}

async fn openapi() -> impl IntoResponse {
    axum::Json(ApiDoc::openapi())
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match store::health::ping(&state.pool).await {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => {
            store_failed(&state, "ping", &e);
            (StatusCode::SERVICE_UNAVAILABLE, format!("database unreachable: {e}")).into_response()
        }
    }
}

/// Logs and counts (`steer_store_errors_total{query}`) a failed store query of `/healthz` or
/// `/metrics`.
fn store_failed(state: &AppState, query: &'static str, error: &crate::db::Error) {
    tracing::warn!(query, error = %error, "store query for /healthz or /metrics failed");
    state.metrics.store_failed(query);
}

/// A store query's answer for `/metrics`; on failure, logged and counted, and the gauges it
/// feeds keep their last value while the rest of the page is served.
fn scraped<T>(state: &AppState, query: &'static str, res: crate::db::Result<T>) -> Option<T> {
    res.inspect_err(|e| store_failed(state, query, e)).ok()
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Queue gauges come from the database so that every replica reports the fleet's truth.
    let pool = &state.pool;
    let m = &state.metrics;
    if let Some(counts) = scraped(&state, "runs_by_state", store::health::runs_by_state(pool).await) {
        for (st, n) in counts {
            m.runs_by_state.get_or_create(&StateLabel { state: st.as_str().into() }).set(n);
        }
    }
    let within = state.live_window();
    if let Some(n) = scraped(&state, "workers_alive", store::health::workers_alive(pool, within).await) {
        m.workers_alive.set(n);
    }
    if let Some(rows) = scraped(&state, "sweep_spend", store::health::sweep_spend(pool).await) {
        // Only sweeps in progress: finished ones would pile up as label sets forever.
        m.sweep_spent_usd.clear();
        for (sweep, spent) in rows {
            use rust_decimal::prelude::ToPrimitive;
            m.sweep_spent_usd
                .get_or_create(&SweepLabel { sweep: sweep.into() })
                .set(spent.to_f64().unwrap_or(0.0));
        }
    }
    if let Some(breakers) = scraped(&state, "breakers", store::health::breakers(pool).await) {
        // Only endpoints whose breaker is not closed: a closed one drops out of the series.
        m.endpoint_outages.clear();
        m.endpoint_cooldown_seconds.clear();
        for b in breakers {
            let label = HostLabel { endpoint: crate::metrics::endpoint_label(&b.base_url).into() };
            m.endpoint_outages.get_or_create(&label).set(i64::from(b.outages));
            m.endpoint_cooldown_seconds.get_or_create(&label).set(b.cooldown_s);
        }
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.render())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::to_bytes;
    use sqlx::postgres::PgPoolOptions;

    use super::*;

    /// A coordinator whose database cannot be reached (nothing listens on port 1).
    fn unreachable() -> AppState {
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy("postgres://steer@127.0.0.1:1/steer")
            .unwrap();
        AppState::new(
            Queue::new(pool, Duration::from_secs(30)),
            limits::RequestLimits::default(),
            DeskConfig::default(),
            None,
            CancellationToken::new(),
            &TaskTracker::new(),
        )
    }

    async fn body(resp: axum::response::Response) -> String {
        String::from_utf8(to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn failed_store_queries_are_counted_and_metrics_serves_the_rest() {
        let state = unreachable();
        state.metrics.runs_claimed.inc();
        let health = healthz(State(state.clone())).await.into_response();
        assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body(health).await.starts_with("database unreachable: "));
        let page = metrics(State(state.clone())).await.into_response();
        assert_eq!(page.status(), StatusCode::OK);
        let page = body(page).await;
        assert!(page.contains("steer_runs_claimed_total 1"), "{page}");
        for query in ["ping", "runs_by_state", "workers_alive", "sweep_spend", "breakers"] {
            let line = format!("steer_store_errors_total{{query=\"{query}\"}} 1");
            assert!(page.contains(&line), "{line} in:\n{page}");
        }
    }

    /// Serves `state`'s router on a loopback port; answers `GET /metrics` with `authorization`.
    async fn get_metrics(state: AppState, authorization: Option<&str>) -> (u16, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(listener, router(state))));
        let mut req = reqwest::Client::new().get(format!("http://{addr}/metrics"));
        if let Some(value) = authorization {
            req = req.header("authorization", value);
        }
        let resp = req.send().await.unwrap();
        let answer = (resp.status().as_u16(), resp.text().await.unwrap());
        server.abort();
        answer
    }

    #[tokio::test]
    async fn metrics_needs_the_metrics_token_when_one_is_set() {
        let state = AppState { metrics_token: Some("scrape-secret".into()), ..unreachable() };
        let model = "m\"} 1\nsteer_fake_total 9";
        let call = protocol::LlmCallRecord { model: model.into(), ..Default::default() };
        state.metrics.observe_upload(
            &crate::metrics::CallSource::new("a", "http://h:1/v1"),
            &[],
            &[call],
            &[],
        );
        for refused in [None, Some("Bearer wrong"), Some("scrape-secret"), Some("Basic scrape-secret")] {
            let (status, body) = get_metrics(state.clone(), refused).await;
            assert_eq!(status, 401, "{refused:?}: {body}");
            assert!(!body.contains("steer_"), "{body}");
        }
        let (status, page) = get_metrics(state.clone(), Some("Bearer scrape-secret")).await;
        assert_eq!(status, 200, "{page}");
        let escaped =
            r#"steer_llm_calls_total{endpoint="h:1",model="m\"} 1\nsteer_fake_total 9",status="ok"} 1"#;
        assert!(page.lines().any(|l| l == escaped), "{escaped} in:\n{page}");
        assert!(!page.lines().any(|l| l.starts_with("steer_fake")), "{page}");
        // Unset: open, as before.
        let (status, _) = get_metrics(unreachable(), None).await;
        assert_eq!(status, 200);
    }
}
