//! `KubeZeroConfig` and `KubeZeroConfigTemplate` (`bootstrap.cluster.x-k8s.io/v1alpha1`).
//!
//! Validation lives in the schema (patterns, enums, bounds) and in CEL rules, so the API server refuses a
//! bad manifest at apply time with a message naming the field (design §2).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use kubezero_capi::conditions::Condition;
use kubezero_capi::contract::{BootstrapInitialization, ObjectMeta};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::kubeadm::{
    ClusterConfiguration, InitConfiguration, JoinConfiguration, KubeletConfiguration,
    NODE_LABELS_NAMESPACE_RULE, NODE_LABELS_SYNTAX_RULE,
};

/// Default Alpine release installed packages come from.
pub const DEFAULT_ALPINE_RELEASE: &str = "3.22";
/// Default mode of a written file.
pub const DEFAULT_FILE_PERMISSIONS: &str = "0644";
/// Default owner of a written file.
pub const DEFAULT_FILE_OWNER: &str = "root:root";

/// Bootstrap data of one Machine: kubeadm settings, files, users, NTP, commands and sysctls rendered as Alpine
/// user data.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "bootstrap.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "KubeZeroConfig",
    doc = "Bootstrap configuration of one Machine, rendered into its bootstrap data Secret.",
    plural = "kubezeroconfigs",
    namespaced,
    status = "KubeZeroConfigStatus",
    derive = "PartialEq",
    shortname = "kzcfg",
    category = "cluster-api",
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    label("cluster.x-k8s.io/provider", "bootstrap-kubezero"),
    // Printer columns in the JSON form: the `printcolumn(type_ = ..)` form trips clippy::duplicated_attributes.
    printcolumn = r#"{"name": "Cluster", "type": "string", "description": "Cluster this config belongs to", "jsonPath": ".metadata.labels.cluster\\.x-k8s\\.io/cluster-name"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "description": "Status of the Ready condition", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "description": "Reason of the Ready condition", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name": "Data Secret", "type": "string", "description": "Secret holding the bootstrap data", "jsonPath": ".status.dataSecretName"}"#,
    printcolumn = r#"{"name": "Format", "type": "string", "description": "Format of the bootstrap data", "jsonPath": ".spec.format", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(
    "!has(self.files) || self.files.all(f, self.files.exists_one(g, g.path == f.path))"
).message("file paths must be unique").field_path(".files"))]
#[x_kube(validation = Rule::new(
    "!has(self.users) || self.users.all(u, self.users.exists_one(v, v.name == u.name))"
).message("user names must be unique").field_path(".users"))]
#[serde(rename_all = "camelCase")]
pub struct KubeZeroConfigSpec {
    /// Format of the bootstrap data: `alpine-config` (tiny-cloud, default) or `cloud-config` (cloud-init).
    #[serde(default)]
    pub format: Format,

    /// kubeadm `ClusterConfiguration` settings (used by the first control-plane node's `kubeadm init`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_configuration: Option<ClusterConfiguration>,

    /// kubeadm `InitConfiguration` settings (first control-plane node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_configuration: Option<InitConfiguration>,

    /// kubeadm `JoinConfiguration` settings (further control-plane nodes and workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_configuration: Option<JoinConfiguration>,

    /// kubelet settings over the KubeZero defaults (cri-o, cgroupfs, reservations, parallel image pulls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_configuration: Option<KubeletConfiguration>,

    /// Labels the kubelet registers the node with (its `--node-labels` flag, whatever the role). The kubelet
    /// refuses labels in the `kubernetes.io` and `k8s.io` namespaces except under `node.kubernetes.io/` and
    /// `kubelet.kubernetes.io/` (NodeRestriction); Cluster API itself syncs the Machine's
    /// `node.cluster.x-k8s.io/` labels to the node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::api::bounds::string_map::<64, 63>")]
    #[x_kube(validation = Rule::new(NODE_LABELS_SYNTAX_RULE)
        .message("node labels must be valid label keys and values"))]
    #[x_kube(validation = Rule::new(NODE_LABELS_NAMESPACE_RULE)
        .message("node labels in the kubernetes.io and k8s.io namespaces must be under node.kubernetes.io/ or kubelet.kubernetes.io/"))]
    pub node_labels: BTreeMap<String, String>,

    /// Files written to the node before kubeadm runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub files: Vec<File>,

    /// Local users created on the node, with their SSH keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub users: Vec<User>,

    /// Time synchronisation; when unset the image's NTP defaults apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntp: Option<Ntp>,

    /// Shell commands run before kubeadm, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub pre_kubeadm_commands: Vec<String>,

    /// Shell commands run after kubeadm succeeded, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub post_kubeadm_commands: Vec<String>,

    /// Kernel parameters set at boot, e.g. `net.ipv4.ip_forward: "1"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::api::bounds::string_map::<64, 256>")]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[a-z0-9_./-]+$'))")
        .message("sysctl keys are dotted kernel parameter names"))]
    pub sysctls: BTreeMap<String, String>,

    /// Alpine release and package repositories used on the node.
    #[serde(default)]
    pub alpine: Alpine,
}

/// Format of the rendered bootstrap data (the data Secret's `format` key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Format {
    // `#alpine-config` user data, run by tiny-cloud (Alpine `tiny` images).
    #[default]
    #[serde(rename = "alpine-config")]
    AlpineConfig,
    // `#cloud-config` user data, run by cloud-init (Alpine `cloudinit` images).
    #[serde(rename = "cloud-config")]
    CloudConfig,
}

impl Format {
    /// The API spelling, also written to the data Secret's `format` key.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::AlpineConfig => "alpine-config",
            Format::CloudConfig => "cloud-config",
        }
    }
}

/// One file written to the node.
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.content) != has(self.contentFrom)")
    .message("exactly one of content or contentFrom must be set"))]
#[serde(rename_all = "camelCase")]
pub struct File {
    /// Absolute path of the file on the node.
    #[schemars(length(max = 512), regex(pattern = r"^/.+"))]
    pub path: String,

    /// Inline content of the file, encoded as `encoding` says; set this or `contentFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384))]
    pub content: Option<String>,

    /// Secret key whose value is the file content; set this or `content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_from: Option<FileSource>,

    /// Octal file mode, e.g. `0600`.
    #[serde(default = "default_permissions")]
    #[schemars(length(max = 4), regex(pattern = r"^0?[0-7]{3}$"))]
    pub permissions: String,

    /// Owner as `user` or `user:group`.
    #[serde(default = "default_owner")]
    #[schemars(
        length(max = 65),
        regex(pattern = r"^[a-z_][a-z0-9_-]*(:[a-z_][a-z0-9_-]*)?$")
    )]
    pub owner: String,

    /// Encoding of the content: `plain`, `base64`, `gzip` or `gzip+base64`.
    #[serde(default)]
    pub encoding: Encoding,

    /// Append to an existing file instead of replacing it.
    #[serde(default)]
    pub append: bool,
}

fn default_permissions() -> String {
    DEFAULT_FILE_PERMISSIONS.to_owned()
}

fn default_owner() -> String {
    DEFAULT_FILE_OWNER.to_owned()
}

/// Encoding of a file's content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Encoding {
    // Content is used as is.
    #[default]
    #[serde(rename = "plain")]
    Plain,
    // Content is base64.
    #[serde(rename = "base64")]
    Base64,
    // Content is gzip (only meaningful from a Secret).
    #[serde(rename = "gzip")]
    Gzip,
    // Content is base64 of gzip.
    #[serde(rename = "gzip+base64")]
    GzipBase64,
}

/// Where a file's content comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileSource {
    /// Key of a Secret in the config's namespace.
    pub secret: SecretKeyRef,
}

/// A key of a Secret in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,

    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A local user account on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Login name.
    #[schemars(length(max = 32), regex(pattern = r"^[a-z_][a-z0-9_-]{0,31}$"))]
    pub name: String,

    /// OpenSSH public keys allowed to log in as this user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(max = 4096)),
        inner(regex(
            pattern = r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) .+"
        ))
    )]
    pub ssh_authorized_keys: Vec<String>,

    /// sudoers rule for the user, e.g. `ALL=(ALL) NOPASSWD:ALL`; no sudo when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub sudo: Option<String>,

    /// Supplementary groups the user is added to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(max = 32)),
        inner(regex(pattern = r"^[a-z_][a-z0-9_-]{0,31}$"))
    )]
    pub groups: Vec<String>,

    /// Login shell, an absolute path; the image default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), regex(pattern = r"^/"))]
    pub shell: Option<String>,
}

/// Time synchronisation settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ntp {
    /// Run the NTP client on the node.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// NTP servers (host names or IP addresses); the image's pool when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(length(max = 253)),
        inner(regex(
            pattern = r"^(([a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?|[0-9a-fA-F.]*:[0-9a-fA-F:.]+)$"
        ))
    )]
    pub servers: Vec<String>,
}

impl Default for Ntp {
    fn default() -> Self {
        Ntp {
            enabled: true,
            servers: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// Alpine release and package sources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alpine {
    /// Alpine release the package repositories point at, e.g. `3.22` or `edge`.
    #[serde(default = "default_release")]
    #[schemars(length(max = 8), regex(pattern = r"^(3\.[0-9]{1,2}|edge)$"))]
    pub release: String,

    /// Base URL of an Alpine package mirror (for air-gapped sites); the image's mirror when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), regex(pattern = r"^https?://.+"))]
    pub mirror: Option<String>,

    /// Extra apk repository URLs, appended after main and community.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        inner(length(max = 1024)),
        inner(regex(pattern = r"^https?://.+"))
    )]
    pub repositories: Vec<String>,
}

impl Default for Alpine {
    fn default() -> Self {
        Alpine {
            release: default_release(),
            mirror: None,
            repositories: Vec::new(),
        }
    }
}

fn default_release() -> String {
    DEFAULT_ALPINE_RELEASE.to_owned()
}

/// Observed state of a `KubeZeroConfig` (contract: bootstrap config status).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeZeroConfigStatus {
    /// Name of the Secret holding the bootstrap data (keys `value` and `format`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub data_secret_name: Option<String>,

    /// Initialization flags read by Cluster API core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<BootstrapInitialization>,

    /// Conditions of the config; `Ready` is mirrored into the Machine's `BootstrapConfigReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "kubezero_capi::schema::conditions")]
    pub conditions: Vec<Condition>,
}

/// Template MachineSets clone into one `KubeZeroConfig` per Machine.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "bootstrap.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "KubeZeroConfigTemplate",
    doc = "Template MachineSets clone into one KubeZeroConfig per Machine.",
    plural = "kubezeroconfigtemplates",
    namespaced,
    status = "KubeZeroConfigTemplateStatus",
    derive = "PartialEq",
    shortname = "kzcfgt",
    category = "cluster-api",
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    label("cluster.x-k8s.io/provider", "bootstrap-kubezero"),
    printcolumn = r#"{"name": "Format", "type": "string", "description": "Format of the bootstrap data", "jsonPath": ".spec.template.spec.format"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KubeZeroConfigTemplateSpec {
    /// The config cloned for each Machine; its spec is immutable.
    #[x_kube(validation = Rule::new("self.spec == oldSelf.spec")
        .message("template spec is immutable; create a new template instead"))]
    pub template: KubeZeroConfigTemplateResource,
}

/// `spec.template` of a `KubeZeroConfigTemplate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeZeroConfigTemplateResource {
    /// Labels and annotations copied to the cloned configs.
    #[serde(default, skip_serializing_if = "is_empty_meta")]
    #[schemars(schema_with = "crate::api::bounds::template_metadata")]
    pub metadata: ObjectMeta,

    /// Spec of the cloned configs.
    #[serde(default)]
    pub spec: KubeZeroConfigSpec,
}

fn is_empty_meta(meta: &ObjectMeta) -> bool {
    meta.labels.is_empty() && meta.annotations.is_empty()
}

/// Observed state of a `KubeZeroConfigTemplate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeZeroConfigTemplateStatus {
    /// Conditions of the template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "kubezero_capi::schema::conditions")]
    pub conditions: Vec<Condition>,
}
