//! `default-route` (multi-net spec §4.1.2.1.9; Multus M35): the attachment
//! that asks for it takes the pod's default route of each requested family
//! away from every other interface, the cluster network's included, and the
//! cached results are rewritten to match (so CHECK and network-status agree
//! with the kernel).
//!
//! [`rewrite`] is the pure half over CNI results; [`apply`] the netlink half
//! in the pod's network namespace.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use plexus_cni::result::Route as CniRoute;
use plexus_cni::{CniError, CniResult};
use plexus_netlink::route::{self, Route, TABLE_MAIN};
use plexus_netlink::{IpFamily, Netlink, link};

fn family_of_net(n: &IpNet) -> IpFamily {
    match n {
        IpNet::V4(_) => IpFamily::V4,
        IpNet::V6(_) => IpFamily::V6,
    }
}

/// The families the gateways are in.
fn families(gateways: &[IpAddr]) -> Vec<IpFamily> {
    let mut f: Vec<IpFamily> = gateways.iter().map(IpFamily::of).collect();
    f.dedup();
    f
}

/// Checks that at most one gateway per family is asked for (plexus, like
/// Multus, does not build ECMP default routes).
///
/// # Errors
/// Code 7 naming the network.
pub fn validate(network: &str, gateways: &[IpAddr]) -> Result<(), CniError> {
    let v4 = gateways.iter().filter(|g| g.is_ipv4()).count();
    let v6 = gateways.len() - v4;
    if v4 > 1 || v6 > 1 {
        return Err(CniError::new(
            plexus_cni::error::code::INVALID_NETWORK_CONFIG,
            format!("network {network}: \"default-route\" may name one IPv4 and one IPv6 gateway"),
        ));
    }
    Ok(())
}

/// Moves the default routes of the gateways' families in `results` to
/// `results[chosen]`, via those gateways.
pub fn rewrite(results: &mut [Option<CniResult>], chosen: usize, gateways: &[IpAddr]) {
    let fams = families(gateways);
    let is_moved = |r: &CniRoute| r.is_default() && fams.contains(&family_of_net(&r.dst));
    for r in results.iter_mut().flatten() {
        r.routes.retain(|route| !is_moved(route));
    }
    if let Some(Some(r)) = results.get_mut(chosen) {
        for gw in gateways {
            let dst = match gw {
                IpAddr::V4(_) => "0.0.0.0/0",
                IpAddr::V6(_) => "::/0",
            };
            r.routes
                .push(CniRoute::new(dst.parse().expect("literal"), Some(*gw)));
        }
    }
}

/// In the pod at `netns`: deletes every main-table default route of the
/// gateways' families and adds `default via <gw> dev <ifname>` for each.
///
/// # Errors
/// When the namespace, the interface or a route operation fails.
pub fn apply(netns: &Path, ifname: &str, gateways: &[IpAddr]) -> Result<(), plexus_netlink::Error> {
    let mut nl = Netlink::in_netns(netns)?;
    let dev = link::get_by_name(&mut nl, ifname)?;
    for fam in families(gateways) {
        for r in route::list(&mut nl, Some(fam))? {
            if r.is_default() && r.table == TABLE_MAIN {
                route::del(&mut nl, &r)?;
            }
        }
    }
    for gw in gateways {
        route::add(
            &mut nl,
            &Route::default_route(IpFamily::of(gw))
                .via(*gw)
                .dev(dev.index),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(routes: &[(&str, Option<&str>)]) -> CniResult {
        CniResult {
            routes: routes
                .iter()
                .map(|(d, g)| CniRoute::new(d.parse().unwrap(), g.map(|g| g.parse().unwrap())))
                .collect(),
            ..CniResult::default()
        }
    }

    #[test]
    fn default_moves_per_family() {
        let mut rs = vec![
            Some(result(&[
                ("0.0.0.0/0", Some("10.0.0.1")),
                ("::/0", Some("fd00::1")),
            ])),
            Some(result(&[("10.9.0.0/16", None)])),
            None,
        ];
        rewrite(&mut rs, 1, &["10.1.1.254".parse().unwrap()]);
        // The IPv6 default stays with the cluster network.
        assert_eq!(rs[0].as_ref().unwrap().routes.len(), 1);
        assert_eq!(rs[0].as_ref().unwrap().routes[0].dst.to_string(), "::/0");
        let chosen = &rs[1].as_ref().unwrap().routes;
        assert_eq!(chosen.len(), 2);
        assert!(chosen[1].is_default());
        assert_eq!(chosen[1].gw, Some("10.1.1.254".parse().unwrap()));
        assert!(rs[2].is_none());
    }

    #[test]
    fn one_gateway_per_family() {
        let gws: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        validate("n", &gws).unwrap();
        let two: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        assert_eq!(validate("n", &two).unwrap_err().code, 7);
    }
}
