//! `steer dataset import|list|delete`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use api_client::CoordinatorClient;
use clap::Subcommand;
use protocol::{DatasetInfo, DatasetUpload, API_PREFIX};
use reqwest::Method;

use super::{client, CoordinatorArgs};
use orchestrator::dataset;

#[derive(Subcommand, Debug)]
pub enum DatasetCommand {
    /// Import a SWE-bench dataset file (JSON, JSONL or Parquet as published on the Hugging Face hub). All rows or none.
    Import {
        /// The file (.json, .jsonl/.ndjson or .parquet).
        path: PathBuf,
        /// Dataset name used by sweep files [default: the file name without its extension].
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        coordinator: CoordinatorArgs,
    },
    /// List imported datasets.
    List {
        #[command(flatten)]
        coordinator: CoordinatorArgs,
    },
    /// Delete a dataset and its instances (admins only). Refused while sweeps use it, naming
    /// them, unless --with-sweeps; refused while a run of those sweeps is running either way.
    Delete {
        name: String,
        /// Delete the sweeps (and evaluations) using the dataset too, with everything recorded for them.
        #[arg(long)]
        with_sweeps: bool,
        /// Do not ask for the dataset's name to confirm.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        coordinator: CoordinatorArgs,
    },
}

pub async fn run(cmd: DatasetCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DatasetCommand::Import { path, name, coordinator } => {
            let client = client::connect(&coordinator)?;
            let name = match name {
                Some(n) => n,
                None => path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .context("cannot derive a dataset name from the path; pass --name")?,
            };
            let info = import(&client, &path, &name).await?;
            println!(
                "imported dataset `{}` (id {}): {} instances from {}",
                info.name,
                info.id,
                info.instances,
                path.display()
            );
        }
        DatasetCommand::List { coordinator } => {
            let client = client::connect(&coordinator)?;
            let list: Vec<DatasetInfo> =
                client.call::<(), _>(Method::GET, &format!("{API_PREFIX}/datasets"), None).await?;
            println!("{:>4}  {:<32} {:>9}  source", "id", "name", "instances");
            for d in list {
                println!("{:>4}  {:<32} {:>9}  {}", d.id, d.name, d.instances, d.source.unwrap_or_default());
            }
        }
        DatasetCommand::Delete { name, with_sweeps, yes, coordinator } => {
            let client = client::connect(&coordinator)?;
            super::sweep::confirm_deletion("dataset", &name, yes)?;
            let path = format!("{API_PREFIX}/datasets/{name}?with_sweeps={with_sweeps}");
            let deleted: protocol::Deleted = client.call::<(), _>(Method::DELETE, &path, None).await?;
            if deleted.sweeps.is_empty() {
                println!("deleted dataset `{}`", deleted.name);
            } else {
                println!(
                    "deleted dataset `{}` with {} sweep(s) ({}) and their {} runs",
                    deleted.name,
                    deleted.sweeps.len(),
                    deleted.sweeps.join(", "),
                    deleted.runs
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses and validates the file locally (errors name the line or row and the field), then
/// uploads every row in one request; the coordinator stores all of them or none.
pub async fn import(client: &CoordinatorClient, path: &Path, name: &str) -> anyhow::Result<DatasetInfo> {
    let instances =
        dataset::load_path(path).with_context(|| format!("reading dataset {}", path.display()))?;
    let upload =
        DatasetUpload { name: name.to_string(), source: Some(path.display().to_string()), instances };
    Ok(client.call(Method::POST, &format!("{API_PREFIX}/datasets"), Some(&upload)).await?)
}
