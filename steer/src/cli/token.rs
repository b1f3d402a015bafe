//! `steer token create|list|revoke`: straight to the database, so the first admin token can be
//! made before any token exists.

use std::process::ExitCode;

use clap::Subcommand;
use protocol::Role;

use super::DatabaseArgs;
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
        db: DatabaseArgs,
    },
    /// List tokens (never their values).
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Revoke a token by id; requests with it are refused from then on.
    Revoke {
        id: i64,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

pub async fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create { name, role, db } => {
            let pool = db::connect(&db.database_url, 2).await?;
            let created = tokens::create(&pool, &name, role).await?;
            eprintln!(
                "created {} token `{}` (id {}); it is shown only once:",
                role.as_str(),
                created.name,
                created.id
            );
            println!("{}", created.token);
        }
        TokenCommand::List { db } => {
            let pool = db::connect(&db.database_url, 2).await?;
            println!("{:>4}  {:<24} {:<7} {:<25} revoked", "id", "name", "role", "created");
            for t in tokens::list(&pool).await? {
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
        TokenCommand::Revoke { id, db } => {
            let pool = db::connect(&db.database_url, 2).await?;
            tokens::revoke(&pool, id).await?;
            println!("revoked token {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
