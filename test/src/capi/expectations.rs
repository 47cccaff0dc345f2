//! MachineSet expectations: the Machines a MachineSet created or deleted that its Machine cache does
//! not reflect yet ([CAPI] core's MachineSet waits after each create and delete until its cache shows
//! the change, so a slow cache never makes it count too few or too many Machines).
//!
//! A creation is expected from the moment its request is sent (an answer lost in flight still
//! leaves a Machine behind) until the cache shows the Machine; a request the API refused is
//! forgotten at once. A deletion is expected until the cache shows the Machine deleting or gone.
//! Nothing is ever forgotten because time passed: an expectation older than the MachineSet's
//! timeout makes it read its Machines from the API server instead of the cache
//! ([`Expectations::confirm`] then settles what the cache did not show). Pure bookkeeping, no I/O.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What the cache shows of one Machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cached {
    /// Not in the cache.
    Absent,
    /// In the cache, not deleting.
    Present,
    /// In the cache with a deletionTimestamp.
    Deleting,
}

/// What a MachineSet still waits for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Outstanding {
    /// Created Machines the cache does not show.
    pub(crate) creations: usize,
    /// Deleted Machines the cache still shows alive.
    pub(crate) deletions: usize,
    /// Some of them were expected longer ago than the timeout.
    pub(crate) stale: bool,
}

impl Outstanding {
    /// Nothing outstanding: the cache can be trusted.
    pub(crate) fn met(&self) -> bool {
        self.creations == 0 && self.deletions == 0
    }
}

#[derive(Default)]
struct Pending {
    creations: HashMap<String, Instant>,
    deletions: HashMap<String, Instant>,
}

/// The expectations of every MachineSet, by uid.
#[derive(Default)]
pub(crate) struct Expectations {
    owners: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    /// MachineSet `owner` is about to create Machine `name`.
    pub(crate) fn expect_creation(&self, owner: &str, name: &str) {
        self.lock()
            .entry(owner.to_string())
            .or_default()
            .creations
            .insert(name.to_string(), Instant::now());
    }

    /// The API refused to create `name`: no Machine of that name will show.
    pub(crate) fn creation_refused(&self, owner: &str, name: &str) {
        if let Some(pending) = self.lock().get_mut(owner) {
            pending.creations.remove(name);
        }
    }

    /// MachineSet `owner` deleted Machine `name`.
    pub(crate) fn expect_deletion(&self, owner: &str, name: &str) {
        self.lock()
            .entry(owner.to_string())
            .or_default()
            .deletions
            .insert(name.to_string(), Instant::now());
    }

    /// Forgets what the cache (`cached`) now shows and returns what is still outstanding;
    /// expectations older than `timeout` make it [`Outstanding::stale`].
    pub(crate) fn observe(
        &self,
        owner: &str,
        timeout: Duration,
        cached: impl Fn(&str) -> Cached,
    ) -> Outstanding {
        let mut owners = self.lock();
        let Some(pending) = owners.get_mut(owner) else {
            return Outstanding::default();
        };
        pending.creations.retain(|name, _| cached(name) == Cached::Absent);
        pending
            .deletions
            .retain(|name, _| cached(name) == Cached::Present);
        let stale = pending
            .creations
            .values()
            .chain(pending.deletions.values())
            .any(|at| at.elapsed() >= timeout);
        let outstanding = Outstanding {
            creations: pending.creations.len(),
            deletions: pending.deletions.len(),
            stale,
        };
        if outstanding.met() {
            owners.remove(owner);
        }
        outstanding
    }

    /// Settles the expectations against a live list of the MachineSet's Machines (name → deleting):
    /// creations of Machines that do not exist and deletions of Machines gone or deleting are done;
    /// the rest wait another timeout before the next live list.
    pub(crate) fn confirm(&self, owner: &str, live: &HashMap<String, bool>) {
        let mut owners = self.lock();
        let Some(pending) = owners.get_mut(owner) else {
            return;
        };
        let now = Instant::now();
        pending.creations.retain(|name, at| {
            let exists = live.contains_key(name);
            if exists {
                *at = now;
            }
            exists
        });
        pending.deletions.retain(|name, at| {
            let alive = live.get(name) == Some(&false);
            if alive {
                *at = now;
            }
            alive
        });
        if pending.creations.is_empty() && pending.deletions.is_empty() {
            owners.remove(owner);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        self.owners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    #[test]
    fn a_creation_waits_for_the_cache_however_long_it_takes() {
        let e = Expectations::default();
        e.expect_creation("ms", "ms-a");
        let absent = |_: &str| Cached::Absent;
        let outstanding = e.observe("ms", Duration::ZERO, absent);
        assert_eq!(outstanding.creations, 1);
        assert!(outstanding.stale, "past the timeout it is stale, not forgotten");
        assert_eq!(e.observe("ms", LONG, absent).creations, 1);
        assert!(e.observe("ms", LONG, |_| Cached::Present).met());
    }

    #[test]
    fn a_refused_creation_is_not_waited_for() {
        let e = Expectations::default();
        e.expect_creation("ms", "ms-a");
        e.expect_creation("ms", "ms-b");
        e.creation_refused("ms", "ms-b");
        let outstanding = e.observe("ms", LONG, |_| Cached::Absent);
        assert_eq!((outstanding.creations, outstanding.stale), (1, false));
    }

    #[test]
    fn a_live_list_settles_what_the_cache_missed() {
        let e = Expectations::default();
        e.expect_creation("ms", "ms-a");
        e.expect_creation("ms", "ms-gone");
        e.expect_deletion("ms", "ms-old");
        let live = HashMap::from([("ms-a".to_string(), false), ("ms-old".to_string(), true)]);
        e.confirm("ms", &live);
        let outstanding = e.observe("ms", LONG, |_| Cached::Absent);
        // ms-a exists (the cache lags), ms-gone never will, ms-old is deleting.
        assert_eq!(
            (outstanding.creations, outstanding.deletions, outstanding.stale),
            (1, 0, false)
        );
    }

    #[test]
    fn a_deletion_waits_until_the_cache_shows_it() {
        let e = Expectations::default();
        e.expect_deletion("ms", "ms-a");
        assert_eq!(e.observe("ms", LONG, |_| Cached::Present).deletions, 1);
        assert!(e.observe("ms", LONG, |_| Cached::Deleting).met());
        e.expect_deletion("ms", "ms-b");
        assert!(
            e.observe("ms", LONG, |_| Cached::Absent).met(),
            "gone counts as deleted"
        );
    }
}
