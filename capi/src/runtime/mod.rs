//! Manager process plumbing shared by `kubezero-provider` and `kubezero-bootstrap`.
//!
//! [`manager::run`] is the one entry point: it starts the HTTP endpoints, waits for the CRDs, takes the
//! leader lease when asked to, runs the controllers until SIGTERM, then releases the lease.

pub mod args;
pub mod crds;
pub mod errors;
pub mod events;
pub mod finalizers;
pub mod http;
pub mod leader;
pub mod manager;
pub mod manifests;
pub mod metrics;
pub mod reconcile;
pub mod status;
pub mod telemetry;

pub use args::{Command, CrdsArgs, ManagerArgs, NoProviderArgs, RunArgs};
pub use errors::{ErrorClass, ReconcileError};
pub use manager::{Context, execute, run};
pub use metrics::Metrics;
