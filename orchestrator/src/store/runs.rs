//! Reading runs: their summaries, trajectories, and the specs a worker needs for a claimed run.

use protocol::{
    AgentSpec, ClaimedRun, CriticCallRecord, CriticSpec, Evaluation, ExecutorSpec, LlmCallRecord,
    PrefixReplay, RunAttempt, RunInfo, RunTotals, SandboxSettings, StepRecord, Trajectory, TrajectoryCall,
    TrajectoryCriticCall,
};
use serde::de::DeserializeOwned;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::datasets;
use crate::db::{Error, Result};
use crate::queue::Lease;

const RUN_COLUMNS: &str =
    "r.id, r.sweep_id, r.instance_id, a.name AS agent, c.name AS critic, r.repeat_index,
    r.state, r.attempt, r.failed_attempts, r.outcome, r.last_error, r.last_worker, r.queued_at,
    r.started_at, r.finished_at, r.steps, r.input_tokens, r.output_tokens, r.cached_tokens,
    r.agent_cost_usd, r.critic_cost_usd,
    (SELECT e.resolved FROM evaluations e WHERE e.run_id = r.id) AS resolved";

fn run_from_row(row: &PgRow) -> Result<RunInfo> {
    let state: String = row.get("state");
    let outcome: Option<String> = row.get("outcome");
    let outcome = outcome
        .map(|o| {
            serde_json::from_value(serde_json::Value::String(o.clone()))
                .map_err(|_| Error::Internal(format!("unknown outcome `{o}`")))
        })
        .transpose()?;
    Ok(RunInfo {
        id: row.get("id"),
        sweep_id: row.get("sweep_id"),
        instance_id: row.get("instance_id"),
        agent: row.get("agent"),
        critic: row.get("critic"),
        repeat_index: row.get("repeat_index"),
        state: state.parse().map_err(Error::Internal)?,
        attempt: row.get("attempt"),
        failed_attempts: row.get("failed_attempts"),
        outcome,
        resolved: row.get("resolved"),
        last_error: row.get("last_error"),
        worker_id: row.get("last_worker"),
        queued_at: row.get("queued_at"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        totals: RunTotals {
            steps: row.get("steps"),
            input_tokens: row.get("input_tokens"),
            output_tokens: row.get("output_tokens"),
            cached_tokens: row.get("cached_tokens"),
            agent_cost_usd: row.get("agent_cost_usd"),
            critic_cost_usd: row.get("critic_cost_usd"),
        },
    })
}

/// Filters for listing a sweep's runs.
#[derive(Debug, Default, Clone, serde::Deserialize, utoipa::IntoParams)]
pub struct RunFilter {
    pub state: Option<String>,
    pub outcome: Option<String>,
    pub agent: Option<String>,
    pub critic: Option<String>,
    /// At most this many (default 1000).
    pub limit: Option<i64>,
    /// Runs with an id above this (for paging).
    pub after: Option<i64>,
}

pub async fn list(pool: &PgPool, sweep_id: i64, filter: &RunFilter) -> Result<Vec<RunInfo>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs r JOIN agents a ON a.id = r.agent_id JOIN critics c ON c.id = r.critic_id
         WHERE r.sweep_id = $1
           AND ($2::text IS NULL OR r.state = $2)
           AND ($3::text IS NULL OR r.outcome = $3)
           AND ($4::text IS NULL OR a.name = $4)
           AND ($5::text IS NULL OR c.name = $5)
           AND r.id > $6
         ORDER BY r.id LIMIT $7"
    );
    let rows = sqlx::query(&sql)
        .bind(sweep_id)
        .bind(&filter.state)
        .bind(&filter.outcome)
        .bind(&filter.agent)
        .bind(&filter.critic)
        .bind(filter.after.unwrap_or(0))
        .bind(filter.limit.unwrap_or(1000).clamp(1, 10_000))
        .fetch_all(pool)
        .await?;
    rows.iter().map(run_from_row).collect()
}

pub async fn get(pool: &PgPool, run_id: i64) -> Result<RunInfo> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs r JOIN agents a ON a.id = r.agent_id JOIN critics c ON c.id = r.critic_id
         WHERE r.id = $1"
    );
    let row = sqlx::query(&sql)
        .bind(run_id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no run with id {run_id}")))?;
    run_from_row(&row)
}

/// A run's agent name and its endpoint's base URL: what the metrics label its model calls with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTarget {
    pub agent: String,
    pub base_url: String,
}

/// A run with the steps of every attempt (earlier attempts first), its model calls, its patch
/// and its evaluation.
pub async fn trajectory(pool: &PgPool, run_id: i64) -> Result<Trajectory> {
    let run = get(pool, run_id).await?;
    let steps = sqlx::query(
        "SELECT attempt, step_index, action, observation, exit_code, duration_ms, llm_ms, command_ms,
                replayed, input_tokens, output_tokens, cached_tokens, cost_usd, messages, recorded_at
         FROM steps WHERE run_id = $1 ORDER BY attempt, step_index",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(step_from_row)
    .collect();
    let patch: Option<String> =
        sqlx::query_scalar("SELECT patch FROM runs WHERE id = $1").bind(run_id).fetch_one(pool).await?;
    let evaluation = evaluation(pool, run_id).await?;
    trajectory_rest(pool, run, steps, patch, evaluation).await
}

fn step_from_row(r: &PgRow) -> StepRecord {
    StepRecord {
        index: r.get("step_index"),
        replayed: r.get("replayed"),
        attempt: r.get("attempt"),
        llm_ms: r.get("llm_ms"),
        command_ms: r.get("command_ms"),
        action: r.get("action"),
        observation: r.get("observation"),
        exit_code: r.get("exit_code"),
        duration_ms: r.get("duration_ms"),
        input_tokens: r.get("input_tokens"),
        output_tokens: r.get("output_tokens"),
        cached_tokens: r.get("cached_tokens"),
        cost_usd: r.get("cost_usd"),
        messages: r.get("messages"),
        recorded_at: r.try_get("recorded_at").ok(),
    }
}

async fn evaluation(pool: &PgPool, run_id: i64) -> Result<Option<Evaluation>> {
    Ok(sqlx::query("SELECT apply_status, resolved, tests, report FROM evaluations WHERE run_id = $1")
        .bind(run_id)
        .fetch_optional(pool)
        .await?
        .map(|r| Evaluation {
            apply_status: r.get("apply_status"),
            resolved: r.get("resolved"),
            tests: r.get("tests"),
            report: r.get("report"),
            // The grading's files are served with the evaluation's results
            // (`GET /api/v1/sweeps/{id}/evaluations`), not with every trajectory.
            ..Default::default()
        }))
}

/// The calls of a run, added to what `trajectory` read.
async fn trajectory_rest(
    pool: &PgPool,
    run: RunInfo,
    steps: Vec<StepRecord>,
    patch: Option<String>,
    evaluation: Option<Evaluation>,
) -> Result<Trajectory> {
    let run_id = run.id;
    let llm_calls = sqlx::query(
        "SELECT attempt, call_index, step_index, model, status, http_status, retries, latency_ms,
                input_tokens, output_tokens, cached_tokens, reasoning_tokens, tokens_estimated, cost_usd,
                finish_reason, error, response_id
         FROM llm_calls WHERE run_id = $1 ORDER BY attempt, call_index, id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| -> Result<TrajectoryCall> {
        Ok(TrajectoryCall {
            attempt: r.get("attempt"),
            call: LlmCallRecord {
                call_index: r.get::<Option<i32>, _>("call_index").unwrap_or(-1),
                step_index: r.get("step_index"),
                model: r.get("model"),
                status: stored(r, "status")?,
                http_status: r.get("http_status"),
                retries: r.get("retries"),
                latency_ms: r.get("latency_ms"),
                input_tokens: r.get("input_tokens"),
                output_tokens: r.get("output_tokens"),
                cached_tokens: r.get("cached_tokens"),
                reasoning_tokens: r.get("reasoning_tokens"),
                tokens_estimated: r.get("tokens_estimated"),
                cost_usd: r.get("cost_usd"),
                finish_reason: r.get("finish_reason"),
                error: r.get("error"),
                response_id: r.get("response_id"),
            },
        })
    })
    .collect::<Result<Vec<_>>>()?;
    let critic_calls = sqlx::query(
        "SELECT attempt, call_index, step_index, kind, model, trigger, decision, feedback, score, status,
                error, latency_ms, input_tokens, output_tokens, cost_usd, device, batch_size, prompt,
                response_id
         FROM critic_calls WHERE run_id = $1 ORDER BY attempt, call_index, id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| -> Result<TrajectoryCriticCall> {
        Ok(TrajectoryCriticCall {
            attempt: r.get("attempt"),
            call: CriticCallRecord {
                call_index: r.get::<Option<i32>, _>("call_index").unwrap_or(-1),
                step_index: r.get("step_index"),
                kind: stored(r, "kind")?,
                model: r.get("model"),
                trigger: r.get::<Option<String>, _>("trigger").unwrap_or_default(),
                decision: stored(r, "decision")?,
                feedback: r.get("feedback"),
                score: r.get("score"),
                status: stored(r, "status")?,
                error: r.get("error"),
                latency_ms: r.get("latency_ms"),
                input_tokens: r.get("input_tokens"),
                output_tokens: r.get("output_tokens"),
                cost_usd: r.get("cost_usd"),
                device: r.get("device"),
                batch_size: r.get("batch_size"),
                prompt: r.get("prompt"),
                response_id: r.get("response_id"),
            },
        })
    })
    .collect::<Result<Vec<_>>>()?;
    let attempts = attempts(pool, run_id).await?;
    let config: serde_json::Value = sqlx::query_scalar(
        "SELECT jsonb_build_object('agent', a.spec, 'critic', c.spec, 'executor', s.spec -> 'executor',
                                   'sandbox', COALESCE(s.spec -> 'sandbox', '{}'::jsonb))
         FROM runs r JOIN agents a ON a.id = r.agent_id JOIN critics c ON c.id = r.critic_id
              JOIN sweeps s ON s.id = r.sweep_id
         WHERE r.id = $1",
    )
    .bind(run_id)
    .fetch_one(pool)
    .await?;
    Ok(Trajectory { run, config, attempts, steps, llm_calls, critic_calls, patch, evaluation })
}

/// A run's attempts from the ledger, first first.
pub async fn attempts(pool: &PgPool, run_id: i64) -> Result<Vec<RunAttempt>> {
    let rows = sqlx::query(
        "SELECT attempt, worker_id, claimed_at, ended_at, ending, reason
         FROM run_attempts WHERE run_id = $1 ORDER BY attempt",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let ending: Option<String> = r.get("ending");
            Ok(RunAttempt {
                attempt: r.get("attempt"),
                worker_id: r.get("worker_id"),
                claimed_at: r.get("claimed_at"),
                ended_at: r.get("ended_at"),
                ending: ending.map(|e| e.parse().map_err(Error::Internal)).transpose()?,
                reason: r.get("reason"),
            })
        })
        .collect()
}

/// A closed-set name (a call's status, a critic's decision) as stored.
fn stored<T: std::str::FromStr<Err = protocol::UnknownName>>(
    row: &sqlx::postgres::PgRow,
    column: &str,
) -> Result<T> {
    row.get::<String, _>(column)
        .parse()
        .map_err(|e: protocol::UnknownName| Error::Internal(format!("stored {e}")))
}

fn from_spec<T: DeserializeOwned>(what: &str, value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| Error::Internal(format!("stored {what} spec does not parse: {e}")))
}

/// Attaches to a lease everything the worker needs to execute the run.
pub async fn claimed_run(pool: &PgPool, lease: &Lease) -> Result<ClaimedRun> {
    let row = sqlx::query(
        "SELECT a.spec AS agent, c.spec AS critic, s.spec -> 'executor' AS executor,
                COALESCE(s.spec -> 'sandbox', '{}'::jsonb) AS sandbox, r.input_patch, r.prefix_of
         FROM agents a, critics c, sweeps s, runs r
         WHERE a.id = $1 AND c.id = $2 AND s.id = $3 AND r.id = $4",
    )
    .bind(lease.agent_id)
    .bind(lease.critic_id)
    .bind(lease.sweep_id)
    .bind(lease.run_id)
    .fetch_one(pool)
    .await?;
    let agent: AgentSpec = from_spec("agent", row.get("agent"))?;
    let critic: CriticSpec = from_spec("critic", row.get("critic"))?;
    let executor: ExecutorSpec = from_spec("executor", row.get("executor"))?;
    let sandbox: SandboxSettings = from_spec("sandbox", row.get("sandbox"))?;
    let instance = datasets::instance(pool, lease.dataset_id, &lease.instance_id).await?;
    let prefix = match row.get::<Option<i64>, _>("prefix_of") {
        Some(base) => prefix_replay(pool, base, &critic).await?,
        None => None,
    };
    Ok(ClaimedRun {
        run_id: lease.run_id,
        sweep_id: lease.sweep_id,
        attempt: lease.attempt,
        lease_token: lease.lease_token,
        lease_expires_at: lease.lease_expires_at,
        repeat_index: lease.repeat_index,
        instance,
        agent,
        critic,
        executor,
        sandbox,
        input_patch: row.get("input_patch"),
        prefix,
    })
}

/// The steps of a base run that a prefix-replay run re-executes: the first `prefix_steps` of
/// its final attempt. None when the base run did not finish (`error`, `cancelled`): the run
/// then starts fresh.
async fn prefix_replay(pool: &PgPool, base: i64, critic: &CriticSpec) -> Result<Option<PrefixReplay>> {
    let params = critic.params().cloned().unwrap_or_default();
    let k = params.prefix_steps.or(params.every_k).unwrap_or(5) as i32;
    let steps: Vec<StepRecord> = sqlx::query(
        "SELECT s.attempt, s.step_index, s.action, s.observation, s.exit_code, s.duration_ms, s.llm_ms,
                s.command_ms, s.replayed, s.input_tokens, s.output_tokens, s.cached_tokens, s.cost_usd, s.messages
         FROM runs b JOIN steps s ON s.run_id = b.id AND s.attempt = b.attempt
         WHERE b.id = $1 AND b.state = 'done' AND s.step_index < $2
         ORDER BY s.step_index",
    )
    .bind(base)
    .bind(k)
    .fetch_all(pool)
    .await?
    .iter()
    .map(step_from_row)
    .collect();
    Ok((!steps.is_empty()).then_some(PrefixReplay { base_run_id: base, steps }))
}
