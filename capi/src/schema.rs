//! Schema helpers used with `#[schemars(schema_with = ...)]` when generating CRDs.
//!
//! kube-apiserver estimates the worst-case cost of a CEL rule from the declared `maxProperties` and
//! `maxLength` of what it reads (an unbounded string counts as 3 MiB) and refuses a CRD whose rules
//! exceed the budget: every map and list here is bounded. Map keys cannot carry a `maxLength`; rules
//! that check them see an estimated size of 0.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Schema of a `[]metav1.Condition` list: a list-map keyed by `type`, as core CAPI and kubectl expect.
pub fn conditions(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>();
    json_schema!({
        "type": "array",
        "description": "Conditions of the object, metav1.Condition-shaped; Ready and Paused are always reported.",
        "maxItems": 32,
        "items": item,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}

/// Schema of `status.failureDomains`: a list-map keyed by `name` with 1..100 items (contract v1beta2).
pub fn failure_domains(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<crate::contract::FailureDomain>();
    json_schema!({
        "type": "array",
        "description": "Failure domains the infrastructure offers, copied by core into Cluster.status.failureDomains.",
        "minItems": 1,
        "maxItems": 100,
        "items": item,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
    })
}

/// Schema of `status.addresses`: an atomic list of at most 32 machine addresses.
pub fn machine_addresses(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<crate::contract::MachineAddress>();
    json_schema!({
        "type": "array",
        "description": "Addresses of the machine, copied by core into Machine.status.addresses.",
        "maxItems": 32,
        "items": item,
        "x-kubernetes-list-type": "atomic",
    })
}

/// Largest label value (Kubernetes: 63 characters).
pub const LABEL_VALUE_MAX: u64 = 63;
/// Largest annotation value of a template's metadata.
pub const ANNOTATION_VALUE_MAX: u64 = 4096;
/// Most labels or annotations in a template's metadata.
pub const METADATA_ENTRIES_MAX: u64 = 64;

/// A string-to-string map of at most `ENTRIES` entries whose values have at most `VALUE_LEN`
/// characters.
pub fn string_map<const ENTRIES: u64, const VALUE_LEN: u64>(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": {"type": "string", "maxLength": VALUE_LEN},
        "maxProperties": ENTRIES,
    })
}

/// `metadata` of a template's `spec.template`: labels and annotations copied to the clones.
pub fn template_metadata(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "properties": {
            "labels": {
                "description": "Labels copied to objects cloned from the template.",
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": LABEL_VALUE_MAX},
                "maxProperties": METADATA_ENTRIES_MAX,
            },
            "annotations": {
                "description": "Annotations copied to objects cloned from the template.",
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": ANNOTATION_VALUE_MAX},
                "maxProperties": METADATA_ENTRIES_MAX,
            },
        },
    })
}
