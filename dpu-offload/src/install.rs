//! The flower installer: puts a compiled table into the kernel and says
//! truthfully where each flow ended up.
//!
//! Owns the effects: clsact qdiscs on the ports, filters added with
//! `NLM_F_ECHO` so the kernel's own copy tells `IN_HW`/`NOT_IN_HW` and
//! `IN_HW_COUNT` (`tc-flower-offload.md` §6.6: never record a flow as
//! offloaded without reading it back), the policies (`hw-only` makes a
//! hardware refusal an error carrying the kernel's extended ack), and
//! reconciliation: what is installed is found by dumping every port's
//! ingress for filters in Plexus's preference range with a `PX` cookie,
//! so a re-apply keeps unchanged filters, replaces in place those whose
//! match stays (one `NLM_F_REPLACE`: no moment without the flow), adds new
//! ones before it removes old ones, and also removes what a crashed run
//! left behind.
//!
//! Validate, then apply, then roll back: the whole table is compiled and
//! every port resolved before the first request; if an add fails, the
//! filters this run added and the qdiscs it created are removed, and what
//! was installed before stays.

use std::collections::{HashMap, HashSet};

use plexus_netlink::{
    Netlink,
    tc::{self, PARENT_EGRESS, PARENT_INGRESS, TcFilter},
};
use serde::Serialize;

use crate::{
    dump::{self, InstalledFlow, Location},
    eswitch::{self, Flavour},
    flow::Flow,
    flower::{self, CompileError, CompiledFlow, Policy, PortMap},
    shadow,
};

/// What can go wrong installing flows.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The table does not compile; nothing was touched.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Compile(Vec<CompileError>),
    /// The kernel has no flower classifier; nothing was installed.
    #[error(
        "this kernel has no tc flower classifier (cls_flower); nothing was installed (the eBPF back end needs no flower)"
    )]
    NoFlower(#[source] plexus_netlink::Error),
    /// `hw-only` and the NIC refused a flow; what this run added was
    /// removed.
    #[error(
        "hw-only: the hardware refused line {line} on {port}: {reason}; nothing of this apply was kept"
    )]
    HwRefused {
        /// The flow's line.
        line: usize,
        /// Its port.
        port: String,
        /// The kernel's extended ack (or errno).
        reason: String,
    },
    /// `prefer-hw` with `--shadowed refuse`: a flow the NIC refused would
    /// lose its packets to an overlapping lower flow the NIC holds.
    #[error(
        "line {line} on {port} stays in software while line {by_line} below it, which overlaps it, \
         went to hardware: the NIC would take its packets first (--shadowed demote keeps such \
         flows out of hardware instead); what this apply added was removed"
    )]
    Shadowed {
        /// The shadowed flow's line.
        line: usize,
        /// Its port.
        port: String,
        /// The line of the flow that shadows it.
        by_line: usize,
    },
    /// Adding a filter failed; what this run added was removed.
    #[error(
        "line {line}: adding the filter on {port} failed: {source}; nothing of this apply was kept"
    )]
    Add {
        /// The flow's line.
        line: usize,
        /// Its port.
        port: String,
        /// The kernel's answer.
        #[source]
        source: plexus_netlink::Error,
    },
    /// Any other netlink failure (dumps, deletes, qdiscs).
    #[error(transparent)]
    Netlink(#[from] plexus_netlink::Error),
}

/// What `prefer-hw` does about a flow that would be shadowed (see
/// [`crate::shadow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shadowed {
    /// Keep the overlapping lower flows out of hardware (`sw-only`), so
    /// that software sees the packets in the flow table's order.
    #[default]
    Demote,
    /// Refuse the table.
    Refuse,
}

impl std::str::FromStr for Shadowed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "demote" => Ok(Self::Demote),
            "refuse" => Ok(Self::Refuse),
            _ => Err(format!("{s:?}: expected demote or refuse")),
        }
    }
}

/// What an apply did with one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Newly installed.
    Added,
    /// Already installed as compiled; untouched.
    Kept,
    /// Its filter was swapped in place (same match, other actions, cookie
    /// or policy): one `NLM_F_REPLACE`, never a moment without it.
    Replaced,
}

/// Where one flow of the table lives after an apply.
#[derive(Debug, Clone, Serialize)]
pub struct Placement {
    /// Index of the flow in the applied table.
    pub index: usize,
    /// Line in the flow file.
    pub line: usize,
    /// The flow, canonical form.
    pub flow: String,
    /// `in_port` as written.
    pub port: String,
    /// Table (the tc chain for flower).
    pub chain: u32,
    /// tc preference (flower).
    pub prio: Option<u16>,
    /// Filter handle (flower).
    pub handle: Option<u32>,
    /// Counter slot (eBPF).
    pub slot: Option<u32>,
    /// Back end: `flower` or `ebpf`.
    pub backend: &'static str,
    /// `hw` or `tc-sw` from the kernel's echo, or `ebpf`.
    pub location: Location,
    /// `IN_HW_COUNT` from the echo.
    pub in_hw_count: Option<u32>,
    /// Added or kept.
    pub change: Change,
    /// Kept out of hardware under `prefer-hw`, because a higher flow that
    /// overlaps it is in software only (see [`crate::shadow`]).
    pub demoted: bool,
}

/// The outcome of an apply.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    /// One per flow, in table order.
    pub flows: Vec<Placement>,
    /// Filters removed (stale, changed or left by a crash).
    pub removed: usize,
}

/// Every port in the caller's network namespace: netdev names, plus the
/// aliases of switchdev representors from netlink (`IFLA_PHYS_PORT_NAME`)
/// and, when given, from the eSwitches discovered in sysfs.
///
/// # Errors
/// The link dump failed.
pub fn host_ports(
    nl: &mut Netlink,
    switches: &[eswitch::Eswitch],
) -> Result<PortMap, plexus_netlink::Error> {
    let links = plexus_netlink::link::list(nl)?;
    let mut ports = PortMap::new();
    for l in &links {
        ports.insert(&l.name, l.index);
    }
    // Aliases from netlink first: they are this netns's view even when
    // sysfs is mounted from another.
    let mut seen = HashMap::<String, Option<String>>::new();
    for l in &links {
        if let (Some(_), Some(p)) = (&l.phys_switch_id, &l.phys_port_name) {
            for a in Flavour::parse(p).aliases() {
                seen.entry(a)
                    .and_modify(|v| *v = None)
                    .or_insert_with(|| Some(l.name.clone()));
            }
        }
    }
    for (alias, netdev) in seen {
        if let Some(n) = netdev {
            ports.alias(&alias, &n);
        }
    }
    eswitch::add_aliases(&mut ports, switches);
    Ok(ports)
}

/// Plexus's filters on one port's ingress (none when it has no clsact).
///
/// # Errors
/// A dump failure other than "no clsact here", or a filter of ours that
/// does not decode.
pub fn installed_on(
    nl: &mut Netlink,
    ifindex: u32,
    ports: &PortMap,
) -> Result<Vec<InstalledFlow>, plexus_netlink::Error> {
    let entries = match tc::dump_filters(nl, ifindex, PARENT_INGRESS, None) {
        Ok(e) => e,
        // No clsact (EINVAL), or the link went away meanwhile.
        Err(plexus_netlink::Error::Other(e)) if e.errno == libc::EINVAL => return Ok(Vec::new()),
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in &entries {
        match dump::decode(e, ports) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => {}
            Err(reason) => {
                return Err(plexus_netlink::Error::BadReply {
                    op: format!(
                        "decode flower filter pref {} handle {:#x} on ifindex {ifindex}",
                        e.priority, e.handle
                    ),
                    reason,
                });
            }
        }
    }
    Ok(out)
}

/// Plexus's filters on every port.
///
/// # Errors
/// As [`installed_on`].
pub fn installed(
    nl: &mut Netlink,
    ports: &PortMap,
) -> Result<Vec<InstalledFlow>, plexus_netlink::Error> {
    let mut indexes: Vec<u32> = ports.indexes().collect();
    indexes.sort_unstable();
    let mut out = Vec::new();
    for i in indexes {
        out.extend(installed_on(nl, i, ports)?);
    }
    Ok(out)
}

fn del_request(f: &InstalledFlow) -> TcFilter {
    TcFilter {
        ifindex: f.ifindex,
        parent: PARENT_INGRESS,
        priority: f.prio,
        protocol: f.protocol,
        handle: f.handle,
        chain: (f.chain != 0).then_some(f.chain),
        kind: "flower".into(),
        options: None,
    }
}

/// Swaps `old` for `c` in place: `NLM_F_CREATE | NLM_F_REPLACE` with the
/// old filter's handle (`tc filter replace`), echoed back.
fn replace(
    nl: &mut Netlink,
    c: &CompiledFlow,
    old: &InstalledFlow,
) -> Result<tc::TcFilterEntry, plexus_netlink::Error> {
    let filter = TcFilter {
        handle: old.handle,
        ..c.filter()
    };
    tc::replace_filter_echo(nl, &filter)
}

/// Deletes one installed filter; one already gone is not an error.
///
/// # Errors
/// The kernel refused.
pub fn delete(nl: &mut Netlink, f: &InstalledFlow) -> Result<(), plexus_netlink::Error> {
    match tc::del_filter(nl, &del_request(f)) {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    }
}

/// What an apply must do, decided before anything is sent.
#[derive(Debug)]
pub struct Plan<'a> {
    /// Flows (by table index) already installed exactly as compiled.
    pub kept: HashMap<usize, &'a InstalledFlow>,
    /// Kept flows installed kept out of hardware by an earlier apply
    /// ([`Shadowed::Demote`]); whether they still must be is decided again.
    pub demoted: HashSet<usize>,
    /// Flows whose match is installed at their preference with something
    /// else to do (actions, cookie, policy): replaced in place, each with
    /// the handle of the filter it replaces.
    pub replaced: Vec<(&'a CompiledFlow, &'a InstalledFlow)>,
    /// Flows to add (a new match, or a new preference).
    pub to_add: Vec<&'a CompiledFlow>,
    /// Stale filters to delete before adding: they sit in a preference a
    /// new filter of another protocol needs (a tc preference holds one
    /// protocol; only filters of another Plexus version's preferences).
    pub early: Vec<&'a InstalledFlow>,
    /// Stale filters to delete after adding (make before break): flows
    /// whose match changed, flows no longer in the table, crash leftovers.
    pub late: Vec<&'a InstalledFlow>,
}

/// Diffs the compiled table against Plexus's installed filters. A filter
/// is kept when port, chain, preference and cookie all match (the cookie's
/// digest covers the match, the actions, their ports and the policy); it
/// is replaced when port, chain, preference, protocol and match do but the
/// cookie does not; everything else is added, or deleted.
pub fn plan<'a>(compiled: &'a [CompiledFlow], installed: &'a [InstalledFlow]) -> Plan<'a> {
    let mut pool: HashMap<(u32, u32, u16, [u8; 16]), Vec<&InstalledFlow>> = HashMap::new();
    for f in installed {
        let cookie = f
            .cookie
            .map(flower::FlowCookie::to_bytes)
            .unwrap_or_default();
        pool.entry((f.ifindex, f.chain, f.prio, cookie))
            .or_default()
            .push(f);
    }
    let mut kept = HashMap::new();
    let mut demoted = HashSet::new();
    let mut rest = Vec::new();
    for c in compiled {
        let mut take = |cookie: flower::FlowCookie| {
            pool.get_mut(&(c.ifindex, c.chain, c.prio, cookie.to_bytes()))
                .and_then(Vec::pop)
        };
        match take(c.cookie) {
            Some(f) => {
                kept.insert(c.index, f);
            }
            None => match (c.demoted_cookie != c.cookie)
                .then(|| take(c.demoted_cookie))
                .flatten()
            {
                Some(f) => {
                    kept.insert(c.index, f);
                    demoted.insert(c.index);
                }
                None => rest.push(c),
            },
        }
    }
    // What is left installed, by where it is and what it matches.
    type Slot = (u32, u32, u16, u16, Vec<u8>);
    let mut by_key: HashMap<Slot, Vec<&InstalledFlow>> = HashMap::new();
    for f in pool.into_values().flatten() {
        let key = flower::match_key(&f.flow);
        by_key
            .entry((f.ifindex, f.chain, f.prio, f.protocol, key))
            .or_default()
            .push(f);
    }
    let mut replaced = Vec::new();
    let mut to_add = Vec::new();
    for c in rest {
        match by_key
            .get_mut(&(c.ifindex, c.chain, c.prio, c.protocol, c.key.clone()))
            .and_then(Vec::pop)
        {
            Some(f) => replaced.push((c, f)),
            None => to_add.push(c),
        }
    }
    let wanted: HashMap<(u32, u32, u16), u16> = compiled
        .iter()
        .map(|c| ((c.ifindex, c.chain, c.prio), c.protocol))
        .collect();
    let mut stale: Vec<&InstalledFlow> = by_key.into_values().flatten().collect();
    stale.sort_by_key(|f| (f.ifindex, f.chain, f.prio, f.handle));
    let (early, late) = stale.into_iter().partition(|f| {
        wanted
            .get(&(f.ifindex, f.chain, f.prio))
            .is_some_and(|p| *p != f.protocol)
    });
    Plan {
        kept,
        demoted,
        replaced,
        to_add,
        early,
        late,
    }
}

/// Installs `flows` with `policy` and removes every other Plexus filter.
///
/// # Errors
/// See [`InstallError`]; after an error the kernel holds what it held
/// before (except stale filters whose preference a new filter of another
/// protocol needed, removed first).
pub fn apply(
    nl: &mut Netlink,
    flows: &[Flow],
    ports: &PortMap,
    policy: Policy,
    shadowed: Shadowed,
) -> Result<ApplyReport, InstallError> {
    let (report, stale) = begin(nl, flows, ports, policy, shadowed)?;
    finish(nl, &stale)?;
    Ok(report)
}

/// Stale filters an apply leaves for [`finish`]: make before break across
/// back ends, where the other back end must take a port over in between.
#[derive(Debug, Default)]
pub struct Stale(Vec<InstalledFlow>);

impl Stale {
    /// How many filters are left to delete.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Deletes what [`begin`] left.
///
/// # Errors
/// The kernel refused a delete.
pub fn finish(nl: &mut Netlink, stale: &Stale) -> Result<(), plexus_netlink::Error> {
    for f in &stale.0 {
        delete(nl, f)?;
    }
    Ok(())
}

/// The first part of [`apply`]: everything but deleting the filters no
/// longer wanted, which are returned (and counted in `removed`).
///
/// # Errors
/// As [`apply`].
pub fn begin(
    nl: &mut Netlink,
    flows: &[Flow],
    ports: &PortMap,
    policy: Policy,
    shadowed: Shadowed,
) -> Result<(ApplyReport, Stale), InstallError> {
    let compiled = flower::compile(flows, ports, policy).map_err(InstallError::Compile)?;
    let before = installed(nl, ports)?;
    let Plan {
        kept,
        mut demoted,
        replaced,
        to_add,
        early,
        late,
    } = plan(&compiled, &before);
    for f in &early {
        delete(nl, f)?;
    }

    // Replacements first: each swaps one filter for its new version in
    // one request (the kernel installs the new one, in hardware too,
    // before it removes the old), so nothing is ever missing.
    let mut swapped: HashMap<usize, InstalledFlow> = HashMap::new();
    for (c, old) in &replaced {
        let flow = &flows[c.index];
        let entry = replace(nl, c, old).map_err(|e| add_error(e, flow, policy))?;
        let got = match dump::decode(&entry, ports) {
            Ok(Some(f)) => f,
            _ => echo_fallback(c, &entry),
        };
        if policy == Policy::HwOnly && !got.in_hw() {
            return Err(InstallError::HwRefused {
                line: flow.line,
                port: flow.in_port.clone(),
                reason: "the kernel accepted skip_sw but reports the filter not in hardware".into(),
            });
        }
        swapped.insert(c.index, got);
    }

    let mut created: Vec<u32> = Vec::new();
    let mut added: Vec<InstalledFlow> = Vec::new();
    let result = add_all(nl, flows, &to_add, ports, policy, &mut created, &mut added);
    if let Err(e) = result {
        roll_back(nl, &added, &created);
        return Err(e);
    }
    let stale = Stale(late.iter().map(|f| (*f).clone()).collect());

    // Where each flow is now, and what this apply did to it.
    let mut now: HashMap<usize, (InstalledFlow, Change)> = HashMap::new();
    for (i, f) in &kept {
        now.insert(*i, ((*f).clone(), Change::Kept));
    }
    for (i, f) in swapped {
        now.insert(i, (f, Change::Replaced));
    }
    for (c, f) in to_add.iter().zip(&added) {
        now.insert(c.index, (f.clone(), Change::Added));
    }
    if policy == Policy::PreferHw
        && let Err(e) = settle_shadows(
            nl,
            flows,
            &compiled,
            ports,
            shadowed,
            &mut now,
            &mut demoted,
        )
    {
        // The added filters as they are now (some may have been
        // replaced `sw-only` since).
        let now_added: Vec<InstalledFlow> =
            to_add.iter().map(|c| now[&c.index].0.clone()).collect();
        roll_back(nl, &now_added, &created);
        return Err(e);
    }
    let flows_out = compiled
        .iter()
        .map(|c| {
            let (f, change) = &now[&c.index];
            let (f, change) = (f, *change);
            let flow = &flows[c.index];
            Placement {
                index: c.index,
                line: flow.line,
                flow: flow.to_string(),
                port: flow.in_port.clone(),
                chain: c.chain,
                prio: Some(c.prio),
                handle: Some(f.handle),
                slot: None,
                backend: "flower",
                location: f.location(),
                in_hw_count: f.in_hw_count,
                change,
                demoted: demoted.contains(&c.index),
            }
        })
        .collect();
    Ok((
        ApplyReport {
            flows: flows_out,
            removed: early.len() + late.len(),
        },
        stale,
    ))
}

/// `prefer-hw`: no flow the NIC refused may lose its packets to a lower
/// one the NIC holds ([`shadow::settle`]): a flow that would shadow one is
/// replaced in place `sw-only` (or the table refused), and one an earlier
/// apply kept out of hardware goes back to `prefer-hw` once nothing above
/// needs that.
#[allow(clippy::too_many_arguments)]
fn settle_shadows(
    nl: &mut Netlink,
    flows: &[Flow],
    compiled: &[CompiledFlow],
    ports: &PortMap,
    shadowed: Shadowed,
    now: &mut HashMap<usize, (InstalledFlow, Change)>,
    demoted: &mut HashSet<usize>,
) -> Result<(), InstallError> {
    let mut landed: Vec<shadow::Landed> = compiled
        .iter()
        .map(|c| shadow::Landed {
            port: c.ifindex,
            chain: c.chain,
            priority: flows[c.index].priority,
            matches: flows[c.index].matches.clone(),
            in_hw: now[&c.index].0.in_hw(),
        })
        .collect();
    let mut is_demoted: Vec<bool> = compiled
        .iter()
        .map(|c| demoted.contains(&c.index))
        .collect();
    let result = shadow::settle(
        &mut landed,
        &mut is_demoted,
        shadowed == Shadowed::Refuse,
        |k, how| {
            let c = &compiled[k];
            let flow = &flows[c.index];
            let target = match how {
                shadow::Move::Demote => c
                    .demoted(flow, ports)
                    .map_err(|e| InstallError::Compile(vec![e]))?,
                shadow::Move::Restore => c.clone(),
            };
            let (old, change) = now[&c.index].clone();
            let entry =
                replace(nl, &target, &old).map_err(|e| add_error(e, flow, Policy::PreferHw))?;
            let got = match dump::decode(&entry, ports) {
                Ok(Some(f)) => f,
                _ => echo_fallback(&target, &entry),
            };
            let in_hw = got.in_hw();
            let change = if change == Change::Kept {
                Change::Replaced
            } else {
                change
            };
            now.insert(c.index, (got, change));
            Ok(in_hw)
        },
    );
    for (c, d) in compiled.iter().zip(is_demoted) {
        if d {
            demoted.insert(c.index);
        } else {
            demoted.remove(&c.index);
        }
    }
    result.map_err(|e| match e {
        shadow::SettleError::Shadowed {
            shadowed: above,
            by,
        } => {
            let flow = &flows[compiled[by].index];
            InstallError::Shadowed {
                line: flows[compiled[above].index].line,
                port: flow.in_port.clone(),
                by_line: flow.line,
            }
        }
        shadow::SettleError::Move(e) => e,
    })
}

/// Rolls back an apply that failed: the filters it added, then the
/// qdiscs it created.
fn roll_back(nl: &mut Netlink, added: &[InstalledFlow], created: &[u32]) {
    for f in added.iter().rev() {
        if let Err(d) = delete(nl, f) {
            tracing::warn!(error = %d, "rollback: could not delete a filter this apply added");
        }
    }
    for &i in created {
        if let Err(d) = tc::del_clsact(nl, i) {
            tracing::warn!(error = %d, ifindex = i, "rollback: could not delete the clsact qdisc this apply created");
        }
    }
}

fn add_all(
    nl: &mut Netlink,
    flows: &[Flow],
    to_add: &[&CompiledFlow],
    ports: &PortMap,
    policy: Policy,
    created: &mut Vec<u32>,
    added: &mut Vec<InstalledFlow>,
) -> Result<(), InstallError> {
    let mut has_clsact: HashSet<u32> = HashSet::new();
    for c in to_add {
        let flow = &flows[c.index];
        if has_clsact.insert(c.ifindex) && create_clsact(nl, c.ifindex)? {
            created.push(c.ifindex);
        }
        let filter = c.filter();
        let entry = match tc::add_filter_echo(nl, &filter) {
            Ok(entry) => entry,
            Err(e) => return Err(add_error(e, flow, policy)),
        };
        let got = match dump::decode(&entry, ports) {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => {
                // The echo must be the filter we sent; anything else means
                // the kernel changed it and we cannot vouch for it.
                let f = echo_fallback(c, &entry);
                added.push(f);
                return Err(InstallError::Netlink(plexus_netlink::Error::BadReply {
                    op: format!("add flower filter for line {}", flow.line),
                    reason: "the kernel's copy of the filter is not the one we sent".into(),
                }));
            }
        };
        let in_hw = got.in_hw();
        added.push(got);
        if policy == Policy::HwOnly && !in_hw {
            return Err(InstallError::HwRefused {
                line: flow.line,
                port: flow.in_port.clone(),
                reason: "the kernel accepted skip_sw but reports the filter not in hardware".into(),
            });
        }
    }
    Ok(())
}

/// A stand-in for a filter we added but could not decode, good enough to
/// delete it.
fn echo_fallback(c: &CompiledFlow, entry: &tc::TcFilterEntry) -> InstalledFlow {
    InstalledFlow {
        ifindex: entry.ifindex,
        chain: c.chain,
        prio: entry.priority,
        handle: entry.handle,
        protocol: c.protocol,
        cookie: Some(c.cookie),
        flow: Flow {
            line: 0,
            table: c.chain,
            priority: c.cookie.priority,
            cookie: c.cookie.user,
            in_port: String::new(),
            matches: Default::default(),
            actions: Vec::new(),
        },
        unknown: Vec::new(),
        flags: 0,
        in_hw_count: None,
        counters: Default::default(),
        installed_secs: None,
        idle_secs: None,
    }
}

fn add_error(e: plexus_netlink::Error, flow: &Flow, policy: Policy) -> InstallError {
    let no_classifier = matches!(&e, plexus_netlink::Error::NotSupported(k)
        if k.errno == libc::ENOENT || k.ext_ack.as_deref().is_some_and(|m| m.contains("classifier")));
    if no_classifier {
        return InstallError::NoFlower(e);
    }
    if policy == Policy::HwOnly {
        return InstallError::HwRefused {
            line: flow.line,
            port: flow.in_port.clone(),
            reason: e.to_string(),
        };
    }
    InstallError::Add {
        line: flow.line,
        port: flow.in_port.clone(),
        source: e,
    }
}

/// Which installed flows a `del` removes; every given field must match.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// Port (netdev name or alias, resolved through the port map).
    pub in_port: Option<u32>,
    /// Table.
    pub table: Option<u32>,
    /// Cookie and mask (`cookie=C/M` of `ovs-ofctl del-flows`).
    pub cookie: Option<(u64, u64)>,
}

impl Selector {
    /// Whether `f` is selected.
    pub fn matches(&self, f: &InstalledFlow) -> bool {
        self.in_port.is_none_or(|p| p == f.ifindex)
            && self.table.is_none_or(|t| t == f.chain)
            && self.cookie.is_none_or(|(c, m)| f.flow.cookie & m == c & m)
    }
}

/// Deletes the selected Plexus filters; with everything gone from a port
/// whose clsact holds nothing else, the qdisc goes too. Returns how many
/// filters were deleted.
///
/// # Errors
/// A dump or delete the kernel refused; deleting goes on for the rest and
/// the first error is returned.
pub fn delete_selected(
    nl: &mut Netlink,
    ports: &PortMap,
    sel: &Selector,
) -> Result<usize, plexus_netlink::Error> {
    let mut first_err = None;
    let mut n = 0;
    let mut touched = Vec::new();
    for f in installed(nl, ports)? {
        if !sel.matches(&f) {
            continue;
        }
        match delete(nl, &f) {
            Ok(()) => {
                n += 1;
                touched.push(f.ifindex);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    touched.sort_unstable();
    touched.dedup();
    for i in touched {
        if let Err(e) = remove_clsact_if_empty(nl, i) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

/// The mark of a clsact qdisc Plexus created: an empty chain of this index
/// on its egress hook (`tc chain show dev X egress` lists it). No filter
/// jumps to it, so no packet ever visits it, and it lives exactly as long
/// as the qdisc: whoever looks later (another run, the agent after a
/// restart, the other back end) can tell Plexus's qdisc from someone
/// else's, which stays even when it holds nothing. "PLX" in ASCII; chain
/// indexes go up to `0x0FFF_FFFF`, flow tables use 0 to 254.
pub const OWNER_CHAIN: u32 = 0x0050_4C58;

/// Adds a port's clsact and marks it as Plexus's; `false` when the port
/// already had one (someone else's, or ours from before).
pub(crate) fn create_clsact(nl: &mut Netlink, ifindex: u32) -> Result<bool, plexus_netlink::Error> {
    match tc::add_clsact(nl, ifindex) {
        Ok(()) => {}
        Err(e) if e.is_exists() => return Ok(false),
        Err(e) => return Err(e),
    }
    if let Err(e) = tc::add_chain(nl, ifindex, PARENT_EGRESS, OWNER_CHAIN) {
        let _ = tc::del_clsact(nl, ifindex);
        return Err(e);
    }
    Ok(true)
}

/// Removes a port's clsact when Plexus created it (see [`OWNER_CHAIN`]) and
/// neither hook holds a filter any more.
pub(crate) fn remove_clsact_if_empty(
    nl: &mut Netlink,
    ifindex: u32,
) -> Result<(), plexus_netlink::Error> {
    for parent in [PARENT_INGRESS, PARENT_EGRESS] {
        match tc::dump_filters(nl, ifindex, parent, None) {
            Ok(f) if f.is_empty() => {}
            Ok(_) => return Ok(()),
            // No clsact any more, or no link.
            Err(plexus_netlink::Error::Other(e)) if e.errno == libc::EINVAL => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    if !tc::chain_exists(nl, ifindex, PARENT_EGRESS, OWNER_CHAIN)? {
        return Ok(());
    }
    match tc::del_clsact(nl, ifindex) {
        Err(e) if e.is_not_found() => Ok(()),
        r => r,
    }
}
