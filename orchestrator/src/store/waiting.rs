//! Why queued runs may have no worker to take them: what `sweep status`, `--wait`, `eval`, the
//! UI and a submit's warnings say. Two reasons are known: no live worker runs the sweep's
//! executor kind (an `agent` sweep with only placeholder workers, say), and a model API key
//! variable (`api_key_env`) that no live worker's allow-list allows (the claim never hands
//! such a run out, see `migrations/*_key_envs.sql`).

use std::time::Duration;

use protocol::{ExecutorKind, WaitingRuns};

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

/// Why the sweep's queued runs cannot start: no live worker runs its executor kind, or reads
/// a key variable it names (counted per variable: a run reading two counts under each).
pub async fn waiting_runs(pool: &PgPool, sweep_id: i64, live_within: Duration) -> Result<Vec<WaitingRuns>> {
    let mut out = unserved_kind(pool, sweep_id, live_within).await?.into_iter().collect::<Vec<_>>();
    out.extend(unallowed_key_runs(pool, sweep_id, live_within).await?);
    Ok(out)
}

/// The sweep's queued runs when no live worker runs the sweep's executor kind.
async fn unserved_kind(pool: &PgPool, sweep_id: i64, live_within: Duration) -> Result<Option<WaitingRuns>> {
    let kind: Option<String> =
        sqlx::query_scalar("SELECT spec -> 'executor' ->> 'kind' FROM sweeps WHERE id = $1")
            .bind(sweep_id)
            .fetch_optional(pool)
            .await?
            .flatten();
    let Some(kind) = kind.and_then(|k| k.parse::<ExecutorKind>().ok()) else { return Ok(None) };
    let live: Vec<(String, serde_json::Value, Option<String>)> = sqlx::query_as(
        "SELECT name, capabilities, degraded FROM workers
         WHERE last_heartbeat > now() - make_interval(secs => $1) AND NOT draining ORDER BY name",
    )
    .bind(live_within.as_secs_f64())
    .fetch_all(pool)
    .await?;
    let degraded: Vec<String> =
        live.iter().filter(|(_, _, d)| d.is_some()).map(|(name, _, _)| format!("`{name}`")).collect();
    let kinds_of: Vec<(String, Vec<ExecutorKind>)> = live
        .into_iter()
        .map(|(name, caps, d)| (name, super::workers::usable_executors(&caps, d.is_some())))
        .collect();
    if kinds_of.iter().any(|(_, kinds)| kinds.contains(&kind)) {
        return Ok(None);
    }
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE sweep_id = $1 AND state = 'queued'")
        .bind(sweep_id)
        .fetch_one(pool)
        .await?;
    if runs == 0 {
        return Ok(None);
    }
    let mut reason = unserved_kind_reason(kind, &kinds_of);
    if !degraded.is_empty() {
        reason += &format!(" (the container engine of {} does not answer)", degraded.join(", "));
    }
    Ok(Some(WaitingRuns { runs, reason }))
}

/// "they need a worker that runs `agent` runs ...; the only live worker ... runs `placeholder`
/// runs only".
fn unserved_kind_reason(kind: ExecutorKind, live: &[(String, Vec<ExecutorKind>)]) -> String {
    let engine = if kind.needs_container() { " (with a container engine)" } else { "" };
    let need = format!("they need a worker that runs `{}` runs{engine}", kind.as_str());
    let list = |kinds: &[ExecutorKind]| {
        kinds.iter().map(|k| format!("`{}`", k.as_str())).collect::<Vec<_>>().join(", ")
    };
    match live {
        [] => format!("{need}, and no worker is live (start one with `steer worker`)"),
        [(name, kinds)] => format!("{need}; the only live worker, `{name}`, runs {} runs only", list(kinds)),
        many => {
            let mut all: Vec<ExecutorKind> = many.iter().flat_map(|(_, k)| k.iter().copied()).collect();
            all.sort_by_key(|k| k.as_str());
            all.dedup();
            format!("{need}; the {} live workers run {} runs only", many.len(), list(&all))
        }
    }
}

/// The sweep's queued runs that wait for a variable no live worker allows.
async fn unallowed_key_runs(pool: &PgPool, sweep_id: i64, live_within: Duration) -> Result<Vec<WaitingRuns>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_names_the_kind_needed_and_what_the_live_workers_run() {
        let one = [("gpu-1".to_string(), vec![ExecutorKind::Placeholder])];
        assert_eq!(
            unserved_kind_reason(ExecutorKind::Agent, &one),
            "they need a worker that runs `agent` runs (with a container engine); the only live worker, \
             `gpu-1`, runs `placeholder` runs only"
        );
        assert_eq!(
            unserved_kind_reason(ExecutorKind::Evaluate, &[]),
            "they need a worker that runs `evaluate` runs (with a container engine), and no worker is live \
             (start one with `steer worker`)"
        );
    }
}
