//! One AWS client set (EC2, ELBv2, IAM) and one [`Limiter`] per (credentials identity, region), kept in a
//! [`ClientRegistry`] shared by all clusters; [`AwsClients::call`] is the one door every request goes
//! through (rate tokens, retries of throttled and transient answers, error classification, call counts).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::Mutex as AsyncMutex;

use super::errors::AwsError;
use super::limiter::{Limiter, Service, draw_for};

/// Process-wide AWS settings (from flags or the environment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsSettings {
    /// Endpoint for every service (moto in tests). `None`: the SDK's own resolution, which also
    /// honours `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// Attempts per call for throttled or transient answers (1 = no retry).
    pub max_attempts: u32,
    /// First back-off after a transient failure; doubles per attempt.
    pub initial_backoff: Duration,
    /// Connect timeout of the HTTP client.
    pub connect_timeout: Duration,
    /// Timeout of one attempt of one call.
    pub attempt_timeout: Duration,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            endpoint_url: None,
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

/// Whose credentials sign the calls.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum AwsIdentity {
    /// The SDK's default chain: environment, web identity (IRSA / pod identity), profile, instance
    /// profile.
    DefaultChain,
    /// Static keys (e.g. from a credentials Secret).
    Static {
        /// Access key id; also the registry key of this identity.
        access_key_id: String,
        /// Secret access key (never logged).
        secret_access_key: String,
        /// Session token for temporary credentials.
        session_token: Option<String>,
    },
}

impl AwsIdentity {
    /// A name for logs and registry keys that holds no secret.
    pub fn key(&self) -> String {
        match self {
            AwsIdentity::DefaultChain => "default-chain".to_owned(),
            AwsIdentity::Static { access_key_id, .. } => format!("static:{access_key_id}"),
        }
    }
}

impl std::fmt::Debug for AwsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// Counts of calls per operation (attempts, including retries), for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct CallStats {
    calls: Mutex<BTreeMap<&'static str, u64>>,
}

impl CallStats {
    fn record(&self, operation: &'static str) {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        *calls.entry(operation).or_default() += 1;
    }

    /// Attempts per operation so far.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Attempts of all operations so far.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }
}

/// Labels of the `kubezero_aws_requests_total` counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsRequestLabels {
    /// Service endpoint prefix ([`Service::as_str`]).
    pub service: &'static str,
    /// Operation, e.g. `RunInstances`.
    pub operation: &'static str,
}

/// AWS requests sent (attempts, retries included) by service and operation, shared by every
/// client set of the process; the manager registers it as `kubezero_aws_requests_total`.
pub type AwsRequestCounter = Family<AwsRequestLabels, Counter>;

/// Name (under the `kubezero` prefix) and help of the [`AwsRequestCounter`] metric.
pub const AWS_REQUESTS_METRIC: (&str, &str) = (
    "aws_requests",
    "AWS API requests sent, retries included, by service and operation",
);

/// EC2, ELBv2 and IAM clients of one (identity, region), their shared limiter and call counters.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct AwsClients {
    /// EC2 client.
    pub(crate) ec2: aws_sdk_ec2::Client,
    /// Elastic Load Balancing v2 client.
    pub(crate) elbv2: aws_sdk_elasticloadbalancingv2::Client,
    /// IAM client.
    pub(crate) iam: aws_sdk_iam::Client,
    region: String,
    limiter: Arc<Limiter>,
    stats: Arc<CallStats>,
    requests: AwsRequestCounter,
    settings: Arc<AwsSettings>,
}

impl AwsClients {
    /// Builds a client set from loaded SDK configuration.
    pub fn from_sdk_config(
        config: &aws_config::SdkConfig,
        settings: AwsSettings,
        limiter: Arc<Limiter>,
    ) -> Self {
        Self {
            ec2: aws_sdk_ec2::Client::new(config),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(config),
            iam: aws_sdk_iam::Client::new(config),
            region: config.region().map(|r| r.to_string()).unwrap_or_default(),
            limiter,
            stats: Arc::default(),
            requests: AwsRequestCounter::default(),
            settings: Arc::new(settings),
        }
    }

    /// These clients counting their requests in `requests` too (the process-wide metric).
    pub fn with_request_counter(mut self, requests: AwsRequestCounter) -> Self {
        self.requests = requests;
        self
    }

    /// The region these clients talk to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The limiter shared by every user of this (identity, region).
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// Call counters of this (identity, region).
    pub fn stats(&self) -> &Arc<CallStats> {
        &self.stats
    }

    /// Sends one AWS request: takes rate tokens, sends, and on a throttled answer empties the
    /// bucket and tries again (also on transient failures, with back-off) up to
    /// [`AwsSettings::max_attempts`]. `send` builds and sends the request; it runs once per attempt.
    pub async fn call<T, E, F, Fut>(
        &self,
        service: Service,
        operation: &'static str,
        send: F,
    ) -> Result<T, AwsError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        self.call_weighted(service, operation, 0, send).await
    }

    /// [`AwsClients::call`] for calls that launch or stop `instances` instances (resource buckets).
    pub async fn call_weighted<T, E, F, Fut>(
        &self,
        service: Service,
        operation: &'static str,
        instances: u32,
        send: F,
    ) -> Result<T, AwsError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let draw = draw_for(service, operation, instances);
        let mut attempt = 1;
        loop {
            self.limiter.acquire(draw).await;
            self.stats.record(operation);
            self.requests
                .get_or_create(&AwsRequestLabels {
                    service: service.as_str(),
                    operation,
                })
                .inc();
            let error = match send().await {
                Ok(output) => return Ok(output),
                Err(error) => AwsError::from_sdk(operation, &error),
            };
            if error.is_throttled() {
                self.limiter.drain(draw);
            }
            // A 5xx may come after AWS acted: a create without a ClientToken is not sent again here,
            // the caller's next pass looks the resource up by its tags first.
            let unsafe_to_repeat = !error.is_throttled() && !repeatable_after_unknown_outcome(operation);
            if !error.kind.is_retryable() || unsafe_to_repeat || attempt >= self.settings.max_attempts {
                tracing::debug!(operation, code = %error.code, kind = ?error.kind, "AWS call failed");
                return Err(error);
            }
            if !error.is_throttled() {
                // Throttled calls wait in the emptied bucket; transient ones back off.
                tokio::time::sleep(self.settings.initial_backoff * 2u32.pow(attempt - 1)).await;
            }
            tracing::debug!(operation, code = %error.code, attempt, "retrying AWS call");
            attempt += 1;
        }
    }
}

/// Creates that AWS may have carried out although the answer was a 5xx, and that have no ClientToken
/// or unique name to make a second request harmless: repeating them could make a duplicate.
pub const NOT_REPEATABLE_AFTER_UNKNOWN_OUTCOME: [&str; 5] = [
    "CreateVpc",
    "CreateSubnet",
    "CreateInternetGateway",
    "CreateRouteTable",
    "AllocateAddress",
];

/// Whether `operation` may be sent again after an answer that leaves its outcome unknown (5xx,
/// timeout). Throttled answers are always repeatable: AWS refused them before acting.
pub fn repeatable_after_unknown_outcome(operation: &str) -> bool {
    !NOT_REPEATABLE_AFTER_UNKNOWN_OUTCOME.contains(&operation)
}

/// Errors of building a client set.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The region name is empty.
    #[error("no AWS region given")]
    NoRegion,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClientKey {
    identity: AwsIdentity,
    region: String,
}

/// The process-wide cache of client sets, one per (identity, region), shared by all clusters.
#[derive(Debug)]
pub struct ClientRegistry {
    settings: AwsSettings,
    requests: AwsRequestCounter,
    clients: AsyncMutex<HashMap<ClientKey, AwsClients>>,
}

impl ClientRegistry {
    /// An empty registry with these settings.
    pub fn new(settings: AwsSettings) -> Self {
        Self {
            settings,
            requests: AwsRequestCounter::default(),
            clients: AsyncMutex::new(HashMap::new()),
        }
    }

    /// The settings the clients are built with.
    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// The request counter of every client set of this registry, to register as a metric.
    pub fn request_counter(&self) -> &AwsRequestCounter {
        &self.requests
    }

    /// The client set of (`identity`, `region`), built on first use and shared afterwards.
    #[tracing::instrument(skip(self, identity), fields(identity = %identity.key()))]
    pub async fn clients(&self, identity: &AwsIdentity, region: &str) -> Result<AwsClients, ClientError> {
        if region.is_empty() {
            return Err(ClientError::NoRegion);
        }
        let key = ClientKey {
            identity: identity.clone(),
            region: region.to_owned(),
        };
        let mut clients = self.clients.lock().await;
        if let Some(existing) = clients.get(&key) {
            return Ok(existing.clone());
        }
        let config = self.load_config(identity, region).await;
        let created = AwsClients::from_sdk_config(&config, self.settings.clone(), Arc::new(Limiter::new()))
            .with_request_counter(self.requests.clone());
        tracing::info!(region, "created AWS client set");
        clients.insert(key, created.clone());
        Ok(created)
    }

    /// Number of client sets built so far.
    pub async fn len(&self) -> usize {
        self.clients.lock().await.len()
    }

    /// Whether no client set was built yet.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    async fn load_config(&self, identity: &AwsIdentity, region: &str) -> aws_config::SdkConfig {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.settings.connect_timeout)
            .operation_attempt_timeout(self.settings.attempt_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            // Retries happen in `AwsClients::call`, where each attempt draws rate tokens.
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(endpoint_url) = &self.settings.endpoint_url {
            loader = loader.endpoint_url(endpoint_url);
        }
        if let AwsIdentity::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } = identity
        {
            loader = loader.credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                session_token.clone(),
                None,
                "kubezero-static",
            ));
        }
        loader.load().await
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn creates_without_a_client_token_are_not_repeated_after_an_unknown_outcome() {
        for operation in NOT_REPEATABLE_AFTER_UNKNOWN_OUTCOME {
            assert!(!repeatable_after_unknown_outcome(operation), "{operation}");
        }
        for operation in [
            "DescribeVpcs",
            "RunInstances",
            "CreateNatGateway",
            "DeleteSubnet",
            "CreateTags",
        ] {
            assert!(repeatable_after_unknown_outcome(operation), "{operation}");
        }
    }

    use super::*;

    fn static_identity(key: &str) -> AwsIdentity {
        AwsIdentity::Static {
            access_key_id: key.to_owned(),
            secret_access_key: "secret".to_owned(),
            session_token: None,
        }
    }

    #[tokio::test]
    async fn one_client_set_per_identity_and_region() {
        let registry = ClientRegistry::new(AwsSettings {
            endpoint_url: Some("http://127.0.0.1:9".to_owned()),
            ..AwsSettings::default()
        });
        let clients =
            async |key: &str, region: &str| registry.clients(&static_identity(key), region).await.unwrap();
        let a = clients("A", "eu-central-1").await;
        let again = clients("A", "eu-central-1").await;
        assert!(Arc::ptr_eq(a.limiter(), again.limiter()), "shared limiter");
        let other_region = clients("A", "us-east-1").await;
        let other_identity = clients("B", "eu-central-1").await;
        assert!(!Arc::ptr_eq(a.limiter(), other_region.limiter()));
        assert!(!Arc::ptr_eq(a.limiter(), other_identity.limiter()));
        assert_eq!(registry.len().await, 3);
        assert_eq!(a.region(), "eu-central-1");
        assert!(registry.clients(&static_identity("A"), "").await.is_err());
    }

    #[test]
    fn identities_never_print_secrets() {
        let identity = static_identity("AKIAEXAMPLE");
        assert_eq!(format!("{identity:?}"), "static:AKIAEXAMPLE");
        assert!(!format!("{identity:?}").contains("secret"));
    }
}
