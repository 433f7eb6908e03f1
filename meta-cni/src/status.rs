//! The `k8s.v1.cni.cncf.io/network-status` annotation (multi-net spec §5):
//! one entry per attachment, from its CNI result.
//!
//! Exactly the spec's keys: `name`, `interface`, `ips` (bare addresses, as
//! every consumer of Multus' status parses them), `mac`, `default`, `dns`,
//! `default-route` (the spec's name for what Multus calls `gateway`) and,
//! for attachments with a device, `device-info`. Pure.

use plexus_cni::CniResult;
use serde::Serialize;

/// The DNS part of an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatusDns {
    /// Name servers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
}

/// One entry of the network-status list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkStatus {
    /// `<namespace>/<nad>`, or the network name of a file-based network.
    pub name: String,
    /// The interface in the pod.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub interface: String,
    /// Its addresses, without prefix length.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Its MAC address.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// True for the cluster default network only.
    pub default: bool,
    /// DNS settings from the result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<StatusDns>,
    /// Gateways of the default routes this interface holds.
    #[serde(rename = "default-route", skip_serializing_if = "Vec::is_empty")]
    pub default_route: Vec<String>,
    /// The device-info file's content, for device attachments.
    #[serde(rename = "device-info", skip_serializing_if = "Option::is_none")]
    pub device_info: Option<serde_json::Value>,
}

/// The entry of one attachment: the result's interface named `ifname` (or
/// the first in a sandbox), the addresses pointing at it, and the default
/// routes' gateways.
#[must_use]
pub fn entry(network: &str, ifname: &str, default: bool, result: &CniResult) -> NetworkStatus {
    let idx = result
        .interfaces
        .iter()
        .position(|i| i.name == ifname && !i.sandbox.is_empty())
        .or_else(|| result.interfaces.iter().position(|i| !i.sandbox.is_empty()));
    let iface = idx.map(|i| &result.interfaces[i]);
    let ips = result
        .ips
        .iter()
        // Results without interfaces (some IPAM-only chains) keep every IP.
        .filter(|ip| idx.is_none() || ip.interface == idx)
        .map(|ip| ip.address.addr().to_string())
        .collect();
    let dns = (!result.dns.is_empty()).then(|| StatusDns {
        nameservers: result.dns.nameservers.clone(),
        domain: result.dns.domain.clone(),
        search: result.dns.search.clone(),
    });
    NetworkStatus {
        name: network.to_owned(),
        interface: iface.map_or_else(|| ifname.to_owned(), |i| i.name.clone()),
        ips,
        mac: iface.map(|i| i.mac.clone()).unwrap_or_default(),
        default,
        dns,
        default_route: result
            .routes
            .iter()
            .filter(|r| r.is_default())
            .filter_map(|r| r.gw.map(|g| g.to_string()))
            .collect(),
        device_info: None,
    }
}

/// The annotation value: a pretty-printed JSON list, as Multus writes it.
#[must_use]
pub fn render(entries: &[NetworkStatus]) -> String {
    serde_json::to_string_pretty(entries).expect("status serialises")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ptp_style_result() {
        // ptp returns the host veth first and the pod's interface second.
        let (_, r) = CniResult::parse(
            &json!({"cniVersion": "1.0.0",
                "interfaces": [{"name": "veth1", "mac": "aa:aa:aa:aa:aa:aa"},
                               {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/p"}],
                "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "10.2.0.0/16"}],
                "dns": {"nameservers": ["10.96.0.10"]}}),
            "1.0.0",
        )
        .unwrap();
        let e = entry("k8s-pod-network", "eth0", true, &r);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"name": "k8s-pod-network", "interface": "eth0", "ips": ["10.1.0.5"],
                "mac": "02:00:00:00:00:01", "default": true,
                "dns": {"nameservers": ["10.96.0.10"]}, "default-route": ["10.1.0.1"]})
        );
    }

    #[test]
    fn empty_result_still_names_the_attachment() {
        let e = entry("ns/x", "net1", false, &CniResult::default());
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"name": "ns/x", "interface": "net1", "default": false})
        );
    }
}
