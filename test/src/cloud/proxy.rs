//! What the fault proxies share: an axum router served on 127.0.0.1 from its own thread and
//! runtime (so tests of any runtime flavour, and sync code, can use it), stopped when dropped, and
//! the forwarding of a buffered request to the upstream server.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::Error;

/// How long a dropped proxy waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The HTTP client a proxy forwards with.
pub(super) type UpstreamClient = Client<HttpConnector, Body>;

/// A router served on its own thread; stopped when dropped.
pub(super) struct ProxyServer {
    addr: SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProxyServer {
    /// Serves the router `build` returns (given a forwarding client made in the proxy's runtime,
    /// where its connection pool lives) on a free 127.0.0.1 port from a thread called `name`.
    pub(super) fn start(
        name: &str,
        build: impl FnOnce(UpstreamClient) -> axum::Router,
    ) -> Result<Self, Error> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("binding 127.0.0.1:0", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("making the proxy listener non-blocking", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the proxy's bound port", e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|e| Error::io("building the proxy runtime", e))?;
        let router = {
            let _entered = runtime.enter();
            build(Client::builder(TokioExecutor::new()).build_http::<Body>())
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stopped = shutdown.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let graceful = stopped.clone();
                    let serve = axum::serve(listener, router)
                        .with_graceful_shutdown(async move { graceful.cancelled().await });
                    // Idle keep-alive connections of clients that outlive the proxy must not
                    // hold the drop up: a short grace, then stop regardless.
                    let deadline = async {
                        stopped.cancelled().await;
                        tokio::time::sleep(SHUTDOWN_GRACE).await;
                    };
                    tokio::select! {
                        _ = serve => {}
                        () = deadline => {}
                    }
                });
                // In-flight upstream calls end with the runtime.
                runtime.shutdown_background();
            })
            .map_err(|e| Error::io("spawning the proxy thread", e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(Error::io("registering the proxy listener", error)),
            Err(_) => {
                return Err(Error::Http {
                    context: format!("{name} on {addr}"),
                    message: "the proxy thread ended before it listened".into(),
                });
            }
        }
        Ok(Self {
            addr,
            shutdown,
            thread: Some(thread),
        })
    }

    /// The proxy's address.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ProxyServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends the request (`parts` with its buffered `body`) to `upstream` unchanged but for the
/// connection headers hyper sets itself.
pub(super) async fn forward(
    client: &UpstreamClient,
    upstream: SocketAddr,
    mut parts: http::request::Parts,
    body: bytes::Bytes,
) -> Result<http::Response<hyper::body::Incoming>, Response> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    parts.uri = match format!("http://{upstream}{path}").parse() {
        Ok(uri) => uri,
        Err(error) => {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                format!("request path {path:?}: {error}"),
            ));
        }
    };
    // hyper sets Host from the URI and frames the (buffered) body itself.
    parts.headers.remove(header::HOST);
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.remove(header::CONNECTION);
    parts.version = http::Version::HTTP_11;
    client
        .request(http::Request::from_parts(parts, Body::from(body)))
        .await
        .map_err(|error| {
            plain(
                StatusCode::BAD_GATEWAY,
                format!("forwarding to {upstream}: {error}"),
            )
        })
}

/// A plain-text answer.
pub(super) fn plain(status: StatusCode, text: String) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}
