//! Pause semantics (contract §1): a Cluster with `spec.paused: true`, or an object annotated
//! `cluster.x-k8s.io/paused`, is left alone except for its `Paused` condition.

use kube::api::ObjectMeta;

use crate::conditions::Observed;
use crate::contract::{NOT_PAUSED_REASON, PAUSED_ANNOTATION, PAUSED_CONDITION, PAUSED_REASON};
use crate::core::Cluster;

/// Why an object is paused, or `None` when it is not.
pub fn pause_reason(cluster: Option<&Cluster>, meta: &ObjectMeta) -> Option<String> {
    if cluster.is_some_and(Cluster::is_paused) {
        return Some("the Cluster has spec.paused set".to_string());
    }
    let annotated = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(PAUSED_ANNOTATION));
    annotated.then(|| format!("the object has the {PAUSED_ANNOTATION} annotation"))
}

/// The `Paused` condition for the given pause state.
pub fn paused_condition(reason: Option<&str>) -> Observed {
    match reason {
        Some(message) => Observed::true_(PAUSED_CONDITION, PAUSED_REASON, message),
        None => Observed::false_(PAUSED_CONDITION, NOT_PAUSED_REASON, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::ConditionStatus;
    use crate::core::ClusterSpec;

    fn cluster(paused: Option<bool>) -> Cluster {
        Cluster::new(
            "demo",
            ClusterSpec {
                paused,
                ..Default::default()
            },
        )
    }

    #[test]
    fn cluster_spec_paused_pauses() {
        assert!(pause_reason(Some(&cluster(Some(true))), &ObjectMeta::default()).is_some());
        assert!(pause_reason(Some(&cluster(Some(false))), &ObjectMeta::default()).is_none());
        assert!(pause_reason(Some(&cluster(None)), &ObjectMeta::default()).is_none());
    }

    #[test]
    fn paused_annotation_with_any_value_pauses_even_without_cluster() {
        let meta = ObjectMeta {
            annotations: Some([(PAUSED_ANNOTATION.to_string(), String::new())].into()),
            ..Default::default()
        };
        assert!(pause_reason(None, &meta).unwrap().contains(PAUSED_ANNOTATION));
        assert!(pause_reason(None, &ObjectMeta::default()).is_none());
    }

    #[test]
    fn paused_condition_reports_reason() {
        let on = paused_condition(Some("why"));
        assert_eq!(
            (on.status, on.reason.as_str(), on.message.as_str()),
            (ConditionStatus::True, "Paused", "why")
        );
        let off = paused_condition(None);
        assert_eq!(
            (off.status, off.reason.as_str()),
            (ConditionStatus::False, "NotPaused")
        );
    }
}
