//! Hand-written `cluster.x-k8s.io/v1beta2` shims for the CAPI core kinds kubezero reads.
//!
//! Only the fields kubezero reads are modelled, every one optional, so a newer core release with more
//! fields (or an object mid-migration) still deserializes. Field names follow CAPI's
//! `api/core/v1beta2/{cluster,machine,common}_types.go`.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::contract::{ApiEndpoint, FailureDomain, MachineAddress};

/// A reference to a provider object; v1beta2 refs carry no apiVersion and no namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContractVersionedObjectReference {
    /// API group of the referenced kind, e.g. `infrastructure.cluster.x-k8s.io`.
    #[serde(default)]
    pub api_group: String,
    /// Kind of the referenced object.
    #[serde(default)]
    pub kind: String,
    /// Name of the referenced object, in the referrer's namespace.
    #[serde(default)]
    pub name: String,
}

impl ContractVersionedObjectReference {
    /// True when this reference points at `kind` in `api_group`.
    pub fn refers_to(&self, api_group: &str, kind: &str) -> bool {
        self.api_group == api_group && self.kind == kind
    }
}

/// CIDR blocks of one network range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkRanges {
    /// CIDR blocks.
    #[serde(default)]
    pub cidr_blocks: Vec<String>,
}

/// `Cluster.spec.clusterNetwork`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetwork {
    /// Pod network ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NetworkRanges>,
    /// Service network ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<NetworkRanges>,
    /// Cluster DNS domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_domain: Option<String>,
    /// Port the API server binds on the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server_port: Option<i32>,
}

/// Spec of a CAPI `Cluster` (the fields kubezero reads).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "cluster.x-k8s.io",
    version = "v1beta2",
    kind = "Cluster",
    namespaced,
    status = "ClusterStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Pauses reconciliation of the Cluster and every object belonging to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// The API endpoint, set by the user or copied from the InfraCluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,
    /// The InfraCluster (a KubeZeroCluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_ref: Option<ContractVersionedObjectReference>,
    /// The control-plane provider object, absent with a machine-based control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_ref: Option<ContractVersionedObjectReference>,
    /// Network ranges of the workload cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_network: Option<ClusterNetwork>,
}

/// `Cluster.status.initialization`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInitialization {
    /// True once the InfraCluster reported `provisioned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_provisioned: Option<bool>,
    /// True once a control-plane provider initialized the control plane (not set without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_initialized: Option<bool>,
}

/// Status of a CAPI `Cluster` (the fields kubezero reads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Provisioning flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<ClusterInitialization>,
    /// Conditions, among them `ControlPlaneInitialized` and `InfrastructureReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Failure domains copied from the InfraCluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_domains: Vec<FailureDomain>,
    /// Lifecycle phase, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

impl Cluster {
    /// `spec.paused` is true.
    pub fn is_paused(&self) -> bool {
        self.spec.paused == Some(true)
    }

    /// Core has recorded that the InfraCluster is provisioned.
    pub fn infrastructure_provisioned(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|status| status.initialization.as_ref())
            .and_then(|initialization| initialization.infrastructure_provisioned)
            == Some(true)
    }

    /// The control-plane endpoint, when it is valid.
    pub fn control_plane_endpoint(&self) -> Option<&ApiEndpoint> {
        self.spec
            .control_plane_endpoint
            .as_ref()
            .filter(|endpoint| endpoint.is_valid())
    }

    /// The `ControlPlaneInitialized` condition is True, or a control-plane provider said so.
    pub fn control_plane_initialized(&self) -> bool {
        self.status.as_ref().is_some_and(|status| {
            crate::conditions::is_true(&status.conditions, "ControlPlaneInitialized")
                || status
                    .initialization
                    .as_ref()
                    .and_then(|i| i.control_plane_initialized)
                    == Some(true)
        })
    }
}

/// `Machine.spec.bootstrap`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bootstrap {
    /// The bootstrap config object (a KubeZeroConfig).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_ref: Option<ContractVersionedObjectReference>,
    /// Name of the Secret holding the bootstrap data, copied from the config's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_secret_name: Option<String>,
}

/// Spec of a CAPI `Machine` (the fields kubezero reads).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "cluster.x-k8s.io",
    version = "v1beta2",
    kind = "Machine",
    namespaced,
    status = "MachineStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct MachineSpec {
    /// Name of the Cluster this Machine belongs to.
    #[serde(default)]
    pub cluster_name: String,
    /// Bootstrap configuration reference and data Secret name.
    #[serde(default)]
    pub bootstrap: Bootstrap,
    /// The InfraMachine (a KubeZeroMachine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_ref: Option<ContractVersionedObjectReference>,
    /// Kubernetes version of the node, e.g. `v1.34.2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Provider ID copied from the InfraMachine.
    #[serde(default, rename = "providerID", skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Failure domain the Machine should be placed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_domain: Option<String>,
}

/// `Machine.status.nodeRef` (v1beta2: name only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineNodeReference {
    /// Name of the workload-cluster Node.
    #[serde(default)]
    pub name: String,
}

/// `Machine.status.initialization`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineInitialization {
    /// True once the InfraMachine reported provisioned with a provider ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure_provisioned: Option<bool>,
    /// True once the bootstrap data Secret was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_data_secret_created: Option<bool>,
}

/// Status of a CAPI `Machine` (the fields kubezero reads).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    /// The workload Node linked by provider ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ref: Option<MachineNodeReference>,
    /// Provisioning flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<MachineInitialization>,
    /// Addresses copied from the InfraMachine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<MachineAddress>,
    /// Lifecycle phase, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Conditions of the Machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl Machine {
    /// The Machine carries the control-plane label.
    pub fn is_control_plane(&self) -> bool {
        self.metadata
            .labels
            .as_ref()
            .is_some_and(|labels| labels.contains_key(crate::contract::CONTROL_PLANE_LABEL))
    }

    /// The Machine has been linked to a workload Node.
    pub fn has_node_ref(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|status| status.node_ref.as_ref())
            .is_some_and(|r| !r.name.is_empty())
    }
}
