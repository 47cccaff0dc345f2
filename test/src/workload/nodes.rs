//! The node simulator: what kubelet registration and the cloud-controller-manager would do in each
//! workload cluster, driven by a cloud emulator's view of the cluster's instances.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tokio::task::JoinHandle;

use super::{Shared, WorkloadEmulators};

/// How often the [`NodeSimulator`] asks the instance source by default.
pub const NODE_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Field manager of the Nodes the simulator writes (the kubelet's would be `kubelet`).
const FIELD_MANAGER: &str = "kubezero-node-simulator";

/// An error of an [`InstanceSource`].
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// A machine that should be registered as a Node: running (EC2) or powered on (bare metal).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Instance {
    /// The Node name the kubelet would register (EC2: the private DNS name).
    pub node_name: String,
    /// `spec.providerID`, exactly the string the provider writes on its InfraMachine (§3), e.g.
    /// `aws:///eu-central-1a/i-0123456789abcdef0`.
    pub provider_id: String,
    /// `status.addresses` as `(type, address)`: `InternalIP`, `ExternalIP`, `InternalDNS`,
    /// `ExternalDNS`, `Hostname`.
    pub addresses: Vec<(String, String)>,
    /// Labels besides `kubernetes.io/hostname` (which is always the Node name), e.g.
    /// `topology.kubernetes.io/zone`, `node.kubernetes.io/instance-type`, `kubernetes.io/arch`.
    pub labels: BTreeMap<String, String>,
}

/// Where the [`NodeSimulator`] learns which machines of a workload cluster are up. The moto one is
/// [`super::MotoInstances`]; a bare-metal one (Redfish power state through sushy-tools) can plug in
/// the same way.
pub trait InstanceSource: Send + Sync {
    /// The instances of workload cluster `name` (Cluster in `namespace`) that should have a Node now.
    fn instances<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Instance>, SourceError>>;

    /// True when a Node with `provider_id` belongs to this source (and so is deleted once its instance
    /// is no longer reported). Nodes of other sources, or created by tests, are left alone.
    fn owns(&self, provider_id: &str) -> bool;
}

/// Registers a `Node` in a workload emulator for every instance the [`InstanceSource`] reports for
/// that cluster, with `spec.providerID`, the instance's addresses, labels `kubernetes.io/hostname`
/// (+ the source's) and a `Ready=True` condition; deletes a Node the source
/// [owns](InstanceSource::owns) once its instance is no longer reported. Polls every
/// [`NODE_POLL_INTERVAL`], or less often when a pass is slow (at most a fifth of its time is spent
/// polling; each request bounded by the source); stops when dropped.
///
/// Differences from a real kubelet: the Node appears at once (no boot, no bootstrap token, no
/// certificate signing request), is created with its status in one request (the API server allows
/// that for Nodes), and its `Ready` condition is never refreshed (no heartbeats or Leases).
pub struct NodeSimulator {
    task: JoinHandle<()>,
}

impl fmt::Debug for NodeSimulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSimulator").finish_non_exhaustive()
    }
}

impl NodeSimulator {
    /// Starts simulating the Nodes of every cluster of `emulators`, polling `source` every
    /// [`NODE_POLL_INTERVAL`].
    pub fn start(emulators: &WorkloadEmulators, source: Arc<dyn InstanceSource>) -> NodeSimulator {
        Self::start_with_interval(emulators, source, NODE_POLL_INTERVAL)
    }

    /// Like [`NodeSimulator::start`], polling every `interval`.
    pub fn start_with_interval(
        emulators: &WorkloadEmulators,
        source: Arc<dyn InstanceSource>,
        interval: Duration,
    ) -> NodeSimulator {
        let task = tokio::spawn(run(emulators.shared(), source, interval));
        NodeSimulator { task }
    }

    /// Stops polling.
    pub fn stop(self) {}
}

impl Drop for NodeSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The share of its time the simulator spends polling at most: a pass that took `t` is followed by a
/// pause of at least `t × (POLL_BUDGET_DIVISOR - 1)`, so listing thousands of instances does not
/// starve the cloud emulator the managers talk to.
const POLL_BUDGET_DIVISOR: u32 = 5;

async fn run(shared: Arc<Shared>, source: Arc<dyn InstanceSource>, interval: Duration) {
    loop {
        let pass = tokio::time::Instant::now();
        for (namespace, name, client) in shared.snapshot() {
            let instances = match source.instances(&namespace, &name).await {
                Ok(instances) => instances,
                Err(error) => {
                    tracing::warn!(%namespace, cluster = %name, %error, "node simulator: listing instances");
                    continue;
                }
            };
            if let Err(error) = sync(&client, source.as_ref(), &instances).await {
                // The emulator may have just been stopped with its Cluster.
                tracing::debug!(%namespace, cluster = %name, %error, "node simulator: syncing Nodes");
            }
        }
        let took = pass.elapsed();
        tokio::time::sleep(
            interval
                .saturating_sub(took)
                .max(took * (POLL_BUDGET_DIVISOR - 1)),
        )
        .await;
    }
}

/// Creates the missing Nodes and deletes the ones whose instance is gone.
async fn sync(
    client: &Client,
    source: &dyn InstanceSource,
    instances: &[Instance],
) -> Result<(), kube::Error> {
    let api = Api::<Node>::all(client.clone());
    let nodes = api.list(&ListParams::default()).await?.items;
    let provider_id = |node: &Node| node.spec.as_ref().and_then(|s| s.provider_id.clone());
    let registered: BTreeSet<String> = nodes.iter().filter_map(provider_id).collect();
    let wanted: BTreeSet<&str> = instances.iter().map(|i| i.provider_id.as_str()).collect();
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    for instance in instances {
        if registered.contains(&instance.provider_id) {
            continue;
        }
        match api.create(&params, &node(instance)).await {
            Ok(_) => {
                tracing::debug!(node = %instance.node_name, provider_id = %instance.provider_id, "Node registered")
            }
            // A Node of that name exists already (another source, or a test): leave it.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error),
        }
    }
    for node in &nodes {
        let Some(id) = provider_id(node) else { continue };
        if source.owns(&id) && !wanted.contains(id.as_str()) && node.metadata.deletion_timestamp.is_none() {
            match api.delete(&node.name_any(), &DeleteParams::default()).await {
                Ok(_) => tracing::debug!(node = %node.name_any(), provider_id = %id, "Node deleted"),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(())
}

/// The Node a kubelet (plus the cloud-controller-manager) would register for `instance`.
fn node(instance: &Instance) -> Node {
    let now = Time(jiff::Timestamp::now());
    let mut labels = instance.labels.clone();
    labels.insert("kubernetes.io/hostname".to_string(), instance.node_name.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(instance.node_name.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(instance.provider_id.clone()),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(
                instance
                    .addresses
                    .iter()
                    .map(|(type_, address)| NodeAddress {
                        type_: type_.clone(),
                        address: address.clone(),
                    })
                    .collect(),
            ),
            // A kubelet reports Ready and the three pressure conditions (core's Machine
            // `NodeHealthy` counts a missing one as unknown, and the Machine never as Ready).
            conditions: Some(
                [
                    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                    (
                        "MemoryPressure",
                        "False",
                        "KubeletHasSufficientMemory",
                        "kubelet has sufficient memory available",
                    ),
                    (
                        "DiskPressure",
                        "False",
                        "KubeletHasNoDiskPressure",
                        "kubelet has no disk pressure",
                    ),
                    (
                        "PIDPressure",
                        "False",
                        "KubeletHasSufficientPID",
                        "kubelet has sufficient PID available",
                    ),
                ]
                .into_iter()
                .map(|(type_, status, reason, message)| NodeCondition {
                    type_: type_.to_string(),
                    status: status.to_string(),
                    reason: Some(reason.to_string()),
                    message: Some(message.to_string()),
                    last_heartbeat_time: Some(now.clone()),
                    last_transition_time: Some(now.clone()),
                })
                .collect(),
            ),
            ..NodeStatus::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_carries_provider_id_addresses_hostname_and_ready() {
        let instance = Instance {
            node_name: "ip-10-0-0-5.ec2.internal".into(),
            provider_id: "aws:///us-east-1a/i-0abc".into(),
            addresses: vec![("InternalIP".into(), "10.0.0.5".into())],
            labels: BTreeMap::from([("topology.kubernetes.io/zone".into(), "us-east-1a".into())]),
        };
        let node = node(&instance);
        assert_eq!(node.name_any(), "ip-10-0-0-5.ec2.internal");
        assert_eq!(
            node.labels()["kubernetes.io/hostname"],
            "ip-10-0-0-5.ec2.internal"
        );
        assert_eq!(node.labels()["topology.kubernetes.io/zone"], "us-east-1a");
        assert_eq!(
            node.spec.unwrap().provider_id.as_deref(),
            Some("aws:///us-east-1a/i-0abc")
        );
        let status = node.status.unwrap();
        assert_eq!(status.addresses.unwrap()[0].address, "10.0.0.5");
        let conditions = status.conditions.unwrap();
        let states: Vec<(&str, &str)> = conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("Ready", "True"),
                ("MemoryPressure", "False"),
                ("DiskPressure", "False"),
                ("PIDPressure", "False")
            ]
        );
    }
}
