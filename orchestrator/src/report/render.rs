//! A report as a terminal table or CSV (JSON is the `Report` itself).

use super::stats::Interval;
use super::{Comparison, ConditionSummary, Report};

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn pct_interval(i: Option<Interval>) -> String {
    i.map_or("-".into(), |i| format!("[{:.1}, {:.1}]", i.lo * 100.0, i.hi * 100.0))
}

/// A change in resolve rate, in percentage points.
fn pt(x: Option<f64>) -> String {
    x.map_or("-".into(), |d| format!("{:+.1} pt", d * 100.0))
}

fn pt_interval(i: Option<Interval>) -> String {
    i.map_or("-".into(), |i| format!("[{:+.1}, {:+.1}]", i.lo * 100.0, i.hi * 100.0))
}

fn usd(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("${v:.4}"))
}

fn num(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.1}"))
}

/// What the default resolve rate divides by, in words.
pub fn selected_denominator(report: &Report) -> String {
    match report.options.total {
        Some(t) => format!("{t} selected instances x repeats (instances not run count as unresolved)"),
        None => "every selected run".to_string(),
    }
}

/// The terminal table: one line per condition, then outcomes, error reasons, the frontier and
/// the transfer matrix.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "sweeps: {}\nresolve rate over {} (errored, cancelled and unfinished runs count as \
         unresolved), 95% intervals; beside it, over finished runs only\n\n",
        report.sweeps.join(", "),
        selected_denominator(report)
    ));
    out.push_str(&format!(
        "{:<34} {:>17} {:>8} {:>15} {:>15} {:>17} {:>8} {:>10} {:>10} {:>10} {:>7} {:>7} {:>9}\n",
        "condition",
        "resolved/selected",
        "rate",
        "Wilson",
        "bootstrap",
        "resolved/finished",
        "rate",
        "$/finished",
        "critic tot",
        "$/solved",
        "steps",
        "calls",
        "interv."
    ));
    for c in &report.conditions {
        out.push_str(&format!(
            "{:<34} {:>17} {:>8} {:>15} {:>15} {:>17} {:>8} {:>10} {:>10} {:>10} {:>7} {:>7} {:>9}\n",
            c.label,
            format!("{}/{}", c.resolved, c.denominator),
            pct(c.resolve_rate),
            pct_interval(c.wilson),
            pct_interval(c.bootstrap),
            format!("{}/{}", c.resolved, c.runs_finished),
            pct(c.resolve_rate_finished),
            usd(c.cost_mean_usd),
            format!("${:.4}", c.critic_cost_total_usd),
            usd(c.cost_per_resolved_usd),
            num(c.steps_mean),
            c.critic_calls,
            c.interventions,
        ));
        if let Some(fb) = &c.with_fallback {
            out.push_str(&format!(
                "{:<34} {:>17} {:>8} {:>15} {:>15} {:>17} {:>8} {:>10}   ({} runs took `{}`'s result)\n",
                "  with base fallback",
                format!("{}/{}", fb.resolved, fb.denominator),
                pct(fb.resolve_rate),
                pct_interval(fb.wilson),
                "",
                "",
                "",
                usd(fb.cost_mean_usd),
                fb.fell_back,
                fb.base
            ));
        }
    }
    out.push_str("\noutcomes:\n");
    for c in &report.conditions {
        let list: Vec<String> = c.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!("  {:<32} {}\n", c.label, list.join(", ")));
    }
    if report.conditions.iter().any(|c| !c.error_reasons.is_empty()) {
        out.push_str(&format!(
            "\nerror reasons (runs that ended `error` or `cancelled`, the {} most common per condition):\n",
            super::ERROR_REASONS_SHOWN
        ));
        for c in report.conditions.iter().filter(|c| !c.error_reasons.is_empty()) {
            out.push_str(&format!("  {}\n", c.label));
            for e in &c.error_reasons {
                out.push_str(&format!(
                    "    {:>5}  {:<9}  {}  (e.g. run {})\n",
                    e.runs, e.state, e.reason, e.example_run_id
                ));
            }
            let unlisted = unlisted_error_runs(c);
            if unlisted > 0 {
                out.push_str(&format!("    {unlisted:>5}  more run(s) under other reasons\n"));
            }
        }
    }
    out.push_str(&format!(
        "\ncost-vs-accuracy frontier (cheapest first): {}\n",
        report.frontier.join(" -> ")
    ));
    if !report.transfer.is_empty() {
        out.push_str("\ntransfer (resolve rate change against the same agent without a critic):\n");
        for t in &report.transfer {
            let seen = match t.seen {
                Some(true) => "  (its training agent)",
                Some(false) => "  (unseen agent)",
                None => "",
            };
            out.push_str(&format!(
                "  {:<20} x {:<20} {:>8} {:>18} over {} instances{seen}\n",
                t.critic,
                t.agent,
                pt(t.delta),
                pt_interval(t.interval),
                t.instances
            ));
        }
        out.push_str("\ntransfer by critic (pooled over agents and their instances):\n");
        for s in &report.transfer_by_critic {
            out.push_str(&format!(
                "  {:<20} all {} agent(s) {:>8} {:>18}",
                s.critic,
                s.agents,
                pt(s.delta),
                pt_interval(s.interval)
            ));
            match &s.trained_on {
                Some(agent) => out.push_str(&format!(
                    "; trained on {agent}, {} unseen agent(s) {} {}\n",
                    s.unseen_agents,
                    pt(s.unseen_delta),
                    pt_interval(s.unseen_interval)
                )),
                None => out.push_str("; training agent not given (`trained_on`)\n"),
            }
        }
    }
    out
}

/// Runs that ended `error` or `cancelled` beyond the reasons listed.
pub fn unlisted_error_runs(c: &ConditionSummary) -> u64 {
    let ended =
        ["infra_error", "cancelled"].iter().map(|k| c.outcomes.get(*k).copied().unwrap_or(0)).sum::<u64>();
    ended.saturating_sub(c.error_reasons.iter().map(|e| e.runs).sum())
}

/// The header of the CSV's first table. `denominator` and `resolve_rate` are over every
/// selected run (or `total` x repeats); `runs_finished` and `resolve_rate_finished` over finished
/// runs. Earlier columns keep their places; new ones are appended.
pub const CSV_HEADER: &str =
    "sweep,agent,critic,runs,finished,instances,repeats,resolved,denominator,resolve_rate,wilson_lo,wilson_hi,\
     bootstrap_lo,bootstrap_hi,fallback_resolved,fallback_rate,cost_total_usd,agent_cost_total_usd,\
     critic_cost_total_usd,cost_mean_usd,cost_per_resolved_usd,input_tokens_mean,output_tokens_mean,\
     cached_tokens_mean,steps_mean,wall_s_mean,critic_calls,interventions,critic_stops,cost_mean_lo_usd,\
     cost_mean_hi_usd,runs_selected,runs_finished,resolve_rate_finished,infra_errors,cancelled,unfinished";

/// The header of the CSV's second table, after a blank line: error reasons per condition.
pub const CSV_ERROR_REASONS_HEADER: &str = "sweep,agent,critic,state,reason,runs,example_run_id";

/// CSV for notebooks: one row per condition; then, after a blank line, one row per error
/// reason of each condition (split the text at the first blank line to read both).
pub fn csv(report: &Report) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    let o = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
    for c in &report.conditions {
        let fields = [
            quote(&c.sweep),
            quote(&c.agent),
            quote(&c.critic),
            c.runs.to_string(),
            c.finished.to_string(),
            c.instances.to_string(),
            c.repeats.to_string(),
            c.resolved.to_string(),
            c.denominator.to_string(),
            o(c.resolve_rate),
            o(c.wilson.map(|i| i.lo)),
            o(c.wilson.map(|i| i.hi)),
            o(c.bootstrap.map(|i| i.lo)),
            o(c.bootstrap.map(|i| i.hi)),
            c.with_fallback.as_ref().map_or(String::new(), |f| f.resolved.to_string()),
            o(c.with_fallback.as_ref().and_then(|f| f.resolve_rate)),
            c.cost_total_usd.to_string(),
            c.agent_cost_total_usd.to_string(),
            c.critic_cost_total_usd.to_string(),
            o(c.cost_mean_usd),
            o(c.cost_per_resolved_usd),
            o(c.input_tokens_mean),
            o(c.output_tokens_mean),
            o(c.cached_tokens_mean),
            o(c.steps_mean),
            o(c.wall_s_mean),
            c.critic_calls.to_string(),
            c.interventions.to_string(),
            c.critic_stops.to_string(),
            o(c.cost_mean_bootstrap.map(|i| i.lo)),
            o(c.cost_mean_bootstrap.map(|i| i.hi)),
            c.runs_selected.to_string(),
            c.runs_finished.to_string(),
            o(c.resolve_rate_finished),
            c.outcomes.get("infra_error").copied().unwrap_or(0).to_string(),
            c.outcomes.get("cancelled").copied().unwrap_or(0).to_string(),
            c.outcomes.get("unfinished").copied().unwrap_or(0).to_string(),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(CSV_ERROR_REASONS_HEADER);
    out.push('\n');
    for c in &report.conditions {
        for e in &c.error_reasons {
            let fields = [
                quote(&c.sweep),
                quote(&c.agent),
                quote(&c.critic),
                quote(&e.state),
                quote(&e.reason),
                e.runs.to_string(),
                e.example_run_id.to_string(),
            ];
            out.push_str(&fields.join(","));
            out.push('\n');
        }
    }
    out
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A comparison for the terminal.
pub fn comparison(c: &Comparison) -> String {
    // Each interval with the precision of the figure it brackets.
    let interval = |i: Option<Interval>, scale: f64, digits: usize, unit: &str| {
        i.map_or("-".into(), |i| {
            format!("[{:+.digits$}{unit}, {:+.digits$}{unit}]", i.lo * scale, i.hi * scale)
        })
    };
    format!(
        "{a}  vs  {b}   ({n} paired instances, {pairs} selected (instance, repeat) pairs, {pf} both finished)\n\
         resolve rate over selected pairs (errored, cancelled, unfinished: unresolved): {ra} vs {rb}; \
         difference {d} pt, 95% paired bootstrap {di}\n\
         resolve rate over pairs both finished: {raf} vs {rbf}\n\
         discordant pairs (of the selected): only A {oa}, only B {ob}; exact McNemar p = {p:.4}\n\
         cost per run (pairs both finished): difference {cd}, 95% {ci}\n\
         steps per run (pairs both finished): difference {sd}, 95% {si}\n\
         resolved only by A: {fa}\nresolved only by B: {fb}\n",
        a = c.a,
        b = c.b,
        n = c.instances,
        pairs = c.pairs,
        pf = c.pairs_finished,
        ra = pct(c.rate_a),
        rb = pct(c.rate_b),
        raf = pct(c.rate_a_finished),
        rbf = pct(c.rate_b_finished),
        d = c.rate_diff.map_or("-".into(), |d| format!("{:+.1}", d * 100.0)),
        di = interval(c.rate_diff_interval, 100.0, 1, ""),
        oa = c.only_a,
        ob = c.only_b,
        p = c.mcnemar_p,
        cd = c.cost_diff_usd.map_or("-".into(), |d| format!("{d:+.4} $")),
        ci = interval(c.cost_diff_interval, 1.0, 4, " $"),
        sd = c.steps_diff.map_or("-".into(), |d| format!("{d:+.1}")),
        si = interval(c.steps_diff_interval, 1.0, 1, ""),
        fa = if c.flipped_to_a.is_empty() { "-".into() } else { c.flipped_to_a.join(", ") },
        fb = if c.flipped_to_b.is_empty() { "-".into() } else { c.flipped_to_b.join(", ") },
    )
}
