//! The `<cluster>-kubeconfig` Secret of a Cluster with a machine-based control plane (capi-contract.md
//! §6, [CAPI] `core/reconcilers/cluster/cluster_controller_phases.go reconcileKubeconfig`,
//! `util/kubeconfig/kubeconfig.go`), and [`KubeconfigSecretClusters`], the [`WorkloadClusters`] that
//! connects through it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_RSA_SHA256, RsaKeySize,
};
use serde_json::json;

use super::util::capi_owner;
use super::{CLUSTER_NAME_LABEL, CLUSTER_SECRET_TYPE, Ctx, Error, FIELD_MANAGER, WorkloadClusters};

/// Validity of the client certificate (`certs.DefaultCertDuration`, §6).
const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Ensures `<cluster>-kubeconfig` exists (§6): when missing, reads `<cluster>-ca` (`tls.crt`,
/// `tls.key`) and mints a client certificate CN `kubernetes-admin`, O `system:masters`, ExtKeyUsage
/// clientAuth, RSA-2048, valid 365 days; server `https://<host>:<port>`, cluster entry `<cluster>`, user
/// `<cluster>-admin`, context `<cluster>-admin@<cluster>`. The Secret has type
/// `cluster.x-k8s.io/secret`, label `cluster.x-k8s.io/cluster-name`, a non-controller ownerRef to the
/// Cluster and key `value`. Never rotated (core does not either). Returns true while `<cluster>-ca`
/// is missing (core requeues).
pub(crate) async fn reconcile(
    ctx: &Ctx,
    cluster: &DynamicObject,
    host: &str,
    port: i64,
) -> Result<bool, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let secret_name = format!("{name}-kubeconfig");
    if secrets.get_opt(&secret_name).await?.is_some() {
        return Ok(false);
    }
    let Some(ca) = secrets.get_opt(&format!("{name}-ca")).await? else {
        return Ok(true);
    };
    let data = ca.data.unwrap_or_default();
    let field = |key: &str| -> Result<String, Error> {
        let bytes = data
            .get(key)
            .ok_or_else(|| Error::Kubeconfig(format!("secret {name}-ca has no {key}")))?;
        String::from_utf8(bytes.0.clone()).map_err(|e| Error::Kubeconfig(format!("{name}-ca {key}: {e}")))
    };
    let (ca_crt, ca_key) = (field("tls.crt")?, field("tls.key")?);
    let server = format!("https://{host}:{port}");
    let value = mint(&name, &server, &ca_crt, &ca_key)?;

    let secret = kubeconfig_secret(cluster, value);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    match secrets.create(&params, &secret).await {
        Ok(_) => Ok(false),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The `<cluster>-kubeconfig` Secret as core writes it (§6): type `cluster.x-k8s.io/secret`, the
/// cluster-name label, a non-controller ownerRef to the Cluster, and the kubeconfig under `value`.
pub fn kubeconfig_secret(cluster: &DynamicObject, value: String) -> Secret {
    let name = cluster.name_any();
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("{name}-kubeconfig")),
            namespace: cluster.namespace(),
            labels: Some(BTreeMap::from([(CLUSTER_NAME_LABEL.to_string(), name)])),
            owner_references: Some(vec![capi_owner("Cluster", cluster, false)]),
            ..ObjectMeta::default()
        },
        type_: Some(CLUSTER_SECRET_TYPE.to_string()),
        data: Some(BTreeMap::from([(
            "value".to_string(),
            ByteString(value.into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// A kubeconfig (YAML) for `cluster` at `server` with a fresh admin client certificate signed by the CA.
pub fn mint(cluster: &str, server: &str, ca_crt_pem: &str, ca_key_pem: &str) -> Result<String, Error> {
    let err = |e: rcgen::Error| Error::Kubeconfig(e.to_string());
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(err)?;
    let issuer = Issuer::from_ca_cert_pem(ca_crt_pem, ca_key).map_err(err)?;
    let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).map_err(err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "kubernetes-admin");
    dn.push(DnType::OrganizationName, "system:masters");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(Duration::from_secs(300));
    params.not_after = epoch + now + CERT_VALIDITY;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;

    let user = format!("{cluster}-admin");
    let context = format!("{cluster}-admin@{cluster}");
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {
            "server": server,
            "certificate-authority-data": base64(ca_crt_pem.as_bytes()),
        }}],
        "users": [{"name": user, "user": {
            "client-certificate-data": base64(cert.pem().as_bytes()),
            "client-key-data": base64(key.serialize_pem().as_bytes()),
        }}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    });
    serde_saphyr::to_string(&kubeconfig).map_err(|e| Error::Kubeconfig(e.to_string()))
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// [`WorkloadClusters`] through each Cluster's `<cluster>-kubeconfig` Secret (key `value`), as core's
/// ClusterCache connects (§6). `None` while the Secret is missing or unusable.
#[derive(Clone)]
pub struct KubeconfigSecretClusters {
    management: Client,
}

impl std::fmt::Debug for KubeconfigSecretClusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeconfigSecretClusters").finish_non_exhaustive()
    }
}

impl KubeconfigSecretClusters {
    /// Reads kubeconfig Secrets through `management`.
    pub fn new(management: Client) -> Self {
        Self { management }
    }
}

impl WorkloadClusters for KubeconfigSecretClusters {
    fn client<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Option<Client>> {
        Box::pin(async move {
            let secrets = Api::<Secret>::namespaced(self.management.clone(), namespace);
            let secret = secrets.get_opt(&format!("{name}-kubeconfig")).await.ok()??;
            let value = secret.data?.get("value")?.0.clone();
            let kubeconfig = Kubeconfig::from_yaml(std::str::from_utf8(&value).ok()?).ok()?;
            let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .ok()?;
            Client::try_from(config).ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_pads_like_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
