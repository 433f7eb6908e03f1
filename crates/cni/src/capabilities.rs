//! Well-known capability arguments (CONVENTIONS.md "Well-known Capabilities"),
//! read leniently.
//!
//! A runtime passes these as `runtimeConfig` to plugins that declare the
//! capability. containerd's go-cni marshals its structs without json tags, so
//! the same data arrives as `{"HostPort":8080,"ContainerPort":80}` or as
//! `{"hostPort":8080,"containerPort":80}`; both must work, and anything Go's
//! case-insensitive decoder accepts should too ([`crate::json::fold_keys`]).

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json::fold_keys;

/// Every key the capability structs below know, in canonical spelling.
const KEYS: &[&str] = &[
    "portMappings",
    "hostPort",
    "containerPort",
    "protocol",
    "hostIP",
    "ipRanges",
    "subnet",
    "rangeStart",
    "rangeEnd",
    "gateway",
    "bandwidth",
    "ingressRate",
    "ingressBurst",
    "egressRate",
    "egressBurst",
    "dns",
    "servers",
    "searches",
    "options",
    "ips",
    "mac",
    "infinibandGUID",
    "deviceID",
    "aliases",
    "cgroupPath",
];

/// `portMappings`: one host port forwarded into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port on the host.
    pub host_port: u16,
    /// The port in the container.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// The host address to bind; empty for all.
    #[serde(default, rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

fn tcp() -> String {
    "tcp".to_owned()
}

/// `ipRanges` entry (host-local's range syntax).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    /// The subnet to allocate from.
    pub subnet: String,
    /// First address to hand out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<IpAddr>,
    /// Last address to hand out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<IpAddr>,
    /// The gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// `bandwidth`: rates in bit/s, bursts in bits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    /// Ingress rate, bit/s.
    #[serde(default)]
    pub ingress_rate: u64,
    /// Ingress burst, bits.
    #[serde(default)]
    pub ingress_burst: u64,
    /// Egress rate, bit/s.
    #[serde(default)]
    pub egress_rate: u64,
    /// Egress burst, bits.
    #[serde(default)]
    pub egress_burst: u64,
}

/// The `dns` capability (keys differ from the result's `dns`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsCapability {
    /// Name servers.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(default)]
    pub searches: Vec<String>,
    /// Resolver options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// A capability value that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid runtimeConfig {key}: {source}")]
pub struct CapabilityError {
    /// The capability.
    pub key: String,
    /// What was wrong.
    #[source]
    pub source: serde_json::Error,
}

/// Reads capability `key` from a `runtimeConfig` object, accepting Go-style
/// key spellings. `Ok(None)` when absent or null.
///
/// # Errors
/// When the value is present but has the wrong shape.
pub fn get<T: DeserializeOwned>(
    runtime_config: &Value,
    key: &str,
) -> Result<Option<T>, CapabilityError> {
    let Some(obj) = runtime_config.as_object() else {
        return Ok(None);
    };
    let Some(raw) = obj
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    if raw.is_null() {
        return Ok(None);
    }
    let mut v = raw.clone();
    fold_keys(&mut v, KEYS);
    serde_json::from_value(v)
        .map(Some)
        .map_err(|source| CapabilityError {
            key: key.to_owned(),
            source,
        })
}

/// Reads `ipRanges`, accepting both the conventional list of lists and the
/// flat list go-cni produces.
///
/// # Errors
/// When the value is present but neither shape.
pub fn ip_ranges(runtime_config: &Value) -> Result<Option<Vec<Vec<IpRange>>>, CapabilityError> {
    match get::<Vec<Vec<IpRange>>>(runtime_config, "ipRanges") {
        Ok(v) => Ok(v),
        Err(nested_err) => match get::<Vec<IpRange>>(runtime_config, "ipRanges") {
            Ok(flat) => Ok(flat.map(|f| vec![f])),
            Err(_) => Err(nested_err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containerd_capitalised_keys() {
        let rc = json!({
            "PortMappings": [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}],
            "dns": {"Servers": ["10.96.0.10"], "Searches": ["svc.cluster.local"], "Options": ["ndots:5"]},
            "bandwidth": {"IngressRate": 1000000, "EgressBurst": 8}
        });
        let pm: Vec<PortMapping> = get(&rc, "portMappings").unwrap().unwrap();
        assert_eq!(pm[0].host_port, 8080);
        assert_eq!(pm[0].container_port, 80);
        let dns: DnsCapability = get(&rc, "dns").unwrap().unwrap();
        assert_eq!(dns.servers, ["10.96.0.10"]);
        assert_eq!(dns.options, ["ndots:5"]);
        let bw: Bandwidth = get(&rc, "bandwidth").unwrap().unwrap();
        assert_eq!((bw.ingress_rate, bw.egress_burst), (1_000_000, 8));
    }

    #[test]
    fn conventional_keys() {
        let rc = json!({"portMappings": [{"hostPort": 80, "containerPort": 8080}], "mac": "c2:11:22:33:44:55"});
        let pm: Vec<PortMapping> = get(&rc, "portMappings").unwrap().unwrap();
        assert_eq!(pm[0].protocol, "tcp");
        assert_eq!(
            get::<String>(&rc, "mac").unwrap().as_deref(),
            Some("c2:11:22:33:44:55")
        );
        assert_eq!(get::<String>(&rc, "deviceID").unwrap(), None);
    }

    #[test]
    fn ip_ranges_nested_or_flat() {
        let nested = json!({"ipRanges": [[{"subnet": "10.1.0.0/16"}]]});
        let flat = json!({"IPRanges": [{"Subnet": "10.1.0.0/16", "Gateway": "10.1.0.1"}]});
        assert_eq!(
            ip_ranges(&nested).unwrap().unwrap()[0][0].subnet,
            "10.1.0.0/16"
        );
        let f = ip_ranges(&flat).unwrap().unwrap();
        assert_eq!(f[0][0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert!(ip_ranges(&json!({"ipRanges": 3})).is_err());
    }

    #[test]
    fn wrong_shape_is_an_error_naming_the_key() {
        let err =
            get::<Vec<PortMapping>>(&json!({"portMappings": "x"}), "portMappings").unwrap_err();
        assert!(err.to_string().contains("portMappings"));
    }
}
