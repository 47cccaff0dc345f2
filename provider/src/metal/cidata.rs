//! NoCloud `cidata` seed images: the boot media that hands a bare-metal host its bootstrap data.
//!
//! cloud-init's NoCloud datasource and Alpine's tiny-cloud look for a filesystem labelled `cidata`
//! (ISO 9660 or VFAT) and read files from its root: `user-data` (here the bootstrap data), `meta-data`
//! (`instance-id`, which kubezero sets to the node's provider ID `kubezero://<namespace>/<host>`, and
//! `local-hostname`) and, for a host with static addresses, `network-config` (version 2).
//! [`SeedFiles::for_host`] renders the files and [`build_image`] writes them into an image; neither does
//! I/O, so the media server can build an image per request or keep one per provisioning.
//!
//! Two formats ([`MediaFormat`]):
//! - **ISO 9660**, for the CD slots of BMC virtual media (which generally take only ISO images), written
//!   by the `hadris-iso` crate with Rock Ridge and Joliet, the extensions `cloud-localds` asks
//!   `genisoimage` for. Plain ISO 9660 names are upper-case d-characters and `-` is not one of them, so
//!   without an extension `user-data` would be stored as `USER_DAT;1` and show up as `user_dat` on Linux.
//!   Linux uses the Rock Ridge names; Joliet serves readers without Rock Ridge. hadris-iso stamps the
//!   volume and directory records with the build time, so two builds differ in those bytes.
//! - **VFAT**, for USB slots: a FAT12/FAT16 filesystem with long names, written by the `fatfs` crate
//!   with fixed timestamps (1980-01-01), so equal seeds give equal bytes.
//!
//! The tests read both back with Debian's xorriso, isoinfo, blkid and mtools and with cloud-init's own
//! NoCloud datasource.

use std::collections::BTreeMap;
use std::io::{Cursor, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::api::{HostNetwork, KubeZeroHostSpec};

/// Volume label of every seed image (cloud-init also accepts `CIDATA`; the boot script asks for both).
pub const VOLUME_LABEL: &str = "cidata";
/// File name of the bootstrap data in the image.
pub const USER_DATA: &str = "user-data";
/// File name of the instance metadata in the image.
pub const META_DATA: &str = "meta-data";
/// File name of the static network configuration in the image.
pub const NETWORK_CONFIG: &str = "network-config";

/// Largest `user-data` an image carries: 16 MiB, far above real bootstrap data (a few hundred KiB at
/// most) and small enough to build in memory.
pub const MAX_USER_DATA_BYTES: usize = 16 << 20;
/// Largest `meta-data` or `network-config` an image carries (both are rendered from a few fields).
pub const MAX_CONFIG_BYTES: usize = 64 << 10;

/// Key of the boot NIC under `ethernets` in `network-config`; an ID only, the NIC is matched by MAC.
pub const BOOT_INTERFACE_ID: &str = "boot";

/// Filesystem of a seed image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaFormat {
    /// ISO 9660 with Rock Ridge and Joliet: a CD image, for virtual-media CD slots.
    Iso9660,
    /// FAT12/FAT16 with long file names: a disk image, for virtual-media USB slots.
    Vfat,
}

/// What building or rendering a seed image failed at.
#[derive(Debug, thiserror::Error)]
pub enum CidataError {
    /// A `meta-data` value is empty or holds characters the boot script's reader would drop.
    #[error("meta-data {field} {value:?} is empty or holds whitespace, quotes or control characters")]
    InvalidMetaData {
        /// The `meta-data` key.
        field: &'static str,
        /// The refused value.
        value: String,
    },
    /// A value of the host's `spec.network` (or its boot MAC) cannot go into `network-config`.
    #[error("network-config of the host: {field} {value:?} {problem}")]
    InvalidNetwork {
        /// Field of the host spec, e.g. `spec.network.addresses`.
        field: &'static str,
        /// The refused value.
        value: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// serde-saphyr could not write a document.
    #[error("rendering {file}: {source}")]
    Render {
        /// The file being rendered.
        file: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_saphyr::SerializeError,
    },
    /// A file is larger than an image carries ([`MAX_USER_DATA_BYTES`], [`MAX_CONFIG_BYTES`]).
    #[error("{file} is {size} bytes, more than the {limit} bytes a cidata image carries")]
    TooLarge {
        /// The file.
        file: &'static str,
        /// Its size.
        size: usize,
        /// The limit for that file.
        limit: usize,
    },
    /// hadris-iso could not write the ISO 9660 image.
    #[error("writing the ISO 9660 cidata image: {0}")]
    WriteIso(#[source] hadris_iso::write::IsoCreationError),
    /// fatfs could not format or fill the VFAT image.
    #[error("writing the VFAT cidata image ({step}): {source}")]
    WriteVfat {
        /// What was being written: `format`, a file name, or `unmount`.
        step: &'static str,
        /// fatfs' error.
        #[source]
        source: std::io::Error,
    },
}

/// The files of one seed image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedFiles<'a> {
    /// Contents of `user-data`: the bootstrap data, byte for byte.
    pub user_data: &'a [u8],
    /// Contents of `meta-data` ([`MetaData::render`]).
    pub meta_data: String,
    /// Contents of `network-config` ([`NetworkConfig::render`]); `None` leaves the file out (DHCP).
    pub network_config: Option<String>,
}

impl<'a> SeedFiles<'a> {
    /// The seed of KubeZeroHost `name` in `namespace`: `meta-data` names the host and its provider ID,
    /// `network-config` is there when `spec.network` is, and `user-data` is `user_data`.
    pub fn for_host(
        namespace: &str,
        name: &str,
        spec: &KubeZeroHostSpec,
        user_data: &'a [u8],
    ) -> Result<Self, CidataError> {
        let meta_data = MetaData::for_host(namespace, name).render()?;
        let network_config = spec
            .network
            .as_ref()
            .map(|network| NetworkConfig::for_boot_nic(&spec.boot_mac_address, network)?.render())
            .transpose()?;
        Ok(Self {
            user_data,
            meta_data,
            network_config,
        })
    }

    /// The files in image order, each checked against its size limit.
    fn checked_entries(&self) -> Result<Vec<(&'static str, &[u8])>, CidataError> {
        let mut entries = vec![
            (USER_DATA, self.user_data, MAX_USER_DATA_BYTES),
            (META_DATA, self.meta_data.as_bytes(), MAX_CONFIG_BYTES),
        ];
        if let Some(network_config) = &self.network_config {
            entries.push((NETWORK_CONFIG, network_config.as_bytes(), MAX_CONFIG_BYTES));
        }
        entries
            .into_iter()
            .map(|(file, contents, limit)| {
                if contents.len() > limit {
                    Err(CidataError::TooLarge {
                        file,
                        size: contents.len(),
                        limit,
                    })
                } else {
                    Ok((file, contents))
                }
            })
            .collect()
    }
}

/// Builds the bytes of a seed image labelled [`VOLUME_LABEL`] holding `seed`'s files in its root.
/// Refuses files over [`MAX_USER_DATA_BYTES`] / [`MAX_CONFIG_BYTES`].
pub fn build_image(seed: &SeedFiles<'_>, format: MediaFormat) -> Result<Vec<u8>, CidataError> {
    let entries = seed.checked_entries()?;
    match format {
        MediaFormat::Iso9660 => iso9660_image(&entries),
        MediaFormat::Vfat => vfat_image(&entries),
    }
}

/// An ISO 9660 image with Rock Ridge and Joliet names (see the module doc).
fn iso9660_image(entries: &[(&'static str, &[u8])]) -> Result<Vec<u8>, CidataError> {
    use hadris_iso::read::PathSeparator;
    use hadris_iso::write::options::{CreationFeatures, IsoFormatOptions};
    use hadris_iso::write::{InputEntry, InputTree, IsoImageWriter};

    let tree = InputTree {
        path_separator: PathSeparator::ForwardSlash,
        entries: entries
            .iter()
            .map(|(name, contents)| InputEntry::file(*name, contents.to_vec()))
            .collect(),
    };
    let options = IsoFormatOptions {
        volume_name: VOLUME_LABEL.to_owned(),
        system_id: None,
        volume_set_id: None,
        publisher_id: None,
        preparer_id: None,
        application_id: Some("KUBEZERO".to_owned()),
        sector_size: 2048,
        features: CreationFeatures::extensions(),
        path_separator: PathSeparator::ForwardSlash,
        // Keep the label lower-case, as genisoimage does with `-volid cidata`.
        strict_charset: false,
    };
    IsoImageWriter::create(Cursor::new(Vec::new()), tree, options)
        .map(Cursor::into_inner)
        .map_err(CidataError::WriteIso)
}

/// DOS timestamps of every VFAT entry: the first valid one, so equal seeds give equal images.
#[derive(Debug)]
struct FixedTime;

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static FIXED_TIME: FixedTime = FixedTime;

/// A FAT image with long names, sized for `entries` (fatfs picks FAT12 or FAT16 by size).
fn vfat_image(entries: &[(&'static str, &[u8])]) -> Result<Vec<u8>, CidataError> {
    const MIB: usize = 1 << 20;
    // Each file rounded up to 64 KiB (more than any cluster fatfs picks below 128 MiB), plus 1 MiB for
    // the boot sector, the FATs and the root directory, in whole MiB.
    let data: usize = entries
        .iter()
        .map(|(_, contents)| contents.len().div_ceil(64 << 10) * (64 << 10))
        .sum();
    let size = (data + MIB).div_ceil(MIB) * MIB;
    let mut label = [b' '; 11];
    label[..VOLUME_LABEL.len()].copy_from_slice(VOLUME_LABEL.as_bytes());

    let mut disk = Cursor::new(vec![0u8; size]);
    let format = fatfs::FormatVolumeOptions::new()
        .volume_label(label)
        .volume_id(volume_id(entries));
    fatfs::format_volume(&mut disk, format).map_err(|source| CidataError::WriteVfat {
        step: "format",
        source,
    })?;
    let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new().time_provider(&FIXED_TIME)).map_err(
        |source| CidataError::WriteVfat {
            step: "format",
            source,
        },
    )?;
    for (name, contents) in entries {
        let write = |fs: &fatfs::FileSystem<_>| -> std::io::Result<()> {
            let mut file = fs.root_dir().create_file(name)?;
            file.write_all(contents)?;
            file.flush()
        };
        write(&fs).map_err(|source| CidataError::WriteVfat { step: name, source })?;
    }
    fs.unmount().map_err(|source| CidataError::WriteVfat {
        step: "unmount",
        source,
    })?;
    Ok(disk.into_inner())
}

/// FAT volume serial number: FNV-1a over the files, so images of different hosts differ.
fn volume_id(entries: &[(&'static str, &[u8])]) -> u32 {
    entries
        .iter()
        .flat_map(|(name, contents)| name.bytes().chain(contents.iter().copied()))
        .fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        })
}

/// The `meta-data` file: who the instance is.
///
/// The boot script reads `instance-id` with `sed -n 's/^instance-id:[[:space:]]*//p'` and strips quotes,
/// so [`MetaData::render`] writes one `key: value` line per field, values plain or quoted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MetaData {
    /// NoCloud instance ID: the node's provider ID, `kubezero://<namespace>/<host>`.
    pub instance_id: String,
    /// Host name the OS sets: the KubeZeroHost's name.
    pub local_hostname: String,
}

impl MetaData {
    /// The metadata of KubeZeroHost `host` in `namespace`.
    pub fn for_host(namespace: &str, host: &str) -> Self {
        Self {
            instance_id: format!("kubezero://{namespace}/{host}"),
            local_hostname: host.to_owned(),
        }
    }

    /// The YAML of `meta-data`. Refuses values that are empty or hold whitespace, quotes or control
    /// characters (Kubernetes names never do; the boot script's reader would mangle them).
    pub fn render(&self) -> Result<String, CidataError> {
        for (field, value) in [
            ("instance-id", &self.instance_id),
            ("local-hostname", &self.local_hostname),
        ] {
            let unreadable = |c: char| c.is_whitespace() || c.is_control() || c == '"' || c == '\'';
            if value.is_empty() || value.contains(unreadable) {
                return Err(CidataError::InvalidMetaData {
                    field,
                    value: value.clone(),
                });
            }
        }
        yaml(META_DATA, self)
    }
}

/// The `network-config` file, version 2 (the netplan-style format cloud-init and tiny-cloud read):
/// static addresses, default gateways and DNS for the boot NIC, matched by its MAC address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetworkConfig {
    /// Format version: always 2.
    pub version: u8,
    /// Ethernet NICs by ID; kubezero writes one, [`BOOT_INTERFACE_ID`].
    pub ethernets: BTreeMap<String, Ethernet>,
}

/// One Ethernet NIC of [`NetworkConfig`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ethernet {
    /// Which NIC this is (`match`).
    #[serde(rename = "match")]
    pub matches: MacMatch,
    /// Static addresses with prefix length.
    pub addresses: Vec<String>,
    /// IPv4 default gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway4: Option<String>,
    /// IPv6 default gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// DNS servers and search domains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<Nameservers>,
}

/// Selects a NIC by MAC address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MacMatch {
    /// MAC address, lower-case, colon-separated.
    pub macaddress: String,
}

/// DNS settings of [`Ethernet`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Nameservers {
    /// DNS server addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// DNS search domains.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
}

impl NetworkConfig {
    /// The configuration of the NIC with MAC `boot_mac` from a host's `spec.network`. Checks what the
    /// CRD schema checks, and more: addresses and prefixes parse, a gateway has an address of its
    /// family; IPv6 addresses are written in canonical form.
    ///
    /// The default gateways go into `gateway4`/`gateway6`, not `routes`: netplan only deprecates those
    /// keys, while cloud-init 22.4 (Debian 12) knows no `to: default` and turns a `to: ::/0` route into
    /// `::/64` (it drops the zero prefix when it normalises the route a second time).
    pub fn for_boot_nic(boot_mac: &str, network: &HostNetwork) -> Result<Self, CidataError> {
        let invalid = |field, value: &str, problem| CidataError::InvalidNetwork {
            field,
            value: value.to_owned(),
            problem,
        };
        let is_mac = boot_mac.len() == 17
            && boot_mac.split(':').count() == 6
            && boot_mac
                .split(':')
                .all(|pair| pair.len() == 2 && pair.chars().all(|c| c.is_ascii_hexdigit()));
        if !is_mac {
            return Err(invalid(
                "spec.bootMACAddress",
                boot_mac,
                "is not a MAC address (six colon-separated hex pairs)",
            ));
        }
        if network.addresses.is_empty() {
            return Err(invalid("spec.network.addresses", "", "is empty"));
        }

        let mut addresses = Vec::with_capacity(network.addresses.len());
        let (mut has_v4, mut has_v6) = (false, false);
        for address in &network.addresses {
            let (ip, prefix) = parse_cidr(address).ok_or_else(|| {
                invalid(
                    "spec.network.addresses",
                    address,
                    "is not an IPv4 or IPv6 address with a prefix length (10.0.0.5/24, 2001:db8::5/64)",
                )
            })?;
            has_v4 |= ip.is_ipv4();
            has_v6 |= ip.is_ipv6();
            addresses.push(format!("{ip}/{prefix}"));
        }

        let gateway4 = network
            .gateway4
            .as_deref()
            .map(|gateway| {
                let ip: Ipv4Addr = gateway
                    .parse()
                    .map_err(|_| invalid("spec.network.gateway4", gateway, "is not an IPv4 address"))?;
                if !has_v4 {
                    return Err(invalid(
                        "spec.network.gateway4",
                        gateway,
                        "needs an IPv4 address in spec.network.addresses",
                    ));
                }
                Ok(ip.to_string())
            })
            .transpose()?;
        let gateway6 = network
            .gateway6
            .as_deref()
            .map(|gateway| {
                let ip: Ipv6Addr = gateway
                    .parse()
                    .map_err(|_| invalid("spec.network.gateway6", gateway, "is not an IPv6 address"))?;
                if !has_v6 {
                    return Err(invalid(
                        "spec.network.gateway6",
                        gateway,
                        "needs an IPv6 address in spec.network.addresses",
                    ));
                }
                Ok(ip.to_string())
            })
            .transpose()?;

        let dns_servers = network
            .nameservers
            .iter()
            .map(|server| {
                server
                    .parse::<IpAddr>()
                    .map(|ip| ip.to_string())
                    .map_err(|_| invalid("spec.network.nameservers", server, "is not an IP address"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for domain in &network.search_domains {
            let is_domain = !domain.is_empty()
                && domain.len() <= 253
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !is_domain {
                return Err(invalid(
                    "spec.network.searchDomains",
                    domain,
                    "is not a DNS domain name",
                ));
            }
        }
        let nameservers =
            (!dns_servers.is_empty() || !network.search_domains.is_empty()).then(|| Nameservers {
                addresses: dns_servers,
                search: network.search_domains.clone(),
            });

        let boot = Ethernet {
            matches: MacMatch {
                macaddress: boot_mac.to_ascii_lowercase(),
            },
            addresses,
            gateway4,
            gateway6,
            nameservers,
        };
        Ok(Self {
            version: 2,
            ethernets: BTreeMap::from([(BOOT_INTERFACE_ID.to_owned(), boot)]),
        })
    }

    /// The YAML of `network-config`.
    pub fn render(&self) -> Result<String, CidataError> {
        yaml(NETWORK_CONFIG, self)
    }
}

/// `ip/prefix` with a prefix no longer than the address.
fn parse_cidr(cidr: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = cidr.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    // `u8::from_str` accepts a leading `+`; a prefix is digits only.
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

/// `value` as a YAML document: block mappings, one line per scalar, strings quoted where a YAML 1.1
/// reader (PyYAML in cloud-init) would take them for something else.
fn yaml(file: &'static str, value: &impl Serialize) -> Result<String, CidataError> {
    // No folded block scalars: a long value stays on its key's line.
    let options = serde_saphyr::ser_options! {
        prefer_block_scalars: false,
    };
    serde_saphyr::to_string_with_options(value, options)
        .map_err(|source| CidataError::Render { file, source })
}

#[cfg(test)]
mod tests;
