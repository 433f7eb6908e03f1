//! What discovery needs from the host's network stack besides sysfs: which
//! netdevs carry a default route (netlink, in the current netns: the
//! daemon runs with `hostNetwork`), and which VFs have their RDMA device
//! in a pod (devlink).

use std::collections::HashSet;

use plexus_netlink::{
    Netlink,
    devlink::{self, Devlink},
    link, route,
};
use plexus_sysfs::{PciDevice, Sysfs};

use crate::cni::plugin::DPDK_DRIVERS;

/// Netdevs holding an IPv4 or IPv6 default route in any table. Upstream
/// looks at IPv4 only; an IPv6-only node's uplink deserves the same
/// protection.
///
/// # Errors
/// When netlink cannot be asked.
pub fn default_route_netdevs() -> plexus_netlink::Result<HashSet<String>> {
    let mut nl = Netlink::new()?;
    let links = link::list(&mut nl)?;
    let routes = route::list(&mut nl, None)?;
    Ok(routes
        .iter()
        .filter(|r| r.is_default())
        .filter_map(|r| r.oif)
        .filter_map(|oif| links.iter().find(|l| l.index == oif))
        .map(|l| l.name.clone())
        .collect())
}

/// Tests and demos: a device whose sysfs directory holds this file has
/// its devlink parameters there (`{"enable_rdma": true}`) instead of in
/// the kernel, as an emulated PF's VF settings live in
/// [`crate::cni::pf::EMULATED_STATE`].
pub const EMULATED_DEVLINK: &str = "plexus_emulated_devlink.json";

/// devlink's `enable_rdma` (mlx5: is the device's RDMA function on) of
/// PCI device `address`: from [`EMULATED_DEVLINK`] when its sysfs
/// directory holds one, from the kernel's devlink otherwise (opened on
/// first use, in the current netns, where the daemon's `hostNetwork`
/// puts it with the host's devlink instances). `None` when there is no
/// answer: no devlink in this kernel, no instance for the device (a
/// driver without devlink), no such parameter, or an error (logged).
fn enable_rdma(sysfs: &Sysfs, address: &str, kernel: &mut Option<Option<Devlink>>) -> Option<bool> {
    let emulated = sysfs.device_dir(address).join(EMULATED_DEVLINK);
    if emulated.is_file() {
        let v: serde_json::Value = std::fs::read(&emulated)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())?;
        return v["enable_rdma"].as_bool();
    }
    let dl = kernel
        .get_or_insert_with(|| {
            Devlink::open().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot open devlink");
                None
            })
        })
        .as_mut()?;
    match dl.param("pci", address, "enable_rdma") {
        Ok(p) => p?.values.iter().find_map(|(_, v)| match v {
            devlink::Value::Bool(b) => Some(*b),
            _ => None,
        }),
        Err(e) => {
            tracing::warn!(device = address, error = %e, "cannot read devlink enable_rdma");
            None
        }
    }
}

/// RDMA in exclusive netns mode (`rdma system set netns exclusive`): the
/// RDMA device of a VF in a pod moves into the pod's netns with the
/// netdev, and the host's sysfs shows neither. Marks such VFs
/// [`PciDevice::rdma_in_netns`] when devlink says their RDMA function is
/// on (`enable_rdma`), so that `isRdma` keeps them in their pool even
/// when this daemon has no record of handing them out (it restarted while
/// the pod runs; upstream's PR 603 reads the same parameter).
///
/// Only VFs bound to a kernel driver that the host sees without netdev
/// and without RDMA device are asked: a VF with its netdev on the host and
/// no RDMA device has none (mlx5_ib unloaded), and a VF bound to a
/// userspace driver has no RDMA device to hide.
pub fn mark_rdma_in_netns(sysfs: &Sysfs, devices: &mut [PciDevice]) {
    let mut kernel = None;
    for d in devices.iter_mut().filter(|d| {
        d.pf.is_some()
            && d.aux_type.is_none()
            && d.rdma.is_empty()
            && d.netdevs.is_empty()
            && d.driver
                .as_deref()
                .is_some_and(|drv| !DPDK_DRIVERS.contains(&drv))
    }) {
        if enable_rdma(sysfs, &d.address, &mut kernel) == Some(true) {
            tracing::debug!(
                device = d.address,
                "RDMA device in a pod's netns (devlink enable_rdma)"
            );
            d.rdma_in_netns = true;
        }
    }
}
