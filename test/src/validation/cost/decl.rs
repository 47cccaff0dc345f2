//! The CEL declaration of a schema node as the API server builds it for cost estimation.
//!
//! kube-apiserver turns a structural schema into a tree of declared types that carry, besides the
//! CEL type, two numbers the cost estimator reads: the largest size a value can have (characters
//! of a string, items of a list, entries of a map) and the smallest size a value takes serialized
//! as JSON. Where the schema declares `maxLength`, `maxItems` or `maxProperties` the largest size
//! comes from it (a `maxLength` counts 4 bytes a character); where it does not, it is estimated
//! from the largest request the server accepts (3 MiB) and the smallest serialized size of the
//! elements. Map keys are plain strings whose largest size is 0: the schema cannot bound them.

use std::{collections::BTreeMap, rc::Rc};

use serde_json::Value;

/// The largest request body the API server accepts, in bytes, which bounds every unbounded value.
pub const MAX_REQUEST_SIZE_BYTES: i64 = 3 * 1024 * 1024;

/// Smallest serialized sizes of scalars, in bytes of JSON (`""`, `true`, `0`).
const MIN_STRING_SIZE: i64 = 2;
const MIN_BOOL_SIZE: i64 = 4;
const MIN_NUMBER_SIZE: i64 = 1;
/// Serialized size bounds of the string formats with a fixed shape (quotes included).
const MAX_DURATION_SIZE_JSON: i64 = 32;
const MAX_DATETIME_SIZE_JSON: i64 = 32;
const MIN_DURATION_SIZE_JSON: i64 = 3;
const JSON_DATE_SIZE: i64 = 12;
const MIN_DATETIME_SIZE_JSON: i64 = 21;

/// What kind of value a declared type holds.
#[derive(Debug)]
pub enum DeclKind {
    /// `boolean`.
    Bool,
    /// `integer`.
    Int,
    /// `number`.
    Double,
    /// `string` (without a format mapped to another type).
    String,
    /// `string` with `format: byte`.
    Bytes,
    /// `string` with `format: duration`.
    Duration,
    /// `string` with `format: date` or `date-time`.
    Timestamp,
    /// `x-kubernetes-int-or-string`: typed at run time.
    Dyn,
    /// `array` of the element type.
    List(Rc<DeclType>),
    /// `object` with `additionalProperties`: string keys to the value type.
    Map(Rc<DeclType>, Rc<DeclType>),
    /// `object` with `properties`: CEL field names (escaped) to their types.
    Object(BTreeMap<String, Rc<DeclType>>),
}

/// A declared type with the sizes the cost estimator uses.
#[derive(Debug)]
pub struct DeclType {
    /// The kind of value.
    pub kind: DeclKind,
    /// Largest size of a value: characters (times 4 with `maxLength`), items or entries; 0 for
    /// scalars, objects and map keys.
    pub max_elements: i64,
    /// Smallest size of the value serialized as JSON, in bytes.
    pub min_serialized_size: i64,
}

impl DeclType {
    fn scalar(kind: DeclKind, min_serialized_size: i64) -> Self {
        Self {
            kind,
            max_elements: 0,
            min_serialized_size,
        }
    }

    fn sized(kind: DeclKind, max_elements: i64, min_serialized_size: i64) -> Self {
        Self {
            kind,
            max_elements,
            min_serialized_size,
        }
    }

    /// The element type of a list or the value type of a map.
    pub fn elem(&self) -> Option<&Rc<DeclType>> {
        match &self.kind {
            DeclKind::List(elem) | DeclKind::Map(_, elem) => Some(elem),
            _ => None,
        }
    }
}

/// The declared type of `schema`, or `None` when the schema is not visible to CEL (no type, or a
/// list or map of such). `resource_root` is true for the root of a resource and for
/// `x-kubernetes-embedded-resource` objects, which always expose `apiVersion`, `kind` and
/// `metadata.name`/`metadata.generateName`.
pub fn schema_decl_type(schema: &Value, resource_root: bool) -> Option<Rc<DeclType>> {
    if schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        let max = match max_length(schema) {
            Some(len) => len * 4,
            None => MAX_REQUEST_SIZE_BYTES - 2,
        };
        return Some(Rc::new(DeclType::sized(DeclKind::Dyn, max, 1)));
    }
    let with_meta;
    let schema = if resource_root {
        with_meta = with_type_and_object_meta(schema);
        &with_meta
    } else {
        schema
    };
    let decl = match schema.get("type").and_then(Value::as_str)? {
        "array" => {
            let items = schema.get("items")?;
            let item = schema_decl_type(items, embedded(items))?;
            let max = match non_negative(schema, "maxItems") {
                Some(n) => n,
                None => (MAX_REQUEST_SIZE_BYTES - 2) / (item.min_serialized_size + 1),
            };
            DeclType::sized(DeclKind::List(item), max, 2)
        }
        "object" => match schema.get("additionalProperties").filter(|a| a.is_object()) {
            Some(values) => {
                let value = schema_decl_type(values, embedded(values))?;
                let max = match non_negative(schema, "maxProperties") {
                    Some(n) => n,
                    None => (MAX_REQUEST_SIZE_BYTES - 2) / (value.min_serialized_size + 6),
                };
                let key = Rc::new(DeclType::scalar(DeclKind::String, MIN_STRING_SIZE));
                DeclType::sized(DeclKind::Map(key, value), max, 2)
            }
            None => object_decl_type(schema),
        },
        "string" => string_decl_type(schema),
        "boolean" => DeclType::scalar(DeclKind::Bool, MIN_BOOL_SIZE),
        "number" => DeclType::scalar(DeclKind::Double, MIN_NUMBER_SIZE),
        "integer" => DeclType::scalar(DeclKind::Int, MIN_NUMBER_SIZE),
        _ => return None,
    };
    Some(Rc::new(decl))
}

fn object_decl_type(schema: &Value) -> DeclType {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut fields = BTreeMap::new();
    // `{}`, plus each required property without a default: its name, quotes, colon and comma.
    let mut min_size = 2;
    for (name, property) in schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let Some(field) = schema_decl_type(property, embedded(property)) else {
            continue;
        };
        if required.contains(&name.as_str()) && property.get("default").is_none() {
            min_size += name.len() as i64 + field.min_serialized_size + 4;
        }
        if let Some(escaped) = escape(name) {
            fields.insert(escaped, field);
        }
    }
    DeclType::sized(DeclKind::Object(fields), 0, min_size)
}

fn string_decl_type(schema: &Value) -> DeclType {
    let unbounded = MAX_REQUEST_SIZE_BYTES - 2;
    match schema.get("format").and_then(Value::as_str) {
        Some("byte") => {
            let max = non_negative(schema, "maxLength").unwrap_or(unbounded);
            DeclType::sized(DeclKind::Bytes, max, MIN_STRING_SIZE)
        }
        Some("duration") => {
            DeclType::sized(DeclKind::Duration, MAX_DURATION_SIZE_JSON, MIN_DURATION_SIZE_JSON)
        }
        Some("date") => DeclType::sized(DeclKind::Timestamp, JSON_DATE_SIZE, JSON_DATE_SIZE),
        Some("date-time") => DeclType::sized(
            DeclKind::Timestamp,
            MAX_DATETIME_SIZE_JSON,
            MIN_DATETIME_SIZE_JSON,
        ),
        _ => {
            let max = if let Some(len) = max_length(schema) {
                len * 4
            } else if let Some(values) = schema
                .get("enum")
                .and_then(Value::as_array)
                .filter(|e| !e.is_empty())
            {
                values
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|v| v.len() as i64)
                    .max()
                    .unwrap_or(0)
            } else {
                unbounded
            };
            DeclType::sized(DeclKind::String, max, MIN_STRING_SIZE)
        }
    }
}

/// The schema with `apiVersion`, `kind` and `metadata.{name,generateName}` declared as strings, as
/// the server exposes them at a resource root (an existing `metadata` schema is replaced).
fn with_type_and_object_meta(schema: &Value) -> Value {
    let props = schema.get("properties");
    let is_type =
        |v: Option<&Value>, t: &str| v.and_then(|p| p.get("type")).and_then(Value::as_str) == Some(t);
    let meta = props.and_then(|p| p.get("metadata"));
    let meta_props = meta.and_then(|m| m.get("properties"));
    if props.is_some()
        && is_type(props.and_then(|p| p.get("kind")), "string")
        && is_type(props.and_then(|p| p.get("apiVersion")), "string")
        && is_type(meta, "object")
        && is_type(meta_props.and_then(|p| p.get("name")), "string")
        && is_type(meta_props.and_then(|p| p.get("generateName")), "string")
    {
        return schema.clone();
    }
    let mut out = schema.clone();
    let string = serde_json::json!({"type": "string"});
    if let Some(map) = out.as_object_mut() {
        let properties = map
            .entry("properties")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(properties) = properties.as_object_mut() {
            properties.insert("kind".into(), string.clone());
            properties.insert("apiVersion".into(), string.clone());
            properties.insert(
                "metadata".into(),
                serde_json::json!({"type": "object", "properties": {"name": string, "generateName": string}}),
            );
        }
    }
    out
}

fn embedded(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true)
}

fn non_negative(schema: &Value, key: &str) -> Option<i64> {
    schema.get(key).and_then(Value::as_i64).map(|n| n.max(0))
}

fn max_length(schema: &Value) -> Option<i64> {
    non_negative(schema, "maxLength")
}

/// CEL's reserved words: properties named like them are reachable as `__word__`.
const RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// The CEL field name of a property, or `None` when the name cannot be escaped (such a property
/// is invisible to rules): `__`, `.`, `-` and `/` are spelled out, reserved words wrapped in `__`.
pub fn escape(name: &str) -> Option<String> {
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        if let Some(tail) = rest.strip_prefix("__") {
            out.push_str("__underscores__");
            rest = tail;
            continue;
        }
        match c {
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            _ => return None,
        }
        rest = &rest[c.len_utf8()..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn max_length_counts_four_bytes_a_character_and_unbounded_strings_fill_a_request() {
        let bounded = schema_decl_type(&json!({"type": "string", "maxLength": 63}), false).unwrap();
        assert_eq!(bounded.max_elements, 252);
        let unbounded = schema_decl_type(&json!({"type": "string"}), false).unwrap();
        assert_eq!(unbounded.max_elements, MAX_REQUEST_SIZE_BYTES - 2);
        let enumerated = schema_decl_type(&json!({"type": "string", "enum": ["a", "abcd"]}), false).unwrap();
        assert_eq!(enumerated.max_elements, 4);
    }

    #[test]
    fn unbounded_lists_and_maps_are_estimated_from_the_request_size() {
        let list = schema_decl_type(&json!({"type": "array", "items": {"type": "string"}}), false).unwrap();
        assert_eq!(list.max_elements, (MAX_REQUEST_SIZE_BYTES - 2) / 3);
        let map = schema_decl_type(
            &json!({"type": "object", "additionalProperties": {"type": "string"}}),
            false,
        )
        .unwrap();
        assert_eq!(map.max_elements, (MAX_REQUEST_SIZE_BYTES - 2) / 8);
        let bounded = schema_decl_type(
            &json!({"type": "object", "maxProperties": 5, "additionalProperties": {"type": "string"}}),
            false,
        )
        .unwrap();
        assert_eq!(bounded.max_elements, 5);
    }

    #[test]
    fn required_properties_without_default_grow_the_minimum_size() {
        let object = schema_decl_type(
            &json!({"type": "object", "required": ["name", "port"], "properties": {
                "name": {"type": "string"},
                "port": {"type": "integer", "default": 1},
                "other": {"type": "boolean"},
            }}),
            false,
        )
        .unwrap();
        // {} + "name": "" → 2 + 4 + 2 + 4.
        assert_eq!(object.min_serialized_size, 12);
    }

    #[test]
    fn property_names_escape_like_cel() {
        assert_eq!(escape("nodeLabels").as_deref(), Some("nodeLabels"));
        assert_eq!(escape("if").as_deref(), Some("__if__"));
        assert_eq!(escape("x-y.z").as_deref(), Some("x__dash__y__dot__z"));
        assert_eq!(escape("a b"), None);
    }
}
