//! Routes for people (and their scripts): datasets, sweeps, runs, tokens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use protocol::{
    CreateToken, CreatedToken, DatasetInfo, DatasetUpload, Role, RunInfo, SubmitSweep, SweepStatus,
    SweepSubmitted, Trajectory,
};
use rust_decimal::Decimal;

use super::auth::Caller;
use super::error::{ApiErr, ApiResult, Json, Path, Query};
use super::AppState;
use crate::store::{datasets, evals, runs, sweeps, tokens, waiting};
use crate::{dataset, sweep_file};

#[utoipa::path(post, path = "/api/v1/datasets", request_body = DatasetUpload,
    responses((status = 201, body = DatasetInfo), (status = 400, body = protocol::ApiError), (status = 409, body = protocol::ApiError)), tag = "datasets")]
pub async fn import_dataset(
    State(state): State<AppState>,
    Json(req): Json<DatasetUpload>,
) -> ApiResult<(StatusCode, Json<DatasetInfo>)> {
    sweep_file::validate_name(&req.name).map_err(|e| ApiErr::bad_request(format!("dataset name: {e}")))?;
    dataset::validate(&req.instances).map_err(|e| ApiErr::bad_request(e.to_string()))?;
    let info = datasets::import(&state.pool, &req.name, req.source.as_deref(), &req.instances).await?;
    tracing::info!(dataset = %info.name, instances = info.instances, "dataset imported");
    Ok((StatusCode::CREATED, Json(info)))
}

#[utoipa::path(get, path = "/api/v1/datasets", responses((status = 200, body = Vec<DatasetInfo>)), tag = "datasets")]
pub async fn list_datasets(State(state): State<AppState>) -> ApiResult<Json<Vec<DatasetInfo>>> {
    Ok(Json(datasets::list(&state.pool).await?))
}

#[utoipa::path(get, path = "/api/v1/datasets/{name}", params(("name" = String, Path)),
    responses((status = 200, body = DatasetInfo), (status = 404, body = protocol::ApiError)), tag = "datasets")]
pub async fn get_dataset(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<DatasetInfo>> {
    Ok(Json(datasets::get(&state.pool, &name).await?))
}

#[utoipa::path(post, path = "/api/v1/sweeps", request_body = SubmitSweep,
    responses((status = 201, body = SweepSubmitted), (status = 200, body = SweepSubmitted, description = "the same sweep existed already"),
              (status = 400, body = protocol::ApiError)), tag = "sweeps")]
pub async fn submit_sweep(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<SubmitSweep>,
) -> ApiResult<(StatusCode, Json<SweepSubmitted>)> {
    let (file, text) = parse_sweep_file(req).await?;
    let max_runs = state.limits.max_runs_per_sweep;
    let mut submitted = sweeps::submit_as(&state.pool, &file, &text, Some(caller.token_id), max_runs).await?;
    let key_envs = waiting::key_envs_of(&file);
    submitted.warnings = waiting::key_env_warnings(&state.pool, &key_envs, state.live_window()).await?;
    let status = if submitted.created { StatusCode::CREATED } else { StatusCode::OK };
    tracing::info!(sweep_id = submitted.sweep_id, name = %submitted.name, runs = submitted.runs, created = submitted.created, "sweep submitted");
    Ok((status, Json(submitted)))
}

/// The submitted sweep file, parsed (400 with file, line and key path when it is bad), and its text.
async fn parse_sweep_file(req: SubmitSweep) -> ApiResult<(sweep_file::SweepFile, String)> {
    let file_name = req.file_name.unwrap_or_else(|| "sweep.toml".into());
    // Parsing renders the templates once (a bounded amount of work, but not an await point's
    // worth): off the async runtime, so one submit never holds up other requests.
    let text = req.config_toml;
    let (file, text) = tokio::task::spawn_blocking(move || {
        let parsed = sweep_file::parse(&text, &file_name);
        (parsed, text)
    })
    .await
    .map_err(|e| ApiErr::new(protocol::ErrorCode::Internal, format!("checking the sweep file: {e}")))?;
    let file = file.map_err(|e| ApiErr::bad_request(e.to_string()))?;
    Ok((file, text))
}

#[utoipa::path(post, path = "/api/v1/sweep-validations", request_body = SubmitSweep,
    responses((status = 200, body = protocol::SweepValidation, description = "the file is valid; what it would submit (nothing is written)"),
              (status = 400, body = protocol::ApiError), (status = 404, body = protocol::ApiError, description = "its dataset is not imported"),
              (status = 409, body = protocol::ApiError, description = "its name is taken by another configuration")), tag = "sweeps")]
pub async fn validate_sweep(
    State(state): State<AppState>,
    Json(req): Json<SubmitSweep>,
) -> ApiResult<Json<protocol::SweepValidation>> {
    let (file, _) = parse_sweep_file(req).await?;
    let max_runs = state.limits.max_runs_per_sweep;
    let mut checked = sweeps::validate(&state.pool, &file, max_runs, state.live_window()).await?;
    let key_envs = waiting::key_envs_of(&file);
    checked.warnings = waiting::key_env_warnings(&state.pool, &key_envs, state.live_window()).await?;
    Ok(Json(checked))
}

#[utoipa::path(delete, path = "/api/v1/sweeps/{sweep}", params(("sweep" = String, Path, description = "id or name")),
    responses((status = 200, body = protocol::Deleted), (status = 403, body = protocol::ApiError, description = "another user's sweep"),
              (status = 404, body = protocol::ApiError), (status = 409, body = protocol::ApiError, description = "a run of it is running")), tag = "sweeps")]
pub async fn delete_sweep(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> ApiResult<Json<protocol::Deleted>> {
    let id = changeable(&state, caller, &key, "delete").await?;
    let deleted = sweeps::delete(&state.pool, id).await?;
    tracing::info!(sweep_id = id, name = %deleted.name, runs = deleted.runs, "sweep deleted");
    Ok(Json(deleted))
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
pub struct DeleteDataset {
    /// Delete the sweeps (and evaluations) that use the dataset too; without it, a dataset in
    /// use is refused.
    #[serde(default)]
    pub with_sweeps: bool,
}

#[utoipa::path(delete, path = "/api/v1/datasets/{name}", params(("name" = String, Path), DeleteDataset),
    responses((status = 200, body = protocol::Deleted), (status = 404, body = protocol::ApiError),
              (status = 409, body = protocol::ApiError, description = "sweeps use it, or a run of one is running")), tag = "datasets")]
pub async fn delete_dataset(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(opts): Query<DeleteDataset>,
) -> ApiResult<Json<protocol::Deleted>> {
    let deleted = datasets::delete(&state.pool, &name, opts.with_sweeps).await?;
    tracing::info!(dataset = %name, sweeps = deleted.sweeps.len(), runs = deleted.runs, "dataset deleted");
    Ok(Json(deleted))
}

#[utoipa::path(get, path = "/api/v1/sweeps", responses((status = 200, body = Vec<SweepStatus>)), tag = "sweeps")]
pub async fn list_sweeps(State(state): State<AppState>) -> ApiResult<Json<Vec<SweepStatus>>> {
    Ok(Json(sweeps::list(&state.pool).await?))
}

#[utoipa::path(get, path = "/api/v1/sweeps/{sweep}", params(("sweep" = String, Path, description = "id or name")),
    responses((status = 200, body = SweepStatus), (status = 404, body = protocol::ApiError)), tag = "sweeps")]
pub async fn sweep_status(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<Json<SweepStatus>> {
    let id = sweeps::resolve(&state.pool, &key).await?;
    let mut status = sweeps::status(&state.pool, id).await?;
    status.waiting = waiting::waiting_runs(&state.pool, id, state.live_window()).await?;
    Ok(Json(status))
}

#[utoipa::path(post, path = "/api/v1/sweeps/{sweep}/cancel", params(("sweep" = String, Path)),
    responses((status = 200, body = SweepStatus), (status = 403, body = protocol::ApiError, description = "another user's sweep"),
              (status = 404, body = protocol::ApiError), (status = 409, body = protocol::ApiError)), tag = "sweeps")]
pub async fn cancel_sweep(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> ApiResult<Json<SweepStatus>> {
    let id = changeable(&state, caller, &key, "cancel").await?;
    Ok(Json(sweeps::cancel(&state.pool, id).await?))
}

#[utoipa::path(post, path = "/api/v1/sweeps/{sweep}/pause", params(("sweep" = String, Path)),
    responses((status = 200, body = SweepStatus), (status = 403, body = protocol::ApiError, description = "another user's sweep"),
              (status = 404, body = protocol::ApiError), (status = 409, body = protocol::ApiError)), tag = "sweeps")]
pub async fn pause_sweep(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> ApiResult<Json<SweepStatus>> {
    let id = changeable(&state, caller, &key, "pause").await?;
    Ok(Json(sweeps::pause(&state.pool, id).await?))
}

#[derive(Debug, Default, serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct ResumeSweep {
    /// A new budget in dollars (needed when the old one is spent).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub budget_usd: Option<Decimal>,
}

#[utoipa::path(post, path = "/api/v1/sweeps/{sweep}/resume", params(("sweep" = String, Path)), request_body = ResumeSweep,
    responses((status = 200, body = SweepStatus), (status = 403, body = protocol::ApiError, description = "another user's sweep"),
              (status = 404, body = protocol::ApiError), (status = 409, body = protocol::ApiError)), tag = "sweeps")]
pub async fn resume_sweep(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    Json(req): Json<ResumeSweep>,
) -> ApiResult<Json<SweepStatus>> {
    let id = changeable(&state, caller, &key, "resume").await?;
    Ok(Json(sweeps::resume(&state.pool, id, req.budget_usd).await?))
}

#[utoipa::path(get, path = "/api/v1/sweeps/{sweep}/runs", params(("sweep" = String, Path), runs::RunFilter),
    responses((status = 200, body = Vec<RunInfo>), (status = 400, body = protocol::ApiError), (status = 404, body = protocol::ApiError)), tag = "runs")]
pub async fn sweep_runs(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(filter): Query<runs::RunFilter>,
) -> ApiResult<Json<Vec<RunInfo>>> {
    let id = sweeps::resolve(&state.pool, &key).await?;
    Ok(Json(runs::list(&state.pool, id, &filter).await?))
}

#[utoipa::path(get, path = "/api/v1/runs/{run_id}", params(("run_id" = i64, Path)),
    responses((status = 200, body = RunInfo), (status = 404, body = protocol::ApiError)), tag = "runs")]
pub async fn get_run(State(state): State<AppState>, Path(run_id): Path<i64>) -> ApiResult<Json<RunInfo>> {
    Ok(Json(runs::get(&state.pool, run_id).await?))
}

#[utoipa::path(get, path = "/api/v1/runs/{run_id}/trajectory", params(("run_id" = i64, Path)),
    responses((status = 200, description = "The run's trajectory in mini-swe-agent's format (see crate::export)", body = Object),
              (status = 404, body = protocol::ApiError)), tag = "runs")]
pub async fn get_trajectory(
    State(state): State<AppState>,
    Path(run_id): Path<i64>,
) -> ApiResult<Json<serde_json::Value>> {
    let record = runs::trajectory(&state.pool, run_id).await?;
    Ok(Json(crate::export::mini_swe_agent(&record)))
}

#[utoipa::path(get, path = "/api/v1/runs/{run_id}/record", params(("run_id" = i64, Path)),
    responses((status = 200, body = Trajectory), (status = 404, body = protocol::ApiError)), tag = "runs")]
pub async fn get_record(
    State(state): State<AppState>,
    Path(run_id): Path<i64>,
) -> ApiResult<Json<Trajectory>> {
    Ok(Json(runs::trajectory(&state.pool, run_id).await?))
}

#[utoipa::path(post, path = "/api/v1/tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken)), tag = "tokens")]
pub async fn create_token(
    State(state): State<AppState>,
    Json(req): Json<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    if req.name.trim().is_empty() {
        return Err(ApiErr::bad_request("token name must not be empty"));
    }
    Ok((StatusCode::CREATED, Json(tokens::create(&state.pool, &req.name, req.role).await?)))
}

#[utoipa::path(get, path = "/api/v1/tokens", responses((status = 200, body = Vec<tokens::TokenInfo>)), tag = "tokens")]
pub async fn list_tokens(State(state): State<AppState>) -> ApiResult<Json<Vec<tokens::TokenInfo>>> {
    Ok(Json(tokens::list(&state.pool).await?))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = protocol::ApiError)), tag = "tokens")]
pub async fn revoke_token(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    tokens::revoke(&state.pool, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/datasets/{name}/instances", params(("name" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "instance ids, sorted"), (status = 404, body = protocol::ApiError)), tag = "datasets")]
pub async fn dataset_instances(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    let info = datasets::get(&state.pool, &name).await?;
    let keys = datasets::instance_keys(&state.pool, info.id).await?;
    Ok(Json(keys.into_iter().map(|k| k.instance_id).collect()))
}

#[utoipa::path(post, path = "/api/v1/evals", request_body = evals::EvalRequest,
    responses((status = 201, body = SweepSubmitted), (status = 200, body = SweepSubmitted, description = "the same evaluation existed already"),
              (status = 400, body = protocol::ApiError)), tag = "evals")]
pub async fn submit_eval(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<evals::EvalRequest>,
) -> ApiResult<(StatusCode, Json<SweepSubmitted>)> {
    let submitted = evals::submit_as(&state.pool, &req, Some(caller.token_id)).await?;
    let status = if submitted.created { StatusCode::CREATED } else { StatusCode::OK };
    tracing::info!(sweep_id = submitted.sweep_id, run_id = %submitted.name, runs = submitted.runs, "evaluation submitted");
    Ok((status, Json(submitted)))
}

#[utoipa::path(get, path = "/api/v1/sweeps/{sweep}/evaluations", params(("sweep" = String, Path)),
    responses((status = 200, body = Vec<evals::EvalResult>), (status = 404, body = protocol::ApiError)), tag = "evals")]
pub async fn sweep_evaluations(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<Json<Vec<evals::EvalResult>>> {
    let id = sweeps::resolve(&state.pool, &key).await?;
    Ok(Json(evals::results(&state.pool, id).await?))
}

#[utoipa::path(get, path = "/api/v1/sweeps/{sweep}/images", params(("sweep" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "the images of the sweep's unfinished runs, sorted"),
              (status = 404, body = protocol::ApiError)), tag = "sweeps")]
pub async fn sweep_images(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    let id = sweeps::resolve(&state.pool, &key).await?;
    Ok(Json(sweeps::images(&state.pool, id).await?))
}

#[utoipa::path(get, path = "/api/v1/sweeps/{sweep}/held-images", params(("sweep" = String, Path)),
    responses((status = 200, body = Vec<String>, description = "the instance images of an evaluation's dataset (of another sweep: of its runs) that live workers hold, sorted"),
              (status = 404, body = protocol::ApiError)), tag = "sweeps")]
pub async fn sweep_held_images(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    let id = sweeps::resolve(&state.pool, &key).await?;
    Ok(Json(evals::held_images(&state.pool, id, state.live_window()).await?))
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
pub struct WorkerFilter {
    /// Only workers heard from within this many seconds (a finite number, 0 or more).
    pub alive_within_s: Option<f64>,
}

#[utoipa::path(get, path = "/api/v1/workers", params(WorkerFilter),
    responses((status = 200, body = Vec<protocol::WorkerInfo>), (status = 400, body = protocol::ApiError)), tag = "workers")]
pub async fn list_workers(
    State(state): State<AppState>,
    Query(filter): Query<WorkerFilter>,
) -> ApiResult<Json<Vec<protocol::WorkerInfo>>> {
    // `NaN`, `inf` and `1e400` parse as floats; Postgres refuses them as an interval.
    if let Some(s) = filter.alive_within_s.filter(|s| !(s.is_finite() && *s >= 0.0)) {
        return Err(ApiErr::bad_request(format!(
            "alive_within_s: expected a finite number of seconds, 0 or more, got {s}"
        )));
    }
    Ok(Json(crate::store::workers::list(&state.pool, filter.alive_within_s).await?))
}

/// The sweep `key` names, if `caller` may change it (pause, resume, cancel, re-budget, delete): its
/// owner (any token under the name of the token that submitted it) and admins may. Anyone else
/// gets 403 `forbidden`, before anything is changed. A missing sweep is 404 for everyone.
async fn changeable(state: &AppState, caller: Caller, key: &str, action: &str) -> ApiResult<i64> {
    let id = sweeps::resolve(&state.pool, key).await?;
    if caller.role == Role::Admin {
        return Ok(id);
    }
    let own = sweeps::ownership(&state.pool, id, caller.token_id).await?;
    if own.asker_owns {
        return Ok(id);
    }
    let sweep = &own.sweep;
    Err(ApiErr::forbidden(match own.owner {
        Some(owner) => {
            format!(
                "sweep `{sweep}` (id {id}) belongs to `{owner}`: only its owner or an admin may {action} it"
            )
        }
        None => format!("sweep `{sweep}` (id {id}) has no recorded owner: only an admin may {action} it"),
    }))
}
