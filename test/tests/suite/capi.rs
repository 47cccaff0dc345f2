//! The CAPI core stand-in (`kubezero_test::capi`) against the API emulator, without the kubezero
//! managers: provider behaviour (status of KubeZeroClusters, KubeZeroMachines, KubeZeroConfigs) is
//! simulated by patching those objects here, as test setup.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{bounded, eventually};
use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::core::ApiResource;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use kubezero_test::apiserver::ApiServer;
use kubezero_test::capi::{self, CapiCore, CapiCoreOptions, CapiCoreTuning, CapiKind, WorkloadClusters};
use serde_json::{Value, json};

const NS: &str = "default";
const HOLD_FINALIZER: &str = "test.kubezero.dev/hold";

struct World {
    server: ApiServer,
    client: Client,
    core: CapiCore,
}

impl World {
    async fn start() -> World {
        World::start_with(None, CapiCoreTuning::default()).await
    }

    /// A world whose stand-in reaches workload clusters through `workload` and runs with `tuning`.
    async fn start_with(workload: Option<Arc<dyn WorkloadClusters>>, tuning: CapiCoreTuning) -> World {
        let server = ApiServer::start().await.expect("emulator starts");
        let mut crds = kubezero_provider::api::crds();
        crds.extend(kubezero_bootstrap::api::crds());
        server.install_crds(&crds).await.expect("kubezero CRDs install");
        let client = server.client().expect("client");
        CapiCore::install(client.clone())
            .await
            .expect("CAPI CRDs install");
        let options = CapiCoreOptions {
            poll_interval: Duration::from_millis(150),
            resync_interval: Duration::from_secs(2),
            workload_clusters: workload,
            ..CapiCoreOptions::default()
        };
        let core = CapiCore::start_tuned(client.clone(), options, tuning);
        World { server, client, core }
    }

    async fn stop(self) {
        self.core.stop();
        self.server.shutdown().await;
    }

    fn capi(&self, kind: CapiKind) -> Api<DynamicObject> {
        kind.api(self.client.clone(), NS)
    }

    /// A provider kind, resolved through its CRD's contract label like the stand-in does.
    async fn provider(&self, group: &str, kind: &str) -> Api<DynamicObject> {
        let ar = capi::resolve(&self.client, group, kind)
            .await
            .expect("provider kind resolves");
        Api::namespaced_with(self.client.clone(), NS, &ar)
    }

    async fn kzc(&self) -> Api<DynamicObject> {
        self.provider("infrastructure.cluster.x-k8s.io", "KubeZeroCluster")
            .await
    }
    async fn kzm(&self) -> Api<DynamicObject> {
        self.provider("infrastructure.cluster.x-k8s.io", "KubeZeroMachine")
            .await
    }
    async fn kzmt(&self) -> Api<DynamicObject> {
        self.provider("infrastructure.cluster.x-k8s.io", "KubeZeroMachineTemplate")
            .await
    }
    async fn config(&self) -> Api<DynamicObject> {
        self.provider("bootstrap.cluster.x-k8s.io", "KubeZeroConfig")
            .await
    }
    async fn config_template(&self) -> Api<DynamicObject> {
        self.provider("bootstrap.cluster.x-k8s.io", "KubeZeroConfigTemplate")
            .await
    }

    async fn create(&self, api: &Api<DynamicObject>, value: Value) -> DynamicObject {
        let obj: DynamicObject = serde_json::from_value(value).expect("object JSON");
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create {}: {e}", obj.name_any()))
    }

    /// KubeZeroCluster + Cluster `name` (optionally paused).
    async fn cluster(&self, name: &str, paused: bool) {
        let kzc = self.kzc().await;
        self.create(
            &kzc,
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroCluster",
                "metadata": {"name": name}, "spec": {"aws": {"region": "eu-central-1"}}}),
        )
        .await;
        self.create(
            &self.capi(CapiKind::Cluster),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "metadata": {"name": name},
                "spec": {"paused": paused, "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                    "kind": "KubeZeroCluster", "name": name}}}),
        )
        .await;
    }

    /// KubeZeroMachineTemplate `name` with instance type `instance_type`.
    async fn machine_template(&self, name: &str, instance_type: &str) {
        let kzmt = self.kzmt().await;
        self.create(
            &kzmt,
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroMachineTemplate",
                "metadata": {"name": name},
                "spec": {"template": {"metadata": {"labels": {"team": "platform"}},
                    "spec": {"aws": {"instanceType": instance_type, "ami": {"lookup": {"architecture": "aarch64"}}}}}}}),
        )
        .await;
    }

    /// KubeZeroConfigTemplate `name`.
    async fn config_template_named(&self, name: &str) {
        let api = self.config_template().await;
        self.create(
            &api,
            json!({"apiVersion": "bootstrap.cluster.x-k8s.io/v1alpha1", "kind": "KubeZeroConfigTemplate",
                "metadata": {"name": name},
                "spec": {"template": {"metadata": {"labels": {"kubezero.dev/pool": "workers"}},
                    "spec": {"format": "cloud-config"}}}}),
        )
        .await;
    }

    /// MachineDeployment `name` of `cluster` using machine template `template` and config template `name`.
    async fn machine_deployment(&self, name: &str, cluster: &str, template: &str, replicas: i64) {
        self.create(
            &self.capi(CapiKind::MachineDeployment),
            json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                "metadata": {"name": name},
                "spec": {"clusterName": cluster, "replicas": replicas, "selector": {"matchLabels": {}},
                    "template": {"metadata": {"labels": {"pool": name}}, "spec": {
                        "clusterName": cluster, "version": "v1.34.1",
                        "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io",
                            "kind": "KubeZeroConfigTemplate", "name": name}},
                        "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                            "kind": "KubeZeroMachineTemplate", "name": template}}}}}),
        )
        .await;
    }

    async fn scale(&self, md: &str, replicas: i64) {
        self.capi(CapiKind::MachineDeployment)
            .patch(
                md,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .expect("scale MachineDeployment");
    }

    async fn machines_of(&self, md: &str) -> Vec<DynamicObject> {
        let selector = format!("{}={md}", capi::DEPLOYMENT_NAME_LABEL);
        self.capi(CapiKind::Machine)
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("list machines")
            .items
    }
}

fn str_at<'a>(value: &'a Value, path: &str) -> Option<&'a str> {
    path.split('.')
        .try_fold(value, |v, k| v.get(k))
        .and_then(Value::as_str)
}

/// Condition `type_` of `obj`.
fn condition(obj: &DynamicObject, type_: &str) -> Option<Value> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// Deletion events observed by watches: (kind, name), in arrival order.
type Deletions = Arc<Mutex<Vec<(String, String)>>>;

/// Owner references (kind, controller) of each object (kind, name) when first seen.
type FirstOwners = Arc<Mutex<BTreeMap<(String, String), Vec<(String, bool)>>>>;

/// Records the first sighting of each object (its original owner references) and deletions (a
/// DELETED event, or the first event showing a deletionTimestamp, whichever comes first).
struct Recorder {
    deletions: Deletions,
    first_owners: FirstOwners,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder {
            deletions: Arc::default(),
            first_owners: Arc::default(),
            tasks: Vec::new(),
        }
    }

    fn watch(&mut self, api: Api<DynamicObject>, kind: &str, deletion_started: bool) {
        let (deletions, owners, kind) = (
            self.deletions.clone(),
            self.first_owners.clone(),
            kind.to_string(),
        );
        self.tasks.push(tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                let (obj, deleted) = match event {
                    Ok(watcher::Event::Apply(obj)) | Ok(watcher::Event::InitApply(obj)) => (obj, false),
                    Ok(watcher::Event::Delete(obj)) => (obj, true),
                    _ => continue,
                };
                let key = (kind.clone(), obj.name_any());
                owners.lock().unwrap().entry(key.clone()).or_insert_with(|| {
                    obj.owner_references()
                        .iter()
                        .map(|r| (r.kind.clone(), r.controller == Some(true)))
                        .collect()
                });
                let deleting = deleted || (deletion_started && obj.metadata.deletion_timestamp.is_some());
                let mut deletions = deletions.lock().unwrap();
                if deleting && !deletions.contains(&key) {
                    deletions.push(key);
                }
            }
        }));
    }

    fn position(&self, kind: &str, name: &str) -> Option<usize> {
        let key = (kind.to_string(), name.to_string());
        self.deletions.lock().unwrap().iter().position(|k| *k == key)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn owner_refs(obj: &DynamicObject) -> Vec<Value> {
    obj.owner_references()
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

#[tokio::test]
async fn machine_deployment_0_3_0_clones_owns_and_deletes_in_contract_order() {
    bounded(async {
        let world = World::start().await;
        world.cluster("demo", false).await;
        world.machine_template("workers", "m7g.large").await;
        world.config_template_named("workers").await;
        world.machine_deployment("workers", "demo", "workers", 0).await;
        let (kzm, kzc) = (world.kzm().await, world.config().await);
        let mut recorder = Recorder::new();
        recorder.watch(kzm.clone(), "KubeZeroMachine", false);
        recorder.watch(kzc.clone(), "KubeZeroConfig", false);
        recorder.watch(world.capi(CapiKind::Machine), "Machine", false);

        let ms_api = world.capi(CapiKind::MachineSet);
        let ms = eventually("the MachineSet at 0", || async {
            let list = ms_api.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|ms| ms.data["spec"]["replicas"] == json!(0))
        })
        .await;
        let ms_name = ms.name_any();
        assert_eq!(ms.labels()[capi::DEPLOYMENT_NAME_LABEL], "workers");
        assert_eq!(ms.labels()[capi::CLUSTER_NAME_LABEL], "demo");
        assert!(ms.labels().contains_key(capi::MACHINE_TEMPLATE_HASH_LABEL));
        let ms_owner = &ms.owner_references()[0];
        assert_eq!((ms_owner.kind.as_str(), ms_owner.controller), ("MachineDeployment", Some(true)));

        world.scale("workers", 3).await;
        let machines = eventually("3 Machines with swapped owners on their clones", || async {
            let machines = world.machines_of("workers").await;
            if machines.len() != 3 {
                return None;
            }
            for m in &machines {
                let infra = kzm.get_opt(&m.name_any()).await.ok()??;
                let config = kzc.get_opt(&m.name_any()).await.ok()??;
                for clone in [&infra, &config] {
                    let refs = clone.owner_references();
                    if refs.len() != 1 || refs[0].kind != "Machine" {
                        return None;
                    }
                }
                if !m.finalizers().iter().any(|f| f == capi::MACHINE_FINALIZER) {
                    return None;
                }
            }
            Some(machines)
        })
        .await;

        for machine in &machines {
            let name = machine.name_any();
            // The Machine: owned by the MachineSet (controller), labels from the template and the set.
            let owner = &machine.owner_references()[0];
            assert_eq!(owner.kind, "MachineSet");
            assert_eq!(owner.name, ms_name);
            assert_eq!(owner.controller, Some(true));
            let labels = machine.labels();
            assert_eq!(labels[capi::CLUSTER_NAME_LABEL], "demo");
            assert_eq!(labels[capi::SET_NAME_LABEL], ms_name);
            assert_eq!(labels[capi::DEPLOYMENT_NAME_LABEL], "workers");
            assert_eq!(labels["pool"], "workers");
            assert!(name.starts_with(&format!("{ms_name}-")), "{name}");
            assert_eq!(
                machine.data["spec"]["infrastructureRef"],
                json!({"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "KubeZeroMachine", "name": name})
            );
            assert_eq!(
                machine.data["spec"]["bootstrap"]["configRef"],
                json!({"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeZeroConfig", "name": name})
            );

            for (api, kind, template_gk, template_label) in [
                (
                    &kzm,
                    "KubeZeroMachine",
                    "KubeZeroMachineTemplate.infrastructure.cluster.x-k8s.io",
                    ("team", "platform"),
                ),
                (
                    &kzc,
                    "KubeZeroConfig",
                    "KubeZeroConfigTemplate.bootstrap.cluster.x-k8s.io",
                    ("kubezero.dev/pool", "workers"),
                ),
            ] {
                let clone = api.get(&name).await.unwrap();
                // Created with a non-controller ownerRef to the MachineSet ...
                let first = recorder.first_owners.lock().unwrap()[&(kind.to_string(), name.clone())].clone();
                assert_eq!(first, vec![("MachineSet".to_string(), false)], "{kind} {name} first owners");
                // ... swapped for a controller ownerRef to the Machine.
                assert_eq!(
                    owner_refs(&clone),
                    vec![json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine", "name": name,
                        "uid": machine.uid().unwrap(), "controller": true, "blockOwnerDeletion": true})],
                    "{kind} {name}"
                );
                let labels = clone.labels();
                assert_eq!(labels[capi::CLUSTER_NAME_LABEL], "demo");
                assert_eq!(labels[capi::SET_NAME_LABEL], ms_name);
                assert_eq!(labels[capi::DEPLOYMENT_NAME_LABEL], "workers");
                assert_eq!(labels[template_label.0], template_label.1);
                let annotations = clone.annotations();
                assert_eq!(annotations[capi::CLONED_FROM_NAME_ANNOTATION], "workers");
                assert_eq!(annotations[capi::CLONED_FROM_GROUPKIND_ANNOTATION], template_gk);
            }
        }

        // Simulate the providers: bootstrap data created, one machine provisioned.
        let first = machines[0].name_any();
        for machine in &machines {
            let name = machine.name_any();
            kzc.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"dataSecretName": name,
                    "initialization": {"dataSecretCreated": true}}})),
            )
            .await
            .expect("patch config status");
        }
        kzm.patch(
            &first,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"providerID": "aws:///eu-central-1a/i-0123456789abcdef0"}})),
        )
        .await
        .expect("set providerID");
        kzm.patch_status(
            &first,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"initialization": {"provisioned": true},
                "addresses": [{"type": "InternalIP", "address": "10.0.1.23"}], "failureDomain": "eu-central-1a",
                "conditions": [{"type": "Ready", "status": "True", "reason": "Provisioned", "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})),
        )
        .await
        .expect("provision machine");
        let machine_api = world.capi(CapiKind::Machine);
        for machine in &machines {
            let name = machine.name_any();
            eventually("bootstrap data copied to the Machine", || async {
                let m = machine_api.get(&name).await.ok()?;
                (str_at(&m.data, "spec.bootstrap.dataSecretName") == Some(name.as_str())
                    && m.data["status"]["initialization"]["bootstrapDataSecretCreated"] == json!(true))
                .then_some(())
            })
            .await;
        }
        let provisioned = eventually("infrastructure copied to the Machine", || async {
            let m = machine_api.get(&first).await.ok()?;
            (m.data["status"]["initialization"]["infrastructureProvisioned"] == json!(true)).then_some(m)
        })
        .await;
        assert_eq!(
            str_at(&provisioned.data, "spec.providerID"),
            Some("aws:///eu-central-1a/i-0123456789abcdef0")
        );
        assert_eq!(provisioned.data["status"]["addresses"][0]["address"], json!("10.0.1.23"));
        assert_eq!(provisioned.data["status"]["failureDomain"], json!("eu-central-1a"));
        assert_eq!(provisioned.data["status"]["phase"], json!("Provisioned"));
        let infra_ready = provisioned.data["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "InfrastructureReady")
            .cloned()
            .unwrap();
        assert_eq!(infra_ready["status"], "True");

        // The provider's finalizer holds each KubeZeroMachine while its instance is released.
        for machine in &machines {
            kzm.patch(
                &machine.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": [HOLD_FINALIZER]}})),
            )
            .await
            .expect("hold finalizer");
        }
        world.scale("workers", 0).await;
        eventually("every KubeZeroMachine deleting", || async {
            let list = kzm.list(&ListParams::default()).await.ok()?;
            (list.items.len() == 3 && list.items.iter().all(|o| o.metadata.deletion_timestamp.is_some()))
                .then_some(())
        })
        .await;
        // A few reconcile rounds later the configs are still untouched: infra first, and waited for.
        world.core.reconcile_rounds(CapiKind::Machine, 9).await.expect("Machine reconciles");
        let configs = kzc.list(&ListParams::default()).await.unwrap().items;
        assert_eq!(configs.len(), 3);
        assert!(configs.iter().all(|c| c.metadata.deletion_timestamp.is_none()));
        assert_eq!(world.machines_of("workers").await.len(), 3, "Machines wait for their infra");

        for machine in &machines {
            kzm.patch(
                &machine.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .expect("release finalizer");
        }
        eventually("Machines, KubeZeroMachines and KubeZeroConfigs gone", || async {
            let gone = world.machines_of("workers").await.is_empty()
                && kzm.list(&ListParams::default()).await.ok()?.items.is_empty()
                && kzc.list(&ListParams::default()).await.ok()?.items.is_empty();
            gone.then_some(())
        })
        .await;
        for machine in &machines {
            let name = machine.name_any();
            let infra = recorder.position("KubeZeroMachine", &name).expect("infra deletion seen");
            let config = recorder.position("KubeZeroConfig", &name).expect("config deletion seen");
            let gone = recorder.position("Machine", &name).expect("machine deletion seen");
            assert!(infra < config, "{name}: infra deleted before bootstrap config");
            assert!(config < gone, "{name}: bootstrap config deleted before the Machine");
        }
        let ms_left = ms_api.get(&ms_name).await.expect("MachineSet stays at 0");
        assert_eq!(ms_left.data["spec"]["replicas"], json!(0));
        drop(recorder);
        world.stop().await;
    })
    .await;
}

/// A self-signed CA as `<cluster>-ca` would hold it (PEM `tls.crt`/`tls.key`).
fn ca_secret(cluster: &str) -> Secret {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kubernetes");
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("{cluster}-ca")),
            labels: Some(BTreeMap::from([(
                capi::CLUSTER_NAME_LABEL.to_string(),
                cluster.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some(capi::CLUSTER_SECRET_TYPE.to_string()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_string(), ByteString(cert.pem().into_bytes())),
            (
                "tls.key".to_string(),
                ByteString(key.serialize_pem().into_bytes()),
            ),
        ])),
        ..Secret::default()
    }
}

#[tokio::test]
async fn cluster_copies_infra_provisioning_endpoint_and_writes_kubeconfig() {
    bounded(async {
        let world = World::start().await;
        world.cluster("demo", false).await;
        let kzc = world.kzc().await;
        let clusters = world.capi(CapiKind::Cluster);
        let cluster = eventually("Cluster finalizer and InfraCluster owner", || async {
            let cluster = clusters.get("demo").await.ok()?;
            let infra = kzc.get("demo").await.ok()?;
            (cluster.finalizers().iter().any(|f| f == capi::CLUSTER_FINALIZER)
                && !infra.owner_references().is_empty())
            .then_some(cluster)
        })
        .await;
        let infra = kzc.get("demo").await.unwrap();
        assert_eq!(
            owner_refs(&infra),
            vec![json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster", "name": "demo",
                "uid": cluster.uid().unwrap()})]
        );
        assert_eq!(infra.labels()[capi::CLUSTER_NAME_LABEL], "demo");
        assert_ne!(cluster.data["status"]["initialization"]["infrastructureProvisioned"], json!(true));

        // Simulate the infrastructure provider.
        kzc.patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"controlPlaneEndpoint": {"host": "10.0.0.10", "port": 6443}}})),
        )
        .await
        .expect("endpoint");
        kzc.patch_status(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"initialization": {"provisioned": true},
                "failureDomains": [{"name": "eu-central-1a", "controlPlane": true}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "Provisioned", "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})),
        )
        .await
        .expect("provisioned");
        let cluster = eventually("Cluster infrastructureProvisioned", || async {
            let c = clusters.get("demo").await.ok()?;
            (c.data["status"]["initialization"]["infrastructureProvisioned"] == json!(true)).then_some(c)
        })
        .await;
        assert_eq!(
            cluster.data["spec"]["controlPlaneEndpoint"],
            json!({"host": "10.0.0.10", "port": 6443})
        );
        assert_eq!(
            cluster.data["status"]["failureDomains"],
            json!([{"name": "eu-central-1a", "controlPlane": true}])
        );
        let condition = |c: &DynamicObject, t: &str| {
            c.data["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|x| x["type"] == t).cloned())
        };
        assert_eq!(condition(&cluster, "InfrastructureReady").unwrap()["status"], "True");
        assert_eq!(condition(&cluster, "ControlPlaneInitialized").unwrap()["status"], "False");

        // Kubeconfig from <cluster>-ca (§6).
        let secrets = Api::<Secret>::namespaced(world.client.clone(), NS);
        secrets.create(&PostParams::default(), &ca_secret("demo")).await.unwrap();
        let kubeconfig = eventually("demo-kubeconfig", || async { secrets.get_opt("demo-kubeconfig").await.ok()? })
            .await;
        assert_eq!(kubeconfig.type_.as_deref(), Some(capi::CLUSTER_SECRET_TYPE));
        assert_eq!(kubeconfig.labels()[capi::CLUSTER_NAME_LABEL], "demo");
        let owner = &kubeconfig.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("Cluster", None));
        let value = String::from_utf8(kubeconfig.data.unwrap()["value"].0.clone()).unwrap();
        let parsed = Kubeconfig::from_yaml(&value).expect("kubeconfig parses");
        assert_eq!(parsed.current_context.as_deref(), Some("demo-admin@demo"));
        let server = parsed.clusters[0].cluster.as_ref().unwrap().server.clone();
        assert_eq!(server.as_deref(), Some("https://10.0.0.10:6443"));
        let user = parsed.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(user.client_certificate_data.is_some() && user.client_key_data.is_some());

        // ControlPlaneInitialized once a control-plane Machine has a nodeRef (§6).
        let machines = world.capi(CapiKind::Machine);
        world
            .create(
                &machines,
                json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Machine",
                "metadata": {"name": "demo-cp-0", "labels": {"cluster.x-k8s.io/control-plane": ""}},
                "spec": {"clusterName": "demo", "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                    "kind": "KubeZeroMachine", "name": "demo-cp-0"}}}),
            )
            .await;
        machines
            .patch_status(
                "demo-cp-0",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"nodeRef": {"name": "node-0"}}})),
            )
            .await
            .unwrap();
        eventually("ControlPlaneInitialized", || async {
            let c = clusters.get("demo").await.ok()?;
            (condition(&c, "ControlPlaneInitialized")?["status"] == "True").then_some(())
        })
        .await;

        // Provisioned never flips back.
        kzc.patch_status(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"initialization": {"provisioned": false}}})),
        )
        .await
        .unwrap();
        world.core.reconcile_rounds(CapiKind::Cluster, 2).await.expect("Cluster reconciles");
        let cluster = clusters.get("demo").await.unwrap();
        assert_eq!(cluster.data["status"]["initialization"]["infrastructureProvisioned"], json!(true));
        world.stop().await;
    })
    .await;
}

#[tokio::test]
async fn delete_machine_annotation_picks_the_scale_down_victim() {
    bounded(async {
        let world = World::start().await;
        world.cluster("demo", false).await;
        world.machine_template("workers", "m7g.large").await;
        world.config_template_named("workers").await;
        world.machine_deployment("workers", "demo", "workers", 3).await;
        let machines = eventually("3 Machines", || async {
            let m = world.machines_of("workers").await;
            (m.len() == 3).then_some(m)
        })
        .await;
        let mut names: Vec<String> = machines.iter().map(|m| m.name_any()).collect();
        names.sort();
        // Pick the victim the default order would not pick first on its own, for every order.
        for victim in [names[1].clone()] {
            world
                .capi(CapiKind::Machine)
                .patch(
                    &victim,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {capi::DELETE_MACHINE_ANNOTATION: "yes"}}}),
                    ),
                )
                .await
                .unwrap();
            world.scale("workers", 2).await;
            let left = eventually("2 Machines", || async {
                let m = world.machines_of("workers").await;
                (m.len() == 2).then_some(m)
            })
            .await;
            let mut left: Vec<String> = left.iter().map(|m| m.name_any()).collect();
            left.sort();
            let expected: Vec<String> = names.iter().filter(|n| **n != victim).cloned().collect();
            assert_eq!(left, expected, "the annotated Machine {victim} was the victim");
        }
        world.stop().await;
    })
    .await;
}

#[tokio::test]
async fn template_change_rolls_out_a_new_machineset() {
    bounded(async {
        let world = World::start().await;
        world.cluster("demo", false).await;
        world.machine_template("workers-a", "m7g.large").await;
        world.machine_template("workers-b", "m7g.xlarge").await;
        world.config_template_named("workers").await;
        world.machine_deployment("workers", "demo", "workers-a", 2).await;
        let ms_api = world.capi(CapiKind::MachineSet);
        let old = eventually("2 Machines of the first MachineSet", || async {
            let m = world.machines_of("workers").await;
            (m.len() == 2).then(|| m[0].labels()[capi::SET_NAME_LABEL].clone())
        })
        .await;

        world
            .capi(CapiKind::MachineDeployment)
            .patch(
                "workers",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"template": {"spec": {"infrastructureRef": {"name": "workers-b"}}}}}),
                ),
            )
            .await
            .unwrap();
        let kzm = world.kzm().await;
        let new = eventually("rollout to a new MachineSet", || async {
            let sets = ms_api.list(&ListParams::default()).await.ok()?.items;
            if sets.len() != 1 || sets[0].name_any() == old {
                return None;
            }
            let machines = world.machines_of("workers").await;
            if machines.len() != 2 {
                return None;
            }
            for m in &machines {
                if m.labels()[capi::SET_NAME_LABEL] != sets[0].name_any() {
                    return None;
                }
                let infra = kzm.get_opt(&m.name_any()).await.ok()??;
                if infra
                    .annotations()
                    .get(capi::CLONED_FROM_NAME_ANNOTATION)
                    .map(String::as_str)
                    != Some("workers-b")
                {
                    return None;
                }
            }
            Some(sets[0].clone())
        })
        .await;
        assert_ne!(
            new.labels()[capi::MACHINE_TEMPLATE_HASH_LABEL],
            old.rsplit('-').next().unwrap_or_default(),
            "new template hash"
        );
        assert!(
            new.name_any()
                .ends_with(&new.labels()[capi::MACHINE_TEMPLATE_HASH_LABEL])
        );
        eventually("old KubeZeroMachines gone", || async {
            let all = kzm.list(&ListParams::default()).await.ok()?.items;
            (all.len() == 2).then_some(())
        })
        .await;
        world.stop().await;
    })
    .await;
}

#[tokio::test]
async fn cluster_deletion_removes_descendants_before_the_infra_cluster() {
    bounded(async {
        let world = World::start().await;
        world.cluster("demo", false).await;
        world.machine_template("workers", "m7g.large").await;
        world.config_template_named("workers").await;
        world.machine_deployment("workers", "demo", "workers", 2).await;
        let machines = eventually("2 Machines", || async {
            let m = world.machines_of("workers").await;
            (m.len() == 2).then_some(m)
        })
        .await;
        let clusters = world.capi(CapiKind::Cluster);
        eventually("Cluster finalizer", || async {
            let c = clusters.get("demo").await.ok()?;
            c.finalizers()
                .iter()
                .any(|f| f == capi::CLUSTER_FINALIZER)
                .then_some(())
        })
        .await;
        let kzc = world.kzc().await;
        let mut recorder = Recorder::new();
        recorder.watch(kzc.clone(), "KubeZeroCluster", true);
        recorder.watch(world.capi(CapiKind::Machine), "Machine", false);
        recorder.watch(world.capi(CapiKind::MachineSet), "MachineSet", false);
        recorder.watch(
            world.capi(CapiKind::MachineDeployment),
            "MachineDeployment",
            false,
        );
        // One Machine's infra is held by a provider finalizer: the Cluster must wait for it.
        let held = machines[0].name_any();
        let kzm = world.kzm().await;
        kzm.patch(
            &held,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": [HOLD_FINALIZER]}})),
        )
        .await
        .unwrap();

        clusters.delete("demo", &Default::default()).await.unwrap();
        eventually("held KubeZeroMachine deleting", || async {
            let o = kzm.get(&held).await.ok()?;
            o.metadata.deletion_timestamp.is_some().then_some(())
        })
        .await;
        world
            .core
            .reconcile_rounds(CapiKind::Cluster, 2)
            .await
            .expect("Cluster reconciles");
        let infra = kzc.get("demo").await.expect("InfraCluster still there");
        assert!(
            infra.metadata.deletion_timestamp.is_none(),
            "InfraCluster waits for the descendants"
        );
        assert!(clusters.get_opt("demo").await.unwrap().is_some());

        kzm.patch(
            &held,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
        eventually("Cluster and InfraCluster gone", || async {
            let gone =
                clusters.get_opt("demo").await.ok()?.is_none() && kzc.get_opt("demo").await.ok()?.is_none();
            gone.then_some(())
        })
        .await;
        let infra_deleted = recorder
            .position("KubeZeroCluster", "demo")
            .expect("InfraCluster deletion seen");
        let mut descendants: Vec<(String, String)> = machines
            .iter()
            .map(|m| ("Machine".to_string(), m.name_any()))
            .collect();
        descendants.push(("MachineDeployment".to_string(), "workers".to_string()));
        for (kind, name) in descendants {
            let position = recorder
                .position(&kind, &name)
                .unwrap_or_else(|| panic!("{kind} {name} deletion seen"));
            assert!(
                position < infra_deleted,
                "{kind} {name} deleted before the InfraCluster"
            );
        }
        assert!(world.machines_of("workers").await.is_empty());
        assert!(
            world
                .capi(CapiKind::MachineSet)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        drop(recorder);
        world.stop().await;
    })
    .await;
}

#[tokio::test]
async fn paused_cluster_is_left_alone() {
    bounded(async {
        let world = World::start().await;
        world.cluster("demo", true).await;
        world.machine_template("workers", "m7g.large").await;
        world.config_template_named("workers").await;
        world.machine_deployment("workers", "demo", "workers", 2).await;
        let clusters = world.capi(CapiKind::Cluster);
        let ms_api = world.capi(CapiKind::MachineSet);
        let kzc = world.kzc().await;
        // Several reconciles: core adds its finalizer and the Paused condition, nothing else.
        world
            .core
            .reconcile_rounds(CapiKind::Cluster, 3)
            .await
            .expect("Cluster reconciles");
        let cluster = clusters.get("demo").await.unwrap();
        assert_eq!(
            cluster.finalizers(),
            [capi::CLUSTER_FINALIZER],
            "the finalizer comes first"
        );
        let status = cluster.data["status"].as_object().cloned().unwrap_or_default();
        assert_eq!(
            status.keys().collect::<Vec<_>>(),
            ["conditions"],
            "only conditions while paused"
        );
        let paused = condition(&cluster, "Paused").expect("Paused condition");
        assert_eq!(
            (
                paused["status"].as_str(),
                paused["reason"].as_str(),
                paused["message"].as_str()
            ),
            (
                Some("True"),
                Some("Paused"),
                Some("Cluster spec.paused is set to true")
            )
        );
        assert_eq!(
            cluster.data["status"]["conditions"].as_array().map(Vec::len),
            Some(1)
        );
        let md = world
            .capi(CapiKind::MachineDeployment)
            .get("workers")
            .await
            .unwrap();
        assert_eq!(
            condition(&md, "Paused").expect("MachineDeployment Paused")["status"],
            "True"
        );
        assert!(kzc.get("demo").await.unwrap().owner_references().is_empty());
        assert!(
            ms_api
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );

        clusters
            .patch(
                "demo",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"paused": false}})),
            )
            .await
            .unwrap();
        eventually("2 Machines after unpausing", || async {
            (world.machines_of("workers").await.len() == 2).then_some(())
        })
        .await;

        clusters
            .patch(
                "demo",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"paused": true}})),
            )
            .await
            .unwrap();
        // Let any reconcile that started before the pause finish.
        tokio::time::sleep(Duration::from_millis(500)).await;
        world.scale("workers", 0).await;
        world
            .core
            .reconcile_rounds(CapiKind::MachineDeployment, 2)
            .await
            .expect("MachineDeployment reconciles");
        world
            .core
            .reconcile_rounds(CapiKind::MachineSet, 2)
            .await
            .expect("MachineSet reconciles");
        let machines = world.machines_of("workers").await;
        assert_eq!(machines.len(), 2, "scale-down ignored while paused");
        assert!(machines.iter().all(|m| m.metadata.deletion_timestamp.is_none()));
        let md = world
            .capi(CapiKind::MachineDeployment)
            .get("workers")
            .await
            .unwrap();
        let set = ms_api.list(&ListParams::default()).await.unwrap().items;
        assert_eq!(
            set[0].data["spec"]["replicas"],
            json!(2),
            "MachineSet not scaled while paused"
        );
        assert_eq!(md.data["spec"]["replicas"], json!(0));
        world.stop().await;
    })
    .await;
}

/// A workload cluster the stand-in always reaches: one more emulator.
struct OneWorkload(Client);

impl WorkloadClusters for OneWorkload {
    fn client<'a>(&'a self, _namespace: &'a str, _name: &'a str) -> BoxFuture<'a, Option<Client>> {
        Box::pin(async move { Some(self.0.clone()) })
    }
}

/// The providers and the kubelets, simulated one step at a time for one Machine.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// The KubeZeroConfig has its data Secret.
    Bootstrap,
    /// The KubeZeroMachine has its instance.
    Infrastructure,
    /// The Node registered, Ready and without pressure.
    Node,
}

impl World {
    /// Runs `step` of Machine `name` (whose clones share its name).
    async fn provide(&self, workload: &Client, name: &str, step: Step) {
        let ready = json!([{"type": "Ready", "status": "True", "reason": "Ready", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        let provider_id = format!("aws:///eu-central-1a/i-{name}");
        match step {
            Step::Bootstrap => {
                self.config()
                    .await
                    .patch_status(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"dataSecretName": name,
                            "initialization": {"dataSecretCreated": true}, "conditions": ready}})),
                    )
                    .await
                    .expect("bootstrap data");
            }
            Step::Infrastructure => {
                let kzm = self.kzm().await;
                kzm.patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"providerID": provider_id}})),
                )
                .await
                .expect("providerID");
                kzm.patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"status": {"initialization": {"provisioned": true}, "conditions": ready}}),
                    ),
                )
                .await
                .expect("instance");
            }
            Step::Node => {
                let condition = |type_: &str, status: &str| {
                    json!({"type": type_, "status": status, "reason": "Kubelet", "message": "",
                        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"})
                };
                let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("node-{name}")},
                    "spec": {"providerID": provider_id},
                    "status": {"conditions": [condition("Ready", "True"), condition("MemoryPressure", "False"),
                        condition("DiskPressure", "False"), condition("PIDPressure", "False")]}}))
                .expect("Node JSON");
                Api::<k8s_openapi::api::core::v1::Node>::all(workload.clone())
                    .create(&PostParams::default(), &node)
                    .await
                    .expect("Node");
            }
        }
    }

    /// The Cluster once it has not changed for a while: its resourceVersion and status.
    async fn settled_cluster(&self) -> (String, Value) {
        let clusters = self.capi(CapiKind::Cluster);
        let mut last = clusters.get("demo").await.expect("Cluster");
        loop {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let now = clusters.get("demo").await.expect("Cluster");
            if now.resource_version() == last.resource_version() {
                return (
                    now.resource_version().unwrap_or_default(),
                    now.data["status"].clone(),
                );
            }
            last = now;
        }
    }
}

fn status_condition(status: &Value, type_: &str) -> Option<Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// Every version of the Cluster `demo` the watch delivers.
fn record_cluster_versions(api: Api<DynamicObject>) -> (Arc<Mutex<Vec<Value>>>, tokio::task::JoinHandle<()>) {
    let versions: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = versions.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) = event
                && obj.name_any() == "demo"
            {
                seen.lock().unwrap().push(obj.data["status"].clone());
            }
        }
    });
    (versions, task)
}

#[tokio::test]
async fn cluster_status_counters_and_conditions_follow_every_machine_change() {
    bounded(async {
        let workload_server = ApiServer::start().await.expect("workload emulator starts");
        let workload = workload_server.client().expect("workload client");
        let world = World::start_with(
            Some(Arc::new(OneWorkload(workload.clone()))),
            CapiCoreTuning::default(),
        )
        .await;
        world.cluster("demo", false).await;
        let kzc = world.kzc().await;
        kzc.patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"controlPlaneEndpoint": {"host": "10.0.0.10", "port": 6443}}})),
        )
        .await
        .expect("endpoint");
        kzc.patch_status(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"initialization": {"provisioned": true},
                "conditions": [{"type": "Ready", "status": "True", "reason": "Provisioned", "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})),
        )
        .await
        .expect("provisioned");
        // A control plane of one Machine (a MachineDeployment of Machines labelled control-plane).
        world.machine_template("cp", "m7g.large").await;
        world.config_template_named("cp").await;
        world.config_template_named("workers").await;
        world
            .create(
                &world.capi(CapiKind::MachineDeployment),
                json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
                    "metadata": {"name": "cp"},
                    "spec": {"clusterName": "demo", "replicas": 1, "selector": {"matchLabels": {}},
                        "rollout": {"strategy": {"type": "OnDelete"}},
                        "template": {"metadata": {"labels": {"cluster.x-k8s.io/control-plane": ""}}, "spec": {
                            "clusterName": "demo", "version": "v1.34.1",
                            "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io",
                                "kind": "KubeZeroConfigTemplate", "name": "cp"}},
                            "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                "kind": "KubeZeroMachineTemplate", "name": "cp"}}}}}),
            )
            .await;
        let cp = eventually("the control-plane Machine", || async {
            world.machines_of("cp").await.into_iter().next()
        })
        .await
        .name_any();
        for step in [Step::Bootstrap, Step::Infrastructure, Step::Node] {
            world.provide(&workload, &cp, step).await;
        }
        let clusters = world.capi(CapiKind::Cluster);
        eventually(
            "ControlPlaneInitialized and the control plane counted",
            || async {
                let c = clusters.get("demo").await.ok()?;
                let initialized = condition(&c, "ControlPlaneInitialized")?["status"] == "True";
                (initialized && c.data["status"]["controlPlane"]["readyReplicas"] == json!(1)).then_some(())
            },
        )
        .await;

        // Workers without their KubeZeroMachineTemplate: core reports the blocked scale-up.
        let (versions, recorder) = record_cluster_versions(world.capi(CapiKind::Cluster));
        world.machine_deployment("workers", "demo", "workers", 0).await;
        world.scale("workers", 3).await;
        let scaling = eventually("ScalingUp True on the Cluster", || async {
            let c = clusters.get("demo").await.ok()?;
            let scaling = condition(&c, "ScalingUp")?;
            (scaling["status"] == "True").then_some(scaling)
        })
        .await;
        assert_eq!(scaling["reason"], "ScalingUp");
        assert_eq!(
            scaling["message"],
            "* MachineDeployment workers: Scaling up from 0 to 3 replicas is blocked because \
             KubeZeroMachineTemplate does not exist"
        );
        world.machine_template("workers", "m7g.large").await;
        let workers = eventually("3 worker Machines", || async {
            let machines = world.machines_of("workers").await;
            (machines.len() == 3).then_some(machines)
        })
        .await;

        // One provider step of one Machine at a time: each rewrites the Cluster's status.
        let mut rewrites = 0;
        for machine in &workers {
            let name = machine.name_any();
            for step in [Step::Bootstrap, Step::Infrastructure, Step::Node] {
                let (version, before) = world.settled_cluster().await;
                world.provide(&workload, &name, step).await;
                let what = format!("the Cluster rewritten after {step:?} of {name}");
                eventually(&what, || async {
                    let c = clusters.get("demo").await.ok()?;
                    let rewritten = c.resource_version().as_deref() != Some(version.as_str())
                        && status_condition(&c.data["status"], "WorkerMachinesReady")
                            != status_condition(&before, "WorkerMachinesReady");
                    rewritten.then_some(())
                })
                .await;
                rewrites += 1;
            }
        }
        assert_eq!(rewrites, 9);

        let cluster = eventually("every worker ready, available and counted", || async {
            let c = clusters.get("demo").await.ok()?;
            let available = condition(&c, "WorkersAvailable")?["status"] == "True";
            (available && c.data["status"]["workers"]["availableReplicas"] == json!(4)).then_some(c)
        })
        .await;
        // The providers read Machines through their typed shim: what the stand-in wrote must
        // deserialize there (an object that does not would stop a provider's watch).
        for machine in world.machines_of("workers").await {
            let name = machine.name_any();
            let typed: kubezero_capi::core::Machine =
                serde_json::from_value(serde_json::to_value(&machine).expect("a Machine as JSON"))
                    .unwrap_or_else(|error| panic!("Machine {name} as the typed shim: {error}"));
            let conditions = typed.status.map(|status| status.conditions).unwrap_or_default();
            assert!(
                kubezero_capi::conditions::is_true(&conditions, "Available"),
                "Machine {name} Available in the typed shim: {conditions:?}"
            );
        }
        // Core sums every MachineDeployment into `workers`, the control-plane one included.
        assert_eq!(
            cluster.data["status"]["workers"],
            json!({"desiredReplicas": 4, "replicas": 4, "readyReplicas": 4, "availableReplicas": 4,
                "upToDateReplicas": 4})
        );
        assert_eq!(
            cluster.data["status"]["controlPlane"],
            json!({"desiredReplicas": 1, "replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                "upToDateReplicas": 1})
        );
        for (type_, status, reason) in [
            ("WorkersAvailable", "True", "Available"),
            ("WorkerMachinesReady", "True", "Ready"),
            ("WorkerMachinesUpToDate", "True", "UpToDate"),
            ("ControlPlaneMachinesReady", "True", "Ready"),
            ("ScalingUp", "False", "NotScalingUp"),
            ("ScalingDown", "False", "NotScalingDown"),
            ("RollingOut", "False", "NotRollingOut"),
            ("RemoteConnectionProbe", "True", "ProbeSucceeded"),
            ("InfrastructureReady", "True", "Provisioned"),
            ("Deleting", "False", "NotDeleting"),
            ("Paused", "False", "NotPaused"),
        ] {
            let c = condition(&cluster, type_).unwrap_or_else(|| panic!("{type_} missing"));
            assert_eq!(
                (c["status"].as_str(), c["reason"].as_str()),
                (Some(status), Some(reason)),
                "{type_}: {c}"
            );
        }
        recorder.abort();
        let versions = versions.lock().unwrap().clone();
        // Every Cluster status written on the way reads as the providers' typed status.
        for status in versions.iter().filter(|status| !status.is_null()) {
            if let Err(error) = serde_json::from_value::<kubezero_capi::core::ClusterStatus>(status.clone()) {
                panic!("a Cluster status the typed shim refuses ({error}): {status}");
            }
        }
        let waiting_messages: Vec<String> = versions
            .iter()
            .filter_map(|s| status_condition(s, "WorkerMachinesReady"))
            .filter_map(|c| c["message"].as_str().map(str::to_string))
            .filter(|m| m.contains("Waiting for KubeZeroMachine to report spec.providerID"))
            .collect();
        assert!(
            !waiting_messages.is_empty(),
            "the Cluster carried the Machines' own messages on the way"
        );
        let ready_counts: Vec<i64> = versions
            .iter()
            .filter_map(|s| s["workers"]["readyReplicas"].as_i64())
            .collect();
        for ready in 1..=4 {
            assert!(
                ready_counts.contains(&ready),
                "workers.readyReplicas {ready} written: {ready_counts:?}"
            );
        }
        world.stop().await;
        workload_server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn machineset_never_exceeds_its_replicas_while_its_machine_cache_lags() {
    bounded(async {
        let tuning = CapiCoreTuning {
            machine_cache_lag: Duration::from_secs(2),
            expectation_timeout: Duration::from_millis(500),
        };
        let world = World::start_with(None, tuning).await;
        world.cluster("demo", false).await;
        world.machine_template("workers", "m7g.large").await;
        world.config_template_named("workers").await;
        world.machine_deployment("workers", "demo", "workers", 0).await;
        // Every Machine the API server holds, at every watch event: (existing, not deleting).
        let counts: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
        let seen = counts.clone();
        let machines_api = world.capi(CapiKind::Machine);
        let watch = tokio::spawn(async move {
            let mut alive: BTreeMap<String, bool> = BTreeMap::new();
            let mut stream = watcher(machines_api, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) => {
                        alive.insert(m.name_any(), m.metadata.deletion_timestamp.is_some());
                    }
                    Ok(watcher::Event::Delete(m)) => {
                        alive.remove(&m.name_any());
                    }
                    _ => continue,
                }
                let deleting = alive.values().filter(|d| **d).count();
                seen.lock().unwrap().push((alive.len(), alive.len() - deleting));
            }
        });

        world.scale("workers", 25).await;
        eventually("25 Machines", || async {
            (world.machines_of("workers").await.len() == 25).then_some(())
        })
        .await;
        // Longer than the cache lag, several expectation timeouts and many MachineSet reconciles.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let up_to = counts.lock().unwrap().len();
        let max = counts
            .lock()
            .unwrap()
            .iter()
            .map(|(all, _)| *all)
            .max()
            .unwrap_or(0);
        assert_eq!(
            max, 25,
            "at most spec.replicas Machines at any point of the scale-up"
        );

        world.scale("workers", 5).await;
        eventually("5 Machines", || async {
            (world.machines_of("workers").await.len() == 5).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        watch.abort();
        let counts = counts.lock().unwrap().clone();
        let min_alive = counts[up_to..].iter().map(|(_, alive)| *alive).min().unwrap_or(0);
        assert_eq!(
            min_alive, 5,
            "never fewer than spec.replicas Machines left standing on the scale-down"
        );
        assert!(counts.iter().all(|(all, _)| *all <= 25));
        assert_eq!(world.machines_of("workers").await.len(), 5);
        world.stop().await;
    })
    .await;
}

#[test]
fn crds_carry_the_core_contract_labels_and_columns() {
    let crds = capi::crds();
    let names: Vec<String> = crds.iter().map(|c| c.name_any()).collect();
    assert_eq!(
        names,
        [
            "clusters.cluster.x-k8s.io",
            "machines.cluster.x-k8s.io",
            "machinesets.cluster.x-k8s.io",
            "machinedeployments.cluster.x-k8s.io"
        ]
    );
    for crd in &crds {
        assert_eq!(crd.labels()["cluster.x-k8s.io/v1beta2"], "v1beta2");
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let ar: ApiResource = capi::resource_from_crd(crd).unwrap();
        assert_eq!(ar.api_version, "cluster.x-k8s.io/v1beta2");
    }
    let columns = |i: usize| -> Vec<String> {
        crds[i].spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect()
    };
    assert!(columns(0).contains(&"Phase".to_string()));
    assert!(columns(1).contains(&"ProviderID".to_string()) && columns(1).contains(&"Phase".to_string()));
    assert!(columns(3).contains(&"Replicas".to_string()));
    assert!(
        crds[3].spec.versions[0]
            .subresources
            .as_ref()
            .unwrap()
            .scale
            .is_some()
    );
}
