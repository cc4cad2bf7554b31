//! Compiles the service's proto into a gRPC client with protox (no system `protoc`): the load
//! tool is a client of the API like any backend, so it builds its own stubs.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/boundary/realtime/v1/realtime.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../../proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
