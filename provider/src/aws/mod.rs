//! The AWS backend: clients and rate limits per (credentials, region), error classification,
//! ownership tags, and the cluster infrastructure (network, security groups, load balancer, IAM) as
//! idempotent `ensure_*` / tolerant `delete_*` functions. SDK types stay inside this module.

pub mod ami;
pub mod clients;
pub mod errors;
pub mod iam;
pub mod infrastructure;
pub mod instance_types;
pub mod instances;
#[cfg(feature = "test-support")]
pub mod inventory;
pub mod launcher;
pub mod limiter;
pub mod load_balancer;
pub mod network;
pub mod security_groups;
pub mod tags;

/// Where a `delete_*` stands: everything gone, or something still being deleted or in use (come
/// back later; nothing failed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteProgress {
    /// Nothing of the cluster is left.
    Done,
    /// Deletion started but is not finished; the text says what is left.
    Waiting(String),
}

impl DeleteProgress {
    /// Whether deletion finished.
    pub fn is_done(&self) -> bool {
        matches!(self, DeleteProgress::Done)
    }
}
