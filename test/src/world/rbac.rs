//! The managers' RBAC in a [`super::World`]: the objects `config/provider/rbac` and
//! `config/bootstrap/rbac` ship (the files their `kustomization.yaml` lists, which the release's
//! components files carry), installed as `clusterctl init` installs them, with the changes test
//! isolation needs, and ServiceAccount tokens minted with the TokenRequest API.
//!
//! What differs from a clusterctl install, and why:
//! - The ServiceAccounts, the leader-election Roles and the RoleBindings live in the World's own
//!   namespace instead of `kubezero-system` / `kubezero-bootstrap-system`, and the managers hold
//!   their leader Lease there (`--leader-election-namespace`). Several Worlds on one real
//!   cluster therefore never share a ServiceAccount, a Role or a Lease (the Lease keeps its
//!   default name: its namespace already makes it the World's own), and deleting the namespace
//!   removes them.
//! - ClusterRoleBindings are cluster-wide, so each World names its own `<shipped name>-<namespace>`
//!   and binds its ServiceAccounts; they are deleted when the World drops.
//! - ClusterRoles keep their shipped names and rules: they are the same for every World, applied
//!   with server-side apply and left in place, like the CRDs. A role a test edits
//!   ([`ManagerRbac::without_rule`]) is installed as `<shipped name>-<namespace>` and bound instead,
//!   so other Worlds on the same cluster keep the shipped role.
//!
//! Everything goes through the API (server-side apply, TokenRequest), so a real management cluster
//! gets exactly the same objects as the emulator.

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::WorldError;

/// Field manager of everything a World applies.
pub(super) const FIELD_MANAGER: &str = "kubezero-e2e";

/// Label on the cluster-scoped objects a World creates for itself: the World's namespace.
pub const WORLD_LABEL: &str = "kubezero.io/e2e-world";

/// How long the managers' tokens are valid: longer than any suite or benchmark runs.
pub(super) const MANAGER_TOKEN_SECONDS: i64 = 24 * 3600;

/// The managers and the folder of their RBAC kustomization.
const MANAGERS: [(&str, &str); 2] = [
    ("kubezero-provider", "config/provider/rbac"),
    ("kubezero-bootstrap", "config/bootstrap/rbac"),
];

/// The RBAC objects of one manager.
#[derive(Clone, Debug)]
struct Manager {
    name: String,
    objects: Vec<Value>,
    /// Whether its manager ClusterRole was changed from the shipped one.
    edited: bool,
}

impl Manager {
    /// The ServiceAccount the manager runs as.
    fn service_account(&self) -> Option<&str> {
        self.objects
            .iter()
            .find(|object| object["kind"] == "ServiceAccount")
            .and_then(|object| object["metadata"]["name"].as_str())
    }

    /// The name of the ClusterRole its ClusterRoleBinding grants the ServiceAccount.
    fn bound_cluster_role(&self) -> Option<String> {
        let account = self.service_account()?;
        self.objects
            .iter()
            .filter(|object| object["kind"] == "ClusterRoleBinding")
            .find(|binding| {
                binding["subjects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|subject| subject["kind"] == "ServiceAccount" && subject["name"] == account)
            })
            .and_then(|binding| binding["roleRef"]["name"].as_str().map(str::to_owned))
    }
}

/// The RBAC of both managers, as shipped in `config/` or edited by a test.
#[derive(Clone, Debug)]
pub struct ManagerRbac {
    managers: Vec<Manager>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn rbac_error(path: &Path, message: impl Into<String>) -> WorldError {
    WorldError::Rbac {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// The documents of the YAML files a kustomization in `folder` lists under `resources`.
fn kustomization_documents(folder: &Path) -> Result<Vec<Value>, WorldError> {
    let kustomization = folder.join("kustomization.yaml");
    let text =
        std::fs::read_to_string(&kustomization).map_err(|e| rbac_error(&kustomization, e.to_string()))?;
    let parsed: Value =
        serde_saphyr::from_str(&text).map_err(|e| rbac_error(&kustomization, e.to_string()))?;
    let mut documents = Vec::new();
    for resource in parsed["resources"].as_array().into_iter().flatten() {
        let file = folder.join(resource.as_str().unwrap_or_default());
        let text = std::fs::read_to_string(&file).map_err(|e| rbac_error(&file, e.to_string()))?;
        let parsed: Vec<Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| rbac_error(&file, e.to_string()))?;
        documents.extend(parsed.into_iter().filter(|document| !document.is_null()));
    }
    Ok(documents)
}

impl ManagerRbac {
    /// The RBAC `config/provider/rbac` and `config/bootstrap/rbac` ship.
    pub fn shipped() -> Result<ManagerRbac, WorldError> {
        let root = repo_root();
        let mut managers = Vec::new();
        for (name, folder) in MANAGERS {
            let objects = kustomization_documents(&root.join(folder))?;
            let manager = Manager {
                name: name.to_owned(),
                objects,
                edited: false,
            };
            if manager.service_account().is_none() || manager.bound_cluster_role().is_none() {
                return Err(rbac_error(
                    &root.join(folder),
                    "no ServiceAccount bound to a ClusterRole by a ClusterRoleBinding",
                ));
            }
            managers.push(manager);
        }
        Ok(ManagerRbac { managers })
    }

    /// The same RBAC with `group`/`resource` removed from manager `manager`'s ClusterRole (rules
    /// left without resources are dropped), to see what the manager does without it.
    pub fn without_rule(mut self, manager: &str, group: &str, resource: &str) -> ManagerRbac {
        for entry in self.managers.iter_mut().filter(|entry| entry.name == manager) {
            let Some(role_name) = entry.bound_cluster_role() else {
                continue;
            };
            for role in entry.objects.iter_mut().filter(|object| {
                object["kind"] == "ClusterRole" && object["metadata"]["name"] == role_name.as_str()
            }) {
                let rules = role["rules"].as_array().cloned().unwrap_or_default();
                let kept: Vec<Value> = rules
                    .into_iter()
                    .filter_map(|mut rule| {
                        let in_group = rule["apiGroups"]
                            .as_array()
                            .is_some_and(|groups| groups.iter().any(|g| g == group));
                        if in_group && let Some(resources) = rule["resources"].as_array_mut() {
                            resources.retain(|r| r != resource);
                            if resources.is_empty() {
                                return None;
                            }
                        }
                        Some(rule)
                    })
                    .collect();
                role["rules"] = json!(kept);
                entry.edited = true;
            }
        }
        self
    }

    /// The ServiceAccount manager `manager` runs as.
    pub fn service_account(&self, manager: &str) -> Option<&str> {
        self.managers
            .iter()
            .find(|entry| entry.name == manager)
            .and_then(Manager::service_account)
    }
}

/// A cluster-scoped object a World created for itself (deleted when it drops).
#[derive(Clone, Debug)]
pub(super) struct Owned {
    pub resource: ApiResource,
    pub name: String,
}

fn api_resource(kind: &str) -> Option<ApiResource> {
    use k8s_openapi::api::rbac::v1 as rbac;
    Some(match kind {
        "ServiceAccount" => ApiResource::erase::<ServiceAccount>(&()),
        "Role" => ApiResource::erase::<rbac::Role>(&()),
        "RoleBinding" => ApiResource::erase::<rbac::RoleBinding>(&()),
        "ClusterRole" => ApiResource::erase::<rbac::ClusterRole>(&()),
        "ClusterRoleBinding" => ApiResource::erase::<rbac::ClusterRoleBinding>(&()),
        "Namespace" => ApiResource::erase::<k8s_openapi::api::core::v1::Namespace>(&()),
        _ => return None,
    })
}

fn namespaced(kind: &str) -> bool {
    matches!(kind, "ServiceAccount" | "Role" | "RoleBinding")
}

/// Points the ServiceAccount subjects of a binding at `namespace` (as kustomize's namespace
/// transformer does for the provider's namespace).
fn retarget_subjects(binding: &mut Value, namespace: &str) {
    for subject in binding["subjects"].as_array_mut().into_iter().flatten() {
        if subject["kind"] == "ServiceAccount" {
            subject["namespace"] = json!(namespace);
        }
    }
}

/// The objects a World in `namespace` applies for `rbac`, and which of them it owns cluster-wide.
fn world_objects(rbac: &ManagerRbac, namespace: &str) -> Vec<(Value, bool)> {
    let per_world = |name: &str| format!("{name}-{namespace}");
    let mut out = Vec::new();
    for manager in &rbac.managers {
        let renamed_role = manager.edited.then(|| manager.bound_cluster_role()).flatten();
        for object in &manager.objects {
            let mut object = object.clone();
            let kind = object["kind"].as_str().unwrap_or_default().to_owned();
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let mut owned = false;
            if namespaced(&kind) {
                object["metadata"]["namespace"] = json!(namespace);
            }
            match kind.as_str() {
                "RoleBinding" => retarget_subjects(&mut object, namespace),
                "ClusterRole" if renamed_role.as_deref() == Some(name.as_str()) => {
                    object["metadata"]["name"] = json!(per_world(&name));
                    owned = true;
                }
                "ClusterRoleBinding" => {
                    object["metadata"]["name"] = json!(per_world(&name));
                    retarget_subjects(&mut object, namespace);
                    let role = object["roleRef"]["name"].as_str().unwrap_or_default().to_owned();
                    if renamed_role.as_deref() == Some(role.as_str()) {
                        object["roleRef"]["name"] = json!(per_world(&role));
                    }
                    owned = true;
                }
                _ => {}
            }
            if owned {
                object["metadata"]["labels"][WORLD_LABEL] = json!(namespace);
            }
            out.push((object, owned));
        }
    }
    out
}

async fn apply(client: &Client, object: &Value) -> Result<Owned, WorldError> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let resource = api_resource(kind).ok_or_else(|| WorldError::Rbac {
        path: format!("{kind} {name}"),
        message: "a kind the World does not install".into(),
    })?;
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|source| WorldError::Kube {
        action: format!("apply {kind} {name}"),
        source,
    })?;
    Ok(Owned {
        resource,
        name: name.to_owned(),
    })
}

/// Applies the managers' RBAC for a World in `namespace`; returns the cluster-scoped objects the
/// World owns.
pub(super) async fn install(
    client: &Client,
    namespace: &str,
    rbac: &ManagerRbac,
) -> Result<Vec<Owned>, WorldError> {
    let mut owned = Vec::new();
    for (object, world_owned) in world_objects(rbac, namespace) {
        let applied = apply(client, &object).await?;
        if world_owned {
            owned.push(applied);
        }
    }
    Ok(owned)
}

/// Installs what CAPI core's components carry for our roles to take effect, as `clusterctl init`
/// installs core: its namespace, its ServiceAccount and `capi-aggregated-manager-role`, which
/// aggregates every ClusterRole labelled `cluster.x-k8s.io/aggregate-to-manager: "true"` (ours
/// included), bound to that ServiceAccount. Only for the emulated world: a real management cluster
/// has core installed.
pub(super) async fn install_core_aggregation(client: &Client) -> Result<(), WorldError> {
    let objects = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CORE_NAMESPACE}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": CORE_SERVICE_ACCOUNT, "namespace": CORE_NAMESPACE}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": CORE_AGGREGATED_ROLE},
               "aggregationRule": {"clusterRoleSelectors": [
                   {"matchLabels": {"cluster.x-k8s.io/aggregate-to-manager": "true"}}]}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "capi-manager-rolebinding"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CORE_AGGREGATED_ROLE},
               "subjects": [{"kind": "ServiceAccount", "name": CORE_SERVICE_ACCOUNT, "namespace": CORE_NAMESPACE}]}),
    ];
    for object in &objects {
        apply(client, object).await?;
    }
    Ok(())
}

/// The namespace of CAPI core's manager.
pub const CORE_NAMESPACE: &str = "capi-system";
/// The ServiceAccount of CAPI core's manager.
pub const CORE_SERVICE_ACCOUNT: &str = "capi-manager";
/// CAPI core's manager ClusterRole, aggregated from the providers' roles.
pub const CORE_AGGREGATED_ROLE: &str = "capi-aggregated-manager-role";

/// A bearer token of ServiceAccount `namespace/name` valid for `seconds`, from the TokenRequest API.
pub(super) async fn mint_token(
    client: &Client,
    namespace: &str,
    name: &str,
    seconds: i64,
) -> Result<String, WorldError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(seconds),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let issued = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(|source| WorldError::Kube {
            action: format!("request a token for ServiceAccount {namespace}/{name}"),
            source,
        })?;
    issued
        .status
        .and_then(|status| status.token)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| WorldError::Rbac {
            path: format!("ServiceAccount {namespace}/{name}"),
            message: "the TokenRequest answer has no token".into(),
        })
}

/// A kubeconfig (YAML) for the cluster of `admin`'s current context that authenticates with
/// `token`, default namespace `namespace`; relative file paths of the cluster entry are made
/// absolute against `admin`'s folder.
pub(super) fn token_kubeconfig(admin: &Path, token: &str, namespace: &str) -> Result<String, WorldError> {
    let text = std::fs::read_to_string(admin).map_err(|e| rbac_error(admin, e.to_string()))?;
    let config: Value = serde_saphyr::from_str(&text).map_err(|e| rbac_error(admin, e.to_string()))?;
    let context_name = config["current-context"].as_str().unwrap_or_default();
    let context = config["contexts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|context| context["name"] == context_name)
        .ok_or_else(|| rbac_error(admin, format!("no context {context_name:?}")))?;
    let cluster_name = context["context"]["cluster"].as_str().unwrap_or_default();
    let mut cluster = config["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|cluster| cluster["name"] == cluster_name)
        .map(|cluster| cluster["cluster"].clone())
        .ok_or_else(|| rbac_error(admin, format!("no cluster {cluster_name:?}")))?;
    if let Some(path) = cluster["certificate-authority"].as_str()
        && Path::new(path).is_relative()
        && let Some(folder) = admin.parent()
    {
        cluster["certificate-authority"] = json!(folder.join(path).display().to_string());
    }
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": "service-account", "user": {"token": token}}],
        "contexts": [{"name": "service-account",
                      "context": {"cluster": cluster_name, "user": "service-account", "namespace": namespace}}],
        "current-context": "service-account",
    });
    serde_saphyr::to_string(&kubeconfig).map_err(|e| rbac_error(admin, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rbac_binds_each_manager_to_its_cluster_role() {
        let rbac = ManagerRbac::shipped().expect("config/*/rbac reads");
        assert_eq!(
            rbac.service_account("kubezero-provider"),
            Some("kubezero-provider")
        );
        assert_eq!(
            rbac.service_account("kubezero-bootstrap"),
            Some("kubezero-bootstrap")
        );
        let objects = world_objects(&rbac, "kz-e2e-1");
        let binding = objects
            .iter()
            .map(|(object, _)| object)
            .find(|o| {
                o["kind"] == "ClusterRoleBinding" && o["roleRef"]["name"] == "kubezero-bootstrap-manager"
            })
            .expect("the bootstrap manager's binding");
        assert_eq!(binding["metadata"]["name"], "kubezero-bootstrap-manager-kz-e2e-1");
        assert_eq!(binding["subjects"][0]["namespace"], "kz-e2e-1");
        for (object, owned) in &objects {
            match object["kind"].as_str().unwrap() {
                "ServiceAccount" | "Role" | "RoleBinding" => {
                    assert_eq!(object["metadata"]["namespace"], "kz-e2e-1", "{object}");
                    assert!(!owned);
                }
                "ClusterRole" => assert!(!owned, "shipped ClusterRoles are shared: {object}"),
                "ClusterRoleBinding" => assert!(owned),
                other => panic!("unexpected {other}"),
            }
        }
    }

    #[test]
    fn an_edited_role_is_installed_under_the_worlds_own_name() {
        let rbac = ManagerRbac::shipped().unwrap().without_rule(
            "kubezero-bootstrap",
            "cluster.x-k8s.io",
            "machinesets",
        );
        let objects = world_objects(&rbac, "kz-e2e-2");
        let role = objects
            .iter()
            .map(|(object, _)| object)
            .find(|o| {
                o["kind"] == "ClusterRole" && o["metadata"]["name"] == "kubezero-bootstrap-manager-kz-e2e-2"
            })
            .expect("the edited role, renamed");
        let rules = role["rules"].as_array().unwrap();
        let capi = rules
            .iter()
            .find(|rule| rule["apiGroups"][0] == "cluster.x-k8s.io")
            .expect("the other CAPI resources stay");
        assert!(
            !capi["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "machinesets")
        );
        assert!(
            capi["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "machines")
        );
        let binding = objects
            .iter()
            .map(|(object, _)| object)
            .find(|o| {
                o["metadata"]["name"] == "kubezero-bootstrap-manager-kz-e2e-2"
                    && o["kind"] == "ClusterRoleBinding"
            })
            .unwrap();
        assert_eq!(binding["roleRef"]["name"], "kubezero-bootstrap-manager-kz-e2e-2");
        // The provider's role is untouched and shared.
        assert!(objects.iter().any(|(o, owned)| !owned
            && o["kind"] == "ClusterRole"
            && o["metadata"]["name"] == "kubezero-provider-manager"));
    }

    #[test]
    fn a_token_kubeconfig_keeps_the_cluster_and_swaps_the_user() {
        let folder = std::env::temp_dir().join(format!("kubezero-rbac-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let admin = folder.join("admin");
        std::fs::write(
            &admin,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: https://127.0.0.1:6443\n    \
             certificate-authority: ca.crt\ncontexts:\n- name: admin@real\n  context:\n    cluster: real\n    user: admin\n\
             users:\n- name: admin\n  user:\n    client-key: admin.key\ncurrent-context: admin@real\n",
        )
        .unwrap();
        let text = token_kubeconfig(&admin, "t0ken", "kz-e2e-3").unwrap();
        let parsed: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(
            parsed["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            parsed["clusters"][0]["cluster"]["certificate-authority"],
            folder.join("ca.crt").display().to_string()
        );
        assert_eq!(parsed["users"][0]["user"], json!({"token": "t0ken"}));
        assert_eq!(parsed["contexts"][0]["context"]["namespace"], "kz-e2e-3");
        let _ = std::fs::remove_dir_all(&folder);
    }
}
