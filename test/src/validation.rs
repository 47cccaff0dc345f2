//! Offline validation of custom resources against a CRD's OpenAPI v3 schema, worded like kube-apiserver.
//!
//! [`CrdValidator`] takes one version of a [`CustomResourceDefinition`] and checks an object (a
//! [`serde_json::Value`], typically parsed from a manifest) the way kube-apiserver does on create and
//! update, returning every refusal as a [`FieldError`] with the server's field path and wording:
//!
//! 1. **Decoding**: unknown fields are refused as with `fieldValidation=Strict` (kubectl's default),
//!    `null` in a non-nullable field is dropped (or replaced by the field's `default`), and schema
//!    `default`s are applied. Unknown fields make the server reject the request before validation,
//!    so when there are any they are the only errors returned.
//! 2. **Structural schema** (kube-openapi): `type` (and `nullable`), `x-kubernetes-int-or-string`,
//!    `enum`, `pattern`, `minLength`/`maxLength`, `minimum`/`maximum` (and exclusive variants),
//!    `multipleOf`, `minItems`/`maxItems`, `minProperties`/`maxProperties`, `required`,
//!    `additionalProperties`, `x-kubernetes-preserve-unknown-fields`, `x-kubernetes-embedded-resource`,
//!    `allOf`/`anyOf`/`oneOf`/`not`.
//! 3. **CEL** `x-kubernetes-validations`, evaluated by kube's client-side CEL ([`kube::core::cel`]),
//!    including transition rules (`oldSelf`) when an old object is given. Like kube-apiserver
//!    (`hasBlockingErr` in the custom resource strategy), CEL is **skipped** when step 2 found a
//!    `Required value`, `Unsupported value`, `Too long`, `Too many` or type error; the server then adds
//!    one whole-object error ([`CEL_SKIPPED`], see [`FieldError::is_cel_skipped`]) instead of the rule
//!    failures. Other schema errors (`should match`, bounds, ...) do not block CEL.
//!
//! Not covered: `format` checks, `x-kubernetes-list-type` set/map uniqueness, ObjectMeta validation
//! (`metadata` at the root and in embedded resources is accepted as is), validation ratcheting on
//! update (the whole new object is checked), and the runtime CEL cost budget. The static cost
//! estimate the server checks when the CRD itself is created or updated is in [`cost`].
//!
//! ```
//! use kubezero_test::validation::{CrdValidator, crd_for};
//!
//! let crd = crd_for("KubeZeroHost").expect("a kubezero kind");
//! let validator = CrdValidator::new(&crd, "v1alpha1").unwrap();
//! let host = serde_json::json!({
//!     "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
//!     "kind": "KubeZeroHost",
//!     "metadata": {"name": "h", "namespace": "default"},
//!     "spec": {"online": "yes"},
//! });
//! let errors = validator.validate(&host, None);
//! assert!(errors.iter().any(|e| e.field == "spec.bmc" && e.message == "spec.bmc: Required value"));
//! ```

pub mod cost;

use std::{collections::HashMap, fmt};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::{CompiledSchema, ErrorKind, ValidationError, Validator, compile_schema};
use regex::Regex;
use serde_json::{Map, Value};

/// Detail of the whole-object error kube-apiserver adds when schema errors keep it from running the
/// CEL rules (the error's field is empty and prints as `<nil>`).
pub const CEL_SKIPPED: &str = "some validation rules were not checked because the object was invalid; \
                               correct the existing errors to complete validation";

/// One reason the API server refuses an object, as it reports it in the `Invalid` status causes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the refused field, e.g. `spec.aws.region` or `spec.files[0].path`; empty for errors
    /// about the whole object.
    pub field: String,
    /// The server's message including the `<field>: ` prefix, e.g.
    /// `spec.format: Unsupported value: "yaml": supported values: "alpine-config", "cloud-config"`.
    /// Unknown fields read `unknown field "<field>"`, as in the server's strict decoding error.
    pub message: String,
    /// The CEL rule (`x-kubernetes-validations[].rule`) that refused the object; `None` for schema
    /// and decoding errors.
    pub rule: Option<String>,
}

impl FieldError {
    /// Whether this is the error saying CEL rules were skipped because of blocking schema errors.
    pub fn is_cel_skipped(&self) -> bool {
        self.field.is_empty() && self.rule.is_none() && self.message.ends_with(CEL_SKIPPED)
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FieldError {}

/// Why a CRD schema cannot be used for validation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The CRD has no version of that name.
    #[error("CRD {crd} has no version {version}")]
    UnknownVersion {
        /// Name of the CRD.
        crd: String,
        /// The requested version.
        version: String,
    },
    /// The CRD version has no `openAPIV3Schema`.
    #[error("version {version} of CRD {crd} has no openAPIV3Schema")]
    MissingSchema {
        /// Name of the CRD.
        crd: String,
        /// The version without schema.
        version: String,
    },
    /// The schema could not be turned into JSON.
    #[error("the openAPIV3Schema of CRD {crd} cannot be serialized: {source}")]
    Serialize {
        /// Name of the CRD.
        crd: String,
        /// The serialization error.
        #[source]
        source: serde_json::Error,
    },
    /// A `pattern` is not a valid regular expression.
    #[error("{path}: pattern {pattern:?} does not compile: {source}")]
    InvalidPattern {
        /// Schema path of the property, e.g. `spec.files[*].path`.
        path: String,
        /// The pattern.
        pattern: String,
        /// The regex error.
        #[source]
        source: regex::Error,
    },
    /// A CEL rule (or its `messageExpression`) does not compile.
    #[error("{path}: CEL rule does not compile: {message}")]
    InvalidRule {
        /// Schema path of the node carrying the rule.
        path: String,
        /// The compiler's message, naming the rule.
        message: String,
    },
}

/// A CEL rule found in a schema (`x-kubernetes-validations`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CelRule {
    /// Schema path of the node carrying the rule: `spec.aws`, `spec.files[*]` for array items, `[*]`
    /// also for map values; empty for the root.
    pub schema_path: String,
    /// The CEL expression.
    pub rule: String,
    /// The static `message`, if any.
    pub message: Option<String>,
    /// The `fieldPath` the refusal is reported at, relative to the node, if any.
    pub field_path: Option<String>,
}

/// The CRDs of both kubezero providers: `kubezero_provider::api::crds()` then
/// `kubezero_bootstrap::api::crds()`.
pub fn kubezero_crds() -> Vec<CustomResourceDefinition> {
    let mut crds = kubezero_provider::api::crds();
    crds.extend(kubezero_bootstrap::api::crds());
    crds
}

/// The kubezero CRD whose kind is `kind` (e.g. `KubeZeroMachine`), if any.
pub fn crd_for(kind: &str) -> Option<CustomResourceDefinition> {
    kubezero_crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
}

/// The `openAPIV3Schema` of one version of a CRD, as JSON.
pub fn schema_of(crd: &CustomResourceDefinition, version: &str) -> Result<Value, SchemaError> {
    let name = || {
        crd.metadata
            .name
            .clone()
            .unwrap_or_else(|| crd.spec.names.plural.clone())
    };
    let served = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == version)
        .ok_or_else(|| SchemaError::UnknownVersion {
            crd: name(),
            version: version.to_owned(),
        })?;
    let schema = served
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .ok_or_else(|| SchemaError::MissingSchema {
            crd: name(),
            version: version.to_owned(),
        })?;
    serde_json::to_value(schema).map_err(|source| SchemaError::Serialize { crd: name(), source })
}

/// Validates `object` (and, for an update, the transition from `old`) against one version of a CRD.
/// Shorthand for [`CrdValidator::new`] then [`CrdValidator::validate`]; build a [`CrdValidator`] once
/// to validate many objects.
pub fn validate(
    crd: &CustomResourceDefinition,
    version: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<Vec<FieldError>, SchemaError> {
    Ok(CrdValidator::new(crd, version)?.validate(object, old))
}

/// Every CEL rule of a schema, in schema order (properties alphabetically).
pub fn cel_rules(schema: &Value) -> Vec<CelRule> {
    let mut rules = Vec::new();
    for_each_node(schema, "", &mut |node, path| {
        for rule in node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = |key: &str| rule.get(key).and_then(Value::as_str).map(str::to_owned);
            if let Some(expression) = text("rule") {
                rules.push(CelRule {
                    schema_path: path.to_owned(),
                    rule: expression,
                    message: text("message"),
                    field_path: text("fieldPath"),
                });
            }
        }
    });
    rules
}

/// A validator for one CRD version: the schema with its patterns and CEL rules compiled once.
#[derive(Debug)]
pub struct CrdValidator {
    schema: Value,
    compiled: CompiledSchema,
    patterns: HashMap<String, Regex>,
    cel: Validator,
}

impl CrdValidator {
    /// A validator for `version` of `crd`. Fails when the version or its schema is missing, a
    /// `pattern` is not a regular expression or a CEL rule does not compile.
    pub fn new(crd: &CustomResourceDefinition, version: &str) -> Result<Self, SchemaError> {
        Self::from_schema(schema_of(crd, version)?)
    }

    /// A validator for an `openAPIV3Schema` given as JSON.
    pub fn from_schema(schema: Value) -> Result<Self, SchemaError> {
        let mut patterns = HashMap::new();
        let mut bad_pattern = None;
        for_each_node(&schema, "", &mut |node, path| {
            let Some(pattern) = node.get("pattern").and_then(Value::as_str) else {
                return;
            };
            if bad_pattern.is_some() || patterns.contains_key(pattern) {
                return;
            }
            match Regex::new(pattern) {
                Ok(regex) => {
                    patterns.insert(pattern.to_owned(), regex);
                }
                Err(source) => {
                    bad_pattern = Some(SchemaError::InvalidPattern {
                        path: path.to_owned(),
                        pattern: pattern.to_owned(),
                        source,
                    })
                }
            }
        });
        if let Some(error) = bad_pattern {
            return Err(error);
        }
        let compiled = compile_schema(&schema);
        let mut bad_rule = None;
        for_each_compiled(&compiled, "", &mut |node, path| {
            if bad_rule.is_none()
                && let Some(error) = node.compilation_errors().first()
            {
                bad_rule = Some(SchemaError::InvalidRule {
                    path: path.to_owned(),
                    message: error.to_string(),
                });
            }
        });
        if let Some(error) = bad_rule {
            return Err(error);
        }
        Ok(Self {
            schema,
            compiled,
            patterns,
            cel: Validator::new(),
        })
    }

    /// The `openAPIV3Schema` this validator checks against.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// `object` as the server stores it after decoding: unknown fields pruned (they are returned too,
    /// worded like the strict decoding error, `unknown field "<field>"`), `null`s in non-nullable
    /// fields dropped or replaced by their default, and schema `default`s applied. Does not validate:
    /// call [`CrdValidator::validate`] on the result.
    pub fn decode(&self, object: &Value) -> (Value, Vec<FieldError>) {
        let mut unknown = Vec::new();
        let decoded = decode(&self.schema, object, "", true, &mut unknown);
        (decoded, unknown)
    }

    /// Every refusal of `object`: on create when `old` is `None`, else on update from `old` (which
    /// enables transition rules). Empty when the server would accept the object. See the module
    /// documentation for the order of the checks and when CEL is skipped.
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut unknown = Vec::new();
        let object = decode(&self.schema, object, "", true, &mut unknown);
        if !unknown.is_empty() {
            return unknown;
        }
        let old = old.map(|old| decode(&self.schema, old, "", true, &mut Vec::new()));
        let mut causes = Vec::new();
        self.check(&self.schema, &object, "", &mut causes);
        let blocked = causes.iter().any(|cause| cause.kind.blocks_cel());
        let mut errors: Vec<FieldError> = causes.into_iter().map(Cause::into_field_error).collect();
        if blocked {
            errors.push(FieldError {
                field: String::new(),
                message: format!("<nil>: Invalid value: \"null\": {CEL_SKIPPED}"),
                rule: None,
            });
        } else if let Err(failures) = self.cel.validate_compiled(&self.compiled, &object, old.as_ref()) {
            errors.extend(failures.into_vec().into_iter().map(|f| self.cel_error(f)));
        }
        errors
    }

    /// A CEL failure worded like kube-apiserver: `<field>: Invalid value: "<type>": <message>`, where
    /// `<type>` is the schema type of the node carrying the rule (or another wording for rules with a
    /// `reason`).
    fn cel_error(&self, failure: ValidationError) -> FieldError {
        let owner = rule_owner_type(&self.schema, &failure.field_path, &failure.rule);
        let message = failure.message.trim();
        let body = match (&failure.kind, failure.reason.as_deref()) {
            (ErrorKind::ValidationFailure, Some("FieldValueForbidden")) => format!("Forbidden: {message}"),
            (ErrorKind::ValidationFailure, Some("FieldValueRequired")) => {
                format!("Required value: {message}")
            }
            (ErrorKind::ValidationFailure, Some("FieldValueDuplicate")) => {
                format!("Duplicate value: {}", go_quote(&owner))
            }
            _ => format!("Invalid value: {}: {message}", go_quote(&owner)),
        };
        FieldError {
            message: format!("{}: {body}", shown(&failure.field_path)),
            field: failure.field_path,
            rule: Some(failure.rule).filter(|rule| !rule.is_empty()),
        }
    }

    /// The structural checks of kube-openapi's schema validator, in its order.
    fn check(&self, schema: &Value, value: &Value, path: &str, out: &mut Vec<Cause>) {
        let push = |out: &mut Vec<Cause>, kind, body: String| {
            out.push(Cause {
                field: path.to_owned(),
                kind,
                body,
            })
        };
        if let Some((expected, actual)) = type_mismatch(schema, value) {
            push(
                out,
                Kind::TypeInvalid,
                format!(
                    "Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
                ),
            );
            check_enum(schema, value, path, out);
            return;
        }
        if value.is_null() {
            check_enum(schema, value, path, out);
            return;
        }
        self.check_junctors(schema, value, path, out);
        match value {
            Value::String(s) => {
                let chars = s.chars().count() as u64;
                if let Some(max) = uint(schema, "maxLength")
                    && chars > max
                {
                    let unit = if max == 1 { "byte" } else { "bytes" };
                    push(
                        out,
                        Kind::TooLong,
                        format!("Too long: may not be more than {max} {unit}"),
                    );
                }
                if let Some(min) = uint(schema, "minLength")
                    && chars < min
                {
                    push(
                        out,
                        Kind::Invalid,
                        format!(
                            "Invalid value: {}: {path} in body should be at least {min} chars long",
                            go_quote(s)
                        ),
                    );
                }
                if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
                    && let Some(regex) = self.patterns.get(pattern)
                    && !regex.is_match(s)
                {
                    push(
                        out,
                        Kind::Invalid,
                        format!(
                            "Invalid value: {}: {path} in body should match '{pattern}'",
                            go_quote(s)
                        ),
                    );
                }
            }
            Value::Number(_) => check_number(schema, value, path, out),
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
                    for (index, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &format!("{path}[{index}]"), out);
                    }
                }
                let len = items.len() as u64;
                if let Some(min) = uint(schema, "minItems")
                    && len < min
                {
                    push(
                        out,
                        Kind::Invalid,
                        format!("Invalid value: {len}: {path} in body should have at least {min} items"),
                    );
                }
                if let Some(max) = uint(schema, "maxItems")
                    && len > max
                {
                    push(out, Kind::TooMany, too_many(len, max));
                }
                if schema.get("uniqueItems") == Some(&Value::Bool(true))
                    && items.iter().enumerate().any(|(i, a)| items[..i].contains(a))
                {
                    push(
                        out,
                        Kind::Invalid,
                        format!("Invalid value: \"\": {path} in body shouldn't contain duplicates"),
                    );
                }
            }
            _ => {}
        }
        check_enum(schema, value, path, out);
        if let Value::Object(fields) = value {
            self.check_object(schema, fields, path, out);
        }
    }

    fn check_object(&self, schema: &Value, fields: &Map<String, Value>, path: &str, out: &mut Vec<Cause>) {
        let count = fields.len() as u64;
        // kube-openapi stops checking an object (and everything in it) at a property count error.
        if let Some(min) = uint(schema, "minProperties")
            && count < min
        {
            out.push(Cause {
                field: path.to_owned(),
                kind: Kind::Invalid,
                body: format!("Invalid value: {count}: {path} in body should have at least {min} properties"),
            });
            return;
        }
        if let Some(max) = uint(schema, "maxProperties")
            && count > max
        {
            out.push(Cause {
                field: path.to_owned(),
                kind: Kind::TooMany,
                body: too_many(count, max),
            });
            return;
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        let embedded =
            path.is_empty() || schema.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
        for (key, field) in fields {
            let child = join(path, key);
            if embedded && is_object_meta_key(key) {
                // apiVersion, kind and metadata are validated by the server itself.
            } else if let Some(property) = properties.and_then(|p| p.get(key)) {
                self.check(property, field, &child, out);
            } else if let Some(additional) = additional.filter(|a| a.is_object()) {
                self.check(additional, field, &child, out);
            } else if additional == Some(&Value::Bool(false)) {
                out.push(Cause {
                    field: path.to_owned(),
                    kind: Kind::Invalid,
                    body: format!(
                        "Invalid value: {}: {child} in body is a forbidden property",
                        go_quote(key)
                    ),
                });
            }
        }
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(key) = required.as_str()
                && !fields.contains_key(key)
            {
                out.push(Cause {
                    field: join(path, key),
                    kind: Kind::Required,
                    body: "Required value".to_owned(),
                });
            }
        }
    }

    /// `allOf`, `anyOf`, `oneOf` and `not` (structural schemas allow only value checks in them).
    fn check_junctors(&self, schema: &Value, value: &Value, path: &str, out: &mut Vec<Cause>) {
        let branches = |key: &str| schema.get(key).and_then(Value::as_array).into_iter().flatten();
        let errors_of = |branch: &Value| {
            let mut errors = Vec::new();
            self.check(branch, value, path, &mut errors);
            errors
        };
        for branch in branches("allOf") {
            out.extend(errors_of(branch));
        }
        let invalid = |detail: &str| Cause {
            field: path.to_owned(),
            kind: Kind::Invalid,
            body: format!("Invalid value: \"\": {path} {detail}"),
        };
        if schema.get("anyOf").is_some() && !branches("anyOf").any(|b| errors_of(b).is_empty()) {
            out.push(invalid("must validate at least one schema (anyOf)"));
        }
        if schema.get("oneOf").is_some() && branches("oneOf").filter(|b| errors_of(b).is_empty()).count() != 1
        {
            out.push(invalid("must validate one and only one schema (oneOf)"));
        }
        if let Some(not) = schema.get("not").filter(|n| n.is_object())
            && errors_of(not).is_empty()
        {
            out.push(invalid("must not validate the schema (not)"));
        }
    }
}

/// Kinds of field errors, as far as the CEL blocking rule needs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Required,
    NotSupported,
    TooLong,
    TooMany,
    TypeInvalid,
    Invalid,
}

impl Kind {
    /// kube-apiserver's `hasBlockingErr`: these schema errors keep CEL rules from running.
    fn blocks_cel(self) -> bool {
        self != Kind::Invalid
    }
}

/// A schema error before it is turned into a [`FieldError`]: `body` is the message after `<field>: `.
#[derive(Debug)]
struct Cause {
    field: String,
    kind: Kind,
    body: String,
}

impl Cause {
    fn into_field_error(self) -> FieldError {
        FieldError {
            message: format!("{}: {}", shown(&self.field), self.body),
            field: self.field,
            rule: None,
        }
    }
}

/// What the server does while decoding before it validates: prune unknown fields (reported here,
/// as strict field validation does), drop `null` from non-nullable fields without default, and apply
/// defaults.
fn decode(schema: &Value, value: &Value, path: &str, root: bool, unknown: &mut Vec<FieldError>) -> Value {
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keeps_unknown = schema.get("x-kubernetes-preserve-unknown-fields")
                == Some(&Value::Bool(true))
                || additional.is_some_and(|a| a.is_boolean());
            let embedded = root || schema.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
            let mut out = Map::new();
            for (key, field) in fields {
                let child = join(path, key);
                if embedded && is_object_meta_key(key) {
                    // The server owns apiVersion, kind and metadata: never pruned or defaulted by a
                    // CRD schema, even one that declares `metadata: {type: object}`.
                    out.insert(key.clone(), field.clone());
                } else if let Some(property) = properties.and_then(|p| p.get(key)) {
                    if field.is_null() && property.get("nullable") != Some(&Value::Bool(true)) {
                        if let Some(default) = property.get("default") {
                            out.insert(key.clone(), decode(property, default, &child, false, unknown));
                        }
                    } else {
                        out.insert(key.clone(), decode(property, field, &child, false, unknown));
                    }
                } else if let Some(additional) = additional.filter(|a| a.is_object()) {
                    out.insert(key.clone(), decode(additional, field, &child, false, unknown));
                } else if keeps_unknown {
                    out.insert(key.clone(), field.clone());
                } else {
                    unknown.push(FieldError {
                        message: format!("unknown field \"{child}\""),
                        field: child,
                        rule: None,
                    });
                }
            }
            for (key, property) in properties.into_iter().flatten() {
                if !out.contains_key(key)
                    && let Some(default) = property.get("default")
                {
                    out.insert(
                        key.clone(),
                        decode(property, default, &join(path, key), false, unknown),
                    );
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => match schema.get("items").filter(|s| s.is_object()) {
            Some(item_schema) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| decode(item_schema, item, &format!("{path}[{i}]"), false, unknown))
                    .collect(),
            ),
            None => value.clone(),
        },
        _ => value.clone(),
    }
}

/// `(expected, actual)` type names when `value` does not have the schema's type.
fn type_mismatch(schema: &Value, value: &Value) -> Option<(String, &'static str)> {
    let expected: Vec<&str> = if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        vec!["integer", "string"]
    } else {
        vec![schema.get("type").and_then(Value::as_str)?]
    };
    let actual = match value {
        Value::Null if schema.get("nullable") == Some(&Value::Bool(true)) => return None,
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let integral_float = actual == "number" && value.as_f64().is_some_and(|f| f.fract() == 0.0);
    let accepted = expected.contains(&actual)
        || (integral_float && expected.contains(&"integer"))
        || (actual == "integer" && expected.contains(&"number"));
    (!accepted).then(|| (expected.join(","), actual))
}

fn check_enum(schema: &Value, value: &Value, path: &str, out: &mut Vec<Cause>) {
    let Some(allowed) = schema
        .get("enum")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    else {
        return;
    };
    let same = |a: &Value| match (a, value) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == value,
    };
    if allowed.iter().any(same) {
        return;
    }
    let supported: Vec<String> = allowed
        .iter()
        .map(|v| go_quote(v.as_str().map_or_else(|| v.to_string(), str::to_owned).as_str()))
        .collect();
    out.push(Cause {
        field: path.to_owned(),
        kind: Kind::NotSupported,
        body: format!(
            "Unsupported value: {}: supported values: {}",
            go_value(value),
            supported.join(", ")
        ),
    });
}

fn check_number(schema: &Value, value: &Value, path: &str, out: &mut Vec<Cause>) {
    let Some(number) = value.as_f64() else {
        return;
    };
    let integer = value.is_i64() || value.is_u64();
    // kube-openapi compares integers as integers (bounds truncated) and prints them as such.
    let bound = |b: f64| {
        if integer {
            format!("{}", b.trunc() as i64)
        } else {
            go_float(b)
        }
    };
    let shown = if integer {
        value.to_string()
    } else {
        go_float(number)
    };
    let mut invalid = |detail: String| {
        out.push(Cause {
            field: path.to_owned(),
            kind: Kind::Invalid,
            body: format!("Invalid value: {shown}: {path} in body {detail}"),
        })
    };
    if let Some(factor) = schema.get("multipleOf").and_then(Value::as_f64)
        && factor > 0.0
        && (number / factor).fract() != 0.0
    {
        invalid(format!("should be a multiple of {}", bound(factor)));
    }
    let flag = |key: &str| schema.get(key) == Some(&Value::Bool(true));
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let max_shown = if integer { max.trunc() } else { max };
        if flag("exclusiveMaximum") && number >= max_shown {
            invalid(format!("should be less than {}", bound(max)));
        } else if number > max_shown {
            invalid(format!("should be less than or equal to {}", bound(max)));
        }
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let min_shown = if integer { min.trunc() } else { min };
        if flag("exclusiveMinimum") && number <= min_shown {
            invalid(format!("should be greater than {}", bound(min)));
        } else if number < min_shown {
            invalid(format!("should be greater than or equal to {}", bound(min)));
        }
    }
}

/// The schema type of the node that carries `rule` on the way to `field` (the value the server
/// prints in a CEL refusal), found by walking the schema along the field path.
fn rule_owner_type(schema: &Value, field: &str, rule: &str) -> String {
    fn carries(node: &Value, rule: &str) -> bool {
        node.get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .is_some_and(|rules| {
                rules
                    .iter()
                    .any(|r| r.get("rule").and_then(Value::as_str) == Some(rule))
            })
    }
    fn walk<'a>(node: &'a Value, rest: &str, root: bool, chain: &mut Vec<&'a Value>) -> bool {
        chain.push(node);
        if rest.is_empty() {
            return true;
        }
        if let Some(after) = rest.strip_prefix('[')
            && let Some((index, after)) = after.split_once(']')
            && index.bytes().all(|b| b.is_ascii_digit())
            && let Some(items) = node.get("items")
            && walk(items, after, false, chain)
        {
            return true;
        }
        let name = if root { Some(rest) } else { rest.strip_prefix('.') };
        if let Some(name) = name {
            let ends = |key: &str| {
                name.strip_prefix(key)
                    .filter(|after| after.is_empty() || after.starts_with(['.', '[']))
            };
            for (key, property) in node
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                if let Some(after) = ends(key)
                    && walk(property, after, false, chain)
                {
                    return true;
                }
            }
            if let Some(additional) = node.get("additionalProperties").filter(|a| a.is_object()) {
                // Map keys may contain dots: try every split.
                for (at, _) in name.match_indices(['.', '[']).chain([(name.len(), "")]) {
                    if at > 0 && walk(additional, &name[at..], false, chain) {
                        return true;
                    }
                }
            }
        }
        chain.pop();
        false
    }
    let type_of = |node: &Value| {
        node.get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut chain = Vec::new();
    if walk(schema, field, true, &mut chain)
        && let Some(owner) = chain.iter().rev().find(|node| carries(node, rule))
    {
        return type_of(owner);
    }
    let mut first = None;
    for_each_node(schema, "", &mut |node, _| {
        if first.is_none() && carries(node, rule) {
            first = Some(type_of(node));
        }
    });
    first.unwrap_or_else(|| "object".to_owned())
}

/// Calls `visit` on every schema node below and including `schema`, with its schema path.
fn for_each_node(schema: &Value, path: &str, visit: &mut dyn FnMut(&Value, &str)) {
    if !schema.is_object() {
        return;
    }
    visit(schema, path);
    for (key, property) in schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        for_each_node(property, &join(path, key), visit);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = schema.get(key) {
            for_each_node(child, &format!("{path}[*]"), visit);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for branch in schema.get(key).and_then(Value::as_array).into_iter().flatten() {
            for_each_node(branch, path, visit);
        }
    }
    if let Some(not) = schema.get("not") {
        for_each_node(not, path, visit);
    }
}

/// Calls `visit` on every node of a compiled schema, with its schema path.
fn for_each_compiled(node: &CompiledSchema, path: &str, visit: &mut dyn FnMut(&CompiledSchema, &str)) {
    visit(node, path);
    let mut properties: Vec<_> = node.properties.iter().collect();
    properties.sort_by_key(|(key, _)| *key);
    for (key, property) in properties {
        for_each_compiled(property, &join(path, key), visit);
    }
    for child in node.items.iter().chain(&node.additional_properties) {
        for_each_compiled(child, &format!("{path}[*]"), visit);
    }
    for branch in node.all_of.iter().chain(&node.one_of).chain(&node.any_of) {
        for_each_compiled(branch, path, visit);
    }
}

fn is_object_meta_key(key: &str) -> bool {
    matches!(key, "apiVersion" | "kind" | "metadata")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A field path as Go's `field.Path` prints it (`<nil>` for the whole object).
fn shown(field: &str) -> &str {
    if field.is_empty() { "<nil>" } else { field }
}

fn uint(schema: &Value, key: &str) -> Option<u64> {
    schema.get(key).and_then(Value::as_u64)
}

/// Go's `field.TooMany` wording.
fn too_many(actual: u64, max: u64) -> String {
    let unit = if max == 1 { "item" } else { "items" };
    format!("Too many: {actual}: must have at most {max} {unit}")
}

/// A value as Go's `field.Error` prints it: strings quoted, numbers and booleans bare, `null` as
/// `"null"`; arrays and objects (which Go prints as Go syntax) as JSON.
fn go_value(value: &Value) -> String {
    match value {
        Value::Null => go_quote("null"),
        Value::String(s) => go_quote(s),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), go_float),
        other => other.to_string(),
    }
}

/// Go's `%q`: a double-quoted string with Go escapes.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x80 && c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `%v` for a float64: shortest digits, exponent form (`1e+06`) below 1e-4 and from 1e6 on.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    let scientific = format!("{f:e}");
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return f.to_string();
    };
    let exponent: i32 = exponent.parse().unwrap_or_default();
    if (-4..6).contains(&exponent) {
        f.to_string()
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn validator(spec: Value) -> CrdValidator {
        CrdValidator::from_schema(json!({
            "type": "object",
            "properties": {"spec": spec},
        }))
        .unwrap()
    }

    fn messages(validator: &CrdValidator, spec: Value) -> Vec<String> {
        validator
            .validate(
                &json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "x"}, "spec": spec}),
                None,
            )
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    #[test]
    fn schema_errors_use_the_apiserver_wording() {
        let v = validator(json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "count": {"type": "integer", "minimum": 1, "maximum": 3},
                "ratio": {"type": "number", "maximum": 1000000},
                "list": {"type": "array", "maxItems": 1, "items": {"type": "string", "minLength": 1}},
                "on": {"type": "boolean"},
                "size": {"x-kubernetes-int-or-string": true},
            },
        }));
        assert_eq!(messages(&v, json!({"name": "ok"})), Vec::<String>::new());
        assert_eq!(
            messages(&v, json!({"name": "Abc"})),
            ["spec.name: Invalid value: \"Abc\": spec.name in body should match '^[a-z]+$'"]
        );
        let errors = messages(
            &v,
            json!({"mode": "c", "count": 4, "ratio": 2e6, "list": ["", "x"], "on": "yes", "size": true}),
        );
        assert_eq!(
            errors,
            [
                "spec.count: Invalid value: 4: spec.count in body should be less than or equal to 3",
                "spec.list[0]: Invalid value: \"\": spec.list[0] in body should be at least 1 chars long",
                "spec.list: Too many: 2: must have at most 1 item",
                "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
                "spec.on: Invalid value: \"string\": spec.on in body must be of type boolean: \"string\"",
                "spec.ratio: Invalid value: 2e+06: spec.ratio in body should be less than or equal to 1e+06",
                "spec.size: Invalid value: \"boolean\": spec.size in body must be of type integer,string: \
                 \"boolean\"",
                "spec.name: Required value",
                &format!("<nil>: Invalid value: \"null\": {CEL_SKIPPED}"),
            ]
        );
        assert_eq!(
            messages(&v, json!({"name": "abcdef"})),
            [
                "spec.name: Too long: may not be more than 5 bytes".to_owned(),
                format!("<nil>: Invalid value: \"null\": {CEL_SKIPPED}")
            ]
        );
    }

    #[test]
    fn unknown_fields_are_the_only_errors_like_strict_field_validation() {
        let v = validator(json!({
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "labels": {"type": "object", "additionalProperties": {"type": "string"}}},
        }));
        let errors = v.validate(&json!({"spec": {"nmae": "x", "labels": {"a.b/c": "d"}}}), None);
        assert_eq!(
            errors,
            [FieldError {
                field: "spec.nmae".into(),
                message: "unknown field \"spec.nmae\"".into(),
                rule: None
            }]
        );
    }

    #[test]
    fn nulls_are_dropped_and_defaults_applied_before_validation() {
        let v = validator(json!({
            "type": "object",
            "required": ["mode"],
            "properties": {
                "mode": {"type": "string", "default": "a"},
                "note": {"type": "string"},
                "maybe": {"type": "string", "nullable": true},
            },
        }));
        assert!(messages(&v, json!({"mode": null, "note": null, "maybe": null})).is_empty());
        let list = validator(json!({"type": "array", "items": {"type": "string"}}));
        assert_eq!(
            messages(&list, json!([null]))[0],
            "spec[0]: Invalid value: \"null\": spec[0] in body must be of type string: \"null\""
        );
    }

    #[test]
    fn cel_rules_report_the_rule_and_are_skipped_after_blocking_errors() {
        let v = validator(json!({
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}],
            "properties": {
                "min": {"type": "integer"},
                "max": {"type": "integer", "maximum": 10},
                "mode": {"type": "string", "enum": ["a"]},
                "items": {
                    "type": "array",
                    "items": {"type": "string"},
                    "x-kubernetes-validations": [{"rule": "self.all(x, x != 'bad')", "message": "no bad", "reason": "FieldValueForbidden"}],
                },
            },
        }));
        let errors = v.validate(&json!({"spec": {"min": 3, "max": 2, "items": ["bad"]}}), None);
        assert_eq!(
            errors,
            [
                FieldError {
                    field: "spec".into(),
                    message: "spec: Invalid value: \"object\": min must not exceed max".into(),
                    rule: Some("self.min <= self.max".into()),
                },
                FieldError {
                    field: "spec.items".into(),
                    message: "spec.items: Forbidden: no bad".into(),
                    rule: Some("self.all(x, x != 'bad')".into()),
                },
            ]
        );
        // A bound error does not block CEL; an enum error does.
        let bound = v.validate(&json!({"spec": {"min": 30, "max": 20}}), None);
        assert_eq!(bound.len(), 2, "{bound:#?}");
        assert!(bound[1].rule.is_some());
        let blocked = v.validate(&json!({"spec": {"min": 3, "max": 2, "mode": "b"}}), None);
        assert_eq!(blocked.len(), 2, "{blocked:#?}");
        assert!(blocked[1].is_cel_skipped());
    }

    #[test]
    fn transition_rules_need_the_old_object() {
        let v = validator(json!({
            "type": "object",
            "properties": {"id": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "id is immutable"}]}},
        }));
        let old = json!({"spec": {"id": "a"}});
        let new = json!({"spec": {"id": "b"}});
        assert!(v.validate(&new, None).is_empty());
        let errors = v.validate(&new, Some(&old));
        assert_eq!(
            errors[0].message,
            "spec.id: Invalid value: \"string\": id is immutable"
        );
    }

    #[test]
    fn broken_schemas_are_errors_not_panics() {
        let pattern = CrdValidator::from_schema(
            json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "(["}}}),
        );
        assert!(matches!(pattern, Err(SchemaError::InvalidPattern { ref path, .. }) if path == "a"));
        let rule = CrdValidator::from_schema(
            json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.a ==", "message": "m"}]}),
        );
        assert!(matches!(rule, Err(SchemaError::InvalidRule { .. })), "{rule:?}");
        let crd = crd_for("KubeZeroHost").unwrap();
        assert!(matches!(
            CrdValidator::new(&crd, "v9"),
            Err(SchemaError::UnknownVersion { .. })
        ));
        let v = validator(json!({"type": "object"}));
        assert_eq!(
            v.validate(&json!("not an object"), None)[0].message,
            "<nil>: Invalid value: \"string\":  in body must be of type object: \"string\""
        );
    }

    #[test]
    fn cel_rules_are_listed_with_their_schema_path() {
        let rules = cel_rules(&json!({
            "type": "object",
            "properties": {"a": {"type": "array", "items": {"type": "object", "x-kubernetes-validations": [{"rule": "has(self.x)", "fieldPath": ".x"}]}}},
        }));
        assert_eq!(
            rules,
            [CelRule {
                schema_path: "a[*]".into(),
                rule: "has(self.x)".into(),
                message: None,
                field_path: Some(".x".into())
            }]
        );
    }

    #[test]
    fn go_formatting_matches_fmt() {
        assert_eq!(go_float(3.0), "3");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(256000.0), "256000");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(1.5e-7), "1.5e-07");
        assert_eq!(go_quote("a\"b\n"), "\"a\\\"b\\n\"");
    }

    #[test]
    fn every_kubezero_kind_has_a_crd() {
        for kind in [
            "KubeZeroCluster",
            "KubeZeroClusterTemplate",
            "KubeZeroMachine",
            "KubeZeroMachineTemplate",
            "KubeZeroHost",
            "KubeZeroConfig",
            "KubeZeroConfigTemplate",
        ] {
            assert_eq!(crd_for(kind).map(|c| c.spec.names.kind), Some(kind.to_owned()));
        }
        assert_eq!(kubezero_crds().len(), 7);
        assert!(crd_for("Pod").is_none());
    }

    #[test]
    fn metadata_is_never_pruned_even_when_the_schema_declares_it() {
        let schema = json!({"type": "object", "properties": {
            "metadata": {"type": "object"},
            "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}});
        let validator = CrdValidator::from_schema(schema).unwrap();
        let object = json!({"apiVersion": "x/v1", "kind": "X",
            "metadata": {"name": "x", "namespace": "default", "labels": {"a": "b"}}, "spec": {"size": 1}});
        let (decoded, unknown) = validator.decode(&object);
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(decoded["metadata"], object["metadata"]);
        assert!(validator.validate(&object, None).is_empty());
    }
}
