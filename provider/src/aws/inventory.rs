//! Everything of the kinds the provider manages that exists in a region, unfiltered: for leak and
//! duplicate checks (tests, chaos runs, `make demo`'s "nothing left" report). It lists by kind, not
//! by the ownership tags the `ensure_*` functions rely on, so an untagged leak still shows up.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::NatGatewayState;

use super::clients::AwsClients;
use super::errors::AwsError;
use super::limiter::Service::{Ec2, Elbv2, Iam};
use super::load_balancer::describe_tags;
use super::tags::ClusterTags;

/// One resource: its id (name for IAM, ARN for ELBv2) and tags when the listing returns them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// Id, ARN or name.
    pub id: String,
    /// Tags as listed (empty for kinds whose listing has none).
    pub tags: BTreeMap<String, String>,
}

/// Resources per kind in one region (IAM: the account).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Kind (`instance`, `vpc`, `subnet`, `internet-gateway`, `nat-gateway`, `elastic-ip`, `route-table`,
    /// `security-group`, `load-balancer`, `target-group`, `iam-role`, `instance-profile`) → items.
    pub kinds: BTreeMap<&'static str, Vec<Resource>>,
}

impl Inventory {
    /// Number of resources of `kind`.
    pub fn count(&self, kind: &str) -> usize {
        self.kinds.get(kind).map_or(0, Vec::len)
    }

    /// Count per kind.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        self.kinds
            .iter()
            .map(|(kind, items)| (*kind, items.len()))
            .collect()
    }

    /// Count per kind of resources carrying `tags`' ownership tag (IAM kinds by name prefix).
    pub fn owned_counts(&self, tags: &ClusterTags) -> BTreeMap<&'static str, usize> {
        let iam_prefix = format!("kubezero-{}-", tags.cluster());
        self.kinds
            .iter()
            .map(|(kind, items)| {
                let owned = items
                    .iter()
                    .filter(|r| {
                        tags.is_owned(r.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                            || ((kind.starts_with("iam-") || *kind == "instance-profile")
                                && r.id.starts_with(&iam_prefix))
                    })
                    .count();
                (*kind, owned)
            })
            .collect()
    }
}

fn ec2_resource(id: Option<&str>, tags: &[aws_sdk_ec2::types::Tag]) -> Resource {
    Resource {
        id: id.unwrap_or_default().to_owned(),
        tags: tags
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    }
}

/// Lists every instance not yet terminated, VPC, subnet, internet gateway, live NAT gateway, elastic
/// IP, route table, security group, ELBv2 load balancer and target group of the region, and every IAM
/// role and instance profile of the account.
#[tracing::instrument(skip_all, fields(region = aws.region()))]
pub async fn inventory(aws: &AwsClients) -> Result<Inventory, AwsError> {
    let mut kinds: BTreeMap<&'static str, Vec<Resource>> = BTreeMap::new();
    let ec2 = &aws.ec2;
    let mut instances = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let token = next_token.clone();
        let out = aws
            .call(Ec2, "DescribeInstances", || {
                ec2.describe_instances().set_next_token(token.clone()).send()
            })
            .await?;
        instances.extend(
            out.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter(|i| {
                    i.state().and_then(|s| s.name())
                        != Some(&aws_sdk_ec2::types::InstanceStateName::Terminated)
                })
                .map(|i| ec2_resource(i.instance_id(), i.tags())),
        );
        next_token = out.next_token().filter(|t| !t.is_empty()).map(str::to_string);
        if next_token.is_none() {
            break;
        }
    }
    kinds.insert("instance", instances);
    let out = aws
        .call(Ec2, "DescribeVpcs", || ec2.describe_vpcs().send())
        .await?;
    kinds.insert(
        "vpc",
        out.vpcs()
            .iter()
            .map(|v| ec2_resource(v.vpc_id(), v.tags()))
            .collect(),
    );
    let out = aws
        .call(Ec2, "DescribeSubnets", || ec2.describe_subnets().send())
        .await?;
    kinds.insert(
        "subnet",
        out.subnets()
            .iter()
            .map(|v| ec2_resource(v.subnet_id(), v.tags()))
            .collect(),
    );
    let out = aws
        .call(Ec2, "DescribeInternetGateways", || {
            ec2.describe_internet_gateways().send()
        })
        .await?;
    kinds.insert(
        "internet-gateway",
        out.internet_gateways()
            .iter()
            .map(|v| ec2_resource(v.internet_gateway_id(), v.tags()))
            .collect(),
    );
    let out = aws
        .call(Ec2, "DescribeNatGateways", || ec2.describe_nat_gateways().send())
        .await?;
    kinds.insert(
        "nat-gateway",
        out.nat_gateways()
            .iter()
            .filter(|n| n.state() != Some(&NatGatewayState::Deleted))
            .map(|v| ec2_resource(v.nat_gateway_id(), v.tags()))
            .collect(),
    );
    let out = aws
        .call(Ec2, "DescribeAddresses", || ec2.describe_addresses().send())
        .await?;
    kinds.insert(
        "elastic-ip",
        out.addresses()
            .iter()
            .map(|v| ec2_resource(v.allocation_id(), v.tags()))
            .collect(),
    );
    let out = aws
        .call(Ec2, "DescribeRouteTables", || ec2.describe_route_tables().send())
        .await?;
    kinds.insert(
        "route-table",
        out.route_tables()
            .iter()
            .map(|v| ec2_resource(v.route_table_id(), v.tags()))
            .collect(),
    );
    let out = aws
        .call(Ec2, "DescribeSecurityGroups", || {
            ec2.describe_security_groups().send()
        })
        .await?;
    kinds.insert(
        "security-group",
        out.security_groups()
            .iter()
            .map(|v| ec2_resource(v.group_id(), v.tags()))
            .collect(),
    );

    let elbv2 = &aws.elbv2;
    let out = aws
        .call(Elbv2, "DescribeLoadBalancers", || {
            elbv2.describe_load_balancers().send()
        })
        .await?;
    let arns: Vec<String> = out
        .load_balancers()
        .iter()
        .filter_map(|l| l.load_balancer_arn().map(str::to_owned))
        .collect();
    kinds.insert("load-balancer", elb_resources(aws, arns).await?);
    let out = aws
        .call(Elbv2, "DescribeTargetGroups", || {
            elbv2.describe_target_groups().send()
        })
        .await?;
    let arns: Vec<String> = out
        .target_groups()
        .iter()
        .filter_map(|g| g.target_group_arn().map(str::to_owned))
        .collect();
    kinds.insert("target-group", elb_resources(aws, arns).await?);

    let iam = &aws.iam;
    let mut roles = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let out = aws
            .call(Iam, "ListRoles", || {
                iam.list_roles().set_marker(marker.clone()).send()
            })
            .await?;
        roles.extend(out.roles().iter().map(|r| Resource {
            id: r.role_name().to_owned(),
            tags: BTreeMap::new(),
        }));
        marker = out.marker().filter(|_| out.is_truncated()).map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    kinds.insert("iam-role", roles);
    let mut profiles = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let out = aws
            .call(Iam, "ListInstanceProfiles", || {
                iam.list_instance_profiles().set_marker(marker.clone()).send()
            })
            .await?;
        profiles.extend(out.instance_profiles().iter().map(|p| Resource {
            id: p.instance_profile_name().to_owned(),
            tags: BTreeMap::new(),
        }));
        marker = out.marker().filter(|_| out.is_truncated()).map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    kinds.insert("instance-profile", profiles);
    Ok(Inventory { kinds })
}

async fn elb_resources(aws: &AwsClients, arns: Vec<String>) -> Result<Vec<Resource>, AwsError> {
    let descriptions = describe_tags(aws, &arns).await?;
    Ok(descriptions
        .iter()
        .map(|d| Resource {
            id: d.resource_arn().unwrap_or_default().to_owned(),
            tags: d
                .tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or_default().to_owned(),
                        t.value().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
        })
        .collect())
}
