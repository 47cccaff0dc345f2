//! KubeZeroMachineTemplate status controller: fills `status.capacity` and `status.nodeInfo` of AWS
//! templates from DescribeInstanceTypes (cached per region and type), so the cluster autoscaler can
//! scale a MachineDeployment up from zero (contract §3.1).
//!
//! A template does not name its region: it is that of the KubeZeroCluster of the Cluster the
//! template belongs to, found by the `cluster.x-k8s.io/cluster-name` label, a Cluster owner
//! reference, or the MachineDeployments and MachineSets that use the template.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use kubezero_capi::conditions::{Condition, HasConditions, Observed};
use kubezero_capi::contract::{CAPI_GROUP, CAPI_VERSION, READY_CONDITION};
use kubezero_capi::owner::{cluster_name_label, get_cluster, owner_cluster_name};
use kubezero_capi::runtime::Context;
use kubezero_capi::runtime::errors::ErrorClass;
use kubezero_capi::runtime::reconcile::{
    changes_controller, describe, namespace_of, run_controller, write_conditions,
};
use tracing::Instrument;

use super::machine::MachineError;
use super::{Error, FIELD_MANAGER, reasons};
use crate::api::{GROUP, KubeZeroCluster, KubeZeroMachineTemplate, KubeZeroMachineTemplateStatus};
use crate::aws::clients::{AwsIdentity, ClientRegistry};
use crate::aws::instance_types::{InstanceTypeCache, InstanceTypeError};

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "kubezeromachinetemplate";
/// How often a template's capacity is refreshed.
pub const RESYNC: Duration = Duration::from_secs(3600);
/// How soon to look again while the template's Cluster is unknown.
pub const WAIT_REQUEUE: Duration = Duration::from_secs(60);

impl HasConditions for KubeZeroMachineTemplate {
    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map_or(&[], |status| status.conditions.as_slice())
    }
}

struct State {
    clients: Arc<ClientRegistry>,
    instance_types: InstanceTypeCache,
}

/// Runs the KubeZeroMachineTemplate controller until the manager shuts down.
pub async fn run(context: Context, clients: Arc<ClientRegistry>) {
    let state = Arc::new(State {
        clients,
        instance_types: InstanceTypeCache::default(),
    });
    // Its own status writes do not wake it again.
    run_controller(
        changes_controller::<KubeZeroMachineTemplate>(&context),
        CONTROLLER,
        context,
        move |template, context| reconcile(template, context, state.clone()),
    )
    .await;
}

async fn reconcile(
    template: Arc<KubeZeroMachineTemplate>,
    context: Arc<Context>,
    state: Arc<State>,
) -> Result<Action, MachineError> {
    let _timer = context.metrics.reconcile(CONTROLLER);
    let name = template.name_any();
    let namespace = namespace_of(template.as_ref())?;
    let span = tracing::info_span!("reconcile", controller = CONTROLLER, %namespace, %name);
    async {
        let Some(aws_spec) = template.spec.template.spec.aws.as_ref() else {
            return Ok(Action::await_change());
        };
        let api: Api<KubeZeroMachineTemplate> = Api::namespaced(context.client.clone(), &namespace);
        let Some(region) = region_of(&context, &namespace, &template).await? else {
            let ready = Observed::false_(
                READY_CONDITION,
                reasons::WAITING_FOR_CLUSTER,
                "waiting for a Cluster using this template (label, owner, or a MachineDeployment)",
            );
            write_ready(&api, &template, &context, ready, previous(&template)).await?;
            return Ok(Action::requeue(WAIT_REQUEUE));
        };
        let object = describe("KubeZeroMachineTemplate", &namespace, &name);
        let described = match state.clients.clients(&AwsIdentity::DefaultChain, &region).await {
            Ok(aws) => state
                .instance_types
                .get(&aws, &aws_spec.instance_type)
                .await
                .map_err(|error| {
                    let reason = match error {
                        InstanceTypeError::Unknown(_) => reasons::INVALID_INSTANCE_TYPE,
                        InstanceTypeError::Describe { .. } => reasons::AWS_REQUEST_FAILED,
                    };
                    MachineError::cloud(&object, reason, error.class(), error)
                }),
            Err(error) => Err(MachineError::cloud(
                &object,
                reasons::AWS_REQUEST_FAILED,
                ErrorClass::Invalid,
                error,
            )),
        };
        match described {
            Ok(instance_type) => {
                let ready = Observed::true_(
                    READY_CONDITION,
                    reasons::CAPACITY_KNOWN,
                    format!(
                        "{}: {} vCPU, {} MiB",
                        instance_type.instance_type, instance_type.vcpus, instance_type.memory_mib
                    ),
                );
                let status = KubeZeroMachineTemplateStatus {
                    capacity: instance_type.capacity(),
                    node_info: Some(instance_type.node_info()),
                    conditions: Vec::new(),
                };
                write_ready(&api, &template, &context, ready, status).await?;
                Ok(Action::requeue(RESYNC))
            }
            Err(error) => {
                if let MachineError::Cloud { reason, message, .. } = &error {
                    let ready = Observed::false_(READY_CONDITION, reason, message.clone());
                    write_ready(&api, &template, &context, ready, previous(&template)).await?;
                }
                Err(error)
            }
        }
    }
    .instrument(span)
    .await
}

/// Writes `ready` with `status` as the rest of the template's status.
async fn write_ready(
    api: &Api<KubeZeroMachineTemplate>,
    template: &KubeZeroMachineTemplate,
    context: &Context,
    ready: Observed,
    status: KubeZeroMachineTemplateStatus,
) -> Result<(), Error> {
    write_conditions(
        api,
        template,
        context,
        FIELD_MANAGER,
        &[ready],
        &[],
        |conditions| KubeZeroMachineTemplateStatus { conditions, ..status },
    )
    .await
}

/// The template's status without its conditions.
fn previous(template: &KubeZeroMachineTemplate) -> KubeZeroMachineTemplateStatus {
    let mut status = template.status.clone().unwrap_or_default();
    status.conditions.clear();
    status
}

/// The region of the template's Cluster, `None` while no Cluster is known.
async fn region_of(
    context: &Context,
    namespace: &str,
    template: &KubeZeroMachineTemplate,
) -> Result<Option<String>, Error> {
    let mut cluster_name = cluster_name_label(&template.metadata)
        .map(str::to_owned)
        .or_else(|| owner_cluster_name(&template.metadata));
    if cluster_name.is_none() {
        cluster_name = user_cluster(context, namespace, &template.name_any()).await?;
    }
    let Some(cluster_name) = cluster_name else {
        return Ok(None);
    };
    let Some(cluster) = get_cluster(&context.client, namespace, &cluster_name)
        .await
        .map_err(Error::read("Cluster", namespace, &cluster_name))?
    else {
        return Ok(None);
    };
    let Some(reference) = cluster
        .spec
        .infrastructure_ref
        .as_ref()
        .filter(|r| r.refers_to(GROUP, "KubeZeroCluster"))
    else {
        return Ok(None);
    };
    let infra_cluster = Api::<KubeZeroCluster>::namespaced(context.client.clone(), namespace)
        .get_opt(&reference.name)
        .await
        .map_err(Error::read("KubeZeroCluster", namespace, &reference.name))?;
    Ok(infra_cluster
        .and_then(|c| c.spec.aws)
        .map(|aws| aws.region)
        .filter(|r| !r.is_empty()))
}

/// The `spec.clusterName` of a MachineDeployment or MachineSet whose machine template uses the
/// KubeZeroMachineTemplate `template`.
async fn user_cluster(context: &Context, namespace: &str, template: &str) -> Result<Option<String>, Error> {
    for kind in ["MachineDeployment", "MachineSet"] {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(CAPI_GROUP, CAPI_VERSION, kind));
        let api: Api<DynamicObject> = Api::namespaced_with(context.client.clone(), namespace, &resource);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(Error::read(kind, namespace, "*"))?;
        let found = list.items.iter().find_map(|object| {
            let spec = object.data.get("spec")?;
            let reference = spec.pointer("/template/spec/infrastructureRef")?;
            (reference.get("kind")?.as_str()? == "KubeZeroMachineTemplate"
                && reference.get("name")?.as_str()? == template)
                .then(|| spec.get("clusterName")?.as_str().map(str::to_owned))
                .flatten()
        });
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}
