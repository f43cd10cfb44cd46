//! Checks `proto/` against etcd's own `.proto` sources: every message,
//! field, enum value and RPC that locker keeps must have etcd's number and
//! type. etcd's sources come from Debian's `golang-etcd-server-dev` (or the
//! directory in `ETCD_PROTO_DIR`); in CI their absence is a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `(scope, name)` -> `kind number-or-signature`, for fields, enum values and rpcs.
type Schema = BTreeMap<(String, String), String>;

fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A small reader for the proto3 subset both schemas use.
fn parse(src: &str, package: &str) -> Schema {
    let text = strip_comments(src);
    // Break `{`, `}` and `;` into their own tokens, keep options' brackets out.
    let mut tokens: Vec<String> = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        match ch {
            '{' | '}' | ';' => {
                if !cur.trim().is_empty() {
                    tokens.push(cur.trim().to_owned());
                }
                cur.clear();
                tokens.push(ch.to_string());
            }
            _ => cur.push(ch),
        }
    }
    let mut out = Schema::new();
    let mut scope: Vec<String> = vec![package.to_owned()];
    // Every `{` opens a scope: named after the message, enum, service or
    // oneof just declared, or anonymous (an rpc's or an option's body).
    let mut pending: Option<String> = None;
    for tok in tokens {
        match tok.as_str() {
            "{" => {
                scope.push(pending.take().unwrap_or_else(|| "_".to_owned()));
                continue;
            }
            ";" => continue,
            "}" => {
                scope.pop();
                continue;
            }
            _ => pending = None,
        }
        let words: Vec<&str> = tok.split_whitespace().collect();
        match words.as_slice() {
            ["message" | "enum" | "service" | "oneof", name, ..] => {
                pending = Some((*name).to_owned());
            }
            ["rpc", ..] => {
                // rpc Name(Req) returns (Resp) [{ options }]
                let sig: String = tok.split_whitespace().collect::<Vec<_>>().join(" ");
                let name = sig[4..].split('(').next().unwrap_or("").trim().to_owned();
                let sig = sig
                    .split(" returns ")
                    .map(|p| p.trim().to_owned())
                    .collect::<Vec<_>>()
                    .join(" returns ");
                let sig = sig.replace("stream ", "stream:");
                let args: Vec<String> = sig
                    .split('(')
                    .skip(1)
                    .map(|p| {
                        p.split(')')
                            .next()
                            .unwrap_or("")
                            .rsplit('.')
                            .next()
                            .unwrap_or("")
                            .to_owned()
                    })
                    .collect();
                out.insert(
                    (scope.join("."), name),
                    format!("rpc {}", args.join(" -> ")),
                );
            }
            ["option", ..] | ["syntax", ..] | ["package", ..] | ["import", ..] => {}
            _ if tok.contains('=') => {
                let (lhs, rhs) = tok.split_once('=').unwrap();
                let rhs = rhs.split('[').next().unwrap().trim().to_owned();
                let lhs: Vec<&str> = lhs.split_whitespace().collect();
                let (ty, name) = match lhs.as_slice() {
                    [name] => ("enum-value".to_owned(), *name),
                    [ty, name] => ((*ty).to_owned(), *name),
                    [label, ty, name] => (format!("{label} {ty}"), *name),
                    _ => continue,
                };
                // Type names compare by their last segment (imports differ).
                let ty = ty.rsplit('.').next().unwrap().to_owned();
                out.insert((scope.join("."), name.to_owned()), format!("{ty} = {rhs}"));
            }
            _ => {}
        }
    }
    out
}

fn etcd_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ETCD_PROTO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/gocode/src/go.etcd.io/etcd"));
    dir.join("etcdserver/etcdserverpb/rpc.proto")
        .exists()
        .then_some(dir)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn compare(ours: &Schema, theirs: &Schema, what: &str) {
    assert!(!ours.is_empty(), "parsed nothing from our {what}");
    let mut wrong = Vec::new();
    for (k, v) in ours {
        match theirs.get(k) {
            Some(t) if t == v => {}
            Some(t) => wrong.push(format!("{}.{}: ours `{v}`, etcd `{t}`", k.0, k.1)),
            None => wrong.push(format!("{}.{}: not in etcd's schema", k.0, k.1)),
        }
    }
    assert!(
        wrong.is_empty(),
        "{what} differs from etcd:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn our_schema_matches_etcds_field_numbers_and_types() {
    let Some(dir) = etcd_dir() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd's .proto sources are missing: apt-get install golang-etcd-server-dev"
        );
        eprintln!("skipped: etcd's .proto sources are not installed (golang-etcd-server-dev)");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let ours_rpc = parse(&read(&root.join("etcdserverpb/rpc.proto")), "etcdserverpb");
    let etcd_rpc = parse(
        &read(&dir.join("etcdserver/etcdserverpb/rpc.proto")),
        "etcdserverpb",
    );
    compare(&ours_rpc, &etcd_rpc, "etcdserverpb");
    let ours_kv = parse(&read(&root.join("mvccpb/kv.proto")), "mvccpb");
    let etcd_kv = parse(&read(&dir.join("mvcc/mvccpb/kv.proto")), "mvccpb");
    compare(&ours_kv, &etcd_kv, "mvccpb");
    // The comparison must have covered what matters.
    for key in [
        ("etcdserverpb.Compare", "range_end"),
        ("etcdserverpb.WatchResponse", "events"),
        ("etcdserverpb.Lease", "LeaseKeepAlive"),
        ("mvccpb.KeyValue", "lease"),
    ] {
        assert!(
            ours_rpc.contains_key(&(key.0.to_owned(), key.1.to_owned()))
                || ours_kv.contains_key(&(key.0.to_owned(), key.1.to_owned())),
            "{key:?} was not parsed"
        );
    }
}

#[test]
fn the_reader_sees_a_changed_field_number() {
    let a = parse("message M { int64 x = 1; }", "p");
    let b = parse("message M { int64 x = 2; }", "p");
    assert_ne!(a, b);
    assert_eq!(a[&("p.M".to_owned(), "x".to_owned())], "int64 = 1");
}
