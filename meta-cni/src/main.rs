//! The `plexus` binary: the CNI skeleton around [`plexus_meta_cni::Plexus`].
//! Logging is set up from the network config (`logLevel`, `logFile`) once
//! it is read; see [`plexus_meta_cni::logging`].

use std::process::ExitCode;

fn main() -> ExitCode {
    plexus_cni::plugin::run(
        &plexus_meta_cni::Plexus,
        concat!(
            "plexus ",
            env!("CARGO_PKG_VERSION"),
            ": the Plexus delegating CNI plugin"
        ),
    )
}
