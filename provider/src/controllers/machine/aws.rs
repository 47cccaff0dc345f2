//! The AWS machine backend ([`AwsMachineBackend`]): finds, adopts or launches the machine's EC2
//! instance through the cluster's batcher ([`crate::aws::launcher`]), records its id on the object
//! right after creation ([`marks`]), reports it ([`observe`]), registers control-plane instances
//! with the API server load balancer, and on deletion deregisters, terminates and waits. The launch
//! itself is planned without a client ([`plan`]).

pub mod marks;
pub mod observe;
pub mod plan;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt as _;
use futures::future::BoxFuture;
use kube::ResourceExt;
use kubezero_capi::conditions::Observed;
use kubezero_capi::contract::{CLUSTER_NAME_LABEL, READY_CONDITION};
use kubezero_capi::core::Machine;
use kubezero_capi::runtime::errors::ErrorClass;
use serde_json::json;

use self::marks::{
    INSTANCE_ID_ANNOTATION, REGION_ANNOTATION, machine_key, mark_launching, persist, persisted_instance_id,
    unmark_launching,
};
pub use self::observe::{PROGRESS_REQUEUE, RESYNC};
use self::observe::{launching, resync_slot, vanished};
use super::backend::{Found, MachineBackend, Observation, Release, was_provisioned};
use super::gate::{self, Ready, blocks_move};
use super::scope::Scope;
use super::{MachineError, Platform};
use crate::api::KubeZeroMachine;
use crate::api::aws::{AwsClusterSpec, AwsClusterStatus, AwsMachineSpec};
use crate::aws::ami::{AmiError, AmiResolver};
use crate::aws::clients::{AwsClients, AwsIdentity, ClientRegistry};
use crate::aws::infrastructure::cluster_tags;
use crate::aws::instances::{Instance, InstanceState};
use crate::aws::launcher::{ClusterInstances, Freshness, LaunchStatus, Launcher, LauncherSettings, Wake};
use crate::aws::load_balancer::{deregister_targets, register_targets};
use crate::controllers::reasons;

/// The AWS backend of the machine controller: the process's client sets, the per-cluster launch
/// batchers and the image cache, shared by every reconcile.
#[derive(Debug)]
pub struct AwsMachineBackend {
    clients: Arc<ClientRegistry>,
    launcher: Launcher,
    amis: AmiResolver,
}

/// What an AWS machine is provisioned from: the machine's `spec.aws`, its owner Machine, the
/// Cluster's name (what AWS resources are tagged with) and the KubeZeroCluster's `spec.aws` and
/// `status.aws`.
#[derive(Clone, Copy, Debug)]
pub struct AwsInputs<'a> {
    /// The machine.
    pub machine: &'a KubeZeroMachine,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its `spec.aws`.
    pub spec: &'a AwsMachineSpec,
    /// The owner Machine.
    pub owner: &'a Machine,
    /// The Cluster's name.
    pub cluster: &'a str,
    /// The KubeZeroCluster's `spec.aws`.
    pub infra_spec: &'a AwsClusterSpec,
    /// The KubeZeroCluster's `status.aws`.
    pub infra_status: &'a AwsClusterStatus,
}

impl<'a> AwsInputs<'a> {
    /// The AWS sections of a machine past the gates; `None` when one is missing (the gates check
    /// the platform match and `status.aws`).
    pub fn of(ready: &Ready<'a>) -> Option<Self> {
        let infra_cluster = ready.infra_cluster;
        Some(Self {
            machine: ready.machine,
            namespace: ready.namespace,
            spec: ready.machine.spec.aws.as_ref()?,
            owner: ready.owner,
            cluster: ready.cluster.metadata.name.as_deref()?,
            infra_spec: infra_cluster.spec.aws.as_ref()?,
            infra_status: infra_cluster.status.as_ref()?.aws.as_ref()?,
        })
    }

    fn object(&self) -> String {
        kubezero_capi::runtime::reconcile::describe(
            "KubeZeroMachine",
            self.namespace,
            &self.machine.name_any(),
        )
    }
}

/// The wait reported should a machine reach the backend without its AWS sections.
fn inputs_missing(ready: &Ready<'_>) -> Observation {
    Observation {
        ready: Observed::false_(
            READY_CONDITION,
            reasons::WAITING_FOR_CLUSTER_INFRASTRUCTURE,
            format!(
                "waiting for the infrastructure of Cluster {} to be provisioned",
                ready.cluster.name_any()
            ),
        ),
        status: super::backend::previous_status(ready.machine),
        requeue: gate::WAIT_REQUEUE,
    }
}

impl MachineBackend for AwsMachineBackend {
    fn platform(&self) -> Platform {
        Platform::Aws
    }

    fn observe<'a>(
        &'a self,
        client: &'a kube::Client,
        ready: &'a Ready<'a>,
    ) -> BoxFuture<'a, Result<Found, MachineError>> {
        async move {
            match AwsInputs::of(ready) {
                Some(inputs) => self.find(client, &inputs).await,
                None => Ok(Found::Observed(inputs_missing(ready))),
            }
        }
        .boxed()
    }

    fn launch<'a>(
        &'a self,
        client: &'a kube::Client,
        ready: &'a Ready<'a>,
        user_data: Vec<u8>,
    ) -> BoxFuture<'a, Result<Observation, MachineError>> {
        async move {
            match AwsInputs::of(ready) {
                Some(inputs) => self.start(client, &inputs, user_data).await,
                None => Ok(inputs_missing(ready)),
            }
        }
        .boxed()
    }

    fn settle<'a>(
        &'a self,
        client: &'a kube::Client,
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Option<Duration>, MachineError>> {
        async move {
            let cluster = scope.cluster.as_ref().map(ResourceExt::name_any);
            let infra_spec = scope
                .infra_cluster
                .as_ref()
                .and_then(|infra_cluster| infra_cluster.spec.aws.as_ref());
            match (cluster, infra_spec) {
                (Some(cluster), Some(infra_spec)) => {
                    self.settle_launch(client, &scope.machine, &cluster, infra_spec)
                        .await
                }
                _ => Ok(None),
            }
        }
        .boxed()
    }

    fn release<'a>(&'a self, scope: &'a Scope) -> BoxFuture<'a, Result<Release, MachineError>> {
        async move {
            let cluster = scope.cluster.as_ref().map(ResourceExt::name_any);
            let infra = match (&cluster, &scope.infra_cluster) {
                (Some(cluster), Some(infra_cluster)) => infra_cluster.spec.aws.as_ref().map(|spec| {
                    (
                        cluster.as_str(),
                        spec,
                        infra_cluster
                            .status
                            .as_ref()
                            .and_then(|status| status.aws.as_ref()),
                    )
                }),
                _ => None,
            };
            let release = self
                .release_instance(&scope.machine, scope.owner.as_ref(), infra)
                .await?;
            let cluster_deleting = scope
                .cluster
                .as_ref()
                .is_some_and(|cluster| cluster.metadata.deletion_timestamp.is_some());
            if let (Release::Done, true, Some((cluster, spec, _))) = (&release, cluster_deleting, infra) {
                self.forget_cluster(&scope.namespace, cluster, &spec.region);
            }
            Ok(release)
        }
        .boxed()
    }
}

impl AwsMachineBackend {
    /// The backend over the process's AWS client sets, batching launches with `settings`; machines
    /// whose launch or termination batch ended are sent to `wake` when given.
    pub fn new(clients: Arc<ClientRegistry>, settings: LauncherSettings, wake: Option<Wake>) -> Self {
        let launcher = match wake {
            Some(wake) => Launcher::with_wake(settings, wake),
            None => Launcher::new(settings),
        };
        Self {
            clients,
            launcher,
            amis: AmiResolver::default(),
        }
    }

    async fn clients(&self, object: &str, region: &str) -> Result<AwsClients, MachineError> {
        self.clients
            .clients(&AwsIdentity::DefaultChain, region)
            .await
            .map_err(|error| {
                MachineError::cloud(object, reasons::AWS_REQUEST_FAILED, ErrorClass::Invalid, error)
            })
    }

    /// The client set and launch batcher of the machine's cluster.
    async fn cluster_instances(
        &self,
        inputs: &AwsInputs<'_>,
    ) -> Result<(AwsClients, Arc<ClusterInstances>), MachineError> {
        let aws = self.clients(&inputs.object(), &inputs.infra_spec.region).await?;
        let tags = cluster_tags(inputs.cluster, inputs.infra_spec);
        let instances = self.launcher.cluster(&aws, &tags, inputs.namespace);
        Ok((aws, instances))
    }

    /// Finds or adopts the machine's instance and observes it.
    async fn find(&self, client: &kube::Client, inputs: &AwsInputs<'_>) -> Result<Found, MachineError> {
        let machine = inputs.machine;
        let (aws, instances) = self.cluster_instances(inputs).await?;
        let key = machine_key(machine);
        let known_id = persisted_instance_id(machine);
        if known_id.is_none() && instances.launch_in_flight(&key) {
            return Ok(Found::Observed(launching(machine)));
        }
        // Only an instance that is starting is waited on; the launcher records what it launches,
        // and the launch batch itself looks again before it launches.
        let freshness = if known_id.is_some() && !was_provisioned(machine) {
            Freshness::Current
        } else {
            Freshness::Settled
        };
        let found = instances
            .find(&key, known_id.as_deref(), freshness)
            .await
            .map_err(|error| {
                MachineError::cloud(
                    &inputs.object(),
                    reasons::AWS_REQUEST_FAILED,
                    error.class(),
                    error,
                )
            })?;
        match (found, known_id) {
            (Some(instance), known_id) => {
                instances.keep_assigned(&instance, &key);
                let observation = self
                    .assigned(client, &aws, inputs, &instance, known_id.as_deref())
                    .await?;
                Ok(Found::Observed(observation))
            }
            (None, Some(id)) => Ok(Found::Observed(vanished(machine, &id))),
            (None, None) => Ok(Found::Missing),
        }
    }

    /// Resolves the image, plans the launch ([`plan::launch_spec`]) and joins the cluster's batch.
    async fn start(
        &self,
        client: &kube::Client,
        inputs: &AwsInputs<'_>,
        user_data: Vec<u8>,
    ) -> Result<Observation, MachineError> {
        let machine = inputs.machine;
        let object = inputs.object();
        let (aws, instances) = self.cluster_instances(inputs).await?;
        let ami = inputs.spec.ami.for_version(inputs.owner.spec.version.as_deref());
        let image = self.amis.resolve(&aws, &ami).await.map_err(|error| {
            let reason = match &error {
                AmiError::Describe { .. } | AmiError::DescribeId { .. }
                    if error.class() != ErrorClass::Invalid =>
                {
                    reasons::AWS_REQUEST_FAILED
                }
                _ => reasons::INVALID_AMI,
            };
            MachineError::cloud(&object, reason, error.class(), error)
        })?;
        let spec = plan::launch_spec(inputs, image, &user_data).map_err(|error| match error {
            plan::PlanError::NoSubnet { .. } => {
                MachineError::cloud(&object, reasons::NO_SUBNET, ErrorClass::Invalid, error)
            }
        })?;
        // Marked before the launch can start: move waits, the token is kept.
        mark_launching(client, machine).await?;
        let instance = match instances.request_launch(machine_key(machine), Arc::new(spec)) {
            LaunchStatus::InFlight => return Ok(launching(machine)),
            LaunchStatus::Done(result) => match *result {
                Ok(instance) => instance,
                Err(error) => {
                    unmark_launching(client, machine).await?;
                    let reason = if error.class() == ErrorClass::Invalid {
                        reasons::INVALID_LAUNCH_SPEC
                    } else {
                        reasons::INSTANCE_LAUNCH_FAILED
                    };
                    return Err(MachineError::cloud(&object, reason, error.class(), error));
                }
            },
        };
        self.assigned(client, &aws, inputs, &instance, None).await
    }

    /// Records `instance` on the machine when it is new to it (`known_id` is the id recorded
    /// before), registers a running control-plane instance with the API server load balancer
    /// once, and observes it.
    async fn assigned(
        &self,
        client: &kube::Client,
        aws: &AwsClients,
        inputs: &AwsInputs<'_>,
        instance: &Instance,
        known_id: Option<&str>,
    ) -> Result<Observation, MachineError> {
        let machine = inputs.machine;
        if known_id != Some(instance.id.as_str()) || blocks_move(machine) {
            persist(client, machine, instance, aws.region()).await?;
            tracing::info!(instance = %instance.id, zone = %instance.zone, "instance assigned to the machine");
        }
        if instance.state == InstanceState::Running
            && !was_provisioned(machine)
            && inputs.owner.is_control_plane()
        {
            let target_group = &inputs.infra_status.load_balancer.target_group_arn;
            if !target_group.is_empty() {
                register_targets(aws, target_group, std::slice::from_ref(&instance.id))
                    .await
                    .map_err(|error| {
                        MachineError::cloud(
                            &inputs.object(),
                            reasons::LOAD_BALANCER_REGISTRATION_FAILED,
                            error.class(),
                            error,
                        )
                    })?;
            }
        }
        Ok(observe::observe(
            machine,
            instance,
            resync_slot(inputs.namespace, inputs.cluster, SystemTime::now()),
        ))
    }

    /// While the machine is paused (as `clusterctl move` pauses it), finishes what cannot be paused:
    /// a launch the machine joined. An ended launch's instance is recorded and the move block
    /// removed; a launch still in flight answers `Some(wait)`. With no launch known to this process
    /// (it restarted), the instance is looked up by its machine tag and recorded when found; the
    /// mark goes either way (an instance that is not tagged yet is adopted by its launch spec later).
    async fn settle_launch(
        &self,
        client: &kube::Client,
        machine: &KubeZeroMachine,
        cluster: &str,
        infra_spec: &AwsClusterSpec,
    ) -> Result<Option<Duration>, MachineError> {
        if !blocks_move(machine) {
            return Ok(None);
        }
        let namespace = machine.namespace().unwrap_or_default();
        let object =
            kubezero_capi::runtime::reconcile::describe("KubeZeroMachine", &namespace, &machine.name_any());
        let aws = self.clients(&object, &infra_spec.region).await?;
        let instances = self
            .launcher
            .cluster(&aws, &cluster_tags(cluster, infra_spec), &namespace);
        let key = machine_key(machine);
        if instances.launch_in_flight(&key) {
            return Ok(Some(PROGRESS_REQUEUE));
        }
        let instance = match instances.take_launch_result(&key) {
            Some(Ok(instance)) => Some(instance),
            Some(Err(_)) => None,
            None => instances
                .find(&key, None, Freshness::Settled)
                .await
                .map_err(|error| {
                    MachineError::cloud(&object, reasons::AWS_REQUEST_FAILED, error.class(), error)
                })?,
        };
        match instance {
            Some(instance) => {
                persist(client, machine, &instance, aws.region()).await?;
                tracing::info!(instance = %instance.id, "launch settled while paused");
            }
            None => unmark_launching(client, machine).await?,
        }
        Ok(None)
    }

    /// Drops the launch batcher of cluster `cluster` in `namespace` and `region` (the Cluster is
    /// being deleted and a machine of it was released) once nothing of it is in flight.
    fn forget_cluster(&self, namespace: &str, cluster: &str, region: &str) {
        if self.launcher.forget(region, namespace, cluster) {
            tracing::debug!(cluster, "launch batcher of the deleted cluster dropped");
        }
    }

    /// Deregisters (control plane) and terminates the machine's instance and waits for it to be
    /// gone. `infra` is the Cluster name and the KubeZeroCluster's spec and status when they exist.
    async fn release_instance(
        &self,
        machine: &KubeZeroMachine,
        owner: Option<&Machine>,
        infra: Option<(&str, &AwsClusterSpec, Option<&AwsClusterStatus>)>,
    ) -> Result<Release, MachineError> {
        let namespace = machine.namespace().unwrap_or_default();
        let object =
            kubezero_capi::runtime::reconcile::describe("KubeZeroMachine", &namespace, &machine.name_any());
        let launched_by_us = machine.annotations().contains_key(INSTANCE_ID_ANNOTATION);
        let cluster_has_aws = infra.is_some_and(|(_, _, status)| status.is_some());
        if !launched_by_us && !cluster_has_aws {
            // Instances are only launched once the cluster reports its AWS infrastructure, and
            // their id is annotated right after launch: with neither, nothing was launched here.
            tracing::info!("no instance was launched for this machine; nothing to release");
            return Ok(Release::Done);
        }
        let known_id = persisted_instance_id(machine);
        let cluster = infra
            .map(|(cluster, _, _)| cluster.to_owned())
            .or_else(|| owner.map(|o| o.spec.cluster_name.clone()))
            .or_else(|| machine.labels().get(CLUSTER_NAME_LABEL).cloned())
            .filter(|c| !c.is_empty());
        let region = infra
            .map(|(_, spec, _)| spec.region.clone())
            .or_else(|| machine.annotations().get(REGION_ANNOTATION).cloned())
            .filter(|r| !r.is_empty());
        let (Some(cluster), Some(region)) = (cluster, region) else {
            tracing::info!(instance = ?known_id, "no cluster or region known; nothing to release");
            return Ok(Release::Done);
        };
        let aws = self.clients(&object, &region).await?;
        let default_spec;
        let infra_spec = match infra {
            Some((_, spec, _)) => spec,
            None => {
                default_spec =
                    serde_json::from_value::<AwsClusterSpec>(json!({"region": region})).map_err(|error| {
                        MachineError::cloud(&object, reasons::AWS_REQUEST_FAILED, ErrorClass::Invalid, error)
                    })?;
                &default_spec
            }
        };
        let tags = cluster_tags(&cluster, infra_spec);
        let instances: Arc<ClusterInstances> = self.launcher.cluster(&aws, &tags, &namespace);
        let key = machine_key(machine);
        if instances.launch_in_flight(&key) {
            // Its instance may still appear: terminate it once the batch has ended.
            return Ok(Release::Waiting(Observed::false_(
                READY_CONDITION,
                reasons::INSTANCE_TERMINATING,
                "waiting for the machine's launch batch to end before terminating its instance",
            )));
        }
        // A live instance is terminated whatever its last seen state; one that is ending is waited
        // on until a current view no longer lists it.
        let mut found = instances
            .find(&key, known_id.as_deref(), Freshness::Settled)
            .await;
        if matches!(&found, Ok(Some(instance)) if instance.state.is_ending()) {
            found = instances
                .find(&key, known_id.as_deref(), Freshness::Current)
                .await;
        }
        let found = found
            .map_err(|error| MachineError::cloud(&object, reasons::DELETION_FAILED, error.class(), error))?;
        let Some(instance) = found else {
            return Ok(Release::Done);
        };
        if instance.state.is_ending() {
            return Ok(Release::Waiting(Observed::false_(
                READY_CONDITION,
                reasons::INSTANCE_TERMINATING,
                format!("waiting for instance {} to terminate", instance.id),
            )));
        }
        let control_plane = owner.is_none_or(Machine::is_control_plane);
        let target_group = infra
            .and_then(|(_, _, status)| status)
            .map(|status| status.load_balancer.target_group_arn.as_str())
            .filter(|arn| !arn.is_empty());
        if let (true, Some(target_group)) = (control_plane, target_group) {
            deregister_targets(&aws, target_group, std::slice::from_ref(&instance.id))
                .await
                .map_err(|error| {
                    MachineError::cloud(&object, reasons::DELETION_FAILED, error.class(), error)
                })?;
        }
        if let Some(Err(error)) = instances.request_termination(key, &instance.id) {
            return Err(MachineError::cloud(
                &object,
                reasons::DELETION_FAILED,
                error.class(),
                error,
            ));
        }
        tracing::info!(instance = %instance.id, "instance termination requested");
        Ok(Release::Waiting(Observed::false_(
            READY_CONDITION,
            reasons::INSTANCE_TERMINATING,
            format!("instance {} is terminating", instance.id),
        )))
    }
}
