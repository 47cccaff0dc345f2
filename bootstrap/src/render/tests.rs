//! Golden and validator tests of the user-data renderers.
//!
//! Golden files live in `bootstrap/tests/golden/<role>.<format>.yaml` (raw, not gzipped) and are compared
//! byte for byte; `KUBEZERO_UPDATE_GOLDEN=1` rewrites them. The boot script must pass `shellcheck -s sh`,
//! every `#cloud-config` golden must pass `cloud-init schema`, and every `#alpine-config` golden may only
//! use tiny-cloud's keys. Missing validators fail the tests (install them with scripts/test-tools.sh).

use kubezero_capi::testing::{assert_shellcheck_clean, require_tool};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::Value;

use super::*;

const ROLES: &[(&str, Role)] = &[
    ("init", Role::Init),
    ("controlplane-join", Role::ControlPlaneJoin),
    ("worker-join", Role::WorkerJoin),
];
const FORMATS: &[Format] = &[Format::AlpineConfig, Format::CloudConfig];

/// Top-level keys tiny-cloud's `#alpine-config` handler reads (lib/tiny-cloud/user-data/alpine-config).
const TINY_CLOUD_KEYS: &[&str] = &[
    "user",
    "users",
    "ssh_authorized_keys",
    "bootcmd",
    "write_files",
    "ntp",
    "apk",
    "package_update",
    "package_upgrade",
    "packages",
    "runcmd",
];
const TINY_CLOUD_WRITE_FILES_KEYS: &[&str] =
    &["path", "content", "permissions", "owner", "encoding", "append"];
const TINY_CLOUD_NTP_KEYS: &[&str] = &["enabled", "ntp_client"];
/// Top-level keys the renderer may use in `#cloud-config` (cloud-init 22.4 accepts unknown keys silently).
const CLOUD_INIT_KEYS: &[&str] = &[
    "users",
    "ntp",
    "write_files",
    "package_update",
    "packages",
    "runcmd",
];

/// Fake PEM blocks: fixtures only, not key material.
fn fake_pem(kind: &str, body: &str) -> FileContent {
    FileContent::Text(format!("-----BEGIN {kind}-----\n{body}\n-----END {kind}-----\n"))
}

fn file(path: &str, content: FileContent, permissions: &str) -> FileSpec {
    FileSpec {
        path: path.into(),
        content,
        permissions: Some(permissions.into()),
        owner: None,
        encoding: FileEncoding::Text,
        append: false,
    }
}

const INIT_KUBEADM: &str = "\
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
bootstrapTokens:
- token: abcdef.0123456789abcdef
  ttl: 15m0s
nodeRegistration:
  criSocket: unix:///var/run/crio/crio.sock
  kubeletExtraArgs:
  - name: provider-id
    value: __KUBEZERO_PROVIDER_ID__
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
clusterName: demo
kubernetesVersion: v1.34.2
controlPlaneEndpoint: demo-apiserver.example.com:6443
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
serializeImagePulls: false
maxParallelImagePulls: 4
";

const JOIN_KUBEADM: &str = "\
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: demo-apiserver.example.com:6443
    token: abcdef.0123456789abcdef
    caCertHashes:
    - sha256:0000000000000000000000000000000000000000000000000000000000000000
nodeRegistration:
  criSocket: unix:///var/run/crio/crio.sock
  kubeletExtraArgs:
  - name: provider-id
    value: __KUBEZERO_PROVIDER_ID__
";

fn fixture(role: Role, format: Format) -> RenderInput {
    let mut input = RenderInput {
        role,
        format,
        kubernetes_version: "v1.34.2".into(),
        alpine: AlpineSettings {
            release: "3.23".into(),
            cri_o_minor: "1.34".into(),
            mirror: None,
            extra_repositories: vec![],
            repository_keys: vec![],
        },
        kubeadm_config: INIT_KUBEADM.into(),
        files: vec![],
        users: vec![],
        ntp_servers: vec![],
        pre_kubeadm_commands: vec![],
        post_kubeadm_commands: vec![],
        sysctls: BTreeMap::new(),
        provider_id: ProviderIdSource::Aws,
        kube_vip: None,
    };
    match role {
        Role::Init => {
            input.users = vec![UserSpec {
                name: "capi".into(),
                ssh_authorized_keys: vec![
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForGoldenTests capi@example".into(),
                ],
                sudo: Some("ALL=(ALL) NOPASSWD:ALL".into()),
                groups: vec!["wheel".into()],
                shell: Some("/bin/ash".into()),
            }];
            input.ntp_servers = vec!["169.254.169.123".into()];
            input.pre_kubeadm_commands = vec!["echo 'pre kubeadm' > /run/kubezero-pre".into()];
            input.post_kubeadm_commands =
                vec!["kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes".into()];
            input.sysctls.insert("vm.max_map_count".into(), "262144".into());
            input.files = vec![file(
                "/etc/kubernetes/audit-policy.yaml",
                FileContent::Text(
                    "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n".into(),
                ),
                "0600",
            )];
        }
        Role::ControlPlaneJoin => {
            input.provider_id = ProviderIdSource::NoCloud;
            input.alpine = AlpineSettings {
                release: "3.22".into(),
                cri_o_minor: "1.34".into(),
                mirror: Some("https://mirror.example.internal/alpine/".into()),
                extra_repositories: vec!["https://cdn.example.internal/alpine/v3.22/kubezero".into()],
                repository_keys: vec![(
                    "builder@example.internal-0123abcd.rsa.pub".into(),
                    "-----BEGIN PUBLIC KEY-----\nRmFrZSBmaXh0dXJlLCBub3QgYSBrZXk=\n-----END PUBLIC KEY-----"
                        .into(),
                )],
            };
            input.kubeadm_config =
                format!("{JOIN_KUBEADM}controlPlane:\n  localAPIEndpoint:\n    bindPort: 6443\n");
            for (path, kind, perm) in [
                ("/etc/kubernetes/pki/ca.crt", "CERTIFICATE", "0644"),
                ("/etc/kubernetes/pki/ca.key", "EC PRIVATE KEY", "0600"),
                ("/etc/kubernetes/pki/etcd/ca.crt", "CERTIFICATE", "0644"),
                ("/etc/kubernetes/pki/etcd/ca.key", "EC PRIVATE KEY", "0600"),
                ("/etc/kubernetes/pki/front-proxy-ca.crt", "CERTIFICATE", "0644"),
                ("/etc/kubernetes/pki/front-proxy-ca.key", "EC PRIVATE KEY", "0600"),
                ("/etc/kubernetes/pki/sa.pub", "PUBLIC KEY", "0644"),
                ("/etc/kubernetes/pki/sa.key", "EC PRIVATE KEY", "0600"),
            ] {
                input.files.push(file(
                    path,
                    fake_pem(kind, "RmFrZSBmaXh0dXJlLCBub3QgYSBrZXk="),
                    perm,
                ));
            }
        }
        Role::WorkerJoin => {
            input.alpine.release = "edge".into();
            input.kubeadm_config = JOIN_KUBEADM.into();
            input.files = vec![
                FileSpec {
                    path: "/etc/kubezero/blob.bin".into(),
                    content: FileContent::Bytes(vec![0, 1, 2, 0xff, b'\n']),
                    permissions: None,
                    owner: None,
                    encoding: FileEncoding::Text,
                    append: false,
                },
                FileSpec {
                    path: "/etc/motd".into(),
                    content: FileContent::Text("kubezero worker\n".into()),
                    permissions: Some("0644".into()),
                    owner: Some("root:root".into()),
                    encoding: FileEncoding::GzipBase64,
                    append: true,
                },
            ];
        }
    }
    input
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn golden_path(role: &str, format: Format) -> PathBuf {
    golden_dir().join(format!("{role}.{}.yaml", format.as_str()))
}

/// The VIP of the bare-metal fixtures.
const VIP: &str = "192.0.2.10";

/// The fixture of `role` on a bare-metal cluster: NoCloud provider ID and kube-vip on [`VIP`].
fn metal_fixture(role: Role, format: Format) -> RenderInput {
    let mut input = fixture(role, format);
    input.provider_id = ProviderIdSource::NoCloud;
    input.kube_vip = Some(KubeVip {
        address: VIP.into(),
        interface: Some("eth0".into()),
        port: 6443,
        image: kube_vip::DEFAULT_IMAGE.into(),
    });
    input
}

/// Every fixture: the three roles on AWS, and the three roles on bare metal (`metal-<role>`), in both
/// formats.
fn all_documents() -> Vec<(String, Format, RenderInput, String)> {
    let mut out = Vec::new();
    for (name, role) in ROLES {
        for format in FORMATS {
            for (name, input) in [
                (name.to_string(), fixture(*role, *format)),
                (format!("metal-{name}"), metal_fixture(*role, *format)),
            ] {
                let doc = render_document(&input).expect("fixture renders");
                out.push((name, *format, input, doc));
            }
        }
    }
    out
}

#[test]
fn golden_files_match() {
    let update = std::env::var_os("KUBEZERO_UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut mismatches = Vec::new();
    for (name, format, _, doc) in all_documents() {
        let path = golden_path(&name, format);
        if update {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &doc).unwrap();
            continue;
        }
        match std::fs::read(&path) {
            Ok(want) if want == doc.as_bytes() => {}
            Ok(_) => mismatches.push(format!("{} differs", path.display())),
            Err(e) => mismatches.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden files out of date (rerun with KUBEZERO_UPDATE_GOLDEN=1 and review the diff):\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn boot_scripts_pass_shellcheck() {
    for (name, format, input, _) in all_documents() {
        let script = boot_script(&input).unwrap();
        assert_shellcheck_clean(&format!("{name} {}", format.as_str()), &script);
    }
}

#[test]
fn cloud_config_goldens_pass_cloud_init_schema() {
    require_tool("cloud-init");
    let dir = std::env::temp_dir().join(format!("kubezero-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, format, _, doc) in all_documents() {
        if format != Format::CloudConfig {
            continue;
        }
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, &doc).unwrap();
        let out = Command::new("cloud-init")
            .arg("schema")
            .arg("--config-file")
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // cloud-init 22.4 exits 1 and prints "Cloud config schema errors" on errors; deprecations are
        // printed with exit 0. Treat both, and anything but "Valid cloud-config", as failures.
        let ok = out.status.success()
            && stdout.contains("Valid cloud-config")
            && !format!("{stdout}{stderr}")
                .to_ascii_lowercase()
                .contains("deprecat")
            && !stderr.contains("rror");
        assert!(ok, "cloud-init schema rejected {name}:\n{stdout}{stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn parse(doc: &str) -> serde_json::Map<String, Value> {
    match serde_saphyr::from_str::<Value>(doc).expect("user data is valid YAML") {
        Value::Object(m) => m,
        other => panic!("user data is not a mapping: {other}"),
    }
}

fn keys_subset(what: &str, obj: &serde_json::Map<String, Value>, allowed: &[&str]) {
    for k in obj.keys() {
        assert!(
            allowed.contains(&k.as_str()),
            "{what}: key {k:?} is not supported"
        );
    }
}

#[test]
fn alpine_config_uses_only_tiny_cloud_keys() {
    for (name, format, _, doc) in all_documents() {
        let m = parse(&doc);
        match format {
            Format::AlpineConfig => {
                assert!(doc.starts_with("#alpine-config\n"));
                keys_subset(&name, &m, TINY_CLOUD_KEYS);
                for f in m["write_files"].as_array().unwrap() {
                    keys_subset(&name, f.as_object().unwrap(), TINY_CLOUD_WRITE_FILES_KEYS);
                }
                if let Some(ntp) = m.get("ntp") {
                    keys_subset(&name, ntp.as_object().unwrap(), TINY_CLOUD_NTP_KEYS);
                }
                if let Some(user) = m.get("user") {
                    keys_subset(&name, user.as_object().unwrap(), &["name"]);
                }
                // tiny-cloud runs every runcmd/bootcmd/ssh key/package entry as a string.
                for key in ["runcmd", "packages", "ssh_authorized_keys"] {
                    if let Some(v) = m.get(key) {
                        assert!(
                            v.as_array().unwrap().iter().all(Value::is_string),
                            "{name}: {key}"
                        );
                    }
                }
            }
            Format::CloudConfig => {
                assert!(doc.starts_with("#cloud-config\n"));
                keys_subset(&name, &m, CLOUD_INIT_KEYS);
            }
        }
    }
}

/// Decodes the written files back (as tiny-cloud's `write_file` would) and compares them to the input.
#[test]
fn written_files_round_trip() {
    for (name, _, input, doc) in all_documents() {
        let files = written_files(&doc);
        assert_eq!(
            files[KUBEADM_CONFIG_PATH],
            input.kubeadm_config.as_bytes(),
            "{name}"
        );
        assert_eq!(
            files[BOOT_SCRIPT_PATH],
            boot_script(&input).unwrap().as_bytes(),
            "{name}"
        );
        for f in &input.files {
            let want = match &f.content {
                FileContent::Text(t) => t.as_bytes(),
                FileContent::Bytes(b) => b.as_slice(),
            };
            assert_eq!(files[&f.path], want, "{name} {}", f.path);
        }
        let repos = String::from_utf8(files["/etc/apk/repositories"].clone()).unwrap();
        assert!(
            repos.lines().count() >= 2 && repos.contains("/community\n"),
            "{name}: {repos}"
        );
        for (key, pem) in &input.alpine.repository_keys {
            let written = &files[&format!("/etc/apk/keys/{key}")];
            assert_eq!(
                String::from_utf8_lossy(written).trim_end(),
                pem.as_str(),
                "{name}: the repository key is written before packages install"
            );
        }
    }
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data).read_to_end(&mut out).unwrap();
    out
}

#[test]
fn packages_are_pinned_to_the_kubernetes_minor() {
    let mut input = fixture(Role::WorkerJoin, Format::AlpineConfig);
    input.alpine.release = "3.22".into();
    input.alpine.cri_o_minor = "1.32".into();
    input.kubernetes_version = "v1.33.6".into();
    let doc = render_document(&input).unwrap();
    let m = parse(&doc);
    let pkgs: Vec<&str> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        pkgs,
        [
            "kubelet~1.33",
            "kubeadm~1.33",
            "kubectl~1.33",
            "cri-o~1.32",
            "curl"
        ]
    );
    assert_eq!(kubernetes_minor("1.30.0-rc.1").unwrap(), "1.30");
    for bad in ["", "v1", "vx.y.z", "v1.34.", "latest"] {
        assert_eq!(
            kubernetes_minor(bad),
            Err(RenderError::InvalidKubernetesVersion(bad.into()))
        );
    }
}

#[test]
fn roles_run_the_right_kubeadm_command() {
    for (_, role) in ROLES {
        let script = boot_script(&fixture(*role, Format::AlpineConfig)).unwrap();
        let init = script.contains("run kubeadm init --config /etc/kubernetes/kubeadm.yaml\n");
        let join = script.contains("run kubeadm join --config /etc/kubernetes/kubeadm.yaml\n");
        assert_eq!((init, join), (*role == Role::Init, *role != Role::Init));
        assert!(script.contains("run touch /run/cluster-api/bootstrap-success.complete\n"));
    }
    let aws = boot_script(&fixture(Role::Init, Format::AlpineConfig)).unwrap();
    assert!(aws.contains("PROVIDER_ID=\"aws:///$az/$iid\""));
    let metal = boot_script(&fixture(Role::ControlPlaneJoin, Format::AlpineConfig)).unwrap();
    assert!(metal.contains("LABEL=cidata") && metal.contains("instance-id:"));
}

#[test]
fn both_formats_share_the_boot_script() {
    for (_, role) in ROLES {
        let a = fixture(*role, Format::AlpineConfig);
        let c = fixture(*role, Format::CloudConfig);
        assert_eq!(boot_script(&a).unwrap(), boot_script(&c).unwrap());
    }
}

#[test]
fn oversized_input_is_refused_never_truncated() {
    // 24 KB that gzip cannot shrink below the limit: pseudo-random bytes, base64-encoded.
    let noise = super::incompressible(18_000, 0x9e37_79b9_7f4a_7c15);
    let mut input = fixture(Role::WorkerJoin, Format::AlpineConfig);
    let text = base64::engine::general_purpose::STANDARD.encode(noise);
    input
        .files
        .push(file("/etc/big", FileContent::Text(text), "0644"));
    let raw_size = render_document(&input).unwrap().len();
    match render(&input) {
        Err(RenderError::TooLarge {
            size,
            raw_size: reported,
            limit,
        }) => {
            assert_eq!((reported, limit), (raw_size, MAX_USER_DATA_SIZE));
            assert!(size > MAX_USER_DATA_SIZE && size <= raw_size, "{size} {raw_size}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn a_large_document_that_gzips_under_the_limit_is_accepted() {
    let mut input = fixture(Role::WorkerJoin, Format::AlpineConfig);
    let text: String = (0..20_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    input
        .files
        .push(file("/etc/big", FileContent::Text(text), "0644"));
    let rendered = render(&input).unwrap();
    assert!(rendered.raw_size > MAX_USER_DATA_SIZE && rendered.gzipped);
    assert!(rendered.value.len() <= MAX_USER_DATA_SIZE);
}

#[test]
fn gzip_when_it_helps_and_round_trips() {
    for (name, format, input, doc) in all_documents() {
        let r = render(&input).unwrap();
        assert_eq!((r.format, r.raw_size), (format, doc.len()), "{name}");
        assert_eq!(
            r.gzipped,
            doc.len() > GZIP_THRESHOLD,
            "{name}: {} bytes",
            doc.len()
        );
        if r.gzipped {
            assert!(r.value.len() < doc.len());
            assert_eq!(gunzip(&r.value), doc.as_bytes(), "{name}");
        } else {
            assert_eq!(r.value, doc.as_bytes(), "{name}");
        }
    }
    // Deterministic output: the same input gives the same bytes (stable Secret content).
    let input = fixture(Role::ControlPlaneJoin, Format::CloudConfig);
    assert_eq!(render(&input).unwrap(), render(&input).unwrap());
}

#[test]
fn bad_input_is_rejected_with_the_offending_value() {
    let base = fixture(Role::WorkerJoin, Format::CloudConfig);
    let mut i = base.clone();
    i.alpine.release = "3.22.1".into();
    assert_eq!(
        render(&i),
        Err(RenderError::InvalidAlpineRelease("3.22.1".into()))
    );
    let mut i = base.clone();
    i.alpine.extra_repositories = vec!["https://x/ y".into()];
    assert!(matches!(render(&i), Err(RenderError::InvalidRepository(_))));
    for name in ["../../shadow", ".hidden.pub", "a/b.pub", ""] {
        let mut i = base.clone();
        i.alpine.repository_keys = vec![(name.into(), "-----BEGIN PUBLIC KEY-----".into())];
        assert_eq!(
            render(&i),
            Err(RenderError::InvalidRepositoryKey(name.into())),
            "{name}"
        );
    }
    let mut i = base.clone();
    i.kubeadm_config = " \n".into();
    assert_eq!(render(&i), Err(RenderError::EmptyKubeadmConfig));
    let mut i = base.clone();
    i.files
        .push(file("relative/path", FileContent::Text("x".into()), "0644"));
    assert!(matches!(render(&i), Err(RenderError::InvalidFile { .. })));
    let mut i = base.clone();
    i.files.push(file("/x", FileContent::Text("x".into()), "rwx"));
    assert!(matches!(render(&i), Err(RenderError::InvalidFile { .. })));
    let mut i = base.clone();
    i.users.push(UserSpec {
        name: "Root;rm".into(),
        ..Default::default()
    });
    assert!(matches!(render(&i), Err(RenderError::InvalidUser { .. })));
    let mut i = base;
    i.sysctls.insert("net.x".into(), "1\nrm -rf /".into());
    assert!(matches!(render(&i), Err(RenderError::InvalidSysctl(_))));
}

#[test]
fn boot_script_fills_the_provider_id_placeholder_the_kubeadm_renderer_emits() {
    use crate::render::kubeadm::PROVIDER_ID_PLACEHOLDER;
    for (role, config) in [(Role::Init, INIT_KUBEADM), (Role::WorkerJoin, JOIN_KUBEADM)] {
        assert!(
            config.contains(PROVIDER_ID_PLACEHOLDER),
            "{role:?}: sample config carries the placeholder"
        );
        let script = boot_script(&fixture(role, Format::AlpineConfig)).unwrap();
        assert!(
            script.contains(&format!(
                "sed -i \"s|{PROVIDER_ID_PLACEHOLDER}|$PROVIDER_ID|g\" {KUBEADM_CONFIG_PATH}"
            )),
            "{script}"
        );
    }
}

/// The decoded `write_files` of a user-data document: path → bytes.
fn written_files(doc: &str) -> BTreeMap<String, Vec<u8>> {
    parse(doc)["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let content = f["content"].as_str().unwrap();
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
            let bytes = match f.get("encoding").and_then(Value::as_str) {
                None => content.as_bytes().to_vec(),
                Some("base64") => b64(content),
                Some("gzip+base64") => gunzip(&b64(content)),
                Some(other) => panic!("unexpected encoding {other}"),
            };
            (f["path"].as_str().unwrap().to_string(), bytes)
        })
        .collect()
}

/// The kube-vip Pod written to `path` by `doc`, decoded from its YAML.
fn written_pod(doc: &str, path: &str) -> Option<k8s_openapi::api::core::v1::Pod> {
    let files = written_files(doc);
    let yaml = std::str::from_utf8(files.get(path)?).unwrap();
    let pod: k8s_openapi::api::core::v1::Pod = serde_saphyr::from_str(yaml).expect("the manifest is a Pod");
    // Round trip: the typed Pod serializes back to the same manifest.
    assert_eq!(serde_saphyr::to_string(&pod).unwrap(), yaml);
    Some(pod)
}

/// The `name=value` environment of the kube-vip container (`valueFrom` entries as `name=<fieldPath>`).
fn pod_env(pod: &k8s_openapi::api::core::v1::Pod) -> BTreeMap<String, String> {
    let container = &pod.spec.as_ref().unwrap().containers[0];
    container
        .env
        .iter()
        .flatten()
        .map(|var| {
            let value = var.value.clone().unwrap_or_else(|| {
                let field = var.value_from.as_ref().and_then(|from| from.field_ref.as_ref());
                format!("<{}>", field.unwrap().field_path)
            });
            (var.name.clone(), value)
        })
        .collect()
}

/// The host file mounted as kube-vip's kubeconfig, and where the container sees it.
fn pod_kubeconfig(pod: &k8s_openapi::api::core::v1::Pod) -> (String, String) {
    let spec = pod.spec.as_ref().unwrap();
    let volume = &spec.volumes.as_ref().unwrap()[0];
    let host = volume.host_path.as_ref().unwrap();
    assert_eq!(
        host.type_.as_deref(),
        Some("File"),
        "never created by the kubelet"
    );
    let mount = &spec.containers[0].volume_mounts.as_ref().unwrap()[0];
    assert_eq!(mount.name, volume.name);
    (host.path.clone(), mount.mount_path.clone())
}

#[test]
fn the_kube_vip_manifest_decodes_as_a_pod_that_announces_the_vip_by_arp_under_leader_election() {
    for role in [Role::Init, Role::ControlPlaneJoin] {
        for format in FORMATS {
            let doc = render_document(&metal_fixture(role, *format)).unwrap();
            let pod = written_pod(&doc, kube_vip::MANIFEST_PATH).expect("kube-vip manifest");
            assert_eq!(
                (pod.metadata.name.as_deref(), pod.metadata.namespace.as_deref()),
                (Some("kube-vip"), Some("kube-system"))
            );
            let spec = pod.spec.as_ref().unwrap();
            assert_eq!(spec.host_network, Some(true));
            let alias = &spec.host_aliases.as_ref().unwrap()[0];
            assert_eq!(
                (alias.ip.as_str(), alias.hostnames.as_deref()),
                ("127.0.0.1", Some(&["kubernetes".to_string()][..]))
            );
            let container = &spec.containers[0];
            assert_eq!(container.image.as_deref(), Some(kube_vip::DEFAULT_IMAGE));
            assert_eq!(container.args.as_deref(), Some(&["manager".to_string()][..]));
            let capabilities = container
                .security_context
                .as_ref()
                .and_then(|context| context.capabilities.as_ref())
                .and_then(|capabilities| capabilities.add.clone());
            assert_eq!(capabilities, Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]));
            let env = pod_env(&pod);
            let want: BTreeMap<String, String> = [
                ("vip_arp", "true"),
                ("port", "6443"),
                ("vip_interface", "eth0"),
                ("vip_nodename", "<spec.nodeName>"),
                ("cp_enable", "true"),
                ("cp_namespace", "kube-system"),
                ("vip_leaderelection", "true"),
                ("vip_leaseduration", "5"),
                ("vip_renewdeadline", "3"),
                ("vip_retryperiod", "1"),
                ("address", VIP),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            assert_eq!(env, want, "{role:?}");
        }
    }
    // No interface in the spec: kube-vip picks the interface of the default route.
    let mut input = metal_fixture(Role::ControlPlaneJoin, Format::AlpineConfig);
    input.kube_vip.as_mut().unwrap().interface = None;
    let pod = written_pod(&render_document(&input).unwrap(), kube_vip::MANIFEST_PATH).unwrap();
    assert!(!pod_env(&pod).contains_key("vip_interface"));
}

#[test]
fn kube_vip_starts_with_super_admin_conf_on_init_of_1_29_and_later_then_moves_to_admin_conf() {
    let admin = (
        "/etc/kubernetes/admin.conf".to_string(),
        "/etc/kubernetes/admin.conf".to_string(),
    );
    let super_admin = (
        "/etc/kubernetes/super-admin.conf".to_string(),
        "/etc/kubernetes/admin.conf".to_string(),
    );
    let switch = format!(
        "run mv -f {} {}\n",
        kube_vip::ADMIN_MANIFEST_PATH,
        kube_vip::MANIFEST_PATH
    );
    for (role, version, initial, switches) in [
        (Role::Init, "v1.34.2", &super_admin, true),
        (Role::Init, "v1.29.0", &super_admin, true),
        (Role::Init, "v1.28.15", &admin, false),
        (Role::ControlPlaneJoin, "v1.34.2", &admin, false),
        (Role::ControlPlaneJoin, "v1.28.15", &admin, false),
    ] {
        let mut input = metal_fixture(role, Format::CloudConfig);
        input.kubernetes_version = version.into();
        let doc = render_document(&input).unwrap();
        let pod = written_pod(&doc, kube_vip::MANIFEST_PATH).unwrap();
        assert_eq!(&pod_kubeconfig(&pod), initial, "{role:?} {version}");
        let staged = written_pod(&doc, kube_vip::ADMIN_MANIFEST_PATH);
        let script = boot_script(&input).unwrap();
        assert_eq!(
            (staged.is_some(), script.contains(&switch)),
            (switches, switches),
            "{role:?} {version}"
        );
        if let Some(staged) = staged {
            assert_eq!(pod_kubeconfig(&staged), admin);
            let mut expected = pod.clone();
            expected.spec.as_mut().unwrap().volumes.as_mut().unwrap()[0]
                .host_path
                .as_mut()
                .unwrap()
                .path = admin.0.clone();
            assert_eq!(staged, expected, "only the kubeconfig differs");
            // The switch follows a successful `kubeadm init` and precedes the sentinel.
            let init = script.find("run kubeadm init --config").unwrap();
            let moved = script.find(&switch).unwrap();
            let sentinel = script
                .find("run touch /run/cluster-api/bootstrap-success.complete")
                .unwrap();
            assert!(init < moved && moved < sentinel, "{script}");
        }
    }
}

#[test]
fn aws_clusters_and_metal_workers_get_no_kube_vip() {
    for (name, _, input, doc) in all_documents() {
        let control_plane = input.role != Role::WorkerJoin && input.kube_vip.is_some();
        assert_eq!(
            written_files(&doc).contains_key(kube_vip::MANIFEST_PATH),
            control_plane,
            "{name}"
        );
        if !control_plane {
            assert!(!doc.contains("kube-vip"), "{name}");
            assert!(!boot_script(&input).unwrap().contains("kube-vip"), "{name}");
        }
    }
}

#[test]
fn metal_control_plane_user_data_carries_the_manifest_path_and_the_vip() {
    for role in [Role::Init, Role::ControlPlaneJoin] {
        for format in FORMATS {
            let input = metal_fixture(role, *format);
            let doc = render_document(&input).unwrap();
            assert!(
                doc.contains(kube_vip::MANIFEST_PATH) && doc.contains(VIP),
                "{doc}"
            );
            // The gzipped payload carries the same document.
            let rendered = render(&input).unwrap();
            let payload = if rendered.gzipped {
                gunzip(&rendered.value)
            } else {
                rendered.value
            };
            assert_eq!(payload, doc.as_bytes());
        }
    }
}

#[test]
fn bad_kube_vip_settings_are_rejected_with_the_offending_value() {
    let base = metal_fixture(Role::Init, Format::AlpineConfig);
    let with = |change: &dyn Fn(&mut KubeVip)| {
        let mut input = base.clone();
        change(input.kube_vip.as_mut().unwrap());
        render(&input)
    };
    for address in ["10.0.0", "2001:db8::1", "vip.example.com", ""] {
        assert_eq!(
            with(&|vip| vip.address = address.into()),
            Err(RenderError::InvalidControlPlaneVip(address.into()))
        );
    }
    for interface in ["", "eth 0", "a-very-long-interface-name", "eth0\n"] {
        assert_eq!(
            with(&|vip| vip.interface = Some(interface.into())),
            Err(RenderError::InvalidVipInterface(interface.into()))
        );
    }
    assert!(matches!(
        with(&|vip| vip.port = 0),
        Err(RenderError::InvalidControlPlaneVip(_))
    ));
    for image in ["", "ghcr.io/kube-vip/kube-vip v1"] {
        assert_eq!(
            with(&|vip| vip.image = image.into()),
            Err(RenderError::InvalidKubeVipImage(image.into()))
        );
    }
}
