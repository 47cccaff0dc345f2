//! Schema helpers used with `#[schemars(schema_with = ...)]` when generating CRDs.

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

/// Schema of a string-to-string map (labels, annotations, tags) with a bounded number of entries.
pub fn string_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": {"type": "string"},
        "maxProperties": 64,
    })
}
