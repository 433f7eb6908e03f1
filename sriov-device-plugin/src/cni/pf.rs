//! The hardware seam of the `sriov` plugin: a PF's operations on its VFs'
//! attributes (`ip link set PF vf N ...`).
//!
//! [`PfOps`] has two implementations: [`NetlinkPf`], the production one
//! (`RTM_NEWLINK` on the PF with `IFLA_VFINFO_LIST`, golden-byte tested in
//! `plexus-netlink` against what iproute2 sends), and [`EmulatedPf`], which
//! keeps the VF attributes in a state file in the PF's directory of a fake
//! sysfs tree, for machines without SR-IOV NICs. [`open`] picks one: a PF
//! whose sysfs directory holds [`EMULATED_STATE`] is emulated (a real
//! `/sys` never has that file). Nothing else knows which one it has.

use std::{
    collections::BTreeMap,
    fs::File,
    io::Write as _,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use plexus_netlink::{
    MacAddr, Netlink, link,
    vf::{self, VfConfig, VfLinkMode, VfSetting, VlanProto},
};
use plexus_sysfs::Sysfs;
use serde::{Deserialize, Serialize};

/// The state file that marks a fake-sysfs PF as emulated.
pub const EMULATED_STATE: &str = "plexus_emulated_vfs.json";

/// What a PF can do for its VFs.
pub trait PfOps {
    /// VF `vf`'s attributes as the PF has them.
    ///
    /// # Errors
    /// The PF cannot be asked, or does not report that VF.
    fn get(&mut self, vf: u32) -> Result<VfConfig, String>;

    /// Sets one attribute of VF `vf`.
    ///
    /// # Errors
    /// The PF (driver) refused; the message says what and why.
    fn set(&mut self, vf: u32, setting: &VfSetting) -> Result<(), String>;

    /// Whether VF `vf`'s netdev may take `mac` as its own address. On some
    /// NICs the PF decides: i40e and ice refuse an untrusted VF any MAC
    /// but the one the PF set for it. On a real NIC the netdev's MAC write
    /// gets that answer from the kernel itself, so the production PF says
    /// yes here.
    ///
    /// # Errors
    /// The PF would refuse; the message says why.
    fn netdev_mac_allowed(&mut self, _vf: u32, _mac: MacAddr) -> Result<(), String> {
        Ok(())
    }

    /// VF `vf`'s netdev `name` left the host's network namespace (into a
    /// pod) or came back. The kernel's sysfs follows by itself (it lists
    /// only the netdevs of the reader's namespace), so the production PF
    /// does nothing; an emulated one updates its fake tree.
    ///
    /// # Errors
    /// The emulation's tree could not be updated.
    fn netdev_moved(&mut self, _vf: u32, _name: &str, _to_host: bool) -> Result<(), String> {
        Ok(())
    }
}

/// How often a MAC write is tried, and how long apart: a VF that was just
/// reset (as a DEL's own admin-MAC reset does on i40e and ice) refuses
/// MAC writes until it is ready again. Upstream sriov-cni's figures.
pub const MAC_TRIES: u32 = 20;
/// See [`MAC_TRIES`].
pub const MAC_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Sets VF `vf`'s admin MAC, tries again while the PF refuses or reads
/// back another address, up to [`MAC_TRIES`] times.
///
/// # Errors
/// The last refusal, or the address read back, after the last try.
pub fn set_admin_mac(pf: &mut dyn PfOps, vf: u32, mac: MacAddr) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..MAC_TRIES {
        if attempt > 0 {
            std::thread::sleep(MAC_RETRY_INTERVAL);
        }
        match pf.set(vf, &VfSetting::Mac(mac)) {
            Err(e) => last = e,
            Ok(()) => match pf.get(vf) {
                Ok(c) if c.mac == mac => {
                    if attempt > 0 {
                        tracing::info!(vf, %mac, attempt, "admin MAC taken after a retry");
                    }
                    return Ok(());
                }
                Ok(c) => last = format!("set MAC {mac}, the PF reads back {}", c.mac),
                Err(e) => last = e,
            },
        }
    }
    Err(format!("after {MAC_TRIES} tries: {last}"))
}

/// The PF of VF `pf_address` as sysfs under `sysfs` shows it: emulated
/// when its directory holds [`EMULATED_STATE`], netlink on its netdev
/// (`pf_netdev`, in this process's network namespace) otherwise.
///
/// # Errors
/// A netlink socket cannot be opened, or the PF has no netdev here.
pub fn open(
    sysfs: &Sysfs,
    pf_address: &str,
    pf_netdev: Option<&str>,
) -> Result<Box<dyn PfOps>, String> {
    let state = sysfs.device_dir(pf_address).join(EMULATED_STATE);
    if state.is_file() {
        return Ok(Box::new(EmulatedPf::new(state)));
    }
    let name = pf_netdev.ok_or_else(|| {
        format!("PF {pf_address} has no netdev: VF attributes are set through the PF's netdev")
    })?;
    let mut nl = Netlink::new().map_err(|e| e.to_string())?;
    let index = link::get_by_name(&mut nl, name)
        .map_err(|e| format!("PF {pf_address}: {e}"))?
        .index;
    Ok(Box::new(NetlinkPf {
        nl,
        name: name.to_owned(),
        index,
    }))
}

/// Production: the PF driver through rtnetlink.
#[derive(Debug)]
pub struct NetlinkPf {
    nl: Netlink,
    name: String,
    index: u32,
}

impl PfOps for NetlinkPf {
    fn get(&mut self, vf: u32) -> Result<VfConfig, String> {
        vf::list(&mut self.nl, &self.name)
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|c| c.vf == vf)
            .ok_or_else(|| {
                format!(
                    "PF {} does not report VF {vf} (its driver gives no VF info)",
                    self.name
                )
            })
    }

    fn set(&mut self, vf: u32, setting: &VfSetting) -> Result<(), String> {
        vf::set(&mut self.nl, self.index, vf, setting).map_err(|e| e.to_string())
    }
}

/// One emulated VF's attributes, as the state file keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmulatedVfState {
    /// Admin MAC.
    pub mac: String,
    /// Port VLAN.
    pub vlan: u32,
    /// Its priority.
    pub qos: u32,
    /// `802.1Q` or `802.1ad`.
    pub proto: String,
    /// Mbit/s.
    pub min_tx_rate: u32,
    /// Mbit/s.
    pub max_tx_rate: u32,
    /// Spoof checking.
    pub spoofchk: bool,
    /// Trusted.
    pub trust: bool,
    /// `auto`, `enable`, `disable`.
    pub link_state: String,
    /// Emulation only: how many more admin-MAC writes the PF refuses, as
    /// i40e does while the VF is still resetting (tests set it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refuse_mac: u32,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's signature
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for EmulatedVfState {
    /// A freshly created VF, as i40e/mlx5 report one.
    fn default() -> Self {
        Self {
            mac: "00:00:00:00:00:00".into(),
            vlan: 0,
            qos: 0,
            proto: "802.1Q".into(),
            min_tx_rate: 0,
            max_tx_rate: 0,
            spoofchk: true,
            trust: false,
            link_state: "auto".into(),
            refuse_mac: 0,
        }
    }
}

/// Tests and demos: VF attributes in `<PF sysfs dir>/`[`EMULATED_STATE`],
/// read-modify-written under an exclusive lock so concurrent plugins see
/// each other's changes.
#[derive(Debug)]
pub struct EmulatedPf {
    state: PathBuf,
    /// The PF's driver, from the fake sysfs tree: the emulation refuses
    /// what that driver refuses.
    driver: Option<String>,
    /// The PF's eswitch is in switchdev mode: its netdev is the uplink
    /// representor (`phys_port_name` `p<N>`), as the kernel shows it.
    switchdev: bool,
}

impl EmulatedPf {
    /// The emulated PF whose state file is `state` (in the PF's directory,
    /// whose `driver` link names the driver it behaves like).
    pub fn new(state: PathBuf) -> Self {
        let dir = state.parent().map(Path::to_path_buf).unwrap_or_default();
        let driver = std::fs::read_link(dir.join("driver"))
            .ok()
            .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()));
        let switchdev = std::fs::read_dir(dir.join("net"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("phys_port_name")).ok())
            .any(|n| plexus_sysfs::is_uplink_port(n.trim()));
        Self {
            state,
            driver,
            switchdev,
        }
    }

    /// An Intel PF driver that polices VF MACs (i40e, ice).
    fn intel(&self) -> bool {
        matches!(self.driver.as_deref(), Some("i40e" | "ice"))
    }

    /// What the driver refuses outright, as its extended ack or kernel log
    /// says it (i40e_ndo_set_vf_port_vlan, i40e_ndo_set_vf_bw;
    /// mlx5e_set_vf_vlan, and the eswitch's legacy-only VF operations,
    /// which return `-EOPNOTSUPP` in switchdev mode: a VLAN other than 0,
    /// kept for libvirt, spoof checking, trust and link state).
    fn refusal(&self, vf: u32, setting: &VfSetting) -> Option<String> {
        const NOT_IN_SWITCHDEV: &str = "Operation not supported (EOPNOTSUPP)";
        if self.driver.as_deref() == Some("mlx5_core") {
            return match *setting {
                VfSetting::Vlan {
                    proto: VlanProto::Dot1Ad,
                    ..
                } => Some(format!(
                    "set VF {vf} vlan: Protocol not supported (EPROTONOSUPPORT)"
                )),
                VfSetting::Vlan { id, .. } if self.switchdev && id != 0 => {
                    Some(format!("set VF {vf} vlan {id}: {NOT_IN_SWITCHDEV}"))
                }
                VfSetting::SpoofCheck(_) if self.switchdev => {
                    Some(format!("set VF {vf} spoofchk: {NOT_IN_SWITCHDEV}"))
                }
                VfSetting::Trust(_) if self.switchdev => {
                    Some(format!("set VF {vf} trust: {NOT_IN_SWITCHDEV}"))
                }
                VfSetting::LinkState(_) if self.switchdev => {
                    Some(format!("set VF {vf} state: {NOT_IN_SWITCHDEV}"))
                }
                _ => None,
            };
        }
        match (self.driver.as_deref(), *setting) {
            (
                Some("i40e"),
                VfSetting::Vlan {
                    proto: VlanProto::Dot1Ad,
                    ..
                },
            ) => Some(
                "VF VLAN protocol is not supported: Protocol not supported (EPROTONOSUPPORT)"
                    .into(),
            ),
            (Some("i40e"), VfSetting::Rate { min_mbps, .. }) if min_mbps > 0 => Some(format!(
                "Invalid min tx rate ({min_mbps}) (greater than 0) specified for VF {vf}.: \
                 Invalid argument (EINVAL)"
            )),
            _ => None,
        }
    }

    /// Every VF's state; VFs never set are absent.
    ///
    /// # Errors
    /// The file is unreadable.
    pub fn read(&self) -> Result<BTreeMap<u32, EmulatedVfState>, String> {
        let text = std::fs::read_to_string(&self.state)
            .map_err(|e| format!("{}: {e}", self.state.display()))?;
        if text.trim().is_empty() {
            return Ok(BTreeMap::new());
        }
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", self.state.display()))
    }

    fn locked<T>(&self, f: impl FnOnce(&Self) -> Result<T, String>) -> Result<T, String> {
        let lock = File::create(self.state.with_extension("lock"))
            .map_err(|e| format!("{}: {e}", self.state.display()))?;
        // SAFETY: flock on an fd we own; released when `lock` closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "lock {}: {}",
                self.state.display(),
                std::io::Error::last_os_error()
            ));
        }
        f(self)
    }

    fn write(&self, all: &BTreeMap<u32, EmulatedVfState>) -> Result<(), String> {
        write_atomic(
            &self.state,
            &serde_json::to_vec_pretty(all).expect("plain data"),
        )
        .map_err(|e| format!("{}: {e}", self.state.display()))
    }
}

/// Writes `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}

fn link_mode_name(m: VfLinkMode) -> &'static str {
    match m {
        VfLinkMode::Auto => "auto",
        VfLinkMode::Enable => "enable",
        VfLinkMode::Disable => "disable",
    }
}

impl PfOps for EmulatedPf {
    fn get(&mut self, vf: u32) -> Result<VfConfig, String> {
        let s = self.read()?.remove(&vf).unwrap_or_default();
        Ok(VfConfig {
            vf,
            mac: s.mac.parse().unwrap_or(MacAddr([0; 6])),
            vlan: s.vlan,
            qos: s.qos,
            vlan_proto: if s.proto == "802.1ad" {
                VlanProto::Dot1Ad
            } else {
                VlanProto::Dot1Q
            },
            min_tx_rate: s.min_tx_rate,
            max_tx_rate: s.max_tx_rate,
            spoofchk: Some(s.spoofchk),
            trust: Some(s.trust),
            link_state: match s.link_state.as_str() {
                "enable" => VfLinkMode::Enable,
                "disable" => VfLinkMode::Disable,
                _ => VfLinkMode::Auto,
            },
        })
    }

    fn set(&mut self, vf: u32, setting: &VfSetting) -> Result<(), String> {
        if let Some(e) = self.refusal(vf, setting) {
            return Err(e);
        }
        self.locked(|me| {
            let mut all = me.read()?;
            let s = all.entry(vf).or_default();
            if matches!(setting, VfSetting::Mac(_)) && s.refuse_mac > 0 {
                // i40e_ndo_set_vf_mac while the VF is still resetting.
                s.refuse_mac -= 1;
                me.write(&all)?;
                return Err(format!(
                    "VF {vf} still in reset. Try again.: Resource temporarily unavailable (EAGAIN)"
                ));
            }
            match *setting {
                VfSetting::Mac(m) => s.mac = m.to_string(),
                VfSetting::Vlan { id, qos, proto } => {
                    // As drivers do: VLAN 0 clears the priority too.
                    s.vlan = u32::from(id);
                    s.qos = if id == 0 { 0 } else { u32::from(qos) };
                    s.proto = match proto {
                        VlanProto::Dot1Q => "802.1Q",
                        VlanProto::Dot1Ad => "802.1ad",
                    }
                    .into();
                }
                VfSetting::Rate { min_mbps, max_mbps } => {
                    if max_mbps != 0 && min_mbps > max_mbps {
                        // ndo_set_vf_rate's answer on i40e/mlx5.
                        return Err(format!(
                            "set VF {vf} rate: min {min_mbps} > max {max_mbps}: Invalid argument (EINVAL)"
                        ));
                    }
                    s.min_tx_rate = min_mbps;
                    s.max_tx_rate = max_mbps;
                }
                VfSetting::SpoofCheck(on) => s.spoofchk = on,
                VfSetting::Trust(on) => s.trust = on,
                VfSetting::LinkState(m) => s.link_state = link_mode_name(m).into(),
            }
            me.write(&all)
        })
    }

    fn netdev_moved(&mut self, vf: u32, name: &str, to_host: bool) -> Result<(), String> {
        // The fake tree (plexus-testkit's layout): <root>/devices/pci0000:00/
        // <PF>/virtfn<vf> -> ../<VF>, the VF's netdevs in <VF>/net/<name>,
        // and <root>/class/net/<name> -> ../../devices/pci0000:00/<VF>/net/<name>.
        // A netdev in a pod is kept aside in <VF>/.in_pod/, where no sysfs
        // reader looks.
        let pf_dir = self.state.parent().ok_or("state file has no directory")?;
        let vf_dir = std::fs::canonicalize(pf_dir.join(format!("virtfn{vf}")))
            .map_err(|e| format!("VF {vf} of the emulated PF: {e}"))?;
        let root = pf_dir
            .ancestors()
            .nth(3)
            .ok_or("the emulated PF is not in a fake sysfs tree")?;
        let (listed, aside) = (
            vf_dir.join("net").join(name),
            vf_dir.join(".in_pod").join(name),
        );
        let class = root.join("class/net").join(name);
        let err = |what: &str, e: std::io::Error| format!("emulated sysfs, {what} {name}: {e}");
        if to_host {
            if !aside.exists() {
                return Ok(());
            }
            std::fs::rename(&aside, &listed).map_err(|e| err("putting back", e))?;
            let bdf = vf_dir.file_name().unwrap_or_default().to_string_lossy();
            let _ = std::fs::remove_file(&class);
            std::os::unix::fs::symlink(format!("../../devices/pci0000:00/{bdf}/net/{name}"), &class)
                .map_err(|e| err("linking", e))
        } else {
            if !listed.exists() {
                return Ok(());
            }
            std::fs::create_dir_all(aside.parent().unwrap_or(&vf_dir))
                .map_err(|e| err("hiding", e))?;
            std::fs::rename(&listed, &aside).map_err(|e| err("hiding", e))?;
            let _ = std::fs::remove_file(&class);
            Ok(())
        }
    }

    fn netdev_mac_allowed(&mut self, vf: u32, mac: MacAddr) -> Result<(), String> {
        if !self.intel() {
            return Ok(());
        }
        let s = self.read()?.remove(&vf).unwrap_or_default();
        let admin: MacAddr = s.mac.parse().unwrap_or(MacAddr([0; 6]));
        // i40e_check_vf_permission: an untrusted VF whose MAC the PF set
        // may not use another unicast address.
        if !s.trust && admin != MacAddr([0; 6]) && admin != mac {
            return Err(format!(
                "VF {vf} attempting to override administratively set MAC address {admin} with \
                 {mac}: Operation not permitted (EPERM)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulated_pf_keeps_what_was_set_per_vf() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join(EMULATED_STATE);
        std::fs::write(&state, "").unwrap();
        let mut pf = EmulatedPf::new(state);
        let fresh = pf.get(3).unwrap();
        assert_eq!(
            (fresh.vlan, fresh.spoofchk, fresh.trust),
            (0, Some(true), Some(false))
        );
        let mac: MacAddr = "02:00:00:00:00:aa".parse().unwrap();
        pf.set(3, &VfSetting::Mac(mac)).unwrap();
        pf.set(
            3,
            &VfSetting::Vlan {
                id: 100,
                qos: 5,
                proto: VlanProto::Dot1Ad,
            },
        )
        .unwrap();
        pf.set(3, &VfSetting::LinkState(VfLinkMode::Disable))
            .unwrap();
        pf.set(3, &VfSetting::Trust(true)).unwrap();
        let c = pf.get(3).unwrap();
        assert_eq!(c.mac, mac);
        assert_eq!((c.vlan, c.qos, c.vlan_proto), (100, 5, VlanProto::Dot1Ad));
        assert_eq!((c.link_state, c.trust), (VfLinkMode::Disable, Some(true)));
        assert_eq!(pf.get(2).unwrap().vlan, 0, "another VF changed");
        let e = pf
            .set(
                3,
                &VfSetting::Rate {
                    min_mbps: 9,
                    max_mbps: 1,
                },
            )
            .unwrap_err();
        assert!(e.contains("EINVAL"), "{e}");
    }

    /// mlx5 as its eswitch mode makes it: in legacy mode every VF setting
    /// but an 802.1ad VLAN; in switchdev mode (the PF's netdev is the
    /// uplink representor `p0`) only the MAC, the rates and VLAN 0.
    #[test]
    fn emulated_mlx5_refuses_by_eswitch_mode() {
        use plexus_testkit::{FakeSysfs, PfSpec, sysfs::DEFAULT_PF_BDF};
        let vlan = |id, proto| VfSetting::Vlan { id, qos: 0, proto };
        for switchdev in [false, true] {
            let fake = FakeSysfs::new();
            fake.pf(PfSpec {
                phys_port_name: switchdev.then(|| "p0".to_owned()),
                ..PfSpec::connectx5()
            });
            let mut pf = EmulatedPf::new(fake.emulate_pf(DEFAULT_PF_BDF));
            let e = pf.set(0, &vlan(10, VlanProto::Dot1Ad)).unwrap_err();
            assert!(e.contains("EPROTONOSUPPORT"), "{e}");
            let legacy_only = [
                vlan(10, VlanProto::Dot1Q),
                VfSetting::SpoofCheck(false),
                VfSetting::Trust(true),
                VfSetting::LinkState(VfLinkMode::Enable),
            ];
            for st in &legacy_only {
                match pf.set(0, st) {
                    Ok(()) => assert!(!switchdev, "{st:?} taken in switchdev mode"),
                    Err(e) => {
                        assert!(switchdev, "{st:?} refused in legacy mode: {e}");
                        assert!(e.ends_with("(EOPNOTSUPP)"), "{e}");
                    }
                }
            }
            let mac: MacAddr = "02:00:00:00:00:bb".parse().unwrap();
            pf.set(0, &VfSetting::Mac(mac)).unwrap();
            pf.set(0, &vlan(0, VlanProto::Dot1Q)).unwrap();
            pf.set(
                0,
                &VfSetting::Rate {
                    min_mbps: 10,
                    max_mbps: 100,
                },
            )
            .unwrap();
            let c = pf.get(0).unwrap();
            assert_eq!((c.mac, c.max_tx_rate), (mac, 100));
            assert_eq!(c.trust, Some(!switchdev), "switchdev: {switchdev}");
        }
    }
}
