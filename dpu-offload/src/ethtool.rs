//! One netdev feature flag through ethtool's ioctls (`SIOCETHTOOL`), the
//! way `ethtool -k` reads it: the feature's bit comes from the
//! `ETH_SS_FEATURES` string set (bit numbers differ between kernels), its
//! state from `ETHTOOL_GFEATURES`. Layouts: `include/uapi/linux/ethtool.h`.
//!
//! Owns only this read; it must not change a feature.

use std::{ffi::c_void, os::fd::AsRawFd};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// `struct ifreq` with `ifr_data`.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut c_void,
    _pad: [u8; 16],
}

fn ioctl(sock: &std::net::UdpSocket, ifname: &str, buf: &mut [u32]) -> Option<()> {
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: buf.as_mut_ptr().cast(),
        _pad: [0; 16],
    };
    let n = ifname.as_bytes();
    if n.len() >= libc::IFNAMSIZ || n.contains(&0) {
        return None;
    }
    req.name[..n.len()].copy_from_slice(n);
    // SAFETY: `req` is a valid `struct ifreq` whose `ifr_data` points at
    // `buf`, which is large enough for the command it starts with (the
    // callers size it from the kernel's own counts) and outlives the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) };
    (rc == 0).then_some(())
}

/// Whether feature `name` (e.g. `hw-tc-offload`) is active on `ifname` in
/// the caller's network namespace; `None` when the netdev does not exist or
/// does not know the feature.
pub fn feature(ifname: &str, name: &str) -> Option<bool> {
    // Any socket will do for SIOCETHTOOL; a UDP one needs no privileges.
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // struct ethtool_sset_info { cmd; reserved; u64 sset_mask; u32 data[1] }
    let mut info = [ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_FEATURES, 0, 0];
    ioctl(&sock, ifname, &mut info)?;
    let count = info[4] as usize;
    if count == 0 || count > 4096 {
        return None;
    }
    // struct ethtool_gstrings { cmd; string_set; len; u8 data[len * 32] }
    let mut strings = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
    strings[..3].copy_from_slice(&[ETHTOOL_GSTRINGS, ETH_SS_FEATURES, count as u32]);
    ioctl(&sock, ifname, &mut strings)?;
    let bytes: Vec<u8> = strings[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
    let bit = bytes.chunks(ETH_GSTRING_LEN).position(|s| {
        let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
        &s[..end] == name.as_bytes()
    })?;
    // struct ethtool_gfeatures { cmd; size; struct { available; requested;
    // active; never_changed } features[size] }
    let blocks = count.div_ceil(32);
    let mut feats = vec![0u32; 2 + blocks * 4];
    feats[..2].copy_from_slice(&[ETHTOOL_GFEATURES, blocks as u32]);
    ioctl(&sock, ifname, &mut feats)?;
    let active = feats[2 + (bit / 32) * 4 + 2];
    Some(active & (1 << (bit % 32)) != 0)
}

#[cfg(test)]
mod tests {
    use plexus_testkit::NetNs;

    use super::feature;

    #[test]
    fn reads_features_of_a_real_veth() {
        let ns = NetNs::new().unwrap();
        ns.sh(
            "ip",
            &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
        );
        let (csum, tc, missing_dev, missing_feature) = ns.run(|| {
            (
                feature("v0", "tx-checksum-ip-generic"),
                feature("v0", "hw-tc-offload"),
                feature("nope0", "hw-tc-offload"),
                feature("v0", "no-such-feature"),
            )
        });
        // veth checksums in software for its peer (NETIF_F_HW_CSUM on) and
        // has no tc offload (NETIF_F_HW_TC off): veth_setup.
        assert_eq!(csum, Some(true));
        assert_eq!(tc, Some(false));
        assert_eq!(missing_dev, None);
        assert_eq!(missing_feature, None);
    }
}
