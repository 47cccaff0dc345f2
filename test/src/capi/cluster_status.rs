//! A Cluster's v1beta2 status as core's Cluster controller writes it on every reconcile ([CAPI]
//! `core/reconcilers/cluster/cluster_controller_status.go`): `phase`, the replica counters of
//! `status.controlPlane` (stand-alone control-plane Machines, or the control-plane object's) and
//! `status.workers` (MachineDeployments, plus MachineSets and Machines the Cluster owns directly),
//! and the conditions `RemoteConnectionProbe`, `InfrastructureReady`, `ControlPlaneAvailable`,
//! `ControlPlaneInitialized`, `WorkersAvailable`, `ControlPlaneMachinesReady`,
//! `WorkerMachinesReady`, `ControlPlaneMachinesUpToDate`, `WorkerMachinesUpToDate`, `RollingOut`,
//! `ScalingUp`, `ScalingDown`, `Remediating`, `Deleting` and the `Available` summary.
//!
//! The Machine aggregates carry the Machines' messages (`* Machines a, b, c, ... (17 more): ...`),
//! so the status changes as Machines come and go and progress: that is why core rewrites a Cluster
//! on almost every Machine change. Pure: the controller gathers the inputs.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::{Map, Value, json};

use super::conditions::{self, Condition, Owned, Priority, Reasons, Status, SummaryOptions};
use super::replica_status::{
    READY_REASONS, UP_TO_DATE_REASONS, count_true, machines_condition, up_to_date_candidates,
};
use super::util::{at, bool_at, i64_at, is_deleting, str_at};

/// How long core keeps calling a workload cluster reachable after its last successful probe
/// (`--remote-connection-grace-period`).
pub(crate) const REMOTE_CONNECTION_GRACE: Duration = Duration::from_secs(50);

/// An object a Cluster references.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reference<'a> {
    /// No reference.
    Unset,
    /// Referenced (kind), and it does not exist.
    Missing(&'a str),
    /// Kind and data of the object.
    Found(&'a str, &'a Value),
}

/// What core's cluster cache knows of the connection to the workload cluster.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ProbeState {
    /// The last successful probe.
    pub(crate) last_success: Option<jiff::Timestamp>,
    /// Failed probes since the last success.
    pub(crate) failures: u32,
}

/// Inputs of [`update`] besides the Cluster.
pub(crate) struct Inputs<'a> {
    /// The InfraCluster.
    pub(crate) infrastructure: Reference<'a>,
    /// The control-plane object (`spec.controlPlaneRef`).
    pub(crate) control_plane: Reference<'a>,
    /// The Cluster's MachineDeployments.
    pub(crate) machinedeployments: &'a [Arc<DynamicObject>],
    /// The Cluster's MachineSets.
    pub(crate) machinesets: &'a [Arc<DynamicObject>],
    /// Machines labelled `cluster.x-k8s.io/control-plane`.
    pub(crate) control_plane_machines: &'a [Arc<DynamicObject>],
    /// The other Machines.
    pub(crate) worker_machines: &'a [Arc<DynamicObject>],
    /// The workload-cluster connection.
    pub(crate) probe: ProbeState,
    /// `(reason, message)` of the deletion step, while the Cluster is being deleted.
    pub(crate) deleting: Option<(&'a str, String)>,
}

/// Recomputes `status` for `cluster` (its data as this reconcile leaves the spec); `status` carries
/// this reconcile's `initialization`.
pub(crate) fn update(status: &mut Value, cluster: &DynamicObject, inputs: &Inputs<'_>) {
    let generation = cluster.metadata.generation;
    let set = |status: &mut Value, c: Condition| conditions::set(status, &c, generation);
    set_phase(status, cluster);
    status["controlPlane"] = control_plane_replicas(&cluster.data, inputs);
    status["workers"] = workers_replicas(cluster, inputs);

    if let Some(c) = remote_connection_probe(status, inputs.probe) {
        set(status, c);
    }
    let deleting = is_deleting(cluster);
    set(
        status,
        infrastructure_ready(status, &cluster.data, inputs.infrastructure, deleting),
    );
    set(
        status,
        control_plane_available(status, inputs.control_plane, deleting),
    );
    if let Some(c) = control_plane_initialized(status, inputs) {
        set(status, c);
    }
    set(status, workers_available(inputs.machinedeployments));
    let machines = |list: &[Arc<DynamicObject>], source: &str, target: &str, reasons: Reasons| {
        machines_condition(list, source, target, reasons)
    };
    set(
        status,
        machines(
            inputs.control_plane_machines,
            "Ready",
            "ControlPlaneMachinesReady",
            READY_REASONS,
        ),
    );
    set(
        status,
        machines(
            inputs.worker_machines,
            "Ready",
            "WorkerMachinesReady",
            READY_REASONS,
        ),
    );
    set(
        status,
        machines(
            &up_to_date_candidates(inputs.control_plane_machines),
            "UpToDate",
            "ControlPlaneMachinesUpToDate",
            UP_TO_DATE_REASONS,
        ),
    );
    set(
        status,
        machines(
            &up_to_date_candidates(inputs.worker_machines),
            "UpToDate",
            "WorkerMachinesUpToDate",
            UP_TO_DATE_REASONS,
        ),
    );
    let owned_sets: Vec<Arc<DynamicObject>> = inputs
        .machinesets
        .iter()
        .filter(|ms| owned_by(ms, cluster))
        .cloned()
        .collect();
    set(
        status,
        negative_aggregate("RollingOut", inputs.machinedeployments, &[]),
    );
    set(
        status,
        negative_aggregate("ScalingUp", inputs.machinedeployments, &owned_sets),
    );
    set(
        status,
        negative_aggregate("ScalingDown", inputs.machinedeployments, &owned_sets),
    );
    set(
        status,
        Condition::new("Remediating", Status::False, "NotRemediating", ""),
    );
    let deleting_condition = match &inputs.deleting {
        None => Condition::new("Deleting", Status::False, "NotDeleting", ""),
        Some((reason, message)) => Condition::new("Deleting", Status::True, reason, message.clone()),
    };
    set(status, deleting_condition);
    let available = available(status, &cluster.data, deleting);
    set(status, available);
    if let Some(generation) = generation {
        status["observedGeneration"] = json!(generation);
    }
}

fn owned_by(obj: &DynamicObject, cluster: &DynamicObject) -> bool {
    let uid = cluster.metadata.uid.as_deref().unwrap_or_default();
    obj.owner_references()
        .iter()
        .any(|r| r.kind == "Cluster" && r.uid == uid)
}

fn endpoint_valid(data: &Value) -> bool {
    str_at(data, "spec.controlPlaneEndpoint.host").is_some()
        && i64_at(data, "spec.controlPlaneEndpoint.port").is_some_and(|p| p > 0)
}

fn set_phase(status: &mut Value, cluster: &DynamicObject) {
    let data = &cluster.data;
    let mut phase = str_at(status, "phase").unwrap_or("Pending").to_string();
    if at(data, "spec.infrastructureRef").is_some_and(Value::is_object)
        || at(data, "spec.controlPlaneRef").is_some_and(Value::is_object)
    {
        phase = "Provisioning".into();
    }
    if bool_at(status, "initialization.infrastructureProvisioned") && endpoint_valid(data) {
        phase = "Provisioned".into();
    }
    if is_deleting(cluster) {
        phase = "Deleting".into();
    }
    status["phase"] = json!(phase);
}

/// Counter fields that are set (core's nil pointers are left out).
fn counters(fields: &[(&str, Option<i64>)]) -> Value {
    let mut map = Map::new();
    for (name, value) in fields {
        if let Some(value) = value {
            map.insert(name.to_string(), json!(value));
        }
    }
    Value::Object(map)
}

fn add(total: &mut Option<i64>, value: Option<i64>) {
    if let Some(value) = value {
        *total = Some(total.unwrap_or(0) + value);
    }
}

fn control_plane_replicas(data: &Value, inputs: &Inputs<'_>) -> Value {
    match inputs.control_plane {
        Reference::Found(_, cp) => counters(&[
            ("desiredReplicas", i64_at(cp, "spec.replicas")),
            ("replicas", i64_at(cp, "status.replicas")),
            ("readyReplicas", i64_at(cp, "status.readyReplicas")),
            ("availableReplicas", i64_at(cp, "status.availableReplicas")),
            ("upToDateReplicas", i64_at(cp, "status.upToDateReplicas")),
        ]),
        Reference::Missing(_) => json!({}),
        Reference::Unset if at(data, "spec.topology").is_some_and(Value::is_object) => json!({}),
        Reference::Unset => {
            let machines = inputs.control_plane_machines;
            let some = |n: i64| (n > 0).then_some(n);
            let replicas = some(machines.len() as i64);
            counters(&[
                ("desiredReplicas", replicas),
                ("replicas", replicas),
                ("readyReplicas", some(count_true(machines, "Ready"))),
                ("availableReplicas", some(count_true(machines, "Available"))),
                ("upToDateReplicas", some(count_true(machines, "UpToDate"))),
            ])
        }
    }
}

fn workers_replicas(cluster: &DynamicObject, inputs: &Inputs<'_>) -> Value {
    let (mut desired, mut replicas, mut ready, mut available, mut up_to_date) =
        (None, None, None, None, None);
    let owned_sets = inputs.machinesets.iter().filter(|ms| owned_by(ms, cluster));
    for obj in inputs.machinedeployments.iter().chain(owned_sets) {
        add(&mut desired, i64_at(&obj.data, "spec.replicas"));
        add(&mut replicas, i64_at(&obj.data, "status.replicas"));
        add(&mut ready, i64_at(&obj.data, "status.readyReplicas"));
        add(&mut available, i64_at(&obj.data, "status.availableReplicas"));
        add(&mut up_to_date, i64_at(&obj.data, "status.upToDateReplicas"));
    }
    for machine in inputs.worker_machines.iter().filter(|m| owned_by(m, cluster)) {
        let status = machine.data.get("status").unwrap_or(&Value::Null);
        add(&mut desired, Some(1));
        add(&mut replicas, Some(1));
        for (total, type_) in [
            (&mut ready, "Ready"),
            (&mut available, "Available"),
            (&mut up_to_date, "UpToDate"),
        ] {
            if conditions::is_true(status, type_) {
                add(total, Some(1));
            }
        }
    }
    counters(&[
        ("desiredReplicas", desired),
        ("replicas", replicas),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("upToDateReplicas", up_to_date),
    ])
}

/// `None` leaves the condition as it is (core does not overwrite it before the first probe).
fn remote_connection_probe(status: &Value, probe: ProbeState) -> Option<Condition> {
    const TYPE: &str = "RemoteConnectionProbe";
    let failed = |message: String| Condition::new(TYPE, Status::False, "ProbeFailed", message);
    match probe.last_success {
        None if probe.failures < 5 => conditions::get(status, TYPE)
            .is_none()
            .then(|| failed("Remote connection not established yet".into())),
        None => Some(failed("Remote connection probe failed".into())),
        Some(at) => {
            let since = Duration::try_from(jiff::Timestamp::now().duration_since(at)).unwrap_or_default();
            if since > REMOTE_CONNECTION_GRACE {
                let when = at
                    .round(jiff::Unit::Second)
                    .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_default();
                Some(failed(format!(
                    "Remote connection probe failed, probe last succeeded at {when}"
                )))
            } else {
                Some(Condition::new(TYPE, Status::True, "ProbeSucceeded", ""))
            }
        }
    }
}

fn infrastructure_ready(status: &Value, data: &Value, infra: Reference<'_>, deleting: bool) -> Condition {
    const TYPE: &str = "InfrastructureReady";
    let provisioned = bool_at(status, "initialization.infrastructureProvisioned");
    match infra {
        Reference::Unset if at(data, "spec.topology").is_some_and(Value::is_object) => {
            let message = if deleting {
                ""
            } else {
                "Waiting for cluster topology to be reconciled"
            };
            Condition::new(TYPE, Status::False, "DoesNotExist", message)
        }
        Reference::Unset => internal_error(TYPE),
        Reference::Found(kind, object) => {
            let message = if provisioned {
                String::new()
            } else {
                format!("{kind} status.initialization.provisioned is false")
            };
            let mut c = conditions::mirror(
                object.get("status").unwrap_or(&Value::Null),
                "Ready",
                TYPE,
                (
                    Status::from_bool(provisioned),
                    if provisioned { "Ready" } else { "NotReady" },
                    message,
                ),
            );
            if c.reason == conditions::NO_REASON_REPORTED && c.status == Status::True {
                c.reason = "Ready".into();
            }
            c
        }
        Reference::Missing(kind) => missing(TYPE, kind, deleting, provisioned, "cluster"),
    }
}

fn missing(type_: &str, kind: &str, deleting: bool, existed: bool, owner: &str) -> Condition {
    let (reason, message) = match (deleting, existed) {
        (true, true) => ("Deleted", format!("{kind} has been deleted")),
        (false, true) => (
            "Deleted",
            format!("{kind} has been deleted while the {owner} still exists"),
        ),
        (_, false) => ("DoesNotExist", format!("{kind} does not exist")),
    };
    Condition::new(type_, Status::False, reason, message)
}

fn internal_error(type_: &str) -> Condition {
    Condition::new(
        type_,
        Status::Unknown,
        "InternalError",
        "Please check controller logs for errors",
    )
}

/// `ControlPlaneAvailable`. For a Cluster without `controlPlaneRef` core has no control-plane
/// object to mirror and reports `Unknown`, `InternalError`.
fn control_plane_available(status: &Value, cp: Reference<'_>, deleting: bool) -> Condition {
    const TYPE: &str = "ControlPlaneAvailable";
    let initialized = bool_at(status, "initialization.controlPlaneInitialized");
    match cp {
        Reference::Unset => internal_error(TYPE),
        Reference::Found(kind, object) => {
            let message = if initialized {
                String::new()
            } else {
                format!("{kind} status.initialization.controlPlaneInitialized is false")
            };
            let mut c = conditions::mirror(
                object.get("status").unwrap_or(&Value::Null),
                "Available",
                TYPE,
                (
                    Status::from_bool(initialized),
                    if initialized { "Available" } else { "NotAvailable" },
                    message,
                ),
            );
            if c.reason == conditions::NO_REASON_REPORTED && c.status == Status::True {
                c.reason = "Available".into();
            }
            c
        }
        Reference::Missing(kind) => missing(TYPE, kind, deleting, initialized, "cluster"),
    }
}

/// `ControlPlaneInitialized`; `None` once it is `True` (it never goes back).
fn control_plane_initialized(status: &Value, inputs: &Inputs<'_>) -> Option<Condition> {
    const TYPE: &str = "ControlPlaneInitialized";
    if conditions::is_true(status, TYPE) {
        return None;
    }
    Some(match inputs.control_plane {
        Reference::Found(_, cp) if bool_at(cp, "status.initialization.controlPlaneInitialized") => {
            Condition::new(TYPE, Status::True, "Initialized", "")
        }
        Reference::Found(..) => Condition::new(
            TYPE,
            Status::False,
            "NotInitialized",
            "Control plane not yet initialized",
        ),
        Reference::Missing(kind) => Condition::new(
            TYPE,
            Status::Unknown,
            "DoesNotExist",
            format!("{kind} does not exist"),
        ),
        Reference::Unset => {
            let with_node = inputs
                .control_plane_machines
                .iter()
                .any(|m| str_at(&m.data, "status.nodeRef.name").is_some());
            if with_node {
                Condition::new(TYPE, Status::True, "Initialized", "")
            } else {
                Condition::new(
                    TYPE,
                    Status::False,
                    "NotInitialized",
                    "Waiting for the first control plane machine to have status.nodeRef set",
                )
            }
        }
    })
}

fn workers_available(machinedeployments: &[Arc<DynamicObject>]) -> Condition {
    if machinedeployments.is_empty() {
        return Condition::new("WorkersAvailable", Status::True, "NoWorkers", "");
    }
    let owned: Vec<Owned> = machinedeployments
        .iter()
        .map(|md| Owned::of("MachineDeployment", &md.name_any(), false, &md.data, "Available"))
        .collect();
    conditions::aggregate(
        &owned,
        "Available",
        "WorkersAvailable",
        false,
        Reasons {
            issue: "NotAvailable",
            unknown: "AvailableUnknown",
            info: "Available",
        },
    )
}

/// `RollingOut`, `ScalingUp` or `ScalingDown` (normal state `False`) over the MachineDeployments and
/// the MachineSets the Cluster owns.
fn negative_aggregate(
    type_: &'static str,
    mds: &[Arc<DynamicObject>],
    sets: &[Arc<DynamicObject>],
) -> Condition {
    let (issue, unknown, info) = match type_ {
        "RollingOut" => ("RollingOut", "RollingOutUnknown", "NotRollingOut"),
        "ScalingUp" => ("ScalingUp", "ScalingUpUnknown", "NotScalingUp"),
        _ => ("ScalingDown", "ScalingDownUnknown", "NotScalingDown"),
    };
    let owned: Vec<Owned> = mds
        .iter()
        .map(|md| Owned::of("MachineDeployment", &md.name_any(), false, &md.data, type_))
        .chain(
            sets.iter()
                .map(|ms| Owned::of("MachineSet", &ms.name_any(), false, &ms.data, type_)),
        )
        .collect();
    if owned.is_empty() {
        return Condition::new(type_, Status::False, info, "");
    }
    conditions::aggregate(&owned, type_, type_, true, Reasons { issue, unknown, info })
}

/// The `Available` summary of the Cluster's own conditions.
fn available(status: &Value, data: &Value, deleting: bool) -> Condition {
    let mut types: Vec<String> = [
        "Deleting",
        "RemoteConnectionProbe",
        "InfrastructureReady",
        "ControlPlaneAvailable",
        "WorkersAvailable",
        "TopologyReconciled",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    let mut negative: Vec<String> = vec!["Deleting".into()];
    for gate in at(data, "spec.availabilityGates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(type_) = gate.get("conditionType").and_then(Value::as_str) {
            types.push(type_.to_string());
            if gate.get("polarity").and_then(Value::as_str) == Some("Negative") {
                negative.push(type_.to_string());
            }
        }
    }
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    let negative: Vec<&str> = negative.iter().map(String::as_str).collect();
    let topology = at(data, "spec.topology").is_some_and(Value::is_object);
    let ignore: &[&str] = if topology { &[] } else { &["TopologyReconciled"] };
    let priority = |c: &Condition| -> Priority {
        let gone = matches!(c.reason.as_str(), "Deleted" | "DoesNotExist");
        if deleting && gone && matches!(c.type_.as_str(), "InfrastructureReady" | "ControlPlaneAvailable") {
            return Priority::Info;
        }
        if c.type_ == "TopologyReconciled"
            && c.status == Status::False
            && !matches!(c.reason.as_str(), "ReconcileFailed" | "ClusterClassNotReconciled")
        {
            return Priority::Info;
        }
        conditions::default_priority(c, &negative)
    };
    conditions::summary(
        &conditions::of_status(status),
        "Available",
        &SummaryOptions {
            types: &types,
            negative: &negative,
            ignore_if_missing: ignore,
            overrides: Vec::new(),
            reasons: Reasons {
                issue: "NotAvailable",
                unknown: "AvailableUnknown",
                info: "Available",
            },
            priority: Some(&priority),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(kind: &str, name: &str, value: Value) -> Arc<DynamicObject> {
        let mut full = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": kind,
            "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"}});
        full.as_object_mut()
            .unwrap()
            .extend(value.as_object().unwrap().clone());
        Arc::new(serde_json::from_value(full).unwrap())
    }

    fn cluster() -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "uid": "u", "generation": 1},
            "spec": {"infrastructureRef": {"apiGroup": "g", "kind": "KubeZeroCluster", "name": "c"},
                "controlPlaneEndpoint": {"host": "h", "port": 6443}}}),
        )
        .unwrap()
    }

    #[test]
    fn workers_follow_the_machinedeployments_and_their_machines() {
        let md = obj(
            "MachineDeployment",
            "workers",
            json!({"spec": {"replicas": 3}, "status": {"replicas": 2, "readyReplicas": 1,
                "availableReplicas": 1, "upToDateReplicas": 2, "conditions": [
                    conditions::json_condition("Available", "False", "NotAvailable", "1 available replicas, at least 3 required", ""),
                    conditions::json_condition("ScalingUp", "True", "ScalingUp", "Scaling up from 2 to 3 replicas", "")]}}),
        );
        let ready = obj(
            "Machine",
            "workers-a",
            json!({"status": {"conditions": [conditions::json_condition("Ready", "True", "Ready", "", "")]}}),
        );
        let waiting = obj(
            "Machine",
            "workers-b",
            json!({"status": {"conditions": [conditions::json_condition("Ready", "False", "NotReady", "* NodeHealthy: no Node", "")]}}),
        );
        let infra = json!({"status": {"initialization": {"provisioned": true}}});
        let cluster = cluster();
        let mut status = json!({"initialization": {"infrastructureProvisioned": true}});
        let mds = [md];
        let workers = [ready, waiting];
        update(
            &mut status,
            &cluster,
            &Inputs {
                infrastructure: Reference::Found("KubeZeroCluster", &infra),
                control_plane: Reference::Unset,
                machinedeployments: &mds,
                machinesets: &[],
                control_plane_machines: &[],
                worker_machines: &workers,
                probe: ProbeState::default(),
                deleting: None,
            },
        );
        assert_eq!(
            status["workers"],
            json!({"desiredReplicas": 3, "replicas": 2, "readyReplicas": 1, "availableReplicas": 1, "upToDateReplicas": 2})
        );
        assert_eq!(status["controlPlane"], json!({}));
        assert_eq!(status["phase"], "Provisioned");
        let get = |t: &str| conditions::get(&status, t).unwrap();
        assert_eq!(get("WorkersAvailable").status, Status::False);
        assert_eq!(
            get("WorkersAvailable").message,
            "* MachineDeployment workers: 1 available replicas, at least 3 required"
        );
        assert_eq!(get("ScalingUp").status, Status::True);
        assert_eq!(
            get("WorkerMachinesReady").message,
            "* Machine workers-b:\n  * NodeHealthy: no Node"
        );
        assert_eq!(get("ControlPlaneInitialized").status, Status::False);
        assert_eq!(
            get("RemoteConnectionProbe").message,
            "Remote connection not established yet"
        );
        let available = get("Available");
        assert_eq!(available.status, Status::False);
        assert!(
            available.message.contains("* WorkersAvailable:"),
            "{}",
            available.message
        );
    }

    #[test]
    fn a_probe_older_than_the_grace_period_is_a_failure() {
        let old = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(120);
        let c = remote_connection_probe(
            &json!({}),
            ProbeState {
                last_success: Some(old),
                failures: 3,
            },
        )
        .unwrap();
        assert_eq!(c.status, Status::False);
        assert!(
            c.message
                .starts_with("Remote connection probe failed, probe last succeeded at ")
        );
        let fresh = ProbeState {
            last_success: Some(jiff::Timestamp::now()),
            failures: 0,
        };
        assert_eq!(
            remote_connection_probe(&json!({}), fresh).unwrap().status,
            Status::True
        );
    }
}
