//! Security groups per role (control plane, nodes, API server load balancer) with the ingress rules
//! kubeadm and Cilium need, plus validation of the user's additional groups. Deletion also removes
//! groups that in-cluster controllers tagged `kubernetes.io/cluster/<name>=owned`.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, SecurityGroup, UserIdGroupPair};
use kubezero_capi::runtime::errors::ErrorClass;

use super::DeleteProgress;
use super::clients::AwsClients;
use super::errors::{AwsError, ok_if_not_found};
use super::limiter::Service::Ec2;
use super::network::{NetworkState, owned_in_vpc};
use super::tags::{ClusterTags, ROLE_TAG, Role, ec2_tag, ec2_tag_spec};
use crate::api::aws::{AwsLoadBalancer, LoadBalancerScheme};

/// The cluster's security group ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityGroups {
    /// Control-plane instances.
    pub control_plane: String,
    /// Worker (and control-plane) nodes: kubelet, CNI, NodePorts.
    pub node: String,
    /// The API server load balancer.
    pub load_balancer: String,
}

/// Errors of ensuring or deleting security groups.
#[derive(Debug, thiserror::Error)]
pub enum SecurityGroupError {
    /// Looking up, creating or deleting a group failed.
    #[error("security groups of cluster {cluster}: {source}")]
    Groups {
        /// Cluster name.
        cluster: String,
        /// The AWS error.
        source: AwsError,
    },
    /// Adding or revoking rules of a group failed.
    #[error("rules of security group {group_id} of cluster {cluster}: {source}")]
    Rules {
        /// Cluster name.
        cluster: String,
        /// Group id.
        group_id: String,
        /// The AWS error.
        source: AwsError,
    },
    /// An additional security group named in the spec is unusable.
    #[error("additional security group of cluster {cluster}: {message}")]
    Additional {
        /// Cluster name.
        cluster: String,
        /// What is wrong.
        message: String,
    },
}

impl SecurityGroupError {
    /// The error class the error policy requeues by.
    pub fn class(&self) -> ErrorClass {
        match self {
            SecurityGroupError::Groups { source, .. } | SecurityGroupError::Rules { source, .. } => {
                source.class()
            }
            SecurityGroupError::Additional { .. } => ErrorClass::Invalid,
        }
    }
}

/// Where a rule lets traffic in from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Peer {
    /// The control-plane security group.
    ControlPlane,
    /// The node security group.
    Node,
    /// The load balancer security group.
    LoadBalancer,
    /// The VPC's CIDR block.
    Vpc,
    /// A source CIDR the user allowed (`spec.aws.loadBalancer.allowedCidrBlocks`).
    Cidr(String),
}

/// One ingress rule, before group ids are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    /// `tcp`, `udp` or `icmp`.
    pub protocol: &'static str,
    /// First port (ICMP: type).
    pub from_port: i32,
    /// Last port (ICMP: code, -1 for all).
    pub to_port: i32,
    /// Source of the traffic.
    pub peer: Peer,
    /// Rule description shown in the console.
    pub description: &'static str,
}

const fn rule(
    protocol: &'static str,
    from_port: i32,
    to_port: i32,
    peer: Peer,
    description: &'static str,
) -> RuleSpec {
    RuleSpec {
        protocol,
        from_port,
        to_port,
        peer,
        description,
    }
}

/// Cilium's ports between all cluster members (VXLAN, Geneve, health, Hubble, WireGuard, ping).
fn cilium_rules(peer: Peer) -> [RuleSpec; 6] {
    [
        rule("udp", 8472, 8472, peer.clone(), "Cilium VXLAN"),
        rule("udp", 6081, 6081, peer.clone(), "Cilium Geneve"),
        rule("tcp", 4240, 4240, peer.clone(), "Cilium health"),
        rule("tcp", 4244, 4244, peer.clone(), "Hubble server"),
        rule("udp", 51871, 51871, peer.clone(), "Cilium WireGuard"),
        rule("icmp", 8, -1, peer, "Cilium health ping"),
    ]
}

/// The ingress rules of a group with `role`: the load balancer's from the VPC (internal only) and
/// from the allowed CIDRs, never from anywhere. Pure.
pub fn ingress_rules(role: Role, load_balancer: &AwsLoadBalancer) -> Vec<RuleSpec> {
    use Peer::*;
    let kubelet_from_control_plane = || {
        rule(
            "tcp",
            10250,
            10250,
            ControlPlane,
            "kubelet API from the control plane",
        )
    };
    let mut rules = Vec::new();
    match role {
        Role::ControlPlane => {
            rules.extend([
                rule(
                    "tcp",
                    6443,
                    6443,
                    LoadBalancer,
                    "Kubernetes API from the load balancer",
                ),
                rule(
                    "tcp",
                    6443,
                    6443,
                    ControlPlane,
                    "Kubernetes API from the control plane",
                ),
                rule("tcp", 6443, 6443, Node, "Kubernetes API from nodes"),
                rule("tcp", 2379, 2380, ControlPlane, "etcd client and peer"),
                kubelet_from_control_plane(),
                rule("tcp", 10257, 10257, ControlPlane, "kube-controller-manager"),
                rule("tcp", 10259, 10259, ControlPlane, "kube-scheduler"),
            ]);
        }
        Role::Node => {
            rules.extend([
                kubelet_from_control_plane(),
                rule("tcp", 10250, 10250, Node, "kubelet API from nodes"),
                rule("tcp", 30000, 32767, Vpc, "NodePort services (TCP)"),
                rule("udp", 30000, 32767, Vpc, "NodePort services (UDP)"),
            ]);
        }
        Role::ApiServerLb => {
            if load_balancer.scheme == LoadBalancerScheme::Internal {
                rules.push(rule("tcp", 6443, 6443, Vpc, "Kubernetes API"));
            }
            for cidr in &load_balancer.allowed_cidr_blocks {
                rules.push(rule(
                    "tcp",
                    6443,
                    6443,
                    Cidr(cidr.clone()),
                    "Kubernetes API from an allowed CIDR",
                ));
            }
        }
        _ => {}
    }
    if matches!(role, Role::ControlPlane | Role::Node) {
        rules.extend(cilium_rules(ControlPlane));
        rules.extend(cilium_rules(Node));
    }
    rules
}

/// Normalised identity of a rule: (protocol, from, to, source group id or CIDR).
pub type RuleKey = (String, i32, i32, String);

fn existing_rule_keys(group: &SecurityGroup) -> BTreeSet<RuleKey> {
    let mut keys = BTreeSet::new();
    for permission in group.ip_permissions() {
        let protocol = permission.ip_protocol().unwrap_or_default().to_owned();
        let from = permission.from_port().unwrap_or(-1);
        let to = permission.to_port().unwrap_or(-1);
        for pair in permission.user_id_group_pairs() {
            if let Some(id) = pair.group_id() {
                keys.insert((protocol.clone(), from, to, id.to_owned()));
            }
        }
        for range in permission.ip_ranges() {
            if let Some(cidr) = range.cidr_ip() {
                keys.insert((protocol.clone(), from, to, cidr.to_owned()));
            }
        }
    }
    keys
}

const GROUP_ROLES: [Role; 3] = [Role::ControlPlane, Role::Node, Role::ApiServerLb];

fn group_suffix(role: Role) -> &'static str {
    match role {
        Role::ControlPlane => "controlplane",
        Role::Node => "node",
        _ => "apiserver-lb",
    }
}

/// The rules of the load balancer group that are no longer wanted (an allowed CIDR removed, the
/// scheme's default rule of an older spec): that group's rules are all the provider's. Pure.
pub fn stale_load_balancer_rules(existing: &BTreeSet<RuleKey>, wanted: &BTreeSet<RuleKey>) -> Vec<RuleKey> {
    existing.difference(wanted).cloned().collect()
}

/// Finds or creates the three security groups of the cluster in its VPC, adds the rules they lack
/// and revokes the load balancer group's stale ones. Idempotent: a second run makes one Describe
/// call.
#[tracing::instrument(skip_all, fields(cluster = tags.cluster(), vpc_id = %network.vpc_id))]
pub async fn ensure_security_groups(
    aws: &AwsClients,
    tags: &ClusterTags,
    network: &NetworkState,
    load_balancer: &AwsLoadBalancer,
) -> Result<SecurityGroups, SecurityGroupError> {
    let cluster = tags.cluster().to_owned();
    let groups_err = |source| SecurityGroupError::Groups {
        cluster: cluster.clone(),
        source,
    };
    let filters = owned_in_vpc(tags, &network.vpc_id);
    let described = aws
        .call(Ec2, "DescribeSecurityGroups", || {
            aws.ec2
                .describe_security_groups()
                .set_filters(Some(filters.clone()))
                .send()
        })
        .await
        .map_err(groups_err)?;
    let mut by_role: BTreeMap<&'static str, (String, BTreeSet<RuleKey>)> = BTreeMap::new();
    for group in described.security_groups().iter().filter(|g| tags.owns(g.tags())) {
        if let (Some(role), Some(id)) = (ec2_tag(group.tags(), ROLE_TAG), group.group_id())
            && let Some(role) = GROUP_ROLES.iter().find(|r| r.as_str() == role)
        {
            by_role.insert(role.as_str(), (id.to_owned(), existing_rule_keys(group)));
        }
    }
    for role in GROUP_ROLES {
        if by_role.contains_key(role.as_str()) {
            continue;
        }
        let name = format!("{cluster}-{}", group_suffix(role));
        let tag_spec = ec2_tag_spec(ResourceType::SecurityGroup, &tags.owned(role, &name));
        let created = aws
            .call(Ec2, "CreateSecurityGroup", || {
                aws.ec2
                    .create_security_group()
                    .group_name(&name)
                    .description(format!("kubezero cluster {cluster}: {}", role.as_str()))
                    .vpc_id(&network.vpc_id)
                    .tag_specifications(tag_spec.clone())
                    .send()
            })
            .await
            .map_err(groups_err)?;
        let id = created
            .group_id()
            .ok_or_else(|| {
                groups_err(AwsError::unexpected(
                    "CreateSecurityGroup",
                    "no group id in the response",
                ))
            })?
            .to_owned();
        tracing::info!(group_id = %id, %name, "created security group");
        by_role.insert(role.as_str(), (id, BTreeSet::new()));
    }
    let id_of = |role: Role| by_role[role.as_str()].0.clone();
    let groups = SecurityGroups {
        control_plane: id_of(Role::ControlPlane),
        node: id_of(Role::Node),
        load_balancer: id_of(Role::ApiServerLb),
    };
    let source_of = |peer: &Peer| match peer {
        Peer::ControlPlane => groups.control_plane.clone(),
        Peer::Node => groups.node.clone(),
        Peer::LoadBalancer => groups.load_balancer.clone(),
        Peer::Vpc => network.vpc_cidr.clone(),
        Peer::Cidr(cidr) => cidr.clone(),
    };
    let key_of = |r: &RuleSpec| (r.protocol.to_owned(), r.from_port, r.to_port, source_of(&r.peer));
    for role in GROUP_ROLES {
        let (group_id, existing) = &by_role[role.as_str()];
        let wanted = ingress_rules(role, load_balancer);
        if role == Role::ApiServerLb {
            let wanted_keys: BTreeSet<RuleKey> = wanted.iter().map(key_of).collect();
            revoke(
                aws,
                &cluster,
                group_id,
                &stale_load_balancer_rules(existing, &wanted_keys),
            )
            .await?;
        }
        let missing: Vec<IpPermission> = wanted
            .into_iter()
            .filter(|r| !existing.contains(&key_of(r)))
            .map(|r| {
                let builder = IpPermission::builder()
                    .ip_protocol(r.protocol)
                    .from_port(r.from_port)
                    .to_port(r.to_port);
                match r.peer {
                    Peer::Vpc | Peer::Cidr(_) => builder.ip_ranges(
                        IpRange::builder()
                            .cidr_ip(source_of(&r.peer))
                            .description(r.description)
                            .build(),
                    ),
                    _ => builder.user_id_group_pairs(
                        UserIdGroupPair::builder()
                            .group_id(source_of(&r.peer))
                            .description(r.description)
                            .build(),
                    ),
                }
                .build()
            })
            .collect();
        if missing.is_empty() {
            continue;
        }
        let count = missing.len();
        match aws
            .call(Ec2, "AuthorizeSecurityGroupIngress", || {
                aws.ec2
                    .authorize_security_group_ingress()
                    .group_id(group_id)
                    .set_ip_permissions(Some(missing.clone()))
                    .send()
            })
            .await
        {
            Ok(_) => tracing::info!(%group_id, rules = count, "authorized ingress rules"),
            Err(e) if e.is_already_exists() => {}
            Err(source) => {
                return Err(SecurityGroupError::Rules {
                    cluster: cluster.clone(),
                    group_id: group_id.clone(),
                    source,
                });
            }
        }
    }
    Ok(groups)
}

/// Revokes the CIDR `rules` of the load balancer group `group_id` (no call when there are none).
async fn revoke(
    aws: &AwsClients,
    cluster: &str,
    group_id: &str,
    rules: &[RuleKey],
) -> Result<(), SecurityGroupError> {
    if rules.is_empty() {
        return Ok(());
    }
    let permissions: Vec<IpPermission> = rules
        .iter()
        .map(|(protocol, from, to, source)| {
            let builder = IpPermission::builder()
                .ip_protocol(protocol)
                .from_port(*from)
                .to_port(*to);
            if source.starts_with("sg-") {
                builder.user_id_group_pairs(UserIdGroupPair::builder().group_id(source).build())
            } else {
                builder.ip_ranges(IpRange::builder().cidr_ip(source).build())
            }
            .build()
        })
        .collect();
    match aws
        .call(Ec2, "RevokeSecurityGroupIngress", || {
            aws.ec2
                .revoke_security_group_ingress()
                .group_id(group_id)
                .set_ip_permissions(Some(permissions.clone()))
                .send()
        })
        .await
    {
        Ok(_) => {
            tracing::info!(%group_id, rules = rules.len(), "revoked stale load balancer ingress rules");
            Ok(())
        }
        Err(error) if error.is_not_found() => Ok(()),
        Err(source) => Err(SecurityGroupError::Rules {
            cluster: cluster.to_owned(),
            group_id: group_id.to_owned(),
            source,
        }),
    }
}

/// Checks that the user's additional security groups exist and are in the cluster's VPC.
#[tracing::instrument(skip_all, fields(cluster = tags.cluster(), vpc_id))]
pub async fn validate_additional_groups(
    aws: &AwsClients,
    tags: &ClusterTags,
    vpc_id: &str,
    group_ids: &[String],
) -> Result<(), SecurityGroupError> {
    if group_ids.is_empty() {
        return Ok(());
    }
    let cluster = tags.cluster().to_owned();
    let additional = |message: String| SecurityGroupError::Additional {
        cluster: cluster.clone(),
        message,
    };
    let described = match aws
        .call(Ec2, "DescribeSecurityGroups", || {
            aws.ec2
                .describe_security_groups()
                .set_group_ids(Some(group_ids.to_vec()))
                .send()
        })
        .await
    {
        Ok(output) => output,
        Err(e) if e.is_not_found() => return Err(additional(e.message)),
        Err(source) => return Err(SecurityGroupError::Groups { cluster, source }),
    };
    for id in group_ids {
        match described
            .security_groups()
            .iter()
            .find(|g| g.group_id() == Some(id.as_str()))
        {
            None => return Err(additional(format!("{id} does not exist"))),
            Some(group) if group.vpc_id() != Some(vpc_id) => {
                return Err(additional(format!("{id} is not in VPC {vpc_id}")));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Deletes the cluster's security groups and those in-cluster controllers tagged
/// `kubernetes.io/cluster/<name>=owned`: first revokes their ingress rules (groups reference each
/// other), then deletes them. Waits while instances or load balancers still use a group.
#[tracing::instrument(skip_all, fields(cluster = tags.cluster()))]
pub async fn delete_security_groups(
    aws: &AwsClients,
    tags: &ClusterTags,
) -> Result<DeleteProgress, SecurityGroupError> {
    let cluster = tags.cluster().to_owned();
    let groups_err = |source| SecurityGroupError::Groups {
        cluster: cluster.clone(),
        source,
    };
    let mut groups: BTreeMap<String, SecurityGroup> = BTreeMap::new();
    for tag_filter in [tags.owned_filter(), tags.kubernetes_owned_filter()] {
        let described = aws
            .call(Ec2, "DescribeSecurityGroups", || {
                aws.ec2
                    .describe_security_groups()
                    .filters(tag_filter.clone())
                    .send()
            })
            .await
            .map_err(groups_err)?;
        let kubernetes_key = tags.kubernetes_key();
        let ours = |group: &&SecurityGroup| {
            tags.owns(group.tags()) || ec2_tag(group.tags(), &kubernetes_key) == Some(super::tags::OWNED)
        };
        for group in described.security_groups().iter().filter(ours) {
            if let Some(id) = group.group_id() {
                groups.insert(id.to_owned(), group.clone());
            }
        }
    }
    for (id, group) in &groups {
        if group.ip_permissions().is_empty() {
            continue;
        }
        let permissions = group.ip_permissions().to_vec();
        ok_if_not_found(
            aws.call(Ec2, "RevokeSecurityGroupIngress", || {
                aws.ec2
                    .revoke_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(Some(permissions.clone()))
                    .send()
            })
            .await,
        )
        .map_err(|source| SecurityGroupError::Rules {
            cluster: cluster.clone(),
            group_id: id.clone(),
            source,
        })?;
    }
    let mut in_use = Vec::new();
    for id in groups.keys() {
        match aws
            .call(Ec2, "DeleteSecurityGroup", || {
                aws.ec2.delete_security_group().group_id(id).send()
            })
            .await
        {
            Ok(_) => tracing::info!(group_id = %id, "deleted security group"),
            Err(e) if e.is_not_found() => {}
            Err(e) if e.is_in_use() => in_use.push(id.clone()),
            Err(e) => return Err(groups_err(e)),
        }
    }
    if in_use.is_empty() {
        Ok(DeleteProgress::Done)
    } else {
        Ok(DeleteProgress::Waiting(format!(
            "security groups still in use: {}",
            in_use.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(rules: &[RuleSpec], protocol: &str, port: i32, peer: Peer) -> bool {
        rules.iter().any(|r| {
            r.protocol == protocol
                && r.from_port <= port
                && (port <= r.to_port || r.to_port == -1)
                && r.peer == peer
        })
    }

    fn load_balancer(scheme: LoadBalancerScheme, allowed: &[&str]) -> AwsLoadBalancer {
        AwsLoadBalancer {
            scheme,
            allowed_cidr_blocks: allowed.iter().map(|c| c.to_string()).collect(),
            ..AwsLoadBalancer::default()
        }
    }

    #[test]
    fn control_plane_rules_cover_kubeadm_and_cilium() {
        let rules = ingress_rules(Role::ControlPlane, &AwsLoadBalancer::default());
        for port in [6443, 2379, 2380, 10250, 10257, 10259] {
            assert!(has(&rules, "tcp", port, Peer::ControlPlane), "{port}");
        }
        assert!(has(&rules, "tcp", 6443, Peer::LoadBalancer));
        assert!(has(&rules, "tcp", 6443, Peer::Node));
        assert!(!has(&rules, "tcp", 2379, Peer::Node), "etcd is not open to nodes");
        for peer in [Peer::ControlPlane, Peer::Node] {
            assert!(has(&rules, "udp", 8472, peer.clone()));
            assert!(has(&rules, "udp", 6081, peer.clone()));
            assert!(has(&rules, "tcp", 4240, peer.clone()));
            assert!(has(&rules, "icmp", 8, peer));
        }
    }

    #[test]
    fn node_rules_open_kubelet_and_nodeports_but_not_etcd() {
        let rules = ingress_rules(Role::Node, &AwsLoadBalancer::default());
        assert!(has(&rules, "tcp", 10250, Peer::ControlPlane));
        assert!(has(&rules, "tcp", 30000, Peer::Vpc));
        assert!(has(&rules, "udp", 32767, Peer::Vpc));
        assert!(!has(&rules, "tcp", 2379, Peer::ControlPlane));
        assert!(!has(&rules, "tcp", 6443, Peer::Vpc));
    }

    #[test]
    fn the_load_balancer_answers_the_vpc_and_the_allowed_cidrs_never_the_world() {
        let internal = ingress_rules(Role::ApiServerLb, &AwsLoadBalancer::default());
        assert_eq!(internal.len(), 1);
        assert_eq!(internal[0].peer, Peer::Vpc);
        let peered = ingress_rules(
            Role::ApiServerLb,
            &load_balancer(LoadBalancerScheme::Internal, &["10.100.0.0/16"]),
        );
        assert_eq!(
            peered.iter().map(|r| r.peer.clone()).collect::<Vec<_>>(),
            [Peer::Vpc, Peer::Cidr("10.100.0.0/16".into())],
            "a peered management VPC"
        );
        let public = ingress_rules(
            Role::ApiServerLb,
            &load_balancer(
                LoadBalancerScheme::InternetFacing,
                &["203.0.113.0/24", "198.51.100.7/32"],
            ),
        );
        assert_eq!(
            public.iter().map(|r| r.peer.clone()).collect::<Vec<_>>(),
            [
                Peer::Cidr("203.0.113.0/24".into()),
                Peer::Cidr("198.51.100.7/32".into())
            ],
            "only the allowed sources, not the VPC nor 0.0.0.0/0"
        );
        assert!(public.iter().all(|r| (r.from_port, r.to_port) == (6443, 6443)));
    }

    #[test]
    fn a_removed_cidr_is_revoked_and_kept_ones_are_not() {
        let key = |cidr: &str| ("tcp".to_owned(), 6443, 6443, cidr.to_owned());
        let existing = BTreeSet::from([key("0.0.0.0/0"), key("203.0.113.0/24")]);
        let wanted = BTreeSet::from([key("203.0.113.0/24"), key("198.51.100.7/32")]);
        assert_eq!(
            stale_load_balancer_rules(&existing, &wanted),
            vec![key("0.0.0.0/0")]
        );
        assert!(stale_load_balancer_rules(&wanted, &wanted).is_empty());
    }
}
