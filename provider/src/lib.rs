//! kubezero infrastructure provider: the `infrastructure.cluster.x-k8s.io/v1alpha1` API
//! (KubeZeroCluster, KubeZeroMachine, their templates, KubeZeroHost) for AWS EC2 and bare metal.
#![forbid(unsafe_code)]

pub mod addons;
pub mod api;
pub mod aws;
pub mod controllers;
pub mod metal;
pub mod settings;
