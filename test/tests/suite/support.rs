//! Waiting helpers shared by the suites: poll until a condition holds, bound a whole test.

use std::future::Future;
use std::time::Duration;

/// How long [`eventually`] waits before failing.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// How long [`bounded`] lets a whole test body run.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Polls `check` every 100 ms until it returns `Some`, failing after [`WAIT`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, WAIT, check).await
}

/// [`eventually`], failing after `wait`: for a wait that spans several controllers' steps.
pub(crate) async fn eventually_within<T, F, Fut>(what: &str, wait: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {wait:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a test body under [`TEST_TIMEOUT`].
pub(crate) async fn bounded(body: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test finished in time");
}

/// An API for a provider or CAPI kind in the world's namespace, by group, version, kind and plural.
pub(crate) fn dynamic(
    world: &kubezero_test::world::WorldView,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> kube::Api<kube::api::DynamicObject> {
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    kube::Api::namespaced_with(
        world.client(),
        world.namespace(),
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

/// Creates `object` in the world's namespace, panicking with the API's answer on failure.
pub(crate) async fn create(
    world: &kubezero_test::world::WorldView,
    api: &kube::Api<kube::api::DynamicObject>,
    mut object: serde_json::Value,
) {
    object["metadata"]["namespace"] = serde_json::json!(world.namespace());
    let object: kube::api::DynamicObject = serde_json::from_value(object).expect("a Kubernetes object");
    let name = object.metadata.name.clone().unwrap_or_default();
    api.create(&kube::api::PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
}

/// Creates Cluster `name` (machine-based control plane, no controlPlaneRef) and its AWS
/// KubeZeroCluster, as `templates/cluster-template.yaml` does, after preparing its workload cluster
/// (`WorldView::prepare_cluster`: core finds the kubeconfig Secret in either mode); returns the
/// KubeZeroCluster API.
pub(crate) async fn create_cluster(
    world: &kubezero_test::world::WorldView,
    name: &str,
) -> kube::Api<kube::api::DynamicObject> {
    create_cluster_with(world, name, serde_json::json!({"region": "eu-central-1"})).await
}

/// [`create_cluster`] with `aws` as the KubeZeroCluster's `spec.aws`.
pub(crate) async fn create_cluster_with(
    world: &kubezero_test::world::WorldView,
    name: &str,
    aws: serde_json::Value,
) -> kube::Api<kube::api::DynamicObject> {
    use serde_json::json;
    world
        .prepare_cluster(name)
        .await
        .unwrap_or_else(|e| panic!("prepare the workload cluster of {name}: {e}"));
    let clusters = dynamic(world, "cluster.x-k8s.io", "v1beta2", "Cluster", "clusters");
    create(world, &clusters, json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {"clusterNetwork": {"pods": {"cidrBlocks": ["10.244.0.0/16"]}, "services": {"cidrBlocks": ["10.96.0.0/12"]}},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroCluster", "name": name}}}))
    .await;
    let infra_clusters = dynamic(
        world,
        "infrastructure.cluster.x-k8s.io",
        "v1alpha1",
        "KubeZeroCluster",
        "kubezeroclusters",
    );
    create(
        world,
        &infra_clusters,
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
        "kind": "KubeZeroCluster", "metadata": {"name": name}, "spec": {"aws": aws}}),
    )
    .await;
    infra_clusters
}

/// Creates a worker pool of `cluster`: KubeZeroMachineTemplate and KubeZeroConfigTemplate named
/// `name`, and a MachineDeployment `name` of `replicas` using them (labels set explicitly, so the
/// same manifest works against real Cluster API).
pub(crate) async fn create_worker_pool(
    world: &kubezero_test::world::WorldView,
    cluster: &str,
    name: &str,
    replicas: i64,
) {
    use serde_json::json;
    let machine_templates = dynamic(
        world,
        "infrastructure.cluster.x-k8s.io",
        "v1alpha1",
        "KubeZeroMachineTemplate",
        "kubezeromachinetemplates",
    );
    create(
        world,
        &machine_templates,
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
        "kind": "KubeZeroMachineTemplate", "metadata": {"name": name},
        "spec": {"template": {"spec": {"aws": {"instanceType": "m7g.large"}}}}}),
    )
    .await;
    let config_templates = dynamic(
        world,
        "bootstrap.cluster.x-k8s.io",
        "v1alpha1",
        "KubeZeroConfigTemplate",
        "kubezeroconfigtemplates",
    );
    create(
        world,
        &config_templates,
        json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1alpha1",
        "kind": "KubeZeroConfigTemplate", "metadata": {"name": name}, "spec": {"template": {"spec": {}}}}),
    )
    .await;
    let labels = json!({"cluster.x-k8s.io/cluster-name": cluster, "cluster.x-k8s.io/deployment-name": name});
    let deployments = dynamic(
        world,
        "cluster.x-k8s.io",
        "v1beta2",
        "MachineDeployment",
        "machinedeployments",
    );
    create(world, &deployments, json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
        "metadata": {"name": name, "labels": {"cluster.x-k8s.io/cluster-name": cluster}},
        "spec": {"clusterName": cluster, "replicas": replicas, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"clusterName": cluster, "version": "v1.34.1",
                "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeZeroConfigTemplate", "name": name}},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroMachineTemplate", "name": name}}}}}))
    .await;
}

/// Starts a [`kubezero_test::world::World`] with both managers, runs `flow` in its own task under
/// `timeout`, stops the managers and fails with their logs when the flow panicked or timed out; the
/// world's cloud is a fresh moto server seeded with Alpine AMIs: the provider manager talks to it,
/// and `flow` gets it too (to count what is left there).
pub(crate) async fn with_managers_on_moto<F, Fut>(timeout: Duration, flow: F)
where
    F: FnOnce(kubezero_test::world::WorldView, std::sync::Arc<kubezero_test::cloud::Moto>) -> Fut
        + Send
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let moto = kubezero_test::cloud::Moto::builder()
        .amis(kubezero_test::cloud::alpine_amis())
        .start()
        .expect("moto starts");
    let moto = std::sync::Arc::new(moto);
    let mut world = kubezero_test::world::World::start_with_cloud(&moto)
        .await
        .expect("the world starts");
    world.start_managers().expect("the managers start");
    let view = world.view();
    let flow_moto = moto.clone();
    let outcome =
        tokio::spawn(async move { tokio::time::timeout(timeout, flow(view, flow_moto)).await }).await;
    let logs = world.stop_managers();
    match outcome {
        Ok(Ok(())) => assert_no_rbac_refusals(&logs),
        Ok(Err(_)) => panic!("the flow timed out after {timeout:?}; manager logs:\n{logs}"),
        Err(failure) => panic!("{failure}; manager logs:\n{logs}\nmoto:\n{}", moto.output_tail()),
    }
}

/// Fails when a manager was refused by the API server's RBAC: the managers run under the shipped
/// roles, so each refusal is a rule they lack, even where the flow got by without it (an Event
/// not recorded, a read retried).
pub(crate) fn assert_no_rbac_refusals(logs: &str) {
    let refused: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("is forbidden: User"))
        .collect();
    assert!(
        refused.is_empty(),
        "the managers were refused by RBAC (rules the shipped roles lack):\n{}",
        refused.join("\n")
    );
}

/// The provider's AWS client set for `moto` in `region` (see `Moto::aws_clients`).
pub(crate) async fn moto_clients(
    moto: &kubezero_test::cloud::Moto,
    region: &str,
) -> kubezero_provider::aws::clients::AwsClients {
    moto.aws_clients(region).await
}

/// Like [`with_managers_on_moto`] without a cloud (AWS calls go to a closed loopback port), with extra
/// manager flags (see `World::start_managers_with`).
pub(crate) async fn with_managers_flags<F, Fut>(timeout: Duration, flags: &[(&str, &str)], flow: F)
where
    F: FnOnce(kubezero_test::world::WorldView) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut world = kubezero_test::world::World::start()
        .await
        .expect("the world starts");
    world.start_managers_with(flags).expect("the managers start");
    let view = world.view();
    let outcome = tokio::spawn(async move { tokio::time::timeout(timeout, flow(view)).await }).await;
    let logs = world.stop_managers();
    match outcome {
        Ok(Ok(())) => assert_no_rbac_refusals(&logs),
        Ok(Err(_)) => panic!("the flow timed out after {timeout:?}; manager logs:\n{logs}"),
        Err(failure) => panic!("{failure}; manager logs:\n{logs}"),
    }
}
