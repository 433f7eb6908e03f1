//! ADD, DEL, CHECK, STATUS and GC of the `sriov` plugin.
//!
//! ADD: check the config; find the VF's PF and index in sysfs; take the
//! VF's lock and refuse a VF another live pod has; save the VF's state
//! (PF-side attributes, netdev name, MAC, MTU) in the attachment cache
//! *before* changing anything; set the VF's attributes through the PF;
//! move the netdev into the pod and rename it in the same request (the
//! name is checked in the pod only, so it never meets the host's names;
//! upstream goes through a temporary netns, two moves of ~20 ms each),
//! drop its old altname, set its MAC and bring it up; run IPAM and
//! put the addresses and routes on it. A VF bound to a userspace driver
//! (vfio-pci, ...) is DPDK mode: no netdev moves, IPs are reported but
//! not applied. Any failure undoes what was done, from the cache.
//!
//! DEL undoes ADD from the cache: IPAM DEL, the netdev back to the host
//! under its old name, MAC and MTU, the PF-side attributes ADD set back to
//! what they were, the allocation released. It works with the pod's
//! namespace gone, is idempotent, and keeps the cache until every step
//! has succeeded, so a failed DEL can be retried (upstream deletes it
//! first and leaks the VF).

use std::{
    fs::File,
    os::fd::AsFd,
    path::{Path, PathBuf},
    time::Duration,
};

use plexus_cni::{
    CniError, CniResult,
    error::code,
    invoke::{Invoker, RuntimeConf},
    plugin::{Attachment as Valid, Command, Plugin, Request},
    result::{Interface, IpConfig},
};
use plexus_netlink::{
    Link, MacAddr, Netlink, addr, link, route,
    vf::{VfConfig, VfLinkMode, VfSetting, VlanProto},
};
use plexus_sysfs::Sysfs;
use serde_json::Value;

use super::{
    announce,
    conf::{self, NetConf},
    pf::{self, PfOps},
    state::{Allocation, Attachment, Changed, SavedVf, Stage, Store},
};

/// How long ADD/DEL wait for a VF's lock (upstream: 60 s).
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// Drivers that make a VF a DPDK (userspace) one.
pub const DPDK_DRIVERS: [&str; 3] = ["vfio-pci", "uio_pci_generic", "igb_uio"];

/// The plugin.
#[derive(Debug, Default)]
pub struct Sriov;

/// A VF as sysfs shows it.
#[derive(Debug, Clone)]
struct Vf {
    address: String,
    pf_address: String,
    pf_netdev: Option<String>,
    index: u32,
    netdev: Option<String>,
    driver: Option<String>,
}

impl Vf {
    /// ADD needs the VF in kernel mode (a netdev, in this namespace) or
    /// bound to a userspace driver. Only ADD asks, and only after the
    /// allocation check: a VF attached to a pod has its netdev in the
    /// pod's namespace, which the host's sysfs does not list.
    fn usable(&self) -> Result<(), CniError> {
        let userspace = self
            .driver
            .as_deref()
            .is_some_and(|d| DPDK_DRIVERS.contains(&d));
        if self.netdev.is_none() && !userspace {
            return Err(invalid(format!(
                "VF {} has no netdev and its driver ({}) is not a userspace driver ({}): \
                 bind it to its VF driver (kernel mode) or to vfio-pci (DPDK mode)",
                self.address,
                self.driver.as_deref().unwrap_or("none"),
                DPDK_DRIVERS.join(", ")
            )));
        }
        Ok(())
    }
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_NETWORK_CONFIG, msg)
}

fn io(msg: impl Into<String>) -> CniError {
    CniError::new(code::IO_FAILURE, msg)
}

fn gone(msg: impl Into<String>) -> CniError {
    CniError::new(code::UNKNOWN_CONTAINER, msg)
}

fn resolve(sysfs: &Sysfs, pci: &str) -> Result<Vf, CniError> {
    let dev = sysfs.pci_device(pci).map_err(|e| {
        invalid(format!(
            "deviceID {pci}: no such PCI device under {}: {e}",
            sysfs.root().display()
        ))
    })?;
    let pf = dev
        .pf
        .ok_or_else(|| invalid(format!("deviceID {pci} is not an SR-IOV VF (no physfn)")))?;
    let index = pf.vf_index.ok_or_else(|| {
        invalid(format!(
            "VF {pci}: its PF {} does not list it among its virtfn links",
            pf.address
        ))
    })?;
    Ok(Vf {
        address: dev.address,
        pf_address: pf.address,
        pf_netdev: pf.netdev,
        index,
        netdev: dev.netdevs.first().cloned(),
        driver: dev.driver,
    })
}

/// Whether `path` is a live network namespace (an nsfs file).
pub fn netns_alive(path: &str) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let Ok(c) = std::ffi::CString::new(path) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own; the path is a
    // valid C string.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as i64 == NSFS_MAGIC
    }
}

fn nl_in(path: &Path) -> Result<Netlink, String> {
    Netlink::in_netns(path).map_err(|e| e.to_string())
}

/// A PF's refusal of a VF setting as the user reads it: `EOPNOTSUPP` is
/// mostly a switchdev eswitch, which takes none of the legacy VF settings
/// but the MAC and the rates.
fn refused(vf: u32, e: &str) -> CniError {
    let hint = if e.contains("(EOPNOTSUPP)") {
        "; the PF's driver does not support this VF setting (in switchdev mode, \
         `devlink dev eswitch show pci/<PF>`, mlx5 takes no VLAN, spoofchk, trust or \
         link_state for a VF: leave them out of the network's config and apply them \
         on the VF's representor instead)"
    } else {
        ""
    };
    io(format!("VF {vf} of the PF: {e}{hint}"))
}

/// Sets the VF's attributes through the PF, in upstream's order.
fn apply_vf(pf: &mut dyn PfOps, c: &NetConf, vf: u32) -> Result<(), CniError> {
    let mut settings = Vec::new();
    if let Some(id) = c.vlan {
        settings.push(VfSetting::Vlan {
            id,
            qos: c.vlan_qos.unwrap_or(0),
            proto: c.vlan_proto.unwrap_or_default(),
        });
    }
    if c.min_tx_rate.is_some() || c.max_tx_rate.is_some() {
        settings.push(VfSetting::Rate {
            min_mbps: c.min_tx_rate.unwrap_or(0),
            max_mbps: c.max_tx_rate.unwrap_or(0),
        });
    }
    if let Some(on) = c.spoofchk {
        settings.push(VfSetting::SpoofCheck(on));
    }
    if let Some(on) = c.trust {
        settings.push(VfSetting::Trust(on));
    }
    if let Some(m) = c.link_state {
        settings.push(VfSetting::LinkState(m));
    }
    // Upstream's order: VLAN, then the MAC (retried: a VF just reset
    // refuses it for a while), then the rest.
    let mut rest = settings.iter();
    if c.vlan.is_some()
        && let Some(v) = rest.next()
    {
        pf.set(vf, v).map_err(|e| refused(vf, &e))?;
    }
    if let Some(m) = c.mac {
        pf::set_admin_mac(pf, vf, m).map_err(|e| refused(vf, &format!("MAC {m}: {e}")))?;
    }
    for s in rest {
        pf.set(vf, s).map_err(|e| refused(vf, &e))?;
    }
    Ok(())
}

/// Sets the VF netdev `index` (in `nl`'s namespace) to `mac`, as the PF
/// allows it, read back; tried [`pf::MAC_TRIES`] times like the admin MAC.
fn set_netdev_mac(
    nl: &mut Netlink,
    index: u32,
    mac: MacAddr,
    pf: Option<&mut (dyn PfOps + '_)>,
    vf: u32,
) -> Result<(), String> {
    let mut pf = pf;
    let mut last = String::new();
    for attempt in 0..pf::MAC_TRIES {
        if attempt > 0 {
            std::thread::sleep(pf::MAC_RETRY_INTERVAL);
        }
        if let Some(p) = pf.as_deref_mut()
            && let Err(e) = p.netdev_mac_allowed(vf, mac)
        {
            last = e;
            continue;
        }
        if let Err(e) = link::set_mac(nl, index, mac) {
            last = e.to_string();
            continue;
        }
        match link::get(nl, index) {
            Ok(l) if l.mac == Some(mac) => return Ok(()),
            Ok(l) => {
                last = format!(
                    "set MAC {mac}, the netdev reads back {}",
                    l.mac.map(|m| m.to_string()).unwrap_or_default()
                );
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("after {} tries: {last}", pf::MAC_TRIES))
}

/// Whether the PF has `st` for the VF already.
fn holds(now: &VfConfig, st: &VfSetting) -> bool {
    match *st {
        VfSetting::Mac(m) => now.mac == m,
        VfSetting::Vlan { id, qos, proto } => {
            now.vlan == u32::from(id)
                && (id == 0 || (now.qos == u32::from(qos) && now.vlan_proto == proto))
        }
        VfSetting::Rate { min_mbps, max_mbps } => {
            now.min_tx_rate == min_mbps && now.max_tx_rate == max_mbps
        }
        VfSetting::SpoofCheck(on) => now.spoofchk == Some(on),
        VfSetting::Trust(on) => now.trust == Some(on),
        VfSetting::LinkState(m) => now.link_state == m,
    }
}

/// Puts back the PF-side attributes ADD set.
fn restore_vf(pf: &mut dyn PfOps, a: &Attachment) -> Result<(), String> {
    let s: &SavedVf = &a.saved;
    let ch: Changed = a.changed;
    let mut settings = Vec::new();
    if ch.vlan {
        settings.push(VfSetting::Vlan {
            id: s.vlan as u16,
            qos: s.qos as u8,
            proto: if s.dot1ad {
                VlanProto::Dot1Ad
            } else {
                VlanProto::Dot1Q
            },
        });
    }
    if ch.rate {
        settings.push(VfSetting::Rate {
            min_mbps: s.min_tx_rate,
            max_mbps: s.max_tx_rate,
        });
    }
    if ch.spoofchk
        && let Some(on) = s.spoofchk
    {
        settings.push(VfSetting::SpoofCheck(on));
    }
    if ch.trust
        && let Some(on) = s.trust
    {
        settings.push(VfSetting::Trust(on));
    }
    if ch.link_state {
        settings.push(VfSetting::LinkState(match s.link_state.as_str() {
            "enable" => VfLinkMode::Enable,
            "disable" => VfLinkMode::Disable,
            _ => VfLinkMode::Auto,
        }));
    }
    // Only what differs from the saved state is written: a refused ADD
    // records what it meant to change before it changes anything, and a
    // setting the driver refused (mlx5 in switchdev mode refuses spoofchk)
    // was never changed, so writing it back would fail this DEL, and every
    // retry of it, for nothing.
    let now = pf.get(a.vf_index).ok();
    let needed = |st: &VfSetting| now.as_ref().is_none_or(|n| !holds(n, st));
    let mut errs = Vec::new();
    let mut rest = settings.iter();
    if ch.vlan
        && let Some(v) = rest.next()
        && needed(v)
        && let Err(e) = pf.set(a.vf_index, v)
    {
        errs.push(e);
    }
    // The admin MAC before the netdev's: i40e and ice refuse an untrusted
    // VF's netdev any MAC but the admin one while that is set.
    if ch.mac
        && let Ok(m) = s.mac.parse::<MacAddr>()
        && needed(&VfSetting::Mac(m))
        && let Err(e) = pf::set_admin_mac(pf, a.vf_index, m)
    {
        errs.push(format!("MAC {m}: {e}"));
    }
    errs.extend(
        rest.filter(|st| needed(st))
            .filter_map(|st| pf.set(a.vf_index, st).err()),
    );
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

/// Moves the VF netdev `l` from this namespace into the pod as `ifname`,
/// in one request (the kernel checks the new name in the pod only, so it
/// never meets the host's names, and a pod that already has `ifname`
/// fails it with the VF still here); returns its MAC, MTU and ifindex
/// there.
fn move_in(
    host: &mut Netlink,
    l: &Link,
    ifname: &str,
    pod: &File,
    pod_path: &Path,
    mac: Option<MacAddr>,
    (pf, vf): (&mut dyn PfOps, u32),
) -> Result<(MacAddr, u32, u32), String> {
    link::set_down(host, l.index).map_err(|e| e.to_string())?;
    link::set_netns_named(host, l.index, pod.as_fd(), ifname).map_err(|e| e.to_string())?;
    if let Err(e) = pf.netdev_moved(vf, &l.name, false) {
        tracing::warn!(error = e, "emulated sysfs not updated");
    }
    let mut p = nl_in(pod_path)?;
    let inside = link::get_by_name(&mut p, ifname).map_err(|e| e.to_string())?;
    // A rename may leave (or, with udev's policies, add) the old name as an
    // altname: it would make the next ADD of this VF fail with "file
    // exists" (sriov-cni #445).
    if inside.altnames.iter().any(|a| a == &l.name) {
        let _ = link::del_altname(&mut p, inside.index, &l.name);
    }
    if let Some(m) = mac {
        set_netdev_mac(&mut p, inside.index, m, Some(pf), vf)?;
    }
    link::set_up(&mut p, inside.index).map_err(|e| e.to_string())?;
    let now = link::get(&mut p, inside.index).map_err(|e| e.to_string())?;
    Ok((
        now.mac.unwrap_or(MacAddr([0; 6])),
        now.mtu.unwrap_or(0),
        now.index,
    ))
}

/// Puts the netdev of `a` back on the host under its old name, MAC and
/// MTU. The pod's namespace may be gone (a physical VF then went back to
/// the host by itself, under its pod name or one the kernel chose).
fn move_out(
    a: &Attachment,
    sysfs: &Sysfs,
    mut pf: Option<&mut (dyn PfOps + '_)>,
) -> Result<(), String> {
    let Some(host_name) = &a.host_ifname else {
        return Ok(());
    };
    let mut restore = |nl: &mut Netlink, index: u32| -> Result<(), String> {
        if let Some(m) = a.host_mac.as_deref().and_then(|m| m.parse().ok()) {
            set_netdev_mac(nl, index, m, pf.as_deref_mut(), a.vf_index)?;
        }
        if let Some(mtu) = a.host_mtu {
            link::set_mtu(nl, index, mtu).map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    let mut host = Netlink::new().map_err(|e| e.to_string())?;
    let in_pod = if netns_alive(&a.netns) {
        let mut p = nl_in(Path::new(&a.netns))?;
        match link::get_by_name(&mut p, &a.ifname) {
            Ok(l) => Some((p, l)),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.to_string()),
        }
    } else {
        None
    };
    let Some((mut p, l)) = in_pod else {
        // Not in the pod: back already (a DEL retried), never moved (ADD
        // failed early), or the namespace is gone and the kernel pushed
        // the VF back to the host: under its pod name, or `dev<ifindex>`
        // when that was taken, with the pod's MAC and MTU. sysfs names it
        // whatever it is called now.
        match link::get_by_name(&mut host, host_name) {
            Ok(h) => return restore(&mut host, h.index),
            Err(e) if !e.is_not_found() => return Err(e.to_string()),
            Err(_) => {}
        }
        // Only names sysfs lists under this VF: `net1` on the host may be
        // another pod's VF, back from its own dead namespace.
        for name in sysfs.netdevs(&a.device_id) {
            if let Ok(h) = link::get_by_name(&mut host, &name) {
                link::set_down(&mut host, h.index).map_err(|e| e.to_string())?;
                link::rename(&mut host, h.index, host_name).map_err(|e| e.to_string())?;
                return restore(&mut host, h.index);
            }
        }
        // Gone with its namespace (a veth-emulated VF), not back yet, or
        // unplugged: nothing here to put back.
        return Ok(());
    };
    link::set_down(&mut p, l.index).map_err(|e| e.to_string())?;
    // MAC and MTU first, in the pod: the host never sees the pod's MAC.
    restore(&mut p, l.index)?;
    let me = File::open("/proc/self/ns/net").map_err(|e| e.to_string())?;
    link::set_netns_named(&mut p, l.index, me.as_fd(), host_name)
        .map_err(|e| format!("back to the host as {host_name}: {e}"))?;
    if let Some(pf) = pf
        && let Err(e) = pf.netdev_moved(a.vf_index, host_name, true)
    {
        tracing::warn!(error = e, "emulated sysfs not updated");
    }
    Ok(())
}

/// Runs `config`'s IPAM plugin (from `CNI_PATH`) for one attachment;
/// `Ok(None)` when the config has no IPAM.
fn run_ipam(
    req: &Request,
    command: Command,
    config: &Value,
    container_id: &str,
    netns: Option<PathBuf>,
    ifname: &str,
) -> Result<Option<Vec<u8>>, plexus_cni::invoke::Error> {
    let Some(ty) = ipam_type(config) else {
        return Ok(None);
    };
    let rt = RuntimeConf {
        container_id: container_id.to_owned(),
        netns,
        ifname: ifname.to_owned(),
        args: req.args.clone(),
        capability_args: serde_json::Map::new(),
    };
    let stdin = serde_json::to_vec(config).expect("JSON value");
    Invoker::new(req.path.clone())
        .exec(ty, command, &rt, &stdin)
        .map(Some)
}

fn ipam_type(config: &Value) -> Option<&str> {
    config
        .get("ipam")?
        .get("type")?
        .as_str()
        .filter(|t| !t.is_empty())
}

/// Puts IPAM's addresses and routes on interface `index` (as the
/// reference `ipam.ConfigureIface`: a route without a gateway uses the
/// first gateway of its family).
fn configure(nl: &mut Netlink, index: u32, r: &CniResult) -> Result<(), String> {
    for ip in &r.ips {
        addr::add(nl, index, ip.address).map_err(|e| e.to_string())?;
    }
    for rt in &r.routes {
        let v4 = rt.dst.addr().is_ipv4();
        let gw = rt.gw.or_else(|| {
            r.ips
                .iter()
                .filter_map(|i| i.gateway)
                .find(|g| g.is_ipv4() == v4)
        });
        let mut x = route::Route::new(rt.dst).dev(index);
        if let Some(g) = gw {
            x = x.via(g);
        }
        if let Some(m) = rt.priority {
            x = x.metric(m);
        }
        if let Some(t) = rt.table {
            x = x.table(t);
        }
        route::add(nl, &x).map_err(|e| format!("route {}: {e}", rt.dst))?;
    }
    Ok(())
}

/// Whether allocation record `x` is attachment `a`'s (upstream's records
/// name only the netns).
fn owned_by(x: &Allocation, a: &Attachment) -> bool {
    if x.container_id.is_empty() {
        x.netns == a.netns
    } else {
        x.container_id == a.container_id && x.ifname == a.ifname
    }
}

/// Undoes an attachment: IPAM, the netdev (when `netdev`: a DEL with an
/// empty `CNI_NETNS` leaves it, as upstream does), the PF-side attributes,
/// then releases the VF and forgets the attachment. Every step runs even if
/// an earlier one failed; the cache goes only when all succeeded.
///
/// Ownership first: when the VF's allocation record names another pod (a
/// stale record taken over after this pod's namespace died without a DEL),
/// the VF is that pod's now, and nothing of it is touched: only IPAM is
/// released and the attachment forgotten.
fn teardown(
    store: &Store,
    sysfs: &Sysfs,
    a: &Attachment,
    req: &Request,
    netdev: bool,
) -> Result<(), String> {
    let mut errs = Vec::new();
    let owner = store.allocation(&a.device_id);
    let ours = owner.as_ref().is_none_or(|x| owned_by(x, a));
    let netns = netns_alive(&a.netns).then(|| PathBuf::from(&a.netns));
    if let Err(e) = run_ipam(
        req,
        Command::Del,
        &a.config,
        &a.container_id,
        netns,
        &a.ifname,
    ) {
        errs.push(format!("IPAM DEL: {}", CniError::from(e).msg));
    }
    if !ours {
        if let Some(x) = &owner {
            tracing::warn!(
                vf = %a.device_id,
                container = %x.container_id,
                ifname = %x.ifname,
                netns = %x.netns,
                "the VF belongs to another pod now: leaving it as it is"
            );
        }
        if !errs.is_empty() {
            return Err(errs.join("; "));
        }
        return store.forget(&a.container_id, &a.ifname);
    }
    // The PF side first, then the netdev (upstream's order): i40e and ice
    // refuse an untrusted VF's netdev its old MAC while the admin MAC ADD
    // set is still in place.
    let present = sysfs.device_dir(&a.device_id).exists();
    let mut pf = if present {
        match pf::open(sysfs, &a.pf_address, a.pf_netdev.as_deref()) {
            Ok(pf) => Some(pf),
            Err(e) => {
                if a.changed != Changed::default() {
                    errs.push(format!("restoring VF {}: {e}", a.device_id));
                }
                None
            }
        }
    } else {
        None
    };
    if a.changed != Changed::default() {
        if let Some(pf) = pf.as_mut() {
            if let Err(e) = restore_vf(pf.as_mut(), a) {
                errs.push(format!("restoring VF {}: {e}", a.device_id));
            }
        } else if !present {
            // The VF is gone (PF reset or unplugged): its settings with it.
            tracing::warn!(vf = %a.device_id, "VF gone; nothing to restore");
        }
    }
    if netdev
        && !a.dpdk
        && a.stage != Stage::Prepared
        && let Err(e) = move_out(a, sysfs, pf.as_deref_mut())
    {
        errs.push(format!("VF netdev {}: {e}", a.ifname));
    }
    if !errs.is_empty() {
        return Err(errs.join("; "));
    }
    if owner.is_some() {
        store.release(&a.device_id)?;
    }
    store.forget(&a.container_id, &a.ifname)
}

impl Sriov {
    fn add_inner(
        req: &Request,
        conf: &NetConf,
        vf: &Vf,
        store: &Store,
        att: &mut Attachment,
        pf: &mut dyn PfOps,
        host_link: Option<(Netlink, Link)>,
    ) -> Result<CniResult, CniError> {
        let netns = att.netns.clone();
        apply_vf(pf, conf, vf.index)?;
        let mut pod_nl = None;
        let (mac, mtu) = match host_link {
            Some((mut host, l)) => {
                let pod = File::open(&netns).map_err(|e| gone(format!("netns {netns}: {e}")))?;
                att.stage = Stage::Moving;
                store.save(att).map_err(io)?;
                let (mac, mtu, index) = move_in(
                    &mut host,
                    &l,
                    &req.ifname,
                    &pod,
                    Path::new(&netns),
                    conf.mac,
                    (pf, vf.index),
                )
                .map_err(|e| io(format!("moving VF {} into the pod: {e}", vf.address)))?;
                pod_nl = Some((nl_in(Path::new(&netns)).map_err(io)?, index));
                (Some(mac), mtu)
            }
            // DPDK: the MAC is the configured one, else the admin MAC; the
            // MTU is the PF's (as upstream reports it: the VF's cannot be
            // larger).
            None => (
                conf.mac
                    .or_else(|| pf.get(vf.index).ok().map(|c| c.mac))
                    .filter(|m| m.0 != [0; 6]),
                vf.pf_netdev
                    .as_deref()
                    .and_then(|n| {
                        let dir = Sysfs::new(&conf.sysfs_root).device_dir(&vf.pf_address);
                        std::fs::read_to_string(dir.join("net").join(n).join("mtu")).ok()
                    })
                    .and_then(|m| m.trim().parse().ok())
                    .unwrap_or(0),
            ),
        };
        att.mac = mac.map(|m| m.to_string());
        let mut result = CniResult {
            interfaces: vec![Interface {
                name: req.ifname.clone(),
                mac: att.mac.clone().unwrap_or_default(),
                mtu,
                sandbox: netns.clone(),
                pci_id: vf.address.clone(),
                ..Interface::default()
            }],
            ..CniResult::default()
        };
        let ty = conf.ipam_type().unwrap_or_default();
        if let Some(out) = run_ipam(
            req,
            Command::Add,
            &req.config,
            &req.container_id,
            Some(PathBuf::from(&netns)),
            &req.ifname,
        )? {
            let (_, r) = CniResult::from_slice(&out, req.version.as_str()).map_err(|e| {
                CniError::new(code::DELEGATE_OUTPUT, format!("IPAM {ty} result: {e}"))
            })?;
            if r.ips.is_empty() {
                return Err(CniError::new(
                    code::DELEGATE_OUTPUT,
                    format!("IPAM {ty} returned no IP addresses"),
                ));
            }
            if let Some((nl, index)) = pod_nl.as_mut() {
                configure(nl, *index, &r)
                    .map_err(|e| io(format!("configuring {}: {e}", req.ifname)))?;
                // The address may have been another pod's a moment ago:
                // tell the neighbours (best effort, as upstream). An
                // Ethernet VF only (IPoIB has no ARP).
                if mac.is_some() {
                    for e in announce::announce(nl, Path::new(&netns), &req.ifname, *index) {
                        tracing::warn!(ifname = %req.ifname, error = e, "announcing the addresses");
                    }
                }
            }
            result.ips = r
                .ips
                .into_iter()
                .map(|i| IpConfig {
                    interface: Some(0),
                    ..i
                })
                .collect();
            result.routes = r.routes;
            result.dns = r.dns;
        }
        att.stage = Stage::Done;
        store.save(att).map_err(io)?;
        Ok(result)
    }
}

impl Plugin for Sriov {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = NetConf::parse(&req.config, &req.args)?;
        let sysfs = Sysfs::new(&conf.sysfs_root);
        let vf = resolve(&sysfs, &conf.device_id)?;
        let netns = req
            .netns
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .ok_or_else(|| CniError::new(code::INVALID_ENVIRONMENT, "CNI_NETNS is required"))?;
        if !netns_alive(&netns) {
            return Err(gone(format!("{netns} is not a network namespace")));
        }
        let store = Store::new(&conf.data_dir);
        let _lock = store
            .lock(&vf.address, LOCK_TIMEOUT)
            .map_err(|e| CniError::new(code::TRY_AGAIN_LATER, e))?;
        // A stale attachment of this VF (its pod died without a DEL): what
        // it saved is what the VF had before it.
        let mut stale = None;
        if let Some(owner) = store.allocation(&vf.address) {
            if netns_alive(&owner.netns) {
                let who = if owner.container_id.is_empty() {
                    String::new()
                } else {
                    format!("container {} ({}), ", owner.container_id, owner.ifname)
                };
                return Err(CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!("VF {} is in use by {who}netns {}", vf.address, owner.netns),
                ));
            }
            // Its pod is gone without a DEL: the VF is free again.
            tracing::info!(vf = %vf.address, netns = %owner.netns, "stale allocation released");
            stale = store
                .load(&owner.container_id, &owner.ifname)
                .ok()
                .flatten()
                .filter(|a| !owner.container_id.is_empty() && a.device_id == vf.address);
            store.release(&vf.address).map_err(io)?;
        }
        vf.usable()?;
        let mut pf = pf::open(&sysfs, &vf.pf_address, vf.pf_netdev.as_deref()).map_err(io)?;
        let before = pf.get(vf.index).map_err(io)?;
        // Kernel mode: the VF netdev, looked up once for its state and the
        // move.
        let host_link = match &vf.netdev {
            Some(n) => {
                let mut host = Netlink::new().map_err(|e| io(e.to_string()))?;
                let l = link::get_by_name(&mut host, n).map_err(|e| {
                    invalid(format!(
                        "VF {}: its netdev {n} is not in this network namespace: {e}",
                        vf.address
                    ))
                })?;
                Some((host, l))
            }
            None => None,
        };
        let host_mac = host_link
            .as_ref()
            .and_then(|(_, l)| l.mac.map(|m| m.to_string()));
        let host_mtu = host_link.as_ref().and_then(|(_, l)| l.mtu);
        let mut att = Attachment {
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: netns.clone(),
            device_id: vf.address.clone(),
            pf_address: vf.pf_address.clone(),
            pf_netdev: vf.pf_netdev.clone(),
            vf_index: vf.index,
            dpdk: vf.netdev.is_none(),
            host_ifname: vf.netdev.clone(),
            host_mac,
            host_mtu,
            saved: SavedVf::from(&before),
            changed: Changed {
                vlan: conf.vlan.is_some(),
                mac: conf.mac.is_some(),
                rate: conf.min_tx_rate.is_some() || conf.max_tx_rate.is_some(),
                spoofchk: conf.spoofchk.is_some(),
                trust: conf.trust.is_some(),
                link_state: conf.link_state.is_some(),
            },
            mac: None,
            stage: Stage::Prepared,
            config: req.config.clone(),
        };
        // What the dead pod set goes back too, to what it was before it.
        if let Some(st) = &stale {
            att.saved.inherit(&st.saved, st.changed);
            att.changed = att.changed.or(st.changed);
        }
        // Recorded before anything changes: a crash from here on is
        // undone by DEL.
        store.save(&att).map_err(io)?;
        store
            .allocate(
                &vf.address,
                &Allocation {
                    container_id: req.container_id.clone(),
                    ifname: req.ifname.clone(),
                    netns,
                },
            )
            .map_err(io)?;
        let r = Self::add_inner(req, &conf, &vf, &store, &mut att, pf.as_mut(), host_link);
        if r.is_err() {
            drop(pf);
            if let Err(e) = teardown(&store, &sysfs, &att, req, true) {
                tracing::error!(vf = %vf.address, error = %e, "undoing a failed ADD");
            }
        }
        r
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let (data_dir, sysfs_root) = conf::paths(&req.config);
        let store = Store::new(&data_dir);
        let sysfs = Sysfs::new(&sysfs_root);
        let cached = store
            .load(&req.container_id, &req.ifname)
            .unwrap_or_else(|e| {
                // Not ours (upstream sriov-cni keeps its cache at the same
                // path, in its own format) or damaged: what ADD changed
                // cannot be known, so do what DEL without a cache does,
                // rather than fail every retry and leave the pod stuck.
                // The file stays for an operator to look at.
                tracing::warn!(
                    error = %e,
                    "attachment cache unreadable: releasing the IP only; the VF returns to \
                     the host when the pod's namespace goes"
                );
                None
            });
        let Some(a) = cached else {
            // Nothing recorded: ADD never got to change anything (the
            // cache is written first). IPAM may still hold an address
            // for it; its DEL is idempotent.
            run_ipam(
                req,
                Command::Del,
                &req.config,
                &req.container_id,
                req.netns.clone(),
                &req.ifname,
            )?;
            return Ok(());
        };
        let _lock = store
            .lock(&a.device_id, LOCK_TIMEOUT)
            .map_err(|e| CniError::new(code::TRY_AGAIN_LATER, e))?;
        teardown(&store, &sysfs, &a, req, req.netns.is_some()).map_err(io)
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = NetConf::parse(&req.config, &req.args)?;
        let store = Store::new(&conf.data_dir);
        let a = store
            .load(&req.container_id, &req.ifname)
            .map_err(io)?
            .filter(|a| a.stage == Stage::Done)
            .ok_or_else(|| {
                gone(format!(
                    "no sriov attachment for container {} interface {}",
                    req.container_id, req.ifname
                ))
            })?;
        if a.device_id != conf.device_id {
            return Err(gone(format!(
                "interface {} has VF {}, the config says {}",
                a.ifname, a.device_id, conf.device_id
            )));
        }
        let sysfs = Sysfs::new(&conf.sysfs_root);
        resolve(&sysfs, &a.device_id).map_err(|e| gone(e.msg))?;
        if store
            .allocation(&a.device_id)
            .is_none_or(|x| x.container_id != a.container_id)
        {
            return Err(gone(format!(
                "VF {} is not allocated to this container",
                a.device_id
            )));
        }
        if let Some(id) = conf.vlan {
            let mut pf = pf::open(&sysfs, &a.pf_address, a.pf_netdev.as_deref()).map_err(io)?;
            let now = pf.get(a.vf_index).map_err(io)?;
            if now.vlan != u32::from(id) {
                return Err(gone(format!(
                    "VF {} has VLAN {}, not {id}",
                    a.device_id, now.vlan
                )));
            }
        }
        if a.dpdk {
            return Ok(());
        }
        let netns = req
            .netns
            .as_ref()
            .ok_or_else(|| CniError::new(code::INVALID_ENVIRONMENT, "CNI_NETNS is required"))?;
        let mut p = nl_in(netns).map_err(gone)?;
        let l = link::get_by_name(&mut p, &req.ifname)
            .map_err(|e| gone(format!("{} in the pod: {e}", req.ifname)))?;
        let mac = l.mac.map(|m| m.to_string());
        if a.mac.is_some() && mac != a.mac {
            return Err(gone(format!(
                "{} has MAC {}, not {}",
                req.ifname,
                mac.unwrap_or_default(),
                a.mac.unwrap_or_default()
            )));
        }
        if let Some(prev) = req.prev_result()? {
            let have: Vec<_> = addr::list(&mut p, None, Some(l.index))
                .map_err(|e| io(e.to_string()))?
                .into_iter()
                .map(|x| x.addr)
                .collect();
            for ip in prev.ips.iter().filter(|i| {
                i.interface
                    .and_then(|n| prev.interfaces.get(n))
                    .is_some_and(|ifc| ifc.name == req.ifname)
            }) {
                if !have.contains(&ip.address) {
                    return Err(gone(format!("{} lost {}", req.ifname, ip.address)));
                }
            }
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let (data_dir, sysfs_root) = conf::paths(&req.config);
        let store = Store::new(&data_dir);
        let sysfs = Sysfs::new(&sysfs_root);
        let unavailable = |m: String| CniError::new(code::NOT_AVAILABLE, m);
        let free = |pci: &str| store.allocation(pci).is_none_or(|a| !netns_alive(&a.netns));
        let rc = req.runtime_config();
        let device = rc
            .get("deviceID")
            .or_else(|| req.config.get("deviceID"))
            .and_then(Value::as_str);
        if let Some(pci) = device {
            let vf = resolve(&sysfs, pci).map_err(|e| unavailable(e.msg))?;
            if !sysfs.device_dir(&vf.pf_address).exists() {
                return Err(unavailable(format!(
                    "PF {} of VF {pci} is gone",
                    vf.pf_address
                )));
            }
            return if free(&vf.address) {
                Ok(())
            } else {
                Err(unavailable(format!("VF {pci} is in use")))
            };
        }
        let scan = sysfs
            .scan()
            .map_err(|e| unavailable(format!("reading {}: {e}", sysfs_root.display())))?;
        let vfs: Vec<String> = scan
            .devices
            .iter()
            .filter(|d| d.pf.is_some())
            .map(|d| d.address.clone())
            .collect();
        if vfs.is_empty() {
            return Err(unavailable(format!(
                "no SR-IOV VF under {}: no PF has VFs configured (sriov_numvfs)",
                sysfs_root.display()
            )));
        }
        if vfs.iter().any(|v| free(v)) {
            Ok(())
        } else {
            Err(unavailable(format!("all {} VFs are in use", vfs.len())))
        }
    }

    fn gc(&self, req: &Request, valid: &[Valid]) -> Result<(), CniError> {
        let (data_dir, sysfs_root) = conf::paths(&req.config);
        let store = Store::new(&data_dir);
        let sysfs = Sysfs::new(&sysfs_root);
        let mut errs = Vec::new();
        let mut kept = Vec::new();
        // GC is per network (the runtime, or plexus for each delegate,
        // passes that network's attachments only): another network's
        // attachments are not in `valid` and must not be touched.
        let network = req.config.get("name");
        for a in store.attachments() {
            if a.config.get("name") != network
                || valid
                    .iter()
                    .any(|v| v.container_id == a.container_id && v.ifname == a.ifname)
            {
                kept.push(a.device_id.clone());
                continue;
            }
            let done = store
                .lock(&a.device_id, LOCK_TIMEOUT)
                .and_then(|_lock| teardown(&store, &sysfs, &a, req, true));
            match done {
                Ok(()) => {
                    tracing::info!(container = %a.container_id, ifname = %a.ifname, vf = %a.device_id, "GC released");
                }
                Err(e) => errs.push(format!("{} {}: {e}", a.container_id, a.ifname)),
            }
        }
        // Allocation records without an attachment whose pod is gone
        // (upstream's, or left by a crash before the cache).
        for pci in store.allocated() {
            if !kept.contains(&pci)
                && store
                    .allocation(&pci)
                    .is_some_and(|a| !netns_alive(&a.netns))
                && let Err(e) = store.release(&pci)
            {
                errs.push(e);
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(io(errs.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_alive_only_for_nsfs_files() {
        assert!(netns_alive("/proc/self/ns/net"));
        assert!(!netns_alive("/proc/self/status"));
        assert!(!netns_alive("/nonexistent/netns"));
    }
}
