//! `sriov`: the SR-IOV CNI plugin (type `"sriov"`), a drop-in for
//! k8snetworkplumbingwg's sriov-cni. See `plexus_sriov_device_plugin::cni`.

use std::process::ExitCode;

use plexus_sriov_device_plugin::cni::plugin::Sriov;

fn main() -> ExitCode {
    // Logs go to stderr; stdout is the CNI result.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: `kubectl logs` and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLEXUS_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    plexus_cni::plugin::run(
        &Sriov,
        "sriov: gives a pod an SR-IOV VF (Plexus; a drop-in for sriov-cni)",
    )
}
