//! Cloning InfraMachineTemplates and BootstrapConfigTemplates for a new Machine, as the MachineSet
//! controller does ([CAPI] `controllers/external/util.go GenerateTemplate`, capi-contract.md §4.1).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{DynamicObject, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

use super::util::{ContractRef, at, dynamic_api};
use super::{CLONED_FROM_GROUPKIND_ANNOTATION, CLONED_FROM_NAME_ANNOTATION, CLUSTER_NAME_LABEL, Ctx, Error};

/// String map at `path` of `value` (labels/annotations of a template's `spec.template.metadata`).
pub(crate) fn string_map(value: &Value, path: &str) -> BTreeMap<String, String> {
    at(value, path)
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Creates the clone of the template `template_ref` for Machine `machine_name` (§4.1):
/// - `spec` = the template's `spec.template.spec`, wholesale;
/// - apiVersion = the template's apiVersion, kind = the template's kind minus `Template`;
/// - name = the Machine's name, in `namespace`;
/// - labels = the template's `spec.template.metadata.labels` + `labels` (the Machine's labels:
///   `cluster-name`, `set-name`, `deployment-name`, …); annotations = the template's
///   `spec.template.metadata.annotations` + `cloned-from-name` / `cloned-from-groupkind`;
/// - ownerReferences = `[owner]` (the MachineSet, not controller; the Machine controller later swaps it
///   for the Machine, §3).
///
/// Returns the reference the Machine gets (`{apiGroup, kind, name}`).
pub(crate) async fn clone_template(
    ctx: &Ctx,
    namespace: &str,
    template_ref: &ContractRef,
    machine_name: &str,
    labels: &BTreeMap<String, String>,
    owner: &OwnerReference,
) -> Result<ContractRef, Error> {
    let template_ar = ctx.resolve(&template_ref.api_group, &template_ref.kind).await?;
    let template = dynamic_api(&ctx.client, namespace, &template_ar)
        .get_opt(&template_ref.name)
        .await?
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{} {namespace}/{} not found",
                template_ref.kind, template_ref.name
            ))
        })?;
    let kind = template_ref
        .kind
        .strip_suffix("Template")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "template kind {} does not end in Template",
                template_ref.kind
            ))
        })?;
    let clone_ar = ApiResource {
        group: template_ar.group.clone(),
        version: template_ar.version.clone(),
        api_version: template_ar.api_version.clone(),
        kind: kind.to_string(),
        plural: super::refs::plural(kind),
    };

    let mut clone_labels = string_map(&template.data, "spec.template.metadata.labels");
    clone_labels.extend(labels.clone());
    if let Some(cluster) = labels.get(CLUSTER_NAME_LABEL) {
        clone_labels.insert(CLUSTER_NAME_LABEL.to_string(), cluster.clone());
    }
    let mut annotations = string_map(&template.data, "spec.template.metadata.annotations");
    annotations.insert(CLONED_FROM_NAME_ANNOTATION.to_string(), template.name_any());
    annotations.insert(
        CLONED_FROM_GROUPKIND_ANNOTATION.to_string(),
        format!("{}.{}", template_ref.kind, template_ar.group),
    );
    let spec = at(&template.data, "spec.template.spec")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let clone: DynamicObject = serde_json::from_value(json!({
        "apiVersion": clone_ar.api_version,
        "kind": kind,
        "metadata": {
            "name": machine_name,
            "namespace": namespace,
            "labels": clone_labels,
            "annotations": annotations,
            "ownerReferences": [owner],
        },
        "spec": spec,
    }))
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let params = PostParams {
        field_manager: Some(super::FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    dynamic_api(&ctx.client, namespace, &clone_ar)
        .create(&params, &clone)
        .await?;
    Ok(ContractRef {
        api_group: template_ref.api_group.clone(),
        kind: kind.to_string(),
        name: machine_name.to_string(),
    })
}

/// Deletes a clone made by [`clone_template`] (cleanup after a failed Machine creation, §4.1).
pub(crate) async fn delete_clone(ctx: &Ctx, namespace: &str, clone: &ContractRef) {
    let Ok(ar) = ctx.resolve(&clone.api_group, &clone.kind).await else {
        return;
    };
    let result = super::util::delete_and_check(&dynamic_api(&ctx.client, namespace, &ar), &clone.name).await;
    if let Err(error) = result {
        tracing::warn!(%error, name = %clone.name, "capi stand-in: could not delete clone");
    }
}
