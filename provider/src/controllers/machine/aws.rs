//! The AWS part of the KubeZeroMachine controller: find or launch the machine's EC2 instance
//! through the cluster's batcher ([`crate::aws::launcher`]), persist its id on the object right
//! after creation, report it (provider ID, addresses, zone, spot), register control-plane
//! instances with the API server load balancer, and on deletion deregister, terminate and wait.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use kubezero_capi::conditions::Observed;
use kubezero_capi::contract::{
    BLOCK_MOVE_ANNOTATION, CLUSTER_NAME_LABEL, InfrastructureInitialization, MachineAddress,
    MachineAddressType, READY_CONDITION,
};
use kubezero_capi::core::Machine;
use kubezero_capi::runtime::errors::ErrorClass;
use kubezero_capi::runtime::reconcile::describe;
use serde_json::json;

use super::{MachineError, reasons};
use crate::api::aws::{AwsClusterSpec, AwsClusterStatus, AwsMachineSpec, AwsSubnetStatus};
use crate::api::{KubeZeroMachine, KubeZeroMachineStatus};
use crate::aws::ami::{AmiError, AmiResolver};
use crate::aws::clients::{AwsClients, AwsIdentity};
use crate::aws::infrastructure::cluster_tags;
use crate::aws::instances::{Instance, InstanceState, LaunchSpec, MachineKey, parse_provider_id};
use crate::aws::launcher::{ClusterInstances, Freshness, LaunchStatus, Launcher, LauncherSettings, Wake};
use crate::aws::load_balancer::{deregister_targets, register_targets};
use crate::aws::tags::{OWNED, ROLE_TAG, Role};
use crate::settings::Backends;

/// Annotation holding the instance id, written right after launch (survives `clusterctl move`,
/// which drops status).
pub const INSTANCE_ID_ANNOTATION: &str = "kubezero.io/instance-id";
/// Annotation holding the instance's region, so deletion works when the KubeZeroCluster is gone.
pub const REGION_ANNOTATION: &str = "kubezero.io/region";
/// Annotation holding the machine's launch token (ClientToken material, [`MachineKey::launch_token`]):
/// the object's UID when it first asked for a launch, so that the token survives `clusterctl move`.
pub const LAUNCH_TOKEN_ANNOTATION: &str = "kubezero.io/launch-token";
/// Bootstrap data Secret key holding the user data.
pub const BOOTSTRAP_VALUE_KEY: &str = "value";

/// How soon to look again while an instance starts or stops.
pub const PROGRESS_REQUEUE: Duration = Duration::from_secs(5);
/// How often a running instance is checked again (at its cluster's slot, [`resync_slot`]).
pub const RESYNC: Duration = Duration::from_secs(300);
/// How soon to look again while waiting for bootstrap data.
pub const BOOTSTRAP_REQUEUE: Duration = Duration::from_secs(10);
/// How soon to look again while the machine's launch batch runs, should its end not wake the
/// machine (the wake channel usually does within seconds).
pub const LAUNCH_REQUEUE: Duration = Duration::from_secs(30);

/// The AWS backend of the machine controller: client sets, the per-cluster launch batchers and
/// the image cache, shared by every reconcile.
#[derive(Debug)]
pub struct AwsMachines {
    backends: Arc<Backends>,
    launcher: Launcher,
    amis: AmiResolver,
}

/// What one provisioning pass observed: the `Ready` condition, the status fields and when to
/// look again.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The `Ready` condition.
    pub ready: Observed,
    /// Status without conditions.
    pub status: KubeZeroMachineStatus,
    /// When to reconcile again.
    pub requeue: Duration,
}

/// Where a deletion stands.
#[derive(Clone, Debug)]
pub enum Release {
    /// The instance is gone; the finalizer can go.
    Done,
    /// The instance is still terminating.
    Waiting(Observed),
}

/// The objects one pass works on.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// The machine.
    pub machine: &'a KubeZeroMachine,
    /// Its `spec.aws`.
    pub spec: &'a AwsMachineSpec,
    /// The owner Machine.
    pub owner: &'a Machine,
    /// The Cluster's name (what AWS resources are tagged with).
    pub cluster: &'a str,
    /// The KubeZeroCluster's `spec.aws`.
    pub infra_spec: &'a AwsClusterSpec,
    /// The KubeZeroCluster's `status.aws`.
    pub infra_status: &'a AwsClusterStatus,
}

/// The status fields of `machine` as last written (for passes that learn nothing new).
pub fn previous_status(machine: &KubeZeroMachine) -> KubeZeroMachineStatus {
    let mut status = machine.status.clone().unwrap_or_default();
    status.conditions.clear();
    status
}

fn was_provisioned(machine: &KubeZeroMachine) -> bool {
    machine
        .status
        .as_ref()
        .and_then(|s| s.initialization.as_ref())
        .and_then(|i| i.provisioned)
        == Some(true)
}

/// The instance id persisted on `machine` (annotation, else `spec.providerID`).
pub fn persisted_instance_id(machine: &KubeZeroMachine) -> Option<String> {
    machine
        .annotations()
        .get(INSTANCE_ID_ANNOTATION)
        .filter(|id| !id.is_empty())
        .cloned()
        .or_else(|| {
            machine
                .spec
                .provider_id
                .as_deref()
                .and_then(parse_provider_id)
                .map(|(_, id)| id.to_owned())
        })
}

fn machine_key(machine: &KubeZeroMachine) -> MachineKey {
    MachineKey {
        namespace: machine.namespace().unwrap_or_default(),
        name: machine.name_any(),
        launch_token: launch_token(machine),
    }
}

/// The machine's launch token: the annotated one, else its UID (what the annotation will hold).
fn launch_token(machine: &KubeZeroMachine) -> String {
    machine
        .annotations()
        .get(LAUNCH_TOKEN_ANNOTATION)
        .filter(|token| !token.is_empty())
        .cloned()
        .unwrap_or_else(|| machine.uid().unwrap_or_default())
}

/// Whether the machine is marked as launching (`clusterctl move` waits for it).
pub fn blocks_move(machine: &KubeZeroMachine) -> bool {
    machine.annotations().contains_key(BLOCK_MOVE_ANNOTATION)
}

/// The subnets a machine may launch into: the spec's subnet, else the subnet of the Machine's
/// failure domain (private, public when the zone has none), else one such subnet per zone (private
/// zones, or all when there are none), over which the launcher spreads batches
/// ([`crate::aws::instances::spread`]). Empty when nothing matches. Pure.
pub fn choose_subnets(
    subnets: &[AwsSubnetStatus],
    spec_subnet: Option<&str>,
    failure_domain: Option<&str>,
) -> Vec<String> {
    if let Some(id) = spec_subnet {
        return vec![id.to_owned()];
    }
    let in_zone = |zone: &str| {
        let pick = |public| {
            subnets
                .iter()
                .find(|s| s.availability_zone == zone && s.public == public)
        };
        pick(false).or_else(|| pick(true)).map(|s| s.id.clone())
    };
    if let Some(zone) = failure_domain.filter(|z| !z.is_empty()) {
        return in_zone(zone).into_iter().collect();
    }
    let mut zones: Vec<&str> = subnets
        .iter()
        .filter(|s| !s.public)
        .map(|s| s.availability_zone.as_str())
        .collect();
    if zones.is_empty() {
        zones = subnets.iter().map(|s| s.availability_zone.as_str()).collect();
    }
    zones.sort_unstable();
    zones.dedup();
    zones.into_iter().filter_map(in_zone).collect()
}

/// The `status.addresses` of an instance.
pub fn addresses(instance: &Instance) -> Vec<MachineAddress> {
    [
        (MachineAddressType::InternalIp, &instance.private_ip),
        (MachineAddressType::InternalDns, &instance.private_dns),
        (MachineAddressType::ExternalIp, &instance.public_ip),
        (MachineAddressType::ExternalDns, &instance.public_dns),
    ]
    .into_iter()
    .filter_map(|(address_type, value)| {
        value.as_ref().map(|address| MachineAddress {
            address_type,
            address: address.clone(),
        })
    })
    .collect()
}

/// The time from `now` to the next resync slot of the machines of cluster `namespace/cluster`: one
/// every [`RESYNC`], at an offset taken from the cluster's name. The running machines of a cluster
/// are checked together and share one DescribeInstances (the cluster's view is reused for a few
/// seconds) instead of one call each at times of their own; clusters are spread over the interval.
/// At least a second. Pure.
pub fn resync_slot(namespace: &str, cluster: &str, now: SystemTime) -> Duration {
    let period = RESYNC.as_millis() as u64;
    // FNV-1a: a fixed function of the name, the same in every process.
    let offset = format!("{namespace}/{cluster}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
        % period;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let since_slot = (now % period + period - offset) % period;
    Duration::from_millis((period - since_slot).max(1000))
}

/// The observation of an existing instance; a running one is looked at again after `resync`. Pure.
pub fn observe(machine: &KubeZeroMachine, instance: &Instance, resync: Duration) -> Observation {
    let mut status = previous_status(machine);
    let provisioned = was_provisioned(machine) || instance.state == InstanceState::Running;
    status.initialization = Some(InfrastructureInitialization {
        provisioned: provisioned.then_some(true),
    });
    if !instance.state.is_ending() {
        status.addresses = addresses(instance);
    }
    if !instance.zone.is_empty() {
        status.failure_domain = Some(instance.zone.clone());
    }
    status.interruptible = instance.spot.then_some(true);
    let (ready, requeue) = match instance.state {
        InstanceState::Running => (
            Observed::true_(
                READY_CONDITION,
                reasons::INSTANCE_RUNNING,
                format!("instance {} is running in {}", instance.id, instance.zone),
            ),
            resync,
        ),
        InstanceState::Pending => (
            Observed::false_(
                READY_CONDITION,
                reasons::INSTANCE_PROVISIONING,
                format!("instance {} is starting", instance.id),
            ),
            PROGRESS_REQUEUE,
        ),
        InstanceState::Stopping | InstanceState::Stopped => (
            Observed::false_(
                READY_CONDITION,
                reasons::INSTANCE_STOPPED,
                format!("instance {} is {}", instance.id, instance.state.as_str()),
            ),
            Duration::from_secs(60),
        ),
        InstanceState::ShuttingDown | InstanceState::Terminated => (
            Observed::false_(
                READY_CONDITION,
                reasons::INSTANCE_TERMINATED,
                format!(
                    "instance {} is {}; the machine must be replaced",
                    instance.id,
                    instance.state.as_str()
                ),
            ),
            RESYNC,
        ),
    };
    Observation {
        ready,
        status,
        requeue,
    }
}

impl AwsMachines {
    /// The backend over the process's AWS client sets; machines whose launch or termination
    /// batch ended are sent to `wake` when given.
    pub fn new(backends: Arc<Backends>, settings: LauncherSettings, wake: Option<Wake>) -> Self {
        let launcher = match wake {
            Some(wake) => Launcher::with_wake(settings, wake),
            None => Launcher::new(settings),
        };
        Self {
            backends,
            launcher,
            amis: AmiResolver::default(),
        }
    }

    async fn clients(&self, object: &str, region: &str) -> Result<AwsClients, MachineError> {
        self.backends
            .aws
            .clients(&AwsIdentity::DefaultChain, region)
            .await
            .map_err(|error| {
                MachineError::cloud(object, reasons::AWS_REQUEST_FAILED, ErrorClass::Invalid, error)
            })
    }

    /// Finds, adopts or launches the machine's instance and observes it.
    pub async fn provision(
        &self,
        client: &kube::Client,
        scope: Scope<'_>,
    ) -> Result<Observation, MachineError> {
        let machine = scope.machine;
        let namespace = machine.namespace().unwrap_or_default();
        let object = describe("KubeZeroMachine", &namespace, &machine.name_any());
        let aws = self.clients(&object, &scope.infra_spec.region).await?;
        let tags = cluster_tags(scope.cluster, scope.infra_spec);
        let instances = self.launcher.cluster(&aws, &tags, &namespace);
        let key = machine_key(machine);
        let known_id = persisted_instance_id(machine);
        if known_id.is_none() && instances.launch_in_flight(&key) {
            return Ok(launching(machine));
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
                MachineError::cloud(&object, reasons::AWS_REQUEST_FAILED, error.class(), error)
            })?;
        let instance = match (found, &known_id) {
            (Some(instance), _) => {
                instances.keep_assigned(&instance, &key);
                instance
            }
            (None, Some(id)) => {
                let mut status = previous_status(machine);
                status.addresses.clear();
                return Ok(Observation {
                    ready: Observed::false_(
                        READY_CONDITION,
                        reasons::INSTANCE_TERMINATED,
                        format!("instance {id} no longer exists; the machine must be replaced"),
                    ),
                    status,
                    // EC2 reads are eventually consistent: a just-launched instance may be missing.
                    requeue: Duration::from_secs(30),
                });
            }
            (None, None) => match self.launch_spec(client, &aws, scope, &object).await? {
                Next::Launch(spec) => {
                    // Marked before the launch can start: move waits, the token is kept.
                    mark_launching(client, machine).await?;
                    match instances.request_launch(key, Arc::new(spec)) {
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
                    }
                }
                Next::Wait(observation) => return Ok(observation),
            },
        };
        if known_id.as_deref() != Some(instance.id.as_str()) || blocks_move(machine) {
            persist(client, machine, &instance, aws.region()).await?;
            tracing::info!(instance = %instance.id, zone = %instance.zone, "instance assigned to the machine");
        }
        if instance.state == InstanceState::Running
            && !was_provisioned(machine)
            && scope.owner.is_control_plane()
        {
            let target_group = &scope.infra_status.load_balancer.target_group_arn;
            if !target_group.is_empty() {
                register_targets(&aws, target_group, std::slice::from_ref(&instance.id))
                    .await
                    .map_err(|error| {
                        MachineError::cloud(
                            &object,
                            reasons::LOAD_BALANCER_REGISTRATION_FAILED,
                            error.class(),
                            error,
                        )
                    })?;
            }
        }
        Ok(observe(
            machine,
            &instance,
            resync_slot(&namespace, scope.cluster, SystemTime::now()),
        ))
    }

    async fn launch_spec(
        &self,
        client: &kube::Client,
        aws: &AwsClients,
        scope: Scope<'_>,
        object: &str,
    ) -> Result<Next, MachineError> {
        let machine = scope.machine;
        let namespace = machine.namespace().unwrap_or_default();
        let Some(user_data) = bootstrap_data(client, &namespace, scope.owner).await? else {
            return Ok(Next::Wait(Observation {
                ready: Observed::false_(
                    READY_CONDITION,
                    reasons::WAITING_FOR_BOOTSTRAP_DATA,
                    format!(
                        "waiting for the bootstrap data Secret of Machine {} to hold a value",
                        scope.owner.name_any()
                    ),
                ),
                status: previous_status(machine),
                requeue: BOOTSTRAP_REQUEUE,
            }));
        };
        let ami = scope.spec.ami.for_version(scope.owner.spec.version.as_deref());
        let image = self.amis.resolve(aws, &ami).await.map_err(|error| {
            let reason = match &error {
                AmiError::Describe { .. } | AmiError::DescribeId { .. }
                    if error.class() != ErrorClass::Invalid =>
                {
                    reasons::AWS_REQUEST_FAILED
                }
                _ => reasons::INVALID_AMI,
            };
            MachineError::cloud(object, reason, error.class(), error)
        })?;
        let subnet_ids = choose_subnets(
            &scope.infra_status.subnets,
            scope.spec.subnet.as_ref().map(|s| s.id.as_str()),
            scope.owner.spec.failure_domain.as_deref(),
        );
        if subnet_ids.is_empty() {
            return Err(MachineError::cloud(
                object,
                reasons::NO_SUBNET,
                ErrorClass::Invalid,
                format!(
                    "no subnet of the cluster in failure domain {:?}",
                    scope.owner.spec.failure_domain
                ),
            ));
        }
        let control_plane = scope.owner.is_control_plane();
        let (role, role_group, profile) = if control_plane {
            (
                Role::ControlPlane,
                &scope.infra_status.security_groups.control_plane,
                &scope.infra_status.instance_profiles.control_plane,
            )
        } else {
            (
                Role::Node,
                &scope.infra_status.security_groups.node,
                &scope.infra_status.instance_profiles.node,
            )
        };
        let mut security_group_ids: Vec<String> = Some(role_group.clone())
            .filter(|g| !g.is_empty())
            .into_iter()
            .collect();
        security_group_ids.extend(scope.spec.additional_security_groups.iter().cloned());
        let cluster_tags = cluster_tags(scope.cluster, scope.infra_spec);
        let mut tags: BTreeMap<String, String> = scope.infra_spec.additional_tags.clone();
        tags.extend(scope.spec.additional_tags.clone());
        tags.insert(cluster_tags.owned_key(), OWNED.to_owned());
        tags.insert(cluster_tags.kubernetes_key(), OWNED.to_owned());
        tags.insert(ROLE_TAG.to_owned(), role.as_str().to_owned());
        Ok(Next::Launch(LaunchSpec {
            image_id: image.id,
            root_device_name: image.root_device_name,
            instance_type: scope.spec.instance_type.clone(),
            subnet_ids,
            security_group_ids,
            instance_profile: Some(profile.clone()).filter(|p| !p.is_empty()),
            user_data: aws_smithy_types::base64::encode(user_data),
            root_volume: scope.spec.root_volume.clone(),
            extra_volumes: scope.spec.extra_volumes.clone(),
            imds: scope.spec.imds.clone(),
            spot: scope.spec.spot.clone(),
            ssh_key_name: scope.spec.ssh_key_name.clone(),
            tags,
        }))
    }

    /// While the machine is paused (as `clusterctl move` pauses it), finishes what cannot be paused:
    /// a launch the machine joined. An ended launch's instance is recorded and the move block
    /// removed; a launch still in flight answers `Some(wait)`. With no launch known to this process
    /// (it restarted), the instance is looked up by its machine tag and recorded when found; the
    /// mark goes either way (an instance that is not tagged yet is adopted by its launch spec later).
    pub async fn settle_launch(
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
        let object = describe("KubeZeroMachine", &namespace, &machine.name_any());
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
    pub fn forget_cluster(&self, namespace: &str, cluster: &str, region: &str) {
        if self.launcher.forget(region, namespace, cluster) {
            tracing::debug!(cluster, "launch batcher of the deleted cluster dropped");
        }
    }

    /// Deregisters (control plane) and terminates the machine's instance and waits for it to be
    /// gone. `infra` is the Cluster name and the KubeZeroCluster's spec and status when they exist.
    pub async fn release(
        &self,
        machine: &KubeZeroMachine,
        owner: Option<&Machine>,
        infra: Option<(&str, &AwsClusterSpec, Option<&AwsClusterStatus>)>,
    ) -> Result<Release, MachineError> {
        let namespace = machine.namespace().unwrap_or_default();
        let object = describe("KubeZeroMachine", &namespace, &machine.name_any());
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

/// The observation while the machine's launch batch runs.
fn launching(machine: &KubeZeroMachine) -> Observation {
    Observation {
        ready: Observed::false_(
            READY_CONDITION,
            reasons::INSTANCE_PROVISIONING,
            "waiting for the machine's launch batch (one RunInstances for identical machines)",
        ),
        status: previous_status(machine),
        requeue: LAUNCH_REQUEUE,
    }
}

/// What provisioning does next when the machine has no instance.
enum Next {
    Launch(LaunchSpec),
    Wait(Observation),
}

/// Marks `machine` as launching before it joins a launch batch: [`BLOCK_MOVE_ANNOTATION`] (so that
/// `clusterctl move` waits until the instance id is recorded or the launch failed) and its
/// [`LAUNCH_TOKEN_ANNOTATION`]. Nothing is written when both are there.
async fn mark_launching(client: &kube::Client, machine: &KubeZeroMachine) -> Result<(), MachineError> {
    let annotations = machine.annotations();
    if annotations.contains_key(BLOCK_MOVE_ANNOTATION) && annotations.contains_key(LAUNCH_TOKEN_ANNOTATION) {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": {
        BLOCK_MOVE_ANNOTATION: "",
        LAUNCH_TOKEN_ANNOTATION: launch_token(machine),
    }}});
    patch_machine(client, machine, &patch).await
}

/// Removes [`BLOCK_MOVE_ANNOTATION`] when no launch of `machine` is in flight any more.
async fn unmark_launching(client: &kube::Client, machine: &KubeZeroMachine) -> Result<(), MachineError> {
    if !blocks_move(machine) {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": {BLOCK_MOVE_ANNOTATION: null}}});
    patch_machine(client, machine, &patch).await
}

async fn patch_machine(
    client: &kube::Client,
    machine: &KubeZeroMachine,
    patch: &serde_json::Value,
) -> Result<(), MachineError> {
    let namespace = machine.namespace().unwrap_or_default();
    let name = machine.name_any();
    Api::<KubeZeroMachine>::namespaced(client.clone(), &namespace)
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(kubezero_capi::runtime::reconcile::Error::write(
            "update",
            "KubeZeroMachine",
            &namespace,
            &name,
        ))?;
    Ok(())
}

/// The user data of the owner's bootstrap data Secret (key `value`, passed on as stored, e.g.
/// gzip'd); `None` while the Secret or the key is missing.
async fn bootstrap_data(
    client: &kube::Client,
    namespace: &str,
    owner: &Machine,
) -> Result<Option<Vec<u8>>, MachineError> {
    let Some(name) = owner
        .spec
        .bootstrap
        .data_secret_name
        .as_deref()
        .filter(|n| !n.is_empty())
    else {
        return Ok(None);
    };
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(kubezero_capi::runtime::reconcile::Error::read(
            "Secret", namespace, name,
        ))?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|mut data| data.remove(BOOTSTRAP_VALUE_KEY))
        .map(|bytes| bytes.0)
        .filter(|bytes| !bytes.is_empty()))
}

/// Persists the instance id, region and provider ID on the object (metadata and spec survive
/// `clusterctl move`; status does not) and ends its launching mark.
async fn persist(
    client: &kube::Client,
    machine: &KubeZeroMachine,
    instance: &Instance,
    region: &str,
) -> Result<(), MachineError> {
    let mut patch = json!({"metadata": {"annotations": {
        INSTANCE_ID_ANNOTATION: instance.id,
        REGION_ANNOTATION: region,
        BLOCK_MOVE_ANNOTATION: null,
    }}});
    if machine.spec.provider_id.is_none() && !instance.zone.is_empty() {
        patch["spec"] = json!({"providerID": instance.provider_id()});
    }
    patch_machine(client, machine, &patch).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(id: &str, zone: &str, public: bool) -> AwsSubnetStatus {
        AwsSubnetStatus {
            id: id.into(),
            availability_zone: zone.into(),
            public,
        }
    }

    #[test]
    fn subnets_follow_spec_then_failure_domain_else_one_private_subnet_per_zone() {
        let subnets = vec![
            subnet("subnet-pub-a", "us-east-1a", true),
            subnet("subnet-priv-a", "us-east-1a", false),
            subnet("subnet-pub-b", "us-east-1b", true),
            subnet("subnet-priv-b", "us-east-1b", false),
            subnet("subnet-pub-c", "us-east-1c", true),
        ];
        assert_eq!(
            choose_subnets(&subnets, Some("subnet-x"), Some("us-east-1a")),
            ["subnet-x"]
        );
        assert_eq!(
            choose_subnets(&subnets, None, Some("us-east-1a")),
            ["subnet-priv-a"]
        );
        assert_eq!(
            choose_subnets(&subnets, None, Some("us-east-1c")),
            ["subnet-pub-c"],
            "public when the zone has no private subnet"
        );
        assert!(choose_subnets(&subnets, None, Some("us-east-1d")).is_empty());
        assert_eq!(
            choose_subnets(&subnets, None, None),
            ["subnet-priv-a", "subnet-priv-b"],
            "spread over the private zones"
        );
    }

    fn instance(state: InstanceState, spot: bool) -> Instance {
        Instance {
            id: "i-0123456789abcdef0".into(),
            state,
            zone: "us-east-1a".into(),
            subnet_id: Some("subnet-priv-a".into()),
            private_ip: Some("10.0.1.23".into()),
            private_dns: Some("ip-10-0-1-23.ec2.internal".into()),
            public_ip: None,
            public_dns: None,
            machine: Some("default/m".into()),
            launch_spec: None,
            spot,
            launched_at: None,
        }
    }

    #[test]
    fn running_instance_is_provisioned_with_addresses_zone_and_spot_flag() {
        let machine = KubeZeroMachine::new("m", Default::default());
        let pending = observe(&machine, &instance(InstanceState::Pending, false), RESYNC);
        assert_eq!(pending.ready.reason, reasons::INSTANCE_PROVISIONING);
        assert_eq!(pending.requeue, PROGRESS_REQUEUE);
        assert_eq!(pending.status.initialization.as_ref().unwrap().provisioned, None);
        let running = observe(&machine, &instance(InstanceState::Running, true), RESYNC);
        assert_eq!(running.ready.reason, reasons::INSTANCE_RUNNING);
        assert_eq!(
            running.status.initialization.as_ref().unwrap().provisioned,
            Some(true)
        );
        assert_eq!(running.status.failure_domain.as_deref(), Some("us-east-1a"));
        assert_eq!(running.status.interruptible, Some(true));
        assert_eq!(running.status.addresses.len(), 2);
        assert_eq!(running.status.addresses[0].address, "10.0.1.23");
    }

    #[test]
    fn running_machines_of_one_cluster_resync_at_the_same_instant() {
        let at = |seconds: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds);
        let slot = |cluster: &str, seconds: u64| {
            let wait = resync_slot("team-a", cluster, at(seconds));
            assert!(wait >= Duration::from_secs(1) && wait <= RESYNC, "{wait:?}");
            at(seconds) + wait
        };
        // Machines that became ready at different times of one interval meet at one slot.
        let first = slot("prod", 0);
        for seconds in [1, 17, 120, 250] {
            let later = slot("prod", seconds);
            assert!(later == first || later == first + RESYNC, "{seconds}s");
        }
        // The reconcile the slot itself triggers waits a whole interval for the next one.
        assert_eq!(resync_slot("team-a", "prod", first), RESYNC);
        // Other clusters (and the same name in another namespace) get other slots.
        let others: std::collections::BTreeSet<_> = ["dev", "stage", "prod-2", "qa"]
            .into_iter()
            .map(|cluster| slot(cluster, 0))
            .chain([at(0) + resync_slot("team-b", "prod", at(0))])
            .collect();
        assert!(others.len() >= 4 && !others.contains(&first), "{others:?}");
    }

    #[test]
    fn provisioned_never_flips_back_when_the_instance_ends() {
        let mut machine = KubeZeroMachine::new("m", Default::default());
        machine.status = Some(KubeZeroMachineStatus {
            initialization: Some(InfrastructureInitialization {
                provisioned: Some(true),
            }),
            ..Default::default()
        });
        let ended = observe(&machine, &instance(InstanceState::ShuttingDown, false), RESYNC);
        assert_eq!(ended.ready.reason, reasons::INSTANCE_TERMINATED);
        assert_eq!(ended.status.initialization.unwrap().provisioned, Some(true));
    }

    #[test]
    fn instance_id_comes_from_the_annotation_or_the_provider_id() {
        let mut machine = KubeZeroMachine::new("m", Default::default());
        assert_eq!(persisted_instance_id(&machine), None);
        machine.spec.provider_id = Some("aws:///us-east-1a/i-0aaaaaaaaaaaaaaaa".into());
        assert_eq!(
            persisted_instance_id(&machine).as_deref(),
            Some("i-0aaaaaaaaaaaaaaaa")
        );
        machine
            .annotations_mut()
            .insert(INSTANCE_ID_ANNOTATION.into(), "i-0bbbbbbbbbbbbbbbb".into());
        assert_eq!(
            persisted_instance_id(&machine).as_deref(),
            Some("i-0bbbbbbbbbbbbbbbb")
        );
    }
}
