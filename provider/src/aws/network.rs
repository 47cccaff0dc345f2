//! The cluster network: a managed VPC (public + private subnet per availability zone, internet
//! gateway, NAT gateways, route tables) or the user's own VPC and subnets, validated and never
//! changed. [`ensure_network`] finds what exists by ownership tags before creating anything;
//! [`delete_network`] removes what the cluster owns, in dependency order, tolerating what is gone.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, Filter, NatGatewayState, ResourceType, RouteTable, Subnet,
};
use kubezero_capi::contract::FailureDomain;
use kubezero_capi::runtime::errors::ErrorClass;

use super::DeleteProgress;
use super::clients::AwsClients;
use super::errors::{AwsError, ok_if_already_exists, ok_if_not_found};
use super::limiter::Service::Ec2;
use super::tags::{ClusterTags, Role, ZONE_TAG, ec2_tag, ec2_tag_spec, filter};
use crate::api::aws::{AwsNetwork, NatGateways, SubnetRole};

/// CIDR of a managed VPC when the spec names none.
pub const DEFAULT_VPC_CIDR: &str = "10.0.0.0/16";
const ANYWHERE: &str = "0.0.0.0/0";

/// One subnet of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetState {
    /// Subnet id.
    pub id: String,
    /// Availability zone.
    pub zone: String,
    /// IPv4 CIDR block.
    pub cidr: String,
    /// Public (routed to the internet gateway) or private.
    pub public: bool,
}

/// The network of a cluster as [`ensure_network`] found or made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkState {
    /// VPC id.
    pub vpc_id: String,
    /// IPv4 CIDR block of the VPC.
    pub vpc_cidr: String,
    /// Whether the provider manages (and deletes) the VPC.
    pub managed: bool,
    /// Subnets, ordered by zone then public first.
    pub subnets: Vec<SubnetState>,
    /// Internet gateway of a managed VPC.
    pub internet_gateway_id: Option<String>,
    /// NAT gateways of a managed VPC, by zone.
    pub nat_gateway_ids: BTreeMap<String, String>,
    /// False while a NAT gateway is still `pending` (private subnets have no egress yet).
    pub ready: bool,
}

impl NetworkState {
    /// Availability zones with a subnet nodes can use, all eligible for control-plane machines:
    /// zones of private subnets, or of public ones when there are no private subnets.
    pub fn failure_domains(&self) -> Vec<FailureDomain> {
        let private: BTreeSet<&str> = self
            .subnets
            .iter()
            .filter(|s| !s.public)
            .map(|s| s.zone.as_str())
            .collect();
        let zones = if private.is_empty() {
            self.subnets.iter().map(|s| s.zone.as_str()).collect()
        } else {
            private
        };
        zones
            .into_iter()
            .map(|zone| FailureDomain {
                name: zone.to_owned(),
                control_plane: Some(true),
                attributes: BTreeMap::new(),
            })
            .collect()
    }

    /// Subnets of one kind.
    pub fn subnets(&self, public: bool) -> impl Iterator<Item = &SubnetState> {
        self.subnets.iter().filter(move |s| s.public == public)
    }

    /// The subnet machines in `zone` launch into: private if there is one, else public.
    pub fn machine_subnet(&self, zone: &str) -> Option<&str> {
        let in_zone = |public| self.subnets.iter().find(|s| s.zone == zone && s.public == public);
        in_zone(false).or_else(|| in_zone(true)).map(|s| s.id.as_str())
    }
}

/// Errors of ensuring or deleting a cluster network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The spec cannot be realised (bad CIDR, unknown or foreign BYO VPC/subnet).
    #[error("network of cluster {cluster} is invalid: {message}")]
    Invalid {
        /// Cluster name.
        cluster: String,
        /// What is wrong.
        message: String,
    },
    /// A call on the VPC failed.
    #[error("VPC of cluster {cluster}: {source}")]
    Vpc {
        /// Cluster name.
        cluster: String,
        /// The AWS error.
        source: AwsError,
    },
    /// A call on the subnets failed.
    #[error("subnets of cluster {cluster}: {source}")]
    Subnets {
        /// Cluster name.
        cluster: String,
        /// The AWS error.
        source: AwsError,
    },
    /// A call on the internet gateway failed.
    #[error("internet gateway of cluster {cluster}: {source}")]
    InternetGateway {
        /// Cluster name.
        cluster: String,
        /// The AWS error.
        source: AwsError,
    },
    /// A call on NAT gateways or their elastic IPs failed.
    #[error("NAT gateways of cluster {cluster}: {source}")]
    NatGateways {
        /// Cluster name.
        cluster: String,
        /// The AWS error.
        source: AwsError,
    },
    /// A call on route tables failed.
    #[error("route tables of cluster {cluster}: {source}")]
    RouteTables {
        /// Cluster name.
        cluster: String,
        /// The AWS error.
        source: AwsError,
    },
}

impl NetworkError {
    /// The error class the error policy requeues by.
    pub fn class(&self) -> ErrorClass {
        match self {
            NetworkError::Invalid { .. } => ErrorClass::Invalid,
            NetworkError::Vpc { source, .. }
            | NetworkError::Subnets { source, .. }
            | NetworkError::InternetGateway { source, .. }
            | NetworkError::NatGateways { source, .. }
            | NetworkError::RouteTables { source, .. } => source.class(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Pure planning
// ---------------------------------------------------------------------------------------------------

fn parse_cidr(cidr: &str) -> Option<(u32, u8)> {
    let (address, prefix) = cidr.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    let address: std::net::Ipv4Addr = address.parse().ok()?;
    (prefix <= 32).then_some((u32::from(address), prefix))
}

fn format_cidr(address: u32, prefix: u8) -> String {
    format!("{}/{prefix}", std::net::Ipv4Addr::from(address))
}

/// Subnet CIDR slots of a managed VPC: private subnets get the first three quarters of the VPC
/// (`/18` each in a `/16`), public subnets the first three sixteenths of the last quarter (`/20`).
/// Returns (private, public), three slots each. The VPC prefix must be /16 to /24.
pub fn plan_subnet_cidrs(vpc_cidr: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let (address, prefix) =
        parse_cidr(vpc_cidr).ok_or_else(|| format!("{vpc_cidr} is not an IPv4 CIDR block"))?;
    if !(16..=24).contains(&prefix) {
        return Err(format!(
            "VPC CIDR {vpc_cidr} must have a prefix length from /16 to /24"
        ));
    }
    let mask = u32::MAX << (32 - prefix);
    if address & !mask != 0 {
        return Err(format!("{vpc_cidr} has host bits set"));
    }
    let quarter = 1u32 << (32 - (prefix + 2));
    let sixteenth = 1u32 << (32 - (prefix + 4));
    let private = (0..3)
        .map(|i| format_cidr(address + i * quarter, prefix + 2))
        .collect();
    let public = (0..3)
        .map(|i| format_cidr(address + 3 * quarter + i * sixteenth, prefix + 4))
        .collect();
    Ok((private, public))
}

// ---------------------------------------------------------------------------------------------------
// Ensure
// ---------------------------------------------------------------------------------------------------

/// Finds or creates the network of a cluster (managed), or validates the user's (BYO). Idempotent:
/// a second run with nothing missing makes no create call.
#[tracing::instrument(skip_all, fields(cluster = tags.cluster(), region = aws.region()))]
pub async fn ensure_network(
    aws: &AwsClients,
    tags: &ClusterTags,
    spec: &AwsNetwork,
) -> Result<NetworkState, NetworkError> {
    match &spec.vpc.id {
        Some(vpc_id) => byo_network(aws, tags, spec, vpc_id).await,
        None => managed_network(aws, tags, spec).await,
    }
}

async fn managed_network(
    aws: &AwsClients,
    tags: &ClusterTags,
    spec: &AwsNetwork,
) -> Result<NetworkState, NetworkError> {
    let cluster = tags.cluster().to_owned();
    let invalid = |message: String| NetworkError::Invalid {
        cluster: cluster.clone(),
        message,
    };
    let vpc_err = |source| NetworkError::Vpc {
        cluster: cluster.clone(),
        source,
    };
    let zone_count = spec.availability_zone_count.clamp(1, 3) as usize;

    // VPC.
    let owned = [tags.owned_filter(), ClusterTags::role_filter(Role::Common)];
    let vpcs = aws
        .call(Ec2, "DescribeVpcs", || {
            aws.ec2.describe_vpcs().set_filters(Some(owned.to_vec())).send()
        })
        .await
        .map_err(vpc_err)?;
    let (vpc_id, vpc_cidr) = match vpcs.vpcs().iter().find(|v| tags.owns(v.tags())) {
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
    let (private_slots, public_slots) = plan_subnet_cidrs(&vpc_cidr).map_err(&invalid)?;

    // Subnets.
    let subnet_err = |source| NetworkError::Subnets {
        cluster: cluster.clone(),
        source,
    };
    let in_vpc = filter("vpc-id", &[&vpc_id]);
    let owned_in_vpc = vec![in_vpc.clone(), tags.owned_filter()];
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
        .map(|s| {
            subnet_state(
                s,
                ec2_tag(s.tags(), super::tags::ROLE_TAG) == Some(Role::Public.as_str()),
            )
        })
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
                        .vpc_id(&vpc_id)
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

    // Internet gateway.
    let igw_err = |source| NetworkError::InternetGateway {
        cluster: cluster.clone(),
        source,
    };
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
            igw.attachments()
                .iter()
                .any(|a| a.vpc_id() == Some(vpc_id.as_str())),
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
                .vpc_id(&vpc_id)
                .send()
        })
        .await
        .map_err(igw_err)?;
    }

    // Route tables: all owned ones of the VPC in one call.
    let rt_err = |source| NetworkError::RouteTables {
        cluster: cluster.clone(),
        source,
    };
    let tables = aws
        .call(Ec2, "DescribeRouteTables", || {
            aws.ec2
                .describe_route_tables()
                .set_filters(Some(owned_in_vpc.clone()))
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
        .find(|t| ec2_tag(t.tags(), super::tags::ROLE_TAG) == Some(Role::Public.as_str()));
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

    // NAT gateways in public subnets.
    let nat_err = |source| NetworkError::NatGateways {
        cluster: cluster.clone(),
        source,
    };
    let nat_zones: Vec<&String> = match spec.nat_gateways {
        NatGateways::Single => zones.iter().take(1).collect(),
        NatGateways::PerAvailabilityZone => zones.iter().collect(),
    };
    let owned_nat = vec![
        in_vpc.clone(),
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
            ec2_tag(t.tags(), super::tags::ROLE_TAG) == Some(Role::Private.as_str())
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

fn kind(public: bool) -> &'static str {
    if public { "public" } else { "private" }
}

fn subnet_state(subnet: &Subnet, public: bool) -> SubnetState {
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

async fn byo_network(
    aws: &AwsClients,
    tags: &ClusterTags,
    spec: &AwsNetwork,
    vpc_id: &str,
) -> Result<NetworkState, NetworkError> {
    let cluster = tags.cluster().to_owned();
    let invalid = |message: String| NetworkError::Invalid {
        cluster: cluster.clone(),
        message,
    };
    let vpc_err = |source| NetworkError::Vpc {
        cluster: cluster.clone(),
        source,
    };
    let subnet_err = |source| NetworkError::Subnets {
        cluster: cluster.clone(),
        source,
    };
    let vpcs = ok_if_not_found(
        aws.call(Ec2, "DescribeVpcs", || {
            aws.ec2.describe_vpcs().vpc_ids(vpc_id).send()
        })
        .await,
    )
    .map_err(vpc_err)?;
    let vpc_cidr = vpcs
        .as_ref()
        .and_then(|v| v.vpcs().first())
        .and_then(|v| v.cidr_block())
        .ok_or_else(|| invalid(format!("VPC {vpc_id} does not exist")))?
        .to_owned();

    let in_vpc = filter("vpc-id", &[vpc_id]);
    let listed = if spec.subnets.is_empty() {
        aws.call(Ec2, "DescribeSubnets", || {
            aws.ec2.describe_subnets().filters(in_vpc.clone()).send()
        })
        .await
        .map_err(subnet_err)?
    } else {
        let ids: Vec<String> = spec.subnets.iter().map(|s| s.id.clone()).collect();
        match aws
            .call(Ec2, "DescribeSubnets", || {
                aws.ec2
                    .describe_subnets()
                    .set_subnet_ids(Some(ids.clone()))
                    .send()
            })
            .await
        {
            Ok(output) => output,
            Err(e) if e.is_not_found() => return Err(invalid(format!("subnet not found: {}", e.message))),
            Err(e) => return Err(subnet_err(e)),
        }
    };
    let mut subnets = Vec::new();
    let public_by_routes = if spec.subnets.is_empty() {
        let tables = aws
            .call(Ec2, "DescribeRouteTables", || {
                aws.ec2.describe_route_tables().filters(in_vpc.clone()).send()
            })
            .await
            .map_err(|source| NetworkError::RouteTables {
                cluster: cluster.clone(),
                source,
            })?;
        public_subnets_by_routes(tables.route_tables(), listed.subnets())
    } else {
        BTreeSet::new()
    };
    for subnet in listed.subnets() {
        let id = subnet.subnet_id().unwrap_or_default();
        if subnet.vpc_id() != Some(vpc_id) {
            return Err(invalid(format!("subnet {id} is not in VPC {vpc_id}")));
        }
        let public = match spec.subnets.iter().find(|s| s.id == id) {
            Some(listed) => listed.role == SubnetRole::Public,
            None => public_by_routes.contains(id),
        };
        subnets.push(subnet_state(subnet, public));
    }
    if let Some(missing) = spec
        .subnets
        .iter()
        .find(|s| !subnets.iter().any(|t| t.id == s.id))
    {
        return Err(invalid(format!("subnet {} not found", missing.id)));
    }
    if subnets.is_empty() {
        return Err(invalid(format!("VPC {vpc_id} has no subnets")));
    }
    subnets.sort_by(|a, b| (&a.zone, !a.public, &a.id).cmp(&(&b.zone, !b.public, &b.id)));
    Ok(NetworkState {
        vpc_id: vpc_id.to_owned(),
        vpc_cidr,
        managed: false,
        subnets,
        internet_gateway_id: None,
        nat_gateway_ids: BTreeMap::new(),
        ready: true,
    })
}

/// Subnets whose route table (explicit, or the VPC's main one) sends traffic to an internet gateway.
fn public_subnets_by_routes(tables: &[RouteTable], subnets: &[Subnet]) -> BTreeSet<String> {
    let to_igw = |t: &RouteTable| {
        t.routes()
            .iter()
            .any(|r| r.gateway_id().is_some_and(|g| g.starts_with("igw-")))
    };
    let main_is_public = tables
        .iter()
        .find(|t| t.associations().iter().any(|a| a.main() == Some(true)))
        .is_some_and(to_igw);
    subnets
        .iter()
        .filter_map(|s| s.subnet_id())
        .filter(|id| {
            match tables
                .iter()
                .find(|t| t.associations().iter().any(|a| a.subnet_id() == Some(*id)))
            {
                Some(table) => to_igw(table),
                None => main_is_public,
            }
        })
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// Delete
// ---------------------------------------------------------------------------------------------------

/// Deletes what the cluster owns of its network, in dependency order: NAT gateways, their elastic
/// IPs, the internet gateway, subnets, route tables, the VPC. A BYO VPC and its subnets carry no
/// ownership tag and are left alone. Security groups and load balancers must be gone first
/// (see [`super::security_groups::delete_security_groups`]). Returns [`DeleteProgress::Waiting`]
/// while something is still being deleted or still in use.
#[tracing::instrument(skip_all, fields(cluster = tags.cluster(), region = aws.region()))]
pub async fn delete_network(aws: &AwsClients, tags: &ClusterTags) -> Result<DeleteProgress, NetworkError> {
    let cluster = tags.cluster().to_owned();
    let owned = vec![tags.owned_filter()];

    // NAT gateways.
    let nat_err = |source| NetworkError::NatGateways {
        cluster: cluster.clone(),
        source,
    };
    let nats = aws
        .call(Ec2, "DescribeNatGateways", || {
            aws.ec2
                .describe_nat_gateways()
                .set_filter(Some(owned.clone()))
                .send()
        })
        .await
        .map_err(nat_err)?;
    let mut nats_pending = 0;
    for nat in nats.nat_gateways().iter().filter(|n| tags.owns(n.tags())) {
        let id = nat.nat_gateway_id().unwrap_or_default();
        match nat.state() {
            Some(NatGatewayState::Deleted) => {}
            Some(NatGatewayState::Deleting) => nats_pending += 1,
            _ => {
                ok_if_not_found(
                    aws.call(Ec2, "DeleteNatGateway", || {
                        aws.ec2.delete_nat_gateway().nat_gateway_id(id).send()
                    })
                    .await,
                )
                .map_err(nat_err)?;
                tracing::info!(nat_gateway_id = id, "deleting NAT gateway");
                nats_pending += 1;
            }
        }
    }
    if nats_pending > 0 {
        // Re-check once: some implementations delete at once.
        let again = aws
            .call(Ec2, "DescribeNatGateways", || {
                aws.ec2
                    .describe_nat_gateways()
                    .set_filter(Some(owned.clone()))
                    .send()
            })
            .await
            .map_err(nat_err)?;
        let deleting = again
            .nat_gateways()
            .iter()
            .filter(|n| tags.owns(n.tags()) && n.state() != Some(&NatGatewayState::Deleted))
            .count();
        if deleting > 0 {
            return Ok(DeleteProgress::Waiting(format!(
                "{deleting} NAT gateway(s) being deleted"
            )));
        }
    }

    // Elastic IPs of the NAT gateways.
    let addresses = aws
        .call(Ec2, "DescribeAddresses", || {
            aws.ec2
                .describe_addresses()
                .set_filters(Some(owned.clone()))
                .send()
        })
        .await
        .map_err(nat_err)?;
    for address in addresses.addresses().iter().filter(|a| tags.owns(a.tags())) {
        let Some(allocation_id) = address.allocation_id() else {
            continue;
        };
        match aws
            .call(Ec2, "ReleaseAddress", || {
                aws.ec2.release_address().allocation_id(allocation_id).send()
            })
            .await
        {
            Ok(_) => tracing::info!(allocation_id, "released elastic IP"),
            Err(e) if e.is_not_found() => {}
            Err(e) if e.is_in_use() || e.kind == super::errors::AwsErrorKind::Auth => {
                // AWS answers AuthFailure for an address still associated.
                return Ok(DeleteProgress::Waiting(format!(
                    "elastic IP {allocation_id} still associated"
                )));
            }
            Err(e) => return Err(nat_err(e)),
        }
    }

    // Internet gateways.
    let igw_err = |source| NetworkError::InternetGateway {
        cluster: cluster.clone(),
        source,
    };
    let gateways = aws
        .call(Ec2, "DescribeInternetGateways", || {
            aws.ec2
                .describe_internet_gateways()
                .set_filters(Some(owned.clone()))
                .send()
        })
        .await
        .map_err(igw_err)?;
    for igw in gateways
        .internet_gateways()
        .iter()
        .filter(|g| tags.owns(g.tags()))
    {
        let id = igw.internet_gateway_id().unwrap_or_default();
        for attachment in igw.attachments() {
            let Some(vpc_id) = attachment.vpc_id() else {
                continue;
            };
            match aws
                .call(Ec2, "DetachInternetGateway", || {
                    aws.ec2
                        .detach_internet_gateway()
                        .internet_gateway_id(id)
                        .vpc_id(vpc_id)
                        .send()
                })
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) if e.is_in_use() => {
                    // Public addresses still mapped in the VPC (instances, load balancers).
                    return Ok(DeleteProgress::Waiting(format!(
                        "internet gateway {id}: {}",
                        e.message
                    )));
                }
                Err(e) => return Err(igw_err(e)),
            }
        }
        ok_if_not_found(
            aws.call(Ec2, "DeleteInternetGateway", || {
                aws.ec2.delete_internet_gateway().internet_gateway_id(id).send()
            })
            .await,
        )
        .map_err(igw_err)?;
        tracing::info!(internet_gateway_id = id, "deleted internet gateway");
    }

    // Subnets.
    let subnet_err = |source| NetworkError::Subnets {
        cluster: cluster.clone(),
        source,
    };
    let subnets = aws
        .call(Ec2, "DescribeSubnets", || {
            aws.ec2.describe_subnets().set_filters(Some(owned.clone())).send()
        })
        .await
        .map_err(subnet_err)?;
    let mut in_use = Vec::new();
    for subnet in subnets.subnets().iter().filter(|s| tags.owns(s.tags())) {
        let id = subnet.subnet_id().unwrap_or_default();
        match aws
            .call(Ec2, "DeleteSubnet", || {
                aws.ec2.delete_subnet().subnet_id(id).send()
            })
            .await
        {
            Ok(_) => tracing::info!(subnet_id = id, "deleted subnet"),
            Err(e) if e.is_not_found() => {}
            Err(e) if e.is_in_use() => in_use.push(id.to_owned()),
            Err(e) => return Err(subnet_err(e)),
        }
    }
    if !in_use.is_empty() {
        return Ok(DeleteProgress::Waiting(format!(
            "subnets still in use: {}",
            in_use.join(", ")
        )));
    }

    // Route tables.
    let rt_err = |source| NetworkError::RouteTables {
        cluster: cluster.clone(),
        source,
    };
    let tables = aws
        .call(Ec2, "DescribeRouteTables", || {
            aws.ec2
                .describe_route_tables()
                .set_filters(Some(owned.clone()))
                .send()
        })
        .await
        .map_err(rt_err)?;
    for table in tables.route_tables().iter().filter(|t| tags.owns(t.tags())) {
        let id = table.route_table_id().unwrap_or_default();
        for association in table.associations().iter().filter(|a| a.main() != Some(true)) {
            let Some(association_id) = association.route_table_association_id() else {
                continue;
            };
            ok_if_not_found(
                aws.call(Ec2, "DisassociateRouteTable", || {
                    aws.ec2
                        .disassociate_route_table()
                        .association_id(association_id)
                        .send()
                })
                .await,
            )
            .map_err(rt_err)?;
        }
        ok_if_not_found(
            aws.call(Ec2, "DeleteRouteTable", || {
                aws.ec2.delete_route_table().route_table_id(id).send()
            })
            .await,
        )
        .map_err(rt_err)?;
        tracing::info!(route_table_id = id, "deleted route table");
    }

    // The VPC.
    let vpc_err = |source| NetworkError::Vpc {
        cluster: cluster.clone(),
        source,
    };
    let vpcs = aws
        .call(Ec2, "DescribeVpcs", || {
            aws.ec2.describe_vpcs().set_filters(Some(owned.clone())).send()
        })
        .await
        .map_err(vpc_err)?;
    for vpc in vpcs.vpcs().iter().filter(|v| tags.owns(v.tags())) {
        let id = vpc.vpc_id().unwrap_or_default();
        match aws
            .call(Ec2, "DeleteVpc", || aws.ec2.delete_vpc().vpc_id(id).send())
            .await
        {
            Ok(_) => tracing::info!(vpc_id = id, "deleted VPC"),
            Err(e) if e.is_not_found() => {}
            Err(e) if e.is_in_use() => {
                return Ok(DeleteProgress::Waiting(format!(
                    "VPC {id} still has dependencies: {}",
                    e.message
                )));
            }
            Err(e) => return Err(vpc_err(e)),
        }
    }
    Ok(DeleteProgress::Done)
}

/// Filters for resources of one VPC owned by the cluster.
pub(crate) fn owned_in_vpc(tags: &ClusterTags, vpc_id: &str) -> Vec<Filter> {
    vec![filter("vpc-id", &[vpc_id]), tags.owned_filter()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slash_16_splits_into_slash_18_private_and_slash_20_public_subnets() {
        let (private, public) = plan_subnet_cidrs("10.0.0.0/16").unwrap();
        assert_eq!(private, ["10.0.0.0/18", "10.0.64.0/18", "10.0.128.0/18"]);
        assert_eq!(public, ["10.0.192.0/20", "10.0.208.0/20", "10.0.224.0/20"]);
        let (private, public) = plan_subnet_cidrs("172.16.8.0/24").unwrap();
        assert_eq!(private, ["172.16.8.0/26", "172.16.8.64/26", "172.16.8.128/26"]);
        assert_eq!(public, ["172.16.8.192/28", "172.16.8.208/28", "172.16.8.224/28"]);
    }

    #[test]
    fn unusable_vpc_cidrs_are_refused() {
        assert!(plan_subnet_cidrs("10.0.0.0/8").is_err());
        assert!(plan_subnet_cidrs("10.0.0.0/26").is_err());
        assert!(plan_subnet_cidrs("10.0.0.1/16").is_err());
        assert!(plan_subnet_cidrs("banana").is_err());
    }

    #[test]
    fn failure_domains_are_the_zones_of_private_subnets() {
        let subnet = |id: &str, zone: &str, public| SubnetState {
            id: id.into(),
            zone: zone.into(),
            cidr: String::new(),
            public,
        };
        let mut state = NetworkState {
            vpc_id: "vpc-1".into(),
            vpc_cidr: "10.0.0.0/16".into(),
            managed: true,
            subnets: vec![
                subnet("a-pub", "a", true),
                subnet("a-priv", "a", false),
                subnet("b-pub", "b", true),
            ],
            internet_gateway_id: None,
            nat_gateway_ids: BTreeMap::new(),
            ready: true,
        };
        let names: Vec<_> = state.failure_domains().into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["a"]);
        assert_eq!(state.machine_subnet("a"), Some("a-priv"));
        assert_eq!(state.machine_subnet("b"), Some("b-pub"));
        state.subnets.retain(|s| s.public);
        let names: Vec<_> = state.failure_domains().into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(
            state
                .failure_domains()
                .iter()
                .all(|f| f.control_plane == Some(true))
        );
    }
}
