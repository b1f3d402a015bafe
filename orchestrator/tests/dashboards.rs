//! The Grafana dashboards in `dashboards/`: valid JSON of the shape Grafana loads, every
//! Prometheus query names only metrics the coordinator or the worker exports, and every SQL
//! query runs against the real schema.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use sqlx::PgPool;

fn dashboards() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.file_name().unwrap().to_string_lossy().into_owned(), json));
        }
    }
    assert_eq!(out.len(), 3, "fleet, sweeps, critic");
    out
}

/// Every metric family the code exports (names as Prometheus sees them, without suffixes).
fn exported() -> BTreeSet<String> {
    let mut names: BTreeSet<String> =
        orchestrator::metrics::Metrics::new().family_names().into_iter().collect();
    let worker = worker::metrics::METRICS.render();
    names.extend(
        worker
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string),
    );
    names
}

fn family_of(series: &str) -> &str {
    for suffix in ["_total", "_bucket", "_sum", "_count", "_created"] {
        if let Some(base) = series.strip_suffix(suffix) {
            return base;
        }
    }
    series
}

fn targets(d: &Value) -> Vec<(String, Value)> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let ds = p["datasource"]["type"].as_str().unwrap().to_string();
            p["targets"].as_array().unwrap().iter().map(move |t| (ds.clone(), t.clone()))
        })
        .collect()
}

#[test]
fn dashboards_are_grafana_json_and_query_only_exported_metrics() {
    let exported = exported();
    let metric = regex::Regex::new(r"\bsteer_[a-z_]+\b").unwrap();
    for (file, d) in dashboards() {
        for key in ["uid", "title", "schemaVersion", "panels"] {
            assert!(!d[key].is_null(), "{file}: no `{key}`");
        }
        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().unwrap() {
            assert!(ids.insert(p["id"].as_i64().unwrap()), "{file}: duplicate panel id");
            for key in ["type", "title", "gridPos", "datasource", "targets"] {
                assert!(!p[key].is_null(), "{file}: panel {} has no `{key}`", p["title"]);
            }
        }
        for (ds, t) in targets(&d) {
            if ds == "prometheus" {
                let expr = t["expr"].as_str().unwrap();
                let names: Vec<&str> = metric.find_iter(expr).map(|m| m.as_str()).collect();
                assert!(!names.is_empty(), "{file}: `{expr}` queries no steerbench metric");
                for name in names {
                    assert!(
                        exported.contains(family_of(name)),
                        "{file}: `{name}` is not exported (exported: {exported:?})"
                    );
                }
            }
        }
    }
}

#[sqlx::test(migrator = "orchestrator::db::MIGRATOR")]
async fn dashboard_sql_runs_against_the_schema(pool: PgPool) {
    let mut queries = 0;
    for (file, d) in dashboards() {
        for (ds, t) in targets(&d) {
            if ds == "grafana-postgresql-datasource" {
                let sql = t["rawSql"].as_str().unwrap();
                sqlx::query(sql).fetch_all(&pool).await.unwrap_or_else(|e| panic!("{file}: {e}\n{sql}"));
                queries += 1;
            }
        }
    }
    assert!(queries >= 3, "{queries}");
}
