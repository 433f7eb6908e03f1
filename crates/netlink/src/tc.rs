//! Traffic control: the `clsact` qdisc, raw filters and empty chains
//! (`RTM_*QDISC`, `RTM_*TFILTER`, `RTM_*CHAIN`).
//!
//! Owns the `struct tcmsg` header, the top-level `TCA_KIND`/`TCA_CHAIN`/
//! `TCA_OPTIONS` attributes, and add/delete/dump of filters whose
//! `TCA_OPTIONS` payload the caller encodes (flower, bpf, u32 ...): this
//! module must not know any classifier's or action's attributes. dpu-offload
//! builds those (with [`crate::AttrWriter`] or netlink-packet-route types)
//! and reads them back from [`TcFilterEntry::options`].
//!
//! Layout reference: `tc-flower-offload.md` §3.1; kernel: `net/sched/cls_api.c`.

use netlink_packet_route::{RouteNetlinkMessage, tc::TcMessage};

use crate::{
    Netlink, Op, RawMessage, Request,
    attr::{self, AttrWriter},
    error::{Error, Result},
};

/// `TC_H_CLSACT` (== `TC_H_INGRESS`): the clsact qdisc's parent.
pub const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
/// The clsact qdisc's own handle, `ffff:`.
pub const CLSACT_HANDLE: u32 = 0xFFFF_0000;
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`: `tc filter ... ingress`.
pub const PARENT_INGRESS: u32 = 0xFFFF_FFF2;
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)`: `tc filter ... egress`.
pub const PARENT_EGRESS: u32 = 0xFFFF_FFF3;

/// `ETH_P_ALL`, host order (encoded in network order in `tcm_info`).
pub const ETH_P_ALL: u16 = 0x0003;
/// `ETH_P_IP`.
pub const ETH_P_IP: u16 = 0x0800;
/// `ETH_P_ARP`.
pub const ETH_P_ARP: u16 = 0x0806;
/// `ETH_P_8021Q`.
pub const ETH_P_8021Q: u16 = 0x8100;
/// `ETH_P_IPV6`.
pub const ETH_P_IPV6: u16 = 0x86DD;

/// `RTM_NEWQDISC`.
pub const RTM_NEWQDISC: u16 = 36;
/// `RTM_DELQDISC`.
pub const RTM_DELQDISC: u16 = 37;
/// `RTM_NEWTFILTER`.
pub const RTM_NEWTFILTER: u16 = 44;
/// `RTM_DELTFILTER`.
pub const RTM_DELTFILTER: u16 = 45;
/// `RTM_GETTFILTER`.
pub const RTM_GETTFILTER: u16 = 46;
/// `RTM_NEWCHAIN` (Linux 4.19).
pub const RTM_NEWCHAIN: u16 = 100;
/// `RTM_GETCHAIN`.
pub const RTM_GETCHAIN: u16 = 102;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_CHAIN: u16 = 11;
const TCMSG_LEN: usize = 20;

/// `struct tcmsg`: family (`AF_UNSPEC`), 3 pad bytes, ifindex, handle,
/// parent, info — all host order.
pub fn tcmsg(ifindex: u32, handle: u32, parent: u32, info: u32) -> Vec<u8> {
    tcmsg_with_room(ifindex, handle, parent, info, 0)
}

/// [`tcmsg`] in a buffer with room for `extra` more bytes (the attributes
/// that follow), so appending them does not reallocate.
pub fn tcmsg_with_room(ifindex: u32, handle: u32, parent: u32, info: u32, extra: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(TCMSG_LEN + extra);
    v.extend_from_slice(&[0u8; 4]);
    v.extend_from_slice(&ifindex.to_ne_bytes());
    v.extend_from_slice(&handle.to_ne_bytes());
    v.extend_from_slice(&parent.to_ne_bytes());
    v.extend_from_slice(&info.to_ne_bytes());
    v
}

/// `tcm_info` of a filter: `TC_H_MAKE(prio << 16, htons(protocol))`.
pub fn filter_info(priority: u16, protocol: u16) -> u32 {
    (u32::from(priority) << 16) | u32::from(protocol.to_be())
}

/// A filter to add or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcFilter {
    /// Device.
    pub ifindex: u32,
    /// [`PARENT_INGRESS`] / [`PARENT_EGRESS`] for clsact.
    pub parent: u32,
    /// Preference; 0 lets the kernel choose (from 49152 down).
    pub priority: u16,
    /// EtherType in host order ([`ETH_P_ALL`], [`ETH_P_IP`], ...).
    pub protocol: u16,
    /// Filter handle; 0 lets the kernel choose (for deletes: the whole
    /// priority).
    pub handle: u32,
    /// Chain; `None` for chain 0 (no `TCA_CHAIN` sent, as `tc` does).
    pub chain: Option<u32>,
    /// Classifier kind: "flower", "bpf", "u32", "matchall".
    pub kind: String,
    /// The `TCA_OPTIONS` payload, already encoded; `None` sends no
    /// `TCA_OPTIONS` (deletes do not need one).
    pub options: Option<Vec<u8>>,
}

impl TcFilter {
    fn payload(&self, with_options: bool) -> Vec<u8> {
        let opts_len = self.options.as_ref().map_or(0, Vec::len);
        let p = tcmsg_with_room(
            self.ifindex,
            self.handle,
            self.parent,
            filter_info(self.priority, self.protocol),
            // NLMSG header room too: Request::encode copies into one buffer.
            32 + self.kind.len() + opts_len,
        );
        // Attribute order as tc sends it: TCA_CHAIN (parsed with the
        // arguments), then TCA_KIND and TCA_OPTIONS (added after parsing).
        let mut w = AttrWriter::from_vec(p);
        if let Some(chain) = self.chain {
            w.put_u32(TCA_CHAIN, chain);
        }
        if !self.kind.is_empty() {
            w.put_str(TCA_KIND, &self.kind);
        }
        if let (true, Some(opts)) = (with_options, &self.options) {
            // tc writes TCA_OPTIONS without NLA_F_NESTED; the kernel parses it
            // as NLA_NESTED either way.
            w.put(TCA_OPTIONS, opts);
        }
        w.into_bytes()
    }

    fn describe(&self, verb: &str) -> Op {
        Op::new(
            format!(
                "{verb} {} filter pref {} handle {:#x} on ifindex {} parent {:#x}",
                self.kind, self.priority, self.handle, self.ifindex, self.parent
            ),
            "filter",
        )
    }

    /// `tc filter add ...`: `NLM_F_CREATE|NLM_F_EXCL`; add
    /// `NLM_F_ECHO` with [`Request::with_flags`] to get the filter back.
    pub fn add_request(&self) -> Request {
        use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL};
        Request::raw(
            RTM_NEWTFILTER,
            self.payload(true),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            self.describe("add").creates_kind(),
        )
    }

    /// `tc filter replace ...`: `NLM_F_CREATE | NLM_F_REPLACE`, without
    /// `NLM_F_EXCL`. With the handle of an existing filter, the classifier
    /// swaps it for this one in place (cls_flower's `fl_change` with
    /// `fold`); without one, it adds.
    pub fn replace_request(&self) -> Request {
        use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE};
        Request::raw(
            RTM_NEWTFILTER,
            self.payload(true),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            self.describe("replace").creates_kind(),
        )
    }

    /// `tc filter del ...` (kind sent, options not).
    pub fn del_request(&self) -> Request {
        Request::raw(
            RTM_DELTFILTER,
            self.payload(false),
            netlink_packet_core::NLM_F_ACK,
            self.describe("delete"),
        )
    }
}

/// `tc qdisc add dev X clsact`.
pub fn clsact_add_request(ifindex: u32) -> Request {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL};
    Request::raw(
        RTM_NEWQDISC,
        clsact_payload(ifindex),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        Op::new(format!("add clsact qdisc to ifindex {ifindex}"), "qdisc").creates_kind(),
    )
}

/// `tc qdisc del dev X clsact`.
pub fn clsact_del_request(ifindex: u32) -> Request {
    Request::raw(
        RTM_DELQDISC,
        clsact_payload(ifindex),
        netlink_packet_core::NLM_F_ACK,
        Op::new(
            format!("delete clsact qdisc from ifindex {ifindex}"),
            "qdisc",
        ),
    )
}

fn clsact_payload(ifindex: u32) -> Vec<u8> {
    let mut p = tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0);
    let mut w = AttrWriter::new();
    w.put_str(TCA_KIND, "clsact");
    p.extend_from_slice(w.as_bytes());
    p
}

/// `tc filter show dev X ingress|egress [chain N]`: an `RTM_GETTFILTER`
/// dump of one parent (all priorities and protocols).
pub fn filter_dump_request(ifindex: u32, parent: u32, chain: Option<u32>) -> Request {
    let mut p = tcmsg(ifindex, 0, parent, 0);
    if let Some(chain) = chain {
        let mut w = AttrWriter::new();
        w.put_u32(TCA_CHAIN, chain);
        p.extend_from_slice(w.as_bytes());
    }
    Request::raw(
        RTM_GETTFILTER,
        p,
        netlink_packet_core::NLM_F_DUMP,
        Op::new(
            format!("list filters on ifindex {ifindex} parent {parent:#x}"),
            "filter",
        ),
    )
}

fn chain_payload(ifindex: u32, parent: u32, chain: u32) -> Vec<u8> {
    let mut p = tcmsg(ifindex, 0, parent, 0);
    let mut w = AttrWriter::new();
    w.put_u32(TCA_CHAIN, chain);
    p.extend_from_slice(w.as_bytes());
    p
}

/// `tc chain add dev X ingress|egress chain N`: an empty chain, which no
/// packet visits unless a filter jumps to it, and which lives as long as
/// the qdisc (or until deleted).
pub fn chain_add_request(ifindex: u32, parent: u32, chain: u32) -> Request {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL};
    Request::raw(
        RTM_NEWCHAIN,
        chain_payload(ifindex, parent, chain),
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        Op::new(
            format!("add chain {chain} on ifindex {ifindex} parent {parent:#x}"),
            "chain",
        ),
    )
}

/// `tc chain get dev X ingress|egress chain N`.
pub fn chain_get_request(ifindex: u32, parent: u32, chain: u32) -> Request {
    Request::raw(
        RTM_GETCHAIN,
        chain_payload(ifindex, parent, chain),
        0,
        Op::new(
            format!("get chain {chain} on ifindex {ifindex} parent {parent:#x}"),
            "chain",
        ),
    )
}

/// Adds an empty chain.
pub fn add_chain(nl: &mut Netlink, ifindex: u32, parent: u32, chain: u32) -> Result<()> {
    nl.execute_raw(&chain_add_request(ifindex, parent, chain))
        .map(drop)
}

/// Whether a chain exists on a hook. A missing chain and a missing qdisc
/// are both `EINVAL` ("Cannot find specified filter chain", `tc_ctl_chain`
/// in `net/sched/cls_api.c`): `false`.
pub fn chain_exists(nl: &mut Netlink, ifindex: u32, parent: u32, chain: u32) -> Result<bool> {
    match nl.execute_raw(&chain_get_request(ifindex, parent, chain)) {
        Ok(_) => Ok(true),
        Err(Error::Other(e)) if e.errno == libc::EINVAL => Ok(false),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// A filter as the kernel reports it (dump or `NLM_F_ECHO`), with the
/// generic fields decoded and the classifier's options left raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcFilterEntry {
    /// Device (`tcm_ifindex`).
    pub ifindex: u32,
    /// `tcm_parent`.
    pub parent: u32,
    /// `tcm_handle` (0 for the per-priority header entry a dump starts
    /// each priority with).
    pub handle: u32,
    /// Preference (upper 16 bits of `tcm_info`).
    pub priority: u16,
    /// EtherType, host order.
    pub protocol: u16,
    /// `TCA_CHAIN` (0 when absent).
    pub chain: u32,
    /// `TCA_KIND`.
    pub kind: String,
    /// The `TCA_OPTIONS` value, undecoded.
    pub options: Option<Vec<u8>>,
    /// The whole reply message.
    pub raw: RawMessage,
}

impl TcFilterEntry {
    /// Decodes an `RTM_NEWTFILTER` payload.
    pub fn from_raw(raw: RawMessage) -> Result<Self, String> {
        let p = &raw.payload;
        let hdr = p
            .get(..TCMSG_LEN)
            .ok_or("RTM_NEWTFILTER shorter than tcmsg")?;
        let word = |i: usize| u32::from_ne_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let (ifindex, handle, parent, info) = (word(4), word(8), word(12), word(16));
        let (mut chain, mut kind, mut options) = (0, String::new(), None);
        for a in attr::parse(&p[TCMSG_LEN..])? {
            match a.kind {
                TCA_KIND => kind = a.str().ok_or("TCA_KIND is not a string")?.to_owned(),
                TCA_CHAIN => chain = a.u32().ok_or("TCA_CHAIN too short")?,
                TCA_OPTIONS => options = Some(a.value.to_vec()),
                _ => {}
            }
        }
        Ok(Self {
            ifindex,
            parent,
            handle,
            priority: (info >> 16) as u16,
            protocol: u16::from_be((info & 0xFFFF) as u16),
            chain,
            kind,
            options,
            raw,
        })
    }

    /// The same message decoded by netlink-packet-route (typed flower, u32,
    /// bpf, matchall options and actions).
    pub fn tc_message(&self, op: &Op) -> Result<TcMessage> {
        match self.raw.parse(op)? {
            RouteNetlinkMessage::NewTrafficFilter(m) => Ok(m),
            other => Err(Error::bad_reply(
                op,
                format!("expected RTM_NEWTFILTER, got {other:?}"),
            )),
        }
    }
}

fn entries(replies: Vec<RawMessage>, op: &Op) -> Result<Vec<TcFilterEntry>> {
    replies
        .into_iter()
        .filter(|m| m.msg_type == RTM_NEWTFILTER)
        .map(|m| TcFilterEntry::from_raw(m).map_err(|e| Error::bad_reply(op, e)))
        .collect()
}

/// Adds the clsact qdisc (ingress and egress filter hooks).
pub fn add_clsact(nl: &mut Netlink, ifindex: u32) -> Result<()> {
    nl.execute_raw(&clsact_add_request(ifindex)).map(drop)
}

/// Deletes the clsact qdisc and every filter on it.
///
/// A missing clsact is [`Error::NotFound`] even though the kernel answers
/// `EINVAL` ("Invalid handle"): without clsact the ingress slot holds the
/// noop qdisc, whose handle 0 does not match `ffff:` (`tc_get_qdisc` in
/// `net/sched/sch_api.c`). The message keeps the kernel's errno.
pub fn del_clsact(nl: &mut Netlink, ifindex: u32) -> Result<()> {
    match nl.execute_raw(&clsact_del_request(ifindex)) {
        Ok(_) => Ok(()),
        Err(Error::Other(e)) if e.errno == libc::EINVAL => Err(Error::NotFound(e)),
        Err(e) => Err(e),
    }
}

/// Adds a filter.
pub fn add_filter(nl: &mut Netlink, filter: &TcFilter) -> Result<()> {
    nl.execute_raw(&filter.add_request()).map(drop)
}

/// Adds a filter with `NLM_F_ECHO` and returns the kernel's copy of it:
/// the handle and priority it chose, and (for flower) `TCA_FLOWER_FLAGS`
/// telling whether the rule went to hardware.
pub fn add_filter_echo(nl: &mut Netlink, filter: &TcFilter) -> Result<TcFilterEntry> {
    let r = filter
        .add_request()
        .with_flags(netlink_packet_core::NLM_F_ECHO);
    let replies = nl.execute_raw(&r)?;
    entries(replies, r.op())?
        .into_iter()
        .next()
        .ok_or_else(|| Error::bad_reply(r.op(), "no echoed filter before the ACK"))
}

/// Replaces a filter in place ([`TcFilter::replace_request`]) with
/// `NLM_F_ECHO`, and returns the kernel's copy of the new one.
pub fn replace_filter_echo(nl: &mut Netlink, filter: &TcFilter) -> Result<TcFilterEntry> {
    let r = filter
        .replace_request()
        .with_flags(netlink_packet_core::NLM_F_ECHO);
    let replies = nl.execute_raw(&r)?;
    entries(replies, r.op())?
        .into_iter()
        .next()
        .ok_or_else(|| Error::bad_reply(r.op(), "no echoed filter before the ACK"))
}

/// Deletes a filter (with `handle: 0`, every filter of that priority).
pub fn del_filter(nl: &mut Netlink, filter: &TcFilter) -> Result<()> {
    nl.execute_raw(&filter.del_request()).map(drop)
}

/// Filters on one clsact hook, optionally of one chain.
pub fn dump_filters(
    nl: &mut Netlink,
    ifindex: u32,
    parent: u32,
    chain: Option<u32>,
) -> Result<Vec<TcFilterEntry>> {
    let r = filter_dump_request(ifindex, parent, chain);
    entries(nl.execute_raw(&r)?, r.op())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_packs_priority_and_network_order_protocol() {
        assert_eq!(
            filter_info(10, ETH_P_ALL).to_ne_bytes(),
            [0x00, 0x03, 0x0a, 0x00]
        );
        assert_eq!(
            filter_info(1, ETH_P_IP).to_ne_bytes(),
            [0x08, 0x00, 0x01, 0x00]
        );
    }

    #[test]
    fn entry_decoding_rejects_short_messages() {
        let raw = RawMessage {
            msg_type: RTM_NEWTFILTER,
            flags: 0,
            payload: vec![0; 10],
        };
        assert!(TcFilterEntry::from_raw(raw).is_err());
        let mut payload = tcmsg(3, 0x8000_0001, PARENT_INGRESS, filter_info(10, ETH_P_IP));
        payload.extend_from_slice(&[8, 0, 1, 0, b'u', b'3', b'2', 0, 8, 0, 11, 0, 7, 0, 0, 0]);
        for n in 0..payload.len() {
            let raw = RawMessage {
                msg_type: RTM_NEWTFILTER,
                flags: 0,
                payload: payload[..n].to_vec(),
            };
            let _ = TcFilterEntry::from_raw(raw);
        }
        let e = TcFilterEntry::from_raw(RawMessage {
            msg_type: RTM_NEWTFILTER,
            flags: 0,
            payload,
        })
        .unwrap();
        assert_eq!(
            (
                e.ifindex,
                e.handle,
                e.parent,
                e.priority,
                e.protocol,
                e.chain,
                e.kind.as_str()
            ),
            (3, 0x8000_0001, PARENT_INGRESS, 10, ETH_P_IP, 7, "u32")
        );
    }
}
