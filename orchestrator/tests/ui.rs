//! The web UI in a real browser: headless Chromium (Debian's `chromium`) loads the pages from a
//! real coordinator and must show a run's trajectory with the critic's intervention inline.
//! Skipped without Chromium unless CI is set.

use std::process::Command;
use std::time::Duration;

use orchestrator::store::tokens;
use orchestrator::testkit::{import_demo, submit, sweep_toml};
use protocol::Role;
use serde_json::json;
use sqlx::PgPool;

fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and Chromium is missing (apt-get install chromium)"
        );
        eprintln!("skipping: no Chromium");
    }
    found
}

/// The page's DOM after its scripts ran (and a screenshot of it under target/ui-screenshots).
fn render(browser: &str, url: &str, shot: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--virtual-time-budget=8000",
        "--window-size=1280,1600",
    ];
    let png = dir.join(format!("{shot}.png"));
    let status = Command::new(browser)
        .args(common)
        .arg(format!("--screenshot={}", png.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    assert!(std::fs::metadata(&png).unwrap().len() > 10_000, "a screenshot of the page was taken");
    let out = Command::new(browser).args(common).arg("--dump-dom").arg(url).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn the_ui_shows_sweeps_runs_and_a_trajectory_with_the_critics_intervention(pool: PgPool) {
    let Some(browser) = chromium() else { return };
    import_demo(&pool, "demo").await;
    let toml = sweep_toml("ui-demo", "", "").replace(
        "[[critics]]\nname = \"none\"\nkind = \"none\"\n",
        "[[critics]]\nname = \"none\"\nkind = \"none\"\n\n[[critics]]\nname = \"rules\"\nkind = \"heuristic\"\n",
    );
    let sweep = submit(&pool, &toml).await.sweep_id;
    let run: i64 = sqlx::query_scalar(
        "SELECT r.id FROM runs r JOIN critics c ON c.id = r.critic_id WHERE r.sweep_id = $1 AND c.name = 'rules' ORDER BY r.id LIMIT 1",
    )
    .bind(sweep)
    .fetch_one(&pool)
    .await
    .unwrap();
    // A finished run whose second step carries the critic's feedback.
    sqlx::query("UPDATE runs SET state = 'done', attempt = 1, outcome = 'step_limit', steps = 2, finished_at = now() WHERE id = $1")
        .bind(run)
        .execute(&pool)
        .await
        .unwrap();
    let steps = [
        json!([{"role": "system", "content": "You are a helpful assistant"}, {"role": "user", "content": "Fix the bug"},
               {"role": "assistant", "content": "THOUGHT: look\n```bash\nls\n```"}, {"role": "user", "content": "<returncode>0</returncode>"}]),
        json!([{"role": "user", "content": "SUPERVISOR FEEDBACK:\nYou have run the same command 3 times in a row", "supervisor": true},
               {"role": "assistant", "content": "THOUGHT: again\n```bash\nls\n```"}, {"role": "user", "content": "<returncode>0</returncode>"}]),
    ];
    for (i, messages) in steps.iter().enumerate() {
        sqlx::query(
            "INSERT INTO steps (run_id, attempt, step_index, action, messages) VALUES ($1, 1, $2, 'ls', $3)",
        )
        .bind(run)
        .bind(i as i32)
        .bind(messages)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO critic_calls (run_id, attempt, call_index, step_index, kind, trigger, decision, feedback, status, latency_ms)
         VALUES ($1, 1, 0, 0, 'heuristic', 'every_k', 'inject', 'same command', 'ok', 0)",
    )
    .bind(run)
    .execute(&pool)
    .await
    .unwrap();

    let coordinator = orchestrator::testkit::start_coordinator(&pool, Duration::from_secs(30)).await;
    let token = tokens::create(&pool, "ui", Role::User).await.unwrap().token;
    let base = format!("{}/ui/", coordinator.url);
    let url = coordinator.url.clone();
    let pages = tokio::task::spawn_blocking(move || {
        (
            render(browser, &format!("{base}#/&token={token}"), "sweeps"),
            render(browser, &format!("{base}#/sweep/{sweep}&token={token}"), "sweep"),
            render(browser, &format!("{base}#/run/{run}&token={token}"), "run"),
        )
    })
    .await
    .unwrap();
    let (sweeps, sweep_page, run_page) = pages;
    assert!(sweeps.contains("ui-demo") && sweeps.contains("id=\"sweeps\""), "{sweeps}");
    assert!(sweep_page.contains("id=\"conditions\"") && sweep_page.contains("agent-a/rules"), "{sweep_page}");
    assert!(run_page.contains("id=\"trajectory\""), "{run_page}");
    assert!(
        run_page.contains("msg user supervisor"),
        "the critic's message is marked where it happened: {run_page}"
    );
    assert!(run_page.contains("same command 3 times") && run_page.contains("1 interventions"), "{run_page}");
    // The static files need no token; the API does.
    let index = reqwest::get(format!("{url}/ui/")).await.unwrap();
    assert_eq!(index.status(), 200);
    let api = reqwest::get(format!("{url}/api/v1/sweeps")).await.unwrap();
    assert_eq!(api.status(), 401);
    coordinator.shutdown().await;
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn the_ui_says_why_runs_failed_with_each_runs_attempts(pool: PgPool) {
    let Some(browser) = chromium() else { return };
    import_demo(&pool, "demo").await;
    let sweep = submit(&pool, &sweep_toml("ui-failures", "", "")).await.sweep_id;
    let runs: Vec<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE sweep_id = $1 ORDER BY id LIMIT 3")
        .bind(sweep)
        .fetch_all(&pool)
        .await
        .unwrap();
    let reason = "agent `agent-a` reads its API key from $LAB_KEY, which is not set on this worker";
    for run in &runs {
        sqlx::query(
            "UPDATE runs SET state = 'error', attempt = 1, failed_attempts = 1, last_error = $2, finished_at = now()
             WHERE id = $1",
        )
        .bind(run)
        .bind(reason)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO run_attempts (run_id, attempt, claimed_at, ended_at, ending, reason)
             VALUES ($1, 1, now() - interval '1 minute', now(), 'failed', $2)",
        )
        .bind(run)
        .bind(reason)
        .execute(&pool)
        .await
        .unwrap();
    }
    let coordinator = orchestrator::testkit::start_coordinator(&pool, Duration::from_secs(30)).await;
    let token = tokens::create(&pool, "ui", Role::User).await.unwrap().token;
    let base = format!("{}/ui/", coordinator.url);
    let run = runs[0];
    let url = coordinator.url.clone();
    let (sweep_page, run_page) = tokio::task::spawn_blocking(move || {
        (
            render(browser, &format!("{base}#/sweep/{sweep}&token={token}"), "sweep-failures"),
            render(browser, &format!("{base}#/run/{run}&token={token}"), "run-failure"),
        )
    })
    .await
    .unwrap();
    assert!(
        sweep_page.contains("id=\"reasons\"") && sweep_page.contains(&format!("3 error: {reason}")),
        "{sweep_page}"
    );
    assert!(
        sweep_page.contains(&format!("href=\"#/run/{run}\"")),
        "the group links its example run: {sweep_page}"
    );
    assert!(sweep_page.contains("id=\"html-report\""), "{sweep_page}");
    assert!(run_page.contains("id=\"last-error\"") && run_page.contains(reason), "{run_page}");
    assert!(run_page.contains("id=\"attempts\"") && run_page.contains("failed"), "{run_page}");
    // The HTML report the sweep page opens is served to token holders only.
    let html = reqwest::Client::new()
        .get(format!("{url}/api/v1/report/html?sweeps={sweep}"))
        .bearer_auth(tokens::create(&pool, "ui-2", Role::User).await.unwrap().token)
        .send()
        .await
        .unwrap();
    assert_eq!(html.status(), 200);
    assert!(html.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(html.text().await.unwrap().contains("<html"));
    assert_eq!(reqwest::get(format!("{url}/api/v1/report/html?sweeps={sweep}")).await.unwrap().status(), 401);
    coordinator.shutdown().await;
}
