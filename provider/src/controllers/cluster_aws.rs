//! The AWS part of the KubeZeroCluster controller: provision the cluster infrastructure
//! ([`crate::aws::infrastructure`]) and describe it as conditions and status, or release it.

use std::time::Duration;

use kubezero_capi::conditions::Observed;
use kubezero_capi::contract::{FailureDomain, READY_CONDITION};
use kubezero_capi::runtime::errors::ErrorClass;

use super::reasons;
use crate::api::aws::{
    AwsClusterSpec, AwsClusterStatus, AwsInstanceProfilesStatus, AwsLoadBalancerStatus,
    AwsSecurityGroupsStatus, AwsSubnetStatus,
};
use crate::aws::DeleteProgress;
use crate::aws::clients::{AwsClients, AwsIdentity};
use crate::aws::infrastructure::{
    ClusterInfrastructure, cluster_tags, delete_cluster_infrastructure, ensure_cluster_infrastructure,
};
use crate::aws::instances::{TERMINATE_CHUNK, describe_cluster_instances, terminate_instances};
use crate::aws::tags::ClusterTags;
use crate::settings::Backends;

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

async fn clients(
    backends: &Backends,
    spec: &AwsClusterSpec,
    reason: &str,
) -> Result<AwsClients, CloudFailure> {
    backends
        .aws
        .clients(&AwsIdentity::DefaultChain, &spec.region)
        .await
        .map_err(|error| CloudFailure::new(reason, ErrorClass::Invalid, format!("AWS clients: {error}")))
}

/// Finds or creates the infrastructure of cluster `cluster` (the name its AWS resources are tagged
/// with) as `spec` describes it.
pub async fn provision(
    backends: &Backends,
    cluster: &str,
    spec: &AwsClusterSpec,
) -> Result<Provisioned, CloudFailure> {
    let aws = clients(backends, spec, reasons::INFRASTRUCTURE_FAILED).await?;
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
    backends: &Backends,
    cluster: &str,
    spec: &AwsClusterSpec,
) -> Result<DeleteProgress, CloudFailure> {
    let aws = clients(backends, spec, reasons::DELETION_FAILED).await?;
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
