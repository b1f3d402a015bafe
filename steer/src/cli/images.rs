//! `steer images pull --sweep ID`: pre-pull, on this machine's Docker engine, every image a
//! sweep's unfinished runs need, so that its runs start without waiting for pulls.

use std::process::ExitCode;

use clap::Subcommand;
use protocol::API_PREFIX;
use reqwest::Method;
use worker::sandbox::Docker;

use super::serve::RegistryArgs;
use super::{client, CoordinatorArgs};

#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// Pull the images of a sweep's unfinished runs (present ones are skipped).
    Pull {
        /// Sweep id or name.
        #[arg(long)]
        sweep: String,
        /// Docker engine to pull into.
        #[arg(long, env = "DOCKER_HOST", default_value = "unix:///var/run/docker.sock")]
        docker_host: String,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        coordinator: CoordinatorArgs,
    },
}

pub async fn run(cmd: ImagesCommand) -> anyhow::Result<ExitCode> {
    let ImagesCommand::Pull { sweep, docker_host, registry, coordinator } = cmd;
    let client = client::connect(&coordinator)?;
    let images: Vec<String> =
        client.call::<(), _>(Method::GET, &format!("{API_PREFIX}/sweeps/{sweep}/images"), None).await?;
    let docker = Docker::connect_to(&docker_host).await?;
    let (mut present, mut pulled, mut failed) = (0, 0, 0);
    for image in &images {
        if docker.image_present(image).await? {
            present += 1;
            continue;
        }
        eprintln!("pulling {image}");
        match docker.ensure_image(image, registry.auth()).await {
            Ok(()) => pulled += 1,
            Err(e) => {
                eprintln!("  {e}");
                failed += 1;
            }
        }
    }
    println!("{} image(s): {present} present, {pulled} pulled, {failed} failed", images.len());
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
