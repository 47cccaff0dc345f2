//! KubeZeroMachine (the InfraMachine of the CAPI contract) and KubeZeroMachineTemplate (what
//! MachineDeployments clone, with the autoscale-from-zero status). A machine runs on exactly one
//! platform, `spec.aws` or `spec.metal`; its platform section never changes after creation.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use kubezero_capi::{
    conditions::Condition,
    contract::{InfrastructureInitialization, MachineAddress, ObjectMeta},
    schema::{conditions, machine_addresses},
};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::{aws::AwsMachineSpec, metal::MetalMachineSpec};

/// Desired state of a KubeZeroMachine: the platform section and the provider ID.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "KubeZeroMachine",
    doc = "One machine of a workload cluster: an EC2 instance or a claimed bare-metal host.",
    namespaced,
    status = "KubeZeroMachineStatus",
    derive = "PartialEq",
    shortname = "kzm",
    category = "cluster-api",
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    label("cluster.x-k8s.io/provider", "infrastructure-kubezero"),
    printcolumn = r#"{"name": "Cluster", "type": "string", "description": "Cluster this object belongs to", "jsonPath": ".metadata.labels.cluster\\.x-k8s\\.io/cluster-name"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "description": "Ready condition status", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "description": "Ready condition reason", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name": "ProviderID", "type": "string", "description": "Provider ID of the machine (matches the Node)", "jsonPath": ".spec.providerID"}"#,
    printcolumn = r#"{"name": "Instance Type", "type": "string", "description": "EC2 instance type", "jsonPath": ".spec.aws.instanceType"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.aws) != has(self.metal)")
    .message("exactly one of spec.aws or spec.metal must be set"))]
#[x_kube(validation = Rule::new("has(self.aws) == has(oldSelf.aws)")
    .message("the platform (spec.aws or spec.metal) cannot be changed"))]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.providerID) || (has(self.providerID) && self.providerID == oldSelf.providerID)"
).message("providerID cannot be changed or removed once set").field_path(".providerID"))]
#[x_kube(validation = Rule::new("!has(self.aws) || !has(oldSelf.aws) || self.aws == oldSelf.aws")
    .message("spec.aws is immutable; roll out a new KubeZeroMachineTemplate instead").field_path(".aws"))]
#[x_kube(validation = Rule::new("!has(self.metal) || !has(oldSelf.metal) || self.metal == oldSelf.metal")
    .message("spec.metal is immutable; roll out a new KubeZeroMachineTemplate instead").field_path(".metal"))]
pub struct KubeZeroMachineSpec {
    /// Cloud identity of the machine (`aws:///<az>/<instance-id>` or `kubezero://<namespace>/<host>`),
    /// set by the provider; equals the Node's `spec.providerID`.
    #[serde(rename = "providerID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub provider_id: Option<String>,

    /// AWS platform settings (instance type, image, volumes, IMDS, spot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsMachineSpec>,

    /// Bare-metal platform settings (which KubeZeroHost to claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metal: Option<MetalMachineSpec>,
}

/// Observed state of a KubeZeroMachine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeZeroMachineStatus {
    /// Provisioning flags read by Cluster API core (`provisioned`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<InfrastructureInitialization>,

    /// Addresses of the machine, copied by core into the Machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "machine_addresses")]
    pub addresses: Vec<MachineAddress>,

    /// Failure domain (availability zone) the machine actually runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub failure_domain: Option<String>,

    /// True for spot instances, which the cloud may reclaim; core then labels the Node interruptible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruptible: Option<bool>,

    /// Conditions of the machine; `Ready` is mirrored into the Machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions")]
    pub conditions: Vec<Condition>,
}

/// Desired state of a KubeZeroMachineTemplate: the template MachineSets clone.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "KubeZeroMachineTemplate",
    doc = "Template of a KubeZeroMachine, cloned by MachineSets; immutable, roll out a new one to change machines.",
    namespaced,
    status = "KubeZeroMachineTemplateStatus",
    derive = "PartialEq",
    shortname = "kzmt",
    category = "cluster-api",
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    label("cluster.x-k8s.io/provider", "infrastructure-kubezero"),
    printcolumn = r#"{"name": "Instance Type", "type": "string", "description": "EC2 instance type", "jsonPath": ".spec.template.spec.aws.instanceType"}"#,
    printcolumn = r#"{"name": "CPU", "type": "string", "description": "CPUs of one machine (for autoscaling from zero)", "jsonPath": ".status.capacity.cpu"}"#,
    printcolumn = r#"{"name": "Memory", "type": "string", "description": "Memory of one machine (for autoscaling from zero)", "jsonPath": ".status.capacity.memory"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KubeZeroMachineTemplateSpec {
    /// The KubeZeroMachine to create from this template.
    pub template: KubeZeroMachineTemplateResource,
}

/// Metadata and spec of the KubeZeroMachines a template produces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.spec == oldSelf.spec")
    .message("template spec is immutable; create a new template instead"))]
#[x_kube(validation = Rule::new("!has(self.spec.providerID)")
    .message("providerID must not be set in a template").field_path(".spec.providerID"))]
pub struct KubeZeroMachineTemplateResource {
    /// Labels and annotations copied to the created KubeZeroMachines.
    #[serde(default)]
    #[schemars(schema_with = "crate::api::bounds::template_metadata")]
    pub metadata: ObjectMeta,

    /// Spec of the created KubeZeroMachines.
    pub spec: KubeZeroMachineSpec,
}

/// Observed state of a KubeZeroMachineTemplate: what one machine offers, for autoscaling from zero.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeZeroMachineTemplateStatus {
    /// Resources of one machine (`cpu`, `memory`, `nvidia.com/gpu`, ...), read by the cluster autoscaler.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "capacity")]
    pub capacity: BTreeMap<String, Quantity>,

    /// Architecture and operating system of the machines, read by the cluster autoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_info: Option<NodeInfo>,

    /// Conditions of the template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions")]
    pub conditions: Vec<Condition>,
}

/// Schema of `status.capacity`: a `corev1.ResourceList` (resource name to quantity).
fn capacity(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": 64,
        "additionalProperties": {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
            "x-kubernetes-int-or-string": true,
        },
    })
}

/// Node properties of the machines a template produces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("minProperties" = 1))]
pub struct NodeInfo {
    /// CPU architecture, as the Node reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<NodeArchitecture>,

    /// Operating system, as the Node reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_system: Option<OperatingSystem>,
}

/// CPU architecture of a Node (`kubernetes.io/arch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeArchitecture {
    /// 64-bit x86.
    Amd64,
    /// 64-bit ARM.
    Arm64,
    /// IBM Z.
    S390x,
    /// 64-bit POWER, little endian.
    Ppc64le,
}

/// Operating system of a Node (`kubernetes.io/os`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OperatingSystem {
    /// Linux.
    Linux,
    /// Windows.
    Windows,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use kube::CustomResourceExt;

    use crate::api::aws::{AwsImds, AwsVolume, HttpTokens, VolumeType};

    #[test]
    fn machine_round_trips_with_the_contract_spelling_of_provider_id() {
        let manifest = json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
            "kind": "KubeZeroMachine",
            "metadata": {"name": "demo-md-0-abcde", "namespace": "default"},
            "spec": {
                "providerID": "aws:///eu-central-1a/i-0123456789abcdef0",
                "aws": {"instanceType": "m7g.large", "spot": {"maxPrice": "0.05"}},
            },
            "status": {
                "initialization": {"provisioned": true},
                "addresses": [{"type": "InternalIP", "address": "10.0.1.23"}],
                "failureDomain": "eu-central-1a",
                "interruptible": true,
            },
        });
        let machine: KubeZeroMachine = serde_json::from_value(manifest).unwrap();
        assert_eq!(
            machine.spec.provider_id.as_deref(),
            Some("aws:///eu-central-1a/i-0123456789abcdef0")
        );
        let aws = machine.spec.aws.as_ref().unwrap();
        assert_eq!(aws.imds, AwsImds::default());
        assert_eq!(aws.imds.http_tokens, HttpTokens::Required);
        assert_eq!(aws.imds.http_put_response_hop_limit, 1);
        assert_eq!(aws.root_volume, AwsVolume::default());
        assert_eq!(aws.root_volume.volume_type, VolumeType::Gp3);
        assert!(aws.root_volume.encrypted);

        let value = serde_json::to_value(&machine).unwrap();
        assert_eq!(
            value["spec"]["providerID"],
            "aws:///eu-central-1a/i-0123456789abcdef0"
        );
        assert!(value["spec"].get("providerId").is_none());
        assert_eq!(
            value["spec"]["aws"]["rootVolume"],
            json!({"sizeGiB": 20, "type": "gp3", "encrypted": true})
        );
        assert_eq!(value["status"]["addresses"][0]["type"], "InternalIP");
        let back: KubeZeroMachine = serde_json::from_value(value).unwrap();
        assert_eq!(back, machine);
    }

    #[test]
    fn unset_provider_id_is_omitted_not_null() {
        let spec = KubeZeroMachineSpec::default();
        assert_eq!(serde_json::to_value(&spec).unwrap(), json!({}));
    }

    #[test]
    fn template_status_carries_autoscaler_capacity_and_node_info() {
        let status: KubeZeroMachineTemplateStatus = serde_json::from_value(json!({
            "capacity": {"cpu": "2", "memory": "8Gi"},
            "nodeInfo": {"architecture": "arm64", "operatingSystem": "linux"},
        }))
        .unwrap();
        assert_eq!(status.capacity["memory"], Quantity("8Gi".into()));
        let node_info = status.node_info.as_ref().unwrap();
        assert_eq!(node_info.architecture, Some(NodeArchitecture::Arm64));
        assert_eq!(node_info.operating_system, Some(OperatingSystem::Linux));
        let schema = serde_json::to_value(KubeZeroMachineTemplate::crd()).unwrap();
        let status_schema =
            &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
        assert_eq!(status_schema["properties"]["nodeInfo"]["minProperties"], 1);
        assert_eq!(
            status_schema["properties"]["capacity"]["additionalProperties"]["x-kubernetes-int-or-string"],
            true
        );
    }
}
