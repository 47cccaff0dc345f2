//! The manifests a platform engineer installs: generated CRDs in `config/` match the Rust types, and
//! `make release` writes a clusterctl local repository that `clusterctl init` accepts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kubezero_capi::contract::{BOOTSTRAP_PROVIDER, CONTRACT_LABEL, INFRASTRUCTURE_PROVIDER, PROVIDER_LABEL};
use kubezero_capi::runtime::manifests::{crd_to_yaml, file_name};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// (provider label, config folder, CRDs from the Rust types)
fn providers() -> Vec<(&'static str, &'static str, Vec<CustomResourceDefinition>)> {
    vec![
        (
            INFRASTRUCTURE_PROVIDER,
            "config/provider",
            kubezero_provider::api::crds(),
        ),
        (
            BOOTSTRAP_PROVIDER,
            "config/bootstrap",
            kubezero_bootstrap::api::crds(),
        ),
    ]
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .expect("valid YAML")
        .into_iter()
        .filter(|document| !document.is_null())
        .collect()
}

#[test]
fn generated_crds_in_config_match_the_rust_types() {
    for (_, folder, crds) in providers() {
        let bases = repo_root().join(folder).join("crd/bases");
        let mut expected_files = BTreeSet::new();
        for crd in &crds {
            let name = file_name(crd);
            let committed = std::fs::read_to_string(bases.join(&name))
                .unwrap_or_else(|error| panic!("{folder}/crd/bases/{name}: {error}; run `make generate`"));
            assert!(
                committed == crd_to_yaml(crd).unwrap(),
                "{folder}/crd/bases/{name} is stale: run `make generate` and commit the result"
            );
            let parsed: Value = serde_saphyr::from_str(&committed).unwrap();
            assert_eq!(
                parsed,
                serde_json::to_value(crd).unwrap(),
                "{name}: YAML reads back as the CRD"
            );
            expected_files.insert(name);
        }
        let present: BTreeSet<String> = std::fs::read_dir(&bases)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            present, expected_files,
            "{folder}/crd/bases holds files no Rust type generates"
        );
    }
}

#[test]
fn every_crd_is_named_and_labelled_as_cluster_api_core_expects() {
    for (provider, _, crds) in providers() {
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap();
            assert_eq!(name, format!("{}.{}", crd.spec.names.plural, crd.spec.group));
            let labels = crd.metadata.labels.clone().unwrap_or_default();
            assert_eq!(
                labels.get(CONTRACT_LABEL).map(String::as_str),
                Some("v1alpha1"),
                "{name}"
            );
            assert_eq!(
                labels.get(PROVIDER_LABEL).map(String::as_str),
                Some(provider),
                "{name}"
            );
            assert!(crd.spec.names.kind.starts_with("KubeZero"), "{name}");
            let version = &crd.spec.versions[0];
            assert!(version.served && version.storage, "{name}");
            assert!(
                version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "{name} has status"
            );
        }
    }
}

/// Runs `scripts/release.sh --manifests-only` into a fresh folder and returns it.
fn release_manifests(test: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("kubezero-release-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/release.sh"))
        .arg("--manifests-only")
        .arg(&out)
        .status()
        .expect("bash runs scripts/release.sh");
    assert!(status.success(), "scripts/release.sh --manifests-only failed");
    out
}

fn version() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

#[test]
fn release_writes_a_clusterctl_local_repository() {
    let out = release_manifests("layout");
    let version = version();
    let infra = out.join(INFRASTRUCTURE_PROVIDER).join(&version);
    let bootstrap = out.join(BOOTSTRAP_PROVIDER).join(&version);
    for file in [
        "infrastructure-components.yaml",
        "metadata.yaml",
        "cluster-template.yaml",
    ] {
        assert!(
            infra.join(file).is_file(),
            "{file} missing in {}",
            infra.display()
        );
    }
    for file in ["bootstrap-components.yaml", "metadata.yaml"] {
        assert!(
            bootstrap.join(file).is_file(),
            "{file} missing in {}",
            bootstrap.display()
        );
    }

    // metadata.yaml: the release series of this version implements contract v1beta2.
    for dir in [&infra, &bootstrap] {
        let metadata = &yaml_documents(&std::fs::read_to_string(dir.join("metadata.yaml")).unwrap())[0];
        assert_eq!(metadata["apiVersion"], "clusterctl.cluster.x-k8s.io/v1alpha3");
        assert_eq!(metadata["kind"], "Metadata");
        let major: u64 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap();
        let minor: u64 = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap();
        let series = metadata["releaseSeries"].as_array().unwrap();
        assert!(
            series.iter().any(|s| s["major"].as_u64() == Some(major)
                && s["minor"].as_u64() == Some(minor)
                && s["contract"] == "v1beta2"),
            "no v1beta2 release series for {version}: {series:?}"
        );
    }

    // clusterctl.yaml names both providers and points at files that exist.
    let config = &yaml_documents(&std::fs::read_to_string(out.join("clusterctl.yaml")).unwrap())[0];
    let entries = config["providers"].as_array().unwrap();
    let types: BTreeSet<&str> = entries.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        BTreeSet::from(["BootstrapProvider", "InfrastructureProvider"])
    );
    for entry in entries {
        assert_eq!(entry["name"], "kubezero");
        let url = entry["url"].as_str().unwrap();
        assert!(Path::new(url).is_file(), "{url} does not exist");
        assert!(
            url.contains(&format!("/{version}/")),
            "{url} is not under the version folder"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn components_install_cleanly_with_clusterctl() {
    let out = release_manifests("components");
    let version = version();
    let cases = [
        (
            INFRASTRUCTURE_PROVIDER,
            "infrastructure-components.yaml",
            "kubezero-system",
            "KUBEZERO_PROVIDER_IMAGE",
        ),
        (
            BOOTSTRAP_PROVIDER,
            "bootstrap-components.yaml",
            "kubezero-bootstrap-system",
            "KUBEZERO_BOOTSTRAP_IMAGE",
        ),
    ];
    let variable = regex::Regex::new(r"\$\{([A-Za-z0-9_]+)([^}]*)\}").unwrap();
    for (provider, file, namespace, image_variable) in cases {
        let text = std::fs::read_to_string(out.join(provider).join(&version).join(file)).unwrap();
        // clusterctl refuses variables without a value; every variable here must carry a default.
        for capture in variable.captures_iter(&text) {
            assert!(
                capture[2].starts_with(":="),
                "{file}: ${{{}}} has no default",
                &capture[1]
            );
        }
        let documents = yaml_documents(&text);
        let kinds: Vec<&str> = documents.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "Namespace").count(),
            1,
            "{file}: exactly one Namespace"
        );
        for document in &documents {
            let kind = document["kind"].as_str().unwrap();
            let name = document["metadata"]["name"].as_str().unwrap();
            assert_eq!(
                document["metadata"]["labels"][PROVIDER_LABEL], provider,
                "{file}: {kind} {name}"
            );
            let namespaced = !matches!(
                kind,
                "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
            );
            if namespaced {
                assert_eq!(
                    document["metadata"]["namespace"], namespace,
                    "{file}: {kind} {name}"
                );
            }
        }
        let deployment = documents
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .expect("a Deployment");
        let containers = deployment["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        let manager = containers
            .iter()
            .find(|c| c["name"] == "manager")
            .expect("container named manager");
        let image = manager["image"].as_str().unwrap();
        assert!(
            image.starts_with(&format!("${{{image_variable}:=")),
            "{file}: image {image}"
        );
        let args: Vec<&str> = manager["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[0], "run");
        assert!(args.contains(&"--leader-elect"), "{file}: {args:?}");
        assert!(
            args.iter().any(|a| a.starts_with("--watch-filter=")),
            "{file}: {args:?}"
        );
        assert_eq!(manager["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(manager["livenessProbe"]["httpGet"]["path"], "/healthz");

        let aggregated = documents
            .iter()
            .find(|d| {
                d["kind"] == "ClusterRole"
                    && d["metadata"]["labels"]["cluster.x-k8s.io/aggregate-to-manager"] == "true"
            })
            .unwrap_or_else(|| panic!("{file}: no ClusterRole aggregated to the CAPI manager"));
        // The ClusterRole bound to the Deployment's ServiceAccount is what the manager may do.
        let service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .unwrap();
        let binding = documents
            .iter()
            .find(|d| {
                d["kind"] == "ClusterRoleBinding"
                    && d["subjects"].as_array().is_some_and(|subjects| {
                        subjects
                            .iter()
                            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == service_account)
                    })
            })
            .unwrap_or_else(|| panic!("{file}: no ClusterRoleBinding for {service_account}"));
        let manager_role = documents
            .iter()
            .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == binding["roleRef"]["name"])
            .unwrap_or_else(|| panic!("{file}: the bound ClusterRole is missing"));
        for (group, resource, verb) in [
            ("cluster.x-k8s.io", "clusters", "watch"),
            ("cluster.x-k8s.io", "machines", "watch"),
            ("apiextensions.k8s.io", "customresourcedefinitions", "get"),
            ("events.k8s.io", "events", "create"),
        ] {
            assert!(
                grants(manager_role, group, resource, verb),
                "{file}: manager cannot {verb} {resource}"
            );
        }
        if provider == BOOTSTRAP_PROVIDER {
            // The bootstrap manager reads a Cluster's KubeZeroCluster (provider-ID source, VIP).
            assert!(
                grants(
                    manager_role,
                    "infrastructure.cluster.x-k8s.io",
                    "kubezeroclusters",
                    "get"
                ),
                "{file}: the bootstrap manager cannot get kubezeroclusters"
            );
        }
        let crds: Vec<&Value> = documents
            .iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
            .collect();
        for crd in crds {
            let plural = crd["spec"]["names"]["plural"].as_str().unwrap();
            let group = crd["spec"]["group"].as_str().unwrap();
            for verb in ["get", "list", "watch", "create", "update", "patch", "delete"] {
                assert!(
                    grants(aggregated, group, plural, verb),
                    "{file}: CAPI core cannot {verb} {plural}"
                );
            }
            for (resource, verb) in [
                (plural.to_string(), "watch"),
                (format!("{plural}/status"), "patch"),
            ] {
                assert!(
                    grants(manager_role, group, &resource, verb),
                    "{file}: manager cannot {verb} {resource}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Whether a (Cluster)Role grants `verb` on `group`/`resource`.
fn grants(role: &Value, group: &str, resource: &str, verb: &str) -> bool {
    let contains = |list: &Value, wanted: &str| {
        list.as_array()
            .is_some_and(|items| items.iter().any(|item| item == wanted || item == "*"))
    };
    role["rules"].as_array().is_some_and(|rules| {
        rules.iter().any(|rule| {
            contains(&rule["apiGroups"], group)
                && contains(&rule["resources"], resource)
                && contains(&rule["verbs"], verb)
        })
    })
}

#[test]
fn clusterctl_settings_point_at_kustomize_folders_and_metadata() {
    let root = repo_root();
    for (dir, name) in [(".", INFRASTRUCTURE_PROVIDER), ("bootstrap", BOOTSTRAP_PROVIDER)] {
        let provider_repo = root.join(dir);
        let settings: Value = serde_json::from_str(
            &std::fs::read_to_string(provider_repo.join("clusterctl-settings.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(settings["name"], name);
        assert_eq!(settings["config"]["nextVersion"], version());
        let folder = provider_repo.join(settings["config"]["configFolder"].as_str().unwrap());
        assert!(
            folder.join("kustomization.yaml").is_file(),
            "{}",
            folder.display()
        );
        assert!(
            provider_repo.join("metadata.yaml").is_file(),
            "{dir}/metadata.yaml"
        );
        let component_file = settings["config"]["componentsFile"].as_str().unwrap();
        assert!(
            name.starts_with(component_file.split('-').next().unwrap()),
            "{component_file}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(root.join("metadata.yaml")).unwrap(),
        std::fs::read_to_string(root.join("bootstrap/metadata.yaml")).unwrap(),
        "both providers release the same series"
    );
}

#[test]
fn cluster_templates_render_objects_our_crds_accept() {
    let required = [
        ("CLUSTER_NAME", "demo"),
        ("NAMESPACE", "default"),
        ("KUBERNETES_VERSION", "v1.34.1"),
        ("CONTROL_PLANE_MACHINE_COUNT", "1"),
        ("WORKER_MACHINE_COUNT", "2"),
    ];
    let templates: Vec<PathBuf> = std::fs::read_dir(repo_root().join("templates"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cluster-template")
        })
        .collect();
    assert!(!templates.is_empty(), "templates/cluster-template.yaml exists");
    for path in templates {
        let rendered = crate::fixtures::substitute(&std::fs::read_to_string(&path).unwrap(), &required);
        let mut checked = 0;
        for document in yaml_documents(&rendered) {
            let kind = document["kind"].as_str().unwrap();
            assert_eq!(
                document["metadata"]["namespace"],
                "default",
                "{}: {kind}",
                path.display()
            );
            let Some(crd) = kubezero_test::validation::crd_for(kind) else {
                continue;
            };
            let errors = kubezero_test::validation::validate(&crd, "v1alpha1", &document, None).unwrap();
            assert!(
                errors.is_empty(),
                "{}: {kind} refused: {errors:#?}",
                path.display()
            );
            checked += 1;
        }
        assert!(checked >= 3, "{}: expected KubeZero objects", path.display());
    }
}
