//! The infrastructure provider's API (`infrastructure.cluster.x-k8s.io/v1alpha1`): KubeZeroCluster,
//! KubeZeroClusterTemplate, KubeZeroMachine, KubeZeroMachineTemplate and KubeZeroHost.
//!
//! Validation lives in the generated CRDs (OpenAPI bounds and patterns plus CEL
//! `x-kubernetes-validations`), so the API server refuses a wrong manifest with a message naming the
//! field and no admission webhook is needed.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub mod aws;
pub mod cluster;
pub mod host;
pub mod machine;
pub mod metal;

pub use aws::{
    AmiArchitecture, AmiVariant, AwsAmi, AwsAmiLookup, AwsClusterSpec, AwsExtraVolume, AwsImds,
    AwsLoadBalancer, AwsMachineSpec, AwsNetwork, AwsSpot, AwsSubnetId, AwsSubnetRef, AwsVolume, AwsVpc,
    HttpTokens, LoadBalancerScheme, NatGateways, SubnetRole, VolumeType,
};
pub use cluster::{
    KubeZeroCluster, KubeZeroClusterSpec, KubeZeroClusterStatus, KubeZeroClusterTemplate,
    KubeZeroClusterTemplateResource, KubeZeroClusterTemplateSpec, KubeZeroClusterTemplateStatus,
};
pub use host::{
    Bmc, BmcAuthMethod, ConsumerRef, DETACHED_ANNOTATION, HOST_FINALIZER, HostHardware, HostNetwork,
    HostProvisioning, HostState, KubeZeroHost, KubeZeroHostSpec, KubeZeroHostStatus, MediaSlotInfo,
    PowerState, RootDeviceHints,
};
pub use machine::{
    KubeZeroMachine, KubeZeroMachineSpec, KubeZeroMachineStatus, KubeZeroMachineTemplate,
    KubeZeroMachineTemplateResource, KubeZeroMachineTemplateSpec, KubeZeroMachineTemplateStatus,
    NodeArchitecture, NodeInfo, OperatingSystem,
};
pub use metal::{HostSelector, MetalClusterSpec, MetalMachineSpec};

/// API group of every kind in this module.
pub const GROUP: &str = "infrastructure.cluster.x-k8s.io";
/// API version of every kind in this module.
pub const VERSION: &str = "v1alpha1";
/// Finalizer the provider puts on a KubeZeroCluster until its infrastructure is torn down.
pub const FINALIZER_CLUSTER: &str = "kubezerocluster.infrastructure.cluster.x-k8s.io";
/// Finalizer the provider puts on a KubeZeroMachine until its instance or host is released.
pub const FINALIZER_MACHINE: &str = "kubezeromachine.infrastructure.cluster.x-k8s.io";

/// The five CRDs of the infrastructure provider, in install order: KubeZeroCluster,
/// KubeZeroClusterTemplate, KubeZeroMachine, KubeZeroMachineTemplate, KubeZeroHost.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        KubeZeroCluster::crd(),
        KubeZeroClusterTemplate::crd(),
        KubeZeroMachine::crd(),
        KubeZeroMachineTemplate::crd(),
        KubeZeroHost::crd(),
    ]
}

#[cfg(test)]
mod tests {
    //! CRD shape checks: names, labels, printer columns, CEL rules and defaults. The manifest fixtures
    //! and the CEL rules' cost are checked in `test/tests/suite/fixtures.rs` (crate `kubezero-test`).

    use serde_json::Value;

    use super::*;

    const KINDS: [(&str, &str, &str); 5] = [
        ("KubeZeroCluster", "kubezeroclusters", "kzc"),
        ("KubeZeroClusterTemplate", "kubezeroclustertemplates", "kzct"),
        ("KubeZeroMachine", "kubezeromachines", "kzm"),
        ("KubeZeroMachineTemplate", "kubezeromachinetemplates", "kzmt"),
        ("KubeZeroHost", "kubezerohosts", "kzh"),
    ];

    #[test]
    fn crds_are_named_labelled_and_ordered_for_the_capi_contract() {
        let crds = crds();
        assert_eq!(crds.len(), KINDS.len());
        for (crd, (kind, plural, short)) in crds.iter().zip(KINDS) {
            assert_eq!(crd.spec.names.kind, kind);
            assert_eq!(crd.spec.names.plural, plural);
            assert_eq!(
                crd.metadata.name.as_deref(),
                Some(format!("{plural}.{GROUP}").as_str())
            );
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Namespaced");
            let labels = crd.metadata.labels.as_ref().expect("CRD labels");
            assert_eq!(
                labels
                    .get(kubezero_capi::contract::CONTRACT_LABEL)
                    .map(String::as_str),
                Some(VERSION)
            );
            assert_eq!(
                labels
                    .get(kubezero_capi::contract::PROVIDER_LABEL)
                    .map(String::as_str),
                Some(kubezero_capi::contract::INFRASTRUCTURE_PROVIDER)
            );
            assert_eq!(
                crd.spec.names.short_names.as_deref(),
                Some(&[short.to_owned()][..])
            );
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&["cluster-api".to_owned()][..])
            );
            assert_eq!(crd.spec.versions.len(), 1);
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, VERSION);
            assert!(version.served && version.storage);
            let subresources = version.subresources.as_ref().expect("subresources");
            assert!(subresources.status.is_some(), "{kind} has no status subresource");
            let columns = version
                .additional_printer_columns
                .as_ref()
                .expect("printer columns");
            assert!(
                columns.iter().any(|c| c.name == "Age" && c.type_ == "date"),
                "{kind} has no Age column"
            );
        }
    }

    #[test]
    fn printer_columns_show_readiness_and_identity() {
        let columns = |crd: CustomResourceDefinition| -> Vec<(String, String)> {
            crd.spec.versions[0]
                .additional_printer_columns
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|c| (c.name, c.json_path))
                .collect()
        };
        let cluster = columns(KubeZeroCluster::crd());
        assert!(cluster.contains(&(
            "Ready".into(),
            r#".status.conditions[?(@.type=="Ready")].status"#.into()
        )));
        assert!(cluster.contains(&(
            "Cluster".into(),
            r".metadata.labels.cluster\.x-k8s\.io/cluster-name".into()
        )));
        assert!(cluster.contains(&("Endpoint".into(), ".spec.controlPlaneEndpoint.host".into())));
        let machine = columns(KubeZeroMachine::crd());
        assert!(machine.contains(&("ProviderID".into(), ".spec.providerID".into())));
        assert!(machine.contains(&("Instance Type".into(), ".spec.aws.instanceType".into())));
        let template = columns(KubeZeroMachineTemplate::crd());
        assert!(template.contains(&("CPU".into(), ".status.capacity.cpu".into())));
        assert!(template.contains(&("Memory".into(), ".status.capacity.memory".into())));
        let host = columns(KubeZeroHost::crd());
        assert!(host.contains(&("Consumer".into(), ".spec.consumerRef.name".into())));
        assert!(host.contains(&(
            "Reason".into(),
            ".status.conditions[?(@.type==\"Ready\")].reason".into()
        )));
    }

    #[test]
    fn schemas_carry_cel_rules_and_kubezero_defaults() {
        let machine = serde_json::to_string(&KubeZeroMachine::crd()).unwrap();
        assert!(machine.contains("x-kubernetes-validations"));
        for rule in [
            "has(self.aws) != has(self.metal)",
            "has(self.aws) == has(oldSelf.aws)",
            "has(self.id) != has(self.lookup)",
            "size(self) > 0",
        ] {
            assert!(machine.contains(rule), "KubeZeroMachine lacks rule {rule}");
        }
        let aws = &schema_of("KubeZeroMachine")["properties"]["spec"]["properties"]["aws"]["properties"];
        assert_eq!(
            aws["imds"]["default"],
            serde_json::json!({"httpTokens": "required", "httpPutResponseHopLimit": 1})
        );
        assert_eq!(
            aws["rootVolume"]["default"],
            serde_json::json!({"sizeGiB": 20, "type": "gp3", "encrypted": true})
        );
        assert!(
            aws["ami"]["default"]["lookup"].get("alpineRelease").is_none(),
            "the release is derived from the Machine's version"
        );
        let cluster_aws =
            &schema_of("KubeZeroCluster")["properties"]["spec"]["properties"]["aws"]["properties"];
        assert_eq!(cluster_aws["loadBalancer"]["default"]["scheme"], "internal");
        assert_eq!(
            cluster_aws["network"]["properties"]["availabilityZoneCount"]["default"],
            3
        );
        let template = serde_json::to_string(&KubeZeroMachineTemplate::crd()).unwrap();
        assert!(template.contains("self.spec == oldSelf.spec"));
        assert!(template.contains("!has(self.spec.providerID)"));
    }

    // --- helpers ---------------------------------------------------------------------------------

    fn schema_of(kind: &str) -> Value {
        let crd = crds()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .expect("known kind");
        let schema = crd.spec.versions[0]
            .schema
            .clone()
            .and_then(|s| s.open_api_v3_schema)
            .expect("schema");
        serde_json::to_value(schema).unwrap()
    }
}
