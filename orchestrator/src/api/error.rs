//! The API's one error type: a small closed set of codes, JSON body `{code, message}` (and
//! `retry_after_ms` when the coordinator is overloaded).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::{ApiError, ErrorCode};

use crate::db;

#[derive(Debug)]
pub struct ApiErr {
    pub code: ErrorCode,
    pub message: String,
    /// With `Overloaded`: when to ask again.
    pub retry_after: Option<std::time::Duration>,
}

impl ApiErr {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiErr { code, message: message.into(), retry_after: None }
    }
    /// The coordinator is too busy to take this request now: the client should ask again
    /// after `retry_after` (it adds jitter).
    pub fn overloaded(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        ApiErr { code: ErrorCode::Overloaded, message: message.into(), retry_after: Some(retry_after) }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// The HTTP status of the answer: the code's.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).expect("every error code has a valid HTTP status")
    }
}

impl From<db::Error> for ApiErr {
    fn from(e: db::Error) -> Self {
        let message = e.to_string();
        match e {
            db::Error::NotFound(_) => ApiErr::not_found(message),
            db::Error::Conflict(_) => ApiErr::new(ErrorCode::Conflict, message),
            db::Error::LeaseLost(_) => ApiErr::new(ErrorCode::LeaseLost, message),
            db::Error::Forbidden(_) => ApiErr::forbidden(message),
            db::Error::Invalid(_) => ApiErr::bad_request(message),
            db::Error::Unavailable(_) => ApiErr::new(ErrorCode::Unavailable, message),
            db::Error::Internal(_) => {
                tracing::error!(error = %message, "internal error");
                ApiErr::new(ErrorCode::Internal, message)
            }
        }
    }
}

impl From<JsonRejection> for ApiErr {
    fn from(r: JsonRejection) -> Self {
        // axum answers 415/422 for some bodies; our API promises 400 for every bad body (with
        // body_text() saying which field and where, e.g. "missing field `slots` at line 1
        // column 20"), and 413 for an oversized one.
        let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::PayloadTooLarge
        } else {
            ErrorCode::BadRequest
        };
        ApiErr::new(code, r.body_text())
    }
}

impl From<PathRejection> for ApiErr {
    fn from(r: PathRejection) -> Self {
        ApiErr::bad_request(r.body_text())
    }
}

impl From<QueryRejection> for ApiErr {
    fn from(r: QueryRejection) -> Self {
        ApiErr::bad_request(r.body_text())
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after_ms = self.retry_after.map(|d| d.as_millis() as u64);
        let body = ApiError { code: self.code, message: self.message, retry_after_ms };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(ms) = retry_after_ms {
            // The header counts whole seconds; the body keeps the precise figure.
            let secs = ms.div_ceil(1000).max(1);
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiErr>;

/// `axum::Json` whose rejections are `ApiErr`s.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiErr))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose rejections are `ApiErr`s.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiErr))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` whose rejections are `ApiErr`s.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiErr))]
pub struct Query<T>(pub T);
