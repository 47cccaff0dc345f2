//! The bare-metal backend: KubeZeroHost servers reached through their Redfish BMCs, the boot media
//! the provider hands them (`cidata`: the NoCloud seed with the host's bootstrap data) and the
//! installer overlay that writes Alpine to their disks.

pub mod cidata;
pub mod installer;
pub mod media;
pub mod redfish;
