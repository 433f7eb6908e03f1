//! The eBPF back end's compiler: the intermediate flow table as the map
//! entries of Plexus's tc classifier (`bpf/plexus_tc.c`), and back.
//!
//! Owns the map layouts (mirrored from the C structs, size and offsets
//! asserted on both sides at build time), the packet key a flow's match
//! becomes (value and mask), the subtables of each (port, table) ordered
//! for the tuple-space search, and the action list (the same tc plan the
//! flower back end encodes, from [`flower::plan_actions`], so both back
//! ends decide alike). Pure: the kernel side is [`crate::datapath`].

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::{
    flow::{Action, ETH_8021Q, ETH_IPV6, Flow, Mac, Masked, Match, VlanMatch},
    flower::{self, CompileError, PortMap, TcAct, verdict},
};

/// Flows one generation holds (`PX_MAX_FLOWS`).
pub const MAX_FLOWS: usize = 65536;
/// (port, table) pairs one generation holds (`PX_MAX_TABLES`).
pub const MAX_TABLES: usize = 4096;
/// Distinct masks one generation holds (`PX_MASK_SLOTS`).
pub const MASK_SLOTS: usize = 1024;
/// Subtables (distinct masks) per (port, table) (`PX_MAX_MASKS`).
pub const MAX_MASKS: usize = 32;
/// Actions per flow (`PX_MAX_ACTIONS`).
pub const MAX_ACTIONS: usize = 16;
/// Tables one packet may visit (`PX_MAX_STAGES`).
pub const MAX_STAGES: usize = 8;
/// Counter slot of packets that matched no flow (`PX_SLOT_MISS`).
pub const SLOT_MISS: u32 = MAX_FLOWS as u32;
/// Counter slot of packets an action failed on (`PX_SLOT_ERROR`).
pub const SLOT_ERROR: u32 = MAX_FLOWS as u32 + 1;
/// Counter slot of lookups the microflow cache missed, so that the subtable
/// search ran (`PX_SLOT_CACHE_MISS`); packets only.
pub const SLOT_CACHE_MISS: u32 = MAX_FLOWS as u32 + 2;
/// Slots of `px_stats`: one per flow, then the datapath's (`PX_STATS`).
pub const STATS_SLOTS: u32 = MAX_FLOWS as u32 + 3;
/// `tci` bit meaning "the packet is tagged" (`PX_TCI_PRESENT`).
pub const TCI_PRESENT: u16 = 0x1000;
/// `pcp` meaning "not given" (`PX_PCP_NONE`).
pub const PCP_NONE: u8 = 0xff;
/// log2 of the microflow cache's slots per CPU (`PX_CACHE_BITS`).
pub const CACHE_BITS: u32 = 12;

/// `struct px_key`: what a packet is matched on. Multi-byte packet fields
/// are in network order, as byte arrays.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PxKey {
    /// Ingress device (`in_port`).
    pub ifindex: u32,
    /// Table.
    pub table: u32,
    /// Destination MAC.
    pub dl_dst: Mac,
    /// Source MAC.
    pub dl_src: Mac,
    /// Outer tag's TPID; zero when untagged.
    pub tpid: [u8; 2],
    /// `vid | pcp << 13 | TCI_PRESENT`; zero when untagged (host order).
    pub tci: u16,
    /// EtherType (inside the tag).
    pub eth_type: [u8; 2],
    /// IP protocol or ARP opcode (low byte).
    pub nw_proto: u8,
    /// TOS / traffic class byte.
    pub nw_tos: u8,
    /// TTL / hop limit.
    pub nw_ttl: u8,
    /// ICMP(v6) type.
    pub icmp_type: u8,
    /// ICMP(v6) code.
    pub icmp_code: u8,
    /// Padding (zero).
    pub pad0: u8,
    /// Source address (IPv4 and ARP in the first four bytes).
    pub nw_src: [u8; 16],
    /// Destination address.
    pub nw_dst: [u8; 16],
    /// TCP/UDP/SCTP source port.
    pub tp_src: [u8; 2],
    /// TCP/UDP/SCTP destination port.
    pub tp_dst: [u8; 2],
    /// The 12 TCP flag bits.
    pub tcp_flags: [u8; 2],
    /// Padding (zero).
    pub pad1: u16,
}

/// `struct px_lookup`: the key of `px_flows`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PxLookup {
    /// `generation * MASK_SLOTS + mask`.
    pub mask_id: u32,
    /// Padding (zero).
    pub pad: u32,
    /// The flow's key, masked.
    pub key: PxKey,
}

/// `struct px_action`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PxAction {
    /// `PX_ACT_*`.
    pub kind: u8,
    /// VLAN PCP or [`PCP_NONE`].
    pub pcp: u8,
    /// TPID to push (network order).
    pub tpid: [u8; 2],
    /// VID to push or set.
    pub vid: u16,
    /// MAC to set.
    pub mac: Mac,
    /// ifindex (outputs) or table (goto).
    pub arg: u32,
}

/// `struct px_flow`: the value of `px_flows`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PxFlow {
    /// Counter slot in `px_stats`.
    pub slot: u32,
    /// OpenFlow priority.
    pub priority: u16,
    /// Actions used.
    pub n_actions: u8,
    /// Padding (zero).
    pub pad: u8,
    /// The flow's cookie.
    pub cookie: u64,
    /// Actions, in order.
    pub act: [PxAction; MAX_ACTIONS],
}

/// Bits of a subtable's Bloom filter (`PX_BLOOM_BITS`: 2^13).
pub const BLOOM_BITS: u32 = 13;

/// The bytes of a map type, as the kernel sees them.
pub(crate) fn bytes_of<T: aya::Pod>(x: &T) -> &[u8] {
    // SAFETY: `Pod` types are `repr(C)` integers with explicit padding
    // fields: every byte of `x` is initialised, and the slice borrows `x`.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(x).cast::<u8>(), size_of::<T>()) }
}

/// `struct px_bloom`: a one-hash Bloom filter of one subtable's masked
/// keys (see [`PxBloom::insert`]); the classifier skips the hash map probe
/// when the key's bit is clear.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PxBloom {
    /// 1 once written by a build that has filters.
    pub valid: u64,
    /// The bits.
    pub bits: [u64; 1 << (BLOOM_BITS - 6)],
}

impl Default for PxBloom {
    fn default() -> Self {
        Self {
            valid: 1,
            bits: [0; 1 << (BLOOM_BITS - 6)],
        }
    }
}

impl PxBloom {
    /// The bit of a masked key, as the classifier computes it: a
    /// multiplicative fold of the key's nine native-endian words.
    #[must_use]
    pub fn bit(masked: &PxKey) -> u32 {
        let h = bytes_of(masked).chunks_exact(8).fold(0u64, |h, w| {
            (h ^ u64::from_ne_bytes(w.try_into().expect("8 bytes")))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        });
        (h >> (64 - BLOOM_BITS)) as u32
    }

    /// Adds a masked key.
    pub fn insert(&mut self, masked: &PxKey) {
        let b = Self::bit(masked);
        self.bits[(b >> 6) as usize] |= 1 << (b & 63);
    }

    /// Whether the filter lets `masked` through to the probe.
    #[must_use]
    pub fn may_hold(&self, masked: &PxKey) -> bool {
        let b = Self::bit(masked);
        self.valid == 0 || self.bits[(b >> 6) as usize] & (1 << (b & 63)) != 0
    }
}

/// `struct px_table_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PxTableKey {
    /// Generation (0 or 1).
    pub gen_: u32,
    /// Port.
    pub ifindex: u32,
    /// Table.
    pub table: u32,
}

/// `struct px_table`: the subtables of one (port, table).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PxTable {
    /// Subtables used.
    pub n_masks: u32,
    /// Padding (zero).
    pub pad: u32,
    /// `px_masks` index of each, highest `max_prio` first.
    pub mask_id: [u32; MAX_MASKS],
    /// The highest priority in each.
    pub max_prio: [u32; MAX_MASKS],
}

/// `struct px_active`: the generation packets use and the flip count.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PxActive {
    /// 0 or 1.
    pub gen_: u32,
    /// Grows with every flip; keys the datapath's microflow cache.
    pub epoch: u32,
}

/// `struct px_counter` (one CPU's).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PxCounter {
    /// Packets.
    pub packets: u64,
    /// Bytes, frame as on the wire (tag included, FCS not).
    pub bytes: u64,
}

// The C side asserts the same sizes and offsets (`_Static_assert`).
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<PxKey>() == 72);
    assert!(offset_of!(PxKey, tpid) == 20);
    assert!(offset_of!(PxKey, eth_type) == 24);
    assert!(offset_of!(PxKey, nw_src) == 32);
    assert!(offset_of!(PxKey, tp_src) == 64);
    assert!(size_of::<PxLookup>() == 80);
    assert!(size_of::<PxAction>() == 16);
    assert!(size_of::<PxFlow>() == 16 + 16 * MAX_ACTIONS);
    assert!(size_of::<PxTableKey>() == 12);
    assert!(size_of::<PxTable>() == 8 + 8 * MAX_MASKS);
    assert!(size_of::<PxCounter>() == 16);
    assert!(size_of::<PxBloom>() == 8 + 1024);
    assert!(size_of::<PxKey>() == 72);
};

// SAFETY: every type below is `repr(C)`, made only of integers and arrays
// of integers, with explicit padding fields, so any bit pattern is valid
// and there are no uninitialised bytes.
unsafe impl aya::Pod for PxKey {}
// SAFETY: as above.
unsafe impl aya::Pod for PxLookup {}
// SAFETY: as above.
unsafe impl aya::Pod for PxAction {}
// SAFETY: as above.
unsafe impl aya::Pod for PxFlow {}
// SAFETY: as above.
unsafe impl aya::Pod for PxTableKey {}
// SAFETY: as above.
unsafe impl aya::Pod for PxTable {}
// SAFETY: as above.
unsafe impl aya::Pod for PxCounter {}
// SAFETY: as above.
unsafe impl aya::Pod for PxActive {}
// SAFETY: as above.
unsafe impl aya::Pod for PxBloom {}

/// `PX_ACT_*`.
#[allow(missing_docs)]
pub mod act {
    pub const MIRROR: u8 = 1;
    pub const REDIRECT: u8 = 2;
    pub const DROP: u8 = 3;
    pub const GOTO: u8 = 4;
    pub const VLAN_POP: u8 = 5;
    pub const VLAN_PUSH: u8 = 6;
    pub const VLAN_MODIFY: u8 = 7;
    pub const SET_DST: u8 = 8;
    pub const SET_SRC: u8 = 9;
}

impl PxKey {
    /// The key with every bit of `mask` kept and the rest cleared.
    pub fn masked(&self, mask: &PxKey) -> PxKey {
        let mut out = *self;
        {
            let o = bytes_mut(&mut out);
            for (b, m) in o.iter_mut().zip(bytes(mask)) {
                *b &= m;
            }
        }
        out
    }
}

/// The microflow cache slot a packet key takes in an epoch: the
/// classifier's `cache_index`. Tests use it to make two microflows share a
/// slot.
pub fn cache_slot(key: &PxKey, epoch: u32) -> u32 {
    let h = bytes(key).chunks_exact(8).fold(u64::from(epoch), |h, w| {
        let w = u64::from_ne_bytes(w.try_into().expect("8-byte chunk"));
        (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    });
    (h >> (64 - CACHE_BITS)) as u32
}

fn bytes(k: &PxKey) -> &[u8; 72] {
    // SAFETY: PxKey is repr(C), 72 bytes (asserted above), no padding.
    unsafe { &*(k as *const PxKey).cast::<[u8; 72]>() }
}

fn bytes_mut(k: &mut PxKey) -> &mut [u8; 72] {
    // SAFETY: as in `bytes`; every bit pattern is a valid PxKey.
    unsafe { &mut *(k as *mut PxKey).cast::<[u8; 72]>() }
}

fn ip16(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v.octets());
            b
        }
        IpAddr::V6(v) => v.octets(),
    }
}

/// A flow's match as the packet key it needs (value, mask); port and table
/// included.
pub fn key_mask(flow: &Flow, ifindex: u32) -> (PxKey, PxKey) {
    let m = &flow.matches;
    let mut k = PxKey {
        ifindex,
        table: flow.table,
        ..PxKey::default()
    };
    let mut mk = PxKey {
        ifindex: u32::MAX,
        table: u32::MAX,
        ..PxKey::default()
    };
    if let Some(Masked { value, mask }) = m.dl_dst {
        (k.dl_dst, mk.dl_dst) = (value, mask);
    }
    if let Some(Masked { value, mask }) = m.dl_src {
        (k.dl_src, mk.dl_src) = (value, mask);
    }
    match m.vlan {
        Some(VlanMatch::Tagged { vid, pcp }) => {
            (k.tpid, mk.tpid) = (ETH_8021Q.to_be_bytes(), [0xff; 2]);
            (k.tci, mk.tci) = (TCI_PRESENT, TCI_PRESENT);
            if let Some(v) = vid {
                k.tci |= v & 0x0fff;
                mk.tci |= 0x0fff;
            }
            if let Some(p) = pcp {
                k.tci |= u16::from(p & 7) << 13;
                mk.tci |= 0xe000;
            }
        }
        // An EtherType without a VLAN match is tc's protocol: untagged
        // packets only.
        Some(VlanMatch::Untagged) => mk.tci = TCI_PRESENT,
        None if m.dl_type.is_some() => mk.tci = TCI_PRESENT,
        None => {}
    }
    if let Some(t) = m.dl_type {
        (k.eth_type, mk.eth_type) = (t.to_be_bytes(), [0xff; 2]);
    }
    if let Some(a) = m.nw_src {
        (k.nw_src, mk.nw_src) = (ip16(a.value), ip16(a.mask));
    }
    if let Some(a) = m.nw_dst {
        (k.nw_dst, mk.nw_dst) = (ip16(a.value), ip16(a.mask));
    }
    if let Some(p) = m.nw_proto {
        (k.nw_proto, mk.nw_proto) = (p, 0xff);
    }
    if let Some(t) = m.nw_tos {
        (k.nw_tos, mk.nw_tos) = (t & 0xfc, 0xfc);
    }
    if let Some(t) = m.nw_ttl {
        (k.nw_ttl, mk.nw_ttl) = (t, 0xff);
    }
    if let Some(p) = m.tp_src {
        (k.tp_src, mk.tp_src) = (p.value.to_be_bytes(), p.mask.to_be_bytes());
    }
    if let Some(p) = m.tp_dst {
        (k.tp_dst, mk.tp_dst) = (p.value.to_be_bytes(), p.mask.to_be_bytes());
    }
    if let Some(f) = m.tcp_flags {
        (k.tcp_flags, mk.tcp_flags) = (f.value.to_be_bytes(), f.mask.to_be_bytes());
    }
    if let Some(t) = m.icmp_type {
        (k.icmp_type, mk.icmp_type) = (t, 0xff);
    }
    if let Some(c) = m.icmp_code {
        (k.icmp_code, mk.icmp_code) = (c, 0xff);
    }
    (k.masked(&mk), mk)
}

/// The match a (key, mask) pair stands for: the inverse of [`key_mask`].
pub fn match_of(key: &PxKey, mask: &PxKey) -> Match {
    let be = u16::from_be_bytes;
    let mac = |v: Mac, m: Mac| (m != [0; 6]).then_some(Masked { value: v, mask: m });
    let dl_type = (mask.eth_type != [0; 2]).then(|| be(key.eth_type));
    let vlan = if mask.tpid != [0; 2] {
        Some(VlanMatch::Tagged {
            vid: (mask.tci & 0x0fff != 0).then_some(key.tci & 0x0fff),
            pcp: (mask.tci & 0xe000 != 0).then_some((key.tci >> 13) as u8),
        })
    } else {
        None
    };
    let v6 = dl_type == Some(ETH_IPV6);
    let ip = |v: [u8; 16], m: [u8; 16]| {
        (m != [0; 16]).then(|| {
            if v6 {
                Masked {
                    value: IpAddr::V6(Ipv6Addr::from(v)),
                    mask: IpAddr::V6(Ipv6Addr::from(m)),
                }
            } else {
                let four = |b: [u8; 16]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
                Masked {
                    value: four(v),
                    mask: four(m),
                }
            }
        })
    };
    let port = |v: [u8; 2], m: [u8; 2]| {
        (m != [0; 2]).then(|| Masked {
            value: be(v),
            mask: be(m),
        })
    };
    Match {
        dl_src: mac(key.dl_src, mask.dl_src),
        dl_dst: mac(key.dl_dst, mask.dl_dst),
        dl_type,
        vlan,
        nw_src: ip(key.nw_src, mask.nw_src),
        nw_dst: ip(key.nw_dst, mask.nw_dst),
        nw_proto: (mask.nw_proto != 0).then_some(key.nw_proto),
        nw_tos: (mask.nw_tos != 0).then_some(key.nw_tos),
        nw_ttl: (mask.nw_ttl != 0).then_some(key.nw_ttl),
        tp_src: port(key.tp_src, mask.tp_src),
        tp_dst: port(key.tp_dst, mask.tp_dst),
        tcp_flags: port(key.tcp_flags, mask.tcp_flags),
        icmp_type: (mask.icmp_type != 0).then_some(key.icmp_type),
        icmp_code: (mask.icmp_code != 0).then_some(key.icmp_code),
    }
}

/// The tc action plan as datapath actions.
fn px_actions(plan: &[TcAct]) -> Vec<PxAction> {
    let mut out = Vec::with_capacity(plan.len());
    for a in plan {
        let base = PxAction {
            pcp: PCP_NONE,
            ..PxAction::default()
        };
        match a {
            TcAct::Mirred { redirect, ifindex } => out.push(PxAction {
                kind: if *redirect {
                    act::REDIRECT
                } else {
                    act::MIRROR
                },
                arg: *ifindex,
                ..base
            }),
            TcAct::Gact(v) if *v == verdict::SHOT => out.push(PxAction {
                kind: act::DROP,
                ..base
            }),
            TcAct::Gact(v) => out.push(PxAction {
                kind: act::GOTO,
                arg: (v & verdict::EXT_VAL_MASK) as u32,
                ..base
            }),
            TcAct::VlanPop => out.push(PxAction {
                kind: act::VLAN_POP,
                ..base
            }),
            TcAct::VlanPush { tpid, vid, pcp } => out.push(PxAction {
                kind: act::VLAN_PUSH,
                tpid: tpid.to_be_bytes(),
                vid: *vid,
                pcp: pcp.unwrap_or(PCP_NONE),
                ..base
            }),
            TcAct::VlanModify { vid, pcp } => out.push(PxAction {
                kind: act::VLAN_MODIFY,
                vid: *vid,
                pcp: pcp.unwrap_or(PCP_NONE),
                ..base
            }),
            TcAct::Pedit(fields) => {
                for (offset, mac) in fields {
                    out.push(PxAction {
                        kind: if *offset == 0 {
                            act::SET_DST
                        } else {
                            act::SET_SRC
                        },
                        mac: *mac,
                        ..base
                    });
                }
            }
        }
    }
    out
}

/// The flow's actions rebuilt from datapath actions (ports by name where
/// known, else `ifN`), as the flower dump rebuilds them.
pub fn actions_of(acts: &[PxAction], ports: &PortMap) -> Result<Vec<Action>, String> {
    let port = |i: u32| {
        ports
            .name(i)
            .map_or_else(|| format!("if{i}"), str::to_owned)
    };
    let mut out = Vec::new();
    for a in acts {
        let pcp = (a.pcp != PCP_NONE).then_some(a.pcp);
        match a.kind {
            act::MIRROR | act::REDIRECT => out.push(Action::Output(port(a.arg))),
            act::DROP => out.push(Action::Drop),
            act::GOTO => out.push(Action::GotoTable(a.arg)),
            act::VLAN_POP => out.push(Action::StripVlan),
            act::VLAN_PUSH | act::VLAN_MODIFY => {
                if a.kind == act::VLAN_PUSH {
                    out.push(Action::PushVlan(u16::from_be_bytes(a.tpid)));
                }
                out.push(Action::SetVlanVid(a.vid));
                if let Some(p) = pcp {
                    out.push(Action::SetVlanPcp(p));
                }
            }
            act::SET_DST => out.push(Action::SetDlDst(a.mac)),
            act::SET_SRC => out.push(Action::SetDlSrc(a.mac)),
            k => return Err(format!("unknown datapath action kind {k}")),
        }
    }
    // The drop ending a list of rewrites is OpenFlow's implicit drop.
    if out.len() > 1 && out.last() == Some(&Action::Drop) {
        out.pop();
    }
    Ok(out)
}

/// One flow as a `px_flows` entry (generation and counter slot still to
/// be set by the installer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EbpfFlow {
    /// Index of the flow in the table.
    pub index: usize,
    /// Mask index within the generation.
    pub mask: u32,
    /// The masked key.
    pub key: PxKey,
    /// The value (slot 0).
    pub value: PxFlow,
}

/// A whole table as map entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EbpfTable {
    /// Distinct masks; a flow's `mask` indexes this.
    pub masks: Vec<PxKey>,
    /// Subtables of each (port, table) (generation 0 in the key).
    pub tables: Vec<(PxTableKey, PxTable)>,
    /// One per flow, in table order.
    pub flows: Vec<EbpfFlow>,
    /// Ports the classifier must be attached to (sorted).
    pub ports: Vec<u32>,
}

/// Compiles a table for the eBPF datapath. Every flow is checked first.
///
/// # Errors
/// Per flow: an unresolved port, actions tc's plan cannot express (the
/// same as the flower back end), more than [`MAX_ACTIONS`], a match that
/// another flow of the same table already has. Per table: more than
/// [`MAX_MASKS`] masks on one (port, table), a goto chain deeper than
/// [`MAX_STAGES`], more flows or masks than the maps hold.
pub fn compile(flows: &[Flow], ports: &PortMap) -> Result<EbpfTable, Vec<CompileError>> {
    let mut errors = Vec::new();
    let mut out = EbpfTable::default();
    let mut mask_ids: HashMap<PxKey, u32> = HashMap::new();
    // (port, table) -> mask -> highest priority
    let mut subtables: BTreeMap<(u32, u32), BTreeMap<u32, u16>> = BTreeMap::new();
    let mut seen: HashMap<(u32, PxKey), usize> = HashMap::new();
    if flows.len() > MAX_FLOWS {
        errors.push(CompileError {
            line: 0,
            message: format!("{} flows; the eBPF datapath holds {MAX_FLOWS}", flows.len()),
        });
    }
    for (index, flow) in flows.iter().enumerate() {
        let err = |message: String| CompileError {
            line: flow.line,
            message,
        };
        let Some(ifindex) = ports.ifindex(&flow.in_port) else {
            errors.push(err(format!(
                "in_port {}: no such netdev or representor",
                flow.in_port
            )));
            continue;
        };
        let plan = match flower::plan_actions(flow, ports) {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let acts = px_actions(&plan);
        if acts.len() > MAX_ACTIONS {
            errors.push(err(format!(
                "{} datapath actions; the eBPF datapath holds {MAX_ACTIONS} per flow",
                acts.len()
            )));
            continue;
        }
        let (key, mask) = key_mask(flow, ifindex);
        let next = mask_ids.len() as u32;
        let mask_id = *mask_ids.entry(mask).or_insert(next);
        if let Some(&other) = seen.get(&(mask_id, key)) {
            errors.push(err(format!(
                "same match as line {} in table {}: the eBPF datapath keeps one flow per match; remove the one that can never match",
                flows[other].line, flow.table
            )));
            continue;
        }
        seen.insert((mask_id, key), index);
        let prio = subtables
            .entry((ifindex, flow.table))
            .or_default()
            .entry(mask_id)
            .or_insert(flow.priority);
        *prio = (*prio).max(flow.priority);
        let mut act = [PxAction::default(); MAX_ACTIONS];
        act[..acts.len()].copy_from_slice(&acts);
        out.flows.push(EbpfFlow {
            index,
            mask: mask_id,
            key,
            value: PxFlow {
                slot: 0,
                priority: flow.priority,
                n_actions: acts.len() as u8,
                pad: 0,
                cookie: flow.cookie,
                act,
            },
        });
    }
    if mask_ids.len() > MASK_SLOTS {
        errors.push(CompileError {
            line: 0,
            message: format!(
                "{} distinct masks; the eBPF datapath holds {MASK_SLOTS}",
                mask_ids.len()
            ),
        });
    }
    if subtables.len() > MAX_TABLES {
        errors.push(CompileError {
            line: 0,
            message: format!(
                "{} (port, table) pairs; the eBPF datapath holds {MAX_TABLES}",
                subtables.len()
            ),
        });
    }
    let mut masks = vec![PxKey::default(); mask_ids.len()];
    for (m, id) in &mask_ids {
        masks[*id as usize] = *m;
    }
    out.masks = masks;
    for ((ifindex, table), subs) in &subtables {
        if subs.len() > MAX_MASKS {
            let line = flows
                .iter()
                .find(|f| f.table == *table && ports.ifindex(&f.in_port) == Some(*ifindex))
                .map_or(0, |f| f.line);
            errors.push(CompileError {
                line,
                message: format!(
                    "{} distinct masks in table {table} of {}; the eBPF datapath searches at most {MAX_MASKS} per table: use fewer match shapes",
                    subs.len(),
                    ports.name(*ifindex).unwrap_or("?")
                ),
            });
            continue;
        }
        let mut order: Vec<(u32, u16)> = subs.iter().map(|(m, p)| (*m, *p)).collect();
        order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut t = PxTable {
            n_masks: order.len() as u32,
            pad: 0,
            mask_id: [0; MAX_MASKS],
            max_prio: [0; MAX_MASKS],
        };
        for (i, (m, p)) in order.iter().enumerate() {
            t.mask_id[i] = *m;
            t.max_prio[i] = u32::from(*p);
        }
        out.tables.push((
            PxTableKey {
                gen_: 0,
                ifindex: *ifindex,
                table: *table,
            },
            t,
        ));
    }
    errors.extend(check_depth(flows, ports));
    let mut p: Vec<u32> = subtables.keys().map(|(i, _)| *i).collect();
    p.dedup();
    out.ports = p;
    if errors.is_empty() {
        Ok(out)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}

/// Tables a packet entering each port can visit, along the longest goto
/// chain: at most [`MAX_STAGES`].
fn check_depth(flows: &[Flow], ports: &PortMap) -> Vec<CompileError> {
    // (port, table) -> tables it jumps to; gotos only go forward, so the
    // longest path is found by walking tables from the highest down.
    let mut jumps: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
    for f in flows {
        let Some(i) = ports.ifindex(&f.in_port) else {
            continue;
        };
        let e = jumps.entry((i, f.table)).or_default();
        for a in &f.actions {
            if let Action::GotoTable(t) = a {
                e.push(*t);
            }
        }
    }
    let mut depth: HashMap<(u32, u32), usize> = HashMap::new();
    let mut errors = Vec::new();
    for (&(port, table), next) in jumps.iter().rev() {
        let d = 1 + next
            .iter()
            .map(|t| depth.get(&(port, *t)).copied().unwrap_or(1))
            .max()
            .unwrap_or(0);
        depth.insert((port, table), d);
        if table == 0 && d > MAX_STAGES {
            errors.push(CompileError {
                line: 0,
                message: format!(
                    "a packet entering {} can visit {d} tables; the eBPF datapath follows at most {MAX_STAGES}",
                    ports.name(port).unwrap_or("?")
                ),
            });
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_flows;

    fn ports() -> PortMap {
        let mut p = PortMap::new();
        p.insert("a", 2);
        p.insert("b", 3);
        p.insert("c", 4);
        p
    }

    #[test]
    fn key_mask_round_trips_every_match_kind() {
        let text = "\
in_port=a,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:00/01:00:00:00:00:00,actions=drop
in_port=a,ip,nw_src=10.1.0.0/16,nw_dst=10.2.3.4,nw_tos=0x28,nw_ttl=64,actions=drop
in_port=a,tcp,tp_src=80,tp_dst=0x1000/0xf000,tcp_flags=+syn-ack,actions=drop
in_port=a,udp6,ipv6_src=fd00::/64,tp_dst=53,actions=drop
in_port=a,icmp,icmp_type=8,icmp_code=0,actions=drop
in_port=a,icmp6,icmp_type=135,actions=drop
in_port=a,arp,arp_op=1,arp_spa=10.0.0.1,arp_tpa=10.0.0.0/24,actions=drop
in_port=a,dl_vlan=100,dl_vlan_pcp=5,ip,actions=drop
in_port=a,dl_vlan=0xffff,ip,actions=drop
in_port=a,sctp,tp_src=9,actions=drop
";
        for f in parse_flows(text).unwrap() {
            let (k, m) = key_mask(&f, 2);
            let back = match_of(&k, &m);
            // dl_vlan=0xffff (which the parser allows only with dl_type)
            // reads back as the EtherType alone: both are "untagged, this
            // EtherType".
            let mut want = f.matches.clone();
            if want.dl_type.is_some() && want.vlan == Some(VlanMatch::Untagged) {
                want.vlan = None;
            }
            assert_eq!(back, want, "{f}");
            assert_eq!((k.ifindex, m.ifindex, m.table), (2, u32::MAX, u32::MAX));
        }
    }

    #[test]
    fn subtables_are_ordered_by_their_best_priority() {
        let flows = parse_flows(
            "\
priority=10,in_port=a,ip,nw_dst=10.0.0.1,actions=output:b
priority=300,in_port=a,ip,nw_src=10.0.0.0/8,actions=drop
priority=20,in_port=a,ip,nw_dst=10.0.0.2,actions=output:c
priority=5,in_port=b,actions=output:a
",
        )
        .unwrap();
        let t = compile(&flows, &ports()).unwrap();
        assert_eq!(t.masks.len(), 3);
        assert_eq!(t.ports, vec![2, 3]);
        let (k, a) = &t.tables[0];
        assert_eq!((k.ifindex, k.table, a.n_masks), (2, 0, 2));
        assert_eq!(a.max_prio[..2], [300, 20]);
        assert_eq!(a.mask_id[0], t.flows[1].mask);
        assert_eq!(a.mask_id[1], t.flows[0].mask);
        assert_eq!(t.flows[0].value.act[0].kind, act::REDIRECT);
        assert_eq!(t.flows[0].value.act[0].arg, 3);
        assert_eq!(t.flows[1].value.act[0].kind, act::DROP);
    }

    #[test]
    fn actions_follow_the_tc_plan_and_read_back() {
        let flows = parse_flows(
            "in_port=a,dl_vlan=0xffff,ip,actions=mod_dl_dst:02:00:00:00:00:09,mod_dl_src:02:00:00:00:00:08,push_vlan:0x8100,mod_vlan_vid:7,mod_vlan_pcp:3,output:b,strip_vlan,output:c\n\
             table=0,in_port=b,actions=goto_table:3\n\
             table=3,in_port=b,dl_vlan=5,actions=mod_vlan_vid:6,goto_table:4\n\
             table=4,in_port=b,actions=mod_dl_src:02:00:00:00:00:01\n",
        )
        .unwrap();
        let t = compile(&flows, &ports()).unwrap();
        let kinds = |i: usize| {
            let v = &t.flows[i].value;
            v.act[..v.n_actions as usize]
                .iter()
                .map(|a| a.kind)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(0),
            [
                act::SET_DST,
                act::SET_SRC,
                act::VLAN_PUSH,
                act::MIRROR,
                act::VLAN_POP,
                act::REDIRECT
            ]
        );
        let push = t.flows[0].value.act[2];
        assert_eq!((push.tpid, push.vid, push.pcp), ([0x81, 0], 7, 3));
        assert_eq!(kinds(1), [act::GOTO]);
        assert_eq!(kinds(2), [act::VLAN_MODIFY, act::GOTO]);
        assert_eq!(kinds(3), [act::SET_SRC, act::DROP]);
        let v = &t.flows[0].value;
        let back = actions_of(&v.act[..v.n_actions as usize], &ports()).unwrap();
        assert_eq!(
            flows[0].actions, back,
            "push, then its VID and PCP, as written"
        );
        let v = &t.flows[3].value;
        assert_eq!(
            actions_of(&v.act[..v.n_actions as usize], &ports()).unwrap(),
            flows[3].actions,
            "the implicit drop is not an action of the flow"
        );
    }

    #[test]
    fn what_the_datapath_cannot_hold_is_an_error_naming_the_line() {
        let dup = parse_flows(
            "priority=5,in_port=a,ip,actions=drop\npriority=9,in_port=a,ip,actions=output:b\n",
        )
        .unwrap();
        let e = compile(&dup, &ports()).unwrap_err();
        assert_eq!(e[0].line, 2);
        assert!(e[0].message.contains("same match as line 1"), "{e:?}");

        let mut many = String::new();
        for i in 0..=MAX_MASKS {
            many.push_str(&format!(
                "in_port=a,ip,nw_dst=10.0.0.0/{i},actions=drop
"
            ));
        }
        let e = compile(&parse_flows(&many).unwrap(), &ports()).unwrap_err();
        assert!(
            e[0].message.contains("33 distinct masks in table 0 of a"),
            "{e:?}"
        );

        let mut deep = String::new();
        for t in 0..=MAX_STAGES as u32 {
            deep.push_str(&format!(
                "table={t},in_port=a,actions=goto_table:{}\n",
                t + 1
            ));
        }
        let e = compile(&parse_flows(&deep).unwrap(), &ports()).unwrap_err();
        assert!(e[0].message.contains("can visit 10 tables"), "{e:?}");

        let e = compile(&parse_flows("in_port=zz,actions=drop\n").unwrap(), &ports()).unwrap_err();
        assert!(e[0].message.contains("in_port zz"), "{e:?}");
    }
}
