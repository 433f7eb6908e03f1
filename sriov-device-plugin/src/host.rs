//! What discovery needs from the host's network stack besides sysfs: which
//! netdevs carry a default route (netlink, in the current netns: the
//! daemon runs with `hostNetwork`).

use std::collections::HashSet;

use plexus_netlink::{Netlink, link, route};

/// Netdevs holding an IPv4 or IPv6 default route in any table. Upstream
/// looks at IPv4 only; an IPv6-only node's uplink deserves the same
/// protection.
///
/// # Errors
/// When netlink cannot be asked.
pub fn default_route_netdevs() -> plexus_netlink::Result<HashSet<String>> {
    let mut nl = Netlink::new()?;
    let links = link::list(&mut nl)?;
    let routes = route::list(&mut nl, None)?;
    Ok(routes
        .iter()
        .filter(|r| r.is_default())
        .filter_map(|r| r.oif)
        .filter_map(|oif| links.iter().find(|l| l.index == oif))
        .map(|l| l.name.clone())
        .collect())
}
