//! The image a machine boots: an AMI id as given, or the newest official Alpine Linux image for a
//! release, architecture and variant (`tiny` or `cloudinit`), found by owner and name pattern and
//! cached per (region, lookup) so a scale-up of a MachineDeployment costs one DescribeImages.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_ec2::types::Image;
use kubezero_capi::runtime::errors::ErrorClass;
use tokio::time::Instant;

use super::clients::AwsClients;
use super::errors::AwsError;
use super::limiter::Service::Ec2;
use super::tags::filter;
use crate::api::aws::{AmiArchitecture, AmiVariant, AwsAmi, AwsAmiLookup};

/// How long a looked-up image id is reused before asking EC2 again.
pub const DEFAULT_LOOKUP_TTL: Duration = Duration::from_secs(15 * 60);

/// Errors of finding a machine's image.
#[derive(Debug, thiserror::Error)]
pub enum AmiError {
    /// DescribeImages failed.
    #[error("looking up Alpine images named {pattern} of owner {owner}: {source}")]
    Describe {
        /// The name pattern searched.
        pattern: String,
        /// The owner account searched.
        owner: String,
        /// The AWS error.
        source: AwsError,
    },
    /// No available image matches the lookup.
    #[error("no available Alpine image named {pattern} of owner {owner}")]
    NoImage {
        /// The name pattern searched.
        pattern: String,
        /// The owner account searched.
        owner: String,
    },
    /// The AMI id given does not exist or is not available to the account.
    #[error("AMI {0} does not exist or is not available")]
    UnknownId(String),
    /// DescribeImages of a given id failed.
    #[error("describing AMI {id}: {source}")]
    DescribeId {
        /// The AMI id.
        id: String,
        /// The AWS error.
        source: AwsError,
    },
    /// The spec names neither an id nor a lookup (the CRD refuses this; kept for typed callers).
    #[error("spec.aws.ami sets neither id nor lookup")]
    Unspecified,
}

impl AmiError {
    /// The error class the controller requeues by.
    pub fn class(&self) -> ErrorClass {
        match self {
            AmiError::Describe { source, .. } | AmiError::DescribeId { source, .. } => source.class(),
            AmiError::NoImage { .. } | AmiError::UnknownId(_) | AmiError::Unspecified => ErrorClass::Invalid,
        }
    }
}

/// One image as the lookup sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageCandidate {
    /// AMI id.
    pub id: String,
    /// Image name, e.g. `alpine-3.22.2-x86_64-uefi-tiny-r0`.
    pub name: String,
    /// Creation date as EC2 reports it (ISO 8601, sorts lexically).
    pub creation_date: String,
    /// Device name of the root volume, e.g. `/dev/xvda`.
    pub root_device_name: String,
}

/// The image a machine boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedImage {
    /// AMI id.
    pub id: String,
    /// Device name of the root volume (the root volume settings are attached to it).
    pub root_device_name: String,
}

/// Root device of images that do not report one (Alpine's images use this).
pub const DEFAULT_ROOT_DEVICE: &str = "/dev/xvda";

/// Alpine's architecture name in image names.
fn alpine_arch(architecture: AmiArchitecture) -> &'static str {
    match architecture {
        AmiArchitecture::X86_64 => "x86_64",
        AmiArchitecture::Aarch64 => "aarch64",
    }
}

/// EC2's architecture name (the `architecture` filter).
fn ec2_arch(architecture: AmiArchitecture) -> &'static str {
    match architecture {
        AmiArchitecture::X86_64 => "x86_64",
        AmiArchitecture::Aarch64 => "arm64",
    }
}

fn variant_name(variant: AmiVariant) -> &'static str {
    match variant {
        AmiVariant::Tiny => "tiny",
        AmiVariant::Cloudinit => "cloudinit",
    }
}

/// The DescribeImages name pattern of a lookup: `alpine-<release>.*-<arch>-*-<variant>-r*`.
pub fn name_pattern(lookup: &AwsAmiLookup) -> String {
    format!(
        "alpine-{}.*-{}-*-{}-r*",
        lookup.release(),
        alpine_arch(lookup.architecture),
        variant_name(lookup.variant)
    )
}

/// Parsed `alpine-<major>.<minor>.<patch>-<arch>-<firmware>-<variant>-r<revision>`; `None` when the
/// name is not exactly of that shape for this lookup (the pattern is a prefilter only).
fn parse_name(name: &str, lookup: &AwsAmiLookup) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("alpine-")?;
    let rest = rest.strip_prefix(lookup.release())?;
    let rest = rest.strip_prefix('.')?;
    let (patch, rest) = rest.split_once('-')?;
    let patch: u32 = patch.parse().ok()?;
    let rest = rest.strip_prefix(alpine_arch(lookup.architecture))?;
    let rest = rest.strip_prefix('-')?;
    let (_firmware, rest) = rest.split_once('-')?;
    let rest = rest.strip_prefix(variant_name(lookup.variant))?;
    let revision: u32 = rest.strip_prefix("-r")?.parse().ok()?;
    Some((patch, revision))
}

/// The newest candidate matching `lookup`: latest creation date, then highest patch release, then
/// highest revision. Pure.
pub fn newest<'a>(candidates: &'a [ImageCandidate], lookup: &AwsAmiLookup) -> Option<&'a ImageCandidate> {
    candidates
        .iter()
        .filter_map(|c| parse_name(&c.name, lookup).map(|version| (c, version)))
        .max_by(|(a, va), (b, vb)| {
            a.creation_date
                .cmp(&b.creation_date)
                .then(va.cmp(vb))
                .then(a.name.cmp(&b.name))
        })
        .map(|(c, _)| c)
}

fn candidate(image: &Image) -> Option<ImageCandidate> {
    Some(ImageCandidate {
        id: image.image_id()?.to_owned(),
        name: image.name()?.to_owned(),
        creation_date: image.creation_date().unwrap_or_default().to_owned(),
        root_device_name: image.root_device_name().unwrap_or(DEFAULT_ROOT_DEVICE).to_owned(),
    })
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum CacheKey {
    Id {
        region: String,
        id: String,
    },
    Lookup {
        region: String,
        lookup: (String, &'static str, &'static str, String),
    },
}

/// Resolves [`AwsAmi`]s to image ids, caching lookups per (region, lookup) for a TTL. Shared by all
/// machines of the process.
#[derive(Debug)]
pub struct AmiResolver {
    ttl: Duration,
    cache: Mutex<HashMap<CacheKey, (Instant, ResolvedImage)>>,
}

impl Default for AmiResolver {
    fn default() -> Self {
        Self::new(DEFAULT_LOOKUP_TTL)
    }
}

impl AmiResolver {
    /// A resolver reusing lookups for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The image of `ami`: the given id (described once per TTL for its root device; an unknown
    /// id is an [`AmiError::UnknownId`]), or the newest Alpine image of the lookup.
    pub async fn resolve(&self, aws: &AwsClients, ami: &AwsAmi) -> Result<ResolvedImage, AmiError> {
        let region = aws.region().to_owned();
        let key = match (&ami.id, &ami.lookup) {
            (Some(id), _) => CacheKey::Id {
                region,
                id: id.clone(),
            },
            (None, Some(lookup)) => CacheKey::Lookup {
                region,
                lookup: (
                    lookup.release().to_owned(),
                    alpine_arch(lookup.architecture),
                    variant_name(lookup.variant),
                    lookup.owner.clone(),
                ),
            },
            (None, None) => return Err(AmiError::Unspecified),
        };
        if let Some(image) = self.cached(&key) {
            return Ok(image);
        }
        let image = match (&ami.id, &ami.lookup) {
            (Some(id), _) => describe_image(aws, id).await?,
            (None, Some(lookup)) => lookup_image(aws, lookup).await?,
            (None, None) => return Err(AmiError::Unspecified),
        };
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (Instant::now(), image.clone()));
        Ok(image)
    }

    fn cached(&self, key: &CacheKey) -> Option<ResolvedImage> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, image)| image.clone())
    }
}

/// Describes the image `id`.
#[tracing::instrument(skip(aws))]
pub async fn describe_image(aws: &AwsClients, id: &str) -> Result<ResolvedImage, AmiError> {
    let out = aws
        .call(Ec2, "DescribeImages", || {
            aws.ec2.describe_images().image_ids(id).send()
        })
        .await;
    let out = match out {
        Ok(out) => out,
        Err(error) if error.is_unknown_image() => {
            return Err(AmiError::UnknownId(id.to_owned()));
        }
        Err(source) => {
            return Err(AmiError::DescribeId {
                id: id.to_owned(),
                source,
            });
        }
    };
    out.images()
        .iter()
        .filter_map(candidate)
        .find(|c| c.id == id)
        .map(|c| ResolvedImage {
            id: c.id,
            root_device_name: c.root_device_name,
        })
        .ok_or_else(|| AmiError::UnknownId(id.to_owned()))
}

/// Asks EC2 for the images of `lookup` (owner, name pattern, architecture, available) and picks
/// the newest.
#[tracing::instrument(skip_all, fields(release = %lookup.release(), owner = %lookup.owner))]
pub async fn lookup_image(aws: &AwsClients, lookup: &AwsAmiLookup) -> Result<ResolvedImage, AmiError> {
    let pattern = name_pattern(lookup);
    let filters = vec![
        filter("name", &[&pattern]),
        filter("architecture", &[ec2_arch(lookup.architecture)]),
        filter("state", &["available"]),
    ];
    let out = aws
        .call(Ec2, "DescribeImages", || {
            aws.ec2
                .describe_images()
                .owners(&lookup.owner)
                .set_filters(Some(filters.clone()))
                .send()
        })
        .await
        .map_err(|source| AmiError::Describe {
            pattern: pattern.clone(),
            owner: lookup.owner.clone(),
            source,
        })?;
    let candidates: Vec<ImageCandidate> = out.images().iter().filter_map(candidate).collect();
    let chosen = newest(&candidates, lookup).ok_or_else(|| AmiError::NoImage {
        pattern: pattern.clone(),
        owner: lookup.owner.clone(),
    })?;
    tracing::info!(ami = %chosen.id, name = %chosen.name, "resolved Alpine image");
    Ok(ResolvedImage {
        id: chosen.id.clone(),
        root_device_name: chosen.root_device_name.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, name: &str, date: &str) -> ImageCandidate {
        ImageCandidate {
            id: id.into(),
            name: name.into(),
            creation_date: date.into(),
            root_device_name: DEFAULT_ROOT_DEVICE.into(),
        }
    }

    #[test]
    fn pattern_names_release_architecture_and_variant() {
        let mut lookup = AwsAmiLookup::default().for_version(Some("v1.33.5"));
        assert_eq!(name_pattern(&lookup), "alpine-3.22.*-x86_64-*-tiny-r*");
        lookup.architecture = AmiArchitecture::Aarch64;
        lookup.variant = AmiVariant::Cloudinit;
        assert_eq!(name_pattern(&lookup), "alpine-3.22.*-aarch64-*-cloudinit-r*");
    }

    #[test]
    fn newest_prefers_creation_date_then_version_and_ignores_other_shapes() {
        let lookup = AwsAmiLookup::default().for_version(Some("v1.33.5"));
        let same_day = "2025-10-01T00:00:00.000Z";
        let images = vec![
            image("ami-1", "alpine-3.22.1-x86_64-uefi-tiny-r0", same_day),
            image("ami-2", "alpine-3.22.2-x86_64-uefi-tiny-r0", same_day),
            image("ami-3", "alpine-3.22.2-x86_64-uefi-tiny-r1", same_day),
            image(
                "ami-4",
                "alpine-3.22.10-x86_64-uefi-cloudinit-r0",
                "2026-01-01T00:00:00.000Z",
            ),
            image(
                "ami-5",
                "alpine-3.221.0-x86_64-uefi-tiny-r0",
                "2026-01-01T00:00:00.000Z",
            ),
        ];
        assert_eq!(newest(&images, &lookup).unwrap().id, "ami-3");
        let mut later = images.clone();
        later.push(image(
            "ami-6",
            "alpine-3.22.0-x86_64-bios-tiny-r9",
            "2025-12-01T00:00:00.000Z",
        ));
        assert_eq!(
            newest(&later, &lookup).unwrap().id,
            "ami-6",
            "newest by date first"
        );
        assert!(newest(&[], &lookup).is_none());
    }
}
