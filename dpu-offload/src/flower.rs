//! The tc-flower back end's compiler: a flow table in, one flower filter per
//! flow out, as netlink requests.
//!
//! Owns the mapping of the flow language onto tc (see
//! `tc-flower-offload.md` §1.2–1.4 and §3): the filter goes on the clsact
//! ingress of `in_port`; `table` is the tc chain; OpenFlow priorities
//! (higher wins) become tc preferences (lower wins) in Plexus's own range,
//! one per (priority, EtherType) because a tc priority holds filters of one
//! protocol only; keys use netlink-packet-route's flower types and actions
//! are `mirred` (typed) and `gact`, `vlan`, `pedit` (hand-encoded, the crate
//! has no types for them). Every action carries the flow's [`FlowCookie`]
//! in `TCA_ACT_COOKIE` and `TCA_ACT_FLAGS_NO_PERCPU_STATS`, as OVS does.
//!
//! The attribute order is the one `tc filter add ... flower` sends for the
//! same rule written in the order of `tests/fixtures/flower/capture.sh`,
//! so requests compare byte for byte with iproute2's.
//!
//! Pure: no sockets, no sysfs. Ports come resolved in a [`PortMap`].

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use netlink_packet_core::{DefaultNla, Emitable};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirrorOption, TcActionOption,
    TcActionType, TcFilterFlowerOption as K, TcMirror, TcMirrorActionType,
};
use plexus_netlink::tc::{ETH_P_ALL, PARENT_INGRESS, TcFilter};

use crate::flow::{
    Action, ETH_8021Q, ETH_ARP, ETH_IPV6, Flow, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Mac,
    Masked, VlanMatch,
};

/// The first tc preference Plexus uses; flows take `PRIO_BASE..PRIO_BASE +
/// PRIO_SPAN` on every port, so other agents (Cilium uses 1, kernel-chosen
/// preferences start at 49152) keep theirs.
pub const PRIO_BASE: u16 = 0x2000;
/// How many preferences Plexus owns.
pub const PRIO_SPAN: u16 = 0x2000;
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
    /// `TCA_ACT_FLAGS`.
    pub const FLAGS: u16 = 7;
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
    by_name: HashMap<String, u32>,
    names: HashMap<u32, String>,
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
}

impl CompiledFlow {
    /// The filter to add.
    pub fn filter(&self) -> TcFilter {
        TcFilter {
            ifindex: self.ifindex,
            parent: PARENT_INGRESS,
            priority: self.prio,
            protocol: self.protocol,
            handle: 0,
            chain: (self.chain != 0).then_some(self.chain),
            kind: "flower".into(),
            options: Some(self.options.clone()),
        }
    }
}

/// tc preferences for a table: one per distinct (priority, protocol),
/// highest OpenFlow priority first, from [`PRIO_BASE`].
///
/// # Errors
/// More distinct pairs than [`PRIO_SPAN`].
pub fn allocate_prios(flows: &[Flow]) -> Result<Vec<u16>, CompileError> {
    let key = |f: &Flow| {
        (
            std::cmp::Reverse(f.priority),
            f.protocol().unwrap_or(ETH_P_ALL),
        )
    };
    let distinct: BTreeSet<_> = flows.iter().map(key).collect();
    if distinct.len() > usize::from(PRIO_SPAN) {
        return Err(CompileError {
            line: 0,
            message: format!(
                "{} distinct (priority, EtherType) pairs; tc-flower gives Plexus {PRIO_SPAN} preferences",
                distinct.len()
            ),
        });
    }
    let rank: HashMap<_, u16> = distinct
        .into_iter()
        .enumerate()
        .map(|(i, k)| (k, PRIO_BASE + i as u16))
        .collect();
    Ok(flows.iter().map(|f| rank[&key(f)]).collect())
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
    let prios = allocate_prios(flows).map_err(|e| vec![e])?;
    let mut out = Vec::with_capacity(flows.len());
    let mut errors = Vec::new();
    for (index, (flow, prio)) in flows.iter().zip(prios).enumerate() {
        match compile_flow(flow, ports, policy).and_then(|c| {
            let options = encode(&flower_options(flow, ports, policy, &c.cookie.to_bytes())?);
            Ok(CompiledFlow {
                index,
                prio,
                options,
                ..c
            })
        }) {
            Ok(c) => out.push(c),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
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
    })
}

/// Encodes flower options as `TCA_OPTIONS`' payload.
pub fn encode(options: &[K]) -> Vec<u8> {
    let mut buf = vec![0u8; options.buffer_len()];
    options.emit(&mut buf);
    buf
}

/// The flower options (keys, actions, flags, EtherType) of one flow.
///
/// # Errors
/// A port that does not resolve, or actions tc cannot express (see
/// [`actions`]).
pub fn flower_options(
    flow: &Flow,
    ports: &PortMap,
    policy: Policy,
    cookie: &[u8; 16],
) -> Result<Vec<K>, CompileError> {
    let m = &flow.matches;
    let mut o = Vec::new();
    if let Some(Masked { value, mask }) = m.dl_dst {
        o.extend([K::EthDst(value), K::EthDstMask(mask)]);
    }
    if let Some(Masked { value, mask }) = m.dl_src {
        o.extend([K::EthSrc(value), K::EthSrcMask(mask)]);
    }
    if let Some(VlanMatch::Tagged { vid, pcp }) = m.vlan {
        if let Some(v) = vid {
            o.push(K::VlanId(v));
        }
        if let Some(p) = pcp {
            o.push(K::VlanPrio(p));
        }
        if let Some(t) = m.dl_type {
            o.push(K::VlanEthType(t));
        }
    }
    if m.dl_type == Some(ETH_ARP) {
        if let Some(op) = m.nw_proto {
            o.extend([K::ArpOp(op), K::ArpOpMask(0xff)]);
        }
        if let Some(Masked {
            value: IpAddr::V4(v),
            mask: IpAddr::V4(mk),
        }) = m.nw_src
        {
            o.extend([K::ArpSip(v), K::ArpSipMask(mk)]);
        }
        if let Some(Masked {
            value: IpAddr::V4(v),
            mask: IpAddr::V4(mk),
        }) = m.nw_dst
        {
            o.extend([K::ArpTip(v), K::ArpTipMask(mk)]);
        }
    } else {
        if let Some(p) = m.nw_proto {
            o.push(K::IpProto(p));
        }
        for (src, ip) in [(true, m.nw_src), (false, m.nw_dst)] {
            match ip {
                Some(Masked {
                    value: IpAddr::V4(v),
                    mask: IpAddr::V4(mk),
                }) if src => o.extend([K::Ipv4Src(v), K::Ipv4SrcMask(mk)]),
                Some(Masked {
                    value: IpAddr::V4(v),
                    mask: IpAddr::V4(mk),
                }) => o.extend([K::Ipv4Dst(v), K::Ipv4DstMask(mk)]),
                Some(Masked {
                    value: IpAddr::V6(v),
                    mask: IpAddr::V6(mk),
                }) if src => o.extend([K::Ipv6Src(v), K::Ipv6SrcMask(mk)]),
                Some(Masked {
                    value: IpAddr::V6(v),
                    mask: IpAddr::V6(mk),
                }) => o.extend([K::Ipv6Dst(v), K::Ipv6DstMask(mk)]),
                _ => {}
            }
        }
        if let Some(t) = m.nw_tos {
            // OpenFlow's nw_tos is the DSCP part of the byte.
            o.extend([K::IpTos(t), K::IpTosMask(0xfc)]);
        }
        if let Some(t) = m.nw_ttl {
            o.extend([K::IpTtl(t), K::IpTtlMask(0xff)]);
        }
        let proto = m.nw_proto;
        for (src, port) in [(true, m.tp_src), (false, m.tp_dst)] {
            let Some(Masked { value, mask }) = port else {
                continue;
            };
            let (key, key_mask): (PortKey, PortKey) = match (proto, src) {
                (Some(IPPROTO_TCP), true) => (K::TcpSrc, K::TcpSrcMask),
                (Some(IPPROTO_TCP), false) => (K::TcpDst, K::TcpDstMask),
                (Some(IPPROTO_UDP), true) => (K::UdpSrc, K::UdpSrcMask),
                (Some(IPPROTO_UDP), false) => (K::UdpDst, K::UdpDstMask),
                (Some(IPPROTO_SCTP), true) => (K::SctpSrc, K::SctpSrcMask),
                (Some(IPPROTO_SCTP), false) => (K::SctpDst, K::SctpDstMask),
                _ => unreachable!("the parser requires tcp, udp or sctp for ports"),
            };
            o.push(key(value));
            // iproute2 sends a port mask only when it is not all ones.
            if mask != 0xffff {
                o.push(key_mask(mask));
            }
        }
        if let Some(Masked { value, mask }) = m.tcp_flags {
            o.extend([K::TcpFlags(value), K::TcpFlagsMask(mask)]);
        }
        let v6 = m.dl_type == Some(ETH_IPV6);
        if let Some(t) = m.icmp_type {
            o.extend(if v6 {
                [K::Icmpv6Type(t), K::Icmpv6TypeMask(0xff)]
            } else {
                [K::Icmpv4Type(t), K::Icmpv4TypeMask(0xff)]
            });
        }
        if let Some(c) = m.icmp_code {
            o.extend(if v6 {
                [K::Icmpv6Code(c), K::Icmpv6CodeMask(0xff)]
            } else {
                [K::Icmpv4Code(c), K::Icmpv4CodeMask(0xff)]
            });
        }
    }
    o.push(K::Actions(actions(flow, ports, cookie)?));
    o.push(K::Flags(policy.flower_flags()));
    if let Some(p) = flow.protocol() {
        o.push(K::EthType(p));
    }
    Ok(o)
}

/// A port key constructor (`TcpSrc`, `UdpDstMask`, ...).
type PortKey = fn(u16) -> K;

/// What we know of the packet's outer VLAN tag at one point of the action
/// list.
#[derive(Debug, Clone, Copy)]
enum Tag {
    Absent,
    Present(Option<u16>),
    Unknown,
}

/// A tc action before it gets its place and verdict.
enum TcAct {
    Mirred {
        eaction: TcMirrorActionType,
        ifindex: u32,
    },
    Gact(i32),
    VlanPop,
    VlanPush {
        tpid: u16,
        vid: u16,
        pcp: Option<u8>,
    },
    VlanModify {
        vid: u16,
        pcp: Option<u8>,
    },
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
/// or `dl_vlan=0xffff`). `vlan modify` rewrites VID and PCP together, so
/// `mod_vlan_pcp` alone needs the VID from `dl_vlan=N`.
///
/// # Errors
/// The cases above, an unresolved port, more than [`MAX_ACTIONS`].
pub fn actions(
    flow: &Flow,
    ports: &PortMap,
    cookie: &[u8; 16],
) -> Result<Vec<TcAction>, CompileError> {
    let err = |message: String| CompileError {
        line: flow.line,
        message,
    };
    let mut tag = match flow.matches.vlan {
        Some(VlanMatch::Untagged) => Tag::Absent,
        Some(VlanMatch::Tagged { vid, .. }) => Tag::Present(vid),
        None => Tag::Unknown,
    };
    let a = &flow.actions;
    let mut out: Vec<TcAct> = Vec::new();
    let mut i = 0;
    while i < a.len() {
        let last = i + 1 == a.len();
        match &a[i] {
            Action::Output(p) => {
                let ifindex = ports
                    .ifindex(p)
                    .ok_or_else(|| err(format!("output:{p}: no such netdev or representor")))?;
                let eaction = if last {
                    TcMirrorActionType::EgressRedir
                } else {
                    TcMirrorActionType::EgressMirror
                };
                out.push(TcAct::Mirred { eaction, ifindex });
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
    let n = out.len();
    Ok(out
        .into_iter()
        .enumerate()
        .map(|(i, a)| encode_action(i as u16 + 1, a, i + 1 == n, cookie))
        .collect())
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
    (vid, pcp, n.max(1))
}

/// `struct tc_gen` with only the verdict set (a new, anonymous action).
pub(crate) fn tc_gen(action: i32) -> Vec<u8> {
    let mut v = vec![0u8; 20];
    v[8..12].copy_from_slice(&action.to_ne_bytes());
    v
}

fn nla(kind: u16, value: Vec<u8>) -> TcActionOption {
    TcActionOption::Other(DefaultNla::new(kind, value))
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

fn encode_action(tab: u16, a: TcAct, last: bool, cookie: &[u8; 16]) -> TcAction {
    let pipe_or = |v: i32| if last { v } else { verdict::PIPE };
    let (kind, options) = match a {
        TcAct::Mirred { eaction, ifindex } => {
            let mut generic = TcActionGeneric::default();
            generic.action = if last {
                TcActionType::Stolen
            } else {
                TcActionType::Pipe
            };
            let mut parms = TcMirror::default();
            parms.generic = generic;
            parms.eaction = eaction;
            parms.ifindex = ifindex;
            (
                "mirred",
                vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(parms))],
            )
        }
        TcAct::Gact(v) => ("gact", vec![nla(act::PARMS, tc_gen(pipe_or(v)))]),
        TcAct::VlanPop | TcAct::VlanPush { .. } | TcAct::VlanModify { .. } => {
            let (v_action, vid, tpid, pcp) = match a {
                TcAct::VlanPop => (act::VLAN_POP, None, None, None),
                TcAct::VlanPush { tpid, vid, pcp } => (act::VLAN_PUSH, Some(vid), Some(tpid), pcp),
                TcAct::VlanModify { vid, pcp } => (act::VLAN_MODIFY, Some(vid), None, pcp),
                _ => unreachable!(),
            };
            let mut parms = tc_gen(pipe_or(verdict::PIPE));
            parms.extend_from_slice(&v_action.to_ne_bytes());
            let mut o = vec![nla(act::PARMS, parms)];
            if let Some(v) = vid {
                o.push(nla(act::VLAN_ID, v.to_ne_bytes().to_vec()));
            }
            if let Some(t) = tpid {
                o.push(nla(act::VLAN_PROTOCOL, t.to_be_bytes().to_vec()));
            }
            if let Some(p) = pcp {
                o.push(nla(act::VLAN_PRIORITY, vec![p]));
            }
            ("vlan", o)
        }
        TcAct::Pedit(fields) => {
            let keys: Vec<PeditKey> = fields
                .iter()
                .flat_map(|(off, mac)| pedit_mac_keys(*off, mac))
                .collect();
            // struct tc_pedit_sel: tc_gen, nkeys, flags, 2 pad, keys[].
            let mut sel = tc_gen(pipe_or(verdict::PIPE));
            sel.extend_from_slice(&[keys.len() as u8, 0, 0, 0]);
            let mut keys_ex = Vec::new();
            for k in &keys {
                sel.extend_from_slice(&k.mask);
                sel.extend_from_slice(&k.val);
                sel.extend_from_slice(&k.off.to_ne_bytes());
                sel.extend_from_slice(&[0u8; 12]); // at, offmask, shift
                let mut w = plexus_netlink::AttrWriter::new();
                w.nest(act::PEDIT_KEY_EX | act::NESTED, |w| {
                    w.put_u16(act::PEDIT_KEY_EX_HTYPE, act::PEDIT_HTYPE_ETH);
                    w.put_u16(act::PEDIT_KEY_EX_CMD, act::PEDIT_CMD_SET);
                });
                keys_ex.extend_from_slice(w.as_bytes());
            }
            (
                "pedit",
                vec![
                    nla(act::PEDIT_PARMS_EX, sel),
                    nla(act::PEDIT_KEYS_EX | act::NESTED, keys_ex),
                ],
            )
        }
    };
    let mut flags = act::NO_PERCPU_STATS.to_ne_bytes().to_vec();
    flags.extend_from_slice(&act::NO_PERCPU_STATS.to_ne_bytes());
    let mut action = TcAction::default();
    action.tab = tab;
    action.attributes = vec![
        TcActionAttribute::Kind(kind.into()),
        TcActionAttribute::Options(options),
        TcActionAttribute::Cookie(cookie.to_vec()),
        TcActionAttribute::Other(DefaultNla::new(act::FLAGS, flags)),
    ];
    action
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
    fn prios_follow_priority_then_protocol() {
        let flows = parse_flows(
            "priority=10,in_port=p0,actions=drop\n\
             priority=200,in_port=p0,ip,actions=drop\n\
             priority=200,in_port=p0,arp,actions=drop\n\
             priority=200,in_port=rep1,ip,nw_src=10.0.0.1,actions=drop\n",
        )
        .unwrap();
        // 200/ip and 200/arp need two preferences (one protocol each); the
        // highest priority gets the lowest preference.
        assert_eq!(
            allocate_prios(&flows).unwrap(),
            vec![PRIO_BASE + 2, PRIO_BASE, PRIO_BASE + 1, PRIO_BASE]
        );
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
