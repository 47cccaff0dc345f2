//! Names and shapes fixed by the Cluster API v1beta2 provider contract (capi-contract.md §1–§6).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the CAPI core kinds.
pub const CAPI_GROUP: &str = "cluster.x-k8s.io";
/// API version of the CAPI core kinds kubezero reads.
pub const CAPI_VERSION: &str = "v1beta2";
/// Label naming the Cluster an object belongs to.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// Label present (any value) on control-plane Machines.
pub const CONTROL_PLANE_LABEL: &str = "cluster.x-k8s.io/control-plane";
/// Label selecting which manager instance reconciles an object (`--watch-filter`).
pub const WATCH_FILTER_LABEL: &str = "cluster.x-k8s.io/watch-filter";
/// Annotation (any value) that pauses reconciliation of one object.
pub const PAUSED_ANNOTATION: &str = "cluster.x-k8s.io/paused";
/// Annotation (any value) marking an InfraCluster as managed outside Cluster API.
pub const MANAGED_BY_ANNOTATION: &str = "cluster.x-k8s.io/managed-by";
/// Annotation that makes `clusterctl move` wait (after pausing the Cluster) until it is removed: set
/// on an object while an operation that cannot be paused (a launch) is in flight.
pub const BLOCK_MOVE_ANNOTATION: &str = "clusterctl.cluster.x-k8s.io/block-move";
/// Label key carrying the contract version on every provider CRD; the value lists our served versions.
pub const CONTRACT_LABEL: &str = "cluster.x-k8s.io/v1beta2";
/// Label naming the provider that installed an object (`<type>-<name>`).
pub const PROVIDER_LABEL: &str = "cluster.x-k8s.io/provider";
/// Label on a ClusterRole that aggregates it into CAPI core's manager role.
pub const AGGREGATE_TO_MANAGER_LABEL: &str = "cluster.x-k8s.io/aggregate-to-manager";
/// `ManifestLabel` of the infrastructure provider.
pub const INFRASTRUCTURE_PROVIDER: &str = "infrastructure-kubezero";
/// `ManifestLabel` of the bootstrap provider.
pub const BOOTSTRAP_PROVIDER: &str = "bootstrap-kubezero";

/// Condition type every provider object reports; mirrored by core into the owner's conditions.
pub const READY_CONDITION: &str = "Ready";
/// Condition type surfacing pause state.
pub const PAUSED_CONDITION: &str = "Paused";
/// Reason of a `Paused` condition that is True.
pub const PAUSED_REASON: &str = "Paused";
/// Reason of a `Paused` condition that is False.
pub const NOT_PAUSED_REASON: &str = "NotPaused";

/// `Ready` reasons every kubezero kind owned by a Machine or a Cluster reports while what it needs
/// from Cluster API is missing.
pub mod waiting_reasons {
    /// No owner reference from Cluster API yet.
    pub const WAITING_FOR_OWNER: &str = "WaitingForOwner";
    /// The owning Cluster does not exist (yet).
    pub const WAITING_FOR_CLUSTER: &str = "WaitingForCluster";
    /// The Cluster's infrastructure is not provisioned yet.
    pub const WAITING_FOR_CLUSTER_INFRASTRUCTURE: &str = "WaitingForClusterInfrastructure";
}

/// Key of a bootstrap data Secret (the Machine's `spec.bootstrap.dataSecretName`) holding the user
/// data.
pub const DATA_SECRET_VALUE_KEY: &str = "value";
/// Key of a bootstrap data Secret naming the user-data format (`cloud-config`, ...).
pub const DATA_SECRET_FORMAT_KEY: &str = "format";
/// Key of the `<cluster>-kubeconfig` Secret holding the workload cluster's kubeconfig.
pub const KUBECONFIG_SECRET_VALUE_KEY: &str = "value";

/// Where the workload cluster's API server is reached (`spec.controlPlaneEndpoint`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiEndpoint {
    /// DNS name or IP address of the API server endpoint.
    #[schemars(length(min = 1, max = 512))]
    pub host: String,

    /// TCP port of the API server endpoint.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl ApiEndpoint {
    /// True when both host and port are set (the contract's notion of a valid endpoint).
    pub fn is_valid(&self) -> bool {
        !self.host.is_empty() && self.port > 0
    }
}

/// One failure domain reported by an InfraCluster (`status.failureDomains[]`, list form in v1beta2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureDomain {
    /// Unique name of the failure domain (an availability zone on AWS).
    #[schemars(length(min = 1, max = 256))]
    pub name: String,

    /// Whether control-plane machines may be placed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<bool>,

    /// Free-form attributes of the failure domain.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// Kind of a machine address, as CAPI defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MachineAddressType {
    /// Host name of the machine.
    Hostname,
    /// Address reachable from outside the cluster network.
    #[serde(rename = "ExternalIP")]
    ExternalIp,
    /// Address reachable inside the cluster network.
    #[serde(rename = "InternalIP")]
    InternalIp,
    /// DNS name resolving from outside the cluster network.
    #[serde(rename = "ExternalDNS")]
    ExternalDns,
    /// DNS name resolving inside the cluster network.
    #[serde(rename = "InternalDNS")]
    InternalDns,
}

/// One address of a machine (`status.addresses[]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineAddress {
    /// Kind of address.
    #[serde(rename = "type")]
    pub address_type: MachineAddressType,

    /// The address itself.
    #[schemars(length(min = 1, max = 256))]
    pub address: String,
}

/// Provisioning flags of an infrastructure object (`status.initialization`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InfrastructureInitialization {
    /// True once the infrastructure is provisioned; never flips back (contract v1beta2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<bool>,
}

/// Initialization flags of a bootstrap config (`status.initialization`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapInitialization {
    /// True once the data Secret named in `status.dataSecretName` exists (contract v1beta2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_secret_created: Option<bool>,
}

/// `metadata` of a template's `spec.template` (labels and annotations copied to clones).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Labels copied to objects cloned from the template.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,

    /// Annotations copied to objects cloned from the template.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// `<plural>.<group>`: the CRD name core computes to find a provider CRD (`contract.CalculateCRDName`).
pub fn crd_name(plural: &str, group: &str) -> String {
    format!("{plural}.{group}")
}
