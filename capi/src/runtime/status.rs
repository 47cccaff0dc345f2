//! Status writes: server-side apply of the whole status a controller owns, with a fixed field manager.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::conditions::{self, HasConditions, Observed};

/// Applies `status` to the status subresource of `name` as `field_manager`.
///
/// The patch carries every status field the controller owns: with server-side apply, a field this
/// manager wrote before and omits now is removed. `force` takes ownership of fields last written by
/// another manager (e.g. after an upgrade renamed the manager).
pub async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    field_manager: &str,
    status: &S,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&patch),
    )
    .await
}

/// Writes the observed conditions of `object` as the status built by `status_with`, then publishes an
/// Event if the Ready condition changed. When that status is exactly the object's status nothing is
/// written (most reconciles observe what they observed before; each write would wake every watcher
/// of the kind, this controller included).
///
/// `status_with` receives the conditions this controller owns (timestamps carried over from the
/// object's current status) and returns the complete status the controller owns. Conditions whose
/// type is in `carry_over` and that were not observed this time are re-applied unchanged: with
/// server-side apply, leaving them out would delete them (used while paused, to keep `Ready`).
pub async fn apply_conditions<K, S>(
    api: &Api<K>,
    object: &K,
    field_manager: &str,
    recorder: &super::events::EventPublisher,
    observed: &[Observed],
    carry_over: &[&str],
    status_with: impl FnOnce(Vec<conditions::Condition>) -> S,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + HasConditions + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let previous = object.conditions();
    let mut owned = conditions::owned(
        previous,
        observed,
        object.meta().generation,
        jiff::Timestamp::now(),
    );
    owned.extend(
        previous
            .iter()
            .filter(|old| carry_over.contains(&old.type_.as_str()))
            .filter(|old| !observed.iter().any(|new| new.type_ == old.type_))
            .cloned(),
    );
    owned.sort_by(|a, b| a.type_.cmp(&b.type_));
    let status = status_with(owned.clone());
    if unchanged(object, &status) {
        return Ok(object.clone());
    }
    let name = object.meta().name.clone().unwrap_or_default();
    let updated = apply_status(api, &name, field_manager, &status).await?;
    super::events::report_ready_change(recorder, object, previous, &owned).await;
    Ok(updated)
}

/// Whether `status`, serialized, is the object's `status` as it is. Pure.
fn unchanged<K: Serialize, S: Serialize>(object: &K, status: &S) -> bool {
    let (Ok(object), Ok(status)) = (serde_json::to_value(object), serde_json::to_value(status)) else {
        return false;
    };
    object.get("status") == Some(&status)
}
