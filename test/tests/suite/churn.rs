//! What the KubeZeroCluster controller costs in AWS calls while nothing of its own changes: CAPI
//! core rewrites a Cluster's status (replica counters, conditions) on every Machine change, Cluster
//! API and GitOps tools write labels and annotations. None of that may make the provider describe
//! the cluster's network, load balancer and IAM again; a spec change must.
//!
//! Runs the managers in a [`World`] on moto behind a transparent [`FaultProxy`] that counts every AWS
//! request. The Cluster status writes here are what core does; against a real management cluster
//! core rewrites them too (the test only needs the writes to happen).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{Patch, PatchParams};
use kubezero_capi::core::Cluster;
use kubezero_provider::api::KubeZeroCluster;
use kubezero_test::cloud::{FaultConfig, FaultProxy, Moto, alpine_amis};
use kubezero_test::world::{World, WorldView};
use serde_json::json;

use crate::faults::{api, cluster_provisioned, wait_for};
use crate::support::create_cluster;

const CLUSTER: &str = "churn";

/// AWS requests the proxy has seen so far.
fn calls(proxy: &FaultProxy) -> u64 {
    proxy.totals().total()
}

/// Waits until no AWS request arrived for `quiet`, and returns the count then.
async fn quiesced(proxy: &FaultProxy, quiet: Duration, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    let mut last = calls(proxy);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = calls(proxy);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "AWS calls did not stop within {timeout:?}:\n{}",
            proxy.report()
        );
    }
}

/// One status rewrite of the Cluster as core makes it while `ready` of `desired` workers are up.
fn core_status(ready: i64, desired: i64) -> serde_json::Value {
    let scaling = if ready < desired { "True" } else { "False" };
    let now = jiff::Timestamp::now().to_string();
    json!({"status": {
        "workers": {"desiredReplicas": desired, "replicas": desired, "readyReplicas": ready,
            "availableReplicas": ready, "upToDateReplicas": desired},
        "conditions": [
            {"type": "WorkersAvailable", "status": if ready > 0 { "True" } else { "False" },
                "reason": if ready > 0 { "Available" } else { "NotAvailable" }, "lastTransitionTime": now},
            {"type": "ScalingUp", "status": scaling, "reason": if ready < desired { "ScalingUp" } else { "NotScalingUp" },
                "message": format!("Scaling up from {ready} to {desired} replicas"), "lastTransitionTime": now},
            {"type": "WorkerMachinesReady", "status": scaling, "reason": "Ready",
                "message": format!("{ready} of {desired} Machines are ready"), "lastTransitionTime": now}
        ]
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_churn_and_metadata_writes_make_no_aws_calls_but_a_spec_change_does() {
    let moto = Arc::new(Moto::builder().amis(alpine_amis()).start().expect("moto starts"));
    let proxy = Arc::new(FaultProxy::start(moto.addr(), FaultConfig::default()).expect("proxy starts"));
    let mut world = World::start_with_cloud_via(&moto, &proxy.endpoint_url())
        .await
        .expect("the world starts");
    world.start_managers().expect("the managers start");
    let view = world.view();
    let flow_proxy = proxy.clone();
    let outcome = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(180), churn_flow(&view, &flow_proxy)).await
    })
    .await;
    let logs = world.stop_managers();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("the flow timed out; manager logs:\n{logs}"),
        Err(failure) => panic!("{failure}\n{}\nmanager logs:\n{logs}", proxy.report()),
    }
}

async fn churn_flow(world: &WorldView, proxy: &FaultProxy) {
    create_cluster(world, CLUSTER).await;
    cluster_provisioned(world, CLUSTER, Duration::from_secs(90)).await;
    let settled = quiesced(proxy, Duration::from_secs(3), Duration::from_secs(60)).await;
    eprintln!("cluster provisioned with {settled} AWS calls");

    // Core's status churn: 40 rewrites of counters and conditions, as a 20-machine scale-up makes.
    let clusters: Api<Cluster> = api(world);
    for step in 0..40 {
        let status = core_status(step / 2, 20);
        clusters
            .patch_status(CLUSTER, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("rewrite the Cluster status");
    }
    // Metadata writes on both objects (a GitOps tool's annotation, a label core or a user adds).
    let annotate = json!({"metadata": {"annotations": {"example.com/synced-at": "2026-12-02T00:00:00Z"}}});
    clusters
        .patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .expect("annotate the Cluster");
    let infra_clusters: Api<KubeZeroCluster> = api(world);
    let label = json!({"metadata": {"labels": {"example.com/team": "platform"}}});
    infra_clusters
        .patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("label the KubeZeroCluster");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after_churn = calls(proxy);
    assert_eq!(
        after_churn - settled,
        0,
        "status churn and metadata writes made AWS calls:\n{}",
        proxy.report()
    );

    // A spec change is looked at: the infrastructure is described again (and tagged).
    let retag = json!({"spec": {"aws": {"additionalTags": {"team": "platform"}}}});
    infra_clusters
        .patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&retag))
        .await
        .expect("change the KubeZeroCluster spec");
    wait_for(
        "AWS calls after the spec change",
        Duration::from_secs(30),
        || async {
            let now = calls(proxy);
            if now > after_churn {
                Ok(now)
            } else {
                Err(format!("{now} calls"))
            }
        },
    )
    .await;
}
