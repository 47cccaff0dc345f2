//! The kube-vip static pod of the control-plane machines of a bare-metal cluster.
//!
//! kube-vip (`manager`, ARP mode, control-plane feature, Kubernetes lease leader election) announces the
//! control-plane VIP from the node that holds the lease, so the API servers behind the VIP answer
//! during `kubeadm init` and every join. The kubelet starts the pod from [`MANIFEST_PATH`], which the
//! user data writes before kubeadm runs (kubeadm ≥ 1.23 only refuses its own manifests there).
//!
//! kube-vip reads its kubeconfig at `/etc/kubernetes/admin.conf` in the container and talks to the
//! API server on this node as `kubernetes:<port>` (a host alias for `127.0.0.1`; `kubernetes` is a
//! SAN of kubeadm's API server certificate). Which host file is mounted there depends on the role:
//!
//! - `kubeadm init` of Kubernetes ≥ 1.29: `super-admin.conf`, because kubeadm binds the `admin.conf`
//!   user to `cluster-admin` only late in `init` and kube-vip must hold its lease before that (kube-vip
//!   issue #684). The boot script replaces the manifest by the `admin.conf` one ([`ADMIN_MANIFEST_PATH`],
//!   staged by the user data) once `kubeadm init` succeeded; the kubelet restarts the pod.
//! - `kubeadm init` before 1.29 (no `super-admin.conf`) and control-plane joins (`kubeadm join` writes
//!   `admin.conf` before it starts the kubelet): `admin.conf` from the start.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, HostAlias, HostPathVolumeSource, ObjectFieldSelector, Pod,
    PodSpec, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{KubeVip, RenderError, Role};

/// Where the kubelet finds the kube-vip static pod.
pub const MANIFEST_PATH: &str = "/etc/kubernetes/manifests/kube-vip.yaml";
/// The `admin.conf` manifest the init machine moves to [`MANIFEST_PATH`] after `kubeadm init` (outside
/// the manifests directory, on the same file system, so the move is atomic).
pub const ADMIN_MANIFEST_PATH: &str = "/etc/kubernetes/kubezero/kube-vip.admin.yaml";
/// The kube-vip image used unless the manager's `--kube-vip-image` says otherwise.
pub const DEFAULT_IMAGE: &str = "ghcr.io/kube-vip/kube-vip:v1.0.4";
/// The kubeconfig kube-vip reads in its container (fixed in kube-vip).
const CONTAINER_KUBECONFIG: &str = "/etc/kubernetes/admin.conf";
/// The first Kubernetes minor (of major 1) whose `kubeadm init` writes `super-admin.conf`.
const SUPER_ADMIN_SINCE_MINOR: u32 = 29;
/// Seconds of the leader lease, its renew deadline and the retry period (kube-vip's defaults).
const LEASE_DURATION: &str = "5";
const RENEW_DEADLINE: &str = "3";
const RETRY_PERIOD: &str = "1";

/// The node file mounted as kube-vip's kubeconfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKubeconfig {
    /// `/etc/kubernetes/admin.conf`.
    Admin,
    /// `/etc/kubernetes/super-admin.conf` (written by `kubeadm init` since Kubernetes 1.29).
    SuperAdmin,
}

impl HostKubeconfig {
    /// The file's path on the node.
    pub fn path(self) -> &'static str {
        match self {
            HostKubeconfig::Admin => "/etc/kubernetes/admin.conf",
            HostKubeconfig::SuperAdmin => "/etc/kubernetes/super-admin.conf",
        }
    }
}

/// The kube-vip manifests of one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifests {
    /// Written to [`MANIFEST_PATH`] before kubeadm runs.
    pub initial: String,
    /// For an init that starts with `super-admin.conf`: the `admin.conf` manifest, written to
    /// [`ADMIN_MANIFEST_PATH`] and moved to [`MANIFEST_PATH`] after `kubeadm init`.
    pub after_init: Option<String>,
}

/// The kubeconfig kube-vip starts with on a machine of `role` and Kubernetes `version` (`v1.34.2`);
/// `None` for workers, which run no kube-vip.
pub fn initial_kubeconfig(role: Role, version: &str) -> Result<Option<HostKubeconfig>, RenderError> {
    Ok(match role {
        Role::WorkerJoin => None,
        Role::ControlPlaneJoin => Some(HostKubeconfig::Admin),
        Role::Init if writes_super_admin(version)? => Some(HostKubeconfig::SuperAdmin),
        Role::Init => Some(HostKubeconfig::Admin),
    })
}

/// Whether `kubeadm init` of `version` writes `super-admin.conf` (Kubernetes ≥ 1.29).
fn writes_super_admin(version: &str) -> Result<bool, RenderError> {
    let invalid = || RenderError::InvalidKubernetesVersion(version.to_string());
    let minor = super::kubernetes_minor(version)?;
    let (major, minor) = minor.split_once('.').ok_or_else(invalid)?;
    let major: u32 = major.parse().map_err(|_| invalid())?;
    let minor: u32 = minor.parse().map_err(|_| invalid())?;
    Ok(major > 1 || (major == 1 && minor >= SUPER_ADMIN_SINCE_MINOR))
}

/// The manifests of a machine of `role` and Kubernetes `version` serving `vip`; `None` for workers.
pub fn manifests(vip: &KubeVip, role: Role, version: &str) -> Result<Option<Manifests>, RenderError> {
    validate(vip)?;
    let Some(initial) = initial_kubeconfig(role, version)? else {
        return Ok(None);
    };
    let after_init = match initial {
        HostKubeconfig::SuperAdmin => Some(manifest(vip, HostKubeconfig::Admin)?),
        HostKubeconfig::Admin => None,
    };
    Ok(Some(Manifests {
        initial: manifest(vip, initial)?,
        after_init,
    }))
}

/// The static pod as YAML.
pub fn manifest(vip: &KubeVip, kubeconfig: HostKubeconfig) -> Result<String, RenderError> {
    serde_saphyr::to_string(&pod(vip, kubeconfig))
        .map_err(|error| RenderError::KubeVipManifest(error.to_string()))
}

/// The kube-vip static pod serving `vip` with the node's `kubeconfig`.
pub fn pod(vip: &KubeVip, kubeconfig: HostKubeconfig) -> Pod {
    let env = |name: &str, value: &str| EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        value_from: None,
    };
    let mut vars = vec![env("vip_arp", "true"), env("port", &vip.port.to_string())];
    if let Some(interface) = &vip.interface {
        vars.push(env("vip_interface", interface));
    }
    vars.push(EnvVar {
        name: "vip_nodename".to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: "spec.nodeName".to_string(),
            }),
            ..EnvVarSource::default()
        }),
    });
    vars.extend([
        env("cp_enable", "true"),
        env("cp_namespace", "kube-system"),
        env("vip_leaderelection", "true"),
        env("vip_leaseduration", LEASE_DURATION),
        env("vip_renewdeadline", RENEW_DEADLINE),
        env("vip_retryperiod", RETRY_PERIOD),
        env("address", &vip.address),
    ]);
    let container = Container {
        name: "kube-vip".to_string(),
        image: Some(vip.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: Some(vec!["manager".to_string()]),
        env: Some(vars),
        security_context: Some(SecurityContext {
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".to_string(), "NET_RAW".to_string()]),
                drop: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "kubeconfig".to_string(),
            mount_path: CONTAINER_KUBECONFIG.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some("kube-vip".to_string()),
            namespace: Some("kube-system".to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            host_network: Some(true),
            host_aliases: Some(vec![HostAlias {
                ip: "127.0.0.1".to_string(),
                hostnames: Some(vec!["kubernetes".to_string()]),
            }]),
            volumes: Some(vec![Volume {
                name: "kubeconfig".to_string(),
                host_path: Some(HostPathVolumeSource {
                    path: kubeconfig.path().to_string(),
                    // Never created by the kubelet: an empty admin.conf would break kubeadm.
                    type_: Some("File".to_string()),
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// Refuses a VIP that is not an IPv4 address, an interface name Linux would not accept, a port of 0
/// and an image reference that is empty or not one word.
fn validate(vip: &KubeVip) -> Result<(), RenderError> {
    if vip.address.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(RenderError::InvalidControlPlaneVip(vip.address.clone()));
    }
    if let Some(interface) = &vip.interface {
        let valid = (1..=15).contains(&interface.len())
            && interface
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(RenderError::InvalidVipInterface(interface.clone()));
        }
    }
    if vip.port == 0 {
        return Err(RenderError::InvalidControlPlaneVip(format!("{}:0", vip.address)));
    }
    if !valid_image(&vip.image) {
        return Err(RenderError::InvalidKubeVipImage(vip.image.clone()));
    }
    Ok(())
}

/// Whether `image` is a non-empty image reference without whitespace or control characters.
pub fn valid_image(image: &str) -> bool {
    !image.is_empty() && !image.chars().any(|c| c.is_whitespace() || c.is_control())
}
