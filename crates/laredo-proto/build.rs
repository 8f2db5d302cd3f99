//! Compiles `proto/` with protox (a pure-Rust protobuf compiler: no `protoc` on any
//! machine) and generates prost messages plus tonic clients and servers.
//!
//! Outputs in `OUT_DIR`: one `<package>.rs` per protobuf package, included by
//! `src/lib.rs`, and `laredo_descriptor.bin`, the encoded `FileDescriptorSet` (with
//! imports and comments) that servers register for gRPC reflection.

use std::path::PathBuf;

/// The files to compile, relative to the proto root. Their imports (`types.proto`,
/// the well-known types that protox ships) are found through it.
const PROTO_FILES: &[&str] = &[
    "laredo/v1/oam.proto",
    "laredo/v1/query.proto",
    "laredo/replication/v1/replication.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    // A directory: cargo reruns the script when any file below it changes.
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTO_FILES)?;

    // For reflection: every file including the well-known types it imports, so that a
    // reflection client can resolve every type without files of its own.
    std::fs::write(
        out_dir.join("laredo_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Transport helpers (`Client::connect`) would need tonic's `transport` feature
        // here; downstream crates build a `Channel` and call `Client::new` instead.
        .build_transport(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
