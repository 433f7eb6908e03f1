//! The ADD success result, in one internal model with conversion to and from
//! every supported version (SPEC.md §5; Go `pkg/types/{100,040,020}`).
//!
//! Internally everything is the 1.1.0 shape. [`CniResult::parse`] reads any
//! version (0.1.0 and 0.2.0 included, for old delegates) and [`CniResult::to_value`]
//! writes exactly one version, dropping what that version does not have:
//! `ips[].version` exists only below 1.0.0; interface `mtu`/`socketPath`/
//! `pciID` and the extended route fields only in 1.1.0.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::version::Version;

/// One interface a plugin created or adjusted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// The interface name (required, even when empty).
    pub name: String,
    /// Hardware address, if it has one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU (1.1.0); 0 means unknown.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtu: u32,
    /// The netns path for in-container interfaces; empty for host ones.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// A socket for userspace datapaths such as vhost-user (1.1.0).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub socket_path: String,
    /// The platform's PCI id of the device, e.g. a VF's BDF (1.1.0).
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

/// One IP address and which interface holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into `interfaces`; IPAM plugins leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// The address with its prefix length, host bits kept (`10.1.2.3/24`).
    pub address: IpNet,
    /// The default gateway for this subnet, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// The destination prefix.
    pub dst: IpNet,
    /// The next hop; when absent the plugin may use the subnet's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// TCP advertised MSS (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Route priority / metric (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table (1.1.0); 0 is expressible, hence the option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Scope (1.1.0): global 0, link 253, host 254.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    /// A route with only a destination and an optional gateway.
    #[must_use]
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Self {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }

    /// Whether this is a default route (`0.0.0.0/0` or `::/0`).
    #[must_use]
    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }
}

/// DNS settings a plugin learned (not the runtimeConfig `dns` capability,
/// whose keys differ).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// Whether nothing is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// An ADD result in the internal (1.1.0) model.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CniResult {
    /// Every interface created, host-side ones included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Every address assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Every route added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS information.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// A result that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// The JSON is not an object of the expected shape.
    #[error("invalid CNI {version} result: {source}")]
    Shape {
        /// The version the result claimed.
        version: String,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
    /// The result claims a version we cannot read.
    #[error("unsupported result version {0:?}")]
    Version(String),
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl CniResult {
    /// Reads a result of any version.
    ///
    /// A result without `cniVersion` is taken to be in `default_version`,
    /// as libcni's `fixupResultVersion` does for delegate output.
    ///
    /// # Errors
    /// When the JSON does not match the shape of its version.
    pub fn parse(value: &Value, default_version: &str) -> Result<(String, Self), ResultError> {
        let version = value
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or(default_version)
            .to_owned();
        let shape = |source| ResultError::Shape {
            version: version.clone(),
            source,
        };
        let result = match version.as_str() {
            "0.1.0" | "0.2.0" => {
                let legacy: Legacy = serde_json::from_value(value.clone()).map_err(shape)?;
                legacy.into_current()
            }
            v if v.parse::<Version>().is_ok() => {
                // ips[].version (0.x) is ignored on the way up; every other
                // field has the same name in all versions.
                serde_json::from_value(value.clone()).map_err(shape)?
            }
            _ => return Err(ResultError::Version(version)),
        };
        Ok((version, result))
    }

    /// Reads a result from bytes (see [`CniResult::parse`]).
    ///
    /// # Errors
    /// When the bytes are not JSON or not a result.
    pub fn from_slice(bytes: &[u8], default_version: &str) -> Result<(String, Self), ResultError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|source| ResultError::Shape {
            version: default_version.to_owned(),
            source,
        })?;
        Self::parse(&value, default_version)
    }

    /// The result as JSON in exactly `version`.
    #[must_use]
    pub fn to_value(&self, version: Version) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        if !self.interfaces.is_empty() {
            let ifaces = self.interfaces.iter().map(|i| {
                let mut i = i.clone();
                if !version.has_1_1_fields() {
                    i.mtu = 0;
                    i.socket_path.clear();
                    i.pci_id.clear();
                }
                to_json(&i)
            });
            out.insert("interfaces".into(), Value::Array(ifaces.collect()));
        }
        if !self.ips.is_empty() {
            let ips = self.ips.iter().map(|ip| {
                let mut v = to_json(ip);
                if version.has_ip_version() {
                    let family = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    // Go's 040 types put `version` first; order is not
                    // significant to any parser, but it reads naturally.
                    let mut m = Map::new();
                    m.insert("version".into(), json!(family));
                    m.extend(v.as_object_mut().map(std::mem::take).unwrap_or_default());
                    v = Value::Object(m);
                }
                v
            });
            out.insert("ips".into(), Value::Array(ips.collect()));
        }
        if !self.routes.is_empty() {
            let routes = self.routes.iter().map(|r| {
                if version.has_1_1_fields() {
                    to_json(r)
                } else {
                    to_json(&Route::new(r.dst, r.gw))
                }
            });
            out.insert("routes".into(), Value::Array(routes.collect()));
        }
        if !self.dns.is_empty() {
            out.insert("dns".into(), to_json(&self.dns));
        }
        Value::Object(out)
    }

    /// Converts a result of any version into `version`: the conversion a
    /// runtime applies to a cached result before handing it to a plugin.
    ///
    /// # Errors
    /// When `value` is not a readable result.
    pub fn convert(value: &Value, version: Version) -> Result<Value, ResultError> {
        let (_, r) = Self::parse(value, version.as_str())?;
        Ok(r.to_value(version))
    }
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("result types always serialise")
}

/// The 0.1.0/0.2.0 result: one `ip4` and one `ip6` block.
#[derive(Deserialize)]
struct Legacy {
    #[serde(default)]
    ip4: Option<LegacyIp>,
    #[serde(default)]
    ip6: Option<LegacyIp>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Deserialize)]
struct LegacyIp {
    ip: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<Route>,
}

impl Legacy {
    fn into_current(self) -> CniResult {
        let mut r = CniResult {
            dns: self.dns,
            ..CniResult::default()
        };
        for block in [self.ip4, self.ip6].into_iter().flatten() {
            r.ips.push(IpConfig {
                interface: None,
                address: block.ip,
                gateway: block.gateway,
            });
            r.routes.extend(block.routes);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::SUPPORTED;

    fn full() -> CniResult {
        serde_json::from_value(json!({
            "interfaces": [
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "net1", "mac": "aa:bb:cc:dd:ee:02", "mtu": 9000,
                 "sandbox": "/run/netns/p", "socketPath": "/run/vhu.sock", "pciID": "0000:04:02.1"}
            ],
            "ips": [
                {"interface": 1, "address": "10.1.2.3/24", "gateway": "10.1.2.1"},
                {"interface": 1, "address": "fd00::3/64"}
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.1.2.1", "mtu": 1400, "advmss": 1360,
                 "priority": 100, "table": 0, "scope": 0},
                {"dst": "fd00:1::/64"}
            ],
            "dns": {"nameservers": ["10.0.0.10"], "domain": "cluster.local",
                    "search": ["svc.cluster.local"], "options": ["ndots:5"]}
        }))
        .unwrap()
    }

    #[test]
    fn emits_exactly_the_requested_version() {
        for v in SUPPORTED {
            let out = full().to_value(v);
            assert_eq!(out["cniVersion"], v.as_str());
            let ip0 = &out["ips"][0];
            assert_eq!(ip0.get("version").is_some(), v.has_ip_version(), "{v}");
            if v.has_ip_version() {
                assert_eq!(ip0["version"], "4");
                assert_eq!(out["ips"][1]["version"], "6");
            }
            let iface = &out["interfaces"][1];
            let route = &out["routes"][0];
            for key in ["mtu", "socketPath", "pciID"] {
                assert_eq!(iface.get(key).is_some(), v.has_1_1_fields(), "{v} {key}");
            }
            for key in ["mtu", "advmss", "priority", "table", "scope"] {
                assert_eq!(route.get(key).is_some(), v.has_1_1_fields(), "{v} {key}");
            }
            assert_eq!(out["dns"]["domain"], "cluster.local");
            assert_eq!(
                out["ips"][0]["address"], "10.1.2.3/24",
                "host bits are kept"
            );
        }
    }

    #[test]
    fn round_trips_through_every_version() {
        let original = full();
        for v in SUPPORTED {
            let (ver, back) = CniResult::parse(&original.to_value(v), "9.9.9").unwrap();
            assert_eq!(ver, v.as_str());
            if v.has_1_1_fields() {
                assert_eq!(back, original);
            } else {
                // Down-conversion drops only the 1.1 fields.
                assert_eq!(back.ips, original.ips);
                assert_eq!(back.interfaces[1].mac, original.interfaces[1].mac);
                assert_eq!(back.interfaces[1].mtu, 0);
                assert_eq!(
                    back.routes[0],
                    Route::new(original.routes[0].dst, original.routes[0].gw)
                );
            }
        }
    }

    #[test]
    fn table_zero_is_kept_in_1_1() {
        let out = full().to_value(Version::V1_1_0);
        assert_eq!(out["routes"][0]["table"], 0);
        assert!(out["routes"][1].get("table").is_none());
    }

    #[test]
    fn reads_go_1_0_results_with_1_1_fields() {
        // Go's types100 serves 1.0.0 and 1.1.0 with one struct.
        let v = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mtu": 1500, "sandbox": "/x"}],
            "ips": [{"address": "10.0.0.2/24", "interface": 0}]});
        let (_, r) = CniResult::parse(&v, "1.0.0").unwrap();
        assert_eq!(r.interfaces[0].mtu, 1500);
    }

    #[test]
    fn ipam_results_have_no_interface_index() {
        let v = json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}]});
        let (_, r) = CniResult::parse(&v, "0.4.0").unwrap();
        assert_eq!(r.ips[0].interface, None);
        assert!(
            r.to_value(Version::V1_0_0)["ips"][0]
                .get("interface")
                .is_none()
        );
    }

    #[test]
    fn missing_version_takes_the_default() {
        let v = json!({"ips": [{"address": "10.0.0.2/24"}]});
        assert_eq!(CniResult::parse(&v, "0.3.1").unwrap().0, "0.3.1");
    }

    #[test]
    fn reads_legacy_0_2_0() {
        let v = json!({"cniVersion": "0.2.0",
            "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
            "ip6": {"ip": "fd00::2/64"},
            "dns": {"nameservers": ["1.1.1.1"]}});
        let (_, r) = CniResult::parse(&v, "0.2.0").unwrap();
        assert_eq!(r.ips.len(), 2);
        assert_eq!(r.routes[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(r.dns.nameservers, ["1.1.1.1"]);
    }

    #[test]
    fn rejects_garbage_and_unknown_versions() {
        assert!(CniResult::parse(&json!({"cniVersion": "7.0.0"}), "1.0.0").is_err());
        assert!(CniResult::parse(&json!({"ips": [{"address": "nope"}]}), "1.0.0").is_err());
        assert!(CniResult::from_slice(b"not json", "1.0.0").is_err());
    }

    #[test]
    fn empty_result_is_just_the_version() {
        assert_eq!(
            CniResult::default().to_value(Version::V0_3_1),
            json!({"cniVersion": "0.3.1"})
        );
    }
}
