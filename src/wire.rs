//! The exact schema locker puts on the wire, generated from `proto/`.
//!
//! These are the request and response messages and the gRPC client stubs of
//! the etcd v3 API, in etcd's own packages (`etcdserverpb`, `mvccpb`), so the
//! gRPC paths are the real ones (`/etcdserverpb.KV/Txn`, ...). Only the
//! messages and fields locker sends or reads are present; the schema is
//! wire-identical to etcd 3.4 and later for those.
//!
//! This module is public on purpose, for auditors: every byte locker sends is
//! one of these messages. The rest of the public API uses locker's own types;
//! reach for this module to read the schema, or to build the [`Compare`] that
//! makes your own transactions conditional on holding a lock (see
//! `LockGuard::is_owner`).
//!
//! [`Compare`]: etcdserverpb::Compare

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// etcd's storage-layer messages: [`KeyValue`](mvccpb::KeyValue) and watch [`Event`](mvccpb::Event)s.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's gRPC services (`KV`, `Watch`, `Lease`, `Maintenance`, `Auth`) and their messages.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");

    impl std::fmt::Debug for AuthenticateRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AuthenticateRequest")
                .field("name", &self.name)
                .field("password", &"<redacted>")
                .finish()
        }
    }

    impl std::fmt::Debug for AuthenticateResponse {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AuthenticateResponse")
                .field("header", &self.header)
                .field("token", &"<redacted>")
                .finish()
        }
    }
}
