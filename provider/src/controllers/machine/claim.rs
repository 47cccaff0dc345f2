//! Claiming a KubeZeroHost for a bare-metal KubeZeroMachine, and releasing it.
//!
//! A claim is an update of the host's `spec.consumerRef` carrying the resourceVersion the claimer
//! read: of machines racing for one host, the API server accepts exactly one update and answers the
//! others 409, and they move on to the next candidate. So N machines racing for M hosts claim
//! min(N, M) distinct hosts and never one host twice. The candidates are read from the API server
//! (not a cache) and each machine starts at its own place in the list, so racing machines mostly try
//! different hosts first. A claim is recognised by the machine's UID, so a claim that succeeded but
//! whose answer was lost is found again instead of a second host being claimed.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use kube::api::{Api, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use kubezero_capi::conditions::is_true;
use kubezero_capi::contract::READY_CONDITION;
use kubezero_capi::runtime::reconcile::Error;

use crate::api::{ConsumerRef, DETACHED_ANNOTATION, HostState, KubeZeroHost};

/// The host label that names a host's failure domain by default.
pub const DEFAULT_ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// What a machine asks for.
#[derive(Clone, Debug)]
pub struct ClaimRequest<'a> {
    /// The KubeZeroMachine's name.
    pub machine: &'a str,
    /// The KubeZeroMachine's UID.
    pub machine_uid: &'a str,
    /// Labels the host must carry (`spec.metal.hostSelector.matchLabels`).
    pub match_labels: &'a BTreeMap<String, String>,
    /// The Machine's failure domain as (host label, value), when it has one.
    pub zone: Option<(&'a str, &'a str)>,
}

/// How a claim ended.
#[derive(Clone, Debug)]
pub enum Claim {
    /// The machine holds this host (claimed now or before).
    Held(Box<KubeZeroHost>),
    /// No host is available for the machine; `matching` hosts match its selector and zone but are
    /// taken, detached, not ready or being deleted.
    NoAvailableHost {
        /// Hosts matching the selector and zone.
        matching: usize,
    },
}

/// Claims one Available host for the machine, or finds the one it holds.
pub async fn claim(api: &Api<KubeZeroHost>, request: &ClaimRequest<'_>) -> Result<Claim, Error> {
    let namespace = api.namespace().unwrap_or_default().to_string();
    let hosts = api
        .list(&ListParams::default())
        .await
        .map_err(Error::read("KubeZeroHost", &namespace, "*"))?
        .items;
    if let Some(held) = hosts.iter().find(|host| held_by(host, request.machine_uid)) {
        return Ok(Claim::Held(Box::new(held.clone())));
    }
    let matching: Vec<&KubeZeroHost> = hosts.iter().filter(|host| matches(host, request)).collect();
    let mut candidates: Vec<&KubeZeroHost> =
        matching.iter().copied().filter(|host| claimable(host)).collect();
    candidates.sort_by_key(|host| host.name_any());
    if !candidates.is_empty() {
        let start = start_index(request.machine_uid, candidates.len());
        candidates.rotate_left(start);
    }
    for host in candidates {
        let name = host.name_any();
        let mut claimed = host.clone();
        claimed.spec.consumer_ref = Some(ConsumerRef {
            name: request.machine.to_string(),
            uid: request.machine_uid.to_string(),
        });
        // The read resourceVersion stays in the object: a replace is then conditional on it.
        claimed.meta_mut().managed_fields = None;
        match api.replace(&name, &PostParams::default(), &claimed).await {
            Ok(host) => return Ok(Claim::Held(Box::new(host))),
            // Someone else changed (or claimed, or deleted) it since the list: next one.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => continue,
            Err(error) => return Err(Error::write("update", "KubeZeroHost", &namespace, &name)(error)),
        }
    }
    Ok(Claim::NoAvailableHost {
        matching: matching.len(),
    })
}

/// Clears the machine's claim on `host` (a no-op when the machine does not hold it); the update
/// carries the read resourceVersion, so a 409 means "read again and retry".
pub async fn release(api: &Api<KubeZeroHost>, host: &KubeZeroHost, machine_uid: &str) -> Result<bool, Error> {
    if !held_by(host, machine_uid) {
        return Ok(false);
    }
    let name = host.name_any();
    let namespace = api.namespace().unwrap_or_default().to_string();
    let mut released = host.clone();
    released.spec.consumer_ref = None;
    released.meta_mut().managed_fields = None;
    api.replace(&name, &PostParams::default(), &released)
        .await
        .map_err(Error::write("update", "KubeZeroHost", &namespace, &name))?;
    Ok(true)
}

/// Whether `host` is claimed by the machine with `machine_uid`.
pub fn held_by(host: &KubeZeroHost, machine_uid: &str) -> bool {
    host.spec
        .consumer_ref
        .as_ref()
        .is_some_and(|consumer| consumer.uid == machine_uid)
}

/// Whether `host` carries the selector's labels and sits in the requested zone.
fn matches(host: &KubeZeroHost, request: &ClaimRequest<'_>) -> bool {
    let labels = host.labels();
    let selected = request
        .match_labels
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value));
    let in_zone = request
        .zone
        .is_none_or(|(label, zone)| labels.get(label).map(String::as_str) == Some(zone));
    selected && in_zone
}

/// Whether `host` can be handed out: Available and Ready, unclaimed, not detached, not deleting.
fn claimable(host: &KubeZeroHost) -> bool {
    let status = host.status.as_ref();
    let available = status.and_then(|status| status.state) == Some(HostState::Available);
    let ready = status.is_some_and(|status| is_true(&status.conditions, READY_CONDITION));
    available
        && ready
        && host.spec.consumer_ref.is_none()
        && !host.annotations().contains_key(DETACHED_ANNOTATION)
        && host.meta().deletion_timestamp.is_none()
}

/// Where in `len` sorted candidates the machine with `uid` starts trying.
fn start_index(uid: &str, len: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut hasher);
    (hasher.finish() % len as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(name: &str, zone: &str, state: &str, ready: &str) -> KubeZeroHost {
        serde_json::from_value(json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroHost",
            "metadata": {"name": name, "namespace": "metal",
                         "labels": {"pool": "workers", DEFAULT_ZONE_LABEL: zone}},
            "spec": {"bmc": {"address": "https://10.0.0.5", "credentialsName": "bmc"},
                     "bootMACAddress": "52:54:00:aa:bb:cc"},
            "status": {"state": state, "conditions": [{"type": "Ready", "status": ready, "reason": "r",
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    #[test]
    fn only_available_ready_unclaimed_attached_hosts_are_claimable() {
        assert!(claimable(&host("a", "z1", "Available", "True")));
        assert!(!claimable(&host("b", "z1", "Available", "False")));
        assert!(!claimable(&host("c", "z1", "Registering", "True")));
        let mut claimed = host("d", "z1", "Available", "True");
        claimed.spec.consumer_ref = Some(ConsumerRef {
            name: "m".into(),
            uid: "u".into(),
        });
        assert!(!claimable(&claimed) && held_by(&claimed, "u") && !held_by(&claimed, "v"));
        let mut detached = host("e", "z1", "Available", "True");
        detached
            .annotations_mut()
            .insert(DETACHED_ANNOTATION.into(), "repair".into());
        assert!(!claimable(&detached));
    }

    #[test]
    fn selector_and_zone_must_match() {
        let labels = BTreeMap::from([("pool".to_string(), "workers".to_string())]);
        let request = |zone| ClaimRequest {
            machine: "m",
            machine_uid: "u",
            match_labels: &labels,
            zone,
        };
        let z1 = host("a", "z1", "Available", "True");
        assert!(matches(&z1, &request(None)));
        assert!(matches(&z1, &request(Some((DEFAULT_ZONE_LABEL, "z1")))));
        assert!(!matches(&z1, &request(Some((DEFAULT_ZONE_LABEL, "z2")))));
        let other = BTreeMap::from([("pool".to_string(), "control-plane".to_string())]);
        let request = ClaimRequest {
            match_labels: &other,
            ..request(None)
        };
        assert!(!matches(&z1, &request));
    }

    #[test]
    fn machines_start_at_different_candidates() {
        let starts: std::collections::BTreeSet<usize> =
            (0..20).map(|i| start_index(&format!("uid-{i}"), 10)).collect();
        assert!(starts.len() > 3, "{starts:?}");
        assert!(starts.iter().all(|start| *start < 10));
    }
}
