//! Telling the pod's neighbours about its addresses once they are set: a
//! VF's address may have been another pod's a moment ago (IPAM reuses it),
//! and peers would keep the old MAC in their neighbour tables for minutes.
//!
//! As upstream sriov-cni does, best effort: `arp_notify` and `ndisc_notify`
//! on the interface (the kernel then announces on every later link-up or MAC
//! change), and one gratuitous ARP per IPv4 address and one unsolicited
//! Neighbor Advertisement (override flag, RFC 4861 §7.2.6) per IPv6
//! address now, since the interface is already up.

use std::{
    fs::File,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use plexus_netlink::MacAddr;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

/// Announces `ips` of interface `ifname` (index `index`, MAC `mac`) in the
/// netns at `netns`. Returns what failed, for the log: none of it is a
/// reason to fail the ADD.
#[must_use]
pub fn announce(
    netns: &Path,
    ifname: &str,
    index: u32,
    mac: MacAddr,
    ips: &[IpAddr],
) -> Vec<String> {
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
            // /proc/sys/net is the netns of the thread that opens it.
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
            for ip in ips {
                let (frame, proto) = match ip {
                    IpAddr::V4(a) => (garp(mac, *a), ETH_P_ARP),
                    IpAddr::V6(a) => (unsolicited_na(mac, *a), ETH_P_IPV6),
                };
                if let Err(e) = send(index, proto, &frame) {
                    errs.push(format!("announcing {ip}: {e}"));
                }
            }
            errs
        })
        .join()
        .unwrap_or_else(|_| vec!["announcing thread panicked".into()])
    })
}

/// Sends one Ethernet frame on interface `index` of this thread's netns.
fn send(index: u32, proto: u16, frame: &[u8]) -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = i32::try_from(index).map_err(io::Error::other)?;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: the buffer and address outlive the call; lengths are theirs.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            std::ptr::from_ref(&sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A gratuitous ARP request (RFC 5227's announcement): broadcast, sender
/// and target address both `ip`.
#[must_use]
pub fn garp(mac: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// An unsolicited Neighbor Advertisement for `ip` to all nodes
/// (ff02::1), override flag set, with the target link-layer address.
#[must_use]
pub fn unsolicited_na(mac: MacAddr, ip: Ipv6Addr) -> Vec<u8> {
    let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    // ICMPv6: type 136, code 0, checksum, flags (O), reserved, target,
    // option 2 (target link-layer address, 8 bytes).
    let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    icmp.extend_from_slice(&ip.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&mac.0);
    let sum = icmpv6_checksum(ip, dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(icmp.len()).expect("32 bytes").to_be_bytes());
    f.extend_from_slice(&[58, 255]); // ICMPv6, hop limit 255 (ndisc demands it)
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// The ICMPv6 checksum (RFC 4443 §2.3) over the IPv6 pseudo-header.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let hi = u32::from(c[0]) << 8;
            sum += hi | c.get(1).map_or(0, |&l| u32::from(l));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&u32::try_from(icmp.len()).expect("small").to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x02, 0x56, 0, 0, 0, 1]);

    #[test]
    fn a_gratuitous_arp_names_the_address_twice() {
        let f = garp(MAC, Ipv4Addr::new(10, 56, 0, 10));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "a request");
        assert_eq!(&f[22..28], &MAC.0);
        assert_eq!(&f[28..32], &[10, 56, 0, 10]);
        assert_eq!(&f[38..42], &[10, 56, 0, 10]);
    }

    #[test]
    fn an_unsolicited_na_checksums_to_zero_with_its_pseudo_header() {
        let ip: Ipv6Addr = "fd00:56::a".parse().unwrap();
        let f = unsolicited_na(MAC, ip);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!((f[20], f[21]), (58, 255));
        let icmp = &f[54..];
        assert_eq!((icmp[0], icmp[4]), (136, 0x20), "NA, override only");
        assert_eq!(&icmp[8..24], &ip.octets());
        assert_eq!(&icmp[26..32], &MAC.0);
        // A correct checksum makes the sum over everything come out zero.
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        assert_eq!(icmpv6_checksum(ip, dst, icmp), 0);
    }
}
