//! What the AWS machine backend reports of an instance: the `Ready` condition, the status fields
//! (addresses, zone, spot) and when to look again ([`observe`]), for a launch in
//! flight ([`launching`]) and for an instance that is gone ([`vanished`]). Pure.

use std::time::{Duration, SystemTime};

use kubezero_capi::conditions::Observed;
use kubezero_capi::contract::{
    InfrastructureInitialization, MachineAddress, MachineAddressType, READY_CONDITION,
};

use crate::api::KubeZeroMachine;
use crate::aws::instances::{Instance, InstanceState};
use crate::controllers::machine::backend::{Observation, previous_status, was_provisioned};
use crate::controllers::reasons;

/// How soon to look again while an instance starts or stops.
pub const PROGRESS_REQUEUE: Duration = Duration::from_secs(5);
/// How often a running instance is checked again (at its cluster's slot, [`resync_slot`]).
pub const RESYNC: Duration = Duration::from_secs(300);
/// How soon to look again while the machine's launch batch runs, should its end not wake the
/// machine (the wake channel usually does within seconds).
pub const LAUNCH_REQUEUE: Duration = Duration::from_secs(30);
/// How soon to look again at a machine whose recorded instance is not listed (EC2 reads are
/// eventually consistent: a just-launched instance may be missing).
pub const VANISHED_REQUEUE: Duration = Duration::from_secs(30);

/// The `status.addresses` of an instance.
pub fn addresses(instance: &Instance) -> Vec<MachineAddress> {
    [
        (MachineAddressType::InternalIp, &instance.private_ip),
        (MachineAddressType::InternalDns, &instance.private_dns),
        (MachineAddressType::ExternalIp, &instance.public_ip),
        (MachineAddressType::ExternalDns, &instance.public_dns),
    ]
    .into_iter()
    .filter_map(|(address_type, value)| {
        value.as_ref().map(|address| MachineAddress {
            address_type,
            address: address.clone(),
        })
    })
    .collect()
}

/// The time from `now` to the next resync slot of the machines of cluster `namespace/cluster`: one
/// every [`RESYNC`], at an offset taken from the cluster's name. The running machines of a cluster
/// are checked together and share one DescribeInstances (the cluster's view is reused for a few
/// seconds) instead of one call each at times of their own; clusters are spread over the interval.
/// At least a second. Pure.
pub fn resync_slot(namespace: &str, cluster: &str, now: SystemTime) -> Duration {
    let period = RESYNC.as_millis() as u64;
    // FNV-1a: a fixed function of the name, the same in every process.
    let offset = format!("{namespace}/{cluster}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
        % period;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let since_slot = (now % period + period - offset) % period;
    Duration::from_millis((period - since_slot).max(1000))
}

/// The observation of an existing instance; a running one is looked at again after `resync`. Pure.
pub fn observe(machine: &KubeZeroMachine, instance: &Instance, resync: Duration) -> Observation {
    let mut status = previous_status(machine);
    let provisioned = was_provisioned(machine) || instance.state == InstanceState::Running;
    status.initialization = Some(InfrastructureInitialization {
        provisioned: provisioned.then_some(true),
    });
    if !instance.state.is_ending() {
        status.addresses = addresses(instance);
    }
    if !instance.zone.is_empty() {
        status.failure_domain = Some(instance.zone.clone());
    }
    status.interruptible = instance.spot.then_some(true);
    let (ready, requeue) = match instance.state {
        InstanceState::Running => (
            Observed::true_(
                READY_CONDITION,
                reasons::INSTANCE_RUNNING,
                format!("instance {} is running in {}", instance.id, instance.zone),
            ),
            resync,
        ),
        InstanceState::Pending => (
            Observed::false_(
                READY_CONDITION,
                reasons::INSTANCE_PROVISIONING,
                format!("instance {} is starting", instance.id),
            ),
            PROGRESS_REQUEUE,
        ),
        InstanceState::Stopping | InstanceState::Stopped => (
            Observed::false_(
                READY_CONDITION,
                reasons::INSTANCE_STOPPED,
                format!("instance {} is {}", instance.id, instance.state.as_str()),
            ),
            Duration::from_secs(60),
        ),
        InstanceState::ShuttingDown | InstanceState::Terminated => (
            Observed::false_(
                READY_CONDITION,
                reasons::INSTANCE_TERMINATED,
                format!(
                    "instance {} is {}; the machine must be replaced",
                    instance.id,
                    instance.state.as_str()
                ),
            ),
            RESYNC,
        ),
    };
    Observation {
        ready,
        status,
        requeue,
    }
}

/// The observation while the machine's launch batch runs.
pub fn launching(machine: &KubeZeroMachine) -> Observation {
    Observation {
        ready: Observed::false_(
            READY_CONDITION,
            reasons::INSTANCE_PROVISIONING,
            "waiting for the machine's launch batch (one RunInstances for identical machines)",
        ),
        status: previous_status(machine),
        requeue: LAUNCH_REQUEUE,
    }
}

/// The observation of a machine whose recorded instance `id` is not listed any more.
pub fn vanished(machine: &KubeZeroMachine, id: &str) -> Observation {
    let mut status = previous_status(machine);
    status.addresses.clear();
    Observation {
        ready: Observed::false_(
            READY_CONDITION,
            reasons::INSTANCE_TERMINATED,
            format!("instance {id} no longer exists; the machine must be replaced"),
        ),
        status,
        requeue: VANISHED_REQUEUE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::KubeZeroMachineStatus;

    fn instance(state: InstanceState, spot: bool) -> Instance {
        Instance {
            id: "i-0123456789abcdef0".into(),
            state,
            zone: "us-east-1a".into(),
            subnet_id: Some("subnet-priv-a".into()),
            private_ip: Some("10.0.1.23".into()),
            private_dns: Some("ip-10-0-1-23.ec2.internal".into()),
            public_ip: None,
            public_dns: None,
            machine: Some("default/m".into()),
            launch_spec: None,
            spot,
            launched_at: None,
        }
    }

    #[test]
    fn running_instance_is_provisioned_with_addresses_zone_and_spot_flag() {
        let machine = KubeZeroMachine::new("m", Default::default());
        let pending = observe(&machine, &instance(InstanceState::Pending, false), RESYNC);
        assert_eq!(pending.ready.reason, reasons::INSTANCE_PROVISIONING);
        assert_eq!(pending.requeue, PROGRESS_REQUEUE);
        assert_eq!(pending.status.initialization.as_ref().unwrap().provisioned, None);
        let running = observe(&machine, &instance(InstanceState::Running, true), RESYNC);
        assert_eq!(running.ready.reason, reasons::INSTANCE_RUNNING);
        assert_eq!(
            running.status.initialization.as_ref().unwrap().provisioned,
            Some(true)
        );
        assert_eq!(running.status.failure_domain.as_deref(), Some("us-east-1a"));
        assert_eq!(running.status.interruptible, Some(true));
        assert_eq!(running.status.addresses.len(), 2);
        assert_eq!(running.status.addresses[0].address, "10.0.1.23");
    }

    #[test]
    fn running_machines_of_one_cluster_resync_at_the_same_instant() {
        let at = |seconds: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds);
        let slot = |cluster: &str, seconds: u64| {
            let wait = resync_slot("team-a", cluster, at(seconds));
            assert!(wait >= Duration::from_secs(1) && wait <= RESYNC, "{wait:?}");
            at(seconds) + wait
        };
        // Machines that became ready at different times of one interval meet at one slot.
        let first = slot("prod", 0);
        for seconds in [1, 17, 120, 250] {
            let later = slot("prod", seconds);
            assert!(later == first || later == first + RESYNC, "{seconds}s");
        }
        // The reconcile the slot itself triggers waits a whole interval for the next one.
        assert_eq!(resync_slot("team-a", "prod", first), RESYNC);
        // Other clusters (and the same name in another namespace) get other slots.
        let others: std::collections::BTreeSet<_> = ["dev", "stage", "prod-2", "qa"]
            .into_iter()
            .map(|cluster| slot(cluster, 0))
            .chain([at(0) + resync_slot("team-b", "prod", at(0))])
            .collect();
        assert!(others.len() >= 4 && !others.contains(&first), "{others:?}");
    }

    #[test]
    fn provisioned_never_flips_back_when_the_instance_ends() {
        let mut machine = KubeZeroMachine::new("m", Default::default());
        machine.status = Some(KubeZeroMachineStatus {
            initialization: Some(InfrastructureInitialization {
                provisioned: Some(true),
            }),
            ..Default::default()
        });
        let ended = observe(&machine, &instance(InstanceState::ShuttingDown, false), RESYNC);
        assert_eq!(ended.ready.reason, reasons::INSTANCE_TERMINATED);
        assert_eq!(ended.status.initialization.unwrap().provisioned, Some(true));
    }

    #[test]
    fn a_vanished_instance_is_reported_terminated_without_addresses() {
        let mut machine = KubeZeroMachine::new("m", Default::default());
        machine.status = Some(observe(&machine, &instance(InstanceState::Running, false), RESYNC).status);
        let gone = vanished(&machine, "i-0123456789abcdef0");
        assert_eq!(gone.ready.reason, reasons::INSTANCE_TERMINATED);
        assert!(gone.status.addresses.is_empty());
        assert_eq!(gone.status.failure_domain.as_deref(), Some("us-east-1a"));
        assert_eq!(gone.requeue, VANISHED_REQUEUE);
    }
}
