//! What the AWS machine backend records on the KubeZeroMachine itself, in metadata and spec
//! (which survive `clusterctl move`; status does not): the instance id, its region and the
//! provider ID, the launch token, and the block-move mark while a launch is in flight.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use kubezero_capi::contract::BLOCK_MOVE_ANNOTATION;
use serde_json::json;

use crate::api::KubeZeroMachine;
use crate::aws::instances::{Instance, MachineKey, parse_provider_id};
use crate::controllers::Error;
use crate::controllers::machine::gate::blocks_move;

/// Annotation holding the instance id, written right after launch (survives `clusterctl move`,
/// which drops status).
pub const INSTANCE_ID_ANNOTATION: &str = "kubezero.io/instance-id";
/// Annotation holding the instance's region, so deletion works when the KubeZeroCluster is gone.
pub const REGION_ANNOTATION: &str = "kubezero.io/region";
/// Annotation holding the machine's launch token (ClientToken material, [`MachineKey::launch_token`]):
/// the object's UID when it first asked for a launch, so that the token survives `clusterctl move`.
pub const LAUNCH_TOKEN_ANNOTATION: &str = "kubezero.io/launch-token";

/// The instance id persisted on `machine` (annotation, else `spec.providerID`).
pub fn persisted_instance_id(machine: &KubeZeroMachine) -> Option<String> {
    machine
        .annotations()
        .get(INSTANCE_ID_ANNOTATION)
        .filter(|id| !id.is_empty())
        .cloned()
        .or_else(|| {
            machine
                .spec
                .provider_id
                .as_deref()
                .and_then(parse_provider_id)
                .map(|(_, id)| id.to_owned())
        })
}

/// The launcher's key of `machine`.
pub fn machine_key(machine: &KubeZeroMachine) -> MachineKey {
    MachineKey {
        namespace: machine.namespace().unwrap_or_default(),
        name: machine.name_any(),
        launch_token: launch_token(machine),
    }
}

/// The machine's launch token: the annotated one, else its UID (what the annotation will hold).
fn launch_token(machine: &KubeZeroMachine) -> String {
    machine
        .annotations()
        .get(LAUNCH_TOKEN_ANNOTATION)
        .filter(|token| !token.is_empty())
        .cloned()
        .unwrap_or_else(|| machine.uid().unwrap_or_default())
}

/// Marks `machine` as launching before it joins a launch batch: [`BLOCK_MOVE_ANNOTATION`] (so that
/// `clusterctl move` waits until the instance id is recorded or the launch failed) and its
/// [`LAUNCH_TOKEN_ANNOTATION`]. Nothing is written when both are there.
pub async fn mark_launching(client: &kube::Client, machine: &KubeZeroMachine) -> Result<(), Error> {
    let annotations = machine.annotations();
    if annotations.contains_key(BLOCK_MOVE_ANNOTATION) && annotations.contains_key(LAUNCH_TOKEN_ANNOTATION) {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": {
        BLOCK_MOVE_ANNOTATION: "",
        LAUNCH_TOKEN_ANNOTATION: launch_token(machine),
    }}});
    patch_machine(client, machine, &patch).await
}

/// Removes [`BLOCK_MOVE_ANNOTATION`] when no launch of `machine` is in flight any more.
pub async fn unmark_launching(client: &kube::Client, machine: &KubeZeroMachine) -> Result<(), Error> {
    if !blocks_move(machine) {
        return Ok(());
    }
    let patch = json!({"metadata": {"annotations": {BLOCK_MOVE_ANNOTATION: null}}});
    patch_machine(client, machine, &patch).await
}

/// Persists the instance id, region and provider ID on the object and ends its launching mark.
pub async fn persist(
    client: &kube::Client,
    machine: &KubeZeroMachine,
    instance: &Instance,
    region: &str,
) -> Result<(), Error> {
    let mut patch = json!({"metadata": {"annotations": {
        INSTANCE_ID_ANNOTATION: instance.id,
        REGION_ANNOTATION: region,
        BLOCK_MOVE_ANNOTATION: null,
    }}});
    if machine.spec.provider_id.is_none() && !instance.zone.is_empty() {
        patch["spec"] = json!({"providerID": instance.provider_id()});
    }
    patch_machine(client, machine, &patch).await
}

async fn patch_machine(
    client: &kube::Client,
    machine: &KubeZeroMachine,
    patch: &serde_json::Value,
) -> Result<(), Error> {
    let namespace = machine.namespace().unwrap_or_default();
    let name = machine.name_any();
    Api::<KubeZeroMachine>::namespaced(client.clone(), &namespace)
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(Error::write("update", "KubeZeroMachine", &namespace, &name))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_comes_from_the_annotation_or_the_provider_id() {
        let mut machine = KubeZeroMachine::new("m", Default::default());
        assert_eq!(persisted_instance_id(&machine), None);
        machine.spec.provider_id = Some("aws:///us-east-1a/i-0aaaaaaaaaaaaaaaa".into());
        assert_eq!(
            persisted_instance_id(&machine).as_deref(),
            Some("i-0aaaaaaaaaaaaaaaa")
        );
        machine
            .annotations_mut()
            .insert(INSTANCE_ID_ANNOTATION.into(), "i-0bbbbbbbbbbbbbbbb".into());
        assert_eq!(
            persisted_instance_id(&machine).as_deref(),
            Some("i-0bbbbbbbbbbbbbbbb")
        );
    }
}
