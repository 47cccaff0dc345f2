//! KubeZeroConfig controller.
//!
//! Flow (contract §4): find the owner Machine and its Cluster → honour pause → restore status from
//! the Machine after `clusterctl move` → wait for the Cluster's infrastructure and control-plane
//! endpoint (an impossible Alpine / Kubernetes pair is refused first) → role (init lock), cluster
//! PKI, join token, render, data Secret ([`generate`]: [`fetch`], [`workload`], [`build`], create);
//! then, until the Machine has a `nodeRef`, keep its join token alive ([`refresh`]). The data Secret
//! is owned by the config (garbage collected with it), so no finalizer is needed. [`kubeconfig`]
//! renews the clusters' admin kubeconfigs.
//!
//! What the controller keeps across reconciles (the workload clusters it reached) is its [`State`],
//! created by [`run`] and handed to every reconcile.

pub mod build;
pub mod fetch;
pub mod generate;
pub mod kubeconfig;
pub mod refresh;
pub mod workload;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use kubezero_capi::conditions::{Condition, HasConditions, Observed};
use kubezero_capi::contract::{BootstrapInitialization, READY_CONDITION};
use kubezero_capi::core::{Cluster, Machine};
use kubezero_capi::owner::{MachineOwners, fetch_machine_owners};
use kubezero_capi::pause::{pause_reason, paused_condition};
use kubezero_capi::runtime::Context;
use kubezero_capi::runtime::reconcile::{
    Error, namespace_of, referenced, run_machine_controller, write_conditions,
};
use tracing::Instrument;

use crate::api::{GROUP, KubeZeroConfig, KubeZeroConfigSpec, KubeZeroConfigStatus};

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "kubezeroconfig";

/// Field manager of every status write of this provider.
pub const FIELD_MANAGER: &str = "kubezero-bootstrap";

/// Condition reasons this provider reports on `Ready`.
pub mod reasons {
    pub use kubezero_capi::contract::waiting_reasons::*;
    /// The Cluster has no control-plane endpoint yet.
    pub const WAITING_FOR_CONTROL_PLANE_ENDPOINT: &str = "WaitingForControlPlaneEndpoint";
    /// The data Secret exists and is named in the status.
    pub const DATA_SECRET_AVAILABLE: &str = "DataSecretAvailable";
    /// Another Machine holds the init lock, or (workers) the control plane is not initialized yet.
    pub const WAITING_FOR_CONTROL_PLANE_INITIALIZATION: &str = "WaitingForControlPlaneInitialization";
    /// `<cluster>-kubeconfig` is missing or the workload cluster does not answer (join tokens).
    pub const WAITING_FOR_WORKLOAD_CLUSTER: &str = "WaitingForWorkloadCluster";
    /// A cluster certificate Secret a join needs does not exist (yet).
    pub const WAITING_FOR_CLUSTER_CERTIFICATES: &str = "WaitingForClusterCertificates";
    /// A cluster certificate Secret is unusable (message names it).
    pub const INVALID_CLUSTER_CERTIFICATES: &str = "InvalidClusterCertificates";
    /// A file's `contentFrom.secret` names a missing Secret or key.
    pub const FILE_SECRET_NOT_FOUND: &str = "FileSecretNotFound";
    /// The rendered user data exceeds the size limit.
    pub const BOOTSTRAP_DATA_TOO_LARGE: &str = "BootstrapDataTooLarge";
    /// The configuration cannot be rendered (message names the field).
    pub const INVALID_CONFIGURATION: &str = "InvalidConfiguration";
    /// No Alpine release installs the Machine's Kubernetes minor as configured (message says what to
    /// change); reported before the Cluster's infrastructure is waited for.
    pub const UNSUPPORTED_KUBERNETES_VERSION: &str = "UnsupportedKubernetesVersion";
}

impl kubezero_capi::runtime::reconcile::WatchedKind for KubeZeroConfig {}

impl HasConditions for KubeZeroConfig {
    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map_or(&[], |status| status.conditions.as_slice())
    }
}

/// Flags of the bootstrap manager's `run`.
#[derive(clap::Args, Debug, Clone)]
pub struct BootstrapArgs {
    /// Lifetime of the join tokens created in workload clusters; refreshed every TTL/3 while their
    /// Machine has not joined (at least 30s).
    #[arg(long, default_value = "15m", value_parser = parse_token_ttl)]
    pub bootstrap_token_ttl: Duration,

    /// Image of the kube-vip static pod on the control-plane machines of bare-metal clusters.
    #[arg(long, default_value = crate::render::kube_vip::DEFAULT_IMAGE, value_parser = parse_kube_vip_image)]
    pub kube_vip_image: String,
}

impl Default for BootstrapArgs {
    fn default() -> Self {
        Self {
            bootstrap_token_ttl: crate::tokens::DEFAULT_TOKEN_TTL,
            kube_vip_image: crate::render::kube_vip::DEFAULT_IMAGE.to_string(),
        }
    }
}

fn parse_kube_vip_image(value: &str) -> Result<String, String> {
    if crate::render::kube_vip::valid_image(value) {
        Ok(value.to_string())
    } else {
        Err(format!("{value:?} is not an image reference"))
    }
}

fn parse_token_ttl(value: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if ttl < Duration::from_secs(30) {
        return Err(format!("{value} is shorter than 30s"));
    }
    Ok(ttl)
}

/// What the KubeZeroConfig controller keeps across reconciles.
#[derive(Debug)]
pub struct State {
    /// Lifetime of the join tokens created in workload clusters.
    pub token_ttl: Duration,
    /// Image of the kube-vip static pod of bare-metal control planes.
    pub kube_vip_image: String,
    /// The workload clusters reached so far.
    pub workloads: workload::Workloads,
}

impl State {
    /// State for the `run` flags `args`, with no workload cluster reached yet.
    pub fn new(args: BootstrapArgs) -> Arc<Self> {
        Arc::new(Self {
            token_ttl: args.bootstrap_token_ttl,
            kube_vip_image: args.kube_vip_image,
            workloads: workload::Workloads::default(),
        })
    }
}

/// Runs the KubeZeroConfig and kubeconfig-renewal controllers until the manager shuts down.
pub async fn run(context: Context, args: BootstrapArgs) {
    let state = State::new(args);
    let configs = run_machine_controller(
        context.clone(),
        CONTROLLER,
        machine_to_config,
        futures::stream::pending(),
        move |config, context| reconcile(config, context, state.clone()),
    );
    tokio::join!(configs, kubeconfig::run(context));
}

/// Maps a Machine to the KubeZeroConfig its `spec.bootstrap.configRef` names.
pub fn machine_to_config(machine: Machine) -> Option<ObjectRef<KubeZeroConfig>> {
    referenced(
        machine.spec.bootstrap.config_ref.as_ref(),
        machine.namespace(),
        GROUP,
        "KubeZeroConfig",
    )
}

/// Refreshes the join token of a Machine that has not joined yet; when to look again.
async fn keep_token_alive(
    context: &Context,
    state: &State,
    cluster: &Cluster,
    machine: &Machine,
    data_secret_name: &str,
) -> Result<Option<Duration>, Error> {
    let token_ttl = state.token_ttl;
    let result = refresh::refresh_join_token(
        &context.client,
        &state.workloads,
        cluster,
        machine,
        data_secret_name,
        token_ttl,
    )
    .await?;
    Ok(match result {
        Ok(refresh::Refreshed::NoToken) => None,
        Ok(_) => Some(crate::tokens::requeue_after(token_ttl)),
        Err(message) => {
            tracing::warn!(%message, "unable to refresh the join token; retrying");
            Some(generate::REQUEUE.min(crate::tokens::requeue_after(token_ttl)))
        }
    })
}

/// The data-Secret fields of the status: what the config reports, or, when its status is empty
/// (after `clusterctl move`, which drops status), what the owner Machine already recorded.
pub fn data_secret(config: &KubeZeroConfig, owner: Option<&Machine>) -> Option<String> {
    let recorded = config
        .status
        .as_ref()
        .and_then(|status| status.data_secret_name.clone());
    let from_machine = || owner.and_then(|machine| machine.spec.bootstrap.data_secret_name.clone());
    recorded.or_else(from_machine).filter(|name| !name.is_empty())
}

/// The Ready condition of a config whose Machine and Cluster exist, when no data is to be generated
/// now: `None` means "generate". An impossible Alpine / Kubernetes pair is refused first, so no
/// machine waits for infrastructure it could never join.
pub fn readiness(
    data_secret_name: Option<&str>,
    spec: &KubeZeroConfigSpec,
    machine: &Machine,
    cluster: &Cluster,
) -> Option<Observed> {
    if let Some(name) = data_secret_name {
        return Some(Observed::true_(
            READY_CONDITION,
            reasons::DATA_SECRET_AVAILABLE,
            format!("bootstrap data in Secret {name}"),
        ));
    }
    if let Some(version) = machine.spec.version.as_deref() {
        match build::alpine_selection(&spec.alpine, version) {
            // A malformed version is the kubeadm renderer's to report (InvalidConfiguration).
            Ok(_) | Err(kubezero_capi::alpine::VersionError::InvalidVersion(_)) => {}
            Err(unsupported) => {
                return Some(Observed::false_(
                    READY_CONDITION,
                    reasons::UNSUPPORTED_KUBERNETES_VERSION,
                    unsupported.to_string(),
                ));
            }
        }
    }
    if !cluster.infrastructure_provisioned() {
        return Some(Observed::false_(
            READY_CONDITION,
            reasons::WAITING_FOR_CLUSTER_INFRASTRUCTURE,
            format!(
                "waiting for the infrastructure of Cluster {} to be provisioned",
                cluster.name_any()
            ),
        ));
    }
    if cluster.control_plane_endpoint().is_none() {
        return Some(Observed::false_(
            READY_CONDITION,
            reasons::WAITING_FOR_CONTROL_PLANE_ENDPOINT,
            format!(
                "waiting for Cluster {} to have a control-plane endpoint",
                cluster.name_any()
            ),
        ));
    }
    None
}

async fn reconcile(
    config: Arc<KubeZeroConfig>,
    context: Arc<Context>,
    state: Arc<State>,
) -> Result<Action, Error> {
    let _timer = context.metrics.reconcile(CONTROLLER);
    let name = config.name_any();
    let namespace = namespace_of(config.as_ref())?;
    let span = tracing::info_span!("reconcile", controller = CONTROLLER, %namespace, %name);
    async {
        let MachineOwners {
            machine: owner,
            cluster,
        } = fetch_machine_owners(&context.client, &namespace, &config.metadata).await?;

        let api: Api<KubeZeroConfig> = Api::namespaced(context.client.clone(), &namespace);
        if let Some(reason) = pause_reason(cluster.as_ref(), &config.metadata) {
            // Paused: re-apply what the status already says, only the Paused condition changes.
            let recorded = data_secret(&config, None);
            let observed = [paused_condition(Some(&reason))];
            let status = |conditions| status(recorded, conditions);
            write_conditions(
                &api,
                config.as_ref(),
                &context,
                FIELD_MANAGER,
                &observed,
                &[READY_CONDITION],
                status,
            )
            .await?;
            return Ok(Action::await_change());
        }
        let mut data_secret_name = data_secret(&config, owner.as_ref());
        let mut requeue = None;
        let ready = match (&owner, &cluster) {
            (None, _) => Observed::false_(
                READY_CONDITION,
                reasons::WAITING_FOR_OWNER,
                "waiting for Cluster API to set the owner Machine",
            ),
            (Some(_), None) => Observed::false_(
                READY_CONDITION,
                reasons::WAITING_FOR_CLUSTER,
                "waiting for the Machine's Cluster to exist",
            ),
            (Some(machine), Some(cluster)) => {
                match readiness(data_secret_name.as_deref(), &config.spec, machine, cluster) {
                    Some(ready) => ready,
                    None => {
                        let outcome = generate::generate(
                            &context.client,
                            &state.workloads,
                            &config,
                            machine,
                            cluster,
                            state.token_ttl,
                            &state.kube_vip_image,
                        )
                        .await?;
                        data_secret_name = outcome.data_secret_name;
                        requeue = outcome.requeue;
                        outcome.ready
                    }
                }
            }
        };
        if let (Some(machine), Some(cluster), Some(name)) = (&owner, &cluster, &data_secret_name)
            && !machine.has_node_ref()
        {
            requeue = keep_token_alive(&context, &state, cluster, machine, name).await?;
        }
        if ready.reason.starts_with("Waiting") {
            requeue = requeue.or(Some(Duration::from_secs(30)));
        }
        let status = |conditions| status(data_secret_name.clone(), conditions);
        let observed = [ready, paused_condition(None)];
        write_conditions(
            &api,
            config.as_ref(),
            &context,
            FIELD_MANAGER,
            &observed,
            &[],
            status,
        )
        .await?;
        Ok(requeue.map_or_else(Action::await_change, Action::requeue))
    }
    .instrument(span)
    .await
}

/// The status this controller owns: the data Secret fields (never renamed once set) and conditions.
fn status(data_secret_name: Option<String>, conditions: Vec<Condition>) -> KubeZeroConfigStatus {
    let initialization = data_secret_name.is_some().then_some(BootstrapInitialization {
        data_secret_created: Some(true),
    });
    KubeZeroConfigStatus {
        data_secret_name,
        initialization,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubezero_capi::testing::{Recorded, ScriptedApi, context, not_found};
    use serde_json::{Value, json};

    /// A fresh controller state with the default flags: nothing shared between tests.
    fn state() -> Arc<State> {
        State::new(BootstrapArgs::default())
    }
    const MACHINE: &str = "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/machines/demo-cp-0";
    const CLUSTER: &str = "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters/demo";

    fn config(status: Option<Value>) -> Value {
        let mut object = json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroConfig",
            "metadata": {"name": "demo-cp-0", "namespace": "default", "uid": "u-cfg", "generation": 1,
                "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": "demo-cp-0", "uid": "u-m"}]},
            "spec": {}});
        if let Some(status) = status {
            object["status"] = status;
        }
        object
    }

    fn machine(data_secret_name: Option<&str>) -> Value {
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "demo-cp-0", "namespace": "default", "labels": {"cluster.x-k8s.io/control-plane": ""}},
            "spec": {"clusterName": "demo", "bootstrap": {"dataSecretName": data_secret_name}}})
    }

    fn cluster(paused: bool, provisioned: bool, endpoint: bool) -> Value {
        let mut object = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
            "metadata": {"name": "demo", "namespace": "default"}, "spec": {"paused": paused},
            "status": {"initialization": {"infrastructureProvisioned": provisioned}}});
        if endpoint {
            object["spec"]["controlPlaneEndpoint"] = json!({"host": "api.demo.example", "port": 6443});
        }
        object
    }

    async fn status_after(config: Value, machine: Value, cluster: Value) -> Value {
        let typed: KubeZeroConfig = serde_json::from_value(config.clone()).unwrap();
        let (client, api) =
            ScriptedApi::start(
                move |request| match (request.method.as_str(), request.path.as_str()) {
                    ("GET", MACHINE) => (200, machine.clone()),
                    ("GET", CLUSTER) => (200, cluster.clone()),
                    ("PATCH", _) => (200, config.clone()),
                    ("POST", _) => (201, request.body.clone()),
                    _ => not_found(&request.path),
                },
            );
        reconcile(Arc::new(typed), Arc::new(context(client)), state())
            .await
            .unwrap();
        let requests = api.requests();
        let patch: &Recorded = requests
            .iter()
            .find(|r| r.path.ends_with("/status"))
            .expect("status patch");
        assert!(patch.query.contains("fieldManager=kubezero-bootstrap"));
        patch.body["status"].clone()
    }

    fn ready(status: &Value) -> (String, String) {
        let ready = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        (
            ready["status"].as_str().unwrap().into(),
            ready["reason"].as_str().unwrap().into(),
        )
    }

    #[tokio::test]
    async fn waits_for_infrastructure_then_for_the_endpoint() {
        let status = status_after(config(None), machine(None), cluster(false, false, false)).await;
        assert_eq!(
            ready(&status),
            ("False".into(), reasons::WAITING_FOR_CLUSTER_INFRASTRUCTURE.into())
        );
        let status = status_after(config(None), machine(None), cluster(false, true, false)).await;
        assert_eq!(
            ready(&status),
            ("False".into(), reasons::WAITING_FOR_CONTROL_PLANE_ENDPOINT.into())
        );
        let status = status_after(config(None), machine(None), cluster(false, true, true)).await;
        assert_eq!(
            ready(&status),
            ("False".into(), reasons::INVALID_CONFIGURATION.into()),
            "the Machine has no spec.version"
        );
        assert!(
            status.get("dataSecretName").is_none(),
            "no Secret name without a Secret"
        );
    }

    #[tokio::test]
    async fn an_impossible_alpine_kubernetes_pair_is_refused_before_the_infrastructure() {
        let mut pinned = config(None);
        pinned["spec"]["alpine"] = json!({"release": "3.22"});
        let mut v134 = machine(None);
        v134["spec"]["version"] = json!("v1.34.1");
        let status = status_after(pinned.clone(), v134.clone(), cluster(false, false, false)).await;
        assert_eq!(
            ready(&status),
            ("False".into(), reasons::UNSUPPORTED_KUBERNETES_VERSION.into())
        );
        let message = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.contains("Alpine 3.22 carries Kubernetes 1.33"),
            "{message}"
        );
        assert!(message.contains("use Alpine 3.23"), "{message}");

        // Derived from the version, or built by an extra repository: the flow goes on.
        let status = status_after(config(None), v134.clone(), cluster(false, false, false)).await;
        assert_eq!(
            ready(&status),
            ("False".into(), reasons::WAITING_FOR_CLUSTER_INFRASTRUCTURE.into())
        );
        pinned["spec"]["alpine"]["repositories"] =
            json!(["https://cdn.zero-downtime.net/alpine/v3.22/kubezero"]);
        let status = status_after(pinned, v134, cluster(false, false, false)).await;
        assert_eq!(
            ready(&status),
            ("False".into(), reasons::WAITING_FOR_CLUSTER_INFRASTRUCTURE.into())
        );
    }

    const NS: &str = "/api/v1/namespaces/default";

    /// Runs one reconcile against a scripted API holding `objects` (path → object): GETs of other paths
    /// are 404, POSTs are created (echoed), DELETEs succeed.
    async fn reconcile_with(config: Value, objects: Vec<(String, Value)>) -> (Value, Vec<Recorded>) {
        let deleted = (200, json!({"kind": "Status", "status": "Success"}));
        reconcile_with_delete_reply(config, objects, deleted).await
    }

    /// [`reconcile_with`], answering every DELETE with `delete_reply`.
    async fn reconcile_with_delete_reply(
        config: Value,
        objects: Vec<(String, Value)>,
        delete_reply: (u16, Value),
    ) -> (Value, Vec<Recorded>) {
        let typed: KubeZeroConfig = serde_json::from_value(config.clone()).unwrap();
        let (client, api) =
            ScriptedApi::start(
                move |request| match (request.method.as_str(), request.path.as_str()) {
                    ("GET", path) => objects
                        .iter()
                        .find(|(p, _)| p == path)
                        .map_or_else(|| not_found(path), |(_, object)| (200, object.clone())),
                    ("PATCH", _) => (200, config.clone()),
                    ("POST", _) => (201, request.body.clone()),
                    ("DELETE", _) => delete_reply.clone(),
                    _ => not_found(&request.path),
                },
            );
        reconcile(Arc::new(typed), Arc::new(context(client)), state())
            .await
            .unwrap();
        let requests = api.requests();
        let status = requests
            .iter()
            .find(|r| r.path.ends_with("/status"))
            .expect("status patch")
            .body["status"]
            .clone();
        (status, requests)
    }

    fn versioned(mut machine: Value, control_plane: bool) -> Value {
        machine["spec"]["version"] = json!("v1.34.1");
        if !control_plane {
            machine["metadata"]["labels"] = json!({});
        }
        machine
    }

    fn initialized(mut cluster: Value) -> Value {
        cluster["status"]["conditions"] = json!([{"type": "ControlPlaneInitialized", "status": "True",
            "reason": "Initialized", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        cluster
    }

    /// The objects of the first control-plane Machine of an initializing Cluster, with the init
    /// lock ConfigMap `lock` when there is one.
    fn first_control_plane_machine(lock: Option<Value>) -> Vec<(String, Value)> {
        let mut objects = vec![
            (MACHINE.into(), versioned(machine(None), true)),
            (CLUSTER.into(), cluster(false, true, true)),
        ];
        objects.extend(lock.map(|lock| (format!("{NS}/configmaps/demo-lock"), lock)));
        objects
    }

    /// `Ready` of a Machine that waits for the control plane to initialize.
    fn waiting_for_initialization() -> (String, String) {
        (
            "False".into(),
            reasons::WAITING_FOR_CONTROL_PLANE_INITIALIZATION.into(),
        )
    }

    fn posts_to<'a>(requests: &'a [Recorded], collection: &str) -> Vec<&'a Recorded> {
        requests
            .iter()
            .filter(|r| r.method == "POST" && r.path == format!("{NS}/{collection}"))
            .collect()
    }

    #[tokio::test]
    async fn lock_held_by_another_machine_waits() {
        let lock = lock_held_by_demo_cp_1();
        let other = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
            "metadata": {"name": "demo-cp-1", "namespace": "default"}, "spec": {"clusterName": "demo"}});
        let (status, requests) = reconcile_with(
            config(None),
            first_control_plane_machine(Some(lock))
                .into_iter()
                .chain([(
                    "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/machines/demo-cp-1".into(),
                    other,
                )])
                .collect(),
        )
        .await;
        assert_eq!(ready(&status), waiting_for_initialization());
        assert!(
            posts_to(&requests, "secrets").is_empty(),
            "no Secret while waiting"
        );
        assert!(
            posts_to(&requests, "configmaps").is_empty(),
            "the lock is not taken over"
        );
    }

    #[tokio::test]
    async fn workers_wait_for_control_plane_initialization() {
        let (status, requests) = reconcile_with(
            config(None),
            vec![
                (MACHINE.into(), versioned(machine(None), false)),
                (CLUSTER.into(), cluster(false, true, true)),
            ],
        )
        .await;
        assert_eq!(ready(&status), waiting_for_initialization());
        assert!(
            requests
                .iter()
                .all(|r| r.method != "POST" || r.path.contains("/events")),
            "nothing created: {:?}",
            requests.iter().map(Recorded::line).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn file_from_a_missing_secret_is_reported_and_no_secret_is_written() {
        let mut config = config(None);
        config["spec"]["files"] =
            json!([{"path": "/etc/motd", "contentFrom": {"secret": {"name": "motd", "key": "text"}}}]);
        let (status, requests) = reconcile_with(config, first_control_plane_machine(None)).await;
        let (state, reason) = ready(&status);
        assert_eq!(
            (state.as_str(), reason.as_str()),
            ("False", reasons::FILE_SECRET_NOT_FOUND)
        );
        let message = status["conditions"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
            + status["conditions"][1]["message"].as_str().unwrap_or_default();
        assert!(message.contains("motd"), "{message}");
        assert!(posts_to(&requests, "secrets").is_empty(), "no Secret");
        assert!(status.get("dataSecretName").is_none());
    }

    #[tokio::test]
    async fn oversized_data_is_refused_and_no_data_secret_is_written() {
        let mut config = config(None);
        // 24 KB that gzip cannot shrink below the 16 KB limit: pseudo-random bytes, base64-encoded.
        let noise = crate::render::incompressible(18_000, 0x2545_f491_4f6c_dd1d);
        let content = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, noise);
        config["spec"]["files"] = json!([{"path": "/etc/big", "content": content}]);
        let (status, requests) = reconcile_with(config, first_control_plane_machine(None)).await;
        assert_eq!(
            ready(&status),
            ("False".into(), reasons::BOOTSTRAP_DATA_TOO_LARGE.into())
        );
        assert!(
            posts_to(&requests, "secrets")
                .iter()
                .all(|r| r.body["metadata"]["name"] != "demo-cp-0"),
            "no data Secret"
        );
        assert!(status.get("dataSecretName").is_none());
    }

    #[tokio::test]
    async fn first_control_plane_machine_takes_the_lock_generates_the_pki_and_writes_init_data() {
        let (status, requests) = reconcile_with(config(None), first_control_plane_machine(None)).await;
        assert_eq!(
            ready(&status),
            ("True".into(), reasons::DATA_SECRET_AVAILABLE.into())
        );
        assert_eq!(status["dataSecretName"], "demo-cp-0");
        assert_eq!(status["initialization"]["dataSecretCreated"], true);
        let locks = posts_to(&requests, "configmaps");
        assert_eq!(locks.len(), 1);
        assert_eq!(locks[0].body["metadata"]["name"], "demo-lock");
        let secrets = posts_to(&requests, "secrets");
        let names: Vec<&str> = secrets
            .iter()
            .map(|r| r.body["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["demo-ca", "demo-etcd", "demo-proxy", "demo-sa", "demo-cp-0"]
        );
        for pki in &secrets[..4] {
            assert_eq!(pki.body["metadata"]["ownerReferences"][0]["kind"], "Cluster");
        }
        let data = &secrets[4].body;
        assert_eq!(data["type"], "cluster.x-k8s.io/secret");
        assert_eq!(
            data["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"],
            "demo"
        );
        let owner = &data["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["controller"].as_bool()),
            (Some("KubeZeroConfig"), Some(true))
        );
        use base64::Engine as _;
        let decode = |key: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(data["data"][key].as_str().unwrap())
                .unwrap()
        };
        assert_eq!(decode("format"), b"alpine-config");
        let value = decode("value");
        let text = if value.starts_with(&[0x1f, 0x8b]) {
            use std::io::Read as _;
            let mut out = String::new();
            flate2::read::GzDecoder::new(value.as_slice())
                .read_to_string(&mut out)
                .unwrap();
            out
        } else {
            String::from_utf8(value).unwrap()
        };
        assert!(text.contains("kubeadm init"), "{text}");
    }

    /// The user data of the data Secret posted in `requests`.
    fn posted_user_data(requests: &[Recorded], name: &str) -> String {
        use base64::Engine as _;
        let secret = posts_to(requests, "secrets")
            .into_iter()
            .find(|r| r.body["metadata"]["name"] == name)
            .expect("data Secret");
        let value = base64::engine::general_purpose::STANDARD
            .decode(secret.body["data"]["value"].as_str().unwrap())
            .unwrap();
        String::from_utf8(build::decode_value(&value).unwrap()).unwrap()
    }

    /// Reconciles the control-plane config of a Cluster whose KubeZeroCluster `demo` has `spec`.
    async fn reconcile_on_kubezero_cluster(spec: Value) -> (Value, Vec<Recorded>) {
        let infra = "/apis/infrastructure.cluster.x-k8s.io/v1alpha1/namespaces/default/kubezeroclusters/demo";
        let mut cluster = cluster(false, true, true);
        cluster["spec"]["infrastructureRef"] =
            json!({"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroCluster", "name": "demo"});
        let kubezero_cluster = json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1",
            "kind": "KubeZeroCluster", "metadata": {"name": "demo", "namespace": "default"}, "spec": spec});
        reconcile_with(
            config(None),
            vec![
                (MACHINE.into(), versioned(machine(None), true)),
                (CLUSTER.into(), cluster),
                (infra.into(), kubezero_cluster),
            ],
        )
        .await
    }

    #[tokio::test]
    async fn metal_clusters_take_the_provider_id_from_nocloud_and_aws_ones_from_imds() {
        let manifest = crate::render::kube_vip::MANIFEST_PATH;
        for (backend, expected, absent) in [
            (
                json!({"metal": {"controlPlaneVip": "10.0.0.5", "vipInterface": "eth1"}}),
                vec!["LABEL=cidata", manifest, "10.0.0.5", "eth1"],
                vec!["169.254.169.254"],
            ),
            (
                json!({"aws": {"region": "eu-central-1"}}),
                vec!["169.254.169.254"],
                vec!["LABEL=cidata", "kube-vip", "10.0.0.5"],
            ),
        ] {
            let (_, requests) = reconcile_on_kubezero_cluster(backend).await;
            let text = posted_user_data(&requests, "demo-cp-0");
            for expected in expected {
                assert!(text.contains(expected), "{expected} in {text}");
            }
            for absent in absent {
                assert!(!text.contains(absent), "{absent} in {text}");
            }
        }
    }

    #[tokio::test]
    async fn a_metal_spec_without_a_vip_is_reported_without_a_data_secret() {
        let (status, requests) =
            reconcile_on_kubezero_cluster(json!({"metal": {"vipInterface": "eth1"}})).await;
        assert_eq!(
            ready(&status),
            ("False".into(), reasons::INVALID_CONFIGURATION.into())
        );
        assert!(
            posts_to(&requests, "secrets")
                .iter()
                .all(|r| r.body["metadata"]["name"] != "demo-cp-0")
        );
    }

    #[tokio::test]
    async fn workers_after_initialization_wait_for_the_workload_kubeconfig() {
        let ca = crate::pki::CertificateKind::ClusterCa
            .generate(jiff::Timestamp::now())
            .unwrap();
        let ca = serde_json::to_value(crate::pki::to_secret(
            crate::pki::CertificateKind::ClusterCa,
            &ca,
            "demo",
            "u-c",
            "default",
        ))
        .unwrap();
        let lock = lock_held_by_demo_cp_1();
        let (status, requests) = reconcile_with(
            config(None),
            vec![
                (MACHINE.into(), versioned(machine(None), false)),
                (CLUSTER.into(), initialized(cluster(false, true, true))),
                (format!("{NS}/secrets/demo-ca"), ca),
                (format!("{NS}/configmaps/demo-lock"), lock),
            ],
        )
        .await;
        assert_eq!(
            ready(&status),
            ("False".into(), reasons::WAITING_FOR_WORKLOAD_CLUSTER.into())
        );
        assert!(
            requests
                .iter()
                .any(|r| r.method == "DELETE" && r.path == format!("{NS}/configmaps/demo-lock")),
            "the init lock is released once the control plane is initialized"
        );
        assert!(posts_to(&requests, "secrets").is_empty());
    }

    /// The init lock of Cluster `demo` held by Machine `demo-cp-1`.
    fn lock_held_by_demo_cp_1() -> Value {
        serde_json::to_value(crate::lock::lock_config_map(
            "demo",
            "u-c",
            "default",
            "demo-cp-1",
        ))
        .unwrap()
    }

    /// A lock held by `demo-cp-1`, a Machine that does not exist (stale), with uid `u-lock`.
    fn stale_lock() -> Value {
        let mut lock = lock_held_by_demo_cp_1();
        lock["metadata"]["uid"] = json!("u-lock");
        lock
    }

    #[tokio::test]
    async fn a_stale_lock_is_deleted_with_the_uid_that_was_read_as_precondition() {
        let (_, requests) =
            reconcile_with(config(None), first_control_plane_machine(Some(stale_lock()))).await;
        let deletes: Vec<&Recorded> = requests
            .iter()
            .filter(|r| r.method == "DELETE" && r.path == format!("{NS}/configmaps/demo-lock"))
            .collect();
        assert_eq!(deletes.len(), 1);
        assert_eq!(deletes[0].body["preconditions"]["uid"], "u-lock");
        assert_eq!(posts_to(&requests, "configmaps").len(), 1, "then acquired");
    }

    #[tokio::test]
    async fn a_lock_replaced_before_the_stale_delete_is_kept_and_the_machine_waits() {
        let precondition_failed = (
            409,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "Conflict", "code": 409, "message": "Precondition failed: UID in precondition: u-lock"}),
        );
        let (status, requests) = reconcile_with_delete_reply(
            config(None),
            first_control_plane_machine(Some(stale_lock())),
            precondition_failed,
        )
        .await;
        assert_eq!(ready(&status), waiting_for_initialization());
        assert!(
            posts_to(&requests, "configmaps").is_empty(),
            "the newer lock is not raced"
        );
        assert!(posts_to(&requests, "secrets").is_empty(), "no init data");
    }

    #[tokio::test]
    async fn status_is_restored_from_the_machine_after_a_move() {
        let status = status_after(
            config(None),
            machine(Some("demo-cp-0")),
            cluster(false, true, true),
        )
        .await;
        assert_eq!(status["dataSecretName"], "demo-cp-0");
        assert_eq!(status["initialization"]["dataSecretCreated"], true);
        assert_eq!(
            ready(&status),
            ("True".into(), reasons::DATA_SECRET_AVAILABLE.into())
        );
    }

    #[tokio::test]
    async fn pause_keeps_the_data_secret_fields_and_ready() {
        let previous = json!({"dataSecretName": "demo-cp-0", "initialization": {"dataSecretCreated": true},
            "conditions": [{"type": "Ready", "status": "True", "reason": "DataSecretAvailable", "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        let status = status_after(
            config(Some(previous)),
            machine(Some("demo-cp-0")),
            cluster(true, true, true),
        )
        .await;
        assert_eq!(
            status["dataSecretName"], "demo-cp-0",
            "server-side apply would drop an omitted field"
        );
        assert_eq!(status["initialization"]["dataSecretCreated"], true);
        assert_eq!(ready(&status), ("True".into(), "DataSecretAvailable".into()));
        let unrestored = status_after(
            config(None),
            machine(Some("demo-cp-0")),
            cluster(true, true, true),
        )
        .await;
        assert!(
            unrestored.get("dataSecretName").is_none(),
            "no restore while paused"
        );
        let paused = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Paused")
            .unwrap();
        assert_eq!(paused["status"], "True");
    }

    #[test]
    fn token_ttl_flag_defaults_to_15_minutes_and_refuses_short_values() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BootstrapArgs,
        }
        let parsed = Cli::try_parse_from(["kubezero-bootstrap"]).unwrap().args;
        assert_eq!(parsed.bootstrap_token_ttl, Duration::from_secs(15 * 60));
        assert_eq!(
            parsed.bootstrap_token_ttl,
            BootstrapArgs::default().bootstrap_token_ttl
        );
        let parsed = Cli::try_parse_from(["k", "--bootstrap-token-ttl", "2m"])
            .unwrap()
            .args;
        assert_eq!(parsed.bootstrap_token_ttl, Duration::from_secs(120));
        let error = Cli::try_parse_from(["k", "--bootstrap-token-ttl", "10s"])
            .err()
            .unwrap();
        assert!(error.to_string().contains("shorter than 30s"), "{error}");
    }

    #[test]
    fn kube_vip_image_flag_defaults_to_the_pinned_tag_and_refuses_blanks() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BootstrapArgs,
        }
        let parsed = Cli::try_parse_from(["k"]).unwrap().args;
        assert_eq!(parsed.kube_vip_image, crate::render::kube_vip::DEFAULT_IMAGE);
        assert_eq!(parsed.kube_vip_image, BootstrapArgs::default().kube_vip_image);
        let parsed = Cli::try_parse_from(["k", "--kube-vip-image", "registry.example/kube-vip:v1.0.4"])
            .unwrap()
            .args;
        assert_eq!(parsed.kube_vip_image, "registry.example/kube-vip:v1.0.4");
        assert!(Cli::try_parse_from(["k", "--kube-vip-image", "a b"]).is_err());
        assert!(Cli::try_parse_from(["k", "--kube-vip-image", ""]).is_err());
    }

    #[test]
    fn machines_map_to_their_bootstrap_config_reference() {
        let mut machine: Machine = serde_json::from_value(machine(None)).unwrap();
        assert!(machine_to_config(machine.clone()).is_none(), "no configRef");
        machine.spec.bootstrap.config_ref = Some(kubezero_capi::core::ContractVersionedObjectReference {
            api_group: GROUP.into(),
            kind: "KubeZeroConfig".into(),
            name: "demo-cp-0".into(),
        });
        assert_eq!(machine_to_config(machine).unwrap().name, "demo-cp-0");
    }
}
