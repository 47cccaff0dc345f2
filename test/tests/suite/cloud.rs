//! The cloud emulator fixtures (`kubezero_test::cloud`) against their real servers from the venv
//! that `scripts/test-tools.sh` installs: moto answers EC2 Query API calls and serves the seeded
//! Alpine AMIs; sushy-tools powers a fake system on through Redfish; both processes are gone after
//! the fixture is dropped. Every wait is bounded.

use std::path::Path;
use std::time::{Duration, Instant};

use kubezero_test::cloud::{ALPINE_OWNER_ID, FakeSystem, Moto, Sushy, alpine_amis, http};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether process `pid` still exists (the fixtures reap their children, so no zombie remains).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// An EC2 Query API call to moto (see `Moto::ec2_query`); panics with moto's output on transport errors.
fn ec2(moto: &Moto, form: &str) -> http::Response {
    let response = moto
        .ec2_query(form)
        .unwrap_or_else(|e| panic!("{e}\nmoto output:\n{}", moto.output_tail()));
    assert_eq!(
        response.status,
        200,
        "{form}: {}\nmoto output:\n{}",
        response.text(),
        moto.output_tail()
    );
    response
}

#[test]
fn moto_serves_ec2_and_seeded_alpine_amis_then_stops_on_drop() {
    let started = Instant::now();
    let moto = Moto::builder().amis(alpine_amis()).start().unwrap();
    eprintln!("moto: answering after {:.1?}", started.elapsed());
    assert!(moto.endpoint_url().starts_with("http://127.0.0.1:"));
    let pid = moto.pid();
    assert!(alive(pid));

    let regions = ec2(&moto, "Action=DescribeRegions").text();
    assert!(
        regions.contains("<regionName>us-east-1</regionName>"),
        "{regions}"
    );
    let vpcs = ec2(&moto, "Action=DescribeVpcs").text();
    assert!(
        vpcs.contains("<isDefault>true</isDefault>"),
        "no default VPC: {vpcs}"
    );

    let lookup = format!(
        "Action=DescribeImages&Owner.1={ALPINE_OWNER_ID}\
         &Filter.1.Name=name&Filter.1.Value.1=alpine-3.22.2-aarch64-uefi-tiny-r*\
         &Filter.2.Name=architecture&Filter.2.Value.1=arm64"
    );
    let images = ec2(&moto, &lookup).text();
    assert!(
        images.contains("<name>alpine-3.22.2-aarch64-uefi-tiny-r0</name>")
            && images.contains("<imageId>ami-0a19e00000000222b</imageId>")
            && images.contains(&format!("<imageOwnerId>{ALPINE_OWNER_ID}</imageOwnerId>")),
        "seeded Alpine AMI missing: {images}"
    );
    assert_eq!(images.matches("<imageId>").count(), 1, "{images}");
    // The seed replaces moto's default images: nothing from Amazon's own account.
    let amazon = ec2(&moto, "Action=DescribeImages&Owner.1=137112412989").text();
    assert!(!amazon.contains("<imageId>"), "{amazon}");

    // reset() forgets created resources and keeps the seed.
    ec2(&moto, "Action=CreateVpc&CidrBlock=10.0.0.0/16");
    assert_eq!(
        ec2(&moto, "Action=DescribeVpcs")
            .text()
            .matches("<vpcId>")
            .count(),
        2
    );
    moto.reset().unwrap();
    assert_eq!(
        ec2(&moto, "Action=DescribeVpcs")
            .text()
            .matches("<vpcId>")
            .count(),
        1
    );
    assert!(ec2(&moto, &lookup).text().contains("ami-0a19e00000000222b"));

    let addr = moto.addr();
    drop(moto);
    assert!(!alive(pid), "moto_server (pid {pid}) still running after drop");
    assert!(
        http::get(addr, "/moto-api/", Duration::from_secs(1)).is_err(),
        "{addr} still answers after drop"
    );
}

/// The `PowerState` of system `id`.
fn power_state(sushy: &Sushy, id: &str) -> String {
    let response = http::get(sushy.addr(), &sushy.system_path(id), REQUEST_TIMEOUT).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    let system = response.json().unwrap();
    system["PowerState"].as_str().unwrap_or_default().to_string()
}

#[test]
fn sushy_lists_fake_systems_and_powers_one_on_then_stops_on_drop() {
    let systems = [FakeSystem::new("node-a"), FakeSystem::new("node-b").powered_on()];
    let started = Instant::now();
    let sushy = Sushy::start(&systems).unwrap();
    eprintln!("sushy: answering after {:.1?}", started.elapsed());
    assert!(sushy.url().starts_with("http://127.0.0.1:"));
    let pid = sushy.pid();
    assert!(alive(pid));

    let listing = http::get(sushy.addr(), "/redfish/v1/Systems", REQUEST_TIMEOUT).unwrap();
    assert_eq!(listing.status, 200, "{}", listing.text());
    let listing = listing.json().unwrap();
    let mut members: Vec<String> = listing["Members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["@odata.id"].as_str().unwrap().to_string())
        .collect();
    members.sort();
    let mut expected: Vec<String> = sushy
        .system_ids()
        .iter()
        .map(|id| sushy.system_path(id))
        .collect();
    expected.sort();
    assert_eq!(members, expected);

    let off = &systems[0].uuid;
    let system = http::get(sushy.addr(), &sushy.system_path(off), REQUEST_TIMEOUT)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(system["Name"], "node-a");
    assert_eq!(system["PowerState"], "Off");
    assert_eq!(power_state(&sushy, &systems[1].uuid), "On");

    let reset = http::request(
        sushy.addr(),
        "POST",
        &format!("{}/Actions/ComputerSystem.Reset", sushy.system_path(off)),
        &[("Content-Type", "application/json")],
        br#"{"ResetType": "On"}"#,
        REQUEST_TIMEOUT,
    )
    .unwrap();
    assert_eq!(reset.status, 204, "{}\n{}", reset.text(), sushy.output_tail());

    // Like hardware, the fake driver applies the change 1-11 s later.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        let state = power_state(&sushy, off);
        if state == "On" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{off} still {state} 30 s after Reset On\n{}",
            sushy.output_tail()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("sushy: power On after {:.1?}", started.elapsed());

    let (addr, dir) = (sushy.addr(), sushy.dir().to_path_buf());
    drop(sushy);
    assert!(!alive(pid), "sushy-emulator (pid {pid}) still running after drop");
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        http::get(addr, "/redfish/v1/Systems", Duration::from_secs(1)).is_err(),
        "{addr} still answers after drop"
    );
}
