//! `sriov-device-plugin`: the SR-IOV device plugin's command line. Without
//! a subcommand it runs the daemon; `discover` explains the pools.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use plexus_sriov_device_plugin::server::{Daemon, Options};
use plexus_sriov_device_plugin::{config, host, pools};
use plexus_sysfs::Sysfs;

/// Every host path is a flag, with the production default (the first two
/// are upstream's names and defaults).
#[derive(Parser)]
#[command(
    version,
    about = "SR-IOV device plugin for the kubelet (a drop-in for k8snetworkplumbingwg's)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The pools (upstream's JSON format).
    #[arg(long, global = true, default_value = "/etc/pcidp/config.json")]
    config_file: PathBuf,
    /// The prefix of pools without `resourcePrefix`.
    #[arg(long, global = true, default_value = config::DEFAULT_RESOURCE_PREFIX)]
    resource_prefix: String,
    /// Where sysfs is.
    #[arg(long, global = true, default_value = plexus_sysfs::SYSFS_ROOT)]
    sysfs_root: PathBuf,
    /// The kubelet's device-plugin directory (its `kubelet.sock`).
    #[arg(long, default_value = "/var/lib/kubelet/device-plugins")]
    device_plugin_dir: PathBuf,
    /// The kubelet's plugin-watcher directory; used when it exists.
    #[arg(long, default_value = "/var/lib/kubelet/plugins_registry")]
    plugins_registry_dir: PathBuf,
    /// Where device-info files for CNIs go.
    #[arg(long, default_value = "/var/run/k8s.cni.cncf.io/devinfo/dp")]
    devinfo_dir: PathBuf,
    /// Where device nodes are: `rdma_cm`, `vhost-net` and `tun` are given
    /// to containers only when they exist here.
    #[arg(long, default_value = "/dev")]
    dev_root: PathBuf,
    /// Health check (and config re-read) interval, in milliseconds.
    #[arg(long, default_value_t = 500)]
    health_interval_ms: u64,
    /// Device rescan interval, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    rescan_interval_ms: u64,
    /// Upstream's glog verbosity (its DaemonSet passes 10): 0-3 log at
    /// info, 4 and up at debug. `PLEXUS_LOG` or `RUST_LOG` win when set.
    #[arg(long, value_name = "N")]
    log_level: Option<u32>,
    /// Upstream's glog directory, accepted so that upstream's DaemonSet
    /// arguments work; logs go to stderr (the container's log).
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Upstream's CDI mode. Not supported yet: refused, rather than serving
    /// Allocate responses other than the ones the cluster was set up for.
    #[arg(long)]
    use_cdi: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Print every PCI network device, the pool it went to, and for each
    /// device in no pool, the rule of each pool that rejected it.
    Discover {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn discover(config_file: &Path, prefix: &str, sysfs_root: &Path, json: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config_file)
        .with_context(|| format!("reading {}", config_file.display()))?;
    let cfg = config::parse(&text, prefix);
    let routes = host::default_route_netdevs().unwrap_or_else(|e| {
        eprintln!("warning: cannot read the host's routes ({e}); no device is excluded for one");
        Default::default()
    });
    let sysfs = Sysfs::new(sysfs_root);
    let mut scan = sysfs.scan()?;
    host::mark_rdma_in_netns(&sysfs, &mut scan.devices);
    let (_, report) = pools::build(&cfg, &scan, &routes);
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "configErrors": cfg.errors,
            "configUnusable": cfg.unusable,
            "unknownKeys": cfg.unknown_keys,
            "devices": report.devices,
            "emptyPools": report.empty_pools,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        for e in &cfg.errors {
            writeln!(out, "config: {e}")?;
        }
        for k in &cfg.unknown_keys {
            writeln!(out, "config: unknown key ignored: {k}")?;
        }
        write!(out, "{report}")?;
    }
    Ok(())
}

fn serve(cli: Cli) -> anyhow::Result<()> {
    let level = match cli.log_level {
        Some(n) if n >= 4 => "debug",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour only on a terminal: `kubectl logs` and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLEXUS_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .init();
    if cli.use_cdi {
        anyhow::bail!(
            "--use-cdi: CDI mode is not supported yet; run without it (Allocate answers with \
             environment variables, DeviceSpecs and device-info files, as upstream does \
             without CDI)"
        );
    }
    if let Some(dir) = &cli.log_dir {
        tracing::info!(dir = %dir.display(), "--log-dir is accepted for upstream's arguments; logs go to stderr");
    }
    let opts = Options {
        config_file: cli.config_file,
        resource_prefix: cli.resource_prefix,
        sysfs_root: cli.sysfs_root,
        device_plugin_dir: cli.device_plugin_dir,
        plugins_registry_dir: cli.plugins_registry_dir,
        devinfo_dir: cli.devinfo_dir,
        dev_root: cli.dev_root,
        health_interval: Duration::from_millis(cli.health_interval_ms.max(10)),
        rescan_interval: Duration::from_millis(cli.rescan_interval_ms.max(10)),
    };
    // Two worker threads: gRPC streams and the daemon loop; nothing here
    // needs more.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(Daemon::new(opts).run())?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Some(Command::Discover { json }) => discover(
            &cli.config_file,
            &cli.resource_prefix,
            &cli.sysfs_root,
            json,
        ),
        None => serve(cli),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sriov-device-plugin: {e:#}");
            ExitCode::FAILURE
        }
    }
}
