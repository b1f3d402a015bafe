//! `steer mock-llm`: serve the replay agent (scripted answers over OpenAI's Chat Completions
//! API; not a model) until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use tokio::net::TcpListener;

use crate::replay::{self, Scenarios, ServeOptions};

#[derive(Args, Debug)]
pub struct MockLlmArgs {
    /// Directory of scenario files (`*.toml`, one scenario each), e.g. examples/replay.
    #[arg(long, value_name = "DIR")]
    pub script: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18080")]
    pub bind: SocketAddr,
    /// Require `Authorization: Bearer <key>` on every request, the key read from this
    /// environment variable (which must be set and not empty).
    #[arg(long, value_name = "VAR")]
    pub require_key_env: Option<String>,
    /// Wait this long before every answer, as a slow model would.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
}

pub async fn run(args: MockLlmArgs) -> anyhow::Result<ExitCode> {
    // The error names the file and line; it needs no more context.
    let scenarios = Scenarios::load_dir(&args.script)?;
    let required_api_key = match &args.require_key_env {
        None => None,
        Some(var) => {
            let key = std::env::var(var).with_context(|| format!("--require-key-env: reading `{var}`"))?;
            if key.trim().is_empty() {
                bail!("--require-key-env: `{var}` is empty");
            }
            Some(key)
        }
    };
    let listener = TcpListener::bind(args.bind).await.with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    println!(
        "replay agent (scripted answers, not a model) serving {} scenarios at http://{addr}/v1",
        scenarios.len()
    );
    let shutdown = super::shutdown_on_signals(None);
    tokio::select! {
        served = replay::serve(listener, scenarios, ServeOptions { required_api_key, delay: std::time::Duration::from_millis(args.delay_ms) }) => {
            served.context("serving the replay agent")?;
        }
        _ = shutdown.cancelled() => {}
    }
    Ok(ExitCode::SUCCESS)
}
