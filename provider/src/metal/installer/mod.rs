//! The installer environment: the `apkovl` overlay that turns the unmodified official Alpine ISO
//! into a one-shot disk installer (install mode) or disk wiper (wipe mode), and the phase protocol
//! it reports on. Pure: [`apkovl`] builds bytes, the media server serves them.
//!
//! # How the ISO finds the overlay
//!
//! We cannot change the ISO's kernel command line, so `apkovl=` and `ovl_dev=` are not available
//! (mkinitfs `mkinitfs-bootparam.7.in`). Without them, mkinitfs' `initramfs-init.in` (3.x) runs
//! `nlplug-findfs -a /tmp/apkovls`, which coldplugs every block device, mounts each filesystem
//! blkid recognises read-only at `/media/<dev>` and appends every top-level file matching
//! `*.apkovl.tar.gz*` to `/tmp/apkovls` (`nlplug-findfs.c`, `scandev_cb`, depth 1; devices where
//! it found something stay mounted). The init then unpacks the first line with `tar -zxvf` into
//! the RAM root and installs the packages of its `etc/apk/world` from the ISO's boot repository
//! (`apks/`, marked `.boot_repository`). Older inits (the `find_ovl` era) looked at
//! `/media/{usb,floppy,cdrom}/*.apkovl.tar.gz*` the same way. The name before the suffix is free:
//! `lbu` uses the hostname, we use [`APKOVL_FILE_NAME`].
//!
//! So the overlay rides on the **cidata medium**: the media server puts [`APKOVL_FILE_NAME`] at
//! the root of the same ISO 9660 / VFAT `cidata` image that carries `user-data` and `meta-data`
//! (NoCloud ignores other files), attached in a second virtual-media slot (USB, floppy or a
//! second CD) next to the ISO. After the install the host boots from disk with `root=`, where the
//! initramfs does not look for overlays, and tiny-cloud / cloud-init read the same medium. For
//! wipe mode the medium needs only the overlay.
//!
//! With an overlay present the init skips its default boot services (devfs, mdev, hwdrivers,
//! modloop, ...) unless the overlay has `etc/.default_boot_services`; without modloop no NIC or
//! disk driver loads. The overlay carries that marker and, for inits that predate it, the same
//! runlevel links itself.
//!
//! ## One virtual-media slot
//!
//! The unmodified ISO and the overlay need two media: nothing runs on the ISO before the overlay
//! is applied, so the installer cannot fetch it over HTTP, and the ISO cannot carry it without
//! being rebuilt (an El Torito remaster with xorriso, which this module does not do). A BMC with
//! one slot can therefore run neither the installer nor the wipe; the host controller should
//! refuse such hosts at inspection with a clear reason rather than hand them out and fail later.
//!
//! # What the live system offers
//!
//! The standard ISO's boot repository holds the `apks` of aports `scripts/mkimg.base.sh`
//! (`alpine-base busybox chrony dhcpcd doas e2fsprogs ... openssl openssh tzdata wget
//! tiny-cloud-nocloud`, plus `iw wpa_supplicant` from `mkimg.standard.sh`). The overlay's
//! `etc/apk/world` adds GNU `wget` (HTTPS with certificate checks) to busybox, whose Alpine build
//! (`main/busybox/busyboxconfig`) has `sha256sum`, `sha512sum`, `mkfifo`, `tee`, `dd`, `blkid`,
//! `blkdiscard` and `udhcpc`. Neither `util-linux` (`wipefs`) nor `qemu-img` is on the standard,
//! virt or extended ISO, so:
//! - raw images are streamed: `wget -O- | tee FIFO | dd`, with `sha256sum`/`sha512sum` reading
//!   the FIFO, so the checksum is of the bytes written, from one download; a write that fails
//!   or does not match has the disk's first and last MiB cleared, so nothing boots it;
//! - qcow2 images need `qemu-img`; on the official ISOs the installer reports `failed` with a
//!   reason saying so (where `qemu-img` exists it downloads to the RAM root, checks, converts);
//! - wipe uses `wipefs -a` when present; either way it zeroes the first and last MiB of every
//!   partition and of every disk, which covers MBR and both GPT copies and the signatures of
//!   ext4, XFS, btrfs (primary superblock), LVM2, md (0.90/1.0 at the end, 1.1/1.2 at the start),
//!   swap, ZFS (labels in the first and last 512 KiB), ISO 9660 and FAT; `blkdiscard` runs
//!   before the zeroing on disks whose `queue/discard_max_bytes` is not 0. This is the metadata
//!   clean Metal3 does by default, not a secure erase.
//! - `wget` is called with the options busybox and GNU wget share (`-q -t 1 -O`, `--post-data`);
//!   the stall timeout `-T` only where `--version`/`--help` shows it, since busybox built without
//!   `FEATURE_WGET_TIMEOUT` crashes on it (the tests run the script under Debian's busybox too).
//! - Networking: the live system configures none by itself, so the installer runs `udhcpc` on
//!   every interface with a device (a DHCP network is required).
//!
//! Disks: the root disk is [`ImageSpec::root_device`] (a whole-disk `/dev` path; `/dev/disk/by-*`
//! links are resolved when the live system has them), else the first disk in `/sys/block` order
//! that is not virtual (loop, ram, sr, dm, md, ...), not removable and not boot media (mounted,
//! or labelled `cidata`, or ISO 9660). Wipe mode wipes all such disks.
//!
//! Limits: a stale `*.apkovl.tar.gz` at the top of another filesystem of the host (a disk once
//! used for a diskless Alpine) may be listed first and win; the console of the live system logs
//! in as root without a password, as the ISO does.
//!
//! Sources read: mkinitfs `nlplug-findfs/nlplug-findfs.c`, `mkinitfs-bootparam.7.in`, an older
//! `initramfs-init.in` (`find_ovl_dev`) and 3.x excerpts of it (`/tmp/apkovls`,
//! `.default_boot_services`); aports `scripts/mkimg.base.sh`, `scripts/mkimg.standard.sh`,
//! `main/busybox/busyboxconfig` and its patches, `main/openrc/firstboot.initd`; busybox
//! `networking/wget.c` (long options).
//!
//! # Phase protocol
//!
//! The installer reports each phase as `POST <report_url>/<phase>` ([`Phase::as_str`]) with a
//! text body: the reason of `failed`, empty otherwise; any 2xx answer acknowledges it. Each
//! report is tried [`InstallerTimeouts::report_attempts`] times, 5 s apart. Install reports
//! `started`, `written`, `verified` (or `failed` at any point); wipe reports `started`, `wiped`
//! (or `failed`). After `verified` is acknowledged the installer reboots: the server must set the
//! next boot to the disk (and eject the ISO) before it answers, or the host boots the installer
//! again. Everything else ends in a power-off, as does a `verified` that was never acknowledged.
//! [`Phase::from_report`] parses what the server receives.

use std::time::Duration;

use flate2::{Compression, GzBuilder};

#[cfg(test)]
mod tests;

/// File name of the overlay at the root of the cidata medium (matches `*.apkovl.tar.gz*`).
pub const APKOVL_FILE_NAME: &str = "kubezero.apkovl.tar.gz";
/// The installer script, at [`INSTALLER_SCRIPT_PATH`] in the overlay.
pub const INSTALLER_SCRIPT: &str = include_str!("installer.sh");
/// The OpenRC `local` script that starts the installer, at [`LOCAL_START_PATH`] in the overlay.
pub const LOCAL_START_SCRIPT: &str = include_str!("kubezero.start");
/// Where the installer script lands in the live system.
pub const INSTALLER_SCRIPT_PATH: &str = "etc/kubezero/installer.sh";
/// Where the installer's configuration ([`installer_env`]) lands in the live system.
pub const INSTALLER_ENV_PATH: &str = "etc/kubezero/installer.env";
/// Where the start script lands in the live system.
pub const LOCAL_START_PATH: &str = "etc/local.d/kubezero.start";
/// Longest reason the installer sends with `failed` (and [`Phase::from_report`] keeps), in bytes.
pub const MAX_REASON_LEN: usize = 512;

/// Pause between two attempts of a report (`KZ_RETRY_SLEEP` in the script).
const REPORT_RETRY_SLEEP: Duration = Duration::from_secs(5);
/// Packages the live system installs from the ISO's boot repository (`etc/apk/world`).
const WORLD: &str = "alpine-base\nwget\n";
const HOSTNAME: &str = "kubezero-installer\n";
/// Modification time of every overlay entry (2024-01-01T00:00:00Z): fixed, so equal configs give
/// equal bytes.
const MTIME: u64 = 1_704_067_200;
/// Runlevel links of the init's default boot services (`rc_add` in `initramfs-init.in`), for inits
/// that do not read `etc/.default_boot_services`.
const BOOT_SERVICES: &[(&str, &str)] = &[
    ("sysinit", "devfs"),
    ("sysinit", "dmesg"),
    ("sysinit", "mdev"),
    ("sysinit", "hwdrivers"),
    ("sysinit", "modloop"),
    ("boot", "modules"),
    ("boot", "sysctl"),
    ("boot", "hostname"),
    ("boot", "bootmisc"),
    ("boot", "syslog"),
    ("shutdown", "mount-ro"),
    ("shutdown", "killprocs"),
    ("shutdown", "savecache"),
    ("default", "local"),
];

/// What the installer environment does on one boot and where it reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallerConfig {
    /// Install an image or wipe the disks.
    pub mode: InstallerMode,
    /// The media server's phase endpoint for this provisioning, carrying its token, e.g.
    /// `http://10.0.0.2:8090/hosts/<token>/phase`; phases are posted to `<report_url>/<phase>`.
    pub report_url: String,
    /// Network timeouts and report retries.
    pub timeouts: InstallerTimeouts,
}

/// The job of the installer environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstallerMode {
    /// Write an image to the root disk, verify it and reboot.
    Install(ImageSpec),
    /// Wipe every disk and power off.
    Wipe,
}

/// The disk image to install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// HTTP or HTTPS URL of the image.
    pub url: String,
    /// Checksum of the image file as served.
    pub checksum: ImageChecksum,
    /// Format of the image file.
    pub format: ImageFormat,
    /// Whole-disk `/dev` path to install to (rootDeviceHints `deviceName`); `None`: the first disk.
    pub root_device: Option<String>,
}

/// Checksum of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageChecksum {
    /// Hash algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// Hex digest (either case; written lowercase).
    pub hex: String,
}

/// Hash algorithms the installer can check (busybox `sha256sum` / `sha512sum`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl ChecksumAlgorithm {
    /// Name as the installer uses it (`sha256`, `sha512`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Sha256 => "sha256",
            ChecksumAlgorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Sha256 => 64,
            ChecksumAlgorithm::Sha512 => 128,
        }
    }
}

/// Image file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// A raw disk image, streamed to the disk.
    Raw,
    /// A qcow2 image; needs `qemu-img`, which the official Alpine ISOs lack (the install fails
    /// with a reason saying so).
    Qcow2,
}

impl ImageFormat {
    /// Name as the installer uses it (`raw`, `qcow2`).
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

/// Network timeouts of the installer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallerTimeouts {
    /// `wget -T`: how long a connection or a read may stall (whole seconds, 1 s to 1 h).
    pub http: Duration,
    /// How often one phase report is tried, 5 s apart (1 to 1000).
    pub report_attempts: u32,
}

impl InstallerTimeouts {
    /// The longest one phase report can take before the installer gives up on it: every attempt
    /// stalling for [`InstallerTimeouts::http`], 5 s apart. A phase timeout on the provider side
    /// shorter than this can fail a host whose report is merely being retried.
    pub fn longest_report(&self) -> Duration {
        let attempts = self.report_attempts.max(1);
        self.http * attempts + REPORT_RETRY_SLEEP * (attempts - 1)
    }
}

impl Default for InstallerTimeouts {
    /// 60 s stalls, 30 attempts: a report to a server that refuses connections gives up after about
    /// 2.5 minutes, one to a server that stalls after [`InstallerTimeouts::longest_report`].
    fn default() -> Self {
        InstallerTimeouts {
            http: Duration::from_secs(60),
            report_attempts: 30,
        }
    }
}

/// A phase the installer reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The installer environment booted and has a configuration.
    Started,
    /// The image bytes are on the root disk (not yet verified).
    Written,
    /// The written bytes came from a download whose checksum matched; the host reboots to disk.
    Verified,
    /// Every disk was wiped; the host powers off.
    Wiped,
    /// The job failed, with the installer's reason; the host powers off.
    Failed(String),
}

impl Phase {
    /// The path segment of the phase (`started`, `written`, `verified`, `wiped`, `failed`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Started => "started",
            Phase::Written => "written",
            Phase::Verified => "verified",
            Phase::Wiped => "wiped",
            Phase::Failed(_) => "failed",
        }
    }

    /// The reason of a failure.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Phase::Failed(reason) => Some(reason),
            _ => None,
        }
    }

    /// Parses a report: the path segment after the report URL and the request body. The body of
    /// `failed` is its reason (control characters blanked, trimmed, cut to [`MAX_REASON_LEN`]
    /// bytes, invalid UTF-8 replaced); other phases ignore the body.
    pub fn from_report(phase: &str, body: &[u8]) -> Result<Phase, PhaseError> {
        Ok(match phase {
            "started" => Phase::Started,
            "written" => Phase::Written,
            "verified" => Phase::Verified,
            "wiped" => Phase::Wiped,
            "failed" => {
                let text: String = String::from_utf8_lossy(body)
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                let mut reason = text.trim();
                if reason.len() > MAX_REASON_LEN {
                    let mut end = MAX_REASON_LEN;
                    while !reason.is_char_boundary(end) {
                        end -= 1;
                    }
                    reason = &reason[..end];
                }
                if reason.is_empty() {
                    Phase::Failed("the installer gave no reason".to_string())
                } else {
                    Phase::Failed(reason.to_string())
                }
            }
            other => {
                return Err(PhaseError::Unknown {
                    phase: other.chars().take(64).collect(),
                });
            }
        })
    }
}

/// A report that names no phase.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PhaseError {
    /// The path segment is not a phase.
    #[error("unknown installer phase {phase:?} (want started, written, verified, wiped or failed)")]
    Unknown {
        /// The segment received (at most 64 characters).
        phase: String,
    },
}

/// Why an installer overlay could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InstallerError {
    /// The report URL is not a plain HTTP(S) URL the script can append `/<phase>` to.
    #[error("installer report URL {url:?} is invalid: {reason}")]
    ReportUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The image URL is not an HTTP(S) URL.
    #[error("image URL is invalid: {reason}")]
    ImageUrl {
        /// What is wrong with it (the URL itself may carry credentials and is not repeated).
        reason: &'static str,
    },
    /// The checksum is not a hex digest of the algorithm's length.
    #[error("image checksum is not a {algorithm} hex digest: {reason}")]
    Checksum {
        /// The algorithm given.
        algorithm: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The root device is not a `/dev` path.
    #[error("root device {device:?} is invalid: {reason}")]
    RootDevice {
        /// The device given.
        device: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A timeout or retry count is out of range.
    #[error("installer timeouts are out of range: {reason}")]
    Timeouts {
        /// Which value, and its range.
        reason: &'static str,
    },
    /// Writing an entry of the overlay archive failed.
    #[error("building the installer overlay failed at {entry}: {source}")]
    Archive {
        /// The archive entry being written.
        entry: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The installer's configuration file ([`INSTALLER_ENV_PATH`]): one shell-quoted `KZ_*`
/// assignment a line, sourced by the installer script. Validates the config first.
pub fn installer_env(config: &InstallerConfig) -> Result<String, InstallerError> {
    let report_url = check_report_url(&config.report_url)?;
    let timeouts = config.timeouts;
    let http_seconds = timeouts.http.as_secs();
    if !(1..=3600).contains(&http_seconds) || timeouts.http.subsec_nanos() != 0 {
        return Err(InstallerError::Timeouts {
            reason: "http must be whole seconds from 1 s to 1 h",
        });
    }
    if !(1..=1000).contains(&timeouts.report_attempts) {
        return Err(InstallerError::Timeouts {
            reason: "report_attempts must be 1 to 1000",
        });
    }

    let mut vars: Vec<(&str, String)> = vec![
        (
            "KZ_MODE",
            match config.mode {
                InstallerMode::Install(_) => "install",
                InstallerMode::Wipe => "wipe",
            }
            .to_string(),
        ),
        ("KZ_REPORT_URL", report_url.to_string()),
        ("KZ_HTTP_TIMEOUT", http_seconds.to_string()),
        ("KZ_REPORT_ATTEMPTS", timeouts.report_attempts.to_string()),
    ];
    if let InstallerMode::Install(image) = &config.mode {
        check_image_url(&image.url)?;
        let checksum = check_checksum(&image.checksum)?;
        let root_device = match &image.root_device {
            Some(device) => check_root_device(device)?.to_string(),
            None => String::new(),
        };
        vars.extend([
            ("KZ_IMAGE_URL", image.url.clone()),
            ("KZ_IMAGE_FORMAT", image.format.as_str().to_string()),
            ("KZ_CHECKSUM_ALGO", image.checksum.algorithm.as_str().to_string()),
            ("KZ_CHECKSUM", checksum),
            ("KZ_ROOT_DEVICE", root_device),
        ]);
    }

    let mut env = String::from("# kubezero installer configuration, written by kubezero-provider\n");
    for (name, value) in vars {
        env.push_str(name);
        env.push('=');
        env.push_str(&shell_quote(&value));
        env.push('\n');
    }
    Ok(env)
}

/// The overlay for `config`: a gzip'd ustar archive with sorted entries, root-owned, fixed mtimes
/// (equal configs give equal bytes). It holds the installer script and its configuration, the
/// `local` start script and runlevel link, the default boot services, `etc/apk/world` and
/// `etc/hostname`.
pub fn apkovl(config: &InstallerConfig) -> Result<Vec<u8>, InstallerError> {
    let env = installer_env(config)?;
    let mut entries = vec![
        Entry::file("etc/.default_boot_services", b"", 0o644),
        Entry::file("etc/apk/world", WORLD.as_bytes(), 0o644),
        Entry::file("etc/hostname", HOSTNAME.as_bytes(), 0o644),
        // The configuration carries the report token: root only.
        Entry::file(INSTALLER_ENV_PATH, env.as_bytes(), 0o600),
        Entry::file(INSTALLER_SCRIPT_PATH, INSTALLER_SCRIPT.as_bytes(), 0o755),
        Entry::file(LOCAL_START_PATH, LOCAL_START_SCRIPT.as_bytes(), 0o755),
    ];
    for (runlevel, service) in BOOT_SERVICES {
        entries.push(Entry::link(
            format!("etc/runlevels/{runlevel}/{service}"),
            format!("/etc/init.d/{service}"),
        ));
    }
    // Every parent directory as its own entry: tar would otherwise create them with its umask.
    let mut dirs: Vec<String> = Vec::new();
    for entry in &entries {
        let mut path = entry.path.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            dirs.push(format!("{parent}/"));
            path = parent;
        }
    }
    dirs.sort();
    dirs.dedup();
    entries.extend(dirs.into_iter().map(|dir| {
        let mode = if dir == "etc/kubezero/" { 0o700 } else { 0o755 };
        Entry::dir(dir, mode)
    }));
    entries.sort_by(|a, b| a.path.cmp(&b.path));

    let gz = GzBuilder::new().mtime(0).write(Vec::new(), Compression::best());
    let mut builder = tar::Builder::new(gz);
    for entry in &entries {
        entry
            .append(&mut builder)
            .map_err(|source| InstallerError::Archive {
                entry: entry.path.clone(),
                source,
            })?;
    }
    let finish = |source| InstallerError::Archive {
        entry: "end of archive".to_string(),
        source,
    };
    let gz = builder.into_inner().map_err(finish)?;
    gz.finish().map_err(finish)
}

enum EntryKind {
    Dir,
    File(Vec<u8>),
    Link(String),
}

struct Entry {
    path: String,
    mode: u32,
    kind: EntryKind,
}

impl Entry {
    fn file(path: &str, data: &[u8], mode: u32) -> Entry {
        Entry {
            path: path.to_string(),
            mode,
            kind: EntryKind::File(data.to_vec()),
        }
    }

    fn dir(path: String, mode: u32) -> Entry {
        Entry {
            path,
            mode,
            kind: EntryKind::Dir,
        }
    }

    fn link(path: String, target: String) -> Entry {
        Entry {
            path,
            mode: 0o777,
            kind: EntryKind::Link(target),
        }
    }

    fn append<W: std::io::Write>(&self, builder: &mut tar::Builder<W>) -> std::io::Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_mode(self.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_username("root")?;
        header.set_groupname("root")?;
        header.set_mtime(MTIME);
        match &self.kind {
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, &self.path, std::io::empty())
            }
            EntryKind::File(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, &self.path, data.as_slice())
            }
            EntryKind::Link(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, &self.path, target)
            }
        }
    }
}

/// Single-quotes `value` for sh: `'` becomes `'\''`; nothing inside single quotes is expanded.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn has_bad_chars(value: &str) -> bool {
    value.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn check_report_url(url: &str) -> Result<&str, InstallerError> {
    let invalid = |reason| InstallerError::ReportUrl {
        url: url.to_string(),
        reason,
    };
    let trimmed = url.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| invalid("must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid("has no host"));
    }
    if has_bad_chars(url) {
        return Err(invalid("contains whitespace or control characters"));
    }
    if url.contains(['?', '#']) {
        return Err(invalid("has a query or fragment, so /<phase> cannot be appended"));
    }
    if url.len() > 2048 {
        return Err(invalid("is longer than 2048 bytes"));
    }
    Ok(trimmed)
}

fn check_image_url(url: &str) -> Result<(), InstallerError> {
    let invalid = |reason| InstallerError::ImageUrl { reason };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| invalid("must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid("has no host"));
    }
    if has_bad_chars(url) {
        return Err(invalid("contains whitespace or control characters"));
    }
    if url.len() > 8192 {
        return Err(invalid("is longer than 8192 bytes"));
    }
    Ok(())
}

fn check_checksum(checksum: &ImageChecksum) -> Result<String, InstallerError> {
    let algorithm = checksum.algorithm;
    let invalid = |reason: String| InstallerError::Checksum {
        algorithm: algorithm.as_str(),
        reason,
    };
    let hex = checksum.hex.trim();
    if hex.len() != algorithm.hex_len() {
        return Err(invalid(format!(
            "{} hex digits, want {}",
            hex.len(),
            algorithm.hex_len()
        )));
    }
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid("contains characters other than hex digits".to_string()));
    }
    Ok(hex.to_ascii_lowercase())
}

fn check_root_device(device: &str) -> Result<&str, InstallerError> {
    let invalid = |reason| InstallerError::RootDevice {
        device: device.to_string(),
        reason,
    };
    let name = device
        .strip_prefix("/dev/")
        .ok_or_else(|| invalid("must start with /dev/"))?;
    if name.is_empty() || name.ends_with('/') {
        return Err(invalid("names no device"));
    }
    if has_bad_chars(device) {
        return Err(invalid("contains whitespace or control characters"));
    }
    if name
        .split('/')
        .any(|part| part == ".." || part == "." || part.is_empty())
    {
        return Err(invalid("has empty, . or .. components"));
    }
    if device.len() > 256 {
        return Err(invalid("is longer than 256 bytes"));
    }
    Ok(device)
}
