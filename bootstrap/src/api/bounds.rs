//! Schemas of string maps and template metadata with every size bounded.
//!
//! kube-apiserver estimates the worst-case cost of a CEL rule from the declared `maxProperties` and
//! `maxLength` of what it reads (an unbounded string counts as 3 MiB) and refuses a CRD whose rules
//! exceed the budget; the bounds here keep the rules over these maps cheap and also bound what a
//! user can store. Map keys cannot carry a `maxLength`: rules check them (their estimated size is 0).

use schemars::{Schema, SchemaGenerator, json_schema};

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
