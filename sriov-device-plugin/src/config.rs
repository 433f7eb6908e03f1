//! The device plugin's config file, in the upstream SR-IOV network device
//! plugin's JSON format (`{"resourceList": [...]}`), read the way Go's
//! `encoding/json` reads it: **keys match case-insensitively**
//! (`resourceprefix`, `IsRdma`, `PCIAddresses` all work), unknown keys are
//! ignored (and logged here), `selectors` is one object or a list.
//!
//! Each pool is checked on its own: a pool with a bad range, no selectors,
//! a duplicate name or a value of the wrong type is reported with a clear
//! message and left out, and the other pools are still served (upstream
//! fails the whole file, or panics for a pool without selectors).
//!
//! Pure: text in, pools and errors out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The upstream default for `--resource-prefix`.
pub const DEFAULT_RESOURCE_PREFIX: &str = "intel.com";

/// What a pool is made of (upstream `deviceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
pub enum DeviceType {
    /// Network devices (PCI class 0x02): VFs and PFs without VFs.
    #[default]
    #[serde(rename = "netDevice")]
    NetDevice,
    /// Accelerators (PCI class 0x12).
    #[serde(rename = "accelerator")]
    Accelerator,
    /// Auxiliary network devices (subfunctions).
    #[serde(rename = "auxNetDevice")]
    AuxNetDevice,
}

impl DeviceType {
    /// The PCI base class this type takes.
    #[must_use]
    pub fn pci_class(self) -> u8 {
        match self {
            Self::NetDevice | Self::AuxNetDevice => 0x02,
            Self::Accelerator => 0x12,
        }
    }
}

impl fmt::Display for DeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NetDevice => "netDevice",
            Self::Accelerator => "accelerator",
            Self::AuxNetDevice => "auxNetDevice",
        })
    }
}

/// A PF given by name or PCI address, with the VF indices it offers:
/// `ens1f0`, `ens1f0#0,2-7`, `0000:3b:00.0#1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfRange {
    /// The PF's netdev name or PCI address, as written.
    pub pf: String,
    /// Inclusive VF index ranges; `None` means every VF.
    pub ranges: Option<Vec<(u32, u32)>>,
}

impl PfRange {
    /// Parses `pf[#a,b-c,...]`.
    ///
    /// # Errors
    /// An empty PF, an empty or non-numeric range, or `a-b` with `a > b`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (pf, ranges) = match text.split_once('#') {
            None => (text, None),
            Some((pf, list)) => {
                let mut ranges = Vec::new();
                for part in list.split(',') {
                    let part = part.trim();
                    let num = |s: &str| {
                        s.trim().parse::<u32>().map_err(|_| {
                            format!("{text:?}: {part:?} is not a VF index or a range like 2-7")
                        })
                    };
                    let (a, b) = match part.split_once('-') {
                        Some((a, b)) => (num(a)?, num(b)?),
                        None => {
                            let n = num(part)?;
                            (n, n)
                        }
                    };
                    if a > b {
                        return Err(format!("{text:?}: range {part:?} runs backwards"));
                    }
                    ranges.push((a, b));
                }
                (pf, Some(ranges))
            }
        };
        if pf.trim().is_empty() {
            return Err(format!("{text:?}: no PF before '#'"));
        }
        Ok(Self {
            pf: pf.trim().to_owned(),
            ranges,
        })
    }

    /// Whether VF `index` is in the ranges.
    #[must_use]
    pub fn has_index(&self, index: u32) -> bool {
        self.ranges
            .as_ref()
            .is_none_or(|r| r.iter().any(|(a, b)| (*a..=*b).contains(&index)))
    }
}

impl fmt::Display for PfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pf)?;
        if let Some(r) = &self.ranges {
            let parts: Vec<String> = r
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            write!(f, "#{}", parts.join(","))?;
        }
        Ok(())
    }
}

/// One selector object. Empty lists select everything (as upstream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Vendor IDs, lowercase hex without `0x` (`8086`).
    pub vendors: Vec<String>,
    /// Device IDs (`154c`).
    pub devices: Vec<String>,
    /// Bound driver names.
    pub drivers: Vec<String>,
    /// PCI addresses.
    pub pci_addresses: Vec<String>,
    /// ACPI indexes (`acpi_index`).
    pub acpi_indexes: Vec<String>,
    /// PF netdev names with VF ranges.
    pub pf_names: Vec<PfRange>,
    /// PF PCI addresses with VF ranges.
    pub root_devices: Vec<PfRange>,
    /// Link types (`ether`, `infiniband`).
    pub link_types: Vec<String>,
    /// Keep only devices with RDMA.
    pub is_rdma: bool,
    /// Give containers `/dev/vhost-net` and `/dev/net/tun`.
    pub need_vhost_net: bool,
    /// Auxiliary device types (`sf`); auxNetDevice pools only.
    pub aux_types: Vec<String>,
}

/// One resource pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// `resourceName`.
    pub name: String,
    /// `resourcePrefix`, or the command line's.
    pub prefix: String,
    /// `deviceType`.
    pub device_type: DeviceType,
    /// `excludeTopology`: advertise no NUMA node.
    pub exclude_topology: bool,
    /// `additionalInfo`: `"*"` or a PCI address → key → value, for the
    /// `extra` part of the `_INFO` env.
    pub additional_info: BTreeMap<String, BTreeMap<String, String>>,
    /// The selectors, tried in order; a device taken by an earlier
    /// selector or pool is not taken again.
    pub selectors: Vec<Selector>,
}

impl PoolConfig {
    /// `<prefix>/<name>`, the kubelet's resource name.
    #[must_use]
    pub fn resource(&self) -> String {
        format!("{}/{}", self.prefix, self.name)
    }
}

/// A parsed config: the usable pools, and a message for each one left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Pools, in file order.
    pub pools: Vec<PoolConfig>,
    /// One clear message per pool that could not be used, or per problem
    /// with the file itself.
    pub errors: Vec<String>,
    /// Keys that mean nothing here (ignored, as upstream does; worth a
    /// look when a pool comes out empty).
    pub unknown_keys: Vec<String>,
    /// The file as a whole is unusable (not JSON, with line and column; not
    /// an object; no `resourceList` list): most often a file caught half
    /// written. The daemon then keeps the pools of the last good file.
    pub unusable: Option<String>,
}

// Raw forms, keys already lowercased (see `fold_keys`).

#[derive(Deserialize)]
struct RawPool {
    #[serde(rename = "resourcename", default)]
    name: Option<String>,
    #[serde(rename = "resourceprefix", default)]
    prefix: Option<String>,
    #[serde(rename = "devicetype", default)]
    device_type: Option<String>,
    #[serde(rename = "excludetopology", default)]
    exclude_topology: Option<bool>,
    #[serde(rename = "additionalinfo", default)]
    additional_info: Option<BTreeMap<String, BTreeMap<String, String>>>,
    #[serde(default)]
    selectors: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawSelector {
    vendors: Vec<String>,
    devices: Vec<String>,
    drivers: Vec<String>,
    pciaddresses: Vec<String>,
    acpiindexes: Vec<String>,
    pfnames: Vec<String>,
    rootdevices: Vec<String>,
    linktypes: Vec<String>,
    isrdma: bool,
    needvhostnet: bool,
    ddpprofiles: Vec<String>,
    pkeys: Vec<String>,
    vdpatype: String,
    auxtypes: Vec<String>,
}

const POOL_KEYS: &[&str] = &[
    "resourcename",
    "resourceprefix",
    "devicetype",
    "excludetopology",
    "additionalinfo",
    "selectors",
];
const SELECTOR_KEYS: &[&str] = &[
    "vendors",
    "devices",
    "drivers",
    "pciaddresses",
    "acpiindexes",
    "pfnames",
    "rootdevices",
    "linktypes",
    "isrdma",
    "needvhostnet",
    "ddpprofiles",
    "pkeys",
    "vdpatype",
    "auxtypes",
];

/// Lowercases the keys of one object (Go matches struct fields
/// case-insensitively; a later duplicate wins, as in Go). Nested values
/// keep their keys: `additionalInfo` keys are the user's own.
fn fold_keys(obj: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in obj {
        out.insert(k.to_lowercase(), v);
    }
    out
}

fn unknown(obj: &Map<String, Value>, known: &[&str], at: &str, out: &mut Vec<String>) {
    for k in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        out.push(format!("{at}: {k}"));
    }
}

/// `^[a-zA-Z0-9_-]+$` (upstream `ValidResourceName`).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Makes serde's type errors read like a config problem.
fn type_error(e: &serde_json::Error) -> String {
    let s = e.to_string();
    // serde_json appends " at line 1 column N" for values; useless here.
    match s.find(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

fn parse_selector(v: Value, at: &str, unknown_keys: &mut Vec<String>) -> Result<Selector, String> {
    let Value::Object(obj) = v else {
        return Err(format!("{at}: a selector must be an object"));
    };
    let obj = fold_keys(obj);
    unknown(&obj, SELECTOR_KEYS, at, unknown_keys);
    let raw: RawSelector = serde_json::from_value(Value::Object(obj))
        .map_err(|e| format!("{at}: {}", type_error(&e)))?;
    for (key, set) in [
        ("ddpProfiles", !raw.ddpprofiles.is_empty()),
        ("pKeys", !raw.pkeys.is_empty()),
        ("vdpaType", !raw.vdpatype.is_empty()),
    ] {
        if set {
            return Err(format!(
                "{at}: the selector {key} is not supported by plexus (it needs devlink, \
                 ddptool, InfiniBand or vDPA support plexus does not have); remove it or \
                 select the devices another way"
            ));
        }
    }
    let ranges = |list: &[String], key: &str| -> Result<Vec<PfRange>, String> {
        list.iter()
            .map(|s| PfRange::parse(s).map_err(|e| format!("{at}: {key}: {e}")))
            .collect()
    };
    let hex = |list: Vec<String>| -> Vec<String> {
        // sysfs IDs are lowercase without 0x; upstream compares exactly, so
        // "154C" silently matches nothing. Normalise instead.
        list.into_iter()
            .map(|s| s.trim().trim_start_matches("0x").to_ascii_lowercase())
            .collect()
    };
    Ok(Selector {
        pf_names: ranges(&raw.pfnames, "pfNames")?,
        root_devices: ranges(&raw.rootdevices, "rootDevices")?,
        vendors: hex(raw.vendors),
        devices: hex(raw.devices),
        drivers: raw.drivers,
        pci_addresses: raw.pciaddresses,
        acpi_indexes: raw.acpiindexes,
        link_types: raw.linktypes,
        is_rdma: raw.isrdma,
        need_vhost_net: raw.needvhostnet,
        aux_types: raw.auxtypes,
    })
}

/// What a selector holds that its pool's type does not use: upstream's
/// per-type selector structs drop those keys, so a shared config still
/// loads; they are cleared here and listed with the unknown keys.
fn unused_for_type(sel: &mut Selector, device_type: DeviceType, at: &str, out: &mut Vec<String>) {
    let aux = device_type == DeviceType::AuxNetDevice;
    let mut drop = |key: &str, set: bool| {
        if set {
            out.push(format!("{at}: {key} (not used by {device_type} pools)"));
        }
    };
    if aux {
        drop("pciAddresses", !sel.pci_addresses.is_empty());
        drop("acpiIndexes", !sel.acpi_indexes.is_empty());
        sel.pci_addresses.clear();
        sel.acpi_indexes.clear();
    } else {
        drop("auxTypes", !sel.aux_types.is_empty());
        sel.aux_types.clear();
    }
}

fn parse_pool(
    v: Value,
    index: usize,
    default_prefix: &str,
    unknown_keys: &mut Vec<String>,
) -> Result<PoolConfig, String> {
    let Value::Object(obj) = v else {
        return Err(format!("resourceList[{index}]: a pool must be an object"));
    };
    let obj = fold_keys(obj);
    let label = match obj.get("resourcename").and_then(Value::as_str) {
        Some(n) => format!("pool {n:?}"),
        None => format!("resourceList[{index}]"),
    };
    unknown(&obj, POOL_KEYS, &label, unknown_keys);
    let raw: RawPool = serde_json::from_value(Value::Object(obj))
        .map_err(|e| format!("{label}: {}", type_error(&e)))?;
    let name = raw
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{label}: resourceName is required"))?;
    if !valid_name(&name) {
        return Err(format!(
            "{label}: resourceName may only hold letters, digits, '_' and '-'"
        ));
    }
    let prefix = raw
        .prefix
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| default_prefix.to_owned());
    if prefix.contains('/') || prefix.contains(char::is_whitespace) {
        return Err(format!(
            "{label}: resourcePrefix {prefix:?} is not a domain"
        ));
    }
    let device_type = match raw.device_type.as_deref() {
        None | Some("") => DeviceType::NetDevice,
        Some(t) => serde_json::from_value(Value::from(t)).map_err(|_| {
            format!("{label}: deviceType {t:?} is not netDevice, accelerator or auxNetDevice")
        })?,
    };
    let list = match raw.selectors {
        None | Some(Value::Null) => {
            return Err(format!(
                "{label}: no selectors; a pool needs at least one selector object, \
                 e.g. \"selectors\": {{\"drivers\": [\"iavf\"]}}"
            ));
        }
        Some(Value::Array(l)) if l.is_empty() => {
            return Err(format!("{label}: selectors is an empty list"));
        }
        Some(Value::Array(l)) => l,
        Some(o @ Value::Object(_)) => vec![o],
        Some(_) => return Err(format!("{label}: selectors must be an object or a list")),
    };
    let mut selectors = Vec::with_capacity(list.len());
    for (i, s) in list.into_iter().enumerate() {
        let at = format!("{label} selector {i}");
        let mut sel = parse_selector(s, &at, unknown_keys)?;
        unused_for_type(&mut sel, device_type, &at, unknown_keys);
        if sel.is_rdma && device_type == DeviceType::Accelerator {
            return Err(format!(
                "{label}: isRdma applies to netDevice and auxNetDevice pools only"
            ));
        }
        if device_type == DeviceType::AuxNetDevice {
            // Upstream's ValidConfig: auxTypes is required, and only SFs
            // are auxiliary network devices so far.
            if sel.aux_types.is_empty() {
                return Err(format!(
                    "{at}: auxNetDevice pools need auxTypes, e.g. \"auxTypes\": [\"sf\"]"
                ));
            }
            if let Some(t) = sel.aux_types.iter().find(|t| *t != "sf") {
                return Err(format!(
                    "{at}: auxTypes {t:?}: only \"sf\" (subfunctions) is an auxiliary network \
                     device type"
                ));
            }
        }
        selectors.push(sel);
    }
    Ok(PoolConfig {
        name,
        prefix,
        device_type,
        exclude_topology: raw.exclude_topology.unwrap_or(false),
        additional_info: raw.additional_info.unwrap_or_default(),
        selectors,
    })
}

/// Parses a config file's text. Never fails as a whole: what cannot be
/// used is in [`Config::errors`].
#[must_use]
pub fn parse(text: &str, default_prefix: &str) -> Config {
    let mut cfg = Config::default();
    let unusable = |mut cfg: Config, e: String| {
        cfg.errors.push(e.clone());
        cfg.unusable = Some(e);
        cfg
    };
    let top = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => fold_keys(o),
        Ok(_) => {
            return unusable(
                cfg,
                "the config must be a JSON object with a resourceList".into(),
            );
        }
        // serde_json's message ends "at line L column C".
        Err(e) => return unusable(cfg, format!("the config is not JSON: {e}")),
    };
    unknown(&top, &["resourcelist"], "config", &mut cfg.unknown_keys);
    let list = match top.get("resourcelist") {
        Some(Value::Array(l)) => l.clone(),
        Some(_) => return unusable(cfg, "resourceList must be a list".into()),
        None => {
            return unusable(
                cfg,
                "no resourceList: the config defines no pools (write \"resourceList\": [] for that)"
                    .into(),
            );
        }
    };
    let mut seen = HashSet::new();
    // The containers' variable, as a shell can use it ('-' reads as '_'):
    // two pools must not share it.
    let mut envs: HashMap<String, String> = HashMap::new();
    for (i, v) in list.into_iter().enumerate() {
        match parse_pool(v, i, default_prefix, &mut cfg.unknown_keys) {
            Ok(p) if !seen.insert(p.resource()) => cfg.errors.push(format!(
                "pool {:?}: the resource {} is defined twice; only the first is served",
                p.name,
                p.resource()
            )),
            Ok(p) => {
                let env = format!("PCIDEVICE_{}_{}", p.prefix, p.name)
                    .replace(['.', '-'], "_")
                    .to_uppercase();
                match envs.get(&env) {
                    Some(first) => cfg.errors.push(format!(
                        "pool {:?}: its containers' variable {env} is also pool {first:?}'s \
                         (a '-' reads as '_'); rename one; only the first is served",
                        p.name
                    )),
                    None => {
                        envs.insert(env, p.name.clone());
                        cfg.pools.push(p);
                    }
                }
            }
            Err(e) => cfg.errors.push(e),
        }
    }
    cfg
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pools_whose_variables_a_shell_reads_alike_are_refused() {
        let cfg = parse(
            &json!({"resourceList": [
                {"resourceName": "a-b", "selectors": {"drivers": ["iavf"]}},
                {"resourceName": "a_b", "selectors": {"drivers": ["iavf"]}},
                {"resourceName": "a_b", "resourcePrefix": "example.com", "selectors": {"drivers": ["iavf"]}}
            ]})
            .to_string(),
            DEFAULT_RESOURCE_PREFIX,
        );
        let names: Vec<String> = cfg.pools.iter().map(PoolConfig::resource).collect();
        assert_eq!(names, ["intel.com/a-b", "example.com/a_b"]);
        assert_eq!(
            cfg.errors,
            [
                "pool \"a_b\": its containers' variable PCIDEVICE_INTEL_COM_A_B is also pool \"a-b\"'s \
              (a '-' reads as '_'); rename one; only the first is served"
            ]
        );
        assert!(cfg.unusable.is_none());
    }

    #[test]
    fn a_file_unusable_as_a_whole_says_where() {
        let cfg = parse("{\"resourceList\": [{\"resourceName\": \"x\"", "intel.com");
        let e = cfg.unusable.unwrap();
        assert!(
            e.starts_with("the config is not JSON: EOF while parsing"),
            "{e}"
        );
        assert!(e.ends_with("at line 1 column 38"), "{e}");
        assert!(parse("[]", "intel.com").unusable.is_some());
        assert!(parse("{}", "intel.com").unusable.is_some());
        assert!(
            parse("{\"resourceList\": []}", "intel.com")
                .unusable
                .is_none()
        );
    }

    #[test]
    fn upstream_example_with_case_variant_keys() {
        let cfg = parse(
            &json!({"resourceList": [
                {"resourceName": "x710_net", "selectors": [{"vendors": ["8086"],
                    "devices": ["154C"], "drivers": ["iavf"], "pfNames": ["ens1f0#1-3"]}]},
                {"ResourceName": "x710_dpdk", "resourceprefix": "example.org",
                    "Selectors": {"DRIVERS": ["vfio-pci"], "rootDevices": ["0000:3b:00.0#0"],
                    "IsRdma": false, "NeedVhostNet": true, "PCIAddresses": ["0000:3b:02.0"]},
                    "additionalInfo": {"*": {"Token": "3"}}, "excludeTopology": true}
            ]})
            .to_string(),
            DEFAULT_RESOURCE_PREFIX,
        );
        assert!(cfg.errors.is_empty(), "{:?}", cfg.errors);
        assert!(cfg.unknown_keys.is_empty(), "{:?}", cfg.unknown_keys);
        let [net, dpdk] = cfg.pools.as_slice() else {
            panic!("{cfg:?}")
        };
        assert_eq!(net.resource(), "intel.com/x710_net");
        assert_eq!(net.selectors[0].devices, ["154c"], "hex normalised");
        assert_eq!(net.selectors[0].pf_names[0].ranges, Some(vec![(1, 3)]));
        assert_eq!(dpdk.resource(), "example.org/x710_dpdk");
        let s = &dpdk.selectors[0];
        assert_eq!(s.drivers, ["vfio-pci"]);
        assert_eq!(s.pci_addresses, ["0000:3b:02.0"]);
        assert!(s.need_vhost_net && !s.is_rdma);
        assert!(dpdk.exclude_topology);
        // User keys inside additionalInfo keep their case.
        assert_eq!(dpdk.additional_info["*"]["Token"], "3");
    }

    #[test]
    fn ranges() {
        let r = PfRange::parse("ens1f0#0,2-7,9").unwrap();
        assert_eq!(r.pf, "ens1f0");
        assert!(r.has_index(0) && r.has_index(5) && r.has_index(9));
        assert!(!r.has_index(1) && !r.has_index(8) && !r.has_index(10));
        assert_eq!(r.to_string(), "ens1f0#0,2-7,9");
        assert!(PfRange::parse("ens1f0").unwrap().has_index(63));
        for bad in [
            "ens1f0#",
            "ens1f0#a",
            "ens1f0#7-2",
            "#1",
            "ens1f0#1-",
            "ens1f0#-1",
        ] {
            assert!(PfRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_pools_are_reported_and_the_others_kept() {
        let cfg = parse(
            &json!({"resourceList": [
                {"resourceName": "good", "selectors": {"drivers": ["iavf"]}},
                {"resourceName": "bad_range", "selectors": {"pfNames": ["ens1f0#3-1"]}},
                {"resourceName": "good", "selectors": {"drivers": ["ice"]}},
                {"resourceName": "no_selectors"},
                {"resourceName": "wrong_type", "selectors": {"vendors": "8086"}},
                {"resourceName": "bad name!", "selectors": {}},
                {"resourceName": "kind", "deviceType": "gpu", "selectors": {}},
                {"resourceName": "typo", "selectors": {"driverz": ["x"], "drivers": ["y"]}},
                {"resourceName": "flag", "selectors": {"isRdma": "yes"}}
            ]})
            .to_string(),
            DEFAULT_RESOURCE_PREFIX,
        );
        let names: Vec<&str> = cfg.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["good", "typo"]);
        let all = cfg.errors.join("\n");
        for want in [
            "pool \"bad_range\" selector 0: pfNames: \"ens1f0#3-1\": range \"3-1\" runs backwards",
            "pool \"good\": the resource intel.com/good is defined twice",
            "pool \"no_selectors\": no selectors",
            "pool \"wrong_type\" selector 0: invalid type: string \"8086\", expected a sequence",
            "pool \"bad name!\": resourceName may only hold",
            "pool \"kind\": deviceType \"gpu\" is not netDevice",
            "pool \"flag\" selector 0: invalid type: string \"yes\", expected a boolean",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert_eq!(cfg.errors.len(), 7, "{all}");
        assert_eq!(cfg.unknown_keys, ["pool \"typo\" selector 0: driverz"]);
    }

    #[test]
    fn aux_pools_need_sf_and_drop_what_they_do_not_use() {
        let cfg = parse(
            &json!({"resourceList": [
                {"resourceName": "sf", "deviceType": "auxNetDevice", "selectors": {
                    "auxTypes": ["sf"], "pfNames": ["p0#1-9"], "isRdma": true,
                    "pciAddresses": ["0000:3b:00.0"]}},
                {"resourceName": "no_types", "deviceType": "auxNetDevice",
                    "selectors": {"vendors": ["15b3"]}},
                {"resourceName": "eth", "deviceType": "auxNetDevice",
                    "selectors": {"auxTypes": ["sf", "eth"]}},
                {"resourceName": "vf", "selectors": {"auxTypes": ["sf"], "drivers": ["mlx5_core"]}},
                {"resourceName": "acc", "deviceType": "accelerator", "selectors": {"isRdma": true}}
            ]})
            .to_string(),
            DEFAULT_RESOURCE_PREFIX,
        );
        let names: Vec<&str> = cfg.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["sf", "vf"]);
        let sf = &cfg.pools[0];
        assert_eq!(sf.device_type, DeviceType::AuxNetDevice);
        assert_eq!(sf.selectors[0].aux_types, ["sf"]);
        assert!(sf.selectors[0].is_rdma && sf.selectors[0].pci_addresses.is_empty());
        assert!(cfg.pools[1].selectors[0].aux_types.is_empty());
        assert_eq!(
            cfg.unknown_keys,
            [
                "pool \"sf\" selector 0: pciAddresses (not used by auxNetDevice pools)",
                "pool \"vf\" selector 0: auxTypes (not used by netDevice pools)"
            ]
        );
        let all = cfg.errors.join("\n");
        for want in [
            "pool \"no_types\" selector 0: auxNetDevice pools need auxTypes",
            "pool \"eth\" selector 0: auxTypes \"eth\": only \"sf\"",
            "pool \"acc\": isRdma applies to netDevice and auxNetDevice pools only",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert_eq!(cfg.errors.len(), 3, "{all}");
    }

    #[test]
    fn whole_file_problems() {
        assert!(parse("{", "p").errors[0].contains("not JSON"));
        assert!(parse("[]", "p").errors[0].contains("JSON object"));
        assert!(parse("{}", "p").errors[0].contains("no resourceList"));
        assert!(parse(r#"{"resourceList": {}}"#, "p").errors[0].contains("must be a list"));
        let cfg = parse(r#"{"RESOURCELIST": []}"#, "p");
        assert!(cfg.errors.is_empty() && cfg.pools.is_empty());
    }
}
