//! Which device goes to which pool, and why every other device does not.
//!
//! Pools are filled in config order, each pool's selectors in order; a
//! device goes to the first pool and selector that accept it and no other
//! (upstream's "already allocated" rule). Before the selectors, a netDevice
//! pool takes only network-class devices, never a PF that has VFs
//! configured (its VFs are the devices) and never a device carrying one of
//! the host's default routes (taking it would cut the node off). An
//! auxNetDevice pool takes only auxiliary devices (subfunctions) of
//! network-class devices, and no other pool takes those.
//!
//! For a device no pool takes, the report keeps, per pool, the first rule
//! that rejected it: the answer to "why is my allocatable 0?" that upstream
//! never gives.
//!
//! Pure: a scan, a config and the host's default-route netdevs in; pools
//! and a report out.

use std::collections::{HashMap, HashSet};

use plexus_sysfs::{PciDevice, Scan};
use serde::Serialize;

use crate::config::{Config, DeviceType, PfRange, PoolConfig, Selector};

/// A pool and its devices (sorted by address).
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// Its config.
    pub config: PoolConfig,
    /// Its devices.
    pub devices: Vec<PoolDevice>,
}

/// A device in a pool, with what Allocate needs from the selector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolDevice {
    /// The device.
    #[serde(flatten)]
    pub dev: PciDevice,
    /// The selector that took it asked for vhost-net.
    pub need_vhost_net: bool,
    /// The selector that took it asked for RDMA.
    pub is_rdma: bool,
}

/// What became of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Verdict {
    /// In this pool.
    Pooled {
        /// `<prefix>/<name>`.
        resource: String,
    },
    /// In no pool: per pool, the first rule that said no.
    Rejected {
        /// `(resource, reason)`.
        reasons: Vec<(String, String)>,
    },
    /// Its sysfs entry could not be read.
    Unreadable {
        /// Why.
        error: String,
    },
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// PCI address.
    pub address: String,
    /// `vendor:device`, e.g. `8086:154c`.
    pub id: String,
    /// Names from the PCI ID database, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `VF <i> of <pf>`, `PF (<n> of <total> VFs)`, `SF <n> of <pf>`,
    /// `aux <type> of <pf>`, or `PCI`.
    pub kind: String,
    /// Bound driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Netdevs.
    pub netdevs: Vec<String>,
    /// NUMA node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// The outcome.
    pub verdict: Verdict,
}

/// Every network device (and accelerator) and what became of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// By address.
    pub devices: Vec<Entry>,
    /// Pools with no device: upstream serves nothing for them, neither do
    /// we; listed so that is not silent.
    pub empty_pools: Vec<String>,
}

fn list(v: &[String]) -> String {
    format!("[{}]", v.join(", "))
}

fn ranges(v: &[PfRange]) -> String {
    let s: Vec<String> = v.iter().map(ToString::to_string).collect();
    list(&s)
}

/// The first rule of `sel` that `d` fails, or `None` when it passes.
fn reject(sel: &Selector, d: &PciDevice, by_addr: &HashMap<&str, &PciDevice>) -> Option<String> {
    let one_of = |key: &str, have: Option<&str>, want: &[String], what: &str| {
        if want.is_empty() || have.is_some_and(|h| want.iter().any(|w| w == h)) {
            return None;
        }
        Some(match have {
            Some(h) => format!("{key}: {what} {h} is not in {}", list(want)),
            None => format!("{key}: it has no {what} (want one of {})", list(want)),
        })
    };
    let sf = d.aux_type.is_some();
    if let Some(r) = one_of("vendors", Some(&d.vendor), &sel.vendors, "vendor")
        .or_else(|| one_of("devices", Some(&d.device), &sel.devices, "device ID"))
        .or_else(|| one_of("drivers", d.driver.as_deref(), &sel.drivers, "driver"))
        .or_else(|| {
            one_of(
                "pciAddresses",
                Some(&d.address),
                &sel.pci_addresses,
                "address",
            )
        })
        .or_else(|| {
            one_of(
                "acpiIndexes",
                d.acpi_index.as_deref(),
                &sel.acpi_indexes,
                "acpi_index",
            )
        })
        .or_else(|| {
            one_of(
                "auxTypes",
                d.aux_type.as_deref(),
                &sel.aux_types,
                "auxiliary device type",
            )
        })
    {
        return Some(r);
    }
    let index = if sf { "SF number" } else { "VF index" };
    for (key, want, pf_id) in [
        (
            "pfNames",
            &sel.pf_names,
            d.pf.as_ref().and_then(|p| p.netdev.clone()),
        ),
        (
            "rootDevices",
            &sel.root_devices,
            d.pf.as_ref().map(|p| p.address.clone()),
        ),
    ] {
        if want.is_empty() {
            continue;
        }
        let Some(pf) = &d.pf else {
            return Some(format!(
                "{key}: it is not a VF ({key} selects VFs of a PF: {})",
                ranges(want)
            ));
        };
        let Some(pf_id) = pf_id else {
            return Some(format!("{key}: its PF {} has no netdev", pf.address));
        };
        let matching: Vec<&PfRange> = want
            .iter()
            .filter(|r| r.pf.eq_ignore_ascii_case(&pf_id))
            .collect();
        if matching.is_empty() {
            return Some(format!("{key}: its PF {pf_id} is not in {}", ranges(want)));
        }
        match pf.vf_index {
            Some(i) if matching.iter().any(|r| r.has_index(i)) => {}
            Some(i) => {
                return Some(format!("{key}: {index} {i} is not in {}", ranges(want)));
            }
            None => return Some(format!("{key}: its {index} on {pf_id} is unknown")),
        }
    }
    if !sel.link_types.is_empty() {
        // A VF without a netdev (vfio) has its PF's link type (upstream).
        let lt = d.link_type.clone().or_else(|| {
            d.pf.as_ref()
                .and_then(|p| by_addr.get(p.address.as_str()))
                .and_then(|pf| pf.link_type.clone())
        });
        if let Some(r) = one_of("linkTypes", lt.as_deref(), &sel.link_types, "link type") {
            return Some(r);
        }
    }
    if sel.is_rdma && d.rdma.is_empty() && !d.rdma_in_netns {
        return Some("isRdma: it has no RDMA device".into());
    }
    None
}

/// Rules every selector of a pool of this type applies first.
fn intake(pool: &PoolConfig, d: &PciDevice, default_routes: &HashSet<String>) -> Option<String> {
    let aux_pool = pool.device_type == DeviceType::AuxNetDevice;
    match (&d.aux_type, aux_pool) {
        (Some(t), false) => {
            return Some(format!(
                "an auxiliary device ({t}): only auxNetDevice pools take those"
            ));
        }
        (None, true) => {
            return Some(
                "not an auxiliary device: auxNetDevice pools take subfunctions (SFs)".into(),
            );
        }
        _ => {}
    }
    let want = pool.device_type.pci_class();
    if d.base_class() != want {
        return Some(format!(
            "class {:06x}: {} pools take PCI class {want:02x}",
            d.class, pool.device_type
        ));
    }
    if pool.device_type == DeviceType::NetDevice {
        if let Some(c) = d.sriov.as_ref().filter(|c| c.num_vfs > 0) {
            return Some(format!(
                "a PF with {} VFs configured: its VFs are the devices, not the PF",
                c.num_vfs
            ));
        }
        if let Some(n) = d.netdevs.iter().find(|n| default_routes.contains(*n)) {
            return Some(format!(
                "its netdev {n} carries a default route of the host; taking it would cut \
                 the node off"
            ));
        }
    }
    None
}

fn kind(d: &PciDevice) -> String {
    if let Some(t) = &d.aux_type {
        let parent =
            d.pf.as_ref()
                .map_or("?", |p| p.netdev.as_deref().unwrap_or(&p.address));
        return match d.pf.as_ref().and_then(|p| p.vf_index) {
            Some(n) if t == "sf" => format!("SF {n} of {parent}"),
            _ => format!("aux {t} of {parent}"),
        };
    }
    match (&d.pf, &d.sriov) {
        (Some(pf), _) => match pf.vf_index {
            Some(i) => format!("VF {i} of {}", pf.netdev.as_deref().unwrap_or(&pf.address)),
            None => format!("VF of {}", pf.address),
        },
        (None, Some(c)) => format!("PF ({} of {} VFs)", c.num_vfs, c.total_vfs),
        (None, None) => "PCI".into(),
    }
}

/// Fills the pools from a scan. `default_routes` are the netdevs that
/// carry one of the host's default routes.
#[must_use]
pub fn build(cfg: &Config, scan: &Scan, default_routes: &HashSet<String>) -> (Vec<Pool>, Report) {
    let by_addr: HashMap<&str, &PciDevice> = scan
        .devices
        .iter()
        .map(|d| (d.address.as_str(), d))
        .collect();
    let mut pools: Vec<Pool> = cfg
        .pools
        .iter()
        .map(|c| Pool {
            config: c.clone(),
            devices: Vec::new(),
        })
        .collect();
    let mut report = Report::default();
    // One database lookup per device model, not per VF.
    let mut names: HashMap<(String, String), Option<String>> = HashMap::new();
    // Auxiliary devices (mlx5 makes several per port) only matter to a
    // config with an auxNetDevice pool.
    let aux_pools = cfg
        .pools
        .iter()
        .any(|p| p.device_type == DeviceType::AuxNetDevice);
    let interesting = |d: &PciDevice| {
        matches!(d.base_class(), 0x02 | 0x12) && (d.aux_type.is_none() || aux_pools)
    };
    for d in &scan.devices {
        let mut reasons = Vec::new();
        let mut taken = None;
        'pools: for (pi, pool) in pools.iter().enumerate() {
            let resource = pool.config.resource();
            if let Some(r) = intake(&pool.config, d, default_routes) {
                reasons.push((resource, r));
                continue;
            }
            let mut first = None;
            for (si, sel) in pool.config.selectors.iter().enumerate() {
                match reject(sel, d, &by_addr) {
                    None => {
                        taken = Some((pi, sel.need_vhost_net, sel.is_rdma));
                        break 'pools;
                    }
                    Some(r) if first.is_none() => {
                        first = Some(if pool.config.selectors.len() > 1 {
                            format!("selector {si}: {r}")
                        } else {
                            r
                        });
                    }
                    Some(_) => {}
                }
            }
            reasons.push((resource, first.unwrap_or_default()));
        }
        let verdict = match taken {
            Some((pi, need_vhost_net, is_rdma)) => {
                pools[pi].devices.push(PoolDevice {
                    dev: d.clone(),
                    need_vhost_net,
                    is_rdma,
                });
                Verdict::Pooled {
                    resource: pools[pi].config.resource(),
                }
            }
            None if !interesting(d) => continue,
            None => Verdict::Rejected { reasons },
        };
        report.devices.push(Entry {
            address: d.address.clone(),
            id: format!("{}:{}", d.vendor, d.device),
            name: names
                .entry((d.vendor.clone(), d.device.clone()))
                .or_insert_with(|| {
                    plexus_sysfs::pci_names(&d.vendor, &d.device).map(|(v, n)| format!("{v} {n}"))
                })
                .clone(),
            kind: kind(d),
            driver: d.driver.clone(),
            netdevs: d.netdevs.clone(),
            numa_node: d.numa_node,
            verdict,
        });
    }
    for (address, e) in &scan.errors {
        report.devices.push(Entry {
            address: address.clone(),
            id: "?".into(),
            name: None,
            kind: "?".into(),
            driver: None,
            netdevs: Vec::new(),
            numa_node: None,
            verdict: Verdict::Unreadable {
                error: e.to_string(),
            },
        });
    }
    report.devices.sort_by(|a, b| a.address.cmp(&b.address));
    report.empty_pools = pools
        .iter()
        .filter(|p| p.devices.is_empty())
        .map(|p| p.config.resource())
        .collect();
    (pools, report)
}

impl std::fmt::Display for Report {
    /// One device per line: address, ID, kind, driver, netdevs, NUMA, then
    /// the pool or, indented, why each pool said no.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.devices {
            let mut line = format!("{} {} {}", e.address, e.id, e.kind);
            if let Some(d) = &e.driver {
                line.push_str(&format!(" driver={d}"));
            }
            if !e.netdevs.is_empty() {
                line.push_str(&format!(" netdev={}", e.netdevs.join(",")));
            }
            if let Some(n) = e.numa_node {
                line.push_str(&format!(" numa={n}"));
            }
            if let Some(n) = &e.name {
                line.push_str(&format!(" ({n})"));
            }
            writeln!(f, "{line}")?;
            match &e.verdict {
                Verdict::Pooled { resource } => writeln!(f, "    -> {resource}")?,
                Verdict::Rejected { reasons } if reasons.is_empty() => {
                    writeln!(f, "    -> no pool (the config has none)")?;
                }
                Verdict::Rejected { reasons } => {
                    for (pool, why) in reasons {
                        writeln!(f, "    not {pool}: {why}")?;
                    }
                }
                Verdict::Unreadable { error } => writeln!(f, "    unreadable: {error}")?,
            }
        }
        for p in &self.empty_pools {
            writeln!(f, "pool {p}: no devices; it is not served")?;
        }
        Ok(())
    }
}
