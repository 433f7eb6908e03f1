//! Shared by the parity and differential tests: four veth "representors"
//! in a switch namespace, each with a "VF" namespace behind it holding a
//! raw socket, and synthetic packets over every key and action of the
//! flow language, each carrying a marker with its number.
//!
//! The namespaces are quiet (no addresses, no ARP, no IPv6), so every frame
//! a socket sees is one a test sent.
#![allow(dead_code)]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use plexus_dpu_offload::{
    eval::{Packet, Tag, frame},
    flow::{ETH_8021AD, ETH_8021Q, ETH_ARP, ETH_IP, ETH_IPV6, Flow, Mac, Masked, VlanMatch},
};
use plexus_testkit::{BpfFs, NetNs, RawSocket, bytes::Rng};

/// Representors `rep0` to `rep3`.
pub const PORTS: usize = 4;

pub struct Rig {
    pub sw: NetNs,
    /// Kept alive for the sockets' interfaces.
    pub vfs: Vec<NetNs>,
    pub socks: Vec<RawSocket>,
    pub bpf: BpfFs,
}

fn quiet(ns: &NetNs) {
    for k in ["all", "default"] {
        ns.sh(
            "sysctl",
            &["-qw", &format!("net.ipv6.conf.{k}.disable_ipv6=1")],
        );
    }
}

impl Rig {
    pub fn new() -> Rig {
        let sw = NetNs::with_prefix("sw").unwrap();
        quiet(&sw);
        let mut vfs = Vec::new();
        let mut socks = Vec::new();
        for i in 0..PORTS {
            let vf = NetNs::with_prefix("vf").unwrap();
            quiet(&vf);
            let rep = format!("rep{i}");
            sw.veth_to(&rep, &vf, "eth0");
            sw.sh("ip", &["link", "set", &rep, "arp", "off", "up"]);
            vf.sh("ip", &["link", "set", "eth0", "arp", "off", "up"]);
            socks.push(vf.run(|| RawSocket::open("eth0").unwrap()));
            vfs.push(vf);
        }
        Rig {
            sw,
            vfs,
            socks,
            bpf: BpfFs::new().unwrap(),
        }
    }

    /// Every frame carrying `id`'s marker that the VFs have received, as
    /// (representor, packet), waiting up to `patience` for at least
    /// `expect` of them and then `settle` for stragglers.
    pub fn outputs(
        &self,
        id: u16,
        expect: usize,
        patience: Duration,
        settle: Duration,
    ) -> Vec<(String, Packet)> {
        let mark = marker(id);
        let mut out = Vec::new();
        let deadline = Instant::now() + patience;
        loop {
            for (j, s) in self.socks.iter().enumerate() {
                for f in s.drain().unwrap() {
                    if f.data.windows(mark.len()).any(|w| w == mark.as_slice()) {
                        let tag = f.tag.map(|(tpid, tci)| Tag { tpid, tci });
                        out.push((format!("rep{j}"), Packet { tag, frame: f.data }));
                    }
                }
            }
            if out.len() >= expect || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        std::thread::sleep(settle);
        for (j, s) in self.socks.iter().enumerate() {
            for f in s.drain().unwrap() {
                if f.data.windows(mark.len()).any(|w| w == mark.as_slice()) {
                    let tag = f.tag.map(|(tpid, tci)| Tag { tpid, tci });
                    out.push((format!("rep{j}"), Packet { tag, frame: f.data }));
                }
            }
        }
        out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        out
    }

    /// The frames carrying the markers of `ids` that the VFs have received,
    /// by id, as (representor, packet) sorted; waiting up to `patience`
    /// for at least `expect` of them in all and then `settle` for
    /// stragglers. Frames of other ids are left out.
    #[allow(dead_code, reason = "used by the differential suite only")]
    pub fn outputs_of(
        &self,
        ids: std::ops::Range<u16>,
        expect: usize,
        patience: Duration,
        settle: Duration,
    ) -> std::collections::BTreeMap<u16, Vec<(String, Packet)>> {
        let mut out: std::collections::BTreeMap<u16, Vec<(String, Packet)>> =
            std::collections::BTreeMap::new();
        let mut n = 0;
        let mut collect = |out: &mut std::collections::BTreeMap<u16, Vec<(String, Packet)>>| {
            for (j, s) in self.socks.iter().enumerate() {
                for f in s.drain().unwrap() {
                    let Some(id) = f
                        .data
                        .windows(MARK.len() + 2)
                        .find(|w| w.starts_with(MARK))
                        .map(|w| u16::from_be_bytes([w[MARK.len()], w[MARK.len() + 1]]))
                        .filter(|id| ids.contains(id))
                    else {
                        continue;
                    };
                    let tag = f.tag.map(|(tpid, tci)| Tag { tpid, tci });
                    out.entry(id)
                        .or_default()
                        .push((format!("rep{j}"), Packet { tag, frame: f.data }));
                    n += 1;
                }
            }
            n
        };
        let deadline = Instant::now() + patience;
        while collect(&mut out) < expect && Instant::now() <= deadline {
            std::thread::sleep(Duration::from_micros(500));
        }
        std::thread::sleep(settle);
        collect(&mut out);
        for v in out.values_mut() {
            v.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        }
        out
    }

    /// Frames with any marker still waiting in the sockets: a late output
    /// of an earlier packet would end here.
    pub fn leftovers(&self) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        for (j, s) in self.socks.iter().enumerate() {
            for f in s.drain().unwrap() {
                if f.data.windows(MARK.len()).any(|w| w == MARK.as_slice()) {
                    out.push((j, f.data));
                }
            }
        }
        out
    }
}

pub const MARK: &[u8; 6] = b"PXTEST";

pub fn marker(id: u16) -> Vec<u8> {
    let mut m = MARK.to_vec();
    m.extend_from_slice(&id.to_be_bytes());
    m
}

fn pick<T: Copy>(rng: &mut Rng, xs: &[T]) -> T {
    xs[rng.below(xs.len())]
}

/// An IPv6 extension header chain of `kinds` (0 hop-by-hop, 43 routing,
/// 60 destination options, 44 fragment) ending in `last`, then `l4`.
fn ipv6_ext(kinds: &[u8], last: u8, frag_offset: u16, l4: &[u8]) -> (u8, Vec<u8>) {
    let mut body = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        let next = kinds.get(i + 1).copied().unwrap_or(last);
        if *k == 44 {
            // Fragment header: offset in 8-byte units, M set.
            let off = (frag_offset << 3) | 1;
            body.extend_from_slice(&[next, 0]);
            body.extend_from_slice(&off.to_be_bytes());
            body.extend_from_slice(&[0, 0, 0x12, 0x34]);
        } else {
            // 8 or 16 bytes, padded with PadN.
            let len = (i % 2) as u8;
            body.extend_from_slice(&[next, len, 1, 4, 0, 0, 0, 0]);
            body.extend(std::iter::repeat_n(0, usize::from(len) * 8));
        }
    }
    body.extend_from_slice(l4);
    (kinds.first().copied().unwrap_or(last), body)
}

/// A random packet (as it comes off the wire: the outer tag, if any,
/// becomes metadata) over a small universe of values, so that flows
/// match, almost match and miss; every case the flow dissector treats
/// apart is there: fragments (first and later, IPv4 and IPv6), IPv6
/// extension headers (to past the dissector's budget), ARP opcodes other
/// than request and reply, TCP flags and short TCP headers, ICMP, IPv4
/// options and a bad IHL, and up to three VLAN tags.
pub fn packet(rng: &mut Rng, id: u16) -> Packet {
    let macs: [Mac; 4] = [
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 1, 1],
        [2, 0, 0, 0, 0, 0x99],
        [0xff; 6],
    ];
    let src = macs[rng.below(2)];
    let dst = macs[rng.below(4)];
    let v4 = |rng: &mut Rng| {
        Ipv4Addr::from(pick(
            rng,
            &[0x0a01_0203u32, 0x0a01_ff01, 0x0a02_0001, 0xc0a8_0001],
        ))
    };
    let six: [Ipv6Addr; 3] = [
        "fd00::1".parse().unwrap(),
        "fd00:0:0:1::2".parse().unwrap(),
        "fd01::1".parse().unwrap(),
    ];
    let v6 = |rng: &mut Rng| six[rng.below(3)];
    let port = |rng: &mut Rng| pick(rng, &[22u16, 80, 53, 1000, 0x1234, 0x1fff]);
    let mut payload = marker(id);
    payload.extend_from_slice(b"payload");
    let tos = pick(rng, &[0u8, 0x28, 0x2b, 0xb8]);
    let ttl = pick(rng, &[64u8, 1, 255]);
    let tcp_flags = |rng: &mut Rng| pick(rng, &[0x002u16, 0x012, 0x010, 0x011, 0x004, 0x0c2]);
    let l4 = |rng: &mut Rng, proto: u8| match proto {
        6 => frame::tcp(port(rng), port(rng), tcp_flags(rng), &payload),
        17 | 132 => frame::udp(port(rng), port(rng), &payload),
        1 => frame::icmp(pick(rng, &[8u8, 0, 3]), pick(rng, &[0u8, 1]), &payload),
        58 => frame::icmp(pick(rng, &[128u8, 129, 135]), 0, &payload),
        _ => payload.clone(),
    };
    let (eth_type, body) = match rng.below(20) {
        0..=4 => {
            let proto = pick(rng, &[17u8, 6, 1, 132, 47]);
            let b = l4(rng, proto);
            (ETH_IP, frame::ipv4(v4(rng), v4(rng), proto, tos, ttl, &b))
        }
        5..=7 => {
            let proto = pick(rng, &[17u8, 6, 58]);
            let b = l4(rng, proto);
            (ETH_IPV6, frame::ipv6(v6(rng), v6(rng), proto, tos, ttl, &b))
        }
        8 => {
            // IPv4 fragments: first (MF), middle, last; DF alone is none.
            let proto = pick(rng, &[17u8, 6, 1]);
            let b = l4(rng, proto);
            let mut ip = frame::ipv4(v4(rng), v4(rng), proto, tos, ttl, &b);
            let field: u16 = pick(rng, &[0x2000, 0x2010, 0x0010, 0x4000]);
            ip[6..8].copy_from_slice(&field.to_be_bytes());
            (ETH_IP, ip)
        }
        9 => {
            // IPv6 extension headers: a few, or around the budget.
            let n = pick(rng, &[1usize, 2, 3, 15, 16, 17]);
            let kinds: Vec<u8> = (0..n).map(|_| pick(rng, &[0u8, 43, 60])).collect();
            let proto = pick(rng, &[17u8, 6, 58]);
            let b = l4(rng, proto);
            let (next, body) = ipv6_ext(&kinds, proto, 0, &b);
            (
                ETH_IPV6,
                frame::ipv6(v6(rng), v6(rng), next, tos, ttl, &body),
            )
        }
        10 => {
            // IPv6 fragments, behind another header or not.
            let kinds: &[u8] = pick(rng, &[&[44u8][..], &[0, 44], &[60, 44]]);
            let proto = pick(rng, &[17u8, 6, 58]);
            let b = l4(rng, proto);
            let (next, body) = ipv6_ext(kinds, proto, pick(rng, &[0u16, 185]), &b);
            (
                ETH_IPV6,
                frame::ipv6(v6(rng), v6(rng), next, tos, ttl, &body),
            )
        }
        11 => {
            // IPv4 with options, or an IHL below 5.
            let b = l4(rng, 17);
            let mut ip = frame::ipv4(v4(rng), v4(rng), 17, tos, ttl, &b);
            if rng.below(2) == 0 {
                ip[0] = 0x46;
                ip.splice(20..20, [1, 1, 1, 0]);
            } else {
                ip[0] = 0x44;
            }
            (ETH_IP, ip)
        }
        12 => {
            // TCP with a data offset below 5.
            let mut t = frame::tcp(port(rng), port(rng), tcp_flags(rng), &payload);
            t[12] = 0x40 | (t[12] & 0x0f);
            (ETH_IP, frame::ipv4(v4(rng), v4(rng), 6, tos, ttl, &t))
        }
        13..=15 => {
            let op = pick(rng, &[1u16, 2, 1, 2, 3, 4, 8, 9, 0x0101]);
            let mut b = frame::arp(op, src, v4(rng), v4(rng));
            if rng.below(8) == 0 {
                b[1] = 6; // IEEE 802 hardware type: not Ethernet
            }
            b.extend_from_slice(&payload);
            (ETH_ARP, b)
        }
        _ => {
            let proto = pick(rng, &[17u8, 6]);
            let b = l4(rng, proto);
            (ETH_IP, frame::ipv4(v4(rng), v4(rng), proto, tos, ttl, &b))
        }
    };
    let mut wire = frame::ether(dst, src, eth_type, &body);
    let tag = |tpid: u16, tci: u16| {
        let mut t = tpid.to_be_bytes().to_vec();
        t.extend_from_slice(&tci.to_be_bytes());
        t
    };
    let pcp = |rng: &mut Rng| (rng.below(8) as u16) << 13;
    // Half untagged: most flows match untagged packets only.
    let tags: Vec<Vec<u8>> = match rng.below(14) {
        0 => vec![tag(ETH_8021Q, 100 | pcp(rng))],
        1 => vec![tag(ETH_8021Q, 7)],
        2 => vec![tag(ETH_8021Q, 9 | pick(rng, &[0u16, 3]) << 13)],
        3 => vec![tag(ETH_8021AD, 100)],
        4 => vec![tag(ETH_8021Q, 200 | 3 << 13)],
        5 => vec![
            tag(pick(rng, &[ETH_8021Q, ETH_8021AD]), 100),
            tag(ETH_8021Q, 42),
        ],
        6 => vec![tag(ETH_8021Q, 100), tag(ETH_8021Q, 5), tag(ETH_8021AD, 6)],
        _ => Vec::new(),
    };
    for t in tags.iter().rev() {
        wire.splice(12..12, t.iter().copied());
    }
    Packet::from_wire(&wire)
}

fn masked_mac(rng: &mut Rng, m: Option<Masked<Mac>>, fallback: Mac) -> Mac {
    let Some(m) = m else { return fallback };
    let mut out = m.value;
    for (o, k) in out.iter_mut().zip(m.mask) {
        *o |= rng.below(256) as u8 & !k;
    }
    out
}

fn masked_u16(rng: &mut Rng, m: Option<Masked<u16>>, fallback: u16) -> u16 {
    m.map_or(fallback, |m| m.value | (rng.below(65536) as u16 & !m.mask))
}

fn masked_ip(rng: &mut Rng, m: Option<Masked<IpAddr>>, fallback: IpAddr) -> IpAddr {
    match m.map(|m| (m.value, m.mask)) {
        Some((IpAddr::V4(v), IpAddr::V4(k))) => {
            IpAddr::V4((u32::from(v) | (rng.below(1 << 16) as u32 & !u32::from(k))).into())
        }
        Some((IpAddr::V6(v), IpAddr::V6(k))) => {
            IpAddr::V6((u128::from(v) | (rng.below(1 << 16) as u128 & !u128::from(k))).into())
        }
        _ => fallback,
    }
}

/// A packet built to match `flow` (as far as its table-0 view goes:
/// higher flows may still take it), and the representor to send it on.
pub fn aimed(flow: &Flow, rng: &mut Rng, id: u16) -> (usize, Packet) {
    let m = &flow.matches;
    let port: usize = flow
        .in_port
        .strip_prefix("rep")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut payload = marker(id);
    payload.extend_from_slice(b"aimed");
    let src = masked_mac(rng, m.dl_src, [2, 0, 0, 0, 0, 1]);
    let dst = masked_mac(rng, m.dl_dst, [2, 0, 0, 0, 1, 1]);
    let eth_type = m
        .dl_type
        .unwrap_or_else(|| pick(rng, &[ETH_IP, ETH_IPV6, ETH_ARP]));
    let tos = m.nw_tos.map_or(0, |t| t | rng.below(4) as u8);
    let ttl = m.nw_ttl.unwrap_or(64);
    let l4 = |rng: &mut Rng, proto: u8| match proto {
        6 => frame::tcp(
            masked_u16(rng, m.tp_src, 1000),
            masked_u16(rng, m.tp_dst, 80),
            masked_u16(rng, m.tcp_flags, 0x010) & 0x0fff,
            &payload,
        ),
        17 | 132 => frame::udp(
            masked_u16(rng, m.tp_src, 1000),
            masked_u16(rng, m.tp_dst, 53),
            &payload,
        ),
        1 | 58 => frame::icmp(m.icmp_type.unwrap_or(8), m.icmp_code.unwrap_or(0), &payload),
        _ => payload.clone(),
    };
    let body = match eth_type {
        ETH_IP => {
            let proto = m.nw_proto.unwrap_or_else(|| pick(rng, &[17, 6, 1]));
            let b = l4(rng, proto);
            let (IpAddr::V4(s), IpAddr::V4(d)) = (
                masked_ip(rng, m.nw_src, Ipv4Addr::new(10, 1, 2, 3).into()),
                masked_ip(rng, m.nw_dst, Ipv4Addr::new(10, 2, 0, 1).into()),
            ) else {
                unreachable!("an ip flow matches IPv4 addresses")
            };
            frame::ipv4(s, d, proto, tos, ttl, &b)
        }
        ETH_IPV6 => {
            let proto = m.nw_proto.unwrap_or_else(|| pick(rng, &[17, 6, 58]));
            // An extension header as the protocol: the walk must stop on
            // it, past the dissector's budget of headers.
            let (next, b) = if matches!(proto, 0 | 43 | 60) {
                ipv6_ext(&[0; 16], proto, 0, &payload)
            } else {
                (proto, l4(rng, proto))
            };
            let (IpAddr::V6(s), IpAddr::V6(d)) = (
                masked_ip(rng, m.nw_src, "fd00::1".parse::<Ipv6Addr>().unwrap().into()),
                masked_ip(rng, m.nw_dst, "fd01::1".parse::<Ipv6Addr>().unwrap().into()),
            ) else {
                unreachable!("an ipv6 flow matches IPv6 addresses")
            };
            frame::ipv6(s, d, next, tos, ttl, &b)
        }
        ETH_ARP => {
            // Opcode 0 is what the dissector reads for any opcode but
            // request and reply.
            let op = match m.nw_proto {
                Some(0) => pick(rng, &[3u16, 4, 8]),
                Some(op) => u16::from(op),
                None => pick(rng, &[1, 2]),
            };
            let (IpAddr::V4(s), IpAddr::V4(d)) = (
                masked_ip(rng, m.nw_src, Ipv4Addr::new(10, 1, 2, 3).into()),
                masked_ip(rng, m.nw_dst, Ipv4Addr::new(10, 1, 0, 9).into()),
            ) else {
                unreachable!("an arp flow matches IPv4 addresses")
            };
            let mut b = frame::arp(op, src, s, d);
            b.extend_from_slice(&payload);
            b
        }
        _ => payload.clone(),
    };
    let mut wire = frame::ether(dst, src, eth_type, &body);
    let tag = match m.vlan {
        Some(VlanMatch::Tagged { vid, pcp }) => Some(
            vid.unwrap_or(rng.below(4096) as u16)
                | u16::from(pcp.unwrap_or(rng.below(8) as u8)) << 13,
        ),
        Some(VlanMatch::Untagged) => None,
        None if m.dl_type.is_some() => None,
        None => (rng.below(2) == 0).then(|| rng.below(4096) as u16),
    };
    if let Some(tci) = tag {
        let mut t = ETH_8021Q.to_be_bytes().to_vec();
        t.extend_from_slice(&tci.to_be_bytes());
        wire.splice(12..12, t);
    }
    (port, Packet::from_wire(&wire))
}

/// `n` packets for `flows`: half aimed at a flow picked at random (so
/// every flow sees packets), half random; with the port each is sent on.
pub fn cases(flows: &[Flow], n: u16, seed: u64) -> Vec<(usize, Packet)> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|id| {
            if rng.below(2) == 0 {
                let f = &flows[rng.below(flows.len())];
                aimed(f, &mut rng, id)
            } else {
                let port = [0, 0, 1, 2][rng.below(4)];
                (port, packet(&mut rng, id))
            }
        })
        .collect()
}

/// Every case the flow dissector treats apart, on one port.
pub const DISSECTOR: &str = "\
priority=900,in_port=rep0,udp,tp_dst=53,actions=output:rep1
priority=880,in_port=rep0,udp6,tp_dst=53,actions=output:rep1
priority=860,in_port=rep0,tcp,tcp_flags=+syn-ack,actions=output:rep2
priority=840,in_port=rep0,tcp6,tp_src=22,actions=output:rep2
priority=820,in_port=rep0,icmp,icmp_type=8,icmp_code=0,actions=output:rep3
priority=800,in_port=rep0,icmp6,icmp_type=128,actions=output:rep3
priority=780,in_port=rep0,arp,arp_op=1,arp_tpa=10.1.0.0/16,actions=output:rep1
priority=760,in_port=rep0,arp,arp_op=2,actions=output:rep2
priority=740,in_port=rep0,arp,arp_op=0,actions=output:rep3
priority=720,in_port=rep0,ip,nw_proto=17,actions=output:rep2
priority=700,in_port=rep0,ipv6,nw_proto=17,actions=output:rep3
priority=680,in_port=rep0,ipv6,nw_proto=6,actions=mod_dl_src:02:00:00:00:00:bb,output:rep1
priority=660,in_port=rep0,ipv6,nw_proto=0,actions=output:rep2
priority=640,in_port=rep0,tcp,tcp_flags=0/0xfff,actions=output:rep3
priority=500,in_port=rep0,ip,nw_ttl=64,nw_tos=0x28,actions=drop
priority=300,in_port=rep0,ip,actions=output:rep3
priority=280,in_port=rep0,ipv6,actions=drop
priority=260,in_port=rep0,arp,actions=output:rep1
priority=150,in_port=rep0,dl_vlan=100,udp,tp_dst=53,actions=output:rep1
priority=130,in_port=rep0,dl_vlan=100,ip,actions=strip_vlan,output:rep2
priority=110,in_port=rep0,dl_vlan=100,ipv6,actions=output:rep3
priority=90,in_port=rep0,dl_vlan=100,actions=mod_vlan_vid:7,output:rep1
priority=70,in_port=rep0,dl_vlan=200,dl_vlan_pcp=3,actions=output:rep2
priority=40,in_port=rep0,dl_src=02:00:00:00:00:01,actions=output:rep3
priority=100,in_port=rep1,dl_vlan=9,tcp,actions=output:rep0
priority=80,in_port=rep1,dl_vlan=9,actions=drop
priority=60,in_port=rep1,arp,arp_op=2,actions=output:rep0
priority=10,in_port=rep1,udp,actions=output:rep3
";

/// L2 to L4 matches and rewrites.
pub const L2_L4: &str = "\
priority=300,in_port=rep0,tcp,tp_dst=22,actions=drop
priority=250,in_port=rep0,tcp,tcp_flags=+syn-ack,actions=output:rep3
priority=200,in_port=rep0,ip,nw_dst=10.1.0.0/16,actions=output:rep1
priority=200,in_port=rep0,ipv6,ipv6_dst=fd00::/16,actions=output:rep2
priority=150,in_port=rep0,udp,tp_dst=0x1000/0xf000,actions=mod_dl_dst:02:00:00:00:00:aa,output:rep2
priority=100,in_port=rep0,arp,arp_op=1,actions=output:rep1,output:rep2
priority=90,in_port=rep0,icmp,icmp_type=8,actions=output:rep3
priority=80,in_port=rep0,dl_src=02:00:00:00:00:00/ff:ff:ff:ff:ff:00,ip,nw_tos=0x28,actions=output:rep1
priority=70,in_port=rep0,udp6,tp_src=53,actions=output:rep3
priority=60,in_port=rep0,icmp6,icmp_type=128,actions=output:rep1
priority=10,in_port=rep0,ip,actions=drop
priority=100,in_port=rep2,dl_dst=ff:ff:ff:ff:ff:ff,actions=output:rep0,output:rep1,output:rep3
priority=50,in_port=rep2,arp,arp_tpa=10.1.0.0/16,actions=mod_dl_src:02:00:00:00:00:bb,mod_dl_dst:02:00:00:00:00:cc,output:rep3
";

/// VLAN push, pop and modify, and gotos.
pub const VLAN_GOTO: &str = "\
priority=50,in_port=rep1,dl_vlan=100,ip,actions=strip_vlan,output:rep0
priority=40,in_port=rep1,dl_vlan=0xffff,ip,actions=mod_vlan_vid:200,mod_vlan_pcp:5,output:rep0
priority=35,in_port=rep1,dl_vlan=100,dl_vlan_pcp=2,actions=mod_vlan_vid:101,output:rep3
priority=30,in_port=rep1,dl_vlan=7,actions=mod_vlan_vid:8,mod_vlan_pcp:6,output:rep2
priority=20,in_port=rep1,dl_vlan=9,dl_vlan_pcp=3,actions=push_vlan:0x88a8,mod_vlan_vid:10,output:rep3,strip_vlan,output:rep2
priority=20,in_port=rep1,dl_vlan=9,dl_vlan_pcp=0,actions=drop
priority=10,in_port=rep1,dl_type=0x0806,actions=mod_dl_src:02:00:00:00:00:bb,output:rep3
table=0,in_port=rep2,actions=mod_dl_dst:02:00:00:00:00:99,goto_table:3
table=3,priority=20,in_port=rep2,dl_dst=02:00:00:00:00:99,udp,actions=output:rep0,goto_table:7
table=3,priority=20,in_port=rep2,dl_vlan=100,ip,actions=strip_vlan,goto_table:7
table=3,priority=10,in_port=rep2,actions=output:rep1
table=7,priority=5,in_port=rep2,udp,tp_src=1000,actions=push_vlan:0x8100,mod_vlan_vid:4,output:rep3
table=7,priority=5,in_port=rep2,tcp,actions=output:rep1
table=0,in_port=rep0,dl_vlan=100,actions=goto_table:1
table=1,in_port=rep0,dl_vlan=100,dl_vlan_pcp=7,actions=output:rep3
";
