//! `steer token create|list|revoke`, two ways: through the coordinator's API with an admin
//! token (a `steer up` machine, or anyone holding one, needs no database URL), or straight to
//! the database, which is how the first admin token is made before any token exists.

use std::process::ExitCode;

use anyhow::Context;
use api_client::CoordinatorClient;
use clap::{Args, Subcommand};
use protocol::{CreateToken, CreatedToken, Role, API_PREFIX};
use reqwest::Method;
use sqlx::PgPool;

use super::client;
use orchestrator::{db, store::tokens};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print it (only its hash is stored; it cannot be shown again).
    Create {
        /// A name for people, e.g. "worker-gpu-3" or "alice".
        #[arg(long)]
        name: String,
        /// admin (everything), user (datasets, sweeps, runs) or worker (the worker protocol).
        #[arg(long, default_value = "user")]
        role: Role,
        #[command(flatten)]
        via: TokenAccess,
    },
    /// List tokens (never their values).
    List {
        #[command(flatten)]
        via: TokenAccess,
    },
    /// Revoke a token by id; requests with it are refused from then on.
    Revoke {
        id: i64,
        #[command(flatten)]
        via: TokenAccess,
    },
}

/// Where the tokens are: a coordinator (with an admin token) or the database itself.
///
/// `--coordinator` given: the API, even when DATABASE_URL is set too (a note says so).
/// Only DATABASE_URL given: the database. Neither: the API of the coordinator `steer up` runs
/// on this machine (http://127.0.0.1:8420), with its admin token.
#[derive(Args, Debug, Clone)]
pub struct TokenAccess {
    /// Go through this coordinator's API (needs an admin token) [default when DATABASE_URL
    /// is not set: http://127.0.0.1:8420, where `steer up` listens].
    #[arg(long, env = "STEER_COORDINATOR")]
    pub coordinator: Option<String>,
    /// An admin token for the API. Defaults to the admin token `steer up` wrote to its data
    /// directory.
    #[arg(long, env = "STEER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where `steer up` keeps its token files, when it was started with `--data-dir`.
    #[arg(long, env = "STEER_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Write the database directly instead (how the first admin token is made), e.g.
    /// postgres://user:pass@127.0.0.1:5432/steerbench. Ignored when --coordinator is given.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// The coordinator `steer up` serves on by default.
const LOCAL_COORDINATOR: &str = "http://127.0.0.1:8420";

enum Store {
    Api(CoordinatorClient),
    Database(PgPool),
}

impl TokenAccess {
    async fn open(&self) -> anyhow::Result<Store> {
        let coordinator = match (&self.coordinator, &self.database_url) {
            (Some(url), Some(_)) => {
                let url = client::coordinator_url(url)?;
                eprintln!(
                    "note: both a coordinator and DATABASE_URL are given; going through the coordinator's API at {url} (leave out --coordinator and STEER_COORDINATOR to write the database directly)"
                );
                url
            }
            (Some(url), None) => url.clone(),
            (None, Some(database_url)) => {
                let pool = db::connect(database_url, 2).await.context("connecting to DATABASE_URL")?;
                return Ok(Store::Database(pool));
            }
            (None, None) => LOCAL_COORDINATOR.to_string(),
        };
        let token =
            client::api_token(self.token.as_deref(), self.data_dir.as_deref()).with_context(|| {
                format!(
                    "`steer token` goes through the coordinator at {coordinator} with an admin token; \
                 or set DATABASE_URL (and not STEER_COORDINATOR) to write the database directly"
                )
            })?;
        let args = super::CoordinatorArgs { coordinator, token: Some(token), data_dir: None };
        Ok(Store::Api(client::connect(&args)?))
    }
}

/// A token as `GET /api/v1/tokens` lists it.
#[derive(serde::Deserialize)]
struct Listed {
    id: i64,
    name: String,
    role: String,
    created_at: chrono::DateTime<chrono::Utc>,
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<tokens::TokenInfo> for Listed {
    fn from(t: tokens::TokenInfo) -> Self {
        Listed { id: t.id, name: t.name, role: t.role, created_at: t.created_at, revoked_at: t.revoked_at }
    }
}

pub async fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    let path = format!("{API_PREFIX}/tokens");
    match cmd {
        TokenCommand::Create { name, role, via } => {
            let created: CreatedToken = match via.open().await? {
                Store::Api(api) => api
                    .call(Method::POST, &path, Some(&CreateToken { name: name.clone(), role }))
                    .await
                    .with_context(|| format!("creating token `{name}` at {}", api.base_url()))?,
                Store::Database(pool) => tokens::create(&pool, &name, role).await?,
            };
            eprintln!(
                "created {} token `{}` (id {}); it is shown only once:",
                created.role.as_str(),
                created.name,
                created.id
            );
            println!("{}", created.token);
        }
        TokenCommand::List { via } => {
            let listed: Vec<Listed> = match via.open().await? {
                Store::Api(api) => api
                    .call::<(), _>(Method::GET, &path, None)
                    .await
                    .with_context(|| format!("listing tokens at {}", api.base_url()))?,
                Store::Database(pool) => tokens::list(&pool).await?.into_iter().map(Listed::from).collect(),
            };
            println!("{:>4}  {:<24} {:<7} {:<25} revoked", "id", "name", "role", "created");
            for t in listed {
                let revoked = t.revoked_at.map(|r| r.to_rfc3339()).unwrap_or_else(|| "-".into());
                println!(
                    "{:>4}  {:<24} {:<7} {:<25} {}",
                    t.id,
                    t.name,
                    t.role,
                    t.created_at.to_rfc3339(),
                    revoked
                );
            }
        }
        TokenCommand::Revoke { id, via } => {
            match via.open().await? {
                Store::Api(api) => api
                    .call::<(), ()>(Method::DELETE, &format!("{path}/{id}"), None)
                    .await
                    .with_context(|| format!("revoking token {id} at {}", api.base_url()))?,
                Store::Database(pool) => tokens::revoke(&pool, id).await?,
            }
            println!("revoked token {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
