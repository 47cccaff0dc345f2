//! The `spec.metal` sections of KubeZeroCluster and KubeZeroMachine: the control-plane VIP of a
//! bare-metal cluster and the selector a machine uses to claim a KubeZeroHost.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Bare-metal settings of a workload cluster (`KubeZeroCluster.spec.metal`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetalClusterSpec {
    /// IPv4 address of the control-plane VIP (served by kube-vip on the control-plane nodes).
    #[schemars(
        length(max = 15),
        regex(
            pattern = r"^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$"
        )
    )]
    pub control_plane_vip: String,

    /// Network interface that carries the VIP, e.g. `eth0`; default: the interface of the default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15), regex(pattern = r"^[a-zA-Z0-9._-]{1,15}$"))]
    pub vip_interface: Option<String>,
}

/// Bare-metal settings of one machine (`KubeZeroMachine.spec.metal`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetalMachineSpec {
    /// Which KubeZeroHost (same namespace) the machine may claim.
    pub host_selector: HostSelector,
}

/// Label selector over KubeZeroHost objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostSelector {
    /// Labels a host must carry (all of them) to be claimed.
    #[schemars(schema_with = "match_labels")]
    #[x_kube(validation = Rule::new("size(self) > 0")
        .message("hostSelector.matchLabels must select at least one label"))]
    pub match_labels: BTreeMap<String, String>,
}

/// Schema of `matchLabels`: a non-empty map of label values (at most 63 characters each).
fn match_labels(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": {"type": "string", "maxLength": 63},
        "minProperties": 1,
        "maxProperties": 64,
    })
}
