//! `dpu-offload`: the command line. Parses arguments, calls the library,
//! prints tables (or JSON) on stdout and errors on stderr, exit status 1 on
//! failure.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use plexus_dpu_offload::{
    dump::InstalledFlow,
    eswitch::{self, Ethtool, Features},
    flower::Policy,
    install::{self, Selector},
    parse,
};
use plexus_netlink::Netlink;
use plexus_sysfs::Sysfs;

#[derive(Parser, Debug)]
#[command(
    name = "dpu-offload",
    version,
    about = "OVS-style flows on tc-flower, with the truth about where they run"
)]
struct Cli {
    /// sysfs root for representor discovery.
    #[arg(long, global = true, default_value = "/sys")]
    sysfs_root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// flower where the kernel has it (part 2 adds the eBPF fallback).
    Auto,
    /// tc-flower only.
    Flower,
    /// Plexus's eBPF datapath.
    Ebpf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install a flow file, replacing every other Plexus flow.
    Apply {
        /// Flow file: one ovs-ofctl flow per line, `#` comments.
        #[arg(long)]
        flows: PathBuf,
        /// hw-only (skip_sw), prefer-hw (default) or sw-only (skip_hw).
        #[arg(long, default_value = "prefer-hw")]
        policy: Policy,
        /// Back end.
        #[arg(long, value_enum, default_value = "auto")]
        backend: Backend,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Parse a flow file and print the flows in canonical form (no kernel).
    Check {
        /// Flow file.
        #[arg(long)]
        flows: PathBuf,
    },
    /// Show installed Plexus flows: where they live and what they counted.
    DumpFlows {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete installed flows selected like `ovs-ofctl del-flows`.
    Del {
        /// Only flows on this port.
        #[arg(long)]
        in_port: Option<String>,
        /// Only flows in this table.
        #[arg(long)]
        table: Option<u32>,
        /// Only flows whose cookie matches: VALUE or VALUE/MASK.
        #[arg(long)]
        cookie: Option<String>,
    },
    /// Delete every Plexus flow.
    Flush,
    /// List switchdev eSwitches and their representors.
    Representors {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLEXUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dpu-offload: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn out(s: &str) {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = o.write_all(s.as_bytes());
}

fn number(s: &str) -> Result<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .with_context(|| format!("{s:?} is not a number"))
}

fn ports(nl: &mut Netlink, sysfs: &Sysfs) -> Result<plexus_dpu_offload::flower::PortMap> {
    struct NoProbe;
    impl Features for NoProbe {
        fn hw_tc_offload(&self, _: &str) -> Option<bool> {
            None
        }
    }
    let switches = eswitch::discover(sysfs, &NoProbe);
    Ok(install::host_ports(nl, &switches)?)
}

fn run(cli: Cli) -> Result<()> {
    let sysfs = Sysfs::new(&cli.sysfs_root);
    match cli.command {
        Command::Check { flows } => {
            let text = std::fs::read_to_string(&flows)
                .with_context(|| format!("reading {}", flows.display()))?;
            let parsed =
                parse::parse_flows(&text).map_err(|errs| flow_file_errors(&flows, &errs))?;
            let mut s = String::new();
            for f in &parsed {
                s.push_str(&format!("{f}\n"));
            }
            out(&s);
        }
        Command::Apply {
            flows,
            policy,
            backend,
            json,
        } => {
            if backend == Backend::Ebpf {
                bail!(
                    "the eBPF back end is not there yet (dpu-offload part 2); use --backend flower on a kernel with cls_flower"
                );
            }
            let text = std::fs::read_to_string(&flows)
                .with_context(|| format!("reading {}", flows.display()))?;
            let parsed =
                parse::parse_flows(&text).map_err(|errs| flow_file_errors(&flows, &errs))?;
            let mut nl = Netlink::new()?;
            let ports = ports(&mut nl, &sysfs)?;
            let report = install::apply(&mut nl, &parsed, &ports, policy)?;
            if json {
                out(&format!("{}\n", serde_json::to_string_pretty(&report)?));
            } else {
                let mut s = format!(
                    "{:<5} {:<12} {:>5} {:>5} {:<7} {:<6} {:>8} {:<6} FLOW\n",
                    "LINE", "PORT", "CHAIN", "PREF", "BACKEND", "WHERE", "IN_HW#", "CHANGE"
                );
                for p in &report.flows {
                    s.push_str(&format!(
                        "{:<5} {:<12} {:>5} {:>5} {:<7} {:<6} {:>8} {:<6} {}\n",
                        p.line,
                        p.port,
                        p.chain,
                        p.prio,
                        p.backend,
                        p.location.name(),
                        p.in_hw_count.map_or_else(|| "-".into(), |n| n.to_string()),
                        format!("{:?}", p.change).to_lowercase(),
                        p.flow
                    ));
                }
                s.push_str(&format!(
                    "{} flows, {} in hardware, {} removed\n",
                    report.flows.len(),
                    report
                        .flows
                        .iter()
                        .filter(|p| p.location.name() == "hw")
                        .count(),
                    report.removed
                ));
                out(&s);
            }
        }
        Command::DumpFlows { json } => {
            let mut nl = Netlink::new()?;
            let ports = ports(&mut nl, &sysfs)?;
            let flows = install::installed(&mut nl, &ports)?;
            out(&if json {
                dump_json(&flows)?
            } else {
                dump_table(&flows)
            });
        }
        Command::Del {
            in_port,
            table,
            cookie,
        } => {
            let mut nl = Netlink::new()?;
            let ports = ports(&mut nl, &sysfs)?;
            let in_port = match in_port {
                Some(p) => Some(
                    ports
                        .ifindex(&p)
                        .with_context(|| format!("no such port {p}"))?,
                ),
                None => None,
            };
            let cookie = match cookie {
                Some(c) => Some(match c.split_once('/') {
                    Some((v, m)) => (number(v)?, number(m)?),
                    None => (number(&c)?, u64::MAX),
                }),
                None => None,
            };
            let n = install::delete_selected(
                &mut nl,
                &ports,
                &Selector {
                    in_port,
                    table,
                    cookie,
                },
            )?;
            out(&format!("deleted {n} flows\n"));
        }
        Command::Flush => {
            let mut nl = Netlink::new()?;
            let ports = ports(&mut nl, &sysfs)?;
            let n = install::delete_selected(&mut nl, &ports, &Selector::default())?;
            out(&format!("deleted {n} flows\n"));
        }
        Command::Representors { json } => {
            let switches = eswitch::discover(&sysfs, &Ethtool);
            if json {
                out(&format!("{}\n", serde_json::to_string_pretty(&switches)?));
            } else if switches.is_empty() {
                out(&format!(
                    "no switchdev eSwitch under {} (no netdev has a phys_switch_id)\n",
                    cli.sysfs_root.display()
                ));
            } else {
                let mut s = String::new();
                for sw in &switches {
                    s.push_str(&format!("eswitch {}\n", sw.switch_id));
                    s.push_str(&format!(
                        "  {:<16} {:<12} {:<18} {:<14} {}\n",
                        "NETDEV", "PORT", "ALIASES", "PCI", "HW-TC-OFFLOAD"
                    ));
                    for r in &sw.ports {
                        s.push_str(&format!(
                            "  {:<16} {:<12} {:<18} {:<14} {}\n",
                            r.netdev,
                            r.phys_port_name,
                            r.aliases.join(","),
                            r.pci.as_deref().unwrap_or("-"),
                            match r.hw_tc_offload {
                                Some(true) => "on",
                                Some(false) => "off",
                                None => "unknown",
                            }
                        ));
                    }
                }
                out(&s);
            }
        }
    }
    Ok(())
}

fn flow_file_errors(path: &std::path::Path, errs: &[parse::ParseError]) -> anyhow::Error {
    let lines: Vec<String> = errs
        .iter()
        .map(|e| format!("{}:{}:{}: {}", path.display(), e.line, e.column, e.message))
        .collect();
    anyhow::anyhow!(
        "{} error(s) in the flow file:\n{}",
        errs.len(),
        lines.join("\n")
    )
}

fn age(s: Option<f64>) -> String {
    s.map_or_else(|| "-".into(), |s| format!("{s:.1}s"))
}

fn dump_table(flows: &[InstalledFlow]) -> String {
    let mut s = format!(
        "{:<12} {:>5} {:>5} {:<7} {:<6} {:>6} {:>10} {:>12} {:>8} {:>8} FLOW\n",
        "PORT", "CHAIN", "PREF", "BACKEND", "WHERE", "IN_HW#", "PACKETS", "BYTES", "AGE", "IDLE"
    );
    for f in flows {
        s.push_str(&format!(
            "{:<12} {:>5} {:>5} {:<7} {:<6} {:>6} {:>10} {:>12} {:>8} {:>8} {}{}\n",
            f.flow.in_port,
            f.chain,
            f.prio,
            "flower",
            f.location().name(),
            f.in_hw_count.map_or_else(|| "-".into(), |n| n.to_string()),
            f.counters.packets,
            f.counters.bytes,
            age(f.installed_secs),
            age(f.idle_secs),
            f.flow,
            if f.unknown.is_empty() {
                String::new()
            } else {
                format!("  (not understood: {})", f.unknown.join("; "))
            }
        ));
    }
    s
}

fn dump_json(flows: &[InstalledFlow]) -> Result<String> {
    let v: Vec<serde_json::Value> = flows
        .iter()
        .map(|f| {
            serde_json::json!({
                "flow": f.flow.to_string(),
                "port": f.flow.in_port,
                "table": f.chain,
                "priority": f.flow.priority,
                "cookie": format!("{:#x}", f.flow.cookie),
                "tc": {"chain": f.chain, "pref": f.prio, "handle": f.handle},
                "backend": "flower",
                "in_hw": f.in_hw(),
                "location": f.location(),
                "in_hw_count": f.in_hw_count,
                "packets": f.counters.packets,
                "bytes": f.counters.bytes,
                "hw_packets": f.counters.hw_packets,
                "hw_bytes": f.counters.hw_bytes,
                "age_secs": f.installed_secs,
                "idle_secs": f.idle_secs,
                "not_understood": f.unknown,
            })
        })
        .collect();
    Ok(format!("{}\n", serde_json::to_string_pretty(&v)?))
}
