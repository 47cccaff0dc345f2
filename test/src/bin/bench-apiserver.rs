//! Benchmark of the Kubernetes API emulator (prints numbers; asserts nothing).
//!
//! `cargo run --release -p kubezero-test --bin bench-apiserver [-- OBJECTS]` (default 10,000):
//! creates OBJECTS KubeZeroMachines (CRD validation and CEL included) in batches, sequentially and
//! with 8 concurrent clients, while a kube-runtime watcher counts the events it receives; reports
//! medians of the batches, watch throughput, and the process RSS (emulator + client) before and
//! after the objects are stored.

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::watcher;
use kubezero_provider::api::KubeZeroMachine;
use kubezero_test::apiserver::ApiServer;
use serde_json::json;

const BATCHES: usize = 5;
const CONCURRENCY: usize = 8;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn machine(index: usize) -> KubeZeroMachine {
    serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroMachine",
        "metadata": {"name": format!("bench-{index:06}"), "namespace": "default",
            "labels": {"cluster.x-k8s.io/cluster-name": "bench"}},
        "spec": {"aws": {"instanceType": "m7g.large", "ami": {"id": "ami-0123456789abcdef0"}}}
    }))
    .expect("a valid KubeZeroMachine")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let objects: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let server = ApiServer::start().await.expect("emulator starts");
    server
        .install_crds(&kubezero_provider::api::crds())
        .await
        .expect("CRDs install");
    let client = server.client().expect("client");
    let api: Api<KubeZeroMachine> = Api::namespaced(client.clone(), "default");
    let rss_empty = rss_mib();

    // A watcher counting every event from the start.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let watch_api = api.clone();
    let watch = tokio::spawn(async move {
        let mut events = watcher(watch_api, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = events.next().await {
            if let watcher::Event::Apply(_) = event {
                let _ = seen_tx.send(Instant::now());
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let batch = objects / (2 * BATCHES);
    let mut sequential = Vec::new();
    let mut concurrent = Vec::new();
    let mut next = 0;
    let started = Instant::now();
    for _ in 0..BATCHES {
        let begin = Instant::now();
        for _ in 0..batch {
            api.create(&PostParams::default(), &machine(next))
                .await
                .expect("create");
            next += 1;
        }
        sequential.push(batch as f64 / begin.elapsed().as_secs_f64());

        let begin = Instant::now();
        let indices: Vec<usize> = (next..next + batch).collect();
        next += batch;
        futures::stream::iter(indices)
            .for_each_concurrent(CONCURRENCY, |index| {
                let api = api.clone();
                async move {
                    api.create(&PostParams::default(), &machine(index))
                        .await
                        .expect("create");
                }
            })
            .await;
        concurrent.push(batch as f64 / begin.elapsed().as_secs_f64());
    }
    let created = next;
    let mut received = 0;
    let mut last = started;
    while received < created {
        match tokio::time::timeout(Duration::from_secs(30), seen_rx.recv()).await {
            Ok(Some(at)) => {
                received += 1;
                last = at;
            }
            _ => break,
        }
    }
    watch.abort();
    let rss_full = rss_mib();

    println!(
        "kubezero API emulator benchmark ({created} KubeZeroMachines, {BATCHES} batches of {batch} per mode)"
    );
    println!(
        "  creates/s, 1 client (median)            {:>10.0}",
        median(&mut sequential)
    );
    println!(
        "  creates/s, {CONCURRENCY} clients (median)           {:>10.0}",
        median(&mut concurrent)
    );
    println!(
        "  watch events received                   {:>10} of {created} ({:.0} events/s over the run)",
        received,
        received as f64 / last.duration_since(started).as_secs_f64()
    );
    println!("  RSS before objects (MiB)                {rss_empty:>10.1}");
    println!("  RSS with all objects stored (MiB)       {rss_full:>10.1}");
    server.shutdown().await;
}
