//! Per-cluster IAM roles and instance profiles for control-plane and node instances, with the
//! least-privilege policies kept in `provider/policies/`. Roles are refused, never adopted, when
//! they exist without the cluster's ownership tag.

use aws_sdk_iam::types::Tag;
use kubezero_capi::runtime::errors::ErrorClass;

use super::DeleteProgress;
use super::clients::AwsClients;
use super::errors::{AwsError, AwsErrorKind, ok_if_already_exists, ok_if_not_found};
use super::limiter::Service::Iam;
use super::tags::{ClusterTags, Role};

/// Trust policy: EC2 instances may assume the role.
pub const TRUST_POLICY: &str = include_str!("../../policies/trust-ec2.json");
/// Inline policy of the control-plane role (`{{cluster}}` is replaced by the cluster name).
pub const CONTROL_PLANE_POLICY: &str = include_str!("../../policies/control-plane.json");
/// Inline policy of the node role.
pub const NODES_POLICY: &str = include_str!("../../policies/nodes.json");
/// Name of the inline policy on each role.
pub const INLINE_POLICY_NAME: &str = "kubezero";
const MAX_NAME: usize = 64;

/// Which machines a role is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IamRole {
    /// Control-plane machines.
    ControlPlane,
    /// Worker machines.
    Nodes,
}

impl IamRole {
    /// Both roles.
    pub const ALL: [IamRole; 2] = [IamRole::ControlPlane, IamRole::Nodes];

    fn suffix(self) -> &'static str {
        match self {
            IamRole::ControlPlane => "control-plane",
            IamRole::Nodes => "nodes",
        }
    }

    fn tag_role(self) -> Role {
        match self {
            IamRole::ControlPlane => Role::ControlPlane,
            IamRole::Nodes => Role::Node,
        }
    }

    fn policy_template(self) -> &'static str {
        match self {
            IamRole::ControlPlane => CONTROL_PLANE_POLICY,
            IamRole::Nodes => NODES_POLICY,
        }
    }
}

/// Role and instance profile name of `role` for `cluster`: `kubezero-<cluster>-<role>`, shortened
/// with a hash to IAM's 64 characters. The role and its instance profile share the name. Pure.
pub fn iam_name(cluster: &str, role: IamRole) -> String {
    let full = format!("kubezero-{cluster}-{}", role.suffix());
    if full.len() <= MAX_NAME {
        return full;
    }
    let hash = cluster.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let keep = MAX_NAME - "kubezero-".len() - 1 - 8 - 1 - role.suffix().len();
    format!("kubezero-{}-{hash:08x}-{}", &cluster[..keep], role.suffix())
}

/// The inline policy of `role` for `cluster`, rendered. Pure.
pub fn render_policy(role: IamRole, cluster: &str) -> String {
    role.policy_template().replace("{{cluster}}", cluster)
}

/// One role and its instance profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceProfile {
    /// Role (and instance profile) name.
    pub name: String,
    /// Role ARN.
    pub role_arn: String,
    /// Instance profile ARN.
    pub instance_profile_arn: String,
}

/// The cluster's instance profiles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IamState {
    /// For control-plane machines.
    pub control_plane: InstanceProfile,
    /// For worker machines.
    pub nodes: InstanceProfile,
}

/// Errors of IAM roles and instance profiles.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    /// A call on a role or its policy failed.
    #[error("IAM role {name}: {source}")]
    Role {
        /// Role name.
        name: String,
        /// The AWS error.
        source: AwsError,
    },
    /// A call on an instance profile failed.
    #[error("IAM instance profile {name}: {source}")]
    InstanceProfile {
        /// Instance profile name.
        name: String,
        /// The AWS error.
        source: AwsError,
    },
    /// A role or instance profile of that name exists but belongs to someone else.
    #[error("IAM {kind} {name} exists and is not owned by cluster {cluster}")]
    NotOwned {
        /// `role` or `instance profile`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Cluster name.
        cluster: String,
    },
}

impl IamError {
    /// A closure wrapping the AWS error of a call on role `name`.
    fn role(name: &str) -> impl Fn(AwsError) -> Self + Copy + '_ {
        move |source| Self::Role {
            name: name.to_owned(),
            source,
        }
    }

    /// A closure wrapping the AWS error of a call on instance profile `name`.
    fn instance_profile(name: &str) -> impl Fn(AwsError) -> Self + Copy + '_ {
        move |source| Self::InstanceProfile {
            name: name.to_owned(),
            source,
        }
    }

    /// The error class the error policy requeues by.
    pub fn class(&self) -> ErrorClass {
        match self {
            IamError::Role { source, .. } | IamError::InstanceProfile { source, .. } => source.class(),
            IamError::NotOwned { .. } => ErrorClass::Invalid,
        }
    }
}

fn iam_tags(tags: &ClusterTags, role: IamRole, name: &str) -> Vec<Tag> {
    tags.owned(role.tag_role(), name)
        .into_iter()
        .filter_map(|(key, value)| Tag::builder().key(key).value(value).build().ok())
        .collect()
}

fn owned(tags: &ClusterTags, iam_tags: &[Tag]) -> bool {
    tags.is_owned(iam_tags.iter().map(|t| (t.key(), t.value())))
}

/// Decodes an IAM policy document: AWS returns it URL-encoded.
fn decode_policy(document: &str) -> Option<serde_json::Value> {
    if let Ok(value) = serde_json::from_str(document) {
        return Some(value);
    }
    let bytes = document.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    serde_json::from_slice(&out).ok()
}

/// Finds or creates the control-plane and node roles (trust policy, inline policy, tags) and their
/// instance profiles. Idempotent: the inline policy is only written when it differs.
#[tracing::instrument(skip_all, fields(cluster = tags.cluster()))]
pub async fn ensure_iam(aws: &AwsClients, tags: &ClusterTags) -> Result<IamState, IamError> {
    let control_plane = ensure_role(aws, tags, IamRole::ControlPlane).await?;
    let nodes = ensure_role(aws, tags, IamRole::Nodes).await?;
    Ok(IamState { control_plane, nodes })
}

async fn ensure_role(
    aws: &AwsClients,
    tags: &ClusterTags,
    role: IamRole,
) -> Result<InstanceProfile, IamError> {
    let name = iam_name(tags.cluster(), role);
    let role_err = IamError::role(&name);
    let profile_err = IamError::instance_profile(&name);
    let not_owned = |kind| IamError::NotOwned {
        kind,
        name: name.clone(),
        cluster: tags.cluster().to_owned(),
    };
    let role_tags = iam_tags(tags, role, &name);

    let found = ok_if_not_found(
        aws.call(Iam, "GetRole", || aws.iam.get_role().role_name(&name).send())
            .await,
    )
    .map_err(role_err)?;
    let role_arn = match found.as_ref().and_then(|o| o.role()) {
        Some(existing) => {
            if !owned(tags, existing.tags()) {
                return Err(not_owned("role"));
            }
            existing.arn().to_owned()
        }
        None => {
            let created = aws
                .call(Iam, "CreateRole", || {
                    aws.iam
                        .create_role()
                        .role_name(&name)
                        .assume_role_policy_document(TRUST_POLICY)
                        .description(format!("kubezero cluster {} {}", tags.cluster(), role.suffix()))
                        .set_tags(Some(role_tags.clone()))
                        .send()
                })
                .await
                .map_err(role_err)?;
            tracing::info!(role = %name, "created IAM role");
            created.role().map(|r| r.arn().to_owned()).unwrap_or_default()
        }
    };

    let wanted = render_policy(role, tags.cluster());
    let current = ok_if_not_found(
        aws.call(Iam, "GetRolePolicy", || {
            aws.iam
                .get_role_policy()
                .role_name(&name)
                .policy_name(INLINE_POLICY_NAME)
                .send()
        })
        .await,
    )
    .map_err(role_err)?;
    let up_to_date = current
        .as_ref()
        .and_then(|c| decode_policy(c.policy_document()))
        .is_some_and(|doc| serde_json::from_str::<serde_json::Value>(&wanted).ok() == Some(doc));
    if !up_to_date {
        aws.call(Iam, "PutRolePolicy", || {
            aws.iam
                .put_role_policy()
                .role_name(&name)
                .policy_name(INLINE_POLICY_NAME)
                .policy_document(&wanted)
                .send()
        })
        .await
        .map_err(role_err)?;
        tracing::info!(role = %name, "wrote inline policy");
    }

    let found = ok_if_not_found(
        aws.call(Iam, "GetInstanceProfile", || {
            aws.iam.get_instance_profile().instance_profile_name(&name).send()
        })
        .await,
    )
    .map_err(profile_err)?;
    let (instance_profile_arn, has_role) = match found.as_ref().and_then(|o| o.instance_profile()) {
        Some(profile) => {
            if !owned(tags, profile.tags()) {
                return Err(not_owned("instance profile"));
            }
            (
                profile.arn().to_owned(),
                profile.roles().iter().any(|r| r.role_name() == name),
            )
        }
        None => {
            let created = aws
                .call(Iam, "CreateInstanceProfile", || {
                    aws.iam
                        .create_instance_profile()
                        .instance_profile_name(&name)
                        .set_tags(Some(role_tags.clone()))
                        .send()
                })
                .await
                .map_err(profile_err)?;
            tracing::info!(instance_profile = %name, "created instance profile");
            (
                created
                    .instance_profile()
                    .map(|p| p.arn().to_owned())
                    .unwrap_or_default(),
                false,
            )
        }
    };
    if !has_role {
        // An instance profile holds one role: `LimitExceeded` means ours is already in it.
        let added = aws
            .call(Iam, "AddRoleToInstanceProfile", || {
                aws.iam
                    .add_role_to_instance_profile()
                    .instance_profile_name(&name)
                    .role_name(&name)
                    .send()
            })
            .await;
        match added {
            Err(e) if e.kind == AwsErrorKind::QuotaExceeded => {}
            other => ok_if_already_exists(other).map_err(profile_err)?,
        }
    }
    Ok(InstanceProfile {
        name,
        role_arn,
        instance_profile_arn,
    })
}

/// Deletes both instance profiles and roles (with their inline and attached policies). Anything
/// already gone counts as deleted; a role without the cluster's ownership tag is left alone.
#[tracing::instrument(skip_all, fields(cluster = tags.cluster()))]
pub async fn delete_iam(aws: &AwsClients, tags: &ClusterTags) -> Result<DeleteProgress, IamError> {
    for role in IamRole::ALL {
        delete_role(aws, tags, role).await?;
    }
    Ok(DeleteProgress::Done)
}

async fn delete_role(aws: &AwsClients, tags: &ClusterTags, role: IamRole) -> Result<(), IamError> {
    let name = iam_name(tags.cluster(), role);
    let role_err = IamError::role(&name);
    let profile_err = IamError::instance_profile(&name);

    let profile = ok_if_not_found(
        aws.call(Iam, "GetInstanceProfile", || {
            aws.iam.get_instance_profile().instance_profile_name(&name).send()
        })
        .await,
    )
    .map_err(profile_err)?;
    if let Some(profile) = profile
        .as_ref()
        .and_then(|o| o.instance_profile())
        .filter(|p| owned(tags, p.tags()))
    {
        for attached in profile.roles() {
            ok_if_not_found(
                aws.call(Iam, "RemoveRoleFromInstanceProfile", || {
                    aws.iam
                        .remove_role_from_instance_profile()
                        .instance_profile_name(&name)
                        .role_name(attached.role_name())
                        .send()
                })
                .await,
            )
            .map_err(profile_err)?;
        }
        ok_if_not_found(
            aws.call(Iam, "DeleteInstanceProfile", || {
                aws.iam
                    .delete_instance_profile()
                    .instance_profile_name(&name)
                    .send()
            })
            .await,
        )
        .map_err(profile_err)?;
        tracing::info!(instance_profile = %name, "deleted instance profile");
    }

    let found = ok_if_not_found(
        aws.call(Iam, "GetRole", || aws.iam.get_role().role_name(&name).send())
            .await,
    )
    .map_err(role_err)?;
    if !found
        .as_ref()
        .and_then(|o| o.role())
        .is_some_and(|r| owned(tags, r.tags()))
    {
        return Ok(());
    }
    let inline = ok_if_not_found(
        aws.call(Iam, "ListRolePolicies", || {
            aws.iam.list_role_policies().role_name(&name).send()
        })
        .await,
    )
    .map_err(role_err)?;
    for policy in inline.as_ref().map(|o| o.policy_names()).unwrap_or_default() {
        ok_if_not_found(
            aws.call(Iam, "DeleteRolePolicy", || {
                aws.iam
                    .delete_role_policy()
                    .role_name(&name)
                    .policy_name(policy)
                    .send()
            })
            .await,
        )
        .map_err(role_err)?;
    }
    let attached = ok_if_not_found(
        aws.call(Iam, "ListAttachedRolePolicies", || {
            aws.iam.list_attached_role_policies().role_name(&name).send()
        })
        .await,
    )
    .map_err(role_err)?;
    for policy in attached
        .as_ref()
        .map(|o| o.attached_policies())
        .unwrap_or_default()
    {
        let Some(arn) = policy.policy_arn() else { continue };
        ok_if_not_found(
            aws.call(Iam, "DetachRolePolicy", || {
                aws.iam
                    .detach_role_policy()
                    .role_name(&name)
                    .policy_arn(arn)
                    .send()
            })
            .await,
        )
        .map_err(role_err)?;
    }
    ok_if_not_found(
        aws.call(Iam, "DeleteRole", || {
            aws.iam.delete_role().role_name(&name).send()
        })
        .await,
    )
    .map_err(role_err)?;
    tracing::info!(role = %name, "deleted IAM role");
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn statements(document: &str) -> Vec<Value> {
        let value: Value = serde_json::from_str(document).expect("policy is valid JSON");
        assert_eq!(value["Version"], "2012-10-17");
        value["Statement"]
            .as_array()
            .expect("Statement is a list")
            .clone()
    }

    #[test]
    fn policy_files_are_valid_rendered_json() {
        for role in IamRole::ALL {
            let rendered = render_policy(role, "demo");
            assert!(!rendered.contains("{{"), "unrendered placeholder in {role:?}");
            for statement in statements(&rendered) {
                assert_eq!(statement["Effect"], "Allow");
                assert!(
                    statement.get("Action").is_some() && statement.get("Resource").is_some(),
                    "{statement}"
                );
                let actions = statement["Action"].to_string();
                assert!(
                    !actions.contains("\"*\"") && !actions.contains(":*\""),
                    "no wildcard actions: {actions}"
                );
            }
        }
        let trust = statements(TRUST_POLICY);
        assert_eq!(trust[0]["Principal"]["Service"], "ec2.amazonaws.com");
        assert!(render_policy(IamRole::ControlPlane, "demo").contains("kubernetes.io/cluster/demo"));
    }

    #[test]
    fn nodes_get_fewer_permissions_than_the_control_plane() {
        let nodes = render_policy(IamRole::Nodes, "demo");
        assert!(!nodes.contains("elasticloadbalancing"));
        assert!(!nodes.contains("ec2:Create"));
    }

    #[test]
    fn names_fit_iam_limits() {
        assert_eq!(
            iam_name("demo", IamRole::ControlPlane),
            "kubezero-demo-control-plane"
        );
        let long = "c".repeat(80);
        let name = iam_name(&long, IamRole::ControlPlane);
        assert_eq!(name.len(), 64, "{name}");
        assert!(name.ends_with("-control-plane"));
        assert!(iam_name(&long, IamRole::Nodes).len() <= 64);
    }

    #[test]
    fn url_encoded_policies_decode() {
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(
            decode_policy(encoded),
            Some(serde_json::json!({"Version": "2012-10-17", "Statement": []}))
        );
        assert_eq!(decode_policy("{\"a\": 1}"), Some(serde_json::json!({"a": 1})));
    }
}
