//! Datasets and their instances: import, listing, deletion.

use protocol::{DatasetInfo, Instance};
use sqlx::{PgPool, Row};

use crate::db::{Error, Result};

/// Imports a dataset in one transaction: all instances or none.
pub async fn import(
    pool: &PgPool,
    name: &str,
    source: Option<&str>,
    instances: &[Instance],
) -> Result<DatasetInfo> {
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar("INSERT INTO datasets (name, source) VALUES ($1, $2) RETURNING id")
        .bind(name)
        .bind(source)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match Error::from(e) {
            Error::Conflict(_) => {
                Error::Conflict(format!("a dataset named `{name}` already exists; choose another name"))
            }
            other => other,
        })?;
    for inst in instances {
        sqlx::query(include_str!("insert_instance.sql"))
            .bind(id)
            .bind(&inst.instance_id)
            .bind(&inst.repo)
            .bind(&inst.base_commit)
            .bind(&inst.patch)
            .bind(&inst.test_patch)
            .bind(&inst.problem_statement)
            .bind(&inst.hints_text)
            .bind(&inst.created_at)
            .bind(&inst.version)
            .bind(&inst.environment_setup_commit)
            .bind(sqlx::types::Json(&inst.fail_to_pass))
            .bind(sqlx::types::Json(&inst.pass_to_pass))
            .bind(&inst.difficulty)
            .bind(&inst.image)
            .bind(&inst.eval_script)
            .bind(&inst.log_parser)
            .bind(sqlx::types::Json(&inst.extra))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    get(pool, name).await
}

pub async fn list(pool: &PgPool) -> Result<Vec<DatasetInfo>> {
    let rows = sqlx::query(
        "SELECT d.id, d.name, d.source, d.created_at,
                (SELECT count(*) FROM instances i WHERE i.dataset_id = d.id) AS instances
         FROM datasets d ORDER BY d.id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(info_from_row).collect())
}

pub async fn get(pool: &PgPool, name: &str) -> Result<DatasetInfo> {
    let row = sqlx::query(
        "SELECT d.id, d.name, d.source, d.created_at,
                (SELECT count(*) FROM instances i WHERE i.dataset_id = d.id) AS instances
         FROM datasets d WHERE d.name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::NotFound(format!("no dataset named `{name}`")))?;
    Ok(info_from_row(&row))
}

fn info_from_row(row: &sqlx::postgres::PgRow) -> DatasetInfo {
    DatasetInfo {
        id: row.get("id"),
        name: row.get("name"),
        source: row.get("source"),
        instances: row.get("instances"),
        created_at: row.get("created_at"),
    }
}

/// The fields the sweep selection filters on, for every instance of a dataset.
#[derive(Debug, Clone)]
pub struct InstanceKey {
    pub instance_id: String,
    pub repo: String,
    pub difficulty: Option<String>,
    /// The dataset's own image name for the instance (SWE-bench v5 datasets carry one).
    pub image: Option<String>,
}

pub async fn instance_keys(pool: &PgPool, dataset_id: i64) -> Result<Vec<InstanceKey>> {
    let rows = sqlx::query(
        "SELECT instance_id, repo, difficulty, image FROM instances WHERE dataset_id = $1 ORDER BY instance_id",
    )
    .bind(dataset_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| InstanceKey {
            instance_id: r.get("instance_id"),
            repo: r.get("repo"),
            difficulty: r.get("difficulty"),
            image: r.get("image"),
        })
        .collect())
}

pub async fn instance(pool: &PgPool, dataset_id: i64, instance_id: &str) -> Result<Instance> {
    let row = sqlx::query("SELECT * FROM instances WHERE dataset_id = $1 AND instance_id = $2")
        .bind(dataset_id)
        .bind(instance_id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("instance `{instance_id}` is not in dataset {dataset_id}")))?;
    let json = |col: &str| -> serde_json::Value { row.get(col) };
    let list = |col: &str| -> Result<Vec<String>> {
        serde_json::from_value(json(col)).map_err(|e| Error::Internal(format!("instances.{col}: {e}")))
    };
    let extra = serde_json::from_value(json("extra"))
        .map_err(|e| Error::Internal(format!("instances.extra: {e}")))?;
    Ok(Instance {
        instance_id: row.get("instance_id"),
        repo: row.get("repo"),
        base_commit: row.get("base_commit"),
        patch: row.get("patch"),
        test_patch: row.get("test_patch"),
        problem_statement: row.get("problem_statement"),
        hints_text: row.get("hints_text"),
        created_at: row.get("created_at"),
        version: row.get("version"),
        environment_setup_commit: row.get("environment_setup_commit"),
        fail_to_pass: list("fail_to_pass")?,
        pass_to_pass: list("pass_to_pass")?,
        difficulty: row.get("difficulty"),
        image: row.get("image"),
        eval_script: row.get("eval_script"),
        log_parser: row.get("log_parser"),
        extra,
    })
}

/// Deletes dataset `name` with its instances. A dataset that sweeps (or evaluations) use is
/// refused (`Conflict`, naming them) unless `with_sweeps`, which deletes those sweeps first as
/// [`super::sweeps::delete`] does; a sweep with a running run refuses it either way.
pub async fn delete(pool: &PgPool, name: &str, with_sweeps: bool) -> Result<protocol::Deleted> {
    let mut tx = pool.begin().await?;
    // Locked: a sweep submitted meanwhile (which key-shares the row) waits, then finds it gone.
    let id: i64 = sqlx::query_scalar("SELECT id FROM datasets WHERE name = $1 FOR UPDATE")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no dataset named `{name}`")))?;
    let users: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, name FROM sweeps WHERE dataset_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
    if !users.is_empty() && !with_sweeps {
        let named: Vec<String> = users.iter().map(|(id, n)| format!("`{n}` (id {id})")).collect();
        return Err(Error::Conflict(format!(
            "dataset `{name}` is used by {} sweep(s): {}; delete them first (`steer sweep delete NAME`), \
             or delete the dataset with them (`steer dataset delete {name} --with-sweeps`)",
            users.len(),
            named.join(", ")
        )));
    }
    let mut sweeps = Vec::with_capacity(users.len());
    let mut runs = 0;
    for (sweep_id, _) in &users {
        let (sweep, n) = super::sweeps::delete_in(&mut tx, *sweep_id).await?;
        sweeps.push(sweep);
        runs += n;
    }
    sqlx::query("DELETE FROM datasets WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(protocol::Deleted { name: name.to_string(), sweeps, runs })
}
