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
        .compile_fds(fds)
}
