//! The manager processes as a platform engineer runs them: health and metrics endpoints, a clear
//! report of missing CRDs, and a clean exit on SIGTERM.
//!
//! The binaries come from `cargo build --workspace --all-targets` (`make test` builds every target before the tests).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace's debug binary `name`.
fn binary(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let path = deps.parent().and_then(|d| d.parent()).unwrap().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --all-targets` first",
        path.display()
    );
    path
}

/// A stand-in API server on 127.0.0.1 that knows no objects: every request gets a 404 Status.
/// Enough to drive the manager's start-up up to its CRD check; the test world replaces it later.
fn empty_api_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer_not_found(stream));
        }
    });
    port
}

fn answer_not_found(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
            if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length];
        let _ = reader.read_exact(&mut body);
        let status = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"not found"}"#;
        let response = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{status}",
            status.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kubeconfig(api_port: u16) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "kubezero-manager-test-{}-{api_port}.yaml",
        std::process::id()
    ));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: http://127.0.0.1:{api_port}\n\
         users:\n- name: test\n  user:\n    token: test\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
         current-context: test\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// GET `path` on 127.0.0.1:`port`: (status code, body), or `None` while nothing listens.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.get(9..12)?.parse().ok()?;
    Some((
        code,
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default(),
    ))
}

fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Manager {
    child: Child,
    metrics_port: u16,
    health_port: u16,
}

impl Manager {
    fn start(name: &str, extra: &[&str]) -> Manager {
        let api_port = empty_api_server();
        let (metrics_port, health_port) = (free_port(), free_port());
        let child = Command::new(binary(name))
            .arg("run")
            .arg(format!("--metrics-bind-address=127.0.0.1:{metrics_port}"))
            .arg(format!("--health-probe-bind-address=127.0.0.1:{health_port}"))
            .args(extra)
            .env("KUBECONFIG", kubeconfig(api_port))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Manager {
            child,
            metrics_port,
            health_port,
        }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "manager did not exit within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_reports_missing_crds_and_exits_on_sigterm(name: &str, own_crd: &str) {
    let manager = Manager::start(name, &[]);
    let (code, body) = wait_for("readyz to report missing CRDs", Duration::from_secs(20), || {
        http_get(manager.health_port, "/readyz").filter(|(_, body)| body.contains("waiting for CRDs"))
    });
    assert_eq!(code, 503);
    assert!(body.contains(&format!("{own_crd} (not installed)")), "{body}");
    assert!(
        body.contains("machines.cluster.x-k8s.io (not installed) [is Cluster API core installed?"),
        "{body}"
    );
    assert_eq!(
        http_get(manager.health_port, "/healthz"),
        Some((200, "ok".to_string()))
    );
    let (code, metrics) = http_get(manager.metrics_port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("kubezero_leader 0"), "{metrics}");
    let status = manager.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn provider_manager_reports_missing_crds_and_exits_cleanly_on_sigterm() {
    assert_reports_missing_crds_and_exits_on_sigterm(
        "kubezero-provider",
        "kubezeromachines.infrastructure.cluster.x-k8s.io",
    );
}

#[test]
fn bootstrap_manager_reports_missing_crds_and_exits_cleanly_on_sigterm() {
    assert_reports_missing_crds_and_exits_on_sigterm(
        "kubezero-bootstrap",
        "kubezeroconfigs.bootstrap.cluster.x-k8s.io",
    );
}

#[test]
fn contradictory_leader_election_flags_are_refused_at_start() {
    let output = Command::new(binary("kubezero-provider"))
        .args([
            "run",
            "--leader-elect",
            "--lease-duration=5s",
            "--renew-deadline=10s",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--renew-deadline"), "{stderr}");
}

#[test]
fn crds_subcommand_prints_every_crd() {
    for (name, count) in [("kubezero-provider", 5), ("kubezero-bootstrap", 2)] {
        let output = Command::new(binary(name)).arg("crds").output().unwrap();
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        assert_eq!(
            text.matches("kind: CustomResourceDefinition").count(),
            count,
            "{name}"
        );
    }
}
