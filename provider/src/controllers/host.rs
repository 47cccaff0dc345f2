//! KubeZeroHost controller: the inventory side of bare metal. Each pass reads the BMC credentials
//! from the host's Secret, reaches the server through Redfish (`Registering`), reads its NICs and
//! virtual-media slots once (`Inspecting`; the boot MAC must be one of the NICs), and then keeps the
//! host `Available` with its power state current (one GET per `--host-poll-interval`) and, while
//! nobody claimed it, its power as `spec.online` says. A host with the `kubezero.io/detached`
//! annotation gets no BMC request at all.
//!
//! Registration and inspection failures put the host in `Error` (or keep it `Registering` while the
//! BMC is unreachable or the Secret missing) with the reason on `Ready` and `BMCAccessible`; every
//! pass starts over from the credentials, so fixing the Secret or the spec recovers the host (a
//! Secret change wakes the hosts that use it). Every state change is an Event. Every host carries
//! [`HOST_FINALIZER`]: deleting a host that a machine claimed waits until the machine released it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use kubezero_capi::conditions::{Condition, HasConditions, Observed};
use kubezero_capi::contract::READY_CONDITION;
use kubezero_capi::runtime::reconcile::{
    Error, WatchedKind, changes_controller, describe, namespace_of, run_controller, write_conditions,
};
use kubezero_capi::runtime::{Context, finalizers};
use tracing::{Instrument, info};

use super::{FIELD_MANAGER, ProviderError};
use crate::api::{
    BmcAuthMethod, DETACHED_ANNOTATION, HOST_FINALIZER, HostHardware, HostState, KubeZeroHost,
    KubeZeroHostStatus, MediaSlotInfo, PowerState,
};
use crate::metal::redfish::{
    AuthMethod, Bmc, Credentials, MediaKind, Power, Redfish, RedfishError, ResetKind, System,
};

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "kubezerohost";

/// Condition: the BMC answers with the host's credentials.
pub const BMC_ACCESSIBLE_CONDITION: &str = "BMCAccessible";

/// Condition reasons of KubeZeroHosts (the BMC failure reasons come from [`RedfishError::reason`]).
pub mod reasons {
    /// The host is in the pool.
    pub const AVAILABLE: &str = "Available";
    /// The BMC answers.
    pub const BMC_ACCESSIBLE: &str = "BMCAccessible";
    /// The credentials Secret does not exist (yet).
    pub const CREDENTIALS_MISSING: &str = "CredentialsMissing";
    /// The credentials Secret lacks `username` or `password`.
    pub const CREDENTIALS_INVALID: &str = "CredentialsInvalid";
    /// The host's `bootMACAddress` is none of its NICs.
    pub const BOOT_MAC_NOT_FOUND: &str = "BootMACNotFound";
    /// The BMC has no virtual-media slot for CD or USB images.
    pub const NO_VIRTUAL_MEDIA: &str = "NoVirtualMedia";
    /// The host carries the detached annotation.
    pub const DETACHED: &str = "Detached";
    /// The host is being deleted but a machine still holds it.
    pub const DELETION_HELD: &str = "DeletionHeld";
}

/// Settings of the host controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSettings {
    /// How often the power state of a settled host is read.
    pub poll_interval: Duration,
}

impl Default for HostSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(60),
        }
    }
}

/// How soon to look again while a power change is under way.
const POWER_CHANGE_REQUEUE: Duration = Duration::from_secs(5);
/// How long a power request is given before the same one is sent again.
const POWER_REQUEST_PATIENCE: Duration = Duration::from_secs(60);

impl WatchedKind for KubeZeroHost {}

impl HasConditions for KubeZeroHost {
    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map_or(&[], |status| status.conditions.as_slice())
    }
}

struct State {
    redfish: Arc<Redfish>,
    settings: HostSettings,
    /// The last power request per host uid, so that a slow BMC is not asked again every pass.
    power_requests: Mutex<HashMap<String, (ResetKind, Instant)>>,
}

/// Runs the KubeZeroHost controller until the manager shuts down.
pub async fn run(context: Context, redfish: Arc<Redfish>, settings: HostSettings) {
    let state = Arc::new(State {
        redfish,
        settings,
        power_requests: Mutex::new(HashMap::new()),
    });
    let hosts = changes_controller::<KubeZeroHost>(&context);
    let store = hosts.store();
    // Credentials Secrets are the user's and carry no watch-filter label: watch their metadata
    // (a data change bumps the resourceVersion) in the managed namespaces.
    let secrets = watcher(
        context.args.api::<PartialObjectMeta<Secret>>(&context.client),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    let watching = hosts.watches_stream(secrets, move |secret| hosts_using(&store, &secret));
    run_controller(watching, CONTROLLER, context, move |host, context| {
        reconcile(host, context, state.clone())
    })
    .await;
}

/// The hosts whose credentials are `secret`.
fn hosts_using(
    store: &Store<KubeZeroHost>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<KubeZeroHost>> {
    let name = secret.name_any();
    let namespace = secret.namespace();
    store
        .state()
        .iter()
        .filter(|host| host.namespace() == namespace && host.spec.bmc.credentials_name == name)
        .map(|host| ObjectRef::from_obj(host.as_ref()))
        .collect()
}

/// When to look at a host again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// After the poll interval.
    Poll,
    /// Soon: a power change is under way.
    Soon,
    /// Only when the host (or its Secret) changes.
    OnChange,
}

/// What one pass found, to be written as the status.
struct Outcome {
    state: HostState,
    power: Option<PowerState>,
    hardware: Option<HostHardware>,
    /// `BMCAccessible`, unless the pass did not talk to the BMC (then the last one is kept).
    bmc: Option<Observed>,
    ready: Observed,
    next: Next,
    /// The BMC failure that ended the pass early (its class decides the retry).
    failure: Option<RedfishError>,
}

async fn reconcile(
    host: Arc<KubeZeroHost>,
    context: Arc<Context>,
    state: Arc<State>,
) -> Result<Action, ProviderError> {
    let _timer = context.metrics.reconcile(CONTROLLER);
    let name = host.name_any();
    let namespace = namespace_of(host.as_ref())?;
    let span = tracing::info_span!("reconcile", controller = CONTROLLER, %namespace, %name);
    async {
        let api: Api<KubeZeroHost> = Api::namespaced(context.client.clone(), &namespace);
        if host.meta().deletion_timestamp.is_some() {
            return delete(&api, &context, &state, &host, &namespace).await;
        }
        if finalizers::add(&api, host.as_ref(), HOST_FINALIZER)
            .await
            .map_err(Error::write("update", "KubeZeroHost", &namespace, &name))?
        {
            // The write wakes the host again, now with its finalizer.
            return Ok(Action::await_change());
        }
        let outcome = observe(&host, &context, &state, &namespace).await?;
        let previous = host.status.clone().unwrap_or_default();
        let observed: Vec<Observed> = outcome
            .bmc
            .iter()
            .cloned()
            .chain([outcome.ready.clone()])
            .collect();
        let status = KubeZeroHostStatus {
            state: Some(outcome.state),
            power_state: outcome.power.or(previous.power_state),
            hardware: outcome.hardware.clone().or(previous.hardware.clone()),
            provisioning: previous.provisioning.clone(),
            conditions: Vec::new(),
        };
        write_conditions(
            &api,
            host.as_ref(),
            &context,
            FIELD_MANAGER,
            &observed,
            &[BMC_ACCESSIBLE_CONDITION],
            |conditions| KubeZeroHostStatus {
                conditions,
                ..status.clone()
            },
        )
        .await?;
        if previous.state != Some(outcome.state) {
            report_transition(&context, &host, previous.state, &outcome).await;
        }
        if let Some(failure) = outcome.failure {
            let object = describe("KubeZeroHost", &namespace, &name);
            return Err(ProviderError::Cloud {
                object,
                class: failure.kind.class(),
                message: failure.to_string(),
            });
        }
        Ok(match outcome.next {
            Next::Poll => Action::requeue(state.settings.poll_interval),
            Next::Soon => Action::requeue(POWER_CHANGE_REQUEUE),
            Next::OnChange => Action::await_change(),
        })
    }
    .instrument(span)
    .await
}

/// Lets a deleted host go once no machine holds it; a claimed host waits for its release (which
/// changes the host and so wakes this controller).
async fn delete(
    api: &Api<KubeZeroHost>,
    context: &Context,
    state: &State,
    host: &KubeZeroHost,
    namespace: &str,
) -> Result<Action, ProviderError> {
    if let Some(consumer) = &host.spec.consumer_ref {
        let message = format!(
            "deletion waits until KubeZeroMachine {namespace}/{} releases the host",
            consumer.name
        );
        let ready = Observed::false_(READY_CONDITION, reasons::DELETION_HELD, message);
        let status = host.status.clone().unwrap_or_default();
        write_conditions(
            api,
            host,
            context,
            FIELD_MANAGER,
            &[ready],
            &[BMC_ACCESSIBLE_CONDITION],
            |conditions| KubeZeroHostStatus { conditions, ..status },
        )
        .await?;
        return Ok(Action::await_change());
    }
    state.redfish.forget(&host.spec.bmc.address);
    state.forget_power_request(host);
    finalizers::remove(api, host, HOST_FINALIZER)
        .await
        .map_err(Error::write(
            "update",
            "KubeZeroHost",
            namespace,
            &host.name_any(),
        ))?;
    Ok(Action::await_change())
}

/// Registers, inspects and settles the host; BMC failures become the outcome, Kubernetes failures
/// the error.
async fn observe(
    host: &KubeZeroHost,
    context: &Context,
    state: &State,
    namespace: &str,
) -> Result<Outcome, Error> {
    let previous_state = host.status.as_ref().and_then(|status| status.state);
    let claimed = host.spec.consumer_ref.is_some();
    // The state a failed pass leaves: a claimed host keeps its state whatever the BMC does (its
    // server may be running a node), a registered one keeps it while the BMC is unreachable, and a
    // lasting refusal (credentials, address) puts an unclaimed host in Error. Ready says why.
    let failed_state = |retryable: bool| match previous_state {
        Some(previous) if claimed => previous,
        Some(previous) if retryable && previous != HostState::Error => previous,
        _ if retryable => HostState::Registering,
        _ => HostState::Error,
    };
    if host.annotations().contains_key(DETACHED_ANNOTATION) {
        let why = format!("annotation {DETACHED_ANNOTATION} is set: no BMC requests, not claimable");
        return Ok(Outcome {
            state: previous_state.unwrap_or(HostState::Registering),
            power: None,
            hardware: None,
            bmc: None,
            ready: Observed::false_(READY_CONDITION, reasons::DETACHED, why),
            next: Next::OnChange,
            failure: None,
        });
    }

    let credentials = match credentials(context, host, namespace).await? {
        Ok(credentials) => credentials,
        Err((reason, message)) => {
            let state = failed_state(reason == reasons::CREDENTIALS_MISSING);
            return Ok(Outcome::refused(state, reason, &message, None));
        }
    };
    let verify_tls = !host.spec.bmc.disable_certificate_verification;
    let bmc = match state
        .redfish
        .bmc(&host.spec.bmc.address, &credentials, verify_tls)
    {
        Ok(bmc) => bmc,
        Err(error) => {
            return Ok(Outcome::refused(
                failed_state(false),
                error.reason(),
                &error.to_string(),
                Some(error),
            ));
        }
    };
    let system = match bmc.system().await {
        Ok(system) => system,
        Err(error) => {
            let state = failed_state(error.kind.is_retryable());
            return Ok(Outcome::refused(
                state,
                error.reason(),
                &error.to_string(),
                Some(error),
            ));
        }
    };
    let bmc_ok = Some(Observed::true_(
        BMC_ACCESSIBLE_CONDITION,
        reasons::BMC_ACCESSIBLE,
        bmc.authority().to_string(),
    ));

    let inspected = host
        .status
        .as_ref()
        .and_then(|status| status.hardware.clone())
        .filter(|hardware| hardware.bmc_address == host.spec.bmc.address);
    let hardware = match inspected {
        Some(hardware) => hardware,
        None => match inspect(host, &bmc, &system).await {
            Ok(hardware) => hardware,
            Err(error) => {
                let ready = Observed::false_(READY_CONDITION, error.reason(), error.to_string());
                return Ok(Outcome {
                    state: if error.kind.is_retryable() {
                        HostState::Inspecting
                    } else {
                        HostState::Error
                    },
                    power: Some(power_state(system.power)),
                    hardware: None,
                    bmc: bmc_ok,
                    ready,
                    next: Next::Poll,
                    failure: Some(error),
                });
            }
        },
    };
    if let Some((reason, message)) = unusable(host, &hardware) {
        return Ok(Outcome {
            state: HostState::Error,
            power: Some(power_state(system.power)),
            hardware: Some(hardware),
            bmc: bmc_ok,
            ready: Observed::false_(READY_CONDITION, reason, message),
            next: Next::OnChange,
            failure: None,
        });
    }

    let mut next = if matches!(system.power, Power::PoweringOn | Power::PoweringOff) {
        Next::Soon
    } else {
        Next::Poll
    };
    if !claimed {
        match settle_power(host, state, &bmc, &system).await {
            Ok(true) => next = Next::Soon,
            Ok(false) => {}
            Err(error) => {
                return Ok(Outcome {
                    state: HostState::Available,
                    power: Some(power_state(system.power)),
                    hardware: Some(hardware),
                    bmc: bmc_ok,
                    ready: Observed::false_(READY_CONDITION, error.reason(), error.to_string()),
                    next: Next::Poll,
                    failure: Some(error),
                });
            }
        }
    }
    let ready = Observed::true_(
        READY_CONDITION,
        reasons::AVAILABLE,
        "registered and inspected; in the pool",
    );
    Ok(Outcome {
        state: if claimed {
            previous_state.unwrap_or(HostState::Available)
        } else {
            HostState::Available
        },
        power: Some(power_state(system.power)),
        hardware: Some(hardware),
        bmc: bmc_ok,
        ready,
        next,
        failure: None,
    })
}

impl Outcome {
    /// A pass that ended at the BMC or its credentials with `reason`.
    fn refused(state: HostState, reason: &str, message: &str, failure: Option<RedfishError>) -> Self {
        Self {
            state,
            power: None,
            hardware: None,
            bmc: Some(Observed::false_(BMC_ACCESSIBLE_CONDITION, reason, message)),
            ready: Observed::false_(READY_CONDITION, reason, message),
            next: Next::Poll,
            failure,
        }
    }
}

/// The credentials from the host's Secret, or why there are none (reason, message).
async fn credentials(
    context: &Context,
    host: &KubeZeroHost,
    namespace: &str,
) -> Result<Result<Credentials, (&'static str, String)>, Error> {
    let name = &host.spec.bmc.credentials_name;
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), namespace);
    let Some(secret) = secrets
        .get_opt(name)
        .await
        .map_err(Error::read("Secret", namespace, name))?
    else {
        return Ok(Err((
            reasons::CREDENTIALS_MISSING,
            format!("Secret {namespace}/{name} does not exist"),
        )));
    };
    let data = secret.data.unwrap_or_default();
    let value = |key: &str| {
        data.get(key)
            .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
            .filter(|value| !value.is_empty())
    };
    let (Some(username), Some(password)) = (value("username"), value("password")) else {
        return Ok(Err((
            reasons::CREDENTIALS_INVALID,
            format!("Secret {namespace}/{name} needs non-empty keys username and password"),
        )));
    };
    let method = match host.spec.bmc.auth_method {
        BmcAuthMethod::Basic => AuthMethod::Basic,
        BmcAuthMethod::Session => AuthMethod::Session,
    };
    Ok(Ok(Credentials {
        username,
        password,
        method,
    }))
}

/// Reads the NICs and virtual-media slots (again whenever the host's BMC address changes).
async fn inspect(host: &KubeZeroHost, bmc: &Bmc, system: &System) -> Result<HostHardware, RedfishError> {
    let mac_addresses = bmc.mac_addresses(system).await?;
    let media_slots = bmc
        .media_slots(system)
        .await?
        .into_iter()
        .map(|slot| MediaSlotInfo {
            media: slot
                .kinds
                .iter()
                .map(|kind| match kind {
                    MediaKind::Cd => "CD".to_string(),
                    MediaKind::Usb => "USB".to_string(),
                })
                .collect(),
            id: slot.id,
        })
        .collect();
    Ok(HostHardware {
        mac_addresses,
        media_slots,
        boot_mode: system.boot_mode.clone(),
        bmc_address: host.spec.bmc.address.clone(),
    })
}

/// Why the inspected host cannot be used (reason, message), if it cannot.
fn unusable(host: &KubeZeroHost, hardware: &HostHardware) -> Option<(&'static str, String)> {
    let boot_mac = host.spec.boot_mac_address.to_ascii_lowercase();
    if !hardware.mac_addresses.contains(&boot_mac) {
        return Some((
            reasons::BOOT_MAC_NOT_FOUND,
            format!(
                "bootMACAddress {boot_mac} is none of the host's NICs ({})",
                hardware.mac_addresses.join(", ")
            ),
        ));
    }
    if !hardware.media_slots.iter().any(|slot| !slot.media.is_empty()) {
        return Some((
            reasons::NO_VIRTUAL_MEDIA,
            "the BMC has no virtual-media slot for CD or USB images".to_string(),
        ));
    }
    None
}

/// Powers an unclaimed host on or off as `spec.online` says; true while a change is under way.
async fn settle_power(
    host: &KubeZeroHost,
    state: &State,
    bmc: &Bmc,
    system: &System,
) -> Result<bool, RedfishError> {
    let wanted = match (host.spec.online, system.power) {
        (true, Power::Off) => ResetKind::On,
        (false, Power::On) => ResetKind::ForceOff,
        _ => {
            state.forget_power_request(host);
            return Ok(false);
        }
    };
    if state.power_request_pending(host, wanted) {
        return Ok(true);
    }
    info!(
        reset = wanted.as_str(),
        online = host.spec.online,
        "setting the power of an unclaimed host"
    );
    bmc.reset(system, wanted).await?;
    state.record_power_request(host, wanted);
    Ok(true)
}

impl State {
    fn power_request_pending(&self, host: &KubeZeroHost, wanted: ResetKind) -> bool {
        let requests = self.power_requests.lock().unwrap_or_else(|p| p.into_inner());
        requests
            .get(&host.uid().unwrap_or_default())
            .is_some_and(|(kind, at)| *kind == wanted && at.elapsed() < POWER_REQUEST_PATIENCE)
    }

    fn record_power_request(&self, host: &KubeZeroHost, wanted: ResetKind) {
        let mut requests = self.power_requests.lock().unwrap_or_else(|p| p.into_inner());
        requests.insert(host.uid().unwrap_or_default(), (wanted, Instant::now()));
    }

    fn forget_power_request(&self, host: &KubeZeroHost) {
        let mut requests = self.power_requests.lock().unwrap_or_else(|p| p.into_inner());
        requests.remove(&host.uid().unwrap_or_default());
    }
}

/// The API's power state for a Redfish one.
fn power_state(power: Power) -> PowerState {
    match power {
        Power::On => PowerState::On,
        Power::Off => PowerState::Off,
        Power::PoweringOn => PowerState::PoweringOn,
        Power::PoweringOff => PowerState::PoweringOff,
        Power::Unknown => PowerState::Unknown,
    }
}

/// Publishes the Event of a state change (Warning into `Error`).
async fn report_transition(
    context: &Context,
    host: &KubeZeroHost,
    from: Option<HostState>,
    outcome: &Outcome,
) {
    let to = outcome.state;
    let from = from.map_or_else(|| "new".to_string(), |state| format!("{state:?}"));
    let event = Event {
        type_: if to == HostState::Error {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: format!("{to:?}"),
        note: Some(format!("{from} -> {to:?}: {}", outcome.ready.message)),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(error) = context.recorder.publish(&event, &host.object_ref(&())).await {
        tracing::warn!(%error, "unable to publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(boot_mac: &str) -> KubeZeroHost {
        serde_json::from_value(json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroHost",
            "metadata": {"name": "h1", "namespace": "metal", "uid": "u1"},
            "spec": {"bmc": {"address": "https://10.0.0.5", "credentialsName": "h1-bmc"},
                     "bootMACAddress": boot_mac}
        }))
        .unwrap()
    }

    fn hardware(macs: &[&str], media: &[&str]) -> HostHardware {
        HostHardware {
            mac_addresses: macs.iter().map(|mac| mac.to_string()).collect(),
            media_slots: vec![MediaSlotInfo {
                id: "Cd".into(),
                media: media.iter().map(|m| m.to_string()).collect(),
            }],
            boot_mode: None,
            bmc_address: "https://10.0.0.5".into(),
        }
    }

    #[test]
    fn the_boot_mac_must_be_a_nic_and_a_media_slot_must_exist() {
        let found = hardware(&["52:54:00:aa:bb:cc", "52:54:00:aa:bb:cd"], &["CD"]);
        assert_eq!(unusable(&host("52:54:00:AA:BB:CD"), &found), None);
        let (reason, message) = unusable(&host("52:54:00:00:00:01"), &found).unwrap();
        assert_eq!(reason, reasons::BOOT_MAC_NOT_FOUND);
        assert!(message.contains("52:54:00:aa:bb:cc"), "{message}");
        let no_media = hardware(&["52:54:00:aa:bb:cc"], &[]);
        assert_eq!(
            unusable(&host("52:54:00:aa:bb:cc"), &no_media).unwrap().0,
            reasons::NO_VIRTUAL_MEDIA
        );
    }

    #[test]
    fn power_requests_are_not_repeated_while_pending() {
        let state = State {
            redfish: Arc::new(Redfish::new(Default::default())),
            settings: HostSettings::default(),
            power_requests: Mutex::new(HashMap::new()),
        };
        let host = host("52:54:00:aa:bb:cc");
        assert!(!state.power_request_pending(&host, ResetKind::On));
        state.record_power_request(&host, ResetKind::On);
        assert!(state.power_request_pending(&host, ResetKind::On));
        assert!(!state.power_request_pending(&host, ResetKind::ForceOff));
        state.forget_power_request(&host);
        assert!(!state.power_request_pending(&host, ResetKind::On));
    }

    #[test]
    fn secrets_wake_the_hosts_that_use_them() {
        let (reader, mut writer) = kube::runtime::reflector::store::<KubeZeroHost>();
        let mine = host("52:54:00:aa:bb:cc");
        let mut other = host("52:54:00:aa:bb:cc");
        other.metadata.name = Some("h2".into());
        other.spec.bmc.credentials_name = "other".into();
        for object in [mine, other] {
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        let secret: PartialObjectMeta<Secret> = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "h1-bmc", "namespace": "metal"}
        }))
        .unwrap();
        let woken = hosts_using(&reader, &secret);
        assert_eq!(woken.len(), 1);
        assert_eq!(woken[0].name, "h1");
    }
}
