//! `kubezero-provider`: the kubezero infrastructure provider manager (`run`) and its CRDs (`crds`).
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use kubezero_capi::runtime::{Command, Context, execute};
use kubezero_provider::api;
use kubezero_provider::aws::clients::{AWS_REQUESTS_METRIC, ClientRegistry};
use kubezero_provider::controllers::{addon_gates, cluster, host, machine, machine_template};
use kubezero_provider::metal::media;
use kubezero_provider::metal::redfish::{REDFISH_REQUESTS_METRIC, Redfish};
use kubezero_provider::settings::ProviderArgs;

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
        // One AWS client set per (credentials, region), shared by every controller.
        let clients = Arc::new(ClientRegistry::new(args.aws_settings()));
        let (name, help) = AWS_REQUESTS_METRIC;
        context
            .metrics
            .register(name, help, clients.request_counter().clone());
        // One Redfish client set (connections, per-BMC queues) for every host.
        let redfish = Arc::new(Redfish::new(args.redfish_settings()));
        let (name, help) = REDFISH_REQUESTS_METRIC;
        context
            .metrics
            .register(name, help, redfish.request_counter().clone());
        let media = {
            let context = context.clone();
            async move {
                let Some(address) = args.media_bind_address else {
                    return;
                };
                let state = media::MediaState::new(context.client.clone());
                if let Err(error) = media::serve(address, state, context.shutdown.clone()).await {
                    tracing::error!(%address, %error, "the boot media server stopped");
                }
            }
        };
        tokio::join!(
            media,
            cluster::run(context.clone(), clients.clone()),
            host::run(context.clone(), redfish, args.host_settings()),
            machine::run(context.clone(), clients.clone(), args.launcher_settings()),
            machine_template::run(context.clone(), clients),
            addon_gates::run(context)
        );
    };
    execute(MANAGER, Cli::parse().command, api::crds(), controllers).await
}
