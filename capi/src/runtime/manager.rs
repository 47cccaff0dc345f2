//! The manager process: HTTP endpoints, CRD wait, leader election, controllers, graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Reporter;
use tokio_util::sync::CancellationToken;

use super::args::ManagerArgs;
use super::crds::wait_for_crds;
use super::events::EventPublisher;
use super::http::{self, Readiness};
use super::leader::{LeaderElector, LeadershipEnd, LeaseConfig};
use super::metrics::Metrics;
use super::status::WrittenStatuses;
use super::telemetry;

/// How often the CRD check polls while CRDs are missing.
const CRD_POLL: Duration = Duration::from_secs(5);

/// Everything a controller needs from the manager.
#[derive(Clone)]
pub struct Context {
    /// Client of the management cluster.
    pub client: Client,
    /// The `run` arguments (namespace, watch filter, concurrency).
    pub args: ManagerArgs,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// Publishes Events as this manager.
    pub recorder: EventPublisher,
    /// Cancelled on SIGTERM/SIGINT or lost leadership; controllers drain and return.
    pub shutdown: CancellationToken,
    /// The statuses this manager's controllers wrote last (a write that changes nothing is skipped).
    pub statuses: Arc<WrittenStatuses>,
}

/// Why the manager stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// Flags contradict each other.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// No kubeconfig or in-cluster configuration.
    #[error("failed to create the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// A listener could not be bound.
    #[error("failed to serve HTTP on {address}: {source}")]
    Http {
        /// The address.
        address: std::net::SocketAddr,
        /// Bind or serve error.
        source: std::io::Error,
    },
    /// Another process took the lease, or renewal failed past the deadline.
    #[error("lost leadership of lease {0}")]
    LeadershipLost(String),
    /// The controllers returned without a shutdown request.
    #[error("controllers stopped unexpectedly")]
    ControllersStopped,
}

/// Runs a manager named `name` until SIGTERM/SIGINT.
///
/// `required_crds` are the CRD names (`<plural>.<group>`) the controllers watch; the manager stays
/// not-ready and logs which are missing until all are established. `controllers` must return once
/// `Context::shutdown` is cancelled.
pub async fn run<F, Fut>(
    name: &str,
    args: ManagerArgs,
    required_crds: Vec<String>,
    controllers: F,
) -> Result<(), ManagerError>
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = ()>,
{
    telemetry::init(args.log_format);
    args.validate().map_err(ManagerError::InvalidArguments)?;
    let client = Client::try_default().await.map_err(ManagerError::Client)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::new("starting");
    let servers = [
        (args.metrics_bind_address, http::metrics_router(metrics.clone())),
        (
            args.health_probe_bind_address,
            http::health_router(readiness.clone()),
        ),
    ];
    let mut http_tasks = Vec::new();
    for (address, router) in servers {
        let listener_shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            http::serve(address, router, listener_shutdown)
                .await
                .map_err(|source| ManagerError::Http { address, source })
        });
        http_tasks.push(task);
    }

    let result = run_controllers(
        name,
        &args,
        client,
        metrics,
        &readiness,
        &required_crds,
        &shutdown,
        controllers,
    )
    .await;
    shutdown.cancel();
    for task in http_tasks {
        match task.await {
            Ok(Err(error)) if result.is_ok() => return Err(error),
            Ok(Err(error)) => tracing::error!(%error, "HTTP server failed"),
            _ => {}
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_controllers<F, Fut>(
    name: &str,
    args: &ManagerArgs,
    client: Client,
    metrics: Arc<Metrics>,
    readiness: &Readiness,
    required_crds: &[String],
    shutdown: &CancellationToken,
    controllers: F,
) -> Result<(), ManagerError>
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = ()>,
{
    if !wait_for_crds(&client, required_crds, readiness, shutdown, CRD_POLL).await {
        return Ok(());
    }
    readiness.set_ready();

    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let lease_name = args
        .leader_election_id
        .clone()
        .unwrap_or_else(|| name.to_string());
    let mut elector = args.leader_elect.then(|| {
        LeaderElector::new(
            client.clone(),
            LeaseConfig {
                namespace: args.leader_election_namespace.clone(),
                name: lease_name.clone(),
                identity: identity.clone(),
                lease_duration: args.lease_duration,
                renew_deadline: args.renew_deadline,
                retry_period: args.retry_period,
            },
        )
    });
    if let Some(elector) = elector.as_mut() {
        tracing::info!(lease = %lease_name, %identity, "waiting for leadership");
        if !elector.acquire(shutdown).await {
            return Ok(());
        }
        metrics.set_leader(true);
    }

    let reporter = Reporter {
        controller: name.to_string(),
        instance: Some(identity),
    };
    let context = Context {
        recorder: EventPublisher::new(client.clone(), reporter),
        client,
        args: args.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        statuses: Arc::default(),
    };
    let controllers = controllers(context);
    tokio::pin!(controllers);
    let leadership = async {
        match elector.as_mut() {
            Some(elector) => elector.hold(shutdown).await,
            None => {
                shutdown.cancelled().await;
                LeadershipEnd::Shutdown
            }
        }
    };
    let outcome = tokio::select! {
        () = &mut controllers => if shutdown.is_cancelled() { Ok(()) } else { Err(ManagerError::ControllersStopped) },
        end = leadership => {
            shutdown.cancel();
            controllers.await;
            match end {
                LeadershipEnd::Lost => Err(ManagerError::LeadershipLost(lease_name)),
                LeadershipEnd::Shutdown => Ok(()),
            }
        }
    };
    metrics.set_leader(false);
    if let (Some(elector), Ok(())) = (elector.as_mut(), &outcome) {
        elector.release().await;
    }
    outcome
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "unable to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
    }
    shutdown.cancel();
}

/// `<hostname>_<pid>` when no pod name is given.
fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "kubezero".to_string());
    format!("{host}_{}", std::process::id())
}

/// Runs a manager binary's subcommand and turns the outcome into an exit code.
///
/// `crds` are the binary's own CRDs: printed by `crds`, and required (with CAPI's Cluster and
/// Machine CRDs) before `run` starts the controllers.
pub async fn execute<P, F, Fut>(
    name: &str,
    command: super::Command<P>,
    crds: Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>,
    controllers: F,
) -> std::process::ExitCode
where
    P: clap::Args,
    F: FnOnce(Context, P) -> Fut,
    Fut: Future<Output = ()>,
{
    let result = match command {
        super::Command::Crds(args) => super::manifests::crds_command(&args, &crds).map_err(|e| e.to_string()),
        super::Command::Run(args) => {
            let mut required = super::manifests::crd_names(&crds);
            required.extend([
                "clusters.cluster.x-k8s.io".to_string(),
                "machines.cluster.x-k8s.io".to_string(),
            ]);
            let super::RunArgs { manager, provider } = *args;
            let controllers = move |context| controllers(context, provider);
            run(name, manager, required, controllers).await.map_err(|error| {
                tracing::error!(%error, "manager stopped");
                error.to_string()
            })
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
