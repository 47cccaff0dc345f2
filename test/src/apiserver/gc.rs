//! The garbage collector and namespace finalizer: a background task that deletes dependents whose
//! owners are all gone (or are being deleted in the foreground), releases foreground deletions once
//! no blocking dependent is left, and empties terminating namespaces.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::ops::{self, WriteCtx};
use super::registry::ResKey;
use super::store::meta_str;
use super::{Inner, State};

/// Runs until the server stops: a pass after each write that started or finished a deletion (other
/// writes cannot make a dependent collectable, so a flood of creates and updates costs no scan),
/// and at least every [`FULL_PASS_EVERY`] (dependents created with owners that never existed).
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut scanned_at_deletions = None;
    let mut last_pass = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = inner.gc.notified() => {}
            _ = tokio::time::sleep(FULL_PASS_EVERY) => {}
        }
        // Let a burst of writes settle.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let changed = {
            let mut state = inner.lock();
            let due = last_pass.elapsed() >= FULL_PASS_EVERY;
            if !due && scanned_at_deletions == Some(state.deletions) {
                continue;
            }
            let mut changed = false;
            for _ in 0..16 {
                if !pass(&mut state) {
                    break;
                }
                changed = true;
            }
            scanned_at_deletions = Some(state.deletions);
            last_pass = tokio::time::Instant::now();
            changed
        };
        if changed {
            inner.notify_watchers();
        }
    }
}

/// Longest time between two collection passes.
const FULL_PASS_EVERY: Duration = Duration::from_millis(500);

fn is_foreground_deleting(object: &Value) -> bool {
    !object["metadata"]["deletionTimestamp"].is_null()
        && object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion"))
}

enum OwnerState {
    Alive,
    Gone,
    Foreground,
}

fn owner_state(state: &State, dependent_ns: &str, reference: &Value) -> OwnerState {
    let uid = reference["uid"].as_str().unwrap_or_default();
    let Some(at) = state.store.by_uid(uid) else {
        return OwnerState::Gone;
    };
    if !at.namespace.is_empty() && at.namespace != dependent_ns {
        return OwnerState::Gone;
    }
    let Some(owner) = state.store.get(&at.res, &at.namespace, &at.name) else {
        return OwnerState::Gone;
    };
    if is_foreground_deleting(owner) {
        OwnerState::Foreground
    } else {
        OwnerState::Alive
    }
}

fn delete(state: &mut State, key: &ResKey, ns: &str, name: &str, policy: &str) -> bool {
    let Some(rt) = state.registry.any_version(key) else {
        return ops::remove_object(state, key, ns, name).is_some();
    };
    let ctx = WriteCtx {
        rt: &rt,
        namespace: ns,
        strict: false,
        manager: "generic-garbage-collector".into(),
        dry_run: false,
    };
    let before = state.store.rv();
    let _ = ops::delete(state, &ctx, name, &json!({"propagationPolicy": policy}));
    state.store.rv() != before
}

/// One collection pass; whether anything changed.
fn pass(state: &mut State) -> bool {
    let before = state.store.rv();
    // Dependents.
    let mut deletions = Vec::new();
    let mut unlinks = Vec::new();
    for (key, object) in state.store.all() {
        let refs = object["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if refs.is_empty() || !object["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let ns = meta_str(object, "namespace");
        let states: Vec<OwnerState> = refs.iter().map(|r| owner_state(state, ns, r)).collect();
        let at = (key.clone(), ns.to_owned(), meta_str(object, "name").to_owned());
        if states.iter().all(|s| !matches!(s, OwnerState::Alive)) {
            let policy = if states.iter().any(|s| matches!(s, OwnerState::Foreground)) {
                "Foreground"
            } else {
                "Background"
            };
            deletions.push((at, policy));
        } else if states.iter().any(|s| matches!(s, OwnerState::Foreground)) {
            let keep: Vec<Value> = refs
                .iter()
                .zip(&states)
                .filter(|(_, s)| !matches!(s, OwnerState::Foreground))
                .map(|(r, _)| r.clone())
                .collect();
            unlinks.push((at, keep));
        }
    }
    for ((key, ns, name), policy) in deletions {
        delete(state, &key, &ns, &name, policy);
    }
    for ((key, ns, name), keep) in unlinks {
        if let Some(mut object) = state.store.get(&key, &ns, &name).cloned() {
            object["metadata"]["ownerReferences"] = json!(keep);
            state.store.put(&key, object);
        }
    }
    // Foreground owners whose blocking dependents are gone.
    let waiting: Vec<(ResKey, String, String, String)> = state
        .store
        .all()
        .filter(|(_, o)| is_foreground_deleting(o))
        .map(|(k, o)| {
            (
                k.clone(),
                meta_str(o, "namespace").into(),
                meta_str(o, "name").into(),
                meta_str(o, "uid").into(),
            )
        })
        .collect();
    for (key, ns, name, uid) in waiting {
        let blocked = state.store.all().any(|(_, o)| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["uid"].as_str() == Some(uid.as_str()) && r["blockOwnerDeletion"] == json!(true))
        });
        if blocked {
            continue;
        }
        if let Some(mut object) = state.store.get(&key, &ns, &name).cloned() {
            let rest: Vec<Value> = object["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| *f != "foregroundDeletion")
                .cloned()
                .collect();
            object["metadata"]["finalizers"] = json!(rest);
            if rest.is_empty() {
                object["metadata"]
                    .as_object_mut()
                    .expect("metadata")
                    .remove("finalizers");
                state.store.put(&key, object);
                ops::remove_object(state, &key, &ns, &name);
            } else {
                state.store.put(&key, object);
            }
        }
    }
    // Terminating namespaces.
    let ns_key: ResKey = (String::new(), "namespaces".into());
    let terminating: Vec<String> = state
        .store
        .list(&ns_key, None)
        .filter(|n| !n["metadata"]["deletionTimestamp"].is_null())
        .map(|n| meta_str(n, "name").to_owned())
        .collect();
    for namespace in terminating {
        let contents: Vec<(ResKey, String, bool)> = state
            .store
            .all()
            .filter(|(_, o)| {
                meta_str(o, "namespace") == namespace
                    && !meta_str(o, "name").is_empty()
                    && o["kind"] != "Namespace"
            })
            .map(|(k, o)| {
                (
                    k.clone(),
                    meta_str(o, "name").to_owned(),
                    !o["metadata"]["deletionTimestamp"].is_null(),
                )
            })
            .collect();
        if contents.is_empty() {
            ops::remove_object(state, &ns_key, "", &namespace);
            continue;
        }
        for (key, name, deleting) in contents {
            if !deleting {
                delete(state, &key, &namespace, &name, "Background");
            }
        }
    }
    state.store.rv() != before
}
