//! Access to the workload clusters: the client built from `<cluster>-kubeconfig`, the join RBAC
//! ensured there and the join tokens created or reused there, with what the controller keeps per
//! workload cluster across reconciles ([`Workloads`], owned by the controller's [`super::State`]).
//!
//! What is kept: the client (one per kubeconfig, so its connections are reused), when the join RBAC
//! was last ensured, and per token group the join token last chosen. A MachineDeployment scaled by
//! hundreds configures hundreds of joins at once. Without this memory each of them built a new
//! client (a new connection), created the three RBAC bindings again and listed its group's tokens
//! while holding the group's lock, so the joins of one group were configured one workload round trip
//! after another.
//!
//! Every call to a workload cluster is bounded by [`WORKLOAD_TIMEOUT`]. Token values are never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use kubezero_capi::contract::KUBECONFIG_SECRET_VALUE_KEY;
use kubezero_capi::core::{Cluster, Machine};
use kubezero_capi::runtime::reconcile::Error;

use crate::tokens::{self, BootstrapToken, TOKEN_NAMESPACE, TokenChoice, TokenGroup};

/// How long the join RBAC is trusted to exist after it was ensured.
pub const RBAC_RECHECK: Duration = Duration::from_secs(5 * 60);
/// How long a chosen join token is reused without listing the group's tokens again.
pub const TOKEN_RECHECK: Duration = Duration::from_secs(30);
/// A workload cluster not used for this long is forgotten (its Cluster was deleted, or moved).
const IDLE_EVICTION: Duration = Duration::from_secs(60 * 60);
/// Bound on every call to the workload cluster, so an unreachable endpoint cannot stall a worker.
pub const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a workload cluster could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// Reading `<cluster>-kubeconfig` from the management cluster failed (retried with backoff).
    #[error(transparent)]
    ReadKubeconfig(Error),
    /// `<cluster>-kubeconfig` does not exist (yet), or has no kubeconfig.
    #[error("waiting for the kubeconfig Secret {namespace}/{name}")]
    MissingKubeconfig {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
    },
    /// The kubeconfig cannot be turned into a client.
    #[error("the kubeconfig in Secret {namespace}/{name} is not usable: {reason}")]
    UnusableKubeconfig {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The workload cluster refused, failed or gave no answer in time.
    #[error("workload cluster of Cluster {cluster} is not reachable: {reason}")]
    Unreachable {
        /// Name of the Cluster.
        cluster: String,
        /// What was being done and what went wrong.
        reason: String,
    },
}

/// One workload cluster, as reached with one kubeconfig.
pub struct Workload {
    /// Client of the workload cluster.
    pub client: Client,
    rbac_ensured: Mutex<Option<Instant>>,
    groups: Mutex<HashMap<String, Arc<TokenGroupState>>>,
}

/// The lock serializing one token group's reuse-or-create decision, with the token it last chose.
pub type TokenGroupState = tokio::sync::Mutex<Option<ChosenToken>>;

/// A join token chosen (found or created) for a token group.
#[derive(Clone)]
pub struct ChosenToken {
    /// The token.
    pub token: BootstrapToken,
    /// When it expires in the workload cluster.
    pub expires: Timestamp,
    /// When the group's tokens were listed (or the token created).
    pub checked: Instant,
}

impl ChosenToken {
    /// Whether the token may be used again at `now` without listing: checked less than
    /// [`TOKEN_RECHECK`] ago, and at least half of `ttl` left (the rule a listing applies).
    pub fn reusable(&self, now: Timestamp, ttl: Duration) -> bool {
        let half = jiff::SignedDuration::try_from(ttl / 2).unwrap_or(jiff::SignedDuration::MAX);
        self.checked.elapsed() < TOKEN_RECHECK && self.expires.duration_since(now) >= half
    }
}

impl Workload {
    fn new(client: Client) -> Self {
        Self {
            client,
            rbac_ensured: Mutex::new(None),
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the join RBAC must be ensured (never, or more than [`RBAC_RECHECK`] ago).
    pub fn rbac_due(&self) -> bool {
        guard(&self.rbac_ensured).is_none_or(|at| at.elapsed() >= RBAC_RECHECK)
    }

    /// Records that the join RBAC exists now.
    pub fn rbac_ensured(&self) {
        *guard(&self.rbac_ensured) = Some(Instant::now());
    }

    /// The state of token group `selector`: lock it to decide whether to reuse or create. Groups
    /// nobody holds whose token is no longer reused are forgotten (MachineSets come and go).
    pub fn token_group(&self, selector: &str) -> Arc<TokenGroupState> {
        let mut groups = guard(&self.groups);
        groups.retain(|_, state| {
            Arc::strong_count(state) > 1
                || state.try_lock().is_ok_and(|chosen| {
                    chosen
                        .as_ref()
                        .is_some_and(|chosen| chosen.checked.elapsed() < TOKEN_RECHECK)
                })
        });
        groups.entry(selector.to_owned()).or_default().clone()
    }
}

/// A kept workload cluster: the kubeconfig its client was built from, and when it was last used.
struct Kept {
    kubeconfig: String,
    workload: Arc<Workload>,
    used: Instant,
}

/// The workload clusters the controller has reached, by `<namespace>/<cluster>`.
#[derive(Default)]
pub struct Workloads {
    kept: Mutex<HashMap<String, Kept>>,
}

impl std::fmt::Debug for Workloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workloads")
            .field("kept", &guard(&self.kept).len())
            .finish()
    }
}

impl Workloads {
    /// The workload cluster `key` (`<namespace>/<cluster>`) as reached with `kubeconfig`: the one
    /// kept when it was built from the same kubeconfig, else a new one built by `build` (which
    /// replaces it, so a rotated kubeconfig takes effect at once).
    pub async fn workload<F, Fut, E>(&self, key: &str, kubeconfig: &str, build: F) -> Result<Arc<Workload>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Client, E>>,
    {
        {
            let mut kept = guard(&self.kept);
            kept.retain(|_, kept| kept.used.elapsed() < IDLE_EVICTION);
            if let Some(kept) = kept.get_mut(key)
                && kept.kubeconfig == kubeconfig
            {
                kept.used = Instant::now();
                return Ok(kept.workload.clone());
            }
        }
        let workload = Arc::new(Workload::new(build().await?));
        let kept = Kept {
            kubeconfig: kubeconfig.to_owned(),
            workload: workload.clone(),
            used: Instant::now(),
        };
        guard(&self.kept).insert(key.to_owned(), kept);
        Ok(workload)
    }

    /// The workload cluster of `cluster`, reached with `<cluster>-kubeconfig` read through the
    /// management `client` (its client kept across reconciles while the kubeconfig stays the same).
    pub async fn connect(&self, client: &Client, cluster: &Cluster) -> Result<Arc<Workload>, WorkloadError> {
        let namespace = cluster.namespace().unwrap_or_default();
        let name = format!("{}-kubeconfig", cluster.name_any());
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let secret = secrets.get_opt(&name).await.map_err(|error| {
            WorkloadError::ReadKubeconfig(Error::read("Secret", &namespace, &name)(error))
        })?;
        let yaml = secret
            .as_ref()
            .and_then(|secret| secret.data.as_ref())
            .and_then(|data| data.get(KUBECONFIG_SECRET_VALUE_KEY))
            .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok());
        let Some(yaml) = yaml else {
            return Err(WorkloadError::MissingKubeconfig { namespace, name });
        };
        let build = || async {
            let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).map_err(|e| e.to_string())?;
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
            Client::try_from(config).map_err(|e| e.to_string())
        };
        let key = format!("{namespace}/{}", cluster.name_any());
        self.workload(&key, &yaml, build)
            .await
            .map_err(|reason| WorkloadError::UnusableKubeconfig {
                namespace,
                name,
                reason,
            })
    }

    /// The bootstrap token of `machine`'s token group in the workload cluster of `cluster` (created
    /// with lifetime `ttl`, or reused), after making sure the join RBAC exists there.
    pub async fn join_token(
        &self,
        client: &Client,
        cluster: &Cluster,
        machine: &Machine,
        ttl: Duration,
    ) -> Result<BootstrapToken, WorkloadError> {
        let workload = self.connect(client, cluster).await?;
        let cluster_name = cluster.name_any();
        let group = TokenGroup::for_machine(
            &cluster_name,
            &machine.name_any(),
            machine.metadata.labels.as_ref(),
        );
        let unreachable = |reason: String| WorkloadError::Unreachable {
            cluster: cluster_name.clone(),
            reason,
        };
        match tokio::time::timeout(WORKLOAD_TIMEOUT, choose_token(&workload, &group, ttl)).await {
            Ok(Ok(token)) => Ok(token),
            Ok(Err(reason)) => Err(unreachable(reason)),
            Err(_) => Err(unreachable(format!("no answer within {WORKLOAD_TIMEOUT:?}"))),
        }
    }
}

/// Ensures the join RBAC when due, then reuses or creates the token of `group`.
async fn choose_token(
    workload: &Workload,
    group: &TokenGroup,
    ttl: Duration,
) -> Result<BootstrapToken, String> {
    if workload.rbac_due() {
        ensure_join_rbac(&workload.client).await?;
        workload.rbac_ensured();
    }
    // Machines of one MachineSet are configured concurrently: one at a time per group
    // decides whether to reuse or create, so they share one token; the decision is kept for
    // a while, so the rest of a scale-up reuses it without asking the workload cluster.
    let selector = group.label_selector();
    let state = workload.token_group(&selector);
    let mut chosen = state.lock().await;
    let now = Timestamp::now();
    if let Some(known) = chosen.as_ref().filter(|known| known.reusable(now, ttl)) {
        return Ok(known.token.clone());
    }
    let secrets: Api<Secret> = Api::namespaced(workload.client.clone(), TOKEN_NAMESPACE);
    let candidates = secrets
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|error| format!("listing bootstrap tokens: {error}"))?
        .items;
    let (token, expires) = match tokens::choose_group_token(&candidates, now, ttl) {
        TokenChoice::Reuse(token) => {
            let expires = candidates
                .iter()
                .find(|secret| secret.metadata.name.as_deref() == Some(token.secret_name().as_str()))
                .and_then(|secret| tokens::expiration(secret).ok())
                .unwrap_or(now);
            (token, expires)
        }
        TokenChoice::Create(token) => {
            let secret = tokens::group_token_secret(&token, group, ttl, now);
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .map_err(|error| format!("creating a bootstrap token: {error}"))?;
            tracing::info!(
                token_id = token.id(),
                "created a bootstrap token in the workload cluster"
            );
            let expires = now + jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::ZERO);
            (token, expires)
        }
    };
    *chosen = Some(ChosenToken {
        token: token.clone(),
        expires,
        checked: Instant::now(),
    });
    Ok(token)
}

/// Creates the TLS-bootstrap ClusterRoleBindings in the workload cluster (those already there are
/// left as they are).
async fn ensure_join_rbac(workload: &Client) -> Result<(), String> {
    let bindings: Api<ClusterRoleBinding> = Api::all(workload.clone());
    for binding in tokens::bootstrap_rbac() {
        match bindings.create(&PostParams::default(), &binding).await {
            Ok(_) => {
                tracing::info!(binding = %binding.name_any(), "created bootstrap RBAC in the workload cluster")
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => {
                return Err(format!(
                    "creating ClusterRoleBinding {}: {error}",
                    binding.name_any()
                ));
            }
        }
    }
    Ok(())
}

fn guard<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubezero_capi::testing::{ScriptedApi, not_found};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_workload_is_kept_per_kubeconfig_within_one_controller_state_only() {
        let (client, _api) = ScriptedApi::start(|request| not_found(&request.path));
        let builds = AtomicUsize::new(0);
        let build = || async {
            builds.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(client.clone())
        };
        let workloads = Workloads::default();
        let first = workloads
            .workload("ns/demo", "kubeconfig-1", build)
            .await
            .unwrap();
        let again = workloads
            .workload("ns/demo", "kubeconfig-1", build)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again), "same kubeconfig: the kept client");
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        let rotated = workloads
            .workload("ns/demo", "kubeconfig-2", build)
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &rotated), "a rotated kubeconfig builds anew");
        let other_state = Workloads::default();
        let elsewhere = other_state
            .workload("ns/demo", "kubeconfig-2", build)
            .await
            .unwrap();
        assert!(
            !Arc::ptr_eq(&rotated, &elsewhere),
            "nothing is shared between two controller states"
        );
        assert_eq!(builds.load(Ordering::SeqCst), 3);
    }

    fn chosen(expires_in: i64, checked_ago: Duration) -> ChosenToken {
        ChosenToken {
            token: BootstrapToken::generate(),
            expires: Timestamp::now() + jiff::SignedDuration::from_secs(expires_in),
            checked: Instant::now() - checked_ago,
        }
    }

    #[test]
    fn a_chosen_token_is_reused_while_fresh_and_half_its_ttl_remains() {
        let ttl = Duration::from_secs(900);
        let now = Timestamp::now();
        assert!(chosen(900, Duration::ZERO).reusable(now, ttl));
        assert!(chosen(460, Duration::from_secs(29)).reusable(now, ttl));
        assert!(
            !chosen(900, TOKEN_RECHECK).reusable(now, ttl),
            "checked too long ago: list again"
        );
        assert!(
            !chosen(440, Duration::ZERO).reusable(now, ttl),
            "less than half the TTL left: a listing would create a new token"
        );
    }
}
