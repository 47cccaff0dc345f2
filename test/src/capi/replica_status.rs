//! MachineSet and MachineDeployment v1beta2 status as core writes them ([CAPI]
//! `core/reconcilers/machineset/machineset_controller_status.go`,
//! `core/reconcilers/machinedeployment/machinedeployment_status.go`): replica counters from the
//! Machines' `Ready`, `Available` and `UpToDate` conditions (MachineSet) or the MachineSets'
//! counters (MachineDeployment), and the conditions `ScalingUp`, `ScalingDown`, `MachinesReady`,
//! `MachinesUpToDate`, `Remediating`, `Deleting` (both), `Available` and `RollingOut`
//! (MachineDeployment), with core's reasons and messages (`Scaling up from 0 to 3 replicas`,
//! `2 available replicas, at least 3 required ...`). Pure.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::CONTROL_PLANE_LABEL;
use super::conditions::{self, Condition, Owned, Reasons, Status};
use super::util::{at, i64_at, is_deleting, str_at};

/// A Machine younger than this without an `UpToDate` condition is left out of `MachinesUpToDate`
/// (its owner has not had the time to set it).
const UP_TO_DATE_GRACE: Duration = Duration::from_secs(10);

/// Machines deleting for longer than this are named in `ScalingDown` and `Deleting`.
const STALE_DELETION: Duration = Duration::from_secs(15 * 60);

/// Counts the Machines whose condition `type_` is `True`.
pub(crate) fn count_true(machines: &[Arc<DynamicObject>], type_: &str) -> i64 {
    machines
        .iter()
        .filter(|m| conditions::is_true(m.data.get("status").unwrap_or(&Value::Null), type_))
        .count() as i64
}

/// `a, b, c, ... (N more)` with at most `max` names, sorted.
pub(crate) fn list_names(mut names: Vec<String>, max: usize) -> String {
    names.sort();
    if names.len() <= max {
        return names.join(", ");
    }
    format!("{}, ... ({} more)", names[..max].join(", "), names.len() - max)
}

/// The Machines of `machines`, as aggregation sources of condition `type_`.
pub(crate) fn owned(machines: &[Arc<DynamicObject>], type_: &str) -> Vec<Owned> {
    machines
        .iter()
        .map(|m| {
            let control_plane = m.labels().contains_key(CONTROL_PLANE_LABEL);
            Owned::of("Machine", &m.name_any(), control_plane, &m.data, type_)
        })
        .collect()
}

/// Machines that have `UpToDate` or are older than [`UP_TO_DATE_GRACE`].
pub(crate) fn up_to_date_candidates(machines: &[Arc<DynamicObject>]) -> Vec<Arc<DynamicObject>> {
    machines
        .iter()
        .filter(|m| {
            conditions::get(m.data.get("status").unwrap_or(&Value::Null), "UpToDate").is_some()
                || age(m) > UP_TO_DATE_GRACE
        })
        .cloned()
        .collect()
}

fn age(obj: &DynamicObject) -> Duration {
    obj.metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| Duration::try_from(jiff::Timestamp::now().duration_since(t.0)).ok())
        .unwrap_or_default()
}

/// `MachinesReady`-style aggregate of the Machines' `source` into `target`; `NoReplicas` without
/// Machines.
pub(crate) fn machines_condition(
    machines: &[Arc<DynamicObject>],
    source: &str,
    target: &str,
    reasons: Reasons,
) -> Condition {
    if machines.is_empty() {
        return Condition::new(target, Status::True, "NoReplicas", "");
    }
    conditions::aggregate(&owned(machines, source), source, target, false, reasons)
}

/// Reasons of aggregated `Ready` conditions.
pub(crate) const READY_REASONS: Reasons = Reasons {
    issue: "NotReady",
    unknown: "ReadyUnknown",
    info: "Ready",
};
/// Reasons of aggregated `UpToDate` conditions.
pub(crate) const UP_TO_DATE_REASONS: Reasons = Reasons {
    issue: "NotUpToDate",
    unknown: "UpToDateUnknown",
    info: "UpToDate",
};

/// `Machine a is` / `Machines a, b are` in deletion since more than 15m, or nothing.
fn stale_machines(machines: &[Arc<DynamicObject>]) -> Option<String> {
    let stale: Vec<String> = machines
        .iter()
        .filter(|m| {
            m.metadata
                .deletion_timestamp
                .as_ref()
                .and_then(|t| Duration::try_from(jiff::Timestamp::now().duration_since(t.0)).ok())
                .is_some_and(|d| d > STALE_DELETION)
        })
        .map(|m| m.name_any())
        .collect();
    match stale.len() {
        0 => None,
        1 => Some(format!("Machine {} is in deletion since more than 15m", stale[0])),
        _ => Some(format!(
            "Machines {} are in deletion since more than 15m",
            list_names(stale, 3)
        )),
    }
}

/// `because X does not exist` / `because X and Y do not exist` for missing templates.
fn missing_message(missing: &[String]) -> Option<String> {
    match missing {
        [] => None,
        [one] => Some(format!("{one} does not exist")),
        many => Some(format!("{} do not exist", many.join(" and "))),
    }
}

fn scaling_up(
    current: i64,
    desired: i64,
    deleting: bool,
    missing: &[String],
    blocked_list: bool,
) -> Condition {
    let missing = missing_message(missing);
    if current >= desired {
        let message = match (&missing, deleting) {
            (Some(m), false) => format!("Scaling up would be blocked because {m}"),
            _ => String::new(),
        };
        return Condition::new("ScalingUp", Status::False, "NotScalingUp", message);
    }
    let mut message = format!("Scaling up from {current} to {desired} replicas");
    if let Some(m) = missing {
        if blocked_list {
            message.push_str(&format!(" is blocked because:\n* {m}"));
        } else {
            message.push_str(&format!(" is blocked because {m}"));
        }
    }
    Condition::new("ScalingUp", Status::True, "ScalingUp", message)
}

fn scaling_down(current: i64, desired: i64, machines: &[Arc<DynamicObject>]) -> Condition {
    if current > desired {
        let mut message = format!("Scaling down from {current} to {desired} replicas");
        if let Some(stale) = stale_machines(machines) {
            message.push_str(&format!("\n* {stale}"));
        }
        return Condition::new("ScalingDown", Status::True, "ScalingDown", message);
    }
    Condition::new("ScalingDown", Status::False, "NotScalingDown", "")
}

fn deleting_condition(deleting: bool, machines: &[Arc<DynamicObject>], machinesets: usize) -> Condition {
    if !deleting {
        return Condition::new("Deleting", Status::False, "NotDeleting", "");
    }
    let mut message = match machines.len() {
        0 if machinesets > 0 => format!("Deleting {machinesets} MachineSets"),
        0 => String::new(),
        1 => "Deleting 1 Machine".to_string(),
        n => format!("Deleting {n} Machines"),
    };
    if let Some(stale) = stale_machines(machines) {
        message.push_str(&format!("\n* {stale}"));
    }
    if message.is_empty() {
        message = "Deletion completed".to_string();
    }
    Condition::new("Deleting", Status::True, "Deleting", message)
}

/// What [`update_machineset`] needs besides the MachineSet.
pub(crate) struct SetInputs<'a> {
    /// The Machines the MachineSet owns (as counted for scaling).
    pub(crate) machines: &'a [Arc<DynamicObject>],
    /// Kinds of the templates of `spec.template` that do not exist.
    pub(crate) missing_templates: &'a [String],
}

/// Recomputes a MachineSet's status (`ms` its data, `status` the status to write).
pub(crate) fn update_machineset(
    status: &mut Value,
    ms: &DynamicObject,
    selector: &str,
    inputs: &SetInputs<'_>,
) {
    let generation = ms.metadata.generation;
    let machines = inputs.machines;
    let deleting = is_deleting(ms);
    status["selector"] = json!(selector);
    status["replicas"] = json!(machines.len());
    status["readyReplicas"] = json!(count_true(machines, "Ready"));
    status["availableReplicas"] = json!(count_true(machines, "Available"));
    status["upToDateReplicas"] = json!(count_true(machines, "UpToDate"));
    let set = |status: &mut Value, c: Condition| conditions::set(status, &c, generation);
    let current = machines.len() as i64;
    match i64_at(&ms.data, "spec.replicas") {
        Some(replicas) => {
            let desired = if deleting { 0 } else { replicas };
            set(
                status,
                scaling_up(current, desired, deleting, inputs.missing_templates, true),
            );
            set(status, scaling_down(current, desired, machines));
        }
        None => {
            for type_ in ["ScalingUp", "ScalingDown"] {
                let reason = format!("{type_}WaitingForReplicasSet");
                set(
                    status,
                    Condition::new(type_, Status::Unknown, &reason, "Waiting for spec.replicas set"),
                );
            }
        }
    }
    set(
        status,
        machines_condition(machines, "Ready", "MachinesReady", READY_REASONS),
    );
    set(
        status,
        machines_condition(
            &up_to_date_candidates(machines),
            "UpToDate",
            "MachinesUpToDate",
            UP_TO_DATE_REASONS,
        ),
    );
    set(
        status,
        Condition::new("Remediating", Status::False, "NotRemediating", ""),
    );
    set(status, deleting_condition(deleting, machines, 0));
    if let Some(generation) = generation {
        status["observedGeneration"] = json!(generation);
    }
}

/// What [`update_machinedeployment`] needs besides the MachineDeployment.
pub(crate) struct DeploymentInputs<'a> {
    /// The MachineSets it controls.
    pub(crate) machinesets: &'a [DynamicObject],
    /// The Machines it selects.
    pub(crate) machines: &'a [Arc<DynamicObject>],
    /// Kinds of the templates of `spec.template` that do not exist.
    pub(crate) missing_templates: &'a [String],
}

/// The resolved `spec.rollout.strategy.rollingUpdate.maxUnavailable` (0 unless RollingUpdate;
/// percentages of `replicas` round down) and its spelling.
fn max_unavailable(md: &Value, replicas: i64) -> (i64, String, bool) {
    let strategy = str_at(md, "spec.rollout.strategy.type").unwrap_or("RollingUpdate");
    if strategy != "RollingUpdate" {
        return (0, "0".into(), false);
    }
    let raw = at(md, "spec.rollout.strategy.rollingUpdate.maxUnavailable")
        .cloned()
        .unwrap_or(json!(0));
    let (value, text) = match &raw {
        Value::Number(n) => (n.as_i64().unwrap_or(0), n.to_string()),
        Value::String(s) => {
            let percent = s.trim_end_matches('%').parse::<i64>().unwrap_or(0);
            (replicas * percent / 100, s.clone())
        }
        _ => (0, "0".into()),
    };
    (value.clamp(0, replicas.max(0)), text, true)
}

/// Recomputes a MachineDeployment's status.
pub(crate) fn update_machinedeployment(
    status: &mut Value,
    md: &DynamicObject,
    selector: &str,
    inputs: &DeploymentInputs<'_>,
) {
    let generation = md.metadata.generation;
    let deleting = is_deleting(md);
    let sum = |path: &str| -> i64 {
        inputs
            .machinesets
            .iter()
            .filter_map(|ms| i64_at(&ms.data, path))
            .sum()
    };
    let current = sum("status.replicas");
    let available = sum("status.availableReplicas");
    status["selector"] = json!(selector);
    status["replicas"] = json!(current);
    status["readyReplicas"] = json!(sum("status.readyReplicas"));
    status["availableReplicas"] = json!(available);
    status["upToDateReplicas"] = json!(sum("status.upToDateReplicas"));
    let spec_replicas = i64_at(&md.data, "spec.replicas");
    status["phase"] = json!(match spec_replicas {
        None => "Unknown",
        Some(_) if deleting => "ScalingDown",
        Some(desired) => match desired.cmp(&current) {
            std::cmp::Ordering::Equal => "Running",
            std::cmp::Ordering::Less => "ScalingDown",
            std::cmp::Ordering::Greater => "ScalingUp",
        },
    });
    let set = |status: &mut Value, c: Condition| conditions::set(status, &c, generation);
    match spec_replicas {
        None => {
            for type_ in ["Available", "ScalingUp", "ScalingDown"] {
                let reason = format!("{type_}WaitingForReplicasSet");
                set(
                    status,
                    Condition::new(type_, Status::Unknown, &reason, "Waiting for spec.replicas set"),
                );
            }
        }
        Some(replicas) => {
            let (unavailable, spelled, rolling) = max_unavailable(&md.data, replicas);
            let needed = replicas - unavailable;
            let condition = if available >= needed {
                Condition::new("Available", Status::True, "Available", "")
            } else {
                let mut message = format!("{available} available replicas, at least {needed} required");
                if rolling {
                    message.push_str(&format!(
                        " (spec.strategy.rollout.maxUnavailable is {spelled}, spec.replicas is {replicas})"
                    ));
                }
                if deleting {
                    message = "Deletion in progress".to_string();
                }
                Condition::new("Available", Status::False, "NotAvailable", message)
            };
            set(status, condition);
            let desired = if deleting { 0 } else { replicas };
            set(
                status,
                scaling_up(current, desired, deleting, inputs.missing_templates, false),
            );
            set(status, scaling_down(current, desired, inputs.machines));
        }
    }
    set(status, rolling_out(inputs.machines));
    set(
        status,
        machines_condition(inputs.machines, "Ready", "MachinesReady", READY_REASONS),
    );
    set(
        status,
        machines_condition(
            &up_to_date_candidates(inputs.machines),
            "UpToDate",
            "MachinesUpToDate",
            UP_TO_DATE_REASONS,
        ),
    );
    set(
        status,
        Condition::new("Remediating", Status::False, "NotRemediating", ""),
    );
    set(
        status,
        deleting_condition(deleting, inputs.machines, inputs.machinesets.len()),
    );
    if let Some(generation) = generation {
        status["observedGeneration"] = json!(generation);
    }
}

/// `RollingOut`: the Machines whose `UpToDate` is `False`, with the reasons they give (a version
/// change first).
fn rolling_out(machines: &[Arc<DynamicObject>]) -> Condition {
    let mut count = 0;
    let mut reasons: BTreeSet<String> = BTreeSet::new();
    for machine in machines {
        let Some(c) = conditions::get(machine.data.get("status").unwrap_or(&Value::Null), "UpToDate") else {
            continue;
        };
        if c.status != Status::False {
            continue;
        }
        count += 1;
        reasons.extend(
            c.message
                .split('\n')
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    if count == 0 {
        return Condition::new("RollingOut", Status::False, "NotRollingOut", "");
    }
    let mut sorted: Vec<String> = reasons.into_iter().collect();
    sorted.sort_by_key(|r| !r.starts_with("* Version"));
    let mut message = format!("Rolling out {count} not up-to-date replicas");
    if !sorted.is_empty() {
        message.push('\n');
        message.push_str(&sorted.join("\n"));
    }
    Condition::new("RollingOut", Status::True, "RollingOut", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(name: &str, ready: bool) -> Arc<DynamicObject> {
        let status = if ready { "True" } else { "False" };
        let message = if ready {
            ""
        } else {
            "* NodeHealthy: Waiting for a Node"
        };
        Arc::new(
            serde_json::from_value(
                json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
                "status": {"conditions": [
                    conditions::json_condition("Ready", status, "R", message, "2026-01-01T00:00:00Z"),
                    conditions::json_condition("Available", status, "A", "", "2026-01-01T00:00:00Z"),
                    conditions::json_condition("UpToDate", "True", "UpToDate", "", "2026-01-01T00:00:00Z"),
                ]}}),
            )
            .unwrap(),
        )
    }

    fn object(kind: &str, spec: Value) -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": kind,
            "metadata": {"name": "w", "generation": 2}, "spec": spec}))
        .unwrap()
    }

    #[test]
    fn machineset_counts_ready_machines_and_reports_scaling_up() {
        let machines = vec![machine("w-a", true), machine("w-b", false)];
        let ms = object("MachineSet", json!({"replicas": 3}));
        let mut status = json!({});
        update_machineset(
            &mut status,
            &ms,
            "a=b",
            &SetInputs {
                machines: &machines,
                missing_templates: &[],
            },
        );
        assert_eq!(status["replicas"], 2);
        assert_eq!(status["readyReplicas"], 1);
        assert_eq!(status["upToDateReplicas"], 2);
        let up = conditions::get(&status, "ScalingUp").unwrap();
        assert_eq!(
            (up.status, up.message.as_str()),
            (Status::True, "Scaling up from 2 to 3 replicas")
        );
        let ready = conditions::get(&status, "MachinesReady").unwrap();
        assert_eq!(ready.status, Status::False);
        assert_eq!(
            ready.message,
            "* Machine w-b:\n  * NodeHealthy: Waiting for a Node"
        );
        assert_eq!(status["observedGeneration"], 2);
    }

    #[test]
    fn machinedeployment_is_available_once_enough_replicas_are() {
        let ms: DynamicObject = serde_json::from_value(json!({"apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "MachineSet", "metadata": {"name": "w-1"},
            "status": {"replicas": 3, "readyReplicas": 2, "availableReplicas": 2, "upToDateReplicas": 3}}))
        .unwrap();
        let md = object("MachineDeployment", json!({"replicas": 3}));
        let machines = vec![machine("w-a", true), machine("w-b", true), machine("w-c", false)];
        let mut status = json!({});
        update_machinedeployment(
            &mut status,
            &md,
            "",
            &DeploymentInputs {
                machinesets: std::slice::from_ref(&ms),
                machines: &machines,
                missing_templates: &[],
            },
        );
        let available = conditions::get(&status, "Available").unwrap();
        assert_eq!(available.status, Status::False);
        assert_eq!(
            available.message,
            "2 available replicas, at least 3 required (spec.strategy.rollout.maxUnavailable is 0, spec.replicas is 3)"
        );
        assert_eq!(status["phase"], "Running");
        assert_eq!(
            conditions::get(&status, "ScalingUp").unwrap().status,
            Status::False
        );
    }

    #[test]
    fn missing_templates_block_scaling_up() {
        let c = scaling_up(0, 2, false, &["KubeZeroMachineTemplate".to_string()], false);
        assert_eq!(
            c.message,
            "Scaling up from 0 to 2 replicas is blocked because KubeZeroMachineTemplate does not exist"
        );
    }

    #[test]
    fn names_are_listed_up_to_a_maximum() {
        let names = (0..5).map(|i| format!("m{i}")).collect();
        assert_eq!(list_names(names, 3), "m0, m1, m2, ... (2 more)");
    }
}
