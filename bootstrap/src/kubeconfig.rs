//! The admin kubeconfig `<cluster>-kubeconfig` (capi-contract.md §6): minting it, reading its
//! client certificate's validity, the one renewal rule and the renewal. Core writes the kubeconfig
//! once from `<cluster>-ca` and never rotates it, so the bootstrap provider re-issues its client
//! certificate from the same CA once more than half of the certificate's life has passed
//! ([`renewal_due`]; exactly at the half it is not due yet).
//!
//! Pure: builds, inspects and rewrites kubeconfig YAML; the controller in `controller::kubeconfig`
//! does the I/O. A renewal changes only the current user's `client-certificate-data` /
//! `client-key-data`: the server, the CA data, the names and any field we do not know are kept as
//! they are.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kubezero_capi::contract::KUBECONFIG_SECRET_VALUE_KEY;
use serde_json::Value;

use crate::pki::{
    self, CLUSTER_SECRET_TYPE, CertKeyPair, PkiError, cluster_owned_meta, first_pem,
    mint_admin_client_certificate, parse_certificate,
};

/// Default validity of the admin kubeconfig's client certificate: 365 days (`certs.DefaultCertDuration`).
pub const DEFAULT_KUBECONFIG_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The renewal rule, the only one: the client certificate valid from `not_before` to `not_after`
/// is due for renewal at `now` once more than half of its lifetime has passed (also when it has
/// expired); exactly at the half it is not due yet. Stricter than KCP's rule ("less than half of
/// the default duration left") for certificates core minted with `notBefore` = the CA's
/// `notBefore`: those are renewed at once, which is harmless.
pub fn renewal_due(not_before: Timestamp, not_after: Timestamp, now: Timestamp) -> bool {
    now > half_life(not_before, not_after)
}

/// The middle of the validity window: renewal is due right after it.
fn half_life(not_before: Timestamp, not_after: Timestamp) -> Timestamp {
    not_before + not_after.duration_since(not_before) / 2
}

/// What a kubeconfig needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Not ours to renew (no embedded client certificate, or one not issued by the cluster CA);
    /// the message says why.
    NotRenewable(String),
    /// Valid for now; renewal is due right after this time (the half of its life).
    DueAt(Timestamp),
    /// More than half of the certificate's life has passed (or it expired): re-issue now.
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
    if renewal_due(not_before, not_after, now) {
        Renewal::Due
    } else {
        Renewal::DueAt(half_life(not_before, not_after))
    }
}

/// An admin kubeconfig (YAML) for `cluster` at `server` (`https://host:port`) with a new client
/// certificate from [`mint_admin_client_certificate`] (default validity
/// [`DEFAULT_KUBECONFIG_VALIDITY`]). Cluster entry `<cluster>`, user `<cluster>-admin`, context
/// `<cluster>-admin@<cluster>` (current), as core's `<cluster>-kubeconfig`.
pub fn mint_admin_kubeconfig(
    cluster: &str,
    server: &str,
    ca: &CertKeyPair,
    now: Timestamp,
    validity: Duration,
) -> Result<String, PkiError> {
    let client = mint_admin_client_certificate(ca, now, validity)?;
    let user = format!("{cluster}-admin");
    let context = format!("{cluster}-admin@{cluster}");
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {
            "server": server,
            "certificate-authority-data": BASE64.encode(ca.cert.as_bytes()),
        }}],
        "users": [{"name": user, "user": {
            "client-certificate-data": BASE64.encode(client.cert.as_bytes()),
            "client-key-data": BASE64.encode(client.key.as_bytes()),
        }}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    });
    serde_saphyr::to_string(&kubeconfig).map_err(|e| PkiError::Kubeconfig(e.to_string()))
}

/// The `<cluster>-kubeconfig` Secret as core writes it: `type: cluster.x-k8s.io/secret`, data `value`,
/// cluster-name label, non-controller ownerReference to the Cluster.
pub fn kubeconfig_secret(cluster: &str, cluster_uid: &str, namespace: &str, kubeconfig: String) -> Secret {
    Secret {
        metadata: cluster_owned_meta(format!("{cluster}-kubeconfig"), cluster, cluster_uid, namespace),
        type_: Some(CLUSTER_SECRET_TYPE.to_string()),
        data: Some(BTreeMap::from([(
            KUBECONFIG_SECRET_VALUE_KEY.to_string(),
            ByteString(kubeconfig.into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// Validity window (`notBefore`, `notAfter`) of the client certificate of the current context's user
/// in `kubeconfig_yaml` (the first user with `client-certificate-data` when there is no current context).
/// Errors when the kubeconfig has no embedded client certificate (e.g. token auth): such a kubeconfig
/// was not minted by CAPI / kubezero and must not be renewed.
pub fn kubeconfig_client_cert_validity(kubeconfig_yaml: &str) -> Result<(Timestamp, Timestamp), PkiError> {
    let err = |m: String| PkiError::Kubeconfig(m);
    let config = kube::config::Kubeconfig::from_yaml(kubeconfig_yaml).map_err(|e| err(e.to_string()))?;
    let current_user = config.current_context.as_ref().and_then(|current| {
        config
            .contexts
            .iter()
            .find(|c| &c.name == current)
            .and_then(|c| c.context.as_ref()?.user.clone())
    });
    let data = config
        .auth_infos
        .iter()
        .filter(|user| current_user.as_ref().is_none_or(|name| &user.name == name))
        .find_map(|user| user.auth_info.as_ref()?.client_certificate_data.clone())
        .ok_or_else(|| err("no embedded client-certificate-data".to_string()))?;
    let pem = BASE64
        .decode(data.trim())
        .map_err(|e| err(format!("client-certificate-data is not base64: {e}")))?;
    let pem = String::from_utf8(pem).map_err(|_| err("client-certificate-data is not PEM".to_string()))?;
    let block = first_pem(&pem).map_err(|e| err(format!("client-certificate-data: {e}")))?;
    let cert = parse_certificate(&block).map_err(|e| err(format!("client-certificate-data: {e}")))?;
    let ts = |t: i64| Timestamp::from_second(t).map_err(|e| err(format!("certificate validity: {e}")));
    Ok((
        ts(cert.validity().not_before.timestamp())?,
        ts(cert.validity().not_after.timestamp())?,
    ))
}

/// Whether the client certificate of `kubeconfig_yaml` is due for renewal at `now` ([`renewal_due`]).
pub fn kubeconfig_needs_renewal(kubeconfig_yaml: &str, now: Timestamp) -> Result<bool, PkiError> {
    let (not_before, not_after) = kubeconfig_client_cert_validity(kubeconfig_yaml)?;
    Ok(renewal_due(not_before, not_after, now))
}

/// `kubeconfig_yaml` with a new client certificate and key for its current user, signed by `ca`,
/// valid from `now` for as long as the old one was valid (at least an hour).
pub fn renew(kubeconfig_yaml: &str, ca: &CertKeyPair, now: Timestamp) -> Result<String, PkiError> {
    let (not_before, not_after) = kubeconfig_client_cert_validity(kubeconfig_yaml)?;
    let lifetime = Duration::try_from(not_after.duration_since(not_before))
        .unwrap_or_default()
        .saturating_sub(pki::CLOCK_SKEW_ALLOWANCE)
        .max(Duration::from_secs(3600));
    let client = mint_admin_client_certificate(ca, now, lifetime)?;
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
    use crate::pki::CertificateKind;
    use crate::pki::tests::{certs, client_cert_and_key, parse};
    use jiff::SignedDuration;
    use rcgen::KeyPair;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::prelude::FromDer as _;

    const DAY: i64 = 24 * 3600;

    /// The cluster CA of the shared test PKI (RSA generation is slow in debug builds).
    fn ca() -> &'static CertKeyPair {
        &certs().ca
    }

    #[test]
    fn renewal_is_due_only_after_the_exact_half_life() {
        let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        // 10 days from t0 - 5 min: the half-life ends at t0 + 5 d - 150 s exactly.
        let short = mint_admin_kubeconfig(
            "demo",
            "https://h:6443",
            ca(),
            t0,
            Duration::from_secs(10 * 86400),
        )
        .unwrap();
        let half_life = t0 + SignedDuration::from_secs(5 * DAY - 150);
        let (not_before, not_after) = kubeconfig_client_cert_validity(&short).unwrap();
        assert!(!renewal_due(not_before, not_after, half_life));
        assert!(renewal_due(
            not_before,
            not_after,
            half_life + SignedDuration::from_nanos(1)
        ));
        // Both readers of a kubeconfig apply that rule.
        assert_eq!(check(&short, &ca().cert, half_life), Renewal::DueAt(half_life));
        assert!(!kubeconfig_needs_renewal(&short, half_life).unwrap());
        let after = half_life + SignedDuration::from_secs(1);
        assert_eq!(check(&short, &ca().cert, after), Renewal::Due);
        assert!(kubeconfig_needs_renewal(&short, after).unwrap());
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

    #[test]
    fn minted_kubeconfig_shape_and_signature() {
        let certs = certs();
        let now = Timestamp::now();
        let yaml = mint_admin_kubeconfig(
            "demo",
            "https://10.0.0.1:6443",
            &certs.ca,
            now,
            DEFAULT_KUBECONFIG_VALIDITY,
        )
        .unwrap();
        let config = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(config.current_context.as_deref(), Some("demo-admin@demo"));
        assert_eq!(config.clusters[0].name, "demo");
        let cluster = config.clusters[0].cluster.clone().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(
            BASE64
                .decode(cluster.certificate_authority_data.unwrap())
                .unwrap(),
            certs.ca.cert.as_bytes()
        );
        assert_eq!(config.auth_infos[0].name, "demo-admin");
        let context = config.contexts[0].context.clone().unwrap();
        assert_eq!(
            (context.cluster.as_str(), context.user.as_deref()),
            ("demo", Some("demo-admin"))
        );

        let (leaf, leaf_key) = client_cert_and_key(&yaml);
        let (der, _) = parse(&leaf);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let (ca_der, _) = parse(&certs.ca.cert);
        let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
        cert.verify_signature(Some(ca.public_key()))
            .expect("signed by the cluster CA");
        assert_eq!(cert.issuer(), ca.subject());
        assert!(!cert.is_ca());
        let subject = cert.subject();
        assert_eq!(
            subject.iter_common_name().next().unwrap().as_str().unwrap(),
            "kubernetes-admin"
        );
        assert_eq!(
            subject.iter_organization().next().unwrap().as_str().unwrap(),
            "system:masters"
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let key = KeyPair::from_pem(&leaf_key).unwrap();
        assert_eq!(
            key.public_key_raw(),
            cert.public_key().subject_public_key.data.as_ref()
        );
        let (nb, na) = kubeconfig_client_cert_validity(&yaml).unwrap();
        assert_eq!(na.duration_since(nb), SignedDuration::from_secs(365 * DAY + 300));
        assert_eq!(na.as_second(), now.as_second() + 365 * DAY);

        let secret = kubeconfig_secret("demo", "uid-1", "ns", yaml.clone());
        assert_eq!(secret.metadata.name.as_deref(), Some("demo-kubeconfig"));
        assert_eq!(secret.type_.as_deref(), Some(CLUSTER_SECRET_TYPE));
        assert_eq!(secret.data.unwrap()["value"].0, yaml.as_bytes());
        assert_eq!(secret.metadata.owner_references.unwrap()[0].kind, "Cluster");
    }

    #[test]
    fn kubeconfig_renewal_after_half_life() {
        let t0: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let yaml = mint_admin_kubeconfig(
            "demo",
            "https://h:6443",
            &certs().ca,
            t0,
            DEFAULT_KUBECONFIG_VALIDITY,
        )
        .unwrap();
        let at = |days: i64| t0 + SignedDuration::from_secs(days * DAY);
        assert!(!kubeconfig_needs_renewal(&yaml, t0).unwrap());
        assert!(!kubeconfig_needs_renewal(&yaml, at(100)).unwrap());
        assert!(!kubeconfig_needs_renewal(&yaml, at(182)).unwrap());
        assert!(kubeconfig_needs_renewal(&yaml, at(183)).unwrap());
        assert!(kubeconfig_needs_renewal(&yaml, at(400)).unwrap());

        // A short window: 10 days from t0 - 5 min, so the half-life ends at t0 + 5 d - 150 s exactly.
        let short = mint_admin_kubeconfig(
            "demo",
            "https://h:6443",
            &certs().ca,
            t0,
            Duration::from_secs(10 * 86400),
        )
        .unwrap();
        let half_life = at(5) - SignedDuration::from_secs(150);
        assert!(!kubeconfig_needs_renewal(&short, half_life).unwrap());
        assert!(kubeconfig_needs_renewal(&short, half_life + SignedDuration::from_secs(1)).unwrap());

        let token_auth = "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers:\n- name: u\n  user:\n    token: abc\n";
        assert_eq!(
            kubeconfig_needs_renewal(token_auth, t0).unwrap_err().to_string(),
            "kubeconfig: no embedded client-certificate-data"
        );
        assert!(kubeconfig_needs_renewal("{not yaml", t0).is_err());
    }
}
