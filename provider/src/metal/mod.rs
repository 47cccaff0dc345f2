//! The bare-metal backend: servers reached through their Redfish BMCs.

pub mod redfish;
