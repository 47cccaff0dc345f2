//! Minimal `cluster.x-k8s.io/v1beta2` CRDs for Cluster, Machine, MachineSet and MachineDeployment.
//!
//! Schemas preserve unknown fields under `spec` and `status` (the stand-in reads the fields of
//! capi-contract.md §2–§6 and keeps the rest), with the status subresource, the scale subresource on
//! MachineSet/MachineDeployment, the printer columns of the real CRDs (a subset) and the label
//! conventions of CAPI core's CRDs: contract label `cluster.x-k8s.io/v1beta2: v1beta2` (capi-contract.md
//! §1), `cluster.x-k8s.io/provider: cluster-api` and `clusterctl.cluster.x-k8s.io: ""` (§7).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

/// One printer column: (name, type, JSONPath, priority).
type Column = (&'static str, &'static str, &'static str, i32);

fn crd(kind: &str, plural: &str, short: &str, columns: &[Column], scale: bool) -> CustomResourceDefinition {
    let mut columns: Vec<Value> = columns
        .iter()
        .map(|(name, type_, path, priority)| {
            let mut column = json!({"name": name, "type": type_, "jsonPath": path});
            if *priority > 0 {
                column["priority"] = json!(priority);
            }
            column
        })
        .collect();
    columns.push(json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}));
    let mut subresources = json!({"status": {}});
    if scale {
        subresources["scale"] = json!({
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        });
    }
    let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    // `metadata` is left out of the schema: the API server validates it itself (and the emulator
    // would prune `metadata.name` under an empty `metadata: {type: object}`).
    let value = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{plural}.cluster.x-k8s.io"),
            "labels": {
                "cluster.x-k8s.io/v1beta2": "v1beta2",
                "cluster.x-k8s.io/provider": "cluster-api",
                "clusterctl.cluster.x-k8s.io": "",
            },
        },
        "spec": {
            "group": "cluster.x-k8s.io",
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": kind.to_lowercase(),
                "shortNames": [short],
                "categories": ["cluster-api"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1beta2",
                "served": true,
                "storage": true,
                "subresources": subresources,
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "spec": open,
                        "status": open,
                    },
                }},
            }],
        },
    });
    serde_json::from_value(value).expect("static CRD is well-formed")
}

/// The four CAPI core CRDs the stand-in serves, in install order: Cluster, Machine, MachineSet,
/// MachineDeployment.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        crd(
            "Cluster",
            "clusters",
            "cl",
            &[
                ("Paused", "boolean", ".spec.paused", 10),
                ("Phase", "string", ".status.phase", 0),
                ("Version", "string", ".spec.topology.version", 0),
            ],
            false,
        ),
        crd(
            "Machine",
            "machines",
            "ma",
            &[
                ("Cluster", "string", ".spec.clusterName", 0),
                ("NodeName", "string", ".status.nodeRef.name", 0),
                ("ProviderID", "string", ".spec.providerID", 0),
                ("Phase", "string", ".status.phase", 0),
                ("Version", "string", ".spec.version", 0),
            ],
            false,
        ),
        crd(
            "MachineSet",
            "machinesets",
            "ms",
            &[
                ("Cluster", "string", ".spec.clusterName", 0),
                ("Desired", "integer", ".spec.replicas", 0),
                ("Current", "integer", ".status.replicas", 0),
                ("Ready", "integer", ".status.readyReplicas", 0),
            ],
            true,
        ),
        crd(
            "MachineDeployment",
            "machinedeployments",
            "md",
            &[
                ("Cluster", "string", ".spec.clusterName", 0),
                ("Replicas", "integer", ".status.replicas", 0),
                ("Desired", "integer", ".spec.replicas", 0),
                ("Ready", "integer", ".status.readyReplicas", 0),
                ("Updated", "integer", ".status.upToDateReplicas", 0),
                ("Phase", "string", ".status.phase", 0),
            ],
            true,
        ),
    ]
}
