//! Authorization as a default kube-apiserver (`--authorization-mode=Node,RBAC`) decides for the
//! users the emulator knows: members of `system:masters` may do anything (the privileged-group
//! authorizer that runs before RBAC), everyone else gets what their RoleBindings and
//! ClusterRoleBindings grant.
//!
//! Resolution follows the RBAC authorizer: every ClusterRoleBinding whose subjects include the user
//! contributes its ClusterRole's rules; for a namespaced request, every RoleBinding in that
//! namespace contributes its Role's (or ClusterRole's) rules. A subject matches by user name
//! (`User`), by one of the user's groups (`Group`), or as `system:serviceaccount:<ns>:<name>`
//! (`ServiceAccount`, whose namespace defaults to the RoleBinding's). A rule allows a request when
//! its verbs, API groups, resources (`<resource>/<subresource>` for subresources, `*` and
//! `*/<subresource>` as wildcards) and resource names all match, or for non-resource requests its
//! verbs and `nonResourceURLs` (exact, `*`, or a prefix ending in `*`). Bindings whose role does not
//! exist add nothing but are named in the refusal, as `RBAC: <errors>`.
//!
//! Refusals are the API server's 403: `<resource>.<group> "<name>" is forbidden: User "<user>"
//! cannot <verb> resource "<resource>[/<sub>]" in API group "<group>" in the namespace "<ns>"`
//! (`at the cluster scope` for cluster-scoped requests, `forbidden: User ... cannot get path
//! "<path>"` for non-resource URLs), reason `Forbidden`, details `{name, group, kind}`.
//!
//! Not modelled: RBAC's escalation checks on writes of Roles and bindings (a user may only grant
//! what it holds, unless it has `escalate` / `bind`): the emulator refuses such writes from users
//! outside `system:masters` with 501 instead of deciding them; impersonation; the Node authorizer
//! (no kubelets talk to the management cluster).

use serde_json::{Value, json};

use super::attributes::Attributes;
use super::http::ApiError;
use super::registry::ResKey;
use super::store::Store;
#[cfg(test)]
use super::store::meta_str;

/// The API group of the RBAC kinds.
pub(crate) const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The group whose members every request is allowed for.
pub(crate) const PRIVILEGED_GROUP: &str = "system:masters";

/// Who sent a request, as authentication found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UserInfo {
    /// User name, e.g. `system:serviceaccount:ns:name`.
    pub name: String,
    /// Groups, e.g. `system:serviceaccounts`, `system:authenticated`.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// Whether the user is in [`PRIVILEGED_GROUP`].
    pub fn is_privileged(&self) -> bool {
        self.groups.iter().any(|group| group == PRIVILEGED_GROUP)
    }
}

/// Where the authorizer reads roles and bindings.
pub(crate) trait PolicySource {
    /// Every ClusterRoleBinding.
    fn cluster_role_bindings(&self) -> Vec<&Value>;
    /// The RoleBindings of `namespace`.
    fn role_bindings<'a>(&'a self, namespace: &'a str) -> Vec<&'a Value>;
    /// ClusterRole `name`.
    fn cluster_role(&self, name: &str) -> Option<&Value>;
    /// Role `namespace/name`.
    fn role(&self, namespace: &str, name: &str) -> Option<&Value>;
}

fn rbac_key(plural: &str) -> ResKey {
    (RBAC_GROUP.to_owned(), plural.to_owned())
}

impl PolicySource for Store {
    fn cluster_role_bindings(&self) -> Vec<&Value> {
        self.list(&rbac_key("clusterrolebindings"), None).collect()
    }

    fn role_bindings<'a>(&'a self, namespace: &'a str) -> Vec<&'a Value> {
        self.list(&rbac_key("rolebindings"), Some(namespace)).collect()
    }

    fn cluster_role(&self, name: &str) -> Option<&Value> {
        self.get(&rbac_key("clusterroles"), "", name)
    }

    fn role(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.get(&rbac_key("roles"), namespace, name)
    }
}

/// The outcome of [`authorize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Some rule allows the request.
    Allow,
    /// No rule does; `reason` names role references that could not be resolved (may be empty).
    Deny {
        /// `RBAC: <errors>` or empty.
        reason: String,
    },
}

fn strings(value: &Value) -> impl Iterator<Item = &str> + '_ {
    value.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn verb_matches(rule: &Value, verb: &str) -> bool {
    strings(&rule["verbs"]).any(|v| v == "*" || v == verb)
}

fn api_group_matches(rule: &Value, group: &str) -> bool {
    strings(&rule["apiGroups"]).any(|g| g == "*" || g == group)
}

fn resource_matches(rule: &Value, combined: &str, subresource: &str) -> bool {
    strings(&rule["resources"]).any(|resource| {
        resource == "*"
            || resource == combined
            || (!subresource.is_empty() && resource.strip_prefix("*/").is_some_and(|sub| sub == subresource))
    })
}

fn resource_name_matches(rule: &Value, name: &str) -> bool {
    let mut names = strings(&rule["resourceNames"]).peekable();
    names.peek().is_none() || names.any(|n| n == name)
}

fn non_resource_url_matches(rule: &Value, path: &str) -> bool {
    strings(&rule["nonResourceURLs"]).any(|url| {
        url == "*"
            || url == path
            || url
                .strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
    })
}

/// Whether one PolicyRule allows the request.
pub(crate) fn rule_allows(attributes: &Attributes, rule: &Value) -> bool {
    if attributes.resource_request {
        verb_matches(rule, &attributes.verb)
            && api_group_matches(rule, &attributes.api_group)
            && resource_matches(rule, &attributes.combined_resource(), &attributes.subresource)
            && resource_name_matches(rule, &attributes.name)
    } else {
        verb_matches(rule, &attributes.verb) && non_resource_url_matches(rule, &attributes.path)
    }
}

/// Whether a binding subject is `user`; `binding_namespace` is empty for ClusterRoleBindings.
fn subject_applies(user: &UserInfo, subject: &Value, binding_namespace: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str().unwrap_or_default() {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|group| group == name),
        "ServiceAccount" => {
            let namespace = subject["namespace"]
                .as_str()
                .filter(|ns| !ns.is_empty())
                .unwrap_or(binding_namespace);
            !namespace.is_empty() && user.name == format!("system:serviceaccount:{namespace}:{name}")
        }
        _ => false,
    }
}

fn binding_applies(user: &UserInfo, binding: &Value, binding_namespace: &str) -> bool {
    binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|subject| subject_applies(user, subject, binding_namespace))
}

/// The rules a binding's `roleRef` grants, or why they could not be found (the lister's wording).
fn referenced_rules<'a>(
    source: &'a dyn PolicySource,
    role_ref: &Value,
    binding_namespace: &str,
) -> Result<Vec<&'a Value>, String> {
    let name = role_ref["name"].as_str().unwrap_or_default();
    let role = match role_ref["kind"].as_str().unwrap_or_default() {
        "Role" => source
            .role(binding_namespace, name)
            .ok_or_else(|| format!("role.{RBAC_GROUP} \"{name}\" not found"))?,
        "ClusterRole" => source
            .cluster_role(name)
            .ok_or_else(|| format!("clusterrole.{RBAC_GROUP} \"{name}\" not found"))?,
        other => return Err(format!("unsupported role reference kind: \"{other}\"")),
    };
    Ok(role["rules"].as_array().into_iter().flatten().collect())
}

/// Several resolution errors as the API server joins them: one as is, more (deduplicated) in brackets.
fn aggregate(errors: &[String]) -> String {
    let mut unique: Vec<&str> = Vec::new();
    for error in errors {
        if !unique.contains(&error.as_str()) {
            unique.push(error);
        }
    }
    match unique.as_slice() {
        [one] => (*one).to_owned(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// Decides a request of `user`.
pub(crate) fn authorize(source: &dyn PolicySource, user: &UserInfo, attributes: &Attributes) -> Decision {
    if user.is_privileged() {
        return Decision::Allow;
    }
    let mut errors = Vec::new();
    let mut bindings: Vec<(&Value, &str)> = source
        .cluster_role_bindings()
        .into_iter()
        .map(|binding| (binding, ""))
        .collect();
    if !attributes.namespace.is_empty() {
        let namespace = attributes.namespace.as_str();
        bindings.extend(
            source
                .role_bindings(namespace)
                .into_iter()
                .map(|binding| (binding, namespace)),
        );
    }
    for (binding, namespace) in bindings {
        if !binding_applies(user, binding, namespace) {
            continue;
        }
        match referenced_rules(source, &binding["roleRef"], namespace) {
            Ok(rules) => {
                if rules.into_iter().any(|rule| rule_allows(attributes, rule)) {
                    return Decision::Allow;
                }
            }
            Err(error) => errors.push(error),
        }
    }
    let reason = if errors.is_empty() {
        String::new()
    } else {
        format!("RBAC: {}", aggregate(&errors))
    };
    Decision::Deny { reason }
}

/// The 403 the API server answers when `user` may not do what `attributes` ask.
pub(crate) fn forbidden(user: &UserInfo, attributes: &Attributes, reason: &str) -> ApiError {
    let what = if !attributes.resource_request {
        format!(
            "User \"{}\" cannot {} path \"{}\"",
            user.name, attributes.verb, attributes.path
        )
    } else {
        let scope = if attributes.namespace.is_empty() {
            "at the cluster scope".to_owned()
        } else {
            format!("in the namespace \"{}\"", attributes.namespace)
        };
        format!(
            "User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            user.name,
            attributes.verb,
            attributes.combined_resource(),
            attributes.api_group
        )
    };
    let what = if reason.is_empty() {
        what
    } else {
        format!("{what}: {reason}")
    };
    let qualified = match (attributes.resource.as_str(), attributes.api_group.as_str()) {
        ("", _) => String::new(),
        (resource, "") => resource.to_owned(),
        (resource, group) => format!("{resource}.{group}"),
    };
    let message = match (qualified.is_empty(), attributes.name.is_empty()) {
        (true, _) => format!("forbidden: {what}"),
        (false, true) => format!("{qualified} is forbidden: {what}"),
        (false, false) => format!("{qualified} \"{}\" is forbidden: {what}", attributes.name),
    };
    let mut details = serde_json::Map::new();
    for (key, value) in [
        ("name", &attributes.name),
        ("group", &attributes.api_group),
        ("kind", &attributes.resource),
    ] {
        if !value.is_empty() {
            details.insert(key.to_owned(), json!(value));
        }
    }
    ApiError::new(403, "Forbidden", message).with_details(Value::Object(details))
}

/// Refuses writes of Roles, ClusterRoles and their bindings by users outside `system:masters`:
/// the API server would check that they grant no more than the writer holds, which the emulator
/// does not model.
pub(crate) fn refuse_unmodelled_escalation_check(
    user: &UserInfo,
    attributes: &Attributes,
) -> Result<(), ApiError> {
    let rbac_write = attributes.resource_request
        && attributes.api_group == RBAC_GROUP
        && matches!(
            attributes.resource.as_str(),
            "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings"
        )
        && matches!(attributes.verb.as_str(), "create" | "update" | "patch");
    if rbac_write && !user.is_privileged() {
        return Err(ApiError::not_implemented(format!(
            "the emulator does not model RBAC escalation checks: only members of {PRIVILEGED_GROUP} may \
             {} {} (user \"{}\")",
            attributes.verb, attributes.resource, user.name
        )));
    }
    Ok(())
}

/// Roles and bindings held in lists, for unit tests.
#[cfg(test)]
pub(crate) struct StaticPolicy {
    pub cluster_roles: Vec<Value>,
    pub cluster_role_bindings: Vec<Value>,
    pub roles: Vec<Value>,
    pub role_bindings: Vec<Value>,
}

#[cfg(test)]
impl PolicySource for StaticPolicy {
    fn cluster_role_bindings(&self) -> Vec<&Value> {
        self.cluster_role_bindings.iter().collect()
    }

    fn role_bindings<'a>(&'a self, namespace: &'a str) -> Vec<&'a Value> {
        self.role_bindings
            .iter()
            .filter(|binding| meta_str(binding, "namespace") == namespace)
            .collect()
    }

    fn cluster_role(&self, name: &str) -> Option<&Value> {
        self.cluster_roles
            .iter()
            .find(|role| meta_str(role, "name") == name)
    }

    fn role(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.roles
            .iter()
            .find(|role| meta_str(role, "namespace") == namespace && meta_str(role, "name") == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            path: String::new(),
            api_group: group.into(),
            api_version: "v1".into(),
            namespace: ns.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
        }
    }

    fn non_resource(verb: &str, path: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            path: path.into(),
            ..Attributes::default()
        }
    }

    fn service_account(namespace: &str, name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let rule = json!({"apiGroups": ["infrastructure.cluster.x-k8s.io"],
            "resources": ["kubezeroclusters", "kubezeromachines/status"], "verbs": ["get", "list", "watch"]});
        let infra = "infrastructure.cluster.x-k8s.io";
        assert!(rule_allows(
            &resource("get", infra, "kubezeroclusters", "", "ns", "w1"),
            &rule
        ));
        assert!(rule_allows(
            &resource("watch", infra, "kubezeroclusters", "", "ns", ""),
            &rule
        ));
        assert!(!rule_allows(
            &resource("update", infra, "kubezeroclusters", "", "ns", "w1"),
            &rule
        ));
        assert!(!rule_allows(
            &resource("get", "cluster.x-k8s.io", "kubezeroclusters", "", "ns", "w1"),
            &rule
        ));
        // A resource does not grant its subresources, nor a subresource its resource.
        assert!(!rule_allows(
            &resource("get", infra, "kubezeroclusters", "status", "ns", "w1"),
            &rule
        ));
        assert!(rule_allows(
            &resource("get", infra, "kubezeromachines", "status", "ns", "m1"),
            &rule
        ));
        assert!(!rule_allows(
            &resource("get", infra, "kubezeromachines", "", "ns", "m1"),
            &rule
        ));

        let wildcards = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]});
        assert!(rule_allows(
            &resource("deletecollection", "apps", "deployments", "", "ns", ""),
            &wildcards
        ));
        assert!(rule_allows(
            &resource("patch", "", "pods", "status", "ns", "p"),
            &wildcards
        ));
        let any_status = json!({"apiGroups": [""], "resources": ["*/status"], "verbs": ["update"]});
        assert!(rule_allows(
            &resource("update", "", "pods", "status", "ns", "p"),
            &any_status
        ));
        assert!(!rule_allows(
            &resource("update", "", "pods", "", "ns", "p"),
            &any_status
        ));
        assert!(!rule_allows(
            &resource("update", "", "pods", "statuses", "ns", "p"),
            &any_status
        ));

        let named = json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "update"],
            "resourceNames": ["lock"]});
        assert!(rule_allows(
            &resource("get", "", "configmaps", "", "ns", "lock"),
            &named
        ));
        assert!(!rule_allows(
            &resource("get", "", "configmaps", "", "ns", "other"),
            &named
        ));
        // A list names no object, so a rule with resourceNames cannot allow it.
        assert!(!rule_allows(
            &resource("list", "", "configmaps", "", "ns", ""),
            &named
        ));
        // Resource rules never allow non-resource URLs and the other way round.
        assert!(!rule_allows(&non_resource("get", "/version"), &wildcards));
    }

    #[test]
    fn non_resource_urls_match_exactly_by_prefix_or_all() {
        let discovery = json!({"nonResourceURLs": ["/api", "/api/*", "/version"], "verbs": ["get"]});
        assert!(rule_allows(&non_resource("get", "/api"), &discovery));
        assert!(rule_allows(&non_resource("get", "/api/v1"), &discovery));
        assert!(rule_allows(&non_resource("get", "/version"), &discovery));
        assert!(!rule_allows(&non_resource("get", "/version/"), &discovery));
        assert!(!rule_allows(&non_resource("get", "/apis"), &discovery));
        assert!(!rule_allows(&non_resource("post", "/api"), &discovery));
        let all = json!({"nonResourceURLs": ["*"], "verbs": ["*"]});
        assert!(rule_allows(&non_resource("delete", "/metrics"), &all));
    }

    fn policy() -> StaticPolicy {
        StaticPolicy {
            cluster_roles: vec![
                json!({"metadata": {"name": "reader"}, "rules": [
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]}),
                json!({"metadata": {"name": "discovery"}, "rules": [
                    {"nonResourceURLs": ["/version"], "verbs": ["get"]}]}),
            ],
            cluster_role_bindings: vec![
                json!({"metadata": {"name": "reader-sa"}, "roleRef": {"kind": "ClusterRole", "name": "reader"},
                    "subjects": [{"kind": "ServiceAccount", "name": "manager", "namespace": "system"}]}),
                json!({"metadata": {"name": "discovery"}, "roleRef": {"kind": "ClusterRole", "name": "discovery"},
                    "subjects": [{"kind": "Group", "name": "system:authenticated"}]}),
                json!({"metadata": {"name": "dangling"}, "roleRef": {"kind": "ClusterRole", "name": "gone"},
                    "subjects": [{"kind": "User", "name": "system:serviceaccount:system:manager"}]}),
            ],
            roles: vec![
                json!({"metadata": {"name": "leases", "namespace": "system"}, "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}]}),
            ],
            role_bindings: vec![
                // No namespace on the subject: the binding's namespace.
                json!({"metadata": {"name": "leases", "namespace": "system"}, "roleRef": {"kind": "Role", "name": "leases"},
                    "subjects": [{"kind": "ServiceAccount", "name": "manager"}]}),
                json!({"metadata": {"name": "reader-here", "namespace": "other"},
                    "roleRef": {"kind": "ClusterRole", "name": "reader"},
                    "subjects": [{"kind": "Group", "name": "system:serviceaccounts:elsewhere"}]}),
            ],
        }
    }

    #[test]
    fn bindings_grant_their_roles_to_users_groups_and_service_accounts() {
        let policy = policy();
        let manager = service_account("system", "manager");
        let stranger = service_account("elsewhere", "manager");
        let lease = |verb: &str, ns: &str| resource(verb, "coordination.k8s.io", "leases", "", ns, "x");
        let secret = |ns: &str| resource("get", "", "secrets", "", ns, "s");
        assert_eq!(authorize(&policy, &manager, &secret("anywhere")), Decision::Allow);
        assert_eq!(
            authorize(&policy, &manager, &lease("update", "system")),
            Decision::Allow
        );
        // A RoleBinding grants only in its namespace.
        assert!(matches!(
            authorize(&policy, &manager, &lease("update", "other")),
            Decision::Deny { .. }
        ));
        assert!(matches!(
            authorize(&policy, &manager, &lease("delete", "system")),
            Decision::Deny { .. }
        ));
        // Same name, other namespace: another ServiceAccount.
        assert!(matches!(
            authorize(&policy, &stranger, &secret("system")),
            Decision::Deny { .. }
        ));
        // Group subjects: the ServiceAccount's namespace group, only where the RoleBinding is.
        assert_eq!(authorize(&policy, &stranger, &secret("other")), Decision::Allow);
        assert_eq!(
            authorize(&policy, &stranger, &non_resource("get", "/version")),
            Decision::Allow
        );
        let masters = UserInfo {
            name: "admin".into(),
            groups: vec![PRIVILEGED_GROUP.into()],
        };
        assert_eq!(
            authorize(&policy, &masters, &lease("delete", "anywhere")),
            Decision::Allow
        );
    }

    #[test]
    fn a_binding_to_a_missing_role_is_named_in_the_refusal() {
        let policy = policy();
        let manager = service_account("system", "manager");
        let denied = authorize(
            &policy,
            &manager,
            &resource("create", "", "secrets", "", "system", ""),
        );
        assert_eq!(
            denied,
            Decision::Deny {
                reason: format!("RBAC: clusterrole.{RBAC_GROUP} \"gone\" not found")
            }
        );
        let stranger = service_account("elsewhere", "manager");
        let denied = authorize(
            &policy,
            &stranger,
            &resource("create", "", "secrets", "", "system", ""),
        );
        assert_eq!(
            denied,
            Decision::Deny {
                reason: String::new()
            }
        );
        assert_eq!(
            aggregate(&["a".into(), "b".into(), "a".into()]),
            "[a, b]",
            "several errors in brackets, once each"
        );
    }

    #[test]
    fn refusals_use_the_api_servers_wording() {
        let user = service_account("kubezero-bootstrap-system", "kubezero-bootstrap");
        let namespaced = forbidden(
            &user,
            &resource(
                "get",
                "infrastructure.cluster.x-k8s.io",
                "kubezeroclusters",
                "",
                "ns",
                "w1",
            ),
            "",
        );
        assert_eq!(namespaced.code, 403);
        assert_eq!(namespaced.reason, "Forbidden");
        assert_eq!(
            namespaced.message,
            "kubezeroclusters.infrastructure.cluster.x-k8s.io \"w1\" is forbidden: User \
             \"system:serviceaccount:kubezero-bootstrap-system:kubezero-bootstrap\" cannot get resource \
             \"kubezeroclusters\" in API group \"infrastructure.cluster.x-k8s.io\" in the namespace \"ns\""
        );
        assert_eq!(
            namespaced.details,
            Some(
                json!({"name": "w1", "group": "infrastructure.cluster.x-k8s.io", "kind": "kubezeroclusters"})
            )
        );
        let collection = forbidden(&user, &resource("list", "", "secrets", "", "", ""), "RBAC: x");
        assert_eq!(
            collection.message,
            "secrets is forbidden: User \"system:serviceaccount:kubezero-bootstrap-system:kubezero-bootstrap\" \
             cannot list resource \"secrets\" in API group \"\" at the cluster scope: RBAC: x"
        );
        assert_eq!(collection.details, Some(json!({"kind": "secrets"})));
        let status = forbidden(
            &user,
            &resource(
                "patch",
                "bootstrap.cluster.x-k8s.io",
                "kubezeroconfigs",
                "status",
                "ns",
                "c",
            ),
            "",
        );
        assert!(
            status
                .message
                .starts_with("kubezeroconfigs.bootstrap.cluster.x-k8s.io \"c\" is forbidden")
                && status
                    .message
                    .contains("cannot patch resource \"kubezeroconfigs/status\""),
            "{}",
            status.message
        );
        let path = forbidden(&user, &non_resource("get", "/metrics"), "");
        assert_eq!(
            path.message,
            "forbidden: User \"system:serviceaccount:kubezero-bootstrap-system:kubezero-bootstrap\" cannot get \
             path \"/metrics\""
        );
        assert_eq!(path.details, Some(json!({})));
    }

    #[test]
    fn rbac_writes_by_users_outside_the_privileged_group_are_refused_clearly() {
        let user = service_account("ns", "manager");
        let write = resource("create", RBAC_GROUP, "clusterrolebindings", "", "", "");
        let refused = refuse_unmodelled_escalation_check(&user, &write).expect_err("refused");
        assert_eq!(refused.code, 501);
        let read = resource("list", RBAC_GROUP, "clusterrolebindings", "", "", "");
        assert!(refuse_unmodelled_escalation_check(&user, &read).is_ok());
        let masters = UserInfo {
            name: "admin".into(),
            groups: vec![PRIVILEGED_GROUP.into()],
        };
        assert!(refuse_unmodelled_escalation_check(&masters, &write).is_ok());
    }
}
