//! The steerbench coordinator: HTTP API, durable queue, scheduler and store, and the `steer`
//! command line. See ARCHITECTURE.md for the map.

pub mod api;
pub mod db;
pub mod metrics;
pub mod queue;
pub mod server;
pub mod store;
