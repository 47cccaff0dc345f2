//! Pieces every kubezero reconciler shares: the Kubernetes-side error type, condition writes, the
//! error policy, watch mappers, the fingerprints of what a controller reads from the objects it
//! watches (fed to kube's `predicate_filter`), and the controller runner.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::errors::{Backoff, ErrorClass, ReconcileError, classify_kube};
use super::manager::Context;
use super::status::{StatusWriter, apply_conditions};
use crate::conditions::{Condition, HasConditions, Observed};
use crate::core::{Cluster, ContractVersionedObjectReference};
use crate::owner::cluster_name_label;

/// Errors of the Kubernetes side of a reconcile. Objects are named `Kind namespace/name`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reconciled object has no namespace (all kubezero kinds are namespaced).
    #[error("object {0} has no namespace")]
    MissingNamespace(String),

    /// Reading a related object failed.
    #[error("unable to read {object}: {source}")]
    Read {
        /// The object that was read.
        object: String,
        /// Client error.
        source: Box<kube::Error>,
    },

    /// Creating, updating or deleting a related object failed.
    #[error("unable to {action} {object}: {source}")]
    Write {
        /// What was being done (`create`, `update`, `delete`).
        action: &'static str,
        /// The object that was written.
        object: String,
        /// Client error.
        source: Box<kube::Error>,
    },

    /// Writing the reconciled object's status failed.
    #[error("unable to write the status of {object}: {source}")]
    WriteStatus {
        /// The object whose status was written.
        object: String,
        /// Client error.
        source: Box<kube::Error>,
    },

    /// Adding or removing the finalizer failed.
    #[error("unable to update the finalizer of {object}: {message}")]
    Finalizer {
        /// The object whose finalizer was updated.
        object: String,
        /// What went wrong.
        message: String,
        /// Client error, when the API refused the patch.
        source: Option<Box<kube::Error>>,
    },
}

/// `Kind namespace/name`, how errors and logs name an object.
pub fn describe(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind} {namespace}/{name}")
}

impl Error {
    /// A `map_err` adapter for a failed read of `kind` `namespace/name`.
    pub fn read(kind: &str, namespace: &str, name: &str) -> impl FnOnce(kube::Error) -> Error {
        let object = describe(kind, namespace, name);
        move |source| Error::Read {
            object,
            source: Box::new(source),
        }
    }

    /// A `map_err` adapter for a failed `action` (`create`, `update`, `delete`) on `kind` `namespace/name`.
    pub fn write(
        action: &'static str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> Error {
        let object = describe(kind, namespace, name);
        move |source| Error::Write {
            action,
            object,
            source: Box::new(source),
        }
    }
}

impl ReconcileError for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::MissingNamespace(_) => ErrorClass::Invalid,
            Error::Finalizer { source: None, .. } => ErrorClass::Other,
            Error::Read { source, .. }
            | Error::Write { source, .. }
            | Error::WriteStatus { source, .. }
            | Error::Finalizer {
                source: Some(source), ..
            } => classify_kube(source),
        }
    }
}

/// The namespace of a reconciled object, which all kubezero kinds have.
pub fn namespace_of<K: Resource>(object: &K) -> Result<String, Error> {
    object
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(object.name_any()))
}

/// Writes the observed conditions of `object` (see [`apply_conditions`]) as `field_manager`.
pub async fn write_conditions<K, S>(
    api: &Api<K>,
    object: &K,
    context: &Context,
    field_manager: &str,
    observed: &[Observed],
    carry_over: &[&str],
    status_with: impl FnOnce(Vec<Condition>) -> S,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + HasConditions + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let writer = StatusWriter {
        field_manager,
        recorder: &context.recorder,
        written: &context.statuses,
    };
    apply_conditions(api, object, &writer, observed, carry_over, status_with)
        .await
        .map_err(|source| Error::WriteStatus {
            object: describe(
                &K::kind(&()),
                &object.namespace().unwrap_or_default(),
                &object.name_any(),
            ),
            source: Box::new(source),
        })?;
    Ok(())
}

/// The error policy of `controller`: count the error by class, log it, requeue by class with a
/// per-object exponential backoff ([`Backoff`]).
pub fn error_policy<K, E>(controller: &'static str) -> impl Fn(Arc<K>, &E, Arc<Context>) -> Action
where
    K: Resource,
    E: ReconcileError,
{
    let backoff = Backoff::default();
    move |object, error, context| {
        let class = error.class();
        context.metrics.error(controller, class);
        let key = (object.namespace().unwrap_or_default(), object.name_any());
        let wait = backoff.next(key, class, &error.to_string());
        tracing::warn!(
            controller,
            namespace = object.namespace(),
            name = object.name_any(),
            %error,
            class = class.as_str(),
            retry_in_s = wait.as_secs(),
            "reconcile failed"
        );
        Action::requeue(wait)
    }
}

/// The object a v1beta2 reference names, when it refers to `kind` in `group` (watch mapper helper).
pub fn referenced<K>(
    reference: Option<&ContractVersionedObjectReference>,
    namespace: Option<String>,
    group: &str,
    kind: &str,
) -> Option<ObjectRef<K>>
where
    K: Resource<DynamicType = ()>,
{
    let reference = reference?;
    let namespace = namespace?;
    reference
        .refers_to(group, kind)
        .then(|| ObjectRef::new(&reference.name).within(&namespace))
}

/// The objects in `store` labelled with `cluster`'s name in its namespace (watch mapper helper).
pub fn objects_of_cluster<K>(store: &Store<K>, cluster: &Cluster) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let (Some(namespace), name) = (cluster.namespace(), cluster.name_any()) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|object| object.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|object| cluster_name_label(object.meta()) == Some(name.as_str()))
        .map(|object| ObjectRef::from_obj(object.as_ref()))
        .collect()
}

/// What objects that belong to a Cluster read from it: metadata (labels, annotations, deletion),
/// spec, `status.initialization`, the failure domains and whether the control plane is initialized
/// (the one condition a provider reads). Status counters and every other condition, which core
/// rewrites as Machines come and go (`ScalingUp`, `WorkersAvailable`, `RollingOut`, ...), are left
/// out. Pure.
pub fn cluster_fingerprint(cluster: &Cluster) -> u64 {
    let status = cluster.status.as_ref();
    fingerprint(&serde_json::json!({
        "labels": cluster.metadata.labels,
        "annotations": cluster.metadata.annotations,
        "deletionTimestamp": cluster.metadata.deletion_timestamp,
        "spec": cluster.spec,
        "initialization": status.map(|s| &s.initialization),
        "failureDomains": status.map(|s| &s.failure_domains),
        "controlPlaneInitialized": cluster.control_plane_initialized(),
    }))
}

/// What the InfraMachine and BootstrapConfig of a Machine read from it: metadata (labels,
/// annotations, owners, deletion), spec and whether it has a Node. Phase, conditions and addresses,
/// which core rewrites as it mirrors the provider objects, are left out. Pure.
pub fn machine_fingerprint(machine: &crate::core::Machine) -> u64 {
    fingerprint(&serde_json::json!({
        "labels": machine.metadata.labels,
        "annotations": machine.metadata.annotations,
        "ownerReferences": machine.metadata.owner_references,
        "deletionTimestamp": machine.metadata.deletion_timestamp,
        "spec": machine.spec,
        "hasNode": machine.has_node_ref(),
    }))
}

/// What the controller of a provider object reacts to in the object itself: its identity, its
/// metadata and its spec (through `generation`), not its status, which that controller writes.
pub fn object_fingerprint<K: Resource>(object: &K) -> u64 {
    let meta = object.meta();
    fingerprint(&serde_json::json!({
        "uid": meta.uid,
        "generation": meta.generation,
        "labels": meta.labels,
        "annotations": meta.annotations,
        "finalizers": meta.finalizers,
        "ownerReferences": meta.owner_references,
        "deletionTimestamp": meta.deletion_timestamp,
    }))
}

fn fingerprint(relevant: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    relevant.to_string().hash(&mut hasher);
    hasher.finish()
}

/// A kind the kubezero controllers watch: namespaced, with a static API resource. Each crate
/// names its own kinds (`impl WatchedKind for ... {}`).
pub trait WatchedKind:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl WatchedKind for Cluster {}
impl WatchedKind for crate::core::Machine {}

/// A kube predicate ([`kube::runtime::WatchStreamExt::predicate_filter`]) over `fingerprint`: an
/// object passes when it is new or its fingerprint differs from the last one seen, so that a watch
/// wakes a controller only when something its objects read changed, not on every status update
/// core makes (with 1,000 Machines, each Cluster status update would otherwise mean 1,000
/// reconciles, and each condition core mirrors from a provider object one more reconcile of that
/// object). The last event of an object (deleted, no finalizer left) always passes.
pub fn changed<K: Resource + 'static>(
    fingerprint: fn(&K) -> u64,
) -> impl Fn(&K) -> Option<u64> + Send + Sync + 'static {
    move |object| {
        let meta = object.meta();
        let gone = meta.deletion_timestamp.is_some() && meta.finalizers.as_ref().is_none_or(Vec::is_empty);
        (!gone).then(|| fingerprint(object))
    }
}

/// The objects of a related kind `K` (honouring `--namespace` and `--watch-filter`) whose
/// `fingerprint` changed ([`changed`]), for [`kube::runtime::Controller::watches_stream`].
pub fn related_changes<K>(
    context: &Context,
    fingerprint: fn(&K) -> u64,
) -> impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static
where
    K: WatchedKind,
{
    use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
    watcher(
        context.args.api::<K>(&context.client),
        context.args.watcher_config(),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(changed(fingerprint), PredicateConfig::default())
}

/// Logs the end of each reconcile of a controller's result stream at debug level.
pub async fn drain_results<T, E: std::fmt::Display>(
    controller: &'static str,
    results: impl futures::Stream<Item = Result<T, E>>,
) {
    use futures::StreamExt;
    results
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, controller, "controller reported an error");
            }
        })
        .await;
}

/// A controller of `K` (honouring `--namespace` and `--watch-filter`) whose objects wake it only
/// when their identity, metadata or spec change ([`object_fingerprint`]): status writes, its own
/// and anyone else's, do not. The cache keeps the objects without their managedFields, which no
/// reconcile reads (with 10,000 objects that is most of the memory). Add related watches, then run.
pub fn changes_controller<K>(context: &Context) -> kube::runtime::Controller<K>
where
    K: WatchedKind,
{
    use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
    let (reader, writer) = reflector::store();
    let objects = watcher(
        context.args.api::<K>(&context.client),
        context.args.watcher_config(),
    )
    .default_backoff()
    .modify(|object: &mut K| object.managed_fields_mut().clear())
    .reflect(writer)
    .touched_objects()
    .predicate_filter(changed(object_fingerprint::<K>), PredicateConfig::default());
    kube::runtime::Controller::for_stream(objects, reader)
}

/// Runs the controller of a provider kind that belongs to one Machine (an InfraMachine or a
/// BootstrapConfig) until the manager shuts down: it watches the kind, the Machines (mapped to the
/// object they reference with `machine_to_object`) and the Clusters (mapped to the objects labelled
/// with the Cluster's name), each only on a change the object reads ([`changed`]), honouring
/// `--namespace`, `--watch-filter` and `--concurrency`. The object's own events count only when
/// [`object_fingerprint`] changes, so the controller's status writes do not reconcile it again.
/// Objects sent on `wake` are reconciled too (work the controller started in the background has
/// ended).
pub async fn run_machine_controller<K, R, Fut, E>(
    context: Context,
    controller: &'static str,
    machine_to_object: fn(crate::core::Machine) -> Option<ObjectRef<K>>,
    wake: impl futures::Stream<Item = ObjectRef<K>> + Send + 'static,
    reconcile: R,
) where
    K: WatchedKind,
    R: FnMut(Arc<K>, Arc<Context>) -> Fut + Send,
    Fut: futures::TryFuture<Ok = Action, Error = E> + Send + 'static,
    E: ReconcileError,
{
    let object_controller = changes_controller::<K>(&context);
    let store = object_controller.store();
    let watching = object_controller
        .watches_stream(related_changes(&context, machine_fingerprint), machine_to_object)
        .watches_stream(related_changes(&context, cluster_fingerprint), move |cluster| {
            objects_of_cluster(&store, &cluster)
        })
        .reconcile_on(wake);
    run_controller(watching, controller, context, reconcile).await;
}

/// Runs `watching` (a controller with its watches) with `reconcile` until the manager shuts down:
/// `--concurrency` objects at a time, failures retried by [`error_policy`], errors logged by
/// [`drain_results`].
pub async fn run_controller<K, R, Fut, E>(
    watching: kube::runtime::Controller<K>,
    controller: &'static str,
    context: Context,
    reconcile: R,
) where
    K: WatchedKind,
    R: FnMut(Arc<K>, Arc<Context>) -> Fut + Send,
    Fut: futures::TryFuture<Ok = Action, Error = E> + Send + 'static,
    E: ReconcileError,
{
    use futures::StreamExt;
    use kube::runtime::controller::Config;
    let results = watching
        .with_config(Config::default().concurrency(context.args.concurrency))
        .graceful_shutdown_on(context.shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy::<K, E>(controller), Arc::new(context));
    drain_results(controller, results.boxed()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(patch: serde_json::Value) -> Cluster {
        let mut value = json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "demo", "namespace": "default", "resourceVersion": "1"},
            "spec": {"controlPlaneEndpoint": {"host": "lb", "port": 6443}},
            "status": {
                "initialization": {"infrastructureProvisioned": true},
                "conditions": [{"type": "Available", "status": "False", "reason": "Scaling",
                    "message": "1 of 3 replicas", "lastTransitionTime": "2026-11-22T08:00:00Z"}],
                "phase": "Provisioned"
            }
        });
        merge(&mut value, patch);
        serde_json::from_value(value).expect("a Cluster")
    }

    fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
        match (target, patch) {
            (serde_json::Value::Object(target), serde_json::Value::Object(patch)) => {
                for (key, value) in patch {
                    merge(target.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
            (target, patch) => *target = patch,
        }
    }

    /// Objects fed one at a time through kube's predicate filter with [`changed`]`(fingerprint)`,
    /// as a watch stream feeds them.
    struct Filter<K: Resource> {
        input: futures::channel::mpsc::UnboundedSender<Result<K, kube::runtime::watcher::Error>>,
        output: futures::stream::BoxStream<'static, Result<K, kube::runtime::watcher::Error>>,
    }

    impl<K: Resource + Clone + Send + 'static> Filter<K> {
        fn new(fingerprint: fn(&K) -> u64) -> Self {
            use futures::StreamExt;
            use kube::runtime::{PredicateConfig, WatchStreamExt};
            let (input, events) = futures::channel::mpsc::unbounded();
            let output = events
                .predicate_filter(changed(fingerprint), PredicateConfig::default())
                .boxed();
            Self { input, output }
        }

        /// Whether `object`, as the next event, passes the filter.
        fn passes(&mut self, object: &K) -> bool {
            use futures::{FutureExt, StreamExt};
            self.input
                .unbounded_send(Ok(object.clone()))
                .expect("filter open");
            matches!(self.output.next().now_or_never(), Some(Some(Ok(_))))
        }
    }

    #[test]
    fn cluster_changes_ignore_what_core_rewrites_while_machines_come_and_go() {
        let mut changes = Filter::new(cluster_fingerprint);
        let mut changed_ = |cluster: &Cluster| changes.passes(cluster);
        assert!(changed_(&cluster(json!({}))), "a new Cluster wakes its objects");
        assert!(!changed_(&cluster(json!({}))));
        let churn = cluster(json!({
            "metadata": {"resourceVersion": "2"},
            "status": {"conditions": [{"type": "Available", "status": "False", "reason": "Scaling",
                "message": "2 of 3 replicas", "lastTransitionTime": "2026-11-22T08:01:00Z"}]}
        }));
        assert!(!changed_(&churn), "a new message or resourceVersion is no change");
        let scaling = cluster(json!({
            "metadata": {"resourceVersion": "3"},
            "status": {
                "workers": {"desiredReplicas": 20, "replicas": 7, "readyReplicas": 3},
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "Available",
                        "lastTransitionTime": "2026-11-22T08:02:00Z"},
                    {"type": "ScalingUp", "status": "True", "reason": "ScalingUp",
                        "message": "Scaling up from 3 to 20 replicas", "lastTransitionTime": "2026-11-22T08:02:00Z"},
                    {"type": "WorkersAvailable", "status": "False", "reason": "NotAvailable",
                        "lastTransitionTime": "2026-11-22T08:02:00Z"}
                ]
            }
        }));
        assert!(
            !changed_(&scaling),
            "counters and the conditions core flips while scaling are no change"
        );
        assert!(!changed_(&cluster(json!({}))), "and neither is their return");
        for change in [
            json!({"spec": {"paused": true}}),
            json!({"metadata": {"annotations": {"cluster.x-k8s.io/paused": ""}}}),
            json!({"metadata": {"labels": {"kubezero.io/kube-proxy-replacement": "enabled"}}}),
            json!({"status": {"initialization": {"controlPlaneInitialized": true}}}),
            json!({"status": {"conditions": [{"type": "ControlPlaneInitialized", "status": "True",
                "reason": "Initialized", "lastTransitionTime": "2026-11-22T08:02:00Z"}]}}),
            json!({"metadata": {"deletionTimestamp": "2026-11-22T08:03:00Z",
                "finalizers": ["cluster.cluster.x-k8s.io"]}}),
        ] {
            let changed = cluster(change.clone());
            assert!(changed_(&changed), "{change}");
            assert!(!changed_(&changed), "{change} seen twice");
            assert!(changed_(&cluster(json!({}))), "back to the original");
        }
        let gone = cluster(json!({"metadata": {"deletionTimestamp": "2026-11-22T08:03:00Z"}}));
        assert!(changed_(&gone), "the last event of a deleted Cluster");
        assert!(changed_(&gone), "passes every time");
        let recreated = cluster(json!({"metadata": {"uid": "u-2"}}));
        assert!(
            changed_(&recreated),
            "a Cluster of the same name created again is new"
        );
    }

    #[test]
    fn machine_changes_ignore_what_core_mirrors_into_the_status() {
        let machine = |patch: serde_json::Value| {
            let mut value = json!({
                "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "metadata": {"name": "m", "namespace": "default", "finalizers": ["machine.cluster.x-k8s.io"]},
                "spec": {"clusterName": "demo", "bootstrap": {}, "infrastructureRef":
                    {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroMachine", "name": "m"}},
                "status": {"phase": "Provisioning"}
            });
            merge(&mut value, patch);
            serde_json::from_value::<crate::core::Machine>(value).expect("a Machine")
        };
        let mut changes = Filter::new(machine_fingerprint);
        let mut seen = |m: &crate::core::Machine| changes.passes(m);
        assert!(seen(&machine(json!({}))));
        assert!(!seen(&machine(
            json!({"status": {"phase": "Provisioned", "conditions": [{"type":
            "InfrastructureReady", "status": "False", "reason": "InstanceProvisioning",
            "lastTransitionTime": "2026-11-22T08:00:00Z"}]}})
        )));
        assert!(seen(&machine(
            json!({"spec": {"bootstrap": {"dataSecretName": "m-data"}}})
        )));
        assert!(seen(&machine(
            json!({"spec": {"bootstrap": {"dataSecretName": "m-data"}},
            "status": {"nodeRef": {"name": "node-1"}}})
        )));
    }

    #[test]
    fn own_changes_ignore_status_writes_and_resource_versions() {
        let object = |patch: serde_json::Value| {
            let mut value = json!({
                "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "metadata": {"name": "m", "namespace": "default", "uid": "u-1", "generation": 1,
                    "resourceVersion": "10"},
                "spec": {"clusterName": "demo", "bootstrap": {}, "infrastructureRef":
                    {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroMachine", "name": "m"}}
            });
            merge(&mut value, patch);
            serde_json::from_value::<crate::core::Machine>(value).expect("an object")
        };
        let mut changes = Filter::new(object_fingerprint::<crate::core::Machine>);
        let mut seen = |o: &crate::core::Machine| changes.passes(o);
        assert!(seen(&object(json!({}))), "a new object");
        assert!(
            !seen(&object(json!({"metadata": {"resourceVersion": "11"},
                "status": {"phase": "Provisioning"}}))),
            "a status write"
        );
        for change in [
            json!({"metadata": {"generation": 2}}),
            json!({"metadata": {"generation": 2, "finalizers": ["kubezero"]}}),
            json!({"metadata": {"generation": 2, "finalizers": ["kubezero"],
                "annotations": {"cluster.x-k8s.io/paused": ""}}}),
            json!({"metadata": {"uid": "u-2"}}),
        ] {
            assert!(seen(&object(change.clone())), "{change}");
        }
    }
}
