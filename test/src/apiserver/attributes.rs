//! What a request asks to do, in the terms authorization decides on: the verb, and for resource
//! requests the API group, resource, subresource, namespace and name (kube-apiserver's
//! "request info").
//!
//! The rules, as the API server derives them from the URL before it routes the request:
//! - `/api/<version>/...` (core group) and `/apis/<group>/<version>/...` are resource requests;
//!   every other path (`/version`, `/healthz`, `/api`, `/apis`, `/apis/<group>`, `/openapi/...`) is
//!   a non-resource request whose verb is the lower-case HTTP method (`get`, `post`, ...).
//! - The verb comes from the method: POST `create`, GET/HEAD `get`, PUT `update`, PATCH `patch`,
//!   DELETE `delete`; a GET without a name is `list`, or `watch` when `watch` is set to anything
//!   but `false`/`0`; a DELETE without a name is `deletecollection`. The legacy `/watch/` path
//!   prefix also gives `watch`.
//! - `namespaces/<ns>/<resource>/...` sets the namespace; `namespaces/<ns>` itself (and its
//!   `status` / `finalize` subresources) is the namespace object, with the namespace attribute set
//!   to its own name.
//! - A list or watch whose field selector requires `metadata.name=<name>` carries that name, so
//!   rules limited by `resourceNames` allow watching a single object.
//!
//! Writing `metadata.finalizers` is an `update` (or `patch`) of the resource itself: the
//! `<resource>/finalizers` permission is only consulted by the OwnerReferencesPermissionEnforcement
//! admission plugin (not enabled by default) for `blockOwnerDeletion`, and the emulator, like a
//! default kube-apiserver, does not check it.

use std::collections::HashMap;

use http::Method;

/// The attributes one request is authorized on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`; for a
    /// non-resource request the lower-case HTTP method.
    pub verb: String,
    /// Whether the request addresses an API resource (else a non-resource URL).
    pub resource_request: bool,
    /// The URL path, as sent (for non-resource rules).
    pub path: String,
    /// API group (`""` for the core group).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Namespace (empty for cluster-scoped requests).
    pub namespace: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource, e.g. `status` or `token`.
    pub subresource: String,
    /// Object name (empty for collections).
    pub name: String,
}

impl Attributes {
    /// `<resource>` or `<resource>/<subresource>`, as RBAC rules name it.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// Whether a `watch` query value turns a GET into a watch (anything but `false` and `0`).
fn watch_requested(params: &HashMap<String, String>) -> bool {
    params
        .get("watch")
        .is_some_and(|value| !matches!(value.to_ascii_lowercase().as_str(), "false" | "0"))
}

/// The name a field selector pins with `metadata.name=<name>` (or `==`), if any.
fn field_selector_name(params: &HashMap<String, String>) -> Option<String> {
    let selector = params.get("fieldSelector")?;
    selector.split(',').find_map(|part| {
        let (key, value) = part.split_once("==").or_else(|| part.split_once('='))?;
        let value = value.trim();
        let valid = !value.is_empty() && !value.contains(['/', '%']) && value != "." && value != "..";
        (key.trim() == "metadata.name" && valid).then(|| value.to_owned())
    })
}

/// The attributes of a request with `method` on `path` and query `params`.
pub(crate) fn of_request(method: &Method, path: &str, params: &HashMap<String, String>) -> Attributes {
    let mut attributes = Attributes {
        verb: method.as_str().to_ascii_lowercase(),
        path: path.to_owned(),
        ..Attributes::default()
    };
    let parts: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
    let rest: &[&str] = match parts.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => {
            attributes.api_version = (*version).to_owned();
            rest
        }
        ["apis", group, version, rest @ ..] if !rest.is_empty() => {
            attributes.api_group = (*group).to_owned();
            attributes.api_version = (*version).to_owned();
            rest
        }
        _ => return attributes,
    };
    attributes.resource_request = true;
    let mut rest = rest;
    if rest[0] == "watch" && rest.len() >= 2 {
        attributes.verb = "watch".into();
        rest = &rest[1..];
    } else {
        attributes.verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .into();
    }
    if rest[0] == "namespaces" && rest.len() > 1 {
        attributes.namespace = rest[1].to_owned();
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    attributes.resource = rest[0].to_owned();
    if let Some(name) = rest.get(1) {
        attributes.name = (*name).to_owned();
    }
    if let Some(subresource) = rest.get(2) {
        attributes.subresource = (*subresource).to_owned();
    }
    if attributes.name.is_empty() && attributes.verb == "get" {
        attributes.verb = if watch_requested(params) { "watch" } else { "list" }.into();
        if let Some(name) = field_selector_name(params) {
            attributes.name = name;
        }
    }
    if attributes.name.is_empty() && attributes.verb == "delete" {
        attributes.verb = "deletecollection".into();
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(method: Method, path: &str, query: &[(&str, &str)]) -> Attributes {
        let params = query
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        of_request(&method, path, &params)
    }

    #[test]
    fn verbs_follow_the_method_and_whether_a_name_is_given() {
        let path = "/apis/bootstrap.cluster.x-k8s.io/v1alpha1/namespaces/ns/kubezeroconfigs";
        let named = format!("{path}/w1");
        for (method, path, query, verb) in [
            (Method::GET, path, vec![], "list"),
            (Method::GET, path, vec![("watch", "true")], "watch"),
            (Method::GET, path, vec![("watch", "1")], "watch"),
            (Method::GET, path, vec![("watch", "false")], "list"),
            (Method::GET, &named, vec![], "get"),
            (Method::POST, path, vec![], "create"),
            (Method::PUT, &named, vec![], "update"),
            (Method::PATCH, &named, vec![], "patch"),
            (Method::DELETE, &named, vec![], "delete"),
            (Method::DELETE, path, vec![], "deletecollection"),
        ] {
            let got = attributes(method.clone(), path, &query);
            assert_eq!(got.verb, verb, "{method} {path} {query:?}");
            assert!(got.resource_request);
            assert_eq!(got.api_group, "bootstrap.cluster.x-k8s.io");
            assert_eq!(got.namespace, "ns");
            assert_eq!(got.resource, "kubezeroconfigs");
        }
    }

    #[test]
    fn subresources_names_and_namespaces_are_split_as_the_api_server_does() {
        let status = attributes(
            Method::PATCH,
            "/apis/bootstrap.cluster.x-k8s.io/v1alpha1/namespaces/ns/kubezeroconfigs/w1/status",
            &[],
        );
        assert_eq!(
            (status.name.as_str(), status.subresource.as_str()),
            ("w1", "status")
        );
        assert_eq!(status.combined_resource(), "kubezeroconfigs/status");
        let token = attributes(
            Method::POST,
            "/api/v1/namespaces/ns/serviceaccounts/manager/token",
            &[],
        );
        assert_eq!(token.verb, "create");
        assert_eq!(token.api_group, "");
        assert_eq!(token.combined_resource(), "serviceaccounts/token");
        // The namespace object: its own name is also the namespace attribute.
        let namespace = attributes(Method::GET, "/api/v1/namespaces/ns", &[]);
        assert_eq!(
            (
                namespace.resource.as_str(),
                namespace.name.as_str(),
                namespace.namespace.as_str()
            ),
            ("namespaces", "ns", "ns")
        );
        let finalize = attributes(Method::PUT, "/api/v1/namespaces/ns/finalize", &[]);
        assert_eq!(finalize.resource, "namespaces");
        assert_eq!(finalize.subresource, "finalize");
        let cluster_scoped = attributes(
            Method::GET,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x",
            &[],
        );
        assert_eq!(cluster_scoped.namespace, "");
        assert_eq!(cluster_scoped.name, "x");
        let legacy_watch = attributes(Method::GET, "/api/v1/watch/namespaces/ns/secrets", &[]);
        assert_eq!(legacy_watch.verb, "watch");
        assert_eq!(legacy_watch.resource, "secrets");
    }

    #[test]
    fn a_field_selector_on_the_name_names_the_list_or_watch() {
        let watch = attributes(
            Method::GET,
            "/api/v1/namespaces/ns/secrets",
            &[("watch", "true"), ("fieldSelector", "metadata.name=w1-ca")],
        );
        assert_eq!((watch.verb.as_str(), watch.name.as_str()), ("watch", "w1-ca"));
        let other = attributes(
            Method::GET,
            "/api/v1/namespaces/ns/secrets",
            &[("fieldSelector", "metadata.namespace=ns")],
        );
        assert_eq!((other.verb.as_str(), other.name.as_str()), ("list", ""));
        let negated = attributes(
            Method::GET,
            "/api/v1/namespaces/ns/secrets",
            &[("fieldSelector", "metadata.name!=x")],
        );
        assert_eq!(negated.name, "");
    }

    #[test]
    fn discovery_and_health_are_non_resource_requests() {
        for path in [
            "/version",
            "/healthz",
            "/api",
            "/api/v1",
            "/apis",
            "/apis/cluster.x-k8s.io",
            "/apis/cluster.x-k8s.io/v1beta2",
            "/openapi/v3",
        ] {
            let got = attributes(Method::GET, path, &[]);
            assert!(!got.resource_request, "{path}");
            assert_eq!(got.verb, "get", "{path}");
            assert_eq!(got.path, path);
        }
    }
}
