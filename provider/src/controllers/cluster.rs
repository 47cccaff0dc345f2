//! KubeZeroCluster controller.
//!
//! Flow (contract §2): find the owning Cluster → honour pause and the `cluster.x-k8s.io/managed-by`
//! annotation (externally managed infrastructure is left alone) → finalizer → hand the network and
//! endpoint to the platform backend. Deletion runs the backend's cleanup, then releases the finalizer.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use kubezero_capi::conditions::{Condition, Observed};
use kubezero_capi::contract::{MANAGED_BY_ANNOTATION, READY_CONDITION};
use kubezero_capi::core::Cluster;
use kubezero_capi::owner::{get_cluster, owner_cluster_name};
use kubezero_capi::pause::{pause_reason, paused_condition};
use kubezero_capi::runtime::Context;
use kubezero_capi::runtime::reconcile::{describe, drain_results, error_policy, namespace_of, referenced};
use tracing::Instrument;

use super::machine::backend_unavailable;
use super::{Error, reasons, write_conditions};
use crate::api::{FINALIZER_CLUSTER, GROUP, KubeZeroCluster, KubeZeroClusterStatus};

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "kubezerocluster";

/// Runs the KubeZeroCluster controller until the manager shuts down.
pub async fn run(context: Context) {
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
    .run(reconcile, error_policy::<_, Error>(CONTROLLER), Arc::new(context));
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

async fn reconcile(infra_cluster: Arc<KubeZeroCluster>, context: Arc<Context>) -> Result<Action, Error> {
    let _timer = context.metrics.reconcile(CONTROLLER);
    let name = infra_cluster.name_any();
    let namespace = namespace_of(infra_cluster.as_ref())?;
    let span = tracing::info_span!("reconcile", controller = CONTROLLER, %namespace, %name);
    async {
        if is_externally_managed(&infra_cluster) {
            tracing::debug!("externally managed, skipping");
            return Ok(Action::await_change());
        }
        let api: Api<KubeZeroCluster> = Api::namespaced(context.client.clone(), &namespace);
        let cluster = match owner_cluster_name(&infra_cluster.metadata) {
            Some(cluster_name) => get_cluster(&context.client, &namespace, &cluster_name)
                .await
                .map_err(Error::read("Cluster", &namespace, &cluster_name))?,
            None => None,
        };
        if let Some(reason) = pause_reason(cluster.as_ref(), &infra_cluster.metadata) {
            let observed = [paused_condition(Some(&reason))];
            write_conditions(
                &api,
                infra_cluster.as_ref(),
                &context,
                &observed,
                &[READY_CONDITION],
                status,
            )
            .await?;
            return Ok(Action::await_change());
        }
        if infra_cluster.metadata.deletion_timestamp.is_none() && cluster.is_none() {
            let ready = Observed::false_(
                READY_CONDITION,
                reasons::WAITING_FOR_OWNER,
                "waiting for Cluster API to set the owner Cluster",
            );
            write_conditions(
                &api,
                infra_cluster.as_ref(),
                &context,
                &[ready, paused_condition(None)],
                &[],
                status,
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        finalizer(&api, FINALIZER_CLUSTER, infra_cluster.clone(), |event| async {
            match event {
                FinalizerEvent::Apply(infra_cluster) => {
                    let ready = backend_unavailable(infra_cluster.platform());
                    let observed = [ready, paused_condition(None)];
                    write_conditions(&api, infra_cluster.as_ref(), &context, &observed, &[], status).await?;
                    Ok(Action::await_change())
                }
                FinalizerEvent::Cleanup(infra_cluster) => {
                    // No backend in this build creates cloud resources, so there is nothing to release.
                    tracing::info!(
                        platform = infra_cluster.platform().as_str(),
                        "no cloud resources to release"
                    );
                    Ok(Action::await_change())
                }
            }
        })
        .await
        .map_err(|error| Error::from_finalizer(describe("KubeZeroCluster", &namespace, &name), error))
    }
    .instrument(span)
    .await
}

/// The status this controller owns: only conditions until a backend provisions infrastructure.
fn status(conditions: Vec<Condition>) -> KubeZeroClusterStatus {
    KubeZeroClusterStatus {
        conditions,
        ..Default::default()
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

    fn infra_cluster(owned: bool, finalizer: bool) -> Value {
        let mut object = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroCluster",
            "metadata": {"name": "demo", "namespace": "default", "uid": "u-kc", "generation": 2},
            "spec": {"aws": {"region": "eu-central-1"}}});
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
                    ("PATCH", _) => (200, object.clone()),
                    ("POST", _) => (201, request.body.clone()),
                    _ => not_found(&request.path),
                },
            );
        reconcile(Arc::new(typed), Arc::new(context(client)))
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
        assert!(patch.body.to_string().contains("\"remove\""));
    }
}
