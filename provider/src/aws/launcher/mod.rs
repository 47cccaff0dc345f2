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
//!   process) are terminated by a sweep of each new view, so a crash never leaks an instance; an
//!   instance a machine found by its persisted id is tagged again instead.
//!
//! One module per job: `view` (the shared view), `batch` (launch batches and what they adopt),
//! `terminate` (termination batches), `tagger` (machine tags after a batched launch), `orphans`
//! (the sweep), `ec2` (the calls, behind [`ec2::InstanceApi`]).

mod batch;
pub mod ec2;
mod orphans;
mod tagger;
mod terminate;
#[cfg(test)]
mod testing;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubezero_capi::runtime::errors::ErrorClass;
use tokio::sync::{Mutex as AsyncMutex, mpsc, watch};
use tokio::time::Instant;

use self::batch::PendingLaunches;
use self::ec2::InstanceApi;
use self::tagger::Tagger;
use self::terminate::PendingTerminations;
use self::view::View;
use super::errors::AwsError;
use super::instances::{Instance, LaunchSpec, MachineKey};
use super::tags::ClusterTags;

pub use self::tagger::machine_tags;

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

    /// The batcher of the cluster `tags` names in `namespace`, calling `api`, made on first use.
    pub fn cluster<A>(&self, api: &A, tags: &ClusterTags, namespace: &str) -> Arc<ClusterInstances>
    where
        A: InstanceApi + Clone + 'static,
    {
        let key = cluster_key(api.region(), namespace, tags.cluster());
        lock(&self.clusters)
            .entry(key)
            .or_insert_with(|| {
                ClusterInstances::with_wake(
                    Arc::new(api.clone()),
                    tags.clone(),
                    self.settings.clone(),
                    self.wake.clone(),
                )
            })
            .clone()
    }

    /// Forgets the batcher of cluster `cluster` in `namespace` and `region` (its cluster is being
    /// deleted) unless a launch, termination or tag of it is still in flight; whether it did.
    pub fn forget(&self, region: &str, namespace: &str, cluster: &str) -> bool {
        let key = cluster_key(region, namespace, cluster);
        let mut clusters = lock(&self.clusters);
        match clusters.get(&key) {
            Some(instances) if !instances.is_idle() => false,
            _ => {
                clusters.remove(&key);
                true
            }
        }
    }

    /// How many clusters have a batcher.
    pub fn clusters(&self) -> usize {
        lock(&self.clusters).len()
    }
}

fn cluster_key(region: &str, namespace: &str, cluster: &str) -> String {
    format!("{region}/{namespace}/{cluster}")
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
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

impl<T> Request<T> {
    /// In flight, or ended less than `keep` ago.
    fn fresh(&self, keep: Duration) -> bool {
        match self {
            Request::InFlight => true,
            Request::Done(at, _) => at.elapsed() < keep,
        }
    }
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

/// The instances of one cluster: a shared, briefly cached view, the launch and termination
/// batches, the machine tags still to set and the orphan sweep.
pub struct ClusterInstances {
    api: Arc<dyn InstanceApi>,
    tags: ClusterTags,
    settings: LauncherSettings,
    view: View,
    /// Every new view, for the orphan sweep.
    sweep: watch::Sender<Option<Arc<Vec<Instance>>>>,
    launches: Mutex<PendingLaunches>,
    /// One launch batch at a time per cluster.
    launch_lock: AsyncMutex<()>,
    terminations: Mutex<PendingTerminations>,
    requests: Mutex<Requests>,
    /// Sets the machine tags of assigned instances; they are never taken for orphans meanwhile.
    tagger: Arc<Tagger>,
    /// When this batcher was made: orphans are only collected once every machine had
    /// [`LauncherSettings::orphan_grace`] to claim its instance (after a restart too).
    created: Instant,
    wake: Option<Wake>,
}

impl std::fmt::Debug for ClusterInstances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterInstances")
            .field("cluster", &self.tags.cluster())
            .field("region", &self.api.region())
            .finish_non_exhaustive()
    }
}

impl ClusterInstances {
    /// A batcher for the cluster `tags` names, calling `api`, without a wake channel; its orphan
    /// sweep runs on the current tokio runtime until the batcher is dropped.
    pub fn new(api: Arc<dyn InstanceApi>, tags: ClusterTags, settings: LauncherSettings) -> Arc<Self> {
        Self::with_wake(api, tags, settings, None)
    }

    /// A batcher that sends each machine whose requested launch or termination ended to `wake`.
    pub fn with_wake(
        api: Arc<dyn InstanceApi>,
        tags: ClusterTags,
        settings: LauncherSettings,
        wake: Option<Wake>,
    ) -> Arc<Self> {
        let (sweep, views) = watch::channel(None);
        let instances = Arc::new(Self {
            tagger: Arc::new(Tagger::new(api.clone(), settings.local_memory)),
            api,
            tags,
            settings,
            view: View::default(),
            sweep,
            launches: Mutex::new(PendingLaunches::default()),
            launch_lock: AsyncMutex::new(()),
            terminations: Mutex::new(PendingTerminations::default()),
            requests: Mutex::new(Requests::default()),
            created: Instant::now(),
            wake,
        });
        orphans::spawn_sweep(Arc::downgrade(&instances), views);
        instances
    }

    /// The cluster's live instances, at most [`LauncherSettings::describe_interval`] old: concurrent
    /// readers share one DescribeInstances.
    pub async fn instances(&self) -> Result<Arc<Vec<Instance>>, AwsError> {
        self.instances_within(self.settings.describe_interval).await
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

    /// Records that `instance`, found by the id `machine` persisted, belongs to it: when the view
    /// shows it without machine tags (their CreateTags failed, or the process restarted before it),
    /// they are set in the background and the instance is never taken for an orphan.
    pub fn keep_assigned(&self, instance: &Instance, machine: &MachineKey) {
        if instance.machine.is_none() && !instance.state.is_ending() {
            self.tagger.assign(&instance.id, machine);
            self.tagger.start();
        }
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
        self.join(machine, spec);
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
        self.queue_termination(instance_id);
        None
    }

    /// Nothing in flight: no launch or termination requested and not ended, no open batch, no
    /// machine tag to set.
    fn is_idle(&self) -> bool {
        let requests = lock(&self.requests);
        let in_flight = requests.launches.values().any(|r| matches!(r, Request::InFlight))
            || requests
                .terminations
                .values()
                .any(|(_, r)| matches!(r, Request::InFlight));
        !in_flight
            && lock(&self.launches).is_empty()
            && lock(&self.terminations).is_empty()
            && self.tagger.pending().is_empty()
    }

    /// Tells the controller that `machine`'s requested launch or termination ended.
    fn wake(&self, machine: MachineKey) {
        if let Some(wake) = &self.wake {
            let _ = wake.send(machine);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{FakeEc2, key, now, spec};
    use super::*;

    fn batcher(
        fake: &FakeEc2,
        settings: LauncherSettings,
    ) -> (Arc<ClusterInstances>, mpsc::UnboundedReceiver<MachineKey>) {
        let (wake, woken) = mpsc::unbounded_channel();
        let instances = ClusterInstances::with_wake(
            Arc::new(fake.clone()),
            ClusterTags::new("demo", Default::default()),
            settings,
            Some(wake),
        );
        (instances, woken)
    }

    async fn woken(woken: &mut mpsc::UnboundedReceiver<MachineKey>, count: usize) -> Vec<MachineKey> {
        let mut keys = Vec::new();
        while keys.len() < count {
            keys.push(woken.recv().await.expect("wake channel open"));
        }
        keys.sort();
        keys
    }

    /// Lets spawned tasks (the tagger, the sweep) run to their next timer.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_within_the_window_launch_with_one_call_and_wake_every_member() {
        let fake = FakeEc2::new();
        let (instances, mut wake) = batcher(&fake, LauncherSettings::default());
        let spec = Arc::new(spec(&["subnet-1"]));
        let keys: Vec<MachineKey> = (0..8).map(|i| key(&format!("m{i}"))).collect();
        for member in &keys {
            assert!(matches!(
                instances.request_launch(member.clone(), spec.clone()),
                LaunchStatus::InFlight
            ));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(
            fake.calls("RunInstances"),
            0,
            "the batch waits for a quiet window"
        );
        assert_eq!(woken(&mut wake, 8).await, keys);
        assert_eq!(fake.runs(), [("subnet-1".to_owned(), 8)]);
        let mut ids = Vec::new();
        for member in &keys {
            assert!(!instances.launch_in_flight(member));
            let launched = instances
                .take_launch_result(member)
                .expect("ended")
                .expect("launched");
            assert_eq!(launched.machine, Some(member.tag_value()));
            ids.push(launched.id);
            assert!(instances.take_launch_result(member).is_none(), "answered once");
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 8, "one instance per member");
        settle().await;
        assert_eq!(fake.calls("CreateTags"), 8, "machine tags set after the batch");
        assert!(fake.live().iter().all(|i| i.machine.is_some()));
        assert_eq!(fake.calls("DescribeInstances"), 1, "one look before launching");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_that_keeps_growing_goes_out_at_the_longest_wait() {
        let fake = FakeEc2::new();
        let settings = LauncherSettings::default();
        let (instances, mut wake) = batcher(&fake, settings.clone());
        let spec = Arc::new(spec(&["subnet-1"]));
        let started = Instant::now();
        let mut joined = 0;
        while started.elapsed() < settings.max_launch_wait + Duration::from_secs(8) {
            instances.request_launch(key(&format!("m{joined}")), spec.clone());
            joined += 1;
            tokio::time::sleep(settings.launch_window / 2).await;
            if fake.calls("RunInstances") > 0 {
                break;
            }
        }
        let waited = started.elapsed();
        assert!(waited >= settings.max_launch_wait, "{waited:?}");
        assert!(
            waited <= settings.max_launch_wait + settings.launch_window,
            "{waited:?}"
        );
        let first = woken(&mut wake, 1).await;
        assert_eq!(fake.runs().len(), 1);
        assert!(fake.runs()[0].1 >= 2, "{:?} for {first:?}", fake.runs());
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_with_an_instance_adopts_it_and_only_the_rest_launch() {
        let fake = FakeEc2::new();
        let (instances, mut wake) = batcher(&fake, LauncherSettings::default());
        let spec = Arc::new(spec(&["subnet-1"]));
        fake.add_untagged("i-left", &spec.fingerprint(), now());
        let keys = [key("a"), key("b")];
        for member in &keys {
            instances.request_launch(member.clone(), spec.clone());
        }
        woken(&mut wake, 2).await;
        let a = instances
            .take_launch_result(&keys[0])
            .expect("ended")
            .expect("adopted");
        assert_eq!(a.id, "i-left", "the untagged instance of the spec is adopted");
        assert_eq!(
            fake.runs(),
            [("subnet-1".to_owned(), 1)],
            "only the other member launches"
        );
        let b = instances
            .take_launch_result(&keys[1])
            .expect("ended")
            .expect("launched");
        assert_eq!(
            b.machine,
            Some(keys[1].tag_value()),
            "a single launch is tagged at launch"
        );
        settle().await;
        assert_eq!(
            fake.calls("CreateTags"),
            1,
            "the adopted instance gets its machine tags"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn terminations_within_the_window_go_out_as_one_call() {
        let fake = FakeEc2::new();
        let (instances, mut wake) = batcher(&fake, LauncherSettings::default());
        let spec = Arc::new(spec(&["subnet-1"]));
        let keys: Vec<MachineKey> = (0..5).map(|i| key(&format!("m{i}"))).collect();
        for member in &keys {
            instances.request_launch(member.clone(), spec.clone());
        }
        woken(&mut wake, 5).await;
        let launched: Vec<Instance> = keys
            .iter()
            .map(|k| instances.take_launch_result(k).expect("ended").expect("launched"))
            .collect();
        for (member, instance) in keys.iter().zip(&launched) {
            assert!(
                instances
                    .request_termination(member.clone(), &instance.id)
                    .is_none()
            );
        }
        assert_eq!(woken(&mut wake, 5).await, keys);
        assert_eq!(fake.calls("TerminateInstances"), 1);
        for (member, instance) in keys.iter().zip(&launched) {
            assert!(matches!(
                instances.request_termination(member.clone(), &instance.id),
                Some(Ok(()))
            ));
        }
        assert!(fake.live().is_empty());
        let view = instances
            .find(&keys[0], Some(&launched[0].id), Freshness::Current)
            .await
            .expect("view");
        assert_eq!(view, None, "a terminated instance leaves the view");
    }

    #[tokio::test(start_paused = true)]
    async fn orphans_are_terminated_from_a_new_view_only_after_the_grace_period() {
        let fake = FakeEc2::new();
        let settings = LauncherSettings::default();
        let (instances, _wake) = batcher(&fake, settings.clone());
        let grace = settings.orphan_grace.as_secs() as i64;
        fake.add_untagged("i-orphan", "spec", now() - grace - 1);
        fake.add_untagged("i-kept", "spec", now() - grace - 1);
        instances.keep_assigned(
            &instances
                .find(&key("a"), Some("i-kept"), Freshness::Current)
                .await
                .expect("view")
                .expect("listed"),
            &key("a"),
        );
        settle().await;
        assert_eq!(
            fake.calls("TerminateInstances"),
            0,
            "nothing before this batcher's own grace"
        );
        tokio::time::sleep(settings.orphan_grace).await;
        assert_eq!(
            fake.calls("TerminateInstances"),
            0,
            "reading no view, nothing is swept"
        );
        instances.instances().await.expect("view");
        settle().await;
        assert_eq!(fake.calls("TerminateInstances"), 1);
        let live: Vec<String> = fake.live().into_iter().map(|i| i.id).collect();
        assert_eq!(
            live,
            ["i-kept"],
            "the instance a machine keeps is never an orphan"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_batcher_per_cluster_until_it_is_forgotten() {
        let fake = FakeEc2::new();
        let launcher = Launcher::new(LauncherSettings::default());
        let tags = ClusterTags::new("demo", Default::default());
        let first = launcher.cluster(&fake, &tags, "default");
        assert!(Arc::ptr_eq(&first, &launcher.cluster(&fake, &tags, "default")));
        launcher.cluster(&fake, &tags, "other");
        assert_eq!(launcher.clusters(), 2);
        assert!(launcher.forget("us-east-1", "default", "demo"));
        assert_eq!(launcher.clusters(), 1);
        let second = launcher.cluster(&fake, &tags, "default");
        assert!(!Arc::ptr_eq(&first, &second));
        second.request_launch(key("a"), Arc::new(spec(&["subnet-1"])));
        assert!(
            !launcher.forget("us-east-1", "default", "demo"),
            "a launch is in flight"
        );
        assert_eq!(launcher.clusters(), 2);
    }
}
