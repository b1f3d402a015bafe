//! API tokens: random bearer secrets, stored only as their SHA-256 hash.
//!
//! Tokens carry 256 bits of randomness, so a fast hash is enough (no password stretching is
//! needed against guessing), and lookups stay a single indexed query per request.

use protocol::{CreatedToken, Role};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::db::{Error, Result};

/// Prefix of every token, so leaked ones are easy to recognise and grep for.
pub const TOKEN_PREFIX: &str = "stb_";

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

pub async fn create(pool: &PgPool, name: &str, role: Role) -> Result<CreatedToken> {
    let token = generate();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO api_tokens (name, role, token_hash) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(name)
    .bind(role.as_str())
    .bind(hash(&token))
    .fetch_one(pool)
    .await?;
    Ok(CreatedToken { id, name: name.to_string(), role, token })
}

/// The role of a live (not revoked) token, or None.
pub async fn verify(pool: &PgPool, token: &str) -> Result<Option<(i64, Role)>> {
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT id, role FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL")
            .bind(hash(token))
            .fetch_optional(pool)
            .await?;
    row.map(|(id, role)| Ok((id, role.parse().map_err(Error::Internal)?))).transpose()
}

pub async fn revoke(pool: &PgPool, id: i64) -> Result<()> {
    let done = sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("no live token with id {id}")));
    }
    Ok(())
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn list(pool: &PgPool) -> Result<Vec<TokenInfo>> {
    let rows = sqlx::query("SELECT id, name, role, created_at, revoked_at FROM api_tokens ORDER BY id")
        .fetch_all(pool)
        .await?;
    use sqlx::Row;
    Ok(rows
        .iter()
        .map(|r| TokenInfo {
            id: r.get("id"),
            name: r.get("name"),
            role: r.get("role"),
            created_at: r.get("created_at"),
            revoked_at: r.get("revoked_at"),
        })
        .collect())
}
