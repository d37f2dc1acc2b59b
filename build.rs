//! Generates the protobuf messages (gRPC's, and Triton's model configuration) from the published proto files in `proto/` with prost, compiled
//! by protox (pure Rust: no protoc to install). Byte fields become `bytes::Bytes`, so tensor
//! contents are views of the received message, not copies.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/grpc_service.proto",
        "proto/health.proto",
        "proto/tfs/serving.proto",
    ];
    for file in files
        .iter()
        .chain(&["proto/model_config.proto", "proto/tfs/tensorflow.proto"])
    {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    // The descriptors themselves, for protobuf's text format and JSON mapping at run time.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("descriptors.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
