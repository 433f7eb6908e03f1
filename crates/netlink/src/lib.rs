//! Plexus's small synchronous rtnetlink layer, on `netlink-packet-route` and
//! `netlink-sys`, for short-lived CNI plugin binaries and simple daemons.
//!
//! - [`socket`]: the one socket type, [`Netlink`], and the request/reply
//!   protocol (sequence checks, ACKs, dumps, extended-ack errors).
//! - [`error`]: the one error type; errno → "op target: meaning (ERRNO)".
//! - [`link`], [`addr`], [`route`]: interfaces, addresses, routes.
//! - [`vf`]: SR-IOV VF attributes through the PF.
//! - [`tc`]: the clsact qdisc and raw tc filters.
//! - [`attr`]: raw attribute encoding for what the typed crate lacks.
//! - [`genl`], [`devlink`]: generic netlink and devlink device parameters.
//!
//! Every operation is a pure request builder (`req::*`, golden-tested
//! against the bytes iproute2 sends, see `tests/fixtures/capture.sh`) plus a
//! thin function that sends it. Nothing here chooses names, addresses or
//! namespaces, and nothing spawns threads except [`Netlink::in_netns`].
//!
//! ```no_run
//! use plexus_netlink::{Netlink, link};
//!
//! let mut nl = Netlink::new()?;
//! link::add_veth(&mut nl, "veth0", "veth1", None)?;
//! let veth0 = link::get_by_name(&mut nl, "veth0")?;
//! link::set_up(&mut nl, veth0.index)?;
//! # Ok::<(), plexus_netlink::Error>(())
//! ```

pub mod addr;
pub mod attr;
pub mod devlink;
pub mod error;
pub mod genl;
pub mod link;
pub mod route;
pub mod socket;
pub mod tc;
pub mod vf;

use std::net::IpAddr;

pub use attr::AttrWriter;
pub use error::{Error, KernelError, Op, Result};
pub use link::{Link, MacAddr};
pub use socket::{Netlink, RawMessage, Request};

/// IPv4 or IPv6, for filtering dumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    /// `AF_INET`.
    V4,
    /// `AF_INET6`.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}
