//! Addon gates controller: grants a Cluster the gate labels of [`crate::addons`] (`kubezero.io/cni:
//! ready`, `kubezero.io/istiod: ready`) once the gating HelmReleaseProxy of CAAPH reports Ready, so the
//! other KubeZero modules install after Cilium.
//!
//! It runs only when CAAPH's HelmReleaseProxy CRD is installed (checked every [`CRD_POLL`] until it
//! is). Labels are written by server-side apply with their own field manager ([`FIELD_MANAGER`]): a
//! GitOps re-apply of the user's Cluster manifest (which never lists them) keeps them, and they are
//! never removed (a later failing release does not uninstall the modules that depend on it).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use kubezero_capi::core::Cluster;
use kubezero_capi::runtime::Context;
use kubezero_capi::runtime::reconcile::{Error, changes_controller, namespace_of, run_controller};
use serde_json::json;
use tracing::Instrument;

use crate::addons::{CLUSTER_NAME_LABEL, addon_gates};

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "addon-gates";
/// Field manager of the gate labels.
pub const FIELD_MANAGER: &str = "kubezero-addon-gates";
/// Name of CAAPH's HelmReleaseProxy CRD.
pub const RELEASE_PROXY_CRD: &str = "helmreleaseproxies.addons.cluster.x-k8s.io";
/// How often to look for the CRD while CAAPH is not installed.
pub const CRD_POLL: Duration = Duration::from_secs(5);

/// CAAPH's HelmReleaseProxy kind.
pub fn release_proxy_resource() -> ApiResource {
    ApiResource {
        group: "addons.cluster.x-k8s.io".into(),
        version: "v1alpha1".into(),
        api_version: "addons.cluster.x-k8s.io/v1alpha1".into(),
        kind: "HelmReleaseProxy".into(),
        plural: "helmreleaseproxies".into(),
    }
}

/// Waits for CAAPH's CRD, then runs the controller until the manager shuts down.
pub async fn run(context: Context) {
    let crds: Api<CustomResourceDefinition> = Api::all(context.client.clone());
    loop {
        match crds.get_opt(RELEASE_PROXY_CRD).await {
            Ok(Some(_)) => break,
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "looking for the HelmReleaseProxy CRD"),
        }
        tokio::select! {
            _ = context.shutdown.cancelled() => return,
            _ = tokio::time::sleep(CRD_POLL) => {}
        }
    }
    tracing::info!("CAAPH is installed: addon gates on");
    let resource = release_proxy_resource();
    let releases: Api<DynamicObject> = if context.args.namespace.is_empty() {
        Api::all_with(context.client.clone(), &resource)
    } else {
        Api::namespaced_with(context.client.clone(), &context.args.namespace, &resource)
    };
    // Clusters wake it for their labels (and deletion), not for core's status rewrites.
    let watching = changes_controller::<Cluster>(&context).watches_with(
        releases,
        resource,
        watcher::Config::default().labels(CLUSTER_NAME_LABEL),
        release_to_cluster,
    );
    run_controller(watching, CONTROLLER, context, reconcile).await;
}

/// Maps a HelmReleaseProxy to the Cluster its cluster-name label names.
pub fn release_to_cluster(release: DynamicObject) -> Option<ObjectRef<Cluster>> {
    let cluster = release.labels().get(CLUSTER_NAME_LABEL)?;
    Some(ObjectRef::new(cluster).within(&release.namespace()?))
}

async fn reconcile(cluster: Arc<Cluster>, context: Arc<Context>) -> Result<Action, Error> {
    let _timer = context.metrics.reconcile(CONTROLLER);
    let name = cluster.name_any();
    let namespace = namespace_of(cluster.as_ref())?;
    let span = tracing::info_span!("reconcile", controller = CONTROLLER, %namespace, %name);
    async {
        if cluster.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let resource = release_proxy_resource();
        let releases: Api<DynamicObject> =
            Api::namespaced_with(context.client.clone(), &namespace, &resource);
        let listed = releases
            .list(&ListParams::default().labels(&format!("{CLUSTER_NAME_LABEL}={name}")))
            .await
            .map_err(Error::read(
                "HelmReleaseProxy",
                &namespace,
                &format!("of Cluster {name}"),
            ))?;
        let values: Vec<serde_json::Value> = listed
            .items
            .iter()
            .filter_map(|release| serde_json::to_value(release).ok())
            .collect();
        let gates = addon_gates(&name, &values);
        let labels = cluster.labels();
        let missing: Vec<_> = gates
            .iter()
            .filter(|(key, value)| labels.get(*key) != Some(*value))
            .collect();
        if missing.is_empty() {
            return Ok(Action::await_change());
        }
        // Apply every gate granted so far: the field manager keeps owning the earlier ones.
        let patch = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": name, "labels": gates}});
        let clusters: Api<Cluster> = Api::namespaced(context.client.clone(), &namespace);
        clusters
            .patch(&name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&patch))
            .await
            .map_err(Error::write("update", "Cluster", &namespace, &name))?;
        tracing::info!(gates = ?missing, "addon gate labels set");
        Ok(Action::await_change())
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_map_to_the_cluster_they_are_labelled_with() {
        let release: DynamicObject =
            serde_json::from_value(json!({"apiVersion": "addons.cluster.x-k8s.io/v1alpha1",
            "kind": "HelmReleaseProxy", "metadata": {"name": "cilium-prod-x1", "namespace": "ns",
                "labels": {CLUSTER_NAME_LABEL: "prod"}}}))
            .unwrap();
        let cluster = release_to_cluster(release).unwrap();
        assert_eq!(
            (cluster.name.as_str(), cluster.namespace.as_deref()),
            ("prod", Some("ns"))
        );
    }
}
