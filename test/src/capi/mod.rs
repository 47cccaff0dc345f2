//! A stand-in for Cluster API core (`cluster.x-k8s.io/v1beta2`): the Cluster, Machine, MachineSet and
//! MachineDeployment controllers' behaviours that providers depend on, as described in
//! `capi-contract.md` §1–§6 (each controller module cites the sections it reproduces).
//!
//! It talks to the API only through kube-rs (`Api<DynamicObject>`, kube-runtime `Controller`s), so it
//! behaves the same against the emulator and against a real API server. Writes are plain updates
//! carrying the resourceVersion read (a stale read gets a 409 and the object is reconciled again) with
//! field manager [`FIELD_MANAGER`].
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), kubezero_test::capi::Error> {
//! use kubezero_test::capi::{CapiCore, CapiCoreOptions};
//! CapiCore::install(client.clone()).await?;
//! let core = CapiCore::start(client, CapiCoreOptions::default());
//! // ... create Clusters, MachineDeployments ...
//! core.stop();
//! # Ok(()) }
//! ```
//!
//! Triggers, as core's controllers have them: a Machine wakes its MachineSet (which owns it), a
//! MachineSet its MachineDeployment, a MachineDeployment its Cluster; a control-plane Machine wakes
//! its Cluster too (`ControlPlaneInitialized`), and so do `<cluster>-ca`/`<cluster>-kubeconfig`
//! Secrets (§6). Provider objects are of kinds only known at run time: InfraMachine and
//! BootstrapConfig kinds are watched from the first time the Machine reconciler meets them and wake
//! their owner Machine, InfraCluster kinds likewise wake their Cluster (core's external tracker). A
//! Machine waiting for its Node polls the workload cluster's Node index, less often as the Machine
//! ages (core watches Nodes through its cluster cache).
//!
//! Status, as core writes it (each controller module says what it computes): every reconcile
//! recomputes the whole v1beta2 status — replica counters and conditions whose messages aggregate
//! the Machines' own (`* Machines a, b, c, ... (17 more): ...`) — and writes it when anything in it
//! differs, like core's patch helper. A Machine's progress (bootstrap data, instance, Node, Ready,
//! Available) thus rewrites its MachineSet, its MachineDeployment and its Cluster one after the
//! other, nearly every time: a provider that reacts to every Cluster update is woken that often,
//! here as against real core (which is what the stand-in must show, see docs/testing.md).
//!
//! [`CapiCoreTuning`] slows the stand-in's Machine cache down, for tests of what a loaded core does.

mod cache;
mod cluster;
mod cluster_status;
mod conditions;
mod crds;
mod expectations;
mod kubeconfig;
mod machine;
mod machine_status;
mod machinedeployment;
mod machineset;
mod paused;
mod refs;
mod replica_status;
mod templates;
mod tracker;
mod util;

use std::fmt;
use std::future::ready;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;

pub use crds::crds;
pub use kubeconfig::{KubeconfigSecretClusters, kubeconfig_secret};
pub use refs::{crd_name, plural, resolve, resource_from_crd};

/// Field manager of every write the stand-in makes.
pub const FIELD_MANAGER: &str = "capi-stand-in";
/// API group of the CAPI core kinds.
pub const CAPI_GROUP: &str = "cluster.x-k8s.io";
/// apiVersion of the CAPI core kinds the stand-in serves and writes into owner references.
pub const CAPI_API_VERSION: &str = "cluster.x-k8s.io/v1beta2";
/// Finalizer on Clusters until their descendants and InfraCluster are gone (§2).
pub const CLUSTER_FINALIZER: &str = "cluster.cluster.x-k8s.io";
/// Finalizer on Machines until their InfraMachine and BootstrapConfig are gone (§5).
pub const MACHINE_FINALIZER: &str = "machine.cluster.x-k8s.io";
/// Label naming the owning Cluster.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// Label (presence) on control-plane Machines (§3, §6).
pub const CONTROL_PLANE_LABEL: &str = "cluster.x-k8s.io/control-plane";
/// Label naming the MachineSet a Machine (and its clones) belongs to (§4.1).
pub const SET_NAME_LABEL: &str = "cluster.x-k8s.io/set-name";
/// Label naming the MachineDeployment a MachineSet/Machine belongs to (§4.1).
pub const DEPLOYMENT_NAME_LABEL: &str = "cluster.x-k8s.io/deployment-name";
/// Label carrying the hash of a MachineDeployment's `spec.template` on its MachineSets and Machines.
pub const MACHINE_TEMPLATE_HASH_LABEL: &str = "machine-template-hash";
/// Annotation (any value) that makes a Machine the preferred scale-down victim (§5).
pub const DELETE_MACHINE_ANNOTATION: &str = "cluster.x-k8s.io/delete-machine";
/// Annotation on clones: name of the template they were cloned from (§4.1).
pub const CLONED_FROM_NAME_ANNOTATION: &str = "cluster.x-k8s.io/cloned-from-name";
/// Annotation on clones: `<Kind>.<group>` of the template they were cloned from (§4.1).
pub const CLONED_FROM_GROUPKIND_ANNOTATION: &str = "cluster.x-k8s.io/cloned-from-groupkind";
/// Kubeconfig Secret type and the type of other CAPI-generated Secrets (§6).
pub const CLUSTER_SECRET_TYPE: &str = "cluster.x-k8s.io/secret";

/// Errors of the stand-in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error (a 409 Conflict is retried by the controllers).
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A provider CRD is missing or lacks a usable contract label (§1).
    #[error("contract: {0}")]
    Contract(String),
    /// An object does not have the shape the contract requires.
    #[error("invalid object: {0}")]
    Invalid(String),
    /// Minting the kubeconfig client certificate failed (§6).
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// Waiting for the CRDs to be served timed out.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl Error {
    /// True for a 409 Conflict (stale resourceVersion or AlreadyExists).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(status)) if status.code == 409)
    }
}

/// Access to workload clusters, for the parts of core that talk to them (Machine `nodeRef` by provider
/// ID and Node deletion, §3 step 3 and §5 step 7). The stand-in skips those steps for a cluster while
/// this returns `None`.
pub trait WorkloadClusters: Send + Sync {
    /// A client for the workload cluster `name` in `namespace`, when it is reachable.
    fn client<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Option<Client>>;
}

/// Knobs of the stand-in.
#[derive(Clone)]
pub struct CapiCoreOptions {
    /// Requeue interval while waiting on another object (provider status, deletions). Default 500 ms.
    pub poll_interval: Duration,
    /// Requeue interval of converged objects. Default 10 s.
    pub resync_interval: Duration,
    /// Workload-cluster access for `nodeRef` linking and Node deletion; `None` skips those steps.
    pub workload_clusters: Option<Arc<dyn WorkloadClusters>>,
    /// Write `<cluster>-kubeconfig` from `<cluster>-ca` (§6). Default true.
    pub kubeconfig: bool,
}

impl Default for CapiCoreOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(500),
            resync_interval: Duration::from_secs(10),
            workload_clusters: None,
            kubeconfig: true,
        }
    }
}

impl fmt::Debug for CapiCoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapiCoreOptions")
            .field("poll_interval", &self.poll_interval)
            .field("resync_interval", &self.resync_interval)
            .field("workload_clusters", &self.workload_clusters.is_some())
            .field("kubeconfig", &self.kubeconfig)
            .finish()
    }
}

/// The CAPI core kinds served by the stand-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapiKind {
    /// `Cluster`.
    Cluster,
    /// `Machine`.
    Machine,
    /// `MachineSet`.
    MachineSet,
    /// `MachineDeployment`.
    MachineDeployment,
}

impl CapiKind {
    fn index(self) -> usize {
        match self {
            CapiKind::Cluster => 0,
            CapiKind::Machine => 1,
            CapiKind::MachineSet => 2,
            CapiKind::MachineDeployment => 3,
        }
    }

    /// The kind's name.
    pub fn kind(self) -> &'static str {
        match self {
            CapiKind::Cluster => "Cluster",
            CapiKind::Machine => "Machine",
            CapiKind::MachineSet => "MachineSet",
            CapiKind::MachineDeployment => "MachineDeployment",
        }
    }

    /// The `cluster.x-k8s.io/v1beta2` resource of the kind, for `Api<DynamicObject>`.
    pub fn api_resource(self) -> ApiResource {
        let kind = self.kind();
        ApiResource {
            group: CAPI_GROUP.to_string(),
            version: "v1beta2".to_string(),
            api_version: CAPI_API_VERSION.to_string(),
            kind: kind.to_string(),
            plural: plural(kind),
        }
    }

    /// A namespaced `Api<DynamicObject>` for the kind.
    pub fn api(self, client: Client, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client, namespace, &self.api_resource())
    }
}

/// Knobs that make the stand-in behave like a loaded core, for tests; [`CapiCore::start`] uses
/// the defaults.
#[derive(Clone, Debug)]
pub struct CapiCoreTuning {
    /// Every Machine watch event reaches the stand-in's Machine cache (and the Machine controller)
    /// this much later. Default zero.
    pub machine_cache_lag: Duration,
    /// How long a MachineSet trusts that its cache will show its own creates and deletes before
    /// it lists its Machines from the API server. Default 10 s (core's wait after each create).
    pub expectation_timeout: Duration,
}

impl Default for CapiCoreTuning {
    fn default() -> Self {
        Self {
            machine_cache_lag: Duration::ZERO,
            expectation_timeout: Duration::from_secs(10),
        }
    }
}

/// Shared state of the controllers.
pub(crate) struct Ctx {
    pub(crate) client: Client,
    pub(crate) options: CapiCoreOptions,
    pub(crate) tuning: CapiCoreTuning,
    /// Every Machine, as the Machine controller's watch last saw it (core's cached client).
    pub(crate) machines: Store<DynamicObject>,
    /// True once [`Ctx::machines`] holds the first full list.
    pub(crate) machines_synced: Arc<AtomicBool>,
    /// Every MachineSet, as the MachineSet controller's watch last saw it.
    pub(crate) machinesets: Store<DynamicObject>,
    /// Every MachineDeployment, as the MachineDeployment controller's watch last saw it.
    pub(crate) machinedeployments: Store<DynamicObject>,
    /// Creates and deletes of MachineSets that [`Ctx::machines`] does not show yet.
    pub(crate) expectations: expectations::Expectations,
    pub(crate) nodes: cache::NodeIndex,
    workloads: cache::Workloads,
    probes: cache::Probes,
    templates: cache::Templates,
    /// Watches of InfraMachine and BootstrapConfig kinds, waking their Machines.
    pub(crate) machine_externals: tracker::ExternalTracker,
    /// Watches of InfraCluster kinds, waking their Clusters.
    pub(crate) cluster_externals: tracker::ExternalTracker,
    resolved: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, ApiResource)>>,
}

impl Ctx {
    pub(crate) fn api(&self, kind: CapiKind, namespace: &str) -> Api<DynamicObject> {
        kind.api(self.client.clone(), namespace)
    }

    /// [`refs::resolve`] through a cache kept for one poll interval (core reads CRDs from its
    /// informer cache); failures are not cached.
    pub(crate) async fn resolve(&self, api_group: &str, kind: &str) -> Result<ApiResource, Error> {
        let key = format!("{kind}.{api_group}");
        if let Some((at, resource)) = self.resolved.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && at.elapsed() < self.options.poll_interval
        {
            return Ok(resource.clone());
        }
        let resource = refs::resolve(&self.client, api_group, kind).await?;
        self.resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (std::time::Instant::now(), resource.clone()));
        Ok(resource)
    }

    /// The client of the workload cluster `namespace/cluster`, `None` while it is unreachable or
    /// the stand-in has no workload access.
    pub(crate) async fn workload(&self, namespace: &str, cluster: &str) -> Option<Client> {
        match &self.options.workload_clusters {
            Some(clusters) if !cluster.is_empty() => {
                self.workloads.client(clusters.as_ref(), namespace, cluster).await
            }
            _ => None,
        }
    }

    /// The health probe of workload cluster `namespace/cluster`; core's cluster cache connects
    /// once the control plane is initialized, and never without workload access.
    pub(crate) async fn probe(
        &self,
        namespace: &str,
        cluster: &str,
        initialized: bool,
    ) -> cluster_status::ProbeState {
        if !initialized || self.options.workload_clusters.is_none() {
            return cluster_status::ProbeState::default();
        }
        let client = self.workload(namespace, cluster).await;
        self.probes.state(namespace, cluster, client).await
    }

    /// True when the template `reference` exists in `namespace` (cached for a poll interval).
    pub(crate) async fn template_exists(&self, namespace: &str, reference: &util::ContractRef) -> bool {
        self.templates.exists(self, namespace, reference).await
    }

    /// The Cluster `name` in `namespace`, if it exists.
    pub(crate) async fn cluster(&self, namespace: &str, name: &str) -> Result<Option<DynamicObject>, Error> {
        if name.is_empty() {
            return Ok(None);
        }
        Ok(self.api(CapiKind::Cluster, namespace).get_opt(name).await?)
    }

    /// Requeue while waiting on something.
    pub(crate) fn wait(&self) -> Action {
        Action::requeue(self.options.poll_interval)
    }

    /// Requeue after convergence.
    pub(crate) fn resync(&self) -> Action {
        Action::requeue(self.options.resync_interval)
    }
}

/// The running stand-in; its controllers stop when this is dropped or [`CapiCore::stop`]ped.
pub struct CapiCore {
    tasks: Vec<JoinHandle<()>>,
    /// Reconciles ended, by kind (in [`CapiKind`] order), successful or not.
    reconciled: Arc<[std::sync::atomic::AtomicU64; 4]>,
}

impl fmt::Debug for CapiCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapiCore")
            .field("controllers", &self.tasks.len())
            .finish()
    }
}

impl CapiCore {
    /// Installs (creates or replaces) the CAPI core CRDs of [`crds`] and waits up to 30 s until each is
    /// served.
    pub async fn install(client: Client) -> Result<(), Error> {
        let crd_api = Api::<CustomResourceDefinition>::all(client.clone());
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PostParams::default()
        };
        for mut crd in crds() {
            match crd_api.get_opt(&crd.name_any()).await? {
                None => {
                    crd_api.create(&params, &crd).await?;
                }
                Some(existing) => {
                    crd.metadata.resource_version = existing.metadata.resource_version;
                    crd_api.replace(&crd.name_any(), &params, &crd).await?;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for kind in [
            CapiKind::Cluster,
            CapiKind::Machine,
            CapiKind::MachineSet,
            CapiKind::MachineDeployment,
        ] {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.api_resource());
            loop {
                match api.list(&ListParams::default().limit(1)).await {
                    Ok(_) => break,
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        return Err(Error::Timeout(format!("{} not served: {e}", kind.kind())));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        Ok(())
    }

    /// Starts the Cluster, Machine, MachineSet and MachineDeployment controllers as tokio tasks.
    pub fn start(client: Client, options: CapiCoreOptions) -> CapiCore {
        Self::start_tuned(client, options, CapiCoreTuning::default())
    }

    /// [`CapiCore::start`] with [`CapiCoreTuning`] knobs.
    pub fn start_tuned(client: Client, options: CapiCoreOptions, tuning: CapiCoreTuning) -> CapiCore {
        let cluster_ar = CapiKind::Cluster.api_resource();
        let machine_ar = CapiKind::Machine.api_resource();
        let (machine_externals, externals_changed) =
            tracker::ExternalTracker::new(client.clone(), machine_ar.clone(), true);
        let (cluster_externals, infra_changed) =
            tracker::ExternalTracker::new(client.clone(), cluster_ar.clone(), false);
        let ms_ar = CapiKind::MachineSet.api_resource();
        let md_ar = CapiKind::MachineDeployment.api_resource();
        let all = |ar: &ApiResource| Api::<DynamicObject>::all_with(client.clone(), ar);
        let wc = watcher::Config::default;
        // The Machine cache, possibly lagging (see `CapiCoreTuning`).
        let machine_writer = reflector::store::Writer::new(machine_ar.clone());
        let machine_store = machine_writer.as_reader();
        // Readiness of the cache, as a flag: awaiting `Store::wait_until_ready` from a reconcile
        // would compete with the Machine controller for the store's single wake-up.
        let machines_synced = Arc::new(AtomicBool::new(false));
        let synced = machines_synced.clone();
        let machine_events = cache::lagged(all(&machine_ar), wc(), tuning.machine_cache_lag)
            .reflect(machine_writer)
            .inspect(move |event| {
                if matches!(event, Ok(watcher::Event::InitDone)) {
                    synced.store(true, Ordering::Release);
                }
            })
            .applied_objects();
        let machine_controller =
            Controller::for_stream_with(machine_events, machine_store.clone(), machine_ar.clone());
        let machineset_controller = Controller::new_with(all(&ms_ar), wc(), ms_ar.clone());
        let machinedeployment_controller = Controller::new_with(all(&md_ar), wc(), md_ar.clone());
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            nodes: cache::NodeIndex::new(options.poll_interval),
            workloads: cache::Workloads::new(options.poll_interval),
            probes: cache::Probes::default(),
            templates: cache::Templates::new(options.poll_interval),
            options,
            tuning,
            machines: machine_store,
            machines_synced,
            machinesets: machineset_controller.store(),
            machinedeployments: machinedeployment_controller.store(),
            expectations: Default::default(),
            machine_externals,
            cluster_externals,
            resolved: Default::default(),
        });

        // Core's Cluster controller watches MachineDeployments (any change) and control-plane
        // Machines (ControlPlaneInitialized, §6); Secrets `<cluster>-ca`/`<cluster>-kubeconfig`
        // wake theirs (§6); the InfraCluster wakes it through `cluster_externals`. Worker Machines
        // reach their Cluster through their MachineSet and MachineDeployment, whose status they change.
        let by_cluster_name = {
            let cluster_ar = cluster_ar.clone();
            move |obj: DynamicObject| {
                let namespace = obj.namespace().unwrap_or_default();
                util::str_at(&obj.data, "spec.clusterName")
                    .map(|name| ObjectRef::new_with(name, cluster_ar.clone()).within(&namespace))
            }
        };
        let control_plane_to_cluster = {
            let by_cluster_name = by_cluster_name.clone();
            move |machine: DynamicObject| {
                if machine.labels().contains_key(CONTROL_PLANE_LABEL) {
                    by_cluster_name(machine)
                } else {
                    None
                }
            }
        };
        let secret_to_cluster = {
            let cluster_ar = cluster_ar.clone();
            move |secret: Secret| {
                let name = secret.name_any();
                let namespace = secret.namespace().unwrap_or_default();
                name.strip_suffix("-ca")
                    .or_else(|| name.strip_suffix("-kubeconfig"))
                    .map(|cluster| ObjectRef::new_with(cluster, cluster_ar.clone()).within(&namespace))
            }
        };
        let reconciled: Arc<[std::sync::atomic::AtomicU64; 4]> = Arc::default();
        let count = |kind: CapiKind| {
            let reconciled = reconciled.clone();
            move |_| {
                reconciled[kind.index()].fetch_add(1, Ordering::Relaxed);
                ready(())
            }
        };
        let clusters = Controller::new_with(all(&cluster_ar), wc(), cluster_ar.clone())
            .watches_with(
                all(&machine_ar),
                machine_ar.clone(),
                wc(),
                control_plane_to_cluster,
            )
            .watches_with(all(&md_ar), md_ar.clone(), wc(), by_cluster_name)
            .watches(Api::<Secret>::all(client.clone()), wc(), secret_to_cluster)
            .reconcile_on(infra_changed)
            .run(cluster::reconcile, error_policy, ctx.clone())
            .for_each(count(CapiKind::Cluster));

        let machines = machine_controller
            .reconcile_on(externals_changed)
            .run(machine::reconcile, error_policy, ctx.clone())
            .for_each(count(CapiKind::Machine));

        let machinesets = machineset_controller
            .owns_with(all(&machine_ar), machine_ar.clone(), wc())
            .run(machineset::reconcile, error_policy, ctx.clone())
            .for_each(count(CapiKind::MachineSet));

        let machinedeployments = machinedeployment_controller
            .owns_with(all(&ms_ar), ms_ar.clone(), wc())
            .run(machinedeployment::reconcile, error_policy, ctx.clone())
            .for_each(count(CapiKind::MachineDeployment));

        CapiCore {
            reconciled,
            tasks: vec![
                tokio::spawn(clusters),
                tokio::spawn(machines),
                tokio::spawn(machinesets),
                tokio::spawn(machinedeployments),
            ],
        }
    }

    /// How many reconciles of `kind` have ended (with success or an error) since the start: a
    /// test that checks that nothing happens waits for a few more instead of sleeping.
    pub fn reconciled(&self, kind: CapiKind) -> u64 {
        self.reconciled[kind.index()].load(Ordering::Relaxed)
    }

    /// Waits until `rounds` more reconciles of `kind` have ended than when called (at most 30 s).
    pub async fn reconcile_rounds(&self, kind: CapiKind, rounds: u64) -> Result<(), Error> {
        let target = self.reconciled(kind) + rounds;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.reconciled(kind) < target {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(format!("{rounds} {} reconciles", kind.kind())));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops the controllers (in-flight reconciles are abandoned; every write is idempotent).
    pub fn stop(self) {}
}

impl Drop for CapiCore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn error_policy(obj: Arc<DynamicObject>, error: &Error, ctx: Arc<Ctx>) -> Action {
    if error.is_conflict() {
        tracing::debug!(object = %obj.name_any(), "capi stand-in: conflict, retrying");
        Action::requeue(Duration::from_millis(50))
    } else {
        tracing::warn!(object = %obj.name_any(), %error, "capi stand-in: reconcile failed");
        Action::requeue(ctx.options.poll_interval)
    }
}
