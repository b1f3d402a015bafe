//! The durable run queue: claims under leases, heartbeats, completion, failure, expiry.
//!
//! All of the queue's SQL lives in this module, each statement a named `.sql` file beside it;
//! every statement that changes a run's state or writes its attempt ledger is among them, and
//! starts with a header naming the transitions it makes (`-- transitions: running -> done`,
//! `-- attempt: open -> completed`). ARCHITECTURE.md ("Run and attempt lifecycle") draws them;
//! a test holds the headers, the diagram and what the statements do to one another. The
//! store calls [`cancel_runs`], [`pause_runs`] and [`resume_runs`] for a sweep's transitions and
//! creates runs itself (`queued`, the diagram's entry edge). Invariants:
//! - a run is `running` iff it has a lease (owner, token, expiry) — a CHECK constraint holds it;
//! - every statement that changes a running run names its lease token (fencing), so a worker
//!   whose lease expired and was re-granted cannot write over the new attempt, and the API token
//!   that registered the worker asking ([`Registrar`]), so a worker token acts only on runs
//!   held by workers it registered;
//! - every claim opens an attempt in `run_attempts` in the claim's own statement, and the
//!   statement that ends a lease closes exactly that attempt under the same fence, so at most
//!   one attempt of a run is `completed` (a unique index holds it);
//! - a claim takes rows with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never get the
//!   same run for the same attempt;
//! - concurrency caps (per endpoint, fleet-wide; per sweep) are checked under a transaction-level
//!   advisory lock per capped key, taken in a fixed order (endpoints then sweeps, ascending ids)
//!   so claimers cannot deadlock.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use protocol::{CompleteRun, ExecutorKind, Heartbeat, HeartbeatAck, UploadSteps};
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::db::{Error, Result};
use crate::store::runs::CallTarget;

/// How an attempt ended (`run_attempts.ending`; `NULL` while it is open).
pub use protocol::AttemptEnding;
/// A run's state, as the queue moves it (the wire's type: one enum from the database to the
/// API's JSON). The `runs.state` CHECK constraint allows exactly these.
pub use protocol::RunState;

/// Reads a run state the database returned.
fn run_state(text: &str) -> Result<RunState> {
    text.parse().map_err(Error::Internal)
}

/// The claim window: caps (part 1) and the runs locked for a class of claimers (part 2).
const CLAIM_WINDOW: &str = concat!(include_str!("claim_caps.sql"), include_str!("claim_window.sql"));

/// How the claim window is planned, set for its transaction only: with its real LIMIT (the
/// pool's generic plans assume a tenth of the table), and never by sorting (the planner, misled
/// by a join to a small `sweeps`, would rather read a sweep's every queued run through
/// `runs_sweep_state` and sort them than walk `runs_claim` in order; on a large queue that
/// costs a sort of the whole sweep per claim), nor by reading a whole table (with statistics
/// from before a large sweep, a capped sweep's running count was planned as a scan of `runs`).
/// JIT is off: the penalties that steer the planner make the plan look costly enough to
/// compile, which took over a second per claim.
const PLAN_WINDOW: &str = "SELECT set_config('plan_cache_mode', 'force_custom_plan', true),
            set_config('enable_sort', 'off', true), set_config('enable_seqscan', 'off', true),
            set_config('jit', 'off', true)";

/// How far past the head of the queue a claim looks for a run whose image the worker holds:
/// far enough to find one in a mixed sweep, near enough that fair share barely bends.
pub const LOCALITY_WINDOW: i64 = 64;

/// Advisory lock classes (first key of `pg_advisory_xact_lock(int, int)`).
const LOCK_ENDPOINT: i32 = 1;
const LOCK_SWEEP: i32 = 2;

/// A run granted to a worker: identifiers only (the API layer attaches the specs).
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub run_id: i64,
    pub sweep_id: i64,
    pub attempt: i32,
    pub lease_token: Uuid,
    pub lease_expires_at: DateTime<Utc>,
    pub repeat_index: i32,
    pub dataset_id: i64,
    pub instance_id: String,
    pub agent_id: i64,
    pub critic_id: i64,
}

/// How a lease ends early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Handed back (drain, cancel): not a failed attempt.
    Released,
    /// An infrastructure failure: a failed attempt.
    Failed,
    /// A failed attempt caused by the model endpoint's outage: also opens its breaker.
    EndpointOutage,
}

/// What [`Queue::upload_steps`] stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Uploaded {
    /// The run's agent and endpoint, for labelling metrics.
    pub target: CallTarget,
    pub fresh: Fresh,
}

/// For each uploaded step, model call and critic call (in upload order): whether it is new.
/// A re-sent upload (its first answer lost) stores nothing twice; its records are not fresh.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fresh {
    pub steps: Vec<bool>,
    pub llm_calls: Vec<bool>,
    pub critic_calls: Vec<bool>,
}

/// The API token that registered a worker. Requests for a worker, or about a run a worker
/// holds, must come through it: the queue's fenced statements match it against the holder's
/// `workers.token_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registrar(pub Option<i64>);

impl Registrar {
    /// Workers registered without a token (written straight into the database by in-process
    /// tests and benchmarks).
    pub const NONE: Registrar = Registrar(None);

    pub fn token(token_id: i64) -> Self {
        Registrar(Some(token_id))
    }
}

/// Where a run went when its lease ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeued {
    Queued,
    Paused,
    Cancelled,
    /// Its attempts are used up.
    Error,
}

#[derive(Clone)]
pub struct Queue {
    pool: PgPool,
    lease_ttl: Duration,
    cooldown: EndpointCooldown,
}

/// The model endpoints' circuit breaker. A run that fails because its endpoint stayed
/// unavailable through every retry opens the endpoint's breaker: none of its runs is claimed
/// for `base`, doubling with each consecutive outage up to `max`; then one run at a time probes
/// it until a model call succeeds. Without it, every worker burns run attempts against an
/// endpoint that is down (a storm of 429s spent 59 attempts in 36 s on the test bed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointCooldown {
    pub base: Duration,
    pub max: Duration,
}

impl Default for EndpointCooldown {
    fn default() -> Self {
        EndpointCooldown { base: Duration::from_secs(5), max: Duration::from_secs(300) }
    }
}

/// Who may take which runs: the executor kinds a worker can run now and the API-key variables
/// it allows (its `capabilities.key_envs`). Workers of one class can be served by one claim
/// window ([`Queue::claim_batch`]).
#[derive(Debug, Clone)]
pub struct ClaimClass {
    kinds: Vec<ExecutorKind>,
    key_envs: Option<serde_json::Value>,
    /// The two above as one comparable text (JSON values are not `Hash`).
    key: String,
}

impl ClaimClass {
    pub fn new(mut kinds: Vec<ExecutorKind>, key_envs: Option<serde_json::Value>) -> Self {
        kinds.sort_by_key(|k| k.as_str());
        kinds.dedup();
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let key =
            format!("{}|{}", names.join(","), key_envs.as_ref().map_or_else(String::new, |v| v.to_string()));
        ClaimClass { kinds, key_envs, key }
    }
}

impl PartialEq for ClaimClass {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for ClaimClass {}
impl std::hash::Hash for ClaimClass {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

/// One waiting worker's request: up to `max` runs, preferring those whose image it holds.
#[derive(Debug, Clone)]
pub struct ClaimTicket {
    pub worker: Uuid,
    pub max: u32,
    pub images: Vec<String>,
    /// The API token the worker registered with: what hands the runs back if the claim's
    /// answer cannot be delivered.
    pub by: Registrar,
}

/// Shares the claim window `open` (run id and image, in dispatch order) out among `tickets`:
/// first each worker holding images takes the runs of its images, in dispatch order; then
/// every worker, in the tickets' order, takes from the head of what is left. Returns (index
/// into `open`, index into `tickets`) pairs.
fn share_out(open: &[(i64, String)], tickets: &[ClaimTicket]) -> Vec<(usize, usize)> {
    let mut taken = vec![false; open.len()];
    let mut need: Vec<usize> = tickets.iter().map(|t| t.max as usize).collect();
    let mut out = Vec::new();
    for (t, ticket) in tickets.iter().enumerate().filter(|(_, t)| !t.images.is_empty()) {
        let held: HashSet<&str> = ticket.images.iter().map(String::as_str).collect();
        for (i, (_, image)) in open.iter().enumerate() {
            if need[t] == 0 {
                break;
            }
            if !taken[i] && held.contains(image.as_str()) {
                taken[i] = true;
                need[t] -= 1;
                out.push((i, t));
            }
        }
    }
    let mut next = 0;
    for (t, n) in need.iter_mut().enumerate() {
        while *n > 0 {
            while next < open.len() && taken[next] {
                next += 1;
            }
            if next == open.len() {
                return out;
            }
            taken[next] = true;
            *n -= 1;
            out.push((next, t));
        }
    }
    out
}

struct Candidate {
    id: i64,
    endpoint_id: i64,
    sweep_id: i64,
    endpoint_cap: Option<i32>,
    sweep_cap: Option<i32>,
}

impl Queue {
    pub fn new(pool: PgPool, lease_ttl: Duration) -> Self {
        Queue { pool, lease_ttl, cooldown: EndpointCooldown::default() }
    }

    pub fn with_endpoint_cooldown(mut self, cooldown: EndpointCooldown) -> Self {
        self.cooldown = cooldown;
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    fn ttl_ms(&self) -> f64 {
        self.lease_ttl.as_millis() as f64
    }

    /// Grants `worker` leases on up to `max` queued runs of the executor `kinds` it can run, in
    /// fair-share order, within caps.
    pub async fn claim(&self, worker: Uuid, max: u32, kinds: &[ExecutorKind]) -> Result<Vec<Lease>> {
        self.claim_near(worker, max, kinds, &[]).await
    }

    /// [`Queue::claim`] for a worker holding the instance `images`: among the next
    /// [`LOCALITY_WINDOW`] claimable runs, those whose image it has come first. A batch of one
    /// ([`Queue::claim_batch`]), the worker's class read from its registration.
    pub async fn claim_near(
        &self,
        worker: Uuid,
        max: u32,
        kinds: &[ExecutorKind],
        images: &[String],
    ) -> Result<Vec<Lease>> {
        let key_envs: Option<serde_json::Value> =
            sqlx::query_scalar("SELECT capabilities -> 'key_envs' FROM workers WHERE id = $1")
                .bind(worker)
                .fetch_optional(&self.pool)
                .await?
                .flatten();
        let class = ClaimClass::new(kinds.to_vec(), key_envs);
        let ticket = ClaimTicket { worker, max, images: images.to_vec(), by: Registrar::NONE };
        Ok(self.claim_batch(&class, std::slice::from_ref(&ticket)).await?.remove(0))
    }

    /// Grants leases to several waiting workers of one class in one transaction: locks the
    /// next claimable runs for all of them at once (one scan of the claim index), shares them
    /// out in the tickets' order (each worker's own images first, within the window), and
    /// leases them in one statement. Runs under a cap then take the capped path, per worker.
    /// Returns each ticket's leases, in the tickets' order.
    pub async fn claim_batch(&self, class: &ClaimClass, tickets: &[ClaimTicket]) -> Result<Vec<Vec<Lease>>> {
        let mut out: Vec<Vec<Lease>> = vec![Vec::new(); tickets.len()];
        let wanted: i64 = tickets.iter().map(|t| i64::from(t.max)).sum();
        if wanted == 0 || class.kinds.is_empty() {
            return Ok(out);
        }
        let local = tickets.iter().any(|t| !t.images.is_empty());
        let window = wanted + if local { LOCALITY_WINDOW } else { 0 };
        let mut tx = self.pool.begin().await?;
        // Plan the window to walk the claim index whatever the statistics say (PLAN_WINDOW).
        sqlx::query(PLAN_WINDOW).execute(&mut *tx).await?;
        let rows = sqlx::query(CLAIM_WINDOW)
            .bind(window)
            .bind(class.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>())
            .bind(&class.key_envs)
            .fetch_all(&mut *tx)
            .await?;
        let mut open = Vec::with_capacity(rows.len());
        let mut capped = Vec::new();
        for row in &rows {
            let id: i64 = row.get("id");
            if row.get::<bool, _>("capped") {
                capped.push(id);
            } else {
                // Runs inserted without an image (by older versions, or directly) match no worker's.
                open.push((id, row.get::<Option<String>, _>("image").unwrap_or_default()));
            }
        }
        let shares = share_out(&open, tickets);
        if !shares.is_empty() {
            let ids: Vec<i64> = shares.iter().map(|&(run, _)| open[run].0).collect();
            let workers: Vec<Uuid> = shares.iter().map(|&(_, t)| tickets[t].worker).collect();
            let ticket_of: std::collections::HashMap<i64, usize> =
                shares.iter().map(|&(run, t)| (open[run].0, t)).collect();
            let leased = sqlx::query(include_str!("lease_batch.sql"))
                .bind(&ids)
                .bind(&workers)
                .bind(self.ttl_ms())
                .fetch_all(&mut *tx)
                .await?;
            for row in &leased {
                let lease = lease_from_row(row);
                out[ticket_of[&lease.run_id]].push(lease);
            }
        }
        tx.commit().await?;
        // Capped runs, re-counted under their caps' locks, for whoever still wants runs.
        for (t, ticket) in tickets.iter().enumerate() {
            let need = (ticket.max as usize).saturating_sub(out[t].len());
            if capped.is_empty() {
                break;
            }
            if need == 0 {
                continue;
            }
            let got = self.claim_capped(ticket.worker, &capped, need).await?;
            if got.is_empty() {
                // Every cap these runs are under is full: the next worker would find the same.
                break;
            }
            capped.retain(|id| !got.iter().any(|l| l.run_id == *id));
            out[t].extend(got);
        }
        for leases in &mut out {
            leases.sort_by_key(|l| l.run_id);
        }
        Ok(out)
    }

    /// Leases `worker` up to `need` of the runs `ids` (under caps), re-counting each cap under
    /// its advisory lock.
    async fn claim_capped(&self, worker: Uuid, ids: &[i64], need: usize) -> Result<Vec<Lease>> {
        let mut tx = self.pool.begin().await?;
        let candidates: Vec<Candidate> = sqlx::query(include_str!("claim_capped.sql"))
            .bind(ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|row| Candidate {
                id: row.get("id"),
                endpoint_id: row.get("endpoint_id"),
                sweep_id: row.get("sweep_id"),
                endpoint_cap: row.get("endpoint_cap"),
                sweep_cap: row.get("sweep_cap"),
            })
            .collect();
        let mut chosen = within_caps(&mut tx, candidates).await?;
        chosen.truncate(need);
        let leases = if chosen.is_empty() {
            Vec::new()
        } else {
            sqlx::query(include_str!("lease_runs.sql"))
                .bind(&chosen)
                .bind(worker)
                .bind(self.ttl_ms())
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(lease_from_row)
                .collect()
        };
        tx.commit().await?;
        Ok(leases)
    }

    /// Extends the leases `worker` still holds. Lists the runs it has lost (expired and
    /// re-granted, or finished by someone else) and those whose sweep was cancelled. Changes
    /// nothing, and is `Forbidden`, unless `by` registered the worker.
    pub async fn heartbeat(&self, worker: Uuid, by: Registrar, beat: &Heartbeat) -> Result<HeartbeatAck> {
        let ids: Vec<i64> = beat.leases.iter().map(|l| l.run_id).collect();
        let tokens: Vec<Uuid> = beat.leases.iter().map(|l| l.lease_token).collect();
        let rows = sqlx::query(include_str!("heartbeat.sql"))
            .bind(&ids)
            .bind(&tokens)
            .bind(worker)
            .bind(self.ttl_ms())
            .bind(beat.draining)
            .bind(beat.images.as_deref())
            .bind(beat.status.as_deref())
            .bind(by.0)
            .bind(beat.degraded.as_deref())
            .fetch_all(&self.pool)
            .await?;
        let first = rows.first();
        if !first.is_some_and(|r| r.get::<bool, _>("registered")) {
            return Err(Error::NotFound(format!("worker {worker} is not registered")));
        }
        if !first.is_some_and(|r| r.get::<bool, _>("bound")) {
            return Err(worker_forbidden(worker));
        }
        let mut held = HashSet::new();
        let mut cancelled = Vec::new();
        for row in rows {
            let Some(id) = row.get::<Option<i64>, _>("id") else { continue };
            held.insert(id);
            if row.get::<Option<bool>, _>("sweep_cancelled") == Some(true) {
                cancelled.push(id);
            }
        }
        let lost = ids.into_iter().filter(|id| !held.contains(id)).collect();
        Ok(HeartbeatAck { lost, cancelled })
    }

    /// Persists steps of the current attempt. Rejected unless the upload's token is the run's
    /// live lease and `by` registered its holder.
    ///
    /// Returns the run's agent and endpoint, read by the fencing query itself, so that the
    /// caller can label the uploaded calls' metrics without another round trip, and which of
    /// the uploaded records are new (a re-sent upload's are not), so that it counts them once.
    pub async fn upload_steps(&self, run_id: i64, by: Registrar, upload: &UploadSteps) -> Result<Uploaded> {
        let mut tx = self.pool.begin().await?;
        // FOR SHARE: the lease cannot expire or change hands until these steps are written.
        let fenced = sqlx::query(include_str!("fence_upload.sql"))
            .bind(run_id)
            .bind(upload.lease_token)
            .bind(by.0)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(fenced) = fenced else {
            return Err(self.refusal(run_id, upload.lease_token, by).await?.into_error(run_id));
        };
        let attempt: i32 = fenced.get("attempt");
        let target = CallTarget { agent: fenced.get("agent"), base_url: fenced.get("base_url") };
        let mut fresh = Fresh::default();
        for step in &upload.steps {
            let inserted: bool = sqlx::query_scalar(include_str!("insert_step.sql"))
                .bind(run_id)
                .bind(attempt)
                .bind(step.index)
                .bind(&step.action)
                .bind(&step.observation)
                .bind(step.exit_code)
                .bind(step.duration_ms)
                .bind(step.input_tokens)
                .bind(step.output_tokens)
                .bind(step.cached_tokens)
                .bind(step.cost_usd)
                .bind(&step.messages)
                .bind(step.llm_ms)
                .bind(step.command_ms)
                .bind(step.replayed)
                .fetch_one(&mut *tx)
                .await?;
            fresh.steps.push(inserted);
        }
        for call in &upload.llm_calls {
            let inserted: i64 = sqlx::query_scalar(include_str!("insert_llm_call.sql"))
                .bind(run_id)
                .bind(attempt)
                .bind(call.call_index)
                .bind(call.step_index)
                .bind(&call.model)
                .bind(call.status.as_str())
                .bind(call.http_status)
                .bind(call.retries)
                .bind(call.latency_ms)
                .bind(call.input_tokens)
                .bind(call.output_tokens)
                .bind(call.cached_tokens)
                .bind(call.reasoning_tokens)
                .bind(call.tokens_estimated)
                .bind(call.cost_usd)
                .bind(&call.finish_reason)
                .bind(&call.error)
                .bind(&call.response_id)
                .fetch_one(&mut *tx)
                .await?;
            fresh.llm_calls.push(inserted > 0);
        }
        for call in &upload.critic_calls {
            let inserted: i64 = sqlx::query_scalar(include_str!("insert_critic_call.sql"))
                .bind(run_id)
                .bind(attempt)
                .bind(call.call_index)
                .bind(call.step_index)
                .bind(call.kind.as_str())
                .bind(&call.model)
                .bind(&call.trigger)
                .bind(call.decision.as_str())
                .bind(&call.feedback)
                .bind(call.score)
                .bind(call.status.as_str())
                .bind(&call.error)
                .bind(call.latency_ms)
                .bind(call.input_tokens)
                .bind(call.output_tokens)
                .bind(call.cost_usd)
                .bind(&call.device)
                .bind(call.batch_size)
                .bind(&call.prompt)
                .bind(&call.response_id)
                .fetch_one(&mut *tx)
                .await?;
            fresh.critic_calls.push(inserted > 0);
        }
        tx.commit().await?;
        Ok(Uploaded { target, fresh })
    }

    /// Records a run's outcome and closes its attempt as `completed`. Idempotent for the lease
    /// that completed it (a retried request whose first answer was lost succeeds again); any
    /// other lease token is rejected, and so is any `by` but the holder's registrar.
    pub async fn complete(&self, run_id: i64, by: Registrar, req: &CompleteRun) -> Result<()> {
        let ev = req.evaluation.as_ref();
        let row = sqlx::query(include_str!("complete.sql"))
            .bind(run_id)
            .bind(req.lease_token)
            .bind(req.outcome.as_str())
            .bind(&req.patch)
            .bind(&req.detail)
            .bind(req.totals.steps)
            .bind(req.totals.input_tokens)
            .bind(req.totals.output_tokens)
            .bind(req.totals.cached_tokens)
            .bind(req.totals.agent_cost_usd)
            .bind(req.totals.critic_cost_usd)
            .bind(ev.map(|e| e.apply_status.clone()))
            .bind(ev.map(|e| e.resolved))
            .bind(ev.map(|e| e.tests.clone()))
            .bind(ev.map(|e| e.report.clone()))
            .bind(by.0)
            .bind(ev.and_then(|e| e.test_output.clone()))
            .bind(ev.and_then(|e| e.eval_script.clone()))
            .bind(ev.and_then(|e| e.instance_log.clone()))
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return match self.refusal(run_id, req.lease_token, by).await? {
                Refusal::AlreadyDone => Ok(()),
                refusal => Err(refusal.into_error(run_id)),
            };
        };
        let sweep_id: i64 = row.get("sweep_id");
        if !req.totals.total_cost().is_zero() {
            self.stop_over_budget(Some(sweep_id)).await?;
        }
        // The sweep's completion is noticed by the maintenance loop (`finish_sweeps`) within one
        // interval. Checking here costs a walk over the sweep's dead index entries on every
        // completion, which made the completion path quadratic in the sweep's size.
        Ok(())
    }

    /// Stops sweeps whose spend reached their budget (one, or all), cancelling runs not started.
    pub async fn stop_over_budget(&self, sweep_id: Option<i64>) -> Result<()> {
        sqlx::query(include_str!("budget_stop.sql")).bind(sweep_id).execute(&self.pool).await?;
        Ok(())
    }

    /// Why a fenced write about `run_id` under `token` changed nothing. Read only on that
    /// (rare) path, so the fenced statements stay single round trips.
    async fn refusal(&self, run_id: i64, token: Uuid, by: Registrar) -> Result<Refusal> {
        let row: Option<(bool, bool, bool)> = sqlx::query_as(include_str!("refusal.sql"))
            .bind(run_id)
            .bind(token)
            .bind(by.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            None => Refusal::NoSuchRun,
            // The right lease token from the wrong API token: someone else's run.
            Some((_, true, false)) => Refusal::NotYours,
            Some((true, true, true)) => Refusal::AlreadyDone,
            Some(_) => Refusal::LeaseLost,
        })
    }

    /// An infrastructure failure: counts a failed attempt and re-queues the run (or ends it as
    /// `error` when its attempts are used up).
    pub async fn fail(&self, run_id: i64, by: Registrar, token: Uuid, reason: &str) -> Result<Requeued> {
        self.give_back(run_id, by, token, &format!("infrastructure failure: {reason}"), Ending::Failed).await
    }

    /// [`Queue::fail`] for a run whose model endpoint stayed unavailable through every retry:
    /// also opens the endpoint's breaker (see [`EndpointCooldown`]).
    pub async fn fail_on_endpoint_outage(
        &self,
        run_id: i64,
        by: Registrar,
        token: Uuid,
        reason: &str,
    ) -> Result<Requeued> {
        let reason = format!("model endpoint unavailable: {reason}");
        self.give_back(run_id, by, token, &reason, Ending::EndpointOutage).await
    }

    /// Hands a run back without counting a failed attempt (graceful drain, cancelled sweep).
    pub async fn release(&self, run_id: i64, by: Registrar, token: Uuid, reason: &str) -> Result<Requeued> {
        self.give_back(run_id, by, token, &format!("handed back: {reason}"), Ending::Released).await
    }

    /// Hands back every run still leased to `worker`, which must have been registered by
    /// `by`. A worker calls this as it exits, holding nothing: a lease it still has is one whose
    /// claim response it never read (a claim in flight when it began to drain, or a response
    /// lost on the way), which would otherwise sit until its lease expired. The worker is marked
    /// draining, so it is leased nothing more. Returns the runs handed back.
    pub async fn release_held(&self, worker: Uuid, by: Registrar, reason: &str) -> Result<Vec<i64>> {
        // Marked draining first, so that a claim arriving later (one the worker gave up on, still
        // running in the coordinator) leases it nothing.
        let bound: Option<bool> = sqlx::query_scalar(include_str!("mark_draining.sql"))
            .bind(worker)
            .bind(by.0)
            .fetch_optional(&self.pool)
            .await?;
        match bound {
            None => return Err(Error::NotFound(format!("worker {worker} is not registered"))),
            Some(false) => return Err(worker_forbidden(worker)),
            Some(true) => {}
        }
        let held: Vec<(i64, Uuid)> =
            sqlx::query_as(include_str!("held_runs.sql")).bind(worker).fetch_all(&self.pool).await?;
        let mut released = Vec::with_capacity(held.len());
        for (run_id, token) in held {
            // Each goes through the fenced hand-back, so one that expired or finished meanwhile
            // is left alone.
            match self.release(run_id, by, token, reason).await {
                Ok(_) => released.push(run_id),
                Err(Error::LeaseLost(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(released)
    }

    async fn give_back(
        &self,
        run_id: i64,
        by: Registrar,
        token: Uuid,
        reason: &str,
        ending: Ending,
    ) -> Result<Requeued> {
        let state: Option<String> = sqlx::query_scalar(include_str!("give_back.sql"))
            .bind(run_id)
            .bind(token)
            .bind(reason)
            .bind(ending != Ending::Released)
            .bind(by.0)
            .bind(ending == Ending::EndpointOutage)
            .bind(self.cooldown.base.as_millis() as f64)
            .bind(self.cooldown.max.as_millis() as f64)
            .fetch_optional(&self.pool)
            .await?;
        let Some(state) = state else {
            return Err(self.refusal(run_id, token, by).await?.into_error(run_id));
        };
        let requeued = match run_state(&state)? {
            RunState::Queued => Requeued::Queued,
            RunState::Paused => Requeued::Paused,
            RunState::Cancelled => Requeued::Cancelled,
            // give_back.sql sets no other state.
            RunState::Error | RunState::Running | RunState::Done => Requeued::Error,
        };
        if matches!(requeued, Requeued::Cancelled | Requeued::Error) {
            self.finish_sweeps_of_run(run_id).await?;
        }
        Ok(requeued)
    }

    /// Takes back up to `limit` runs whose lease has run out. Returns how many went where.
    pub async fn expire_leases(&self, limit: i64) -> Result<Expired> {
        let rows = sqlx::query(include_str!("expire_leases.sql")).bind(limit).fetch_all(&self.pool).await?;
        let mut expired = Expired::default();
        for row in &rows {
            *expired.0.entry(run_state(row.get("state"))?).or_insert(0) += 1;
        }
        if expired.get(RunState::Error) > 0 || expired.get(RunState::Cancelled) > 0 {
            self.finish_sweeps(None).await?;
        }
        Ok(expired)
    }

    /// Marks sweeps with no queued, running or paused run as completed (one sweep, or all).
    pub async fn finish_sweeps(&self, sweep_id: Option<i64>) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(include_str!("finish_sweeps.sql")).bind(sweep_id).fetch_all(&self.pool).await?)
    }

    async fn finish_sweeps_of_run(&self, run_id: i64) -> Result<()> {
        let sweep: i64 =
            sqlx::query_scalar(include_str!("sweep_of_run.sql")).bind(run_id).fetch_one(&self.pool).await?;
        self.finish_sweeps(Some(sweep)).await?;
        Ok(())
    }
}

/// The runs whose lease ran out in one [`Queue::expire_leases`] pass, counted by the state each
/// went to (`queued`, `paused`, `cancelled` or `error`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expired(BTreeMap<RunState, u64>);

impl Expired {
    /// How many went to `state`.
    pub fn get(&self, state: RunState) -> u64 {
        self.0.get(&state).copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each state some went to, with how many.
    pub fn iter(&self) -> impl Iterator<Item = (RunState, u64)> + '_ {
        self.0.iter().map(|(s, n)| (*s, *n))
    }
}

impl fmt::Display for Expired {
    /// `queued=2 error=1`, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (state, n) in self.iter() {
            write!(f, "{sep}{}={n}", state.as_str())?;
            sep = " ";
        }
        Ok(())
    }
}

/// Cancels the runs of `sweep_id` that have not started (`cancel_runs.sql`), in the caller's
/// transaction (which has locked the sweep's row and marked it cancelled).
pub(crate) async fn cancel_runs(tx: &mut Transaction<'_, Postgres>, sweep_id: i64) -> Result<()> {
    sqlx::query(include_str!("cancel_runs.sql")).bind(sweep_id).execute(&mut **tx).await?;
    Ok(())
}

/// Pauses the queued runs of `sweep_id` (`pause_runs.sql`), in the caller's transaction.
pub(crate) async fn pause_runs(tx: &mut Transaction<'_, Postgres>, sweep_id: i64) -> Result<()> {
    sqlx::query(include_str!("pause_runs.sql")).bind(sweep_id).execute(&mut **tx).await?;
    Ok(())
}

/// Re-queues the unfinished runs of `sweep_id` (`resume_runs.sql`), in the caller's transaction.
pub(crate) async fn resume_runs(tx: &mut Transaction<'_, Postgres>, sweep_id: i64) -> Result<()> {
    sqlx::query(include_str!("resume_runs.sql")).bind(sweep_id).execute(&mut **tx).await?;
    Ok(())
}

/// Why a fenced write changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NoSuchRun,
    /// Not (or no longer) the run's lease.
    LeaseLost,
    /// The run's lease, but its holder was registered by another API token.
    NotYours,
    /// Completed under this lease already (a retried completion).
    AlreadyDone,
}

impl Refusal {
    fn into_error(self, run_id: i64) -> Error {
        match self {
            Refusal::NoSuchRun => Error::NotFound(format!("run {run_id} does not exist")),
            Refusal::NotYours => Error::Forbidden(format!(
                "run {run_id} is held by a worker that another API token registered; a worker token acts only on runs held by workers it registered"
            )),
            Refusal::LeaseLost | Refusal::AlreadyDone => lease_lost(run_id),
        }
    }
}

fn lease_lost(run_id: i64) -> Error {
    Error::LeaseLost(format!(
        "lease lost: run {run_id} is not held under this lease token (it expired and was re-queued, or the run already ended)"
    ))
}

/// A request for `worker` through an API token that did not register it.
pub fn worker_forbidden(worker: Uuid) -> Error {
    Error::Forbidden(format!(
        "worker {worker} was registered by another API token; a worker token acts only for workers it registered"
    ))
}

/// Keeps only the candidates that fit their caps, re-counting running runs of each capped
/// endpoint and sweep under its advisory lock (held until the transaction ends, so the count
/// cannot change under us).
async fn within_caps(tx: &mut Transaction<'_, Postgres>, candidates: Vec<Candidate>) -> Result<Vec<i64>> {
    let mut endpoint_room: BTreeMap<i64, i64> = BTreeMap::new();
    let mut sweep_room: BTreeMap<i64, i64> = BTreeMap::new();
    for c in &candidates {
        if let Some(cap) = c.endpoint_cap {
            endpoint_room.insert(c.endpoint_id, i64::from(cap));
        }
        if let Some(cap) = c.sweep_cap {
            sweep_room.insert(c.sweep_id, i64::from(cap));
        }
    }
    // BTreeMap iteration is ascending: the fixed lock order.
    for (endpoint, room) in endpoint_room.iter_mut() {
        *room -= locked_running_count(tx, LOCK_ENDPOINT, *endpoint).await?;
    }
    for (sweep, room) in sweep_room.iter_mut() {
        *room -= locked_running_count(tx, LOCK_SWEEP, *sweep).await?;
    }
    let mut chosen = Vec::with_capacity(candidates.len());
    for c in candidates {
        let endpoint_ok = endpoint_room.get(&c.endpoint_id).is_none_or(|r| *r > 0);
        let sweep_ok = sweep_room.get(&c.sweep_id).is_none_or(|r| *r > 0);
        if endpoint_ok && sweep_ok {
            if let Some(r) = endpoint_room.get_mut(&c.endpoint_id) {
                *r -= 1;
            }
            if let Some(r) = sweep_room.get_mut(&c.sweep_id) {
                *r -= 1;
            }
            chosen.push(c.id);
        }
    }
    Ok(chosen)
}

/// Locks the capped key `id` of `class` and counts its running runs.
async fn locked_running_count(tx: &mut Transaction<'_, Postgres>, class: i32, id: i64) -> Result<i64> {
    sqlx::query(include_str!("advisory_lock.sql"))
        .bind(class)
        // Ids beyond i32 share a lock with another id: harmless (a little extra waiting).
        .bind(id as i32)
        .execute(&mut **tx)
        .await?;
    let count = if class == LOCK_ENDPOINT {
        include_str!("running_in_endpoint.sql")
    } else {
        include_str!("running_in_sweep.sql")
    };
    Ok(sqlx::query_scalar(count).bind(id).fetch_one(&mut **tx).await?)
}

fn lease_from_row(row: &sqlx::postgres::PgRow) -> Lease {
    Lease {
        run_id: row.get("id"),
        sweep_id: row.get("sweep_id"),
        attempt: row.get("attempt"),
        lease_token: row.get("lease_token"),
        lease_expires_at: row.get("lease_expires_at"),
        repeat_index: row.get("repeat_index"),
        dataset_id: row.get("dataset_id"),
        instance_id: row.get("instance_id"),
        agent_id: row.get("agent_id"),
        critic_id: row.get("critic_id"),
    }
}

pub mod desk;

#[cfg(test)]
mod tests;
