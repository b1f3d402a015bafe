//! A self-contained HTML report: inline CSS and SVG plots, no script, no server, nothing
//! fetched. Plots: cost vs accuracy (each condition with its Wilson interval, the Pareto
//! frontier drawn through), resolve rate with both intervals, cost and step distributions (box
//! plots), and the transfer matrix as a heatmap. Written as well-formed XML (XHTML
//! serialisation), so any XML parser reads it.

use std::fmt::Write;

use super::stats::Interval;
use super::{ConditionSummary, Quartiles, Report};

/// Escapes text for XML content and attributes.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

/// Plot area geometry.
const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 50.0;

struct Axis {
    lo: f64,
    hi: f64,
}

impl Axis {
    fn around(values: impl Iterator<Item = f64>, pad_to_zero: bool) -> Axis {
        let (mut lo, mut hi) =
            values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if pad_to_zero {
            lo = lo.min(0.0);
        }
        if (hi - lo).abs() < 1e-12 {
            hi = lo + 1.0;
        }
        let pad = (hi - lo) * 0.05;
        Axis { lo: if pad_to_zero && lo >= 0.0 { lo } else { lo - pad }, hi: hi + pad }
    }
    fn x(&self, v: f64) -> f64 {
        LEFT + (v - self.lo) / (self.hi - self.lo) * (W - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        H - BOTTOM - (v - self.lo) / (self.hi - self.lo) * (H - TOP - BOTTOM)
    }
}

fn svg_open(out: &mut String, class: &str, title: &str) {
    let _ = write!(
        out,
        r#"<svg class="{class}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img"><title>{}</title>"#,
        esc(title)
    );
}

fn axes(out: &mut String, x_label: &str, y_label: &str, x: Option<&Axis>, y: &Axis, y_pct: bool) {
    let (x0, y0) = (LEFT, H - BOTTOM);
    let _ = write!(
        out,
        r##"<line x1="{x0}" y1="{y0}" x2="{}" y2="{y0}" stroke="#333"/><line x1="{x0}" y1="{TOP}" x2="{x0}" y2="{y0}" stroke="#333"/>"##,
        W - RIGHT
    );
    for i in 0..=4 {
        let v = y.lo + (y.hi - y.lo) * i as f64 / 4.0;
        let label = if y_pct { format!("{:.0}%", v * 100.0) } else { format!("{v:.3}") };
        let _ = write!(
            out,
            r##"<text x="{}" y="{:.1}" font-size="11" text-anchor="end">{label}</text><line x1="{x0}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#eee"/>"##,
            x0 - 6.0,
            y.y(v) + 4.0,
            y.y(v),
            W - RIGHT,
            y.y(v)
        );
    }
    if let Some(x) = x {
        for i in 0..=4 {
            let v = x.lo + (x.hi - x.lo) * i as f64 / 4.0;
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">${v:.3}</text>"#,
                x.x(v),
                y0 + 16.0
            );
        }
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text><text x="14" y="{}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 8.0,
        esc(x_label),
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0,
        esc(y_label)
    );
}

/// Cost per run (x) against resolve rate (y), Wilson intervals as bars, the frontier as a line.
fn cost_vs_accuracy(out: &mut String, report: &Report) {
    let points: Vec<(&ConditionSummary, f64, f64)> =
        report.conditions.iter().filter_map(|c| Some((c, c.cost_mean_usd?, c.resolve_rate?))).collect();
    svg_open(out, "plot cost-vs-accuracy", "Cost per run against resolve rate, with the Pareto frontier");
    let x = Axis::around(
        points.iter().flat_map(|p| [Some(p.1), p.0.cost_mean_bootstrap.map(|i| i.hi)]).flatten(),
        true,
    );
    // Rates are shown on their whole range, so plots of different reports compare at a glance.
    let y = Axis { lo: 0.0, hi: 1.0 };
    axes(out, "mean cost per finished run (USD)", "resolve rate (of selected runs)", Some(&x), &y, true);
    let frontier: Vec<(f64, f64)> = report
        .frontier
        .iter()
        .filter_map(|label| points.iter().find(|p| &p.0.label == label).map(|p| (x.x(p.1), y.y(p.2))))
        .collect();
    if frontier.len() > 1 {
        let path: Vec<String> = frontier.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        let _ = write!(
            out,
            r##"<polyline class="frontier" points="{}" fill="none" stroke="#c33" stroke-dasharray="4 3"/>"##,
            path.join(" ")
        );
    }
    // Conditions at one spot share a label.
    let mut labels: Vec<(f64, f64, Vec<&str>)> = Vec::new();
    // Frontier points are drawn last, so a condition at the same spot does not hide them.
    let mut ordered: Vec<&(&ConditionSummary, f64, f64)> = points.iter().collect();
    ordered.sort_by_key(|p| report.frontier.contains(&p.0.label));
    for (c, cost, rate) in ordered {
        let (px, py) = (x.x(*cost), y.y(*rate));
        if let Some(w) = c.wilson {
            let _ = write!(
                out,
                r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#888"/>"##,
                y.y(w.lo),
                y.y(w.hi)
            );
        }
        if let Some(ci) = c.cost_mean_bootstrap {
            let _ = write!(
                out,
                r##"<line class="cost-interval" x1="{:.1}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#888"/>"##,
                x.x(ci.lo),
                x.x(ci.hi)
            );
        }
        let on = report.frontier.contains(&c.label);
        let _ = write!(
            out,
            r##"<circle class="point" cx="{px:.1}" cy="{py:.1}" r="5" fill="{}"><title>{}: {} at ${cost:.4}/run</title></circle>"##,
            if on { "#c33" } else { "#36c" },
            esc(&c.label),
            pct(Some(*rate)),
        );
        match labels.iter_mut().find(|l| (l.0 - px).abs() < 3.0 && (l.1 - py).abs() < 3.0) {
            Some(l) => l.2.push(&c.label),
            None => labels.push((px, py, vec![&c.label])),
        }
    }
    for (px, text_y, mut names) in spread_labels(labels) {
        names.sort_unstable();
        // Labels right of the middle sit left of their point, so none runs off the plot.
        let (lx, anchor) =
            if px > (LEFT + W - RIGHT) / 2.0 { (px - 7.0, "end") } else { (px + 7.0, "start") };
        let _ = write!(
            out,
            r#"<text class="label" x="{lx:.1}" y="{text_y:.1}" font-size="11" text-anchor="{anchor}">{}</text>"#,
            esc(&names.join(", "))
        );
    }
    out.push_str("</svg>");
}

/// Places each label just above its point, moving down those that would overlap a label
/// placed before them in the same part of the plot. Returns (x, text baseline, names).
fn spread_labels(mut labels: Vec<(f64, f64, Vec<&str>)>) -> Vec<(f64, f64, Vec<&str>)> {
    const LINE: f64 = 12.0;
    labels.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.total_cmp(&b.0)));
    let mut placed: Vec<(f64, f64, Vec<&str>)> = Vec::with_capacity(labels.len());
    for (px, py, names) in labels {
        let mut text_y = (py - 6.0).max(11.0);
        while placed.iter().any(|(qx, qy, _)| (qx - px).abs() < 110.0 && (qy - text_y).abs() < LINE) {
            text_y += LINE;
        }
        placed.push((px, text_y, names));
    }
    placed
}

/// Resolve rate per condition with its Wilson (thick) and bootstrap (thin) intervals.
fn resolve_rates(out: &mut String, report: &Report) {
    svg_open(out, "plot resolve-rate", "Resolve rate per condition with 95% intervals");
    let y = Axis { lo: 0.0, hi: 1.0 };
    axes(out, "condition", "resolve rate (of selected runs)", None, &y, true);
    let n = report.conditions.len().max(1) as f64;
    let step = (W - LEFT - RIGHT) / n;
    for (i, c) in report.conditions.iter().enumerate() {
        let cx = LEFT + step * (i as f64 + 0.5);
        if let Some(b) = c.bootstrap {
            let _ = write!(
                out,
                r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999"/>"##,
                cx + 4.0,
                y.y(b.lo),
                cx + 4.0,
                y.y(b.hi)
            );
        }
        if let Some(w) = c.wilson {
            let _ = write!(
                out,
                r##"<line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="#333" stroke-width="3"/>"##,
                y.y(w.lo),
                y.y(w.hi)
            );
        }
        if let Some(rate) = c.resolve_rate {
            let _ = write!(
                out,
                r##"<circle class="point" cx="{cx:.1}" cy="{:.1}" r="5" fill="#36c"><title>{}: {}</title></circle>"##,
                y.y(rate),
                esc(&c.label),
                pct(Some(rate))
            );
        }
        let _ = write!(
            out,
            r#"<text x="{cx:.1}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            H - BOTTOM + 14.0,
            esc(&c.label)
        );
    }
    out.push_str("</svg>");
}

/// Box plots of a per-run distribution.
fn boxes(
    out: &mut String,
    report: &Report,
    class: &str,
    title: &str,
    y_label: &str,
    get: fn(&ConditionSummary) -> Option<Quartiles>,
) {
    svg_open(out, &format!("plot {class}"), title);
    let y = Axis::around(report.conditions.iter().filter_map(get).flat_map(|q| [q.min, q.max]), true);
    axes(out, "condition", y_label, None, &y, false);
    let n = report.conditions.len().max(1) as f64;
    let step = (W - LEFT - RIGHT) / n;
    for (i, c) in report.conditions.iter().enumerate() {
        let cx = LEFT + step * (i as f64 + 0.5);
        let _ = write!(
            out,
            r#"<text x="{cx:.1}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            H - BOTTOM + 14.0,
            esc(&c.label)
        );
        let Some(q) = get(c) else { continue };
        let half = (step * 0.25).min(30.0);
        let _ = write!(
            out,
            r##"<g class="box"><title>{}: median {:.4}</title><line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="#333"/><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#cde" stroke="#333"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#c33" stroke-width="2"/></g>"##,
            esc(&c.label),
            q.median,
            y.y(q.min),
            y.y(q.max),
            cx - half,
            y.y(q.q3),
            2.0 * half,
            (y.y(q.q1) - y.y(q.q3)).max(1.0),
            cx - half,
            y.y(q.median),
            cx + half,
            y.y(q.median)
        );
    }
    out.push_str("</svg>");
}

/// The transfer matrix: critics (rows) by agents (columns), coloured by the change in
/// resolve rate (blue better, red worse).
fn transfer(out: &mut String, report: &Report) {
    let mut critics: Vec<&str> = report.transfer.iter().map(|t| t.critic.as_str()).collect();
    critics.sort();
    critics.dedup();
    let mut agents: Vec<&str> = report.transfer.iter().map(|t| t.agent.as_str()).collect();
    agents.sort();
    agents.dedup();
    let (cw, ch, left, top) = (120.0, 34.0, 240.0, 30.0);
    let (w, h) = (left + cw * agents.len() as f64 + 10.0, top + ch * critics.len() as f64 + 10.0);
    let _ = write!(
        out,
        r#"<svg class="plot transfer" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><title>Change in resolve rate against the same agent with no critic</title>"#
    );
    for (j, a) in agents.iter().enumerate() {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="20" font-size="11" text-anchor="middle">{}</text>"#,
            left + cw * (j as f64 + 0.5),
            esc(a)
        );
    }
    for (i, c) in critics.iter().enumerate() {
        let ty = top + ch * i as f64;
        // A critic row says which agent trained it, when the sweep file does.
        let trained_on =
            report.transfer.iter().find(|t| t.critic == *c).and_then(|t| t.trained_on.as_deref());
        let row = match trained_on {
            Some(a) => format!("{c} (trained on {a})"),
            None => c.to_string(),
        };
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            left - 6.0,
            ty + ch / 2.0 + 4.0,
            esc(&row)
        );
        for (j, a) in agents.iter().enumerate() {
            let cell = report.transfer.iter().find(|t| t.critic == *c && t.agent == *a);
            let delta = cell.and_then(|t| t.delta);
            // Full colour at +-20 points.
            let fill = match delta {
                None => "#eeeeee".to_string(),
                Some(d) => {
                    let k = (d.abs() / 0.2).min(1.0);
                    let fade = (255.0 - 155.0 * k) as u8;
                    if d >= 0.0 {
                        format!("rgb({fade},{fade},255)")
                    } else {
                        format!("rgb(255,{fade},{fade})")
                    }
                }
            };
            let text = delta.map_or("-".into(), |d| format!("{:+.1} pt", d * 100.0));
            let tip = cell
                .and_then(|t| t.interval)
                .map_or(String::new(), |iv| format!(" [{:+.1}, {:+.1}]", iv.lo * 100.0, iv.hi * 100.0));
            // The agent a critic was trained on is outlined: the other cells are transfer.
            let seen = cell.and_then(|t| t.seen) == Some(true);
            let (stroke, note) = if seen {
                (r##"stroke="#222" stroke-width="2""##, " (its training agent)")
            } else {
                (r##"stroke="#fff""##, "")
            };
            let _ = write!(
                out,
                r##"<g class="cell"><title>{} x {}{note}: {text}{tip}</title><rect x="{:.1}" y="{ty:.1}" width="{cw}" height="{ch}" fill="{fill}" {stroke}/><text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{text}</text></g>"##,
                esc(c),
                esc(a),
                left + cw * j as f64,
                left + cw * (j as f64 + 0.5),
                ty + ch / 2.0 + 4.0
            );
        }
    }
    out.push_str("</svg>");
}

/// Tokens, time and money per condition: means per finished run, totals over all its runs.
fn usage(out: &mut String, report: &Report) {
    let num = |x: Option<f64>, digits: usize| x.map_or("-".into(), |v| format!("{v:.digits$}"));
    out.push_str("<h2>Tokens, time and money</h2><table class=\"usage\"><tr><th class=\"l\">condition</th><th>input tokens</th><th>output tokens</th><th>cached tokens</th><th>wall time (s)</th><th>critic stops</th><th>agent $ total</th><th>critic $ total</th><th>$ total</th></tr>");
    for c in &report.conditions {
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>${:.4}</td><td>${:.4}</td><td>${:.4}</td></tr>",
            esc(&c.label),
            num(c.input_tokens_mean, 0),
            num(c.output_tokens_mean, 0),
            num(c.cached_tokens_mean, 0),
            num(c.wall_s_mean, 1),
            c.critic_stops,
            c.agent_cost_total_usd,
            c.critic_cost_total_usd,
            c.cost_total_usd,
        );
    }
    out.push_str("</table><p class=\"note\">Tokens and wall time are means per finished run; dollars are totals over every run of the condition.</p>");
}

/// Each critic's change pooled over agents, and over the agents it was not trained on.
fn transfer_by_critic(out: &mut String, report: &Report) {
    let pt = |d: Option<f64>, i: Option<Interval>| match (d, i) {
        (Some(d), Some(i)) => format!(
            "{:+.1} pt <span class=\"iv\">[{:+.1}, {:+.1}]</span>",
            d * 100.0,
            i.lo * 100.0,
            i.hi * 100.0
        ),
        (Some(d), None) => format!("{:+.1} pt", d * 100.0),
        _ => "-".into(),
    };
    out.push_str("<table class=\"transfer-by-critic\"><tr><th class=\"l\">critic</th><th class=\"l\">trained on</th><th>all agents</th><th>change (95%)</th><th>unseen agents</th><th>change (95%)</th></tr>");
    for s in &report.transfer_by_critic {
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.critic),
            s.trained_on.as_deref().map_or("-".into(), esc),
            s.agents,
            pt(s.delta, s.interval),
            if s.trained_on.is_some() { s.unseen_agents.to_string() } else { "-".into() },
            pt(s.unseen_delta, s.unseen_interval),
        );
    }
    out.push_str("</table>");
}

/// Runs that ended `error` or `cancelled`, grouped by reason per condition.
fn error_reasons(out: &mut String, report: &Report) {
    if report.conditions.iter().all(|c| c.error_reasons.is_empty()) {
        return;
    }
    let _ = write!(
        out,
        "<h2>Error reasons</h2><p class=\"note\">Runs that ended <code>error</code> (infrastructure) or <code>cancelled</code>, by the first line of their last error; the {} most common per condition. They count as unresolved in the rate over selected runs.</p>\
         <table class=\"error-reasons\"><tr><th class=\"l\">condition</th><th class=\"l\">state</th><th class=\"l\">reason</th><th>runs</th><th>example run</th></tr>",
        super::ERROR_REASONS_SHOWN
    );
    for c in report.conditions.iter().filter(|c| !c.error_reasons.is_empty()) {
        for e in &c.error_reasons {
            let _ = write!(
                out,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.label),
                esc(&e.state),
                esc(&e.reason),
                e.runs,
                e.example_run_id
            );
        }
        let unlisted = super::render::unlisted_error_runs(c);
        if unlisted > 0 {
            let _ = write!(
                out,
                "<tr><td class=\"l\">{}</td><td class=\"l\" colspan=\"2\">other reasons</td><td>{unlisted}</td><td>-</td></tr>",
                esc(&c.label)
            );
        }
    }
    out.push_str("</table>");
}

/// The report as one HTML document.
pub fn render(report: &Report) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\"><head><meta charset=\"utf-8\"/>\
         <title>steerbench report</title><style>\
         body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:90%}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}\
         svg{display:block;margin:1em 0;background:#fff}.note{color:#555;font-size:90%}.iv{color:#666;font-size:85%;white-space:nowrap}.nw{white-space:nowrap}\
         </style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>steerbench report</h1><p>Sweeps: {}. Resolve rate over {} (errored, cancelled and unfinished runs count as unresolved); 95% intervals (Wilson over runs; bootstrap over instances). Beside it, the rate over finished runs only.</p>",
        esc(&report.sweeps.join(", ")),
        esc(&super::render::selected_denominator(report))
    );
    out.push_str("<h2>Conditions</h2><table><tr><th class=\"l\">condition</th><th>resolved / selected</th><th>rate</th><th>Wilson</th><th>bootstrap</th><th>resolved / finished</th><th>rate (finished)</th><th>with base fallback (/ selected)</th><th>cost / finished run (95%)</th><th>$/resolved</th><th>steps</th><th>critic calls</th><th>interventions</th></tr>");
    for c in &report.conditions {
        let iv = |i: Option<Interval>| {
            i.map_or("-".into(), |i| {
                format!("<span class=\"nw\">{:.1}–{:.1}%</span>", i.lo * 100.0, i.hi * 100.0)
            })
        };
        let fb = c.with_fallback.as_ref().map_or("-".into(), |f| {
            format!(
                "<span class=\"nw\">{} ({})</span> <span class=\"iv\">{} run(s) from {}</span>",
                pct(f.resolve_rate),
                f.resolved,
                f.fell_back,
                esc(&f.base)
            )
        });
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{fb}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.label),
            c.resolved,
            c.denominator,
            pct(c.resolve_rate),
            iv(c.wilson),
            iv(c.bootstrap),
            c.resolved,
            c.runs_finished,
            pct(c.resolve_rate_finished),
            c.cost_mean_usd.map_or("-".into(), |v| match c.cost_mean_bootstrap {
                Some(i) => format!("${v:.4} <span class=\"iv\">[{:.4}, {:.4}]</span>", i.lo, i.hi),
                None => format!("${v:.4}"),
            }),
            c.cost_per_resolved_usd.map_or("-".into(), |v| format!("${v:.4}")),
            c.steps_mean.map_or("-".into(), |v| format!("{v:.1}")),
            c.critic_calls,
            c.interventions
        );
    }
    out.push_str("</table>");
    usage(&mut out, report);
    out.push_str(
        "<h2>Outcomes</h2><table><tr><th class=\"l\">condition</th><th class=\"l\">outcomes</th></tr>",
    );
    for c in &report.conditions {
        let list: Vec<String> = c.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            esc(&c.label),
            esc(&list.join(", "))
        );
    }
    out.push_str("</table>");
    error_reasons(&mut out, report);
    out.push_str("<h2>Cost against accuracy</h2>");
    cost_vs_accuracy(&mut out, report);
    let _ =
        write!(out, "<p class=\"note\">Frontier (cheapest first): {}</p>", esc(&report.frontier.join(" → ")));
    out.push_str("<h2>Resolve rate</h2>");
    resolve_rates(&mut out, report);
    out.push_str("<h2>Cost per run</h2>");
    boxes(&mut out, report, "cost-distribution", "Cost per finished run", "USD", |c| c.cost_quartiles);
    out.push_str("<h2>Steps per run</h2>");
    boxes(&mut out, report, "steps-distribution", "Steps per finished run", "steps", |c| c.steps_quartiles);
    if !report.transfer.is_empty() {
        out.push_str("<h2>Transfer</h2><p class=\"note\">Change in resolve rate each critic (row) brings to each agent (column), against the same agent with no critic on the same instances; hover for the 95% paired bootstrap interval. A critic's own training agent (<code>trained_on</code> in the sweep file) is outlined; the table below pools each critic's change over agents, and over the agents it was not trained on.</p>");
        transfer(&mut out, report);
        transfer_by_critic(&mut out, report);
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::spread_labels;

    #[test]
    fn labels_near_each_other_are_moved_apart() {
        let placed =
            spread_labels(vec![(100.0, 50.0, vec!["a"]), (110.0, 52.0, vec!["b"]), (400.0, 50.0, vec!["c"])]);
        let y = |name: &str| placed.iter().find(|p| p.2 == [name]).unwrap().1;
        assert_eq!(y("a"), 44.0, "just above its point");
        assert!(y("b") - y("a") >= 12.0, "a line below the label it would overlap: {placed:?}");
        assert_eq!(y("c"), 44.0, "a label far away stays where it is");
    }
}
