//! Sweeps: checking and submission (expansion into runs), status, the cancel/pause/resume
//! transitions, and deletion.

use std::collections::BTreeMap;

use protocol::{RunState, SweepState, SweepStatus, SweepSubmitted};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rust_decimal::Decimal;
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::datasets::{self, InstanceKey};
use crate::db::{Error, Result};
use crate::queue;
use crate::sweep_file::{Selection, SweepFile};

/// The default limit of runs per sweep: SWE-bench Verified (500 instances) x 10 conditions
/// x 200 repeats.
pub const DEFAULT_MAX_RUNS_PER_SWEEP: u64 = 1_000_000;

/// Applies a sweep's selection to a dataset's instances. Returns the chosen ids, sorted.
pub fn select_instances(
    keys: &[InstanceKey],
    select: &Selection,
) -> std::result::Result<Vec<String>, String> {
    if !select.ids.is_empty() {
        let known: std::collections::HashSet<&str> = keys.iter().map(|k| k.instance_id.as_str()).collect();
        let unknown: Vec<&str> =
            select.ids.iter().map(String::as_str).filter(|id| !known.contains(id)).collect();
        if !unknown.is_empty() {
            return Err(format!(
                "select.ids names instances the dataset does not have: {}",
                unknown.join(", ")
            ));
        }
    }
    let regex = match &select.id_regex {
        Some(r) => Some(regex::Regex::new(r).map_err(|e| format!("select.id_regex: {e}"))?),
        None => None,
    };
    let mut chosen: Vec<String> = keys
        .iter()
        .filter(|k| select.ids.is_empty() || select.ids.contains(&k.instance_id))
        .filter(|k| select.repos.is_empty() || select.repos.contains(&k.repo))
        .filter(|k| {
            select.difficulty.is_empty()
                || k.difficulty.as_ref().is_some_and(|d| select.difficulty.contains(d))
        })
        .filter(|k| regex.as_ref().is_none_or(|r| r.is_match(&k.instance_id)))
        .map(|k| k.instance_id.clone())
        .collect();
    chosen.sort();
    if let Some(sample) = &select.sample {
        // ChaCha8 with a fixed seed gives the same sample on every platform and version.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(sample.seed);
        chosen.shuffle(&mut rng);
        chosen.truncate(sample.n as usize);
        chosen.sort();
    }
    if chosen.is_empty() {
        return Err("the selection matches no instance of the dataset".into());
    }
    Ok(chosen)
}

/// Creates a sweep and its runs, or returns the existing one when the same name and config
/// hash were submitted before (resubmitting is idempotent). The sweep has no owner: over the
/// API, only admins may change it (the API submits with [`submit_as`]).
/// At most [`DEFAULT_MAX_RUNS_PER_SWEEP`] runs.
pub async fn submit(pool: &PgPool, file: &SweepFile, config_toml: &str) -> Result<SweepSubmitted> {
    submit_as(pool, file, config_toml, None, DEFAULT_MAX_RUNS_PER_SWEEP).await
}

/// [`submit`], recording `owner` (the id of the submitting token) as the sweep's owner when
/// it creates the sweep. A resubmission returns the existing sweep with its owner unchanged.
/// A sweep that would expand into more than `max_runs` runs is refused (`Invalid`) before
/// anything is allocated for its runs.
pub async fn submit_as(
    pool: &PgPool,
    file: &SweepFile,
    config_toml: &str,
    owner: Option<i64>,
    max_runs: u64,
) -> Result<SweepSubmitted> {
    let Checked { hash, existing, dataset_id, instance_ids, images } = check(pool, file, max_runs).await?;
    if let Some(existing) = existing {
        return Ok(existing);
    }

    let mut tx = pool.begin().await?;
    let new = NewSweep { hash: &hash, config_toml, dataset_id, kind: "sweep", owner };
    let Some(created) = insert_sweep(&mut tx, file, &new).await? else {
        // Someone submitted the same sweep concurrently and won.
        tx.rollback().await?;
        return find(pool, &file.name, &hash)
            .await?
            .ok_or_else(|| Error::Internal("sweep vanished after a conflicting insert".into()));
    };
    let Created { sweep_id, agent_ids, critic_ids } = created;
    let grid = RunGrid {
        instance_ids: &instance_ids,
        images: &images,
        agents: &agent_ids,
        critics: &critic_ids,
        repeats: file.repeats,
        replays: file.critics.iter().any(|c| c.params().is_some_and(|p| p.prefix_from.is_some())),
    };
    let runs = insert_runs(&mut tx, sweep_id, dataset_id, &grid).await?;
    record_key_envs(&mut tx, sweep_id, file, &agent_ids, &critic_ids).await?;
    tx.commit().await?;
    refresh_statistics(pool, runs).await;
    notify_runs(pool, sweep_id).await?;
    Ok(SweepSubmitted {
        sweep_id,
        name: file.name.clone(),
        created: true,
        runs,
        config_hash: hash,
        warnings: Vec::new(),
    })
}

/// What submitting a sweep file checks against the database, and what it found. Both
/// [`submit_as`] and [`validate`] go through [`check`], so a file that validates submits.
struct Checked {
    hash: String,
    /// The sweep submitted before with this name and configuration hash, if any.
    existing: Option<SweepSubmitted>,
    dataset_id: i64,
    /// The selected instances, sorted.
    instance_ids: Vec<String>,
    /// The sandbox image of each selected instance, in the order of `instance_ids`.
    images: Vec<String>,
}

/// Checks a parsed sweep file as submitting it does, writing nothing: its name is not taken
/// by another configuration, its dataset is imported, its selection picks instances, and it
/// expands into at most `max_runs` runs (a resubmission of an existing sweep is not counted
/// again: it adds nothing).
async fn check(pool: &PgPool, file: &SweepFile, max_runs: u64) -> Result<Checked> {
    let hash = file.config_hash();
    let existing = find(pool, &file.name, &hash).await?;
    if existing.is_none() {
        if let Some(taken) = name_taken(pool, &file.name).await? {
            return Err(taken.conflict("sweep"));
        }
    }
    let dataset = datasets::get(pool, &file.dataset.name).await.map_err(|e| match e {
        Error::NotFound(_) => Error::NotFound(format!(
            "dataset `{}` is not imported: run `steer dataset import FILE --name {}` or set dataset.path in the sweep file",
            file.dataset.name, file.dataset.name
        )),
        other => other,
    })?;
    let keys = datasets::instance_keys(pool, dataset.id).await?;
    let instance_ids = select_instances(&keys, &file.select).map_err(Error::Invalid)?;
    if existing.is_none() {
        check_run_count(instance_ids.len(), file, max_runs)?;
    }
    let images = images_of(&keys, &instance_ids, &file.sandbox);
    Ok(Checked { hash, existing, dataset_id: dataset.id, instance_ids, images })
}

/// Checks a sweep file as [`submit_as`] would (the same refusals) and describes what it would
/// be: runs per condition, the instances selected, the images needed against those the workers
/// heard from within `live_within` hold, the model endpoints, and the most it can spend.
/// Writes nothing.
pub async fn validate(
    pool: &PgPool,
    file: &SweepFile,
    max_runs: u64,
    live_within: std::time::Duration,
) -> Result<protocol::SweepValidation> {
    let Checked { existing, instance_ids, images, .. } = check(pool, file, max_runs).await?;
    let instances = instance_ids.len() as i64;
    // `check` bounded the count by `max_runs` (a u64), or the sweep exists already with its runs.
    let per_condition = instances.checked_mul(i64::from(file.repeats)).ok_or_else(|| {
        Error::Invalid(format!("{instances} instances x {} repeats overflows", file.repeats))
    })?;
    let mut conditions = Vec::new();
    for agent in &file.agents {
        for critic in &file.critics {
            conditions.push(protocol::ConditionRuns {
                agent: agent.name.clone(),
                critic: critic.name.clone(),
                runs: per_condition,
                max_cost_usd_per_run: agent.limits.max_cost_usd,
            });
        }
    }
    let runs: i64 = conditions.iter().map(|c| c.runs).sum();
    let uncapped_agents: Vec<String> =
        file.agents.iter().filter(|a| a.limits.max_cost_usd.is_none()).map(|a| a.name.clone()).collect();
    let max_spend_usd = if uncapped_agents.is_empty() {
        let mut total = Decimal::ZERO;
        for c in &conditions {
            let cap = c.max_cost_usd_per_run.unwrap_or_default();
            total = Decimal::from(c.runs)
                .checked_mul(cap)
                .and_then(|spend| total.checked_add(spend))
                .ok_or_else(|| {
                    Error::Invalid(format!("agent `{}`: max_cost_usd x runs overflows", c.agent))
                })?;
        }
        Some(total)
    } else {
        None
    };
    let mut needed: Vec<String> = images;
    needed.sort();
    needed.dedup();
    let (live_workers, held) = super::workers::live_images(pool, live_within).await?;
    let missing: Vec<&String> = needed.iter().filter(|i| !held.contains(i.as_str())).collect();
    let mut endpoints: Vec<String> =
        file.agents.iter().map(|a| crate::metrics::endpoint_label(&a.base_url)).collect();
    endpoints.sort();
    endpoints.dedup();
    Ok(protocol::SweepValidation {
        name: file.name.clone(),
        dataset: file.dataset.name.clone(),
        already_submitted: existing.map(|e| e.sweep_id),
        instances,
        first_instances: instance_ids.iter().take(protocol::VALIDATION_SAMPLE).cloned().collect(),
        repeats: file.repeats,
        conditions,
        runs,
        images: protocol::ImageCheck {
            needed: needed.len() as i64,
            held: (needed.len() - missing.len()) as i64,
            missing: missing.into_iter().take(protocol::VALIDATION_SAMPLE).cloned().collect(),
            live_workers,
        },
        endpoints,
        max_spend_usd,
        uncapped_agents,
        budget_usd: file.budget_usd,
        warnings: Vec::new(),
    })
}

/// Refuses a sweep of more than `max_runs` runs, naming the count (computed with checked
/// arithmetic: a count past `u64` is refused too) and the limit.
fn check_run_count(instances: usize, file: &SweepFile, max_runs: u64) -> Result<()> {
    let (agents, critics) = (file.agents.len(), file.critics.len());
    let runs = [agents, critics]
        .into_iter()
        .try_fold(instances as u64, |n, k| n.checked_mul(k as u64))
        .and_then(|n| n.checked_mul(u64::from(file.repeats)));
    let count = match runs {
        Some(n) if n <= max_runs => {
            // Repeat numbers are stored as 32-bit integers.
            if i32::try_from(file.repeats).is_err() {
                return Err(Error::Invalid(format!("repeats = {} is more than {}", file.repeats, i32::MAX)));
            }
            return Ok(());
        }
        Some(n) => n.to_string(),
        None => format!("more than {}", u64::MAX),
    };
    Err(Error::Invalid(format!(
        "the sweep expands into {count} runs ({instances} instances x {agents} agents x {critics} critics x {} repeats), \
         over this coordinator's limit of {max_runs} runs per sweep (`steer serve --max-runs-per-sweep`); \
         select fewer instances or repeats, or split the sweep",
        file.repeats
    )))
}

pub(crate) async fn find(pool: &PgPool, name: &str, hash: &str) -> Result<Option<SweepSubmitted>> {
    let row = sqlx::query(
        "SELECT s.id, (SELECT count(*) FROM runs r WHERE r.sweep_id = s.id) AS runs
         FROM sweeps s WHERE s.name = $1 AND s.config_hash = $2",
    )
    .bind(name)
    .bind(hash)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| SweepSubmitted {
        sweep_id: r.get("id"),
        name: name.to_string(),
        created: false,
        runs: r.get("runs"),
        config_hash: hash.to_string(),
        warnings: Vec::new(),
    }))
}

/// The rows a new sweep starts with (everything but its runs).
pub(crate) struct Created {
    pub sweep_id: i64,
    /// (agent id, endpoint id) in the order of the file's agents.
    pub agent_ids: Vec<(i64, i64)>,
    pub critic_ids: Vec<i64>,
}

/// What a new sweep row holds besides its file.
pub(crate) struct NewSweep<'a> {
    pub hash: &'a str,
    /// As submitted.
    pub config_toml: &'a str,
    pub dataset_id: i64,
    /// `sweep` or `eval`.
    pub kind: &'a str,
    /// The submitting token's id (None: no owner, changed by admins only).
    pub owner: Option<i64>,
}

/// Advisory lock class of sweep names (the queue's classes are 1 and 2): held while a new
/// sweep's name is checked and inserted, so that two submissions of one name with different
/// configurations cannot both succeed.
const LOCK_SWEEP_NAME: i32 = 3;

/// A sweep (or evaluation) holding a name, which no other configuration may take.
pub(crate) struct NameTaken {
    pub name: String,
    pub id: i64,
    /// `sweep` or `eval`.
    pub kind: String,
}

impl NameTaken {
    /// The refusal of a new `new_kind` (`sweep` or `eval`) under the taken name.
    pub(crate) fn conflict(&self, new_kind: &str) -> Error {
        let holder = if self.kind == "eval" { "evaluation" } else { "sweep" };
        let what = if new_kind == "eval" { "these predictions" } else { "this configuration" };
        let fix = if new_kind == "eval" {
            "choose another run id (`steer eval --run-id`), or leave it out: the default is derived from the predictions"
        } else {
            "give the new sweep another name"
        };
        Error::Conflict(format!(
            "the name `{}` is taken by {holder} {} with a different configuration than {what}; {fix}",
            self.name, self.id
        ))
    }
}

/// The sweep or evaluation named `name`, if any (the oldest, should several predate the check).
pub(crate) async fn name_taken<'e, E: sqlx::PgExecutor<'e>>(ex: E, name: &str) -> Result<Option<NameTaken>> {
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT id, kind FROM sweeps WHERE name = $1 ORDER BY id LIMIT 1")
            .bind(name)
            .fetch_optional(ex)
            .await?;
    Ok(row.map(|(id, kind)| NameTaken { name: name.to_string(), id, kind }))
}

/// Inserts a sweep with its agents and critics, or returns None when the same name and config
/// hash exist already (a concurrent submission won). A name taken by another configuration,
/// of a sweep or of an evaluation, is a conflict: a name means one sweep.
pub(crate) async fn insert_sweep(
    tx: &mut Transaction<'_, Postgres>,
    file: &SweepFile,
    new: &NewSweep<'_>,
) -> Result<Option<Created>> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(LOCK_SWEEP_NAME)
        .bind(&file.name)
        .execute(&mut **tx)
        .await?;
    let same: Option<i64> = sqlx::query_scalar("SELECT id FROM sweeps WHERE name = $1 AND config_hash = $2")
        .bind(&file.name)
        .bind(new.hash)
        .fetch_optional(&mut **tx)
        .await?;
    if same.is_some() {
        return Ok(None);
    }
    if let Some(taken) = name_taken(&mut **tx, &file.name).await? {
        return Err(taken.conflict(new.kind));
    }
    let spec = serde_json::to_value(file).map_err(|e| Error::Internal(e.to_string()))?;
    let sweep_id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO sweeps (name, config_hash, config_toml, spec, dataset_id, max_attempts, max_running, budget_usd,
                             kind, owner_token_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (name, config_hash) DO NOTHING RETURNING id",
    )
    .bind(&file.name)
    .bind(new.hash)
    .bind(new.config_toml)
    .bind(&spec)
    .bind(new.dataset_id)
    .bind(file.max_attempts as i32)
    .bind(file.max_running.map(|m| m as i32))
    .bind(file.budget_usd)
    .bind(new.kind)
    .bind(new.owner)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(sweep_id) = sweep_id else { return Ok(None) };
    let mut agent_ids = Vec::new();
    for agent in &file.agents {
        agent_ids.push(insert_agent(tx, sweep_id, agent).await?);
    }
    let mut critic_ids = Vec::new();
    for critic in &file.critics {
        let spec = serde_json::to_value(critic).map_err(|e| Error::Internal(e.to_string()))?;
        let kind = spec["kind"].as_str().unwrap_or_default().to_string();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO critics (sweep_id, name, kind, params, spec) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(sweep_id)
        .bind(&critic.name)
        .bind(kind)
        .bind(critic.params_json())
        .bind(&spec)
        .fetch_one(&mut **tx)
        .await?;
        critic_ids.push(id);
    }
    Ok(Some(Created { sweep_id, agent_ids, critic_ids }))
}

/// The dispatch number a new sweep's first run gets (see `insert_runs`).
pub(crate) async fn next_fair_seq(tx: &mut Transaction<'_, Postgres>) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE((SELECT min(fair_seq) FROM runs WHERE state = 'queued'),
                         (SELECT max(fair_seq) + 1 FROM runs), 0)",
    )
    .fetch_one(&mut **tx)
    .await?)
}

/// Refreshes the planner's statistics of `runs` after `added` runs were inserted, when that is
/// a large part of the table: a plan made from statistics that predate a large sweep can
/// walk the whole queue on every claim until autovacuum comes by. Best effort: a failure only
/// leaves that to autovacuum.
pub(crate) async fn refresh_statistics(pool: &PgPool, added: i64) {
    if added < 10_000 {
        return;
    }
    if let Err(e) = sqlx::query("ANALYZE runs").execute(pool).await {
        tracing::warn!(error = %e, "could not refresh the statistics of `runs` after a large sweep");
    }
}

pub(crate) async fn notify_runs(pool: &PgPool, sweep_id: i64) -> Result<()> {
    sqlx::query("SELECT pg_notify('steer_runs', $1)").bind(sweep_id.to_string()).execute(pool).await?;
    Ok(())
}

async fn insert_agent(
    tx: &mut Transaction<'_, Postgres>,
    sweep_id: i64,
    agent: &protocol::AgentSpec,
) -> Result<(i64, i64)> {
    // The endpoint row is shared by every sweep that uses the same base URL; a cap given by a
    // newer sweep replaces the old one, an absent cap leaves it alone.
    let endpoint_id: i64 = sqlx::query_scalar(
        "INSERT INTO endpoints (base_url, max_concurrency) VALUES ($1, $2)
         ON CONFLICT (base_url) DO UPDATE
         SET max_concurrency = COALESCE(EXCLUDED.max_concurrency, endpoints.max_concurrency)
         RETURNING id",
    )
    .bind(&agent.base_url)
    .bind(agent.max_concurrency.map(|c| c as i32))
    .fetch_one(&mut **tx)
    .await?;
    let spec = serde_json::to_value(agent).map_err(|e| Error::Internal(e.to_string()))?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO agents (sweep_id, name, endpoint_id, model, price_input_per_mtok, price_output_per_mtok,
                             price_cached_per_mtok, max_steps, max_cost_usd, max_wall_time_s, spec)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(sweep_id)
    .bind(&agent.name)
    .bind(endpoint_id)
    .bind(&agent.model)
    .bind(agent.price.input_per_mtok)
    .bind(agent.price.output_per_mtok)
    .bind(agent.price.cached_input_per_mtok)
    .bind(agent.limits.max_steps as i32)
    .bind(agent.limits.max_cost_usd)
    .bind(agent.limits.max_wall_time_s as i64)
    .bind(&spec)
    .fetch_one(&mut **tx)
    .await?;
    Ok((id, endpoint_id))
}

/// Expands instances x agents x critics x repeats into queued runs.
///
/// Dispatch order (`fair_seq`) is start-time fair queueing: a new sweep's runs are numbered from
/// the lowest number still queued, so concurrently running sweeps interleave one run each
/// instead of the older sweep finishing first. Within a sweep, runs go repeat by repeat and,
/// within a repeat, all conditions of an instance together, so a sweep stopped half-way still
/// has paired conditions on the instances it reached.
/// What a sweep expands: instances (with their images) x agents x critics x repeats.
struct RunGrid<'a> {
    instance_ids: &'a [String],
    /// The sandbox image of each instance, in the order of `instance_ids`.
    images: &'a [String],
    /// (agent id, endpoint id).
    agents: &'a [(i64, i64)],
    critics: &'a [i64],
    repeats: u32,
    /// A critic condition replays another's prefix (`prefix_from`): its runs are linked to
    /// their base runs.
    replays: bool,
}

async fn insert_runs(
    tx: &mut Transaction<'_, Postgres>,
    sweep_id: i64,
    dataset_id: i64,
    grid: &RunGrid<'_>,
) -> Result<i64> {
    let base = next_fair_seq(tx).await?;
    // The grid is expanded by Postgres: a million-run sweep sends its instances, agents and
    // critics, not a million rows. Dispatch numbers follow repeats, then instances, then
    // agents, then critics (the fair-share order claims walk).
    let (agents, endpoints): (Vec<i64>, Vec<i64>) = grid.agents.iter().copied().unzip();
    let inserted = sqlx::query(
        "INSERT INTO runs (sweep_id, dataset_id, instance_id, image, agent_id, endpoint_id, critic_id, repeat_index, fair_seq)
         SELECT $1, $2, i.id, i.image, a.agent, a.endpoint, c.critic, r.rep,
                $8 + ((r.rep::bigint * $9 + i.ord - 1) * $10 + a.ord - 1) * $11 + c.ord - 1
         FROM generate_series(0, $7 - 1) AS r(rep)
         CROSS JOIN unnest($3::text[], $4::text[]) WITH ORDINALITY AS i(id, image, ord)
         CROSS JOIN unnest($5::bigint[], $6::bigint[]) WITH ORDINALITY AS a(agent, endpoint, ord)
         CROSS JOIN unnest($12::bigint[]) WITH ORDINALITY AS c(critic, ord)
         ORDER BY 9",
    )
    .bind(sweep_id)
    .bind(dataset_id)
    .bind(grid.instance_ids)
    .bind(grid.images)
    .bind(&agents)
    .bind(&endpoints)
    .bind(grid.repeats as i32)
    .bind(base)
    .bind(grid.instance_ids.len() as i64)
    .bind(agents.len() as i64)
    .bind(grid.critics.len() as i64)
    .bind(grid.critics)
    .execute(&mut **tx)
    .await?;
    if !grid.replays {
        // Nothing to link: skipping the join matters on a large sweep, whose fresh rows the
        // planner has no statistics for yet.
        return Ok(inserted.rows_affected() as i64);
    }
    // Prefix replay: each run of a condition naming a base condition waits for, and replays,
    // the base condition's run of the same instance, agent and repeat.
    sqlx::query(
        "UPDATE runs r SET prefix_of = b.id
         FROM critics c, critics bc, runs b
         WHERE r.sweep_id = $1 AND c.id = r.critic_id AND c.params ->> 'prefix_from' IS NOT NULL
           AND bc.sweep_id = $1 AND bc.name = c.params ->> 'prefix_from'
           AND b.sweep_id = $1 AND b.critic_id = bc.id AND b.instance_id = r.instance_id
           AND b.agent_id = r.agent_id AND b.repeat_index = r.repeat_index",
    )
    .bind(sweep_id)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() as i64)
}

/// Records on each run the variables its worker must read API keys from (its agent's and its
/// remote critic's `api_key_env`): the claim hands a run only to workers allowing them all.
async fn record_key_envs(
    tx: &mut Transaction<'_, Postgres>,
    sweep_id: i64,
    file: &SweepFile,
    agent_ids: &[(i64, i64)],
    critic_ids: &[i64],
) -> Result<()> {
    let agent_vars: Vec<Option<&str>> = file.agents.iter().map(|a| a.api_key_env.as_deref()).collect();
    let critic_vars: Vec<Option<&str>> = file.critics.iter().map(|c| c.api_key_env()).collect();
    if agent_vars.iter().chain(&critic_vars).all(Option::is_none) {
        return Ok(());
    }
    let agents: Vec<i64> = agent_ids.iter().map(|(id, _)| *id).collect();
    sqlx::query(
        "UPDATE runs r SET key_envs = array_remove(ARRAY[a.var, c.var], NULL)
         FROM unnest($2::bigint[], $3::text[]) AS a(id, var), unnest($4::bigint[], $5::text[]) AS c(id, var)
         WHERE r.sweep_id = $1 AND r.agent_id = a.id AND r.critic_id = c.id
           AND (a.var IS NOT NULL OR c.var IS NOT NULL)",
    )
    .bind(sweep_id)
    .bind(&agents)
    .bind(&agent_vars)
    .bind(critic_ids)
    .bind(&critic_vars)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The sandbox image of each chosen instance, as workers will resolve it.
pub(crate) fn images_of(
    keys: &[InstanceKey],
    ids: &[String],
    sandbox: &protocol::SandboxSettings,
) -> Vec<String> {
    let by_id: std::collections::HashMap<&str, &InstanceKey> =
        keys.iter().map(|k| (k.instance_id.as_str(), k)).collect();
    ids.iter()
        .map(|id| {
            protocol::images::image_name(id, by_id.get(id.as_str()).and_then(|k| k.image.as_deref()), sandbox)
        })
        .collect()
}

/// The sandbox images of a sweep's runs that have not finished (what a worker should pre-pull).
pub async fn images(pool: &PgPool, sweep_id: i64) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT image FROM runs
         WHERE sweep_id = $1 AND image IS NOT NULL AND state IN ('queued', 'running', 'paused')
         ORDER BY image",
    )
    .bind(sweep_id)
    .fetch_all(pool)
    .await?)
}

/// Finds a sweep by id, or by name when `key` is not a number (newest first); `NotFound` when
/// there is no such sweep, so that every route about a sweep answers 404 for a missing one.
pub async fn resolve(pool: &PgPool, key: &str) -> Result<i64> {
    if let Ok(id) = key.parse::<i64>() {
        return sqlx::query_scalar("SELECT id FROM sweeps WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no sweep with id {id}")));
    }
    sqlx::query_scalar("SELECT id FROM sweeps WHERE name = $1 ORDER BY id DESC LIMIT 1")
        .bind(key)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no sweep named `{key}`")))
}

/// Whom a sweep belongs to, as seen by one token.
#[derive(Debug, Clone, PartialEq)]
pub struct Ownership {
    /// The sweep's name.
    pub sweep: String,
    /// The name of the token that submitted it (None: no recorded owner).
    pub owner: Option<String>,
    /// Whether the asking token is under the owner's name.
    pub asker_owns: bool,
}

/// The owner of sweep `sweep_id`, and whether token `asker` (an `api_tokens` id) owns it.
pub async fn ownership(pool: &PgPool, sweep_id: i64, asker: i64) -> Result<Ownership> {
    let row: Option<(String, Option<String>, bool)> = sqlx::query_as(
        "SELECT s.name, o.name, COALESCE(o.name = me.name, false)
         FROM sweeps s
         LEFT JOIN api_tokens o ON o.id = s.owner_token_id
         LEFT JOIN api_tokens me ON me.id = $2
         WHERE s.id = $1",
    )
    .bind(sweep_id)
    .bind(asker)
    .fetch_optional(pool)
    .await?;
    let (sweep, owner, asker_owns) =
        row.ok_or_else(|| Error::NotFound(format!("no sweep with id {sweep_id}")))?;
    Ok(Ownership { sweep, owner, asker_owns })
}

pub async fn status(pool: &PgPool, sweep_id: i64) -> Result<SweepStatus> {
    let row = sqlx::query(
        "SELECT id, name, state, stop_reason, config_hash, created_at, finished_at, spent_usd, budget_usd
         FROM sweeps WHERE id = $1",
    )
    .bind(sweep_id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::NotFound(format!("no sweep with id {sweep_id}")))?;
    let mut states: BTreeMap<String, i64> =
        RunState::ALL.iter().map(|s| (s.as_str().to_string(), 0)).collect();
    let mut outcomes = BTreeMap::new();
    let mut total = 0;
    for r in sqlx::query(
        "SELECT state, outcome, count(*) AS n FROM runs WHERE sweep_id = $1 GROUP BY state, outcome",
    )
    .bind(sweep_id)
    .fetch_all(pool)
    .await?
    {
        let n: i64 = r.get("n");
        total += n;
        *states.entry(r.get("state")).or_insert(0) += n;
        if let Some(outcome) = r.get::<Option<String>, _>("outcome") {
            *outcomes.entry(outcome).or_insert(0) += n;
        }
    }
    let resting: Vec<(String, i32, f64)> = sqlx::query_as(
        "SELECT DISTINCT e.base_url, e.outage_failures,
                GREATEST(COALESCE(extract(epoch FROM e.cooldown_until - now()), 0), 0)::float8
         FROM endpoints e JOIN agents a ON a.endpoint_id = e.id
         WHERE a.sweep_id = $1 AND e.outage_failures > 0
         ORDER BY 1",
    )
    .bind(sweep_id)
    .fetch_all(pool)
    .await?;
    let reasons = reason_groups(pool, sweep_id).await?;
    let state: String = row.get("state");
    Ok(SweepStatus {
        id: row.get("id"),
        name: row.get("name"),
        state: state.parse().map_err(Error::Internal)?,
        stop_reason: row.get("stop_reason"),
        config_hash: row.get("config_hash"),
        created_at: row.get("created_at"),
        finished_at: row.get("finished_at"),
        total_runs: total,
        states,
        outcomes,
        spent_usd: row.get("spent_usd"),
        budget_usd: row.get("budget_usd"),
        resting_endpoints: resting
            .into_iter()
            .map(|(base_url, outages, resting_s)| protocol::RestingEndpoint {
                endpoint: crate::metrics::endpoint_label(&base_url),
                outages,
                resting_s,
            })
            .collect(),
        waiting: Vec::new(),
        reasons,
    })
}

/// The sweep's failed and cancelled runs, and its unfinished runs that failed an attempt,
/// grouped by state and the first line of their last error: the most common groups first.
async fn reason_groups(pool: &PgPool, sweep_id: i64) -> Result<Vec<protocol::ReasonGroup>> {
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT state,
                COALESCE(NULLIF(left(btrim(split_part(last_error, E'\n', 1)), 160), ''),
                         CASE WHEN state = 'cancelled' THEN 'cancelled with the sweep' ELSE 'no reason recorded' END),
                count(*), min(id)
         FROM runs
         WHERE sweep_id = $1
           AND (state IN ('error', 'cancelled') OR (state IN ('queued', 'running', 'paused') AND last_error IS NOT NULL))
         GROUP BY 1, 2
         ORDER BY 3 DESC, 4
         LIMIT $2",
    )
    .bind(sweep_id)
    .bind(protocol::REASON_GROUPS as i64)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(state, reason, runs, example_run)| {
            Ok(protocol::ReasonGroup {
                state: state.parse().map_err(Error::Internal)?,
                reason,
                runs,
                example_run,
            })
        })
        .collect()
}

pub async fn list(pool: &PgPool) -> Result<Vec<SweepStatus>> {
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM sweeps ORDER BY id").fetch_all(pool).await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(status(pool, id).await?);
    }
    Ok(out)
}

/// Cancels a sweep: runs not started are cancelled; running ones are told to stop at their
/// worker's next heartbeat.
pub async fn cancel(pool: &PgPool, sweep_id: i64) -> Result<SweepStatus> {
    let mut tx = pool.begin().await?;
    let state = lock_state(&mut tx, sweep_id).await?;
    if matches!(state, SweepState::Completed | SweepState::Cancelled) {
        return Err(Error::Conflict(format!("sweep {sweep_id} is already {}", state.as_str())));
    }
    sqlx::query("UPDATE sweeps SET state = 'cancelled', stop_reason = 'cancelled by a user', finished_at = now() WHERE id = $1")
        .bind(sweep_id)
        .execute(&mut *tx)
        .await?;
    queue::cancel_runs(&mut tx, sweep_id).await?;
    tx.commit().await?;
    status(pool, sweep_id).await
}

/// Pauses a sweep: no new run of it is claimed; running ones finish.
pub async fn pause(pool: &PgPool, sweep_id: i64) -> Result<SweepStatus> {
    let mut tx = pool.begin().await?;
    let state = lock_state(&mut tx, sweep_id).await?;
    if state != SweepState::Running {
        return Err(Error::Conflict(format!("sweep {sweep_id} is {}, not running", state.as_str())));
    }
    sqlx::query("UPDATE sweeps SET state = 'paused' WHERE id = $1").bind(sweep_id).execute(&mut *tx).await?;
    queue::pause_runs(&mut tx, sweep_id).await?;
    tx.commit().await?;
    status(pool, sweep_id).await
}

/// Resumes a sweep: re-queues only the runs that did not finish (paused, cancelled, error),
/// with their failed attempts reset. `budget_usd` replaces the budget (needed to resume a sweep
/// that stopped because its budget was spent).
pub async fn resume(pool: &PgPool, sweep_id: i64, budget_usd: Option<Decimal>) -> Result<SweepStatus> {
    let mut tx = pool.begin().await?;
    let state = lock_state(&mut tx, sweep_id).await?;
    if state == SweepState::Running {
        return Err(Error::Conflict(format!("sweep {sweep_id} is already running")));
    }
    if let Some(b) = budget_usd {
        sqlx::query("UPDATE sweeps SET budget_usd = $2 WHERE id = $1")
            .bind(sweep_id)
            .bind(b)
            .execute(&mut *tx)
            .await?;
    }
    let (spent, budget): (Decimal, Option<Decimal>) =
        sqlx::query_as("SELECT spent_usd, budget_usd FROM sweeps WHERE id = $1")
            .bind(sweep_id)
            .fetch_one(&mut *tx)
            .await?;
    if let Some(budget) = budget {
        if spent >= budget {
            return Err(Error::Conflict(format!(
                "sweep {sweep_id} has spent ${spent} of its ${budget} budget; resume it with a larger budget"
            )));
        }
    }
    sqlx::query("UPDATE sweeps SET state = 'running', stop_reason = NULL, finished_at = NULL WHERE id = $1")
        .bind(sweep_id)
        .execute(&mut *tx)
        .await?;
    queue::resume_runs(&mut tx, sweep_id).await?;
    tx.commit().await?;
    notify_runs(pool, sweep_id).await?;
    status(pool, sweep_id).await
}

/// Deletes a sweep with everything recorded for it: its runs and, through their cascades,
/// their attempts, steps, model calls, critic calls and evaluations; its agents and critics.
/// Endpoints stay (other sweeps share them). Refused (`Conflict`) while a run of it is running:
/// its worker would write to rows that are gone.
pub async fn delete(pool: &PgPool, sweep_id: i64) -> Result<protocol::Deleted> {
    let mut tx = pool.begin().await?;
    let (name, runs) = delete_in(&mut tx, sweep_id).await?;
    tx.commit().await?;
    Ok(protocol::Deleted { name: name.clone(), sweeps: vec![name], runs })
}

/// [`delete`] within `tx`; returns the sweep's name and how many runs went with it.
pub(crate) async fn delete_in(tx: &mut Transaction<'_, Postgres>, sweep_id: i64) -> Result<(String, i64)> {
    let name: String = sqlx::query_scalar("SELECT name FROM sweeps WHERE id = $1 FOR UPDATE")
        .bind(sweep_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no sweep with id {sweep_id}")))?;
    // Locking the runs keeps a claim from starting one between this check and the delete.
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE state = 'running')
         FROM (SELECT state FROM runs WHERE sweep_id = $1 FOR UPDATE) r",
    )
    .bind(sweep_id)
    .fetch_one(&mut **tx)
    .await?;
    if running > 0 {
        return Err(Error::Conflict(format!(
            "sweep `{name}` (id {sweep_id}) has {running} running run(s): cancel it (`steer sweep cancel {name}`), \
             wait until they stop, then delete it"
        )));
    }
    // Runs first: agents and critics are referenced by runs without a cascade of their own.
    let runs = sqlx::query("DELETE FROM runs WHERE sweep_id = $1").bind(sweep_id).execute(&mut **tx).await?;
    sqlx::query("DELETE FROM sweeps WHERE id = $1").bind(sweep_id).execute(&mut **tx).await?;
    Ok((name, runs.rows_affected() as i64))
}

async fn lock_state(tx: &mut Transaction<'_, Postgres>, sweep_id: i64) -> Result<SweepState> {
    let state: String = sqlx::query_scalar("SELECT state FROM sweeps WHERE id = $1 FOR UPDATE")
        .bind(sweep_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no sweep with id {sweep_id}")))?;
    state.parse().map_err(Error::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep_file::Sample;

    fn keys() -> Vec<InstanceKey> {
        (0..20)
            .map(|i| InstanceKey {
                instance_id: format!(
                    "{}__{}-{i}",
                    if i % 2 == 0 { "django" } else { "sympy" },
                    if i % 2 == 0 { "django" } else { "sympy" }
                ),
                repo: if i % 2 == 0 { "django/django".into() } else { "sympy/sympy".into() },
                difficulty: Some(if i % 3 == 0 { "<15 min fix".into() } else { "15 min - 1 hour".into() }),
                image: None,
            })
            .collect()
    }

    #[test]
    fn selection_filters_compose() {
        let select = Selection {
            repos: vec!["django/django".into()],
            difficulty: vec!["<15 min fix".into()],
            ..Default::default()
        };
        let ids = select_instances(&keys(), &select).unwrap();
        // i even and divisible by 3: 0, 6, 12, 18
        assert_eq!(
            ids,
            vec!["django__django-0", "django__django-12", "django__django-18", "django__django-6"]
        );
    }

    #[test]
    fn sample_is_seeded_and_sized() {
        let select = |seed| Selection { sample: Some(Sample { n: 5, seed }), ..Default::default() };
        let a = select_instances(&keys(), &select(7)).unwrap();
        let b = select_instances(&keys(), &select(7)).unwrap();
        let c = select_instances(&keys(), &select(8)).unwrap();
        assert_eq!(a.len(), 5);
        assert_eq!(a, b, "same seed, same sample");
        assert_ne!(a, c, "another seed, another sample");
    }

    #[test]
    fn unknown_ids_are_named() {
        let select =
            Selection { ids: vec!["django__django-0".into(), "nope__nope-1".into()], ..Default::default() };
        let err = select_instances(&keys(), &select).unwrap_err();
        assert!(err.contains("nope__nope-1"), "{err}");
    }

    #[test]
    fn empty_selection_is_an_error() {
        let select = Selection { id_regex: Some("^zzz".into()), ..Default::default() };
        assert!(select_instances(&keys(), &select).unwrap_err().contains("matches no instance"));
    }
}
