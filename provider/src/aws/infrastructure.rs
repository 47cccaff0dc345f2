//! The whole AWS infrastructure of one cluster in dependency order: network, security groups,
//! load balancer and IAM on the way up; load balancers, security groups, network and IAM on the way
//! down. The KubeZeroCluster controller calls these two functions.

use kubezero_capi::contract::FailureDomain;
use kubezero_capi::runtime::errors::ErrorClass;

use super::DeleteProgress;
use super::clients::AwsClients;
use super::iam::{IamError, IamState, delete_iam, ensure_iam};
use super::load_balancer::{
    API_SERVER_PORT, LoadBalancerError, LoadBalancerState, delete_load_balancers, ensure_load_balancer,
};
use super::network::{NetworkError, NetworkState, delete_network, ensure_network};
use super::security_groups::{
    SecurityGroupError, SecurityGroups, delete_security_groups, ensure_security_groups,
    validate_additional_groups,
};
use super::tags::ClusterTags;
use crate::api::aws::AwsClusterSpec;

/// Everything [`ensure_cluster_infrastructure`] found or made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfrastructure {
    /// VPC and subnets.
    pub network: NetworkState,
    /// Security group ids per role.
    pub security_groups: SecurityGroups,
    /// The API server load balancer.
    pub load_balancer: LoadBalancerState,
    /// Instance profiles per role.
    pub iam: IamState,
}

impl ClusterInfrastructure {
    /// Host and port for `spec.controlPlaneEndpoint`.
    pub fn control_plane_endpoint(&self) -> (String, i32) {
        (self.load_balancer.dns_name.clone(), API_SERVER_PORT)
    }

    /// Failure domains for `status.failureDomains`.
    pub fn failure_domains(&self) -> Vec<FailureDomain> {
        self.network.failure_domains()
    }

    /// Whether everything is usable (NAT gateways available, load balancer active).
    pub fn ready(&self) -> bool {
        self.network.ready && self.load_balancer.active
    }
}

/// An error of one step of the cluster infrastructure.
#[derive(Debug, thiserror::Error)]
pub enum InfrastructureError {
    /// Network step.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// Security group step.
    #[error(transparent)]
    SecurityGroups(#[from] SecurityGroupError),
    /// Load balancer step.
    #[error(transparent)]
    LoadBalancer(#[from] LoadBalancerError),
    /// IAM step.
    #[error(transparent)]
    Iam(#[from] IamError),
}

impl InfrastructureError {
    /// The error class the error policy requeues by.
    pub fn class(&self) -> ErrorClass {
        match self {
            InfrastructureError::Network(e) => e.class(),
            InfrastructureError::SecurityGroups(e) => e.class(),
            InfrastructureError::LoadBalancer(e) => e.class(),
            InfrastructureError::Iam(e) => e.class(),
        }
    }
}

/// The tags of a cluster named `cluster` with `spec`'s additional tags.
pub fn cluster_tags(cluster: &str, spec: &AwsClusterSpec) -> ClusterTags {
    ClusterTags::new(cluster, spec.additional_tags.clone())
}

/// Finds or creates the cluster's network, security groups, load balancer and IAM roles.
/// Idempotent: with everything in place it only reads.
#[tracing::instrument(skip_all, fields(cluster = tags.cluster(), region = aws.region()))]
pub async fn ensure_cluster_infrastructure(
    aws: &AwsClients,
    tags: &ClusterTags,
    spec: &AwsClusterSpec,
) -> Result<ClusterInfrastructure, InfrastructureError> {
    let network = ensure_network(aws, tags, &spec.network).await?;
    validate_additional_groups(
        aws,
        tags,
        &network.vpc_id,
        &spec.load_balancer.additional_security_groups,
    )
    .await?;
    let security_groups = ensure_security_groups(aws, tags, &network, &spec.load_balancer).await?;
    let load_balancer =
        ensure_load_balancer(aws, tags, &spec.load_balancer, &network, &security_groups).await?;
    let iam = ensure_iam(aws, tags).await?;
    Ok(ClusterInfrastructure {
        network,
        security_groups,
        load_balancer,
        iam,
    })
}

/// Deletes the cluster's infrastructure in dependency order; instances must be gone already.
/// Returns [`DeleteProgress::Waiting`] at the first step that is still in progress.
#[tracing::instrument(skip_all, fields(cluster = tags.cluster(), region = aws.region()))]
pub async fn delete_cluster_infrastructure(
    aws: &AwsClients,
    tags: &ClusterTags,
) -> Result<DeleteProgress, InfrastructureError> {
    let progress = delete_load_balancers(aws, tags).await?;
    if !progress.is_done() {
        return Ok(progress);
    }
    let progress = delete_security_groups(aws, tags).await?;
    if !progress.is_done() {
        return Ok(progress);
    }
    let progress = delete_network(aws, tags).await?;
    if !progress.is_done() {
        return Ok(progress);
    }
    Ok(delete_iam(aws, tags).await?)
}
