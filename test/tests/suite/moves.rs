//! `clusterctl move` as it happens to the provider: the Cluster is paused, move waits until no
//! object carries `clusterctl.cluster.x-k8s.io/block-move`, every object is recreated (new UIDs,
//! owner references rewritten, no status) by a new pair of managers, the source copies are deleted
//! with their finalizers removed, and the Cluster is unpaused. No instance may be launched twice,
//! none terminated, and the machines converge on the instances they had.
//!
//! One API server stands in for both management clusters: the source objects are deleted before
//! their copies are created (same names), and the managers are restarted in between (the target's
//! managers start with empty memories). Only real API calls: it runs against a real management
//! cluster too.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubezero_capi::contract::BLOCK_MOVE_ANNOTATION;
use kubezero_capi::core::Cluster;
use kubezero_provider::api::KubeZeroMachine;
use kubezero_test::cloud::{Moto, alpine_amis};
use kubezero_test::world::{World, WorldView};
use serde_json::{Value, json};

use crate::faults::{
    TAGS_SET, api, check_instances, cluster_provisioned, create_control_plane, delete_cluster, leftovers,
    machines_converged, moto_inventory, private_zone, tagged_inventory, wait_for,
};
use crate::support::{create_cluster, create_worker_pool, dynamic};

const CLUSTER: &str = "moved";
const WORKERS: &str = "moved-workers";

/// The kinds move takes, parents before children (the order copies are created in).
const KINDS: [(&str, &str, &str, &str); 11] = [
    ("cluster.x-k8s.io", "v1beta2", "Cluster", "clusters"),
    (
        "infrastructure.cluster.x-k8s.io",
        "v1alpha1",
        "KubeZeroCluster",
        "kubezeroclusters",
    ),
    (
        "infrastructure.cluster.x-k8s.io",
        "v1alpha1",
        "KubeZeroMachineTemplate",
        "kubezeromachinetemplates",
    ),
    (
        "bootstrap.cluster.x-k8s.io",
        "v1alpha1",
        "KubeZeroConfigTemplate",
        "kubezeroconfigtemplates",
    ),
    (
        "cluster.x-k8s.io",
        "v1beta2",
        "MachineDeployment",
        "machinedeployments",
    ),
    ("cluster.x-k8s.io", "v1beta2", "MachineSet", "machinesets"),
    ("cluster.x-k8s.io", "v1beta2", "Machine", "machines"),
    (
        "infrastructure.cluster.x-k8s.io",
        "v1alpha1",
        "KubeZeroMachine",
        "kubezeromachines",
    ),
    (
        "bootstrap.cluster.x-k8s.io",
        "v1alpha1",
        "KubeZeroConfig",
        "kubezeroconfigs",
    ),
    ("", "v1", "Secret", "secrets"),
    ("", "v1", "ConfigMap", "configmaps"),
];

fn kind_api(
    world: &WorldView,
    (group, version, kind, plural): (&str, &str, &str, &str),
) -> Api<DynamicObject> {
    dynamic(world, group, version, kind, plural)
}

/// Runs `phase` in its own task under `timeout`; on a panic or timeout fails with the manager logs.
async fn phase<Fut>(world: &mut World, what: &str, timeout: Duration, phase: Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(async move { tokio::time::timeout(timeout, phase).await }).await;
    let failure = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(_)) => format!("{what} timed out after {timeout:?}"),
        Err(failure) => format!("{what}: {failure}"),
    };
    let logs = world.stop_managers();
    panic!("{failure}; manager logs:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_cluster_keeps_its_instances_and_nothing_is_launched_twice() {
    let moto = Arc::new(Moto::builder().amis(alpine_amis()).start().expect("moto starts"));
    let mut world = World::start_with_cloud(&moto).await.expect("the world starts");
    world.start_managers().expect("the managers start");
    let view = world.view();

    let (before_tx, before_rx) = tokio::sync::oneshot::channel();
    let source = view.clone();
    phase(
        &mut world,
        "provision and pause",
        Duration::from_secs(180),
        async move {
            before_tx.send(provision_then_pause(&source).await).ok();
        },
    )
    .await;
    let before = before_rx.await.expect("machines before the move");

    let (objects_tx, objects_rx) = tokio::sync::oneshot::channel();
    let source = view.clone();
    phase(
        &mut world,
        "take the objects out",
        Duration::from_secs(60),
        async move {
            objects_tx.send(take_out(&source).await).ok();
        },
    )
    .await;
    let objects = objects_rx.await.expect("the moved objects");

    // The target cluster's managers: new processes, nothing remembered.
    for manager in ["kubezero-provider", "kubezero-bootstrap"] {
        world.kill_manager(manager).expect("stop the source manager");
    }
    let target = view.clone();
    phase(
        &mut world,
        "recreate the objects",
        Duration::from_secs(60),
        async move {
            put_back(&target, objects).await;
        },
    )
    .await;
    for manager in ["kubezero-provider", "kubezero-bootstrap"] {
        world.restart_manager(manager).expect("start the target manager");
    }

    let target = view.clone();
    let cloud = moto.clone();
    phase(
        &mut world,
        "converge after the move",
        Duration::from_secs(180),
        async move {
            unpause_and_converge(&target, &cloud, &before).await;
        },
    )
    .await;
    world.stop_managers();
}

/// A cluster with one control plane and a pool of 3 workers, paused while a worker's launch is in
/// flight; returns the instances machines have once move could proceed (those whose launch was in
/// flight among them).
async fn provision_then_pause(world: &WorldView) -> BTreeMap<String, String> {
    create_cluster(world, CLUSTER).await;
    let infra = cluster_provisioned(world, CLUSTER, Duration::from_secs(90)).await;
    let zone = private_zone(&infra);
    create_control_plane(world, CLUSTER, "moved-cp-0", &zone).await;
    wait_for("the control plane", Duration::from_secs(90), || {
        machines_converged(world, CLUSTER, WORKERS, 0, None)
    })
    .await;
    create_worker_pool(world, CLUSTER, WORKERS, 3).await;
    let machines: Api<KubeZeroMachine> = api(world);
    let marked = wait_for(
        "a worker marked as launching",
        Duration::from_secs(60),
        || async {
            let listed = machines
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let marked: Vec<String> = listed
                .items
                .iter()
                .filter(|m| m.annotations().contains_key(BLOCK_MOVE_ANNOTATION))
                .map(ResourceExt::name_any)
                .collect();
            if marked.is_empty() {
                Err("none yet".into())
            } else {
                Ok(marked)
            }
        },
    )
    .await;
    // What move does first: pause the Cluster.
    api::<Cluster>(world)
        .patch(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .expect("pause the Cluster");
    eprintln!("paused with {marked:?} launching");
    // Then it waits for every block-move annotation to go: the paused machines finish their launch.
    wait_for("no object blocks the move", Duration::from_secs(90), || async {
        let listed = machines
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let blocking: Vec<String> = listed
            .items
            .iter()
            .filter(|m| m.annotations().contains_key(BLOCK_MOVE_ANNOTATION))
            .map(ResourceExt::name_any)
            .collect();
        let workers = listed
            .items
            .iter()
            .filter(|m| m.name_any().starts_with(WORKERS))
            .count();
        match (blocking.is_empty(), workers) {
            (true, 3) => Ok(()),
            _ => Err(format!("{workers} workers, blocking: {blocking:?}")),
        }
    })
    .await;
    // Machines that had not joined a launch yet (no bootstrap data) have no instance: they launch
    // after the move.
    let listed = machines.list(&ListParams::default()).await.expect("list").items;
    let instances: BTreeMap<String, String> = listed
        .iter()
        .filter_map(|machine| {
            let id = machine.annotations().get("kubezero.io/instance-id")?;
            Some((machine.name_any(), id.clone()))
        })
        .collect();
    for name in &marked {
        assert!(
            instances.contains_key(name),
            "{name} settled its launch while paused: {instances:?}"
        );
    }
    instances
}

/// Reads every object move takes (status dropped), then deletes the source copies as move does:
/// finalizers removed first, so no controller cleans anything up.
async fn take_out(world: &WorldView) -> Vec<(usize, Value)> {
    let mut objects = Vec::new();
    for (index, kind) in KINDS.iter().enumerate() {
        let kind_api = kind_api(world, *kind);
        for object in kind_api.list(&ListParams::default()).await.expect("list").items {
            let moved = match kind.2 {
                "Secret" | "ConfigMap" => {
                    object.labels().contains_key("cluster.x-k8s.io/cluster-name")
                        || !object.owner_references().is_empty()
                }
                _ => true,
            };
            if moved {
                objects.push((index, serde_json::to_value(&object).expect("an object")));
            }
        }
    }
    // As clusterctl's deleteSourceObject, one object at a time: the delete-for-move annotation, the
    // finalizers removed, then the delete right away (core re-adds its finalizer to an object that
    // is not deleting, paused or not, so the two calls must follow each other).
    let strip = json!({"metadata": {
        "annotations": {"clusterctl.cluster.x-k8s.io/delete-for-move": ""},
        "finalizers": null}});
    for (index, object) in objects.iter().rev() {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let kind_api = kind_api(world, KINDS[*index]);
        kind_api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&strip))
            .await
            .unwrap_or_else(|e| panic!("remove the finalizers of {}: {e}", KINDS[*index].2));
        let _ = kind_api.delete(&name, &DeleteParams::default()).await;
    }
    for (index, object) in &objects {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let kind_api = kind_api(world, KINDS[*index]);
        wait_for("the source copy gone", Duration::from_secs(30), || async {
            match kind_api.get_opt(&name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(left) => {
                    // A finalizer added in the instant between the two calls: clusterctl's
                    // retry of the step takes it off again.
                    if left.metadata.deletion_timestamp.is_some() && !left.finalizers().is_empty() {
                        let _ = kind_api
                            .patch(&name, &PatchParams::default(), &Patch::Merge(&strip))
                            .await;
                    }
                    Err(format!("{} {name} still there", KINDS[*index].2))
                }
            }
        })
        .await;
    }
    objects
}

/// Creates the copies, parents first, with new UIDs, owner references pointing at the new owners
/// and no status (move does not restore status).
async fn put_back(world: &WorldView, objects: Vec<(usize, Value)>) {
    let mut uids: BTreeMap<(String, String), String> = BTreeMap::new();
    for (index, mut object) in objects {
        let kind = KINDS[index].2;
        let metadata = object["metadata"].as_object_mut().expect("metadata");
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
        ] {
            metadata.remove(field);
        }
        if let Some(annotations) = metadata.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove("clusterctl.cluster.x-k8s.io/delete-for-move");
        }
        if let Some(owners) = metadata.get_mut("ownerReferences").and_then(Value::as_array_mut) {
            owners.retain_mut(|owner| {
                let key = (
                    owner["kind"].as_str().unwrap_or_default().to_owned(),
                    owner["name"].as_str().unwrap_or_default().to_owned(),
                );
                match uids.get(&key) {
                    Some(uid) => {
                        owner["uid"] = json!(uid);
                        true
                    }
                    None => false,
                }
            });
        }
        object.as_object_mut().expect("an object").remove("status");
        let object: DynamicObject = serde_json::from_value(object).expect("an object");
        let name = object.name_any();
        let created = kind_api(world, KINDS[index])
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("recreate {kind} {name}: {e}"));
        uids.insert((kind.to_owned(), name), created.uid().unwrap_or_default());
    }
}

/// Unpauses the Cluster and checks that every machine converges on the instance it had, that moto
/// holds exactly those instances, and that the moved cluster deletes cleanly.
async fn unpause_and_converge(world: &WorldView, moto: &Moto, before: &BTreeMap<String, String>) {
    api::<Cluster>(world)
        .patch(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .expect("unpause the Cluster");
    let after = wait_for("the moved machines converged", Duration::from_secs(120), || {
        machines_converged(world, CLUSTER, WORKERS, 3, None)
    })
    .await;
    for (machine, instance) in before {
        assert_eq!(
            after.get(machine),
            Some(instance),
            "{machine} kept its instance: {after:?}"
        );
    }
    let problems = check_instances(&tagged_inventory(moto, TAGS_SET).await, &after);
    assert!(
        problems.is_empty(),
        "no duplicate, nothing terminated: {problems:#?}"
    );
    delete_cluster(world, CLUSTER, Duration::from_secs(90)).await;
    let left = leftovers(&moto_inventory(moto).await, CLUSTER);
    assert!(
        left.is_empty(),
        "left in moto after deleting the moved cluster: {left:?}"
    );
}
