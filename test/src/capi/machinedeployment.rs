//! MachineDeployment controller (capi-contract.md §4.1; [CAPI] `core/reconcilers/machinedeployment/*`).
//!
//! - One MachineSet per distinct `spec.template`: the FNV-1a hash of the template's canonical JSON is the
//!   label `machine-template-hash` and the MachineSet name suffix (`<md>-<hash>`). The MachineSet gets a
//!   controller ownerRef to the MachineDeployment, labels `cluster.x-k8s.io/cluster-name`,
//!   `cluster.x-k8s.io/deployment-name` and the hash, the selector plus those labels, and
//!   `spec.deletion.order` copied from the MachineDeployment.
//! - Rollout (simplified RollingUpdate): the MachineSet of the current template is created at the full
//!   replica count; once it reports `status.replicas` equal to the desired count, older MachineSets are
//!   scaled to 0, and an old MachineSet at 0 with no Machines left is deleted. There is no availability
//!   gate (maxUnavailable is not honoured: without Nodes nothing would ever become available).
//! - Pause: the `Paused` condition ([`super::paused`]) and nothing else while paused.
//! - Status as core writes it ([`super::replica_status`]): counters summed over its MachineSets,
//!   `phase` (ScalingUp, ScalingDown, Running), `selector` (the selector core's defaulting gives it:
//!   `spec.selector.matchLabels` plus the cluster-name and deployment-name labels) and the
//!   conditions `Available`, `RollingOut`, `ScalingUp`, `ScalingDown`, `MachinesReady`,
//!   `MachinesUpToDate` (over its Machines, label `cluster.x-k8s.io/deployment-name`),
//!   `Remediating`, `Deleting`. Its MachineSets' status changes wake it, and its own status changes
//!   wake its Cluster.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::machineset::missing_templates;
use super::replica_status::{DeploymentInputs, update_machinedeployment};
use super::templates::string_map;
use super::util::{
    at, canonical_json, capi_owner, controlled_by, ensure_label, fnv1a, i64_at, is_deleting, post_params,
    replace, replace_status, str_at,
};
use super::{
    CLUSTER_NAME_LABEL, CapiKind, Ctx, DEPLOYMENT_NAME_LABEL, Error, MACHINE_TEMPLATE_HASH_LABEL, paused,
};

/// The `machine-template-hash` of a MachineDeployment's `spec.template`.
pub fn template_hash(template: &Value) -> String {
    format!(
        "{:x}",
        fnv1a(canonical_json(template).as_bytes()) & 0xff_ffff_ffff
    )
}

/// Reconciles one MachineDeployment.
pub(crate) async fn reconcile(md: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let namespace = md.namespace().unwrap_or_default();
    let Some(cluster_name) = str_at(&md.data, "spec.clusterName").map(str::to_string) else {
        return Ok(ctx.resync());
    };
    let cluster = ctx.cluster(&namespace, &cluster_name).await?;
    let md_api = ctx.api(CapiKind::MachineDeployment, &namespace);
    let mut md = (*md).clone();
    if paused::ensure(&md_api, &mut md, cluster.as_ref(), "MachineDeployment").await? {
        return Ok(ctx.resync());
    }
    if is_deleting(&md) {
        return Ok(ctx.resync());
    }
    let cluster_deleting = cluster.as_ref().is_none_or(is_deleting);
    let ms_api = ctx.api(CapiKind::MachineSet, &namespace);
    if ensure_label(&mut md, CLUSTER_NAME_LABEL, &cluster_name) {
        md = replace(&md_api, &md).await?;
    }
    let uid = md.metadata.uid.clone().unwrap_or_default();
    let template = at(&md.data, "spec.template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let hash = template_hash(&template);
    let desired = i64_at(&md.data, "spec.replicas").unwrap_or(1).max(0);
    let order = str_at(&md.data, "spec.deletion.order").map(str::to_string);

    let machinesets: Vec<DynamicObject> = ms_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|ms| controlled_by(ms, &uid))
        .collect();
    let is_current =
        |ms: &DynamicObject| ms.labels().get(MACHINE_TEMPLATE_HASH_LABEL).map(String::as_str) == Some(&hash);
    let mut action = ctx.resync();

    let current = match machinesets.iter().find(|ms| is_current(ms)) {
        Some(ms) => {
            let mut ms = ms.clone();
            let mut changed = false;
            if i64_at(&ms.data, "spec.replicas") != Some(desired) {
                ms.data["spec"]["replicas"] = json!(desired);
                changed = true;
            }
            if let Some(order) = &order
                && str_at(&ms.data, "spec.deletion.order") != Some(order.as_str())
            {
                ms.data["spec"]["deletion"]["order"] = json!(order);
                changed = true;
            }
            if changed {
                ms = replace(&ms_api, &ms).await?;
                action = ctx.wait();
            }
            Some(ms)
        }
        None if !cluster_deleting => {
            let ms = new_machineset(&md, &cluster_name, &template, &hash, desired, order.as_deref());
            let created = ms_api.create(&post_params(), &ms).await?;
            action = ctx.wait();
            Some(created)
        }
        None => None,
    };

    let current_replicas = current
        .as_ref()
        .and_then(|ms| i64_at(&ms.data, "status.replicas"))
        .unwrap_or(0);
    let new_complete = current.is_some() && current_replicas == desired;
    for old in machinesets.iter().filter(|ms| !is_current(ms)) {
        let old_replicas = i64_at(&old.data, "spec.replicas").unwrap_or(1);
        if new_complete && old_replicas != 0 {
            let mut old = old.clone();
            old.data["spec"]["replicas"] = json!(0);
            replace(&ms_api, &old).await?;
            action = ctx.wait();
        } else if old_replicas == 0 && !is_deleting(old) {
            let old_uid = old.metadata.uid.clone().unwrap_or_default();
            let remaining = ctx
                .api(CapiKind::Machine, &namespace)
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|m| controlled_by(m, &old_uid))
                .count();
            if remaining == 0 {
                super::util::delete_and_check(&ms_api, &old.name_any()).await?;
            }
            action = ctx.wait();
        } else {
            action = ctx.wait();
        }
    }

    let replicas: i64 = machinesets
        .iter()
        .filter_map(|ms| i64_at(&ms.data, "status.replicas"))
        .sum();
    if replicas != desired {
        action = ctx.wait();
    }
    let old_status = md.data.get("status").cloned().unwrap_or(Value::Null);
    let mut status = old_status.clone();
    if !status.is_object() {
        status = json!({});
    }
    let md_name = md.name_any();
    let machines: Vec<Arc<DynamicObject>> = ctx
        .machines
        .state()
        .into_iter()
        .filter(|m| {
            m.namespace().as_deref() == Some(namespace.as_str())
                && m.labels().get(DEPLOYMENT_NAME_LABEL) == Some(&md_name)
        })
        .collect();
    let missing = missing_templates(&ctx, &namespace, at(&md.data, "spec.template")).await;
    update_machinedeployment(
        &mut status,
        &md,
        &deployment_selector(&md, &cluster_name),
        &DeploymentInputs {
            machinesets: &machinesets,
            machines: &machines,
            missing_templates: &missing,
        },
    );
    replace_status(&md_api, &md, &old_status, status).await?;
    Ok(action)
}

/// The selector core's defaulting gives a MachineDeployment: `spec.selector.matchLabels` plus its
/// cluster-name and deployment-name labels, as `k=v` pairs sorted by key.
fn deployment_selector(md: &DynamicObject, cluster_name: &str) -> String {
    let mut labels = string_map(&md.data, "spec.selector.matchLabels");
    labels.insert(CLUSTER_NAME_LABEL.to_string(), cluster_name.to_string());
    labels.insert(DEPLOYMENT_NAME_LABEL.to_string(), md.name_any());
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The MachineSet for the current template (see the module docs).
fn new_machineset(
    md: &DynamicObject,
    cluster_name: &str,
    template: &Value,
    hash: &str,
    replicas: i64,
    order: Option<&str>,
) -> DynamicObject {
    let md_name = md.name_any();
    let mut own_labels = vec![
        (CLUSTER_NAME_LABEL, cluster_name.to_string()),
        (DEPLOYMENT_NAME_LABEL, md_name.clone()),
        (MACHINE_TEMPLATE_HASH_LABEL, hash.to_string()),
    ];
    let mut template = template.clone();
    let mut template_labels = string_map(&template, "metadata.labels");
    let mut labels = template_labels.clone();
    let mut selector = string_map(&md.data, "spec.selector.matchLabels");
    for (k, v) in own_labels.drain(..) {
        template_labels.insert(k.to_string(), v.clone());
        labels.insert(k.to_string(), v.clone());
        if k != CLUSTER_NAME_LABEL || !selector.contains_key(k) {
            selector.insert(k.to_string(), v);
        }
    }
    template["metadata"]["labels"] = json!(template_labels);
    let mut spec = json!({
        "clusterName": cluster_name,
        "replicas": replicas,
        "selector": {"matchLabels": selector},
        "template": template,
    });
    if let Some(order) = order {
        spec["deletion"] = json!({"order": order});
    }
    serde_json::from_value(json!({
        "apiVersion": super::CAPI_API_VERSION,
        "kind": "MachineSet",
        "metadata": {
            "name": format!("{md_name}-{hash}"),
            "namespace": md.namespace(),
            "labels": labels,
            "ownerReferences": [capi_owner("MachineDeployment", md, true)],
        },
        "spec": spec,
    }))
    .expect("MachineSet JSON is well-formed")
}
