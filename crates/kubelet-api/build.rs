//! Generates the kubelet and CRI bindings from `proto/` (client and server,
//! so tests can stand in for the kubelet with the real protocol).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: build scripts are single-threaded; nothing reads the
    // environment concurrently.
    unsafe {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(
            &[
                "proto/podresources/v1/api.proto",
                "proto/deviceplugin/v1beta1/api.proto",
                "proto/pluginregistration/v1/api.proto",
                "proto/runtime/v1/api.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
