//! Unit tests of the CRD cost check: the pieces on small schemas, and the four rules a real
//! kube-apiserver v1.36 refused in the unbounded bootstrap CRDs kept under `test/fixtures/crds/refused/`.

use std::path::Path;

use serde_json::{Value, json};

use super::*;

/// Tail of every budget message.
const ADVICE: &str = "(try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, \
                      maps, and strings are declared)";

fn refused_fixture(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/crds/refused")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("refused CRD fixture");
    serde_saphyr::from_str(&text).expect("fixture YAML")
}

/// A root schema with `spec.<name>` = `node`.
fn spec_with(name: &str, node: Value) -> Value {
    json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {name: node}}}})
}

fn names_list(max_items: Option<u64>) -> Value {
    let mut list = json!({
        "type": "array",
        "items": {"type": "string", "maxLength": 5},
        "x-kubernetes-validations": [{"rule": "self.all(n, n.matches('^[a-z]+$'))"}],
    });
    if let Some(max) = max_items {
        list["maxItems"] = json!(max);
    }
    spec_with("names", list)
}

const ROOT: &str = "spec.validation.openAPIV3Schema";

#[test]
fn a_bounded_list_rule_costs_its_items_times_the_step() {
    let report = schema_cost(&names_list(Some(10)), ROOT, false);
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    let rule = &report.expressions[0];
    assert_eq!(
        rule.field,
        format!("{ROOT}.properties[spec].properties[names].x-kubernetes-validations[0].rule")
    );
    // range 1 + result 1 + 10 items × (loop condition 2 + step: accumulator 1 + `n` 1 +
    // matches ceil((20 + 1) × 0.1) × ceil(8 × 0.25)).
    assert_eq!(rule.max_cost, 2 + 10 * (2 + 1 + 1 + 3 * 2));
    assert_eq!(rule.cardinality, 1);
    assert_eq!(report.total, rule.cost);
}

#[test]
fn the_same_rule_on_an_unbounded_list_is_refused() {
    let report = schema_cost(&names_list(None), ROOT, false);
    // An unbounded list of strings holds up to (3 MiB - 2) / 3 items.
    let items = (MAX_REQUEST_SIZE_BYTES as u64 - 2) / 3;
    assert_eq!(report.expressions[0].max_cost, 2 + items * 10);
    let field = format!("{ROOT}.properties[spec].properties[names].x-kubernetes-validations[0].rule");
    assert_eq!(
        report.errors.iter().map(CostError::message).collect::<Vec<_>>(),
        vec![format!(
            "{field}: Forbidden: estimated rule cost exceeds budget by factor of 1.048575x {ADVICE}"
        )]
    );
    assert_eq!(report.errors[0].reason(), "FieldValueForbidden");
}

#[test]
fn nested_lists_multiply_the_cardinality_of_a_rule_below_them() {
    let item = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 10}},
        "x-kubernetes-validations": [{"rule": "self.name != 'x'"}],
    });
    let nested = |outer: Option<u64>| {
        let mut schema = json!({"type": "array", "items": {"type": "array", "maxItems": 3, "items": item}});
        if let Some(max) = outer {
            schema["maxItems"] = json!(max);
        }
        schema_cost(&spec_with("groups", schema), ROOT, false)
    };
    let bounded = nested(Some(2));
    assert_eq!(bounded.expressions[0].cardinality, 6);
    assert_eq!(bounded.expressions[0].cost, 6 * bounded.expressions[0].max_cost);
    assert_eq!(
        bounded.expressions[0].field,
        format!("{ROOT}.properties[spec].properties[groups].items.items.x-kubernetes-validations[0].rule")
    );
    // Unbounded above: as many `{}` (2 bytes, `name` is optional) plus a comma as fit in 3 MiB.
    let unbounded = nested(None);
    assert_eq!(
        unbounded.expressions[0].cardinality,
        MAX_REQUEST_SIZE_BYTES as u64 / 3
    );
}

#[test]
fn map_keys_have_no_size_so_only_values_grow_the_cost() {
    let map = |value_bound: Option<u64>, rule: &str| {
        let mut value = json!({"type": "string"});
        if let Some(max) = value_bound {
            value["maxLength"] = json!(max);
        }
        let node = json!({
            "type": "object", "maxProperties": 8, "additionalProperties": value,
            "x-kubernetes-validations": [{"rule": rule}],
        });
        schema_cost(&spec_with("labels", node), ROOT, false).expressions[0].max_cost
    };
    let on_keys = "self.all(k, k.matches('^[a-z]+$'))";
    // ceil((0 + 1) × 0.1) × ceil(8 × 0.25) whatever the value bound.
    assert_eq!(map(None, on_keys), 2 + 8 * (2 + 1 + 1 + 2));
    assert_eq!(map(Some(4), on_keys), map(None, on_keys));
    let on_values = "self.all(k, self[k].matches('^[a-z]+$'))";
    // self[k] costs 3; ceil((16 + 1) × 0.1) × 2 with maxLength 4.
    assert_eq!(map(Some(4), on_values), 2 + 8 * (2 + 1 + 3 + 2 * 2));
    assert!(map(None, on_values) > 100 * map(Some(4), on_values));
}

#[test]
fn presence_tests_cost_nothing_and_string_equality_traverses_the_shorter_side() {
    let node = json!({
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 100}, "b": {"type": "string", "maxLength": 5}},
        "x-kubernetes-validations": [{"rule": "!has(self.a) || self.a == self.b"}],
    });
    let report = schema_cost(&spec_with("pair", node), ROOT, false);
    // has: 1 (self), `!`: +1, select a and b: 2 each, == : ceil(20 × 0.1).
    assert_eq!(report.expressions[0].max_cost, 2 + 2 + 2 + 2);
}

#[test]
fn a_rule_the_test_world_does_not_model_is_an_internal_error_not_a_pass() {
    let node = json!({
        "type": "string", "maxLength": 10,
        "x-kubernetes-validations": [{"rule": "isQuantity(self) && quantity(self).isLessThan(quantity('1Gi'))"}],
    });
    let report = schema_cost(&spec_with("size", node), ROOT, false);
    assert_eq!(report.errors.len(), 1, "{:#?}", report.errors);
    assert_eq!(report.errors[0].kind, CostErrorKind::Internal);
    assert!(
        report.errors[0]
            .message()
            .contains("Internal error: the test world cannot estimate the cost of the function `isQuantity`"),
        "{}",
        report.errors[0]
    );
}

#[test]
fn factors_print_like_the_server() {
    assert!(budget_message("x", 12_345_678, RULE_COST_LIMIT).contains("factor of 1.234568x ("));
    assert!(budget_message("x", 24_159_482, RULE_COST_LIMIT).contains("factor of 2.4x ("));
    assert!(budget_message("x", 1_000_000_001, RULE_COST_LIMIT).contains("factor of more than 100x ("));
}

#[test]
fn versions_with_one_schema_are_checked_once_at_the_top_level_path() {
    let schema = names_list(None);
    let crd = |versions: Value| json!({"spec": {"versions": versions}});
    let same = crd(json!([
        {"name": "v1", "schema": {"openAPIV3Schema": schema}},
        {"name": "v2", "schema": {"openAPIV3Schema": schema}},
    ]));
    let fields: Vec<String> = crd_cost(&same, None).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, vec![ROOT.to_owned()]);
    let different = crd(json!([
        {"name": "v1", "schema": {"openAPIV3Schema": schema}},
        {"name": "v2", "schema": {"openAPIV3Schema": names_list(Some(4))}},
    ]));
    let errors = crd_cost_errors(&different, None);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .field
            .starts_with("spec.versions[0].schema.openAPIV3Schema.properties[spec]")
    );
}

#[test]
fn an_update_that_keeps_a_schema_keeps_its_rules_but_not_a_new_one() {
    let old =
        json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": names_list(None)}}]}});
    assert_eq!(crd_cost_errors(&old, None).len(), 1);
    assert!(crd_cost_errors(&old, Some(&old)).is_empty());
    let mut changed = old.clone();
    changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = json!("changed");
    assert_eq!(crd_cost_errors(&changed, Some(&old)).len(), 1);
}

/// The refusals of the real kube-apiserver v1.36 for `kubectl apply --server-side` of the
/// unbounded bootstrap CRDs: four rules and the schema total.
fn expected_refusals(under: &str, total: &str) -> Vec<String> {
    let rule = |path: &str| format!("{ROOT}.properties[spec].{under}{path}.x-kubernetes-validations[0].rule");
    let evictions = rule("properties[kubeletConfiguration].properties[evictionHard]");
    let kube = rule("properties[kubeletConfiguration].properties[kubeReserved]");
    let system = rule("properties[kubeletConfiguration].properties[systemReserved]");
    let labels = rule("properties[nodeLabels]");
    let over = |field: &str, factor: &str| {
        format!("{field}: Forbidden: estimated rule cost exceeds budget by factor of {factor} {ADVICE}")
    };
    let contributed = |field: &str| format!("{field}: Forbidden: {CONTRIBUTED_TO_TOTAL}");
    vec![
        over(&evictions, "38.3x"),
        over(&kube, "28.2x"),
        over(&system, "28.2x"),
        over(&labels, "24.2x"),
        contributed(&evictions),
        contributed(&kube),
        contributed(&system),
        contributed(&labels),
        format!(
            "{ROOT}: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema \
             exceeds budget by factor of {total} {ADVICE}"
        ),
    ]
}

#[test]
fn the_unbounded_bootstrap_crds_are_refused_like_the_real_api_server_did() {
    for (file, under) in [
        ("bootstrap.cluster.x-k8s.io_kubezeroconfigs.yaml", ""),
        (
            "bootstrap.cluster.x-k8s.io_kubezeroconfigtemplates.yaml",
            "properties[template].properties[spec].",
        ),
    ] {
        let crd = refused_fixture(file);
        let errors: Vec<String> = crd_cost_errors(&crd, None)
            .iter()
            .map(CostError::message)
            .collect();
        assert_eq!(errors, expected_refusals(under, "11.9x"), "{file}");
    }
}
