//! locker's own small types: ids, revisions, keys and holders.

use std::fmt;
use std::time::Duration;

use crate::wire::mvccpb;

/// An etcd lease id. Displays as lowercase hex, the form used in lock keys
/// (`{name}/{lease hex}`) and by `etcdctl`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// An etcd store revision. A lock key's create revision is its place in the
/// queue and its fencing token: it only grows across holders of one name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Revision(pub i64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A key as stored in etcd.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct KeyValue {
    /// The key's bytes.
    pub key: Vec<u8>,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// Revision at which the key was created.
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    /// Writes since creation.
    pub version: i64,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

impl KeyValue {
    /// The key as text (lossy for non-UTF-8 bytes).
    pub fn key_str(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }
}

impl From<mvccpb::KeyValue> for KeyValue {
    fn from(kv: mvccpb::KeyValue) -> Self {
        KeyValue {
            key: kv.key,
            value: kv.value,
            create_revision: Revision(kv.create_revision),
            mod_revision: Revision(kv.mod_revision),
            version: kv.version,
            lease: (kv.lease != 0).then_some(LeaseId(kv.lease)),
        }
    }
}

/// Who holds a lock: the key at the head of the name's queue.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Holder {
    /// The lock name.
    pub name: String,
    /// The holder's key, `{name}/{lease hex}`.
    pub key: String,
    /// The value the holder stored (by default `host:pid`).
    pub value: Vec<u8>,
    /// The holder's lease.
    pub lease: LeaseId,
    /// The holder's fencing token (the key's create revision).
    pub fencing_token: Revision,
    /// Time left on the holder's lease when it was read, if known.
    pub ttl_left: Option<Duration>,
}

impl Holder {
    /// The value as text (lossy for non-UTF-8 bytes).
    pub fn value_str(&self) -> String {
        String::from_utf8_lossy(&self.value).into_owned()
    }

    pub(crate) fn from_kv(name: &str, kv: KeyValue) -> Holder {
        Holder {
            name: name.to_owned(),
            key: kv.key_str(),
            lease: kv.lease.unwrap_or(LeaseId(0)),
            fencing_token: kv.create_revision,
            value: kv.value,
            ttl_left: None,
        }
    }
}

/// How a key of a name's queue holds, or waits to hold, told from the key
/// alone.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum HoldMode {
    /// A mutex holder, a writer, an election candidate, or an `etcdctl
    /// lock`/`elect` key: `{name}/{lease hex}` (or any other key under
    /// `{name}/`).
    Exclusive,
    /// A reader of a read-write lock: `{name}/read/{lease hex}`.
    Shared,
    /// A semaphore holder: `{name}/permit/{lease hex}`.
    Permit,
}

/// One key of a name's queue: how it holds, and whose it is.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Contender {
    /// How it holds or waits.
    pub mode: HoldMode,
    /// Its key, value, lease and fencing token (`ttl_left` is not read).
    pub holder: Holder,
}

/// Everyone in a name's queue: who holds, who waits, in arrival order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Holders {
    /// The name.
    pub name: String,
    /// The keys that hold, oldest first.
    pub holders: Vec<Contender>,
    /// The keys that wait, in the order they will be served.
    pub waiters: Vec<Contender>,
    /// A semaphore's agreed number of permits, when the name has one.
    pub permits: Option<u32>,
    /// The revision the answer holds at.
    pub revision: Revision,
}

/// Escapes bytes for display: printable ASCII as is, everything else as `\xNN`.
pub(crate) fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}
