//! `steer bench ...`: benchmarks that time what a user waits for, through the real coordinator,
//! queue, sandbox and agent loop. Each prints one JSON object with `--json`; its keys are a
//! contract (BENCHMARKS.md lists them with the figures measured).

pub mod agent;
pub mod critic;
pub mod docker;
pub mod fleet;
pub mod queue;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;

/// `percentile` of values in any order (sorted in place first).
pub(crate) fn percentile_of(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(values, q)
}

/// The value at rank round((n - 1) x q) of sorted values (0 for none).
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx]
}

/// A database created for one benchmark on the server of `database_url`, dropped afterwards.
pub(crate) struct ScratchDb {
    admin: PgConnectOptions,
    pub(crate) options: PgConnectOptions,
    name: String,
}

impl ScratchDb {
    pub(crate) async fn create(database_url: &str) -> anyhow::Result<Self> {
        let admin: PgConnectOptions =
            database_url.parse().context("DATABASE_URL is not a valid postgres:// URL")?;
        let name = format!("steer_bench_{}_{}", std::process::id(), rand::random::<u32>());
        let mut conn = admin.connect().await.context("connecting to DATABASE_URL")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .context("creating the benchmark's scratch database (the role needs CREATEDB)")?;
        let options = admin.clone().database(&name);
        Ok(ScratchDb { admin, options, name })
    }

    pub(crate) async fn drop_db(self) -> anyhow::Result<()> {
        let mut conn = self.admin.connect().await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .execute(&mut conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentile_picks_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
