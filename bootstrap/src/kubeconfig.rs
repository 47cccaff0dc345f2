//! Renewal of the admin kubeconfig `<cluster>-kubeconfig` (capi-contract.md §6): core
//! writes it once from `<cluster>-ca` and never rotates it, so the bootstrap provider re-issues its
//! client certificate from the same CA before half of the certificate's life has passed.
//!
//! Pure: inspects and rewrites kubeconfig YAML; the controller in `controller::kubeconfig` does the I/O.
//! Only the current user's `client-certificate-data` / `client-key-data` change: the server, the CA
//! data, the names and any field we do not know are kept as they are.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use serde_json::Value;

use crate::pki::{self, CertKeyPair, PkiError, kubeconfig_client_cert_validity};

/// What a kubeconfig needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Not ours to renew (no embedded client certificate, or one not issued by the cluster CA);
    /// the message says why.
    NotRenewable(String),
    /// Valid for now; renewal is due at this time.
    DueAt(Timestamp),
    /// Half of the certificate's life has passed (or it expired): re-issue now.
    Due,
}

/// Decides whether `kubeconfig_yaml`'s client certificate must be re-issued at `now`; `ca_pem` is the
/// cluster CA certificate that must have issued it.
pub fn check(kubeconfig_yaml: &str, ca_pem: &str, now: Timestamp) -> Renewal {
    let (not_before, not_after) = match kubeconfig_client_cert_validity(kubeconfig_yaml) {
        Ok(validity) => validity,
        Err(error) => return Renewal::NotRenewable(error.to_string()),
    };
    match client_certificate(kubeconfig_yaml).and_then(|cert| pki::issued_by(&cert, ca_pem)) {
        Ok(true) => {}
        Ok(false) => {
            return Renewal::NotRenewable(
                "its client certificate was not issued by the cluster CA".to_string(),
            );
        }
        Err(error) => return Renewal::NotRenewable(error.to_string()),
    }
    let due = not_before + not_after.duration_since(not_before) / 2;
    if now >= due {
        Renewal::Due
    } else {
        Renewal::DueAt(due)
    }
}

/// `kubeconfig_yaml` with a new client certificate and key for its current user, signed by `ca`,
/// valid from `now` for as long as the old one was valid (at least an hour).
pub fn renew(kubeconfig_yaml: &str, ca: &CertKeyPair, now: Timestamp) -> Result<String, PkiError> {
    let (not_before, not_after) = kubeconfig_client_cert_validity(kubeconfig_yaml)?;
    let lifetime = Duration::try_from(not_after.duration_since(not_before))
        .unwrap_or_default()
        .saturating_sub(pki::CLOCK_SKEW_ALLOWANCE)
        .max(Duration::from_secs(3600));
    let client = pki::mint_admin_client_certificate(ca, now, lifetime)?;
    let mut document = parse(kubeconfig_yaml)?;
    let user = current_user_mut(&mut document)?;
    user["client-certificate-data"] = Value::String(BASE64.encode(client.cert.as_bytes()));
    user["client-key-data"] = Value::String(BASE64.encode(client.key.as_bytes()));
    serde_saphyr::to_string(&document).map_err(|e| PkiError::Kubeconfig(e.to_string()))
}

fn parse(kubeconfig_yaml: &str) -> Result<Value, PkiError> {
    serde_saphyr::from_str(kubeconfig_yaml).map_err(|e| PkiError::Kubeconfig(e.to_string()))
}

/// The PEM client certificate of the current user.
fn client_certificate(kubeconfig_yaml: &str) -> Result<String, PkiError> {
    let mut document = parse(kubeconfig_yaml)?;
    let user = current_user_mut(&mut document)?;
    let data = user["client-certificate-data"]
        .as_str()
        .ok_or_else(|| PkiError::Kubeconfig("no embedded client-certificate-data".to_string()))?;
    let pem = BASE64
        .decode(data.trim())
        .map_err(|e| PkiError::Kubeconfig(format!("client-certificate-data is not base64: {e}")))?;
    String::from_utf8(pem).map_err(|_| PkiError::Kubeconfig("client-certificate-data is not PEM".to_string()))
}

/// The `user` map of the current context's user (the first user when there is no current context).
fn current_user_mut(document: &mut Value) -> Result<&mut Value, PkiError> {
    let current_user = document["current-context"].as_str().and_then(|current| {
        document["contexts"]
            .as_array()?
            .iter()
            .find(|context| context["name"] == current)
            .and_then(|context| context["context"]["user"].as_str())
            .map(str::to_string)
    });
    let users = document["users"]
        .as_array_mut()
        .ok_or_else(|| PkiError::Kubeconfig("no users".to_string()))?;
    let entry = match current_user {
        Some(name) => users.iter_mut().find(|user| user["name"] == name.as_str()),
        None => users.first_mut(),
    };
    entry
        .and_then(|entry| entry.get_mut("user"))
        .filter(|user| user.is_object())
        .ok_or_else(|| PkiError::Kubeconfig("the current user has no entry".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertificateKind, DEFAULT_KUBECONFIG_VALIDITY, mint_admin_kubeconfig};
    use jiff::SignedDuration;
    use std::sync::OnceLock;

    const DAY: i64 = 24 * 3600;

    fn ca() -> &'static CertKeyPair {
        static CA: OnceLock<CertKeyPair> = OnceLock::new();
        CA.get_or_init(|| CertificateKind::ClusterCa.generate(Timestamp::now()).unwrap())
    }

    fn minted_at(now: Timestamp) -> String {
        mint_admin_kubeconfig(
            "demo",
            "https://api.demo:6443",
            ca(),
            now,
            DEFAULT_KUBECONFIG_VALIDITY,
        )
        .unwrap()
    }

    #[test]
    fn a_fresh_kubeconfig_is_due_at_half_life() {
        let now = Timestamp::now();
        let Renewal::DueAt(due) = check(&minted_at(now), &ca().cert, now) else {
            panic!("fresh");
        };
        let half = SignedDuration::from_secs(365 * DAY / 2);
        assert!(
            (due.duration_since(now) - half).abs() < SignedDuration::from_secs(600),
            "{due}"
        );
    }

    #[test]
    fn past_half_life_it_is_renewed_with_the_same_names_server_and_lifetime() {
        let now = Timestamp::now();
        let old = minted_at(now - SignedDuration::from_secs(200 * DAY));
        assert_eq!(check(&old, &ca().cert, now), Renewal::Due);
        let renewed = renew(&old, ca(), now).unwrap();
        let Renewal::DueAt(_) = check(&renewed, &ca().cert, now) else {
            panic!("renewed is fresh");
        };
        let (not_before, not_after) = kubeconfig_client_cert_validity(&renewed).unwrap();
        assert!(not_before <= now && now.duration_since(not_before) < SignedDuration::from_secs(600));
        let (old_before, old_after) = kubeconfig_client_cert_validity(&old).unwrap();
        assert_eq!(
            not_after.duration_since(not_before),
            old_after.duration_since(old_before),
            "same lifetime"
        );
        let before = kube::config::Kubeconfig::from_yaml(&old).unwrap();
        let after = kube::config::Kubeconfig::from_yaml(&renewed).unwrap();
        assert_eq!(before.current_context, after.current_context);
        assert_eq!(
            serde_json::to_value(&before.clusters).unwrap(),
            serde_json::to_value(&after.clusters).unwrap(),
            "server and CA data kept"
        );
        assert_eq!(
            serde_json::to_value(&before.contexts).unwrap(),
            serde_json::to_value(&after.contexts).unwrap()
        );
        assert_ne!(
            before.auth_infos[0]
                .auth_info
                .as_ref()
                .unwrap()
                .client_certificate_data,
            after.auth_infos[0]
                .auth_info
                .as_ref()
                .unwrap()
                .client_certificate_data
        );
    }

    #[test]
    fn kubeconfigs_not_issued_by_the_cluster_ca_or_without_certificates_are_left_alone() {
        let now = Timestamp::now();
        let other = CertificateKind::ClusterCa.generate(now).unwrap();
        let old = minted_at(now - SignedDuration::from_secs(200 * DAY));
        assert!(
            matches!(check(&old, &other.cert, now), Renewal::NotRenewable(m) if m.contains("not issued"))
        );
        let token = "apiVersion: v1\nkind: Config\nclusters: [{name: demo, cluster: {server: 'https://x'}}]\n\
            users: [{name: u, user: {token: abc}}]\ncontexts: [{name: c, context: {cluster: demo, user: u}}]\n\
            current-context: c\n";
        assert!(matches!(check(token, &ca().cert, now), Renewal::NotRenewable(_)));
    }
}
