//! `make bench-scale`: how the provider behaves at scale on moto (prints numbers; asserts nothing).
//!
//! Two phases, each in its own test world (API emulator, CAPI stand-in, workload emulators, node
//! simulator, moto) with both managers as processes:
//!
//! 1. **watched**: `--watched` KubeZeroMachines (default 10,000) without owner Machines, so nothing
//!    launches; once the provider has reconciled every one of them (its `kubezero_reconcile_total`
//!    metric), the provider's VmRSS and VmHWM (goal ≤ 64 MiB).
//! 2. **scale**: a Cluster from `templates/cluster-template.yaml` (1 control plane and
//!    `--initial-workers` workers, default 0), then its worker MachineDeployment scaled to
//!    `--machines` (default 1,000) and back, then the Cluster deleted. The provider
//!    talks to moto through the test world's [`FaultProxy`] with no faults, which counts requests per
//!    action: the calls counted are the HTTP requests the provider really sends, retries included
//!    (a RunInstances retried with a known ClientToken is answered from the proxy's replay, as EC2
//!    does, and still counted); the node simulator and the leak count go to moto directly and are
//!    not counted. Prints RunInstances
//!    calls (goal ≤ 10), AWS calls per added machine for create + ready + delete (goal ≤ 1.5, the
//!    cluster's resyncs during the scale steps included), the time to
//!    all provider IDs and to all Running, the provider's peak RSS (VmHWM), the time and calls of
//!    the scale-down and of the deletion, and what is left in moto.
//!
//! Between the scale-up and the scale-down the cluster idles with its machines for
//! `--idle-minutes` (default 2), and the AWS calls per minute by operation are printed (goal ≤ 2).
//!
//! Churn, per step (cluster up, scale-up, idle, scale-down, deletion): how often the Cluster was
//! written (MODIFIED events of its watch; those that changed its status counted apart), how often
//! the provider reconciled KubeZeroClusters (`kubezero_reconcile_total{controller="kubezerocluster"}`)
//! and the AWS calls by operation. The CAPI stand-in rewrites the Cluster's status as core does, on
//! almost every Machine change, so a provider that reacts to every Cluster update shows here.
//!
//! Every phase is bounded by `--phase-timeout`; on a timeout the numbers measured so far are
//! printed, marked as partial. The manager binaries must be built next to this binary (the make
//! target builds them).
//!
//! Flags: `--machines N`, `--watched N` (0 skips phase 1), `--concurrency N` (the provider's
//! `--concurrency`; default: the provider's own default), `--phase-timeout SECONDS` (default 900),
//! `--idle-minutes M` (default 2, fractions allowed, 0 skips the idle step), `--initial-workers N`
//! (default 0, below `--machines`). `KUBEZERO_BIN_DIR` picks the manager binaries (e.g. an older
//! provider build to compare with).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::pinned_kind;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kubezero_capi::core::{Cluster, Machine};
use kubezero_provider::api::KubeZeroMachine;
use kubezero_provider::aws::inventory::inventory;
use kubezero_provider::aws::tags::ClusterTags;
use kubezero_test::cloud::{FaultConfig, FaultProxy, Moto, alpine_amis};
use kubezero_test::templates::{self, GenerateOptions, documents, generate_cluster, repo_root};
use kubezero_test::world::{World, metric_sum};
use serde_json::json;

/// Name of the benchmark cluster.
const CLUSTER: &str = "bench";
/// Region of the template's default KubeZeroCluster (`KUBEZERO_AWS_REGION`).
const REGION: &str = "eu-central-1";
/// The actions of the machine path (the rest in a scale step are the KubeZeroCluster's periodic
/// resyncs: VPC, subnets, load balancer, IAM reads).
const INSTANCE_ACTIONS: &[&str] = &[
    "RunInstances",
    "DescribeInstances",
    "CreateTags",
    "TerminateInstances",
    "DescribeImages",
    "DescribeInstanceTypes",
    "RegisterTargets",
    "DeregisterTargets",
];
/// Field manager of the benchmark's writes.
const MANAGER: &str = "kubezero-bench";
/// The provider manager's binary name.
const PROVIDER: &str = "kubezero-provider";
/// Concurrent clients creating the watched KubeZeroMachines.
const CREATE_CLIENTS: usize = 8;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Command-line options.
#[derive(Debug, Clone)]
struct Options {
    machines: usize,
    watched: usize,
    concurrency: Option<u16>,
    phase_timeout: Duration,
    idle: Duration,
    /// Workers the cluster comes up with; the scale-up goes from here to `machines`.
    initial_workers: usize,
}

impl Options {
    fn parse() -> Result<Self, String> {
        let mut options = Options {
            machines: 1000,
            watched: 10_000,
            concurrency: None,
            phase_timeout: Duration::from_secs(900),
            idle: Duration::from_secs(120),
            initial_workers: 0,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            let number = |text: String| {
                text.parse::<u64>()
                    .map_err(|error| format!("{name}: {text:?}: {error}"))
            };
            match name.as_str() {
                "--machines" => options.machines = number(value()?)? as usize,
                "--watched" => options.watched = number(value()?)? as usize,
                "--concurrency" => {
                    let concurrency = number(value()?)?;
                    options.concurrency =
                        Some(u16::try_from(concurrency).map_err(|error| format!("{name}: {error}"))?);
                }
                "--phase-timeout" => options.phase_timeout = Duration::from_secs(number(value()?)?),
                "--initial-workers" => options.initial_workers = number(value()?)? as usize,
                "--idle-minutes" => {
                    let text = value()?;
                    let minutes = text
                        .parse::<f64>()
                        .ok()
                        .filter(|m| m.is_finite() && *m >= 0.0)
                        .ok_or_else(|| format!("{name}: {text:?} is not a number of minutes"))?;
                    options.idle = Duration::from_secs_f64(minutes * 60.0);
                }
                other => {
                    return Err(format!(
                        "unknown flag {other}; flags: --machines N, --watched N, --concurrency N, --phase-timeout SECONDS, --idle-minutes M, --initial-workers N"
                    ));
                }
            }
        }
        if options.machines > 0 && options.initial_workers >= options.machines {
            return Err(format!(
                "--initial-workers {} must be below --machines {}",
                options.initial_workers, options.machines
            ));
        }
        Ok(options)
    }

    /// Extra flags of the provider manager.
    fn provider_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(concurrency) = self.concurrency {
            flags.push(format!("--concurrency={concurrency}"));
        }
        flags
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("bench-scale: {message}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    println!(
        "bench-scale: {} machines, {} watched KubeZeroMachines, provider concurrency {}, phase timeout {:?}, idle {:?}",
        options.machines,
        options.watched,
        options
            .concurrency
            .map_or_else(|| "default".to_string(), |c| c.to_string()),
        options.phase_timeout,
        options.idle
    );
    let mut complete = true;
    let watched = if options.watched > 0 {
        match watched_phase(&options).await {
            Ok(report) => Some(report),
            Err(error) => {
                eprintln!("watched phase failed: {error}");
                complete = false;
                None
            }
        }
    } else {
        None
    };
    let scale = if options.machines > 0 {
        match scale_phase(&options).await {
            Ok(report) => Some(report),
            Err(error) => {
                eprintln!("scale phase failed: {error}");
                complete = false;
                None
            }
        }
    } else {
        None
    };
    println!();
    println!("=== bench-scale results ({:.0?} in all) ===", started.elapsed());
    if let Some(report) = &watched {
        if !report.complete {
            complete = false;
            println!("(phase 1 timed out before the provider reconciled every object)");
        }
        report.print();
    }
    if let Some(report) = &scale {
        if !report.complete() {
            complete = false;
            println!("(phase 2 did not finish: see the TIMEOUT rows)");
        }
        report.print(options.initial_workers, options.machines);
    }
    if complete {
        ExitCode::SUCCESS
    } else {
        println!("(partial: some phase did not finish; the numbers above are what was measured)");
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// Phase 1: RSS with many KubeZeroMachines watched.

struct WatchedReport {
    objects: usize,
    created_in: Duration,
    reconciled: u64,
    synced_in: Option<Duration>,
    rss_idle_kib: u64,
    rss_kib: u64,
    hwm_kib: u64,
    complete: bool,
}

impl WatchedReport {
    fn print(&self) {
        println!("watched KubeZeroMachines (no owner Machines, nothing launches)");
        row(
            "objects created / in",
            format!("{} / {:.1?}", self.objects, self.created_in),
        );
        row(
            "provider reconciled them all after",
            match self.synced_in {
                Some(time) => format!("{time:.1?}"),
                None => format!("TIMEOUT ({} reconciles seen)", self.reconciled),
            },
        );
        row("provider VmRSS before the objects", mib(self.rss_idle_kib));
        row(
            "provider VmRSS / VmHWM with them (goal ≤ 64 MiB)",
            format!("{} / {}", mib(self.rss_kib), mib(self.hwm_kib)),
        );
    }
}

async fn watched_phase(options: &Options) -> BenchResult<WatchedReport> {
    println!("\n--- phase 1: {} KubeZeroMachines watched ---", options.watched);
    let moto = Moto::builder().amis(alpine_amis()).start()?;
    let mut world = World::start_with_cloud(&moto).await?;
    let flags = options.provider_flags();
    let extra: Vec<(&str, &str)> = flags.iter().map(|flag| (PROVIDER, flag.as_str())).collect();
    world.start_managers_with(&extra)?;
    let pid = world.manager_pid(PROVIDER).ok_or("the provider did not start")?;
    let metrics = metrics_address(pid).await?;
    let view = world.view();
    let client = view.client();
    let namespace = view.namespace().to_string();
    // Wait until the provider serves metrics (it has started its controllers).
    let deadline = Instant::now() + Duration::from_secs(60);
    while reconciles(metrics).await.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle_kib = proc_status(pid, "VmRSS").unwrap_or(0);

    let api: Api<KubeZeroMachine> = Api::namespaced(client.clone(), &namespace);
    let created = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CREATE_CLIENTS {
        let api = api.clone();
        let namespace = namespace.clone();
        let total = options.watched;
        tasks.push(tokio::spawn(async move {
            let mut index = worker;
            while index < total {
                api.create(&PostParams::default(), &watched_machine(&namespace, index))
                    .await?;
                index += CREATE_CLIENTS;
            }
            Ok::<_, kube::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let created_in = created.elapsed();
    println!("created {} KubeZeroMachines in {created_in:.1?}", options.watched);

    let target = options.watched as u64;
    let deadline = Instant::now() + options.phase_timeout;
    let mut reconciled = 0;
    let mut synced_in = None;
    let mut last_print = Instant::now();
    while Instant::now() < deadline {
        reconciled = reconciles(metrics).await.unwrap_or(reconciled);
        if reconciled >= target {
            synced_in = Some(created.elapsed());
            break;
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            println!(
                "[{:>5.0?}] provider reconciled {reconciled}/{target}, VmRSS {}",
                created.elapsed(),
                mib(proc_status(pid, "VmRSS").unwrap_or(0))
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let the reconcile queue drain and the allocator settle before reading.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_kib = proc_status(pid, "VmRSS").unwrap_or(0);
    let hwm_kib = proc_status(pid, "VmHWM").unwrap_or(0);
    world.stop_managers();
    Ok(WatchedReport {
        objects: options.watched,
        created_in,
        reconciled,
        synced_in,
        rss_idle_kib,
        rss_kib,
        hwm_kib,
        complete: synced_in.is_some(),
    })
}

/// A KubeZeroMachine of the benchmark cluster with no owner Machine (the controller waits for one).
fn watched_machine(namespace: &str, index: usize) -> KubeZeroMachine {
    serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroMachine",
        "metadata": {"name": format!("watched-{index:06}"), "namespace": namespace,
            "labels": {"cluster.x-k8s.io/cluster-name": CLUSTER}},
        "spec": {"aws": {"instanceType": "m7g.large", "ami": {"id": "ami-0123456789abcdef0"}}}
    }))
    .expect("a valid KubeZeroMachine")
}

/// The provider's metrics address, from the `--metrics-bind-address` the world gave it (read from
/// its command line, which shows the manager's arguments once its exec has happened).
async fn metrics_address(pid: u32) -> BenchResult<SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
        let address = cmdline
            .split(|byte| *byte == 0)
            .filter_map(|arg| std::str::from_utf8(arg).ok())
            .find_map(|arg| arg.strip_prefix("--metrics-bind-address="))
            .map(str::to_owned);
        match address {
            Some(address) => {
                return address
                    .parse()
                    .map_err(|error| format!("metrics address: {error}").into());
            }
            None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            None => return Err("the provider has no --metrics-bind-address".into()),
        }
    }
}

/// `kubezero_reconcile_total{controller="kubezeromachine"}` of the provider.
async fn reconciles(metrics: SocketAddr) -> Option<u64> {
    metric_sum(
        metrics,
        r#"kubezero_reconcile_total{controller="kubezeromachine"} "#,
    )
    .await
}

/// The sum of the provider's `kubezero_aws_requests_total` series.
async fn aws_requests(metrics: SocketAddr) -> Option<u64> {
    metric_sum(metrics, "kubezero_aws_requests_total{").await
}

// ---------------------------------------------------------------------------------------------
// Phase 2: MachineDeployment 0 → N → 0, Cluster deleted.

/// What one step of the scale phase measured.
#[derive(Default, Clone)]
struct Step {
    time: Option<Duration>,
    calls: BTreeMap<String, u64>,
    churn: Churn,
    note: String,
}

/// Writes of the Cluster and reconciles of its KubeZeroCluster.
#[derive(Default, Clone, Copy, Debug)]
struct Churn {
    /// MODIFIED events of the Cluster (every write: metadata, spec or status).
    cluster_writes: u64,
    /// Those of them that changed its status.
    cluster_status_writes: u64,
    /// `kubezero_reconcile_total{controller="kubezerocluster"}`.
    cluster_reconciles: u64,
}

impl Churn {
    fn minus(self, base: Churn) -> Churn {
        Churn {
            cluster_writes: self.cluster_writes.saturating_sub(base.cluster_writes),
            cluster_status_writes: self
                .cluster_status_writes
                .saturating_sub(base.cluster_status_writes),
            cluster_reconciles: self.cluster_reconciles.saturating_sub(base.cluster_reconciles),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} Cluster status writes ({} writes in all), {} KubeZeroCluster reconciles",
            self.cluster_status_writes, self.cluster_writes, self.cluster_reconciles
        )
    }
}

/// Counts the benchmark Cluster's writes from its watch, and reads the provider's
/// KubeZeroCluster reconciles from its metrics.
struct Meter {
    writes: Arc<AtomicU64>,
    status_writes: Arc<AtomicU64>,
    metrics: SocketAddr,
    watch: tokio::task::JoinHandle<()>,
}

impl Meter {
    /// Starts watching Clusters in `namespace` (before the benchmark Cluster exists).
    fn start(client: &Client, namespace: &str, metrics: SocketAddr) -> Meter {
        let writes = Arc::new(AtomicU64::new(0));
        let status_writes = Arc::new(AtomicU64::new(0));
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            namespace,
            &ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "Cluster"),
                "clusters",
            ),
        );
        let (counted, status_counted) = (writes.clone(), status_writes.clone());
        let watch = tokio::spawn(async move {
            let mut last: Option<(String, serde_json::Value)> = None;
            let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
            while let Some(event) = events.next().await {
                let (object, counts) = match event {
                    Ok(watcher::Event::Apply(object)) => (object, true),
                    Ok(watcher::Event::InitApply(object)) => (object, false),
                    _ => continue,
                };
                if object.metadata.name.as_deref() != Some(CLUSTER) {
                    continue;
                }
                let version = object.metadata.resource_version.clone().unwrap_or_default();
                let status = object.data.get("status").cloned().unwrap_or_default();
                let previous = last.replace((version.clone(), status.clone()));
                let Some((previous_version, previous_status)) = previous else {
                    continue;
                };
                if counts && previous_version != version {
                    counted.fetch_add(1, Ordering::Relaxed);
                    if previous_status != status {
                        status_counted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Meter {
            writes,
            status_writes,
            metrics,
            watch,
        }
    }

    /// The counts so far (a metrics endpoint that does not answer reads as 0 reconciles).
    async fn churn(&self) -> Churn {
        Churn {
            cluster_writes: self.writes.load(Ordering::Relaxed),
            cluster_status_writes: self.status_writes.load(Ordering::Relaxed),
            cluster_reconciles: metric_sum(
                self.metrics,
                r#"kubezero_reconcile_total{controller="kubezerocluster"} "#,
            )
            .await
            .unwrap_or(0),
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl Step {
    fn total(&self) -> u64 {
        self.calls.values().sum()
    }

    fn count(&self, operation: &str) -> u64 {
        self.calls.get(operation).copied().unwrap_or(0)
    }
}

#[derive(Default)]
struct ScaleReport {
    cluster_up: Step,
    to_provider_ids: Step,
    to_running: Step,
    to_available: Step,
    idle: Step,
    scale_down: Step,
    delete: Step,
    peak_rss_kib: u64,
    rss_at_scale_kib: u64,
    left_in_moto: Option<String>,
    /// AWS requests of the whole phase: seen by the proxy, and by the provider's own
    /// `kubezero_aws_requests_total`.
    requests_at_proxy: u64,
    requests_in_metric: Option<u64>,
}

impl ScaleReport {
    fn complete(&self) -> bool {
        self.cluster_up.time.is_some()
            && self.to_provider_ids.time.is_some()
            && self.to_running.time.is_some()
            && self.scale_down.time.is_some()
            && self.delete.time.is_some()
    }

    fn print(&self, initial: usize, machines: usize) {
        println!(
            "MachineDeployment {initial} → {machines} → {initial} on moto, then the Cluster deleted (AWS requests counted at the proxy)"
        );
        // The machines each scale step creates and deletes.
        let added = machines.saturating_sub(initial).max(1) as f64;
        let time = |step: &Step| match step.time {
            Some(time) => format!("{time:.1?}"),
            None => format!("TIMEOUT ({})", step.note),
        };
        row(
            &format!("cluster up (infra + 1 control plane + {initial} workers Running)"),
            format!("{}, {} calls", time(&self.cluster_up), self.cluster_up.total()),
        );
        churn_rows(&self.cluster_up);
        row(
            &format!("time to {machines} provider IDs"),
            time(&self.to_provider_ids),
        );
        row(&format!("time to {machines} Running"), time(&self.to_running));
        let up = &self.to_running;
        row(
            "RunInstances calls (goal ≤ 10)",
            up.count("RunInstances").to_string(),
        );
        row(
            "calls of the scale-up",
            format!("{} ({})", up.total(), operations(&up.calls)),
        );
        row(
            &format!("time to {machines} Available (and WorkersAvailable)"),
            time(&self.to_available),
        );
        // To Available when it was reached (the readiness that follows Running belongs to the
        // scale-up), else to Running.
        let whole = if self.to_available.time.is_some() {
            &self.to_available
        } else {
            up
        };
        row(
            "  calls of the scale-up to Available",
            format!("{} ({})", whole.total(), operations(&whole.calls)),
        );
        row("  churn of the scale-up to Available", whole.churn.describe());
        let per = |n: u64| n as f64 / added;
        row(
            "  per added machine: Cluster status writes / KZC reconciles / AWS calls",
            format!(
                "{:.2} / {:.2} / {:.2}",
                per(whole.churn.cluster_status_writes),
                per(whole.churn.cluster_reconciles),
                per(whole.total())
            ),
        );
        if let Some(idle) = self.idle.time {
            let minutes = idle.as_secs_f64() / 60.0;
            let rate = |n: u64| n as f64 / minutes.max(f64::EPSILON);
            let per_minute: Vec<String> = sorted_operations(&self.idle.calls)
                .into_iter()
                .map(|(operation, count)| format!("{operation} {:.1}", rate(count)))
                .collect();
            row(
                &format!("idle {minutes:.1} min with {machines} workers: AWS calls per minute (goal ≤ 2)"),
                if per_minute.is_empty() {
                    format!("{:.1}", rate(self.idle.total()))
                } else {
                    format!("{:.1} ({})", rate(self.idle.total()), per_minute.join(", "))
                },
            );
            row(
                "  per minute: Cluster status writes / KZC reconciles",
                format!(
                    "{:.1} / {:.1} ({} Cluster writes in all)",
                    rate(self.idle.churn.cluster_status_writes),
                    rate(self.idle.churn.cluster_reconciles),
                    self.idle.churn.cluster_writes
                ),
            );
        } else if !self.idle.note.is_empty() {
            row("idle", self.idle.note.clone());
        }
        row(
            &format!("scale to {initial}: time to {initial} worker Machines"),
            time(&self.scale_down),
        );
        row(
            "calls of the scale-down",
            format!(
                "{} ({})",
                self.scale_down.total(),
                operations(&self.scale_down.calls)
            ),
        );
        row("  churn of the scale-down", self.scale_down.churn.describe());
        let per_machine = (whole.total() + self.scale_down.total()) as f64 / added;
        row(
            "AWS calls per machine, create + ready + delete (goal ≤ 1.5)",
            format!("{per_machine:.2}"),
        );
        let instance_calls = |step: &Step| {
            step.calls
                .iter()
                .filter(|(action, _)| INSTANCE_ACTIONS.contains(&action.as_str()))
                .map(|(_, count)| count)
                .sum::<u64>()
        };
        let per_machine = (instance_calls(whole) + instance_calls(&self.scale_down)) as f64 / added;
        row(
            "  of which instance and AMI calls (the rest: cluster resyncs)",
            format!("{per_machine:.2}"),
        );
        row(
            "delete the Cluster: time / calls",
            format!(
                "{} / {} ({})",
                time(&self.delete),
                self.delete.total(),
                operations(&self.delete.calls)
            ),
        );
        row("  churn of the deletion", self.delete.churn.describe());
        row(
            &format!("provider VmRSS at {machines} Running / peak VmHWM"),
            format!("{} / {}", mib(self.rss_at_scale_kib), mib(self.peak_rss_kib)),
        );
        row(
            "left in moto",
            self.left_in_moto.clone().unwrap_or_else(|| "not counted".into()),
        );
        row(
            "AWS requests: at the proxy / in kubezero_aws_requests_total",
            format!(
                "{} / {}",
                self.requests_at_proxy,
                self.requests_in_metric
                    .map_or_else(|| "not scraped".into(), |n| n.to_string())
            ),
        );
    }
}

async fn scale_phase(options: &Options) -> BenchResult<ScaleReport> {
    println!(
        "\n--- phase 2: MachineDeployment {} → {} → {} ---",
        options.initial_workers, options.machines, options.initial_workers
    );
    let moto = Moto::builder().amis(alpine_amis()).start()?;
    let proxy = FaultProxy::start(moto.addr(), FaultConfig::default())?;
    let mut world = World::start_with_cloud_via(&moto, &proxy.endpoint_url()).await?;
    let flags = options.provider_flags();
    let extra: Vec<(&str, &str)> = flags.iter().map(|flag| (PROVIDER, flag.as_str())).collect();
    world.start_managers_with(&extra)?;
    let pid = world.manager_pid(PROVIDER).ok_or("the provider did not start")?;
    let view = world.view();
    let client = view.client();
    let namespace = view.namespace().to_string();
    let mut report = ScaleReport::default();
    let meter = Meter::start(&client, &namespace, metrics_address(pid).await?);
    let probe = Probe {
        proxy: &proxy,
        meter: &meter,
    };
    let outcome = scale_steps(options, &client, &namespace, &probe, pid, &mut report).await;
    drop(meter);
    report.requests_at_proxy = snapshot(&proxy).values().sum();
    report.requests_in_metric = aws_requests(metrics_address(pid).await?).await;
    report.peak_rss_kib = report.peak_rss_kib.max(proc_status(pid, "VmHWM").unwrap_or(0));
    if let Err(error) = &outcome {
        eprintln!("scale phase stopped: {error}");
    }
    if report.delete.time.is_some() {
        let aws = moto.aws_clients(REGION).await;
        report.left_in_moto = match inventory(&aws).await {
            Ok(inventory) => {
                let owned = inventory.owned_counts(&ClusterTags::new(CLUSTER, BTreeMap::new()));
                let left: Vec<String> = owned
                    .iter()
                    .filter(|(_, count)| **count > 0)
                    .map(|(kind, count)| format!("{count} {kind}"))
                    .collect();
                Some(if left.is_empty() {
                    "nothing".into()
                } else {
                    left.join(", ")
                })
            }
            Err(error) => Some(format!("inventory failed: {error}")),
        };
    }
    let logs = world.stop_managers();
    if outcome.is_err() || !report.complete() {
        let tail: String = logs
            .lines()
            .filter(|line| line.contains("ERROR") || line.contains("WARN") || line.starts_with("---"))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n");
        eprintln!("manager warnings and errors (first 40):\n{tail}");
    }
    drop(proxy);
    Ok(report)
}

/// What the scale phase reads at each step boundary: AWS calls at the proxy and the churn.
struct Probe<'a> {
    proxy: &'a FaultProxy,
    meter: &'a Meter,
}

/// Counts at one point of the scale phase.
struct Mark {
    calls: BTreeMap<String, u64>,
    churn: Churn,
}

impl Probe<'_> {
    async fn mark(&self) -> Mark {
        Mark {
            calls: snapshot(self.proxy),
            churn: self.meter.churn().await,
        }
    }

    /// Fills `step` with what happened since `base`.
    async fn since(&self, base: &Mark, step: &mut Step) {
        let now = self.mark().await;
        step.calls = diff(&now.calls, &base.calls);
        step.churn = now.churn.minus(base.churn);
    }
}

async fn scale_steps(
    options: &Options,
    client: &Client,
    namespace: &str,
    probe: &Probe<'_>,
    pid: u32,
    report: &mut ScaleReport,
) -> BenchResult<()> {
    let proxy = probe.proxy;
    let machines = options.machines;
    let initial = options.initial_workers;
    let template = std::fs::read_to_string(repo_root().join("templates/cluster-template.yaml"))?;
    let generate = GenerateOptions {
        cluster_name: CLUSTER.into(),
        target_namespace: namespace.into(),
        kubernetes_version: Some("v1.34.1".into()),
        control_plane_machine_count: Some(1),
        worker_machine_count: Some(i64::try_from(initial)?),
    };
    let variables = BTreeMap::from([("KUBEZERO_WORKER_MAX_SIZE".to_string(), machines.to_string())]);
    let manifest = generate_cluster(&template, &generate, &variables)?;
    let start_mark = probe.mark().await;
    let started = Instant::now();
    for document in documents(&manifest)? {
        templates::apply(client, namespace, &document, &PatchParams::apply(MANAGER).force()).await?;
    }
    println!("applied {CLUSTER} from templates/cluster-template.yaml (1 control plane, {initial} workers)");
    let machines_api: Api<Machine> = Api::namespaced(client.clone(), namespace);

    // The cluster, its control plane and its initial workers (Available: their readiness churn
    // belongs to the cluster's start, not to the scale-up).
    let deadline = Instant::now() + options.phase_timeout;
    loop {
        let counts = count_machines(&machines_api).await?;
        if counts.control_plane_running >= 1 && counts.running >= initial && counts.available >= initial {
            report.cluster_up.time = Some(started.elapsed());
            break;
        }
        if Instant::now() > deadline {
            report.cluster_up.note = format!(
                "control plane Running: {}, workers Running / Available: {} / {} of {initial}",
                counts.control_plane_running >= 1,
                counts.running,
                counts.available
            );
            probe.since(&start_mark, &mut report.cluster_up).await;
            return Err("the control plane did not come up".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    probe.since(&start_mark, &mut report.cluster_up).await;
    println!(
        "cluster up after {:.1?} ({} AWS calls)",
        started.elapsed(),
        report.cluster_up.total()
    );

    // Scale up.
    let up_mark = probe.mark().await;
    let base = up_mark.calls.clone();
    let workers = machine_deployment(client, namespace).await?;
    let scaled = Instant::now();
    workers
        .patch(
            &format!("{CLUSTER}-workers"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": machines}})),
        )
        .await?;
    println!("scaled {CLUSTER}-workers to {machines}");
    let deadline = Instant::now() + options.phase_timeout;
    let mut last_print = Instant::now();
    let mut counts;
    loop {
        counts = count_machines(&machines_api).await?;
        let rss = proc_status(pid, "VmRSS").unwrap_or(0);
        report.rss_at_scale_kib = rss;
        if report.to_provider_ids.time.is_none() && counts.with_provider_id >= machines {
            report.to_provider_ids.time = Some(scaled.elapsed());
            report.to_provider_ids.calls = diff(&snapshot(proxy), &base);
            println!("{machines} provider IDs after {:.1?}", scaled.elapsed());
        }
        if counts.running >= machines {
            report.to_running.time = Some(scaled.elapsed());
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            let calls = diff(&snapshot(proxy), &base);
            let machine_reconciles = metric_sum(
                probe.meter.metrics,
                r#"kubezero_reconcile_total{controller="kubezeromachine"} "#,
            )
            .await
            .unwrap_or(0);
            println!(
                "[{:>5.0?}] workers {} created, {} with bootstrap data, {} with provider ID, {} infrastructure provisioned, {} with a Node, {} Running; {} AWS calls ({} RunInstances), {machine_reconciles} KubeZeroMachine reconciles; provider VmRSS {}",
                scaled.elapsed(),
                counts.workers,
                counts.with_bootstrap_data,
                counts.with_provider_id,
                counts.infrastructure_provisioned,
                counts.with_node,
                counts.running,
                calls.values().sum::<u64>(),
                calls.get("RunInstances").copied().unwrap_or(0),
                mib(rss),
            );
            last_print = Instant::now();
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    probe.since(&up_mark, &mut report.to_running).await;
    report.peak_rss_kib = proc_status(pid, "VmHWM").unwrap_or(0);
    let partial = format!(
        "{} with provider ID, {} Running of {machines}",
        counts.with_provider_id, counts.running
    );
    if report.to_provider_ids.time.is_none() {
        report.to_provider_ids.note = partial.clone();
        report.to_provider_ids.calls = report.to_running.calls.clone();
    }
    if report.to_running.time.is_none() {
        report.to_running.note = partial;
    } else {
        println!(
            "{machines} Running after {:.1?}",
            report.to_running.time.unwrap_or_default()
        );
    }

    // Every worker Machine Available (Ready, and Node healthy) and the Cluster's WorkersAvailable
    // True: the readiness changes that follow Running are part of the scale-up's churn.
    let clusters_api: Api<Cluster> = Api::namespaced(client.clone(), namespace);
    if report.to_running.time.is_some() {
        loop {
            counts = count_machines(&machines_api).await?;
            let workers_available = clusters_api.get_opt(CLUSTER).await?.is_some_and(|cluster| {
                cluster.status.as_ref().is_some_and(|status| {
                    kubezero_capi::conditions::is_true(&status.conditions, "WorkersAvailable")
                })
            });
            if counts.available >= machines && workers_available {
                report.to_available.time = Some(scaled.elapsed());
                println!("{machines} Available after {:.1?}", scaled.elapsed());
                break;
            }
            if Instant::now() > deadline {
                report.to_available.note = format!("{} Available of {machines}", counts.available);
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    } else {
        report.to_available.note = "the scale-up did not finish".into();
    }
    probe.since(&up_mark, &mut report.to_available).await;

    // Idle with the machines (only after a complete scale-up).
    if report.to_available.time.is_some() && !options.idle.is_zero() {
        println!("idling {:?} with {machines} machines", options.idle);
        let idle_mark = probe.mark().await;
        let idle_started = Instant::now();
        while idle_started.elapsed() < options.idle {
            let left = options.idle.saturating_sub(idle_started.elapsed());
            tokio::time::sleep(left.min(Duration::from_secs(30))).await;
            let churn = probe.meter.churn().await.minus(idle_mark.churn);
            println!(
                "[{:>5.0?}] idle: {} AWS calls, {}",
                idle_started.elapsed(),
                diff(&snapshot(proxy), &idle_mark.calls).values().sum::<u64>(),
                churn.describe()
            );
        }
        report.idle.time = Some(idle_started.elapsed());
        probe.since(&idle_mark, &mut report.idle).await;
    } else if options.idle.is_zero() {
        report.idle.note = "skipped (--idle-minutes 0)".into();
    } else {
        report.idle.note = "skipped: the scale-up did not finish".into();
    }

    // Scale down (also after a timed-out scale-up: it cleans up and is measured all the same).
    let down_mark = probe.mark().await;
    let base = down_mark.calls.clone();
    let scaled = Instant::now();
    workers
        .patch(
            &format!("{CLUSTER}-workers"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": initial}})),
        )
        .await?;
    println!("scaled {CLUSTER}-workers to {initial}");
    let deadline = Instant::now() + options.phase_timeout;
    let mut last_print = Instant::now();
    loop {
        let counts = count_machines(&machines_api).await?;
        if counts.workers <= initial {
            report.scale_down.time = Some(scaled.elapsed());
            println!("{initial} worker Machines left after {:.1?}", scaled.elapsed());
            break;
        }
        if Instant::now() > deadline {
            report.scale_down.note = format!("{} worker Machines left", counts.workers);
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            println!(
                "[{:>5.0?}] {} worker Machines left; {} AWS calls",
                scaled.elapsed(),
                counts.workers,
                diff(&snapshot(proxy), &base).values().sum::<u64>()
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    probe.since(&down_mark, &mut report.scale_down).await;

    // Delete the Cluster.
    let delete_mark = probe.mark().await;
    let deleted = Instant::now();
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), namespace);
    clusters.delete(CLUSTER, &Default::default()).await?;
    let deadline = Instant::now() + options.phase_timeout;
    loop {
        if clusters.get_opt(CLUSTER).await?.is_none() {
            report.delete.time = Some(deleted.elapsed());
            println!("Cluster {CLUSTER} gone after {:.1?}", deleted.elapsed());
            break;
        }
        if Instant::now() > deadline {
            report.delete.note = "Cluster still exists".into();
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    probe.since(&delete_mark, &mut report.delete).await;
    Ok(())
}

#[derive(Default, Debug)]
struct WorkerCounts {
    workers: usize,
    with_bootstrap_data: usize,
    with_provider_id: usize,
    infrastructure_provisioned: usize,
    with_node: usize,
    running: usize,
    available: usize,
    control_plane_running: usize,
}

async fn count_machines(api: &Api<Machine>) -> BenchResult<WorkerCounts> {
    let mut counts = WorkerCounts::default();
    for machine in api.list(&ListParams::default()).await?.items {
        let running = machine.status.as_ref().and_then(|status| status.phase.as_deref()) == Some("Running");
        if machine.is_control_plane() {
            counts.control_plane_running += usize::from(running);
            continue;
        }
        counts.workers += 1;
        counts.with_bootstrap_data += usize::from(
            machine
                .spec
                .bootstrap
                .data_secret_name
                .as_deref()
                .is_some_and(|name| !name.is_empty()),
        );
        if machine
            .spec
            .provider_id
            .as_deref()
            .is_some_and(|id| !id.is_empty())
        {
            counts.with_provider_id += 1;
            counts.running += usize::from(running);
        }
        let provisioned = machine
            .status
            .as_ref()
            .and_then(|status| status.initialization.as_ref());
        counts.infrastructure_provisioned +=
            usize::from(provisioned.and_then(|i| i.infrastructure_provisioned) == Some(true));
        counts.with_node += usize::from(machine.has_node_ref());
        let available = machine
            .status
            .as_ref()
            .is_some_and(|status| kubezero_capi::conditions::is_true(&status.conditions, "Available"));
        counts.available += usize::from(available);
    }
    Ok(counts)
}

async fn machine_deployment(client: &Client, namespace: &str) -> BenchResult<Api<DynamicObject>> {
    let gvk = kube::api::GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta2", "MachineDeployment");
    let (resource, _) = pinned_kind(client, &gvk).await?;
    Ok(Api::namespaced_with(client.clone(), namespace, &resource))
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Requests per action the proxy has seen so far (forwarded or replayed; no faults are injected).
fn snapshot(proxy: &FaultProxy) -> BTreeMap<String, u64> {
    proxy
        .counts()
        .into_iter()
        .map(|(action, counts)| (action, counts.total()))
        .collect()
}

fn diff(now: &BTreeMap<String, u64>, base: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    now.iter()
        .map(|(operation, count)| {
            (
                operation.clone(),
                count - base.get(operation).copied().unwrap_or(0),
            )
        })
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// Operations by count (most first), then by name.
fn sorted_operations(calls: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut sorted: Vec<(String, u64)> = calls.iter().map(|(o, c)| (o.clone(), *c)).collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    sorted
}

fn operations(calls: &BTreeMap<String, u64>) -> String {
    if calls.values().all(|count| *count == 0) {
        return "none".into();
    }
    sorted_operations(calls)
        .iter()
        .map(|(operation, count)| format!("{operation} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The churn and the AWS calls by operation of `step`.
fn churn_rows(step: &Step) {
    row("  churn", step.churn.describe());
    row("  AWS calls", operations(&step.calls));
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn row(what: &str, value: String) {
    println!("  {what:<58} {value}");
}
