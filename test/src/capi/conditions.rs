//! The v1beta2 condition arithmetic of CAPI core, as the stand-in needs it to write the same
//! conditions with the same reasons and messages ([CAPI] `util/conditions`: mirror, aggregate,
//! summary and the default merge strategy). Pure: no I/O.
//!
//! - **Mirror**: a provider object's `Ready` copied under another type; without one, a fallback built
//!   from a boolean the contract defines (`dataSecretCreated`, `provisioned`).
//! - **Aggregate**: one condition type over many objects (a MachineSet's `MachinesReady` over its
//!   Machines' `Ready`). A missing condition counts as `Unknown`, reason `NotYetReported`. The message
//!   lists at most three messages, issues before unknowns before infos, control-plane Machines first,
//!   then the messages most objects share; each names up to three objects and counts the rest
//!   (`* Machines a, b, c, ... (17 more): <message>`), and `And N Machines with other issues` counts
//!   the objects whose messages did not make the cut.
//! - **Summary**: several condition types of one object (a Machine's `Ready`), in the given order;
//!   the message has one `* <Type>: <message>` line per issue or unknown (infos only when all is well
//!   and they have a message).
//!
//! Conditions are kept as JSON in the objects; [`Condition`] is the typed view used to merge them, and
//! [`set`] writes one back the way core's `conditions.Set` does (the transition time changes only
//! when the status does).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::util;

/// Reason of a condition an object does not report yet.
pub(crate) const NOT_YET_REPORTED: &str = "NotYetReported";
/// Reason core reads when a mirrored condition has none.
pub(crate) const NO_REASON_REPORTED: &str = "NoReasonReported";

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown` (also any unexpected value).
    Unknown,
}

impl Status {
    /// The wire form.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }

    fn parse(value: &str) -> Status {
        match value {
            "True" => Status::True,
            "False" => Status::False,
            _ => Status::Unknown,
        }
    }

    /// `True` for true, `False` for false.
    pub(crate) fn from_bool(value: bool) -> Status {
        if value { Status::True } else { Status::False }
    }
}

/// One metav1 condition, as merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Condition {
    /// `type`.
    pub(crate) type_: String,
    /// `status`.
    pub(crate) status: Status,
    /// `reason`.
    pub(crate) reason: String,
    /// `message`.
    pub(crate) message: String,
    /// `lastTransitionTime` as stored (RFC 3339; empty when not set), used to order merges.
    pub(crate) last_transition: String,
}

impl Condition {
    /// A condition without a transition time (set by [`set`]).
    pub(crate) fn new(type_: &str, status: Status, reason: &str, message: impl Into<String>) -> Condition {
        Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.into(),
            last_transition: String::new(),
        }
    }

    fn from_json(value: &Value) -> Option<Condition> {
        let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or("").to_string();
        let type_ = text("type");
        if type_.is_empty() {
            return None;
        }
        Some(Condition {
            type_,
            status: Status::parse(&text("status")),
            reason: text("reason"),
            message: text("message"),
            last_transition: text("lastTransitionTime"),
        })
    }
}

/// The conditions in `status.conditions` of an object's `data`, in their order.
pub(crate) fn of_object(data: &Value) -> Vec<Condition> {
    of_status(data.get("status").unwrap_or(&Value::Null))
}

/// The conditions in `conditions` of a status object, in their order.
pub(crate) fn of_status(status: &Value) -> Vec<Condition> {
    status
        .get("conditions")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Condition::from_json).collect())
        .unwrap_or_default()
}

/// Condition `type_` of a status object.
pub(crate) fn get(status: &Value, type_: &str) -> Option<Condition> {
    of_status(status).into_iter().find(|c| c.type_ == type_)
}

/// True when condition `type_` of a status object is `True`.
pub(crate) fn is_true(status: &Value, type_: &str) -> bool {
    get(status, type_).is_some_and(|c| c.status == Status::True)
}

/// Writes `condition` into `status.conditions` (core's `conditions.Set`): replaces the condition of
/// the same type, keeping its `lastTransitionTime` when the status did not change, and records
/// `observedGeneration`.
pub(crate) fn set(status: &mut Value, condition: &Condition, generation: Option<i64>) {
    util::set_condition(
        status,
        &condition.type_,
        condition.status.as_str(),
        &condition.reason,
        &condition.message,
        generation,
    );
}

/// How a condition weighs in a merge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Priority {
    /// Not in its normal state (`False` for a positive condition, `True` for a negative one).
    Issue,
    /// `Unknown`.
    Unknown,
    /// In its normal state.
    Info,
}

/// The default priority of `condition`, `negative` naming the types whose normal state is `False`.
pub(crate) fn default_priority(condition: &Condition, negative: &[&str]) -> Priority {
    let negative = negative.contains(&condition.type_.as_str());
    match (condition.status, negative) {
        (Status::True, false) | (Status::False, true) => Priority::Info,
        (Status::False, false) | (Status::True, true) => Priority::Issue,
        (Status::Unknown, _) => Priority::Unknown,
    }
}

/// The reasons a merge picks from: issues, else unknowns, else infos.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reasons {
    /// At least one issue.
    pub(crate) issue: &'static str,
    /// No issue, at least one unknown.
    pub(crate) unknown: &'static str,
    /// Only infos.
    pub(crate) info: &'static str,
}

/// A condition and the object it belongs to, for aggregated messages.
#[derive(Clone, Debug)]
pub(crate) struct Owned {
    /// Kind of the object (`Machine`, `MachineDeployment`, ...).
    pub(crate) kind: String,
    /// Name of the object.
    pub(crate) name: String,
    /// A Machine labelled `cluster.x-k8s.io/control-plane` (its messages go first).
    pub(crate) control_plane: bool,
    /// Its condition of the aggregated type; `None` when it reports none.
    pub(crate) condition: Option<Condition>,
}

impl Owned {
    /// The condition `type_` of `obj` (a `DynamicObject`'s data) of kind `kind`.
    pub(crate) fn of(kind: &str, name: &str, control_plane: bool, data: &Value, type_: &str) -> Owned {
        Owned {
            kind: kind.to_string(),
            name: name.to_string(),
            control_plane,
            condition: of_object(data).into_iter().find(|c| c.type_ == type_),
        }
    }
}

/// Aggregates condition `source_type` of `objects` into `target_type` (core's
/// `NewAggregateCondition` with the default merge strategy). `negative` marks a source type whose
/// normal state is `False` (`ScalingUp`, `RollingOut`): the target then has the same polarity.
/// `objects` must not be empty.
pub(crate) fn aggregate(
    objects: &[Owned],
    source_type: &str,
    target_type: &str,
    negative: bool,
    reasons: Reasons,
) -> Condition {
    let negative_types: &[&str] = if negative { &[source_type] } else { &[] };
    let mut conditions: Vec<(Owned, Condition)> = objects
        .iter()
        .map(|o| {
            let condition = o.condition.clone().unwrap_or_else(|| {
                Condition::new(
                    source_type,
                    Status::Unknown,
                    NOT_YET_REPORTED,
                    format!("Condition {source_type} not yet reported"),
                )
            });
            (o.clone(), condition)
        })
        .collect();
    // Older transitions first (a stable sort, like core's).
    conditions.sort_by(|a, b| a.1.last_transition.cmp(&b.1.last_transition));
    let priority = |c: &Condition| default_priority(c, negative_types);
    let (issues, unknowns, infos) = split(&conditions, |(_, c)| priority(c));
    let status = target_status(!issues.is_empty(), !unknowns.is_empty(), !negative);
    let reason = pick_reason(reasons, !issues.is_empty(), !unknowns.is_empty());
    let mut budget = 3;
    let messages = if !issues.is_empty() || !unknowns.is_empty() {
        let mut relevant = issues;
        relevant.extend(unknowns);
        aggregate_messages(
            &relevant,
            &mut budget,
            false,
            &priority,
            &[
                (Priority::Issue, "with other issues"),
                (Priority::Unknown, "with status unknown"),
            ],
        )
    } else {
        aggregate_messages(
            &infos,
            &mut budget,
            true,
            &priority,
            &[(Priority::Info, "with additional info")],
        )
    };
    Condition::new(target_type, status, reason, messages.join("\n"))
}

/// Options of [`summary`].
pub(crate) struct SummaryOptions<'a> {
    /// The types summarized, in order of relevance.
    pub(crate) types: &'a [&'a str],
    /// Types whose normal state is `False` (`Deleting`, `Updating`).
    pub(crate) negative: &'a [&'a str],
    /// Types that are left out, rather than counted as unknown, when the object lacks them.
    pub(crate) ignore_if_missing: &'a [&'a str],
    /// Conditions used instead of the object's own of the same type.
    pub(crate) overrides: Vec<Condition>,
    /// The reasons of the result.
    pub(crate) reasons: Reasons,
    /// Priority of a condition (the default is [`default_priority`] with `negative`).
    pub(crate) priority: Option<&'a dyn Fn(&Condition) -> Priority>,
}

/// Summarizes several conditions of one object into `target_type` (core's `NewSummaryCondition`
/// with the default merge strategy; the result always has positive polarity).
pub(crate) fn summary(object: &[Condition], target_type: &str, options: &SummaryOptions<'_>) -> Condition {
    let mut in_scope: Vec<Condition> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for condition in object {
        if !options.types.contains(&condition.type_.as_str()) {
            continue;
        }
        seen.insert(condition.type_.as_str());
        match options.overrides.iter().find(|o| o.type_ == condition.type_) {
            Some(over) => in_scope.push(over.clone()),
            None => in_scope.push(condition.clone()),
        }
    }
    for type_ in options.types {
        if !seen.contains(type_) && !options.ignore_if_missing.contains(type_) {
            in_scope.push(Condition::new(
                type_,
                Status::Unknown,
                NOT_YET_REPORTED,
                "Condition not yet reported",
            ));
        }
    }
    let order = |c: &Condition| {
        options
            .types
            .iter()
            .position(|t| *t == c.type_)
            .unwrap_or(usize::MAX)
    };
    in_scope.sort_by(|a, b| {
        order(a)
            .cmp(&order(b))
            .then_with(|| a.last_transition.cmp(&b.last_transition))
    });
    let default = |c: &Condition| default_priority(c, options.negative);
    let priority: &dyn Fn(&Condition) -> Priority = options.priority.unwrap_or(&default);
    let (issues, unknowns, _) = split(&in_scope, |c| priority(c));
    let status = target_status(!issues.is_empty(), !unknowns.is_empty(), true);
    let reason = pick_reason(options.reasons, !issues.is_empty(), !unknowns.is_empty());
    let mut lines = Vec::new();
    for condition in &in_scope {
        if priority(condition) == Priority::Info && (status != Status::True || condition.message.is_empty()) {
            continue;
        }
        let mut line = format!("* {}:", condition.type_);
        if condition.message.is_empty() {
            line.push(' ');
            line.push_str(&condition.reason);
        } else {
            line.push_str(&indent_if_multiline(&condition.message));
        }
        lines.push(line);
    }
    Condition::new(target_type, status, reason, lines.join("\n"))
}

/// Mirrors condition `source_type` of a provider object's `status` as `target_type` (core's
/// `NewMirrorConditionFromUnstructured`); without one, `fallback` (status, reason, message).
pub(crate) fn mirror(
    source_status: &Value,
    source_type: &str,
    target_type: &str,
    fallback: (Status, &str, String),
) -> Condition {
    match get(source_status, source_type) {
        Some(source) => {
            let reason = if source.reason.is_empty() {
                NO_REASON_REPORTED.to_string()
            } else {
                source.reason
            };
            Condition::new(target_type, source.status, &reason, source.message)
        }
        None => Condition::new(target_type, fallback.0, fallback.1, fallback.2),
    }
}

fn split<T: Clone>(items: &[T], priority: impl Fn(&T) -> Priority) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (mut issues, mut unknowns, mut infos) = (Vec::new(), Vec::new(), Vec::new());
    for item in items {
        match priority(item) {
            Priority::Issue => issues.push(item.clone()),
            Priority::Unknown => unknowns.push(item.clone()),
            Priority::Info => infos.push(item.clone()),
        }
    }
    (issues, unknowns, infos)
}

fn target_status(issues: bool, unknowns: bool, positive: bool) -> Status {
    if issues {
        if positive { Status::False } else { Status::True }
    } else if unknowns {
        Status::Unknown
    } else if positive {
        Status::True
    } else {
        Status::False
    }
}

fn pick_reason(reasons: Reasons, issues: bool, unknowns: bool) -> &'static str {
    if issues {
        reasons.issue
    } else if unknowns {
        reasons.unknown
    } else {
        reasons.info
    }
}

/// The message lines of an aggregate (see the module docs), using up to `budget` messages.
fn aggregate_messages(
    conditions: &[(Owned, Condition)],
    budget: &mut usize,
    drop_empty: bool,
    priority: &dyn Fn(&Condition) -> Priority,
    others_wording: &[(Priority, &str)],
) -> Vec<String> {
    // kind → message → objects (in input order); message → priority; message → control plane first.
    let mut by_kind: BTreeMap<&str, Vec<(String, Vec<String>)>> = BTreeMap::new();
    let mut message_priority: HashMap<String, Priority> = HashMap::new();
    let mut first: HashSet<String> = HashSet::new();
    let mut control_plane: HashSet<&str> = HashSet::new();
    for (owner, condition) in conditions {
        if drop_empty && condition.message.is_empty() {
            continue;
        }
        let message = condition.message.clone();
        let messages = by_kind.entry(owner.kind.as_str()).or_default();
        match messages.iter_mut().find(|(m, _)| *m == message) {
            Some((_, objects)) => objects.push(owner.name.clone()),
            None => messages.push((message.clone(), vec![owner.name.clone()])),
        }
        if owner.control_plane {
            control_plane.insert(owner.name.as_str());
            first.insert(message.clone());
        }
        let new = priority(condition);
        let merged = match message_priority.get(&message) {
            None => new,
            Some(Priority::Issue) => Priority::Issue,
            Some(Priority::Unknown) if new == Priority::Issue => Priority::Issue,
            Some(Priority::Unknown) => Priority::Unknown,
            Some(Priority::Info) => new,
        };
        message_priority.insert(message, merged);
    }

    let mut lines = Vec::new();
    for (kind, mut messages) in by_kind {
        let plural = format!("{kind}s");
        messages.sort_by(|(a, a_objects), (b, b_objects)| {
            first
                .contains(b)
                .cmp(&first.contains(a))
                .then_with(|| message_priority[a].cmp(&message_priority[b]))
                .then_with(|| b_objects.len().cmp(&a_objects.len()))
                .then_with(|| a_objects.join(",").cmp(&b_objects.join(",")))
        });
        let mut others: BTreeMap<Priority, usize> = BTreeMap::new();
        for (message, mut objects) in messages {
            if *budget == 0 {
                *others.entry(message_priority[&message]).or_default() += objects.len();
                continue;
            }
            objects.sort_by(|a, b| {
                control_plane
                    .contains(b.as_str())
                    .cmp(&control_plane.contains(a.as_str()))
                    .then_with(|| a.cmp(b))
            });
            let mut line = match objects.len() {
                1 => format!("* {kind} {}:", objects[0]),
                2 | 3 => format!("* {plural} {}:", objects.join(", ")),
                n => format!("* {plural} {}, ... ({} more):", objects[..3].join(", "), n - 3),
            };
            line.push_str(&indent_if_multiline(&message));
            lines.push(line);
            *budget -= 1;
        }
        for (level, count) in others {
            let Some((_, wording)) = others_wording.iter().find(|(p, _)| *p == level) else {
                continue;
            };
            let noun = if count == 1 { kind } else { plural.as_str() };
            lines.push(format!("And {count} {noun} {wording}"));
        }
    }
    lines
}

/// True when `line` contains a bullet: `*` followed by white space.
fn has_bullet(line: &str) -> bool {
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '*' && chars.peek().is_some_and(|n| n.is_whitespace()) {
            return true;
        }
    }
    false
}

/// ` message` on one line, or the message indented under the bullet when it spans lines or holds
/// bullets itself (lines without a bullet get one).
fn indent_if_multiline(message: &str) -> String {
    if !message.contains('\n') && !has_bullet(message) {
        return format!(" {message}");
    }
    let lines: Vec<&str> = message.split('\n').collect();
    let without_bullet = lines.iter().any(|l| !has_bullet(l));
    let indented: Vec<String> = lines
        .iter()
        .map(|line| {
            let prefix = match (without_bullet, has_bullet(line)) {
                (false, _) => "  ",
                (true, false) => "  * ",
                (true, true) => "    ",
            };
            format!("{prefix}{line}")
        })
        .collect();
    format!("\n{}", indented.join("\n"))
}

/// A JSON condition list entry, for tests and fixtures.
#[cfg(test)]
pub(crate) fn json_condition(type_: &str, status: &str, reason: &str, message: &str, at: &str) -> Value {
    serde_json::json!({"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": at})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const READY: Reasons = Reasons {
        issue: "NotReady",
        unknown: "ReadyUnknown",
        info: "Ready",
    };

    fn machine(name: &str, status: Status, message: &str, at: &str) -> Owned {
        Owned {
            kind: "Machine".into(),
            name: name.into(),
            control_plane: false,
            condition: Some(Condition {
                type_: "Ready".into(),
                status,
                reason: "R".into(),
                message: message.into(),
                last_transition: at.into(),
            }),
        }
    }

    #[test]
    fn aggregate_counts_objects_per_message_and_names_three() {
        let mut machines: Vec<Owned> = (0..5)
            .map(|i| {
                machine(
                    &format!("m{i}"),
                    Status::False,
                    "* NodeHealthy: waiting",
                    "2026-01-01T00:00:00Z",
                )
            })
            .collect();
        machines.push(machine("z", Status::True, "", "2026-01-01T00:00:00Z"));
        let c = aggregate(&machines, "Ready", "MachinesReady", false, READY);
        assert_eq!(c.status, Status::False);
        assert_eq!(c.reason, "NotReady");
        assert_eq!(
            c.message,
            "* Machines m0, m1, m2, ... (2 more):\n  * NodeHealthy: waiting"
        );
    }

    #[test]
    fn aggregate_changes_its_message_as_machines_move_between_states() {
        let at = "2026-01-01T00:00:00Z";
        let before: Vec<Owned> = (0..4)
            .map(|i| machine(&format!("m{i}"), Status::False, "a", at))
            .collect();
        let mut after = before.clone();
        after[3] = machine("m3", Status::Unknown, "b", at);
        let first = aggregate(&before, "Ready", "MachinesReady", false, READY);
        let second = aggregate(&after, "Ready", "MachinesReady", false, READY);
        assert_eq!(first.message, "* Machines m0, m1, m2, ... (1 more): a");
        assert_eq!(second.message, "* Machines m0, m1, m2: a\n* Machine m3: b");
    }

    #[test]
    fn aggregate_keeps_three_messages_and_counts_the_others() {
        let at = "2026-01-01T00:00:00Z";
        let machines: Vec<Owned> = (0..5)
            .map(|i| machine(&format!("m{i}"), Status::False, &format!("msg {i}"), at))
            .collect();
        let c = aggregate(&machines, "Ready", "MachinesReady", false, READY);
        assert_eq!(
            c.message,
            "* Machine m0: msg 0\n* Machine m1: msg 1\n* Machine m2: msg 2\nAnd 2 Machines with other issues"
        );
    }

    #[test]
    fn aggregate_of_negative_conditions_is_true_on_an_issue() {
        let md = |name: &str, status: Status, message: &str| Owned {
            kind: "MachineDeployment".into(),
            name: name.into(),
            control_plane: false,
            condition: Some(Condition::new("ScalingUp", status, "x", message)),
        };
        let reasons = Reasons {
            issue: "ScalingUp",
            unknown: "ScalingUpUnknown",
            info: "NotScalingUp",
        };
        let up = aggregate(
            &[
                md("a", Status::True, "Scaling up from 0 to 3 replicas"),
                md("b", Status::False, ""),
            ],
            "ScalingUp",
            "ScalingUp",
            true,
            reasons,
        );
        assert_eq!((up.status, up.reason.as_str()), (Status::True, "ScalingUp"));
        assert_eq!(
            up.message,
            "* MachineDeployment a: Scaling up from 0 to 3 replicas"
        );
        let idle = aggregate(
            &[md("a", Status::False, "")],
            "ScalingUp",
            "ScalingUp",
            true,
            reasons,
        );
        assert_eq!(
            (idle.status, idle.reason.as_str(), idle.message.as_str()),
            (Status::False, "NotScalingUp", "")
        );
    }

    #[test]
    fn aggregate_counts_missing_conditions_as_unknown() {
        let missing = Owned {
            kind: "Machine".into(),
            name: "new".into(),
            control_plane: false,
            condition: None,
        };
        let c = aggregate(&[missing], "UpToDate", "MachinesUpToDate", false, READY);
        assert_eq!(c.status, Status::Unknown);
        assert_eq!(c.message, "* Machine new: Condition UpToDate not yet reported");
    }

    #[test]
    fn summary_lists_issues_in_type_order_and_counts_missing_types() {
        let object = vec![
            Condition::new(
                "InfrastructureReady",
                Status::False,
                "NotReady",
                "no instance yet",
            ),
            Condition::new("Deleting", Status::False, "NotDeleting", ""),
            Condition::new("BootstrapConfigReady", Status::True, "Ready", ""),
        ];
        let c = summary(
            &object,
            "Ready",
            &SummaryOptions {
                types: &[
                    "Deleting",
                    "BootstrapConfigReady",
                    "InfrastructureReady",
                    "NodeHealthy",
                ],
                negative: &["Deleting"],
                ignore_if_missing: &[],
                overrides: Vec::new(),
                reasons: READY,
                priority: None,
            },
        );
        assert_eq!(c.status, Status::False);
        assert_eq!(
            c.message,
            "* InfrastructureReady: no instance yet\n* NodeHealthy: Condition not yet reported"
        );
    }

    #[test]
    fn mirror_copies_the_source_or_falls_back() {
        let status = json!({"conditions": [json_condition("Ready", "False", "", "launching", "")]});
        let c = mirror(
            &status,
            "Ready",
            "InfrastructureReady",
            (Status::True, "Ready", String::new()),
        );
        assert_eq!(
            (c.status, c.reason.as_str(), c.message.as_str()),
            (Status::False, NO_REASON_REPORTED, "launching")
        );
        let c = mirror(
            &json!({}),
            "Ready",
            "InfrastructureReady",
            (
                Status::False,
                "NotReady",
                "KubeZeroMachine status.initialization.provisioned is false".into(),
            ),
        );
        assert_eq!(c.reason, "NotReady");
    }

    #[test]
    fn set_keeps_the_transition_time_while_the_status_holds() {
        let mut status =
            json!({"conditions": [json_condition("Ready", "False", "A", "", "2020-01-01T00:00:00Z")]});
        set(
            &mut status,
            &Condition::new("Ready", Status::False, "B", "m"),
            Some(2),
        );
        assert_eq!(
            status["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        assert_eq!(status["conditions"][0]["reason"], "B");
        assert_eq!(status["conditions"][0]["observedGeneration"], 2);
        set(
            &mut status,
            &Condition::new("Ready", Status::True, "B", ""),
            Some(2),
        );
        assert_ne!(
            status["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
    }

    #[test]
    fn multiline_messages_are_indented_under_their_bullet() {
        assert_eq!(indent_if_multiline("plain"), " plain");
        assert_eq!(indent_if_multiline("* a\n* b"), "\n  * a\n  * b");
        assert_eq!(indent_if_multiline("head\n* a"), "\n  * head\n    * a");
    }
}
