//! A fault-injecting HTTP proxy in front of a Redfish BMC (sushy-tools): most requests are forwarded
//! unchanged, a configurable share fails as fragile BMCs fail:
//!
//! - server errors: HTTP 503 (or 500) with a Redfish error body, before the BMC sees the request;
//! - timeouts: the request is held for [`BmcFaultConfig::hold`] (longer than the client's request
//!   timeout) and then answered 504 without reaching the BMC;
//! - slow answers: forwarded after [`BmcFaultConfig::slow_delay`].
//!
//! Which requests fail is decided by a seeded sequence ([`super::faults::SplitMix64`]) drawn once per
//! request in arrival order. Counts ([`BmcFaultProxy::counts`]) show what was forwarded and what was
//! injected. The product knows nothing of it: it is only another BMC address.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};

use super::Error;
use super::faults::SplitMix64;
use super::proxy::{ProxyServer, UpstreamClient, forward, plain};

/// Shares of BMC requests (each in `0.0..=1.0`, summed at most 1.0) that fail, and how.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BmcFaultConfig {
    /// Seed of the pseudo-random sequence.
    pub seed: u64,
    /// Share answered 500/503 without reaching the BMC.
    pub server_error: f64,
    /// Share held for `hold`, then answered 504 without reaching the BMC.
    pub timeout: f64,
    /// Share forwarded after `slow_delay`.
    pub slow: f64,
    /// How long a timed-out request is held.
    pub hold: Duration,
    /// How long a slow request waits before it is forwarded.
    pub slow_delay: Duration,
}

impl Default for BmcFaultConfig {
    /// No faults: a transparent proxy.
    fn default() -> Self {
        Self {
            seed: 0,
            server_error: 0.0,
            timeout: 0.0,
            slow: 0.0,
            hold: Duration::from_secs(3),
            slow_delay: Duration::from_millis(500),
        }
    }
}

/// The fate of one BMC request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BmcFault {
    Forward,
    ServerError(StatusCode),
    Timeout,
    Slow,
}

impl BmcFaultConfig {
    fn pick(&self, random: &mut SplitMix64) -> BmcFault {
        let draw = random.next_f64();
        let coin = random.next_u64() & 1 == 0;
        if draw < self.server_error {
            BmcFault::ServerError(if coin {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            })
        } else if draw < self.server_error + self.timeout {
            BmcFault::Timeout
        } else if draw < self.server_error + self.timeout + self.slow {
            BmcFault::Slow
        } else {
            BmcFault::Forward
        }
    }
}

/// What the proxy did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BmcFaultCounts {
    /// Requests forwarded to the BMC (slow ones included).
    pub forwarded: u64,
    /// Requests answered 500/503.
    pub server_errors: u64,
    /// Requests held and answered 504.
    pub timeouts: u64,
    /// Requests forwarded late.
    pub slow: u64,
}

impl BmcFaultCounts {
    /// Requests that failed (server errors and timeouts).
    pub fn injected(&self) -> u64 {
        self.server_errors + self.timeouts
    }
}

struct Shared {
    upstream: SocketAddr,
    client: UpstreamClient,
    faults: Mutex<(BmcFaultConfig, SplitMix64)>,
    counts: Mutex<BmcFaultCounts>,
}

impl Shared {
    fn count(&self, update: impl FnOnce(&mut BmcFaultCounts)) {
        update(&mut self.counts.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A running BMC fault proxy on 127.0.0.1, stopped when dropped.
pub struct BmcFaultProxy {
    server: ProxyServer,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BmcFaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BmcFaultProxy")
            .field("addr", &self.server.addr())
            .field("upstream", &self.shared.upstream)
            .finish()
    }
}

impl BmcFaultProxy {
    /// Starts a proxy to the BMC at `upstream` (e.g. [`super::Sushy::addr`]) failing as `config` says.
    pub fn start(upstream: SocketAddr, config: BmcFaultConfig) -> Result<Self, Error> {
        let mut shared = None;
        let server = ProxyServer::start("bmc-fault-proxy", |client| {
            let state = Arc::new(Shared {
                upstream,
                client,
                faults: Mutex::new((config, SplitMix64::new(config.seed))),
                counts: Mutex::new(BmcFaultCounts::default()),
            });
            shared = Some(state.clone());
            axum::Router::new().fallback(proxy).with_state(state)
        })?;
        let shared = shared.ok_or_else(|| Error::Http {
            context: "BMC fault proxy".into(),
            message: "the router was not built".into(),
        })?;
        Ok(Self { server, shared })
    }

    /// `http://127.0.0.1:<port>`: the BMC address to give the provider instead of the BMC's.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Replaces the fault shares and restarts the sequence at the new seed.
    pub fn set_config(&self, config: BmcFaultConfig) {
        *self.shared.faults.lock().unwrap_or_else(|p| p.into_inner()) =
            (config, SplitMix64::new(config.seed));
    }

    /// What the proxy did so far.
    pub fn counts(&self) -> BmcFaultCounts {
        *self.shared.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Forwards one request, or fails it as its turn in the sequence says.
async fn proxy(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(error) => return plain(StatusCode::BAD_REQUEST, format!("reading the request: {error}")),
    };
    let (fault, config) = {
        let mut faults = shared.faults.lock().unwrap_or_else(|p| p.into_inner());
        let (config, random) = &mut *faults;
        (config.pick(random), *config)
    };
    match fault {
        BmcFault::ServerError(status) => {
            shared.count(|c| c.server_errors += 1);
            return redfish_error(status, "injected: the BMC is busy");
        }
        BmcFault::Timeout => {
            tokio::time::sleep(config.hold).await;
            shared.count(|c| c.timeouts += 1);
            return redfish_error(StatusCode::GATEWAY_TIMEOUT, "injected: the BMC did not answer");
        }
        BmcFault::Slow => {
            tokio::time::sleep(config.slow_delay).await;
            shared.count(|c| c.slow += 1);
        }
        BmcFault::Forward => {}
    }
    match forward(&shared.client, shared.upstream, parts, body).await {
        Ok(answer) => {
            shared.count(|c| c.forwarded += 1);
            answer.map(Body::new)
        }
        Err(refused) => refused,
    }
}

/// A Redfish-shaped error answer.
fn redfish_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": "Base.1.0.GeneralError", "message": message}});
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_pick_their_faults() {
        let config = BmcFaultConfig {
            seed: 7,
            server_error: 0.1,
            timeout: 0.05,
            slow: 0.05,
            ..BmcFaultConfig::default()
        };
        let mut random = SplitMix64::new(config.seed);
        let picks: Vec<BmcFault> = (0..10_000).map(|_| config.pick(&mut random)).collect();
        let share = |f: fn(&BmcFault) -> bool| picks.iter().filter(|p| f(p)).count() as f64 / 10_000.0;
        assert!((share(|p| matches!(p, BmcFault::ServerError(_))) - 0.1).abs() < 0.02);
        assert!((share(|p| *p == BmcFault::Timeout) - 0.05).abs() < 0.015);
        assert!((share(|p| *p == BmcFault::Slow) - 0.05).abs() < 0.015);
        let none = BmcFaultConfig::default();
        assert!((0..100).all(|_| none.pick(&mut random) == BmcFault::Forward));
    }
}
