//! Integration suite of the kubezero workspace, one test binary (each binary links every crate).
//!
//! - [`apiserver`]: the Kubernetes API emulator through kube-rs, kube-runtime and `kubectl`.
//! - [`bootstrap`]: the bootstrap provider's data Secret, PKI and init lock in the test world.
//! - [`aws_machines`]: instance launch batching, adoption, termination, AMI and instance type lookups on moto.
//! - [`capi`]: the CAPI core stand-in against the emulator.
//! - [`churn`]: Cluster status churn and metadata writes cost the KubeZeroCluster no AWS call.
//! - [`chaos`] (`#[ignore]`d, its own CI step): the provider SIGKILLed at 52 random points of a cluster's life.
//! - [`e2e`]: both managers in a [`kubezero_test::world::World`] (emulated or a real cluster).
//! - [`cloud`]: the moto (AWS) and sushy-tools (Redfish) fixtures against their real servers.
//! - [`faults`]: the fault-injecting AWS proxy and the throttling e2e behind it.
//! - [`gitops`]: every flavor and the addons applied, provisioned on moto, re-applied without drift.
//! - [`hosts`]: the KubeZeroHost controller against sushy-tools (registration, inspection, power, bad input).
//! - [`fixtures`]: CRD validation of the valid and invalid manifests in `test/fixtures/`.
//! - [`moves`]: `clusterctl move` of a cluster on moto: no instance launched twice or lost.
//! - [`manifests`]: generated CRDs, RBAC, manager Deployments and the clusterctl repository.
//! - [`manager`]: the manager binaries as processes (health, metrics, missing CRDs, SIGTERM).
//! - [`redfish`]: the provider's Redfish client against sushy-tools (power, boot, media, auth).
//! - [`templates`]: cluster template flavors and the KubeZero addon HelmChartProxies.
//! - [`workload`]: workload-cluster emulators behind `<cluster>-kubeconfig` and the node simulator.

mod apiserver;
mod aws;
mod aws_machines;
mod bootstrap;
mod capi;
mod chaos;
mod churn;
mod cloud;
mod e2e;
mod faults;
mod fixtures;
mod gitops;
mod hosts;
mod manager;
mod manifests;
mod moves;
mod reachability;
mod redfish;
mod support;
mod templates;
mod workload;
