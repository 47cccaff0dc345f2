//! The static CEL cost check kube-apiserver applies to a CustomResourceDefinition when it is
//! created or updated, with the server's field paths and wording.
//!
//! For every `x-kubernetes-validations` rule the API server estimates the worst-case cost of one
//! evaluation (see [`estimate`]) and multiplies it by the number of times the rule can run in one
//! object: the product of the `maxItems`/`maxProperties` of every list and map above the rule's
//! node, or, when one of them is unbounded, the number of the node's smallest serialized values
//! that fit in a 3 MiB request. A rule over [`RULE_COST_LIMIT`] is refused; so is the whole schema
//! when the sum over all rules (and `messageExpression`s) exceeds [`CRD_COST_LIMIT`], naming the
//! (at most four) rules that contributed at least 1% of that limit.
//!
//! A rule the test world cannot estimate (a function it does not model) is reported as an
//! internal error, so a test or an emulated `kubectl apply` fails instead of passing silently.
//!
//! ```
//! use kubezero_test::validation::cost::schema_cost;
//!
//! let schema = serde_json::json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
//!     "names": {
//!         "type": "array",
//!         "items": {"type": "string"},
//!         "x-kubernetes-validations": [{"rule": "self.all(n, n.matches('^[a-z]+$'))"}],
//!     },
//! }}}});
//! let report = schema_cost(&schema, "spec.validation.openAPIV3Schema", false);
//! assert!(report.errors[0].message().ends_with(
//!     "x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of \
//!      more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength \
//!      where arrays, maps, and strings are declared)"
//! ));
//! ```

mod decl;
mod estimate;
#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::Value;

pub use decl::MAX_REQUEST_SIZE_BYTES;
pub use estimate::Unsupported;

/// Largest estimated cost of one rule (or `messageExpression`), cardinality included
/// (apiextensions `StaticEstimatedCostLimit`).
pub const RULE_COST_LIMIT: u64 = 10_000_000;
/// Largest sum of the estimated costs of all expressions of one schema
/// (apiextensions `StaticEstimatedCRDCostLimit`).
pub const CRD_COST_LIMIT: u64 = 100_000_000;

/// Detail of the error on each of the most expensive rules when the schema total is too high.
pub const CONTRIBUTED_TO_TOTAL: &str =
    "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema";

/// How a refusal is reported in the `Invalid` status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostErrorKind {
    /// `Forbidden` (`FieldValueForbidden`): the server's cost refusals.
    Forbidden,
    /// `Internal error` (`InternalError`): the test world could not estimate the rule.
    Internal,
}

/// One refusal of the cost check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CostError {
    /// Field path, e.g. `spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule`.
    pub field: String,
    /// Forbidden by the server, or not estimable here.
    pub kind: CostErrorKind,
    /// The text after the error type, e.g. `estimated rule cost exceeds budget by factor of 2.4x (...)`.
    pub detail: String,
}

impl CostError {
    /// The message as the server prints it: `<field>: Forbidden: <detail>`.
    pub fn message(&self) -> String {
        let kind = match self.kind {
            CostErrorKind::Forbidden => "Forbidden",
            CostErrorKind::Internal => "Internal error",
        };
        format!("{}: {kind}: {}", self.field, self.detail)
    }

    /// The status cause reason: `FieldValueForbidden` or `InternalError`.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            CostErrorKind::Forbidden => "FieldValueForbidden",
            CostErrorKind::Internal => "InternalError",
        }
    }
}

impl fmt::Display for CostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for CostError {}

/// The estimate of one rule or `messageExpression`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpressionCost {
    /// Field path of the expression (`...x-kubernetes-validations[i].rule` or `.messageExpression`).
    pub field: String,
    /// The CEL expression.
    pub expression: String,
    /// Worst-case cost of one evaluation.
    pub max_cost: u64,
    /// How many times it can run in one object (1 for a `messageExpression`, which the server does
    /// not multiply).
    pub cardinality: u64,
    /// `max_cost × cardinality`: what the server compares with [`RULE_COST_LIMIT`].
    pub cost: u64,
}

/// The cost check of one `openAPIV3Schema`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaCost {
    /// Every estimated expression, in the order the server visits them.
    pub expressions: Vec<ExpressionCost>,
    /// Sum of the expression costs, compared with [`CRD_COST_LIMIT`].
    pub total: u64,
    /// The refusals, in the server's order: per rule, then the total.
    pub errors: Vec<CostError>,
}

impl SchemaCost {
    /// The most expensive expression, if any.
    pub fn most_expensive(&self) -> Option<&ExpressionCost> {
        self.expressions.iter().max_by_key(|e| e.cost)
    }
}

/// The cost check of one schema whose field path is `field` (e.g.
/// `spec.validation.openAPIV3Schema`). `unchanged` suppresses the per-expression limit, as the
/// server does on update for a version whose schema did not change (the total still applies).
pub fn schema_cost(schema: &Value, field: &str, unchanged: bool) -> SchemaCost {
    let mut walk = Walk {
        unchanged,
        report: SchemaCost::default(),
        most_expensive: Vec::new(),
    };
    walk.visit(schema, field, Some(1), true);
    let mut report = walk.report;
    if report.total > CRD_COST_LIMIT {
        for field in walk.most_expensive.into_iter().map(|(field, _)| field) {
            report
                .errors
                .push(forbidden(field, CONTRIBUTED_TO_TOTAL.to_owned()));
        }
        report.errors.push(forbidden(
            field.to_owned(),
            budget_message(
                "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                report.total,
                CRD_COST_LIMIT,
            ),
        ));
    }
    report
}

/// The cost check of every schema of a CRD (as JSON), with `old` the stored CRD on update. Like
/// the server, a CRD whose versions all carry the same schema is checked once, at
/// `spec.validation.openAPIV3Schema` (the internal form hoists it); otherwise each version at
/// `spec.versions[i].schema.openAPIV3Schema`.
pub fn crd_cost(crd: &Value, old: Option<&Value>) -> Vec<(String, SchemaCost)> {
    let versions: Vec<&Value> = crd["spec"]["versions"].as_array().into_iter().flatten().collect();
    let schemas: Vec<Option<&Value>> = versions.iter().map(|v| v.get("schema")).collect();
    let unchanged = |index: usize| {
        let name = &versions[index]["name"];
        old.and_then(|old| old["spec"]["versions"].as_array())
            .into_iter()
            .flatten()
            .find(|v| &v["name"] == name)
            .is_some_and(|v| v.get("schema") == schemas[index])
    };
    let identical = schemas
        .first()
        .is_some_and(|first| first.is_some() && schemas.iter().all(|s| s == first));
    if identical {
        let schema = &versions[0]["schema"]["openAPIV3Schema"];
        let field = "spec.validation.openAPIV3Schema".to_owned();
        return vec![(field.clone(), schema_cost(schema, &field, unchanged(0)))];
    }
    versions
        .iter()
        .enumerate()
        .filter(|(_, v)| v["schema"]["openAPIV3Schema"].is_object())
        .map(|(i, v)| {
            let field = format!("spec.versions[{i}].schema.openAPIV3Schema");
            let report = schema_cost(&v["schema"]["openAPIV3Schema"], &field, unchanged(i));
            (field, report)
        })
        .collect()
}

/// The refusals of [`crd_cost`], all schemas together.
pub fn crd_cost_errors(crd: &Value, old: Option<&Value>) -> Vec<CostError> {
    crd_cost(crd, old)
        .into_iter()
        .flat_map(|(_, report)| report.errors)
        .collect()
}

/// The server's wording for a cost over its limit, with the factor printed like Go's `%f`/`%.1f`.
pub fn budget_message(what: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_owned()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, \
         maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

fn forbidden(field: String, detail: String) -> CostError {
    CostError {
        field,
        kind: CostErrorKind::Forbidden,
        detail,
    }
}

/// How many times a rule on a node whose values serialize to at least `min_size` bytes can run
/// when a list or map above it is unbounded.
fn max_cardinality(min_size: i64) -> u64 {
    u64::try_from(MAX_REQUEST_SIZE_BYTES / (min_size + 1)).unwrap_or(0)
}

/// By how much a node multiplies the occurrences of its children: `maxItems`/`maxProperties` of a
/// list or map (`None` when absent), 1 for objects and scalars.
fn max_elements(node: &Value) -> Option<u64> {
    let bound = |key: &str| {
        node.get(key)
            .and_then(Value::as_i64)
            .map(|n| n.max(0).unsigned_abs())
    };
    match node.get("type").and_then(Value::as_str) {
        Some("object") if node.get("additionalProperties").is_some() => bound("maxProperties"),
        Some("array") => bound("maxItems"),
        _ => Some(1),
    }
}

struct Walk {
    unchanged: bool,
    report: SchemaCost,
    /// The (at most four) costliest expressions of at least 1% of the CRD limit, dearest first.
    most_expensive: Vec<(String, u64)>,
}

impl Walk {
    fn visit(&mut self, node: &Value, path: &str, cardinality: Option<u64>, root: bool) {
        if !node.is_object() {
            return;
        }
        let children = cardinality
            .zip(max_elements(node))
            .map(|(c, m)| c.saturating_mul(m));
        if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
            self.visit(values, &format!("{path}.additionalProperties"), children, false);
        }
        let mut properties: Vec<(&String, &Value)> = node
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .collect();
        properties.sort_by(|a, b| a.0.cmp(b.0));
        for (name, property) in properties {
            self.visit(property, &format!("{path}.properties[{name}]"), children, false);
        }
        if let Some(items) = node.get("items") {
            self.visit(items, &format!("{path}.items"), children, false);
        }
        self.rules(node, path, cardinality, root);
    }

    fn rules(&mut self, node: &Value, path: &str, cardinality: Option<u64>, root: bool) {
        let rules: Vec<&Value> = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        if rules.is_empty() {
            return;
        }
        let embedded = node
            .get("x-kubernetes-embedded-resource")
            .and_then(Value::as_bool)
            == Some(true);
        let Some(decl) = decl::schema_decl_type(node, root || embedded) else {
            self.report.errors.push(CostError {
                field: format!("{path}.x-kubernetes-validations"),
                kind: CostErrorKind::Internal,
                detail: "the test world cannot estimate the cost of rules on a schema without CEL type"
                    .into(),
            });
            return;
        };
        for (i, rule) in rules.into_iter().enumerate() {
            let text = |key: &str| {
                rule.get(key)
                    .and_then(Value::as_str)
                    .filter(|t| !t.trim().is_empty())
            };
            let Some(expression) = text("rule") else {
                continue;
            };
            let field = format!("{path}.x-kubernetes-validations[{i}].rule");
            let max_cost = match estimate::rule_cost(expression, &decl) {
                Ok(cost) => cost,
                Err(unsupported) => {
                    self.report.errors.push(CostError {
                        field,
                        kind: CostErrorKind::Internal,
                        detail: unsupported.to_string(),
                    });
                    continue;
                }
            };
            let cardinality = cardinality.unwrap_or_else(|| max_cardinality(decl.min_serialized_size));
            self.expression(field, expression, max_cost, cardinality, "estimated rule cost");
            if let Some(message) = text("messageExpression") {
                let field = format!("{path}.x-kubernetes-validations[{i}].messageExpression");
                match estimate::rule_cost(message, &decl) {
                    Ok(cost) => self.expression(field, message, cost, 1, "estimated messageExpression cost"),
                    Err(unsupported) => self.report.errors.push(CostError {
                        field,
                        kind: CostErrorKind::Internal,
                        detail: unsupported.to_string(),
                    }),
                }
            }
        }
    }

    fn expression(&mut self, field: String, expression: &str, max_cost: u64, cardinality: u64, what: &str) {
        let cost = max_cost.saturating_mul(cardinality);
        if !self.unchanged && cost > RULE_COST_LIMIT {
            self.report.errors.push(forbidden(
                field.clone(),
                budget_message(what, cost, RULE_COST_LIMIT),
            ));
        }
        self.report.total = self.report.total.saturating_add(cost);
        if cost >= CRD_COST_LIMIT / 100 {
            self.most_expensive.push((field.clone(), cost));
            self.most_expensive.sort_by_key(|e| std::cmp::Reverse(e.1));
            self.most_expensive.truncate(4);
        }
        self.report.expressions.push(ExpressionCost {
            field,
            expression: expression.to_owned(),
            max_cost,
            cardinality,
            cost,
        });
    }
}
