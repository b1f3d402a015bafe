//! Bearer-token authentication and role checks.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use protocol::Role;

use super::error::ApiErr;
use super::AppState;
use crate::store::tokens;

/// Who is calling, put into request extensions by [`require`].
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub token_id: i64,
    pub role: Role,
}

/// Middleware: the request must carry a live token whose role is in `allowed` (admin always is).
/// Lets a request reach `/metrics` only with `Authorization: Bearer <metrics token>` when the
/// coordinator has one (401 otherwise); without one, `/metrics` is open.
pub async fn require_metrics_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.metrics_token {
        let presented = req.headers().get(AUTHORIZATION).and_then(|h| h.to_str().ok());
        if !protocol::bearer_matches(presented, token) {
            return ApiErr::unauthorized("/metrics needs `Authorization: Bearer <metrics token>`")
                .into_response();
        }
    }
    next.run(req).await
}

pub async fn require(
    State((state, allowed)): State<(AppState, &'static [Role])>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiErr> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiErr::unauthorized("missing `Authorization: Bearer <token>` header"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiErr::unauthorized("the Authorization header must be `Bearer <token>`"))?;
    let (token_id, role) = tokens::verify(&state.pool, token)
        .await?
        .ok_or_else(|| ApiErr::unauthorized("unknown or revoked token"))?;
    if role != Role::Admin && !allowed.contains(&role) {
        let wanted: Vec<&str> = allowed.iter().map(|r| r.as_str()).chain(["admin"]).collect();
        return Err(ApiErr::forbidden(format!(
            "a `{}` token cannot use this route (needs: {})",
            role.as_str(),
            wanted.join(" or ")
        )));
    }
    req.extensions_mut().insert(Caller { token_id, role });
    Ok(next.run(req).await)
}
