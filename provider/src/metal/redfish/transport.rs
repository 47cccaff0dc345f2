//! One BMC connection: the HTTP client (TLS verified unless the host disables it), the
//! authentication (HTTP Basic or a Redfish session), the per-BMC request queue, retries with
//! backoff on 5xx answers and transport failures, and the request counter.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use reqwest::{Method, header};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tracing::debug;

use super::address::{BmcAddress, SERVICE_ROOT};
use super::errors::{RedfishError, RedfishErrorKind};

/// Labels of the `kubezero_redfish_requests_total` counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedfishRequestLabels {
    /// Operation, e.g. `GetSystem`, `Reset`, `InsertMedia`.
    pub operation: &'static str,
    /// HTTP status of the answer, or `timeout` / `unreachable` when there was none.
    pub code: String,
}

/// Redfish requests sent (attempts, retries included) by operation and answer, shared by every BMC
/// connection of the process; the manager registers it as `kubezero_redfish_requests_total`.
pub type RedfishRequestCounter = Family<RedfishRequestLabels, Counter>;

/// The requests sent: the metric, and the same counts readable by tests and benchmarks.
#[derive(Debug, Default)]
pub struct RequestLog {
    counter: RedfishRequestCounter,
    counts: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl RequestLog {
    fn record(&self, operation: &'static str, code: String) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry((operation, code.clone())).or_default() += 1;
        self.counter
            .get_or_create(&RedfishRequestLabels { operation, code })
            .inc();
    }

    /// The metric family.
    pub fn counter(&self) -> &RedfishRequestCounter {
        &self.counter
    }

    /// Requests so far by (operation, code).
    pub fn snapshot(&self) -> BTreeMap<(&'static str, String), u64> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Name (under the `kubezero` prefix) and help of the [`RedfishRequestCounter`] metric.
pub const REDFISH_REQUESTS_METRIC: (&str, &str) = (
    "redfish_requests",
    "Redfish requests sent to BMCs, retries included, by operation and HTTP status",
);

/// How BMC requests are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedfishSettings {
    /// Requests in flight at once per BMC (`host:port`); BMCs are fragile, so 1 by default.
    pub requests_per_bmc: usize,
    /// Attempts per request for 5xx answers, timeouts and connection failures (1 = no retry).
    pub max_attempts: u32,
    /// Timeout of one attempt.
    pub request_timeout: Duration,
    /// Wait before the first retry; doubled for each further one.
    pub retry_backoff: Duration,
}

impl Default for RedfishSettings {
    fn default() -> Self {
        Self {
            requests_per_bmc: 1,
            max_attempts: 3,
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(1),
        }
    }
}

/// How the client authenticates to a BMC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// HTTP Basic on every request.
    #[default]
    Basic,
    /// A Redfish session (`POST SessionService/Sessions`, then `X-Auth-Token`), created again when
    /// the BMC drops it.
    Session,
}

/// BMC credentials (from the host's Secret).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Basic or session authentication.
    pub method: AuthMethod,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// The `X-Auth-Token` header of Redfish sessions.
const AUTH_TOKEN: &str = "X-Auth-Token";

/// An authenticated connection to one BMC. Cheap to share (`Arc`); the queue is per BMC, shared with
/// every other connection to the same `host:port`.
#[derive(Debug)]
pub struct Connection {
    address: BmcAddress,
    http: reqwest::Client,
    credentials: Credentials,
    /// The current session token (session authentication only).
    session: Mutex<Option<String>>,
    queue: Arc<Semaphore>,
    settings: RedfishSettings,
    requests: Arc<RequestLog>,
}

/// An answer with a body (2xx only).
struct Answer {
    headers: header::HeaderMap,
    body: bytes::Bytes,
}

impl Connection {
    /// A connection to `address` with its own HTTP client.
    pub fn new(
        address: BmcAddress,
        credentials: Credentials,
        verify_tls: bool,
        queue: Arc<Semaphore>,
        settings: RedfishSettings,
        requests: Arc<RequestLog>,
    ) -> Result<Self, RedfishError> {
        let http = reqwest::Client::builder()
            // BMCs sit on management networks: never through a proxy from the environment.
            .no_proxy()
            .danger_accept_invalid_certs(!verify_tls)
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| {
                RedfishError::new(
                    RedfishErrorKind::Address,
                    "Connect",
                    &address.authority,
                    error.to_string(),
                )
            })?;
        Ok(Self {
            address,
            http,
            credentials,
            session: Mutex::new(None),
            queue,
            settings,
            requests,
        })
    }

    /// The BMC's address.
    pub fn address(&self) -> &BmcAddress {
        &self.address
    }

    /// GETs `path` and decodes the Redfish document.
    pub async fn get<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
    ) -> Result<T, RedfishError> {
        let answer = self.send(operation, Method::GET, path, None).await?;
        serde_json::from_slice(&answer.body).map_err(|error| {
            RedfishError::new(
                RedfishErrorKind::Protocol,
                operation,
                &self.address.authority,
                format!("{path}: not the expected Redfish document: {error}"),
            )
        })
    }

    /// POSTs the JSON `body` to `path` (an action); any 2xx is success.
    pub async fn post(
        &self,
        operation: &'static str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(), RedfishError> {
        self.send(operation, Method::POST, path, Some(body))
            .await
            .map(drop)
    }

    /// PATCHes `path` with the JSON `body`; any 2xx is success.
    pub async fn patch(
        &self,
        operation: &'static str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(), RedfishError> {
        self.send(operation, Method::PATCH, path, Some(body))
            .await
            .map(drop)
    }

    /// Sends one request with retries; a session dropped by the BMC is created again once.
    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, RedfishError> {
        let url = self.address.url(path)?;
        let mut relogged = false;
        let mut attempt = 1;
        loop {
            let token = match self.credentials.method {
                AuthMethod::Basic => None,
                AuthMethod::Session => Some(self.session_token().await?),
            };
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(header::ACCEPT, "application/json");
            request = match &token {
                Some(token) => request.header(AUTH_TOKEN, token),
                None => request.basic_auth(&self.credentials.username, Some(&self.credentials.password)),
            };
            if let Some(body) = body {
                request = request.json(body);
            }
            let result = self.attempt(operation, path, request).await;
            let error = match result {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            if error.kind == RedfishErrorKind::Auth && token.is_some() && !relogged {
                // The BMC may have expired the session: forget it and log in once more.
                relogged = true;
                self.forget_session(token.as_deref());
                continue;
            }
            if !error.kind.is_retryable() || attempt >= self.settings.max_attempts {
                return Err(error);
            }
            let wait = self.settings.retry_backoff * 2u32.saturating_pow(attempt - 1);
            debug!(bmc = %self.address.authority, operation, attempt, ?wait, %error, "retrying Redfish request");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One attempt, queued behind the other requests to this BMC, counted by its answer.
    async fn attempt(
        &self,
        operation: &'static str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, RedfishError> {
        let bmc = &self.address.authority;
        let _turn = self.queue.acquire().await.map_err(|_| {
            RedfishError::new(
                RedfishErrorKind::Unreachable,
                operation,
                bmc,
                "request queue closed",
            )
        })?;
        let sent = async {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        }
        .await;
        let (status, headers, body) = match sent {
            Ok(answer) => answer,
            Err(error) => {
                let error = RedfishError::from_transport(operation, bmc, path, &error);
                let code = if error.kind == RedfishErrorKind::Timeout {
                    "timeout"
                } else {
                    "unreachable"
                };
                self.requests.record(operation, code.to_string());
                return Err(error);
            }
        };
        self.requests.record(operation, status.as_u16().to_string());
        if status.is_success() {
            return Ok(Answer { headers, body });
        }
        let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).into_owned();
        Err(RedfishError::from_status(
            operation,
            bmc,
            path,
            status.as_u16(),
            &text,
        ))
    }

    /// The current session token, creating a session when there is none.
    async fn session_token(&self) -> Result<String, RedfishError> {
        if let Some(token) = self.session.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(token);
        }
        let operation = "CreateSession";
        let path = format!("{SERVICE_ROOT}/SessionService/Sessions");
        let url = self.address.url(&path)?;
        let body = serde_json::json!({
            "UserName": self.credentials.username,
            "Password": self.credentials.password,
        });
        let request = self
            .http
            .post(url)
            .header(header::ACCEPT, "application/json")
            .json(&body);
        let answer = self.attempt(operation, &path, request).await.map_err(|error| {
            // A BMC that refuses a session for these credentials answers 400 on some firmware.
            if error.kind == RedfishErrorKind::Rejected {
                RedfishError {
                    kind: RedfishErrorKind::Auth,
                    ..error
                }
            } else {
                error
            }
        })?;
        let token = answer
            .headers
            .get(AUTH_TOKEN)
            .and_then(|value| value.to_str().ok())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                RedfishError::new(
                    RedfishErrorKind::Protocol,
                    operation,
                    &self.address.authority,
                    format!("{path}: the answer has no {AUTH_TOKEN} header"),
                )
            })?
            .to_string();
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
        Ok(token)
    }

    /// Drops the session token `stale` (unless another request already replaced it).
    fn forget_session(&self, stale: Option<&str>) {
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if session.as_deref() == stale {
            *session = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_the_password() {
        let credentials = Credentials {
            username: "admin".into(),
            password: "s3cret".into(),
            method: AuthMethod::Basic,
        };
        let shown = format!("{credentials:?}");
        assert!(shown.contains("admin") && !shown.contains("s3cret"), "{shown}");
    }
}
