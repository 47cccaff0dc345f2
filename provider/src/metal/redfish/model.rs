//! The Redfish documents the client reads, reduced to the properties it uses (DMTF Redfish schemas
//! ServiceRoot, ComputerSystem, Manager, EthernetInterface and VirtualMedia). Every property a BMC
//! may leave out is optional; links are `@odata.id` paths.

use serde::Deserialize;

/// A link to another resource.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Link {
    /// The resource's path, e.g. `/redfish/v1/Systems/1`.
    #[serde(rename = "@odata.id")]
    pub id: String,
}

/// `/redfish/v1`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRoot {
    /// The ComputerSystem collection.
    pub systems: Option<Link>,
}

/// Any resource collection.
#[derive(Clone, Debug, Deserialize)]
pub struct Collection {
    /// The members' links.
    #[serde(rename = "Members", default)]
    pub members: Vec<Link>,
}

/// A ComputerSystem.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ComputerSystem {
    /// The resource path.
    #[serde(rename = "@odata.id")]
    pub odata_id: Option<String>,
    /// `On`, `Off`, `PoweringOn`, `PoweringOff`, `Paused`.
    pub power_state: Option<String>,
    /// Boot settings.
    pub boot: Option<Boot>,
    /// The EthernetInterface collection.
    pub ethernet_interfaces: Option<Link>,
    /// The VirtualMedia collection (Redfish 1.11+ puts it on the system).
    pub virtual_media: Option<Link>,
    /// Related resources.
    #[serde(default)]
    pub links: SystemLinks,
    /// Actions.
    #[serde(default)]
    pub actions: SystemActions,
}

/// `ComputerSystem.Boot`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Boot {
    /// `Disabled`, `Once` or `Continuous`.
    #[serde(rename = "BootSourceOverrideEnabled")]
    pub override_enabled: Option<String>,
    /// The override target, e.g. `Cd`, `Usb`, `Hdd`.
    #[serde(rename = "BootSourceOverrideTarget")]
    pub override_target: Option<String>,
    /// The targets the BMC accepts.
    #[serde(rename = "BootSourceOverrideTarget@Redfish.AllowableValues", default)]
    pub allowed_targets: Vec<String>,
    /// `UEFI` or `Legacy`.
    #[serde(rename = "BootSourceOverrideMode")]
    pub override_mode: Option<String>,
}

/// `ComputerSystem.Links`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SystemLinks {
    /// The managers (BMCs) of the system.
    #[serde(default)]
    pub managed_by: Vec<Link>,
}

/// `ComputerSystem.Actions`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SystemActions {
    /// `#ComputerSystem.Reset`.
    #[serde(rename = "#ComputerSystem.Reset")]
    pub reset: Option<ResetAction>,
}

/// The `#ComputerSystem.Reset` action.
#[derive(Clone, Debug, Deserialize)]
pub struct ResetAction {
    /// Where to POST it.
    pub target: String,
    /// The reset types the BMC accepts.
    #[serde(rename = "ResetType@Redfish.AllowableValues", default)]
    pub allowed: Vec<String>,
}

/// A Manager (the BMC itself).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Manager {
    /// The VirtualMedia collection (Redfish before 1.11 puts it on the manager).
    pub virtual_media: Option<Link>,
}

/// An EthernetInterface.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EthernetInterface {
    /// The current MAC address.
    #[serde(rename = "MACAddress")]
    pub mac_address: Option<String>,
    /// The burned-in MAC address.
    #[serde(rename = "PermanentMACAddress")]
    pub permanent_mac_address: Option<String>,
}

/// A VirtualMedia slot.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VirtualMedia {
    /// The slot's id, e.g. `Cd`, `1`.
    pub id: Option<String>,
    /// `CD`, `DVD`, `USBStick`, `Floppy`.
    #[serde(default)]
    pub media_types: Vec<String>,
    /// The inserted image's URL (`""` or null when none).
    pub image: Option<String>,
    /// Whether a medium is inserted.
    pub inserted: Option<bool>,
    /// Actions.
    #[serde(default)]
    pub actions: MediaActions,
}

/// `VirtualMedia.Actions`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct MediaActions {
    /// `#VirtualMedia.InsertMedia`.
    #[serde(rename = "#VirtualMedia.InsertMedia")]
    pub insert: Option<ActionTarget>,
    /// `#VirtualMedia.EjectMedia`.
    #[serde(rename = "#VirtualMedia.EjectMedia")]
    pub eject: Option<ActionTarget>,
}

/// An action's target.
#[derive(Clone, Debug, Deserialize)]
pub struct ActionTarget {
    /// Where to POST it.
    pub target: String,
}
