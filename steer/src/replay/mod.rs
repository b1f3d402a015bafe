//! The **replay agent**: an OpenAI-compatible Chat Completions server that answers from
//! scripted scenarios (`steer mock-llm --script DIR`). It is not a model: every answer was
//! written in advance. It stands in for a paid endpoint in tests, benchmarks and the demo, and
//! scripts the faults real endpoints have (429s, 5xx, truncated bodies, slowness, no usage).
//!
//! # Scenario files
//!
//! One scenario per `*.toml` file; the scenario's name is the file stem. Unknown keys are
//! errors, and every error names the file and, where it can, the line
//! (`examples/replay/x.toml:7: turns[1]: fail_with = 404: ...`).
//!
//! ```toml
//! description = "Solves steerbench__minicalc-1 the way a capable agent would"   # required
//! matches = "Exponentiation is left-associative"  # optional, see below
//!
//! [[turns]]                # at least one
//! content = "THOUGHT: ...\n\n```bash\nls\n```"    # the answer, required
//! fail_with = 429          # a fault: answer this status (429 or 5xx) ...
//! fail_times = 1           # ... the first `fail_times` times this request is seen
//!                          #     (default 1 with `fail_with` or `malformed`, else 0)
//! retry_after_s = 1        # `Retry-After` header with a `fail_with` fault
//! malformed = false        # a fault: a truncated JSON body with HTTP 200
//! delay_ms = 0             # wait before every answer of this turn, faults included
//! usage = true             # false: the answer carries no `usage`
//! ```
//!
//! # Choosing the scenario and the turn
//!
//! Stateless, so that retries, restarts and concurrent conversations need no bookkeeping:
//!
//! - the model `replay/<name>` selects scenario `<name>` (404 if there is none);
//! - any other model: the scenario whose `matches` text occurs in a `user` message; the
//!   longest such text wins; none is a 404 listing the known scenarios;
//! - the turn is the number of `assistant` messages in the request; past the last turn, the
//!   last one is repeated.
//!
//! Faults are the one piece of state: the server counts the requests it has seen for each
//! (scenario, turn index, hash of the messages) and fails while that count is below
//! `fail_times`, so a client retrying the same request gets the fault, then the answer.
//!
//! # Answers
//!
//! A chat completion as OpenAI sends it, with deterministic usage: prompt tokens are the
//! characters of every message's content and tool-call arguments divided by 4 (rounded up),
//! completion tokens likewise for the reply, and cached prompt tokens those of every message
//! but the last (a prefix cache). When the request has `tools`, a turn holding exactly one
//! ```` ```bash ```` block is answered as a tool call: `submit` (no arguments) for the
//! command [`SUBMIT_COMMAND`], else `bash` with `{"command": ...}`; other turns are answered
//! as text. `stream: true` is refused.
//!
//! Other routes: `GET /v1/models` lists the scenarios as `replay/<name>`,
//! `GET /replay/stats` counts requests, faults, and requests per scenario, and
//! `POST /replay/storm {"kind": "429"|"500"|"500-echo"|"hang", "seconds": N}` makes every chat
//! completion fail that way for N seconds, whatever the scenarios script (`DELETE /replay/storm`
//! ends it early): the fault tests' overloaded, broken (`500-echo`: and repeating the API key
//! it was sent, as some endpoints do) and wedged endpoint. `ServeOptions::delay`
//! (`steer mock-llm --delay-ms`) slows every answer. With
//! [`ServeOptions::required_api_key`] set, every route needs `Authorization: Bearer <key>`.
//!
//! `examples/replay/` holds the bundled scenarios and a README describing them.

mod scenario;
mod server;
#[cfg(test)]
mod tests;

pub use scenario::{Scenario, ScenarioError, Scenarios, Turn};
pub use server::{serve, spawn_local, ServeOptions};

/// The command with which a mini-swe-agent style agent submits its work; the replay agent
/// turns it into a `submit` tool call for tool-calling agents.
pub const SUBMIT_COMMAND: &str = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT";
