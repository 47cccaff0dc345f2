//! The cluster's instances as this process sees them: the last DescribeInstances, shared by every
//! reader while it is fresh enough for them, with what this process knows better laid over it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;

use super::{ClusterInstances, lock};
use crate::aws::errors::AwsError;
use crate::aws::instances::{Instance, InstanceState, MachineKey};

#[derive(Clone, Debug)]
struct Snapshot {
    at: Instant,
    instances: Arc<Vec<Instance>>,
}

/// The last view and the instances this process launched, adopted or terminated recently.
#[derive(Debug, Default)]
pub(super) struct View {
    snapshot: AsyncMutex<Option<Snapshot>>,
    local: Mutex<HashMap<String, (Instant, Instance)>>,
}

impl ClusterInstances {
    /// The cluster's live instances, at most `max_age` old: concurrent readers share one
    /// DescribeInstances. A new view is handed to the orphan sweep.
    pub(super) async fn instances_within(&self, max_age: Duration) -> Result<Arc<Vec<Instance>>, AwsError> {
        let mut snapshot = self.view.snapshot.lock().await;
        if let Some(current) = snapshot.as_ref()
            && current.at.elapsed() <= max_age
        {
            return Ok(current.instances.clone());
        }
        let described = self.api.describe(&self.tags).await?;
        let local: Vec<Instance> = {
            let mut local = lock(&self.view.local);
            local.retain(|_, (at, _)| at.elapsed() < self.settings.local_memory);
            local.values().map(|(_, instance)| instance.clone()).collect()
        };
        let merged = Arc::new(merge(described, &self.tagger.pending(), &local));
        *snapshot = Some(Snapshot {
            at: Instant::now(),
            instances: merged.clone(),
        });
        drop(snapshot);
        self.sweep.send_replace(Some(merged.clone()));
        Ok(merged)
    }

    /// Records an instance this process launched, adopted or terminated, in the current view too.
    pub(super) async fn record(&self, instance: &Instance) {
        lock(&self.view.local).insert(instance.id.clone(), (Instant::now(), instance.clone()));
        let mut snapshot = self.view.snapshot.lock().await;
        if let Some(current) = snapshot.as_mut() {
            let mut instances: Vec<Instance> = current.instances.as_ref().clone();
            match instances.iter_mut().find(|i| i.id == instance.id) {
                Some(listed) => *listed = instance.clone(),
                None => instances.push(instance.clone()),
            }
            current.instances = Arc::new(instances);
        }
    }

    /// Instance `id` as the current view shows it, without asking EC2.
    pub(super) async fn viewed(&self, id: &str) -> Option<Instance> {
        let snapshot = self.view.snapshot.lock().await;
        snapshot
            .as_ref()
            .and_then(|s| s.instances.iter().find(|i| i.id == id).cloned())
    }
}

/// What this process knows better than a possibly stale DescribeInstances, laid over `described`:
/// machine tags it is still setting (`untagged`: instance id → machine), and the instances it
/// launched (not listed yet), claimed (machine tags not visible yet) or terminated (`local`).
/// Pure.
pub(super) fn merge(
    mut described: Vec<Instance>,
    untagged: &HashMap<String, MachineKey>,
    local: &[Instance],
) -> Vec<Instance> {
    for listed in described.iter_mut().filter(|i| i.machine.is_none()) {
        if let Some(machine) = untagged.get(&listed.id) {
            listed.machine = Some(machine.tag_value());
        }
    }
    for known in local {
        match described.iter_mut().find(|i| i.id == known.id) {
            Some(listed) => {
                if listed.machine.is_none() {
                    listed.machine.clone_from(&known.machine);
                }
                if known.state.is_ending() && !listed.state.is_ending() {
                    listed.state = known.state;
                }
            }
            None if !known.state.is_ending() => described.push(known.clone()),
            None => {}
        }
    }
    described
}

/// A stand-in for an instance known only by its id, as it is being terminated.
pub(super) fn terminating(id: &str) -> Instance {
    Instance {
        id: id.to_owned(),
        state: InstanceState::ShuttingDown,
        zone: String::new(),
        subnet_id: None,
        private_ip: None,
        private_dns: None,
        public_ip: None,
        public_dns: None,
        machine: None,
        launch_spec: None,
        spot: false,
        launched_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::launcher::testing::{instance, key};

    #[test]
    fn pending_machine_tags_show_on_untagged_instances() {
        let described = vec![instance("i-1", InstanceState::Running, None)];
        let untagged = HashMap::from([("i-1".to_owned(), key("a"))]);
        let merged = merge(described, &untagged, &[]);
        assert_eq!(merged[0].machine.as_deref(), Some("default/a"));
    }

    #[test]
    fn a_launched_instance_not_listed_yet_is_added_and_a_terminated_one_is_not() {
        let local = vec![
            instance("i-new", InstanceState::Pending, Some("default/a")),
            instance("i-gone", InstanceState::ShuttingDown, Some("default/b")),
        ];
        let merged = merge(Vec::new(), &HashMap::new(), &local);
        let ids: Vec<&str> = merged.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["i-new"]);
    }

    #[test]
    fn a_termination_issued_here_wins_over_a_stale_running_state() {
        let described = vec![instance("i-1", InstanceState::Running, Some("default/a"))];
        let local = vec![instance("i-1", InstanceState::ShuttingDown, None)];
        let merged = merge(described, &HashMap::new(), &local);
        assert_eq!(merged[0].state, InstanceState::ShuttingDown);
        assert_eq!(
            merged[0].machine.as_deref(),
            Some("default/a"),
            "the listed tag is kept"
        );
    }

    #[test]
    fn a_listed_machine_tag_is_not_overwritten() {
        let described = vec![instance("i-1", InstanceState::Running, Some("default/a"))];
        let local = vec![instance("i-1", InstanceState::Running, Some("default/b"))];
        let untagged = HashMap::from([("i-1".to_owned(), key("c"))]);
        let merged = merge(described, &untagged, &local);
        assert_eq!(merged[0].machine.as_deref(), Some("default/a"));
    }
}
