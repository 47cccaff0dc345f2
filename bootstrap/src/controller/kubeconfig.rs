//! Kubeconfig renewal controller: re-issues the client certificate of
//! `<cluster>-kubeconfig` from `<cluster>-ca` once more than half of its life has passed
//! ([`crate::kubeconfig::renewal_due`]).
//!
//! Scope: Clusters with a machine-based control plane (no `spec.controlPlaneRef`; a control-plane
//! provider owns its kubeconfig) that have KubeZeroConfigs, are not paused and not being deleted. A
//! kubeconfig whose client certificate was not issued by the cluster CA (user-supplied, or token
//! authentication) is left alone. Core creates the Secret; this controller only rewrites its `value`,
//! with the read resourceVersion as precondition.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use kubezero_capi::contract::CLUSTER_NAME_LABEL;
use kubezero_capi::core::Cluster;
use kubezero_capi::runtime::Context;
use kubezero_capi::runtime::reconcile::{Error, changes_controller, namespace_of, run_controller};
use tracing::Instrument;

use crate::api::KubeZeroConfig;
use crate::kubeconfig::{self, Renewal};
use crate::pki::{self, CertificateKind};
use kubezero_capi::contract::KUBECONFIG_SECRET_VALUE_KEY;

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "kubeconfig-renewal";

/// Event reason when the client certificate was re-issued.
pub const RENEWED_REASON: &str = "KubeconfigRenewed";

/// Longest wait between two looks at a kubeconfig that is not due (a restart or a Secret change wakes
/// the controller earlier).
const MAX_WAIT: Duration = Duration::from_secs(12 * 3600);

/// Name of a Cluster's kubeconfig Secret.
pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}-kubeconfig")
}

/// Runs the renewal controller until the manager shuts down: Clusters, woken also by changes of their
/// `<cluster>-kubeconfig` Secret (Secrets labelled with a cluster name only).
pub async fn run(context: Context) {
    let secrets = context.args.api::<Secret>(&context.client);
    let secret_watch = watcher::Config::default().labels(CLUSTER_NAME_LABEL);
    // Clusters wake it for their spec and metadata, not for core's status rewrites.
    let watching = changes_controller::<Cluster>(&context).watches(secrets, secret_watch, secret_to_cluster);
    run_controller(watching, CONTROLLER, context, reconcile).await;
}

/// Maps `<cluster>-kubeconfig` to its Cluster.
pub fn secret_to_cluster(secret: Secret) -> Option<ObjectRef<Cluster>> {
    let cluster = secret.labels().get(CLUSTER_NAME_LABEL)?;
    let namespace = secret.namespace()?;
    (secret.name_any() == secret_name(cluster)).then(|| ObjectRef::new(cluster).within(&namespace))
}

/// Whether this provider renews the kubeconfig of `cluster` at all (apart from KubeZeroConfigs).
pub fn in_scope(cluster: &Cluster) -> bool {
    cluster.spec.control_plane_ref.is_none()
        && !cluster.is_paused()
        && cluster.meta().deletion_timestamp.is_none()
        && !cluster
            .annotations()
            .contains_key(kubezero_capi::contract::PAUSED_ANNOTATION)
}

async fn reconcile(cluster: Arc<Cluster>, context: Arc<Context>) -> Result<Action, Error> {
    let _timer = context.metrics.reconcile(CONTROLLER);
    let name = cluster.name_any();
    let namespace = namespace_of(cluster.as_ref())?;
    let span = tracing::info_span!("reconcile", controller = CONTROLLER, %namespace, %name);
    async {
        if !in_scope(&cluster) {
            return Ok(Action::await_change());
        }
        let configs: Api<KubeZeroConfig> = Api::namespaced(context.client.clone(), &namespace);
        let ours = configs
            .list(
                &ListParams::default()
                    .labels(&format!("{CLUSTER_NAME_LABEL}={name}"))
                    .limit(1),
            )
            .await
            .map_err(Error::read(
                "KubeZeroConfig",
                &namespace,
                &format!("of Cluster {name}"),
            ))?;
        if ours.items.is_empty() {
            return Ok(Action::await_change());
        }
        let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &namespace);
        let kubeconfig_name = secret_name(&name);
        let Some(mut secret) = secrets.get_opt(&kubeconfig_name).await.map_err(Error::read(
            "Secret",
            &namespace,
            &kubeconfig_name,
        ))?
        else {
            // Core writes it once the infrastructure is provisioned; its creation wakes us.
            return Ok(Action::await_change());
        };
        let Some(yaml) = secret_value(&secret) else {
            return Ok(Action::await_change());
        };
        let ca_name = CertificateKind::ClusterCa.secret_name(&name);
        let Some(ca_secret) = secrets
            .get_opt(&ca_name)
            .await
            .map_err(Error::read("Secret", &namespace, &ca_name))?
        else {
            return Ok(Action::await_change());
        };
        let ca = match pki::from_secret(CertificateKind::ClusterCa, &ca_secret) {
            Ok(ca) => ca,
            Err(error) => {
                tracing::warn!(%error, "cluster CA unusable: kubeconfig not renewed");
                return Ok(Action::requeue(Duration::from_secs(300)));
            }
        };
        let now = Timestamp::now();
        match kubeconfig::check(&yaml, &ca.cert, now) {
            Renewal::NotRenewable(reason) => {
                tracing::debug!(%reason, "kubeconfig left alone");
                Ok(Action::await_change())
            }
            Renewal::DueAt(due) => {
                let wait = Duration::try_from(due.duration_since(now)).unwrap_or_default();
                Ok(Action::requeue(wait.min(MAX_WAIT) + Duration::from_secs(1)))
            }
            Renewal::Due => {
                let renewed = match kubeconfig::renew(&yaml, &ca, now) {
                    Ok(renewed) => renewed,
                    Err(error) => {
                        tracing::warn!(%error, "kubeconfig renewal failed");
                        return Ok(Action::requeue(Duration::from_secs(300)));
                    }
                };
                secret.data.get_or_insert_default().insert(
                    KUBECONFIG_SECRET_VALUE_KEY.to_string(),
                    ByteString(renewed.into_bytes()),
                );
                // `replace` carries the resourceVersion read above: a concurrent writer wins, we retry.
                secrets
                    .replace(&kubeconfig_name, &PostParams::default(), &secret)
                    .await
                    .map_err(Error::write("update", "Secret", &namespace, &kubeconfig_name))?;
                tracing::info!(secret = %kubeconfig_name, "renewed the kubeconfig client certificate");
                let event = Event {
                    type_: EventType::Normal,
                    reason: RENEWED_REASON.to_string(),
                    note: Some(format!(
                        "re-issued the client certificate of Secret {kubeconfig_name} from {ca_name}"
                    )),
                    action: "RenewKubeconfig".to_string(),
                    secondary: None,
                };
                if let Err(error) = context.recorder.publish(&event, &cluster.object_ref(&())).await {
                    tracing::warn!(%error, "unable to publish event");
                }
                Ok(Action::await_change())
            }
        }
    }
    .instrument(span)
    .await
}

fn secret_value(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(KUBECONFIG_SECRET_VALUE_KEY)?;
    String::from_utf8(bytes.0.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster(extra: serde_json::Value) -> Cluster {
        let mut object = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "demo", "namespace": "default"}, "spec": {}});
        json_patch::merge(&mut object, &extra);
        serde_json::from_value(object).unwrap()
    }

    #[test]
    fn only_machine_based_control_planes_that_are_active_are_renewed() {
        assert!(in_scope(&cluster(json!({}))));
        assert!(!in_scope(&cluster(json!({"spec": {"paused": true}}))));
        assert!(!in_scope(&cluster(json!({"spec": {"controlPlaneRef":
            {"apiGroup": "controlplane.cluster.x-k8s.io", "kind": "KubeadmControlPlane", "name": "cp"}}}))));
        assert!(!in_scope(&cluster(
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
        )));
        assert!(!in_scope(&cluster(
            json!({"metadata": {"annotations": {"cluster.x-k8s.io/paused": ""}}})
        )));
    }

    #[test]
    fn kubeconfig_secrets_map_to_their_cluster() {
        let secret = |name: &str| -> Secret {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns",
                "labels": {"cluster.x-k8s.io/cluster-name": "demo"}}}))
            .unwrap()
        };
        let mapped = secret_to_cluster(secret("demo-kubeconfig")).unwrap();
        assert_eq!(
            (mapped.name.as_str(), mapped.namespace.as_deref()),
            ("demo", Some("ns"))
        );
        assert!(secret_to_cluster(secret("demo-ca")).is_none());
    }
}
