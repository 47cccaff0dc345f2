//! The RBAC objects a new kube-apiserver creates for itself (its "bootstrap policy"), as far as
//! they matter here: `cluster-admin` for `system:masters`, discovery and health for every
//! authenticated user (`system:discovery`, `system:basic-user`, `system:public-info-viewer`, the
//! last also for `system:unauthenticated`). They carry the labels and annotations the API server
//! puts on them and can be read, changed and deleted like any other ClusterRole.
//!
//! Not created: the aggregated user-facing roles (`admin`, `edit`, `view`) and the roles of the
//! control-plane components (controller manager, scheduler, kubelets), which nothing here uses.

use serde_json::{Value, json};

use super::rbac::{PRIVILEGED_GROUP, RBAC_GROUP};

fn metadata(name: &str) -> Value {
    json!({
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    })
}

fn cluster_role(name: &str, rules: Value) -> Value {
    json!({"apiVersion": format!("{RBAC_GROUP}/v1"), "kind": "ClusterRole", "metadata": metadata(name), "rules": rules})
}

fn binding_to_groups(name: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|group| json!({"apiGroup": RBAC_GROUP, "kind": "Group", "name": group}))
        .collect();
    json!({
        "apiVersion": format!("{RBAC_GROUP}/v1"), "kind": "ClusterRoleBinding", "metadata": metadata(name),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
        "subjects": subjects,
    })
}

/// The default ClusterRoles.
pub(crate) fn cluster_roles() -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            json!([
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ]),
        ),
        cluster_role(
            "system:discovery",
            json!([{"nonResourceURLs": [
                "/livez", "/readyz", "/healthz", "/version", "/version/",
                "/openapi", "/openapi/*", "/api", "/api/*", "/apis", "/apis/*",
            ], "verbs": ["get"]}]),
        ),
        cluster_role(
            "system:basic-user",
            json!([
                {"apiGroups": ["authorization.k8s.io"],
                 "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
            ]),
        ),
        cluster_role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/livez", "/readyz", "/healthz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
    ]
}

/// The default ClusterRoleBindings (each binds the ClusterRole of its name).
pub(crate) fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding_to_groups("cluster-admin", &[PRIVILEGED_GROUP]),
        binding_to_groups("system:discovery", &["system:authenticated"]),
        binding_to_groups("system:basic-user", &["system:authenticated"]),
        binding_to_groups(
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
    ]
}
