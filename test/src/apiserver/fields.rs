//! Managed fields (`metadata.managedFields`) and server-side apply.
//!
//! Pure functions over `serde_json::Value`, modelled on the behaviour of the
//! Kubernetes field manager (`k8s.io/apimachinery/pkg/util/managedfields`) and
//! `sigs.k8s.io/structured-merge-diff`:
//!
//! - A [`FieldSet`] is a set of field paths, encoded on the wire as `FieldsV1`
//!   (`f:<field>`, `k:<key fields JSON>`, `v:<value JSON>`, `i:<index>`, `.` for
//!   the node itself, `{}` for a leaf).
//! - [`apply`] performs a server-side apply: field set of the configuration,
//!   conflict detection against the other managers, structured merge, removal
//!   of fields the manager stopped applying, and the `managedFields` update.
//! - [`track_update`] records ownership for non-apply writes (create, update,
//!   patch).
//!
//! List semantics come from a [`ListTypes`] implementation: [`SchemaListTypes`]
//! for custom resources (reads `x-kubernetes-list-type`), [`NoSchema`] for the
//! built-in kinds (every list atomic except the `metadata` rules).
//!
//! Differences from the real server, by design:
//! - Object nodes are treated as struct fields: a non-empty object is never
//!   itself a member of an apply field set (the real server marks entries of
//!   `additionalProperties` maps whose values are objects as members too).
//! - Lists merge by keeping the live order and appending new items.
//! - Entries are sorted as the real server sorts them (`Apply` before
//!   `Update`, then by time, manager, apiVersion, subresource), but only when
//!   something changed, so an unchanged object keeps its `managedFields` as is.
//! - The applying manager's entry gets a new `time` when the object or its
//!   field set changed; otherwise the old time is kept.
//! - Reset fields (e.g. `status` of the main resource) and validation of the
//!   applied object (e.g. a non-empty `metadata.managedFields`) are the
//!   caller's business; this module ignores `metadata.managedFields` and the
//!   server-set metadata of the applied object.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// How the items of a list are identified when merging and tracking ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// The list is a single value: replaced and owned as a whole.
    Atomic,
    /// A list of primitive values, items identified by value (union on merge).
    Set,
    /// A list of objects identified by the values of the given key fields.
    Map(Vec<String>),
}

/// Source of list semantics for an object kind.
pub trait ListTypes {
    /// The list type of the list at `path`: the object field names from the
    /// root with list items skipped (e.g. `["status", "conditions"]`).
    fn list_type(&self, path: &[String]) -> ListType;
}

/// The list rules of `metadata`, the same for every kind.
fn metadata_list_type(path: &[String]) -> Option<ListType> {
    match path {
        [m, f] if m == "metadata" && f == "ownerReferences" => Some(ListType::Map(vec!["uid".to_string()])),
        [m, f] if m == "metadata" && f == "finalizers" => Some(ListType::Set),
        _ => None,
    }
}

/// List types of the built-in kinds: the `metadata` rules, every other list atomic.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSchema;

impl ListTypes for NoSchema {
    fn list_type(&self, path: &[String]) -> ListType {
        metadata_list_type(path).unwrap_or(ListType::Atomic)
    }
}

/// List types read from a CRD version's `openAPIV3Schema`
/// (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`), plus the
/// `metadata` rules; lists the schema does not describe are atomic.
#[derive(Debug, Clone)]
pub struct SchemaListTypes {
    schema: Value,
}

impl SchemaListTypes {
    /// Wraps a CRD version's `openAPIV3Schema`.
    pub fn new(schema: Value) -> Self {
        Self { schema }
    }
}

/// Steps from an array schema to its items schema (repeatedly, for nested lists).
fn skip_items(mut node: &Value) -> &Value {
    while let Some(items) = node.get("items").filter(|_| node.get("properties").is_none()) {
        node = items;
    }
    node
}

impl ListTypes for SchemaListTypes {
    fn list_type(&self, path: &[String]) -> ListType {
        if let Some(rule) = metadata_list_type(path) {
            return rule;
        }
        let mut node = &self.schema;
        for name in path {
            let object = skip_items(node);
            node = match object.get("properties").and_then(|p| p.get(name)) {
                Some(field) => field,
                None => match object.get("additionalProperties") {
                    Some(ap) if ap.is_object() => ap,
                    _ => return ListType::Atomic,
                },
            };
        }
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => {
                let keys: Vec<String> = node
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(|k| k.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                if keys.is_empty() {
                    ListType::Atomic
                } else {
                    ListType::Map(keys)
                }
            }
            _ => ListType::Atomic,
        }
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A field of an object (`f:<name>`).
    Field(String),
    /// A list-map item by its key fields, sorted by name, values as compact JSON (`k:{...}`).
    Key(Vec<(String, String)>),
    /// A set item by its value as compact JSON (`v:<json>`).
    Value(String),
    /// An item of a list by index (`i:<n>`).
    Index(usize),
}

impl PathElement {
    /// The `FieldsV1` key of this element.
    fn fields_key(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let inner: Vec<String> = fields
                    .iter()
                    .map(|(n, v)| format!("{}:{v}", Value::String(n.clone())))
                    .collect();
                format!("k:{{{}}}", inner.join(","))
            }
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `FieldsV1` key (other than `.`).
    fn from_fields_key(key: &str) -> Result<Self, String> {
        if let Some(name) = key.strip_prefix("f:") {
            Ok(PathElement::Field(name.to_string()))
        } else if let Some(json) = key.strip_prefix("k:") {
            match serde_json::from_str::<Value>(json) {
                Ok(Value::Object(map)) => {
                    let mut fields: Vec<(String, String)> =
                        map.into_iter().map(|(n, v)| (n, v.to_string())).collect();
                    fields.sort();
                    Ok(PathElement::Key(fields))
                }
                _ => Err(format!("invalid key element {key:?}: expected a JSON object")),
            }
        } else if let Some(json) = key.strip_prefix("v:") {
            serde_json::from_str::<Value>(json)
                .map(|v| PathElement::Value(v.to_string()))
                .map_err(|e| format!("invalid value element {key:?}: {e}"))
        } else if let Some(index) = key.strip_prefix("i:") {
            index
                .parse()
                .map(PathElement::Index)
                .map_err(|e| format!("invalid index element {key:?}: {e}"))
        } else {
            Err(format!("invalid FieldsV1 element {key:?}"))
        }
    }
}

impl fmt::Display for PathElement {
    /// The server's path notation: `.name`, `[type="Ready"]`, `[="value"]`, `[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let inner: Vec<String> = fields.iter().map(|(n, v)| format!("{n}={v}")).collect();
                write!(f, "[{}]", inner.join(","))
            }
            PathElement::Value(v) => write!(f, "[={v}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Formats a path in the server's notation, e.g. `.status.conditions[type="Ready"].status`.
pub fn path_to_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A set of field paths (a tree; a node is a member when its path is in the set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the set has no paths.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds a path (the empty path is ignored: the root is never a member).
    pub fn insert(&mut self, path: &[PathElement]) {
        if let Some((head, tail)) = path.split_first() {
            self.children.entry(head.clone()).or_default().insert_rooted(tail);
        }
    }

    fn insert_rooted(&mut self, path: &[PathElement]) {
        match path.split_first() {
            None => self.member = true,
            Some((head, tail)) => self.children.entry(head.clone()).or_default().insert_rooted(tail),
        }
    }

    /// Whether the set contains exactly this path.
    pub fn contains(&self, path: &[PathElement]) -> bool {
        let mut node = self;
        for pe in path {
            match node.children.get(pe) {
                Some(child) => node = child,
                None => return false,
            }
        }
        !path.is_empty() && node.member
    }

    /// The paths of the set, in the server's iteration order (at each level the
    /// member elements first, then the descendants of each element).
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        for (pe, child) in &self.children {
            if child.member {
                let mut path = prefix.clone();
                path.push(pe.clone());
                out.push(path);
            }
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The paths in `self` or `other`.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (pe, child) in &other.children {
            self.children.entry(pe.clone()).or_default().union_with(child);
        }
    }

    /// The paths in `self` and not in `other` (exact paths, not subtrees).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            let rest = match other.children.get(pe) {
                Some(o) => child.difference(o),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(pe.clone(), rest);
            }
        }
        out
    }

    /// The paths in both `self` and `other`.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let both = child.intersection(o);
                if !both.is_empty() {
                    out.children.insert(pe.clone(), both);
                }
            }
        }
        out
    }

    /// Parses a `FieldsV1` object.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, String> {
        let mut set = Self::parse_node(value)?;
        set.member = false;
        Ok(set)
    }

    fn parse_node(value: &Value) -> Result<FieldSet, String> {
        let Value::Object(map) = value else {
            return Err(format!("invalid FieldsV1: expected an object, got {value}"));
        };
        let mut set = FieldSet::default();
        for (key, child) in map {
            if key == "." {
                set.member = true;
                continue;
            }
            let pe = PathElement::from_fields_key(key)?;
            let mut node = Self::parse_node(child)?;
            if child.as_object().is_some_and(Map::is_empty) {
                node.member = true;
            }
            if !node.is_empty() {
                set.children.insert(pe, node);
            }
        }
        Ok(set)
    }

    /// Encodes the set as a `FieldsV1` object.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        for (pe, child) in &self.children {
            if !child.is_empty() {
                map.insert(pe.fields_key(), child.encode_node());
            }
        }
        Value::Object(map)
    }

    fn encode_node(&self) -> Value {
        let mut map = Map::new();
        for (pe, child) in &self.children {
            if !child.is_empty() {
                map.insert(pe.fields_key(), child.encode_node());
            }
        }
        if self.member && !map.is_empty() {
            map.insert(".".to_string(), Value::Object(Map::new()));
        }
        Value::Object(map)
    }
}

/// The element identifying item `index` of a list of type `list_type`.
fn item_element(list_type: &ListType, index: usize, item: &Value) -> PathElement {
    match list_type {
        ListType::Set => PathElement::Value(item.to_string()),
        ListType::Map(keys) => {
            let mut fields: Vec<(String, String)> = keys
                .iter()
                .filter_map(|k| item.get(k).map(|v| (k.clone(), v.to_string())))
                .collect();
            fields.sort();
            if fields.is_empty() {
                PathElement::Index(index)
            } else {
                PathElement::Key(fields)
            }
        }
        ListType::Atomic => PathElement::Index(index),
    }
}

fn field(name: &str) -> PathElement {
    PathElement::Field(name.to_string())
}

/// Paths the field manager never records (exact paths, like the server's strip set).
fn strip_set() -> FieldSet {
    let mut set = FieldSet::new();
    set.insert(&[field("apiVersion")]);
    set.insert(&[field("kind")]);
    set.insert(&[field("metadata")]);
    for name in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.insert(&[field("metadata"), field(name)]);
    }
    set
}

/// The field set of an applied configuration (leaves, list items, atomic lists,
/// empty objects), without the stripped metadata.
fn field_set(obj: &Value, list_types: &dyn ListTypes) -> FieldSet {
    let mut set = FieldSet::new();
    if let Value::Object(map) = obj {
        for (k, v) in map {
            collect_set(
                v,
                &mut vec![k.clone()],
                list_types,
                set.children.entry(field(k)).or_default(),
            );
        }
    }
    set.difference(&strip_set())
}

fn collect_set(value: &Value, spath: &mut Vec<String>, list_types: &dyn ListTypes, node: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                spath.push(k.clone());
                collect_set(v, spath, list_types, node.children.entry(field(k)).or_default());
                spath.pop();
            }
        }
        Value::Array(items) => match list_types.list_type(spath) {
            ListType::Atomic => node.member = true,
            list_type => {
                for (i, item) in items.iter().enumerate() {
                    let child = node
                        .children
                        .entry(item_element(&list_type, i, item))
                        .or_default();
                    child.member = true;
                    if matches!(list_type, ListType::Map(_)) {
                        collect_set(item, spath, list_types, child);
                    }
                }
            }
        },
        _ => node.member = true,
    }
}

/// The paths added, modified and removed between two objects.
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

fn compare_objects(old: &Value, new: &Value, list_types: &dyn ListTypes) -> Comparison {
    let mut out = Comparison::default();
    compare(
        Some(old),
        Some(new),
        &mut Vec::new(),
        &mut Vec::new(),
        list_types,
        &mut out,
    );
    out
}

fn compare(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    spath: &mut Vec<String>,
    path: &mut Vec<PathElement>,
    list_types: &dyn ListTypes,
    out: &mut Comparison,
) {
    if lhs.is_none() && rhs.is_none() {
        return;
    }
    let nonempty_obj = |v: Option<&Value>| matches!(v, Some(Value::Object(m)) if !m.is_empty());
    let obj_like = |v: Option<&Value>| matches!(v, None | Some(Value::Null) | Some(Value::Object(_)));
    let list_like = |v: Option<&Value>| matches!(v, None | Some(Value::Null) | Some(Value::Array(_)));
    let is_list = |v: Option<&Value>| matches!(v, Some(Value::Array(_)));
    let list_type = if is_list(lhs) || is_list(rhs) {
        list_types.list_type(spath)
    } else {
        ListType::Atomic
    };

    if (nonempty_obj(lhs) || nonempty_obj(rhs)) && obj_like(lhs) && obj_like(rhs) {
        let empty = Map::new();
        let lm = lhs.and_then(Value::as_object).unwrap_or(&empty);
        let rm = rhs.and_then(Value::as_object).unwrap_or(&empty);
        let keys: Vec<&String> = lm
            .keys()
            .chain(rm.keys().filter(|k| !lm.contains_key(*k)))
            .collect();
        for k in keys {
            spath.push(k.clone());
            path.push(field(k));
            compare(lm.get(k), rm.get(k), spath, path, list_types, out);
            path.pop();
            spath.pop();
        }
    } else if list_type != ListType::Atomic && list_like(lhs) && list_like(rhs) {
        let items = |v: Option<&Value>| -> Vec<(PathElement, Value)> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .enumerate()
                        .map(|(i, it)| (item_element(&list_type, i, it), it.clone()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let left = items(lhs);
        let right = items(rhs);
        let lmap: BTreeMap<&PathElement, &Value> = left.iter().map(|(p, v)| (p, v)).collect();
        let rmap: BTreeMap<&PathElement, &Value> = right.iter().map(|(p, v)| (p, v)).collect();
        let mut order: Vec<&PathElement> = left.iter().map(|(p, _)| p).collect();
        order.extend(right.iter().map(|(p, _)| p).filter(|p| !lmap.contains_key(*p)));
        order.dedup();
        for pe in order {
            path.push(pe.clone());
            compare(
                lmap.get(pe).copied(),
                rmap.get(pe).copied(),
                spath,
                path,
                list_types,
                out,
            );
            path.pop();
        }
    } else {
        match (lhs, rhs) {
            (None, Some(_)) => out.added.insert(path),
            (Some(_), None) => out.removed.insert(path),
            (Some(a), Some(b)) if a != b => out.modified.insert(path),
            _ => {}
        }
        return;
    }
    if lhs.is_none() {
        out.added.insert(path);
    } else if rhs.is_none() {
        out.removed.insert(path);
    }
}

/// Structured merge of an applied configuration into an object.
fn merge_applied(target: &mut Value, applied: &Value, spath: &mut Vec<String>, list_types: &dyn ListTypes) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, av) in a {
                spath.push(k.clone());
                match t.get_mut(k) {
                    Some(tv) => merge_applied(tv, av, spath, list_types),
                    None => {
                        t.insert(k.clone(), av.clone());
                    }
                }
                spath.pop();
            }
        }
        (target @ Value::Array(_), Value::Array(a)) => {
            let list_type = list_types.list_type(spath);
            let Value::Array(t) = target else { unreachable!() };
            match &list_type {
                ListType::Atomic => *t = a.clone(),
                ListType::Set => {
                    for item in a {
                        if !t.contains(item) {
                            t.push(item.clone());
                        }
                    }
                }
                ListType::Map(_) => {
                    for (i, item) in a.iter().enumerate() {
                        let pe = item_element(&list_type, i, item);
                        let found = t
                            .iter()
                            .enumerate()
                            .position(|(j, it)| item_element(&list_type, j, it) == pe);
                        match found {
                            Some(j) => merge_applied(&mut t[j], item, spath, list_types),
                            None => t.push(item.clone()),
                        }
                    }
                }
            }
        }
        (target, applied) => *target = applied.clone(),
    }
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Removes from `value` the paths of `last` that nobody owns in `owned`. A
/// path is removed whole when it was a member of `last` and nothing under it is
/// owned; an intermediate object field is removed once it became empty.
fn prune(
    value: &mut Value,
    last: &FieldSet,
    owned: Option<&FieldSet>,
    spath: &mut Vec<String>,
    list_types: &dyn ListTypes,
) {
    for (pe, lchild) in &last.children {
        let ochild = owned.and_then(|o| o.children.get(pe));
        let keep = ochild.is_some_and(|c| !c.is_empty());
        let remove = |v: &Value| !keep && (lchild.member || is_empty_container(v));
        if let PathElement::Field(name) = pe {
            let Some(map) = value.as_object_mut() else {
                continue;
            };
            let Some(child) = map.get_mut(name) else { continue };
            spath.push(name.clone());
            prune(child, lchild, ochild, spath, list_types);
            spath.pop();
            if remove(child) {
                map.remove(name);
            }
        } else {
            let list_type = list_types.list_type(spath);
            let Some(items) = value.as_array_mut() else {
                continue;
            };
            let Some(idx) = items
                .iter()
                .enumerate()
                .position(|(i, it)| item_element(&list_type, i, it) == *pe)
            else {
                continue;
            };
            prune(&mut items[idx], lchild, ochild, spath, list_types);
            if !keep && lchild.member {
                items.remove(idx);
            }
        }
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    set: FieldSet,
    raw: Value,
    dirty: bool,
}

impl Entry {
    fn parse(raw: &Value) -> Option<Entry> {
        let obj = raw.as_object()?;
        let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Entry {
            manager: s("manager").unwrap_or_default(),
            operation: s("operation").unwrap_or_default(),
            api_version: s("apiVersion").unwrap_or_default(),
            time: s("time"),
            subresource: s("subresource").filter(|s| !s.is_empty()),
            set: obj
                .get("fieldsV1")
                .and_then(|f| FieldSet::from_fields_v1(f).ok())
                .unwrap_or_default(),
            raw: raw.clone(),
            dirty: false,
        })
    }

    fn new(manager: &str, operation: &str, api_version: &str, now: &str, subresource: Option<&str>) -> Entry {
        Entry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version: api_version.to_string(),
            time: Some(now.to_string()),
            subresource: subresource.filter(|s| !s.is_empty()).map(str::to_string),
            set: FieldSet::new(),
            raw: Value::Null,
            dirty: true,
        }
    }

    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource.filter(|s| !s.is_empty())
    }

    fn to_json(&self) -> Value {
        if !self.dirty {
            return self.raw.clone();
        }
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if let Some(s) = &self.subresource {
            m.insert("subresource".into(), Value::String(s.clone()));
        }
        Value::Object(m)
    }

    /// The server's description after the quoted manager name.
    fn detail(&self) -> String {
        let mut out = String::new();
        if let Some(s) = &self.subresource {
            out.push_str(&format!(" with subresource {}", quote(s)));
        }
        if self.operation == "Update" {
            out.push_str(&format!(" using {}", self.api_version));
            if let Some(t) = &self.time {
                out.push_str(&format!(" at {t}"));
            }
        }
        out
    }
}

fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn read_entries(list: Option<&Value>) -> Vec<Entry> {
    list.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Entry::parse).collect())
        .unwrap_or_default()
}

fn managed_fields_of(obj: &Value) -> Option<&Value> {
    obj.get("metadata").and_then(|m| m.get("managedFields"))
}

fn without_managed_fields(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    out
}

/// Sorts (when anything changed) and stores the entries in `obj`.
fn write_entries(obj: &mut Value, mut entries: Vec<Entry>, changed: bool) {
    if changed {
        entries.sort_by(|p, q| {
            p.operation
                .cmp(&q.operation)
                .then_with(|| {
                    p.time
                        .as_deref()
                        .unwrap_or("")
                        .cmp(q.time.as_deref().unwrap_or(""))
                })
                .then_with(|| p.manager.cmp(&q.manager))
                .then_with(|| p.api_version.cmp(&q.api_version))
                .then_with(|| {
                    p.subresource
                        .as_deref()
                        .unwrap_or("")
                        .cmp(q.subresource.as_deref().unwrap_or(""))
                })
        });
    }
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let root = obj.as_object_mut().expect("object");
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let meta = meta.as_object_mut().expect("object");
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::to_json).collect()),
        );
    }
}

/// One field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name.
    pub manager: String,
    /// What the server prints after the quoted manager name: ` with subresource "status"`
    /// and, for `Update` entries, ` using <apiVersion> at <time>`; empty for a plain apply.
    pub detail: String,
    /// The field in the server's notation, e.g. `.spec.replicas`.
    pub field: String,
}

impl Conflict {
    fn owner(&self) -> String {
        format!("{}{}", quote(&self.manager), self.detail)
    }
}

/// The conflicts that refused an apply (HTTP 409 with reason `Conflict`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflicts(pub Vec<Conflict>);

impl Conflicts {
    /// The server's message: `Apply failed with 1 conflict: conflict with "m": .spec.x`, or for
    /// several `Apply failed with N conflicts: conflicts with "m":\n- .spec.x\n- .spec.y`
    /// (grouped by manager, managers sorted).
    pub fn message(&self) -> String {
        if let [only] = self.0.as_slice() {
            return format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                only.owner(),
                only.field
            );
        }
        let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for c in &self.0 {
            groups.entry(c.owner()).or_default().push(&c.field);
        }
        let mut lines = Vec::new();
        for (owner, fields) in groups {
            lines.push(format!("conflicts with {owner}:"));
            lines.extend(fields.into_iter().map(|f| format!("- {f}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            self.0.len(),
            lines.join("\n")
        )
    }

    /// The `details.causes` of the 409 status, one per conflict.
    pub fn causes(&self) -> Vec<Value> {
        self.0
            .iter()
            .map(|c| {
                serde_json::json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {}", c.owner()),
                    "field": c.field,
                })
            })
            .collect()
    }
}

impl fmt::Display for Conflicts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for Conflicts {}

/// Removes the server-set metadata an applied configuration may not set.
fn strip_applied(applied: &Value) -> Value {
    let mut out = applied.clone();
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
        ] {
            meta.remove(k);
        }
    }
    out
}

/// Server-side apply of `applied` by `manager` to `live` (`None`: the object is created).
///
/// Returns the new object with its `managedFields`, or the conflicts with other
/// managers (unless `force`, which takes the conflicting fields over). Applying
/// the same configuration again returns an object equal to `live`.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    list_types: &dyn ListTypes,
    now: &str,
) -> Result<Value, Conflicts> {
    let mut entries = read_entries(live.and_then(managed_fields_of));
    let live_obj = live
        .map(without_managed_fields)
        .unwrap_or_else(|| Value::Object(Map::new()));
    let config = strip_applied(applied);
    let config_set = field_set(&config, list_types);
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();

    let mut merged = live_obj.clone();
    merge_applied(&mut merged, &config, &mut Vec::new(), list_types);

    let own = entries.iter().position(|e| e.is(manager, "Apply", subresource));
    let last_set = own.map(|i| entries[i].set.clone()).unwrap_or_default();
    let mut owned = config_set.clone();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) != own {
            owned.union_with(&e.set);
        }
    }
    prune(&mut merged, &last_set, Some(&owned), &mut Vec::new(), list_types);

    let cmp = compare_objects(&live_obj, &merged, list_types);
    let changed = cmp.added.union(&cmp.modified);
    let mut conflicts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) == own {
            continue;
        }
        for path in e.set.intersection(&changed).paths() {
            conflicts.push(Conflict {
                manager: e.manager.clone(),
                detail: e.detail(),
                field: path_to_string(&path),
            });
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(Conflicts(conflicts));
    }

    let mut any_change = false;
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) == own {
            continue;
        }
        let rest = e.set.difference(&changed).difference(&cmp.removed);
        if rest != e.set {
            e.set = rest;
            e.dirty = true;
            any_change = true;
        }
    }
    let object_changed = merged != live_obj;
    match own {
        Some(i) => {
            let e = &mut entries[i];
            if e.set != config_set || e.api_version != api_version {
                e.set = config_set;
                e.api_version = api_version.to_string();
                e.dirty = true;
            }
            if e.dirty || object_changed {
                e.time = Some(now.to_string());
                e.dirty = true;
                any_change = true;
            }
        }
        None => {
            let mut e = Entry::new(manager, "Apply", api_version, now, subresource);
            e.set = config_set;
            entries.push(e);
            any_change = true;
        }
    }
    let before = entries.len();
    entries.retain(|e| !e.set.is_empty());
    any_change |= entries.len() != before;
    write_entries(&mut merged, entries, any_change);
    Ok(merged)
}

/// Records the ownership of a non-apply write (create: `old` is `None`).
///
/// Fields whose value changed or appeared between `old` and `new` become owned by
/// `manager` (operation `Update`, merged into its existing entry for the same
/// subresource and apiVersion) and are taken from the other managers; removed
/// fields are removed from every set. `new.metadata.managedFields` is the base
/// when the client sent a non-empty list (the server honours it), otherwise
/// the old object's; `[{}]` resets the managed fields.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    list_types: &dyn ListTypes,
    now: &str,
) {
    let given = managed_fields_of(new).cloned();
    if let Some(Value::Array(list)) = &given
        && list.len() == 1
        && list[0].as_object().is_some_and(Map::is_empty)
    {
        write_entries(new, Vec::new(), false);
        return;
    }
    let mut entries = match &given {
        Some(Value::Array(list)) if !list.is_empty() => read_entries(given.as_ref()),
        _ => read_entries(old.and_then(managed_fields_of)),
    };
    let old_obj = old
        .map(without_managed_fields)
        .unwrap_or_else(|| Value::Object(Map::new()));
    let new_obj = without_managed_fields(new);
    let cmp = compare_objects(&old_obj, &new_obj, list_types);
    let changed = cmp.added.union(&cmp.modified).difference(&strip_set());

    let mut any_change = false;
    for e in entries.iter_mut() {
        let rest = e.set.difference(&changed).difference(&cmp.removed);
        if rest != e.set {
            e.set = rest;
            e.dirty = true;
            any_change = true;
        }
    }
    if !changed.is_empty() {
        let api_version = new.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let own = entries
            .iter()
            .position(|e| e.is(manager, "Update", subresource) && e.api_version == api_version);
        let e = match own {
            Some(i) => &mut entries[i],
            None => {
                entries.push(Entry::new(manager, "Update", api_version, now, subresource));
                entries.last_mut().expect("pushed")
            }
        };
        e.set = e.set.union(&changed);
        e.time = Some(now.to_string());
        e.dirty = true;
        any_change = true;
    }
    let before = entries.len();
    entries.retain(|e| !e.set.is_empty());
    any_change |= entries.len() != before;
    write_entries(new, entries, any_change);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: &str = "2024-01-01T00:00:00Z";
    const T1: &str = "2024-01-01T00:01:00Z";
    const T2: &str = "2024-01-01T00:02:00Z";

    fn schema() -> SchemaListTypes {
        SchemaListTypes::new(json!({
            "type": "object",
            "properties": {
                "spec": {"type": "object", "properties": {
                    "replicas": {"type": "integer"},
                    "image": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                    "args": {"type": "array", "items": {"type": "string"}},
                }},
                "status": {"type": "object", "properties": {
                    "conditions": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["type"],
                        "items": {"type": "object", "properties": {
                            "type": {"type": "string"},
                            "status": {"type": "string"},
                            "reason": {"type": "string"},
                        }},
                    },
                }},
            },
        }))
    }

    fn mf(obj: &Value) -> Vec<Value> {
        managed_fields_of(obj)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    fn entry<'a>(obj: &'a Value, manager: &str) -> Option<&'a Value> {
        managed_fields_of(obj)?
            .as_array()?
            .iter()
            .find(|e| e["manager"] == manager)
    }

    fn widget(spec: Value) -> Value {
        json!({"apiVersion": "x.io/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ns"}, "spec": spec})
    }

    #[test]
    fn fields_v1_round_trips_literal_example() {
        let literal = json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}}
        });
        let set = FieldSet::from_fields_v1(&literal).unwrap();
        let paths: Vec<String> = set.paths().iter().map(|p| path_to_string(p)).collect();
        assert_eq!(
            paths,
            vec![
                ".metadata.labels.app",
                ".status.conditions[type=\"Ready\"]",
                ".status.conditions[type=\"Ready\"].status",
                ".status.conditions[type=\"Ready\"].type",
            ]
        );
        assert_eq!(set.to_fields_v1(), literal);
    }

    #[test]
    fn fields_v1_parses_set_index_and_multi_key_elements() {
        let literal = json!({
            "f:metadata": {"f:finalizers": {".": {}, "v:\"a/b\"": {}}},
            "f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}}}, "f:x": {"i:0": {}}}
        });
        let set = FieldSet::from_fields_v1(&literal).unwrap();
        assert!(set.contains(&[field("metadata"), field("finalizers")]));
        assert!(set.contains(&[
            field("metadata"),
            field("finalizers"),
            PathElement::Value("\"a/b\"".into())
        ]));
        let key = PathElement::Key(vec![
            ("port".into(), "80".into()),
            ("protocol".into(), "\"TCP\"".into()),
        ]);
        assert_eq!(key.to_string(), "[port=80,protocol=\"TCP\"]");
        assert!(set.contains(&[field("spec"), field("ports"), key]));
        assert!(set.contains(&[field("spec"), field("x"), PathElement::Index(0)]));
        assert_eq!(set.to_fields_v1(), literal);
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
    }

    #[test]
    fn schema_list_types_read_extensions_and_metadata_rules() {
        let s = schema();
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            s.list_type(&p(&["status", "conditions"])),
            ListType::Map(vec!["type".into()])
        );
        assert_eq!(s.list_type(&p(&["spec", "tags"])), ListType::Set);
        assert_eq!(s.list_type(&p(&["spec", "args"])), ListType::Atomic);
        assert_eq!(s.list_type(&p(&["spec", "unknown"])), ListType::Atomic);
        assert_eq!(
            s.list_type(&p(&["metadata", "ownerReferences"])),
            ListType::Map(vec!["uid".into()])
        );
        assert_eq!(NoSchema.list_type(&p(&["metadata", "finalizers"])), ListType::Set);
        assert_eq!(NoSchema.list_type(&p(&["spec", "containers"])), ListType::Atomic);
    }

    #[test]
    fn apply_first_apply_owns_fields() {
        let mut cfg = widget(json!({"replicas": 2, "tags": ["a"]}));
        cfg["metadata"]["labels"] = json!({"app": "w"});
        let out = apply(None, &cfg, "user", false, None, &schema(), T0).unwrap();
        assert_eq!(out["spec"], json!({"replicas": 2, "tags": ["a"]}));
        assert_eq!(
            mf(&out),
            vec![json!({
                "manager": "user", "operation": "Apply", "apiVersion": "x.io/v1", "time": T0,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}},
                             "f:spec": {"f:replicas": {}, "f:tags": {"v:\"a\"": {}}}},
            })]
        );
    }

    #[test]
    fn apply_identical_reapply_returns_live_unchanged() {
        let cfg = widget(json!({"replicas": 2}));
        let live = apply(None, &cfg, "user", false, None, &schema(), T0).unwrap();
        let again = apply(Some(&live), &cfg, "user", false, None, &schema(), T1).unwrap();
        assert_eq!(again, live);
        assert_eq!(entry(&again, "user").unwrap()["time"], T0);
    }

    #[test]
    fn apply_two_managers_do_not_clobber_each_other() {
        let s = schema();
        let user_cfg = widget(json!({"replicas": 2}));
        let live = apply(None, &user_cfg, "user", false, None, &s, T0).unwrap();
        let status_cfg = json!({"apiVersion": "x.io/v1", "kind": "Widget", "metadata": {"name": "w"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let live = apply(Some(&live), &status_cfg, "ctrl", false, Some("status"), &s, T1).unwrap();
        assert_eq!(live["spec"]["replicas"], 2);
        assert_eq!(live["status"]["conditions"][0]["status"], "True");
        assert_eq!(
            entry(&live, "ctrl").unwrap()["fieldsV1"],
            json!({"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
        );
        assert_eq!(entry(&live, "ctrl").unwrap()["subresource"], "status");
        // The user re-applies with a change and without status: the controller's status survives.
        let live = apply(
            Some(&live),
            &widget(json!({"replicas": 3})),
            "user",
            false,
            None,
            &s,
            T2,
        )
        .unwrap();
        assert_eq!(live["spec"]["replicas"], 3);
        assert_eq!(
            live["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}])
        );
        assert_eq!(mf(&live).len(), 2);
    }

    #[test]
    fn apply_conflict_with_other_manager_reports_message_and_causes() {
        let s = schema();
        let live = apply(None, &widget(json!({"replicas": 2})), "user", false, None, &s, T0).unwrap();
        let err = apply(
            Some(&live),
            &widget(json!({"replicas": 5})),
            "other",
            false,
            None,
            &s,
            T1,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"user\": .spec.replicas"
        );
        assert_eq!(
            err.causes(),
            vec![
                json!({"reason": "FieldManagerConflict", "message": "conflict with \"user\"", "field": ".spec.replicas"})
            ]
        );
        // The same value is shared ownership, not a conflict.
        let shared = apply(
            Some(&live),
            &widget(json!({"replicas": 2})),
            "other",
            false,
            None,
            &s,
            T1,
        )
        .unwrap();
        assert_eq!(
            entry(&shared, "user").unwrap()["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
        assert_eq!(
            entry(&shared, "other").unwrap()["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
    }

    #[test]
    fn apply_conflicts_message_groups_several_conflicts_by_manager() {
        let s = schema();
        let mut live = widget(json!({"replicas": 2, "image": "a"}));
        track_update(None, &mut live, "kubectl", None, &s, T0);
        let err = apply(
            Some(&live),
            &widget(json!({"replicas": 5, "image": "b"})),
            "ci",
            false,
            None,
            &s,
            T1,
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "Apply failed with 2 conflicts: conflicts with \"kubectl\" using x.io/v1 at {T0}:\n- .spec.image\n- .spec.replicas"
            )
        );
        assert_eq!(
            err.causes()[0]["message"],
            format!("conflict with \"kubectl\" using x.io/v1 at {T0}")
        );
    }

    #[test]
    fn apply_conflict_inside_list_map_item_names_the_item_path() {
        let s = schema();
        let cfg = |status: &str| {
            json!({"apiVersion": "x.io/v1", "kind": "Widget", "metadata": {"name": "w"},
                "status": {"conditions": [{"type": "Ready", "status": status}]}})
        };
        let live = apply(None, &cfg("True"), "ctrl", false, Some("status"), &s, T0).unwrap();
        let err = apply(Some(&live), &cfg("False"), "other", false, Some("status"), &s, T1).unwrap_err();
        assert_eq!(
            err.message(),
            "Apply failed with 1 conflict: conflict with \"ctrl\" with subresource \"status\": \
             .status.conditions[type=\"Ready\"].status"
        );
        assert_eq!(
            err.causes()[0]["field"],
            ".status.conditions[type=\"Ready\"].status"
        );
    }

    #[test]
    fn apply_force_takes_ownership() {
        let s = schema();
        let live = apply(
            None,
            &widget(json!({"replicas": 2, "image": "a"})),
            "user",
            false,
            None,
            &s,
            T0,
        )
        .unwrap();
        let out = apply(
            Some(&live),
            &widget(json!({"replicas": 5})),
            "other",
            true,
            None,
            &s,
            T1,
        )
        .unwrap();
        assert_eq!(out["spec"], json!({"replicas": 5, "image": "a"}));
        assert_eq!(
            entry(&out, "user").unwrap()["fieldsV1"],
            json!({"f:spec": {"f:image": {}}})
        );
        assert_eq!(
            entry(&out, "other").unwrap()["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
    }

    #[test]
    fn apply_removes_field_the_manager_stopped_applying() {
        let s = schema();
        let mut cfg = widget(json!({"replicas": 2, "image": "a", "tags": ["x", "y"]}));
        cfg["metadata"]["labels"] = json!({"app": "w"});
        let live = apply(None, &cfg, "user", false, None, &s, T0).unwrap();
        let out = apply(
            Some(&live),
            &widget(json!({"replicas": 2, "tags": ["x"]})),
            "user",
            false,
            None,
            &s,
            T1,
        )
        .unwrap();
        assert_eq!(out["spec"], json!({"replicas": 2, "tags": ["x"]}));
        assert!(out["metadata"].get("labels").is_none());
        assert_eq!(out["metadata"]["name"], "w");
        assert_eq!(entry(&out, "user").unwrap()["time"], T1);
        // A field another manager also owns stays.
        let shared = apply(
            Some(&live),
            &widget(json!({"image": "a"})),
            "other",
            false,
            None,
            &s,
            T1,
        )
        .unwrap();
        let out = apply(
            Some(&shared),
            &widget(json!({"replicas": 2})),
            "user",
            false,
            None,
            &s,
            T2,
        )
        .unwrap();
        assert_eq!(out["spec"]["image"], "a");
        assert!(out["spec"].get("tags").is_none());
    }

    #[test]
    fn apply_list_map_item_owned_partially_by_two_managers() {
        let s = schema();
        let base = json!({"apiVersion": "x.io/v1", "kind": "Widget", "metadata": {"name": "w"}});
        let mut a = base.clone();
        a["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        let mut b = base.clone();
        b["status"] = json!({"conditions": [{"type": "Ready", "reason": "Done"}]});
        let live = apply(None, &a, "a", false, None, &s, T0).unwrap();
        let live = apply(Some(&live), &b, "b", false, None, &s, T1).unwrap();
        assert_eq!(
            live["status"]["conditions"],
            json!([{"type": "Ready", "status": "True", "reason": "Done"}])
        );
        // a stops applying the condition: its status goes, b's reason and the item stay.
        let mut a2 = base.clone();
        a2["spec"] = json!({"replicas": 1});
        let out = apply(Some(&live), &a2, "a", false, None, &s, T2).unwrap();
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "reason": "Done"}])
        );
        // b stops too: the item goes.
        let mut b2 = base.clone();
        b2["spec"] = json!({"image": "i"});
        let out = apply(Some(&out), &b2, "b", false, None, &s, T2).unwrap();
        assert_eq!(out.get("status"), None);
    }

    #[test]
    fn track_update_transfers_ownership_of_changed_fields() {
        let s = schema();
        let live = apply(
            None,
            &widget(json!({"replicas": 2, "image": "a"})),
            "user",
            false,
            None,
            &s,
            T0,
        )
        .unwrap();
        let mut new = live.clone();
        new["spec"]["replicas"] = json!(4);
        new["spec"]["args"] = json!(["--x"]);
        track_update(Some(&live), &mut new, "hpa", None, &s, T1);
        assert_eq!(
            entry(&new, "user").unwrap()["fieldsV1"],
            json!({"f:spec": {"f:image": {}}})
        );
        assert_eq!(
            entry(&new, "hpa").unwrap(),
            &json!({"manager": "hpa", "operation": "Update", "apiVersion": "x.io/v1", "time": T1,
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:args": {}, "f:replicas": {}}}})
        );
        // An unchanged write keeps managedFields as they were.
        let mut same = new.clone();
        track_update(Some(&new), &mut same, "other", None, &s, T2);
        assert_eq!(same, new);
        // A removed field leaves every set.
        let mut removed = new.clone();
        removed["spec"].as_object_mut().unwrap().remove("image");
        track_update(Some(&new), &mut removed, "other", None, &s, T2);
        assert!(entry(&removed, "user").is_none());
        assert!(entry(&removed, "other").is_none());
    }

    #[test]
    fn track_update_create_records_new_maps_as_members() {
        let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "1"}, "finalizers": ["f"]}, "data": {"k": "v"}});
        track_update(None, &mut obj, "kubectl", None, &NoSchema, T0);
        assert_eq!(
            entry(&obj, "kubectl").unwrap()["fieldsV1"],
            json!({"f:data": {".": {}, "f:k": {}},
                   "f:metadata": {"f:finalizers": {".": {}, "v:\"f\"": {}}, "f:labels": {".": {}, "f:a": {}}}})
        );
    }
}
