//! kubeadm settings of a `KubeZeroConfig`: typed subsets of kubeadm `v1beta4` `ClusterConfiguration`,
//! `InitConfiguration` and `JoinConfiguration` and of kubelet `v1beta1` `KubeletConfiguration`.
//!
//! These are the fields a platform engineer sets; what the controller knows (control-plane endpoint,
//! Kubernetes version, the Cluster's networks, join token and CA hashes) is filled in when the kubeadm
//! documents are built ([`crate::render::kubeadm::render_kubeadm_config`]), after the KubeZero defaults
//! ([`crate::render::kubeadm::effective_kubelet_configuration`],
//! [`crate::render::kubeadm::effective_node_registration`]) are applied. User values override the
//! defaults.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One command-line flag of a component, without the leading dashes (kubeadm `v1beta4` `Arg`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    /// Flag name without the leading `--`, e.g. `audit-log-maxage`.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[a-zA-Z0-9][-a-zA-Z0-9_.]*$"))]
    pub name: String,

    /// Flag value; an empty string passes `--name=`.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub value: String,
}

impl Arg {
    /// An argument `--name=value`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Arg {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// kubeadm `ClusterConfiguration` subset: settings shared by the whole control plane, used by `kubeadm init`.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfiguration {
    /// kube-apiserver settings.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "apiServer")]
    pub api_server: Option<ApiServer>,

    /// kube-controller-manager settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_manager: Option<ControlPlaneComponent>,

    /// kube-scheduler settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<ControlPlaneComponent>,

    /// etcd settings (stacked etcd on the control-plane nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<Etcd>,

    /// Cluster networks; when a field is unset it comes from the Cluster's `spec.clusterNetwork`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networking: Option<Networking>,

    /// Registry (and path) the control-plane images are pulled from, e.g. `registry.example.com/k8s`;
    /// `registry.k8s.io` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 512),
        regex(
            pattern = r"^[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*$"
        )
    )]
    pub image_repository: Option<String>,

    /// kubeadm feature gates, e.g. `ControlPlaneKubeletLocalMode: true`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Z][A-Za-z0-9]*$'))")
        .message("feature gate names are CamelCase words such as ControlPlaneKubeletLocalMode"))]
    pub feature_gates: BTreeMap<String, bool>,
}

/// kube-apiserver settings.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiServer {
    /// Extra flags of kube-apiserver; names must be unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))")
        .message("extraArgs names must be unique"))]
    pub extra_args: Vec<Arg>,

    /// Extra Subject Alternative Names of the API server certificate (host names, wildcards or IP addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "certSANs")]
    #[schemars(
        length(max = 32),
        inner(length(max = 253)),
        inner(regex(
            pattern = r"^((\*\.)?([a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?|[0-9a-fA-F.]*:[0-9a-fA-F:.]+)$"
        ))
    )]
    pub cert_sans: Vec<String>,

    /// Host paths mounted into the kube-apiserver static Pod (audit policies, encryption configs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(v, self.exists_one(w, w.name == v.name))")
        .message("extraVolumes names must be unique"))]
    pub extra_volumes: Vec<HostPathMount>,
}

/// Settings of kube-controller-manager or kube-scheduler.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneComponent {
    /// Extra flags of the component; names must be unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))")
        .message("extraArgs names must be unique"))]
    pub extra_args: Vec<Arg>,

    /// Host paths mounted into the component's static Pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(v, self.exists_one(w, w.name == v.name))")
        .message("extraVolumes names must be unique"))]
    pub extra_volumes: Vec<HostPathMount>,
}

/// A host path mounted into a control-plane static Pod (kubeadm `HostPathMount`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostPathMount {
    /// Name of the volume in the Pod.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Absolute path on the node.
    #[schemars(length(max = 512), regex(pattern = r"^/"))]
    pub host_path: String,

    /// Absolute path inside the Pod.
    #[schemars(length(max = 512), regex(pattern = r"^/"))]
    pub mount_path: String,

    /// Mount read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,

    /// Type of the host path; not checked when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_enum::<HostPathType>")]
    pub path_type: Option<HostPathType>,
}

/// Kind of a host path (Kubernetes `HostPathType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HostPathType {
    // Created as a directory (0755) when missing.
    DirectoryOrCreate,
    // Must be an existing directory.
    Directory,
    // Created as an empty file (0644) when missing.
    FileOrCreate,
    // Must be an existing file.
    File,
    // Must be an existing UNIX socket.
    Socket,
}

/// etcd settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Etcd {
    /// Stacked etcd run by kubeadm as a static Pod on each control-plane node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalEtcd>,
}

/// Stacked etcd settings.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalEtcd {
    /// Directory of etcd's data on the node; `/var/lib/etcd` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = r"^/.+"))]
    pub data_dir: Option<String>,

    /// Extra flags of etcd; names must be unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))")
        .message("extraArgs names must be unique"))]
    pub extra_args: Vec<Arg>,
}

/// Cluster networks. Usually left unset: the controller takes them from the Cluster's `spec.clusterNetwork`
/// (`serviceDomain`, `pods.cidrBlocks`, `services.cidrBlocks`); a value set here wins, as in CABPK.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Networking {
    /// DNS domain of Services, e.g. `cluster.local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub dns_domain: Option<String>,

    /// Pod network: one CIDR, or an IPv4 and an IPv6 CIDR separated by a comma (dual stack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), regex(pattern = CIDRS_PATTERN))]
    pub pod_subnet: Option<String>,

    /// Service network: one CIDR, or an IPv4 and an IPv6 CIDR separated by a comma (dual stack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), regex(pattern = CIDRS_PATTERN))]
    pub service_subnet: Option<String>,
}

/// One or two (comma-separated) IPv4 or IPv6 CIDRs.
const CIDRS_PATTERN: &str = r"^([0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}|[0-9a-fA-F:]*:[0-9a-fA-F:]*/[0-9]{1,3})(,([0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}|[0-9a-fA-F:]*:[0-9a-fA-F:]*/[0-9]{1,3}))?$";

/// kubeadm `InitConfiguration` subset: settings of the first control-plane node (`kubeadm init`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitConfiguration {
    /// How the node registers with the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_registration: Option<NodeRegistration>,

    /// Address and port the API server of this node advertises and listens on.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "localAPIEndpoint")]
    pub local_api_endpoint: Option<ApiEndpoint>,

    /// `kubeadm init` phases to skip, e.g. `addon/kube-proxy` when the CNI replaces it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 128)), inner(regex(pattern = PHASE_PATTERN)))]
    pub skip_phases: Vec<String>,
}

/// A kubeadm phase name such as `preflight` or `addon/kube-proxy`.
const PHASE_PATTERN: &str = r"^[a-z][-a-z0-9]*(/[a-z][-a-z0-9]*)?$";

/// kubeadm `JoinConfiguration` subset: settings of a node joining the cluster (`kubeadm join`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinConfiguration {
    /// How the node registers with the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_registration: Option<NodeRegistration>,

    /// Settings used when the node joins the control plane; ignored for worker nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<JoinControlPlane>,

    /// `kubeadm join` phases to skip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 128)), inner(regex(pattern = PHASE_PATTERN)))]
    pub skip_phases: Vec<String>,
}

/// Control-plane part of a join.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinControlPlane {
    /// Address and port the API server of this node advertises and listens on.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "localAPIEndpoint")]
    pub local_api_endpoint: Option<ApiEndpoint>,
}

/// Advertised address and bind port of a node's API server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiEndpoint {
    /// IP address advertised by this node's API server; detected from the default route when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 45),
        regex(pattern = r"^([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:.]*)$")
    )]
    pub advertise_address: Option<String>,

    /// Port this node's API server listens on; 6443 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub bind_port: Option<i32>,
}

/// kubeadm `NodeRegistrationOptions` subset: how the node registers with the cluster.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRegistration {
    /// Node name; the host name when unset (the Machine's name on most infrastructures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: Option<String>,

    /// CRI socket of the container runtime; KubeZero default `unix:///var/run/crio/crio.sock` (cri-o).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = r"^unix:///.+"))]
    pub cri_socket: Option<String>,

    /// Taints the node registers with. Unset: kubeadm's default (the control-plane taint on control-plane
    /// nodes, none on workers); an empty list: no taints. Worker joins also get
    /// `node.cluster.x-k8s.io/uninitialized:NoSchedule`, which Cluster API removes once the node is labelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(
        "self.all(t, self.exists_one(u, u.key == t.key && u.effect == t.effect))"
    ).message("taints must be unique by key and effect"))]
    pub taints: Option<Vec<Taint>>,

    /// Extra kubelet flags, written by kubeadm to `/var/lib/kubelet/kubeadm-flags.env`; names must be
    /// unique. `provider-id` is set by the boot script; `node-labels` is merged with `spec.nodeLabels`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.name == a.name))")
        .message("extraArgs names must be unique"))]
    pub kubelet_extra_args: Vec<Arg>,

    /// Preflight checks whose errors are shown as warnings, e.g. `NumCPU`, or `all`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(max = 253)),
        inner(regex(pattern = r"^[A-Za-z0-9][-A-Za-z0-9_.]*$"))
    )]
    pub ignore_preflight_errors: Vec<String>,
}

/// A node taint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    /// Taint key, a qualified name such as `dedicated` or `example.com/gpu`.
    #[schemars(
        length(min = 1, max = 316),
        regex(
            pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
        )
    )]
    pub key: String,

    /// Taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 63),
        regex(pattern = r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
    )]
    pub value: Option<String>,

    /// Effect on Pods that do not tolerate the taint: `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: TaintEffect,
}

/// Effect of a taint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaintEffect {
    // New Pods are not scheduled.
    NoSchedule,
    // The scheduler avoids the node.
    PreferNoSchedule,
    // Running Pods are evicted too.
    NoExecute,
}

/// kubelet `KubeletConfiguration` subset. Unset fields take the KubeZero defaults
/// ([`crate::render::kubeadm::default_kubelet_configuration`]), then the kubelet's own.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new(
    "!has(self.serializeImagePulls) || !self.serializeImagePulls || !has(self.maxParallelImagePulls) || self.maxParallelImagePulls == 1"
).message("maxParallelImagePulls must be 1 (or unset) when serializeImagePulls is true"))]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfiguration {
    /// Maximum number of Pods on the node (kubelet default 110).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_pods: Option<i32>,

    /// Resources reserved for the OS (`cpu`, `memory`, `ephemeral-storage`, `pid`); KubeZero default
    /// `cpu: 50m, memory: 128Mi`. Set replaces the default map.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "kubezero_capi::schema::string_map::<4, 64>")]
    #[x_kube(validation = Rule::new(RESERVED_RULE).message(RESERVED_MESSAGE))]
    pub system_reserved: BTreeMap<String, String>,

    /// Resources reserved for the kubelet and the container runtime; KubeZero default
    /// `cpu: 50m, memory: 128Mi`. Set replaces the default map.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "kubezero_capi::schema::string_map::<4, 64>")]
    #[x_kube(validation = Rule::new(RESERVED_RULE).message(RESERVED_MESSAGE))]
    pub kube_reserved: BTreeMap<String, String>,

    /// Hard eviction thresholds by signal, e.g. `memory.available: 100Mi` or `nodefs.available: 10%`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "kubezero_capi::schema::string_map::<8, 64>")]
    #[x_kube(validation = Rule::new(
        "self.all(k, k in ['memory.available', 'nodefs.available', 'nodefs.inodesFree', 'imagefs.available', 'imagefs.inodesFree', 'containerfs.available', 'containerfs.inodesFree', 'pid.available'] && self[k].matches('^([0-9]+([.][0-9]+)?%|[0-9]+([.][0-9]+)?(k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?)$'))"
    ).message("evictionHard keys are eviction signals such as memory.available, values quantities or percentages"))]
    pub eviction_hard: BTreeMap<String, String>,

    /// Pull one image at a time; KubeZero default `false` (parallel pulls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serialize_image_pulls: Option<bool>,

    /// Maximum number of parallel image pulls; KubeZero default 4 when pulls are not serialized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_parallel_image_pulls: Option<i32>,

    /// cgroup driver of the kubelet, matching the container runtime's; KubeZero default `cgroupfs` (Alpine
    /// runs OpenRC, not systemd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_enum::<CgroupDriver>")]
    pub cgroup_driver: Option<CgroupDriver>,

    /// CRI endpoint of the container runtime; KubeZero default `unix:///var/run/crio/crio.sock` (cri-o).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = r"^unix:///.+"))]
    pub container_runtime_endpoint: Option<String>,
}

const RESERVED_RULE: &str = "self.all(k, k in ['cpu', 'memory', 'ephemeral-storage', 'pid'] && self[k].matches('^[0-9]+([.][0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$'))";
const RESERVED_MESSAGE: &str =
    "reservations are cpu, memory, ephemeral-storage or pid with a quantity such as 100m or 128Mi";

/// cgroup driver of the kubelet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CgroupDriver {
    // The kubelet manages cgroups through cgroupfs (OpenRC hosts).
    #[serde(rename = "cgroupfs")]
    Cgroupfs,
    // The kubelet manages cgroups through systemd.
    #[serde(rename = "systemd")]
    Systemd,
}

/// Schema of an optional string enum: the enum's own schema, without the `null` value and `nullable` flag
/// schemars and kube add for an `Option` (an absent field already means unset).
fn optional_enum<T: JsonSchema>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    T::json_schema(generator)
}

/// CEL rule: node label keys and values are valid Kubernetes label keys and values.
pub(crate) const NODE_LABELS_SYNTAX_RULE: &str = "self.all(k, size(k) <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$') && size(self[k]) <= 63 && self[k].matches('^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$'))";
/// CEL rule: the kubelet refuses to start with labels in the `kubernetes.io`/`k8s.io` namespaces other than
/// `node.kubernetes.io/`, `kubelet.kubernetes.io/` and a few well-known ones (NodeRestriction).
pub(crate) const NODE_LABELS_NAMESPACE_RULE: &str = "self.all(k, !k.matches('^([^/]*[.])?(kubernetes[.]io|k8s[.]io)/') || k.matches('^([^/]*[.])?(node|kubelet)[.]kubernetes[.]io/') || k in ['kubernetes.io/hostname', 'kubernetes.io/arch', 'kubernetes.io/os', 'topology.kubernetes.io/region', 'topology.kubernetes.io/zone'])";
