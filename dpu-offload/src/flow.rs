//! The intermediate flow table: what a flow matches and does, independent of
//! the back end that runs it (tc-flower now, the eBPF datapath in part 2).
//!
//! Owns the types, their invariants (values are stored already masked, a
//! zero mask is no match at all, prerequisites such as "nw_src needs
//! dl_type=ip" hold) and the canonical text form, which is `ovs-ofctl`
//! syntax and parses back to the same flow. It must not know netlink or
//! interface indexes: ports are names here, resolved by the compiler.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// OpenFlow's default priority (`ovs-ofctl` uses it when none is given).
pub const DEFAULT_PRIORITY: u16 = 32768;
/// `dl_vlan=0xffff`: OpenFlow 1.0's "no 802.1Q header".
pub const VLAN_NONE: u16 = 0xffff;

/// EtherType of IPv4.
pub const ETH_IP: u16 = 0x0800;
/// EtherType of ARP.
pub const ETH_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETH_IPV6: u16 = 0x86dd;
/// EtherType (TPID) of an 802.1Q tag.
pub const ETH_8021Q: u16 = 0x8100;
/// EtherType (TPID) of an 802.1ad (QinQ service) tag.
pub const ETH_8021AD: u16 = 0x88a8;
/// IP protocol numbers the shorthands use.
pub const IPPROTO_ICMP: u8 = 1;
/// TCP.
pub const IPPROTO_TCP: u8 = 6;
/// UDP.
pub const IPPROTO_UDP: u8 = 17;
/// SCTP.
pub const IPPROTO_SCTP: u8 = 132;
/// ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

/// A MAC address.
pub type Mac = [u8; 6];

/// A value and the bits of it that matter; `value` is already `& mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Masked<T> {
    /// The value, with bits outside `mask` cleared.
    pub value: T,
    /// Bits that must match.
    pub mask: T,
}

/// The VLAN part of a match (`dl_vlan`, `dl_vlan_pcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VlanMatch {
    /// `dl_vlan=0xffff`: the packet carries no 802.1Q header.
    Untagged,
    /// A tagged packet, optionally with this VID and/or PCP.
    Tagged {
        /// `dl_vlan`, 0..=4095.
        vid: Option<u16>,
        /// `dl_vlan_pcp`, 0..=7.
        pcp: Option<u8>,
    },
}

/// Everything a flow can match besides its port, table and priority.
/// `None` is a wildcard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Match {
    /// `dl_src`.
    pub dl_src: Option<Masked<Mac>>,
    /// `dl_dst`.
    pub dl_dst: Option<Masked<Mac>>,
    /// `dl_type`: for a VLAN match, the EtherType inside the tag.
    pub dl_type: Option<u16>,
    /// `dl_vlan`, `dl_vlan_pcp`.
    pub vlan: Option<VlanMatch>,
    /// `nw_src` (IPv4 source, ARP SPA) or `ipv6_src`.
    pub nw_src: Option<Masked<IpAddr>>,
    /// `nw_dst` (IPv4 destination, ARP TPA) or `ipv6_dst`.
    pub nw_dst: Option<Masked<IpAddr>>,
    /// `nw_proto`: the IP protocol, or the ARP opcode (low 8 bits).
    pub nw_proto: Option<u8>,
    /// `nw_tos`: the DSCP bits of the TOS/traffic class byte (low two
    /// bits zero), as OpenFlow 1.0 defines it.
    pub nw_tos: Option<u8>,
    /// `nw_ttl` (hop limit for IPv6).
    pub nw_ttl: Option<u8>,
    /// `tp_src`: TCP/UDP/SCTP source port.
    pub tp_src: Option<Masked<u16>>,
    /// `tp_dst`: TCP/UDP/SCTP destination port.
    pub tp_dst: Option<Masked<u16>>,
    /// `tcp_flags` (12 bits).
    pub tcp_flags: Option<Masked<u16>>,
    /// `icmp_type` / `icmpv6_type`.
    pub icmp_type: Option<u8>,
    /// `icmp_code` / `icmpv6_code`.
    pub icmp_code: Option<u8>,
}

impl Match {
    /// Whether some packet can match both: every field is either left wild
    /// by one side, or asked for by both with values that agree on every
    /// bit both masks keep. Exact on masked keys; used to find flows whose
    /// order matters (flower cannot order two overlapping filters of one
    /// preference, and a higher-priority flow left in software is shadowed
    /// by an overlapping one the NIC holds).
    #[must_use]
    pub fn overlaps(&self, other: &Match) -> bool {
        fn agree<T: PartialEq + Copy>(a: Option<T>, b: Option<T>) -> bool {
            a.zip(b).is_none_or(|(a, b)| a == b)
        }
        fn agree_masked<T: Copy>(
            a: Option<Masked<T>>,
            b: Option<Masked<T>>,
            bits: impl Fn(T) -> u128,
        ) -> bool {
            a.zip(b).is_none_or(|(a, b)| {
                let common = bits(a.mask) & bits(b.mask);
                bits(a.value) & common == bits(b.value) & common
            })
        }
        fn mac_bits(m: Mac) -> u128 {
            m.iter().fold(0, |acc, b| acc << 8 | u128::from(*b))
        }
        fn ip_bits(a: IpAddr) -> u128 {
            match a {
                IpAddr::V4(v) => u128::from(u32::from(v)),
                IpAddr::V6(v) => u128::from(v),
            }
        }
        let same_family = |a: Option<Masked<IpAddr>>, b: Option<Masked<IpAddr>>| {
            a.zip(b)
                .is_none_or(|(a, b)| a.value.is_ipv4() == b.value.is_ipv4())
        };
        let vlan = match (self.vlan, other.vlan) {
            (Some(VlanMatch::Untagged), Some(VlanMatch::Tagged { .. }))
            | (Some(VlanMatch::Tagged { .. }), Some(VlanMatch::Untagged)) => false,
            (
                Some(VlanMatch::Tagged { vid: v1, pcp: p1 }),
                Some(VlanMatch::Tagged { vid: v2, pcp: p2 }),
            ) => agree(v1, v2) && agree(p1, p2),
            _ => true,
        };
        vlan && agree(self.dl_type, other.dl_type)
            && agree_masked(self.dl_src, other.dl_src, mac_bits)
            && agree_masked(self.dl_dst, other.dl_dst, mac_bits)
            && same_family(self.nw_src, other.nw_src)
            && same_family(self.nw_dst, other.nw_dst)
            && agree_masked(self.nw_src, other.nw_src, ip_bits)
            && agree_masked(self.nw_dst, other.nw_dst, ip_bits)
            && agree(self.nw_proto, other.nw_proto)
            && agree(self.nw_tos, other.nw_tos)
            && agree(self.nw_ttl, other.nw_ttl)
            && agree_masked(self.tp_src, other.tp_src, u128::from)
            && agree_masked(self.tp_dst, other.tp_dst, u128::from)
            && agree_masked(self.tcp_flags, other.tcp_flags, u128::from)
            && agree(self.icmp_type, other.icmp_type)
            && agree(self.icmp_code, other.icmp_code)
    }
}

/// One action, in the order the flow lists them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// `output:PORT`: the last output redirects, earlier ones mirror.
    Output(String),
    /// `drop`: the only action of its flow.
    Drop,
    /// `push_vlan:TPID`.
    PushVlan(u16),
    /// `mod_vlan_vid:VID`.
    SetVlanVid(u16),
    /// `mod_vlan_pcp:PCP`.
    SetVlanPcp(u8),
    /// `strip_vlan` / `pop_vlan`.
    StripVlan,
    /// `mod_dl_src:MAC`.
    SetDlSrc(Mac),
    /// `mod_dl_dst:MAC`.
    SetDlDst(Mac),
    /// `goto_table:N` / `resubmit(,N)`: continue in table N (a later one).
    GotoTable(u32),
}

/// One flow: where it applies, what it matches, what it does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Line in the flow file (1-based; 0 when built in code).
    pub line: usize,
    /// `table`: the tc chain.
    pub table: u32,
    /// `priority`: higher wins, as in OpenFlow.
    pub priority: u16,
    /// `cookie`: opaque to us, reported back.
    pub cookie: u64,
    /// `in_port`: a netdev name or a representor alias (`pf0vf3`, `p0`,
    /// `pf0hpf`).
    pub in_port: String,
    /// The match.
    pub matches: Match,
    /// The actions; empty means drop, as in OpenFlow.
    pub actions: Vec<Action>,
}

impl Flow {
    /// The EtherType tc must be told about for this flow (`tcm_info`
    /// protocol and `TCA_FLOWER_KEY_ETH_TYPE`): the TPID for a VLAN match,
    /// else `dl_type`, else `None` (all protocols).
    pub fn protocol(&self) -> Option<u16> {
        match self.matches.vlan {
            Some(VlanMatch::Tagged { .. }) => Some(ETH_8021Q),
            _ => self.matches.dl_type,
        }
    }

    /// The ports the flow outputs to, in order.
    pub fn outputs(&self) -> impl Iterator<Item = &str> {
        self.actions.iter().filter_map(|a| match a {
            Action::Output(p) => Some(p.as_str()),
            _ => None,
        })
    }
}

fn fmt_mac(f: &mut fmt::Formatter<'_>, m: &Mac) -> fmt::Result {
    write!(
        f,
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

fn fmt_masked_mac(f: &mut fmt::Formatter<'_>, key: &str, m: &Masked<Mac>) -> fmt::Result {
    write!(f, ",{key}=")?;
    fmt_mac(f, &m.value)?;
    if m.mask != [0xff; 6] {
        f.write_str("/")?;
        fmt_mac(f, &m.mask)?;
    }
    Ok(())
}

/// The prefix length of a contiguous mask, `None` for any other mask.
pub fn prefix_len(mask: IpAddr) -> Option<u8> {
    let (bits, width) = match mask {
        IpAddr::V4(m) => (u128::from(u32::from(m)) << 96, 32),
        IpAddr::V6(m) => (u128::from(m), 128),
    };
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0 && ones <= width).then_some(ones as u8)
}

/// The mask of a prefix length.
pub fn mask_of_len(v6: bool, len: u8) -> IpAddr {
    if v6 {
        let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        IpAddr::V6(Ipv6Addr::from(m))
    } else {
        let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        IpAddr::V4(Ipv4Addr::from(m))
    }
}

fn fmt_masked_ip(f: &mut fmt::Formatter<'_>, key: &str, m: &Masked<IpAddr>) -> fmt::Result {
    write!(f, ",{key}={}", m.value)?;
    match prefix_len(m.mask) {
        Some(32) if m.mask.is_ipv4() => Ok(()),
        Some(128) => Ok(()),
        Some(n) => write!(f, "/{n}"),
        None => write!(f, "/{}", m.mask),
    }
}

fn fmt_masked_u16(
    f: &mut fmt::Formatter<'_>,
    key: &str,
    m: &Masked<u16>,
    full: u16,
) -> fmt::Result {
    if m.mask == full {
        write!(f, ",{key}={}", m.value)
    } else {
        write!(f, ",{key}={:#x}/{:#x}", m.value, m.mask)
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Shorthands where they say the same thing (ovs-ofctl prints flows
        // this way too): "tcp" is dl_type=0x0800,nw_proto=6.
        let v6 = self.dl_type == Some(ETH_IPV6);
        let shorthand = match (self.dl_type, self.nw_proto) {
            (Some(ETH_IP), Some(IPPROTO_TCP)) => Some("tcp"),
            (Some(ETH_IP), Some(IPPROTO_UDP)) => Some("udp"),
            (Some(ETH_IP), Some(IPPROTO_SCTP)) => Some("sctp"),
            (Some(ETH_IP), Some(IPPROTO_ICMP)) => Some("icmp"),
            (Some(ETH_IPV6), Some(IPPROTO_TCP)) => Some("tcp6"),
            (Some(ETH_IPV6), Some(IPPROTO_UDP)) => Some("udp6"),
            (Some(ETH_IPV6), Some(IPPROTO_SCTP)) => Some("sctp6"),
            (Some(ETH_IPV6), Some(IPPROTO_ICMPV6)) => Some("icmp6"),
            _ => None,
        };
        match (shorthand, self.dl_type) {
            (Some(s), _) => write!(f, ",{s}")?,
            (None, Some(ETH_IP)) => f.write_str(",ip")?,
            (None, Some(ETH_IPV6)) => f.write_str(",ipv6")?,
            (None, Some(ETH_ARP)) => f.write_str(",arp")?,
            (None, Some(t)) => write!(f, ",dl_type={t:#06x}")?,
            (None, None) => {}
        }
        if let Some(m) = &self.dl_src {
            fmt_masked_mac(f, "dl_src", m)?;
        }
        if let Some(m) = &self.dl_dst {
            fmt_masked_mac(f, "dl_dst", m)?;
        }
        match self.vlan {
            Some(VlanMatch::Untagged) => write!(f, ",dl_vlan={VLAN_NONE:#x}")?,
            Some(VlanMatch::Tagged { vid, pcp }) => {
                if let Some(v) = vid {
                    write!(f, ",dl_vlan={v}")?;
                }
                if let Some(p) = pcp {
                    write!(f, ",dl_vlan_pcp={p}")?;
                }
            }
            None => {}
        }
        let (src, dst) = if v6 {
            ("ipv6_src", "ipv6_dst")
        } else {
            ("nw_src", "nw_dst")
        };
        if let Some(m) = &self.nw_src {
            fmt_masked_ip(f, src, m)?;
        }
        if let Some(m) = &self.nw_dst {
            fmt_masked_ip(f, dst, m)?;
        }
        if let (None, Some(p)) = (shorthand, self.nw_proto) {
            write!(f, ",nw_proto={p}")?;
        }
        if let Some(t) = self.nw_tos {
            write!(f, ",nw_tos={t}")?;
        }
        if let Some(t) = self.nw_ttl {
            write!(f, ",nw_ttl={t}")?;
        }
        if let Some(m) = &self.tp_src {
            fmt_masked_u16(f, "tp_src", m, 0xffff)?;
        }
        if let Some(m) = &self.tp_dst {
            fmt_masked_u16(f, "tp_dst", m, 0xffff)?;
        }
        if let Some(m) = &self.tcp_flags {
            write!(f, ",tcp_flags={:#05x}", m.value)?;
            if m.mask != 0x0fff {
                write!(f, "/{:#05x}", m.mask)?;
            }
        }
        let icmp = if v6 { "icmpv6" } else { "icmp" };
        if let Some(t) = self.icmp_type {
            write!(f, ",{icmp}_type={t}")?;
        }
        if let Some(c) = self.icmp_code {
            write!(f, ",{icmp}_code={c}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Output(p) => write!(f, "output:{p}"),
            Action::Drop => f.write_str("drop"),
            Action::PushVlan(t) => write!(f, "push_vlan:{t:#06x}"),
            Action::SetVlanVid(v) => write!(f, "mod_vlan_vid:{v}"),
            Action::SetVlanPcp(p) => write!(f, "mod_vlan_pcp:{p}"),
            Action::StripVlan => f.write_str("strip_vlan"),
            Action::SetDlSrc(m) => {
                f.write_str("mod_dl_src:")?;
                fmt_mac(f, m)
            }
            Action::SetDlDst(m) => {
                f.write_str("mod_dl_dst:")?;
                fmt_mac(f, m)
            }
            Action::GotoTable(t) => write!(f, "goto_table:{t}"),
        }
    }
}

impl fmt::Display for Flow {
    /// The canonical `ovs-ofctl` form; it parses back to the same flow.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table={},priority={}", self.table, self.priority)?;
        if self.cookie != 0 {
            write!(f, ",cookie={:#x}", self.cookie)?;
        }
        write!(f, ",in_port={}{},actions=", self.in_port, self.matches)?;
        if self.actions.is_empty() {
            return f.write_str("drop");
        }
        for (i, a) in self.actions.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> Match {
        crate::parse::parse_flow(&format!("in_port=p,{text},actions=drop"))
            .unwrap()
            .matches
    }

    #[test]
    fn overlap_is_exact_on_masked_keys() {
        let yes = [
            ("ip", "ip,nw_dst=10.0.0.1"),
            ("ip,nw_dst=10.0.0.0/8", "ip,nw_dst=10.1.0.0/16"),
            ("tcp,tp_dst=0x50/0xfff0", "tcp,tp_dst=81"),
            (
                "dl_dst=02:00:00:00:00:00/ff:00:00:00:00:00",
                "dl_dst=02:11:22:33:44:55",
            ),
            ("dl_vlan=5", "dl_vlan=5,dl_vlan_pcp=3"),
            ("dl_vlan=5,ip", "ip,nw_src=1.2.3.4"),
            ("tcp,tcp_flags=0x002/0x002", "tcp,tcp_flags=0x012"),
            ("nw_tos=8,ip", "ip,nw_ttl=3"),
            ("arp", "dl_src=02:00:00:00:00:01"),
        ];
        let no = [
            ("ip", "arp"),
            ("ip,nw_dst=10.0.0.0/8", "ip,nw_dst=11.0.0.0/8"),
            ("tcp,tp_dst=0x50/0xfff0", "tcp,tp_dst=96"),
            ("tcp", "udp"),
            ("dl_vlan=5", "dl_vlan=6"),
            ("dl_vlan=0xffff,ip", "dl_vlan=5,ip"),
            (
                "dl_dst=02:00:00:00:00:00/ff:00:00:00:00:00",
                "dl_dst=04:11:22:33:44:55",
            ),
            ("icmp,icmp_type=8", "icmp,icmp_type=0"),
            ("ip", "ipv6"),
            ("tcp,tcp_flags=0x002/0x002", "tcp,tcp_flags=0x010"),
        ];
        for (a, b) in yes {
            assert!(m(a).overlaps(&m(b)), "{a} / {b}");
            assert!(m(b).overlaps(&m(a)), "{b} / {a}");
        }
        for (a, b) in no {
            assert!(!m(a).overlaps(&m(b)), "{a} / {b}");
            assert!(!m(b).overlaps(&m(a)), "{b} / {a}");
        }
        assert!(Match::default().overlaps(&m("tcp,tp_dst=22")));
    }

    #[test]
    fn prefix_lengths() {
        for (m, want) in [
            ("255.255.255.0", Some(24)),
            ("255.255.255.255", Some(32)),
            ("0.0.0.0", Some(0)),
            ("255.0.255.0", None),
            ("ffff:ffff::", Some(32)),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(128)),
            ("::ffff", None),
        ] {
            assert_eq!(prefix_len(m.parse().unwrap()), want, "{m}");
        }
        assert_eq!(
            mask_of_len(false, 24),
            "255.255.255.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(mask_of_len(false, 0), "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(
            mask_of_len(true, 128),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
                .parse::<IpAddr>()
                .unwrap()
        );
    }
}
