//! Generating the bootstrap data Secret of one KubeZeroConfig once its Machine and Cluster are ready
//! (contract §4 and §6): role from the control-plane label and the init lock, cluster PKI, the join
//! token in the workload cluster, rendering, the data Secret.
//!
//! Every problem the user can fix is reported as a `Ready=False` condition with a reason and no data
//! Secret; API failures are returned as [`Error`] (retried with backoff). Secret material (keys, tokens,
//! user data) is never logged.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};
use kubezero_capi::conditions::Observed;
use kubezero_capi::contract::READY_CONDITION;
use kubezero_capi::core::{Cluster, Machine};
use kubezero_capi::runtime::reconcile::Error;

use super::reasons;
use super::workload::{self, ChosenToken, Workload};
use crate::api::{Alpine, Encoding, File, Format, KubeZeroConfig, KubeZeroConfigSpec};
use crate::lock::{self, LockDecision};
use crate::pki::{self, CLUSTER_SECRET_TYPE, CertKeyPair, CertificateKind, ClusterCertificates, TLS_CRT};
use crate::render::kubeadm::{
    JoinDiscovery, KUBEADM_PATCHES_DIR, KUBELET_PATCH_FILE, KubeadmInputs, KubeadmRole, render_kubeadm_config,
};
use crate::render::{self, RenderError};
use crate::tokens::{self, BootstrapToken, TOKEN_NAMESPACE, TokenChoice, TokenGroup};

/// How long a config waits before looking again (lock, control-plane initialization, workload cluster).
pub const REQUEUE: Duration = Duration::from_secs(30);

/// Key of the data Secret holding the user data.
pub const VALUE_KEY: &str = "value";
/// Key of the data Secret naming the user-data format.
pub const FORMAT_KEY: &str = "format";
/// Key of a join's data Secret holding the bootstrap token its user data carries, so the token can be
/// refreshed, or re-created in the workload cluster, while the Machine has not joined.
pub const TOKEN_KEY: &str = "bootstrap-token";
/// Key of the workload kubeconfig in `<cluster>-kubeconfig`.
const KUBECONFIG_KEY: &str = "value";
/// Bound on every call to the workload cluster, so an unreachable endpoint cannot stall a worker.
pub(super) const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What a generation attempt ends with.
#[derive(Debug)]
pub struct Outcome {
    /// The `Ready` condition.
    pub ready: Observed,
    /// The data Secret's name when it exists.
    pub data_secret_name: Option<String>,
    /// When to look again.
    pub requeue: Option<Duration>,
}

impl Outcome {
    fn not_ready(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ready: Observed::false_(READY_CONDITION, reason, message),
            data_secret_name: None,
            requeue: Some(REQUEUE),
        }
    }
}

/// Stops generation: a condition to report, or an API error.
pub(super) enum Halt {
    Report(Outcome),
    Failed(Error),
}

impl From<Error> for Halt {
    fn from(error: Error) -> Self {
        Halt::Failed(error)
    }
}

type Step<T> = Result<T, Halt>;

fn report<T>(reason: &str, message: impl Into<String>) -> Step<T> {
    Err(Halt::Report(Outcome::not_ready(reason, message)))
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Generates the data Secret of `config` for `machine` of `cluster` (infrastructure provisioned, endpoint
/// set; checked by the caller).
pub async fn generate(
    client: &Client,
    config: &KubeZeroConfig,
    machine: &Machine,
    cluster: &Cluster,
    token_ttl: Duration,
) -> Result<Outcome, Error> {
    match generate_steps(client, config, machine, cluster, token_ttl).await {
        Ok(outcome) => Ok(outcome),
        Err(Halt::Report(outcome)) => Ok(outcome),
        Err(Halt::Failed(error)) => Err(error),
    }
}

async fn generate_steps(
    client: &Client,
    config: &KubeZeroConfig,
    machine: &Machine,
    cluster: &Cluster,
    token_ttl: Duration,
) -> Step<Outcome> {
    let namespace = config.namespace().unwrap_or_default();
    let role = role(client, &namespace, machine, cluster).await?;
    let user_files = user_files(client, &namespace, &config.spec.files).await?;
    let certificates = match role {
        KubeadmRole::Init | KubeadmRole::ControlPlaneJoin => {
            Some(cluster_certificates(client, cluster, role == KubeadmRole::Init).await?)
        }
        KubeadmRole::WorkerJoin => None,
    };
    let pin = match &certificates {
        Some(certificates) => certificates.discovery_pin(),
        None => ca_pin(client, cluster).await?,
    };
    let pin = match pin {
        Ok(pin) => pin,
        Err(error) => return report(reasons::INVALID_CLUSTER_CERTIFICATES, error.to_string()),
    };
    let token = match role {
        KubeadmRole::Init => None,
        _ => Some(join_token(client, cluster, machine, token_ttl).await?),
    };
    let discovery = token.as_ref().map(|token| JoinDiscovery {
        token: token.to_string(),
        ca_cert_hashes: vec![pin],
    });
    let inputs = kubeadm_inputs(cluster, machine, discovery)?;
    let provider_id = provider_id_source(client, cluster).await?;
    let rendered = match render_data(
        &config.spec,
        role,
        &inputs,
        user_files,
        certificates.as_ref(),
        provider_id,
    ) {
        Ok(rendered) => rendered,
        Err(RenderFailure::TooLarge(message)) => {
            return Err(Halt::Report(Outcome {
                requeue: None,
                ..Outcome::not_ready(reasons::BOOTSTRAP_DATA_TOO_LARGE, message)
            }));
        }
        Err(RenderFailure::UnsupportedVersion(message)) => {
            return Err(Halt::Report(Outcome {
                requeue: None,
                ..Outcome::not_ready(reasons::UNSUPPORTED_KUBERNETES_VERSION, message)
            }));
        }
        Err(RenderFailure::Invalid(message)) => {
            return Err(Halt::Report(Outcome {
                requeue: None,
                ..Outcome::not_ready(reasons::INVALID_CONFIGURATION, message)
            }));
        }
    };
    let name = create_data_secret(client, config, cluster, &rendered, token.as_ref()).await?;
    tracing::info!(secret = %name, role = ?role, raw_size = rendered.raw_size, gzipped = rendered.gzipped,
        "bootstrap data Secret created");
    Ok(Outcome {
        ready: Observed::true_(
            READY_CONDITION,
            reasons::DATA_SECRET_AVAILABLE,
            format!("bootstrap data in Secret {name}"),
        ),
        data_secret_name: Some(name),
        requeue: None,
    })
}

/// The machine's kubeadm role (§6): the first control-plane machine under the init lock initialises the
/// cluster; after initialization control-plane machines join the control plane and workers join as nodes.
async fn role(client: &Client, namespace: &str, machine: &Machine, cluster: &Cluster) -> Step<KubeadmRole> {
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
    Ok(match (initialized, is_control_plane) {
        (false, _) => KubeadmRole::Init,
        (true, true) => KubeadmRole::ControlPlaneJoin,
        (true, false) => KubeadmRole::WorkerJoin,
    })
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

/// The user's files with their content resolved (inline, or from a Secret in the config's namespace).
async fn user_files(client: &Client, namespace: &str, files: &[File]) -> Step<Vec<render::FileSpec>> {
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
        let content = match decode_file(file.encoding, raw) {
            Ok(content) => content,
            Err(reason) => {
                return Err(Halt::Report(Outcome {
                    requeue: None,
                    ..Outcome::not_ready(
                        reasons::INVALID_CONFIGURATION,
                        format!("file {}: {reason}", file.path),
                    )
                }));
            }
        };
        let (content, encoding) = match String::from_utf8(content) {
            Ok(text) => (render::FileContent::Text(text), render::FileEncoding::Text),
            Err(bytes) => (
                render::FileContent::Bytes(bytes.into_bytes()),
                render::FileEncoding::Base64,
            ),
        };
        // Content that arrived compressed travels compressed.
        let encoding = match file.encoding {
            Encoding::Gzip | Encoding::GzipBase64 => render::FileEncoding::GzipBase64,
            _ => encoding,
        };
        resolved.push(render::FileSpec {
            path: file.path.clone(),
            content,
            permissions: Some(file.permissions.clone()),
            owner: Some(file.owner.clone()),
            encoding,
            append: file.append,
        });
    }
    Ok(resolved)
}

/// The file's bytes on the node from its content as `encoding` says it is stored.
fn decode_file(encoding: Encoding, raw: Vec<u8>) -> Result<Vec<u8>, String> {
    let base64 = |raw: &[u8]| {
        let text: Vec<u8> = raw.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("content is not base64: {e}"))
    };
    let gunzip = |raw: &[u8]| {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw)
            .read_to_end(&mut out)
            .map_err(|e| format!("content is not gzip: {e}"))?;
        Ok::<_, String>(out)
    };
    match encoding {
        Encoding::Plain => Ok(raw),
        Encoding::Base64 => base64(&raw),
        Encoding::Gzip => gunzip(&raw),
        Encoding::GzipBase64 => gunzip(&base64(&raw)?),
    }
}

/// The four cluster key pairs. `generate_missing` (the init machine): Secrets that do not exist are
/// generated and created, owned by the Cluster; user-supplied ones are used as they are. Control-plane
/// joins only read them.
async fn cluster_certificates(
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
                Err(error) => {
                    return Err(Halt::Report(Outcome::not_ready(
                        reasons::INVALID_CLUSTER_CERTIFICATES,
                        error.to_string(),
                    )));
                }
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
            Err(error) => {
                return Err(Halt::Report(Outcome::not_ready(
                    reasons::INVALID_CLUSTER_CERTIFICATES,
                    error.to_string(),
                )));
            }
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
async fn ca_pin(client: &Client, cluster: &Cluster) -> Step<Result<String, pki::PkiError>> {
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

/// The workload cluster reached with `<cluster>-kubeconfig` (its client kept across reconciles while
/// the kubeconfig stays the same); a `WaitingForWorkloadCluster` report when the Secret is missing or
/// unusable.
pub(super) async fn workload_client(client: &Client, cluster: &Cluster) -> Step<Arc<Workload>> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = format!("{}-kubeconfig", cluster.name_any());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = secrets
        .get_opt(&name)
        .await
        .map_err(Error::read("Secret", &namespace, &name))?;
    let yaml = secret
        .as_ref()
        .and_then(|secret| secret.data.as_ref())
        .and_then(|data| data.get(KUBECONFIG_KEY))
        .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok());
    let Some(yaml) = yaml else {
        return report(
            reasons::WAITING_FOR_WORKLOAD_CLUSTER,
            format!("waiting for the kubeconfig Secret {namespace}/{name}"),
        );
    };
    let build = || async {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).map_err(|e| e.to_string())?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| e.to_string())?;
        Client::try_from(config).map_err(|e| e.to_string())
    };
    let key = format!("{namespace}/{}", cluster.name_any());
    match workload::workload(&key, &yaml, build).await {
        Ok(workload) => Ok(workload),
        Err(error) => report(
            reasons::WAITING_FOR_WORKLOAD_CLUSTER,
            format!("the kubeconfig in Secret {namespace}/{name} is not usable: {error}"),
        ),
    }
}

/// The bootstrap token of the machine's token group in the workload cluster (created or reused), after
/// making sure the join RBAC exists there.
async fn join_token(
    client: &Client,
    cluster: &Cluster,
    machine: &Machine,
    ttl: Duration,
) -> Step<BootstrapToken> {
    let workload = workload_client(client, cluster).await?;
    let cluster_name = cluster.name_any();
    let group = TokenGroup::for_machine(
        &cluster_name,
        &machine.name_any(),
        machine.metadata.labels.as_ref(),
    );
    let unreachable = |error: String| {
        Halt::Report(Outcome::not_ready(
            reasons::WAITING_FOR_WORKLOAD_CLUSTER,
            format!("workload cluster of Cluster {cluster_name} is not reachable: {error}"),
        ))
    };
    let work = async {
        if workload.rbac_due() {
            ensure_join_rbac(&workload.client).await?;
            workload.rbac_ensured();
        }
        // Machines of one MachineSet are configured concurrently: one at a time per group
        // decides whether to reuse or create, so they share one token; the decision is kept for
        // a while, so the rest of a scale-up reuses it without asking the workload cluster.
        let selector = group.label_selector();
        let state = workload.token_group(&selector);
        let mut chosen = state.lock().await;
        let now = Timestamp::now();
        if let Some(known) = chosen.as_ref().filter(|known| known.reusable(now, ttl)) {
            return Ok(known.token.clone());
        }
        let secrets: Api<Secret> = Api::namespaced(workload.client.clone(), TOKEN_NAMESPACE);
        let candidates = secrets
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|error| format!("listing bootstrap tokens: {error}"))?
            .items;
        let (token, expires) = match tokens::choose_group_token(&candidates, now, ttl) {
            TokenChoice::Reuse(token) => {
                let expires = candidates
                    .iter()
                    .find(|secret| secret.metadata.name.as_deref() == Some(token.secret_name().as_str()))
                    .and_then(|secret| tokens::expiration(secret).ok())
                    .unwrap_or(now);
                (token, expires)
            }
            TokenChoice::Create(token) => {
                let secret = tokens::group_token_secret(&token, &group, ttl, now);
                secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .map_err(|error| format!("creating a bootstrap token: {error}"))?;
                tracing::info!(
                    token_id = token.id(),
                    "created a bootstrap token in the workload cluster"
                );
                let expires = now + jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::ZERO);
                (token, expires)
            }
        };
        *chosen = Some(ChosenToken {
            token: token.clone(),
            expires,
            checked: Instant::now(),
        });
        Ok(token)
    };
    match tokio::time::timeout(WORKLOAD_TIMEOUT, work).await {
        Ok(Ok(token)) => Ok(token),
        Ok(Err(error)) => Err(unreachable(error)),
        Err(_) => Err(unreachable(format!("no answer within {WORKLOAD_TIMEOUT:?}"))),
    }
}

/// Creates the TLS-bootstrap ClusterRoleBindings in the workload cluster (those already there are
/// left as they are).
async fn ensure_join_rbac(workload: &Client) -> Result<(), String> {
    let bindings: Api<ClusterRoleBinding> = Api::all(workload.clone());
    for binding in tokens::bootstrap_rbac() {
        match bindings.create(&PostParams::default(), &binding).await {
            Ok(_) => {
                tracing::info!(binding = %binding.name_any(), "created bootstrap RBAC in the workload cluster")
            }
            Err(error) if is_conflict(&error) => {}
            Err(error) => {
                return Err(format!(
                    "creating ClusterRoleBinding {}: {error}",
                    binding.name_any()
                ));
            }
        }
    }
    Ok(())
}

fn kubeadm_inputs(
    cluster: &Cluster,
    machine: &Machine,
    discovery: Option<JoinDiscovery>,
) -> Step<KubeadmInputs> {
    let Some(version) = machine.spec.version.clone().filter(|v| !v.is_empty()) else {
        return Err(Halt::Report(Outcome {
            requeue: None,
            ..Outcome::not_ready(
                reasons::INVALID_CONFIGURATION,
                format!("Machine {} has no spec.version", machine.name_any()),
            )
        }));
    };
    let endpoint = cluster
        .control_plane_endpoint()
        .map(|endpoint| format!("{}:{}", endpoint.host, endpoint.port))
        .unwrap_or_default();
    let network = cluster.spec.cluster_network.clone().unwrap_or_default();
    Ok(KubeadmInputs {
        cluster_name: cluster.name_any(),
        kubernetes_version: version,
        control_plane_endpoint: endpoint,
        pod_cidrs: network.pods.map(|p| p.cidr_blocks).unwrap_or_default(),
        service_cidrs: network.services.map(|s| s.cidr_blocks).unwrap_or_default(),
        service_domain: network.service_domain,
        discovery,
        provider_id: None,
        skip_kube_proxy: cluster
            .labels()
            .get(KUBE_PROXY_REPLACEMENT_LABEL)
            .is_some_and(|value| value == "enabled"),
    })
}

/// How the node finds its provider ID at boot: from the NoCloud meta-data when the Cluster's
/// KubeZeroCluster uses the bare-metal backend (`spec.metal`), else from EC2 IMDSv2 (also for other
/// infrastructure providers on EC2).
async fn provider_id_source(client: &Client, cluster: &Cluster) -> Step<render::ProviderIdSource> {
    let Some(reference) = cluster
        .spec
        .infrastructure_ref
        .as_ref()
        .filter(|reference| reference.refers_to(INFRASTRUCTURE_GROUP, KUBEZERO_CLUSTER_KIND))
    else {
        return Ok(render::ProviderIdSource::Aws);
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
    let metal = infra.is_some_and(|infra| infra.data.pointer("/spec/metal").is_some_and(|m| !m.is_null()));
    Ok(if metal {
        render::ProviderIdSource::NoCloud
    } else {
        render::ProviderIdSource::Aws
    })
}

/// API group of the kubezero infrastructure kinds.
const INFRASTRUCTURE_GROUP: &str = "infrastructure.cluster.x-k8s.io";
/// Served version of the kubezero infrastructure kinds.
const INFRASTRUCTURE_VERSION: &str = "v1alpha1";
/// The kubezero InfraCluster kind.
const KUBEZERO_CLUSTER_KIND: &str = "KubeZeroCluster";

/// Cluster label (set by the cluster templates) saying the CNI replaces kube-proxy, so `kubeadm init`
/// must not install it.
pub const KUBE_PROXY_REPLACEMENT_LABEL: &str = "kubezero.io/kube-proxy-replacement";

/// Why rendering failed.
#[derive(Debug)]
pub enum RenderFailure {
    /// Above the user-data size limit.
    TooLarge(String),
    /// No Alpine release installs the Machine's Kubernetes minor as configured.
    UnsupportedVersion(String),
    /// Any other invalid input; the message names it.
    Invalid(String),
}

/// What a node of `kubernetes_version` installs with `alpine` (release defaulted from the version).
pub fn alpine_selection(
    alpine: &Alpine,
    kubernetes_version: &str,
) -> Result<kubezero_capi::alpine::Selection, kubezero_capi::alpine::VersionError> {
    kubezero_capi::alpine::select(
        alpine.release.as_deref().unwrap_or_default(),
        kubernetes_version,
        !alpine.repositories.is_empty(),
    )
}

/// Renders the user data (pure): kubeadm documents, then the Alpine document with the user's files, the
/// PKI files of control-plane machines and the kubelet patch of joins.
pub fn render_data(
    spec: &KubeZeroConfigSpec,
    role: KubeadmRole,
    inputs: &KubeadmInputs,
    user_files: Vec<render::FileSpec>,
    certificates: Option<&ClusterCertificates>,
    provider_id: render::ProviderIdSource,
) -> Result<render::Rendered, RenderFailure> {
    let kubeadm = render_kubeadm_config(spec, role, inputs)
        .map_err(|e| RenderFailure::Invalid(format!("kubeadm: {e}")))?;
    let selection = alpine_selection(&spec.alpine, &inputs.kubernetes_version)
        .map_err(|e| RenderFailure::UnsupportedVersion(e.to_string()))?;
    let mut files = user_files;
    if let Some(certificates) = certificates {
        files.extend(
            certificates
                .control_plane_files()
                .into_iter()
                .map(|file| render::FileSpec {
                    path: file.path.to_string(),
                    content: render::FileContent::Text(file.content),
                    permissions: Some(file.permissions.to_string()),
                    owner: None,
                    encoding: render::FileEncoding::Text,
                    append: false,
                }),
        );
    }
    if let Some(patch) = kubeadm.kubelet_patch {
        files.push(render::FileSpec {
            path: format!("{KUBEADM_PATCHES_DIR}/{KUBELET_PATCH_FILE}"),
            content: render::FileContent::Text(patch),
            permissions: Some("0644".to_string()),
            owner: None,
            encoding: render::FileEncoding::Text,
            append: false,
        });
    }
    let input = render::RenderInput {
        role: match role {
            KubeadmRole::Init => render::Role::Init,
            KubeadmRole::ControlPlaneJoin => render::Role::ControlPlaneJoin,
            KubeadmRole::WorkerJoin => render::Role::WorkerJoin,
        },
        format: match spec.format {
            Format::AlpineConfig => render::Format::AlpineConfig,
            Format::CloudConfig => render::Format::CloudConfig,
        },
        kubernetes_version: inputs.kubernetes_version.clone(),
        alpine: render::AlpineSettings {
            release: selection.release,
            cri_o_minor: selection.cri_o_minor,
            mirror: spec.alpine.mirror.clone(),
            extra_repositories: spec.alpine.repositories.clone(),
            repository_keys: spec
                .alpine
                .repository_keys
                .iter()
                .map(|key| (key.name.clone(), key.key.clone()))
                .collect(),
        },
        kubeadm_config: kubeadm.config,
        files,
        users: spec
            .users
            .iter()
            .map(|user| render::UserSpec {
                name: user.name.clone(),
                ssh_authorized_keys: user.ssh_authorized_keys.clone(),
                sudo: user.sudo.clone(),
                groups: user.groups.clone(),
                shell: user.shell.clone(),
            })
            .collect(),
        ntp_servers: spec
            .ntp
            .as_ref()
            .filter(|ntp| ntp.enabled)
            .map(|ntp| ntp.servers.clone())
            .unwrap_or_default(),
        pre_kubeadm_commands: spec.pre_kubeadm_commands.clone(),
        post_kubeadm_commands: spec.post_kubeadm_commands.clone(),
        sysctls: spec.sysctls.clone(),
        provider_id,
    };
    render::render(&input).map_err(|error| match error {
        RenderError::TooLarge { .. } => RenderFailure::TooLarge(error.to_string()),
        other => RenderFailure::Invalid(other.to_string()),
    })
}

/// The data Secret of `config` (contract §4): name = config name, `type: cluster.x-k8s.io/secret`, keys
/// `value` and `format` (and [`TOKEN_KEY`] for joins), cluster-name label, controller owner reference to
/// the config.
pub fn data_secret(
    config: &KubeZeroConfig,
    cluster: &str,
    rendered: &render::Rendered,
    token: Option<&BootstrapToken>,
) -> Secret {
    let mut data = BTreeMap::from([
        (VALUE_KEY.to_string(), ByteString(rendered.value.clone())),
        (
            FORMAT_KEY.to_string(),
            ByteString(rendered.format.as_str().as_bytes().to_vec()),
        ),
    ]);
    if let Some(token) = token {
        data.insert(TOKEN_KEY.to_string(), ByteString(token.to_string().into_bytes()));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(config.name_any()),
            namespace: config.namespace(),
            labels: Some(BTreeMap::from([(
                kubezero_capi::contract::CLUSTER_NAME_LABEL.to_string(),
                cluster.to_string(),
            )])),
            owner_references: config.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some(CLUSTER_SECRET_TYPE.to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The raw user-data document of a data Secret's `value` (gunzipped when gzipped); for tests and
/// debugging tools.
pub fn decode_value(value: &[u8]) -> std::io::Result<Vec<u8>> {
    if value.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(value).read_to_end(&mut out)?;
        Ok(out)
    } else {
        Ok(value.to_vec())
    }
}

async fn create_data_secret(
    client: &Client,
    config: &KubeZeroConfig,
    cluster: &Cluster,
    rendered: &render::Rendered,
    token: Option<&BootstrapToken>,
) -> Step<String> {
    let namespace = config.namespace().unwrap_or_default();
    let name = config.name_any();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = data_secret(config, &cluster.name_any(), rendered, token);
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(name),
        // Already written by an earlier reconcile whose status write was lost: keep it, never rename.
        Err(error) if is_conflict(&error) => Ok(name),
        Err(error) => Err(Error::write("create", "Secret", &namespace, &name)(error).into()),
    }
}
