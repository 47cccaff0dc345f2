//! Flags of `kubezero-provider run` beyond the ones every manager has, and the AWS client, launch
//! batching, Redfish client and host controller settings they describe.

use std::time::Duration;

use crate::aws::clients::AwsSettings;
use crate::aws::launcher::LauncherSettings;
use crate::controllers::host::HostSettings;
use crate::metal::redfish::RedfishSettings;

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

    /// Longest a batch of identical launches stays open while machines keep joining it (a lone
    /// launch goes out after 5 s without joins). Longer means fewer RunInstances calls when a
    /// MachineDeployment scales by hundreds (EC2 refills RunInstances tokens at 2 per second), at
    /// the cost of that much delay for its first machines.
    #[arg(long, default_value = "30s", value_parser = parse_launch_wait)]
    pub aws_launch_max_wait: Duration,

    /// Redfish requests in flight at once per BMC (`host:port`). BMCs are fragile: one at a time
    /// unless the hardware is known to take more.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub redfish_requests_per_bmc: u16,

    /// Attempts per Redfish request for 5xx answers, timeouts and connection failures (1 = no retry).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub redfish_max_attempts: u32,

    /// Timeout of one Redfish request (BMCs answer slowly; virtual media inserts download the image).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub redfish_request_timeout: Duration,

    /// How often the power state of a settled KubeZeroHost is read from its BMC (one request).
    #[arg(long, default_value = "60s", value_parser = parse_poll_interval)]
    pub host_poll_interval: Duration,

    /// Address the boot media server listens on (e.g. `0.0.0.0:8090`); unset: no media server.
    #[arg(long, env = "KUBEZERO_MEDIA_BIND_ADDRESS")]
    pub media_bind_address: Option<std::net::SocketAddr>,

    /// The URL BMCs and installers reach the media server at (e.g. `http://10.0.0.2:8090`).
    #[arg(long, env = "KUBEZERO_MEDIA_URL")]
    pub media_url: Option<String>,
}

/// A `--host-poll-interval` between 1 s and 1 h.
fn parse_poll_interval(value: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(value).map_err(|error| error.to_string())?;
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&interval) {
        return Err(format!("{value} is not between 1s and 1h"));
    }
    Ok(interval)
}

/// A `--aws-launch-max-wait` between 0.5 s and 2 min.
fn parse_launch_wait(value: &str) -> Result<Duration, String> {
    let wait = humantime::parse_duration(value).map_err(|error| error.to_string())?;
    if !(Duration::from_millis(500)..=Duration::from_secs(120)).contains(&wait) {
        return Err(format!("{value} is not between 500ms and 2m"));
    }
    Ok(wait)
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

    /// The Redfish client settings these flags describe.
    pub fn redfish_settings(&self) -> RedfishSettings {
        RedfishSettings {
            requests_per_bmc: usize::from(self.redfish_requests_per_bmc),
            max_attempts: self.redfish_max_attempts,
            request_timeout: self.redfish_request_timeout,
            ..RedfishSettings::default()
        }
    }

    /// The KubeZeroHost controller settings these flags describe.
    pub fn host_settings(&self) -> HostSettings {
        HostSettings {
            poll_interval: self.host_poll_interval,
        }
    }

    /// The launch batching these flags describe.
    pub fn launcher_settings(&self) -> LauncherSettings {
        LauncherSettings {
            max_launch_wait: self.aws_launch_max_wait,
            ..LauncherSettings::default()
        }
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
        assert_eq!(args.launcher_settings().max_launch_wait, Duration::from_secs(30));
        let quick = Cli::try_parse_from(["k", "--aws-launch-max-wait", "2s"])
            .unwrap()
            .args;
        assert_eq!(quick.launcher_settings().max_launch_wait, Duration::from_secs(2));
        assert!(Cli::try_parse_from(["k", "--aws-launch-max-wait", "100ms"]).is_err());
        assert!(Cli::try_parse_from(["k", "--aws-launch-max-wait", "5m"]).is_err());
        let redfish = Cli::try_parse_from(["k", "--redfish-requests-per-bmc", "2"])
            .unwrap()
            .args;
        let redfish = redfish.redfish_settings();
        assert_eq!((redfish.requests_per_bmc, redfish.max_attempts), (2, 3));
        assert_eq!(redfish.request_timeout, Duration::from_secs(60));
        assert!(Cli::try_parse_from(["k", "--redfish-requests-per-bmc", "0"]).is_err());
        assert_eq!(args.host_settings().poll_interval, Duration::from_secs(60));
        assert!(Cli::try_parse_from(["k", "--host-poll-interval", "0s"]).is_err());
        assert_eq!(args.media_bind_address, None);
        let media = Cli::try_parse_from(["k", "--media-bind-address", "127.0.0.1:8090"])
            .unwrap()
            .args;
        assert_eq!(media.media_bind_address, Some(([127, 0, 0, 1], 8090).into()));
        assert!(Cli::try_parse_from(["k", "--media-bind-address", "nowhere"]).is_err());
    }
}
