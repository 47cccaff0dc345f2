//! What core reads from caches rather than from the API server, kept by the stand-in the same way
//! so its cost per object stays flat at a thousand Machines:
//!
//! - [`NodeIndex`]: each workload cluster's Nodes (by name and by `spec.providerID`, with their
//!   conditions), listed at most once per poll interval (core's Node informer in its cluster cache);
//! - [`Workloads`]: one workload-cluster client per Cluster for a poll interval;
//! - [`Probes`]: the workload-cluster health probe of core's cluster cache (at most every
//!   [`PROBE_INTERVAL`]), behind the Cluster's `RemoteConnectionProbe` condition;
//! - [`Templates`]: whether a referenced template exists, for a poll interval (`ScalingUp`
//!   messages);
//! - [`lagged`]: a watch stream whose events arrive `lag` late, to model the informer of a
//!   controller that is slow to keep up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use super::cluster_status::ProbeState;
use super::machine_status::NodeCondition;
use super::util::{ContractRef, dynamic_api};
use super::{Ctx, Error, WorkloadClusters};

/// How often core's cluster cache probes a workload cluster.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// The Nodes of one workload cluster.
#[derive(Debug, Default)]
pub(crate) struct ClusterNodes {
    /// Node names by `spec.providerID`.
    pub(crate) by_provider_id: HashMap<String, Vec<String>>,
    /// Node conditions by Node name.
    pub(crate) by_name: HashMap<String, Vec<NodeCondition>>,
}

/// The Nodes of each workload cluster, listed at most once per poll interval.
pub(crate) struct NodeIndex {
    max_age: Duration,
    clusters: tokio::sync::Mutex<HashMap<String, (Instant, Arc<ClusterNodes>)>>,
}

impl NodeIndex {
    /// An index refreshed at most every `max_age`.
    pub(crate) fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            clusters: Default::default(),
        }
    }

    /// The Nodes of cluster `namespace/cluster` (whose workload API `client` serves), at most
    /// `max_age` old.
    pub(crate) async fn of(
        &self,
        namespace: &str,
        cluster: &str,
        client: &Client,
    ) -> Result<Arc<ClusterNodes>, Error> {
        let mut clusters = self.clusters.lock().await;
        let key = format!("{namespace}/{cluster}");
        if let Some((at, index)) = clusters.get(&key)
            && at.elapsed() < self.max_age
        {
            return Ok(index.clone());
        }
        let mut index = ClusterNodes::default();
        for node in Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await?
            .items
        {
            let name = node.name_any();
            if let Some(provider_id) = node.spec.as_ref().and_then(|s| s.provider_id.clone()) {
                index
                    .by_provider_id
                    .entry(provider_id)
                    .or_default()
                    .push(name.clone());
            }
            let conditions = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .map(|c| NodeCondition {
                    type_: c.type_,
                    status: c.status,
                    message: c.message.unwrap_or_default(),
                })
                .collect();
            index.by_name.insert(name, conditions);
        }
        let index = Arc::new(index);
        clusters.insert(key, (Instant::now(), index.clone()));
        Ok(index)
    }
}

/// Workload-cluster clients, one per Cluster for a poll interval.
pub(crate) struct Workloads {
    max_age: Duration,
    clients: tokio::sync::Mutex<HashMap<String, (Instant, Option<Client>)>>,
}

impl Workloads {
    /// Clients kept for `max_age`.
    pub(crate) fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            clients: Default::default(),
        }
    }

    /// The client of workload cluster `namespace/cluster` through `clusters`, `None` while it is
    /// unreachable.
    pub(crate) async fn client(
        &self,
        clusters: &dyn WorkloadClusters,
        namespace: &str,
        cluster: &str,
    ) -> Option<Client> {
        let key = format!("{namespace}/{cluster}");
        if let Some((at, client)) = self.clients.lock().await.get(&key)
            && at.elapsed() < self.max_age
        {
            return client.clone();
        }
        let client = clusters.client(namespace, cluster).await;
        self.clients
            .lock()
            .await
            .insert(key, (Instant::now(), client.clone()));
        client
    }
}

/// The health probe of each workload cluster.
#[derive(Default)]
pub(crate) struct Probes {
    states: tokio::sync::Mutex<HashMap<String, (Instant, ProbeState)>>,
}

impl Probes {
    /// The probe state of `namespace/cluster`, probing (a `/version` request through `client`)
    /// when the last probe is older than [`PROBE_INTERVAL`].
    pub(crate) async fn state(&self, namespace: &str, cluster: &str, client: Option<Client>) -> ProbeState {
        let key = format!("{namespace}/{cluster}");
        let previous = self.states.lock().await.get(&key).copied();
        if let Some((at, state)) = previous
            && at.elapsed() < PROBE_INTERVAL
        {
            return state;
        }
        let mut state = previous.map(|(_, s)| s).unwrap_or_default();
        let reachable = match client {
            Some(client) => client.apiserver_version().await.is_ok(),
            None => false,
        };
        if reachable {
            state.last_success = Some(jiff::Timestamp::now());
            state.failures = 0;
        } else {
            state.failures += 1;
        }
        self.states.lock().await.insert(key, (Instant::now(), state));
        state
    }
}

/// Whether referenced templates exist, each for a poll interval.
pub(crate) struct Templates {
    max_age: Duration,
    seen: std::sync::Mutex<HashMap<String, (Instant, bool)>>,
}

impl Templates {
    /// Answers kept for `max_age`.
    pub(crate) fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            seen: Default::default(),
        }
    }

    /// True when the template `reference` exists in `namespace` (an unresolvable kind counts as
    /// missing).
    pub(crate) async fn exists(&self, ctx: &Ctx, namespace: &str, reference: &ContractRef) -> bool {
        let key = format!(
            "{namespace}/{}.{}/{}",
            reference.kind, reference.api_group, reference.name
        );
        if let Some((at, exists)) = self.lock().get(&key)
            && at.elapsed() < self.max_age
        {
            return *exists;
        }
        let exists = match ctx.resolve(&reference.api_group, &reference.kind).await {
            Ok(ar) => matches!(
                dynamic_api(&ctx.client, namespace, &ar)
                    .get_opt(&reference.name)
                    .await,
                Ok(Some(_))
            ),
            Err(_) => false,
        };
        self.lock().insert(key, (Instant::now(), exists));
        exists
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, bool)>> {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Most events [`lagged`] holds back at once.
const LAGGED_EVENTS_IN_FLIGHT: usize = 1 << 16;

/// The watch of `api`, every event delivered `lag` after it arrived (in order; no delay for a zero
/// lag).
pub(crate) fn lagged(
    api: Api<DynamicObject>,
    config: watcher::Config,
    lag: Duration,
) -> impl Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Send + 'static {
    use kube::runtime::WatchStreamExt;
    // `buffered` pulls events as they come (up to a large bound), each waiting for its own due
    // time, so the delay stays `lag` rather than adding up event after event.
    watcher(api, config)
        .default_backoff()
        .map(move |event| {
            let due = tokio::time::Instant::now() + lag;
            async move {
                if !lag.is_zero() {
                    tokio::time::sleep_until(due).await;
                }
                event
            }
        })
        .buffered(LAGGED_EVENTS_IN_FLIGHT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::ApiServer;
    use crate::capi::{CapiCore, CapiKind};

    #[tokio::test]
    async fn lagged_watch_delivers_every_event_after_the_lag() {
        let server = ApiServer::start().await.expect("emulator");
        let client = server.client().expect("client");
        CapiCore::install(client.clone()).await.expect("CRDs");
        let api = Api::<DynamicObject>::all_with(client, &CapiKind::Machine.api_resource());
        let lag = Duration::from_millis(300);
        let started = Instant::now();
        let mut events = lagged(api, watcher::Config::default(), lag).boxed();
        let mut seen = Vec::new();
        while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), events.next()).await {
            let done = matches!(event, Ok(watcher::Event::InitDone));
            seen.push(started.elapsed());
            if done {
                break;
            }
        }
        assert!(seen.len() >= 2, "Init and InitDone arrive: {seen:?}");
        assert!(
            seen.iter().all(|at| *at >= lag),
            "each event at least {lag:?} late: {seen:?}"
        );
        // The delays do not add up: the last event is not one lag per event late.
        assert!(seen[seen.len() - 1] < lag * 2, "{seen:?}");
        server.shutdown().await;
    }
}
