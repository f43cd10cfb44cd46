//! What locker prints: one-line messages on stderr, result lines on stdout,
//! and the text and JSON forms of a holder.

use std::io::Write as _;

use locker::{Holder, LostReason};

/// One line on stderr, prefixed `locker: `, written at once so that it does
/// not interleave with the command's output.
pub(crate) fn say(msg: &str) {
    let line = format!("locker: {}\n", msg.replace('\n', " "));
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// One line on stdout, flushed.
pub(crate) fn print_line(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) fn holder_text(h: &Holder) -> String {
    format!(
        "key={} value={:?} lease={} fencing_token={}",
        h.key,
        h.value_str(),
        h.lease,
        h.fencing_token
    )
}

/// The holder's fields as JSON object members (without braces); `ttl_left_secs`
/// only when `with_ttl`.
pub(crate) fn holder_json_fields(h: &Holder, with_ttl: bool) -> String {
    let mut s = format!(
        "\"key\":{},\"value\":{},\"lease\":{},\"fencing_token\":{}",
        json_str(&h.key),
        json_str(&h.value_str()),
        json_str(&h.lease.to_string()),
        h.fencing_token
    );
    if with_ttl {
        let ttl = h
            .ttl_left
            .map_or_else(|| "null".to_owned(), |t| t.as_secs().to_string());
        s.push_str(&format!(",\"ttl_left_secs\":{ttl}"));
    }
    s
}

/// `lock "NAME" is held by "VALUE" (key KEY, lease ID, fencing token N)`.
pub(crate) fn held_text(name: &str, holder: Holder) -> String {
    format!(
        "lock {name:?} is held by {:?} (key {}, lease {}, fencing token {})",
        holder.value_str(),
        holder.key,
        holder.lease,
        holder.fencing_token
    )
}

pub(crate) fn lost_text(reason: LostReason) -> &'static str {
    match reason {
        LostReason::Expired => "etcd says its lease no longer exists",
        LostReason::Unreachable => {
            "no keepalive was answered before the lease could expire (etcd unreachable?)"
        }
        LostReason::Closed => "its lease was closed",
        LostReason::KeyDeleted => "its key was deleted in etcd (by another client or an operator)",
        _ => "its lease can no longer be assumed alive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_text_names_the_lock_and_its_holder() {
        let holder = Holder {
            name: "jobs".to_owned(),
            key: "jobs/694d7a1b2c3d4e5f".to_owned(),
            value: b"host-a:42".to_vec(),
            lease: locker::LeaseId(0x694d_7a1b_2c3d_4e5f),
            fencing_token: locker::Revision(17),
            ttl_left: None,
        };
        assert_eq!(
            held_text("jobs", holder),
            "lock \"jobs\" is held by \"host-a:42\" (key jobs/694d7a1b2c3d4e5f, \
             lease 694d7a1b2c3d4e5f, fencing token 17)"
        );
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}é"), "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }
}
