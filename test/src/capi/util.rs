//! JSON helpers shared by the stand-in controllers: field access on `DynamicObject`s, owner references,
//! metav1 conditions and conflict-aware writes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams, PropagationPolicy};
use kube::core::ApiResource;
use kube::{Client, ResourceExt};
use serde_json::{Map, Value, json};

use super::{CAPI_API_VERSION, CAPI_GROUP, Error, FIELD_MANAGER};

/// Value at a dotted path (`"spec.bootstrap.configRef"`), if every step exists.
pub(crate) fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// String at a dotted path; empty strings count as absent.
pub(crate) fn str_at<'a>(value: &'a Value, path: &str) -> Option<&'a str> {
    at(value, path).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Boolean at a dotted path; `false` when absent.
pub(crate) fn bool_at(value: &Value, path: &str) -> bool {
    at(value, path).and_then(Value::as_bool) == Some(true)
}

/// Integer at a dotted path.
pub(crate) fn i64_at(value: &Value, path: &str) -> Option<i64> {
    at(value, path).and_then(Value::as_i64)
}

/// Mutable object at a dotted path, creating (or replacing non-object values with) empty objects.
pub(crate) fn object_at<'a>(value: &'a mut Value, path: &str) -> &'a mut Map<String, Value> {
    let mut current = value;
    for key in path.split('.') {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        current = current
            .as_object_mut()
            .expect("just made an object")
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !current.is_object() {
        *current = Value::Object(Map::new());
    }
    current.as_object_mut().expect("just made an object")
}

/// Sets `path` (dotted) to `new`.
pub(crate) fn set_at(value: &mut Value, path: &str, new: Value) {
    let (parent, leaf) = match path.rsplit_once('.') {
        Some((parent, leaf)) => (Some(parent), leaf),
        None => (None, path),
    };
    let target = match parent {
        Some(parent) => object_at(value, parent),
        None => {
            if !value.is_object() {
                *value = Value::Object(Map::new());
            }
            value.as_object_mut().expect("object")
        }
    };
    target.insert(leaf.to_string(), new);
}

/// A `{apiGroup, kind, name}` reference (v1beta2 `ContractVersionedObjectReference`, capi-contract.md §1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ContractRef {
    pub api_group: String,
    pub kind: String,
    pub name: String,
}

impl ContractRef {
    /// Reads a reference at `path`; `None` when absent or incomplete.
    pub(crate) fn at(value: &Value, path: &str) -> Option<ContractRef> {
        let r = at(value, path)?;
        Some(ContractRef {
            api_group: str_at(r, "apiGroup")?.to_string(),
            kind: str_at(r, "kind")?.to_string(),
            name: str_at(r, "name")?.to_string(),
        })
    }

    /// The JSON form.
    pub(crate) fn to_json(&self) -> Value {
        json!({"apiGroup": self.api_group, "kind": self.kind, "name": self.name})
    }
}

/// An owner reference to a CAPI core object (`cluster.x-k8s.io/v1beta2`).
pub(crate) fn capi_owner(kind: &str, owner: &DynamicObject, controller: bool) -> OwnerReference {
    OwnerReference {
        api_version: CAPI_API_VERSION.to_string(),
        kind: kind.to_string(),
        name: owner.name_any(),
        uid: owner.metadata.uid.clone().unwrap_or_default(),
        controller: controller.then_some(true),
        block_owner_deletion: controller.then_some(true),
    }
}

/// Group of an `apiVersion` (`""` for the core group).
pub(crate) fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(group, _)| group).unwrap_or("")
}

/// True when `reference` points at a CAPI core object of `kind` (any version of `cluster.x-k8s.io`).
pub(crate) fn is_capi_owner(reference: &OwnerReference, kind: &str) -> bool {
    reference.kind == kind && group_of(&reference.api_version) == CAPI_GROUP
}

/// The controller owner reference of `obj`, if it is a CAPI `kind`.
pub(crate) fn controller_owner<'a>(obj: &'a DynamicObject, kind: &str) -> Option<&'a OwnerReference> {
    obj.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true) && is_capi_owner(r, kind))
}

/// True when `obj` is controlled by the object with `uid`.
pub(crate) fn controlled_by(obj: &DynamicObject, uid: &str) -> bool {
    obj.metadata
        .owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| r.controller == Some(true) && r.uid == uid))
}

/// True when `obj` has a deletionTimestamp.
pub(crate) fn is_deleting(obj: &DynamicObject) -> bool {
    obj.metadata.deletion_timestamp.is_some()
}

/// True when `obj` carries the `cluster.x-k8s.io/paused` annotation (capi-contract.md §1).
pub(crate) fn has_paused_annotation(obj: &DynamicObject) -> bool {
    obj.annotations()
        .contains_key(kubezero_capi::contract::PAUSED_ANNOTATION)
}

/// Labels of `obj` (mutable, created when absent).
pub(crate) fn labels_mut(obj: &mut DynamicObject) -> &mut BTreeMap<String, String> {
    obj.metadata.labels.get_or_insert_with(BTreeMap::new)
}

/// Sets a label; returns true when it changed.
pub(crate) fn ensure_label(obj: &mut DynamicObject, key: &str, value: &str) -> bool {
    let labels = labels_mut(obj);
    if labels.get(key).map(String::as_str) == Some(value) {
        return false;
    }
    labels.insert(key.to_string(), value.to_string());
    true
}

/// Adds a finalizer; returns true when it was missing.
pub(crate) fn ensure_finalizer(obj: &mut DynamicObject, finalizer: &str) -> bool {
    let finalizers = obj.metadata.finalizers.get_or_insert_with(Vec::new);
    if finalizers.iter().any(|f| f == finalizer) {
        return false;
    }
    finalizers.push(finalizer.to_string());
    true
}

/// Removes a finalizer; returns true when it was present.
pub(crate) fn remove_finalizer(obj: &mut DynamicObject, finalizer: &str) -> bool {
    let Some(finalizers) = obj.metadata.finalizers.as_mut() else {
        return false;
    };
    let before = finalizers.len();
    finalizers.retain(|f| f != finalizer);
    before != finalizers.len()
}

/// Now, RFC 3339 with second precision (the metav1.Time wire format).
pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| jiff::Timestamp::now().to_string())
}

/// Sets a metav1 condition in `status.conditions`, keeping `lastTransitionTime` when the status is
/// unchanged (capi-contract.md §1 "Conditions").
pub(crate) fn set_condition(
    status: &mut Value,
    type_: &str,
    condition_status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let conditions = object_at_array(status, "conditions");
    let previous = conditions
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some(type_));
    let transition = previous
        .and_then(|i| {
            let c = &conditions[i];
            (c.get("status").and_then(Value::as_str) == Some(condition_status))
                .then(|| c.get("lastTransitionTime").cloned())
                .flatten()
        })
        .unwrap_or_else(|| Value::String(now()));
    let mut condition = json!({
        "type": type_,
        "status": condition_status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    });
    if let Some(generation) = generation {
        condition["observedGeneration"] = json!(generation);
    }
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

fn object_at_array<'a>(status: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !status.is_object() {
        *status = Value::Object(Map::new());
    }
    let entry = status
        .as_object_mut()
        .expect("object")
        .entry(key.to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !entry.is_array() {
        *entry = Value::Array(Vec::new());
    }
    entry.as_array_mut().expect("array")
}

/// Post parameters carrying the stand-in's field manager.
pub(crate) fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// Replaces the main resource of `obj` (optimistic concurrency on its resourceVersion: a stale copy
/// gets a 409 and the reconcile is retried).
pub(crate) async fn replace(api: &Api<DynamicObject>, obj: &DynamicObject) -> Result<DynamicObject, Error> {
    Ok(api.replace(&obj.name_any(), &post_params(), obj).await?)
}

/// Replaces `status` of `obj` through the status subresource, when it differs from `old_status`.
pub(crate) async fn replace_status(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    old_status: &Value,
    new_status: Value,
) -> Result<(), Error> {
    if *old_status == new_status {
        return Ok(());
    }
    let mut updated = obj.clone();
    updated.data["status"] = new_status;
    api.replace_status(&obj.name_any(), &post_params(), &updated)
        .await?;
    Ok(())
}

/// Replaces `status` of `obj` through the status subresource and returns the written object.
pub(crate) async fn write_status(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    status: Value,
) -> Result<DynamicObject, Error> {
    let mut updated = obj.clone();
    updated.data["status"] = status;
    Ok(api
        .replace_status(&obj.name_any(), &post_params(), &updated)
        .await?)
}

/// Namespaced dynamic API for `ar`.
pub(crate) fn dynamic_api(client: &Client, namespace: &str, ar: &ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, ar)
}

/// Deletes `name` in the background; a missing object is fine. Returns true while the object still
/// exists (deletion started or pending on finalizers).
pub(crate) async fn delete_and_check(api: &Api<DynamicObject>, name: &str) -> Result<bool, Error> {
    match api.get_opt(name).await? {
        None => Ok(false),
        Some(obj) => {
            if !is_deleting(&obj) {
                let params = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..DeleteParams::default()
                };
                match api.delete(name, &params).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(true)
        }
    }
}

/// Stable 64-bit FNV-1a hash.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// JSON with object keys sorted recursively (stable input for hashing).
pub(crate) fn canonical_json(value: &Value) -> String {
    // serde_json may preserve insertion order (feature unification); sort through a BTreeMap walk.
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, &Value> = map.iter().collect();
                out.push('{');
                for (i, (k, v)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// A random lowercase alphanumeric suffix of `len` characters (like apimachinery's name generator).
pub(crate) fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes
        .iter()
        .take(len)
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}
