//! Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`.

use serde_json::{Value, json};

use super::registry::Registry;

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/version`.
pub(crate) fn version() -> Value {
    json!({
        "major": "1", "minor": "34", "gitVersion": "v1.34.1", "gitCommit": "kubezero-emulator",
        "gitTreeState": "clean", "buildDate": "2025-09-09T00:00:00Z", "goVersion": "go1.24.6",
        "compiler": "gc", "platform": "linux/amd64"
    })
}

/// `/api`.
pub(crate) fn core_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
}

/// `/apis`.
pub(crate) fn groups(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry.groups().iter().map(|(g, v)| group_entry(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`.
pub(crate) fn group(registry: &Registry, group: &str) -> Option<Value> {
    let groups = registry.groups();
    let (name, versions) = groups.iter().find(|(g, _)| g == group)?;
    let mut entry = group_entry(name, versions);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    Some(entry)
}

/// `/api/v1` or `/apis/<group>/<version>`.
pub(crate) fn resources(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for t in registry
        .all()
        .iter()
        .filter(|t| t.group == group && t.version == version)
    {
        let mut entry = json!({
            "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced, "kind": t.kind,
            "verbs": VERBS,
        });
        if !t.short_names.is_empty() {
            entry["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            entry["categories"] = json!(t.categories);
        }
        resources.push(entry);
        if t.status {
            resources.push(json!({
                "name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                "kind": t.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if t.group.is_empty() && t.plural == "serviceaccounts" {
            // The TokenRequest subresource (see `tokens`).
            resources.push(json!({
                "name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
    )
}

/// `/openapi/v3`: the index of group-version documents, as `kubectl` reads it.
pub(crate) fn openapi_index(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    let mut group_versions: Vec<(String, String)> = registry
        .all()
        .iter()
        .map(|t| (t.group.clone(), t.version.clone()))
        .collect();
    group_versions.sort();
    group_versions.dedup();
    for (group, version) in group_versions {
        let key = openapi_key(&group, &version);
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}")}),
        );
    }
    json!({"paths": paths})
}

/// `api/v1` or `apis/<group>/<version>`: the key of a group-version in the OpenAPI v3 index.
fn openapi_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3/<key>`: one group-version's document.
///
/// It lists each resource's write operations with their group-version-kind and the `fieldValidation`
/// and `fieldManager` query parameters, which is what `kubectl` consults to use server-side field
/// validation. Schemas are not published: clients that need them for client-side validation get none.
pub(crate) fn openapi_document(registry: &Registry, key: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let parameters = json!([
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
        {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
    ]);
    for t in registry
        .all()
        .iter()
        .filter(|t| openapi_key(&t.group, &t.version) == key)
    {
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let operation = |action: &str| {
            json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk,
                   "parameters": parameters, "responses": {"200": {"description": "OK"}}})
        };
        let scope = if t.namespaced {
            "namespaces/{namespace}/"
        } else {
            ""
        };
        let collection = format!("/{key}/{scope}{}", t.plural);
        paths.insert(collection.clone(), json!({"post": operation("post")}));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"put": operation("put"), "patch": operation("patch")}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.34.1"}, "paths": paths}))
}
