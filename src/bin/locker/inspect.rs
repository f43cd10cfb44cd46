//! `holder` and `watch`: the commands that only look at a lock.

use locker::{Client, LockEvent};

use crate::args::{HolderArgs, WatchArgs};
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
    let mut events = tokio::select! {
        r = client.watch_lock(&args.name) => match r {
            Ok(w) => w,
            Err(e) => return report(&e),
        },
        _ = signals.recv() => return code::OK,
    };
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(ev)) => {
                    if let Some(line) = event_line(&args.name, &ev, args.json) {
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
                Some(Err(e)) => return report(&e),
                None => {
                    say("the watch ended unexpectedly");
                    return code::FAILURE;
                }
            },
            _ = signals.recv() => return code::OK,
        }
    }
}
