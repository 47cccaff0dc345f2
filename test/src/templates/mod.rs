//! Cluster templates and KubeZero addons (`templates/`) in the test world:
//!
//! - [`envsubst`]: clusterctl's variable substitution (drone/envsubst semantics, required variables).
//! - [`gotemplate`]: CAAPH's Go-template rendering of `valuesTemplate` with the Sprig functions we use.
//! - [`generate_cluster`]: `clusterctl generate cluster` for one flavor, with the variables clusterctl
//!   itself injects (`CLUSTER_NAME`, `NAMESPACE`, machine counts, `KUBERNETES_VERSION`).
//! - [`addon_gates`]: the Cilium-first ordering: which readiness labels a Cluster gets from the
//!   HelmReleaseProxies CAAPH reports Ready.

pub mod envsubst;
pub mod gotemplate;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

pub use envsubst::{EnvsubstError, VariableMetadata};

pub use kubezero_provider::addons::{
    CLUSTER_NAME_LABEL, CNI_READY_LABEL, GATES, HCP_NAME_LABEL, ISTIOD_READY_LABEL, addon_gates,
};

/// The repository root (parent of the `test/` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test/ has a parent")
        .to_path_buf()
}

/// The cluster template flavors: ("" for the default, or the flavor name, path), sorted.
pub fn flavors() -> Vec<(String, PathBuf)> {
    let mut flavors: Vec<(String, PathBuf)> = std::fs::read_dir(repo_root().join("templates"))
        .expect("templates/ exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            let flavor = name.strip_prefix("cluster-template")?.strip_suffix(".yaml")?;
            let flavor = flavor.strip_prefix('-').unwrap_or(flavor).to_owned();
            Some((flavor, path))
        })
        .collect();
    flavors.sort();
    flavors
}

/// The addon manifests in `templates/addons/`, sorted by path.
pub fn addon_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("templates/addons"))
        .expect("templates/addons/ exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The YAML documents of `text` (empty documents dropped).
pub fn documents(text: &str) -> Result<Vec<Value>, serde_saphyr::Error> {
    Ok(serde_saphyr::from_multiple::<Value>(text)?
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect())
}

/// The CAAPH CRDs (HelmChartProxy, HelmReleaseProxy) of `test/fixtures/crds/`, for the API emulator.
pub fn caaph_crds() -> Vec<CustomResourceDefinition> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/crds");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("test/fixtures/crds exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("readable CRD fixture");
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

/// The options of `clusterctl generate cluster` that become template variables.
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    /// Positional cluster name (`CLUSTER_NAME`).
    pub cluster_name: String,
    /// `--target-namespace` (`NAMESPACE`).
    pub target_namespace: String,
    /// `--kubernetes-version`; when unset, `KUBERNETES_VERSION` comes from the environment or fails.
    pub kubernetes_version: Option<String>,
    /// `--control-plane-machine-count`; unset: the environment's value or 1.
    pub control_plane_machine_count: Option<i64>,
    /// `--worker-machine-count`; unset: the environment's value or 0.
    pub worker_machine_count: Option<i64>,
}

/// Why `generate cluster` failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// An option clusterctl refuses before reading the template.
    #[error("{0}")]
    InvalidOption(String),
    /// Substitution failed (missing variables, bad substitution).
    #[error(transparent)]
    Substitution(#[from] EnvsubstError),
}

/// `clusterctl generate cluster` on `template`: injects the variables clusterctl sets from its options
/// (they beat the environment), then substitutes with `environment` as the remaining variables.
pub fn generate_cluster(
    template: &str,
    options: &GenerateOptions,
    environment: &BTreeMap<String, String>,
) -> Result<String, GenerateError> {
    let mut variables = environment.clone();
    let dns_label = regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("static regex");
    if options.target_namespace.len() > 63 || !dns_label.is_match(&options.target_namespace) {
        return Err(GenerateError::InvalidOption("invalid target-namespace".into()));
    }
    variables.insert("NAMESPACE".into(), options.target_namespace.clone());
    let dns_domain = regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        .expect("static regex");
    if options.cluster_name.len() > 253 || !dns_domain.is_match(&options.cluster_name) {
        return Err(GenerateError::InvalidOption("invalid cluster name".into()));
    }
    variables.insert("CLUSTER_NAME".into(), options.cluster_name.clone());
    if let Some(version) = &options.kubernetes_version {
        let semantic = regex::Regex::new(r"^v?[0-9]+\.[0-9]+\.[0-9]+([-+].*)?$").expect("static regex");
        if !semantic.is_match(version) {
            return Err(GenerateError::InvalidOption(
                "invalid KubernetesVersion. Please use a semantic version number".into(),
            ));
        }
        variables.insert("KUBERNETES_VERSION".into(), version.clone());
    }
    let count = |flag: Option<i64>, name: &str, fallback: i64| -> Result<i64, GenerateError> {
        match (flag, environment.get(name)) {
            (Some(n), _) => Ok(n),
            (None, Some(text)) => text
                .parse()
                .map_err(|_| GenerateError::InvalidOption(format!("invalid value for {name} set"))),
            (None, None) => Ok(fallback),
        }
    };
    let control_planes = count(
        options.control_plane_machine_count,
        "CONTROL_PLANE_MACHINE_COUNT",
        1,
    )?;
    if control_planes < 1 {
        return Err(GenerateError::InvalidOption(
            "invalid ControlPlaneMachineCount. Please use a number greater or equal than 1".into(),
        ));
    }
    variables.insert("CONTROL_PLANE_MACHINE_COUNT".into(), control_planes.to_string());
    let workers = count(options.worker_machine_count, "WORKER_MACHINE_COUNT", 0)?;
    if workers < 0 {
        return Err(GenerateError::InvalidOption(
            "invalid WorkerMachineCount. Please use a number greater or equal than 0".into(),
        ));
    }
    variables.insert("WORKER_MACHINE_COUNT".into(), workers.to_string());
    Ok(envsubst::process_with(template, &variables)?)
}

/// The namespaced API serving `document`'s kind in `namespace`, found by discovery from its
/// `apiVersion` and `kind`.
pub async fn api_for(
    client: &kube::Client,
    namespace: &str,
    document: &Value,
) -> Result<kube::Api<kube::api::DynamicObject>, kube::Error> {
    let api_version = document["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = document["kind"].as_str().unwrap_or_default();
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await?;
    Ok(kube::Api::namespaced_with(client.clone(), namespace, &resource))
}

/// Server-side applies one manifest document (as `clusterctl generate cluster` renders it) into
/// `namespace` with `params` (field manager, force); returns the applied object.
pub async fn apply(
    client: &kube::Client,
    namespace: &str,
    document: &Value,
    params: &kube::api::PatchParams,
) -> Result<kube::api::DynamicObject, kube::Error> {
    let api = api_for(client, namespace, document).await?;
    let name = document["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(name, params, &kube::api::Patch::Apply(document)).await
}
