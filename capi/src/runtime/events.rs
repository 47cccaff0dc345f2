//! Kubernetes Events for what users should see in `kubectl describe`: changes of the Ready condition.

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::conditions::{Condition, find};
use crate::contract::READY_CONDITION;

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
    recorder: &Recorder,
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
