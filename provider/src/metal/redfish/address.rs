//! The BMC address forms a KubeZeroHost accepts (`spec.bmc.address`) and what they mean:
//!
//! - `https://host[:port]` or `http://host[:port]`: the Redfish service root is `/redfish/v1`;
//! - `redfish://…` (HTTPS), `redfish+https://…`, `redfish+http://…` and the same with
//!   `redfish-virtualmedia` (the boot method is always virtual media here, so both prefixes mean
//!   the same);
//! - an optional path: none, `/`, `/redfish/v1[/]` (the BMC must then manage exactly one system),
//!   or `/redfish/v1/Systems/<id>` naming the system.

use reqwest::Url;

use super::errors::{RedfishError, RedfishErrorKind};

/// The service root path every Redfish BMC serves.
pub const SERVICE_ROOT: &str = "/redfish/v1";

/// A parsed BMC address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BmcAddress {
    /// `scheme://host:port`, without a path.
    pub base: Url,
    /// `host:port`: identifies the BMC (one request queue per BMC).
    pub authority: String,
    /// The system's path (`/redfish/v1/Systems/<id>`) when the address names one.
    pub system_path: Option<String>,
}

impl BmcAddress {
    /// Parses `address` in one of the accepted forms.
    pub fn parse(address: &str) -> Result<Self, RedfishError> {
        let invalid =
            |detail: String| RedfishError::new(RedfishErrorKind::Address, "ParseAddress", address, detail);
        let (prefix, rest) = address.split_once("://").ok_or_else(|| {
            invalid("missing scheme (expected https://, http:// or redfish[+http|+https]://)".into())
        })?;
        let scheme = match prefix {
            "https" | "redfish" | "redfish+https" | "redfish-virtualmedia" | "redfish-virtualmedia+https" => {
                "https"
            }
            "http" | "redfish+http" | "redfish-virtualmedia+http" => "http",
            other => return Err(invalid(format!("unsupported scheme {other:?}"))),
        };
        let url = Url::parse(&format!("{scheme}://{rest}")).map_err(|error| invalid(error.to_string()))?;
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or_else(|| invalid("no host".into()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials belong in the BMC Secret, not in the address".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a query or fragment is not allowed".into()));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        // `host_str` keeps the brackets of an IPv6 address.
        let authority = format!("{host}:{port}");
        let path = url.path().trim_end_matches('/');
        let system_path = match path {
            "" | SERVICE_ROOT => None,
            path => match path.strip_prefix("/redfish/v1/Systems/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Some(path.to_string()),
                _ => return Err(invalid(format!("path {path:?} is not /redfish/v1/Systems/<id>"))),
            },
        };
        let mut base = url.clone();
        base.set_path("");
        Ok(Self {
            base,
            authority,
            system_path,
        })
    }

    /// The URL of `path` (absolute, as Redfish links are) on this BMC.
    pub fn url(&self, path: &str) -> Result<Url, RedfishError> {
        self.base.join(path).map_err(|error| {
            RedfishError::new(
                RedfishErrorKind::Protocol,
                "Link",
                &self.authority,
                format!("{path}: {error}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(address: &str) -> BmcAddress {
        BmcAddress::parse(address).unwrap_or_else(|error| panic!("{address}: {error}"))
    }

    #[test]
    fn accepted_forms() {
        let plain = parse("https://10.0.0.5");
        assert_eq!(plain.base.as_str(), "https://10.0.0.5/");
        assert_eq!(plain.authority, "10.0.0.5:443");
        assert_eq!(plain.system_path, None);

        let named = parse("redfish+http://127.0.0.1:8000/redfish/v1/Systems/abc-1");
        assert_eq!(named.base.as_str(), "http://127.0.0.1:8000/");
        assert_eq!(named.authority, "127.0.0.1:8000");
        assert_eq!(named.system_path.as_deref(), Some("/redfish/v1/Systems/abc-1"));

        assert_eq!(
            parse("redfish://bmc.example.com/redfish/v1/").base.scheme(),
            "https"
        );
        assert_eq!(parse("redfish-virtualmedia://bmc:8443/").authority, "bmc:8443");
        assert_eq!(parse("redfish-virtualmedia+http://bmc").authority, "bmc:80");
        assert_eq!(
            parse("https://[fd00::5]:8443/redfish/v1/Systems/1").authority,
            "[fd00::5]:8443"
        );
        assert_eq!(
            parse("https://bmc/redfish/v1/Systems/1")
                .url("/redfish/v1/Systems/1/EthernetInterfaces")
                .unwrap()
                .as_str(),
            "https://bmc/redfish/v1/Systems/1/EthernetInterfaces"
        );
    }

    #[test]
    fn rejected_forms() {
        for address in [
            "10.0.0.5",
            "ipmi://10.0.0.5",
            "https://",
            "https://user:pw@bmc",
            "https://bmc/redfish/v1/Managers/1",
            "https://bmc/redfish/v1/Systems/",
            "https://bmc/redfish/v1/Systems/1/Bios",
            "https://bmc/?x=1",
        ] {
            let error = BmcAddress::parse(address).expect_err(address);
            assert_eq!(error.kind, RedfishErrorKind::Address, "{address}");
            assert_eq!(error.reason(), "InvalidBMCAddress");
        }
    }
}
