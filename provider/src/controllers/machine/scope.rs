//! The fetch step of the KubeZeroMachine controller: the objects a reconcile reads ([`Scope`]),
//! read-only once fetched, and the bootstrap data, read only when a launch needs it
//! ([`bootstrap_data`]).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use kubezero_capi::contract::DATA_SECRET_VALUE_KEY;
use kubezero_capi::core::{Cluster, Machine};
use kubezero_capi::owner::{MachineOwners, fetch_machine_owners};

use crate::api::{GROUP, KubeZeroCluster, KubeZeroMachine};
use crate::controllers::Error;

/// What a reconcile of one KubeZeroMachine read: the machine, its owner Machine, the Machine's
/// Cluster and, for the steps that need it (provisioning, releasing, settling a launch while
/// paused), the Cluster's KubeZeroCluster ([`Scope::with_infra_cluster`]). Each is `None` while it
/// does not exist (or was not read).
#[derive(Clone, Debug)]
pub struct Scope {
    /// The reconciled machine.
    pub machine: Arc<KubeZeroMachine>,
    /// Its namespace (the namespace of every object here).
    pub namespace: String,
    /// The owner Machine.
    pub owner: Option<Machine>,
    /// The Cluster of the owner Machine (or of the cluster-name label).
    pub cluster: Option<Cluster>,
    /// The KubeZeroCluster the Cluster's `spec.infrastructureRef` names.
    pub infra_cluster: Option<KubeZeroCluster>,
}

impl Scope {
    /// Reads the owner Machine of `machine` and its Cluster (named by the Machine, else by the
    /// machine's cluster-name label).
    pub async fn fetch(
        client: &kube::Client,
        namespace: &str,
        machine: Arc<KubeZeroMachine>,
    ) -> Result<Self, Error> {
        let MachineOwners {
            machine: owner,
            cluster,
        } = fetch_machine_owners(client, namespace, &machine.metadata).await?;
        Ok(Self {
            machine,
            namespace: namespace.to_owned(),
            owner,
            cluster,
            infra_cluster: None,
        })
    }

    /// This scope with the KubeZeroCluster of its Cluster read (none without a Cluster, or when
    /// the Cluster's infrastructure is of another kind).
    pub async fn with_infra_cluster(self, client: &kube::Client) -> Result<Self, Error> {
        let infra_cluster = match &self.cluster {
            Some(cluster) => infra_cluster_of(client, cluster).await?,
            None => None,
        };
        Ok(Self {
            infra_cluster,
            ..self
        })
    }
}

async fn infra_cluster_of(
    client: &kube::Client,
    cluster: &Cluster,
) -> Result<Option<KubeZeroCluster>, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    match cluster.spec.infrastructure_ref.as_ref() {
        Some(reference) if reference.refers_to(GROUP, "KubeZeroCluster") => {
            Api::<KubeZeroCluster>::namespaced(client.clone(), &namespace)
                .get_opt(&reference.name)
                .await
                .map_err(Error::read("KubeZeroCluster", &namespace, &reference.name))
        }
        _ => Ok(None),
    }
}

/// The user data of `owner`'s bootstrap data Secret in `namespace` (key [`DATA_SECRET_VALUE_KEY`],
/// passed on as stored, e.g. gzip'd); `None` while the Secret or the key is missing or empty.
pub async fn bootstrap_data(
    client: &kube::Client,
    namespace: &str,
    owner: &Machine,
) -> Result<Option<Vec<u8>>, Error> {
    let Some(name) = owner
        .spec
        .bootstrap
        .data_secret_name
        .as_deref()
        .filter(|name| !name.is_empty())
    else {
        return Ok(None);
    };
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(Error::read("Secret", namespace, name))?;
    Ok(secret
        .and_then(|secret| secret.data)
        .and_then(|mut data| data.remove(DATA_SECRET_VALUE_KEY))
        .map(|bytes| bytes.0)
        .filter(|bytes| !bytes.is_empty()))
}
