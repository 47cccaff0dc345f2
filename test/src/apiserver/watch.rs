//! Watches: newline-delimited JSON events read from the store's event log, with selectors applied to
//! transitions, bookmarks, `timeoutSeconds`, initial events and `410 Gone` for an evicted resourceVersion.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Inner;
use super::http::ApiError;
use super::registry::ResourceType;
use super::select::Selector;
use super::store::EventType;
use super::table;

/// Query parameters of a watch.
pub(crate) struct WatchParams {
    /// `resourceVersion`; `None` (or `0`) starts with the current objects as ADDED events.
    pub rv: Option<u64>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    /// `Some(includeObject)` when the client asked for Table events.
    pub table: Option<String>,
    pub namespace: Option<String>,
    pub selector: Selector,
}

/// How often bookmarks are sent when `allowWatchBookmarks=true`.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

fn line(type_: &str, object: Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

struct Emitter {
    rt: Arc<ResourceType>,
    params: WatchParams,
}

impl Emitter {
    fn in_scope(&self, object: &Value) -> bool {
        self.params
            .namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
    }

    fn matches(&self, object: &Value) -> bool {
        self.in_scope(object) && self.params.selector.matches(object)
    }

    fn render(&self, mut object: Value) -> Value {
        object["apiVersion"] = json!(self.rt.api_version());
        match &self.params.table {
            Some(include) => {
                let rv = object["metadata"]["resourceVersion"].clone();
                table::table(&self.rt, &[object], include, json!({"resourceVersion": rv}))
            }
            None => object,
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": metadata}),
        )
    }
}

fn gone(rv: u64, oldest: u64) -> Bytes {
    let status = ApiError::gone(format!("too old resource version: {rv} ({oldest})")).status();
    line("ERROR", status)
}

/// Starts a watch and answers with its streaming response.
pub(crate) fn watch(inner: Arc<Inner>, rt: Arc<ResourceType>, params: WatchParams) -> Response {
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    let emitter = Emitter { rt, params };
    tokio::spawn(run(inner, emitter, tx));
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>)));
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn run(inner: Arc<Inner>, emitter: Emitter, tx: mpsc::Sender<Bytes>) {
    let mut changed = inner.changed.subscribe();
    let deadline = emitter.params.timeout.map(|t| tokio::time::Instant::now() + t);
    let key = emitter.rt.key();
    // Initial events.
    let start = {
        let state = inner.lock();
        let store = &state.store;
        match emitter.params.rv {
            Some(rv) if rv != 0 && !emitter.params.send_initial_events => {
                if rv < store.oldest_watchable() {
                    Err((rv, store.oldest_watchable()))
                } else {
                    Ok((rv, Vec::new()))
                }
            }
            _ => {
                let objects: Vec<Value> = store
                    .list(&key, None)
                    .filter(|o| emitter.matches(o))
                    .cloned()
                    .collect();
                Ok((store.rv(), objects))
            }
        }
    };
    let (mut cursor, initial) = match start {
        Ok(start) => start,
        Err((rv, oldest)) => {
            let _ = tx.send(gone(rv, oldest)).await;
            return;
        }
    };
    for object in initial {
        if tx.send(line("ADDED", emitter.render(object))).await.is_err() {
            return;
        }
    }
    if emitter.params.send_initial_events && tx.send(emitter.bookmark(cursor, true)).await.is_err() {
        return;
    }
    let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
    ticker.tick().await;
    loop {
        let batch = {
            let state = inner.lock();
            match state.store.events_since(cursor) {
                None => Err(state.store.oldest_watchable()),
                Some(events) => Ok((events, state.store.rv())),
            }
        };
        let (events, now_rv) = match batch {
            Ok(b) => b,
            Err(oldest) => {
                let _ = tx.send(gone(cursor, oldest)).await;
                return;
            }
        };
        for event in events {
            if event.res != key {
                continue;
            }
            let now = emitter.matches(&event.object);
            let before = event.old.as_ref().is_some_and(|o| emitter.matches(o));
            let type_ = match (event.type_, before, now) {
                (EventType::Deleted, _, true) => "DELETED",
                (EventType::Added, _, true) => "ADDED",
                (EventType::Modified, true, true) => "MODIFIED",
                (EventType::Modified, false, true) => "ADDED",
                (EventType::Modified, true, false) => "DELETED",
                _ => continue,
            };
            if tx
                .send(line(type_, emitter.render(event.object.clone())))
                .await
                .is_err()
            {
                return;
            }
        }
        cursor = now_rv;
        let sleep_until =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600 * 24));
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tx.closed() => return,
            _ = tokio::time::sleep_until(sleep_until) => return,
            result = changed.changed() => if result.is_err() { return },
            _ = ticker.tick() => {
                if emitter.params.bookmarks && tx.send(emitter.bookmark(cursor, false)).await.is_err() {
                    return;
                }
            }
        }
    }
}
