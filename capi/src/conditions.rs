//! metav1-shaped conditions: set with a stable `lastTransitionTime` and the observed generation.
//!
//! Reconcilers compute a list of [`Observed`] conditions from what they saw and merge them into the
//! previous status with [`merge`]; they never poke single conditions from deep inside a step.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Implemented by objects whose status carries metav1 conditions.
pub trait HasConditions {
    /// The current conditions (empty when there is no status yet).
    fn conditions(&self) -> &[Condition];
}

/// Status of a condition, as the API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

impl ConditionStatus {
    /// The API spelling (`"True"`, `"False"`, `"Unknown"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// A condition as a reconcile observed it, before timestamps and generation are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Condition type, e.g. `Ready`.
    pub type_: String,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// CamelCase reason, machine-readable.
    pub reason: String,
    /// Human-readable message; may be empty.
    pub message: String,
}

impl Observed {
    /// A condition that holds.
    pub fn true_(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, ConditionStatus::True, reason, message)
    }

    /// A condition that does not hold.
    pub fn false_(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, ConditionStatus::False, reason, message)
    }

    /// A condition with any status.
    pub fn new(type_: &str, status: ConditionStatus, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// Merges `observed` into `previous` and returns the new list, sorted by type.
///
/// `lastTransitionTime` is kept from the previous condition of the same type when the status did not
/// change, and set to `now` otherwise. Every merged condition carries `observed_generation`. Conditions
/// in `previous` whose type is not observed this time are kept unchanged (another writer may own them).
pub fn merge(
    previous: &[Condition],
    observed: &[Observed],
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) -> Vec<Condition> {
    let mut merged: Vec<Condition> = previous
        .iter()
        .filter(|old| !observed.iter().any(|new| new.type_ == old.type_))
        .cloned()
        .collect();
    for new in observed {
        let status = new.status.as_str();
        let last_transition_time = match find(previous, &new.type_) {
            Some(old) if old.status == status => old.last_transition_time.clone(),
            _ => Time(now),
        };
        merged.push(Condition {
            type_: new.type_.clone(),
            status: status.to_string(),
            reason: new.reason.clone(),
            message: new.message.clone(),
            last_transition_time,
            observed_generation,
        });
    }
    merged.sort_by(|a, b| a.type_.cmp(&b.type_));
    merged
}

/// The observed conditions with timestamps carried over from `previous`, and nothing else.
///
/// This is what a controller applies with server-side apply: it owns only the condition types it
/// observes, so conditions written by other managers are neither dropped nor claimed.
pub fn owned(
    previous: &[Condition],
    observed: &[Observed],
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) -> Vec<Condition> {
    merge(previous, observed, observed_generation, now)
        .into_iter()
        .filter(|condition| observed.iter().any(|new| new.type_ == condition.type_))
        .collect()
}

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|condition| condition.type_ == type_)
}

/// True when the condition of the given type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|condition| condition.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn new_condition_gets_now_as_transition_time_and_generation() {
        let merged = merge(
            &[],
            &[Observed::false_("Ready", "Waiting", "for owner")],
            Some(3),
            at(0),
        );
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].status, "False");
        assert_eq!(merged[0].reason, "Waiting");
        assert_eq!(merged[0].last_transition_time, Time(at(0)));
        assert_eq!(merged[0].observed_generation, Some(3));
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged_even_if_reason_changes() {
        let first = merge(
            &[],
            &[Observed::false_("Ready", "WaitingForOwner", "")],
            Some(1),
            at(0),
        );
        let second = merge(
            &first,
            &[Observed::false_("Ready", "WaitingForCluster", "x")],
            Some(2),
            at(60),
        );
        assert_eq!(second[0].last_transition_time, Time(at(0)));
        assert_eq!(second[0].reason, "WaitingForCluster");
        assert_eq!(second[0].message, "x");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn transition_time_moves_when_status_changes() {
        let first = merge(&[], &[Observed::false_("Ready", "Waiting", "")], Some(1), at(0));
        let second = merge(
            &first,
            &[Observed::true_("Ready", "Provisioned", "")],
            Some(1),
            at(90),
        );
        assert_eq!(second[0].status, "True");
        assert_eq!(second[0].last_transition_time, Time(at(90)));
    }

    #[test]
    fn owned_returns_only_observed_types_with_kept_transition_times() {
        let previous = merge(
            &[],
            &[
                Observed::true_("Other", "X", ""),
                Observed::false_("Ready", "Waiting", ""),
            ],
            Some(1),
            at(0),
        );
        let applied = owned(
            &previous,
            &[Observed::false_("Ready", "StillWaiting", "")],
            Some(2),
            at(30),
        );
        assert_eq!(applied.len(), 1);
        assert_eq!(applied[0].type_, "Ready");
        assert_eq!(applied[0].last_transition_time, Time(at(0)));
    }

    #[test]
    fn unobserved_conditions_are_kept_and_output_is_sorted() {
        let first = merge(&[], &[Observed::true_("Zeta", "Other", "")], Some(1), at(0));
        let second = merge(
            &first,
            &[Observed::false_("Paused", "NotPaused", "")],
            Some(2),
            at(5),
        );
        let types: Vec<&str> = second.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Paused", "Zeta"]);
        assert_eq!(
            second[1].observed_generation,
            Some(1),
            "untouched condition keeps its generation"
        );
        assert!(is_true(&second, "Zeta"));
        assert!(!is_true(&second, "Paused"));
        assert!(!is_true(&second, "Missing"));
    }
}
