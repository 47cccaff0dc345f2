//! What the bootstrap controller keeps per workload cluster across reconciles: the client (one per
//! kubeconfig, so its connections are reused), when the join RBAC was last ensured there, and per
//! token group the join token last chosen.
//!
//! A MachineDeployment scaled by hundreds configures hundreds of joins at once. Without this memory
//! each of them built a new client (a new connection), created the three RBAC bindings again and
//! listed its group's tokens while holding the group's lock, so the joins of one group were
//! configured one workload round trip after another.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::Client;

use crate::tokens::BootstrapToken;

/// How long the join RBAC is trusted to exist after it was ensured.
pub const RBAC_RECHECK: Duration = Duration::from_secs(5 * 60);
/// How long a chosen join token is reused without listing the group's tokens again.
pub const TOKEN_RECHECK: Duration = Duration::from_secs(30);
/// A workload cluster not used for this long is forgotten (its Cluster was deleted, or moved).
const IDLE_EVICTION: Duration = Duration::from_secs(60 * 60);

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

/// Workload clusters by `<namespace>/<cluster>`.
type Workloads = Mutex<HashMap<String, Kept>>;

static WORKLOADS: LazyLock<Workloads> = LazyLock::new(Workloads::default);

/// The workload cluster `<namespace>/<cluster>` as reached with `kubeconfig`: the one kept when
/// it was built from the same kubeconfig, else a new one built by `build` (which replaces it, so a
/// rotated kubeconfig takes effect at once).
pub async fn workload<F, Fut, E>(key: &str, kubeconfig: &str, build: F) -> Result<Arc<Workload>, E>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Client, E>>,
{
    {
        let mut workloads = guard(&WORKLOADS);
        workloads.retain(|_, kept| kept.used.elapsed() < IDLE_EVICTION);
        if let Some(kept) = workloads.get_mut(key)
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
    guard(&WORKLOADS).insert(key.to_owned(), kept);
    Ok(workload)
}

fn guard<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

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
