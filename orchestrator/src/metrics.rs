//! Every Prometheus metric the coordinator exports, with its help text.
//!
//! Counters live in the process (each replica counts what it served); gauges about the queue
//! are read from Postgres at scrape time, so every replica reports the same fleet-wide truth.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

pub struct Metrics {
    registry: Registry,
    pub claim_requests: Counter,
    pub runs_claimed: Counter,
    pub runs_completed: Family<OutcomeLabel, Counter>,
    pub runs_failed: Counter,
    pub runs_released: Counter,
    pub lease_expiries: Family<StateLabel, Counter>,
    pub lease_rejections: Counter,
    pub http_responses: Family<StatusLabel, Counter>,
    pub runs_by_state: Family<StateLabel, Gauge>,
    pub workers_alive: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("steer");
        let m = Metrics {
            claim_requests: Counter::default(),
            runs_claimed: Counter::default(),
            runs_completed: Family::default(),
            runs_failed: Counter::default(),
            runs_released: Counter::default(),
            lease_expiries: Family::default(),
            lease_rejections: Counter::default(),
            http_responses: Family::default(),
            runs_by_state: Family::default(),
            workers_alive: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "claim_requests",
            "Claim requests served by this replica",
            m.claim_requests.clone(),
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
            "workers_alive",
            "Workers that heartbeated within two lease lengths",
            m.workers_alive.clone(),
        );
        Metrics { registry, ..m }
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
