//! The cluster network: a managed VPC (public + private subnet per availability zone, internet
//! gateway, NAT gateways, route tables) or the user's own VPC and subnets, validated and never
//! changed. [`ensure_network`] finds what exists by ownership tags before creating anything;
//! [`delete_network`] removes what the cluster owns, in dependency order, tolerating what is gone.

mod byo;
mod delete;
mod managed;

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::Filter;
use kubezero_capi::contract::FailureDomain;
use kubezero_capi::runtime::errors::ErrorClass;

pub use self::delete::delete_network;
use super::clients::AwsClients;
use super::errors::AwsError;
use super::tags::{ClusterTags, filter};
use crate::api::aws::AwsNetwork;

/// CIDR of a managed VPC when the spec names none.
pub const DEFAULT_VPC_CIDR: &str = "10.0.0.0/16";

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

/// Closures wrapping what failed for `cluster` into its variant, for `map_err` and `ok_or_else`.
impl NetworkError {
    fn invalid(cluster: &str) -> impl Fn(String) -> Self + Copy + '_ {
        move |message| Self::Invalid {
            cluster: cluster.to_owned(),
            message,
        }
    }

    fn vpc(cluster: &str) -> impl Fn(AwsError) -> Self + Copy + '_ {
        move |source| Self::Vpc {
            cluster: cluster.to_owned(),
            source,
        }
    }

    fn subnets(cluster: &str) -> impl Fn(AwsError) -> Self + Copy + '_ {
        move |source| Self::Subnets {
            cluster: cluster.to_owned(),
            source,
        }
    }

    fn internet_gateway(cluster: &str) -> impl Fn(AwsError) -> Self + Copy + '_ {
        move |source| Self::InternetGateway {
            cluster: cluster.to_owned(),
            source,
        }
    }

    fn nat_gateways(cluster: &str) -> impl Fn(AwsError) -> Self + Copy + '_ {
        move |source| Self::NatGateways {
            cluster: cluster.to_owned(),
            source,
        }
    }

    fn route_tables(cluster: &str) -> impl Fn(AwsError) -> Self + Copy + '_ {
        move |source| Self::RouteTables {
            cluster: cluster.to_owned(),
            source,
        }
    }
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
        Some(vpc_id) => byo::byo_network(aws, tags, spec, vpc_id).await,
        None => managed::managed_network(aws, tags, spec).await,
    }
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
