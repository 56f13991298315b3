// Generates Rust code for ../../proto/*.proto with a vendored protoc, so the
// build needs no system protobuf compiler.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    // Read at run time: a cached build script must not keep another checkout's path.
    let dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "cortex.proto",
        "prompb.proto",
        "ring.proto",
        "httpgrpc.proto",
        "frontend.proto",
    ]
    .map(|f| dir.join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    tonic_prost_build::configure()
        // Label names/values and chunk data are decoded as slices of the
        // request buffer (reference-counted), not copied per field.
        .bytes(".cortex")
        .bytes(".prometheus.Chunk")
        .compile_protos(&files, &[dir])?;
    Ok(())
}
