//! The fleet's workers as the coordinator knows them.

use protocol::{ExecutorKind, RegisterWorker, WorkerInfo};
use sqlx::PgPool;
use sqlx::Row;
use uuid::Uuid;

use crate::db::Result;

/// Registers a worker bound to the API token `token_id`: only that token may act for it.
pub async fn register(pool: &PgPool, token_id: i64, req: &RegisterWorker) -> Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO workers (id, name, host, slots, capabilities, version, token_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(&req.name)
    .bind(&req.host)
    .bind(req.slots as i32)
    .bind(sqlx::types::Json(&req.capabilities))
    .bind(&req.version)
    .bind(token_id)
    .execute(pool)
    .await?;
    Ok(id)
}

/// What a registered worker can run and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Holdings {
    /// Executor kinds it registered; workers that named none run the placeholder only.
    pub executors: Vec<ExecutorKind>,
    /// Instance images it last reported holding.
    pub images: Vec<String>,
    /// The API token that registered it (None: registered without one, e.g. by a test).
    pub token_id: Option<i64>,
    /// The API-key variables it allows (`capabilities.key_envs`), as registered.
    pub key_envs: Option<serde_json::Value>,
    /// It drains or stopped: it is leased nothing.
    pub draining: bool,
}

/// None when no such worker is registered.
pub async fn holdings(pool: &PgPool, id: Uuid) -> Result<Option<Holdings>> {
    let row = sqlx::query(
        "SELECT capabilities, capabilities -> 'key_envs' AS key_envs, images, token_id, degraded, draining
         FROM workers WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Holdings {
        executors: usable_executors(&r.get("capabilities"), r.get::<Option<String>, _>("degraded").is_some()),
        images: r.get("images"),
        token_id: r.get("token_id"),
        key_envs: r.get("key_envs"),
        draining: r.get("draining"),
    }))
}

/// The kinds a worker can run now: those it registered, less the container kinds while it is
/// degraded (its engine does not answer).
pub(crate) fn usable_executors(capabilities: &serde_json::Value, degraded: bool) -> Vec<ExecutorKind> {
    let mut kinds = executors_of(capabilities);
    if degraded {
        kinds.retain(|k| !k.needs_container());
    }
    kinds
}

/// How many workers were heard from within `within`, and the instance images they hold
/// between them (as they last reported).
pub async fn live_images(
    pool: &PgPool,
    within: std::time::Duration,
) -> Result<(i64, std::collections::HashSet<String>)> {
    let (workers, images): (i64, Vec<String>) = sqlx::query_as(
        "SELECT count(DISTINCT w.id), COALESCE(array_agg(DISTINCT i) FILTER (WHERE i IS NOT NULL), '{}')
         FROM workers w LEFT JOIN LATERAL unnest(w.images) AS i ON true
         WHERE w.last_heartbeat > now() - make_interval(secs => $1)",
    )
    .bind(within.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok((workers, images.into_iter().collect()))
}

/// Every registered worker, most recently heard from first; `alive_within_s` drops workers not
/// heard from for that long (None: all).
pub async fn list(pool: &PgPool, alive_within_s: Option<f64>) -> Result<Vec<WorkerInfo>> {
    let rows = sqlx::query(
        "SELECT w.id, w.name, w.host, w.slots, w.capabilities, cardinality(w.images)::bigint AS images,
                w.draining, w.status, w.degraded, w.registered_at, w.last_heartbeat,
                (SELECT count(*) FROM runs r WHERE r.state = 'running' AND r.lease_owner = w.id) AS running
         FROM workers w
         WHERE $1::double precision IS NULL OR w.last_heartbeat > now() - make_interval(secs => $1)
         ORDER BY w.last_heartbeat DESC",
    )
    .bind(alive_within_s)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let caps: serde_json::Value = r.get("capabilities");
            WorkerInfo {
                id: r.get("id"),
                name: r.get("name"),
                host: r.get("host"),
                slots: r.get("slots"),
                executors: executors_of(&caps),
                key_envs: key_envs_of(&caps),
                degraded: r.get("degraded"),
                images: r.get("images"),
                slurm: caps.get("slurm").and_then(|job| serde_json::from_value(job.clone()).ok()),
                running: r.get("running"),
                draining: r.get("draining"),
                status: r.get("status"),
                registered_at: r.get("registered_at"),
                last_heartbeat: r.get("last_heartbeat"),
            }
        })
        .collect())
}

/// The allow-list a worker registered (validated at registration).
fn key_envs_of(capabilities: &serde_json::Value) -> Vec<String> {
    let entries = capabilities.get("key_envs").and_then(serde_json::Value::as_array);
    entries.into_iter().flatten().filter_map(|e| e.as_str().map(str::to_string)).collect()
}

/// The executor kinds in a worker's registered capabilities; none named: the placeholder only.
/// Kinds this coordinator does not know (a newer worker's) are left out: no run asks for them.
pub(crate) fn executors_of(capabilities: &serde_json::Value) -> Vec<ExecutorKind> {
    match capabilities.get("executors").and_then(serde_json::Value::as_array) {
        Some(kinds) => kinds.iter().filter_map(|k| k.as_str()?.parse().ok()).collect(),
        None => vec![ExecutorKind::Placeholder],
    }
}
