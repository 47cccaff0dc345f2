//! A fault-injecting HTTP proxy in front of an AWS emulator (moto): most requests are forwarded
//! unchanged (method, path, headers, body; the answer is streamed back), a configurable share is
//! answered with the errors real AWS gives under load instead.
//!
//! - Throttling: EC2 answers `RequestLimitExceeded` with HTTP 503 in its own error shape
//!   (`<Response><Errors><Error><Code>…`); the Query APIs of ELBv2 and IAM answer `Throttling` with
//!   HTTP 400 in the `<ErrorResponse><Error><Type>Sender</Type><Code>…` shape.
//! - Server errors: `InternalError` (HTTP 500, EC2) / `InternalFailure` (HTTP 500, ELBv2, IAM) or
//!   `ServiceUnavailable` (HTTP 503), before the request reaches the emulator.
//! - Lost answers: the request is forwarded (it takes effect in the emulator) and its answer is
//!   replaced by an HTTP 500 `InternalError`, as when a connection drops after AWS acted. Retrying
//!   such a call unchanged is what creates duplicates in code that is not idempotent.
//!
//! EC2 makes `RunInstances` idempotent by `ClientToken` (a retry with the same token returns the
//! first call's reservation instead of launching again); moto does not. The proxy supplies that:
//! the answer of a successful `RunInstances` is kept per token and replayed for later requests with
//! the same token (counted as [`ActionCounts::replayed`]), so lost answers and retries behave as on
//! EC2. (EC2's `IdempotentParameterMismatch` for a reused token with other parameters is not
//! emulated.)
//!
//! Which requests fail is decided by a seeded pseudo-random sequence ([`FaultConfig::seed`]) drawn
//! once per AWS request in arrival order: the same seed and the same order give the same faults.
//! Requests without an `Action` (moto's own `/moto-api/`) are always forwarded. Per-action counts
//! ([`FaultProxy::counts`]) show what was forwarded and what was injected. The proxy runs on its own
//! thread and runtime, so tests of any runtime flavour (and sync code) can use it; it listens on
//! 127.0.0.1 only and stops when dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use super::Error;
use super::proxy::{ProxyServer, UpstreamClient, forward, plain};

/// Shares of AWS requests (each in `0.0..=1.0`, summed at most 1.0) answered with a fault, and the
/// seed of the sequence that picks them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultConfig {
    /// Seed of the pseudo-random sequence.
    pub seed: u64,
    /// Share answered with a throttling error (`RequestLimitExceeded` / `Throttling`).
    pub throttle: f64,
    /// Share answered with a 500/503 server error without reaching the emulator.
    pub server_error: f64,
    /// Share forwarded to the emulator whose answer is replaced by a 500 `InternalError`.
    pub lost_answer: f64,
}

impl Default for FaultConfig {
    /// No faults: a transparent proxy.
    fn default() -> Self {
        Self {
            seed: 0,
            throttle: 0.0,
            server_error: 0.0,
            lost_answer: 0.0,
        }
    }
}

/// What happened to the requests of one action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActionCounts {
    /// Forwarded to the emulator with the emulator's answer passed back.
    pub forwarded: u64,
    /// Answered with a throttling error.
    pub throttled: u64,
    /// Answered with a 500/503 server error, not forwarded.
    pub server_errors: u64,
    /// Forwarded, the answer replaced with a 500 error.
    pub lost_answers: u64,
    /// `RunInstances` with a known `ClientToken`, answered with the first call's answer.
    pub replayed: u64,
}

impl ActionCounts {
    /// Requests seen.
    pub fn total(&self) -> u64 {
        self.forwarded + self.throttled + self.server_errors + self.lost_answers + self.replayed
    }

    /// Requests answered with an injected error.
    pub fn injected(&self) -> u64 {
        self.throttled + self.server_errors + self.lost_answers
    }

    fn add(&mut self, other: &ActionCounts) {
        self.forwarded += other.forwarded;
        self.throttled += other.throttled;
        self.server_errors += other.server_errors;
        self.lost_answers += other.lost_answers;
        self.replayed += other.replayed;
    }
}

/// The fate of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward it unchanged.
    None,
    /// Answer with a throttling error.
    Throttle,
    /// Answer with HTTP 500 (`InternalError` / `InternalFailure`).
    InternalError,
    /// Answer with HTTP 503 `ServiceUnavailable`.
    ServiceUnavailable,
    /// Forward it and replace the answer with HTTP 500.
    LostAnswer,
}

/// SplitMix64: a small, well-distributed deterministic generator (no dependency needed).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting at `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `low..high` (`low` when the range is empty).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            low
        } else {
            low + self.next_u64() % (high - low)
        }
    }
}

/// Picks the fault of each request from a [`FaultConfig`]; pure, for unit tests and the proxy.
#[derive(Clone, Debug)]
pub struct FaultPicker {
    config: FaultConfig,
    random: SplitMix64,
}

impl FaultPicker {
    /// A picker at the start of `config`'s sequence.
    pub fn new(config: FaultConfig) -> Self {
        Self {
            config,
            random: SplitMix64::new(config.seed),
        }
    }

    /// The fate of the next AWS request (two draws: which fault, and 500 or 503 for server errors).
    pub fn pick(&mut self) -> Fault {
        let draw = self.random.next_f64();
        let coin = self.random.next_u64() & 1 == 0;
        let FaultConfig {
            throttle,
            server_error,
            lost_answer,
            ..
        } = self.config;
        if draw < throttle {
            Fault::Throttle
        } else if draw < throttle + server_error {
            if coin {
                Fault::InternalError
            } else {
                Fault::ServiceUnavailable
            }
        } else if draw < throttle + server_error + lost_answer {
            Fault::LostAnswer
        } else {
            Fault::None
        }
    }
}

/// Whether Query API `action` changes something (anything but `Describe*`, `Get*`, `List*`).
pub fn is_mutating(action: &str) -> bool {
    action != "-"
        && !["Describe", "Get", "List"]
            .iter()
            .any(|read| action.starts_with(read))
}

/// The `Action` parameter of a Query API request: from the form body, else the query string.
pub fn query_action(query: Option<&str>, body: &[u8]) -> Option<String> {
    query_param("Action", query, body)
}

/// The (still URL-encoded) parameter `name` of a Query API request: from the form body, else the
/// query string.
pub fn query_param(name: &str, query: Option<&str>, body: &[u8]) -> Option<String> {
    let find = |text: &str| {
        text.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_owned())
            .filter(|value| !value.is_empty())
    };
    std::str::from_utf8(body)
        .ok()
        .and_then(find)
        .or_else(|| query.and_then(find))
}

/// The service a SigV4 `Authorization` header's credential scope names (`ec2`,
/// `elasticloadbalancing`, `iam`, …).
pub fn signing_service(authorization: &str) -> Option<&str> {
    let credential = authorization.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    scope.split('/').nth(3).filter(|service| !service.is_empty())
}

/// The status and XML body AWS answers with for `fault` on `service`'s Query API (`None` for
/// [`Fault::None`]). [`Fault::LostAnswer`] gets the server error of the service.
pub fn error_answer(service: &str, fault: Fault, request_id: &str) -> Option<(StatusCode, String)> {
    let ec2 = service == "ec2";
    let (status, code, message, sender) = match fault {
        Fault::None => return None,
        Fault::Throttle if ec2 => (
            StatusCode::SERVICE_UNAVAILABLE,
            "RequestLimitExceeded",
            "Request limit exceeded.",
            true,
        ),
        Fault::Throttle => (StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded", true),
        Fault::InternalError | Fault::LostAnswer if ec2 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "An internal error has occurred",
            false,
        ),
        Fault::InternalError | Fault::LostAnswer => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "An internal error has occurred",
            false,
        ),
        Fault::ServiceUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is unavailable. Please try again shortly.",
            false,
        ),
    };
    let body = if ec2 {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
             <Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
    } else {
        let namespace = match service {
            "iam" => "https://iam.amazonaws.com/doc/2010-05-08/",
            _ => "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/",
        };
        let kind = if sender { "Sender" } else { "Receiver" };
        format!(
            "<ErrorResponse xmlns=\"{namespace}\"><Error><Type>{kind}</Type><Code>{code}</Code>\
             <Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        )
    };
    Some((status, body))
}

/// What the proxy task shares with its handle.
struct Shared {
    upstream: SocketAddr,
    client: UpstreamClient,
    picker: Mutex<FaultPicker>,
    counts: Mutex<BTreeMap<String, ActionCounts>>,
    next_request: Mutex<u64>,
    /// Answers of successful `RunInstances` per `ClientToken`.
    launches: Mutex<BTreeMap<String, bytes::Bytes>>,
    /// How long answers of mutating calls are held after they are counted.
    hold_mutating: Mutex<Duration>,
}

impl Shared {
    fn count(&self, action: &str, update: impl FnOnce(&mut ActionCounts)) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        update(counts.entry(action.to_owned()).or_default());
    }

    /// Waits as [`FaultProxy::hold_mutating_answers`] asks when `action` is mutating.
    async fn hold(&self, action: &str) {
        let hold = *self.hold_mutating.lock().unwrap_or_else(|p| p.into_inner());
        if !hold.is_zero() && is_mutating(action) {
            tokio::time::sleep(hold).await;
        }
    }

    fn request_id(&self) -> String {
        let mut next = self.next_request.lock().unwrap_or_else(|p| p.into_inner());
        *next += 1;
        format!("00000000-0000-4000-8000-{:012x}", *next)
    }
}

/// A running fault-injecting proxy on 127.0.0.1, stopped when dropped.
pub struct FaultProxy {
    server: ProxyServer,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.server.addr())
            .field("upstream", &self.shared.upstream)
            .finish()
    }
}

impl FaultProxy {
    /// Starts a proxy to the HTTP server at `upstream` (e.g. [`super::Moto::addr`]) injecting the
    /// faults of `config`.
    pub fn start(upstream: SocketAddr, config: FaultConfig) -> Result<Self, Error> {
        let mut shared = None;
        let server = ProxyServer::start("fault-proxy", |client| {
            let state = Arc::new(Shared {
                upstream,
                client,
                picker: Mutex::new(FaultPicker::new(config)),
                counts: Mutex::new(BTreeMap::new()),
                next_request: Mutex::new(0),
                launches: Mutex::new(BTreeMap::new()),
                hold_mutating: Mutex::new(Duration::ZERO),
            });
            shared = Some(state.clone());
            axum::Router::new().fallback(proxy).with_state(state)
        })?;
        let shared = shared.ok_or_else(|| Error::Http {
            context: "fault proxy".into(),
            message: "the router was not built".into(),
        })?;
        Ok(Self { server, shared })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:<port>`: the endpoint URL to give an SDK or the provider instead of the
    /// emulator's.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Replaces the fault shares (and restarts the sequence at the new seed), e.g. to stop
    /// injecting before a final check.
    pub fn set_config(&self, config: FaultConfig) {
        *self.shared.picker.lock().unwrap_or_else(|p| p.into_inner()) = FaultPicker::new(config);
    }

    /// Holds the emulator's answer to every mutating call (see [`is_mutating`]) for `hold` after it
    /// is counted as forwarded: a process killed when the count moves dies after AWS acted and
    /// before it saw the answer.
    pub fn hold_mutating_answers(&self, hold: Duration) {
        *self
            .shared
            .hold_mutating
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = hold;
    }

    /// Counts per action so far (requests without an action under `-`).
    pub fn counts(&self) -> BTreeMap<String, ActionCounts> {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts over all actions.
    pub fn totals(&self) -> ActionCounts {
        let mut total = ActionCounts::default();
        for counts in self.counts().values() {
            total.add(counts);
        }
        total
    }

    /// A table of the counts per action, one line each, for test output.
    pub fn report(&self) -> String {
        let mut text = format!(
            "{:<36} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "action", "forwarded", "throttled", "5xx", "lost", "replayed"
        );
        let counts = self.counts();
        for (action, c) in counts.iter().chain([(&"total".to_owned(), &self.totals())]) {
            text.push_str(&format!(
                "{action:<36} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                c.forwarded, c.throttled, c.server_errors, c.lost_answers, c.replayed
            ));
        }
        text
    }
}

/// Forwards one request, or answers it with the fault its turn in the sequence picked.
async fn proxy(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(error) => return plain(StatusCode::BAD_REQUEST, format!("reading the request: {error}")),
    };
    let action = query_action(parts.uri.query(), &body);
    let service = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(signing_service)
        .map(str::to_owned);
    let fault = match (&action, &service) {
        (Some(_), Some(_)) => shared.picker.lock().unwrap_or_else(|p| p.into_inner()).pick(),
        _ => Fault::None,
    };
    let client_token = (action.as_deref() == Some("RunInstances"))
        .then(|| query_param("ClientToken", parts.uri.query(), &body))
        .flatten();
    let action = action.unwrap_or_else(|| "-".to_owned());
    let service = service.unwrap_or_default();
    if let Some(token) = &client_token {
        let known = shared
            .launches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned();
        if let Some(answer) = known
            && matches!(fault, Fault::None | Fault::LostAnswer)
        {
            shared.count(&action, |c| c.replayed += 1);
            return xml(StatusCode::OK, answer);
        }
    }

    if !matches!(fault, Fault::None | Fault::LostAnswer) {
        shared.count(&action, |c| match fault {
            Fault::Throttle => c.throttled += 1,
            _ => c.server_errors += 1,
        });
        return aws_error(&shared, &service, fault);
    }

    match forward(&shared.client, shared.upstream, parts, body).await {
        Ok(answer) if client_token.is_some() => {
            // RunInstances with a token: keep a successful answer for retries with the same token.
            let status = answer.status();
            let body = axum::body::to_bytes(Body::new(answer.into_body()), usize::MAX)
                .await
                .unwrap_or_default();
            if status == StatusCode::OK
                && let Some(token) = client_token
            {
                let mut launches = shared.launches.lock().unwrap_or_else(|p| p.into_inner());
                launches.entry(token).or_insert_with(|| body.clone());
            }
            if fault == Fault::LostAnswer {
                shared.count(&action, |c| c.lost_answers += 1);
                aws_error(&shared, &service, fault)
            } else {
                shared.count(&action, |c| c.forwarded += 1);
                shared.hold(&action).await;
                xml(status, body)
            }
        }
        Ok(answer) if fault == Fault::LostAnswer => {
            // The call took effect upstream; read the answer to its end, then lose it.
            let _ = axum::body::to_bytes(Body::new(answer.into_body()), usize::MAX).await;
            shared.count(&action, |c| c.lost_answers += 1);
            aws_error(&shared, &service, fault)
        }
        Ok(answer) => {
            shared.count(&action, |c| c.forwarded += 1);
            shared.hold(&action).await;
            answer.map(Body::new)
        }
        Err(refused) => refused,
    }
}

fn aws_error(shared: &Shared, service: &str, fault: Fault) -> Response {
    let (status, body) = error_answer(service, fault, &shared.request_id())
        .unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, String::new()));
    xml(status, body.into())
}

fn xml(status: StatusCode, body: bytes::Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_seeded_and_honours_the_shares() {
        let config = FaultConfig {
            seed: 42,
            throttle: 0.2,
            server_error: 0.1,
            lost_answer: 0.05,
        };
        let draws = |n| {
            let mut picker = FaultPicker::new(config);
            (0..n).map(|_| picker.pick()).collect::<Vec<_>>()
        };
        let first = draws(10_000);
        assert_eq!(first, draws(10_000), "same seed, same faults");
        let share = |pick: fn(&Fault) -> bool| first.iter().filter(|f| pick(f)).count() as f64 / 10_000.0;
        assert!((share(|f| *f == Fault::Throttle) - 0.2).abs() < 0.02);
        assert!(
            (share(|f| matches!(f, Fault::InternalError | Fault::ServiceUnavailable)) - 0.1).abs() < 0.02
        );
        assert!((share(|f| *f == Fault::LostAnswer) - 0.05).abs() < 0.01);
        assert!(share(|f| *f == Fault::InternalError) > 0.03);
        assert!(share(|f| *f == Fault::ServiceUnavailable) > 0.03);
        let mut other = FaultPicker::new(FaultConfig { seed: 43, ..config });
        assert_ne!((0..100).map(|_| other.pick()).collect::<Vec<_>>(), first[..100]);
        let mut none = FaultPicker::new(FaultConfig::default());
        assert!((0..1000).all(|_| none.pick() == Fault::None));
    }

    #[test]
    fn actions_and_services_are_read_from_query_requests() {
        assert_eq!(
            query_action(None, b"Action=RunInstances&Version=2016-11-15").as_deref(),
            Some("RunInstances")
        );
        assert_eq!(
            query_action(Some("Version=1&Action=ListRoles"), b"").as_deref(),
            Some("ListRoles")
        );
        assert_eq!(query_action(None, b"{\"a\":1}"), None);
        let auth = "AWS4-HMAC-SHA256 Credential=testing/20260101/eu-central-1/elasticloadbalancing/aws4_request, \
                    SignedHeaders=host, Signature=0";
        assert_eq!(signing_service(auth), Some("elasticloadbalancing"));
        assert_eq!(signing_service("Bearer x"), None);
    }

    #[test]
    fn errors_have_each_service_s_shape() {
        let (status, body) = error_answer("ec2", Fault::Throttle, "r-1").unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("<Response><Errors><Error><Code>RequestLimitExceeded</Code>"),
            "{body}"
        );
        let (status, body) = error_answer("iam", Fault::Throttle, "r-2").unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body.contains("<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><Error><Type>Sender</Type><Code>Throttling</Code>"),
            "{body}"
        );
        let (status, body) = error_answer("elasticloadbalancing", Fault::LostAnswer, "r-3").unwrap();
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body.contains("<Type>Receiver</Type><Code>InternalFailure</Code>"),
            "{body}"
        );
        let (status, body) = error_answer("ec2", Fault::ServiceUnavailable, "r-4").unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("<Code>ServiceUnavailable</Code>"), "{body}");
        assert_eq!(error_answer("ec2", Fault::None, "r-5"), None);
    }
}
