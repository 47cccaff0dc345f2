//! Adding and removing a finalizer for controllers whose cleanup can take several reconciles (cloud
//! resources being deleted): kube-runtime's `finalizer` helper releases the finalizer as soon as the
//! cleanup returns `Ok`, so these controllers hold it themselves.
//!
//! Both writes are merge patches of `metadata.finalizers` carrying the read `resourceVersion` as a
//! precondition: a concurrent change makes them fail with 409 and the reconcile is retried.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

/// Whether `object` carries `finalizer`.
pub fn has_finalizer<K: Resource>(object: &K, finalizer: &str) -> bool {
    object.finalizers().iter().any(|f| f == finalizer)
}

/// Adds `finalizer` to `object` when missing; returns whether it wrote.
pub async fn add<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if has_finalizer(object, finalizer) {
        return Ok(false);
    }
    let mut finalizers = object.finalizers().to_vec();
    finalizers.push(finalizer.to_string());
    write(api, object, finalizers).await?;
    Ok(true)
}

/// Removes `finalizer` from `object` when present; returns whether it wrote.
pub async fn remove<K>(api: &Api<K>, object: &K, finalizer: &str) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if !has_finalizer(object, finalizer) {
        return Ok(false);
    }
    let finalizers: Vec<String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    write(api, object, finalizers).await?;
    Ok(true)
}

async fn write<K>(api: &Api<K>, object: &K, finalizers: Vec<String>) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": object.resource_version(),
    }});
    api.patch(&object.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ScriptedApi, not_found};
    use k8s_openapi::api::core::v1::ConfigMap;

    fn object(finalizers: &[&str]) -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": "demo", "namespace": "default",
            "resourceVersion": "7", "finalizers": finalizers}}))
        .unwrap()
    }

    #[tokio::test]
    async fn add_and_remove_write_only_when_needed_with_a_precondition() {
        let (client, api) = ScriptedApi::start(|request| match request.method.as_str() {
            "PATCH" => (200, request.body.clone()),
            _ => not_found(&request.path),
        });
        let configs: Api<ConfigMap> = Api::namespaced(client, "default");
        assert!(!add(&configs, &object(&["a", "x"]), "x").await.unwrap());
        assert!(!remove(&configs, &object(&["a"]), "x").await.unwrap());
        assert!(add(&configs, &object(&["a"]), "x").await.unwrap());
        assert!(remove(&configs, &object(&["a", "x"]), "x").await.unwrap());
        let bodies: Vec<_> = api.requests().into_iter().map(|r| r.body).collect();
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0]["metadata"]["finalizers"], json!(["a", "x"]));
        assert_eq!(bodies[1]["metadata"]["finalizers"], json!(["a"]));
        assert_eq!(bodies[1]["metadata"]["resourceVersion"], "7");
    }
}
