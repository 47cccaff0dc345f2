//! Deletion of the managed network in dependency order, tolerant of what is already gone.

use aws_sdk_ec2::types::NatGatewayState;

use super::NetworkError;
use crate::aws::DeleteProgress;
use crate::aws::clients::AwsClients;
use crate::aws::errors::{AwsErrorKind, ok_if_not_found};
use crate::aws::limiter::Service::Ec2;
use crate::aws::tags::ClusterTags;

/// Deletes what the cluster owns of its network, in dependency order: NAT gateways, their elastic
/// IPs, the internet gateway, subnets, route tables, the VPC. A BYO VPC and its subnets carry no
/// ownership tag and are left alone. Security groups and load balancers must be gone first
/// (see [`crate::aws::security_groups::delete_security_groups`]). Returns [`DeleteProgress::Waiting`]
/// while something is still being deleted or still in use.
#[tracing::instrument(skip_all, fields(cluster = tags.cluster(), region = aws.region()))]
pub async fn delete_network(aws: &AwsClients, tags: &ClusterTags) -> Result<DeleteProgress, NetworkError> {
    let cluster = tags.cluster();
    let owned = vec![tags.owned_filter()];

    // NAT gateways.
    let nat_err = NetworkError::nat_gateways(cluster);
    let describe_nats = async || {
        aws.call(Ec2, "DescribeNatGateways", || {
            aws.ec2
                .describe_nat_gateways()
                .set_filter(Some(owned.clone()))
                .send()
        })
        .await
        .map_err(nat_err)
    };
    let nats = describe_nats().await?;
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
        let again = describe_nats().await?;
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
            Err(e) if e.is_in_use() || e.kind == AwsErrorKind::Auth => {
                // AWS answers AuthFailure for an address still associated.
                return Ok(DeleteProgress::Waiting(format!(
                    "elastic IP {allocation_id} still associated"
                )));
            }
            Err(e) => return Err(nat_err(e)),
        }
    }

    // Internet gateways.
    let igw_err = NetworkError::internet_gateway(cluster);
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
    let subnet_err = NetworkError::subnets(cluster);
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
    let rt_err = NetworkError::route_tables(cluster);
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
    let vpc_err = NetworkError::vpc(cluster);
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
