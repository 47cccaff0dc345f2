//! The KubeZeroHost controller in the test world, against sushy-tools behind Basic auth: hosts
//! register and inspect into `Available`, power follows `spec.online`, a wrong password is
//! `BMCAuthFailed` until the Secret is fixed, a boot MAC the server lacks is `BootMACNotFound`, an
//! unreachable BMC keeps the host `Registering`, and the detached annotation stops all BMC traffic.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kubezero_capi::conditions::find;
use kubezero_provider::api::{HostState, KubeZeroHost, PowerState};
use kubezero_test::cloud::{FakeSystem, Sushy};
use serde_json::json;

use crate::support::{eventually_within, with_managers_flags};

const USER: &str = "root";
const PASSWORD: &str = "calvin";
/// sushy applies a power change 1–11 s after the request; the provider polls every 2 s here.
const HOST_WAIT: Duration = Duration::from_secs(60);

fn credentials(name: &str, password: &str) -> Secret {
    let data = BTreeMap::from([
        ("username".to_string(), ByteString(USER.as_bytes().to_vec())),
        ("password".to_string(), ByteString(password.as_bytes().to_vec())),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..Secret::default()
    }
}

fn host(name: &str, address: &str, secret: &str, boot_mac: &str, online: bool) -> KubeZeroHost {
    serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroHost",
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": "rack-1"}},
        "spec": {"bmc": {"address": address, "credentialsName": secret},
                 "bootMACAddress": boot_mac, "online": online}
    }))
    .unwrap()
}

/// The host's state and its Ready reason, once `check` accepts them.
async fn host_becomes(
    hosts: &Api<KubeZeroHost>,
    name: &str,
    what: &str,
    check: impl Fn(&KubeZeroHost) -> bool,
) -> KubeZeroHost {
    eventually_within(&format!("host {name}: {what}"), HOST_WAIT, || async {
        let host = hosts.get(name).await.ok()?;
        check(&host).then_some(host)
    })
    .await
}

fn state_of(host: &KubeZeroHost) -> Option<HostState> {
    host.status.as_ref().and_then(|status| status.state)
}

fn ready_reason(host: &KubeZeroHost) -> String {
    let conditions = host
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    find(conditions, "Ready")
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_register_inspect_and_follow_their_spec() {
    let systems = [
        FakeSystem::new("h-good"),
        FakeSystem::new("h-auth"),
        FakeSystem::new("h-mac"),
    ];
    let sushy = Sushy::start_with_basic_auth(&systems, USER, PASSWORD).expect("sushy starts");
    let address = |system: &FakeSystem| format!("redfish+{}{}", sushy.url(), sushy.system_path(&system.uuid));
    let good = (address(&systems[0]), systems[0].macs[0].clone());
    let auth = (address(&systems[1]), systems[1].macs[0].clone());
    let mac = address(&systems[2]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    with_managers_flags(
        Duration::from_secs(240),
        &[("--host-poll-interval", "2s")],
        move |world| async move {
            let secrets: Api<Secret> = Api::namespaced(world.client(), world.namespace());
            let hosts: Api<KubeZeroHost> = Api::namespaced(world.client(), world.namespace());
            let create = PostParams::default();
            secrets
                .create(&create, &credentials("bmc", PASSWORD))
                .await
                .unwrap();
            secrets
                .create(&create, &credentials("bmc-wrong", "nope"))
                .await
                .unwrap();
            for object in [
                host("good", &good.0, "bmc", &good.1, true),
                host("auth", &auth.0, "bmc-wrong", &auth.1, false),
                host("mac", &mac, "bmc", "52:54:00:00:00:01", false),
                host(
                    "gone",
                    &format!("http://127.0.0.1:{closed}"),
                    "bmc",
                    "52:54:00:00:00:02",
                    false,
                ),
                host("nosecret", &good.0, "absent", &good.1, false),
            ] {
                hosts.create(&create, &object).await.unwrap();
            }

            // Registered, inspected and powered on as spec.online asks.
            let ready = host_becomes(&hosts, "good", "Available and On", |h| {
                state_of(h) == Some(HostState::Available)
                    && h.status.as_ref().and_then(|s| s.power_state) == Some(PowerState::On)
            })
            .await;
            let hardware = ready.status.as_ref().and_then(|s| s.hardware.clone()).unwrap();
            assert_eq!(hardware.mac_addresses, systems[0].macs);
            assert!(
                hardware
                    .media_slots
                    .iter()
                    .any(|slot| slot.media.contains(&"CD".to_string())),
                "{hardware:?}"
            );
            assert_eq!(ready_reason(&ready), "Available");

            // Bad input, each with its reason.
            let refused = host_becomes(&hosts, "auth", "BMCAuthFailed", |h| {
                ready_reason(h) == "BMCAuthFailed"
            })
            .await;
            assert_eq!(state_of(&refused), Some(HostState::Error));
            let wrong_mac = host_becomes(&hosts, "mac", "BootMACNotFound", |h| {
                ready_reason(h) == "BootMACNotFound"
            })
            .await;
            assert_eq!(state_of(&wrong_mac), Some(HostState::Error));
            let gone = host_becomes(&hosts, "gone", "BMCUnreachable", |h| {
                ready_reason(h) == "BMCUnreachable"
            })
            .await;
            assert_eq!(state_of(&gone), Some(HostState::Registering));
            let absent = host_becomes(&hosts, "nosecret", "CredentialsMissing", |h| {
                ready_reason(h) == "CredentialsMissing"
            })
            .await;
            assert_eq!(state_of(&absent), Some(HostState::Registering));

            // Fixing the Secret recovers the host (the Secret change wakes it; no 5-minute auth backoff).
            let fixed = json!({"data": {"password": base64_of(PASSWORD)}});
            secrets
                .patch("bmc-wrong", &PatchParams::default(), &Patch::Merge(&fixed))
                .await
                .unwrap();
            host_becomes(&hosts, "auth", "Available after the Secret fix", |h| {
                state_of(h) == Some(HostState::Available)
            })
            .await;
            // The boot MAC fixed in the spec: Available without a new inspection.
            let spec = json!({"spec": {"bootMACAddress": systems[2].macs[0]}});
            hosts
                .patch("mac", &PatchParams::default(), &Patch::Merge(&spec))
                .await
                .unwrap();
            host_becomes(&hosts, "mac", "Available after the MAC fix", |h| {
                state_of(h) == Some(HostState::Available)
            })
            .await;

            // spec.online false powers the unclaimed host off.
            let offline = json!({"spec": {"online": false}});
            hosts
                .patch("good", &PatchParams::default(), &Patch::Merge(&offline))
                .await
                .unwrap();
            host_becomes(&hosts, "good", "Off", |h| {
                h.status.as_ref().and_then(|s| s.power_state) == Some(PowerState::Off)
            })
            .await;

            // Detached: out of the pool, Ready False with the reason.
            let detach = json!({"metadata": {"annotations": {"kubezero.io/detached": "replacing a DIMM"}}});
            hosts
                .patch("good", &PatchParams::default(), &Patch::Merge(&detach))
                .await
                .unwrap();
            let detached = host_becomes(&hosts, "good", "Detached", |h| ready_reason(h) == "Detached").await;
            assert_eq!(state_of(&detached), Some(HostState::Available));

            // Every transition was an Event.
            let events: Api<k8s_openapi::api::events::v1::Event> =
                Api::namespaced(world.client(), world.namespace());
            let reasons: Vec<String> = events
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("auth"))
                .filter_map(|e| e.reason)
                .collect();
            for reason in ["Error", "Available"] {
                assert!(
                    reasons.iter().any(|r| r == reason),
                    "no {reason} Event for host auth: {reasons:?}"
                );
            }
        },
    )
    .await;
}

fn base64_of(value: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(value)
}
