//! Ownership tags on every AWS resource of a cluster, and the Describe filters that find them again:
//! lookups by these tags are what make each `ensure_*` idempotent and each `delete_*` complete.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

/// Prefix of the provider's ownership tag: `<prefix><cluster>=owned`.
pub const OWNED_TAG_PREFIX: &str = "sigs.k8s.io/cluster-api-provider-kubezero/cluster/";
/// Prefix of the Kubernetes cloud-provider cluster tag (also set by in-cluster controllers).
pub const KUBERNETES_CLUSTER_TAG_PREFIX: &str = "kubernetes.io/cluster/";
/// Tag naming what a resource is for (see [`Role`]).
pub const ROLE_TAG: &str = "sigs.k8s.io/cluster-api-provider-kubezero/role";
/// Tag holding the availability zone a per-zone resource serves.
pub const ZONE_TAG: &str = "sigs.k8s.io/cluster-api-provider-kubezero/zone";
/// The value of ownership tags on resources the cluster owns.
pub const OWNED: &str = "owned";

/// What a tagged resource is for; the value of [`ROLE_TAG`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The VPC, its internet gateway.
    Common,
    /// Public subnets and their route table.
    Public,
    /// Private subnets and their route tables.
    Private,
    /// NAT gateways and their elastic IPs.
    Nat,
    /// Control-plane security group, IAM role and instance profile.
    ControlPlane,
    /// Node security group, IAM role and instance profile.
    Node,
    /// The API server load balancer, its security group and target group.
    ApiServerLb,
}

impl Role {
    /// The tag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Common => "common",
            Role::Public => "public",
            Role::Private => "private",
            Role::Nat => "nat",
            Role::ControlPlane => "control-plane",
            Role::Node => "node",
            Role::ApiServerLb => "apiserver-lb",
        }
    }
}

/// The tags of one cluster: its name as used in AWS tag keys, and the user's extra tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterTags {
    cluster: String,
    additional: BTreeMap<String, String>,
}

impl ClusterTags {
    /// Tags for `cluster` (the name in `kubernetes.io/cluster/<name>`, which in-cluster controllers
    /// must use too) plus `additional` user tags.
    pub fn new(cluster: impl Into<String>, additional: BTreeMap<String, String>) -> Self {
        Self {
            cluster: cluster.into(),
            additional,
        }
    }

    /// The cluster name in tag keys and resource names.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// `sigs.k8s.io/cluster-api-provider-kubezero/cluster/<name>`.
    pub fn owned_key(&self) -> String {
        format!("{OWNED_TAG_PREFIX}{}", self.cluster)
    }

    /// `kubernetes.io/cluster/<name>`.
    pub fn kubernetes_key(&self) -> String {
        format!("{KUBERNETES_CLUSTER_TAG_PREFIX}{}", self.cluster)
    }

    /// Every tag of a resource the provider creates: user tags, both ownership tags, role and
    /// `Name`.
    pub fn owned(&self, role: Role, name: &str) -> BTreeMap<String, String> {
        let mut tags = self.additional.clone();
        tags.insert(self.owned_key(), OWNED.to_owned());
        tags.insert(self.kubernetes_key(), OWNED.to_owned());
        tags.insert(ROLE_TAG.to_owned(), role.as_str().to_owned());
        tags.insert("Name".to_owned(), name.to_owned());
        tags
    }

    /// [`ClusterTags::owned`] plus the zone tag of a per-zone resource.
    pub fn owned_in_zone(&self, role: Role, name: &str, zone: &str) -> BTreeMap<String, String> {
        let mut tags = self.owned(role, name);
        tags.insert(ZONE_TAG.to_owned(), zone.to_owned());
        tags
    }

    /// Whether `tags` carry the provider's ownership tag of this cluster.
    pub fn is_owned<'a>(&self, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        let key = self.owned_key();
        tags.into_iter().any(|(k, v)| k == key && v == OWNED)
    }

    /// Whether EC2 tags carry the provider's ownership tag of this cluster. Describe results are
    /// checked with this too, so an API that ignores a tag filter never hands us a foreign resource.
    pub fn owns(&self, tags: &[Tag]) -> bool {
        self.is_owned(ec2_pairs(tags))
    }

    /// EC2 filter: resources this provider created for the cluster.
    pub fn owned_filter(&self) -> Filter {
        tag_filter(&self.owned_key(), OWNED)
    }

    /// EC2 filter: resources tagged `kubernetes.io/cluster/<name>=owned` by anyone (the provider or
    /// in-cluster controllers).
    pub fn kubernetes_owned_filter(&self) -> Filter {
        tag_filter(&self.kubernetes_key(), OWNED)
    }

    /// EC2 filter on the role tag.
    pub fn role_filter(role: Role) -> Filter {
        tag_filter(ROLE_TAG, role.as_str())
    }
}

/// EC2 filter `tag:<key>=<value>`.
pub fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder().name(format!("tag:{key}")).values(value).build()
}

/// EC2 filter `<name>=<values...>`.
pub fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| (*v).to_owned()).collect()))
        .build()
}

/// Tags as EC2 tags.
pub fn ec2_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Tags as an EC2 `TagSpecification` for a create call, so a resource is never untagged.
pub fn ec2_tag_spec(resource_type: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource_type)
        .set_tags(Some(ec2_tags(tags)))
        .build()
}

/// The value of `key` in EC2 tags.
pub fn ec2_tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

/// EC2 tags as (key, value) pairs.
pub fn ec2_pairs(tags: &[Tag]) -> impl Iterator<Item = (&str, &str)> {
    tags.iter()
        .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_resources_carry_both_ownership_tags_role_and_name() {
        let tags = ClusterTags::new("demo", BTreeMap::from([("team".to_owned(), "infra".to_owned())]));
        let owned = tags.owned(Role::ControlPlane, "demo-controlplane");
        assert_eq!(
            owned["sigs.k8s.io/cluster-api-provider-kubezero/cluster/demo"],
            "owned"
        );
        assert_eq!(owned["kubernetes.io/cluster/demo"], "owned");
        assert_eq!(owned[ROLE_TAG], "control-plane");
        assert_eq!(owned["Name"], "demo-controlplane");
        assert_eq!(owned["team"], "infra");
        let zoned = tags.owned_in_zone(Role::Private, "demo-private-a", "eu-central-1a");
        assert_eq!(zoned[ZONE_TAG], "eu-central-1a");
        assert!(tags.is_owned(owned.iter().map(|(k, v)| (k.as_str(), v.as_str()))));
        assert!(
            !ClusterTags::new("other", BTreeMap::new())
                .is_owned(owned.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        );
    }

    #[test]
    fn filters_name_the_tag() {
        let tags = ClusterTags::new("demo", BTreeMap::new());
        let filter = tags.owned_filter();
        assert_eq!(
            filter.name(),
            Some("tag:sigs.k8s.io/cluster-api-provider-kubezero/cluster/demo")
        );
        assert_eq!(filter.values(), ["owned"]);
    }
}
