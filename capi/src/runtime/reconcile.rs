//! Pieces every kubezero reconciler shares: the Kubernetes-side error type, condition writes, the
//! error policy and watch mappers.

use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::finalizer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::errors::{ErrorClass, ReconcileError, classify_kube};
use super::manager::Context;
use super::status::apply_conditions;
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

    /// Unwraps the finalizer helper's error, so metrics and logs show the real cause.
    pub fn from_finalizer<E>(object: String, error: finalizer::Error<E>) -> E
    where
        E: std::error::Error + From<Error> + 'static,
    {
        match error {
            finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => inner,
            finalizer::Error::AddFinalizer(source) | finalizer::Error::RemoveFinalizer(source) => {
                E::from(Error::Finalizer {
                    object,
                    message: source.to_string(),
                    source: Some(Box::new(source)),
                })
            }
            other => E::from(Error::Finalizer {
                object,
                message: other.to_string(),
                source: None,
            }),
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
    K: Resource<DynamicType = ()> + HasConditions + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    apply_conditions(
        api,
        object,
        field_manager,
        &context.recorder,
        observed,
        carry_over,
        status_with,
    )
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

/// The error policy of `controller`: count the error by class, log it, requeue by class.
pub fn error_policy<K, E>(controller: &'static str) -> impl Fn(Arc<K>, &E, Arc<Context>) -> Action
where
    K: Resource,
    E: ReconcileError,
{
    move |object, error, context| {
        let class = error.class();
        context.metrics.error(controller, class);
        tracing::warn!(
            controller,
            namespace = object.namespace(),
            name = object.name_any(),
            %error,
            class = class.as_str(),
            "reconcile failed"
        );
        class.action()
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

/// Runs the controller of a provider kind that belongs to one Machine (an InfraMachine or a
/// BootstrapConfig) until the manager shuts down: it watches the kind, the Machines (mapped to the
/// object they reference with `machine_to_object`) and the Clusters (mapped to the objects labelled
/// with the Cluster's name), honouring `--namespace`, `--watch-filter` and `--concurrency`.
pub async fn run_machine_controller<K, R, Fut, E>(
    context: Context,
    controller: &'static str,
    machine_to_object: fn(crate::core::Machine) -> Option<ObjectRef<K>>,
    reconcile: R,
) where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    R: FnMut(Arc<K>, Arc<Context>) -> Fut,
    Fut: futures::TryFuture<Ok = Action, Error = E> + Send + 'static,
    E: ReconcileError,
{
    use kube::runtime::controller::{Config, Controller};
    let watcher_config = context.args.watcher_config();
    let object_controller = Controller::new(context.args.api::<K>(&context.client), watcher_config.clone());
    let store = object_controller.store();
    let results = object_controller
        .watches(
            context.args.api::<crate::core::Machine>(&context.client),
            watcher_config.clone(),
            machine_to_object,
        )
        .watches(
            context.args.api::<Cluster>(&context.client),
            watcher_config,
            move |cluster| objects_of_cluster(&store, &cluster),
        )
        .with_config(Config::default().concurrency(context.args.concurrency))
        .graceful_shutdown_on(context.shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy::<K, E>(controller), Arc::new(context));
    drain_results(controller, results).await;
}
