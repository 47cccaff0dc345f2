//! `kubezero-provider`: the kubezero infrastructure provider manager (`run`) and its CRDs (`crds`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use kubezero_capi::runtime::{Command, Context, execute};
use kubezero_provider::api;
use kubezero_provider::aws::clients::AWS_REQUESTS_METRIC;
use kubezero_provider::controllers::{addon_gates, cluster, machine, machine_template};
use kubezero_provider::settings::{Backends, ProviderArgs};

/// Name of the manager: Lease name, event reporter, logs.
const MANAGER: &str = "kubezero-provider";

/// Command line of `kubezero-provider`.
#[derive(Parser)]
#[command(name = MANAGER, version, about = "kubezero Cluster API infrastructure provider")]
struct Cli {
    #[command(subcommand)]
    command: Command<ProviderArgs>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let controllers = |context: Context, args: ProviderArgs| async move {
        let backends = Backends::new(&args);
        let (name, help) = AWS_REQUESTS_METRIC;
        context
            .metrics
            .register(name, help, backends.aws.request_counter().clone());
        tokio::join!(
            cluster::run(context.clone(), backends.clone()),
            machine::run(context.clone(), backends.clone()),
            machine_template::run(context.clone(), backends),
            addon_gates::run(context)
        );
    };
    execute(MANAGER, Cli::parse().command, api::crds(), controllers).await
}
