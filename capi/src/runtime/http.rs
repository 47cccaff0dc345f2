//! HTTP endpoints: `/metrics` on the metrics address, `/healthz` and `/readyz` on the probe address.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;

/// Readiness of the manager: not ready (with a reason) until its CRDs are installed.
#[derive(Clone)]
pub struct Readiness {
    not_ready_reason: Arc<RwLock<Option<String>>>,
}

impl Readiness {
    /// A readiness that starts not ready with `reason`.
    pub fn new(reason: &str) -> Self {
        Self {
            not_ready_reason: Arc::new(RwLock::new(Some(reason.to_string()))),
        }
    }

    /// Marks the manager ready.
    pub fn set_ready(&self) {
        *self.not_ready_reason.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Marks the manager not ready, saying why.
    pub fn set_not_ready(&self, reason: String) {
        *self.not_ready_reason.write().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    /// Why the manager is not ready, `None` when it is.
    pub fn not_ready_reason(&self) -> Option<String> {
        self.not_ready_reason
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Router serving `/metrics`.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(metrics)
}

/// Router serving `/healthz` and `/readyz`.
pub fn health_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(serve_ready))
        .with_state(readiness)
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        metrics.encode(),
    )
}

async fn serve_ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    match readiness.not_ready_reason() {
        None => (StatusCode::OK, "ok".to_string()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

/// Binds `address` and serves `router` until `shutdown` is cancelled.
pub async fn serve(address: SocketAddr, router: Router, shutdown: CancellationToken) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "serving HTTP");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_text(address: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let code = response[9..12].parse().unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        (code, body)
    }

    #[tokio::test]
    async fn readyz_reports_the_reason_until_ready_and_metrics_are_served() {
        let readiness = Readiness::new("waiting for CRDs");
        let metrics = Arc::new(Metrics::new());
        drop(metrics.reconcile("kubezerocluster"));
        let shutdown = CancellationToken::new();
        let router = health_router(readiness.clone()).merge(metrics_router(metrics));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .into_future(),
        );

        assert_eq!(get_text(address, "/healthz").await, (200, "ok".to_string()));
        assert_eq!(
            get_text(address, "/readyz").await,
            (503, "waiting for CRDs".to_string())
        );
        readiness.set_ready();
        assert_eq!(get_text(address, "/readyz").await.0, 200);
        let (code, body) = get_text(address, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains(r#"kubezero_reconcile_total{controller="kubezerocluster"} 1"#),
            "{body}"
        );

        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
