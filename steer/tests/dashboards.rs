//! The Grafana dashboards in `dashboards/`: valid JSON of the shape Grafana loads, every
//! Prometheus query names only metrics the coordinator or the worker exports and only labels
//! those metrics carry, every SQL query runs against the real schema, and the provisioned data
//! sources point at the services of `docker/compose.yaml`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use orchestrator::metrics::{
    CallSource, HostLabel, Metrics, OutcomeLabel, StateLabel, StatusLabel, SweepLabel,
};
use protocol::{CriticCallRecord, LlmCallRecord};
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

/// Every metric family the code exports (names as Prometheus sees them, without suffixes),
/// with the label names of its series. Each labelled family is given one sample series so
/// that its labels show in the rendered text.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let m = Metrics::new();
    let call = LlmCallRecord { model: "m".into(), status: protocol::CallStatus::Ok, ..Default::default() };
    let critic = CriticCallRecord {
        kind: protocol::CriticKind::Remote,
        decision: protocol::CriticDecision::Inject,
        status: protocol::CriticCallStatus::Ok,
        batch_size: Some(1),
        ..Default::default()
    };
    m.observe_upload(&CallSource::new("agent-a", "http://127.0.0.1:8000/v1"), &[], &[call], &[critic]);
    m.runs_completed.get_or_create(&OutcomeLabel { outcome: "resolved".into() }).inc();
    m.lease_expiries.get_or_create(&StateLabel { state: "queued".into() }).inc();
    m.http_responses.get_or_create(&StatusLabel { status: "200".into() }).inc();
    m.runs_by_state.get_or_create(&StateLabel { state: "queued".into() }).set(1);
    m.sweep_spent_usd.get_or_create(&SweepLabel { sweep: "s".into() }).set(1.0);
    let host = HostLabel { endpoint: "127.0.0.1:8000".into() };
    m.endpoint_outages.get_or_create(&host).set(1);
    m.endpoint_cooldown_seconds.get_or_create(&host).set(5.0);
    worker::metrics::METRICS.run_ended("placeholder", "completed");
    worker::metrics::METRICS.image("hit");

    let label = regex::Regex::new(r#"([a-z_]+)="[^"]*""#).unwrap();
    let mut families = BTreeMap::new();
    for text in [m.render(), worker::metrics::METRICS.render()] {
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("# TYPE ").and_then(|l| l.split_whitespace().next()) {
                families.entry(name.to_string()).or_insert_with(BTreeSet::new);
            } else if !line.starts_with('#') {
                let (series, labels) = line.split_once('{').unwrap_or((line, ""));
                let series = series.split_whitespace().next().unwrap_or(series);
                let names = label.captures_iter(labels).map(|c| c[1].to_string());
                families.entry(family_of(series).to_string()).or_insert_with(BTreeSet::new).extend(names);
            }
        }
    }
    families
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

/// Labels every series has once Prometheus scrapes it.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

#[test]
fn dashboards_are_grafana_json_and_query_only_exported_metrics() {
    let exported = exported();
    let metric = regex::Regex::new(r"\bsteer_[a-z_]+\b").unwrap();
    let selector = regex::Regex::new(r"\b(steer_[a-z_]+)\{([^}]*)\}").unwrap();
    let matcher = regex::Regex::new(r"([a-z_]+)\s*(?:=~|!~|!=|=)").unwrap();
    let grouping = regex::Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").unwrap();
    let legend = regex::Regex::new(r"\{\{\s*([a-z_]+)\s*\}\}").unwrap();
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
                let mut available: BTreeSet<&str> = TARGET_LABELS.into();
                for name in names {
                    let labels = exported.get(family_of(name)).unwrap_or_else(|| {
                        panic!("{file}: `{name}` is not exported (exported: {:?})", exported.keys())
                    });
                    available.extend(labels.iter().map(String::as_str));
                }
                // A label a metric lacks would not fail in Prometheus: the panel would silently
                // show one series, or none.
                for c in selector.captures_iter(expr) {
                    let labels = &exported[family_of(&c[1])];
                    for m in matcher.captures_iter(&c[2]) {
                        let known = labels.contains(&m[1]) || TARGET_LABELS.contains(&&m[1]);
                        assert!(known, "{file}: `{expr}`: {} has no label `{}`", &c[1], &m[1]);
                    }
                }
                let mut grouped = BTreeSet::new();
                for c in grouping.captures_iter(expr) {
                    for label in c[1].split(',').map(str::trim).filter(|l| !l.is_empty()) {
                        assert!(
                            available.contains(label),
                            "{file}: `{expr}` groups by `{label}`, which no metric of it has"
                        );
                        grouped.insert(label.to_string());
                    }
                }
                for c in legend.captures_iter(t["legendFormat"].as_str().unwrap_or("")) {
                    let label = &c[1];
                    let shown =
                        if grouped.is_empty() { available.contains(label) } else { grouped.contains(label) };
                    assert!(shown, "{file}: the legend of `{expr}` shows `{label}`, which its series lack");
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

fn repo_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The services of `docker/compose.yaml` (the keys under `services:`).
fn compose_services(compose: &str) -> BTreeSet<String> {
    let key = regex::Regex::new(r"^  ([a-z0-9-]+):\s*$").unwrap();
    compose
        .lines()
        .skip_while(|l| *l != "services:")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' ') || l.starts_with('#'))
        .filter_map(|l| key.captures(l).map(|c| c[1].to_string()))
        .collect()
}

/// Grafana's data sources, Prometheus's scrape targets and the compose stack agree: every
/// address names a compose service on the port it serves, every worker service is scraped, and
/// Grafana reads Postgres as the read-only role the stack creates.
#[test]
fn provisioning_and_scrape_targets_name_the_compose_services() {
    let compose = repo_file("docker/compose.yaml");
    let services = compose_services(&compose);
    for s in ["postgres", "coordinator", "prometheus", "grafana", "grafana-db-role", "worker-1"] {
        assert!(services.contains(s), "compose.yaml has no service `{s}` (found {services:?})");
    }

    let datasources = repo_file("dashboards/provisioning/datasources/steerbench.yaml");
    for line in
        ["url: http://prometheus:9090", "url: postgres:5432", "user: grafana_reader", "database: steerbench"]
    {
        assert!(datasources.contains(line), "the data sources lack `{line}`");
    }
    assert!(compose.contains("POSTGRES_DB: steerbench"), "compose's database is not `steerbench`");
    // Grafana expands $STEER_GRAFANA_DB_PASSWORD from its environment; compose sets it, and the
    // role gets the same password.
    assert!(datasources.contains("$STEER_GRAFANA_DB_PASSWORD"));
    assert_eq!(compose.matches("STEER_GRAFANA_DB_PASSWORD: ${STEER_GRAFANA_DB_PASSWORD").count(), 2);
    let reader = repo_file("docker/postgres/grafana-reader.sh");
    for sql in ["CREATE ROLE grafana_reader LOGIN", "GRANT pg_read_all_data TO grafana_reader"] {
        assert!(reader.contains(sql), "grafana-reader.sh lacks `{sql}`");
    }

    let providers = repo_file("dashboards/provisioning/dashboards/steerbench.yaml");
    assert!(providers.contains("path: /var/lib/grafana/dashboards/steerbench"));
    assert!(compose.contains("- ../dashboards:/var/lib/grafana/dashboards/steerbench:ro"));

    let scrape = repo_file("docker/prometheus/prometheus.yml");
    let target = regex::Regex::new(r#""([a-z0-9-]+):(\d+)""#).unwrap();
    let targets: BTreeSet<(String, String)> =
        target.captures_iter(&scrape).map(|c| (c[1].to_string(), c[2].to_string())).collect();
    for (host, port) in &targets {
        let known = services.contains(host) || host == "localhost";
        assert!(known, "prometheus.yml scrapes {host}:{port}, which is no compose service");
    }
    assert!(targets.contains(&("coordinator".into(), "8420".into())), "{targets:?}");
    assert!(compose.contains("STEER_BIND: 0.0.0.0:8420"));
    assert!(compose.contains("STEER_METRICS_BIND: 0.0.0.0:9100"));
    for worker in services.iter().filter(|s| s.starts_with("worker-")) {
        assert!(targets.contains(&(worker.clone(), "9100".into())), "{worker} is not scraped: {targets:?}");
    }
}
