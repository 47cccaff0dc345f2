//! The manifest fixtures of both providers, checked offline against the kubezero CRDs.
//!
//! Every file under `test/fixtures/valid/` must be accepted and deserialize into its Rust type; every
//! file under `test/fixtures/invalid/` must be refused at the field and with the message its header
//! names, and for no other reason: every other error is inside that field, or the notice that CEL
//! rules were skipped (format in `test/fixtures/invalid/README.md`). Together the invalid
//! fixtures must trip every CEL rule of every kubezero CRD.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use kube::Resource;
use kubezero_bootstrap::api::{KubeZeroConfig, KubeZeroConfigTemplate};
use kubezero_provider::api::{
    KubeZeroCluster, KubeZeroClusterTemplate, KubeZeroHost, KubeZeroMachine, KubeZeroMachineTemplate,
};
use kubezero_test::validation::{
    CrdValidator, FieldError, cel_rules,
    cost::{CRD_COST_LIMIT, RULE_COST_LIMIT, crd_cost},
    kubezero_crds, schema_of,
};
use serde_json::Value;

/// Fixture directories, one per provider, named after the API group's first label.
const PROVIDERS: [&str; 2] = ["infrastructure", "bootstrap"];

/// One validator per kind, for the served version of each kubezero CRD.
struct Validators(BTreeMap<String, (String, CrdValidator)>);

impl Validators {
    fn new() -> Self {
        Self(
            kubezero_crds()
                .into_iter()
                .map(|crd| {
                    let version = &crd.spec.versions[0].name;
                    let api_version = format!("{}/{version}", crd.spec.group);
                    let validator = CrdValidator::new(&crd, version).expect("kubezero CRD schemas are valid");
                    (crd.spec.names.kind.clone(), (api_version, validator))
                })
                .collect(),
        )
    }

    /// Errors of `doc` (an update from `old` when given), checking it names a kubezero kind.
    fn errors(&self, doc: &Value, old: Option<&Value>, file: &Path) -> Vec<FieldError> {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let (api_version, validator) = self
            .0
            .get(kind)
            .unwrap_or_else(|| panic!("{}: not a kubezero kind: {kind:?}", file.display()));
        assert_eq!(doc["apiVersion"], api_version.as_str(), "{}", file.display());
        assert_eq!(doc["metadata"]["namespace"], "default", "{}", file.display());
        validator.validate(doc, old)
    }
}

fn fixture_files(which: &str, provider: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(which)
        .join(provider);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn all_fixture_files(which: &str) -> Vec<PathBuf> {
    PROVIDERS
        .iter()
        .flat_map(|provider| fixture_files(which, provider))
        .collect()
}

fn documents(file: &Path) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let docs =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()));
    (text, docs)
}

/// Deserializes `doc` into the Rust type of its kind and serializes it back.
fn round_trip(doc: &Value, file: &Path) -> Value {
    fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
        doc: &Value,
    ) -> Result<Value, serde_json::Error> {
        serde_json::to_value(serde_json::from_value::<T>(doc.clone())?)
    }
    let result = match doc["kind"].as_str().unwrap_or_default() {
        "KubeZeroCluster" => typed::<KubeZeroCluster>(doc),
        "KubeZeroClusterTemplate" => typed::<KubeZeroClusterTemplate>(doc),
        "KubeZeroMachine" => typed::<KubeZeroMachine>(doc),
        "KubeZeroMachineTemplate" => typed::<KubeZeroMachineTemplate>(doc),
        "KubeZeroHost" => typed::<KubeZeroHost>(doc),
        "KubeZeroConfig" => typed::<KubeZeroConfig>(doc),
        "KubeZeroConfigTemplate" => typed::<KubeZeroConfigTemplate>(doc),
        other => panic!("{}: no Rust type for kind {other:?}", file.display()),
    };
    result.unwrap_or_else(|e| panic!("{}: does not deserialize: {e}", file.display()))
}

/// The expectation of an invalid fixture's header line.
struct Header {
    on_update: bool,
    field: String,
    message: String,
}

fn header(text: &str, file: &Path) -> Header {
    let first = text.lines().next().unwrap_or_default();
    let (on_update, rest) = if let Some(rest) = first.strip_prefix("# rejects on update: ") {
        (true, rest)
    } else if let Some(rest) = first.strip_prefix("# rejects: ") {
        (false, rest)
    } else {
        panic!(
            "{}: line 1 must be `# rejects: <field>: <message>`",
            file.display()
        );
    };
    let (field, message) = rest
        .split_once(": ")
        .unwrap_or_else(|| panic!("{}: the header needs `<field>: <message>`", file.display()));
    assert_eq!(
        text.lines().filter(|line| line.starts_with('#')).count(),
        1,
        "{}: the header is the only comment",
        file.display()
    );
    Header {
        on_update,
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

/// Whether `path` is `field` or a field inside it (`spec.aws` is inside `spec`, `spec.awsx` is not):
/// changing an immutable template also changes the immutable fields in it.
fn is_at_or_under(path: &str, field: &str) -> bool {
    path.strip_prefix(field)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

#[test]
fn valid_fixtures_are_accepted_and_deserialize_into_rust_types_that_serialize_back_to_valid_objects() {
    let validators = Validators::new();
    let mut kinds = BTreeSet::new();
    for file in all_fixture_files("valid") {
        let (_, docs) = documents(&file);
        assert!(!docs.is_empty(), "{}: no document", file.display());
        for doc in &docs {
            let errors = validators.errors(doc, None, &file);
            assert!(errors.is_empty(), "{}: refused: {errors:#?}", file.display());
            let again = round_trip(doc, &file);
            let errors = validators.errors(&again, None, &file);
            assert!(
                errors.is_empty(),
                "{}: refused once serialized from Rust: {errors:#?}",
                file.display()
            );
            kinds.insert(doc["kind"].as_str().unwrap_or_default().to_owned());
        }
    }
    let all: BTreeSet<String> = validators.0.keys().cloned().collect();
    assert_eq!(kinds, all, "every kind has a valid fixture");
}

#[test]
fn valid_fixtures_can_be_updated_unchanged() {
    let validators = Validators::new();
    for file in all_fixture_files("valid") {
        for doc in documents(&file).1 {
            let errors = validators.errors(&doc, Some(&doc), &file);
            assert!(
                errors.is_empty(),
                "{}: unchanged update refused: {errors:#?}",
                file.display()
            );
        }
    }
}

#[test]
fn invalid_fixtures_are_refused_at_the_stated_field_for_the_stated_reason_only() {
    let validators = Validators::new();
    for file in all_fixture_files("invalid") {
        let name = file.display();
        let (text, docs) = documents(&file);
        let Header {
            on_update,
            field,
            message,
        } = header(&text, &file);
        let errors = match (on_update, docs.as_slice()) {
            (false, [doc]) => validators.errors(doc, None, &file),
            (true, [old, new]) => {
                let created = validators.errors(old, None, &file);
                assert!(
                    created.is_empty(),
                    "{name}: the first document must be accepted: {created:#?}"
                );
                let alone = validators.errors(new, None, &file);
                assert!(
                    alone.is_empty(),
                    "{name}: the update must be valid on its own: {alone:#?}"
                );
                assert_eq!(
                    old["metadata"]["name"], new["metadata"]["name"],
                    "{name}: update of another object"
                );
                validators.errors(new, Some(old), &file)
            }
            _ => panic!("{name}: one document, or two for `# rejects on update`"),
        };
        assert!(
            errors
                .iter()
                .any(|e| e.field == field && e.message.contains(&message)),
            "{name}: expected `{field}: ...{message}...`, got {errors:#?}"
        );
        for error in &errors {
            assert!(
                is_at_or_under(&error.field, &field) || error.is_cel_skipped(),
                "{name}: refused for another reason too: {error:#?}"
            );
        }
    }
}

#[test]
fn every_cel_rule_has_an_invalid_fixture_that_trips_it() {
    let validators = Validators::new();
    let mut tripped = BTreeSet::new();
    for file in all_fixture_files("invalid") {
        let (_, docs) = documents(&file);
        let errors = match docs.as_slice() {
            [doc] => validators.errors(doc, None, &file),
            [old, new] => validators.errors(new, Some(old), &file),
            _ => continue,
        };
        tripped.extend(errors.into_iter().filter_map(|e| e.rule));
    }
    let mut missing = Vec::new();
    for crd in kubezero_crds() {
        let schema = schema_of(&crd, &crd.spec.versions[0].name).expect("schema");
        for rule in cel_rules(&schema) {
            if !tripped.contains(&rule.rule) {
                missing.push(format!(
                    "{} {}: {}",
                    crd.spec.names.kind, rule.schema_path, rule.rule
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "CEL rules without an invalid fixture: {missing:#?}"
    );
}

/// Every rule compiles, and the API server's static cost check (per rule and per schema, see
/// `kubezero_test::validation::cost`) accepts every kubezero CRD; prints each CRD's largest rule
/// and total (`-- --nocapture`).
#[test]
fn cel_rules_compile_and_fit_the_cost_budget() {
    let mut rules = 0;
    for crd in kubezero_crds() {
        let kind = &crd.spec.names.kind;
        let version = &crd.spec.versions[0].name;
        let schema = schema_of(&crd, version).expect("schema");
        rules += cel_rules(&schema).len();
        CrdValidator::new(&crd, version).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let json = serde_json::to_value(&crd).expect("CRD as JSON");
        for (field, report) in crd_cost(&json, None) {
            let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
            assert!(errors.is_empty(), "{kind} ({field}): {errors:#?}");
            let Some(largest) = report.most_expensive() else {
                println!("{kind}: no CEL rules");
                continue;
            };
            println!(
                "{kind}: largest rule {} ({:.1}% of {RULE_COST_LIMIT}) at {}; total {} ({:.1}% of {CRD_COST_LIMIT})",
                largest.cost,
                100.0 * largest.cost as f64 / RULE_COST_LIMIT as f64,
                largest.field,
                report.total,
                100.0 * report.total as f64 / CRD_COST_LIMIT as f64,
            );
        }
    }
    assert!(rules >= 35, "only {rules} CEL rules found");
}

#[test]
fn fixtures_cover_every_kind_of_both_providers() {
    let kinds = |which: &str| -> BTreeSet<String> {
        all_fixture_files(which)
            .iter()
            .flat_map(|file| documents(file).1)
            .filter_map(|doc| doc["kind"].as_str().map(str::to_owned))
            .collect()
    };
    let expected: BTreeSet<String> = [
        KubeZeroCluster::kind(&()),
        KubeZeroClusterTemplate::kind(&()),
        KubeZeroMachine::kind(&()),
        KubeZeroMachineTemplate::kind(&()),
        KubeZeroHost::kind(&()),
        KubeZeroConfig::kind(&()),
        KubeZeroConfigTemplate::kind(&()),
    ]
    .into_iter()
    .map(|kind| kind.into_owned())
    .collect();
    assert_eq!(kinds("valid"), expected);
    assert_eq!(kinds("invalid"), expected);
}

/// The API resource of `document`'s kind as served by `discovery`.
fn api_for(
    client: &kube::Client,
    discovery: &kube::Discovery,
    document: &Value,
) -> kube::Api<kube::api::DynamicObject> {
    let api_version = document["apiVersion"].as_str().expect("apiVersion");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, document["kind"].as_str().expect("kind"));
    let (resource, capabilities) = discovery
        .resolve_gvk(&gvk)
        .unwrap_or_else(|| panic!("{gvk:?} is not served"));
    match document["metadata"]["namespace"].as_str() {
        Some(namespace) if capabilities.scope == kube::discovery::Scope::Namespaced => {
            kube::Api::namespaced_with(client.clone(), namespace, &resource)
        }
        _ if capabilities.scope == kube::discovery::Scope::Namespaced => {
            kube::Api::namespaced_with(client.clone(), "default", &resource)
        }
        _ => kube::Api::all_with(client.clone(), &resource),
    }
}

/// An emulator with the kubezero and CAPI CRDs installed, and its discovery.
pub(crate) async fn emulator() -> (kubezero_test::apiserver::ApiServer, kube::Client, kube::Discovery) {
    let server = kubezero_test::apiserver::ApiServer::start().await.unwrap();
    server
        .install_crds(&kubezero_test::validation::kubezero_crds())
        .await
        .unwrap();
    let client = server.client().unwrap();
    kubezero_test::capi::CapiCore::install(client.clone())
        .await
        .unwrap();
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    (server, client, discovery)
}

pub(crate) async fn create(
    client: &kube::Client,
    discovery: &kube::Discovery,
    document: &Value,
) -> Result<Value, kube::Error> {
    let object: kube::api::DynamicObject = serde_json::from_value(document.clone()).unwrap();
    let created = api_for(client, discovery, document)
        .create(&kube::api::PostParams::default(), &object)
        .await?;
    Ok(serde_json::to_value(created).unwrap())
}

#[tokio::test]
async fn the_api_emulator_refuses_every_invalid_fixture_for_its_stated_field_and_reason() {
    let (_server, client, discovery) = emulator().await;
    let files = all_fixture_files("invalid");
    for (index, file) in files.iter().enumerate() {
        let (text, mut docs) = documents(file);
        let expected = header(&text, file);
        // Unique names, so every file gets a fresh object in the one emulator.
        for doc in &mut docs {
            doc["metadata"]["name"] = serde_json::json!(format!("fixture-{index}"));
        }
        let refused = if expected.on_update {
            let created = create(&client, &discovery, &docs[0])
                .await
                .unwrap_or_else(|e| panic!("{}: the first document must be accepted: {e}", file.display()));
            let mut update = docs[1].clone();
            update["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
            let object: kube::api::DynamicObject = serde_json::from_value(update).unwrap();
            let name = object.metadata.name.clone().unwrap();
            api_for(&client, &discovery, &docs[1])
                .replace(&name, &Default::default(), &object)
                .await
                .map(drop)
        } else {
            create(&client, &discovery, &docs[0]).await.map(drop)
        };
        let Err(kube::Error::Api(status)) = refused else {
            panic!("{}: accepted by the emulator: {refused:?}", file.display());
        };
        assert_eq!(status.code, 422, "{}: {status:?}", file.display());
        assert_eq!(status.reason, "Invalid", "{}", file.display());
        assert!(
            status.message.contains(&expected.message),
            "{}: message {:?} lacks {:?}",
            file.display(),
            status.message,
            expected.message
        );
        let causes = status
            .details
            .as_ref()
            .map(|d| d.causes.clone())
            .unwrap_or_default();
        assert!(
            causes.iter().any(|cause| cause.field == expected.field),
            "{}: no cause names {}: {causes:?}",
            file.display(),
            expected.field
        );
    }
}

/// Substitutes clusterctl variables as clusterctl does (`kubezero_test::templates::envsubst`) for a user
/// who sets only the required ones: `values`, then example values for the flavors' own required
/// variables (e.g. the bare-metal VIP); defaults for everything else.
pub(crate) fn substitute(text: &str, values: &[(&str, &str)]) -> String {
    let examples = [("KUBEZERO_CONTROL_PLANE_VIP", "192.0.2.10")];
    kubezero_test::templates::envsubst::process(text, &|name| {
        values
            .iter()
            .chain(examples.iter())
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn the_api_emulator_accepts_every_valid_fixture_template_and_config_manifest() {
    let (_server, client, discovery) = emulator().await;
    for file in all_fixture_files("valid") {
        let (_, docs) = documents(&file);
        for doc in docs {
            create(&client, &discovery, &doc)
                .await
                .unwrap_or_else(|e| panic!("{}: refused: {e}", file.display()));
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let values = [
        ("CLUSTER_NAME", "demo"),
        ("NAMESPACE", "templates"),
        ("KUBERNETES_VERSION", "v1.34.1"),
        ("CONTROL_PLANE_MACHINE_COUNT", "1"),
        ("WORKER_MACHINE_COUNT", "2"),
    ];
    // clusterctl requires the target namespace to exist; the valid fixtures already use `default`.
    let namespace =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "templates"}});
    create(&client, &discovery, &namespace).await.unwrap();
    // The cluster templates are created flavor by flavor, each in its own namespace, by
    // `templates::every_flavor_renders_with_its_defaults_and_the_api_emulator_accepts_every_object`.
    let mut manifests = Vec::new();
    for folder in ["config/provider/default", "config/bootstrap/default"] {
        let output = std::process::Command::new("kubectl")
            .args(["kustomize"])
            .arg(root.join(folder))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "kubectl kustomize {folder}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        manifests.push((folder.to_string(), String::from_utf8(output.stdout).unwrap()));
    }
    for (name, text) in manifests {
        let rendered = substitute(&text, &values);
        let docs: Vec<Value> = serde_saphyr::from_multiple(&rendered).unwrap();
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            // CRDs from config/ are already installed (identical): apply them, create everything else.
            if doc["kind"] == "CustomResourceDefinition" {
                let crds: kube::Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
                    kube::Api::all(client.clone());
                let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
                    serde_json::from_value(doc.clone()).unwrap();
                crds.patch(
                    &crd.metadata.name.clone().unwrap(),
                    &kube::api::PatchParams::apply("kubezero-test").force(),
                    &kube::api::Patch::Apply(&crd),
                )
                .await
                .unwrap_or_else(|e| panic!("{name}: CRD refused: {e}"));
                continue;
            }
            create(&client, &discovery, &doc).await.unwrap_or_else(|e| {
                panic!("{name}: {} {} refused: {e}", doc["kind"], doc["metadata"]["name"])
            });
        }
    }
}

/// A CRD of `test/fixtures/crds/refused/` (today's bootstrap CRDs before their maps were bounded).
fn refused_crd(
    file: &str,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/crds/refused")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The emulator applies the API server's static CEL cost check when a CRD is created or updated:
/// the unbounded KubeZeroConfig CRD is refused as kube-apiserver v1.36 refused it (422 `Invalid`,
/// one `FieldValueForbidden` cause per refusal at its field path), today's CRDs install, and an
/// update back to the unbounded schema is refused too.
#[tokio::test]
async fn the_api_emulator_refuses_crds_whose_cel_rules_exceed_the_cost_budget() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, PostParams};

    let server = kubezero_test::apiserver::ApiServer::start().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(server.client().unwrap());
    let unbounded = refused_crd("bootstrap.cluster.x-k8s.io_kubezeroconfigs.yaml");
    let rule = |node: &str| {
        format!("spec.validation.openAPIV3Schema.properties[spec].{node}.x-kubernetes-validations[0].rule")
    };
    let labels = rule("properties[nodeLabels]");
    let evictions = rule("properties[kubeletConfiguration].properties[evictionHard]");
    let check_refusal = |refused: Result<CustomResourceDefinition, kube::Error>| {
        let Err(kube::Error::Api(status)) = refused else {
            panic!("the unbounded CRD was accepted: {refused:?}");
        };
        assert_eq!(
            (status.code, status.reason.as_str()),
            (422, "Invalid"),
            "{status:?}"
        );
        assert!(
            status.message.starts_with(
                "CustomResourceDefinition.apiextensions.k8s.io \"kubezeroconfigs.bootstrap.cluster.x-k8s.io\" is invalid: ["
            ),
            "{}",
            status.message
        );
        assert!(
            status.message.contains(&format!(
                "{labels}: Forbidden: estimated rule cost exceeds budget by factor of 24.2x (try simplifying"
            )),
            "{}",
            status.message
        );
        let causes = status.details.map(|d| d.causes).unwrap_or_default();
        assert_eq!(causes.len(), 9, "{causes:#?}");
        assert!(
            causes.iter().all(|c| c.reason == "FieldValueForbidden"),
            "{causes:#?}"
        );
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields.iter().filter(|f| **f == labels).count(), 2, "{fields:#?}");
        assert_eq!(fields[0], evictions);
        assert_eq!(fields[8], "spec.validation.openAPIV3Schema");
    };
    check_refusal(crds.create(&PostParams::default(), &unbounded).await);

    server
        .install_crds(&kubezero_test::validation::kubezero_crds())
        .await
        .expect("today's CRDs fit the cost budget");
    let mut stored = crds
        .get("kubezeroconfigs.bootstrap.cluster.x-k8s.io")
        .await
        .unwrap();
    stored.spec = unbounded.spec.clone();
    check_refusal(
        crds.replace(
            "kubezeroconfigs.bootstrap.cluster.x-k8s.io",
            &PostParams::default(),
            &stored,
        )
        .await,
    );
    server.shutdown().await;
}
