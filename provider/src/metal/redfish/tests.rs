//! The client against a scripted HTTP server on loopback: retries, the per-BMC queue, sessions,
//! discovery errors. (The Redfish behaviour of a real BMC is tested against sushy-tools in the
//! test suite.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::*;

/// What the scripted server saw and how it answers.
#[derive(Default)]
struct Script {
    /// GETs of the system answered 503 before it answers 200.
    failures_first: AtomicUsize,
    /// Requests seen on the system path.
    system_requests: AtomicUsize,
    /// Requests being answered right now, and the most at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Sessions created; the token of session n is `token-n`.
    sessions: AtomicUsize,
    /// The token the server accepts (sessions older than it are expired).
    valid_session: AtomicUsize,
}

const SYSTEM: &str = "/redfish/v1/Systems/1";

fn system_document() -> serde_json::Value {
    json!({
        "@odata.id": SYSTEM,
        "PowerState": "Off",
        "Boot": {"BootSourceOverrideTarget@Redfish.AllowableValues": ["Cd", "Hdd"], "BootSourceOverrideMode": "Legacy"},
        "Actions": {"#ComputerSystem.Reset": {"target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            "ResetType@Redfish.AllowableValues": ["ForceOn", "ForceOff"]}}
    })
}

fn authorized(script: &Script, headers: &HeaderMap) -> bool {
    if let Some(token) = headers.get("X-Auth-Token") {
        let valid = format!("token-{}", script.valid_session.load(Ordering::SeqCst));
        return token.to_str().is_ok_and(|token| token == valid);
    }
    // Basic admin:secret.
    headers
        .get("authorization")
        .is_some_and(|value| value == "Basic YWRtaW46c2VjcmV0")
}

async fn system(State(script): State<Arc<Script>>, headers: HeaderMap) -> Response {
    script.system_requests.fetch_add(1, Ordering::SeqCst);
    let now = script.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    script.max_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    script.in_flight.fetch_sub(1, Ordering::SeqCst);
    if !authorized(&script, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let failures = &script.failures_first;
    if failures.load(Ordering::SeqCst) > 0 {
        failures.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    axum::Json(system_document()).into_response()
}

async fn sessions(State(script): State<Arc<Script>>, body: axum::Json<serde_json::Value>) -> Response {
    if body["UserName"] != "admin" || body["Password"] != "secret" {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let n = script.sessions.fetch_add(1, Ordering::SeqCst) + 1;
    script.valid_session.store(n, Ordering::SeqCst);
    (
        StatusCode::CREATED,
        [("X-Auth-Token", format!("token-{n}"))],
        "{}",
    )
        .into_response()
}

async fn reset(
    State(script): State<Arc<Script>>,
    headers: HeaderMap,
    body: axum::Json<serde_json::Value>,
) -> Response {
    if !authorized(&script, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    // The answer tells the test which ResetType arrived.
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": {"message": body["ResetType"]}})),
    )
        .into_response()
}

async fn serve(script: Arc<Script>) -> String {
    let app = Router::new()
        .route("/redfish/v1", get(|| async { axum::Json(json!({"Systems": {"@odata.id": "/redfish/v1/Systems"}})) }))
        .route(
            "/redfish/v1/Systems",
            get(|| async { axum::Json(json!({"Members": [{"@odata.id": "/redfish/v1/Systems/1"}, {"@odata.id": "/redfish/v1/Systems/2"}]})) }),
        )
        .route(SYSTEM, get(system))
        .route("/redfish/v1/Systems/1/Actions/ComputerSystem.Reset", post(reset))
        .route("/redfish/v1/SessionService/Sessions", post(sessions))
        .with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn quick() -> RedfishSettings {
    RedfishSettings {
        requests_per_bmc: 1,
        max_attempts: 3,
        request_timeout: Duration::from_secs(2),
        retry_backoff: Duration::from_millis(10),
    }
}

fn admin(password: &str, method: AuthMethod) -> Credentials {
    Credentials {
        username: "admin".into(),
        password: password.into(),
        method,
    }
}

/// The scripted system at `base`, reached as admin with `password`.
fn system_bmc(redfish: &Redfish, base: &str, password: &str, method: AuthMethod) -> Arc<Bmc> {
    redfish
        .bmc(&format!("{base}{SYSTEM}"), &admin(password, method), true)
        .unwrap()
}

#[tokio::test]
async fn five_hundreds_are_retried_and_counted() {
    let script = Arc::new(Script::default());
    let base = serve(script.clone()).await;
    let redfish = Redfish::new(quick());
    let bmc = system_bmc(&redfish, &base, "secret", AuthMethod::Basic);

    script.failures_first.store(2, Ordering::SeqCst);
    let system = bmc.system().await.unwrap();
    assert_eq!(
        (system.power, system.boot_mode.as_deref()),
        (Power::Off, Some("Legacy"))
    );
    let counts = redfish.requests();
    assert_eq!(counts.get(&("GetSystem", "503".to_string())), Some(&2));
    assert_eq!(counts.get(&("GetSystem", "200".to_string())), Some(&1));

    script.failures_first.store(5, Ordering::SeqCst);
    let error = bmc.system().await.unwrap_err();
    assert_eq!(error.kind, RedfishErrorKind::Server);
    assert_eq!(script.system_requests.load(Ordering::SeqCst), 6, "3 + 3 attempts");
}

#[tokio::test]
async fn one_request_at_a_time_per_bmc() {
    let script = Arc::new(Script::default());
    let base = serve(script.clone()).await;
    let redfish = Redfish::new(quick());
    let credentials = admin("secret", AuthMethod::Basic);
    // Two hosts behind the same BMC share its queue.
    let first = redfish
        .bmc(&format!("{base}{SYSTEM}"), &credentials, true)
        .unwrap();
    let second = redfish
        .bmc(&format!("redfish+{base}{SYSTEM}"), &credentials, true)
        .unwrap();
    let calls = (0..8).map(|i| {
        let bmc = if i % 2 == 0 { first.clone() } else { second.clone() };
        async move { bmc.system().await.map(drop) }
    });
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    assert_eq!(script.max_in_flight.load(Ordering::SeqCst), 1);

    let wide = Redfish::new(RedfishSettings {
        requests_per_bmc: 4,
        ..quick()
    });
    let bmc = wide.bmc(&format!("{base}{SYSTEM}"), &credentials, true).unwrap();
    futures::future::join_all((0..8).map(|_| bmc.system())).await;
    assert!(
        script.max_in_flight.load(Ordering::SeqCst) > 1,
        "the flag allows more"
    );
}

#[tokio::test]
async fn sessions_are_created_once_and_again_when_expired() {
    let script = Arc::new(Script::default());
    let base = serve(script.clone()).await;
    let redfish = Redfish::new(quick());
    let bmc = system_bmc(&redfish, &base, "secret", AuthMethod::Session);
    bmc.system().await.unwrap();
    bmc.system().await.unwrap();
    assert_eq!(script.sessions.load(Ordering::SeqCst), 1);

    // The BMC expires the session: the next request logs in again and succeeds.
    script.valid_session.store(99, Ordering::SeqCst);
    bmc.system().await.unwrap();
    assert_eq!(script.sessions.load(Ordering::SeqCst), 2);

    let wrong = system_bmc(&redfish, &base, "nope", AuthMethod::Session);
    let error = wrong.system().await.unwrap_err();
    assert_eq!(
        (error.kind, error.operation),
        (RedfishErrorKind::Auth, "CreateSession")
    );
    let basic = system_bmc(&redfish, &base, "nope", AuthMethod::Basic);
    assert_eq!(basic.system().await.unwrap_err().reason(), "BMCAuthFailed");
}

#[tokio::test]
async fn discovery_needs_a_system_path_when_there_are_several() {
    let script = Arc::new(Script::default());
    let base = serve(script).await;
    let redfish = Redfish::new(quick());
    let bmc = redfish
        .bmc(&base, &admin("secret", AuthMethod::Basic), true)
        .unwrap();
    let error = bmc.system().await.unwrap_err();
    assert_eq!(error.kind, RedfishErrorKind::Address);
    assert!(error.to_string().contains("manages 2 systems"), "{error}");
}

#[tokio::test]
async fn reset_types_follow_what_the_bmc_offers() {
    let script = Arc::new(Script::default());
    let base = serve(script).await;
    let redfish = Redfish::new(quick());
    let bmc = system_bmc(&redfish, &base, "secret", AuthMethod::Basic);
    let system = bmc.system().await.unwrap();
    // Only ForceOn is offered: On is sent as ForceOn (the server echoes it in a 400).
    let sent = bmc.reset(&system, ResetKind::On).await.unwrap_err();
    assert!(sent.to_string().contains("ForceOn"), "{sent}");
    assert_eq!(sent.kind, RedfishErrorKind::Rejected);
    let refused = bmc.reset(&system, ResetKind::GracefulShutdown).await.unwrap_err();
    assert_eq!(refused.kind, RedfishErrorKind::Unsupported);
    let boot = bmc.boot_once(&system, BootTarget::Usb).await.unwrap_err();
    assert_eq!(boot.reason(), "BMCUnsupported");
}

#[tokio::test]
async fn an_unreachable_bmc_is_retried_then_reported() {
    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redfish = Redfish::new(quick());
    let bmc = system_bmc(
        &redfish,
        &format!("http://127.0.0.1:{port}"),
        "secret",
        AuthMethod::Basic,
    );
    let error = bmc.system().await.unwrap_err();
    assert_eq!(
        (error.kind, error.reason()),
        (RedfishErrorKind::Unreachable, "BMCUnreachable")
    );
    assert_eq!(
        redfish.requests().get(&("GetSystem", "unreachable".to_string())),
        Some(&3)
    );
}
