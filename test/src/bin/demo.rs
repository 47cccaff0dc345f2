//! `make demo`: the whole kubezero flow on this machine. Starts the test world (API emulator, CAPI
//! stand-in, workload emulators, moto) and both managers, applies a Cluster generated from
//! `templates/cluster-template.yaml` (AWS flavor), scales its worker MachineDeployment to 5 while
//! printing a live table of the machines, deletes the Cluster and reports what is left in moto.
//!
//! The manager binaries must be built (`make demo` builds them). Exit code 1 when something did not
//! converge in time or cloud resources were left behind.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::pinned_kind;
use kube::{Api, Client, ResourceExt};
use kubezero_capi::core::{Cluster, Machine};
use kubezero_provider::api::KubeZeroMachine;
use kubezero_provider::aws::inventory::inventory;
use kubezero_provider::aws::tags::ClusterTags;
use kubezero_test::cloud::{Moto, alpine_amis};
use kubezero_test::templates::{self, GenerateOptions, documents, generate_cluster, repo_root};
use kubezero_test::world::World;
use serde_json::json;

/// Name of the demo cluster.
const CLUSTER: &str = "demo";
/// Region of the template's default KubeZeroCluster (`KUBEZERO_AWS_REGION`).
const REGION: &str = "eu-central-1";
/// Workers the demo scales to.
const WORKERS: i64 = 5;
/// Field manager of the demo's writes.
const MANAGER: &str = "kubezero-demo";
/// Bound of each waiting phase.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);

type DemoResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("demo failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> DemoResult<bool> {
    let started = Instant::now();
    let moto = Moto::builder().amis(alpine_amis()).start()?;
    println!("moto (EC2, ELBv2, IAM) on {}", moto.endpoint_url());
    let mut world = World::start_with_cloud(&moto).await?;
    world.start_managers()?;
    let view = world.view();
    let client = view.client();
    let namespace = view.namespace().to_string();
    println!("management cluster: API emulator + Cluster API stand-in, namespace {namespace}");

    let outcome = demo(&client, &namespace, &moto).await;
    let logs = world.stop_managers();
    match outcome {
        Ok(clean) => {
            println!("demo finished in {:.0?}", started.elapsed());
            Ok(clean)
        }
        Err(error) => {
            eprintln!("manager logs:\n{logs}");
            Err(error)
        }
    }
}

async fn demo(client: &Client, namespace: &str, moto: &Moto) -> DemoResult<bool> {
    let template = std::fs::read_to_string(repo_root().join("templates/cluster-template.yaml"))?;
    let options = GenerateOptions {
        cluster_name: CLUSTER.into(),
        target_namespace: namespace.into(),
        kubernetes_version: Some("v1.34.1".into()),
        control_plane_machine_count: Some(1),
        worker_machine_count: Some(0),
    };
    let manifest = generate_cluster(&template, &options, &BTreeMap::new())?;
    for document in documents(&manifest)? {
        templates::apply(client, namespace, &document, &PatchParams::apply(MANAGER).force()).await?;
    }
    println!("applied {CLUSTER} from templates/cluster-template.yaml (1 control plane, 0 workers)");

    let workers = machine_deployment(client, namespace).await?;
    workers
        .patch(
            &format!("{CLUSTER}-workers"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": WORKERS}})),
        )
        .await?;
    println!("scaled {CLUSTER}-workers to {WORKERS}\n");
    let converged = watch_machines(client, namespace, 1 + WORKERS as usize).await?;

    let clusters: Api<Cluster> = Api::namespaced(client.clone(), namespace);
    clusters.delete(CLUSTER, &Default::default()).await?;
    println!("\ndeleting Cluster {CLUSTER}");
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while clusters.get_opt(CLUSTER).await?.is_some() {
        if Instant::now() > deadline {
            return Err(format!("Cluster {CLUSTER} still exists after {PHASE_TIMEOUT:?}").into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("Cluster {CLUSTER} and all its objects are gone");

    let aws = moto.aws_clients(REGION).await;
    let owned = inventory(&aws)
        .await?
        .owned_counts(&ClusterTags::new(CLUSTER, BTreeMap::new()));
    let left: Vec<String> = owned
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(kind, count)| format!("{count} {kind}"))
        .collect();
    if left.is_empty() {
        println!(
            "moto: nothing of {CLUSTER} is left (instances, NLB, target groups, security groups, subnets, VPC, roles, instance profiles)"
        );
    } else {
        println!("moto: LEFT BEHIND: {}", left.join(", "));
    }
    Ok(converged && left.is_empty())
}

async fn machine_deployment(client: &Client, namespace: &str) -> DemoResult<Api<DynamicObject>> {
    let gvk = kube::api::GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "MachineDeployment");
    let (resource, _) = pinned_kind(client, &gvk).await?;
    Ok(Api::namespaced_with(client.clone(), namespace, &resource))
}

/// Prints the machines every 2 s (when something changed) until `expected` are Running with a
/// provider ID, or [`PHASE_TIMEOUT`].
async fn watch_machines(client: &Client, namespace: &str, expected: usize) -> DemoResult<bool> {
    let machines: Api<Machine> = Api::namespaced(client.clone(), namespace);
    let infra: Api<KubeZeroMachine> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let mut rows = Vec::new();
        let mut running = 0;
        for machine in machines.list(&ListParams::default()).await?.items {
            let name = machine.name_any();
            let role = if machine.is_control_plane() {
                "control-plane"
            } else {
                "worker"
            };
            let phase = machine
                .status
                .as_ref()
                .and_then(|status| status.phase.clone())
                .unwrap_or_else(|| "-".into());
            let reason = match &machine.spec.infrastructure_ref {
                Some(reference) => infra
                    .get_opt(&reference.name)
                    .await?
                    .and_then(|m| m.status)
                    .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
                    .map_or_else(|| "-".into(), |c| c.reason),
                None => "-".into(),
            };
            let provider_id = machine.spec.provider_id.clone().unwrap_or_else(|| "-".into());
            if phase == "Running" && provider_id != "-" {
                running += 1;
            }
            rows.push(format!(
                "{name:<34} {role:<13} {phase:<12} {reason:<28} {provider_id}"
            ));
        }
        rows.sort();
        let table = rows.join("\n");
        if table != last {
            let header = format!(
                "{:<34} {:<13} {:<12} {:<28} PROVIDER ID",
                "MACHINE", "ROLE", "PHASE", "INFRA READY REASON"
            );
            println!(
                "[{:>5.1}s] {running}/{expected} running\n{header}\n{table}\n",
                started.elapsed().as_secs_f64()
            );
            last = table;
        }
        if running >= expected {
            println!("all {expected} machines running after {:.1?}", started.elapsed());
            return Ok(true);
        }
        if started.elapsed() > PHASE_TIMEOUT {
            println!("only {running}/{expected} machines running after {PHASE_TIMEOUT:?}");
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
