//! The machine tags of instances launched in a batch (or found by a persisted id without them),
//! set in the background: one task runs passes over what is pending until nothing is; what fails
//! stays pending for the next pass.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::ec2::InstanceApi;
use super::lock;
use crate::aws::instances::{MACHINE_TAG, MachineKey};

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

/// The machine tags waiting to be set, and those set recently (a DescribeInstances may not show
/// them yet).
pub(super) struct Tagger {
    api: Arc<dyn InstanceApi>,
    /// How long a tag set here is remembered.
    memory: Duration,
    /// Instance id → the machine it is assigned to, and when.
    pending: Mutex<HashMap<String, (MachineKey, Instant)>>,
    /// Instance id → when its machine tags were set.
    tagged: Mutex<HashMap<String, Instant>>,
    /// Whether the tagging task runs.
    running: Mutex<bool>,
}

impl Tagger {
    /// A tagger calling `api` that remembers a tag it set for `memory`.
    pub(super) fn new(api: Arc<dyn InstanceApi>, memory: Duration) -> Self {
        Self {
            api,
            memory,
            pending: Mutex::new(HashMap::new()),
            tagged: Mutex::new(HashMap::new()),
            running: Mutex::new(false),
        }
    }

    /// Instance `id` belongs to `machine` and needs its machine tags ([`Tagger::start`] sets them).
    pub(super) fn assign(&self, id: &str, machine: &MachineKey) {
        lock(&self.pending).insert(id.to_owned(), (machine.clone(), Instant::now()));
    }

    /// Instance `id` is being terminated: its tags no longer matter.
    pub(super) fn forget(&self, id: &str) {
        lock(&self.pending).remove(id);
    }

    /// The instances waiting for their machine tags, with their machines.
    pub(super) fn pending(&self) -> HashMap<String, MachineKey> {
        lock(&self.pending)
            .iter()
            .map(|(id, (machine, _))| (id.clone(), machine.clone()))
            .collect()
    }

    /// The instances this process knows to belong to a machine whatever a view shows: waiting for
    /// their machine tags, or tagged less than the memory ago.
    pub(super) fn claimed(&self) -> HashSet<String> {
        let mut claimed: HashSet<String> = lock(&self.pending).keys().cloned().collect();
        let mut tagged = lock(&self.tagged);
        tagged.retain(|_, at| at.elapsed() < self.memory);
        claimed.extend(tagged.keys().cloned());
        claimed
    }

    /// Starts the tagging task unless it runs (it takes up what was assigned meanwhile).
    pub(super) fn start(self: &Arc<Self>) {
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
                let tags = machine_tags(&machine);
                match self.api.tag(&id, &tags).await {
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
            lock(&self.tagged).insert(id.to_owned(), Instant::now());
        }
        true
    }
}

/// The per-machine tags: the machine tag and `Name`.
pub fn machine_tags(member: &MachineKey) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MACHINE_TAG.to_owned(), member.tag_value()),
        ("Name".to_owned(), member.name.clone()),
    ])
}
