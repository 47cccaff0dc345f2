//! KubeZeroCluster controller.
//!
//! Flow (contract §2): find the owning Cluster → honour pause and the `cluster.x-k8s.io/managed-by`
//! annotation (externally managed infrastructure is left alone) → finalizer → provision the platform's
//! infrastructure ([`super::cluster_aws`] on AWS): `spec.controlPlaneEndpoint` once, then
//! `status.failureDomains`, `status.aws` and `status.initialization.provisioned`. Deletion waits for the
//! cluster's KubeZeroMachines to be gone, releases the cloud resources over as many reconciles as they
//! take, then removes the finalizer.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use kubezero_capi::conditions::Observed;
use kubezero_capi::contract::{
    CLUSTER_NAME_LABEL, InfrastructureInitialization, MANAGED_BY_ANNOTATION, READY_CONDITION,
};
use kubezero_capi::core::Cluster;
use kubezero_capi::owner::{get_cluster, owner_cluster_name};
use kubezero_capi::pause::{pause_reason, paused_condition};
use kubezero_capi::runtime::Context;
use kubezero_capi::runtime::finalizers;
use kubezero_capi::runtime::reconcile::{describe, drain_results, error_policy, namespace_of, referenced};
use serde_json::json;
use tracing::Instrument;

use super::cluster_aws::{self, CloudFailure, PROGRESS_REQUEUE};
use super::machine::backend_unavailable;
use super::{Error, Platform, ProviderError, reasons, write_conditions};
use crate::api::{FINALIZER_CLUSTER, GROUP, KubeZeroCluster, KubeZeroClusterStatus, KubeZeroMachine};
use crate::aws::DeleteProgress;
use crate::settings::Backends;

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "kubezerocluster";

/// Runs the KubeZeroCluster controller until the manager shuts down.
pub async fn run(context: Context, backends: Arc<Backends>) {
    let watcher_config = context.args.watcher_config();
    let results = Controller::new(
        context.args.api::<KubeZeroCluster>(&context.client),
        watcher_config.clone(),
    )
    .watches(
        context.args.api::<Cluster>(&context.client),
        watcher_config,
        cluster_to_infra_cluster,
    )
    .with_config(Config::default().concurrency(context.args.concurrency))
    .graceful_shutdown_on(context.shutdown.clone().cancelled_owned())
    .run(
        move |infra_cluster, context| reconcile(infra_cluster, context, backends.clone()),
        error_policy::<_, ProviderError>(CONTROLLER),
        Arc::new(context),
    );
    drain_results(CONTROLLER, results).await;
}

/// Maps a Cluster to the KubeZeroCluster its `spec.infrastructureRef` names.
pub fn cluster_to_infra_cluster(cluster: Cluster) -> Option<ObjectRef<KubeZeroCluster>> {
    referenced(
        cluster.spec.infrastructure_ref.as_ref(),
        cluster.namespace(),
        GROUP,
        "KubeZeroCluster",
    )
}

/// True when the KubeZeroCluster is managed outside Cluster API (contract §1).
pub fn is_externally_managed(infra_cluster: &KubeZeroCluster) -> bool {
    infra_cluster.annotations().contains_key(MANAGED_BY_ANNOTATION)
}

/// The name the cluster's cloud resources are tagged with: the owning Cluster's (also known from the
/// owner reference and the cluster-name label while the Cluster is being deleted).
pub fn cluster_name(infra_cluster: &KubeZeroCluster) -> Option<String> {
    owner_cluster_name(&infra_cluster.metadata)
        .or_else(|| infra_cluster.labels().get(CLUSTER_NAME_LABEL).cloned())
        .filter(|name| !name.is_empty())
}

/// The reconciled object, its API and the things every step needs.
struct Scope<'a> {
    api: Api<KubeZeroCluster>,
    context: &'a Context,
    backends: &'a Backends,
    infra_cluster: &'a KubeZeroCluster,
    namespace: String,
    name: String,
}

impl Scope<'_> {
    /// Writes `ready` (and `Paused=False`) with `status` as the rest of the status.
    async fn write(&self, ready: Observed, status: KubeZeroClusterStatus) -> Result<(), Error> {
        let observed = [ready, paused_condition(None)];
        let with = |conditions| KubeZeroClusterStatus { conditions, ..status };
        write_conditions(&self.api, self.infra_cluster, self.context, &observed, &[], with).await
    }

    /// The status fields this controller keeps while it only reports (deletion, failures).
    fn recorded(&self) -> KubeZeroClusterStatus {
        let mut status = self.infra_cluster.status.clone().unwrap_or_default();
        status.conditions.clear();
        status
    }

    fn cloud_error(&self, failure: CloudFailure) -> ProviderError {
        ProviderError::Cloud {
            object: describe("KubeZeroCluster", &self.namespace, &self.name),
            class: failure.class,
            message: failure.message,
        }
    }
}

async fn reconcile(
    infra_cluster: Arc<KubeZeroCluster>,
    context: Arc<Context>,
    backends: Arc<Backends>,
) -> Result<Action, ProviderError> {
    let _timer = context.metrics.reconcile(CONTROLLER);
    let name = infra_cluster.name_any();
    let namespace = namespace_of(infra_cluster.as_ref())?;
    let span = tracing::info_span!("reconcile", controller = CONTROLLER, %namespace, %name);
    async {
        if is_externally_managed(&infra_cluster) {
            tracing::debug!("externally managed, skipping");
            return Ok(Action::await_change());
        }
        let scope = Scope {
            api: Api::namespaced(context.client.clone(), &namespace),
            context: &context,
            backends: &backends,
            infra_cluster: &infra_cluster,
            namespace: namespace.clone(),
            name: name.clone(),
        };
        let cluster = match owner_cluster_name(&infra_cluster.metadata) {
            Some(cluster_name) => get_cluster(&context.client, &namespace, &cluster_name)
                .await
                .map_err(Error::read("Cluster", &namespace, &cluster_name))?,
            None => None,
        };
        if let Some(reason) = pause_reason(cluster.as_ref(), &infra_cluster.metadata) {
            let observed = [paused_condition(Some(&reason))];
            let recorded = scope.recorded();
            let with = |conditions| KubeZeroClusterStatus {
                conditions,
                ..recorded
            };
            write_conditions(
                &scope.api,
                infra_cluster.as_ref(),
                &context,
                &observed,
                &[READY_CONDITION],
                with,
            )
            .await?;
            return Ok(Action::await_change());
        }
        if infra_cluster.metadata.deletion_timestamp.is_some() {
            return delete(&scope).await;
        }
        if cluster.is_none() {
            let ready = Observed::false_(
                READY_CONDITION,
                reasons::WAITING_FOR_OWNER,
                "waiting for Cluster API to set the owner Cluster",
            );
            scope.write(ready, KubeZeroClusterStatus::default()).await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        if finalizers::add(&scope.api, infra_cluster.as_ref(), FINALIZER_CLUSTER)
            .await
            .map_err(Error::write("update", "KubeZeroCluster", &namespace, &name))?
        {
            // The write wakes the controller again with the finalizer in place.
            return Ok(Action::await_change());
        }
        apply(&scope).await
    }
    .instrument(span)
    .await
}

async fn apply(scope: &Scope<'_>) -> Result<Action, ProviderError> {
    let infra_cluster = scope.infra_cluster;
    let (Some(spec), Some(cluster)) = (infra_cluster.spec.aws.as_ref(), cluster_name(infra_cluster)) else {
        scope
            .write(
                backend_unavailable(infra_cluster.platform()),
                KubeZeroClusterStatus::default(),
            )
            .await?;
        return Ok(Action::await_change());
    };
    let provisioned = match cluster_aws::provision(scope.backends, &cluster, spec).await {
        Ok(provisioned) => provisioned,
        Err(failure) => {
            scope.write(failure.ready.clone(), scope.recorded()).await?;
            return Err(scope.cloud_error(failure));
        }
    };
    let endpoint_set = match &infra_cluster.spec.control_plane_endpoint {
        Some(endpoint) => endpoint.is_valid(),
        None if !provisioned.endpoint.0.is_empty() => {
            set_endpoint(scope, &provisioned.endpoint).await?;
            true
        }
        None => false,
    };
    let was_provisioned = infra_cluster
        .status
        .as_ref()
        .and_then(|status| status.initialization.as_ref())
        .and_then(|initialization| initialization.provisioned)
        == Some(true);
    // Once provisioned, always provisioned (contract §2): a later hiccup only changes `Ready`.
    let now_provisioned = was_provisioned || (provisioned.usable && endpoint_set);
    let status = KubeZeroClusterStatus {
        initialization: now_provisioned.then_some(InfrastructureInitialization {
            provisioned: Some(true),
        }),
        failure_domains: provisioned.failure_domains,
        aws: Some(provisioned.status),
        conditions: Vec::new(),
    };
    scope.write(provisioned.ready, status).await?;
    Ok(Action::requeue(provisioned.requeue))
}

/// Sets `spec.controlPlaneEndpoint` (once; the CRD keeps it immutable afterwards).
async fn set_endpoint(scope: &Scope<'_>, (host, port): &(String, i32)) -> Result<(), Error> {
    let patch = json!({"spec": {"controlPlaneEndpoint": {"host": host, "port": port}}});
    scope
        .api
        .patch(&scope.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::write(
            "update",
            "KubeZeroCluster",
            &scope.namespace,
            &scope.name,
        ))?;
    tracing::info!(%host, port, "control-plane endpoint set");
    Ok(())
}

async fn delete(scope: &Scope<'_>) -> Result<Action, ProviderError> {
    let infra_cluster = scope.infra_cluster;
    if !finalizers::has_finalizer(infra_cluster, FINALIZER_CLUSTER) {
        return Ok(Action::await_change());
    }
    let deleting = |message: String| Observed::false_(READY_CONDITION, reasons::DELETING, message);
    let cluster = cluster_name(infra_cluster);
    if let Some(cluster) = &cluster {
        let machines: Api<KubeZeroMachine> = Api::namespaced(scope.context.client.clone(), &scope.namespace);
        let left = machines
            .list(&ListParams::default().labels(&format!("{CLUSTER_NAME_LABEL}={cluster}")))
            .await
            .map_err(Error::read(
                "KubeZeroMachine",
                &scope.namespace,
                &format!("of Cluster {cluster}"),
            ))?
            .items
            .len();
        if left > 0 {
            let message = format!("waiting for {left} KubeZeroMachine(s) of Cluster {cluster} to be deleted");
            scope.write(deleting(message), scope.recorded()).await?;
            return Ok(Action::requeue(PROGRESS_REQUEUE));
        }
    }
    let progress = match (
        infra_cluster.platform(),
        infra_cluster.spec.aws.as_ref(),
        &cluster,
    ) {
        (Platform::Aws, Some(spec), Some(cluster)) => {
            match cluster_aws::release(scope.backends, cluster, spec).await {
                Ok(progress) => progress,
                Err(failure) => {
                    scope.write(failure.ready.clone(), scope.recorded()).await?;
                    return Err(scope.cloud_error(failure));
                }
            }
        }
        // Nothing was created without a backend or without a Cluster name to tag with.
        _ => DeleteProgress::Done,
    };
    match progress {
        DeleteProgress::Waiting(what) => {
            scope.write(deleting(what), scope.recorded()).await?;
            Ok(Action::requeue(PROGRESS_REQUEUE))
        }
        DeleteProgress::Done => {
            tracing::info!(
                platform = infra_cluster.platform().as_str(),
                "cloud resources released"
            );
            finalizers::remove(&scope.api, infra_cluster, FINALIZER_CLUSTER)
                .await
                .map_err(Error::write(
                    "update",
                    "KubeZeroCluster",
                    &scope.namespace,
                    &scope.name,
                ))?;
            Ok(Action::await_change())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubezero_capi::testing::{Recorded, ScriptedApi, context, not_found};
    use serde_json::{Value, json};

    const INFRA_CLUSTER: &str =
        "/apis/infrastructure.cluster.x-k8s.io/v1alpha1/namespaces/default/kubezeroclusters/demo";
    const CLUSTER: &str = "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters/demo";
    const MACHINES: &str =
        "/apis/infrastructure.cluster.x-k8s.io/v1alpha1/namespaces/default/kubezeromachines";

    fn infra_cluster(owned: bool, finalizer: bool) -> Value {
        let mut object = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroCluster",
            "metadata": {"name": "demo", "namespace": "default", "uid": "u-kc", "generation": 2},
            "spec": {"metal": {"controlPlaneVip": "10.0.0.5"}}});
        if owned {
            object["metadata"]["ownerReferences"] = json!([{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "demo", "uid": "u-c"}]);
        }
        if finalizer {
            object["metadata"]["finalizers"] = json!([FINALIZER_CLUSTER]);
        }
        object
    }

    async fn reconcile_once(object: Value, cluster: Option<Value>) -> Vec<Recorded> {
        let typed: KubeZeroCluster = serde_json::from_value(object.clone()).unwrap();
        let (client, api) =
            ScriptedApi::start(
                move |request| match (request.method.as_str(), request.path.as_str()) {
                    ("GET", CLUSTER) => cluster.clone().map_or_else(|| not_found("cluster"), |c| (200, c)),
                    ("GET", MACHINES) => (
                        200,
                        json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}),
                    ),
                    ("PATCH", _) => (200, object.clone()),
                    ("POST", _) => (201, request.body.clone()),
                    _ => not_found(&request.path),
                },
            );
        let backends = Backends::new(&crate::settings::ProviderArgs::default());
        reconcile(Arc::new(typed), Arc::new(context(client)), backends)
            .await
            .unwrap();
        api.requests()
    }

    fn cluster(paused: bool) -> Value {
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "demo", "namespace": "default"}, "spec": {"paused": paused}})
    }

    fn ready_reason(requests: &[Recorded]) -> String {
        let patch = requests
            .iter()
            .find(|r| r.path.ends_with("/status"))
            .expect("status patch");
        let conditions = patch.body["status"]["conditions"].as_array().unwrap();
        let ready = conditions
            .iter()
            .find(|c| c["type"] == "Ready")
            .expect("Ready condition");
        ready["reason"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn waits_for_the_owner_cluster_before_adding_the_finalizer() {
        let requests = reconcile_once(infra_cluster(false, false), Some(cluster(false))).await;
        assert_eq!(ready_reason(&requests), reasons::WAITING_FOR_OWNER);
        assert!(!requests.iter().any(|r| r.path == INFRA_CLUSTER));
    }

    #[tokio::test]
    async fn finalizer_is_added_then_the_missing_backend_is_reported() {
        let requests = reconcile_once(infra_cluster(true, false), Some(cluster(false))).await;
        let patch = requests
            .iter()
            .find(|r| r.path == INFRA_CLUSTER)
            .expect("finalizer patch");
        assert!(patch.body.to_string().contains(FINALIZER_CLUSTER));

        let requests = reconcile_once(infra_cluster(true, true), Some(cluster(false))).await;
        assert_eq!(ready_reason(&requests), reasons::BACKEND_UNAVAILABLE);
    }

    #[tokio::test]
    async fn paused_cluster_writes_only_the_paused_condition() {
        let requests = reconcile_once(infra_cluster(true, false), Some(cluster(true))).await;
        let lines: Vec<String> = requests.iter().map(Recorded::line).collect();
        assert_eq!(
            lines,
            [format!("GET {CLUSTER}"), format!("PATCH {INFRA_CLUSTER}/status")]
        );
        let conditions = requests[1].body["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0]["type"], "Paused");
    }

    #[tokio::test]
    async fn externally_managed_infrastructure_is_left_alone() {
        let mut object = infra_cluster(true, false);
        object["metadata"]["annotations"] = json!({"cluster.x-k8s.io/managed-by": "terraform"});
        assert!(reconcile_once(object, Some(cluster(false))).await.is_empty());
    }

    #[tokio::test]
    async fn deletion_removes_the_finalizer_when_the_cluster_is_already_gone() {
        let mut object = infra_cluster(true, true);
        object["metadata"]["deletionTimestamp"] = json!("2026-11-22T00:00:00Z");
        let requests = reconcile_once(object, None).await;
        let patch = requests
            .iter()
            .find(|r| r.path == INFRA_CLUSTER)
            .expect("finalizer removal");
        assert_eq!(
            patch.body["metadata"]["finalizers"],
            json!([]),
            "finalizer removed"
        );
    }
}
