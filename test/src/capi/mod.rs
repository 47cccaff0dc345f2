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
//! Triggers: the controllers watch the CAPI kinds (Machines wake their Cluster and MachineSet,
//! MachineSets their MachineDeployment, `<cluster>-ca`/`<cluster>-kubeconfig` Secrets their Cluster).
//! Provider objects are of kinds only known at run time: InfraMachine and BootstrapConfig kinds are
//! watched from the first time the Machine reconciler meets them and wake their owner Machine
//! (core's external tracker); the InfraCluster is polled every [`CapiCoreOptions::poll_interval`]
//! while the Cluster waits on it. A Machine waiting for its Node polls the workload cluster's Node
//! index, less often as the Machine ages (core watches Nodes through its cluster cache).

mod cluster;
mod crds;
mod kubeconfig;
mod machine;
mod machinedeployment;
mod machineset;
mod refs;
mod templates;
mod tracker;
mod util;

use std::fmt;
use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
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

/// Shared state of the controllers.
pub(crate) struct Ctx {
    pub(crate) client: Client,
    pub(crate) options: CapiCoreOptions,
    /// Every Machine, as the Machine controller's watch last saw it (core's cached client).
    pub(crate) machines: Store<DynamicObject>,
    /// Machines MachineSets created that [`Ctx::machines`] does not show yet.
    pub(crate) expectations: machineset::Expectations,
    pub(crate) nodes: NodeIndex,
    /// Watches of InfraMachine and BootstrapConfig kinds, waking their Machines.
    pub(crate) machine_externals: tracker::ExternalTracker,
    resolved: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, ApiResource)>>,
}

/// Node names by `spec.providerID` of each workload cluster, listed at most once per poll interval:
/// core reads Nodes from an informer cache indexed by providerID; polling one shared list keeps the
/// stand-in's cost per Machine constant however many Machines wait for their Node.
pub(crate) struct NodeIndex {
    max_age: Duration,
    clusters: tokio::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Arc<ProviderIds>)>>,
}

/// Node names by `spec.providerID`.
pub(crate) type ProviderIds = std::collections::HashMap<String, Vec<String>>;

impl NodeIndex {
    fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            clusters: Default::default(),
        }
    }

    /// The index of cluster `namespace/cluster` (whose workload API `client` serves), at most
    /// `max_age` old.
    pub(crate) async fn of(
        &self,
        namespace: &str,
        cluster: &str,
        client: &Client,
    ) -> Result<Arc<ProviderIds>, Error> {
        let mut clusters = self.clusters.lock().await;
        let key = format!("{namespace}/{cluster}");
        if let Some((at, index)) = clusters.get(&key)
            && at.elapsed() < self.max_age
        {
            return Ok(index.clone());
        }
        let mut index = ProviderIds::new();
        for node in Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items
        {
            if let Some(provider_id) = node.spec.as_ref().and_then(|s| s.provider_id.clone()) {
                index.entry(provider_id).or_default().push(node.name_any());
            }
        }
        let index = Arc::new(index);
        clusters.insert(key, (std::time::Instant::now(), index.clone()));
        Ok(index)
    }
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

/// True when reconciliation of objects belonging to `cluster` is paused: `spec.paused` or the
/// `cluster.x-k8s.io/paused` annotation (§1 "Pausing").
pub(crate) fn cluster_paused(cluster: &DynamicObject) -> bool {
    util::bool_at(&cluster.data, "spec.paused") || util::has_paused_annotation(cluster)
}

/// The running stand-in; its controllers stop when this is dropped or [`CapiCore::stop`]ped.
pub struct CapiCore {
    tasks: Vec<JoinHandle<()>>,
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
        let cluster_ar = CapiKind::Cluster.api_resource();
        let machine_ar = CapiKind::Machine.api_resource();
        let (machine_externals, externals_changed) =
            tracker::ExternalTracker::new(client.clone(), machine_ar.clone());
        let ms_ar = CapiKind::MachineSet.api_resource();
        let md_ar = CapiKind::MachineDeployment.api_resource();
        let all = |ar: &ApiResource| Api::<DynamicObject>::all_with(client.clone(), ar);
        let wc = watcher::Config::default;
        let machine_controller = Controller::new_with(all(&machine_ar), wc(), machine_ar.clone());
        let ctx = Arc::new(Ctx {
            client: client.clone(),
            nodes: NodeIndex::new(options.poll_interval),
            options,
            machines: machine_controller.store(),
            expectations: Default::default(),
            machine_externals,
            resolved: Default::default(),
        });

        // Any Machine/MachineSet/MachineDeployment wakes its Cluster (ControlPlaneInitialized §6,
        // deletion waits §2); Secrets `<cluster>-ca`/`<cluster>-kubeconfig` wake theirs (§6).
        let by_cluster_name = {
            let cluster_ar = cluster_ar.clone();
            move |obj: DynamicObject| {
                let namespace = obj.namespace().unwrap_or_default();
                util::str_at(&obj.data, "spec.clusterName")
                    .map(|name| ObjectRef::new_with(name, cluster_ar.clone()).within(&namespace))
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
        let clusters = Controller::new_with(all(&cluster_ar), wc(), cluster_ar.clone())
            .watches_with(
                all(&machine_ar),
                machine_ar.clone(),
                wc(),
                by_cluster_name.clone(),
            )
            .watches_with(all(&ms_ar), ms_ar.clone(), wc(), by_cluster_name.clone())
            .watches_with(all(&md_ar), md_ar.clone(), wc(), by_cluster_name)
            .watches(Api::<Secret>::all(client.clone()), wc(), secret_to_cluster)
            .run(cluster::reconcile, error_policy, ctx.clone())
            .for_each(|_| ready(()));

        let machines = machine_controller
            .reconcile_on(externals_changed)
            .run(machine::reconcile, error_policy, ctx.clone())
            .for_each(|_| ready(()));

        let machinesets = Controller::new_with(all(&ms_ar), wc(), ms_ar.clone())
            .owns_with(all(&machine_ar), machine_ar.clone(), wc())
            .run(machineset::reconcile, error_policy, ctx.clone())
            .for_each(|_| ready(()));

        let machinedeployments = Controller::new_with(all(&md_ar), wc(), md_ar.clone())
            .owns_with(all(&ms_ar), ms_ar.clone(), wc())
            .run(machinedeployment::reconcile, error_policy, ctx.clone())
            .for_each(|_| ready(()));

        CapiCore {
            tasks: vec![
                tokio::spawn(clusters),
                tokio::spawn(machines),
                tokio::spawn(machinesets),
                tokio::spawn(machinedeployments),
            ],
        }
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
