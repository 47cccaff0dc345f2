//! Label and field selectors (`labelSelector`, `fieldSelector` query parameters).

use serde_json::Value;

use super::http::ApiError;

#[derive(Debug, Clone)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed selector: every requirement must hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let (mut parts, mut current, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

fn set_values(rest: &str, original: &str) -> Result<Vec<String>, ApiError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| ApiError::bad_request(format!("unable to parse requirement: {original}")))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect())
}

fn parse_label(part: &str) -> Result<Requirement, ApiError> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(key.trim().to_owned()));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotEq(key.trim().into(), value.trim().into()));
    }
    if let Some((key, value)) = part.split_once("==") {
        return Ok(Requirement::Eq(key.trim().into(), value.trim().into()));
    }
    if let Some((key, value)) = part.split_once('=') {
        return Ok(Requirement::Eq(key.trim().into(), value.trim().into()));
    }
    if let Some((key, rest)) = part.split_once(" notin ") {
        return Ok(Requirement::NotIn(key.trim().into(), set_values(rest, part)?));
    }
    if let Some((key, rest)) = part.split_once(" in ") {
        return Ok(Requirement::In(key.trim().into(), set_values(rest, part)?));
    }
    if part.contains(['(', ')', ' ', '<', '>']) {
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement: {part}"
        )));
    }
    Ok(Requirement::Exists(part.to_owned()))
}

fn holds(requirement: &Requirement, get: &dyn Fn(&str) -> Option<String>) -> bool {
    match requirement {
        Requirement::Eq(k, v) => get(k).as_deref() == Some(v),
        Requirement::NotEq(k, v) => get(k).as_deref() != Some(v),
        Requirement::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
        Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
        Requirement::Exists(k) => get(k).is_some(),
        Requirement::NotExists(k) => get(k).is_none(),
    }
}

impl Selector {
    /// Parses the query's selectors; field selectors support `metadata.name` and `metadata.namespace`.
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, ApiError> {
        Self::parse_for(labels, fields, &[])
    }

    /// Like [`Selector::parse`], with the kind's own field labels (`spec.nodeName` for Pods, ...)
    /// allowed too.
    pub fn parse_for(
        labels: Option<&str>,
        fields: Option<&str>,
        field_labels: &[&str],
    ) -> Result<Self, ApiError> {
        let mut selector = Self::default();
        for part in split_top(labels.unwrap_or_default()) {
            selector.labels.push(parse_label(&part)?);
        }
        for part in split_top(fields.unwrap_or_default()) {
            let requirement = match parse_label(&part)? {
                r @ (Requirement::Eq(..) | Requirement::NotEq(..)) => r,
                _ => return Err(ApiError::bad_request(format!("invalid selector: '{part}'"))),
            };
            let (Requirement::Eq(key, _) | Requirement::NotEq(key, _)) = &requirement else {
                unreachable!()
            };
            if key != "metadata.name" && key != "metadata.namespace" && !field_labels.contains(&key.as_str())
            {
                return Err(ApiError::bad_request(format!("field label not supported: {key}")));
            }
            selector.fields.push(requirement);
        }
        Ok(selector)
    }

    /// Whether the object matches.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str).map(str::to_owned);
        // A field that is not set compares as the empty string, as the API server's field sets do.
        let field = |k: &str| {
            let value = k.split('.').fold(object, |value, part| &value[part]);
            Some(match value {
                Value::String(text) => text.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
        };
        self.labels.iter().all(|r| holds(r, &label)) && self.fields.iter().all(|r| holds(r, &field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_operators() {
        let obj = json!({"metadata": {"name": "a", "namespace": "n", "labels": {"app": "x", "tier": "db"}}});
        let m = |l: &str| Selector::parse(Some(l), None).unwrap().matches(&obj);
        assert!(m("app=x"));
        assert!(m("app==x,tier"));
        assert!(!m("app!=x"));
        assert!(m("tier in (db, web)"));
        assert!(!m("tier notin (db)"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        let f = |s: &str| Selector::parse(None, Some(s)).map(|s| s.matches(&obj));
        assert!(f("metadata.name=a").unwrap());
        assert!(!f("metadata.namespace!=n").unwrap());
        assert_eq!(f("spec.x=1").unwrap_err().code, 400);
    }

    #[test]
    fn kind_field_labels_select_on_their_field_and_unset_is_empty() {
        let pod = json!({"metadata": {"name": "p", "namespace": "n"}, "spec": {"nodeName": "node-a"}});
        let pending = json!({"metadata": {"name": "q", "namespace": "n"}, "spec": {}});
        let on = |s: &str, o: &Value| {
            Selector::parse_for(None, Some(s), &["spec.nodeName"])
                .unwrap()
                .matches(o)
        };
        assert!(on("spec.nodeName=node-a", &pod));
        assert!(!on("spec.nodeName=node-b", &pod));
        assert!(
            on("spec.nodeName=", &pending),
            "an unscheduled Pod has an empty nodeName"
        );
        assert!(on("spec.nodeName!=,metadata.name=p", &pod));
        assert_eq!(
            Selector::parse(None, Some("spec.nodeName=node-a"))
                .unwrap_err()
                .code,
            400,
            "only kinds that declare the label accept it"
        );
    }
}
