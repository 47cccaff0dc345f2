//! The resource kinds the emulator serves: the built-in kinds (decoded through their k8s-openapi types,
//! which prunes unknown fields like the real server's Go structs) and the kinds of every established
//! CustomResourceDefinition (validated and defaulted with [`crate::validation`]).

use std::sync::Arc;

use serde_json::{Value, json};

use super::fields::{ListType, ListTypes, NoSchema, SchemaListTypes};
use super::http::ApiError;
use crate::validation::{CrdValidator, cost};

/// Decodes a built-in object through its typed representation: the canonical JSON, or the decoding error.
pub(crate) type Decoder = fn(&Value) -> Result<Value, String>;

fn typed<K: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) -> Result<Value, String> {
    let typed: K = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Storage key of a resource: `(group, plural)`; every served version of a kind shares it.
pub(crate) type ResKey = (String, String);

/// One printer column of a CRD version (`additionalPrinterColumns`).
#[derive(Clone, Debug)]
pub(crate) struct Column {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub description: String,
    pub priority: i64,
}

/// What a custom resource version needs beyond the generic handling.
pub(crate) struct Custom {
    pub validator: CrdValidator,
    pub schema: Value,
    pub columns: Vec<Column>,
    /// Name of the CRD that defines the kind.
    pub crd: String,
}

/// One served group/version/resource.
pub(crate) struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource.
    pub status: bool,
    /// Maintains `metadata.generation`.
    pub generation: bool,
    /// Typed decoding for built-in kinds.
    pub decoder: Option<Decoder>,
    /// Schema, validator and printer columns for custom resources.
    pub custom: Option<Custom>,
}

impl ResourceType {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key.
    pub fn key(&self) -> ResKey {
        (self.group.clone(), self.plural.clone())
    }

    /// `<plural>.<group>` (or `<plural>`) as the server names the resource in NotFound messages.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The list types for patches and managed fields.
    pub fn list_types(&self) -> Box<dyn ListTypes> {
        match &self.custom {
            Some(custom) => Box::new(SchemaListTypes::new(custom.schema.clone())),
            None => Box::new(BuiltinListTypes),
        }
    }
}

/// List merge keys of the built-in kinds the emulator serves (their `patchMergeKey`s), on top of the
/// metadata rules of [`NoSchema`].
struct BuiltinListTypes;

impl ListTypes for BuiltinListTypes {
    fn list_type(&self, path: &[String]) -> ListType {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        match path.as_slice() {
            ["status", "conditions"] | ["status", "addresses"] => ListType::Map(vec!["type".into()]),
            ["secrets"] | ["imagePullSecrets"] => ListType::Map(vec!["name".into()]),
            ["status", "images"] | ["spec", "taints"] => ListType::Atomic,
            _ => NoSchema.list_type(&path.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short_names: &[&str],
    status: bool,
    generation: bool,
    decoder: Decoder,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        status,
        generation,
        decoder: Some(decoder),
        custom: None,
    }
}

/// Every served resource.
#[derive(Default)]
pub(crate) struct Registry {
    types: Vec<Arc<ResourceType>>,
}

impl Registry {
    /// The built-in kinds.
    pub fn builtin() -> Self {
        use k8s_openapi::api::{
            apps::v1 as apps, coordination::v1 as coord, core::v1 as core, events::v1 as events,
            rbac::v1 as rbac,
        };
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
        let types = vec![
            builtin(
                "",
                "Namespace",
                "namespaces",
                false,
                &["ns"],
                true,
                false,
                typed::<core::Namespace>,
            ),
            builtin(
                "",
                "Node",
                "nodes",
                false,
                &["no"],
                true,
                false,
                typed::<core::Node>,
            ),
            builtin(
                "",
                "Secret",
                "secrets",
                true,
                &[],
                false,
                false,
                typed::<core::Secret>,
            ),
            builtin(
                "",
                "ConfigMap",
                "configmaps",
                true,
                &["cm"],
                false,
                false,
                typed::<core::ConfigMap>,
            ),
            builtin(
                "",
                "Event",
                "events",
                true,
                &["ev"],
                false,
                false,
                typed::<core::Event>,
            ),
            builtin(
                "",
                "ServiceAccount",
                "serviceaccounts",
                true,
                &["sa"],
                false,
                false,
                typed::<core::ServiceAccount>,
            ),
            builtin(
                "events.k8s.io",
                "Event",
                "events",
                true,
                &["ev"],
                false,
                false,
                typed::<events::Event>,
            ),
            builtin(
                "coordination.k8s.io",
                "Lease",
                "leases",
                true,
                &[],
                false,
                false,
                typed::<coord::Lease>,
            ),
            builtin(
                "rbac.authorization.k8s.io",
                "Role",
                "roles",
                true,
                &[],
                false,
                false,
                typed::<rbac::Role>,
            ),
            builtin(
                "rbac.authorization.k8s.io",
                "RoleBinding",
                "rolebindings",
                true,
                &[],
                false,
                false,
                typed::<rbac::RoleBinding>,
            ),
            builtin(
                "rbac.authorization.k8s.io",
                "ClusterRole",
                "clusterroles",
                false,
                &[],
                false,
                false,
                typed::<rbac::ClusterRole>,
            ),
            builtin(
                "rbac.authorization.k8s.io",
                "ClusterRoleBinding",
                "clusterrolebindings",
                false,
                &[],
                false,
                false,
                typed::<rbac::ClusterRoleBinding>,
            ),
            // Stored only (no controllers): what the providers' components files install.
            builtin(
                "",
                "Service",
                "services",
                true,
                &["svc"],
                true,
                false,
                typed::<core::Service>,
            ),
            builtin(
                "apps",
                "Deployment",
                "deployments",
                true,
                &["deploy"],
                true,
                true,
                typed::<apps::Deployment>,
            ),
            builtin(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
                &["crd", "crds"],
                true,
                true,
                typed::<ext::CustomResourceDefinition>,
            ),
        ];
        Self {
            types: types.into_iter().map(Arc::new).collect(),
        }
    }

    /// The resource served at `group/version/plural`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    /// Any served version of the storage key (for the garbage collector and CRD cleanup).
    pub fn any_version(&self, key: &ResKey) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == key.0 && t.plural == key.1)
            .cloned()
    }

    /// Every served resource.
    pub fn all(&self) -> &[Arc<ResourceType>] {
        &self.types
    }

    /// Registers (or re-registers) the kinds of a CRD given as JSON. On re-registration the schemas
    /// registered so far stand for the stored CRD (the cost check spares unchanged schemas).
    pub fn register_crd(&mut self, crd: &Value) -> Result<(), ApiError> {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        let registered: Vec<Value> = self
            .types
            .iter()
            .filter_map(|t| t.custom.as_ref().filter(|c| c.crd == name).map(|c| (t, c)))
            .map(|(t, c)| json!({"name": t.version, "schema": {"openAPIV3Schema": c.schema}}))
            .collect();
        let old = (!registered.is_empty()).then(|| json!({"spec": {"versions": registered}}));
        let parsed = parse_crd(crd, old.as_ref())?;
        self.unregister_crd(name);
        self.types.extend(parsed.into_iter().map(Arc::new));
        Ok(())
    }

    /// Removes the kinds of the CRD named `name`.
    pub fn unregister_crd(&mut self, name: &str) {
        self.types
            .retain(|t| t.custom.as_ref().is_none_or(|c| c.crd != name));
    }

    /// The groups with their versions, preferred version first, core group excluded, sorted by name
    /// (built-in groups first like the real server).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for t in &self.types {
            if t.group.is_empty() {
                continue;
            }
            match groups.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, versions)) => {
                    if !versions.contains(&t.version) {
                        versions.push(t.version.clone())
                    }
                }
                None => groups.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        for (_, versions) in &mut groups {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        groups
    }
}

/// Kubernetes version priority: GA > beta > alpha, higher numbers first.
pub(crate) fn version_priority(version: &str) -> (u8, u64, u64) {
    let Some(rest) = version.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u64>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    let (level, minor) = if tail.is_empty() {
        (3, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n.parse().unwrap_or(0))
    } else {
        return (0, 0, 0);
    };
    (level, major, minor)
}

fn invalid_crd(name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        "CustomResourceDefinition",
        "apiextensions.k8s.io",
        name,
        vec![(
            field.to_owned(),
            format!("{field}: {message}"),
            "FieldValueInvalid",
        )],
    )
}

/// The resource types a CRD defines, or why the server refuses it; `old` is the stored CRD on update.
fn parse_crd(crd: &Value, old: Option<&Value>) -> Result<Vec<ResourceType>, ApiError> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default();
    let kind = names["kind"].as_str().unwrap_or_default();
    if group.is_empty() {
        return Err(invalid_crd(name, "spec.group", "Required value".into()));
    }
    if plural.is_empty() || kind.is_empty() {
        return Err(invalid_crd(
            name,
            "spec.names",
            "Required value: plural and kind".into(),
        ));
    }
    if name != format!("{plural}.{group}") {
        return Err(invalid_crd(
            name,
            "metadata.name",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = spec["scope"].as_str().unwrap_or_default();
    if scope != "Namespaced" && scope != "Cluster" {
        return Err(invalid_crd(
            name,
            "spec.scope",
            format!("Unsupported value: {scope:?}: supported values: \"Cluster\", \"Namespaced\""),
        ));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage = versions.iter().filter(|v| v["storage"] == json!(true)).count();
    if storage != 1 {
        return Err(invalid_crd(
            name,
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version".into(),
        ));
    }
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let mut out = Vec::new();
    for (i, version) in versions.iter().enumerate() {
        if version["served"] != json!(true) {
            continue;
        }
        let vname = version["name"].as_str().unwrap_or_default();
        let schema = version["schema"]["openAPIV3Schema"].clone();
        if !schema.is_object() {
            return Err(invalid_crd(
                name,
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "Required value: schemas are required".into(),
            ));
        }
        let validator = CrdValidator::from_schema(schema.clone()).map_err(|e| {
            invalid_crd(
                name,
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                format!("Invalid value: {e}"),
            )
        })?;
        let columns = version["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| Column {
                name: c["name"].as_str().unwrap_or_default().into(),
                type_: c["type"].as_str().unwrap_or("string").into(),
                json_path: c["jsonPath"].as_str().unwrap_or_default().into(),
                description: c["description"].as_str().unwrap_or_default().into(),
                priority: c["priority"].as_i64().unwrap_or(0),
            })
            .collect();
        out.push(ResourceType {
            group: group.into(),
            version: vname.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: names["singular"]
                .as_str()
                .map_or_else(|| kind.to_lowercase(), str::to_owned),
            namespaced: scope == "Namespaced",
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status: version["subresources"]["status"].is_object(),
            generation: true,
            decoder: None,
            custom: Some(Custom {
                validator,
                schema,
                columns,
                crd: name.into(),
            }),
        });
    }
    // The static CEL cost check, every refusal at once like the server.
    let refusals = cost::crd_cost_errors(crd, old);
    if !refusals.is_empty() {
        let causes = refusals
            .iter()
            .map(|e| (e.field.clone(), e.message(), e.reason()))
            .collect();
        return Err(ApiError::invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            name,
            causes,
        ));
    }
    Ok(out)
}
