//! A report as a terminal table or CSV (JSON is the `Report` itself).

use super::stats::Interval;
use super::{Comparison, Report};

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

/// The terminal table: one line per condition, then the frontier and the transfer matrix.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let denominator = match report.options.denominator {
        super::Denominator::Attempted => "attempted runs".to_string(),
        super::Denominator::Selected => match report.options.total {
            Some(t) => format!("{t} selected instances per repeat"),
            None => "selected runs".to_string(),
        },
    };
    out.push_str(&format!(
        "sweeps: {}   resolve rate over {denominator}, 95% intervals\n\n",
        report.sweeps.join(", ")
    ));
    out.push_str(&format!(
        "{:<34} {:>9} {:>8} {:>15} {:>15} {:>10} {:>10} {:>10} {:>7} {:>7} {:>9}\n",
        "condition",
        "resolved",
        "rate",
        "Wilson",
        "bootstrap",
        "cost/run",
        "critic tot",
        "$/solved",
        "steps",
        "calls",
        "interv."
    ));
    for c in &report.conditions {
        out.push_str(&format!(
            "{:<34} {:>9} {:>8} {:>15} {:>15} {:>10} {:>10} {:>10} {:>7} {:>7} {:>9}\n",
            c.label,
            format!("{}/{}", c.resolved, c.denominator),
            pct(c.resolve_rate),
            pct_interval(c.wilson),
            pct_interval(c.bootstrap),
            usd(c.cost_mean_usd),
            format!("${:.4}", c.critic_cost_total_usd),
            usd(c.cost_per_resolved_usd),
            num(c.steps_mean),
            c.critic_calls,
            c.interventions,
        ));
        if let Some(fb) = &c.with_fallback {
            out.push_str(&format!(
                "{:<34} {:>9} {:>8} {:>15} {:>15} {:>10}   ({} runs took `{}`'s result)\n",
                "  with base fallback",
                fb.resolved,
                pct(fb.resolve_rate),
                pct_interval(fb.wilson),
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

/// CSV: one row per condition, for notebooks.
pub fn csv(report: &Report) -> String {
    let mut out = String::from(
        "sweep,agent,critic,runs,finished,instances,repeats,resolved,denominator,resolve_rate,wilson_lo,wilson_hi,\
         bootstrap_lo,bootstrap_hi,fallback_resolved,fallback_rate,cost_total_usd,agent_cost_total_usd,\
         critic_cost_total_usd,cost_mean_usd,cost_per_resolved_usd,input_tokens_mean,output_tokens_mean,\
         cached_tokens_mean,steps_mean,wall_s_mean,critic_calls,interventions,critic_stops,cost_mean_lo_usd,\
         cost_mean_hi_usd\n",
    );
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
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
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
        "{a}  vs  {b}   ({n} paired instances)\n\
         resolve rate: {ra} vs {rb}; difference {d} pt, 95% paired bootstrap {di}\n\
         discordant pairs: only A {oa}, only B {ob}; exact McNemar p = {p:.4}\n\
         cost per run: difference {cd}, 95% {ci}\n\
         steps per run: difference {sd}, 95% {si}\n\
         resolved only by A: {fa}\nresolved only by B: {fb}\n",
        a = c.a,
        b = c.b,
        n = c.instances,
        ra = pct(c.rate_a),
        rb = pct(c.rate_b),
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
