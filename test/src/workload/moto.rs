//! [`MotoInstances`]: the EC2 instances of a workload cluster, from moto's EC2 Query API.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::nodes::{Instance, InstanceSource, SourceError};
use crate::cloud::Moto;

/// At most this many `DescribeInstances` pages per poll.
const MAX_PAGES: usize = 50;
/// Provider IDs of EC2 instances (the AWS cloud-controller-manager's format).
const AWS_PREFIX: &str = "aws:///";

/// The running EC2 instances tagged `kubernetes.io/cluster/<cluster>=owned` (the tag the AWS backend
/// puts on the instances it creates, design.md §5), from `DescribeInstances` on a [`Moto`] server,
/// as [`Instance`]s with provider ID `aws:///<availability-zone>/<instance-id>`, node name = private
/// DNS name, addresses `InternalIP`, `ExternalIP`, `InternalDNS`, `ExternalDNS`, `Hostname`, and the
/// labels kubelet and the AWS cloud-controller-manager set (`kubernetes.io/os`, `kubernetes.io/arch`,
/// `node.kubernetes.io/instance-type`, `topology.kubernetes.io/zone` and `region`).
///
/// Calls go over [`crate::cloud::http`] (form POST with a dummy SigV4 `Authorization` header naming
/// `ec2`, which moto routes on without checking the signature) on the blocking thread pool.
#[derive(Clone)]
pub struct MotoInstances {
    addr: SocketAddr,
    region: String,
    access_key_id: String,
    /// Reads each Cluster's region from its KubeZeroCluster (`spec.aws.region`) when set.
    management: Option<kube::Client>,
}

impl std::fmt::Debug for MotoInstances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotoInstances")
            .field("addr", &self.addr)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl MotoInstances {
    /// Reads instances from `moto` in its default region, with its dummy credentials.
    pub fn new(moto: &Moto) -> MotoInstances {
        MotoInstances {
            addr: moto.addr(),
            region: moto.region().to_string(),
            access_key_id: moto.access_key_id().to_string(),
            management: None,
        }
    }

    /// Like [`MotoInstances::new`], reading each cluster's instances in the region of its
    /// KubeZeroCluster (the Cluster's `spec.infrastructureRef`) through `management`.
    pub fn in_cluster_regions(moto: &Moto, management: kube::Client) -> MotoInstances {
        MotoInstances {
            management: Some(management),
            ..Self::new(moto)
        }
    }

    /// The region of Cluster `namespace/name`: its KubeZeroCluster's `spec.aws.region`, else the default.
    async fn region_of(&self, namespace: &str, name: &str) -> String {
        let Some(client) = &self.management else {
            return self.region.clone();
        };
        let clusters: kube::Api<kubezero_capi::core::Cluster> =
            kube::Api::namespaced(client.clone(), namespace);
        let infra_name = match clusters.get_opt(name).await {
            Ok(Some(cluster)) => cluster.spec.infrastructure_ref.map(|r| r.name),
            _ => None,
        };
        let infra_clusters: kube::Api<kubezero_provider::api::KubeZeroCluster> =
            kube::Api::namespaced(client.clone(), namespace);
        let region = match infra_name {
            Some(infra_name) => infra_clusters
                .get_opt(&infra_name)
                .await
                .ok()
                .flatten()
                .and_then(|infra| infra.spec.aws.map(|aws| aws.region)),
            None => None,
        };
        region
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| self.region.clone())
    }

    /// The running instances of `cluster` in `moto`'s default region (blocking).
    pub fn running(&self, cluster: &str) -> Result<Vec<Instance>, SourceError> {
        self.running_in(cluster, &self.region)
    }

    /// The running instances of `cluster` in `region` (blocking).
    pub fn running_in(&self, cluster: &str, region: &str) -> Result<Vec<Instance>, SourceError> {
        let tag = format!("tag:kubernetes.io/cluster/{cluster}");
        let mut instances = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut form = format!(
                "Action=DescribeInstances&Filter.1.Name={}&Filter.1.Value.1=owned",
                form_encode(&tag)
            );
            if let Some(token) = &token {
                form.push_str(&format!("&NextToken={}", form_encode(token)));
            }
            let page = parse_describe_instances(&self.post(region, &form)?)?;
            instances.extend(
                page.instances
                    .into_iter()
                    .filter(|i| i.state == "running")
                    .map(|i| i.into_instance(region)),
            );
            match page.next_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(instances),
            }
        }
        Err(format!("DescribeInstances returned more than {MAX_PAGES} pages").into())
    }

    fn post(&self, region: &str, form: &str) -> Result<String, SourceError> {
        let response = crate::cloud::ec2_query(self.addr, region, &self.access_key_id, form)?;
        if response.status != 200 {
            return Err(format!(
                "DescribeInstances: status {}: {}",
                response.status,
                response.text()
            )
            .into());
        }
        Ok(response.text())
    }
}

impl InstanceSource for MotoInstances {
    fn instances<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Instance>, SourceError>> {
        let this = self.clone();
        let cluster = name.to_string();
        Box::pin(async move {
            let region = this.region_of(namespace, &cluster).await;
            tokio::task::spawn_blocking(move || this.running_in(&cluster, &region))
                .await
                .map_err(|e| -> SourceError { Box::new(e) })?
        })
    }

    fn owns(&self, provider_id: &str) -> bool {
        provider_id.starts_with(AWS_PREFIX)
    }
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 3986 unreserved bytes kept).
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One page of a `DescribeInstancesResponse`.
#[derive(Debug, Default, PartialEq)]
struct Page {
    instances: Vec<Ec2Instance>,
    next_token: Option<String>,
}

/// The fields of an EC2 instance the simulator uses.
#[derive(Debug, Default, PartialEq)]
struct Ec2Instance {
    id: String,
    zone: String,
    state: String,
    instance_type: String,
    architecture: String,
    private_ip: String,
    public_ip: String,
    private_dns: String,
    public_dns: String,
}

impl Ec2Instance {
    fn into_instance(self, region: &str) -> Instance {
        let node_name = if self.private_dns.is_empty() {
            self.id.clone()
        } else {
            self.private_dns.clone()
        };
        let mut addresses = Vec::new();
        let mut push = |type_: &str, value: &str| {
            if !value.is_empty() {
                addresses.push((type_.to_string(), value.to_string()));
            }
        };
        push("InternalIP", &self.private_ip);
        push("ExternalIP", &self.public_ip);
        push("InternalDNS", &self.private_dns);
        push("ExternalDNS", &self.public_dns);
        push("Hostname", &node_name);
        let mut labels = BTreeMap::from([("kubernetes.io/os".to_string(), "linux".to_string())]);
        let mut label = |key: &str, value: &str| {
            if !value.is_empty() {
                labels.insert(key.to_string(), value.to_string());
            }
        };
        let arch = match self.architecture.as_str() {
            "x86_64" => "amd64",
            other => other,
        };
        label("kubernetes.io/arch", arch);
        label("node.kubernetes.io/instance-type", &self.instance_type);
        label("topology.kubernetes.io/zone", &self.zone);
        label("topology.kubernetes.io/region", region);
        Instance {
            provider_id: format!("{AWS_PREFIX}{}/{}", self.zone, self.id),
            node_name,
            addresses,
            labels,
        }
    }
}

/// Parses a `DescribeInstancesResponse` (EC2 Query API XML, `2016-11-15`).
fn parse_describe_instances(xml: &str) -> Result<Page, SourceError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Response {
        reservation_set: Option<Items<Reservation>>,
        next_token: Option<String>,
    }
    #[derive(Deserialize)]
    struct Items<T> {
        #[serde(default = "Vec::new")]
        item: Vec<T>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Reservation {
        instances_set: Option<Items<Raw>>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw {
        instance_id: String,
        placement: Option<Placement>,
        instance_state: Option<State>,
        instance_type: Option<String>,
        architecture: Option<String>,
        private_ip_address: Option<String>,
        ip_address: Option<String>,
        private_dns_name: Option<String>,
        dns_name: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Placement {
        availability_zone: Option<String>,
    }
    #[derive(Deserialize)]
    struct State {
        name: Option<String>,
    }

    let response: Response = quick_xml::de::from_str(xml)
        .map_err(|e| format!("DescribeInstances response: {e}: {}", truncate(xml)))?;
    let instances = response
        .reservation_set
        .into_iter()
        .flat_map(|set| set.item)
        .flat_map(|reservation| reservation.instances_set.into_iter().flat_map(|set| set.item))
        .map(|raw| Ec2Instance {
            id: raw.instance_id,
            zone: raw
                .placement
                .and_then(|p| p.availability_zone)
                .unwrap_or_default(),
            state: raw.instance_state.and_then(|s| s.name).unwrap_or_default(),
            instance_type: raw.instance_type.unwrap_or_default(),
            architecture: raw.architecture.unwrap_or_default(),
            private_ip: raw.private_ip_address.unwrap_or_default(),
            public_ip: raw.ip_address.unwrap_or_default(),
            private_dns: raw.private_dns_name.unwrap_or_default(),
            public_dns: raw.dns_name.unwrap_or_default(),
        })
        .collect();
    Ok(Page {
        instances,
        next_token: response.next_token.filter(|t| !t.is_empty()),
    })
}

fn truncate(text: &str) -> &str {
    let end = text.char_indices().nth(500).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real moto 5.2 `DescribeInstances` answer (two reservations, tags, an empty
    /// public DNS name, a terminated instance).
    const RESPONSE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>fdcdcab1-ae5c-489e-9c33-4637c5dda355</requestId>
  <reservationSet>
    <item>
      <reservationId>r-1</reservationId>
      <instancesSet>
        <item>
          <instanceId>i-0aaa</instanceId>
          <imageId>ami-0a19e00000000222a</imageId>
          <instanceState><code>16</code><name>running</name></instanceState>
          <privateDnsName>ip-10-0-0-5.ec2.internal</privateDnsName>
          <dnsName></dnsName>
          <instanceType>t3.small</instanceType>
          <placement><availabilityZone>us-east-1a</availabilityZone><tenancy>default</tenancy></placement>
          <privateIpAddress>10.0.0.5</privateIpAddress>
          <ipAddress>54.1.2.3</ipAddress>
          <architecture>x86_64</architecture>
          <tagSet>
            <item><key>kubernetes.io/cluster/demo</key><value>owned</value></item>
            <item><key>Name</key><value>demo &amp; co</value></item>
          </tagSet>
        </item>
      </instancesSet>
    </item>
    <item>
      <reservationId>r-2</reservationId>
      <instancesSet>
        <item>
          <instanceId>i-0bbb</instanceId>
          <instanceState><code>48</code><name>terminated</name></instanceState>
          <placement><availabilityZone>us-east-1b</availabilityZone></placement>
          <privateDnsName/>
          <architecture>arm64</architecture>
        </item>
      </instancesSet>
    </item>
  </reservationSet>
  <nextToken>abc</nextToken>
</DescribeInstancesResponse>"#;

    #[test]
    fn parses_instances_of_every_reservation_and_the_next_token() {
        let page = parse_describe_instances(RESPONSE).unwrap();
        assert_eq!(page.next_token.as_deref(), Some("abc"));
        assert_eq!(page.instances.len(), 2);
        let first = &page.instances[0];
        assert_eq!(
            first,
            &Ec2Instance {
                id: "i-0aaa".into(),
                zone: "us-east-1a".into(),
                state: "running".into(),
                instance_type: "t3.small".into(),
                architecture: "x86_64".into(),
                private_ip: "10.0.0.5".into(),
                public_ip: "54.1.2.3".into(),
                private_dns: "ip-10-0-0-5.ec2.internal".into(),
                public_dns: String::new(),
            }
        );
        assert_eq!(page.instances[1].state, "terminated");
        assert_eq!(page.instances[1].private_dns, "");
    }

    #[test]
    fn parses_an_empty_answer() {
        let xml = r#"<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
            <requestId>x</requestId><reservationSet/></DescribeInstancesResponse>"#;
        assert_eq!(parse_describe_instances(xml).unwrap(), Page::default());
        assert!(parse_describe_instances("<Response><Errors>").is_err());
    }

    #[test]
    fn instance_maps_to_the_aws_provider_id_addresses_and_labels() {
        let page = parse_describe_instances(RESPONSE).unwrap();
        let instance = page
            .instances
            .into_iter()
            .next()
            .unwrap()
            .into_instance("us-east-1");
        assert_eq!(instance.provider_id, "aws:///us-east-1a/i-0aaa");
        assert_eq!(instance.node_name, "ip-10-0-0-5.ec2.internal");
        let types: Vec<&str> = instance.addresses.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(types, ["InternalIP", "ExternalIP", "InternalDNS", "Hostname"]);
        assert_eq!(instance.labels["kubernetes.io/arch"], "amd64");
        assert_eq!(instance.labels["topology.kubernetes.io/zone"], "us-east-1a");
        assert_eq!(instance.labels["node.kubernetes.io/instance-type"], "t3.small");
    }

    #[test]
    fn form_encoding_escapes_reserved_bytes() {
        assert_eq!(
            form_encode("tag:kubernetes.io/cluster/demo"),
            "tag%3Akubernetes.io%2Fcluster%2Fdemo"
        );
    }
}
