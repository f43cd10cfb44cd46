//! Compiles `proto/` into client stubs.
//!
//! The `.proto` files are parsed by `protox` (pure Rust), so building locker
//! needs no `protoc` binary on the machine.

use std::io;

fn main() -> io::Result<()> {
    let files = ["proto/etcdserverpb/rpc.proto", "proto/mvccpb/kv.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"]).map_err(io::Error::other)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .build_transport(false)
        // The password and the token are secrets: src/wire.rs gives these two
        // messages a Debug that redacts them.
        .skip_debug([
            ".etcdserverpb.AuthenticateRequest",
            ".etcdserverpb.AuthenticateResponse",
        ])
        .compile_fds(fds)?;
    baseline()
}

/// With the `bench-baseline` feature only: etcd's server-side `Lock`
/// service, for `examples/bench.rs` to measure etcd's own lock as a
/// baseline. It goes to a directory of its own (`$OUT_DIR/baseline`), is
/// never included by `src/`, and so is not part of `locker::wire`.
fn baseline() -> io::Result<()> {
    let file = "proto/v3lockpb/v3lock.proto";
    println!("cargo:rerun-if-changed={file}");
    if std::env::var_os("CARGO_FEATURE_BENCH_BASELINE").is_none() {
        return Ok(());
    }
    let out = std::path::PathBuf::from(
        std::env::var_os("OUT_DIR").ok_or_else(|| io::Error::other("no OUT_DIR"))?,
    )
    .join("baseline");
    std::fs::create_dir_all(&out)?;
    let fds = protox::compile([file], ["proto"]).map_err(io::Error::other)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .build_transport(false)
        .out_dir(out)
        // The header is locker's own type.
        .extern_path(".etcdserverpb", "::locker::wire::etcdserverpb")
        .extern_path(".mvccpb", "::locker::wire::mvccpb")
        .compile_fds(fds)
}
