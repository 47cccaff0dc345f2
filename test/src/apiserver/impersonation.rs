//! User impersonation (`Impersonate-User` and `Impersonate-Group` headers, what `kubectl --as` and
//! `--as-group` send): a request acts as another user when its sender may `impersonate` that user
//! (resource `users`, or `serviceaccounts` in the account's namespace for
//! `system:serviceaccount:<ns>:<name>`) and each requested group (resource `groups`), as the API
//! server's impersonation filter checks before authorization.
//!
//! The impersonated user has the requested groups, or, for a ServiceAccount without any, the
//! ServiceAccount groups; `system:authenticated` is always added. `kubectl` never sends bearer
//! tokens over plain HTTP, so impersonation is how a `kubectl` session against the emulator acts
//! as a ServiceAccount. `Impersonate-Uid` and `Impersonate-Extra-*` are refused (501).

use http::HeaderMap;

use super::attributes::Attributes;
use super::http::ApiError;
use super::rbac::{self, Decision, PolicySource, UserInfo};

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect()
}

/// The attributes of impersonating `resource` `name` (in `namespace` for ServiceAccounts).
fn impersonate(resource: &str, namespace: &str, name: &str) -> Attributes {
    Attributes {
        verb: "impersonate".into(),
        resource_request: true,
        api_version: "v1".into(),
        namespace: namespace.into(),
        resource: resource.into(),
        name: name.into(),
        ..Attributes::default()
    }
}

/// The user the request acts as: `requester`, or whom it impersonates if it may.
pub(crate) fn acting_user(
    policy: &dyn PolicySource,
    requester: UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let users = header_values(headers, "impersonate-user");
    let groups = header_values(headers, "impersonate-group");
    let unmodelled = headers.contains_key("impersonate-uid")
        || headers
            .keys()
            .any(|name| name.as_str().starts_with("impersonate-extra-"));
    if users.is_empty() {
        if !groups.is_empty() || unmodelled {
            return Err(ApiError::bad_request(
                "requested impersonation of groups or extras without impersonating a user",
            ));
        }
        return Ok(requester);
    }
    if unmodelled {
        return Err(ApiError::not_implemented(
            "the emulator does not impersonate uids or extras (Impersonate-Uid, Impersonate-Extra-*)",
        ));
    }
    let [name] = users.as_slice() else {
        return Err(ApiError::bad_request(
            "only one Impersonate-User header may be given",
        ));
    };
    let mut checks = Vec::new();
    let service_account = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    match service_account {
        Some((namespace, account)) => checks.push(impersonate("serviceaccounts", namespace, account)),
        None => checks.push(impersonate("users", "", name)),
    }
    checks.extend(groups.iter().map(|group| impersonate("groups", "", group)));
    for check in &checks {
        if let Decision::Deny { reason } = rbac::authorize(policy, &requester, check) {
            return Err(rbac::forbidden(&requester, check, &reason));
        }
    }
    let mut impersonated_groups: Vec<String> = groups.iter().map(|group| (*group).to_owned()).collect();
    if impersonated_groups.is_empty()
        && let Some((namespace, _)) = service_account
    {
        impersonated_groups = vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
        ];
    }
    if *name != "system:anonymous" && !impersonated_groups.iter().any(|g| g == "system:authenticated") {
        impersonated_groups.push("system:authenticated".to_owned());
    }
    Ok(UserInfo {
        name: (*name).to_owned(),
        groups: impersonated_groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::rbac::{PRIVILEGED_GROUP, StaticPolicy};
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn admin() -> UserInfo {
        UserInfo {
            name: "system:unsecured".into(),
            groups: vec![PRIVILEGED_GROUP.into()],
        }
    }

    fn empty() -> StaticPolicy {
        StaticPolicy {
            cluster_roles: vec![],
            cluster_role_bindings: vec![],
            roles: vec![],
            role_bindings: vec![],
        }
    }

    #[test]
    fn a_service_account_is_impersonated_with_its_groups() {
        let user = acting_user(
            &empty(),
            admin(),
            &headers(&[("Impersonate-User", "system:serviceaccount:team:viewer")]),
        )
        .unwrap();
        assert_eq!(user.name, "system:serviceaccount:team:viewer");
        assert_eq!(
            user.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:team",
                "system:authenticated"
            ]
        );
        let with_groups = acting_user(
            &empty(),
            admin(),
            &headers(&[("Impersonate-User", "jane"), ("Impersonate-Group", "devs")]),
        )
        .unwrap();
        assert_eq!(with_groups.groups, vec!["devs", "system:authenticated"]);
        assert_eq!(acting_user(&empty(), admin(), &headers(&[])).unwrap(), admin());
    }

    #[test]
    fn impersonation_needs_the_impersonate_verb() {
        let requester = UserInfo {
            name: "jane".into(),
            groups: vec!["system:authenticated".into()],
        };
        let refused = acting_user(
            &empty(),
            requester.clone(),
            &headers(&[("Impersonate-User", "bob")]),
        )
        .expect_err("no rule allows it");
        assert_eq!(refused.code, 403);
        assert_eq!(
            refused.message,
            "users \"bob\" is forbidden: User \"jane\" cannot impersonate resource \"users\" in API group \"\" at \
             the cluster scope"
        );
        let policy = StaticPolicy {
            cluster_roles: vec![json!({"metadata": {"name": "impersonator"}, "rules": [
                {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["bob"]}]})],
            cluster_role_bindings: vec![json!({"metadata": {"name": "jane"},
                "roleRef": {"kind": "ClusterRole", "name": "impersonator"}, "subjects": [{"kind": "User", "name": "jane"}]})],
            roles: vec![],
            role_bindings: vec![],
        };
        let bob = acting_user(
            &policy,
            requester.clone(),
            &headers(&[("Impersonate-User", "bob")]),
        )
        .unwrap();
        assert_eq!(bob.name, "bob");
        assert_eq!(
            acting_user(
                &policy,
                requester,
                &headers(&[("Impersonate-User", "bob"), ("Impersonate-Group", "x")])
            )
            .expect_err("groups need their own grant")
            .code,
            403
        );
        assert_eq!(
            acting_user(&empty(), admin(), &headers(&[("Impersonate-Group", "x")]))
                .expect_err("a group alone")
                .code,
            400
        );
    }
}
