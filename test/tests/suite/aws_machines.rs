//! The machine side of the AWS library (`kubezero_provider::aws::{launcher, instances, ami,
//! instance_types}`) against moto: identical launches pending together cost one RunInstances, a
//! restarted provider adopts the instances of a batch it did not get to assign instead of launching
//! duplicates, terminations are batched, unclaimed instances are terminated, and image and instance
//! type lookups are answered once and cached. Instances are counted with raw DescribeInstances
//! queries, not with the ownership tags the code under test relies on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use kubezero_provider::api::aws::{AmiArchitecture, AwsAmi, AwsAmiLookup, AwsImds, AwsVolume};
use kubezero_provider::api::{NodeArchitecture, OperatingSystem};
use kubezero_provider::aws::ami::{AmiError, AmiResolver};
use kubezero_provider::aws::clients::{
    AWS_REQUESTS_METRIC, AwsClients, AwsIdentity, AwsSettings, ClientRegistry,
};
use kubezero_provider::aws::errors::AwsError;
use kubezero_provider::aws::instance_types::InstanceTypeCache;
use kubezero_provider::aws::instances::{Fill, Instance, LaunchSpec, MACHINE_TAG, MachineKey, run_instances};
use kubezero_provider::aws::launcher::{
    ClusterInstances, Freshness, LaunchError, LaunchStatus, Launcher, LauncherSettings,
};
use kubezero_provider::aws::tags::{ClusterTags, OWNED, ROLE_TAG};
use kubezero_test::cloud::{Moto, alpine_ami, alpine_amis};
use serde_json::Value;

use crate::support::bounded;

const CLUSTER: &str = "demo";

/// A client registry for moto and the client set of moto's region from it.
async fn registry_for(moto: &Moto) -> (ClientRegistry, AwsClients) {
    let registry = ClientRegistry::new(AwsSettings {
        endpoint_url: Some(moto.endpoint_url()),
        initial_backoff: Duration::from_millis(10),
        ..AwsSettings::default()
    });
    let identity = AwsIdentity::Static {
        access_key_id: moto.access_key_id().to_owned(),
        secret_access_key: moto.secret_access_key().to_owned(),
        session_token: None,
    };
    let clients = registry
        .clients(&identity, moto.region())
        .await
        .expect("client set");
    (registry, clients)
}

async fn clients_for(moto: &Moto) -> AwsClients {
    registry_for(moto).await.1
}

fn settings() -> LauncherSettings {
    LauncherSettings {
        describe_interval: Duration::from_millis(200),
        launch_window: Duration::from_millis(300),
        ..LauncherSettings::default()
    }
}

fn batcher(aws: &AwsClients, settings: LauncherSettings) -> Arc<ClusterInstances> {
    ClusterInstances::new(
        Arc::new(aws.clone()),
        ClusterTags::new(CLUSTER, BTreeMap::new()),
        settings,
    )
}

/// Requests a launch for `machine` and waits for its batch to end, collecting the result as the
/// machine's next reconcile does.
async fn launch(
    instances: &Arc<ClusterInstances>,
    machine: MachineKey,
    spec: Arc<LaunchSpec>,
) -> Result<Instance, LaunchError> {
    if let LaunchStatus::Done(result) = instances.request_launch(machine.clone(), spec) {
        return *result;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(result) = instances.take_launch_result(&machine) {
            return result;
        }
    }
}

/// Requests the termination of `machine`'s instance `id` and waits for its batch to end.
async fn terminate(instances: &Arc<ClusterInstances>, machine: MachineKey, id: &str) -> Result<(), AwsError> {
    loop {
        if let Some(result) = instances.request_termination(machine.clone(), id) {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids of the instances moto lists with the machine tag: for `machine` (`<namespace>/<name>`),
/// or with any value when `None`. Sorted, without repeats; empty when moto does not answer.
fn machine_tagged(moto: &Moto, machine: Option<&str>) -> Vec<String> {
    let filter = match machine {
        Some(value) => format!("Filter.1.Name=tag:{MACHINE_TAG}&Filter.1.Value.1={value}"),
        None => format!("Filter.1.Name=tag-key&Filter.1.Value.1={MACHINE_TAG}"),
    };
    let Ok(answer) = moto.ec2_query(&format!("Action=DescribeInstances&{filter}")) else {
        return Vec::new();
    };
    instance_ids(&answer.text())
}

/// A started moto, its clients, a subnet of its default VPC and a launch spec into it.
async fn launch_world() -> (Moto, AwsClients, String, LaunchSpec) {
    let moto = start_moto();
    let aws = clients_for(&moto).await;
    let subnet = default_subnet(&moto);
    let spec = launch_spec(&subnet, "I2FscGluZS1jb25maWcK");
    (moto, aws, subnet, spec)
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

/// A subnet of moto's default VPC.
fn default_subnet(moto: &Moto) -> String {
    let answer = moto.ec2_query("Action=DescribeSubnets").expect("moto answers");
    xml_values(&answer.text(), "subnetId")
        .first()
        .expect("moto has default subnets")
        .to_string()
}

/// Ids of the instances moto holds that are not terminated, counted without any tag filter.
fn live_instances(moto: &Moto) -> Vec<String> {
    let form = "Action=DescribeInstances&Filter.1.Name=instance-state-name&Filter.1.Value.1=pending\
                &Filter.1.Value.2=running&Filter.1.Value.3=shutting-down";
    let answer = moto.ec2_query(form).expect("moto answers");
    instance_ids(&answer.text())
}

/// The instance ids of a DescribeInstances answer, sorted, without repeats.
fn instance_ids(xml: &str) -> Vec<String> {
    let mut ids: Vec<String> = xml_values(xml, "instanceId")
        .into_iter()
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn launch_spec(subnet_id: &str, user_data: &str) -> LaunchSpec {
    let tags = ClusterTags::new(CLUSTER, BTreeMap::new());
    LaunchSpec {
        image_id: "ami-0a19e00000000222a".into(),
        root_device_name: "/dev/xvda".into(),
        instance_type: "t3.medium".into(),
        subnet_ids: vec![subnet_id.into()],
        security_group_ids: Vec::new(),
        instance_profile: None,
        user_data: user_data.into(),
        root_volume: AwsVolume::default(),
        extra_volumes: Vec::new(),
        imds: AwsImds::default(),
        spot: None,
        ssh_key_name: None,
        tags: BTreeMap::from([
            (tags.owned_key(), OWNED.to_owned()),
            (tags.kubernetes_key(), OWNED.to_owned()),
            (ROLE_TAG.to_owned(), "node".to_owned()),
        ]),
    }
}

fn machine(index: usize) -> MachineKey {
    MachineKey {
        namespace: "default".into(),
        name: format!("demo-md-{index}"),
        launch_token: format!("00000000-0000-4000-8000-{index:012}"),
    }
}

fn delta(before: &BTreeMap<&'static str, u64>, after: &BTreeMap<&'static str, u64>, op: &str) -> u64 {
    after.get(op).unwrap_or(&0) - before.get(op).unwrap_or(&0)
}

fn start_moto() -> Moto {
    Moto::builder().amis(alpine_amis()).start().expect("moto starts")
}

#[tokio::test]
async fn identical_pending_launches_go_out_as_one_run_instances() {
    bounded(async {
        let moto = start_moto();
        let aws = clients_for(&moto).await;
        let subnet = default_subnet(&moto);
        let instances = batcher(
            &aws,
            LauncherSettings {
                describe_interval: Duration::from_secs(5),
                ..settings()
            },
        );
        let spec = Arc::new(launch_spec(&subnet, "I2FscGluZS1jb25maWcK"));
        let other = Arc::new(launch_spec(&subnet, "b3RoZXIgdXNlciBkYXRhCg=="));
        let before = aws.stats().snapshot();

        let started = std::time::Instant::now();
        let launches = (0..8).map(|i| launch(&instances, machine(i), spec.clone()));
        let odd_one = launch(&instances, machine(100), other.clone());
        let (launched, odd) = futures::join!(join_all(launches), odd_one);
        let elapsed = started.elapsed();
        // The machine tags are set in the background once the batch is done.
        let after = crate::support::eventually("the 8 machine tags of the batch set", || async {
            let after = aws.stats().snapshot();
            (delta(&before, &after, "CreateTags") == 8).then_some(after)
        })
        .await;

        let launched: Vec<_> = launched.into_iter().map(|r| r.expect("launched")).collect();
        let odd = odd.expect("the different spec launched too");
        let mut ids: Vec<String> = launched.iter().map(|i| i.id.clone()).collect();
        ids.push(odd.id.clone());
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 9, "every machine got its own instance");
        assert_eq!(live_instances(&moto), ids, "moto holds exactly these instances");
        for (index, instance) in launched.iter().enumerate() {
            assert_eq!(
                instance.machine.as_deref(),
                Some(format!("default/demo-md-{index}").as_str())
            );
            assert!(
                instance.provider_id().starts_with("aws:///us-east-1"),
                "{instance:?}"
            );
        }
        assert_eq!(
            delta(&before, &after, "RunInstances"),
            2,
            "one call for the 8 identical launches, one for the different one"
        );
        assert_eq!(
            machine_tagged(&moto, Some("default/demo-md-0")),
            vec![launched[0].id.clone()],
            "the machine tag is on the machine's instance"
        );
        assert_eq!(
            delta(&before, &after, "DescribeInstances"),
            1,
            "one shared view for both batches"
        );
        let total: u64 = after.values().sum::<u64>() - before.values().sum::<u64>();
        eprintln!(
            "9 machines: {:?} in {elapsed:?}, {:.2} AWS calls per machine",
            after,
            total as f64 / 9.0
        );

        // The shared view shows them with their machines without asking EC2 again.
        let found = instances
            .find(&machine(3), None, Freshness::Current)
            .await
            .expect("describe");
        assert_eq!(found.map(|i| i.id), Some(launched[3].id.clone()));
        let again = instances
            .find(&machine(5), None, Freshness::Current)
            .await
            .expect("describe");
        assert_eq!(again.map(|i| i.id), Some(launched[5].id.clone()));
        assert_eq!(
            delta(&after, &aws.stats().snapshot(), "DescribeInstances"),
            0,
            "lookups within the interval are served from the shared view"
        );
    })
    .await;
}

#[tokio::test]
async fn settled_lookups_reuse_the_view_and_current_ones_refresh_it() {
    bounded(async {
        let (_moto, aws, _, spec) = launch_world().await;
        let instances = batcher(&aws, settings());
        let launched = launch(&instances, machine(0), Arc::new(spec))
            .await
            .expect("launched");
        let before = aws.stats().snapshot();
        tokio::time::sleep(settings().describe_interval * 2).await;
        let settled = instances
            .find(&machine(0), Some(&launched.id), Freshness::Settled)
            .await
            .expect("view");
        assert_eq!(settled.map(|i| i.id), Some(launched.id.clone()));
        assert_eq!(
            delta(&before, &aws.stats().snapshot(), "DescribeInstances"),
            0,
            "a settled lookup is served from a view older than the describe interval"
        );
        let current = instances
            .find(&machine(0), None, Freshness::Current)
            .await
            .expect("describe");
        assert_eq!(current.map(|i| i.id), Some(launched.id.clone()));
        assert_eq!(
            delta(&before, &aws.stats().snapshot(), "DescribeInstances"),
            1,
            "a current lookup describes again"
        );
    })
    .await;
}

#[tokio::test]
async fn launches_without_a_failure_domain_spread_evenly_with_one_call_per_zone() {
    bounded(async {
        let moto = start_moto();
        let aws = clients_for(&moto).await;
        let answer = moto.ec2_query("Action=DescribeSubnets").expect("moto answers");
        let text = answer.text();
        let subnets: Vec<String> = xml_values(&text, "subnetId")
            .into_iter()
            .take(3)
            .map(str::to_owned)
            .collect();
        assert_eq!(subnets.len(), 3, "moto's default VPC has a subnet per zone");
        let mut spec = launch_spec(&subnets[0], "I2FscGluZS1jb25maWcK");
        spec.subnet_ids = subnets.clone();
        let spec = Arc::new(spec);
        let instances = batcher(&aws, settings());
        let before = aws.stats().snapshot();
        let launched: Vec<_> = join_all((0..7).map(|i| launch(&instances, machine(i), spec.clone())))
            .await
            .into_iter()
            .map(|r| r.expect("launched"))
            .collect();
        assert_eq!(
            delta(&before, &aws.stats().snapshot(), "RunInstances"),
            3,
            "one call per zone"
        );
        let per_subnet = |subnet: &String| {
            launched
                .iter()
                .filter(|i| i.subnet_id.as_ref() == Some(subnet))
                .count()
        };
        let counts: Vec<usize> = subnets.iter().map(per_subnet).collect();
        assert_eq!(counts, [3, 2, 2], "evenly over the zones");
        assert_eq!(live_instances(&moto).len(), 7);
    })
    .await;
}

#[tokio::test]
async fn a_restarted_provider_adopts_its_instances_instead_of_launching_duplicates() {
    bounded(async {
        let (moto, aws, _, spec) = launch_world().await;
        // A batch of three went out, then the process died before tagging and persisting: the
        // instances carry the cluster and launch-spec tags but no machine tag.
        let crashed_batch = launch_unclaimed(&moto, &aws, &spec, 3, "kzb-crashed-batch").await;
        assert_eq!(crashed_batch.len(), 3);
        let mut original: Vec<String> = crashed_batch.iter().map(|i| i.id.clone()).collect();
        original.sort();

        // The restarted provider: a fresh batcher with nothing in memory.
        let restarted = batcher(&aws, settings());
        let before = aws.stats().snapshot();
        let spec = Arc::new(spec);
        let adopted = join_all((0..3).map(|i| launch(&restarted, machine(i), spec.clone()))).await;
        let mut adopted: Vec<String> = adopted.into_iter().map(|r| r.expect("adopted").id).collect();
        adopted.sort();
        let after = aws.stats().snapshot();
        assert_eq!(
            adopted, original,
            "the machines got the instances of the lost batch"
        );
        assert_eq!(
            delta(&before, &after, "RunInstances"),
            0,
            "nothing launched again"
        );
        assert_eq!(live_instances(&moto), original, "no duplicate in moto");

        // Their machine tags are set in the background; then another restart finds each
        // machine's instance by its tag.
        crate::support::eventually("the adopted instances carry their machine tags", || async {
            (machine_tagged(&moto, None) == original).then_some(())
        })
        .await;
        let third = batcher(&aws, settings());
        for i in 0..3 {
            let found = third
                .find(&machine(i), None, Freshness::Current)
                .await
                .expect("describe");
            assert!(found.is_some_and(|f| original.contains(&f.id)), "machine {i}");
        }
        let again = launch(&third, machine(1), spec.clone())
            .await
            .expect("already has one");
        assert!(original.contains(&again.id));
        assert_eq!(delta(&before, &aws.stats().snapshot(), "RunInstances"), 0);
    })
    .await;
}

#[tokio::test]
async fn terminations_are_batched_and_instances_leave_the_view() {
    bounded(async {
        let moto = start_moto();
        let aws = clients_for(&moto).await;
        let subnet = default_subnet(&moto);
        let instances = batcher(&aws, settings());
        let spec = Arc::new(launch_spec(&subnet, "I2FscGluZS1jb25maWcK"));
        let launched: Vec<_> = join_all((0..5).map(|i| launch(&instances, machine(i), spec.clone())))
            .await
            .into_iter()
            .map(|r| r.expect("launched"))
            .collect();
        assert_eq!(live_instances(&moto).len(), 5);

        let before = aws.stats().snapshot();
        let results = join_all(
            launched
                .iter()
                .enumerate()
                .map(|(n, i)| terminate(&instances, machine(n), &i.id)),
        )
        .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            delta(&before, &aws.stats().snapshot(), "TerminateInstances"),
            1,
            "five terminations, one call"
        );
        let ending = instances
            .find(&machine(0), Some(&launched[0].id), Freshness::Current)
            .await
            .expect("view");
        assert!(ending.as_ref().is_none_or(|i| i.state.is_ending()), "{ending:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        for (index, instance) in launched.iter().enumerate() {
            let seen = instances
                .find(&machine(index), Some(&instance.id), Freshness::Current)
                .await
                .expect("view");
            assert!(seen.is_none(), "terminated instances leave the view: {seen:?}");
        }
        assert!(live_instances(&moto).is_empty(), "nothing left in moto");
        // Terminating again (a retried deletion) is harmless.
        terminate(&instances, machine(0), &launched[0].id)
            .await
            .expect("terminating a terminated instance is fine");
    })
    .await;
}

#[tokio::test]
async fn every_aws_request_is_counted_in_the_managers_metrics() {
    bounded(async {
        let moto = start_moto();
        let (registry, aws) = registry_for(&moto).await;
        let metrics = kubezero_capi::runtime::Metrics::new();
        let (name, help) = AWS_REQUESTS_METRIC;
        metrics.register(name, help, registry.request_counter().clone());
        let instances = batcher(&aws, settings());
        instances.instances().await.expect("describe");
        let spec = Arc::new(launch_spec(&default_subnet(&moto), "I2FscGluZS1jb25maWcK"));
        launch(&instances, machine(0), spec).await.expect("launched");

        let text = metrics.encode();
        let count = |operation: &str| {
            let prefix = format!(r#"kubezero_aws_requests_total{{service="ec2",operation="{operation}"}} "#);
            text.lines()
                .find_map(|line| line.strip_prefix(prefix.as_str()))
                .and_then(|value| value.trim().parse::<u64>().ok())
        };
        let stats = aws.stats().snapshot();
        assert_eq!(
            count("DescribeInstances"),
            stats.get("DescribeInstances").copied(),
            "{text}"
        );
        assert_eq!(count("RunInstances"), Some(1), "{text}");
        assert!(
            text.contains("# HELP kubezero_aws_requests AWS API requests sent"),
            "{text}"
        );
    })
    .await;
}

/// Waits for `count` machines on the wake channel.
async fn woken(
    wakes: &mut tokio::sync::mpsc::UnboundedReceiver<MachineKey>,
    count: usize,
) -> Vec<MachineKey> {
    let mut machines = Vec::new();
    while machines.len() < count {
        let machine = tokio::time::timeout(Duration::from_secs(30), wakes.recv())
            .await
            .expect("woken within 30 s")
            .expect("the wake channel is open");
        machines.push(machine);
    }
    machines.sort();
    machines
}

#[tokio::test]
async fn requested_launches_and_terminations_do_not_wait_and_wake_their_machines() {
    bounded(async {
        let moto = start_moto();
        let aws = clients_for(&moto).await;
        let subnet = default_subnet(&moto);
        let (wake, mut wakes) = tokio::sync::mpsc::unbounded_channel();
        let launcher = Launcher::with_wake(settings(), wake);
        let instances = launcher.cluster(&aws, &ClusterTags::new(CLUSTER, BTreeMap::new()), "default");
        let spec = Arc::new(launch_spec(&subnet, "I2FscGluZS1jb25maWcK"));
        let machines = 25;
        let keys: Vec<MachineKey> = (0..machines).map(machine).collect();
        let before = aws.stats().snapshot();

        // A reconcile asks and returns: every machine is in flight, asking again changes nothing.
        for key in &keys {
            assert!(matches!(
                instances.request_launch(key.clone(), spec.clone()),
                LaunchStatus::InFlight
            ));
        }
        for key in &keys {
            assert!(instances.launch_in_flight(key));
            assert!(matches!(
                instances.request_launch(key.clone(), spec.clone()),
                LaunchStatus::InFlight
            ));
        }
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(
            woken(&mut wakes, machines).await,
            expected,
            "each machine woken once"
        );
        let mut ids = Vec::new();
        for key in &keys {
            assert!(!instances.launch_in_flight(key));
            let LaunchStatus::Done(result) = instances.request_launch(key.clone(), spec.clone()) else {
                panic!("{key:?}: the batch has ended");
            };
            let instance = (*result).expect("launched");
            assert_eq!(instance.machine, Some(key.tag_value()));
            let found = instances.find(key, None, Freshness::Current).await.expect("view");
            assert_eq!(found.map(|f| f.id), Some(instance.id.clone()));
            ids.push(instance.id);
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), machines, "one instance per machine");
        assert_eq!(live_instances(&moto), ids);
        assert_eq!(delta(&before, &aws.stats().snapshot(), "RunInstances"), 1);

        let before = aws.stats().snapshot();
        for (key, id) in keys.iter().zip(&ids) {
            assert!(instances.request_termination(key.clone(), id).is_none());
            assert!(instances.request_termination(key.clone(), id).is_none());
        }
        assert_eq!(woken(&mut wakes, machines).await.len(), machines);
        for (key, id) in keys.iter().zip(&ids) {
            let ended = instances.request_termination(key.clone(), id);
            assert!(matches!(ended, Some(Ok(()))), "{ended:?}");
        }
        assert_eq!(delta(&before, &aws.stats().snapshot(), "TerminateInstances"), 1);
        assert!(live_instances(&moto).is_empty());
    })
    .await;
}

#[tokio::test]
async fn create_ready_and_delete_cost_about_one_aws_call_per_machine() {
    bounded(async {
        let moto = start_moto();
        let aws = clients_for(&moto).await;
        let subnet = default_subnet(&moto);
        let instances = batcher(&aws, settings());
        let spec = Arc::new(launch_spec(&subnet, "I2FscGluZS1jb25maWcK"));
        let machines = 20;
        let keys: Vec<MachineKey> = (0..machines).map(machine).collect();
        let before = aws.stats().snapshot();
        let launched: Vec<_> = join_all((0..machines).map(|i| launch(&instances, machine(i), spec.clone())))
            .await
            .into_iter()
            .map(|r| r.expect("launched"))
            .collect();
        // Every machine checks its instance three times, as reconciles do until it runs.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let found = join_all(
                launched
                    .iter()
                    .enumerate()
                    .map(|(i, instance)| instances.find(&keys[i], Some(&instance.id), Freshness::Current)),
            )
            .await;
            assert!(found.iter().all(|f| matches!(f, Ok(Some(_)))));
        }
        join_all(
            launched
                .iter()
                .enumerate()
                .map(|(n, i)| terminate(&instances, machine(n), &i.id)),
        )
        .await
        .into_iter()
        .for_each(|r| r.expect("terminated"));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let gone = join_all(
            launched
                .iter()
                .enumerate()
                .map(|(i, instance)| instances.find(&keys[i], Some(&instance.id), Freshness::Current)),
        )
        .await;
        assert!(gone.iter().all(|f| matches!(f, Ok(None))), "{gone:?}");
        let after = aws.stats().snapshot();
        let calls: BTreeMap<&str, u64> = after
            .iter()
            .map(|(op, n)| (*op, n - before.get(op).unwrap_or(&0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let per_machine = calls.values().sum::<u64>() as f64 / machines as f64;
        eprintln!(
            "{machines} machines, create + ready + delete: {calls:?} = {per_machine:.2} calls per machine"
        );
        assert_eq!(calls["RunInstances"], 1);
        assert_eq!(calls["TerminateInstances"], 1);
        assert!(per_machine < 1.5, "{calls:?}");
        assert!(live_instances(&moto).is_empty());
    })
    .await;
}

/// `count` instances of `spec` in its subnet as a launch batch leaves them before they are
/// assigned: with the launch-spec tag and no machine tag.
async fn launch_unclaimed(
    moto: &Moto,
    aws: &AwsClients,
    spec: &LaunchSpec,
    count: i32,
    token: &str,
) -> Vec<kubezero_provider::aws::instances::Instance> {
    run_instances(
        aws,
        spec,
        &default_subnet(moto),
        count,
        Fill::All,
        token,
        &BTreeMap::from([("kubezero.io/launch-spec".to_owned(), spec.fingerprint())]),
    )
    .await
    .expect("launched")
}

#[tokio::test]
async fn instances_no_machine_claims_are_terminated_after_the_grace_period() {
    bounded(async {
        let (moto, aws, subnet, spec) = launch_world().await;
        let leaked = launch_unclaimed(&moto, &aws, &spec, 2, "kzb-leaked").await;
        assert_eq!(leaked.len(), 2);
        // Not the provider's: no launch-spec tag. Must survive.
        let foreign = run_instances(
            &aws,
            &spec,
            &subnet,
            1,
            Fill::All,
            "kzb-foreign",
            &BTreeMap::new(),
        )
        .await
        .expect("launched");
        let instances = batcher(
            &aws,
            LauncherSettings {
                orphan_grace: Duration::ZERO,
                ..settings()
            },
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        instances.instances().await.expect("describe");
        crate::support::eventually("unclaimed instances terminated", || async {
            (live_instances(&moto) == vec![foreign[0].id.clone()]).then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn an_assigned_instance_whose_machine_tags_failed_is_tagged_again_and_kept() {
    bounded(async {
        let (moto, aws, _, spec) = launch_world().await;
        // Launched for a machine that persisted its id, but the CreateTags of its machine tags
        // failed (or the provider restarted before it): only the launch-spec tag is on it.
        let id = launch_unclaimed(&moto, &aws, &spec, 1, "kzb-untagged").await[0]
            .id
            .clone();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // A restarted provider: its machines get the grace period to find their instances.
        let instances = batcher(
            &aws,
            LauncherSettings {
                orphan_grace: Duration::from_secs(1),
                ..settings()
            },
        );
        let found = instances
            .find(&machine(0), Some(&id), Freshness::Current)
            .await
            .expect("describe")
            .expect("found by its id");
        assert_eq!(found.machine, None);
        instances.keep_assigned(&found, &machine(0));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        instances.instances().await.expect("describe");
        crate::support::eventually("the machine tags set again", || async {
            machine_tagged(&moto, Some("default/demo-md-0"))
                .contains(&id)
                .then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        instances.instances().await.expect("describe");
        assert_eq!(live_instances(&moto), vec![id], "never taken for an orphan");
    })
    .await;
}

#[tokio::test]
async fn alpine_lookup_picks_the_newest_matching_image_once() {
    bounded(async {
        let mut amis = alpine_amis();
        let mut newer = alpine_ami("ami-0a19e00000000223a", "3.22.3", "x86_64");
        newer["creation_date"] = Value::from("2026-02-01T00:00:00.000Z");
        let mut cloudinit = alpine_ami("ami-0a19e00000000224a", "3.22.4", "x86_64");
        cloudinit["name"] = Value::from("alpine-3.22.4-x86_64-uefi-cloudinit-r0");
        cloudinit["creation_date"] = Value::from("2026-03-01T00:00:00.000Z");
        amis.as_array_mut().unwrap().extend([newer, cloudinit]);
        let moto = Moto::builder().amis(amis).start().expect("moto starts");
        let aws = clients_for(&moto).await;
        let resolver = AmiResolver::default();

        let lookup = |architecture| AwsAmi {
            id: None,
            lookup: Some(AwsAmiLookup {
                alpine_release: Some("3.22".into()),
                architecture,
                ..AwsAmiLookup::default()
            }),
        };
        let before = aws.stats().snapshot();
        let x86 = resolver
            .resolve(&aws, &lookup(AmiArchitecture::X86_64))
            .await
            .expect("x86_64 image");
        assert_eq!(x86.id, "ami-0a19e00000000223a", "newest tiny x86_64 image");
        let arm = resolver
            .resolve(&aws, &lookup(AmiArchitecture::Aarch64))
            .await
            .expect("aarch64 image");
        assert_eq!(arm.id, "ami-0a19e00000000222b", "newest release for aarch64");
        let cached = resolver
            .resolve(&aws, &lookup(AmiArchitecture::X86_64))
            .await
            .expect("cached");
        assert_eq!(cached, x86);
        assert_eq!(
            delta(&before, &aws.stats().snapshot(), "DescribeImages"),
            2,
            "one call per lookup, then the cache"
        );

        let missing = AwsAmi {
            id: None,
            lookup: Some(AwsAmiLookup {
                alpine_release: Some("3.19".into()),
                ..AwsAmiLookup::default()
            }),
        };
        let error = resolver
            .resolve(&aws, &missing)
            .await
            .expect_err("no 3.19 images");
        assert!(matches!(error, AmiError::NoImage { .. }), "{error}");
        let by_id = resolver
            .resolve(
                &aws,
                &AwsAmi {
                    id: Some("ami-0a19e00000000221a".into()),
                    lookup: None,
                },
            )
            .await
            .expect("known id");
        assert_eq!(by_id.root_device_name, "/dev/xvda");
        let unknown = resolver
            .resolve(
                &aws,
                &AwsAmi {
                    id: Some("ami-0fffffffffffffff0".into()),
                    lookup: None,
                },
            )
            .await
            .expect_err("unknown id");
        assert!(matches!(unknown, AmiError::UnknownId(_)), "{unknown}");
    })
    .await;
}

#[tokio::test]
async fn instance_types_give_the_autoscaler_capacity_once() {
    bounded(async {
        let moto = start_moto();
        let aws = clients_for(&moto).await;
        let cache = InstanceTypeCache::default();
        let before = aws.stats().snapshot();
        let medium = cache.get(&aws, "t3.medium").await.expect("t3.medium");
        assert_eq!(medium.vcpus, 2);
        assert_eq!(medium.memory_mib, 4096);
        assert_eq!(medium.capacity()["memory"].0, "4096Mi");
        assert_eq!(medium.node_info().architecture, Some(NodeArchitecture::Amd64));
        assert_eq!(medium.node_info().operating_system, Some(OperatingSystem::Linux));
        let graviton = cache.get(&aws, "m7g.large").await.expect("m7g.large");
        assert_eq!(graviton.architecture, Some(NodeArchitecture::Arm64));
        cache.get(&aws, "t3.medium").await.expect("cached");
        assert_eq!(
            delta(&before, &aws.stats().snapshot(), "DescribeInstanceTypes"),
            2
        );
    })
    .await;
}

mod e2e {
    //! Both managers in the test world on moto: a Cluster with one control-plane Machine and a
    //! MachineDeployment scaled 3 → 10 → 0, then deleted; every step asserted, nothing of the
    //! cluster left in moto at the end.

    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use kube::api::{DeleteParams, ListParams};
    use kube::{Api, ResourceExt};
    use kubezero_capi::core::{Cluster, Machine};
    use kubezero_provider::api::{
        KubeZeroCluster, KubeZeroMachine, KubeZeroMachineTemplate, NodeArchitecture,
    };
    use kubezero_provider::aws::inventory::inventory;
    use kubezero_provider::aws::tags::ClusterTags;
    use kubezero_test::cloud::{Moto, alpine_amis};
    use kubezero_test::world::{World, WorldView};
    use serde_json::json;

    use crate::aws::query_in as moto_query;
    use crate::faults::private_zone;
    use crate::support::{create, create_cluster, create_worker_pool, dynamic, eventually, moto_clients};

    const REGION: &str = "eu-central-1";
    const WORKERS: &str = "demo-workers";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cluster_with_a_control_plane_and_workers_scales_3_10_0_and_leaves_nothing_in_moto() {
        let moto = Arc::new(Moto::builder().amis(alpine_amis()).start().expect("moto starts"));
        let mut world = World::start_with_cloud(&moto).await.expect("the world starts");
        world.start_managers().expect("the managers start");
        let view = world.view();
        let flow_moto = moto.clone();
        let timeout = Duration::from_secs(420);
        let outcome =
            tokio::spawn(async move { tokio::time::timeout(timeout, flow(&view, &flow_moto)).await }).await;
        let logs = world.stop_managers();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("the flow timed out after {timeout:?}; manager logs:\n{logs}"),
            Err(failure) => panic!("{failure}; manager logs:\n{logs}"),
        }
    }

    fn api<K>(world: &WorldView) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(world.client(), world.namespace())
    }

    fn ready_reason(machine: &KubeZeroMachine) -> Option<String> {
        machine
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.reason.clone())
    }

    /// Live (not terminated) instances in moto's `REGION`, counted without tag filters.
    async fn live_instances(moto: &Moto) -> usize {
        let aws = moto_clients(moto, REGION).await;
        inventory(&aws).await.expect("inventory").count("instance")
    }

    /// Worker KubeZeroMachines that are provisioned, with a provider ID, and whose Machine has a Node.
    async fn provisioned_workers(world: &WorldView) -> Option<usize> {
        let machines = api::<Machine>(world)
            .list(&ListParams::default().labels(&format!("cluster.x-k8s.io/deployment-name={WORKERS}")))
            .await
            .ok()?
            .items;
        let infra = api::<KubeZeroMachine>(world);
        let mut ready = 0;
        for machine in &machines {
            let name = &machine.spec.infrastructure_ref.as_ref()?.name;
            let Some(kzm) = infra.get_opt(name).await.ok()? else {
                continue;
            };
            let provisioned = kzm
                .status
                .as_ref()
                .and_then(|s| s.initialization.as_ref())
                .and_then(|i| i.provisioned)
                == Some(true);
            let provider_id = kzm
                .spec
                .provider_id
                .as_deref()
                .is_some_and(|p| p.starts_with("aws:///eu-central-1"));
            if provisioned
                && provider_id
                && ready_reason(&kzm).as_deref() == Some("InstanceRunning")
                && machine.has_node_ref()
            {
                ready += 1;
            }
        }
        Some(ready)
    }

    async fn flow(world: &WorldView, moto: &Moto) {
        let started = std::time::Instant::now();
        create_cluster(world, "demo").await;
        let infra = eventually("KubeZeroCluster provisioned on AWS", || async {
            let infra = api::<KubeZeroCluster>(world).get("demo").await.ok()?;
            let status = infra.status.as_ref()?;
            (status.initialization.as_ref()?.provisioned == Some(true)).then_some(())?;
            status.aws.clone()
        })
        .await;
        let zone = private_zone(&infra);

        // One control-plane Machine (machine-based control plane), pinned to a failure domain.
        let name = "demo-cp-0";
        create(world, &dynamic(world, "cluster.x-k8s.io", "v1beta2", "Machine", "machines"),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "metadata": {"name": name, "labels": {"cluster.x-k8s.io/cluster-name": "demo", "cluster.x-k8s.io/control-plane": ""}},
                "spec": {"clusterName": "demo", "version": "v1.34.1", "failureDomain": zone,
                    "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeZeroConfig", "name": name}},
                    "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroMachine", "name": name}}})).await;
        create(world, &dynamic(world, "infrastructure.cluster.x-k8s.io", "v1alpha1", "KubeZeroMachine", "kubezeromachines"),
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroMachine",
                "metadata": {"name": name}, "spec": {"aws": {"instanceType": "m7i.large", "spot": {"maxPrice": "0.10"}}}})).await;
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
        let control_plane = eventually(
            "the control-plane instance running, in its zone, as spot",
            || async {
                let kzm = api::<KubeZeroMachine>(world).get(name).await.ok()?;
                (ready_reason(&kzm).as_deref() == Some("InstanceRunning")).then_some(())?;
                Some(kzm)
            },
        )
        .await;
        let status = control_plane.status.clone().unwrap();
        assert_eq!(status.failure_domain.as_deref(), Some(zone.as_str()));
        assert_eq!(
            status.interruptible,
            Some(true),
            "spot machines are interruptible"
        );
        assert!(
            status.addresses.iter().any(|a| a.address.starts_with("10.")),
            "{:?}",
            status.addresses
        );
        let provider_id = control_plane.spec.provider_id.clone().expect("providerID");
        let instance_id = provider_id.rsplit('/').next().unwrap().to_owned();
        assert_eq!(provider_id, format!("aws:///{zone}/{instance_id}"));
        assert_eq!(
            control_plane.annotations().get("kubezero.io/instance-id"),
            Some(&instance_id),
            "instance id persisted outside status"
        );
        let targets = moto_query(
            moto,
            "elasticloadbalancing",
            REGION,
            "2015-12-01",
            &format!(
                "Action=DescribeTargetHealth&TargetGroupArn={}",
                infra.load_balancer.target_group_arn
            ),
        );
        assert!(
            targets.contains(&instance_id),
            "control plane registered in the API target group: {targets}"
        );
        eprintln!("control plane running after {:?}", started.elapsed());

        // Workers: 3, then 10.
        create_worker_pool(world, "demo", WORKERS, 3).await;
        eventually("3 workers provisioned with Nodes", || async {
            (provisioned_workers(world).await? == 3).then_some(())
        })
        .await;
        assert_eq!(live_instances(moto).await, 4);
        // The template reports what one machine offers, for autoscaling from zero.
        let templates: Api<KubeZeroMachineTemplate> = api(world);
        let capacity = eventually("the worker template's capacity", || async {
            let status = templates.get(WORKERS).await.ok()?.status?;
            (!status.capacity.is_empty()).then_some(status)
        })
        .await;
        assert_eq!(capacity.capacity["cpu"].0, "2", "m7g.large: {capacity:?}");
        assert_eq!(capacity.capacity["memory"].0, "8192Mi");
        assert_eq!(
            capacity.node_info.and_then(|n| n.architecture),
            Some(NodeArchitecture::Arm64)
        );
        eprintln!("3 workers after {:?}", started.elapsed());
        crate::faults::scale(world, WORKERS, 10).await;
        eventually("10 workers provisioned with Nodes", || async {
            (provisioned_workers(world).await? == 10).then_some(())
        })
        .await;
        assert_eq!(
            live_instances(moto).await,
            11,
            "one instance per machine, no duplicates"
        );
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = api(world);
        let mut user_data = Vec::new();
        for machine in api::<Machine>(world)
            .list(&ListParams::default().labels(&format!("cluster.x-k8s.io/deployment-name={WORKERS}")))
            .await
            .expect("machines")
            .items
        {
            let name = machine
                .spec
                .bootstrap
                .data_secret_name
                .clone()
                .expect("data secret");
            let secret = secrets.get(&name).await.expect("data secret");
            user_data.push(secret.data.and_then(|mut d| d.remove("value")).map(|v| v.0));
        }
        user_data.sort();
        user_data.dedup();
        eprintln!("distinct worker user data: {}", user_data.len());
        // Every RunInstances makes one reservation: count them over the cluster's instances.
        let described = moto_query(
            moto,
            "ec2",
            REGION,
            "2016-11-15",
            "Action=DescribeInstances&Filter.1.Name=tag:kubernetes.io/cluster/demo&Filter.1.Value.1=owned",
        );
        let mut reservations = super::xml_values(&described, "reservationId");
        reservations.sort_unstable();
        reservations.dedup();
        eprintln!("11 machines launched with {} RunInstances", reservations.len());
        eprintln!("10 workers after {:?}", started.elapsed());

        // Scale to zero: every worker instance terminated before its KubeZeroMachine goes.
        crate::faults::scale(world, WORKERS, 0).await;
        eventually("workers gone and their instances terminated", || async {
            let workers = api::<Machine>(world)
                .list(&ListParams::default().labels(&format!("cluster.x-k8s.io/deployment-name={WORKERS}")))
                .await
                .ok()?
                .items
                .len();
            (workers == 0 && live_instances(moto).await == 1).then_some(())
        })
        .await;
        eprintln!("0 workers after {:?}", started.elapsed());

        // Delete the cluster: the control plane goes, then the infrastructure.
        api::<Cluster>(world)
            .delete("demo", &DeleteParams::default())
            .await
            .expect("delete");
        eventually("Cluster, Machines and KubeZeroCluster gone", || async {
            let cluster = api::<Cluster>(world).get_opt("demo").await.ok()?;
            let machines = api::<KubeZeroMachine>(world)
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len();
            let infra = api::<KubeZeroCluster>(world).get_opt("demo").await.ok()?;
            (cluster.is_none() && machines == 0 && infra.is_none()).then_some(())
        })
        .await;
        let aws = moto_clients(moto, REGION).await;
        let left = inventory(&aws).await.expect("inventory");
        let owned: BTreeMap<&str, usize> = left
            .owned_counts(&ClusterTags::new("demo", BTreeMap::new()))
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        assert!(owned.is_empty(), "nothing of the cluster left in moto: {owned:?}");
        assert_eq!(left.count("instance"), 0, "no instance left at all");
        eprintln!("cluster deleted after {:?}", started.elapsed());
    }
}
