//! The AWS part of the KubeZeroCluster controller: provision the cluster infrastructure
//! ([`crate::aws::infrastructure`]) and describe it as conditions and status, or release it; and
//! the last complete observation of each cluster ([`Observations`]), so that a reconcile between
//! two resyncs does not describe the whole infrastructure again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use kubezero_capi::conditions::Observed;
use kubezero_capi::contract::{FailureDomain, READY_CONDITION};
use kubezero_capi::runtime::errors::ErrorClass;

use crate::api::aws::{
    AwsClusterSpec, AwsClusterStatus, AwsInstanceProfilesStatus, AwsLoadBalancerStatus,
    AwsSecurityGroupsStatus, AwsSubnetStatus,
};
use crate::aws::DeleteProgress;
use crate::aws::clients::{AwsClients, AwsIdentity, ClientRegistry};
use crate::aws::infrastructure::{
    ClusterInfrastructure, cluster_tags, delete_cluster_infrastructure, ensure_cluster_infrastructure,
};
use crate::aws::instances::{TERMINATE_CHUNK, describe_cluster_instances, terminate_instances};
use crate::aws::tags::ClusterTags;
use crate::controllers::reasons;

/// How often a provisioned cluster's infrastructure is checked again (drift, deleted resources).
pub const RESYNC: Duration = Duration::from_secs(600);
/// How soon to look again while something is being created or deleted.
pub const PROGRESS_REQUEUE: Duration = Duration::from_secs(10);

/// What one provisioning pass found.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The `Ready` condition.
    pub ready: Observed,
    /// `status.aws`.
    pub status: AwsClusterStatus,
    /// `status.failureDomains`.
    pub failure_domains: Vec<FailureDomain>,
    /// Host and port for `spec.controlPlaneEndpoint`.
    pub endpoint: (String, i32),
    /// Whether everything is usable (`status.initialization.provisioned` may become true).
    pub usable: bool,
    /// When to look again.
    pub requeue: Duration,
}

/// Which KubeZeroCluster, at which state of its spec, an observation was made of: the object's
/// uid (a recreated object starts over) and `metadata.generation` (a spec change invalidates it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedObject {
    /// Namespace of the KubeZeroCluster.
    pub namespace: String,
    /// Name of the KubeZeroCluster.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
}

#[derive(Debug)]
struct Observation {
    uid: String,
    generation: Option<i64>,
    at: Instant,
    provisioned: Provisioned,
}

/// The last complete, usable observation of each cluster's infrastructure, valid until [`RESYNC`]
/// after it was made and only for the uid and generation it was made at. Reconciles that come in
/// between (a label or annotation written by Cluster API or GitOps, a pause and unpause by
/// `clusterctl move`, the endpoint this controller set) reuse it instead of describing the VPC,
/// subnets, gateways, route tables, security groups, load balancer and IAM roles again; a spec
/// change, a failure, an incomplete pass or the resync interval end it. Owned by the controller.
#[derive(Debug, Default)]
pub struct Observations {
    by_object: Mutex<HashMap<(String, String), Observation>>,
}

impl Observations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Observation>> {
        self.by_object
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The observation of `object` made less than [`RESYNC`] ago at its current uid and generation,
    /// with its requeue shortened to the time left until the resync.
    pub fn fresh(&self, object: &ObservedObject) -> Option<Provisioned> {
        let key = (object.namespace.clone(), object.name.clone());
        let mut observations = self.lock();
        let observation = observations.get(&key)?;
        let age = observation.at.elapsed();
        if observation.uid != object.uid || observation.generation != object.generation || age >= RESYNC {
            observations.remove(&key);
            return None;
        }
        let mut provisioned = observation.provisioned.clone();
        provisioned.requeue = RESYNC - age;
        Some(provisioned)
    }

    /// Records what a provisioning pass just found for `object`, when it is complete and usable;
    /// anything else forgets the object, so the next reconcile looks again.
    pub fn record(&self, object: &ObservedObject, provisioned: &Provisioned) {
        let key = (object.namespace.clone(), object.name.clone());
        let mut observations = self.lock();
        if provisioned.usable {
            observations.insert(
                key,
                Observation {
                    uid: object.uid.clone(),
                    generation: object.generation,
                    at: Instant::now(),
                    provisioned: provisioned.clone(),
                },
            );
        } else {
            observations.remove(&key);
        }
    }

    /// Forgets `namespace/name` (a failed pass, a deletion).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Clusters with an observation.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no cluster has an observation.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A failed cloud step: the condition to report and the error class to requeue by.
#[derive(Debug, Clone)]
pub struct CloudFailure {
    /// The `Ready` condition naming the failed step.
    pub ready: Observed,
    /// The class of the failure.
    pub class: ErrorClass,
    /// The failure's text.
    pub message: String,
}

impl CloudFailure {
    fn new(reason: &str, class: ErrorClass, message: String) -> Self {
        Self {
            ready: Observed::false_(READY_CONDITION, reason, message.clone()),
            class,
            message,
        }
    }
}

async fn client_set(
    clients: &ClientRegistry,
    spec: &AwsClusterSpec,
    reason: &str,
) -> Result<AwsClients, CloudFailure> {
    clients
        .clients(&AwsIdentity::DefaultChain, &spec.region)
        .await
        .map_err(|error| CloudFailure::new(reason, ErrorClass::Invalid, format!("AWS clients: {error}")))
}

/// Finds or creates the infrastructure of cluster `cluster` (the name its AWS resources are tagged
/// with) as `spec` describes it.
pub async fn provision(
    clients: &ClientRegistry,
    cluster: &str,
    spec: &AwsClusterSpec,
) -> Result<Provisioned, CloudFailure> {
    let aws = client_set(clients, spec, reasons::INFRASTRUCTURE_FAILED).await?;
    let tags = cluster_tags(cluster, spec);
    let infrastructure = ensure_cluster_infrastructure(&aws, &tags, spec)
        .await
        .map_err(|error| {
            CloudFailure::new(reasons::INFRASTRUCTURE_FAILED, error.class(), error.to_string())
        })?;
    let usable = infrastructure.ready();
    let ready = if usable {
        Observed::true_(
            READY_CONDITION,
            reasons::INFRASTRUCTURE_READY,
            format!(
                "VPC {}, API server load balancer {}",
                infrastructure.network.vpc_id, infrastructure.load_balancer.dns_name
            ),
        )
    } else {
        Observed::false_(
            READY_CONDITION,
            reasons::INFRASTRUCTURE_PROVISIONING,
            waiting_for(&infrastructure),
        )
    };
    Ok(Provisioned {
        ready,
        status: to_status(&infrastructure),
        failure_domains: infrastructure.failure_domains(),
        endpoint: infrastructure.control_plane_endpoint(),
        usable,
        requeue: if usable { RESYNC } else { PROGRESS_REQUEUE },
    })
}

/// Deletes the infrastructure of cluster `cluster` (its KubeZeroMachines are gone already): first any
/// instance still tagged for the cluster (left by a crash between launch and recording it), then the
/// network, security groups, load balancer and IAM; `Waiting` while something is still going away.
pub async fn release(
    clients: &ClientRegistry,
    cluster: &str,
    spec: &AwsClusterSpec,
) -> Result<DeleteProgress, CloudFailure> {
    let aws = client_set(clients, spec, reasons::DELETION_FAILED).await?;
    release_with(&aws, &cluster_tags(cluster, spec)).await
}

/// [`release`] with the cluster's client set and tags.
pub async fn release_with(aws: &AwsClients, tags: &ClusterTags) -> Result<DeleteProgress, CloudFailure> {
    let failed = |error: &dyn std::fmt::Display, class: ErrorClass| {
        CloudFailure::new(reasons::DELETION_FAILED, class, error.to_string())
    };
    let instances = describe_cluster_instances(aws, tags)
        .await
        .map_err(|error| failed(&error, error.class()))?;
    if !instances.is_empty() {
        let running: Vec<String> = instances
            .iter()
            .filter(|instance| !instance.state.is_ending())
            .map(|instance| instance.id.clone())
            .collect();
        for chunk in running.chunks(TERMINATE_CHUNK) {
            terminate_instances(aws, chunk)
                .await
                .map_err(|error| failed(&error, error.class()))?;
        }
        if !running.is_empty() {
            tracing::warn!(
                count = running.len(),
                "terminated instances left without a KubeZeroMachine"
            );
        }
        return Ok(DeleteProgress::Waiting(format!(
            "waiting for {} instance(s) of the cluster to terminate",
            instances.len()
        )));
    }
    delete_cluster_infrastructure(aws, tags)
        .await
        .map_err(|error| failed(&error, error.class()))
}

/// What is still being created.
fn waiting_for(infrastructure: &ClusterInfrastructure) -> String {
    let mut pending = Vec::new();
    if !infrastructure.network.ready {
        pending.push("NAT gateways");
    }
    if !infrastructure.load_balancer.active {
        pending.push("the API server load balancer");
    }
    format!("waiting for {} to become available", pending.join(" and "))
}

/// `status.aws` of an infrastructure.
pub fn to_status(infrastructure: &ClusterInfrastructure) -> AwsClusterStatus {
    AwsClusterStatus {
        vpc_id: infrastructure.network.vpc_id.clone(),
        subnets: infrastructure
            .network
            .subnets
            .iter()
            .map(|subnet| AwsSubnetStatus {
                id: subnet.id.clone(),
                availability_zone: subnet.zone.clone(),
                public: subnet.public,
            })
            .collect(),
        security_groups: AwsSecurityGroupsStatus {
            control_plane: infrastructure.security_groups.control_plane.clone(),
            node: infrastructure.security_groups.node.clone(),
            load_balancer: infrastructure.security_groups.load_balancer.clone(),
        },
        load_balancer: AwsLoadBalancerStatus {
            arn: infrastructure.load_balancer.arn.clone(),
            dns_name: infrastructure.load_balancer.dns_name.clone(),
            target_group_arn: infrastructure.load_balancer.target_group_arn.clone(),
        },
        instance_profiles: AwsInstanceProfilesStatus {
            control_plane: infrastructure.iam.control_plane.name.clone(),
            node: infrastructure.iam.nodes.name.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provisioned(usable: bool) -> Provisioned {
        Provisioned {
            ready: Observed::true_(READY_CONDITION, reasons::INFRASTRUCTURE_READY, "VPC vpc-1"),
            status: AwsClusterStatus::default(),
            failure_domains: Vec::new(),
            endpoint: ("lb.example".into(), 6443),
            usable,
            requeue: if usable { RESYNC } else { PROGRESS_REQUEUE },
        }
    }

    fn object(uid: &str, generation: i64) -> ObservedObject {
        ObservedObject {
            namespace: "team-a".into(),
            name: "prod".into(),
            uid: uid.into(),
            generation: Some(generation),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_observation_is_reused_until_the_resync_for_the_same_uid_and_generation() {
        let observations = Observations::default();
        assert!(observations.fresh(&object("u1", 1)).is_none());
        observations.record(&object("u1", 1), &provisioned(true));
        tokio::time::advance(Duration::from_secs(60)).await;
        let reused = observations.fresh(&object("u1", 1)).expect("reused");
        assert_eq!(
            reused.requeue,
            RESYNC - Duration::from_secs(60),
            "requeued for the resync"
        );
        assert_eq!(reused.endpoint.0, "lb.example");

        assert!(
            observations.fresh(&object("u1", 2)).is_none(),
            "a spec change ends it"
        );
        assert!(observations.is_empty());
        observations.record(&object("u1", 2), &provisioned(true));
        assert!(
            observations.fresh(&object("u2", 2)).is_none(),
            "a recreated object starts over"
        );

        observations.record(&object("u1", 2), &provisioned(true));
        tokio::time::advance(RESYNC).await;
        assert!(
            observations.fresh(&object("u1", 2)).is_none(),
            "the resync ends it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn incomplete_passes_failures_and_deletions_are_not_reused() {
        let observations = Observations::default();
        observations.record(&object("u1", 1), &provisioned(true));
        observations.record(&object("u1", 1), &provisioned(false));
        assert!(
            observations.fresh(&object("u1", 1)).is_none(),
            "NAT gateways still pending"
        );
        observations.record(&object("u1", 1), &provisioned(true));
        observations.forget("team-a", "prod");
        assert!(observations.fresh(&object("u1", 1)).is_none());
    }
}
