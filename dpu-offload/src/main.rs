//! `dpu-offload`: the command line. Parses arguments, calls the library,
//! prints tables (or JSON) on stdout and errors on stderr, exit status 1 on
//! failure.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use plexus_dpu_offload::{
    agent,
    backend::{self, Choice, FlowStatus},
    datapath::{self, DatapathStats},
    eswitch::{self, Ethtool, Features},
    flower::Policy,
    flowtable,
    install::{self, Selector, Shadowed},
    parse,
};
use plexus_netlink::Netlink;
use plexus_sysfs::Sysfs;

#[derive(Parser, Debug)]
#[command(
    name = "dpu-offload",
    version,
    about = "OVS-style flows on tc-flower or Plexus's eBPF datapath, with the truth about where they run"
)]
struct Cli {
    /// sysfs root for representor discovery.
    #[arg(long, global = true, default_value = "/sys")]
    sysfs_root: PathBuf,
    /// Where the eBPF datapath pins its maps (a directory on a BPF
    /// filesystem).
    #[arg(long, global = true, default_value = datapath::DEFAULT_BPF_DIR)]
    bpf_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// flower on ports whose device offloads tc, the eBPF datapath on the
    /// others (and everywhere when the kernel has no flower).
    Auto,
    /// tc-flower only.
    Flower,
    /// Plexus's eBPF datapath only.
    Ebpf,
}

impl From<Backend> for Choice {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Auto => Choice::Auto,
            Backend::Flower => Choice::Flower,
            Backend::Ebpf => Choice::Ebpf,
        }
    }
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
        /// prefer-hw: a flow the NIC refused would lose its packets to an
        /// overlapping lower flow the NIC holds: keep those out of hardware
        /// (demote) or refuse the table (refuse).
        #[arg(long, default_value = "demote")]
        shadowed: Shadowed,
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
    /// Keep the installed flows equal to a set of flow tables (the
    /// `*.flows` files of a directory, or the `FlowTable` resources
    /// selecting this node) and report per-flow status back.
    Agent {
        /// The directory of flow tables (`*.flows`, one table per file).
        #[arg(long, required_unless_present = "kube", conflicts_with = "kube")]
        dir: Option<PathBuf>,
        /// Where status goes with `--dir` (`<file>.json` per table);
        /// default `<dir>/status`.
        #[arg(long, conflicts_with = "kube")]
        status_dir: Option<PathBuf>,
        /// Take the tables from the `FlowTable` custom resources that
        /// select this node, and write status into theirs.
        #[arg(long)]
        kube: bool,
        /// The kubeconfig for `--kube`; default the in-cluster service
        /// account.
        #[arg(long, requires = "kube")]
        kubeconfig: Option<PathBuf>,
        /// This node's name for `--kube` (the downward API's
        /// `spec.nodeName`).
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
        /// With `--kube`: list the tables at most this often.
        #[arg(long, default_value_t = 5000)]
        list_interval_ms: u64,
        /// With `--kube`: publish a status whose only change is counters
        /// at most this often.
        #[arg(long, default_value_t = 10)]
        counters_secs: u64,
        /// How often to look at the directory and refresh status.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Re-apply this often even when nothing changed (flows removed by
        /// hand come back).
        #[arg(long, default_value_t = 30)]
        resync_secs: u64,
        /// hw-only (skip_sw), prefer-hw (default) or sw-only (skip_hw).
        #[arg(long, default_value = "prefer-hw")]
        policy: Policy,
        /// Back end.
        #[arg(long, value_enum, default_value = "auto")]
        backend: Backend,
        /// What prefer-hw does about a flow the NIC would shadow: demote
        /// or refuse (see `apply --help`).
        #[arg(long, default_value = "demote")]
        shadowed: Shadowed,
        /// Delete every Plexus flow (as `flush` does) and withdraw this
        /// node's status when stopped (SIGTERM/SIGINT). Without it the
        /// flows stay installed, so that a restart (a DaemonSet rollout)
        /// is not an outage: the next agent takes them over from the
        /// kernel.
        #[arg(long)]
        flush_on_exit: bool,
        /// Accepted for older manifests: keeping the flows is the default.
        #[arg(long, hide = true, conflicts_with = "flush_on_exit")]
        keep_on_exit: bool,
        /// One reconcile, then exit (flows stay).
        #[arg(long)]
        once: bool,
    },
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
        // Colour only on a terminal: `kubectl logs` and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLEXUS_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
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
            shadowed,
            json,
        } => {
            let text = std::fs::read_to_string(&flows)
                .with_context(|| format!("reading {}", flows.display()))?;
            let parsed =
                parse::parse_flows(&text).map_err(|errs| flow_file_errors(&flows, &errs))?;
            let mut nl = Netlink::new()?;
            let ports = ports(&mut nl, &sysfs)?;
            let report = backend::apply(
                &mut nl,
                &parsed,
                &ports,
                backend::How {
                    choice: backend.into(),
                    policy,
                    shadowed,
                },
                &Ethtool,
                &cli.bpf_dir,
            )?;
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
                        p.prio.map_or_else(|| "-".into(), |p| p.to_string()),
                        p.backend,
                        p.location.name(),
                        p.in_hw_count.map_or_else(|| "-".into(), |n| n.to_string()),
                        format!("{:?}", p.change).to_lowercase(),
                        p.flow
                    ));
                }
                for p in report.flows.iter().filter(|p| p.demoted) {
                    s.push_str(&format!(
                        "line {}: kept out of hardware (sw-only): a higher flow it overlaps is in software only, and the NIC would take its packets first\n",
                        p.line
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
            let (flows, stats) = backend::installed(&mut nl, &ports, &cli.bpf_dir)?;
            out(&if json {
                dump_json(&flows, stats)?
            } else {
                dump_table(&flows, stats)
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
            let n = backend::delete_selected(
                &mut nl,
                &ports,
                &Selector {
                    in_port,
                    table,
                    cookie,
                },
                &cli.bpf_dir,
            )?;
            out(&format!("deleted {n} flows\n"));
        }
        Command::Flush => {
            let mut nl = Netlink::new()?;
            let ports = ports(&mut nl, &sysfs)?;
            let n = backend::flush(&mut nl, &ports, &cli.bpf_dir)?;
            out(&format!("deleted {n} flows\n"));
        }
        Command::Agent {
            dir,
            status_dir,
            kube,
            kubeconfig,
            node_name,
            list_interval_ms,
            counters_secs,
            interval_ms,
            resync_secs,
            policy,
            backend,
            shadowed,
            flush_on_exit,
            keep_on_exit: _,
            once,
        } => {
            let source: Box<dyn agent::Source + Send> = match (dir, kube) {
                (Some(dir), false) => {
                    if !dir.is_dir() {
                        bail!("{}: not a directory", dir.display());
                    }
                    Box::new(agent::DirSource {
                        status_dir: status_dir.unwrap_or_else(|| dir.join("status")),
                        dir,
                    })
                }
                (None, true) => {
                    let Some(node) = node_name.filter(|n| !n.is_empty()) else {
                        bail!("--kube needs --node-name (or NODE_NAME)");
                    };
                    let (rt, client) = flowtable::client(kubeconfig.as_deref())?;
                    Box::new(flowtable::KubeSource::new(
                        rt,
                        client,
                        node,
                        flowtable::Intervals {
                            list: std::time::Duration::from_millis(list_interval_ms),
                            counters: std::time::Duration::from_secs(counters_secs),
                        },
                    ))
                }
                _ => bail!("give either --dir or --kube"),
            };
            agent::block_signals();
            let mut a = agent::Agent::new(
                agent::Config {
                    bpf_dir: cli.bpf_dir.clone(),
                    choice: backend.into(),
                    policy,
                    shadowed,
                    resync: std::time::Duration::from_secs(resync_secs),
                },
                source,
            );
            let mut nl = Netlink::new()?;
            loop {
                // Ports come and go (a VF's representor appears with its
                // pod): look again every cycle.
                match ports(&mut nl, &sysfs) {
                    Ok(p) => {
                        if let Err(e) = a.cycle(&mut nl, &p, &Ethtool) {
                            tracing::warn!(error = %format!("{e:#}"), "reconcile failed; retrying");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "listing ports failed; retrying");
                    }
                }
                if once {
                    break;
                }
                if agent::wait_for_signal(std::time::Duration::from_millis(interval_ms)) {
                    if flush_on_exit {
                        let p = ports(&mut nl, &sysfs)?;
                        let n = a.shutdown(&mut nl, &p)?;
                        tracing::info!(flows = n, "stopped; removed the flows");
                    } else {
                        tracing::info!("stopped; the flows stay for the next agent");
                    }
                    break;
                }
            }
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

fn dump_table(flows: &[FlowStatus], stats: Option<DatapathStats>) -> String {
    let dash = || "-".to_string();
    let mut s = format!(
        "{:<12} {:>5} {:>5} {:<7} {:<6} {:>6} {:>10} {:>12} {:>8} {:>8} FLOW\n",
        "PORT", "TABLE", "PREF", "BACKEND", "WHERE", "IN_HW#", "PACKETS", "BYTES", "AGE", "IDLE"
    );
    for f in flows {
        s.push_str(&format!(
            "{:<12} {:>5} {:>5} {:<7} {:<6} {:>6} {:>10} {:>12} {:>8} {:>8} {}{}\n",
            f.flow.in_port,
            f.flow.table,
            f.tc.map_or_else(dash, |t| t.1.to_string()),
            match f.backend {
                backend::Backend::Flower => "flower",
                backend::Backend::Ebpf => "ebpf",
            },
            if f.shadowed_by.is_some() {
                "shadow"
            } else {
                f.location.name()
            },
            f.in_hw_count.map_or_else(dash, |n| n.to_string()),
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
    for f in flows {
        if let Some(by) = &f.shadowed_by {
            s.push_str(&format!(
                "shadow: {} is in software only, and the NIC gives its packets to {} first\n",
                f.flow, by
            ));
        }
    }
    if let Some(st) = stats {
        s.push_str(&format!(
            "ebpf datapath: {} packets ({} bytes) matched no flow, {} failed actions (a failed mirror loses only its copy), {} lookups missed the microflow cache\n",
            st.miss.packets, st.miss.bytes, st.error.packets, st.cache_misses
        ));
    }
    s
}

fn dump_json(flows: &[FlowStatus], stats: Option<DatapathStats>) -> Result<String> {
    let v: Vec<serde_json::Value> = flows
        .iter()
        .map(|f| {
            serde_json::json!({
                "flow": f.flow.to_string(),
                "port": f.flow.in_port,
                "table": f.flow.table,
                "priority": f.flow.priority,
                "cookie": format!("{:#x}", f.flow.cookie),
                "tc": f.tc.map(|(chain, pref, handle)| serde_json::json!({"chain": chain, "pref": pref, "handle": handle})),
                "slot": f.slot,
                "backend": f.backend,
                "in_hw": f.in_hw(),
                "location": f.location,
                "in_hw_count": f.in_hw_count,
                "packets": f.counters.packets,
                "bytes": f.counters.bytes,
                "hw_packets": f.counters.hw_packets,
                "hw_bytes": f.counters.hw_bytes,
                "age_secs": f.installed_secs,
                "idle_secs": f.idle_secs,
                "not_understood": f.unknown,
                "shadowed_by": f.shadowed_by,
            })
        })
        .collect();
    // `ebpf` is null when the datapath is not loaded.
    let doc = serde_json::json!({"flows": v, "ebpf": stats});
    Ok(format!("{}\n", serde_json::to_string_pretty(&doc)?))
}
