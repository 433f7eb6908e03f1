//! The eSwitch seen from Linux: switchdev representors and what they stand
//! for.
//!
//! Owns discovery from sysfs under an injectable root (`tc-flower-offload.md`
//! §2, §7.7): every netdev with a `phys_switch_id` is a port of the eSwitch
//! with that id, and its `phys_port_name` says which (devlink's naming,
//! net/devlink/port.c `__devlink_port_phys_port_name_get`):
//!
//! | `phys_port_name` | port | alias |
//! |---|---|---|
//! | `p0` | uplink (the wire) | `p0` |
//! | `pf0vf3` | representor of VF 3 of PF 0 (host SmartNIC) | `pf0vf3` |
//! | `c1pf0vf3` | the same seen from a DPU's Arm cores (controller 1 is the host) | `pf0vf3`, `c1pf0vf3` |
//! | `pf0`, `c1pf0` | representor of the host PF | `pf0hpf` |
//! | `pf0sf88`, `c1pf0sf88` | representor of a subfunction | `pf0sf88` |
//!
//! plus `hw-tc-offload` per port (through a [`Features`] probe: ethtool in
//! production) and the map from a VF's PCI address to its representor,
//! which is what an agent wiring a pod's VF needs.
//!
//! It must not change anything.

use std::{fs, path::Path};

use plexus_sysfs::Sysfs;
use serde::Serialize;

use crate::flower::PortMap;

/// What a switchdev port represents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Flavour {
    /// The physical port, `p<N>`.
    Uplink {
        /// Port number.
        port: u32,
    },
    /// A VF, `[c<C>]pf<P>vf<V>`.
    Vf {
        /// Controller (`c1` on a DPU: the host).
        controller: Option<u32>,
        /// PF number.
        pf: u32,
        /// VF number.
        vf: u32,
    },
    /// A PF (on a DPU, the host's PF), `[c<C>]pf<P>`.
    Pf {
        /// Controller.
        controller: Option<u32>,
        /// PF number.
        pf: u32,
    },
    /// A subfunction, `[c<C>]pf<P>sf<S>`.
    Sf {
        /// Controller.
        controller: Option<u32>,
        /// PF number.
        pf: u32,
        /// SF number.
        sf: u32,
    },
    /// A name we do not know.
    Other,
}

impl Flavour {
    /// Parses a `phys_port_name`.
    pub fn parse(name: &str) -> Self {
        fn num(s: &str) -> Option<u32> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        }
        if let Some(port) = name.strip_prefix('p').and_then(num) {
            return Flavour::Uplink { port };
        }
        let (controller, rest) = match name.strip_prefix('c') {
            Some(r) => {
                let digits = r.len() - r.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                match num(&r[..digits]) {
                    Some(c) => (Some(c), &r[digits..]),
                    None => return Flavour::Other,
                }
            }
            None => (None, name),
        };
        let Some(rest) = rest.strip_prefix("pf") else {
            return Flavour::Other;
        };
        if let Some(pf) = num(rest) {
            return Flavour::Pf { controller, pf };
        }
        for (sep, sf) in [("vf", false), ("sf", true)] {
            if let Some((p, n)) = rest.split_once(sep)
                && let (Some(pf), Some(n)) = (num(p), num(n))
            {
                return if sf {
                    Flavour::Sf {
                        controller,
                        pf,
                        sf: n,
                    }
                } else {
                    Flavour::Vf {
                        controller,
                        pf,
                        vf: n,
                    }
                };
            }
        }
        Flavour::Other
    }

    /// The names flows may use for the port (besides its netdev name).
    pub fn aliases(&self) -> Vec<String> {
        match *self {
            Flavour::Uplink { port } => vec![format!("p{port}")],
            Flavour::Vf { controller, pf, vf } => {
                let mut v = vec![format!("pf{pf}vf{vf}")];
                if let Some(c) = controller {
                    v.push(format!("c{c}pf{pf}vf{vf}"));
                }
                v
            }
            Flavour::Pf { pf, .. } => vec![format!("pf{pf}hpf")],
            Flavour::Sf { controller, pf, sf } => {
                let mut v = vec![format!("pf{pf}sf{sf}")];
                if let Some(c) = controller {
                    v.push(format!("c{c}pf{pf}sf{sf}"));
                }
                v
            }
            Flavour::Other => Vec::new(),
        }
    }
}

/// One port of an eSwitch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Representor {
    /// Netdev name.
    pub netdev: String,
    /// `phys_port_name`.
    pub phys_port_name: String,
    /// What it represents.
    pub flavour: Flavour,
    /// The names flows may use for it.
    pub aliases: Vec<String>,
    /// The PCI function it hangs off (the PF), from its `device` link.
    pub pci: Option<String>,
    /// `hw-tc-offload` (ethtool); `None` when the netdev is not in this
    /// network namespace or the probe failed.
    pub hw_tc_offload: Option<bool>,
}

/// One eSwitch: the ports sharing a `phys_switch_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Eswitch {
    /// `phys_switch_id`.
    pub switch_id: String,
    /// Its ports, uplinks first, then by netdev name.
    pub ports: Vec<Representor>,
}

impl Eswitch {
    /// The representor of VF `vf` of PF `pf` (any controller).
    pub fn vf(&self, pf: u32, vf: u32) -> Option<&Representor> {
        self.ports
            .iter()
            .find(|r| matches!(r.flavour, Flavour::Vf { pf: p, vf: v, .. } if p == pf && v == vf))
    }

    /// The uplinks.
    pub fn uplinks(&self) -> impl Iterator<Item = &Representor> {
        self.ports
            .iter()
            .filter(|r| matches!(r.flavour, Flavour::Uplink { .. }))
    }
}

/// Asks a netdev whether it offloads tc (`hw-tc-offload`).
pub trait Features {
    /// `None` when unknown (no such netdev here, probe failed).
    fn hw_tc_offload(&self, netdev: &str) -> Option<bool>;
}

/// The production probe: ethtool's feature ioctls in the caller's network
/// namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ethtool;

impl Features for Ethtool {
    fn hw_tc_offload(&self, netdev: &str) -> Option<bool> {
        crate::ethtool::feature(netdev, "hw-tc-offload")
    }
}

/// Every eSwitch under a sysfs root, sorted by switch id.
pub fn discover(sysfs: &Sysfs, features: &dyn Features) -> Vec<Eswitch> {
    let class = sysfs.root().join("class/net");
    let mut names: Vec<String> = fs::read_dir(&class)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut switches: Vec<Eswitch> = Vec::new();
    for netdev in names {
        let Some(switch_id) = sysfs.netdev_attr(&netdev, "phys_switch_id") else {
            continue;
        };
        let Some(phys_port_name) = sysfs.netdev_attr(&netdev, "phys_port_name") else {
            continue;
        };
        let flavour = Flavour::parse(&phys_port_name);
        let rep = Representor {
            pci: link_name(&sysfs.netdev_dir(&netdev).join("device")),
            hw_tc_offload: features.hw_tc_offload(&netdev),
            aliases: flavour.aliases(),
            netdev,
            phys_port_name,
            flavour,
        };
        match switches.iter_mut().find(|s| s.switch_id == switch_id) {
            Some(s) => s.ports.push(rep),
            None => switches.push(Eswitch {
                switch_id,
                ports: vec![rep],
            }),
        }
    }
    for s in &mut switches {
        s.ports.sort_by_key(|r| {
            (
                !matches!(r.flavour, Flavour::Uplink { .. }),
                r.netdev.clone(),
            )
        });
    }
    switches.sort_by(|a, b| a.switch_id.cmp(&b.switch_id));
    switches
}

fn link_name(p: &Path) -> Option<String> {
    fs::read_link(p)
        .ok()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// The representor of the VF at PCI address `vf` (a host-side SmartNIC:
/// the VF, its PF and the representors are all visible here), found
/// through `physfn`, the VF's index and the PF's representors.
pub fn vf_representor(sysfs: &Sysfs, vf: &str) -> Option<String> {
    let pf = link_name(&sysfs.device_dir(vf).join("physfn"))?;
    let index = sysfs.vf_index(&pf, vf)?;
    sysfs.vf_representor(&pf, index)
}

/// Adds every representor alias of `switches` to `ports` (whose netdev
/// names are already in it).
pub fn add_aliases(ports: &mut PortMap, switches: &[Eswitch]) {
    // Aliases are per eSwitch; the same alias on two eSwitches (two NICs
    // both have a pf0vf0) is ambiguous, so it names neither.
    let mut count = std::collections::HashMap::<&str, usize>::new();
    for r in switches.iter().flat_map(|s| &s.ports) {
        for a in &r.aliases {
            *count.entry(a.as_str()).or_default() += 1;
        }
    }
    for r in switches.iter().flat_map(|s| &s.ports) {
        for a in &r.aliases {
            if count[a.as_str()] == 1 {
                ports.alias(a, &r.netdev);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names() {
        use Flavour::*;
        for (n, f) in [
            ("p0", Uplink { port: 0 }),
            ("p1", Uplink { port: 1 }),
            (
                "pf0vf3",
                Vf {
                    controller: None,
                    pf: 0,
                    vf: 3,
                },
            ),
            (
                "c1pf0vf12",
                Vf {
                    controller: Some(1),
                    pf: 0,
                    vf: 12,
                },
            ),
            (
                "pf1",
                Pf {
                    controller: None,
                    pf: 1,
                },
            ),
            (
                "c1pf0",
                Pf {
                    controller: Some(1),
                    pf: 0,
                },
            ),
            (
                "pf0sf88",
                Sf {
                    controller: None,
                    pf: 0,
                    sf: 88,
                },
            ),
            (
                "c1pf0sf2",
                Sf {
                    controller: Some(1),
                    pf: 0,
                    sf: 2,
                },
            ),
            ("pf0vf", Other),
            ("p", Other),
            ("c", Other),
            ("eth0", Other),
        ] {
            assert_eq!(Flavour::parse(n), f, "{n}");
        }
        assert_eq!(Flavour::parse("c1pf0").aliases(), ["pf0hpf"]);
        assert_eq!(Flavour::parse("c1pf0vf3").aliases(), ["pf0vf3", "c1pf0vf3"]);
    }
}
