//! The `plexus` binary: the CNI skeleton around [`plexus_meta_cni::Plexus`]
//! when a runtime runs it (no arguments), or thick mode's shim when its
//! config names a daemon socket, or the node installer as
//! `plexus install ...`, or thick mode's node daemon as `plexus daemon`. CNI logging is set up from the network config
//! (`logLevel`, `logFile`) once it is read; see [`plexus_meta_cni::logging`].

use std::process::ExitCode;

use std::io::Read as _;

use clap::Parser as _;
use plexus_meta_cni::install::{InstallArgs, run};
use plexus_meta_cni::thick;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "install") {
        init_stderr_logging();
        let opts = InstallArgs::parse_from(std::env::args_os().skip(1));
        return match run(&opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "plexus install failed");
                ExitCode::FAILURE
            }
        };
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "daemon") {
        return daemon();
    }
    cni()
}

/// The CNI plugin, or (a config with `daemonSocketDir`) the shim that hands
/// the request to `plexus daemon`.
fn cni() -> ExitCode {
    let about = concat!(
        "plexus ",
        env!("CARGO_PKG_VERSION"),
        ": the Plexus delegating CNI plugin"
    );
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let mut stdin = Vec::new();
    // skel reads no stdin for VERSION (nor without a command).
    if !command.is_empty() && command != "VERSION" {
        let _ = std::io::stdin().lock().read_to_end(&mut stdin);
    }
    let socket = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .as_ref()
        .and_then(thick::shim_socket);
    let outcome = match socket {
        Some(s) => thick::forward(&s, &stdin),
        None => plexus_cni::plugin::dispatch(
            &plexus_meta_cni::Plexus,
            &|k| std::env::var(k).ok(),
            &mut stdin.as_slice(),
            about,
        ),
    };
    outcome.emit()
}

/// `plexus daemon`: thick mode's node daemon.
#[derive(clap::Parser, Debug)]
#[command(
    name = "plexus daemon",
    about = "Plexus thick mode: the node daemon the plexus shim forwards CNI requests to"
)]
struct DaemonArgs {
    /// The daemon's config (Multus's `daemon-config.json` keys are
    /// accepted): `socketDir`, and keys that override every request's
    /// network config (`kubeconfig`, `cniDir`, `confDir`, ...).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Where `plexus.sock` goes (overrides the config's `socketDir`).
    #[arg(long)]
    socket_dir: Option<std::path::PathBuf>,
    /// Serve `/metrics`, `/healthz` and `/readyz` over TCP here
    /// (`host:port`; overrides the config's `metricsAddress`).
    #[arg(long)]
    metrics_address: Option<String>,
    /// This node's name: the daemon caches the pods bound to it (the
    /// DaemonSet passes `spec.nodeName` through the downward API).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
}

fn daemon() -> ExitCode {
    init_stderr_logging();
    let args = DaemonArgs::parse_from(std::env::args_os().skip(1));
    let value = match &args.config {
        Some(p) => match std::fs::read(p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(config = %p.display(), error = e, "cannot read the daemon config");
                return ExitCode::FAILURE;
            }
        },
        None => serde_json::json!({}),
    };
    let cfg = match thick::DaemonConfig::from_value(&value, args.socket_dir.as_deref()) {
        Ok(mut c) => {
            if args.metrics_address.is_some() {
                c.metrics_address = args.metrics_address;
            }
            c.node_name = args
                .node_name
                .or_else(|| std::env::var("MULTUS_NODE_NAME").ok())
                .filter(|n| !n.is_empty());
            c
        }
        Err(e) => {
            tracing::error!(error = e, "bad daemon config");
            return ExitCode::FAILURE;
        }
    };
    match thick::serve(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "plexus daemon failed");
            ExitCode::FAILURE
        }
    }
}

fn init_stderr_logging() {
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
}
