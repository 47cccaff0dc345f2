//! ClusterRole aggregation, as kube-controller-manager's `clusterrole-aggregation` controller does
//! it: a ClusterRole with `aggregationRule.clusterRoleSelectors` gets as its `rules` the rules of
//! every other ClusterRole matching one of the selectors, selectors in order, the roles of each
//! selector by name, each rule once. The rules are written with server-side apply by the field
//! manager `clusterrole-aggregation-controller` (forced), and only when they differ. This is how
//! CAPI core's `capi-aggregated-manager-role` picks up the providers' roles labelled
//! `cluster.x-k8s.io/aggregate-to-manager: "true"`.
//!
//! Like the controller, it runs in the background: shortly (tens of milliseconds) after a write,
//! not within the request that changed a role.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Inner;
use super::State;
use super::ops::{self, WriteCtx};
use super::rbac::RBAC_GROUP;
use super::select::Selector;
use super::store::meta_str;

/// The field manager of the aggregated rules.
pub(crate) const FIELD_MANAGER: &str = "clusterrole-aggregation-controller";

/// Runs until the server stops, aggregating after writes.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut changes = inner.changed.subscribe();
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        // Let a burst of writes settle.
        tokio::time::sleep(Duration::from_millis(20)).await;
        changes.mark_unchanged();
        let wrote = aggregate_all(&mut inner.lock());
        if wrote {
            inner.notify_watchers();
        }
    }
}

/// A `metav1.LabelSelector` (`matchLabels`, `matchExpressions`) as a [`Selector`].
fn label_selector(selector: &Value) -> Result<Selector, String> {
    let mut requirements = Vec::new();
    if let Some(labels) = selector["matchLabels"].as_object() {
        for (key, value) in labels {
            requirements.push(format!("{key}={}", value.as_str().unwrap_or_default()));
        }
    }
    for expression in selector["matchExpressions"].as_array().into_iter().flatten() {
        let key = expression["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = expression["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let requirement = match expression["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            other => return Err(format!("{other:?} is not a valid label selector operator")),
        };
        requirements.push(requirement);
    }
    Selector::parse(Some(&requirements.join(",")), None).map_err(|e| e.message)
}

/// A rule without empty lists, so that `[]` and a missing list compare equal (as the controller's
/// semantic comparison treats them).
fn normalized(rule: &Value) -> Value {
    let mut rule = rule.clone();
    if let Some(fields) = rule.as_object_mut() {
        fields.retain(|_, value| !(value.is_null() || value.as_array().is_some_and(Vec::is_empty)));
    }
    rule
}

/// The rules ClusterRole `role` aggregates from `roles` (all ClusterRoles, by name).
fn aggregated_rules(role: &Value, roles: &[Value]) -> Result<Vec<Value>, String> {
    let name = meta_str(role, "name");
    let mut rules: Vec<Value> = Vec::new();
    for selector in role["aggregationRule"]["clusterRoleSelectors"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let selector = label_selector(selector)?;
        for other in roles
            .iter()
            .filter(|other| meta_str(other, "name") != name && selector.matches(other))
        {
            for rule in other["rules"].as_array().into_iter().flatten() {
                let rule = normalized(rule);
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
    }
    Ok(rules)
}

/// One pass over every aggregating ClusterRole; whether anything was written.
fn aggregate_all(state: &mut State) -> bool {
    let key = (RBAC_GROUP.to_owned(), "clusterroles".to_owned());
    let roles: Vec<Value> = state.store.list(&key, None).cloned().collect();
    if !roles.iter().any(|role| role["aggregationRule"].is_object()) {
        return false;
    }
    let Some(rt) = state.registry.get(RBAC_GROUP, "v1", "clusterroles") else {
        return false;
    };
    let mut wrote = false;
    for role in roles.iter().filter(|role| role["aggregationRule"].is_object()) {
        let name = meta_str(role, "name");
        let rules = match aggregated_rules(role, &roles) {
            Ok(rules) => rules,
            Err(error) => {
                tracing::warn!(clusterrole = name, %error, "cannot aggregate ClusterRole");
                continue;
            }
        };
        let current: Vec<Value> = role["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(normalized)
            .collect();
        if current == rules {
            continue;
        }
        let applied = json!({
            "apiVersion": format!("{RBAC_GROUP}/v1"), "kind": "ClusterRole",
            "metadata": {"name": name}, "rules": rules,
        });
        let ctx = WriteCtx {
            rt: &rt,
            namespace: "",
            strict: false,
            manager: FIELD_MANAGER.into(),
            dry_run: false,
        };
        let body = applied.to_string();
        match ops::patch(
            state,
            &ctx,
            name,
            "application/apply-patch+yaml",
            body.as_bytes(),
            None,
            true,
            true,
        ) {
            Ok(_) => wrote = true,
            Err(error) => {
                tracing::warn!(clusterrole = name, error = %error.message, "cannot write aggregated rules")
            }
        }
    }
    wrote
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, labels: Value, rules: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "rules": rules})
    }

    #[test]
    fn an_aggregated_role_collects_the_rules_of_the_selected_roles_once_each() {
        let aggregated = json!({"metadata": {"name": "capi-aggregated-manager-role"},
            "aggregationRule": {"clusterRoleSelectors": [
                {"matchLabels": {"cluster.x-k8s.io/aggregate-to-manager": "true"}}]}});
        let shared = json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]});
        let roles = vec![
            aggregated.clone(),
            role(
                "b-provider",
                json!({"cluster.x-k8s.io/aggregate-to-manager": "true"}),
                json!([{"apiGroups": ["infrastructure.cluster.x-k8s.io"], "resources": ["kubezeromachines"],
                        "verbs": ["create"], "resourceNames": []}, shared]),
            ),
            role(
                "a-bootstrap",
                json!({"cluster.x-k8s.io/aggregate-to-manager": "true"}),
                json!([{"apiGroups": ["bootstrap.cluster.x-k8s.io"], "resources": ["kubezeroconfigs"], "verbs": ["create"]},
                       shared]),
            ),
            role(
                "unlabelled",
                json!({}),
                json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
            ),
            role(
                "not-true",
                json!({"cluster.x-k8s.io/aggregate-to-manager": "false"}),
                json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
            ),
        ];
        let mut by_name = roles.clone();
        by_name.sort_by(|a, b| meta_str(a, "name").cmp(meta_str(b, "name")));
        let rules = aggregated_rules(&aggregated, &by_name).expect("aggregates");
        assert_eq!(
            rules,
            vec![
                json!({"apiGroups": ["bootstrap.cluster.x-k8s.io"], "resources": ["kubezeroconfigs"], "verbs": ["create"]}),
                shared.clone(),
                json!({"apiGroups": ["infrastructure.cluster.x-k8s.io"], "resources": ["kubezeromachines"], "verbs": ["create"]}),
            ],
            "roles by name, each rule once, empty lists dropped"
        );
    }

    #[test]
    fn selectors_with_expressions_select_and_bad_operators_are_reported() {
        let aggregated = json!({"metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                  {"key": "skip", "operator": "DoesNotExist"}]}]}});
        let rule = json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]});
        let roles = vec![
            role("x", json!({"tier": "a"}), json!([rule])),
            role(
                "y",
                json!({"tier": "a", "skip": "yes"}),
                json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}]),
            ),
            role(
                "z",
                json!({"tier": "c"}),
                json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}]),
            ),
        ];
        assert_eq!(aggregated_rules(&aggregated, &roles).unwrap(), vec![rule]);
        let bad = json!({"metadata": {"name": "bad"}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchExpressions": [{"key": "tier", "operator": "Near"}]}]}});
        assert!(aggregated_rules(&bad, &roles).is_err());
    }
}
