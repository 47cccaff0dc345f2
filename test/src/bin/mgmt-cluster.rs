//! `mgmt-cluster`: a stand-in for a real management cluster, as a process of its own. It serves
//! the API emulator with the CAPI core CRDs, the objects `clusterctl init` installs for core's
//! RBAC aggregation, and the CAPI stand-in running as core does: it writes `<cluster>-kubeconfig`
//! only when the Secret is missing (from `<cluster>-ca`) and reaches workload clusters only
//! through that Secret, like core's ClusterCache. No kubezero CRD or manager is installed: the e2e
//! suites, run with `KUBEZERO_E2E_KUBECONFIG` pointing at the kubeconfig this writes, treat it as a
//! real cluster (their own CRDs, RBAC, namespace, local managers, workload emulators, moto).
//!
//! ```text
//! mgmt-cluster --kubeconfig <path> [--address <ip>]
//! ```
//!
//! Writes the kubeconfig (no credentials: the superuser) once everything is served, and stops on
//! SIGTERM or SIGINT, removing it again. `--address` is where the API listens (default
//! `127.0.0.1`; on this machine only loopback may be used).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use kubezero_test::apiserver::ApiServer;
use kubezero_test::capi::{CapiCore, CapiCoreOptions, KubeconfigSecretClusters};

/// Errors of the stand-in management cluster.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// The command line is not understood.
    #[error("usage: mgmt-cluster --kubeconfig <path> [--address <ip>]: {0}")]
    Usage(String),
    /// The API emulator did not start or could not be reached.
    #[error("API emulator: {0}")]
    Emulator(#[from] kubezero_test::apiserver::Error),
    /// Installing the CAPI CRDs failed.
    #[error("installing the CAPI core CRDs: {0}")]
    Capi(#[from] kubezero_test::capi::Error),
    /// Installing core's RBAC aggregation failed.
    #[error("installing CAPI core's RBAC: {0}")]
    Rbac(#[from] kubezero_test::world::WorldError),
    /// Writing the kubeconfig failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The kubeconfig path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
    /// Signal handling could not be set up.
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

/// The command line.
struct Args {
    kubeconfig: PathBuf,
    address: IpAddr,
}

fn parse_args() -> Result<Args, Error> {
    let mut kubeconfig = None;
    let mut address: IpAddr = std::net::Ipv4Addr::LOCALHOST.into();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| Error::Usage(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value()?)),
            "--address" => {
                let text = value()?;
                address = text
                    .parse()
                    .map_err(|_| Error::Usage(format!("--address {text} is not an IP address")))?;
            }
            other => return Err(Error::Usage(format!("unknown argument {other}"))),
        }
    }
    let kubeconfig = kubeconfig.ok_or_else(|| Error::Usage("--kubeconfig is required".into()))?;
    Ok(Args { kubeconfig, address })
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mgmt-cluster: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let args = parse_args()?;
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(Error::Signal)?;
    let server = ApiServer::start_on(args.address).await?;
    let client = server.client()?;
    CapiCore::install(client.clone()).await?;
    kubezero_test::world::rbac::install_core_aggregation(&client).await?;
    let options = CapiCoreOptions {
        workload_clusters: Some(Arc::new(KubeconfigSecretClusters::new(client.clone()))),
        kubeconfig: true,
        ..CapiCoreOptions::default()
    };
    let core = CapiCore::start(client, options);

    // Written in one step (a rename), so a script waiting for the file never reads half of it.
    let path = args.kubeconfig.display().to_string();
    let partial = args.kubeconfig.with_extension("partial");
    let write_error = |source| Error::Write {
        path: path.clone(),
        source,
    };
    std::fs::write(&partial, server.kubeconfig()).map_err(write_error)?;
    std::fs::rename(&partial, &args.kubeconfig).map_err(write_error)?;
    println!("mgmt-cluster: serving {} (kubeconfig {path})", server.url());

    tokio::select! {
        _ = terminate.recv() => eprintln!("mgmt-cluster: SIGTERM received, stopping"),
        _ = tokio::signal::ctrl_c() => eprintln!("mgmt-cluster: SIGINT received, stopping"),
    }
    core.stop();
    server.shutdown().await;
    let _ = std::fs::remove_file(&args.kubeconfig);
    Ok(())
}
