//! AWS under faults: the fault-injecting proxy (`kubezero_test::cloud::FaultProxy`) against moto
//! and the real SDK, and the throttling e2e: both managers on moto behind the proxy answering a
//! quarter of the calls with `RequestLimitExceeded` / `Throttling` / 5xx: a cluster with a control
//! plane and 5 workers still converges with one instance per machine and exactly the infrastructure
//! its status names, and leaves nothing in moto after deletion. An `#[ignore]`d variant loses answers
//! after moto acted (the provider duplicates some creates today).
//!
//! The helpers here (control plane, convergence and resource checks counted in moto without the
//! ownership logic under test) are shared with the chaos suite.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use kubezero_capi::core::{Cluster, Machine};
use kubezero_provider::api::{KubeZeroCluster, KubeZeroMachine};
use kubezero_provider::aws::clients::{AwsClients, AwsIdentity, AwsSettings, ClientRegistry};
use kubezero_provider::aws::inventory::{Inventory, inventory};
use kubezero_provider::aws::tags::ClusterTags;
use kubezero_test::cloud::{FaultConfig, FaultProxy, Moto, alpine_amis, ec2_query};
use kubezero_test::world::{World, WorldView};
use serde_json::json;

use crate::support::{bounded, create, create_cluster, create_worker_pool, dynamic};

/// The region `create_cluster` puts the cluster in.
pub(crate) const REGION: &str = "eu-central-1";

/// The instance tag naming the machine an instance belongs to.
const MACHINE_TAG: &str = kubezero_provider::aws::instances::MACHINE_TAG;
/// How long a check waits for the machine tags of converged machines.
pub(crate) const TAGS_SET: Duration = Duration::from_secs(60);

/// A client set for `endpoint` (moto or the proxy) with `max_attempts` and short back-offs.
async fn clients_via(moto: &Moto, endpoint: String, max_attempts: u32) -> AwsClients {
    let registry = ClientRegistry::new(AwsSettings {
        endpoint_url: Some(endpoint),
        max_attempts,
        initial_backoff: Duration::from_millis(10),
        ..AwsSettings::default()
    });
    let identity = AwsIdentity::Static {
        access_key_id: moto.access_key_id().to_owned(),
        secret_access_key: moto.secret_access_key().to_owned(),
        session_token: None,
    };
    registry
        .clients(&identity, moto.region())
        .await
        .expect("client set")
}

fn only(config: FaultConfig) -> FaultConfig {
    FaultConfig { seed: 1, ..config }
}

/// The text of every `<element>` in an XML answer.
fn xml_values<'a>(xml: &'a str, element: &str) -> Vec<&'a str> {
    let open = format!("<{element}>");
    xml.match_indices(&open)
        .filter_map(|(at, _)| {
            let start = at + open.len();
            xml[start..].find('<').map(|end| &xml[start..start + end])
        })
        .collect()
}

#[tokio::test]
async fn the_proxy_forwards_and_the_sdk_reads_its_injected_errors_as_aws_errors() {
    bounded(async {
        let moto = Moto::start().expect("moto starts");
        let proxy = FaultProxy::start(moto.addr(), FaultConfig::default()).expect("proxy starts");
        let aws = clients_via(&moto, proxy.endpoint_url(), 1).await;

        // Transparent: the whole inventory (EC2, ELBv2, IAM) goes through.
        let through = inventory(&aws).await.expect("inventory through the proxy");
        let direct = inventory(&moto.aws_clients(moto.region()).await)
            .await
            .expect("inventory");
        assert_eq!(through, direct, "the proxy changes nothing");
        let counts = proxy.counts();
        assert_eq!(counts["DescribeVpcs"].forwarded, 1, "{counts:?}");
        assert_eq!(counts["ListRoles"].forwarded, 1, "{counts:?}");
        assert_eq!(proxy.totals().injected(), 0);

        // Throttled: every service's answer is classified as throttling by the SDK and the provider.
        proxy.set_config(only(FaultConfig {
            throttle: 1.0,
            ..FaultConfig::default()
        }));
        let error = inventory(&aws).await.expect_err("EC2 throttled");
        assert_eq!(
            (error.code.as_str(), error.status, error.kind.is_retryable()),
            ("RequestLimitExceeded", Some(503), true),
            "{error:?}"
        );
        assert_eq!(format!("{:?}", error.kind), "Throttled");
        let tags = ClusterTags::new("faults", BTreeMap::new());
        let iam = kubezero_provider::aws::iam::delete_iam(&aws, &tags)
            .await
            .expect_err("IAM throttled");
        assert!(
            format!("{iam:?}").contains("kind: Throttled") && format!("{iam:?}").contains("Throttling"),
            "{iam:?}"
        );
        let elb = kubezero_provider::aws::load_balancer::delete_load_balancers(&aws, &tags)
            .await
            .expect_err("ELBv2 throttled");
        assert!(format!("{elb:?}").contains("kind: Throttled"), "{elb:?}");

        // Server errors are transient.
        proxy.set_config(only(FaultConfig {
            server_error: 1.0,
            ..FaultConfig::default()
        }));
        for _ in 0..4 {
            let error = inventory(&aws).await.expect_err("5xx");
            assert!(error.kind.is_retryable(), "{error:?}");
            assert!(matches!(error.status, Some(500 | 503)), "{error:?}");
            assert!(
                ["InternalError", "ServiceUnavailable"].contains(&error.code.as_str()),
                "{error:?}"
            );
        }
        // With retries, a share of faults is absorbed by `AwsClients::call`.
        proxy.set_config(FaultConfig {
            seed: 7,
            throttle: 0.3,
            server_error: 0.1,
            ..FaultConfig::default()
        });
        let retrying = clients_via(&moto, proxy.endpoint_url(), 10).await;
        for _ in 0..5 {
            inventory(&retrying).await.expect("retries absorb the faults");
        }

        let totals = proxy.totals();
        assert!(totals.throttled >= 3 && totals.server_errors >= 4, "{totals:?}");
        eprintln!("{}", proxy.report());

        // A client stuck half-way through a request does not hold up the proxy's drop.
        let mut stuck = std::net::TcpStream::connect(proxy.addr()).expect("connect");
        std::io::Write::write_all(&mut stuck, b"POST / HTTP/1.1\r\nHost: x\r\n").expect("write");
        let dropping = Instant::now();
        drop(proxy);
        assert!(
            dropping.elapsed() < Duration::from_secs(5),
            "{:?}",
            dropping.elapsed()
        );
        drop(stuck);
    })
    .await;
}

#[tokio::test]
async fn lost_answers_take_effect_and_run_instances_replays_by_client_token() {
    bounded(async {
        let moto = Moto::start().expect("moto starts");
        let proxy = FaultProxy::start(
            moto.addr(),
            only(FaultConfig {
                lost_answer: 1.0,
                ..FaultConfig::default()
            }),
        )
        .expect("proxy starts");
        let vpcs = |addr| {
            let answer = ec2_query(addr, moto.region(), "testing", "Action=DescribeVpcs").expect("answer");
            xml_values(&answer.text(), "vpcId").len()
        };
        let before = vpcs(moto.addr());
        let lost = ec2_query(
            proxy.addr(),
            moto.region(),
            "testing",
            "Action=CreateVpc&CidrBlock=10.9.0.0%2F16",
        )
        .expect("an answer");
        assert_eq!(lost.status, 500, "{}", lost.text());
        assert!(lost.text().contains("<Code>InternalError</Code>"), "{}", lost.text());
        assert_eq!(vpcs(moto.addr()), before + 1, "the call took effect anyway");

        let image = "ami-0a19e00000000222a";
        let run = format!(
            "Action=RunInstances&ImageId={image}&InstanceType=t3.micro&MinCount=2&MaxCount=2&ClientToken=kzb-replay"
        );
        let lost = ec2_query(proxy.addr(), moto.region(), "testing", &run).expect("an answer");
        assert_eq!(lost.status, 500);
        proxy.set_config(FaultConfig::default());
        let retried = ec2_query(proxy.addr(), moto.region(), "testing", &run).expect("an answer");
        assert_eq!(retried.status, 200, "{}", retried.text());
        let again = ec2_query(proxy.addr(), moto.region(), "testing", &run).expect("an answer");
        let retried_text = retried.text();
        let mut ids: Vec<&str> = xml_values(&retried_text, "instanceId");
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 2, "{}", retried.text());
        assert_eq!(again.text(), retried.text(), "same reservation every time");
        let all = ec2_query(moto.addr(), moto.region(), "testing", "Action=DescribeInstances").expect("answer");
        let all_text = all.text();
        let mut live: Vec<&str> = xml_values(&all_text, "instanceId");
        live.sort_unstable();
        live.dedup();
        assert_eq!(live, ids, "one launch in moto for three requests with the token");
        let counts = proxy.counts();
        assert_eq!(counts["RunInstances"].lost_answers, 1);
        assert_eq!(counts["RunInstances"].replayed, 2);
        assert_eq!(counts["CreateVpc"].lost_answers, 1);
    })
    .await;
}

// ---- shared by the throttling and chaos e2es ---------------------------------------------------

/// A namespaced API of the world.
pub(crate) fn api<K>(world: &WorldView) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(world.client(), world.namespace())
}

/// Polls `check` every 250 ms until it returns `Some`, failing after `timeout` with the last
/// `Err` description it gave.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `cluster`'s KubeZeroCluster is provisioned and returns its AWS status.
pub(crate) async fn cluster_provisioned(
    world: &WorldView,
    cluster: &str,
    timeout: Duration,
) -> kubezero_provider::api::aws::AwsClusterStatus {
    wait_for("KubeZeroCluster provisioned on AWS", timeout, || async {
        let infra = api::<KubeZeroCluster>(world)
            .get(cluster)
            .await
            .map_err(|e| e.to_string())?;
        let status = infra.status.as_ref().ok_or("no status")?;
        let provisioned = status
            .initialization
            .as_ref()
            .and_then(|i| i.provisioned)
            .unwrap_or(false);
        match (&status.aws, provisioned) {
            (Some(aws), true) => Ok(aws.clone()),
            _ => Err(format!("not provisioned: {:?}", status.conditions)),
        }
    })
    .await
}

/// The availability zone of the first private subnet of `infra`.
pub(crate) fn private_zone(infra: &kubezero_provider::api::aws::AwsClusterStatus) -> String {
    let subnet = infra.subnets.iter().find(|s| !s.public);
    subnet.expect("a private subnet").availability_zone.clone()
}

/// Creates control-plane Machine `name` of `cluster` (KubeZeroMachine + KubeZeroConfig) in `zone`.
pub(crate) async fn create_control_plane(world: &WorldView, cluster: &str, name: &str, zone: &str) {
    create(world, &dynamic(world, "cluster.x-k8s.io", "v1beta2", "Machine", "machines"),
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": name, "labels": {"cluster.x-k8s.io/cluster-name": cluster, "cluster.x-k8s.io/control-plane": ""}},
            "spec": {"clusterName": cluster, "version": "v1.34.1", "failureDomain": zone,
                "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeZeroConfig", "name": name}},
                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroMachine", "name": name}}})).await;
    create(
        world,
        &dynamic(
            world,
            "infrastructure.cluster.x-k8s.io",
            "v1alpha1",
            "KubeZeroMachine",
            "kubezeromachines",
        ),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroMachine",
            "metadata": {"name": name}, "spec": {"aws": {"instanceType": "m7i.large"}}}),
    )
    .await;
    create(
        world,
        &dynamic(
            world,
            "bootstrap.cluster.x-k8s.io",
            "v1alpha1",
            "KubeZeroConfig",
            "kubezeroconfigs",
        ),
        json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroConfig",
            "metadata": {"name": name}, "spec": {}}),
    )
    .await;
}

/// Sets MachineDeployment `name`'s replicas.
pub(crate) async fn scale(world: &WorldView, name: &str, replicas: i64) {
    dynamic(
        world,
        "cluster.x-k8s.io",
        "v1beta2",
        "MachineDeployment",
        "machinedeployments",
    )
    .patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .expect("scale");
}

/// Whether every Machine of `cluster` has converged: its KubeZeroMachine provisioned with a
/// providerID in the region, Ready for the reason `InstanceRunning`, and a Node; workers of
/// `deployment` number `workers` and (when given) come from KubeZeroMachineTemplate `template`.
/// `Ok` carries the instance id per KubeZeroMachine.
pub(crate) async fn machines_converged(
    world: &WorldView,
    cluster: &str,
    deployment: &str,
    workers: usize,
    template: Option<&str>,
) -> Result<BTreeMap<String, String>, String> {
    let machines = api::<Machine>(world)
        .list(&ListParams::default().labels(&format!("cluster.x-k8s.io/cluster-name={cluster}")))
        .await
        .map_err(|e| e.to_string())?
        .items;
    let in_deployment = |m: &&Machine| {
        m.labels()
            .get("cluster.x-k8s.io/deployment-name")
            .map(String::as_str)
            == Some(deployment)
    };
    let worker_count = machines.iter().filter(in_deployment).count();
    if worker_count != workers {
        return Err(format!("{worker_count} of {workers} workers"));
    }
    let infra = api::<KubeZeroMachine>(world);
    let mut instances = BTreeMap::new();
    for machine in &machines {
        let name = machine.name_any();
        if machine.metadata.deletion_timestamp.is_some() {
            return Err(format!("{name} is being deleted"));
        }
        let infra_name = machine
            .spec
            .infrastructure_ref
            .as_ref()
            .map(|r| r.name.clone())
            .ok_or_else(|| format!("{name} has no infrastructureRef"))?;
        let kzm = infra
            .get_opt(&infra_name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{name}: no KubeZeroMachine {infra_name} yet"))?;
        if let Some(template) = template
            && in_deployment(&machine)
            && kzm
                .annotations()
                .get("cluster.x-k8s.io/cloned-from-name")
                .map(String::as_str)
                != Some(template)
        {
            return Err(format!("{infra_name} is not from template {template}"));
        }
        let status = kzm.status.as_ref();
        let provisioned = status
            .and_then(|s| s.initialization.as_ref())
            .and_then(|i| i.provisioned)
            == Some(true);
        let ready = status
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.reason.clone());
        let provider_id = kzm.spec.provider_id.clone().unwrap_or_default();
        if !provisioned
            || ready.as_deref() != Some("InstanceRunning")
            || !provider_id.starts_with(&format!("aws:///{REGION}"))
            || !machine.has_node_ref()
        {
            return Err(format!(
                "{infra_name}: provisioned {provisioned}, Ready {ready:?}, providerID {provider_id:?}, node {}",
                machine.has_node_ref()
            ));
        }
        let instance = provider_id.rsplit('/').next().unwrap_or_default().to_owned();
        instances.insert(infra_name, instance);
    }
    Ok(instances)
}

/// Everything in moto's `REGION`, listed by kind (not through the ownership logic under test).
pub(crate) async fn moto_inventory(moto: &Moto) -> Inventory {
    inventory(&moto.aws_clients(REGION).await)
        .await
        .expect("moto inventory")
}

/// The moto inventory once every live instance carries its machine tag (the provider sets them in
/// the background after a launch and retries until they stick), or as it is after `timeout`
/// ([`check_instances`] then reports the untagged ones).
pub(crate) async fn tagged_inventory(moto: &Moto, timeout: Duration) -> Inventory {
    let deadline = Instant::now() + timeout;
    loop {
        let left = moto_inventory(moto).await;
        let untagged = left
            .kinds
            .get("instance")
            .is_some_and(|live| live.iter().any(|i| !i.tags.contains_key(MACHINE_TAG)));
        if !untagged || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What moto holds of a cluster, and what is wrong with it.
#[derive(Debug, Default)]
pub(crate) struct ResourceCount {
    /// Owned resources per kind.
    pub owned: BTreeMap<&'static str, usize>,
    /// Problems: duplicates, leaks, machines without an instance.
    pub problems: Vec<String>,
}

/// Checks the live instances in moto against `machines` (KubeZeroMachine → instance id): every
/// live instance of the region belongs to exactly one machine, every machine's instance is live,
/// no machine tag appears on two instances. Returns the count of problems found and describes them.
pub(crate) fn check_instances(left: &Inventory, machines: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    let live = left.kinds.get("instance").cloned().unwrap_or_default();
    let live_ids: BTreeSet<&str> = live.iter().map(|i| i.id.as_str()).collect();
    let mut per_tag: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for instance in &live {
        let tag = instance
            .tags
            .get(MACHINE_TAG)
            .map_or("(untagged)", String::as_str);
        per_tag.entry(tag).or_default().push(&instance.id);
    }
    for (tag, ids) in &per_tag {
        if ids.len() > 1 || *tag == "(untagged)" {
            problems.push(format!("duplicate instances for machine tag {tag}: {ids:?}"));
        }
    }
    let wanted: BTreeSet<&str> = machines.values().map(String::as_str).collect();
    for (machine, id) in machines {
        if !live_ids.contains(id.as_str()) {
            problems.push(format!("{machine}'s instance {id} is not live in moto"));
        }
    }
    for id in live_ids.difference(&wanted) {
        problems.push(format!(
            "instance {id} belongs to no machine (leaked or duplicate)"
        ));
    }
    if wanted.len() != machines.len() {
        problems.push(format!("two machines share an instance: {machines:?}"));
    }
    problems
}

/// Checks the cluster infrastructure in moto against the KubeZeroCluster status: exactly the VPC,
/// subnets, security groups, load balancer, target group and instance profiles it names (plus one
/// role per profile and at most one internet gateway) carry the cluster's ownership.
pub(crate) fn check_infrastructure(
    left: &Inventory,
    cluster: &str,
    status: &kubezero_provider::api::aws::AwsClusterStatus,
) -> ResourceCount {
    let owned = left.owned_counts(&ClusterTags::new(cluster, BTreeMap::new()));
    let groups: BTreeSet<&str> = [
        status.security_groups.control_plane.as_str(),
        status.security_groups.node.as_str(),
        status.security_groups.load_balancer.as_str(),
    ]
    .into_iter()
    .collect();
    let profiles: BTreeSet<&str> = [
        status.instance_profiles.control_plane.as_str(),
        status.instance_profiles.node.as_str(),
    ]
    .into_iter()
    .collect();
    let expected: [(&str, usize); 7] = [
        ("vpc", 1),
        ("subnet", status.subnets.len()),
        ("security-group", groups.len()),
        ("load-balancer", 1),
        ("target-group", 1),
        ("instance-profile", profiles.len()),
        ("iam-role", profiles.len()),
    ];
    let mut problems = Vec::new();
    for (kind, want) in expected {
        let have = owned.get(kind).copied().unwrap_or(0);
        if have != want {
            problems.push(format!("{have} owned {kind}s, the cluster status names {want}"));
        }
    }
    let count = |kind: &str| owned.get(kind).copied().unwrap_or(0);
    if count("internet-gateway") > 1 {
        problems.push(format!("{} owned internet gateways", count("internet-gateway")));
    }
    // At most one NAT gateway (with its elastic IP) per public subnet, one route table per private
    // subnet and one for the public ones.
    let public = status.subnets.iter().filter(|s| s.public).count();
    if count("nat-gateway") > public || count("elastic-ip") != count("nat-gateway") {
        problems.push(format!(
            "{} NAT gateways and {} elastic IPs for {public} public subnets",
            count("nat-gateway"),
            count("elastic-ip")
        ));
    }
    let private = status.subnets.len() - public;
    if count("route-table") > private + 1 {
        problems.push(format!(
            "{} owned route tables for {private} private subnets and the public ones",
            count("route-table"),
        ));
    }
    ResourceCount { owned, problems }
}

/// Owned resources of `cluster` left in moto, per kind with a count above 0, plus live instances.
pub(crate) fn leftovers(left: &Inventory, cluster: &str) -> BTreeMap<&'static str, usize> {
    let mut owned: BTreeMap<&'static str, usize> = left
        .owned_counts(&ClusterTags::new(cluster, BTreeMap::new()))
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    let instances = left.count("instance");
    if instances > 0 {
        owned.insert("instance (any)", instances);
    }
    owned
}

/// Deletes Cluster `cluster` and waits until it, its Machines and its KubeZeroCluster are gone.
pub(crate) async fn delete_cluster(world: &WorldView, cluster: &str, timeout: Duration) {
    api::<Cluster>(world)
        .delete(cluster, &DeleteParams::default())
        .await
        .expect("delete the Cluster");
    wait_for("Cluster, Machines and KubeZeroCluster gone", timeout, || async {
        let left = api::<Cluster>(world)
            .get_opt(cluster)
            .await
            .map_err(|e| e.to_string())?;
        let machines = api::<KubeZeroMachine>(world)
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        let infra = api::<KubeZeroCluster>(world)
            .get_opt(cluster)
            .await
            .map_err(|e| e.to_string())?;
        if left.is_none() && machines == 0 && infra.is_none() {
            Ok(())
        } else {
            Err(format!(
                "Cluster {}, {machines} KubeZeroMachines, KubeZeroCluster {}",
                left.is_some(),
                infra.is_some()
            ))
        }
    })
    .await;
}

// ---- the throttling e2e ------------------------------------------------------------------------

const THROTTLED_CLUSTER: &str = "throttled";
const THROTTLED_WORKERS: &str = "throttled-workers";

/// `KUBEZERO_FAULTS_SEED` (decimal) explores other fault sequences than `default`.
fn faults_seed(default: u64) -> u64 {
    std::env::var("KUBEZERO_FAULTS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_converge_without_duplicates_when_a_quarter_of_aws_calls_fail() {
    throttled_e2e(FaultConfig {
        seed: faults_seed(20261122),
        throttle: 0.20,
        server_error: 0.08,
        lost_answer: 0.0,
    })
    .await;
}

/// Answers lost after AWS acted (a dropped connection, an attempt timeout): the provider must not
/// create a second copy of what the first call created (it used to re-send `CreateInternetGateway` and
/// `CreateRouteTable` after a 5xx and end up with two internet gateways and an extra route table; now
/// such creates are not repeated within a call and the next pass finds them by their tags).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_never_duplicate_infrastructure() {
    throttled_e2e(FaultConfig {
        seed: faults_seed(20261122),
        throttle: 0.20,
        server_error: 0.05,
        lost_answer: 0.15,
    })
    .await;
}

/// The throttling e2e with `config`'s faults.
async fn throttled_e2e(config: FaultConfig) {
    let moto = Arc::new(Moto::builder().amis(alpine_amis()).start().expect("moto starts"));
    let proxy = Arc::new(FaultProxy::start(moto.addr(), config).expect("proxy starts"));
    let mut world = World::start_with_cloud_via(&moto, &proxy.endpoint_url())
        .await
        .expect("the world starts");
    world.start_managers().expect("the managers start");
    let view = world.view();
    let (flow_moto, flow_proxy) = (moto.clone(), proxy.clone());
    let timeout = Duration::from_secs(240);
    let outcome = tokio::spawn(async move {
        tokio::time::timeout(timeout, throttled_flow(&view, &flow_moto, &flow_proxy)).await
    })
    .await;
    let logs = world.stop_managers();
    eprintln!("{}", proxy.report());
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("the flow timed out after {timeout:?}; manager logs:\n{logs}"),
        Err(failure) => panic!("{failure}; manager logs:\n{logs}"),
    }
}

async fn throttled_flow(world: &WorldView, moto: &Moto, proxy: &FaultProxy) {
    let started = Instant::now();
    let wait = Duration::from_secs(90);
    create_cluster(world, THROTTLED_CLUSTER).await;
    let infra = cluster_provisioned(world, THROTTLED_CLUSTER, wait).await;
    let zone = private_zone(&infra);
    eprintln!("cluster infrastructure after {:?}", started.elapsed());
    create_control_plane(world, THROTTLED_CLUSTER, "throttled-cp-0", &zone).await;
    create_worker_pool(world, THROTTLED_CLUSTER, THROTTLED_WORKERS, 5).await;
    let machines = wait_for("1 control plane and 5 workers converged", wait, || {
        machines_converged(world, THROTTLED_CLUSTER, THROTTLED_WORKERS, 5, None)
    })
    .await;
    assert_eq!(machines.len(), 6);
    eprintln!("6 machines converged after {:?}", started.elapsed());
    let left = tagged_inventory(moto, TAGS_SET).await;
    let mut problems = check_instances(&left, &machines);
    let infra_count = check_infrastructure(&left, THROTTLED_CLUSTER, &infra);
    eprintln!("owned in moto: {:?}", infra_count.owned);
    problems.extend(infra_count.problems);
    let totals = proxy.totals();
    assert!(totals.injected() >= 20, "the proxy injected faults: {totals:?}");

    // Deleted even after duplicates were found: whether they leak too is part of the answer.
    delete_cluster(world, THROTTLED_CLUSTER, wait).await;
    let left = leftovers(&moto_inventory(moto).await, THROTTLED_CLUSTER);
    if !left.is_empty() {
        problems.push(format!("left in moto after deletion: {left:?}"));
    }
    let totals = proxy.totals();
    eprintln!(
        "faults e2e: {} AWS requests, {} injected ({} throttled, {} 5xx, {} lost answers, {} RunInstances \
         replayed), {} problems, in {:?}",
        totals.total(),
        totals.injected(),
        totals.throttled,
        totals.server_errors,
        totals.lost_answers,
        totals.replayed,
        problems.len(),
        started.elapsed()
    );
    assert!(problems.is_empty(), "no duplicate, nothing leaked: {problems:#?}");
}
