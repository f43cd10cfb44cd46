//! With the `tracing` feature, every wire record is also a tracing event
//! (target `locker::wire`), carrying the same fields as the audit record.
#![cfg(all(feature = "testing", feature = "tracing"))]

use std::sync::{Arc, Mutex};

use locker::testing::Etcd;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A minimal subscriber that keeps the `path` field of `locker::wire` events.
#[derive(Clone, Default)]
struct Paths(Arc<Mutex<Vec<String>>>);

struct PathVisitor(Option<String>);

impl Visit for PathVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "path" {
            self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "path" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl Subscriber for Paths {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.target() == "locker::wire"
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut v = PathVisitor(None);
        e.record(&mut v);
        if let Some(p) = v.0 {
            self.0.lock().unwrap().push(p);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[tokio::test(flavor = "current_thread")]
async fn wire_records_are_emitted_as_tracing_events() {
    let etcd = Etcd::single().await.unwrap();
    let paths = Paths::default();
    let _guard = tracing::subscriber::set_default(paths.clone());
    let client = locker::Client::builder()
        .endpoints(etcd.endpoints())
        .connect()
        .await
        .unwrap();
    let s = client
        .session(std::time::Duration::from_secs(10))
        .await
        .unwrap();
    s.lock("traced").await.unwrap().release().await.unwrap();
    s.close().await.unwrap();
    let got = paths.0.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            "/etcdserverpb.Maintenance/Status",
            "/etcdserverpb.Lease/LeaseGrant",
            "/etcdserverpb.KV/Txn",
            "/etcdserverpb.KV/Txn",
            "/etcdserverpb.Lease/LeaseRevoke",
        ]
    );
}
