//! Owner lookups from the contract: the owning Machine by ownerReference, the Cluster by label or ownerReference.

use kube::Client;
use kube::api::{Api, ObjectMeta};

use crate::contract::{CAPI_GROUP, CLUSTER_NAME_LABEL};
use crate::core::{Cluster, Machine};
use crate::runtime::reconcile::Error;

/// Name of the ownerReference of `kind` in the CAPI core group (any version), if present.
pub fn capi_owner_name(meta: &ObjectMeta, kind: &str) -> Option<String> {
    meta.owner_references.as_ref()?.iter().find_map(|owner| {
        let group = owner.api_version.split_once('/').map_or("", |(group, _)| group);
        (owner.kind == kind && group == CAPI_GROUP).then(|| owner.name.clone())
    })
}

/// Name of the owning Machine (contract: `util.GetOwnerMachine`).
pub fn owner_machine_name(meta: &ObjectMeta) -> Option<String> {
    capi_owner_name(meta, "Machine")
}

/// Name of the owning Cluster (set by core on InfraClusters).
pub fn owner_cluster_name(meta: &ObjectMeta) -> Option<String> {
    capi_owner_name(meta, "Cluster")
}

/// Value of the `cluster.x-k8s.io/cluster-name` label (contract: `util.GetClusterFromMetadata`).
pub fn cluster_name_label(meta: &ObjectMeta) -> Option<&str> {
    meta.labels
        .as_ref()?
        .get(CLUSTER_NAME_LABEL)
        .map(String::as_str)
        .filter(|name| !name.is_empty())
}

/// Fetches the Machine named by `meta`'s ownerReferences, or `None` while core has not set it (or it is gone).
pub async fn get_owner_machine(
    client: &Client,
    namespace: &str,
    meta: &ObjectMeta,
) -> Result<Option<Machine>, kube::Error> {
    match owner_machine_name(meta) {
        Some(name) => {
            Api::<Machine>::namespaced(client.clone(), namespace)
                .get_opt(&name)
                .await
        }
        None => Ok(None),
    }
}

/// Fetches a Cluster by name, `None` when it does not exist.
pub async fn get_cluster(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Cluster>, kube::Error> {
    Api::<Cluster>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
}

/// The Cluster API objects a Machine-owned object (an infrastructure machine, a bootstrap config)
/// belongs to; `None` for what does not exist yet.
#[derive(Clone, Debug, Default)]
pub struct MachineOwners {
    /// The owning Machine (by ownerReference).
    pub machine: Option<Machine>,
    /// The Cluster: the Machine's `spec.clusterName`, else the object's cluster-name label.
    pub cluster: Option<Cluster>,
}

/// Fetches the owners of the object with `meta` in `namespace` (contract: `util.GetOwnerMachine`,
/// then `util.GetClusterFromMetadata`).
pub async fn fetch_machine_owners(
    client: &Client,
    namespace: &str,
    meta: &ObjectMeta,
) -> Result<MachineOwners, Error> {
    let machine = get_owner_machine(client, namespace, meta)
        .await
        .map_err(Error::read(
            "Machine",
            namespace,
            &owner_machine_name(meta).unwrap_or_default(),
        ))?;
    let cluster_name = machine
        .as_ref()
        .map(|machine| machine.spec.cluster_name.clone())
        .filter(|name| !name.is_empty())
        .or_else(|| cluster_name_label(meta).map(str::to_string));
    let cluster = match cluster_name {
        Some(name) => get_cluster(client, namespace, &name)
            .await
            .map_err(Error::read("Cluster", namespace, &name))?,
        None => None,
    };
    Ok(MachineOwners { machine, cluster })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owner(api_version: &str, kind: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            ..Default::default()
        }
    }

    #[test]
    fn owner_machine_is_found_in_any_capi_version() {
        for version in ["cluster.x-k8s.io/v1beta2", "cluster.x-k8s.io/v1beta1"] {
            let meta = ObjectMeta {
                owner_references: Some(vec![
                    owner("cluster.x-k8s.io/v1beta2", "MachineSet", "workers-abc"),
                    owner(version, "Machine", "workers-abc-x1"),
                ]),
                ..Default::default()
            };
            assert_eq!(owner_machine_name(&meta).as_deref(), Some("workers-abc-x1"));
        }
    }

    #[test]
    fn machine_of_another_group_is_not_an_owner_machine() {
        let meta = ObjectMeta {
            owner_references: Some(vec![owner("example.com/v1", "Machine", "imposter")]),
            ..Default::default()
        };
        assert_eq!(owner_machine_name(&meta), None);
        assert_eq!(owner_machine_name(&ObjectMeta::default()), None);
    }

    #[test]
    fn owner_cluster_and_cluster_label_are_read() {
        let meta = ObjectMeta {
            owner_references: Some(vec![owner("cluster.x-k8s.io/v1beta2", "Cluster", "demo")]),
            labels: Some([(CLUSTER_NAME_LABEL.to_string(), "demo".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(owner_cluster_name(&meta).as_deref(), Some("demo"));
        assert_eq!(cluster_name_label(&meta), Some("demo"));
    }

    #[test]
    fn empty_cluster_label_counts_as_missing() {
        let meta = ObjectMeta {
            labels: Some([(CLUSTER_NAME_LABEL.to_string(), String::new())].into()),
            ..Default::default()
        };
        assert_eq!(cluster_name_label(&meta), None);
    }
}
