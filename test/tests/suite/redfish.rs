//! The provider's Redfish client against sushy-tools (a real Redfish service, fake driver): system
//! discovery from the address forms a KubeZeroHost accepts, NIC MACs, power, one-time boot
//! override, virtual media insert/eject (sushy downloads the image, as a BMC does), Basic
//! authentication, and the request counter. Every wait is bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kubezero_provider::metal::redfish::{
    AuthMethod, Bmc, BootTarget, Credentials, MediaKind, Power, Redfish, RedfishErrorKind, RedfishSettings,
    ResetKind,
};
use kubezero_test::cloud::{FakeSystem, Sushy};

/// sushy's fake driver applies a power change 1–11 s after the request.
const POWER_WAIT: Duration = Duration::from_secs(30);

fn settings() -> RedfishSettings {
    RedfishSettings {
        request_timeout: Duration::from_secs(10),
        retry_backoff: Duration::from_millis(100),
        ..RedfishSettings::default()
    }
}

fn anyone() -> Credentials {
    Credentials {
        username: "admin".into(),
        password: "password".into(),
        method: AuthMethod::Basic,
    }
}

async fn wait_for_power(bmc: &Bmc, want: Power) {
    let started = Instant::now();
    loop {
        let power = bmc.system().await.unwrap().power;
        if power == want {
            return;
        }
        assert!(
            started.elapsed() < POWER_WAIT,
            "still {power:?} after {POWER_WAIT:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A loopback HTTP server answering every GET with `body`, counting the requests.
async fn image_server(body: &'static [u8]) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            body
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_client_drives_a_sushy_system() {
    let host = FakeSystem::new("host-1");
    let sushy = Sushy::start(std::slice::from_ref(&host)).unwrap();
    let redfish = Redfish::new(settings());

    // The plain address finds the only system; the named one goes straight to it.
    let plain = redfish.bmc(&sushy.url(), &anyone(), true).unwrap();
    let found = plain.system().await.unwrap();
    assert_eq!(found.path, sushy.system_path(&host.uuid));
    let named = format!("redfish+{}{}", sushy.url(), sushy.system_path(&host.uuid));
    let bmc = redfish.bmc(&named, &anyone(), true).unwrap();
    let system = bmc.system().await.unwrap();
    assert_eq!(system.path, found.path);
    assert_eq!(system.power, Power::Off);
    assert_eq!(system.boot_mode.as_deref(), Some("UEFI"));

    assert_eq!(bmc.mac_addresses(&system).await.unwrap(), host.macs);

    // Virtual media: a CD slot and a USB/floppy slot; inserting makes sushy fetch the image.
    let slots = bmc.media_slots(&system).await.unwrap();
    let cd = slots
        .iter()
        .find(|slot| slot.takes(MediaKind::Cd))
        .expect("a CD slot")
        .clone();
    assert!(slots.iter().any(|slot| slot.takes(MediaKind::Usb)), "{slots:?}");
    assert_eq!(cd.image, None);
    let (images, hits) = image_server(b"not really an ISO").await;
    let url = format!("{images}/media/host-1/cidata.iso");
    bmc.insert_media(&cd, &url).await.unwrap();
    assert!(
        hits.load(Ordering::SeqCst) >= 1,
        "sushy downloads the inserted image"
    );
    let inserted = bmc.media_slots(&system).await.unwrap();
    let cd_now = inserted.iter().find(|slot| slot.id == cd.id).unwrap();
    assert_eq!(cd_now.image.as_deref(), Some(url.as_str()));
    bmc.eject_media(cd_now).await.unwrap();
    let ejected = bmc.media_slots(&system).await.unwrap();
    assert_eq!(ejected.iter().find(|slot| slot.id == cd.id).unwrap().image, None);

    // One-time boot override: Cd is offered, Usb is not (sushy's allowable values).
    bmc.boot_once(&system, BootTarget::Cd).await.unwrap();
    let boot = bmc.system().await.unwrap();
    assert_eq!(boot.boot_override.0.as_deref(), Some("Cd"));
    let refused = bmc.boot_once(&system, BootTarget::Usb).await.unwrap_err();
    assert_eq!(refused.kind, RedfishErrorKind::Unsupported, "{refused}");

    // Power on and off again.
    bmc.reset(&system, ResetKind::On).await.unwrap();
    wait_for_power(&bmc, Power::On).await;
    bmc.reset(&system, ResetKind::ForceOff).await.unwrap();
    wait_for_power(&bmc, Power::Off).await;

    let requests = redfish.requests();
    assert_eq!(
        requests.get(&("Reset", "204".to_string())),
        Some(&2),
        "{requests:?}"
    );
    assert!(
        requests.keys().all(|(_, code)| code.starts_with('2')),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_client_authenticates_and_classifies_refusals() {
    let hosts = [FakeSystem::new("host-a"), FakeSystem::new("host-b")];
    let sushy = Sushy::start_with_basic_auth(&hosts, "root", "calvin").unwrap();
    let redfish = Redfish::new(settings());
    let system_address = format!("{}{}", sushy.url(), sushy.system_path(&hosts[1].uuid));

    let right = Credentials {
        username: "root".into(),
        password: "calvin".into(),
        method: AuthMethod::Basic,
    };
    let bmc = redfish.bmc(&system_address, &right, true).unwrap();
    assert_eq!(bmc.system().await.unwrap().power, Power::Off);

    let wrong = Credentials {
        password: "wrong".into(),
        ..right.clone()
    };
    let refused = redfish
        .bmc(&system_address, &wrong, true)
        .unwrap()
        .system()
        .await
        .unwrap_err();
    assert_eq!(
        (refused.kind, refused.reason()),
        (RedfishErrorKind::Auth, "BMCAuthFailed"),
        "{refused}"
    );
    assert_eq!(
        redfish.requests().get(&("GetSystem", "401".to_string())),
        Some(&1),
        "no retry of a 401"
    );

    // Two systems and none named: the address must say which.
    let ambiguous = redfish
        .bmc(&sushy.url(), &right, true)
        .unwrap()
        .system()
        .await
        .unwrap_err();
    assert_eq!(ambiguous.kind, RedfishErrorKind::Address, "{ambiguous}");
    // A system that does not exist.
    let missing = format!("{}/redfish/v1/Systems/nope", sushy.url());
    let gone = redfish
        .bmc(&missing, &right, true)
        .unwrap()
        .system()
        .await
        .unwrap_err();
    assert_eq!(gone.kind, RedfishErrorKind::NotFound, "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_client_verifies_bmc_certificates_unless_told_not_to() {
    let host = FakeSystem::new("host-tls");
    let sushy = Sushy::start_with_tls(std::slice::from_ref(&host)).unwrap();
    assert!(sushy.url().starts_with("https://127.0.0.1:"));
    let redfish = Redfish::new(settings());
    let address = format!("{}{}", sushy.url(), sushy.system_path(&host.uuid));

    // The self-signed certificate is refused when verifying, before any request is answered.
    let refused = redfish
        .bmc(&address, &anyone(), true)
        .unwrap()
        .system()
        .await
        .unwrap_err();
    assert_eq!(refused.kind, RedfishErrorKind::Unreachable, "{refused}");
    assert!(refused.to_string().contains("certificate"), "{refused}");

    let accepted = redfish.bmc(&address, &anyone(), false).unwrap();
    assert_eq!(accepted.system().await.unwrap().power, Power::Off);
}
