//! CAAPH's `valuesTemplate` rendering: Go `text/template` (the `gtmpl` crate) over `.Cluster`,
//! `.ControlPlane` and `.InfraCluster` as unstructured maps (lowercase JSON paths), plus the Sprig
//! functions the kubezero addon templates use, with Sprig's argument order and semantics.
//!
//! Only Sprig functions listed in [`SPRIG_FUNCTIONS`] exist here; a template calling another one fails
//! to parse, and a test checks that every addon template parses, so the list grows with the templates.

use gtmpl::{Context, FuncError, Template, Value};
use gtmpl_value::Number;
use serde_json::Value as Json;

/// Sprig functions available to `valuesTemplate`s (CAAPH passes `sprig.TxtFuncMap()`).
pub const SPRIG_FUNCTIONS: &[&str] = &[
    "default",
    "empty",
    "coalesce",
    "ternary",
    "quote",
    "squote",
    "lower",
    "upper",
    "trim",
    "trimPrefix",
    "trimSuffix",
    "replace",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "hasKey",
    "join",
    "first",
    "toString",
    "splitList",
];

/// Why a `valuesTemplate` did not render.
#[derive(Debug, thiserror::Error)]
pub enum GoTemplateError {
    /// The template text does not parse.
    #[error("parsing valuesTemplate: {0}")]
    Parse(String),
    /// Executing the template failed (e.g. a field of a missing object).
    #[error("executing valuesTemplate: {0}")]
    Execute(String),
}

/// The objects CAAPH exposes to a `valuesTemplate`.
#[derive(Debug, Clone, Default)]
pub struct Builtins {
    /// The Cluster (`cluster.x-k8s.io/v1beta2`) as JSON.
    pub cluster: Json,
    /// The control-plane object; CAAPH only sets it when the Cluster has a `controlPlaneRef`.
    pub control_plane: Option<Json>,
    /// The infrastructure cluster (KubeZeroCluster) as JSON.
    pub infra_cluster: Json,
}

/// Converts JSON into a template value: objects become maps (field access by key, as for Go's
/// `map[string]interface{}`), `null` becomes nil.
pub fn to_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Number(Number::from(i)),
            (None, Some(u)) => Value::Number(Number::from(u)),
            _ => Value::Number(Number::from(n.as_f64().unwrap_or_default())),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(to_value).collect()),
        Json::Object(map) => Value::Map(map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect()),
    }
}

/// A template with the Sprig subset registered, parsed from `text`.
pub fn parse(name: &str, text: &str) -> Result<Template, GoTemplateError> {
    let mut template = Template::with_name(name);
    template.add_funcs(&sprig());
    template
        .parse(text)
        .map_err(|e| GoTemplateError::Parse(e.to_string()))?;
    Ok(template)
}

/// Renders `text` as CAAPH renders a HelmChartProxy's `valuesTemplate` for one Cluster.
pub fn render_values(text: &str, builtins: &Builtins) -> Result<String, GoTemplateError> {
    let template = parse("valuesTemplate", text)?;
    let mut root = std::collections::HashMap::new();
    root.insert("Cluster".to_owned(), to_value(&builtins.cluster));
    root.insert(
        "ControlPlane".to_owned(),
        builtins
            .control_plane
            .as_ref()
            .map(to_value)
            .unwrap_or(Value::Nil),
    );
    root.insert("InfraCluster".to_owned(), to_value(&builtins.infra_cluster));
    template
        .render(&Context::from(Value::Object(root)))
        .map_err(|e| GoTemplateError::Execute(e.to_string()))
}

type Func = fn(&[Value]) -> Result<Value, FuncError>;

fn sprig() -> Vec<(&'static str, Func)> {
    vec![
        ("default", default as Func),
        ("empty", empty_fn),
        ("coalesce", coalesce),
        ("ternary", ternary),
        ("quote", quote),
        ("squote", squote),
        ("lower", |a| unary(a, "lower", |s| s.to_lowercase())),
        ("upper", |a| unary(a, "upper", |s| s.to_uppercase())),
        ("trim", |a| unary(a, "trim", |s| s.trim().to_owned())),
        ("toString", |a| unary(a, "toString", |s| s.to_owned())),
        ("trimPrefix", |a| {
            binary(a, "trimPrefix", |p, s| s.strip_prefix(p).unwrap_or(s).to_owned())
        }),
        ("trimSuffix", |a| {
            binary(a, "trimSuffix", |p, s| s.strip_suffix(p).unwrap_or(s).to_owned())
        }),
        ("contains", |a| {
            binary_bool(a, "contains", |sub, s| s.contains(sub))
        }),
        ("hasPrefix", |a| {
            binary_bool(a, "hasPrefix", |p, s| s.starts_with(p))
        }),
        ("hasSuffix", |a| {
            binary_bool(a, "hasSuffix", |p, s| s.ends_with(p))
        }),
        ("replace", replace),
        ("hasKey", has_key),
        ("join", join),
        ("first", first),
        ("splitList", split_list),
    ]
}

/// Sprig's `strval`: strings as they are, everything else as Go's `%v` would print it.
fn strval(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Nil => "<nil>".to_owned(),
        other => other.to_string(),
    }
}

/// Sprig's `empty`: zero values and empty collections.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::NoValue | Value::Nil => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Map(m) | Value::Object(m) => m.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Function(_) => false,
    }
}

fn exactly<'a>(args: &'a [Value], name: &str, n: usize) -> Result<&'a [Value], FuncError> {
    if args.len() == n {
        Ok(args)
    } else {
        Err(FuncError::ExactlyXArgs(name.to_owned(), n))
    }
}

fn unary(args: &[Value], name: &str, f: impl Fn(&str) -> String) -> Result<Value, FuncError> {
    let args = exactly(args, name, 1)?;
    Ok(Value::String(f(&strval(&args[0]))))
}

fn binary(args: &[Value], name: &str, f: impl Fn(&str, &str) -> String) -> Result<Value, FuncError> {
    let args = exactly(args, name, 2)?;
    Ok(Value::String(f(&strval(&args[0]), &strval(&args[1]))))
}

fn binary_bool(args: &[Value], name: &str, f: impl Fn(&str, &str) -> bool) -> Result<Value, FuncError> {
    let args = exactly(args, name, 2)?;
    Ok(Value::Bool(f(&strval(&args[0]), &strval(&args[1]))))
}

/// `default DEFAULT GIVEN`: GIVEN unless empty (also when GIVEN is missing from the pipeline).
fn default(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [fallback] => Ok(fallback.clone()),
        [fallback, given] => Ok(if is_empty(given) {
            fallback.clone()
        } else {
            given.clone()
        }),
        _ => Err(FuncError::AtLeastXArgs("default".to_owned(), 1)),
    }
}

fn empty_fn(args: &[Value]) -> Result<Value, FuncError> {
    let args = exactly(args, "empty", 1)?;
    Ok(Value::Bool(is_empty(&args[0])))
}

fn coalesce(args: &[Value]) -> Result<Value, FuncError> {
    Ok(args.iter().find(|v| !is_empty(v)).cloned().unwrap_or(Value::Nil))
}

/// `ternary TRUE FALSE CONDITION`.
fn ternary(args: &[Value]) -> Result<Value, FuncError> {
    let args = exactly(args, "ternary", 3)?;
    Ok(if matches!(args[2], Value::Bool(true)) {
        args[0].clone()
    } else {
        args[1].clone()
    })
}

/// `quote`: each non-nil argument as a Go double-quoted string, joined by spaces.
fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let quoted: Vec<String> = args
        .iter()
        .filter(|v| !matches!(v, Value::Nil | Value::NoValue))
        .map(|v| serde_json::to_string(&strval(v)).unwrap_or_default())
        .collect();
    Ok(Value::String(quoted.join(" ")))
}

fn squote(args: &[Value]) -> Result<Value, FuncError> {
    let quoted: Vec<String> = args
        .iter()
        .filter(|v| !matches!(v, Value::Nil | Value::NoValue))
        .map(|v| format!("'{}'", strval(v)))
        .collect();
    Ok(Value::String(quoted.join(" ")))
}

/// `replace OLD NEW STRING`.
fn replace(args: &[Value]) -> Result<Value, FuncError> {
    let args = exactly(args, "replace", 3)?;
    Ok(Value::String(
        strval(&args[2]).replace(&strval(&args[0]), &strval(&args[1])),
    ))
}

/// `hasKey MAP KEY`.
fn has_key(args: &[Value]) -> Result<Value, FuncError> {
    let args = exactly(args, "hasKey", 2)?;
    match &args[0] {
        Value::Map(m) | Value::Object(m) => Ok(Value::Bool(m.contains_key(&strval(&args[1])))),
        _ => Err(FuncError::UnableToConvertFromValue),
    }
}

/// `join SEPARATOR LIST`.
fn join(args: &[Value]) -> Result<Value, FuncError> {
    let args = exactly(args, "join", 2)?;
    let items: Vec<String> = match &args[1] {
        Value::Array(items) => items.iter().map(strval).collect(),
        other => vec![strval(other)],
    };
    Ok(Value::String(items.join(&strval(&args[0]))))
}

fn first(args: &[Value]) -> Result<Value, FuncError> {
    let args = exactly(args, "first", 1)?;
    match &args[0] {
        Value::Array(items) => Ok(items.first().cloned().unwrap_or(Value::Nil)),
        _ => Err(FuncError::UnableToConvertFromValue),
    }
}

/// `splitList SEPARATOR STRING`.
fn split_list(args: &[Value]) -> Result<Value, FuncError> {
    let args = exactly(args, "splitList", 2)?;
    let separator = strval(&args[0]);
    Ok(Value::Array(
        strval(&args[1])
            .split(separator.as_str())
            .map(|s| Value::String(s.to_owned()))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn builtins() -> Builtins {
        Builtins {
            cluster: json!({"metadata": {"name": "demo", "labels": {"a": "b"}},
                "spec": {"clusterNetwork": {"pods": {"cidrBlocks": ["10.244.0.0/16"]}}}}),
            control_plane: None,
            infra_cluster: json!({"spec": {"controlPlaneEndpoint": {"host": "api.example", "port": 6443}}}),
        }
    }

    #[test]
    fn renders_lowercase_json_paths_index_and_trim_markers() {
        let text = "name: {{ .Cluster.metadata.name }}\n{{- /* c */}}\npods: {{ index .Cluster.spec.clusterNetwork.pods.cidrBlocks 0 | quote }}\nport: {{ .InfraCluster.spec.controlPlaneEndpoint.port }}\n";
        assert_eq!(
            render_values(text, &builtins()).unwrap(),
            "name: demo\npods: \"10.244.0.0/16\"\nport: 6443\n"
        );
    }

    #[test]
    fn missing_keys_print_no_value_and_default_replaces_them() {
        let b = builtins();
        assert_eq!(
            render_values("{{ .Cluster.metadata.nope }}", &b).unwrap(),
            "<no value>"
        );
        assert_eq!(
            render_values("{{ .Cluster.metadata.nope | default \"x\" }}", &b).unwrap(),
            "x"
        );
        assert_eq!(
            render_values("{{ .Cluster.metadata.name | default \"x\" }}", &b).unwrap(),
            "demo"
        );
    }

    #[test]
    fn sprig_functions_take_sprigs_argument_order() {
        let b = builtins();
        let cases = [
            ("{{ trimPrefix \"de\" .Cluster.metadata.name }}", "mo"),
            (
                "{{ replace \"/\" \"-\" (index .Cluster.spec.clusterNetwork.pods.cidrBlocks 0) }}",
                "10.244.0.0-16",
            ),
            ("{{ hasKey .Cluster.metadata.labels \"a\" }}", "true"),
            (
                "{{ ternary \"on\" \"off\" (hasKey .Cluster.metadata.labels \"z\") }}",
                "off",
            ),
            ("{{ join \",\" (splitList \".\" \"a.b.c\") }}", "a,b,c"),
            ("{{ upper .Cluster.metadata.name | squote }}", "'DEMO'"),
            ("{{ if empty .ControlPlane }}none{{ end }}", "none"),
        ];
        for (text, expected) in cases {
            assert_eq!(render_values(text, &b).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn unknown_functions_do_not_parse() {
        assert!(matches!(
            parse("t", "{{ toYaml . }}"),
            Err(GoTemplateError::Parse(_))
        ));
    }
}
