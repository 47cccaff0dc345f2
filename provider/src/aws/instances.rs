//! EC2 instances of a cluster as domain types: the launch specification of a machine (what
//! RunInstances gets), its fingerprint (identical specs launch together), ClientTokens, and the
//! single calls (filtered DescribeInstances, RunInstances, CreateTags, TerminateInstances) that the
//! per-cluster batcher in [`super::launcher`] combines.

use std::collections::BTreeMap;

use aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, HttpTokensState, IamInstanceProfileSpecification,
    InstanceInterruptionBehavior, InstanceLifecycleType, InstanceMarketOptionsRequest,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceStateName, InstanceType,
    MarketType, ResourceType, SpotInstanceType, SpotMarketOptions, VolumeType as Ec2VolumeType,
};
use serde::Serialize;

use super::clients::AwsClients;
use super::errors::AwsError;
use super::limiter::Service::Ec2;
use super::tags::{ClusterTags, ec2_tag, ec2_tag_spec, ec2_tags, filter};
use crate::api::aws::{AwsExtraVolume, AwsImds, AwsSpot, AwsVolume, HttpTokens, VolumeType};

/// Tag naming the KubeZeroMachine (`<namespace>/<name>`) an instance belongs to.
pub const MACHINE_TAG: &str = "kubezero.io/machine";
/// Tag holding the fingerprint of the launch specification an instance was started from; lets a
/// restarted provider adopt instances of a batch it launched but did not get to assign.
pub const LAUNCH_SPEC_TAG: &str = "kubezero.io/launch-spec";
/// Instance states that still hold (or will hold) resources: the DescribeInstances filter.
pub const LIVE_STATES: [&str; 5] = ["pending", "running", "shutting-down", "stopping", "stopped"];
/// Most instances per TerminateInstances call.
pub const TERMINATE_CHUNK: usize = 1000;
/// Results per DescribeInstances page.
pub const DESCRIBE_PAGE: i32 = 1000;

/// A KubeZeroMachine as the launcher knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MachineKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// ClientToken material: the UID the object had when it first asked for a launch, kept in its
    /// `kubezero.io/launch-token` annotation so that it survives `clusterctl move` (which recreates
    /// the object with a new UID), while a new object of the same name gets a token of its own.
    pub launch_token: String,
}

impl MachineKey {
    /// The [`MACHINE_TAG`] value: `<namespace>/<name>`.
    pub fn tag_value(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Lifecycle state of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Starting.
    Pending,
    /// Running.
    Running,
    /// Being terminated.
    ShuttingDown,
    /// Gone.
    Terminated,
    /// Stopping.
    Stopping,
    /// Stopped.
    Stopped,
}

impl InstanceState {
    fn from_ec2(state: Option<&InstanceStateName>) -> Self {
        match state {
            Some(InstanceStateName::Running) => InstanceState::Running,
            Some(InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
            Some(InstanceStateName::Terminated) => InstanceState::Terminated,
            Some(InstanceStateName::Stopping) => InstanceState::Stopping,
            Some(InstanceStateName::Stopped) => InstanceState::Stopped,
            _ => InstanceState::Pending,
        }
    }

    /// The EC2 name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
        }
    }

    /// Whether the instance is on its way out or gone.
    pub fn is_ending(self) -> bool {
        matches!(self, InstanceState::ShuttingDown | InstanceState::Terminated)
    }
}

/// One instance of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Instance id.
    pub id: String,
    /// State.
    pub state: InstanceState,
    /// Availability zone.
    pub zone: String,
    /// Subnet.
    pub subnet_id: Option<String>,
    /// Private IPv4 address.
    pub private_ip: Option<String>,
    /// Private DNS name.
    pub private_dns: Option<String>,
    /// Public IPv4 address.
    pub public_ip: Option<String>,
    /// Public DNS name.
    pub public_dns: Option<String>,
    /// The [`MACHINE_TAG`] value.
    pub machine: Option<String>,
    /// The [`LAUNCH_SPEC_TAG`] value.
    pub launch_spec: Option<String>,
    /// A spot instance.
    pub spot: bool,
    /// Launch time, seconds since the epoch.
    pub launched_at: Option<i64>,
}

impl Instance {
    /// `aws:///<zone>/<instance-id>`, the provider ID the node derives from IMDS.
    pub fn provider_id(&self) -> String {
        provider_id(&self.zone, &self.id)
    }
}

/// `aws:///<zone>/<instance-id>`.
pub fn provider_id(zone: &str, instance_id: &str) -> String {
    format!("aws:///{zone}/{instance_id}")
}

/// The (zone, instance id) of an `aws:///<zone>/<instance-id>` provider ID.
pub fn parse_provider_id(provider_id: &str) -> Option<(&str, &str)> {
    let rest = provider_id.strip_prefix("aws:///")?;
    let (zone, id) = rest.split_once('/')?;
    (id.starts_with("i-") && !zone.is_empty()).then_some((zone, id))
}

/// Converts the SDK's instance. Pure.
pub fn from_ec2(instance: &aws_sdk_ec2::types::Instance) -> Option<Instance> {
    let non_empty = |value: Option<&str>| value.filter(|v| !v.is_empty()).map(str::to_owned);
    Some(Instance {
        id: instance.instance_id()?.to_owned(),
        state: InstanceState::from_ec2(instance.state().and_then(|s| s.name())),
        zone: instance
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_owned(),
        subnet_id: non_empty(instance.subnet_id()),
        private_ip: non_empty(instance.private_ip_address()),
        private_dns: non_empty(instance.private_dns_name()),
        public_ip: non_empty(instance.public_ip_address()),
        public_dns: non_empty(instance.public_dns_name()),
        machine: ec2_tag(instance.tags(), MACHINE_TAG).map(str::to_owned),
        launch_spec: ec2_tag(instance.tags(), LAUNCH_SPEC_TAG).map(str::to_owned),
        spot: instance.instance_lifecycle() == Some(&InstanceLifecycleType::Spot),
        launched_at: instance.launch_time().map(|t| t.secs()),
    })
}

/// Everything RunInstances needs for one machine. Machines whose specs are equal (same image, type,
/// subnet, groups, profile, user data, volumes, options, tags) are launched together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LaunchSpec {
    /// AMI id.
    pub image_id: String,
    /// Root device name of the image.
    pub root_device_name: String,
    /// Instance type.
    pub instance_type: String,
    /// Candidate subnets: one (the machine's subnet or failure domain), or one per zone for machines
    /// without a failure domain, over which the launcher spreads each batch evenly.
    pub subnet_ids: Vec<String>,
    /// Security group ids (role group first, then additional ones).
    pub security_group_ids: Vec<String>,
    /// Instance profile name.
    pub instance_profile: Option<String>,
    /// User data, base64-encoded as RunInstances takes it (never logged).
    #[serde(serialize_with = "fingerprint_only")]
    pub user_data: String,
    /// Root volume.
    pub root_volume: AwsVolume,
    /// Additional volumes.
    pub extra_volumes: Vec<AwsExtraVolume>,
    /// Metadata service options.
    pub imds: AwsImds,
    /// Spot options (`None`: on-demand).
    pub spot: Option<AwsSpot>,
    /// EC2 key pair.
    pub ssh_key_name: Option<String>,
    /// Tags of the instance and its volumes (cluster ownership, role, user tags); no per-machine tag.
    pub tags: BTreeMap<String, String>,
}

/// User data as [`LaunchSpec::user_data`] holds it: base64, as RunInstances takes it. Pure.
pub fn encode_user_data(user_data: &[u8]) -> String {
    aws_smithy_types::base64::encode(user_data)
}

/// User data enters the fingerprint as its own hash, so the serialized spec never carries it.
fn fingerprint_only<S: serde::Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{:016x}", fnv1a(value.as_bytes(), FNV_OFFSET)))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a from `seed`: stable across builds and platforms (unlike `std`'s hasher), which
/// the fingerprint tag and ClientTokens need to survive restarts.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// 128 bits of FNV-1a (two seeds) as 32 hex digits.
fn digest(bytes: &[u8]) -> String {
    format!(
        "{:016x}{:016x}",
        fnv1a(bytes, FNV_OFFSET),
        fnv1a(bytes, !FNV_OFFSET)
    )
}

impl LaunchSpec {
    /// Stable fingerprint: equal specs, equal fingerprints (the [`LAUNCH_SPEC_TAG`] value).
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("launch specs serialize");
        digest(&canonical)
    }
}

/// The ClientToken of launching `members` (sorted by launch token) with spec `fingerprint`: the same batch
/// retried after a lost answer or a crash gets the same token, so EC2 returns the instances it
/// already started instead of starting more. At most 64 ASCII characters.
pub fn client_token(fingerprint: &str, members: &[MachineKey]) -> String {
    let mut uids: Vec<&str> = members.iter().map(|m| m.launch_token.as_str()).collect();
    uids.sort_unstable();
    if let [only] = uids.as_slice()
        && only.len() <= 60
    {
        return format!("kzm-{only}");
    }
    let material = format!("{fingerprint}|{}", uids.join(","));
    format!("kzb-{}", digest(material.as_bytes()))
}

fn ec2_volume_type(volume_type: VolumeType) -> Ec2VolumeType {
    match volume_type {
        VolumeType::Gp3 => Ec2VolumeType::Gp3,
        VolumeType::Gp2 => Ec2VolumeType::Gp2,
        VolumeType::Io1 => Ec2VolumeType::Io1,
        VolumeType::Io2 => Ec2VolumeType::Io2,
        VolumeType::St1 => Ec2VolumeType::St1,
        VolumeType::Sc1 => Ec2VolumeType::Sc1,
    }
}

fn ebs(
    size_gib: i32,
    volume_type: VolumeType,
    iops: Option<i32>,
    throughput: Option<i32>,
    encrypted: bool,
) -> EbsBlockDevice {
    EbsBlockDevice::builder()
        .volume_size(size_gib)
        .volume_type(ec2_volume_type(volume_type))
        .set_iops(iops)
        .set_throughput(throughput)
        .encrypted(encrypted)
        .delete_on_termination(true)
        .build()
}

/// Block device mappings: the root volume on the image's root device, then the extra volumes.
pub fn block_devices(spec: &LaunchSpec) -> Vec<BlockDeviceMapping> {
    let root = &spec.root_volume;
    let mut mappings = vec![
        BlockDeviceMapping::builder()
            .device_name(&spec.root_device_name)
            .ebs(ebs(
                root.size_gib,
                root.volume_type,
                root.iops,
                root.throughput,
                root.encrypted,
            ))
            .build(),
    ];
    mappings.extend(spec.extra_volumes.iter().map(|volume| {
        BlockDeviceMapping::builder()
            .device_name(&volume.device_name)
            .ebs(ebs(
                volume.size_gib,
                volume.volume_type,
                volume.iops,
                volume.throughput,
                volume.encrypted,
            ))
            .build()
    }));
    mappings
}

/// How many of a batch a RunInstances must start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// All or nothing (`MinCount=MaxCount=count`).
    All,
    /// As many as EC2 has capacity for (`MinCount=1`, `MaxCount=count`).
    Partial,
}

/// Share of a launch spec's instances (in percent) by which zones may differ after a batch, so
/// that a batch small against the pool goes to one zone (one RunInstances) instead of one call per
/// zone; the next batches go to the other zones.
pub const ZONE_SLACK_PERCENT: usize = 10;

/// Assigns `members` new instances to `subnets` (indices; `existing` counts instances per subnet
/// id). Each member goes to the least loaded of the fewest, least loaded subnets that keep the
/// zones as even as spreading over all of them would, or within [`ZONE_SLACK_PERCENT`] of all the
/// instances: a new MachineDeployment spreads over every zone, a small batch into a large pool
/// makes one call. Ties go to the first subnet. Pure.
pub fn spread(members: usize, subnets: &[String], existing: &BTreeMap<String, usize>) -> Vec<usize> {
    let load: Vec<usize> = subnets
        .iter()
        .map(|s| existing.get(s).copied().unwrap_or(0))
        .collect();
    let mut emptiest: Vec<usize> = (0..load.len()).collect();
    emptiest.sort_by_key(|index| (load[*index], *index));
    let fill = |allowed: &[usize]| -> (Vec<usize>, usize) {
        let mut after = load.clone();
        let assignment = (0..members)
            .map(|_| {
                let index = *allowed
                    .iter()
                    .min_by_key(|index| (after[**index], **index))
                    .expect("at least one subnet");
                after[index] += 1;
                index
            })
            .collect();
        let spread = after.iter().max().unwrap_or(&0) - after.iter().min().unwrap_or(&0);
        (assignment, spread)
    };
    let (even, even_spread) = fill(&emptiest);
    let total = load.iter().sum::<usize>() + members;
    let tolerated = even_spread.max(total * ZONE_SLACK_PERCENT / 100);
    (1..emptiest.len())
        .map(|zones| fill(&emptiest[..zones]))
        .find(|(_, spread)| *spread <= tolerated)
        .map_or(even, |(assignment, _)| assignment)
}

/// Fills a RunInstances request for `count` instances of `spec` in `subnet_id` with `token` and
/// `extra_tags` (the launch-spec tag, and the machine tag of a single launch). Pure.
pub fn run_instances_request(
    request: RunInstancesFluentBuilder,
    spec: &LaunchSpec,
    subnet_id: &str,
    count: i32,
    fill: Fill,
    token: &str,
    extra_tags: &BTreeMap<String, String>,
) -> RunInstancesFluentBuilder {
    let mut tags = spec.tags.clone();
    tags.extend(extra_tags.clone());
    let metadata = InstanceMetadataOptionsRequest::builder()
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .http_tokens(match spec.imds.http_tokens {
            HttpTokens::Required => HttpTokensState::Required,
            HttpTokens::Optional => HttpTokensState::Optional,
        })
        .http_put_response_hop_limit(spec.imds.http_put_response_hop_limit)
        .build();
    let market = spec.spot.as_ref().map(|spot| {
        InstanceMarketOptionsRequest::builder()
            .market_type(MarketType::Spot)
            .spot_options(
                SpotMarketOptions::builder()
                    .set_max_price(spot.max_price.clone())
                    .spot_instance_type(SpotInstanceType::OneTime)
                    .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                    .build(),
            )
            .build()
    });
    request
        .image_id(&spec.image_id)
        .instance_type(InstanceType::from(spec.instance_type.as_str()))
        .min_count(match fill {
            Fill::All => count,
            Fill::Partial => 1,
        })
        .max_count(count)
        .client_token(token)
        .subnet_id(subnet_id)
        .set_security_group_ids(Some(spec.security_group_ids.clone()))
        .set_iam_instance_profile(
            spec.instance_profile
                .as_ref()
                .map(|name| IamInstanceProfileSpecification::builder().name(name).build()),
        )
        .user_data(&spec.user_data)
        .set_block_device_mappings(Some(block_devices(spec)))
        .metadata_options(metadata)
        .set_instance_market_options(market)
        .set_key_name(spec.ssh_key_name.clone())
        .tag_specifications(ec2_tag_spec(ResourceType::Instance, &tags))
        .tag_specifications(ec2_tag_spec(ResourceType::Volume, &tags))
}

/// Every live instance carrying the cluster's ownership tag: one filtered, paginated
/// DescribeInstances (one call per 1000 instances).
#[tracing::instrument(skip_all, fields(cluster = tags.cluster()))]
pub async fn describe_cluster_instances(
    aws: &AwsClients,
    tags: &ClusterTags,
) -> Result<Vec<Instance>, AwsError> {
    let filters = vec![tags.owned_filter(), filter("instance-state-name", &LIVE_STATES)];
    let mut instances = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let out = aws
            .call(Ec2, "DescribeInstances", || {
                aws.ec2
                    .describe_instances()
                    .set_filters(Some(filters.clone()))
                    .max_results(DESCRIBE_PAGE)
                    .set_next_token(next_token.clone())
                    .send()
            })
            .await?;
        instances.extend(
            out.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter(|i| tags.owns(i.tags()))
                .filter_map(from_ec2),
        );
        match out.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
            _ => return Ok(instances),
        }
    }
}

/// Launches `count` instances of `spec` with one RunInstances (all of them, or with
/// [`Fill::Partial`] as many as EC2 has capacity for); returns them ordered by launch index.
#[tracing::instrument(skip_all, fields(count, ?fill, token))]
pub async fn run_instances(
    aws: &AwsClients,
    spec: &LaunchSpec,
    subnet_id: &str,
    count: i32,
    fill: Fill,
    token: &str,
    extra_tags: &BTreeMap<String, String>,
) -> Result<Vec<Instance>, AwsError> {
    let out = aws
        .call_weighted(Ec2, "RunInstances", count.max(1) as u32, || {
            run_instances_request(
                aws.ec2.run_instances(),
                spec,
                subnet_id,
                count,
                fill,
                token,
                extra_tags,
            )
            .send()
        })
        .await?;
    let mut launched: Vec<(i32, Instance)> = out
        .instances()
        .iter()
        .filter_map(|i| from_ec2(i).map(|converted| (i.ami_launch_index().unwrap_or(0), converted)))
        .collect();
    launched.sort_by_key(|(index, _)| *index);
    Ok(launched.into_iter().map(|(_, i)| i).collect())
}

/// Tags one instance (its machine tag and `Name`).
pub async fn tag_instance(
    aws: &AwsClients,
    instance_id: &str,
    tags: &BTreeMap<String, String>,
) -> Result<(), AwsError> {
    let ec2_tags = ec2_tags(tags);
    aws.call(Ec2, "CreateTags", || {
        aws.ec2
            .create_tags()
            .resources(instance_id)
            .set_tags(Some(ec2_tags.clone()))
            .send()
    })
    .await
    .map(|_| ())
}

/// Terminates `instance_ids` (at most [`TERMINATE_CHUNK`]) with one TerminateInstances.
pub async fn terminate_instances(aws: &AwsClients, instance_ids: &[String]) -> Result<(), AwsError> {
    if instance_ids.is_empty() {
        return Ok(());
    }
    aws.call_weighted(Ec2, "TerminateInstances", instance_ids.len() as u32, || {
        aws.ec2
            .terminate_instances()
            .set_instance_ids(Some(instance_ids.to_vec()))
            .send()
    })
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::VolumeType as Ec2VolumeType;

    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            image_id: "ami-0a19e00000000222a".into(),
            root_device_name: "/dev/xvda".into(),
            instance_type: "m7i.large".into(),
            subnet_ids: vec!["subnet-0123456789abcdef0".into()],
            security_group_ids: vec!["sg-00000000000000001".into(), "sg-00000000000000002".into()],
            instance_profile: Some("kubezero-demo-node".into()),
            user_data: "I2FscGluZS1jb25maWc=".into(),
            root_volume: AwsVolume::default(),
            extra_volumes: vec![AwsExtraVolume {
                device_name: "/dev/xvdb".into(),
                size_gib: 50,
                volume_type: VolumeType::Io2,
                iops: Some(3000),
                throughput: None,
                encrypted: true,
            }],
            imds: AwsImds::default(),
            spot: None,
            ssh_key_name: None,
            tags: BTreeMap::from([("kubernetes.io/cluster/demo".into(), "owned".into())]),
        }
    }

    fn member(uid: &str) -> MachineKey {
        MachineKey {
            namespace: "default".into(),
            name: format!("m-{uid}"),
            launch_token: uid.into(),
        }
    }

    fn client() -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("us-east-1"))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    #[test]
    fn fingerprint_changes_with_anything_that_changes_the_launch() {
        let base = spec();
        assert_eq!(base.fingerprint(), spec().fingerprint());
        assert_eq!(base.fingerprint().len(), 32);
        let mut other_data = spec();
        other_data.user_data = "b3RoZXI=".into();
        let mut other_subnet = spec();
        other_subnet.subnet_ids = vec!["subnet-0123456789abcdef1".into()];
        let mut spot = spec();
        spot.spot = Some(AwsSpot::default());
        for changed in [other_data, other_subnet, spot] {
            assert_ne!(changed.fingerprint(), base.fingerprint());
        }
        let serialized = serde_json::to_string(&base).unwrap();
        assert!(
            !serialized.contains("I2FscGluZS1jb25maWc="),
            "user data never serialized"
        );
    }

    #[test]
    fn client_token_is_stable_for_the_same_batch_and_fits_ec2() {
        let fp = spec().fingerprint();
        let uid = "0b7e3c9a-1111-4222-8333-944455556666";
        assert_eq!(client_token(&fp, &[member(uid)]), format!("kzm-{uid}"));
        let ab = client_token(&fp, &[member("a"), member("b")]);
        assert_eq!(ab, client_token(&fp, &[member("b"), member("a")]), "order-free");
        assert_ne!(ab, client_token(&fp, &[member("a"), member("c")]));
        assert_ne!(ab, client_token("other", &[member("a"), member("b")]));
        assert!(ab.len() <= 64 && ab.is_ascii());
    }

    #[test]
    fn launch_spec_becomes_a_hardened_run_instances_request() {
        let mut spec = spec();
        spec.spot = Some(AwsSpot {
            max_price: Some("0.05".into()),
        });
        spec.ssh_key_name = Some("ops".into());
        let extra = BTreeMap::from([(MACHINE_TAG.to_owned(), "default/m-1".to_owned())]);
        let request = run_instances_request(
            client().run_instances(),
            &spec,
            "subnet-0123456789abcdef0",
            3,
            Fill::Partial,
            "kzb-x",
            &extra,
        );
        let input = request.as_input();
        assert_eq!(input.get_min_count(), &Some(1));
        assert_eq!(input.get_max_count(), &Some(3));
        let all = run_instances_request(
            client().run_instances(),
            &spec,
            "subnet-0123456789abcdef0",
            3,
            Fill::All,
            "kzb-x",
            &extra,
        );
        assert_eq!(all.as_input().get_min_count(), &Some(3));
        assert_eq!(input.get_client_token().as_deref(), Some("kzb-x"));
        assert_eq!(input.get_image_id().as_deref(), Some("ami-0a19e00000000222a"));
        assert_eq!(input.get_subnet_id().as_deref(), Some("subnet-0123456789abcdef0"));
        assert_eq!(input.get_security_group_ids().as_ref().unwrap().len(), 2);
        assert_eq!(input.get_user_data().as_deref(), Some("I2FscGluZS1jb25maWc="));
        assert_eq!(input.get_key_name().as_deref(), Some("ops"));
        assert_eq!(
            input.get_iam_instance_profile().as_ref().unwrap().name(),
            Some("kubezero-demo-node")
        );
        let metadata = input.get_metadata_options().as_ref().unwrap();
        assert_eq!(metadata.http_tokens(), Some(&HttpTokensState::Required));
        assert_eq!(metadata.http_put_response_hop_limit(), Some(1));
        let devices = input.get_block_device_mappings().as_ref().unwrap();
        assert_eq!(devices[0].device_name(), Some("/dev/xvda"));
        let root = devices[0].ebs().unwrap();
        assert_eq!(root.volume_type(), Some(&Ec2VolumeType::Gp3));
        assert_eq!((root.encrypted(), root.volume_size()), (Some(true), Some(20)));
        assert_eq!(devices[1].ebs().unwrap().iops(), Some(3000));
        let market = input.get_instance_market_options().as_ref().unwrap();
        assert_eq!(market.market_type(), Some(&MarketType::Spot));
        assert_eq!(market.spot_options().unwrap().max_price(), Some("0.05"));
        let tag_specs = input.get_tag_specifications().as_ref().unwrap();
        assert_eq!(tag_specs.len(), 2, "instance and volume tags");
        assert!(tag_specs[0].tags().iter().any(|t| t.key() == Some(MACHINE_TAG)));
        assert!(
            tag_specs[0]
                .tags()
                .iter()
                .any(|t| t.key() == Some("kubernetes.io/cluster/demo"))
        );
    }

    #[test]
    fn batches_spread_evenly_over_zones_starting_with_the_emptiest() {
        let subnets: Vec<String> = ["subnet-a", "subnet-b", "subnet-c"].map(String::from).to_vec();
        assert_eq!(spread(5, &subnets, &BTreeMap::new()), [0, 1, 2, 0, 1]);
        let existing = BTreeMap::from([("subnet-a".to_owned(), 2), ("subnet-b".to_owned(), 1)]);
        assert_eq!(
            spread(4, &subnets, &existing),
            [2, 1, 2, 1],
            "two zones end as even as three would"
        );
        assert_eq!(spread(2, &subnets[..1], &existing), [0, 0]);
        let pool = BTreeMap::from([
            ("subnet-a".to_owned(), 167),
            ("subnet-b".to_owned(), 167),
            ("subnet-c".to_owned(), 166),
        ]);
        assert_eq!(
            spread(40, &subnets, &pool),
            [2; 40],
            "a batch within 10 % of a pool of 500 goes to the emptiest zone alone"
        );
        let mut after = pool.clone();
        *after.get_mut("subnet-c").unwrap() += 40;
        assert_eq!(spread(40, &subnets, &after), [0; 40], "then to the next");
        assert_eq!(
            spread(90, &subnets, &pool)
                .iter()
                .filter(|zone| **zone == 2)
                .count(),
            45,
            "a batch too large for one zone uses two"
        );
    }

    #[test]
    fn provider_ids_round_trip() {
        let id = provider_id("eu-central-1a", "i-0123456789abcdef0");
        assert_eq!(id, "aws:///eu-central-1a/i-0123456789abcdef0");
        assert_eq!(
            parse_provider_id(&id),
            Some(("eu-central-1a", "i-0123456789abcdef0"))
        );
        assert_eq!(parse_provider_id("kubezero://default/host-1"), None);
    }
}
