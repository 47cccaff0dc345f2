//! The control-plane endpoint: a network load balancer (internal by default) with a TCP 6443 listener
//! forwarding to a target group of control-plane instances, health-checked over TCP. Deletion also
//! removes load balancers and target groups that in-cluster controllers tagged for the cluster.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_elasticloadbalancingv2::operation::describe_load_balancers::DescribeLoadBalancersOutput;
use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, LoadBalancerSchemeEnum, LoadBalancerStateEnum, LoadBalancerTypeEnum,
    ProtocolEnum, Tag, TagDescription, TargetDescription, TargetTypeEnum,
};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use kubezero_capi::runtime::errors::ErrorClass;

use super::DeleteProgress;
use super::clients::AwsClients;
use super::errors::{AwsError, ok_if_not_found};
use super::limiter::Service::Elbv2;
use super::network::NetworkState;
use super::security_groups::SecurityGroups;
use super::tags::{ClusterTags, Role};
use crate::api::aws::{AwsLoadBalancer, LoadBalancerScheme};

/// Port of the Kubernetes API on the load balancer and on the control-plane instances.
pub const API_SERVER_PORT: i32 = 6443;
/// Tag the AWS Load Balancer Controller puts on what it creates (value: cluster name).
pub const LB_CONTROLLER_CLUSTER_TAG: &str = "elbv2.k8s.aws/cluster";
const MAX_NAME: usize = 32;
const TAGS_PER_CALL: usize = 20;

/// The API server load balancer of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalancerState {
    /// Load balancer ARN.
    pub arn: String,
    /// DNS name: the host of `spec.controlPlaneEndpoint`.
    pub dns_name: String,
    /// Target group ARN control-plane instances are registered in.
    pub target_group_arn: String,
    /// Listener ARN.
    pub listener_arn: String,
    /// Whether the load balancer is `active` (not `provisioning`).
    pub active: bool,
}

/// Errors of the API server load balancer.
#[derive(Debug, thiserror::Error)]
pub enum LoadBalancerError {
    /// The spec cannot be realised (no subnets, scheme changed, name taken by a foreign LB).
    #[error("load balancer of cluster {cluster} is invalid: {message}")]
    Invalid {
        /// Cluster name.
        cluster: String,
        /// What is wrong.
        message: String,
    },
    /// A call on the load balancer failed.
    #[error("load balancer {name} of cluster {cluster}: {source}")]
    LoadBalancer {
        /// Cluster name.
        cluster: String,
        /// Load balancer name.
        name: String,
        /// The AWS error.
        source: AwsError,
    },
    /// A call on the target group or its targets failed.
    #[error("target group {name} of cluster {cluster}: {source}")]
    TargetGroup {
        /// Cluster name.
        cluster: String,
        /// Target group name or ARN.
        name: String,
        /// The AWS error.
        source: AwsError,
    },
    /// A call on the listener failed.
    #[error("listener of load balancer {name} of cluster {cluster}: {source}")]
    Listener {
        /// Cluster name.
        cluster: String,
        /// Load balancer name.
        name: String,
        /// The AWS error.
        source: AwsError,
    },
}

impl LoadBalancerError {
    /// The error class the error policy requeues by.
    pub fn class(&self) -> ErrorClass {
        match self {
            LoadBalancerError::Invalid { .. } => ErrorClass::Invalid,
            LoadBalancerError::LoadBalancer { source, .. }
            | LoadBalancerError::TargetGroup { source, .. }
            | LoadBalancerError::Listener { source, .. } => source.class(),
        }
    }
}

/// Name of the cluster's load balancer and target group: `<cluster>-apiserver`, shortened with a
/// hash to ELB's 32 characters (letters, digits, hyphens). Pure.
pub fn api_server_lb_name(cluster: &str) -> String {
    let clean: String = cluster
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    // ELB refuses names starting with `internal-`.
    let clean = if clean.starts_with("internal") {
        format!("kz-{clean}")
    } else {
        clean
    };
    let full = format!("{clean}-apiserver");
    if full.len() <= MAX_NAME {
        return full;
    }
    let hash = fnv1a(cluster.as_bytes());
    let keep = MAX_NAME - 1 - 8 - 3; // "<prefix>-<hash>-api"
    let prefix = clean[..clean.len().min(keep)].trim_end_matches('-');
    format!("{prefix}-{hash:08x}-api")
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn elb_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn has_owned_tag(tags: &ClusterTags, description: &TagDescription) -> bool {
    tags.is_owned(
        description
            .tags()
            .iter()
            .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())),
    )
}

fn is_cluster_resource(tags: &ClusterTags, description: &TagDescription) -> bool {
    let kubernetes_key = tags.kubernetes_key();
    description.tags().iter().any(|t| {
        let (key, value) = (t.key().unwrap_or_default(), t.value().unwrap_or_default());
        (key == kubernetes_key && value == "owned")
            || (key == LB_CONTROLLER_CLUSTER_TAG && value == tags.cluster())
    }) || has_owned_tag(tags, description)
}

/// Finds or creates the network load balancer, its target group and listener. Idempotent; a
/// load balancer of that name not tagged for this cluster is refused, never adopted.
#[tracing::instrument(skip_all, fields(cluster = tags.cluster()))]
pub async fn ensure_load_balancer(
    aws: &AwsClients,
    tags: &ClusterTags,
    spec: &AwsLoadBalancer,
    network: &NetworkState,
    groups: &SecurityGroups,
) -> Result<LoadBalancerState, LoadBalancerError> {
    let cluster = tags.cluster().to_owned();
    let name = api_server_lb_name(&cluster);
    let invalid = |message: String| LoadBalancerError::Invalid {
        cluster: cluster.clone(),
        message,
    };
    let lb_err = |source| LoadBalancerError::LoadBalancer {
        cluster: cluster.clone(),
        name: name.clone(),
        source,
    };
    let tg_err = |source| LoadBalancerError::TargetGroup {
        cluster: cluster.clone(),
        name: name.clone(),
        source,
    };
    let scheme = match spec.scheme {
        LoadBalancerScheme::Internal => LoadBalancerSchemeEnum::Internal,
        LoadBalancerScheme::InternetFacing => LoadBalancerSchemeEnum::InternetFacing,
    };
    let owned_tags = elb_tags(&tags.owned(Role::ApiServerLb, &name));

    // Load balancer.
    let found = ok_if_not_found(
        aws.call(Elbv2, "DescribeLoadBalancers", || {
            aws.elbv2.describe_load_balancers().names(&name).send()
        })
        .await,
    )
    .map_err(lb_err)?;
    let existing = found.as_ref().and_then(|o| o.load_balancers().first());
    let (arn, dns_name, active) = match existing {
        Some(lb) => {
            let arn = lb.load_balancer_arn().unwrap_or_default().to_owned();
            let described = aws
                .call(Elbv2, "DescribeTags", || {
                    aws.elbv2.describe_tags().resource_arns(&arn).send()
                })
                .await
                .map_err(lb_err)?;
            if !described
                .tag_descriptions()
                .iter()
                .any(|d| has_owned_tag(tags, d))
            {
                return Err(invalid(format!(
                    "a load balancer named {name} exists and is not owned by this cluster"
                )));
            }
            if lb.scheme() != Some(&scheme) {
                return Err(invalid(format!(
                    "load balancer {name} is {:?}; the scheme cannot be changed",
                    lb.scheme().map(|s| s.as_str())
                )));
            }
            let active = lb.state().and_then(|s| s.code()) == Some(&LoadBalancerStateEnum::Active);
            (arn, lb.dns_name().unwrap_or_default().to_owned(), active)
        }
        None => {
            let public = spec.scheme == LoadBalancerScheme::InternetFacing;
            // One subnet per zone.
            let mut subnets: BTreeMap<&str, &str> = BTreeMap::new();
            for subnet in network.subnets(public) {
                subnets.entry(subnet.zone.as_str()).or_insert(subnet.id.as_str());
            }
            if subnets.is_empty() {
                return Err(invalid(format!(
                    "no {} subnets for the load balancer",
                    if public { "public" } else { "private" }
                )));
            }
            let subnet_ids: Vec<String> = subnets.values().map(|s| (*s).to_owned()).collect();
            let mut security_groups = vec![groups.load_balancer.clone()];
            security_groups.extend(spec.additional_security_groups.iter().cloned());
            let created = aws
                .call(Elbv2, "CreateLoadBalancer", || {
                    aws.elbv2
                        .create_load_balancer()
                        .name(&name)
                        .r#type(LoadBalancerTypeEnum::Network)
                        .scheme(scheme.clone())
                        .set_subnets(Some(subnet_ids.clone()))
                        .set_security_groups(Some(security_groups.clone()))
                        .set_tags(Some(owned_tags.clone()))
                        .send()
                })
                .await
                .map_err(lb_err)?;
            let lb = created.load_balancers().first().ok_or_else(|| {
                lb_err(AwsError::unexpected(
                    "CreateLoadBalancer",
                    "no load balancer in the response",
                ))
            })?;
            let arn = lb.load_balancer_arn().unwrap_or_default().to_owned();
            tracing::info!(load_balancer_arn = %arn, %name, "created load balancer");
            let active = lb.state().and_then(|s| s.code()) == Some(&LoadBalancerStateEnum::Active);
            (arn, lb.dns_name().unwrap_or_default().to_owned(), active)
        }
    };

    // Target group.
    let found = ok_if_not_found(
        aws.call(Elbv2, "DescribeTargetGroups", || {
            aws.elbv2.describe_target_groups().names(&name).send()
        })
        .await,
    )
    .map_err(tg_err)?;
    let target_group_arn = match found.as_ref().and_then(|o| o.target_groups().first()) {
        Some(group) => group.target_group_arn().unwrap_or_default().to_owned(),
        None => {
            let created = aws
                .call(Elbv2, "CreateTargetGroup", || {
                    aws.elbv2
                        .create_target_group()
                        .name(&name)
                        .protocol(ProtocolEnum::Tcp)
                        .port(API_SERVER_PORT)
                        .vpc_id(&network.vpc_id)
                        .target_type(TargetTypeEnum::Instance)
                        .health_check_protocol(ProtocolEnum::Tcp)
                        .health_check_port(API_SERVER_PORT.to_string())
                        .health_check_interval_seconds(10)
                        .healthy_threshold_count(3)
                        .unhealthy_threshold_count(3)
                        .set_tags(Some(owned_tags.clone()))
                        .send()
                })
                .await
                .map_err(tg_err)?;
            let arn = created
                .target_groups()
                .first()
                .and_then(|g| g.target_group_arn())
                .ok_or_else(|| {
                    tg_err(AwsError::unexpected(
                        "CreateTargetGroup",
                        "no target group in the response",
                    ))
                })?
                .to_owned();
            tracing::info!(target_group_arn = %arn, "created target group");
            arn
        }
    };

    // Listener.
    let listener_err = |source| LoadBalancerError::Listener {
        cluster: cluster.clone(),
        name: name.clone(),
        source,
    };
    let listeners = aws
        .call(Elbv2, "DescribeListeners", || {
            aws.elbv2.describe_listeners().load_balancer_arn(&arn).send()
        })
        .await
        .map_err(listener_err)?;
    let listener_arn = match listeners
        .listeners()
        .iter()
        .find(|l| l.port() == Some(API_SERVER_PORT))
    {
        Some(listener) => listener.listener_arn().unwrap_or_default().to_owned(),
        None => {
            let forward = Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(&target_group_arn)
                .build();
            let created = aws
                .call(Elbv2, "CreateListener", || {
                    aws.elbv2
                        .create_listener()
                        .load_balancer_arn(&arn)
                        .protocol(ProtocolEnum::Tcp)
                        .port(API_SERVER_PORT)
                        .default_actions(forward.clone())
                        .set_tags(Some(owned_tags.clone()))
                        .send()
                })
                .await
                .map_err(listener_err)?;
            let listener_arn = created
                .listeners()
                .first()
                .and_then(|l| l.listener_arn())
                .ok_or_else(|| {
                    listener_err(AwsError::unexpected(
                        "CreateListener",
                        "no listener in the response",
                    ))
                })?
                .to_owned();
            tracing::info!(%listener_arn, "created listener");
            listener_arn
        }
    };
    Ok(LoadBalancerState {
        arn,
        dns_name,
        target_group_arn,
        listener_arn,
        active,
    })
}

fn targets(instance_ids: &[String]) -> Vec<TargetDescription> {
    instance_ids
        .iter()
        .map(|id| TargetDescription::builder().id(id).port(API_SERVER_PORT).build())
        .collect()
}

/// Registers control-plane instances in the target group (registering twice is a no-op in AWS).
#[tracing::instrument(skip_all, fields(target_group_arn, instances = instance_ids.len()))]
pub async fn register_targets(
    aws: &AwsClients,
    target_group_arn: &str,
    instance_ids: &[String],
) -> Result<(), AwsError> {
    if instance_ids.is_empty() {
        return Ok(());
    }
    let targets = targets(instance_ids);
    aws.call(Elbv2, "RegisterTargets", || {
        aws.elbv2
            .register_targets()
            .target_group_arn(target_group_arn)
            .set_targets(Some(targets.clone()))
            .send()
    })
    .await
    .map(|_| ())
}

/// Deregisters instances from the target group; a gone target group or instance counts as done.
#[tracing::instrument(skip_all, fields(target_group_arn, instances = instance_ids.len()))]
pub async fn deregister_targets(
    aws: &AwsClients,
    target_group_arn: &str,
    instance_ids: &[String],
) -> Result<(), AwsError> {
    if instance_ids.is_empty() {
        return Ok(());
    }
    let targets = targets(instance_ids);
    ok_if_not_found(
        aws.call(Elbv2, "DeregisterTargets", || {
            aws.elbv2
                .deregister_targets()
                .target_group_arn(target_group_arn)
                .set_targets(Some(targets.clone()))
                .send()
        })
        .await,
    )
    .map(|_| ())
}

/// The tags of load balancers or target groups, one DescribeTags call per [`TAGS_PER_CALL`] ARNs.
pub(super) async fn describe_tags(
    aws: &AwsClients,
    arns: &[String],
) -> Result<Vec<TagDescription>, AwsError> {
    let mut descriptions = Vec::new();
    for chunk in arns.chunks(TAGS_PER_CALL) {
        let described = aws
            .call(Elbv2, "DescribeTags", || {
                aws.elbv2
                    .describe_tags()
                    .set_resource_arns(Some(chunk.to_vec()))
                    .send()
            })
            .await?;
        descriptions.extend_from_slice(described.tag_descriptions());
    }
    Ok(descriptions)
}

/// Those of `arns` (load balancers or target groups) whose tags mark them as the cluster's.
async fn cluster_arns(
    aws: &AwsClients,
    tags: &ClusterTags,
    arns: &[String],
) -> Result<Vec<String>, AwsError> {
    Ok(describe_tags(aws, arns)
        .await?
        .iter()
        .filter(|d| is_cluster_resource(tags, d))
        .filter_map(|d| d.resource_arn().map(str::to_owned))
        .collect())
}

/// Every page of an ELBv2 listing paged by `Marker`: `send` fetches the page after a marker (the
/// first page for `None`), each page one [`AwsClients::call`], until a page has no next marker.
async fn all_pages<T, E, F, Fut>(
    aws: &AwsClients,
    operation: &'static str,
    send: F,
    next_marker: fn(&T) -> Option<&str>,
) -> Result<Vec<T>, AwsError>
where
    F: Fn(Option<String>) -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut pages = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = aws.call(Elbv2, operation, || send(marker.clone())).await?;
        marker = next_marker(&page).filter(|m| !m.is_empty()).map(str::to_owned);
        pages.push(page);
        if marker.is_none() {
            return Ok(pages);
        }
    }
}

/// Deletes the API server load balancer and target group, and every ELBv2 load balancer and target
/// group tagged for the cluster by in-cluster controllers (`kubernetes.io/cluster/<name>=owned`,
/// `elbv2.k8s.aws/cluster=<name>`). Waits while a target group is still attached.
#[tracing::instrument(skip_all, fields(cluster = tags.cluster()))]
pub async fn delete_load_balancers(
    aws: &AwsClients,
    tags: &ClusterTags,
) -> Result<DeleteProgress, LoadBalancerError> {
    let cluster = tags.cluster().to_owned();
    let name = api_server_lb_name(&cluster);
    let lb_err = |source| LoadBalancerError::LoadBalancer {
        cluster: cluster.clone(),
        name: name.clone(),
        source,
    };
    let tg_err = |source| LoadBalancerError::TargetGroup {
        cluster: cluster.clone(),
        name: name.clone(),
        source,
    };

    let pages = all_pages(
        aws,
        "DescribeLoadBalancers",
        |marker| aws.elbv2.describe_load_balancers().set_marker(marker).send(),
        DescribeLoadBalancersOutput::next_marker,
    )
    .await
    .map_err(lb_err)?;
    let all: Vec<String> = pages
        .iter()
        .flat_map(|page| page.load_balancers())
        .filter_map(|lb| lb.load_balancer_arn().map(str::to_owned))
        .collect();
    let load_balancers = cluster_arns(aws, tags, &all).await.map_err(lb_err)?;
    for arn in &load_balancers {
        ok_if_not_found(
            aws.call(Elbv2, "DeleteLoadBalancer", || {
                aws.elbv2.delete_load_balancer().load_balancer_arn(arn).send()
            })
            .await,
        )
        .map_err(lb_err)?;
        tracing::info!(load_balancer_arn = %arn, "deleted load balancer");
    }

    let pages = all_pages(
        aws,
        "DescribeTargetGroups",
        |marker| aws.elbv2.describe_target_groups().set_marker(marker).send(),
        DescribeTargetGroupsOutput::next_marker,
    )
    .await
    .map_err(tg_err)?;
    let all: Vec<String> = pages
        .iter()
        .flat_map(|page| page.target_groups())
        .filter_map(|g| g.target_group_arn().map(str::to_owned))
        .collect();
    let target_groups = cluster_arns(aws, tags, &all).await.map_err(tg_err)?;
    let mut in_use = Vec::new();
    for arn in &target_groups {
        match aws
            .call(Elbv2, "DeleteTargetGroup", || {
                aws.elbv2.delete_target_group().target_group_arn(arn).send()
            })
            .await
        {
            Ok(_) => tracing::info!(target_group_arn = %arn, "deleted target group"),
            Err(e) if e.is_not_found() => {}
            Err(e) if e.is_in_use() => in_use.push(arn.clone()),
            Err(e) => return Err(tg_err(e)),
        }
    }
    if in_use.is_empty() {
        Ok(DeleteProgress::Done)
    } else {
        Ok(DeleteProgress::Waiting(format!(
            "target groups still in use: {}",
            in_use.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_elb_limits() {
        assert_eq!(api_server_lb_name("demo"), "demo-apiserver");
        let long = api_server_lb_name("a-very-long-cluster-name-for-production.eu");
        assert!(long.len() <= 32, "{long}");
        assert!(long.ends_with("-api"));
        assert_ne!(
            long,
            api_server_lb_name("a-very-long-cluster-name-for-production.us")
        );
        assert!(long.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert!(!api_server_lb_name("internal").starts_with("internal-"));
    }
}
