//! Generating the bootstrap data Secret of one KubeZeroConfig once its Machine and Cluster are ready
//! (contract §4 and §6), as dereference → build without a client → apply: [`super::fetch`] takes the
//! role under the init lock and reads the PKI, the files and the CA pin, [`super::workload`] gets
//! the join token in the workload cluster, [`super::build`] renders the data Secret, and this module
//! creates it.
//!
//! Every problem the user can fix is reported as a `Ready=False` condition with a reason and no data
//! Secret; API failures are returned as [`Error`] (retried with backoff). Secret material (keys, tokens,
//! user data) is never logged.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use kubezero_capi::conditions::Observed;
use kubezero_capi::contract::READY_CONDITION;
use kubezero_capi::core::{Cluster, Machine};
use kubezero_capi::runtime::reconcile::Error;

use super::build::{self, BuildError, BuildInputs};
use super::workload::{WorkloadError, Workloads};
use super::{fetch, reasons};
use crate::api::KubeZeroConfig;
use crate::render::kubeadm::KubeadmRole;

/// How long a config waits before looking again (lock, control-plane initialization, workload cluster).
pub const REQUEUE: Duration = Duration::from_secs(30);

/// What a generation attempt ends with.
#[derive(Debug)]
pub struct Outcome {
    /// The `Ready` condition.
    pub ready: Observed,
    /// The data Secret's name when it exists.
    pub data_secret_name: Option<String>,
    /// When to look again.
    pub requeue: Option<Duration>,
}

impl Outcome {
    fn not_ready(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ready: Observed::false_(READY_CONDITION, reason, message),
            data_secret_name: None,
            requeue: Some(REQUEUE),
        }
    }
}

/// Stops generation: a condition to report, or an API error.
pub(super) enum Halt {
    Report(Outcome),
    Failed(Error),
}

impl Halt {
    /// A configuration that cannot be built: reported, not retried until it changes.
    pub(super) fn invalid(error: BuildError) -> Self {
        Halt::Report(Outcome {
            requeue: None,
            ..Outcome::not_ready(error.reason(), error.to_string())
        })
    }
}

impl From<Error> for Halt {
    fn from(error: Error) -> Self {
        Halt::Failed(error)
    }
}

impl From<WorkloadError> for Halt {
    fn from(error: WorkloadError) -> Self {
        match error {
            WorkloadError::ReadKubeconfig(error) => Halt::Failed(error),
            other => Halt::Report(Outcome::not_ready(
                reasons::WAITING_FOR_WORKLOAD_CLUSTER,
                other.to_string(),
            )),
        }
    }
}

/// The result of one step of the generation.
pub(super) type Step<T> = Result<T, Halt>;

/// Ends the generation with `Ready=False` (`reason`, `message`), looked at again after [`REQUEUE`].
pub(super) fn report<T>(reason: &str, message: impl Into<String>) -> Step<T> {
    Err(Halt::Report(Outcome::not_ready(reason, message)))
}

/// Whether the API answered 409 Conflict (AlreadyExists, or a failed precondition).
pub(super) fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Whether the API answered 404 NotFound.
pub(super) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Generates the data Secret of `config` for `machine` of `cluster` (infrastructure provisioned, endpoint
/// set; checked by the caller); join tokens live `token_ttl` in the workload cluster reached through
/// `workloads`.
pub async fn generate(
    client: &Client,
    workloads: &Workloads,
    config: &KubeZeroConfig,
    machine: &Machine,
    cluster: &Cluster,
    token_ttl: Duration,
) -> Result<Outcome, Error> {
    match generate_steps(client, workloads, config, machine, cluster, token_ttl).await {
        Ok(outcome) => Ok(outcome),
        Err(Halt::Report(outcome)) => Ok(outcome),
        Err(Halt::Failed(error)) => Err(error),
    }
}

async fn generate_steps(
    client: &Client,
    workloads: &Workloads,
    config: &KubeZeroConfig,
    machine: &Machine,
    cluster: &Cluster,
    token_ttl: Duration,
) -> Step<Outcome> {
    // Dereference.
    let namespace = config.namespace().unwrap_or_default();
    let role = fetch::role(client, &namespace, machine, cluster).await?;
    let user_files = fetch::user_files(client, &namespace, &config.spec.files).await?;
    let certificates = match role {
        KubeadmRole::Init | KubeadmRole::ControlPlaneJoin => {
            Some(fetch::cluster_certificates(client, cluster, role == KubeadmRole::Init).await?)
        }
        KubeadmRole::WorkerJoin => None,
    };
    let pin = match &certificates {
        Some(certificates) => certificates.discovery_pin(),
        None => fetch::ca_pin(client, cluster).await?,
    };
    let ca_pin = match pin {
        Ok(pin) => pin,
        Err(error) => return report(reasons::INVALID_CLUSTER_CERTIFICATES, error.to_string()),
    };
    let token = match role {
        KubeadmRole::Init => None,
        _ => Some(workloads.join_token(client, cluster, machine, token_ttl).await?),
    };
    let provider_id = fetch::provider_id_source(client, cluster).await?;

    // Build, without a client.
    let built = build::build(BuildInputs {
        config,
        machine,
        cluster,
        role,
        user_files,
        certificates: certificates.as_ref(),
        ca_pin,
        token: token.as_ref(),
        provider_id,
    })
    .map_err(Halt::invalid)?;

    // Apply.
    let name = create_data_secret(client, &namespace, &built.secret).await?;
    tracing::info!(secret = %name, role = ?role, raw_size = built.raw_size, gzipped = built.gzipped,
        "bootstrap data Secret created");
    Ok(Outcome {
        ready: Observed::true_(
            READY_CONDITION,
            reasons::DATA_SECRET_AVAILABLE,
            format!("bootstrap data in Secret {name}"),
        ),
        data_secret_name: Some(name),
        requeue: None,
    })
}

/// Creates the data Secret `secret` in `namespace`; its name once it exists.
async fn create_data_secret(client: &Client, namespace: &str, secret: &Secret) -> Step<String> {
    let name = secret.name_any();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match secrets.create(&PostParams::default(), secret).await {
        Ok(_) => Ok(name),
        // Already written by an earlier reconcile whose status write was lost: keep it, never rename.
        Err(error) if is_conflict(&error) => Ok(name),
        Err(error) => Err(Error::write("create", "Secret", namespace, &name)(error).into()),
    }
}
