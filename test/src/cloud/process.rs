//! The child-process plumbing shared by the emulators: the venv, free ports, a private temp dir, the
//! readiness wait and a stop on drop that ends only the process the fixture started.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Error, http};

/// How long a stopped emulator gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How much of the emulator's output an error shows.
const TAIL_BYTES: u64 = 4000;

/// The Python venv holding `moto_server` and `sushy-emulator`: `$KUBEZERO_VENV` when set, else
/// `.build/venv` at the repository root (the one `scripts/test-tools.sh` creates).
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("KUBEZERO_VENV") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the test crate lives one level below the repository root")
            .join(".build/venv"),
    }
}

/// The executable `name` in the venv's `bin/`, or [`Error::MissingTool`].
pub(super) fn venv_tool(name: &str) -> Result<PathBuf, Error> {
    let path = venv_dir().join("bin").join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingTool { path })
    }
}

/// A free TCP port on 127.0.0.1 (bound to port 0, then released). Another process could take it
/// before the emulator binds it; the readiness check then fails clearly instead of hanging.
pub fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("binding 127.0.0.1:0", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("reading the bound port", e))
}

/// A directory of our own under the system temp dir, removed on drop.
#[derive(Debug)]
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(prefix: &str) -> Result<Self, Error> {
        let path = std::env::temp_dir().join(format!("kubezero-{prefix}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(Self(path))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running emulator: the child, its combined stdout/stderr log in its temp dir, and the address it
/// serves. Dropping it stops the child (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and removes the
/// temp dir.
#[derive(Debug)]
pub(super) struct ServerProcess {
    name: String,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    // Dropped after the child is stopped (field order does not matter: Drop below stops first).
    dir: TempDir,
}

/// When a spawned server counts as ready.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ready<'a> {
    /// `GET <path>` answers with an HTTP status below 500.
    Http(&'a str),
    /// The port accepts connections (a TLS server, which a plain HTTP probe cannot ask).
    Tcp,
}

impl ServerProcess {
    /// Spawns `command` with its output going to a log file in `dir`, the proxy variables cleared
    /// for loopback, and waits until `ready` holds on `addr`, for at most `timeout`.
    pub(super) fn spawn(
        name: &str,
        mut command: Command,
        dir: TempDir,
        addr: SocketAddr,
        ready: Ready<'_>,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let log = dir.path().join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("duplicating the log file handle", e))?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .current_dir(dir.path())
            // Loopback only: a proxy from the environment must not see emulator traffic (sushy
            // downloads virtual media over HTTP).
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("PYTHONUNBUFFERED", "1");
        let child = command
            .spawn()
            .map_err(|e| Error::io(format!("starting {name} ({command:?})"), e))?;
        let mut server = Self {
            name: name.to_string(),
            child,
            addr,
            log,
            dir,
        };
        server.wait_ready(ready, timeout)?;
        Ok(server)
    }

    fn wait_ready(&mut self, ready: Ready<'_>, timeout: Duration) -> Result<(), Error> {
        let url = match ready {
            Ready::Http(path) => format!("http://{}{path}", self.addr),
            Ready::Tcp => format!("tcp://{}", self.addr),
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| Error::io(format!("checking {}", self.name), e))?
            {
                return Err(Error::ExitedEarly {
                    name: self.name.clone(),
                    status,
                    url,
                    tail: self.output_tail(),
                });
            }
            let answered = match ready {
                Ready::Http(path) => http::get(self.addr, path, Duration::from_secs(2))
                    .is_ok_and(|response| response.status < 500),
                Ready::Tcp => {
                    std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).is_ok()
                }
            };
            if answered {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    name: self.name.clone(),
                    url,
                    timeout,
                    tail: self.output_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last few KB of the child's output.
    pub(super) fn output_tail(&self) -> String {
        let Ok(mut file) = File::open(&self.log) else {
            return String::from("(no output captured)");
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)));
        let mut bytes = Vec::new();
        let _ = file.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Stops the child: SIGTERM (through `kill`, by its PID), a bounded wait, then SIGKILL.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let termed = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if termed {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(Some(_)) => return,
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => break,
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
