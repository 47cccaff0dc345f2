//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Timing (defaults): the leader renews every `retry_period` (2 s) and gives up, exiting the process,
//! when it could not renew for `renew_deadline` (10 s). A candidate takes over once the lease record
//! has not changed for `lease_duration` (15 s) as measured by its own monotonic clock (so clock skew
//! between nodes does not matter), checking every `retry_period`. A leader that dies without releasing
//! is therefore replaced after at most `lease_duration + retry_period` = 17 s; a leader that shuts down
//! gracefully clears the holder and a candidate takes over at its next attempt (≤ 2 s).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// Where the lease lives and how it is timed.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This process's identity, written as `holderIdentity`.
    pub identity: String,
    /// Validity of a lease without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps failing to renew before it gives up.
    pub renew_deadline: Duration,
    /// Interval between attempts.
    pub retry_period: Duration,
}

/// What this candidate should do about the current lease record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds the lease, or its holder stopped renewing: take it.
    TakeOver,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a live lease.
    Wait {
        /// The current holder.
        holder: String,
    },
}

/// The last lease record this process saw and when (monotonic clock).
#[derive(Clone, Debug)]
pub struct Observation {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    seen_at: Instant,
}

/// Decides what to do with `spec`, updating `observed` when the record changed.
pub fn decide(
    spec: &LeaseSpec,
    identity: &str,
    observed: &mut Option<Observation>,
    now: Instant,
    default_duration: Duration,
) -> Decision {
    let holder = spec.holder_identity.clone().filter(|holder| !holder.is_empty());
    let Some(current_holder) = holder.clone() else {
        return Decision::TakeOver;
    };
    if current_holder == identity {
        return Decision::Renew;
    }
    let changed = observed
        .as_ref()
        .is_none_or(|seen| seen.holder != holder || seen.renew_time != spec.renew_time);
    if changed {
        *observed = Some(Observation {
            holder,
            renew_time: spec.renew_time.clone(),
            seen_at: now,
        });
        return Decision::Wait {
            holder: current_holder,
        };
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|seconds| u64::try_from(seconds).ok())
        .map_or(default_duration, Duration::from_secs);
    let seen_at = observed.as_ref().map_or(now, |seen| seen.seen_at);
    if now.duration_since(seen_at) >= duration {
        Decision::TakeOver
    } else {
        Decision::Wait {
            holder: current_holder,
        }
    }
}

/// How holding the lease ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeadershipEnd {
    /// Renewal failed for longer than the renew deadline, or another process took the lease.
    Lost,
    /// Shutdown was requested.
    Shutdown,
}

/// Acquires, holds and releases one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observation>,
}

impl LeaderElector {
    /// An elector for the lease described by `config`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self {
            api,
            config,
            observed: None,
        }
    }

    /// Retries until this process holds the lease (`true`) or shutdown is requested (`false`).
    pub async fn acquire(&mut self, shutdown: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "acquired leadership");
                    return true;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, lease = %self.config.name, "unable to acquire leadership")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
    }

    /// Renews the lease until renewal fails for longer than the renew deadline or shutdown is requested.
    pub async fn hold(&mut self, shutdown: &CancellationToken) -> LeadershipEnd {
        let mut last_renewal = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return LeadershipEnd::Shutdown,
                _ = tokio::time::sleep(self.config.retry_period) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.config.name, "another process holds the lease");
                    return LeadershipEnd::Lost;
                }
                Err(error) => tracing::warn!(%error, lease = %self.config.name, "unable to renew the lease"),
            }
            if last_renewal.elapsed() > self.config.renew_deadline {
                tracing::error!(lease = %self.config.name, deadline = ?self.config.renew_deadline, "lease not renewed in time");
                return LeadershipEnd::Lost;
            }
        }
    }

    /// Gives the lease up so a candidate can take over at once. Errors are logged, not returned.
    pub async fn release(&mut self) {
        let lease = match self.api.get_opt(&self.config.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "unable to read the lease to release it");
                return;
            }
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        let released = Lease {
            spec: Some(spec),
            ..lease
        };
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &released)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.config.name, "released leadership"),
            Err(error) => tracing::warn!(%error, "unable to release the lease"),
        }
    }

    /// One attempt: `Ok(true)` when this process holds the lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let duration_seconds = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return accepted(self.api.create(&PostParams::default(), &lease).await);
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        match decide(
            &spec,
            &self.config.identity,
            &mut self.observed,
            Instant::now(),
            self.config.lease_duration,
        ) {
            Decision::Wait { holder } => {
                tracing::debug!(%holder, "lease held by another process");
                Ok(false)
            }
            Decision::Renew => {
                spec.renew_time = Some(now);
                spec.lease_duration_seconds = Some(duration_seconds);
                let renewed = Lease {
                    spec: Some(spec),
                    ..lease
                };
                accepted(
                    self.api
                        .replace(&self.config.name, &PostParams::default(), &renewed)
                        .await,
                )
            }
            Decision::TakeOver => {
                spec.holder_identity = Some(self.config.identity.clone());
                spec.lease_duration_seconds = Some(duration_seconds);
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                let taken = Lease {
                    spec: Some(spec),
                    ..lease
                };
                accepted(
                    self.api
                        .replace(&self.config.name, &PostParams::default(), &taken)
                        .await,
                )
            }
        }
    }
}

/// A write that lost an optimistic-concurrency race (409) means someone else got there first.
fn accepted(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DURATION: Duration = Duration::from_secs(15);

    fn spec(holder: Option<&str>, renew_second: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(
                jiff::Timestamp::from_second(1_800_000_000 + renew_second).unwrap(),
            )),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }
    }

    #[test]
    fn free_lease_is_taken_and_own_lease_is_renewed() {
        let start = Instant::now();
        assert_eq!(
            decide(&spec(None, 0), "me", &mut None, start, DURATION),
            Decision::TakeOver
        );
        assert_eq!(
            decide(&spec(Some(""), 0), "me", &mut None, start, DURATION),
            Decision::TakeOver
        );
        assert_eq!(
            decide(&spec(Some("me"), 0), "me", &mut None, start, DURATION),
            Decision::Renew
        );
    }

    #[test]
    fn live_lease_of_another_holder_is_respected_while_it_is_renewed() {
        let start = Instant::now();
        let mut observed = None;
        let wait = Decision::Wait {
            holder: "other".into(),
        };
        assert_eq!(
            decide(&spec(Some("other"), 0), "me", &mut observed, start, DURATION),
            wait
        );
        // Renewed 20 s later: a fresh observation, still waiting even though 20 s > 15 s passed.
        let later = start + Duration::from_secs(20);
        assert_eq!(
            decide(&spec(Some("other"), 20), "me", &mut observed, later, DURATION),
            wait
        );
    }

    #[test]
    fn stale_lease_is_taken_over_after_lease_duration_of_local_time() {
        let start = Instant::now();
        let mut observed = None;
        let record = spec(Some("dead"), 0);
        decide(&record, "me", &mut observed, start, DURATION);
        let before = start + Duration::from_secs(14);
        assert_eq!(
            decide(&record, "me", &mut observed, before, DURATION),
            Decision::Wait {
                holder: "dead".into()
            }
        );
        let after = start + Duration::from_secs(15);
        assert_eq!(
            decide(&record, "me", &mut observed, after, DURATION),
            Decision::TakeOver
        );
    }
}

#[cfg(test)]
mod api_tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{Value, json};

    use super::*;
    use crate::testing::{Reply, ScriptedApi, not_found};

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/kubezero-system/leases/kubezero-provider";

    /// A one-Lease API with resourceVersion checks, enough to exercise the elector's writes.
    fn lease_api(initial: Option<Value>) -> (Client, ScriptedApi, Arc<Mutex<Option<Value>>>) {
        let stored = Arc::new(Mutex::new(initial));
        let state = stored.clone();
        let (client, api) = ScriptedApi::start(move |request| -> Reply {
            let mut lease = state.lock().unwrap();
            match request.method.as_str() {
                "GET" if request.path == LEASE => {
                    lease.clone().map_or_else(|| not_found("lease"), |l| (200, l))
                }
                "POST" if lease.is_some() => (
                    409,
                    json!({"kind": "Status", "code": 409, "reason": "AlreadyExists"}),
                ),
                "POST" | "PUT" => {
                    let current_version = lease.as_ref().map(|l| l["metadata"]["resourceVersion"].clone());
                    if let Some(version) = current_version
                        && request.body["metadata"]["resourceVersion"] != version
                    {
                        return (409, json!({"kind": "Status", "code": 409, "reason": "Conflict"}));
                    }
                    let next = lease.as_ref().map_or(1, |l| {
                        l["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap()
                            .parse::<u64>()
                            .unwrap()
                            + 1
                    });
                    let mut written = request.body.clone();
                    written["metadata"]["resourceVersion"] = json!(next.to_string());
                    *lease = Some(written.clone());
                    (200, written)
                }
                _ => not_found(&request.path),
            }
        });
        (client, api, stored)
    }

    fn config(identity: &str) -> LeaseConfig {
        LeaseConfig {
            namespace: "kubezero-system".into(),
            name: "kubezero-provider".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_millis(10),
        }
    }

    fn held_by(holder: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "kubezero-provider", "namespace": "kubezero-system", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": "2026-11-22T00:00:00.000000Z",
                "leaseTransitions": 3}})
    }

    #[tokio::test]
    async fn first_candidate_creates_the_lease_and_releases_it_on_shutdown() {
        let (client, _api, stored) = lease_api(None);
        let mut elector = LeaderElector::new(client, config("pod-a"));
        assert!(elector.acquire(&CancellationToken::new()).await);
        assert_eq!(
            stored.lock().unwrap().as_ref().unwrap()["spec"]["holderIdentity"],
            "pod-a"
        );
        elector.release().await;
        let lease = stored.lock().unwrap().clone().unwrap();
        assert!(
            lease["spec"].get("holderIdentity").is_none_or(Value::is_null),
            "{lease}"
        );
    }

    #[tokio::test]
    async fn live_lease_of_another_holder_blocks_until_shutdown() {
        let (client, _api, stored) = lease_api(Some(held_by("pod-b")));
        let mut elector = LeaderElector::new(client, config("pod-a"));
        let shutdown = CancellationToken::new();
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cancel.cancel();
        });
        assert!(!elector.acquire(&shutdown).await);
        assert_eq!(
            stored.lock().unwrap().as_ref().unwrap()["spec"]["holderIdentity"],
            "pod-b"
        );
    }

    #[tokio::test]
    async fn released_lease_is_taken_over_at_once_and_transitions_count() {
        let mut released = held_by("");
        released["spec"]["holderIdentity"] = Value::Null;
        let (client, _api, stored) = lease_api(Some(released));
        let mut elector = LeaderElector::new(client, config("pod-a"));
        assert!(elector.acquire(&CancellationToken::new()).await);
        let lease = stored.lock().unwrap().clone().unwrap();
        assert_eq!(lease["spec"]["holderIdentity"], "pod-a");
        assert_eq!(lease["spec"]["leaseTransitions"], 4);
    }

    #[tokio::test]
    async fn leader_loses_when_another_process_took_the_lease() {
        let (client, _api, stored) = lease_api(None);
        let mut elector = LeaderElector::new(client, config("pod-a"));
        assert!(elector.acquire(&CancellationToken::new()).await);
        *stored.lock().unwrap() = Some(held_by("pod-b"));
        assert_eq!(elector.hold(&CancellationToken::new()).await, LeadershipEnd::Lost);
    }
}
