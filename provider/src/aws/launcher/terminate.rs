//! Terminations of one cluster's instances requested within a window go out as one
//! TerminateInstances (chunks of [`TERMINATE_CHUNK`]); each requester learns its result on its
//! next call, and is woken when the batch ends.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::view::terminating;
use super::{ClusterInstances, Request, lock};
use crate::aws::errors::AwsError;
use crate::aws::instances::{InstanceState, TERMINATE_CHUNK};

/// The instance ids waiting for the next TerminateInstances, and whether its timer runs.
#[derive(Debug, Default)]
pub(super) struct PendingTerminations {
    timer: bool,
    ids: Vec<String>,
}

impl PendingTerminations {
    /// No termination waits for its batch.
    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl ClusterInstances {
    /// Adds `instance_id` to the next termination batch, starting its window if none is open.
    pub(super) fn queue_termination(self: &Arc<Self>, instance_id: &str) {
        let start = {
            let mut pending = lock(&self.terminations);
            pending.ids.push(instance_id.to_owned());
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
        let mut ids = {
            let mut pending = lock(&self.terminations);
            pending.timer = false;
            std::mem::take(&mut pending.ids)
        };
        ids.sort();
        ids.dedup();
        let mut outcome: HashMap<String, Result<(), AwsError>> = HashMap::new();
        for chunk in ids.chunks(TERMINATE_CHUNK) {
            match self.api.terminate(chunk).await {
                Ok(()) => outcome.extend(chunk.iter().map(|id| (id.clone(), Ok(())))),
                // One unknown id fails the whole call: terminate the chunk one by one.
                Err(error) if error.is_not_found() && chunk.len() > 1 => {
                    for id in chunk {
                        let single = self.api.terminate(std::slice::from_ref(id)).await;
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
            let result = outcome.remove(id).unwrap_or(Ok(()));
            if result.is_ok() {
                self.mark_terminating(id).await;
            }
            let machine = {
                let mut requests = lock(&self.requests);
                requests.terminations.get_mut(id).map(|(machine, request)| {
                    *request = Request::Done(Instant::now(), result);
                    machine.clone()
                })
            };
            if let Some(machine) = machine {
                self.wake(machine);
            }
        }
    }

    /// Shows instance `instance_id` as shutting down in the view and stops tagging it.
    pub(super) async fn mark_terminating(&self, instance_id: &str) {
        self.tagger.forget(instance_id);
        let mut instance = self
            .viewed(instance_id)
            .await
            .unwrap_or_else(|| terminating(instance_id));
        instance.state = InstanceState::ShuttingDown;
        self.record(&instance).await;
    }
}
