//! Cluster controller (capi-contract.md §2, §6; [CAPI] `core/reconcilers/cluster/*`).
//!
//! - Finalizer `cluster.cluster.x-k8s.io`, added first (also while paused, as core does).
//! - Pause (§1): `spec.paused` or the `cluster.x-k8s.io/paused` annotation: the `Paused` condition
//!   turns `True` ([`super::paused`]) and nothing else of the Cluster is touched (the Machine,
//!   MachineSet and MachineDeployment controllers check it too).
//! - InfraCluster (`spec.infrastructureRef`, resolved through the CRD's contract label, §1): ownerRef
//!   to the Cluster (`cluster.x-k8s.io/v1beta2`, controller only with `spec.topology`) and label
//!   `cluster.x-k8s.io/cluster-name` (`ensureOwnerRefAndLabel`, §2); its changes wake the Cluster.
//!   When it reports `status.initialization.provisioned`:
//!   `status.initialization.infrastructureProvisioned=true` (never flips back),
//!   `spec.controlPlaneEndpoint` copied if the Cluster has no valid one, `status.failureDomains`
//!   copied. Without an infrastructureRef the Cluster is marked provisioned; an InfraCluster that
//!   vanishes after provisioning is a reconcile error (§2).
//! - Control-plane object (`spec.controlPlaneRef`), when set: read for `ControlPlaneInitialized`,
//!   `ControlPlaneAvailable` and `status.controlPlane`; `status.initialization.controlPlaneInitialized`
//!   copied from it.
//! - Kubeconfig (§6): see [`super::kubeconfig`].
//! - Status, recomputed whole on every reconcile and written when it differs
//!   ([`super::cluster_status`]): `phase`, `status.controlPlane` and `status.workers` replica
//!   counters, and core's v1beta2 conditions, with `ControlPlaneInitialized` (§6, no
//!   controlPlaneRef) `True` once a control-plane Machine has `status.nodeRef`, never going back.
//!   The Cluster is reconciled on every change of its MachineDeployments (whose status follows
//!   every change of their Machines), control-plane Machines, InfraCluster and Secrets, and every
//!   resync.
//! - Deletion (§2 `reconcileDelete`): delete every MachineDeployment, MachineSet and Machine whose
//!   `spec.clusterName` is the Cluster and wait until all are gone; then the control-plane object (if
//!   any) and wait; then the InfraCluster and wait; then remove the finalizer. `Deleting` says which
//!   step it waits for. (Core deletes only the top-level descendants and lets their owners cascade;
//!   deleting all of them directly reaches the same end state without depending on garbage
//!   collection timing.)

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::cluster_status::{self, Reference};
use super::replica_status::list_names;
use super::util::{
    ContractRef, at, bool_at, capi_owner, delete_and_check, dynamic_api, ensure_finalizer, ensure_label,
    i64_at, is_deleting, remove_finalizer, replace, replace_status, set_at, str_at,
};
use super::{
    CLUSTER_FINALIZER, CLUSTER_NAME_LABEL, CONTROL_PLANE_LABEL, CapiKind, Ctx, Error, kubeconfig, paused,
};

/// Reconciles one Cluster.
pub(crate) async fn reconcile(cluster: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let api = ctx.api(CapiKind::Cluster, &namespace);
    let mut cluster = (*cluster).clone();
    if !is_deleting(&cluster) && ensure_finalizer(&mut cluster, CLUSTER_FINALIZER) {
        cluster = replace(&api, &cluster).await?;
    }
    let itself = cluster.clone();
    if paused::ensure(&api, &mut cluster, Some(&itself), "Cluster").await? {
        return Ok(ctx.resync());
    }
    if is_deleting(&cluster) {
        return reconcile_delete(&ctx, cluster).await;
    }
    let old_status = cluster.data.get("status").cloned().unwrap_or(Value::Null);
    let mut status = if old_status.is_object() {
        old_status.clone()
    } else {
        json!({})
    };
    let mut changed = false;
    let mut waiting = false;

    let infra = match ContractRef::at(&cluster.data, "spec.infrastructureRef") {
        Some(infra_ref) => {
            let ar = ctx.resolve(&infra_ref.api_group, &infra_ref.kind).await?;
            ctx.cluster_externals.watch(&ar);
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
                    Some((infra_ref.kind, None))
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
                    Some((infra_ref.kind, Some(infra.data)))
                }
            }
        }
        None => {
            set_at(
                &mut status,
                "initialization.infrastructureProvisioned",
                json!(true),
            );
            None
        }
    };

    let control_plane = control_plane_object(&ctx, &cluster).await?;
    if let Some((_, Some(cp))) = &control_plane
        && bool_at(cp, "status.initialization.controlPlaneInitialized")
    {
        set_at(&mut status, "initialization.controlPlaneInitialized", json!(true));
    }

    let descendants = Descendants::of(&ctx, &namespace, &name);
    let machine_based = control_plane.is_none();
    if machine_based {
        let initialized = super::conditions::is_true(&status, "ControlPlaneInitialized")
            || descendants
                .control_plane_machines
                .iter()
                .any(|m| str_at(&m.data, "status.nodeRef.name").is_some());
        waiting |= !initialized;
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

    if changed {
        cluster = replace(&api, &cluster).await?;
    }
    let initialized = super::conditions::is_true(&status, "ControlPlaneInitialized")
        || descendants
            .control_plane_machines
            .iter()
            .any(|m| str_at(&m.data, "status.nodeRef.name").is_some());
    let probe = ctx.probe(&namespace, &name, initialized).await;
    cluster_status::update(
        &mut status,
        &cluster,
        &descendants.inputs(&infra, &control_plane, probe, None),
    );
    replace_status(&api, &cluster, &old_status, status).await?;
    Ok(if waiting { ctx.wait() } else { ctx.resync() })
}

/// A referenced object as the status computation sees it.
fn referenced(object: &Option<(String, Option<Value>)>) -> Reference<'_> {
    match object {
        None => Reference::Unset,
        Some((kind, None)) => Reference::Missing(kind),
        Some((kind, Some(data))) => Reference::Found(kind, data),
    }
}

/// The control-plane object of `spec.controlPlaneRef`: `None` without a reference, its kind and
/// data (`None` when it does not exist) otherwise.
async fn control_plane_object(
    ctx: &Ctx,
    cluster: &DynamicObject,
) -> Result<Option<(String, Option<Value>)>, Error> {
    let Some(reference) = ContractRef::at(&cluster.data, "spec.controlPlaneRef") else {
        return Ok(None);
    };
    let namespace = cluster.namespace().unwrap_or_default();
    let ar = ctx.resolve(&reference.api_group, &reference.kind).await?;
    let object = dynamic_api(&ctx.client, &namespace, &ar)
        .get_opt(&reference.name)
        .await?;
    Ok(Some((reference.kind, object.map(|o| o.data))))
}

/// The Cluster's MachineDeployments, MachineSets and Machines (label `cluster.x-k8s.io/cluster-name`),
/// from the controllers' caches, as core lists them from its cache.
struct Descendants {
    machinedeployments: Vec<Arc<DynamicObject>>,
    machinesets: Vec<Arc<DynamicObject>>,
    control_plane_machines: Vec<Arc<DynamicObject>>,
    worker_machines: Vec<Arc<DynamicObject>>,
}

impl Descendants {
    fn of(ctx: &Ctx, namespace: &str, cluster: &str) -> Descendants {
        let belongs = |obj: &Arc<DynamicObject>| {
            obj.namespace().as_deref() == Some(namespace)
                && obj.labels().get(CLUSTER_NAME_LABEL).map(String::as_str) == Some(cluster)
        };
        let sorted = |mut list: Vec<Arc<DynamicObject>>| {
            list.sort_by_key(|o| o.name_any());
            list
        };
        let (control_plane_machines, worker_machines): (Vec<_>, Vec<_>) = ctx
            .machines
            .state()
            .into_iter()
            .filter(belongs)
            .partition(|m| m.labels().contains_key(CONTROL_PLANE_LABEL));
        Descendants {
            machinedeployments: sorted(
                ctx.machinedeployments
                    .state()
                    .into_iter()
                    .filter(belongs)
                    .collect(),
            ),
            machinesets: sorted(ctx.machinesets.state().into_iter().filter(belongs).collect()),
            control_plane_machines: sorted(control_plane_machines),
            worker_machines: sorted(worker_machines),
        }
    }

    /// The inputs of the status computation: these objects, the InfraCluster and control-plane
    /// object as read, the connection `probe` and the deletion step.
    fn inputs<'a>(
        &'a self,
        infra: &'a Option<(String, Option<Value>)>,
        control_plane: &'a Option<(String, Option<Value>)>,
        probe: cluster_status::ProbeState,
        deleting: Option<(&'a str, String)>,
    ) -> cluster_status::Inputs<'a> {
        cluster_status::Inputs {
            infrastructure: referenced(infra),
            control_plane: referenced(control_plane),
            machinedeployments: &self.machinedeployments,
            machinesets: &self.machinesets,
            control_plane_machines: &self.control_plane_machines,
            worker_machines: &self.worker_machines,
            probe,
            deleting,
        }
    }
}

/// `host` non-empty and `port` > 0 (the contract's valid endpoint, §2).
fn endpoint_valid(obj: &Value, path: &str) -> bool {
    at(obj, path).is_some_and(|e| {
        str_at(e, "host").is_some() && e.get("port").and_then(Value::as_i64).is_some_and(|p| p > 0)
    })
}

/// Deletion (§2): descendants first, then the control-plane object, then the InfraCluster, each waited
/// for, then the finalizer; `Deleting` names the step.
async fn reconcile_delete(ctx: &Ctx, cluster: DynamicObject) -> Result<Action, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let api = ctx.api(CapiKind::Cluster, &namespace);
    if !cluster.finalizers().iter().any(|f| f == CLUSTER_FINALIZER) {
        return Ok(ctx.resync());
    }

    let mut pending: Vec<(&str, Vec<String>)> = Vec::new();
    for (kind, label) in [
        (CapiKind::MachineDeployment, "MachineDeployments"),
        (CapiKind::MachineSet, "MachineSets"),
        (CapiKind::Machine, "Machines"),
    ] {
        let kind_api = ctx.api(kind, &namespace);
        let mut control_plane = Vec::new();
        let mut names = Vec::new();
        for obj in kind_api.list(&ListParams::default()).await?.items {
            if str_at(&obj.data, "spec.clusterName") != Some(name.as_str()) {
                continue;
            }
            if !is_deleting(&obj) {
                delete_and_check(&kind_api, &obj.name_any()).await?;
            }
            if kind == CapiKind::Machine && obj.labels().contains_key(CONTROL_PLANE_LABEL) {
                control_plane.push(obj.name_any());
            } else {
                names.push(obj.name_any());
            }
        }
        if !control_plane.is_empty() {
            pending.insert(0, ("Control plane Machines", control_plane));
        }
        if !names.is_empty() {
            pending.push((
                if kind == CapiKind::Machine {
                    "Worker Machines"
                } else {
                    label
                },
                names,
            ));
        }
    }
    let mut step: Option<(&str, String)> = None;
    if !pending.is_empty() {
        let lines: Vec<String> = pending
            .into_iter()
            .map(|(what, names)| format!("* {what}: {}", list_names(names, 10)))
            .collect();
        step = Some(("WaitingForWorkersDeletion", lines.join("\n")));
    }
    if step.is_none() {
        for (path, reason) in [
            ("spec.controlPlaneRef", "WaitingForControlPlaneDeletion"),
            ("spec.infrastructureRef", "WaitingForInfrastructureDeletion"),
        ] {
            if let Some(reference) = ContractRef::at(&cluster.data, path) {
                let ar = ctx.resolve(&reference.api_group, &reference.kind).await?;
                if delete_and_check(&dynamic_api(&ctx.client, &namespace, &ar), &reference.name).await? {
                    step = Some((reason, format!("Waiting for {} to be deleted", reference.kind)));
                    break;
                }
            }
        }
    }

    if let Some((reason, message)) = step {
        write_deleting_status(ctx, &cluster, reason, message).await?;
        return Ok(ctx.wait());
    }
    if let Some(mut latest) = api.get_opt(&name).await?
        && remove_finalizer(&mut latest, CLUSTER_FINALIZER)
    {
        replace(&api, &latest).await?;
    }
    Ok(ctx.resync())
}

/// The status of a deleting Cluster, waiting for `reason`.
async fn write_deleting_status(
    ctx: &Ctx,
    cluster: &DynamicObject,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let api = ctx.api(CapiKind::Cluster, &namespace);
    let old_status = cluster.data.get("status").cloned().unwrap_or(Value::Null);
    let mut status = if old_status.is_object() {
        old_status.clone()
    } else {
        json!({})
    };
    let infra = match ContractRef::at(&cluster.data, "spec.infrastructureRef") {
        Some(reference) => {
            let ar = ctx.resolve(&reference.api_group, &reference.kind).await?;
            let object = dynamic_api(&ctx.client, &namespace, &ar)
                .get_opt(&reference.name)
                .await?;
            Some((reference.kind, object.map(|o| o.data)))
        }
        None => None,
    };
    let control_plane = control_plane_object(ctx, cluster).await?;
    let descendants = Descendants::of(ctx, &namespace, &cluster.name_any());
    let probe = ctx.probe(&namespace, &cluster.name_any(), false).await;
    cluster_status::update(
        &mut status,
        cluster,
        &descendants.inputs(&infra, &control_plane, probe, Some((reason, message))),
    );
    replace_status(&api, cluster, &old_status, status).await
}
