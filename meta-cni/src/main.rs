//! The `plexus` binary: the CNI skeleton around [`plexus_meta_cni::Plexus`].

use std::process::ExitCode;

fn main() -> ExitCode {
    // Logs go to stderr, never stdout (stdout is the CNI result).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLEXUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    plexus_cni::plugin::run(
        &plexus_meta_cni::Plexus,
        concat!(
            "plexus ",
            env!("CARGO_PKG_VERSION"),
            ": the Plexus delegating CNI plugin"
        ),
    )
}
