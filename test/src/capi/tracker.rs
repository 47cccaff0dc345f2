//! External object tracking ([CAPI] `controllers/external/tracker.go`): the first time a reconciler
//! meets a provider kind (an InfraMachine or BootstrapConfig kind for the Machine controller, an
//! InfraCluster kind for the Cluster controller), a watch of that kind starts, and every change of an
//! object wakes its owner of the core kind (its controller owner for Machines; for Clusters any
//! owner reference, as an InfraCluster is owned but not controlled by its Cluster), as core's
//! `EnqueueRequestForOwner` does. Objects waiting for their provider objects are then reconciled
//! when those change instead of being polled.

use std::collections::HashSet;
use std::sync::Mutex;

use futures::{Stream, StreamExt};
use kube::api::DynamicObject;
use kube::core::ApiResource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The owner reference API group of CAPI core kinds.
const CORE_GROUP: &str = "cluster.x-k8s.io/";

/// Watches of provider kinds whose objects wake their controller owner of one core kind.
pub(crate) struct ExternalTracker {
    client: Client,
    owner: ApiResource,
    controller_only: bool,
    watched: Mutex<HashSet<String>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    wake: mpsc::UnboundedSender<ObjectRef<DynamicObject>>,
}

impl ExternalTracker {
    /// A tracker waking owners of kind `owner` (only controller owners when `controller_only`),
    /// and the stream of owners to reconcile.
    pub(crate) fn new(
        client: Client,
        owner: ApiResource,
        controller_only: bool,
    ) -> (
        Self,
        impl Stream<Item = ObjectRef<DynamicObject>> + Send + 'static,
    ) {
        let (wake, woken) = mpsc::unbounded_channel();
        let tracker = Self {
            client,
            owner,
            controller_only,
            watched: Mutex::default(),
            tasks: Mutex::default(),
            wake,
        };
        let woken = futures::stream::unfold(woken, |mut woken| async move {
            let owner = woken.recv().await?;
            Some((owner, woken))
        });
        (tracker, woken)
    }

    /// Starts watching `kind` (once per kind).
    pub(crate) fn watch(&self, kind: &ApiResource) {
        let key = format!("{}.{}", kind.plural, kind.group);
        if !lock(&self.watched).insert(key) {
            return;
        }
        let api = Api::<DynamicObject>::all_with(self.client.clone(), kind);
        let owner = self.owner.clone();
        let controller_only = self.controller_only;
        let wake = self.wake.clone();
        let task = tokio::spawn(async move {
            let mut changes = watcher(api, watcher::Config::default())
                .default_backoff()
                .touched_objects()
                .boxed();
            while let Some(change) = changes.next().await {
                let Ok(object) = change else { continue };
                let namespace = object.namespace().unwrap_or_default();
                let owners = object.owner_references().iter().filter(|r| {
                    (!controller_only || r.controller == Some(true))
                        && r.kind == owner.kind
                        && r.api_version.starts_with(CORE_GROUP)
                });
                for reference in owners {
                    let target = ObjectRef::new_with(&reference.name, owner.clone()).within(&namespace);
                    if wake.send(target).is_err() {
                        return;
                    }
                }
            }
        });
        lock(&self.tasks).push(task);
    }
}

impl Drop for ExternalTracker {
    fn drop(&mut self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
