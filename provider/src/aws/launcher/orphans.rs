//! Instances of a launch batch that no machine claimed (the process stopped between RunInstances
//! and the claim, and no machine adopted them): terminated once they are older than the grace
//! period, so a crash never leaks an instance. A task of its own looks at every new view; reading
//! a view terminates nothing.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::ClusterInstances;
use crate::aws::instances::{Instance, TERMINATE_CHUNK};

/// The views the sweep looks at (the latest one; `None` before the first).
pub(super) type Views = watch::Receiver<Option<Arc<Vec<Instance>>>>;

/// The ids of the instances in `view` that are orphans at `now` (seconds since the epoch): a
/// launch-spec tag and no machine tag, not `claimed` by a machine of this process, live, and
/// launched more than `grace` ago. Pure.
pub(super) fn orphans(
    view: &[Instance],
    claimed: &HashSet<String>,
    now: i64,
    grace: Duration,
) -> Vec<String> {
    let grace = grace.as_secs() as i64;
    view.iter()
        .filter(|i| i.machine.is_none() && i.launch_spec.is_some() && !i.state.is_ending())
        .filter(|i| !claimed.contains(&i.id))
        .filter(|i| i.launched_at.is_some_and(|at| now - at > grace))
        .map(|i| i.id.clone())
        .collect()
}

/// Runs the sweep over every new view of `instances` until it is dropped.
pub(super) fn spawn_sweep(instances: Weak<ClusterInstances>, mut views: Views) {
    tokio::spawn(async move {
        while views.changed().await.is_ok() {
            let view = views.borrow_and_update().clone();
            let (Some(instances), Some(view)) = (instances.upgrade(), view) else {
                continue;
            };
            instances.sweep(&view).await;
        }
    });
}

impl ClusterInstances {
    /// Terminates the orphans of `view`; nothing until every machine had
    /// [`super::LauncherSettings::orphan_grace`] to claim its instance since this view was made
    /// (after a restart too).
    async fn sweep(&self, view: &[Instance]) {
        if self.created.elapsed() < self.settings.orphan_grace {
            return;
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let orphans = orphans(view, &self.tagger.claimed(), now, self.settings.orphan_grace);
        if orphans.is_empty() {
            return;
        }
        tracing::warn!(
            cluster = self.tags.cluster(),
            ?orphans,
            "terminating instances no machine claimed"
        );
        for chunk in orphans.chunks(TERMINATE_CHUNK) {
            match self.api.terminate(chunk).await {
                Ok(()) => {
                    for id in chunk {
                        self.mark_terminating(id).await;
                    }
                }
                Err(error) => tracing::warn!(%error, "terminating unclaimed instances failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::instances::InstanceState;
    use crate::aws::launcher::testing::instance;

    fn launched(id: &str, at: i64, machine: Option<&str>) -> Instance {
        Instance {
            launch_spec: Some("spec".into()),
            launched_at: Some(at),
            ..instance(id, InstanceState::Running, machine)
        }
    }

    const GRACE: Duration = Duration::from_secs(120);

    #[test]
    fn only_unclaimed_batch_instances_older_than_the_grace_are_orphans() {
        let now = 10_000;
        let view = vec![
            launched("i-old", now - 121, None),
            launched("i-young", now - 120, None),
            launched("i-tagged", now - 500, Some("default/a")),
            launched("i-claimed", now - 500, None),
            Instance {
                launch_spec: None,
                ..launched("i-foreign", now - 500, None)
            },
            Instance {
                state: InstanceState::ShuttingDown,
                ..launched("i-ending", now - 500, None)
            },
            Instance {
                launched_at: None,
                ..launched("i-undated", now - 500, None)
            },
        ];
        let claimed = HashSet::from(["i-claimed".to_owned()]);
        assert_eq!(orphans(&view, &claimed, now, GRACE), ["i-old"]);
    }
}
