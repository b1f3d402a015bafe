use rust_decimal::Decimal;

use super::data::RunRow;
use super::*;

fn run(
    agent: &str,
    critic: &str,
    instance: usize,
    repeat: i32,
    outcome: &str,
    resolved: bool,
    cost: &str,
) -> RunRow {
    RunRow {
        id: 0,
        sweep_id: 1,
        sweep: "s".into(),
        agent: agent.into(),
        critic: critic.into(),
        prefix_from: None,
        trained_on: None,
        instance_id: format!("repo__{instance}"),
        repeat,
        state: if outcome == "error" { "error".into() } else { "done".into() },
        outcome: (outcome != "error").then(|| outcome.to_string()),
        resolved: Some(resolved),
        agent_cost: cost.parse().unwrap(),
        critic_cost: Decimal::ZERO,
        input_tokens: 1000,
        output_tokens: 100,
        cached_tokens: 0,
        steps: 10,
        wall_s: Some(60.0),
        critic_calls: 0,
        interventions: 0,
        last_error: (outcome == "error").then(|| "infrastructure failure: sandbox gone".to_string()),
    }
}

/// 10 instances, one repeat: the base (`none`) resolves 0-3; the critic resolves 0-2, 4 and 5,
/// hits the step limit on 3, and has an infrastructure error on 9.
fn sweep() -> Vec<RunRow> {
    let mut rows = Vec::new();
    for i in 0..10 {
        rows.push(run("qwen", "none", i, 0, if i < 4 { "resolved" } else { "unresolved" }, i < 4, "0.10"));
        let (outcome, ok) = match i {
            3 => ("step_limit", false),
            9 => ("error", false),
            _ if i < 6 => ("resolved", true),
            _ => ("unresolved", false),
        };
        let mut r = run("qwen", "critic", i, 0, outcome, ok, "0.05");
        r.critic_cost = "0.01".parse().unwrap();
        r.critic_calls = 2;
        r.interventions = 1;
        rows.push(r);
    }
    rows
}

#[test]
fn conditions_count_what_happened() {
    let report = build(&sweep(), &ReportOptions::default());
    let c = report.conditions.iter().find(|c| c.critic == "critic").unwrap();
    // The infrastructure error on instance 9 counts as unresolved over the selected runs and
    // is left out of the finished ones.
    assert_eq!((c.runs_selected, c.runs_finished, c.resolved, c.denominator), (10, 9, 5, 10));
    assert_eq!((c.runs, c.finished), (10, 9), "the earlier keys say the same");
    assert!((c.resolve_rate.unwrap() - 0.5).abs() < 1e-12);
    assert!((c.resolve_rate_finished.unwrap() - 5.0 / 9.0).abs() < 1e-12);
    assert_eq!(c.wilson, stats::wilson(5, 10, LEVEL), "the interval is over the selected runs");
    let b = c.bootstrap.unwrap();
    assert!(b.lo < 0.5 && 0.5 < b.hi && b.hi < 5.0 / 9.0 + 0.3, "{b:?}");
    assert_eq!(c.outcomes["resolved"], 5);
    assert_eq!(c.outcomes["step_limit"], 1);
    assert_eq!(c.outcomes["infra_error"], 1);
    assert_eq!(c.outcomes.values().sum::<u64>(), c.runs_selected);
    assert_eq!(
        c.error_reasons,
        vec![ErrorReason {
            state: "error".into(),
            reason: "infrastructure failure: sandbox gone".into(),
            runs: 1,
            example_run_id: 0
        }]
    );
    assert_eq!(c.critic_cost_total_usd, "0.10".parse::<Decimal>().unwrap());
    assert_eq!(c.cost_total_usd, "0.60".parse::<Decimal>().unwrap());
    assert!((c.cost_per_resolved_usd.unwrap() - 0.12).abs() < 1e-12);
    assert_eq!((c.critic_calls, c.interventions), (20, 10));
}

#[test]
fn total_instances_set_the_selected_denominator() {
    let of_500 = build(&sweep(), &ReportOptions { total: Some(500) });
    let c = of_500.conditions.iter().find(|c| c.critic == "critic").unwrap();
    assert_eq!((c.denominator, c.runs_selected, c.runs_finished), (500, 10, 9));
    assert!((c.resolve_rate.unwrap() - 0.01).abs() < 1e-12);
    assert!((c.resolve_rate_finished.unwrap() - 5.0 / 9.0).abs() < 1e-12, "unchanged by --total");
    assert_eq!(c.wilson, stats::wilson(5, 500, LEVEL));
    assert!(c.bootstrap.unwrap().hi < 0.03, "{:?}", c.bootstrap);
    assert_eq!(c.with_fallback.as_ref().unwrap().denominator, 500);
}

#[test]
fn error_reasons_are_grouped_by_first_line_and_the_most_common_kept() {
    let mut rows = Vec::new();
    let mut id = 100;
    let mut ended = |state: &str, error: Option<&str>, n: usize| {
        for _ in 0..n {
            let mut r = run("qwen", "none", id as usize, 0, "unresolved", false, "0.01");
            r.id = id;
            id += 1;
            r.state = state.into();
            r.outcome = None;
            r.last_error = error.map(str::to_string);
            rows.push(r);
        }
    };
    let long = format!("lease expired: {}\nsecond line", "x".repeat(200));
    ended("error", Some("  infrastructure failure: docker gone \n  at sandbox.rs:12"), 3);
    ended("error", Some("infrastructure failure: docker gone"), 1);
    ended("cancelled", Some("sweep cancelled"), 2);
    ended("error", Some(&long), 1);
    ended("error", None, 1);
    ended("error", Some("a"), 1);
    ended("error", Some("b"), 1);
    ended("queued", Some("lease expired on attempt 1"), 1);
    let report = build(&rows, &ReportOptions::default());
    let c = &report.conditions[0];
    let got: Vec<(&str, &str, u64, i64)> = c
        .error_reasons
        .iter()
        .map(|e| (e.state.as_str(), e.reason.as_str(), e.runs, e.example_run_id))
        .collect();
    let cut = format!("lease expired: {}…", "x".repeat(REASON_CHARS - 1 - "lease expired: ".len()));
    assert_eq!(
        got,
        vec![
            ("error", "infrastructure failure: docker gone", 4, 100),
            ("cancelled", "sweep cancelled", 2, 104),
            ("error", "(no reason recorded)", 1, 107),
            ("error", "a", 1, 108),
            ("error", "b", 1, 109),
        ],
        "the most common first, ties by state and reason; a queued run is not an error"
    );
    assert!(!got.iter().any(|g| g.1 == cut), "the sixth reason is not listed");
    assert_eq!(short_reason(Some(&long)), cut);
    assert_eq!(short_reason(Some(&long)).chars().count(), REASON_CHARS);
    assert_eq!(render::unlisted_error_runs(c), 1, "the long reason's run");
    assert_eq!((c.outcomes["infra_error"], c.outcomes["cancelled"], c.outcomes["unfinished"]), (8, 2, 1));
    assert_eq!((c.resolved, c.denominator, c.runs_finished, c.resolve_rate_finished), (0, 11, 0, None));
    let table = render::table(&report);
    assert!(
        table.contains("error reasons")
            && table.contains("infrastructure failure: docker gone  (e.g. run 100)"),
        "{table}"
    );
    assert!(table.contains("more run(s) under other reasons"), "{table}");
    let csv = render::csv(&report);
    let (_, reasons) = csv.split_once("\n\n").unwrap();
    assert_eq!(reasons.lines().next(), Some(render::CSV_ERROR_REASONS_HEADER));
    assert!(reasons.contains("s,qwen,none,cancelled,sweep cancelled,2,104\n"), "{csv}");
}

#[test]
fn base_fallback_is_shown_beside_the_plain_figures() {
    let report = build(&sweep(), &ReportOptions::default());
    let c = report.conditions.iter().find(|c| c.critic == "critic").unwrap();
    let fb = c.with_fallback.as_ref().unwrap();
    // Instance 3 (step limit) takes the base's resolved result; 9 (infra error) the base's unresolved.
    assert_eq!((fb.base.as_str(), fb.fell_back, fb.resolved, fb.denominator), ("none", 2, 6, 10));
    assert_eq!(c.resolved, 5, "the plain figure is unchanged");
    assert!(report.conditions.iter().find(|c| c.critic == "none").unwrap().with_fallback.is_none());
}

#[test]
fn frontier_and_transfer() {
    let report = build(&sweep(), &ReportOptions::default());
    // The critic is cheaper (0.06 vs 0.10 a run) and better: it alone is on the frontier.
    assert_eq!(report.frontier, vec!["qwen/critic"]);
    let t = &report.transfer[0];
    assert_eq!((t.critic.as_str(), t.agent.as_str(), t.instances), ("critic", "qwen", 10));
    // On the 10 selected instances (the errored one counts as unresolved): critic 5, base 4.
    assert!((t.delta.unwrap() - 1.0 / 10.0).abs() < 1e-12, "{t:?}");
}

#[test]
fn paired_comparison_counts_flips_and_tests_them() {
    let rows = sweep();
    let a: Vec<&RunRow> = rows.iter().filter(|r| r.critic == "critic").collect();
    let b: Vec<&RunRow> = rows.iter().filter(|r| r.critic == "none").collect();
    let c = compare("critic", &a, "none", &b);
    // Instance 9's errored critic run is paired as unresolved (the base did not resolve it
    // either); costs and steps compare the 9 pairs both finished.
    assert_eq!((c.instances, c.pairs, c.pairs_finished), (10, 10, 9));
    assert_eq!((c.only_a, c.only_b), (2, 1), "4 and 5 flipped to the critic, 3 to the base");
    assert!((c.rate_a.unwrap() - 0.5).abs() < 1e-12 && (c.rate_b.unwrap() - 0.4).abs() < 1e-12);
    assert!((c.rate_a_finished.unwrap() - 5.0 / 9.0).abs() < 1e-12, "{c:?}");
    assert_eq!(c.flipped_to_a, vec!["repo__4", "repo__5"]);
    assert_eq!(c.flipped_to_b, vec!["repo__3"]);
    assert!((c.mcnemar_p - stats::mcnemar_exact(2, 1)).abs() < 1e-15 && c.mcnemar_p == 1.0);
    assert!((c.rate_diff.unwrap() - 1.0 / 10.0).abs() < 1e-12);
    assert!((c.cost_diff_usd.unwrap() - (-0.04)).abs() < 1e-9, "{c:?}");
    let i = c.rate_diff_interval.unwrap();
    assert!(i.lo <= 1.0 / 10.0 && 1.0 / 10.0 <= i.hi);
    let text = render::comparison(&c);
    assert!(
        text.contains("10 selected (instance, repeat) pairs, 9 both finished")
            && text.contains("50.0% vs 40.0%"),
        "{text}"
    );
}

#[test]
fn renders_say_the_same() {
    let report = build(&sweep(), &ReportOptions::default());
    let table = render::table(&report);
    let line = table.lines().find(|l| l.starts_with("qwen/critic")).unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cells[..3], ["qwen/critic", "5/10", "50.0%"], "resolved / selected first: {table}");
    assert!(line.contains(" 5/9 ") && line.contains("55.6%"), "then resolved / finished: {table}");
    assert!(table.contains("resolved/selected") && table.contains("resolved/finished"), "{table}");
    assert!(table.contains("with base fallback"));
    assert!(table.contains("infrastructure failure: sandbox gone  (e.g. run 0)"), "{table}");
    let csv = render::csv(&report);
    let (conditions, reasons) = csv.split_once("\n\n").unwrap();
    assert_eq!(conditions.lines().count(), 3);
    let header: Vec<&str> = conditions.lines().next().unwrap().split(',').collect();
    let row: Vec<&str> = conditions.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(header.len(), row.len());
    let col = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert!(row.join(",").starts_with("s,qwen,critic,10,9,10,1,5,10,"), "{csv}");
    assert_eq!((col("runs_selected"), col("runs_finished"), col("denominator")), ("10", "9", "10"));
    assert_eq!((col("resolve_rate"), col("infra_errors"), col("cancelled")), ("0.5", "1", "0"));
    assert!(col("resolve_rate_finished").starts_with("0.5555"), "{csv}");
    assert_eq!(reasons, "sweep,agent,critic,state,reason,runs,example_run_id\ns,qwen,critic,error,infrastructure failure: sandbox gone,1,0\n");
}

#[test]
fn the_html_report_is_well_formed_and_holds_its_plots() {
    use quick_xml::events::Event;
    let report = build(&sweep(), &ReportOptions::default());
    let html = html::render(&report);
    let body = html.trim_start_matches("<!DOCTYPE html>\n");
    let mut reader = quick_xml::Reader::from_str(body);
    let (mut svgs, mut points, mut cells, mut boxes, mut cost_bars) = (Vec::new(), 0, 0, 0, 0);
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                let class = e
                    .try_get_attribute("class")
                    .unwrap()
                    .map(|a| String::from_utf8(a.value.to_vec()).unwrap())
                    .unwrap_or_default();
                match e.name().as_ref() {
                    b"svg" => svgs.push(class),
                    b"circle" if class == "point" => points += 1,
                    b"g" if class == "cell" => cells += 1,
                    b"g" if class == "box" => boxes += 1,
                    b"line" if class == "cost-interval" => cost_bars += 1,
                    _ => {}
                }
            }
            Ok(_) => {}
            Err(e) => panic!("not well-formed at {}: {e}", reader.buffer_position()),
        }
    }
    assert_eq!(
        svgs,
        vec![
            "plot cost-vs-accuracy",
            "plot resolve-rate",
            "plot cost-distribution",
            "plot steps-distribution",
            "plot transfer"
        ]
    );
    assert_eq!(points, 4, "two conditions in each of two point plots");
    assert_eq!(boxes, 4, "two conditions in each of two box plots");
    assert_eq!(cells, 1, "one critic x one agent");
    assert_eq!(cost_bars, 2, "each point of the cost plot has its cost interval");
    assert!(html.contains("+10.0 pt"), "the transfer cell says the change (over the 10 selected instances)");
    assert!(html.contains("<th>resolved / selected</th>") && html.contains("<th>resolved / finished</th>"));
    assert!(
        html.contains("<td>5/10</td><td>50.0%</td>") && html.contains("<td>5/9</td><td>55.6%</td>"),
        "{html}"
    );
    assert!(
        html.contains("class=\"error-reasons\"")
            && html.contains("<td class=\"l\">error</td><td class=\"l\">infrastructure failure: sandbox gone</td><td>1</td><td>0</td>"),
        "{html}"
    );
    assert!(html.contains("class=\"usage\"") && html.contains("<td>1000</td>"), "mean input tokens per run");
    assert!(
        !html.contains("<script") && !html.contains("src=") && !html.contains("href="),
        "nothing fetched"
    );
}

#[test]
fn the_mean_cost_has_a_bootstrap_interval_over_instances() {
    // Two repeats of 20 instances; an instance's cost is the same in both repeats, so the
    // interval comes from the spread between instances only.
    let rows: Vec<RunRow> = (0..20)
        .flat_map(|i| {
            (0..2)
                .map(move |rep| run("qwen", "none", i, rep, "unresolved", false, &format!("0.{:02}", i + 1)))
        })
        .collect();
    let report = build(&rows, &ReportOptions::default());
    let c = &report.conditions[0];
    let mean = c.cost_mean_usd.unwrap();
    assert!((mean - 0.105).abs() < 1e-12, "{mean}");
    let i = c.cost_mean_bootstrap.unwrap();
    // Standard error of the mean of 0.01..0.20 over 20 instances is about 0.013.
    assert!(i.lo < mean && mean < i.hi && i.lo > 0.07 && i.hi < 0.14, "{i:?}");
    // All runs costing the same give a point interval.
    let same = build(&sweep(), &ReportOptions::default());
    let base = same.conditions.iter().find(|c| c.critic == "none").unwrap().cost_mean_bootstrap.unwrap();
    assert!((base.lo - 0.10).abs() < 1e-12 && (base.hi - 0.10).abs() < 1e-12, "{base:?}");
    assert!(render::csv(&report).lines().next().unwrap().contains(",cost_mean_lo_usd,cost_mean_hi_usd,"));
}

#[test]
fn transfer_tells_the_training_agent_from_unseen_ones() {
    // Agents `qwen` (the critic's training agent) and `glm`, 4 instances each. On qwen the
    // critic turns 1 of 4 failures into a pass (+25 pt); on glm, 2 of 4 (+50 pt).
    let mut rows = Vec::new();
    for (agent, fixed) in [("qwen", 1), ("glm", 2)] {
        for i in 0..4 {
            rows.push(run(agent, "none", i, 0, "unresolved", false, "0.10"));
            let mut r = run(
                agent,
                "critic",
                i,
                0,
                if i < fixed { "resolved" } else { "unresolved" },
                i < fixed,
                "0.10",
            );
            r.trained_on = Some("qwen".into());
            rows.push(r);
        }
    }
    let report = build(&rows, &ReportOptions::default());
    let cell = |agent: &str| report.transfer.iter().find(|t| t.agent == agent).unwrap();
    assert_eq!((cell("qwen").seen, cell("glm").seen), (Some(true), Some(false)));
    assert!(
        (cell("qwen").delta.unwrap() - 0.25).abs() < 1e-12
            && (cell("glm").delta.unwrap() - 0.5).abs() < 1e-12
    );
    let s = &report.transfer_by_critic[0];
    assert_eq!(
        (s.critic.as_str(), s.trained_on.as_deref(), s.agents, s.unseen_agents),
        ("critic", Some("qwen"), 2, 1)
    );
    assert!((s.delta.unwrap() - 0.375).abs() < 1e-12, "pooled over 8 (agent, instance) pairs: {s:?}");
    assert!((s.unseen_delta.unwrap() - 0.5).abs() < 1e-12, "glm alone: {s:?}");
    let (all, unseen) = (s.interval.unwrap(), s.unseen_interval.unwrap());
    assert!(all.lo <= 0.375 && 0.375 <= all.hi && unseen.lo <= 0.5 && 0.5 <= unseen.hi, "{s:?}");
    let table = render::table(&report);
    assert!(table.contains("(its training agent)") && table.contains("(unseen agent)"), "{table}");
    assert!(table.contains("trained on qwen, 1 unseen agent(s) +50.0 pt"), "{table}");
    let html = html::render(&report);
    assert!(html.contains("critic (trained on qwen)") && html.contains("class=\"transfer-by-critic\""));

    // Without `trained_on` nothing is called seen or unseen.
    for r in &mut rows {
        r.trained_on = None;
    }
    let report = build(&rows, &ReportOptions::default());
    assert!(report.transfer.iter().all(|t| t.seen.is_none()));
    let s = &report.transfer_by_critic[0];
    assert_eq!((s.unseen_agents, s.unseen_delta), (0, None));
}
