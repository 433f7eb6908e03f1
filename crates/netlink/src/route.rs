//! IPv4/IPv6 routes (`RTM_*ROUTE`).
//!
//! Owns adding, replacing, deleting and listing unicast routes: destination
//! prefix (the default route is `0.0.0.0/0` / `::/0`), gateway, output
//! interface, table, metric, scope, protocol and the `mtu`/`advmss` metrics.
//! Encoded as iproute2 does, including its default scope and protocol.
//!
//! It must not decide which routes a pod gets (the CNI result does) and does
//! not handle multipath, policy rules or nexthop objects.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::{
    RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric},
};

use crate::{IpFamily, Netlink, error::Result};

/// `RT_TABLE_MAIN`.
pub const TABLE_MAIN: u32 = 254;
/// `RT_TABLE_LOCAL`.
pub const TABLE_LOCAL: u32 = 255;
/// `RT_SCOPE_UNIVERSE`.
pub const SCOPE_UNIVERSE: u8 = 0;
/// `RT_SCOPE_LINK`.
pub const SCOPE_LINK: u8 = 253;
/// `RT_SCOPE_HOST`.
pub const SCOPE_HOST: u8 = 254;
/// `RT_SCOPE_NOWHERE`; in a delete request it matches any scope.
pub const SCOPE_NOWHERE: u8 = 255;
/// `RTPROT_KERNEL`: routes the kernel added (prefix routes).
pub const PROTO_KERNEL: u8 = 2;
/// `RTPROT_BOOT`: iproute2's default for `ip route add`.
pub const PROTO_BOOT: u8 = 3;
/// `RTPROT_STATIC`.
pub const PROTO_STATIC: u8 = 4;
/// `RTN_UNICAST`.
pub const TYPE_UNICAST: u8 = 1;

/// A route, as input to add/replace/del and as read back by [`list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix; `/0` for a default route.
    pub dst: IpNet,
    /// Next hop (`via`).
    pub gateway: Option<IpAddr>,
    /// Output interface (`dev`).
    pub oif: Option<u32>,
    /// Routing table (`TABLE_MAIN` by default).
    pub table: u32,
    /// `metric` / `RTA_PRIORITY`.
    pub metric: Option<u32>,
    /// `RT_SCOPE_*`. `None` on input means iproute2's choice: link scope for
    /// an IPv4 route without a gateway, universe otherwise.
    pub scope: Option<u8>,
    /// `RTPROT_*` (`PROTO_BOOT` by default, as iproute2).
    pub protocol: u8,
    /// `RTN_*` route type (`TYPE_UNICAST` by default).
    pub kind: u8,
    /// Preferred source address (`src`).
    pub prefsrc: Option<IpAddr>,
    /// `RTAX_MTU` metric.
    pub mtu: Option<u32>,
    /// `RTAX_ADVMSS` metric.
    pub advmss: Option<u32>,
}

impl Route {
    /// A unicast route to `dst` in the main table; fill in the rest with the
    /// builder methods.
    pub fn new(dst: IpNet) -> Self {
        Self {
            dst,
            gateway: None,
            oif: None,
            table: TABLE_MAIN,
            metric: None,
            scope: None,
            protocol: PROTO_BOOT,
            kind: TYPE_UNICAST,
            prefsrc: None,
            mtu: None,
            advmss: None,
        }
    }

    /// The default route of `family`.
    pub fn default_route(family: IpFamily) -> Self {
        Self::new(match family {
            IpFamily::V4 => "0.0.0.0/0".parse().expect("valid literal"),
            IpFamily::V6 => "::/0".parse().expect("valid literal"),
        })
    }

    /// Sets the gateway.
    #[must_use]
    pub fn via(mut self, gw: IpAddr) -> Self {
        self.gateway = Some(gw);
        self
    }

    /// Sets the output interface.
    #[must_use]
    pub fn dev(mut self, oif: u32) -> Self {
        self.oif = Some(oif);
        self
    }

    /// Sets the table.
    #[must_use]
    pub fn table(mut self, table: u32) -> Self {
        self.table = table;
        self
    }

    /// Sets the metric.
    #[must_use]
    pub fn metric(mut self, metric: u32) -> Self {
        self.metric = Some(metric);
        self
    }

    /// Sets the scope.
    #[must_use]
    pub fn scope(mut self, scope: u8) -> Self {
        self.scope = Some(scope);
        self
    }

    /// Sets the protocol.
    #[must_use]
    pub fn protocol(mut self, protocol: u8) -> Self {
        self.protocol = protocol;
        self
    }

    /// Sets the preferred source address.
    #[must_use]
    pub fn src(mut self, src: IpAddr) -> Self {
        self.prefsrc = Some(src);
        self
    }

    /// Sets the path MTU metric.
    #[must_use]
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// Sets the advertised MSS metric.
    #[must_use]
    pub fn advmss(mut self, advmss: u32) -> Self {
        self.advmss = Some(advmss);
        self
    }

    /// Whether this is a default route.
    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }

    fn family(&self) -> IpFamily {
        IpFamily::of(&self.dst.addr())
    }

    /// Reads an `RTM_NEWROUTE` message; `None` for families other than
    /// IPv4/IPv6.
    pub fn from_message(msg: &RouteMessage) -> Option<Self> {
        let h = &msg.header;
        let family = match u8::from(h.address_family) {
            f if f == libc::AF_INET as u8 => IpFamily::V4,
            f if f == libc::AF_INET6 as u8 => IpFamily::V6,
            _ => return None,
        };
        let mut r = Self::default_route(family);
        r.table = u32::from(h.table);
        r.scope = Some(h.scope.into());
        r.protocol = h.protocol.into();
        r.kind = h.kind.into();
        let mut dst = None;
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(a) => dst = ip(a),
                RouteAttribute::Gateway(a) => r.gateway = ip(a),
                RouteAttribute::PrefSource(a) => r.prefsrc = ip(a),
                RouteAttribute::Oif(i) => r.oif = Some(*i),
                RouteAttribute::Priority(p) => r.metric = Some(*p),
                // RTA_TABLE carries the full 32-bit table id; rtm_table is
                // only the low 8 bits (RT_TABLE_COMPAT for larger ids).
                RouteAttribute::Table(t) => r.table = *t,
                RouteAttribute::Metrics(ms) => {
                    for m in ms {
                        match m {
                            RouteMetric::Mtu(v) => r.mtu = Some(*v),
                            RouteMetric::Advmss(v) => r.advmss = Some(*v),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(dst) = dst {
            r.dst = IpNet::new(dst, h.destination_prefix_length).ok()?;
        }
        Some(r)
    }
}

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Request builders: pure, golden-tested against iproute2.
pub mod req {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
    use netlink_packet_route::{
        RouteNetlinkMessage,
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric},
    };

    use super::{Route, SCOPE_LINK, SCOPE_NOWHERE, SCOPE_UNIVERSE, TABLE_MAIN};
    use crate::{IpFamily, Op, Request, addr::req::family};

    /// The attributes in the order iproute2 emits them for
    /// `ip route add DST via GW metric M dev X mtu N advmss N`: its parser
    /// appends `RTA_OIF` after the argument loop and `RTA_METRICS` last.
    /// Tables ≥ 256 do not fit `rtm_table` and go in `RTA_TABLE`.
    fn msg(r: &Route, delete: bool) -> RouteMessage {
        let mut m = RouteMessage::default();
        let h = &mut m.header;
        h.address_family = family(r.family());
        h.destination_prefix_length = r.dst.prefix_len();
        if r.table < 256 {
            h.table = r.table as u8;
        }
        h.kind = (if delete { 0 } else { r.kind }).into();
        h.protocol = (if delete { 0 } else { r.protocol }).into();
        // iproute2's defaults; for a delete, RT_SCOPE_NOWHERE, RTN_UNSPEC and
        // protocol 0 are wildcards (fib_table_delete).
        let scope = match (delete, r.scope) {
            (_, Some(s)) => s,
            (true, None) => SCOPE_NOWHERE,
            (false, None) if r.family() == IpFamily::V4 && r.gateway.is_none() => SCOPE_LINK,
            (false, None) => SCOPE_UNIVERSE,
        };
        h.scope = scope.into();

        let a = &mut m.attributes;
        if r.dst.prefix_len() > 0 {
            a.push(RouteAttribute::Destination(RouteAddress::from(
                r.dst.addr(),
            )));
        }
        if let Some(gw) = r.gateway {
            a.push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(src) = r.prefsrc {
            a.push(RouteAttribute::PrefSource(RouteAddress::from(src)));
        }
        if let Some(p) = r.metric {
            a.push(RouteAttribute::Priority(p));
        }
        if r.table >= 256 {
            a.push(RouteAttribute::Table(r.table));
        }
        if let Some(oif) = r.oif {
            a.push(RouteAttribute::Oif(oif));
        }
        let mut metrics = Vec::new();
        if let Some(v) = r.mtu {
            metrics.push(RouteMetric::Mtu(v));
        }
        if let Some(v) = r.advmss {
            metrics.push(RouteMetric::Advmss(v));
        }
        if !metrics.is_empty() {
            a.push(RouteAttribute::Metrics(metrics));
        }
        m
    }

    fn describe(verb: &str, r: &Route) -> Op {
        let mut d = format!("{verb} route {}", r.dst);
        if let Some(gw) = r.gateway {
            d += &format!(" via {gw}");
        }
        if let Some(oif) = r.oif {
            d += &format!(" dev ifindex {oif}");
        }
        if r.table != TABLE_MAIN {
            d += &format!(" table {}", r.table);
        }
        Op::new(d, "route")
    }

    /// `ip route add ...`.
    pub fn add(r: &Route) -> Request {
        Request::new(
            RouteNetlinkMessage::NewRoute(msg(r, false)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            describe("add", r),
        )
    }

    /// `ip route replace ...`.
    pub fn replace(r: &Route) -> Request {
        Request::new(
            RouteNetlinkMessage::NewRoute(msg(r, false)),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            describe("replace", r),
        )
    }

    /// `ip route del ...`: matches on what is set (dst, gateway, oif,
    /// metric, table, and scope if given).
    pub fn del(r: &Route) -> Request {
        Request::new(
            RouteNetlinkMessage::DelRoute(msg(r, true)),
            NLM_F_ACK,
            describe("delete", r),
        )
    }

    /// An `RTM_GETROUTE` dump of every table (`ip route show table all`).
    pub fn list(f: Option<IpFamily>) -> Request {
        let mut m = RouteMessage::default();
        if let Some(f) = f {
            m.header.address_family = family(f);
        }
        Request::new(
            RouteNetlinkMessage::GetRoute(m),
            NLM_F_DUMP,
            Op::new("list routes", "route"),
        )
    }
}

/// Adds a route; [`crate::Error::is_exists`] if an identical one exists.
pub fn add(nl: &mut Netlink, r: &Route) -> Result<()> {
    nl.execute_raw(&req::add(r)).map(drop)
}

/// Adds or replaces a route.
pub fn replace(nl: &mut Netlink, r: &Route) -> Result<()> {
    nl.execute_raw(&req::replace(r)).map(drop)
}

/// Deletes a route; [`crate::Error::is_not_found`] if there is none
/// (`ESRCH`).
pub fn del(nl: &mut Netlink, r: &Route) -> Result<()> {
    nl.execute_raw(&req::del(r)).map(drop)
}

/// Routes of every table (main, local, others), optionally of one family.
pub fn list(nl: &mut Netlink, family: Option<IpFamily>) -> Result<Vec<Route>> {
    let replies = nl.execute(&req::list(family))?;
    Ok(replies
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(m) => Route::from_message(m),
            _ => None,
        })
        .filter(|r| family.is_none_or(|f| r.family() == f))
        .collect())
}
