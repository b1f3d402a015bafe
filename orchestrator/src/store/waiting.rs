//! Why queued runs may have no worker to take them: what `sweep status` and a submit's warnings
//! say. Today: a model API key variable (`api_key_env`) that no live worker's allow-list
//! allows (the claim never hands such a run out, see `migrations/*_key_envs.sql`).

use std::time::Duration;

use protocol::WaitingRuns;

use crate::sweep_file::SweepFile;
use sqlx::PgPool;

use crate::db::Result;

/// Every variable the sweep's agents and critics read API keys from, each once, sorted.
pub fn key_envs_of(file: &SweepFile) -> Vec<String> {
    let vars = file.agents.iter().filter_map(|a| a.api_key_env.as_deref());
    let vars = vars.chain(file.critics.iter().filter_map(|c| c.api_key_env()));
    let mut vars: Vec<String> = vars.map(str::to_string).collect();
    vars.sort();
    vars.dedup();
    vars
}

/// Those of `vars` that no worker heard from within `live_within` (and not draining) allows.
pub async fn unallowed_key_envs(
    pool: &PgPool,
    vars: &[String],
    live_within: Duration,
) -> Result<Vec<String>> {
    if vars.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "SELECT v FROM unnest($1::text[]) v
         WHERE NOT EXISTS (SELECT 1 FROM workers w
                           WHERE w.last_heartbeat > now() - make_interval(secs => $2) AND NOT w.draining
                             AND key_env_allowed(w.capabilities -> 'key_envs', v))
         ORDER BY v",
    )
    .bind(vars)
    .bind(live_within.as_secs_f64())
    .fetch_all(pool)
    .await?)
}

/// A submit's warning for each of `vars` that no live worker allows: the sweep is accepted
/// (workers may join later), but its runs reading the variable wait until one does.
pub async fn key_env_warnings(pool: &PgPool, vars: &[String], live_within: Duration) -> Result<Vec<String>> {
    Ok(unallowed_key_envs(pool, vars, live_within).await?.iter().map(|var| unallowed_reason(var)).collect())
}

fn unallowed_reason(var: &str) -> String {
    format!(
        "no live worker allows the API key variable `{var}`: runs reading it wait until a worker started \
         with `--allow-key-env {var}` (or a prefix of it ending in `*`) joins"
    )
}

/// The sweep's queued runs that wait for a variable no live worker allows, counted per
/// variable (a run reading two such variables counts under each).
pub async fn waiting_runs(pool: &PgPool, sweep_id: i64, live_within: Duration) -> Result<Vec<WaitingRuns>> {
    // The variables come from the sweep's few agents and critics, so the runs are scanned only
    // when some variable is unallowed.
    let vars: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT v FROM (
             SELECT a.spec ->> 'api_key_env' AS v FROM agents a WHERE a.sweep_id = $1
             UNION SELECT c.spec -> 'params' -> 'remote' ->> 'api_key_env' FROM critics c WHERE c.sweep_id = $1
         ) k WHERE v IS NOT NULL",
    )
    .bind(sweep_id)
    .fetch_all(pool)
    .await?;
    let unallowed = unallowed_key_envs(pool, &vars, live_within).await?;
    let mut out = Vec::new();
    for var in unallowed {
        let runs: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE sweep_id = $1 AND state = 'queued' AND $2 = ANY(key_envs)",
        )
        .bind(sweep_id)
        .bind(&var)
        .fetch_one(pool)
        .await?;
        if runs > 0 {
            out.push(WaitingRuns { runs, reason: unallowed_reason(&var) });
        }
    }
    Ok(out)
}
