//! The launch plan of an AWS machine: the [`LaunchSpec`] (image, instance type, subnets, security
//! groups, instance profile, user data, volumes, tags) built from the fetched objects
//! ([`AwsInputs`]), the resolved image and the bootstrap data, without a client. Pure.

use std::collections::BTreeMap;

use super::AwsInputs;
use crate::api::aws::AwsSubnetStatus;
use crate::aws::ami::ResolvedImage;
use crate::aws::infrastructure::cluster_tags;
use crate::aws::instances::{LaunchSpec, encode_user_data};
use crate::aws::tags::{OWNED, ROLE_TAG, Role};

/// Why a machine cannot be planned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No subnet of the cluster matches the machine's failure domain.
    #[error("no subnet of the cluster in failure domain {failure_domain:?}")]
    NoSubnet {
        /// The owner Machine's failure domain.
        failure_domain: Option<String>,
    },
}

/// The launch of `inputs`' machine from `image`, booting `user_data`: the role's security group
/// first, then the machine's additional ones; the role's instance profile; the cluster's tags, then
/// the machine's, then ownership and role. Pure.
pub fn launch_spec(
    inputs: &AwsInputs<'_>,
    image: ResolvedImage,
    user_data: &[u8],
) -> Result<LaunchSpec, PlanError> {
    let spec = inputs.spec;
    let infra_status = inputs.infra_status;
    let failure_domain = inputs.owner.spec.failure_domain.as_deref();
    let subnet_ids = choose_subnets(
        &infra_status.subnets,
        spec.subnet.as_ref().map(|subnet| subnet.id.as_str()),
        failure_domain,
    );
    if subnet_ids.is_empty() {
        return Err(PlanError::NoSubnet {
            failure_domain: failure_domain.map(str::to_owned),
        });
    }
    let (role, role_group, profile) = if inputs.owner.is_control_plane() {
        (
            Role::ControlPlane,
            &infra_status.security_groups.control_plane,
            &infra_status.instance_profiles.control_plane,
        )
    } else {
        (
            Role::Node,
            &infra_status.security_groups.node,
            &infra_status.instance_profiles.node,
        )
    };
    let mut security_group_ids: Vec<String> = Some(role_group.clone())
        .filter(|group| !group.is_empty())
        .into_iter()
        .collect();
    security_group_ids.extend(spec.additional_security_groups.iter().cloned());
    let cluster_tags = cluster_tags(inputs.cluster, inputs.infra_spec);
    let mut tags: BTreeMap<String, String> = inputs.infra_spec.additional_tags.clone();
    tags.extend(spec.additional_tags.clone());
    tags.insert(cluster_tags.owned_key(), OWNED.to_owned());
    tags.insert(cluster_tags.kubernetes_key(), OWNED.to_owned());
    tags.insert(ROLE_TAG.to_owned(), role.as_str().to_owned());
    Ok(LaunchSpec {
        image_id: image.id,
        root_device_name: image.root_device_name,
        instance_type: spec.instance_type.clone(),
        subnet_ids,
        security_group_ids,
        instance_profile: Some(profile.clone()).filter(|profile| !profile.is_empty()),
        user_data: encode_user_data(user_data),
        root_volume: spec.root_volume.clone(),
        extra_volumes: spec.extra_volumes.clone(),
        imds: spec.imds.clone(),
        spot: spec.spot.clone(),
        ssh_key_name: spec.ssh_key_name.clone(),
        tags,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use kubezero_capi::core::Machine;
    use serde_json::json;

    use crate::api::KubeZeroMachine;
    use crate::api::aws::{AwsClusterSpec, AwsClusterStatus, AwsMachineSpec};

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

    struct Fixture {
        machine: KubeZeroMachine,
        spec: AwsMachineSpec,
        owner: Machine,
        infra_spec: AwsClusterSpec,
        infra_status: AwsClusterStatus,
    }

    impl Fixture {
        fn new(control_plane: bool, failure_domain: Option<&str>) -> Self {
            let spec: AwsMachineSpec = serde_json::from_value(json!({
                "instanceType": "m7g.large", "ami": {"id": "ami-0123456789abcdef0"},
                "additionalSecurityGroups": ["sg-extra"],
                "additionalTags": {"team": "machines", "cost-center": "42"}}))
            .unwrap();
            let labels = if control_plane {
                json!({"cluster.x-k8s.io/control-plane": ""})
            } else {
                json!({})
            };
            let owner: Machine = serde_json::from_value(json!({
                "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "metadata": {"name": "demo-x1", "namespace": "default", "labels": labels},
                "spec": {"clusterName": "demo", "bootstrap": {"dataSecretName": "demo-x1"},
                    "failureDomain": failure_domain}}))
            .unwrap();
            let infra_spec: AwsClusterSpec = serde_json::from_value(json!({
                "region": "us-east-1", "additionalTags": {"team": "platform", "env": "prod"}}))
            .unwrap();
            let mut infra_status = AwsClusterStatus {
                subnets: vec![
                    subnet("subnet-pub-a", "us-east-1a", true),
                    subnet("subnet-priv-a", "us-east-1a", false),
                    subnet("subnet-priv-b", "us-east-1b", false),
                ],
                ..Default::default()
            };
            infra_status.security_groups.control_plane = "sg-cp".into();
            infra_status.security_groups.node = "sg-node".into();
            infra_status.instance_profiles.control_plane = "demo-control-plane".into();
            infra_status.instance_profiles.node = String::new();
            Self {
                machine: KubeZeroMachine::new("demo-x1", Default::default()),
                spec,
                owner,
                infra_spec,
                infra_status,
            }
        }

        fn inputs(&self) -> AwsInputs<'_> {
            AwsInputs {
                machine: &self.machine,
                namespace: "default",
                spec: &self.spec,
                owner: &self.owner,
                cluster: "demo",
                infra_spec: &self.infra_spec,
                infra_status: &self.infra_status,
            }
        }
    }

    fn image() -> ResolvedImage {
        ResolvedImage {
            id: "ami-0123456789abcdef0".into(),
            root_device_name: "/dev/xvda".into(),
        }
    }

    #[test]
    fn a_control_plane_machine_gets_its_role_groups_profile_and_tags() {
        let fixture = Fixture::new(true, Some("us-east-1b"));
        let spec = launch_spec(&fixture.inputs(), image(), b"#cloud-config\n").unwrap();
        assert_eq!(spec.image_id, "ami-0123456789abcdef0");
        assert_eq!(spec.root_device_name, "/dev/xvda");
        assert_eq!(spec.instance_type, "m7g.large");
        assert_eq!(spec.subnet_ids, ["subnet-priv-b"]);
        assert_eq!(spec.security_group_ids, ["sg-cp", "sg-extra"]);
        assert_eq!(spec.instance_profile.as_deref(), Some("demo-control-plane"));
        assert_eq!(
            spec.user_data, "I2Nsb3VkLWNvbmZpZwo=",
            "base64 as RunInstances takes it"
        );
        let tags = cluster_tags("demo", &fixture.infra_spec);
        assert_eq!(spec.tags[&tags.owned_key()], OWNED);
        assert_eq!(spec.tags[&tags.kubernetes_key()], OWNED);
        assert_eq!(spec.tags[ROLE_TAG], Role::ControlPlane.as_str());
        assert_eq!(
            spec.tags["team"], "machines",
            "the machine's tags win over the cluster's"
        );
        assert_eq!(spec.tags["env"], "prod");
        assert_eq!(spec.tags["cost-center"], "42");
    }

    #[test]
    fn a_node_without_a_failure_domain_spreads_over_the_private_zones() {
        let fixture = Fixture::new(false, None);
        let spec = launch_spec(&fixture.inputs(), image(), b"data").unwrap();
        assert_eq!(spec.subnet_ids, ["subnet-priv-a", "subnet-priv-b"]);
        assert_eq!(spec.security_group_ids, ["sg-node", "sg-extra"]);
        assert_eq!(spec.instance_profile, None, "an empty profile is left out");
        assert_eq!(spec.tags[ROLE_TAG], Role::Node.as_str());
    }

    #[test]
    fn a_failure_domain_without_subnets_cannot_be_planned() {
        let fixture = Fixture::new(false, Some("us-east-1d"));
        let error = launch_spec(&fixture.inputs(), image(), b"data").unwrap_err();
        assert_eq!(
            error.to_string(),
            "no subnet of the cluster in failure domain Some(\"us-east-1d\")"
        );
    }
}
