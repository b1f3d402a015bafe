//! The coordinator client used by the user-facing subcommands.

use anyhow::Context;
use api_client::CoordinatorClient;

use super::CoordinatorArgs;

/// File under `steer up`'s data directory holding its admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

pub fn connect(args: &CoordinatorArgs) -> anyhow::Result<CoordinatorClient> {
    let token = match &args.token {
        Some(t) => t.clone(),
        None => {
            let path = super::default_data_dir().join(ADMIN_TOKEN_FILE);
            std::fs::read_to_string(&path)
                .map(|t| t.trim().to_string())
                .with_context(|| {
                    format!(
                        "no API token: set STEER_TOKEN (or --token), or run `steer up` on this machine, which writes one to {}",
                        path.display()
                    )
                })?
        }
    };
    Ok(CoordinatorClient::new(&args.coordinator, &token).with_retry_for(std::time::Duration::from_secs(10)))
}
