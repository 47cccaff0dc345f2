//! The status step of the KubeZeroMachine controller: the one status write of a reconcile
//! ([`Report`]), by server-side apply under the provider's field manager.

use kube::Api;
use kubezero_capi::conditions::{Condition, Observed};
use kubezero_capi::contract::READY_CONDITION;
use kubezero_capi::pause::paused_condition;
use kubezero_capi::runtime::Context;
use kubezero_capi::runtime::reconcile::write_conditions;

use crate::api::{KubeZeroMachine, KubeZeroMachineStatus};
use crate::controllers::{Error, FIELD_MANAGER};

/// The conditions and status fields one reconcile reports.
#[derive(Clone, Debug)]
pub struct Report {
    /// The observed conditions.
    pub observed: Vec<Observed>,
    /// Conditions kept as last written.
    pub carry_over: &'static [&'static str],
    /// Status without conditions.
    pub status: KubeZeroMachineStatus,
}

impl Report {
    /// A paused machine: `Paused=True` for `reason`, `Ready` kept as it was.
    pub fn paused(reason: &str, status: KubeZeroMachineStatus) -> Self {
        Self {
            observed: vec![paused_condition(Some(reason))],
            carry_over: &[READY_CONDITION],
            status,
        }
    }

    /// `ready` and `Paused=False`, with `status`.
    pub fn ready(ready: Observed, status: KubeZeroMachineStatus) -> Self {
        Self {
            observed: vec![ready, paused_condition(None)],
            carry_over: &[],
            status,
        }
    }

    /// Writes the report on `machine`.
    pub async fn write(
        self,
        api: &Api<KubeZeroMachine>,
        context: &Context,
        machine: &KubeZeroMachine,
    ) -> Result<(), Error> {
        let Self {
            observed,
            carry_over,
            status,
        } = self;
        write_conditions(
            api,
            machine,
            context,
            FIELD_MANAGER,
            &observed,
            carry_over,
            |conditions| with_conditions(status, conditions),
        )
        .await
    }
}

/// `status` with `conditions`.
fn with_conditions(mut status: KubeZeroMachineStatus, conditions: Vec<Condition>) -> KubeZeroMachineStatus {
    status.conditions = conditions;
    status
}
