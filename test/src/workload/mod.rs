//! Workload clusters of the emulated world: one more [`ApiServer`] per workload Cluster, reachable
//! through the `<cluster>-kubeconfig` Secret exactly where Cluster API core would write it
//! (capi-contract.md §6), and a [`NodeSimulator`] that registers a `Node` for every running instance of
//! the cluster in a cloud emulator (the kubelet's and cloud-controller-manager's part, §3 step 3).
//!
//! ```no_run
//! # async fn demo(management: kube::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use kubezero_test::capi::{CapiCore, CapiCoreOptions, KubeconfigSecretClusters};
//! use kubezero_test::cloud::Moto;
//! use kubezero_test::workload::{MotoInstances, NodeSimulator, WorkloadEmulators};
//!
//! let workloads = WorkloadEmulators::start(management.clone());
//! // The stand-in connects through the Secret the emulators write, like core's ClusterCache.
//! let core = CapiCore::start(management.clone(), CapiCoreOptions {
//!     workload_clusters: Some(Arc::new(KubeconfigSecretClusters::new(management.clone()))),
//!     kubeconfig: false,
//!     ..CapiCoreOptions::default()
//! });
//! let moto = Moto::start()?;
//! let nodes = NodeSimulator::start(&workloads, Arc::new(MotoInstances::new(&moto)));
//! # drop((core, nodes)); Ok(()) }
//! ```
//!
//! # Deviations from a real workload cluster
//!
//! - The kubeconfig's server is the workload emulator's `http://127.0.0.1:<port>` rather than
//!   `https://<spec.controlPlaneEndpoint.host>:<port>`: the endpoint the provider reports is not
//!   routable here. It is plain HTTP without a CA or client certificate (user entry `{}`); the names
//!   (cluster `<cluster>`, user `<cluster>-admin`, context `<cluster>-admin@<cluster>`) are core's.
//!   The Secret is written at the moment core would write it (the Cluster reports
//!   `status.initialization.infrastructureProvisioned` and has a valid `spec.controlPlaneEndpoint`),
//!   without waiting for `<cluster>-ca`: no CA signs anything here. The stand-in must then run with
//!   `CapiCoreOptions::kubeconfig = false`.
//! - Only machine-based control planes are emulated (no `spec.controlPlaneRef`: with one, the
//!   control-plane provider owns the Secret). Paused Clusters are left alone, like core does.
//! - A workload emulator lives as long as its Cluster object (it keeps serving while the Cluster is
//!   being deleted, as a real control plane does until its machines are gone) and is dropped when the
//!   Cluster is gone; its state is lost then. A Cluster deleted by `clusterctl move` (annotated
//!   `clusterctl.cluster.x-k8s.io/delete-for-move`) leaves its workload cluster running, as a real
//!   one does: the copy created under the same name takes it over, Nodes and all.
//! - Nodes appear when the cloud emulator reports the instance running (no boot, no kubelet, no
//!   bootstrap token use), with a `Ready=True` condition that never changes; they are deleted when the
//!   instance is terminated or gone. See [`NodeSimulator`].

mod moto;
mod nodes;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::apiserver::ApiServer;
use crate::capi::{CapiKind, WorkloadClusters};

pub use moto::MotoInstances;
pub use nodes::{Instance, InstanceSource, NODE_POLL_INTERVAL, NodeSimulator, SourceError};

/// Field manager of the kubeconfig Secrets the emulators write.
pub const FIELD_MANAGER: &str = "kubezero-workload-emulators";

/// How often every known Cluster is reconciled again, besides watch events (recreates a deleted
/// kubeconfig Secret, retries failed writes).
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Errors of a workload-cluster reconcile (logged and retried; never fatal to the component).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The management or a workload API answered with an error.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A workload emulator did not start.
    #[error("workload emulator: {0}")]
    Emulator(#[from] crate::apiserver::Error),
    /// The kubeconfig could not be rendered.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
}

/// `(namespace, name)` of a Cluster.
type Key = (String, String);

/// Annotation `clusterctl move` puts on the objects it deletes from the source cluster.
pub const DELETE_FOR_MOVE_ANNOTATION: &str = "clusterctl.cluster.x-k8s.io/delete-for-move";

/// One running workload emulator.
struct Running {
    /// The Cluster's uid: a Cluster recreated under the same name gets a fresh emulator, unless the
    /// old one was deleted by a move.
    uid: String,
    /// The Cluster was deleted by `clusterctl move`: its copy takes this emulator over.
    moved: bool,
    server: ApiServer,
    client: Client,
}

/// The emulators, shared between the watch task, the [`NodeSimulator`] and [`WorkloadClusters`] users.
#[derive(Default)]
pub(crate) struct Shared {
    clusters: Mutex<BTreeMap<Key, Running>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Key, Running>> {
        self.clusters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `(namespace, name, client)` of every running emulator.
    pub(crate) fn snapshot(&self) -> Vec<(String, String, Client)> {
        self.lock()
            .iter()
            .map(|((namespace, name), running)| (namespace.clone(), name.clone(), running.client.clone()))
            .collect()
    }
}

/// One [`ApiServer`] per workload Cluster of a management cluster, started when the Cluster's
/// infrastructure is provisioned and its control-plane endpoint is valid, published as
/// `<cluster>-kubeconfig`, and stopped when the Cluster is gone. Runs as a tokio task watching
/// Clusters (every namespace); stops when dropped or [`WorkloadEmulators::stop`]ped.
///
/// It also implements the stand-in's [`WorkloadClusters`] (direct clients, no Secret read), though
/// the world connects the stand-in through [`crate::capi::KubeconfigSecretClusters`] instead, like
/// core's ClusterCache.
pub struct WorkloadEmulators {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl fmt::Debug for WorkloadEmulators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadEmulators")
            .field("clusters", &self.clusters())
            .finish()
    }
}

impl WorkloadEmulators {
    /// Starts watching the Clusters of `management` (the CAPI CRDs must be installed, see
    /// [`crate::capi::CapiCore::install`]; until they are, the watch retries with backoff).
    pub fn start(management: Client) -> WorkloadEmulators {
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(run(shared.clone(), management));
        WorkloadEmulators { shared, task }
    }

    /// `(namespace, name)` of the Clusters with a running workload emulator.
    pub fn clusters(&self) -> Vec<(String, String)> {
        self.shared.lock().keys().cloned().collect()
    }

    /// The URL of the workload emulator of Cluster `namespace/name`, while it runs.
    pub fn url(&self, namespace: &str, name: &str) -> Option<String> {
        let key = (namespace.to_string(), name.to_string());
        self.shared.lock().get(&key).map(|r| r.server.url().to_string())
    }

    /// A client of the workload emulator of Cluster `namespace/name`, while it runs.
    pub fn workload_client(&self, namespace: &str, name: &str) -> Option<Client> {
        let key = (namespace.to_string(), name.to_string());
        self.shared.lock().get(&key).map(|r| r.client.clone())
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Stops the watch and every workload emulator.
    pub fn stop(self) {}
}

impl Drop for WorkloadEmulators {
    fn drop(&mut self) {
        self.task.abort();
        // Dropping the servers cancels their tasks.
        std::mem::take(&mut *self.shared.lock());
    }
}

impl WorkloadClusters for WorkloadEmulators {
    fn client<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Option<Client>> {
        Box::pin(async move { self.workload_client(namespace, name) })
    }
}

/// The watch loop: reconciles a Cluster on each event and every known Cluster every
/// [`RESYNC_INTERVAL`]; drops the emulator of a Cluster that is deleted or missing from a re-list.
async fn run(shared: Arc<Shared>, management: Client) {
    let api = Api::<DynamicObject>::all_with(management.clone(), &CapiKind::Cluster.api_resource());
    let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
    let mut known: BTreeMap<Key, DynamicObject> = BTreeMap::new();
    let mut listing: Option<BTreeSet<Key>> = None;
    let mut resync = tokio::time::interval(RESYNC_INTERVAL);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Err(error)) => tracing::debug!(%error, "workload emulators: watching Clusters"),
                Some(Ok(watcher::Event::Init)) => listing = Some(BTreeSet::new()),
                Some(Ok(watcher::Event::InitApply(cluster))) => {
                    let key = key_of(&cluster);
                    if let Some(listing) = listing.as_mut() {
                        listing.insert(key.clone());
                    }
                    reconcile_logged(&shared, &management, &cluster).await;
                    known.insert(key, cluster);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    let listed = listing.take().unwrap_or_default();
                    let gone: Vec<Key> = known.keys().filter(|k| !listed.contains(*k)).cloned().collect();
                    for key in gone {
                        known.remove(&key);
                        forget(&shared, &key);
                    }
                    let orphans: Vec<Key> = shared
                        .lock()
                        .iter()
                        .filter(|(k, running)| !listed.contains(*k) && !running.moved)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in orphans {
                        forget(&shared, &key);
                    }
                }
                Some(Ok(watcher::Event::Apply(cluster))) => {
                    reconcile_logged(&shared, &management, &cluster).await;
                    known.insert(key_of(&cluster), cluster);
                }
                Some(Ok(watcher::Event::Delete(cluster))) => {
                    let key = key_of(&cluster);
                    known.remove(&key);
                    if cluster.annotations().contains_key(DELETE_FOR_MOVE_ANNOTATION) {
                        if let Some(running) = shared.lock().get_mut(&key) {
                            running.moved = true;
                        }
                    } else {
                        forget(&shared, &key);
                    }
                }
            },
            _ = resync.tick() => {
                let clusters: Vec<DynamicObject> = known.values().cloned().collect();
                for cluster in &clusters {
                    reconcile_logged(&shared, &management, cluster).await;
                }
            }
        }
    }
}

fn key_of(cluster: &DynamicObject) -> Key {
    (cluster.namespace().unwrap_or_default(), cluster.name_any())
}

/// Stops the emulator of `key`, if any.
fn forget(shared: &Shared, key: &Key) {
    let removed = shared.lock().remove(key);
    if removed.is_some() {
        tracing::debug!(namespace = %key.0, cluster = %key.1, "workload emulator stopped");
    }
}

async fn reconcile_logged(shared: &Shared, management: &Client, cluster: &DynamicObject) {
    if let Err(error) = reconcile(shared, management, cluster).await {
        tracing::warn!(cluster = %cluster.name_any(), %error, "workload emulators: reconcile failed");
    }
}

/// Starts the Cluster's emulator once core would write its kubeconfig (§6), and makes sure the
/// `<cluster>-kubeconfig` Secret exists.
async fn reconcile(shared: &Shared, management: &Client, cluster: &DynamicObject) -> Result<(), Error> {
    let key = key_of(cluster);
    let uid = cluster.metadata.uid.clone().unwrap_or_default();
    let replaced = {
        let mut clusters = shared.lock();
        match clusters.get_mut(&key) {
            Some(running) if running.uid != uid && running.moved => {
                // The copy `clusterctl move` made: the same workload cluster.
                running.uid = uid.clone();
                running.moved = false;
                false
            }
            Some(running) => running.uid != uid,
            None => false,
        }
    };
    if replaced {
        // The Cluster was deleted and recreated between two events.
        forget(shared, &key);
    }
    if !kubeconfig_due(cluster) {
        return Ok(());
    }
    let running_url = shared
        .lock()
        .get(&key)
        .map(|running| running.server.url().to_string());
    let url = match running_url {
        Some(url) => url,
        None => {
            let server = ApiServer::start().await?;
            let client = server.client()?;
            let url = server.url().to_string();
            tracing::debug!(namespace = %key.0, cluster = %key.1, %url, "workload emulator started");
            shared.lock().insert(
                key.clone(),
                Running {
                    uid,
                    moved: false,
                    server,
                    client,
                },
            );
            url
        }
    };
    ensure_kubeconfig_secret(management, cluster, &url).await
}

/// Core's condition for `reconcileKubeconfig` (§6): not paused, not being deleted, no
/// `spec.controlPlaneRef`, `status.initialization.infrastructureProvisioned` and a valid
/// `spec.controlPlaneEndpoint` (host non-empty, port > 0).
fn kubeconfig_due(cluster: &DynamicObject) -> bool {
    let data = &cluster.data;
    let paused = data.pointer("/spec/paused").and_then(Value::as_bool) == Some(true)
        || cluster.annotations().contains_key("cluster.x-k8s.io/paused");
    let control_plane_ref = data
        .pointer("/spec/controlPlaneRef/name")
        .and_then(Value::as_str)
        .is_some_and(|name| !name.is_empty());
    let provisioned = data
        .pointer("/status/initialization/infrastructureProvisioned")
        .and_then(Value::as_bool)
        == Some(true);
    let host = data
        .pointer("/spec/controlPlaneEndpoint/host")
        .and_then(Value::as_str)
        .is_some_and(|host| !host.is_empty());
    let port = data
        .pointer("/spec/controlPlaneEndpoint/port")
        .and_then(Value::as_i64)
        .is_some_and(|port| port > 0);
    !paused
        && cluster.metadata.deletion_timestamp.is_none()
        && !control_plane_ref
        && provisioned
        && host
        && port
}

/// The kubeconfig (YAML) of workload cluster `cluster` served at `server`: core's cluster, user and
/// context names, no credentials (the emulator has no authentication).
pub fn kubeconfig(cluster: &str, server: &str) -> Result<String, Error> {
    let user = format!("{cluster}-admin");
    let context = format!("{cluster}-admin@{cluster}");
    let value = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server}}],
        "users": [{"name": user, "user": {}}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    });
    serde_saphyr::to_string(&value).map_err(|e| Error::Kubeconfig(e.to_string()))
}

/// Creates `<cluster>-kubeconfig` as core does (§6): type `cluster.x-k8s.io/secret`, label
/// `cluster.x-k8s.io/cluster-name`, non-controller ownerRef to the Cluster, key `value`. An existing
/// Secret is left alone (core never rewrites it; users may supply their own), unless this component
/// wrote it for an emulator that no longer runs (its value differs and only [`FIELD_MANAGER`] ever
/// wrote it), which is replaced.
async fn ensure_kubeconfig_secret(
    management: &Client,
    cluster: &DynamicObject,
    url: &str,
) -> Result<(), Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let secrets = Api::<Secret>::namespaced(management.clone(), &namespace);
    let secret_name = format!("{name}-kubeconfig");
    let value = kubeconfig(&name, url)?;
    let existing = secrets.get_opt(&secret_name).await?;
    if let Some(existing) = &existing {
        let current = existing
            .data
            .as_ref()
            .and_then(|d| d.get("value"))
            .map(|v| v.0.as_slice());
        let ours = existing.metadata.managed_fields.as_ref().is_some_and(|fields| {
            !fields.is_empty() && fields.iter().all(|f| f.manager.as_deref() == Some(FIELD_MANAGER))
        });
        if current == Some(value.as_bytes()) || !ours {
            return Ok(());
        }
    }
    let mut secret = crate::capi::kubeconfig_secret(cluster, value);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    let written = match existing {
        None => secrets.create(&params, &secret).await.map(drop),
        Some(existing) => {
            secret.metadata.resource_version = existing.metadata.resource_version;
            secrets.replace(&secret_name, &params, &secret).await.map(drop)
        }
    };
    match written {
        // Someone else wrote it meanwhile: the next resync looks again.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn kubeconfig_is_due_when_core_would_write_it() {
        let base = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "demo", "namespace": "ns"},
            "spec": {"controlPlaneEndpoint": {"host": "10.0.0.10", "port": 6443}},
            "status": {"initialization": {"infrastructureProvisioned": true}}});
        assert!(kubeconfig_due(&cluster(base.clone())));
        let mut no_port = base.clone();
        no_port["spec"]["controlPlaneEndpoint"]["port"] = json!(0);
        assert!(!kubeconfig_due(&cluster(no_port)));
        let mut not_provisioned = base.clone();
        not_provisioned["status"] = json!({});
        assert!(!kubeconfig_due(&cluster(not_provisioned)));
        let mut paused = base.clone();
        paused["spec"]["paused"] = json!(true);
        assert!(!kubeconfig_due(&cluster(paused)));
        let mut with_cp = base;
        with_cp["spec"]["controlPlaneRef"] = json!({"apiGroup": "x", "kind": "Y", "name": "z"});
        assert!(!kubeconfig_due(&cluster(with_cp)));
    }

    #[test]
    fn kubeconfig_uses_cores_names_and_no_credentials() {
        let text = kubeconfig("demo", "http://127.0.0.1:1234").unwrap();
        let parsed = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("demo-admin@demo"));
        assert_eq!(parsed.clusters[0].name, "demo");
        let server = parsed.clusters[0].cluster.as_ref().unwrap().server.as_deref();
        assert_eq!(server, Some("http://127.0.0.1:1234"));
        assert_eq!(parsed.auth_infos[0].name, "demo-admin");
    }
}
