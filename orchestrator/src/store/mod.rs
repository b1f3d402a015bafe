//! Postgres access for everything that is not the queue: datasets, sweeps, runs, workers,
//! API tokens, and what `/healthz` and `/metrics` read (`health`). Handlers call these functions; they never write SQL themselves.

pub mod datasets;
pub mod evals;
pub mod health;
pub mod runs;
pub mod sweeps;
pub mod tokens;
pub mod waiting;
pub mod workers;
