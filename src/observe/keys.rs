//! The keys of one name as a watcher or a reader of the queue knows them,
//! by create revision, and who of them holds.

use std::collections::{BTreeMap, HashMap};

use crate::queue::{PERMITS, READERS};
use crate::types::{HoldMode, KeyValue};
use crate::wire::mvccpb;

/// The live keys under `{name}/`, ordered by create revision.
pub(super) struct KeysByRevision {
    prefix: String,
    by_rev: BTreeMap<i64, KeyValue>,
    by_key: HashMap<Vec<u8>, i64>,
}

impl KeysByRevision {
    pub(super) fn new(prefix: &str, kvs: Vec<KeyValue>) -> KeysByRevision {
        let mut keys = KeysByRevision {
            prefix: prefix.to_owned(),
            by_rev: BTreeMap::new(),
            by_key: HashMap::new(),
        };
        for kv in kvs {
            keys.put(kv);
        }
        keys
    }

    fn put(&mut self, kv: KeyValue) {
        if let Some(old) = self.by_key.insert(kv.key.clone(), kv.create_revision.0) {
            self.by_rev.remove(&old);
        }
        self.by_rev.insert(kv.create_revision.0, kv);
    }

    fn delete(&mut self, key: &[u8]) {
        if let Some(rev) = self.by_key.remove(key) {
            self.by_rev.remove(&rev);
        }
    }

    /// Applies one watch event.
    pub(super) fn apply(&mut self, ev: &mvccpb::Event) {
        if let Some(kv) = ev.kv.clone() {
            if ev.r#type == mvccpb::event::EventType::Delete as i32 {
                self.delete(&kv.key);
            } else {
                self.put(KeyValue::from(kv));
            }
        }
    }

    /// The oldest live key: the leader.
    pub(super) fn first(&self) -> Option<&KeyValue> {
        self.by_rev.values().next()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_rev.is_empty()
    }

    /// Whether any key is a semaphore's permit.
    pub(super) fn has_permits(&self) -> bool {
        self.by_rev
            .values()
            .any(|kv| self.mode(kv) == HoldMode::Permit)
    }

    /// How `kv` holds, from its key.
    pub(super) fn mode(&self, kv: &KeyValue) -> HoldMode {
        let rest = kv.key.strip_prefix(self.prefix.as_bytes()).unwrap_or(&[]);
        if rest.starts_with(READERS.as_bytes()) {
            HoldMode::Shared
        } else if rest.starts_with(PERMITS.as_bytes()) {
            HoldMode::Permit
        } else {
            HoldMode::Exclusive
        }
    }

    /// Every key in arrival order, with whether it holds: by the rule of
    /// its own kind, as the queue engine judges it (exclusive: no key
    /// before it; shared: no writer before it; permit: fewer than
    /// `permits` keys before it).
    pub(super) fn judged(&self, permits: u32) -> Vec<(&KeyValue, bool)> {
        let (mut before, mut writers_before) = (0u32, 0u32);
        let mut out = Vec::with_capacity(self.by_rev.len());
        for kv in self.by_rev.values() {
            let mode = self.mode(kv);
            let holds = match mode {
                HoldMode::Shared => writers_before == 0,
                HoldMode::Permit => before < permits,
                _ => before == 0,
            };
            out.push((kv, holds));
            before += 1;
            if mode != HoldMode::Shared {
                writers_before += 1;
            }
        }
        out
    }

    /// The keys that hold.
    pub(super) fn holders(&self, permits: u32) -> Vec<KeyValue> {
        self.judged(permits)
            .into_iter()
            .filter(|(_, holds)| *holds)
            .map(|(kv, _)| kv.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Revision;

    fn kv(key: &str, create: i64, value: &str) -> mvccpb::KeyValue {
        mvccpb::KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: create,
            mod_revision: create,
            version: 1,
            ..Default::default()
        }
    }

    fn event(deleted: bool, kv: mvccpb::KeyValue) -> mvccpb::Event {
        let kind = if deleted {
            mvccpb::event::EventType::Delete
        } else {
            mvccpb::event::EventType::Put
        };
        mvccpb::Event {
            r#type: kind as i32,
            kv: Some(kv),
            prev_kv: None,
        }
    }

    fn keys(list: &[(&str, i64)]) -> KeysByRevision {
        let kvs = list
            .iter()
            .map(|(k, r)| KeyValue::from(kv(k, *r, "")))
            .collect();
        KeysByRevision::new("n/", kvs)
    }

    fn held(k: &KeysByRevision, permits: u32) -> Vec<String> {
        k.holders(permits).iter().map(KeyValue::key_str).collect()
    }

    #[test]
    fn the_first_key_is_the_oldest_live_one() {
        let mut keys = KeysByRevision::new("n/", vec![KeyValue::from(kv("n/b", 5, "b"))]);
        keys.apply(&event(false, kv("n/a", 3, "a")));
        assert_eq!(keys.first().unwrap().create_revision, Revision(3));
        // A put to an existing key keeps its place.
        keys.apply(&event(false, kv("n/a", 3, "a2")));
        assert_eq!(keys.first().unwrap().value, b"a2");
        keys.apply(&event(true, kv("n/a", 0, "")));
        assert_eq!(keys.first().unwrap().key, b"n/b");
        keys.apply(&event(true, kv("n/b", 0, "")));
        assert!(keys.first().is_none());
    }

    #[test]
    fn readers_before_the_first_writer_hold_together() {
        let k = keys(&[
            ("n/read/1", 3),
            ("n/read/2", 4),
            ("n/3", 5),
            ("n/read/4", 6),
        ]);
        assert_eq!(held(&k, 1), ["n/read/1", "n/read/2"]);
        let k = keys(&[("n/3", 2), ("n/read/1", 3)]);
        assert_eq!(held(&k, 1), ["n/3"]);
    }

    #[test]
    fn the_first_n_permits_hold() {
        let k = keys(&[("n/permit/1", 3), ("n/permit/2", 4), ("n/permit/3", 5)]);
        assert_eq!(held(&k, 2), ["n/permit/1", "n/permit/2"]);
        assert!(k.has_permits());
        assert_eq!(k.mode(k.first().unwrap()), HoldMode::Permit);
    }
}
