//! The `spec.aws` sections of KubeZeroCluster and KubeZeroMachine: network, load balancer, instance,
//! AMI, volumes and IMDS settings, with KubeZero's defaults (IMDSv2 hop limit 1, encrypted gp3 root,
//! internal NLB) and the CEL rules that keep a manifest consistent.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Tag key prefixes reserved for the tags the provider sets itself.
pub const RESERVED_TAG_PREFIXES: [&str; 2] = ["kubernetes.io/cluster/", "kubezero.io/"];

// ---------------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------------

/// AWS settings of a workload cluster (`KubeZeroCluster.spec.aws`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsClusterSpec {
    /// AWS region of the cluster, e.g. `eu-central-1`. Cannot be changed.
    #[schemars(length(max = 32), regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("region is immutable"))]
    pub region: String,

    /// VPC, subnets and NAT gateways of the cluster.
    #[serde(default)]
    pub network: AwsNetwork,

    /// Load balancer in front of the control plane API servers.
    #[serde(default)]
    pub load_balancer: AwsLoadBalancer,

    /// Extra tags put on every AWS resource of the cluster.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::api::bounds::string_map::<64, 256>")]
    #[x_kube(validation = Rule::new(
        "self.all(k, !k.startsWith('kubernetes.io/cluster/') && !k.startsWith('kubezero.io/'))"
    ).message("additionalTags must not use the reserved prefixes kubernetes.io/cluster/ or kubezero.io/"))]
    pub additional_tags: BTreeMap<String, String>,
}

/// Network layout of a cluster: an existing VPC (with its subnets) or one managed by the provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.subnets) || size(self.subnets) == 0 || (has(self.vpc) && has(self.vpc.id))"
).message("subnets can only be listed when vpc.id names an existing VPC").field_path(".subnets"))]
pub struct AwsNetwork {
    /// The VPC: `id` of an existing one, or `cidrBlock` of one the provider creates.
    #[serde(default)]
    pub vpc: AwsVpc,

    /// Existing subnets to use (only with `vpc.id`); empty means the provider creates them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 18))]
    pub subnets: Vec<AwsSubnetRef>,

    /// Number of availability zones to spread the cluster over.
    #[serde(default = "default_availability_zone_count")]
    #[schemars(range(min = 1, max = 3))]
    pub availability_zone_count: i32,

    /// NAT gateway layout for private subnets: one per availability zone, or a single shared one.
    #[serde(default)]
    pub nat_gateways: NatGateways,
}

impl Default for AwsNetwork {
    fn default() -> Self {
        Self {
            vpc: AwsVpc::default(),
            subnets: Vec::new(),
            availability_zone_count: default_availability_zone_count(),
            nat_gateways: NatGateways::default(),
        }
    }
}

fn default_availability_zone_count() -> i32 {
    3
}

/// The VPC of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.id) && has(self.cidrBlock))")
    .message("set vpc.id to use your own VPC or vpc.cidrBlock for a managed one, not both"))]
pub struct AwsVpc {
    /// Id of an existing VPC to use, e.g. `vpc-0123456789abcdef0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 21), regex(pattern = r"^vpc-[0-9a-f]{8,17}$"))]
    pub id: Option<String>,

    /// IPv4 CIDR block of the VPC the provider creates, e.g. `10.0.0.0/16`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 18),
        regex(pattern = r"^([0-9]{1,3}\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|3[0-2])$")
    )]
    pub cidr_block: Option<String>,
}

/// An existing subnet of the cluster's VPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSubnetRef {
    /// Subnet id, e.g. `subnet-0123456789abcdef0`.
    #[schemars(length(max = 24), regex(pattern = r"^subnet-[0-9a-f]{8,17}$"))]
    pub id: String,

    /// Whether the subnet is public (load balancers, NAT) or private (nodes).
    #[serde(default)]
    pub role: SubnetRole,
}

/// Role of a subnet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SubnetRole {
    /// Routed to an internet gateway.
    Public,
    /// Routed through a NAT gateway.
    #[default]
    Private,
}

/// NAT gateway layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NatGateways {
    /// One NAT gateway per availability zone (zone failures stay contained).
    #[default]
    PerAvailabilityZone,
    /// One NAT gateway shared by all zones (cheaper, single point of failure).
    Single,
}

/// Load balancer in front of the control plane.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsLoadBalancer {
    /// `internal` (reachable inside the VPC only) or `internet-facing`.
    #[serde(default)]
    pub scheme: LoadBalancerScheme,

    /// Extra security groups attached to the load balancer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 5),
        inner(length(max = 20), regex(pattern = r"^sg-[0-9a-f]{8,17}$"))
    )]
    pub additional_security_groups: Vec<String>,
}

/// Scheme of the control-plane load balancer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LoadBalancerScheme {
    /// Reachable from inside the VPC only.
    #[default]
    #[serde(rename = "internal")]
    Internal,
    /// Reachable from the internet.
    #[serde(rename = "internet-facing")]
    InternetFacing,
}

// ---------------------------------------------------------------------------------------------------
// Machine
// ---------------------------------------------------------------------------------------------------

/// AWS settings of one machine (`KubeZeroMachine.spec.aws`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsMachineSpec {
    /// EC2 instance type, e.g. `m7g.large`.
    #[schemars(length(max = 32), regex(pattern = r"^[a-z][a-z0-9-]*\.[a-z0-9]+$"))]
    pub instance_type: String,

    /// Image to boot: an AMI id, or a lookup of the official Alpine image (default).
    #[serde(default)]
    pub ami: AwsAmi,

    /// Root volume (default: 20 GiB encrypted gp3).
    #[serde(default)]
    pub root_volume: AwsVolume,

    /// Additional EBS volumes attached at launch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(v, self.exists_one(w, w.deviceName == v.deviceName))")
        .message("extraVolumes deviceName values must be unique"))]
    pub extra_volumes: Vec<AwsExtraVolume>,

    /// Instance metadata service options (default: IMDSv2 required, hop limit 1).
    #[serde(default)]
    pub imds: AwsImds,

    /// Run as a spot instance; the machine is then reported as interruptible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot: Option<AwsSpot>,

    /// Extra security groups attached to the instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 5),
        inner(length(max = 20), regex(pattern = r"^sg-[0-9a-f]{8,17}$"))
    )]
    pub additional_security_groups: Vec<String>,

    /// Extra tags put on the instance and its volumes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::api::bounds::string_map::<64, 256>")]
    #[x_kube(validation = Rule::new(
        "self.all(k, !k.startsWith('kubernetes.io/cluster/') && !k.startsWith('kubezero.io/'))"
    ).message("additionalTags must not use the reserved prefixes kubernetes.io/cluster/ or kubezero.io/"))]
    pub additional_tags: BTreeMap<String, String>,

    /// Name of an EC2 key pair for SSH access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub ssh_key_name: Option<String>,

    /// Subnet to launch into; default: a private subnet in the machine's failure domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<AwsSubnetId>,
}

/// Image of a machine: exactly one of `id` or `lookup`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.id) != has(self.lookup)")
    .message("set exactly one of ami.id or ami.lookup"))]
pub struct AwsAmi {
    /// AMI id, e.g. `ami-0123456789abcdef0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 21), regex(pattern = r"^ami-[0-9a-f]{8,17}$"))]
    pub id: Option<String>,

    /// Find the newest official Alpine Linux image matching these settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup: Option<AwsAmiLookup>,
}

impl Default for AwsAmi {
    fn default() -> Self {
        Self {
            id: None,
            lookup: Some(AwsAmiLookup::default()),
        }
    }
}

/// Lookup of an official Alpine Linux cloud image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsAmiLookup {
    /// Alpine release, e.g. `3.22`.
    #[serde(default = "default_alpine_release")]
    #[schemars(length(max = 5), regex(pattern = r"^3\.[0-9]{1,2}$"))]
    pub alpine_release: String,

    /// CPU architecture of the image; must match the instance type.
    #[serde(default)]
    pub architecture: AmiArchitecture,

    /// Image variant: `tiny` (tiny-cloud) or `cloudinit`.
    #[serde(default)]
    pub variant: AmiVariant,

    /// AWS account publishing the images (default: the Alpine Linux account).
    #[serde(default = "default_ami_owner")]
    #[schemars(length(max = 12), regex(pattern = r"^[0-9]{12}$"))]
    pub owner: String,
}

impl Default for AwsAmiLookup {
    fn default() -> Self {
        Self {
            alpine_release: default_alpine_release(),
            architecture: AmiArchitecture::default(),
            variant: AmiVariant::default(),
            owner: default_ami_owner(),
        }
    }
}

fn default_alpine_release() -> String {
    "3.22".to_owned()
}

fn default_ami_owner() -> String {
    "538276064493".to_owned()
}

/// CPU architecture of an AMI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AmiArchitecture {
    /// 64-bit x86.
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    /// 64-bit ARM (Graviton).
    #[serde(rename = "aarch64")]
    Aarch64,
}

/// Variant of the Alpine cloud image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AmiVariant {
    /// tiny-cloud images (`#alpine-config` user data).
    #[default]
    Tiny,
    /// cloud-init images (`#cloud-config` user data).
    Cloudinit,
}

/// An EBS volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.throughput) || !has(self.type) || self.type == 'gp3'")
    .message("throughput can only be set for gp3 volumes").field_path(".throughput"))]
pub struct AwsVolume {
    /// Size in GiB.
    #[serde(rename = "sizeGiB", default = "default_root_volume_size")]
    #[schemars(range(min = 8, max = 16384))]
    pub size_gib: i32,

    /// EBS volume type.
    #[serde(rename = "type", default)]
    pub volume_type: VolumeType,

    /// Provisioned IOPS (io1, io2, gp3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 256000))]
    pub iops: Option<i32>,

    /// Throughput in MiB/s (gp3 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 125, max = 2000))]
    pub throughput: Option<i32>,

    /// Encrypt the volume with the account's default EBS key.
    #[serde(default = "default_true")]
    pub encrypted: bool,
}

impl Default for AwsVolume {
    fn default() -> Self {
        Self {
            size_gib: default_root_volume_size(),
            volume_type: VolumeType::default(),
            iops: None,
            throughput: None,
            encrypted: true,
        }
    }
}

fn default_root_volume_size() -> i32 {
    20
}

fn default_true() -> bool {
    true
}

/// An additional EBS volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.throughput) || !has(self.type) || self.type == 'gp3'")
    .message("throughput can only be set for gp3 volumes").field_path(".throughput"))]
pub struct AwsExtraVolume {
    /// Device name, e.g. `/dev/sdb` or `/dev/xvdb`.
    #[schemars(length(max = 9), regex(pattern = r"^/dev/(sd|xvd)[b-z]$"))]
    pub device_name: String,

    /// Size in GiB.
    #[serde(rename = "sizeGiB")]
    #[schemars(range(min = 8, max = 16384))]
    pub size_gib: i32,

    /// EBS volume type.
    #[serde(rename = "type", default)]
    pub volume_type: VolumeType,

    /// Provisioned IOPS (io1, io2, gp3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 256000))]
    pub iops: Option<i32>,

    /// Throughput in MiB/s (gp3 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 125, max = 2000))]
    pub throughput: Option<i32>,

    /// Encrypt the volume with the account's default EBS key.
    #[serde(default = "default_true")]
    pub encrypted: bool,
}

/// EBS volume type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    /// General purpose SSD, current generation.
    #[default]
    Gp3,
    /// General purpose SSD, previous generation.
    Gp2,
    /// Provisioned IOPS SSD.
    Io1,
    /// Provisioned IOPS SSD, higher durability.
    Io2,
    /// Throughput optimized HDD.
    St1,
    /// Cold HDD.
    Sc1,
}

/// Instance metadata service options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsImds {
    /// `required` enforces IMDSv2 session tokens; `optional` also allows IMDSv1.
    #[serde(default)]
    pub http_tokens: HttpTokens,

    /// Network hops a metadata response may travel; 1 keeps pods from reaching IMDS.
    #[serde(default = "default_hop_limit")]
    #[schemars(range(min = 1, max = 64))]
    pub http_put_response_hop_limit: i32,
}

impl Default for AwsImds {
    fn default() -> Self {
        Self {
            http_tokens: HttpTokens::default(),
            http_put_response_hop_limit: default_hop_limit(),
        }
    }
}

fn default_hop_limit() -> i32 {
    1
}

/// IMDS session token requirement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    /// IMDSv2 only.
    #[default]
    Required,
    /// IMDSv1 and IMDSv2.
    Optional,
}

/// Spot instance options.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSpot {
    /// Highest hourly price in USD, e.g. `0.05`; default: the on-demand price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub max_price: Option<String>,
}

/// Reference to a subnet by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSubnetId {
    /// Subnet id, e.g. `subnet-0123456789abcdef0`.
    #[schemars(length(max = 24), regex(pattern = r"^subnet-[0-9a-f]{8,17}$"))]
    pub id: String,
}

/// What the AWS backend provisioned for a cluster (`KubeZeroCluster.status.aws`): the ids machines
/// launch with. Re-derived from tags on every reconcile, so `clusterctl move` (which drops status)
/// loses nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsClusterStatus {
    /// VPC id.
    #[serde(default)]
    pub vpc_id: String,
    /// Subnets, by availability zone; machines launch into the private subnet of their zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<AwsSubnetStatus>,
    /// Security group ids per role.
    #[serde(default)]
    pub security_groups: AwsSecurityGroupsStatus,
    /// The API server load balancer.
    #[serde(default)]
    pub load_balancer: AwsLoadBalancerStatus,
    /// Instance profile names per role.
    #[serde(default)]
    pub instance_profiles: AwsInstanceProfilesStatus,
}

/// One subnet of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSubnetStatus {
    /// Subnet id.
    pub id: String,
    /// Availability zone.
    pub availability_zone: String,
    /// Whether instances in it get public addresses (load balancers, NAT gateways).
    #[serde(default)]
    pub public: bool,
}

/// Security group ids per role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecurityGroupsStatus {
    /// Control-plane instances.
    #[serde(default)]
    pub control_plane: String,
    /// All nodes (control plane and workers).
    #[serde(default)]
    pub node: String,
    /// The API server load balancer.
    #[serde(default)]
    pub load_balancer: String,
}

/// The API server load balancer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsLoadBalancerStatus {
    /// Load balancer ARN.
    #[serde(default)]
    pub arn: String,
    /// DNS name (the control-plane endpoint host).
    #[serde(default)]
    pub dns_name: String,
    /// Target group control-plane instances are registered in.
    #[serde(default)]
    pub target_group_arn: String,
}

/// Instance profile names per role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsInstanceProfilesStatus {
    /// For control-plane machines.
    #[serde(default)]
    pub control_plane: String,
    /// For worker machines.
    #[serde(default)]
    pub node: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_minimal_aws_machine_gets_kubezero_defaults() {
        let spec: AwsMachineSpec = serde_json::from_value(json!({"instanceType": "t3.medium"})).unwrap();
        assert_eq!(spec.ami.id, None);
        let lookup = spec.ami.lookup.expect("default AMI lookup");
        assert_eq!(lookup.alpine_release, "3.22");
        assert_eq!(lookup.architecture, AmiArchitecture::X86_64);
        assert_eq!(lookup.variant, AmiVariant::Tiny);
        assert_eq!(lookup.owner, "538276064493");
        assert_eq!(spec.root_volume.size_gib, 20);
        assert_eq!(spec.root_volume.volume_type, VolumeType::Gp3);
        assert!(spec.root_volume.encrypted);
        assert_eq!(spec.imds.http_tokens, HttpTokens::Required);
        assert_eq!(spec.imds.http_put_response_hop_limit, 1);
        assert!(spec.spot.is_none());
    }

    #[test]
    fn a_minimal_aws_cluster_gets_kubezero_defaults() {
        let spec: AwsClusterSpec = serde_json::from_value(json!({"region": "eu-central-1"})).unwrap();
        assert_eq!(spec.network.availability_zone_count, 3);
        assert_eq!(spec.network.nat_gateways, NatGateways::PerAvailabilityZone);
        assert_eq!(spec.network.vpc, AwsVpc::default());
        assert_eq!(spec.load_balancer.scheme, LoadBalancerScheme::Internal);
    }

    #[test]
    fn enums_use_the_aws_spelling() {
        assert_eq!(
            serde_json::to_value(LoadBalancerScheme::InternetFacing).unwrap(),
            "internet-facing"
        );
        assert_eq!(serde_json::to_value(AmiArchitecture::Aarch64).unwrap(), "aarch64");
        assert_eq!(serde_json::to_value(AmiArchitecture::X86_64).unwrap(), "x86_64");
        assert_eq!(serde_json::to_value(VolumeType::Io2).unwrap(), "io2");
        assert_eq!(serde_json::to_value(SubnetRole::Private).unwrap(), "private");
        assert_eq!(serde_json::to_value(HttpTokens::Optional).unwrap(), "optional");
    }

    #[test]
    fn reserved_tag_prefixes_match_the_cel_rule() {
        let schema = serde_json::to_string(&crate::api::crds()).unwrap();
        for prefix in RESERVED_TAG_PREFIXES {
            assert!(schema.contains(&format!("startsWith('{prefix}')")), "{prefix}");
        }
    }
}
