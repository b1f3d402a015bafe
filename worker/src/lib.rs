//! The steerbench worker: claims runs from the coordinator under leases, executes them through
//! an [`Executor`], streams their steps, and reports how they ended. It holds no database
//! credentials; everything goes through the coordinator's HTTP API.

pub mod agent;
pub mod critic;
pub mod daemon;
pub mod dispatch;
pub mod engine_watch;
pub mod evaluate;
pub mod executor;
pub mod grading;
pub use protocol::images;
pub mod llm;
pub mod metrics;
pub mod node;
pub mod placeholder;
pub mod sandbox;
pub mod sandboxes;
pub mod text;

/// The coordinator's HTTP client lives in its own crate, shared with the `steer` CLI.
pub use api_client as client;
pub use api_client::CoordinatorClient;
pub use daemon::{run, WorkerConfig};
pub use dispatch::Dispatcher;
pub use executor::{ExecError, Executor, RunContext, RunResult};
pub use node::Worker;
pub use placeholder::PlaceholderExecutor;
