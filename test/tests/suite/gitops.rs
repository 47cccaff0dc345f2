//! GitOps re-apply: for every flavor, the manifests `clusterctl generate cluster` renders
//! plus the addon HelmChartProxies are applied with server-side apply as a GitOps controller would
//! (its own field manager, no force), the managers run until the cluster is provisioned (AWS flavors,
//! on moto) or has been reconciled (bare metal, whose backend comes later), and the same manifests are
//! applied again: every re-apply must succeed without a field-manager conflict, bump no generation and
//! change no spec or metadata the manifests own. Then the Cluster is deleted and nothing is left.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use kubezero_capi::core::{Cluster, Machine};
use kubezero_provider::api::KubeZeroCluster;
use kubezero_test::cloud::Moto;
use kubezero_test::templates::{self, GenerateOptions};
use kubezero_test::world::WorldView;
use serde_json::Value;

use crate::support::{eventually, eventually_within, with_managers_on_moto};

/// Field manager of the GitOps controller (Argo CD's server-side apply manager name).
const GITOPS_MANAGER: &str = "argocd-controller";
/// Name of the generated cluster.
const CLUSTER: &str = "gitops";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_flavor_reapplies_without_drift() {
    reapply_flavor("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_ha_flavor_reapplies_without_drift() {
    reapply_flavor("aws-ha").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baremetal_flavor_reapplies_without_drift() {
    reapply_flavor("baremetal").await;
}

async fn reapply_flavor(flavor: &'static str) {
    with_managers_on_moto(Duration::from_secs(240), move |world, moto| async move {
        flow(&world, &moto, flavor).await
    })
    .await;
}

/// The manifests of `flavor` for the world's namespace, followed by the addon HelmChartProxies.
fn manifests(flavor: &str, namespace: &str) -> Vec<Value> {
    let (_, path) = templates::flavors()
        .into_iter()
        .find(|(name, _)| name == flavor)
        .unwrap_or_else(|| panic!("no flavor {flavor:?}"));
    let options = GenerateOptions {
        cluster_name: CLUSTER.into(),
        target_namespace: namespace.into(),
        kubernetes_version: Some("v1.34.1".into()),
        control_plane_machine_count: None,
        worker_machine_count: Some(1),
    };
    let environment = match flavor {
        "baremetal" => BTreeMap::from([("KUBEZERO_CONTROL_PLANE_VIP".into(), "192.0.2.10".into())]),
        _ => BTreeMap::new(),
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let rendered = templates::generate_cluster(&text, &options, &environment).unwrap();
    let mut documents = templates::documents(&rendered).unwrap();
    for file in templates::addon_files() {
        for mut document in templates::documents(&std::fs::read_to_string(&file).unwrap()).unwrap() {
            if document["kind"] == "HelmChartProxy" {
                document["metadata"]["namespace"] = Value::String(namespace.into());
                documents.push(document);
            }
        }
    }
    documents
}

/// Installs the CAAPH CRDs (HelmChartProxy, HelmReleaseProxy) unless the cluster has them.
async fn install_caaph_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in templates::caaph_crds() {
        let name = crd.name_any();
        if api.get_opt(&name).await.unwrap().is_none() {
            api.patch(&name, &PatchParams::apply("kubezero-e2e"), &Patch::Apply(&crd))
                .await
                .unwrap();
        }
        kubezero_test::world::crd_established(client, &name)
            .await
            .expect("CRD established");
    }
}

/// Server-side applies every document as the GitOps manager (no force); panics on any refusal.
async fn apply_all(client: &Client, namespace: &str, documents: &[Value]) -> Vec<DynamicObject> {
    let mut applied = Vec::new();
    for document in documents {
        let object = templates::apply(client, namespace, document, &PatchParams::apply(GITOPS_MANAGER))
            .await
            .unwrap_or_else(|e| panic!("apply {} {}: {e}", document["kind"], document["metadata"]["name"]));
        applied.push(object);
    }
    applied
}

/// The fields the GitOps manager owns on `object` (its Apply entry of managedFields).
fn gitops_fields(object: &DynamicObject) -> Option<Value> {
    object
        .metadata
        .managed_fields
        .as_ref()?
        .iter()
        .find(|entry| {
            entry.manager.as_deref() == Some(GITOPS_MANAGER) && entry.operation.as_deref() == Some("Apply")
        })
        .and_then(|entry| serde_json::to_value(&entry.fields_v1).ok())
}

async fn flow(world: &WorldView, moto: &Moto, flavor: &str) {
    let client = world.client();
    let namespace = world.namespace();
    install_caaph_crds(&client).await;
    let documents = manifests(flavor, namespace);
    // Before the first apply, as for every Cluster of the suites: its workload cluster and the
    // kubeconfig Secret core will find.
    world
        .prepare_cluster(CLUSTER)
        .await
        .expect("prepare the workload cluster");
    apply_all(&client, namespace, &documents).await;

    wait_until_reconciled(world, flavor).await;

    // The GitOps controller syncs again: same manifests, nothing may change or conflict.
    let mut before = Vec::new();
    for document in &documents {
        let api = templates::api_for(&client, namespace, document).await.unwrap();
        before.push(
            api.get(document["metadata"]["name"].as_str().unwrap())
                .await
                .unwrap(),
        );
    }
    let after = apply_all(&client, namespace, &documents).await;
    for ((document, old), new) in documents.iter().zip(&before).zip(&after) {
        let what = format!("{} {}", document["kind"], old.name_any());
        assert_eq!(
            old.metadata.generation, new.metadata.generation,
            "{what}: generation bumped"
        );
        assert_eq!(old.data.get("spec"), new.data.get("spec"), "{what}: spec changed");
        assert_eq!(old.labels(), new.labels(), "{what}: labels changed");
        assert_eq!(
            old.annotations(),
            new.annotations(),
            "{what}: annotations changed"
        );
        assert_eq!(
            gitops_fields(old),
            gitops_fields(new),
            "{what}: the GitOps manager's fields changed"
        );
        assert!(gitops_fields(new).is_some(), "{what}: owned by {GITOPS_MANAGER}");
    }

    // Deleting the Cluster removes everything, in the API and in moto.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), namespace);
    clusters.delete(CLUSTER, &Default::default()).await.unwrap();
    eventually("the Cluster is gone", || async {
        clusters.get_opt(CLUSTER).await.ok()?.is_none().then_some(())
    })
    .await;
    let machines: Api<Machine> = Api::namespaced(client.clone(), namespace);
    assert!(
        machines
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    if flavor != "baremetal" {
        let aws = moto.aws_clients("eu-central-1").await;
        let tags = kubezero_provider::aws::tags::ClusterTags::new(CLUSTER, BTreeMap::new());
        let inventory = kubezero_provider::aws::inventory::inventory(&aws).await.unwrap();
        let left: Vec<_> = inventory
            .owned_counts(&tags)
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        assert!(left.is_empty(), "{flavor}: left in moto: {left:?}");
    }
}

/// AWS flavors: the Cluster's infrastructure is provisioned and every Machine runs with a provider
/// ID. Bare metal (no backend yet): the KubeZeroCluster and every Machine's KubeZeroMachine report
/// `Ready`.
async fn wait_until_reconciled(world: &WorldView, flavor: &str) {
    let client = world.client();
    let namespace = world.namespace();
    let machines: Api<Machine> = Api::namespaced(client.clone(), namespace);
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), namespace);
    let infra: Api<KubeZeroCluster> = Api::namespaced(client.clone(), namespace);
    if flavor == "baremetal" {
        eventually("the bare-metal KubeZeroCluster reports Ready", || async {
            let status = infra.get(CLUSTER).await.ok()?.status?;
            status.conditions.iter().any(|c| c.type_ == "Ready").then_some(())
        })
        .await;
        return;
    }
    // Infrastructure, then the control plane's launch and Node, then the workers' (their data
    // waits for the control plane): a chain of steps, each bounded by the managers' and core's
    // requeues, so longer than one `eventually`.
    let chain = Duration::from_secs(150);
    eventually_within(
        "the Cluster provisioned and every Machine running",
        chain,
        || async {
            if !clusters.get(CLUSTER).await.ok()?.infrastructure_provisioned() {
                return None;
            }
            let machines = machines.list(&ListParams::default()).await.ok()?.items;
            let running = machines.iter().all(|machine| {
                machine.spec.provider_id.is_some()
                    && machine.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            });
            (!machines.is_empty() && running).then_some(())
        },
    )
    .await;
}

/// Cilium first, done by the provider: the `kubezero.io/cni: ready` gate appears on the Cluster only
/// once CAAPH's Cilium release for it reports Ready, written by the provider's own field manager.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_opens_the_cni_gate_once_the_cilium_release_is_ready() {
    crate::support::with_managers_flags(Duration::from_secs(120), &[], |world| async move {
        cni_gate(&world).await
    })
    .await;
}

async fn cni_gate(world: &WorldView) {
    use kubezero_provider::addons::{CNI_READY_LABEL, HCP_NAME_LABEL};
    let client = world.client();
    let namespace = world.namespace();
    install_caaph_crds(&client).await;
    crate::support::create_cluster(world, CLUSTER).await;
    let releases: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &kubezero_provider::controllers::addon_gates::release_proxy_resource(),
    );
    let release: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmReleaseProxy",
        "metadata": {"name": "cilium-gitops-x1", "namespace": namespace,
            "labels": {"cluster.x-k8s.io/cluster-name": CLUSTER, HCP_NAME_LABEL: "kubezero-cilium"}},
        "spec": {"clusterRef": {"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": CLUSTER, "namespace": namespace},
            "chartName": "cilium", "repoURL": "https://helm.cilium.io", "namespace": "kube-system", "values": ""}}))
    .unwrap();
    releases.create(&Default::default(), &release).await.unwrap();
    let set_ready = |status: &'static str| {
        let releases = releases.clone();
        async move {
            let patch = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": status,
                "reason": "Installing", "message": "", "lastTransitionTime": "2026-11-22T05:00:00Z"}]}});
            releases
                .patch_status("cilium-gitops-x1", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    // A reconcile of the gate controller that ends after this point saw the release not Ready (the
    // controller starts once it finds the CRD, within 5 s, and reconciles on the release's change).
    let ended = r#"kubezero_reconcile_duration_seconds_count{controller="addon-gates"}"#;
    let before = world
        .manager_metric("kubezero-provider", ended)
        .await
        .unwrap_or(0);
    set_ready("False").await;
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), namespace);
    eventually("a gate reconcile after the release is not Ready", || async {
        (world.manager_metric("kubezero-provider", ended).await? > before).then_some(())
    })
    .await;
    let cluster = clusters.get(CLUSTER).await.unwrap();
    assert!(
        !cluster.labels().contains_key(CNI_READY_LABEL.0),
        "gate closed while Cilium installs"
    );
    set_ready("True").await;
    let cluster = eventually("the CNI gate on the Cluster", || async {
        let cluster = clusters.get(CLUSTER).await.ok()?;
        (cluster.labels().get(CNI_READY_LABEL.0).map(String::as_str) == Some(CNI_READY_LABEL.1))
            .then_some(cluster)
    })
    .await;
    let manager = cluster
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .find(|entry| {
            serde_json::to_string(&entry.fields_v1)
                .unwrap()
                .contains(CNI_READY_LABEL.0)
        })
        .and_then(|entry| entry.manager);
    assert_eq!(
        manager.as_deref(),
        Some(kubezero_provider::controllers::addon_gates::FIELD_MANAGER)
    );
}
