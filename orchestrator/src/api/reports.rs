//! Report routes: a report over sweeps, and a paired comparison of two conditions.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiErr, ApiResult, Query};
use super::AppState;
use crate::report::{self, data, Comparison, Report, ReportOptions};
use crate::store::sweeps;

#[derive(Debug, Deserialize, IntoParams)]
pub struct ReportQuery {
    /// Sweeps (ids or names), comma-separated.
    pub sweeps: String,
    /// Only `selected` is accepted (the rate over every selected run, which every report
    /// gives, with the rate over finished runs beside it); kept so old links fail clearly.
    #[serde(default)]
    pub denominator: Option<String>,
    /// Instances selected (e.g. 500): the default denominator becomes `total` x repeats.
    #[serde(default)]
    pub total: Option<u64>,
}

#[utoipa::path(get, path = "/api/v1/report", params(ReportQuery),
    responses((status = 200, body = Report), (status = 400, body = protocol::ApiError), (status = 404, body = protocol::ApiError)), tag = "reports")]
pub async fn report(State(state): State<AppState>, Query(q): Query<ReportQuery>) -> ApiResult<Json<Report>> {
    let mut ids = Vec::new();
    for key in q.sweeps.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        ids.push(sweeps::resolve(&state.pool, key).await?);
    }
    if ids.is_empty() {
        return Err(ApiErr::bad_request("`sweeps` names no sweep"));
    }
    match q.denominator.as_deref() {
        None | Some("selected") => {}
        Some(other) => {
            return Err(ApiErr::bad_request(format!(
                "`denominator={other}`: reports no longer choose a denominator; each condition gives \
                 `resolve_rate` over every selected run and `resolve_rate_finished` over finished runs"
            )))
        }
    }
    let rows = data::load(&state.pool, &ids).await?;
    let options = ReportOptions { total: q.total };
    Ok(Json(report::build(&rows, &options)))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct CompareQuery {
    /// `SWEEP:AGENT/CRITIC`, or `SWEEP:CRITIC` when the sweep has one agent.
    pub a: String,
    pub b: String,
}

#[utoipa::path(get, path = "/api/v1/compare", params(CompareQuery),
    responses((status = 200, body = Comparison), (status = 400, body = protocol::ApiError), (status = 404, body = protocol::ApiError)), tag = "reports")]
pub async fn compare(
    State(state): State<AppState>,
    Query(q): Query<CompareQuery>,
) -> ApiResult<Json<Comparison>> {
    let (a_rows, a_label) = condition_rows(&state, &q.a).await?;
    let (b_rows, b_label) = condition_rows(&state, &q.b).await?;
    let a: Vec<&data::RunRow> = a_rows.iter().collect();
    let b: Vec<&data::RunRow> = b_rows.iter().collect();
    Ok(Json(report::compare(&a_label, &a, &b_label, &b)))
}

/// The runs of `SWEEP:AGENT/CRITIC` (or `SWEEP:CRITIC`), and its full label.
async fn condition_rows(state: &AppState, spec: &str) -> ApiResult<(Vec<data::RunRow>, String)> {
    let (sweep, condition) = spec.split_once(':').ok_or_else(|| {
        ApiErr::bad_request(format!("`{spec}`: expected SWEEP:AGENT/CRITIC or SWEEP:CRITIC"))
    })?;
    let id = sweeps::resolve(&state.pool, sweep).await?;
    let rows = data::load(&state.pool, &[id]).await?;
    let (agent, critic) = match condition.split_once('/') {
        Some((a, c)) => (Some(a.to_string()), c.to_string()),
        None => (None, condition.to_string()),
    };
    let mut agents: Vec<&str> =
        rows.iter().filter(|r| r.critic == critic).map(|r| r.agent.as_str()).collect();
    agents.dedup();
    let agent = match agent {
        Some(a) => a,
        None if agents.len() == 1 => agents[0].to_string(),
        None if agents.is_empty() => {
            return Err(ApiErr::bad_request(format!(
                "`{spec}`: sweep `{sweep}` has no critic condition `{critic}`"
            )))
        }
        None => {
            return Err(ApiErr::bad_request(format!(
                "`{spec}`: sweep `{sweep}` runs several agents ({}); say which: {sweep}:AGENT/{critic}",
                agents.join(", ")
            )))
        }
    };
    let label = format!("{sweep}:{agent}/{critic}");
    let picked: Vec<data::RunRow> =
        rows.into_iter().filter(|r| r.agent == agent && r.critic == critic).collect();
    if picked.is_empty() {
        return Err(ApiErr::bad_request(format!("`{spec}`: no runs of {agent}/{critic} in sweep `{sweep}`")));
    }
    Ok((picked, label))
}

/// The same report as `GET /report`, as the self-contained HTML page `steer report --format
/// html` writes (the web UI's sweep page opens it).
#[utoipa::path(get, path = "/api/v1/report/html", params(ReportQuery),
    responses((status = 200, description = "text/html: the report page"), (status = 400, body = protocol::ApiError), (status = 404, body = protocol::ApiError)), tag = "reports")]
pub async fn report_html(
    state: State<AppState>,
    query: Query<ReportQuery>,
) -> ApiResult<([(axum::http::HeaderName, &'static str); 1], String)> {
    let Json(built) = report(state, query).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")], report::html::render(&built)))
}
