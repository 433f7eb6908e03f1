//! `dpu-offload agent`: keeps the installed flows equal to a set of flow
//! tables, and writes back where each flow runs and what it counted.
//!
//! Owns the reconcile loop. The tables come from a [`Source`]: the
//! `*.flows` files of a directory ([`DirSource`], status in
//! `<status-dir>/<file>.json`) or the `FlowTable` custom resources
//! selecting this node ([`crate::flowtable::KubeSource`], status in the
//! resource's `status.nodes.<node>`). Their flows, tables in name order,
//! are applied together with the back-end choice and policy of the agent
//! (the installer keeps what is already there, so a cycle that changes
//! nothing touches nothing). A table that does not parse keeps its last
//! good version installed and says why in its status; a table that does
//! not compile (a port not there yet) leaves the installed flows as they
//! are and is retried; a source that cannot be read (the API server down)
//! changes nothing. Everything installed is found again from the kernel,
//! so an agent killed with `kill -9` and started again reconciles without
//! duplicates; on SIGTERM or SIGINT it removes what it installed (unless
//! told to keep it).

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use plexus_netlink::Netlink;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    backend::{self, Backend, Choice, FlowStatus},
    dump::Location,
    eswitch::Features,
    flow::Flow,
    flower::{Policy, PortMap},
    install::{self, Placement},
    parse,
};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// BPF pin directory of the eBPF datapath.
    pub bpf_dir: PathBuf,
    /// Back-end choice.
    pub choice: Choice,
    /// Flower policy.
    pub policy: Policy,
    /// What `prefer-hw` does about shadowed flows.
    pub shadowed: crate::install::Shadowed,
    /// Re-apply even without a change this often (someone may have
    /// deleted flows by hand).
    pub resync: Duration,
}

/// One flow's status line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowReport {
    /// Line in its table (1-based; for a `FlowTable`, entry `line - 1` of
    /// `spec.flows`).
    pub line: usize,
    /// Canonical form.
    pub flow: String,
    /// `flower` or `ebpf`; `None` when not installed.
    pub backend: Option<Backend>,
    /// `hw`, `tc-sw` or `ebpf`.
    pub location: Option<Location>,
    /// Whether the NIC holds it.
    pub in_hw: bool,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The status of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableStatus {
    /// The table's name (file name, or `FlowTable` name).
    pub table: String,
    /// Whether the table as it is now is installed.
    pub applied: bool,
    /// Why not (a parse error keeps the last good version installed).
    pub error: Option<String>,
    /// The flows installed for this table.
    pub flows: Vec<FlowReport>,
    /// When this status was taken, seconds since the epoch.
    pub updated: u64,
}

/// Where flow tables come from and where their status goes.
pub trait Source: std::fmt::Debug {
    /// Every table as it is now: name and text (the flow language, one
    /// flow per line). Names order the tables.
    ///
    /// # Errors
    /// The source cannot be read now; the agent then changes nothing.
    fn tables(&mut self) -> anyhow::Result<Vec<(String, String)>>;

    /// Where line `line` of table `table` is, for error messages.
    fn place(&self, table: &str, line: usize) -> String {
        format!("{table}:{line}")
    }

    /// Publishes the status of every current table; status published
    /// earlier for tables not in `status` goes.
    ///
    /// # Errors
    /// The status could not be written; it is tried again next cycle.
    fn publish(&mut self, status: &[TableStatus]) -> anyhow::Result<()>;

    /// Takes back every status this agent published (at shutdown).
    ///
    /// # Errors
    /// Some could not be removed.
    fn retract(&mut self) -> anyhow::Result<()>;
}

/// Tables from the `*.flows` files of a directory, status as
/// `<status_dir>/<file>.json`, written atomically.
#[derive(Debug, Clone)]
pub struct DirSource {
    /// The watched directory.
    pub dir: PathBuf,
    /// Where status files go.
    pub status_dir: PathBuf,
}

impl Source for DirSource {
    fn tables(&mut self) -> anyhow::Result<Vec<(String, String)>> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "flows") && p.is_file())
            .collect();
        entries.sort();
        let mut out = Vec::new();
        for path in entries {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match std::fs::read_to_string(&path) {
                Ok(text) => out.push((name, text)),
                // Being replaced: no change this cycle.
                Err(e) => anyhow::bail!("{}: {e}", path.display()),
            }
        }
        Ok(out)
    }

    fn publish(&mut self, status: &[TableStatus]) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.status_dir)?;
        for st in status {
            write_atomic(
                &self.status_dir.join(format!("{}.json", st.table)),
                &serde_json::to_vec_pretty(st)?,
            )?;
        }
        // Status of files that are gone goes too.
        for e in std::fs::read_dir(&self.status_dir)?.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(table) = n.strip_suffix(".json")
                && !status.iter().any(|s| s.table == table)
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    fn retract(&mut self) -> anyhow::Result<()> {
        if let Ok(rd) = std::fs::read_dir(&self.status_dir) {
            for e in rd.flatten() {
                if e.path().extension().is_some_and(|x| x == "json") {
                    std::fs::remove_file(e.path())?;
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Table {
    text: String,
    flows: Vec<Flow>,
}

/// The flows last applied (with their files) and where they went.
type Applied = (Vec<(String, Flow)>, Vec<Placement>);

/// The agent's memory between cycles.
#[derive(Debug)]
pub struct Agent {
    cfg: Config,
    source: Box<dyn Source + Send>,
    /// Last good version of each file.
    good: BTreeMap<String, Table>,
    /// Parse errors of the current version, by file.
    file_errors: BTreeMap<String, String>,
    /// What was applied last, and how it went.
    applied: Option<Applied>,
    apply_error: Option<String>,
    last_apply: Option<Instant>,
}

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cycle {
    /// An apply ran.
    pub applied: bool,
    /// Flows added by it.
    pub added: usize,
    /// Flows removed by it.
    pub removed: usize,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Agent {
    /// An agent that has done nothing yet.
    pub fn new(cfg: Config, source: Box<dyn Source + Send>) -> Self {
        Self {
            cfg,
            source,
            good: BTreeMap::new(),
            file_errors: BTreeMap::new(),
            applied: None,
            apply_error: None,
            last_apply: None,
        }
    }

    /// Reads the source: new last-good versions, parse errors, tables
    /// gone. A source that cannot be read changes nothing.
    fn read_source(&mut self) -> anyhow::Result<()> {
        let tables = self.source.tables()?;
        for (name, text) in &tables {
            if self.good.get(name).is_some_and(|t| t.text == *text) {
                self.file_errors.remove(name);
                continue;
            }
            match parse::parse_flows(text) {
                Ok(flows) => {
                    self.file_errors.remove(name);
                    self.good.insert(
                        name.clone(),
                        Table {
                            text: text.clone(),
                            flows,
                        },
                    );
                }
                Err(errs) => {
                    let msg = errs
                        .iter()
                        .map(|e| {
                            format!(
                                "{}:{}: {}",
                                self.source.place(name, e.line),
                                e.column,
                                e.message
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    tracing::warn!(table = %name, error = %msg, "flow table does not parse; keeping its last good version");
                    self.file_errors.insert(name.clone(), msg);
                }
            }
        }
        let seen = |n: &String| tables.iter().any(|(t, _)| t == n);
        self.good.retain(|n, _| seen(n));
        self.file_errors.retain(|n, _| seen(n));
        Ok(())
    }

    fn desired(&self) -> Vec<(String, Flow)> {
        self.good
            .iter()
            .flat_map(|(n, t)| t.flows.iter().map(move |f| (n.clone(), f.clone())))
            .collect()
    }

    /// One reconcile: read the source, apply when something changed (or
    /// the resync time is up), publish the status.
    ///
    /// # Errors
    /// The source cannot be read, or status cannot be published. Apply
    /// failures are not errors of the cycle: they go into the status and
    /// are retried.
    pub fn cycle(
        &mut self,
        nl: &mut Netlink,
        ports: &PortMap,
        features: &dyn Features,
    ) -> anyhow::Result<Cycle> {
        self.read_source()?;
        let desired = self.desired();
        let changed = self
            .applied
            .as_ref()
            .is_none_or(|(flows, _)| *flows != desired);
        let due = self
            .last_apply
            .is_none_or(|t| t.elapsed() >= self.cfg.resync);
        let mut out = Cycle::default();
        if changed || due || self.apply_error.is_some() {
            let flows: Vec<Flow> = desired.iter().map(|(_, f)| f.clone()).collect();
            match backend::apply(
                nl,
                &flows,
                ports,
                backend::How {
                    choice: self.cfg.choice,
                    policy: self.cfg.policy,
                    shadowed: self.cfg.shadowed,
                },
                features,
                &self.cfg.bpf_dir,
            ) {
                Ok(r) => {
                    out.applied = true;
                    out.added = r
                        .flows
                        .iter()
                        .filter(|p| p.change == install::Change::Added)
                        .count();
                    out.removed = r.removed;
                    if out.added + out.removed > 0 {
                        tracing::info!(
                            flows = r.flows.len(),
                            added = out.added,
                            removed = out.removed,
                            "flow tables applied"
                        );
                    }
                    self.applied = Some((desired, r.flows));
                    self.apply_error = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "apply failed; the installed flows stay as they were");
                    self.apply_error = Some(e.to_string());
                }
            }
            self.last_apply = Some(Instant::now());
        }
        self.write_status(nl, ports)?;
        Ok(out)
    }

    fn write_status(&mut self, nl: &mut Netlink, ports: &PortMap) -> anyhow::Result<()> {
        let (installed, _) = backend::installed(nl, ports, &self.cfg.bpf_dir)?;
        // Installed flows by where they are: eBPF slot, or flower filter.
        let mut by_slot: HashMap<u32, &FlowStatus> = HashMap::new();
        let mut by_filter: HashMap<(Option<u32>, u32, u16, u32), &FlowStatus> = HashMap::new();
        for f in &installed {
            if let Some(s) = f.slot {
                by_slot.insert(s, f);
            }
            if let Some((c, p, h)) = f.tc {
                by_filter.insert((ports.ifindex(&f.flow.in_port), c, p, h), f);
            }
        }
        let mut reports: BTreeMap<&str, Vec<FlowReport>> = BTreeMap::new();
        if let Some((flows, placed)) = &self.applied {
            for ((file, flow), p) in flows.iter().zip(placed) {
                let found = match (p.slot, p.prio, p.handle) {
                    (Some(s), ..) => by_slot.get(&s),
                    (None, Some(pref), Some(h)) => {
                        by_filter.get(&(ports.ifindex(&flow.in_port), p.chain, pref, h))
                    }
                    _ => None,
                };
                reports.entry(file).or_default().push(FlowReport {
                    line: flow.line,
                    flow: flow.to_string(),
                    backend: found.map(|f| f.backend),
                    location: found.map(|f| f.location),
                    in_hw: found.is_some_and(|f| f.in_hw()),
                    packets: found.map_or(0, |f| f.counters.packets),
                    bytes: found.map_or(0, |f| f.counters.bytes),
                });
            }
        }
        let mut names: Vec<&String> = self.good.keys().chain(self.file_errors.keys()).collect();
        names.sort();
        names.dedup();
        let status: Vec<TableStatus> = names
            .into_iter()
            .map(|name| {
                let error = self
                    .file_errors
                    .get(name)
                    .cloned()
                    .or_else(|| self.apply_error.clone());
                TableStatus {
                    table: name.clone(),
                    applied: error.is_none() && self.applied.is_some(),
                    error,
                    flows: reports.remove(name.as_str()).unwrap_or_default(),
                    updated: now_secs(),
                }
            })
            .collect();
        self.source.publish(&status)
    }

    /// Removes everything installed (both back ends) and takes back the
    /// published status.
    ///
    /// # Errors
    /// The flush failed (status is then left to say what is installed).
    pub fn shutdown(&mut self, nl: &mut Netlink, ports: &PortMap) -> anyhow::Result<usize> {
        let n = backend::flush(nl, ports, &self.cfg.bpf_dir)?;
        if let Err(e) = self.source.retract() {
            tracing::warn!(error = %format!("{e:#}"), "could not take back the status");
        }
        Ok(n)
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(tmp, path)
}

/// Blocks SIGTERM and SIGINT in this thread (and the threads it starts) so
/// [`wait_for_signal`] can take them.
pub fn block_signals() {
    // SAFETY: sigset manipulation on a local set; pthread_sigmask on the
    // calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Sleeps up to `d`; true when SIGTERM or SIGINT arrived.
pub fn wait_for_signal(d: Duration) -> bool {
    // SAFETY: as in block_signals; sigtimedwait reads the set and timeout.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let ts = libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
        };
        libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) > 0
    }
}
