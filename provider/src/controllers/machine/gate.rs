//! The gates of the KubeZeroMachine controller: from the fetched [`Scope`], whether the machine is
//! paused, being deleted, waiting for its owners ([`admit`]), for the Cluster's infrastructure or
//! for its bootstrap data ([`readiness`], [`user_data`]), or on a platform this build has no
//! backend for ([`backend_unavailable`]). Pure: each answers the `Ready` condition to report.

use std::time::Duration;

use kube::ResourceExt;
use kubezero_capi::conditions::Observed;
use kubezero_capi::contract::{BLOCK_MOVE_ANNOTATION, READY_CONDITION};
use kubezero_capi::core::{Cluster, Machine};
use kubezero_capi::pause::pause_reason;

use super::backend::{Observation, previous_status};
use super::scope::Scope;
use crate::api::{KubeZeroCluster, KubeZeroMachine};
use crate::controllers::{Platform, reasons};

/// How soon to look again while waiting for the Cluster's infrastructure or bootstrap data (the
/// Machine and Cluster watches usually trigger sooner).
pub const WAIT_REQUEUE: Duration = Duration::from_secs(30);
/// How soon to look again while the owner Machine or its Cluster is missing.
pub const OWNER_REQUEUE: Duration = Duration::from_secs(60);
/// How soon to look again at a machine that cannot be provisioned as it is (platform mismatch,
/// no backend).
pub const UNSUPPORTED_REQUEUE: Duration = Duration::from_secs(300);
/// How soon to look again while the bootstrap data Secret has no value.
pub const BOOTSTRAP_REQUEUE: Duration = Duration::from_secs(10);

/// Why a machine waits: the `Ready` condition to report and when to look again.
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    /// The `Ready` condition.
    pub ready: Observed,
    /// When to reconcile again.
    pub requeue: Duration,
}

impl Waiting {
    /// The observation of `machine` while it waits: its status fields as last written.
    pub fn into_observation(self, machine: &KubeZeroMachine) -> Observation {
        Observation {
            ready: self.ready,
            status: previous_status(machine),
            requeue: self.requeue,
        }
    }
}

/// What the first gate decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Gate {
    /// Reconciliation is paused, for this reason (only the `Paused` condition is written).
    Paused(String),
    /// The machine is being deleted (even when its owners are gone).
    Deleting,
    /// The owner Machine or its Cluster is missing: report this `Ready` condition and wait.
    Waiting(Observed),
    /// The finalizer may be added and the machine provisioned.
    Admitted,
}

/// Pause first, then deletion, then the owner Machine and its Cluster. Pure.
pub fn admit(scope: &Scope) -> Gate {
    if let Some(reason) = pause_reason(scope.cluster.as_ref(), &scope.machine.metadata) {
        return Gate::Paused(reason);
    }
    if scope.machine.metadata.deletion_timestamp.is_some() {
        return Gate::Deleting;
    }
    match owners(scope) {
        Ok(_) => Gate::Admitted,
        Err(waiting) => Gate::Waiting(waiting),
    }
}

/// The owner Machine and its Cluster, or the wait for the first one missing.
fn owners(scope: &Scope) -> Result<(&Machine, &Cluster), Observed> {
    let (reason, message) = match (scope.owner.as_ref(), scope.cluster.as_ref()) {
        (Some(owner), Some(cluster)) => return Ok((owner, cluster)),
        (None, _) => (
            reasons::WAITING_FOR_OWNER,
            "waiting for Cluster API to set the owner Machine",
        ),
        (Some(_), None) => (
            reasons::WAITING_FOR_CLUSTER,
            "waiting for the Machine's Cluster to exist",
        ),
    };
    Err(Observed::false_(READY_CONDITION, reason, message))
}

/// Whether the machine is marked as launching (`clusterctl move` waits for the mark to go).
pub fn blocks_move(machine: &KubeZeroMachine) -> bool {
    machine.annotations().contains_key(BLOCK_MOVE_ANNOTATION)
}

/// A machine past every gate but the bootstrap data's value: the objects a backend provisions it
/// from, all present.
#[derive(Clone, Copy, Debug)]
pub struct Ready<'a> {
    /// The machine.
    pub machine: &'a KubeZeroMachine,
    /// Its namespace.
    pub namespace: &'a str,
    /// The owner Machine, with a bootstrap data Secret named.
    pub owner: &'a Machine,
    /// The Cluster, with its infrastructure provisioned.
    pub cluster: &'a Cluster,
    /// The KubeZeroCluster, on the machine's platform.
    pub infra_cluster: &'a KubeZeroCluster,
}

/// The machine ready to be provisioned, or why it cannot be yet (or on this platform): the
/// owners, the Cluster's infrastructure, the platform match and the bootstrap data Secret are
/// checked in that order. Pure.
pub fn readiness(scope: &Scope) -> Result<Ready<'_>, Waiting> {
    let machine = scope.machine.as_ref();
    let waiting = |ready: Observed| {
        let requeue = if ready.reason == reasons::PLATFORM_MISMATCH {
            UNSUPPORTED_REQUEUE
        } else {
            WAIT_REQUEUE
        };
        Waiting { ready, requeue }
    };
    let false_ = |reason, message: String| waiting(Observed::false_(READY_CONDITION, reason, message));
    let (owner, cluster) = owners(scope).map_err(waiting)?;
    let Some(infra_cluster) = scope.infra_cluster.as_ref() else {
        return Err(false_(
            reasons::WAITING_FOR_CLUSTER_INFRASTRUCTURE,
            format!(
                "waiting for the KubeZeroCluster of Cluster {}",
                cluster.name_any()
            ),
        ));
    };
    if infra_cluster.platform() != machine.platform() {
        return Err(false_(
            reasons::PLATFORM_MISMATCH,
            format!(
                "the machine uses spec.{} but KubeZeroCluster {} uses spec.{}",
                machine.platform().as_str(),
                infra_cluster.name_any(),
                infra_cluster.platform().as_str()
            ),
        ));
    }
    let aws_status_missing = machine.platform() == Platform::Aws
        && infra_cluster
            .status
            .as_ref()
            .and_then(|status| status.aws.as_ref())
            .is_none();
    if !cluster.infrastructure_provisioned() || aws_status_missing {
        return Err(false_(
            reasons::WAITING_FOR_CLUSTER_INFRASTRUCTURE,
            format!(
                "waiting for the infrastructure of Cluster {} to be provisioned",
                cluster.name_any()
            ),
        ));
    }
    if owner
        .spec
        .bootstrap
        .data_secret_name
        .as_deref()
        .is_none_or(str::is_empty)
    {
        return Err(false_(
            reasons::WAITING_FOR_BOOTSTRAP_DATA,
            format!(
                "waiting for the bootstrap data Secret of Machine {}",
                owner.name_any()
            ),
        ));
    }
    Ok(Ready {
        machine,
        namespace: &scope.namespace,
        owner,
        cluster,
        infra_cluster,
    })
}

/// The user data a launch of `ready` boots with, or the wait while its bootstrap data Secret holds
/// none (`bootstrap_data` as [`super::scope::bootstrap_data`] read it). Pure.
pub fn user_data(ready: &Ready<'_>, bootstrap_data: Option<Vec<u8>>) -> Result<Vec<u8>, Waiting> {
    bootstrap_data.ok_or_else(|| Waiting {
        ready: Observed::false_(
            READY_CONDITION,
            reasons::WAITING_FOR_BOOTSTRAP_DATA,
            format!(
                "waiting for the bootstrap data Secret of Machine {} to hold a value",
                ready.owner.name_any()
            ),
        ),
        requeue: BOOTSTRAP_REQUEUE,
    })
}

/// The condition reported while this build has no backend for `platform`.
pub fn backend_unavailable(platform: Platform) -> Observed {
    Observed::false_(
        READY_CONDITION,
        reasons::BACKEND_UNAVAILABLE,
        format!(
            "this build of kubezero-provider has no {} backend; the machine is not provisioned",
            platform.as_str()
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;

    fn machine(platform: &str) -> Value {
        let spec = match platform {
            "aws" => json!({"aws": {"instanceType": "m7g.large", "ami": {"id": "ami-0123456789abcdef0"}}}),
            _ => json!({"metal": {"hostSelector": {"matchLabels": {"rack": "r1"}}}}),
        };
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroMachine",
            "metadata": {"name": "demo-md-x1", "namespace": "default", "uid": "u-1"}, "spec": spec})
    }

    fn owner(data_secret_name: Option<&str>) -> Machine {
        serde_json::from_value(
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "demo-md-x1", "namespace": "default"},
            "spec": {"clusterName": "demo", "bootstrap": {"dataSecretName": data_secret_name}}}),
        )
        .unwrap()
    }

    fn cluster(paused: bool, provisioned: bool) -> Cluster {
        serde_json::from_value(
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "demo", "namespace": "default"},
            "spec": {"paused": paused},
            "status": {"initialization": {"infrastructureProvisioned": provisioned}}}),
        )
        .unwrap()
    }

    fn infra_cluster(platform: &str, aws_status: bool) -> KubeZeroCluster {
        let spec = match platform {
            "aws" => json!({"aws": {"region": "eu-central-1"}}),
            _ => json!({"metal": {"controlPlaneVip": "10.0.0.10"}}),
        };
        let mut object = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
            "kind": "KubeZeroCluster", "metadata": {"name": "demo", "namespace": "default"}, "spec": spec});
        if aws_status {
            object["status"] = json!({"aws": {"vpcId": "vpc-1"}});
        }
        serde_json::from_value(object).unwrap()
    }

    /// An AWS machine whose owners, Cluster infrastructure and bootstrap data Secret all exist.
    fn scope() -> Scope {
        Scope {
            machine: Arc::new(serde_json::from_value(machine("aws")).unwrap()),
            namespace: "default".into(),
            owner: Some(owner(Some("demo-md-x1"))),
            cluster: Some(cluster(false, true)),
            infra_cluster: Some(infra_cluster("aws", true)),
        }
    }

    fn with_machine(scope: Scope, edit: impl FnOnce(&mut Value)) -> Scope {
        let mut object = serde_json::to_value(scope.machine.as_ref()).unwrap();
        edit(&mut object);
        Scope {
            machine: Arc::new(serde_json::from_value(object).unwrap()),
            ..scope
        }
    }

    fn waiting_reason(scope: &Scope) -> (String, Duration) {
        let waiting = readiness(scope).expect_err("the machine waits");
        (waiting.ready.reason, waiting.requeue)
    }

    #[test]
    fn pause_comes_before_deletion_and_deletion_before_the_owners() {
        let deleting = with_machine(scope(), |machine| {
            machine["metadata"]["deletionTimestamp"] = json!("2026-11-22T00:00:00Z");
        });
        let paused = Scope {
            cluster: Some(cluster(true, true)),
            ..deleting.clone()
        };
        assert!(matches!(admit(&paused), Gate::Paused(_)));
        let orphaned = Scope {
            owner: None,
            cluster: None,
            ..deleting
        };
        assert_eq!(
            admit(&orphaned),
            Gate::Deleting,
            "cleaned up even when its owners are gone"
        );
        let annotated = with_machine(scope(), |machine| {
            machine["metadata"]["annotations"] = json!({"cluster.x-k8s.io/paused": ""});
        });
        assert!(matches!(admit(&annotated), Gate::Paused(_)));
        assert_eq!(admit(&scope()), Gate::Admitted);
    }

    #[test]
    fn a_missing_owner_or_cluster_is_waited_for() {
        let no_owner = Scope {
            owner: None,
            ..scope()
        };
        let Gate::Waiting(ready) = admit(&no_owner) else {
            panic!("waits for the owner");
        };
        assert_eq!(ready.reason, reasons::WAITING_FOR_OWNER);
        let no_cluster = Scope {
            cluster: None,
            ..scope()
        };
        let Gate::Waiting(ready) = admit(&no_cluster) else {
            panic!("waits for the Cluster");
        };
        assert_eq!(ready.reason, reasons::WAITING_FOR_CLUSTER);
    }

    #[test]
    fn readiness_checks_infrastructure_then_platform_then_bootstrap_data() {
        let wait = |reason: &str| (reason.to_owned(), WAIT_REQUEUE);
        let no_infra = Scope {
            infra_cluster: None,
            ..scope()
        };
        assert_eq!(
            waiting_reason(&no_infra),
            wait(reasons::WAITING_FOR_CLUSTER_INFRASTRUCTURE)
        );
        let unprovisioned = Scope {
            cluster: Some(cluster(false, false)),
            ..scope()
        };
        assert_eq!(
            waiting_reason(&unprovisioned),
            wait(reasons::WAITING_FOR_CLUSTER_INFRASTRUCTURE)
        );
        let no_aws_status = Scope {
            infra_cluster: Some(infra_cluster("aws", false)),
            ..scope()
        };
        assert_eq!(
            waiting_reason(&no_aws_status),
            wait(reasons::WAITING_FOR_CLUSTER_INFRASTRUCTURE)
        );
        let mismatch = Scope {
            infra_cluster: Some(infra_cluster("metal", false)),
            ..scope()
        };
        let refused = readiness(&mismatch).expect_err("refused");
        assert_eq!(refused.ready.reason, reasons::PLATFORM_MISMATCH);
        assert_eq!(refused.requeue, UNSUPPORTED_REQUEUE);
        assert!(
            refused.ready.message.contains("spec.aws"),
            "{}",
            refused.ready.message
        );
        let no_secret = Scope {
            owner: Some(owner(None)),
            ..scope()
        };
        assert_eq!(
            waiting_reason(&no_secret),
            wait(reasons::WAITING_FOR_BOOTSTRAP_DATA)
        );

        let scope = scope();
        let ready = readiness(&scope).expect("ready");
        assert_eq!(ready.cluster.name_any(), "demo");
        assert_eq!(ready.namespace, "default");
    }

    #[test]
    fn a_metal_machine_needs_no_aws_status() {
        let scope = Scope {
            infra_cluster: Some(infra_cluster("metal", false)),
            ..with_machine(scope(), |machine| *machine = self::machine("metal"))
        };
        assert!(readiness(&scope).is_ok());
    }

    #[test]
    fn an_empty_bootstrap_value_is_waited_for_and_a_value_is_booted() {
        let scope = scope();
        let ready = readiness(&scope).unwrap();
        let waiting = user_data(&ready, None).expect_err("waits");
        assert_eq!(waiting.ready.reason, reasons::WAITING_FOR_BOOTSTRAP_DATA);
        assert!(waiting.ready.message.ends_with("to hold a value"));
        assert_eq!(waiting.requeue, BOOTSTRAP_REQUEUE);
        assert_eq!(
            user_data(&ready, Some(b"#!/bin/sh".to_vec())).unwrap(),
            b"#!/bin/sh"
        );
    }

    #[test]
    fn the_block_move_mark_is_seen() {
        assert!(!blocks_move(&scope().machine));
        let marked = with_machine(scope(), |machine| {
            machine["metadata"]["annotations"] = json!({BLOCK_MOVE_ANNOTATION: ""});
        });
        assert!(blocks_move(&marked.machine));
    }
}
