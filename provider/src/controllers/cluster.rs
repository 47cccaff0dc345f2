//! KubeZeroCluster controller.
//!
//! Flow (contract §2): find the owning Cluster → honour pause and the `cluster.x-k8s.io/managed-by`
//! annotation (externally managed infrastructure is left alone) → finalizer → provision the platform's
//! infrastructure ([`aws`] on AWS): `spec.controlPlaneEndpoint` once, then
//! `status.failureDomains`, `status.aws` and `status.initialization.provisioned`. Deletion waits for the
//! cluster's KubeZeroMachines to be gone, releases the cloud resources over as many reconciles as they
//! take, then removes the finalizer.
//!
//! Wake-ups: the KubeZeroCluster itself only when its metadata or spec change (not on status
//! writes, its own or anyone's), its Cluster only when the Cluster's identity, metadata or spec
//! change: core rewrites the Cluster's status (replica counters, conditions) on every Machine
//! change, and none of that is read here. Between two resyncs ([`aws::RESYNC`]) a reconcile
//! reuses the last complete observation of the infrastructure ([`aws::Observations`])
//! instead of describing it again.

pub mod aws;

use std::sync::Arc;
use std::time::Duration;

use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
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
use kubezero_capi::runtime::reconcile::{
    changes_controller, describe, namespace_of, object_fingerprint, referenced, related_changes,
    run_controller, write_conditions,
};
use serde_json::json;
use tracing::Instrument;

use self::aws::{CloudFailure, Observations, ObservedObject, PROGRESS_REQUEUE};
use super::machine::backend_unavailable;
use super::{Error, FIELD_MANAGER, Platform, ProviderError, endpoint, reasons};
use crate::api::{FINALIZER_CLUSTER, GROUP, KubeZeroCluster, KubeZeroClusterStatus, KubeZeroMachine};
use crate::aws::DeleteProgress;
use crate::aws::clients::ClientRegistry;

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "kubezerocluster";

/// What the controller keeps across reconciles.
#[derive(Debug)]
pub struct State {
    /// The process's AWS client sets.
    pub clients: Arc<ClientRegistry>,
    /// The last complete observation of each cluster's infrastructure.
    pub observations: Observations,
}

impl State {
    /// State over the AWS client sets `clients`, with nothing observed yet.
    pub fn new(clients: Arc<ClientRegistry>) -> Arc<Self> {
        Arc::new(Self {
            clients,
            observations: Observations::default(),
        })
    }
}

/// Runs the KubeZeroCluster controller until the manager shuts down.
pub async fn run(context: Context, clients: Arc<ClientRegistry>) {
    let state = State::new(clients);
    let watching = changes_controller::<KubeZeroCluster>(&context).watches_stream(
        related_changes(&context, object_fingerprint::<Cluster>),
        cluster_to_infra_cluster,
    );
    run_controller(watching, CONTROLLER, context, move |infra_cluster, context| {
        reconcile(infra_cluster, context, state.clone())
    })
    .await;
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

/// One reconcile of a KubeZeroCluster: the object, its API, the controller's context and state.
struct Pass<'a> {
    api: Api<KubeZeroCluster>,
    context: &'a Context,
    state: &'a State,
    infra_cluster: &'a KubeZeroCluster,
    namespace: String,
    name: String,
}

impl Pass<'_> {
    /// The error of a failed update of the KubeZeroCluster.
    fn update_failed(&self) -> impl FnOnce(kube::Error) -> Error {
        Error::write("update", "KubeZeroCluster", &self.namespace, &self.name)
    }

    /// Writes `ready` (and `Paused=False`) with `status` as the rest of the status; the endpoint's
    /// reachability is kept as last reported.
    async fn write(&self, ready: Observed, status: KubeZeroClusterStatus) -> Result<(), Error> {
        self.write_all(vec![ready], status).await
    }

    /// Writes the `observed` conditions (and `Paused=False`) with `status` as the rest of the status;
    /// the endpoint's reachability is kept as last reported unless observed.
    async fn write_all(
        &self,
        mut observed: Vec<Observed>,
        status: KubeZeroClusterStatus,
    ) -> Result<(), Error> {
        observed.push(paused_condition(None));
        let with = |conditions| KubeZeroClusterStatus { conditions, ..status };
        write_conditions(
            &self.api,
            self.infra_cluster,
            self.context,
            FIELD_MANAGER,
            &observed,
            &[endpoint::CONDITION],
            with,
        )
        .await
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
    state: Arc<State>,
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
        let pass = Pass {
            api: Api::namespaced(context.client.clone(), &namespace),
            context: &context,
            state: &state,
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
            let recorded = pass.recorded();
            let with = |conditions| KubeZeroClusterStatus {
                conditions,
                ..recorded
            };
            write_conditions(
                &pass.api,
                infra_cluster.as_ref(),
                &context,
                FIELD_MANAGER,
                &observed,
                &[READY_CONDITION, endpoint::CONDITION],
                with,
            )
            .await?;
            return Ok(Action::await_change());
        }
        if infra_cluster.metadata.deletion_timestamp.is_some() {
            return delete(&pass).await;
        }
        if cluster.is_none() {
            let ready = Observed::false_(
                READY_CONDITION,
                reasons::WAITING_FOR_OWNER,
                "waiting for Cluster API to set the owner Cluster",
            );
            pass.write(ready, KubeZeroClusterStatus::default()).await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        if finalizers::add(&pass.api, infra_cluster.as_ref(), FINALIZER_CLUSTER)
            .await
            .map_err(Error::write("update", "KubeZeroCluster", &namespace, &name))?
        {
            // The write wakes the controller again with the finalizer in place.
            return Ok(Action::await_change());
        }
        apply(&pass).await
    }
    .instrument(span)
    .await
}

async fn apply(pass: &Pass<'_>) -> Result<Action, ProviderError> {
    let infra_cluster = pass.infra_cluster;
    let (Some(spec), Some(cluster)) = (infra_cluster.spec.aws.as_ref(), cluster_name(infra_cluster)) else {
        pass.write(
            backend_unavailable(infra_cluster.platform()),
            KubeZeroClusterStatus::default(),
        )
        .await?;
        return Ok(Action::await_change());
    };
    let mut observed = ObservedObject {
        namespace: pass.namespace.clone(),
        name: pass.name.clone(),
        uid: infra_cluster.uid().unwrap_or_default(),
        generation: infra_cluster.metadata.generation,
    };
    let observations = &pass.state.observations;
    let (provisioned, fresh) = match observations.fresh(&observed) {
        Some(provisioned) => (provisioned, false),
        None => match aws::provision(&pass.state.clients, &cluster, spec).await {
            Ok(provisioned) => (provisioned, true),
            Err(failure) => {
                observations.forget(&pass.namespace, &pass.name);
                pass.write(failure.ready.clone(), pass.recorded()).await?;
                return Err(pass.cloud_error(failure));
            }
        },
    };
    let endpoint_set = match &infra_cluster.spec.control_plane_endpoint {
        Some(endpoint) => endpoint.is_valid(),
        None if !provisioned.endpoint.0.is_empty() => {
            // This controller's own spec write: the observation stays valid at the new generation.
            observed.generation = set_endpoint(pass, &provisioned.endpoint).await?;
            true
        }
        None => false,
    };
    if fresh {
        observations.record(&observed, &provisioned);
    }
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
    let mut requeue = provisioned.requeue;
    let mut observed = vec![provisioned.ready];
    if now_provisioned && let Some(facts) = endpoint_facts(pass, spec).await? {
        let probe = match facts.machines_up_for {
            Some(_) => Some(endpoint::probe(&facts.endpoint).await),
            None => None,
        };
        if !matches!(probe, Some(Ok(()))) {
            requeue = requeue.min(endpoint::PROBE_REQUEUE);
        }
        observed.push(endpoint::condition(&facts, probe.as_ref()));
    }
    pass.write_all(observed, status).await?;
    Ok(Action::requeue(requeue))
}

/// What reachability is judged by: the endpoint in the spec, the load balancer scheme when the
/// provider made the load balancer, and how long ago the cluster's first machine was provisioned
/// (from its `Ready` condition). `None` while the spec has no valid endpoint.
async fn endpoint_facts(
    pass: &Pass<'_>,
    spec: &crate::api::aws::AwsClusterSpec,
) -> Result<Option<endpoint::Facts>, Error> {
    let Some(endpoint) = pass
        .infra_cluster
        .spec
        .control_plane_endpoint
        .as_ref()
        .filter(|endpoint| endpoint.is_valid())
    else {
        return Ok(None);
    };
    let Some(cluster) = cluster_name(pass.infra_cluster) else {
        return Ok(None);
    };
    let listed = cluster_machines(pass, &cluster).await?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let machines_up_for = listed
        .iter()
        .filter_map(|machine| {
            let status = machine.status.as_ref()?;
            let provisioned = status.initialization.as_ref()?.provisioned == Some(true);
            let ready = kubezero_capi::conditions::find(&status.conditions, READY_CONDITION)?;
            let up_for = now.duration_since(ready.last_transition_time.0);
            provisioned.then(|| Duration::try_from(up_for).unwrap_or_default())
        })
        .max();
    let provider_made_it = pass
        .infra_cluster
        .status
        .as_ref()
        .and_then(|status| status.aws.as_ref())
        .is_some_and(|aws| aws.load_balancer.dns_name == endpoint.host);
    Ok(Some(endpoint::Facts {
        endpoint: format!("{}:{}", endpoint.host, endpoint.port),
        scheme: provider_made_it.then_some(spec.load_balancer.scheme),
        machines_up_for,
    }))
}

/// The KubeZeroMachines of Cluster `cluster` in the pass's namespace (by the cluster-name label).
async fn cluster_machines(pass: &Pass<'_>, cluster: &str) -> Result<Vec<KubeZeroMachine>, Error> {
    let machines: Api<KubeZeroMachine> = Api::namespaced(pass.context.client.clone(), &pass.namespace);
    let listed = machines
        .list(&ListParams::default().labels(&format!("{CLUSTER_NAME_LABEL}={cluster}")))
        .await
        .map_err(Error::read(
            "KubeZeroMachine",
            &pass.namespace,
            &format!("of Cluster {cluster}"),
        ))?;
    Ok(listed.items)
}

/// Sets `spec.controlPlaneEndpoint` (once; the CRD keeps it immutable afterwards); returns the
/// object's generation after the write.
async fn set_endpoint(pass: &Pass<'_>, (host, port): &(String, i32)) -> Result<Option<i64>, Error> {
    let patch = json!({"spec": {"controlPlaneEndpoint": {"host": host, "port": port}}});
    let written = pass
        .api
        .patch(&pass.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(pass.update_failed())?;
    tracing::info!(%host, port, "control-plane endpoint set");
    Ok(written.metadata.generation)
}

async fn delete(pass: &Pass<'_>) -> Result<Action, ProviderError> {
    let infra_cluster = pass.infra_cluster;
    if !finalizers::has_finalizer(infra_cluster, FINALIZER_CLUSTER) {
        return Ok(Action::await_change());
    }
    pass.state.observations.forget(&pass.namespace, &pass.name);
    let deleting = |message: String| Observed::false_(READY_CONDITION, reasons::DELETING, message);
    let cluster = cluster_name(infra_cluster);
    if let Some(cluster) = &cluster {
        let left = cluster_machines(pass, cluster).await?.len();
        if left > 0 {
            let message = format!("waiting for {left} KubeZeroMachine(s) of Cluster {cluster} to be deleted");
            pass.write(deleting(message), pass.recorded()).await?;
            return Ok(Action::requeue(PROGRESS_REQUEUE));
        }
    }
    let progress = match (
        infra_cluster.platform(),
        infra_cluster.spec.aws.as_ref(),
        &cluster,
    ) {
        (Platform::Aws, Some(spec), Some(cluster)) => {
            match aws::release(&pass.state.clients, cluster, spec).await {
                Ok(progress) => progress,
                Err(failure) => {
                    pass.write(failure.ready.clone(), pass.recorded()).await?;
                    return Err(pass.cloud_error(failure));
                }
            }
        }
        // Nothing was created without a backend or without a Cluster name to tag with.
        _ => DeleteProgress::Done,
    };
    match progress {
        DeleteProgress::Waiting(what) => {
            pass.write(deleting(what), pass.recorded()).await?;
            Ok(Action::requeue(PROGRESS_REQUEUE))
        }
        DeleteProgress::Done => {
            tracing::info!(
                platform = infra_cluster.platform().as_str(),
                "cloud resources released"
            );
            finalizers::remove(&pass.api, infra_cluster, FINALIZER_CLUSTER)
                .await
                .map_err(pass.update_failed())?;
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
        let state = State::new(Arc::new(ClientRegistry::new(
            crate::settings::ProviderArgs::default().aws_settings(),
        )));
        reconcile(Arc::new(typed), Arc::new(context(client)), state)
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
