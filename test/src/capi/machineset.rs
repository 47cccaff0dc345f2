//! MachineSet controller (capi-contract.md §4.1, §5; [CAPI] `core/reconcilers/machineset/*`).
//!
//! - Owned Machines are the Machines whose controller ownerReference is this MachineSet (no adoption of
//!   orphans matching the selector).
//! - Scale up, per missing replica (up to [`CREATE_PER_PASS`] per pass, [`CREATE_CONCURRENCY`] at a
//!   time; the next pass follows at once, so a scale-down during a large scale-up is seen): clone the BootstrapConfigTemplate (if any), then the
//!   InfraMachineTemplate, then create the Machine (controller ownerRef to the MachineSet). If the
//!   InfraMachine clone fails the bootstrap clone is deleted; if the Machine fails both are (§4.1).
//! - Scale down: victims by priority — already deleting (100), annotation
//!   `cluster.x-k8s.io/delete-machine` (80), then by `spec.deletion.order`: `Newest` (newest first),
//!   `Oldest` (oldest first), `Random` (the default; here a deterministic pseudo-random order, the FNV
//!   hash of the uid, so tests are reproducible); ties by name (§5). Deleting Machines count as
//!   replicas until they are gone, as in core.
//! - No Machines are created while the MachineSet or its Cluster is being deleted; Machines go by
//!   garbage collection when the MachineSet is deleted.
//! - Status `replicas` (all owned Machines), `readyReplicas`/`availableReplicas` (Machines with a
//!   `nodeRef`, a simplification of core's Ready/Available conditions), `upToDateReplicas`, `selector`
//!   (from `spec.selector.matchLabels`) are informational.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};

use super::templates::{clone_template, delete_clone, string_map};
use super::util::{
    ContractRef, at, capi_owner, controlled_by, controller_owner, ensure_label, fnv1a, i64_at, is_deleting,
    post_params, random_suffix, replace, replace_status, str_at,
};
use super::{
    CLUSTER_NAME_LABEL, CapiKind, Ctx, DELETE_MACHINE_ANNOTATION, DEPLOYMENT_NAME_LABEL, Error,
    SET_NAME_LABEL, cluster_paused,
};

/// Most Machines one pass creates; the rest are created by the next pass, which follows at once.
pub(crate) const CREATE_PER_PASS: usize = 100;
/// Machines (each with its clones) created at the same time.
pub(crate) const CREATE_CONCURRENCY: usize = 16;

/// Reconciles one MachineSet.
pub(crate) async fn reconcile(ms: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = ms.namespace().unwrap_or_default();
    let Some(cluster_name) = str_at(&ms.data, "spec.clusterName").map(str::to_string) else {
        return Ok(ctx.resync());
    };
    let cluster = ctx.cluster(&namespace, &cluster_name).await?;
    if cluster.as_ref().is_some_and(cluster_paused) || super::util::has_paused_annotation(&ms) {
        return Ok(ctx.resync());
    }
    if is_deleting(&ms) {
        return Ok(ctx.resync());
    }
    let cluster_deleting = cluster.as_ref().is_none_or(is_deleting);
    let ms_api = ctx.api(CapiKind::MachineSet, &namespace);
    let mut ms = (*ms).clone();
    if ensure_label(&mut ms, CLUSTER_NAME_LABEL, &cluster_name) {
        ms = replace(&ms_api, &ms).await?;
    }
    let uid = ms.metadata.uid.clone().unwrap_or_default();
    let machine_api = ctx.api(CapiKind::Machine, &namespace);
    // Owned Machines from the cache, once it shows every Machine this MachineSet created.
    if ctx.machines.wait_until_ready().await.is_err() {
        return Ok(ctx.wait());
    }
    let machine_ar = CapiKind::Machine.api_resource();
    let cached = |name: &str| {
        ctx.machines
            .get(&ObjectRef::new_with(name, machine_ar.clone()).within(&namespace))
            .is_some()
    };
    if !ctx.expectations.met(&uid, cached) {
        return Ok(Action::requeue(EXPECTATION_POLL));
    }
    let machines: Vec<Arc<DynamicObject>> = ctx
        .machines
        .state()
        .into_iter()
        .filter(|m| m.namespace().as_deref() == Some(namespace.as_str()) && controlled_by(m, &uid))
        .collect();

    let desired = i64_at(&ms.data, "spec.replicas").unwrap_or(1).max(0) as usize;
    let mut action = ctx.resync();
    if machines.len() < desired {
        action = ctx.wait();
        if !cluster_deleting {
            let missing = desired - machines.len();
            let now = missing.min(CREATE_PER_PASS);
            let created = futures::stream::iter(0..now)
                .map(|_| create_machine(&ctx, &ms, &cluster_name))
                .buffer_unordered(CREATE_CONCURRENCY)
                .try_collect::<Vec<String>>()
                .await?;
            ctx.expectations.expect(&uid, created);
            if missing > now {
                action = Action::requeue(Duration::from_millis(10));
            }
        }
    } else if machines.len() > desired {
        let order = str_at(&ms.data, "spec.deletion.order").unwrap_or("Random");
        for victim in victims(&machines, machines.len() - desired, order) {
            if !is_deleting(&victim) {
                super::util::delete_and_check(&machine_api, &victim.name_any()).await?;
            }
        }
        action = ctx.wait();
    }

    let ready = machines
        .iter()
        .filter(|m| str_at(&m.data, "status.nodeRef.name").is_some() && !is_deleting(m))
        .count();
    let old_status = ms.data.get("status").cloned().unwrap_or(Value::Null);
    let mut status = old_status.clone();
    if !status.is_object() {
        status = json!({});
    }
    status["replicas"] = json!(machines.len());
    status["readyReplicas"] = json!(ready);
    status["availableReplicas"] = json!(ready);
    status["upToDateReplicas"] = json!(machines.len());
    status["selector"] = json!(selector_string(&ms.data));
    if let Some(generation) = ms.metadata.generation {
        status["observedGeneration"] = json!(generation);
    }
    replace_status(&ms_api, &ms, &old_status, status).await?;
    Ok(action)
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
async fn create_machine(ctx: &Ctx, ms: &DynamicObject, cluster_name: &str) -> Result<String, Error> {
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
    let created = ctx
        .api(CapiKind::Machine, &namespace)
        .create(&post_params(), &machine)
        .await;
    if let Err(e) = created {
        delete_clone(ctx, &namespace, &infra).await;
        if let Some(bootstrap) = &bootstrap {
            delete_clone(ctx, &namespace, bootstrap).await;
        }
        return Err(e.into());
    }
    Ok(name)
}

/// How often a MachineSet looks again while its cache lags behind the Machines it created.
const EXPECTATION_POLL: Duration = Duration::from_millis(50);
/// How long a created Machine is waited for in the cache (one deleted at once never shows).
const EXPECTATION_TTL: Duration = Duration::from_secs(10);

/// The Machines each MachineSet (by uid) created that the cache has not shown yet: counting owned
/// Machines before the cache shows them would create them again.
#[derive(Default)]
pub(crate) struct Expectations {
    created: std::sync::Mutex<std::collections::HashMap<String, Vec<(String, Instant)>>>,
}

impl Expectations {
    /// MachineSet `owner` created the Machines `names`.
    pub(crate) fn expect(&self, owner: &str, names: Vec<String>) {
        let now = Instant::now();
        self.lock()
            .entry(owner.to_owned())
            .or_default()
            .extend(names.into_iter().map(|name| (name, now)));
    }

    /// Whether the cache (`cached`) shows every Machine `owner` created, forgetting those it shows
    /// and those waited for longer than [`EXPECTATION_TTL`].
    pub(crate) fn met(&self, owner: &str, cached: impl Fn(&str) -> bool) -> bool {
        let mut created = self.lock();
        let Some(names) = created.get_mut(owner) else {
            return true;
        };
        names.retain(|(name, at)| !cached(name) && at.elapsed() < EXPECTATION_TTL);
        if names.is_empty() {
            created.remove(owner);
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<(String, Instant)>>> {
        self.created
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
