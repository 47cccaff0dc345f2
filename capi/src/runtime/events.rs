//! Kubernetes Events for what users should see in `kubectl describe`: changes of the Ready condition.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use crate::conditions::{Condition, find};
use crate::contract::READY_CONDITION;

/// Publishes Events as one manager, each as a new Event object.
///
/// kube's [`Recorder`] remembers every Event it published for six minutes (to turn repeats into an
/// Event series) and scans that memory on every publish. The controllers publish only on changes
/// (of a Ready condition, of a certificate), so repeats are rare while the memory grows with the
/// machines: with 10,000 KubeZeroMachines waiting for their owners it held 10,000 Events. This
/// publisher keeps no history.
#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    reporter: Reporter,
}

impl EventPublisher {
    /// A publisher reporting as `reporter` (controller name and instance).
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    /// Creates an Event about `regarding`.
    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        Recorder::new(self.client.clone(), self.reporter.clone())
            .publish(event, regarding)
            .await
    }
}

/// The event type for a Ready condition: Normal while it holds or is waiting/paused, Warning otherwise.
pub fn event_type(ready: &Condition) -> EventType {
    let expected = ready.status == "True" || ready.reason.starts_with("Waiting") || ready.reason == "Paused";
    if expected {
        EventType::Normal
    } else {
        EventType::Warning
    }
}

/// Publishes an Event when the Ready condition's status or reason changed between `previous` and `current`.
///
/// Failures to publish are logged: an Event is never worth failing a reconcile for.
pub async fn report_ready_change<K>(
    recorder: &EventPublisher,
    object: &K,
    previous: &[Condition],
    current: &[Condition],
) where
    K: Resource<DynamicType = ()>,
{
    let Some(ready) = find(current, READY_CONDITION) else {
        return;
    };
    let unchanged = find(previous, READY_CONDITION)
        .is_some_and(|before| before.status == ready.status && before.reason == ready.reason);
    if unchanged {
        return;
    }
    let event = Event {
        type_: event_type(ready),
        reason: ready.reason.clone(),
        note: Some(if ready.message.is_empty() {
            format!("Ready={}", ready.status)
        } else {
            ready.message.clone()
        }),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(%error, "unable to publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{Observed, merge};

    fn ready(observed: Observed) -> Condition {
        merge(&[], &[observed], None, jiff::Timestamp::UNIX_EPOCH).remove(0)
    }

    #[test]
    fn waiting_and_ready_are_normal_failures_are_warnings() {
        assert_eq!(
            event_type(&ready(Observed::true_("Ready", "Provisioned", ""))),
            EventType::Normal
        );
        assert_eq!(
            event_type(&ready(Observed::false_("Ready", "WaitingForOwner", ""))),
            EventType::Normal
        );
        assert_eq!(
            event_type(&ready(Observed::false_("Ready", "PlatformMismatch", ""))),
            EventType::Warning
        );
    }
}
