//! ServiceAccount tokens: the TokenRequest subresource (`POST /api/v1/namespaces/<ns>/
//! serviceaccounts/<name>/token`, an `authentication.k8s.io/v1` TokenRequest) issues bearer
//! tokens, and authentication maps a token back to its ServiceAccount.
//!
//! As on the API server: `spec.expirationSeconds` defaults to 3600 and must lie between 10 minutes
//! and 2^32 seconds; `spec.audiences` defaults to the API server's audience
//! ([`API_AUDIENCE`]), and a token whose audiences do not include it is not accepted by the API; a
//! token stops authenticating when it expires or when its ServiceAccount is deleted (also when one
//! of the same name is created again: the token is bound to the ServiceAccount's uid). The
//! answer is `201 Created` with `status.token` and `status.expirationTimestamp`.
//!
//! Differences: tokens are opaque random strings, not signed JWTs (clients only pass them on);
//! `spec.boundObjectRef` (binding to a Pod or Secret) is refused with 501.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::State;
use super::http::ApiError;
use super::rbac::UserInfo;
use super::registry::ResKey;
use super::store::{Store, meta_str};

/// The audience of tokens the emulator's API accepts (kubeadm's default issuer).
pub(crate) const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// `spec.expirationSeconds` when the request sets none.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a TokenRequest may ask for (10 minutes).
const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest lifetime a TokenRequest may ask for (2^32 seconds).
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// One issued token.
struct Issued {
    namespace: String,
    name: String,
    /// uid of the ServiceAccount the token was issued for.
    uid: String,
    audiences: Vec<String>,
    expires: jiff::Timestamp,
}

/// Every token issued by this server.
#[derive(Default)]
pub(crate) struct Tokens {
    issued: HashMap<String, Issued>,
}

fn service_accounts_key() -> ResKey {
    (String::new(), "serviceaccounts".to_owned())
}

/// The user a ServiceAccount authenticates as, with the groups the API server gives it.
pub(crate) fn service_account_user(namespace: &str, name: &str) -> UserInfo {
    UserInfo {
        name: format!("system:serviceaccount:{namespace}:{name}"),
        groups: vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_owned(),
        ],
    }
}

impl Tokens {
    /// The ServiceAccount user `token` authenticates as, if it is valid at `now`.
    pub fn user(&self, token: &str, store: &Store, now: jiff::Timestamp) -> Option<UserInfo> {
        let issued = self.issued.get(token)?;
        if now >= issued.expires || !issued.audiences.iter().any(|a| a == API_AUDIENCE) {
            return None;
        }
        let account = store.get(&service_accounts_key(), &issued.namespace, &issued.name)?;
        if meta_str(account, "uid") != issued.uid || !account["metadata"]["deletionTimestamp"].is_null() {
            return None;
        }
        Some(service_account_user(&issued.namespace, &issued.name))
    }
}

fn invalid(name: &str, value: i64, message: &str) -> ApiError {
    ApiError::invalid(
        "TokenRequest",
        "authentication.k8s.io",
        name,
        vec![(
            "spec.expirationSeconds".into(),
            format!("spec.expirationSeconds: Invalid value: {value}: {message}"),
            "FieldValueInvalid",
        )],
    )
}

fn random_token() -> String {
    format!(
        "kzemu.{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Serves a TokenRequest for ServiceAccount `namespace/name`: the TokenRequest to answer with 201.
pub(crate) fn token_request(
    state: &mut State,
    namespace: &str,
    name: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a TokenRequest",
        ));
    }
    if let Some(kind) = body["kind"].as_str()
        && kind != "TokenRequest"
    {
        return Err(ApiError::bad_request(format!(
            "the body of the request must be a TokenRequest, not {kind}"
        )));
    }
    let spec = &body["spec"];
    if !spec["boundObjectRef"].is_null() {
        return Err(ApiError::not_implemented(
            "the emulator does not bind tokens to objects (spec.boundObjectRef)",
        ));
    }
    let expiration = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION_SECONDS,
        value => value
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("spec.expirationSeconds must be an integer"))?,
    };
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            name,
            expiration,
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        return Err(invalid(
            name,
            expiration,
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let mut audiences: Vec<String> = spec["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    if audiences.is_empty() {
        audiences.push(API_AUDIENCE.to_owned());
    }
    let account = state
        .store
        .get(&service_accounts_key(), namespace, name)
        .ok_or_else(|| ApiError::not_found("serviceaccounts", name))?;
    let uid = meta_str(account, "uid").to_owned();
    let now = jiff::Timestamp::now();
    let expires = now
        .checked_add(jiff::SignedDuration::from_secs(expiration))
        .map_err(|e| ApiError::bad_request(format!("spec.expirationSeconds: {e}")))?;
    let token = random_token();
    state.tokens.issued.insert(
        token.clone(),
        Issued {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid,
            audiences: audiences.clone(),
            expires,
        },
    );
    let seconds = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": seconds(now)},
        "spec": {"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": null},
        "status": {"token": token, "expirationTimestamp": seconds(expires)},
    }))
}
