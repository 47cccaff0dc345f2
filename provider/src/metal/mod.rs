//! Bare-metal backend: hosts reached through Redfish BMCs, installed from virtual media.

pub mod installer;
