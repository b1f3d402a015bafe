//! The worker's own Prometheus metrics (`steer worker --metrics-bind ADDR` serves them): runs in
//! flight and their results, and image pulls and cache hits. One registry per process (a
//! worker is one process); the coordinator exports the fleet-wide figures of steps, model and
//! critic calls from what workers upload.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunResultLabel {
    pub executor: String,
    /// `completed`, `failed` (infrastructure), `released` (drain, cancel), `lease_lost`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

pub struct WorkerMetrics {
    registry: Registry,
    pub runs_active: Gauge,
    pub runs: Family<RunResultLabel, Counter>,
    /// `hit` (present), `pulled`, `failed`.
    pub images: Family<ResultLabel, Counter>,
    pub pulls_in_progress: Gauge,
}

/// The process's metrics.
pub static METRICS: LazyLock<WorkerMetrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("steer_worker");
    let m = WorkerMetrics {
        registry: Registry::default(),
        runs_active: Gauge::default(),
        runs: Family::default(),
        images: Family::default(),
        pulls_in_progress: Gauge::default(),
    };
    registry.register("runs_active", "Runs this worker is executing", m.runs_active.clone());
    registry.register("runs", "Runs this worker ended, by executor and result", m.runs.clone());
    registry.register("images", "Instance images needed, by result (hit, pulled, failed)", m.images.clone());
    registry.register("pulls_in_progress", "Image pulls under way", m.pulls_in_progress.clone());
    WorkerMetrics { registry, ..m }
});

impl WorkerMetrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn image(&self, result: &str) {
        self.images.get_or_create(&ResultLabel { result: result.into() }).inc();
    }

    pub fn run_ended(&self, executor: &str, result: &str) {
        self.runs.get_or_create(&RunResultLabel { executor: executor.into(), result: result.into() }).inc();
    }
}
