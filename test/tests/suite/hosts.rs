//! The KubeZeroHost controller in the test world, against sushy-tools behind Basic auth: hosts
//! register and inspect into `Available`, power follows `spec.online`, a wrong password is
//! `BMCAuthFailed` until the Secret is fixed, a boot MAC the server lacks is `BootMACNotFound`, an
//! unreachable BMC keeps the host `Registering`, and the detached annotation stops all BMC traffic.
//! Claims: machines racing for fewer hosts claim distinct hosts, by resourceVersion precondition.
//! Faults: behind a proxy failing a tenth of the BMC requests and timing out another tenth, every
//! host still ends Available with its power as its spec says.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
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
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": "rack-1", "pool": "metal"}},
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
            // Pointed at another server: inspected again, and its boot MAC is none of that server's NICs.
            let moved = json!({"spec": {"bmc": {"address": good.0}}});
            hosts
                .patch("auth", &PatchParams::default(), &Patch::Merge(&moved))
                .await
                .unwrap();
            let reinspected = host_becomes(&hosts, "auth", "BootMACNotFound after the move", |h| {
                ready_reason(h) == "BootMACNotFound"
            })
            .await;
            let hardware = reinspected.status.and_then(|s| s.hardware).unwrap();
            assert_eq!(
                (hardware.mac_addresses, hardware.bmc_address),
                (systems[0].macs.clone(), good.0.clone())
            );
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

/// An Available, Ready host as the host controller leaves it (written here directly: no manager runs).
async fn available_host(hosts: &Api<KubeZeroHost>, name: &str, zone: &str) {
    let mut object = host(name, "https://10.0.0.5", "bmc", "52:54:00:aa:bb:cc", false);
    object
        .labels_mut()
        .insert("topology.kubernetes.io/zone".into(), zone.into());
    hosts.create(&PostParams::default(), &object).await.unwrap();
    let status = json!({"status": {"state": "Available", "conditions": [{"type": "Ready", "status": "True",
        "reason": "Available", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    hosts
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_machines_racing_for_ten_hosts_claim_ten_distinct_hosts() {
    use kubezero_provider::controllers::machine::claim::{Claim, ClaimRequest, claim, release};
    let world = kubezero_test::world::World::start()
        .await
        .expect("the world starts");
    let hosts: Api<KubeZeroHost> = Api::namespaced(world.client(), world.namespace());
    for i in 0..10 {
        available_host(
            &hosts,
            &format!("host-{i:02}"),
            if i < 5 { "rack-1" } else { "rack-2" },
        )
        .await;
    }
    // The selector must select at least one label (CRD rule); all ten hosts carry this one.
    let any_rack = BTreeMap::from([("pool".to_string(), "metal".to_string())]);

    let race = (0..20).map(|i| {
        let hosts = hosts.clone();
        let any_rack = any_rack.clone();
        async move {
            let machine = format!("m-{i:02}");
            let uid = format!("uid-{i:02}");
            let request = ClaimRequest {
                machine: &machine,
                machine_uid: &uid,
                match_labels: &any_rack,
                zone: None,
            };
            (uid.clone(), claim(&hosts, &request).await.unwrap())
        }
    });
    let outcomes = futures::future::join_all(race).await;
    let mut claimed: Vec<(String, String)> = outcomes
        .iter()
        .filter_map(|(uid, outcome)| match outcome {
            Claim::Held(host) => Some((host.name_any(), uid.clone())),
            Claim::NoAvailableHost { .. } => None,
        })
        .collect();
    claimed.sort();
    let distinct: std::collections::BTreeSet<&String> = claimed.iter().map(|(host, _)| host).collect();
    assert_eq!(claimed.len(), 10, "{claimed:?}");
    assert_eq!(distinct.len(), 10, "one host claimed twice: {claimed:?}");
    // What the API server holds agrees: each host names exactly the machine that won it.
    for (host, uid) in &claimed {
        let stored = hosts.get(host).await.unwrap();
        assert_eq!(
            stored.spec.consumer_ref.as_ref().map(|c| c.uid.as_str()),
            Some(uid.as_str())
        );
    }
    let waiting = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Claim::NoAvailableHost { matching: 10 }))
        .count();
    assert_eq!(waiting, 10);

    // Claiming again finds the held host instead of a second one.
    let (host, uid) = &claimed[0];
    let request = ClaimRequest {
        machine: "again",
        machine_uid: uid,
        match_labels: &any_rack,
        zone: None,
    };
    match claim(&hosts, &request).await.unwrap() {
        Claim::Held(again) => assert_eq!(&again.name_any(), host),
        other => panic!("{other:?}"),
    }

    // A released host goes to the next machine, and only to one in its zone.
    let stored = hosts.get(host).await.unwrap();
    let zone = stored.labels()["topology.kubernetes.io/zone"].clone();
    assert!(release(&hosts, &stored, uid).await.unwrap());
    let elsewhere = if zone == "rack-1" { "rack-2" } else { "rack-1" };
    let wrong_zone = ClaimRequest {
        machine: "m-late",
        machine_uid: "uid-late",
        match_labels: &any_rack,
        zone: Some(("topology.kubernetes.io/zone", elsewhere)),
    };
    assert!(matches!(
        claim(&hosts, &wrong_zone).await.unwrap(),
        Claim::NoAvailableHost { matching: 5 }
    ));
    let right_zone = ClaimRequest {
        zone: Some(("topology.kubernetes.io/zone", zone.as_str())),
        ..wrong_zone
    };
    match claim(&hosts, &right_zone).await.unwrap() {
        Claim::Held(next) => assert_eq!(&next.name_any(), host),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_converge_when_a_tenth_of_bmc_requests_fail_and_a_tenth_time_out() {
    use kubezero_test::cloud::{BmcFaultConfig, BmcFaultProxy};
    let systems: Vec<FakeSystem> = (0..8).map(|i| FakeSystem::new(format!("f-{i}"))).collect();
    let sushy = Sushy::start_with_basic_auth(&systems, USER, PASSWORD).expect("sushy starts");
    let faults = BmcFaultConfig {
        seed: 14,
        server_error: 0.1,
        timeout: 0.1,
        slow: 0.05,
        hold: Duration::from_secs(3),
        slow_delay: Duration::from_millis(300),
    };
    let proxy = std::sync::Arc::new(BmcFaultProxy::start(sushy.addr(), faults).expect("the proxy starts"));
    let addresses: Vec<(String, String)> = systems
        .iter()
        .map(|s| {
            (
                format!("{}{}", proxy.url(), sushy.system_path(&s.uuid)),
                s.macs[0].clone(),
            )
        })
        .collect();
    let flags = [
        ("--host-poll-interval", "2s"),
        ("--redfish-request-timeout", "2s"),
    ];
    let seen = proxy.clone();
    with_managers_flags(Duration::from_secs(300), &flags, move |world| async move {
        let secrets: Api<Secret> = Api::namespaced(world.client(), world.namespace());
        let hosts: Api<KubeZeroHost> = Api::namespaced(world.client(), world.namespace());
        secrets
            .create(&PostParams::default(), &credentials("bmc", PASSWORD))
            .await
            .unwrap();
        for (i, (address, mac)) in addresses.iter().enumerate() {
            let object = host(&format!("f-{i}"), address, "bmc", mac, i % 2 == 0);
            hosts.create(&PostParams::default(), &object).await.unwrap();
        }
        eventually_within(
            "every host Available, the online ones On",
            Duration::from_secs(240),
            || async {
                let listed = hosts.list(&Default::default()).await.ok()?.items;
                let settled = listed.len() == 8
                    && listed.iter().all(|h| {
                        let status = h.status.as_ref();
                        let online = h.spec.online;
                        let power = status.and_then(|s| s.power_state);
                        state_of(h) == Some(HostState::Available)
                            && ready_reason(h) == "Available"
                            && power == Some(if online { PowerState::On } else { PowerState::Off })
                    });
                settled.then_some(())
            },
        )
        .await;
    })
    .await;
    let counts = seen.counts();
    assert!(
        counts.server_errors > 0 && counts.timeouts > 0,
        "faults were injected: {counts:?}"
    );
    eprintln!("BMC fault proxy: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_server_answers_only_the_current_provisioning_of_a_claimed_host() {
    use crate::support::{create, dynamic};
    use kubezero_provider::metal::media::{
        INSTALLER_REPORT_ANNOTATION, InstallerReport, MediaState, cidata_path, new_token, router,
        token_sha256,
    };
    let world = kubezero_test::world::World::start()
        .await
        .expect("the world starts");
    let view = world.view();
    let namespace = world.namespace().to_string();
    let user_data = b"#cloud-config\nruncmd: [kubeadm join]\n".to_vec();

    // The machine that holds the host: Machine -> bootstrap data Secret, KubeZeroMachine owned by it.
    let secrets: Api<Secret> = Api::namespaced(world.client(), &namespace);
    let mut data = credentials("m1-bootstrap", "unused");
    data.data = Some(BTreeMap::from([(
        "value".to_string(),
        ByteString(user_data.clone()),
    )]));
    secrets.create(&PostParams::default(), &data).await.unwrap();
    let machines = dynamic(&view, "cluster.x-k8s.io", "v1beta2", "Machine", "machines");
    create(&view, &machines, json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
        "metadata": {"name": "m1", "labels": {"cluster.x-k8s.io/cluster-name": "metal"}},
        "spec": {"clusterName": "metal", "bootstrap": {"dataSecretName": "m1-bootstrap"},
            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroMachine", "name": "m1"}}}))
    .await;
    let machine_uid = machines.get("m1").await.unwrap().metadata.uid.unwrap();
    let kzms = dynamic(
        &view,
        "infrastructure.cluster.x-k8s.io",
        "v1alpha1",
        "KubeZeroMachine",
        "kubezeromachines",
    );
    create(&view, &kzms, json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroMachine",
        "metadata": {"name": "m1", "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "name": "m1", "uid": machine_uid, "controller": true}]},
        "spec": {"metal": {"hostSelector": {"matchLabels": {"pool": "metal"}}}}}))
    .await;
    let kzm_uid = kzms.get("m1").await.unwrap().metadata.uid.unwrap();

    // A host claimed by it, provisioning with `token`.
    let token = new_token();
    let hosts: Api<KubeZeroHost> = Api::namespaced(world.client(), &namespace);
    let mut object = host("h1", "https://10.0.0.5", "bmc", "52:54:00:aa:bb:cc", false);
    object.spec.consumer_ref = Some(kubezero_provider::api::ConsumerRef {
        name: "m1".into(),
        uid: kzm_uid.clone(),
    });
    hosts.create(&PostParams::default(), &object).await.unwrap();
    let status = json!({"status": {"state": "Provisioning",
        "provisioning": {"machineUid": kzm_uid, "tokenSha256": token_sha256(&token)}}});
    hosts
        .patch_status("h1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(MediaState::new(world.client()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();

    let image = http
        .get(format!("{base}{}", cidata_path(&namespace, "h1", &token)))
        .send()
        .await
        .unwrap();
    assert_eq!(image.status(), 200);
    let image = image.bytes().await.unwrap();
    // ISO 9660: the primary volume descriptor at sector 16 names the volume `cidata`.
    assert_eq!(&image[32769..32774], b"CD001");
    assert!(
        String::from_utf8_lossy(&image[32808..32840])
            .trim_end()
            .eq_ignore_ascii_case("cidata")
    );
    let found = |needle: &[u8]| image.windows(needle.len()).any(|w| w == needle);
    assert!(found(&user_data), "the bootstrap data is on the medium");
    assert!(found(
        format!("instance-id: kubezero://{namespace}/h1").as_bytes()
    ));

    // Wrong token, wrong host, unknown phase.
    let status_of = |path: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            http.get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status_of(cidata_path(&namespace, "h1", &new_token())).await, 404);
    assert_eq!(status_of(cidata_path(&namespace, "h2", &token)).await, 404);
    let phase = |name: &str, token: &str, body: &'static str| {
        http.post(format!("{base}/media/{namespace}/h1/{token}/phase/{name}"))
            .body(body)
            .send()
    };
    assert_eq!(phase("installed", &token, "").await.unwrap().status(), 400);
    assert_eq!(phase("failed", &new_token(), "x").await.unwrap().status(), 404);

    // A report lands on the host as the annotation, for this provisioning.
    assert_eq!(
        phase("failed", &token, "checksum mismatch\n")
            .await
            .unwrap()
            .status(),
        204
    );
    let reported = hosts.get("h1").await.unwrap();
    assert!(reported.annotations().contains_key(INSTALLER_REPORT_ANNOTATION));
    let report = InstallerReport::of(&reported, &token_sha256(&token)).expect("a report for this token");
    assert_eq!(
        (report.phase.as_str(), report.reason.as_deref()),
        ("failed", Some("checksum mismatch"))
    );
    assert!(InstallerReport::of(&reported, &token_sha256(&new_token())).is_none());

    // Released: the same URL is 404.
    let released = json!({"spec": {"consumerRef": null}});
    hosts
        .patch("h1", &PatchParams::default(), &Patch::Merge(&released))
        .await
        .unwrap();
    assert_eq!(status_of(cidata_path(&namespace, "h1", &token)).await, 404);
}
