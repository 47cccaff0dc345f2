//! Objects, the global resourceVersion counter and the bounded event log watches read from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

use super::registry::ResKey;

/// Watch event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as recorded in the event log.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub res: ResKey,
    pub type_: EventType,
    pub object: Value,
    /// The object before the change (for selector transitions).
    pub old: Option<Value>,
}

/// Where an object lives.
#[derive(Clone, Debug)]
pub(crate) struct ObjRef {
    pub res: ResKey,
    pub namespace: String,
    pub name: String,
}

/// Objects by resource, then `(namespace, name)` (namespace empty for cluster-scoped objects).
pub(crate) struct Store {
    rv: u64,
    objects: HashMap<ResKey, BTreeMap<(String, String), Value>>,
    uids: HashMap<String, ObjRef>,
    log: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Highest resourceVersion no longer in the log.
    evicted: u64,
}

pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object["metadata"][field].as_str().unwrap_or_default()
}

impl Store {
    pub fn new(capacity: usize) -> Self {
        Self {
            rv: 1,
            objects: HashMap::new(),
            uids: HashMap::new(),
            log: VecDeque::new(),
            capacity,
            evicted: 1,
        }
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// Oldest resourceVersion a watch can start from.
    pub fn oldest_watchable(&self) -> u64 {
        self.evicted
    }

    pub fn get(&self, res: &ResKey, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(res)?
            .get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Objects of a resource in `(namespace, name)` order, optionally in one namespace.
    pub fn list<'a>(
        &'a self,
        res: &ResKey,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .get(res)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(move |((ns, _), _)| namespace.is_none_or(|n| n == ns))
            .map(|(_, v)| v)
    }

    pub fn by_uid(&self, uid: &str) -> Option<&ObjRef> {
        self.uids.get(uid)
    }

    /// Every object of every resource, for the garbage collector.
    pub fn all(&self) -> impl Iterator<Item = (&ResKey, &Value)> {
        self.objects
            .iter()
            .flat_map(|(res, m)| m.values().map(move |v| (res, v)))
    }

    /// Stores `object` (whose metadata the caller completed) at a new resourceVersion and records
    /// the event; returns the stored object.
    pub fn put(&mut self, res: &ResKey, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let namespace = meta_str(&object, "namespace").to_owned();
        let name = meta_str(&object, "name").to_owned();
        let uid = meta_str(&object, "uid").to_owned();
        let old = self
            .objects
            .entry(res.clone())
            .or_default()
            .insert((namespace.clone(), name.clone()), object.clone());
        self.uids.insert(
            uid,
            ObjRef {
                res: res.clone(),
                namespace,
                name,
            },
        );
        let type_ = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(res, type_, object.clone(), old);
        object
    }

    /// Removes an object; the DELETED event carries it at a new resourceVersion.
    pub fn remove(&mut self, res: &ResKey, namespace: &str, name: &str) -> Option<Value> {
        let mut object = self
            .objects
            .get_mut(res)?
            .remove(&(namespace.to_owned(), name.to_owned()))?;
        self.uids.remove(meta_str(&object, "uid"));
        self.rv += 1;
        object["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        self.record(res, EventType::Deleted, object.clone(), None);
        Some(object)
    }

    /// Drops every object of a resource (when its CRD goes away), with DELETED events.
    pub fn remove_all(&mut self, res: &ResKey) {
        let keys: Vec<(String, String)> = self
            .objects
            .get(res)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for (ns, name) in keys {
            self.remove(res, &ns, &name);
        }
        self.objects.remove(res);
    }

    fn record(&mut self, res: &ResKey, type_: EventType, object: Value, old: Option<Value>) {
        self.log.push_back(Arc::new(Event {
            rv: self.rv,
            res: res.clone(),
            type_,
            object,
            old,
        }));
        while self.log.len() > self.capacity {
            if let Some(event) = self.log.pop_front() {
                self.evicted = event.rv;
            }
        }
    }

    /// Events after `rv`, or `None` when some of them were evicted (410 Gone).
    pub fn events_since(&self, rv: u64) -> Option<Vec<Arc<Event>>> {
        if rv < self.evicted {
            return None;
        }
        let start = self.log.partition_point(|e| e.rv <= rv);
        Some(self.log.range(start..).cloned().collect())
    }
}
