//! The `steer` command line: composes the coordinator (`orchestrator`), the worker (`worker`)
//! and the API client (`api-client`) into one binary, and holds what drives both sides at once:
//! the benchmarks ([`bench`]) and the replay agent ([`replay`], a scripted OpenAI-compatible
//! model endpoint for the demo, the tests and the agent benchmark). See ARCHITECTURE.md.

pub mod bench;
pub mod cli;
pub mod replay;
