//! A Machine's v1beta2 status as core's Machine controller writes it ([CAPI]
//! `core/reconcilers/machine/machine_controller_status.go`): the conditions `BootstrapConfigReady`,
//! `InfrastructureReady` (mirrors of the provider objects' `Ready`), `NodeReady` and `NodeHealthy`
//! (from the workload cluster's Node), `Deleting`, `Updating`, `UpToDate` (Machines of a
//! MachineDeployment: the MachineSet's template against the MachineDeployment's), the `Ready`
//! summary, `Available`, and `phase` with `lastUpdated`. Pure: the controller gathers the inputs.

use std::time::Duration;

use serde_json::{Value, json};

use super::conditions::{self, Condition, Priority, Reasons, Status, SummaryOptions};
use super::util::{self, ContractRef, at, bool_at, str_at};

/// A provider object a Machine references.
#[derive(Clone, Copy, Debug)]
pub(crate) enum External<'a> {
    /// The Machine has no such reference.
    NotReferenced,
    /// Referenced, and the object does not exist.
    Missing(&'a str),
    /// The object's data.
    Found(&'a str, &'a Value),
}

/// One condition of a Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeCondition {
    /// `type` (`Ready`, `MemoryPressure`, ...).
    pub(crate) type_: String,
    /// `status`.
    pub(crate) status: String,
    /// `message`.
    pub(crate) message: String,
}

/// What core sees of a Machine's Node.
#[derive(Clone, Copy, Debug)]
pub(crate) enum NodeView<'a> {
    /// The Cluster's infrastructure is not provisioned.
    ClusterNotProvisioned,
    /// The Cluster's control plane is not initialized.
    ControlPlaneNotInitialized,
    /// No connection to the workload cluster (yet).
    NotConnected,
    /// The Node's conditions.
    Found(&'a [NodeCondition]),
    /// No Node for the Machine.
    Missing,
}

/// Inputs of [`update`] besides the Machine.
pub(crate) struct Inputs<'a> {
    /// The bootstrap config.
    pub(crate) bootstrap: External<'a>,
    /// The InfraMachine.
    pub(crate) infrastructure: External<'a>,
    /// The Node.
    pub(crate) node: NodeView<'a>,
    /// `spec.template` of the owning MachineSet and of its MachineDeployment (both present only for
    /// Machines of a MachineDeployment).
    pub(crate) templates: Option<(&'a Value, &'a Value)>,
    /// `(reason, message)` of the deletion step the Machine is in, when it is being deleted.
    pub(crate) deleting: Option<(&'a str, String)>,
}

/// Machine reasons core uses.
mod reason {
    pub(super) const READY: &str = "Ready";
    pub(super) const NOT_READY: &str = "NotReady";
    pub(super) const READY_UNKNOWN: &str = "ReadyUnknown";
    pub(super) const DATA_SECRET_PROVIDED: &str = "DataSecretProvided";
    pub(super) const DOES_NOT_EXIST: &str = "DoesNotExist";
    pub(super) const DELETED: &str = "Deleted";
    pub(super) const INSPECTION_FAILED: &str = "InspectionFailed";
    pub(super) const CONNECTION_DOWN: &str = "ConnectionDown";
    pub(super) const NODE_READY: &str = "NodeReady";
    pub(super) const NODE_NOT_READY: &str = "NodeNotReady";
    pub(super) const NODE_READY_UNKNOWN: &str = "NodeReadyUnknown";
    pub(super) const NODE_HEALTHY: &str = "NodeHealthy";
    pub(super) const NODE_NOT_HEALTHY: &str = "NodeNotHealthy";
    pub(super) const NODE_HEALTH_UNKNOWN: &str = "NodeHealthyUnknown";
    pub(super) const NODE_DELETED: &str = "NodeDeleted";
    pub(super) const NODE_DOES_NOT_EXIST: &str = "NodeDoesNotExist";
    pub(super) const NOT_DELETING: &str = "NotDeleting";
    pub(super) const DELETING: &str = "Deleting";
    pub(super) const NOT_UPDATING: &str = "NotUpdating";
    pub(super) const UP_TO_DATE: &str = "UpToDate";
    pub(super) const NOT_UP_TO_DATE: &str = "NotUpToDate";
    pub(super) const AVAILABLE: &str = "Available";
    pub(super) const WAITING_FOR_MIN_READY_SECONDS: &str = "WaitingForMinReadySeconds";
}

/// Recomputes the conditions, `phase` and `lastUpdated` of `status` for the Machine `data` (its
/// spec as this reconcile leaves it); `status` already carries this reconcile's `initialization`
/// and `nodeRef`. Returns when to look again for `Available` (minReadySeconds still running).
pub(crate) fn update(
    status: &mut Value,
    data: &Value,
    generation: Option<i64>,
    inputs: &Inputs<'_>,
) -> Option<Duration> {
    let deleting = inputs.deleting.is_some();
    let set = |status: &mut Value, c: Condition| conditions::set(status, &c, generation);

    let bootstrap = bootstrap_ready(status, inputs.bootstrap, deleting);
    set(status, bootstrap);
    let infrastructure = infrastructure_ready(status, inputs.infrastructure, deleting);
    set(status, infrastructure);
    for c in node_conditions(status, data, inputs.node, deleting) {
        set(status, c);
    }
    let deleting_condition = match &inputs.deleting {
        None => Condition::new("Deleting", Status::False, reason::NOT_DELETING, ""),
        Some((reason, message)) => Condition::new("Deleting", Status::True, reason, message.clone()),
    };
    set(status, deleting_condition);
    set(
        status,
        Condition::new("Updating", Status::False, reason::NOT_UPDATING, ""),
    );
    if let Some((current, desired)) = inputs.templates {
        set(status, up_to_date(current, desired));
    }
    let ready = ready(status, data, deleting);
    set(status, ready);
    let (available, wait) = available(status, data);
    set(status, available);
    set_phase(status, data, deleting);
    wait
}

fn fallback_reason(ok: bool) -> &'static str {
    if ok { reason::READY } else { reason::NOT_READY }
}

fn with_ready_reason(mut c: Condition) -> Condition {
    if c.reason == conditions::NO_REASON_REPORTED && c.status == Status::True {
        c.reason = reason::READY.to_string();
    }
    c
}

fn bootstrap_ready(status: &Value, config: External<'_>, deleting: bool) -> Condition {
    const TYPE: &str = "BootstrapConfigReady";
    let created = bool_at(status, "initialization.bootstrapDataSecretCreated");
    match config {
        External::NotReferenced => Condition::new(TYPE, Status::True, reason::DATA_SECRET_PROVIDED, ""),
        External::Found(kind, object) => {
            let message = if created {
                String::new()
            } else {
                format!("{kind} status.initialization.dataSecretCreated is false")
            };
            with_ready_reason(conditions::mirror(
                object.get("status").unwrap_or(&Value::Null),
                "Ready",
                TYPE,
                (Status::from_bool(created), fallback_reason(created), message),
            ))
        }
        External::Missing(kind) if deleting && created => Condition::new(
            TYPE,
            Status::False,
            reason::DELETED,
            format!("{kind} has been deleted"),
        ),
        External::Missing(kind) => Condition::new(
            TYPE,
            Status::False,
            reason::DOES_NOT_EXIST,
            format!("{kind} does not exist"),
        ),
    }
}

fn infrastructure_ready(status: &Value, infra: External<'_>, deleting: bool) -> Condition {
    const TYPE: &str = "InfrastructureReady";
    let provisioned = bool_at(status, "initialization.infrastructureProvisioned");
    match infra {
        External::Found(kind, object) => {
            let message = if provisioned {
                String::new()
            } else {
                format!("{kind} status.initialization.provisioned is false")
            };
            with_ready_reason(conditions::mirror(
                object.get("status").unwrap_or(&Value::Null),
                "Ready",
                TYPE,
                (
                    Status::from_bool(provisioned),
                    fallback_reason(provisioned),
                    message,
                ),
            ))
        }
        External::Missing(kind) => {
            let (reason, message) = match (deleting, provisioned) {
                (true, true) => (reason::DELETED, format!("{kind} has been deleted")),
                (false, true) => (
                    reason::DELETED,
                    format!("{kind} has been deleted while the Machine still exists"),
                ),
                (_, false) => (reason::DOES_NOT_EXIST, format!("{kind} does not exist")),
            };
            Condition::new(TYPE, Status::False, reason, message)
        }
        External::NotReferenced => Condition::new(
            TYPE,
            Status::False,
            reason::DOES_NOT_EXIST,
            "spec.infrastructureRef is not set",
        ),
    }
}

/// `NodeReady` and `NodeHealthy`.
fn node_conditions(status: &Value, data: &Value, node: NodeView<'_>, deleting: bool) -> Vec<Condition> {
    let both = |s: Status, reason: &str, message: String| {
        vec![
            Condition::new("NodeReady", s, reason, message.clone()),
            Condition::new("NodeHealthy", s, reason, message),
        ]
    };
    let node_ref = str_at(status, "nodeRef.name");
    match node {
        NodeView::ClusterNotProvisioned => both(
            Status::Unknown,
            reason::INSPECTION_FAILED,
            "Waiting for Cluster status.initialization.infrastructureProvisioned to be true".into(),
        ),
        NodeView::ControlPlaneNotInitialized => both(
            Status::Unknown,
            reason::INSPECTION_FAILED,
            "Waiting for Cluster control plane to be initialized".into(),
        ),
        NodeView::NotConnected => {
            // Core keeps the last known Node conditions while the connection is only down.
            let known = conditions::get(status, "NodeReady").zip(conditions::get(status, "NodeHealthy"));
            match known {
                Some((ready, healthy)) => vec![ready, healthy],
                None => both(
                    Status::Unknown,
                    reason::CONNECTION_DOWN,
                    "Remote connection not established yet".into(),
                ),
            }
        }
        NodeView::Found(node_conditions) => {
            let ready = node_conditions.iter().find(|c| c.type_ == "Ready");
            let node_ready = match ready {
                Some(c) => {
                    let (s, reason) = match c.status.as_str() {
                        "True" => (Status::True, reason::NODE_READY),
                        "False" => (Status::False, reason::NODE_NOT_READY),
                        _ => (Status::Unknown, reason::NODE_READY_UNKNOWN),
                    };
                    let message = if s != Status::True && !c.message.is_empty() {
                        format!("* Node.Ready: {}", c.message)
                    } else {
                        String::new()
                    };
                    Condition::new("NodeReady", s, reason, message)
                }
                None => Condition::new(
                    "NodeReady",
                    Status::Unknown,
                    reason::NODE_READY_UNKNOWN,
                    "* Node.Ready: Condition not yet reported",
                ),
            };
            vec![node_ready, node_healthy(node_conditions)]
        }
        NodeView::Missing => {
            if deleting {
                match node_ref {
                    Some(name) => both(
                        Status::False,
                        reason::NODE_DELETED,
                        format!("Node {name} has been deleted"),
                    ),
                    None => both(
                        Status::Unknown,
                        reason::NODE_DOES_NOT_EXIST,
                        "Node does not exist".into(),
                    ),
                }
            } else if let Some(name) = node_ref {
                both(
                    Status::False,
                    reason::NODE_DELETED,
                    format!("Node {name} has been deleted while the Machine still exists"),
                )
            } else if let Some(provider_id) = str_at(data, "spec.providerID") {
                both(
                    Status::Unknown,
                    reason::INSPECTION_FAILED,
                    format!("Waiting for a Node with spec.providerID {provider_id} to exist"),
                )
            } else {
                let kind = str_at(data, "spec.infrastructureRef.kind").unwrap_or("InfrastructureMachine");
                both(
                    Status::Unknown,
                    reason::INSPECTION_FAILED,
                    format!("Waiting for {kind} to report spec.providerID"),
                )
            }
        }
    }
}

/// Core's summary of a Node's Ready and pressure conditions.
fn node_healthy(node_conditions: &[NodeCondition]) -> Condition {
    let (mut issues, mut unknowns, mut counted) = (0, 0, 0);
    let mut distinct: Vec<String> = Vec::new();
    let mut lines = Vec::new();
    for type_ in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        let Some(c) = node_conditions.iter().rev().find(|c| c.type_ == type_) else {
            lines.push(format!("* Node.{type_}: Condition not yet reported"));
            unknowns += 1;
            continue;
        };
        let healthy = if type_ == "Ready" { "True" } else { "False" };
        if c.status == healthy {
            continue;
        }
        let message = if c.message.is_empty() {
            format!("Condition is {}", c.status)
        } else {
            c.message.clone()
        };
        counted += 1;
        if !distinct.contains(&message) {
            distinct.push(message.clone());
        }
        lines.push(format!("* Node.{type_}: {message}"));
        if c.status == "Unknown" {
            unknowns += 1;
        } else {
            issues += 1;
        }
    }
    if counted > 1 && distinct.len() == 1 {
        lines = vec![format!("* Node.AllConditions: {}", distinct[0])];
    }
    if issues > 0 {
        Condition::new(
            "NodeHealthy",
            Status::False,
            reason::NODE_NOT_HEALTHY,
            lines.join("\n"),
        )
    } else if unknowns > 0 {
        Condition::new(
            "NodeHealthy",
            Status::Unknown,
            reason::NODE_HEALTH_UNKNOWN,
            lines.join("\n"),
        )
    } else {
        Condition::new("NodeHealthy", Status::True, reason::NODE_HEALTHY, "")
    }
}

/// `UpToDate`: the rollout fields of the MachineSet's template against the MachineDeployment's.
fn up_to_date(current: &Value, desired: &Value) -> Condition {
    let mut messages = Vec::new();
    let version = |t: &Value| str_at(t, "spec.version").unwrap_or("nil").to_string();
    if version(current) != version(desired) {
        messages.push(format!(
            "Version {}, {} required",
            version(current),
            version(desired)
        ));
    }
    let reference = |t: &Value, path: &str| ContractRef::at(t, path);
    if reference(current, "spec.infrastructureRef") != reference(desired, "spec.infrastructureRef") {
        let kind = str_at(desired, "spec.infrastructureRef.kind").unwrap_or("InfrastructureMachine");
        messages.push(format!("{kind} is not up-to-date"));
    }
    let bootstrap = |t: &Value| at(t, "spec.bootstrap").cloned().unwrap_or(Value::Null);
    if bootstrap(current) != bootstrap(desired) {
        match str_at(desired, "spec.bootstrap.configRef.kind") {
            Some(kind) => messages.push(format!("{kind} is not up-to-date")),
            None => messages.push("spec.bootstrap.dataSecretName is not up-to-date".to_string()),
        }
    }
    let domain = |t: &Value| str_at(t, "spec.failureDomain").unwrap_or("").to_string();
    if domain(current) != domain(desired) {
        messages.push(format!(
            "Failure domain {}, {} required",
            domain(current),
            domain(desired)
        ));
    }
    if messages.is_empty() {
        Condition::new("UpToDate", Status::True, reason::UP_TO_DATE, "")
    } else {
        let lines: Vec<String> = messages.iter().map(|m| format!("* {m}")).collect();
        Condition::new(
            "UpToDate",
            Status::False,
            reason::NOT_UP_TO_DATE,
            lines.join("\n"),
        )
    }
}

/// The `Ready` summary.
fn ready(status: &Value, data: &Value, deleting: bool) -> Condition {
    let mut types: Vec<String> = [
        "Deleting",
        "Updating",
        "BootstrapConfigReady",
        "InfrastructureReady",
        "NodeHealthy",
        "HealthCheckSucceeded",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    let mut negative: Vec<String> = vec!["Deleting".into(), "Updating".into()];
    for gate in at(data, "spec.readinessGates")
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
    let mut overrides = Vec::new();
    if deleting {
        let stage = conditions::get(status, "Deleting")
            .map(|c| format!("Machine deletion in progress, stage: {}", c.reason))
            .unwrap_or_else(|| "Machine deletion in progress".to_string());
        overrides.push(Condition::new("Deleting", Status::True, reason::DELETING, stage));
    }
    // While deleting, provider objects and the Node going away is expected, not an issue.
    let priority = |c: &Condition| -> Priority {
        let gone = matches!(
            (c.type_.as_str(), c.reason.as_str()),
            (
                "BootstrapConfigReady" | "InfrastructureReady",
                reason::DELETED | reason::DOES_NOT_EXIST
            ) | ("NodeHealthy", reason::NODE_DELETED | reason::NODE_DOES_NOT_EXIST)
        );
        if deleting && gone {
            Priority::Info
        } else {
            conditions::default_priority(c, &negative)
        }
    };
    conditions::summary(
        &conditions::of_status(status),
        "Ready",
        &SummaryOptions {
            types: &types,
            negative: &negative,
            ignore_if_missing: &["HealthCheckSucceeded"],
            overrides,
            reasons: Reasons {
                issue: reason::NOT_READY,
                unknown: reason::READY_UNKNOWN,
                info: reason::READY,
            },
            priority: Some(&priority),
        },
    )
}

/// `Available`: `Ready` for at least `spec.minReadySeconds`.
fn available(status: &Value, data: &Value) -> (Condition, Option<Duration>) {
    let ready = conditions::get(status, "Ready");
    let Some(ready) = ready.filter(|c| c.status == Status::True) else {
        return (
            Condition::new("Available", Status::False, reason::NOT_READY, ""),
            None,
        );
    };
    let min_ready =
        Duration::from_secs(util::i64_at(data, "spec.minReadySeconds").unwrap_or(0).max(0) as u64);
    let since = ready
        .last_transition
        .parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| Duration::try_from(jiff::Timestamp::now().duration_since(t)).ok())
        .unwrap_or(Duration::MAX);
    if since >= min_ready {
        (
            Condition::new("Available", Status::True, reason::AVAILABLE, ""),
            None,
        )
    } else {
        (
            Condition::new(
                "Available",
                Status::False,
                reason::WAITING_FOR_MIN_READY_SECONDS,
                "",
            ),
            Some(min_ready - since),
        )
    }
}

/// `phase` (Pending, Provisioning, Provisioned, Running, Deleting) and `lastUpdated` when it changes.
fn set_phase(status: &mut Value, data: &Value, deleting: bool) {
    let before = str_at(status, "phase").map(str::to_string);
    let bootstrapped = bool_at(status, "initialization.bootstrapDataSecretCreated");
    let provisioned = bool_at(status, "initialization.infrastructureProvisioned");
    let mut phase = before.clone().unwrap_or_else(|| "Pending".to_string());
    if bootstrapped && !provisioned {
        phase = "Provisioning".into();
    }
    if str_at(data, "spec.providerID").is_some() {
        phase = "Provisioned".into();
    }
    if str_at(status, "nodeRef.name").is_some() && provisioned {
        phase = "Running".into();
    }
    if deleting {
        phase = "Deleting".into();
    }
    if before.as_deref() != Some(phase.as_str()) {
        status["lastUpdated"] = json!(util::now());
    }
    status["phase"] = json!(phase);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(conditions: &[(&str, &str)]) -> Vec<NodeCondition> {
        conditions
            .iter()
            .map(|(t, s)| NodeCondition {
                type_: t.to_string(),
                status: s.to_string(),
                message: String::new(),
            })
            .collect()
    }

    fn healthy_node() -> Vec<NodeCondition> {
        node(&[
            ("Ready", "True"),
            ("MemoryPressure", "False"),
            ("DiskPressure", "False"),
            ("PIDPressure", "False"),
        ])
    }

    fn machine() -> Value {
        json!({"spec": {"clusterName": "c", "providerID": "aws:///a/i-1",
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroMachine", "name": "m"},
            "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeZeroConfig", "name": "m"}}}})
    }

    #[test]
    fn a_machine_with_a_healthy_node_is_ready_and_available() {
        let data = machine();
        let config = json!({"status": {"initialization": {"dataSecretCreated": true}}});
        let infra =
            json!({"status": {"conditions": [conditions::json_condition("Ready", "True", "", "", "")]}});
        let node = healthy_node();
        let mut status = json!({"initialization": {"bootstrapDataSecretCreated": true, "infrastructureProvisioned": true},
            "nodeRef": {"name": "n"}});
        let wait = update(
            &mut status,
            &data,
            Some(1),
            &Inputs {
                bootstrap: External::Found("KubeZeroConfig", &config),
                infrastructure: External::Found("KubeZeroMachine", &infra),
                node: NodeView::Found(&node),
                templates: None,
                deleting: None,
            },
        );
        assert_eq!(wait, None);
        for type_ in [
            "BootstrapConfigReady",
            "InfrastructureReady",
            "NodeReady",
            "NodeHealthy",
            "Ready",
            "Available",
        ] {
            assert!(conditions::is_true(&status, type_), "{type_}: {status}");
        }
        assert_eq!(
            conditions::get(&status, "InfrastructureReady").unwrap().reason,
            "Ready"
        );
        assert_eq!(status["phase"], "Running");
    }

    #[test]
    fn a_waiting_machine_says_what_it_waits_for_in_ready() {
        let mut data = machine();
        data["spec"]["providerID"] = Value::Null;
        let config = json!({});
        let infra = json!({});
        let mut status = json!({});
        update(
            &mut status,
            &data,
            None,
            &Inputs {
                bootstrap: External::Found("KubeZeroConfig", &config),
                infrastructure: External::Found("KubeZeroMachine", &infra),
                node: NodeView::Missing,
                templates: None,
                deleting: None,
            },
        );
        let ready = conditions::get(&status, "Ready").unwrap();
        assert_eq!((ready.status, ready.reason.as_str()), (Status::False, "NotReady"));
        assert_eq!(
            ready.message,
            "* BootstrapConfigReady: KubeZeroConfig status.initialization.dataSecretCreated is false\n\
             * InfrastructureReady: KubeZeroMachine status.initialization.provisioned is false\n\
             * NodeHealthy: Waiting for KubeZeroMachine to report spec.providerID"
        );
        assert_eq!(status["phase"], "Pending");
        assert!(status.get("lastUpdated").is_some());
    }

    #[test]
    fn node_health_summarizes_missing_and_bad_pressure_conditions() {
        let only_ready = node(&[("Ready", "True")]);
        let c = node_healthy(&only_ready);
        assert_eq!(c.status, Status::Unknown);
        assert!(
            c.message
                .contains("* Node.MemoryPressure: Condition not yet reported"),
            "{}",
            c.message
        );
        let mut pressured = healthy_node();
        pressured[1].status = "True".into();
        pressured[2].status = "True".into();
        let c = node_healthy(&pressured);
        assert_eq!(
            (c.status, c.message.as_str()),
            (Status::False, "* Node.AllConditions: Condition is True")
        );
        assert_eq!(node_healthy(&healthy_node()).status, Status::True);
    }

    #[test]
    fn up_to_date_compares_the_rollout_fields_of_the_templates() {
        let template = |infra: &str, version: &str| {
            json!({"metadata": {"labels": {"a": infra}}, "spec": {"version": version,
                "infrastructureRef": {"apiGroup": "g", "kind": "KubeZeroMachineTemplate", "name": infra}}})
        };
        assert_eq!(
            up_to_date(&template("a", "v1"), &template("a", "v1")).status,
            Status::True
        );
        let c = up_to_date(&template("a", "v1"), &template("b", "v2"));
        assert_eq!(c.status, Status::False);
        assert_eq!(
            c.message,
            "* Version v1, v2 required\n* KubeZeroMachineTemplate is not up-to-date"
        );
    }

    #[test]
    fn a_deleting_machine_reports_its_stage_and_not_its_missing_objects() {
        let data = machine();
        let mut status = json!({"initialization": {"bootstrapDataSecretCreated": true, "infrastructureProvisioned": true}});
        let config = json!({});
        update(
            &mut status,
            &data,
            None,
            &Inputs {
                bootstrap: External::Found("KubeZeroConfig", &config),
                infrastructure: External::Missing("KubeZeroMachine"),
                node: NodeView::Missing,
                templates: None,
                deleting: Some((
                    "WaitingForBootstrapDeletion",
                    "Waiting for KubeZeroConfig to be deleted".into(),
                )),
            },
        );
        let ready = conditions::get(&status, "Ready").unwrap();
        assert_eq!(ready.status, Status::False);
        assert_eq!(
            ready.message,
            "* Deleting: Machine deletion in progress, stage: WaitingForBootstrapDeletion"
        );
        assert_eq!(status["phase"], "Deleting");
    }
}
