//! API types of the bootstrap provider (`bootstrap.cluster.x-k8s.io/v1alpha1`) and their CRDs.

mod bounds;
mod config;
pub mod kubeadm;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use config::{
    Alpine, DEFAULT_ALPINE_RELEASE, DEFAULT_FILE_OWNER, DEFAULT_FILE_PERMISSIONS, Encoding, File, FileSource,
    Format, KubeZeroConfig, KubeZeroConfigSpec, KubeZeroConfigStatus, KubeZeroConfigTemplate,
    KubeZeroConfigTemplateResource, KubeZeroConfigTemplateSpec, KubeZeroConfigTemplateStatus, Ntp,
    SecretKeyRef, User,
};

/// API group of the bootstrap provider's kinds.
pub const GROUP: &str = "bootstrap.cluster.x-k8s.io";
/// Served (and stored) API version.
pub const VERSION: &str = "v1alpha1";

/// CRDs of the bootstrap provider: `KubeZeroConfig`, then `KubeZeroConfigTemplate`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![KubeZeroConfig::crd(), KubeZeroConfigTemplate::crd()]
}

#[cfg(test)]
mod tests {
    //! CRD shape checks: names, labels, printer columns, CEL rules and defaults, serde round trips.
    //! The manifest fixtures and the CEL rules themselves are checked in `test/tests/suite/fixtures.rs`
    //! (crate `kubezero-test`).

    use std::collections::BTreeMap;

    use kubezero_capi::contract::{BOOTSTRAP_PROVIDER, CONTRACT_LABEL, PROVIDER_LABEL, crd_name};
    use serde_json::{Value, json};

    use super::*;

    fn schema_of(crd: &CustomResourceDefinition) -> Value {
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref());
        serde_json::to_value(schema.expect("CRD has an openAPIV3Schema")).unwrap()
    }

    fn crd_for(kind: &str) -> CustomResourceDefinition {
        crds()
            .into_iter()
            .find(|crd| crd.spec.names.kind == kind)
            .expect("known kind")
    }

    fn sample() -> KubeZeroConfig {
        let mut cfg = KubeZeroConfig::new(
            "worker-0",
            KubeZeroConfigSpec {
                files: vec![File {
                    path: "/etc/motd".into(),
                    content: Some("hello".into()),
                    content_from: None,
                    permissions: DEFAULT_FILE_PERMISSIONS.into(),
                    owner: DEFAULT_FILE_OWNER.into(),
                    encoding: Encoding::Plain,
                    append: false,
                }],
                users: vec![User {
                    name: "ops".into(),
                    ssh_authorized_keys: vec!["ssh-ed25519 AAAA ops@example".into()],
                    sudo: Some("ALL=(ALL) NOPASSWD:ALL".into()),
                    groups: vec!["wheel".into()],
                    shell: Some("/bin/ash".into()),
                }],
                ntp: Some(Ntp {
                    enabled: true,
                    servers: vec!["pool.ntp.org".into()],
                }),
                pre_kubeadm_commands: vec!["echo pre".into()],
                post_kubeadm_commands: vec!["echo post".into()],
                sysctls: BTreeMap::from([("net.ipv4.ip_forward".into(), "1".into())]),
                ..KubeZeroConfigSpec::default()
            },
        );
        cfg.metadata.namespace = Some("default".into());
        cfg
    }

    #[test]
    fn crd_names_follow_the_contract() {
        let names: Vec<_> = crds()
            .iter()
            .map(|crd| crd.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                crd_name("kubezeroconfigs", GROUP),
                crd_name("kubezeroconfigtemplates", GROUP)
            ]
        );
        assert_eq!(names[0], "kubezeroconfigs.bootstrap.cluster.x-k8s.io");
        assert_eq!(names[1], "kubezeroconfigtemplates.bootstrap.cluster.x-k8s.io");
        for crd in crds() {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(crd.spec.versions.len(), 1);
            assert_eq!(crd.spec.versions[0].name, VERSION);
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&["cluster-api".to_owned()][..])
            );
        }
    }

    #[test]
    fn crds_carry_contract_and_provider_labels() {
        for crd in crds() {
            let labels = crd.metadata.labels.unwrap();
            assert_eq!(labels.get(CONTRACT_LABEL).map(String::as_str), Some(VERSION));
            assert_eq!(
                labels.get(PROVIDER_LABEL).map(String::as_str),
                Some(BOOTSTRAP_PROVIDER)
            );
        }
    }

    #[test]
    fn crds_have_status_subresource_and_short_names() {
        for (crd, short) in crds().iter().zip(["kzcfg", "kzcfgt"]) {
            let version = &crd.spec.versions[0];
            assert!(
                version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some()
            );
            assert!(
                version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.scale.as_ref())
                    .is_none()
            );
            assert_eq!(
                crd.spec.names.short_names.as_deref(),
                Some(&[short.to_owned()][..])
            );
        }
    }

    #[test]
    fn printer_columns() {
        let columns = |kind: &str| -> Vec<String> {
            let crd = crd_for(kind);
            let cols = crd.spec.versions[0].additional_printer_columns.clone().unwrap();
            cols.into_iter()
                .map(|c| {
                    format!(
                        "{}|{}|{}|{}",
                        c.name,
                        c.type_,
                        c.json_path,
                        c.priority.unwrap_or(0)
                    )
                })
                .collect()
        };
        assert_eq!(
            columns("KubeZeroConfig"),
            [
                r"Cluster|string|.metadata.labels.cluster\.x-k8s\.io/cluster-name|0",
                r#"Ready|string|.status.conditions[?(@.type=="Ready")].status|0"#,
                r#"Reason|string|.status.conditions[?(@.type=="Ready")].reason|0"#,
                "Data Secret|string|.status.dataSecretName|0",
                "Format|string|.spec.format|1",
                "Age|date|.metadata.creationTimestamp|0",
            ]
        );
        assert_eq!(
            columns("KubeZeroConfigTemplate"),
            [
                "Format|string|.spec.template.spec.format|0",
                "Age|date|.metadata.creationTimestamp|0"
            ]
        );
    }

    #[test]
    fn schema_has_cel_rules_and_defaults() {
        let schema = schema_of(&crd_for("KubeZeroConfig"));
        let spec = &schema["properties"]["spec"];
        let rules = |s: &Value| -> Vec<(String, String)> {
            s["x-kubernetes-validations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["rule"].as_str().unwrap().to_owned(),
                        r["message"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        let spec_rules = rules(spec);
        assert_eq!(spec_rules[0].1, "file paths must be unique");
        assert!(spec_rules[0].0.contains("exists_one(g, g.path == f.path)"));
        assert_eq!(spec_rules[1].1, "user names must be unique");
        assert_eq!(spec["x-kubernetes-validations"][0]["fieldPath"], ".files");
        assert_eq!(spec["x-kubernetes-validations"][1]["fieldPath"], ".users");
        let file = &spec["properties"]["files"]["items"];
        assert_eq!(
            rules(file),
            [(
                "has(self.content) != has(self.contentFrom)".to_owned(),
                "exactly one of content or contentFrom must be set".to_owned()
            )]
        );
        assert_eq!(
            rules(&spec["properties"]["sysctls"])[0].1,
            "sysctl keys are dotted kernel parameter names"
        );

        assert_eq!(spec["properties"]["format"]["default"], "alpine-config");
        assert_eq!(
            spec["properties"]["format"]["enum"],
            json!(["alpine-config", "cloud-config"])
        );
        assert_eq!(file["properties"]["permissions"]["default"], "0644");
        assert_eq!(file["properties"]["permissions"]["pattern"], "^0?[0-7]{3}$");
        assert_eq!(file["properties"]["owner"]["default"], "root:root");
        assert_eq!(file["properties"]["encoding"]["default"], "plain");
        assert_eq!(
            file["properties"]["encoding"]["enum"],
            json!(["plain", "base64", "gzip", "gzip+base64"])
        );
        assert_eq!(file["properties"]["append"]["default"], false);
        assert_eq!(spec["properties"]["files"]["maxItems"], 64);
        assert_eq!(spec["properties"]["users"]["maxItems"], 32);
        assert_eq!(
            spec["properties"]["ntp"]["properties"]["enabled"]["default"],
            true
        );
        assert_eq!(spec["properties"]["ntp"]["properties"]["servers"]["maxItems"], 8);
        assert_eq!(
            spec["properties"]["alpine"]["default"],
            json!({"release": "3.22"})
        );
        assert_eq!(
            spec["properties"]["alpine"]["properties"]["release"]["default"],
            "3.22"
        );
        let status = &schema["properties"]["status"]["properties"];
        assert_eq!(status["dataSecretName"]["minLength"], 1);
        assert_eq!(status["dataSecretName"]["maxLength"], 253);
        assert_eq!(status["conditions"]["x-kubernetes-list-type"], "map");

        let schema = schema_of(&crd_for("KubeZeroConfigTemplate"));
        let tpl = &schema["properties"]["spec"]["properties"]["template"];
        assert_eq!(
            rules(tpl),
            [(
                "self.spec == oldSelf.spec".to_owned(),
                "template spec is immutable; create a new template instead".to_owned()
            )]
        );
        assert!(schema["properties"]["status"]["properties"]["conditions"].is_object());
    }

    #[test]
    fn kubeadm_sections_have_enums_bounds_and_rules() {
        for crd in crds() {
            let schema = schema_of(&crd);
            let spec = match crd.spec.names.kind.as_str() {
                "KubeZeroConfig" => &schema["properties"]["spec"],
                _ => &schema["properties"]["spec"]["properties"]["template"]["properties"]["spec"],
            };
            let props = &spec["properties"];
            let messages = |s: &Value| -> Vec<String> {
                s["x-kubernetes-validations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["message"].as_str().unwrap().to_owned())
                    .collect()
            };
            let kubelet = &props["kubeletConfiguration"];
            assert_eq!(
                kubelet["properties"]["cgroupDriver"]["enum"],
                json!(["cgroupfs", "systemd"]),
                "no null in optional enums"
            );
            assert_eq!(kubelet["properties"]["maxPods"]["minimum"], 1.0);
            assert_eq!(kubelet["properties"]["maxPods"]["maximum"], 1000.0);
            assert_eq!(
                messages(kubelet),
                ["maxParallelImagePulls must be 1 (or unset) when serializeImagePulls is true"]
            );
            let registration = &props["joinConfiguration"]["properties"]["nodeRegistration"]["properties"];
            assert_eq!(
                registration["taints"]["items"]["properties"]["effect"]["enum"],
                json!(["NoSchedule", "PreferNoSchedule", "NoExecute"])
            );
            assert_eq!(
                messages(&registration["taints"]),
                ["taints must be unique by key and effect"]
            );
            assert_eq!(
                messages(&registration["kubeletExtraArgs"]),
                ["extraArgs names must be unique"]
            );
            let cluster = &props["clusterConfiguration"]["properties"];
            let arg = &cluster["apiServer"]["properties"]["extraArgs"]["items"]["properties"]["name"];
            assert_eq!(arg["minLength"], 1);
            assert!(
                cluster["networking"]["properties"]["podSubnet"]["pattern"]
                    .as_str()
                    .unwrap()
                    .starts_with("^([0-9]{1,3}")
            );
            assert_eq!(messages(&props["nodeLabels"]).len(), 2);
        }
    }

    #[test]
    fn every_field_is_documented() {
        fn walk(schema: &Value, path: &str, missing: &mut Vec<String>) {
            if let Some(props) = schema["properties"].as_object() {
                for (name, prop) in props {
                    let path = format!("{path}.{name}");
                    if prop["description"].as_str().is_none_or(str::is_empty) {
                        missing.push(path.clone());
                    }
                    walk(prop, &path, missing);
                    walk(&prop["items"], &path, missing);
                }
            }
        }
        for crd in crds() {
            let mut missing = Vec::new();
            walk(&schema_of(&crd)["properties"]["spec"], "spec", &mut missing);
            walk(&schema_of(&crd)["properties"]["status"], "status", &mut missing);
            assert!(
                missing.is_empty(),
                "{}: undocumented {missing:?}",
                crd.spec.names.kind
            );
        }
    }

    #[test]
    fn serde_round_trip() {
        let cfg = sample();
        let value = serde_json::to_value(&cfg).unwrap();
        assert_eq!(value["spec"]["format"], "alpine-config");
        assert_eq!(value["spec"]["files"][0]["encoding"], "plain");
        assert_eq!(value["spec"]["alpine"], json!({"release": "3.22"}));
        assert!(value["spec"]["files"][0].get("contentFrom").is_none());
        assert!(value.get("status").is_none());
        let back: KubeZeroConfig = serde_json::from_value(value).unwrap();
        assert_eq!(back, cfg);

        let cloud: Format = serde_json::from_value(json!("cloud-config")).unwrap();
        assert_eq!(cloud, Format::CloudConfig);
        assert_eq!(cloud.as_str(), "cloud-config");
        let gz: Encoding = serde_json::from_value(json!("gzip+base64")).unwrap();
        assert_eq!(gz, Encoding::GzipBase64);
    }

    #[test]
    fn serde_defaults_match_schema_defaults() {
        let spec: KubeZeroConfigSpec =
            serde_json::from_value(json!({"files": [{"path": "/a", "content": "x"}], "ntp": {}})).unwrap();
        assert_eq!(spec.format, Format::AlpineConfig);
        assert_eq!(spec.alpine.release, DEFAULT_ALPINE_RELEASE);
        let file = &spec.files[0];
        assert_eq!(
            (
                file.permissions.as_str(),
                file.owner.as_str(),
                file.encoding,
                file.append
            ),
            ("0644", "root:root", Encoding::Plain, false)
        );
        assert!(spec.ntp.unwrap().enabled);
        let tpl: KubeZeroConfigTemplateSpec = serde_json::from_value(json!({"template": {}})).unwrap();
        assert_eq!(tpl.template.spec, KubeZeroConfigSpec::default());
    }
}
