//! MachineSet controller (capi-contract.md §4.1, §5; [CAPI] `core/reconcilers/machineset/*`).
//!
//! - Owned Machines are the Machines whose controller ownerReference is this MachineSet (no adoption of
//!   orphans matching the selector), read from the Machine cache.
//! - Expectations ([`super::expectations`]): after creating or deleting Machines the MachineSet does
//!   nothing until its cache shows those changes, as core waits for its cache after each create and
//!   delete; when the cache lags longer than the expectation timeout it reads its Machines from the
//!   API server instead. A slow cache therefore never makes it create more Machines than
//!   `spec.replicas` (or delete more than it should).
//! - Scale up, per missing replica (up to [`CREATE_PER_PASS`] per pass, [`CREATE_CONCURRENCY`] at a
//!   time; the next pass follows at once, so a scale-down during a large scale-up is seen): clone the
//!   BootstrapConfigTemplate (if any), then the InfraMachineTemplate, then create the Machine
//!   (controller ownerRef to the MachineSet). If the InfraMachine clone fails the bootstrap clone is
//!   deleted; if the API refuses the Machine both are (§4.1). Every create of a pass runs to its end
//!   and is recorded before the first error is returned.
//! - Scale down: victims by priority — already deleting (100), annotation
//!   `cluster.x-k8s.io/delete-machine` (80), then by `spec.deletion.order`: `Newest` (newest first),
//!   `Oldest` (oldest first), `Random` (the default; here a deterministic pseudo-random order, the FNV
//!   hash of the uid, so tests are reproducible); ties by name (§5). Deleting Machines count as
//!   replicas until they are gone, as in core.
//! - No Machines are created while the MachineSet or its Cluster is being deleted; Machines go by
//!   garbage collection when the MachineSet is deleted.
//! - Pause: the `Paused` condition is kept up to date (core's `EnsurePausedCondition`), nothing else
//!   is touched while paused.
//! - Status as core writes it ([`super::replica_status`]): counters from the Machines' `Ready`,
//!   `Available` and `UpToDate` conditions, `ScalingUp`, `ScalingDown`, `MachinesReady`,
//!   `MachinesUpToDate`, `Remediating`, `Deleting`, rewritten whenever one of them changes — that is,
//!   on almost every change of one of its Machines (its Machine watch wakes it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use kube::ResourceExt;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use super::expectations::Cached;
use super::replica_status::{SetInputs, update_machineset};
use super::templates::{clone_template, delete_clone, string_map};
use super::util::{
    ContractRef, at, capi_owner, controlled_by, controller_owner, ensure_label, fnv1a, i64_at, is_deleting,
    post_params, random_suffix, replace, replace_status, str_at,
};
use super::{
    CLUSTER_NAME_LABEL, CapiKind, Ctx, DELETE_MACHINE_ANNOTATION, DEPLOYMENT_NAME_LABEL, Error,
    SET_NAME_LABEL, paused,
};

/// Most Machines one pass creates; the rest are created by the next pass, which follows at once.
pub(crate) const CREATE_PER_PASS: usize = 100;
/// Machines (each with its clones) created at the same time.
pub(crate) const CREATE_CONCURRENCY: usize = 16;
/// How often a MachineSet looks again while its cache lags behind its own creates and deletes.
const EXPECTATION_POLL: Duration = Duration::from_millis(50);

/// Reconciles one MachineSet.
pub(crate) async fn reconcile(ms: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = ms.namespace().unwrap_or_default();
    let Some(cluster_name) = str_at(&ms.data, "spec.clusterName").map(str::to_string) else {
        return Ok(ctx.resync());
    };
    let cluster = ctx.cluster(&namespace, &cluster_name).await?;
    let ms_api = ctx.api(CapiKind::MachineSet, &namespace);
    let mut ms = (*ms).clone();
    if paused::ensure(&ms_api, &mut ms, cluster.as_ref(), "MachineSet").await? {
        return Ok(ctx.resync());
    }
    if is_deleting(&ms) {
        return Ok(ctx.resync());
    }
    let cluster_deleting = cluster.as_ref().is_none_or(is_deleting);
    if ensure_label(&mut ms, CLUSTER_NAME_LABEL, &cluster_name) {
        ms = replace(&ms_api, &ms).await?;
    }
    let uid = ms.metadata.uid.clone().unwrap_or_default();
    let machine_api = ctx.api(CapiKind::Machine, &namespace);
    let Some(machines) = owned_machines(&ctx, &ms, &uid).await? else {
        return Ok(Action::requeue(EXPECTATION_POLL));
    };

    let desired = i64_at(&ms.data, "spec.replicas").unwrap_or(1).max(0) as usize;
    let mut action = ctx.resync();
    if machines.len() < desired {
        action = ctx.wait();
        if !cluster_deleting {
            let missing = desired - machines.len();
            let now = missing.min(CREATE_PER_PASS);
            let results: Vec<Result<String, Error>> = futures::stream::iter(0..now)
                .map(|_| create_machine(&ctx, &ms, &cluster_name, &uid))
                .buffer_unordered(CREATE_CONCURRENCY)
                .collect()
                .await;
            if let Some(error) = results.into_iter().find_map(Result::err) {
                return Err(error);
            }
            if missing > now {
                action = Action::requeue(Duration::from_millis(10));
            }
        }
    } else if machines.len() > desired {
        let order = str_at(&ms.data, "spec.deletion.order").unwrap_or("Random");
        for victim in victims(&machines, machines.len() - desired, order) {
            if !is_deleting(&victim) {
                super::util::delete_and_check(&machine_api, &victim.name_any()).await?;
                ctx.expectations.expect_deletion(&uid, &victim.name_any());
            }
        }
        action = ctx.wait();
    }

    let old_status = ms.data.get("status").cloned().unwrap_or(Value::Null);
    let mut status = if old_status.is_object() {
        old_status.clone()
    } else {
        json!({})
    };
    let missing = missing_templates(&ctx, &namespace, at(&ms.data, "spec.template")).await;
    update_machineset(
        &mut status,
        &ms,
        &selector_string(&ms.data),
        &SetInputs {
            machines: &machines,
            missing_templates: &missing,
        },
    );
    replace_status(&ms_api, &ms, &old_status, status).await?;
    Ok(action)
}

/// The Machines the MachineSet owns: from the cache once it shows every create and delete the
/// MachineSet made, from the API server when it lags longer than the expectation timeout, `None`
/// (look again shortly) in between.
async fn owned_machines(
    ctx: &Ctx,
    ms: &DynamicObject,
    uid: &str,
) -> Result<Option<Vec<Arc<DynamicObject>>>, Error> {
    let namespace = ms.namespace().unwrap_or_default();
    if !ctx.machines_synced.load(std::sync::atomic::Ordering::Acquire) {
        return Ok(None);
    }
    let machine_ar = CapiKind::Machine.api_resource();
    let cached = |name: &str| match ctx
        .machines
        .get(&ObjectRef::new_with(name, machine_ar.clone()).within(&namespace))
    {
        None => Cached::Absent,
        Some(m) if is_deleting(&m) => Cached::Deleting,
        Some(_) => Cached::Present,
    };
    let outstanding = ctx
        .expectations
        .observe(uid, ctx.tuning.expectation_timeout, cached);
    if outstanding.met() {
        return Ok(Some(
            ctx.machines
                .state()
                .into_iter()
                .filter(|m| m.namespace().as_deref() == Some(namespace.as_str()) && controlled_by(m, uid))
                .collect(),
        ));
    }
    if !outstanding.stale {
        return Ok(None);
    }
    tracing::debug!(machineset = %ms.name_any(), ?outstanding, "capi stand-in: Machine cache lags, listing live");
    let selector = format!("{SET_NAME_LABEL}={}", ms.name_any());
    let live: Vec<Arc<DynamicObject>> = ctx
        .api(CapiKind::Machine, &namespace)
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|m| controlled_by(m, uid))
        .map(Arc::new)
        .collect();
    let states: HashMap<String, bool> = live.iter().map(|m| (m.name_any(), is_deleting(m))).collect();
    ctx.expectations.confirm(uid, &states);
    Ok(Some(live))
}

/// Kinds of the templates `template` (a Machine template) references that do not exist.
pub(crate) async fn missing_templates(ctx: &Ctx, namespace: &str, template: Option<&Value>) -> Vec<String> {
    let mut missing = Vec::new();
    let Some(template) = template else {
        return missing;
    };
    for path in ["spec.bootstrap.configRef", "spec.infrastructureRef"] {
        if let Some(reference) = ContractRef::at(template, path)
            && !ctx.template_exists(namespace, &reference).await
        {
            missing.push(reference.kind.clone());
        }
    }
    missing
}

/// `spec.selector.matchLabels` as a label selector string (`matchExpressions` are not supported).
pub(crate) fn selector_string(obj: &Value) -> String {
    string_map(obj, "spec.selector.matchLabels")
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `count` Machines to delete, in core's priority order (§5).
fn victims(machines: &[Arc<DynamicObject>], count: usize, order: &str) -> Vec<Arc<DynamicObject>> {
    let priority = |m: &DynamicObject| -> u8 {
        if is_deleting(m) {
            100
        } else if m.annotations().contains_key(DELETE_MACHINE_ANNOTATION) {
            80
        } else {
            0
        }
    };
    let mut sorted: Vec<Arc<DynamicObject>> = machines.to_vec();
    sorted.sort_by(|a, b| {
        let by_priority = priority(b).cmp(&priority(a));
        let by_order = match order {
            "Newest" => b.metadata.creation_timestamp.cmp(&a.metadata.creation_timestamp),
            "Oldest" => a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp),
            _ => {
                let key = |m: &DynamicObject| fnv1a(m.metadata.uid.as_deref().unwrap_or("").as_bytes());
                key(a).cmp(&key(b))
            }
        };
        by_priority
            .then(by_order)
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    sorted.truncate(count);
    sorted
}

/// Creates one Machine with its clones (§4.1); its name.
async fn create_machine(
    ctx: &Ctx,
    ms: &DynamicObject,
    cluster_name: &str,
    uid: &str,
) -> Result<String, Error> {
    let namespace = ms.namespace().unwrap_or_default();
    let ms_name = ms.name_any();
    let name = format!("{ms_name}-{}", random_suffix(5));
    let template = at(&ms.data, "spec.template")
        .cloned()
        .unwrap_or_else(|| json!({}));

    let mut labels = string_map(&template, "metadata.labels");
    labels.insert(CLUSTER_NAME_LABEL.to_string(), cluster_name.to_string());
    labels.insert(SET_NAME_LABEL.to_string(), ms_name.clone());
    if let Some(md) = controller_owner(ms, "MachineDeployment") {
        labels.insert(DEPLOYMENT_NAME_LABEL.to_string(), md.name.clone());
    }
    let annotations: BTreeMap<String, String> = string_map(&template, "metadata.annotations");
    let clone_owner = capi_owner("MachineSet", ms, false);

    let bootstrap = match ContractRef::at(&template, "spec.bootstrap.configRef") {
        Some(template_ref) => {
            Some(clone_template(ctx, &namespace, &template_ref, &name, &labels, &clone_owner).await?)
        }
        None => None,
    };
    let infra_template = ContractRef::at(&template, "spec.infrastructureRef").ok_or_else(|| {
        Error::Invalid(format!(
            "MachineSet {ms_name}: spec.template.spec.infrastructureRef unset"
        ))
    });
    let infra = match infra_template {
        Ok(template_ref) => {
            clone_template(ctx, &namespace, &template_ref, &name, &labels, &clone_owner).await
        }
        Err(e) => Err(e),
    };
    let infra = match infra {
        Ok(infra) => infra,
        Err(e) => {
            if let Some(bootstrap) = &bootstrap {
                delete_clone(ctx, &namespace, bootstrap).await;
            }
            return Err(e);
        }
    };

    let mut spec = at(&template, "spec").cloned().unwrap_or_else(|| json!({}));
    spec["clusterName"] = json!(cluster_name);
    spec["infrastructureRef"] = infra.to_json();
    if let Some(bootstrap) = &bootstrap {
        spec["bootstrap"]["configRef"] = bootstrap.to_json();
    }
    let machine: DynamicObject = serde_json::from_value(json!({
        "apiVersion": super::CAPI_API_VERSION,
        "kind": "Machine",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [capi_owner("MachineSet", ms, true)],
        },
        "spec": spec,
    }))
    .map_err(|e| Error::Invalid(e.to_string()))?;
    // Expected before the request goes out: an answer lost on the way still leaves a Machine.
    ctx.expectations.expect_creation(uid, &name);
    let created = ctx
        .api(CapiKind::Machine, &namespace)
        .create(&post_params(), &machine)
        .await;
    if let Err(e) = created {
        if refused(&e) {
            ctx.expectations.creation_refused(uid, &name);
            delete_clone(ctx, &namespace, &infra).await;
            if let Some(bootstrap) = &bootstrap {
                delete_clone(ctx, &namespace, bootstrap).await;
            }
        }
        return Err(e.into());
    }
    Ok(name)
}

/// True when the API certainly did not create the object: a 4xx answer other than 409 (the name
/// exists: maybe an earlier attempt of this very request) and 429 (throttled before or after).
fn refused(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if (400..500).contains(&status.code) && status.code != 409 && status.code != 429)
}
