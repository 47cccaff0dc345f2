//! The boot media server: what BMCs and the installer fetch from the provider over HTTP.
//!
//! - `GET /media/<namespace>/<host>/<token>/cidata.iso`: the host's NoCloud seed ([`cidata`]) with
//!   the bootstrap data of the machine that holds it, built when asked;
//! - `POST /media/<namespace>/<host>/<token>/phase/<phase>`: an installer report ([`Phase`]; the
//!   body is the reason of `failed`), recorded on the host as the [`INSTALLER_REPORT_ANNOTATION`]
//!   (a metadata change, so it wakes the host controller at once; the status stays the host
//!   controller's alone).
//!
//! A URL answers only while its host is claimed, its `status.provisioning` is for that claim (the
//! machine's UID) and the token's SHA-256 is the one recorded there; anything else is 404, the same
//! answer as for a host that does not exist, so the server tells a stranger nothing. Tokens are 256
//! random bits, one per provisioning ([`new_token`]); only their hash is ever stored.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kubezero_capi::owner::get_owner_machine;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::cidata::{MediaFormat, SeedFiles, build_image};
use super::installer::Phase;
use crate::api::{HostProvisioning, KubeZeroHost, KubeZeroMachine};
use crate::controllers::machine::scope::bootstrap_data;

/// Field manager of the media server's writes.
pub const FIELD_MANAGER: &str = "kubezero-provider-media";

/// Annotation holding the installer's last report: JSON `{"phase", "reason", "time", "token"}`
/// (`token`: the first 12 hex digits of the token's SHA-256, naming the provisioning it is for).
pub const INSTALLER_REPORT_ANNOTATION: &str = "kubezero.io/installer-report";

/// The installer's last report, as the [`INSTALLER_REPORT_ANNOTATION`] holds it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstallerReport {
    /// [`Phase::as_str`].
    pub phase: String,
    /// The reason of a `failed` phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the media server received it (RFC 3339).
    pub time: String,
    /// The first 12 hex digits of the provisioning's token hash.
    pub token: String,
}

impl InstallerReport {
    /// The report on `host` for the provisioning whose token hash is `token_sha256`, if any.
    pub fn of(host: &KubeZeroHost, token_sha256: &str) -> Option<Self> {
        let report: Self = serde_json::from_str(
            host.metadata
                .annotations
                .as_ref()?
                .get(INSTALLER_REPORT_ANNOTATION)?,
        )
        .ok()?;
        token_sha256.starts_with(&report.token).then_some(report)
    }
}

/// A fresh media token: 256 random bits as 64 hex digits.
pub fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The SHA-256 of `token`, as `status.provisioning.tokenSha256` holds it.
pub fn token_sha256(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The path of a host's cidata image under a media URL.
pub fn cidata_path(namespace: &str, host: &str, token: &str) -> String {
    format!("/media/{namespace}/{host}/{token}/cidata.iso")
}

/// The URL the installer reports phases under (it appends `/<phase>`).
pub fn report_url(base: &str, namespace: &str, host: &str, token: &str) -> String {
    format!(
        "{}/media/{namespace}/{host}/{token}/phase",
        base.trim_end_matches('/')
    )
}

/// What the handlers share.
#[derive(Clone)]
pub struct MediaState {
    client: kube::Client,
}

impl MediaState {
    /// Handlers reading hosts, machines and bootstrap Secrets through `client`.
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

/// The media routes.
pub fn router(state: MediaState) -> Router {
    Router::new()
        .route("/media/{namespace}/{host}/{token}/cidata.iso", get(cidata))
        .route("/media/{namespace}/{host}/{token}/phase/{phase}", post(report))
        .with_state(Arc::new(state))
}

/// Serves the media routes on `address` until `shutdown` is cancelled.
pub async fn serve(
    address: SocketAddr,
    state: MediaState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    info!(%address, "serving boot media");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Path parameters of a media URL.
#[derive(serde::Deserialize)]
struct HostToken {
    namespace: String,
    host: String,
    token: String,
}

/// The host, if `token` is its current provisioning's token and the provisioning is its claim's.
async fn provisioned_host(
    state: &MediaState,
    path: &HostToken,
) -> Result<(KubeZeroHost, HostProvisioning), Response> {
    let hosts: Api<KubeZeroHost> = Api::namespaced(state.client.clone(), &path.namespace);
    let host = match hosts.get_opt(&path.host).await {
        Ok(Some(host)) => host,
        Ok(None) => return Err(not_found()),
        Err(error) => return Err(unavailable(&error.to_string())),
    };
    let provisioning = host
        .status
        .as_ref()
        .and_then(|status| status.provisioning.clone());
    let claim = host.spec.consumer_ref.as_ref();
    match (provisioning, claim) {
        (Some(provisioning), Some(claim))
            if provisioning.machine_uid == claim.uid
                && provisioning.token_sha256 == token_sha256(&path.token) =>
        {
            Ok((host, provisioning))
        }
        _ => Err(not_found()),
    }
}

async fn cidata(State(state): State<Arc<MediaState>>, Path(path): Path<HostToken>) -> Response {
    let (host, _) = match provisioned_host(&state, &path).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let Some(claim) = host.spec.consumer_ref.as_ref() else {
        return not_found();
    };
    let machines: Api<KubeZeroMachine> = Api::namespaced(state.client.clone(), &path.namespace);
    let machine = match machines.get_opt(&claim.name).await {
        Ok(Some(machine)) if machine.metadata.uid.as_deref() == Some(claim.uid.as_str()) => machine,
        Ok(_) => return not_found(),
        Err(error) => return unavailable(&error.to_string()),
    };
    let owner = match get_owner_machine(&state.client, &path.namespace, &machine.metadata).await {
        Ok(Some(owner)) => owner,
        Ok(None) => return unavailable("the machine has no owner Machine yet"),
        Err(error) => return unavailable(&error.to_string()),
    };
    let user_data = match bootstrap_data(&state.client, &path.namespace, &owner).await {
        Ok(Some(data)) => data,
        Ok(None) => return unavailable("the machine's bootstrap data is not ready"),
        Err(error) => return unavailable(&error.to_string()),
    };
    let image = SeedFiles::for_host(&path.namespace, &path.host, &host.spec, &user_data)
        .and_then(|seed| build_image(&seed, MediaFormat::Iso9660));
    match image {
        Ok(image) => {
            let mut response = image.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-iso9660-image"),
            );
            response
        }
        Err(error) => {
            warn!(namespace = %path.namespace, host = %path.host, %error, "building the cidata image failed");
            (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    }
}

/// Path parameters of a phase report.
#[derive(serde::Deserialize)]
struct PhaseReport {
    namespace: String,
    host: String,
    token: String,
    phase: String,
}

async fn report(
    State(state): State<Arc<MediaState>>,
    Path(path): Path<PhaseReport>,
    body: Bytes,
) -> Response {
    let phase = match Phase::from_report(&path.phase, &body) {
        Ok(phase) => phase,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    let target = HostToken {
        namespace: path.namespace,
        host: path.host,
        token: path.token,
    };
    let (host, provisioning) = match provisioned_host(&state, &target).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let recorded = InstallerReport {
        phase: phase.as_str().to_string(),
        reason: phase.reason().map(str::to_string),
        time: jiff::Timestamp::now().to_string(),
        token: provisioning.token_sha256[..12].to_string(),
    };
    let Ok(value) = serde_json::to_string(&recorded) else {
        return unavailable("encoding the report");
    };
    // A merge patch of the one annotation, conditional on the read resourceVersion: a report racing
    // a new provisioning (another token) is refused instead of landing on it.
    let patch = json!({
        "metadata": {
            "resourceVersion": host.metadata.resource_version,
            "annotations": {INSTALLER_REPORT_ANNOTATION: value},
        },
    });
    let hosts: Api<KubeZeroHost> = Api::namespaced(state.client.clone(), &target.namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    match hosts.patch(&target.host, &params, &Patch::Merge(&patch)).await {
        Ok(_) => {
            info!(namespace = %target.namespace, host = %target.host, phase = phase.as_str(), "installer reported");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            (StatusCode::CONFLICT, "the host changed; report again").into_response()
        }
        Err(error) => unavailable(&error.to_string()),
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// 503: the caller (a BMC, the installer) retries.
fn unavailable(why: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, why.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_only_their_hash_is_kept() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            report_url("http://10.0.0.2:8090/", "metal", "h1", "t"),
            "http://10.0.0.2:8090/media/metal/h1/t/phase"
        );
        assert_eq!(cidata_path("metal", "h1", "t"), "/media/metal/h1/t/cidata.iso");
    }
}
