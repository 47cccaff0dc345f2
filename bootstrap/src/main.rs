//! `kubezero-bootstrap`: the kubezero bootstrap provider manager (`run`) and its CRDs (`crds`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use kubezero_bootstrap::controller::BootstrapArgs;
use kubezero_bootstrap::{api, controller};
use kubezero_capi::runtime::{Command, execute};

/// Name of the manager: Lease name, event reporter, logs.
const MANAGER: &str = "kubezero-bootstrap";

/// Command line of `kubezero-bootstrap`.
#[derive(Parser)]
#[command(name = MANAGER, version, about = "kubezero Cluster API bootstrap provider")]
struct Cli {
    #[command(subcommand)]
    command: Command<BootstrapArgs>,
}

#[tokio::main]
async fn main() -> ExitCode {
    execute(MANAGER, Cli::parse().command, api::crds(), controller::run).await
}
