//! KubeZeroMachine controller.
//!
//! A reconcile is a pipeline (contract §3), one module per step:
//! 1. fetch ([`scope`]): the owner Machine and its Cluster, then, for the steps that need it, the
//!    KubeZeroCluster, and the bootstrap data only when a launch needs it; read-only once fetched;
//! 2. gate ([`gate`], pure): pause (only the `Paused` condition is written; a launch the machine
//!    joined still settles), deletion, the owners, then the finalizer, the Cluster's
//!    infrastructure, the platform match and the bootstrap data;
//! 3. the platform's [`MachineBackend`] ([`aws`] for `spec.aws`; the metal backend is not in this
//!    build): find or adopt the machine's instance, else plan its launch from the fetched data
//!    (pure, [`aws::plan`]) and start it; on deletion, release it over as many reconciles as it
//!    takes, and only then the finalizer goes (an object being deleted is cleaned up even when its
//!    owners are gone);
//! 4. status ([`status`]): written once per reconcile, also when a cloud step failed.

pub mod aws;
pub mod backend;
pub mod claim;
pub mod gate;
pub mod scope;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use kubezero_capi::conditions::Observed;
use kubezero_capi::contract::READY_CONDITION;
use kubezero_capi::core::Machine;
use kubezero_capi::runtime::Context;
use kubezero_capi::runtime::errors::{ErrorClass, ReconcileError};
use kubezero_capi::runtime::finalizers;
use kubezero_capi::runtime::reconcile::{describe, namespace_of, referenced, run_machine_controller};
use tracing::Instrument;

use self::aws::AwsMachineBackend;
use self::backend::previous_status;
pub use self::backend::{Found, MachineBackend, Observation, Release};
pub use self::gate::backend_unavailable;
use self::gate::{Gate, Ready};
use self::scope::Scope;
use self::status::Report;
use super::{Error, Platform};
use crate::api::{FINALIZER_MACHINE, GROUP, KubeZeroMachine};
use crate::aws::clients::ClientRegistry;
use crate::aws::instances::MachineKey;
use crate::aws::launcher::LauncherSettings;

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "kubezeromachine";

/// How soon to look again while an instance is being terminated.
pub const DELETE_REQUEUE: Duration = Duration::from_secs(3);

/// Errors of a KubeZeroMachine reconcile: the Kubernetes side, or a cloud step (whose class
/// was decided where the cloud error was classified, [`crate::aws::errors`]).
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// A Kubernetes read or write failed.
    #[error(transparent)]
    Kube(#[from] Error),
    /// A cloud step failed; `reason` is the `Ready` reason reported for it.
    #[error("{reason} for {object}: {message}")]
    Cloud {
        /// The machine, `KubeZeroMachine namespace/name`.
        object: String,
        /// `Ready` condition reason.
        reason: &'static str,
        /// Error class (drives the requeue).
        class: ErrorClass,
        /// What failed.
        message: String,
    },
}

impl MachineError {
    /// A failed cloud step of `object`.
    pub fn cloud(
        object: &str,
        reason: &'static str,
        class: ErrorClass,
        error: impl std::fmt::Display,
    ) -> Self {
        MachineError::Cloud {
            object: object.to_owned(),
            reason,
            class,
            message: error.to_string(),
        }
    }
}

impl ReconcileError for MachineError {
    fn class(&self) -> ErrorClass {
        match self {
            MachineError::Kube(error) => error.class(),
            MachineError::Cloud { class, .. } => *class,
        }
    }
}

/// The machine backends of this build, at most one per platform.
pub type Backends = Arc<[Box<dyn MachineBackend>]>;

/// The backend of `platform` among `backends`, if this build has one.
fn backend_for(backends: &[Box<dyn MachineBackend>], platform: Platform) -> Option<&dyn MachineBackend> {
    backends
        .iter()
        .find(|backend| backend.platform() == platform)
        .map(AsRef::as_ref)
}

/// Runs the KubeZeroMachine controller until the manager shuts down, launching on AWS over
/// `clients` and batching launches with `settings`. A machine whose launch or termination batch
/// ended is reconciled again at once.
pub async fn run(context: Context, clients: Arc<ClientRegistry>, settings: LauncherSettings) {
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let aws: Box<dyn MachineBackend> = Box::new(AwsMachineBackend::new(clients, settings, Some(wake)));
    let backends: Backends = Arc::new([aws]);
    let woken = futures::stream::unfold(woken, |mut woken| async move {
        let machine: MachineKey = woken.recv().await?;
        Some((
            ObjectRef::<KubeZeroMachine>::new(&machine.name).within(&machine.namespace),
            woken,
        ))
    });
    run_machine_controller(
        context,
        CONTROLLER,
        machine_to_infra_machine,
        woken,
        move |machine, context| reconcile(machine, context, backends.clone()),
    )
    .await;
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

async fn reconcile(
    machine: Arc<KubeZeroMachine>,
    context: Arc<Context>,
    backends: Backends,
) -> Result<Action, MachineError> {
    let _timer = context.metrics.reconcile(CONTROLLER);
    let name = machine.name_any();
    let namespace = namespace_of(machine.as_ref())?;
    let span = tracing::info_span!("reconcile", controller = CONTROLLER, %namespace, %name);
    async {
        let scope = Scope::fetch(&context.client, &namespace, machine.clone()).await?;
        let api: Api<KubeZeroMachine> = Api::namespaced(context.client.clone(), &namespace);
        let backend = backend_for(&backends, machine.platform());
        match gate::admit(&scope) {
            Gate::Paused(reason) => paused(&api, &context, scope, backend, &reason).await,
            Gate::Deleting => delete(&api, &context, scope, backend).await,
            Gate::Waiting(ready) => {
                Report::ready(ready, previous_status(&machine))
                    .write(&api, &context, &machine)
                    .await?;
                Ok(Action::requeue(gate::OWNER_REQUEUE))
            }
            Gate::Admitted => {
                if finalizers::add(&api, machine.as_ref(), FINALIZER_MACHINE)
                    .await
                    .map_err(|source| finalizer_error(&namespace, &name, source))?
                {
                    // The write is watched: the next reconcile provisions.
                    return Ok(Action::await_change());
                }
                apply(&api, &context, scope, backend).await
            }
        }
    }
    .instrument(span)
    .await
}

/// A paused machine still finishes the launch it joined ([`MachineBackend::settle`]), so that
/// `clusterctl move`, which pauses the Cluster and then waits for the block-move annotation to go,
/// can proceed; only the `Paused` condition is written.
async fn paused(
    api: &Api<KubeZeroMachine>,
    context: &Context,
    scope: Scope,
    backend: Option<&dyn MachineBackend>,
    reason: &str,
) -> Result<Action, MachineError> {
    let machine = scope.machine.clone();
    let settling = match backend {
        Some(backend) if gate::blocks_move(&machine) && scope.cluster.is_some() => {
            let scope = scope.with_infra_cluster(&context.client).await?;
            backend.settle(&context.client, &scope).await?
        }
        _ => None,
    };
    Report::paused(reason, previous_status(&machine))
        .write(api, context, &machine)
        .await?;
    Ok(settling.map_or_else(Action::await_change, Action::requeue))
}

fn finalizer_error(namespace: &str, name: &str, source: kube::Error) -> MachineError {
    MachineError::Kube(Error::Finalizer {
        object: describe("KubeZeroMachine", namespace, name),
        message: source.to_string(),
        source: Some(Box::new(source)),
    })
}

/// Provisions an admitted machine with its finalizer in place: the gates, then the backend, then
/// the one status write.
async fn apply(
    api: &Api<KubeZeroMachine>,
    context: &Context,
    scope: Scope,
    backend: Option<&dyn MachineBackend>,
) -> Result<Action, MachineError> {
    let scope = scope.with_infra_cluster(&context.client).await?;
    let machine = scope.machine.as_ref();
    let observation = match (gate::readiness(&scope), backend) {
        (Err(waiting), _) => waiting.into_observation(machine),
        (Ok(_), None) => Observation {
            ready: backend_unavailable(machine.platform()),
            status: previous_status(machine),
            requeue: gate::UNSUPPORTED_REQUEUE,
        },
        (Ok(ready), Some(backend)) => match provision(&context.client, backend, &ready).await {
            Ok(observation) => observation,
            Err(error) => return Err(report_failure(api, context, machine, error).await),
        },
    };
    let Observation {
        ready,
        status,
        requeue,
    } = observation;
    Report::ready(ready, status).write(api, context, machine).await?;
    Ok(Action::requeue(requeue))
}

/// Observes the machine's instance; without one, reads the bootstrap data and launches.
async fn provision(
    client: &kube::Client,
    backend: &dyn MachineBackend,
    ready: &Ready<'_>,
) -> Result<Observation, MachineError> {
    if let Found::Observed(observation) = backend.observe(client, ready).await? {
        return Ok(observation);
    }
    let bootstrap_data = scope::bootstrap_data(client, ready.namespace, ready.owner).await?;
    match gate::user_data(ready, bootstrap_data) {
        Ok(user_data) => backend.launch(client, ready, user_data).await,
        Err(waiting) => Ok(waiting.into_observation(ready.machine)),
    }
}

/// Writes the `Ready` condition of a failed cloud step, then hands the error to the error
/// policy (which requeues by its class).
async fn report_failure(
    api: &Api<KubeZeroMachine>,
    context: &Context,
    machine: &KubeZeroMachine,
    error: MachineError,
) -> MachineError {
    if let MachineError::Cloud { reason, message, .. } = &error {
        let ready = Observed::false_(READY_CONDITION, reason, message.clone());
        if let Err(write_error) = Report::ready(ready, previous_status(machine))
            .write(api, context, machine)
            .await
        {
            tracing::warn!(error = %write_error, "writing the failure condition failed");
        }
    }
    error
}

/// Releases the machine's cloud resources through its backend, then the finalizer.
async fn delete(
    api: &Api<KubeZeroMachine>,
    context: &Context,
    scope: Scope,
    backend: Option<&dyn MachineBackend>,
) -> Result<Action, MachineError> {
    let machine = scope.machine.clone();
    let namespace = scope.namespace.clone();
    let name = machine.name_any();
    if !finalizers::has_finalizer(machine.as_ref(), FINALIZER_MACHINE) {
        return Ok(Action::await_change());
    }
    let release = match backend {
        None => {
            tracing::info!(
                platform = machine.platform().as_str(),
                "no backend for the platform in this build: no resources to release"
            );
            Release::Done
        }
        Some(backend) => {
            let scope = scope.with_infra_cluster(&context.client).await?;
            match backend.release(&scope).await {
                Ok(release) => release,
                Err(error) => return Err(report_failure(api, context, &machine, error).await),
            }
        }
    };
    match release {
        Release::Done => {
            finalizers::remove(api, machine.as_ref(), FINALIZER_MACHINE)
                .await
                .map_err(|source| finalizer_error(&namespace, &name, source))?;
            tracing::info!("released; finalizer removed");
            Ok(Action::await_change())
        }
        Release::Waiting(ready) => {
            Report::ready(ready, previous_status(&machine))
                .write(api, context, &machine)
                .await?;
            Ok(Action::requeue(DELETE_REQUEUE))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::reasons;
    use kubezero_capi::testing::{Recorded, Reply, ScriptedApi, context, not_found};
    use serde_json::{Value, json};

    use crate::settings::ProviderArgs;

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
    async fn reconcile_once(world: World) -> (Result<Action, MachineError>, Vec<Recorded>) {
        let object: KubeZeroMachine = serde_json::from_value(world.infra_machine.clone()).unwrap();
        let (client, api) = ScriptedApi::start(move |request| respond(&world, request));
        let clients = Arc::new(ClientRegistry::new(ProviderArgs::default().aws_settings()));
        let aws: Box<dyn MachineBackend> =
            Box::new(AwsMachineBackend::new(clients, LauncherSettings::default(), None));
        let backends: Backends = Arc::new([aws]);
        let result = reconcile(Arc::new(object), Arc::new(context(client)), backends).await;
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
        assert_eq!(patch.content_type, "application/merge-patch+json");
        assert_eq!(
            patch.body["metadata"]["finalizers"],
            json!([FINALIZER_MACHINE]),
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
    async fn apply_waits_for_bootstrap_data_then_reports_the_missing_metal_backend() {
        let mut world = world();
        world.infra_machine = with_finalizer(infra_machine("metal"));
        world.infra_cluster = Some(infra_cluster("metal"));
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
        assert!(ready["message"].as_str().unwrap().contains("metal"));
    }

    #[tokio::test]
    async fn aws_machine_waits_until_the_cluster_reports_its_aws_infrastructure() {
        let mut world = world();
        world.infra_machine = with_finalizer(world.infra_machine);
        let (result, requests) = reconcile_once(world).await;
        assert!(result.is_ok(), "{result:?}");
        let ready = condition(status_patch(&requests), "Ready").unwrap().clone();
        assert_eq!(ready["reason"], reasons::WAITING_FOR_CLUSTER_INFRASTRUCTURE);
        assert!(
            !requests.iter().any(|r| r.path.contains("/secrets/")),
            "no bootstrap data read before the infrastructure exists"
        );
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
        assert_eq!(patch.content_type, "application/merge-patch+json");
        assert_eq!(patch.body["metadata"]["finalizers"], json!([]), "{}", patch.body);
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
