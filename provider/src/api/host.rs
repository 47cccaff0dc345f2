//! KubeZeroHost: one bare-metal server in the inventory, reached through its Redfish BMC. A
//! KubeZeroMachine with `spec.metal` claims an Available host whose labels match its selector.

use kube::CustomResource;
use kubezero_capi::{conditions::Condition, schema::conditions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a KubeZeroHost: how to reach its BMC and how it boots.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha1",
    kind = "KubeZeroHost",
    doc = "A bare-metal server with a Redfish BMC, available to be claimed by a KubeZeroMachine.",
    namespaced,
    status = "KubeZeroHostStatus",
    derive = "PartialEq",
    shortname = "kzh",
    category = "cluster-api",
    label("cluster.x-k8s.io/v1beta2", "v1alpha1"),
    label("cluster.x-k8s.io/provider", "infrastructure-kubezero"),
    printcolumn = r#"{"name": "State", "type": "string", "description": "Provisioning state", "jsonPath": ".status.state"}"#,
    printcolumn = r#"{"name": "Power", "type": "string", "description": "Power state reported by the BMC", "jsonPath": ".status.powerState"}"#,
    printcolumn = r#"{"name": "Consumer", "type": "string", "description": "KubeZeroMachine that claimed the host", "jsonPath": ".spec.consumerRef.name"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "description": "Why the host is (not) ready", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name": "BMC", "type": "string", "description": "BMC address", "jsonPath": ".spec.bmc.address", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KubeZeroHostSpec {
    /// Baseboard management controller of the host.
    pub bmc: Bmc,

    /// MAC address of the NIC the host boots from, e.g. `52:54:00:12:34:56`.
    #[serde(rename = "bootMACAddress")]
    #[schemars(length(max = 17), regex(pattern = r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$"))]
    pub boot_mac_address: String,

    /// Whether the host should be powered on while it is not provisioned.
    #[serde(default)]
    pub online: bool,

    /// The KubeZeroMachine (same namespace) that claimed the host. Set and cleared by the provider
    /// with a resourceVersion precondition, so a host is never claimed twice; not for users to set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_ref: Option<ConsumerRef>,

    /// Which disk to install to; default: the first disk the host reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device_hints: Option<RootDeviceHints>,

    /// Static addresses of the boot NIC, written to the NoCloud `network-config` of the boot media;
    /// without it the host configures its network by DHCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<HostNetwork>,
}

/// Baseboard management controller (Redfish) of a host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bmc {
    /// Redfish URL, e.g. `redfish+https://10.0.0.5/redfish/v1/Systems/1` or `https://10.0.0.5`.
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^(redfish|redfish-virtualmedia)(\+https?)?://.+|^https?://.+")
    )]
    pub address: String,

    /// Secret in the same namespace with keys `username` and `password` for the BMC.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub credentials_name: String,

    /// Skip TLS certificate verification of the BMC (self-signed BMC certificates).
    #[serde(default)]
    pub disable_certificate_verification: bool,

    /// How to authenticate: HTTP `Basic` on every request, or a Redfish `Session` (one login, then
    /// a token; for BMCs that limit or slow down Basic authentication).
    #[serde(default)]
    pub auth_method: BmcAuthMethod,
}

/// How the provider authenticates to a BMC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BmcAuthMethod {
    /// HTTP Basic authentication on every request.
    #[default]
    Basic,
    /// A Redfish session created with the credentials.
    Session,
}

/// Annotation that takes a host out of the pool: it is not claimed and the provider sends its BMC
/// nothing until the annotation is removed (for a person to work on the server).
pub const DETACHED_ANNOTATION: &str = "kubezero.io/detached";

/// Hints selecting the root disk of a host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RootDeviceHints {
    /// Linux device name of the disk, e.g. `/dev/sda` or `/dev/disk/by-path/...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), regex(pattern = r"^/dev/"))]
    pub device_name: Option<String>,
}

/// Observed state of a KubeZeroHost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeZeroHostStatus {
    /// Where the host is in its lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<HostState>,

    /// Power state last reported by the BMC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_state: Option<PowerState>,

    /// What inspection found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<HostHardware>,

    /// The provisioning for the current consumer: whose it is and how its media URLs are checked
    /// (the installer's reports arrive as the `kubezero.io/installer-report` annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<HostProvisioning>,

    /// Conditions of the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions")]
    pub conditions: Vec<Condition>,
}

/// Lifecycle state of a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HostState {
    /// BMC credentials and reachability are being checked.
    Registering,
    /// NICs, power state and virtual-media slots are being read.
    Inspecting,
    /// Ready to be claimed.
    Available,
    /// Claimed; boot media inserted and the host is booting.
    Provisioning,
    /// Running as a node of a workload cluster.
    Provisioned,
    /// Released; being powered off and wiped.
    Deprovisioning,
    /// Needs attention; see the conditions.
    Error,
}

/// Power state of a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PowerState {
    /// Powered on.
    On,
    /// Powered off.
    Off,
    /// Turning on.
    PoweringOn,
    /// Turning off.
    PoweringOff,
    /// The BMC did not say.
    Unknown,
}

/// What inspection found on a host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostHardware {
    /// MAC addresses of the host's NICs (lower case).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub mac_addresses: Vec<String>,

    /// Virtual-media slots of the BMC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub media_slots: Vec<MediaSlotInfo>,

    /// Boot mode the system reports (`UEFI`, `Legacy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<String>,

    /// The BMC address inspected (a host pointed at another BMC is inspected again).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 2048))]
    pub bmc_address: String,
}

/// One provisioning of a host for one machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostProvisioning {
    /// UID of the KubeZeroMachine this provisioning is for.
    #[schemars(length(max = 64))]
    pub machine_uid: String,

    /// SHA-256 (hex) of the media token: the media URLs carry the token, the status only its hash.
    #[schemars(length(equal = 64), regex(pattern = r"^[0-9a-f]{64}$"))]
    pub token_sha256: String,
}

/// One virtual-media slot of a host's BMC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaSlotInfo {
    /// The slot's Redfish id, e.g. `Cd`.
    pub id: String,
    /// The media it takes: `CD` (ISO images) and/or `USB` (disk images).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<String>,
}

/// Reference to the KubeZeroMachine that claimed a host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerRef {
    /// Name of the KubeZeroMachine.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// UID of the KubeZeroMachine (a new machine of the same name is another consumer).
    #[schemars(length(min = 1, max = 64))]
    pub uid: String,
}

/// Finalizer of every KubeZeroHost: deleting a claimed host waits until its machine released it.
pub const HOST_FINALIZER: &str = "kubezerohost.infrastructure.cluster.x-k8s.io";

/// An IPv4 address (dotted quad).
const IPV4_PATTERN: &str =
    r"^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$";
/// An IPv6 address in colon notation (`::` shortening allowed, no embedded IPv4).
const IPV6_PATTERN: &str = r"^[0-9a-fA-F]{0,4}(:[0-9a-fA-F]{0,4}){2,7}$";
/// An IPv4 or IPv6 address.
const IP_PATTERN: &str = r"^(((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])|[0-9a-fA-F]{0,4}(:[0-9a-fA-F]{0,4}){2,7})$";
/// An IPv4 address with a prefix length of 0-32, or an IPv6 address with one of 0-128.
const CIDR_PATTERN: &str = r"^(((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/([0-9]|[12][0-9]|3[0-2])|[0-9a-fA-F]{0,4}(:[0-9a-fA-F]{0,4}){2,7}/([0-9]|[1-9][0-9]|1[01][0-9]|12[0-8]))$";

/// Static network configuration of a host's boot NIC (the one with `bootMACAddress`), rendered as
/// netplan-style `network-config` version 2 for cloud-init or tiny-cloud.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostNetwork {
    /// Addresses with prefix length, IPv4 (`10.0.0.5/24`) or IPv6 (`2001:db8::5/64`).
    #[schemars(
        length(min = 1, max = 16),
        inner(length(max = 43), regex(pattern = CIDR_PATTERN))
    )]
    pub addresses: Vec<String>,

    /// IPv4 default gateway, e.g. `10.0.0.1`; needs an IPv4 address in `addresses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15), regex(pattern = IPV4_PATTERN))]
    pub gateway4: Option<String>,

    /// IPv6 default gateway, e.g. `2001:db8::1`; needs an IPv6 address in `addresses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 39), regex(pattern = IPV6_PATTERN))]
    pub gateway6: Option<String>,

    /// DNS servers, IPv4 or IPv6.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 39), regex(pattern = IP_PATTERN)))]
    pub nameservers: Vec<String>,

    /// DNS search domains, e.g. `example.com`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 6),
        inner(
            length(max = 253),
            regex(
                pattern = r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*$"
            )
        )
    )]
    pub search_domains: Vec<String>,
}
