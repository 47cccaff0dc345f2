//! Ordering of the KubeZero addons installed by CAAPH (which has no ordering of its own): every
//! HelmChartProxy except Cilium's selects only Clusters labelled [`CNI_READY_LABEL`] (the Istio
//! gateway also [`ISTIOD_READY_LABEL`]). A gate label is granted once the gating HelmChartProxy's
//! HelmReleaseProxy for the Cluster reports `Ready=True` (Cilium and istiod install with `wait: true`,
//! so Ready means their pods run). Pure; `controllers::addon_gates` applies it.

use std::collections::BTreeMap;

use serde_json::Value;

/// Cluster label that gates every module except Cilium: set once Cilium's release is Ready.
pub const CNI_READY_LABEL: (&str, &str) = ("kubezero.io/cni", "ready");
/// Cluster label that gates the Istio ingress gateway: set once istiod's release is Ready.
pub const ISTIOD_READY_LABEL: (&str, &str) = ("kubezero.io/istiod", "ready");
/// Label CAAPH puts on a HelmReleaseProxy naming its HelmChartProxy.
pub const HCP_NAME_LABEL: &str = "helmreleaseproxy.addons.cluster.x-k8s.io/helmchartproxy-name";
/// Label CAAPH puts on a HelmReleaseProxy naming its Cluster.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";

/// The readiness gates: (HelmChartProxy whose release must be Ready, Cluster label it grants).
pub const GATES: [(&str, (&str, &str)); 2] = [
    ("kubezero-cilium", CNI_READY_LABEL),
    ("kubezero-istiod", ISTIOD_READY_LABEL),
];

/// The gate labels a Cluster named `cluster` should carry given the HelmReleaseProxies of its
/// namespace (as JSON): for each gate, the label when the gate's HelmChartProxy has a release for the
/// Cluster whose `Ready` condition is `True`.
pub fn addon_gates(cluster: &str, release_proxies: &[Value]) -> BTreeMap<String, String> {
    let ready = |hcp: &str| {
        release_proxies.iter().any(|hrp| {
            let labels = &hrp["metadata"]["labels"];
            labels[CLUSTER_NAME_LABEL] == cluster
                && labels[HCP_NAME_LABEL] == hcp
                && hrp["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        })
    };
    GATES
        .iter()
        .filter(|(hcp, _)| ready(hcp))
        .map(|(_, (key, value))| (key.to_string(), value.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn release(cluster: &str, hcp: &str, ready: &str) -> Value {
        json!({"metadata": {"labels": {CLUSTER_NAME_LABEL: cluster, HCP_NAME_LABEL: hcp}},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}})
    }

    #[test]
    fn a_gate_opens_only_for_a_ready_release_of_its_own_cluster() {
        assert!(addon_gates("prod", &[release("prod", "kubezero-cilium", "False")]).is_empty());
        assert!(addon_gates("prod", &[release("dev", "kubezero-cilium", "True")]).is_empty());
        assert_eq!(
            addon_gates("prod", &[release("prod", "kubezero-cilium", "True")]),
            BTreeMap::from([("kubezero.io/cni".to_string(), "ready".to_string())])
        );
        let both = addon_gates(
            "prod",
            &[
                release("prod", "kubezero-cilium", "True"),
                release("prod", "kubezero-istiod", "True"),
            ],
        );
        assert_eq!(both.len(), 2);
    }
}
