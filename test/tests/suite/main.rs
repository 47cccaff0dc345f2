//! Integration suite of the kubezero workspace, one test binary (each binary links every crate).
//!
//! - [`fixtures`]: CRD validation of the valid and invalid manifests in `test/fixtures/`.
//! - [`manifests`]: generated CRDs, RBAC, manager Deployments and the clusterctl repository.
//! - [`manager`]: the manager binaries as processes (health, metrics, missing CRDs, SIGTERM).

mod fixtures;
mod manager;
mod manifests;
