//! The tc-flower back end's compiler: a flow table in, one flower filter per
//! flow out, as netlink requests.
//!
//! Owns the mapping of the flow language onto tc (see
//! `tc-flower-offload.md` §1.2–1.4 and §3): the filter goes on the clsact
//! ingress of `in_port`; `table` is the tc chain; OpenFlow priorities
//! (higher wins) become tc preferences (lower wins) in Plexus's own range,
//! one per (priority, EtherType) because a tc priority holds filters of one
//! protocol only; actions are `mirred`, `gact`, `vlan` and `pedit`. Every
//! action carries the flow's [`FlowCookie`]
//! in `TCA_ACT_COOKIE` and `TCA_ACT_FLAGS_NO_PERCPU_STATS`, as OVS does.
//!
//! The attribute order is the one `tc filter add ... flower` sends for the
//! same rule written in the order of `tests/fixtures/flower/capture.sh`,
//! so requests compare byte for byte with iproute2's.
//!
//! Pure: no sockets, no sysfs. Ports come resolved in a [`PortMap`].

use std::{collections::HashMap, net::IpAddr};

use fnv::FnvHashMap;
use plexus_netlink::{
    AttrWriter,
    tc::{ETH_P_ALL, PARENT_INGRESS, TcFilter},
};

use crate::flow::{
    Action, ETH_8021Q, ETH_ARP, ETH_IPV6, Flow, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Mac,
    Masked, VlanMatch,
};

/// The first tc preference Plexus uses. Flows take `PRIO_BASE..PRIO_END`
/// on every port, so other agents keep theirs: Cilium and most hand-made
/// filters use 1 and up, the kernel picks 49152 (`PRIO_END`) and down for a
/// filter added without a preference.
pub const PRIO_BASE: u16 = 0x1000;
/// One past the last tc preference Plexus uses.
pub const PRIO_END: u16 = 0xC000;
/// How many preferences Plexus owns.
pub const PRIO_SPAN: u16 = PRIO_END - PRIO_BASE;
/// Preferences per OpenFlow priority level, one per EtherType class (a tc
/// preference holds filters of one protocol only): see [`preference`].
pub const PRIO_CLASSES: u16 = 8;
/// How many priority levels the range holds.
pub const PRIO_LEVELS: u32 = (PRIO_SPAN / PRIO_CLASSES) as u32;
/// The first two bytes of every Plexus action cookie.
pub const COOKIE_MAGIC: [u8; 2] = *b"PX";
/// `TCA_ACT_MAX_PRIO`: at most this many actions per filter.
pub const MAX_ACTIONS: usize = 32;

/// `TCA_FLOWER_FLAGS` bits (`pkt_cls.h`).
pub mod flags {
    /// `TCA_CLS_FLAGS_SKIP_HW`.
    pub const SKIP_HW: u32 = 1;
    /// `TCA_CLS_FLAGS_SKIP_SW`.
    pub const SKIP_SW: u32 = 2;
    /// `TCA_CLS_FLAGS_IN_HW`, set by the kernel.
    pub const IN_HW: u32 = 4;
    /// `TCA_CLS_FLAGS_NOT_IN_HW`, set by the kernel.
    pub const NOT_IN_HW: u32 = 8;
}

/// `TC_ACT_*` verdicts (`pkt_cls.h`).
pub mod verdict {
    /// `TC_ACT_OK`.
    pub const OK: i32 = 0;
    /// `TC_ACT_SHOT`.
    pub const SHOT: i32 = 2;
    /// `TC_ACT_PIPE`.
    pub const PIPE: i32 = 3;
    /// `TC_ACT_STOLEN`.
    pub const STOLEN: i32 = 4;
    /// `TC_ACT_GOTO_CHAIN`, or-ed with the chain.
    pub const GOTO_CHAIN: i32 = 0x2000_0000;
    /// `TC_ACT_EXT_VAL_MASK`: the chain bits of a goto.
    pub const EXT_VAL_MASK: i32 = 0x0fff_ffff;
}

/// Action attribute numbers we encode by hand.
pub(crate) mod act {
    /// `TCA_ACT_KIND`.
    pub const KIND: u16 = 1;
    /// `TCA_ACT_OPTIONS`.
    pub const OPTIONS: u16 = 2;
    /// `TCA_ACT_COOKIE`.
    pub const COOKIE: u16 = 6;
    /// `TCA_ACT_FLAGS`.
    pub const FLAGS: u16 = 7;
    /// `TCA_EGRESS_REDIR` (`tc_mirred.eaction`).
    pub const EGRESS_REDIR: i32 = 1;
    /// `TCA_EGRESS_MIRROR`.
    pub const EGRESS_MIRROR: i32 = 2;
    /// `TCA_ACT_FLAGS_NO_PERCPU_STATS`.
    pub const NO_PERCPU_STATS: u32 = 1;
    /// `TCA_GACT_PARMS` (gact), `TCA_VLAN_PARMS` (vlan), `TCA_PEDIT_PARMS`.
    pub const PARMS: u16 = 2;
    /// `TCA_*_TM` of gact, vlan, pedit: `struct tcf_t`.
    pub const TM: u16 = 1;
    /// `TCA_VLAN_PUSH_VLAN_ID`.
    pub const VLAN_ID: u16 = 3;
    /// `TCA_VLAN_PUSH_VLAN_PROTOCOL`.
    pub const VLAN_PROTOCOL: u16 = 4;
    /// `TCA_VLAN_PUSH_VLAN_PRIORITY`.
    pub const VLAN_PRIORITY: u16 = 6;
    /// `TCA_VLAN_ACT_POP`.
    pub const VLAN_POP: i32 = 1;
    /// `TCA_VLAN_ACT_PUSH`.
    pub const VLAN_PUSH: i32 = 2;
    /// `TCA_VLAN_ACT_MODIFY`.
    pub const VLAN_MODIFY: i32 = 3;
    /// `TCA_PEDIT_PARMS_EX`.
    pub const PEDIT_PARMS_EX: u16 = 4;
    /// `TCA_PEDIT_KEYS_EX`.
    pub const PEDIT_KEYS_EX: u16 = 5;
    /// `TCA_PEDIT_KEY_EX`.
    pub const PEDIT_KEY_EX: u16 = 6;
    /// `TCA_PEDIT_KEY_EX_HTYPE`.
    pub const PEDIT_KEY_EX_HTYPE: u16 = 1;
    /// `TCA_PEDIT_KEY_EX_CMD`.
    pub const PEDIT_KEY_EX_CMD: u16 = 2;
    /// `TCA_PEDIT_KEY_EX_HDR_TYPE_ETH`.
    pub const PEDIT_HTYPE_ETH: u16 = 1;
    /// `TCA_PEDIT_KEY_EX_CMD_SET`.
    pub const PEDIT_CMD_SET: u16 = 0;
    /// `NLA_F_NESTED`.
    pub const NESTED: u16 = 0x8000;
}

/// Where a flow may run, as OVS's `tc-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// `skip_sw`: in the NIC or not at all; a refusal is an error.
    HwOnly,
    /// No flag: the kernel keeps a software copy and tries the NIC.
    #[default]
    PreferHw,
    /// `skip_hw`: software tc only.
    SwOnly,
}

impl Policy {
    /// `TCA_FLOWER_FLAGS` for the policy.
    pub fn flower_flags(self) -> u32 {
        match self {
            Policy::HwOnly => flags::SKIP_SW,
            Policy::PreferHw => 0,
            Policy::SwOnly => flags::SKIP_HW,
        }
    }

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Policy::HwOnly => "hw-only",
            Policy::PreferHw => "prefer-hw",
            Policy::SwOnly => "sw-only",
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hw-only" => Ok(Policy::HwOnly),
            "prefer-hw" => Ok(Policy::PreferHw),
            "sw-only" => Ok(Policy::SwOnly),
            _ => Err(format!(
                "unknown policy {s:?} (hw-only, prefer-hw, sw-only)"
            )),
        }
    }
}

/// Port names (netdevs and representor aliases) to interface indexes.
#[derive(Debug, Clone, Default)]
pub struct PortMap {
    // FNV: names are short and looked up once per port of every flow.
    by_name: FnvHashMap<String, u32>,
    names: FnvHashMap<u32, String>,
}

impl PortMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a netdev; its name is what dumps show for the index.
    pub fn insert(&mut self, name: &str, ifindex: u32) {
        self.by_name.insert(name.to_owned(), ifindex);
        self.names.entry(ifindex).or_insert_with(|| name.to_owned());
    }

    /// Adds another name for an interface already known by `netdev`
    /// (a representor alias such as `pf0vf3`). Netdev names win over
    /// aliases.
    pub fn alias(&mut self, alias: &str, netdev: &str) {
        if let Some(&i) = self.by_name.get(netdev) {
            self.by_name.entry(alias.to_owned()).or_insert(i);
        }
    }

    /// The index of a port.
    pub fn ifindex(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// Every interface index in the map.
    pub fn indexes(&self) -> impl Iterator<Item = u32> + '_ {
        self.names.keys().copied()
    }

    /// The netdev name of an index.
    pub fn name(&self, ifindex: u32) -> Option<&str> {
        self.names.get(&ifindex).map(String::as_str)
    }
}

/// What Plexus writes into `TCA_ACT_COOKIE` (16 bytes): the magic `PX`, the
/// flow's OpenFlow priority (tc keeps only the rank), the user's cookie,
/// and a digest of the compiled flow, so that a re-apply keeps filters
/// whose digest is unchanged and a crash leaves filters that can be told
/// apart from everyone else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowCookie {
    /// OpenFlow priority.
    pub priority: u16,
    /// The flow's `cookie=`.
    pub user: u64,
    /// FNV-1a of the flow as compiled (ports resolved, policy included).
    pub digest: u32,
}

impl FlowCookie {
    /// The 16 bytes, all big-endian.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..2].copy_from_slice(&COOKIE_MAGIC);
        b[2..4].copy_from_slice(&self.priority.to_be_bytes());
        b[4..12].copy_from_slice(&self.user.to_be_bytes());
        b[12..].copy_from_slice(&self.digest.to_be_bytes());
        b
    }

    /// Reads a cookie back; `None` if it is not one of ours.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; 16] = b.try_into().ok()?;
        (b[..2] == COOKIE_MAGIC).then(|| Self {
            priority: u16::from_be_bytes([b[2], b[3]]),
            user: u64::from_be_bytes(b[4..12].try_into().expect("8 bytes")),
            digest: u32::from_be_bytes(b[12..].try_into().expect("4 bytes")),
        })
    }
}

/// 32-bit FNV-1a: stable across builds and platforms, unlike std's hasher.
pub fn fnv1a32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// A flow that cannot be compiled to tc-flower.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct CompileError {
    /// The flow's line.
    pub line: usize,
    /// Why.
    pub message: String,
}

/// One flow as a flower filter, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFlow {
    /// Index of the flow in the table.
    pub index: usize,
    /// Device of the filter (`in_port`).
    pub ifindex: u32,
    /// tc chain (`table`).
    pub chain: u32,
    /// tc preference.
    pub prio: u16,
    /// `tcm_info` protocol, host order.
    pub protocol: u16,
    /// What the actions carry.
    pub cookie: FlowCookie,
    /// `TCA_OPTIONS`, encoded.
    pub options: Vec<u8>,
    /// The match alone, encoded ([`match_key`]): a filter with this key at
    /// this preference can be replaced in place.
    pub key: Vec<u8>,
    /// Under `prefer-hw`, the cookie of this flow kept out of hardware
    /// (`sw-only`, so that it shadows no higher flow the NIC refused: see
    /// [`crate::shadow`]); the same as `cookie` under the other policies.
    pub demoted_cookie: FlowCookie,
}

impl CompiledFlow {
    /// This flow compiled `sw-only` with its demoted cookie.
    ///
    /// # Errors
    /// As [`encode_options`].
    pub fn demoted(&self, flow: &Flow, ports: &PortMap) -> Result<CompiledFlow, CompileError> {
        Ok(CompiledFlow {
            options: encode_options(flow, ports, Policy::SwOnly, &self.demoted_cookie.to_bytes())?,
            cookie: self.demoted_cookie,
            ..self.clone()
        })
    }
}

impl CompiledFlow {
    /// The filter to add.
    pub fn filter(&self) -> TcFilter {
        TcFilter {
            options: Some(self.options.clone()),
            ..self.filter_header()
        }
    }

    /// The filter without its options (for deleting it, or for options
    /// encoded elsewhere).
    pub fn filter_header(&self) -> TcFilter {
        TcFilter {
            ifindex: self.ifindex,
            parent: PARENT_INGRESS,
            priority: self.prio,
            protocol: self.protocol,
            handle: 0,
            chain: (self.chain != 0).then_some(self.chain),
            kind: "flower".into(),
            options: None,
        }
    }
}

/// The EtherType class of a filter's protocol: its slot within a priority
/// level. All protocols (no `dl_type`), IPv4, IPv6, ARP, 802.1Q, 802.1ad,
/// MPLS, and one slot for any other EtherType.
#[must_use]
pub fn ethertype_class(protocol: u16) -> u16 {
    match protocol {
        ETH_P_ALL => 0,
        0x0800 => 1,
        ETH_IPV6 => 2,
        ETH_ARP => 3,
        ETH_8021Q => 4,
        crate::flow::ETH_8021AD => 5,
        0x8847 | 0x8848 => 6,
        _ => 7,
    }
}

/// The priority level of an OpenFlow priority: 65535 is level 0 (looked at
/// first), 0 the last level. Each of the [`PRIO_LEVELS`] levels holds a run
/// of 11 or 12 consecutive priorities.
#[must_use]
pub fn level(priority: u16) -> u16 {
    ((u32::from(u16::MAX - priority) * PRIO_LEVELS) >> 16) as u16
}

/// The OpenFlow priorities that share `priority`'s level.
#[must_use]
pub fn level_priorities(priority: u16) -> std::ops::RangeInclusive<u16> {
    let l = level(priority);
    let mut lo = priority;
    while lo > 0 && level(lo - 1) == l {
        lo -= 1;
    }
    let mut hi = priority;
    while hi < u16::MAX && level(hi + 1) == l {
        hi += 1;
    }
    lo..=hi
}

/// A flow's tc preference, from the flow alone: its OpenFlow priority's
/// level and its EtherType class. Adding or removing a flow never moves
/// another; a higher OpenFlow priority always gets a lower (earlier)
/// preference; flows of one level and class share a preference, which is
/// fine unless they overlap ([`check_preferences`]).
#[must_use]
pub fn preference(priority: u16, protocol: u16) -> u16 {
    PRIO_BASE + level(priority) * PRIO_CLASSES + ethertype_class(protocol)
}

/// What a flower filter cannot express about a table's preferences: two
/// flows of different priorities that overlap and share a preference
/// (flower looks at the filters of one preference in no order a flow can
/// set), and two EtherTypes of the "other" class at one preference (a tc
/// preference holds one protocol). `placed` is each flow's (port index,
/// preference).
///
/// # Errors
/// One per conflicting pair, naming both lines.
pub fn check_preferences(flows: &[Flow], placed: &[(u32, u16)]) -> Result<(), Vec<CompileError>> {
    let mut by_pref: HashMap<(u32, u32, u16), Vec<usize>> = HashMap::new();
    for (i, (f, (port, pref))) in flows.iter().zip(placed).enumerate() {
        by_pref.entry((*port, f.table, *pref)).or_default().push(i);
    }
    let mut errors = Vec::new();
    let mut groups: Vec<_> = by_pref.into_iter().collect();
    groups.sort();
    for ((_, table, pref), members) in groups {
        // Encoded once per flow: the pairs below compare bytes. (Encoding
        // per pair made this O(n²) encodings, 140 ms of a 10k-flow compile.)
        let keys: Vec<Vec<u8>> = members.iter().map(|&i| match_key(&flows[i])).collect();
        for (n, &a) in members.iter().enumerate() {
            for (m, &b) in members.iter().enumerate().skip(n + 1) {
                let (fa, fb) = (&flows[a], &flows[b]);
                let (pa, pb) = (
                    fa.protocol().unwrap_or(ETH_P_ALL),
                    fb.protocol().unwrap_or(ETH_P_ALL),
                );
                let why = if pa != pb {
                    format!(
                        "EtherTypes {pa:#06x} and {pb:#06x}: a tc preference holds one protocol"
                    )
                } else if keys[n] == keys[m] {
                    "the same match: one flow would replace the other".to_owned()
                } else if fa.priority != fb.priority && fa.matches.overlaps(&fb.matches) {
                    let r = level_priorities(fa.priority);
                    format!(
                        "priorities {} and {} overlap: Plexus maps priorities {}-{} onto one tc \
                         preference, where flower cannot order them; make them at least {} apart",
                        fa.priority,
                        fb.priority,
                        r.start(),
                        r.end(),
                        r.end() - r.start() + 1
                    )
                } else {
                    continue;
                };
                errors.push(CompileError {
                    line: fb.line,
                    message: format!(
                        "shares tc preference {pref} on {} table {table} with line {}: {why}",
                        fb.in_port, fa.line
                    ),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Compiles a whole table. Every flow is checked before the first is
/// returned, so nothing is installed from a table with an error.
///
/// # Errors
/// One error per flow that cannot be compiled.
pub fn compile(
    flows: &[Flow],
    ports: &PortMap,
    policy: Policy,
) -> Result<Vec<CompiledFlow>, Vec<CompileError>> {
    let mut out = Vec::with_capacity(flows.len());
    let mut errors = Vec::new();
    for (index, flow) in flows.iter().enumerate() {
        let prio = preference(flow.priority, flow.protocol().unwrap_or(ETH_P_ALL));
        match compile_flow(flow, ports, policy).and_then(|c| {
            let options = encode_options(flow, ports, policy, &c.cookie.to_bytes())?;
            let demoted_cookie = match policy {
                Policy::PreferHw => compile_flow(flow, ports, Policy::SwOnly)?.cookie,
                _ => c.cookie,
            };
            Ok(CompiledFlow {
                index,
                prio,
                options,
                key: match_key(flow),
                demoted_cookie,
                ..c
            })
        }) {
            Ok(c) => out.push(c),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let placed: Vec<(u32, u16)> = out.iter().map(|c| (c.ifindex, c.prio)).collect();
    check_preferences(flows, &placed)?;
    check_goto_depth(flows)?;
    Ok(out)
}

/// The kernel's `max_reclassify_loop` on the oldest kernels (it was raised
/// to 16 in Linux 5.13): a packet may take at most this many gotos before
/// tc drops it. Flower tables are held to it so that they behave the same
/// on every kernel.
pub const MAX_GOTOS: usize = 4;

/// Refuses a table in which a packet could take more than [`MAX_GOTOS`]
/// gotos (the longest chain of tables `goto_table` links).
///
/// # Errors
/// The line of a goto that goes too deep.
pub fn check_goto_depth(flows: &[Flow]) -> Result<(), Vec<CompileError>> {
    // Gotos only go to later tables, so depth is computed in table order.
    let mut tables: Vec<u32> = flows.iter().map(|f| f.table).collect();
    tables.sort_unstable();
    tables.dedup();
    let mut depth: HashMap<u32, usize> = HashMap::new();
    depth.insert(0, 0);
    let mut errors = Vec::new();
    for t in tables {
        let Some(&d) = depth.get(&t) else { continue };
        for f in flows.iter().filter(|f| f.table == t) {
            for a in &f.actions {
                if let Action::GotoTable(n) = a {
                    if d + 1 > MAX_GOTOS {
                        errors.push(CompileError {
                            line: f.line,
                            message: format!(
                                "goto_table:{n} is goto number {} on the way from table 0; tc drops \
                                 a packet after {MAX_GOTOS} (max_reclassify_loop on older kernels)",
                                d + 1
                            ),
                        });
                    }
                    let e = depth.entry(*n).or_insert(0);
                    *e = (*e).max(d + 1);
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Everything about one flow's filter but its preference and options.
fn compile_flow(
    flow: &Flow,
    ports: &PortMap,
    policy: Policy,
) -> Result<CompiledFlow, CompileError> {
    let err = |message: String| CompileError {
        line: flow.line,
        message,
    };
    let ifindex = ports.ifindex(&flow.in_port).ok_or_else(|| {
        err(format!(
            "in_port {}: no such netdev or representor",
            flow.in_port
        ))
    })?;
    // The digest covers what the filter does on this host: the flow, the
    // indexes its names resolved to, and the policy.
    let mut text = format!("{flow}|{}|{ifindex}", policy.name());
    for p in flow.outputs() {
        let i = ports
            .ifindex(p)
            .ok_or_else(|| err(format!("output:{p}: no such netdev or representor")))?;
        text.push_str(&format!("|{p}={i}"));
    }
    Ok(CompiledFlow {
        index: 0,
        ifindex,
        chain: flow.table,
        prio: 0,
        protocol: flow.protocol().unwrap_or(ETH_P_ALL),
        cookie: FlowCookie {
            priority: flow.priority,
            user: flow.cookie,
            digest: fnv1a32(text.as_bytes()),
        },
        options: Vec::new(),
        key: Vec::new(),
        demoted_cookie: FlowCookie {
            priority: flow.priority,
            user: flow.cookie,
            digest: 0,
        },
    })
}

/// Flower key attributes (`TCA_FLOWER_*`, `pkt_cls.h`).
#[allow(missing_docs)]
pub mod key {
    pub const ACT: u16 = 3;
    pub const ETH_DST: u16 = 4;
    pub const ETH_DST_MASK: u16 = 5;
    pub const ETH_SRC: u16 = 6;
    pub const ETH_SRC_MASK: u16 = 7;
    pub const ETH_TYPE: u16 = 8;
    pub const IP_PROTO: u16 = 9;
    pub const IPV4_SRC: u16 = 10;
    pub const IPV4_SRC_MASK: u16 = 11;
    pub const IPV4_DST: u16 = 12;
    pub const IPV4_DST_MASK: u16 = 13;
    pub const IPV6_SRC: u16 = 14;
    pub const IPV6_SRC_MASK: u16 = 15;
    pub const IPV6_DST: u16 = 16;
    pub const IPV6_DST_MASK: u16 = 17;
    pub const TCP_SRC: u16 = 18;
    pub const TCP_DST: u16 = 19;
    pub const UDP_SRC: u16 = 20;
    pub const UDP_DST: u16 = 21;
    pub const FLAGS: u16 = 22;
    pub const VLAN_ID: u16 = 23;
    pub const VLAN_PRIO: u16 = 24;
    pub const VLAN_ETH_TYPE: u16 = 25;
    pub const TCP_SRC_MASK: u16 = 35;
    pub const TCP_DST_MASK: u16 = 36;
    pub const UDP_SRC_MASK: u16 = 37;
    pub const UDP_DST_MASK: u16 = 38;
    pub const SCTP_SRC_MASK: u16 = 39;
    pub const SCTP_DST_MASK: u16 = 40;
    pub const SCTP_SRC: u16 = 41;
    pub const SCTP_DST: u16 = 42;
    pub const ICMPV4_CODE: u16 = 49;
    pub const ICMPV4_CODE_MASK: u16 = 50;
    pub const ICMPV4_TYPE: u16 = 51;
    pub const ICMPV4_TYPE_MASK: u16 = 52;
    pub const ICMPV6_CODE: u16 = 53;
    pub const ICMPV6_CODE_MASK: u16 = 54;
    pub const ICMPV6_TYPE: u16 = 55;
    pub const ICMPV6_TYPE_MASK: u16 = 56;
    pub const ARP_SIP: u16 = 57;
    pub const ARP_SIP_MASK: u16 = 58;
    pub const ARP_TIP: u16 = 59;
    pub const ARP_TIP_MASK: u16 = 60;
    pub const ARP_OP: u16 = 61;
    pub const ARP_OP_MASK: u16 = 62;
    pub const TCP_FLAGS: u16 = 71;
    pub const TCP_FLAGS_MASK: u16 = 72;
    pub const IP_TOS: u16 = 73;
    pub const IP_TOS_MASK: u16 = 74;
    pub const IP_TTL: u16 = 75;
    pub const IP_TTL_MASK: u16 = 76;
}

/// The `TCA_OPTIONS` payload of one flow's flower filter: keys, actions,
/// flags, EtherType, in the order iproute2 sends them.
///
/// Written in one pass with [`AttrWriter`] rather than through
/// netlink-packet-route's `TcFilterFlowerOption` emitter, which recomputes
/// nested lengths at every level and costs about 1.4 µs a filter, more than
/// the whole 1 M filters/s budget. The crate's flower types still check
/// every byte: the dump tests parse each encoded vector with them.
///
/// # Errors
/// A port that does not resolve, or actions tc cannot express (see
/// [`plan_actions`]).
pub fn encode_options(
    flow: &Flow,
    ports: &PortMap,
    policy: Policy,
    cookie: &[u8; 16],
) -> Result<Vec<u8>, CompileError> {
    let acts = plan_actions(flow, ports)?;
    let mut w = AttrWriter::with_capacity(160 + 96 * acts.len());
    write_keys(&mut w, flow);
    let n = acts.len();
    // TCA_FLOWER_ACT and each numbered action: no NLA_F_NESTED, as tc.
    w.nest(key::ACT, |w| {
        for (i, a) in acts.iter().enumerate() {
            write_action(w, i as u16 + 1, a, i + 1 == n, cookie);
        }
    });
    w.put_u32(key::FLAGS, policy.flower_flags());
    if let Some(p) = flow.protocol() {
        w.put_u16_be(key::ETH_TYPE, p);
    }
    Ok(w.into_bytes())
}

/// A flow's match as flower keys, without actions or flags: two filters of
/// one preference with the same key are the same entry of flower's hash
/// table (adding the second is `EEXIST`), so one can only replace the
/// other. Built by the encoder itself, so a flow decoded from a dump gives
/// the key of the flow it was compiled from.
#[must_use]
pub fn match_key(flow: &Flow) -> Vec<u8> {
    let mut w = AttrWriter::with_capacity(160);
    write_keys(&mut w, flow);
    if let Some(p) = flow.protocol() {
        w.put_u16_be(key::ETH_TYPE, p);
    }
    w.into_bytes()
}

fn write_keys(w: &mut AttrWriter, flow: &Flow) {
    let m = &flow.matches;
    if let Some(Masked { value, mask }) = m.dl_dst {
        w.put(key::ETH_DST, &value).put(key::ETH_DST_MASK, &mask);
    }
    if let Some(Masked { value, mask }) = m.dl_src {
        w.put(key::ETH_SRC, &value).put(key::ETH_SRC_MASK, &mask);
    }
    if let Some(VlanMatch::Tagged { vid, pcp }) = m.vlan {
        if let Some(v) = vid {
            w.put_u16(key::VLAN_ID, v);
        }
        if let Some(p) = pcp {
            w.put_u8(key::VLAN_PRIO, p);
        }
        if let Some(t) = m.dl_type {
            w.put_u16_be(key::VLAN_ETH_TYPE, t);
        }
    }
    let ip = |w: &mut AttrWriter, k: u16, km: u16, m: Masked<IpAddr>| match (m.value, m.mask) {
        (IpAddr::V4(v), IpAddr::V4(mk)) => {
            w.put(k, &v.octets()).put(km, &mk.octets());
        }
        (IpAddr::V6(v), IpAddr::V6(mk)) => {
            w.put(k, &v.octets()).put(km, &mk.octets());
        }
        _ => unreachable!("the parser keeps address and mask of one family"),
    };
    let v6 = m.dl_type == Some(ETH_IPV6);
    if m.dl_type == Some(ETH_ARP) {
        if let Some(op) = m.nw_proto {
            w.put_u8(key::ARP_OP, op).put_u8(key::ARP_OP_MASK, 0xff);
        }
        if let Some(a) = m.nw_src {
            ip(w, key::ARP_SIP, key::ARP_SIP_MASK, a);
        }
        if let Some(a) = m.nw_dst {
            ip(w, key::ARP_TIP, key::ARP_TIP_MASK, a);
        }
        return;
    }
    if let Some(p) = m.nw_proto {
        w.put_u8(key::IP_PROTO, p);
    }
    if let Some(a) = m.nw_src {
        let (k, km) = if v6 {
            (key::IPV6_SRC, key::IPV6_SRC_MASK)
        } else {
            (key::IPV4_SRC, key::IPV4_SRC_MASK)
        };
        ip(w, k, km, a);
    }
    if let Some(a) = m.nw_dst {
        let (k, km) = if v6 {
            (key::IPV6_DST, key::IPV6_DST_MASK)
        } else {
            (key::IPV4_DST, key::IPV4_DST_MASK)
        };
        ip(w, k, km, a);
    }
    if let Some(t) = m.nw_tos {
        // OpenFlow's nw_tos is the DSCP part of the byte.
        w.put_u8(key::IP_TOS, t).put_u8(key::IP_TOS_MASK, 0xfc);
    }
    if let Some(t) = m.nw_ttl {
        w.put_u8(key::IP_TTL, t).put_u8(key::IP_TTL_MASK, 0xff);
    }
    let ports = match m.nw_proto {
        Some(IPPROTO_TCP) => Some((
            (key::TCP_SRC, key::TCP_SRC_MASK),
            (key::TCP_DST, key::TCP_DST_MASK),
        )),
        Some(IPPROTO_UDP) => Some((
            (key::UDP_SRC, key::UDP_SRC_MASK),
            (key::UDP_DST, key::UDP_DST_MASK),
        )),
        Some(IPPROTO_SCTP) => Some((
            (key::SCTP_SRC, key::SCTP_SRC_MASK),
            (key::SCTP_DST, key::SCTP_DST_MASK),
        )),
        _ => None,
    };
    if let Some((src, dst)) = ports {
        for ((k, km), port) in [(src, m.tp_src), (dst, m.tp_dst)] {
            if let Some(Masked { value, mask }) = port {
                w.put_u16_be(k, value);
                // iproute2 sends a port mask only when it is not all ones.
                if mask != 0xffff {
                    w.put_u16_be(km, mask);
                }
            }
        }
    }
    if let Some(Masked { value, mask }) = m.tcp_flags {
        w.put_u16_be(key::TCP_FLAGS, value)
            .put_u16_be(key::TCP_FLAGS_MASK, mask);
    }
    let ((t, tm), (c, cm)) = if v6 {
        (
            (key::ICMPV6_TYPE, key::ICMPV6_TYPE_MASK),
            (key::ICMPV6_CODE, key::ICMPV6_CODE_MASK),
        )
    } else {
        (
            (key::ICMPV4_TYPE, key::ICMPV4_TYPE_MASK),
            (key::ICMPV4_CODE, key::ICMPV4_CODE_MASK),
        )
    };
    if let Some(v) = m.icmp_type {
        w.put_u8(t, v).put_u8(tm, 0xff);
    }
    if let Some(v) = m.icmp_code {
        w.put_u8(c, v).put_u8(cm, 0xff);
    }
}

/// What we know of the packet's outer VLAN tag at one point of the action
/// list.
#[derive(Debug, Clone, Copy)]
enum Tag {
    Absent,
    Present(Option<u16>),
    Unknown,
}

/// A tc action before it gets its place and verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcAct {
    /// `mirred egress redirect|mirror dev IFINDEX`.
    Mirred {
        /// Redirect (the last output) or mirror.
        redirect: bool,
        /// Target device.
        ifindex: u32,
    },
    /// `gact` with this verdict (drop, goto chain).
    Gact(i32),
    /// `vlan pop`.
    VlanPop,
    /// `vlan push`.
    VlanPush {
        /// TPID.
        tpid: u16,
        /// VID.
        vid: u16,
        /// PCP.
        pcp: Option<u8>,
    },
    /// `vlan modify`.
    VlanModify {
        /// VID.
        vid: u16,
        /// PCP.
        pcp: Option<u8>,
    },
    /// `pedit ex munge eth dst|src set MAC`: (offset 0 = dst, 6 = src, MAC).
    Pedit(Vec<(usize, Mac)>),
}

/// The tc actions of a flow: the last `output` redirects (`mirred egress
/// redirect`, `TC_ACT_STOLEN`), earlier ones mirror (`TC_ACT_PIPE`); a
/// list that ends without output, drop or goto drops, as OpenFlow does;
/// consecutive MAC rewrites share one `pedit`; `push_vlan` takes the
/// `mod_vlan_vid`/`mod_vlan_pcp` that follow it.
///
/// `mod_vlan_vid` without `push_vlan` modifies a tag, or pushes one on an
/// untagged packet (OpenFlow 1.0). tc has to be told which when the filter
/// is built, so the flow must say whether the packet is tagged (`dl_vlan=N`
/// or `dl_vlan=0xffff`, or `dl_type` alone, which matches untagged packets
/// only). `vlan modify` rewrites VID and PCP together, so
/// `mod_vlan_pcp` alone needs the VID from `dl_vlan=N`.
///
/// # Errors
/// The cases above, an unresolved port, more than [`MAX_ACTIONS`].
pub fn plan_actions(flow: &Flow, ports: &PortMap) -> Result<Vec<TcAct>, CompileError> {
    let err = |message: String| CompileError {
        line: flow.line,
        message,
    };
    let mut tag = match flow.matches.vlan {
        Some(VlanMatch::Untagged) => Tag::Absent,
        Some(VlanMatch::Tagged { vid, .. }) => Tag::Present(vid),
        // tc's protocol: a filter for an EtherType sees untagged packets
        // only.
        None if flow.matches.dl_type.is_some() => Tag::Absent,
        None => Tag::Unknown,
    };
    let a = &flow.actions;
    let mut out: Vec<TcAct> = Vec::with_capacity(a.len() + 1);
    let mut i = 0;
    while i < a.len() {
        let last = i + 1 == a.len();
        match &a[i] {
            Action::Output(p) => {
                let ifindex = ports
                    .ifindex(p)
                    .ok_or_else(|| err(format!("output:{p}: no such netdev or representor")))?;
                out.push(TcAct::Mirred {
                    redirect: last,
                    ifindex,
                });
            }
            Action::Drop => out.push(TcAct::Gact(verdict::SHOT)),
            Action::GotoTable(t) => out.push(TcAct::Gact(verdict::GOTO_CHAIN | *t as i32)),
            Action::StripVlan => {
                out.push(TcAct::VlanPop);
                tag = Tag::Absent;
            }
            Action::PushVlan(tpid) => {
                let (vid, pcp, n) = vlan_sets(&a[i + 1..]);
                out.push(TcAct::VlanPush {
                    tpid: *tpid,
                    vid: vid.unwrap_or(0),
                    pcp,
                });
                tag = Tag::Present(Some(vid.unwrap_or(0)));
                i += n;
            }
            Action::SetVlanVid(_) | Action::SetVlanPcp(_) => {
                let (vid, pcp, n) = vlan_sets(&a[i..]);
                match tag {
                    Tag::Absent => {
                        out.push(TcAct::VlanPush {
                            tpid: ETH_8021Q,
                            vid: vid.unwrap_or(0),
                            pcp,
                        });
                        tag = Tag::Present(Some(vid.unwrap_or(0)));
                    }
                    Tag::Present(known) => {
                        let vid = vid.or(known).ok_or_else(|| {
                            err("mod_vlan_pcp without mod_vlan_vid needs dl_vlan=N in the match: tc's vlan modify rewrites VID and PCP together".into())
                        })?;
                        out.push(TcAct::VlanModify { vid, pcp });
                        tag = Tag::Present(Some(vid));
                    }
                    Tag::Unknown => {
                        return Err(err(format!(
                            "{} modifies a tag or pushes one depending on the packet; tc must know which: match dl_vlan=N (tagged) or dl_vlan=0xffff (untagged), or push_vlan first",
                            a[i]
                        )));
                    }
                }
                i += n - 1;
            }
            Action::SetDlSrc(_) | Action::SetDlDst(_) => {
                let mut fields = Vec::new();
                while let Some(Action::SetDlSrc(m) | Action::SetDlDst(m)) = a.get(i) {
                    let offset = if matches!(a[i], Action::SetDlDst(_)) {
                        0
                    } else {
                        6
                    };
                    fields.push((offset, *m));
                    i += 1;
                }
                out.push(TcAct::Pedit(fields));
                continue;
            }
        }
        i += 1;
    }
    if !matches!(
        a.last(),
        Some(Action::Output(_) | Action::Drop | Action::GotoTable(_))
    ) {
        out.push(TcAct::Gact(verdict::SHOT));
    }
    if out.len() > MAX_ACTIONS {
        return Err(err(format!(
            "{} tc actions; a flower filter holds at most {MAX_ACTIONS}",
            out.len()
        )));
    }
    Ok(out)
}

/// The `mod_vlan_vid`/`mod_vlan_pcp` at the start of `rest`: (vid, pcp,
/// how many actions they were).
fn vlan_sets(rest: &[Action]) -> (Option<u16>, Option<u8>, usize) {
    let (mut vid, mut pcp, mut n) = (None, None, 0);
    for a in rest {
        match a {
            Action::SetVlanVid(v) => vid = Some(*v),
            Action::SetVlanPcp(p) => pcp = Some(*p),
            _ => break,
        }
        n += 1;
    }
    (vid, pcp, n)
}

/// `struct tc_gen` with only the verdict set (a new, anonymous action),
/// followed by up to two more `u32`s (`tc_mirred`, `tc_vlan`): 20, 24 or
/// 28 bytes, without an allocation.
fn tc_gen(action: i32, extra: &[i32]) -> ([u8; 28], usize) {
    let mut b = [0u8; 28]; // index, capab, action, refcnt, bindcnt, ...
    b[8..12].copy_from_slice(&action.to_ne_bytes());
    for (i, x) in extra.iter().enumerate() {
        b[20 + 4 * i..24 + 4 * i].copy_from_slice(&x.to_ne_bytes());
    }
    (b, 20 + 4 * extra.len())
}

/// The 32-bit pedit keys that set a MAC at byte `offset` of the Ethernet
/// header: one key per 32-bit word the six bytes touch, `val` holding the
/// new bytes and `mask` the bytes to keep, both in packet byte order (how
/// iproute2's `pedit ex munge eth dst|src set` splits them).
pub(crate) fn pedit_mac_keys(offset: usize, mac: &Mac) -> Vec<PeditKey> {
    let mut keys = Vec::new();
    let mut pos = offset;
    while pos < offset + 6 {
        let word = pos & !3;
        let mut val = [0u8; 4];
        let mut mask = [0xffu8; 4];
        let end = (word + 4).min(offset + 6);
        for b in pos..end {
            val[b - word] = mac[b - offset];
            mask[b - word] = 0;
        }
        keys.push(PeditKey {
            mask,
            val,
            off: word as u32,
        });
        pos = end;
    }
    keys
}

/// `struct tc_pedit_key` as far as we use it (`at`, `offmask`, `shift`
/// stay zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeditKey {
    pub mask: [u8; 4],
    pub val: [u8; 4],
    pub off: u32,
}

/// One numbered action: `TCA_ACT_KIND`, `TCA_ACT_OPTIONS` (nested, with
/// `NLA_F_NESTED` as tc sets it), `TCA_ACT_COOKIE`, `TCA_ACT_FLAGS`.
fn write_action(w: &mut AttrWriter, tab: u16, a: &TcAct, last: bool, cookie: &[u8; 16]) {
    let pipe_or = |v: i32| if last { v } else { verdict::PIPE };
    let kind = match a {
        TcAct::Mirred { .. } => "mirred",
        TcAct::Gact(_) => "gact",
        TcAct::VlanPop | TcAct::VlanPush { .. } | TcAct::VlanModify { .. } => "vlan",
        TcAct::Pedit(_) => "pedit",
    };
    w.nest(tab, |w| {
        w.put_str(act::KIND, kind);
        w.nest(act::OPTIONS | act::NESTED, |w| match a {
            TcAct::Mirred { redirect, ifindex } => {
                // struct tc_mirred: tc_gen, eaction, ifindex.
                let eaction = if *redirect {
                    act::EGRESS_REDIR
                } else {
                    act::EGRESS_MIRROR
                };
                let verdict = if last { verdict::STOLEN } else { verdict::PIPE };
                let (b, n) = tc_gen(verdict, &[eaction, *ifindex as i32]);
                w.put(act::PARMS, &b[..n]);
            }
            TcAct::Gact(v) => {
                let (b, n) = tc_gen(pipe_or(*v), &[]);
                w.put(act::PARMS, &b[..n]);
            }
            TcAct::VlanPop | TcAct::VlanPush { .. } | TcAct::VlanModify { .. } => {
                let (v_action, vid, tpid, pcp) = match *a {
                    TcAct::VlanPush { tpid, vid, pcp } => {
                        (act::VLAN_PUSH, Some(vid), Some(tpid), pcp)
                    }
                    TcAct::VlanModify { vid, pcp } => (act::VLAN_MODIFY, Some(vid), None, pcp),
                    _ => (act::VLAN_POP, None, None, None),
                };
                let (b, n) = tc_gen(pipe_or(verdict::PIPE), &[v_action]);
                w.put(act::PARMS, &b[..n]);
                if let Some(v) = vid {
                    w.put_u16(act::VLAN_ID, v);
                }
                if let Some(t) = tpid {
                    w.put_u16_be(act::VLAN_PROTOCOL, t);
                }
                // A push without a priority pushes priority 0, and the
                // kernel dumps 0 either way: leave it out, so that what we
                // send is what a dump decodes back to (see dump.rs).
                if let Some(p) = pcp.filter(|p| v_action != act::VLAN_PUSH || *p != 0) {
                    w.put_u8(act::VLAN_PRIORITY, p);
                }
            }
            TcAct::Pedit(fields) => {
                let keys: Vec<PeditKey> = fields
                    .iter()
                    .flat_map(|(off, mac)| pedit_mac_keys(*off, mac))
                    .collect();
                // struct tc_pedit_sel: tc_gen, nkeys, flags, 2 pad, keys[].
                let mut parms = Vec::with_capacity(24 + 24 * keys.len());
                parms.extend_from_slice(&tc_gen(pipe_or(verdict::PIPE), &[]).0[..20]);
                parms.extend_from_slice(&[keys.len() as u8, 0, 0, 0]);
                for k in &keys {
                    parms.extend_from_slice(&k.mask);
                    parms.extend_from_slice(&k.val);
                    parms.extend_from_slice(&k.off.to_ne_bytes());
                    parms.extend_from_slice(&[0u8; 12]); // at, offmask, shift
                }
                w.put(act::PEDIT_PARMS_EX, &parms);
                w.nest(act::PEDIT_KEYS_EX | act::NESTED, |w| {
                    for _ in &keys {
                        w.nest(act::PEDIT_KEY_EX | act::NESTED, |w| {
                            w.put_u16(act::PEDIT_KEY_EX_HTYPE, act::PEDIT_HTYPE_ETH);
                            w.put_u16(act::PEDIT_KEY_EX_CMD, act::PEDIT_CMD_SET);
                        });
                    }
                });
            }
        });
        w.put(act::COOKIE, cookie);
        // struct nla_bitfield32 { value, selector }.
        let mut flags = [0u8; 8];
        flags[..4].copy_from_slice(&act::NO_PERCPU_STATS.to_ne_bytes());
        flags[4..].copy_from_slice(&act::NO_PERCPU_STATS.to_ne_bytes());
        w.put(act::FLAGS, &flags);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_flow, parse_flows};

    fn ports() -> PortMap {
        let mut p = PortMap::new();
        p.insert("p0", 2);
        p.insert("rep1", 3);
        p.alias("pf0vf1", "rep1");
        p
    }

    #[test]
    fn cookie_round_trips_and_marks_ours() {
        let c = FlowCookie {
            priority: 100,
            user: 0xdead_beef_0000_0001,
            digest: 0x1234_5678,
        };
        let b = c.to_bytes();
        assert_eq!(&b[..2], b"PX");
        assert_eq!(FlowCookie::from_bytes(&b), Some(c));
        let mut other = b;
        other[0] = 0;
        assert_eq!(FlowCookie::from_bytes(&other), None);
        assert_eq!(FlowCookie::from_bytes(&b[..15]), None);
    }

    #[test]
    fn preferences_depend_on_the_flow_alone() {
        // The extremes of OpenFlow's range, and the order kept.
        assert_eq!(preference(65535, ETH_P_ALL), PRIO_BASE);
        assert_eq!(
            preference(0, 0x1234),
            PRIO_BASE + (PRIO_LEVELS as u16 - 1) * PRIO_CLASSES + 7
        );
        assert!(preference(0, 0x1234) < PRIO_END);
        for p in 0..u16::MAX {
            assert!(level(p + 1) <= level(p), "{p}");
        }
        // Each level holds 11 or 12 priorities, every priority one level.
        let mut count = vec![0usize; PRIO_LEVELS as usize];
        for p in 0..=u16::MAX {
            count[usize::from(level(p))] += 1;
        }
        let widths: std::collections::BTreeSet<usize> = count.into_iter().collect();
        assert_eq!(widths, [11, 12].into());
        assert_eq!(level_priorities(100), 93..=103);
        assert_eq!(level_priorities(u16::MAX), 65524..=65535);
        // One slot per EtherType class within a level.
        let flows = parse_flows(
            "priority=10,in_port=p0,actions=drop\n\
             priority=200,in_port=p0,ip,actions=drop\n\
             priority=200,in_port=p0,arp,actions=drop\n\
             priority=200,in_port=rep1,ip,nw_src=10.0.0.1,actions=drop\n",
        )
        .unwrap();
        let prefs: Vec<u16> = flows
            .iter()
            .map(|f| preference(f.priority, f.protocol().unwrap_or(ETH_P_ALL)))
            .collect();
        let l200 = PRIO_BASE + level(200) * PRIO_CLASSES;
        assert_eq!(
            prefs,
            [
                PRIO_BASE + level(10) * PRIO_CLASSES,
                l200 + 1,
                l200 + 3,
                l200 + 1
            ]
        );
        // Adding a flow changes no other flow's preference.
        let more = parse_flows(
            "priority=10,in_port=p0,actions=drop\n\
             priority=300,in_port=p0,tcp,actions=drop\n",
        )
        .unwrap();
        assert_eq!(preference(more[0].priority, ETH_P_ALL), prefs[0], "stable");
    }

    #[test]
    fn overlapping_flows_one_preference_cannot_order_are_refused() {
        let p = ports();
        // 100 and 101 share a level; these two overlap (10.0.0.1 is in
        // 10.0.0.0/8), so flower could not say which wins.
        let flows = parse_flows(
            "priority=100,in_port=pf0vf1,ip,nw_dst=10.0.0.0/8,actions=drop\n\
             priority=101,in_port=pf0vf1,ip,nw_dst=10.0.0.1,actions=output:p0\n",
        )
        .unwrap();
        let e = compile(&flows, &p, Policy::PreferHw).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, 2);
        assert!(e[0].message.contains("line 1"), "{e:?}");
        assert!(e[0].message.contains("93-103"), "{e:?}");
        // Disjoint ones share a preference without harm; 12 apart is
        // another level.
        for ok in [
            "priority=100,in_port=pf0vf1,ip,nw_dst=10.0.0.0/8,actions=drop\n\
             priority=101,in_port=pf0vf1,ip,nw_dst=11.0.0.1,actions=output:p0\n",
            "priority=100,in_port=pf0vf1,ip,nw_dst=10.0.0.0/8,actions=drop\n\
             priority=104,in_port=pf0vf1,ip,nw_dst=10.0.0.1,actions=output:p0\n",
            "priority=100,in_port=pf0vf1,ip,nw_dst=10.0.0.0/8,actions=drop\n\
             priority=101,in_port=p0,ip,nw_dst=10.0.0.1,actions=output:pf0vf1\n",
        ] {
            compile(&parse_flows(ok).unwrap(), &p, Policy::PreferHw).unwrap();
        }
        // Two "other" EtherTypes at one level.
        let e = compile(
            &parse_flows(
                "priority=100,in_port=p0,dl_type=0x88cc,actions=drop\n\
                 priority=100,in_port=p0,dl_type=0x88f7,actions=drop\n",
            )
            .unwrap(),
            &p,
            Policy::PreferHw,
        )
        .unwrap_err();
        assert!(e[0].message.contains("one protocol"), "{e:?}");
    }

    #[test]
    fn goto_depth_is_held_to_the_oldest_kernels_limit() {
        let p = ports();
        let chain = |n: u32| {
            (0..n)
                .map(|t| format!("table={t},in_port=p0,actions=goto_table:{}\n", t + 1))
                .collect::<String>()
                + &format!("table={n},in_port=p0,actions=drop\n")
        };
        compile(&parse_flows(&chain(4)).unwrap(), &p, Policy::PreferHw).unwrap();
        let e = compile(&parse_flows(&chain(5)).unwrap(), &p, Policy::PreferHw).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].message.contains("goto number 5"), "{e:?}");
    }

    #[test]
    fn digest_changes_with_what_the_filter_does() {
        let p = ports();
        let c = |s: &str, pol| compile(&[parse_flow(s).unwrap()], &p, pol).unwrap()[0].cookie;
        let a = c("in_port=pf0vf1,ip,actions=output:p0", Policy::PreferHw);
        assert_eq!(
            a,
            c("in_port=pf0vf1,ip,actions=output:p0", Policy::PreferHw)
        );
        assert_ne!(
            a.digest,
            c("in_port=pf0vf1,ip,actions=drop", Policy::PreferHw).digest
        );
        assert_ne!(
            a.digest,
            c("in_port=pf0vf1,ip,actions=output:p0", Policy::SwOnly).digest
        );
        let mut moved = ports();
        moved.insert("p0", 9);
        let f = parse_flow("in_port=pf0vf1,ip,actions=output:p0").unwrap();
        let b = compile(&[f], &moved, Policy::PreferHw).unwrap()[0].cookie;
        assert_ne!(
            a.digest, b.digest,
            "an output port with a new ifindex is a new filter"
        );
    }

    #[test]
    fn vlan_rewrites_need_to_know_the_tag() {
        let p = ports();
        let e = |s: &str| {
            compile(&[parse_flow(s).unwrap()], &p, Policy::PreferHw).unwrap_err()[0]
                .message
                .clone()
        };
        assert!(
            e("in_port=p0,actions=mod_vlan_vid:5,output:rep1")
                .contains("dl_vlan=N (tagged) or dl_vlan=0xffff")
        );
        assert!(
            e("in_port=p0,dl_vlan_pcp=3,actions=mod_vlan_pcp:5,output:rep1")
                .contains("needs dl_vlan=N")
        );
        assert!(e("in_port=p0,actions=output:nope").contains("output:nope: no such netdev"));
        assert!(e("in_port=nope,actions=drop").contains("in_port nope"));
        for ok in [
            "in_port=p0,dl_vlan=5,actions=mod_vlan_pcp:5,output:rep1",
            "in_port=p0,dl_vlan=0xffff,ip,actions=mod_vlan_vid:5,output:rep1",
            "in_port=p0,actions=push_vlan:0x8100,mod_vlan_vid:5,output:rep1",
        ] {
            compile(&[parse_flow(ok).unwrap()], &p, Policy::PreferHw).unwrap();
        }
    }

    #[test]
    fn push_vlan_without_vid_keeps_the_next_action() {
        let f = parse_flow("in_port=p0,actions=push_vlan:0x8100,output:rep1").unwrap();
        assert_eq!(
            plan_actions(&f, &ports()).unwrap(),
            [
                TcAct::VlanPush {
                    tpid: 0x8100,
                    vid: 0,
                    pcp: None
                },
                TcAct::Mirred {
                    redirect: true,
                    ifindex: 3
                },
            ]
        );
        let f = parse_flow(
            "in_port=p0,dl_vlan=4,actions=mod_vlan_pcp:1,mod_vlan_vid:9,strip_vlan,output:rep1",
        )
        .unwrap();
        assert_eq!(
            plan_actions(&f, &ports()).unwrap(),
            [
                TcAct::VlanModify {
                    vid: 9,
                    pcp: Some(1)
                },
                TcAct::VlanPop,
                TcAct::Mirred {
                    redirect: true,
                    ifindex: 3
                },
            ]
        );
    }

    #[test]
    fn pedit_keys_cover_each_word_a_mac_touches() {
        let m = [1, 2, 3, 4, 5, 6];
        let dst = pedit_mac_keys(0, &m);
        assert_eq!(dst.len(), 2);
        assert_eq!(
            (dst[0].off, dst[0].val, dst[0].mask),
            (0, [1, 2, 3, 4], [0; 4])
        );
        assert_eq!(
            (dst[1].off, dst[1].val, dst[1].mask),
            (4, [5, 6, 0, 0], [0, 0, 0xff, 0xff])
        );
        let src = pedit_mac_keys(6, &m);
        assert_eq!(
            (src[0].off, src[0].val, src[0].mask),
            (4, [0, 0, 1, 2], [0xff, 0xff, 0, 0])
        );
        assert_eq!(
            (src[1].off, src[1].val, src[1].mask),
            (8, [3, 4, 5, 6], [0; 4])
        );
    }
}
