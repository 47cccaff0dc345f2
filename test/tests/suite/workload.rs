//! Workload clusters of the test world (`kubezero_test::workload`): the `<cluster>-kubeconfig`
//! Secret written when the infrastructure is provisioned (or prepared before the Cluster exists, as
//! the [`World`] does in both modes) leads a kube client to the cluster's own emulator, and moto
//! instances become Nodes that core (the stand-in or a real one) links to Machines by provider ID.
//! Provider behaviour (KubeZeroCluster and KubeZeroMachine status) is simulated by patching those
//! objects here, as test setup. Every wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{bounded, eventually};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use kubezero_test::apiserver::ApiServer;
use kubezero_test::capi::{self, CapiCore, CapiCoreOptions, CapiKind, KubeconfigSecretClusters};
use kubezero_test::cloud::{Moto, alpine_amis};
use kubezero_test::workload::WorkloadEmulators;
use kubezero_test::world::World;
use serde_json::{Value, json};

/// One of the AMIs seeded by [`alpine_amis`].
const AMI: &str = "ami-0a19e00000000222a";

async fn provider_api(client: &Client, namespace: &str, group: &str, kind: &str) -> Api<DynamicObject> {
    let ar = capi::resolve(client, group, kind)
        .await
        .expect("provider kind resolves");
    Api::namespaced_with(client.clone(), namespace, &ar)
}

async fn create(api: &Api<DynamicObject>, value: Value) -> DynamicObject {
    let obj: DynamicObject = serde_json::from_value(value).expect("object JSON");
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", obj.name_any()))
}

/// KubeZeroCluster + Cluster `name`; then the provider's part: endpoint and `provisioned`.
async fn provisioned_cluster(client: &Client, namespace: &str, name: &str) {
    let kzc = provider_api(
        client,
        namespace,
        "infrastructure.cluster.x-k8s.io",
        "KubeZeroCluster",
    )
    .await;
    create(
        &kzc,
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroCluster",
            "metadata": {"name": name}, "spec": {"aws": {"region": "us-east-1"}}}),
    )
    .await;
    create(
        &CapiKind::Cluster.api(client.clone(), namespace),
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "metadata": {"name": name},
            "spec": {"infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                "kind": "KubeZeroCluster", "name": name}}}),
    )
    .await;
    kzc.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"controlPlaneEndpoint": {"host": "10.0.0.10", "port": 6443}}})),
    )
    .await
    .expect("endpoint");
    kzc.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"initialization": {"provisioned": true}}})),
    )
    .await
    .expect("provisioned");
}

/// The `value` of `<cluster>-kubeconfig`, once it exists.
async fn kubeconfig_secret(client: &Client, namespace: &str, cluster: &str) -> Secret {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let name = format!("{cluster}-kubeconfig");
    eventually(&name, || async { secrets.get_opt(&name).await.ok()? }).await
}

fn value_of(secret: &Secret) -> String {
    let data = secret.data.as_ref().expect("secret data");
    String::from_utf8(data["value"].0.clone()).expect("UTF-8 kubeconfig")
}

/// A kube client from a kubeconfig Secret's `value`, as core's ClusterCache builds one.
async fn client_from(value: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(value).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(config).expect("client")
}

fn condition_status(obj: &DynamicObject, type_: &str) -> Option<String> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn provisioned_cluster_gets_a_kubeconfig_secret_that_reaches_its_workload_emulator() {
    bounded(async {
        let server = ApiServer::start().await.expect("emulator starts");
        let mut crds = kubezero_provider::api::crds();
        crds.extend(kubezero_bootstrap::api::crds());
        server.install_crds(&crds).await.expect("kubezero CRDs install");
        let client = server.client().expect("client");
        CapiCore::install(client.clone())
            .await
            .expect("CAPI CRDs install");
        let workloads = WorkloadEmulators::start(client.clone());
        let core = CapiCore::start(
            client.clone(),
            CapiCoreOptions {
                poll_interval: Duration::from_millis(150),
                resync_interval: Duration::from_secs(2),
                workload_clusters: Some(Arc::new(KubeconfigSecretClusters::new(client.clone()))),
                kubeconfig: false,
            },
        );
        let ns = "default";
        let secrets = Api::<Secret>::namespaced(client.clone(), ns);
        let clusters = CapiKind::Cluster.api(client.clone(), ns);

        // Not before the infrastructure is provisioned.
        create(
            &clusters,
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "metadata": {"name": "early"},
                "spec": {"controlPlaneEndpoint": {"host": "10.0.0.9", "port": 6443},
                    "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                        "kind": "KubeZeroCluster", "name": "missing"}}}),
        )
        .await;

        provisioned_cluster(&client, ns, "demo").await;
        let secret = kubeconfig_secret(&client, ns, "demo").await;
        let cluster = clusters.get("demo").await.unwrap();
        assert_eq!(
            cluster.data["status"]["initialization"]["infrastructureProvisioned"],
            json!(true)
        );
        // The contract's Secret (§6).
        assert_eq!(secret.type_.as_deref(), Some(capi::CLUSTER_SECRET_TYPE));
        assert_eq!(secret.labels()[capi::CLUSTER_NAME_LABEL], "demo");
        let owners = secret.owner_references();
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (
                owners[0].api_version.as_str(),
                owners[0].kind.as_str(),
                owners[0].name.as_str()
            ),
            (capi::CAPI_API_VERSION, "Cluster", "demo")
        );
        assert_eq!(Some(owners[0].uid.as_str()), cluster.uid().as_deref());
        assert_eq!(owners[0].controller, None, "non-controller owner");
        let value = value_of(&secret);
        let parsed = Kubeconfig::from_yaml(&value).expect("kubeconfig parses");
        assert_eq!(parsed.current_context.as_deref(), Some("demo-admin@demo"));
        let url = workloads.url(ns, "demo").expect("demo's emulator runs");
        assert_eq!(
            parsed.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
            Some(url.as_str())
        );
        assert_ne!(url, server.url(), "a separate emulator");

        // A client from the Secret reaches the workload emulator, not the management cluster.
        let workload = client_from(&value).await;
        let namespaces = Api::<Namespace>::all(workload.clone())
            .list(&ListParams::default())
            .await
            .expect("list workload namespaces");
        assert!(namespaces.items.iter().any(|n| n.name_any() == "kube-system"));
        let config_maps = Api::<ConfigMap>::namespaced(workload.clone(), "default");
        let marker = ConfigMap {
            metadata: ObjectMeta {
                name: Some("only-in-demo".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        config_maps.create(&PostParams::default(), &marker).await.unwrap();
        let management_maps = Api::<ConfigMap>::namespaced(client.clone(), "default");
        assert!(management_maps.get_opt("only-in-demo").await.unwrap().is_none());
        assert!(secrets.get_opt("early-kubeconfig").await.unwrap().is_none());
        assert_eq!(workloads.clusters(), vec![(ns.to_string(), "demo".to_string())]);

        // The stand-in mints nothing of its own even once `<cluster>-ca` exists, and a deleted
        // Secret is written again (core writes it whenever it is missing).
        secrets
            .create(&PostParams::default(), &ca_secret("demo"))
            .await
            .unwrap();
        secrets
            .delete("demo-kubeconfig", &DeleteParams::default())
            .await
            .unwrap();
        let again = kubeconfig_secret(&client, ns, "demo").await;
        assert_eq!(value_of(&again), value, "same emulator, same kubeconfig");
        tokio::time::sleep(Duration::from_millis(700)).await;
        let settled = secrets.get("demo-kubeconfig").await.unwrap();
        assert_eq!(
            value_of(&settled),
            value,
            "the stand-in did not mint one from demo-ca"
        );

        // Deleting the Cluster stops its emulator.
        clusters.delete("demo", &DeleteParams::default()).await.unwrap();
        eventually("demo's emulator to stop", || async {
            workloads.url(ns, "demo").is_none().then_some(())
        })
        .await;
        let gone = tokio::time::timeout(
            Duration::from_secs(5),
            Api::<Namespace>::all(workload).list(&ListParams::default()),
        )
        .await;
        assert!(
            !matches!(gone, Ok(Ok(_))),
            "the stopped emulator no longer answers"
        );

        drop(core);
        drop(workloads);
        server.shutdown().await;
    })
    .await;
}

/// A `<cluster>-ca` Secret (a throwaway self-signed CA), to show the stand-in does not use it here.
fn ca_secret(cluster: &str) -> Secret {
    use std::collections::BTreeMap;
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("{cluster}-ca")),
            labels: Some(BTreeMap::from([(
                capi::CLUSTER_NAME_LABEL.to_string(),
                cluster.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some(capi::CLUSTER_SECRET_TYPE.to_string()),
        string_data: Some(BTreeMap::from([
            ("tls.crt".to_string(), "not a certificate".to_string()),
            ("tls.key".to_string(), "not a key".to_string()),
        ])),
        ..Secret::default()
    }
}

/// An EC2 Query API call to moto; panics (with moto's output) unless it answers 200.
async fn ec2(moto: &Moto, form: &str) -> String {
    let (addr, region, key) = (moto.addr(), moto.region(), moto.access_key_id());
    let query = form.to_string();
    let response =
        tokio::task::spawn_blocking(move || kubezero_test::cloud::ec2_query(addr, region, key, &query))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}\nmoto output:\n{}", moto.output_tail()));
    assert_eq!(response.status, 200, "{form}: {}", response.text());
    response.text()
}

/// The first `<tag>…</tag>` text of `xml`.
fn first<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = xml.find(&open).unwrap_or_else(|| panic!("no <{tag}> in {xml}")) + open.len();
    let end = xml[start..].find(&format!("</{tag}>")).expect("closing tag") + start;
    &xml[start..end]
}

/// RunInstances of one instance in `us-east-1a`, tagged `<key>=owned`; returns its id.
async fn run_instance(moto: &Moto, tag_key: &str) -> String {
    let form = format!(
        "Action=RunInstances&ImageId={AMI}&MinCount=1&MaxCount=1&InstanceType=t3.small\
         &Placement.AvailabilityZone=us-east-1a&TagSpecification.1.ResourceType=instance\
         &TagSpecification.1.Tag.1.Key={}&TagSpecification.1.Tag.1.Value=owned",
        tag_key.replace('/', "%2F")
    );
    first(&ec2(moto, &form).await, "instanceId").to_string()
}

async fn node_with(workload: &Client, provider_id: &str) -> Option<Node> {
    let nodes = Api::<Node>::all(workload.clone())
        .list(&ListParams::default())
        .await
        .ok()?;
    nodes
        .items
        .into_iter()
        .find(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(provider_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_instances_become_nodes_that_link_machines_and_initialize_the_control_plane() {
    bounded(async {
        let moto = Moto::builder()
            .amis(alpine_amis())
            .start()
            .expect("moto starts (run scripts/test-tools.sh)");
        let world = World::start_with_cloud(&moto).await.expect("world starts");
        let (client, ns) = (world.client(), world.namespace().to_string());
        let url = world.prepare_cluster("demo").await.expect("workload cluster prepared");
        provisioned_cluster(&client, &ns, "demo").await;
        let secret = kubeconfig_secret(&client, &ns, "demo").await;
        let cluster = CapiKind::Cluster.api(client.clone(), &ns).get("demo").await.unwrap();
        eventually("the prepared Secret owned by the Cluster", || async {
            let secret = Api::<Secret>::namespaced(client.clone(), &ns)
                .get("demo-kubeconfig")
                .await
                .ok()?;
            secret
                .owner_references()
                .iter()
                .any(|o| o.kind == "Cluster" && Some(&o.uid) == cluster.uid().as_ref())
                .then_some(())
        })
        .await;
        let server = Kubeconfig::from_yaml(&value_of(&secret)).expect("kubeconfig parses").clusters[0]
            .cluster
            .as_ref()
            .and_then(|c| c.server.clone());
        assert_eq!(server.as_deref(), Some(url.as_str()), "core kept the prepared kubeconfig");
        let workload = client_from(&value_of(&kubeconfig_secret(&client, &ns, "demo").await)).await;

        // A demo instance becomes a Node; another cluster's instance does not.
        let id = run_instance(&moto, "kubernetes.io/cluster/demo").await;
        let other = run_instance(&moto, "kubernetes.io/cluster/other").await;
        let provider_id = format!("aws:///us-east-1a/{id}");
        let node = eventually("the demo instance's Node", || node_with(&workload, &provider_id)).await;
        let name = node.name_any();
        assert_eq!(node.labels()["kubernetes.io/hostname"], name);
        assert_eq!(node.labels()["topology.kubernetes.io/zone"], "us-east-1a");
        let status = node.status.clone().unwrap();
        let ready = status.conditions.unwrap_or_default();
        assert!(ready.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let addresses = status.addresses.unwrap_or_default();
        assert!(addresses.iter().any(|a| a.type_ == "InternalIP" && !a.address.is_empty()));
        assert!(
            node_with(&workload, &format!("aws:///us-east-1a/{other}")).await.is_none(),
            "an instance of another cluster gets no Node in demo"
        );

        // A control-plane Machine whose KubeZeroMachine reports that providerID gets the nodeRef.
        let kzm = provider_api(
            &client,
            &ns,
            "infrastructure.cluster.x-k8s.io",
            "KubeZeroMachine",
        )
        .await;
        create(
            &kzm,
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroMachine",
                "metadata": {"name": "demo-cp-0"},
                "spec": {"aws": {"instanceType": "t3.small", "ami": {"lookup": {"architecture": "x86_64"}}}}}),
        )
        .await;
        let machines = CapiKind::Machine.api(client.clone(), &ns);
        create(
            &machines,
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "metadata": {"name": "demo-cp-0", "labels": {"cluster.x-k8s.io/control-plane": ""}},
                "spec": {"clusterName": "demo", "bootstrap": {"dataSecretName": "demo-cp-0"},
                    "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                        "kind": "KubeZeroMachine", "name": "demo-cp-0"}}}),
        )
        .await;
        kzm.patch(
            "demo-cp-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"providerID": provider_id}})),
        )
        .await
        .expect("providerID");
        kzm.patch_status(
            "demo-cp-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"initialization": {"provisioned": true}}})),
        )
        .await
        .expect("provisioned");
        let machine = eventually("the Machine's nodeRef", || async {
            let m = machines.get("demo-cp-0").await.ok()?;
            m.data["status"]["nodeRef"]["name"].as_str().is_some().then_some(m)
        })
        .await;
        assert_eq!(machine.data["status"]["nodeRef"]["name"], json!(name));
        assert_eq!(machine.data["spec"]["providerID"], json!(provider_id));
        let clusters = CapiKind::Cluster.api(client.clone(), &ns);
        eventually("ControlPlaneInitialized", || async {
            let c = clusters.get("demo").await.ok()?;
            (condition_status(&c, "ControlPlaneInitialized")? == "True").then_some(())
        })
        .await;

        // Terminating the instance deletes its Node.
        ec2(&moto, &format!("Action=TerminateInstances&InstanceId.1={id}")).await;
        eventually("the Node to be deleted", || async {
            node_with(&workload, &provider_id).await.is_none().then_some(())
        })
        .await;
        drop(world);
    })
    .await;
}

/// What a real core asks a workload cluster's API server for, answered as kube-apiserver does: the
/// ClusterCache's health probe (`GET /`) and REST mapping of Nodes, a drain (cordon by merge
/// patch, Pods of the Node by `spec.nodeName` over all namespaces, paged, then evictions), the
/// volume detach wait (VolumeAttachments and PersistentVolumes, paged) and the Node's deletion.
/// A missing endpoint here would leave a real core retrying forever.
#[tokio::test]
async fn a_workload_emulator_serves_what_core_asks_a_workload_cluster_for() {
    use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
    use k8s_openapi::api::storage::v1::VolumeAttachment;
    bounded(async {
        let server = ApiServer::start().await.expect("emulator starts");
        let client = server.client().expect("client");

        let root: Value = client
            .request(http::Request::get("/").body(Vec::new()).unwrap())
            .await
            .expect("GET / answers");
        let paths: Vec<&str> = root["paths"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(paths.contains(&"/api/v1") && paths.contains(&"/apis"), "{paths:?}");
        let core_v1 = client.list_core_api_resources("v1").await.expect("core/v1 discovery");
        let served: Vec<&str> = core_v1.resources.iter().map(|r| r.name.as_str()).collect();
        for name in ["nodes", "pods", "pods/eviction", "persistentvolumes", "namespaces"] {
            assert!(served.contains(&name), "{name} in {served:?}");
        }

        let nodes = Api::<Node>::all(client.clone());
        for name in ["node-a", "node-b"] {
            let node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
            nodes.create(&PostParams::default(), &node).await.unwrap();
        }
        for (namespace, name, node) in [
            ("default", "web-1", "node-a"),
            ("kube-system", "dns-1", "node-a"),
            ("default", "web-2", "node-b"),
        ] {
            let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}))
            .unwrap();
            Api::<Pod>::namespaced(client.clone(), namespace)
                .create(&PostParams::default(), &pod)
                .await
                .unwrap();
        }

        // Cordon, as core's drain does it: a JSON merge patch.
        nodes
            .patch(
                "node-a",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"unschedulable": true}})),
            )
            .await
            .expect("cordon");
        let cordoned = nodes.get("node-a").await.unwrap();
        assert_eq!(cordoned.spec.unwrap().unschedulable, Some(true));

        let pods = Api::<Pod>::all(client.clone());
        let on_a = |limit: u32| ListParams::default().fields("spec.nodeName=node-a").limit(limit);
        let first = pods.list(&on_a(1)).await.expect("Pods of node-a");
        assert_eq!(first.items.len(), 1);
        let token = first.metadata.continue_.clone().expect("a second page");
        let second = pods.list(&on_a(1).continue_token(&token)).await.unwrap();
        let mut names: Vec<String> = first.items.iter().chain(&second.items).map(|p| p.name_any()).collect();
        names.sort();
        assert_eq!(names, ["dns-1", "web-1"], "exactly the Pods of node-a");

        let default_pods = Api::<Pod>::namespaced(client.clone(), "default");
        default_pods
            .evict("web-1", &kube::api::EvictParams::default())
            .await
            .expect("eviction");
        assert!(default_pods.get_opt("web-1").await.unwrap().is_none(), "evicted Pod deleted");
        match default_pods.evict("web-1", &kube::api::EvictParams::default()).await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 404, "{status:?}"),
            other => panic!("evicting a missing Pod: {other:?}"),
        }
        assert!(default_pods.get_opt("web-2").await.unwrap().is_some(), "other Nodes' Pods stay");

        let attachments = Api::<VolumeAttachment>::all(client.clone())
            .list(&ListParams::default().limit(100))
            .await
            .expect("VolumeAttachments");
        assert!(attachments.items.is_empty());
        let volumes = Api::<PersistentVolume>::all(client.clone())
            .list(&ListParams::default().limit(100))
            .await
            .expect("PersistentVolumes");
        assert!(volumes.items.is_empty());

        nodes.delete("node-a", &DeleteParams::default()).await.expect("Node deleted");
        assert!(nodes.get_opt("node-a").await.unwrap().is_none());
        server.shutdown().await;
    })
    .await;
}
