//! Network interfaces (`RTM_*LINK`, `RTM_*LINKPROP`).
//!
//! Owns: looking links up and listing them as plain [`Link`] data; creating
//! veth pairs, macvlans and bridges; delete, rename, move to another netns,
//! up/down, MAC, MTU, master, alternative names. Requests are built by the
//! pure functions in [`req`] (byte-for-byte what iproute2 sends, see
//! `tests/fixtures/`), and the functions at the top level send them.
//!
//! It must not decide names, MACs or namespaces (callers do) and does not
//! read sysfs. Links are addressed by ifindex, as the kernel does; resolve a
//! name with [`get_by_name`] first.

use std::{
    fmt,
    os::fd::{AsRawFd, BorrowedFd},
    str::FromStr,
};

use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage, Prop, State},
};

use crate::{
    Netlink, Request,
    error::{Error, Op, Result},
};

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// A string that is not `xx:xx:xx:xx:xx:xx`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}")]
pub struct ParseMacError(String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, ParseMacError> {
        let err = || ParseMacError(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(out))
    }
}

/// RFC 2863 operational state (`IFLA_OPERSTATE`), named as `ip` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    /// `UNKNOWN` (also what `lo` and many virtual links report).
    Unknown,
    /// `NOTPRESENT`.
    NotPresent,
    /// `DOWN`.
    Down,
    /// `LOWERLAYERDOWN` (e.g. a veth whose peer is down).
    LowerLayerDown,
    /// `TESTING`.
    Testing,
    /// `DORMANT`.
    Dormant,
    /// `UP`.
    Up,
}

impl fmt::Display for OperState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unknown => "UNKNOWN",
            Self::NotPresent => "NOTPRESENT",
            Self::Down => "DOWN",
            Self::LowerLayerDown => "LOWERLAYERDOWN",
            Self::Testing => "TESTING",
            Self::Dormant => "DORMANT",
            Self::Up => "UP",
        })
    }
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// ifindex (unique within its netns).
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, when it is a 6-byte Ethernet address.
    pub mac: Option<MacAddr>,
    /// MTU.
    pub mtu: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`).
    pub lower_up: bool,
    /// Operational state.
    pub oper_state: OperState,
    /// `IFLA_INFO_KIND` ("veth", "macvlan", "bridge"); `None` for physical
    /// NICs and `lo`.
    pub kind: Option<String>,
    /// Alternative names (`IFLA_PROP_LIST`/`IFLA_ALT_IFNAME`).
    pub altnames: Vec<String>,
    /// `IFLA_LINK_NETNSID`: the netns id (as seen from this netns) where
    /// the peer or parent lives, when that is another netns.
    pub link_netnsid: Option<i32>,
    /// `IFLA_LINK`: the veth peer's or the macvlan parent's ifindex (in the
    /// netns `link_netnsid` names, when set).
    pub link: Option<u32>,
    /// `IFLA_MASTER`: the bridge/bond this link is enslaved to.
    pub master: Option<u32>,
    /// `IFLA_PHYS_PORT_NAME` (`p0`, `pf0vf3` on switchdev NICs).
    pub phys_port_name: Option<String>,
    /// `IFLA_PHYS_SWITCH_ID` (non-empty on switchdev uplinks and
    /// representors).
    pub phys_switch_id: Option<Vec<u8>>,
}

impl Link {
    /// Reads the fields we keep from an `RTM_NEWLINK` message.
    pub fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Self {
            index: msg.header.index,
            name: String::new(),
            mac: None,
            mtu: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            lower_up: msg.header.flags.contains(LinkFlags::LowerUp),
            oper_state: OperState::Unknown,
            kind: None,
            altnames: Vec::new(),
            link_netnsid: None,
            link: None,
            master: None,
            phys_port_name: None,
            phys_switch_id: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name.clone_from(n),
                LinkAttribute::Address(a) => {
                    link.mac = <[u8; 6]>::try_from(a.as_slice()).ok().map(MacAddr);
                }
                LinkAttribute::Mtu(m) => link.mtu = Some(*m),
                LinkAttribute::OperState(s) => link.oper_state = oper_state(*s),
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.iter().find_map(|i| match i {
                        LinkInfo::Kind(k) => Some(k.to_string()),
                        _ => None,
                    });
                }
                LinkAttribute::PropList(props) => {
                    link.altnames = props
                        .iter()
                        .filter_map(|p| match p {
                            Prop::AltIfName(n) => Some(n.clone()),
                            _ => None,
                        })
                        .collect();
                }
                LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(*id),
                LinkAttribute::Link(i) => link.link = Some(*i),
                LinkAttribute::Controller(i) => link.master = Some(*i),
                LinkAttribute::PhysPortName(n) => link.phys_port_name = Some(n.clone()),
                LinkAttribute::PhysSwitchId(id) => {
                    link.phys_switch_id = id.id.get(..id.len).map(<[u8]>::to_vec);
                }
                _ => {}
            }
        }
        link
    }
}

fn oper_state(s: State) -> OperState {
    match s {
        State::NotPresent => OperState::NotPresent,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Testing => OperState::Testing,
        State::Dormant => OperState::Dormant,
        State::Up => OperState::Up,
        _ => OperState::Unknown,
    }
}

/// macvlan modes (`MACVLAN_MODE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvlanMode {
    /// No traffic between macvlans on the same parent.
    Private,
    /// Traffic between macvlans goes out to the switch (hairpin).
    Vepa,
    /// macvlans on one parent talk to each other directly.
    Bridge,
    /// The one macvlan takes over the parent (`passthru`).
    Passthru,
    /// Only frames from allowed source MACs.
    Source,
}

impl MacvlanMode {
    fn value(self) -> u32 {
        match self {
            Self::Private => 1,
            Self::Vepa => 2,
            Self::Bridge => 4,
            Self::Passthru => 8,
            Self::Source => 16,
        }
    }
}

/// Request builders: pure, no I/O, golden-tested against iproute2.
pub mod req {
    use std::os::fd::RawFd;

    use netlink_packet_core::{
        DefaultNla, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    };
    use netlink_packet_route::{
        AddressFamily, RouteNetlinkMessage,
        link::{LinkAttribute, LinkExtentMask, LinkFlags, LinkMessage, Prop},
    };

    use super::{MacAddr, MacvlanMode};
    use crate::{Op, Request, attr::AttrWriter};

    const IFLA_IFNAME: u16 = 3;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_INFO_DATA: u16 = 2;
    const IFLA_NET_NS_FD: u16 = 28;
    const IFLA_ALT_IFNAME: u16 = 53;
    const VETH_INFO_PEER: u16 = 1;
    const IFLA_MACVLAN_MODE: u16 = 1;
    const IFINFOMSG_LEN: usize = 16;

    fn msg(index: u32, attributes: Vec<LinkAttribute>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes = attributes;
        m
    }

    /// `IFLA_LINKINFO`, hand-encoded because iproute2 sends `IFLA_INFO_KIND`
    /// without a NUL (`addattr_l(.., strlen(type))`) and netlink-packet-route
    /// adds one; the kernel accepts both (`nla_strcmp`), we match iproute2.
    fn linkinfo(kind: &str, data: Option<AttrWriter>) -> LinkAttribute {
        let mut w = AttrWriter::new();
        w.put(IFLA_INFO_KIND, kind.as_bytes());
        if let Some(data) = data {
            w.put(IFLA_INFO_DATA, data.as_bytes());
        }
        LinkAttribute::Other(DefaultNla::new(IFLA_LINKINFO, w.into_bytes()))
    }

    fn create(m: LinkMessage, op: Op) -> Request {
        Request::new(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            op.creates_kind(),
        )
    }

    fn set(index: u32, attributes: Vec<LinkAttribute>, op: Op) -> Request {
        Request::new(
            RouteNetlinkMessage::NewLink(msg(index, attributes)),
            NLM_F_ACK,
            op,
        )
    }

    /// `ip link show dev NAME`'s lookup: `RTM_GETLINK` with
    /// `IFLA_EXT_MASK = RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS` and the
    /// name. `IFLA_IFNAME` is limited to 15 bytes by policy (ERANGE), so
    /// longer names go in `IFLA_ALT_IFNAME`, as iproute2 does; the kernel
    /// looks both up in names and altnames alike.
    pub fn get_by_name(name: &str) -> Request {
        let name_attr = if super::valid_ifname(name) {
            LinkAttribute::IfName(name.to_owned())
        } else {
            let mut v = name.as_bytes().to_vec();
            v.push(0);
            LinkAttribute::Other(DefaultNla::new(IFLA_ALT_IFNAME, v))
        };
        let m = msg(
            0,
            vec![
                LinkAttribute::ExtMask(vec![LinkExtentMask::Vf, LinkExtentMask::SkipStats]),
                name_attr,
            ],
        );
        Request::new(
            RouteNetlinkMessage::GetLink(m),
            0,
            Op::new(format!("get link {name}"), "interface"),
        )
    }

    /// `RTM_GETLINK` by ifindex.
    pub fn get(index: u32) -> Request {
        let m = msg(
            index,
            vec![LinkAttribute::ExtMask(vec![
                LinkExtentMask::Vf,
                LinkExtentMask::SkipStats,
            ])],
        );
        Request::new(
            RouteNetlinkMessage::GetLink(m),
            0,
            Op::new(format!("get link ifindex {index}"), "interface"),
        )
    }

    /// `ip link show`: a dump with family `AF_PACKET` and
    /// `IFLA_EXT_MASK = RTEXT_FILTER_VF`.
    pub fn list() -> Request {
        let mut m = msg(0, vec![LinkAttribute::ExtMask(vec![LinkExtentMask::Vf])]);
        m.header.interface_family = AddressFamily::Packet;
        Request::new(
            RouteNetlinkMessage::GetLink(m),
            NLM_F_DUMP,
            Op::new("list links", "interface"),
        )
    }

    /// `ip link add NAME type veth peer name PEER [netns NS]`. With
    /// `peer_netns`, `IFLA_NET_NS_FD` goes inside the peer's own
    /// `ifinfomsg` + attributes (`VETH_INFO_PEER`), so the kernel creates the
    /// peer directly in that netns.
    pub fn add_veth(name: &str, peer: &str, peer_netns: Option<RawFd>) -> Request {
        // VETH_INFO_PEER holds the peer's own (all-zero) struct ifinfomsg
        // followed by the peer's attributes, like a nested RTM_NEWLINK.
        let mut peer_attrs = AttrWriter::new();
        if let Some(fd) = peer_netns {
            peer_attrs.put(IFLA_NET_NS_FD, &fd.to_ne_bytes());
        }
        peer_attrs.put_str(IFLA_IFNAME, peer);
        let mut peer_msg = vec![0u8; IFINFOMSG_LEN];
        peer_msg.extend_from_slice(peer_attrs.as_bytes());
        let mut peer_info = AttrWriter::new();
        peer_info.put(VETH_INFO_PEER, &peer_msg);
        let m = msg(
            0,
            vec![
                LinkAttribute::IfName(name.to_owned()),
                linkinfo("veth", Some(peer_info)),
            ],
        );
        create(
            m,
            Op::new(format!("create veth pair {name}/{peer}"), "interface"),
        )
    }

    /// `ip link add NAME link PARENT [netns NS] type macvlan mode MODE`.
    pub fn add_macvlan(
        name: &str,
        parent: u32,
        mode: MacvlanMode,
        netns: Option<RawFd>,
    ) -> Request {
        let mut data = AttrWriter::new();
        data.put_u32(IFLA_MACVLAN_MODE, mode.value());
        let mut attrs = Vec::new();
        if let Some(fd) = netns {
            attrs.push(LinkAttribute::NetNsFd(fd));
        }
        attrs.push(LinkAttribute::Link(parent));
        attrs.push(LinkAttribute::IfName(name.to_owned()));
        attrs.push(linkinfo("macvlan", Some(data)));
        create(
            msg(0, attrs),
            Op::new(
                format!("create macvlan {name} on ifindex {parent}"),
                "interface",
            ),
        )
    }

    /// `ip link add NAME type bridge`.
    pub fn add_bridge(name: &str) -> Request {
        let m = msg(
            0,
            vec![
                LinkAttribute::IfName(name.to_owned()),
                linkinfo("bridge", None),
            ],
        );
        create(m, Op::new(format!("create bridge {name}"), "interface"))
    }

    /// `ip link del dev X`.
    pub fn delete(index: u32) -> Request {
        Request::new(
            RouteNetlinkMessage::DelLink(msg(index, vec![])),
            NLM_F_ACK,
            Op::new(format!("delete link ifindex {index}"), "interface"),
        )
    }

    /// `ip link set dev X up|down`: `ifi_flags`/`ifi_change` only.
    pub fn set_up(index: u32, up: bool) -> Request {
        let mut m = msg(index, vec![]);
        m.header.change_mask = LinkFlags::Up;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        let state = if up { "up" } else { "down" };
        Request::new(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_ACK,
            Op::new(format!("set link ifindex {index} {state}"), "interface"),
        )
    }

    /// `ip link set dev X address MAC`.
    pub fn set_mac(index: u32, mac: MacAddr) -> Request {
        set(
            index,
            vec![LinkAttribute::Address(mac.0.to_vec())],
            Op::new(format!("set MAC {mac} on ifindex {index}"), "interface"),
        )
    }

    /// `ip link set dev X broadcast ADDR`.
    pub fn set_broadcast(index: u32, addr: &[u8]) -> Request {
        set(
            index,
            vec![LinkAttribute::Broadcast(addr.to_vec())],
            Op::new(
                format!("set the broadcast address of ifindex {index}"),
                "interface",
            ),
        )
    }

    /// `ip link set dev X mtu N`.
    pub fn set_mtu(index: u32, mtu: u32) -> Request {
        set(
            index,
            vec![LinkAttribute::Mtu(mtu)],
            Op::new(format!("set MTU {mtu} on ifindex {index}"), "interface"),
        )
    }

    /// `ip link set dev X name NEW`.
    pub fn rename(index: u32, new_name: &str) -> Request {
        set(
            index,
            vec![LinkAttribute::IfName(new_name.to_owned())],
            Op::new(format!("rename ifindex {index} to {new_name}"), "interface"),
        )
    }

    /// `ip link set dev X netns NS` (by fd).
    pub fn set_netns(index: u32, netns: RawFd) -> Request {
        set(
            index,
            vec![LinkAttribute::NetNsFd(netns)],
            Op::new(
                format!("move ifindex {index} to another netns"),
                "interface",
            ),
        )
    }

    /// `ip link set dev X netns NS name NEW`: moved and renamed in one
    /// request, so the new name is only ever checked in the target netns.
    pub fn set_netns_named(index: u32, netns: RawFd, new_name: &str) -> Request {
        set(
            index,
            vec![
                LinkAttribute::NetNsFd(netns),
                LinkAttribute::IfName(new_name.to_owned()),
            ],
            Op::new(
                format!("move ifindex {index} to another netns as {new_name}"),
                "interface",
            ),
        )
    }

    /// `ip link set dev X master M` (`Some(M)`) or `nomaster` (`None`,
    /// encoded as `IFLA_MASTER = 0`).
    pub fn set_master(index: u32, master: Option<u32>) -> Request {
        let op = match master {
            Some(m) => Op::new(
                format!("attach ifindex {index} to master ifindex {m}"),
                "interface",
            ),
            None => Op::new(
                format!("detach ifindex {index} from its master"),
                "interface",
            ),
        };
        set(
            index,
            vec![LinkAttribute::Controller(master.unwrap_or(0))],
            op,
        )
    }

    /// `ip link property add|del dev X altname NAME`: `RTM_NEWLINKPROP` (with
    /// `NLM_F_CREATE|NLM_F_EXCL|NLM_F_APPEND`, as iproute2) or
    /// `RTM_DELLINKPROP`, carrying `IFLA_PROP_LIST` (with `NLA_F_NESTED`)
    /// > `IFLA_ALT_IFNAME`.
    pub fn altname(index: u32, name: &str, add: bool) -> Request {
        let m = msg(
            index,
            vec![LinkAttribute::PropList(vec![Prop::AltIfName(
                name.to_owned(),
            )])],
        );
        if add {
            Request::new(
                RouteNetlinkMessage::NewLinkProp(m),
                NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_APPEND,
                Op::new(format!("add altname {name} to ifindex {index}"), "altname"),
            )
        } else {
            Request::new(
                RouteNetlinkMessage::DelLinkProp(m),
                NLM_F_ACK,
                Op::new(
                    format!("delete altname {name} from ifindex {index}"),
                    "altname",
                ),
            )
        }
    }
}

/// The kernel's `dev_valid_name()`: 1..=15 bytes, not `.`/`..`, no `/`,
/// `:` or whitespace.
fn valid_ifname(name: &str) -> bool {
    !(name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace()))
}

/// Checked up front for a clearer error than the kernel's `EINVAL`.
fn check_ifname(op: &str, name: &str) -> Result<()> {
    if valid_ifname(name) {
        return Ok(());
    }
    Err(Error::InvalidInput {
        op: op.to_owned(),
        reason: format!(
            "{name:?} is not a valid interface name (1-15 bytes, no '/', ':' or spaces)"
        ),
    })
}

fn one_link(replies: Vec<RouteNetlinkMessage>, op: &Op) -> Result<Link> {
    match replies.into_iter().next() {
        Some(RouteNetlinkMessage::NewLink(m)) => Ok(Link::from_message(&m)),
        Some(other) => Err(Error::bad_reply(
            op,
            format!("expected RTM_NEWLINK, got {other:?}"),
        )),
        None => Err(Error::bad_reply(op, "no reply")),
    }
}

fn ack(nl: &mut Netlink, r: &Request) -> Result<()> {
    nl.execute_raw(r).map(drop)
}

/// Looks a link up by name (or altname).
pub fn get_by_name(nl: &mut Netlink, name: &str) -> Result<Link> {
    let r = req::get_by_name(name);
    one_link(nl.execute(&r)?, r.op())
}

/// Looks a link up by ifindex.
pub fn get(nl: &mut Netlink, index: u32) -> Result<Link> {
    let r = req::get(index);
    one_link(nl.execute(&r)?, r.op())
}

/// All links in the socket's netns.
pub fn list(nl: &mut Netlink) -> Result<Vec<Link>> {
    let r = req::list();
    Ok(nl
        .execute(&r)?
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(m) => Some(Link::from_message(m)),
            _ => None,
        })
        .collect())
}

/// Creates a veth pair; the peer is created directly in `peer_netns` when
/// given (an open netns file, e.g. `/run/netns/pod`).
pub fn add_veth(
    nl: &mut Netlink,
    name: &str,
    peer: &str,
    peer_netns: Option<BorrowedFd<'_>>,
) -> Result<()> {
    let r = req::add_veth(name, peer, peer_netns.map(|f| f.as_raw_fd()));
    check_ifname(r.op().desc(), name)?;
    check_ifname(r.op().desc(), peer)?;
    ack(nl, &r)
}

/// Creates a macvlan on `parent`, optionally directly in `netns`.
pub fn add_macvlan(
    nl: &mut Netlink,
    name: &str,
    parent: u32,
    mode: MacvlanMode,
    netns: Option<BorrowedFd<'_>>,
) -> Result<()> {
    let r = req::add_macvlan(name, parent, mode, netns.map(|f| f.as_raw_fd()));
    check_ifname(r.op().desc(), name)?;
    ack(nl, &r)
}

/// Creates a bridge.
pub fn add_bridge(nl: &mut Netlink, name: &str) -> Result<()> {
    let r = req::add_bridge(name);
    check_ifname(r.op().desc(), name)?;
    ack(nl, &r)
}

/// Deletes a link (for a veth, the kernel deletes the peer too).
pub fn delete(nl: &mut Netlink, index: u32) -> Result<()> {
    ack(nl, &req::delete(index))
}

/// Sets the link administratively up.
pub fn set_up(nl: &mut Netlink, index: u32) -> Result<()> {
    ack(nl, &req::set_up(index, true))
}

/// Sets the link administratively down.
pub fn set_down(nl: &mut Netlink, index: u32) -> Result<()> {
    ack(nl, &req::set_up(index, false))
}

/// Sets the MAC address.
pub fn set_mac(nl: &mut Netlink, index: u32, mac: MacAddr) -> Result<()> {
    ack(nl, &req::set_mac(index, mac))
}

/// Has the kernel announce an Ethernet link's addresses to its peers, by
/// setting its broadcast address again (to ff:ff:ff:ff:ff:ff, unchanged):
/// that is a `NETDEV_CHANGEADDR`, on which the kernel sends a gratuitous
/// ARP per IPv4 address when the link's `arp_notify` is on, and an
/// unsolicited Neighbor Advertisement per valid IPv6 address when its
/// `ndisc_notify` is on. (It sends those for a tentative IPv6 address once
/// DAD completes.) Unlike a packet socket, this costs no RCU grace period.
pub fn notify_peers(nl: &mut Netlink, index: u32) -> Result<()> {
    ack(nl, &req::set_broadcast(index, &[0xff; 6]))
}

/// Sets the MTU.
pub fn set_mtu(nl: &mut Netlink, index: u32, mtu: u32) -> Result<()> {
    ack(nl, &req::set_mtu(index, mtu))
}

/// Renames a link. The kernel refuses (`EBUSY`) while the link is up.
pub fn rename(nl: &mut Netlink, index: u32, new_name: &str) -> Result<()> {
    let r = req::rename(index, new_name);
    check_ifname(r.op().desc(), new_name)?;
    ack(nl, &r)
}

/// Moves a link into the netns `netns` refers to. The link gets a new
/// ifindex there only if its index is taken; it comes up down.
pub fn set_netns(nl: &mut Netlink, index: u32, netns: BorrowedFd<'_>) -> Result<()> {
    ack(nl, &req::set_netns(index, netns.as_raw_fd()))
}

/// Moves a link into the netns `netns` refers to under a new name, in
/// one request: the name never exists in this netns, and taken in the
/// target it fails there (`EEXIST`) with the link still here.
pub fn set_netns_named(
    nl: &mut Netlink,
    index: u32,
    netns: BorrowedFd<'_>,
    new_name: &str,
) -> Result<()> {
    let r = req::set_netns_named(index, netns.as_raw_fd(), new_name);
    check_ifname(r.op().desc(), new_name)?;
    ack(nl, &r)
}

/// Enslaves the link to `master` (a bridge), or frees it with `None`.
pub fn set_master(nl: &mut Netlink, index: u32, master: Option<u32>) -> Result<()> {
    ack(nl, &req::set_master(index, master))
}

/// Adds an alternative name (up to 127 bytes; kernels ≥ 5.5).
pub fn add_altname(nl: &mut Netlink, index: u32, name: &str) -> Result<()> {
    ack(nl, &req::altname(index, name, true))
}

/// Removes an alternative name.
pub fn del_altname(nl: &mut Netlink, index: u32, name: &str) -> Result<()> {
    ack(nl, &req::altname(index, name, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_print() {
        let m: MacAddr = "02:00:0a:FF:00:01".parse().unwrap();
        assert_eq!(m.0, [2, 0, 0x0a, 0xff, 0, 1]);
        assert_eq!(m.to_string(), "02:00:0a:ff:00:01");
        for bad in [
            "",
            "02:00",
            "02:00:0a:ff:00:01:02",
            "2:00:0a:ff:00:01",
            "zz:00:0a:ff:00:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("x", "eth0").is_ok());
        assert!(check_ifname("x", "fifteen-chars-x").is_ok());
        for bad in ["", "sixteen-chars-xx", ".", "..", "a/b", "a:b", "a b"] {
            assert!(check_ifname("x", bad).is_err(), "{bad}");
        }
    }
}
