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

/// What a registered worker can run and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Holdings {
    /// Executor kinds it registered; workers that named none run the placeholder only.
    pub executors: Vec<String>,
    /// Instance images it last reported holding.
    pub images: Vec<String>,
}

/// None when no such worker is registered.
pub async fn holdings(pool: &PgPool, id: Uuid) -> Result<Option<Holdings>> {
    let row: Option<(serde_json::Value, Vec<String>)> =
        sqlx::query_as("SELECT capabilities, images FROM workers WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(caps, images)| Holdings {
        executors: caps
            .get("executors")
            .and_then(|e| serde_json::from_value::<Vec<String>>(e.clone()).ok())
            .unwrap_or_else(|| vec!["placeholder".to_string()]),
        images,
    }))
}
