//! Keeping a join's bootstrap token alive while its Machine has no `nodeRef` (the
//! rules are in [`crate::tokens`]): the token recorded in the data Secret ([`TOKEN_KEY`]) gets its
//! `expiration` pushed to now+TTL once less than 5/6·TTL remains, and is re-created with the same value
//! when it is gone from the workload cluster, so the rendered user data stays valid.

use std::time::Duration;

use base64::Engine as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use kubezero_capi::core::{Cluster, Machine};
use kubezero_capi::runtime::reconcile::Error;
use serde_json::json;

use super::build::TOKEN_KEY;
use super::workload::{WORKLOAD_TIMEOUT, WorkloadError, Workloads};
use crate::tokens::{self, BootstrapToken, Refresh, TOKEN_NAMESPACE, TokenGroup, keys};

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// The data Secret carries no token (init data, or written before tokens were recorded).
    NoToken,
    /// Enough lifetime left.
    Kept,
    /// `expiration` moved to this time.
    Extended(Timestamp),
    /// The token Secret was gone and was created again with the same token.
    Recreated,
}

/// Refreshes the token of `data_secret_name` (the data Secret of `machine`'s config) in the workload
/// cluster of `cluster`, reached through `workloads`. `Ok(Err(message))` when the workload cluster
/// cannot be reached or refuses: the caller reports it and retries; `Err` for failures reading the
/// management cluster.
pub async fn refresh_join_token(
    client: &Client,
    workloads: &Workloads,
    cluster: &Cluster,
    machine: &Machine,
    data_secret_name: &str,
    ttl: Duration,
) -> Result<Result<Refreshed, String>, Error> {
    let namespace = machine.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let data = secrets.get_opt(data_secret_name).await.map_err(Error::read(
        "Secret",
        &namespace,
        data_secret_name,
    ))?;
    let recorded = data
        .as_ref()
        .and_then(|secret| secret.data.as_ref()?.get(TOKEN_KEY))
        .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok());
    let Some(recorded) = recorded else {
        return Ok(Ok(Refreshed::NoToken));
    };
    let token = match BootstrapToken::parse(recorded.trim()) {
        Ok(token) => token,
        Err(error) => return Ok(Err(format!("data Secret {data_secret_name}: {error}"))),
    };
    let workload = match workloads.connect(client, cluster).await {
        Ok(workload) => workload,
        Err(WorkloadError::ReadKubeconfig(error)) => return Err(error),
        Err(unusable) => return Ok(Err(unusable.to_string())),
    };
    let group = TokenGroup::for_machine(
        &cluster.name_any(),
        &machine.name_any(),
        machine.metadata.labels.as_ref(),
    );
    let work = refresh_in_workload(workload.client.clone(), &token, &group, ttl);
    Ok(match tokio::time::timeout(WORKLOAD_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "workload cluster of Cluster {} gave no answer within {WORKLOAD_TIMEOUT:?}",
            cluster.name_any()
        )),
    })
}

async fn refresh_in_workload(
    workload: Client,
    token: &BootstrapToken,
    group: &TokenGroup,
    ttl: Duration,
) -> Result<Refreshed, String> {
    let secrets: Api<Secret> = Api::namespaced(workload, TOKEN_NAMESPACE);
    let name = token.secret_name();
    let now = Timestamp::now();
    let current = secrets
        .get_opt(&name)
        .await
        .map_err(|error| format!("reading bootstrap token {name}: {error}"))?;
    let Some(current) = current else {
        let secret = tokens::group_token_secret(token, group, ttl, now);
        return match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(token_id = token.id(), "re-created a missing bootstrap token");
                Ok(Refreshed::Recreated)
            }
            // Created meanwhile by a sibling of the same group.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Refreshed::Kept),
            Err(error) => Err(format!("re-creating bootstrap token {name}: {error}")),
        };
    };
    let expiration = tokens::expiration(&current).map_err(|error| format!("{name}: {error}"))?;
    match tokens::refresh_decision(expiration, now, ttl) {
        Refresh::Keep => Ok(Refreshed::Kept),
        Refresh::Extend(until) => {
            let value = base64::engine::general_purpose::STANDARD.encode(tokens::format_expiration(until));
            let patch = json!({"data": {(keys::EXPIRATION): value}});
            secrets
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|error| format!("extending bootstrap token {name}: {error}"))?;
            tracing::debug!(token_id = token.id(), %until, "extended the bootstrap token");
            Ok(Refreshed::Extended(until))
        }
    }
}
