//! Connecting to Postgres, applying migrations, and mapping database errors to what the caller
//! should do about them.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// The migrations in `migrations/`, embedded in the binary so the coordinator applies them at
/// start with nothing else installed.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (duplicate name, wrong state, ...).
    #[error("{0}")]
    Conflict(String),
    /// A lease-fenced write carried a token that is no longer the run's lease: the caller must
    /// stop working on that run and write nothing more for it.
    #[error("{0}")]
    LeaseLost(String),
    /// The caller may not do this (a worker token acting for a worker, or on a run held by a
    /// worker, that another token registered); nothing was changed and resending fails again.
    #[error("{0}")]
    Forbidden(String),
    /// The request itself is wrong; resending it unchanged will fail again.
    #[error("{0}")]
    Invalid(String),
    /// The database could not be reached or timed out: try again later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else the database said; a bug or a broken invariant.
    #[error("database error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => Error::NotFound("no such row".into()),
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => Error::Unavailable(e.to_string()),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // unique_violation, exclusion_violation
                Some("23505") | Some("23P01") => Error::Conflict(db.message().to_string()),
                // admin shutdown, crash shutdown, cannot connect now, serialization/deadlock
                Some(c) if c.starts_with("57P") || c.starts_with("08") || c == "40001" || c == "40P01" => {
                    Error::Unavailable(db.message().to_string())
                }
                _ => Error::Internal(db.to_string()),
            },
            _ => Error::Internal(e.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Opens a pool and applies pending migrations.
pub async fn connect(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    use anyhow::Context;
    let options: PgConnectOptions = database_url
        .parse::<PgConnectOptions>()
        .context("DATABASE_URL is not a valid postgres:// URL")?
        // The queue's statements are index-driven and run thousands of times a second: plan
        // them once per connection instead of re-planning each execution.
        .options([("plan_cache_mode", "force_generic_plan")]);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to Postgres at {}", redact_url(database_url)))?;
    MIGRATOR.run(&pool).await.context("applying database migrations")?;
    Ok(pool)
}

/// A database URL with its password replaced, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_password() {
        let r = redact_url("postgres://steer:s3cret@127.0.0.1:5432/steerbench");
        assert!(!r.contains("s3cret"), "{r}");
        assert!(r.contains("***"));
    }
}
