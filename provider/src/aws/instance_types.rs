//! What one EC2 instance type offers (CPUs, memory, NVIDIA GPUs, architecture), from
//! DescribeInstanceTypes, cached per (region, type): the KubeZeroMachineTemplate status the cluster
//! autoscaler reads to scale a MachineDeployment up from zero.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_ec2::types::{ArchitectureType, InstanceType, InstanceTypeInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubezero_capi::runtime::errors::ErrorClass;
use tokio::time::Instant;

use super::clients::AwsClients;
use super::errors::AwsError;
use super::limiter::Service::Ec2;
use crate::api::{NodeArchitecture, NodeInfo, OperatingSystem};

/// How long a described instance type is reused (instance types do not change).
pub const DEFAULT_TTL: Duration = Duration::from_secs(6 * 60 * 60);

/// Resource name of NVIDIA GPUs in a Node's capacity.
pub const NVIDIA_GPU: &str = "nvidia.com/gpu";

/// Errors of describing an instance type.
#[derive(Debug, thiserror::Error)]
pub enum InstanceTypeError {
    /// DescribeInstanceTypes failed.
    #[error("describing instance type {instance_type}: {source}")]
    Describe {
        /// The instance type.
        instance_type: String,
        /// The AWS error.
        source: AwsError,
    },
    /// The region does not offer the type.
    #[error("instance type {0} is not offered in this region")]
    Unknown(String),
}

impl InstanceTypeError {
    /// The error class the controller requeues by.
    pub fn class(&self) -> ErrorClass {
        match self {
            InstanceTypeError::Describe { source, .. } => source.class(),
            InstanceTypeError::Unknown(_) => ErrorClass::Invalid,
        }
    }
}

/// What one machine of an instance type offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceTypeSpec {
    /// The instance type, e.g. `m7g.large`.
    pub instance_type: String,
    /// Default vCPUs.
    pub vcpus: i32,
    /// Memory in MiB.
    pub memory_mib: i64,
    /// NVIDIA GPUs.
    pub nvidia_gpus: i32,
    /// CPU architecture, when it is one Kubernetes knows.
    pub architecture: Option<NodeArchitecture>,
}

impl InstanceTypeSpec {
    /// `status.capacity`: `cpu`, `memory` and, for GPU types, `nvidia.com/gpu`.
    pub fn capacity(&self) -> BTreeMap<String, Quantity> {
        let mut capacity = BTreeMap::from([
            ("cpu".to_owned(), Quantity(self.vcpus.to_string())),
            ("memory".to_owned(), Quantity(format!("{}Mi", self.memory_mib))),
        ]);
        if self.nvidia_gpus > 0 {
            capacity.insert(NVIDIA_GPU.to_owned(), Quantity(self.nvidia_gpus.to_string()));
        }
        capacity
    }

    /// `status.nodeInfo`: the architecture and Linux.
    pub fn node_info(&self) -> NodeInfo {
        NodeInfo {
            architecture: self.architecture,
            operating_system: Some(OperatingSystem::Linux),
        }
    }
}

/// Converts the SDK's description. Pure.
pub fn from_info(info: &InstanceTypeInfo) -> InstanceTypeSpec {
    let architectures = info
        .processor_info()
        .map(|p| p.supported_architectures())
        .unwrap_or_default();
    let architecture = if architectures.contains(&ArchitectureType::Arm64) {
        Some(NodeArchitecture::Arm64)
    } else if architectures.contains(&ArchitectureType::X8664) {
        Some(NodeArchitecture::Amd64)
    } else {
        None
    };
    let nvidia_gpus = info
        .gpu_info()
        .map(|gpu| {
            gpu.gpus()
                .iter()
                .filter(|d| d.manufacturer().is_some_and(|m| m.eq_ignore_ascii_case("nvidia")))
                .filter_map(|d| d.count())
                .sum()
        })
        .unwrap_or(0);
    InstanceTypeSpec {
        instance_type: info
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        vcpus: info.v_cpu_info().and_then(|v| v.default_v_cpus()).unwrap_or(0),
        memory_mib: info.memory_info().and_then(|m| m.size_in_mib()).unwrap_or(0),
        nvidia_gpus,
        architecture,
    }
}

/// Described instance types per (region, type), shared by the process.
#[derive(Debug)]
pub struct InstanceTypeCache {
    ttl: Duration,
    entries: Mutex<HashMap<(String, String), (Instant, InstanceTypeSpec)>>,
}

impl Default for InstanceTypeCache {
    fn default() -> Self {
        Self::new(DEFAULT_TTL)
    }
}

impl InstanceTypeCache {
    /// A cache keeping descriptions for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The description of `instance_type` in the clients' region (one DescribeInstanceTypes per
    /// type and TTL).
    #[tracing::instrument(skip(self, aws), fields(region = aws.region()))]
    pub async fn get(
        &self,
        aws: &AwsClients,
        instance_type: &str,
    ) -> Result<InstanceTypeSpec, InstanceTypeError> {
        let key = (aws.region().to_owned(), instance_type.to_owned());
        if let Some((at, spec)) = self.entries.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(spec.clone());
        }
        let out = aws
            .call(Ec2, "DescribeInstanceTypes", || {
                aws.ec2
                    .describe_instance_types()
                    .instance_types(InstanceType::from(instance_type))
                    .send()
            })
            .await;
        let out = match out {
            Ok(out) => out,
            Err(error) if error.is_unknown_instance_type() => {
                return Err(InstanceTypeError::Unknown(instance_type.to_owned()));
            }
            Err(source) => {
                return Err(InstanceTypeError::Describe {
                    instance_type: instance_type.to_owned(),
                    source,
                });
            }
        };
        let spec = out
            .instance_types()
            .iter()
            .find(|info| info.instance_type().map(InstanceType::as_str) == Some(instance_type))
            .map(from_info)
            .ok_or_else(|| InstanceTypeError::Unknown(instance_type.to_owned()))?;
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (Instant::now(), spec.clone()));
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{GpuDeviceInfo, GpuInfo, MemoryInfo, ProcessorInfo, VCpuInfo};

    use super::*;

    #[test]
    fn gpu_instance_type_becomes_autoscaler_capacity() {
        let info = InstanceTypeInfo::builder()
            .instance_type(InstanceType::from("g5g.xlarge"))
            .v_cpu_info(VCpuInfo::builder().default_v_cpus(4).build())
            .memory_info(MemoryInfo::builder().size_in_mib(8192).build())
            .processor_info(
                ProcessorInfo::builder()
                    .supported_architectures(ArchitectureType::Arm64)
                    .build(),
            )
            .gpu_info(
                GpuInfo::builder()
                    .gpus(GpuDeviceInfo::builder().manufacturer("NVIDIA").count(1).build())
                    .build(),
            )
            .build();
        let spec = from_info(&info);
        let capacity = spec.capacity();
        assert_eq!(capacity["cpu"], Quantity("4".into()));
        assert_eq!(capacity["memory"], Quantity("8192Mi".into()));
        assert_eq!(capacity[NVIDIA_GPU], Quantity("1".into()));
        assert_eq!(
            spec.node_info(),
            NodeInfo {
                architecture: Some(NodeArchitecture::Arm64),
                operating_system: Some(OperatingSystem::Linux)
            }
        );
    }

    #[test]
    fn cpu_only_x86_type_has_no_gpu_entry() {
        let info = InstanceTypeInfo::builder()
            .instance_type(InstanceType::from("m7i.large"))
            .v_cpu_info(VCpuInfo::builder().default_v_cpus(2).build())
            .memory_info(MemoryInfo::builder().size_in_mib(8192).build())
            .processor_info(
                ProcessorInfo::builder()
                    .supported_architectures(ArchitectureType::I386)
                    .supported_architectures(ArchitectureType::X8664)
                    .build(),
            )
            .build();
        let spec = from_info(&info);
        assert!(!spec.capacity().contains_key(NVIDIA_GPU));
        assert_eq!(spec.architecture, Some(NodeArchitecture::Amd64));
    }
}
