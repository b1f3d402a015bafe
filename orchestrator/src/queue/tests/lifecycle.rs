//! The run and attempt lifecycle: the transitions the statements declare, the ones
//! ARCHITECTURE.md draws, and the ones the queue makes when driven are the same.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::*;

/// (statement, from, to). The statement is a queue `.sql` file name, or `store` for the
/// store's `INSERT` that creates runs (the runs diagram's entry edge, from `[*]`).
type Edge = (String, String, String);

/// What the lifecycle's statements and diagrams say, per table.
#[derive(Debug, Default, PartialEq)]
struct Lifecycle {
    runs: BTreeSet<Edge>,
    attempts: BTreeSet<Edge>,
}

const STORE: &str = "store";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The queue's `.sql` files: (name, text).
fn statements() -> Vec<(String, String)> {
    let dir = crate_dir().join("src/queue");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sql") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
    out.sort();
    assert!(out.len() > 10, "the queue's statements are found in {}", dir.display());
    out
}

/// SQL with comments dropped, lower case, whitespace collapsed.
fn normalised(sql: &str) -> String {
    let code: Vec<&str> = sql.lines().map(|l| l.split("--").next().unwrap_or("")).collect();
    code.join(" ").to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `sql` writes the table `runs` / `run_attempts`.
fn writes(sql: &str) -> (bool, bool) {
    let sql = normalised(sql);
    let runs = sql.contains("update runs ") || sql.contains("insert into runs ");
    let attempts = sql.contains("update run_attempts ") || sql.contains("insert into run_attempts ");
    (runs, attempts)
}

/// The pairs a header line such as `-- transitions: queued -> running, running -> done` lists
/// (`None` when the file has no such line; `none` declares no transition).
fn header(sql: &str, key: &str) -> Option<Vec<(String, String)>> {
    let line = sql.lines().find_map(|l| l.strip_prefix(&format!("-- {key}:")))?;
    if line.trim().starts_with("none") {
        return Some(Vec::new());
    }
    Some(
        line.split(',')
            .map(|pair| {
                let (from, to) = pair
                    .split_once("->")
                    .unwrap_or_else(|| panic!("`{pair}` in `-- {key}:` is not `from -> to`"));
                (from.trim().to_string(), to.trim().to_string())
            })
            .collect(),
    )
}

/// The transitions the queue's statements declare, checking that every statement writing
/// `runs` or `run_attempts` declares them and that no other does.
fn declared() -> Lifecycle {
    let mut out = Lifecycle::default();
    for (name, sql) in statements() {
        let (runs, attempts) = writes(&sql);
        let declared_runs = header(&sql, "transitions");
        let declared_attempts = header(&sql, "attempt");
        assert_eq!(
            declared_runs.is_some(),
            runs,
            "{name}: a statement writes `runs` iff it has a `-- transitions:` header"
        );
        assert_eq!(
            declared_attempts.is_some(),
            attempts,
            "{name}: a statement writes `run_attempts` iff it has an `-- attempt:` header"
        );
        for (from, to) in declared_runs.unwrap_or_default() {
            out.runs.insert((name.clone(), from, to));
        }
        for (from, to) in declared_attempts.unwrap_or_default() {
            out.attempts.insert((name.clone(), from, to));
        }
    }
    // The entry edge: runs are created by the store.
    out.runs.insert((STORE.into(), "[*]".into(), "queued".into()));
    out
}

/// The edges of the two mermaid diagrams of ARCHITECTURE.md's "Run and attempt lifecycle":
/// runs, then attempts. An edge's label names the `.sql` files that make it; one naming none
/// is the store's (allowed only from `[*]`).
fn drawn() -> Lifecycle {
    let text = std::fs::read_to_string(crate_dir().join("../ARCHITECTURE.md")).unwrap();
    let start =
        text.find("\n## Run and attempt lifecycle\n").expect("ARCHITECTURE.md has the lifecycle section");
    let section = &text[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let blocks: Vec<&str> =
        section.split("```mermaid").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    assert_eq!(blocks.len(), 2, "two diagrams: runs, then attempts");
    let edges = |block: &str| -> BTreeSet<Edge> {
        let mut out = BTreeSet::new();
        for line in block.lines().map(str::trim).filter(|l| l.contains("-->")) {
            let (arrow, label) = line.split_once(':').unwrap_or((line, ""));
            let (from, to) = arrow.split_once("-->").unwrap();
            let (from, to) = (from.trim().to_string(), to.trim().to_string());
            let files: Vec<&str> =
                label.split([',', ' ', '(', ')']).map(str::trim).filter(|w| w.ends_with(".sql")).collect();
            if files.is_empty() {
                assert_eq!(from, "[*]", "`{line}`: an edge names the statements that make it");
                out.insert((STORE.to_string(), from.clone(), to.clone()));
            }
            for f in files {
                out.insert((f.to_string(), from.clone(), to.clone()));
            }
        }
        out
    };
    Lifecycle { runs: edges(blocks[0]), attempts: edges(blocks[1]) }
}

/// Fails naming the edges only one side has.
fn assert_same(what: &str, (left, a): (&str, &BTreeSet<Edge>), (right, b): (&str, &BTreeSet<Edge>)) {
    let only = |x: &BTreeSet<Edge>, y: &BTreeSet<Edge>| -> Vec<String> {
        x.difference(y).map(|(s, from, to)| format!("{from} -> {to} ({s})")).collect()
    };
    let (only_a, only_b) = (only(a, b), only(b, a));
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "{what}: only in {left}: {only_a:?}; only in {right}: {only_b:?}"
    );
}

#[test]
fn the_statements_declare_exactly_the_transitions_the_diagram_draws() {
    let (declared, drawn) = (declared(), drawn());
    assert_same("runs", ("the statements' headers", &declared.runs), ("the diagram", &drawn.runs));
    assert_same(
        "attempts",
        ("the statements' headers", &declared.attempts),
        ("the diagram", &drawn.attempts),
    );
}

/// Files under `dir` with extension `rs`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_code_outside_the_queue_changes_a_run_state_or_writes_the_ledger() {
    let src = crate_dir().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // The runs' creation (the diagram's entry edge).
    let creators = ["store/sweeps.rs", "store/evals.rs"];
    let mut offences = Vec::new();
    for path in files {
        let rel = path.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        if rel.starts_with("queue/") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Each piece between double quotes (a string literal holding SQL is one statement).
        for (i, literal) in text.split('"').enumerate() {
            let sql = normalised(literal);
            let (_, attempts) = writes(&sql);
            let changes_state = sql.contains("update runs ") && {
                let set = sql.split(" set ").nth(1).unwrap_or("");
                let set = set.split(" where ").next().unwrap_or(set);
                set.split(',').any(|a| a.trim().starts_with("state =") || a.trim().starts_with("state="))
            };
            let creates = sql.contains("insert into runs ");
            if attempts || changes_state || (creates && !creators.contains(&rel.as_str())) {
                offences.push(format!("{rel} (piece {i}): {}", literal.trim()));
            }
        }
    }
    assert!(offences.is_empty(), "state changes outside queue/:\n{}", offences.join("\n"));
}

/// Triggers that record every change of `runs.state` and `run_attempts.ending` (and every
/// insert), with the statement the client sent.
const RECORD: &str = r#"
CREATE TABLE lifecycle_log (tbl text NOT NULL, from_state text NOT NULL, to_state text NOT NULL, query text NOT NULL);
CREATE FUNCTION lifecycle_runs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO lifecycle_log VALUES ('runs', '[*]', NEW.state, current_query());
    ELSIF NEW.state IS DISTINCT FROM OLD.state THEN
        INSERT INTO lifecycle_log VALUES ('runs', OLD.state, NEW.state, current_query());
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER lifecycle_runs AFTER INSERT OR UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION lifecycle_runs();
CREATE FUNCTION lifecycle_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO lifecycle_log VALUES ('run_attempts', '[*]', COALESCE(NEW.ending, 'open'), current_query());
    ELSIF NEW.ending IS DISTINCT FROM OLD.ending THEN
        INSERT INTO lifecycle_log
        VALUES ('run_attempts', COALESCE(OLD.ending, 'open'), COALESCE(NEW.ending, 'open'), current_query());
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER lifecycle_attempts AFTER INSERT OR UPDATE ON run_attempts
    FOR EACH ROW EXECUTE FUNCTION lifecycle_attempts();
"#;

/// The transitions recorded so far, each with the queue statement that made it (the one
/// declaring transitions whose text the client's query holds), or `store`.
async fn recorded(pool: &PgPool) -> Lifecycle {
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT tbl, from_state, to_state, query FROM lifecycle_log")
            .fetch_all(pool)
            .await
            .unwrap();
    let statements: Vec<(String, String)> = statements()
        .into_iter()
        .filter(|(_, sql)| header(sql, "transitions").is_some() || header(sql, "attempt").is_some())
        .collect();
    let mut out = Lifecycle::default();
    for (table, from, to, query) in rows {
        let made_by: Vec<&str> = statements
            .iter()
            .filter(|(_, sql)| query.contains(sql.trim()))
            .map(|(n, _)| n.as_str())
            .collect();
        let made_by = match made_by[..] {
            [one] => one.to_string(),
            [] => STORE.to_string(),
            _ => panic!("{from} -> {to} made by a query holding several statements ({made_by:?}): {query}"),
        };
        let edge = (made_by, from, to);
        match table.as_str() {
            "runs" => out.runs.insert(edge),
            _ => out.attempts.insert(edge),
        };
    }
    out
}

/// A sweep of one run (or of the instances `ids`), with `extra` top-level settings.
async fn sweep_of(pool: &PgPool, name: &str, ids: &str, extra: &str) -> i64 {
    submit(pool, &sweep_toml(name, &format!("{extra}\n[select]\nids = [{ids}]"), "")).await.sweep_id
}

const ONE: &str = "\"steerbench__demo-1\"";
const TWO: &str = "\"steerbench__demo-1\", \"steerbench__demo-2\"";

/// Drives the queue through every way a run and an attempt move (one sweep at a time, so each
/// claim takes the run meant), then checks that the transitions made, and the statements that
/// made them, are exactly the diagrams' edges.
#[sqlx::test(migrator = "crate::db::MIGRATOR")]
async fn the_queue_makes_exactly_the_transitions_the_diagram_draws(pool: PgPool) {
    sqlx::raw_sql(RECORD).execute(&pool).await.unwrap();
    import_demo(&pool, "demo").await;
    let queue = Queue::new(pool.clone(), Duration::from_secs(60));
    let w = worker(&pool).await;
    let none = Registrar::NONE;
    let q = &queue;
    let claim = || async move { q.claim(w, 1, &kinds()).await.unwrap().remove(0) };

    // Claimed and completed.
    sweep_of(&pool, "complete", ONE, "").await;
    let l = claim().await;
    queue.complete(l.run_id, none, &done(&l, "0")).await.unwrap();

    // The capped claim path.
    sweep_of(&pool, "capped", ONE, "max_running = 1").await;
    let l = claim().await;
    queue.complete(l.run_id, none, &done(&l, "0")).await.unwrap();

    // Handed back, failed, failed for good; resumed, paused, cancelled.
    let s = sweep_of(&pool, "give-back", ONE, "max_attempts = 2").await;
    let l = claim().await;
    assert_eq!(queue.release(l.run_id, none, l.lease_token, "draining").await.unwrap(), Requeued::Queued);
    let l = claim().await;
    assert_eq!(queue.fail(l.run_id, none, l.lease_token, "docker").await.unwrap(), Requeued::Queued);
    let l = claim().await;
    assert_eq!(queue.fail(l.run_id, none, l.lease_token, "docker").await.unwrap(), Requeued::Error);
    sweeps::resume(&pool, s, None).await.unwrap();
    sweeps::pause(&pool, s).await.unwrap();
    sweeps::cancel(&pool, s).await.unwrap();

    // Handed back into a paused sweep, then into a cancelled one; resumed and cancelled again.
    let s = sweep_of(&pool, "give-back-held", ONE, "").await;
    let l = claim().await;
    sweeps::pause(&pool, s).await.unwrap();
    assert_eq!(queue.release(l.run_id, none, l.lease_token, "paused").await.unwrap(), Requeued::Paused);
    sweeps::resume(&pool, s, None).await.unwrap();
    let l = claim().await;
    sweeps::cancel(&pool, s).await.unwrap();
    assert_eq!(queue.release(l.run_id, none, l.lease_token, "cancelled").await.unwrap(), Requeued::Cancelled);
    sweeps::resume(&pool, s, None).await.unwrap();
    sweeps::cancel(&pool, s).await.unwrap();

    // Leases that ran out: re-queued, then used up.
    sweep_of(&pool, "expire", ONE, "max_attempts = 2").await;
    for to in [RunState::Queued, RunState::Error] {
        claim().await;
        age_leases(&pool).await;
        assert_eq!(queue.expire_leases(100).await.unwrap().get(to), 1);
    }

    // Leases that ran out in a paused sweep, then in a cancelled one.
    let s = sweep_of(&pool, "expire-held", ONE, "").await;
    claim().await;
    sweeps::pause(&pool, s).await.unwrap();
    age_leases(&pool).await;
    assert_eq!(queue.expire_leases(100).await.unwrap().get(RunState::Paused), 1);
    sweeps::resume(&pool, s, None).await.unwrap();
    claim().await;
    sweeps::cancel(&pool, s).await.unwrap();
    age_leases(&pool).await;
    assert_eq!(queue.expire_leases(100).await.unwrap().get(RunState::Cancelled), 1);

    // A budget spent: the queued run is cancelled; in a paused sweep, the paused one.
    sweep_of(&pool, "budget", TWO, "budget_usd = 0.05").await;
    let l = claim().await;
    queue.complete(l.run_id, none, &done(&l, "0.06")).await.unwrap();
    let s = sweep_of(&pool, "budget-paused", TWO, "budget_usd = 0.05").await;
    let l = claim().await;
    sweeps::pause(&pool, s).await.unwrap();
    queue.complete(l.run_id, none, &done(&l, "0.06")).await.unwrap();

    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE state IN ('queued', 'running')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "every case ended its runs");
    assert_ledger_true(&pool).await;
    let made = recorded(&pool).await;
    let drawn = drawn();
    assert_same("runs", ("the transitions made", &made.runs), ("the diagram", &drawn.runs));
    assert_same("attempts", ("the transitions made", &made.attempts), ("the diagram", &drawn.attempts));
}
