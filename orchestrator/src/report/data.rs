//! The rows a report is computed from: one per run of the sweeps asked for.

use rust_decimal::Decimal;
use sqlx::{PgPool, Row};

use crate::db::Result;

/// One run, as the report needs it.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: i64,
    pub sweep_id: i64,
    pub sweep: String,
    pub agent: String,
    pub critic: String,
    /// The critic condition's base (`prefix_from`), if it names one.
    pub prefix_from: Option<String>,
    /// The agent whose trajectories trained the critic (`trained_on`), if the sweep says.
    pub trained_on: Option<String>,
    pub instance_id: String,
    pub repeat: i32,
    pub state: String,
    pub outcome: Option<String>,
    /// Whether its patch resolves the task (None: not graded).
    pub resolved: Option<bool>,
    pub agent_cost: Decimal,
    pub critic_cost: Decimal,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    pub steps: i32,
    pub wall_s: Option<f64>,
    pub critic_calls: i64,
    pub interventions: i64,
    /// Why the run last failed or was stopped (`runs.last_error`), if anything says.
    pub last_error: Option<String>,
}

impl RunRow {
    pub fn finished(&self) -> bool {
        self.state == "done"
    }
    /// The run ended without a result about the agent: an infrastructure error (state
    /// `error`, outcomes are never about the infrastructure) or a cancellation.
    pub fn ended_without_result(&self) -> bool {
        matches!(self.state.as_str(), "error" | "cancelled")
    }
    pub fn is_resolved(&self) -> bool {
        self.finished() && self.resolved == Some(true)
    }
    pub fn cost(&self) -> Decimal {
        self.agent_cost + self.critic_cost
    }
    /// The agent did not submit: it ran into a limit, was stopped, or the run never finished.
    pub fn did_not_submit(&self) -> bool {
        !self.finished()
            || matches!(
                self.outcome.as_deref(),
                Some("step_limit" | "cost_limit" | "time_limit" | "format_error_limit" | "critic_stop")
            )
    }
}

pub async fn load(pool: &PgPool, sweep_ids: &[i64]) -> Result<Vec<RunRow>> {
    let rows = sqlx::query(
        "SELECT r.id, r.sweep_id, s.name AS sweep, a.name AS agent, c.name AS critic,
                c.params ->> 'prefix_from' AS prefix_from,
                c.params ->> 'trained_on' AS trained_on, r.instance_id, r.repeat_index, r.state,
                r.outcome, e.resolved, r.agent_cost_usd, r.critic_cost_usd, r.input_tokens,
                r.output_tokens, r.cached_tokens, r.steps, r.last_error,
                EXTRACT(EPOCH FROM (r.finished_at - r.started_at))::float8 AS wall_s,
                COALESCE(k.calls, 0) AS critic_calls, COALESCE(k.interventions, 0) AS interventions
         FROM runs r
         JOIN sweeps s ON s.id = r.sweep_id
         JOIN agents a ON a.id = r.agent_id
         JOIN critics c ON c.id = r.critic_id
         LEFT JOIN evaluations e ON e.run_id = r.id
         -- The critic calls of each run's last attempt, counted once for all runs (a hash join,
         -- not two lookups per run).
         LEFT JOIN (SELECT cc.run_id, cc.attempt, count(*) AS calls,
                           count(*) FILTER (WHERE cc.decision = 'inject') AS interventions
                    FROM critic_calls cc JOIN runs cr ON cr.id = cc.run_id
                    WHERE cr.sweep_id = ANY($1)
                    GROUP BY cc.run_id, cc.attempt) k ON k.run_id = r.id AND k.attempt = r.attempt
         WHERE r.sweep_id = ANY($1)
         ORDER BY r.sweep_id, a.name, c.name, r.instance_id, r.repeat_index",
    )
    .bind(sweep_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| RunRow {
            id: r.get("id"),
            sweep_id: r.get("sweep_id"),
            sweep: r.get("sweep"),
            agent: r.get("agent"),
            critic: r.get("critic"),
            prefix_from: r.get("prefix_from"),
            trained_on: r.get("trained_on"),
            instance_id: r.get("instance_id"),
            repeat: r.get("repeat_index"),
            state: r.get("state"),
            outcome: r.get("outcome"),
            resolved: r.get("resolved"),
            agent_cost: r.get("agent_cost_usd"),
            critic_cost: r.get("critic_cost_usd"),
            input_tokens: r.get("input_tokens"),
            output_tokens: r.get("output_tokens"),
            cached_tokens: r.get("cached_tokens"),
            steps: r.get("steps"),
            wall_s: r.get("wall_s"),
            critic_calls: r.get("critic_calls"),
            interventions: r.get("interventions"),
            last_error: r.get("last_error"),
        })
        .collect())
}
