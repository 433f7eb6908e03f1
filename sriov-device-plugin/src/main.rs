//! `sriov-device-plugin`: the SR-IOV device plugin's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use plexus_sriov_device_plugin::{config, host, pools};
use plexus_sysfs::Sysfs;

#[derive(Parser)]
#[command(
    version,
    about = "SR-IOV device plugin for the kubelet (a drop-in for k8snetworkplumbingwg's)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every PCI network device, the pool it went to, and for each
    /// device in no pool, the rule of each pool that rejected it.
    Discover {
        /// The pools (upstream's JSON format).
        #[arg(long, default_value = "/etc/pcidp/config.json")]
        config_file: PathBuf,
        /// The prefix for pools without `resourcePrefix`.
        #[arg(long, default_value = config::DEFAULT_RESOURCE_PREFIX)]
        resource_prefix: String,
        /// Where sysfs is.
        #[arg(long, default_value = plexus_sysfs::SYSFS_ROOT)]
        sysfs_root: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn discover(
    config_file: &std::path::Path,
    prefix: &str,
    sysfs_root: PathBuf,
    json: bool,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config_file)
        .with_context(|| format!("reading {}", config_file.display()))?;
    let cfg = config::parse(&text, prefix);
    let routes = host::default_route_netdevs().unwrap_or_else(|e| {
        eprintln!("warning: cannot read the host's routes ({e}); no device is excluded for one");
        Default::default()
    });
    let scan = Sysfs::new(sysfs_root).scan()?;
    let (_, report) = pools::build(&cfg, &scan, &routes);
    let mut out = std::io::stdout().lock();
    use std::io::Write as _;
    if json {
        let v = serde_json::json!({
            "configErrors": cfg.errors,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Discover {
            config_file,
            resource_prefix,
            sysfs_root,
            json,
        } => discover(&config_file, &resource_prefix, sysfs_root, json),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sriov-device-plugin: {e:#}");
            ExitCode::FAILURE
        }
    }
}
