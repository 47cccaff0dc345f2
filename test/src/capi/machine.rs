//! Machine controller (capi-contract.md §3, §4, §5; [CAPI] `core/reconcilers/machine/*`).
//!
//! - Finalizer `machine.cluster.x-k8s.io` (added first, also while paused, as core does); label
//!   `cluster.x-k8s.io/cluster-name`. Pause: the `Paused` condition ([`super::paused`]) and nothing
//!   else.
//! - For the BootstrapConfig (`spec.bootstrap.configRef`) and the InfraMachine
//!   (`spec.infrastructureRef`), resolved through the provider CRD's contract label (§1): replace a
//!   MachineSet ownerRef with a controller ownerRef to the Machine (`controller: true,
//!   blockOwnerDeletion: true`) and set the cluster-name label (`ensureExternalOwnershipAndWatch`, §3.1).
//! - Bootstrap (§4): once `status.initialization.dataSecretCreated` is true, copy `status.dataSecretName`
//!   into `spec.bootstrap.dataSecretName` (an empty name is an error) and set
//!   `status.initialization.bootstrapDataSecretCreated`; without a configRef a user-set
//!   `dataSecretName` counts.
//! - Infrastructure (§3.2): once `status.initialization.provisioned` is true **and** `spec.providerID`
//!   is set, copy `spec.providerID`, `status.addresses`, `status.failureDomain` and set
//!   `status.initialization.infrastructureProvisioned` (never flips back).
//! - Node link (§3.3): with a [`super::WorkloadClusters`] client, `status.nodeRef.name` is the Node whose
//!   `spec.providerID` equals the Machine's (more than one match is an error).
//! - Status as core writes it ([`super::machine_status`]): `BootstrapConfigReady` and
//!   `InfrastructureReady` mirror the provider objects' `Ready`, `NodeReady`/`NodeHealthy` follow the
//!   Node's conditions, `UpToDate` compares the MachineSet's template with its MachineDeployment's,
//!   then the `Ready` summary, `Available`, `phase` and `lastUpdated`; written when it differs.
//! - Deletion (§5): delete the InfraMachine and wait until it is gone, then the BootstrapConfig and
//!   wait, then (with a workload client, a nodeRef and the Cluster not being deleted) the Node, then
//!   remove the finalizer; `Deleting` names the step. Drain, volume detach and hooks are not emulated.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::cache::ClusterNodes;
use super::machine_status::{self, External, Inputs, NodeView};
use super::util::{
    ContractRef, at, bool_at, capi_owner, controller_owner, delete_and_check, dynamic_api, ensure_finalizer,
    ensure_label, is_capi_owner, is_deleting, remove_finalizer, replace, replace_status, set_at, str_at,
};
use super::{CLUSTER_NAME_LABEL, CapiKind, Ctx, Error, MACHINE_FINALIZER, conditions, paused};

/// Reconciles one Machine.
pub(crate) async fn reconcile(machine: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = machine.namespace().unwrap_or_default();
    let cluster_name = str_at(&machine.data, "spec.clusterName")
        .unwrap_or_default()
        .to_string();
    let cluster = ctx.cluster(&namespace, &cluster_name).await?;
    let api = ctx.api(CapiKind::Machine, &namespace);
    let mut machine = (*machine).clone();
    if !is_deleting(&machine) && ensure_finalizer(&mut machine, MACHINE_FINALIZER) {
        machine = replace(&api, &machine).await?;
    }
    if paused::ensure(&api, &mut machine, cluster.as_ref(), "Machine").await? {
        return Ok(ctx.resync());
    }
    if is_deleting(&machine) {
        return reconcile_delete(&ctx, machine, cluster.as_ref()).await;
    }

    let mut changed = false;
    if !cluster_name.is_empty() {
        changed |= ensure_label(&mut machine, CLUSTER_NAME_LABEL, &cluster_name);
    }
    let old_status = machine.data.get("status").cloned().unwrap_or(Value::Null);
    let mut status = if old_status.is_object() {
        old_status.clone()
    } else {
        json!({})
    };
    let generation = machine.metadata.generation;
    // What the Machine waits for decides when to look again: a provider object's status (its
    // watch wakes the Machine), a provider object or workload cluster not there yet (polled), its Node
    // (polled, less often as the Machine ages).
    let mut waiting = Waiting::Nothing;

    // Bootstrap config (§4).
    let config_ref = ContractRef::at(&machine.data, "spec.bootstrap.configRef");
    let config = match &config_ref {
        Some(config_ref) => {
            let config = external(&ctx, &namespace, config_ref, &machine, &cluster_name).await?;
            match &config {
                Some(config) => {
                    if bool_at(config, "status.initialization.dataSecretCreated") {
                        let secret = str_at(config, "status.dataSecretName").ok_or_else(|| {
                            Error::Invalid(format!(
                                "{} {}: dataSecretCreated but status.dataSecretName is empty",
                                config_ref.kind, config_ref.name
                            ))
                        })?;
                        if str_at(&machine.data, "spec.bootstrap.dataSecretName") != Some(secret) {
                            set_at(&mut machine.data, "spec.bootstrap.dataSecretName", json!(secret));
                            changed = true;
                        }
                        set_at(
                            &mut status,
                            "initialization.bootstrapDataSecretCreated",
                            json!(true),
                        );
                    } else if !bool_at(&status, "initialization.bootstrapDataSecretCreated") {
                        waiting.add(Waiting::Watched);
                    }
                }
                None => waiting.add(Waiting::Missing),
            }
            config
        }
        None => {
            if str_at(&machine.data, "spec.bootstrap.dataSecretName").is_some() {
                set_at(
                    &mut status,
                    "initialization.bootstrapDataSecretCreated",
                    json!(true),
                );
            }
            None
        }
    };

    // Infrastructure machine (§3).
    let infra_ref = ContractRef::at(&machine.data, "spec.infrastructureRef");
    let infra = match &infra_ref {
        Some(infra_ref) => {
            let infra = external(&ctx, &namespace, infra_ref, &machine, &cluster_name).await?;
            match &infra {
                Some(infra) => {
                    let provider_id = str_at(infra, "spec.providerID");
                    if bool_at(infra, "status.initialization.provisioned")
                        && let Some(provider_id) = provider_id
                    {
                        if str_at(&machine.data, "spec.providerID") != Some(provider_id) {
                            set_at(&mut machine.data, "spec.providerID", json!(provider_id));
                            changed = true;
                        }
                        if let Some(addresses) = at(infra, "status.addresses") {
                            status["addresses"] = addresses.clone();
                        }
                        if let Some(fd) = at(infra, "status.failureDomain") {
                            status["failureDomain"] = fd.clone();
                        }
                        set_at(
                            &mut status,
                            "initialization.infrastructureProvisioned",
                            json!(true),
                        );
                    } else if !bool_at(&status, "initialization.infrastructureProvisioned") {
                        waiting.add(Waiting::Watched);
                    }
                }
                None => waiting.add(Waiting::Missing),
            }
            infra
        }
        None => {
            waiting.add(Waiting::Missing);
            None
        }
    };

    // Node link (§3 step 3) and what core sees of the Node.
    let workload = ctx.workload(&namespace, &cluster_name).await;
    let nodes = match &workload {
        Some(client) => Some(ctx.nodes.of(&namespace, &cluster_name, client).await?),
        None => None,
    };
    if str_at(&status, "nodeRef.name").is_none() {
        match (str_at(&machine.data, "spec.providerID"), &nodes) {
            (Some(provider_id), Some(nodes)) => match node_by_provider_id(nodes, provider_id)? {
                Some(node) => status["nodeRef"] = json!({"name": node}),
                None => waiting.add(Waiting::Node),
            },
            (Some(_), None) => waiting.add(Waiting::Missing),
            (None, _) => waiting.add(Waiting::Watched),
        }
    }
    let node_conditions = nodes
        .as_deref()
        .and_then(|nodes| node_of(nodes, &status, &machine.data));
    let node = node_view(cluster.as_ref(), workload.is_some(), node_conditions.as_deref());
    if matches!(
        node,
        NodeView::ClusterNotProvisioned | NodeView::ControlPlaneNotInitialized
    ) {
        waiting.add(Waiting::Missing);
    }

    let templates = owner_templates(&ctx, &machine);
    let min_ready = machine_status::update(
        &mut status,
        &machine.data,
        generation,
        &Inputs {
            bootstrap: external_view(&config_ref, config.as_ref()),
            infrastructure: external_view(&infra_ref, infra.as_ref()),
            node,
            templates: templates.as_ref().map(|(current, desired)| (current, desired)),
            deleting: None,
        },
    );

    if changed {
        machine = replace(&api, &machine).await?;
    }
    replace_status(&api, &machine, &old_status, status).await?;
    let mut action = match waiting {
        Waiting::Missing => ctx.wait(),
        Waiting::Node => Action::requeue(node_poll(&ctx, &machine)),
        Waiting::Watched | Waiting::Nothing => ctx.resync(),
    };
    if let Some(min_ready) = min_ready {
        action = Action::requeue(min_ready.min(ctx.options.resync_interval));
    }
    Ok(action)
}

/// The view of a referenced provider object for the status.
fn external_view<'a>(reference: &'a Option<ContractRef>, object: Option<&'a Value>) -> External<'a> {
    match (reference, object) {
        (None, _) => External::NotReferenced,
        (Some(r), None) => External::Missing(&r.kind),
        (Some(r), Some(data)) => External::Found(&r.kind, data),
    }
}

/// What core's Machine controller sees of the Node: the Cluster's state gates the Node conditions,
/// then the workload connection, then the Node itself.
fn node_view<'a>(
    cluster: Option<&DynamicObject>,
    connected: bool,
    node: Option<&'a [machine_status::NodeCondition]>,
) -> NodeView<'a> {
    let status = cluster.and_then(|c| c.data.get("status")).unwrap_or(&Value::Null);
    if !bool_at(status, "initialization.infrastructureProvisioned") {
        return NodeView::ClusterNotProvisioned;
    }
    if !conditions::is_true(status, "ControlPlaneInitialized") {
        return NodeView::ControlPlaneNotInitialized;
    }
    if !connected {
        return NodeView::NotConnected;
    }
    match node {
        Some(conditions) => NodeView::Found(conditions),
        None => NodeView::Missing,
    }
}

/// The conditions of the Machine's Node (by `nodeRef`, else by providerID), if it exists.
fn node_of(nodes: &ClusterNodes, status: &Value, data: &Value) -> Option<Vec<machine_status::NodeCondition>> {
    let name = match str_at(status, "nodeRef.name") {
        Some(name) => name.to_string(),
        None => {
            let provider_id = str_at(data, "spec.providerID")?;
            match nodes.by_provider_id.get(provider_id).map(Vec::as_slice) {
                Some([only]) => only.clone(),
                _ => return None,
            }
        }
    };
    nodes.by_name.get(&name).cloned()
}

/// `spec.template` of the Machine's MachineSet and of that MachineSet's MachineDeployment, from the
/// controllers' caches; `None` unless both exist.
fn owner_templates(ctx: &Ctx, machine: &DynamicObject) -> Option<(Value, Value)> {
    let namespace = machine.namespace().unwrap_or_default();
    let ms_ref = controller_owner(machine, "MachineSet")?;
    let ms = ctx
        .machinesets
        .get(&ObjectRef::new_with(&ms_ref.name, CapiKind::MachineSet.api_resource()).within(&namespace))?;
    let md_ref = controller_owner(&ms, "MachineDeployment")?;
    let md = ctx.machinedeployments.get(
        &ObjectRef::new_with(&md_ref.name, CapiKind::MachineDeployment.api_resource()).within(&namespace),
    )?;
    Some((
        at(&ms.data, "spec.template")?.clone(),
        at(&md.data, "spec.template")?.clone(),
    ))
}

/// What a Machine waits for, the most urgent last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Waiting {
    Nothing,
    /// A status change of a provider object it owns (watched: the change wakes it).
    Watched,
    /// Its Node in the workload cluster.
    Node,
    /// A provider object, the workload cluster or the Cluster's readiness that is not there yet.
    Missing,
}

impl Waiting {
    fn add(&mut self, other: Waiting) {
        *self = (*self).max(other);
    }
}

/// How soon a Machine waiting for its Node looks again: the poll interval while it is young, then a
/// tenth of its age, at most ten poll intervals.
fn node_poll(ctx: &Ctx, machine: &DynamicObject) -> Duration {
    let poll = ctx.options.poll_interval;
    let age = machine
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|created| {
            let age = jiff::Timestamp::now().duration_since(created.0);
            Duration::try_from(age).ok()
        })
        .unwrap_or_default();
    (age / 10).clamp(poll, poll * 10)
}

/// Fetches the provider object `reference` and makes the Machine its controller owner with the
/// cluster-name label (§3 step 1). `None` while it does not exist.
async fn external(
    ctx: &Ctx,
    namespace: &str,
    reference: &ContractRef,
    machine: &DynamicObject,
    cluster_name: &str,
) -> Result<Option<Value>, Error> {
    let ar = ctx.resolve(&reference.api_group, &reference.kind).await?;
    ctx.machine_externals.watch(&ar);
    let api = dynamic_api(&ctx.client, namespace, &ar);
    let Some(mut obj) = api.get_opt(&reference.name).await? else {
        return Ok(None);
    };
    if is_deleting(&obj) {
        return Ok(Some(obj.data));
    }
    let machine_uid = machine.metadata.uid.clone().unwrap_or_default();
    let refs = obj.metadata.owner_references.get_or_insert_with(Vec::new);
    let before = refs.clone();
    refs.retain(|r| !is_capi_owner(r, "MachineSet"));
    if !refs.iter().any(|r| r.uid == machine_uid) {
        refs.push(capi_owner("Machine", machine, true));
    }
    let mut changed = *refs != before;
    if !cluster_name.is_empty() {
        changed |= ensure_label(&mut obj, CLUSTER_NAME_LABEL, cluster_name);
    }
    if changed {
        obj = replace(&api, &obj).await?;
    }
    Ok(Some(obj.data))
}

/// The Node whose `spec.providerID` equals `provider_id` (§3 step 3; >1 match is an error).
fn node_by_provider_id(nodes: &ClusterNodes, provider_id: &str) -> Result<Option<String>, Error> {
    match nodes.by_provider_id.get(provider_id).map(Vec::as_slice) {
        None | Some([]) => Ok(None),
        Some([node]) => Ok(Some(node.clone())),
        Some(_) => Err(Error::Invalid(format!(
            "more than one Node has providerID {provider_id}"
        ))),
    }
}

/// A referenced provider object of a deleting Machine: its kind and data, `None` when gone.
async fn fetch(ctx: &Ctx, namespace: &str, reference: &ContractRef) -> Result<Option<Value>, Error> {
    let ar = ctx.resolve(&reference.api_group, &reference.kind).await?;
    Ok(dynamic_api(&ctx.client, namespace, &ar)
        .get_opt(&reference.name)
        .await?
        .map(|o| o.data))
}

/// Deletion (§5): InfraMachine first and waited for, then the BootstrapConfig, then the Node, then the
/// finalizer.
async fn reconcile_delete(
    ctx: &Ctx,
    mut machine: DynamicObject,
    cluster: Option<&DynamicObject>,
) -> Result<Action, Error> {
    let namespace = machine.namespace().unwrap_or_default();
    let api = ctx.api(CapiKind::Machine, &namespace);
    if !machine.finalizers().iter().any(|f| f == MACHINE_FINALIZER) {
        return Ok(ctx.resync());
    }

    let mut step: Option<(&str, String)> = None;
    for (path, reason) in [
        ("spec.infrastructureRef", "WaitingForInfrastructureDeletion"),
        ("spec.bootstrap.configRef", "WaitingForBootstrapDeletion"),
    ] {
        if let Some(reference) = ContractRef::at(&machine.data, path) {
            let ar = ctx.resolve(&reference.api_group, &reference.kind).await?;
            let external = dynamic_api(&ctx.client, &namespace, &ar);
            if delete_and_check(&external, &reference.name).await? {
                step = Some((reason, format!("Waiting for {} to be deleted", reference.kind)));
                break;
            }
        }
    }
    if let Some((reason, message)) = step {
        write_deleting_status(ctx, &machine, cluster, reason, message).await?;
        return Ok(ctx.wait());
    }

    let cluster_deleting = cluster.is_none_or(is_deleting);
    let cluster_name = str_at(&machine.data, "spec.clusterName")
        .unwrap_or_default()
        .to_string();
    if let Some(node) = str_at(&machine.data, "status.nodeRef.name").map(str::to_string)
        && !cluster_deleting
        && let Some(client) = ctx.workload(&namespace, &cluster_name).await
    {
        delete_node(client, &node).await?;
    }

    // Re-read so the finalizer update carries the latest resourceVersion.
    if let Some(latest) = api.get_opt(&machine.name_any()).await? {
        machine = latest;
        if remove_finalizer(&mut machine, MACHINE_FINALIZER) {
            replace(&api, &machine).await?;
        }
    }
    Ok(ctx.resync())
}

async fn delete_node(client: Client, node: &str) -> Result<(), Error> {
    match Api::<Node>::all(client).delete(node, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The status of a deleting Machine in deletion step `reason`.
async fn write_deleting_status(
    ctx: &Ctx,
    machine: &DynamicObject,
    cluster: Option<&DynamicObject>,
    reason: &str,
    message: String,
) -> Result<(), Error> {
    let namespace = machine.namespace().unwrap_or_default();
    let api = ctx.api(CapiKind::Machine, &namespace);
    let old_status = machine.data.get("status").cloned().unwrap_or(Value::Null);
    let mut status = if old_status.is_object() {
        old_status.clone()
    } else {
        json!({})
    };
    let config_ref = ContractRef::at(&machine.data, "spec.bootstrap.configRef");
    let infra_ref = ContractRef::at(&machine.data, "spec.infrastructureRef");
    let config = match &config_ref {
        Some(r) => fetch(ctx, &namespace, r).await?,
        None => None,
    };
    let infra = match &infra_ref {
        Some(r) => fetch(ctx, &namespace, r).await?,
        None => None,
    };
    let cluster_name = str_at(&machine.data, "spec.clusterName").unwrap_or_default();
    let workload = ctx.workload(&namespace, cluster_name).await;
    let nodes = match &workload {
        Some(client) => ctx.nodes.of(&namespace, cluster_name, client).await.ok(),
        None => None,
    };
    let node_conditions = nodes
        .as_deref()
        .and_then(|nodes| node_of(nodes, &status, &machine.data));
    let templates = owner_templates(ctx, machine);
    machine_status::update(
        &mut status,
        &machine.data,
        machine.metadata.generation,
        &Inputs {
            bootstrap: external_view(&config_ref, config.as_ref()),
            infrastructure: external_view(&infra_ref, infra.as_ref()),
            node: node_view(cluster, workload.is_some(), node_conditions.as_deref()),
            templates: templates.as_ref().map(|(current, desired)| (current, desired)),
            deleting: Some((reason, message)),
        },
    );
    replace_status(&api, machine, &old_status, status).await
}
