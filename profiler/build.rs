//! Generates the pprof types (`perftools.profiles`) from the vendored `proto/profile.proto`.
//! protox compiles the .proto in Rust and hands prost-build its descriptors, so building needs no
//! `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/profile.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
