//! Launch batches: identical launches requested within a window go out as one RunInstances per
//! subnet used (`MinCount=1, MaxCount=N`, a ClientToken derived from the members), after adopting
//! the instances that already exist for them; each member learns its result on its next call and
//! is woken when the batch ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::time::Instant;

use super::ec2::RunRequest;
use super::tagger::machine_tags;
use super::{ClusterInstances, LaunchError, Request, lock};
use crate::aws::errors::AwsError;
use crate::aws::instances::{Fill, Instance, LAUNCH_SPEC_TAG, LaunchSpec, MachineKey, client_token, spread};

/// The members of one open batch of identical launch specs.
struct Group {
    id: u64,
    opened: Instant,
    last_join: Instant,
    spec: Arc<LaunchSpec>,
    members: Vec<MachineKey>,
}

/// The open batches by launch-spec fingerprint.
#[derive(Default)]
pub(super) struct PendingLaunches {
    next_id: u64,
    groups: HashMap<String, Group>,
}

impl PendingLaunches {
    /// No batch is open.
    pub(super) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// An existing instance a member of a batch gets instead of a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Adoption {
    /// Tagged for the member already (a launch whose answer was lost).
    Tagged(Instance),
    /// Of the batch's launch spec without a machine tag (a batch launched before a crash).
    Untagged(Instance),
}

/// What each of `members` (in order) adopts from `current` instead of launching: its own live
/// instance, else one of the live untagged instances of launch spec `fingerprint`, while there
/// are some; `None` for the members left to launch. Pure.
pub(super) fn plan_adoption(
    current: &[Instance],
    fingerprint: &str,
    members: &[MachineKey],
) -> Vec<Option<Adoption>> {
    let mut plan: Vec<Option<Adoption>> = members
        .iter()
        .map(|member| {
            let tag = member.tag_value();
            current
                .iter()
                .find(|i| i.machine.as_deref() == Some(tag.as_str()) && !i.state.is_ending())
                .map(|i| Adoption::Tagged(i.clone()))
        })
        .collect();
    let mut untagged = current.iter().filter(|i| {
        i.machine.is_none() && i.launch_spec.as_deref() == Some(fingerprint) && !i.state.is_ending()
    });
    for slot in plan.iter_mut().filter(|slot| slot.is_none()) {
        let Some(instance) = untagged.next() else { break };
        *slot = Some(Adoption::Untagged(instance.clone()));
    }
    plan
}

/// The subnet (index into `subnets`) of each of `count` new instances of launch spec
/// `fingerprint`, spread against its live instances in `current`. Pure.
pub(super) fn plan_subnets(
    count: usize,
    subnets: &[String],
    current: &[Instance],
    fingerprint: &str,
) -> Vec<usize> {
    let mut existing: BTreeMap<String, usize> = BTreeMap::new();
    for instance in current
        .iter()
        .filter(|i| i.launch_spec.as_deref() == Some(fingerprint) && !i.state.is_ending())
    {
        if let Some(subnet) = &instance.subnet_id {
            *existing.entry(subnet.clone()).or_default() += 1;
        }
    }
    spread(count, subnets, &existing)
}

impl ClusterInstances {
    /// Adds `machine` to the open batch of `spec`'s fingerprint (opening one if needed) and
    /// schedules the batch's launch.
    pub(super) fn join(self: &Arc<Self>, machine: MachineKey, spec: Arc<LaunchSpec>) {
        let fingerprint = spec.fingerprint();
        enum Flush {
            Now(Group),
            After(u64),
        }
        let flush = {
            let mut pending = lock(&self.launches);
            let next_id = pending.next_id;
            let now = Instant::now();
            let group = pending
                .groups
                .entry(fingerprint.clone())
                .or_insert_with(|| Group {
                    id: next_id,
                    opened: now,
                    last_join: now,
                    spec,
                    members: Vec::new(),
                });
            let opened = group.id == next_id;
            group.members.push(machine);
            group.last_join = now;
            let full = group.members.len() >= self.settings.max_batch;
            if opened {
                pending.next_id += 1;
            }
            if full {
                pending.groups.remove(&fingerprint).map(Flush::Now)
            } else if opened {
                Some(Flush::After(next_id))
            } else {
                None
            }
        };
        match flush {
            Some(Flush::Now(group)) => {
                tokio::spawn(self.clone().flush(fingerprint, group));
            }
            Some(Flush::After(id)) => {
                let this = self.clone();
                tokio::spawn(async move { this.flush_when_quiet(fingerprint, id).await });
            }
            None => {}
        }
    }

    /// Waits until no member joined group `id` for a window (or the group has been open for
    /// [`super::LauncherSettings::max_launch_wait`]), then launches it.
    async fn flush_when_quiet(self: Arc<Self>, fingerprint: String, id: u64) {
        let window = self.settings.launch_window;
        let mut deadline = Instant::now() + window;
        loop {
            tokio::time::sleep_until(deadline).await;
            let group = {
                let mut pending = lock(&self.launches);
                let Some(group) = pending.groups.get(&fingerprint).filter(|g| g.id == id) else {
                    return;
                };
                let next = (group.last_join + window).min(group.opened + self.settings.max_launch_wait);
                if Instant::now() < next {
                    deadline = next;
                    continue;
                }
                pending.groups.remove(&fingerprint)
            };
            if let Some(group) = group {
                self.flush(fingerprint, group).await;
            }
            return;
        }
    }

    /// Launches a closed batch (one at a time per cluster) and hands every member its result.
    async fn flush(self: Arc<Self>, fingerprint: String, group: Group) {
        let _serial = self.launch_lock.lock().await;
        let mut members = group.members;
        members.sort();
        let span = tracing::info_span!("launch", cluster = self.tags.cluster(), members = members.len());
        let results =
            tracing::Instrument::instrument(self.launch_group(&group.spec, &fingerprint, &members), span)
                .await;
        self.tagger.start();
        for (key, result) in members.into_iter().zip(results) {
            lock(&self.requests)
                .launches
                .insert(key.clone(), Request::Done(Instant::now(), result));
            self.wake(key);
        }
    }

    async fn launch_group(
        &self,
        spec: &LaunchSpec,
        fingerprint: &str,
        members: &[MachineKey],
    ) -> Vec<Result<Instance, LaunchError>> {
        let current = match self.instances().await {
            Ok(current) => current,
            Err(error) => return vec![Err(error.into()); members.len()],
        };
        let mut results: Vec<Option<Result<Instance, LaunchError>>> = Vec::with_capacity(members.len());
        for (adoption, member) in plan_adoption(&current, fingerprint, members)
            .into_iter()
            .zip(members)
        {
            results.push(match adoption {
                Some(Adoption::Tagged(instance)) => Some(Ok(instance)),
                Some(Adoption::Untagged(mut instance)) => {
                    self.claim(&mut instance, member).await;
                    Some(Ok(instance))
                }
                None => None,
            });
        }
        let rest: Vec<usize> = (0..members.len()).filter(|i| results[*i].is_none()).collect();
        if !rest.is_empty() && !spec.subnet_ids.is_empty() {
            let assignment = plan_subnets(rest.len(), &spec.subnet_ids, &current, fingerprint);
            for (subnet_index, subnet_id) in spec.subnet_ids.iter().enumerate() {
                let group: Vec<usize> = rest
                    .iter()
                    .zip(&assignment)
                    .filter(|(_, assigned)| **assigned == subnet_index)
                    .map(|(index, _)| *index)
                    .collect();
                if group.is_empty() {
                    continue;
                }
                let keys: Vec<MachineKey> = group.iter().map(|i| members[*i].clone()).collect();
                for (index, result) in group
                    .iter()
                    .zip(self.launch_in(spec, fingerprint, subnet_id, &keys).await)
                {
                    results[*index] = Some(result);
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(LaunchError::Abandoned)))
            .collect()
    }

    /// Launches one instance per member of `keys` in `subnet_id` and assigns them in order; a
    /// single member's machine tags go on at launch, a batch's are set afterwards.
    async fn launch_in(
        &self,
        spec: &LaunchSpec,
        fingerprint: &str,
        subnet_id: &str,
        keys: &[MachineKey],
    ) -> Vec<Result<Instance, LaunchError>> {
        let token = client_token(fingerprint, keys);
        let mut launch_tags = BTreeMap::from([(LAUNCH_SPEC_TAG.to_owned(), fingerprint.to_owned())]);
        if let [only] = keys {
            launch_tags.extend(machine_tags(only));
        }
        let request = RunRequest {
            spec,
            subnet_id,
            count: keys.len() as i32,
            fill: Fill::All,
            token: &token,
            tags: &launch_tags,
        };
        let launched = match self.run_batch(request).await {
            Ok(launched) => launched,
            Err(error) => return vec![Err(error.into()); keys.len()],
        };
        tracing::info!(
            subnet = subnet_id,
            requested = keys.len(),
            started = launched.len(),
            "RunInstances"
        );
        let started = launched.len();
        let mut launched = launched.into_iter();
        let mut results = Vec::with_capacity(keys.len());
        for member in keys {
            results.push(match launched.next() {
                Some(mut instance) => {
                    instance.launch_spec = Some(fingerprint.to_owned());
                    if keys.len() == 1 {
                        instance.machine = Some(member.tag_value());
                        self.record(&instance).await;
                    } else {
                        self.claim(&mut instance, member).await;
                    }
                    Ok(instance)
                }
                None => Err(LaunchError::Short {
                    started,
                    requested: keys.len(),
                }),
            });
        }
        results
    }

    /// One RunInstances for the whole batch; when EC2 lacks capacity for all of it, a second one
    /// (its own ClientToken, as its parameters differ) takes what there is, so a capacity shortage
    /// slows a batch down instead of failing every member.
    async fn run_batch(&self, request: RunRequest<'_>) -> Result<Vec<Instance>, AwsError> {
        match self.api.run(request).await {
            Err(error) if request.count > 1 && error.is_insufficient_capacity() => {
                tracing::info!(count = request.count, code = %error.code, "not enough capacity for the whole batch; launching what fits");
                let token = format!("{}-partial", request.token);
                self.api
                    .run(RunRequest {
                        fill: Fill::Partial,
                        token: &token,
                        ..request
                    })
                    .await
            }
            result => result,
        }
    }

    /// Assigns `instance` to `member`: remembered at once, machine tags set in the background once
    /// the batch is done.
    async fn claim(&self, instance: &mut Instance, member: &MachineKey) {
        instance.machine = Some(member.tag_value());
        self.record(instance).await;
        self.tagger.assign(&instance.id, member);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::instances::InstanceState;
    use crate::aws::launcher::testing::{instance, key};

    fn of_spec(id: &str, machine: Option<&str>, subnet: &str) -> Instance {
        Instance {
            launch_spec: Some("spec".into()),
            subnet_id: Some(subnet.into()),
            ..instance(id, InstanceState::Running, machine)
        }
    }

    #[test]
    fn members_adopt_their_own_instance_first_then_untagged_ones_of_the_spec() {
        let current = vec![
            of_spec("i-b", Some("default/b"), "s1"),
            of_spec("i-free", None, "s1"),
            Instance {
                launch_spec: Some("other".into()),
                ..of_spec("i-other", None, "s1")
            },
            Instance {
                state: InstanceState::ShuttingDown,
                ..of_spec("i-ending", None, "s1")
            },
        ];
        let members = [key("a"), key("b"), key("c")];
        let plan = plan_adoption(&current, "spec", &members);
        assert_eq!(
            plan,
            [
                Some(Adoption::Untagged(current[1].clone())),
                Some(Adoption::Tagged(current[0].clone())),
                None,
            ]
        );
    }

    #[test]
    fn a_terminating_own_instance_is_not_adopted() {
        let current = vec![Instance {
            state: InstanceState::ShuttingDown,
            ..of_spec("i-a", Some("default/a"), "s1")
        }];
        assert_eq!(plan_adoption(&current, "spec", &[key("a")]), [None]);
    }

    #[test]
    fn new_instances_go_where_the_spec_has_fewest() {
        let subnets = ["s1".to_owned(), "s2".to_owned(), "s3".to_owned()];
        let current = vec![
            of_spec("i-1", Some("default/x"), "s1"),
            of_spec("i-2", Some("default/y"), "s1"),
            of_spec("i-3", Some("default/z"), "s2"),
            Instance {
                launch_spec: Some("other".into()),
                ..of_spec("i-4", None, "s3")
            },
        ];
        assert_eq!(plan_subnets(3, &subnets, &current, "spec"), [2, 1, 2]);
    }
}
