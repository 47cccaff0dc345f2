//! `meta.k8s.io/v1` Table output for `kubectl get` (Accept `application/json;as=Table;...`), with the
//! CRD's `additionalPrinterColumns` evaluated by a JSONPath subset.

use serde_json::{Value, json};

use super::registry::{Column, ResourceType};

/// Whether the Accept header asks for a v1 Table.
pub(crate) fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| {
        let params: Vec<&str> = first.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && !params.contains(&"v=v1beta1")
    })
}

#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter(String, String),
}

fn parse_path(path: &str) -> Option<Vec<Step>> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut steps = Vec::new();
    let chars: Vec<char> = path.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let mut field = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    field.push(chars[i]);
                    i += 1;
                }
                if !field.is_empty() {
                    steps.push(Step::Field(field));
                }
            }
            '[' => {
                let end = chars[i..].iter().position(|c| *c == ']')? + i;
                let inner: String = chars[i + 1..end].iter().collect();
                i = end + 1;
                if inner == "*" {
                    steps.push(Step::All);
                } else if let Ok(n) = inner.parse() {
                    steps.push(Step::Index(n));
                } else {
                    let inner = inner.strip_prefix("?(@.")?.strip_suffix(')')?;
                    let (key, value) = inner.split_once("==")?;
                    let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
                    steps.push(Step::Filter(key.trim().into(), value.into()));
                }
            }
            _ => return None,
        }
    }
    Some(steps)
}

/// Every value `path` selects in `object` (an empty list when the path is not in the supported subset).
pub(crate) fn jsonpath<'a>(object: &'a Value, path: &str) -> Vec<&'a Value> {
    let Some(steps) = parse_path(path) else {
        return Vec::new();
    };
    let mut current = vec![object];
    for step in steps {
        let mut next = Vec::new();
        for value in current {
            match &step {
                Step::Field(f) => next.extend(value.get(f)),
                Step::Index(n) => next.extend(value.get(*n)),
                Step::All => next.extend(value.as_array().into_iter().flatten()),
                Step::Filter(k, v) => next.extend(value.as_array().into_iter().flatten().filter(|item| {
                    item.get(k).is_some_and(|x| {
                        x.as_str() == Some(v.as_str()) || x.to_string().as_str() == v.as_str()
                    })
                })),
            }
        }
        current = next;
    }
    current
}

/// Kubernetes' `HumanDuration` (as in the AGE column).
pub(crate) fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn age(timestamp: &Value) -> Value {
    let Some(ts) = timestamp.as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return json!("<unknown>");
    };
    json!(human_duration(
        jiff::Timestamp::now().as_second() - ts.as_second()
    ))
}

fn columns(rt: &ResourceType) -> Vec<Column> {
    let column = |name: &str, type_: &str, path: &str, description: &str| Column {
        name: name.into(),
        type_: type_.into(),
        json_path: path.into(),
        description: description.into(),
        priority: 0,
    };
    let mut out = vec![column(
        "Name",
        "string",
        ".metadata.name",
        "Name must be unique within a namespace.",
    )];
    match &rt.custom {
        Some(custom) => out.extend(custom.columns.iter().cloned()),
        None if rt.plural == "namespaces" => out.push(column(
            "Status",
            "string",
            ".status.phase",
            "The phase of the namespace",
        )),
        None => {}
    }
    let has_age = out.iter().any(|c| c.json_path == ".metadata.creationTimestamp");
    if !has_age {
        out.push(column(
            "Age",
            "date",
            ".metadata.creationTimestamp",
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
        ));
    }
    out
}

fn cell(object: &Value, column: &Column) -> Value {
    let Some(value) = jsonpath(object, &column.json_path).into_iter().next() else {
        return Value::Null;
    };
    match column.type_.as_str() {
        "date" => age(value),
        "integer" | "number" | "boolean" => value.clone(),
        _ => match value {
            Value::String(_) => value.clone(),
            other => json!(other.to_string()),
        },
    }
}

/// The Table of `objects`; `include` is the `includeObject` parameter (`None`, `Metadata` default, `Object`).
pub(crate) fn table(rt: &ResourceType, objects: &[Value], include: &str, list_meta: Value) -> Value {
    let columns = columns(rt);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            let format = if c.json_path == ".metadata.name" {
                "name"
            } else {
                ""
            };
            json!({"name": c.name, "type": if c.type_ == "date" { "string" } else { c.type_.as_str() },
                   "format": format, "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = columns.iter().map(|c| cell(o, c)).collect();
            let object = match include {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": definitions, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset() {
        let o = json!({"metadata": {"labels": {"cluster.x-k8s.io/cluster-name": "c1"}},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}]}});
        assert_eq!(
            jsonpath(&o, ".metadata.labels.cluster\\.x-k8s\\.io/cluster-name"),
            vec![&json!("c1")]
        );
        assert_eq!(
            jsonpath(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![&json!("True")]
        );
        assert_eq!(jsonpath(&o, ".status.conditions[1].type"), vec![&json!("X")]);
        assert!(jsonpath(&o, ".spec.missing").is_empty());
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
    }

    #[test]
    fn table_accept_header() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
