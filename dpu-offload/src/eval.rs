//! The reference evaluator: what a flow table does to one packet, computed
//! from the intermediate flow table alone, the slow and obvious way.
//!
//! It knows nothing of masks, subtables, tc or BPF: it parses the frame,
//! tries every flow of the table field by field, takes the highest
//! priority, and applies the actions to a copy of the packet. Tests run
//! the same packets through a back end and through this, and compare.
//!
//! The semantics are the flow language's, as `docs/dpu-offload.md` states
//! them (where OpenFlow and tc differ, the language follows tc, because
//! that is what the hardware does):
//! - a packet's outer VLAN tag is metadata (`tag`), as the kernel holds it
//!   after receive; further tags stay in the frame;
//! - `dl_type` without `dl_vlan` matches untagged packets only;
//!   `dl_vlan=N` matches an 802.1Q (0x8100) outer tag, and `dl_type` then
//!   names the EtherType inside it;
//! - `push_vlan` takes the `mod_vlan_vid`/`mod_vlan_pcp` that follow it
//!   (VID and PCP 0 otherwise) and pushes the current tag into the frame;
//!   `mod_vlan_vid` on an untagged packet pushes an 802.1Q tag; on a tagged
//!   one it rewrites the VID (the PCP too when given) and re-tags 802.1Q;
//!   `strip_vlan` pops the outer tag and lifts the next one from the frame;
//! - the last `output` sends the packet, earlier ones send copies of it as
//!   it is at that point; a list ending without `output`, `drop` or
//!   `goto_table` drops; a packet no flow of table 0 matches is left to
//!   the kernel ([`Verdict::Miss`]), as is one no flow of a later table
//!   matches.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::flow::{
    Action, ETH_8021AD, ETH_8021Q, ETH_ARP, ETH_IP, ETH_IPV6, Flow, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Mac, Masked, VlanMatch,
};

/// A VLAN tag held as metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag {
    /// TPID (0x8100, 0x88a8).
    pub tpid: u16,
    /// The TCI: PCP (3 bits), DEI, VID (12 bits).
    pub tci: u16,
}

/// A packet as the classifier sees it: the frame (Ethernet header first,
/// inner tags included) and the outer tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Packet {
    /// Outer tag, if any.
    pub tag: Option<Tag>,
    /// The frame without the outer tag.
    pub frame: Vec<u8>,
}

/// What happens to the packet in the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No flow matched: the kernel handles it as if there were no table.
    Miss,
    /// Dropped (`drop`, or actions without a final output).
    Drop,
    /// Sent out of the last `output` port (see [`Outcome::outputs`]).
    Output,
}

/// What the table did with one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Index (in the table) of the flow that matched in each table the
    /// packet visited.
    pub matched: Vec<usize>,
    /// Every packet sent, in order: (port as written in the flow, packet).
    pub outputs: Vec<(String, Packet)>,
    /// The end.
    pub verdict: Verdict,
    /// Two flows of equal priority matched somewhere: which one wins is not
    /// defined (OpenFlow leaves it open), so back ends may differ.
    pub ambiguous: bool,
}

/// The fields a flow can match, read from a packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Fields {
    dl_dst: Mac,
    dl_src: Mac,
    eth_type: u16,
    nw_src: [u8; 16],
    nw_dst: [u8; 16],
    v6: bool,
    nw_proto: u8,
    nw_tos: u8,
    nw_ttl: u8,
    tp_src: u16,
    tp_dst: u16,
    tcp_flags: u16,
    icmp_type: u8,
    icmp_code: u8,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// IPv6 extension headers the flow dissector walks (hop-by-hop, routing,
/// destination options) and the one that ends the walk (fragment).
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DSTOPTS: u8 = 60;
/// The flow dissector's budget of headers (`MAX_FLOW_DISSECT_HDRS`): each
/// VLAN tag and each IPv6 extension header takes one.
pub const MAX_HEADERS: usize = 15;

/// The fields of a frame as flower's flow dissector reads them (called
/// without `FLOW_DISSECTOR_F_PARSE_1ST_FRAG`), `tagged` when the packet
/// has an outer tag as metadata:
/// - `eth_type` is the EtherType right behind the outer tag, as flower
///   matches `vlan_ethtype`: a second tag in the frame is not
///   looked through, so `dl_vlan=N,ip` does not match a stacked-tag frame
///   (real cls_flower on 6.1 and 6.12 agrees) and `dl_vlan=N` does;
/// - an IPv4 header shorter than 20 bytes gives no L3 fields;
/// - fragments, first ones included (MF or an offset, or an IPv6 fragment
///   header), give the protocol but no L4 fields;
/// - IPv6 hop-by-hop, routing and destination options headers are walked;
/// - ports from 4 bytes, TCP flags only from a whole TCP header (20 bytes,
///   data offset at least 5), ICMP type and code from a whole ICMP header
///   (8 bytes);
/// - ARP fields only for Ethernet/IPv4 requests and replies;
/// - the budget of [`MAX_HEADERS`]: past it the walk stops where it is,
///   and the header that went over it still gives the ports behind it.
fn fields(f: &[u8], tagged: bool) -> Fields {
    let mut x = Fields::default();
    let (Some(dst), Some(src), Some(t)) = (f.get(0..6), f.get(6..12), be16(f, 12)) else {
        return x;
    };
    x.dl_dst.copy_from_slice(dst);
    x.dl_src.copy_from_slice(src);
    x.eth_type = t;
    let mut hdrs = usize::from(tagged);
    let l3 = f.get(14..).unwrap_or(&[]);
    let mut ports_only = false;
    let (proto, l4) = match x.eth_type {
        ETH_IP if l3.len() >= 20 => {
            let ihl = usize::from(l3[0] & 0x0f) * 4;
            if ihl < 20 {
                return x;
            }
            x.nw_tos = l3[1];
            x.nw_ttl = l3[8];
            x.nw_proto = l3[9];
            x.nw_src[..4].copy_from_slice(&l3[12..16]);
            x.nw_dst[..4].copy_from_slice(&l3[16..20]);
            let fragment = (u16::from(l3[6] & 0x3f) << 8 | u16::from(l3[7])) != 0;
            if fragment {
                return x;
            }
            (l3[9], l3.get(ihl..).unwrap_or(&[]))
        }
        ETH_IPV6 if l3.len() >= 40 => {
            x.v6 = true;
            x.nw_tos = (l3[0] << 4) | (l3[1] >> 4);
            x.nw_ttl = l3[7];
            x.nw_src.copy_from_slice(&l3[8..24]);
            x.nw_dst.copy_from_slice(&l3[24..40]);
            let mut proto = l3[6];
            let mut at = 40;
            while [IPV6_HOPOPTS, IPV6_ROUTING, IPV6_DSTOPTS, IPV6_FRAGMENT].contains(&proto) {
                let (Some(&next), Some(&len)) = (l3.get(at), l3.get(at + 1)) else {
                    x.nw_proto = proto;
                    return x;
                };
                if proto == IPV6_FRAGMENT {
                    x.nw_proto = next;
                    return x;
                }
                proto = next;
                at += (usize::from(len) + 1) * 8;
                hdrs += 1;
                if hdrs > MAX_HEADERS {
                    ports_only = true;
                    break;
                }
            }
            x.nw_proto = proto;
            (proto, l3.get(at..).unwrap_or(&[]))
        }
        ETH_ARP if l3.len() >= 28 => {
            if l3[..6] == [0, 1, 0x08, 0, 6, 4] && l3[6] == 0 && matches!(l3[7], 1 | 2) {
                x.nw_proto = l3[7];
                x.nw_src[..4].copy_from_slice(&l3[14..18]);
                x.nw_dst[..4].copy_from_slice(&l3[24..28]);
            }
            return x;
        }
        _ => return x,
    };
    match proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP if l4.len() >= 4 => {
            x.tp_src = be16(l4, 0).unwrap_or(0);
            x.tp_dst = be16(l4, 2).unwrap_or(0);
            if proto == IPPROTO_TCP && !ports_only && l4.len() >= 20 && l4[12] >> 4 >= 5 {
                x.tcp_flags = (u16::from(l4[12] & 0x0f) << 8) | u16::from(l4[13]);
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6
            if !ports_only && l4.len() >= 8 && ((proto == IPPROTO_ICMP) != x.v6) =>
        {
            x.icmp_type = l4[0];
            x.icmp_code = l4[1];
        }
        _ => {}
    }
    x
}

fn masked_eq<const N: usize>(v: [u8; N], m: &Masked<[u8; N]>) -> bool {
    v.iter()
        .zip(m.mask)
        .zip(m.value)
        .all(|((b, k), w)| b & k == w)
}

fn ip_eq(packet: [u8; 16], m: &Masked<std::net::IpAddr>) -> bool {
    let (v, k) = match (m.value, m.mask) {
        (std::net::IpAddr::V4(v), std::net::IpAddr::V4(k)) => {
            let mut a = [0u8; 16];
            let mut b = [0u8; 16];
            a[..4].copy_from_slice(&v.octets());
            b[..4].copy_from_slice(&k.octets());
            (a, b)
        }
        (std::net::IpAddr::V6(v), std::net::IpAddr::V6(k)) => (v.octets(), k.octets()),
        _ => return false,
    };
    packet.iter().zip(k).zip(v).all(|((p, k), v)| p & k == v)
}

/// Whether `flow` (ignoring port and table) matches the packet.
pub fn matches(flow: &Flow, p: &Packet) -> bool {
    let m = &flow.matches;
    let x = fields(&p.frame, p.tag.is_some());
    if m.dl_dst.is_some_and(|d| !masked_eq(x.dl_dst, &d))
        || m.dl_src.is_some_and(|s| !masked_eq(x.dl_src, &s))
    {
        return false;
    }
    match (m.vlan, m.dl_type) {
        (Some(VlanMatch::Tagged { vid, pcp }), _) => {
            let Some(t) = p.tag else { return false };
            if t.tpid != ETH_8021Q
                || vid.is_some_and(|v| t.tci & 0x0fff != v)
                || pcp.is_some_and(|c| (t.tci >> 13) as u8 != c)
            {
                return false;
            }
        }
        (Some(VlanMatch::Untagged), _) | (None, Some(_)) => {
            if p.tag.is_some() {
                return false;
            }
        }
        (None, None) => {}
    }
    if m.dl_type.is_some_and(|t| t != x.eth_type) {
        return false;
    }
    let u8_eq = |want: Option<u8>, got: u8| want.is_none_or(|w| w == got);
    m.nw_src.is_none_or(|a| ip_eq(x.nw_src, &a))
        && m.nw_dst.is_none_or(|a| ip_eq(x.nw_dst, &a))
        && u8_eq(m.nw_proto, x.nw_proto)
        && m.nw_tos.is_none_or(|t| x.nw_tos & 0xfc == t)
        && u8_eq(m.nw_ttl, x.nw_ttl)
        && m.tp_src.is_none_or(|t| x.tp_src & t.mask == t.value)
        && m.tp_dst.is_none_or(|t| x.tp_dst & t.mask == t.value)
        && m.tcp_flags.is_none_or(|t| x.tcp_flags & t.mask == t.value)
        && u8_eq(m.icmp_type, x.icmp_type)
        && u8_eq(m.icmp_code, x.icmp_code)
}

fn is_vlan(t: u16) -> bool {
    t == ETH_8021Q || t == ETH_8021AD
}

impl Packet {
    /// An untagged packet.
    pub fn new(frame: Vec<u8>) -> Self {
        Self { tag: None, frame }
    }

    /// Takes the first tag out of the frame, if the frame has one.
    fn pull_tag(&mut self) -> Option<Tag> {
        let t = be16(&self.frame, 12)?;
        if !is_vlan(t) || self.frame.len() < 18 {
            return None;
        }
        let tci = be16(&self.frame, 14)?;
        self.frame.drain(12..16);
        Some(Tag { tpid: t, tci })
    }

    /// The packet as the wire carries it: the outer tag written into the
    /// frame.
    pub fn wire(&self) -> Vec<u8> {
        let mut f = self.frame.clone();
        if let Some(t) = self.tag {
            let mut tag = t.tpid.to_be_bytes().to_vec();
            tag.extend_from_slice(&t.tci.to_be_bytes());
            f.splice(12..12, tag);
        }
        f
    }

    /// A packet received from the wire: the first tag becomes metadata.
    pub fn from_wire(frame: &[u8]) -> Self {
        let mut p = Self::new(frame.to_vec());
        p.tag = p.pull_tag();
        p
    }

    fn push(&mut self, tpid: u16, tci: u16) {
        if let Some(old) = self.tag {
            let mut tag = old.tpid.to_be_bytes().to_vec();
            tag.extend_from_slice(&old.tci.to_be_bytes());
            self.frame.splice(12..12, tag);
        }
        self.tag = Some(Tag { tpid, tci });
    }

    fn pop(&mut self) {
        if self.tag.take().is_none() && self.pull_tag().is_none() {
            return;
        }
        self.tag = self.pull_tag();
    }
}

/// Runs `packet`, received on `in_port`, through `flows`.
pub fn evaluate(flows: &[Flow], in_port: &str, packet: &Packet) -> Outcome {
    let mut p = packet.clone();
    let mut out = Outcome {
        matched: Vec::new(),
        outputs: Vec::new(),
        verdict: Verdict::Miss,
        ambiguous: false,
    };
    let mut table = 0;
    loop {
        let mut best: Option<usize> = None;
        for (i, f) in flows.iter().enumerate() {
            if f.in_port != in_port || f.table != table || !matches(f, &p) {
                continue;
            }
            match best {
                Some(b) if flows[b].priority > f.priority => {}
                Some(b) if flows[b].priority == f.priority => out.ambiguous = true,
                _ => best = Some(i),
            }
        }
        let Some(b) = best else {
            out.verdict = Verdict::Miss;
            return out;
        };
        out.matched.push(b);
        let acts = &flows[b].actions;
        let mut next = None;
        let mut i = 0;
        while i < acts.len() {
            match &acts[i] {
                Action::Output(port) => out.outputs.push((port.clone(), p.clone())),
                Action::Drop => {
                    out.verdict = Verdict::Drop;
                    return out;
                }
                Action::GotoTable(t) => next = Some(*t),
                Action::StripVlan => p.pop(),
                Action::PushVlan(tpid) => {
                    let (mut vid, mut pcp) = (0, 0);
                    while let Some(a @ (Action::SetVlanVid(_) | Action::SetVlanPcp(_))) =
                        acts.get(i + 1)
                    {
                        match a {
                            Action::SetVlanVid(v) => vid = *v,
                            Action::SetVlanPcp(c) => pcp = *c,
                            _ => unreachable!(),
                        }
                        i += 1;
                    }
                    p.push(*tpid, (u16::from(pcp) << 13) | (vid & 0x0fff));
                }
                Action::SetVlanVid(v) => match p.tag {
                    None => p.push(ETH_8021Q, *v & 0x0fff),
                    Some(t) => {
                        p.tag = Some(Tag {
                            tpid: ETH_8021Q,
                            tci: (t.tci & !0x0fff) | (*v & 0x0fff),
                        });
                    }
                },
                Action::SetVlanPcp(c) => {
                    if let Some(t) = p.tag {
                        p.tag = Some(Tag {
                            tpid: ETH_8021Q,
                            tci: (t.tci & !0xe000) | (u16::from(*c & 7) << 13),
                        });
                    }
                }
                Action::SetDlDst(m) => p.frame[..6].copy_from_slice(m),
                Action::SetDlSrc(m) => p.frame[6..12].copy_from_slice(m),
            }
            i += 1;
        }
        match next {
            Some(t) => table = t,
            None => {
                out.verdict = if matches!(acts.last(), Some(Action::Output(_))) {
                    Verdict::Output
                } else {
                    Verdict::Drop
                };
                return out;
            }
        }
    }
}

/// Frames for tests and examples.
pub mod frame {
    use super::*;

    /// Ethernet header + payload (`eth_type` after the MACs).
    pub fn ether(dst: Mac, src: Mac, eth_type: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + payload.len());
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&eth_type.to_be_bytes());
        f.extend_from_slice(payload);
        // Pad to the Ethernet minimum, as a NIC would.
        if f.len() < 60 {
            f.resize(60, 0);
        }
        f
    }

    /// An IPv4 header (checksum filled in) + `l4`.
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, tos: u8, ttl: u8, l4: &[u8]) -> Vec<u8> {
        let len = (20 + l4.len()) as u16;
        let mut h = vec![0x45, tos];
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&[0, 1, 0x40, 0, ttl, proto, 0, 0]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        let sum = h
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum::<u32>();
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend_from_slice(l4);
        h
    }

    /// An IPv6 header + `l4`.
    pub fn ipv6(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        next: u8,
        tclass: u8,
        hlim: u8,
        l4: &[u8],
    ) -> Vec<u8> {
        let mut h = vec![0x60 | (tclass >> 4), tclass << 4, 0, 0];
        h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        h.extend_from_slice(&[next, hlim]);
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(l4);
        h
    }

    /// A UDP header (no checksum) + payload.
    pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = sport.to_be_bytes().to_vec();
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(payload);
        h
    }

    /// A TCP header (20 bytes, no checksum) with these 12 flag bits.
    pub fn tcp(sport: u16, dport: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = sport.to_be_bytes().to_vec();
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
        h.push(0x50 | ((flags >> 8) as u8 & 0x0f));
        h.push(flags as u8);
        h.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        h.extend_from_slice(payload);
        h
    }

    /// An ICMP/ICMPv6 header + payload.
    pub fn icmp(type_: u8, code: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![type_, code, 0, 0, 0, 0, 0, 0];
        h.extend_from_slice(payload);
        h
    }

    /// An Ethernet/IPv4 ARP body.
    pub fn arp(op: u16, sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
        let mut h = vec![0, 1, 0x08, 0, 6, 4];
        h.extend_from_slice(&op.to_be_bytes());
        h.extend_from_slice(&sha);
        h.extend_from_slice(&spa.octets());
        h.extend_from_slice(&[0; 6]);
        h.extend_from_slice(&tpa.octets());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::{frame::*, *};
    use crate::parse::parse_flows;

    const A: Mac = [2, 0, 0, 0, 0, 1];
    const B: Mac = [2, 0, 0, 0, 0, 2];

    fn udp_to(dst: [u8; 4], port: u16) -> Packet {
        Packet::new(ether(
            B,
            A,
            ETH_IP,
            &ipv4(
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::from(dst),
                IPPROTO_UDP,
                0,
                64,
                &udp(1000, port, b"x"),
            ),
        ))
    }

    #[test]
    fn priorities_decide_and_ties_are_flagged() {
        let flows = parse_flows(
            "priority=10,in_port=a,ip,actions=output:b\n\
             priority=20,in_port=a,udp,tp_dst=53,actions=drop\n\
             priority=20,in_port=a,ip,nw_dst=10.0.0.9,actions=output:c\n",
        )
        .unwrap();
        let o = evaluate(&flows, "a", &udp_to([10, 0, 0, 2], 80));
        assert_eq!(
            (o.matched, o.verdict, o.ambiguous),
            (vec![0], Verdict::Output, false)
        );
        assert_eq!(o.outputs[0].0, "b");
        let o = evaluate(&flows, "a", &udp_to([10, 0, 0, 2], 53));
        assert_eq!((o.matched, o.verdict), (vec![1], Verdict::Drop));
        let o = evaluate(&flows, "a", &udp_to([10, 0, 0, 9], 53));
        assert!(o.ambiguous);
        assert_eq!(
            evaluate(&flows, "b", &udp_to([10, 0, 0, 2], 80)).verdict,
            Verdict::Miss
        );
    }

    #[test]
    fn vlan_actions_move_tags_between_metadata_and_frame() {
        let flows = parse_flows(
            "in_port=a,dl_vlan=0xffff,ip,actions=mod_vlan_vid:5,output:b,push_vlan:0x88a8,mod_vlan_vid:9,output:c,strip_vlan,output:d,strip_vlan,output:e\n",
        )
        .unwrap();
        let p = udp_to([10, 0, 0, 2], 1);
        let o = evaluate(&flows, "a", &p);
        let tags: Vec<Option<Tag>> = o.outputs.iter().map(|(_, p)| p.tag).collect();
        assert_eq!(
            tags,
            [
                Some(Tag {
                    tpid: ETH_8021Q,
                    tci: 5
                }),
                Some(Tag {
                    tpid: ETH_8021AD,
                    tci: 9
                }),
                Some(Tag {
                    tpid: ETH_8021Q,
                    tci: 5
                }),
                None,
            ]
        );
        assert_eq!(
            o.outputs[1].1.frame.len(),
            p.frame.len() + 4,
            "the 802.1Q tag went into the frame"
        );
        assert_eq!(o.outputs[3].1, p, "both tags gone: the packet as it came");
        assert_eq!(Packet::from_wire(&o.outputs[1].1.wire()), o.outputs[1].1);
    }

    #[test]
    fn goto_sees_the_rewritten_packet() {
        let flows = parse_flows(
            "table=0,in_port=a,actions=mod_dl_dst:02:00:00:00:00:99,goto_table:1\n\
             table=1,in_port=a,dl_dst=02:00:00:00:00:99,actions=output:b\n\
             table=1,priority=1,in_port=a,actions=output:c\n",
        )
        .unwrap();
        let o = evaluate(&flows, "a", &udp_to([10, 0, 0, 2], 1));
        assert_eq!(o.matched, vec![0, 1]);
        assert_eq!(o.outputs[0].1.frame[..6], [2, 0, 0, 0, 0, 0x99]);
    }

    /// An IPv4 UDP packet to port 53 with the fragment field `frag`
    /// (flags and offset).
    fn udp_fragment(frag: u16) -> Packet {
        let mut ip = ipv4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            IPPROTO_UDP,
            0,
            64,
            &udp(1000, 53, b"x"),
        );
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        Packet::new(ether(B, A, ETH_IP, &ip))
    }

    #[test]
    fn fragments_first_ones_too_carry_no_ports_as_flower_reads_them() {
        let flows = parse_flows(
            "priority=20,in_port=a,udp,tp_dst=53,actions=output:b\n\
             priority=10,in_port=a,udp,actions=output:c\n",
        )
        .unwrap();
        let port = |p: &Packet| evaluate(&flows, "a", p).outputs[0].0.clone();
        assert_eq!(port(&udp_fragment(0)), "b", "not a fragment");
        assert_eq!(port(&udp_fragment(0x4000)), "b", "DF is no fragment");
        assert_eq!(port(&udp_fragment(0x2000)), "c", "first fragment (MF)");
        assert_eq!(port(&udp_fragment(0x0010)), "c", "last fragment");
    }

    #[test]
    fn ipv6_extension_headers_are_walked_and_a_fragment_header_ends_the_walk() {
        let flows = parse_flows(
            "priority=20,in_port=a,udp6,tp_dst=53,actions=output:b\n\
             priority=10,in_port=a,udp6,actions=output:c\n\
             priority=5,in_port=a,ipv6,actions=output:d\n",
        )
        .unwrap();
        let with = |next: u8, ext: &[u8]| {
            let mut l4 = ext.to_vec();
            l4.extend_from_slice(&udp(1000, 53, b"x"));
            Packet::new(ether(
                B,
                A,
                ETH_IPV6,
                &ipv6(
                    "fd00::1".parse().unwrap(),
                    "fd00::2".parse().unwrap(),
                    next,
                    0,
                    64,
                    &l4,
                ),
            ))
        };
        let port = |p: &Packet| evaluate(&flows, "a", p).outputs[0].0.clone();
        // Hop-by-hop (8 bytes) then destination options (16 bytes) then UDP.
        let mut ext = vec![IPV6_DSTOPTS, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[IPPROTO_UDP, 1, 1, 12]);
        ext.extend_from_slice(&[0; 12]);
        assert_eq!(port(&with(IPV6_HOPOPTS, &ext)), "b");
        // A fragment header (first fragment): udp, but no ports.
        assert_eq!(
            port(&with(IPV6_FRAGMENT, &[IPPROTO_UDP, 0, 0, 1, 0, 0, 0, 7])),
            "c"
        );
        // The dissector's budget: 16 headers are walked (the 16th goes
        // over it, and the ports behind it are still read), 17 are not.
        let hops = |n: usize| {
            let mut h = Vec::new();
            for _ in 1..n {
                h.extend_from_slice(&[IPV6_HOPOPTS, 0, 1, 4, 0, 0, 0, 0]);
            }
            h.extend_from_slice(&[IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0]);
            with(IPV6_HOPOPTS, &h)
        };
        assert_eq!(port(&hops(15)), "b");
        assert_eq!(port(&hops(16)), "b");
        assert_eq!(port(&hops(17)), "d");
    }

    #[test]
    fn arp_fields_come_only_from_requests_and_replies() {
        let flows = parse_flows(
            "priority=20,in_port=a,arp,arp_op=3,actions=output:b\n\
             priority=15,in_port=a,arp,arp_op=0,actions=output:c\n\
             priority=10,in_port=a,arp,actions=output:d\n",
        )
        .unwrap();
        let arp_op = |op: u16| {
            let body = arp(
                op,
                A,
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 0, 0, 2),
            );
            evaluate(&flows, "a", &Packet::new(ether(B, A, ETH_ARP, &body))).outputs[0]
                .0
                .clone()
        };
        assert_eq!(arp_op(1), "d");
        // A RARP request reads as opcode 0, as flower's dissector leaves it.
        assert_eq!(arp_op(3), "c");
    }

    #[test]
    fn behind_an_outer_tag_a_second_tag_is_the_ethertype() {
        let flows = parse_flows(
            "priority=20,in_port=a,dl_vlan=9,udp,tp_dst=53,actions=output:b\n\
             priority=10,in_port=a,dl_vlan=9,actions=output:c\n",
        )
        .unwrap();
        let inner = udp_to([10, 0, 0, 2], 53);
        let mut frame = inner.frame.clone();
        frame.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        let qinq = Packet {
            tag: Some(Tag {
                tpid: ETH_8021Q,
                tci: 9,
            }),
            frame,
        };
        // The EtherType behind tag 9 is 0x8100, not IPv4: only the flow
        // without dl_type matches, as in cls_flower.
        assert_eq!(evaluate(&flows, "a", &qinq).outputs[0].0, "c");
        // One tag: the EtherType behind it is IPv4.
        let single = Packet {
            tag: Some(Tag {
                tpid: ETH_8021Q,
                tci: 9,
            }),
            frame: inner.frame,
        };
        assert_eq!(evaluate(&flows, "a", &single).outputs[0].0, "b");
    }
}
