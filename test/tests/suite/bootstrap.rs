//! Bootstrap provider end to end: both managers in the test world, one Cluster with a control-plane
//! Machine. The missing AWS backend is stood in for by the test: it reports the KubeZeroCluster
//! provisioned with a control-plane endpoint (own field manager), as the backend would; then the
//! control-plane machine provisioned and its Node registered in the workload emulator.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubezero_bootstrap::api::KubeZeroConfig;
use kubezero_test::world::WorldView;
use serde_json::json;

use crate::support::{create, create_cluster, create_worker_pool, dynamic, eventually, with_managers};

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
    let raw = kubezero_bootstrap::controller::generate::decode_value(&value).unwrap();
    (String::from_utf8(raw).unwrap(), format)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_data_pki_and_lock_then_identical_worker_joins_with_one_token() {
    with_managers(Duration::from_secs(180), |world| async move {
        init_flow(&world).await
    })
    .await;
}

async fn init_flow(world: &WorldView) {
    let infra_clusters = create_cluster(world, "demo").await;
    let machines = dynamic(world, "cluster.x-k8s.io", "v1beta2", "Machine", "machines");
    create(world, &machines, json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": "demo-cp-0", "labels": {"cluster.x-k8s.io/cluster-name": "demo", "cluster.x-k8s.io/control-plane": ""}},
        "spec": {"clusterName": "demo", "version": "v1.34.1",
            "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeZeroConfig", "name": "demo-cp-0"}},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroMachine", "name": "demo-cp-0"}}})).await;
    let infra_machines = dynamic(
        world,
        "infrastructure.cluster.x-k8s.io",
        "v1alpha1",
        "KubeZeroMachine",
        "kubezeromachines",
    );
    create(
        world,
        &infra_machines,
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroMachine",
        "metadata": {"name": "demo-cp-0"}, "spec": {"aws": {"instanceType": "m7g.large"}}}),
    )
    .await;
    let configs = dynamic(
        world,
        "bootstrap.cluster.x-k8s.io",
        "v1alpha1",
        "KubeZeroConfig",
        "kubezeroconfigs",
    );
    create(
        world,
        &configs,
        json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroConfig",
        "metadata": {"name": "demo-cp-0"}, "spec": {"format": "alpine-config"}}),
    )
    .await;

    // Stand-in for the AWS backend: the cluster infrastructure is provisioned with an endpoint.
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

    let config_api: Api<KubeZeroConfig> = Api::namespaced(world.client(), world.namespace());
    let secrets: Api<Secret> = Api::namespaced(world.client(), world.namespace());
    let name = eventually("the config names its data Secret", || async {
        let config = config_api.get("demo-cp-0").await.ok()?;
        let status = config.status?;
        (status.initialization?.data_secret_created == Some(true)).then_some(())?;
        status.data_secret_name
    })
    .await;
    assert_eq!(name, "demo-cp-0", "data Secret name = config name");
    let data = secrets.get(&name).await.unwrap();
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
        ("KubeZeroConfig", "demo-cp-0")
    );
    let (text, format) = user_data(&data);
    assert_eq!(format, "alpine-config");
    assert!(text.starts_with("#alpine-config"), "{text}");
    assert!(text.contains("kubeadm init"), "{text}");
    assert!(text.contains("api.demo.example:6443"), "{text}");

    for purpose in ["ca", "etcd", "proxy", "sa"] {
        let pki = secrets.get(&format!("demo-{purpose}")).await.unwrap();
        assert!(
            pki.owner_references()
                .iter()
                .any(|o| o.kind == "Cluster" && o.name == "demo"),
            "demo-{purpose} owned by the Cluster"
        );
    }
    let config_maps: Api<ConfigMap> = Api::namespaced(world.client(), world.namespace());
    let locks = config_maps
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|cm| cm.name_any() == "demo-lock")
        .collect::<Vec<_>>();
    assert_eq!(locks.len(), 1);
    assert_eq!(
        kubezero_bootstrap::lock::holder(&locks[0]).as_deref(),
        Some("demo-cp-0")
    );

    join_flow(world, &infra_machines, &config_api, &secrets).await;
}

/// The control plane becomes initialized the realistic way (the machine is provisioned, its Node
/// registers in the workload emulator, the stand-in links it and sets `ControlPlaneInitialized`); then a
/// MachineDeployment of 2 workers gets two identical `kubeadm join` data Secrets and one token.
async fn join_flow(
    world: &WorldView,
    infra_machines: &Api<DynamicObject>,
    config_api: &Api<KubeZeroConfig>,
    secrets: &Api<Secret>,
) {
    let provider_id = "aws:///eu-central-1a/i-0123456789abcdef0";
    let params = PatchParams::apply(TEST_MANAGER).force();
    let identity = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroMachine",
        "metadata": {"name": "demo-cp-0"}});
    let mut spec = identity.clone();
    spec["spec"] = json!({"aws": {"instanceType": "m7g.large"}, "providerID": provider_id});
    infra_machines
        .patch("demo-cp-0", &params, &Patch::Apply(&spec))
        .await
        .unwrap();
    let mut status = identity;
    status["status"] = json!({"initialization": {"provisioned": true}});
    infra_machines
        .patch_status("demo-cp-0", &params, &Patch::Apply(&status))
        .await
        .unwrap();

    let workload = eventually("a client of the workload cluster", || async {
        let secret = secrets.get("demo-kubeconfig").await.ok()?;
        let yaml = String::from_utf8(secret.data?.get("value")?.0.clone()).ok()?;
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).ok()?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .ok()?;
        kube::Client::try_from(config).ok()
    })
    .await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(workload.clone());
    let node: k8s_openapi::api::core::v1::Node =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "ip-10-0-0-10"}, "spec": {"providerID": provider_id}}))
        .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let clusters: Api<kubezero_capi::core::Cluster> = Api::namespaced(world.client(), world.namespace());
    eventually("the Cluster's control plane is initialized", || async {
        clusters
            .get("demo")
            .await
            .ok()?
            .control_plane_initialized()
            .then_some(())
    })
    .await;

    create_worker_pool(world, "demo", "demo-workers", 2).await;

    let worker_data = eventually("two worker data Secrets", || async {
        let configs = config_api
            .list(&ListParams::default().labels("cluster.x-k8s.io/deployment-name=demo-workers"))
            .await
            .ok()?
            .items;
        if configs.len() != 2 {
            return None;
        }
        let mut data = Vec::new();
        for config in configs {
            let name = config.status?.data_secret_name?;
            data.push(user_data(&secrets.get(&name).await.ok()?).0);
        }
        Some(data)
    })
    .await;
    assert!(worker_data[0].contains("kubeadm join"), "{}", worker_data[0]);
    assert!(!worker_data[0].contains("kubeadm init"));
    assert_eq!(
        worker_data[0], worker_data[1],
        "one MachineSet, identical user data"
    );
    let tokens: Api<Secret> = Api::namespaced(workload, "kube-system");
    let tokens = tokens
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|s| s.type_.as_deref() == Some("bootstrap.kubernetes.io/token"))
        .count();
    assert_eq!(tokens, 1, "one token for the MachineSet");
    let config_maps: Api<ConfigMap> = Api::namespaced(world.client(), world.namespace());
    eventually("the init lock is released", || async {
        config_maps
            .get_opt("demo-lock")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}
