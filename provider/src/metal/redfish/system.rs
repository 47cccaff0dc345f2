//! What the provider does with one server through its BMC: find its ComputerSystem, read its power
//! state, NICs and virtual-media slots, reset it, set a one-time boot override, insert and eject
//! media. The types here are the provider's own; the Redfish documents stay in `model`.

use std::sync::{Arc, Mutex};

use serde_json::json;

use super::address::SERVICE_ROOT;
use super::errors::{RedfishError, RedfishErrorKind};
use super::model::{Collection, ComputerSystem, EthernetInterface, Manager, ServiceRoot, VirtualMedia};
use super::transport::Connection;

/// Power state of a system as its BMC reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    /// On.
    On,
    /// Off.
    Off,
    /// Turning on.
    PoweringOn,
    /// Turning off.
    PoweringOff,
    /// Missing or another value (`Paused`).
    Unknown,
}

impl Power {
    fn parse(value: Option<&str>) -> Self {
        match value {
            Some("On") => Power::On,
            Some("Off") => Power::Off,
            Some("PoweringOn") => Power::PoweringOn,
            Some("PoweringOff") => Power::PoweringOff,
            _ => Power::Unknown,
        }
    }
}

/// The `ComputerSystem.Reset` types the provider uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetKind {
    /// Power on.
    On,
    /// Power off now.
    ForceOff,
    /// Ask the OS to shut down.
    GracefulShutdown,
    /// Power cycle now.
    ForceRestart,
}

impl ResetKind {
    /// The Redfish `ResetType` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetKind::On => "On",
            ResetKind::ForceOff => "ForceOff",
            ResetKind::GracefulShutdown => "GracefulShutdown",
            ResetKind::ForceRestart => "ForceRestart",
        }
    }

    /// Values a BMC may list instead of this one (some offer only `ForceOn`).
    fn alternatives(self) -> &'static [&'static str] {
        match self {
            ResetKind::On => &["On", "ForceOn"],
            ResetKind::ForceOff => &["ForceOff"],
            ResetKind::GracefulShutdown => &["GracefulShutdown"],
            ResetKind::ForceRestart => &["ForceRestart", "PowerCycle"],
        }
    }
}

/// A one-time boot override target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootTarget {
    /// Virtual (or physical) CD.
    Cd,
    /// Virtual (or physical) USB stick.
    Usb,
    /// The local disk.
    Hdd,
}

impl BootTarget {
    /// The Redfish `BootSourceOverrideTarget` value.
    pub fn as_str(self) -> &'static str {
        match self {
            BootTarget::Cd => "Cd",
            BootTarget::Usb => "Usb",
            BootTarget::Hdd => "Hdd",
        }
    }
}

/// A kind of medium a virtual-media slot takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    /// An ISO image (`CD`, `DVD`).
    Cd,
    /// A disk image on a USB stick or floppy (`USBStick`, `Floppy`).
    Usb,
}

impl MediaKind {
    /// The boot target that boots this kind of medium.
    pub fn boot_target(self) -> BootTarget {
        match self {
            MediaKind::Cd => BootTarget::Cd,
            MediaKind::Usb => BootTarget::Usb,
        }
    }
}

/// A server as its BMC describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct System {
    /// The ComputerSystem's path.
    pub path: String,
    /// Its power state.
    pub power: Power,
    /// The boot override targets the BMC accepts (empty: it does not say).
    pub boot_targets: Vec<String>,
    /// The boot mode the system reports (`UEFI`, `Legacy`), kept when overriding.
    pub boot_mode: Option<String>,
    /// The current override (`target`, `enabled`), e.g. (`Cd`, `Once`).
    pub boot_override: (Option<String>, Option<String>),
    reset_target: Option<String>,
    reset_types: Vec<String>,
    ethernet_interfaces: Option<String>,
    virtual_media: Option<String>,
    managers: Vec<String>,
}

/// A virtual-media slot of a system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSlot {
    /// The slot's path.
    pub path: String,
    /// The slot's id, e.g. `Cd`.
    pub id: String,
    /// The kinds of medium it takes.
    pub kinds: Vec<MediaKind>,
    /// The URL of the inserted image, when one is inserted.
    pub image: Option<String>,
    insert_target: Option<String>,
    eject_target: Option<String>,
}

impl MediaSlot {
    /// Whether the slot takes media of `kind`.
    pub fn takes(&self, kind: MediaKind) -> bool {
        self.kinds.contains(&kind)
    }
}

/// One server behind a BMC connection. The system's path is found once (from the address, else
/// from the service root) and kept.
#[derive(Debug)]
pub struct Bmc {
    connection: Arc<Connection>,
    system_path: Mutex<Option<String>>,
}

impl Bmc {
    /// The server at `connection`'s address.
    pub fn new(connection: Arc<Connection>) -> Self {
        let system_path = connection.address().system_path.clone();
        Self {
            connection,
            system_path: Mutex::new(system_path),
        }
    }

    /// `host:port` of the BMC.
    pub fn authority(&self) -> &str {
        &self.connection.address().authority
    }

    fn error(
        &self,
        kind: RedfishErrorKind,
        operation: &'static str,
        detail: impl Into<String>,
    ) -> RedfishError {
        RedfishError::new(kind, operation, self.authority(), detail)
    }

    /// The system's path: the one the address names, else the only member of the BMC's Systems.
    async fn system_path(&self) -> Result<String, RedfishError> {
        if let Some(path) = self.system_path.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(path);
        }
        let operation = "DiscoverSystem";
        let root: ServiceRoot = self.connection.get(operation, SERVICE_ROOT).await?;
        let systems = root.systems.ok_or_else(|| {
            self.error(
                RedfishErrorKind::Protocol,
                operation,
                "the service root lists no Systems",
            )
        })?;
        let collection: Collection = self.connection.get(operation, &systems.id).await?;
        let path = match collection.members.as_slice() {
            [only] => only.id.clone(),
            [] => return Err(self.error(RedfishErrorKind::NotFound, operation, "the BMC manages no system")),
            many => {
                return Err(self.error(
                    RedfishErrorKind::Address,
                    operation,
                    format!(
                        "the BMC manages {} systems; name one in the address (…/redfish/v1/Systems/<id>)",
                        many.len()
                    ),
                ));
            }
        };
        *self.system_path.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.clone());
        Ok(path)
    }

    /// Reads the system.
    pub async fn system(&self) -> Result<System, RedfishError> {
        let path = self.system_path().await?;
        let document: ComputerSystem = self.connection.get("GetSystem", &path).await?;
        let boot = document.boot.unwrap_or_default();
        let (reset_target, reset_types) = match document.actions.reset {
            Some(reset) => (Some(reset.target), reset.allowed),
            None => (None, Vec::new()),
        };
        Ok(System {
            path: document.odata_id.unwrap_or(path),
            power: Power::parse(document.power_state.as_deref()),
            boot_targets: boot.allowed_targets,
            boot_mode: boot.override_mode,
            boot_override: (boot.override_target, boot.override_enabled),
            reset_target,
            reset_types,
            ethernet_interfaces: document.ethernet_interfaces.map(|link| link.id),
            virtual_media: document.virtual_media.map(|link| link.id),
            managers: document
                .links
                .managed_by
                .into_iter()
                .map(|link| link.id)
                .collect(),
        })
    }

    /// Resets (powers on, off, restarts) the system. The power state follows asynchronously.
    pub async fn reset(&self, system: &System, kind: ResetKind) -> Result<(), RedfishError> {
        let operation = "Reset";
        let target = system
            .reset_target
            .clone()
            .unwrap_or_else(|| format!("{}/Actions/ComputerSystem.Reset", system.path));
        let value = if system.reset_types.is_empty() {
            kind.as_str()
        } else {
            kind.alternatives()
                .iter()
                .copied()
                .find(|value| system.reset_types.iter().any(|allowed| allowed == value))
                .ok_or_else(|| {
                    self.error(
                        RedfishErrorKind::Unsupported,
                        operation,
                        format!(
                            "{}: reset type {} not offered (offered: {})",
                            system.path,
                            kind.as_str(),
                            system.reset_types.join(", ")
                        ),
                    )
                })?
        };
        self.connection
            .post(operation, &target, &json!({"ResetType": value}))
            .await
    }

    /// Boots `target` on the next boot only, in the boot mode the system reports.
    pub async fn boot_once(&self, system: &System, target: BootTarget) -> Result<(), RedfishError> {
        let operation = "SetBootOverride";
        if !system.boot_targets.is_empty()
            && !system
                .boot_targets
                .iter()
                .any(|allowed| allowed == target.as_str())
        {
            return Err(self.error(
                RedfishErrorKind::Unsupported,
                operation,
                format!(
                    "{}: boot target {} not offered (offered: {})",
                    system.path,
                    target.as_str(),
                    system.boot_targets.join(", ")
                ),
            ));
        }
        let mut boot = json!({
            "BootSourceOverrideTarget": target.as_str(),
            "BootSourceOverrideEnabled": "Once",
        });
        if let Some(mode) = &system.boot_mode {
            boot["BootSourceOverrideMode"] = json!(mode);
        }
        self.connection
            .patch(operation, &system.path, &json!({"Boot": boot}))
            .await
    }

    /// The MAC addresses of the system's NICs, lower case.
    pub async fn mac_addresses(&self, system: &System) -> Result<Vec<String>, RedfishError> {
        let operation = "GetEthernetInterfaces";
        let Some(collection) = &system.ethernet_interfaces else {
            return Err(self.error(
                RedfishErrorKind::Unsupported,
                operation,
                format!("{}: no EthernetInterfaces", system.path),
            ));
        };
        let members: Collection = self.connection.get(operation, collection).await?;
        let mut macs = Vec::new();
        for member in members.members {
            let nic: EthernetInterface = self.connection.get(operation, &member.id).await?;
            if let Some(mac) = nic
                .mac_address
                .or(nic.permanent_mac_address)
                .filter(|mac| !mac.is_empty())
            {
                macs.push(mac.to_ascii_lowercase());
            }
        }
        Ok(macs)
    }

    /// The system's virtual-media slots (on the system, else on its managers).
    pub async fn media_slots(&self, system: &System) -> Result<Vec<MediaSlot>, RedfishError> {
        let operation = "GetVirtualMedia";
        let collection = match &system.virtual_media {
            Some(path) => Some(path.clone()),
            None => {
                let mut found = None;
                for manager in &system.managers {
                    let manager: Manager = self.connection.get(operation, manager).await?;
                    if let Some(link) = manager.virtual_media {
                        found = Some(link.id);
                        break;
                    }
                }
                found
            }
        };
        let Some(collection) = collection else {
            return Err(self.error(
                RedfishErrorKind::Unsupported,
                operation,
                format!("{}: no virtual media", system.path),
            ));
        };
        let members: Collection = self.connection.get(operation, &collection).await?;
        let mut slots = Vec::new();
        for member in members.members {
            let media: VirtualMedia = self.connection.get(operation, &member.id).await?;
            slots.push(slot(member.id, media));
        }
        Ok(slots)
    }

    /// Inserts the image at `url` into `slot` (write-protected).
    pub async fn insert_media(&self, slot: &MediaSlot, url: &str) -> Result<(), RedfishError> {
        let operation = "InsertMedia";
        let body = json!({"Image": url, "Inserted": true, "WriteProtected": true});
        match &slot.insert_target {
            Some(target) => self.connection.post(operation, target, &body).await,
            // Redfish before VirtualMedia 1.2 inserts by PATCHing the slot.
            None => self.connection.patch(operation, &slot.path, &body).await,
        }
    }

    /// Ejects whatever `slot` holds.
    pub async fn eject_media(&self, slot: &MediaSlot) -> Result<(), RedfishError> {
        let operation = "EjectMedia";
        match &slot.eject_target {
            Some(target) => self.connection.post(operation, target, &json!({})).await,
            None => {
                self.connection
                    .patch(operation, &slot.path, &json!({"Image": null, "Inserted": false}))
                    .await
            }
        }
    }
}

/// The slot a VirtualMedia document describes.
fn slot(path: String, media: VirtualMedia) -> MediaSlot {
    let mut kinds = Vec::new();
    for media_type in &media.media_types {
        let kind = match media_type.as_str() {
            "CD" | "DVD" => MediaKind::Cd,
            "USBStick" | "Floppy" => MediaKind::Usb,
            _ => continue,
        };
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    let image = media.image.filter(|image| !image.is_empty());
    let inserted = media.inserted.unwrap_or(image.is_some());
    MediaSlot {
        id: media
            .id
            .unwrap_or_else(|| path.rsplit('/').next().unwrap_or_default().to_string()),
        path,
        kinds,
        image: image.filter(|_| inserted),
        insert_target: media.actions.insert.map(|action| action.target),
        eject_target: media.actions.eject.map(|action| action.target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_from_documents() {
        let document: VirtualMedia = serde_json::from_value(json!({
            "Id": "Cd", "MediaTypes": ["CD", "DVD"], "Image": "", "Inserted": false,
            "Actions": {"#VirtualMedia.InsertMedia": {"target": "/x/Insert"}}
        }))
        .unwrap();
        let cd = slot("/redfish/v1/Systems/1/VirtualMedia/Cd".into(), document);
        assert_eq!(cd.kinds, vec![MediaKind::Cd]);
        assert_eq!(cd.image, None);
        assert_eq!(cd.insert_target.as_deref(), Some("/x/Insert"));
        assert!(cd.takes(MediaKind::Cd) && !cd.takes(MediaKind::Usb));

        let document: VirtualMedia = serde_json::from_value(json!({
            "MediaTypes": ["Floppy", "USBStick"], "Image": "http://m/x.img", "Inserted": true
        }))
        .unwrap();
        let usb = slot("/redfish/v1/Managers/1/VirtualMedia/2".into(), document);
        assert_eq!(
            (usb.id.as_str(), usb.kinds.as_slice()),
            ("2", &[MediaKind::Usb][..])
        );
        assert_eq!(usb.image.as_deref(), Some("http://m/x.img"));
        assert_eq!(usb.eject_target, None);
    }

    #[test]
    fn power_states() {
        assert_eq!(Power::parse(Some("On")), Power::On);
        assert_eq!(Power::parse(Some("PoweringOff")), Power::PoweringOff);
        assert_eq!(Power::parse(Some("Paused")), Power::Unknown);
        assert_eq!(Power::parse(None), Power::Unknown);
        assert_eq!(MediaKind::Usb.boot_target().as_str(), "Usb");
    }
}
