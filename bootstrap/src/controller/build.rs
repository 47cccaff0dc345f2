//! The pure half of generating a config's bootstrap data: from what was read from the API
//! ([`BuildInputs`]) to the data Secret, without a client. The kubeadm role from the Cluster and the
//! Machine, the user's files decoded, the kubeadm inputs from the Cluster and the Machine, the
//! kube-vip settings of bare-metal control planes ([`kube_vip`]), the rendered user data, and the
//! data Secret of contract §4.
//!
//! Every failure is a [`BuildError`] whose [`BuildError::reason`] is the `Ready` reason the user
//! sees; none is retried until the input changes.

use std::collections::BTreeMap;
use std::io::Read as _;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use kubezero_capi::alpine::{Selection, VersionError};
use kubezero_capi::contract::{DATA_SECRET_FORMAT_KEY, DATA_SECRET_VALUE_KEY};
use kubezero_capi::core::{Cluster, Machine};
use serde::Deserialize;

use super::reasons;
use crate::api::{Alpine, Encoding, File, Format, KubeZeroConfig, KubeZeroConfigSpec};
use crate::pki::{CLUSTER_SECRET_TYPE, ClusterCertificates};
use crate::render::kubeadm::{
    JoinDiscovery, KUBEADM_PATCHES_DIR, KUBELET_PATCH_FILE, KubeadmError, KubeadmInputs, KubeadmRole,
    render_kubeadm_config,
};
use crate::render::{self, RenderError};
use crate::tokens::BootstrapToken;

/// Key of a join's data Secret holding the bootstrap token its user data carries, so the token can be
/// refreshed, or re-created in the workload cluster, while the Machine has not joined.
pub const TOKEN_KEY: &str = "bootstrap-token";

/// Cluster label (set by the cluster templates) saying the CNI replaces kube-proxy, so `kubeadm init`
/// must not install it.
pub const KUBE_PROXY_REPLACEMENT_LABEL: &str = "kubezero.io/kube-proxy-replacement";

/// Why the bootstrap data cannot be built from the configuration as it is.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Machine has no Kubernetes version.
    #[error("Machine {machine} has no spec.version")]
    MissingVersion {
        /// Name of the Machine.
        machine: String,
    },
    /// A file's content is not encoded as its `encoding` says.
    #[error("file {path}: {reason}")]
    FileContent {
        /// Path of the file on the node.
        path: String,
        /// What is wrong with the content.
        reason: String,
    },
    /// The kubeadm documents cannot be built.
    #[error("kubeadm: {0}")]
    Kubeadm(#[source] KubeadmError),
    /// No Alpine release installs the Machine's Kubernetes minor as configured.
    #[error(transparent)]
    UnsupportedVersion(VersionError),
    /// The user data cannot be rendered, or is above the size limit.
    #[error(transparent)]
    Render(RenderError),
    /// The control-plane endpoint's port is not a TCP port kube-vip can serve the VIP on.
    #[error("control-plane endpoint port {0} is not a TCP port")]
    InvalidEndpointPort(i32),
    /// The API server of a bare-metal control plane would not listen on the VIP's port (kube-vip only
    /// moves the address, so both must be equal).
    #[error(
        "localAPIEndpoint.bindPort {bind_port} differs from the control-plane endpoint port \
         {endpoint_port}: on bare metal the API server must listen on the VIP's port"
    )]
    VipPortMismatch {
        /// The API server's bind port (6443 when unset).
        bind_port: i32,
        /// The port of the Cluster's control-plane endpoint.
        endpoint_port: i32,
    },
}

impl BuildError {
    /// The reason of the `Ready=False` condition reporting this error.
    pub fn reason(&self) -> &'static str {
        match self {
            BuildError::UnsupportedVersion(_) => reasons::UNSUPPORTED_KUBERNETES_VERSION,
            BuildError::Render(RenderError::TooLarge { .. }) => reasons::BOOTSTRAP_DATA_TOO_LARGE,
            BuildError::MissingVersion { .. }
            | BuildError::FileContent { .. }
            | BuildError::Kubeadm(_)
            | BuildError::Render(_)
            | BuildError::InvalidEndpointPort(_)
            | BuildError::VipPortMismatch { .. } => reasons::INVALID_CONFIGURATION,
        }
    }
}

/// The machine's kubeadm role (contract §6) once the init lock allows it: before the control plane
/// is initialized a control-plane machine initialises it; after, control-plane machines join the
/// control plane and workers join as nodes. (A worker before initialization waits; the caller
/// reports that before asking.)
pub fn role_for(control_plane_initialized: bool, is_control_plane: bool) -> KubeadmRole {
    match (control_plane_initialized, is_control_plane) {
        (false, _) => KubeadmRole::Init,
        (true, true) => KubeadmRole::ControlPlaneJoin,
        (true, false) => KubeadmRole::WorkerJoin,
    }
}

/// The node file of `file` whose stored content is `raw` (inline, or read from its Secret): decoded
/// as its `encoding` says, text when it is UTF-8, and compressed again in the user data when it
/// arrived compressed.
pub fn resolve_file(file: &File, raw: Vec<u8>) -> Result<render::FileSpec, BuildError> {
    let content = decode_file(file.encoding, raw).map_err(|reason| BuildError::FileContent {
        path: file.path.clone(),
        reason,
    })?;
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
    Ok(render::FileSpec {
        path: file.path.clone(),
        content,
        permissions: Some(file.permissions.clone()),
        owner: Some(file.owner.clone()),
        encoding,
        append: file.append,
    })
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

/// What the kubeadm documents need from the Cluster and the Machine: name, the Machine's version,
/// the control-plane endpoint as `host:port`, the Cluster's networks, the join discovery and whether
/// the CNI replaces kube-proxy ([`KUBE_PROXY_REPLACEMENT_LABEL`] = `enabled`).
pub fn kubeadm_inputs(
    cluster: &Cluster,
    machine: &Machine,
    discovery: Option<JoinDiscovery>,
) -> Result<KubeadmInputs, BuildError> {
    let Some(version) = machine.spec.version.clone().filter(|v| !v.is_empty()) else {
        return Err(BuildError::MissingVersion {
            machine: machine.name_any(),
        });
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

/// `spec.metal` of the Cluster's KubeZeroCluster, as far as the bootstrap data needs it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetalCluster {
    /// The control-plane VIP (IPv4).
    pub control_plane_vip: String,
    /// Interface that carries the VIP; unset: the interface of the default route.
    #[serde(default)]
    pub vip_interface: Option<String>,
}

/// The backend of the Cluster's infrastructure, as far as the bootstrap data needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platform {
    /// EC2 (a KubeZeroCluster without `spec.metal`, or another infrastructure provider).
    Aws,
    /// Bare metal (a KubeZeroCluster with `spec.metal`).
    Metal(MetalCluster),
}

impl Platform {
    /// Where the node finds its provider ID: NoCloud meta-data on bare metal, EC2 IMDSv2 otherwise.
    pub fn provider_id_source(&self) -> render::ProviderIdSource {
        match self {
            Platform::Aws => render::ProviderIdSource::Aws,
            Platform::Metal(_) => render::ProviderIdSource::NoCloud,
        }
    }
}

/// The API server port kubeadm binds when the config sets none.
const DEFAULT_BIND_PORT: i32 = 6443;

/// The kube-vip static pod settings of a machine in `role`: on control-plane machines (init and
/// control-plane join) of bare-metal clusters, the cluster's VIP on the control-plane endpoint's port
/// with `image`; `None` for workers and other platforms. The API server must listen on that port
/// ([`BuildError::VipPortMismatch`]).
pub fn kube_vip(
    platform: &Platform,
    role: KubeadmRole,
    spec: &KubeZeroConfigSpec,
    cluster: &Cluster,
    image: &str,
) -> Result<Option<render::KubeVip>, BuildError> {
    let Platform::Metal(metal) = platform else {
        return Ok(None);
    };
    let bind_port = match role {
        KubeadmRole::WorkerJoin => return Ok(None),
        KubeadmRole::Init => spec
            .init_configuration
            .as_ref()
            .and_then(|init| init.local_api_endpoint.as_ref()),
        KubeadmRole::ControlPlaneJoin => spec
            .join_configuration
            .as_ref()
            .and_then(|join| join.control_plane.as_ref())
            .and_then(|control_plane| control_plane.local_api_endpoint.as_ref()),
    }
    .and_then(|endpoint| endpoint.bind_port)
    .unwrap_or(DEFAULT_BIND_PORT);
    let endpoint_port = cluster
        .control_plane_endpoint()
        .map_or(DEFAULT_BIND_PORT, |endpoint| endpoint.port);
    let port = u16::try_from(endpoint_port)
        .ok()
        .filter(|port| *port > 0)
        .ok_or(BuildError::InvalidEndpointPort(endpoint_port))?;
    if bind_port != endpoint_port {
        return Err(BuildError::VipPortMismatch {
            bind_port,
            endpoint_port,
        });
    }
    Ok(Some(render::KubeVip {
        address: metal.control_plane_vip.clone(),
        interface: metal.vip_interface.clone(),
        port,
        image: image.to_string(),
    }))
}

/// What a node of `kubernetes_version` installs with `alpine` (release defaulted from the version).
pub fn alpine_selection(alpine: &Alpine, kubernetes_version: &str) -> Result<Selection, VersionError> {
    kubezero_capi::alpine::select(
        alpine.release.as_deref().unwrap_or_default(),
        kubernetes_version,
        !alpine.repositories.is_empty(),
    )
}

/// Renders the user data: kubeadm documents, then the Alpine document with the user's files, the
/// PKI files of control-plane machines, the kubelet patch of joins and the kube-vip static pod of
/// bare-metal control planes ([`kube_vip`]).
pub fn render_data(
    spec: &KubeZeroConfigSpec,
    role: KubeadmRole,
    inputs: &KubeadmInputs,
    user_files: Vec<render::FileSpec>,
    certificates: Option<&ClusterCertificates>,
    provider_id: render::ProviderIdSource,
    kube_vip: Option<render::KubeVip>,
) -> Result<render::Rendered, BuildError> {
    let kubeadm = render_kubeadm_config(spec, role, inputs).map_err(BuildError::Kubeadm)?;
    let selection =
        alpine_selection(&spec.alpine, &inputs.kubernetes_version).map_err(BuildError::UnsupportedVersion)?;
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
        kube_vip,
    };
    render::render(&input).map_err(BuildError::Render)
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
        (
            DATA_SECRET_VALUE_KEY.to_string(),
            ByteString(rendered.value.clone()),
        ),
        (
            DATA_SECRET_FORMAT_KEY.to_string(),
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

/// Everything the build needs, as dereferenced from the API for one config.
pub struct BuildInputs<'a> {
    /// The config.
    pub config: &'a KubeZeroConfig,
    /// Its owner Machine.
    pub machine: &'a Machine,
    /// The Machine's Cluster.
    pub cluster: &'a Cluster,
    /// The kubeadm role ([`role_for`]).
    pub role: KubeadmRole,
    /// The user's files, resolved ([`resolve_file`]).
    pub user_files: Vec<render::FileSpec>,
    /// The cluster key pairs (control-plane machines only).
    pub certificates: Option<&'a ClusterCertificates>,
    /// The kubeadm discovery pin of the cluster CA.
    pub ca_pin: String,
    /// The join token (joins only).
    pub token: Option<&'a BootstrapToken>,
    /// The backend of the Cluster's infrastructure.
    pub platform: &'a Platform,
    /// The kube-vip image of bare-metal control planes (`--kube-vip-image`).
    pub kube_vip_image: &'a str,
}

/// The data Secret built, with what is logged about it.
#[derive(Debug)]
pub struct Built {
    /// The data Secret to create.
    pub secret: Secret,
    /// Size of the document before gzip.
    pub raw_size: usize,
    /// Whether the stored value is gzipped.
    pub gzipped: bool,
}

/// Builds the data Secret from `inputs`: kubeadm inputs, rendering, the Secret.
pub fn build(inputs: BuildInputs<'_>) -> Result<Built, BuildError> {
    let discovery = inputs.token.map(|token| JoinDiscovery {
        token: token.to_string(),
        ca_cert_hashes: vec![inputs.ca_pin.clone()],
    });
    let kubeadm = kubeadm_inputs(inputs.cluster, inputs.machine, discovery)?;
    let kube_vip = kube_vip(
        inputs.platform,
        inputs.role,
        &inputs.config.spec,
        inputs.cluster,
        inputs.kube_vip_image,
    )?;
    let rendered = render_data(
        &inputs.config.spec,
        inputs.role,
        &kubeadm,
        inputs.user_files,
        inputs.certificates,
        inputs.platform.provider_id_source(),
        kube_vip,
    )?;
    let secret = data_secret(inputs.config, &inputs.cluster.name_any(), &rendered, inputs.token);
    Ok(Built {
        secret,
        raw_size: rendered.raw_size,
        gzipped: rendered.gzipped,
    })
}

#[cfg(test)]
mod tests;
