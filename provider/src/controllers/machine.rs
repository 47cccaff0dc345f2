//! KubeZeroMachine controller.
//!
//! Flow (contract §3): find the owner Machine and its Cluster → honour pause (only the `Paused`
//! condition is written) → finalizer → wait for the Cluster's infrastructure and the Machine's
//! bootstrap data → hand the machine to the platform backend. Deletion runs the backend's cleanup and
//! then releases the finalizer; an object being deleted is cleaned up even when its owners are gone.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use kubezero_capi::conditions::Observed;
use kubezero_capi::contract::READY_CONDITION;
use kubezero_capi::core::{Cluster, Machine};
use kubezero_capi::owner::{cluster_name_label, get_cluster, get_owner_machine, owner_machine_name};
use kubezero_capi::pause::{pause_reason, paused_condition};
use kubezero_capi::runtime::Context;
use kubezero_capi::runtime::reconcile::{describe, namespace_of, referenced, run_machine_controller};
use tracing::Instrument;

use super::{Error, Platform, reasons, write_conditions};
use crate::api::{FINALIZER_MACHINE, GROUP, KubeZeroCluster, KubeZeroMachine, KubeZeroMachineStatus};
use crate::settings::Backends;

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "kubezeromachine";

/// Runs the KubeZeroMachine controller until the manager shuts down.
pub async fn run(context: Context, backends: Arc<Backends>) {
    let _ = &backends;
    run_machine_controller(context, CONTROLLER, machine_to_infra_machine, reconcile).await;
}

/// Maps a Machine to the KubeZeroMachine its `spec.infrastructureRef` names.
pub fn machine_to_infra_machine(machine: Machine) -> Option<ObjectRef<KubeZeroMachine>> {
    referenced(
        machine.spec.infrastructure_ref.as_ref(),
        machine.namespace(),
        GROUP,
        "KubeZeroMachine",
    )
}

/// What the fetch step found.
struct Related {
    owner: Option<Machine>,
    cluster: Option<Cluster>,
}

async fn reconcile(machine: Arc<KubeZeroMachine>, context: Arc<Context>) -> Result<Action, Error> {
    let _timer = context.metrics.reconcile(CONTROLLER);
    let name = machine.name_any();
    let namespace = namespace_of(machine.as_ref())?;
    let span = tracing::info_span!("reconcile", controller = CONTROLLER, %namespace, %name);
    async {
        let related = fetch(&context, &namespace, &machine).await?;
        let api: Api<KubeZeroMachine> = Api::namespaced(context.client.clone(), &namespace);
        if let Some(reason) = pause_reason(related.cluster.as_ref(), &machine.metadata) {
            write_conditions(
                &api,
                &machine,
                &context,
                &[paused_condition(Some(&reason))],
                &[READY_CONDITION],
                status,
            )
            .await?;
            return Ok(Action::await_change());
        }
        let deleting = machine.metadata.deletion_timestamp.is_some();
        if !deleting {
            let waiting = match (&related.owner, &related.cluster) {
                (None, _) => Some((
                    reasons::WAITING_FOR_OWNER,
                    "waiting for Cluster API to set the owner Machine",
                )),
                (Some(_), None) => Some((
                    reasons::WAITING_FOR_CLUSTER,
                    "waiting for the Machine's Cluster to exist",
                )),
                _ => None,
            };
            if let Some((reason, message)) = waiting {
                let observed = vec![
                    Observed::false_(READY_CONDITION, reason, message),
                    paused_condition(None),
                ];
                write_conditions(&api, &machine, &context, &observed, &[], status).await?;
                return Ok(Action::requeue(Duration::from_secs(60)));
            }
        }
        finalizer(&api, FINALIZER_MACHINE, machine, |event| async {
            match event {
                FinalizerEvent::Apply(machine) => apply(&api, &context, &machine, &related).await,
                FinalizerEvent::Cleanup(machine) => cleanup(&machine).await,
            }
        })
        .await
        .map_err(|error| Error::from_finalizer(describe("KubeZeroMachine", &namespace, &name), error))
    }
    .instrument(span)
    .await
}

async fn fetch(context: &Context, namespace: &str, machine: &KubeZeroMachine) -> Result<Related, Error> {
    let owner = get_owner_machine(&context.client, namespace, &machine.metadata)
        .await
        .map_err(Error::read(
            "Machine",
            namespace,
            &owner_machine_name(&machine.metadata).unwrap_or_default(),
        ))?;
    let cluster_name = owner
        .as_ref()
        .map(|owner| owner.spec.cluster_name.clone())
        .filter(|name| !name.is_empty())
        .or_else(|| cluster_name_label(&machine.metadata).map(str::to_string));
    let cluster = match cluster_name {
        Some(cluster_name) => get_cluster(&context.client, namespace, &cluster_name)
            .await
            .map_err(Error::read("Cluster", namespace, &cluster_name))?,
        None => None,
    };
    Ok(Related { owner, cluster })
}

/// The Ready condition this machine should show, given the Cluster's infrastructure and the owner.
pub fn readiness(
    machine: &KubeZeroMachine,
    owner: &Machine,
    cluster: &Cluster,
    infra_cluster: Option<&KubeZeroCluster>,
) -> Observed {
    let waiting = |reason, message: String| Observed::false_(READY_CONDITION, reason, message);
    let Some(infra_cluster) = infra_cluster else {
        return waiting(
            reasons::WAITING_FOR_CLUSTER_INFRASTRUCTURE,
            format!(
                "waiting for the KubeZeroCluster of Cluster {}",
                cluster.name_any()
            ),
        );
    };
    if infra_cluster.platform() != machine.platform() {
        return Observed::false_(
            READY_CONDITION,
            reasons::PLATFORM_MISMATCH,
            format!(
                "the machine uses spec.{} but KubeZeroCluster {} uses spec.{}",
                machine.platform().as_str(),
                infra_cluster.name_any(),
                infra_cluster.platform().as_str()
            ),
        );
    }
    if !cluster.infrastructure_provisioned() {
        return waiting(
            reasons::WAITING_FOR_CLUSTER_INFRASTRUCTURE,
            format!(
                "waiting for the infrastructure of Cluster {} to be provisioned",
                cluster.name_any()
            ),
        );
    }
    if owner
        .spec
        .bootstrap
        .data_secret_name
        .as_deref()
        .is_none_or(str::is_empty)
    {
        return waiting(
            reasons::WAITING_FOR_BOOTSTRAP_DATA,
            format!(
                "waiting for the bootstrap data Secret of Machine {}",
                owner.name_any()
            ),
        );
    }
    backend_unavailable(machine.platform())
}

/// The condition reported while this build has no backend for `platform`.
pub fn backend_unavailable(platform: Platform) -> Observed {
    Observed::false_(
        READY_CONDITION,
        reasons::BACKEND_UNAVAILABLE,
        format!(
            "this build of kubezero-provider has no {} backend; the machine is not provisioned",
            platform.as_str()
        ),
    )
}

async fn apply(
    api: &Api<KubeZeroMachine>,
    context: &Context,
    machine: &KubeZeroMachine,
    related: &Related,
) -> Result<Action, Error> {
    let (Some(owner), Some(cluster)) = (&related.owner, &related.cluster) else {
        // Only reachable for an object being deleted; `finalizer` routes those to cleanup.
        return Ok(Action::await_change());
    };
    let namespace = machine.namespace().unwrap_or_default();
    let infra_cluster = match cluster.spec.infrastructure_ref.as_ref() {
        Some(reference) if reference.refers_to(GROUP, "KubeZeroCluster") => {
            Api::<KubeZeroCluster>::namespaced(context.client.clone(), &namespace)
                .get_opt(&reference.name)
                .await
                .map_err(Error::read("KubeZeroCluster", &namespace, &reference.name))?
        }
        _ => None,
    };
    let ready = readiness(machine, owner, cluster, infra_cluster.as_ref());
    let waiting = ready.reason.starts_with("Waiting");
    write_conditions(
        api,
        machine,
        context,
        &[ready, paused_condition(None)],
        &[],
        status,
    )
    .await?;
    Ok(if waiting {
        Action::requeue(Duration::from_secs(60))
    } else {
        Action::await_change()
    })
}

/// Releases what the backend created for this machine. No backend in this build creates anything,
/// so there is nothing to release and the finalizer can go.
async fn cleanup(machine: &KubeZeroMachine) -> Result<Action, Error> {
    tracing::info!(
        platform = machine.platform().as_str(),
        "no cloud resources to release"
    );
    Ok(Action::await_change())
}

/// The status this controller owns: only conditions until a backend provisions machines.
fn status(conditions: Vec<kubezero_capi::conditions::Condition>) -> KubeZeroMachineStatus {
    KubeZeroMachineStatus {
        conditions,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubezero_capi::testing::{Recorded, Reply, ScriptedApi, context, not_found};
    use serde_json::{Value, json};

    const MACHINES: &str = "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/machines";
    const CLUSTERS: &str = "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters";
    const INFRA_CLUSTERS: &str =
        "/apis/infrastructure.cluster.x-k8s.io/v1alpha1/namespaces/default/kubezeroclusters";
    const INFRA_MACHINE: &str =
        "/apis/infrastructure.cluster.x-k8s.io/v1alpha1/namespaces/default/kubezeromachines/demo-md-x1";

    /// The world the scripted API serves.
    #[derive(Clone)]
    struct World {
        infra_machine: Value,
        owner: Option<Value>,
        cluster: Option<Value>,
        infra_cluster: Option<Value>,
    }

    fn infra_machine(platform: &str) -> Value {
        let spec = match platform {
            "aws" => json!({"aws": {"instanceType": "m7g.large", "ami": {"id": "ami-0123456789abcdef0"}}}),
            _ => json!({"metal": {"hostSelector": {"matchLabels": {"rack": "r1"}}}}),
        };
        json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroMachine",
            "metadata": {"name": "demo-md-x1", "namespace": "default", "uid": "u-1", "generation": 1,
                "labels": {"cluster.x-k8s.io/cluster-name": "demo"},
                "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                    "name": "demo-md-x1", "uid": "u-m"}]},
            "spec": spec,
        })
    }

    fn owner(data_secret_name: Option<&str>) -> Value {
        let mut bootstrap = json!({"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeZeroConfig", "name": "demo-md-x1"}});
        if let Some(name) = data_secret_name {
            bootstrap["dataSecretName"] = json!(name);
        }
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "demo-md-x1", "namespace": "default", "uid": "u-m"},
            "spec": {"clusterName": "demo", "bootstrap": bootstrap,
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroMachine", "name": "demo-md-x1"}}})
    }

    fn cluster(paused: bool, provisioned: bool) -> Value {
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "demo", "namespace": "default", "uid": "u-c"},
            "spec": {"paused": paused,
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroCluster", "name": "demo"}},
            "status": {"initialization": {"infrastructureProvisioned": provisioned}}})
    }

    fn infra_cluster(platform: &str) -> Value {
        let spec = match platform {
            "aws" => json!({"aws": {"region": "eu-central-1"}}),
            _ => json!({"metal": {"controlPlaneVip": "10.0.0.10"}}),
        };
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroCluster",
            "metadata": {"name": "demo", "namespace": "default", "uid": "u-kc"}, "spec": spec})
    }

    fn world() -> World {
        World {
            infra_machine: infra_machine("aws"),
            owner: Some(owner(Some("demo-md-x1"))),
            cluster: Some(cluster(false, true)),
            infra_cluster: Some(infra_cluster("aws")),
        }
    }

    fn with_finalizer(mut object: Value) -> Value {
        object["metadata"]["finalizers"] = json!([FINALIZER_MACHINE]);
        object
    }

    fn respond(world: &World, request: &Recorded) -> Reply {
        let found = |object: &Option<Value>, name: &str| match object {
            Some(object) => (200, object.clone()),
            None => not_found(name),
        };
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", path) if path == format!("{MACHINES}/demo-md-x1") => found(&world.owner, "machine"),
            ("GET", path) if path == format!("{CLUSTERS}/demo") => found(&world.cluster, "cluster"),
            ("GET", path) if path == format!("{INFRA_CLUSTERS}/demo") => found(&world.infra_cluster, "kzc"),
            ("PATCH", INFRA_MACHINE) => (200, with_finalizer(world.infra_machine.clone())),
            ("PATCH", path) if path == format!("{INFRA_MACHINE}/status") => {
                (200, world.infra_machine.clone())
            }
            ("POST", path) if path.ends_with("/events") => (201, request.body.clone()),
            _ => not_found(&request.path),
        }
    }

    /// Runs one reconcile against `world`; returns its result and the requests it sent.
    async fn reconcile_once(world: World) -> (Result<Action, Error>, Vec<Recorded>) {
        let object: KubeZeroMachine = serde_json::from_value(world.infra_machine.clone()).unwrap();
        let (client, api) = ScriptedApi::start(move |request| respond(&world, request));
        let result = reconcile(Arc::new(object), Arc::new(context(client))).await;
        (result, api.requests())
    }

    fn lines(requests: &[Recorded]) -> Vec<String> {
        requests.iter().map(Recorded::line).collect()
    }

    fn status_patch(requests: &[Recorded]) -> &Recorded {
        requests
            .iter()
            .find(|r| r.method == "PATCH" && r.path.ends_with("/status"))
            .expect("a status patch")
    }

    fn condition<'a>(patch: &'a Recorded, type_: &str) -> Option<&'a Value> {
        patch.body["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
    }

    #[tokio::test]
    async fn paused_cluster_gets_only_the_paused_condition_and_no_finalizer() {
        let mut world = world();
        world.cluster = Some(cluster(true, true));
        let (result, requests) = reconcile_once(world).await;
        assert!(result.is_ok());
        assert_eq!(
            lines(&requests),
            [
                format!("GET {MACHINES}/demo-md-x1"),
                format!("GET {CLUSTERS}/demo"),
                format!("PATCH {INFRA_MACHINE}/status")
            ]
        );
        let patch = status_patch(&requests);
        assert_eq!(patch.content_type, "application/apply-patch+yaml");
        assert!(patch.query.contains("fieldManager=kubezero-provider") && patch.query.contains("force=true"));
        let conditions = patch.body["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 1, "only Paused is written: {conditions:?}");
        assert_eq!(conditions[0]["type"], "Paused");
        assert_eq!(conditions[0]["status"], "True");
        assert_eq!(conditions[0]["observedGeneration"], 1);
    }

    #[tokio::test]
    async fn paused_annotation_keeps_the_previous_ready_condition() {
        let mut world = world();
        world.infra_machine["metadata"]["annotations"] = json!({"cluster.x-k8s.io/paused": ""});
        world.infra_machine["status"] = json!({"conditions": [{"type": "Ready", "status": "False",
            "reason": "WaitingForBootstrapData", "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        let (_, requests) = reconcile_once(world).await;
        let patch = status_patch(&requests);
        assert_eq!(condition(patch, "Paused").unwrap()["status"], "True");
        let ready = condition(patch, "Ready").expect("Ready is re-applied unchanged, not dropped");
        assert_eq!(ready["reason"], "WaitingForBootstrapData");
        assert_eq!(ready["lastTransitionTime"], "2026-01-01T00:00:00Z");
        assert!(
            !requests.iter().any(|r| r.path == INFRA_MACHINE),
            "no finalizer or spec write while paused"
        );
    }

    #[tokio::test]
    async fn finalizer_is_added_once_owner_and_cluster_exist() {
        let (result, requests) = reconcile_once(world()).await;
        assert!(result.is_ok());
        let patch = requests
            .iter()
            .find(|r| r.method == "PATCH" && r.path == INFRA_MACHINE)
            .expect("finalizer patch");
        assert_eq!(patch.content_type, "application/json-patch+json");
        assert!(
            patch.body.to_string().contains(FINALIZER_MACHINE),
            "{}",
            patch.body
        );
        assert!(
            !requests.iter().any(|r| r.path.ends_with("/status")),
            "apply runs on the next reconcile"
        );
    }

    #[tokio::test]
    async fn missing_owner_reports_waiting_without_adding_the_finalizer() {
        let mut world = world();
        world.owner = None;
        let (result, requests) = reconcile_once(world).await;
        assert!(result.is_ok());
        let patch = status_patch(&requests);
        assert_eq!(
            condition(patch, "Ready").unwrap()["reason"],
            reasons::WAITING_FOR_OWNER
        );
        assert_eq!(condition(patch, "Paused").unwrap()["status"], "False");
        assert!(
            !requests.iter().any(|r| r.path == INFRA_MACHINE),
            "no finalizer without an owner"
        );
        let event = requests
            .iter()
            .find(|r| r.method == "POST")
            .expect("an event for the new Ready reason");
        assert_eq!(event.body["reason"], reasons::WAITING_FOR_OWNER);
    }

    #[tokio::test]
    async fn apply_waits_for_bootstrap_data_then_reports_the_missing_backend() {
        let mut world = world();
        world.infra_machine = with_finalizer(world.infra_machine);
        world.owner = Some(owner(None));
        let (_, requests) = reconcile_once(world.clone()).await;
        let ready = condition(status_patch(&requests), "Ready").unwrap().clone();
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some("WaitingForBootstrapData"))
        );

        world.owner = Some(owner(Some("demo-md-x1")));
        let (_, requests) = reconcile_once(world).await;
        let ready = condition(status_patch(&requests), "Ready").unwrap().clone();
        assert_eq!(ready["reason"], reasons::BACKEND_UNAVAILABLE);
        assert!(ready["message"].as_str().unwrap().contains("aws"));
    }

    #[tokio::test]
    async fn unprovisioned_cluster_infrastructure_is_waited_for() {
        let mut world = world();
        world.infra_machine = with_finalizer(world.infra_machine);
        world.cluster = Some(cluster(false, false));
        let (result, requests) = reconcile_once(world).await;
        assert!(result.is_ok());
        assert_eq!(
            condition(status_patch(&requests), "Ready").unwrap()["reason"],
            "WaitingForClusterInfrastructure"
        );
    }

    #[tokio::test]
    async fn machine_on_another_platform_than_its_cluster_is_refused() {
        let mut world = world();
        world.infra_machine = with_finalizer(infra_machine("metal"));
        let (_, requests) = reconcile_once(world).await;
        let ready = condition(status_patch(&requests), "Ready").unwrap().clone();
        assert_eq!(ready["reason"], reasons::PLATFORM_MISMATCH);
        let event = requests
            .iter()
            .find(|r| r.method == "POST")
            .expect("warning event");
        assert_eq!(event.body["type"], "Warning");
    }

    #[tokio::test]
    async fn deleting_machine_releases_its_finalizer_even_when_the_owner_is_gone() {
        let mut world = world();
        world.infra_machine = with_finalizer(world.infra_machine);
        world.infra_machine["metadata"]["deletionTimestamp"] = json!("2026-11-22T00:00:00Z");
        world.owner = None;
        world.cluster = None;
        let (result, requests) = reconcile_once(world).await;
        assert!(result.is_ok(), "{result:?}");
        let patch = requests
            .iter()
            .find(|r| r.method == "PATCH" && r.path == INFRA_MACHINE)
            .expect("finalizer removal");
        assert_eq!(patch.content_type, "application/json-patch+json");
        assert!(patch.body.to_string().contains("\"remove\""), "{}", patch.body);
        assert!(!requests.iter().any(|r| r.path.ends_with("/status")));
    }

    #[tokio::test]
    async fn deletion_of_a_paused_machine_waits() {
        let mut world = world();
        world.infra_machine = with_finalizer(world.infra_machine);
        world.infra_machine["metadata"]["deletionTimestamp"] = json!("2026-11-22T00:00:00Z");
        world.cluster = Some(cluster(true, true));
        let (_, requests) = reconcile_once(world).await;
        assert!(
            !requests.iter().any(|r| r.path == INFRA_MACHINE),
            "finalizer kept while paused"
        );
    }

    #[test]
    fn machines_map_to_their_infrastructure_reference_only() {
        let machine: Machine = serde_json::from_value(owner(None)).unwrap();
        let reference = machine_to_infra_machine(machine.clone()).unwrap();
        assert_eq!(
            (reference.name.as_str(), reference.namespace.as_deref()),
            ("demo-md-x1", Some("default"))
        );
        let mut other = machine;
        other.spec.infrastructure_ref.as_mut().unwrap().kind = "AWSMachine".into();
        assert!(machine_to_infra_machine(other).is_none());
    }
}
