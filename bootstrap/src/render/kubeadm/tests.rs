//! Defaults, overrides and golden files of the kubeadm documents.
//!
//! Golden files are `bootstrap/tests/golden/kubeadm-<role>.yaml` (and the worker's kubelet patch), compared
//! byte for byte; `KUBEZERO_UPDATE_GOLDEN=1` rewrites them.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::*;
use crate::api::kubeadm::{ClusterConfiguration, InitConfiguration, JoinConfiguration};

const HASH: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// A realistic spec: the kubeadm section of `test/fixtures/valid/bootstrap/01-config-full.yaml`.
fn spec() -> KubeZeroConfigSpec {
    serde_json::from_value(json!({
        "clusterConfiguration": {
            "apiServer": {
                "extraArgs": [{"name": "audit-log-maxage", "value": "30"}, {"name": "audit-policy-file", "value": "/etc/kubernetes/audit-policy.yaml"}],
                "certSANs": ["api.demo.example.com", "10.0.0.10"],
                "extraVolumes": [{"name": "audit-policy", "hostPath": "/etc/kubernetes/audit-policy.yaml", "mountPath": "/etc/kubernetes/audit-policy.yaml", "readOnly": true, "pathType": "File"}]
            },
            "controllerManager": {"extraArgs": [{"name": "bind-address", "value": "0.0.0.0"}]},
            "scheduler": {"extraArgs": [{"name": "bind-address", "value": "0.0.0.0"}]},
            "etcd": {"local": {"dataDir": "/var/lib/etcd", "extraArgs": [{"name": "quota-backend-bytes", "value": "8589934592"}]}},
            "imageRepository": "registry.example.com/k8s",
            "featureGates": {"ControlPlaneKubeletLocalMode": true}
        },
        "initConfiguration": {
            "nodeRegistration": {"kubeletExtraArgs": [{"name": "v", "value": "2"}]},
            "localAPIEndpoint": {"advertiseAddress": "10.0.0.11", "bindPort": 6443},
            "skipPhases": ["addon/kube-proxy"]
        },
        "joinConfiguration": {
            "nodeRegistration": {
                "taints": [{"key": "dedicated", "value": "ingress", "effect": "NoSchedule"}],
                "kubeletExtraArgs": [{"name": "node-labels", "value": "tier=edge"}, {"name": "provider-id", "value": "user-value"}],
                "ignorePreflightErrors": ["NumCPU"]
            },
            "controlPlane": {"localAPIEndpoint": {"bindPort": 6443}}
        },
        "kubeletConfiguration": {"maxPods": 200, "evictionHard": {"memory.available": "100Mi", "nodefs.available": "10%"}},
        "nodeLabels": {"kubezero.dev/pool": "edge", "node.kubernetes.io/exclude-from-external-load-balancers": ""}
    }))
    .expect("spec deserializes")
}

fn inputs() -> KubeadmInputs {
    KubeadmInputs {
        cluster_name: "demo".into(),
        kubernetes_version: "1.33.2".into(),
        control_plane_endpoint: "api.demo.example.com:6443".into(),
        pod_cidrs: vec!["192.168.0.0/16".into()],
        service_cidrs: vec!["10.96.0.0/12".into()],
        service_domain: Some("cluster.local".into()),
        discovery: Some(JoinDiscovery {
            token: "abcdef.0123456789abcdef".into(),
            ca_cert_hashes: vec![HASH.into()],
        }),
        provider_id: None,
        skip_kube_proxy: false,
    }
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(yaml).expect("rendered YAML parses")
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("kubeadm-{name}.yaml"))
}

fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("KUBEZERO_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (KUBEZERO_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs (KUBEZERO_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn golden_files_match() {
    let spec = spec();
    let init = render_kubeadm_config(&spec, KubeadmRole::Init, &inputs()).unwrap();
    assert_eq!(init.kubelet_patch, None);
    check_golden("init", &init.config);
    let cp = render_kubeadm_config(&spec, KubeadmRole::ControlPlaneJoin, &inputs()).unwrap();
    check_golden("control-plane-join", &cp.config);
    let worker = render_kubeadm_config(&spec, KubeadmRole::WorkerJoin, &inputs()).unwrap();
    check_golden("worker-join", &worker.config);
    check_golden(
        "worker-join-kubelet-patch",
        worker.kubelet_patch.as_deref().unwrap(),
    );
    assert_eq!(cp.kubelet_patch, worker.kubelet_patch);
}

#[test]
fn output_is_deterministic() {
    for role in [
        KubeadmRole::Init,
        KubeadmRole::ControlPlaneJoin,
        KubeadmRole::WorkerJoin,
    ] {
        let a = render_kubeadm_config(&spec(), role, &inputs()).unwrap();
        let b = render_kubeadm_config(&spec(), role, &inputs()).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn init_has_init_cluster_and_kubelet_documents() {
    let out = render_kubeadm_config(&spec(), KubeadmRole::Init, &inputs()).unwrap();
    let docs = docs(&out.config);
    let kinds: Vec<_> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["apiVersion"].as_str().unwrap(),
                d["kind"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "kubeadm.k8s.io/v1beta4/InitConfiguration",
            "kubeadm.k8s.io/v1beta4/ClusterConfiguration",
            "kubelet.config.k8s.io/v1beta1/KubeletConfiguration",
        ]
    );
    let (init, cluster, kubelet) = (&docs[0], &docs[1], &docs[2]);
    assert_eq!(init["nodeRegistration"]["criSocket"], CRIO_SOCKET);
    assert_eq!(
        init["nodeRegistration"]["kubeletExtraArgs"],
        json!([
            {"name": "v", "value": "2"},
            {"name": "node-labels", "value": "kubezero.dev/pool=edge,node.kubernetes.io/exclude-from-external-load-balancers="},
            {"name": "provider-id", "value": PROVIDER_ID_PLACEHOLDER},
        ])
    );
    assert!(
        init["nodeRegistration"].get("taints").is_none(),
        "kubeadm's control-plane taint applies"
    );
    assert_eq!(
        init["localAPIEndpoint"],
        json!({"advertiseAddress": "10.0.0.11", "bindPort": 6443})
    );
    assert_eq!(cluster["kubernetesVersion"], "v1.33.2");
    assert_eq!(cluster["controlPlaneEndpoint"], "api.demo.example.com:6443");
    assert_eq!(cluster["clusterName"], "demo");
    assert_eq!(
        cluster["networking"],
        json!({"dnsDomain": "cluster.local", "podSubnet": "192.168.0.0/16", "serviceSubnet": "10.96.0.0/12"})
    );
    assert_eq!(cluster["apiServer"]["certSANs"][0], "api.demo.example.com");
    assert_eq!(cluster["etcd"]["local"]["dataDir"], "/var/lib/etcd");
    assert_eq!(cluster["featureGates"]["ControlPlaneKubeletLocalMode"], true);
    assert_eq!(kubelet["cgroupDriver"], "cgroupfs");
    assert_eq!(kubelet["maxPods"], 200);
    assert_eq!(
        kubelet["systemReserved"],
        json!({"cpu": "50m", "memory": "128Mi"})
    );
}

#[test]
fn joins_have_discovery_and_point_at_the_kubelet_patch() {
    let cp = render_kubeadm_config(&spec(), KubeadmRole::ControlPlaneJoin, &inputs()).unwrap();
    let worker = render_kubeadm_config(&spec(), KubeadmRole::WorkerJoin, &inputs()).unwrap();
    for out in [&cp, &worker] {
        let docs = docs(&out.config);
        assert_eq!(docs.len(), 1);
        let join = &docs[0];
        assert_eq!(join["apiVersion"], KUBEADM_API_VERSION);
        assert_eq!(join["kind"], "JoinConfiguration");
        assert_eq!(
            join["discovery"]["bootstrapToken"],
            json!({"apiServerEndpoint": "api.demo.example.com:6443", "token": "abcdef.0123456789abcdef", "caCertHashes": [HASH]})
        );
        assert_eq!(join["patches"]["directory"], KUBEADM_PATCHES_DIR);
        let patch = &self::docs(out.kubelet_patch.as_deref().unwrap())[0];
        assert_eq!(patch["kind"], "KubeletConfiguration");
        assert_eq!(patch["maxPods"], 200);
        let args = &join["nodeRegistration"]["kubeletExtraArgs"];
        assert_eq!(
            args[0],
            json!({"name": "node-labels", "value": "tier=edge,kubezero.dev/pool=edge,node.kubernetes.io/exclude-from-external-load-balancers="})
        );
        assert_eq!(
            args[1],
            json!({"name": "provider-id", "value": PROVIDER_ID_PLACEHOLDER})
        );
        assert_eq!(
            args.as_array().unwrap().len(),
            2,
            "the user's provider-id is replaced"
        );
    }
    let cp = &docs(&cp.config)[0];
    let worker = &docs(&worker.config)[0];
    assert_eq!(
        cp["controlPlane"],
        json!({"localAPIEndpoint": {"bindPort": 6443}})
    );
    assert!(worker.get("controlPlane").is_none());
    assert_eq!(
        cp["nodeRegistration"]["taints"],
        json!([{"key": "dedicated", "value": "ingress", "effect": "NoSchedule"}])
    );
    assert_eq!(
        worker["nodeRegistration"]["taints"],
        json!([
            {"key": "dedicated", "value": "ingress", "effect": "NoSchedule"},
            {"key": UNINITIALIZED_TAINT_KEY, "effect": "NoSchedule"},
        ])
    );
}

#[test]
fn control_plane_join_without_settings_still_has_a_control_plane_section() {
    let out = render_kubeadm_config(
        &KubeZeroConfigSpec::default(),
        KubeadmRole::ControlPlaneJoin,
        &inputs(),
    )
    .unwrap();
    assert_eq!(docs(&out.config)[0]["controlPlane"], json!({}));
}

#[test]
fn kubezero_kubelet_defaults() {
    let config = effective_kubelet_configuration(&KubeZeroConfigSpec::default());
    assert_eq!(config, default_kubelet_configuration());
    let value = serde_json::to_value(&config).unwrap();
    assert_eq!(
        value,
        json!({
            "systemReserved": {"cpu": "50m", "memory": "128Mi"},
            "kubeReserved": {"cpu": "50m", "memory": "128Mi"},
            "serializeImagePulls": false,
            "maxParallelImagePulls": 4,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": "unix:///var/run/crio/crio.sock",
        })
    );
}

#[test]
fn user_kubelet_values_override_defaults() {
    let spec: KubeZeroConfigSpec = serde_json::from_value(json!({"kubeletConfiguration": {
        "systemReserved": {"memory": "256Mi"},
        "serializeImagePulls": true,
        "cgroupDriver": "systemd",
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
    }}))
    .unwrap();
    let config = effective_kubelet_configuration(&spec);
    assert_eq!(
        serde_json::to_value(&config).unwrap(),
        json!({
            "systemReserved": {"memory": "256Mi"},
            "kubeReserved": {"cpu": "50m", "memory": "128Mi"},
            "serializeImagePulls": true,
            "cgroupDriver": "systemd",
            "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        })
    );
    let registration = effective_node_registration(&spec, KubeadmRole::Init);
    assert_eq!(
        registration.cri_socket.as_deref(),
        Some("unix:///run/containerd/containerd.sock"),
        "criSocket follows the kubelet's runtime endpoint"
    );

    let spec: KubeZeroConfigSpec =
        serde_json::from_value(json!({"kubeletConfiguration": {"maxParallelImagePulls": 8}})).unwrap();
    let config = effective_kubelet_configuration(&spec);
    assert_eq!(
        (config.serialize_image_pulls, config.max_parallel_image_pulls),
        (Some(false), Some(8))
    );
}

#[test]
fn worker_taint_is_not_duplicated_and_empty_taints_stay_explicit() {
    let spec: KubeZeroConfigSpec = serde_json::from_value(json!({"joinConfiguration": {"nodeRegistration": {
        "taints": [{"key": UNINITIALIZED_TAINT_KEY, "effect": "NoSchedule"}]
    }}}))
    .unwrap();
    let taints = effective_node_registration(&spec, KubeadmRole::WorkerJoin)
        .taints
        .unwrap();
    assert_eq!(taints.len(), 1);
    let spec: KubeZeroConfigSpec =
        serde_json::from_value(json!({"joinConfiguration": {"nodeRegistration": {"taints": []}}})).unwrap();
    assert_eq!(
        effective_node_registration(&spec, KubeadmRole::ControlPlaneJoin).taints,
        Some(vec![])
    );
    assert_eq!(
        effective_node_registration(&KubeZeroConfigSpec::default(), KubeadmRole::ControlPlaneJoin).taints,
        None
    );
}

#[test]
fn spec_networking_wins_over_the_clusters() {
    let spec = KubeZeroConfigSpec {
        cluster_configuration: Some(ClusterConfiguration {
            networking: Some(Networking {
                pod_subnet: Some("10.244.0.0/16,fd00:10:244::/56".into()),
                ..Networking::default()
            }),
            ..ClusterConfiguration::default()
        }),
        ..KubeZeroConfigSpec::default()
    };
    let mut inputs = inputs();
    inputs.service_cidrs = vec!["10.96.0.0/12".into(), "fd00:10:96::/112".into()];
    inputs.service_domain = None;
    let out = render_kubeadm_config(&spec, KubeadmRole::Init, &inputs).unwrap();
    assert_eq!(
        docs(&out.config)[1]["networking"],
        json!({"podSubnet": "10.244.0.0/16,fd00:10:244::/56", "serviceSubnet": "10.96.0.0/12,fd00:10:96::/112"})
    );
}

#[test]
fn known_provider_id_is_used() {
    let mut inputs = inputs();
    inputs.provider_id = Some("kubezero://metal/host-1".into());
    let out =
        render_kubeadm_config(&KubeZeroConfigSpec::default(), KubeadmRole::WorkerJoin, &inputs).unwrap();
    assert!(out.config.contains("kubezero://metal/host-1"));
    assert!(!out.config.contains(PROVIDER_ID_PLACEHOLDER));
}

#[test]
fn bad_inputs_are_refused() {
    let spec = KubeZeroConfigSpec {
        init_configuration: Some(InitConfiguration::default()),
        join_configuration: Some(JoinConfiguration::default()),
        ..KubeZeroConfigSpec::default()
    };
    let render = |f: &dyn Fn(&mut KubeadmInputs), role| {
        let mut inputs = inputs();
        f(&mut inputs);
        render_kubeadm_config(&spec, role, &inputs)
    };
    assert_eq!(
        render(&|i| i.discovery = None, KubeadmRole::WorkerJoin),
        Err(KubeadmError::MissingDiscovery)
    );
    assert!(
        render(&|i| i.discovery = None, KubeadmRole::Init).is_ok(),
        "init needs no token"
    );
    assert_eq!(
        render(
            &|i| i.discovery.as_mut().unwrap().token = "ABCDEF.0123456789abcdef".into(),
            KubeadmRole::WorkerJoin
        ),
        Err(KubeadmError::InvalidToken)
    );
    assert!(matches!(
        render(
            &|i| i.discovery.as_mut().unwrap().ca_cert_hashes.clear(),
            KubeadmRole::ControlPlaneJoin
        ),
        Err(KubeadmError::InvalidCaCertHashes(_))
    ));
    assert!(matches!(
        render(
            &|i| i.discovery.as_mut().unwrap().ca_cert_hashes = vec!["md5:00".into()],
            KubeadmRole::WorkerJoin
        ),
        Err(KubeadmError::InvalidCaCertHashes(_))
    ));
    for endpoint in [
        "api.example.com",
        "api.example.com:0",
        ":6443",
        "api example:6443",
    ] {
        assert_eq!(
            render(&|i| i.control_plane_endpoint = endpoint.into(), KubeadmRole::Init),
            Err(KubeadmError::InvalidEndpoint(endpoint.into()))
        );
    }
    assert!(
        render(
            &|i| i.control_plane_endpoint = "[fd00::1]:6443".into(),
            KubeadmRole::Init
        )
        .is_ok()
    );
    for version in ["1.33", "latest", "v1.x.0"] {
        assert_eq!(
            render(&|i| i.kubernetes_version = version.into(), KubeadmRole::Init),
            Err(KubeadmError::InvalidVersion(version.into()))
        );
    }
}

#[test]
fn kube_proxy_replacement_skips_the_kube_proxy_phase_once() {
    let skipped = |spec: &KubeZeroConfigSpec, skip: bool| -> Vec<Value> {
        let inputs = KubeadmInputs {
            skip_kube_proxy: skip,
            ..inputs()
        };
        let rendered = render_kubeadm_config(spec, KubeadmRole::Init, &inputs).unwrap();
        let init = docs(&rendered.config)
            .into_iter()
            .find(|d| d["kind"] == "InitConfiguration")
            .unwrap();
        init["skipPhases"].as_array().cloned().unwrap_or_default()
    };
    let plain = KubeZeroConfigSpec::default();
    assert!(skipped(&plain, false).is_empty());
    assert_eq!(skipped(&plain, true), vec![Value::from("addon/kube-proxy")]);
    assert_eq!(
        skipped(&spec(), true),
        vec![Value::from("addon/kube-proxy")],
        "the user's own skip is not repeated"
    );
}
