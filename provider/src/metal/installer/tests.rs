//! Tests of the installer overlay and script. The script tests unpack the real overlay with Debian's
//! `tar`, run the unpacked `installer.sh` with `sh` (dash: POSIX) against regular files standing in
//! for disks (and once under busybox `sh` with busybox applets only), and serve the image and take
//! the phase reports on 127.0.0.1. Missing tools (`shellcheck`, `tar`, `wget`, `busybox`,
//! `sha256sum`) fail the tests: run scripts/test-tools.sh.

use kubezero_capi::testing::{assert_shellcheck_clean, require_tool};
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

const MIB: usize = 1 << 20;
/// Every fake disk is 8 MiB of 0xAA.
const DISK_SECTORS: u64 = 16384;
const FILL: u8 = 0xAA;

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kubezero-installer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn image_spec(url: &str, hex: &str) -> ImageSpec {
    ImageSpec {
        url: url.to_string(),
        checksum: ImageChecksum {
            algorithm: ChecksumAlgorithm::Sha256,
            hex: hex.to_string(),
        },
        format: ImageFormat::Raw,
        root_device: None,
    }
}

fn install_config(image: ImageSpec, report_url: &str) -> InstallerConfig {
    InstallerConfig {
        mode: InstallerMode::Install(image),
        report_url: report_url.to_string(),
        timeouts: InstallerTimeouts {
            http: Duration::from_secs(5),
            report_attempts: 2,
        },
    }
}

const SHA256_OF_NOTHING: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// --- configuration and overlay ----------------------------------------------------------------

#[test]
fn installer_scripts_pass_shellcheck() {
    for (name, script) in [
        ("installer.sh", INSTALLER_SCRIPT),
        ("kubezero.start", LOCAL_START_SCRIPT),
    ] {
        assert_shellcheck_clean(name, script);
    }
}

#[test]
fn apkovl_unpacks_with_debian_tar_showing_modes_and_links() {
    require_tool("tar");
    let dir = scratch_dir("listing");
    let config = install_config(
        image_spec("https://images.example/alpine.img", SHA256_OF_NOTHING),
        "http://10.0.0.2:8090/hosts/t0ken/phase",
    );
    let path = dir.join(APKOVL_FILE_NAME);
    std::fs::write(&path, apkovl(&config).unwrap()).unwrap();
    let out = Command::new("tar")
        .arg("-tzvf")
        .arg(&path)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8(out.stdout).unwrap();

    // "MODE OWNER SIZE DATE TIME NAME [-> TARGET]" -> NAME: (MODE, OWNER, TARGET)
    let mut entries = BTreeMap::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() >= 6, "unexpected tar line {line:?}");
        let target = (fields.len() == 8 && fields[6] == "->").then(|| fields[7].to_string());
        entries.insert(
            fields[5].to_string(),
            (fields[0].to_string(), fields[1].to_string(), target),
        );
    }
    let expect = |name: &str, mode: &str, target: Option<&str>| {
        let (got_mode, owner, got_target) = entries
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from the overlay:\n{listing}"));
        assert_eq!(got_mode, mode, "mode of {name}");
        assert_eq!(owner, "root/root", "owner of {name}");
        assert_eq!(got_target.as_deref(), target, "link target of {name}");
    };
    expect("etc/local.d/kubezero.start", "-rwxr-xr-x", None);
    expect("etc/kubezero/installer.sh", "-rwxr-xr-x", None);
    expect("etc/kubezero/installer.env", "-rw-------", None);
    expect("etc/kubezero/", "drwx------", None);
    expect("etc/local.d/", "drwxr-xr-x", None);
    expect("etc/runlevels/default/", "drwxr-xr-x", None);
    expect(
        "etc/runlevels/default/local",
        "lrwxrwxrwx",
        Some("/etc/init.d/local"),
    );
    expect(
        "etc/runlevels/sysinit/modloop",
        "lrwxrwxrwx",
        Some("/etc/init.d/modloop"),
    );
    expect("etc/.default_boot_services", "-rw-r--r--", None);
    expect("etc/apk/world", "-rw-r--r--", None);
    expect("etc/hostname", "-rw-r--r--", None);
    assert!(
        listing.lines().all(|line| line.contains("2024-01-01 00:00")),
        "{listing}"
    );

    // Sorted, and nothing that would touch the root directory itself.
    let names: Vec<&String> = entries.keys().collect();
    let listed: Vec<String> = listing
        .lines()
        .map(|line| line.split_whitespace().nth(5).unwrap().to_string())
        .collect();
    assert_eq!(listed.iter().collect::<Vec<_>>(), names, "entries are not sorted");
    assert!(!entries.contains_key("./") && !entries.contains_key("/"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn apkovl_is_deterministic_and_follows_its_config() {
    let config = install_config(
        image_spec("https://images.example/alpine.img", SHA256_OF_NOTHING),
        "http://10.0.0.2:8090/hosts/t0ken/phase",
    );
    let first = apkovl(&config).unwrap();
    assert_eq!(first, apkovl(&config).unwrap());
    let mut other = config.clone();
    other.report_url = "http://10.0.0.2:8090/hosts/other/phase".to_string();
    assert_ne!(first, apkovl(&other).unwrap());
}

#[test]
fn installer_env_quotes_user_input_for_the_shell() {
    let dir = scratch_dir("quoting");
    let hostile = "http://x.example/a'b\"c$(touch${IFS}pwned)`touch${IFS}pwned2`;d&e|f\\g";
    let mut image = image_spec(hostile, &SHA256_OF_NOTHING.to_ascii_uppercase());
    image.root_device = Some("/dev/disk/by-id/it's-$(x)".to_string());
    let env = installer_env(&install_config(image, "http://10.0.0.2/p'$(id)")).unwrap();
    let env_path = dir.join("installer.env");
    std::fs::write(&env_path, &env).unwrap();
    let out = Command::new("sh")
        .current_dir(&dir)
        .arg("-c")
        .arg(r#". ./installer.env && printf '%s\n' "$KZ_IMAGE_URL" "$KZ_ROOT_DEVICE" "$KZ_REPORT_URL" "$KZ_CHECKSUM" "$KZ_MODE""#)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "{hostile}\n/dev/disk/by-id/it's-$(x)\nhttp://10.0.0.2/p'$(id)\n{SHA256_OF_NOTHING}\ninstall\n"
        )
    );
    assert!(!dir.join("pwned").exists() && !dir.join("pwned2").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn longest_report_covers_every_attempt_and_pause() {
    let timeouts = InstallerTimeouts {
        http: Duration::from_secs(10),
        report_attempts: 3,
    };
    assert_eq!(timeouts.longest_report(), Duration::from_secs(3 * 10 + 2 * 5));
    assert_eq!(
        InstallerTimeouts::default().longest_report(),
        Duration::from_secs(30 * 60 + 29 * 5)
    );
}

#[test]
fn wipe_env_carries_no_image_settings() {
    let config = InstallerConfig {
        mode: InstallerMode::Wipe,
        report_url: "http://10.0.0.2:8090/hosts/t0ken/phase/".to_string(),
        timeouts: InstallerTimeouts::default(),
    };
    let env = installer_env(&config).unwrap();
    assert!(env.contains("KZ_MODE='wipe'\n"), "{env}");
    assert!(
        env.contains("KZ_REPORT_URL='http://10.0.0.2:8090/hosts/t0ken/phase'\n"),
        "{env}"
    );
    assert!(
        env.contains("KZ_HTTP_TIMEOUT='60'\nKZ_REPORT_ATTEMPTS='30'\n"),
        "{env}"
    );
    assert!(!env.contains("KZ_IMAGE"), "{env}");
}

#[test]
fn invalid_configs_are_rejected_with_the_reason() {
    let good = || {
        install_config(
            image_spec("https://images.example/alpine.img", SHA256_OF_NOTHING),
            "http://10.0.0.2/phase",
        )
    };
    let with_image = |edit: &dyn Fn(&mut ImageSpec)| {
        let mut config = good();
        if let InstallerMode::Install(image) = &mut config.mode {
            edit(image);
        }
        installer_env(&config).unwrap_err().to_string()
    };
    let with_report = |url: &str| {
        let mut config = good();
        config.report_url = url.to_string();
        installer_env(&config).unwrap_err().to_string()
    };
    assert!(with_image(&|i| i.checksum.hex.truncate(63)).contains("63 hex digits, want 64"));
    assert!(with_image(&|i| i.checksum.algorithm = ChecksumAlgorithm::Sha512).contains("want 128"));
    assert!(with_image(&|i| i.checksum.hex.replace_range(0..1, "g")).contains("hex digits"));
    assert!(with_image(&|i| i.url = "ftp://images.example/a.img".into()).contains("http:// or https://"));
    assert!(with_image(&|i| i.url = "https://images.example/a b.img".into()).contains("whitespace"));
    assert!(with_image(&|i| i.root_device = Some("sda".into())).contains("must start with /dev/"));
    assert!(with_image(&|i| i.root_device = Some("/dev/../etc".into())).contains(".."));
    assert!(with_report("10.0.0.2/phase").contains("http:// or https://"));
    assert!(with_report("http://10.0.0.2/phase?token=x").contains("query or fragment"));
    assert!(with_report("http:///phase").contains("no host"));
    let mut config = good();
    config.timeouts.http = Duration::from_millis(1500);
    assert!(
        installer_env(&config)
            .unwrap_err()
            .to_string()
            .contains("whole seconds")
    );
    config.timeouts = InstallerTimeouts {
        report_attempts: 0,
        ..InstallerTimeouts::default()
    };
    assert!(
        installer_env(&config)
            .unwrap_err()
            .to_string()
            .contains("report_attempts")
    );
}

#[test]
fn phases_round_trip_through_the_report_protocol() {
    for phase in [Phase::Started, Phase::Written, Phase::Verified, Phase::Wiped] {
        assert_eq!(Phase::from_report(phase.as_str(), b"ignored").unwrap(), phase);
        assert_eq!(phase.reason(), None);
    }
    let failed = Phase::from_report("failed", b"  image checksum mismatch\n").unwrap();
    assert_eq!(failed, Phase::Failed("image checksum mismatch".to_string()));
    assert_eq!(failed.as_str(), "failed");
    assert_eq!(failed.reason(), Some("image checksum mismatch"));
    assert_eq!(
        Phase::from_report("failed", b"disk\n\x1b[31mgone\r\n").unwrap(),
        Phase::Failed("disk  [31mgone".to_string())
    );
    assert_eq!(
        Phase::from_report("failed", b"").unwrap(),
        Phase::Failed("the installer gave no reason".to_string())
    );
    let long = "é".repeat(MAX_REASON_LEN);
    let Phase::Failed(cut) = Phase::from_report("failed", long.as_bytes()).unwrap() else {
        panic!("not failed");
    };
    assert!(
        cut.len() <= MAX_REASON_LEN && cut.len() >= MAX_REASON_LEN - 1,
        "{}",
        cut.len()
    );
    assert_eq!(
        Phase::from_report("done", b"").unwrap_err(),
        PhaseError::Unknown {
            phase: "done".to_string()
        }
    );
}

// --- the script, run for real -----------------------------------------------------------------

/// HTTP on 127.0.0.1: `GET /image` answers the image (closing the connection after `cut` bytes,
/// if set), `POST /report/<phase>` records the phase and body (answering 500 for `refuse`, if
/// set). One connection at a time, as the script makes them.
struct TestServer {
    addr: SocketAddr,
    reports: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    fn start(image: Vec<u8>, refuse: Option<&'static str>) -> TestServer {
        TestServer::start_cut(image, refuse, None)
    }

    fn start_cut(image: Vec<u8>, refuse: Option<&'static str>, cut: Option<usize>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_reports, thread_stop) = (reports.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    serve(stream, &image, &thread_reports, refuse, cut);
                }
            }
        });
        TestServer {
            addr,
            reports,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn phases(&self) -> Vec<(String, String)> {
        self.reports.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    image: &[u8],
    reports: &Mutex<Vec<(String, String)>>,
    refuse: Option<&str>,
    cut: Option<usize>,
) {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() || request_line.is_empty() {
        return;
    }
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).unwrap();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, payload): (&str, &[u8]) = match (method, path.strip_prefix("/report/")) {
        ("GET", _) if path == "/image" => ("200 OK", image),
        ("POST", Some(phase)) => {
            reports
                .lock()
                .unwrap()
                .push((phase.to_string(), String::from_utf8_lossy(&body).into_owned()));
            if refuse == Some(phase) {
                ("500 Internal Server Error", b"no")
            } else {
                ("200 OK", b"ok")
            }
        }
        _ => ("404 Not Found", b"not found"),
    };
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    let sent = match cut {
        Some(cut) if path == "/image" => &payload[..cut.min(payload.len())],
        _ => payload,
    };
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(sent));
}

struct FakeDisk {
    name: &'static str,
    removable: bool,
    mounted: bool,
    discard: bool,
    /// (name, start sector, sectors), with a device node of its own.
    partitions: Vec<(&'static str, u64, u64)>,
    /// The device node is a directory: writing it fails.
    broken: bool,
}

impl FakeDisk {
    fn plain(name: &'static str) -> FakeDisk {
        FakeDisk {
            name,
            removable: false,
            mounted: false,
            discard: false,
            partitions: Vec::new(),
            broken: false,
        }
    }
}

/// A temporary "host": sys/block, sys/class/net, dev with regular files as disks, a mounts file,
/// and fake commands (reboot, poweroff, wipefs, blkdiscard, blkid) that log to actions.log.
struct FakeHost {
    dir: PathBuf,
}

const FAKE_COMMAND: &str = "#!/bin/sh\necho \"NAME $*\" >>\"$KZ_TEST_ACTIONS\"\n";
/// blkid: `sdl` carries the cidata volume.
const FAKE_BLKID: &str =
    "#!/bin/sh\ncase \"$1\" in */sdl) echo \"$1: LABEL=\\\"cidata\\\" TYPE=\\\"vfat\\\"\" ;; esac\n";
/// qemu-img convert -n -f qcow2 -O raw SRC DST, as a plain copy.
const FAKE_QEMU_IMG: &str = "#!/bin/sh\necho \"qemu-img $*\" >>\"$KZ_TEST_ACTIONS\"\ndd if=\"$7\" of=\"$8\" bs=65536 conv=notrunc 2>/dev/null\n";

impl FakeHost {
    fn new(name: &str, disks: &[FakeDisk]) -> FakeHost {
        let dir = scratch_dir(name);
        let sys_block = dir.join("sys/block");
        let dev = dir.join("dev");
        std::fs::create_dir_all(dir.join("sys/class/net/eth0/device")).unwrap();
        std::fs::create_dir_all(dir.join("sys/class/net/lo")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        let mut mounts = String::from("proc /proc proc rw 0 0\n/dev/sr0 /media/cdrom iso9660 ro 0 0\n");
        for disk in disks {
            let block = sys_block.join(disk.name);
            std::fs::create_dir_all(block.join("queue")).unwrap();
            std::fs::write(block.join("size"), format!("{DISK_SECTORS}\n")).unwrap();
            std::fs::write(
                block.join("removable"),
                if disk.removable { "1\n" } else { "0\n" },
            )
            .unwrap();
            let discard = if disk.discard { "4294966784\n" } else { "0\n" };
            std::fs::write(block.join("queue/discard_max_bytes"), discard).unwrap();
            for (part, start, size) in &disk.partitions {
                std::fs::create_dir_all(block.join(part)).unwrap();
                std::fs::write(block.join(part).join("partition"), "1\n").unwrap();
                std::fs::write(block.join(part).join("start"), format!("{start}\n")).unwrap();
                std::fs::write(block.join(part).join("size"), format!("{size}\n")).unwrap();
                std::fs::write(dev.join(part), b"").unwrap();
            }
            if disk.broken {
                std::fs::create_dir_all(dev.join(disk.name)).unwrap();
            } else {
                std::fs::write(dev.join(disk.name), vec![FILL; DISK_SECTORS as usize * 512]).unwrap();
            }
            if disk.mounted {
                mounts.push_str(&format!(
                    "/dev/{}1 /media/{}1 vfat ro 0 0\n",
                    disk.name, disk.name
                ));
            }
        }
        // The CD itself: skipped by name.
        std::fs::create_dir_all(sys_block.join("sr0")).unwrap();
        std::fs::write(sys_block.join("sr0/size"), "4096\n").unwrap();
        std::fs::write(dir.join("mounts"), mounts).unwrap();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["reboot", "poweroff", "wipefs", "blkdiscard"] {
            write_executable(&bin.join(name), &FAKE_COMMAND.replace("NAME", name));
        }
        write_executable(&bin.join("blkid"), FAKE_BLKID);
        FakeHost { dir }
    }

    fn disk(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join("dev").join(name)).unwrap()
    }

    fn actions(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("actions.log"))
            .unwrap_or_default()
            .lines()
            .map(|line| line.replace(&format!("{}/", self.dir.display()), ""))
            .collect()
    }

    /// Unpacks the overlay for `config` with Debian's tar and runs its installer.sh with `sh`.
    fn run(&self, config: &InstallerConfig, env: &[(&str, String)]) -> Output {
        require_tool("wget");
        self.run_in(Command::new("sh"), config, env)
    }

    /// As [`FakeHost::run`], under busybox `sh` with only busybox applets on the PATH (its `wget`,
    /// `dd`, `tee`, `sha256sum`, ...), as in the Alpine live system.
    fn run_busybox(&self, config: &InstallerConfig) -> Output {
        require_tool("busybox");
        let applets = self.dir.join("busybox");
        std::fs::create_dir_all(&applets).unwrap();
        let status = Command::new("busybox")
            .arg("--install")
            .arg("-s")
            .arg(&applets)
            .status()
            .unwrap();
        assert!(status.success(), "busybox --install failed");
        // Found on the test's PATH: with PATH set on the Command, the child's PATH would be searched.
        let busybox = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("busybox"))
            .find(|path| path.is_file())
            .unwrap();
        let mut command = Command::new(busybox);
        command.arg("sh").env("PATH", &applets);
        self.run_in(command, config, &[])
    }

    fn run_in(&self, mut command: Command, config: &InstallerConfig, env: &[(&str, String)]) -> Output {
        require_tool("tar");
        let root = self.dir.join("overlay");
        std::fs::create_dir_all(&root).unwrap();
        let ovl = self.dir.join(APKOVL_FILE_NAME);
        std::fs::write(&ovl, apkovl(config).unwrap()).unwrap();
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(&ovl)
            .arg("-C")
            .arg(&root)
            .status()
            .unwrap();
        assert!(status.success(), "tar -xzf of the overlay failed");

        let bin = self.dir.join("bin");
        command
            .arg(root.join(INSTALLER_SCRIPT_PATH))
            .env("KZ_CONFIG", root.join(INSTALLER_ENV_PATH))
            .env("KZ_SYS_BLOCK", self.dir.join("sys/block"))
            .env("KZ_SYS_NET", self.dir.join("sys/class/net"))
            .env("KZ_DEV_DIR", self.dir.join("dev"))
            .env("KZ_PROC_MOUNTS", self.dir.join("mounts"))
            .env("KZ_WORK_DIR", self.dir.join("work"))
            .env("KZ_DHCP", "true")
            .env("KZ_BLKID", bin.join("blkid"))
            .env("KZ_WIPEFS", bin.join("wipefs"))
            .env("KZ_BLKDISCARD", bin.join("blkdiscard"))
            .env("KZ_QEMU_IMG", bin.join("qemu-img"))
            .env("KZ_REBOOT", bin.join("reboot"))
            .env("KZ_POWEROFF", bin.join("poweroff"))
            .env("KZ_RETRY_SLEEP", "0")
            .env("KZ_FILE_DISKS", "yes")
            .env("KZ_TEST_ACTIONS", self.dir.join("actions.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for proxy in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "WGETRC"] {
            command.env_remove(proxy);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                let out = child.wait_with_output().unwrap();
                panic!("installer.sh hung:\n{}", String::from_utf8_lossy(&out.stderr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// 3 MiB and a bit of deterministic noise (not a multiple of any block size).
fn test_image() -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..3 * MIB + 123)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    require_tool("sha256sum");
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn phase_names(server: &TestServer) -> Vec<String> {
    server.phases().into_iter().map(|(phase, _)| phase).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn untouched(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == FILL)
}

fn zeroed(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

#[test]
fn install_streams_the_image_to_the_first_disk_reports_in_order_and_reboots_once() {
    let image = test_image();
    let server = TestServer::start(image.clone(), None);
    let mut boot_media = FakeDisk::plain("sda");
    boot_media.mounted = true;
    let mut usb = FakeDisk::plain("sdb");
    usb.removable = true;
    let host = FakeHost::new(
        "install",
        &[
            boot_media,
            usb,
            FakeDisk::plain("sdc"),
            FakeDisk::plain("sdd"),
            FakeDisk::plain("sdl"),
        ],
    );
    let config = install_config(
        image_spec(&server.url("/image"), &sha256_hex(&image)),
        &server.url("/report"),
    );
    let out = host.run(&config, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    assert_eq!(
        phase_names(&server),
        ["started", "written", "verified"],
        "{}",
        stderr(&out)
    );
    assert!(server.phases().iter().all(|(_, body)| body.is_empty()));
    let sdc = host.disk("sdc");
    assert!(sdc[..image.len()] == image[..], "sdc does not hold the image");
    assert!(untouched(&sdc[image.len()..]), "sdc changed past the image");
    for other in ["sda", "sdb", "sdd", "sdl"] {
        assert!(untouched(&host.disk(other)), "{other} was written");
    }
    assert_eq!(host.actions(), ["reboot "]);
}

#[test]
fn install_honours_the_root_device_hint() {
    let image = test_image();
    let server = TestServer::start(image.clone(), None);
    let host = FakeHost::new("hint", &[FakeDisk::plain("sda"), FakeDisk::plain("sdb")]);
    let mut spec = image_spec(&server.url("/image"), &sha256_hex(&image));
    spec.root_device = Some("/dev/sdb".to_string());
    let out = host.run(&install_config(spec, &server.url("/report")), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(phase_names(&server), ["started", "written", "verified"]);
    assert!(host.disk("sdb")[..image.len()] == image[..]);
    assert!(untouched(&host.disk("sda")));
    assert_eq!(host.actions(), ["reboot "]);
}

#[test]
fn install_with_a_wrong_checksum_fails_never_verifies_and_powers_off() {
    let image = test_image();
    let server = TestServer::start(image.clone(), None);
    let host = FakeHost::new("mismatch", &[FakeDisk::plain("sda")]);
    let config = install_config(
        image_spec(&server.url("/image"), SHA256_OF_NOTHING),
        &server.url("/report"),
    );
    let out = host.run(&config, &[]);
    assert!(!out.status.success());

    assert_eq!(
        phase_names(&server),
        ["started", "written", "failed"],
        "{}",
        stderr(&out)
    );
    let reason = &server.phases()[2].1;
    assert!(
        reason.contains("checksum mismatch") && reason.contains(SHA256_OF_NOTHING),
        "reason: {reason}"
    );
    assert_eq!(
        Phase::from_report("failed", reason.as_bytes()).unwrap().reason(),
        Some(reason.as_str())
    );
    // The unverified image must not boot: its first and last MiB are cleared again.
    let sda = host.disk("sda");
    assert!(zeroed(&sda[..MIB]) && zeroed(&sda[sda.len() - MIB..]));
    assert_eq!(host.actions(), ["poweroff "]);
}

#[test]
fn install_of_a_download_cut_short_fails_and_never_verifies() {
    let image = test_image();
    let server = TestServer::start_cut(image.clone(), None, Some(MIB + 7));
    let host = FakeHost::new("cut", &[FakeDisk::plain("sda")]);
    let config = install_config(
        image_spec(&server.url("/image"), &sha256_hex(&image)),
        &server.url("/report"),
    );
    let out = host.run(&config, &[]);
    assert!(!out.status.success());
    assert_eq!(phase_names(&server), ["started", "failed"], "{}", stderr(&out));
    assert!(
        server.phases()[1].1.contains("download of the image failed"),
        "{:?}",
        server.phases()
    );
    // What arrived was written; its first MiB is cleared again so the partial image cannot boot.
    let sda = host.disk("sda");
    assert!(zeroed(&sda[..MIB]) && sda[MIB..MIB + 7] == image[MIB..MIB + 7]);
    assert_eq!(host.actions(), ["poweroff "]);
}

#[test]
fn install_powers_off_when_verified_is_not_acknowledged() {
    let image = test_image();
    let server = TestServer::start(image.clone(), Some("verified"));
    let host = FakeHost::new("noack", &[FakeDisk::plain("sda")]);
    let config = install_config(
        image_spec(&server.url("/image"), &sha256_hex(&image)),
        &server.url("/report"),
    );
    let out = host.run(&config, &[]);
    assert!(!out.status.success());
    // Two attempts (report_attempts), then a power-off instead of a reboot into the installer again.
    assert_eq!(
        phase_names(&server),
        ["started", "written", "verified", "verified"]
    );
    assert_eq!(host.actions(), ["poweroff "]);
}

#[test]
fn install_of_qcow2_without_qemu_img_fails_clearly_and_writes_nothing() {
    let image = test_image();
    let server = TestServer::start(image.clone(), None);
    let host = FakeHost::new("qcow2", &[FakeDisk::plain("sda")]);
    let mut spec = image_spec(&server.url("/image"), &sha256_hex(&image));
    spec.format = ImageFormat::Qcow2;
    let out = host.run(&install_config(spec, &server.url("/report")), &[]);
    assert!(!out.status.success());
    assert_eq!(phase_names(&server), ["started", "failed"]);
    assert!(
        server.phases()[1].1.contains("need qemu-img"),
        "{:?}",
        server.phases()
    );
    assert!(untouched(&host.disk("sda")));
    assert_eq!(host.actions(), ["poweroff "]);
}

#[test]
fn install_of_qcow2_checks_then_converts_with_qemu_img() {
    let image = test_image();
    let server = TestServer::start(image.clone(), None);
    let host = FakeHost::new("qcow2-convert", &[FakeDisk::plain("sda")]);
    write_executable(&host.dir.join("bin/qemu-img"), FAKE_QEMU_IMG);
    let mut spec = image_spec(&server.url("/image"), &sha256_hex(&image));
    spec.format = ImageFormat::Qcow2;
    let out = host.run(&install_config(spec, &server.url("/report")), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(phase_names(&server), ["started", "written", "verified"]);
    assert!(host.disk("sda")[..image.len()] == image[..]);
    assert_eq!(
        host.actions(),
        [
            "qemu-img convert -n -f qcow2 -O raw work/image.qcow2 dev/sda",
            "reboot "
        ]
    );
}

#[test]
fn wipe_clears_every_disk_edge_and_partition_then_powers_off_once() {
    let server = TestServer::start(Vec::new(), None);
    let mut sda = FakeDisk::plain("sda");
    // A partition from 2 MiB to 4 MiB: its own first/last MiB lie outside the disk's edges.
    sda.partitions = vec![("sda1", 4096, 4096)];
    let mut sdb = FakeDisk::plain("sdb");
    sdb.discard = true;
    let mut boot_media = FakeDisk::plain("sdc");
    boot_media.mounted = true;
    let host = FakeHost::new("wipe", &[sda, sdb, boot_media, FakeDisk::plain("sdl")]);
    let config = InstallerConfig {
        mode: InstallerMode::Wipe,
        report_url: server.url("/report"),
        timeouts: InstallerTimeouts {
            http: Duration::from_secs(5),
            report_attempts: 2,
        },
    };
    let out = host.run(&config, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(phase_names(&server), ["started", "wiped"], "{}", stderr(&out));

    let sda = host.disk("sda");
    assert!(zeroed(&sda[..MIB]), "sda first MiB");
    assert!(
        untouched(&sda[MIB..2 * MIB]),
        "sda between the edge and the partition"
    );
    assert!(zeroed(&sda[2 * MIB..4 * MIB]), "sda1 edges");
    assert!(untouched(&sda[4 * MIB..7 * MIB]), "sda middle");
    assert!(zeroed(&sda[7 * MIB..]), "sda last MiB");
    let sdb = host.disk("sdb");
    assert!(zeroed(&sdb[..MIB]) && untouched(&sdb[MIB..7 * MIB]) && zeroed(&sdb[7 * MIB..]));
    assert!(untouched(&host.disk("sdc")), "the boot media were wiped");
    assert!(untouched(&host.disk("sdl")), "the cidata disk was wiped");
    assert_eq!(
        host.actions(),
        [
            "wipefs -a dev/sda1",
            "wipefs -a dev/sda",
            "wipefs -a dev/sdb",
            "blkdiscard dev/sdb",
            "poweroff ",
        ]
    );
}

#[test]
fn wipe_that_cannot_write_a_disk_reports_failed_not_wiped() {
    let server = TestServer::start(Vec::new(), None);
    let mut broken = FakeDisk::plain("sdb");
    broken.broken = true;
    let host = FakeHost::new("wipe-fail", &[FakeDisk::plain("sda"), broken]);
    let config = InstallerConfig {
        mode: InstallerMode::Wipe,
        report_url: server.url("/report"),
        timeouts: InstallerTimeouts {
            http: Duration::from_secs(5),
            report_attempts: 1,
        },
    };
    let out = host.run(&config, &[("KZ_WIPEFS", "/nonexistent/wipefs".to_string())]);
    assert!(!out.status.success());
    assert_eq!(phase_names(&server), ["started", "failed"], "{}", stderr(&out));
    assert!(
        server.phases()[1].1.contains("sdb is not a block device"),
        "{:?}",
        server.phases()
    );
    // The other disk is still wiped; the host powers off, never reboots.
    let sda = host.disk("sda");
    assert!(zeroed(&sda[..MIB]) && zeroed(&sda[7 * MIB..]));
    assert_eq!(host.actions(), ["poweroff "]);
}

#[test]
fn install_and_wipe_work_under_busybox_as_in_the_live_system() {
    let image = test_image();
    let server = TestServer::start(image.clone(), None);
    let host = FakeHost::new("busybox-install", &[FakeDisk::plain("sda")]);
    let config = install_config(
        image_spec(&server.url("/image"), &sha256_hex(&image)),
        &server.url("/report"),
    );
    let out = host.run_busybox(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        phase_names(&server),
        ["started", "written", "verified"],
        "{}",
        stderr(&out)
    );
    assert!(host.disk("sda")[..image.len()] == image[..]);
    assert_eq!(host.actions(), ["reboot "]);

    let server = TestServer::start(Vec::new(), None);
    let mut sda = FakeDisk::plain("sda");
    sda.partitions = vec![("sda1", 4096, 4096)];
    let host = FakeHost::new("busybox-wipe", &[sda]);
    let config = InstallerConfig {
        mode: InstallerMode::Wipe,
        report_url: server.url("/report"),
        timeouts: InstallerTimeouts {
            http: Duration::from_secs(5),
            report_attempts: 2,
        },
    };
    let out = host.run_busybox(&config);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(phase_names(&server), ["started", "wiped"], "{}", stderr(&out));
    let sda = host.disk("sda");
    assert!(zeroed(&sda[..MIB]) && zeroed(&sda[2 * MIB..4 * MIB]) && zeroed(&sda[7 * MIB..]));
    assert!(untouched(&sda[MIB..2 * MIB]) && untouched(&sda[4 * MIB..7 * MIB]));
    assert_eq!(
        host.actions(),
        ["wipefs -a dev/sda1", "wipefs -a dev/sda", "poweroff "]
    );
}
