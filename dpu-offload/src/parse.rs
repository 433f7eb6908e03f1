//! The `ovs-ofctl add-flow` syntax, one flow per line.
//!
//! Owns turning text into [`Flow`]s and every error a user can make in a
//! flow file, each with its line and column. Fields are `name=value` (or
//! `name:value`, as ovs-ofctl accepts) separated by commas or blanks;
//! `actions=` comes last and takes the rest of the line. Values are stored
//! masked (`dl_dst=01:02:03:04:05:06/ff:ff:ff:00:00:00` keeps 01:02:03 and
//! zeroes the rest); a zero mask is a wildcard. OpenFlow's prerequisites
//! are enforced (`nw_src` needs `ip`, `ipv6` or `arp`; `tp_dst` needs
//! `tcp`, `udp` or `sctp`), and so is what a flow table can express without
//! a software switch behind it: see [`unsupported_action`].
//!
//! It must not resolve ports or know any back end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::flow::{
    Action, DEFAULT_PRIORITY, ETH_8021AD, ETH_8021Q, ETH_ARP, ETH_IP, ETH_IPV6, Flow, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Mac, Masked, Match, VLAN_NONE,
    VlanMatch, mask_of_len,
};

/// The largest table number, as in Open vSwitch (255 is "all tables").
pub const MAX_TABLE: u32 = 254;

/// A flow file error: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// What is wrong, and how to fix it where we know.
    pub message: String,
}

/// A piece of a line and where it starts (byte offset in the line).
#[derive(Debug, Clone, Copy)]
struct Span<'a> {
    text: &'a str,
    at: usize,
}

struct LineParser<'a> {
    line_no: usize,
    line: &'a str,
}

impl<'a> LineParser<'a> {
    fn err(&self, at: usize, message: impl Into<String>) -> ParseError {
        let column = self.line.get(..at).map_or(at, |s| s.chars().count()) + 1;
        ParseError {
            line: self.line_no,
            column,
            message: message.into(),
        }
    }

    /// Splits `text` (starting at byte `at` of the line) at commas and
    /// blanks outside parentheses.
    fn split<'s>(text: &'s str, at: usize) -> Vec<Span<'s>> {
        let mut out = Vec::new();
        let (mut depth, mut start) = (0usize, 0usize);
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' | ' ' | '\t' if depth == 0 => {
                    if i > start {
                        out.push(Span {
                            text: &text[start..i],
                            at: at + start,
                        });
                    }
                    start = i + 1;
                }
                _ => {}
            }
        }
        if start < text.len() {
            out.push(Span {
                text: &text[start..],
                at: at + start,
            });
        }
        out
    }

    /// `name=value` or `name:value`; `(name, None)` for a bare word.
    fn key_value<'s>(s: Span<'s>) -> (Span<'s>, Option<Span<'s>>) {
        match s.text.find(['=', ':']) {
            Some(i) => (
                Span {
                    text: &s.text[..i],
                    at: s.at,
                },
                Some(Span {
                    text: &s.text[i + 1..],
                    at: s.at + i + 1,
                }),
            ),
            None => (s, None),
        }
    }

    fn parse(&self) -> Result<Flow, ParseError> {
        // actions= takes the rest of the line, commas included.
        let (fields, actions) = match find_actions(self.line) {
            Some((key_at, value_at)) => (&self.line[..key_at], Some((value_at, key_at))),
            None => (self.line, None),
        };
        let mut b = Builder::default();
        for tok in Self::split(fields, 0) {
            let (key, value) = Self::key_value(tok);
            self.field(&mut b, key, value)?;
        }
        let Some((value_at, key_at)) = actions else {
            return Err(self.err(
                self.line.trim_end().len(),
                "missing actions= (every flow needs one, e.g. actions=output:p0 or actions=drop)",
            ));
        };
        let actions = self.actions(&self.line[value_at..], value_at, key_at)?;
        let in_port = b.in_port.take().ok_or_else(|| {
            self.err(
                0,
                "missing in_port: a flow is installed on the ingress of one port (in_port=NAME)",
            )
        })?;
        let flow = Flow {
            line: self.line_no,
            table: b.table.unwrap_or(0),
            priority: b.priority.unwrap_or(DEFAULT_PRIORITY),
            cookie: b.cookie.unwrap_or(0),
            in_port,
            matches: b.m.clone(),
            actions,
        };
        self.check_prerequisites(&b, &flow)?;
        self.check_actions(&flow, key_at)?;
        Ok(flow)
    }

    fn number(&self, v: Span<'_>, max: u64, what: &str) -> Result<u64, ParseError> {
        let t = v.text;
        let n = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => t.parse::<u64>(),
        }
        .map_err(|_| self.err(v.at, format!("{what}: {t:?} is not a number")))?;
        if n > max {
            return Err(self.err(v.at, format!("{what}: {n} is out of range (0..={max})")));
        }
        Ok(n)
    }

    fn split_mask<'s>(v: Span<'s>) -> (Span<'s>, Option<Span<'s>>) {
        match v.text.split_once('/') {
            Some((a, b)) => (
                Span { text: a, at: v.at },
                Some(Span {
                    text: b,
                    at: v.at + a.len() + 1,
                }),
            ),
            None => (v, None),
        }
    }

    fn mac(&self, v: Span<'_>, what: &str) -> Result<Mac, ParseError> {
        let parts: Vec<&str> = v.text.split(':').collect();
        let bad = || {
            self.err(
                v.at,
                format!(
                    "{what}: {:?} is not a MAC address (xx:xx:xx:xx:xx:xx)",
                    v.text
                ),
            )
        };
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut m = [0u8; 6];
        for (o, p) in m.iter_mut().zip(parts) {
            if p.is_empty() || p.len() > 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(m)
    }

    fn masked_mac(&self, v: Span<'_>, what: &str) -> Result<Option<Masked<Mac>>, ParseError> {
        let (val, mask) = Self::split_mask(v);
        let value = self.mac(val, what)?;
        let mask = match mask {
            Some(m) => self.mac(m, what)?,
            None => [0xff; 6],
        };
        let mut masked = value;
        for (b, m) in masked.iter_mut().zip(mask) {
            *b &= m;
        }
        Ok((mask != [0; 6]).then_some(Masked {
            value: masked,
            mask,
        }))
    }

    fn masked_ip(&self, v: Span<'_>, what: &str) -> Result<Option<Masked<IpAddr>>, ParseError> {
        let (val, mask) = Self::split_mask(v);
        let value: IpAddr = val.text.parse().map_err(|_| {
            self.err(
                val.at,
                format!("{what}: {:?} is not an IP address", val.text),
            )
        })?;
        let v6 = value.is_ipv6();
        let width = if v6 { 128 } else { 32 };
        let mask = match mask {
            None => mask_of_len(v6, width),
            Some(m) => match m.text.parse::<u8>() {
                Ok(len) if len <= width => mask_of_len(v6, len),
                Ok(len) => {
                    return Err(self.err(
                        m.at,
                        format!("{what}: prefix length {len} is longer than {width}"),
                    ));
                }
                Err(_) => {
                    let mask: IpAddr = m.text.parse().map_err(|_| {
                        self.err(
                            m.at,
                            format!("{what}: {:?} is neither a prefix length nor a mask", m.text),
                        )
                    })?;
                    if mask.is_ipv6() != v6 {
                        return Err(self.err(
                            m.at,
                            format!("{what}: the mask is not of the address's family"),
                        ));
                    }
                    mask
                }
            },
        };
        let value = match (value, mask) {
            (IpAddr::V4(a), IpAddr::V4(m)) => {
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & u32::from(m)))
            }
            (IpAddr::V6(a), IpAddr::V6(m)) => {
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & u128::from(m)))
            }
            _ => unreachable!("families checked above"),
        };
        let zero = match mask {
            IpAddr::V4(m) => m.is_unspecified(),
            IpAddr::V6(m) => m.is_unspecified(),
        };
        Ok((!zero).then_some(Masked { value, mask }))
    }

    fn masked_u16(
        &self,
        v: Span<'_>,
        max: u16,
        what: &str,
    ) -> Result<Option<Masked<u16>>, ParseError> {
        let (val, mask) = Self::split_mask(v);
        let value = self.number(val, u64::from(max), what)? as u16;
        let mask = match mask {
            Some(m) => self.number(m, u64::from(max), what)? as u16,
            None => max,
        };
        Ok((mask != 0).then_some(Masked {
            value: value & mask,
            mask,
        }))
    }

    fn tcp_flags(&self, v: Span<'_>) -> Result<Option<Masked<u16>>, ParseError> {
        if !v.text.starts_with(['+', '-']) {
            return self.masked_u16(v, 0x0fff, "tcp_flags");
        }
        // +syn-ack: set / clear, as ovs-fields(7) writes them.
        const NAMES: [(&str, u16); 9] = [
            ("fin", 0x001),
            ("syn", 0x002),
            ("rst", 0x004),
            ("psh", 0x008),
            ("ack", 0x010),
            ("urg", 0x020),
            ("ece", 0x040),
            ("cwr", 0x080),
            ("ns", 0x100),
        ];
        let (mut value, mut mask, mut i) = (0u16, 0u16, 0usize);
        let t = v.text;
        while i < t.len() {
            let set = t.as_bytes()[i] == b'+';
            if !set && t.as_bytes()[i] != b'-' {
                return Err(self.err(v.at + i, "tcp_flags: expected + or - before a flag name"));
            }
            let rest = &t[i + 1..];
            let end = rest.find(['+', '-']).unwrap_or(rest.len());
            let name = &rest[..end];
            let bit = NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| *b)
                .ok_or_else(|| {
                    self.err(
                        v.at + i + 1,
                        format!(
                            "tcp_flags: unknown flag {name:?} (fin syn rst psh ack urg ece cwr ns)"
                        ),
                    )
                })?;
            mask |= bit;
            if set {
                value |= bit;
            }
            i += 1 + end;
        }
        Ok(Some(Masked { value, mask }))
    }

    fn set<T: PartialEq>(
        &self,
        slot: &mut Option<T>,
        seen: &mut Marks,
        name: &'static str,
        at: usize,
        value: Option<T>,
    ) -> Result<(), ParseError> {
        if seen.insert(name, at).is_some() {
            return Err(self.err(at, format!("{name} is given twice")));
        }
        *slot = value;
        Ok(())
    }

    fn field(
        &self,
        b: &mut Builder,
        key: Span<'_>,
        value: Option<Span<'_>>,
    ) -> Result<(), ParseError> {
        let name = key.text;
        let shorthand = match name {
            "ip" => Some((ETH_IP, None)),
            "ipv6" => Some((ETH_IPV6, None)),
            "arp" => Some((ETH_ARP, None)),
            "tcp" => Some((ETH_IP, Some(IPPROTO_TCP))),
            "udp" => Some((ETH_IP, Some(IPPROTO_UDP))),
            "sctp" => Some((ETH_IP, Some(IPPROTO_SCTP))),
            "icmp" => Some((ETH_IP, Some(IPPROTO_ICMP))),
            "tcp6" => Some((ETH_IPV6, Some(IPPROTO_TCP))),
            "udp6" => Some((ETH_IPV6, Some(IPPROTO_UDP))),
            "sctp6" => Some((ETH_IPV6, Some(IPPROTO_SCTP))),
            "icmp6" => Some((ETH_IPV6, Some(IPPROTO_ICMPV6))),
            _ => None,
        };
        if let Some((dl_type, proto)) = shorthand {
            if value.is_some() {
                return Err(self.err(key.at, format!("{name} is a shorthand and takes no value")));
            }
            self.set_dl_type(b, dl_type, key.at, name)?;
            if let Some(p) = proto {
                self.set_nw_proto(b, p, key.at, name)?;
            }
            return Ok(());
        }
        let Some(v) = value else {
            return Err(self.err(
                key.at,
                if is_known_field(name) {
                    format!("{name} needs a value ({name}=...)")
                } else {
                    format!("unknown field {name:?}")
                },
            ));
        };
        if v.text.is_empty() {
            return Err(self.err(v.at, format!("{name} has an empty value")));
        }
        let seen = &mut b.seen;
        let m = &mut b.m;
        match name {
            "priority" => {
                let p = self.number(v, 65535, name)? as u16;
                self.set(&mut b.priority, seen, "priority", key.at, Some(p))?;
            }
            "cookie" => {
                if v.text.contains('/') {
                    return Err(
                        self.err(v.at, "cookie masks are for deleting flows, not adding them")
                    );
                }
                let c = self.number(v, u64::MAX, name)?;
                self.set(&mut b.cookie, seen, "cookie", key.at, Some(c))?;
            }
            "table" => {
                let t = self.number(v, u64::from(MAX_TABLE), name)? as u32;
                self.set(&mut b.table, seen, "table", key.at, Some(t))?;
            }
            "in_port" => {
                let p = port_name(v.text).map_err(|e| self.err(v.at, format!("in_port: {e}")))?;
                self.set(&mut b.in_port, seen, "in_port", key.at, Some(p))?;
            }
            "dl_src" | "eth_src" => {
                let mac = self.masked_mac(v, "dl_src")?;
                self.set(&mut m.dl_src, seen, "dl_src", key.at, mac)?;
            }
            "dl_dst" | "eth_dst" => {
                let mac = self.masked_mac(v, "dl_dst")?;
                self.set(&mut m.dl_dst, seen, "dl_dst", key.at, mac)?;
            }
            "dl_type" | "eth_type" => {
                let t = self.number(v, 0xffff, name)? as u16;
                if t < 0x0600 {
                    return Err(self.err(
                        v.at,
                        format!("dl_type {t:#06x} is a length, not an EtherType"),
                    ));
                }
                if t == ETH_8021Q || t == ETH_8021AD {
                    return Err(self.err(
                        v.at,
                        "dl_type is the EtherType inside a VLAN tag; match tags with dl_vlan",
                    ));
                }
                if b.seen.insert("dl_type", key.at).is_some() {
                    return Err(self.err(key.at, format!("{name} is given twice")));
                }
                self.set_dl_type(b, t, key.at, "dl_type")?;
            }
            "dl_vlan" => {
                let vid = self.number(v, 0xffff, name)? as u16;
                let old = b.m.vlan;
                let vlan = if vid == VLAN_NONE {
                    if matches!(old, Some(VlanMatch::Tagged { pcp: Some(_), .. })) {
                        return Err(
                            self.err(key.at, "dl_vlan=0xffff (no tag) contradicts dl_vlan_pcp")
                        );
                    }
                    VlanMatch::Untagged
                } else if vid > 4095 {
                    return Err(self.err(
                        v.at,
                        format!("dl_vlan: {vid} is out of range (0..=4095, or 0xffff for no tag)"),
                    ));
                } else {
                    let pcp = match old {
                        Some(VlanMatch::Tagged { pcp, .. }) => pcp,
                        _ => None,
                    };
                    VlanMatch::Tagged {
                        vid: Some(vid),
                        pcp,
                    }
                };
                b.at.insert("dl_vlan", key.at);
                self.set(
                    &mut b.m.vlan,
                    &mut b.seen_vlan_vid,
                    "dl_vlan",
                    key.at,
                    Some(vlan),
                )?;
            }
            "dl_vlan_pcp" => {
                let pcp = self.number(v, 7, name)? as u8;
                let vlan = match b.m.vlan {
                    Some(VlanMatch::Untagged) => {
                        return Err(
                            self.err(key.at, "dl_vlan_pcp contradicts dl_vlan=0xffff (no tag)")
                        );
                    }
                    Some(VlanMatch::Tagged { vid, .. }) => VlanMatch::Tagged {
                        vid,
                        pcp: Some(pcp),
                    },
                    None => VlanMatch::Tagged {
                        vid: None,
                        pcp: Some(pcp),
                    },
                };
                self.set(
                    &mut b.m.vlan,
                    &mut b.seen_vlan_pcp,
                    "dl_vlan_pcp",
                    key.at,
                    Some(vlan),
                )?;
            }
            "nw_src" | "ipv6_src" | "arp_spa" => {
                let ip = self.masked_ip(v, name)?;
                self.check_family(name, v, ip.as_ref())?;
                b.at.insert("nw_src", key.at);
                self.set(&mut m.nw_src, seen, "nw_src", key.at, ip)?;
            }
            "nw_dst" | "ipv6_dst" | "arp_tpa" => {
                let ip = self.masked_ip(v, name)?;
                self.check_family(name, v, ip.as_ref())?;
                b.at.insert("nw_dst", key.at);
                self.set(&mut m.nw_dst, seen, "nw_dst", key.at, ip)?;
            }
            "nw_proto" | "ip_proto" | "arp_op" => {
                let p = self.number(v, 255, name)? as u8;
                if b.seen.insert("nw_proto", key.at).is_some() {
                    return Err(self.err(key.at, format!("{name} is given twice")));
                }
                self.set_nw_proto(b, p, key.at, name)?;
            }
            "nw_tos" => {
                let t = self.number(v, 255, name)? as u8;
                if t & 3 != 0 {
                    return Err(self.err(
                        v.at,
                        format!("nw_tos {t}: the low two bits are ECN, not DSCP; use a multiple of 4 (or ip_dscp={})", t >> 2),
                    ));
                }
                b.at.insert("nw_tos", key.at);
                self.set(&mut m.nw_tos, seen, "nw_tos", key.at, Some(t))?;
            }
            "ip_dscp" => {
                let d = self.number(v, 63, name)? as u8;
                b.at.insert("nw_tos", key.at);
                self.set(&mut m.nw_tos, seen, "nw_tos", key.at, Some(d << 2))?;
            }
            "nw_ttl" => {
                let t = self.number(v, 255, name)? as u8;
                b.at.insert("nw_ttl", key.at);
                self.set(&mut m.nw_ttl, seen, "nw_ttl", key.at, Some(t))?;
            }
            "tp_src" | "tcp_src" | "udp_src" | "sctp_src" => {
                let p = self.masked_u16(v, 0xffff, name)?;
                b.at.insert("tp_src", key.at);
                self.set(&mut m.tp_src, seen, "tp_src", key.at, p)?;
            }
            "tp_dst" | "tcp_dst" | "udp_dst" | "sctp_dst" => {
                let p = self.masked_u16(v, 0xffff, name)?;
                b.at.insert("tp_dst", key.at);
                self.set(&mut m.tp_dst, seen, "tp_dst", key.at, p)?;
            }
            "tcp_flags" => {
                let f = self.tcp_flags(v)?;
                b.at.insert("tcp_flags", key.at);
                self.set(&mut m.tcp_flags, seen, "tcp_flags", key.at, f)?;
            }
            "icmp_type" | "icmpv6_type" => {
                let t = self.number(v, 255, name)? as u8;
                b.at.insert("icmp_type", key.at);
                self.set(&mut m.icmp_type, seen, "icmp_type", key.at, Some(t))?;
            }
            "icmp_code" | "icmpv6_code" => {
                let c = self.number(v, 255, name)? as u8;
                b.at.insert("icmp_code", key.at);
                self.set(&mut m.icmp_code, seen, "icmp_code", key.at, Some(c))?;
            }
            "actions" => unreachable!("split off before fields are parsed"),
            _ if is_known_field(name) => {
                return Err(self.err(
                    key.at,
                    format!("{name} is an Open vSwitch field Plexus cannot match in tc-flower or its eBPF datapath"),
                ));
            }
            _ => return Err(self.err(key.at, format!("unknown field {name:?}"))),
        }
        Ok(())
    }

    fn check_family(
        &self,
        name: &str,
        v: Span<'_>,
        ip: Option<&Masked<IpAddr>>,
    ) -> Result<(), ParseError> {
        let want_v6 = name.starts_with("ipv6");
        match ip {
            Some(m) if m.value.is_ipv6() != want_v6 => Err(self.err(
                v.at,
                if want_v6 {
                    format!("{name} takes an IPv6 address")
                } else {
                    format!("{name} takes an IPv4 address (use ipv6_src/ipv6_dst for IPv6)")
                },
            )),
            _ => Ok(()),
        }
    }

    fn set_dl_type(
        &self,
        b: &mut Builder,
        t: u16,
        at: usize,
        name: &str,
    ) -> Result<(), ParseError> {
        match b.m.dl_type {
            Some(old) if old != t => Err(self.err(
                at,
                format!("{name} sets dl_type={t:#06x} but the flow already has dl_type={old:#06x}"),
            )),
            _ => {
                b.m.dl_type = Some(t);
                b.at.insert_first("dl_type", at);
                Ok(())
            }
        }
    }

    fn set_nw_proto(
        &self,
        b: &mut Builder,
        p: u8,
        at: usize,
        name: &str,
    ) -> Result<(), ParseError> {
        match b.m.nw_proto {
            Some(old) if old != p => Err(self.err(
                at,
                format!("{name} sets nw_proto={p} but the flow already has nw_proto={old}"),
            )),
            _ => {
                b.m.nw_proto = Some(p);
                b.at.insert_first("nw_proto", at);
                Ok(())
            }
        }
    }

    /// OpenFlow's prerequisites (ovs-fields(7) "Prerequisites"): a field
    /// of a header only means something when the flow pins that header.
    fn check_prerequisites(&self, b: &Builder, flow: &Flow) -> Result<(), ParseError> {
        let m = &flow.matches;
        let at = |k: &str| b.at.get(k).unwrap_or(0);
        let is_ip = matches!(m.dl_type, Some(ETH_IP | ETH_IPV6));
        let is_arp = m.dl_type == Some(ETH_ARP);
        for (k, present) in [
            ("nw_src", m.nw_src.is_some()),
            ("nw_dst", m.nw_dst.is_some()),
        ] {
            if present && !is_ip && !is_arp {
                return Err(self.err(
                    at(k),
                    format!("{k} needs ip, ipv6 or arp (dl_type) in the flow"),
                ));
            }
        }
        for (k, ip) in [("nw_src", &m.nw_src), ("nw_dst", &m.nw_dst)] {
            if let Some(ip) = ip
                && ip.value.is_ipv6() != (m.dl_type == Some(ETH_IPV6))
            {
                return Err(self.err(
                    at(k),
                    format!(
                        "{k}: the address family does not match dl_type {:#06x}",
                        m.dl_type.unwrap_or(0)
                    ),
                ));
            }
        }
        if m.vlan == Some(VlanMatch::Untagged) && m.dl_type.is_none() {
            return Err(self.err(
                b.at.get("dl_vlan").unwrap_or(0),
                "dl_vlan=0xffff (no tag) needs dl_type too: tc tells untagged packets apart only by their EtherType",
            ));
        }
        if m.nw_proto.is_some() && !is_ip && !is_arp {
            return Err(self.err(
                at("nw_proto"),
                "nw_proto needs ip, ipv6 or arp (dl_type) in the flow",
            ));
        }
        for (k, present) in [
            ("nw_tos", m.nw_tos.is_some()),
            ("nw_ttl", m.nw_ttl.is_some()),
        ] {
            if present && !is_ip {
                return Err(self.err(at(k), format!("{k} needs ip or ipv6 (dl_type) in the flow")));
            }
        }
        let l4 = is_ip && matches!(m.nw_proto, Some(IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP));
        for (k, present) in [
            ("tp_src", m.tp_src.is_some()),
            ("tp_dst", m.tp_dst.is_some()),
        ] {
            if present && !l4 {
                return Err(self.err(at(k), format!("{k} needs tcp, udp or sctp in the flow")));
            }
        }
        if m.tcp_flags.is_some() && !(is_ip && m.nw_proto == Some(IPPROTO_TCP)) {
            return Err(self.err(at("tcp_flags"), "tcp_flags needs tcp (or tcp6) in the flow"));
        }
        let icmp = matches!(
            (m.dl_type, m.nw_proto),
            (Some(ETH_IP), Some(IPPROTO_ICMP)) | (Some(ETH_IPV6), Some(IPPROTO_ICMPV6))
        );
        for (k, present) in [
            ("icmp_type", m.icmp_type.is_some()),
            ("icmp_code", m.icmp_code.is_some()),
        ] {
            if present && !icmp {
                return Err(self.err(at(k), format!("{k} needs icmp (or icmp6) in the flow")));
            }
        }
        Ok(())
    }

    fn actions(&self, text: &str, at: usize, key_at: usize) -> Result<Vec<Action>, ParseError> {
        let toks = Self::split(text, at);
        if toks.is_empty() {
            return Err(self.err(key_at, "actions= is empty; write actions=drop to drop"));
        }
        let mut out = Vec::new();
        for tok in toks {
            out.push(self.action(tok)?);
        }
        Ok(out)
    }

    fn action(&self, tok: Span<'_>) -> Result<Action, ParseError> {
        // resubmit(,N) / resubmit(PORT,N)
        if let Some(args) = tok.text.strip_prefix("resubmit(") {
            let inner = args
                .strip_suffix(')')
                .ok_or_else(|| self.err(tok.at, "resubmit( is not closed"))?;
            let (port, table) = inner.split_once(',').unwrap_or((inner, ""));
            if !port.is_empty() {
                return Err(self.err(
                    tok.at,
                    "resubmit with a port would re-run the pipeline as if the packet came in there; only resubmit(,TABLE) is supported",
                ));
            }
            let t = self.number(
                Span {
                    text: table,
                    at: tok.at + "resubmit(".len() + port.len() + 1,
                },
                u64::from(MAX_TABLE),
                "resubmit table",
            )?;
            return Ok(Action::GotoTable(t as u32));
        }
        let (key, value) = Self::key_value(tok);
        let need = |what: &str| -> Result<Span<'_>, ParseError> {
            value.filter(|v| !v.text.is_empty()).ok_or_else(|| {
                self.err(
                    tok.at,
                    format!("{} needs {what} ({}:...)", key.text, key.text),
                )
            })
        };
        let no_value = |a: Action| -> Result<Action, ParseError> {
            match value {
                Some(v) => Err(self.err(v.at, format!("{} takes no argument", key.text))),
                None => Ok(a),
            }
        };
        Ok(match key.text {
            "output" => {
                let v = need("a port")?;
                Action::Output(
                    port_name(v.text).map_err(|e| self.err(v.at, format!("output: {e}")))?,
                )
            }
            "drop" => no_value(Action::Drop)?,
            "strip_vlan" | "pop_vlan" => no_value(Action::StripVlan)?,
            "push_vlan" => {
                let v = need("a TPID")?;
                let t = self.number(v, 0xffff, "push_vlan")? as u16;
                if t != ETH_8021Q && t != ETH_8021AD {
                    return Err(self.err(
                        v.at,
                        format!("push_vlan: TPID {t:#06x} is neither 0x8100 nor 0x88a8"),
                    ));
                }
                Action::PushVlan(t)
            }
            "mod_vlan_vid" => {
                let v = need("a VID")?;
                Action::SetVlanVid(self.number(v, 4095, "mod_vlan_vid")? as u16)
            }
            "mod_vlan_pcp" => {
                let v = need("a priority")?;
                Action::SetVlanPcp(self.number(v, 7, "mod_vlan_pcp")? as u8)
            }
            "mod_dl_src" => Action::SetDlSrc(self.mac(need("a MAC address")?, "mod_dl_src")?),
            "mod_dl_dst" => Action::SetDlDst(self.mac(need("a MAC address")?, "mod_dl_dst")?),
            "goto_table" => {
                let v = need("a table")?;
                Action::GotoTable(self.number(v, u64::from(MAX_TABLE), "goto_table")? as u32)
            }
            other => return Err(self.err(tok.at, unsupported_action(other))),
        })
    }

    /// What every back end needs: drop alone, goto last and forward.
    fn check_actions(&self, flow: &Flow, key_at: usize) -> Result<(), ParseError> {
        let n = flow.actions.len();
        for (i, a) in flow.actions.iter().enumerate() {
            match a {
                Action::Drop if n > 1 => {
                    return Err(self.err(
                        key_at,
                        "drop must be the only action (a flow without output drops anyway)",
                    ));
                }
                Action::GotoTable(_) if i + 1 < n => {
                    return Err(self.err(
                        key_at,
                        format!("{a} must be the last action: the packet continues in that table and does not come back"),
                    ));
                }
                Action::GotoTable(t) if *t <= flow.table => {
                    return Err(self.err(
                        key_at,
                        format!("{a} from table {}: tables only go forward (a loop would be cut by the kernel and drop the packet)", flow.table),
                    ));
                }
                Action::Output(p) if *p == flow.in_port && i + 1 == n => {
                    return Err(self.err(
                        key_at,
                        format!("output:{p} is the flow's own in_port; a representor redirected to itself loops"),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Where `actions` starts: the byte offsets of its key and of its value.
fn find_actions(line: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(i) = line[from..].find("actions") {
        let k = from + i;
        let before_ok = k == 0 || matches!(line.as_bytes()[k - 1], b',' | b' ' | b'\t');
        let after = k + "actions".len();
        if before_ok && matches!(line.as_bytes().get(after), Some(b'=' | b':')) {
            return Some((k, after + 1));
        }
        from = after;
    }
    None
}

/// A port as flows name it: a netdev name (IFNAMSIZ) or a representor
/// alias. Numbers are OpenFlow port numbers, which mean nothing here.
fn port_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty port name".into());
    }
    if s.len() > 15 {
        return Err(format!(
            "{s:?} is longer than an interface name can be (15)"
        ));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{s} is an OpenFlow port number; name the netdev or representor (p0, pf0vf3, pf0hpf, eth1)"
        ));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '/' | ':' | '(' | ')' | '='))
    {
        return Err(format!(
            "{s:?} contains {bad:?}, which no interface name can"
        ));
    }
    match s {
        "NORMAL" | "normal" | "LOCAL" | "local" | "FLOOD" | "flood" | "ALL" | "all"
        | "CONTROLLER" | "controller" | "IN_PORT" | "in_port" => Err(format!(
            "{s} is an OpenFlow reserved port; Plexus has no bridge behind its flows, name a netdev"
        )),
        _ => Ok(s.to_owned()),
    }
}

/// The message for an action we do not support, with the reason.
fn unsupported_action(name: &str) -> String {
    let why = match name {
        "normal" | "NORMAL" => "there is no learning switch behind the flows: write output:PORT",
        "flood" | "all" | "FLOOD" | "ALL" => {
            "there is no bridge to flood: list the ports with output:PORT,..."
        }
        "controller" | "CONTROLLER" | "local" | "LOCAL" => "there is no controller or bridge port",
        "ct" | "ct_clear" | "nat" => "connection tracking is not part of this flow language yet",
        "mod_nw_src" | "mod_nw_dst" | "mod_nw_tos" | "mod_nw_ecn" | "mod_nw_ttl" | "dec_ttl"
        | "mod_tp_src" | "mod_tp_dst" => {
            "only L2 rewrites (mod_dl_src, mod_dl_dst, VLAN) are supported"
        }
        "set_field" | "load" | "move" => {
            "write the specific action instead (mod_dl_dst:MAC, mod_vlan_vid:N)"
        }
        "learn" | "group" | "meter" | "enqueue" | "set_queue" | "sample" | "clone" | "note"
        | "push_mpls" | "pop_mpls" | "set_tunnel" | "set_tunnel64" | "exit" | "write_actions"
        | "write_metadata" => "not supported by Plexus's flow compiler",
        "" => return "empty action".into(),
        _ => {
            return format!(
                "unknown action {name:?} (supported: output:PORT, drop, push_vlan, mod_vlan_vid, mod_vlan_pcp, strip_vlan, mod_dl_src, mod_dl_dst, goto_table, resubmit(,N))"
            );
        }
    };
    format!("unsupported action {name:?}: {why}")
}

fn is_known_field(name: &str) -> bool {
    matches!(
        name,
        "priority"
            | "cookie"
            | "table"
            | "in_port"
            | "dl_src"
            | "dl_dst"
            | "eth_src"
            | "eth_dst"
            | "dl_type"
            | "eth_type"
            | "dl_vlan"
            | "dl_vlan_pcp"
            | "nw_src"
            | "nw_dst"
            | "ipv6_src"
            | "ipv6_dst"
            | "arp_spa"
            | "arp_tpa"
            | "nw_proto"
            | "ip_proto"
            | "arp_op"
            | "nw_tos"
            | "ip_dscp"
            | "nw_ttl"
            | "tp_src"
            | "tp_dst"
            | "tcp_src"
            | "tcp_dst"
            | "udp_src"
            | "udp_dst"
            | "sctp_src"
            | "sctp_dst"
            | "tcp_flags"
            | "icmp_type"
            | "icmp_code"
            | "icmpv6_type"
            | "icmpv6_code"
            | "actions"
            // Open vSwitch fields we recognise but cannot express.
            | "nw_ecn"
            | "ip_ecn"
            | "nw_frag"
            | "ipv6_label"
            | "vlan_tci"
            | "metadata"
            | "reg0"
            | "tun_id"
            | "tunnel_id"
            | "ct_state"
            | "ct_zone"
            | "ct_mark"
            | "pkt_mark"
            | "skb_priority"
            | "mpls_label"
            | "arp_sha"
            | "arp_tha"
            | "nd_target"
            | "idle_timeout"
            | "hard_timeout"
            | "importance"
            | "out_port"
    )
}

#[derive(Default)]
struct Builder {
    table: Option<u32>,
    priority: Option<u16>,
    cookie: Option<u64>,
    in_port: Option<String>,
    m: Match,
    seen: Marks,
    seen_vlan_vid: Marks,
    seen_vlan_pcp: Marks,
    /// Where each field was written, for prerequisite errors.
    at: Marks,
}

/// Field name → column, for the dozen fields a flow has: a short list
/// beats hashing (parsing 10k flows spent a fifth of its time in SipHash).
#[derive(Default)]
struct Marks(Vec<(&'static str, usize)>);

impl Marks {
    /// Sets `k`; the previous column if it was set.
    fn insert(&mut self, k: &'static str, at: usize) -> Option<usize> {
        match self.0.iter_mut().find(|(n, _)| *n == k) {
            Some((_, old)) => Some(std::mem::replace(old, at)),
            None => {
                self.0.push((k, at));
                None
            }
        }
    }

    /// Sets `k` unless it is set.
    fn insert_first(&mut self, k: &'static str, at: usize) {
        if self.get(k).is_none() {
            self.0.push((k, at));
        }
    }

    fn get(&self, k: &str) -> Option<usize> {
        self.0.iter().find(|(n, _)| *n == k).map(|(_, a)| *a)
    }
}

/// Parses one flow (line number 1 in errors).
///
/// # Errors
/// The first thing wrong with it.
pub fn parse_flow(text: &str) -> Result<Flow, ParseError> {
    LineParser {
        line_no: 1,
        line: text,
    }
    .parse()
}

/// Parses a flow file: one flow per line, blank lines and `#` comments
/// skipped. Two flows with the same table, priority, in_port and match are
/// an error (Open vSwitch would silently keep the last one).
///
/// # Errors
/// Every line's first error, in order.
pub fn parse_flows(text: &str) -> Result<Vec<Flow>, Vec<ParseError>> {
    let mut flows: Vec<Flow> = Vec::new();
    let mut errors = Vec::new();
    let mut seen: fnv::FnvHashMap<(u32, u16, &str, Match), usize> = fnv::FnvHashMap::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split_once('#').map_or(raw, |(code, _)| code);
        if line.trim().is_empty() {
            continue;
        }
        match (LineParser {
            line_no: i + 1,
            line,
        })
        .parse()
        {
            Ok(f) => flows.push(f),
            Err(e) => errors.push(e),
        }
    }
    for f in &flows {
        let key = (f.table, f.priority, f.in_port.as_str(), f.matches.clone());
        if let Some(first) = seen.insert(key, f.line) {
            errors.push(ParseError {
                line: f.line,
                column: 1,
                message: format!(
                    "same table, priority, in_port and match as line {first}; merge the two flows' actions"
                ),
            });
        }
    }
    errors.sort_by_key(|e| (e.line, e.column));
    if errors.is_empty() {
        Ok(flows)
    } else {
        Err(errors)
    }
}
