//! The API emulator through real clients over HTTP: kube-rs `Client`, kube-runtime's `watcher`, and
//! the `kubectl` binary.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::Status;
use kubezero_test::apiserver::ApiServer;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(30);

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.kubezero.io"},
        "spec": {
            "group": "example.kubezero.io",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "properties": {
                                "size": {"type": "integer", "minimum": 1},
                                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                                "note": {"type": "string"}
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": {"type": "string"},
                                "conditions": {"type": "array", "x-kubernetes-list-type": "map",
                                    "x-kubernetes-list-map-keys": ["type"],
                                    "items": {"type": "object", "required": ["type", "status"], "properties": {
                                        "type": {"type": "string"}, "status": {"type": "string"}}}}
                            }
                        }
                    }
                }}
            }]
        }
    }))
    .expect("a CRD")
}

fn widget_resource() -> ApiResource {
    ApiResource {
        group: "example.kubezero.io".into(),
        version: "v1alpha1".into(),
        api_version: "example.kubezero.io/v1alpha1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    }
}

fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "example.kubezero.io/v1alpha1", "kind": "Widget",
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("a widget")
}

async fn with_widgets() -> (ApiServer, kube::Client, Api<DynamicObject>) {
    let server = ApiServer::start().await.expect("server starts");
    server.install_crds(&[widget_crd()]).await.expect("CRD installed");
    let client = server.client().expect("client");
    let api = Api::namespaced_with(client.clone(), "default", &widget_resource());
    (server, client, api)
}

fn api_error(error: kube::Error) -> Status {
    match error {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other}"),
    }
}

fn cm(name: &str, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).expect("a ConfigMap")
}

fn rv(meta: &kube::api::ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .expect("rv")
        .parse()
        .expect("numeric rv")
}

#[tokio::test]
async fn crud_with_optimistic_concurrency_and_already_exists() {
    tokio::time::timeout(LIMIT, async {
        let server = ApiServer::start().await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "default");
        let created = api
            .create(&PostParams::default(), &cm("a", json!({"k": "1"})))
            .await
            .unwrap();
        assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
        let dup = api_error(
            api.create(&PostParams::default(), &cm("a", json!({})))
                .await
                .unwrap_err(),
        );
        assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
        let mut stale = created.clone();
        let mut fresh = created.clone();
        fresh.data = Some([("k".to_owned(), "2".to_owned())].into());
        let updated = api.replace("a", &PostParams::default(), &fresh).await.unwrap();
        assert!(rv(&updated.metadata) > rv(&created.metadata));
        stale.data = Some([("k".to_owned(), "3".to_owned())].into());
        let conflict = api_error(
            api.replace("a", &PostParams::default(), &stale)
                .await
                .unwrap_err(),
        );
        assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
        assert!(
            conflict.message.contains("the object has been modified"),
            "{}",
            conflict.message
        );
        let missing = Api::<ConfigMap>::namespaced(server.client().unwrap(), "nope");
        let err = api_error(
            missing
                .create(&PostParams::default(), &cm("x", json!({})))
                .await
                .unwrap_err(),
        );
        assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
        api.delete("a", &DeleteParams::default()).await.unwrap();
        assert_eq!(api_error(api.get("a").await.unwrap_err()).code, 404);
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn generation_bumps_on_spec_changes_only_and_status_is_split() {
    tokio::time::timeout(LIMIT, async {
        let (server, _, api) = with_widgets().await;
        let mut w = widget("w", json!({"size": 1}));
        w.data["status"] = json!({"phase": "ignored"});
        let created = api.create(&PostParams::default(), &w).await.unwrap();
        assert_eq!(created.metadata.generation, Some(1));
        assert!(
            created.data.get("status").is_none(),
            "status is dropped on create"
        );
        assert_eq!(created.data["spec"]["color"], "red", "defaults applied");
        let pp = PatchParams::default();
        let labelled = api
            .patch(
                "w",
                &pp,
                &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
            )
            .await
            .unwrap();
        assert_eq!(
            labelled.metadata.generation,
            Some(1),
            "metadata changes do not bump generation"
        );
        let status = api
            .patch_status(
                "w",
                &pp,
                &Patch::Merge(json!({"spec": {"size": 9}, "status": {"phase": "Ready"}})),
            )
            .await
            .unwrap();
        assert_eq!(
            status.metadata.generation,
            Some(1),
            "status writes never bump generation"
        );
        assert_eq!(status.data["status"]["phase"], "Ready");
        assert_eq!(status.data["spec"]["size"], 1, "status writes change only status");
        let spec = api
            .patch(
                "w",
                &pp,
                &Patch::Merge(json!({"spec": {"size": 2}, "status": {"phase": "Lost"}})),
            )
            .await
            .unwrap();
        assert_eq!(spec.metadata.generation, Some(2));
        assert_eq!(
            spec.data["status"]["phase"], "Ready",
            "main-resource writes keep the stored status"
        );
        let same = api
            .patch("w", &pp, &Patch::Merge(json!({"spec": {"size": 2}})))
            .await
            .unwrap();
        assert_eq!(
            same.metadata.resource_version, spec.metadata.resource_version,
            "no-op patch"
        );
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn finalizers_hold_deletion_until_the_last_one_is_removed() {
    tokio::time::timeout(LIMIT, async {
        let (server, _, api) = with_widgets().await;
        let mut w = widget("f", json!({"size": 1}));
        w.metadata.finalizers = Some(vec!["example.kubezero.io/hold".into()]);
        api.create(&PostParams::default(), &w).await.unwrap();
        let deleting = api.delete("f", &DeleteParams::default()).await.unwrap();
        let held = deleting.left().expect("the object is returned while held");
        assert!(held.metadata.deletion_timestamp.is_some());
        assert_eq!(
            held.metadata.generation,
            Some(2),
            "deletionTimestamp bumps generation"
        );
        let mut events = api
            .watch(
                &WatchParams::default(),
                &held.metadata.resource_version.clone().unwrap(),
            )
            .await
            .unwrap()
            .boxed();
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
        let mut saw_deleted = false;
        while let Some(event) = events.try_next().await.unwrap() {
            if let WatchEvent::Deleted(_) = event {
                saw_deleted = true;
                break;
            }
        }
        assert!(saw_deleted);
        assert_eq!(api_error(api.get("f").await.unwrap_err()).code, 404);
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

async fn wait_gone(api: &Api<ConfigMap>, name: &str) {
    for _ in 0..100 {
        if api.get_opt(name).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} was not garbage-collected");
}

#[tokio::test]
async fn garbage_collector_deletes_dependents_and_honours_policies() {
    tokio::time::timeout(LIMIT, async {
        let server = ApiServer::start().await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "default");
        let owned_by = |owner: &ConfigMap, name: &str, block: bool| {
            let mut c = cm(name, json!({}));
            c.metadata.owner_references = Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: owner.metadata.name.clone().unwrap(),
                    uid: owner.metadata.uid.clone().unwrap(),
                    block_owner_deletion: Some(block),
                    controller: Some(true),
                },
            ]);
            c
        };
        let pp = PostParams::default();
        // Background.
        let owner = api.create(&pp, &cm("owner", json!({}))).await.unwrap();
        api.create(&pp, &owned_by(&owner, "dep", false)).await.unwrap();
        api.delete("owner", &DeleteParams::default()).await.unwrap();
        wait_gone(&api, "dep").await;
        // Orphan.
        let owner = api.create(&pp, &cm("owner2", json!({}))).await.unwrap();
        api.create(&pp, &owned_by(&owner, "kept", false)).await.unwrap();
        api.delete("owner2", &DeleteParams::orphan()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let kept = api.get("kept").await.unwrap();
        assert!(kept.metadata.owner_references.is_none_or(|r| r.is_empty()));
        // Foreground with blockOwnerDeletion: the owner waits for its dependent.
        let owner = api.create(&pp, &cm("owner3", json!({}))).await.unwrap();
        let mut blocker = owned_by(&owner, "blocker", true);
        blocker.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        api.create(&pp, &blocker).await.unwrap();
        let held = api
            .delete("owner3", &DeleteParams::foreground())
            .await
            .unwrap()
            .left()
            .expect("held");
        assert!(
            held.metadata
                .finalizers
                .unwrap()
                .contains(&"foregroundDeletion".to_owned())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            api.get("owner3").await.is_ok(),
            "owner waits for its blocking dependent"
        );
        assert!(
            api.get("blocker")
                .await
                .unwrap()
                .metadata
                .deletion_timestamp
                .is_some()
        );
        api.patch(
            "blocker",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
        wait_gone(&api, "owner3").await;
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn generate_name_selectors_and_pagination() {
    tokio::time::timeout(LIMIT, async {
        let server = ApiServer::start().await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "default");
        let mut g = cm("", json!({}));
        g.metadata.name = None;
        g.metadata.generate_name = Some("gen-".into());
        let made = api.create(&PostParams::default(), &g).await.unwrap();
        let name = made.metadata.name.unwrap();
        assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
        for i in 0..7 {
            let mut c = cm(&format!("item-{i}"), json!({}));
            c.metadata.labels = Some(
                [(
                    "tier".to_owned(),
                    if i % 2 == 0 { "even" } else { "odd" }.to_owned(),
                )]
                .into(),
            );
            api.create(&PostParams::default(), &c).await.unwrap();
        }
        let names = |list: kube::api::ObjectList<ConfigMap>| -> Vec<String> {
            list.items.into_iter().map(|c| c.metadata.name.unwrap()).collect()
        };
        assert_eq!(
            names(api.list(&ListParams::default().labels("tier=odd")).await.unwrap()).len(),
            3
        );
        assert_eq!(
            names(
                api.list(&ListParams::default().labels("tier in (even),tier!=odd"))
                    .await
                    .unwrap()
            )
            .len(),
            4
        );
        assert_eq!(
            names(api.list(&ListParams::default().labels("!tier")).await.unwrap()),
            vec![name.clone()]
        );
        assert_eq!(
            names(
                api.list(&ListParams::default().fields("metadata.name=item-3"))
                    .await
                    .unwrap()
            ),
            vec!["item-3".to_owned()]
        );
        let bad = api_error(
            api.list(&ListParams::default().fields("spec.x=1"))
                .await
                .unwrap_err(),
        );
        assert_eq!(bad.code, 400);
        assert!(bad.message.contains("field label not supported"));
        let mut seen = Vec::new();
        let mut params = ListParams::default().limit(3);
        loop {
            let page = api.list(&params).await.unwrap();
            let token = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            seen.extend(names(page));
            match token {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        assert_eq!(seen.len(), 8);
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn watch_streams_events_bookmarks_and_selector_transitions() {
    tokio::time::timeout(LIMIT, async {
        let server = ApiServer::start().await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "default");
        let list = api.list(&ListParams::default()).await.unwrap();
        let from = list.metadata.resource_version.unwrap();
        let wp = WatchParams::default().labels("app=x").timeout(10);
        let mut events = api.watch(&wp, &from).await.unwrap().boxed();
        let pp = PatchParams::default();
        let mut c = cm("w", json!({}));
        c.metadata.labels = Some([("app".to_owned(), "x".to_owned())].into());
        api.create(&PostParams::default(), &c).await.unwrap();
        api.patch("w", &pp, &Patch::Merge(json!({"data": {"a": "1"}})))
            .await
            .unwrap();
        api.patch(
            "w",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"app": "y"}}})),
        )
        .await
        .unwrap();
        let mut kinds = Vec::new();
        while let Some(event) = events.try_next().await.unwrap() {
            let kind = match event {
                WatchEvent::Added(_) => "ADDED",
                WatchEvent::Modified(_) => "MODIFIED",
                WatchEvent::Deleted(_) => "DELETED",
                WatchEvent::Bookmark(_) => "BOOKMARK",
                WatchEvent::Error(e) => panic!("{e:?}"),
            };
            kinds.push(kind);
            if kind == "BOOKMARK" && kinds.contains(&"DELETED") {
                break;
            }
        }
        assert_eq!(&kinds[..3], ["ADDED", "MODIFIED", "DELETED"], "{kinds:?}");
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn runtime_watcher_sees_events() {
    use kube::runtime::watcher::{self, Event};
    tokio::time::timeout(LIMIT, async {
        let server = ApiServer::start().await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "default");
        api.create(&PostParams::default(), &cm("before", json!({})))
            .await
            .unwrap();
        let mut stream = watcher::watcher(api.clone(), watcher::Config::default().page_size(1)).boxed();
        let mut initial_done = false;
        let mut seen_before = false;
        while let Some(event) = stream.try_next().await.unwrap() {
            match event {
                Event::InitApply(c) if c.metadata.name.as_deref() == Some("before") => seen_before = true,
                Event::InitDone => {
                    initial_done = true;
                    api.create(&PostParams::default(), &cm("after", json!({})))
                        .await
                        .unwrap();
                }
                Event::Apply(c) if c.metadata.name.as_deref() == Some("after") => {
                    api.delete("after", &DeleteParams::default()).await.unwrap();
                }
                Event::Delete(c) if c.metadata.name.as_deref() == Some("after") => break,
                _ => {}
            }
        }
        assert!(initial_done && seen_before);
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn watch_from_an_expired_resource_version_is_gone() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let server = ApiServer::start().await.unwrap();
        let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "default");
        let first = api
            .create(&PostParams::default(), &cm("churn", json!({"i": "0"})))
            .await
            .unwrap();
        let old = first.metadata.resource_version.unwrap();
        let writes = kubezero_test::apiserver::EVENT_LOG_CAPACITY + 10;
        futures::stream::iter(0..writes)
            .map(|i| {
                let api = api.clone();
                async move {
                    api.patch(
                        "churn",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"data": {"i": i.to_string()}})),
                    )
                    .await
                    .unwrap()
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        let mut events = api.watch(&WatchParams::default(), &old).await.unwrap().boxed();
        match events.try_next().await.unwrap() {
            Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
            other => panic!("expected a 410 ERROR event, got {other:?}"),
        }
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn merge_json_and_strategic_patches() {
    tokio::time::timeout(LIMIT, async {
        let (server, client, widgets) = with_widgets().await;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        api.create(&PostParams::default(), &cm("p", json!({"a": "1", "b": "2"})))
            .await
            .unwrap();
        let pp = PatchParams::default();
        let merged = api
            .patch("p", &pp, &Patch::Merge(json!({"data": {"a": null, "c": "3"}})))
            .await
            .unwrap();
        assert_eq!(
            merged.data.unwrap(),
            [("b".to_owned(), "2".to_owned()), ("c".to_owned(), "3".to_owned())].into()
        );
        let ops =
            serde_json::from_value(json!([{"op": "replace", "path": "/data/b", "value": "20"}])).unwrap();
        let patched = api.patch("p", &pp, &Patch::<()>::Json(ops)).await.unwrap();
        assert_eq!(patched.data.unwrap()["b"], "20");
        let smp = api
            .patch("p", &pp, &Patch::Strategic(json!({"data": {"d": "4"}})))
            .await
            .unwrap();
        assert_eq!(smp.data.unwrap()["d"], "4");
        widgets
            .create(&PostParams::default(), &widget("s", json!({"size": 1})))
            .await
            .unwrap();
        let refused = api_error(
            widgets
                .patch("s", &pp, &Patch::Strategic(json!({"spec": {"size": 2}})))
                .await
                .unwrap_err(),
        );
        assert_eq!(
            (refused.code, refused.reason.as_str()),
            (415, "UnsupportedMediaType")
        );
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn server_side_apply_reapply_is_a_no_op_and_status_apply_keeps_spec() {
    tokio::time::timeout(LIMIT, async {
        let (server, _, api) = with_widgets().await;
        let user = PatchParams::apply("user");
        let manifest = widget("a", json!({"size": 3, "note": "mine"}));
        let first = api.patch("a", &user, &Patch::Apply(&manifest)).await.unwrap();
        let again = api.patch("a", &user, &Patch::Apply(&manifest)).await.unwrap();
        assert_eq!(first.metadata.resource_version, again.metadata.resource_version, "re-apply is a no-op");
        let status = json!({"apiVersion": "example.kubezero.io/v1alpha1", "kind": "Widget", "metadata": {"name": "a"},
                            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let after = api
            .patch_status("a", &PatchParams::apply("controller").force(), &Patch::Apply(&status))
            .await
            .unwrap();
        assert_eq!(after.data["spec"]["note"], "mine");
        assert_eq!(after.data["status"]["conditions"][0]["status"], "True");
        let missing = api_error(
            api.patch("a", &PatchParams::default(), &Patch::Apply(&manifest)).await.unwrap_err(),
        );
        assert_eq!(missing.code, 400);
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn crd_validation_errors_are_invalid_status_with_causes() {
    tokio::time::timeout(LIMIT, async {
        let (server, _, api) = with_widgets().await;
        let bad = widget("bad", json!({"size": 0, "color": "green"}));
        let err = api_error(api.create(&PostParams::default(), &bad).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
        assert!(
            err.message
                .starts_with("Widget.example.kubezero.io \"bad\" is invalid: ["),
            "{}",
            err.message
        );
        let strict = PostParams::default();
        let unknown = widget("u", json!({"size": 1, "foo": 1}));
        // Default (non-strict): pruned.
        let pruned = api.create(&strict, &unknown).await.unwrap();
        assert!(pruned.data["spec"].get("foo").is_none());
        // Strict: refused.
        let url = "/apis/example.kubezero.io/v1alpha1/namespaces/default/widgets?fieldValidation=Strict";
        let request = http::Request::post(url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&widget("u2", json!({"size": 1, "foo": 1}))).unwrap())
            .unwrap();
        let client = server.client().unwrap();
        let err = api_error(client.request::<Value>(request).await.unwrap_err());
        assert_eq!(err.code, 400);
        assert_eq!(err.message, "strict decoding error: unknown field \"spec.foo\"");
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn crd_validation_causes_name_fields() {
    tokio::time::timeout(LIMIT, async {
        let (server, _, _) = with_widgets().await;
        let raw = raw_post(
            server.url(),
            "/apis/example.kubezero.io/v1alpha1/namespaces/default/widgets",
            &widget("bad", json!({"color": "green"})),
        )
        .await;
        assert_eq!(raw["reason"], "Invalid");
        let causes = raw["details"]["causes"].as_array().unwrap();
        let fields: Vec<&str> = causes.iter().map(|c| c["field"].as_str().unwrap()).collect();
        assert!(
            fields.contains(&"spec.size") && fields.contains(&"spec.color"),
            "{raw}"
        );
        assert!(causes.iter().any(|c| c["reason"] == "FieldValueRequired"));
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// A raw HTTP/1.1 POST over a TcpStream (no extra client crate), returning the JSON body.
async fn raw_post(url: &str, path: &str, body: &impl serde::Serialize) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let body = serde_json::to_vec(body).unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let (_, json) = text.split_once("\r\n\r\n").unwrap();
    let json = json.trim();
    // Chunked bodies: take the JSON between the first '{' and the last '}'.
    let start = json.find('{').unwrap();
    let end = json.rfind('}').unwrap();
    serde_json::from_str(&json[start..=end]).unwrap()
}

#[tokio::test]
async fn kubectl_session() {
    let kubectl = "/usr/bin/kubectl";
    if !std::path::Path::new(kubectl).exists() {
        eprintln!("SKIPPED kubectl_session: /usr/bin/kubectl is absent");
        return;
    }
    tokio::time::timeout(Duration::from_secs(90), async {
        let server = ApiServer::start().await.unwrap();
        let dir = std::env::temp_dir().join(format!("kubezero-kubectl-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        let crd_file = dir.join("crd.json");
        std::fs::write(&crd_file, serde_json::to_vec(&widget_crd()).unwrap()).unwrap();
        let obj_file = dir.join("widget.yaml");
        std::fs::write(
            &obj_file,
            "apiVersion: example.kubezero.io/v1alpha1\nkind: Widget\nmetadata:\n  name: k\n  namespace: default\nspec:\n  size: 2\n",
        )
        .unwrap();
        let run = {
            let (kubeconfig, dir) = (kubeconfig.clone(), dir.clone());
            move |args: &[&str]| {
            let output = std::process::Command::new(kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .arg("--cache-dir")
                .arg(dir.join("cache"))
                .args(args)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(output.status.success(), "kubectl {args:?} failed:\n{stdout}\n{stderr}");
            stdout
            }
        };
        // kubectl's default (strict) validation is server-side: unknown fields are refused.
        let bad_file = dir.join("bad.yaml");
        std::fs::write(
            &bad_file,
            "apiVersion: example.kubezero.io/v1alpha1\nkind: Widget\nmetadata:\n  name: bad\n  namespace: default\nspec:\n  size: 2\n  bogus: 1\n",
        )
        .unwrap();
        let crd = crd_file.to_str().unwrap();
        let obj = obj_file.to_str().unwrap();
        tokio::task::spawn_blocking({
            let run = run.clone();
            let (crd, obj) = (crd.to_owned(), obj.to_owned());
            let (kubeconfig_for_bad, bad_file) = (kubeconfig.clone(), bad_file.clone());
            move || {
                run(&["apply", "--server-side", "-f", &crd]);
                run(&["wait", "--for=condition=Established", "crd/widgets.example.kubezero.io", "--timeout=10s"]);
                run(&["apply", "--server-side", "-f", &obj]);
                let refused = std::process::Command::new(kubectl)
                    .arg("--kubeconfig")
                    .arg(&kubeconfig_for_bad)
                    .args(["apply", "--server-side", "-f"])
                    .arg(&bad_file)
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&refused.stderr);
                assert!(!refused.status.success(), "unknown field accepted");
                assert!(stderr.contains("unknown field \"spec.bogus\""), "{stderr}");
                let json: Value = serde_json::from_str(&run(&["get", "widget", "k", "-o", "json"])).unwrap();
                assert_eq!(json["spec"]["size"], 2);
                assert_eq!(json["spec"]["color"], "red");
                let table = run(&["get", "wd"]);
                assert!(table.contains("NAME") && table.contains("SIZE") && table.contains("AGE"), "{table}");
                assert!(table.lines().any(|l| l.starts_with("k ") && l.contains(" 2 ")), "{table}");
                run(&["patch", "widget", "k", "--type", "merge", "-p", "{\"spec\":{\"size\":5}}"]);
                run(&["wait", "widget/k", "--for=jsonpath={.spec.size}=5", "--timeout=10s"]);
            }
        })
        .await
        .unwrap();
        // get -w: read its first lines, then stop the process this test started (by its handle).
        let mut child = std::process::Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "widgets", "-w", "--no-headers"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        let client = server.client().unwrap();
        let api = Api::<DynamicObject>::namespaced_with(client, "default", &widget_resource());
        api.patch("k", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 6}}))).await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        let _ = child.kill();
        let _ = child.wait();
        let first = first.expect("a first line in time").expect("a line");
        let second = second.expect("a second line in time").expect("a line");
        assert!(first.starts_with("k "), "{first}");
        assert!(second.starts_with("k ") && second.contains(" 6 "), "{second}");
        tokio::task::spawn_blocking(move || {
            run(&["delete", "widget", "k", "--timeout=10s"]);
            let rest = run(&["get", "widgets", "-o", "name"]);
            assert!(rest.trim().is_empty(), "{rest}");
        })
        .await
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

/// A ServiceAccount `namespace/name` (and its namespace) created through `client`.
async fn service_account(client: &kube::Client, namespace: &str, name: &str) {
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
    match namespaces.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => panic!("create namespace {namespace}: {error}"),
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    accounts.create(&PostParams::default(), &account).await.unwrap();
}

/// A token of ServiceAccount `namespace/name` from the TokenRequest API, and the whole answer.
async fn request_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    seconds: Option<i64>,
) -> Result<k8s_openapi::api::authentication::v1::TokenRequest, kube::Error> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: seconds,
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
}

fn token_of(request: &k8s_openapi::api::authentication::v1::TokenRequest) -> String {
    request
        .status
        .as_ref()
        .and_then(|status| status.token.clone())
        .expect("a token")
}

/// Applies RBAC objects (JSON) as the administrator.
async fn apply_rbac(client: &kube::Client, objects: &[Value]) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    for object in objects {
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        let resource = match object["kind"].as_str().unwrap() {
            "Role" => ApiResource::erase::<Role>(&()),
            "RoleBinding" => ApiResource::erase::<RoleBinding>(&()),
            "ClusterRole" => ApiResource::erase::<ClusterRole>(&()),
            "ClusterRoleBinding" => ApiResource::erase::<ClusterRoleBinding>(&()),
            other => panic!("not an RBAC kind: {other}"),
        };
        let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &name,
            &PatchParams::apply("rbac-test").force(),
            &Patch::Apply(object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
    }
}

#[tokio::test]
async fn service_account_tokens_authenticate_and_rbac_allows_only_what_is_bound() {
    tokio::time::timeout(LIMIT, async {
        let server = ApiServer::start().await.unwrap();
        let admin = server.client().unwrap();
        service_account(&admin, "team", "reader").await;
        let issued = request_token(&admin, "team", "reader", None).await.unwrap();
        let status = issued.status.clone().unwrap();
        let expires = status.expiration_timestamp.unwrap().0;
        let lifetime = expires.duration_since(jiff::Timestamp::now());
        assert!(
            lifetime > jiff::SignedDuration::from_secs(3500) && lifetime <= jiff::SignedDuration::from_secs(3600),
            "default lifetime one hour: {lifetime:?}"
        );
        assert_eq!(
            issued.spec.clone().unwrap().audiences.unwrap(),
            vec!["https://kubernetes.default.svc.cluster.local"]
        );
        let reader = server.client_with_token(&token_of(&issued)).await.unwrap();

        // Discovery and /version are open to every authenticated user.
        reader.apiserver_version().await.expect("system:discovery allows /version");
        kube::Discovery::new(reader.clone())
            .run()
            .await
            .expect("system:discovery allows discovery");

        // Nothing bound yet: refused with the API server's wording and details.
        let team: Api<ConfigMap> = Api::namespaced(reader.clone(), "team");
        let refused = api_error(team.list(&ListParams::default()).await.unwrap_err());
        assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
        assert_eq!(
            refused.message,
            "configmaps is forbidden: User \"system:serviceaccount:team:reader\" cannot list resource \
             \"configmaps\" in API group \"\" in the namespace \"team\""
        );
        let details = refused.details.unwrap();
        assert_eq!((details.kind.as_str(), details.group.as_str()), ("configmaps", ""));

        // A Role and RoleBinding in "team": read there, nothing more, nowhere else.
        apply_rbac(&admin, &[
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": "cm-reader", "namespace": "team"},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "reader", "namespace": "team"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
                   "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "team"}]}),
        ])
        .await;
        Api::<ConfigMap>::namespaced(admin.clone(), "team")
            .create(&PostParams::default(), &cm("settings", json!({"a": "1"})))
            .await
            .unwrap();
        assert_eq!(team.list(&ListParams::default()).await.unwrap().items.len(), 1);
        assert_eq!(team.get("settings").await.unwrap().data.unwrap()["a"], "1");
        let mut events = team.watch(&WatchParams::default(), "0").await.unwrap().boxed();
        assert!(matches!(events.try_next().await.unwrap(), Some(WatchEvent::Added(_))));
        let refused = api_error(
            team.create(&PostParams::default(), &cm("mine", json!({})))
                .await
                .unwrap_err(),
        );
        assert_eq!(refused.code, 403);
        assert!(refused.message.contains("cannot create resource \"configmaps\""), "{}", refused.message);
        let elsewhere = api_error(
            Api::<ConfigMap>::namespaced(reader.clone(), "default")
                .get("anything")
                .await
                .unwrap_err(),
        );
        assert_eq!(elsewhere.code, 403, "a Role grants only in its namespace, before any 404");
        assert_eq!(
            elsewhere.message,
            "configmaps \"anything\" is forbidden: User \"system:serviceaccount:team:reader\" cannot get \
             resource \"configmaps\" in API group \"\" in the namespace \"default\""
        );
        // A ServiceAccount may not write RBAC even when bound to do so: escalation checks are not
        // modelled, and the emulator says so.
        apply_rbac(&admin, &[
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": "role-writer"},
                   "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["create"]}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "reader-writes-roles"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "role-writer"},
                   "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "team"}]}),
        ])
        .await;
        let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(reader.clone(), "team");
        let role = serde_json::from_value(json!({"metadata": {"name": "x"}, "rules": []})).unwrap();
        let refused = api_error(roles.create(&PostParams::default(), &role).await.unwrap_err());
        assert_eq!(refused.code, 501, "{}", refused.message);

        // Tokens: the lifetime is bounded, unknown tokens are 401, deleting the account revokes.
        let short = api_error(request_token(&admin, "team", "reader", Some(300)).await.unwrap_err());
        assert_eq!((short.code, short.reason.as_str()), (422, "Invalid"));
        assert!(short.message.contains("may not specify a duration less than 10 minutes"), "{}", short.message);
        let missing = api_error(request_token(&admin, "team", "nobody", None).await.unwrap_err());
        assert_eq!(missing.code, 404);
        let stranger = server.client_with_token("not-a-token").await.unwrap();
        let unknown = api_error(stranger.apiserver_version().await.unwrap_err());
        assert_eq!((unknown.code, unknown.reason.as_str(), unknown.message.as_str()), (401, "Unauthorized", "Unauthorized"));
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), "team")
            .delete("reader", &DeleteParams::default())
            .await
            .unwrap();
        let revoked = api_error(team.list(&ListParams::default()).await.unwrap_err());
        assert_eq!(revoked.code, 401, "the token of a deleted ServiceAccount no longer authenticates");
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn aggregated_cluster_roles_follow_the_roles_labelled_for_them() {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::api::rbac::v1::ClusterRole;
    tokio::time::timeout(LIMIT, async {
        let server = ApiServer::start().await.unwrap();
        let admin = server.client().unwrap();
        service_account(&admin, "capi-system", "capi-manager").await;
        let core = server
            .client_with_token(&token_of(&request_token(&admin, "capi-system", "capi-manager", None).await.unwrap()))
            .await
            .unwrap();
        apply_rbac(&admin, &[
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": {"name": "capi-aggregated-manager-role"},
                   "aggregationRule": {"clusterRoleSelectors": [
                       {"matchLabels": {"cluster.x-k8s.io/aggregate-to-manager": "true"}}]}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": "capi-manager-rolebinding"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "capi-aggregated-manager-role"},
                   "subjects": [{"kind": "ServiceAccount", "name": "capi-manager", "namespace": "capi-system"}]}),
        ])
        .await;
        let secrets: Api<Secret> = Api::namespaced(core.clone(), "default");
        assert_eq!(api_error(secrets.list(&ListParams::default()).await.unwrap_err()).code, 403);

        // A provider's role labelled to aggregate: core gets its rules, shortly after.
        let provider_role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "provider-aggregate-to-capi-manager",
                         "labels": {"cluster.x-k8s.io/aggregate-to-manager": "true"}},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]});
        apply_rbac(&admin, std::slice::from_ref(&provider_role)).await;
        let roles: Api<ClusterRole> = Api::all(admin.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if secrets.list(&ListParams::default()).await.is_ok() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the aggregated role never allowed listing secrets");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let aggregated = roles.get("capi-aggregated-manager-role").await.unwrap();
        let rules = serde_json::to_value(aggregated.rules.clone().unwrap()).unwrap();
        assert_eq!(rules, json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]));
        let managers: Vec<String> = aggregated
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|entry| entry.manager)
            .collect();
        assert!(
            managers.contains(&"clusterrole-aggregation-controller".to_string()),
            "{managers:?}"
        );
        let refused = api_error(
            secrets
                .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap())
                .await
                .unwrap_err(),
        );
        assert_eq!(refused.code, 403, "aggregation grants the rules, not more");

        // Unlabelled, the role no longer contributes.
        let mut unlabelled = provider_role.clone();
        unlabelled["metadata"]["labels"] = json!({"cluster.x-k8s.io/aggregate-to-manager": "false"});
        apply_rbac(&admin, &[unlabelled]).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match secrets.list(&ListParams::default()).await {
                Err(kube::Error::Api(status)) if status.code == 403 => break,
                _ => {}
            }
            assert!(tokio::time::Instant::now() < deadline, "the aggregated role kept the removed rules");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}

#[tokio::test]
async fn kubectl_as_a_service_account_shows_the_forbidden_message() {
    let kubectl = "/usr/bin/kubectl";
    if !std::path::Path::new(kubectl).exists() {
        eprintln!(
            "SKIPPED kubectl_as_a_service_account_shows_the_forbidden_message: /usr/bin/kubectl is absent"
        );
        return;
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        let server = ApiServer::start().await.unwrap();
        let admin = server.client().unwrap();
        service_account(&admin, "team", "viewer").await;
        let dir = std::env::temp_dir().join(format!("kubezero-kubectl-rbac-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        let role = dir.join("role.yaml");
        std::fs::write(
            &role,
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: viewer\n  namespace: team\n\
             rules:\n- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [list]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: viewer\n  namespace: team\n\
             roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: viewer\n\
             subjects:\n- kind: ServiceAccount\n  name: viewer\n  namespace: team\n",
        )
        .unwrap();
        let outcome = tokio::task::spawn_blocking(move || {
            let run = |args: &[&str]| {
                std::process::Command::new(kubectl)
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .arg("--cache-dir")
                    .arg(dir.join("cache"))
                    .args(args)
                    .output()
                    .unwrap()
            };
            let applied = run(&["apply", "--server-side", "-f", role.to_str().unwrap()]);
            assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
            // kubectl sends no bearer token over plain HTTP: it acts as the ServiceAccount by
            // impersonation, which the emulator's superuser may do.
            let as_viewer = |args: &[&str]| {
                let mut all = vec!["--as", "system:serviceaccount:team:viewer", "-n", "team"];
                all.extend_from_slice(args);
                run(&all)
            };
            let listed = as_viewer(&["get", "configmaps"]);
            let allowed = listed.status.success();
            let refused = as_viewer(&["get", "secrets"]);
            let _ = std::fs::remove_dir_all(&dir);
            (allowed, refused)
        })
        .await
        .unwrap();
        let (allowed, refused) = outcome;
        assert!(allowed, "the viewer may list configmaps in team");
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains(
                "Error from server (Forbidden): secrets is forbidden: User \"system:serviceaccount:team:viewer\" \
                 cannot list resource \"secrets\" in API group \"\" in the namespace \"team\""
            ),
            "{stderr}"
        );
        server.shutdown().await;
    })
    .await
    .expect("bounded");
}
