//! What generating a config's bootstrap data reads from, and writes to, the management cluster
//! before anything is rendered: the init lock (taken or released), the cluster PKI (generated once by
//! the init machine), the content of files kept in Secrets, the cluster CA pin of workers and the
//! platform of the Cluster's infrastructure (provider-ID source, control-plane VIP).
//!
//! A problem the user can fix ends the step as a report (a `Ready=False` reason and message); an API
//! failure as an [`Error`], retried with backoff.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DeleteParams, DynamicObject, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use kubezero_capi::core::{Cluster, Machine};
use kubezero_capi::runtime::reconcile::Error;

use super::build;
use super::generate::{Halt, Step, is_conflict, is_not_found, report};
use super::reasons;
use crate::api::File;
use crate::lock::{self, LockDecision};
use crate::pki::{self, CertKeyPair, CertificateKind, ClusterCertificates, TLS_CRT};
use crate::render::{self, kubeadm::KubeadmRole};

/// The machine's kubeadm role (contract §6), after taking or releasing the init lock: the first
/// control-plane machine under the lock initialises the cluster; after initialization control-plane
/// machines join the control plane and workers join as nodes.
pub(super) async fn role(
    client: &Client,
    namespace: &str,
    machine: &Machine,
    cluster: &Cluster,
) -> Step<KubeadmRole> {
    let cluster_name = cluster.name_any();
    let lock_name = lock::lock_name(&cluster_name);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let initialized = cluster.control_plane_initialized();
    let is_control_plane = machine.is_control_plane();
    if !initialized && !is_control_plane {
        return report(
            reasons::WAITING_FOR_CONTROL_PLANE_INITIALIZATION,
            format!("waiting for the control plane of Cluster {cluster_name} to be initialized"),
        );
    }
    let current =
        config_maps
            .get_opt(&lock_name)
            .await
            .map_err(Error::read("ConfigMap", namespace, &lock_name))?;
    let me = machine.name_any();
    let holder_exists = match current.as_ref().and_then(lock::holder) {
        Some(holder) if holder != me && !initialized => {
            let machines: Api<Machine> = Api::namespaced(client.clone(), namespace);
            machines
                .get_opt(&holder)
                .await
                .map_err(Error::read("Machine", namespace, &holder))?
                .is_some()
        }
        _ => false,
    };
    let decision = lock::decide(current.as_ref(), &me, holder_exists, initialized);
    let waiting_for_other = || {
        report(
            reasons::WAITING_FOR_CONTROL_PLANE_INITIALIZATION,
            format!(
                "another Machine is initializing the control plane of Cluster {cluster_name}; waiting to join"
            ),
        )
    };
    match decision {
        LockDecision::NotNeeded => {}
        LockDecision::ReleaseInitialized => {
            // A lock replaced meanwhile is released by the next reconcile that sees it.
            delete_lock(&config_maps, namespace, &lock_name, current.as_ref()).await?;
        }
        LockDecision::Held => {}
        LockDecision::HeldByOther(holder) => {
            return report(
                reasons::WAITING_FOR_CONTROL_PLANE_INITIALIZATION,
                format!(
                    "Machine {holder} is initializing the control plane of Cluster {cluster_name}; waiting to join"
                ),
            );
        }
        LockDecision::Acquire | LockDecision::ReleaseStale => {
            if decision == LockDecision::ReleaseStale
                && delete_lock(&config_maps, namespace, &lock_name, current.as_ref()).await?
                    == Released::Replaced
            {
                return waiting_for_other();
            }
            let uid = cluster.uid().unwrap_or_default();
            let lock = lock::lock_config_map(&cluster_name, &uid, namespace, &me);
            match config_maps.create(&PostParams::default(), &lock).await {
                Ok(_) => tracing::info!(lock = %lock_name, "acquired the control-plane init lock"),
                Err(error) if is_conflict(&error) => return waiting_for_other(),
                Err(error) => {
                    return Err(Error::write("create", "ConfigMap", namespace, &lock_name)(error).into());
                }
            }
        }
    }
    Ok(build::role_for(initialized, is_control_plane))
}

/// What deleting the init lock found.
#[derive(Debug, PartialEq, Eq)]
enum Released {
    /// The lock that was read is gone (deleted now, or already).
    Gone,
    /// The lock was replaced after it was read (another uid): the newer lock is kept.
    Replaced,
}

/// Deletes the init lock `read` (as read by this reconcile), with its uid as precondition so a newer
/// lock of the same name is never deleted.
async fn delete_lock(
    api: &Api<ConfigMap>,
    namespace: &str,
    name: &str,
    read: Option<&ConfigMap>,
) -> Step<Released> {
    let uid = read.and_then(|lock| lock.metadata.uid.clone());
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            tracing::info!(lock = %name, "released the control-plane init lock");
            Ok(Released::Gone)
        }
        Err(error) if is_not_found(&error) => Ok(Released::Gone),
        Err(error) if is_conflict(&error) => Ok(Released::Replaced),
        Err(error) => Err(Error::write("delete", "ConfigMap", namespace, name)(error).into()),
    }
}

/// The user's files with their content resolved (inline, or from a Secret in the config's namespace)
/// and decoded ([`build::resolve_file`]).
pub(super) async fn user_files(
    client: &Client,
    namespace: &str,
    files: &[File],
) -> Step<Vec<render::FileSpec>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut resolved = Vec::with_capacity(files.len());
    for file in files {
        let raw: Vec<u8> = match (&file.content, &file.content_from) {
            (Some(content), _) => content.clone().into_bytes(),
            (None, Some(source)) => {
                let reference = &source.secret;
                let secret = secrets.get_opt(&reference.name).await.map_err(Error::read(
                    "Secret",
                    namespace,
                    &reference.name,
                ))?;
                let Some(secret) = secret else {
                    return report(
                        reasons::FILE_SECRET_NOT_FOUND,
                        format!(
                            "file {}: Secret {namespace}/{} not found",
                            file.path, reference.name
                        ),
                    );
                };
                let value = secret.data.as_ref().and_then(|data| data.get(&reference.key));
                let Some(value) = value else {
                    return report(
                        reasons::FILE_SECRET_NOT_FOUND,
                        format!(
                            "file {}: Secret {namespace}/{} has no key {:?}",
                            file.path, reference.name, reference.key
                        ),
                    );
                };
                value.0.clone()
            }
            (None, None) => Vec::new(),
        };
        resolved.push(build::resolve_file(file, raw).map_err(Halt::invalid)?);
    }
    Ok(resolved)
}

/// The four cluster key pairs. `generate_missing` (the init machine): Secrets that do not exist are
/// generated and created, owned by the Cluster; user-supplied ones are used as they are. Control-plane
/// joins only read them.
pub(super) async fn cluster_certificates(
    client: &Client,
    cluster: &Cluster,
    generate_missing: bool,
) -> Step<ClusterCertificates> {
    let namespace = cluster.namespace().unwrap_or_default();
    let cluster_name = cluster.name_any();
    let uid = cluster.uid().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut pairs: BTreeMap<CertificateKind, CertKeyPair> = BTreeMap::new();
    for kind in CertificateKind::ALL {
        let name = kind.secret_name(&cluster_name);
        let mut secret = secrets
            .get_opt(&name)
            .await
            .map_err(Error::read("Secret", &namespace, &name))?;
        if secret.is_none() {
            if !generate_missing {
                return report(
                    reasons::WAITING_FOR_CLUSTER_CERTIFICATES,
                    format!("waiting for the cluster certificate Secret {namespace}/{name}"),
                );
            }
            let pair = match kind.generate(Timestamp::now()) {
                Ok(pair) => pair,
                Err(error) => return report(reasons::INVALID_CLUSTER_CERTIFICATES, error.to_string()),
            };
            let object = pki::to_secret(kind, &pair, &cluster_name, &uid, &namespace);
            match secrets.create(&PostParams::default(), &object).await {
                Ok(created) => {
                    tracing::info!(secret = %name, "generated cluster certificate Secret");
                    secret = Some(created);
                }
                Err(error) if is_conflict(&error) => {
                    secret = secrets
                        .get_opt(&name)
                        .await
                        .map_err(Error::read("Secret", &namespace, &name))?;
                }
                Err(error) => return Err(Error::write("create", "Secret", &namespace, &name)(error).into()),
            }
        }
        let Some(secret) = secret else {
            return report(
                reasons::WAITING_FOR_CLUSTER_CERTIFICATES,
                format!("waiting for the cluster certificate Secret {namespace}/{name}"),
            );
        };
        match pki::from_secret(kind, &secret) {
            Ok(pair) => {
                pairs.insert(kind, pair);
            }
            Err(error) => return report(reasons::INVALID_CLUSTER_CERTIFICATES, error.to_string()),
        }
    }
    let (Some(ca), Some(etcd), Some(proxy), Some(sa)) = (
        pairs.remove(&CertificateKind::ClusterCa),
        pairs.remove(&CertificateKind::EtcdCa),
        pairs.remove(&CertificateKind::FrontProxyCa),
        pairs.remove(&CertificateKind::ServiceAccount),
    ) else {
        return report(
            reasons::WAITING_FOR_CLUSTER_CERTIFICATES,
            format!("waiting for the certificate Secrets of Cluster {cluster_name}"),
        );
    };
    Ok(ClusterCertificates { ca, etcd, proxy, sa })
}

/// The CA pin of a worker: only the cluster CA's certificate is read.
pub(super) async fn ca_pin(client: &Client, cluster: &Cluster) -> Step<Result<String, pki::PkiError>> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = CertificateKind::ClusterCa.secret_name(&cluster.name_any());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = secrets
        .get_opt(&name)
        .await
        .map_err(Error::read("Secret", &namespace, &name))?;
    let certificate = secret
        .as_ref()
        .and_then(|secret| secret.data.as_ref())
        .and_then(|data| data.get(TLS_CRT))
        .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok());
    match certificate {
        Some(certificate) => Ok(pki::ca_cert_hash(&certificate)),
        None => report(
            reasons::WAITING_FOR_CLUSTER_CERTIFICATES,
            format!("waiting for the cluster CA certificate in Secret {namespace}/{name}"),
        ),
    }
}

/// API group of the kubezero infrastructure kinds.
const INFRASTRUCTURE_GROUP: &str = "infrastructure.cluster.x-k8s.io";
/// Served version of the kubezero infrastructure kinds.
const INFRASTRUCTURE_VERSION: &str = "v1alpha1";
/// The kubezero InfraCluster kind.
const KUBEZERO_CLUSTER_KIND: &str = "KubeZeroCluster";

/// The platform of the Cluster's infrastructure: bare metal when its KubeZeroCluster has `spec.metal`
/// (provider ID from the NoCloud meta-data, kube-vip on control planes), else EC2 (provider ID from
/// IMDSv2; also for other infrastructure providers on EC2). A `spec.metal` the bootstrap data cannot
/// use is reported as `InvalidConfiguration` and looked at again after the requeue.
pub(super) async fn platform(client: &Client, cluster: &Cluster) -> Step<build::Platform> {
    let Some(reference) = cluster
        .spec
        .infrastructure_ref
        .as_ref()
        .filter(|reference| reference.refers_to(INFRASTRUCTURE_GROUP, KUBEZERO_CLUSTER_KIND))
    else {
        return Ok(build::Platform::Aws);
    };
    let namespace = cluster.namespace().unwrap_or_default();
    let resource = kube::discovery::ApiResource {
        group: INFRASTRUCTURE_GROUP.to_string(),
        version: INFRASTRUCTURE_VERSION.to_string(),
        api_version: format!("{INFRASTRUCTURE_GROUP}/{INFRASTRUCTURE_VERSION}"),
        kind: KUBEZERO_CLUSTER_KIND.to_string(),
        plural: "kubezeroclusters".to_string(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    let infra = api.get_opt(&reference.name).await.map_err(Error::read(
        KUBEZERO_CLUSTER_KIND,
        &namespace,
        &reference.name,
    ))?;
    let metal = infra
        .and_then(|infra| infra.data.pointer("/spec/metal").cloned())
        .filter(|metal| !metal.is_null());
    let Some(metal) = metal else {
        return Ok(build::Platform::Aws);
    };
    match serde_json::from_value::<build::MetalCluster>(metal) {
        Ok(metal) => Ok(build::Platform::Metal(metal)),
        Err(error) => report(
            reasons::INVALID_CONFIGURATION,
            format!(
                "{KUBEZERO_CLUSTER_KIND} {namespace}/{}: spec.metal: {error}",
                reference.name
            ),
        ),
    }
}
