//! Tests of the cidata seed images: the renderers, the size caps, and the images read back by Debian's
//! xorriso, isoinfo, blkid and mtools and by cloud-init's own NoCloud datasource (Debian's cloud-init
//! under `/usr/bin/python3`). Missing tools fail the tests: install them with scripts/test-tools.sh.

use kubezero_capi::testing::require_tool;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use super::*;
use crate::api::Bmc;

const FORMATS: [MediaFormat; 2] = [MediaFormat::Iso9660, MediaFormat::Vfat];

/// The bootstrap script's reader of the provider ID (bootstrap/src/render/script.rs,
/// `NOCLOUD_PROVIDER_ID`), on the `meta-data` file given as `$1`.
const BOOT_SCRIPT_READER: &str = r#"sed -n 's/^instance-id:[[:space:]]*//p' "$1" | tr -d "\"' \r""#;

/// Reads the seed directory `$1/seed/nocloud` with cloud-init's NoCloud datasource (the code that reads
/// a mounted `cidata` filesystem), parses its network config into cloud-init's network state, writes
/// the user data it got to `$2` and prints what it found as JSON.
const CLOUD_INIT_READER: &str = r#"
import json, sys
from cloudinit import helpers
from cloudinit.net import network_state
from cloudinit.sources.DataSourceNoCloud import DataSourceNoCloud

cloud_dir, user_data_out = sys.argv[1], sys.argv[2]
paths = helpers.Paths({"cloud_dir": cloud_dir, "run_dir": cloud_dir + "/run"})
# fs_label None: no block-device scan, only the seed directories under paths.seed_dir.
ds = DataSourceNoCloud({"datasource": {"NoCloud": {"fs_label": None}}}, None, paths)
if not ds.get_data():
    sys.exit("cloud-init NoCloud found no seed under " + paths.seed_dir)
with open(user_data_out, "wb") as out:
    out.write(ds.get_userdata_raw())
state = None
if ds.network_config is not None:
    state = network_state.parse_net_config_data(ds.network_config, skip_broken=False)
print(json.dumps({
    "seed": ds.seed,
    "instance_id": ds.get_instance_id(),
    "local_hostname": ds.metadata.get("local-hostname"),
    "network_config": ds.network_config,
    "interfaces": None if state is None else list(state.iter_interfaces()),
}, default=str))
"#;

// --- renderers ---------------------------------------------------------------------------------------

#[test]
fn meta_data_puts_the_provider_id_on_the_line_the_boot_script_reads() {
    let long_namespace = "n".repeat(63);
    let long_host = format!("{}.{}", "h".repeat(126), "rack-01.example".repeat(8));
    assert!(long_host.len() <= 253);
    for (namespace, host) in [
        ("default", "node-01"),
        (long_namespace.as_str(), long_host.as_str()),
    ] {
        let text = MetaData::for_host(namespace, host).render().unwrap();
        let provider_id = format!("kubezero://{namespace}/{host}");

        let parsed: BTreeMap<String, String> = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            BTreeMap::from([
                ("instance-id".to_owned(), provider_id.clone()),
                ("local-hostname".to_owned(), host.to_owned()),
            ])
        );
        assert_eq!(text.lines().count(), 2, "one line per key:\n{text}");

        let dir = TempDir::new("meta-data");
        let file = dir.path().join(META_DATA);
        std::fs::write(&file, &text).unwrap();
        let out = run(Command::new("sh")
            .args(["-c", BOOT_SCRIPT_READER, "sh"])
            .arg(&file));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{provider_id}\n"));
    }
}

#[test]
fn meta_data_refuses_values_the_boot_script_would_mangle() {
    for host in ["", "node 01", "node\"01", "node'01", "node\n01", "node\t01"] {
        let error = MetaData::for_host("default", host).render().unwrap_err();
        assert!(
            matches!(error, CidataError::InvalidMetaData { .. }),
            "{host:?}: {error}"
        );
    }
}

#[test]
fn network_config_matches_the_boot_nic_by_mac_with_gateways_and_dns() {
    let config = NetworkConfig::for_boot_nic("52:54:00:AB:CD:EF", &static_network()).unwrap();
    let text = config.render().unwrap();
    let parsed: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(parsed, expected_network_config("52:54:00:ab:cd:ef"), "{text}");
}

#[test]
fn network_config_without_gateways_or_dns_has_only_addresses() {
    let network = HostNetwork {
        addresses: vec!["192.168.1.10/24".into()],
        ..HostNetwork::default()
    };
    let text = NetworkConfig::for_boot_nic("52:54:00:12:34:56", &network)
        .unwrap()
        .render()
        .unwrap();
    let parsed: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(
        parsed,
        json!({"version": 2, "ethernets": {"boot": {
            "match": {"macaddress": "52:54:00:12:34:56"},
            "addresses": ["192.168.1.10/24"],
        }}})
    );
}

#[test]
fn network_config_refuses_what_it_cannot_render() {
    type Change = fn(&mut HostNetwork);
    let cases: [(&str, Change); 10] = [
        ("spec.network.addresses", |n| n.addresses.clear()),
        ("spec.network.addresses", |n| n.addresses[0] = "10.0.0.5".into()),
        ("spec.network.addresses", |n| {
            n.addresses[0] = "10.0.0.5/33".into()
        }),
        ("spec.network.addresses", |n| {
            n.addresses[0] = "10.0.0.5/+8".into()
        }),
        ("spec.network.addresses", |n| {
            n.addresses[1] = "2001:db8::5/129".into()
        }),
        ("spec.network.gateway4", |n| {
            n.gateway4 = Some("2001:db8::1".into())
        }),
        ("spec.network.gateway4", |n| {
            n.addresses.retain(|a| a.contains(':'))
        }),
        ("spec.network.gateway6", |n| {
            n.addresses.retain(|a| !a.contains(':'))
        }),
        ("spec.network.nameservers", |n| {
            n.nameservers.push("dns.example.com".into())
        }),
        ("spec.network.searchDomains", |n| {
            n.search_domains.push("-bad.example".into())
        }),
    ];
    for (field, change) in cases {
        let mut network = static_network();
        change(&mut network);
        match NetworkConfig::for_boot_nic("52:54:00:12:34:56", &network) {
            Err(CidataError::InvalidNetwork { field: got, .. }) => assert_eq!(got, field, "{network:?}"),
            other => panic!("{network:?}: expected an error at {field}, got {other:?}"),
        }
    }
    for mac in ["52:54:00:12:34", "52-54-00-12-34-56", "52:54:00:12:34:5g"] {
        let error = NetworkConfig::for_boot_nic(mac, &static_network()).unwrap_err();
        assert!(
            matches!(
                error,
                CidataError::InvalidNetwork {
                    field: "spec.bootMACAddress",
                    ..
                }
            ),
            "{mac}: {error}"
        );
    }
}

#[test]
fn host_seed_has_network_config_only_with_static_addresses() {
    let user_data = b"#alpine-config\n";
    let dhcp = SeedFiles::for_host("default", "node-01", &host_spec(None), user_data).unwrap();
    assert_eq!(dhcp.network_config, None);
    assert_eq!(
        dhcp.meta_data,
        MetaData::for_host("default", "node-01").render().unwrap()
    );
    assert_eq!(dhcp.user_data, user_data);

    let fixed = SeedFiles::for_host(
        "default",
        "node-01",
        &host_spec(Some(static_network())),
        user_data,
    )
    .unwrap();
    let parsed: Value = serde_saphyr::from_str(fixed.network_config.as_deref().unwrap()).unwrap();
    assert_eq!(parsed, expected_network_config("52:54:00:12:34:56"));
}

#[test]
fn images_refuse_files_over_the_caps() {
    let too_much = vec![b'x'; MAX_USER_DATA_BYTES + 1];
    let big_meta = "x".repeat(MAX_CONFIG_BYTES + 1);
    for format in FORMATS {
        let mut seed = seed_files(&too_much, true);
        match build_image(&seed, format) {
            Err(CidataError::TooLarge { file, size, limit }) => {
                assert_eq!(
                    (file, size, limit),
                    (USER_DATA, MAX_USER_DATA_BYTES + 1, MAX_USER_DATA_BYTES)
                )
            }
            other => panic!("{format:?}: expected TooLarge, got {other:?}"),
        }
        seed.user_data = b"";
        seed.network_config = Some(big_meta.clone());
        assert!(
            matches!(
                build_image(&seed, format),
                Err(CidataError::TooLarge {
                    file: NETWORK_CONFIG,
                    ..
                })
            ),
            "{format:?}"
        );
    }
}

#[test]
fn vfat_images_of_equal_seeds_are_equal() {
    let user_data = sample_user_data(10_000);
    let seed = seed_files(&user_data, true);
    let first = build_image(&seed, MediaFormat::Vfat).unwrap();
    assert_eq!(first, build_image(&seed, MediaFormat::Vfat).unwrap());
    let other = SeedFiles {
        meta_data: MetaData::for_host("default", "node-02").render().unwrap(),
        ..seed
    };
    assert_ne!(first, build_image(&other, MediaFormat::Vfat).unwrap());
}

// --- images read back with Debian's tools ------------------------------------------------------------

#[test]
fn iso_image_reads_back_with_xorriso_isoinfo_and_blkid() {
    for tool in ["xorriso", "isoinfo", "blkid"] {
        require_tool(tool);
    }
    let user_data = sample_user_data(300 << 10);
    let seed = seed_files(&user_data, true);
    let dir = TempDir::new("iso");
    let image = dir.path().join("cidata.iso");
    std::fs::write(&image, build_image(&seed, MediaFormat::Iso9660).unwrap()).unwrap();

    let descriptor = stdout(run(Command::new("isoinfo").arg("-d").arg("-i").arg(&image)));
    assert!(descriptor.contains("Volume id: cidata\n"), "{descriptor}");
    assert!(descriptor.contains("Rock Ridge signatures"), "{descriptor}");
    assert!(descriptor.contains("Joliet"), "{descriptor}");
    assert_eq!(
        blkid(&image),
        BTreeMap::from([("LABEL", "cidata".to_owned()), ("TYPE", "iso9660".to_owned())])
    );

    // The names a Linux mount shows: Rock Ridge, and Joliet for readers without it.
    for extension in ["-R", "-J"] {
        let listing = stdout(run(Command::new("isoinfo")
            .args([extension, "-l", "-i"])
            .arg(&image)));
        assert_eq!(
            isoinfo_names(&listing),
            file_names(&seed),
            "isoinfo {extension}:\n{listing}"
        );
    }

    let extracted = dir.path().join("extracted");
    xorriso_extract(&image, &extracted);
    assert_files(&extracted, &seed);
}

#[test]
fn vfat_image_reads_back_with_mtools_and_blkid() {
    for tool in ["mcopy", "mlabel", "mdir", "blkid"] {
        require_tool(tool);
    }
    let user_data = sample_user_data(300 << 10);
    let seed = seed_files(&user_data, true);
    let dir = TempDir::new("vfat");
    let image = dir.path().join("cidata.img");
    std::fs::write(&image, build_image(&seed, MediaFormat::Vfat).unwrap()).unwrap();

    let label = stdout(run(Command::new("mlabel")
        .arg("-i")
        .arg(&image)
        .args(["-s", "::"])));
    assert_eq!(label.trim(), "Volume label is cidata", "{label}");
    let probed = blkid(&image);
    assert_eq!(
        probed.get("LABEL").map(String::as_str),
        Some("cidata"),
        "{probed:?}"
    );
    assert_eq!(probed.get("TYPE").map(String::as_str), Some("vfat"), "{probed:?}");

    let listing = stdout(run(Command::new("mdir").arg("-i").arg(&image).args(["-b", "::"])));
    let names: BTreeSet<String> = listing
        .lines()
        .map(|line| line.trim().trim_start_matches("::/").to_owned())
        .filter(|name| !name.is_empty())
        .collect();
    assert_eq!(names, file_names(&seed), "{listing}");

    let extracted = dir.path().join("extracted");
    mtools_extract(&image, &extracted, &seed);
    assert_files(&extracted, &seed);
}

#[test]
fn images_carry_user_data_up_to_the_cap() {
    for tool in ["xorriso", "mcopy"] {
        require_tool(tool);
    }
    let user_data = sample_user_data(MAX_USER_DATA_BYTES);
    let seed = seed_files(&user_data, false);
    let dir = TempDir::new("cap");
    for format in FORMATS {
        let image = dir.path().join(format!("{format:?}"));
        std::fs::write(&image, build_image(&seed, format).unwrap()).unwrap();
        let extracted = dir.path().join(format!("{format:?}-extracted"));
        extract(format, &image, &extracted, &seed);
        assert_files(&extracted, &seed);
    }
}

// --- images read back by cloud-init -----------------------------------------------------------------

#[test]
fn cloud_init_nocloud_datasource_reads_the_seed() {
    for tool in ["xorriso", "mcopy"] {
        require_tool(tool);
    }
    let python = Path::new("/usr/bin/python3");
    assert!(
        python.exists(),
        "/usr/bin/python3 (Debian's, with cloud-init) is not installed: run scripts/test-tools.sh"
    );
    let user_data = sample_user_data(300 << 10);
    let spec = host_spec(Some(static_network()));
    let seed = SeedFiles::for_host("metal", "node-07", &spec, &user_data).unwrap();
    for format in FORMATS {
        let dir = TempDir::new(&format!("cloud-init-{format:?}"));
        let image = dir.path().join("cidata");
        std::fs::write(&image, build_image(&seed, format).unwrap()).unwrap();
        let cloud_dir = dir.path().join("cloud");
        extract(format, &image, &cloud_dir.join("seed").join("nocloud"), &seed);

        let user_data_seen = dir.path().join("user-data.seen");
        let out = Command::new(python)
            .args(["-c", CLOUD_INIT_READER])
            .arg(&cloud_dir)
            .arg(&user_data_seen)
            .output()
            .expect("run /usr/bin/python3");
        assert!(
            out.status.success(),
            "cloud-init's NoCloud reader failed for {format:?} (it needs Debian's cloud-init: \
             scripts/test-tools.sh):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let found: Value = serde_json::from_slice(&out.stdout).unwrap();

        assert_eq!(
            found["instance_id"], "kubezero://metal/node-07",
            "{format:?}: {found}"
        );
        assert_eq!(found["local_hostname"], "node-07", "{format:?}: {found}");
        assert_eq!(
            std::fs::read(&user_data_seen).unwrap(),
            user_data,
            "{format:?}: user data differs"
        );
        assert_eq!(
            found["network_config"],
            expected_network_config("52:54:00:12:34:56"),
            "{format:?}"
        );

        // cloud-init's network state: one physical NIC with the MAC, both addresses as static
        // subnets with their family's gateway, and the DNS settings on the first subnet.
        let interfaces = found["interfaces"].as_array().expect("interfaces");
        assert_eq!(interfaces.len(), 1, "{format:?}: {interfaces:?}");
        let nic = &interfaces[0];
        assert_eq!(nic["mac_address"], "52:54:00:12:34:56", "{nic}");
        let subnets: Vec<(String, String, String)> = nic["subnets"]
            .as_array()
            .expect("subnets")
            .iter()
            .map(|s| {
                let field = |key: &str| s[key].as_str().map(str::to_owned).unwrap_or_default();
                (
                    field("type"),
                    format!("{}/{}", field("address"), s["prefix"]),
                    field("gateway"),
                )
            })
            .collect();
        assert_eq!(
            subnets,
            [
                ("static".into(), "10.0.0.5/24".into(), "10.0.0.1".into()),
                ("static".into(), "2001:db8::5/64".into(), "2001:db8::1".into()),
            ],
            "{nic}"
        );
        let subnets = nic["subnets"].as_array().expect("subnets");
        assert_eq!(
            subnets[0]["dns_nameservers"],
            json!(["10.0.0.2", "2001:db8::53"]),
            "{nic}"
        );
        assert_eq!(subnets[0]["dns_search"], json!(["example.com"]), "{nic}");
    }
}

// --- helpers -----------------------------------------------------------------------------------------

fn static_network() -> HostNetwork {
    HostNetwork {
        addresses: vec!["10.0.0.5/24".into(), "2001:DB8:0::5/64".into()],
        gateway4: Some("10.0.0.1".into()),
        gateway6: Some("2001:db8:0:0::1".into()),
        nameservers: vec!["10.0.0.2".into(), "2001:db8::53".into()],
        search_domains: vec!["example.com".into()],
    }
}

/// The parsed `network-config` of [`static_network`] for the NIC `mac`.
fn expected_network_config(mac: &str) -> Value {
    json!({"version": 2, "ethernets": {"boot": {
        "match": {"macaddress": mac},
        "addresses": ["10.0.0.5/24", "2001:db8::5/64"],
        "gateway4": "10.0.0.1",
        "gateway6": "2001:db8::1",
        "nameservers": {"addresses": ["10.0.0.2", "2001:db8::53"], "search": ["example.com"]},
    }}})
}

fn host_spec(network: Option<HostNetwork>) -> KubeZeroHostSpec {
    KubeZeroHostSpec {
        bmc: Bmc {
            address: "https://10.0.0.100".into(),
            credentials_name: "node-bmc".into(),
            disable_certificate_verification: false,
            auth_method: Default::default(),
        },
        boot_mac_address: "52:54:00:12:34:56".into(),
        online: false,
        consumer_ref: None,
        root_device_hints: None,
        network,
    }
}

/// A seed of `default/node-01` with `user_data`, with or without the static network.
fn seed_files(user_data: &[u8], network: bool) -> SeedFiles<'_> {
    let spec = host_spec(network.then(static_network));
    SeedFiles::for_host("default", "node-01", &spec, user_data).unwrap()
}

/// `size` bytes of user data: a text header, then every byte value (the data may be gzip).
fn sample_user_data(size: usize) -> Vec<u8> {
    let mut data = b"#alpine-config\nruncmd: [\"true\"]\n".to_vec();
    data.extend((0..=255u8).cycle().take(size.saturating_sub(data.len())));
    data.truncate(size);
    data
}

fn file_names(seed: &SeedFiles<'_>) -> BTreeSet<String> {
    let mut names = BTreeSet::from([USER_DATA.to_owned(), META_DATA.to_owned()]);
    if seed.network_config.is_some() {
        names.insert(NETWORK_CONFIG.to_owned());
    }
    names
}

/// Asserts that `dir` holds exactly the files of `seed`, byte for byte.
fn assert_files(dir: &Path, seed: &SeedFiles<'_>) {
    let names: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, file_names(seed), "files in {}", dir.display());
    assert!(
        std::fs::read(dir.join(USER_DATA)).unwrap() == seed.user_data,
        "user-data differs"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join(META_DATA)).unwrap(),
        seed.meta_data
    );
    if let Some(network_config) = &seed.network_config {
        assert_eq!(
            &std::fs::read_to_string(dir.join(NETWORK_CONFIG)).unwrap(),
            network_config
        );
    }
}

fn extract(format: MediaFormat, image: &Path, into: &Path, seed: &SeedFiles<'_>) {
    match format {
        MediaFormat::Iso9660 => xorriso_extract(image, into),
        MediaFormat::Vfat => mtools_extract(image, into, seed),
    }
}

fn xorriso_extract(image: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    run(Command::new("xorriso")
        .arg("-indev")
        .arg(image)
        .args(["-osirrox", "on", "-extract", "/"])
        .arg(into));
}

fn mtools_extract(image: &Path, into: &Path, seed: &SeedFiles<'_>) {
    std::fs::create_dir_all(into).unwrap();
    for name in file_names(seed) {
        run(Command::new("mcopy")
            .arg("-i")
            .arg(image)
            .arg(format!("::{name}"))
            .arg(into.join(&name)));
    }
}

/// `LABEL` and `TYPE` as blkid probes them from the image (what cloud-init's device search uses).
fn blkid(image: &Path) -> BTreeMap<&'static str, String> {
    let out = stdout(run(Command::new("blkid").args(["-p", "-o", "export"]).arg(image)));
    ["LABEL", "TYPE"]
        .into_iter()
        .filter_map(|key| {
            out.lines()
                .find_map(|line| line.strip_prefix(&format!("{key}=")).map(|v| (key, v.to_owned())))
        })
        .collect()
}

/// File names of the root listing of `isoinfo -l` (the last column, without `.` and `..`).
fn isoinfo_names(listing: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| line.split_whitespace().last().map(str::to_owned))
        .collect()
}

/// Runs `command`, failing the test with its output when it does not succeed.
fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: Output) -> String {
    String::from_utf8(out.stdout).unwrap()
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("kubezero-cidata-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
