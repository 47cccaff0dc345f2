//! Routing: parses `/api/v1/...` and `/apis/<group>/<version>/...` paths, query parameters and
//! headers, and dispatches to discovery, list/get, watch and the write paths.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State as AxumState};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, Uri, header};
use serde_json::{Value, json};

use super::Inner;
use super::attributes;
use super::authn;
use super::discovery;
use super::http::{ApiError, json_response};
use super::impersonation;
use super::ops::{self, WriteCtx};
use super::rbac::{self, Decision};
use super::registry::ResourceType;
use super::select::Selector;
use super::store::meta_str;
use super::table;
use super::tokens;
use super::watch::{self, WatchParams};

type Params = HashMap<String, String>;

/// Entry point of every request.
pub(crate) async fn handle(
    AxumState(inner): AxumState<Arc<Inner>>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = admit(&inner, &method, &uri, &params, &headers) {
        return refused.into_response();
    }
    match route(inner, &method, &uri, &params, &headers, &body) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// Authenticates and authorizes a request before it is routed, as the API server's filters do
/// (so a refused request learns nothing about what exists: 401 or 403 before any 404).
fn admit(
    inner: &Inner,
    method: &Method,
    uri: &Uri,
    params: &Params,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let impersonating = headers
        .keys()
        .any(|name| name.as_str().starts_with("impersonate-"));
    if !headers.contains_key(header::AUTHORIZATION) && !impersonating {
        // The superuser: nothing to look up, nothing to refuse.
        return Ok(());
    }
    let attributes = attributes::of_request(method, uri.path(), params);
    let state = inner.lock();
    let requester = authn::authenticate(headers, &state)?;
    let user = impersonation::acting_user(&state.store, requester, headers)?;
    if let Decision::Deny { reason } = rbac::authorize(&state.store, &user, &attributes) {
        drop(state);
        tracing::debug!(user = %user.name, verb = %attributes.verb, path = %attributes.path, "RBAC: forbidden");
        return Err(rbac::forbidden(&user, &attributes, &reason));
    }
    drop(state);
    rbac::refuse_unmodelled_escalation_check(&user, &attributes)
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn route(
    inner: Arc<Inner>,
    method: &Method,
    uri: &Uri,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let path = uri.path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let state = || inner.lock();
    let get_only = || {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            )));
        }
        Ok(())
    };
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => {
            get_only()?;
            return Ok(json_response(200, &discovery::version()));
        }
        ["healthz" | "readyz" | "livez"] => return Ok("ok".into_response()),
        ["api"] => {
            get_only()?;
            return Ok(json_response(200, &discovery::core_versions()));
        }
        ["apis"] => {
            get_only()?;
            return Ok(json_response(200, &discovery::groups(&state().registry)));
        }
        ["apis", group] => {
            get_only()?;
            let doc = discovery::group(&state().registry, group).ok_or_else(|| not_found_path(path))?;
            return Ok(json_response(200, &doc));
        }
        ["openapi", "v3"] => {
            get_only()?;
            return Ok(json_response(200, &discovery::openapi_index(&state().registry)));
        }
        ["openapi", "v3", key @ ..] => {
            get_only()?;
            let doc = discovery::openapi_document(&state().registry, &key.join("/"))
                .ok_or_else(|| not_found_path(path))?;
            return Ok(json_response(200, &doc));
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found_path(path)),
    };
    if rest.is_empty() {
        get_only()?;
        let doc =
            discovery::resources(&state().registry, group, version).ok_or_else(|| not_found_path(path))?;
        return Ok(json_response(200, &doc));
    }
    // (namespace, resource, name, subresource)
    let (namespace, resource, name, sub) = match *rest {
        ["namespaces", ns, sub @ ("status" | "finalize")] if group.is_empty() => {
            (None, "namespaces", Some(ns), Some(sub))
        }
        ["namespaces", ns, resource, ref tail @ ..] if tail.len() <= 2 => {
            (Some(ns), resource, tail.first().copied(), tail.get(1).copied())
        }
        [resource] => (None, resource, None, None),
        [resource, name] => (None, resource, Some(name), None),
        [resource, name, sub] => (None, resource, Some(name), Some(sub)),
        _ => return Err(not_found_path(path)),
    };
    let rt = state()
        .registry
        .get(group, version, resource)
        .ok_or_else(|| not_found_path(path))?;
    if (namespace.is_some() && !rt.namespaced) || (name.is_some() && namespace.is_none() && rt.namespaced) {
        return Err(not_found_path(path));
    }
    let token_request = group.is_empty() && resource == "serviceaccounts" && sub == Some("token");
    if let Some(sub) = sub
        && !(sub == "status" && rt.status)
        && !token_request
    {
        return Err(not_found_path(path));
    }
    if params.get("dryRun").is_some_and(|d| !d.is_empty() && d != "All") {
        return Err(ApiError::bad_request("dryRun must be \"All\""));
    }
    let content_type = header(headers, header::CONTENT_TYPE);
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the emulator accepts JSON and YAML bodies only, not {content_type}"),
        ));
    }
    let manager = params.get("fieldManager").cloned().unwrap_or_else(|| {
        let ua = header(headers, header::USER_AGENT);
        let prefix = ua.split('/').next().unwrap_or_default();
        if prefix.is_empty() {
            "unknown".to_owned()
        } else {
            prefix.chars().take(128).collect()
        }
    });
    let strict = params.get("fieldValidation").is_some_and(|v| v == "Strict");
    let ns = namespace.unwrap_or("");
    let ctx = WriteCtx {
        rt: &rt,
        namespace: ns,
        strict,
        manager,
        dry_run: params.contains_key("dryRun"),
    };
    let accept = header(headers, header::ACCEPT);
    let table = table::wants_table(accept).then(|| {
        params
            .get("includeObject")
            .cloned()
            .unwrap_or_else(|| "Metadata".into())
    });
    let json_body = || -> Result<Value, ApiError> {
        if content_type.contains("yaml") {
            let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            return serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
        }
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
    };
    let respond = |code: u16, object: Value, rt: &ResourceType| {
        let mut object = object;
        object["apiVersion"] = json!(rt.api_version());
        match &table {
            Some(include) => {
                let rv = object["metadata"]["resourceVersion"].clone();
                json_response(
                    code,
                    &table::table(rt, &[object], include, json!({"resourceVersion": rv})),
                )
            }
            None => json_response(code, &object),
        }
    };
    if token_request {
        let (Some(namespace), Some(name)) = (namespace, name) else {
            return Err(not_found_path(path));
        };
        if method != Method::POST {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            )));
        }
        let issued = tokens::token_request(&mut state(), namespace, name, &json_body()?)?;
        return Ok(json_response(201, &issued));
    }
    let result = match (name, method.clone()) {
        (None, Method::GET) => {
            let selector = Selector::parse(
                params.get("labelSelector").map(String::as_str),
                params.get("fieldSelector").map(String::as_str),
            )?;
            if params.get("watch").is_some_and(|w| w == "1" || w == "true") {
                return Ok(start_watch(
                    inner.clone(),
                    rt.clone(),
                    namespace,
                    selector,
                    params,
                    table,
                ));
            }
            return list(&inner, &rt, namespace, &selector, params, table.as_deref());
        }
        (None, Method::POST) => {
            let mut state = state();
            let created = ops::create(&mut state, &ctx, json_body()?, false)?;
            Ok((201, created))
        }
        (None, Method::DELETE) => {
            let selector = Selector::parse(
                params.get("labelSelector").map(String::as_str),
                params.get("fieldSelector").map(String::as_str),
            )?;
            let options = if body.is_empty() { json!({}) } else { json_body()? };
            let mut state = state();
            let names: Vec<(String, String)> = state
                .store
                .list(&rt.key(), namespace)
                .filter(|o| selector.matches(o))
                .map(|o| {
                    (
                        meta_str(o, "namespace").to_owned(),
                        meta_str(o, "name").to_owned(),
                    )
                })
                .collect();
            let mut items = Vec::new();
            for (ns, name) in names {
                let ctx = WriteCtx {
                    namespace: &ns,
                    manager: ctx.manager.clone(),
                    ..ctx
                };
                items.push(ops::delete(&mut state, &ctx, &name, &options)?.0);
            }
            let rv = state.store.rv().to_string();
            drop(state);
            inner.notify_watchers();
            return Ok(json_response(
                200,
                &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rv}, "items": items}),
            ));
        }
        (None, _) | (Some(_), Method::POST) => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            )));
        }
        (Some(name), Method::GET) => {
            let state = state();
            let object = state.store.get(&rt.key(), ns, name).cloned();
            let object = object.ok_or_else(|| ApiError::not_found(&rt.qualified_resource(), name))?;
            Ok((200, object))
        }
        (Some(name), Method::PUT) => {
            let mut state = state();
            let old = state.store.get(&rt.key(), ns, name).cloned();
            let old = old.ok_or_else(|| ApiError::not_found(&rt.qualified_resource(), name))?;
            let updated = ops::update(&mut state, &ctx, &old, json_body()?, sub, ops::Via::Update)?;
            Ok((200, updated))
        }
        (Some(name), Method::PATCH) => {
            let force = params.get("force").is_some_and(|f| f == "true" || f == "1");
            let mut state = state();
            let existed = state.store.get(&rt.key(), ns, name).is_some();
            let patched = ops::patch(
                &mut state,
                &ctx,
                name,
                content_type,
                body,
                sub,
                force,
                params.contains_key("fieldManager"),
            )?;
            Ok((if existed { 200 } else { 201 }, patched))
        }
        (Some(name), Method::DELETE) => {
            if sub.is_some() {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
            let mut options = if body.is_empty() { json!({}) } else { json_body()? };
            if let Some(policy) = params.get("propagationPolicy") {
                options["propagationPolicy"] = json!(policy);
            }
            let mut state = state();
            let (object, exists) = ops::delete(&mut state, &ctx, name, &options)?;
            drop(state);
            inner.notify_watchers();
            if exists || rt.custom.is_some() {
                return Ok(respond(200, object, &rt));
            }
            return Ok(json_response(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": meta_str(&object, "uid")}}),
            ));
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {path})"
        ))),
    };
    let (code, object) = result?;
    inner.notify_watchers();
    Ok(respond(code, object, &rt))
}

fn not_found_path(path: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
    )
    .with_details(
        json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]}),
    )
}

fn parse_rv(value: Option<&String>) -> Result<Option<u64>, ApiError> {
    match value.map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v}"))),
    }
}

fn start_watch(
    inner: Arc<Inner>,
    rt: Arc<ResourceType>,
    namespace: Option<&str>,
    selector: Selector,
    params: &Params,
    table: Option<String>,
) -> Response {
    let flag = |k: &str| params.get(k).is_some_and(|v| v == "true" || v == "1");
    let rv = match parse_rv(params.get("resourceVersion")) {
        Ok(rv) => rv,
        Err(e) => return e.into_response(),
    };
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs);
    let send_initial_events = flag("sendInitialEvents");
    if send_initial_events && !flag("allowWatchBookmarks") {
        return ApiError::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            vec![("allowWatchBookmarks".into(), "allowWatchBookmarks: Required value: allowWatchBookmarks must be set to true when sendInitialEvents is specified".into(), "FieldValueRequired")],
        )
        .into_response();
    }
    watch::watch(
        inner,
        rt,
        WatchParams {
            rv,
            send_initial_events,
            bookmarks: flag("allowWatchBookmarks"),
            timeout,
            table,
            namespace: namespace.map(str::to_owned),
            selector,
        },
    )
}

fn list(
    inner: &Inner,
    rt: &ResourceType,
    namespace: Option<&str>,
    selector: &Selector,
    params: &Params,
    table: Option<&str>,
) -> Result<Response, ApiError> {
    let state = inner.lock();
    let store = &state.store;
    let current = store.rv();
    let rv = parse_rv(params.get("resourceVersion"))?;
    if let Some(rv) = rv
        && rv != 0
    {
        match params.get("resourceVersionMatch").map(String::as_str) {
            Some("Exact") if rv != current => {
                if rv < store.oldest_watchable() {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        store.oldest_watchable()
                    )));
                }
                return Err(ApiError::not_implemented(
                    "the emulator serves lists only at the latest resourceVersion (resourceVersionMatch=Exact with an older resourceVersion)",
                ));
            }
            _ => {}
        }
    }
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    // Continue token: "<rv>/<namespace>/<name>" of the last item returned.
    let (list_rv, after) = match params.get("continue").filter(|c| !c.is_empty()) {
        None => (current, None),
        Some(token) => {
            let mut parts = token.splitn(3, '/');
            let token_rv: u64 = parts
                .next()
                .and_then(|r| r.parse().ok())
                .ok_or_else(|| ApiError::bad_request("continue key is not valid: malformed token"))?;
            let ns = parts.next().unwrap_or_default().to_owned();
            let name = parts.next().unwrap_or_default().to_owned();
            if token_rv < store.oldest_watchable() {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            (token_rv, Some((ns, name)))
        }
    };
    let matching: Vec<&Value> = store
        .list(&rt.key(), namespace)
        .filter(|o| {
            after.as_ref().is_none_or(|(ns, name)| {
                (meta_str(o, "namespace"), meta_str(o, "name")) > (ns.as_str(), name.as_str())
            })
        })
        .filter(|o| selector.matches(o))
        .collect();
    let total = matching.len();
    let mut items: Vec<Value> = matching.into_iter().take(limit).cloned().collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if total > items.len()
        && let Some(last) = items.last()
    {
        metadata["continue"] = json!(format!(
            "{list_rv}/{}/{}",
            meta_str(last, "namespace"),
            meta_str(last, "name")
        ));
        metadata["remainingItemCount"] = json!(total - items.len());
    }
    drop(state);
    for item in &mut items {
        item["apiVersion"] = json!(rt.api_version());
    }
    if let Some(include) = table {
        return Ok(json_response(200, &table::table(rt, &items, include, metadata)));
    }
    Ok(json_response(
        200,
        &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": metadata, "items": items}),
    ))
}
