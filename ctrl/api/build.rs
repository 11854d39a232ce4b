//! Compiles `proto/popmesh/ctrl/v1/ctrl.proto` with protox (a protobuf compiler in Rust, so no
//! system `protoc` is needed) and generates prost messages and tonic clients and servers. The
//! encoded descriptor set is written next to them for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/popmesh/ctrl/v1/ctrl.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("ctrl_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
