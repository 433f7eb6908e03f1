//! One front end, two back ends: picks flower or the eBPF datapath per
//! port, applies each part of a table with its back end, and reads both
//! back as one list.
//!
//! Owns the choice (`--backend auto`: flower on ports whose device offloads
//! tc, `hw-tc-offload: on`, unless the policy is `sw-only`; the eBPF
//! datapath everywhere else, and everywhere when the kernel turns out to
//! have no flower), and the order that keeps a port covered while it moves
//! between back ends (see [`apply`]): new flower filters, then the eBPF
//! table, then the flower filters left on ports that moved.

use std::{collections::HashMap, path::Path, str::FromStr};

use plexus_netlink::Netlink;
use serde::Serialize;

use crate::{
    datapath::{self, Datapath, DatapathError, DatapathStats, Maps},
    dump::{Counters, Location},
    ebpf,
    eswitch::Features,
    flow::Flow,
    flower::{CompileError, Policy, PortMap},
    install::{self, ApplyReport, InstallError, Placement, Selector, Shadowed},
};

/// Which back end(s) `apply` may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice {
    /// Flower where the port's device offloads tc, eBPF elsewhere.
    #[default]
    Auto,
    /// tc-flower only.
    Flower,
    /// The eBPF datapath only.
    Ebpf,
}

impl FromStr for Choice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "flower" => Ok(Self::Flower),
            "ebpf" => Ok(Self::Ebpf),
            other => Err(format!("{other:?}: expected auto, flower or ebpf")),
        }
    }
}

/// The back end of one port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// tc-flower (hardware and/or software tc).
    Flower,
    /// Plexus's eBPF classifier.
    Ebpf,
}

/// What can go wrong applying a table.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The table does not compile for the back end its port got; nothing
    /// was touched.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Compile(Vec<CompileError>),
    /// The choice cannot satisfy the policy; nothing was touched.
    #[error("{0}")]
    Policy(String),
    /// The flower part.
    #[error(transparent)]
    Flower(#[from] InstallError),
    /// The eBPF part.
    #[error(transparent)]
    Ebpf(#[from] DatapathError),
    /// Dumps.
    #[error(transparent)]
    Netlink(#[from] plexus_netlink::Error),
}

/// How a table is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct How {
    /// Which back end(s).
    pub choice: Choice,
    /// The flower policy.
    pub policy: Policy,
    /// What `prefer-hw` does about shadowed flows.
    pub shadowed: Shadowed,
}

/// Picks the back end of every port a flow enters on.
///
/// # Errors
/// `hw-only` with a port that cannot offload, or with `--backend ebpf`.
pub fn choose(
    flows: &[Flow],
    ports: &PortMap,
    choice: Choice,
    policy: Policy,
    features: &dyn Features,
) -> Result<HashMap<u32, Backend>, ApplyError> {
    if choice == Choice::Ebpf && policy == Policy::HwOnly {
        return Err(ApplyError::Policy(
            "hw-only needs flower (the eBPF datapath runs on the CPU); use --backend flower or auto".into(),
        ));
    }
    let mut out = HashMap::new();
    for f in flows {
        let Some(i) = ports.ifindex(&f.in_port) else {
            continue; // the compiler reports it
        };
        if out.contains_key(&i) {
            continue;
        }
        let netdev = ports.name(i).unwrap_or(&f.in_port);
        let b = match choice {
            Choice::Flower => Backend::Flower,
            Choice::Ebpf => Backend::Ebpf,
            Choice::Auto => {
                let offloads = features.hw_tc_offload(netdev) == Some(true);
                if policy == Policy::HwOnly && !offloads {
                    return Err(ApplyError::Policy(format!(
                        "hw-only: {netdev} does not offload tc (ethtool hw-tc-offload is not on); nothing was touched"
                    )));
                }
                if offloads && policy != Policy::SwOnly {
                    Backend::Flower
                } else {
                    Backend::Ebpf
                }
            }
        };
        out.insert(i, b);
    }
    Ok(out)
}

/// The flows of flower ports and of eBPF ports, each with the flows'
/// indexes in the whole table.
type Part = (Vec<Flow>, Vec<usize>);

fn split(flows: &[Flow], ports: &PortMap, by_port: &HashMap<u32, Backend>) -> (Part, Part) {
    let (mut fl, mut eb): (Part, Part) = Default::default();
    for (i, f) in flows.iter().enumerate() {
        let flower = ports
            .ifindex(&f.in_port)
            .and_then(|i| by_port.get(&i))
            .is_some_and(|b| *b == Backend::Flower);
        let part = if flower { &mut fl } else { &mut eb };
        part.0.push(f.clone());
        part.1.push(i);
    }
    (fl, eb)
}

/// Applies `flows`: each port's flows with its back end, replacing every
/// other Plexus flow of both back ends.
///
/// # Errors
/// See [`ApplyError`]. Compile errors of either part leave everything as
/// it was.
pub fn apply(
    nl: &mut Netlink,
    flows: &[Flow],
    ports: &PortMap,
    how: How,
    features: &dyn Features,
    bpf_dir: &Path,
) -> Result<ApplyReport, ApplyError> {
    let How {
        choice,
        policy,
        shadowed,
    } = how;
    let by_port = choose(flows, ports, choice, policy, features)?;
    let ((fl, fl_idx), (eb, eb_idx)) = split(flows, ports, &by_port);
    // Validate both parts before touching anything.
    let table = ebpf::compile(&eb, ports).map_err(ApplyError::Compile)?;
    crate::flower::compile(&fl, ports, policy).map_err(ApplyError::Compile)?;

    // Make before break across back ends. The eBPF classifier runs before
    // any flower filter of ours (a lower preference), and hands a packet it
    // has no flow for to the filters after it. So: flower's new and changed
    // filters first, which take over a port the moment eBPF lets go of it;
    // then the eBPF table, which attaches to the ports it gains (and takes
    // them over at once) and lets go of those it lost; then the flower
    // filters no longer wanted. A failure in between leaves the old side
    // of every port working.
    let (flower_report, stale) = match install::begin(nl, &fl, ports, policy, shadowed) {
        Err(InstallError::NoFlower(e)) if choice == Choice::Auto && !fl.is_empty() => {
            tracing::warn!(error = %e, "no cls_flower in this kernel: the offload-capable ports get the eBPF datapath too");
            let table = ebpf::compile(flows, ports).map_err(ApplyError::Compile)?;
            let r = apply_ebpf(nl, &table, ports, bpf_dir)?;
            let all: Vec<usize> = (0..flows.len()).collect();
            return Ok(merge(flows, &all, None, &[], &r));
        }
        r => r?,
    };
    let ebpf_report = apply_ebpf(nl, &table, ports, bpf_dir)?;
    install::finish(nl, &stale)?;
    Ok(merge(
        &eb,
        &eb_idx,
        Some(flower_report),
        &fl_idx,
        &ebpf_report,
    ))
}

fn apply_ebpf(
    nl: &mut Netlink,
    table: &ebpf::EbpfTable,
    ports: &PortMap,
    dir: &Path,
) -> Result<datapath::EbpfReport, ApplyError> {
    if table.flows.is_empty() {
        // Nothing for eBPF: remove what an earlier apply left.
        let removed = datapath::flush(nl, dir, ports)?;
        return Ok(datapath::EbpfReport {
            removed,
            ..Default::default()
        });
    }
    let mut dp = Datapath::load(dir)?;
    Ok(dp.apply(nl, table, ports)?)
}

/// One report for both parts, in table order: `eb_idx`/`fl_idx` map each
/// part's flow indexes to the whole table's.
fn merge(
    eb: &[Flow],
    eb_idx: &[usize],
    flower: Option<ApplyReport>,
    fl_idx: &[usize],
    r: &datapath::EbpfReport,
) -> ApplyReport {
    let mut removed = r.removed;
    let mut flows: Vec<Placement> = Vec::with_capacity(eb.len() + fl_idx.len());
    if let Some(f) = flower {
        removed += f.removed;
        flows.extend(f.flows.into_iter().map(|p| Placement {
            index: fl_idx[p.index],
            ..p
        }));
    }
    for &(index, change, slot) in &r.flows {
        let flow = &eb[index];
        flows.push(Placement {
            index: eb_idx[index],
            line: flow.line,
            flow: flow.to_string(),
            port: flow.in_port.clone(),
            chain: flow.table,
            prio: None,
            handle: None,
            slot: Some(slot),
            backend: "ebpf",
            location: Location::Ebpf,
            in_hw_count: None,
            change,
            demoted: false,
        });
    }
    flows.sort_by_key(|p| p.index);
    ApplyReport { flows, removed }
}

/// An installed flow of either back end, as `dump-flows` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowStatus {
    /// The flow rebuilt from the kernel's state.
    pub flow: Flow,
    /// Back end.
    pub backend: Backend,
    /// `hw`, `tc-sw` or `ebpf`.
    pub location: Location,
    /// Flower: `TCA_FLOWER_IN_HW_COUNT`.
    pub in_hw_count: Option<u32>,
    /// Counters.
    pub counters: Counters,
    /// Flower: (chain, pref, handle).
    pub tc: Option<(u32, u16, u32)>,
    /// eBPF: counter slot.
    pub slot: Option<u32>,
    /// Flower: seconds since installed.
    pub installed_secs: Option<f64>,
    /// Flower: seconds since the last packet.
    pub idle_secs: Option<f64>,
    /// Parts of a filter that did not decode.
    pub unknown: Vec<String>,
    /// Flower under `prefer-hw`: the lower flow that takes this one's
    /// packets in the NIC while this one is in software only (see
    /// [`crate::shadow`]).
    pub shadowed_by: Option<String>,
}

impl FlowStatus {
    /// Whether the NIC holds it.
    pub fn in_hw(&self) -> bool {
        self.location == Location::Hw
    }
}

/// Everything Plexus has installed: flower filters, then the eBPF
/// datapath's active table, and the datapath's own counters when it is
/// there.
///
/// # Errors
/// A dump or map read failed.
pub fn installed(
    nl: &mut Netlink,
    ports: &PortMap,
    bpf_dir: &Path,
) -> Result<(Vec<FlowStatus>, Option<DatapathStats>), ApplyError> {
    let flower = install::installed(nl, ports)?;
    let landed: Vec<crate::shadow::Landed> = flower
        .iter()
        .map(|f| crate::shadow::Landed {
            port: f.ifindex,
            chain: f.chain,
            priority: f.flow.priority,
            matches: f.flow.matches.clone(),
            in_hw: f.in_hw(),
        })
        .collect();
    let shadows: Vec<Option<String>> = crate::shadow::shadowed_by(&landed)
        .into_iter()
        .map(|by| by.map(|g| flower[g].flow.to_string()))
        .collect();
    let mut out: Vec<FlowStatus> = flower
        .into_iter()
        .zip(shadows)
        .map(|(f, shadowed_by)| FlowStatus {
            shadowed_by,
            location: f.location(),
            backend: Backend::Flower,
            in_hw_count: f.in_hw_count,
            counters: f.counters,
            tc: Some((f.chain, f.prio, f.handle)),
            slot: None,
            installed_secs: f.installed_secs,
            idle_secs: f.idle_secs,
            unknown: f.unknown,
            flow: f.flow,
        })
        .collect();
    let mut stats = None;
    if let Some(maps) = Maps::open(bpf_dir)? {
        for f in maps.installed(ports)? {
            out.push(FlowStatus {
                flow: f.flow,
                backend: Backend::Ebpf,
                location: Location::Ebpf,
                in_hw_count: None,
                counters: f.counters,
                tc: None,
                slot: Some(f.slot),
                installed_secs: None,
                idle_secs: None,
                unknown: Vec::new(),
                shadowed_by: None,
            });
        }
        stats = Some(maps.stats()?);
    }
    Ok((out, stats))
}

/// Deletes the selected flows of both back ends (the eBPF table is
/// re-applied without them; the rest keep their counters). Returns how
/// many were deleted.
///
/// # Errors
/// A dump, delete or map update failed.
pub fn delete_selected(
    nl: &mut Netlink,
    ports: &PortMap,
    sel: &Selector,
    bpf_dir: &Path,
) -> Result<usize, ApplyError> {
    let mut n = install::delete_selected(nl, ports, sel)?;
    let Some(maps) = Maps::open(bpf_dir)? else {
        return Ok(n);
    };
    let all = maps.installed(ports)?;
    drop(maps);
    let (gone, keep): (Vec<_>, Vec<_>) = all.into_iter().partition(|f| {
        sel.in_port
            .is_none_or(|p| ports.ifindex(&f.flow.in_port) == Some(p))
            && sel.table.is_none_or(|t| t == f.flow.table)
            && sel.cookie.is_none_or(|(c, m)| f.flow.cookie & m == c & m)
    });
    if gone.is_empty() {
        return Ok(n);
    }
    let keep: Vec<Flow> = keep.into_iter().map(|f| f.flow).collect();
    let table = ebpf::compile(&keep, ports).map_err(ApplyError::Compile)?;
    apply_ebpf(nl, &table, ports, bpf_dir)?;
    n += gone.len();
    Ok(n)
}

/// Removes every Plexus flow of both back ends, the eBPF classifier and its
/// pins. Returns how many flows there were.
///
/// # Errors
/// A tc request failed or a pin could not be removed.
pub fn flush(nl: &mut Netlink, ports: &PortMap, bpf_dir: &Path) -> Result<usize, ApplyError> {
    let n = install::delete_selected(nl, ports, &Selector::default())?;
    Ok(n + datapath::flush(nl, bpf_dir, ports)?)
}
