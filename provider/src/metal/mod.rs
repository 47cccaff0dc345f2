//! The bare-metal backend: KubeZeroHost servers reached through their Redfish BMCs, and the boot
//! media the provider hands them (`cidata`: the NoCloud seed with the host's bootstrap data).

pub mod cidata;
