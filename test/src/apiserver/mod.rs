//! A Kubernetes API emulator served over plain HTTP on 127.0.0.1, for kube-rs clients, kube-runtime
//! watchers and controllers, and the `kubectl` binary.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kubezero_test::apiserver::Error> {
//! use kubezero_test::apiserver::ApiServer;
//! let server = ApiServer::start().await?;
//! server.install_crds(&kubezero_test::validation::kubezero_crds()).await?;
//! let client = server.client()?;
//! # drop(client);
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! What it implements (see `docs/testing.md` for why each matters):
//! - objects with uid, one global resourceVersion counter, creationTimestamp, generateName,
//!   `metadata.generation` (custom resources and CRDs, bumped when anything outside `metadata` and
//!   `status` changes), namespaces (`default`, `kube-system`, `kube-public`, `kube-node-lease` exist),
//!   optimistic concurrency (409 Conflict) and AlreadyExists;
//! - the `/status` subresource split; finalizers, deletionTimestamp, propagation policies and a
//!   background garbage collector (owner references, foreground deletion, `blockOwnerDeletion`),
//!   namespace termination;
//! - list with label/field selectors and `limit`/`continue`, watch with bookmarks, `timeoutSeconds`,
//!   `sendInitialEvents` and `410 Gone` once the bounded event log ([`EVENT_LOG_CAPACITY`]) no longer
//!   holds the requested resourceVersion;
//! - merge, JSON and strategic merge patches ([`patch`]) and server-side apply ([`fields`]);
//! - CRDs: registration of every served version (no conversion: the `None` strategy, which only
//!   rewrites `apiVersion`), pruning, defaulting and validation through [`crate::validation`],
//!   `fieldValidation=Strict`;
//! - discovery, `/version`, and `meta.k8s.io/v1` Tables for `kubectl get`;
//! - applied configurations without `metadata.name` patch the object named on the URL, and a JSON
//!   patch `test` for `null` passes on an absent path, as on the real server.
//!
//! What it refuses: protobuf and CBOR bodies (415), lists at an older exact resourceVersion (501),
//! field selectors other than `metadata.name` / `metadata.namespace` (400), subresources other
//! than `status` and `serviceaccounts/token` (404; `kubectl create token` sends protobuf, so mint
//! tokens with kube-rs). `/openapi/v3` publishes per group-version documents listing each resource's
//! write operations and their `fieldValidation` parameter (what `kubectl` checks before relying on
//! server-side field validation) but no schemas; `/openapi/v2` answers 404.
//! - authentication ([`authn`]): requests without credentials are the superuser `system:unsecured`
//!   (group `system:masters`; what [`ApiServer::client`] and [`ApiServer::kubeconfig`] use), bearer
//!   tokens from the TokenRequest subresource ([`tokens`]) are their ServiceAccount, anything else
//!   is `401 Unauthorized`; impersonation (`kubectl --as`, [`impersonation`]);
//! - authorization ([`rbac`]) of every request, resource and non-resource, on the request's
//!   attributes ([`attributes`]) with Roles, ClusterRoles and their bindings as the RBAC authorizer
//!   does, `403 Forbidden` with the API server's wording otherwise; the default ClusterRoles and
//!   bindings for discovery and health ([`bootstrap_policy`]); ClusterRole aggregation
//!   ([`aggregation`]).
//!
//! Known simplifications: `continue` pages read the current state rather than a snapshot at the
//! first page's resourceVersion; core/v1 and events.k8s.io/v1 Events are stored separately;
//! there are no admission webhooks or conversion webhooks; RBAC writes by users outside
//! `system:masters` are refused (501: escalation checks are not modelled).

mod aggregation;
mod attributes;
mod authn;
mod bootstrap_policy;
mod discovery;
pub mod fields;
mod gc;
mod handlers;
mod http;
mod impersonation;
mod ops;
pub mod patch;
mod rbac;
mod registry;
mod select;
mod store;
mod table;
mod tokens;
mod watch;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use registry::Registry;
use store::Store;

/// How many events the server keeps for watches; a watch from an older resourceVersion gets `410 Gone`.
pub const EVENT_LOG_CAPACITY: usize = 10_000;

/// Why the emulator or one of its helpers failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding the listener or writing a file failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A request to the emulator failed.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// The server URL could not be turned into a client configuration.
    #[error("invalid server URL {0}")]
    Url(String),
    /// A client configuration could not be built from a kubeconfig.
    #[error("invalid kubeconfig: {0}")]
    Kubeconfig(String),
    /// A CRD was not served in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

/// The emulator's mutable state, behind one lock.
pub(crate) struct State {
    pub registry: Registry,
    pub store: Store,
    /// Deletions started or finished so far: the garbage collector scans again when it moved.
    pub deletions: u64,
    /// ServiceAccount tokens issued by TokenRequests.
    pub tokens: tokens::Tokens,
}

/// Shared between the HTTP handlers, watches and the garbage collector.
pub(crate) struct Inner {
    state: Mutex<State>,
    /// The latest resourceVersion, for watches to wake up on.
    changed: tokio::sync::watch::Sender<u64>,
    /// Wakes the garbage collector.
    gc: Notify,
    cancel: CancellationToken,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes watches and the garbage collector after a write.
    pub(crate) fn notify_watchers(&self) {
        let rv = self.lock().store.rv();
        self.changed.send_replace(rv);
        self.gc.notify_one();
    }
}

/// A running API emulator; dropping it stops the server.
pub struct ApiServer {
    url: String,
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl ApiServer {
    /// Starts a server on `127.0.0.1:<random port>` with the default namespaces.
    pub async fn start() -> Result<Self, Error> {
        let mut state = State {
            registry: Registry::builtin(),
            store: Store::new(EVENT_LOG_CAPACITY),
            deletions: 0,
            tokens: tokens::Tokens::default(),
        };
        let namespaces = ["default", "kube-system", "kube-public", "kube-node-lease"]
            .map(|name| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}));
        let defaults = [
            ("", "namespaces", namespaces.to_vec()),
            (
                rbac::RBAC_GROUP,
                "clusterroles",
                bootstrap_policy::cluster_roles(),
            ),
            (
                rbac::RBAC_GROUP,
                "clusterrolebindings",
                bootstrap_policy::cluster_role_bindings(),
            ),
        ];
        for (group, plural, objects) in defaults {
            let rt = state
                .registry
                .get(group, "v1", plural)
                .expect("the default objects' kinds are built in");
            let ctx = ops::WriteCtx {
                rt: &rt,
                namespace: "",
                strict: false,
                manager: "kube-apiserver".into(),
                dry_run: false,
            };
            for object in objects {
                ops::create(&mut state, &ctx, object, false).map_err(|e| std::io::Error::other(e.message))?;
            }
        }
        let rv = state.store.rv();
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            changed: tokio::sync::watch::Sender::new(rv),
            gc: Notify::new(),
            cancel: CancellationToken::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .fallback(handlers::handle)
            .with_state(inner.clone());
        let cancel = inner.cancel.clone();
        let serve = tokio::spawn(async move {
            let shutdown = async move { cancel.cancelled().await };
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::warn!(%error, "API emulator stopped");
            }
        });
        let gc = tokio::spawn(gc::run(inner.clone()));
        let aggregation = tokio::spawn(aggregation::run(inner.clone()));
        Ok(Self {
            url,
            inner,
            tasks: vec![serve, gc, aggregation],
        })
    }

    /// The server's base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kube-rs client for the server (plain HTTP, no credentials: the superuser
    /// `system:unsecured` in `system:masters`).
    pub fn client(&self) -> Result<kube::Client, Error> {
        let uri = self.url.parse().map_err(|_| Error::Url(self.url.clone()))?;
        let config = kube::Config::new(uri);
        Ok(kube::Client::try_from(config)?)
    }

    /// A kube-rs client that sends `token` as its bearer token (e.g. a ServiceAccount's, from a
    /// TokenRequest).
    pub async fn client_with_token(&self, token: &str) -> Result<kube::Client, Error> {
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {}\n\
             users:\n- name: token\n  user:\n    token: {token}\ncontexts:\n- name: token\n  context:\n    \
             cluster: emulator\n    user: token\ncurrent-context: token\n",
            self.url
        );
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&kubeconfig).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A kubeconfig (YAML) for `kubectl` and other subprocesses, context `emulator`, namespace
    /// `default`, without credentials (the superuser, as [`ApiServer::client`]).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: emulator\n  cluster:\n    server: {}\n\
             users:\n- name: emulator\n  user: {{}}\ncontexts:\n- name: emulator\n  context:\n    \
             cluster: emulator\n    user: emulator\n    namespace: default\ncurrent-context: emulator\n",
            self.url
        )
    }

    /// Writes [`ApiServer::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        std::fs::write(path, self.kubeconfig())?;
        Ok(())
    }

    /// Creates (or server-side applies) the CRDs through the API and waits until each is Established.
    pub async fn install_crds(&self, crds: &[CustomResourceDefinition]) -> Result<(), Error> {
        let client = self.client()?;
        let api: Api<CustomResourceDefinition> = Api::all(client);
        let params = PatchParams::apply("kubezero-test").force();
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let mut crd = crd.clone();
            crd.metadata.managed_fields = None;
            crd.metadata.resource_version = None;
            crd.status = None;
            api.patch(&name, &params, &Patch::Apply(&crd)).await?;
        }
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let established = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let crd = api.get(&name).await?;
                    let ready = crd
                        .status
                        .iter()
                        .flat_map(|s| s.conditions.iter().flatten())
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    if ready {
                        return Ok::<_, Error>(());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
            established.map_err(|_| Error::Timeout(format!("CRD {name} to be established")))??;
        }
        Ok(())
    }

    /// Stops the server and its background tasks, and waits for them.
    pub async fn shutdown(mut self) {
        self.inner.cancel.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}
