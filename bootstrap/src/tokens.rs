//! Bootstrap tokens for `kubeadm join` (capi-contract.md §6, as CABPK's `token.go`).
//!
//! Pure: builds and inspects the `kube-system/bootstrap-token-<id>` Secrets and the bootstrap RBAC of
//! the *workload* cluster; the controller writes them through `<cluster>-kubeconfig`.
//!
//! # One token per MachineSet, and expiry
//!
//! All machines of one MachineSet must get identical user data, so they share one token. The token's
//! Secret carries the label [`TOKEN_GROUP_LABEL`] = [`TokenGroup::label_value`] (and a readable
//! [`TokenGroup::description`]); the workload cluster is the store, no management-side state is needed.
//! The rules implemented here:
//!
//! 1. **Choosing** ([`choose_group_token`]): a config being rendered reuses the group's token with the
//!    latest expiration if at least TTL/2 of it remains (then its data is identical to its siblings');
//!    otherwise it creates a new token (like CABPK's MachinePool rotation at "expires before now+TTL/2").
//!    The old token is not deleted: it simply expires, and machines that already joined do not need it.
//! 2. **Refreshing** ([`refresh_decision`]): every config whose Machine has no `nodeRef` yet is requeued
//!    every [`requeue_after`] = TTL/3, and pushes its token's `expiration` to now+TTL once less than
//!    5/6·TTL remains (CABPK). So a token in use by a not-yet-joined machine never expires, and a
//!    group's token stays reusable (≥ 5/6·TTL > TTL/2 left) while any of its machines is still joining.
//!    After `nodeRef` the token is left to expire.
//! 3. **Gone** (the Secret expired and was deleted by the token cleaner while the controller was down,
//!    or was deleted by hand) while the Machine has no `nodeRef`: re-create it with the **same**
//!    token (parsed with [`BootstrapToken::parse`] from where the config recorded it) via
//!    [`group_token_secret`], so the already rendered user data stays valid and identical.
//!
//! A machine created later (scale-up hours after the others joined) thus gets a new token and user data
//! that differs from its older siblings' only in the token; machines created while a sibling is still
//! joining get byte-identical data.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

/// Namespace of bootstrap token Secrets.
pub const TOKEN_NAMESPACE: &str = "kube-system";
/// `type` of bootstrap token Secrets.
pub const TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Name prefix of bootstrap token Secrets (`bootstrap-token-<id>`).
pub const TOKEN_SECRET_PREFIX: &str = "bootstrap-token-";
/// Default TTL (CABPK `--bootstrap-token-ttl`, `DefaultTokenTTL`).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// Group kubeadm's default node token authenticates as (`auth-extra-groups`).
pub const NODE_BOOTSTRAP_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// Label on kubezero's token Secrets naming the machine group sharing the token.
pub const TOKEN_GROUP_LABEL: &str = "bootstrap.cluster.x-k8s.io/kubezero-token-group";

/// Secret data keys (`k8s.io/cluster-bootstrap/token/api`).
pub mod keys {
    /// Token id.
    pub const TOKEN_ID: &str = "token-id";
    /// Token secret.
    pub const TOKEN_SECRET: &str = "token-secret";
    /// RFC 3339 UTC expiration.
    pub const EXPIRATION: &str = "expiration";
    /// Usage: signing the `cluster-info` ConfigMap (discovery).
    pub const USAGE_SIGNING: &str = "usage-bootstrap-signing";
    /// Usage: authenticating as a bootstrapper.
    pub const USAGE_AUTHENTICATION: &str = "usage-bootstrap-authentication";
    /// Extra groups of the authenticated token.
    pub const AUTH_EXTRA_GROUPS: &str = "auth-extra-groups";
    /// Free-text description.
    pub const DESCRIPTION: &str = "description";
}

/// Errors of this module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The string is not `[a-z0-9]{6}.[a-z0-9]{16}`.
    #[error("bootstrap token {0:?} does not match [a-z0-9]{{6}}.[a-z0-9]{{16}}")]
    Format(String),
    /// A token Secret lacks or mangles a key.
    #[error("bootstrap token secret {secret}: {reason}")]
    Secret {
        /// Secret name.
        secret: String,
        /// What is wrong.
        reason: String,
    },
}

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A bootstrap token `<id>.<secret>`; `Display` prints it in full, `Debug` hides the secret half.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

impl BootstrapToken {
    /// A fresh token from the thread-local CSPRNG (`rand::rng()`: ChaCha12 seeded and periodically
    /// reseeded from the OS), characters uniform over `[a-z0-9]`.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect()
        };
        Self {
            id: pick(6),
            secret: pick(16),
        }
    }

    /// Parses `<id>.<secret>`.
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        let valid = |part: &str, len: usize| {
            part.len() == len && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        match token.split_once('.') {
            Some((id, secret)) if valid(id, 6) && valid(secret, 16) => Ok(Self {
                id: id.to_string(),
                secret: secret.to_string(),
            }),
            _ => Err(TokenError::Format(token.to_string())),
        }
    }

    /// The public id (6 characters).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret half (16 characters).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `bootstrap-token-<id>`.
    pub fn secret_name(&self) -> String {
        format!("{TOKEN_SECRET_PREFIX}{}", self.id)
    }

    /// Reads the token back from its Secret (`token-id`, `token-secret`).
    pub fn from_secret(secret: &Secret) -> Result<Self, TokenError> {
        let id = data_str(secret, keys::TOKEN_ID)?;
        let token_secret = data_str(secret, keys::TOKEN_SECRET)?;
        Self::parse(&format!("{id}.{token_secret}"))
    }
}

impl std::fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

fn secret_name(secret: &Secret) -> String {
    secret.metadata.name.clone().unwrap_or_default()
}

fn data_str(secret: &Secret, key: &str) -> Result<String, TokenError> {
    let err = |reason: String| TokenError::Secret {
        secret: secret_name(secret),
        reason,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .ok_or_else(|| err(format!("missing {key:?}")))?;
    String::from_utf8(bytes.0.clone()).map_err(|_| err(format!("{key:?} is not UTF-8")))
}

/// RFC 3339 UTC with second precision, as kubeadm writes `expiration` (`2006-01-02T15:04:05Z`).
pub fn format_expiration(expiration: Timestamp) -> String {
    // Drop sub-second precision, then print in UTC with a `Z`.
    let seconds = Timestamp::from_second(expiration.as_second()).unwrap_or(expiration);
    seconds.to_string()
}

/// The token Secret exactly as kubeadm / CABPK write it: `kube-system/bootstrap-token-<id>`,
/// `type: bootstrap.kubernetes.io/token`, data `token-id`, `token-secret`, `expiration` (now + `ttl`,
/// RFC 3339 UTC), `usage-bootstrap-signing: "true"`, `usage-bootstrap-authentication: "true"`,
/// `auth-extra-groups: system:bootstrappers:kubeadm:default-node-token`, `description`.
pub fn token_secret(token: &BootstrapToken, ttl: Duration, now: Timestamp, description: &str) -> Secret {
    let expiration = now + SignedDuration::try_from(ttl).unwrap_or(SignedDuration::MAX);
    let entry = |key: &str, value: &str| (key.to_string(), ByteString(value.as_bytes().to_vec()));
    Secret {
        metadata: ObjectMeta {
            name: Some(token.secret_name()),
            namespace: Some(TOKEN_NAMESPACE.to_string()),
            ..ObjectMeta::default()
        },
        type_: Some(TOKEN_SECRET_TYPE.to_string()),
        data: Some(BTreeMap::from([
            entry(keys::TOKEN_ID, &token.id),
            entry(keys::TOKEN_SECRET, &token.secret),
            entry(keys::EXPIRATION, &format_expiration(expiration)),
            entry(keys::USAGE_SIGNING, "true"),
            entry(keys::USAGE_AUTHENTICATION, "true"),
            entry(keys::AUTH_EXTRA_GROUPS, NODE_BOOTSTRAP_GROUP),
            entry(keys::DESCRIPTION, description),
        ])),
        ..Secret::default()
    }
}

/// The `expiration` of a token Secret.
pub fn expiration(secret: &Secret) -> Result<Timestamp, TokenError> {
    let text = data_str(secret, keys::EXPIRATION)?;
    text.parse().map_err(|e| TokenError::Secret {
        secret: secret_name(secret),
        reason: format!("expiration {text:?} is not RFC 3339: {e}"),
    })
}

/// Sets `expiration` (the update the controller sends for [`Refresh::Extend`]).
pub fn set_expiration(secret: &mut Secret, expiration: Timestamp) {
    secret.data.get_or_insert_with(BTreeMap::new).insert(
        keys::EXPIRATION.to_string(),
        ByteString(format_expiration(expiration).into_bytes()),
    );
}

/// What to do with a token whose Machine has not joined yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Enough lifetime left.
    Keep,
    /// Set `expiration` to this (now + TTL).
    Extend(Timestamp),
}

/// CABPK's rule: extend to now+TTL once strictly less than 5/6·TTL remains (also when already expired).
pub fn refresh_decision(expiration: Timestamp, now: Timestamp, ttl: Duration) -> Refresh {
    let ttl = SignedDuration::try_from(ttl).unwrap_or(SignedDuration::MAX);
    let remaining = expiration.duration_since(now);
    if remaining < ttl / 6 * 5 {
        Refresh::Extend(now + ttl)
    } else {
        Refresh::Keep
    }
}

/// Requeue period of a config whose Machine has no `nodeRef` yet: TTL/3 (CABPK).
pub fn requeue_after(ttl: Duration) -> Duration {
    ttl / 3
}

/// The machines sharing one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenGroup {
    /// All Machines of one MachineSet (label `cluster.x-k8s.io/set-name` on the Machine).
    MachineSet {
        /// Cluster name.
        cluster: String,
        /// MachineSet name.
        name: String,
    },
    /// A Machine not owned by a MachineSet (plain control-plane Machines): its own token.
    Machine {
        /// Cluster name.
        cluster: String,
        /// Machine name.
        name: String,
    },
}

/// Label CAPI puts on the Machines of a MachineSet.
pub const MACHINE_SET_NAME_LABEL: &str = "cluster.x-k8s.io/set-name";

impl TokenGroup {
    /// The group of a Machine from its labels: its MachineSet when labelled
    /// `cluster.x-k8s.io/set-name`, else the Machine alone.
    pub fn for_machine(cluster: &str, machine: &str, labels: Option<&BTreeMap<String, String>>) -> Self {
        match labels.and_then(|labels| labels.get(MACHINE_SET_NAME_LABEL)) {
            Some(set) if !set.is_empty() => Self::MachineSet {
                cluster: cluster.to_string(),
                name: set.clone(),
            },
            _ => Self::Machine {
                cluster: cluster.to_string(),
                name: machine.to_string(),
            },
        }
    }

    /// Deterministic, label-safe value (≤ 63 chars): `ms-` / `m-` + the first 40 hex digits of
    /// SHA-256 over `<cluster>/<name>` (names can be 253 characters, too long for a label value).
    pub fn label_value(&self) -> String {
        let (prefix, cluster, name) = match self {
            Self::MachineSet { cluster, name } => ("ms", cluster, name),
            Self::Machine { cluster, name } => ("m", cluster, name),
        };
        let digest = Sha256::digest(format!("{cluster}/{name}").as_bytes());
        let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
        format!("{prefix}-{hex}")
    }

    /// Human-readable `description` of the token Secret.
    pub fn description(&self) -> String {
        match self {
            Self::MachineSet { cluster, name } => {
                format!("kubezero bootstrap token for MachineSet {name} of Cluster {cluster}")
            }
            Self::Machine { cluster, name } => {
                format!("kubezero bootstrap token for Machine {name} of Cluster {cluster}")
            }
        }
    }

    /// Label selector listing this group's token Secrets in `kube-system`.
    pub fn label_selector(&self) -> String {
        format!("{TOKEN_GROUP_LABEL}={}", self.label_value())
    }
}

/// [`token_secret`] with the group's description and [`TOKEN_GROUP_LABEL`].
pub fn group_token_secret(
    token: &BootstrapToken,
    group: &TokenGroup,
    ttl: Duration,
    now: Timestamp,
) -> Secret {
    let mut secret = token_secret(token, ttl, now, &group.description());
    secret.metadata.labels = Some(BTreeMap::from([(
        TOKEN_GROUP_LABEL.to_string(),
        group.label_value(),
    )]));
    secret
}

/// Outcome of [`choose_group_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenChoice {
    /// Render with this existing token (then refresh it per [`refresh_decision`]).
    Reuse(BootstrapToken),
    /// Create [`group_token_secret`] for this new token, then render with it.
    Create(BootstrapToken),
}

/// Picks the token for a config being rendered from its group's token Secrets (listed with
/// [`TokenGroup::label_selector`]): the valid one with the latest expiration if at least TTL/2 of it
/// remains, else a new token. Malformed Secrets are ignored.
pub fn choose_group_token(candidates: &[Secret], now: Timestamp, ttl: Duration) -> TokenChoice {
    let half = SignedDuration::try_from(ttl / 2).unwrap_or(SignedDuration::MAX);
    candidates
        .iter()
        .filter_map(|secret| {
            Some((
                expiration(secret).ok()?,
                BootstrapToken::from_secret(secret).ok()?,
            ))
        })
        .filter(|(expires, _)| expires.duration_since(now) >= half)
        .max_by_key(|(expires, _)| *expires)
        .map_or_else(
            || TokenChoice::Create(BootstrapToken::generate()),
            |(_, t)| TokenChoice::Reuse(t),
        )
}

fn binding(name: &str, cluster_role: &str, group: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "ClusterRole".to_string(),
            name: cluster_role.to_string(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "Group".to_string(),
            name: group.to_string(),
            namespace: None,
        }]),
    }
}

/// The TLS-bootstrap ClusterRoleBindings `kubeadm init` creates (kubeadm
/// `phases/bootstraptoken/node/tlsbootstrap.go`), to be applied (server-side apply, idempotent) in
/// the workload cluster:
/// - `kubeadm:kubelet-bootstrap` → ClusterRole `system:node-bootstrapper`, group
///   `system:bootstrappers:kubeadm:default-node-token` (create CSRs);
/// - `kubeadm:node-autoapprove-bootstrap` → `system:certificates.k8s.io:certificatesigningrequests:nodeclient`,
///   same group (auto-approve the first client certificate);
/// - `kubeadm:node-autoapprove-certificate-rotation` →
///   `system:certificates.k8s.io:certificatesigningrequests:selfnodeclient`, group `system:nodes`
///   (auto-approve renewals).
///
/// The ClusterRoles are built into kube-apiserver. `kubeadm init` also creates what token discovery and
/// `kubeadm join` need besides these (the `kube-public/cluster-info` ConfigMap and its anonymous-read
/// Role/RoleBinding `kubeadm:bootstrap-signer-clusterinfo`, `kubeadm:get-nodes`, and the Roles for
/// `kubeadm-config` / `kubelet-config`); they are not built here.
pub fn bootstrap_rbac() -> Vec<ClusterRoleBinding> {
    vec![
        binding(
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            NODE_BOOTSTRAP_GROUP,
        ),
        binding(
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            NODE_BOOTSTRAP_GROUP,
        ),
        binding(
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "system:nodes",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn is_token(s: &str) -> bool {
        regex::Regex::new(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
            .unwrap()
            .is_match(s)
    }

    #[test]
    fn generated_tokens_match_the_format_and_differ() {
        let tokens: Vec<_> = (0..200).map(|_| BootstrapToken::generate()).collect();
        for token in &tokens {
            assert!(is_token(&token.to_string()), "{token}");
            assert_eq!(BootstrapToken::parse(&token.to_string()).unwrap(), *token);
        }
        let distinct: std::collections::BTreeSet<_> = tokens.iter().map(ToString::to_string).collect();
        assert_eq!(distinct.len(), tokens.len());
        // Every character of the alphabet shows up over 200 × 22 draws (uniformity smoke test).
        let seen: std::collections::BTreeSet<char> = distinct.iter().flat_map(|t| t.chars()).collect();
        assert_eq!(seen.len(), 37, "36 characters and the dot");
        assert!(!format!("{:?}", tokens[0]).contains(tokens[0].secret()));
    }

    #[test]
    fn parse_rejects_malformed_tokens() {
        for bad in [
            "",
            "abcdef",
            "abcdef.0123456789abcde",
            "ABCDEF.0123456789abcdef",
            "abcdef-0123456789abcdef",
        ] {
            assert_eq!(BootstrapToken::parse(bad), Err(TokenError::Format(bad.into())));
        }
        let ok = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        assert_eq!((ok.id(), ok.secret()), ("abcdef", "0123456789abcdef"));
        assert_eq!(ok.secret_name(), "bootstrap-token-abcdef");
    }

    #[test]
    fn token_secret_shape() {
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let now = t("2030-01-01T00:00:00.123456Z");
        let s = token_secret(&token, DEFAULT_TOKEN_TTL, now, "for tests");
        assert_eq!(s.metadata.name.as_deref(), Some("bootstrap-token-abcdef"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(s.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
        assert_eq!(s.metadata.labels, None);
        assert_eq!(s.metadata.owner_references, None);
        let data: BTreeMap<_, _> = s
            .data
            .clone()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
            .collect();
        let expected: BTreeMap<String, String> = [
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("expiration", "2030-01-01T00:15:00Z"),
            ("usage-bootstrap-signing", "true"),
            ("usage-bootstrap-authentication", "true"),
            (
                "auth-extra-groups",
                "system:bootstrappers:kubeadm:default-node-token",
            ),
            ("description", "for tests"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(data, expected);
        assert_eq!(expiration(&s).unwrap(), t("2030-01-01T00:15:00Z"));
        assert_eq!(BootstrapToken::from_secret(&s).unwrap(), token);

        let mut s = s;
        set_expiration(&mut s, t("2030-01-01T01:00:00.9Z"));
        assert_eq!(s.data.as_ref().unwrap()["expiration"].0, b"2030-01-01T01:00:00Z");
        s.data
            .as_mut()
            .unwrap()
            .insert("expiration".into(), ByteString(b"tomorrow".to_vec()));
        assert!(expiration(&s).unwrap_err().to_string().contains("not RFC 3339"));
    }

    #[test]
    fn refresh_decision_boundaries() {
        let ttl = Duration::from_secs(15 * MIN); // 5/6·TTL = 12.5 min
        let now = t("2030-01-01T00:00:00Z");
        let expires_in = |secs: i64| now + SignedDuration::from_secs(secs);
        let extended = Refresh::Extend(expires_in(15 * 60));
        assert_eq!(refresh_decision(expires_in(15 * 60), now, ttl), Refresh::Keep);
        assert_eq!(
            refresh_decision(expires_in(750), now, ttl),
            Refresh::Keep,
            "exactly 5/6·TTL left"
        );
        assert_eq!(refresh_decision(expires_in(749), now, ttl), extended);
        assert_eq!(refresh_decision(expires_in(0), now, ttl), extended);
        assert_eq!(
            refresh_decision(expires_in(-3600), now, ttl),
            extended,
            "already expired"
        );
        assert_eq!(requeue_after(ttl), Duration::from_secs(5 * MIN));
    }

    #[test]
    fn groups_share_tokens_by_machine_set() {
        let labels = BTreeMap::from([(MACHINE_SET_NAME_LABEL.to_string(), "workers-abc".to_string())]);
        let a = TokenGroup::for_machine("demo", "workers-abc-1", Some(&labels));
        let b = TokenGroup::for_machine("demo", "workers-abc-2", Some(&labels));
        assert_eq!(a, b);
        assert_eq!(a.label_value(), b.label_value());
        let cp = TokenGroup::for_machine("demo", "cp-0", None);
        assert_ne!(cp.label_value(), a.label_value());
        assert_ne!(
            TokenGroup::for_machine("other", "x", Some(&labels)).label_value(),
            a.label_value()
        );
        let value = a.label_value();
        assert!(value.len() <= 63 && value.starts_with("ms-"), "{value}");
        assert!(cp.label_value().starts_with("m-"));
        assert_eq!(
            a.description(),
            "kubezero bootstrap token for MachineSet workers-abc of Cluster demo"
        );
        assert_eq!(
            a.label_selector(),
            format!("bootstrap.cluster.x-k8s.io/kubezero-token-group={value}")
        );
        let token = BootstrapToken::generate();
        let s = group_token_secret(&token, &a, DEFAULT_TOKEN_TTL, t("2030-01-01T00:00:00Z"));
        assert_eq!(s.metadata.labels.unwrap()[TOKEN_GROUP_LABEL], value);
        assert_eq!(s.data.unwrap()["description"].0, a.description().as_bytes());
    }

    #[test]
    fn choose_group_token_reuses_while_half_the_ttl_remains() {
        let ttl = Duration::from_secs(15 * MIN);
        let now = t("2030-01-01T00:00:00Z");
        let group = TokenGroup::for_machine("demo", "m", None);
        let old = BootstrapToken::parse("aaaaaa.0123456789abcdef").unwrap();
        let newer = BootstrapToken::parse("bbbbbb.0123456789abcdef").unwrap();
        // Created 7.5 min ago: exactly TTL/2 left → reuse.
        let at = |secs: i64| now - SignedDuration::from_secs(secs);
        let s_old = group_token_secret(&old, &group, ttl, at(450));
        assert_eq!(
            choose_group_token(std::slice::from_ref(&s_old), now, ttl),
            TokenChoice::Reuse(old.clone())
        );
        // One second less → new token.
        let s_stale = group_token_secret(&old, &group, ttl, at(451));
        assert!(matches!(
            choose_group_token(std::slice::from_ref(&s_stale), now, ttl),
            TokenChoice::Create(_)
        ));
        // The latest expiration wins; malformed Secrets are ignored.
        let s_newer = group_token_secret(&newer, &group, ttl, at(10));
        let mut broken = s_newer.clone();
        broken.data.as_mut().unwrap().remove("token-secret");
        assert_eq!(
            choose_group_token(&[s_old, broken, s_newer, s_stale], now, ttl),
            TokenChoice::Reuse(newer)
        );
        assert!(matches!(
            choose_group_token(&[], now, ttl),
            TokenChoice::Create(_)
        ));
    }

    #[test]
    fn bootstrap_rbac_matches_kubeadm() {
        let rbac = bootstrap_rbac();
        let summary: Vec<_> = rbac
            .iter()
            .map(|b| {
                let subjects = b.subjects.as_ref().unwrap();
                assert_eq!(subjects.len(), 1);
                assert_eq!(subjects[0].kind, "Group");
                assert_eq!(
                    subjects[0].api_group.as_deref(),
                    Some("rbac.authorization.k8s.io")
                );
                assert_eq!(b.role_ref.kind, "ClusterRole");
                assert_eq!(b.role_ref.api_group.as_deref(), Some("rbac.authorization.k8s.io"));
                (
                    b.metadata.name.clone().unwrap(),
                    b.role_ref.name.clone(),
                    subjects[0].name.clone(),
                )
            })
            .collect();
        let expected = [
            (
                "kubeadm:kubelet-bootstrap",
                "system:node-bootstrapper",
                "system:bootstrappers:kubeadm:default-node-token",
            ),
            (
                "kubeadm:node-autoapprove-bootstrap",
                "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                "system:bootstrappers:kubeadm:default-node-token",
            ),
            (
                "kubeadm:node-autoapprove-certificate-rotation",
                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                "system:nodes",
            ),
        ]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
        assert_eq!(summary, expected);
    }
}
