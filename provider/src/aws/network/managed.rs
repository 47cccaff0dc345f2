//! The managed network: VPC, one public and one private subnet per availability zone, internet
//! gateway, NAT gateways (per zone or one) and route tables, each found by ownership tags before
//! anything is created.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, NatGatewayState, ResourceType, RouteTable, Subnet,
};

use super::{DEFAULT_VPC_CIDR, NetworkError, NetworkState, SubnetState, owned_in_vpc, plan_subnet_cidrs};
use crate::api::aws::{AwsNetwork, NatGateways};
use crate::aws::clients::AwsClients;
use crate::aws::errors::{AwsError, ok_if_already_exists};
use crate::aws::limiter::Service::Ec2;
use crate::aws::tags::{ClusterTags, ROLE_TAG, Role, ZONE_TAG, ec2_tag, ec2_tag_spec, filter};

const ANYWHERE: &str = "0.0.0.0/0";

/// The managed network: VPC, subnets, internet gateway, public route table, NAT gateways, private
/// route tables, each found by tags before anything is created.
pub(super) async fn managed_network(
    aws: &AwsClients,
    tags: &ClusterTags,
    spec: &AwsNetwork,
) -> Result<NetworkState, NetworkError> {
    let cluster = tags.cluster();
    let invalid = NetworkError::invalid(cluster);
    let zone_count = spec.availability_zone_count.clamp(1, 3) as usize;
    let (vpc_id, vpc_cidr) = ensure_vpc(aws, tags, spec).await?;
    let (subnets, zones) = ensure_subnets(aws, tags, &vpc_id, &vpc_cidr, zone_count).await?;
    let igw_id = ensure_internet_gateway(aws, tags, &vpc_id).await?;

    // Route tables: all owned ones of the VPC in one call.
    let rt_err = NetworkError::route_tables(cluster);
    let tables = aws
        .call(Ec2, "DescribeRouteTables", || {
            aws.ec2
                .describe_route_tables()
                .set_filters(Some(owned_in_vpc(tags, &vpc_id)))
                .send()
        })
        .await
        .map_err(rt_err)?;
    let tables: Vec<RouteTable> = tables
        .route_tables()
        .iter()
        .filter(|t| tags.owns(t.tags()))
        .cloned()
        .collect();

    // Public route table → internet gateway.
    let public_ids: Vec<&str> = subnets
        .iter()
        .filter(|s| s.public)
        .map(|s| s.id.as_str())
        .collect();
    let public_table = tables
        .iter()
        .find(|t| ec2_tag(t.tags(), ROLE_TAG) == Some(Role::Public.as_str()));
    ensure_route_table(
        aws,
        tags,
        &vpc_id,
        public_table,
        RouteTarget::InternetGateway(&igw_id),
        &public_ids,
        Role::Public,
        None,
    )
    .await
    .map_err(rt_err)?;

    let nat_zones: Vec<&String> = match spec.nat_gateways {
        NatGateways::Single => zones.iter().take(1).collect(),
        NatGateways::PerAvailabilityZone => zones.iter().collect(),
    };
    let (nat_by_zone, ready) = ensure_nat_gateways(aws, tags, &vpc_id, &subnets, &nat_zones).await?;

    // Private route table per zone → the zone's NAT gateway (or the single one).
    for zone in &zones {
        let nat_id = nat_by_zone
            .get(zone)
            .filter(|_| spec.nat_gateways == NatGateways::PerAvailabilityZone)
            .or_else(|| nat_zones.first().and_then(|z| nat_by_zone.get(*z)))
            .cloned()
            .ok_or_else(|| invalid(format!("no NAT gateway for zone {zone}")))?;
        let private_ids: Vec<&str> = subnets
            .iter()
            .filter(|s| !s.public && &s.zone == zone)
            .map(|s| s.id.as_str())
            .collect();
        let table = tables.iter().find(|t| {
            ec2_tag(t.tags(), ROLE_TAG) == Some(Role::Private.as_str())
                && ec2_tag(t.tags(), ZONE_TAG) == Some(zone.as_str())
        });
        ensure_route_table(
            aws,
            tags,
            &vpc_id,
            table,
            RouteTarget::NatGateway(&nat_id),
            &private_ids,
            Role::Private,
            Some(zone),
        )
        .await
        .map_err(rt_err)?;
    }

    Ok(NetworkState {
        vpc_id,
        vpc_cidr,
        managed: true,
        subnets,
        internet_gateway_id: Some(igw_id),
        nat_gateway_ids: nat_by_zone,
        ready,
    })
}

/// Finds the cluster's VPC by tags or creates it (with DNS hostnames on). Returns (id, CIDR).
async fn ensure_vpc(
    aws: &AwsClients,
    tags: &ClusterTags,
    spec: &AwsNetwork,
) -> Result<(String, String), NetworkError> {
    let cluster = tags.cluster();
    let invalid = NetworkError::invalid(cluster);
    let vpc_err = NetworkError::vpc(cluster);
    let owned = [tags.owned_filter(), ClusterTags::role_filter(Role::Common)];
    let vpcs = aws
        .call(Ec2, "DescribeVpcs", || {
            aws.ec2.describe_vpcs().set_filters(Some(owned.to_vec())).send()
        })
        .await
        .map_err(vpc_err)?;
    let vpc = match vpcs.vpcs().iter().find(|v| tags.owns(v.tags())) {
        Some(vpc) => (
            vpc.vpc_id().unwrap_or_default().to_owned(),
            vpc.cidr_block().unwrap_or_default().to_owned(),
        ),
        None => {
            let cidr = spec
                .vpc
                .cidr_block
                .clone()
                .unwrap_or_else(|| DEFAULT_VPC_CIDR.to_owned());
            plan_subnet_cidrs(&cidr).map_err(&invalid)?;
            let tag_spec = ec2_tag_spec(
                ResourceType::Vpc,
                &tags.owned(Role::Common, &format!("{cluster}-vpc")),
            );
            let created = aws
                .call(Ec2, "CreateVpc", || {
                    aws.ec2
                        .create_vpc()
                        .cidr_block(&cidr)
                        .tag_specifications(tag_spec.clone())
                        .send()
                })
                .await
                .map_err(vpc_err)?;
            let vpc_id = created
                .vpc()
                .and_then(|v| v.vpc_id())
                .ok_or_else(|| vpc_err(AwsError::unexpected("CreateVpc", "no VPC id in the response")))?
                .to_owned();
            tracing::info!(%vpc_id, %cidr, "created VPC");
            aws.call(Ec2, "ModifyVpcAttribute", || {
                aws.ec2
                    .modify_vpc_attribute()
                    .vpc_id(&vpc_id)
                    .enable_dns_hostnames(AttributeBooleanValue::builder().value(true).build())
                    .send()
            })
            .await
            .map_err(vpc_err)?;
            (vpc_id, cidr)
        }
    };
    Ok(vpc)
}

/// Finds the cluster's subnets in its VPC and creates the missing public and private subnet of each
/// zone (up to `zone_count` zones, the existing ones first). Returns the subnets and the zones.
async fn ensure_subnets(
    aws: &AwsClients,
    tags: &ClusterTags,
    vpc_id: &str,
    vpc_cidr: &str,
    zone_count: usize,
) -> Result<(Vec<SubnetState>, Vec<String>), NetworkError> {
    let cluster = tags.cluster();
    let invalid = NetworkError::invalid(cluster);
    let (private_slots, public_slots) = plan_subnet_cidrs(vpc_cidr).map_err(&invalid)?;

    let subnet_err = NetworkError::subnets(cluster);
    let owned_in_vpc = owned_in_vpc(tags, vpc_id);
    let existing = aws
        .call(Ec2, "DescribeSubnets", || {
            aws.ec2
                .describe_subnets()
                .set_filters(Some(owned_in_vpc.clone()))
                .send()
        })
        .await
        .map_err(subnet_err)?;
    let mut subnets: Vec<SubnetState> = existing
        .subnets()
        .iter()
        .filter(|s| tags.owns(s.tags()))
        .map(|s| subnet_state(s, ec2_tag(s.tags(), ROLE_TAG) == Some(Role::Public.as_str())))
        .collect();
    let mut zones: Vec<String> = Vec::new();
    for subnet in &subnets {
        if !zones.contains(&subnet.zone) {
            zones.push(subnet.zone.clone());
        }
    }
    zones.sort();
    if zones.len() < zone_count {
        let available = aws
            .call(Ec2, "DescribeAvailabilityZones", || {
                aws.ec2
                    .describe_availability_zones()
                    .filters(filter("state", &["available"]))
                    .filters(filter("zone-type", &["availability-zone"]))
                    .send()
            })
            .await
            .map_err(subnet_err)?;
        let mut names: Vec<String> = available
            .availability_zones()
            .iter()
            .filter_map(|z| z.zone_name().map(str::to_owned))
            .collect();
        names.sort();
        for name in names {
            if zones.len() >= zone_count {
                break;
            }
            if !zones.contains(&name) {
                zones.push(name);
            }
        }
    }
    for public in [true, false] {
        let slots = if public { &public_slots } else { &private_slots };
        let mut free: Vec<&String> = slots
            .iter()
            .filter(|slot| !subnets.iter().any(|s| &s.cidr == *slot))
            .collect();
        free.reverse();
        for zone in &zones {
            if subnets.iter().any(|s| &s.zone == zone && s.public == public) {
                continue;
            }
            let Some(cidr) = free.pop() else {
                return Err(invalid(format!(
                    "no free {} subnet CIDR left in {vpc_cidr}",
                    kind(public)
                )));
            };
            let role = if public { Role::Public } else { Role::Private };
            let name = format!("{cluster}-{}-{zone}", kind(public));
            let tag_spec = ec2_tag_spec(ResourceType::Subnet, &tags.owned_in_zone(role, &name, zone));
            let created = aws
                .call(Ec2, "CreateSubnet", || {
                    aws.ec2
                        .create_subnet()
                        .vpc_id(vpc_id)
                        .cidr_block(cidr)
                        .availability_zone(zone)
                        .tag_specifications(tag_spec.clone())
                        .send()
                })
                .await
                .map_err(subnet_err)?;
            let subnet = created.subnet().ok_or_else(|| {
                subnet_err(AwsError::unexpected("CreateSubnet", "no subnet in the response"))
            })?;
            let state = subnet_state(subnet, public);
            tracing::info!(subnet_id = %state.id, %zone, %cidr, public, "created subnet");
            subnets.push(state);
        }
    }
    subnets.sort_by(|a, b| (&a.zone, !a.public).cmp(&(&b.zone, !b.public)));
    Ok((subnets, zones))
}

/// Finds or creates the cluster's internet gateway and attaches it to the VPC. Returns its id.
async fn ensure_internet_gateway(
    aws: &AwsClients,
    tags: &ClusterTags,
    vpc_id: &str,
) -> Result<String, NetworkError> {
    let cluster = tags.cluster();
    let igw_err = NetworkError::internet_gateway(cluster);
    let owned_igw = vec![tags.owned_filter()];
    let gateways = aws
        .call(Ec2, "DescribeInternetGateways", || {
            aws.ec2
                .describe_internet_gateways()
                .set_filters(Some(owned_igw.clone()))
                .send()
        })
        .await
        .map_err(igw_err)?;
    let (igw_id, attached) = match gateways.internet_gateways().iter().find(|g| tags.owns(g.tags())) {
        Some(igw) => (
            igw.internet_gateway_id().unwrap_or_default().to_owned(),
            igw.attachments().iter().any(|a| a.vpc_id() == Some(vpc_id)),
        ),
        None => {
            let tag_spec = ec2_tag_spec(
                ResourceType::InternetGateway,
                &tags.owned(Role::Common, &format!("{cluster}-igw")),
            );
            let created = aws
                .call(Ec2, "CreateInternetGateway", || {
                    aws.ec2
                        .create_internet_gateway()
                        .tag_specifications(tag_spec.clone())
                        .send()
                })
                .await
                .map_err(igw_err)?;
            let id = created
                .internet_gateway()
                .and_then(|g| g.internet_gateway_id())
                .ok_or_else(|| {
                    igw_err(AwsError::unexpected(
                        "CreateInternetGateway",
                        "no gateway id in the response",
                    ))
                })?
                .to_owned();
            tracing::info!(internet_gateway_id = %id, "created internet gateway");
            (id, false)
        }
    };
    if !attached {
        aws.call(Ec2, "AttachInternetGateway", || {
            aws.ec2
                .attach_internet_gateway()
                .internet_gateway_id(&igw_id)
                .vpc_id(vpc_id)
                .send()
        })
        .await
        .map_err(igw_err)?;
    }
    Ok(igw_id)
}

/// Finds the cluster's NAT gateways and creates the missing ones (with their elastic IPs, reusing
/// one left by an interrupted run) in the public subnets of `nat_zones`. Returns them by zone and
/// whether all are available.
async fn ensure_nat_gateways(
    aws: &AwsClients,
    tags: &ClusterTags,
    vpc_id: &str,
    subnets: &[SubnetState],
    nat_zones: &[&String],
) -> Result<(BTreeMap<String, String>, bool), NetworkError> {
    let cluster = tags.cluster();
    let invalid = NetworkError::invalid(cluster);
    let nat_err = NetworkError::nat_gateways(cluster);
    let owned_nat = vec![
        filter("vpc-id", &[vpc_id]),
        tags.owned_filter(),
        filter("state", &["pending", "available"]),
    ];
    let nats = aws
        .call(Ec2, "DescribeNatGateways", || {
            aws.ec2
                .describe_nat_gateways()
                .set_filter(Some(owned_nat.clone()))
                .send()
        })
        .await
        .map_err(nat_err)?;
    let mut nat_by_zone: BTreeMap<String, String> = BTreeMap::new();
    let mut ready = true;
    for nat in nats.nat_gateways().iter().filter(|n| tags.owns(n.tags())) {
        let zone = subnets
            .iter()
            .find(|s| Some(s.id.as_str()) == nat.subnet_id())
            .map(|s| s.zone.clone())
            .or_else(|| ec2_tag(nat.tags(), ZONE_TAG).map(str::to_owned));
        if let (Some(zone), Some(id)) = (zone, nat.nat_gateway_id()) {
            ready &= nat.state() == Some(&NatGatewayState::Available);
            nat_by_zone.insert(zone, id.to_owned());
        }
    }
    let missing: Vec<&String> = nat_zones
        .iter()
        .copied()
        .filter(|z| !nat_by_zone.contains_key(*z))
        .collect();
    if !missing.is_empty() {
        let owned_eips = vec![tags.owned_filter(), ClusterTags::role_filter(Role::Nat)];
        let addresses = aws
            .call(Ec2, "DescribeAddresses", || {
                aws.ec2
                    .describe_addresses()
                    .set_filters(Some(owned_eips.clone()))
                    .send()
            })
            .await
            .map_err(nat_err)?;
        for zone in missing {
            let public_subnet = subnets
                .iter()
                .find(|s| &s.zone == zone && s.public)
                .map(|s| s.id.clone())
                .ok_or_else(|| invalid(format!("no public subnet in {zone} for its NAT gateway")))?;
            // An elastic IP left by an earlier, interrupted run is reused.
            let leftover = addresses
                .addresses()
                .iter()
                .find(|a| {
                    tags.owns(a.tags())
                        && a.association_id().is_none()
                        && ec2_tag(a.tags(), ZONE_TAG) == Some(zone.as_str())
                })
                .and_then(|a| a.allocation_id().map(str::to_owned));
            let allocation_id = match leftover {
                Some(id) => id,
                None => {
                    let name = format!("{cluster}-nat-{zone}");
                    let tag_spec = ec2_tag_spec(
                        ResourceType::ElasticIp,
                        &tags.owned_in_zone(Role::Nat, &name, zone),
                    );
                    let allocated = aws
                        .call(Ec2, "AllocateAddress", || {
                            aws.ec2
                                .allocate_address()
                                .domain(DomainType::Vpc)
                                .tag_specifications(tag_spec.clone())
                                .send()
                        })
                        .await
                        .map_err(nat_err)?;
                    allocated
                        .allocation_id()
                        .ok_or_else(|| {
                            nat_err(AwsError::unexpected(
                                "AllocateAddress",
                                "no allocation id in the response",
                            ))
                        })?
                        .to_owned()
                }
            };
            let name = format!("{cluster}-nat-{zone}");
            let tag_spec = ec2_tag_spec(
                ResourceType::Natgateway,
                &tags.owned_in_zone(Role::Nat, &name, zone),
            );
            let created = aws
                .call(Ec2, "CreateNatGateway", || {
                    aws.ec2
                        .create_nat_gateway()
                        .subnet_id(&public_subnet)
                        .allocation_id(&allocation_id)
                        .tag_specifications(tag_spec.clone())
                        .send()
                })
                .await
                .map_err(nat_err)?;
            let nat = created.nat_gateway().ok_or_else(|| {
                nat_err(AwsError::unexpected(
                    "CreateNatGateway",
                    "no NAT gateway in the response",
                ))
            })?;
            let id = nat.nat_gateway_id().unwrap_or_default().to_owned();
            ready &= nat.state() == Some(&NatGatewayState::Available);
            tracing::info!(nat_gateway_id = %id, %zone, "created NAT gateway");
            nat_by_zone.insert(zone.clone(), id);
        }
    }
    Ok((nat_by_zone, ready))
}

fn kind(public: bool) -> &'static str {
    if public { "public" } else { "private" }
}

pub(super) fn subnet_state(subnet: &Subnet, public: bool) -> SubnetState {
    SubnetState {
        id: subnet.subnet_id().unwrap_or_default().to_owned(),
        zone: subnet.availability_zone().unwrap_or_default().to_owned(),
        cidr: subnet.cidr_block().unwrap_or_default().to_owned(),
        public,
    }
}

/// The default route of a table: (internet gateway id, NAT gateway id).
type DefaultRoute = (Option<String>, Option<String>);

#[derive(Clone, Copy)]
enum RouteTarget<'a> {
    InternetGateway(&'a str),
    NatGateway(&'a str),
}

/// Makes sure a route table exists with a default route to `target` and is associated with
/// `subnet_ids`.
#[allow(clippy::too_many_arguments)]
async fn ensure_route_table(
    aws: &AwsClients,
    tags: &ClusterTags,
    vpc_id: &str,
    existing: Option<&RouteTable>,
    target: RouteTarget<'_>,
    subnet_ids: &[&str],
    role: Role,
    zone: Option<&str>,
) -> Result<(), AwsError> {
    let cluster = tags.cluster();
    let (table_id, routes, associated): (String, Vec<DefaultRoute>, Vec<String>) = match existing {
        Some(table) => (
            table.route_table_id().unwrap_or_default().to_owned(),
            table
                .routes()
                .iter()
                .filter(|r| r.destination_cidr_block() == Some(ANYWHERE))
                .map(|r| {
                    (
                        r.gateway_id().map(str::to_owned),
                        r.nat_gateway_id().map(str::to_owned),
                    )
                })
                .collect(),
            table
                .associations()
                .iter()
                .filter_map(|a| a.subnet_id().map(str::to_owned))
                .collect(),
        ),
        None => {
            let (name, table_tags) = match zone {
                Some(zone) => {
                    let name = format!("{cluster}-rt-{}-{zone}", role.as_str());
                    let t = tags.owned_in_zone(role, &name, zone);
                    (name, t)
                }
                None => {
                    let name = format!("{cluster}-rt-{}", role.as_str());
                    let t = tags.owned(role, &name);
                    (name, t)
                }
            };
            let tag_spec = ec2_tag_spec(ResourceType::RouteTable, &table_tags);
            let created = aws
                .call(Ec2, "CreateRouteTable", || {
                    aws.ec2
                        .create_route_table()
                        .vpc_id(vpc_id)
                        .tag_specifications(tag_spec.clone())
                        .send()
                })
                .await?;
            let id = created
                .route_table()
                .and_then(|t| t.route_table_id())
                .ok_or_else(|| AwsError::unexpected("CreateRouteTable", "no route table id in the response"))?
                .to_owned();
            tracing::info!(route_table_id = %id, %name, "created route table");
            (id, Vec::new(), Vec::new())
        }
    };
    let wanted = match target {
        RouteTarget::InternetGateway(id) => (Some(id.to_owned()), None),
        RouteTarget::NatGateway(id) => (None, Some(id.to_owned())),
    };
    if routes.is_empty() {
        let result = aws
            .call(Ec2, "CreateRoute", || {
                let request = aws
                    .ec2
                    .create_route()
                    .route_table_id(&table_id)
                    .destination_cidr_block(ANYWHERE);
                match target {
                    RouteTarget::InternetGateway(id) => request.gateway_id(id).send(),
                    RouteTarget::NatGateway(id) => request.nat_gateway_id(id).send(),
                }
            })
            .await;
        ok_if_already_exists(result)?;
    } else if !routes.contains(&wanted) {
        aws.call(Ec2, "ReplaceRoute", || {
            let request = aws
                .ec2
                .replace_route()
                .route_table_id(&table_id)
                .destination_cidr_block(ANYWHERE);
            match target {
                RouteTarget::InternetGateway(id) => request.gateway_id(id).send(),
                RouteTarget::NatGateway(id) => request.nat_gateway_id(id).send(),
            }
        })
        .await?;
    }
    for subnet_id in subnet_ids {
        if associated.iter().any(|a| a == subnet_id) {
            continue;
        }
        let result = aws
            .call(Ec2, "AssociateRouteTable", || {
                aws.ec2
                    .associate_route_table()
                    .route_table_id(&table_id)
                    .subnet_id(*subnet_id)
                    .send()
            })
            .await;
        ok_if_already_exists(result)?;
    }
    Ok(())
}
