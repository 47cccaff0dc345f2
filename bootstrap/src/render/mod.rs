//! Pure renderers of Alpine first-boot user data (`#alpine-config` for tiny-cloud, `#cloud-config` for
//! cloud-init).
//!
//! [`render`] turns a [`RenderInput`] (independent of the CRD types; the controller fills it) into the
//! bytes of the bootstrap data Secret. Both formats produce the same node:
//!
//! - `write_files`: `/etc/apk/repositories` (the whole file: `main` and `community` of the mirror, then the
//!   extra repositories, so air-gapped sites never reach the public CDN) and their signing keys in
//!   `/etc/apk/keys/`, kernel modules in
//!   `/etc/modules-load.d/kubezero.conf`, sysctls in `/etc/sysctl.d/90-kubezero.conf`, chrony servers, the
//!   kubeadm config in `/etc/kubernetes/kubeadm.yaml` (0600), on control-plane machines of bare-metal
//!   clusters the kube-vip static pod that serves the control-plane VIP ([`kube_vip`]), the user's files
//!   and the boot script;
//! - `package_update` + `packages`: `kubelet`, `kubeadm`, `kubectl`, `cri-o` pinned with apk's fuzzy
//!   `~<major>.<minor>` to the Kubernetes minor (cri-o to the minor the release carries), plus `curl` (AWS
//!   provider-ID discovery) and `sudo` (when a user has a sudo rule);
//! - users and SSH keys natively (tiny-cloud: its single `user` and `ssh_authorized_keys`; cloud-init:
//!   `users`) for early SSH access, then completed idempotently by the boot script (every user, groups,
//!   shell, keys, sudo rules), so both formats end identical;
//! - `runcmd`: the boot script [`BOOT_SCRIPT_PATH`], which installs/verifies the packages, loads the
//!   modules and sysctls, enables and starts `crio` and `kubelet` (OpenRC), discovers the provider ID
//!   (AWS IMDSv2 `aws:///<az>/<instance-id>`; NoCloud `instance-id` from the `cidata` meta-data, as is) and
//!   writes it into the kubeadm configuration in place of the provider-id placeholder (kubeadm passes
//!   it to kubelet as `--provider-id`), runs the pre-kubeadm commands,
//!   `kubeadm init|join --config` (after `init`, kube-vip switches to `admin.conf` when it started with
//!   `super-admin.conf`), the post-kubeadm commands and writes [`SENTINEL_PATH`].
//!
//! Size rule: above [`GZIP_THRESHOLD`] bytes the document is gzipped when that makes it smaller
//! (tiny-cloud and cloud-init both decompress gzip user data; small documents stay plain text for
//! readability). The payload handed to the cloud, gzipped or not, may not exceed
//! [`MAX_USER_DATA_SIZE`] bytes, EC2's limit on user data before base64 encoding
//! ([`RenderError::TooLarge`]; never truncated). A control-plane document with the eight RSA-2048
//! PKI files is about 16 KB before gzip and 9 KB after, so the limit must apply to the payload.
//!
//! The renderer does no I/O and logs nothing (the input holds secrets: tokens, CA keys).

pub mod kube_vip;
pub mod kubeadm;
mod script;
mod yaml;

#[cfg(test)]
mod tests;

/// `len` pseudo-random bytes from `seed` (xorshift64) that gzip cannot shrink: for tests of the
/// user-data size limit.
#[cfg(test)]
pub(crate) fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

use std::collections::BTreeMap;
use std::io::Write as _;

use base64::Engine as _;
use flate2::Compression;
use flate2::write::GzEncoder;

pub use script::{BOOT_LOG_PATH, BOOT_SCRIPT_PATH, SENTINEL_PATH};
use yaml::Node;

/// Largest accepted raw user-data document in bytes (EC2's user-data limit is 16 KB).
pub const MAX_USER_DATA_SIZE: usize = 16384;
/// Raw documents larger than this many bytes are gzipped when that makes them smaller.
pub const GZIP_THRESHOLD: usize = 4096;
/// Where the kubeadm config documents are written on the node.
pub const KUBEADM_CONFIG_PATH: &str = "/etc/kubernetes/kubeadm.yaml";
/// The default Alpine package mirror (base URL, without the release).
pub const DEFAULT_MIRROR: &str = "https://dl-cdn.alpinelinux.org/alpine";
/// Kernel modules loaded at boot and persisted in `/etc/modules-load.d/kubezero.conf`.
pub const KERNEL_MODULES: &[&str] = &["br_netfilter", "overlay"];
/// Sysctls Kubernetes networking needs; the user's sysctls override them.
pub const DEFAULT_SYSCTLS: &[(&str, &str)] = &[
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
];

const MODULES_FILE: &str = "/etc/modules-load.d/kubezero.conf";
const SYSCTL_FILE: &str = "/etc/sysctl.d/90-kubezero.conf";
const CHRONY_FILE: &str = "/etc/chrony/chrony.conf";
const REPOSITORIES_FILE: &str = "/etc/apk/repositories";
/// Directory of the public keys apk trusts.
pub const APK_KEYS_DIR: &str = "/etc/apk/keys";

/// The role of the machine in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The first control-plane machine: `kubeadm init`.
    Init,
    /// A further control-plane machine: `kubeadm join` with the control-plane section.
    ControlPlaneJoin,
    /// A worker: `kubeadm join`.
    WorkerJoin,
}

/// The user-data format, i.e. the first-boot agent of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `#alpine-config` for tiny-cloud (Alpine's `tiny` cloud images).
    AlpineConfig,
    /// `#cloud-config` for cloud-init (Alpine's `cloudinit` cloud images).
    CloudConfig,
}

impl Format {
    /// The value of the data Secret's `format` key (`alpine-config` or `cloud-config`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::AlpineConfig => "alpine-config",
            Format::CloudConfig => "cloud-config",
        }
    }

    fn header(self) -> &'static str {
        match self {
            Format::AlpineConfig => "#alpine-config",
            Format::CloudConfig => "#cloud-config",
        }
    }
}

/// Alpine release and package repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlpineSettings {
    /// Alpine release: `<major>.<minor>` (e.g. `3.22`) or `edge`.
    pub release: String,
    /// Minor cri-o is pinned to (`kubezero_capi::alpine` knows which one a release carries).
    pub cri_o_minor: String,
    /// Base URL of the package mirror (the release directory is appended); default [`DEFAULT_MIRROR`].
    pub mirror: Option<String>,
    /// Further repositories, full URLs, appended to `/etc/apk/repositories` in order.
    pub extra_repositories: Vec<String>,
    /// Signing keys of the further repositories: (file name under [`APK_KEYS_DIR`], PEM).
    pub repository_keys: Vec<(String, String)>,
}

/// The resolved content of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    /// UTF-8 text.
    Text(String),
    /// Arbitrary bytes (always emitted base64 encoded).
    Bytes(Vec<u8>),
}

/// How a file's content is carried in the user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileEncoding {
    /// As text when the content is UTF-8 text a YAML scalar carries; base64 otherwise.
    #[default]
    Text,
    /// Base64.
    Base64,
    /// Gzip, then base64.
    GzipBase64,
}

/// A file written on the node before the boot script runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Absolute path.
    pub path: String,
    /// Resolved content (inline or from a Secret).
    pub content: FileContent,
    /// Octal mode such as `0600`; default `0644`.
    pub permissions: Option<String>,
    /// `user:group`; default `root:root`.
    pub owner: Option<String>,
    /// Transport encoding in the user data.
    pub encoding: FileEncoding,
    /// Append to the file instead of replacing it.
    pub append: bool,
}

/// A login user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserSpec {
    /// Login name.
    pub name: String,
    /// SSH public keys.
    pub ssh_authorized_keys: Vec<String>,
    /// A sudoers rule such as `ALL=(ALL) NOPASSWD:ALL`.
    pub sudo: Option<String>,
    /// Supplementary groups (created when missing).
    pub groups: Vec<String>,
    /// Login shell; default `/bin/sh`.
    pub shell: Option<String>,
}

/// Where the node finds its provider ID at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderIdSource {
    /// EC2 IMDSv2: `aws:///<availability-zone>/<instance-id>`.
    Aws,
    /// The `instance-id` of the NoCloud `cidata` meta-data, used as is.
    NoCloud,
}

/// Everything the renderers need; filled by the controller from the KubeZeroConfig, Cluster and Machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderInput {
    /// The machine's role.
    pub role: Role,
    /// The user-data format.
    pub format: Format,
    /// The machine's Kubernetes version, e.g. `v1.34.2`; packages are pinned to its minor.
    pub kubernetes_version: String,
    /// Alpine release and repositories.
    pub alpine: AlpineSettings,
    /// The ready kubeadm YAML documents for `kubeadm init|join --config`.
    pub kubeadm_config: String,
    /// Resolved files (PKI files for control-plane joins included).
    pub files: Vec<FileSpec>,
    /// Login users.
    pub users: Vec<UserSpec>,
    /// NTP servers for chrony; empty leaves the image's time configuration alone.
    pub ntp_servers: Vec<String>,
    /// Shell commands run before kubeadm.
    pub pre_kubeadm_commands: Vec<String>,
    /// Shell commands run after kubeadm.
    pub post_kubeadm_commands: Vec<String>,
    /// Extra sysctls (override [`DEFAULT_SYSCTLS`]).
    pub sysctls: BTreeMap<String, String>,
    /// How the node discovers its provider ID.
    pub provider_id: ProviderIdSource,
    /// The kube-vip static pod serving the control-plane VIP of a bare-metal cluster; ignored for
    /// workers.
    pub kube_vip: Option<KubeVip>,
}

/// The control-plane VIP a control-plane machine of a bare-metal cluster announces with kube-vip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeVip {
    /// The VIP, an IPv4 address (the cluster's control-plane endpoint).
    pub address: String,
    /// Interface that carries the VIP; `None`: kube-vip takes the interface of the default route.
    pub interface: Option<String>,
    /// Port of the API servers behind the VIP (the control-plane endpoint's port).
    pub port: u16,
    /// The kube-vip container image.
    pub image: String,
}

/// Rendered user data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The Secret's `value`: the document, gzipped when [`Rendered::gzipped`].
    pub value: Vec<u8>,
    /// The format (the Secret's `format` key is [`Format::as_str`]).
    pub format: Format,
    /// Size of the raw (uncompressed) document in bytes.
    pub raw_size: usize,
    /// Whether `value` is gzip compressed.
    pub gzipped: bool,
}

/// Why user data could not be rendered; each variant names the offending input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// The user data exceeds the size limit even after gzip; it is never truncated.
    #[error("user data is {size} bytes ({raw_size} before gzip), more than the limit of {limit} bytes")]
    TooLarge {
        /// Size of the payload (gzipped when that helped).
        size: usize,
        /// Size of the document before gzip.
        raw_size: usize,
        /// The limit ([`MAX_USER_DATA_SIZE`]).
        limit: usize,
    },
    /// The Kubernetes version is not `v<major>.<minor>[.<patch>...]`.
    #[error("invalid Kubernetes version {0:?}: expected v<major>.<minor>.<patch>")]
    InvalidKubernetesVersion(String),
    /// The Alpine release is neither `<major>.<minor>` nor `edge`.
    #[error("invalid Alpine release {0:?}: expected <major>.<minor> (e.g. 3.22) or edge")]
    InvalidAlpineRelease(String),
    /// A repository URL is empty or contains whitespace.
    #[error("invalid package repository {0:?}: expected a URL without whitespace")]
    InvalidRepository(String),
    /// A repository key's file name would leave the keys directory.
    #[error("invalid repository key name {0:?}: expected a file name such as <signer>.rsa.pub")]
    InvalidRepositoryKey(String),
    /// The kubeadm config is empty.
    #[error("the kubeadm config is empty")]
    EmptyKubeadmConfig,
    /// A file spec is invalid.
    #[error("invalid file {path:?}: {reason}")]
    InvalidFile {
        /// The file's path.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A user spec is invalid.
    #[error("invalid user {name:?}: {reason}")]
    InvalidUser {
        /// The user's name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A sysctl key or value is invalid.
    #[error("invalid sysctl {0:?}")]
    InvalidSysctl(String),
    /// An NTP server name is invalid.
    #[error("invalid NTP server {0:?}")]
    InvalidNtpServer(String),
    /// The control-plane VIP is not an IPv4 address (or its port is 0).
    #[error("invalid control-plane VIP {0:?}: expected an IPv4 address")]
    InvalidControlPlaneVip(String),
    /// The VIP interface is not a Linux interface name.
    #[error("invalid VIP interface {0:?}: expected 1 to 15 characters of [a-zA-Z0-9._-]")]
    InvalidVipInterface(String),
    /// The kube-vip image reference is empty or contains whitespace.
    #[error("invalid kube-vip image {0:?}")]
    InvalidKubeVipImage(String),
    /// The kube-vip manifest could not be serialized.
    #[error("rendering the kube-vip manifest: {0}")]
    KubeVipManifest(String),
}

/// Renders the user data for `input`: the raw document, gzipped above [`GZIP_THRESHOLD`] bytes when that
/// makes it smaller; [`RenderError::TooLarge`] when the payload exceeds [`MAX_USER_DATA_SIZE`] bytes.
pub fn render(input: &RenderInput) -> Result<Rendered, RenderError> {
    let raw = render_document(input)?.into_bytes();
    let raw_size = raw.len();
    let gzipped = (raw_size > GZIP_THRESHOLD)
        .then(|| gzip(&raw))
        .filter(|gz| gz.len() < raw_size);
    let (value, gzipped) = match gzipped {
        Some(gz) => (gz, true),
        None => (raw, false),
    };
    if value.len() > MAX_USER_DATA_SIZE {
        return Err(RenderError::TooLarge {
            size: value.len(),
            raw_size,
            limit: MAX_USER_DATA_SIZE,
        });
    }
    Ok(Rendered {
        value,
        format: input.format,
        raw_size,
        gzipped,
    })
}

/// Renders the raw (never compressed) document for `input`, without the size check.
pub fn render_document(input: &RenderInput) -> Result<String, RenderError> {
    let minor = kubernetes_minor(&input.kubernetes_version)?;
    validate(input)?;
    let packages = packages(input, &minor);

    let mut files: Vec<Node> = Vec::new();
    files.push(text_file(
        REPOSITORIES_FILE,
        &repositories(&input.alpine)?,
        "0644",
    ));
    for (name, key) in &input.alpine.repository_keys {
        let path = format!("{APK_KEYS_DIR}/{}", repository_key_name(name)?);
        files.push(text_file(&path, &with_newline(key), "0644"));
    }
    files.push(text_file(
        MODULES_FILE,
        &lines(KERNEL_MODULES.iter().copied()),
        "0644",
    ));
    files.push(text_file(SYSCTL_FILE, &sysctls(input), "0644"));
    if !input.ntp_servers.is_empty() && input.format == Format::AlpineConfig {
        files.push(text_file(CHRONY_FILE, &chrony_conf(&input.ntp_servers), "0644"));
    }
    files.push(text_file(KUBEADM_CONFIG_PATH, &input.kubeadm_config, "0600"));
    let vip_manifests = kube_vip_manifests(input)?;
    if let Some(manifests) = &vip_manifests {
        files.push(text_file(kube_vip::MANIFEST_PATH, &manifests.initial, "0600"));
        if let Some(after_init) = &manifests.after_init {
            files.push(text_file(kube_vip::ADMIN_MANIFEST_PATH, after_init, "0600"));
        }
    }
    for f in &input.files {
        files.push(user_file(f));
    }
    let script = script::boot_script(
        input,
        &packages,
        KERNEL_MODULES,
        SYSCTL_FILE,
        KUBEADM_CONFIG_PATH,
        vip_manifests.as_ref(),
    );
    files.push(text_file(BOOT_SCRIPT_PATH, &script, "0700"));

    let mut root: Vec<(&'static str, Node)> = Vec::new();
    match input.format {
        Format::AlpineConfig => {
            if let Some(first) = input.users.first() {
                root.push(("user", Node::Map(vec![("name", Node::str(&first.name))])));
                if !first.ssh_authorized_keys.is_empty() {
                    root.push((
                        "ssh_authorized_keys",
                        Node::strs(first.ssh_authorized_keys.iter().cloned()),
                    ));
                }
            }
            if !input.ntp_servers.is_empty() {
                root.push((
                    "ntp",
                    Node::Map(vec![
                        ("enabled", Node::Bool(true)),
                        ("ntp_client", Node::str("chrony")),
                    ]),
                ));
            }
        }
        Format::CloudConfig => {
            if !input.users.is_empty() {
                root.push((
                    "users",
                    Node::Seq(input.users.iter().map(cloud_init_user).collect()),
                ));
            }
            if !input.ntp_servers.is_empty() {
                root.push((
                    "ntp",
                    Node::Map(vec![
                        ("enabled", Node::Bool(true)),
                        ("ntp_client", Node::str("chrony")),
                        ("servers", Node::strs(input.ntp_servers.iter().cloned())),
                    ]),
                ));
            }
        }
    }
    root.push(("write_files", Node::Seq(files)));
    root.push(("package_update", Node::Bool(true)));
    root.push(("packages", Node::strs(packages)));
    root.push(("runcmd", Node::strs([BOOT_SCRIPT_PATH])));
    Ok(yaml::document(input.format.header(), &Node::Map(root)))
}

/// Returns the boot script [`render_document`] embeds for `input` (for inspection and `shellcheck`).
pub fn boot_script(input: &RenderInput) -> Result<String, RenderError> {
    let minor = kubernetes_minor(&input.kubernetes_version)?;
    validate(input)?;
    Ok(script::boot_script(
        input,
        &packages(input, &minor),
        KERNEL_MODULES,
        SYSCTL_FILE,
        KUBEADM_CONFIG_PATH,
        kube_vip_manifests(input)?.as_ref(),
    ))
}

/// The kube-vip manifests of a control-plane machine with a VIP; `None` otherwise.
fn kube_vip_manifests(input: &RenderInput) -> Result<Option<kube_vip::Manifests>, RenderError> {
    match &input.kube_vip {
        Some(vip) => kube_vip::manifests(vip, input.role, &input.kubernetes_version),
        None => Ok(None),
    }
}

/// `v1.34.2` → `1.34`.
fn kubernetes_minor(version: &str) -> Result<String, RenderError> {
    let err = || RenderError::InvalidKubernetesVersion(version.to_string());
    let v = version.strip_prefix('v').unwrap_or(version);
    let core = v.split(['-', '+']).next().unwrap_or("");
    let mut parts = core.split('.');
    let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
        return Err(err());
    };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !numeric(major) || !numeric(minor) || !parts.all(numeric) {
        return Err(err());
    }
    Ok(format!("{major}.{minor}"))
}

fn packages(input: &RenderInput, minor: &str) -> Vec<String> {
    let mut p: Vec<String> = ["kubelet", "kubeadm", "kubectl"]
        .iter()
        .map(|n| format!("{n}~{minor}"))
        .collect();
    p.push(format!("cri-o~{}", input.alpine.cri_o_minor));
    if input.provider_id == ProviderIdSource::Aws {
        p.push("curl".into());
    }
    if !input.ntp_servers.is_empty() {
        p.push("chrony".into());
    }
    if input.users.iter().any(|u| u.sudo.is_some()) {
        p.push("sudo".into());
    }
    p
}

fn repositories(alpine: &AlpineSettings) -> Result<String, RenderError> {
    let r = &alpine.release;
    let release_ok = r == "edge" || {
        let mut it = r.split('.');
        matches!((it.next(), it.next(), it.next()), (Some(a), Some(b), None)
            if !a.is_empty() && !b.is_empty() && (a.to_owned() + b).bytes().all(|c| c.is_ascii_digit()))
    };
    if !release_ok {
        return Err(RenderError::InvalidAlpineRelease(r.clone()));
    }
    let dir = if r == "edge" {
        "edge".to_string()
    } else {
        format!("v{r}")
    };
    let mirror = alpine.mirror.as_deref().unwrap_or(DEFAULT_MIRROR);
    let check = |u: &str| {
        if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err(RenderError::InvalidRepository(u.to_string()))
        } else {
            Ok(())
        }
    };
    check(mirror)?;
    let base = mirror.trim_end_matches('/');
    let mut repos = vec![format!("{base}/{dir}/main"), format!("{base}/{dir}/community")];
    for extra in &alpine.extra_repositories {
        check(extra)?;
        repos.push(extra.clone());
    }
    Ok(lines(repos.iter().map(String::as_str)))
}

/// A key file name that stays inside [`APK_KEYS_DIR`].
fn repository_key_name(name: &str) -> Result<&str, RenderError> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._+-".contains(&b));
    if valid {
        Ok(name)
    } else {
        Err(RenderError::InvalidRepositoryKey(name.to_string()))
    }
}

fn with_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

fn sysctls(input: &RenderInput) -> String {
    let mut all: BTreeMap<&str, &str> = DEFAULT_SYSCTLS.iter().copied().collect();
    for (k, v) in &input.sysctls {
        all.insert(k, v);
    }
    lines(
        all.iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    )
}

fn chrony_conf(servers: &[String]) -> String {
    let mut s: String = servers
        .iter()
        .map(|srv| format!("server {srv} iburst\n"))
        .collect();
    s.push_str("driftfile /var/lib/chrony/chrony.drift\nmakestep 1.0 3\nrtcsync\n");
    s
}

fn lines<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.map(|l| format!("{l}\n")).collect()
}

fn text_file(path: &str, content: &str, permissions: &str) -> Node {
    Node::Map(vec![
        ("path", Node::str(path)),
        ("owner", Node::str("root:root")),
        ("permissions", Node::str(permissions)),
        ("content", Node::str(content)),
    ])
}

fn user_file(f: &FileSpec) -> Node {
    let mut m = vec![("path", Node::str(&f.path))];
    m.push(("owner", Node::str(f.owner.as_deref().unwrap_or("root:root"))));
    m.push((
        "permissions",
        Node::str(f.permissions.as_deref().unwrap_or("0644")),
    ));
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let bytes = match &f.content {
        FileContent::Text(t) => t.as_bytes(),
        FileContent::Bytes(b) => b.as_slice(),
    };
    match (f.encoding, &f.content) {
        (FileEncoding::GzipBase64, _) => {
            m.push(("encoding", Node::str("gzip+base64")));
            m.push(("content", Node::str(b64(&gzip(bytes)))));
        }
        (FileEncoding::Text, FileContent::Text(t)) if !t.contains('\r') => {
            m.push(("content", Node::str(t)));
        }
        _ => {
            m.push(("encoding", Node::str("base64")));
            m.push(("content", Node::str(b64(bytes))));
        }
    }
    if f.append {
        m.push(("append", Node::Bool(true)));
    }
    Node::Map(m)
}

fn cloud_init_user(u: &UserSpec) -> Node {
    let mut m = vec![("name", Node::str(&u.name)), ("lock_passwd", Node::Bool(true))];
    m.push(("shell", Node::str(u.shell.as_deref().unwrap_or("/bin/sh"))));
    if !u.groups.is_empty() {
        m.push(("groups", Node::strs(u.groups.iter().cloned())));
    }
    if let Some(rule) = &u.sudo {
        m.push(("sudo", Node::str(rule)));
    }
    if !u.ssh_authorized_keys.is_empty() {
        m.push((
            "ssh_authorized_keys",
            Node::strs(u.ssh_authorized_keys.iter().cloned()),
        ));
    }
    Node::Map(m)
}

/// Deterministic gzip (no file name, mtime 0).
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 2), Compression::best());
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

fn single_line(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_control())
}

fn validate(input: &RenderInput) -> Result<(), RenderError> {
    if input.kubeadm_config.trim().is_empty() {
        return Err(RenderError::EmptyKubeadmConfig);
    }
    for f in &input.files {
        let bad = |reason| {
            Err(RenderError::InvalidFile {
                path: f.path.clone(),
                reason,
            })
        };
        if !f.path.starts_with('/') || !single_line(&f.path) {
            return bad("path must be absolute and on one line");
        }
        if let Some(p) = &f.permissions
            && !((3..=4).contains(&p.len()) && p.bytes().all(|b| (b'0'..=b'7').contains(&b)))
        {
            return bad("permissions must be an octal mode such as 0644");
        }
        if let Some(o) = &f.owner
            && (!single_line(o) || o.contains(' '))
        {
            return bad("owner must be user or user:group");
        }
    }
    for u in &input.users {
        let bad = |reason| {
            Err(RenderError::InvalidUser {
                name: u.name.clone(),
                reason,
            })
        };
        let name_ok = u
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && u.name.len() <= 32
            && u.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !name_ok {
            return bad("name must match [a-z_][a-z0-9_-]{0,31}");
        }
        if u.ssh_authorized_keys.iter().any(|k| !single_line(k)) {
            return bad("SSH keys must be single non-empty lines");
        }
        if u.groups
            .iter()
            .any(|g| !single_line(g) || g.contains([' ', ':', ',']))
        {
            return bad("group names must be single words");
        }
        if u.sudo.as_deref().is_some_and(|r| !single_line(r)) {
            return bad("the sudo rule must be a single line");
        }
        if u.shell
            .as_deref()
            .is_some_and(|s| !s.starts_with('/') || !single_line(s) || s.contains(' '))
        {
            return bad("the shell must be an absolute path");
        }
    }
    for (k, v) in &input.sysctls {
        let key_ok = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
        if !key_ok || !single_line(v) || v.contains('=') {
            return Err(RenderError::InvalidSysctl(format!("{k}={v}")));
        }
    }
    for s in &input.ntp_servers {
        if !single_line(s) || s.contains(' ') {
            return Err(RenderError::InvalidNtpServer(s.clone()));
        }
    }
    Ok(())
}
