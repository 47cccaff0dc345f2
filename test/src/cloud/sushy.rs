//! The sushy-tools fixture: a Redfish BMC (fake driver, no libvirt) on a loopback port.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use super::Error;
use super::process::{Ready, ServerProcess, TempDir, free_port, venv_tool};

/// How long sushy-emulator gets to answer after start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A machine behind the emulated BMC: one entry of `SUSHY_EMULATOR_FAKE_SYSTEMS`.
///
/// The Redfish system id is the [`uuid`](FakeSystem::uuid) (`/redfish/v1/Systems/<uuid>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeSystem {
    /// The system's UUID, also its Redfish id.
    pub uuid: String,
    /// The system's name.
    pub name: String,
    /// The initial power state: `On` or `Off`.
    pub power_state: String,
    /// The MAC addresses of its NICs.
    pub macs: Vec<String>,
}

impl FakeSystem {
    /// A powered-off system called `name` with a random UUID and one NIC whose MAC is derived from
    /// the UUID (locally administered, `52:54:00:xx:xx:xx`).
    pub fn new(name: impl Into<String>) -> Self {
        let uuid = uuid::Uuid::new_v4();
        let b = uuid.as_bytes();
        Self {
            uuid: uuid.to_string(),
            name: name.into(),
            power_state: "Off".into(),
            macs: vec![format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])],
        }
    }

    /// The same system, initially powered on.
    pub fn powered_on(mut self) -> Self {
        self.power_state = "On".into();
        self
    }

    /// The system as a Python dict literal for sushy's config file.
    fn to_python(&self) -> String {
        let nics: Vec<String> = self
            .macs
            .iter()
            .map(|mac| format!("{{'mac': {}}}", py_str(mac)))
            .collect();
        format!(
            "{{'uuid': {}, 'name': {}, 'power_state': {}, 'external_notifier': False, 'nics': [{}]}}",
            py_str(&self.uuid),
            py_str(&self.name),
            py_str(&self.power_state),
            nics.join(", ")
        )
    }
}

/// A self-signed certificate and key (PEM) for `127.0.0.1`.
fn self_signed_certificate() -> Result<(String, String), Error> {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).map_err(|e| {
        Error::io(
            "generating the BMC certificate",
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

/// One htpasswd line `username:<bcrypt digest>` for sushy's auth file, hashed by the venv's Python
/// (sushy accepts only bcrypt digests).
fn htpasswd_entry(username: &str, password: &str) -> Result<String, Error> {
    let python = venv_tool("python")?;
    let script = "import bcrypt, sys; print(sys.argv[1] + ':' + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(4)).decode())";
    let output = Command::new(&python)
        .args(["-c", script, username, password])
        .output()
        .map_err(|e| Error::io(format!("running {}", python.display()), e))?;
    if !output.status.success() {
        return Err(Error::io(
            "hashing the sushy password",
            std::io::Error::other(String::from_utf8_lossy(&output.stderr).into_owned()),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A Python string literal (a JSON string is one, escapes included).
fn py_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// A running sushy-emulator (Redfish) on 127.0.0.1 with the fake driver, no authentication and its
/// state in a fresh directory; stopped when dropped.
///
/// Power changes are asynchronous like real hardware: a `ComputerSystem.Reset` answers 204 and the
/// power state follows 1–11 s later, so poll.
#[derive(Debug)]
pub struct Sushy {
    process: ServerProcess,
    systems: Vec<FakeSystem>,
    tls: bool,
}

impl Sushy {
    /// Starts sushy-emulator serving `systems` (sushy's own default system when empty).
    pub fn start(systems: &[FakeSystem]) -> Result<Self, Error> {
        Self::launch(systems, None, false)
    }

    /// Starts sushy-emulator serving `systems` over HTTPS with a fresh self-signed certificate for
    /// `127.0.0.1` (as most BMCs ship), no authentication.
    pub fn start_with_tls(systems: &[FakeSystem]) -> Result<Self, Error> {
        Self::launch(systems, None, true)
    }

    /// Starts sushy-emulator serving `systems` behind HTTP Basic authentication: every path but
    /// the service root needs `username`/`password` (sushy checks an htpasswd file with bcrypt
    /// digests, made here with the venv's `bcrypt`).
    pub fn start_with_basic_auth(
        systems: &[FakeSystem],
        username: &str,
        password: &str,
    ) -> Result<Self, Error> {
        Self::launch(systems, Some((username, password)), false)
    }

    fn launch(systems: &[FakeSystem], auth: Option<(&str, &str)>, tls: bool) -> Result<Self, Error> {
        let program = venv_tool("sushy-emulator")?;
        let dir = TempDir::new("sushy")?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let state_dir = dir.path().join("state");
        let config_path = dir.path().join("emulator.conf");

        let mut config = String::from("# Generated by kubezero-test's Sushy fixture.\n");
        config.push_str("SUSHY_EMULATOR_FAKE_DRIVER = True\n");
        let _ = writeln!(config, "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'");
        let _ = writeln!(config, "SUSHY_EMULATOR_LISTEN_PORT = {port}");
        let _ = writeln!(
            config,
            "SUSHY_EMULATOR_STATE_DIR = {}",
            py_str(&state_dir.to_string_lossy())
        );
        match auth {
            Some((username, password)) => {
                let auth_path = dir.path().join("htpasswd");
                let entry = htpasswd_entry(username, password)?;
                std::fs::write(&auth_path, entry)
                    .map_err(|e| Error::io(format!("writing {}", auth_path.display()), e))?;
                let _ = writeln!(
                    config,
                    "SUSHY_EMULATOR_AUTH_FILE = {}",
                    py_str(&auth_path.to_string_lossy())
                );
            }
            None => config.push_str("SUSHY_EMULATOR_AUTH_FILE = None\n"),
        }
        if tls {
            let (cert, key) = self_signed_certificate()?;
            let cert_path = dir.path().join("bmc.crt");
            let key_path = dir.path().join("bmc.key");
            for (path, pem) in [(&cert_path, cert), (&key_path, key)] {
                std::fs::write(path, pem).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            }
            let _ = writeln!(
                config,
                "SUSHY_EMULATOR_SSL_CERT = {}",
                py_str(&cert_path.to_string_lossy())
            );
            let _ = writeln!(
                config,
                "SUSHY_EMULATOR_SSL_KEY = {}",
                py_str(&key_path.to_string_lossy())
            );
        } else {
            config.push_str("SUSHY_EMULATOR_SSL_CERT = None\n");
            config.push_str("SUSHY_EMULATOR_SSL_KEY = None\n");
        }
        if !systems.is_empty() {
            let entries: Vec<String> = systems
                .iter()
                .map(|s| format!("    {},\n", s.to_python()))
                .collect();
            let _ = writeln!(config, "SUSHY_EMULATOR_FAKE_SYSTEMS = [\n{}]", entries.concat());
        }
        std::fs::write(&config_path, config)
            .map_err(|e| Error::io(format!("writing {}", config_path.display()), e))?;

        let mut command = Command::new(program);
        command
            .arg("--config")
            .arg(&config_path)
            .args(["--fake", "--interface", "127.0.0.1", "--port", &port.to_string()])
            // Only our config file decides: no libvirt URI, cloud or config from the environment.
            .env("SUSHY_EMULATOR_CONFIG", &config_path)
            .env_remove("SUSHY_EMULATOR_LIBVIRT_URI")
            .env_remove("SUSHY_EMULATOR_LIBVIRT_URL")
            .env_remove("SUSHY_EMULATOR_OS_CLOUD");
        let process = ServerProcess::spawn(
            "sushy-emulator",
            command,
            dir,
            addr,
            if tls {
                Ready::Tcp
            } else {
                Ready::Http("/redfish/v1/Systems")
            },
            START_TIMEOUT,
        )?;
        Ok(Self {
            process,
            systems: systems.to_vec(),
            tls,
        })
    }

    /// `http://127.0.0.1:<port>` (`https://` with TLS): the BMC address (Redfish root at `/redfish/v1`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.process.addr())
    }

    /// The server's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    /// The systems it was started with.
    pub fn systems(&self) -> &[FakeSystem] {
        &self.systems
    }

    /// The Redfish ids of the systems it was started with (their UUIDs).
    pub fn system_ids(&self) -> Vec<String> {
        self.systems.iter().map(|s| s.uuid.clone()).collect()
    }

    /// The path of system `id`: `/redfish/v1/Systems/<id>`.
    pub fn system_path(&self, id: &str) -> String {
        format!("/redfish/v1/Systems/{id}")
    }

    /// The PID of the emulator process (to check it is gone after drop).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The directory holding the generated config and sushy's state (removed on drop).
    pub fn dir(&self) -> &std::path::Path {
        self.process.dir()
    }

    /// The last few KB of the emulator's output, for assertion messages.
    pub fn output_tail(&self) -> String {
        self.process.output_tail()
    }
}
