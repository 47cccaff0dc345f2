//! Controllers of the infrastructure provider, one module per kind; the platform parts of a kind sit
//! beside it (`cluster/aws.rs`, `machine/aws.rs`).
//!
//! Each reconcile is a pipeline: fetch (owner, Cluster, pause) → validate → plan → apply → status,
//! with the status written once by server-side apply under [`FIELD_MANAGER`].

pub mod addon_gates;
pub mod cluster;
pub mod endpoint;
pub mod host;
pub mod machine;
pub mod machine_template;

use kubezero_capi::conditions::{Condition, HasConditions};
use kubezero_capi::runtime::errors::{ErrorClass, ReconcileError};
pub use kubezero_capi::runtime::reconcile::Error;
use kubezero_capi::runtime::reconcile::WatchedKind;

/// Errors of the provider's reconciles: the Kubernetes side ([`Error`]) or a cloud backend.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Reading or writing Kubernetes objects failed.
    #[error(transparent)]
    Kube(#[from] Error),
    /// A cloud call failed; `class` decides the requeue.
    #[error("{object}: {message}")]
    Cloud {
        /// `Kind namespace/name` of the reconciled object.
        object: String,
        /// The error class of the cloud failure.
        class: ErrorClass,
        /// What failed, with the cloud's message.
        message: String,
    },
}

impl ReconcileError for ProviderError {
    fn class(&self) -> ErrorClass {
        match self {
            ProviderError::Kube(error) => error.class(),
            ProviderError::Cloud { class, .. } => *class,
        }
    }
}

use crate::api::{KubeZeroCluster, KubeZeroMachine, KubeZeroMachineTemplate};

/// Field manager of every status write of this provider.
pub const FIELD_MANAGER: &str = "kubezero-provider";

/// Condition reasons this provider reports on `Ready`.
pub mod reasons {
    pub use kubezero_capi::contract::waiting_reasons::*;
    /// The owning Machine has no bootstrap data Secret yet.
    pub const WAITING_FOR_BOOTSTRAP_DATA: &str = "WaitingForBootstrapData";
    /// The Machine and its Cluster use different platforms.
    pub const PLATFORM_MISMATCH: &str = "PlatformMismatch";
    /// This build has no backend for the object's platform.
    pub const BACKEND_UNAVAILABLE: &str = "BackendUnavailable";
    /// Reconciliation is paused.
    pub const PAUSED: &str = "Paused";
    /// The cluster infrastructure exists and is usable.
    pub const INFRASTRUCTURE_READY: &str = "InfrastructureReady";
    /// The cluster infrastructure is being created (NAT gateways pending, load balancer provisioning).
    pub const INFRASTRUCTURE_PROVISIONING: &str = "InfrastructureProvisioning";
    /// Creating or checking the cluster infrastructure failed (message names the step).
    pub const INFRASTRUCTURE_FAILED: &str = "InfrastructureFailed";
    /// The object is being deleted; cloud resources are being released.
    pub const DELETING: &str = "Deleting";
    /// Deleting the cloud resources failed; retried.
    pub const DELETION_FAILED: &str = "DeletionFailed";
    /// The machine's instance is starting.
    pub const INSTANCE_PROVISIONING: &str = "InstanceProvisioning";
    /// The machine's instance is running.
    pub const INSTANCE_RUNNING: &str = "InstanceRunning";
    /// The machine's instance is stopping or stopped.
    pub const INSTANCE_STOPPED: &str = "InstanceStopped";
    /// The machine's instance is gone or going; the machine must be replaced.
    pub const INSTANCE_TERMINATED: &str = "InstanceTerminated";
    /// The machine is being deleted and its instance is terminating.
    pub const INSTANCE_TERMINATING: &str = "InstanceTerminating";
    /// The machine's image does not exist or no image matches the lookup.
    pub const INVALID_AMI: &str = "InvalidAmi";
    /// EC2 refused the launch as invalid (instance type, subnet, groups, volumes, ...).
    pub const INVALID_LAUNCH_SPEC: &str = "InvalidLaunchSpec";
    /// Launching the instance failed (throttling, capacity, transient errors).
    pub const INSTANCE_LAUNCH_FAILED: &str = "InstanceLaunchFailed";
    /// No subnet of the cluster matches the machine's failure domain.
    pub const NO_SUBNET: &str = "NoSubnet";
    /// Registering a control-plane instance with the API server load balancer failed.
    pub const LOAD_BALANCER_REGISTRATION_FAILED: &str = "LoadBalancerRegistrationFailed";
    /// An AWS request failed.
    pub const AWS_REQUEST_FAILED: &str = "AwsRequestFailed";
    /// The region does not offer the template's instance type.
    pub const INVALID_INSTANCE_TYPE: &str = "InvalidInstanceType";
    /// The template's capacity and node info are known.
    pub const CAPACITY_KNOWN: &str = "CapacityKnown";
}

/// The platform section an object uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// `spec.aws`.
    Aws,
    /// `spec.metal`.
    Metal,
}

impl Platform {
    /// The spec key of the platform section.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Aws => "aws",
            Platform::Metal => "metal",
        }
    }
}

impl KubeZeroCluster {
    /// The platform of this cluster (the CRD guarantees exactly one section).
    pub fn platform(&self) -> Platform {
        if self.spec.aws.is_some() {
            Platform::Aws
        } else {
            Platform::Metal
        }
    }
}

impl KubeZeroMachine {
    /// The platform of this machine (the CRD guarantees exactly one section).
    pub fn platform(&self) -> Platform {
        if self.spec.aws.is_some() {
            Platform::Aws
        } else {
            Platform::Metal
        }
    }
}

impl WatchedKind for KubeZeroCluster {}
impl WatchedKind for KubeZeroMachine {}
impl WatchedKind for KubeZeroMachineTemplate {}

impl HasConditions for KubeZeroCluster {
    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map_or(&[], |status| status.conditions.as_slice())
    }
}

impl HasConditions for KubeZeroMachine {
    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map_or(&[], |status| status.conditions.as_slice())
    }
}
