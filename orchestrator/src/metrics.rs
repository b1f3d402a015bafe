//! Every Prometheus metric the coordinator exports, with its help text.
//!
//! Counters live in the process (each replica counts what it served); gauges about the queue
//! are read from Postgres at scrape time, so every replica reports the same fleet-wide truth.
//! Model calls are counted by endpoint (calls, errors, retries, latency) and by agent (tokens,
//! dollars), both with the model; an endpoint is named by its base URL's `host:port` only, so
//! no credentials, path or query of a URL reach a label.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use protocol::{CriticCallRecord, LlmCallRecord, StepRecord};
use rust_decimal::prelude::ToPrimitive;
use std::sync::atomic::AtomicU64;

/// A label's value, escaped as the Prometheus text format requires (`\\`, `\"`, `\n`) when
/// encoded: prometheus-client writes values as they are, and names such as a sweep's model
/// come from users (a model named `m"} 1\n...` would otherwise add series of its own).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LabelValue(pub String);

impl From<String> for LabelValue {
    fn from(s: String) -> Self {
        LabelValue(s)
    }
}

impl From<&str> for LabelValue {
    fn from(s: &str) -> Self {
        LabelValue(s.to_string())
    }
}

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        let mut rest = self.0.as_str();
        while let Some(i) = rest.find(['\\', '"', '\n']) {
            encoder.write_str(&rest[..i])?;
            encoder.write_str(match rest.as_bytes()[i] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[i + 1..];
        }
        encoder.write_str(rest)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: LabelValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: LabelValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: LabelValue,
}

/// A model endpoint (`host:port`) and the model asked.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: LabelValue,
    pub model: LabelValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointStatusLabel {
    pub endpoint: LabelValue,
    pub model: LabelValue,
    /// `ok`, `unavailable`, `rejected`, `malformed`, `timeout`.
    pub status: LabelValue,
}

/// A sweep's agent (by name) and its model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabel {
    pub agent: LabelValue,
    pub model: LabelValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabel {
    pub agent: LabelValue,
    pub model: LabelValue,
    /// `input`, `output`, `cached`.
    pub kind: LabelValue,
}

/// Whose model calls an upload carries: the run's agent and its endpoint, as labelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSource {
    pub agent: String,
    pub endpoint: String,
}

impl CallSource {
    pub fn new(agent: &str, base_url: &str) -> Self {
        CallSource { agent: agent.to_string(), endpoint: endpoint_label(base_url) }
    }
}

/// An endpoint's label: its base URL's `host:port` (the scheme's port when the URL names
/// none). User, password, path and query never appear; an unparsable URL is `invalid`.
pub fn endpoint_label(base_url: &str) -> String {
    let Ok(url) = reqwest::Url::parse(base_url) else {
        return "invalid".into();
    };
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => "invalid".into(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CriticLabel {
    pub kind: LabelValue,
    pub decision: LabelValue,
    pub status: LabelValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: LabelValue,
}

/// A model endpoint alone (`host:port`, see [`endpoint_label`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HostLabel {
    pub endpoint: LabelValue,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SweepLabel {
    pub sweep: LabelValue,
}

/// A store query, by the name of the function that runs it (`ping`, `runs_by_state`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabel {
    pub query: LabelValue,
}

fn latency_histogram() -> Histogram {
    // 10 ms to about 10 minutes.
    Histogram::new(exponential_buckets(0.01, 2.5, 13))
}

pub struct Metrics {
    registry: Registry,
    pub claim_requests: Counter,
    pub requests_overloaded: Counter,
    pub runs_claimed: Counter,
    pub runs_completed: Family<OutcomeLabel, Counter>,
    pub runs_failed: Counter,
    pub runs_released: Counter,
    pub lease_expiries: Family<StateLabel, Counter>,
    pub lease_rejections: Counter,
    pub http_responses: Family<StatusLabel, Counter>,
    pub runs_by_state: Family<StateLabel, Gauge>,
    pub workers_alive: Gauge,
    pub steps: Counter,
    pub command_seconds: Histogram,
    pub llm_calls: Family<EndpointStatusLabel, Counter>,
    pub llm_retries: Family<EndpointLabel, Counter>,
    pub llm_tokens: Family<TokenLabel, Counter>,
    pub llm_cost_usd: Family<AgentLabel, Counter<f64, AtomicU64>>,
    pub llm_seconds: Family<EndpointLabel, Histogram, fn() -> Histogram>,
    pub critic_calls: Family<CriticLabel, Counter>,
    pub critic_cost_usd: Family<KindLabel, Counter<f64, AtomicU64>>,
    pub critic_seconds: Family<KindLabel, Histogram, fn() -> Histogram>,
    pub critic_batch_size: Histogram,
    pub sweep_spent_usd: Family<SweepLabel, Gauge<f64, AtomicU64>>,
    pub endpoint_outages: Family<HostLabel, Gauge>,
    pub endpoint_cooldown_seconds: Family<HostLabel, Gauge<f64, AtomicU64>>,
    pub store_errors: Family<QueryLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("steer");
        let m = Metrics {
            claim_requests: Counter::default(),
            requests_overloaded: Counter::default(),
            runs_claimed: Counter::default(),
            runs_completed: Family::default(),
            runs_failed: Counter::default(),
            runs_released: Counter::default(),
            lease_expiries: Family::default(),
            lease_rejections: Counter::default(),
            http_responses: Family::default(),
            runs_by_state: Family::default(),
            workers_alive: Gauge::default(),
            steps: Counter::default(),
            command_seconds: latency_histogram(),
            llm_calls: Family::default(),
            llm_retries: Family::default(),
            llm_tokens: Family::default(),
            llm_cost_usd: Family::default(),
            llm_seconds: Family::new_with_constructor(latency_histogram),
            critic_calls: Family::default(),
            critic_cost_usd: Family::default(),
            critic_seconds: Family::new_with_constructor(latency_histogram),
            critic_batch_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0].into_iter()),
            sweep_spent_usd: Family::default(),
            endpoint_outages: Family::default(),
            endpoint_cooldown_seconds: Family::default(),
            store_errors: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "claim_requests",
            "Claim requests served by this replica",
            m.claim_requests.clone(),
        );
        registry.register(
            "requests_overloaded",
            "Worker requests this replica answered `overloaded` (told when to ask again)",
            m.requests_overloaded.clone(),
        );
        registry.register("runs_claimed", "Runs leased to workers by this replica", m.runs_claimed.clone());
        registry.register(
            "runs_completed",
            "Runs completed through this replica, by outcome",
            m.runs_completed.clone(),
        );
        registry.register(
            "runs_failed",
            "Infrastructure failures reported by workers",
            m.runs_failed.clone(),
        );
        registry.register(
            "runs_released",
            "Runs handed back by workers (drain, cancel)",
            m.runs_released.clone(),
        );
        registry.register(
            "lease_expiries",
            "Leases that ran out, by where the run went",
            m.lease_expiries.clone(),
        );
        registry.register(
            "lease_rejections",
            "Writes rejected because their lease token was stale",
            m.lease_rejections.clone(),
        );
        registry.register(
            "http_responses",
            "HTTP responses of this replica, by status code",
            m.http_responses.clone(),
        );
        registry.register(
            "runs",
            "Runs in the store, by state (read at scrape time)",
            m.runs_by_state.clone(),
        );
        registry.register(
            "store_errors",
            "Store queries of /healthz and /metrics that failed, by query (the gauges they feed keep their last value)",
            m.store_errors.clone(),
        );
        registry.register(
            "workers_alive",
            "Workers that heartbeated within two lease lengths",
            m.workers_alive.clone(),
        );
        registry.register("steps", "Agent steps uploaded through this replica", m.steps.clone());
        registry.register(
            "command_seconds",
            "Time of the agents' commands in their sandboxes",
            m.command_seconds.clone(),
        );
        registry.register(
            "llm_calls",
            "Model calls, by endpoint, model and status (ok or the kind of failure)",
            m.llm_calls.clone(),
        );
        registry.register(
            "llm_retries",
            "Failed attempts of model calls that were retried, by endpoint and model",
            m.llm_retries.clone(),
        );
        registry.register(
            "llm_tokens",
            "Tokens of model calls, by agent, model and kind",
            m.llm_tokens.clone(),
        );
        registry.register(
            "llm_cost_usd",
            "Dollars of model calls, by agent and model",
            m.llm_cost_usd.clone(),
        );
        registry.register(
            "llm_seconds",
            "Latency of model calls (retries included), by endpoint and model",
            m.llm_seconds.clone(),
        );
        registry.register(
            "critic_calls",
            "Critic calls, by kind, decision and status",
            m.critic_calls.clone(),
        );
        registry.register("critic_cost_usd", "Dollars of critic calls, by kind", m.critic_cost_usd.clone());
        registry.register("critic_seconds", "Latency of critic calls, by kind", m.critic_seconds.clone());
        registry.register(
            "critic_batch_size",
            "How many requests a local critic model ran together",
            m.critic_batch_size.clone(),
        );
        registry.register(
            "sweep_spent_usd",
            "Dollars spent by each running sweep (read at scrape time)",
            m.sweep_spent_usd.clone(),
        );
        registry.register(
            "endpoint_outages",
            "Consecutive outages of each model endpoint whose circuit breaker is open or half-open (read at scrape time)",
            m.endpoint_outages.clone(),
        );
        registry.register(
            "endpoint_cooldown_seconds",
            "Seconds until each resting model endpoint takes runs again (read at scrape time)",
            m.endpoint_cooldown_seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts what a worker uploaded for one run (steps, model calls, critic calls); `source`
    /// is the run's agent and endpoint.
    pub fn observe_upload<'a>(
        &self,
        source: &CallSource,
        steps: impl IntoIterator<Item = &'a StepRecord>,
        calls: impl IntoIterator<Item = &'a LlmCallRecord>,
        critic: impl IntoIterator<Item = &'a CriticCallRecord>,
    ) {
        for s in steps {
            self.steps.inc();
            if s.action.is_some() && !s.replayed {
                self.command_seconds.observe(s.command_ms as f64 / 1000.0);
            }
        }
        for c in calls {
            let endpoint =
                EndpointLabel { endpoint: source.endpoint.as_str().into(), model: c.model.as_str().into() };
            let status = EndpointStatusLabel {
                endpoint: source.endpoint.as_str().into(),
                model: c.model.as_str().into(),
                status: c.status.to_string().into(),
            };
            self.llm_calls.get_or_create(&status).inc();
            self.llm_retries.get_or_create(&endpoint).inc_by(c.retries.max(0) as u64);
            self.llm_seconds.get_or_create(&endpoint).observe(c.latency_ms as f64 / 1000.0);
            for (kind, n) in
                [("input", c.input_tokens), ("output", c.output_tokens), ("cached", c.cached_tokens)]
            {
                let label = TokenLabel {
                    agent: source.agent.as_str().into(),
                    model: c.model.as_str().into(),
                    kind: kind.into(),
                };
                self.llm_tokens.get_or_create(&label).inc_by(n.max(0) as u64);
            }
            let agent = AgentLabel { agent: source.agent.as_str().into(), model: c.model.as_str().into() };
            self.llm_cost_usd.get_or_create(&agent).inc_by(c.cost_usd.to_f64().unwrap_or(0.0));
        }
        for c in critic {
            let label = CriticLabel {
                kind: c.kind.to_string().into(),
                decision: c.decision.to_string().into(),
                status: c.status.to_string().into(),
            };
            self.critic_calls.get_or_create(&label).inc();
            let kind = KindLabel { kind: c.kind.to_string().into() };
            self.critic_cost_usd.get_or_create(&kind).inc_by(c.cost_usd.to_f64().unwrap_or(0.0));
            self.critic_seconds.get_or_create(&kind).observe(c.latency_ms as f64 / 1000.0);
            if let Some(b) = c.batch_size {
                self.critic_batch_size.observe(b as f64);
            }
        }
    }

    /// The names of every metric family this exports (with the `steer_` prefix), for checking
    /// dashboards against.
    pub fn family_names(&self) -> Vec<String> {
        self.render()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }

    /// Counts the runs one lease-expiry pass took back, by the state each went to.
    pub fn lease_expired(&self, expired: &crate::queue::Expired) {
        for (to, n) in expired.iter() {
            self.lease_expiries.get_or_create(&StateLabel { state: to.as_str().into() }).inc_by(n);
        }
    }

    /// Counts a failed store query of `/healthz` or `/metrics`.
    pub fn store_failed(&self, query: &str) {
        self.store_errors.get_or_create(&QueryLabel { query: query.into() }).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_labels_are_host_and_port_only() {
        assert_eq!(endpoint_label("http://127.0.0.1:8000/v1"), "127.0.0.1:8000");
        assert_eq!(endpoint_label("https://openrouter.ai/api/v1"), "openrouter.ai:443");
        assert_eq!(endpoint_label("http://Models.Example/v1"), "models.example:80");
        assert_eq!(endpoint_label("http://[::1]:9/v1"), "[::1]:9");
        assert_eq!(endpoint_label("not a url"), "invalid");
        assert_eq!(endpoint_label("unix:/run/llm.sock"), "invalid");
        let label = endpoint_label("https://alice:s3cret@api.example:8443/v1/?key=sk-hidden#frag");
        assert_eq!(label, "api.example:8443");
    }

    #[test]
    fn model_calls_are_counted_by_endpoint_and_tokens_and_dollars_by_agent() {
        let m = Metrics::new();
        let source = CallSource::new("bash-agent", "https://alice:s3cret@llm.example/v1?key=sk-hidden");
        let ok = LlmCallRecord {
            model: "m1".into(),
            status: protocol::CallStatus::Ok,
            retries: 2,
            latency_ms: 1500,
            input_tokens: 100,
            output_tokens: 10,
            cost_usd: "0.25".parse().unwrap(),
            ..Default::default()
        };
        let failed = LlmCallRecord {
            status: protocol::CallStatus::Timeout,
            retries: 0,
            cost_usd: Default::default(),
            ..ok.clone()
        };
        m.observe_upload(&source, &[], &[ok, failed], &[]);
        let text = m.render();
        for line in [
            r#"steer_llm_calls_total{endpoint="llm.example:443",model="m1",status="ok"} 1"#,
            r#"steer_llm_calls_total{endpoint="llm.example:443",model="m1",status="timeout"} 1"#,
            r#"steer_llm_retries_total{endpoint="llm.example:443",model="m1"} 2"#,
            r#"steer_llm_seconds_count{endpoint="llm.example:443",model="m1"} 2"#,
            r#"steer_llm_tokens_total{agent="bash-agent",model="m1",kind="input"} 200"#,
            r#"steer_llm_cost_usd_total{agent="bash-agent",model="m1"} 0.25"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
        for secret in ["alice", "s3cret", "sk-hidden", "/v1"] {
            assert!(!text.contains(secret), "`{secret}` leaked into a label:\n{text}");
        }
    }
}

#[cfg(test)]
mod escaping {
    use super::*;

    /// A sample's name, labels and value.
    type Sample = (String, Vec<(String, String)>, String);

    /// The samples of an exposition: `(name, labels, value)`, label values unescaped as the
    /// text format says (`\\`, `\"`, `\n`). Panics on a line that is not a well-formed sample.
    fn samples(text: &str) -> Vec<Sample> {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (name, mut rest) = match line.find(['{', ' ']) {
                Some(i) => (&line[..i], &line[i..]),
                None => panic!("no value on `{line}`"),
            };
            let mut labels = Vec::new();
            if let Some(inner) = rest.strip_prefix('{') {
                let mut chars = inner.char_indices();
                loop {
                    let (start, c) =
                        chars.next().unwrap_or_else(|| panic!("unterminated labels on `{line}`"));
                    if c == '}' {
                        rest = &inner[start + 1..];
                        break;
                    }
                    if c == ',' {
                        continue;
                    }
                    let key_end =
                        inner[start..].find("=\"").unwrap_or_else(|| panic!("no `=\"` on `{line}`"));
                    let key = inner[start..start + key_end].to_string();
                    assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "label name `{key}`");
                    for _ in 0..key_end + 1 {
                        chars.next();
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next().map(|(_, c)| c) {
                            Some('"') => break,
                            Some('\\') => match chars.next().map(|(_, c)| c) {
                                Some('\\') => value.push('\\'),
                                Some('"') => value.push('"'),
                                Some('n') => value.push('\n'),
                                other => panic!("bad escape {other:?} on `{line}`"),
                            },
                            Some('\n') | None => panic!("unterminated value on `{line}`"),
                            Some(c) => value.push(c),
                        }
                    }
                    labels.push((key, value));
                }
            }
            let value = rest.trim_start();
            assert!(!value.is_empty() && !value.contains(' '), "value of `{line}`");
            out.push((name.to_string(), labels, value.to_string()));
        }
        out
    }

    /// Regression: a model named with quotes, backslashes and newlines injected fake series.
    #[test]
    fn label_values_with_quotes_backslashes_and_newlines_are_escaped() {
        let m = Metrics::new();
        let model = "m\"} 1\nsteer_fake_total{x=\"y\\\" 9";
        let agent = "a\\\"\n";
        let source = CallSource::new(agent, "http://llm.example/v1");
        let call = LlmCallRecord {
            model: model.into(),
            status: protocol::CallStatus::Ok,
            cost_usd: "0.5".parse().unwrap(),
            ..Default::default()
        };
        m.observe_upload(&source, &[], &[call], &[]);
        m.sweep_spent_usd.get_or_create(&SweepLabel { sweep: "s\n\"".into() }).set(1.0);
        let samples = samples(&m.render());
        assert!(samples.iter().all(|(name, _, _)| !name.contains("fake")), "{samples:?}");
        let costs: Vec<_> = samples.iter().filter(|(n, _, _)| n == "steer_llm_cost_usd_total").collect();
        let expected =
            vec![("agent".to_string(), agent.to_string()), ("model".to_string(), model.to_string())];
        assert_eq!(costs.len(), 1, "{samples:?}");
        assert_eq!((&costs[0].1, costs[0].2.as_str()), (&expected, "0.5"));
        let calls: Vec<_> = samples.iter().filter(|(n, _, _)| n == "steer_llm_calls_total").collect();
        assert_eq!(calls.len(), 1, "{samples:?}");
        assert_eq!(calls[0].1[1], ("model".to_string(), model.to_string()));
        let spent: Vec<_> = samples.iter().filter(|(n, _, _)| n == "steer_sweep_spent_usd").collect();
        assert_eq!(spent.len(), 1, "{samples:?}");
        assert_eq!(spent[0].1, vec![("sweep".to_string(), "s\n\"".to_string())]);
    }
}
