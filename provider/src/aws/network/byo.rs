//! A network the user brings: the VPC and subnets are validated and read, never changed or deleted.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{RouteTable, Subnet};

use super::managed::subnet_state;
use super::{NetworkError, NetworkState};
use crate::api::aws::{AwsNetwork, SubnetRole};
use crate::aws::clients::AwsClients;
use crate::aws::errors::ok_if_not_found;
use crate::aws::limiter::Service::Ec2;
use crate::aws::tags::{ClusterTags, filter};

/// Reads and validates the user's VPC and subnets; public or private comes from the spec, or from
/// the subnet's route table when the spec lists no subnets.
pub(super) async fn byo_network(
    aws: &AwsClients,
    tags: &ClusterTags,
    spec: &AwsNetwork,
    vpc_id: &str,
) -> Result<NetworkState, NetworkError> {
    let cluster = tags.cluster();
    let invalid = NetworkError::invalid(cluster);
    let vpc_err = NetworkError::vpc(cluster);
    let subnet_err = NetworkError::subnets(cluster);
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
            .map_err(NetworkError::route_tables(cluster))?;
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
