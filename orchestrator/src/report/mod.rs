//! Results people trust: per-condition resolve rates with intervals, costs and counts; the
//! cost-vs-accuracy frontier; cross-agent transfer; and paired comparisons. Everything is
//! computed from the runs in Postgres (`data`), with the statistics in `stats`.
//!
//! Definitions (README "Reports" says the same for users):
//! - A condition is (sweep, agent, critic). Its runs are every (instance, repeat) of it.
//! - Resolved: the run finished (`done`) and its patch resolves the task (`evaluations`),
//!   whatever ended it (a run that hit a limit can still resolve).
//! - Two denominators, as the SWE-bench harness's summary gives resolved over all instances
//!   and over submitted ones. The default, `resolve_rate` over `denominator`: every run
//!   selected for the condition (`runs_selected`), or `total` instances x repeats when given
//!   (e.g. 500 for SWE-bench Verified); a run that errored, was cancelled or has not finished
//!   counts as unresolved. Beside it, `resolve_rate_finished` over `runs_finished` (state
//!   `done`). Only the first carries intervals, and every interval, bootstrap, transfer cell,
//!   frontier point and paired test uses it, so no figure quietly drops a failed run.
//! - Intervals (95%): Wilson over runs, and a percentile bootstrap resampling instances (so
//!   repeats of an instance stay together).
//! - Error reasons: runs that ended without a result about the agent (state `error` or
//!   `cancelled`; outcomes are never about the infrastructure) grouped per condition by the
//!   first line of `last_error`, the most common first, each with an example run.
//! - With base fallback (shown beside, never instead): a critic run that did not submit
//!   (a limit, a critic stop, or unfinished) takes its base condition's result (`prefix_from`,
//!   else the agent's `none` condition in the same sweep) and adds the base run's cost.

pub mod data;
pub mod html;
pub mod render;
pub mod stats;

use std::collections::{BTreeMap, HashMap};

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use data::RunRow;
use stats::Interval;

pub const LEVEL: f64 = 0.95;

/// Error reasons listed per condition (the most common).
pub const ERROR_REASONS_SHOWN: usize = 5;
/// Characters of `last_error`'s first line kept as a reason.
pub const REASON_CHARS: usize = 120;

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ReportOptions {
    /// The number of instances selected (e.g. 500), when the sweeps ran a part: the default
    /// denominator becomes `total` x repeats, instances without runs counting as unresolved.
    #[serde(default)]
    pub total: Option<u64>,
}

/// Runs of a condition that ended without a result about the agent, grouped by why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorReason {
    /// The runs' state: `error` (infrastructure) or `cancelled`.
    pub state: String,
    /// The first line of the runs' `last_error`, trimmed to 120 characters (`…` when cut).
    pub reason: String,
    pub runs: u64,
    /// The lowest run id of the group, to look one up (`GET /api/v1/runs/ID/record`, the web UI).
    pub example_run_id: i64,
}

/// One condition's figures.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConditionSummary {
    pub sweep: String,
    pub agent: String,
    pub critic: String,
    /// `agent/critic`, prefixed by `sweep:` when the report covers several sweeps.
    pub label: String,
    /// Every run selected for the condition, whatever its state (the same as `runs`).
    pub runs_selected: u64,
    /// Runs that finished (state `done`; the same as `finished`).
    pub runs_finished: u64,
    /// Kept for readers of earlier reports: `runs_selected`.
    pub runs: u64,
    /// Kept for readers of earlier reports: `runs_finished`.
    pub finished: u64,
    pub instances: u64,
    pub repeats: u64,
    /// Runs that finished and whose patch resolves the task.
    pub resolved: u64,
    /// What `resolve_rate` divides by: `runs_selected`, or `total` x repeats with `total`.
    pub denominator: u64,
    /// `resolved / denominator`: errored, cancelled and unfinished runs count as unresolved.
    pub resolve_rate: Option<f64>,
    /// `resolved / runs_finished`: the rate over finished runs only.
    pub resolve_rate_finished: Option<f64>,
    /// Wilson interval of `resolve_rate` (over `denominator`).
    pub wilson: Option<Interval>,
    /// Bootstrap interval of `resolve_rate`, resampling instances.
    pub bootstrap: Option<Interval>,
    /// The same figures with base fallback (None for conditions without a base).
    pub with_fallback: Option<FallbackFigures>,
    #[schema(value_type = String)]
    pub cost_total_usd: Decimal,
    #[schema(value_type = String)]
    pub agent_cost_total_usd: Decimal,
    #[schema(value_type = String)]
    pub critic_cost_total_usd: Decimal,
    /// Per run of the denominator's runs that finished.
    pub cost_mean_usd: Option<f64>,
    /// 95% bootstrap interval of `cost_mean_usd`, resampling instances (repeats together).
    pub cost_mean_bootstrap: Option<Interval>,
    pub cost_per_resolved_usd: Option<f64>,
    pub input_tokens_mean: Option<f64>,
    pub output_tokens_mean: Option<f64>,
    pub cached_tokens_mean: Option<f64>,
    pub steps_mean: Option<f64>,
    pub wall_s_mean: Option<f64>,
    pub critic_calls: u64,
    pub interventions: u64,
    pub critic_stops: u64,
    /// Finished runs by outcome, plus `infra_error` (state `error`), `cancelled` and
    /// `unfinished` (queued, running or paused); they add up to `runs_selected`.
    pub outcomes: BTreeMap<String, u64>,
    /// Runs that ended `error` or `cancelled`, grouped by reason: the most common
    /// (`ERROR_REASONS_SHOWN`), most runs first. `outcomes` has their totals.
    pub error_reasons: Vec<ErrorReason>,
    /// Distribution of cost per finished run (dollars) and of steps per finished run.
    pub cost_quartiles: Option<Quartiles>,
    pub steps_quartiles: Option<Quartiles>,
}

/// Minimum, quartiles and maximum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Quartiles {
    pub min: f64,
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
    pub max: f64,
}

impl Quartiles {
    pub fn of(mut values: Vec<f64>) -> Option<Quartiles> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(|a, b| a.total_cmp(b));
        // Linear interpolation between order statistics (numpy's default).
        let q = |p: f64| {
            let x = p * (values.len() - 1) as f64;
            let (i, frac) = (x.floor() as usize, x - x.floor());
            values[i] + (values[(i + 1).min(values.len() - 1)] - values[i]) * frac
        };
        Some(Quartiles {
            min: values[0],
            q1: q(0.25),
            median: q(0.5),
            q3: q(0.75),
            max: values[values.len() - 1],
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FallbackFigures {
    pub base: String,
    pub resolved: u64,
    /// The condition's `denominator` (every selected run has a result or counts as unresolved).
    pub denominator: u64,
    /// `resolved / denominator`.
    pub resolve_rate: Option<f64>,
    pub wilson: Option<Interval>,
    pub cost_mean_usd: Option<f64>,
    /// Runs that took their base's result.
    pub fell_back: u64,
}

/// A cell of the transfer matrix: the change in resolve rate a critic brings to an agent,
/// against the same agent with no critic, on the same instances.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TransferCell {
    pub sweep: String,
    pub critic: String,
    pub agent: String,
    /// The agent whose trajectories trained the critic, when the sweep file says (`trained_on`).
    pub trained_on: Option<String>,
    /// Whether this agent is the one the critic was trained on (None when that is not known).
    pub seen: Option<bool>,
    pub delta: Option<f64>,
    pub interval: Option<Interval>,
    pub instances: u64,
}

/// A critic's transfer pooled over agents: the mean change in resolve rate over every
/// (agent, instance) pair of its transfer cells, and over those of the agents it was not
/// trained on; intervals by bootstrap over instances (an instance's pairs stay together).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TransferSummary {
    pub sweep: String,
    pub critic: String,
    pub trained_on: Option<String>,
    pub agents: u64,
    pub delta: Option<f64>,
    pub interval: Option<Interval>,
    /// Agents other than `trained_on` (0 when `trained_on` is not known).
    pub unseen_agents: u64,
    pub unseen_delta: Option<f64>,
    pub unseen_interval: Option<Interval>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Report {
    pub sweeps: Vec<String>,
    pub options: ReportOptions,
    pub conditions: Vec<ConditionSummary>,
    /// Labels of the conditions on the cost-vs-accuracy Pareto frontier (cheapest first).
    pub frontier: Vec<String>,
    pub transfer: Vec<TransferCell>,
    /// One line per critic of the transfer matrix: its change pooled over agents.
    pub transfer_by_critic: Vec<TransferSummary>,
}

/// Builds the report of `rows` (from `data::load`).
pub fn build(rows: &[RunRow], options: &ReportOptions) -> Report {
    let mut sweeps: Vec<String> = rows.iter().map(|r| r.sweep.clone()).collect();
    sweeps.dedup();
    let several = sweeps.len() > 1;
    let groups = by_condition(rows);
    let conditions: Vec<ConditionSummary> =
        groups.iter().map(|(key, runs)| summarize(key, runs, rows, options, several)).collect();
    let frontier = frontier(&conditions);
    let (transfer, transfer_by_critic) = transfer(&groups);
    Report { sweeps, options: options.clone(), conditions, frontier, transfer, transfer_by_critic }
}

/// (sweep, agent, critic).
type Key = (String, String, String);

fn by_condition(rows: &[RunRow]) -> BTreeMap<Key, Vec<&RunRow>> {
    let mut groups: BTreeMap<Key, Vec<&RunRow>> = BTreeMap::new();
    for r in rows {
        groups.entry((r.sweep.clone(), r.agent.clone(), r.critic.clone())).or_default().push(r);
    }
    groups
}

/// The runs of each instance (clusters for the bootstrap).
fn by_instance<'a>(runs: &[&'a RunRow]) -> BTreeMap<&'a str, Vec<&'a RunRow>> {
    let mut m: BTreeMap<&str, Vec<&RunRow>> = BTreeMap::new();
    for r in runs {
        m.entry(r.instance_id.as_str()).or_default().push(r);
    }
    m
}

fn f(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

fn summarize(
    key: &Key,
    runs: &[&RunRow],
    all: &[RunRow],
    options: &ReportOptions,
    several: bool,
) -> ConditionSummary {
    let (sweep, agent, critic) = key;
    let instances = by_instance(runs);
    let repeats = runs.iter().map(|r| r.repeat).max().map_or(0, |m| m as u64 + 1);
    let finished: Vec<&&RunRow> = runs.iter().filter(|r| r.finished()).collect();
    let resolved = runs.iter().filter(|r| r.is_resolved()).count() as u64;
    let (denominator, missing_instances) = denominator(runs, instances.len() as u64, repeats, options);
    let rate = (denominator > 0).then(|| resolved as f64 / denominator as f64);
    let rate_finished = (!finished.is_empty()).then(|| resolved as f64 / finished.len() as f64);
    let bootstrap = rate_bootstrap(&instances, missing_instances, |r| r.is_resolved());

    let cost_total: Decimal = runs.iter().map(|r| r.cost()).sum();
    let mean_of = |g: &dyn Fn(&RunRow) -> f64| stats::mean(finished.iter().map(|r| g(r)));
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for r in runs {
        let key = match (r.state.as_str(), &r.outcome) {
            ("done", Some(o)) => o.clone(),
            ("error", _) => "infra_error".into(),
            ("cancelled", _) => "cancelled".into(),
            _ => "unfinished".into(),
        };
        *outcomes.entry(key).or_default() += 1;
    }
    let label = if several { format!("{sweep}:{agent}/{critic}") } else { format!("{agent}/{critic}") };
    ConditionSummary {
        sweep: sweep.clone(),
        agent: agent.clone(),
        critic: critic.clone(),
        label,
        runs_selected: runs.len() as u64,
        runs_finished: finished.len() as u64,
        runs: runs.len() as u64,
        finished: finished.len() as u64,
        instances: instances.len() as u64,
        repeats,
        resolved,
        denominator,
        resolve_rate: rate,
        resolve_rate_finished: rate_finished,
        wilson: stats::wilson(resolved, denominator, LEVEL),
        bootstrap,
        with_fallback: fallback(key, runs, all, options),
        cost_total_usd: cost_total,
        agent_cost_total_usd: runs.iter().map(|r| r.agent_cost).sum(),
        critic_cost_total_usd: runs.iter().map(|r| r.critic_cost).sum(),
        cost_mean_usd: mean_of(&|r| f(r.cost())),
        cost_mean_bootstrap: cost_bootstrap(&instances),
        cost_per_resolved_usd: (resolved > 0).then(|| f(cost_total) / resolved as f64),
        input_tokens_mean: mean_of(&|r| r.input_tokens as f64),
        output_tokens_mean: mean_of(&|r| r.output_tokens as f64),
        cached_tokens_mean: mean_of(&|r| r.cached_tokens as f64),
        steps_mean: mean_of(&|r| r.steps as f64),
        wall_s_mean: stats::mean(finished.iter().filter_map(|r| r.wall_s)),
        critic_calls: runs.iter().map(|r| r.critic_calls as u64).sum(),
        interventions: runs.iter().map(|r| r.interventions as u64).sum(),
        critic_stops: runs.iter().filter(|r| r.outcome.as_deref() == Some("critic_stop")).count() as u64,
        outcomes,
        error_reasons: error_reasons(runs),
        cost_quartiles: Quartiles::of(finished.iter().map(|r| f(r.cost())).collect()),
        steps_quartiles: Quartiles::of(finished.iter().map(|r| r.steps as f64).collect()),
    }
}

/// The default denominator (every selected run, or `total` instances x repeats), and how many
/// selected instances the condition has no runs for.
fn denominator(runs: &[&RunRow], instances: u64, repeats: u64, options: &ReportOptions) -> (u64, u64) {
    match options.total {
        Some(total) if total > instances => (total * repeats.max(1), total - instances),
        _ => (runs.len() as u64, 0),
    }
}

/// Runs that ended `error` or `cancelled`, grouped by (state, short reason), the most common
/// first (ties by state and reason, so the order is stable), at most `ERROR_REASONS_SHOWN`.
fn error_reasons(runs: &[&RunRow]) -> Vec<ErrorReason> {
    let mut groups: BTreeMap<(String, String), (u64, i64)> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.ended_without_result()) {
        let e = groups.entry((r.state.clone(), short_reason(r.last_error.as_deref()))).or_insert((0, r.id));
        e.0 += 1;
        e.1 = e.1.min(r.id);
    }
    let mut reasons: Vec<ErrorReason> = groups
        .into_iter()
        .map(|((state, reason), (runs, example_run_id))| ErrorReason { state, reason, runs, example_run_id })
        .collect();
    // Stable sort: equal counts keep the (state, reason) order of the map.
    reasons.sort_by_key(|r| std::cmp::Reverse(r.runs));
    reasons.truncate(ERROR_REASONS_SHOWN);
    reasons
}

/// The first non-empty line of an error, trimmed to `REASON_CHARS` characters.
pub fn short_reason(last_error: Option<&str>) -> String {
    let line = last_error.and_then(|e| e.lines().map(str::trim).find(|l| !l.is_empty()));
    let Some(line) = line else { return "(no reason recorded)".into() };
    if line.chars().count() <= REASON_CHARS {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(REASON_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Bootstrap of a resolve rate over every selected run, resampling instances; `missing`
/// instances (selected, not run) count as clusters of unresolved runs.
fn rate_bootstrap(
    instances: &BTreeMap<&str, Vec<&RunRow>>,
    missing: u64,
    ok: impl Fn(&RunRow) -> bool,
) -> Option<Interval> {
    // Each cluster: (resolved, selected) over its runs.
    let mut clusters: Vec<(f64, f64)> = instances
        .values()
        .map(|runs| (runs.iter().filter(|r| ok(r)).count() as f64, runs.len() as f64))
        .collect();
    let per_instance = instances.values().map(|r| r.len()).max().unwrap_or(1) as f64;
    clusters.extend((0..missing).map(|_| (0.0, per_instance)));
    ratio_bootstrap(&clusters)
}

/// Bootstrap of Σ numerator / Σ denominator over clusters of (numerator, denominator).
fn ratio_bootstrap(clusters: &[(f64, f64)]) -> Option<Interval> {
    stats::bootstrap(clusters, LEVEL, |sample| {
        let (k, n) = sample.iter().fold((0.0, 0.0), |(k, n), c| (k + c.0, n + c.1));
        (n > 0.0).then(|| k / n)
    })
}

/// Bootstrap of the mean cost per finished run over instances: each cluster is an instance's
/// (cost, count) of finished runs, so repeats of an instance are resampled together.
fn cost_bootstrap(instances: &BTreeMap<&str, Vec<&RunRow>>) -> Option<Interval> {
    let clusters: Vec<(f64, f64)> = instances
        .values()
        .map(|runs| {
            runs.iter().filter(|r| r.finished()).fold((0.0, 0.0), |(c, n), r| (c + f(r.cost()), n + 1.0))
        })
        .filter(|(_, n)| *n > 0.0)
        .collect();
    ratio_bootstrap(&clusters)
}

/// The base condition of a critic condition: its `prefix_from`, else `none` (never itself).
fn base_critic(runs: &[&RunRow]) -> Option<String> {
    let first = runs.first()?;
    let base = first.prefix_from.clone().unwrap_or_else(|| "none".into());
    (base != first.critic).then_some(base)
}

fn fallback(key: &Key, runs: &[&RunRow], all: &[RunRow], options: &ReportOptions) -> Option<FallbackFigures> {
    let base = base_critic(runs)?;
    let (sweep, agent, _) = key;
    let base_runs: HashMap<(&str, i32), &RunRow> = all
        .iter()
        .filter(|r| &r.sweep == sweep && &r.agent == agent && r.critic == base)
        .map(|r| ((r.instance_id.as_str(), r.repeat), r))
        .collect();
    if base_runs.is_empty() {
        return None;
    }
    let mut fell_back = 0;
    let mut resolved = 0;
    let mut costs = Vec::new();
    for r in runs {
        let mut ok = r.is_resolved();
        let mut cost = r.cost();
        if r.did_not_submit() {
            if let Some(b) = base_runs.get(&(r.instance_id.as_str(), r.repeat)) {
                fell_back += 1;
                ok = b.is_resolved();
                cost += b.cost();
            }
        }
        resolved += ok as u64;
        if r.finished() || ok {
            costs.push(f(cost));
        }
    }
    let repeats = runs.iter().map(|r| r.repeat).max().map_or(0, |m| m as u64 + 1);
    let instances = by_instance(runs).len() as u64;
    let denominator = denominator(runs, instances, repeats, options).0;
    Some(FallbackFigures {
        base,
        resolved,
        denominator,
        resolve_rate: (denominator > 0).then(|| resolved as f64 / denominator as f64),
        wilson: stats::wilson(resolved.min(denominator), denominator, LEVEL),
        cost_mean_usd: stats::mean(costs),
        fell_back,
    })
}

/// Conditions no other condition beats on both cost (lower) and resolve rate (higher), cheapest
/// first.
fn frontier(conditions: &[ConditionSummary]) -> Vec<String> {
    let mut points: Vec<(&str, f64, f64)> = conditions
        .iter()
        .filter_map(|c| Some((c.label.as_str(), c.cost_mean_usd?, c.resolve_rate?)))
        .collect();
    points.sort_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2)));
    let mut best = f64::NEG_INFINITY;
    let mut out = Vec::new();
    for (label, _, rate) in points {
        if rate > best {
            best = rate;
            out.push(label.to_string());
        }
    }
    out
}

fn transfer(groups: &BTreeMap<Key, Vec<&RunRow>>) -> (Vec<TransferCell>, Vec<TransferSummary>) {
    let mut cells = Vec::new();
    // Per (sweep, critic): every cell's per-instance differences, and whether its agent was seen.
    type Pooled<'a> = Vec<(bool, BTreeMap<&'a str, f64>)>;
    let mut pooled: BTreeMap<(&str, &str), (Option<String>, Pooled)> = BTreeMap::new();
    for ((sweep, agent, critic), runs) in groups {
        if critic == "none" {
            continue;
        }
        let Some(base) = groups.get(&(sweep.clone(), agent.clone(), "none".to_string())) else { continue };
        let diffs: BTreeMap<&str, f64> =
            pair_by_instance(runs, base).into_iter().map(|(id, (a, b))| (id, a - b)).collect();
        let trained_on = runs.first().and_then(|r| r.trained_on.clone());
        let seen = trained_on.as_ref().map(|t| t == agent);
        let (delta, interval) = pooled_delta(std::iter::once(&diffs));
        cells.push(TransferCell {
            sweep: sweep.clone(),
            critic: critic.clone(),
            agent: agent.clone(),
            trained_on: trained_on.clone(),
            seen,
            delta,
            interval,
            instances: diffs.len() as u64,
        });
        let entry =
            pooled.entry((sweep.as_str(), critic.as_str())).or_insert_with(|| (trained_on, Vec::new()));
        entry.1.push((seen == Some(true), diffs));
    }
    let summaries = pooled
        .into_iter()
        .map(|((sweep, critic), (trained_on, per_agent))| {
            let (delta, interval) = pooled_delta(per_agent.iter().map(|(_, d)| d));
            // Unseen agents are known only when the training agent is.
            let unseen = per_agent.iter().filter(|(seen, _)| !seen).map(|(_, d)| d);
            let (unseen_agents, (unseen_delta, unseen_interval)) = match trained_on {
                Some(_) => (unseen.clone().count() as u64, pooled_delta(unseen)),
                None => (0, (None, None)),
            };
            TransferSummary {
                sweep: sweep.to_string(),
                critic: critic.to_string(),
                unseen_agents,
                trained_on,
                agents: per_agent.len() as u64,
                delta,
                interval,
                unseen_delta,
                unseen_interval,
            }
        })
        .collect();
    (cells, summaries)
}

/// The mean of every agent's per-instance differences, and its bootstrap interval resampling
/// instances (each instance carries its differences for all the agents at once).
fn pooled_delta<'a, 'b: 'a>(
    per_agent: impl Iterator<Item = &'a BTreeMap<&'b str, f64>>,
) -> (Option<f64>, Option<Interval>) {
    let mut by_instance: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for diffs in per_agent {
        for (id, d) in diffs {
            by_instance.entry(id).or_default().push(*d);
        }
    }
    let clusters: Vec<Vec<f64>> = by_instance.into_values().collect();
    let mean = |sample: &[&Vec<f64>]| stats::mean(sample.iter().flat_map(|c| c.iter().copied()));
    let all: Vec<&Vec<f64>> = clusters.iter().collect();
    (mean(&all), stats::bootstrap(&clusters, LEVEL, mean))
}

/// Per instance both conditions selected: (A's resolve rate, B's) over every selected run of
/// it (errored, cancelled and unfinished runs count as unresolved).
fn pair_by_instance<'a>(a: &[&'a RunRow], b: &[&RunRow]) -> BTreeMap<&'a str, (f64, f64)> {
    let rate = |runs: &[&RunRow]| {
        (!runs.is_empty()).then(|| runs.iter().filter(|r| r.is_resolved()).count() as f64 / runs.len() as f64)
    };
    let (ia, ib) = (by_instance(a), by_instance(b));
    ia.iter().filter_map(|(id, runs)| Some((*id, (rate(runs)?, rate(ib.get(id)?)?)))).collect()
}

/// A paired comparison of two conditions on the (instance, repeat) pairs both selected: a run
/// that errored, was cancelled or has not finished counts as unresolved, as in the reports.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    /// Instances with at least one (instance, repeat) pair both conditions selected.
    pub instances: u64,
    /// (instance, repeat) pairs both conditions selected: the resolve rates' denominator.
    pub pairs: u64,
    /// Pairs both conditions finished: the denominator of the cost and step differences and
    /// of the `_finished` rates.
    pub pairs_finished: u64,
    /// Resolved over `pairs`.
    pub rate_a: Option<f64>,
    pub rate_b: Option<f64>,
    /// Resolved over `pairs_finished`.
    pub rate_a_finished: Option<f64>,
    pub rate_b_finished: Option<f64>,
    /// A's resolve rate minus B's, over `pairs`, with a paired bootstrap interval over instances.
    pub rate_diff: Option<f64>,
    pub rate_diff_interval: Option<Interval>,
    /// Pairs where only A resolved / only B resolved (of `pairs`).
    pub only_a: u64,
    pub only_b: u64,
    /// Exact McNemar test on those pairs.
    pub mcnemar_p: f64,
    /// Mean cost and steps per run, A minus B, over `pairs_finished`.
    pub cost_diff_usd: Option<f64>,
    pub cost_diff_interval: Option<Interval>,
    pub steps_diff: Option<f64>,
    pub steps_diff_interval: Option<Interval>,
    /// Instances A resolves (in every paired repeat) and B does not, and the reverse.
    pub flipped_to_a: Vec<String>,
    pub flipped_to_b: Vec<String>,
}

/// Per instance, summed over its paired repeats: resolved A, resolved B, pairs; then over the
/// pairs both finished: cost A, cost B, steps A, steps B, resolved A, resolved B, pairs.
const RES_A: usize = 0;
const RES_B: usize = 1;
const PAIRS: usize = 2;
const COST_A: usize = 3;
const COST_B: usize = 4;
const STEPS_A: usize = 5;
const STEPS_B: usize = 6;
const FIN_RES_A: usize = 7;
const FIN_RES_B: usize = 8;
const FIN_PAIRS: usize = 9;
type PairSums = [f64; 10];

/// Compares condition `a` with `b` (rows of each, from `data::load`).
pub fn compare(label_a: &str, a: &[&RunRow], label_b: &str, b: &[&RunRow]) -> Comparison {
    let by_pair = |runs: &[&RunRow]| -> HashMap<(String, i32), RunRow> {
        runs.iter().map(|r| ((r.instance_id.clone(), r.repeat), (*r).clone())).collect()
    };
    let (pa, pb) = (by_pair(a), by_pair(b));
    let mut only_a = 0;
    let mut only_b = 0;
    let mut per_instance: BTreeMap<String, PairSums> = BTreeMap::new();
    for (key, ra) in &pa {
        let Some(rb) = pb.get(key) else { continue };
        let (x, y) = (ra.is_resolved(), rb.is_resolved());
        only_a += (x && !y) as u64;
        only_b += (!x && y) as u64;
        let e = per_instance.entry(key.0.clone()).or_insert([0.0; 10]);
        let (x, y) = (x as u8 as f64, y as u8 as f64);
        e[RES_A] += x;
        e[RES_B] += y;
        e[PAIRS] += 1.0;
        if ra.finished() && rb.finished() {
            e[COST_A] += f(ra.cost());
            e[COST_B] += f(rb.cost());
            e[STEPS_A] += ra.steps as f64;
            e[STEPS_B] += rb.steps as f64;
            e[FIN_RES_A] += x;
            e[FIN_RES_B] += y;
            e[FIN_PAIRS] += 1.0;
        }
    }
    let clusters: Vec<PairSums> = per_instance.values().copied().collect();
    // Σ column i minus Σ column j (or Σ column i alone when j is None), over Σ column n.
    let diff_of = |i: usize, j: Option<usize>, n: usize| {
        move |sample: &[&PairSums]| {
            let (si, sj, sn) = sample.iter().fold((0.0, 0.0, 0.0), |(si, sj, sn), c| {
                (si + c[i], sj + j.map_or(0.0, |j| c[j]), sn + c[n])
            });
            (sn > 0.0).then(|| (si - sj) / sn)
        }
    };
    let all: Vec<&PairSums> = clusters.iter().collect();
    let total = |i: usize| clusters.iter().map(|c| c[i]).sum::<f64>();
    let flipped = |i: usize, j: usize| -> Vec<String> {
        per_instance
            .iter()
            .filter(|(_, c)| c[i] == c[PAIRS] && c[j] == 0.0)
            .map(|(id, _)| id.clone())
            .collect()
    };
    Comparison {
        a: label_a.into(),
        b: label_b.into(),
        instances: clusters.len() as u64,
        pairs: total(PAIRS) as u64,
        pairs_finished: total(FIN_PAIRS) as u64,
        rate_a: diff_of(RES_A, None, PAIRS)(&all),
        rate_b: diff_of(RES_B, None, PAIRS)(&all),
        rate_a_finished: diff_of(FIN_RES_A, None, FIN_PAIRS)(&all),
        rate_b_finished: diff_of(FIN_RES_B, None, FIN_PAIRS)(&all),
        rate_diff: diff_of(RES_A, Some(RES_B), PAIRS)(&all),
        rate_diff_interval: stats::bootstrap(&clusters, LEVEL, diff_of(RES_A, Some(RES_B), PAIRS)),
        only_a,
        only_b,
        mcnemar_p: stats::mcnemar_exact(only_a, only_b),
        cost_diff_usd: diff_of(COST_A, Some(COST_B), FIN_PAIRS)(&all),
        cost_diff_interval: stats::bootstrap(&clusters, LEVEL, diff_of(COST_A, Some(COST_B), FIN_PAIRS)),
        steps_diff: diff_of(STEPS_A, Some(STEPS_B), FIN_PAIRS)(&all),
        steps_diff_interval: stats::bootstrap(&clusters, LEVEL, diff_of(STEPS_A, Some(STEPS_B), FIN_PAIRS)),
        flipped_to_a: flipped(RES_A, RES_B),
        flipped_to_b: flipped(RES_B, RES_A),
    }
}

#[cfg(test)]
mod tests;
