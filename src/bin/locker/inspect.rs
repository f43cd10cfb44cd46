//! `holder`, `watch` and `elect --listen`: the commands that only look.

use locker::{Client, ElectionEvent, LockEvent};
use tokio_stream::{Stream, StreamExt as _};

use crate::args::{ElectArgs, HolderArgs, WatchArgs};
use crate::output::{holder_json_fields, holder_text, json_str, print_line, say};
use crate::signals::Signals;
use crate::{code, report, signal_code};

pub(crate) async fn holder(client: &Client, signals: &mut Signals, args: HolderArgs) -> u8 {
    let r = tokio::select! {
        r = client.holder(&args.name) => r,
        sig = signals.recv() => return signal_code(sig),
    };
    let name = json_str(&args.name);
    let (line, exit) = match r {
        Err(e) => return report(&e),
        Ok(None) if args.json => (format!("{{\"held\":false,\"name\":{name}}}"), code::FREE),
        Ok(None) => ("free".to_owned(), code::FREE),
        Ok(Some(h)) if args.json => (
            format!(
                "{{\"held\":true,\"name\":{name},{}}}",
                holder_json_fields(&h, true)
            ),
            code::OK,
        ),
        Ok(Some(h)) => {
            let ttl = h
                .ttl_left
                .map_or_else(|| "unknown".to_owned(), |t| format!("{}s", t.as_secs()));
            (format!("held {} ttl_left={ttl}", holder_text(&h)), code::OK)
        }
    };
    if let Err(e) = print_line(&line) {
        say(&format!("cannot write to stdout: {e}"));
        return code::FAILURE;
    }
    exit
}

fn event_line(name: &str, ev: &LockEvent, json: bool) -> Option<String> {
    let (kind, holder, revision) = match ev {
        LockEvent::Snapshot { holder, revision } => ("snapshot", holder.as_ref(), revision),
        LockEvent::Acquired { holder, revision } => ("acquired", Some(holder), revision),
        LockEvent::Released { holder, revision } => ("released", Some(holder), revision),
        _ => return None,
    };
    Some(if json {
        // The watch does not read lease times: no ttl_left_secs field.
        let holder = holder.map_or_else(
            || "null".to_owned(),
            |h| format!("{{{}}}", holder_json_fields(h, false)),
        );
        format!(
            "{{\"event\":\"{kind}\",\"name\":{},\"revision\":{revision},\"holder\":{holder}}}",
            json_str(name)
        )
    } else {
        match (kind, holder) {
            ("snapshot", None) => format!("snapshot revision={revision} free"),
            ("snapshot", Some(h)) => {
                format!("snapshot revision={revision} held {}", holder_text(h))
            }
            (_, Some(h)) => format!("{kind} revision={revision} {}", holder_text(h)),
            (_, None) => format!("{kind} revision={revision}"),
        }
    })
}

pub(crate) async fn watch(client: &Client, signals: &mut Signals, args: WatchArgs) -> u8 {
    let events = tokio::select! {
        r = client.watch_lock(&args.name) => match r {
            Ok(w) => w,
            Err(e) => return report(&e),
        },
        _ = signals.recv() => return code::OK,
    };
    print_events(events, signals, |ev| event_line(&args.name, ev, args.json)).await
}

/// `elect --listen`: one line per election event, until a signal.
pub(crate) async fn listen(client: &Client, signals: &mut Signals, args: ElectArgs) -> u8 {
    let events = tokio::select! {
        r = client.observe(&args.name) => match r {
            Ok(w) => w,
            Err(e) => return report(&e),
        },
        _ = signals.recv() => return code::OK,
    };
    print_events(events, signals, |ev| {
        election_line(&args.name, ev, args.json)
    })
    .await
}

/// Prints a line per event until a signal (exit 0), a final error, or a
/// reader that went away.
async fn print_events<S, E>(
    mut events: S,
    signals: &mut Signals,
    line: impl Fn(&E) -> Option<String>,
) -> u8
where
    S: Stream<Item = locker::Result<E>> + Unpin,
{
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = signals.recv() => return code::OK,
        };
        let ev = match ev {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => return report(&e),
            None => {
                say("the watch ended unexpectedly");
                return code::FAILURE;
            }
        };
        let Some(line) = line(&ev) else { continue };
        if let Err(e) = print_line(&line) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                // Nobody reads any more.
                return code::OK;
            }
            say(&format!("cannot write to stdout: {e}"));
            return code::FAILURE;
        }
    }
}

fn election_line(name: &str, ev: &ElectionEvent, json: bool) -> Option<String> {
    let (kind, leader, revision) = match ev {
        ElectionEvent::Leader {
            key,
            value,
            lease,
            token,
            revision,
        } => ("leader", Some((key, value, Some(lease), token)), revision),
        ElectionEvent::Proclaimed {
            key,
            value,
            token,
            revision,
        } => ("proclaimed", Some((key, value, None, token)), revision),
        ElectionEvent::NoLeader { revision } => ("no-leader", None, revision),
        ElectionEvent::Resynced { revision } => ("resynced", None, revision),
        _ => return None,
    };
    let value = |v: &Vec<u8>| String::from_utf8_lossy(v).into_owned();
    Some(if json {
        let leader = leader.map_or_else(
            || "null".to_owned(),
            |(key, v, lease, token)| {
                let lease = lease.map_or_else(String::new, |l| {
                    format!(",\"lease\":{}", json_str(&l.to_string()))
                });
                format!(
                    "{{\"key\":{},\"value\":{}{lease},\"fencing_token\":{token}}}",
                    json_str(key),
                    json_str(&value(v))
                )
            },
        );
        format!(
            "{{\"event\":\"{kind}\",\"name\":{},\"revision\":{revision},\"leader\":{leader}}}",
            json_str(name)
        )
    } else {
        match leader {
            None => format!("{kind} revision={revision}"),
            Some((key, v, lease, token)) => {
                let lease = lease.map_or_else(String::new, |l| format!(" lease={l}"));
                format!(
                    "{kind} revision={revision} key={key} value={:?}{lease} fencing_token={token}",
                    value(v)
                )
            }
        }
    })
}
