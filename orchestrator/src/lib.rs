//! The steerbench coordinator: HTTP API, durable queue, scheduler and store, and the `steer`
//! command line. See ARCHITECTURE.md for the map.

pub mod api;
pub mod bench;
pub mod bench_agent;
pub mod bench_critic;
pub mod bench_docker;
pub mod bench_fleet;
pub mod cli;
pub mod dataset;
pub mod db;
pub mod embedded_pg;
pub mod export;
pub mod metrics;
pub mod predictions;
pub mod queue;
pub mod replay;
pub mod report;
pub mod server;
pub mod store;
pub mod sweep_file;
pub mod testkit;
