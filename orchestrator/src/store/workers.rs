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

pub async fn exists(pool: &PgPool, id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM workers WHERE id = $1)")
        .bind(id)
        .fetch_one(pool)
        .await?)
}
