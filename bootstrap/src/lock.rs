//! The control-plane init lock (capi-contract.md §6, the protocol of CABPK's
//! `pkg/locking/control_plane_init_mutex.go`): exactly one control-plane Machine renders `kubeadm init`.
//!
//! Pure: builds the lock ConfigMap and decides what to do with it; the controller performs the
//! create / delete. Protocol:
//! - **Acquire** = *create* the ConfigMap [`lock_config_map`]; the API server's create is the atomic
//!   test-and-set. `AlreadyExists` ⇒ someone else won: requeue 30 s and decide again.
//! - **Held** (re-entrant): the lock names this Machine ⇒ render `kubeadm init` again (same data).
//! - **HeldByOther**: requeue 30 s (control-plane Machines render nothing meanwhile).
//! - **ReleaseStale**: the holder Machine no longer exists (or the lock is unreadable) ⇒ delete the
//!   ConfigMap with the `uid` that was read as precondition, so a newer lock is never deleted (the
//!   precondition failing means someone else holds a new lock: requeue), then acquire.
//! - **ReleaseInitialized**: the Cluster's `ControlPlaneInitialized` condition is True ⇒ delete the
//!   lock (same `uid` precondition), then render a join. Unlike CABPK the lock is not released when
//!   rendering an init fails: the holder renders init again (re-entrant) once its configuration is
//!   fixed, and a deleted holder makes the lock stale.
//!
//! Worker configs never take the lock; they wait (requeue 30 s) until the control plane is
//! initialized. In a Cluster without `controlPlaneRef`, "initialized" is the Cluster condition
//! `ControlPlaneInitialized` (core sets it when any control-plane Machine has a `nodeRef`);
//! `status.initialization.controlPlaneInitialized` stays unset in that mode.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde::{Deserialize, Serialize};

use crate::pki::cluster_owned_meta;

/// Data key of the lock ConfigMap.
pub const LOCK_INFORMATION_KEY: &str = "lock-information";

/// Requeue period while someone else holds the lock or the control plane is not initialized (CABPK).
pub const LOCK_REQUEUE: std::time::Duration = std::time::Duration::from_secs(30);

/// `<cluster>-lock`.
pub fn lock_name(cluster: &str) -> String {
    format!("{cluster}-lock")
}

/// The JSON under [`LOCK_INFORMATION_KEY`]: `{"machineName":"<machine>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LockInformation {
    machine_name: String,
}

/// The lock ConfigMap `<cluster>-lock` in the Cluster's namespace, held by `machine`: data
/// `lock-information: {"machineName":"<machine>"}`, label `cluster.x-k8s.io/cluster-name`,
/// non-controller ownerReference to the Cluster (so it is collected with the Cluster).
pub fn lock_config_map(cluster: &str, cluster_uid: &str, namespace: &str, machine: &str) -> ConfigMap {
    let info = LockInformation {
        machine_name: machine.to_string(),
    };
    let json = serde_json::to_string(&info).unwrap_or_default();
    ConfigMap {
        metadata: cluster_owned_meta(lock_name(cluster), cluster, cluster_uid, namespace),
        data: Some(BTreeMap::from([(LOCK_INFORMATION_KEY.to_string(), json)])),
        ..ConfigMap::default()
    }
}

/// The Machine holding the lock; `None` when the data is missing or not the expected JSON.
pub fn holder(lock: &ConfigMap) -> Option<String> {
    let json = lock.data.as_ref()?.get(LOCK_INFORMATION_KEY)?;
    let info: LockInformation = serde_json::from_str(json).ok()?;
    Some(info.machine_name).filter(|name| !name.is_empty())
}

/// What a control-plane config should do about the init lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockDecision {
    /// No lock, not initialized: create [`lock_config_map`]; on success render init, on
    /// `AlreadyExists` wait and decide again.
    Acquire,
    /// This Machine holds the lock (re-entrant): render init.
    Held,
    /// Another, existing Machine holds it: requeue after [`LOCK_REQUEUE`].
    HeldByOther(String),
    /// The holder is gone (or the lock is unreadable): delete the lock, then decide again.
    ReleaseStale,
    /// The control plane is initialized and a lock still exists: delete it, then render a join.
    ReleaseInitialized,
    /// The control plane is initialized and there is no lock: render a join.
    NotNeeded,
}

/// Decides for the control-plane Machine `me`. `holder_exists` says whether the Machine named by
/// [`holder`] exists (pass `false` when `holder` is `None`; ignored when the lock is absent or held by
/// `me`). `control_plane_initialized` is the Cluster's `ControlPlaneInitialized` condition.
pub fn decide(
    lock: Option<&ConfigMap>,
    me: &str,
    holder_exists: bool,
    control_plane_initialized: bool,
) -> LockDecision {
    match (lock, control_plane_initialized) {
        (None, true) => LockDecision::NotNeeded,
        (Some(_), true) => LockDecision::ReleaseInitialized,
        (None, false) => LockDecision::Acquire,
        (Some(lock), false) => match holder(lock) {
            Some(name) if name == me => LockDecision::Held,
            Some(name) if holder_exists => LockDecision::HeldByOther(name),
            _ => LockDecision::ReleaseStale,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_config_map_shape() {
        let cm = lock_config_map("demo", "uid-1", "ns", "demo-cp-0");
        assert_eq!(cm.metadata.name.as_deref(), Some("demo-lock"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(
            cm.metadata.labels,
            Some(BTreeMap::from([(
                "cluster.x-k8s.io/cluster-name".into(),
                "demo".into()
            )]))
        );
        let owners = cm.metadata.owner_references.clone().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (
                owners[0].api_version.as_str(),
                owners[0].kind.as_str(),
                owners[0].name.as_str()
            ),
            ("cluster.x-k8s.io/v1beta2", "Cluster", "demo")
        );
        assert_eq!(owners[0].uid, "uid-1");
        assert_eq!(owners[0].controller, Some(false));
        assert_eq!(
            cm.data,
            Some(BTreeMap::from([(
                "lock-information".into(),
                r#"{"machineName":"demo-cp-0"}"#.into()
            )]))
        );
        assert_eq!(holder(&cm).as_deref(), Some("demo-cp-0"));
    }

    #[test]
    fn holder_of_unreadable_locks_is_none() {
        let with = |data: Option<&str>| ConfigMap {
            data: data.map(|d| BTreeMap::from([(LOCK_INFORMATION_KEY.to_string(), d.to_string())])),
            ..ConfigMap::default()
        };
        assert_eq!(holder(&with(None)), None);
        assert_eq!(holder(&with(Some("not json"))), None);
        assert_eq!(holder(&with(Some(r#"{"machine":"x"}"#))), None);
        assert_eq!(holder(&with(Some(r#"{"machineName":""}"#))), None);
        // CABPK writes exactly this; extra fields are tolerated.
        assert_eq!(
            holder(&with(Some(r#"{"machineName":"x","extra":1}"#))).as_deref(),
            Some("x")
        );
    }

    #[test]
    fn decisions() {
        let mine = lock_config_map("demo", "u", "ns", "me");
        let theirs = lock_config_map("demo", "u", "ns", "other");
        let broken = ConfigMap::default();
        use LockDecision::*;
        #[rustfmt::skip]
        let table: [(Option<&ConfigMap>, bool, bool, LockDecision); 14] = [
            // lock          holder_exists initialized  expected
            (None,           false, false, Acquire),
            (None,           true,  false, Acquire),
            (Some(&mine),    true,  false, Held),
            (Some(&mine),    false, false, Held),
            (Some(&theirs),  true,  false, HeldByOther("other".into())),
            (Some(&theirs),  false, false, ReleaseStale),
            (Some(&broken),  false, false, ReleaseStale),
            (Some(&broken),  true,  false, ReleaseStale),
            (Some(&mine),    true,  true,  ReleaseInitialized),
            (Some(&theirs),  true,  true,  ReleaseInitialized),
            (Some(&theirs),  false, true,  ReleaseInitialized),
            (Some(&broken),  false, true,  ReleaseInitialized),
            (None,           false, true,  NotNeeded),
            (None,           true,  true,  NotNeeded),
        ];
        for (i, (lock, holder_exists, initialized, expected)) in table.into_iter().enumerate() {
            assert_eq!(
                decide(lock, "me", holder_exists, initialized),
                expected,
                "row {i}"
            );
        }
    }
}
