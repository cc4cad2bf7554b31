//! Compiles `proto/boundary/realtime/v1/realtime.proto` into Rust with protox (a pure-Rust
//! protobuf compiler), so building needs no system `protoc`. It also writes the file
//! descriptor set that the gRPC reflection service serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/boundary/realtime/v1/realtime.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("realtime_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
