//! Telling the pod's neighbours about its addresses once they are set: a
//! VF's address may have been another pod's a moment ago (IPAM reuses it),
//! and peers would keep the old MAC in their neighbour tables for minutes.
//!
//! As upstream sriov-cni, best effort: `arp_notify` and `ndisc_notify` on
//! the interface, so the kernel announces on every later link-up or MAC
//! change; and, since the interface is already up, the kernel is asked to
//! announce now ([`link::notify_peers`]): a gratuitous ARP per IPv4
//! address at once, an unsolicited Neighbor Advertisement (override) per
//! IPv6 address when its duplicate address detection completes. Upstream
//! sends those frames itself from a packet socket; closing one waits for
//! an RCU grace period (`packet_release` → `synchronize_net`), some 20 ms
//! of every ADD on a 2-core node.

use std::{fs::File, io, os::fd::AsFd as _, os::fd::AsRawFd as _, path::Path};

use plexus_netlink::{Netlink, link};

/// Announces interface `ifname` (index `index` in `nl`'s namespace, the
/// netns at `netns`). Returns what failed, for the log: none of it is a
/// reason to fail the ADD.
#[must_use]
pub fn announce(nl: &mut Netlink, netns: &Path, ifname: &str, index: u32) -> Vec<String> {
    let mut errs = set_notify(netns, ifname);
    if let Err(e) = link::notify_peers(nl, index) {
        errs.push(format!("asking the kernel to announce {ifname}: {e}"));
    }
    errs
}

/// `arp_notify` and `ndisc_notify` on `ifname` in the netns at `netns`
/// (`/proc/sys/net` is the netns of the thread that opens it).
fn set_notify(netns: &Path, ifname: &str) -> Vec<String> {
    let ns = match File::open(netns) {
        Ok(f) => f,
        Err(e) => return vec![format!("netns {}: {e}", netns.display())],
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns(2) reads the fd, kept open by `ns`; it moves
            // this short-lived thread only.
            if unsafe { libc::setns(ns.as_fd().as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return vec![format!("setns: {}", io::Error::last_os_error())];
            }
            let mut errs = Vec::new();
            for (path, v6) in [
                (
                    format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify"),
                    false,
                ),
                (
                    format!("/proc/sys/net/ipv6/conf/{ifname}/ndisc_notify"),
                    true,
                ),
            ] {
                // No IPv6 on the interface: nothing to notify about.
                let wanted = !v6 || Path::new(&path).exists();
                if wanted && let Err(e) = std::fs::write(&path, "1") {
                    errs.push(format!("{path}: {e}"));
                }
            }
            errs
        })
        .join()
        .unwrap_or_else(|_| vec!["the sysctl thread panicked".into()])
    })
}
