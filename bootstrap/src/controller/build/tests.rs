//! The pure build: role choice, inputs assembly, the data Secret's shape and the reasons of its errors.

use serde_json::{Value, json};

use super::*;
use crate::render::ProviderIdSource;
use crate::render::kube_vip::DEFAULT_IMAGE;

const PIN: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn config(spec: Value) -> KubeZeroConfig {
    serde_json::from_value(
        json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroConfig",
        "metadata": {"name": "demo-md-0-abc", "namespace": "team-a", "uid": "u-cfg"}, "spec": spec}),
    )
    .unwrap()
}

fn machine(version: Option<&str>) -> Machine {
    serde_json::from_value(
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": "demo-md-0-abc", "namespace": "team-a"},
        "spec": {"clusterName": "demo", "version": version}}),
    )
    .unwrap()
}

fn cluster(labels: Value) -> Cluster {
    serde_json::from_value(
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": "demo", "namespace": "team-a", "labels": labels},
        "spec": {"controlPlaneEndpoint": {"host": "api.demo.example", "port": 6443},
            "clusterNetwork": {"pods": {"cidrBlocks": ["10.244.0.0/16"]},
                "services": {"cidrBlocks": ["10.96.0.0/12"]}, "serviceDomain": "cluster.example"}}}),
    )
    .unwrap()
}

fn file(encoding: &str) -> File {
    serde_json::from_value(
        json!({"path": "/etc/kubezero/x", "encoding": encoding, "permissions": "0600",
        "owner": "root:wheel"}),
    )
    .unwrap()
}

/// Builds the data of `config` (files inline only) for a worker join (`token` set) or an init
/// (`token` unset).
fn build_for(
    config: &KubeZeroConfig,
    machine: &Machine,
    token: Option<&BootstrapToken>,
) -> Result<Built, BuildError> {
    let cluster = cluster(json!({}));
    let user_files = config
        .spec
        .files
        .iter()
        .map(|file| resolve_file(file, file.content.clone().unwrap_or_default().into_bytes()))
        .collect::<Result<_, _>>()?;
    build(BuildInputs {
        config,
        machine,
        cluster: &cluster,
        role: if token.is_some() {
            KubeadmRole::WorkerJoin
        } else {
            KubeadmRole::Init
        },
        user_files,
        certificates: None,
        ca_pin: PIN.to_string(),
        token,
        platform: &Platform::Aws,
        kube_vip_image: DEFAULT_IMAGE,
    })
}

#[test]
fn the_role_follows_initialization_and_the_control_plane_label() {
    assert_eq!(role_for(false, true), KubeadmRole::Init);
    assert_eq!(role_for(true, true), KubeadmRole::ControlPlaneJoin);
    assert_eq!(role_for(true, false), KubeadmRole::WorkerJoin);
}

#[test]
fn kubeadm_inputs_come_from_the_cluster_and_the_machine() {
    let discovery = JoinDiscovery {
        token: "abcdef.0123456789abcdef".into(),
        ca_cert_hashes: vec![PIN.into()],
    };
    let inputs = kubeadm_inputs(
        &cluster(json!({})),
        &machine(Some("v1.34.1")),
        Some(discovery.clone()),
    )
    .unwrap();
    assert_eq!(inputs.cluster_name, "demo");
    assert_eq!(inputs.kubernetes_version, "v1.34.1");
    assert_eq!(inputs.control_plane_endpoint, "api.demo.example:6443");
    assert_eq!(inputs.pod_cidrs, ["10.244.0.0/16"]);
    assert_eq!(inputs.service_cidrs, ["10.96.0.0/12"]);
    assert_eq!(inputs.service_domain.as_deref(), Some("cluster.example"));
    assert_eq!(inputs.discovery, Some(discovery));
    assert_eq!(inputs.provider_id, None, "discovered at boot");
    assert!(!inputs.skip_kube_proxy);

    let replaced = cluster(json!({KUBE_PROXY_REPLACEMENT_LABEL: "enabled"}));
    let inputs = kubeadm_inputs(&replaced, &machine(Some("v1.34.1")), None).unwrap();
    assert!(inputs.skip_kube_proxy);
    let other = cluster(json!({KUBE_PROXY_REPLACEMENT_LABEL: "disabled"}));
    assert!(
        !kubeadm_inputs(&other, &machine(Some("v1.34.1")), None)
            .unwrap()
            .skip_kube_proxy
    );
}

#[test]
fn a_machine_without_a_version_is_invalid_configuration() {
    for version in [None, Some("")] {
        let error = kubeadm_inputs(&cluster(json!({})), &machine(version), None).unwrap_err();
        assert_eq!(error.reason(), reasons::INVALID_CONFIGURATION);
        assert_eq!(error.to_string(), "Machine demo-md-0-abc has no spec.version");
    }
}

#[test]
fn files_are_decoded_as_their_encoding_says_and_travel_compressed_when_they_came_so() {
    use base64::engine::general_purpose::STANDARD;
    use std::io::Write as _;
    let plain = resolve_file(&file("plain"), b"hello\n".to_vec()).unwrap();
    assert_eq!(plain.content, render::FileContent::Text("hello\n".into()));
    assert_eq!(plain.encoding, render::FileEncoding::Text);
    assert_eq!(plain.permissions.as_deref(), Some("0600"));
    assert_eq!(plain.owner.as_deref(), Some("root:wheel"));

    let binary = resolve_file(&file("base64"), STANDARD.encode([0xff, 0x00]).into_bytes()).unwrap();
    assert_eq!(binary.content, render::FileContent::Bytes(vec![0xff, 0x00]));
    assert_eq!(binary.encoding, render::FileEncoding::Base64);

    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(b"compressed").unwrap();
    let gzipped = STANDARD.encode(gzip.finish().unwrap());
    let compressed = resolve_file(&file("gzip+base64"), gzipped.into_bytes()).unwrap();
    assert_eq!(compressed.content, render::FileContent::Text("compressed".into()));
    assert_eq!(compressed.encoding, render::FileEncoding::GzipBase64);

    let error = resolve_file(&file("base64"), b"not base64!".to_vec()).unwrap_err();
    assert_eq!(error.reason(), reasons::INVALID_CONFIGURATION);
    assert!(
        error
            .to_string()
            .starts_with("file /etc/kubezero/x: content is not base64: "),
        "{error}"
    );
    let error = resolve_file(&file("gzip"), b"plain".to_vec()).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("file /etc/kubezero/x: content is not gzip: "),
        "{error}"
    );
}

#[test]
fn the_data_secret_of_a_join_is_named_after_the_config_owned_by_it_and_carries_the_token() {
    let config = config(json!({}));
    let token = BootstrapToken::generate();
    let built = build_for(&config, &machine(Some("v1.34.1")), Some(&token)).unwrap();
    let secret = &built.secret;
    assert_eq!(secret.metadata.name.as_deref(), Some("demo-md-0-abc"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("team-a"));
    assert_eq!(secret.type_.as_deref(), Some("cluster.x-k8s.io/secret"));
    assert_eq!(
        secret.metadata.labels,
        Some(BTreeMap::from([(
            "cluster.x-k8s.io/cluster-name".to_string(),
            "demo".to_string()
        )]))
    );
    let owners = secret.metadata.owner_references.clone().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (
            owners[0].kind.as_str(),
            owners[0].name.as_str(),
            owners[0].uid.as_str(),
            owners[0].controller
        ),
        ("KubeZeroConfig", "demo-md-0-abc", "u-cfg", Some(true))
    );
    let data = secret.data.clone().unwrap();
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        [TOKEN_KEY, DATA_SECRET_FORMAT_KEY, DATA_SECRET_VALUE_KEY]
    );
    assert_eq!(data[DATA_SECRET_FORMAT_KEY].0, b"alpine-config");
    assert_eq!(data[TOKEN_KEY].0, token.to_string().into_bytes());
    let text = String::from_utf8(decode_value(&data[DATA_SECRET_VALUE_KEY].0).unwrap()).unwrap();
    assert!(text.starts_with("#alpine-config"), "{text}");
    assert!(text.contains("kubeadm join"), "{text}");
    assert!(text.contains(&token.to_string()), "the token is in the user data");
    assert!(text.contains(PIN), "the CA pin is in the user data");
    assert_eq!(
        built.gzipped,
        data[DATA_SECRET_VALUE_KEY].0.starts_with(&[0x1f, 0x8b])
    );
}

#[test]
fn the_data_secret_of_an_init_has_no_token_key() {
    let config = config(json!({"format": "cloud-config"}));
    let built = build_for(&config, &machine(Some("v1.34.1")), None).unwrap();
    let data = built.secret.data.unwrap();
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        [DATA_SECRET_FORMAT_KEY, DATA_SECRET_VALUE_KEY]
    );
    assert_eq!(data[DATA_SECRET_FORMAT_KEY].0, b"cloud-config");
    let text = String::from_utf8(decode_value(&data[DATA_SECRET_VALUE_KEY].0).unwrap()).unwrap();
    assert!(text.contains("kubeadm init"), "{text}");
}

#[test]
fn build_errors_carry_the_reason_the_user_sees() {
    let token = BootstrapToken::generate();
    let join = |spec: Value, version: &str| {
        build_for(&config(spec), &machine(Some(version)), Some(&token)).unwrap_err()
    };

    let unsupported = join(json!({"alpine": {"release": "3.22"}}), "v1.34.1");
    assert!(matches!(unsupported, BuildError::UnsupportedVersion(_)));
    assert_eq!(unsupported.reason(), reasons::UNSUPPORTED_KUBERNETES_VERSION);
    assert!(
        unsupported
            .to_string()
            .contains("Alpine 3.22 carries Kubernetes 1.33"),
        "{unsupported}"
    );

    let malformed = join(json!({}), "1.34");
    assert_eq!(malformed.reason(), reasons::INVALID_CONFIGURATION);
    assert!(malformed.to_string().contains("1.34"), "{malformed}");

    // Pseudo-random content gzip cannot shrink below the limit.
    let noise = crate::render::incompressible(18_000, 0x2545_f491_4f6c_dd1d);
    let content = base64::engine::general_purpose::STANDARD.encode(noise);
    let too_large = join(
        json!({"files": [{"path": "/etc/big", "content": content}]}),
        "v1.34.1",
    );
    assert_eq!(too_large.reason(), reasons::BOOTSTRAP_DATA_TOO_LARGE);
    assert!(too_large.to_string().contains("16384"), "{too_large}");

    // A join role needs discovery: without a token the kubeadm documents cannot be built.
    let cluster = cluster(json!({}));
    let config = config(json!({}));
    let machine = machine(Some("v1.34.1"));
    let no_discovery = build(BuildInputs {
        config: &config,
        machine: &machine,
        cluster: &cluster,
        role: KubeadmRole::WorkerJoin,
        user_files: Vec::new(),
        certificates: None,
        ca_pin: PIN.to_string(),
        token: None,
        platform: &Platform::Aws,
        kube_vip_image: DEFAULT_IMAGE,
    })
    .unwrap_err();
    assert_eq!(no_discovery.reason(), reasons::INVALID_CONFIGURATION);
    assert!(
        no_discovery.to_string().starts_with("kubeadm: "),
        "{no_discovery}"
    );
}

/// A bare-metal platform with the VIP `10.0.0.5` on `eth1`.
fn metal() -> Platform {
    Platform::Metal(MetalCluster {
        control_plane_vip: "10.0.0.5".into(),
        vip_interface: Some("eth1".into()),
    })
}

#[test]
fn metal_control_planes_get_kube_vip_on_the_endpoint_port_and_others_none() {
    let spec = config(json!({})).spec;
    let cluster = cluster(json!({}));
    for role in [KubeadmRole::Init, KubeadmRole::ControlPlaneJoin] {
        assert_eq!(
            kube_vip(&metal(), role, &spec, &cluster, "registry.example/kube-vip:v1").unwrap(),
            Some(render::KubeVip {
                address: "10.0.0.5".into(),
                interface: Some("eth1".into()),
                port: 6443,
                image: "registry.example/kube-vip:v1".into(),
            }),
            "{role:?}"
        );
        assert_eq!(
            kube_vip(&Platform::Aws, role, &spec, &cluster, DEFAULT_IMAGE).unwrap(),
            None
        );
    }
    assert_eq!(
        kube_vip(&metal(), KubeadmRole::WorkerJoin, &spec, &cluster, DEFAULT_IMAGE).unwrap(),
        None
    );
    assert_eq!(metal().provider_id_source(), ProviderIdSource::NoCloud);
    assert_eq!(Platform::Aws.provider_id_source(), ProviderIdSource::Aws);
    let read: MetalCluster = serde_json::from_value(json!({"controlPlaneVip": "10.0.0.5"})).unwrap();
    assert_eq!(read.vip_interface, None);
}

#[test]
fn a_metal_api_server_that_would_not_listen_on_the_vip_port_is_invalid_configuration() {
    let cluster = cluster(json!({}));
    let init = config(json!({"initConfiguration": {"localAPIEndpoint": {"bindPort": 8443}}})).spec;
    let join =
        config(json!({"joinConfiguration": {"controlPlane": {"localAPIEndpoint": {"bindPort": 8443}}}})).spec;
    for (role, spec) in [(KubeadmRole::Init, &init), (KubeadmRole::ControlPlaneJoin, &join)] {
        let error = kube_vip(&metal(), role, spec, &cluster, DEFAULT_IMAGE).unwrap_err();
        assert!(
            matches!(
                error,
                BuildError::VipPortMismatch {
                    bind_port: 8443,
                    endpoint_port: 6443
                }
            ),
            "{error}"
        );
        assert_eq!(error.reason(), reasons::INVALID_CONFIGURATION);
    }
    // Workers serve no API: their bind port does not matter.
    assert_eq!(
        kube_vip(&metal(), KubeadmRole::WorkerJoin, &init, &cluster, DEFAULT_IMAGE).unwrap(),
        None
    );
}

#[test]
fn a_metal_init_data_secret_carries_the_kube_vip_manifest_and_an_aws_one_none() {
    let config = config(json!({}));
    let machine = machine(Some("v1.34.1"));
    let cluster = cluster(json!({}));
    for (platform, expected) in [(metal(), true), (Platform::Aws, false)] {
        let built = build(BuildInputs {
            config: &config,
            machine: &machine,
            cluster: &cluster,
            role: KubeadmRole::Init,
            user_files: Vec::new(),
            certificates: None,
            ca_pin: PIN.to_string(),
            token: None,
            platform: &platform,
            kube_vip_image: DEFAULT_IMAGE,
        })
        .unwrap();
        let value = &built.secret.data.as_ref().unwrap()[DATA_SECRET_VALUE_KEY].0;
        let text = String::from_utf8(decode_value(value).unwrap()).unwrap();
        assert_eq!(
            text.contains(crate::render::kube_vip::MANIFEST_PATH) && text.contains("10.0.0.5"),
            expected,
            "{text}"
        );
        assert_eq!(text.contains("LABEL=cidata"), expected);
    }
}
