//! Names and the key layout.
//!
//! A name's queue is every key under `{name}/`; a contender's key is
//! `{name}/{lease id in lowercase hex}`, the layout of etcd's Go
//! `concurrency.Mutex` and `Election`, `etcdctl lock`/`elect` and the
//! server-side `Lock` and `Election` RPCs, so locker and those tools see
//! each other's keys.

use crate::error::{Error, Result};
use crate::types::LeaseId;

/// Longest lock name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 4096;

/// Largest holder value accepted, in bytes. etcd refuses requests over
/// 1.5 MiB by default, and the acquire transaction carries the value twice
/// (in its fast path and in its queueing branch).
pub const MAX_VALUE_LEN: usize = 512 * 1024;

/// The words that name a shape of key under a name (`{name}/read/{lease}`,
/// `{name}/permit/{lease}`): no name may end with one as its last
/// `/`-separated segment, or `lock("a/read")` and `read_lock("a")` would
/// both use the key `a/read/{lease}` on one lease.
pub const RESERVED_LAST_SEGMENTS: [&str; 2] = ["read", "permit"];

/// Checks a lock name as every operation does before sending anything:
/// not empty, at most [`MAX_NAME_LEN`] bytes, no control characters, and a
/// last `/`-separated segment that is not one of
/// [`RESERVED_LAST_SEGMENTS`].
///
/// # Errors
/// [`Error::InvalidArgument`] saying which rule the name breaks.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("lock name must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "lock name is {} bytes; at most {MAX_NAME_LEN} are allowed",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "lock name must not contain control characters",
        ));
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    if RESERVED_LAST_SEGMENTS.contains(&last) {
        return Err(Error::invalid(format!(
            "lock name {name:?} ends in /{last}, a word locker's read locks and semaphores use in their keys; choose another last segment"
        )));
    }
    Ok(())
}

/// Most permits a semaphore may have: a waiter watches up to this many
/// keys (the holders ahead of it).
pub const MAX_PERMITS: u32 = 1024;

/// Checks a semaphore's number of permits.
pub(crate) fn validate_permits(permits: u32) -> Result<()> {
    match permits {
        0 => Err(Error::invalid("a semaphore needs at least one permit")),
        n if n > MAX_PERMITS => Err(Error::invalid(format!(
            "a semaphore of {n} permits; at most {MAX_PERMITS} are allowed"
        ))),
        _ => Ok(()),
    }
}

/// Checks a holder value's size.
pub(crate) fn validate_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::invalid(format!(
            "lock value is {} bytes; at most {MAX_VALUE_LEN} are allowed",
            value.len()
        )));
    }
    Ok(())
}

/// The default value stored in a holder's key: `host:pid`, read from
/// `/proc/sys/kernel/hostname` (or `$HOSTNAME`) once per process, so others
/// can see who holds a lock.
pub fn default_value() -> Vec<u8> {
    static VALUE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    VALUE
        .get_or_init(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unknown-host".to_owned());
            format!("{host}:{}", std::process::id()).into_bytes()
        })
        .clone()
}

/// The key of a contender on `lease`: `{name}/{lease hex}`.
pub(crate) fn key(name: &str, lease: LeaseId) -> String {
    format!("{name}/{lease}")
}

/// The range of a name's queue: every key under `{name}/`.
pub(crate) fn prefix(name: &str) -> String {
    format!("{name}/")
}

/// The key that holds a semaphore's limit, `{name}.permits`: outside the
/// queue's range, so that it is nobody's place in the queue.
pub(crate) fn limit_key(prefix: &str) -> String {
    format!("{}.permits", prefix.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_etcds_mutex_layout() {
        assert_eq!(
            key("jobs/a", LeaseId(0x694d7c1e2f3a)),
            "jobs/a/694d7c1e2f3a"
        );
        assert_eq!(prefix("jobs/a"), "jobs/a/");
    }

    #[test]
    fn names_are_checked_before_anything_is_sent() {
        assert!(validate_name("a").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name(&"x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(validate_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        for shape_word in ["read", "a/read", "a/permit", "permit", "x/y/read"] {
            assert!(validate_name(shape_word).is_err(), "{shape_word} accepted");
        }
        for fine in ["a/reader", "a/read/b", "reads", "a/permits", "a/read/"] {
            assert!(validate_name(fine).is_ok(), "{fine} refused");
        }
        assert!(validate_value(&vec![0; MAX_VALUE_LEN]).is_ok());
        assert!(validate_value(&vec![0; MAX_VALUE_LEN + 1]).is_err());
    }
}
