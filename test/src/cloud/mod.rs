//! Cloud emulators as test fixtures: [`Moto`] (AWS: EC2, ELBv2, IAM) and [`Sushy`] (a Redfish BMC with
//! sushy-tools' fake driver), each a child process on a free 127.0.0.1 port, stopped when dropped.
//!
//! Both run from the project-local Python venv that `scripts/test-tools.sh` installs (`.build/venv` at
//! the repository root, or `$KUBEZERO_VENV`; see [`venv_dir`]). A missing venv is a clear
//! [`Error::MissingTool`] naming the script to run.
//!
//! The fixtures talk to the emulators over plain HTTP/1.1 on a [`std::net::TcpStream`] ([`http`]), so
//! they need no async runtime and no HTTP client dependency; tests use the same helpers to poke the
//! emulators directly.

use std::path::PathBuf;
use std::time::Duration;

pub mod bmc_faults;
pub mod faults;
pub mod http;
mod moto;
mod process;
mod proxy;
mod sushy;

pub use bmc_faults::{BmcFaultConfig, BmcFaultCounts, BmcFaultProxy};
pub use faults::{ActionCounts, FaultConfig, FaultProxy};
pub use moto::{ALPINE_OWNER_ID, Moto, MotoBuilder, alpine_ami, alpine_amis, ec2_query};
pub use process::{free_port, venv_dir};
pub use sushy::{FakeSystem, Sushy};

/// What can go wrong while starting or talking to a cloud emulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The venv (or the tool inside it) is not installed.
    #[error("{} not found: run scripts/test-tools.sh (or point KUBEZERO_VENV at a venv with it)", path.display())]
    MissingTool {
        /// The executable that was looked for.
        path: PathBuf,
    },
    /// A local I/O operation failed (spawning, temp files, sockets).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The emulator process exited before it answered its readiness check.
    #[error("{name} exited early ({status}) before answering {url}; output tail:\n{tail}")]
    ExitedEarly {
        /// The emulator's name.
        name: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The readiness URL it never answered.
        url: String,
        /// The last lines of its stdout and stderr.
        tail: String,
    },
    /// The emulator did not answer its readiness check in time.
    #[error("{name} did not answer {url} within {timeout:?}; output tail:\n{tail}")]
    Timeout {
        /// The emulator's name.
        name: String,
        /// The readiness URL.
        url: String,
        /// How long the fixture waited.
        timeout: Duration,
        /// The last lines of its stdout and stderr.
        tail: String,
    },
    /// An HTTP exchange with an emulator failed or returned something unexpected.
    #[error("{context}: {message}")]
    Http {
        /// The request, e.g. `POST http://127.0.0.1:1234/moto-api/reset`.
        context: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
