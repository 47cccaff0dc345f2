//! The `Paused` condition every core controller keeps on its objects ([CAPI] `util/paused`
//! `EnsurePausedCondition`): `True`, reason `Paused`, while the Cluster has `spec.paused` or the
//! object the `cluster.x-k8s.io/paused` annotation (capi-contract.md §1), `False`, reason
//! `NotPaused`, otherwise. It is written on its own, and only when it changes; a paused object gets
//! no other write.

use kube::api::{Api, DynamicObject};
use serde_json::{Value, json};

use super::Error;
use super::conditions::{self, Condition, Status};
use super::util::{bool_at, has_paused_annotation, write_status};

/// The `Paused` condition of `obj` (of kind `kind`) in `cluster`.
pub(crate) fn condition(cluster: Option<&DynamicObject>, obj: &DynamicObject, kind: &str) -> Condition {
    let mut reasons = Vec::new();
    if cluster.is_some_and(|c| bool_at(&c.data, "spec.paused")) {
        reasons.push("Cluster spec.paused is set to true".to_string());
    }
    if has_paused_annotation(obj) {
        reasons.push(format!("{kind} has the cluster.x-k8s.io/paused annotation"));
    }
    if reasons.is_empty() {
        Condition::new("Paused", Status::False, "NotPaused", "")
    } else {
        Condition::new("Paused", Status::True, "Paused", reasons.join(", "))
    }
}

/// Writes the `Paused` condition of `obj` when it changed (`obj` becomes the written object) and
/// returns whether `obj` is paused.
pub(crate) async fn ensure(
    api: &Api<DynamicObject>,
    obj: &mut DynamicObject,
    cluster: Option<&DynamicObject>,
    kind: &str,
) -> Result<bool, Error> {
    let wanted = condition(cluster, obj, kind);
    let paused = wanted.status == Status::True;
    let status = obj.data.get("status").cloned().unwrap_or(Value::Null);
    let same = conditions::get(&status, "Paused").is_some_and(|current| {
        (current.status, current.reason.as_str(), current.message.as_str())
            == (wanted.status, wanted.reason.as_str(), wanted.message.as_str())
    });
    if same {
        return Ok(paused);
    }
    let mut status = if status.is_object() { status } else { json!({}) };
    conditions::set(&mut status, &wanted, obj.metadata.generation);
    *obj = write_status(api, obj, status).await?;
    Ok(paused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(annotations: Value, paused: bool) -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "c", "annotations": annotations}, "spec": {"paused": paused}}),
        )
        .unwrap()
    }

    #[test]
    fn paused_names_every_reason() {
        let cluster = obj(json!({}), true);
        let machine = obj(json!({"cluster.x-k8s.io/paused": ""}), false);
        let c = condition(Some(&cluster), &machine, "Machine");
        assert_eq!(c.status, Status::True);
        assert_eq!(
            c.message,
            "Cluster spec.paused is set to true, Machine has the cluster.x-k8s.io/paused annotation"
        );
        let c = condition(Some(&obj(json!({}), false)), &obj(json!({}), false), "Machine");
        assert_eq!((c.status, c.reason.as_str()), (Status::False, "NotPaused"));
    }
}
