//! What a person at the `steer` command line sees of the coordinator, through the real binary:
//! an unreachable coordinator is said at once (exit 5), `--coordinator` takes HOST:PORT and
//! refuses other schemes, log lines to a pipe carry no colour codes, and `steer token` works
//! through the API with an admin token.

use std::time::{Duration, Instant};

use orchestrator::store::tokens;
use orchestrator::testkit::start_coordinator;
use protocol::Role;
use sqlx::PgPool;

/// `steer ARGS` with only the environment given here (no DATABASE_URL, STEER_* or NO_COLOR
/// from the test's own): (exit status, stdout, stderr).
async fn steer(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_steer"));
    cmd.args(args).env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    // No `steer up` admin-token file is found by accident.
    let home = tempfile::tempdir().unwrap();
    cmd.env("HOME", home.path()).env("XDG_DATA_HOME", home.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.kill_on_drop(true).output())
        .await
        .expect("steer finishes within a minute")
        .expect("steer runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn an_unreachable_coordinator_fails_at_once_with_exit_5() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let started = Instant::now();
    let (code, _, err) = steer(&["sweep", "list", "--coordinator", &url, "--token", "t"], &[]).await;
    let took = started.elapsed();
    assert_eq!(code, 5, "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {err}");
    assert!(
        err.contains(&format!(
            "could not reach the coordinator at {url}: is `steer up` or `steer serve` running there?"
        )),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "the cause is shown: {err}");
}

#[tokio::test]
async fn a_coordinator_url_with_another_scheme_or_none_at_all_is_refused_saying_what_to_write() {
    for bad in ["ftp://x", "not a url"] {
        let (code, _, err) = steer(&["sweep", "list", "--token", "t"], &[("STEER_COORDINATOR", bad)]).await;
        assert_eq!(code, 1, "{bad}: {err}");
        assert!(err.contains(&format!("--coordinator `{bad}`")) && err.contains("http://"), "{bad}: {err}");
    }
    // `steer worker` reads its --coordinator the same way, before it does anything else.
    let (code, _, err) =
        steer(&["worker", "--coordinator", "ftp://x", "--token", "t", "--no-docker"], &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--coordinator `ftp://x`") && err.contains("not ftp://"), "{err}");
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn host_and_port_reach_the_coordinator_and_logs_to_a_pipe_are_plain(pool: PgPool) {
    let coordinator = start_coordinator(&pool, Duration::from_secs(30)).await;
    let admin = tokens::create(&pool, "admin", Role::Admin).await.unwrap().token;
    let host_port = coordinator.url.trim_start_matches("http://").to_string();

    let (code, out, err) =
        steer(&["sweep", "list", "--coordinator", &host_port, "--token", &admin], &[]).await;
    assert_eq!(code, 0, "{out}{err}");

    // At RUST_LOG=debug the HTTP client logs its connection; stderr is a pipe here, so none
    // of those lines may carry colour codes.
    let (code, _, err) =
        steer(&["sweep", "list", "--coordinator", &host_port, "--token", &admin], &[("RUST_LOG", "debug")])
            .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("DEBUG"), "debug lines were logged: {err}");
    assert!(!err.contains("\x1b["), "colour codes in piped log output: {err:?}");
    coordinator.shutdown().await;
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn tokens_are_created_listed_and_revoked_through_the_api(pool: PgPool) {
    let coordinator = start_coordinator(&pool, Duration::from_secs(30)).await;
    let admin = tokens::create(&pool, "admin", Role::Admin).await.unwrap().token;
    let api = [("STEER_COORDINATOR", coordinator.url.as_str()), ("STEER_TOKEN", admin.as_str())];

    let (code, bob, err) = steer(&["token", "create", "--role", "user", "--name", "bob"], &api).await;
    assert_eq!(code, 0, "{err}");
    let bob = bob.trim().to_string();
    assert!(err.contains("created user token `bob`"), "{err}");
    let id: i64 =
        tokens::list(&pool).await.unwrap().iter().find(|t| t.name == "bob").expect("bob is stored").id;

    // Bob's token works.
    let as_bob = [("STEER_COORDINATOR", coordinator.url.as_str()), ("STEER_TOKEN", bob.as_str())];
    let (code, _, err) = steer(&["sweep", "list"], &as_bob).await;
    assert_eq!(code, 0, "bob's token is usable: {err}");

    let (code, listed, err) = steer(&["token", "list"], &api).await;
    assert_eq!(code, 0, "{err}");
    let row =
        listed.lines().find(|l| l.contains(" bob ")).unwrap_or_else(|| panic!("bob is listed: {listed}"));
    assert!(
        row.trim_start().starts_with(&id.to_string()) && row.contains("user") && row.ends_with(" -"),
        "{row}"
    );

    // A user token cannot manage tokens.
    let (code, _, err) = steer(&["token", "list"], &as_bob).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("403") || err.contains("401"), "{err}");

    let (code, out, err) = steer(&["token", "revoke", &id.to_string()], &api).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("revoked token {id}"));
    let (code, _, err) = steer(&["sweep", "list"], &as_bob).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401"), "a revoked token is refused: {err}");
    let (_, listed, _) = steer(&["token", "list"], &api).await;
    let row = listed.lines().find(|l| l.contains(" bob ")).unwrap();
    assert!(!row.ends_with(" -"), "the listing shows when bob was revoked: {row}");
    coordinator.shutdown().await;
}

/// With DATABASE_URL and a coordinator both given, the API is used and the command says so;
/// with DATABASE_URL alone, the database.
#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn token_commands_say_which_way_they_go(pool: PgPool) {
    let coordinator = start_coordinator(&pool, Duration::from_secs(30)).await;
    let admin = tokens::create(&pool, "admin", Role::Admin).await.unwrap().token;
    let database_url = database_url_of(&pool).await;

    let (code, _, err) = steer(
        &["token", "create", "--role", "worker", "--name", "via-api"],
        &[
            ("STEER_COORDINATOR", coordinator.url.as_str()),
            ("STEER_TOKEN", admin.as_str()),
            ("DATABASE_URL", database_url.as_str()),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("going through the coordinator's API at"), "{err}");

    let (code, out, err) = steer(&["token", "list"], &[("DATABASE_URL", database_url.as_str())]).await;
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("coordinator"), "{err}");
    assert!(out.contains(" via-api ") && out.contains(" admin "), "{out}");
    coordinator.shutdown().await;
}

/// The URL of the test's own database (sqlx::test makes one per test on DATABASE_URL's server).
async fn database_url_of(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(pool).await.unwrap();
    let mut url =
        reqwest::Url::parse(&std::env::var("DATABASE_URL").expect("DATABASE_URL for sqlx::test")).unwrap();
    url.set_path(&name);
    url.to_string()
}
