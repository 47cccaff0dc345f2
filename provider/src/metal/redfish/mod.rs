//! The Redfish client of the bare-metal backend: the only place that knows Redfish documents.
//!
//! [`Redfish`] hands out a [`Bmc`] per (address, credentials, TLS choice) and keeps it, so a
//! session and the discovered system path outlive one reconcile; every BMC (`host:port`) has one
//! request queue, so by default one request at a time reaches it whatever number of hosts it
//! manages. Failures are [`RedfishError`]s classified by [`RedfishErrorKind`], which also gives the
//! condition reason a host shows.

mod address;
mod errors;
mod model;
mod system;
mod transport;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

pub use address::BmcAddress;
pub use errors::{RedfishError, RedfishErrorKind};
pub use system::{Bmc, BootTarget, MediaKind, MediaSlot, Power, ResetKind, System};
pub use transport::{
    AuthMethod, Credentials, REDFISH_REQUESTS_METRIC, RedfishRequestCounter, RedfishRequestLabels,
    RedfishSettings, RequestLog,
};

use transport::Connection;

/// What makes two hosts share a [`Bmc`]: the same address, credentials and TLS choice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BmcKey {
    address: String,
    credentials: Credentials,
    verify_tls: bool,
}

/// Every BMC connection of the process, their request queues and their shared request counter.
#[derive(Debug)]
pub struct Redfish {
    settings: RedfishSettings,
    requests: Arc<RequestLog>,
    bmcs: Mutex<HashMap<BmcKey, Arc<Bmc>>>,
    queues: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Redfish {
    /// A client set sending requests as `settings` say.
    pub fn new(settings: RedfishSettings) -> Self {
        Self {
            settings,
            requests: Arc::default(),
            bmcs: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// The request counter, for the manager's metrics registry.
    pub fn request_counter(&self) -> &RedfishRequestCounter {
        self.requests.counter()
    }

    /// The server at `address`, reached with `credentials`; the same one for the same arguments.
    /// A host whose credentials change gets a new connection and the old one is dropped.
    pub fn bmc(
        &self,
        address: &str,
        credentials: &Credentials,
        verify_tls: bool,
    ) -> Result<Arc<Bmc>, RedfishError> {
        let key = BmcKey {
            address: address.to_string(),
            credentials: credentials.clone(),
            verify_tls,
        };
        let mut bmcs = self.bmcs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bmc) = bmcs.get(&key) {
            return Ok(bmc.clone());
        }
        let parsed = BmcAddress::parse(address)?;
        let queue = self.queue(&parsed.authority);
        let connection = Connection::new(
            parsed,
            credentials.clone(),
            verify_tls,
            queue,
            self.settings,
            self.requests.clone(),
        )?;
        let bmc = Arc::new(Bmc::new(Arc::new(connection)));
        bmcs.retain(|known, _| known.address != address);
        bmcs.insert(key, bmc.clone());
        Ok(bmc)
    }

    /// Forgets the connections to `address` (the host is gone).
    pub fn forget(&self, address: &str) {
        self.bmcs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|known, _| known.address != address);
    }

    /// Requests sent so far by (operation, answer code); see [`RequestLog::snapshot`].
    pub fn requests(&self) -> BTreeMap<(&'static str, String), u64> {
        self.requests.snapshot()
    }

    fn queue(&self, authority: &str) -> Arc<Semaphore> {
        self.queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(authority.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.requests_per_bmc.max(1))))
            .clone()
    }
}

#[cfg(test)]
mod tests;
