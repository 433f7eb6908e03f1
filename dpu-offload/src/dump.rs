//! Reading flower filters back: what the kernel holds, where, and what it
//! counted.
//!
//! Owns decoding one filter (a dump entry or the `NLM_F_ECHO` copy of an
//! add) into an [`InstalledFlow`]: whether it is Plexus's (our preference
//! range and a `PX` action cookie), the flow it implements rebuilt from
//! its keys and actions, `TCA_FLOWER_FLAGS` (`IN_HW`/`NOT_IN_HW`),
//! `TCA_FLOWER_IN_HW_COUNT`, and counters taken as Open vSwitch takes them
//! (`tc-flower-offload.md` §1.5): per action `TCA_STATS_BASIC` is the
//! total and `TCA_STATS_BASIC_HW` the hardware part, `TCA_STATS_PKT64`
//! overrides the 32-bit packet count, and the filter's count is the maximum
//! over its actions, since every action sees the same packets.
//!
//! It must not send anything.

use std::net::IpAddr;

use netlink_packet_core::{DefaultNla, Nla, NlaBuffer, NlasIterator, Parseable};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcFilterFlowerOption as K,
    TcMirrorActionType, TcStats2,
};
use plexus_netlink::tc::TcFilterEntry;
use serde::Serialize;

use crate::{
    flow::{Action, ETH_8021Q, Flow, Mac, Masked, Match, VlanMatch},
    flower::{FlowCookie, PRIO_BASE, PRIO_END, PortMap, act, flags, verdict},
};

/// `TCA_STATS_PKT64`.
const TCA_STATS_PKT64: u16 = 8;
/// `USER_HZ`: `struct tcf_t` times are `jiffies_to_clock_t` ticks.
const USER_HZ: f64 = 100.0;

/// Where a flow's packets are handled.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Location {
    /// The NIC holds it (`in_hw`).
    Hw,
    /// Only software tc holds it (`not_in_hw`).
    TcSw,
    /// Plexus's eBPF datapath runs it.
    Ebpf,
}

impl Location {
    /// From `TCA_FLOWER_FLAGS`.
    pub fn from_flags(f: u32) -> Self {
        if f & flags::IN_HW != 0 {
            Location::Hw
        } else {
            Location::TcSw
        }
    }

    /// As `dump-flows` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Location::Hw => "hw",
            Location::TcSw => "tc-sw",
            Location::Ebpf => "ebpf",
        }
    }
}

/// Counters of one filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Packets, software and hardware.
    pub packets: u64,
    /// Bytes (tc counts from the network header: 14 bytes per packet less
    /// than the frame).
    pub bytes: u64,
    /// The hardware's part of `packets`.
    pub hw_packets: u64,
    /// The hardware's part of `bytes`.
    pub hw_bytes: u64,
}

/// A Plexus flow as the kernel holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstalledFlow {
    /// Device.
    pub ifindex: u32,
    /// tc chain.
    pub chain: u32,
    /// tc preference.
    pub prio: u16,
    /// Filter handle (for deletion).
    pub handle: u32,
    /// `tcm_info` protocol, host order.
    pub protocol: u16,
    /// The first action's cookie; `None` for a filter that is not
    /// Plexus's (see [`decode_any`]).
    pub cookie: Option<FlowCookie>,
    /// The flow rebuilt from the filter (ports by name where known, else
    /// `ifN`).
    pub flow: Flow,
    /// What could not be turned back into the flow language (a filter of
    /// ours changed by someone else).
    pub unknown: Vec<String>,
    /// `TCA_FLOWER_FLAGS` as the kernel reports them.
    pub flags: u32,
    /// `TCA_FLOWER_IN_HW_COUNT`, when the kernel sends it.
    pub in_hw_count: Option<u32>,
    /// Counters.
    pub counters: Counters,
    /// Seconds since the filter was installed (`tcf_t.install`).
    pub installed_secs: Option<f64>,
    /// Seconds since a packet last hit it (`tcf_t.lastuse`).
    pub idle_secs: Option<f64>,
}

impl InstalledFlow {
    /// Where its packets are handled.
    pub fn location(&self) -> Location {
        Location::from_flags(self.flags)
    }

    /// Whether the NIC holds it.
    pub fn in_hw(&self) -> bool {
        self.flags & flags::IN_HW != 0
    }
}

/// Whether a preference is in Plexus's range.
pub fn is_our_prio(prio: u16) -> bool {
    (PRIO_BASE..PRIO_END).contains(&prio)
}

fn value_of(nla: &DefaultNla) -> Vec<u8> {
    let mut v = vec![0u8; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes a filter entry. `Ok(None)` when it is not ours (another
/// preference range, another classifier, no `PX` cookie, or the header
/// entry a dump starts each preference with).
///
/// # Errors
/// A filter in our range with our cookie whose options do not parse.
pub fn decode(entry: &TcFilterEntry, ports: &PortMap) -> Result<Option<InstalledFlow>, String> {
    if !is_our_prio(entry.priority) {
        return Ok(None);
    }
    Ok(decode_any(entry, ports)?.filter(|f| f.cookie.is_some()))
}

/// Decodes any flower filter, Plexus's or not (`cookie` tells); `Ok(None)`
/// for other classifiers and a dump's per-preference header entries.
///
/// # Errors
/// Options that do not parse.
pub fn decode_any(entry: &TcFilterEntry, ports: &PortMap) -> Result<Option<InstalledFlow>, String> {
    if entry.kind != "flower" || entry.handle == 0 {
        return Ok(None);
    }
    let Some(opts) = &entry.options else {
        return Ok(None);
    };
    let keys = NlasIterator::new(opts.as_slice())
        .map(|nla| {
            let nla = nla.map_err(|e| format!("flower options: {e}"))?;
            K::parse(&nla).map_err(|e| format!("flower option {}: {e}", nla.kind()))
        })
        .collect::<Result<Vec<K>, String>>()?;
    decode_options(entry, &keys, ports)
}

/// Decodes already-parsed flower options of a filter; see [`decode_any`].
///
/// # Errors
/// As [`decode`].
pub fn decode_options(
    entry: &TcFilterEntry,
    keys: &[K],
    ports: &PortMap,
) -> Result<Option<InstalledFlow>, String> {
    let port = |i: u32| {
        ports
            .name(i)
            .map_or_else(|| format!("if{i}"), str::to_owned)
    };
    let no_actions = Vec::new();
    let tc_actions = keys
        .iter()
        .find_map(|k| match k {
            K::Actions(a) => Some(a),
            _ => None,
        })
        .unwrap_or(&no_actions);
    let cookie = tc_actions.first().and_then(|a| {
        a.attributes.iter().find_map(|x| match x {
            TcActionAttribute::Cookie(c) => FlowCookie::from_bytes(c),
            _ => None,
        })
    });
    let mut unknown = Vec::new();
    let (matches, fl, in_hw_count) = decode_keys(keys, entry.protocol, &mut unknown);
    let mut d = ActionDecoder {
        matched_vid: match matches.vlan {
            Some(VlanMatch::Tagged { vid, .. }) => vid,
            _ => None,
        },
        ..ActionDecoder::default()
    };
    for a in tc_actions {
        d.action(a, &port, &mut unknown);
    }
    // The drop the compiler appends after rewrites that end without
    // output is OpenFlow's implicit drop, not an action of the flow.
    if d.actions.len() > 1 && d.actions.last() == Some(&Action::Drop) {
        d.actions.pop();
    }
    Ok(Some(InstalledFlow {
        ifindex: entry.ifindex,
        chain: entry.chain,
        prio: entry.priority,
        handle: entry.handle,
        protocol: entry.protocol,
        cookie,
        flow: Flow {
            line: 0,
            table: entry.chain,
            priority: cookie.map_or(0, |c| c.priority),
            cookie: cookie.map_or(0, |c| c.user),
            in_port: port(entry.ifindex),
            matches,
            actions: d.actions,
        },
        unknown,
        flags: fl,
        in_hw_count,
        counters: d.counters,
        installed_secs: d.installed,
        idle_secs: d.idle,
    }))
}

fn masked_ip(v: IpAddr, m: IpAddr) -> Option<Masked<IpAddr>> {
    Some(Masked { value: v, mask: m })
}

/// The match of a filter from its keys and its `tcm_info` protocol.
///
/// A VLAN match shows up two ways. What we send (and `tc` sends) carries
/// `KEY_ETH_TYPE` 802.1Q and the inner type in `KEY_VLAN_ETH_TYPE`; what
/// the kernel dumps back carries the 802.1Q only as the filter's protocol,
/// and `KEY_ETH_TYPE` holds the inner type when there is one (`fl_dump_key`
/// writes `basic.n_proto`, which `fl_set_key` set to the inner type).
fn decode_keys(keys: &[K], protocol: u16, unknown: &mut Vec<String>) -> (Match, u32, Option<u32>) {
    let mut m = Match::default();
    let (mut fl, mut hw_count) = (0, None);
    let (mut eth_type, mut vlan_eth) = (None, None);
    let (mut vid, mut pcp) = (None, None);
    let mac = |slot: &mut Option<Masked<Mac>>, v: Option<Mac>, mask: Option<Mac>| {
        let cur = slot.unwrap_or(Masked {
            value: [0; 6],
            mask: [0xff; 6],
        });
        *slot = Some(Masked {
            value: v.unwrap_or(cur.value),
            mask: mask.unwrap_or(cur.mask),
        });
    };
    let ip = |slot: &mut Option<Masked<IpAddr>>, v: Option<IpAddr>, mask: Option<IpAddr>| {
        let cur = *slot;
        let value = v.or(cur.map(|c| c.value));
        let mask = mask.or(cur.map(|c| c.mask));
        if let (Some(value), Some(mask)) = (value, mask) {
            *slot = masked_ip(value, mask);
        } else if let Some(value) = value {
            *slot = masked_ip(
                value,
                crate::flow::mask_of_len(value.is_ipv6(), if value.is_ipv6() { 128 } else { 32 }),
            );
        }
    };
    let port = |slot: &mut Option<Masked<u16>>, v: Option<u16>, mask: Option<u16>| {
        let cur = slot.unwrap_or(Masked {
            value: 0,
            mask: 0xffff,
        });
        *slot = Some(Masked {
            value: v.unwrap_or(cur.value),
            mask: mask.unwrap_or(cur.mask),
        });
    };
    for k in keys {
        match k {
            K::EthDst(v) => mac(&mut m.dl_dst, Some(*v), None),
            K::EthDstMask(v) => mac(&mut m.dl_dst, None, Some(*v)),
            K::EthSrc(v) => mac(&mut m.dl_src, Some(*v), None),
            K::EthSrcMask(v) => mac(&mut m.dl_src, None, Some(*v)),
            K::EthType(t) => eth_type = Some(*t),
            K::VlanId(v) => vid = Some(*v),
            K::VlanPrio(p) => pcp = Some(*p),
            K::VlanEthType(t) => vlan_eth = Some(*t),
            K::IpProto(p) | K::ArpOp(p) => m.nw_proto = Some(*p),
            K::ArpOpMask(_) | K::IpTtlMask(_) | K::Icmpv4TypeMask(_) | K::Icmpv4CodeMask(_) => {}
            K::Icmpv6TypeMask(_) | K::Icmpv6CodeMask(_) | K::IpTosMask(_) => {}
            K::Ipv4Src(v) | K::ArpSip(v) => ip(&mut m.nw_src, Some(IpAddr::V4(*v)), None),
            K::Ipv4SrcMask(v) | K::ArpSipMask(v) => ip(&mut m.nw_src, None, Some(IpAddr::V4(*v))),
            K::Ipv4Dst(v) | K::ArpTip(v) => ip(&mut m.nw_dst, Some(IpAddr::V4(*v)), None),
            K::Ipv4DstMask(v) | K::ArpTipMask(v) => ip(&mut m.nw_dst, None, Some(IpAddr::V4(*v))),
            K::Ipv6Src(v) => ip(&mut m.nw_src, Some(IpAddr::V6(*v)), None),
            K::Ipv6SrcMask(v) => ip(&mut m.nw_src, None, Some(IpAddr::V6(*v))),
            K::Ipv6Dst(v) => ip(&mut m.nw_dst, Some(IpAddr::V6(*v)), None),
            K::Ipv6DstMask(v) => ip(&mut m.nw_dst, None, Some(IpAddr::V6(*v))),
            K::IpTos(t) => m.nw_tos = Some(*t),
            K::IpTtl(t) => m.nw_ttl = Some(*t),
            K::TcpSrc(p) | K::UdpSrc(p) | K::SctpSrc(p) => port(&mut m.tp_src, Some(*p), None),
            K::TcpSrcMask(p) | K::UdpSrcMask(p) | K::SctpSrcMask(p) => {
                port(&mut m.tp_src, None, Some(*p));
            }
            K::TcpDst(p) | K::UdpDst(p) | K::SctpDst(p) => port(&mut m.tp_dst, Some(*p), None),
            K::TcpDstMask(p) | K::UdpDstMask(p) | K::SctpDstMask(p) => {
                port(&mut m.tp_dst, None, Some(*p));
            }
            K::TcpFlags(f) => {
                let mask = m.tcp_flags.map_or(0x0fff, |c| c.mask);
                m.tcp_flags = Some(Masked { value: *f, mask });
            }
            K::TcpFlagsMask(f) => {
                let value = m.tcp_flags.map_or(0, |c| c.value);
                m.tcp_flags = Some(Masked { value, mask: *f });
            }
            K::Icmpv4Type(t) | K::Icmpv6Type(t) => m.icmp_type = Some(*t),
            K::Icmpv4Code(c) | K::Icmpv6Code(c) => m.icmp_code = Some(*c),
            K::Flags(f) => fl = *f,
            K::InHwCount(n) => hw_count = Some(*n),
            K::Actions(_) => {}
            // The kernel echoes KEY_FLAGS (fragment bits) as zero when
            // not matched on.
            K::KeyFlags(0) | K::KeyFlagsMask(0) => {}
            other => unknown.push(format!("{other:?}")),
        }
    }
    if eth_type == Some(ETH_8021Q) || protocol == ETH_8021Q {
        m.vlan = Some(VlanMatch::Tagged { vid, pcp });
        m.dl_type = vlan_eth.or(eth_type.filter(|t| *t != ETH_8021Q));
    } else {
        m.dl_type = eth_type;
    }
    (m, fl, hw_count)
}

#[derive(Default)]
struct ActionDecoder {
    /// The VLAN id the filter matches, if any.
    matched_vid: Option<u16>,
    actions: Vec<Action>,
    counters: Counters,
    installed: Option<f64>,
    idle: Option<f64>,
}

impl ActionDecoder {
    fn tm(&mut self, install: u64, lastuse: u64) {
        let (i, l) = (install as f64 / USER_HZ, lastuse as f64 / USER_HZ);
        self.installed = Some(self.installed.map_or(i, |x| x.max(i)));
        self.idle = Some(self.idle.map_or(l, |x| x.min(l)));
    }

    fn stats(&mut self, stats: &[TcStats2]) {
        let (mut pk, mut by, mut hw_pk, mut hw_by) = (0u64, 0u64, 0u64, 0u64);
        for s in stats {
            match s {
                TcStats2::Basic(b) => {
                    by = b.bytes;
                    pk = pk.max(u64::from(b.packets));
                }
                TcStats2::BasicHw(b) => {
                    hw_by = b.bytes;
                    hw_pk = u64::from(b.packets);
                }
                TcStats2::Other(n) if n.kind() == TCA_STATS_PKT64 => {
                    if let Ok(b) = <[u8; 8]>::try_from(value_of(n).as_slice()) {
                        pk = u64::from_ne_bytes(b);
                    }
                }
                _ => {}
            }
        }
        let c = &mut self.counters;
        if pk > c.packets {
            c.packets = pk;
            c.bytes = by;
        }
        if hw_pk > c.hw_packets {
            c.hw_packets = hw_pk;
            c.hw_bytes = hw_by;
        }
    }

    fn action(&mut self, a: &TcAction, port: &dyn Fn(u32) -> String, unknown: &mut Vec<String>) {
        let mut kind = "";
        let mut opts: &[TcActionOption] = &[];
        for attr in &a.attributes {
            match attr {
                TcActionAttribute::Kind(k) => kind = k,
                TcActionAttribute::Options(o) => opts = o,
                TcActionAttribute::Stats(s) => self.stats(s),
                _ => {}
            }
        }
        // Raw options of the kinds netlink-packet-route does not type.
        let raw = |kind: u16| {
            opts.iter().find_map(|o| match o {
                TcActionOption::Other(n) if n.kind() & !act::NESTED == kind => Some(value_of(n)),
                _ => None,
            })
        };
        if let Some(tm) = raw(act::TM).filter(|_| kind != "mirred" && kind != "ct") {
            let word = |i: usize| {
                tm.get(i * 8..i * 8 + 8)
                    .map(|b| u64::from_ne_bytes(b.try_into().expect("8")))
            };
            if let (Some(i), Some(l)) = (word(0), word(1)) {
                self.tm(i, l);
            }
        }
        match kind {
            "mirred" => {
                for o in opts {
                    match o {
                        TcActionOption::Mirror(TcActionMirrorOption::Parms(p)) => match p.eaction {
                            TcMirrorActionType::EgressRedir | TcMirrorActionType::EgressMirror => {
                                self.actions.push(Action::Output(port(p.ifindex)));
                            }
                            other => unknown.push(format!("mirred {other:?}")),
                        },
                        TcActionOption::Mirror(TcActionMirrorOption::Tm(t)) => {
                            self.tm(t.install, t.lastuse);
                        }
                        _ => {}
                    }
                }
            }
            "gact" => match raw(act::PARMS).and_then(|p| i32_at(&p, 8)) {
                Some(verdict::SHOT) => self.actions.push(Action::Drop),
                Some(v) if v & !verdict::EXT_VAL_MASK == verdict::GOTO_CHAIN => {
                    self.actions
                        .push(Action::GotoTable((v & verdict::EXT_VAL_MASK) as u32));
                }
                other => unknown.push(format!("gact verdict {other:?}")),
            },
            "vlan" => {
                let v_action = raw(act::PARMS).and_then(|p| i32_at(&p, 20));
                let vid = raw(act::VLAN_ID)
                    .and_then(|b| Some(u16::from_ne_bytes(b.get(..2)?.try_into().ok()?)));
                let tpid = raw(act::VLAN_PROTOCOL)
                    .and_then(|b| Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?)));
                let pcp = raw(act::VLAN_PRIORITY).and_then(|b| b.first().copied());
                // Since Linux 5.13 (act_vlan "Fix modify to allow 0") a
                // push always dumps its priority, 0 when none was given (the
                // same tag either way), while a modify dumps one only when
                // it was given, and then 0 is a real rewrite. A modify always
                // carries a vid; the compiler gives the matched one when only
                // the priority changes, which is no rewrite of the vid.
                let (vid, pcp) = match v_action {
                    Some(act::VLAN_POP) => {
                        self.actions.push(Action::StripVlan);
                        (None, None)
                    }
                    Some(act::VLAN_PUSH) => {
                        self.actions
                            .push(Action::PushVlan(tpid.unwrap_or(ETH_8021Q)));
                        (vid, pcp.filter(|p| *p != 0))
                    }
                    Some(act::VLAN_MODIFY) => (
                        vid.filter(|v| Some(*v) != self.matched_vid || pcp.is_none()),
                        pcp,
                    ),
                    other => {
                        unknown.push(format!("vlan action {other:?}"));
                        return;
                    }
                };
                if let Some(v) = vid {
                    self.actions.push(Action::SetVlanVid(v));
                }
                if let Some(p) = pcp {
                    self.actions.push(Action::SetVlanPcp(p));
                }
            }
            "pedit" => match raw(act::PEDIT_PARMS_EX) {
                Some(sel) => self.pedit(&sel, unknown),
                None => unknown.push("pedit without keys".into()),
            },
            other => unknown.push(format!("action {other:?}")),
        }
    }

    /// Rebuilds `mod_dl_dst`/`mod_dl_src` from the keys of an Ethernet
    /// `pedit` (see `flower::pedit_mac_keys`).
    fn pedit(&mut self, sel: &[u8], unknown: &mut Vec<String>) {
        let nkeys = sel.get(20).copied().unwrap_or(0) as usize;
        let mut header = [0u8; 12];
        let mut set = [false; 12];
        let mut first_off = None;
        for k in 0..nkeys {
            let Some(key) = sel.get(24 + k * 24..24 + (k + 1) * 24) else {
                unknown.push("short pedit keys".into());
                return;
            };
            let off = u32::from_ne_bytes(key[8..12].try_into().expect("4")) as usize;
            first_off.get_or_insert(off);
            for b in 0..4 {
                if key[b] == 0 && off + b < 12 {
                    header[off + b] = key[4 + b];
                    set[off + b] = true;
                }
            }
        }
        let field = |r: std::ops::Range<usize>| -> Option<Mac> {
            set[r.clone()]
                .iter()
                .all(|s| *s)
                .then(|| header[r].try_into().expect("6"))
        };
        let (dst, src) = (field(0..6), field(6..12).map(Action::SetDlSrc));
        let dst = dst.map(Action::SetDlDst);
        let mut both: Vec<Action> = if first_off.unwrap_or(0) >= 4 && src.is_some() {
            src.into_iter().chain(dst).collect()
        } else {
            dst.into_iter().chain(src).collect()
        };
        if both.is_empty() {
            unknown.push("pedit of something other than a MAC".into());
        }
        self.actions.append(&mut both);
    }
}

/// Parses flower options from raw `TCA_OPTIONS` bytes (for tests and
/// tools).
///
/// # Errors
/// An attribute that does not parse.
pub fn parse_options(bytes: &[u8]) -> Result<Vec<K>, String> {
    NlasIterator::new(bytes)
        .map(|nla| {
            let nla: NlaBuffer<&[u8]> = nla.map_err(|e| e.to_string())?;
            K::parse(&nla).map_err(|e| e.to_string())
        })
        .collect()
}
