//! Cluster templates (`templates/cluster-template*.yaml`) and KubeZero addons (`templates/addons/`):
//! clusterctl's substitution, every flavor accepted by the API emulator with the CRDs installed, every
//! HelmChartProxy selecting exactly its labelled Clusters (the emulator's label selectors), every
//! `valuesTemplate` rendering the provisioned Cluster's values, and the Cilium-first gates.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use kubezero_test::templates::{
    self, CNI_READY_LABEL, EnvsubstError, GenerateError, GenerateOptions, ISTIOD_READY_LABEL, envsubst,
    gotemplate,
};
use serde_json::{Value, json};

/// Variables clusterctl itself sets or that every template may use without the `KUBEZERO_` prefix.
const COMMON: [&str; 5] = [
    "CLUSTER_NAME",
    "NAMESPACE",
    "KUBERNETES_VERSION",
    "CONTROL_PLANE_MACHINE_COUNT",
    "WORKER_MACHINE_COUNT",
];

fn options(name: &str, namespace: &str) -> GenerateOptions {
    GenerateOptions {
        cluster_name: name.into(),
        target_namespace: namespace.into(),
        kubernetes_version: Some("v1.34.1".into()),
        control_plane_machine_count: None,
        worker_machine_count: Some(2),
    }
}

fn required_extras(flavor: &str) -> BTreeMap<String, String> {
    match flavor {
        "baremetal" => BTreeMap::from([("KUBEZERO_CONTROL_PLANE_VIP".into(), "192.0.2.10".into())]),
        _ => BTreeMap::new(),
    }
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn render_flavor(flavor: &str, name: &str, namespace: &str) -> Vec<Value> {
    let (_, path) = templates::flavors()
        .into_iter()
        .find(|(f, _)| f == flavor)
        .unwrap_or_else(|| panic!("no flavor {flavor:?}"));
    let text = templates::generate_cluster(&read(&path), &options(name, namespace), &required_extras(flavor))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    templates::documents(&text).unwrap()
}

#[test]
fn the_three_flavors_exist_and_use_only_prefixed_variables_with_one_default_each() {
    let flavors: Vec<String> = templates::flavors().into_iter().map(|(f, _)| f).collect();
    assert_eq!(flavors, ["", "aws-ha", "baremetal"]);
    let readme = read(&templates::repo_root().join("README.md"));
    for (flavor, path) in templates::flavors() {
        let mut defaults: BTreeMap<String, BTreeSet<Option<String>>> = BTreeMap::new();
        for (name, default) in envsubst::occurrences(&read(&path)).unwrap() {
            defaults.entry(name).or_default().insert(default);
        }
        for (name, seen) in &defaults {
            assert!(
                COMMON.contains(&name.as_str()) || name.starts_with("KUBEZERO_"),
                "{flavor}: {name} is neither common nor KUBEZERO_-prefixed"
            );
            // envsubst does not assign: every occurrence must carry the same default (or none).
            assert_eq!(seen.len(), 1, "{flavor}: {name} has differing defaults {seen:?}");
            assert!(
                readme.contains(&format!("`{name}`")),
                "README does not document {name}"
            );
        }
        for name in COMMON
            .iter()
            .filter(|n| **n != "CONTROL_PLANE_MACHINE_COUNT" || flavor != "aws-ha")
        {
            assert!(defaults.contains_key(*name), "{flavor}: {name} unused");
        }
    }
}

#[test]
fn clusterctl_substitution_applies_defaults_and_reports_all_missing_variables_at_once() {
    let (_, default_flavor) = &templates::flavors()[0];
    let text = read(default_flavor);
    // No --kubernetes-version and nothing in the environment: the only required variable is missing.
    let mut without_version = options("demo", "default");
    without_version.kubernetes_version = None;
    match templates::generate_cluster(&text, &without_version, &BTreeMap::new()) {
        Err(GenerateError::Substitution(EnvsubstError::MissingVariables(missing))) => {
            assert_eq!(missing, ["KUBERNETES_VERSION"])
        }
        other => panic!("expected the missing KUBERNETES_VERSION, got {other:?}"),
    }
    let baremetal = read(&templates::repo_root().join("templates/cluster-template-baremetal.yaml"));
    let err = templates::generate_cluster(&baremetal, &without_version, &BTreeMap::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "value for variables [KUBERNETES_VERSION, KUBEZERO_CONTROL_PLANE_VIP] is not set. Please set the value using os environment variables or the clusterctl config file"
    );
    // The environment supplies KUBERNETES_VERSION when the flag is absent; the flags beat it.
    let environment = BTreeMap::from([
        ("KUBERNETES_VERSION".to_string(), "v1.33.4".to_string()),
        ("WORKER_MACHINE_COUNT".to_string(), "7".to_string()),
        ("KUBEZERO_AWS_REGION".to_string(), "us-east-2".to_string()),
        ("KUBEZERO_POD_CIDR".to_string(), String::new()),
    ]);
    let docs =
        templates::documents(&templates::generate_cluster(&text, &without_version, &environment).unwrap())
            .unwrap();
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap().clone();
    assert_eq!(kind("KubeZeroCluster")["spec"]["aws"]["region"], "us-east-2");
    // Set to empty: the default applies (`:=` means "unset or empty").
    assert_eq!(
        kind("Cluster")["spec"]["clusterNetwork"]["pods"]["cidrBlocks"][0],
        "10.244.0.0/16"
    );
    let workers = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "demo-workers" && d["kind"] == "MachineDeployment")
        .unwrap();
    assert_eq!(
        workers["spec"]["replicas"], 2,
        "--worker-machine-count beats the environment"
    );
    assert_eq!(workers["spec"]["template"]["spec"]["version"], "v1.33.4");
    // Without flags, clusterctl's own defaults: 1 control plane, 0 workers.
    let mut no_counts = without_version.clone();
    no_counts.worker_machine_count = None;
    let docs = templates::documents(
        &templates::generate_cluster(
            &text,
            &no_counts,
            &BTreeMap::from([("KUBERNETES_VERSION".into(), "v1.34.1".into())]),
        )
        .unwrap(),
    )
    .unwrap();
    let replicas: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "MachineDeployment")
        .map(|d| &d["spec"]["replicas"])
        .collect();
    assert_eq!(replicas, [&json!(1), &json!(0)]);
    // The variable list, as `clusterctl generate cluster --list-variables` prints it.
    let listed = envsubst::list_variables(&baremetal).unwrap();
    let required: Vec<&str> = listed
        .iter()
        .filter(|v| v.required)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        required,
        [
            "CLUSTER_NAME",
            "CONTROL_PLANE_MACHINE_COUNT",
            "KUBERNETES_VERSION",
            "KUBEZERO_CONTROL_PLANE_VIP",
            "NAMESPACE",
            "WORKER_MACHINE_COUNT"
        ]
    );
    let vip_interface = listed
        .iter()
        .find(|v| v.name == "KUBEZERO_VIP_INTERFACE")
        .unwrap();
    assert_eq!(vip_interface.default_value, "eth0");
}

#[test]
fn flavors_follow_the_machine_based_control_plane_and_autoscaler_conventions() {
    for (flavor, _) in templates::flavors() {
        let docs = render_flavor(&flavor, "demo", "default");
        let cluster = docs.iter().find(|d| d["kind"] == "Cluster").unwrap();
        assert!(
            cluster["spec"].get("controlPlaneRef").is_none(),
            "{flavor}: no controlPlaneRef"
        );
        assert_eq!(
            cluster["metadata"]["labels"]["kubezero.io/cilium"], "enabled",
            "{flavor}"
        );
        let mut control_planes = 0;
        for md in docs.iter().filter(|d| d["kind"] == "MachineDeployment") {
            let name = md["metadata"]["name"].as_str().unwrap();
            let template_labels = &md["spec"]["template"]["metadata"]["labels"];
            for (key, value) in md["spec"]["selector"]["matchLabels"].as_object().unwrap() {
                assert_eq!(
                    &template_labels[key], value,
                    "{flavor} {name}: selector matches the template"
                );
            }
            assert_eq!(template_labels["cluster.x-k8s.io/cluster-name"], "demo");
            if template_labels.get("cluster.x-k8s.io/control-plane").is_some() {
                control_planes += md["spec"]["replicas"].as_i64().unwrap();
                assert_eq!(
                    md["spec"]["rollout"]["strategy"]["type"], "OnDelete",
                    "{flavor} {name}"
                );
            } else {
                let annotations = &md["metadata"]["annotations"];
                let min: i64 = annotations["cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let max: i64 = annotations["cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(
                    min <= max && max > 0,
                    "{flavor} {name}: autoscaler bounds {min}..{max}"
                );
            }
            // Every referenced template exists in the same output.
            for (ref_path, kind) in [
                ("bootstrap", "KubeZeroConfigTemplate"),
                ("infrastructure", "KubeZeroMachineTemplate"),
            ] {
                let reference = if ref_path == "bootstrap" {
                    &md["spec"]["template"]["spec"]["bootstrap"]["configRef"]
                } else {
                    &md["spec"]["template"]["spec"]["infrastructureRef"]
                };
                assert_eq!(reference["kind"], kind);
                assert!(
                    docs.iter()
                        .any(|d| d["kind"] == kind && d["metadata"]["name"] == reference["name"]),
                    "{flavor} {name}: {kind} {}",
                    reference["name"]
                );
            }
        }
        let expected = if flavor == "aws-ha" { 3 } else { 1 };
        assert_eq!(control_planes, expected, "{flavor}: control-plane machines");
        if flavor == "aws-ha" {
            let zones: BTreeSet<&str> = docs
                .iter()
                .filter_map(|d| d["spec"]["template"]["spec"]["failureDomain"].as_str())
                .collect();
            assert_eq!(
                zones,
                BTreeSet::from(["eu-central-1a", "eu-central-1b", "eu-central-1c"])
            );
            assert!(docs.iter().any(|d| d["kind"] == "KubeZeroMachineTemplate"
                && d["spec"]["template"]["spec"]["aws"]["spot"].is_object()));
        }
    }
}

/// The emulator with the kubezero, CAPI core and CAAPH CRDs installed.
async fn emulator() -> (kubezero_test::apiserver::ApiServer, kube::Client, kube::Discovery) {
    let (server, client, _) = crate::fixtures::emulator().await;
    server.install_crds(&templates::caaph_crds()).await.unwrap();
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    (server, client, discovery)
}

async fn namespace(client: &kube::Client, discovery: &kube::Discovery, name: &str) {
    crate::fixtures::create(
        client,
        discovery,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .await
    .unwrap();
}

fn dynamic(
    client: &kube::Client,
    discovery: &kube::Discovery,
    namespace: &str,
    group: &str,
    kind: &str,
) -> kube::Api<DynamicObject> {
    let (resource, _) = discovery
        .resolve_gvk(&kube::api::GroupVersionKind::gvk(
            group,
            match group {
                "cluster.x-k8s.io" => "v1beta2",
                _ => "v1alpha1",
            },
            kind,
        ))
        .unwrap_or_else(|| panic!("{kind} is served"));
    kube::Api::namespaced_with(client.clone(), namespace, &resource)
}

#[tokio::test]
async fn every_flavor_renders_with_its_defaults_and_the_api_emulator_accepts_every_object() {
    let (_server, client, discovery) = emulator().await;
    for (flavor, _) in templates::flavors() {
        let ns = format!("flavor-{}", if flavor.is_empty() { "default" } else { &flavor });
        namespace(&client, &discovery, &ns).await;
        for doc in render_flavor(&flavor, "demo", &ns) {
            crate::fixtures::create(&client, &discovery, &doc)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{flavor}: {} {} refused: {e}",
                        doc["kind"], doc["metadata"]["name"]
                    )
                });
        }
    }
}

/// The HelmChartProxies of `templates/addons/`.
fn helm_chart_proxies() -> Vec<Value> {
    let proxies: Vec<Value> = templates::addon_files()
        .iter()
        .flat_map(|path| {
            templates::documents(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect();
    for hcp in &proxies {
        assert_eq!(hcp["apiVersion"], "addons.cluster.x-k8s.io/v1alpha1");
        assert_eq!(hcp["kind"], "HelmChartProxy");
        assert!(
            hcp["metadata"].get("namespace").is_none(),
            "addons are applied in the Clusters' namespace"
        );
    }
    proxies
}

/// A LabelSelector as the query-string selector the API server takes.
fn selector_string(selector: &Value) -> String {
    let mut parts: Vec<String> = selector["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    for expression in selector["matchExpressions"].as_array().into_iter().flatten() {
        let key = expression["key"].as_str().unwrap();
        let values = || {
            expression["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(",")
        };
        parts.push(match expression["operator"].as_str().unwrap() {
            "In" => format!("{key} in ({})", values()),
            "NotIn" => format!("{key} notin ({})", values()),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            other => panic!("unknown operator {other}"),
        });
    }
    parts.join(",")
}

async fn selected(clusters: &kube::Api<DynamicObject>, hcp: &Value) -> BTreeSet<String> {
    let selector = selector_string(&hcp["spec"]["clusterSelector"]);
    assert!(
        !selector.is_empty(),
        "{}: an empty selector selects every Cluster",
        hcp["metadata"]["name"]
    );
    clusters
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect()
}

#[tokio::test]
async fn every_helm_chart_proxy_selects_exactly_the_clusters_labelled_for_its_module() {
    let (_server, client, discovery) = emulator().await;
    let proxies = helm_chart_proxies();
    let modules: BTreeSet<String> = proxies
        .iter()
        .map(|hcp| {
            hcp["metadata"]["labels"]["kubezero.io/module"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        modules,
        [
            "argocd",
            "aws-ebs-csi",
            "aws-node-termination-handler",
            "cert-manager",
            "cilium",
            "istio-ingress",
            "logging",
            "metrics",
            "openebs-lvm"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    for ns in ["addons", "elsewhere"] {
        namespace(&client, &discovery, ns).await;
    }
    let gates = json!({CNI_READY_LABEL.0: CNI_READY_LABEL.1, ISTIOD_READY_LABEL.0: ISTIOD_READY_LABEL.1});
    for ns in ["addons", "elsewhere"] {
        let clusters = dynamic(&client, &discovery, ns, "cluster.x-k8s.io", "Cluster");
        for module in &modules {
            for (suffix, value, gated) in [
                ("gated", "enabled", true),
                ("ungated", "enabled", false),
                ("disabled", "disabled", true),
            ] {
                let mut labels = json!({format!("kubezero.io/{module}"): value});
                if gated {
                    labels
                        .as_object_mut()
                        .unwrap()
                        .extend(gates.as_object().unwrap().clone());
                }
                let cluster = json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
                    "metadata": {"name": format!("{module}-{suffix}"), "namespace": ns, "labels": labels}, "spec": {}});
                clusters
                    .create(&Default::default(), &serde_json::from_value(cluster).unwrap())
                    .await
                    .unwrap();
            }
        }
    }
    let clusters = dynamic(&client, &discovery, "addons", "cluster.x-k8s.io", "Cluster");
    let proxies_api = dynamic(
        &client,
        &discovery,
        "addons",
        "addons.cluster.x-k8s.io",
        "HelmChartProxy",
    );
    for hcp in &proxies {
        let name = hcp["metadata"]["name"].as_str().unwrap();
        let mut object = hcp.clone();
        object["metadata"]["namespace"] = json!("addons");
        proxies_api
            .create(&Default::default(), &serde_json::from_value(object).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{name}: refused by the HelmChartProxy CRD: {e}"));
        let module = hcp["metadata"]["labels"]["kubezero.io/module"].as_str().unwrap();
        let mut expected = BTreeSet::from([format!("{module}-gated")]);
        if module == "cilium" {
            expected.insert(format!("{module}-ungated"));
        }
        assert_eq!(selected(&clusters, hcp).await, expected, "{name}");
        // Pinned chart versions, and every module but Cilium waits for the CNI gate.
        assert!(
            hcp["spec"]["version"].as_str().is_some_and(|v| !v.is_empty()),
            "{name}: version pinned"
        );
        let match_labels = &hcp["spec"]["clusterSelector"]["matchLabels"];
        assert_eq!(
            match_labels[CNI_READY_LABEL.0].as_str() == Some(CNI_READY_LABEL.1),
            module != "cilium",
            "{name}"
        );
    }
}

/// A provisioned AWS cluster as CAAPH reads it from the emulator: the default flavor's Cluster and
/// KubeZeroCluster, with the endpoint and `provisioned` the provider sets.
async fn provisioned(
    client: &kube::Client,
    discovery: &kube::Discovery,
    flavor: &str,
    ns: &str,
) -> (kube::Api<DynamicObject>, gotemplate::Builtins) {
    namespace(client, discovery, ns).await;
    let docs = render_flavor(flavor, "prod", ns);
    for doc in docs
        .iter()
        .filter(|d| d["kind"] == "Cluster" || d["kind"] == "KubeZeroCluster")
    {
        crate::fixtures::create(client, discovery, doc).await.unwrap();
    }
    let clusters = dynamic(client, discovery, ns, "cluster.x-k8s.io", "Cluster");
    let infra = dynamic(
        client,
        discovery,
        ns,
        "infrastructure.cluster.x-k8s.io",
        "KubeZeroCluster",
    );
    if flavor != "baremetal" {
        infra
            .patch("prod", &PatchParams::default(), &Patch::Merge(json!({"spec": {"controlPlaneEndpoint": {"host": "prod-api.elb.eu-central-1.amazonaws.com", "port": 6443}}})))
            .await
            .unwrap();
    }
    infra
        .patch_status(
            "prod",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"initialization": {"provisioned": true}}})),
        )
        .await
        .unwrap();
    clusters
        .patch("prod", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"kubezero.io/nth-queue-url": "https://sqs.eu-central-1.amazonaws.com/123456789012/prod-nth"}}})))
        .await
        .unwrap();
    let builtins = gotemplate::Builtins {
        cluster: serde_json::to_value(clusters.get("prod").await.unwrap()).unwrap(),
        control_plane: None,
        infra_cluster: serde_json::to_value(infra.get("prod").await.unwrap()).unwrap(),
    };
    (clusters, builtins)
}

fn render(hcp: &Value, builtins: &gotemplate::Builtins) -> Value {
    let name = hcp["metadata"]["name"].as_str().unwrap();
    let text = gotemplate::render_values(hcp["spec"]["valuesTemplate"].as_str().unwrap(), builtins)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        !text.contains("<no value>"),
        "{name}: a missing field rendered:\n{text}"
    );
    let values: Value =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: not YAML: {e}\n{text}"));
    assert!(values.is_object(), "{name}: values are a mapping");
    values
}

#[tokio::test]
async fn every_values_template_renders_the_provisioned_clusters_pod_cidr_endpoint_and_name() {
    let (_server, client, discovery) = emulator().await;
    let (clusters, builtins) = provisioned(&client, &discovery, "", "values").await;
    let values: BTreeMap<String, Value> = helm_chart_proxies()
        .iter()
        .map(|hcp| {
            (
                hcp["metadata"]["name"].as_str().unwrap().to_owned(),
                render(hcp, &builtins),
            )
        })
        .collect();
    let cilium = &values["kubezero-cilium"];
    assert_eq!(cilium["cluster"]["name"], "prod");
    assert_eq!(cilium["tunnelProtocol"], "geneve");
    assert_eq!(
        cilium["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"],
        json!(["10.244.0.0/16"])
    );
    assert_eq!(
        cilium["k8sServiceHost"],
        "prod-api.elb.eu-central-1.amazonaws.com"
    );
    assert_eq!(cilium["k8sServicePort"], 6443);
    assert_eq!(cilium["kubeProxyReplacement"], false);
    let ebs = &values["kubezero-aws-ebs-csi-driver"];
    assert_eq!(ebs["controller"]["region"], "eu-central-1");
    assert_eq!(ebs["controller"]["k8sTagClusterId"], "prod");
    assert_eq!(
        ebs["controller"]["extraVolumeTags"]["kubernetes.io/cluster/prod"],
        "owned"
    );
    let nth = &values["kubezero-aws-node-termination-handler"];
    assert_eq!(nth["enableSqsTerminationDraining"], true);
    assert_eq!(
        nth["queueURL"],
        "https://sqs.eu-central-1.amazonaws.com/123456789012/prod-nth"
    );
    assert_eq!(nth["managedTag"], "zdt:kubezero:nth:prod");
    assert_eq!(
        values["kubezero-kube-prometheus-stack"]["prometheus"]["prometheusSpec"]["externalLabels"]["cluster"],
        "prod"
    );
    assert_eq!(
        values["kubezero-kube-prometheus-stack"]["kubeProxy"]["enabled"],
        true
    );
    assert_eq!(values["kubezero-fluent-bit"]["env"][0]["value"], "prod");
    assert_eq!(
        values["kubezero-istiod"]["global"]["multiCluster"]["clusterName"],
        "prod"
    );
    assert_eq!(
        values["kubezero-argo-cd"]["global"]["domain"],
        "argocd.prod.local"
    );

    // kube-proxy replacement follows the Cluster label, re-read as CAAPH would after the change.
    clusters
        .patch(
            "prod",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"kubezero.io/kube-proxy-replacement": "enabled"}}})),
        )
        .await
        .unwrap();
    let replaced = gotemplate::Builtins {
        cluster: serde_json::to_value(clusters.get("prod").await.unwrap()).unwrap(),
        ..builtins
    };
    let proxies = helm_chart_proxies();
    let hcp = |name: &str| {
        proxies
            .iter()
            .find(|h| h["metadata"]["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        render(&hcp("kubezero-cilium"), &replaced)["kubeProxyReplacement"],
        true
    );
    assert_eq!(
        render(&hcp("kubezero-kube-prometheus-stack"), &replaced)["kubeProxy"]["enabled"],
        false
    );

    // Bare metal: the endpoint is the VIP from the template.
    let (_, metal) = provisioned(&client, &discovery, "baremetal", "values-metal").await;
    let cilium = render(&hcp("kubezero-cilium"), &metal);
    assert_eq!(cilium["k8sServiceHost"], "192.0.2.10");
    assert_eq!(
        cilium["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"],
        json!(["10.244.0.0/16"])
    );
}

#[tokio::test]
async fn cilium_comes_first_the_other_modules_wait_for_its_ready_release_and_gitops_keeps_the_gate() {
    let (_server, client, discovery) = emulator().await;
    let ns = "gates";
    namespace(&client, &discovery, ns).await;
    let clusters = dynamic(&client, &discovery, ns, "cluster.x-k8s.io", "Cluster");
    // The user's (GitOps) manifest: every module enabled, no gate labels.
    let mut manifest = render_flavor("", "prod", ns)
        .into_iter()
        .find(|d| d["kind"] == "Cluster")
        .unwrap();
    for module in [
        "metrics",
        "logging",
        "istio-ingress",
        "argocd",
        "aws-node-termination-handler",
    ] {
        manifest["metadata"]["labels"][format!("kubezero.io/{module}")] = json!("enabled");
    }
    let gitops = PatchParams::apply("argocd-controller");
    clusters
        .patch("prod", &gitops, &Patch::Apply(&manifest))
        .await
        .unwrap();
    let proxies = helm_chart_proxies();
    let selecting = |clusters: kube::Api<DynamicObject>| {
        let proxies = proxies.clone();
        async move {
            let mut names = BTreeSet::new();
            for hcp in &proxies {
                if selected(&clusters, hcp).await.contains("prod") {
                    names.insert(hcp["metadata"]["name"].as_str().unwrap().to_owned());
                }
            }
            names
        }
    };
    assert_eq!(
        selecting(clusters.clone()).await,
        BTreeSet::from(["kubezero-cilium".to_owned()]),
        "only Cilium before the CNI is ready"
    );

    // CAAPH's HelmReleaseProxy for Cilium: created not Ready, then Ready once the agents run.
    let releases = dynamic(
        &client,
        &discovery,
        ns,
        "addons.cluster.x-k8s.io",
        "HelmReleaseProxy",
    );
    let release = |hcp: &str, chart: &str| {
        json!({"apiVersion": "addons.cluster.x-k8s.io/v1alpha1", "kind": "HelmReleaseProxy",
            "metadata": {"name": format!("{chart}-prod-x1"), "namespace": ns,
                "labels": {templates::CLUSTER_NAME_LABEL: "prod", templates::HCP_NAME_LABEL: hcp}},
            "spec": {"clusterRef": {"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "prod", "namespace": ns},
                "chartName": chart, "repoURL": "https://example.invalid", "namespace": "kube-system", "values": ""}})
    };
    let ready = |status: &str| {
        json!({"status": {"conditions": [{"type": "Ready", "status": status, "reason": if status == "True" { "Ready" } else { "Installing" },
            "message": "", "lastTransitionTime": "2026-11-22T05:00:00Z"}], "status": "deployed", "revision": 1}})
    };
    releases
        .create(
            &Default::default(),
            &serde_json::from_value(release("kubezero-cilium", "cilium")).unwrap(),
        )
        .await
        .unwrap();
    releases
        .patch_status(
            "cilium-prod-x1",
            &PatchParams::default(),
            &Patch::Merge(ready("False")),
        )
        .await
        .unwrap();
    let gate = |releases: kube::Api<DynamicObject>| async move {
        let items: Vec<Value> = releases
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|i| serde_json::to_value(i).unwrap())
            .collect();
        templates::addon_gates("prod", &items)
    };
    assert!(
        gate(releases.clone()).await.is_empty(),
        "no gate while Cilium is not Ready"
    );

    releases
        .patch_status(
            "cilium-prod-x1",
            &PatchParams::default(),
            &Patch::Merge(ready("True")),
        )
        .await
        .unwrap();
    let labels = gate(releases.clone()).await;
    assert_eq!(
        labels,
        BTreeMap::from([(CNI_READY_LABEL.0.to_owned(), CNI_READY_LABEL.1.to_owned())])
    );
    // The platform sets the gate with its own field manager.
    let platform = PatchParams::apply("kubezero-addon-gates").force();
    let gate_patch = |labels: BTreeMap<String, String>| json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "metadata": {"name": "prod", "labels": labels}});
    clusters
        .patch("prod", &platform, &Patch::Apply(gate_patch(labels.clone())))
        .await
        .unwrap();
    let expected: BTreeSet<String> = proxies
        .iter()
        .map(|h| h["metadata"]["name"].as_str().unwrap().to_owned())
        .filter(|n| !["kubezero-istio-ingressgateway", "kubezero-openebs-lvm"].contains(&n.as_str()))
        .collect();
    assert_eq!(
        selecting(clusters.clone()).await,
        expected,
        "all enabled modules once the CNI is ready, the gateway still waits for istiod"
    );

    // istiod Ready opens the gateway's gate too.
    releases
        .create(
            &Default::default(),
            &serde_json::from_value(release("kubezero-istiod", "istiod")).unwrap(),
        )
        .await
        .unwrap();
    releases
        .patch_status(
            "istiod-prod-x1",
            &PatchParams::default(),
            &Patch::Merge(ready("True")),
        )
        .await
        .unwrap();
    let labels = gate(releases.clone()).await;
    clusters
        .patch("prod", &platform, &Patch::Apply(gate_patch(labels)))
        .await
        .unwrap();
    assert!(
        selecting(clusters.clone())
            .await
            .contains("kubezero-istio-ingressgateway")
    );

    // Re-applying the user's manifest neither removes the gates nor bumps the generation.
    let before = clusters.get("prod").await.unwrap();
    clusters
        .patch("prod", &gitops, &Patch::Apply(&manifest))
        .await
        .unwrap();
    let after = clusters.get("prod").await.unwrap();
    assert_eq!(after.metadata.generation, before.metadata.generation);
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the re-apply is a no-op"
    );
    assert_eq!(
        after.metadata.labels.as_ref().unwrap()[CNI_READY_LABEL.0],
        CNI_READY_LABEL.1
    );
}

/// Runs the Argo CD health check of `kind` (from `config/argocd/argocd-cm.yaml`) on `object`, the way
/// Argo CD does: the object as the global `obj`, the script's return value `{status, message}`.
fn argocd_health(kind: &str, object: &Value) -> (String, String) {
    use mlua::LuaSerdeExt;
    let path = templates::repo_root().join("config/argocd/argocd-cm.yaml");
    let config_map: Value = serde_saphyr::from_str(&read(&path)).unwrap();
    let key = config_map["data"]
        .as_object()
        .unwrap()
        .keys()
        .find(|k| k.starts_with("resource.customizations.health.") && k.ends_with(&format!("_{kind}")))
        .unwrap_or_else(|| panic!("no health check for {kind}"));
    let script = config_map["data"][key].as_str().unwrap();
    let lua = mlua::Lua::new();
    let obj = lua.to_value(object).unwrap();
    lua.globals().set("obj", obj).unwrap();
    let result: mlua::Table = lua.load(script).eval().unwrap_or_else(|e| panic!("{kind}: {e}"));
    (result.get("status").unwrap(), result.get("message").unwrap())
}

#[test]
fn argocd_health_checks_follow_ready_paused_and_initialization() {
    let condition = |type_: &str, status: &str, reason: &str| json!({"type": type_, "status": status, "reason": reason, "message": format!("{type_} is {status}"), "lastTransitionTime": "2026-11-22T05:00:00Z"});
    for (kind, flag) in [
        ("KubeZeroCluster", "provisioned"),
        ("KubeZeroMachine", "provisioned"),
        ("KubeZeroConfig", "dataSecretCreated"),
    ] {
        let object = |status: Value| json!({"kind": kind, "metadata": {"name": "x", "generation": 2}, "status": status});
        let cases = [
            (json!({"kind": kind, "metadata": {"name": "x"}}), "Progressing"),
            (
                object(json!({"conditions": [condition("Ready", "False", "WaitingForCluster")]})),
                "Progressing",
            ),
            (
                object(json!({"conditions": [condition("Ready", "True", "Ready")]})),
                "Progressing",
            ),
            (
                object(
                    json!({"initialization": {flag: true}, "conditions": [condition("Ready", "True", "Ready")]}),
                ),
                "Healthy",
            ),
            (
                object(
                    json!({"initialization": {flag: true}, "conditions": [condition("Ready", "True", "Ready"), condition("Paused", "True", "Paused")]}),
                ),
                "Suspended",
            ),
            (
                object(json!({"conditions": [condition("Ready", "False", "PlatformMismatch")]})),
                "Degraded",
            ),
            (
                object(json!({"conditions": [condition("Ready", "False", "InstanceLaunchFailed")]})),
                "Degraded",
            ),
            (
                object(
                    json!({"initialization": {flag: true}, "conditions": [condition("Paused", "False", "NotPaused"), condition("Ready", "True", "Ready")]}),
                ),
                "Healthy",
            ),
        ];
        for (sample, expected) in cases {
            let (status, message) = argocd_health(kind, &sample);
            assert_eq!(status, expected, "{kind}: {sample} -> {message}");
        }
        // A Ready condition observed for an older generation is still progressing.
        let mut stale = object(
            json!({"initialization": {flag: true}, "conditions": [condition("Ready", "True", "Ready")]}),
        );
        stale["status"]["conditions"][0]["observedGeneration"] = json!(1);
        assert_eq!(argocd_health(kind, &stale).0, "Progressing", "{kind}");
    }
}

#[test]
fn release_puts_every_flavor_next_to_the_components_and_ships_the_addons_and_health_checks() {
    let out = std::env::temp_dir().join(format!("kubezero-release-templates-{}", std::process::id()));
    let status = std::process::Command::new("bash")
        .arg(templates::repo_root().join("scripts/release.sh"))
        .arg("--manifests-only")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("bash runs scripts/release.sh");
    assert!(status.success(), "scripts/release.sh --manifests-only failed");
    let provider = out.join("infrastructure-kubezero");
    let version = std::fs::read_dir(&provider)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(version.join("infrastructure-components.yaml").is_file());
    for (_, path) in templates::flavors() {
        let name = path.file_name().unwrap();
        assert_eq!(
            read(&version.join(name)),
            read(&path),
            "{name:?} released unchanged"
        );
    }
    for path in templates::addon_files() {
        let name = path.file_name().unwrap();
        assert_eq!(
            read(&version.join("addons").join(name)),
            read(&path),
            "addons/{name:?}"
        );
    }
    assert!(version.join("argocd-cm.yaml").is_file());
    std::fs::remove_dir_all(&out).unwrap();
}
