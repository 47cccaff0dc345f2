//! kubezero's test world, shared by the integration and end-to-end suites:
//!
//! - [`validation`]: CRD schema and CEL validation with the API server's wording.
//! - [`apiserver`]: a Kubernetes API emulator on 127.0.0.1 that kube-rs and `kubectl` talk to.
//! - [`capi`]: a stand-in for Cluster API core's controllers, running against the emulator.
//! - [`cloud`]: moto (AWS) and sushy-tools (Redfish) fixtures on loopback ports.
//! - [`workload`]: workload-cluster emulators behind `<cluster>-kubeconfig` and a node simulator.
//! - [`templates`]: clusterctl variable substitution and CAAPH values rendering for `templates/`.
//! - [`world`]: the end-to-end entry point: emulated or real management cluster plus both managers.

#![deny(missing_docs)]

pub mod apiserver;
pub mod capi;
pub mod cloud;
pub mod templates;
pub mod validation;
pub mod workload;
pub mod world;
