//! The seam between the KubeZeroMachine controller and a platform ([`MachineBackend`]): what a
//! backend does for one machine (observe its instance, launch one, settle a launch while paused,
//! release it) and what it reports back ([`Observation`], [`Found`], [`Release`]).

use std::time::Duration;

use futures::future::BoxFuture;
use kubezero_capi::conditions::Observed;

use super::MachineError;
use super::gate::Ready;
use super::scope::Scope;
use crate::api::{KubeZeroMachine, KubeZeroMachineStatus};
use crate::controllers::Platform;

/// What one provisioning pass observed: the `Ready` condition, the status fields and when to
/// look again.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The `Ready` condition.
    pub ready: Observed,
    /// Status without conditions.
    pub status: KubeZeroMachineStatus,
    /// When to reconcile again.
    pub requeue: Duration,
}

/// What [`MachineBackend::observe`] found.
#[derive(Clone, Debug)]
pub enum Found {
    /// The machine's instance (or its launch in flight), as reported.
    Observed(Observation),
    /// The machine has no instance and none is being launched: it needs [`MachineBackend::launch`].
    Missing,
}

/// Where a deletion stands.
#[derive(Clone, Debug)]
pub enum Release {
    /// The instance is gone; the finalizer can go.
    Done,
    /// The instance is still terminating.
    Waiting(Observed),
}

/// A platform that provisions KubeZeroMachines (AWS in this build, bare metal later). It keeps
/// what it shares across reconciles (clients, caches, batchers); the controller fetches, gates and
/// writes the status, and calls it with the read-only fetched data. The `client` a call gets is for
/// what the backend records on the machine's own metadata and spec (the AWS backend: instance id,
/// launch marks); the status is not its to write.
pub trait MachineBackend: Send + Sync + std::fmt::Debug {
    /// The platform section (`spec.<platform>`) of the machines this backend provisions.
    fn platform(&self) -> Platform;

    /// Finds or adopts the machine's instance and reports it; [`Found::Missing`] when there is
    /// none and none is being launched.
    fn observe<'a>(
        &'a self,
        client: &'a kube::Client,
        ready: &'a Ready<'a>,
    ) -> BoxFuture<'a, Result<Found, MachineError>>;

    /// Plans and starts the machine's instance, booting `user_data`, and reports it.
    fn launch<'a>(
        &'a self,
        client: &'a kube::Client,
        ready: &'a Ready<'a>,
        user_data: Vec<u8>,
    ) -> BoxFuture<'a, Result<Observation, MachineError>>;

    /// While the machine is paused, finishes what cannot be paused (a launch it joined);
    /// `Some(wait)` while that is still in flight.
    fn settle<'a>(
        &'a self,
        client: &'a kube::Client,
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Option<Duration>, MachineError>>;

    /// Releases the machine's instance on deletion, over as many calls as it takes; tolerates
    /// missing owners and a launch that never ran.
    fn release<'a>(&'a self, scope: &'a Scope) -> BoxFuture<'a, Result<Release, MachineError>>;
}

/// The status fields of `machine` as last written (for passes that learn nothing new).
pub fn previous_status(machine: &KubeZeroMachine) -> KubeZeroMachineStatus {
    let mut status = machine.status.clone().unwrap_or_default();
    status.conditions.clear();
    status
}

/// Whether `machine` was reported provisioned (which never flips back).
pub fn was_provisioned(machine: &KubeZeroMachine) -> bool {
    machine
        .status
        .as_ref()
        .and_then(|status| status.initialization.as_ref())
        .and_then(|initialization| initialization.provisioned)
        == Some(true)
}
