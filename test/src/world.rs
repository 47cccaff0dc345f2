//! The one entry point of the end-to-end suites: a management cluster and the two kubezero managers.
//!
//! Without `KUBEZERO_E2E_KUBECONFIG` the world is emulated: an [`ApiServer`] on 127.0.0.1 with the
//! kubezero CRDs and the [`CapiCore`] stand-in. With it, the suites run against that real management
//! cluster (Cluster API core installed); the kubezero CRDs are applied there and the managers still run
//! as local processes. Every world gets its own namespace and the managers watch only that namespace,
//! so suites never see each other's objects. Suites use only this API: no emulator internals.
//!
//! The managers run as their own ServiceAccounts under the RBAC `config/` ships ([`rbac`]): the
//! world applies it as `clusterctl init` would (adapted so that worlds stay apart), mints each
//! manager a token with the TokenRequest API and starts it with a kubeconfig holding that token,
//! so a rule the shipped roles lack fails the e2e as it would fail on a real cluster.
//!
//! Both modes run [`WorkloadEmulators`]: one more emulator per workload Cluster, prepared by
//! [`World::prepare_cluster`] before the Cluster is created and published as `<cluster>-kubeconfig`
//! (core, the stand-in or a real one, finds the Secret, mints none of its own and connects through
//! it, like core's ClusterCache), and, with [`World::start_with_cloud`], a [`NodeSimulator`]
//! registering a Node there for every running moto instance of a cluster, so Machines get their
//! `nodeRef`s from core in both modes. The emulators listen on [`E2E_WORKLOAD_ADDRESS`]
//! (default `127.0.0.1`), which must be reachable from wherever core runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::apiserver::ApiServer;
use crate::capi::{CapiCore, CapiCoreOptions, KubeconfigSecretClusters};
use crate::cloud::Moto;
use crate::workload::{
    ClusterPreparer, MotoInstances, NodeSimulator, Publication, WorkloadEmulators, WorkloadOptions,
};

pub mod rbac;

pub use rbac::ManagerRbac;

/// Environment variable naming a real management cluster's kubeconfig.
pub const E2E_KUBECONFIG: &str = "KUBEZERO_E2E_KUBECONFIG";

/// Environment variable with the IP address the workload emulators listen on and that their
/// kubeconfigs name (default `127.0.0.1`): it must be reachable from wherever core runs.
pub const E2E_WORKLOAD_ADDRESS: &str = "KUBEZERO_E2E_WORKLOAD_ADDRESS";

/// Errors while building a world.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// The API emulator did not start.
    #[error("failed to start the API emulator: {0}")]
    Emulator(String),
    /// The real cluster's kubeconfig could not be loaded.
    #[error("failed to load {E2E_KUBECONFIG}={path}: {message}")]
    Kubeconfig {
        /// The kubeconfig path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A workload cluster could not be prepared.
    #[error("failed to prepare the workload cluster of {cluster}: {source}")]
    Workload {
        /// `namespace/name` of the Cluster.
        cluster: String,
        /// What went wrong.
        source: crate::workload::Error,
    },
    /// [`E2E_WORKLOAD_ADDRESS`] is not an IP address.
    #[error("{E2E_WORKLOAD_ADDRESS}={value} is not an IP address")]
    WorkloadAddress {
        /// The value given.
        value: String,
    },
    /// A Kubernetes call failed.
    #[error("unable to {action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// Client error.
        source: kube::Error,
    },
    /// A manager binary is missing or did not start.
    #[error("failed to start {binary}: {message}")]
    Manager {
        /// Binary name.
        binary: String,
        /// What went wrong.
        message: String,
    },
    /// The managers' RBAC could not be read or installed.
    #[error("managers' RBAC: {path}: {message}")]
    Rbac {
        /// The file or object concerned.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Writing a file failed.
    #[error("failed to write {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// I/O error.
        source: std::io::Error,
    },
}

/// How the world is backed.
enum Backend {
    /// The emulator and the CAPI stand-in, owned by this world (dropped in declaration order).
    Emulated { _capi: CapiCore, _apiserver: ApiServer },
    /// A real management cluster.
    Real,
}

/// The workload side, in both modes: the workload-cluster emulators and (with a cloud) the node
/// simulator (dropped in declaration order: the simulator first).
struct Workloads {
    _nodes: Option<NodeSimulator>,
    _emulators: WorkloadEmulators,
}

/// One running manager process, stopped (SIGTERM, then SIGKILL) when dropped.
struct ManagerProcess {
    name: String,
    child: Child,
    log: PathBuf,
    /// Its `--metrics-bind-address`.
    metrics: std::net::SocketAddr,
    /// The extra `run` flags it was started with, for [`World::restart_manager`].
    flags: Vec<String>,
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Sends SIGTERM to a child this world started, waits up to 10 s, then kills it.
fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..100 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What a suite needs to talk to a [`World`]: a client and the test namespace. Cheap to clone and
/// `Send`, so a test body can run in its own task while the world stays with the test.
#[derive(Clone)]
pub struct WorldView {
    client: Client,
    namespace: String,
    preparer: ClusterPreparer,
    /// The metrics addresses of the managers running when the view was taken.
    metrics: Vec<(String, std::net::SocketAddr)>,
}

impl WorldView {
    /// A client of the management cluster.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The test's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// See [`World::prepare_cluster`].
    pub async fn prepare_cluster(&self, name: &str) -> Result<String, WorldError> {
        prepare(&self.preparer, &self.namespace, name).await
    }

    /// The sum of manager `name`'s metric series whose line starts with `series` (e.g.
    /// `kubezero_reconcile_total{controller="addon-gates"}`), `None` when the manager was not
    /// running when the view was taken or its metrics endpoint does not answer.
    pub async fn manager_metric(&self, name: &str, series: &str) -> Option<u64> {
        let address = self.metrics.iter().find(|(manager, _)| manager == name)?.1;
        metric_sum(address, series).await
    }
}

/// The sum of the metric series whose line starts with `series` at the manager metrics endpoint
/// `address`, `None` while it does not answer.
pub async fn metric_sum(address: std::net::SocketAddr, series: &str) -> Option<u64> {
    let response = tokio::task::spawn_blocking(move || {
        crate::cloud::http::get(address, "/metrics", std::time::Duration::from_secs(5))
    })
    .await
    .ok()?
    .ok()?;
    Some(
        response
            .text()
            .lines()
            .filter(|line| line.starts_with(series))
            .filter_map(|line| line.rsplit_once(' ')?.1.trim().parse::<u64>().ok())
            .sum(),
    )
}

async fn prepare(preparer: &ClusterPreparer, namespace: &str, name: &str) -> Result<String, WorldError> {
    preparer
        .prepare(namespace, name)
        .await
        .map_err(|source| WorldError::Workload {
            cluster: format!("{namespace}/{name}"),
            source,
        })
}

/// The address of the workload emulators: [`E2E_WORKLOAD_ADDRESS`], else `127.0.0.1`.
fn workload_address() -> Result<std::net::IpAddr, WorldError> {
    match std::env::var(E2E_WORKLOAD_ADDRESS) {
        Ok(value) if !value.is_empty() => value.parse().map_err(|_| WorldError::WorkloadAddress { value }),
        _ => Ok(std::net::Ipv4Addr::LOCALHOST.into()),
    }
}

/// A management cluster for one test, with its own namespace.
pub struct World {
    client: Client,
    namespace: String,
    directory: PathBuf,
    /// The administrator's kubeconfig (the emulator's, or `KUBEZERO_E2E_KUBECONFIG`).
    kubeconfig: PathBuf,
    /// Each manager's kubeconfig, holding its ServiceAccount's token.
    manager_kubeconfigs: Vec<(String, PathBuf)>,
    /// Cluster-scoped objects created for this world alone (its ClusterRoleBindings).
    owned: Vec<rbac::Owned>,
    managers: Vec<ManagerProcess>,
    preparer: ClusterPreparer,
    _workloads: Workloads,
    backend: Backend,
    /// Environment of the provider manager for AWS: moto's endpoint and dummy credentials.
    cloud_env: Vec<(&'static str, String)>,
}

/// Where the provider's AWS calls go when the world has no moto: a loopback port nothing listens on
/// (port 1, refused at once), so no call can leave the machine.
pub const NO_CLOUD_ENDPOINT: &str = "http://127.0.0.1:1";

/// The provider's AWS environment: `moto`'s, or [`NO_CLOUD_ENDPOINT`] with dummy credentials. The
/// EC2 instance metadata lookup of the credential chain is always off (it is not a loopback address).
fn cloud_env(moto: Option<&Moto>) -> Vec<(&'static str, String)> {
    let mut env = match moto {
        Some(moto) => moto.env(),
        None => vec![
            ("AWS_ENDPOINT_URL", NO_CLOUD_ENDPOINT.to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ],
    };
    env.push(("AWS_EC2_METADATA_DISABLED", "true".to_string()));
    env
}

impl World {
    /// Starts (or connects to) the management cluster, installs the kubezero CRDs and creates a fresh
    /// namespace `kz-e2e-<random>`.
    pub async fn start() -> Result<World, WorldError> {
        Self::start_inner(None, cloud_env(None), ManagerRbac::shipped()?).await
    }

    /// Like [`World::start`], with the managers running under `rbac` instead of the shipped RBAC
    /// (e.g. [`ManagerRbac::without_rule`], to see a manager refused).
    pub async fn start_with_rbac(rbac: ManagerRbac) -> Result<World, WorldError> {
        Self::start_inner(None, cloud_env(None), rbac).await
    }

    /// Like [`World::start`], with `moto` as the cloud of the emulated world: a [`NodeSimulator`]
    /// registers a Node in a cluster's workload emulator for each of its running instances (tag
    /// `kubernetes.io/cluster/<cluster>=owned`). Against a real cluster the moto is not used here.
    pub async fn start_with_cloud(moto: &Moto) -> Result<World, WorldError> {
        Self::start_inner(Some(moto), cloud_env(Some(moto)), ManagerRbac::shipped()?).await
    }

    /// Like [`World::start_with_cloud`], but the provider manager's AWS calls go to `endpoint_url`
    /// (e.g. a [`crate::cloud::FaultProxy`] in front of `moto`) instead of moto itself; the node
    /// simulator still reads moto directly.
    pub async fn start_with_cloud_via(moto: &Moto, endpoint_url: &str) -> Result<World, WorldError> {
        let mut env = cloud_env(Some(moto));
        for (name, value) in &mut env {
            if *name == "AWS_ENDPOINT_URL" {
                *value = endpoint_url.to_owned();
            }
        }
        Self::start_inner(Some(moto), env, ManagerRbac::shipped()?).await
    }

    async fn start_inner(
        cloud: Option<&Moto>,
        cloud_env: Vec<(&'static str, String)>,
        manager_rbac: ManagerRbac,
    ) -> Result<World, WorldError> {
        let directory = std::env::temp_dir().join(format!("kubezero-world-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&directory).map_err(|source| WorldError::Io {
            path: directory.display().to_string(),
            source,
        })?;
        let kubeconfig = directory.join("kubeconfig");
        let address = workload_address()?;
        let (client, backend, kubeconfig) = match std::env::var(E2E_KUBECONFIG) {
            Ok(path) if !path.is_empty() => (real_client(&path).await?, Backend::Real, PathBuf::from(path)),
            _ => {
                let apiserver = ApiServer::start()
                    .await
                    .map_err(|e| WorldError::Emulator(e.to_string()))?;
                apiserver
                    .write_kubeconfig(&kubeconfig)
                    .map_err(|e| WorldError::Emulator(e.to_string()))?;
                let client = apiserver
                    .client()
                    .map_err(|e| WorldError::Emulator(e.to_string()))?;
                CapiCore::install(client.clone())
                    .await
                    .map_err(|e| WorldError::Emulator(e.to_string()))?;
                rbac::install_core_aggregation(&client).await?;
                // The stand-in connects to workload clusters through `<cluster>-kubeconfig`, like
                // core's ClusterCache (§3, §6). It mints none: the Secret of a Cluster that was not
                // prepared (the demo, benchmarks) is written by the workload emulators once the
                // infrastructure is provisioned. The `mgmt-cluster` binary runs it minting, as
                // core does, which the prepared Secrets must win against.
                let options = CapiCoreOptions {
                    workload_clusters: Some(std::sync::Arc::new(KubeconfigSecretClusters::new(
                        client.clone(),
                    ))),
                    kubeconfig: false,
                    ..CapiCoreOptions::default()
                };
                let capi = CapiCore::start(client.clone(), options);
                (
                    client,
                    Backend::Emulated {
                        _capi: capi,
                        _apiserver: apiserver,
                    },
                    kubeconfig,
                )
            }
        };
        // Both modes: the workload clusters are emulators here, published through the kubeconfig
        // Secrets written before their Clusters exist, and moto instances become their Nodes.
        let publication = match backend {
            Backend::Emulated { .. } => Publication::PreparedOrWhenProvisioned,
            // A real core writes the Secret of a Cluster that was not prepared.
            Backend::Real => Publication::Prepared,
        };
        let options = WorkloadOptions { address, publication };
        let emulators = WorkloadEmulators::start_with(client.clone(), options);
        let nodes = cloud.map(|moto| {
            let source = MotoInstances::in_cluster_regions(moto, client.clone());
            NodeSimulator::start(&emulators, std::sync::Arc::new(source))
        });
        let preparer = emulators.preparer();
        let workloads = Workloads {
            _nodes: nodes,
            _emulators: emulators,
        };
        install_kubezero_crds(&client).await?;
        let namespace = format!("kz-e2e-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .map_err(|source| WorldError::Kube {
                action: format!("create namespace {namespace}"),
                source,
            })?;
        let mut world = World {
            client,
            namespace,
            directory,
            kubeconfig,
            manager_kubeconfigs: Vec::new(),
            owned: Vec::new(),
            managers: Vec::new(),
            preparer,
            _workloads: workloads,
            backend,
            cloud_env,
        };
        world.install_manager_rbac(&manager_rbac).await?;
        Ok(world)
    }

    /// Applies the managers' RBAC for this world and writes each manager a kubeconfig with a token
    /// of its ServiceAccount.
    async fn install_manager_rbac(&mut self, manager_rbac: &ManagerRbac) -> Result<(), WorldError> {
        self.owned = rbac::install(&self.client, &self.namespace, manager_rbac).await?;
        for name in ["kubezero-provider", "kubezero-bootstrap"] {
            let account = manager_rbac
                .service_account(name)
                .ok_or_else(|| WorldError::Rbac {
                    path: name.into(),
                    message: "no ServiceAccount".into(),
                })?;
            let token = rbac::mint_token(
                &self.client,
                &self.namespace,
                account,
                rbac::MANAGER_TOKEN_SECONDS,
            )
            .await?;
            let text = rbac::token_kubeconfig(&self.kubeconfig, &token, &self.namespace)?;
            let path = self.directory.join(format!("kubeconfig-{name}"));
            std::fs::write(&path, text).map_err(|source| WorldError::Io {
                path: path.display().to_string(),
                source,
            })?;
            self.manager_kubeconfigs.push((name.to_owned(), path));
        }
        Ok(())
    }

    /// A client acting as ServiceAccount `namespace/name` with a token valid for 10 minutes (the
    /// TokenRequest minimum), for tests that check what an identity may do.
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Result<Client, WorldError> {
        let token = rbac::mint_token(&self.client, namespace, name, 600).await?;
        let text = rbac::token_kubeconfig(&self.kubeconfig, &token, namespace)?;
        let error = |message: String| WorldError::Kubeconfig {
            path: format!("token kubeconfig of {namespace}/{name}"),
            message,
        };
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).map_err(|e| error(e.to_string()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| error(e.to_string()))?;
        Client::try_from(config).map_err(|e| error(e.to_string()))
    }

    /// A client of the management cluster.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The test's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The client and namespace, for a test body running in its own task.
    pub fn view(&self) -> WorldView {
        WorldView {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            preparer: self.preparer.clone(),
            metrics: self
                .managers
                .iter()
                .map(|manager| (manager.name.clone(), manager.metrics))
                .collect(),
        }
    }

    /// Prepares the workload cluster of Cluster `name` in the test's namespace; call it before
    /// creating the Cluster. It starts the cluster's workload emulator and writes
    /// `<name>-kubeconfig` as core would (type `cluster.x-k8s.io/secret`, label
    /// `cluster.x-k8s.io/cluster-name`, key `value`; the owner reference follows once the Cluster
    /// exists). Core, the stand-in or a real one, then mints no kubeconfig of its own and connects
    /// through this one; Nodes registered there (by the node simulator, or by the test) give the
    /// Machines their `nodeRef`s. Returns the emulator's URL. Against a real cluster a Cluster
    /// created without it gets no workload cluster (core writes a kubeconfig naming the
    /// unreachable endpoint); the emulated world then publishes one once the infrastructure is
    /// provisioned, for tools like the demo — suites prepare every Cluster.
    pub async fn prepare_cluster(&self, name: &str) -> Result<String, WorldError> {
        prepare(&self.preparer, &self.namespace, name).await
    }

    /// True when the world runs on the emulator and the CAPI stand-in.
    pub fn is_emulated(&self) -> bool {
        matches!(self.backend, Backend::Emulated { .. })
    }

    /// Starts both managers as processes watching only this world's namespace, each as its own
    /// ServiceAccount (see [`rbac`]), with leader election on a Lease in that namespace.
    pub fn start_managers(&mut self) -> Result<(), WorldError> {
        self.start_managers_with(&[])
    }

    /// [`World::start_managers`] with extra `run` flags: `(binary, flag)` pairs such as
    /// `("kubezero-bootstrap", "--bootstrap-token-ttl=30s")`.
    pub fn start_managers_with(&mut self, extra_flags: &[(&str, &str)]) -> Result<(), WorldError> {
        for name in ["kubezero-provider", "kubezero-bootstrap"] {
            let flags: Vec<&str> = extra_flags
                .iter()
                .filter(|(binary, _)| *binary == name)
                .map(|(_, flag)| *flag)
                .collect();
            let process = self.spawn_manager(name, &flags, false)?;
            self.managers.push(process);
        }
        Ok(())
    }

    /// The process id of the running manager `name` (`kubezero-provider` / `kubezero-bootstrap`).
    pub fn manager_pid(&self, name: &str) -> Option<u32> {
        self.managers
            .iter()
            .find(|manager| manager.name == name)
            .map(|manager| manager.child.id())
    }

    /// Kills the running manager `name` with SIGKILL (through its own child handle: only the process
    /// this world started) and reaps it; returns the PID it had. The manager stays known to the
    /// world, so [`World::restart_manager`] starts it again with the same flags.
    pub fn kill_manager(&mut self, name: &str) -> Result<u32, WorldError> {
        let manager = self
            .managers
            .iter_mut()
            .find(|manager| manager.name == name)
            .ok_or_else(|| WorldError::Manager {
                binary: name.into(),
                message: "not started in this world".into(),
            })?;
        let pid = manager.child.id();
        if !matches!(manager.child.try_wait(), Ok(Some(_))) {
            // `Child::kill` is SIGKILL on Unix.
            manager.child.kill().map_err(|error| WorldError::Manager {
                binary: name.into(),
                message: format!("SIGKILL to {pid}: {error}"),
            })?;
        }
        let _ = manager.child.wait();
        Ok(pid)
    }

    /// Starts manager `name` again with the flags it was first started with, its log appended to
    /// the previous one; a still-running instance is stopped first (SIGTERM, then SIGKILL). Returns
    /// the new PID.
    pub fn restart_manager(&mut self, name: &str) -> Result<u32, WorldError> {
        let index = self
            .managers
            .iter()
            .position(|manager| manager.name == name)
            .ok_or_else(|| WorldError::Manager {
                binary: name.into(),
                message: "not started in this world".into(),
            })?;
        stop_child(&mut self.managers[index].child);
        let flags = self.managers[index].flags.clone();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let process = self.spawn_manager(name, &flags, true)?;
        let pid = process.child.id();
        self.managers[index] = process;
        Ok(pid)
    }

    /// Whether manager `name` is running (started, not exited).
    pub fn manager_running(&mut self, name: &str) -> bool {
        self.managers
            .iter_mut()
            .find(|manager| manager.name == name)
            .is_some_and(|manager| matches!(manager.child.try_wait(), Ok(None)))
    }

    /// What manager `name` logged so far (empty before it started).
    pub fn manager_log(&self, name: &str) -> String {
        self.managers
            .iter()
            .find(|manager| manager.name == name)
            .and_then(|manager| std::fs::read_to_string(&manager.log).ok())
            .unwrap_or_default()
    }

    /// Stops the managers (SIGTERM) and returns their logs, for a failing test's message.
    pub fn stop_managers(&mut self) -> String {
        let mut logs = String::new();
        for mut manager in self.managers.drain(..) {
            stop_child(&mut manager.child);
            let text = std::fs::read_to_string(&manager.log).unwrap_or_default();
            logs.push_str(&format!("--- {} ---\n{text}\n", manager.name));
        }
        logs
    }

    fn spawn_manager(
        &self,
        name: &str,
        extra_flags: &[&str],
        append_log: bool,
    ) -> Result<ManagerProcess, WorldError> {
        let binary = manager_binary(name)?;
        let kubeconfig = self
            .manager_kubeconfigs
            .iter()
            .find(|(manager, _)| manager == name)
            .map(|(_, path)| path.clone())
            .ok_or_else(|| WorldError::Manager {
                binary: name.into(),
                message: "no kubeconfig for its ServiceAccount".into(),
            })?;
        let log = self.directory.join(format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append_log)
            .truncate(!append_log)
            .open(&log);
        let log_file = log_file.map_err(|source| WorldError::Io {
            path: log.display().to_string(),
            source,
        })?;
        let port = |offset| {
            free_port()
                .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                .ok_or(offset)
        };
        let (metrics, health) = match (port(0), port(1)) {
            (Ok(metrics), Ok(health)) => (metrics, health),
            _ => {
                return Err(WorldError::Manager {
                    binary: name.into(),
                    message: "no free port".into(),
                });
            }
        };
        let child = Command::new(&binary)
            .arg("run")
            .arg(format!("--namespace={}", self.namespace))
            .arg("--leader-elect")
            .arg(format!("--leader-election-namespace={}", self.namespace))
            .arg(format!("--metrics-bind-address={metrics}"))
            .arg(format!("--health-probe-bind-address={health}"))
            .args(extra_flags)
            .envs(self.cloud_env.iter().map(|(name, value)| (*name, value.as_str())))
            .env("KUBECONFIG", &kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("KUBEZERO_E2E_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|error| WorldError::Manager {
                binary: name.into(),
                message: error.to_string(),
            })?;
        Ok(ManagerProcess {
            name: name.to_string(),
            child,
            log,
            metrics,
            flags: extra_flags.iter().map(|flag| (*flag).to_owned()).collect(),
        })
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.managers.clear();
        if !self.is_emulated() {
            // A real cluster outlives the test: remove what it created, without waiting.
            let client = self.client.clone();
            let namespace = self.namespace.clone();
            let owned = std::mem::take(&mut self.owned);
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    for object in owned {
                        let _ = Api::<kube::api::DynamicObject>::all_with(client.clone(), &object.resource)
                            .delete(&object.name, &DeleteParams::default())
                            .await;
                    }
                    let _ = Api::<Namespace>::all(client)
                        .delete(&namespace, &DeleteParams::default())
                        .await;
                });
            }
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

async fn real_client(path: &str) -> Result<Client, WorldError> {
    let error = |message: String| WorldError::Kubeconfig {
        path: path.to_string(),
        message,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| error(e.to_string()))?;
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| error(e.to_string()))?;
    Client::try_from(config).map_err(|e| error(e.to_string()))
}

/// Waits (at most 30 s) until CRD `name` is established.
pub async fn crd_established(client: &Client, name: &str) -> Result<(), WorldError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let established = kube::runtime::wait::await_condition(
        api,
        name,
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .map_err(|_| WorldError::Emulator(format!("CRD {name} not established within 30 s")))?
        .map_err(|error| WorldError::Emulator(format!("waiting for CRD {name}: {error}")))?;
    Ok(())
}

/// Applies the kubezero CRDs (server-side, forced) and waits until they are established.
async fn install_kubezero_crds(client: &Client) -> Result<(), WorldError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crds = crate::validation::kubezero_crds();
    for crd in &crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("kubezero-e2e").force(),
            &Patch::Apply(crd),
        )
        .await
        .map_err(|source| WorldError::Kube {
            action: format!("apply CRD {name}"),
            source,
        })?;
    }
    for crd in &crds {
        crd_established(client, &crd.metadata.name.clone().unwrap_or_default()).await?;
    }
    Ok(())
}

/// The manager binary next to the test executables (`target/<profile>/`), or in `KUBEZERO_BIN_DIR`.
pub fn manager_binary(name: &str) -> Result<PathBuf, WorldError> {
    // Test binaries live in `target/<profile>/deps/`, other binaries (the demo) in `target/<profile>/`.
    let candidates: Vec<PathBuf> = match std::env::var("KUBEZERO_BIN_DIR") {
        Ok(dir) if !dir.is_empty() => vec![PathBuf::from(dir)],
        _ => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .map(|dir| {
                [Some(dir.clone()), dir.parent().map(Path::to_path_buf)]
                    .into_iter()
                    .flatten()
                    .collect()
            })
            .unwrap_or_default(),
    };
    let found = candidates
        .iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    found.ok_or_else(|| WorldError::Manager {
        binary: name.into(),
        message: format!(
            "{name} is missing in {}: run `cargo build --workspace --all-targets`",
            candidates
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    })
}

fn free_port() -> Option<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()
        .map(|address| address.port())
}
