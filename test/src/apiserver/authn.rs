//! Authentication: which user a request comes from.
//!
//! - No `Authorization` header: the emulator's own superuser, `system:unsecured` in the groups
//!   `system:masters` and `system:authenticated`, as kube-apiserver's former insecure port served
//!   every request. This is the identity of [`super::ApiServer::client`] and
//!   [`super::ApiServer::kubeconfig`], which carry no credentials, so fixtures, the CAPI stand-in
//!   and tests may do anything.
//! - `Authorization: Bearer <token>` with a token from a TokenRequest ([`super::tokens`]): the
//!   ServiceAccount `system:serviceaccount:<ns>:<name>`, groups `system:serviceaccounts`,
//!   `system:serviceaccounts:<ns>` and `system:authenticated`.
//! - Any other credential (unknown, expired or revoked token, another scheme): `401 Unauthorized`,
//!   as the API server answers when an authenticator rejects the credentials it was given.

use http::{HeaderMap, header};

use super::State;
use super::http::ApiError;
use super::rbac::{PRIVILEGED_GROUP, UserInfo};

/// The user of requests without credentials.
pub(crate) const UNSECURED_USER: &str = "system:unsecured";

/// The superuser of requests without credentials.
pub(crate) fn unsecured_user() -> UserInfo {
    UserInfo {
        name: UNSECURED_USER.to_owned(),
        groups: vec![PRIVILEGED_GROUP.to_owned(), "system:authenticated".to_owned()],
    }
}

/// The 401 the API server answers for credentials it does not accept.
pub(crate) fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

/// The user `headers` authenticate as.
pub(crate) fn authenticate(headers: &HeaderMap, state: &State) -> Result<UserInfo, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(unsecured_user());
    };
    let value = value.to_str().map_err(|_| unauthorized())?;
    let mut parts = value.split_whitespace();
    let token = match (parts.next(), parts.next(), parts.next()) {
        (Some(scheme), Some(token), None) if scheme.eq_ignore_ascii_case("bearer") => token,
        _ => return Err(unauthorized()),
    };
    state
        .tokens
        .user(token, &state.store, jiff::Timestamp::now())
        .ok_or_else(unauthorized)
}
