//! Routes for workers: register, heartbeat, claim, upload steps, complete, fail, release, and
//! release-all-held on exit.
//!
//! Every write about a run carries its lease token; the queue rejects stale ones (`lease_lost`).
//! A worker is bound to the API token that registered it: a route that names a worker, or a
//! run a worker holds, is `forbidden` (and changes nothing) through any other token, admin
//! tokens included.

use std::time::Duration;

use axum::extract::State;
use axum::Extension;
use protocol::{
    ClaimRequest, ClaimResponse, CompleteRun, FailRun, Heartbeat, HeartbeatAck, RegisterWorker, Registered,
    ReleaseHeld, ReleaseRun, ReleasedRuns, UploadSteps,
};
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiErr, ApiResult, Json, Path};
use super::pressure::Lane;
use super::AppState;
use crate::db;
use crate::metrics::{CallSource, OutcomeLabel};
use crate::queue::desk::Refused;
use crate::queue::{self, ClaimClass, ClaimTicket, Registrar};
use crate::store::{runs, workers};

/// Longest long poll a claim may ask for.
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(30);

#[utoipa::path(post, path = "/api/v1/workers", request_body = RegisterWorker,
    responses((status = 200, body = Registered)), tag = "workers")]
pub async fn register(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<RegisterWorker>,
) -> ApiResult<Json<Registered>> {
    if req.slots == 0 || req.slots > 1024 {
        return Err(ApiErr::bad_request(format!("slots must be between 1 and 1024, got {}", req.slots)));
    }
    let worker_id = {
        let _lane = state.lane(Lane::Bulk).await?;
        workers::register(&state.pool, caller.token_id, &req).await?
    };
    tracing::info!(%worker_id, name = %req.name, host = %req.host, slots = req.slots, "worker registered");
    let ttl = state.queue.lease_ttl();
    Ok(Json(Registered {
        worker_id,
        lease_ttl_ms: ttl.as_millis() as u64,
        heartbeat_interval_ms: (ttl / 3).as_millis() as u64,
    }))
}

#[utoipa::path(post, path = "/api/v1/workers/{worker_id}/heartbeat", request_body = Heartbeat,
    params(("worker_id" = Uuid, Path)), responses((status = 200, body = HeartbeatAck), (status = 403, body = protocol::ApiError)), tag = "workers")]
pub async fn heartbeat(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(worker_id): Path<Uuid>,
    Json(req): Json<Heartbeat>,
) -> ApiResult<Json<HeartbeatAck>> {
    let _lane = state.lane(Lane::Lease).await?;
    let ack = state.queue.heartbeat(worker_id, registrar(caller), &req).await?;
    if !ack.lost.is_empty() {
        tracing::warn!(%worker_id, lost = ?ack.lost, "heartbeat named leases the worker no longer holds");
    }
    Ok(Json(ack))
}

#[utoipa::path(post, path = "/api/v1/workers/{worker_id}/claim", request_body = ClaimRequest,
    params(("worker_id" = Uuid, Path)), responses((status = 200, body = ClaimResponse), (status = 403, body = protocol::ApiError)), tag = "workers")]
pub async fn claim(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(worker_id): Path<Uuid>,
    Json(req): Json<ClaimRequest>,
) -> ApiResult<Json<ClaimResponse>> {
    let held = {
        let _lane = state.lane(Lane::Bulk).await?;
        workers::holdings(&state.pool, worker_id).await?
    };
    let Some(held) = held else {
        return Err(ApiErr::not_found(format!("worker {worker_id} is not registered")));
    };
    // A worker's registrar never changes, so checking once before claiming is enough.
    if held.token_id != Some(caller.token_id) {
        return Err(queue::worker_forbidden(worker_id).into());
    }
    if held.draining {
        // A draining or stopped worker is leased nothing; it need not wait to hear so.
        return Ok(Json(ClaimResponse::default()));
    }
    state.metrics.claim_requests.inc();
    let wait = Duration::from_millis(req.wait_ms).min(MAX_CLAIM_WAIT);
    let class = ClaimClass::new(held.executors, held.key_envs);
    let ticket = ClaimTicket {
        worker: worker_id,
        max: req.max_runs.min(256),
        images: held.images,
        by: registrar(caller),
    };
    let leases = match state.desk.claim(class, ticket, wait).await {
        Ok(leases) => leases,
        Err(Refused::Busy(retry_after)) => {
            state.metrics.requests_overloaded.inc();
            return Err(ApiErr::overloaded(
                format!(
                    "{} claims are already waiting at this coordinator; ask again later",
                    state.desk.waiting()
                ),
                retry_after,
            ));
        }
        Err(Refused::Failed(e)) => return Err(e.into()),
    };
    state.metrics.runs_claimed.inc_by(leases.len() as u64);
    // The runs are leased: describing them waits for its place however long it takes (a
    // refusal now would strand them until their leases expire).
    let _lane = state.pressure.wait(Lane::Bulk).await;
    let mut runs = Vec::with_capacity(leases.len());
    for lease in leases {
        match runs::claimed_run(&state.pool, &lease).await {
            Ok(run) => runs.push(run),
            Err(e) => {
                // A run we cannot describe must not be lost: hand it back as a failure so its
                // reason is kept and it ends as `error` if it keeps failing.
                tracing::error!(run_id = lease.run_id, error = %e, "cannot build claimed run");
                state
                    .queue
                    .fail(
                        lease.run_id,
                        registrar(caller),
                        lease.lease_token,
                        &format!("coordinator could not load the run: {e}"),
                    )
                    .await?;
            }
        }
    }
    Ok(Json(ClaimResponse { runs }))
}

#[utoipa::path(post, path = "/api/v1/runs/{run_id}/steps", request_body = UploadSteps,
    params(("run_id" = i64, Path)), responses((status = 204), (status = 403, body = protocol::ApiError), (status = 409, body = protocol::ApiError)), tag = "workers")]
pub async fn upload_steps(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<i64>,
    Json(req): Json<UploadSteps>,
) -> ApiResult<axum::http::StatusCode> {
    let _lane = state.lane(Lane::Bulk).await?;
    let stored = fenced(&state, state.queue.upload_steps(run_id, registrar(caller), &req).await)?;
    let source = CallSource::new(&stored.target.agent, &stored.target.base_url);
    // Only what is new: a re-sent upload must not count its steps and calls again.
    let fresh = &stored.fresh;
    state.metrics.observe_upload(
        &source,
        only_fresh(&req.steps, &fresh.steps),
        only_fresh(&req.llm_calls, &fresh.llm_calls),
        only_fresh(&req.critic_calls, &fresh.critic_calls),
    );
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/runs/{run_id}/complete", request_body = CompleteRun,
    params(("run_id" = i64, Path)), responses((status = 204), (status = 403, body = protocol::ApiError), (status = 409, body = protocol::ApiError)), tag = "workers")]
pub async fn complete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<i64>,
    Json(req): Json<CompleteRun>,
) -> ApiResult<axum::http::StatusCode> {
    let lane = state.lane(Lane::Lease).await?;
    let res = state.queue.complete(run_id, registrar(caller), &req).await;
    drop(lane);
    fenced(&state, res)?;
    // Its place (under a cap) or its prefix-replay dependants may now be claimable.
    state.desk.wake();
    state.metrics.runs_completed.get_or_create(&OutcomeLabel { outcome: req.outcome.as_str().into() }).inc();
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/runs/{run_id}/fail", request_body = FailRun,
    params(("run_id" = i64, Path)), responses((status = 204), (status = 403, body = protocol::ApiError), (status = 409, body = protocol::ApiError)), tag = "workers")]
pub async fn fail(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<i64>,
    Json(req): Json<FailRun>,
) -> ApiResult<axum::http::StatusCode> {
    let by = registrar(caller);
    let lane = state.lane(Lane::Lease).await?;
    let res = if req.endpoint_unavailable {
        state.queue.fail_on_endpoint_outage(run_id, by, req.lease_token, &req.reason).await
    } else {
        state.queue.fail(run_id, by, req.lease_token, &req.reason).await
    };
    drop(lane);
    let went = fenced(&state, res)?;
    state.desk.wake();
    state.metrics.runs_failed.inc();
    tracing::warn!(run_id, reason = %req.reason, went = ?went, "run failed on infrastructure");
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/runs/{run_id}/release", request_body = ReleaseRun,
    params(("run_id" = i64, Path)), responses((status = 204), (status = 403, body = protocol::ApiError), (status = 409, body = protocol::ApiError)), tag = "workers")]
pub async fn release(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<i64>,
    Json(req): Json<ReleaseRun>,
) -> ApiResult<axum::http::StatusCode> {
    let reason = req.reason.as_deref().unwrap_or("worker draining");
    let lane = state.lane(Lane::Lease).await?;
    let res = state.queue.release(run_id, registrar(caller), req.lease_token, reason).await;
    drop(lane);
    fenced(&state, res)?;
    state.desk.wake();
    state.metrics.runs_released.inc();
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/workers/{worker_id}/release", request_body = ReleaseHeld,
    params(("worker_id" = Uuid, Path)), responses((status = 200, body = ReleasedRuns), (status = 403, body = protocol::ApiError), (status = 404, body = protocol::ApiError)), tag = "workers")]
pub async fn release_held(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(worker_id): Path<Uuid>,
    Json(req): Json<ReleaseHeld>,
) -> ApiResult<Json<ReleasedRuns>> {
    let reason = req.reason.as_deref().unwrap_or("worker stopped");
    let lane = state.lane(Lane::Lease).await?;
    let run_ids = state.queue.release_held(worker_id, registrar(caller), reason).await?;
    drop(lane);
    if !run_ids.is_empty() {
        state.desk.wake();
        // A worker exits holding nothing, so these are claims whose response it never read.
        tracing::warn!(%worker_id, runs = ?run_ids, "handed back runs the stopping worker never received");
        state.metrics.runs_released.inc_by(run_ids.len() as u64);
    }
    Ok(Json(ReleasedRuns { run_ids }))
}

/// The records whose `fresh` flag is set.
fn only_fresh<'a, T>(records: &'a [T], fresh: &'a [bool]) -> impl Iterator<Item = &'a T> {
    records.iter().zip(fresh).filter(|(_, new)| **new).map(|(r, _)| r)
}

/// The caller's token, as the registrar the queue checks a worker's requests against.
fn registrar(caller: Caller) -> Registrar {
    Registrar::token(caller.token_id)
}

/// Counts stale-token rejections on their way out.
fn fenced<T>(state: &AppState, res: db::Result<T>) -> ApiResult<T> {
    if let Err(db::Error::LeaseLost(_)) = &res {
        state.metrics.lease_rejections.inc();
    }
    Ok(res?)
}
