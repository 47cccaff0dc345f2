//! Command line of both managers: `run` (the manager) and `crds` (print or write the CRDs).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kube::runtime::watcher;
use kube::{Api, Client, Resource};

use crate::contract::WATCH_FILTER_LABEL;

/// Subcommands shared by both manager binaries; `P` holds the flags only one provider has.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command<P: clap::Args = NoProviderArgs> {
    /// Run the manager: controllers, leader election, metrics and health endpoints.
    Run(Box<RunArgs<P>>),
    /// Print the CRDs as YAML, or write one file per CRD into a folder.
    Crds(CrdsArgs),
}

/// Arguments of the `run` subcommand: the flags every manager has and the provider's own.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs<P: clap::Args> {
    /// Flags every manager has.
    #[command(flatten)]
    pub manager: ManagerArgs,
    /// Flags of this provider only.
    #[command(flatten)]
    pub provider: P,
}

/// A provider without flags of its own.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct NoProviderArgs {}

/// Arguments of the `crds` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct CrdsArgs {
    /// Write `<group>_<plural>.yaml` files into this folder instead of printing to stdout.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
}

/// Log output format.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of the `run` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct ManagerArgs {
    /// Namespace to watch; empty watches all namespaces (what clusterctl installs).
    #[arg(long, default_value = "")]
    pub namespace: String,

    /// Only reconcile objects labelled `cluster.x-k8s.io/watch-filter=<value>`; empty reconciles all.
    #[arg(long, default_value = "")]
    pub watch_filter: String,

    /// Objects of one kind reconciled at the same time.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub concurrency: u16,

    /// Address serving `/metrics`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_bind_address: SocketAddr,

    /// Address serving `/healthz` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:9440")]
    pub health_probe_bind_address: SocketAddr,

    /// Run controllers only while holding the leader Lease.
    #[arg(long)]
    pub leader_elect: bool,

    /// Namespace of the leader Lease (defaults to the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_election_namespace: String,

    /// Name of the leader Lease (defaults to the binary name).
    #[arg(long)]
    pub leader_election_id: Option<String>,

    /// How long a leader's lease is valid without renewal.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// How long the leader keeps trying to renew before it gives up leadership and exits.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub renew_deadline: Duration,

    /// Interval between acquire and renew attempts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_period: Duration,

    /// Identity written into the Lease (defaults to the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl ManagerArgs {
    /// Watcher configuration honouring `--watch-filter`.
    pub fn watcher_config(&self) -> watcher::Config {
        let config = watcher::Config::default();
        if self.watch_filter.is_empty() {
            config
        } else {
            config.labels(&format!("{WATCH_FILTER_LABEL}={}", self.watch_filter))
        }
    }

    /// An API handle for `K` honouring `--namespace`.
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        if self.namespace.is_empty() {
            Api::all(client.clone())
        } else {
            Api::namespaced(client.clone(), &self.namespace)
        }
    }

    /// Checks relations between flags that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.leader_elect && self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--renew-deadline ({:?}) must be shorter than --lease-duration ({:?})",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.leader_elect && self.retry_period >= self.renew_deadline {
            return Err(format!(
                "--retry-period ({:?}) must be shorter than --renew-deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn run_args(extra: &[&str]) -> ManagerArgs {
        let mut argv = vec!["kubezero", "run"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(args) => args.manager,
            Command::Crds(_) => unreachable!(),
        }
    }

    #[test]
    fn defaults_match_the_deployment_manifests() {
        let args = run_args(&[]);
        assert_eq!(args.concurrency, 10);
        assert_eq!(args.metrics_bind_address.port(), 8080);
        assert_eq!(args.health_probe_bind_address.port(), 9440);
        assert_eq!(args.lease_duration, Duration::from_secs(15));
        assert_eq!(args.renew_deadline, Duration::from_secs(10));
        assert_eq!(args.retry_period, Duration::from_secs(2));
        assert!(args.validate().is_ok());
    }

    #[test]
    fn watch_filter_becomes_a_label_selector() {
        let args = run_args(&["--watch-filter", "team-a"]);
        assert_eq!(
            args.watcher_config().label_selector.as_deref(),
            Some("cluster.x-k8s.io/watch-filter=team-a")
        );
        assert_eq!(run_args(&[]).watcher_config().label_selector, None);
    }

    #[test]
    fn inconsistent_leader_timings_are_refused() {
        let args = run_args(&[
            "--leader-elect",
            "--lease-duration",
            "5s",
            "--renew-deadline",
            "10s",
        ]);
        assert!(args.validate().unwrap_err().contains("--renew-deadline"));
        assert!(Cli::try_parse_from(["k", "run", "--concurrency", "0"]).is_err());
    }
}
