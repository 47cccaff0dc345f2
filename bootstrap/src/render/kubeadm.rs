//! KubeZero defaults and the kubeadm documents built from a `KubeZeroConfigSpec` for one node role.
//!
//! Pure functions: the controller passes what it knows ([`KubeadmInputs`]) and gets deterministic YAML.
//!
//! **Provider ID.** The controller does not know the instance ID when it renders the bootstrap data, so
//! unless [`KubeadmInputs::provider_id`] is given the kubelet flag `provider-id` carries
//! [`PROVIDER_ID_PLACEHOLDER`]. The boot script discovers the ID (AWS IMDSv2 `aws:///<az>/<id>`, NoCloud
//! `instance-id` on metal) and replaces the placeholder in the kubeadm config file before running
//! `kubeadm init|join`; kubeadm then writes `--provider-id=<id>` to `/var/lib/kubelet/kubeadm-flags.env`.
//!
//! **Kubelet settings on joins.** `kubeadm join` ignores a `KubeletConfiguration` document (joining kubelets
//! read the cluster-wide `kubelet-config` ConfigMap written at init), so for joins the effective kubelet
//! configuration is returned as a kubeadm patch ([`RenderedKubeadm::kubelet_patch`]), to be written to
//! [`KUBEADM_PATCHES_DIR`]/[`KUBELET_PATCH_FILE`], and the `JoinConfiguration` points `patches.directory`
//! at that directory.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::api::KubeZeroConfigSpec;
use crate::api::kubeadm::{
    ApiEndpoint, ApiServer, Arg, CgroupDriver, ControlPlaneComponent, Etcd, JoinControlPlane,
    KubeletConfiguration, Networking, NodeRegistration, Taint, TaintEffect,
};

/// API version of the kubeadm documents.
pub const KUBEADM_API_VERSION: &str = "kubeadm.k8s.io/v1beta4";
/// API version of the `KubeletConfiguration` document.
pub const KUBELET_API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// KubeZero default CRI socket (cri-o).
pub const CRIO_SOCKET: &str = "unix:///var/run/crio/crio.sock";
/// Directory of the kubeadm patches on the node (`JoinConfiguration.patches.directory`).
pub const KUBEADM_PATCHES_DIR: &str = "/etc/kubernetes/kubezero/patches";
/// File name of the kubelet configuration patch in [`KUBEADM_PATCHES_DIR`] (target `kubeletconfiguration`,
/// JSON merge patch).
pub const KUBELET_PATCH_FILE: &str = "kubeletconfiguration+merge.yaml";
/// Value of the kubelet flag `provider-id` that the boot script replaces with the discovered provider ID.
pub const PROVIDER_ID_PLACEHOLDER: &str = "__KUBEZERO_PROVIDER_ID__";
/// Taint Cluster API removes from a node once it has synced the Machine's labels to it.
pub const UNINITIALIZED_TAINT_KEY: &str = "node.cluster.x-k8s.io/uninitialized";

/// KubeZero default `systemReserved` and `kubeReserved`: `cpu: 50m`, `memory: 128Mi` each.
const DEFAULT_RESERVED: [(&str, &str); 2] = [("cpu", "50m"), ("memory", "128Mi")];
/// KubeZero default number of parallel image pulls.
const DEFAULT_MAX_PARALLEL_IMAGE_PULLS: i32 = 4;

/// Role of the node the kubeadm documents are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubeadmRole {
    /// First control-plane node: `kubeadm init`.
    Init,
    /// Further control-plane node: `kubeadm join` with `controlPlane`.
    ControlPlaneJoin,
    /// Worker node: `kubeadm join`.
    WorkerJoin,
}

impl KubeadmRole {
    fn is_join(self) -> bool {
        self != KubeadmRole::Init
    }
}

/// Bootstrap-token discovery of a joining node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinDiscovery {
    /// Bootstrap token `<id>.<secret>` (`[a-z0-9]{6}.[a-z0-9]{16}`).
    pub token: String,
    /// CA pinning hashes `sha256:<hex>` of the cluster CA's public key; at least one.
    pub ca_cert_hashes: Vec<String>,
}

/// What the controller knows about the cluster when it builds the kubeadm documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeadmInputs {
    /// Name of the Cluster (`ClusterConfiguration.clusterName`).
    pub cluster_name: String,
    /// Kubernetes version of the Machine, e.g. `v1.33.2` (a missing `v` is added).
    pub kubernetes_version: String,
    /// Control-plane endpoint `host:port` (the Cluster's `spec.controlPlaneEndpoint`).
    pub control_plane_endpoint: String,
    /// Pod CIDRs of the Cluster (`spec.clusterNetwork.pods.cidrBlocks`); used when the spec sets no `podSubnet`.
    pub pod_cidrs: Vec<String>,
    /// Service CIDRs of the Cluster; used when the spec sets no `serviceSubnet`.
    pub service_cidrs: Vec<String>,
    /// Service DNS domain of the Cluster; used when the spec sets no `dnsDomain`.
    pub service_domain: Option<String>,
    /// Join discovery; required for the join roles, ignored for `Init`.
    pub discovery: Option<JoinDiscovery>,
    /// Provider ID when already known; otherwise [`PROVIDER_ID_PLACEHOLDER`] is rendered.
    pub provider_id: Option<String>,
    /// The CNI replaces kube-proxy (Cilium with kube-proxy replacement): `kubeadm init` skips its
    /// `addon/kube-proxy` phase.
    pub skip_kube_proxy: bool,
}

/// The kubeadm phase that installs kube-proxy.
pub const KUBE_PROXY_PHASE: &str = "addon/kube-proxy";

/// The kubeadm configuration of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedKubeadm {
    /// Multi-document YAML passed to `kubeadm init|join --config`.
    pub config: String,
    /// For joins: the kubelet configuration patch, written to [`KUBEADM_PATCHES_DIR`]/[`KUBELET_PATCH_FILE`].
    pub kubelet_patch: Option<String>,
}

/// Why the kubeadm documents could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KubeadmError {
    /// A join role without discovery data.
    #[error("a join needs a bootstrap token and CA certificate hashes")]
    MissingDiscovery,
    /// The bootstrap token is not `[a-z0-9]{6}.[a-z0-9]{16}`.
    #[error("bootstrap token is not of the form [a-z0-9]{{6}}.[a-z0-9]{{16}}")]
    InvalidToken,
    /// No CA hash, or one not of the form `sha256:<64 hex>`.
    #[error("CA certificate hashes must be one or more sha256:<64 hex digits>, got {0:?}")]
    InvalidCaCertHashes(Vec<String>),
    /// The control-plane endpoint is not `host:port`.
    #[error("control-plane endpoint {0:?} is not host:port")]
    InvalidEndpoint(String),
    /// The Kubernetes version is not `v<major>.<minor>.<patch>`.
    #[error("Kubernetes version {0:?} is not v<major>.<minor>.<patch>")]
    InvalidVersion(String),
    /// YAML serialization failed.
    #[error("rendering kubeadm YAML: {0}")]
    Yaml(String),
}

/// The KubeZero kubelet defaults: cri-o endpoint, `cgroupfs` driver (OpenRC), `systemReserved` and
/// `kubeReserved` of `cpu: 50m, memory: 128Mi` each, parallel image pulls (`serializeImagePulls: false`,
/// `maxParallelImagePulls: 4`).
pub fn default_kubelet_configuration() -> KubeletConfiguration {
    let reserved: BTreeMap<String, String> = DEFAULT_RESERVED
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    KubeletConfiguration {
        max_pods: None,
        system_reserved: reserved.clone(),
        kube_reserved: reserved,
        eviction_hard: BTreeMap::new(),
        serialize_image_pulls: Some(false),
        max_parallel_image_pulls: Some(DEFAULT_MAX_PARALLEL_IMAGE_PULLS),
        cgroup_driver: Some(CgroupDriver::Cgroupfs),
        container_runtime_endpoint: Some(CRIO_SOCKET.to_owned()),
    }
}

/// The kubelet configuration of a node: the spec's `kubeletConfiguration` over the KubeZero defaults.
/// A set field wins; a non-empty map replaces the default map. When the user serializes image pulls,
/// the default `maxParallelImagePulls` is dropped (the kubelet requires 1 or unset then).
pub fn effective_kubelet_configuration(spec: &KubeZeroConfigSpec) -> KubeletConfiguration {
    let mut config = default_kubelet_configuration();
    let Some(user) = &spec.kubelet_configuration else {
        return config;
    };
    let pick_map = |user: &BTreeMap<String, String>, default: &mut BTreeMap<String, String>| {
        if !user.is_empty() {
            default.clone_from(user);
        }
    };
    config.max_pods = user.max_pods.or(config.max_pods);
    pick_map(&user.system_reserved, &mut config.system_reserved);
    pick_map(&user.kube_reserved, &mut config.kube_reserved);
    pick_map(&user.eviction_hard, &mut config.eviction_hard);
    if let Some(serialize) = user.serialize_image_pulls {
        config.serialize_image_pulls = Some(serialize);
        if serialize {
            config.max_parallel_image_pulls = None;
        }
    }
    config.max_parallel_image_pulls = user.max_parallel_image_pulls.or(config.max_parallel_image_pulls);
    config.cgroup_driver = user.cgroup_driver.or(config.cgroup_driver);
    if let Some(endpoint) = &user.container_runtime_endpoint {
        config.container_runtime_endpoint = Some(endpoint.clone());
    }
    config
}

/// The node registration of a node in `role`: the spec's `initConfiguration.nodeRegistration` (init) or
/// `joinConfiguration.nodeRegistration` (joins), with
/// - `criSocket` defaulting to the kubelet's `containerRuntimeEndpoint` (cri-o by default),
/// - `spec.nodeLabels` merged into the `node-labels` kubelet flag (after any labels the flag already has),
/// - on worker joins, the taint `node.cluster.x-k8s.io/uninitialized:NoSchedule` added.
///
/// The `provider-id` flag is not added here (see [`render_kubeadm_config`]).
pub fn effective_node_registration(spec: &KubeZeroConfigSpec, role: KubeadmRole) -> NodeRegistration {
    let source = match role {
        KubeadmRole::Init => spec
            .init_configuration
            .as_ref()
            .and_then(|c| c.node_registration.as_ref()),
        KubeadmRole::ControlPlaneJoin | KubeadmRole::WorkerJoin => spec
            .join_configuration
            .as_ref()
            .and_then(|c| c.node_registration.as_ref()),
    };
    let mut registration = source.cloned().unwrap_or_default();
    if registration.cri_socket.is_none() {
        registration.cri_socket = effective_kubelet_configuration(spec).container_runtime_endpoint;
    }
    if !spec.node_labels.is_empty() {
        let labels = spec
            .node_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        match registration
            .kubelet_extra_args
            .iter_mut()
            .find(|a| a.name == "node-labels")
        {
            Some(arg) if !arg.value.is_empty() => arg.value = format!("{},{labels}", arg.value),
            Some(arg) => arg.value = labels,
            None => registration
                .kubelet_extra_args
                .push(Arg::new("node-labels", labels)),
        }
    }
    if role == KubeadmRole::WorkerJoin {
        let taints = registration.taints.get_or_insert_with(Vec::new);
        if !taints
            .iter()
            .any(|t| t.key == UNINITIALIZED_TAINT_KEY && t.effect == TaintEffect::NoSchedule)
        {
            taints.push(Taint {
                key: UNINITIALIZED_TAINT_KEY.to_owned(),
                value: None,
                effect: TaintEffect::NoSchedule,
            });
        }
    }
    registration
}

/// Builds the kubeadm configuration of a node in `role`:
/// - `Init`: `InitConfiguration`, `ClusterConfiguration` and `KubeletConfiguration` documents;
/// - `ControlPlaneJoin`, `WorkerJoin`: a `JoinConfiguration` document, plus the kubelet patch.
///
/// The kubelet flag `provider-id` is set to [`KubeadmInputs::provider_id`] or [`PROVIDER_ID_PLACEHOLDER`],
/// replacing any user value. Output is deterministic (fixed field order, sorted maps).
pub fn render_kubeadm_config(
    spec: &KubeZeroConfigSpec,
    role: KubeadmRole,
    inputs: &KubeadmInputs,
) -> Result<RenderedKubeadm, KubeadmError> {
    check_endpoint(&inputs.control_plane_endpoint)?;
    let version = normalized_version(&inputs.kubernetes_version)?;
    let mut registration = effective_node_registration(spec, role);
    let provider_id = inputs.provider_id.as_deref().unwrap_or(PROVIDER_ID_PLACEHOLDER);
    registration
        .kubelet_extra_args
        .retain(|a| a.name != "provider-id");
    registration
        .kubelet_extra_args
        .push(Arg::new("provider-id", provider_id));
    let kubelet = KubeletDoc {
        api_version: KUBELET_API_VERSION,
        kind: "KubeletConfiguration",
        config: effective_kubelet_configuration(spec),
    };

    if !role.is_join() {
        let mut init = spec.init_configuration.clone().unwrap_or_default();
        if inputs.skip_kube_proxy && !init.skip_phases.iter().any(|phase| phase == KUBE_PROXY_PHASE) {
            init.skip_phases.push(KUBE_PROXY_PHASE.to_string());
        }
        let cluster = spec.cluster_configuration.clone().unwrap_or_default();
        let networking = effective_networking(cluster.networking.unwrap_or_default(), inputs);
        let docs = [
            yaml(&InitDoc {
                api_version: KUBEADM_API_VERSION,
                kind: "InitConfiguration",
                local_api_endpoint: init.local_api_endpoint,
                node_registration: registration,
                skip_phases: init.skip_phases,
            })?,
            yaml(&ClusterDoc {
                api_version: KUBEADM_API_VERSION,
                kind: "ClusterConfiguration",
                cluster_name: inputs.cluster_name.clone(),
                kubernetes_version: version,
                control_plane_endpoint: inputs.control_plane_endpoint.clone(),
                networking,
                api_server: cluster.api_server,
                controller_manager: cluster.controller_manager,
                scheduler: cluster.scheduler,
                etcd: cluster.etcd,
                image_repository: cluster.image_repository,
                feature_gates: cluster.feature_gates,
            })?,
            yaml(&kubelet)?,
        ];
        return Ok(RenderedKubeadm {
            config: docs.join("---\n"),
            kubelet_patch: None,
        });
    }

    let discovery = inputs.discovery.as_ref().ok_or(KubeadmError::MissingDiscovery)?;
    check_discovery(discovery)?;
    let join = spec.join_configuration.clone().unwrap_or_default();
    let control_plane = match role {
        KubeadmRole::ControlPlaneJoin => Some(join.control_plane.unwrap_or_default()),
        _ => None,
    };
    let config = yaml(&JoinDoc {
        api_version: KUBEADM_API_VERSION,
        kind: "JoinConfiguration",
        discovery: Discovery {
            bootstrap_token: BootstrapTokenDiscovery {
                api_server_endpoint: inputs.control_plane_endpoint.clone(),
                token: discovery.token.clone(),
                ca_cert_hashes: discovery.ca_cert_hashes.clone(),
            },
        },
        control_plane,
        node_registration: registration,
        patches: Patches {
            directory: KUBEADM_PATCHES_DIR,
        },
        skip_phases: join.skip_phases,
    })?;
    Ok(RenderedKubeadm {
        config,
        kubelet_patch: Some(yaml(&kubelet)?),
    })
}

/// The spec's networking with unset fields taken from the Cluster.
fn effective_networking(mut networking: Networking, inputs: &KubeadmInputs) -> Networking {
    let joined = |cidrs: &[String]| (!cidrs.is_empty()).then(|| cidrs.join(","));
    if networking.dns_domain.is_none() {
        networking.dns_domain.clone_from(&inputs.service_domain);
    }
    if networking.pod_subnet.is_none() {
        networking.pod_subnet = joined(&inputs.pod_cidrs);
    }
    if networking.service_subnet.is_none() {
        networking.service_subnet = joined(&inputs.service_cidrs);
    }
    networking
}

fn check_endpoint(endpoint: &str) -> Result<(), KubeadmError> {
    let bad = || KubeadmError::InvalidEndpoint(endpoint.to_owned());
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'));
    if port_ok && host_ok { Ok(()) } else { Err(bad()) }
}

fn normalized_version(version: &str) -> Result<String, KubeadmError> {
    let bare = version.strip_prefix('v').unwrap_or(version);
    let core = bare.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if parts.len() == 3 && parts.iter().all(numeric) {
        Ok(format!("v{bare}"))
    } else {
        Err(KubeadmError::InvalidVersion(version.to_owned()))
    }
}

fn check_discovery(discovery: &JoinDiscovery) -> Result<(), KubeadmError> {
    let lower_alnum = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    match discovery.token.split_once('.') {
        Some((id, secret)) if lower_alnum(id, 6) && lower_alnum(secret, 16) => {}
        _ => return Err(KubeadmError::InvalidToken),
    }
    let hash_ok = |h: &String| {
        h.strip_prefix("sha256:")
            .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    if discovery.ca_cert_hashes.is_empty() || !discovery.ca_cert_hashes.iter().all(hash_ok) {
        return Err(KubeadmError::InvalidCaCertHashes(
            discovery.ca_cert_hashes.clone(),
        ));
    }
    Ok(())
}

/// One YAML document; long strings stay plain one-line scalars (no folding), so the boot script can
/// substitute [`PROVIDER_ID_PLACEHOLDER`] in place.
fn yaml<T: Serialize>(doc: &T) -> Result<String, KubeadmError> {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    serde_saphyr::to_string_with_options(doc, options).map_err(|e| KubeadmError::Yaml(e.to_string()))
}

/// kubeadm `InitConfiguration` document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitDoc {
    api_version: &'static str,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none", rename = "localAPIEndpoint")]
    local_api_endpoint: Option<ApiEndpoint>,
    node_registration: NodeRegistration,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skip_phases: Vec<String>,
}

/// kubeadm `ClusterConfiguration` document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterDoc {
    api_version: &'static str,
    kind: &'static str,
    cluster_name: String,
    kubernetes_version: String,
    control_plane_endpoint: String,
    networking: Networking,
    #[serde(skip_serializing_if = "Option::is_none", rename = "apiServer")]
    api_server: Option<ApiServer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    controller_manager: Option<ControlPlaneComponent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduler: Option<ControlPlaneComponent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etcd: Option<Etcd>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_repository: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    feature_gates: BTreeMap<String, bool>,
}

/// kubeadm `JoinConfiguration` document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinDoc {
    api_version: &'static str,
    kind: &'static str,
    discovery: Discovery,
    #[serde(skip_serializing_if = "Option::is_none")]
    control_plane: Option<JoinControlPlane>,
    node_registration: NodeRegistration,
    patches: Patches,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skip_phases: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Discovery {
    bootstrap_token: BootstrapTokenDiscovery,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BootstrapTokenDiscovery {
    #[serde(rename = "apiServerEndpoint")]
    api_server_endpoint: String,
    token: String,
    ca_cert_hashes: Vec<String>,
}

#[derive(Serialize)]
struct Patches {
    directory: &'static str,
}

/// kubelet `KubeletConfiguration` document (also the join patch).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletDoc {
    api_version: &'static str,
    kind: &'static str,
    #[serde(flatten)]
    config: KubeletConfiguration,
}

#[cfg(test)]
mod tests;
