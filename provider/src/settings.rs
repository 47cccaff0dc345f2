//! Flags of `kubezero-provider run` beyond the ones every manager has, and the backends built from
//! them once per process and shared by all controllers.

use std::sync::Arc;
use std::time::Duration;

use crate::aws::clients::{AwsSettings, ClientRegistry};

/// Flags of the infrastructure provider's `run`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ProviderArgs {
    /// Endpoint for every AWS service (a moto server in tests); default: the SDK's own resolution,
    /// which also honours `AWS_ENDPOINT_URL`.
    #[arg(long, env = "KUBEZERO_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,

    /// Attempts per AWS call for throttled or transient answers (1 = no retry).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub aws_max_attempts: u32,

    /// Timeout of one attempt of one AWS call.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub aws_call_timeout: Duration,
}

impl ProviderArgs {
    /// The AWS client settings these flags describe.
    pub fn aws_settings(&self) -> AwsSettings {
        AwsSettings {
            endpoint_url: self.aws_endpoint_url.clone().filter(|url| !url.is_empty()),
            max_attempts: self.aws_max_attempts,
            attempt_timeout: self.aws_call_timeout,
            ..AwsSettings::default()
        }
    }
}

/// The platform backends of one provider process, shared by every controller.
#[derive(Debug)]
pub struct Backends {
    /// AWS client sets per (credentials, region).
    pub aws: ClientRegistry,
}

impl Backends {
    /// The backends for `args`.
    pub fn new(args: &ProviderArgs) -> Arc<Self> {
        Arc::new(Self {
            aws: ClientRegistry::new(args.aws_settings()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProviderArgs,
    }

    #[test]
    fn flags_become_aws_settings() {
        let args = Cli::try_parse_from(["k", "--aws-endpoint-url", "http://127.0.0.1:5000"])
            .unwrap()
            .args;
        let settings = args.aws_settings();
        assert_eq!(settings.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(settings.max_attempts, 3);
        assert_eq!(settings.attempt_timeout, Duration::from_secs(30));
        assert!(Cli::try_parse_from(["k", "--aws-max-attempts", "0"]).is_err());
    }
}
