//! The AWS library (`kubezero_provider::aws`) against moto: the cluster infrastructure is created
//! once however often it is ensured, a BYO VPC is used and never deleted, deletion leaves nothing of
//! the cluster (also when half of it is already gone, and including what in-cluster controllers
//! created), and a throttled call empties its rate bucket. Resources are counted with an unfiltered
//! inventory of the region, not with the ownership tags the code under test relies on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kubezero_provider::api::aws::AwsClusterSpec;
use kubezero_provider::aws::DeleteProgress;
use kubezero_provider::aws::clients::{AwsClients, AwsIdentity, AwsSettings, ClientRegistry};
use kubezero_provider::aws::errors::AwsErrorKind;
use kubezero_provider::aws::infrastructure::{
    ClusterInfrastructure, cluster_tags, delete_cluster_infrastructure, ensure_cluster_infrastructure,
};
use kubezero_provider::aws::inventory::{Inventory, inventory};
use kubezero_provider::aws::limiter::Bucket;
use kubezero_provider::aws::network::{NetworkError, ensure_network};
use kubezero_provider::aws::tags::ClusterTags;
use kubezero_provider::aws::{iam, infrastructure::InfrastructureError, load_balancer};
use kubezero_test::cloud::{Moto, http};
use serde_json::json;

use crate::support::bounded;

/// A moto server and a client set pointed at it.
struct MotoAws {
    moto: Moto,
    clients: AwsClients,
}

async fn start_moto() -> MotoAws {
    let moto = Moto::start().expect("moto starts");
    let clients = clients_for(&moto.endpoint_url(), moto.region()).await;
    MotoAws { moto, clients }
}

async fn clients_for(endpoint_url: &str, region: &str) -> AwsClients {
    let registry = ClientRegistry::new(AwsSettings {
        endpoint_url: Some(endpoint_url.to_owned()),
        initial_backoff: Duration::from_millis(10),
        ..AwsSettings::default()
    });
    let identity = AwsIdentity::Static {
        access_key_id: "testing".to_owned(),
        secret_access_key: "testing".to_owned(),
        session_token: None,
    };
    registry.clients(&identity, region).await.expect("client set")
}

fn spec(value: serde_json::Value) -> AwsClusterSpec {
    serde_json::from_value(value).expect("valid AwsClusterSpec")
}

async fn counts(aws: &MotoAws) -> BTreeMap<&'static str, usize> {
    inventory(&aws.clients).await.expect("inventory").counts()
}

/// `after - before` per kind, only kinds that changed.
fn delta(
    before: &BTreeMap<&'static str, usize>,
    after: &BTreeMap<&'static str, usize>,
) -> BTreeMap<&'static str, i64> {
    after
        .iter()
        .map(|(kind, n)| (*kind, *n as i64 - *before.get(kind).unwrap_or(&0) as i64))
        .filter(|(_, d)| *d != 0)
        .collect()
}

/// Runs the whole deletion until it reports done (bounded).
async fn delete_until_done(aws: &AwsClients, tags: &ClusterTags) -> usize {
    for round in 1..=50 {
        match delete_cluster_infrastructure(aws, tags)
            .await
            .expect("delete succeeds")
        {
            DeleteProgress::Done => return round,
            DeleteProgress::Waiting(what) => {
                eprintln!("delete round {round}: waiting for {what}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    panic!("deletion did not finish in 50 rounds");
}

/// One AWS Query API call to moto for `service` (what the credential scope names), e.g. to create
/// what an in-cluster controller would.
fn query(moto: &Moto, service: &str, version: &str, form: &str) -> String {
    query_in(moto, service, moto.region(), version, form)
}

/// [`query`] in `region`.
pub(crate) fn query_in(moto: &Moto, service: &str, region: &str, version: &str, form: &str) -> String {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    );
    let body = format!("{form}&Version={version}");
    let response = http::request(
        moto.addr(),
        "POST",
        "/",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &auth),
        ],
        body.as_bytes(),
        Duration::from_secs(10),
    )
    .expect("moto answers");
    assert_eq!(response.status, 200, "{form}: {}", response.text());
    response.text()
}

/// The text of the first `<element>` in an XML answer.
fn xml_value<'a>(xml: &'a str, element: &str) -> &'a str {
    let open = format!("<{element}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{element}> in {xml}"))
        + open.len();
    let end = start + xml[start..].find('<').expect("closing tag");
    &xml[start..end]
}

/// A security group and a network load balancer as the cloud controller manager would create them
/// for a `Service` of type LoadBalancer: tagged `kubernetes.io/cluster/<name>=owned` only.
fn create_in_cluster_controller_resources(moto: &Moto, infra: &ClusterInfrastructure, cluster: &str) {
    let tag = format!("kubernetes.io/cluster/{cluster}");
    let sg = query(
        moto,
        "ec2",
        "2016-11-15",
        &format!(
            "Action=CreateSecurityGroup&GroupName=k8s-elb-svc&GroupDescription=svc&VpcId={}\
             &TagSpecification.1.ResourceType=security-group&TagSpecification.1.Tag.1.Key={tag}\
             &TagSpecification.1.Tag.1.Value=owned",
            infra.network.vpc_id
        ),
    );
    assert!(sg.contains("<groupId>sg-"), "{sg}");
    let subnet = infra.network.subnets(true).next().expect("a public subnet");
    let lb = query(
        moto,
        "elasticloadbalancing",
        "2015-12-01",
        &format!(
            "Action=CreateLoadBalancer&Name=k8s-svc-lb&Type=network&Scheme=internet-facing\
             &Subnets.member.1={}&Tags.member.1.Key={tag}&Tags.member.1.Value=owned",
            subnet.id
        ),
    );
    assert!(lb.contains("<LoadBalancerArn>"), "{lb}");
    let tg = query(
        moto,
        "elasticloadbalancing",
        "2015-12-01",
        &format!(
            "Action=CreateTargetGroup&Name=k8s-svc-tg&Protocol=TCP&Port=30080&VpcId={}\
             &Tags.member.1.Key={tag}&Tags.member.1.Value=owned",
            infra.network.vpc_id
        ),
    );
    assert!(tg.contains("<TargetGroupArn>"), "{tg}");
}

fn mutating_calls(before: &BTreeMap<&'static str, u64>, after: &BTreeMap<&'static str, u64>) -> Vec<String> {
    after
        .iter()
        .filter(|(op, n)| **n > *before.get(*op).unwrap_or(&0))
        .filter(|(op, _)| !["Describe", "Get", "List"].iter().any(|p| op.starts_with(p)))
        .map(|(op, n)| format!("{op}×{}", n - before.get(op).unwrap_or(&0)))
        .collect()
}

#[tokio::test]
async fn ensuring_the_cluster_infrastructure_twice_creates_everything_once() {
    bounded(async {
        let aws = start_moto().await;
        let spec = spec(json!({"region": aws.moto.region(), "additionalTags": {"team": "platform"}}));
        let tags = cluster_tags("demo", &spec);
        let before = counts(&aws).await;

        let started = std::time::Instant::now();
        let first = ensure_cluster_infrastructure(&aws.clients, &tags, &spec)
            .await
            .expect("first ensure");
        let first_time = started.elapsed();
        let first_calls = aws.clients.stats().total();
        let after_first = counts(&aws).await;
        let expected = BTreeMap::from([
            ("vpc", 1),
            ("subnet", 6),
            ("internet-gateway", 1),
            ("nat-gateway", 3),
            ("elastic-ip", 3),
            // The VPC's main table plus one public and three private tables.
            ("route-table", 5),
            // The VPC's default group plus control plane, node and load balancer groups.
            ("security-group", 4),
            ("load-balancer", 1),
            ("target-group", 1),
            ("iam-role", 2),
            ("instance-profile", 2),
        ]);
        assert_eq!(delta(&before, &after_first), expected);

        let calls_before = aws.clients.stats().snapshot();
        let started = std::time::Instant::now();
        let second = ensure_cluster_infrastructure(&aws.clients, &tags, &spec)
            .await
            .expect("second ensure");
        let second_time = started.elapsed();
        let calls_after = aws.clients.stats().snapshot();
        let mut second = second;
        second.load_balancer.active = first.load_balancer.active;
        assert_eq!(second, first, "the second run finds the same resources");
        assert_eq!(counts(&aws).await, after_first, "the second run creates nothing");
        assert_eq!(
            mutating_calls(&calls_before, &calls_after),
            Vec::<String>::new(),
            "the second run only reads"
        );
        let reads: u64 = calls_after.values().sum::<u64>() - calls_before.values().sum::<u64>();
        eprintln!(
            "first ensure {first_time:?} with {first_calls} calls, second ensure {second_time:?} with {reads} read calls"
        );

        let zones: Vec<_> = first.failure_domains().into_iter().map(|f| f.name).collect();
        assert_eq!(zones, ["us-east-1a", "us-east-1b", "us-east-1c"]);
        let (host, port) = first.control_plane_endpoint();
        assert!(host.contains("demo-apiserver"), "{host}");
        assert_eq!(port, 6443);
        assert_eq!(first.network.nat_gateway_ids.len(), 3);
        assert!(first.network.managed);
        assert_eq!(first.iam.control_plane.name, "kubezero-demo-control-plane");

        // Every resource the provider made carries the ownership tag and the user's tags.
        let inventory = inventory(&aws.clients).await.unwrap();
        let owned = inventory.owned_counts(&tags);
        for kind in [
            "subnet",
            "internet-gateway",
            "nat-gateway",
            "elastic-ip",
            "load-balancer",
            "target-group",
        ] {
            assert_eq!(owned[kind] as i64, expected[kind], "{kind}");
        }
        assert_eq!(owned["route-table"], 4, "all but the VPC's main table");
        assert_eq!(owned["security-group"], 3, "all but the VPC's default group");
        for resource in inventory.kinds["subnet"]
            .iter()
            .filter(|r| r.tags.contains_key("team"))
        {
            assert_eq!(resource.tags["kubernetes.io/cluster/demo"], "owned");
        }
    })
    .await;
}

#[tokio::test]
async fn deleting_the_cluster_leaves_nothing_of_it_including_what_in_cluster_controllers_made() {
    bounded(async {
        let aws = start_moto().await;
        let spec = spec(json!({
            "region": aws.moto.region(),
            "network": {"availabilityZoneCount": 2, "natGateways": "Single", "vpc": {"cidrBlock": "10.20.0.0/16"}},
            "loadBalancer": {"scheme": "internet-facing"}
        }));
        let tags = cluster_tags("gone", &spec);
        let before = counts(&aws).await;
        let infra = ensure_cluster_infrastructure(&aws.clients, &tags, &spec).await.expect("ensure");
        assert_eq!(infra.network.nat_gateway_ids.len(), 1, "a single NAT gateway");
        assert_eq!(infra.network.vpc_cidr, "10.20.0.0/16");
        create_in_cluster_controller_resources(&aws.moto, &infra, "gone");
        let grown = delta(&before, &counts(&aws).await);
        assert_eq!(grown["load-balancer"], 2);
        assert_eq!(grown["security-group"], 5);

        let started = std::time::Instant::now();
        let rounds = delete_until_done(&aws.clients, &tags).await;
        eprintln!("delete took {:?} in {rounds} round(s)", started.elapsed());
        assert_eq!(delta(&before, &counts(&aws).await), BTreeMap::new(), "moto is back to where it started");

        // Deleting again is a no-op that succeeds.
        assert_eq!(delete_cluster_infrastructure(&aws.clients, &tags).await.unwrap(), DeleteProgress::Done);
    })
    .await;
}

#[tokio::test]
async fn deletion_finishes_when_half_of_the_cluster_is_already_gone() {
    bounded(async {
        let aws = start_moto().await;
        let spec = spec(json!({"region": aws.moto.region(), "network": {"availabilityZoneCount": 2}}));
        let tags = cluster_tags("half", &spec);
        let before = counts(&aws).await;
        let infra = ensure_cluster_infrastructure(&aws.clients, &tags, &spec)
            .await
            .expect("ensure");

        // An earlier, interrupted deletion got this far: load balancers, one role, one NAT gateway
        // and one subnet are gone.
        load_balancer::delete_load_balancers(&aws.clients, &tags)
            .await
            .unwrap();
        let name = &infra.iam.nodes.name;
        for action in [
            format!("Action=RemoveRoleFromInstanceProfile&InstanceProfileName={name}&RoleName={name}"),
            format!("Action=DeleteInstanceProfile&InstanceProfileName={name}"),
            format!(
                "Action=DeleteRolePolicy&RoleName={name}&PolicyName={}",
                iam::INLINE_POLICY_NAME
            ),
            format!("Action=DeleteRole&RoleName={name}"),
        ] {
            query(&aws.moto, "iam", "2010-05-08", &action);
        }
        let (_, nat) = infra.network.nat_gateway_ids.iter().next().unwrap();
        query(
            &aws.moto,
            "ec2",
            "2016-11-15",
            &format!("Action=DeleteNatGateway&NatGatewayId={nat}"),
        );
        let private = infra.network.subnets(false).next().unwrap();
        query(
            &aws.moto,
            "ec2",
            "2016-11-15",
            &format!("Action=DeleteSubnet&SubnetId={}", private.id),
        );

        delete_until_done(&aws.clients, &tags).await;
        assert_eq!(delta(&before, &counts(&aws).await), BTreeMap::new());
    })
    .await;
}

#[tokio::test]
async fn a_byo_vpc_is_validated_used_and_never_deleted() {
    bounded(async {
        let aws = start_moto().await;
        let baseline: Inventory = inventory(&aws.clients).await.unwrap();
        let vpc_id = baseline.kinds["vpc"][0].id.clone();
        let subnets: Vec<String> = baseline.kinds["subnet"].iter().map(|s| s.id.clone()).collect();
        assert!(subnets.len() >= 3, "moto's default VPC has a subnet per zone");

        // Without a subnet list: every subnet of the VPC, classified by its route table. moto's
        // default VPC has no route to an internet gateway, so all subnets are private...
        let all = spec(json!({"region": aws.moto.region(), "network": {"vpc": {"id": vpc_id}}}));
        let tags = cluster_tags("byo", &all);
        let network = ensure_network(&aws.clients, &tags, &all.network)
            .await
            .expect("BYO network");
        assert!(!network.managed);
        assert_eq!(network.subnets.len(), subnets.len());
        assert!(network.subnets.iter().all(|s| !s.public), "{network:?}");
        assert_eq!(network.failure_domains().len(), subnets.len());
        // ...until the main route table sends traffic to one.
        let igw = query(&aws.moto, "ec2", "2016-11-15", "Action=CreateInternetGateway");
        let igw = xml_value(&igw, "internetGatewayId").to_owned();
        query(
            &aws.moto,
            "ec2",
            "2016-11-15",
            &format!("Action=AttachInternetGateway&InternetGatewayId={igw}&VpcId={vpc_id}"),
        );
        let main = query(
            &aws.moto,
            "ec2",
            "2016-11-15",
            &format!("Action=DescribeRouteTables&Filter.1.Name=vpc-id&Filter.1.Value.1={vpc_id}"),
        );
        let main = xml_value(&main, "routeTableId").to_owned();
        query(
            &aws.moto,
            "ec2",
            "2016-11-15",
            &format!("Action=CreateRoute&RouteTableId={main}&DestinationCidrBlock=0.0.0.0/0&GatewayId={igw}"),
        );
        let network = ensure_network(&aws.clients, &tags, &all.network)
            .await
            .expect("BYO network");
        assert!(network.subnets.iter().all(|s| s.public), "{network:?}");
        let baseline: Inventory = inventory(&aws.clients).await.unwrap();

        // With a subnet list and roles: the whole cluster infrastructure on top of it.
        let listed = spec(json!({
            "region": aws.moto.region(),
            "network": {"vpc": {"id": vpc_id}, "subnets": [
                {"id": subnets[0], "role": "private"},
                {"id": subnets[1], "role": "private"},
                {"id": subnets[2], "role": "public"},
            ]}
        }));
        let before = counts(&aws).await;
        let infra = ensure_cluster_infrastructure(&aws.clients, &tags, &listed)
            .await
            .expect("ensure on BYO");
        assert_eq!(infra.failure_domains().len(), 2, "zones of the private subnets");
        let grown = delta(&before, &counts(&aws).await);
        assert_eq!(
            grown,
            BTreeMap::from([
                ("security-group", 3),
                ("load-balancer", 1),
                ("target-group", 1),
                ("iam-role", 2),
                ("instance-profile", 2)
            ]),
            "nothing of the network is created"
        );
        delete_until_done(&aws.clients, &tags).await;
        let after: Inventory = inventory(&aws.clients).await.unwrap();
        assert_eq!(
            after.counts(),
            baseline.counts(),
            "the user's VPC and subnets stay"
        );
        assert_eq!(after.kinds["vpc"][0].id, vpc_id);

        // A subnet of another VPC, or a VPC that does not exist, is refused as invalid.
        let other = ensure_cluster_infrastructure(
            &aws.clients,
            &tags,
            &spec(json!({"region": aws.moto.region(), "network": {"vpc": {"id": "vpc-0123456789abcdef0"}}})),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(other, InfrastructureError::Network(NetworkError::Invalid { .. })),
            "{other}"
        );
        assert_eq!(other.class(), kubezero_capi::runtime::errors::ErrorClass::Invalid);
        let missing = ensure_cluster_infrastructure(
            &aws.clients,
            &tags,
            &spec(json!({"region": aws.moto.region(), "network": {
                "vpc": {"id": vpc_id}, "subnets": [{"id": "subnet-0123456789abcdef0"}]
            }})),
        )
        .await
        .unwrap_err();
        assert!(missing.to_string().contains("subnet"), "{missing}");
        assert_eq!(
            missing.class(),
            kubezero_capi::runtime::errors::ErrorClass::Invalid
        );
    })
    .await;
}

const THROTTLED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
    <Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors>\
    <RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>";
const NO_VPCS: &str = "<DescribeVpcsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
    <requestId>00000000-0000-0000-0000-000000000000</requestId><vpcSet/></DescribeVpcsResponse>";

/// An EC2 endpoint that answers `RequestLimitExceeded` to the first `throttled` requests, then an
/// empty DescribeVpcs. Returns its URL and the request counter.
async fn throttling_endpoint(throttled: usize) -> (String, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            if n < throttled {
                (axum::http::StatusCode::SERVICE_UNAVAILABLE, THROTTLED)
            } else {
                (axum::http::StatusCode::OK, NO_VPCS)
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn a_throttled_call_empties_its_bucket_and_is_retried() {
    bounded(async {
        let (url, seen) = throttling_endpoint(2).await;
        let clients = clients_for(&url, "us-east-1").await;
        let byo = spec(json!({"region": "us-east-1", "network": {"vpc": {"id": "vpc-0123456789abcdef0"}}}));
        let tags = cluster_tags("throttled", &byo);
        let started = std::time::Instant::now();
        // DescribeVpcs: throttled twice, answered (no such VPC) the third time.
        let error = ensure_network(&clients, &tags, &byo.network).await.unwrap_err();
        assert!(matches!(error, NetworkError::Invalid { .. }), "{error}");
        assert_eq!(seen.load(Ordering::SeqCst), 3);
        let stats = clients.limiter().stats(Bucket::Ec2NonMutating);
        assert_eq!(stats.drained, 2, "each throttled answer emptied the bucket");
        assert_eq!(clients.stats().snapshot()["DescribeVpcs"], 3);
        // After each drain the next attempt waited for a token (1/20 s each).
        assert!(stats.waited >= Duration::from_millis(90), "{stats:?}");
        eprintln!("throttled twice, answered after {:?}", started.elapsed());

        // Throttled on every attempt: the call fails as Throttled after max_attempts.
        let (url, seen) = throttling_endpoint(usize::MAX).await;
        let clients = clients_for(&url, "us-east-1").await;
        let error = ensure_network(&clients, &tags, &byo.network).await.unwrap_err();
        let NetworkError::Vpc { source, .. } = &error else {
            panic!("{error}")
        };
        assert_eq!(source.kind, AwsErrorKind::Throttled);
        assert_eq!(
            error.class(),
            kubezero_capi::runtime::errors::ErrorClass::Throttled
        );
        assert_eq!(seen.load(Ordering::SeqCst), 3, "three attempts");
        assert_eq!(clients.limiter().stats(Bucket::Ec2NonMutating).drained, 3);
    })
    .await;
}

/// Cluster deletion first terminates instances still tagged for the cluster that no KubeZeroMachine
/// holds any more (a crash between launch and recording the instance id), then releases the rest.
#[tokio::test]
async fn cluster_deletion_terminates_orphaned_instances_before_the_network() {
    bounded(async {
        let aws = start_moto().await;
        let spec = spec(json!({"region": aws.moto.region(), "network": {"availabilityZoneCount": 1}}));
        let tags = cluster_tags("orphans", &spec);
        let before = counts(&aws).await;
        let infra = ensure_cluster_infrastructure(&aws.clients, &tags, &spec)
            .await
            .expect("ensure");
        let subnet = &infra.network.subnets[0].id;
        let owned = tags.owned_key();
        aws.moto
            .ec2_query(&format!(
                "Action=RunInstances&ImageId=ami-12c6146b&MinCount=2&MaxCount=2&InstanceType=t3.small&SubnetId={subnet}\
                 &TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key={owned}&TagSpecification.1.Tag.1.Value=owned"
            ))
            .expect("RunInstances");
        assert_eq!(delta(&before, &counts(&aws).await)["instance"], 2);

        let mut rounds = 0;
        loop {
            rounds += 1;
            assert!(rounds <= 50, "deletion did not finish");
            match kubezero_provider::controllers::cluster::aws::release_with(&aws.clients, &tags)
                .await
                .expect("release")
            {
                DeleteProgress::Done => break,
                DeleteProgress::Waiting(what) => {
                    eprintln!("round {rounds}: {what}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        assert!(rounds >= 2, "the instances were terminated first");
        assert_eq!(delta(&before, &counts(&aws).await), BTreeMap::new(), "nothing of the cluster is left");
    })
    .await;
}
