//! Whether the management cluster reaches a workload cluster's API server: the
//! `ControlPlaneEndpointReachable` condition of a KubeZeroCluster.
//!
//! Cluster API core (Node references, so `ControlPlaneInitialized`) and the bootstrap manager (join
//! tokens) connect to `spec.controlPlaneEndpoint` from the management cluster. An internal load
//! balancer (the default) answers only inside the cluster's VPC or a network connected to it; a
//! management cluster elsewhere would wait forever without saying why. This controller runs where
//! they run, so it tries a TCP connection to the endpoint and says what it found:
//!
//! - `WaitingForControlPlane`: no machine of the cluster is provisioned yet, nothing can answer.
//! - `WaitingForAPIServer`: machines are up for less than [`API_SERVER_START`], the first API
//!   server may still be starting.
//! - `Unreachable`: no answer after that; the message names the error and what to change.
//! - `Reachable` (True).
//!
//! The condition is reported next to `Ready` and does not change it: the infrastructure itself is
//! complete either way.

use std::time::Duration;

use kubezero_capi::conditions::Observed;

use crate::api::aws::LoadBalancerScheme;

/// Condition type.
pub const CONDITION: &str = "ControlPlaneEndpointReachable";
/// Reason: the endpoint answered.
pub const REACHABLE: &str = "Reachable";
/// Reason: no machine of the cluster is provisioned yet.
pub const WAITING_FOR_CONTROL_PLANE: &str = "WaitingForControlPlane";
/// Reason: machines are up, the first API server may still be starting.
pub const WAITING_FOR_API_SERVER: &str = "WaitingForAPIServer";
/// Reason: no answer although machines have been up for [`API_SERVER_START`].
pub const UNREACHABLE: &str = "Unreachable";

/// How long after the first machine of a cluster is provisioned an unanswered endpoint is still
/// taken for an API server that is starting (image boot, packages, `kubeadm init`).
pub const API_SERVER_START: Duration = Duration::from_secs(10 * 60);
/// How long one connection attempt (name resolution included) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How soon to try again while the endpoint does not answer.
pub const PROBE_REQUEUE: Duration = Duration::from_secs(30);

/// What the controller knows when it judges reachability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// `host:port` of the control-plane endpoint.
    pub endpoint: String,
    /// The load balancer scheme on AWS (`None` elsewhere, or for a user-given endpoint).
    pub scheme: Option<LoadBalancerScheme>,
    /// How long ago the first machine of the cluster was provisioned (`None`: none is).
    pub machines_up_for: Option<Duration>,
}

/// The outcome of one connection attempt: `Ok` or the error's text.
pub type Probe = Result<(), String>;

/// The condition for `facts` and, when a probe was made, its outcome. Pure.
pub fn condition(facts: &Facts, probe: Option<&Probe>) -> Observed {
    let endpoint = &facts.endpoint;
    match (facts.machines_up_for, probe) {
        (_, Some(Ok(()))) => Observed::true_(
            CONDITION,
            REACHABLE,
            format!("the provider manager connected to {endpoint}"),
        ),
        (None, _) | (_, None) => Observed::false_(
            CONDITION,
            WAITING_FOR_CONTROL_PLANE,
            format!("no machine of the cluster is provisioned yet; nothing answers at {endpoint}"),
        ),
        (Some(up_for), Some(Err(error))) if up_for < API_SERVER_START => Observed::false_(
            CONDITION,
            WAITING_FOR_API_SERVER,
            format!(
                "no API server answered at {endpoint} yet ({error}); the first control plane may still \
                 be starting"
            ),
        ),
        (Some(up_for), Some(Err(error))) => Observed::false_(
            CONDITION,
            UNREACHABLE,
            format!(
                "the provider manager cannot connect to {endpoint} ({error}) although the cluster's \
                 machines have been up for {} min; Cluster API core and the bootstrap manager need this \
                 connection too. {}",
                up_for.as_secs() / 60,
                hint(facts.scheme)
            ),
        ),
    }
}

/// What to change, by load balancer scheme.
fn hint(scheme: Option<LoadBalancerScheme>) -> &'static str {
    match scheme {
        Some(LoadBalancerScheme::Internal) => {
            "An internal load balancer (spec.aws.loadBalancer.scheme: internal) answers only inside the \
             cluster's VPC or a network connected to it (peering, transit gateway, VPN): run the \
             management cluster there, or use scheme internet-facing with \
             spec.aws.loadBalancer.allowedCidrBlocks naming the management cluster's egress addresses."
        }
        Some(LoadBalancerScheme::InternetFacing) => {
            "The load balancer is internet-facing: check that spec.aws.loadBalancer.allowedCidrBlocks \
             includes the management cluster's egress addresses and that the control-plane machines \
             are healthy targets."
        }
        None => "Check that the management cluster can route to the endpoint and that its API server runs.",
    }
}

/// Tries one TCP connection to `endpoint` (`host:port`; the name is resolved as part of it), bounded
/// by [`PROBE_TIMEOUT`].
pub async fn probe(endpoint: &str) -> Probe {
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(endpoint)).await {
        Ok(Ok(_connection)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no connection within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(scheme: Option<LoadBalancerScheme>, up_for: Option<u64>) -> Facts {
        Facts {
            endpoint: "lb.example:6443".into(),
            scheme,
            machines_up_for: up_for.map(Duration::from_secs),
        }
    }

    #[test]
    fn the_reason_follows_the_machines_and_the_probe() {
        let refused: Probe = Err("connection refused".into());
        let internal = Some(LoadBalancerScheme::Internal);
        let waiting = condition(&facts(internal, None), None);
        assert_eq!(waiting.reason, WAITING_FOR_CONTROL_PLANE);
        let starting = condition(&facts(internal, Some(60)), Some(&refused));
        assert_eq!(starting.reason, WAITING_FOR_API_SERVER);
        assert!(starting.message.contains("connection refused"));
        let unreachable = condition(&facts(internal, Some(900)), Some(&refused));
        assert_eq!(unreachable.reason, UNREACHABLE);
        assert!(
            unreachable.message.contains("internal load balancer") && unreachable.message.contains("15 min"),
            "{}",
            unreachable.message
        );
        let public = condition(
            &facts(Some(LoadBalancerScheme::InternetFacing), Some(900)),
            Some(&refused),
        );
        assert!(public.message.contains("allowedCidrBlocks"), "{}", public.message);
        let reachable = condition(&facts(internal, Some(30)), Some(&Ok(())));
        assert_eq!(reachable.reason, REACHABLE);
        assert_eq!(reachable.status.as_str(), "True");
    }

    #[tokio::test]
    async fn a_listening_port_answers_and_a_closed_one_does_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        assert_eq!(probe(&open).await, Ok(()));
        drop(listener);
        assert!(probe(&open).await.is_err(), "closed again");
    }
}
