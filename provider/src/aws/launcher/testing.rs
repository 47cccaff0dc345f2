//! Unit-test fixtures: instances, machine keys, launch specs and a fake EC2 that keeps its
//! instances in memory and counts its calls.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::ec2::{InstanceApi, RunRequest};
use super::lock;
use crate::api::aws::{AwsImds, AwsVolume};
use crate::aws::errors::AwsError;
use crate::aws::instances::{
    Fill, Instance, InstanceState, LAUNCH_SPEC_TAG, LaunchSpec, MACHINE_TAG, MachineKey,
};
use crate::aws::tags::ClusterTags;

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An instance with only an id, a state and a machine tag.
pub fn instance(id: &str, state: InstanceState, machine: Option<&str>) -> Instance {
    Instance {
        state,
        machine: machine.map(str::to_owned),
        ..super::view::terminating(id)
    }
}

/// Machine `default/<name>`.
pub fn key(name: &str) -> MachineKey {
    MachineKey {
        namespace: "default".into(),
        name: name.into(),
        launch_token: format!("uid-{name}"),
    }
}

/// A launch spec over `subnets`.
pub fn spec(subnets: &[&str]) -> LaunchSpec {
    LaunchSpec {
        image_id: "ami-1".into(),
        root_device_name: "/dev/xvda".into(),
        instance_type: "t3.medium".into(),
        subnet_ids: subnets.iter().map(|s| (*s).to_owned()).collect(),
        security_group_ids: Vec::new(),
        instance_profile: None,
        user_data: "I2Nsb3VkLWNvbmZpZwo=".into(),
        root_volume: AwsVolume::default(),
        extra_volumes: Vec::new(),
        imds: AwsImds::default(),
        spot: None,
        ssh_key_name: None,
        tags: BTreeMap::new(),
    }
}

/// EC2 in memory: RunInstances starts pending instances (idempotent by ClientToken), describes
/// show them running, CreateTags sets the machine tag, TerminateInstances ends them.
#[derive(Clone, Default)]
pub struct FakeEc2 {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    instances: Vec<Instance>,
    tokens: HashMap<String, Vec<String>>,
    calls: BTreeMap<&'static str, usize>,
    runs: Vec<(String, i32)>,
}

impl FakeEc2 {
    /// A fake with nothing in it (its clones share it).
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls made of `operation`.
    pub fn calls(&self, operation: &str) -> usize {
        lock(&self.state).calls.get(operation).copied().unwrap_or(0)
    }

    /// (subnet, count) of every RunInstances, in order.
    pub fn runs(&self) -> Vec<(String, i32)> {
        lock(&self.state).runs.clone()
    }

    /// The live instances.
    pub fn live(&self) -> Vec<Instance> {
        lock(&self.state)
            .instances
            .iter()
            .filter(|i| !i.state.is_ending())
            .cloned()
            .collect()
    }

    /// Adds an instance as a batch launched before a crash leaves it: launch-spec tag, no machine.
    pub fn add_untagged(&self, id: &str, fingerprint: &str, launched_at: i64) {
        lock(&self.state).instances.push(Instance {
            launch_spec: Some(fingerprint.to_owned()),
            launched_at: Some(launched_at),
            ..instance(id, InstanceState::Running, None)
        });
    }

    fn count(&self, operation: &'static str) {
        *lock(&self.state).calls.entry(operation).or_default() += 1;
    }
}

impl InstanceApi for FakeEc2 {
    fn region(&self) -> &str {
        "us-east-1"
    }

    fn describe<'a>(&'a self, _tags: &'a ClusterTags) -> BoxFuture<'a, Result<Vec<Instance>, AwsError>> {
        self.count("DescribeInstances");
        let mut state = lock(&self.state);
        for listed in state.instances.iter_mut() {
            if listed.state == InstanceState::Pending {
                listed.state = InstanceState::Running;
            }
        }
        let live = state
            .instances
            .iter()
            .filter(|i| i.state != InstanceState::Terminated)
            .cloned()
            .collect();
        Box::pin(async move { Ok(live) })
    }

    fn run<'a>(&'a self, launch: RunRequest<'a>) -> BoxFuture<'a, Result<Vec<Instance>, AwsError>> {
        self.count("RunInstances");
        let mut state = lock(&self.state);
        state.runs.push((launch.subnet_id.to_owned(), launch.count));
        if let Some(ids) = state.tokens.get(launch.token).cloned() {
            let again = state
                .instances
                .iter()
                .filter(|i| ids.contains(&i.id))
                .cloned()
                .collect();
            return Box::pin(async move { Ok(again) });
        }
        let count = match launch.fill {
            Fill::All | Fill::Partial => launch.count as usize,
        };
        let first = state.instances.len();
        let launched: Vec<Instance> = (first..first + count)
            .map(|n| Instance {
                subnet_id: Some(launch.subnet_id.to_owned()),
                zone: "us-east-1a".into(),
                launch_spec: launch.tags.get(LAUNCH_SPEC_TAG).cloned(),
                launched_at: Some(now()),
                ..instance(
                    &format!("i-{n:04}"),
                    InstanceState::Pending,
                    launch.tags.get(MACHINE_TAG).map(String::as_str),
                )
            })
            .collect();
        state.tokens.insert(
            launch.token.to_owned(),
            launched.iter().map(|i| i.id.clone()).collect(),
        );
        state.instances.extend(launched.iter().cloned());
        Box::pin(async move { Ok(launched) })
    }

    fn tag<'a>(
        &'a self,
        id: &'a str,
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<(), AwsError>> {
        self.count("CreateTags");
        let mut state = lock(&self.state);
        if let Some(listed) = state.instances.iter_mut().find(|i| i.id == id) {
            listed.machine = tags.get(MACHINE_TAG).cloned();
        }
        Box::pin(async { Ok(()) })
    }

    fn terminate<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), AwsError>> {
        self.count("TerminateInstances");
        let mut state = lock(&self.state);
        for listed in state.instances.iter_mut().filter(|i| ids.contains(&i.id)) {
            listed.state = InstanceState::Terminated;
        }
        Box::pin(async { Ok(()) })
    }
}
