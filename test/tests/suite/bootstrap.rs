//! Bootstrap provider end to end: both managers in the test world, a Cluster `demo` with
//! control-plane Machines (three in the main flow, one where a test only needs an initialized
//! control plane) and a MachineDeployment of three workers; each test starts its own world and sets
//! up what it needs. The world has no cloud here (the provider's AWS calls go to a closed loopback
//! port), so the test stands in for the AWS backend: it reports the KubeZeroCluster provisioned with
//! a control-plane endpoint (own field manager), as the backend would; then the first control-plane
//! machine provisioned and its Node registered in the workload cluster, which initializes the
//! control plane.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubezero_bootstrap::api::KubeZeroConfig;
use kubezero_test::world::WorldView;
use serde_json::json;

use crate::support::{create, create_cluster, create_worker_pool, dynamic, eventually, with_managers_flags};

/// Field manager of the test's stand-in for the AWS backend.
const TEST_MANAGER: &str = "kubezero-e2e-test";

/// The user data of a data Secret as text (gunzipped when gzipped) and its `format`.
fn user_data(secret: &Secret) -> (String, String) {
    let data = secret.data.clone().unwrap_or_default();
    let value = data.get("value").map(|v| v.0.clone()).unwrap_or_default();
    let format = data
        .get("format")
        .map(|v| String::from_utf8(v.0.clone()).unwrap())
        .unwrap_or_default();
    let raw = kubezero_bootstrap::controller::build::decode_value(&value).unwrap();
    (String::from_utf8(raw).unwrap(), format)
}

/// Join tokens live this long in the test, so a refresh (every TTL/3) happens within it.
const TOKEN_TTL: &str = "--bootstrap-token-ttl=30s";
/// The CA key file only control-plane joins carry.
const CA_KEY_PATH: &str = "/etc/kubernetes/pki/ca.key";
/// Label of the token Secrets of one token group.
const TOKEN_GROUP_LABEL: &str = "bootstrap.cluster.x-k8s.io/kubezero-token-group";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_control_planes_and_three_workers_get_one_init_two_cp_joins_and_three_identical_worker_joins() {
    with_bootstrap_managers(|world| async move { cluster_flow(&world).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_token_of_unjoined_workers_is_refreshed_and_recreated_when_deleted() {
    with_bootstrap_managers(|world| async move {
        let (apis, _, workload) = initialized_cluster(&world).await;
        let worker_data = worker_pool_data(&world, &apis).await;
        let tokens: Api<Secret> = Api::namespaced(workload, "kube-system");
        let all_tokens = tokens.list(&ListParams::default()).await.unwrap().items;
        let worker_token = token_of(&all_tokens, &worker_data[0]);
        token_refresh(&tokens, &worker_token).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_by_the_schema_or_reported_on_ready_without_a_data_secret() {
    with_bootstrap_managers(|world| async move {
        let (apis, _, _) = initialized_cluster(&world).await;
        bad_input(&world, &apis).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_pki_survives_the_deletion_of_the_first_control_plane_machine() {
    with_bootstrap_managers(|world| async move {
        let (apis, init, _) = initialized_cluster(&world).await;
        let pki_before = pki_secrets(&apis.secrets).await;
        pki_survives_first_machine_deletion(&apis, &init, &pki_before).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_past_half_its_life_is_renewed_from_the_cluster_ca() {
    with_bootstrap_managers(|world| async move {
        let (apis, _, _) = initialized_cluster(&world).await;
        kubeconfig_renewal(&world, &apis.secrets).await;
    })
    .await;
}

/// Runs `flow` in a test world with both managers, join tokens living [`TOKEN_TTL`].
async fn with_bootstrap_managers<F, Fut>(flow: F)
where
    F: FnOnce(WorldView) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let flags = [("kubezero-bootstrap", TOKEN_TTL)];
    with_managers_flags(Duration::from_secs(240), &flags, flow).await;
}

/// Cluster `demo` with `control_planes` control-plane Machines (Kubernetes v1.34.1, `alpine-config`)
/// whose infrastructure is provisioned with an endpoint.
async fn cluster_with_control_planes(world: &WorldView, apis: &Apis, control_planes: usize) {
    let infra_clusters = create_cluster(world, "demo").await;
    for index in 0..control_planes {
        let name = format!("demo-cp-{index}");
        apis.machine(world, &name, true, "v1.34.1", json!({"format": "alpine-config"}))
            .await;
    }
    provision_cluster_infrastructure(&infra_clusters).await;
}

/// The init machine `init` boots: provisioned as an EC2 instance, its Node registers in the workload
/// cluster (core then initializes the control plane); returns a client of the workload cluster.
async fn boot_init_machine(apis: &Apis, init: &str) -> kube::Client {
    let workload = workload_client(&apis.secrets).await;
    let provider_id = "aws:///eu-central-1a/i-0123456789abcdef0";
    provision_machine(&apis.infra_machines, init, provider_id).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(workload.clone());
    let node = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "ip-10-0-0-10"}, "spec": {"providerID": provider_id}}))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    workload
}

/// Cluster `demo` with one control-plane Machine that got init data and booted: the control plane
/// is initialized. Returns the APIs, the init machine's name and a client of the workload cluster.
async fn initialized_cluster(world: &WorldView) -> (Apis, String, kube::Client) {
    let apis = Apis::new(world);
    cluster_with_control_planes(world, &apis, 1).await;
    let init = "demo-cp-0".to_string();
    eventually("init data", || apis.data(&init)).await;
    let workload = boot_init_machine(&apis, &init).await;
    let clusters: Api<kubezero_capi::core::Cluster> = Api::namespaced(world.client(), world.namespace());
    eventually("the control plane is initialized", || async {
        let cluster = clusters.get("demo").await.ok()?;
        cluster.control_plane_initialized().then_some(())
    })
    .await;
    (apis, init, workload)
}

/// Creates the MachineDeployment `demo-workers` of three workers; their user data once all three
/// have it.
async fn worker_pool_data(world: &WorldView, apis: &Apis) -> Vec<String> {
    create_worker_pool(world, "demo", "demo-workers", 3).await;
    eventually("three worker data Secrets", || async {
        let configs = apis
            .config_api
            .list(&ListParams::default().labels("cluster.x-k8s.io/deployment-name=demo-workers"))
            .await
            .ok()?
            .items;
        if configs.len() != 3 {
            return None;
        }
        let mut data = Vec::new();
        for config in configs {
            data.push(apis.data(&config.name_any()).await?.0);
        }
        Some(data)
    })
    .await
}

/// The token Secret among `all_tokens` whose token the user data `data` carries.
fn token_of(all_tokens: &[Secret], data: &str) -> Secret {
    all_tokens
        .iter()
        .find(|s| {
            let id = s
                .data
                .as_ref()
                .and_then(|d| d.get("token-id"))
                .map(|v| String::from_utf8(v.0.clone()).unwrap());
            id.is_some_and(|id| data.contains(&format!("{id}.")))
        })
        .expect("the workers' token is in the workload cluster")
        .clone()
}

/// The APIs the flow uses.
struct Apis {
    machines: Api<DynamicObject>,
    infra_machines: Api<DynamicObject>,
    configs: Api<DynamicObject>,
    config_api: Api<KubeZeroConfig>,
    secrets: Api<Secret>,
}

impl Apis {
    fn new(world: &WorldView) -> Self {
        Self {
            machines: dynamic(world, "cluster.x-k8s.io", "v1beta2", "Machine", "machines"),
            infra_machines: dynamic(
                world,
                "infrastructure.cluster.x-k8s.io",
                "v1alpha1",
                "KubeZeroMachine",
                "kubezeromachines",
            ),
            configs: dynamic(
                world,
                "bootstrap.cluster.x-k8s.io",
                "v1alpha1",
                "KubeZeroConfig",
                "kubezeroconfigs",
            ),
            config_api: Api::namespaced(world.client(), world.namespace()),
            secrets: Api::namespaced(world.client(), world.namespace()),
        }
    }

    /// A Machine of Cluster `demo` with its KubeZeroMachine and KubeZeroConfig (`config_spec`).
    async fn machine(
        &self,
        world: &WorldView,
        name: &str,
        control_plane: bool,
        version: &str,
        config_spec: serde_json::Value,
    ) {
        let mut labels = json!({"cluster.x-k8s.io/cluster-name": "demo"});
        if control_plane {
            labels["cluster.x-k8s.io/control-plane"] = json!("");
        }
        create(world, &self.machines, json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": name, "labels": labels},
            "spec": {"clusterName": "demo", "version": version,
                "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeZeroConfig", "name": name}},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroMachine", "name": name}}})).await;
        create(world, &self.infra_machines, json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
            "kind": "KubeZeroMachine", "metadata": {"name": name}, "spec": {"aws": {"instanceType": "m7g.large"}}})).await;
        create(
            world,
            &self.configs,
            json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1alpha1",
            "kind": "KubeZeroConfig", "metadata": {"name": name}, "spec": config_spec}),
        )
        .await;
    }

    /// The `Ready` condition (status, reason, message) of config `name`, once it has one.
    async fn ready(&self, name: &str) -> Option<(String, String, String)> {
        let config = self.config_api.get(name).await.ok()?;
        let ready = config
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        Some((ready.status, ready.reason, ready.message))
    }

    /// The user data of config `name` once its data Secret is recorded.
    async fn data(&self, name: &str) -> Option<(String, Secret)> {
        let status = self.config_api.get(name).await.ok()?.status?;
        (status.initialization?.data_secret_created == Some(true)).then_some(())?;
        let secret = self.secrets.get(&status.data_secret_name?).await.ok()?;
        Some((user_data(&secret).0, secret))
    }
}

async fn cluster_flow(world: &WorldView) {
    let apis = Apis::new(world);
    cluster_with_control_planes(world, &apis, 3).await;

    // Exactly one control-plane machine initializes; the other two wait for it.
    let init = eventually("one init config and two waiting", || async {
        let mut init = Vec::new();
        let mut waiting = 0;
        for index in 0..3 {
            let name = format!("demo-cp-{index}");
            match apis.ready(&name).await?.1.as_str() {
                "DataSecretAvailable" => init.push(name),
                "WaitingForControlPlaneInitialization" => waiting += 1,
                _ => return None,
            }
        }
        (init.len() == 1 && waiting == 2).then(|| init.remove(0))
    })
    .await;
    let (text, data) = apis.data(&init).await.expect("init data");
    check_data_secret(&data, &init);
    assert!(text.starts_with("#alpine-config"), "{text}");
    assert!(text.contains("kubeadm init"), "{text}");
    assert!(text.contains("api.demo.example:6443"), "{text}");
    let config_maps: Api<ConfigMap> = Api::namespaced(world.client(), world.namespace());
    let lock = config_maps.get("demo-lock").await.expect("the init lock");
    assert_eq!(
        kubezero_bootstrap::lock::holder(&lock).as_deref(),
        Some(init.as_str())
    );
    pki_secrets(&apis.secrets).await;

    // The init machine boots: its Node registers, core initializes the control plane.
    let workload = boot_init_machine(&apis, &init).await;

    // The other two join the control plane, with the cluster key pairs as files.
    let joins: Vec<String> = (0..3)
        .map(|i| format!("demo-cp-{i}"))
        .filter(|n| *n != init)
        .collect();
    for name in &joins {
        let (text, data) = eventually("control-plane join data", || apis.data(name)).await;
        check_data_secret(&data, name);
        assert!(text.contains("kubeadm join"), "{text}");
        assert!(!text.contains("kubeadm init"), "{text}");
        assert!(text.contains("controlPlane"), "{text}");
        assert!(
            text.contains(CA_KEY_PATH),
            "control-plane joins carry the CA key pair"
        );
    }
    eventually("the init lock is released", || async {
        config_maps
            .get_opt("demo-lock")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    // Three workers of one MachineDeployment: identical join data, one token.
    let worker_data = worker_pool_data(world, &apis).await;
    assert!(worker_data[0].contains("kubeadm join"), "{}", worker_data[0]);
    assert!(!worker_data[0].contains("controlPlane"), "{}", worker_data[0]);
    assert!(!worker_data[0].contains(CA_KEY_PATH), "workers never get CA keys");
    assert!(
        worker_data.iter().all(|data| *data == worker_data[0]),
        "one MachineSet, identical user data"
    );
    let tokens: Api<Secret> = Api::namespaced(workload.clone(), "kube-system");
    let all_tokens = tokens.list(&ListParams::default()).await.unwrap().items;
    let groups: std::collections::BTreeSet<String> = all_tokens
        .iter()
        .filter(|s| s.type_.as_deref() == Some("bootstrap.kubernetes.io/token"))
        .filter_map(|s| s.labels().get(TOKEN_GROUP_LABEL).cloned())
        .collect();
    assert_eq!(
        groups.len(),
        3,
        "one token group per control-plane join and one for the MachineSet"
    );
    let worker_token = token_of(&all_tokens, &worker_data[0]);
    let group = worker_token.labels()[TOKEN_GROUP_LABEL].clone();
    let in_group = all_tokens
        .iter()
        .filter(|s| s.labels().get(TOKEN_GROUP_LABEL) == Some(&group))
        .count();
    assert_eq!(in_group, 1, "one token for the MachineSet");
}

/// The workers have no nodeRef: their token's expiration moves forward, and a deleted token comes back
/// with the same value (the rendered data stays valid).
async fn token_refresh(tokens: &Api<Secret>, token: &Secret) {
    let name = token.name_any();
    let expiration = |secret: &Secret| {
        let bytes = secret.data.as_ref().unwrap()["expiration"].0.clone();
        String::from_utf8(bytes)
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    let first = expiration(token);
    eventually("the workers' token is refreshed", || async {
        let current = tokens.get(&name).await.ok()?;
        (expiration(&current) > first).then_some(())
    })
    .await;
    tokens.delete(&name, &Default::default()).await.unwrap();
    let back = eventually("the deleted token is re-created", || async {
        tokens.get(&name).await.ok()
    })
    .await;
    assert_eq!(
        back.data.as_ref().unwrap()["token-secret"],
        token.data.as_ref().unwrap()["token-secret"]
    );
}

/// What the schema cannot refuse is reported on `Ready` with a reason, and no data Secret is written;
/// what it can (unknown format, invalid kubeadm fields) never reaches the controller.
async fn bad_input(world: &WorldView, apis: &Apis) {
    let refused = |spec: serde_json::Value, field: &'static str| async move {
        let object: DynamicObject = serde_json::from_value(json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1alpha1",
            "kind": "KubeZeroConfig", "metadata": {"name": "refused", "namespace": world.namespace()}, "spec": spec}))
        .unwrap();
        let error = apis
            .configs
            .create(&PostParams::default(), &object)
            .await
            .expect_err("refused");
        let kube::Error::Api(status) = error else {
            panic!("{error}")
        };
        assert_eq!(status.code, 422, "{status:?}");
        assert!(status.message.contains(field), "{field}: {}", status.message);
    };
    refused(json!({"format": "ignition"}), "spec.format").await;
    refused(
        json!({"clusterConfiguration": {"apiServer": {"certSANs": ["https://api.demo.example.com"]}}}),
        "certSANs",
    )
    .await;

    // Two files of 12,000 base64 characters of pseudo-random bytes each: every file is within the
    // schema's 16 KiB bound, but gzip cannot bring the whole document under EC2's 16 KiB.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut noise = || {
        let bytes: Vec<u8> = (0..9_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let (first, second) = (noise(), noise());
    let cases = [
        (
            "demo-bad-file",
            "v1.34.1",
            json!({"files": [{"path": "/etc/motd", "contentFrom": {"secret": {"name": "no-such-secret", "key": "motd"}}}]}),
            "FileSecretNotFound",
            "no-such-secret",
        ),
        (
            "demo-bad-size",
            "v1.34.1",
            json!({"files": [{"path": "/etc/big-1", "content": first}, {"path": "/etc/big-2", "content": second}]}),
            "BootstrapDataTooLarge",
            "16384",
        ),
        (
            "demo-bad-alpine",
            "v1.34.1",
            json!({"alpine": {"release": "3.22"}}),
            "UnsupportedKubernetesVersion",
            "Alpine 3.22 carries Kubernetes 1.33",
        ),
        (
            "demo-bad-version",
            "1.34",
            json!({}),
            "InvalidConfiguration",
            "1.34",
        ),
    ];
    for (name, version, spec, _, _) in &cases {
        apis.machine(world, name, false, version, spec.clone()).await;
    }
    for (name, _, _, reason, named) in cases {
        let (status, actual, message) = eventually("a Ready reason for bad input", || async {
            apis.ready(name)
                .await
                .filter(|(_, reason, _)| !reason.starts_with("Waiting"))
        })
        .await;
        assert_eq!(
            (status.as_str(), actual.as_str()),
            ("False", reason),
            "{name}: {message}"
        );
        assert!(message.contains(named), "{name}: {message}");
        assert!(
            apis.secrets.get_opt(name).await.unwrap().is_none(),
            "{name}: no data Secret"
        );
    }
}

/// Deleting the Machine that initialized the cluster keeps the cluster's key pairs.
async fn pki_survives_first_machine_deletion(apis: &Apis, init: &str, before: &[Secret]) {
    apis.machines.delete(init, &Default::default()).await.unwrap();
    eventually(
        "the first control-plane Machine and its config are gone",
        || async {
            let machine_gone = apis.machines.get_opt(init).await.ok()?.is_none();
            let config_gone = apis.config_api.get_opt(init).await.ok()?.is_none();
            (machine_gone && config_gone).then_some(())
        },
    )
    .await;
    let after = pki_secrets(&apis.secrets).await;
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old.uid(), new.uid(), "{} kept", old.name_any());
        assert_eq!(old.data, new.data, "{} unchanged", old.name_any());
    }
}

/// A kubeconfig whose client certificate is past half its life is re-issued from the cluster CA, with
/// the same server and names.
async fn kubeconfig_renewal(world: &WorldView, secrets: &Api<Secret>) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let ca_secret = secrets.get("demo-ca").await.unwrap();
    let ca =
        kubezero_bootstrap::pki::from_secret(kubezero_bootstrap::pki::CertificateKind::ClusterCa, &ca_secret)
            .unwrap();
    let now = jiff::Timestamp::now();
    let old_client = kubezero_bootstrap::pki::mint_admin_client_certificate(
        &ca,
        now - jiff::SignedDuration::from_hours(200 * 24),
        Duration::from_secs(365 * 24 * 3600),
    )
    .unwrap();
    let mut secret = secrets.get("demo-kubeconfig").await.unwrap();
    let yaml = String::from_utf8(secret.data.as_ref().unwrap()["value"].0.clone()).unwrap();
    let mut kubeconfig: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    let server = kubeconfig["clusters"][0]["cluster"]["server"].clone();
    let users = kubeconfig["users"].as_array_mut().unwrap();
    users[0]["user"] = json!({"client-certificate-data": b64.encode(&old_client.cert),
        "client-key-data": b64.encode(&old_client.key)});
    let aged = serde_saphyr::to_string(&kubeconfig).unwrap();
    secret
        .data
        .as_mut()
        .unwrap()
        .insert("value".into(), k8s_openapi::ByteString(aged.clone().into_bytes()));
    secrets
        .replace("demo-kubeconfig", &PostParams::default(), &secret)
        .await
        .unwrap();

    let renewed = eventually("the kubeconfig is renewed", || async {
        let secret = secrets.get("demo-kubeconfig").await.ok()?;
        let yaml = String::from_utf8(secret.data?.get("value")?.0.clone()).ok()?;
        (yaml != aged).then_some(yaml)
    })
    .await;
    let (not_before, _) = kubezero_bootstrap::kubeconfig::kubeconfig_client_cert_validity(&renewed).unwrap();
    assert!(
        now.duration_since(not_before) < jiff::SignedDuration::from_mins(10),
        "fresh: {not_before}"
    );
    let kubeconfig: serde_json::Value = serde_saphyr::from_str(&renewed).unwrap();
    assert_eq!(
        kubeconfig["clusters"][0]["cluster"]["server"], server,
        "same server"
    );
    let client_pem = String::from_utf8(
        b64.decode(
            kubeconfig["users"][0]["user"]["client-certificate-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        kubezero_bootstrap::pki::issued_by(&client_pem, &ca.cert).unwrap(),
        "issued by demo-ca"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(world.client(), world.namespace());
    eventually("a KubeconfigRenewed event on the Cluster", || async {
        let events = events.list(&ListParams::default()).await.ok()?.items;
        events
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("KubeconfigRenewed")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("demo")
            })
            .then_some(())
    })
    .await;
}

/// Checks the contract shape of a data Secret of config `name`.
fn check_data_secret(data: &Secret, name: &str) {
    assert_eq!(data.name_any(), name, "data Secret name = config name");
    assert_eq!(data.type_.as_deref(), Some("cluster.x-k8s.io/secret"));
    assert_eq!(
        data.labels()
            .get("cluster.x-k8s.io/cluster-name")
            .map(String::as_str),
        Some("demo")
    );
    let owner = data
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .expect("controller owner");
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("KubeZeroConfig", name)
    );
    assert_eq!(user_data(data).1, "alpine-config");
}

/// The four cluster key pair Secrets, each owned by the Cluster.
async fn pki_secrets(secrets: &Api<Secret>) -> Vec<Secret> {
    let mut found = Vec::new();
    for purpose in ["ca", "etcd", "proxy", "sa"] {
        let pki = secrets.get(&format!("demo-{purpose}")).await.unwrap();
        assert!(
            pki.owner_references()
                .iter()
                .any(|o| o.kind == "Cluster" && o.name == "demo"),
            "demo-{purpose} owned by the Cluster"
        );
        found.push(pki);
    }
    found
}

/// Stand-in for the AWS backend: the cluster infrastructure is provisioned with an endpoint.
async fn provision_cluster_infrastructure(infra_clusters: &Api<DynamicObject>) {
    let params = PatchParams::apply(TEST_MANAGER).force();
    let identity = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroCluster",
        "metadata": {"name": "demo"}});
    let mut spec = identity.clone();
    spec["spec"] = json!({"aws": {"region": "eu-central-1"},
        "controlPlaneEndpoint": {"host": "api.demo.example", "port": 6443}});
    infra_clusters
        .patch("demo", &params, &Patch::Apply(&spec))
        .await
        .unwrap();
    let mut status = identity;
    status["status"] = json!({"initialization": {"provisioned": true}});
    infra_clusters
        .patch_status("demo", &params, &Patch::Apply(&status))
        .await
        .unwrap();
}

/// Stand-in for the AWS backend: machine `name` is provisioned as `provider_id`.
async fn provision_machine(infra_machines: &Api<DynamicObject>, name: &str, provider_id: &str) {
    let params = PatchParams::apply(TEST_MANAGER).force();
    let identity = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroMachine",
        "metadata": {"name": name}});
    let mut spec = identity.clone();
    spec["spec"] = json!({"aws": {"instanceType": "m7g.large"}, "providerID": provider_id});
    infra_machines
        .patch(name, &params, &Patch::Apply(&spec))
        .await
        .unwrap();
    let mut status = identity;
    status["status"] = json!({"initialization": {"provisioned": true}});
    infra_machines
        .patch_status(name, &params, &Patch::Apply(&status))
        .await
        .unwrap();
}

/// A client of the workload cluster through `demo-kubeconfig`, once it exists.
async fn workload_client(secrets: &Api<Secret>) -> kube::Client {
    eventually("a client of the workload cluster", || async {
        let secret = secrets.get("demo-kubeconfig").await.ok()?;
        let yaml = String::from_utf8(secret.data?.get("value")?.0.clone()).ok()?;
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).ok()?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .ok()?;
        kube::Client::try_from(config).ok()
    })
    .await
}
