//! Start-up check that the CRDs a manager needs are installed and established.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::http::Readiness;
use crate::contract::CAPI_GROUP;

/// Why one required CRD is not usable yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingCrd {
    /// CRD name, `<plural>.<group>`.
    pub name: String,
    /// `not installed` or `not established`.
    pub problem: &'static str,
}

impl std::fmt::Display for MissingCrd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.problem)?;
        if self
            .name
            .split_once('.')
            .is_some_and(|(_, group)| group == CAPI_GROUP)
        {
            write!(f, " [is Cluster API core installed? run `clusterctl init`]")?;
        }
        Ok(())
    }
}

/// True when the CRD's `Established` condition is True.
pub fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// The required CRDs that are not installed or not established.
pub async fn missing_crds(client: &Client, required: &[String]) -> Result<Vec<MissingCrd>, kube::Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut missing = Vec::new();
    for name in required {
        match api.get_opt(name).await? {
            None => missing.push(MissingCrd {
                name: name.clone(),
                problem: "not installed",
            }),
            Some(crd) if !is_established(&crd) => missing.push(MissingCrd {
                name: name.clone(),
                problem: "not established",
            }),
            Some(_) => {}
        }
    }
    Ok(missing)
}

/// Polls until every required CRD is established; logs and reports the missing ones through readiness.
///
/// Returns `false` when `shutdown` fired first.
pub async fn wait_for_crds(
    client: &Client,
    required: &[String],
    readiness: &Readiness,
    shutdown: &CancellationToken,
    poll: Duration,
) -> bool {
    loop {
        match missing_crds(client, required).await {
            Ok(missing) if missing.is_empty() => {
                tracing::info!(count = required.len(), "all required CRDs are established");
                return true;
            }
            Ok(missing) => {
                let list = missing
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                tracing::warn!(missing = %list, "waiting for CRDs");
                readiness.set_not_ready(format!("waiting for CRDs: {list}"));
            }
            Err(error) => {
                tracing::warn!(%error, "unable to read CRDs");
                readiness.set_not_ready(format!("unable to read CRDs: {error}"));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_capi_crds_carry_an_install_hint() {
        let capi = MissingCrd {
            name: "machines.cluster.x-k8s.io".into(),
            problem: "not installed",
        };
        assert!(capi.to_string().contains("clusterctl init"));
        let ours = MissingCrd {
            name: "kubezeromachines.infrastructure.cluster.x-k8s.io".into(),
            problem: "not established",
        };
        assert_eq!(
            ours.to_string(),
            "kubezeromachines.infrastructure.cluster.x-k8s.io (not established)"
        );
    }
}
