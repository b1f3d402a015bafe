//! What `/healthz` and `/metrics` read from Postgres. The queue gauges come from the database
//! at scrape time so that every replica reports the fleet's truth.

use std::time::Duration;

use protocol::RunState;
use rust_decimal::Decimal;
use sqlx::PgPool;

use crate::db::{Error, Result};

/// Whether the database answers.
pub async fn ping(pool: &PgPool) -> Result<()> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// How many runs are in each state; every state is listed, in [`RunState::ALL`] order.
pub async fn runs_by_state(pool: &PgPool) -> Result<Vec<(RunState, i64)>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM runs GROUP BY state").fetch_all(pool).await?;
    let mut counts: Vec<(RunState, i64)> = RunState::ALL.iter().map(|s| (*s, 0)).collect();
    for (state, n) in rows {
        let state: RunState = state.parse().map_err(Error::Internal)?;
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
            slot.1 = n;
        }
    }
    Ok(counts)
}

/// Workers that heartbeated within `within`.
pub async fn workers_alive(pool: &PgPool, within: Duration) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM workers WHERE last_heartbeat > now() - make_interval(secs => $1)",
    )
    .bind(within.as_secs_f64())
    .fetch_one(pool)
    .await?)
}

/// What each sweep in progress (running or paused) has spent, by sweep name. Finished sweeps
/// are left out: as metric label sets they would pile up forever.
pub async fn sweep_spend(pool: &PgPool) -> Result<Vec<(String, Decimal)>> {
    Ok(sqlx::query_as("SELECT name, spent_usd FROM sweeps WHERE state IN ('running', 'paused')")
        .fetch_all(pool)
        .await?)
}

/// A model endpoint whose circuit breaker is open or half-open.
#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    pub base_url: String,
    /// Consecutive outages.
    pub outages: i32,
    /// Seconds until it takes runs again (0 while half-open).
    pub cooldown_s: f64,
}

/// The endpoints whose breaker is not closed.
pub async fn breakers(pool: &PgPool) -> Result<Vec<Breaker>> {
    let rows: Vec<(String, i32, f64)> = sqlx::query_as(
        "SELECT base_url, outage_failures,
                GREATEST(COALESCE(extract(epoch FROM cooldown_until - now()), 0), 0)::float8
         FROM endpoints WHERE outage_failures > 0",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(base_url, outages, cooldown_s)| Breaker { base_url, outages, cooldown_s })
        .collect())
}
