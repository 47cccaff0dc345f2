//! Resolving v1beta2 `{apiGroup, kind, name}` references to a served apiVersion through the provider
//! CRD's contract label, as core does (capi-contract.md §1, [CAPI] `internal/contract/version.go`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::{ApiResource, Version};
use kube::{Api, Client};

use super::Error;

/// Contract labels core reads, newest first: v1beta2 is the current contract and v1beta1 is still
/// compatible until ~April 2027 (capi-contract.md §0).
const CONTRACT_LABELS: [&str; 2] = ["cluster.x-k8s.io/v1beta2", "cluster.x-k8s.io/v1beta1"];

/// Lower-case plural of a kind, following the flect rules core uses for `CalculateCRDName` for the
/// regular English endings (capi-contract.md §1).
pub fn plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if lower.ends_with('s')
        || lower.ends_with('x')
        || lower.ends_with('z')
        || lower.ends_with("ch")
        || lower.ends_with("sh")
    {
        format!("{lower}es")
    } else if lower.ends_with('y')
        && !lower.ends_with("ay")
        && !lower.ends_with("ey")
        && !lower.ends_with("oy")
    {
        format!("{}ies", &lower[..lower.len() - 1])
    } else {
        format!("{lower}s")
    }
}

/// The CRD name core computes for a reference: `<plural(kind)>.<apiGroup>` (capi-contract.md §1).
pub fn crd_name(api_group: &str, kind: &str) -> String {
    format!("{}.{}", plural(kind), api_group)
}

/// Resolves `kind` in `api_group` to the [`ApiResource`] of the version core would use: the newest
/// compatible contract label present on the CRD, then the highest kube-aware version in its
/// `_`-separated value that the CRD serves (capi-contract.md §1). Errors like core does when the CRD or
/// its contract label is missing.
pub async fn resolve(client: &Client, api_group: &str, kind: &str) -> Result<ApiResource, Error> {
    let name = crd_name(api_group, kind);
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(&name)
        .await?
        .ok_or_else(|| Error::Contract(format!("CRD {name} for {kind}.{api_group} not found")))?;
    resource_from_crd(&crd)
}

/// The [`ApiResource`] core would use for `crd` (see [`resolve`]).
pub fn resource_from_crd(crd: &CustomResourceDefinition) -> Result<ApiResource, Error> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    let labels = crd.metadata.labels.clone().unwrap_or_default();
    let value = CONTRACT_LABELS
        .iter()
        .find_map(|label| labels.get(*label).filter(|v| !v.is_empty()))
        .ok_or_else(|| {
            Error::Contract(format!(
                "CRD {name}: contract version label(s) are either missing or empty"
            ))
        })?;
    let served: Vec<&str> = crd
        .spec
        .versions
        .iter()
        .filter(|v| v.served)
        .map(|v| v.name.as_str())
        .collect();
    let version = value
        .split('_')
        .filter(|v| served.contains(v))
        .max_by_key(|v| Version::parse(v).priority())
        .ok_or_else(|| {
            Error::Contract(format!(
                "CRD {name}: no served version among contract label {value:?}"
            ))
        })?;
    let group = crd.spec.group.clone();
    Ok(ApiResource {
        api_version: format!("{group}/{version}"),
        group,
        version: version.to_string(),
        kind: crd.spec.names.kind.clone(),
        plural: crd.spec.names.plural.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plural_follows_the_english_endings() {
        assert_eq!(plural("KubeZeroMachine"), "kubezeromachines");
        assert_eq!(plural("KubeZeroConfigTemplate"), "kubezeroconfigtemplates");
        assert_eq!(plural("KubeZeroMachineClass"), "kubezeromachineclasses");
        assert_eq!(plural("Policy"), "policies");
        assert_eq!(plural("Gateway"), "gateways");
    }
}
