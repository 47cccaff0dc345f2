//! Per-cluster batching of instance calls, shared by every KubeZeroMachine of a cluster:
//!
//! - one filtered DescribeInstances per cluster per cycle ([`LauncherSettings::describe_interval`]),
//!   whatever the number of machines asking;
//! - launches of identical [`LaunchSpec`]s pending within [`LauncherSettings::launch_window`] go out
//!   as one RunInstances (`MinCount=1, MaxCount=N`, a ClientToken derived from the members) and the
//!   instances are assigned to their machines at once; their machine tags are set in the background
//!   (CreateTags has its own rate bucket, 10 per second: a machine does not wait for its turn);
//! - before launching, instances already tagged for a member, and untagged instances of the same
//!   spec (a batch launched before a crash), are adopted instead;
//! - terminations pending within the window go out as one TerminateInstances;
//! - a controller does not wait for a batch: [`ClusterInstances::request_launch`] and
//!   [`ClusterInstances::request_termination`] join one and return, and the batch's end is sent on
//!   the wake channel ([`Launcher::with_wake`]) so the machine is reconciled again with its result;
//! - untagged instances of a launch spec that nobody adopted within
//!   [`LauncherSettings::orphan_grace`] (counted from the launch and from the start of the
//!   process) are terminated, so a crash never leaks an instance; an instance a machine found by
//!   its persisted id is tagged again instead.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kubezero_capi::runtime::errors::ErrorClass;
use tokio::sync::{Mutex as AsyncMutex, mpsc, oneshot};
use tokio::time::Instant;

use super::clients::AwsClients;
use super::errors::AwsError;
use super::instances::{
    Fill, Instance, InstanceState, LAUNCH_SPEC_TAG, LaunchSpec, MACHINE_TAG, MachineKey, TERMINATE_CHUNK,
    client_token, describe_cluster_instances, run_instances, spread, tag_instance, terminate_instances,
};
use super::tags::ClusterTags;

/// Timing and size of the batching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LauncherSettings {
    /// Oldest cluster view a reader that waits on a state change gets ([`Freshness::Current`]);
    /// at most one DescribeInstances per cluster per interval.
    pub describe_interval: Duration,
    /// Oldest cluster view a [`Freshness::Settled`] lookup gets.
    pub settled_view_age: Duration,
    /// How long a launch (or termination) waits for identical ones before the call goes out; a
    /// launch batch waits again while members keep joining, up to [`LauncherSettings::max_launch_wait`].
    pub launch_window: Duration,
    /// Longest a launch batch stays open while members keep joining.
    pub max_launch_wait: Duration,
    /// Most instances per RunInstances; a full batch goes out at once.
    pub max_batch: usize,
    /// Age after which an instance of a launch spec that no machine claimed is terminated.
    pub orphan_grace: Duration,
    /// How long instances this process launched or terminated override what DescribeInstances
    /// shows (EC2 reads are eventually consistent).
    pub local_memory: Duration,
}

impl Default for LauncherSettings {
    fn default() -> Self {
        Self {
            describe_interval: Duration::from_secs(2),
            settled_view_age: Duration::from_secs(60),
            launch_window: Duration::from_secs(5),
            max_launch_wait: Duration::from_secs(30),
            max_batch: 500,
            orphan_grace: Duration::from_secs(120),
            local_memory: Duration::from_secs(120),
        }
    }
}

/// Why a machine did not get an instance.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LaunchError {
    /// An AWS call of the batch failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// EC2 started fewer instances than the batch asked for (capacity); the machine tries again.
    #[error("EC2 started {started} of {requested} instances of the batch; this machine got none")]
    Short {
        /// Instances started.
        started: usize,
        /// Instances asked for.
        requested: usize,
    },
    /// The batch was dropped before it finished (the process is stopping).
    #[error("the launch batch was abandoned")]
    Abandoned,
}

impl LaunchError {
    /// The error class the controller requeues by.
    pub fn class(&self) -> ErrorClass {
        match self {
            LaunchError::Aws(error) => error.class(),
            LaunchError::Short { .. } | LaunchError::Abandoned => ErrorClass::Transient,
        }
    }
}

/// How fresh a view of the cluster's instances a lookup needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// At most [`LauncherSettings::describe_interval`] old: the caller waits for an instance to
    /// start or to end.
    Current,
    /// At most [`LauncherSettings::settled_view_age`] old: the caller looks at a running instance,
    /// or for an instance this process either records itself (it launched, adopted or terminated
    /// it) or saw in its first view (launched before the process started).
    Settled,
}

impl Freshness {
    fn max_age(self, settings: &LauncherSettings) -> Duration {
        match self {
            Freshness::Current => settings.describe_interval,
            Freshness::Settled => settings.settled_view_age,
        }
    }
}

/// The batchers of every cluster of the process, keyed by (region, namespace, cluster).
#[derive(Debug, Default)]
pub struct Launcher {
    settings: LauncherSettings,
    wake: Option<Wake>,
    clusters: Mutex<HashMap<String, Arc<ClusterInstances>>>,
}

/// Where a batcher sends the machines whose requested launch or termination has ended.
pub type Wake = mpsc::UnboundedSender<MachineKey>;

impl Launcher {
    /// A launcher with these settings and no wake channel.
    pub fn new(settings: LauncherSettings) -> Self {
        Self {
            settings,
            wake: None,
            clusters: Mutex::new(HashMap::new()),
        }
    }

    /// A launcher that sends each machine whose requested launch or termination ended to `wake`.
    pub fn with_wake(settings: LauncherSettings, wake: Wake) -> Self {
        Self {
            wake: Some(wake),
            ..Self::new(settings)
        }
    }

    /// The batcher of the cluster `tags` names in `namespace`, made on first use.
    pub fn cluster(&self, aws: &AwsClients, tags: &ClusterTags, namespace: &str) -> Arc<ClusterInstances> {
        let key = format!("{}/{namespace}/{}", aws.region(), tags.cluster());
        lock(&self.clusters)
            .entry(key)
            .or_insert_with(|| {
                let mut instances = ClusterInstances::new(aws.clone(), tags.clone(), self.settings.clone());
                instances.wake = self.wake.clone();
                Arc::new(instances)
            })
            .clone()
    }

    /// Forgets a cluster's batcher (its cluster is gone).
    pub fn forget(&self, aws: &AwsClients, tags: &ClusterTags, namespace: &str) {
        let key = format!("{}/{namespace}/{}", aws.region(), tags.cluster());
        lock(&self.clusters).remove(&key);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone, Debug)]
struct Snapshot {
    at: Instant,
    instances: Arc<Vec<Instance>>,
}

type LaunchReply = oneshot::Sender<Result<Instance, LaunchError>>;

struct Group {
    id: u64,
    opened: Instant,
    last_join: Instant,
    fingerprint: String,
    spec: Arc<LaunchSpec>,
    /// The members and, for callers that wait ([`ClusterInstances::launch`]), where to answer.
    members: Vec<(MachineKey, Option<LaunchReply>)>,
}

/// Where a requested launch stands ([`ClusterInstances::request_launch`]).
#[derive(Clone, Debug)]
pub enum LaunchStatus {
    /// The machine is in a batch that has not ended yet.
    InFlight,
    /// The machine's batch ended with this result.
    Done(Box<Result<Instance, LaunchError>>),
}

/// A requested launch or termination of one machine: in a batch, or ended with a result kept
/// until the machine's next reconcile collects it.
enum Request<T> {
    InFlight,
    Done(Instant, T),
}

/// Requested launches by machine, requested terminations by instance id.
#[derive(Default)]
struct Requests {
    launches: HashMap<MachineKey, Request<Result<Instance, LaunchError>>>,
    terminations: HashMap<String, (MachineKey, Request<Result<(), AwsError>>)>,
}

impl Requests {
    /// Drops results nobody collected within `keep` (their machines went away).
    fn prune(&mut self, keep: Duration) {
        self.launches.retain(|_, request| request.fresh(keep));
        self.terminations.retain(|_, (_, request)| request.fresh(keep));
    }
}

impl<T> Request<T> {
    /// In flight, or ended less than `keep` ago.
    fn fresh(&self, keep: Duration) -> bool {
        match self {
            Request::InFlight => true,
            Request::Done(at, _) => at.elapsed() < keep,
        }
    }
}

#[derive(Default)]
struct PendingLaunches {
    next_id: u64,
    groups: HashMap<String, Group>,
}

type TerminationReply = oneshot::Sender<Result<(), AwsError>>;

#[derive(Default)]
struct PendingTerminations {
    timer: bool,
    /// Instance ids and, for callers that wait ([`ClusterInstances::terminate`]), where to answer.
    waiters: Vec<(String, Option<TerminationReply>)>,
}

/// The instances of one cluster: a shared, briefly cached view and the launch and termination
/// batches.
pub struct ClusterInstances {
    aws: AwsClients,
    tags: ClusterTags,
    settings: LauncherSettings,
    snapshot: AsyncMutex<Option<Snapshot>>,
    local: Mutex<HashMap<String, (Instant, Instance)>>,
    pending: Mutex<PendingLaunches>,
    launch_lock: AsyncMutex<()>,
    terminations: Mutex<PendingTerminations>,
    requests: Mutex<Requests>,
    /// Sets the machine tags of assigned instances; they are never taken for orphans meanwhile.
    tagger: Arc<Tagger>,
    /// When this view was made: orphans are only collected once every machine had
    /// [`LauncherSettings::orphan_grace`] to claim its instance (after a restart too).
    created: Instant,
    wake: Option<Wake>,
}

impl std::fmt::Debug for ClusterInstances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterInstances")
            .field("cluster", &self.tags.cluster())
            .field("region", &self.aws.region())
            .finish_non_exhaustive()
    }
}

impl ClusterInstances {
    /// A batcher for the cluster `tags` names.
    pub fn new(aws: AwsClients, tags: ClusterTags, settings: LauncherSettings) -> Self {
        Self {
            tagger: Arc::new(Tagger::new(aws.clone())),
            aws,
            tags,
            settings,
            snapshot: AsyncMutex::new(None),
            local: Mutex::new(HashMap::new()),
            pending: Mutex::new(PendingLaunches::default()),
            launch_lock: AsyncMutex::new(()),
            terminations: Mutex::new(PendingTerminations::default()),
            requests: Mutex::new(Requests::default()),
            created: Instant::now(),
            wake: None,
        }
    }

    /// The cluster's live instances, at most [`LauncherSettings::describe_interval`] old: concurrent
    /// readers share one DescribeInstances.
    pub async fn instances(&self) -> Result<Arc<Vec<Instance>>, AwsError> {
        self.instances_within(self.settings.describe_interval).await
    }

    async fn instances_within(&self, max_age: Duration) -> Result<Arc<Vec<Instance>>, AwsError> {
        let mut snapshot = self.snapshot.lock().await;
        if let Some(current) = snapshot.as_ref()
            && current.at.elapsed() <= max_age
        {
            return Ok(current.instances.clone());
        }
        let described = describe_cluster_instances(&self.aws, &self.tags).await?;
        let merged = Arc::new(self.merge_local(described));
        *snapshot = Some(Snapshot {
            at: Instant::now(),
            instances: merged.clone(),
        });
        drop(snapshot);
        self.collect_orphans(&merged);
        Ok(merged)
    }

    /// Records that `instance`, found by the id `machine` persisted, belongs to it: when the view
    /// shows it without machine tags (their CreateTags failed, or the process restarted before it),
    /// they are set in the background and the instance is never taken for an orphan.
    pub fn keep_assigned(&self, instance: &Instance, machine: &MachineKey) {
        if instance.machine.is_none() && !instance.state.is_ending() {
            self.tagger.assign(&instance.id, machine);
            self.tagger.start();
        }
    }

    /// Applies what this process knows better than a possibly stale DescribeInstances: instances
    /// it launched that are not listed yet, machine tags not visible yet, terminations issued.
    fn merge_local(&self, mut described: Vec<Instance>) -> Vec<Instance> {
        let untagged = self.tagger.pending();
        for listed in described.iter_mut().filter(|i| i.machine.is_none()) {
            if let Some(machine) = untagged.get(&listed.id) {
                listed.machine = Some(machine.tag_value());
            }
        }
        let mut local = lock(&self.local);
        local.retain(|_, (at, _)| at.elapsed() < self.settings.local_memory);
        for (_, known) in local.values() {
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

    /// Records an instance this process launched, adopted or terminated, in the current view too.
    async fn record(&self, instance: &Instance) {
        lock(&self.local).insert(instance.id.clone(), (Instant::now(), instance.clone()));
        let mut snapshot = self.snapshot.lock().await;
        if let Some(current) = snapshot.as_mut() {
            let mut instances: Vec<Instance> = current.instances.as_ref().clone();
            match instances.iter_mut().find(|i| i.id == instance.id) {
                Some(listed) => *listed = instance.clone(),
                None => instances.push(instance.clone()),
            }
            current.instances = Arc::new(instances);
        }
    }

    /// The instance of `machine` in a view as fresh as `freshness` asks: the one with
    /// `instance_id` when known, else the one tagged for the machine (a live one before one that
    /// is terminating).
    pub async fn find(
        &self,
        machine: &MachineKey,
        instance_id: Option<&str>,
        freshness: Freshness,
    ) -> Result<Option<Instance>, AwsError> {
        let instances = self.instances_within(freshness.max_age(&self.settings)).await?;
        if let Some(id) = instance_id {
            return Ok(instances.iter().find(|i| i.id == id).cloned());
        }
        let tag = machine.tag_value();
        let mut tagged = instances
            .iter()
            .filter(|i| i.machine.as_deref() == Some(tag.as_str()));
        let live = tagged.clone().find(|i| !i.state.is_ending());
        Ok(live.or_else(|| tagged.next()).cloned())
    }

    /// Gets `machine` an instance of `spec` without waiting for it: the first call joins (or
    /// opens) the batch of identical specs and answers [`LaunchStatus::InFlight`], as do calls
    /// while the batch runs; the first call after the batch ended answers its result. The batch's
    /// end is sent on the wake channel.
    pub fn request_launch(self: &Arc<Self>, machine: MachineKey, spec: Arc<LaunchSpec>) -> LaunchStatus {
        {
            let mut requests = lock(&self.requests);
            requests.prune(self.settings.local_memory);
            match requests.launches.remove(&machine) {
                Some(Request::Done(_, result)) => return LaunchStatus::Done(Box::new(result)),
                Some(Request::InFlight) => {
                    requests.launches.insert(machine, Request::InFlight);
                    return LaunchStatus::InFlight;
                }
                None => {
                    requests.launches.insert(machine.clone(), Request::InFlight);
                }
            }
        }
        self.join(machine, spec, None);
        LaunchStatus::InFlight
    }

    /// The result of `machine`'s ended launch, taken (it is answered once), without requesting a
    /// launch: `None` when the launch is still in flight or none is known to this process.
    pub fn take_launch_result(&self, machine: &MachineKey) -> Option<Result<Instance, LaunchError>> {
        let mut requests = lock(&self.requests);
        match requests.launches.remove(machine)? {
            Request::Done(_, result) => Some(result),
            Request::InFlight => {
                requests.launches.insert(machine.clone(), Request::InFlight);
                None
            }
        }
    }

    /// Whether a launch requested for `machine` has not ended yet (its instance may still appear).
    pub fn launch_in_flight(&self, machine: &MachineKey) -> bool {
        matches!(
            lock(&self.requests).launches.get(machine),
            Some(Request::InFlight)
        )
    }

    /// Gets `machine` an instance of `spec` and waits for it: joins (or opens) the batch of
    /// identical specs, which launches after the window; adopts a matching instance instead when
    /// one exists.
    pub async fn launch(
        self: &Arc<Self>,
        machine: MachineKey,
        spec: Arc<LaunchSpec>,
    ) -> Result<Instance, LaunchError> {
        let (reply, answer) = oneshot::channel();
        self.join(machine, spec, Some(reply));
        answer.await.map_err(|_| LaunchError::Abandoned)?
    }

    /// Adds `machine` to the open batch of `spec`'s fingerprint (opening one if needed) and
    /// schedules the batch's flush.
    fn join(self: &Arc<Self>, machine: MachineKey, spec: Arc<LaunchSpec>, reply: Option<LaunchReply>) {
        let fingerprint = spec.fingerprint();
        enum Flush {
            Now(Group),
            After(u64),
        }
        let flush = {
            let mut pending = lock(&self.pending);
            let next_id = pending.next_id;
            let now = Instant::now();
            let group = pending
                .groups
                .entry(fingerprint.clone())
                .or_insert_with(|| Group {
                    id: next_id,
                    opened: now,
                    last_join: now,
                    fingerprint: fingerprint.clone(),
                    spec,
                    members: Vec::new(),
                });
            let opened = group.id == next_id;
            group.members.push((machine, reply));
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
                tokio::spawn(self.clone().flush(group));
            }
            Some(Flush::After(id)) => {
                let this = self.clone();
                tokio::spawn(async move { this.flush_when_quiet(fingerprint, id).await });
            }
            None => {}
        }
    }

    /// Waits until no member joined group `id` for a window (or the group has been open for
    /// [`LauncherSettings::max_launch_wait`]), then launches it.
    async fn flush_when_quiet(self: Arc<Self>, fingerprint: String, id: u64) {
        let window = self.settings.launch_window;
        let mut deadline = Instant::now() + window;
        loop {
            tokio::time::sleep_until(deadline).await;
            let group = {
                let mut pending = lock(&self.pending);
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
                self.flush(group).await;
            }
            return;
        }
    }

    async fn flush(self: Arc<Self>, group: Group) {
        let _serial = self.launch_lock.lock().await;
        let mut members = group.members;
        members.sort_by(|a, b| a.0.cmp(&b.0));
        let keys: Vec<MachineKey> = members.iter().map(|(key, _)| key.clone()).collect();
        let span = tracing::info_span!("launch", cluster = self.tags.cluster(), members = keys.len());
        let results =
            tracing::Instrument::instrument(self.launch_group(&group.spec, &group.fingerprint, &keys), span)
                .await;
        self.tagger.start();
        for ((key, reply), result) in members.into_iter().zip(results) {
            match reply {
                Some(reply) => {
                    let _ = reply.send(result);
                }
                None => {
                    lock(&self.requests)
                        .launches
                        .insert(key.clone(), Request::Done(Instant::now(), result));
                    self.wake(key);
                }
            }
        }
    }

    /// Tells the controller that `machine`'s requested launch or termination ended.
    fn wake(&self, machine: MachineKey) {
        if let Some(wake) = &self.wake {
            let _ = wake.send(machine);
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
        let mut results: Vec<Option<Result<Instance, LaunchError>>> = vec![None; members.len()];
        // Instances already tagged for a member (a launch whose answer was lost).
        for (slot, member) in results.iter_mut().zip(members) {
            let tag = member.tag_value();
            if let Some(existing) = current
                .iter()
                .find(|i| i.machine.as_deref() == Some(tag.as_str()) && !i.state.is_ending())
            {
                *slot = Some(Ok(existing.clone()));
            }
        }
        // Untagged instances of this spec (a batch launched before a crash).
        let mut orphans = current.iter().filter(|i| {
            i.machine.is_none() && i.launch_spec.as_deref() == Some(fingerprint) && !i.state.is_ending()
        });
        for (slot, member) in results.iter_mut().zip(members) {
            if slot.is_some() {
                continue;
            }
            let Some(orphan) = orphans.next() else { break };
            let mut adopted = orphan.clone();
            self.claim(&mut adopted, member).await;
            *slot = Some(Ok(adopted));
        }
        let rest: Vec<usize> = (0..members.len()).filter(|i| results[*i].is_none()).collect();
        if !rest.is_empty() && !spec.subnet_ids.is_empty() {
            // Spread the new instances over the candidate subnets: one RunInstances per subnet used.
            let mut existing: BTreeMap<String, usize> = BTreeMap::new();
            for instance in current
                .iter()
                .filter(|i| i.launch_spec.as_deref() == Some(fingerprint) && !i.state.is_ending())
            {
                if let Some(subnet) = &instance.subnet_id {
                    *existing.entry(subnet.clone()).or_default() += 1;
                }
            }
            let assignment = spread(rest.len(), &spec.subnet_ids, &existing);
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

    /// Launches one instance per member of `keys` in `subnet_id` and assigns them in order.
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
        let launched = match self
            .run_batch(spec, subnet_id, keys.len() as i32, &token, &launch_tags)
            .await
        {
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
                        Ok(instance)
                    } else {
                        self.claim(&mut instance, member).await;
                        Ok(instance)
                    }
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
    async fn run_batch(
        &self,
        spec: &LaunchSpec,
        subnet_id: &str,
        count: i32,
        token: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<Vec<Instance>, AwsError> {
        match run_instances(&self.aws, spec, subnet_id, count, Fill::All, token, tags).await {
            Err(error) if count > 1 && error.code.starts_with("Insufficient") => {
                tracing::info!(count, code = %error.code, "not enough capacity for the whole batch; launching what fits");
                run_instances(
                    &self.aws,
                    spec,
                    subnet_id,
                    count,
                    Fill::Partial,
                    &format!("{token}-partial"),
                    tags,
                )
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

    /// Terminates `machine`'s instance `instance_id` with the other terminations pending in the
    /// window, without waiting: `None` while the termination is queued or running, then once the
    /// result of the batch (sent on the wake channel when it ends).
    pub fn request_termination(
        self: &Arc<Self>,
        machine: MachineKey,
        instance_id: &str,
    ) -> Option<Result<(), AwsError>> {
        {
            let mut requests = lock(&self.requests);
            requests.prune(self.settings.local_memory);
            match requests.terminations.remove(instance_id) {
                Some((_, Request::Done(_, result))) => return Some(result),
                Some(request @ (_, Request::InFlight)) => {
                    requests.terminations.insert(instance_id.to_owned(), request);
                    return None;
                }
                None => {
                    requests
                        .terminations
                        .insert(instance_id.to_owned(), (machine, Request::InFlight));
                }
            }
        }
        self.queue_termination(instance_id, None);
        None
    }

    /// Terminates `instance_id` together with the other terminations pending in the window and
    /// waits for the batch.
    pub async fn terminate(self: &Arc<Self>, instance_id: &str) -> Result<(), AwsError> {
        let (reply, answer) = oneshot::channel();
        self.queue_termination(instance_id, Some(reply));
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(AwsError::unexpected(
                "TerminateInstances",
                "the termination batch was abandoned",
            )),
        }
    }

    fn queue_termination(self: &Arc<Self>, instance_id: &str, reply: Option<TerminationReply>) {
        let start = {
            let mut pending = lock(&self.terminations);
            pending.waiters.push((instance_id.to_owned(), reply));
            !std::mem::replace(&mut pending.timer, true)
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(this.settings.launch_window).await;
                this.flush_terminations().await;
            });
        }
    }

    async fn flush_terminations(self: Arc<Self>) {
        let waiters = {
            let mut pending = lock(&self.terminations);
            pending.timer = false;
            std::mem::take(&mut pending.waiters)
        };
        let mut ids: Vec<String> = waiters.iter().map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids.dedup();
        let mut outcome: HashMap<String, Result<(), AwsError>> = HashMap::new();
        for chunk in ids.chunks(TERMINATE_CHUNK) {
            match terminate_instances(&self.aws, chunk).await {
                Ok(()) => outcome.extend(chunk.iter().map(|id| (id.clone(), Ok(())))),
                // One unknown id fails the whole call: terminate the chunk one by one.
                Err(error) if error.is_not_found() && chunk.len() > 1 => {
                    for id in chunk {
                        let single = terminate_instances(&self.aws, std::slice::from_ref(id)).await;
                        outcome.insert(
                            id.clone(),
                            single.or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) }),
                        );
                    }
                }
                Err(error) if error.is_not_found() => {
                    outcome.extend(chunk.iter().map(|id| (id.clone(), Ok(()))))
                }
                Err(error) => outcome.extend(chunk.iter().map(|id| (id.clone(), Err(error.clone())))),
            }
        }
        tracing::info!(
            cluster = self.tags.cluster(),
            instances = ids.len(),
            "TerminateInstances"
        );
        for id in &ids {
            if matches!(outcome.get(id), Some(Ok(()))) {
                self.mark_terminating(id).await;
            }
        }
        for (id, reply) in waiters {
            let result = outcome.get(&id).cloned().unwrap_or(Ok(()));
            match reply {
                Some(reply) => {
                    let _ = reply.send(result);
                }
                None => {
                    let machine = {
                        let mut requests = lock(&self.requests);
                        requests.terminations.get_mut(&id).map(|(machine, request)| {
                            *request = Request::Done(Instant::now(), result);
                            machine.clone()
                        })
                    };
                    if let Some(machine) = machine {
                        self.wake(machine);
                    }
                }
            }
        }
    }

    async fn mark_terminating(&self, instance_id: &str) {
        self.tagger.forget(instance_id);
        let known = {
            let snapshot = self.snapshot.lock().await;
            snapshot
                .as_ref()
                .and_then(|s| s.instances.iter().find(|i| i.id == instance_id).cloned())
        };
        let mut instance = known.unwrap_or_else(|| Instance {
            id: instance_id.to_owned(),
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
        });
        instance.state = InstanceState::ShuttingDown;
        self.record(&instance).await;
    }

    /// Terminates instances of a launch spec that no machine claimed within the grace period.
    fn collect_orphans(&self, instances: &[Instance]) {
        if self.created.elapsed() < self.settings.orphan_grace {
            return;
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let grace = self.settings.orphan_grace.as_secs() as i64;
        let orphans: Vec<String> = instances
            .iter()
            .filter(|i| i.machine.is_none() && i.launch_spec.is_some() && !i.state.is_ending())
            .filter(|i| i.launched_at.is_some_and(|at| now - at > grace))
            .map(|i| i.id.clone())
            .collect();
        if orphans.is_empty() {
            return;
        }
        tracing::warn!(
            cluster = self.tags.cluster(),
            ?orphans,
            "terminating instances no machine claimed"
        );
        let aws = self.aws.clone();
        tokio::spawn(async move {
            for chunk in orphans.chunks(TERMINATE_CHUNK) {
                if let Err(error) = terminate_instances(&aws, chunk).await {
                    tracing::warn!(%error, "terminating unclaimed instances failed");
                }
            }
        });
    }
}

/// CreateTags calls in flight at once (the limiter paces them).
const TAG_CONCURRENCY: usize = 8;
/// Pause after a tagging pass that set no tag at all, doubled up to [`TAG_RETRY_MAX`].
const TAG_RETRY_FIRST: Duration = Duration::from_secs(2);
/// Longest pause between tagging passes that fail.
const TAG_RETRY_MAX: Duration = Duration::from_secs(30);
/// How long after its assignment an instance EC2 does not know yet is still tagged again (EC2
/// reads are eventually consistent: a new instance can be "not found" for a while); after that it
/// is taken as gone.
const TAG_NOT_FOUND_FOR: Duration = Duration::from_secs(5 * 60);

/// The machine tags of instances assigned to a machine but not tagged yet, set in the background
/// by one task that runs passes (each over what is pending when it starts) until nothing is
/// pending; what fails stays pending for the next pass.
struct Tagger {
    aws: AwsClients,
    /// Instance id → the machine it is assigned to, and when.
    pending: Mutex<HashMap<String, (MachineKey, Instant)>>,
    /// Whether the tagging task runs.
    running: Mutex<bool>,
}

impl Tagger {
    fn new(aws: AwsClients) -> Self {
        Self {
            aws,
            pending: Mutex::new(HashMap::new()),
            running: Mutex::new(false),
        }
    }

    /// Instance `id` belongs to `machine` and needs its machine tags ([`Tagger::start`] sets them).
    fn assign(&self, id: &str, machine: &MachineKey) {
        lock(&self.pending).insert(id.to_owned(), (machine.clone(), Instant::now()));
    }

    /// Instance `id` is being terminated: its tags no longer matter.
    fn forget(&self, id: &str) {
        lock(&self.pending).remove(id);
    }

    /// The instances waiting for their machine tags.
    fn pending(&self) -> HashMap<String, MachineKey> {
        lock(&self.pending)
            .iter()
            .map(|(id, (machine, _))| (id.clone(), machine.clone()))
            .collect()
    }

    /// Starts the tagging task unless it runs (it takes up what was assigned meanwhile).
    fn start(self: &Arc<Self>) {
        {
            let mut running = lock(&self.running);
            if *running || lock(&self.pending).is_empty() {
                return;
            }
            *running = true;
        }
        let this = self.clone();
        tokio::spawn(async move { this.tag_until_done().await });
    }

    async fn tag_until_done(&self) {
        let mut pause = TAG_RETRY_FIRST;
        loop {
            let progressed = self.pass().await;
            {
                let mut running = lock(&self.running);
                if lock(&self.pending).is_empty() {
                    *running = false;
                    return;
                }
            }
            if progressed {
                pause = TAG_RETRY_FIRST;
            } else {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(TAG_RETRY_MAX);
            }
        }
    }

    /// Tags what is pending; whether any instance left the pending set.
    async fn pass(&self) -> bool {
        use futures::StreamExt as _;
        let pending = lock(&self.pending).clone();
        let done = futures::stream::iter(pending)
            .map(|(id, (machine, assigned))| async move {
                match tag_instance(&self.aws, &id, &machine_tags(&machine)).await {
                    Ok(()) => self.tagged(&id, &machine),
                    Err(error) if error.is_not_found() && assigned.elapsed() >= TAG_NOT_FOUND_FOR => {
                        self.tagged(&id, &machine)
                    }
                    Err(error) => {
                        tracing::warn!(instance = %id, machine = %machine.tag_value(), %error, "tagging the instance failed; trying again");
                        false
                    }
                }
            })
            .buffer_unordered(TAG_CONCURRENCY)
            .filter(|done| std::future::ready(*done))
            .count()
            .await;
        done > 0
    }

    /// Drops `id` from the pending tags unless it was assigned to another machine meanwhile.
    fn tagged(&self, id: &str, machine: &MachineKey) -> bool {
        let mut pending = lock(&self.pending);
        if pending.get(id).is_some_and(|(assigned, _)| assigned == machine) {
            pending.remove(id);
        }
        true
    }
}

/// The per-machine tags set right after launch: the machine tag and `Name`.
pub fn machine_tags(member: &MachineKey) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MACHINE_TAG.to_owned(), member.tag_value()),
        ("Name".to_owned(), member.name.clone()),
    ])
}
