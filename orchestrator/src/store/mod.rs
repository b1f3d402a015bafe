//! Postgres access for everything that is not the queue: datasets, sweeps, runs, workers and
//! API tokens. Handlers call these functions; they never write SQL themselves.

pub mod datasets;
pub mod evals;
pub mod runs;
pub mod sweeps;
pub mod tokens;
pub mod workers;
