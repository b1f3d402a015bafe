//! Reports over a sweep whose results the test writes into Postgres, through the store and
//! through a real coordinator's API.

use std::time::Duration;

use orchestrator::report::{self, data, render, stats, ReportOptions};
use orchestrator::store::tokens;
use orchestrator::testkit::{import_demo, submit, sweep_toml};
use protocol::Role;
use sqlx::PgPool;

/// 6 demo instances x 1 agent x 2 critics. Base (`none`) resolves instances 0-2; the critic
/// (`learned`, trained on the agent) resolves 0-1 and 3-4, and ends instance 5 at the step limit.
async fn fixture_sweep(pool: &PgPool) -> i64 {
    import_demo(pool, "demo").await;
    let toml = sweep_toml("report", "", "").replace(
        "[[critics]]\nname = \"none\"\nkind = \"none\"\n",
        "[[critics]]\nname = \"none\"\nkind = \"none\"\n\n[[critics]]\nname = \"learned\"\nkind = \"remote\"\n\
         every_k = 5\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"critic\"\nprice = \"free\"\ntrained_on = \"agent-a\"\n",
    );
    let sweep = submit(pool, &toml).await.sweep_id;
    let runs: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT r.id, r.instance_id, c.name FROM runs r JOIN critics c ON c.id = r.critic_id
         WHERE r.sweep_id = $1 ORDER BY r.instance_id, c.name",
    )
    .bind(sweep)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut instances: Vec<&str> = runs.iter().map(|r| r.1.as_str()).collect();
    instances.dedup();
    for (id, instance, critic) in &runs {
        let i = instances.iter().position(|x| x == instance).unwrap();
        let (outcome, resolved, cost) = match critic.as_str() {
            "none" => (if i < 3 { "resolved" } else { "unresolved" }, i < 3, "0.10"),
            _ if i == 5 => ("step_limit", false, "0.30"),
            _ => (
                if [0, 1, 3, 4].contains(&i) { "resolved" } else { "unresolved" },
                [0, 1, 3, 4].contains(&i),
                "0.05",
            ),
        };
        sqlx::query(
            "UPDATE runs SET state = 'done', outcome = $2, agent_cost_usd = $3::numeric, steps = 10,
                 started_at = now() - interval '1 minute', finished_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(outcome)
        .bind(cost)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO evaluations (run_id, attempt, apply_status, resolved) VALUES ($1, 1, 'applied', $2)",
        )
        .bind(id)
        .bind(resolved)
        .execute(pool)
        .await
        .unwrap();
    }
    sweep
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn a_report_over_a_sweep_has_the_right_numbers(pool: PgPool) {
    let sweep = fixture_sweep(&pool).await;
    let rows = data::load(&pool, &[sweep]).await.unwrap();
    assert_eq!(rows.len(), 12);
    let report = report::build(&rows, &ReportOptions::default());
    let base = report.conditions.iter().find(|c| c.critic == "none").unwrap();
    let rules = report.conditions.iter().find(|c| c.critic == "learned").unwrap();
    assert_eq!((base.resolved, base.denominator, rules.resolved, rules.denominator), (3, 6, 4, 6));
    assert_eq!(rules.outcomes["step_limit"], 1);
    assert_eq!(rules.cost_total_usd.to_string(), "0.55", "5 x $0.05 + $0.30");
    // With fallback, instance 5 takes the base's (unresolved) result and adds its cost.
    let fb = rules.with_fallback.as_ref().unwrap();
    assert_eq!((fb.fell_back, fb.resolved), (1, 4));
    assert!((fb.cost_mean_usd.unwrap() - 0.65 / 6.0).abs() < 1e-12, "plus the base run's $0.10");
    // 500 selected instances: the same resolved count over 500.
    let of_500 = report::build(&rows, &ReportOptions { total: Some(500) });
    assert!(of_500.conditions.iter().all(|c| c.denominator == 500));
    let t = &report.transfer[0];
    assert!((t.delta.unwrap() - 1.0 / 6.0).abs() < 1e-12, "{t:?}");
    // The critic's training agent comes from the sweep file through Postgres.
    assert_eq!((t.trained_on.as_deref(), t.seen), (Some("agent-a"), Some(true)), "{t:?}");
    let by_critic = &report.transfer_by_critic[0];
    assert_eq!((by_critic.agents, by_critic.unseen_agents, by_critic.unseen_delta), (1, 0, None));

    // The same through the API, and a paired comparison.
    let coordinator = orchestrator::testkit::start_coordinator(&pool, Duration::from_secs(30)).await;
    let token = tokens::create(&pool, "u", Role::User).await.unwrap().token;
    let http = reqwest::Client::new();
    let get = |path: String| http.get(format!("{}{path}", coordinator.url)).bearer_auth(&token).send();
    let api: report::Report = get("/api/v1/report?sweeps=report".into()).await.unwrap().json().await.unwrap();
    assert_eq!(api.conditions.len(), 2);
    let learned = api.conditions.iter().find(|c| c.critic == "learned").unwrap();
    assert_eq!(learned.resolved, 4);
    let cmp: report::Comparison =
        get("/api/v1/compare?a=report:learned&b=report:none".into()).await.unwrap().json().await.unwrap();
    assert_eq!((cmp.instances, cmp.only_a, cmp.only_b), (6, 2, 1));
    assert_eq!(cmp.flipped_to_b.len(), 1);
    assert!((cmp.mcnemar_p - 1.0).abs() < 1e-12);
    let bad = get("/api/v1/compare?a=report:nope&b=report:none".into()).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("no critic condition `nope`"));
    coordinator.shutdown().await;
}

/// One condition (`none`) over the 6 demo instances, one run each: resolved, unresolved, two
/// infrastructure errors with the same first line, a cancelled run, and one still queued.
async fn mixed_sweep(pool: &PgPool) -> Vec<i64> {
    import_demo(pool, "demo").await;
    let sweep = submit(pool, &sweep_toml("mixed", "", "")).await.sweep_id;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE sweep_id = $1 ORDER BY instance_id")
        .bind(sweep)
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(ids.len(), 6);
    for (i, resolved) in [(0, true), (1, false)] {
        sqlx::query(
            "UPDATE runs SET state = 'done', outcome = $2, agent_cost_usd = 0.10, steps = 10,
                 started_at = now() - interval '1 minute', finished_at = now() WHERE id = $1",
        )
        .bind(ids[i])
        .bind(if resolved { "resolved" } else { "unresolved" })
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO evaluations (run_id, attempt, apply_status, resolved) VALUES ($1, 1, 'applied', $2)",
        )
        .bind(ids[i])
        .bind(resolved)
        .execute(pool)
        .await
        .unwrap();
    }
    for (i, state, error) in [
        (2, "error", "infrastructure failure: docker daemon unreachable\n  caused by: connection refused"),
        (3, "error", "infrastructure failure: docker daemon unreachable"),
        (4, "cancelled", "sweep cancelled"),
    ] {
        sqlx::query("UPDATE runs SET state = $2, last_error = $3, finished_at = now() WHERE id = $1")
            .bind(ids[i])
            .bind(state)
            .bind(error)
            .execute(pool)
            .await
            .unwrap();
    }
    ids
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn every_selected_run_counts_and_errors_are_grouped_by_reason(pool: PgPool) {
    let ids = mixed_sweep(&pool).await;
    let coordinator = orchestrator::testkit::start_coordinator(&pool, Duration::from_secs(30)).await;
    let token = tokens::create(&pool, "u", Role::User).await.unwrap().token;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", coordinator.url)).bearer_auth(&token).send();

    // JSON: both denominators with their counts.
    let json: serde_json::Value = get("/api/v1/report?sweeps=mixed").await.unwrap().json().await.unwrap();
    let c = &json["conditions"][0];
    for (key, want) in [
        ("runs_selected", 6),
        ("runs_finished", 2),
        ("runs", 6),
        ("finished", 2),
        ("resolved", 1),
        ("denominator", 6),
    ] {
        assert_eq!(c[key].as_u64(), Some(want), "`{key}` in {c:#}");
    }
    assert!((c["resolve_rate"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-12, "{c:#}");
    assert!((c["resolve_rate_finished"].as_f64().unwrap() - 0.5).abs() < 1e-12, "{c:#}");
    let wilson = stats::wilson(1, 6, report::LEVEL).unwrap();
    assert!((c["wilson"]["lo"].as_f64().unwrap() - wilson.lo).abs() < 1e-12, "Wilson over the 6 selected");
    assert!((c["wilson"]["hi"].as_f64().unwrap() - wilson.hi).abs() < 1e-12);
    assert_eq!(
        c["outcomes"],
        serde_json::json!({"resolved": 1, "unresolved": 1, "infra_error": 2, "cancelled": 1, "unfinished": 1})
    );
    assert_eq!(
        c["error_reasons"],
        serde_json::json!([
            {"state": "error", "reason": "infrastructure failure: docker daemon unreachable", "runs": 2,
             "example_run_id": ids[2]},
            {"state": "cancelled", "reason": "sweep cancelled", "runs": 1, "example_run_id": ids[4]},
        ])
    );

    // --total: the selected denominator is 500; the finished one does not move.
    let of_500: report::Report =
        get("/api/v1/report?sweeps=mixed&total=500").await.unwrap().json().await.unwrap();
    let c500 = &of_500.conditions[0];
    assert_eq!((c500.resolved, c500.denominator, c500.runs_finished), (1, 500, 2));
    assert_eq!((c500.resolve_rate, c500.resolve_rate_finished), (Some(1.0 / 500.0), Some(0.5)));

    // The old choice of denominator is refused, saying why.
    let old = get("/api/v1/report?sweeps=mixed&denominator=attempted").await.unwrap();
    assert_eq!(old.status(), 400);
    assert!(old.text().await.unwrap().contains("resolve_rate_finished"));

    // CSV and table from the same report.
    let report: report::Report = serde_json::from_value(json.clone()).unwrap();
    let csv = render::csv(&report);
    let (conditions, reasons) = csv.split_once("\n\n").unwrap();
    let mut lines = conditions.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col =
        |name: &str| row[header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no `{name}`"))];
    assert_eq!(
        [
            "resolved",
            "denominator",
            "runs_selected",
            "runs_finished",
            "infra_errors",
            "cancelled",
            "unfinished"
        ]
        .map(col),
        ["1", "6", "6", "2", "2", "1", "1"]
    );
    assert!(col("resolve_rate").starts_with("0.1666") && col("resolve_rate_finished") == "0.5", "{csv}");
    assert_eq!(
        reasons,
        format!(
            "{}\nmixed,agent-a,none,error,infrastructure failure: docker daemon unreachable,2,{}\n\
             mixed,agent-a,none,cancelled,sweep cancelled,1,{}\n",
            render::CSV_ERROR_REASONS_HEADER,
            ids[2],
            ids[4]
        )
    );
    let table = render::table(&report);
    let line = table.lines().find(|l| l.starts_with("agent-a/none")).unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cells[..3], ["agent-a/none", "1/6", "16.7%"], "{table}");
    assert!(line.contains(" 1/2 ") && line.contains("50.0%"), "{table}");
    assert!(
        table.contains(&format!(
            "2  error      infrastructure failure: docker daemon unreachable  (e.g. run {})",
            ids[2]
        )),
        "{table}"
    );
    assert!(table.contains(&format!("1  cancelled  sweep cancelled  (e.g. run {})", ids[4])), "{table}");
    let html = report::html::render(&report);
    assert!(html.contains("<h2>Error reasons</h2>") && html.contains("docker daemon unreachable"));
    coordinator.shutdown().await;
}
