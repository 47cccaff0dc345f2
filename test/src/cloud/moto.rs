//! The moto server fixture: AWS (EC2, ELBv2, IAM) on a loopback port.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::Error;
use super::http;
use super::process::{Ready, ServerProcess, TempDir, free_port, venv_tool};

/// The AWS account that publishes the official Alpine Linux AMIs.
pub const ALPINE_OWNER_ID: &str = "538276064493";

/// How long moto gets to answer after start (it usually takes under a second).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-request timeout of the fixture's own calls.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One Alpine-named AMI entry in the shape of moto's `amis.json` (what `MOTO_AMIS_PATH` expects),
/// e.g. `alpine_ami("ami-0a1b2c3d4e5f60001", "3.22.2", "aarch64")` is named
/// `alpine-3.22.2-aarch64-uefi-tiny-r0` and owned by [`ALPINE_OWNER_ID`]. `arch` is Alpine's
/// (`x86_64` or `aarch64`); the EC2 architecture is derived from it (`aarch64` → `arm64`).
pub fn alpine_ami(ami_id: &str, version: &str, arch: &str) -> Value {
    let ec2_arch = if arch == "aarch64" { "arm64" } else { arch };
    json!({
        "ami_id": ami_id,
        "name": format!("alpine-{version}-{arch}-uefi-tiny-r0"),
        "description": format!("Alpine Linux {version} {arch} UEFI tiny (cloud-init free)"),
        "owner_id": ALPINE_OWNER_ID,
        "public": true,
        "virtualization_type": "hvm",
        "architecture": ec2_arch,
        "state": "available",
        "platform": null,
        "image_type": "machine",
        "hypervisor": "xen",
        "root_device_name": "/dev/xvda",
        "root_device_type": "ebs",
        "sriov": "simple",
        "boot_mode": "uefi",
        "creation_date": "2025-10-01T00:00:00.000Z",
    })
}

/// A small default seed: Alpine 3.22.2 and 3.22.1 for `x86_64` and `aarch64` (fixed ids
/// `ami-0a19e0000000022..`), enough to exercise "newest matching name for this architecture", and one
/// image per architecture of every other supported release (`ami-0a19e0000000<release>0a|b`), so a
/// lookup defaulted from any supported Kubernetes minor finds one.
pub fn alpine_amis() -> Value {
    let mut images = vec![
        alpine_ami("ami-0a19e00000000221a", "3.22.1", "x86_64"),
        alpine_ami("ami-0a19e00000000221b", "3.22.1", "aarch64"),
        alpine_ami("ami-0a19e00000000222a", "3.22.2", "x86_64"),
        alpine_ami("ami-0a19e00000000222b", "3.22.2", "aarch64"),
    ];
    for release in kubezero_capi::alpine::RELEASES.iter().map(|r| r.release) {
        if release == "3.22" {
            continue;
        }
        let digits = release.replace('.', "");
        for (arch, suffix) in [("x86_64", 'a'), ("aarch64", 'b')] {
            images.push(alpine_ami(
                &format!("ami-0a19e0000000{digits}0{suffix}"),
                &format!("{release}.0"),
                arch,
            ));
        }
    }
    Value::Array(images)
}

/// Options for a [`Moto`] server; start it with [`MotoBuilder::start`].
#[derive(Debug, Clone, Default)]
pub struct MotoBuilder {
    amis: Option<Value>,
    env: Vec<(String, String)>,
}

impl MotoBuilder {
    /// Replaces moto's default AMIs with `amis` (a JSON array of entries shaped like
    /// [`alpine_ami`]'s), written to a file that the child gets as `MOTO_AMIS_PATH`.
    pub fn amis(mut self, amis: Value) -> Self {
        self.amis = Some(amis);
        self
    }

    /// Sets an extra environment variable for the server, e.g. `MOTO_ENABLE_AMI_VALIDATION=true`.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Starts `moto_server` on a free 127.0.0.1 port and waits until it answers.
    pub fn start(self) -> Result<Moto, Error> {
        let program = venv_tool("moto_server")?;
        let dir = TempDir::new("moto")?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(program);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // Nothing from the test process's environment decides what moto serves.
            .env_remove("MOTO_AMIS_PATH")
            .env_remove("MOTO_ENABLE_AMI_VALIDATION")
            .env_remove("TEST_SERVER_MODE");
        if let Some(amis) = &self.amis {
            let path = dir.path().join("amis.json");
            let text = serde_json::to_vec_pretty(amis).expect("JSON values serialize");
            std::fs::write(&path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            command.env("MOTO_AMIS_PATH", &path);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let process = ServerProcess::spawn(
            "moto_server",
            command,
            dir,
            addr,
            Ready::Http("/moto-api/"),
            START_TIMEOUT,
        )?;
        Ok(Moto { process })
    }
}

/// A running moto server (AWS emulator) on 127.0.0.1, stopped when dropped.
///
/// Point an SDK at it with [`Moto::endpoint_url`], [`Moto::region`] and the dummy static credentials
/// ([`Moto::access_key_id`], [`Moto::secret_access_key`]); [`Moto::env`] gives the same as
/// environment variables for a child process. The fixture never changes its own process's
/// environment.
#[derive(Debug)]
pub struct Moto {
    process: ServerProcess,
}

impl Moto {
    /// Starts moto with its default AMIs.
    pub fn start() -> Result<Self, Error> {
        Self::builder().start()
    }

    /// Options: seeded AMIs, extra environment.
    pub fn builder() -> MotoBuilder {
        MotoBuilder::default()
    }

    /// `http://127.0.0.1:<port>`: the SDK `endpoint_url` for every service.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.process.addr())
    }

    /// The server's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    /// The region to use: `us-east-1` (moto serves every region; this one has the default VPC the
    /// tests expect).
    pub fn region(&self) -> &'static str {
        "us-east-1"
    }

    /// The dummy access key id moto accepts: `testing`.
    pub fn access_key_id(&self) -> &'static str {
        "testing"
    }

    /// The dummy secret access key: `testing`.
    pub fn secret_access_key(&self) -> &'static str {
        "testing"
    }

    /// The account moto reports as the caller's (its default).
    pub fn account_id(&self) -> &'static str {
        "123456789012"
    }

    /// Environment variables for a child process (a manager binary) that should talk to this moto:
    /// endpoint, region and dummy credentials.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint_url()),
            ("AWS_REGION", self.region().to_string()),
            ("AWS_DEFAULT_REGION", self.region().to_string()),
            ("AWS_ACCESS_KEY_ID", self.access_key_id().to_string()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key().to_string()),
            ("AWS_SESSION_TOKEN", "testing".to_string()),
        ]
    }

    /// One EC2 Query API call (`form` is `Action=...&...`; the API version is added), see [`ec2_query`].
    pub fn ec2_query(&self, form: &str) -> Result<http::Response, Error> {
        ec2_query(self.addr(), self.region(), self.access_key_id(), form)
    }

    /// Forgets every resource (`POST /moto-api/reset`); seeded AMIs come back.
    pub fn reset(&self) -> Result<(), Error> {
        let response = http::request(self.addr(), "POST", "/moto-api/reset", &[], &[], REQUEST_TIMEOUT)?;
        if response.status == 200 {
            Ok(())
        } else {
            Err(Error::Http {
                context: format!("POST {}/moto-api/reset", self.endpoint_url()),
                message: format!("status {}: {}", response.status, response.text()),
            })
        }
    }

    /// The PID of the server process (to check it is gone after drop).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The provider's AWS client set (EC2, ELBv2, IAM) for this server in `region`, with its dummy
    /// static credentials: for counting what a test or the demo left in moto.
    pub async fn aws_clients(&self, region: &str) -> kubezero_provider::aws::clients::AwsClients {
        use kubezero_provider::aws::clients::{AwsIdentity, AwsSettings, ClientRegistry};
        let registry = ClientRegistry::new(AwsSettings {
            endpoint_url: Some(self.endpoint_url()),
            ..AwsSettings::default()
        });
        let identity = AwsIdentity::Static {
            access_key_id: self.access_key_id().to_owned(),
            secret_access_key: self.secret_access_key().to_owned(),
            session_token: None,
        };
        registry
            .clients(&identity, region)
            .await
            .expect("a client set for a non-empty region")
    }

    /// The last few KB of the server's output, for assertion messages.
    pub fn output_tail(&self) -> String {
        self.process.output_tail()
    }
}

/// One EC2 Query API call to the moto server at `addr`: a form POST of `form` plus
/// `Version=2016-11-15`. moto routes on the service named in the `Authorization` header's credential
/// scope and does not check signatures, so a dummy SigV4 header naming `ec2` suffices. Any HTTP
/// status is returned; only transport failures are errors.
pub fn ec2_query(
    addr: SocketAddr,
    region: &str,
    access_key_id: &str,
    form: &str,
) -> Result<http::Response, Error> {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={access_key_id}/20260101/{region}/ec2/aws4_request, SignedHeaders=host, Signature=0"
    );
    let body = format!("{form}&Version=2016-11-15");
    http::request(
        addr,
        "POST",
        "/",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &auth),
        ],
        body.as_bytes(),
        REQUEST_TIMEOUT,
    )
}
