//! `holder`, `watch` and `elect --listen`: the commands that only look.

use std::collections::BTreeMap;
use std::time::Duration;

use locker::{Client, Contender, ElectionEvent, HoldMode, Holders, LockEvent, LockSet};
use tokio_stream::{Stream, StreamExt as _};

use crate::args::{ElectArgs, HolderArgs, WatchArgs};
use crate::output::{holder_json_fields, holder_text, json_str, print_line, say};
use crate::signals::Signals;
use crate::{code, report, signal_code};

pub(crate) async fn holder(client: &Client, signals: &mut Signals, args: HolderArgs) -> u8 {
    let r = tokio::select! {
        r = read_holders(client, &args.name) => r,
        sig = signals.recv() => return signal_code(sig),
    };
    let (q, ttls) = match r {
        Ok(found) => found,
        Err(e) => return report(&e),
    };
    let sets = tokio::select! {
        sets = read_sets(client, &q, args.queue) => sets,
        sig = signals.recv() => return signal_code(sig),
    };
    let exit = if q.holders.is_empty() {
        code::FREE
    } else {
        code::OK
    };
    let lines = if args.json {
        vec![holders_json(&q, &ttls, &sets, args.queue)]
    } else {
        holders_text(&q, &ttls, &sets, args.queue)
    };
    for line in lines {
        if let Err(e) = print_line(&line) {
            say(&format!("cannot write to stdout: {e}"));
            return code::FAILURE;
        }
    }
    exit
}

/// Everyone in the queue, and the time left on each holder's lease.
async fn read_holders(
    client: &Client,
    name: &str,
) -> locker::Result<(Holders, Vec<Option<Duration>>)> {
    let q = client.holders(name).await?;
    let mut ttls = Vec::with_capacity(q.holders.len());
    for h in &q.holders {
        ttls.push(client.lease_time_to_live(h.holder.lease).await?);
    }
    Ok((q, ttls))
}

/// The set of each exclusive holder (and waiter, with `queue`) that holds
/// or waits as part of a set of several names, by key. A set that cannot
/// be read (no permission on every key of its lease) is left out.
async fn read_sets(client: &Client, q: &Holders, queue: bool) -> BTreeMap<String, LockSet> {
    let waiters = q.waiters.iter().filter(|_| queue);
    let mut sets = BTreeMap::new();
    for c in q.holders.iter().chain(waiters) {
        if c.mode != HoldMode::Exclusive {
            continue;
        }
        if let Ok(Ok(set)) = tokio::time::timeout(SET_READ, client.lock_set(&c.holder)).await {
            if set.names.len() > 1 {
                sets.insert(c.holder.key.clone(), set);
            }
        }
    }
    sets
}

/// How long the read of one holder's set may take.
const SET_READ: Duration = Duration::from_secs(2);

/// ` set=A,B,C` (and ` waiting_on=B` for a waiter) for a contender in a set.
fn set_text(c: &Contender, sets: &BTreeMap<String, LockSet>, waiting: bool) -> String {
    let Some(set) = sets.get(&c.holder.key) else {
        return String::new();
    };
    let mut text = format!(" set={}", set.names.join(","));
    if waiting {
        text.push_str(&format!(" waiting_on={}", set.waiting_on.join(",")));
    }
    text
}

/// `,"set":[...],"waiting_on":[...]` for a contender in a set.
fn set_json(c: &Contender, sets: &BTreeMap<String, LockSet>) -> String {
    let Some(set) = sets.get(&c.holder.key) else {
        return String::new();
    };
    let list = |v: &[String]| v.iter().map(|n| json_str(n)).collect::<Vec<_>>().join(",");
    format!(
        ",\"set\":[{}],\"waiting_on\":[{}]",
        list(&set.names),
        list(&set.waiting_on)
    )
}

fn mode_name(mode: HoldMode) -> &'static str {
    match mode {
        HoldMode::Shared => "shared",
        HoldMode::Permit => "permit",
        _ => "exclusive",
    }
}

fn holders_text(
    q: &Holders,
    ttls: &[Option<Duration>],
    sets: &BTreeMap<String, LockSet>,
    queue: bool,
) -> Vec<String> {
    let mode = |c: &Contender| match c.mode {
        HoldMode::Exclusive => String::new(),
        m => format!(" mode={}", mode_name(m)),
    };
    let held = q.holders.iter().zip(ttls).map(|(c, ttl)| {
        let ttl = ttl.map_or_else(|| "unknown".to_owned(), |t| format!("{}s", t.as_secs()));
        format!(
            "held {} ttl_left={ttl}{}{}",
            holder_text(&c.holder),
            mode(c),
            set_text(c, sets, false)
        )
    });
    let waiting = q.waiters.iter().filter(|_| queue).map(|c| {
        format!(
            "waiting {}{}{}",
            holder_text(&c.holder),
            mode(c),
            set_text(c, sets, true)
        )
    });
    let free = q.holders.is_empty().then(|| "free".to_owned());
    free.into_iter().chain(held).chain(waiting).collect()
}

fn holders_json(
    q: &Holders,
    ttls: &[Option<Duration>],
    sets: &BTreeMap<String, LockSet>,
    queue: bool,
) -> String {
    let name = json_str(&q.name);
    let entry = |c: &Contender| {
        format!(
            "{{\"mode\":\"{}\",{}{}}}",
            mode_name(c.mode),
            holder_json_fields(&c.holder, false),
            set_json(c, sets)
        )
    };
    let list = |cs: &[Contender]| cs.iter().map(entry).collect::<Vec<_>>().join(",");
    let waiters = if queue {
        format!(",\"waiters\":[{}]", list(&q.waiters))
    } else {
        String::new()
    };
    let Some(first) = q.holders.first() else {
        return format!("{{\"held\":false,\"name\":{name},\"holders\":[]{waiters}}}");
    };
    let mut h = first.holder.clone();
    h.ttl_left = ttls.first().copied().flatten();
    format!(
        "{{\"held\":true,\"name\":{name},{},\"holders\":[{}]{waiters}}}",
        holder_json_fields(&h, true),
        list(&q.holders)
    )
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
