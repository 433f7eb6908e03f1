//! The `sriov` CNI config: upstream sriov-cni's keys, checked before
//! anything on the host is touched.
//!
//! Keys (upstream `pkg/types`): `deviceID` (or `runtimeConfig.deviceID`),
//! `vlan`, `vlanQoS`, `vlanProto`, `mac` (or `CNI_ARGS` `MAC=`, or
//! `runtimeConfig.mac`, which wins), `spoofchk`, `trust`, `link_state`,
//! `min_tx_rate`, `max_tx_rate`, `ipam`. Plexus adds `dataDir` (state,
//! default `/var/lib/cni/sriov`, upstream's directory) and `sysfsRoot`
//! (default `/sys`).
//!
//! Stricter than upstream where upstream silently did something else:
//! `spoofchk`/`trust` other than `on`/`off` (upstream: off), `min_tx_rate`
//! above a non-zero `max_tx_rate` (upstream: passed to the driver), and a
//! `deviceID` that is not a PCI address are errors.

use std::path::PathBuf;

use plexus_cni::{CniError, args::CniArgs, error::code};
use plexus_netlink::{
    MacAddr,
    vf::{VfLinkMode, VlanProto},
};
use serde_json::Value;

/// Upstream's state directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/sriov";

/// A validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    /// The network name.
    pub name: String,
    /// The VF's PCI address.
    pub device_id: String,
    /// Port VLAN; `None`: not configured (left as it is).
    pub vlan: Option<u16>,
    /// 802.1p priority of the port VLAN.
    pub vlan_qos: Option<u8>,
    /// Tag protocol of the port VLAN.
    pub vlan_proto: Option<VlanProto>,
    /// MAC for the VF (admin MAC through the PF, and the netdev's).
    pub mac: Option<MacAddr>,
    /// Spoof checking.
    pub spoofchk: Option<bool>,
    /// Trusted VF.
    pub trust: Option<bool>,
    /// Link state mode.
    pub link_state: Option<VfLinkMode>,
    /// Minimum TX rate, Mbit/s.
    pub min_tx_rate: Option<u32>,
    /// Maximum TX rate, Mbit/s (0: unlimited).
    pub max_tx_rate: Option<u32>,
    /// The IPAM section, when there is one (an object with `type`).
    pub ipam: Option<Value>,
    /// Where attachment caches, allocations and locks live.
    pub data_dir: PathBuf,
    /// Where sysfs is.
    pub sysfs_root: PathBuf,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_NETWORK_CONFIG, msg)
}

/// `dataDir` and `sysfsRoot` of a config, whatever else it has (DEL and
/// GC must work from a config that no longer validates).
pub fn paths(config: &Value) -> (PathBuf, PathBuf) {
    let s = |k: &str, d: &str| {
        PathBuf::from(
            config
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(d),
        )
    };
    (
        s("dataDir", DEFAULT_DATA_DIR),
        s("sysfsRoot", plexus_sysfs::SYSFS_ROOT),
    )
}

/// Whether `s` is a PCI address, `DDDD:BB:DD.F` (lowercase or uppercase
/// hex), as sysfs names devices.
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

fn int(config: &Value, key: &str, max: i64) -> Result<Option<i64>, CniError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (0..=max).contains(&n) => Ok(Some(n)),
            Some(n) => Err(invalid(format!("{key} {n} is out of range 0-{max}"))),
            None => Err(invalid(format!("{key} must be an integer, not {v}"))),
        },
    }
}

fn string<'a>(config: &'a Value, key: &str) -> Result<Option<&'a str>, CniError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(invalid(format!("{key} must be a string, not {v}"))),
    }
}

fn on_off(config: &Value, key: &str) -> Result<Option<bool>, CniError> {
    match string(config, key)?.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("on") => Ok(Some(true)),
        Some("off") => Ok(Some(false)),
        Some(other) => Err(invalid(format!(
            "{key} must be \"on\" or \"off\", not {other:?}"
        ))),
    }
}

fn mac(s: &str, from: &str) -> Result<MacAddr, CniError> {
    s.parse()
        .map_err(|_| invalid(format!("{from} {s:?} is not a MAC address")))
}

impl NetConf {
    /// Reads and checks the config of an ADD (or CHECK).
    ///
    /// # Errors
    /// Code 7 naming the key and what is wrong with it.
    pub fn parse(config: &Value, args: &CniArgs) -> Result<Self, CniError> {
        let rc = config.get("runtimeConfig").unwrap_or(&Value::Null);
        let device_id = string(rc, "deviceID")?
            .or(string(config, "deviceID")?)
            .ok_or_else(|| {
                invalid(
                    "deviceID is required: the VF's PCI address. A delegating plugin passes it \
                     when the NetworkAttachmentDefinition has the \
                     k8s.v1.cni.cncf.io/resourceName annotation and the pod requests that \
                     resource",
                )
            })?;
        if !is_pci_address(device_id) {
            return Err(invalid(format!(
                "deviceID {device_id:?} is not a PCI address (DDDD:BB:DD.F)"
            )));
        }

        let vlan = int(config, "vlan", 4094)?.map(|v| v as u16);
        let vlan_qos = int(config, "vlanQoS", 7)?.map(|v| v as u8);
        let vlan_proto = match string(config, "vlanProto")?
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None => None,
            Some("802.1q") => Some(VlanProto::Dot1Q),
            Some("802.1ad") => Some(VlanProto::Dot1Ad),
            Some(other) => {
                return Err(invalid(format!(
                    "vlanProto must be \"802.1q\" or \"802.1ad\", not {other:?}"
                )));
            }
        };
        if vlan.is_none() && (vlan_qos.is_some() || vlan_proto.is_some()) {
            return Err(invalid("vlanQoS and vlanProto need vlan"));
        }
        if vlan == Some(0) && vlan_qos.is_some_and(|q| q != 0) {
            return Err(invalid("vlanQoS needs a non-zero vlan"));
        }
        if vlan == Some(0) && vlan_proto == Some(VlanProto::Dot1Ad) {
            return Err(invalid("vlanProto 802.1ad needs a non-zero vlan"));
        }

        // Precedence as upstream: config < CNI_ARGS MAC < runtimeConfig.mac.
        let mac = match (string(rc, "mac")?, args.get("MAC"), string(config, "mac")?) {
            (Some(m), ..) => Some(mac(m, "runtimeConfig.mac")?),
            (None, Some(m), _) if !m.is_empty() => Some(mac(m, "CNI_ARGS MAC")?),
            (None, _, Some(m)) => Some(mac(m, "mac")?),
            _ => None,
        };

        let link_state = match string(config, "link_state")?
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None => None,
            Some("auto") => Some(VfLinkMode::Auto),
            Some("enable") => Some(VfLinkMode::Enable),
            Some("disable") => Some(VfLinkMode::Disable),
            Some(other) => {
                return Err(invalid(format!(
                    "link_state must be auto, enable or disable, not {other:?}"
                )));
            }
        };
        let rate = |k| int(config, k, i64::from(u32::MAX)).map(|v| v.map(|n| n as u32));
        let (min_tx_rate, max_tx_rate) = (rate("min_tx_rate")?, rate("max_tx_rate")?);
        if let (Some(min), Some(max)) = (min_tx_rate, max_tx_rate)
            && max != 0
            && min > max
        {
            return Err(invalid(format!(
                "min_tx_rate {min} is above max_tx_rate {max} (Mbit/s)"
            )));
        }
        let ipam = match config.get("ipam") {
            None | Some(Value::Null) => None,
            Some(v) if v.as_object().is_some_and(serde_json::Map::is_empty) => None,
            Some(v) => {
                if v.get("type")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(invalid("ipam needs a type"));
                }
                Some(v.clone())
            }
        };
        let (data_dir, sysfs_root) = paths(config);
        Ok(Self {
            name: config
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            device_id: device_id.to_ascii_lowercase(),
            vlan,
            vlan_qos,
            vlan_proto,
            mac,
            spoofchk: on_off(config, "spoofchk")?,
            trust: on_off(config, "trust")?,
            link_state,
            min_tx_rate,
            max_tx_rate,
            ipam,
            data_dir,
            sysfs_root,
        })
    }

    /// The IPAM plugin's type.
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam.as_ref()?.get("type")?.as_str()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: &Value) -> Result<NetConf, CniError> {
        NetConf::parse(v, &CniArgs::default())
    }

    fn err(v: &Value) -> String {
        let e = parse(v).unwrap_err();
        assert_eq!(e.code, code::INVALID_NETWORK_CONFIG);
        e.msg
    }

    const DEV: &str = "0000:03:02.0";

    #[test]
    fn upstream_keys() {
        let c = parse(
            &json!({"name": "n", "type": "sriov", "deviceID": DEV, "vlan": 100,
            "vlanQoS": 3, "vlanProto": "802.1AD", "mac": "02:00:00:00:00:01", "spoofchk": "off",
            "trust": "on", "link_state": "enable", "min_tx_rate": 10, "max_tx_rate": 100,
            "ipam": {"type": "host-local"}}),
        )
        .unwrap();
        assert_eq!(c.vlan, Some(100));
        assert_eq!(c.vlan_qos, Some(3));
        assert_eq!(c.vlan_proto, Some(VlanProto::Dot1Ad));
        assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:01");
        assert_eq!((c.spoofchk, c.trust), (Some(false), Some(true)));
        assert_eq!(c.link_state, Some(VfLinkMode::Enable));
        assert_eq!((c.min_tx_rate, c.max_tx_rate), (Some(10), Some(100)));
        assert_eq!(c.ipam_type(), Some("host-local"));
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.sysfs_root, PathBuf::from("/sys"));
        let bare = parse(&json!({"deviceID": DEV})).unwrap();
        assert_eq!((bare.vlan, bare.mac, bare.ipam), (None, None, None));
    }

    #[test]
    fn device_id_and_mac_precedence() {
        let c = parse(
            &json!({"deviceID": "0000:99:00.0", "mac": "02:00:00:00:00:01",
            "runtimeConfig": {"deviceID": "0000:03:02.0"}}),
        )
        .unwrap();
        assert_eq!(c.device_id, DEV, "runtimeConfig.deviceID wins");
        let args = CniArgs::parse("IgnoreUnknown=1;MAC=02:00:00:00:00:02").unwrap();
        let c =
            NetConf::parse(&json!({"deviceID": DEV, "mac": "02:00:00:00:00:01"}), &args).unwrap();
        assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:02");
        let c = NetConf::parse(
            &json!({"deviceID": DEV, "runtimeConfig": {"mac": "02:00:00:00:00:03"}}),
            &args,
        )
        .unwrap();
        assert_eq!(c.mac.unwrap().to_string(), "02:00:00:00:00:03");
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(err(&json!({})).contains("k8s.v1.cni.cncf.io/resourceName"));
        assert!(err(&json!({"deviceID": "../../etc"})).contains("not a PCI address"));
        assert_eq!(
            err(&json!({"deviceID": DEV, "vlan": 5000})),
            "vlan 5000 is out of range 0-4094"
        );
        assert_eq!(
            err(&json!({"deviceID": DEV, "vlanQoS": 2})),
            "vlanQoS and vlanProto need vlan"
        );
        assert!(err(&json!({"deviceID": DEV, "vlan": 0, "vlanQoS": 2})).contains("non-zero"));
        assert!(
            err(&json!({"deviceID": DEV, "vlan": 0, "vlanProto": "802.1ad"})).contains("non-zero")
        );
        assert!(
            err(&json!({"deviceID": DEV, "vlan": 5, "vlanProto": "qinq"})).contains("vlanProto")
        );
        assert!(err(&json!({"deviceID": DEV, "vlanQoS": 9, "vlan": 1})).contains("vlanQoS 9"));
        assert!(err(&json!({"deviceID": DEV, "vlan": "7"})).contains("integer"));
        assert!(err(&json!({"deviceID": DEV, "mac": "nope"})).contains("not a MAC"));
        assert!(err(&json!({"deviceID": DEV, "spoofchk": "yes"})).contains("\"on\" or \"off\""));
        assert!(err(&json!({"deviceID": DEV, "link_state": "up"})).contains("link_state"));
        assert_eq!(
            err(&json!({"deviceID": DEV, "min_tx_rate": 200, "max_tx_rate": 100})),
            "min_tx_rate 200 is above max_tx_rate 100 (Mbit/s)"
        );
        assert!(err(&json!({"deviceID": DEV, "min_tx_rate": -1})).contains("out of range"));
        assert!(err(&json!({"deviceID": DEV, "ipam": {"subnet": "x"}})).contains("ipam"));
        // max 0 is "unlimited", so any min is fine.
        parse(&json!({"deviceID": DEV, "min_tx_rate": 200, "max_tx_rate": 0})).unwrap();
    }
}
