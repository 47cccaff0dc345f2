//! kubezero bootstrap provider: turns a `KubeZeroConfig` into Alpine user data for one Machine.
//!
//! - [`api`]: the `bootstrap.cluster.x-k8s.io/v1alpha1` kinds (`KubeZeroConfig`, `KubeZeroConfigTemplate`).
#![forbid(unsafe_code)]

pub mod api;
pub mod controller;
pub mod kubeconfig;
pub mod lock;
pub mod pki;
pub mod render;
pub mod tokens;
