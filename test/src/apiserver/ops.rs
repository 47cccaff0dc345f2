//! The write paths: create, update, patch, server-side apply and delete, with the server's metadata
//! rules (uid, resourceVersion, generation, finalizers), the status split, admission of custom
//! resources and managed-fields tracking.

use serde_json::{Map, Value, json};

use super::State;
use super::fields::{self, Conflicts};
use super::http::{ApiError, cause_reason};
use super::patch;
use super::registry::{ResKey, ResourceType};
use super::store::meta_str;

/// Everything a write needs besides the body.
pub(crate) struct WriteCtx<'a> {
    pub rt: &'a ResourceType,
    pub namespace: &'a str,
    /// `fieldValidation=Strict`.
    pub strict: bool,
    /// Field manager (from `fieldManager` or the User-Agent).
    pub manager: String,
    /// `dryRun=All`: compute but do not store.
    pub dry_run: bool,
}

/// Now as the server writes timestamps (RFC 3339, seconds).
pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The object without `metadata` and `status`, for the generation rule.
fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

fn without_managed_fields(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    copy
}

fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect()
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Kind-specific preparation the real registries do (Secret `stringData`, Namespace spec/status).
fn prepare(rt: &ResourceType, object: &mut Value) {
    if rt.group.is_empty() && rt.plural == "secrets" {
        if let Some(Value::Object(string_data)) = object.as_object_mut().and_then(|o| o.remove("stringData"))
        {
            let data = object["data"].as_object().cloned().unwrap_or_default();
            let mut data: Map<String, Value> = data;
            for (k, v) in string_data {
                data.insert(
                    k,
                    Value::String(base64(v.as_str().unwrap_or_default().as_bytes())),
                );
            }
            object["data"] = Value::Object(data);
        }
        if object.get("type").is_none() {
            object["type"] = json!("Opaque");
        }
    }
    if rt.group.is_empty() && rt.plural == "namespaces" {
        if object["spec"]["finalizers"].is_null() {
            object["spec"]["finalizers"] = json!(["kubernetes"]);
        }
        if object["status"]["phase"].is_null() {
            object["status"]["phase"] = json!("Active");
        }
    }
}

/// Decodes, prunes, defaults and validates an object of `rt`; the stored form.
fn admit(ctx: &WriteCtx<'_>, object: Value, old: Option<&Value>) -> Result<Value, ApiError> {
    let rt = ctx.rt;
    let name = meta_str(&object, "name").to_owned();
    if let Some(custom) = &rt.custom {
        let (decoded, unknown) = custom.validator.decode(&object);
        if ctx.strict && !unknown.is_empty() {
            let list: Vec<String> = unknown.iter().map(|e| e.message.clone()).collect();
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
        let errors = custom.validator.validate(&decoded, old);
        if !errors.is_empty() {
            let causes = errors
                .iter()
                .map(|e| (e.field.clone(), e.message.clone(), cause_reason(&e.message)))
                .collect();
            return Err(ApiError::invalid(&rt.kind, &rt.group, &name, causes));
        }
        return Ok(decoded);
    }
    if let Some(decoder) = rt.decoder {
        let decoded = decoder(&object).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                rt.kind, rt.version, rt.kind
            ))
        })?;
        if ctx.strict {
            let mut unknown = Vec::new();
            unknown_fields(&object, &decoded, "", &mut unknown);
            if !unknown.is_empty() {
                let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
        }
        return Ok(decoded);
    }
    Ok(object)
}

/// Fields present in `input` but dropped by typed decoding.
fn unknown_fields(input: &Value, decoded: &Value, path: &str, out: &mut Vec<String>) {
    match (input, decoded) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(d) => unknown_fields(v, d, &child, out),
                    None if v.is_null() || v == &json!({}) || v == &json!([]) => {}
                    None => out.push(child),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, d)) in a.iter().zip(b).enumerate() {
                unknown_fields(v, d, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn check_type(rt: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    if (!api_version.is_empty() && api_version != rt.api_version()) || (!kind.is_empty() && kind != rt.kind) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    Ok(())
}

fn is_namespaces(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "namespaces"
}

/// POST: a new object (also the create branch of server-side apply, with `tracked` managed fields).
pub(crate) fn create(
    state: &mut State,
    ctx: &WriteCtx<'_>,
    mut object: Value,
    tracked: bool,
) -> Result<Value, ApiError> {
    let rt = ctx.rt;
    if !object.is_object() {
        return Err(ApiError::bad_request("the body of the request must be an object"));
    }
    check_type(rt, &object)?;
    object["apiVersion"] = json!(rt.api_version());
    object["kind"] = json!(rt.kind);
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    let meta = &mut object["metadata"];
    if meta_str_of(meta, "name").is_empty() {
        let prefix = meta_str_of(meta, "generateName").to_owned();
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                "",
                vec![(
                    "metadata.name".into(),
                    "metadata.name: Required value: name or generateName is required".into(),
                    "FieldValueRequired",
                )],
            ));
        }
        meta["name"] = json!(format!("{prefix}{}", random_suffix()));
    }
    if rt.namespaced {
        let body_ns = meta_str_of(meta, "namespace");
        if !body_ns.is_empty() && body_ns != ctx.namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta["namespace"] = json!(ctx.namespace);
        let ns_key: ResKey = (String::new(), "namespaces".into());
        match state.store.get(&ns_key, "", ctx.namespace) {
            None => return Err(ApiError::not_found("namespaces", ctx.namespace)),
            Some(ns) if !ns["metadata"]["deletionTimestamp"].is_null() => {
                return Err(ApiError::new(
                    403,
                    "Forbidden",
                    format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                        rt.qualified_resource(),
                        meta_str_of(meta, "name"),
                        ctx.namespace
                    ),
                ));
            }
            Some(_) => {}
        }
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    let name = meta_str(&object, "name").to_owned();
    if state
        .store
        .get(&rt.key(), if rt.namespaced { ctx.namespace } else { "" }, &name)
        .is_some()
    {
        return Err(ApiError::already_exists(&rt.qualified_resource(), &name));
    }
    let now = now();
    let meta = object["metadata"].as_object_mut().expect("metadata is an object");
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now));
    for key in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
        "selfLink",
    ] {
        meta.remove(key);
    }
    if rt.generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    if rt.status && rt.custom.is_some() {
        object.as_object_mut().expect("object").remove("status");
    }
    if is_crd(rt) {
        object.as_object_mut().expect("object").remove("status");
    }
    prepare(rt, &mut object);
    let mut object = admit(ctx, object, None)?;
    if !tracked {
        fields::track_update(None, &mut object, &ctx.manager, None, &*rt.list_types(), &now);
    }
    if is_crd(rt) {
        state.registry.register_crd(&object)?;
        if ctx.dry_run {
            state.registry.unregister_crd(&name);
        }
    }
    if ctx.dry_run {
        return Ok(object);
    }
    let stored = state.store.put(&rt.key(), object);
    if is_crd(rt) {
        return Ok(establish(state, stored));
    }
    Ok(stored)
}

fn meta_str_of<'a>(meta: &'a Value, field: &str) -> &'a str {
    meta[field].as_str().unwrap_or_default()
}

fn is_crd(rt: &ResourceType) -> bool {
    rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions"
}

/// What the CRD controllers write into a new or changed CRD's status.
fn establish(state: &mut State, crd: Value) -> Value {
    let mut updated = crd.clone();
    let now = now();
    let condition = |type_: &str, reason: &str, message: &str| json!({"type": type_, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
    updated["status"]["conditions"] = json!([
        condition("NamesAccepted", "NoConflicts", "no conflicts found"),
        condition(
            "Established",
            "InitialNamesAccepted",
            "the initial names have been accepted"
        ),
    ]);
    updated["status"]["acceptedNames"] = crd["spec"]["names"].clone();
    let storage: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == json!(true))
        .map(|v| v["name"].clone())
        .collect();
    let mut stored_versions = crd["status"]["storedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for v in storage {
        if !stored_versions.contains(&v) {
            stored_versions.push(v);
        }
    }
    updated["status"]["storedVersions"] = Value::Array(stored_versions);
    if without_managed_fields(&updated) == without_managed_fields(&crd) {
        return crd;
    }
    state.store.put(
        &(
            String::from("apiextensions.k8s.io"),
            "customresourcedefinitions".into(),
        ),
        updated,
    )
}

/// How a write arrived.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// PUT: `metadata.resourceVersion` is required for custom resources.
    Update,
    /// Any patch: a resourceVersion in the result is a precondition.
    Patch,
    /// Server-side apply: managed fields were computed by [`fields::apply`].
    Apply,
}

/// The common tail of update, patch and apply: `new` is the full candidate object.
pub(crate) fn update(
    state: &mut State,
    ctx: &WriteCtx<'_>,
    old: &Value,
    mut new: Value,
    sub: Option<&str>,
    via: Via,
) -> Result<Value, ApiError> {
    let rt = ctx.rt;
    let name = meta_str(old, "name").to_owned();
    if !new.is_object() {
        return Err(ApiError::bad_request("the body of the request must be an object"));
    }
    check_type(rt, &new)?;
    let new_name = meta_str(&new, "name");
    if !new_name.is_empty() && new_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({name})"
        )));
    }
    let new_ns = meta_str(&new, "namespace");
    if rt.namespaced && !new_ns.is_empty() && new_ns != ctx.namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let rv = meta_str(&new, "resourceVersion").to_owned();
    let old_rv = meta_str(old, "resourceVersion");
    if rv.is_empty() {
        if via == Via::Update && rt.custom.is_some() {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                &name,
                vec![(
                    "metadata.resourceVersion".into(),
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update".into(),
                    "FieldValueInvalid",
                )],
            ));
        }
    } else if rv != old_rv {
        return Err(ApiError::conflict(&rt.qualified_resource(), &name));
    }
    // The status split.
    if rt.status {
        if sub == Some("status") {
            let status = new.get("status").cloned();
            let managed = new["metadata"].get("managedFields").cloned();
            new = old.clone();
            match status {
                Some(status) => new["status"] = status,
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
            if let Some(managed) = managed {
                new["metadata"]["managedFields"] = managed;
            }
        } else {
            match old.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
        }
    }
    new["apiVersion"] = json!(rt.api_version());
    new["kind"] = json!(rt.kind);
    if !new["metadata"].is_object() {
        new["metadata"] = json!({});
    }
    for key in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
        "resourceVersion",
    ] {
        match old["metadata"].get(key) {
            Some(v) => new["metadata"][key] = v.clone(),
            None => {
                new["metadata"].as_object_mut().expect("metadata").remove(key);
            }
        }
    }
    if !old["metadata"]["deletionTimestamp"].is_null() {
        let before = finalizers(old);
        if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
            return Err(ApiError::invalid(
                &rt.kind,
                &rt.group,
                &name,
                vec![(
                    "metadata.finalizers".into(),
                    format!(
                        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{\"{added}\"}}"
                    ),
                    "FieldValueForbidden",
                )],
            ));
        }
    }
    prepare(rt, &mut new);
    let mut new = admit(ctx, new, Some(old))?;
    let now = now();
    if via != Via::Apply {
        fields::track_update(Some(old), &mut new, &ctx.manager, sub, &*rt.list_types(), &now);
    }
    if rt.generation && spec_part(&new) != spec_part(old) {
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
        new["metadata"]["generation"] = json!(generation);
    }
    if without_managed_fields(&new) == without_managed_fields(old) {
        return Ok(old.clone());
    }
    if is_crd(rt) {
        state.registry.register_crd(&new)?;
        if ctx.dry_run {
            state.registry.register_crd(old)?;
        }
    }
    if ctx.dry_run {
        return Ok(new);
    }
    let key = rt.key();
    let ns = if rt.namespaced { ctx.namespace } else { "" };
    if !new["metadata"]["deletionTimestamp"].is_null() && finalizers(&new).is_empty() {
        state.store.put(&key, new);
        return Ok(remove_object(state, &key, ns, &name).unwrap_or_default());
    }
    let stored = state.store.put(&key, new);
    if is_crd(rt) && sub.is_none() {
        return Ok(establish(state, stored));
    }
    Ok(stored)
}

/// Removes an object from the store, with the CRD cleanup when it is a CRD.
pub(crate) fn remove_object(state: &mut State, key: &ResKey, ns: &str, name: &str) -> Option<Value> {
    let removed = state.store.remove(key, ns, name)?;
    state.deletions += 1;
    if key.0 == "apiextensions.k8s.io" && key.1 == "customresourcedefinitions" {
        let res = (
            removed["spec"]["group"].as_str().unwrap_or_default().to_owned(),
            removed["spec"]["names"]["plural"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        state.registry.unregister_crd(name);
        state.store.remove_all(&res);
    }
    Some(removed)
}

/// The media types PATCH accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }
}

fn unsupported_patch(content_type: &str) -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml \
             (got {content_type:?})"
        ),
    )
}

/// PATCH of any supported type (apply creates a missing object).
#[allow(clippy::too_many_arguments)]
pub(crate) fn patch(
    state: &mut State,
    ctx: &WriteCtx<'_>,
    name: &str,
    content_type: &str,
    body: &[u8],
    sub: Option<&str>,
    force: bool,
    field_manager_given: bool,
) -> Result<Value, ApiError> {
    let rt = ctx.rt;
    let Some(kind) = PatchType::from_content_type(content_type) else {
        return Err(unsupported_patch(content_type));
    };
    if kind == PatchType::Strategic && rt.custom.is_some() {
        return Err(unsupported_patch(content_type));
    }
    if force && kind != PatchType::Apply {
        return Err(ApiError::bad_request(
            "force may not be specified for non-apply patch",
        ));
    }
    let ns = if rt.namespaced { ctx.namespace } else { "" };
    let live = state.store.get(&rt.key(), ns, name).cloned();
    let list_types = rt.list_types();
    if kind == PatchType::Apply {
        if !field_manager_given {
            return Err(ApiError::bad_request(
                "PATCH /apply requires fieldManager to be set (fieldManager is required for apply patch)",
            ));
        }
        let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut applied: Value = serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !applied.is_object() {
            return Err(ApiError::bad_request(
                "the applied configuration must be an object",
            ));
        }
        check_type(rt, &applied)?;
        if applied["apiVersion"].is_null() || applied["kind"].is_null() {
            return Err(ApiError::bad_request(
                "apiVersion and kind must be set in an applied configuration",
            ));
        }
        let applied_name = meta_str(&applied, "name");
        if applied_name.is_empty() {
            // Like the API server, an applied configuration without a name (e.g. a controller's
            // `{apiVersion, kind, status}`) patches the object named on the URL.
            applied["metadata"]["name"] = Value::String(name.to_owned());
        } else if applied_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({applied_name}) does not match the name on the URL ({name})"
            )));
        }
        if rt.status && sub.is_none() {
            applied.as_object_mut().expect("object").remove("status");
        }
        let now = now();
        let live_for_apply = live.as_ref().map(|l| {
            let mut l = l.clone();
            if rt.status && sub.is_none() {
                l.as_object_mut().expect("object").remove("status");
            }
            l
        });
        let result = fields::apply(
            live_for_apply.as_ref(),
            &applied,
            &ctx.manager,
            force,
            sub,
            &*list_types,
            &now,
        )
        .map_err(|c| conflicts_error(rt, name, &c))?;
        return match live {
            None if sub.is_some() => Err(ApiError::not_found(&rt.qualified_resource(), name)),
            None => create(state, ctx, result, true),
            Some(live) => {
                let mut result = result;
                result["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
                update(state, ctx, &live, result, sub, Via::Apply)
            }
        };
    }
    let Some(live) = live else {
        return Err(ApiError::not_found(&rt.qualified_resource(), name));
    };
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut target = live.clone();
    match kind {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            patch::merge_patch(&mut target, &patch)
        }
        PatchType::Json => {
            target = patch::json_patch(&target, &patch)
                .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?
        }
        PatchType::Strategic => patch::strategic_merge_patch(&mut target, &patch, &*list_types)
            .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?,
        PatchType::Apply => unreachable!("handled above"),
    }
    update(state, ctx, &live, target, sub, Via::Patch)
}

fn conflicts_error(rt: &ResourceType, name: &str, conflicts: &Conflicts) -> ApiError {
    ApiError::new(409, "Conflict", conflicts.message()).with_details(
        json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": conflicts.causes()}),
    )
}

/// DELETE of one object; `(object, still_exists)`.
pub(crate) fn delete(
    state: &mut State,
    ctx: &WriteCtx<'_>,
    name: &str,
    options: &Value,
) -> Result<(Value, bool), ApiError> {
    state.deletions += 1;
    let rt = ctx.rt;
    let key = rt.key();
    let ns = if rt.namespaced { ctx.namespace } else { "" };
    let Some(object) = state.store.get(&key, ns, name).cloned() else {
        return Err(ApiError::not_found(&rt.qualified_resource(), name));
    };
    let pre = &options["preconditions"];
    if let Some(uid) = pre["uid"].as_str()
        && uid != meta_str(&object, "uid")
    {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                rt.qualified_resource(),
                meta_str(&object, "uid")
            ),
        ));
    }
    if let Some(rv) = pre["resourceVersion"].as_str()
        && rv != meta_str(&object, "resourceVersion")
    {
        return Err(ApiError::conflict(&rt.qualified_resource(), name));
    }
    let policy = match options["propagationPolicy"].as_str() {
        Some(p @ ("Background" | "Foreground" | "Orphan")) => p.to_owned(),
        Some(other) => {
            return Err(ApiError::invalid(
                "DeleteOptions",
                "",
                "",
                vec![(
                    "propagationPolicy".into(),
                    format!(
                        "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                    ),
                    "FieldValueNotSupported",
                )],
            ));
        }
        None if options["orphanDependents"] == json!(true) => "Orphan".into(),
        None => "Background".into(),
    };
    if ctx.dry_run {
        return Ok((object, true));
    }
    let uid = meta_str(&object, "uid").to_owned();
    if policy == "Orphan" {
        orphan_dependents(state, &uid);
    }
    let mut updated = object.clone();
    if policy == "Foreground" && !finalizers(&object).iter().any(|f| f == "foregroundDeletion") {
        let mut list = finalizers(&object);
        list.push("foregroundDeletion".into());
        updated["metadata"]["finalizers"] = json!(list);
    }
    let held = !finalizers(&updated).is_empty() || (is_namespaces(rt));
    if !held {
        return Ok((remove_object(state, &key, ns, name).unwrap_or_default(), false));
    }
    if updated["metadata"]["deletionTimestamp"].is_null() {
        updated["metadata"]["deletionTimestamp"] = json!(now());
        updated["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if rt.generation {
            let generation = object["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            updated["metadata"]["generation"] = json!(generation);
        }
        if is_namespaces(rt) {
            updated["status"]["phase"] = json!("Terminating");
        }
    }
    if updated == object {
        return Ok((object, true));
    }
    Ok((state.store.put(&key, updated), true))
}

/// Strips owner references to `uid` from every object (propagationPolicy Orphan).
pub(crate) fn orphan_dependents(state: &mut State, uid: &str) {
    let dependents: Vec<(ResKey, Value)> = state
        .store
        .all()
        .filter(|(_, o)| owner_uids(o).iter().any(|u| u == uid))
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect();
    for (key, mut object) in dependents {
        let refs: Vec<Value> = object["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["uid"].as_str() != Some(uid))
            .cloned()
            .collect();
        if refs.is_empty() {
            object["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove("ownerReferences");
        } else {
            object["metadata"]["ownerReferences"] = json!(refs);
        }
        state.store.put(&key, object);
    }
}

/// The owner uids of an object.
pub(crate) fn owner_uids(object: &Value) -> Vec<String> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hi"), "aGk=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b""), "");
    }
}
