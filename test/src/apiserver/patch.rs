//! The PATCH bodies the API server accepts, as pure functions over `serde_json::Value`:
//!
//! - [`merge_patch`]: JSON merge patch (RFC 7386, `application/merge-patch+json`);
//! - [`json_patch`]: JSON patch (RFC 6902, `application/json-patch+json`) via the `json-patch` crate;
//! - [`strategic_merge_patch`]: Kubernetes strategic merge patch
//!   (`application/strategic-merge-patch+json`), with list semantics from a
//!   [`ListTypes`]: `Map(keys)` lists merge item by item, `Set` lists union,
//!   `Atomic` lists are replaced.
//!
//! Strategic merge directives supported: `$patch: merge|replace|delete` on
//! objects and on list-map items, `$retainKeys`, `$deleteFromPrimitiveList/<field>`
//! and `$setElementOrder/<field>` (items named by the directive come first in
//! its order, the others follow in their merged order — the real server
//! interleaves server-only items instead). Anything else starting with `$`, or a
//! `$patch` directive inside a list this emulator treats as atomic, is refused
//! with [`PatchError::Unsupported`] rather than silently applied differently.

use serde_json::{Map, Value};

use super::fields::{ListType, ListTypes};

/// Why a patch cannot be applied (the message is meant for the API client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is malformed.
    #[error("invalid patch: {0}")]
    Invalid(String),
    /// A JSON patch operation failed (a `test` that did not match, a missing path, ...).
    #[error("{0}")]
    OperationFailed(String),
    /// The patch uses a strategic merge feature this emulator does not implement.
    #[error("unsupported strategic merge patch: {0}")]
    Unsupported(String),
}

/// Applies an RFC 7386 JSON merge patch: `null` deletes, objects merge
/// recursively, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let map = target.as_object_mut().expect("object");
    for (key, value) in fields {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Applies an RFC 6902 JSON patch and returns the patched document.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let mut ops: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
        PatchError::Invalid(format!("not a JSON patch (an array of RFC 6902 operations): {e}"))
    })?;
    // Like the API server's JSON patch library, a `test` for `null` passes when the path is absent
    // (kube-runtime's finalizer helper relies on this to add the first finalizer).
    ops.0.retain(|op| match op {
        json_patch::PatchOperation::Test(test) => {
            !(test.value.is_null() && target.pointer(test.path.as_str()).is_none())
        }
        _ => true,
    });
    let mut doc = target.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| {
        let op = ops.0.get(e.operation);
        let name = match op {
            Some(json_patch::PatchOperation::Add(_)) => "add",
            Some(json_patch::PatchOperation::Remove(_)) => "remove",
            Some(json_patch::PatchOperation::Replace(_)) => "replace",
            Some(json_patch::PatchOperation::Move(_)) => "move",
            Some(json_patch::PatchOperation::Copy(_)) => "copy",
            Some(json_patch::PatchOperation::Test(_)) => "test",
            None => "unknown",
        };
        let path = e.path.to_string();
        let what = match e.kind {
            json_patch::PatchErrorKind::TestFailed => format!("the value at \"{path}\" did not match"),
            json_patch::PatchErrorKind::InvalidFromPointer => "the \"from\" path does not exist".to_string(),
            json_patch::PatchErrorKind::InvalidPointer => format!("the path \"{path}\" does not exist"),
            json_patch::PatchErrorKind::CannotMoveInsideItself => {
                "a value cannot be moved inside itself".to_string()
            }
            ref other => other.to_string(),
        };
        PatchError::OperationFailed(format!(
            "JSON patch operation {} ({name} {path}) failed: {what}",
            e.operation
        ))
    })?;
    Ok(doc)
}

/// Applies a Kubernetes strategic merge patch in place (see the module docs for
/// the directives supported); on error `target` is left unchanged.
pub fn strategic_merge_patch(
    target: &mut Value,
    patch: &Value,
    list_types: &dyn ListTypes,
) -> Result<(), PatchError> {
    let Value::Object(fields) = patch else {
        return Err(PatchError::Invalid(
            "a strategic merge patch must be a JSON object".to_string(),
        ));
    };
    let mut patched = target.clone();
    if smp_object(&mut patched, fields, &mut Vec::new(), list_types)? == Outcome::Delete {
        patched = Value::Object(Map::new());
    }
    *target = patched;
    Ok(())
}

/// What the caller does with the value just patched.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Keep,
    Delete,
}

fn dotted(path: &[String]) -> String {
    if path.is_empty() {
        "the object".to_string()
    } else {
        format!(".{}", path.join("."))
    }
}

fn smp_value(
    target: &mut Value,
    patch: &Value,
    path: &mut Vec<String>,
    list_types: &dyn ListTypes,
) -> Result<Outcome, PatchError> {
    match patch {
        Value::Object(fields) => smp_object(target, fields, path, list_types),
        Value::Array(items) => {
            smp_list(target, items, path, list_types)?;
            Ok(Outcome::Keep)
        }
        other => {
            *target = other.clone();
            Ok(Outcome::Keep)
        }
    }
}

fn smp_object(
    target: &mut Value,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
    list_types: &dyn ListTypes,
) -> Result<Outcome, PatchError> {
    let mut patch = patch.clone();
    match patch.remove("$patch") {
        None => {}
        Some(Value::String(s)) if s == "merge" => {}
        Some(Value::String(s)) if s == "replace" => {
            *target = Value::Object(patch);
            return Ok(Outcome::Keep);
        }
        Some(Value::String(s)) if s == "delete" => return Ok(Outcome::Delete),
        Some(other) => {
            return Err(PatchError::Invalid(format!(
                "unknown $patch directive {other} at {}",
                dotted(path)
            )));
        }
    }
    let retain = patch.remove("$retainKeys");
    let mut deletes = Vec::new();
    let mut orders = Vec::new();
    for key in patch
        .keys()
        .filter(|k| k.starts_with('$'))
        .cloned()
        .collect::<Vec<_>>()
    {
        let value = patch.remove(&key).expect("present");
        if let Some(name) = key.strip_prefix("$deleteFromPrimitiveList/") {
            deletes.push((name.to_string(), value));
        } else if let Some(name) = key.strip_prefix("$setElementOrder/") {
            orders.push((name.to_string(), value));
        } else {
            return Err(PatchError::Unsupported(format!(
                "the directive {key:?} at {} is not supported by this API emulator",
                dotted(path)
            )));
        }
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let map = target.as_object_mut().expect("object");
    if let Some(retain) = retain {
        let Some(keys) = retain.as_array().filter(|a| a.iter().all(Value::is_string)) else {
            return Err(PatchError::Invalid(format!(
                "$retainKeys at {} must be a list of strings",
                dotted(path)
            )));
        };
        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        if let Some(extra) = patch.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(PatchError::Invalid(format!(
                "the field {extra:?} at {} is not listed in $retainKeys",
                dotted(path)
            )));
        }
        map.retain(|k, _| keys.contains(&k.as_str()));
    }
    for (key, value) in patch {
        path.push(key.clone());
        if value.is_null() {
            map.remove(&key);
        } else {
            let existed = map.contains_key(&key);
            let slot = map.entry(key.clone()).or_insert(Value::Null);
            if smp_value(slot, &value, path, list_types)? == Outcome::Delete || (!existed && slot.is_null()) {
                map.remove(&key);
            }
        }
        path.pop();
    }
    for (name, values) in deletes {
        let Some(values) = values.as_array() else {
            return Err(PatchError::Invalid(format!(
                "$deleteFromPrimitiveList/{name} at {} must be a list",
                dotted(path)
            )));
        };
        if let Some(Value::Array(items)) = map.get_mut(&name) {
            items.retain(|item| !values.contains(item));
        }
    }
    for (name, order) in orders {
        let Some(order) = order.as_array() else {
            return Err(PatchError::Invalid(format!(
                "$setElementOrder/{name} at {} must be a list",
                dotted(path)
            )));
        };
        path.push(name.clone());
        let list_type = list_types.list_type(path);
        path.pop();
        if let Some(Value::Array(items)) = map.get_mut(&name) {
            apply_order(items, order, &list_type);
        }
    }
    Ok(Outcome::Keep)
}

/// The identity of a list item for ordering and matching.
fn identity(list_type: &ListType, item: &Value) -> Option<Vec<Option<Value>>> {
    match list_type {
        ListType::Map(keys) => Some(keys.iter().map(|k| item.get(k).cloned()).collect()),
        ListType::Set => Some(vec![Some(item.clone())]),
        ListType::Atomic => None,
    }
}

fn apply_order(items: &mut [Value], order: &[Value], list_type: &ListType) {
    let wanted: Vec<Vec<Option<Value>>> = order.iter().filter_map(|o| identity(list_type, o)).collect();
    if wanted.is_empty() {
        return;
    }
    let rank = |item: &Value| {
        identity(list_type, item)
            .and_then(|id| wanted.iter().position(|w| *w == id))
            .unwrap_or(usize::MAX)
    };
    items.sort_by_key(rank);
}

fn smp_list(
    target: &mut Value,
    items: &[Value],
    path: &mut Vec<String>,
    list_types: &dyn ListTypes,
) -> Result<(), PatchError> {
    let list_type = list_types.list_type(path);
    let has_directive = |item: &Value| item.as_object().is_some_and(|o| o.contains_key("$patch"));
    match &list_type {
        ListType::Atomic => {
            if items.iter().any(has_directive) {
                return Err(PatchError::Unsupported(format!(
                    "a $patch directive in the items of {}, a list this API emulator replaces as a whole",
                    dotted(path)
                )));
            }
            *target = Value::Array(items.to_vec());
        }
        ListType::Set => {
            if items.iter().any(has_directive) {
                return Err(PatchError::Unsupported(format!(
                    "a $patch directive in the items of the primitive list {}",
                    dotted(path)
                )));
            }
            let mut merged = target.as_array().cloned().unwrap_or_default();
            for item in items {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            *target = Value::Array(merged);
        }
        ListType::Map(keys) => {
            let directive = |item: &Value| item.get("$patch").and_then(Value::as_str).map(str::to_string);
            if items.iter().any(|i| directive(i).as_deref() == Some("replace")) {
                let rest: Vec<Value> = items
                    .iter()
                    .filter(|i| directive(i).as_deref() != Some("replace"))
                    .cloned()
                    .collect();
                *target = Value::Array(rest);
                return Ok(());
            }
            let mut merged = target.as_array().cloned().unwrap_or_default();
            for item in items {
                let Some(fields) = item.as_object() else {
                    return Err(PatchError::Invalid(format!(
                        "the items of {} must be objects",
                        dotted(path)
                    )));
                };
                if !keys.iter().any(|k| fields.contains_key(k)) {
                    return Err(PatchError::Invalid(format!(
                        "an item of {} has none of its merge keys ({})",
                        dotted(path),
                        keys.join(", ")
                    )));
                }
                let id = identity(&list_type, item);
                let found = merged.iter().position(|m| identity(&list_type, m) == id);
                match directive(item).as_deref() {
                    Some("delete") => {
                        if let Some(i) = found {
                            merged.remove(i);
                        }
                    }
                    None | Some("merge") => match found {
                        Some(i) => {
                            smp_object(&mut merged[i], fields, path, list_types)?;
                        }
                        None => {
                            let mut fresh = Value::Object(Map::new());
                            smp_object(&mut fresh, fields, path, list_types)?;
                            merged.push(fresh);
                        }
                    },
                    Some(other) => {
                        return Err(PatchError::Invalid(format!(
                            "unknown $patch directive {other:?} in the items of {}",
                            dotted(path)
                        )));
                    }
                }
            }
            *target = Value::Array(merged);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::fields::{NoSchema, SchemaListTypes};
    use serde_json::json;

    fn conditions_schema() -> SchemaListTypes {
        SchemaListTypes::new(json!({
            "type": "object",
            "properties": {
                "spec": {"type": "object", "properties": {
                    "containers": {"type": "array", "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object"}},
                    "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                    "args": {"type": "array", "items": {"type": "string"}},
                }},
            },
        }))
    }

    #[test]
    fn merge_patch_null_deletes() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]});
        merge_patch(
            &mut doc,
            &json!({"a": null, "b": {"c": null, "x": {"y": null, "z": 1}}, "e": [3]}),
        );
        assert_eq!(doc, json!({"b": {"d": 3, "x": {"z": 1}}, "e": [3]}));
        merge_patch(&mut doc, &json!("scalar"));
        assert_eq!(doc, json!("scalar"));
    }

    #[test]
    fn json_patch_applies_operations() {
        let doc = json!({"spec": {"replicas": 1, "args": ["a"]}});
        let out = json_patch(
            &doc,
            &json!([
                {"op": "test", "path": "/spec/replicas", "value": 1},
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "add", "path": "/spec/args/-", "value": "b"},
                {"op": "copy", "from": "/spec/replicas", "path": "/spec/max"},
                {"op": "move", "from": "/spec/max", "path": "/spec/min"},
                {"op": "remove", "path": "/spec/args/0"},
            ]),
        )
        .unwrap();
        assert_eq!(out, json!({"spec": {"replicas": 3, "args": ["b"], "min": 3}}));
    }

    #[test]
    fn json_patch_test_for_null_passes_on_an_absent_path_like_the_api_server() {
        let target = json!({"metadata": {"name": "x"}});
        let patch = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}
        ]);
        let patched = json_patch(&target, &patch).unwrap();
        assert_eq!(patched["metadata"]["finalizers"], json!(["f"]));
        let present = json!({"metadata": {"finalizers": ["g"]}});
        assert!(
            json_patch(&present, &patch).is_err(),
            "test null fails when the path holds a value"
        );
    }

    #[test]
    fn json_patch_test_op_failure_is_reported() {
        let doc = json!({"spec": {"replicas": 1}});
        let err = json_patch(
            &doc,
            &json!([{"op": "test", "path": "/spec/replicas", "value": 2}]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "JSON patch operation 0 (test /spec/replicas) failed: the value at \"/spec/replicas\" did not match"
        );
        let err = json_patch(&doc, &json!([{"op": "remove", "path": "/spec/missing"}])).unwrap_err();
        assert!(matches!(err, PatchError::OperationFailed(_)), "{err}");
        let err = json_patch(&doc, &json!({"op": "remove"})).unwrap_err();
        assert!(matches!(err, PatchError::Invalid(_)), "{err}");
    }

    #[test]
    fn strategic_merge_list_map_by_key_and_patch_delete() {
        let mut doc = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": "x"},
            {"name": "b", "image": "b:1"},
            {"name": "c", "image": "c:1"},
        ]}});
        strategic_merge_patch(
            &mut doc,
            &json!({"spec": {"containers": [
                {"name": "a", "image": "a:2", "env": null},
                {"name": "b", "$patch": "delete"},
                {"name": "d", "image": "d:1"},
            ]}}),
            &conditions_schema(),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:2"},
                {"name": "c", "image": "c:1"},
                {"name": "d", "image": "d:1"},
            ]}})
        );
        strategic_merge_patch(
            &mut doc,
            &json!({"spec": {"containers": [{"name": "z"}, {"$patch": "replace"}]}}),
            &conditions_schema(),
        )
        .unwrap();
        assert_eq!(doc, json!({"spec": {"containers": [{"name": "z"}]}}));
    }

    #[test]
    fn strategic_merge_sets_union_and_atomic_lists_replace() {
        let mut doc = json!({"spec": {"tags": ["a", "b"], "args": ["x", "y"]}});
        strategic_merge_patch(
            &mut doc,
            &json!({"spec": {"tags": ["b", "c"], "args": ["z"]}}),
            &conditions_schema(),
        )
        .unwrap();
        assert_eq!(doc, json!({"spec": {"tags": ["a", "b", "c"], "args": ["z"]}}));
        strategic_merge_patch(
            &mut doc,
            &json!({"spec": {"$deleteFromPrimitiveList/tags": ["a"], "$setElementOrder/tags": ["c", "b"]}}),
            &conditions_schema(),
        )
        .unwrap();
        assert_eq!(doc["spec"]["tags"], json!(["c", "b"]));
    }

    #[test]
    fn strategic_merge_object_directives() {
        let mut doc = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}, "x": {"a": 1}}});
        strategic_merge_patch(
            &mut doc,
            &json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}, "x": {"$patch": "delete"}}}),
            &NoSchema,
        )
        .unwrap();
        assert_eq!(doc, json!({"spec": {"strategy": {"type": "Recreate"}}}));
        strategic_merge_patch(
            &mut doc,
            &json!({"spec": {"$patch": "replace", "y": 1}}),
            &NoSchema,
        )
        .unwrap();
        assert_eq!(doc, json!({"spec": {"y": 1}}));
    }

    #[test]
    fn strategic_merge_refuses_what_it_does_not_implement() {
        let mut doc = json!({"spec": {"containers": [{"name": "a"}]}});
        let err = strategic_merge_patch(&mut doc, &json!({"spec": {"$unknown": 1}}), &NoSchema).unwrap_err();
        assert!(
            matches!(err, PatchError::Unsupported(ref m) if m.contains("$unknown")),
            "{err}"
        );
        let err = strategic_merge_patch(
            &mut doc,
            &json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
            &NoSchema,
        )
        .unwrap_err();
        assert!(
            matches!(err, PatchError::Unsupported(ref m) if m.contains(".spec.containers")),
            "{err}"
        );
        assert_eq!(doc, json!({"spec": {"containers": [{"name": "a"}]}}));
    }
}
