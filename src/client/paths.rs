//! gRPC paths of every RPC locker can send, as they appear in audit records.

/// `KV.Range`
pub const RANGE: &str = "/etcdserverpb.KV/Range";
/// `KV.Put`
pub const PUT: &str = "/etcdserverpb.KV/Put";
/// `KV.DeleteRange`
pub const DELETE_RANGE: &str = "/etcdserverpb.KV/DeleteRange";
/// `KV.Txn`
pub const TXN: &str = "/etcdserverpb.KV/Txn";
/// `Lease.LeaseGrant`
pub const LEASE_GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
/// `Lease.LeaseRevoke`
pub const LEASE_REVOKE: &str = "/etcdserverpb.Lease/LeaseRevoke";
/// `Lease.LeaseKeepAlive` (a bidirectional stream)
pub const LEASE_KEEPALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";
/// `Lease.LeaseTimeToLive`
pub const LEASE_TTL: &str = "/etcdserverpb.Lease/LeaseTimeToLive";
/// `Watch.Watch` (a bidirectional stream)
pub const WATCH: &str = "/etcdserverpb.Watch/Watch";
/// `Maintenance.Status`
pub const STATUS: &str = "/etcdserverpb.Maintenance/Status";
/// `Auth.Authenticate`
pub const AUTHENTICATE: &str = "/etcdserverpb.Auth/Authenticate";
