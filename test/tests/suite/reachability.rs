//! How the management cluster reaches a workload API: an internet-facing load
//! balancer answers only the CIDRs the KubeZeroCluster lists (never `0.0.0.0/0`), a CIDR removed
//! from the list is revoked, and the KubeZeroCluster says whether the endpoint answers the manager
//! (`ControlPlaneEndpointReachable`).
//!
//! Runs both managers in a [`World`] on moto; the security group is read back from moto, so the
//! same test holds against a real management cluster (moto runs locally either way).

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kubezero_provider::api::KubeZeroCluster;
use kubezero_test::cloud::{Moto, alpine_amis, ec2_query};
use kubezero_test::world::{World, WorldView};
use serde_json::json;

use crate::faults::{api, cluster_provisioned, wait_for};
use crate::support::create_cluster_with;

const CLUSTER: &str = "edge";
/// Region of the cluster (moto keeps one state per region).
const REGION: &str = "eu-central-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_only_the_allowed_cidrs_and_the_cluster_says_whether_it_is_reachable() {
    let moto = Moto::builder().amis(alpine_amis()).start().expect("moto starts");
    let mut world = World::start_with_cloud(&moto).await.expect("the world starts");
    world.start_managers().expect("the managers start");
    let view = world.view();
    let outcome = tokio::time::timeout(Duration::from_secs(180), flow(&view, &moto)).await;
    let logs = world.stop_managers();
    assert!(outcome.is_ok(), "the flow timed out; manager logs:\n{logs}");
}

/// The CIDRs the load balancer group `group_id` lets in (its ingress rules; egress is left out),
/// from moto.
fn api_sources(moto: &Moto, group_id: &str) -> Result<Vec<String>, String> {
    let form = format!("Action=DescribeSecurityGroups&GroupId.1={group_id}");
    let answer = ec2_query(moto.addr(), REGION, moto.access_key_id(), &form).map_err(|e| e.to_string())?;
    let text = answer.text();
    if answer.status != 200 {
        return Err(text);
    }
    let ingress = text
        .split_once("<ipPermissions>")
        .and_then(|(_, rest)| rest.split_once("</ipPermissions>"))
        .map_or("", |(ingress, _)| ingress);
    Ok(ingress
        .split("<cidrIp>")
        .skip(1)
        .filter_map(|rest| rest.split_once("</cidrIp>").map(|(cidr, _)| cidr.to_owned()))
        .collect())
}

async fn flow(world: &WorldView, moto: &Moto) {
    create_cluster_with(
        world,
        CLUSTER,
        json!({"region": REGION, "loadBalancer": {"scheme": "internet-facing",
            "allowedCidrBlocks": ["203.0.113.0/24", "198.51.100.7/32"]}}),
    )
    .await;
    let status = cluster_provisioned(world, CLUSTER, Duration::from_secs(120)).await;
    let group = status.security_groups.load_balancer.clone();
    let mut sources = api_sources(moto, &group).expect("the load balancer group");
    sources.sort();
    assert_eq!(
        sources,
        ["198.51.100.7/32", "203.0.113.0/24"],
        "only the allowed sources reach the API, not the VPC nor 0.0.0.0/0"
    );

    // No machine is up: the endpoint cannot answer yet, and the condition says so.
    let infra: kube::Api<KubeZeroCluster> = api(world);
    let waiting = wait_for("the reachability condition", Duration::from_secs(60), || async {
        let object = infra.get(CLUSTER).await.map_err(|e| e.to_string())?;
        let conditions = object.status.map(|s| s.conditions).unwrap_or_default();
        conditions
            .into_iter()
            .find(|c| c.type_ == "ControlPlaneEndpointReachable")
            .ok_or_else(|| "no ControlPlaneEndpointReachable condition yet".to_owned())
    })
    .await;
    assert_eq!(
        (waiting.status.as_str(), waiting.reason.as_str()),
        ("False", "WaitingForControlPlane"),
        "{}",
        waiting.message
    );

    // Narrowing the list revokes what left it.
    let narrowed = json!({"spec": {"aws": {"loadBalancer": {"allowedCidrBlocks": ["198.51.100.7/32"]}}}});
    infra
        .patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&narrowed))
        .await
        .expect("narrow the allowed CIDRs");
    wait_for("203.0.113.0/24 revoked", Duration::from_secs(60), || async {
        let sources = api_sources(moto, &group)?;
        (sources == ["198.51.100.7/32"])
            .then_some(())
            .ok_or_else(|| format!("sources: {sources:?}"))
    })
    .await;

    // An internet-facing load balancer without sources is refused at apply time.
    let refused = infra
        .patch(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"aws": {"loadBalancer": {"allowedCidrBlocks": null}}}})),
        )
        .await
        .expect_err("refused");
    assert!(
        refused.to_string().contains("needs allowedCidrBlocks"),
        "{refused}"
    );
}
