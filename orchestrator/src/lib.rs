//! The steerbench coordinator: HTTP API, durable queue, scheduler and store, reports. It links
//! no worker code (no Docker client, no ONNX Runtime, no tokenizer); the `steer` crate composes
//! it with the worker into the binary. See ARCHITECTURE.md for the map.

pub mod api;
pub mod dataset;
pub mod db;
pub mod embedded_pg;
pub mod export;
pub mod metrics;
pub mod predictions;
pub mod queue;
pub mod report;
pub mod server;
pub mod store;
pub mod sweep_file;
/// Demo dataset and sweep files for tests: compiled only in tests and with the `testkit` feature.
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
