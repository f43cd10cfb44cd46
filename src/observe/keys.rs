//! The keys of one name as a watcher knows them, by create revision.

use std::collections::{BTreeMap, HashMap};

use crate::types::KeyValue;
use crate::wire::mvccpb;

/// The live keys under `{name}/`, ordered by create revision.
pub(super) struct KeysByRevision {
    by_rev: BTreeMap<i64, KeyValue>,
    by_key: HashMap<Vec<u8>, i64>,
}

impl KeysByRevision {
    pub(super) fn new(kvs: Vec<KeyValue>) -> KeysByRevision {
        let mut keys = KeysByRevision {
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

    /// The oldest live key: the holder, the leader.
    pub(super) fn first(&self) -> Option<&KeyValue> {
        self.by_rev.values().next()
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

    #[test]
    fn the_first_key_is_the_oldest_live_one() {
        let mut keys = KeysByRevision::new(vec![KeyValue::from(kv("n/b", 5, "b"))]);
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
}
