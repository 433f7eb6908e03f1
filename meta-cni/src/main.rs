//! The `plexus` binary: the CNI skeleton around [`plexus_meta_cni::Plexus`]
//! when a runtime runs it (no arguments), or the node installer as
//! `plexus install ...`. CNI logging is set up from the network config
//! (`logLevel`, `logFile`) once it is read; see [`plexus_meta_cni::logging`].

use std::process::ExitCode;

use clap::Parser as _;
use plexus_meta_cni::install::{InstallArgs, run};

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "install") {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            // Colour only on a terminal: `kubectl logs` and log files get plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("PLEXUS_LOG")
                    .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .init();
        let opts = InstallArgs::parse_from(std::env::args_os().skip(1));
        return match run(&opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "plexus install failed");
                ExitCode::FAILURE
            }
        };
    }
    plexus_cni::plugin::run(
        &plexus_meta_cni::Plexus,
        concat!(
            "plexus ",
            env!("CARGO_PKG_VERSION"),
            ": the Plexus delegating CNI plugin"
        ),
    )
}
