//! KubeZeroCluster (the InfraCluster of the CAPI contract) and KubeZeroClusterTemplate (its
//! ClusterClass template). A cluster runs on exactly one platform, `spec.aws` or `spec.metal`.

use kube::{CustomResource, KubeSchema};
use kubezero_capi::{
    conditions::Condition,
    contract::{ApiEndpoint, FailureDomain, InfrastructureInitialization, ObjectMeta},
    schema::{conditions, failure_domains},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    aws::{AwsClusterSpec, AwsClusterStatus},
    metal::MetalClusterSpec,
};

/// Desired state of a KubeZeroCluster: the platform section and the control-plane endpoint.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "KubeZeroCluster",
    doc = "Infrastructure of one workload cluster (network, control-plane endpoint) on AWS or bare metal.",
    namespaced,
    status = "KubeZeroClusterStatus",
    derive = "PartialEq",
    shortname = "kzc",
    category = "cluster-api",
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    label("cluster.x-k8s.io/provider", "infrastructure-kubezero"),
    printcolumn = r#"{"name": "Cluster", "type": "string", "description": "Cluster this object belongs to", "jsonPath": ".metadata.labels.cluster\\.x-k8s\\.io/cluster-name"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "description": "Ready condition status", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "description": "Ready condition reason", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name": "Endpoint", "type": "string", "description": "Control-plane endpoint host", "jsonPath": ".spec.controlPlaneEndpoint.host"}"#,
    printcolumn = r#"{"name": "Region", "type": "string", "description": "AWS region", "jsonPath": ".spec.aws.region", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.aws) != has(self.metal)")
    .message("exactly one of spec.aws or spec.metal must be set"))]
#[x_kube(validation = Rule::new("has(self.aws) == has(oldSelf.aws)")
    .message("the platform (spec.aws or spec.metal) cannot be changed"))]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.controlPlaneEndpoint) || (has(self.controlPlaneEndpoint) && self.controlPlaneEndpoint == oldSelf.controlPlaneEndpoint)"
).message("controlPlaneEndpoint cannot be changed or removed once set").field_path(".controlPlaneEndpoint"))]
pub struct KubeZeroClusterSpec {
    /// Where the workload API server is reached; set by the provider when it creates the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,

    /// AWS platform settings (region, network, load balancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsClusterSpec>,

    /// Bare-metal platform settings (control-plane VIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metal: Option<MetalClusterSpec>,
}

/// Observed state of a KubeZeroCluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeZeroClusterStatus {
    /// Provisioning flags read by Cluster API core (`provisioned`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<InfrastructureInitialization>,

    /// Failure domains (availability zones) machines can be placed in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "failure_domains")]
    pub failure_domains: Vec<FailureDomain>,

    /// Conditions of the cluster infrastructure; `Ready` is mirrored into the Cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions")]
    pub conditions: Vec<Condition>,

    /// What the AWS backend provisioned (the ids machines launch with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsClusterStatus>,
}

/// Desired state of a KubeZeroClusterTemplate: the template ClusterClass clones.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "KubeZeroClusterTemplate",
    doc = "Template of a KubeZeroCluster, used by ClusterClass.",
    namespaced,
    status = "KubeZeroClusterTemplateStatus",
    derive = "PartialEq",
    shortname = "kzct",
    category = "cluster-api",
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    label("cluster.x-k8s.io/provider", "infrastructure-kubezero"),
    printcolumn = r#"{"name": "Region", "type": "string", "description": "AWS region", "jsonPath": ".spec.template.spec.aws.region"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KubeZeroClusterTemplateSpec {
    /// The KubeZeroCluster to create from this template.
    pub template: KubeZeroClusterTemplateResource,
}

/// Metadata and spec of the KubeZeroCluster a template produces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.spec == oldSelf.spec")
    .message("template spec is immutable; create a new template instead"))]
pub struct KubeZeroClusterTemplateResource {
    /// Labels and annotations copied to the created KubeZeroCluster.
    #[serde(default)]
    #[schemars(schema_with = "crate::api::bounds::template_metadata")]
    pub metadata: ObjectMeta,

    /// Spec of the created KubeZeroCluster.
    pub spec: KubeZeroClusterSpec,
}

/// Observed state of a KubeZeroClusterTemplate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeZeroClusterTemplateStatus {
    /// Conditions of the template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions")]
    pub conditions: Vec<Condition>,
}
