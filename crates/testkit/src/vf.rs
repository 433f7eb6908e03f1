//! "Emulated VFs": veth pairs standing in for SR-IOV VF netdevs.
//!
//! Owns: creating a veth pair whose one end plays the VF netdev (in a test
//! "host" namespace) and whose other end plays the VF's representor or the
//! wire (in a "peer" namespace, possibly the same), and registering the VF
//! end in a [`FakeSysfs`] as that VF's `net/<ifname>`, with the real MAC
//! and ifindex. Plugins that find VFs through sysfs and move them with
//! netlink can then run end to end without SR-IOV hardware.
//!
//! Must not: create anything in the real root namespace, or clean up: the
//! links vanish with their namespaces ([`NetNs`] drop) and the sysfs entry
//! with the [`FakeSysfs`]. The fake sysfs is not kept in sync when a plugin
//! later moves or renames the VF netdev (the real `/sys` of the host would
//! then lose `net/<ifname>`); call [`FakeSysfs::remove_netdev`] for that.
//!
//! Links are made with `ip` (iproute2), not the Plexus netlink crate, so
//! this kit does not depend on the code it helps test.

use std::io;
use std::path::PathBuf;

use serde_json::Value;

use crate::netns::NetNs;
use crate::sysfs::{FakeSysfs, NetdevSpec, VfSpec};

/// What to emulate. `Default` is VF 0 of the default X710 PF, `eth-vf0` in
/// the host namespace, peer `rep-vf0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatedVfSpec {
    /// The PF the VF belongs to; it must already be in the fake sysfs.
    pub pf_bdf: String,
    /// The VF's index under the PF (`virtfn<index>`).
    pub vf_index: u32,
    /// The VF's PCI address; `None` derives it from the PF's offset/stride.
    pub vf_bdf: Option<String>,
    /// The VF netdev's name in the host namespace (at most 15 bytes).
    pub vf_ifname: String,
    /// The peer's name in the peer namespace (at most 15 bytes).
    pub peer_ifname: String,
    /// The VF's PCI identity when the VF is not in the fake sysfs yet
    /// (ignored if it is: then only the netdev is added).
    pub vf: VfSpec,
}

impl Default for EmulatedVfSpec {
    fn default() -> Self {
        EmulatedVfSpec {
            pf_bdf: crate::sysfs::DEFAULT_PF_BDF.to_owned(),
            vf_index: 0,
            vf_bdf: None,
            vf_ifname: "eth-vf0".to_owned(),
            peer_ifname: "rep-vf0".to_owned(),
            vf: VfSpec::default(),
        }
    }
}

/// An emulated VF as created: plain data for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatedVf {
    /// The PF's PCI address.
    pub pf_bdf: String,
    /// The VF's index under its PF.
    pub vf_index: u32,
    /// The VF's PCI address.
    pub vf_bdf: String,
    /// The VF netdev (veth end) name.
    pub vf_ifname: String,
    /// Its MAC, as the kernel reports it (and the fake sysfs says).
    pub vf_mac: String,
    /// Its ifindex in the host namespace.
    pub vf_ifindex: u32,
    /// Name of the host namespace holding the VF end.
    pub host_netns: String,
    /// The peer (representor / wire) name.
    pub peer_ifname: String,
    /// The peer's MAC.
    pub peer_mac: String,
    /// Name of the namespace holding the peer.
    pub peer_netns: String,
    /// The VF netdev's fake sysfs directory (`.../<VF BDF>/net/<ifname>`).
    pub sysfs_netdev_dir: PathBuf,
}

impl EmulatedVf {
    /// Creates the veth pair (VF end in `host`, peer in `peer`, which may
    /// be the same namespace), sets the peer up and leaves the VF end down
    /// (as a freshly probed VF netdev is), then registers the VF in `sysfs`:
    /// the VF device (if not there yet) and its `net/<vf_ifname>` with the
    /// veth's real MAC and ifindex, operstate `down`.
    ///
    /// # Errors
    ///
    /// If an `ip` command fails (name taken, name too long ...); the
    /// message carries its stderr.
    ///
    /// # Panics
    ///
    /// On fake sysfs misuse (PF missing, VF index out of range).
    pub fn create(
        host: &NetNs,
        peer: &NetNs,
        sysfs: &FakeSysfs,
        spec: &EmulatedVfSpec,
    ) -> io::Result<EmulatedVf> {
        let mut add = vec![
            "link",
            "add",
            spec.vf_ifname.as_str(),
            "type",
            "veth",
            "peer",
            "name",
            spec.peer_ifname.as_str(),
        ];
        if host.path() != peer.path() {
            add.extend(["netns", peer.name()]);
        }
        ip(host, &add)?;
        ip(peer, &["link", "set", spec.peer_ifname.as_str(), "up"])?;
        let (vf_mac, vf_ifindex) = mac_and_ifindex(host, &spec.vf_ifname)?;
        let (peer_mac, _) = mac_and_ifindex(peer, &spec.peer_ifname)?;

        let vf_bdf = match &spec.vf_bdf {
            Some(bdf) => bdf.clone(),
            None => crate::sysfs::vf_bdf(
                &spec.pf_bdf,
                sysfs
                    .read_attr(&spec.pf_bdf, "sriov_offset")
                    .parse()
                    .map_err(io::Error::other)?,
                sysfs
                    .read_attr(&spec.pf_bdf, "sriov_stride")
                    .parse()
                    .map_err(io::Error::other)?,
                spec.vf_index,
            ),
        };
        if !sysfs.device_dir(&vf_bdf).is_dir() {
            sysfs.vf(
                &spec.pf_bdf,
                spec.vf_index,
                VfSpec {
                    bdf: Some(vf_bdf.clone()),
                    ifname: None,
                    ..spec.vf.clone()
                },
            );
        }
        let sysfs_netdev_dir = sysfs.add_netdev(
            &vf_bdf,
            NetdevSpec {
                ifname: spec.vf_ifname.clone(),
                mac: Some(vf_mac.clone()),
                ifindex: Some(vf_ifindex),
                operstate: "down".to_owned(),
                ..NetdevSpec::default()
            },
        );
        Ok(EmulatedVf {
            pf_bdf: spec.pf_bdf.clone(),
            vf_index: spec.vf_index,
            vf_bdf,
            vf_ifname: spec.vf_ifname.clone(),
            vf_mac,
            vf_ifindex,
            host_netns: host.name().to_owned(),
            peer_ifname: spec.peer_ifname.clone(),
            peer_mac,
            peer_netns: peer.name().to_owned(),
            sysfs_netdev_dir,
        })
    }
}

impl EmulatedVf {
    /// What a real VF does once the pod's netns it was in dies: the kernel
    /// pushes the netdev back to the host namespace some time later
    /// (netns cleanup runs in a workqueue), under `dev<ifindex>` when its
    /// pod name is taken there, and with the pod's MAC and MTU. A veth end
    /// dies with its namespace instead, so this makes a new pair: the VF
    /// end named `name` in `host` with `mac` and `mtu`, the peer (again
    /// `peer_ifname`) in `peer`; and moves the VF's fake sysfs `net/`
    /// entry from its old name to `name`. Returns the new VF end's
    /// ifindex.
    ///
    /// # Errors
    /// An `ip` command failed.
    pub fn come_back_as(
        &self,
        host: &NetNs,
        peer: &NetNs,
        sysfs: &FakeSysfs,
        (name, mac, mtu): (&str, &str, u32),
    ) -> io::Result<u32> {
        let mut add = vec![
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            self.peer_ifname.as_str(),
        ];
        if host.path() != peer.path() {
            add.extend(["netns", peer.name()]);
        }
        // The old pair dies with the pod's namespace, in the kernel's own
        // time (netns cleanup is a workqueue): until then its peer holds
        // the name.
        let mut tries = 0;
        while let Err(e) = ip(host, &add) {
            tries += 1;
            if tries == 100 || !e.to_string().contains("File exists") {
                return Err(e);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mtu_s = mtu.to_string();
        ip(host, &["link", "set", name, "address", mac, "mtu", &mtu_s])?;
        ip(peer, &["link", "set", self.peer_ifname.as_str(), "up"])?;
        let (_, ifindex) = mac_and_ifindex(host, name)?;
        if sysfs
            .device_dir(&self.vf_bdf)
            .join("net")
            .join(&self.vf_ifname)
            .exists()
        {
            sysfs.remove_netdev(&self.vf_bdf, &self.vf_ifname);
        }
        sysfs.add_netdev(
            &self.vf_bdf,
            NetdevSpec {
                ifname: name.to_owned(),
                mac: Some(mac.to_owned()),
                mtu,
                ifindex: Some(ifindex),
                operstate: "down".to_owned(),
                ..NetdevSpec::default()
            },
        );
        Ok(ifindex)
    }
}

/// Runs `ip ARGS...` in `ns`; a non-zero exit is an error with stderr.
fn ip(ns: &NetNs, args: &[&str]) -> io::Result<String> {
    let out = ns.exec("ip", args)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "in netns {}: `ip {}` failed with {}: {}",
            ns.name(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Reads a link's MAC and ifindex from `ip -j link show dev IFNAME`.
fn mac_and_ifindex(ns: &NetNs, ifname: &str) -> io::Result<(String, u32)> {
    let out = ip(ns, &["-j", "link", "show", "dev", ifname])?;
    let v: Value = serde_json::from_str(&out).map_err(io::Error::other)?;
    let link = &v[0];
    let mac = link["address"].as_str();
    let ifindex = link["ifindex"].as_u64().and_then(|i| u32::try_from(i).ok());
    match (mac, ifindex) {
        (Some(mac), Some(ifindex)) => Ok((mac.to_owned(), ifindex)),
        _ => Err(io::Error::other(format!(
            "no address/ifindex for {ifname} in `ip -j link` output: {out}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::sysfs::PfSpec;

    #[test]
    fn emulated_vf_across_namespaces() {
        let host = NetNs::with_prefix("vfhost").unwrap();
        let wire = NetNs::with_prefix("vfwire").unwrap();
        let sysfs = FakeSysfs::new();
        let pf = sysfs.pf(PfSpec::default());
        let vf = EmulatedVf::create(
            &host,
            &wire,
            &sysfs,
            &EmulatedVfSpec {
                vf_index: 1,
                vf_ifname: "ens1f0v1".into(),
                peer_ifname: "wire1".into(),
                ..EmulatedVfSpec::default()
            },
        )
        .unwrap();
        assert_eq!(vf.vf_bdf, "0000:3b:02.1");
        assert_eq!(vf.host_netns, host.name());
        assert_eq!(vf.peer_netns, wire.name());

        // The kernel side: VF end in host (down), peer in wire (up).
        let link = host.link("ens1f0v1").expect("VF end in host netns");
        assert_eq!(link["address"], vf.vf_mac.as_str());
        assert_eq!(link["linkinfo"]["info_kind"], "veth");
        assert!(wire.link("ens1f0v1").is_none());
        let peer = wire.link("wire1").expect("peer in wire netns");
        assert!(peer["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
        assert_eq!(peer["address"], vf.peer_mac.as_str());

        // The sysfs side: registered under the VF, reachable from the PF.
        let via_pf = fs::canonicalize(pf.attr("virtfn1").join("net/ens1f0v1")).unwrap();
        assert_eq!(via_pf, fs::canonicalize(&vf.sysfs_netdev_dir).unwrap());
        let read = |f: &str| fs::read_to_string(vf.sysfs_netdev_dir.join(f)).unwrap();
        assert_eq!(read("address"), format!("{}\n", vf.vf_mac));
        assert_eq!(read("ifindex"), format!("{}\n", vf.vf_ifindex));
        assert_eq!(read("operstate"), "down\n");
        assert_eq!(
            fs::canonicalize(sysfs.class_net("ens1f0v1")).unwrap(),
            fs::canonicalize(&vf.sysfs_netdev_dir).unwrap()
        );
        assert_eq!(sysfs.read_attr(&pf.bdf, "sriov_numvfs"), "1");
    }

    #[test]
    fn emulated_vf_in_one_namespace_onto_an_existing_vf() {
        let host = NetNs::with_prefix("vfone").unwrap();
        let sysfs = FakeSysfs::new();
        let pf = sysfs.pf(PfSpec::default());
        let existing = sysfs.vf(&pf.bdf, 0, VfSpec::default());
        let vf = EmulatedVf::create(&host, &host, &sysfs, &EmulatedVfSpec::default()).unwrap();
        assert_eq!(vf.vf_bdf, existing.bdf);
        assert!(host.link("eth-vf0").is_some());
        assert!(host.link("rep-vf0").is_some());
        assert_eq!(
            sysfs.read_attr(&existing.bdf, "net/eth-vf0/address"),
            vf.vf_mac
        );
        // A second VF with a clashing name fails cleanly.
        let err = EmulatedVf::create(
            &host,
            &host,
            &sysfs,
            &EmulatedVfSpec {
                vf_index: 1,
                ..EmulatedVfSpec::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("ip link add eth-vf0"), "{err}");
    }
}
