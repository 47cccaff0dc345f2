//! Cluster PKI (capi-contract.md §6): the four cluster secrets `<cluster>-ca`,
//! `<cluster>-etcd`, `<cluster>-proxy`, `<cluster>-sa`, the kubeadm discovery pin, the node files of
//! control-plane machines, and the admin client certificate ([`mint_admin_client_certificate`]) that
//! [`crate::kubeconfig`] puts into the admin kubeconfig.
//!
//! Pure: builds and inspects `k8s_openapi` values, never talks to an API server.
//!
//! Key material is **RSA-2048 with SHA-256 signatures**, the kubeadm and CABPK default (kubeadm's
//! `encryptionAlgorithm: RSA-2048`), so a cluster initialised by kubezero can be operated with stock
//! `kubeadm certs` commands. Private keys are written as PKCS#8 (`PRIVATE KEY`), which kubeadm,
//! kube-apiserver and client-go read like PKCS#1 (`RSA PRIVATE KEY`). User-supplied keys may be PKCS#8,
//! PKCS#1 RSA or SEC1 EC.
//!
//! Ownership: generated Secrets carry a **non-controller** ownerReference to the Cluster
//! (`cluster.x-k8s.io/v1beta2`, kind `Cluster`, `controller: false`, no `blockOwnerDeletion`). The
//! Cluster, not the first KubeZeroConfig (CABPK's choice), owns them, so they survive the deletion of the
//! first control-plane Machine and are garbage collected with the Cluster; `clusterctl move` follows
//! the reference. Not `controller: true`, like core's `<cluster>-kubeconfig` and CABPK's lock, so
//! nothing claims to reconcile them and no admission plugin needs finalizer rights on Clusters.
//! User-supplied Secrets (type `kubernetes.io/tls` or `cluster.x-k8s.io/secret`) are read, never
//! rewritten.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kubezero_capi::contract::{CAPI_GROUP, CAPI_VERSION, CLUSTER_NAME_LABEL};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256, RsaKeySize,
};
use sha2::{Digest as _, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::SubjectPublicKeyInfo;

/// `type` of the Secrets Cluster API providers generate (`clusterv1.ClusterSecretType`).
pub const CLUSTER_SECRET_TYPE: &str = "cluster.x-k8s.io/secret";
/// `type` of user-supplied TLS Secrets, also accepted by [`from_secret`].
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// Certificate key of the cluster secrets (for `sa`: the PEM public key).
pub const TLS_CRT: &str = "tls.crt";
/// Private key of the cluster secrets.
pub const TLS_KEY: &str = "tls.key";

/// Validity of the generated CAs: 3650 days (CABPK `DefaultCACertificatesExpiryDays`).
pub const CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 3600);
/// `notBefore` is set this much before "now", against clock skew between the management cluster and
/// the nodes / API server that check the certificate.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// Directory kubeadm reads the cluster PKI from.
pub const PKI_DIR: &str = "/etc/kubernetes/pki";

/// Errors of this module; every message names the Secret / key / field at fault.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Key or certificate generation / signing failed (crypto backend).
    #[error("generating {what}: {reason}")]
    Generate {
        /// What was being generated.
        what: String,
        /// The backend's message.
        reason: String,
    },
    /// A Secret lacks a required data key.
    #[error("secret {secret}: missing data key {key:?}")]
    MissingKey {
        /// Secret name.
        secret: String,
        /// The missing key.
        key: &'static str,
    },
    /// A data key does not hold the expected PEM / DER content.
    #[error("secret {secret}: {key}: {reason}")]
    Invalid {
        /// Secret name (or `"<input>"` for bare PEM arguments).
        secret: String,
        /// Data key or field.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The certificate is not a CA (`basicConstraints CA:TRUE` missing, or no keyCertSign usage).
    #[error("secret {secret}: tls.crt is not a CA certificate: {reason}")]
    NotACa {
        /// Secret name.
        secret: String,
        /// What is missing.
        reason: String,
    },
    /// `tls.key` is not the private key of `tls.crt`.
    #[error("secret {secret}: tls.key does not match the public key in tls.crt")]
    KeyMismatch {
        /// Secret name.
        secret: String,
    },
    /// A kubeconfig could not be built or inspected.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
}

fn generate_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |e| PkiError::Generate {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// The four cluster secrets (§6: names `<cluster>-<purpose>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CertificateKind {
    /// Cluster CA: `<cluster>-ca`, CN `kubernetes`.
    ClusterCa,
    /// etcd CA: `<cluster>-etcd`, CN `etcd-ca`.
    EtcdCa,
    /// Front-proxy (aggregation layer) CA: `<cluster>-proxy`, CN `front-proxy-ca`.
    FrontProxyCa,
    /// Service-account signing key pair: `<cluster>-sa`, `tls.crt` = PEM public key.
    ServiceAccount,
}

impl CertificateKind {
    /// All kinds, in the order of [`ClusterCertificates`]' fields.
    pub const ALL: [Self; 4] = [
        Self::ClusterCa,
        Self::EtcdCa,
        Self::FrontProxyCa,
        Self::ServiceAccount,
    ];

    /// Secret name suffix (`clusterv1` `secret.Purpose`).
    pub fn purpose(self) -> &'static str {
        match self {
            Self::ClusterCa => "ca",
            Self::EtcdCa => "etcd",
            Self::FrontProxyCa => "proxy",
            Self::ServiceAccount => "sa",
        }
    }

    /// `<cluster>-<purpose>`.
    pub fn secret_name(self, cluster: &str) -> String {
        format!("{cluster}-{}", self.purpose())
    }

    /// Subject CN of the CA certificate; `None` for the service-account key pair (no certificate).
    pub fn common_name(self) -> Option<&'static str> {
        match self {
            Self::ClusterCa => Some("kubernetes"),
            Self::EtcdCa => Some("etcd-ca"),
            Self::FrontProxyCa => Some("front-proxy-ca"),
            Self::ServiceAccount => None,
        }
    }

    /// Node paths of `tls.crt` and `tls.key` (kubeadm's file names under [`PKI_DIR`]).
    pub fn node_paths(self) -> (&'static str, &'static str) {
        match self {
            Self::ClusterCa => ("/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key"),
            Self::EtcdCa => (
                "/etc/kubernetes/pki/etcd/ca.crt",
                "/etc/kubernetes/pki/etcd/ca.key",
            ),
            Self::FrontProxyCa => (
                "/etc/kubernetes/pki/front-proxy-ca.crt",
                "/etc/kubernetes/pki/front-proxy-ca.key",
            ),
            Self::ServiceAccount => ("/etc/kubernetes/pki/sa.pub", "/etc/kubernetes/pki/sa.key"),
        }
    }

    /// Generates a fresh key pair of this kind (CA valid [`CA_VALIDITY`] from `now`).
    pub fn generate(self, now: Timestamp) -> Result<CertKeyPair, PkiError> {
        let what = self.purpose();
        let key =
            KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).map_err(generate_err(what))?;
        let Some(common_name) = self.common_name() else {
            return Ok(CertKeyPair {
                cert: key.public_key_pem(),
                key: key.serialize_pem(),
            });
        };
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate_err(what))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        set_validity(&mut params, now, CA_VALIDITY)?;
        let cert = params.self_signed(&key).map_err(generate_err(what))?;
        Ok(CertKeyPair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// PEM contents of one cluster secret: `tls.crt` (certificate, or public key for `sa`) and `tls.key`.
#[derive(Clone, PartialEq, Eq)]
pub struct CertKeyPair {
    /// `tls.crt`: PEM `CERTIFICATE` (CAs) or PEM `PUBLIC KEY` (service account).
    pub cert: String,
    /// `tls.key`: PEM private key.
    pub key: String,
}

impl std::fmt::Debug for CertKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKeyPair")
            .field("cert", &self.cert)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A file kubeadm expects on the node before `kubeadm init|join` (owner `root:root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFile {
    /// Absolute path.
    pub path: &'static str,
    /// PEM content.
    pub content: String,
    /// Octal mode as the API's `files[].permissions` spells it: `"0600"` for keys, `"0644"` otherwise.
    pub permissions: &'static str,
}

/// The cluster's CAs and service-account key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCertificates {
    /// `<cluster>-ca`.
    pub ca: CertKeyPair,
    /// `<cluster>-etcd`.
    pub etcd: CertKeyPair,
    /// `<cluster>-proxy`.
    pub proxy: CertKeyPair,
    /// `<cluster>-sa`.
    pub sa: CertKeyPair,
}

impl ClusterCertificates {
    /// Generates all four key pairs now (see [`Self::generate_at`]). The cluster name is not part of
    /// any certificate (kubeadm's CNs are fixed), so it is only needed for [`Self::to_secret`].
    pub fn generate() -> Result<Self, PkiError> {
        Self::generate_at(Timestamp::now())
    }

    /// Generates all four key pairs with CA validity starting at `now` (minus [`CLOCK_SKEW_ALLOWANCE`]).
    /// For "look up, generate what is missing" call [`CertificateKind::generate`] per missing kind.
    pub fn generate_at(now: Timestamp) -> Result<Self, PkiError> {
        Ok(Self {
            ca: CertificateKind::ClusterCa.generate(now)?,
            etcd: CertificateKind::EtcdCa.generate(now)?,
            proxy: CertificateKind::FrontProxyCa.generate(now)?,
            sa: CertificateKind::ServiceAccount.generate(now)?,
        })
    }

    /// The key pair of `kind`.
    pub fn get(&self, kind: CertificateKind) -> &CertKeyPair {
        match kind {
            CertificateKind::ClusterCa => &self.ca,
            CertificateKind::EtcdCa => &self.etcd,
            CertificateKind::FrontProxyCa => &self.proxy,
            CertificateKind::ServiceAccount => &self.sa,
        }
    }

    /// The Secret for `kind` (see [`to_secret`]).
    pub fn to_secret(
        &self,
        kind: CertificateKind,
        cluster: &str,
        cluster_uid: &str,
        namespace: &str,
    ) -> Secret {
        to_secret(kind, self.get(kind), cluster, cluster_uid, namespace)
    }

    /// Files of a control-plane machine (`kubeadm init` and control-plane `kubeadm join`): certificate
    /// and key of the cluster, front-proxy and etcd CAs and the service-account key pair, keys `0600`,
    /// certificates and `sa.pub` `0644`. Order: ca, sa, front-proxy, etcd (kubeadm's listing).
    pub fn control_plane_files(&self) -> Vec<NodeFile> {
        [
            CertificateKind::ClusterCa,
            CertificateKind::ServiceAccount,
            CertificateKind::FrontProxyCa,
            CertificateKind::EtcdCa,
        ]
        .into_iter()
        .flat_map(|kind| {
            let (crt_path, key_path) = kind.node_paths();
            let pair = self.get(kind);
            [
                NodeFile {
                    path: crt_path,
                    content: pair.cert.clone(),
                    permissions: "0644",
                },
                NodeFile {
                    path: key_path,
                    content: pair.key.clone(),
                    permissions: "0600",
                },
            ]
        })
        .collect()
    }

    /// Files of a worker machine: **none**. A worker's `kubeadm join` gets the cluster CA through
    /// bootstrap-token discovery (the `kube-public/cluster-info` ConfigMap) and trusts it only if its
    /// SPKI matches `discovery.bootstrapToken.caCertHashes` = [`Self::discovery_pin`]; kubeadm then
    /// writes `/etc/kubernetes/pki/ca.crt` itself. Pre-writing that file would fail the worker join
    /// preflight (`FileAvailable--etc-kubernetes-pki-ca.crt`, kubeadm checks it when
    /// `controlPlane` is unset). So "workers only get the CA certificate" means: its pin, in the
    /// JoinConfiguration, never a key.
    pub fn worker_files(&self) -> Vec<NodeFile> {
        Vec::new()
    }

    /// `sha256:<hex>` pin of the cluster CA for `caCertHashes` (see [`ca_cert_hash`]).
    pub fn discovery_pin(&self) -> Result<String, PkiError> {
        ca_cert_hash(&self.ca.cert)
    }
}

/// Owner reference to a Cluster: `cluster.x-k8s.io/v1beta2`, kind `Cluster`, `controller: false`
/// (see the module docs), no `blockOwnerDeletion`.
pub fn cluster_owner_reference(cluster: &str, cluster_uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: format!("{CAPI_GROUP}/{CAPI_VERSION}"),
        kind: "Cluster".to_string(),
        name: cluster.to_string(),
        uid: cluster_uid.to_string(),
        controller: Some(false),
        block_owner_deletion: None,
    }
}

/// Metadata shared by the cluster Secrets and the init lock: name, namespace, cluster-name label,
/// ownerReference to the Cluster.
pub(crate) fn cluster_owned_meta(
    name: String,
    cluster: &str,
    cluster_uid: &str,
    namespace: &str,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(BTreeMap::from([(
            CLUSTER_NAME_LABEL.to_string(),
            cluster.to_string(),
        )])),
        owner_references: Some(vec![cluster_owner_reference(cluster, cluster_uid)]),
        ..ObjectMeta::default()
    }
}

/// The generated Secret `<cluster>-<purpose>`: `type: cluster.x-k8s.io/secret`, data `tls.crt` /
/// `tls.key`, label `cluster.x-k8s.io/cluster-name: <cluster>`, non-controller ownerReference to the
/// Cluster.
pub fn to_secret(
    kind: CertificateKind,
    pair: &CertKeyPair,
    cluster: &str,
    cluster_uid: &str,
    namespace: &str,
) -> Secret {
    Secret {
        metadata: cluster_owned_meta(kind.secret_name(cluster), cluster, cluster_uid, namespace),
        type_: Some(CLUSTER_SECRET_TYPE.to_string()),
        data: Some(BTreeMap::from([
            (TLS_CRT.to_string(), ByteString(pair.cert.clone().into_bytes())),
            (TLS_KEY.to_string(), ByteString(pair.key.clone().into_bytes())),
        ])),
        ..Secret::default()
    }
}

/// Reads and validates a cluster secret of `kind`, generated or user-supplied. The Secret `type` is
/// not checked (CAPI does not either), so `cluster.x-k8s.io/secret`, `kubernetes.io/tls` and `Opaque`
/// are all accepted. Checks:
/// - `tls.crt` and `tls.key` present and UTF-8 PEM; the key is PKCS#8, PKCS#1 RSA or SEC1 EC;
/// - CAs: `tls.crt`'s first block is a parseable X.509 `CERTIFICATE` with `basicConstraints CA:TRUE`
///   and, when a keyUsage extension is present, `keyCertSign`;
/// - service account: `tls.crt` is a PEM `PUBLIC KEY` (SubjectPublicKeyInfo);
/// - the private key's public half equals the certificate's / public key's.
///
/// Expiry is not checked here.
pub fn from_secret(kind: CertificateKind, secret: &Secret) -> Result<CertKeyPair, PkiError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let field = |key: &'static str| -> Result<String, PkiError> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .ok_or_else(|| PkiError::MissingKey {
                secret: name.clone(),
                key,
            })?;
        String::from_utf8(bytes.0.clone()).map_err(|_| PkiError::Invalid {
            secret: name.clone(),
            key,
            reason: "not UTF-8 (expected PEM text)".to_string(),
        })
    };
    let pair = CertKeyPair {
        cert: field(TLS_CRT)?,
        key: field(TLS_KEY)?,
    };
    validate(kind, &pair, &name)?;
    Ok(pair)
}

/// [`from_secret`]'s checks on bare PEM; `name` only labels the errors.
pub fn validate(kind: CertificateKind, pair: &CertKeyPair, name: &str) -> Result<(), PkiError> {
    let invalid = |key: &'static str, reason: String| PkiError::Invalid {
        secret: name.to_string(),
        key,
        reason,
    };
    let key = KeyPair::from_pem(&pair.key).map_err(|e| {
        invalid(
            TLS_KEY,
            format!("not a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC): {e}"),
        )
    })?;
    let block = first_pem(&pair.cert).map_err(|reason| invalid(TLS_CRT, reason))?;
    let public_key = match kind {
        CertificateKind::ServiceAccount => {
            if block.label != "PUBLIC KEY" {
                return Err(invalid(
                    TLS_CRT,
                    format!("expected a PEM PUBLIC KEY block, found {:?}", block.label),
                ));
            }
            let (_, spki) = SubjectPublicKeyInfo::from_der(&block.contents)
                .map_err(|e| invalid(TLS_CRT, format!("invalid SubjectPublicKeyInfo: {e}")))?;
            spki.subject_public_key.data.to_vec()
        }
        _ => {
            let cert = parse_certificate(&block).map_err(|reason| invalid(TLS_CRT, reason))?;
            if !cert.is_ca() {
                return Err(PkiError::NotACa {
                    secret: name.to_string(),
                    reason: "basicConstraints CA:TRUE missing".to_string(),
                });
            }
            let usage = cert
                .key_usage()
                .map_err(|e| invalid(TLS_CRT, format!("invalid keyUsage extension: {e}")))?;
            if usage.is_some_and(|usage| !usage.value.key_cert_sign()) {
                return Err(PkiError::NotACa {
                    secret: name.to_string(),
                    reason: "keyUsage lacks keyCertSign".to_string(),
                });
            }
            cert.public_key().subject_public_key.data.to_vec()
        }
    };
    if public_key != key.public_key_raw() {
        return Err(PkiError::KeyMismatch {
            secret: name.to_string(),
        });
    }
    Ok(())
}

/// The first PEM block of `text`.
pub(crate) fn first_pem(text: &str) -> Result<Pem, String> {
    match Pem::iter_from_buffer(text.as_bytes()).next() {
        Some(Ok(pem)) => Ok(pem),
        Some(Err(e)) => Err(format!("not PEM: {e}")),
        None => Err("not PEM: no -----BEGIN block".to_string()),
    }
}

pub(crate) fn parse_certificate(block: &Pem) -> Result<X509Certificate<'_>, String> {
    if block.label != "CERTIFICATE" {
        return Err(format!(
            "expected a PEM CERTIFICATE block, found {:?}",
            block.label
        ));
    }
    block
        .parse_x509()
        .map_err(|e| format!("invalid X.509 certificate: {e}"))
}

/// kubeadm's CA pin for join discovery (`caCertHashes`): `sha256:<lower-case hex of the SHA-256 of
/// the certificate's DER SubjectPublicKeyInfo>` (kubeadm `pubkeypin.Hash`), of the first certificate in
/// `ca_pem`.
pub fn ca_cert_hash(ca_pem: &str) -> Result<String, PkiError> {
    let invalid = |reason: String| PkiError::Invalid {
        secret: "<input>".to_string(),
        key: TLS_CRT,
        reason,
    };
    let block = first_pem(ca_pem).map_err(invalid)?;
    let cert = parse_certificate(&block).map_err(invalid)?;
    Ok(spki_pin(cert.public_key().raw))
}

/// `sha256:<hex>` of DER SubjectPublicKeyInfo bytes.
fn spki_pin(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Sets `notBefore` = `now - CLOCK_SKEW_ALLOWANCE`, `notAfter` = `now + validity`.
fn set_validity(params: &mut CertificateParams, now: Timestamp, validity: Duration) -> Result<(), PkiError> {
    let since_epoch = |ts: Timestamp| -> Result<Duration, PkiError> {
        Duration::try_from(ts.duration_since(Timestamp::UNIX_EPOCH)).map_err(|_| PkiError::Generate {
            what: "validity window".to_string(),
            reason: format!("{ts} is before 1970"),
        })
    };
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let start = now - SignedDuration::try_from(CLOCK_SKEW_ALLOWANCE).unwrap_or_default();
    params.not_before = epoch + since_epoch(start)?;
    params.not_after = epoch + since_epoch(now)? + validity;
    Ok(())
}

/// A new admin client certificate signed by the cluster CA `ca`: RSA-2048, CN `kubernetes-admin`,
/// O `system:masters`, ExtKeyUsage clientAuth, valid from `now` - [`CLOCK_SKEW_ALLOWANCE`] to
/// `now + validity`. Returned as PEM certificate and PEM private key.
pub fn mint_admin_client_certificate(
    ca: &CertKeyPair,
    now: Timestamp,
    validity: Duration,
) -> Result<CertKeyPair, PkiError> {
    let what = "admin client certificate";
    let ca_key = KeyPair::from_pem(&ca.key).map_err(generate_err("cluster CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(generate_err("cluster CA issuer"))?;
    let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).map_err(generate_err(what))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate_err(what))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kubernetes-admin");
    dn.push(DnType::OrganizationName, "system:masters");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now, validity)?;
    let cert = params.signed_by(&key, &issuer).map_err(generate_err(what))?;
    Ok(CertKeyPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Whether the first certificate of `cert_pem` carries a valid signature of the CA certificate
/// `ca_pem`'s key (i.e. the CA issued it).
pub fn issued_by(cert_pem: &str, ca_pem: &str) -> Result<bool, PkiError> {
    let invalid = |reason: String| PkiError::Kubeconfig(format!("certificate: {reason}"));
    let block = first_pem(cert_pem).map_err(invalid)?;
    let cert = parse_certificate(&block).map_err(invalid)?;
    let ca_block = first_pem(ca_pem).map_err(invalid)?;
    let ca = parse_certificate(&ca_block).map_err(invalid)?;
    Ok(cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use rcgen::PublicKeyData as _;
    use std::sync::OnceLock;

    const DAY: i64 = 24 * 3600;

    /// RSA key generation is slow in debug builds: generate once for the whole module.
    pub(crate) fn certs() -> &'static ClusterCertificates {
        static CERTS: OnceLock<ClusterCertificates> = OnceLock::new();
        CERTS.get_or_init(|| ClusterCertificates::generate().expect("generate"))
    }

    pub(crate) fn parse(pem: &str) -> (Vec<u8>, String) {
        let block = first_pem(pem).unwrap();
        (block.contents, block.label)
    }

    #[test]
    fn generated_cas_are_self_signed_rsa_2048_cas_with_kubeadm_names() {
        let certs = certs();
        for (kind, cn) in [
            (CertificateKind::ClusterCa, "kubernetes"),
            (CertificateKind::EtcdCa, "etcd-ca"),
            (CertificateKind::FrontProxyCa, "front-proxy-ca"),
        ] {
            let pair = certs.get(kind);
            let (der, label) = parse(&pair.cert);
            assert_eq!(label, "CERTIFICATE");
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            assert!(cert.is_ca(), "{kind:?}");
            let subject_cn = cert
                .subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap();
            assert_eq!(subject_cn, cn);
            assert_eq!(cert.subject(), cert.issuer());
            cert.verify_signature(None).expect("self-signature verifies");
            let usage = cert.key_usage().unwrap().unwrap().value;
            assert!(usage.key_cert_sign() && usage.digital_signature() && usage.key_encipherment());
            // RSA-2048: the modulus is 256 bytes.
            match cert.public_key().parsed().unwrap() {
                x509_parser::public_key::PublicKey::RSA(rsa) => assert_eq!(rsa.key_size(), 2048),
                other => panic!("{kind:?}: not RSA: {other:?}"),
            }
            let validity = cert.validity();
            let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / DAY;
            assert_eq!(days, 3650, "{kind:?} validity (plus the 5 min skew allowance)");
            validate(kind, pair, "generated").unwrap();
        }
        let (_, label) = parse(&certs.sa.cert);
        assert_eq!(label, "PUBLIC KEY");
        validate(CertificateKind::ServiceAccount, &certs.sa, "generated").unwrap();
        // Four distinct keys.
        let keys: std::collections::BTreeSet<_> = CertificateKind::ALL.map(|k| &certs.get(k).key).into();
        assert_eq!(keys.len(), 4);
    }

    #[test]
    fn ca_cert_hash_is_sha256_of_the_spki() {
        let certs = certs();
        // Independently: the SPKI as rcgen re-encodes it from the private key.
        let key = KeyPair::from_pem(&certs.ca.key).unwrap();
        let expected = format!("sha256:{:x}", Sha256::digest(key.subject_public_key_info()));
        assert_eq!(ca_cert_hash(&certs.ca.cert).unwrap(), expected);
        assert_eq!(certs.discovery_pin().unwrap(), expected);
        // And against a fixed vector computed with openssl:
        // openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum
        assert_eq!(ca_cert_hash(FIXTURE_CA).unwrap(), FIXTURE_CA_HASH);
        assert!(ca_cert_hash("garbage").is_err());
    }

    fn secret(name: &str, type_: &str, crt: &str, key: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            type_: Some(type_.into()),
            data: Some(BTreeMap::from([
                (TLS_CRT.into(), ByteString(crt.as_bytes().to_vec())),
                (TLS_KEY.into(), ByteString(key.as_bytes().to_vec())),
            ])),
            ..Secret::default()
        }
    }

    #[test]
    fn secret_shape_and_round_trip() {
        let certs = certs();
        for kind in CertificateKind::ALL {
            let s = certs.to_secret(kind, "demo", "uid-1", "ns");
            assert_eq!(
                s.metadata.name.as_deref(),
                Some(format!("demo-{}", kind.purpose()).as_str())
            );
            assert_eq!(s.metadata.namespace.as_deref(), Some("ns"));
            assert_eq!(s.type_.as_deref(), Some("cluster.x-k8s.io/secret"));
            assert_eq!(
                s.metadata.labels,
                Some(BTreeMap::from([(
                    "cluster.x-k8s.io/cluster-name".into(),
                    "demo".into()
                )]))
            );
            let owners = s.metadata.owner_references.clone().unwrap();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].api_version, "cluster.x-k8s.io/v1beta2");
            assert_eq!(owners[0].kind, "Cluster");
            assert_eq!(owners[0].name, "demo");
            assert_eq!(owners[0].uid, "uid-1");
            assert_eq!(owners[0].controller, Some(false));
            let keys: Vec<_> = s.data.as_ref().unwrap().keys().cloned().collect();
            assert_eq!(keys, ["tls.crt", "tls.key"]);
            assert_eq!(&from_secret(kind, &s).unwrap(), certs.get(kind));
        }
        assert_eq!(
            [
                CertificateKind::ClusterCa,
                CertificateKind::EtcdCa,
                CertificateKind::FrontProxyCa
            ]
            .map(|k| k.secret_name("c")),
            ["c-ca", "c-etcd", "c-proxy"]
        );
        assert_eq!(CertificateKind::ServiceAccount.secret_name("c"), "c-sa");
    }

    #[test]
    fn user_supplied_tls_secret_is_accepted() {
        // An openssl-made CA with a PKCS#1 "RSA PRIVATE KEY", as users create them.
        let s = secret("demo-ca", TLS_SECRET_TYPE, FIXTURE_CA, FIXTURE_CA_KEY);
        let pair = from_secret(CertificateKind::ClusterCa, &s).unwrap();
        assert_eq!(pair.cert, FIXTURE_CA);
    }

    #[test]
    fn garbage_is_rejected_with_a_clear_error() {
        let certs = certs();
        let ca = CertificateKind::ClusterCa;
        let msg = |s: &Secret, kind| from_secret(kind, s).unwrap_err().to_string();

        let mut missing = secret("x", TLS_SECRET_TYPE, FIXTURE_CA, FIXTURE_CA_KEY);
        missing.data.as_mut().unwrap().remove(TLS_KEY);
        assert_eq!(msg(&missing, ca), "secret x: missing data key \"tls.key\"");

        let s = secret("x", TLS_SECRET_TYPE, "hello", FIXTURE_CA_KEY);
        assert!(
            msg(&s, ca).starts_with("secret x: tls.crt: not PEM"),
            "{}",
            msg(&s, ca)
        );

        let s = secret("x", TLS_SECRET_TYPE, FIXTURE_CA, "hello");
        assert!(msg(&s, ca).starts_with("secret x: tls.key: not a PEM private key"));

        // The key of another CA.
        let s = secret("x", TLS_SECRET_TYPE, FIXTURE_CA, &certs.ca.key);
        assert_eq!(
            msg(&s, ca),
            "secret x: tls.key does not match the public key in tls.crt"
        );

        // A public key where a certificate is expected, and the other way round.
        let s = secret("x", TLS_SECRET_TYPE, &certs.sa.cert, &certs.sa.key);
        assert_eq!(
            msg(&s, ca),
            "secret x: tls.crt: expected a PEM CERTIFICATE block, found \"PUBLIC KEY\""
        );
        let s = secret("x", TLS_SECRET_TYPE, &certs.ca.cert, &certs.ca.key);
        assert_eq!(
            msg(&s, CertificateKind::ServiceAccount),
            "secret x: tls.crt: expected a PEM PUBLIC KEY block, found \"CERTIFICATE\""
        );

        // A leaf (non-CA) certificate: the admin client certificate of a minted kubeconfig.
        let kubeconfig = crate::kubeconfig::mint_admin_kubeconfig(
            "demo",
            "https://h:6443",
            &certs.ca,
            Timestamp::now(),
            crate::kubeconfig::DEFAULT_KUBECONFIG_VALIDITY,
        )
        .unwrap();
        let (leaf, leaf_key) = client_cert_and_key(&kubeconfig);
        let s = secret("x", TLS_SECRET_TYPE, &leaf, &leaf_key);
        assert_eq!(
            msg(&s, ca),
            "secret x: tls.crt is not a CA certificate: basicConstraints CA:TRUE missing"
        );
    }

    /// The PEM client certificate and key of the first user of `kubeconfig`.
    pub(crate) fn client_cert_and_key(kubeconfig: &str) -> (String, String) {
        let config: serde_json::Value = serde_saphyr::from_str(kubeconfig).unwrap();
        let user = &config["users"][0]["user"];
        let decode =
            |v: &serde_json::Value| String::from_utf8(BASE64.decode(v.as_str().unwrap()).unwrap()).unwrap();
        (
            decode(&user["client-certificate-data"]),
            decode(&user["client-key-data"]),
        )
    }

    #[test]
    fn control_plane_files_carry_all_pairs_and_workers_none() {
        let certs = certs();
        let files = certs.control_plane_files();
        let listing: Vec<_> = files.iter().map(|f| (f.path, f.permissions)).collect();
        assert_eq!(
            listing,
            [
                ("/etc/kubernetes/pki/ca.crt", "0644"),
                ("/etc/kubernetes/pki/ca.key", "0600"),
                ("/etc/kubernetes/pki/sa.pub", "0644"),
                ("/etc/kubernetes/pki/sa.key", "0600"),
                ("/etc/kubernetes/pki/front-proxy-ca.crt", "0644"),
                ("/etc/kubernetes/pki/front-proxy-ca.key", "0600"),
                ("/etc/kubernetes/pki/etcd/ca.crt", "0644"),
                ("/etc/kubernetes/pki/etcd/ca.key", "0600"),
            ]
        );
        assert_eq!(files[0].content, certs.ca.cert);
        assert_eq!(files[7].content, certs.etcd.key);
        assert!(certs.worker_files().is_empty());
    }

    /// A user-made CA: `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=user-ca -days 3650 -addext
    /// basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,digitalSignature,keyEncipherment`,
    /// key converted to PKCS#1 with `openssl rsa -traditional`.
    const FIXTURE_CA: &str = "-----BEGIN CERTIFICATE-----
MIIDFTCCAf2gAwIBAgIUUu/bkvkB+JCijW2nqwAl89edBVkwDQYJKoZIhvcNAQEL
BQAwEjEQMA4GA1UEAwwHdXNlci1jYTAeFw0yNjExMjIwMzM2NDBaFw0zNjExMTkw
MzM2NDBaMBIxEDAOBgNVBAMMB3VzZXItY2EwggEiMA0GCSqGSIb3DQEBAQUAA4IB
DwAwggEKAoIBAQDW3DqU53sc8bykQuciyhaE8s5G/p/jq/gvG/ZUsURUMuP+pReU
MzwsbEOqzta8liMR1vBxdZrgt1kamSMqmmbyoOOZ0IKgiIlJhl6X/mkvKYGsRwZs
95emnxNwvVi4RMEZ4g0z15uu23mRIs9m1BAsI/FaDsgDGAJWWF9k7YWMfsTqPADL
BV2DpD5asIzaatuQCDg90Kna8lhE5Phcqn3rEtB2/f7o4PaiPYoaOWtMj4WlACCl
aw6Hq8nggdz96VXwE33FKH17DdY5rwoWf2h0GL4goUwjd8I2FtBCreQt5gfrm3Dq
C6LI2HnBXd+IeU4g/pKdJQ55TP0bc3/DTWUFAgMBAAGjYzBhMB0GA1UdDgQWBBRE
oLu2S9BNbD3EQoKzRu9rcOVGeDAfBgNVHSMEGDAWgBREoLu2S9BNbD3EQoKzRu9r
cOVGeDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwICpDANBgkqhkiG9w0B
AQsFAAOCAQEAiRdg2bfqCVjW9i9T8OS0OUmuB8kUsUGVmmkP8g9mtBpgSFLSDolv
64mCYeQSq93F2PC+yr54vJp3ZXJq+FBh2NjsGz8pbD6k13XJ0JMfjKWX+0+N915s
nrwa8ojp/Qk4qb0BHELTxLjNl9+yDehixkwwTpsukto+qIJUktlK9z2kxwEfmj7f
QEgIMc/eKwa60en7eXqBeL8ub3kjdcGqYpyOOespEFbAHmFVuqTIfXhNV3do6to4
PTGuPSfZyCvoxp/z27xvy5pZtwCspzS+bQvCMD+nxMJemmuZe3lAQGiN4B/UisRb
0AIv+csa6vnQ3VdUsG8FODFAjR1IRq8XrQ==
-----END CERTIFICATE-----
";
    const FIXTURE_CA_KEY: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEA1tw6lOd7HPG8pELnIsoWhPLORv6f46v4Lxv2VLFEVDLj/qUX
lDM8LGxDqs7WvJYjEdbwcXWa4LdZGpkjKppm8qDjmdCCoIiJSYZel/5pLymBrEcG
bPeXpp8TcL1YuETBGeINM9ebrtt5kSLPZtQQLCPxWg7IAxgCVlhfZO2FjH7E6jwA
ywVdg6Q+WrCM2mrbkAg4PdCp2vJYROT4XKp96xLQdv3+6OD2oj2KGjlrTI+FpQAg
pWsOh6vJ4IHc/elV8BN9xSh9ew3WOa8KFn9odBi+IKFMI3fCNhbQQq3kLeYH65tw
6guiyNh5wV3fiHlOIP6SnSUOeUz9G3N/w01lBQIDAQABAoIBAAenhVvAKmHj18dX
TdIutmIqn0Amuo37Fqag/aPTQ96nCHnOKlqgf6SKf9eiMkK6K4oraNn16VxXk9BP
g9H0+bVrl2gnpjuvWYq5w31xNhCUzzaSui8gG/I26ROjXzmDU4jHRZai9/wg/AH4
ZkCgzemwpxzA+Y2oqY6na9CV6KPSYJv2P1S6LYlJbEvHj9ZxUEIht/1nuhuEXORQ
vL1iDdTCrjMZ/Gu/Kj78ODHaK/8z+LDE90Iyo/uHvKfLbM7Vn5hxiG74HR+5zdvU
ys8drYCXBaZO4+E8n/6+ZJFlPwpUuwaa7TpK04BMuoI2iOaSWhcxCrDwMQH2ykj5
r8h1jBECgYEA8h6YO0I6wmcOtmFnq/MY9R1nERE0g/sroiV8nrkcy18GdDQXRgl3
nsSJLEyG0DxB0BIYuPIpblKi1IxgxftA1wLJH2Z/CWJEobTuGMRIeDX+AepRVRHe
Plam54iTOftsvEgM/KYYQiaOYRVZfqf8nhThNyPBlNSMfMDCww0Y09UCgYEA4y2S
JBu36NQOfawNru5gKOZ5jo73s9BRsyuJdSy3zlz0DOZ5rNA3Qy5TqjFTxui5ZR7v
L98gYf2jio5C2aJQEpZveHAzTEHpZ6eF2sVtqsdhdYkQimvd2uSFSJwUwDpWt6Hq
vbSUlQ8k+Wa+DeqvG5th32Hv1IZDv/K/WMd+VHECgYEA4t9sQkrjCHrNPHS1Ulhu
kHBGvaVjkjBvSHbb+Vb39lFKmOSe0k/YuPrslof243UzLidm5xZzYB8q2QPZQmsW
7OJ9V2ERtNdR/DyvxqFWTt44786C+7XMjJlhuB8v5esEjsDs+mkg3guG6s24mIgM
nIxwJNzqbe1k3xk45tCE7SkCgYA816ecJBBNOv3min3fq9f1HETR+Vg9wD0hTzex
OhjAHAUAr3lG3zztsSqXGj7lts5wVqiYmZmCpPt30EH3J5FqaP/RsbsLYVuxdxxS
Sy3j3yIq6FqVt+3jAfDwUVz9XqJ669KCnCpvAW9VnD6qW4AqVKMRwJkKwirC7bBx
hnw/AQKBgQCeMmexNf8T8Itrllnp3j0dVFmOOmznTsvgmmrOrNPk4uL4157KP3s6
TSrTgKuxZoroRU/JXhcZQkPLkec1ALaOJ4Fjs5Ewg86+7DudnpE+gJpbmetfEAtG
DbaFedbVe693ibEXphKcq1EMhzfUDw2Qo1gVQtGDNCrVEEAYEvZ9rw==
-----END RSA PRIVATE KEY-----
";
    /// `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`
    const FIXTURE_CA_HASH: &str = "sha256:4fa78d63080aae36698fcad329f0e34f07e8f8e877dcd0821b2b6ca74a2cc2c0";
}
