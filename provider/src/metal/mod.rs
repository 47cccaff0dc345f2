//! The bare-metal backend: servers reached through their Redfish BMCs and installed from virtual
//! media.

pub mod installer;
pub mod redfish;
