//! KubeZeroMachine controller.
//!
//! Flow (contract §3): find the owner Machine and its Cluster → honour pause (only the `Paused`
//! condition is written) → finalizer → wait for the Cluster's infrastructure and the Machine's
//! bootstrap data → hand the machine to the platform backend ([`aws`] for `spec.aws`; the metal
//! backend is not in this build). Deletion runs the backend's cleanup over as many reconciles as
//! it takes (the instance must be terminated) and only then releases the finalizer; an object being
//! deleted is cleaned up even when its owners are gone.

pub mod aws;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use kubezero_capi::conditions::Observed;
use kubezero_capi::contract::READY_CONDITION;
use kubezero_capi::core::{Cluster, Machine};
use kubezero_capi::owner::{cluster_name_label, get_cluster, get_owner_machine, owner_machine_name};
use kubezero_capi::pause::{pause_reason, paused_condition};
use kubezero_capi::runtime::Context;
use kubezero_capi::runtime::errors::{ErrorClass, ReconcileError};
use kubezero_capi::runtime::finalizers;
use kubezero_capi::runtime::reconcile::{describe, namespace_of, referenced, run_machine_controller};
use tracing::Instrument;

use self::aws::{AwsMachines, Observation, Release, Scope, previous_status};
use super::{Error, Platform, reasons, write_conditions};
use crate::api::{FINALIZER_MACHINE, GROUP, KubeZeroCluster, KubeZeroMachine, KubeZeroMachineStatus};
use crate::aws::instances::MachineKey;
use crate::aws::launcher::{LauncherSettings, Wake};
use crate::settings::Backends;

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "kubezeromachine";

/// How soon to look again while an instance is being terminated.
pub const DELETE_REQUEUE: Duration = Duration::from_secs(3);
/// How soon to look again while waiting for the Cluster's infrastructure or bootstrap data (the
/// Machine and Cluster watches usually trigger sooner).
pub const WAIT_REQUEUE: Duration = Duration::from_secs(30);

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

/// The platform backends of the machine controller.
#[derive(Debug)]
pub struct MachineBackends {
    /// EC2.
    pub aws: AwsMachines,
}

impl MachineBackends {
    /// The backends over the process's shared clients, batching with `settings`; machines whose
    /// launch or termination batch ended are sent to `wake` when given.
    pub fn new(backends: Arc<Backends>, settings: LauncherSettings, wake: Option<Wake>) -> Self {
        Self {
            aws: AwsMachines::new(backends, settings, wake),
        }
    }
}

/// Runs the KubeZeroMachine controller until the manager shuts down. A machine whose launch or
/// termination batch ended is reconciled again at once.
pub async fn run(context: Context, backends: Arc<Backends>) {
    let (wake, woken) = tokio::sync::mpsc::unbounded_channel();
    let settings = backends.launcher.clone();
    let machines = Arc::new(MachineBackends::new(backends, settings, Some(wake)));
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
        move |machine, context| reconcile(machine, context, machines.clone()),
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

/// What the fetch step found.
struct Related {
    owner: Option<Machine>,
    cluster: Option<Cluster>,
}

async fn reconcile(
    machine: Arc<KubeZeroMachine>,
    context: Arc<Context>,
    backends: Arc<MachineBackends>,
) -> Result<Action, MachineError> {
    let _timer = context.metrics.reconcile(CONTROLLER);
    let name = machine.name_any();
    let namespace = namespace_of(machine.as_ref())?;
    let span = tracing::info_span!("reconcile", controller = CONTROLLER, %namespace, %name);
    async {
        let related = fetch(&context, &namespace, &machine).await?;
        let api: Api<KubeZeroMachine> = Api::namespaced(context.client.clone(), &namespace);
        if let Some(reason) = pause_reason(related.cluster.as_ref(), &machine.metadata) {
            let settling = settle_launch(&context, &machine, &related, &backends).await?;
            write_conditions(
                &api,
                machine.as_ref(),
                &context,
                &[paused_condition(Some(&reason))],
                &[READY_CONDITION],
                |conditions| with_conditions(previous_status(&machine), conditions),
            )
            .await?;
            return Ok(settling.map_or_else(Action::await_change, Action::requeue));
        }
        if machine.metadata.deletion_timestamp.is_some() {
            return delete(&api, &context, &machine, &related, &backends).await;
        }
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
            write_conditions(&api, machine.as_ref(), &context, &observed, &[], |conditions| {
                with_conditions(previous_status(&machine), conditions)
            })
            .await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        if finalizers::add(&api, machine.as_ref(), FINALIZER_MACHINE)
            .await
            .map_err(|source| finalizer_error(&namespace, &name, source))?
        {
            // The write is watched: the next reconcile provisions.
            return Ok(Action::await_change());
        }
        apply(&api, &context, &machine, &related, &backends).await
    }
    .instrument(span)
    .await
}

/// A paused machine still finishes the launch it joined ([`AwsMachines::settle_launch`]), so that
/// `clusterctl move`, which pauses the Cluster and then waits for the block-move annotation to go,
/// can proceed; `Some(wait)` while the launch is in flight.
async fn settle_launch(
    context: &Context,
    machine: &KubeZeroMachine,
    related: &Related,
    backends: &MachineBackends,
) -> Result<Option<Duration>, MachineError> {
    if !aws::blocks_move(machine) {
        return Ok(None);
    }
    let Some(cluster) = related.cluster.as_ref() else {
        return Ok(None);
    };
    let infra_cluster = infra_cluster_of(context, cluster).await?;
    let Some(infra_spec) = infra_cluster.as_ref().and_then(|infra| infra.spec.aws.as_ref()) else {
        return Ok(None);
    };
    backends
        .aws
        .settle_launch(&context.client, machine, &cluster.name_any(), infra_spec)
        .await
}

fn finalizer_error(namespace: &str, name: &str, source: kube::Error) -> MachineError {
    MachineError::Kube(Error::Finalizer {
        object: describe("KubeZeroMachine", namespace, name),
        message: source.to_string(),
        source: Some(Box::new(source)),
    })
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

async fn infra_cluster_of(context: &Context, cluster: &Cluster) -> Result<Option<KubeZeroCluster>, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    match cluster.spec.infrastructure_ref.as_ref() {
        Some(reference) if reference.refers_to(GROUP, "KubeZeroCluster") => {
            Api::<KubeZeroCluster>::namespaced(context.client.clone(), &namespace)
                .get_opt(&reference.name)
                .await
                .map_err(Error::read("KubeZeroCluster", &namespace, &reference.name))
        }
        _ => Ok(None),
    }
}

/// Why the machine cannot be provisioned yet (or on this platform), if so: the Cluster's
/// infrastructure, the platform match and the bootstrap data are checked in that order. Pure.
pub fn readiness(
    machine: &KubeZeroMachine,
    owner: &Machine,
    cluster: &Cluster,
    infra_cluster: Option<&KubeZeroCluster>,
) -> Option<Observed> {
    let waiting = |reason, message: String| Some(Observed::false_(READY_CONDITION, reason, message));
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
        return Some(Observed::false_(
            READY_CONDITION,
            reasons::PLATFORM_MISMATCH,
            format!(
                "the machine uses spec.{} but KubeZeroCluster {} uses spec.{}",
                machine.platform().as_str(),
                infra_cluster.name_any(),
                infra_cluster.platform().as_str()
            ),
        ));
    }
    let aws_status_missing = machine.platform() == Platform::Aws
        && infra_cluster
            .status
            .as_ref()
            .and_then(|s| s.aws.as_ref())
            .is_none();
    if !cluster.infrastructure_provisioned() || aws_status_missing {
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
    None
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
    backends: &MachineBackends,
) -> Result<Action, MachineError> {
    let (Some(owner), Some(cluster)) = (&related.owner, &related.cluster) else {
        return Ok(Action::await_change());
    };
    let infra_cluster = infra_cluster_of(context, cluster).await?;
    let observation = match readiness(machine, owner, cluster, infra_cluster.as_ref()) {
        Some(waiting) => Observation {
            requeue: if waiting.reason == reasons::PLATFORM_MISMATCH {
                Duration::from_secs(300)
            } else {
                WAIT_REQUEUE
            },
            ready: waiting,
            status: previous_status(machine),
        },
        None => match (machine.spec.aws.as_ref(), infra_cluster.as_ref()) {
            (Some(spec), Some(infra_cluster)) => {
                let (Some(infra_spec), Some(infra_status)) = (
                    infra_cluster.spec.aws.as_ref(),
                    infra_cluster.status.as_ref().and_then(|s| s.aws.as_ref()),
                ) else {
                    return Ok(Action::requeue(WAIT_REQUEUE));
                };
                let scope = Scope {
                    machine,
                    spec,
                    owner,
                    cluster: &cluster.name_any(),
                    infra_spec,
                    infra_status,
                };
                match backends.aws.provision(&context.client, scope).await {
                    Ok(observation) => observation,
                    Err(error) => return Err(report_failure(api, context, machine, error).await),
                }
            }
            _ => Observation {
                ready: backend_unavailable(machine.platform()),
                status: previous_status(machine),
                requeue: Duration::from_secs(300),
            },
        },
    };
    let Observation {
        ready,
        status,
        requeue,
    } = observation;
    write_conditions(
        api,
        machine,
        context,
        &[ready, paused_condition(None)],
        &[],
        |conditions| with_conditions(status, conditions),
    )
    .await?;
    Ok(Action::requeue(requeue))
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
        if let Err(write_error) = write_conditions(
            api,
            machine,
            context,
            &[ready, paused_condition(None)],
            &[],
            |conditions| with_conditions(previous_status(machine), conditions),
        )
        .await
        {
            tracing::warn!(error = %write_error, "writing the failure condition failed");
        }
    }
    error
}

async fn delete(
    api: &Api<KubeZeroMachine>,
    context: &Context,
    machine: &KubeZeroMachine,
    related: &Related,
    backends: &MachineBackends,
) -> Result<Action, MachineError> {
    let namespace = machine.namespace().unwrap_or_default();
    let name = machine.name_any();
    if !finalizers::has_finalizer(machine, FINALIZER_MACHINE) {
        return Ok(Action::await_change());
    }
    let release = match machine.platform() {
        Platform::Metal => {
            tracing::info!("metal backend not in this build: no resources to release");
            Release::Done
        }
        Platform::Aws => {
            let infra_cluster = match &related.cluster {
                Some(cluster) => infra_cluster_of(context, cluster).await?,
                None => None,
            };
            let cluster_name = related.cluster.as_ref().map(ResourceExt::name_any);
            let infra = match (&cluster_name, &infra_cluster) {
                (Some(cluster), Some(infra_cluster)) => infra_cluster.spec.aws.as_ref().map(|spec| {
                    (
                        cluster.as_str(),
                        spec,
                        infra_cluster.status.as_ref().and_then(|s| s.aws.as_ref()),
                    )
                }),
                _ => None,
            };
            match backends.aws.release(machine, related.owner.as_ref(), infra).await {
                Ok(Release::Done) => {
                    let cluster_deleting = related
                        .cluster
                        .as_ref()
                        .is_some_and(|c| c.metadata.deletion_timestamp.is_some());
                    if let (true, Some((cluster, spec, _))) = (cluster_deleting, infra) {
                        backends.aws.forget_cluster(&namespace, cluster, &spec.region);
                    }
                    Release::Done
                }
                Ok(release) => release,
                Err(error) => return Err(report_failure(api, context, machine, error).await),
            }
        }
    };
    match release {
        Release::Done => {
            finalizers::remove(api, machine, FINALIZER_MACHINE)
                .await
                .map_err(|source| finalizer_error(&namespace, &name, source))?;
            tracing::info!("released; finalizer removed");
            Ok(Action::await_change())
        }
        Release::Waiting(ready) => {
            write_conditions(
                api,
                machine,
                context,
                &[ready, paused_condition(None)],
                &[],
                |conditions| with_conditions(previous_status(machine), conditions),
            )
            .await?;
            Ok(Action::requeue(DELETE_REQUEUE))
        }
    }
}

/// `status` with `conditions`.
fn with_conditions(
    mut status: KubeZeroMachineStatus,
    conditions: Vec<kubezero_capi::conditions::Condition>,
) -> KubeZeroMachineStatus {
    status.conditions = conditions;
    status
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let backends = Arc::new(MachineBackends::new(
            Backends::new(&ProviderArgs::default()),
            LauncherSettings::default(),
            None,
        ));
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
