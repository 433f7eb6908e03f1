//! Fake sysfs trees for SR-IOV discovery tests, rooted in a temp dir.
//!
//! Owns: laying out PCI devices, drivers, IOMMU groups and netdevs the way
//! the kernel presents them under `/sys`, so code that takes a `sysfs_root`
//! can be tested against an Intel X710, a ConnectX-5 in switchdev mode, a VF
//! bound to `vfio-pci`, or a broken attribute, without hardware.
//!
//! Must not: touch the real `/sys`, or model more than the files SR-IOV
//! discovery reads. The layout is flat (every device sits directly under
//! `devices/pci0000:00/`, no bridges), which is what code following the
//! `bus/pci/devices/<BDF>` links sees anyway.
//!
//! Layout (all links relative, as the kernel makes them):
//!
//! ```text
//! <root>/bus/pci/devices/<BDF>            -> ../../../devices/pci0000:00/<BDF>
//! <root>/bus/pci/drivers/<drv>/<BDF>      -> ../../../../devices/pci0000:00/<BDF>
//! <root>/kernel/iommu_groups/<N>/devices/<BDF> -> ../../../../devices/pci0000:00/<BDF>
//! <root>/class/net/<ifname>               -> ../../devices/pci0000:00/<BDF>/net/<ifname>
//! <root>/devices/pci0000:00/<BDF>/
//!     vendor device class subsystem_vendor subsystem_device modalias
//!     numa_node driver_override
//!     driver      -> ../../../bus/pci/drivers/<drv>
//!     iommu_group -> ../../../kernel/iommu_groups/<N>
//!     sriov_totalvfs sriov_numvfs sriov_offset sriov_stride
//!     sriov_vf_device sriov_drivers_autoprobe        (PF only)
//!     virtfn<i>   -> ../<VF BDF>                     (PF only)
//!     physfn      -> ../<PF BDF>                     (VF only)
//!     net/<ifname>/ address operstate mtu ifindex type
//!                   phys_port_name phys_switch_id    (only when set)
//!                   device -> ../../../<BDF>
//!     <drv>.sf.<id>/  sfnum                          (subfunction)
//!         net/<ifname>/ ... device -> ../..
//!         infiniband/<rdma dev>/  infiniband_verbs/uverbs<N>/
//! <root>/bus/auxiliary/devices/<drv>.sf.<id> -> ../../../devices/pci0000:00/<BDF>/<drv>.sf.<id>
//! ```
//!
//! File formats follow the kernel's show functions; references are to
//! `Documentation/ABI/testing/sysfs-bus-pci`, `.../sysfs-class-net` and
//! `drivers/pci/pci-sysfs.c` / `drivers/pci/iov.c` / `net/core/net-sysfs.c`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use tempfile::TempDir;

/// The PCI root directory every fake device lives in.
const PCI_ROOT: &str = "devices/pci0000:00";

/// Default PF address (an X710 in slot 0x3b, function 0).
pub const DEFAULT_PF_BDF: &str = "0000:3b:00.0";

/// Default switch id for representors (`phys_switch_id`, hex of the
/// switch's unique id; mlx5 uses the port's system image GUID).
pub const DEFAULT_SWITCH_ID: &str = "1c34da0300f0e1d2";

/// Intel PCI vendor id.
pub const INTEL: u16 = 0x8086;
/// Mellanox / NVIDIA networking PCI vendor id.
pub const MELLANOX: u16 = 0x15b3;
/// Class code of an Ethernet controller (base 0x02, sub 0x00, prog-if 0x00).
pub const CLASS_ETHERNET: u32 = 0x02_00_00;

/// A physical function. `Default` is an Intel X710 (8086:1572, `i40e`,
/// 64 VFs at offset 16 stride 1, netdev `ens1f0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfSpec {
    /// PCI address, `DDDD:BB:DD.F`.
    pub bdf: String,
    /// `vendor`.
    pub vendor: u16,
    /// `device`.
    pub device: u16,
    /// `subsystem_vendor`.
    pub subsystem_vendor: u16,
    /// `subsystem_device`.
    pub subsystem_device: u16,
    /// `class`, 24 bits.
    pub class: u32,
    /// Bound driver (`driver` link); `None` for an unbound device.
    pub driver: Option<String>,
    /// `numa_node`; `-1` when the platform does not say.
    pub numa_node: i32,
    /// `iommu_group`; `None` picks a fresh group number.
    pub iommu_group: Option<u32>,
    /// `sriov_totalvfs`; `0` means no SR-IOV capability, so no `sriov_*`
    /// files at all (as on a device without the capability).
    pub total_vfs: u32,
    /// `sriov_vf_device`: the device id its VFs will have.
    pub vf_device: u16,
    /// `sriov_offset`: routing-id distance from the PF to VF 0.
    pub vf_offset: u16,
    /// `sriov_stride`: routing-id distance between consecutive VFs.
    pub vf_stride: u16,
    /// The PF's netdev (`net/<ifname>`), if any.
    pub ifname: Option<String>,
    /// The netdev's MAC; `None` derives one from its ifindex.
    pub mac: Option<String>,
    /// The netdev's `phys_port_name`; `None` leaves the file out (what the
    /// kernel does when the driver has no `ndo_get_phys_port_name`).
    pub phys_port_name: Option<String>,
    /// The netdev's `phys_switch_id`; `None` leaves the file out.
    pub phys_switch_id: Option<String>,
}

impl Default for PfSpec {
    fn default() -> Self {
        PfSpec {
            bdf: DEFAULT_PF_BDF.to_owned(),
            vendor: INTEL,
            device: 0x1572,
            subsystem_vendor: INTEL,
            subsystem_device: 0x0000,
            class: CLASS_ETHERNET,
            driver: Some("i40e".to_owned()),
            numa_node: -1,
            iommu_group: None,
            total_vfs: 64,
            vf_device: 0x154c,
            vf_offset: 16,
            vf_stride: 1,
            ifname: Some("ens1f0".to_owned()),
            mac: None,
            phys_port_name: None,
            phys_switch_id: None,
        }
    }
}

impl PfSpec {
    /// A ConnectX-5 PF (15b3:1017, `mlx5_core`, VFs 15b3:1018 at offset 2)
    /// in switchdev mode: its netdev is the uplink representor `p0`.
    pub fn connectx5() -> Self {
        PfSpec {
            vendor: MELLANOX,
            device: 0x1017,
            subsystem_vendor: MELLANOX,
            subsystem_device: 0x0007,
            driver: Some("mlx5_core".to_owned()),
            total_vfs: 8,
            vf_device: 0x1018,
            vf_offset: 2,
            ifname: Some("enp59s0f0np0".to_owned()),
            phys_port_name: Some("p0".to_owned()),
            phys_switch_id: Some(DEFAULT_SWITCH_ID.to_owned()),
            ..PfSpec::default()
        }
    }
}

/// A virtual function. `Default` is an X710 VF (8086:154c, `iavf`, no
/// netdev); the address is derived from the PF's offset and stride.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfSpec {
    /// PCI address; `None` computes it like the kernel (`pci_iov_virtfn_bus`
    /// / `pci_iov_virtfn_devfn`): PF routing id + offset + stride * index.
    pub bdf: Option<String>,
    /// `vendor`.
    pub vendor: u16,
    /// `device`.
    pub device: u16,
    /// `subsystem_vendor`.
    pub subsystem_vendor: u16,
    /// `subsystem_device`.
    pub subsystem_device: u16,
    /// `class`.
    pub class: u32,
    /// Bound driver: `iavf`, `mlx5_core`, `vfio-pci`, or `None` (unbound).
    pub driver: Option<String>,
    /// `numa_node`; `None` copies the PF's (VFs share the PF's node).
    pub numa_node: Option<i32>,
    /// `iommu_group`; `None` picks a fresh group (VFs get their own group
    /// when ACS is in place, the usual case for SR-IOV).
    pub iommu_group: Option<u32>,
    /// The VF's netdev, if its driver made one (not for `vfio-pci`).
    pub ifname: Option<String>,
    /// The netdev's MAC; `None` derives one from its ifindex.
    pub mac: Option<String>,
}

impl Default for VfSpec {
    fn default() -> Self {
        VfSpec {
            bdf: None,
            vendor: INTEL,
            device: 0x154c,
            subsystem_vendor: INTEL,
            subsystem_device: 0x0000,
            class: CLASS_ETHERNET,
            driver: Some("iavf".to_owned()),
            numa_node: None,
            iommu_group: None,
            ifname: None,
            mac: None,
        }
    }
}

impl VfSpec {
    /// A ConnectX-5 VF (15b3:1018, `mlx5_core`).
    pub fn connectx5() -> Self {
        VfSpec {
            vendor: MELLANOX,
            device: 0x1018,
            subsystem_vendor: MELLANOX,
            subsystem_device: 0x0080,
            driver: Some("mlx5_core".to_owned()),
            ..VfSpec::default()
        }
    }
}

/// A network device under some PCI device's `net/` (Documentation/ABI/
/// testing/sysfs-class-net).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetdevSpec {
    /// Interface name.
    pub ifname: String,
    /// `address`; `None` derives `02:00:00:00:XX:XX` from the ifindex.
    pub mac: Option<String>,
    /// `mtu`.
    pub mtu: u32,
    /// `operstate` (RFC 2863 word: `up`, `down`, `unknown`, ...).
    pub operstate: String,
    /// `ifindex`; `None` picks a fresh one (from 100 up, per tree).
    pub ifindex: Option<u32>,
    /// `phys_port_name`; `None` leaves the file out.
    pub phys_port_name: Option<String>,
    /// `phys_switch_id`; `None` leaves the file out.
    pub phys_switch_id: Option<String>,
}

impl Default for NetdevSpec {
    fn default() -> Self {
        NetdevSpec {
            ifname: String::new(),
            mac: None,
            mtu: 1500,
            operstate: "up".to_owned(),
            ifindex: None,
            phys_port_name: None,
            phys_switch_id: None,
        }
    }
}

/// A switchdev representor netdev of a PF (mlx5, ice, ...): it sits in the
/// PF's `net/` and carries the eswitch's `phys_switch_id` and a
/// `phys_port_name` that says what it represents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepresentorSpec {
    /// Interface name.
    pub ifname: String,
    /// `pf<P>vf<V>` for a VF representor, `p<N>` for an uplink,
    /// `pf<P>` for the PF representor (`devlink_port` naming,
    /// net/devlink/port.c `__devlink_port_phys_port_name_get`).
    pub phys_port_name: String,
    /// `phys_switch_id`, shared by all ports of one eswitch.
    pub phys_switch_id: String,
    /// `address`; `None` derives one.
    pub mac: Option<String>,
}

impl RepresentorSpec {
    /// The representor of VF `vf` of PF number `pf`.
    pub fn vf(ifname: &str, pf: u32, vf: u32) -> Self {
        RepresentorSpec {
            ifname: ifname.to_owned(),
            phys_port_name: format!("pf{pf}vf{vf}"),
            phys_switch_id: DEFAULT_SWITCH_ID.to_owned(),
            mac: None,
        }
    }

    /// The uplink representor of physical port `port`.
    pub fn uplink(ifname: &str, port: u32) -> Self {
        RepresentorSpec {
            ifname: ifname.to_owned(),
            phys_port_name: format!("p{port}"),
            phys_switch_id: DEFAULT_SWITCH_ID.to_owned(),
            mac: None,
        }
    }
}

/// A device that was placed in a [`FakeSysfs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDev {
    /// Its PCI address.
    pub bdf: String,
    /// Its real directory, `<root>/devices/pci0000:00/<BDF>`.
    pub dir: PathBuf,
}

impl PciDev {
    /// Path of one attribute file in the device directory.
    pub fn attr(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory of one of its netdevs, `<dir>/net/<ifname>`.
    pub fn netdev_dir(&self, ifname: &str) -> PathBuf {
        self.dir.join("net").join(ifname)
    }
}

/// A fake `/sys` in a temp dir, removed on drop. All methods take `&self`
/// and panic with the path involved if the file system refuses (a test
/// bug, as nothing else writes into the temp dir).
#[derive(Debug)]
pub struct FakeSysfs {
    dir: TempDir,
    next_iommu_group: AtomicU32,
    next_ifindex: AtomicU32,
}

impl Default for FakeSysfs {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeSysfs {
    /// An empty tree with the top-level directories in place.
    ///
    /// # Panics
    ///
    /// If no temp dir can be created.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("plx-sysfs-")
            .tempdir()
            .unwrap_or_else(|e| panic!("create fake sysfs temp dir: {e}"));
        let fake = FakeSysfs {
            dir,
            next_iommu_group: AtomicU32::new(10),
            next_ifindex: AtomicU32::new(100),
        };
        for d in [
            "bus/pci/devices",
            "bus/pci/drivers",
            "class/net",
            "kernel/iommu_groups",
            PCI_ROOT,
        ] {
            mkdir(&fake.root().join(d));
        }
        fake
    }

    /// The tree's root: pass it wherever code takes a `sysfs_root`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `<root>/devices/pci0000:00/<BDF>`, whether or not it exists.
    pub fn device_dir(&self, bdf: &str) -> PathBuf {
        self.root().join(PCI_ROOT).join(bdf)
    }

    /// `<root>/bus/pci/devices/<BDF>`, the link discovery code walks.
    pub fn bus_device(&self, bdf: &str) -> PathBuf {
        self.root().join("bus/pci/devices").join(bdf)
    }

    /// `<root>/class/net/<ifname>`.
    pub fn class_net(&self, ifname: &str) -> PathBuf {
        self.root().join("class/net").join(ifname)
    }

    /// Adds a physical function with its netdev (if any) and SR-IOV
    /// capability files; VFs come with [`FakeSysfs::vf`].
    ///
    /// # Panics
    ///
    /// On a malformed BDF, a device already present, or an I/O error.
    pub fn pf(&self, spec: PfSpec) -> PciDev {
        parse_bdf(&spec.bdf);
        let dev = self.pci_device(&PciIds {
            bdf: &spec.bdf,
            vendor: spec.vendor,
            device: spec.device,
            subsystem_vendor: spec.subsystem_vendor,
            subsystem_device: spec.subsystem_device,
            class: spec.class,
            driver: spec.driver.as_deref(),
            numa_node: spec.numa_node,
            iommu_group: spec.iommu_group,
        });
        if spec.total_vfs > 0 {
            // sysfs-bus-pci: sriov_totalvfs, sriov_numvfs, sriov_offset,
            // sriov_stride, sriov_vf_device (hex, no 0x, drivers/pci/iov.c
            // sriov_vf_device_show), sriov_drivers_autoprobe.
            write(
                &dev.attr("sriov_totalvfs"),
                &format!("{}\n", spec.total_vfs),
            );
            write(&dev.attr("sriov_numvfs"), "0\n");
            write(&dev.attr("sriov_offset"), &format!("{}\n", spec.vf_offset));
            write(&dev.attr("sriov_stride"), &format!("{}\n", spec.vf_stride));
            write(
                &dev.attr("sriov_vf_device"),
                &format!("{:x}\n", spec.vf_device),
            );
            write(&dev.attr("sriov_drivers_autoprobe"), "1\n");
        }
        if let Some(ifname) = spec.ifname {
            self.add_netdev(
                &spec.bdf,
                NetdevSpec {
                    ifname,
                    mac: spec.mac,
                    phys_port_name: spec.phys_port_name,
                    phys_switch_id: spec.phys_switch_id,
                    ..NetdevSpec::default()
                },
            );
        }
        dev
    }

    /// Marks the PF at `bdf` as emulated for the `sriov` CNI plugin: an
    /// empty VF-attribute state file, `plexus_emulated_vfs.json`, in its
    /// directory (the plugin's emulated PF keeps `ip link set PF vf N ...`
    /// settings there; a real `/sys` never has the file). Returns its path.
    ///
    /// # Panics
    /// If the PF is missing.
    pub fn emulate_pf(&self, bdf: &str) -> PathBuf {
        let dir = self.device_dir(bdf);
        assert!(dir.is_dir(), "no PF {bdf} in the fake sysfs");
        let path = dir.join("plexus_emulated_vfs.json");
        write(&path, "");
        path
    }

    /// Adds VF number `index` of the PF at `pf_bdf`: the device, its
    /// `physfn` link, the PF's `virtfn<index>` link and an updated
    /// `sriov_numvfs` (the number of VFs present).
    ///
    /// # Panics
    ///
    /// If the PF is missing, `index` is not below `sriov_totalvfs`, the VF
    /// exists already, or on an I/O error.
    pub fn vf(&self, pf_bdf: &str, index: u32, spec: VfSpec) -> PciDev {
        let pf_dir = self.device_dir(pf_bdf);
        let total: u32 = self
            .read_attr(pf_bdf, "sriov_totalvfs")
            .parse()
            .unwrap_or_else(|e| {
                panic!("PF {pf_bdf} has no usable sriov_totalvfs (not a PF?): {e}")
            });
        assert!(
            index < total,
            "VF index {index} out of range for PF {pf_bdf} (sriov_totalvfs {total})"
        );
        let bdf = spec.bdf.unwrap_or_else(|| {
            let offset = self.read_attr(pf_bdf, "sriov_offset").parse().unwrap();
            let stride = self.read_attr(pf_bdf, "sriov_stride").parse().unwrap();
            vf_bdf(pf_bdf, offset, stride, index)
        });
        let numa_node = spec
            .numa_node
            .unwrap_or_else(|| self.read_attr(pf_bdf, "numa_node").parse().unwrap());
        let dev = self.pci_device(&PciIds {
            bdf: &bdf,
            vendor: spec.vendor,
            device: spec.device,
            subsystem_vendor: spec.subsystem_vendor,
            subsystem_device: spec.subsystem_device,
            class: spec.class,
            driver: spec.driver.as_deref(),
            numa_node,
            iommu_group: spec.iommu_group,
        });
        // sysfs-bus-pci: physfn / virtfnN, links between siblings.
        link(&format!("../{pf_bdf}"), &dev.attr("physfn"));
        link(&format!("../{bdf}"), &pf_dir.join(format!("virtfn{index}")));
        let numvfs = fs::read_dir(&pf_dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", pf_dir.display()))
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("virtfn"))
            })
            .count();
        write(&pf_dir.join("sriov_numvfs"), &format!("{numvfs}\n"));
        if let Some(ifname) = spec.ifname {
            self.add_netdev(
                &bdf,
                NetdevSpec {
                    ifname,
                    mac: spec.mac,
                    ..NetdevSpec::default()
                },
            );
        }
        dev
    }

    /// Adds a netdev to the device at `bdf`: `net/<ifname>/` with its
    /// attributes and `device` link, and `class/net/<ifname>`. Returns the
    /// netdev directory.
    ///
    /// # Panics
    ///
    /// If the device is missing, the name is taken, or on an I/O error.
    pub fn add_netdev(&self, bdf: &str, spec: NetdevSpec) -> PathBuf {
        self.netdev_under(bdf, &format!("../../../{bdf}"), spec)
    }

    /// A netdev under the device at `<root>/devices/pci0000:00/<rel>`
    /// (`<BDF>` or `<BDF>/<aux device>`), its `device` link `device_link`.
    fn netdev_under(&self, rel: &str, device_link: &str, spec: NetdevSpec) -> PathBuf {
        let bdf = rel;
        let dev_dir = self.device_dir(bdf);
        assert!(dev_dir.is_dir(), "no device {bdf} in fake sysfs");
        assert!(
            !spec.ifname.is_empty() && !spec.ifname.contains('/'),
            "bad interface name {:?}",
            spec.ifname
        );
        let dir = dev_dir.join("net").join(&spec.ifname);
        let class = self.class_net(&spec.ifname);
        assert!(
            !dir.exists() && class.symlink_metadata().is_err(),
            "netdev {} already exists in fake sysfs",
            spec.ifname
        );
        mkdir(&dir);
        let ifindex = spec
            .ifindex
            .unwrap_or_else(|| self.next_ifindex.fetch_add(1, Ordering::Relaxed));
        let mac = spec.mac.unwrap_or_else(|| {
            format!(
                "02:00:00:00:{:02x}:{:02x}",
                (ifindex >> 8) & 0xff,
                ifindex & 0xff
            )
        });
        // sysfs-class-net: address, operstate, mtu, ifindex, one value per
        // line (net/core/net-sysfs.c).
        write(&dir.join("address"), &format!("{mac}\n"));
        write(&dir.join("operstate"), &format!("{}\n", spec.operstate));
        write(&dir.join("mtu"), &format!("{}\n", spec.mtu));
        write(&dir.join("ifindex"), &format!("{ifindex}\n"));
        // type: the ARPHRD_* link type, 1 for Ethernet (if_arp.h).
        write(&dir.join("type"), "1\n");
        // sysfs-class-net: phys_port_name / phys_switch_id read as
        // EOPNOTSUPP when the driver lacks the ndo; absent here.
        if let Some(name) = spec.phys_port_name {
            write(&dir.join("phys_port_name"), &format!("{name}\n"));
        }
        if let Some(id) = spec.phys_switch_id {
            write(&dir.join("phys_switch_id"), &format!("{id}\n"));
        }
        link(device_link, &dir.join("device"));
        link(
            &format!("../../{PCI_ROOT}/{bdf}/net/{}", spec.ifname),
            &class,
        );
        dir
    }

    /// Adds subfunction `mlx5_core.sf.<id>` under the PF at `pf_bdf`, as
    /// mlx5's SF driver shows one: an auxiliary device (its `id` is the
    /// auxiliary bus's, not the SF number) with `sfnum`, a netdev when
    /// `ifname` is given, and an RDMA device `mlx5_<id>` with
    /// `uverbs<id>` when `rdma` is set. Returns the auxiliary device name.
    ///
    /// # Panics
    ///
    /// If the PF is missing or the SF exists, or on an I/O error.
    pub fn sf(
        &self,
        pf_bdf: &str,
        id: u32,
        sfnum: u32,
        ifname: Option<&str>,
        rdma: bool,
    ) -> String {
        let name = format!("mlx5_core.sf.{id}");
        let rel = format!("{pf_bdf}/{name}");
        let dir = self.device_dir(&rel);
        assert!(
            self.device_dir(pf_bdf).is_dir(),
            "no device {pf_bdf} in fake sysfs"
        );
        assert!(!dir.exists(), "{name} already exists in fake sysfs");
        mkdir(&dir);
        write(&dir.join("sfnum"), &format!("{sfnum}\n"));
        mkdir(&self.root().join("bus/auxiliary/devices"));
        link(
            &format!("../../../{PCI_ROOT}/{rel}"),
            &self.root().join("bus/auxiliary/devices").join(&name),
        );
        if let Some(ifname) = ifname {
            self.netdev_under(
                &rel,
                "../..",
                NetdevSpec {
                    ifname: ifname.to_owned(),
                    ..NetdevSpec::default()
                },
            );
        }
        if rdma {
            mkdir(&dir.join(format!("infiniband/mlx5_{id}")));
            mkdir(&dir.join(format!("infiniband_verbs/uverbs{id}")));
        }
        name
    }

    /// Gives the device at `bdf` the RDMA device `name` with its character
    /// devices numbered `uverbs` (`infiniband/<name>/`,
    /// `infiniband_verbs/uverbs<N>/`, `infiniband_mad/umad<N>/` and
    /// `issm<N>/`), as mlx5_ib adds one to every mlx5 PCI function.
    ///
    /// # Panics
    ///
    /// If the device is missing or on an I/O error.
    pub fn add_rdma(&self, bdf: &str, name: &str, uverbs: u32) {
        let dir = self.device_dir(bdf);
        assert!(dir.is_dir(), "no device {bdf} in fake sysfs");
        mkdir(&dir.join("infiniband").join(name));
        mkdir(&dir.join(format!("infiniband_verbs/uverbs{uverbs}")));
        mkdir(&dir.join(format!("infiniband_mad/umad{uverbs}")));
        mkdir(&dir.join(format!("infiniband_mad/issm{uverbs}")));
    }

    /// Gives the device at `bdf` the UIO device `uio<n>` (`uio/uio<n>/`),
    /// as `uio_pci_generic` or `igb_uio` make one when they bind.
    ///
    /// # Panics
    ///
    /// If the device is missing or on an I/O error.
    pub fn add_uio(&self, bdf: &str, n: u32) {
        let dir = self.device_dir(bdf);
        assert!(dir.is_dir(), "no device {bdf} in fake sysfs");
        mkdir(&dir.join(format!("uio/uio{n}")));
    }

    /// Takes the RDMA devices of `bdf` off the host, as the kernel does
    /// when one moves to a pod's netns while the RDMA subsystem is in
    /// exclusive netns mode (`rdma system set netns exclusive`): the
    /// device's `infiniband/`, `infiniband_verbs/` and `infiniband_mad/`
    /// become empty.
    ///
    /// # Panics
    ///
    /// If the device has no RDMA device, or on an I/O error.
    pub fn hide_rdma(&self, bdf: &str) {
        let dir = self.device_dir(bdf);
        for sub in ["infiniband", "infiniband_verbs", "infiniband_mad"] {
            let d = dir.join(sub);
            let entries: Vec<_> = match fs::read_dir(&d) {
                Ok(rd) => rd.flatten().collect(),
                Err(_) if sub != "infiniband" => continue,
                Err(e) => panic!("{bdf} has no {sub}/: {e}"),
            };
            for e in entries {
                fs::remove_dir_all(e.path())
                    .unwrap_or_else(|err| panic!("remove {}: {err}", e.path().display()));
            }
        }
    }

    /// Emulates devlink's `enable_rdma` parameter of the device at `bdf`
    /// (mlx5 registers a devlink instance per PF and per VF): the
    /// file `plexus_emulated_devlink.json` in its directory, which the
    /// device plugin reads instead of the kernel's devlink (a real `/sys`
    /// never has the file).
    ///
    /// # Panics
    /// If the device is missing.
    pub fn devlink_enable_rdma(&self, bdf: &str, on: bool) {
        let dir = self.device_dir(bdf);
        assert!(dir.is_dir(), "no device {bdf} in the fake sysfs");
        write(
            &dir.join("plexus_emulated_devlink.json"),
            &format!("{{\"enable_rdma\": {on}}}"),
        );
    }

    /// Adds a switchdev representor netdev under the PF at `pf_bdf`.
    /// Returns the netdev directory.
    ///
    /// # Panics
    ///
    /// As [`FakeSysfs::add_netdev`].
    pub fn switchdev_representor(&self, pf_bdf: &str, spec: RepresentorSpec) -> PathBuf {
        self.add_netdev(
            pf_bdf,
            NetdevSpec {
                ifname: spec.ifname,
                mac: spec.mac,
                phys_port_name: Some(spec.phys_port_name),
                phys_switch_id: Some(spec.phys_switch_id),
                ..NetdevSpec::default()
            },
        )
    }

    /// Removes the netdev `ifname` of `bdf` (as when it moves to another
    /// netns or its driver unbinds): its directory and `class/net` link.
    ///
    /// # Panics
    ///
    /// If it does not exist.
    pub fn remove_netdev(&self, bdf: &str, ifname: &str) {
        let dir = self.device_dir(bdf).join("net").join(ifname);
        fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
        let class = self.class_net(ifname);
        fs::remove_file(&class).unwrap_or_else(|e| panic!("remove {}: {e}", class.display()));
    }

    /// Overwrites (or creates) attribute `file` of `bdf` with `contents`,
    /// verbatim (no newline added): for garbage, empty or missing-newline
    /// cases. `file` may be a relative path such as `net/eth0/address`.
    ///
    /// # Panics
    ///
    /// If the device is missing or on an I/O error.
    pub fn corrupt(&self, bdf: &str, file: &str, contents: &str) {
        let dev = self.device_dir(bdf);
        assert!(dev.is_dir(), "no device {bdf} in fake sysfs");
        write(&dev.join(file), contents);
    }

    /// Removes attribute `file` of `bdf` (a file or a link).
    ///
    /// # Panics
    ///
    /// If it does not exist.
    pub fn remove_attr(&self, bdf: &str, file: &str) {
        let path = self.device_dir(bdf).join(file);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }

    /// Rebinds `bdf` to `driver` (`None`: unbinds): moves the `driver` link
    /// and the driver directory's back link, as `unbind` + `bind` would.
    ///
    /// # Panics
    ///
    /// If the device is missing or on an I/O error.
    pub fn set_driver(&self, bdf: &str, driver: Option<&str>) {
        let dev = self.device_dir(bdf);
        assert!(dev.is_dir(), "no device {bdf} in fake sysfs");
        let link_path = dev.join("driver");
        if let Ok(old) = fs::read_link(&link_path) {
            let old_name = old.file_name().unwrap().to_owned();
            let back = self.root().join("bus/pci/drivers").join(old_name).join(bdf);
            let _ = fs::remove_file(back);
            fs::remove_file(&link_path)
                .unwrap_or_else(|e| panic!("remove {}: {e}", link_path.display()));
        }
        if let Some(driver) = driver {
            self.bind(bdf, driver);
        }
    }

    /// Reads attribute `file` of `bdf`, trimmed.
    ///
    /// # Panics
    ///
    /// If it cannot be read.
    pub fn read_attr(&self, bdf: &str, file: &str) -> String {
        let path = self.device_dir(bdf).join(file);
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// The reference fixture (an Intel X710 with four VFs): PF
    /// `0000:3b:00.0` (`i40e`, netdev `ens1f0`, NUMA 0, IOMMU group 40),
    /// VF0 `0000:3b:02.0` on `vfio-pci` (no netdev, group 90), VF1–3
    /// `0000:3b:02.1`–`.3` on `iavf` (netdevs `ens1f0v1`–`v3`, groups
    /// 91–93). Returns the PF and the VFs.
    ///
    /// # Panics
    ///
    /// As [`FakeSysfs::pf`] and [`FakeSysfs::vf`], e.g. when called twice.
    pub fn x710(&self) -> (PciDev, Vec<PciDev>) {
        let pf = self.pf(PfSpec {
            numa_node: 0,
            iommu_group: Some(40),
            subsystem_device: 0x0001,
            ..PfSpec::default()
        });
        let vfs = (0..4)
            .map(|i| {
                self.vf(
                    DEFAULT_PF_BDF,
                    i,
                    VfSpec {
                        driver: Some(if i == 0 { "vfio-pci" } else { "iavf" }.to_owned()),
                        iommu_group: Some(90 + i),
                        ifname: (i > 0).then(|| format!("ens1f0v{i}")),
                        ..VfSpec::default()
                    },
                )
            })
            .collect();
        (pf, vfs)
    }

    /// The common part of PFs and VFs.
    fn pci_device(&self, ids: &PciIds<'_>) -> PciDev {
        parse_bdf(ids.bdf);
        let dir = self.device_dir(ids.bdf);
        assert!(!dir.exists(), "device {} already in fake sysfs", ids.bdf);
        mkdir(&dir);
        mkdir(&dir.join("net"));
        // sysfs-bus-pci / pci-sysfs.c: vendor, device, subsystem_* are
        // "0x%04x\n", class is "0x%06x\n", numa_node "%d\n".
        write(&dir.join("vendor"), &format!("0x{:04x}\n", ids.vendor));
        write(&dir.join("device"), &format!("0x{:04x}\n", ids.device));
        write(
            &dir.join("subsystem_vendor"),
            &format!("0x{:04x}\n", ids.subsystem_vendor),
        );
        write(
            &dir.join("subsystem_device"),
            &format!("0x{:04x}\n", ids.subsystem_device),
        );
        write(&dir.join("class"), &format!("0x{:06x}\n", ids.class));
        write(&dir.join("numa_node"), &format!("{}\n", ids.numa_node));
        // pci-sysfs.c modalias_show: "pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X\n".
        write(
            &dir.join("modalias"),
            &format!(
                "pci:v{:08X}d{:08X}sv{:08X}sd{:08X}bc{:02X}sc{:02X}i{:02X}\n",
                ids.vendor,
                ids.device,
                ids.subsystem_vendor,
                ids.subsystem_device,
                (ids.class >> 16) & 0xff,
                (ids.class >> 8) & 0xff,
                ids.class & 0xff,
            ),
        );
        // sysfs-bus-pci: driver_override shows "(null)" when unset.
        write(&dir.join("driver_override"), "(null)\n");
        link(
            &format!("../../../{PCI_ROOT}/{}", ids.bdf),
            &self.bus_device(ids.bdf),
        );
        if let Some(driver) = ids.driver {
            self.bind(ids.bdf, driver);
        }
        // drivers/iommu/iommu.c: the device's iommu_group link and the
        // group's devices/ back link.
        let group = ids
            .iommu_group
            .unwrap_or_else(|| self.next_iommu_group.fetch_add(1, Ordering::Relaxed));
        let group_dir = self.root().join(format!("kernel/iommu_groups/{group}"));
        mkdir(&group_dir.join("devices"));
        link(
            &format!("../../../kernel/iommu_groups/{group}"),
            &dir.join("iommu_group"),
        );
        link(
            &format!("../../../../{PCI_ROOT}/{}", ids.bdf),
            &group_dir.join("devices").join(ids.bdf),
        );
        PciDev {
            bdf: ids.bdf.to_owned(),
            dir,
        }
    }

    /// Links `bdf` and `driver` both ways, creating the driver directory
    /// with its (write-only in the kernel, plain files here) `bind`,
    /// `unbind` and `new_id` so code that writes them succeeds.
    fn bind(&self, bdf: &str, driver: &str) {
        let drv_dir = self.root().join("bus/pci/drivers").join(driver);
        if !drv_dir.is_dir() {
            mkdir(&drv_dir);
            for f in ["bind", "unbind", "new_id", "remove_id"] {
                write(&drv_dir.join(f), "");
            }
        }
        link(
            &format!("../../../bus/pci/drivers/{driver}"),
            &self.device_dir(bdf).join("driver"),
        );
        link(&format!("../../../../{PCI_ROOT}/{bdf}"), &drv_dir.join(bdf));
    }
}

/// What [`FakeSysfs::pci_device`] needs from either spec.
struct PciIds<'a> {
    bdf: &'a str,
    vendor: u16,
    device: u16,
    subsystem_vendor: u16,
    subsystem_device: u16,
    class: u32,
    driver: Option<&'a str>,
    numa_node: i32,
    iommu_group: Option<u32>,
}

/// Splits `DDDD:BB:DD.F` into (domain, bus, device, function).
///
/// # Panics
///
/// If `bdf` is not of that form.
fn parse_bdf(bdf: &str) -> (u32, u8, u8, u8) {
    let parse = || -> Option<(u32, u8, u8, u8)> {
        let (domain, rest) = bdf.split_once(':')?;
        let (bus, rest) = rest.split_once(':')?;
        let (dev, func) = rest.split_once('.')?;
        if domain.len() != 4 || bus.len() != 2 || dev.len() != 2 || func.len() != 1 {
            return None;
        }
        let dev = u8::from_str_radix(dev, 16).ok().filter(|d| *d < 32)?;
        let func = u8::from_str_radix(func, 16).ok().filter(|f| *f < 8)?;
        Some((
            u32::from_str_radix(domain, 16).ok()?,
            u8::from_str_radix(bus, 16).ok()?,
            dev,
            func,
        ))
    };
    parse().unwrap_or_else(|| panic!("malformed PCI address {bdf:?}, want DDDD:BB:DD.F"))
}

/// The address of VF `index` (drivers/pci/iov.c `pci_iov_virtfn_bus` and
/// `pci_iov_virtfn_devfn`): routing id = PF's (bus << 8 | devfn) + offset +
/// stride * index, same domain.
///
/// # Panics
///
/// If `pf_bdf` is malformed or the VF would fall off the last bus.
pub fn vf_bdf(pf_bdf: &str, offset: u16, stride: u16, index: u32) -> String {
    let (domain, bus, dev, func) = parse_bdf(pf_bdf);
    let rid = (u32::from(bus) << 8) | (u32::from(dev) << 3) | u32::from(func);
    let vf = rid + u32::from(offset) + u32::from(stride) * index;
    assert!(
        vf <= 0xffff,
        "VF {index} of {pf_bdf} falls off the last bus"
    );
    format!(
        "{domain:04x}:{:02x}:{:02x}.{:x}",
        vf >> 8,
        (vf >> 3) & 0x1f,
        vf & 0x7
    )
}

fn mkdir(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
}

fn write(path: &Path, contents: &str) {
    if let Some(parent) = path.parent() {
        mkdir(parent);
    }
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn link(target: &str, at: &Path) {
    symlink(target, at).unwrap_or_else(|e| panic!("symlink {} -> {target}: {e}", at.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(p: impl AsRef<Path>) -> PathBuf {
        fs::canonicalize(p.as_ref())
            .unwrap_or_else(|e| panic!("canonicalize {}: {e}", p.as_ref().display()))
    }

    fn x710_with_two_vfs() -> (FakeSysfs, PciDev, PciDev, PciDev) {
        let fs = FakeSysfs::new();
        let pf = fs.pf(PfSpec {
            numa_node: 1,
            ..PfSpec::default()
        });
        let vf0 = fs.vf(
            &pf.bdf,
            0,
            VfSpec {
                ifname: Some("ens1f0v0".into()),
                ..VfSpec::default()
            },
        );
        let vf1 = fs.vf(
            &pf.bdf,
            1,
            VfSpec {
                driver: Some("vfio-pci".into()),
                ..VfSpec::default()
            },
        );
        (fs, pf, vf0, vf1)
    }

    #[test]
    fn x710_links_resolve() {
        let (fs, pf, vf0, vf1) = x710_with_two_vfs();
        let root = canon(fs.root());
        // bus/pci/devices/<BDF> is the real device directory.
        assert_eq!(canon(fs.bus_device(&pf.bdf)), canon(&pf.dir));
        assert_eq!(canon(&pf.dir), root.join("devices/pci0000:00/0000:3b:00.0"));
        // Derived VF addresses: offset 16, stride 1 from 3b:00.0.
        assert_eq!(vf0.bdf, "0000:3b:02.0");
        assert_eq!(vf1.bdf, "0000:3b:02.1");
        // physfn / virtfnN point at each other.
        assert_eq!(canon(vf0.attr("physfn")), canon(&pf.dir));
        assert_eq!(canon(vf1.attr("physfn")), canon(&pf.dir));
        assert_eq!(canon(pf.attr("virtfn0")), canon(&vf0.dir));
        assert_eq!(canon(pf.attr("virtfn1")), canon(&vf1.dir));
        assert_eq!(
            fs::read_link(pf.attr("virtfn1")).unwrap(),
            Path::new("../0000:3b:02.1")
        );
        // Drivers and their back links.
        assert_eq!(canon(pf.attr("driver")), root.join("bus/pci/drivers/i40e"));
        assert_eq!(canon(vf0.attr("driver")), root.join("bus/pci/drivers/iavf"));
        assert_eq!(
            canon(vf1.attr("driver")),
            root.join("bus/pci/drivers/vfio-pci")
        );
        assert_eq!(
            canon(root.join("bus/pci/drivers/vfio-pci").join(&vf1.bdf)),
            canon(&vf1.dir)
        );
        // IOMMU groups, distinct per device, with back links.
        let g0 = canon(vf0.attr("iommu_group"));
        let g1 = canon(vf1.attr("iommu_group"));
        assert_ne!(g0, g1);
        assert_eq!(canon(g1.join("devices").join(&vf1.bdf)), canon(&vf1.dir));
        // class/net works for PF and VF netdevs, and device points back.
        assert_eq!(
            canon(fs.class_net("ens1f0")),
            canon(pf.netdev_dir("ens1f0"))
        );
        assert_eq!(
            canon(fs.class_net("ens1f0v0")),
            canon(vf0.netdev_dir("ens1f0v0"))
        );
        assert_eq!(canon(fs.class_net("ens1f0").join("device")), canon(&pf.dir));
        // The walk a device plugin does: netdev -> device -> virtfn1 -> driver.
        assert_eq!(
            canon(fs.class_net("ens1f0").join("device/virtfn1/driver")),
            root.join("bus/pci/drivers/vfio-pci")
        );
        assert!(!vf1.dir.join("net").read_dir().unwrap().any(|_| true));
    }

    #[test]
    fn x710_attribute_contents() {
        let (fs, pf, vf0, _vf1) = x710_with_two_vfs();
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        assert_eq!(read(pf.attr("vendor")), "0x8086\n");
        assert_eq!(read(pf.attr("device")), "0x1572\n");
        assert_eq!(read(vf0.attr("device")), "0x154c\n");
        assert_eq!(read(pf.attr("class")), "0x020000\n");
        assert_eq!(
            read(vf0.attr("modalias")),
            "pci:v00008086d0000154Csv00008086sd00000000bc02sc00i00\n"
        );
        assert_eq!(read(pf.attr("sriov_totalvfs")), "64\n");
        assert_eq!(read(pf.attr("sriov_numvfs")), "2\n");
        assert_eq!(read(pf.attr("sriov_vf_device")), "154c\n");
        assert_eq!(read(pf.attr("numa_node")), "1\n");
        assert_eq!(read(vf0.attr("numa_node")), "1\n", "VF inherits PF node");
        let net = vf0.netdev_dir("ens1f0v0");
        assert_eq!(read(net.join("operstate")), "up\n");
        assert_eq!(read(net.join("mtu")), "1500\n");
        let mac = read(net.join("address"));
        assert!(
            mac.starts_with("02:00:00:00:") && mac.ends_with('\n'),
            "{mac:?}"
        );
        assert!(!net.join("phys_port_name").exists());
        assert_eq!(fs.read_attr(&pf.bdf, "driver_override"), "(null)");
    }

    #[test]
    fn switchdev_representors_and_mutations() {
        let fs = FakeSysfs::new();
        let pf = fs.pf(PfSpec::connectx5());
        let vf = fs.vf(&pf.bdf, 3, VfSpec::connectx5());
        assert_eq!(vf.bdf, "0000:3b:00.5", "offset 2 + 3");
        let rep = fs.switchdev_representor(&pf.bdf, RepresentorSpec::vf("pf0vf3", 0, 3));
        assert_eq!(canon(fs.class_net("pf0vf3")), canon(&rep));
        assert_eq!(
            fs::read_to_string(rep.join("phys_port_name")).unwrap(),
            "pf0vf3\n"
        );
        let uplink = pf.netdev_dir("enp59s0f0np0");
        assert_eq!(
            fs::read_to_string(uplink.join("phys_port_name")).unwrap(),
            "p0\n"
        );
        assert_eq!(
            fs::read_to_string(uplink.join("phys_switch_id")).unwrap(),
            fs::read_to_string(rep.join("phys_switch_id")).unwrap()
        );
        assert_eq!(fs.read_attr(&pf.bdf, "sriov_numvfs"), "1");

        fs.corrupt(&pf.bdf, "sriov_totalvfs", "banana");
        assert_eq!(fs.read_attr(&pf.bdf, "sriov_totalvfs"), "banana");
        fs.remove_attr(&vf.bdf, "physfn");
        assert!(vf.attr("physfn").symlink_metadata().is_err());

        fs.set_driver(&vf.bdf, Some("vfio-pci"));
        assert!(canon(vf.attr("driver")).ends_with("bus/pci/drivers/vfio-pci"));
        assert!(
            fs.root()
                .join("bus/pci/drivers/mlx5_core")
                .join(&vf.bdf)
                .symlink_metadata()
                .is_err()
        );
        fs.set_driver(&vf.bdf, None);
        assert!(vf.attr("driver").symlink_metadata().is_err());

        fs.remove_netdev(&pf.bdf, "pf0vf3");
        assert!(!rep.exists());
        assert!(fs.class_net("pf0vf3").symlink_metadata().is_err());
    }

    #[test]
    fn vf_addresses_follow_offset_and_stride() {
        assert_eq!(vf_bdf("0000:3b:00.0", 16, 1, 0), "0000:3b:02.0");
        assert_eq!(vf_bdf("0000:3b:00.0", 16, 1, 9), "0000:3b:03.1");
        assert_eq!(vf_bdf("0000:3b:00.1", 0x7f, 2, 1), "0000:3b:10.2");
        assert_eq!(vf_bdf("0001:ff:1f.0", 0, 1, 7), "0001:ff:1f.7");
    }

    #[test]
    #[should_panic(expected = "malformed PCI address")]
    fn malformed_bdf_panics() {
        FakeSysfs::new().pf(PfSpec {
            bdf: "3b:00.0".into(),
            ..PfSpec::default()
        });
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn vf_index_beyond_total_panics() {
        let fs = FakeSysfs::new();
        let pf = fs.pf(PfSpec {
            total_vfs: 2,
            ..PfSpec::default()
        });
        fs.vf(&pf.bdf, 2, VfSpec::default());
    }

    #[test]
    fn tree_is_removed_on_drop() {
        let fs = FakeSysfs::new();
        let root = fs.root().to_owned();
        fs.pf(PfSpec::default());
        drop(fs);
        assert!(!root.exists());
    }
}
