//! IP addresses on links (`RTM_*ADDR`).
//!
//! Owns adding, deleting and listing IPv4/IPv6 addresses, encoded as
//! iproute2 does (`IFA_LOCAL` then `IFA_ADDRESS`, both the address itself).
//! It must not pick addresses (IPAM does) nor touch routes: the kernel adds
//! the prefix route itself when an address is added.

use ipnet::IpNet;
use netlink_packet_route::{
    RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
};

use crate::{IpFamily, Netlink, error::Result};

/// An address assigned to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The link's ifindex.
    pub index: u32,
    /// The local address with its prefix length (`10.0.0.2/24`).
    pub addr: IpNet,
    /// `RT_SCOPE_*` (0 universe, 253 link, 254 host).
    pub scope: u8,
    /// `IFA_F_*` flags (`IFA_FLAGS` when present, which has all 32 bits).
    pub flags: u32,
    /// `IFA_LABEL` (IPv4 only).
    pub label: Option<String>,
}

impl Address {
    /// Reads an `RTM_NEWADDR` message; `None` if it carries no address.
    pub fn from_message(msg: &AddressMessage) -> Option<Self> {
        let mut local = None;
        let mut address = None;
        let mut label = None;
        let mut flags = u32::from(msg.header.flags.bits());
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Label(l) => label = Some(l.clone()),
                AddressAttribute::Flags(f) => flags = f.bits(),
                _ => {}
            }
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer
        // on point-to-point links. IPv6 reports only IFA_ADDRESS unless a
        // peer is set.
        let ip = local.or(address)?;
        Some(Self {
            index: msg.header.index,
            addr: IpNet::new(ip, msg.header.prefix_len).ok()?,
            scope: msg.header.scope.into(),
            flags,
            label,
        })
    }
}

/// Request builders: pure, golden-tested against iproute2.
pub mod req {
    use ipnet::IpNet;
    use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
    use netlink_packet_route::{
        AddressFamily, RouteNetlinkMessage,
        address::{AddressAttribute, AddressMessage},
    };

    use crate::{IpFamily, Op, Request};

    fn msg(index: u32, net: IpNet) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = family(IpFamily::of(&net.addr()));
        m.header.prefix_len = net.prefix_len();
        m.header.index = index;
        // iproute2 sends IFA_LOCAL and IFA_ADDRESS, both the address, for
        // IPv4 and IPv6 alike (on non-point-to-point links they are equal).
        m.attributes = vec![
            AddressAttribute::Local(net.addr()),
            AddressAttribute::Address(net.addr()),
        ];
        m
    }

    pub(crate) fn family(f: IpFamily) -> AddressFamily {
        match f {
            IpFamily::V4 => AddressFamily::Inet,
            IpFamily::V6 => AddressFamily::Inet6,
        }
    }

    /// `ip addr add ADDR/LEN dev X`.
    pub fn add(index: u32, net: IpNet) -> Request {
        Request::new(
            RouteNetlinkMessage::NewAddress(msg(index, net)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            Op::new(format!("add address {net} to ifindex {index}"), "address"),
        )
    }

    /// `ip addr del ADDR/LEN dev X`.
    pub fn del(index: u32, net: IpNet) -> Request {
        Request::new(
            RouteNetlinkMessage::DelAddress(msg(index, net)),
            NLM_F_ACK,
            Op::new(
                format!("delete address {net} from ifindex {index}"),
                "address",
            ),
        )
    }

    /// An `RTM_GETADDR` dump. With `NETLINK_GET_STRICT_CHK` (set on every
    /// [`crate::Netlink`]) the kernel itself filters by `ifa_index`;
    /// `list(None, None)` is exactly `ip addr show`'s request.
    pub fn list(family: Option<IpFamily>, index: Option<u32>) -> Request {
        let mut m = AddressMessage::default();
        if let Some(f) = family {
            m.header.family = self::family(f);
        }
        m.header.index = index.unwrap_or(0);
        Request::new(
            RouteNetlinkMessage::GetAddress(m),
            NLM_F_DUMP,
            Op::new("list addresses", "address"),
        )
    }
}

/// Adds `net` (the address with its prefix length, host bits kept:
/// `10.0.0.2/24`) to the link.
pub fn add(nl: &mut Netlink, index: u32, net: IpNet) -> Result<()> {
    nl.execute_raw(&req::add(index, net)).map(drop)
}

/// Removes an address; [`crate::Error::is_not_found`] if it is not there
/// (`EADDRNOTAVAIL`).
pub fn del(nl: &mut Netlink, index: u32, net: IpNet) -> Result<()> {
    nl.execute_raw(&req::del(index, net)).map(drop)
}

/// Addresses, optionally of one family and/or one link.
pub fn list(
    nl: &mut Netlink,
    family: Option<IpFamily>,
    index: Option<u32>,
) -> Result<Vec<Address>> {
    let replies = nl.execute(&req::list(family, index))?;
    Ok(replies
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(m) => Address::from_message(m),
            _ => None,
        })
        // Older kernels ignore the filter without strict checking; filter
        // again so the result never depends on it.
        .filter(|a| index.is_none_or(|i| a.index == i))
        .filter(|a| family.is_none_or(|f| IpFamily::of(&a.addr.addr()) == f))
        .collect())
}
