//! Cluster controller (capi-contract.md §2, §6; [CAPI] `core/reconcilers/cluster/*`).
//!
//! - Finalizer `cluster.cluster.x-k8s.io`.
//! - InfraCluster (`spec.infrastructureRef`, resolved through the CRD's contract label, §1): ownerRef
//!   to the Cluster (`cluster.x-k8s.io/v1beta2`, controller only with `spec.topology`) and label
//!   `cluster.x-k8s.io/cluster-name` (`ensureOwnerRefAndLabel`, §2). When it reports
//!   `status.initialization.provisioned`: `status.initialization.infrastructureProvisioned=true`
//!   (never flips back), `spec.controlPlaneEndpoint` copied if the Cluster has no valid one,
//!   `status.failureDomains` copied. Its `Ready` is mirrored into `InfrastructureReady`. Without an
//!   infrastructureRef the Cluster is marked provisioned; an InfraCluster that vanishes after
//!   provisioning is a reconcile error (§2).
//! - `ControlPlaneInitialized` (§6, no controlPlaneRef): True once any control-plane Machine (label
//!   `cluster.x-k8s.io/control-plane`) that is not being deleted has `status.nodeRef`; never goes back.
//! - Kubeconfig (§6): see [`super::kubeconfig`].
//! - Phase (informational): Pending, Provisioning, Provisioned, Deleting.
//! - Pause (§1): `spec.paused` or the `cluster.x-k8s.io/paused` annotation: nothing of the Cluster is
//!   touched (the Machine/MachineSet/MachineDeployment controllers check it too).
//! - Deletion (§2 `reconcileDelete`): delete every MachineDeployment, MachineSet and Machine whose
//!   `spec.clusterName` is the Cluster and wait until all are gone; then the control-plane object (if
//!   any) and wait; then the InfraCluster and wait; then remove the finalizer. (Core deletes only the
//!   top-level descendants and lets their owners cascade; deleting all of them directly reaches the
//!   same end state without depending on garbage collection timing.)

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::util::{
    ContractRef, at, bool_at, capi_owner, condition_status, delete_and_check, dynamic_api, ensure_finalizer,
    ensure_label, i64_at, is_deleting, mirror_ready, remove_finalizer, replace, replace_status, set_at,
    set_condition, str_at,
};
use super::{
    CLUSTER_FINALIZER, CLUSTER_NAME_LABEL, CONTROL_PLANE_LABEL, CapiKind, Ctx, Error, cluster_paused,
    kubeconfig,
};

/// Reconciles one Cluster.
pub(crate) async fn reconcile(cluster: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if cluster_paused(&cluster) {
        return Ok(ctx.resync());
    }
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let api = ctx.api(CapiKind::Cluster, &namespace);
    let mut cluster = (*cluster).clone();
    if is_deleting(&cluster) {
        return reconcile_delete(&ctx, cluster).await;
    }
    let mut changed = ensure_finalizer(&mut cluster, CLUSTER_FINALIZER);
    let old_status = cluster.data.get("status").cloned().unwrap_or(Value::Null);
    let mut status = if old_status.is_object() {
        old_status.clone()
    } else {
        json!({})
    };
    let generation = cluster.metadata.generation;
    let mut waiting = false;

    match ContractRef::at(&cluster.data, "spec.infrastructureRef") {
        Some(infra_ref) => {
            let ar = ctx.resolve(&infra_ref.api_group, &infra_ref.kind).await?;
            let infra_api = dynamic_api(&ctx.client, &namespace, &ar);
            match infra_api.get_opt(&infra_ref.name).await? {
                None => {
                    if bool_at(&status, "initialization.infrastructureProvisioned") {
                        return Err(Error::Invalid(format!(
                            "{} {namespace}/{} disappeared after provisioning",
                            infra_ref.kind, infra_ref.name
                        )));
                    }
                    waiting = true;
                }
                Some(mut infra) => {
                    if !is_deleting(&infra) {
                        let uid = cluster.metadata.uid.clone().unwrap_or_default();
                        let topology = at(&cluster.data, "spec.topology").is_some_and(|t| !t.is_null());
                        let refs = infra.metadata.owner_references.get_or_insert_with(Vec::new);
                        let mut infra_changed = false;
                        if !refs.iter().any(|r| r.uid == uid) {
                            refs.push(capi_owner("Cluster", &cluster, topology));
                            infra_changed = true;
                        }
                        infra_changed |= ensure_label(&mut infra, CLUSTER_NAME_LABEL, &name);
                        if infra_changed {
                            infra = replace(&infra_api, &infra).await?;
                        }
                    }
                    mirror_ready(&mut status, &infra.data, "InfrastructureReady", generation);
                    if bool_at(&infra.data, "status.initialization.provisioned") {
                        set_at(
                            &mut status,
                            "initialization.infrastructureProvisioned",
                            json!(true),
                        );
                        if !endpoint_valid(&cluster.data, "spec.controlPlaneEndpoint")
                            && endpoint_valid(&infra.data, "spec.controlPlaneEndpoint")
                        {
                            let endpoint = at(&infra.data, "spec.controlPlaneEndpoint").cloned();
                            set_at(
                                &mut cluster.data,
                                "spec.controlPlaneEndpoint",
                                endpoint.unwrap_or_default(),
                            );
                            changed = true;
                        }
                        if let Some(domains) = at(&infra.data, "status.failureDomains") {
                            status["failureDomains"] = domains.clone();
                        }
                    } else if !bool_at(&status, "initialization.infrastructureProvisioned") {
                        waiting = true;
                    }
                }
            }
        }
        None => set_at(
            &mut status,
            "initialization.infrastructureProvisioned",
            json!(true),
        ),
    }

    let machine_based = ContractRef::at(&cluster.data, "spec.controlPlaneRef").is_none();
    if machine_based {
        let initialized = condition_status(&status, "ControlPlaneInitialized")
            .and_then(|c| c.get("status"))
            .and_then(Value::as_str)
            == Some("True");
        if !initialized {
            let selector = format!("{CLUSTER_NAME_LABEL}={name},{CONTROL_PLANE_LABEL}");
            let machines = ctx
                .api(CapiKind::Machine, &namespace)
                .list(&ListParams::default().labels(&selector))
                .await?;
            let with_node = machines
                .items
                .iter()
                .find(|m| !is_deleting(m) && str_at(&m.data, "status.nodeRef.name").is_some());
            match with_node {
                Some(machine) => set_condition(
                    &mut status,
                    "ControlPlaneInitialized",
                    "True",
                    "Initialized",
                    &format!("Machine {} has a Node", machine.name_any()),
                    generation,
                ),
                None => {
                    set_condition(
                        &mut status,
                        "ControlPlaneInitialized",
                        "False",
                        "NotInitialized",
                        "Waiting for the first control plane Machine to have its status.nodeRef set",
                        generation,
                    );
                    waiting = true;
                }
            }
        }
        if ctx.options.kubeconfig
            && endpoint_valid(&cluster.data, "spec.controlPlaneEndpoint")
            && let (Some(host), Some(port)) = (
                str_at(&cluster.data, "spec.controlPlaneEndpoint.host"),
                i64_at(&cluster.data, "spec.controlPlaneEndpoint.port"),
            )
        {
            waiting |= kubeconfig::reconcile(&ctx, &cluster, host, port).await?;
        }
    }

    let provisioned = bool_at(&status, "initialization.infrastructureProvisioned")
        && endpoint_valid(&cluster.data, "spec.controlPlaneEndpoint");
    let phase = if provisioned {
        "Provisioned"
    } else if ContractRef::at(&cluster.data, "spec.infrastructureRef").is_some() {
        "Provisioning"
    } else {
        "Pending"
    };
    status["phase"] = json!(phase);
    if let Some(generation) = generation {
        status["observedGeneration"] = json!(generation);
    }

    if changed {
        cluster = replace(&api, &cluster).await?;
    }
    replace_status(&api, &cluster, &old_status, status).await?;
    Ok(if waiting { ctx.wait() } else { ctx.resync() })
}

/// `host` non-empty and `port` > 0 (the contract's valid endpoint, §2).
fn endpoint_valid(obj: &Value, path: &str) -> bool {
    at(obj, path).is_some_and(|e| {
        str_at(e, "host").is_some() && e.get("port").and_then(Value::as_i64).is_some_and(|p| p > 0)
    })
}

/// Deletion (§2): descendants first, then the control-plane object, then the InfraCluster, each waited
/// for, then the finalizer.
async fn reconcile_delete(ctx: &Ctx, cluster: DynamicObject) -> Result<Action, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let api = ctx.api(CapiKind::Cluster, &namespace);
    let old_status = cluster.data.get("status").cloned().unwrap_or(Value::Null);
    let mut status = if old_status.is_object() {
        old_status.clone()
    } else {
        json!({})
    };
    status["phase"] = json!("Deleting");
    replace_status(&api, &cluster, &old_status, status).await?;
    if !cluster.finalizers().iter().any(|f| f == CLUSTER_FINALIZER) {
        return Ok(ctx.resync());
    }

    let mut remaining = 0;
    for kind in [
        CapiKind::MachineDeployment,
        CapiKind::MachineSet,
        CapiKind::Machine,
    ] {
        let kind_api = ctx.api(kind, &namespace);
        for obj in kind_api.list(&ListParams::default()).await?.items {
            if str_at(&obj.data, "spec.clusterName") != Some(name.as_str()) {
                continue;
            }
            remaining += 1;
            if !is_deleting(&obj) {
                delete_and_check(&kind_api, &obj.name_any()).await?;
            }
        }
    }
    if remaining > 0 {
        return Ok(ctx.wait());
    }

    for path in ["spec.controlPlaneRef", "spec.infrastructureRef"] {
        if let Some(reference) = ContractRef::at(&cluster.data, path) {
            let ar = ctx.resolve(&reference.api_group, &reference.kind).await?;
            if delete_and_check(&dynamic_api(&ctx.client, &namespace, &ar), &reference.name).await? {
                return Ok(ctx.wait());
            }
        }
    }

    if let Some(mut latest) = api.get_opt(&name).await?
        && remove_finalizer(&mut latest, CLUSTER_FINALIZER)
    {
        replace(&api, &latest).await?;
    }
    Ok(ctx.resync())
}
