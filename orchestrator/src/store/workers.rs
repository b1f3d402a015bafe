//! The fleet's workers as the coordinator knows them.

use protocol::RegisterWorker;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::Result;

pub async fn register(pool: &PgPool, req: &RegisterWorker) -> Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO workers (id, name, host, slots, capabilities, version) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(&req.name)
    .bind(&req.host)
    .bind(req.slots as i32)
    .bind(&req.capabilities)
    .bind(&req.version)
    .execute(pool)
    .await?;
    Ok(id)
}

/// The executor kinds a registered worker said it can run (None: no such worker). Workers that
/// named none run the placeholder only.
pub async fn executors(pool: &PgPool, id: Uuid) -> Result<Option<Vec<String>>> {
    let caps: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT capabilities FROM workers WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(caps.map(|c| {
        c.get("executors")
            .and_then(|e| serde_json::from_value::<Vec<String>>(e.clone()).ok())
            .unwrap_or_else(|| vec!["placeholder".to_string()])
    }))
}
