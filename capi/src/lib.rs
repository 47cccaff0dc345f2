//! Cluster API v1beta2 shims and the controller runtime shared by the kubezero managers.
//!
//! - [`alpine`]: the Alpine release → Kubernetes / cri-o minor matrix.
//! - [`contract`]: label, annotation and field shapes of the CAPI v1beta2 provider contract.
//! - [`core`]: hand-written `cluster.x-k8s.io/v1beta2` Cluster, Machine and MachineSet shims (only the
//!   fields kubezero reads or writes).
//! - [`conditions`]: metav1-shaped conditions with correct `lastTransitionTime` handling.
//! - [`schema`]: schema helpers for CRD generation (list-map markers, embedded object metadata).
//! - [`owner`], [`pause`]: owner lookups and pause semantics from the contract.
//! - [`runtime`]: manager process plumbing (flags, leader election, metrics, health, shutdown).
#![forbid(unsafe_code)]

pub mod alpine;
pub mod conditions;
pub mod contract;
pub mod core;
pub mod owner;
pub mod pause;
pub mod runtime;
pub mod schema;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
