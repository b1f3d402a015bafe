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
        patch: None,
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
    assert_eq!((c.runs, c.finished, c.resolved, c.denominator), (10, 9, 5, 9));
    assert!((c.resolve_rate.unwrap() - 5.0 / 9.0).abs() < 1e-12);
    let w = c.wilson.unwrap();
    let b = c.bootstrap.unwrap();
    assert!(w.lo < 5.0 / 9.0 && 5.0 / 9.0 < w.hi && b.lo < 5.0 / 9.0 && 5.0 / 9.0 < b.hi);
    assert_eq!(c.outcomes["resolved"], 5);
    assert_eq!(c.outcomes["step_limit"], 1);
    assert_eq!(c.outcomes["infra_error"], 1);
    assert_eq!(c.critic_cost_total_usd, "0.10".parse::<Decimal>().unwrap());
    assert_eq!(c.cost_total_usd, "0.60".parse::<Decimal>().unwrap());
    assert!((c.cost_per_resolved_usd.unwrap() - 0.12).abs() < 1e-12);
    assert_eq!((c.critic_calls, c.interventions), (20, 10));
}

#[test]
fn the_denominator_is_chosen_and_said() {
    let all = build(&sweep(), &ReportOptions { denominator: Denominator::Selected, total: None });
    let c = all.conditions.iter().find(|c| c.critic == "critic").unwrap();
    assert_eq!((c.resolved, c.denominator), (5, 10), "the infra error counts as unresolved");
    let of_500 = build(&sweep(), &ReportOptions { denominator: Denominator::Selected, total: Some(500) });
    let c = of_500.conditions.iter().find(|c| c.critic == "critic").unwrap();
    assert_eq!(c.denominator, 500);
    assert!((c.resolve_rate.unwrap() - 0.01).abs() < 1e-12);
    assert!(c.bootstrap.unwrap().hi < 0.03, "{:?}", c.bootstrap);
}

#[test]
fn base_fallback_is_shown_beside_the_plain_figures() {
    let report = build(&sweep(), &ReportOptions { denominator: Denominator::Selected, total: None });
    let c = report.conditions.iter().find(|c| c.critic == "critic").unwrap();
    let fb = c.with_fallback.as_ref().unwrap();
    // Instance 3 (step limit) takes the base's resolved result; 9 (infra error) the base's unresolved.
    assert_eq!((fb.base.as_str(), fb.fell_back, fb.resolved), ("none", 2, 6));
    assert_eq!(c.resolved, 5, "the plain figure is unchanged");
    assert!(report.conditions.iter().find(|c| c.critic == "none").unwrap().with_fallback.is_none());
}

#[test]
fn frontier_and_transfer() {
    let report = build(&sweep(), &ReportOptions::default());
    // The critic is cheaper (0.06 vs 0.10 a run) and better: it alone is on the frontier.
    assert_eq!(report.frontier, vec!["qwen/critic"]);
    let t = &report.transfer[0];
    assert_eq!((t.critic.as_str(), t.agent.as_str(), t.instances), ("critic", "qwen", 9));
    // On the 9 paired instances: critic 5 resolved, base 4.
    assert!((t.delta.unwrap() - 1.0 / 9.0).abs() < 1e-12, "{t:?}");
}

#[test]
fn paired_comparison_counts_flips_and_tests_them() {
    let rows = sweep();
    let a: Vec<&RunRow> = rows.iter().filter(|r| r.critic == "critic").collect();
    let b: Vec<&RunRow> = rows.iter().filter(|r| r.critic == "none").collect();
    let c = compare("critic", &a, "none", &b);
    assert_eq!(c.instances, 9);
    assert_eq!((c.only_a, c.only_b), (2, 1), "4 and 5 flipped to the critic, 3 to the base");
    assert_eq!(c.flipped_to_a, vec!["repo__4", "repo__5"]);
    assert_eq!(c.flipped_to_b, vec!["repo__3"]);
    assert!((c.mcnemar_p - stats::mcnemar_exact(2, 1)).abs() < 1e-15 && c.mcnemar_p == 1.0);
    assert!((c.rate_diff.unwrap() - 1.0 / 9.0).abs() < 1e-12);
    assert!((c.cost_diff_usd.unwrap() - (-0.04)).abs() < 1e-9, "{c:?}");
    let i = c.rate_diff_interval.unwrap();
    assert!(i.lo <= 1.0 / 9.0 && 1.0 / 9.0 <= i.hi);
}

#[test]
fn renders_say_the_same() {
    let report = build(&sweep(), &ReportOptions::default());
    let table = render::table(&report);
    assert!(table.contains("qwen/critic") && table.contains("5/9") && table.contains("55.6%"), "{table}");
    assert!(table.contains("with base fallback"));
    let csv = render::csv(&report);
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.lines().nth(1).unwrap().starts_with("s,qwen,critic,10,9,10,1,5,9,"), "{csv}");
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
    assert!(html.contains("+11.1 pt"), "the transfer cell says the change");
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
    assert!(render::csv(&report).lines().next().unwrap().ends_with(",cost_mean_lo_usd,cost_mean_hi_usd"));
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
