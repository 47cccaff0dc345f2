//! Machine controller (capi-contract.md §3, §4, §5; [CAPI] `core/reconcilers/machine/*`).
//!
//! - Finalizer `machine.cluster.x-k8s.io`; label `cluster.x-k8s.io/cluster-name`.
//! - For the BootstrapConfig (`spec.bootstrap.configRef`) and the InfraMachine
//!   (`spec.infrastructureRef`), resolved through the provider CRD's contract label (§1): replace a
//!   MachineSet ownerRef with a controller ownerRef to the Machine (`controller: true,
//!   blockOwnerDeletion: true`) and set the cluster-name label (`ensureExternalOwnershipAndWatch`, §3.1).
//! - Bootstrap (§4): once `status.initialization.dataSecretCreated` is true, copy `status.dataSecretName`
//!   into `spec.bootstrap.dataSecretName` (an empty name is an error) and set
//!   `status.initialization.bootstrapDataSecretCreated`; without a configRef a user-set
//!   `dataSecretName` counts. `Ready` is mirrored into `BootstrapConfigReady`.
//! - Infrastructure (§3.2): once `status.initialization.provisioned` is true **and** `spec.providerID`
//!   is set, copy `spec.providerID`, `status.addresses`, `status.failureDomain` and set
//!   `status.initialization.infrastructureProvisioned` (never flips back). `Ready` is mirrored into
//!   `InfrastructureReady`.
//! - Node link (§3.3): with a [`super::WorkloadClusters`] client, `status.nodeRef.name` is the Node whose
//!   `spec.providerID` equals the Machine's (more than one match is an error).
//! - Phases (informational): Pending, Provisioning, Provisioned, Running, Deleting.
//! - Deletion (§5): delete the InfraMachine and wait until it is gone, then the BootstrapConfig and
//!   wait, then (with a workload client, a nodeRef and the Cluster not being deleted) the Node, then
//!   remove the finalizer. Drain, volume detach and hooks are not emulated.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::util::{
    ContractRef, at, bool_at, capi_owner, delete_and_check, dynamic_api, ensure_finalizer, ensure_label,
    has_paused_annotation, is_capi_owner, is_deleting, mirror_ready, remove_finalizer, replace,
    replace_status, set_at, str_at,
};
use super::{CLUSTER_NAME_LABEL, CapiKind, Ctx, Error, MACHINE_FINALIZER, cluster_paused};

/// Reconciles one Machine.
pub(crate) async fn reconcile(machine: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = machine.namespace().unwrap_or_default();
    let cluster_name = str_at(&machine.data, "spec.clusterName")
        .unwrap_or_default()
        .to_string();
    let cluster = ctx.cluster(&namespace, &cluster_name).await?;
    if cluster.as_ref().is_some_and(cluster_paused) || has_paused_annotation(&machine) {
        return Ok(ctx.resync());
    }
    let api = ctx.api(CapiKind::Machine, &namespace);
    let mut machine = (*machine).clone();
    if is_deleting(&machine) {
        return reconcile_delete(&ctx, machine, cluster.as_ref()).await;
    }

    let mut changed = ensure_finalizer(&mut machine, MACHINE_FINALIZER);
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
    match ContractRef::at(&machine.data, "spec.bootstrap.configRef") {
        Some(config_ref) => match external(&ctx, &namespace, &config_ref, &machine, &cluster_name).await? {
            Some(config) => {
                mirror_ready(&mut status, &config, "BootstrapConfigReady", generation);
                if bool_at(&config, "status.initialization.dataSecretCreated") {
                    let secret = str_at(&config, "status.dataSecretName").ok_or_else(|| {
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
        },
        None => {
            if str_at(&machine.data, "spec.bootstrap.dataSecretName").is_some() {
                set_at(
                    &mut status,
                    "initialization.bootstrapDataSecretCreated",
                    json!(true),
                );
            }
        }
    }

    // Infrastructure machine (§3).
    match ContractRef::at(&machine.data, "spec.infrastructureRef") {
        Some(infra_ref) => match external(&ctx, &namespace, &infra_ref, &machine, &cluster_name).await? {
            Some(infra) => {
                mirror_ready(&mut status, &infra, "InfrastructureReady", generation);
                let provider_id = str_at(&infra, "spec.providerID");
                if bool_at(&infra, "status.initialization.provisioned")
                    && let Some(provider_id) = provider_id
                {
                    if str_at(&machine.data, "spec.providerID") != Some(provider_id) {
                        set_at(&mut machine.data, "spec.providerID", json!(provider_id));
                        changed = true;
                    }
                    if let Some(addresses) = at(&infra, "status.addresses") {
                        status["addresses"] = addresses.clone();
                    }
                    if let Some(fd) = at(&infra, "status.failureDomain") {
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
        },
        None => waiting.add(Waiting::Missing),
    }

    // Node link (§3 step 3).
    if str_at(&status, "nodeRef.name").is_none() {
        match str_at(&machine.data, "spec.providerID") {
            Some(provider_id) => match workload(&ctx, &namespace, &cluster_name).await {
                Some(client) => {
                    match node_by_provider_id(&ctx, &namespace, &cluster_name, &client, provider_id).await? {
                        Some(node) => status["nodeRef"] = json!({"name": node}),
                        None => waiting.add(Waiting::Node),
                    }
                }
                None => waiting.add(Waiting::Missing),
            },
            None => waiting.add(Waiting::Watched),
        }
    }

    let phase = if str_at(&status, "nodeRef.name").is_some() {
        "Running"
    } else if bool_at(&status, "initialization.infrastructureProvisioned") {
        "Provisioned"
    } else if bool_at(&status, "initialization.bootstrapDataSecretCreated") {
        "Provisioning"
    } else {
        "Pending"
    };
    status["phase"] = json!(phase);
    if let Some(generation) = generation {
        status["observedGeneration"] = json!(generation);
    }

    if changed {
        machine = replace(&api, &machine).await?;
    }
    replace_status(&api, &machine, &old_status, status).await?;
    Ok(match waiting {
        Waiting::Missing => ctx.wait(),
        Waiting::Node => Action::requeue(node_poll(&ctx, &machine)),
        Waiting::Watched | Waiting::Nothing => ctx.resync(),
    })
}

/// What a Machine waits for, the most urgent last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Waiting {
    Nothing,
    /// A status change of a provider object it owns (watched: the change wakes it).
    Watched,
    /// Its Node in the workload cluster.
    Node,
    /// A provider object or the workload cluster that does not exist yet.
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

async fn workload(ctx: &Ctx, namespace: &str, cluster: &str) -> Option<Client> {
    match &ctx.options.workload_clusters {
        Some(clusters) if !cluster.is_empty() => clusters.client(namespace, cluster).await,
        _ => None,
    }
}

/// The Node whose `spec.providerID` equals `provider_id` (§3 step 3; >1 match is an error), read
/// from the cluster's Node index ([`super::NodeIndex`]).
async fn node_by_provider_id(
    ctx: &Ctx,
    namespace: &str,
    cluster: &str,
    client: &Client,
    provider_id: &str,
) -> Result<Option<String>, Error> {
    let index = ctx.nodes.of(namespace, cluster, client).await?;
    match index.get(provider_id).map(Vec::as_slice) {
        None | Some([]) => Ok(None),
        Some([node]) => Ok(Some(node.clone())),
        Some(_) => Err(Error::Invalid(format!(
            "more than one Node has providerID {provider_id}"
        ))),
    }
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
    let old_status = machine.data.get("status").cloned().unwrap_or(Value::Null);
    let mut status = if old_status.is_object() {
        old_status.clone()
    } else {
        json!({})
    };
    status["phase"] = json!("Deleting");
    replace_status(&api, &machine, &old_status, status).await?;
    if !machine.finalizers().iter().any(|f| f == MACHINE_FINALIZER) {
        return Ok(ctx.resync());
    }

    for path in ["spec.infrastructureRef", "spec.bootstrap.configRef"] {
        if let Some(reference) = ContractRef::at(&machine.data, path) {
            let ar = ctx.resolve(&reference.api_group, &reference.kind).await?;
            let external = dynamic_api(&ctx.client, &namespace, &ar);
            if delete_and_check(&external, &reference.name).await? {
                return Ok(ctx.wait());
            }
        }
    }

    let cluster_deleting = cluster.is_none_or(is_deleting);
    let cluster_name = str_at(&machine.data, "spec.clusterName")
        .unwrap_or_default()
        .to_string();
    if let Some(node) = str_at(&machine.data, "status.nodeRef.name").map(str::to_string)
        && !cluster_deleting
        && let Some(client) = workload(ctx, &namespace, &cluster_name).await
    {
        match Api::<Node>::all(client).delete(&node, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
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
