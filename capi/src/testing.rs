//! Test support: a scripted Kubernetes API behind a real `kube::Client`, for controller unit tests.
//!
//! Every request the code under test sends is recorded; a responder function decides the answer.
//! Controller tests assert on the recorded conversation (which objects were read, which patches were
//! sent) the way a user would observe it on a real API server.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::Value;

use crate::runtime::{Context, ManagerArgs, Metrics};

/// One request the client sent.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// Path without the query, e.g. `/api/v1/namespaces/default/secrets/x`.
    pub path: String,
    /// Query string (may be empty).
    pub query: String,
    /// `Content-Type` header (tells merge, JSON and apply patches apart).
    pub content_type: String,
    /// Parsed JSON body (`Null` when empty).
    pub body: Value,
}

impl Recorded {
    /// `METHOD path` for compact assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// A response: HTTP status and JSON body.
pub type Reply = (u16, Value);

/// A `404 NotFound` Status body for `name`.
pub fn not_found(name: &str) -> Reply {
    (
        404,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
            "code": 404, "message": format!("{name} not found")}),
    )
}

/// Scripted API: answers with `responder` and records every request.
pub struct ScriptedApi {
    recorded: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedApi {
    /// Starts serving; returns the client to hand to the code under test.
    pub fn start(responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> (Client, ScriptedApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let log = recorded.clone();
        let task = tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let entry = Recorded {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or_default().to_string(),
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                let (status, reply) = responder(&entry);
                log.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
                let response = Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).unwrap_or_default()))
                    .unwrap_or_else(|_| Response::new(Body::empty()));
                send.send_response(response);
            }
        });
        (Client::new(service, "default"), ScriptedApi { recorded, task })
    }

    /// The requests recorded so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for ScriptedApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A manager [`Context`] around `client` with default arguments, for calling reconcilers directly.
pub fn context(client: Client) -> Context {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ManagerArgs,
    }
    let args = Cli::parse_from(["test"]).args;
    let reporter = kube::runtime::events::Reporter {
        controller: "test".into(),
        instance: None,
    };
    Context {
        recorder: crate::runtime::events::EventPublisher::new(client.clone(), reporter),
        client,
        args,
        metrics: Arc::new(Metrics::new()),
        shutdown: tokio_util::sync::CancellationToken::new(),
        statuses: Arc::default(),
    }
}

/// Fails the calling test unless `cmd` runs (`cmd --version`): the validators and readers the tests
/// call (shellcheck, cloud-init, xorriso, mtools, busybox) come from `scripts/test-tools.sh`.
pub fn require_tool(cmd: &str) {
    let found = std::process::Command::new(cmd)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    assert!(
        found.is_ok(),
        "`{cmd}` is not installed: run scripts/test-tools.sh (CI installs it)"
    );
}

/// Fails the calling test unless `shellcheck -s sh` accepts `script` (named `name` in the message).
pub fn assert_shellcheck_clean(name: &str, script: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    require_tool("shellcheck");
    let mut child = Command::new("shellcheck")
        .args(["-s", "sh", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shellcheck starts");
    child
        .stdin
        .take()
        .expect("shellcheck's stdin")
        .write_all(script.as_bytes())
        .expect("the script reaches shellcheck");
    let out = child.wait_with_output().expect("shellcheck ends");
    assert!(
        out.status.success(),
        "shellcheck failed for {name}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
