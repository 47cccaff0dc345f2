//! End to end: both managers running against a management cluster (the emulator with the CAPI
//! stand-in, or a real cluster when `KUBEZERO_E2E_KUBECONFIG` is set), driven only through the API.
//!
//! The cloud is a moto server: the KubeZeroCluster's AWS infrastructure is really created there and
//! released on deletion, with nothing of the cluster left in moto at the end. These tests assert the
//! contract's objects, owners, labels, annotations, conditions and deletion order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{create_cluster, create_worker_pool, eventually, with_managers_on_moto};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use kubezero_bootstrap::api::KubeZeroConfig;
use kubezero_capi::core::{Cluster, Machine};
use kubezero_provider::api::{KubeZeroCluster, KubeZeroMachine};
use kubezero_test::world::WorldView;
use serde_json::json;

fn machine_deployments(world: &WorldView) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "MachineDeployment"),
        "machinedeployments",
    );
    Api::namespaced_with(world.client(), world.namespace(), &resource)
}

fn api<K>(world: &WorldView) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    Api::namespaced(world.client(), world.namespace())
}

/// Watches `api` and records `(kind, name)` the first time an object is seen deleting or deleted.
fn record_deletions<K>(
    api: Api<K>,
    kind: &'static str,
    log: Arc<Mutex<Vec<(String, String)>>>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = events.next().await {
            let (object, deleted) = match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => (o, false),
                watcher::Event::Delete(o) => (o, true),
                _ => continue,
            };
            if deleted || object.meta().deletion_timestamp.is_some() {
                let entry = (kind.to_string(), object.name_any());
                let mut log = log.lock().unwrap();
                if !log.contains(&entry) {
                    log.push(entry);
                }
            }
        }
    })
}

/// Watches KubeZeroConfigs and, the first time each is seen deleting or deleted, checks its
/// KubeZeroMachine (same name, contract §4.1) through the API: the contract deletes the infra object and
/// waits until it is gone before deleting the bootstrap config (§5), so the KubeZeroMachine must be
/// gone or deleting by then. Records the names for which it was still live. A causal check: it does
/// not depend on the arrival order of events from different watches.
fn check_infra_gone_before_config(
    configs: Api<KubeZeroConfig>,
    infra_machines: Api<KubeZeroMachine>,
    violations: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut checked = std::collections::BTreeSet::new();
        let mut events = watcher(configs, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = events.next().await {
            let (config, deleted) = match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => (o, false),
                watcher::Event::Delete(o) => (o, true),
                _ => continue,
            };
            let name = config.name_any();
            if !(deleted || config.metadata.deletion_timestamp.is_some()) || !checked.insert(name.clone()) {
                continue;
            }
            if let Ok(Some(infra)) = infra_machines.get_opt(&name).await
                && infra.metadata.deletion_timestamp.is_none()
            {
                violations.lock().unwrap().push(name);
            }
        }
    })
}

fn ready_reason(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> Option<String> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_deployment_scales_0_3_0_with_both_managers_and_contract_objects() {
    with_managers_on_moto(Duration::from_secs(240), |world, moto| async move {
        scale_0_3_0(&world, &moto).await
    })
    .await;
}

async fn scale_0_3_0(world: &WorldView, moto: &kubezero_test::cloud::Moto) {
    let namespace = world.namespace().to_string();
    let infra_clusters = create_cluster(world, "demo").await;
    create_worker_pool(world, "demo", "demo-workers", 0).await;

    // The KubeZeroCluster is adopted by core and reconciled by our provider.
    let kzc_api = api::<KubeZeroCluster>(world);
    let infra = eventually(
        "KubeZeroCluster owned by the Cluster, with our finalizer, provisioned on AWS",
        || async {
            let infra = kzc_api.get("demo").await.ok()?;
            let owned = infra
                .owner_references()
                .iter()
                .any(|o| o.kind == "Cluster" && o.name == "demo");
            let finalized = infra
                .finalizers()
                .iter()
                .any(|f| f == kubezero_provider::api::FINALIZER_CLUSTER);
            let reason = ready_reason(infra.status.as_ref().map_or(&[], |s| &s.conditions))?;
            let provisioned = infra.status.as_ref()?.initialization.as_ref()?.provisioned == Some(true);
            (owned && finalized && reason == "InfrastructureReady" && provisioned).then_some(infra)
        },
    )
    .await;
    let endpoint = infra.spec.control_plane_endpoint.clone().expect("endpoint set");
    let aws_status = infra
        .status
        .as_ref()
        .and_then(|s| s.aws.clone())
        .expect("status.aws");
    assert_eq!(endpoint.host, aws_status.load_balancer.dns_name);
    assert_eq!(endpoint.port, 6443);
    let zones = &infra.status.as_ref().unwrap().failure_domains;
    assert_eq!(zones.len(), 3, "three availability zones: {zones:?}");
    eventually("the Cluster reports its infrastructure provisioned", || async {
        api::<Cluster>(world)
            .get("demo")
            .await
            .ok()?
            .infrastructure_provisioned()
            .then_some(())
    })
    .await;

    // Both managers hold their leader Lease in the test namespace.
    let leases = api::<Lease>(world);
    eventually("both leader Leases", || async {
        let names: Vec<String> = leases
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .map(|l| l.name_any())
            .collect();
        (names.contains(&"kubezero-provider".to_string())
            && names.contains(&"kubezero-bootstrap".to_string()))
        .then_some(())
    })
    .await;

    let deletions = Arc::new(Mutex::new(Vec::new()));
    let violations = Arc::new(Mutex::new(Vec::new()));
    let recorders = [
        record_deletions(
            api::<KubeZeroMachine>(world),
            "KubeZeroMachine",
            deletions.clone(),
        ),
        record_deletions(api::<KubeZeroConfig>(world), "KubeZeroConfig", deletions.clone()),
        record_deletions(api::<Machine>(world), "Machine", deletions.clone()),
        check_infra_gone_before_config(
            api::<KubeZeroConfig>(world),
            api::<KubeZeroMachine>(world),
            violations.clone(),
        ),
    ];

    machine_deployments(world)
        .patch(
            "demo-workers",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    let machines_api = api::<Machine>(world);
    let kzm_api = api::<KubeZeroMachine>(world);
    let config_api = api::<KubeZeroConfig>(world);
    let selector = "cluster.x-k8s.io/deployment-name=demo-workers";
    let machines = eventually(
        "3 Machines whose KubeZeroMachines and KubeZeroConfigs carry the contract",
        || async {
            let machines = machines_api
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?
                .items;
            if machines.len() != 3 {
                return None;
            }
            for machine in &machines {
                let infra_name = &machine.spec.infrastructure_ref.as_ref()?.name;
                let config_name = &machine.spec.bootstrap.config_ref.as_ref()?.name;
                let infra = kzm_api.get_opt(infra_name).await.ok()??;
                let config = config_api.get_opt(config_name).await.ok()??;
                for (meta, template_kind) in [
                    (
                        &infra.metadata,
                        "KubeZeroMachineTemplate.infrastructure.cluster.x-k8s.io",
                    ),
                    (
                        &config.metadata,
                        "KubeZeroConfigTemplate.bootstrap.cluster.x-k8s.io",
                    ),
                ] {
                    let owners = meta.owner_references.clone().unwrap_or_default();
                    let controller = owners.iter().find(|o| o.controller == Some(true))?;
                    if controller.kind != "Machine" || controller.name != machine.name_any() {
                        return None;
                    }
                    let labels = meta.labels.clone().unwrap_or_default();
                    let annotations = meta.annotations.clone().unwrap_or_default();
                    assert_eq!(
                        labels.get("cluster.x-k8s.io/cluster-name").map(String::as_str),
                        Some("demo")
                    );
                    assert_eq!(
                        annotations
                            .get("cluster.x-k8s.io/cloned-from-name")
                            .map(String::as_str),
                        Some("demo-workers")
                    );
                    assert_eq!(
                        annotations
                            .get("cluster.x-k8s.io/cloned-from-groupkind")
                            .map(String::as_str),
                        Some(template_kind)
                    );
                }
                // Our managers reconciled both: finalizer on the infra machine, Ready reported on both.
                if !infra
                    .finalizers()
                    .iter()
                    .any(|f| f == kubezero_provider::api::FINALIZER_MACHINE)
                {
                    return None;
                }
                ready_reason(infra.status.as_ref().map_or(&[], |s| &s.conditions))?;
                ready_reason(config.status.as_ref().map_or(&[], |s| &s.conditions))?;
            }
            Some(machines)
        },
    )
    .await;
    let machine_names: Vec<String> = machines.iter().map(ResourceExt::name_any).collect();

    machine_deployments(world)
        .patch(
            "demo-workers",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    eventually(
        "Machines, KubeZeroMachines and KubeZeroConfigs all gone",
        || async {
            let machines = machines_api.list(&ListParams::default()).await.ok()?.items.len();
            let infra = kzm_api.list(&ListParams::default()).await.ok()?.items.len();
            let configs = config_api.list(&ListParams::default()).await.ok()?.items.len();
            (machines + infra + configs == 0).then_some(())
        },
    )
    .await;
    let order = deletions.lock().unwrap().clone();
    for name in &machine_names {
        let position = |kind: &str| order.iter().position(|(k, n)| k == kind && n == name);
        let (infra, config) = (position("KubeZeroMachine"), position("KubeZeroConfig"));
        assert!(
            infra.is_some() && config.is_some(),
            "{name}: both deletions observed: {order:?}"
        );
    }
    let violations = violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "bootstrap configs deleted while their KubeZeroMachine was still live: {violations:?}"
    );
    for recorder in recorders {
        recorder.abort();
    }

    // Deleting the Cluster removes the KubeZeroCluster too (our finalizer released).
    api::<Cluster>(world)
        .delete("demo", &DeleteParams::default())
        .await
        .unwrap();
    eventually("Cluster and KubeZeroCluster gone", || async {
        let cluster = api::<Cluster>(world).get_opt("demo").await.ok()?;
        let infra = kzc_api.get_opt("demo").await.ok()?;
        (cluster.is_none() && infra.is_none()).then_some(())
    })
    .await;
    let left = infra_clusters
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len()
        + machines_api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
    assert_eq!(left, 0, "nothing of the cluster is left in {namespace}");
    let aws = moto.aws_clients("eu-central-1").await;
    let tags = kubezero_provider::aws::tags::ClusterTags::new("demo", Default::default());
    let inventory = kubezero_provider::aws::inventory::inventory(&aws)
        .await
        .expect("moto inventory");
    let owned: Vec<_> = inventory
        .owned_counts(&tags)
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(
        owned.is_empty(),
        "cloud resources of the cluster left in moto: {owned:?}"
    );
}

/// Stands in for the AWS backend of a world without a cloud: KubeZeroCluster `name` reports itself
/// provisioned at a control-plane endpoint (the test's own field manager).
async fn report_infrastructure_provisioned(infra_clusters: &Api<DynamicObject>, name: &str) {
    let params = PatchParams::apply("kubezero-e2e-test").force();
    let identity = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroCluster",
        "metadata": {"name": name}});
    let mut spec = identity.clone();
    spec["spec"] = json!({"aws": {"region": "eu-central-1"},
        "controlPlaneEndpoint": {"host": format!("api.{name}.example"), "port": 6443}});
    infra_clusters
        .patch(name, &params, &Patch::Apply(&spec))
        .await
        .expect("endpoint applied");
    let mut status = identity;
    status["status"] = json!({"initialization": {"provisioned": true}});
    infra_clusters
        .patch_status(name, &params, &Patch::Apply(&status))
        .await
        .expect("provisioned applied");
}

/// The bootstrap manager without its rule on KubeZeroClusters (the bug a real `clusterctl init`
/// install hit): the API server refuses its read with Forbidden, and the control-plane machine gets
/// no bootstrap data. With the shipped role the same flow writes the data (the bootstrap suite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_kubezeroclusters_rule_the_bootstrap_manager_is_forbidden_and_writes_no_data() {
    use kubezero_test::world::{ManagerRbac, World};
    let rbac = ManagerRbac::shipped().expect("the shipped RBAC").without_rule(
        "kubezero-bootstrap",
        "infrastructure.cluster.x-k8s.io",
        "kubezeroclusters",
    );
    let mut world = World::start_with_rbac(rbac).await.expect("the world starts");
    world.start_managers().expect("the managers start");
    let view = world.view();
    let forbidden = format!(
        "kubezeroclusters.infrastructure.cluster.x-k8s.io \"w1\" is forbidden: User \
         \"system:serviceaccount:{namespace}:kubezero-bootstrap\" cannot get resource \"kubezeroclusters\" in \
         API group \"infrastructure.cluster.x-k8s.io\" in the namespace \"{namespace}\"",
        namespace = view.namespace()
    );
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        let infra_clusters = create_cluster(&view, "w1").await;
        let machines = crate::support::dynamic(&view, "cluster.x-k8s.io", "v1beta2", "Machine", "machines");
        crate::support::create(&view, &machines, json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "w1-cp-0", "labels": {"cluster.x-k8s.io/cluster-name": "w1", "cluster.x-k8s.io/control-plane": ""}},
            "spec": {"clusterName": "w1", "version": "v1.34.1",
                "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeZeroConfig", "name": "w1-cp-0"}},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroMachine", "name": "w1-cp-0"}}})).await;
        let infra_machines = crate::support::dynamic(
            &view,
            "infrastructure.cluster.x-k8s.io",
            "v1alpha1",
            "KubeZeroMachine",
            "kubezeromachines",
        );
        crate::support::create(&view, &infra_machines, json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
            "kind": "KubeZeroMachine", "metadata": {"name": "w1-cp-0"}, "spec": {"aws": {"instanceType": "m7g.large"}}})).await;
        let configs = crate::support::dynamic(
            &view,
            "bootstrap.cluster.x-k8s.io",
            "v1alpha1",
            "KubeZeroConfig",
            "kubezeroconfigs",
        );
        crate::support::create(&view, &configs, json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1alpha1",
            "kind": "KubeZeroConfig", "metadata": {"name": "w1-cp-0"}, "spec": {"format": "alpine-config"}})).await;
        report_infrastructure_provisioned(&infra_clusters, "w1").await;
        eventually("the bootstrap manager to report the refusal", || async {
            world.manager_log("kubezero-bootstrap").contains(&forbidden).then_some(())
        })
        .await;
        let config = api::<KubeZeroConfig>(&view).get("w1-cp-0").await.expect("the config");
        let status = config.status.unwrap_or_default();
        assert_eq!(status.data_secret_name, None, "no data Secret is recorded");
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        assert!(ready.is_none_or(|c| c.status != "True"), "not ready: {ready:?}");
        let secret = api::<k8s_openapi::api::core::v1::Secret>(&view)
            .get_opt("w1-cp-0")
            .await
            .expect("a Secret lookup");
        assert!(secret.is_none(), "no data Secret was written");
    })
    .await;
    let logs = world.stop_managers();
    outcome.unwrap_or_else(|_| panic!("timed out; manager logs:\n{logs}"));
}

/// CAPI core's manager acts on the kubezero kinds through `capi-aggregated-manager-role`, which
/// aggregates our `*-aggregate-to-capi-manager` roles: it may do what core does with them (adopt
/// and label them, create infra machines and bootstrap configs from templates, delete them).
/// Against a real cluster this checks the installed core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_api_core_manages_the_kubezero_kinds_through_its_aggregated_role() {
    use kubezero_test::world::World;
    use kubezero_test::world::rbac::{CORE_NAMESPACE, CORE_SERVICE_ACCOUNT};
    let world = World::start().await.expect("the world starts");
    let core = world
        .service_account_client(CORE_NAMESPACE, CORE_SERVICE_ACCOUNT)
        .await
        .expect("a client as CAPI core");
    let namespace = world.namespace().to_owned();
    let kinds = [
        (
            "infrastructure.cluster.x-k8s.io",
            "KubeZeroCluster",
            "kubezeroclusters",
            json!({"aws": {"region": "eu-central-1"}}),
        ),
        (
            "infrastructure.cluster.x-k8s.io",
            "KubeZeroMachine",
            "kubezeromachines",
            json!({"aws": {"instanceType": "m7g.large"}}),
        ),
        (
            "infrastructure.cluster.x-k8s.io",
            "KubeZeroMachineTemplate",
            "kubezeromachinetemplates",
            json!({"template": {"spec": {"aws": {"instanceType": "m7g.large"}}}}),
        ),
        (
            "bootstrap.cluster.x-k8s.io",
            "KubeZeroConfig",
            "kubezeroconfigs",
            json!({}),
        ),
        (
            "bootstrap.cluster.x-k8s.io",
            "KubeZeroConfigTemplate",
            "kubezeroconfigtemplates",
            json!({"template": {"spec": {}}}),
        ),
    ];
    tokio::time::timeout(Duration::from_secs(60), async {
        for (group, kind, plural, spec) in kinds {
            let resource = ApiResource::from_gvk_with_plural(
                &kube::api::GroupVersionKind::gvk(group, "v1alpha1", kind),
                plural,
            );
            let api: Api<DynamicObject> = Api::namespaced_with(core.clone(), &namespace, &resource);
            let object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": format!("{group}/v1alpha1"), "kind": kind,
                "metadata": {"name": "core-made", "namespace": namespace}, "spec": spec}))
            .unwrap();
            // The aggregation runs in the background: wait for the first grant.
            eventually(&format!("CAPI core may create {plural}"), || async {
                api.create(&kube::api::PostParams::default(), &object)
                    .await
                    .ok()
                    .map(|_| ())
            })
            .await;
            api.get("core-made")
                .await
                .unwrap_or_else(|e| panic!("get {plural}: {e}"));
            api.list(&ListParams::default())
                .await
                .unwrap_or_else(|e| panic!("list {plural}: {e}"));
            let labels = json!({"metadata": {"labels": {"cluster.x-k8s.io/cluster-name": "c"}}});
            api.patch("core-made", &PatchParams::default(), &Patch::Merge(&labels))
                .await
                .unwrap_or_else(|e| panic!("patch {plural}: {e}"));
            let mut watch = api
                .watch(&kube::api::WatchParams::default(), "0")
                .await
                .unwrap_or_else(|e| panic!("watch {plural}: {e}"))
                .boxed();
            let first = watch.next().await.expect("an event");
            assert!(first.is_ok(), "watch {plural}: {first:?}");
            api.delete("core-made", &DeleteParams::default())
                .await
                .unwrap_or_else(|e| panic!("delete {plural}: {e}"));
        }
        // The aggregated role grants the kubezero kinds, not everything (a real core's own role,
        // aggregated too, grants it more, so this holds for the emulated core only).
        if world.is_emulated() {
            let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(core.clone(), &namespace);
            let secret = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
            match secrets.create(&kube::api::PostParams::default(), &secret).await {
                Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
                other => panic!("the aggregated role allowed creating a Secret: {other:?}"),
            }
        }
    })
    .await
    .expect("bounded");
}
