//! Status writes: server-side apply of the whole status a controller owns, with a fixed field manager.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::conditions::{self, HasConditions, Observed};

/// Applies `status` to the status subresource of `name` as `field_manager`.
///
/// The patch carries every status field the controller owns: with server-side apply, a field this
/// manager wrote before and omits now is removed. `force` takes ownership of fields last written by
/// another manager (e.g. after an upgrade renamed the manager).
pub async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    field_manager: &str,
    status: &S,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&patch),
    )
    .await
}

/// Who writes a status: the field manager, the Event publisher, and the manager's memory of the
/// statuses it wrote last.
#[derive(Clone, Copy)]
pub struct StatusWriter<'a> {
    /// The server-side apply field manager.
    pub field_manager: &'a str,
    /// Publishes the Event of a `Ready` change.
    pub recorder: &'a super::events::EventPublisher,
    /// The statuses written last.
    pub written: &'a WrittenStatuses,
}

/// Writes the observed conditions of `object` as the status built by `status_with`, then publishes an
/// Event if the Ready condition changed. When that status is exactly the object's status, and the
/// last one `written` remembers for it, nothing is written (most reconciles observe what they observed before; each write would wake every watcher
/// of the kind, this controller included).
///
/// `status_with` receives the conditions this controller owns (timestamps carried over from the
/// object's current status) and returns the complete status the controller owns. Conditions whose
/// type is in `carry_over` and that were not observed this time are re-applied unchanged: with
/// server-side apply, leaving them out would delete them (used while paused, to keep `Ready`).
pub async fn apply_conditions<K, S>(
    api: &Api<K>,
    object: &K,
    writer: &StatusWriter<'_>,
    observed: &[Observed],
    carry_over: &[&str],
    status_with: impl FnOnce(Vec<conditions::Condition>) -> S,
) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + HasConditions + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let previous = object.conditions();
    let mut owned = conditions::owned(
        previous,
        observed,
        object.meta().generation,
        jiff::Timestamp::now(),
    );
    owned.extend(
        previous
            .iter()
            .filter(|old| carry_over.contains(&old.type_.as_str()))
            .filter(|old| !observed.iter().any(|new| new.type_ == old.type_))
            .cloned(),
    );
    owned.sort_by(|a, b| a.type_.cmp(&b.type_));
    let status = status_with(owned.clone());
    let wanted = serde_json::to_value(&status).ok().map(|wanted| {
        let shown = serde_json::to_value(object)
            .ok()
            .and_then(|mut object| object.get_mut("status").map(std::mem::take));
        (shown.as_ref() == Some(&wanted), hash(&wanted))
    });
    let key = object
        .meta()
        .uid
        .clone()
        .map(|uid| (K::kind(&()).into_owned(), uid));
    if let (Some((true, wanted)), Some(key)) = (wanted, key.as_ref())
        && writer.written.last_written(key).is_none_or(|last| last == wanted)
    {
        return Ok(object.clone());
    }
    let name = object.meta().name.clone().unwrap_or_default();
    let updated = apply_status(api, &name, writer.field_manager, &status).await?;
    if let (Some((_, wanted)), Some(key)) = (wanted, key) {
        writer.written.remember(key, wanted);
    }
    super::events::report_ready_change(writer.recorder, object, previous, &owned).await;
    Ok(updated)
}

/// Objects whose last written status is remembered; past this the memory starts over (forgetting
/// only means trusting the cache).
const REMEMBERED_STATUSES: usize = 100_000;

/// The status this process last wrote to each object (a hash, by kind and uid), shared by the
/// controllers of one manager through its [`super::manager::Context`]. A write is skipped only
/// when the object shows the wanted status and that is also the last status written: a cached
/// object that lags behind a write must not hide the write that reverts it.
#[derive(Debug, Default)]
pub struct WrittenStatuses {
    last: std::sync::Mutex<std::collections::HashMap<(String, String), u64>>,
}

impl WrittenStatuses {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, String), u64>> {
        self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn last_written(&self, key: &(String, String)) -> Option<u64> {
        self.lock().get(key).copied()
    }

    fn remember(&self, key: (String, String), status: u64) {
        let mut written = self.lock();
        if written.len() >= REMEMBERED_STATUSES && !written.contains_key(&key) {
            written.clear();
        }
        written.insert(key, status);
    }
}

fn hash(value: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::Condition;
    use crate::runtime::events::EventPublisher;
    use crate::testing::{ScriptedApi, not_found};
    use kube::runtime::events::Reporter;
    use serde::Deserialize;
    use serde_json::json;

    /// A minimal kind with a conditions-only status.
    #[derive(kube::CustomResource, Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
    #[kube(
        group = "test.kubezero.io",
        version = "v1",
        kind = "Probe",
        namespaced,
        status = "ProbeStatus"
    )]
    struct ProbeSpec {}

    #[derive(Clone, Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
    struct ProbeStatus {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        conditions: Vec<Condition>,
    }

    impl HasConditions for Probe {
        fn conditions(&self) -> &[Condition] {
            self.status.as_ref().map_or(&[], |status| &status.conditions)
        }
    }

    fn probe(conditions: Vec<Condition>) -> Probe {
        let mut probe: Probe = serde_json::from_value(json!({
            "apiVersion": "test.kubezero.io/v1", "kind": "Probe",
            "metadata": {"name": "p", "namespace": "default", "uid": "probe-uid-1", "generation": 1},
            "spec": {}
        }))
        .expect("a Probe");
        probe.status = Some(ProbeStatus { conditions });
        probe
    }

    #[tokio::test]
    async fn a_status_shown_and_last_written_is_not_written_again() {
        let (client, api) = ScriptedApi::start(|request| match request.method.as_str() {
            "PATCH" => {
                let mut live = serde_json::to_value(probe(Vec::new())).expect("json");
                live["status"] = request.body["status"].clone();
                (200, live)
            }
            "POST" => (201, request.body.clone()),
            _ => not_found(&request.path),
        });
        let probes: Api<Probe> = Api::namespaced(client.clone(), "default");
        let recorder = EventPublisher::new(
            client,
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        );
        let written = std::sync::Arc::new(WrittenStatuses::default());
        let write = |object: Probe, reason: &'static str| {
            let probes = probes.clone();
            let recorder = recorder.clone();
            let written = written.clone();
            async move {
                let writer = StatusWriter {
                    field_manager: "test",
                    recorder: &recorder,
                    written: &written,
                };
                apply_conditions(
                    &probes,
                    &object,
                    &writer,
                    &[Observed::false_("Ready", reason, "")],
                    &[],
                    |conditions| ProbeStatus { conditions },
                )
                .await
                .expect("written")
            }
        };
        let patches = || {
            api.requests()
                .into_iter()
                .filter(|request| request.method == "PATCH")
                .count()
        };
        let first = write(probe(Vec::new()), "Waiting").await;
        assert_eq!(patches(), 1, "a new status is written");
        let shown = first.status.clone().expect("a status").conditions;
        write(probe(shown.clone()), "Waiting").await;
        assert_eq!(
            patches(),
            1,
            "the object shows what was written: nothing to write"
        );
        let second = write(probe(shown.clone()), "Provisioning").await;
        assert_eq!(patches(), 2);
        write(probe(shown), "Waiting").await;
        assert_eq!(
            patches(),
            3,
            "a cached object lagging behind the last write does not hide the write reverting it"
        );
        write(second, "Provisioning").await;
        assert_eq!(patches(), 4, "the last write was Waiting");
    }
}
