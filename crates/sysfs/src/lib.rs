//! PCI and network devices as sysfs shows them, under an injectable root
//! (`/sys` in production, a fixture tree in tests).
//!
//! Owns: reading what SR-IOV code needs about a PCI device (IDs, driver,
//! IOMMU group, NUMA node, PF/VF relations, netdevs, switchdev
//! representors, RDMA devices) from the files the kernel documents in
//! `Documentation/ABI/testing/sysfs-bus-pci` and `sysfs-class-net`, and
//! about the auxiliary devices of a PCI device (subfunctions:
//! `sysfs-bus-auxiliary`, `sfnum` from mlx5's SF driver).
//!
//! Must not: write anything, or assume `/sys`. One unreadable device is an
//! error for that device only ([`Sysfs::scan`] goes on with the others;
//! upstream's PCI library drops the whole scan over one bad `modalias`).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The production root.
pub const SYSFS_ROOT: &str = "/sys";

/// What went wrong reading one device.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// The device's directory is not there.
    #[error("no PCI device {0}")]
    NoDevice(String),
    /// Its IDs could be read neither from `modalias` nor from the
    /// `vendor`/`device`/`class` files.
    #[error("PCI device {address}: unreadable IDs: {why}")]
    Ids {
        /// The device.
        address: String,
        /// What was wrong.
        why: String,
    },
    /// A directory listing failed.
    #[error("reading {path}: {source}")]
    Io {
        /// What was read.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A PF's SR-IOV capability (`sriov_totalvfs` exists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SriovCap {
    /// `sriov_totalvfs`.
    pub total_vfs: u32,
    /// `sriov_numvfs`: VFs configured now.
    pub num_vfs: u32,
}

/// A VF's PF (`physfn` exists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PfRef {
    /// The PF's PCI address.
    pub address: String,
    /// This VF's index on it, when the PF lists it.
    pub vf_index: Option<u32>,
    /// The PF's netdev (the uplink representor in switchdev mode).
    pub netdev: Option<String>,
    /// This VF's representor, in switchdev mode.
    pub representor: Option<String>,
}

/// One PCI device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciDevice {
    /// `DDDD:BB:DD.F`.
    pub address: String,
    /// Vendor ID, 4 lowercase hex digits.
    pub vendor: String,
    /// Device ID, 4 lowercase hex digits.
    pub device: String,
    /// The 24-bit class code.
    pub class: u32,
    /// Bound driver.
    pub driver: Option<String>,
    /// IOMMU group number.
    pub iommu_group: Option<u32>,
    /// The group is a `vfio-noiommu` one.
    pub noiommu: bool,
    /// NUMA node; `None` when the platform says `-1` or nothing.
    pub numa_node: Option<u32>,
    /// `acpi_index`, when present.
    pub acpi_index: Option<String>,
    /// Set for a PF with the SR-IOV capability.
    pub sriov: Option<SriovCap>,
    /// Set for a VF.
    pub pf: Option<PfRef>,
    /// Its netdevs (sorted); none for userspace drivers such as vfio-pci.
    pub netdevs: Vec<String>,
    /// The first netdev's link type (`ether`, `infiniband`, ...).
    pub link_type: Option<String>,
    /// Its RDMA devices (`infiniband/`), e.g. `mlx5_0`.
    pub rdma: Vec<String>,
    /// Its RDMA verbs character devices, `/dev/infiniband/uverbs<N>`.
    pub uverbs: Vec<String>,
    /// Its RDMA management character devices (`infiniband_mad/`):
    /// `/dev/infiniband/umad<N>` and `/dev/infiniband/issm<N>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mad: Vec<String>,
    /// Its UIO character devices (`uio/uio<N>`, with `uio_pci_generic`
    /// or `igb_uio`), as `/dev/uio<N>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uio: Vec<String>,
    /// Set for an auxiliary device (a subfunction, `mlx5_core.sf.4`): its
    /// type, the middle part of its name (`sf`). `address` is then that
    /// name; `pf` is the parent PCI device, with the SF number (`sfnum`)
    /// as index; IDs, class, driver, NUMA node and `acpi_index` are the
    /// parent's, as upstream's selectors see them; netdevs and RDMA
    /// devices are the auxiliary device's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_type: Option<String>,
    /// An RDMA device that the host cannot see because it is in a
    /// container's network namespace with the netdev (RDMA exclusive netns
    /// mode): `rdma` is empty, yet the device is RDMA-capable. Sysfs
    /// cannot tell this; the device plugin sets it from devlink's
    /// `enable_rdma` parameter.
    #[serde(default, skip_serializing_if = "is_false")]
    pub rdma_in_netns: bool,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's signature
fn is_false(b: &bool) -> bool {
    !*b
}

impl PciDevice {
    /// The PCI base class (`0x02` network, `0x12` accelerator).
    #[must_use]
    pub fn base_class(&self) -> u8 {
        ((self.class >> 16) & 0xff) as u8
    }

    /// The PCI address behind it: its own, or an auxiliary device's parent.
    #[must_use]
    pub fn pci_address(&self) -> &str {
        match (&self.aux_type, &self.pf) {
            (Some(_), Some(pf)) => &pf.address,
            _ => &self.address,
        }
    }
}

/// The type part of an auxiliary device name `<module>.<type>.<id>`
/// (`mlx5_core.sf.4` → `sf`): the kernel builds the name as
/// `modname.devname.id` (drivers/base/auxiliary.c), and neither part holds
/// a dot.
#[must_use]
pub fn aux_type(name: &str) -> Option<&str> {
    let mut parts = name.split('.');
    let (module, kind, id) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none()
        && !module.is_empty()
        && !kind.is_empty()
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_digit()))
    .then_some(kind)
}

/// Whether a path component is a PCI address, `DDDD:BB:DD.F`.
fn is_pci_address(name: &str) -> bool {
    routing_id(name).is_some() && name.len() == 12
}

/// Everything found, and the devices that could not be read.
#[derive(Debug, Default)]
pub struct Scan {
    /// Readable devices, by address.
    pub devices: Vec<PciDevice>,
    /// `(address, error)` for each device left out.
    pub errors: Vec<(String, SysfsError)>,
}

/// A PCI address split into domain and routing ID (bus << 8 | devfn).
fn routing_id(address: &str) -> Option<(u32, u32)> {
    let (domain, rest) = address.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    let dev = u32::from_str_radix(dev, 16).ok().filter(|d| *d < 32)?;
    let func = u32::from_str_radix(func, 16).ok().filter(|f| *f < 8)?;
    Some((
        u32::from_str_radix(domain, 16).ok()?,
        (u32::from_str_radix(bus, 16).ok()? << 8) | (dev << 3) | func,
    ))
}

/// `pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X` (pci-sysfs.c
/// `modalias_show`) → (vendor, device, class).
fn parse_modalias(s: &str) -> Option<(String, String, u32)> {
    let s = s.trim().strip_prefix("pci:v")?;
    let hex = |t: &str| u32::from_str_radix(t, 16).ok();
    let vendor = hex(s.get(0..8)?)?;
    let s = s.get(8..)?.strip_prefix('d')?;
    let device = hex(s.get(0..8)?)?;
    let s = s.get(8..)?.strip_prefix("sv")?;
    let s = s.get(8..)?.strip_prefix("sd")?;
    let s = s.get(8..)?.strip_prefix("bc")?;
    let base = hex(s.get(0..2)?)?;
    let s = s.get(2..)?.strip_prefix("sc")?;
    let sub = hex(s.get(0..2)?)?;
    let s = s.get(2..)?.strip_prefix('i')?;
    let prog = hex(s.get(0..2)?)?;
    if vendor > 0xffff || device > 0xffff || s.len() != 2 {
        return None;
    }
    Some((
        format!("{vendor:04x}"),
        format!("{device:04x}"),
        (base << 16) | (sub << 8) | prog,
    ))
}

/// `0x8086` → `8086`.
fn parse_hex_file(s: &str, max: u32) -> Option<u32> {
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16)
        .ok()
        .filter(|v| *v <= max)
}

/// ARPHRD_* names for the link types selectors use
/// (include/uapi/linux/if_arp.h).
fn link_type_name(arphrd: u32) -> String {
    match arphrd {
        1 => "ether".into(),
        32 => "infiniband".into(),
        772 => "loopback".into(),
        776 => "sit".into(),
        778 => "gre".into(),
        65534 => "none".into(),
        n => format!("arphrd-{n}"),
    }
}

/// Whether `phys_port_name` names an uplink (`p0`, `p1`): the PF's netdev
/// of a NIC whose eswitch is in switchdev mode.
#[must_use]
pub fn is_uplink_port(name: &str) -> bool {
    name.strip_prefix('p')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The VF number in a VF representor's `phys_port_name`: `pf0vf3` or, on a
/// DPU, `c1pf0vf3` (net/devlink/port.c
/// `__devlink_port_phys_port_name_get`).
#[must_use]
pub fn representor_vf(port_name: &str) -> Option<(u32, u32)> {
    let s = match port_name.strip_prefix('c') {
        Some(rest) => rest.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => port_name,
    };
    let s = s.strip_prefix("pf")?;
    let (pf, vf) = s.split_once("vf")?;
    Some((pf.parse().ok()?, vf.parse().ok()?))
}

/// What a device offers the network: see [`PciDevice`]'s fields.
struct Ports {
    netdevs: Vec<String>,
    link_type: Option<String>,
    rdma: Vec<String>,
    uverbs: Vec<String>,
    mad: Vec<String>,
}

/// What a scan reads once per PF.
#[derive(Debug, Clone)]
struct PfInfo {
    netdev: Option<String>,
    representors: HashMap<u32, String>,
    offset: Option<u32>,
    stride: Option<u32>,
}

impl PfInfo {
    /// The index of VF `vf`, computed from the PF's `sriov_offset` and
    /// `sriov_stride` (drivers/pci/iov.c: VF routing ID = PF's + offset +
    /// stride × index) and confirmed by one `virtfn<i>` link: O(1) per VF
    /// (upstream lists every `virtfn*`, O(N) per VF). Falls back to the
    /// listing when the arithmetic does not hold.
    fn vf_index(&self, sys: &Sysfs, pf: &str, vf: &str) -> Option<u32> {
        let dir = sys.device_dir(pf);
        let is = |i: u32| Sysfs::link_name(&dir.join(format!("virtfn{i}"))).as_deref() == Some(vf);
        let computed = (|| {
            let (pd, prid) = routing_id(pf)?;
            let (vd, vrid) = routing_id(vf)?;
            let (offset, stride) = (self.offset?, self.stride?);
            let delta = vrid.checked_sub(prid)?.checked_sub(offset)?;
            (pd == vd && stride > 0 && delta % stride == 0).then_some(delta / stride)
        })();
        if let Some(i) = computed.filter(|i| is(*i)) {
            return Some(i);
        }
        Sysfs::list(&dir)
            .iter()
            .filter_map(|n| n.strip_prefix("virtfn")?.parse::<u32>().ok())
            .find(|i| is(*i))
    }
}

/// A sysfs tree.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::new(SYSFS_ROOT)
    }
}

impl Sysfs {
    /// The tree at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Its root.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/bus/pci/devices/<address>`, or for an auxiliary device
    /// name (it has no `:`) `<root>/bus/auxiliary/devices/<name>`.
    #[must_use]
    pub fn device_dir(&self, address: &str) -> PathBuf {
        if address.contains(':') {
            self.root.join("bus/pci/devices").join(address)
        } else {
            self.root.join("bus/auxiliary/devices").join(address)
        }
    }

    /// `<root>/class/net/<ifname>`.
    #[must_use]
    pub fn netdev_dir(&self, ifname: &str) -> PathBuf {
        self.root.join("class/net").join(ifname)
    }

    /// A sysfs attribute, trimmed. One `read` of up to a page: the kernel
    /// returns a whole attribute in one read (`sysfs_kf_read`, PAGE_SIZE),
    /// and `fs::read_to_string`'s extra `statx` and EOF read cost a third
    /// of discovery time over a thousand VFs.
    fn read(path: &Path) -> Option<String> {
        use std::io::Read as _;
        let mut f = fs::File::open(path).ok()?;
        let mut buf = [0u8; 4096];
        let n = f.read(&mut buf).ok()?;
        std::str::from_utf8(&buf[..n])
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// The last path component of a symlink's target.
    fn link_name(path: &Path) -> Option<String> {
        fs::read_link(path)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    fn list(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Every PCI address, sorted.
    ///
    /// # Errors
    /// When `bus/pci/devices` cannot be listed.
    pub fn pci_addresses(&self) -> Result<Vec<String>, SysfsError> {
        let dir = self.root.join("bus/pci/devices");
        let mut v: Vec<String> = fs::read_dir(&dir)
            .map_err(|source| SysfsError::Io {
                path: dir.clone(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        Ok(v)
    }

    /// A netdev attribute (`phys_port_name`, `operstate`, ...), trimmed;
    /// `None` when absent, unreadable (EOPNOTSUPP) or empty.
    #[must_use]
    pub fn netdev_attr(&self, ifname: &str, attr: &str) -> Option<String> {
        Self::read(&self.netdev_dir(ifname).join(attr)).filter(|s| !s.is_empty())
    }

    /// The netdevs of a PCI or auxiliary device, sorted.
    #[must_use]
    pub fn netdevs(&self, address: &str) -> Vec<String> {
        Self::list(&self.device_dir(address).join("net"))
    }

    /// The bound driver's name.
    #[must_use]
    pub fn driver(&self, address: &str) -> Option<String> {
        Self::link_name(&self.device_dir(address).join("driver"))
    }

    /// The netdev a PF is known by: in switchdev mode (its netdevs carry a
    /// `phys_switch_id`) the uplink representor (`phys_port_name` `p<N>`),
    /// since representors of its VFs sit in the same `net/` directory;
    /// otherwise its first netdev.
    #[must_use]
    pub fn pf_netdev(&self, pf: &str) -> Option<String> {
        let names = self.netdevs(pf);
        let switchdev = names
            .iter()
            .any(|n| self.netdev_attr(n, "phys_switch_id").is_some());
        if switchdev {
            names.into_iter().find(|n| {
                self.netdev_attr(n, "phys_port_name")
                    .is_some_and(|p| is_uplink_port(&p))
            })
        } else {
            names.into_iter().next()
        }
    }

    /// The representor of VF `index` among the PF's netdevs (switchdev).
    #[must_use]
    pub fn vf_representor(&self, pf: &str, index: u32) -> Option<String> {
        self.netdevs(pf).into_iter().find(|n| {
            self.netdev_attr(n, "phys_switch_id").is_some()
                && self
                    .netdev_attr(n, "phys_port_name")
                    .and_then(|p| representor_vf(&p))
                    .is_some_and(|(_, vf)| vf == index)
        })
    }

    /// The index of VF `vf` on PF `pf`; see [`PfInfo::vf_index`].
    #[must_use]
    pub fn vf_index(&self, pf: &str, vf: &str) -> Option<u32> {
        self.pf_info(pf).vf_index(self, pf, vf)
    }

    /// The IOMMU group and whether it is a `vfio-noiommu` one.
    #[must_use]
    pub fn iommu_group(&self, address: &str) -> Option<(u32, bool)> {
        let link = self.device_dir(address).join("iommu_group");
        let group: u32 = Self::link_name(&link)?.parse().ok()?;
        let name = Self::read(
            &self
                .root
                .join("kernel/iommu_groups")
                .join(group.to_string())
                .join("name"),
        );
        Some((group, name.as_deref() == Some("vfio-noiommu")))
    }

    /// Reads one device.
    ///
    /// # Errors
    /// When it does not exist or its IDs cannot be read.
    pub fn pci_device(&self, address: &str) -> Result<PciDevice, SysfsError> {
        self.read_device(address, &mut HashMap::new())
    }

    /// What every VF of one PF shares, read once per scan: its netdev,
    /// its representors by VF index, and the VF address arithmetic.
    fn pf_info(&self, pf: &str) -> PfInfo {
        let dir = self.device_dir(pf);
        let num = |f: &str| Self::read(&dir.join(f)).and_then(|s| s.parse::<u32>().ok());
        let representors = self
            .netdevs(pf)
            .into_iter()
            .filter(|n| self.netdev_attr(n, "phys_switch_id").is_some())
            .filter_map(|n| {
                let (_, vf) = representor_vf(&self.netdev_attr(&n, "phys_port_name")?)?;
                Some((vf, n))
            })
            .collect();
        PfInfo {
            netdev: self.pf_netdev(pf),
            representors,
            offset: num("sriov_offset"),
            stride: num("sriov_stride"),
        }
    }

    fn read_device(
        &self,
        address: &str,
        pfs: &mut HashMap<String, PfInfo>,
    ) -> Result<PciDevice, SysfsError> {
        let dir = self.device_dir(address);
        if !dir.is_dir() {
            return Err(SysfsError::NoDevice(address.to_owned()));
        }
        let ids = Self::read(&dir.join("modalias"))
            .and_then(|m| parse_modalias(&m))
            .or_else(|| {
                Some((
                    format!(
                        "{:04x}",
                        parse_hex_file(&Self::read(&dir.join("vendor"))?, 0xffff)?
                    ),
                    format!(
                        "{:04x}",
                        parse_hex_file(&Self::read(&dir.join("device"))?, 0xffff)?
                    ),
                    parse_hex_file(&Self::read(&dir.join("class"))?, 0xff_ffff)?,
                ))
            });
        let Some((vendor, device, class)) = ids else {
            return Err(SysfsError::Ids {
                address: address.to_owned(),
                why: "modalias is malformed and vendor/device/class are missing or malformed"
                    .into(),
            });
        };
        let num = |f: &str| Self::read(&dir.join(f)).and_then(|s| s.parse::<u32>().ok());
        let sriov = num("sriov_totalvfs").map(|total_vfs| SriovCap {
            total_vfs,
            num_vfs: num("sriov_numvfs").unwrap_or(0),
        });
        let pf = Self::link_name(&dir.join("physfn")).map(|pf_addr| {
            let info = match pfs.get(&pf_addr) {
                Some(i) => i,
                None => pfs
                    .entry(pf_addr.clone())
                    .or_insert_with(|| self.pf_info(&pf_addr)),
            };
            let vf_index = info.vf_index(self, &pf_addr, address);
            PfRef {
                netdev: info.netdev.clone(),
                representor: vf_index.and_then(|i| info.representors.get(&i).cloned()),
                vf_index,
                address: pf_addr,
            }
        });
        let ports = self.ports(address);
        let driver = self.driver(address);
        // The no-IOMMU flag only matters to VFIO users; reading it for
        // every kernel-driver VF is a wasted open.
        let (iommu_group, noiommu) = if driver.as_deref() == Some("vfio-pci") {
            self.iommu_group(address)
                .map_or((None, false), |(g, n)| (Some(g), n))
        } else {
            (
                Self::link_name(&dir.join("iommu_group")).and_then(|g| g.parse().ok()),
                false,
            )
        };
        Ok(PciDevice {
            address: address.to_owned(),
            vendor,
            device,
            class,
            driver,
            iommu_group,
            noiommu,
            numa_node: Self::read(&dir.join("numa_node"))
                .and_then(|s| s.parse::<i64>().ok())
                .and_then(|n| u32::try_from(n).ok()),
            acpi_index: Self::read(&dir.join("acpi_index")).filter(|s| !s.is_empty()),
            sriov,
            pf,
            netdevs: ports.netdevs,
            link_type: ports.link_type,
            rdma: ports.rdma,
            uverbs: ports.uverbs,
            mad: ports.mad,
            uio: Self::list(&dir.join("uio"))
                .into_iter()
                .filter(|n| n.starts_with("uio"))
                .map(|n| format!("/dev/{n}"))
                .collect(),
            aux_type: None,
            rdma_in_netns: false,
        })
    }

    /// A PCI or auxiliary device's netdevs, link type and RDMA devices.
    fn ports(&self, id: &str) -> Ports {
        let netdevs = self.netdevs(id);
        let link_type = netdevs.first().and_then(|n| {
            self.netdev_attr(n, "type")
                .and_then(|t| t.parse().ok())
                .map(link_type_name)
        });
        let rdma = self.rdma(id);
        let (uverbs, mad) = if rdma.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            (self.uverbs(id), self.mad(id))
        };
        Ports {
            netdevs,
            link_type,
            uverbs,
            mad,
            rdma,
        }
    }

    /// The auxiliary devices that sit directly under a PCI device, from one
    /// listing of `bus/auxiliary/devices` (each entry links to
    /// `devices/.../<parent BDF>/<name>`): `(parent, name)`, sorted.
    /// Nested ones (`mlx5_core.eth.4` under `mlx5_core.sf.4`) are left out,
    /// as upstream lists only a PCI device's own children.
    fn aux_children(&self) -> Vec<(String, String)> {
        let dir = self.root.join("bus/auxiliary/devices");
        let mut out: Vec<(String, String)> = Self::list(&dir)
            .into_iter()
            .filter(|n| aux_type(n).is_some())
            .filter_map(|n| {
                let target = fs::read_link(dir.join(&n)).ok()?;
                let parent = target.parent()?.file_name()?.to_string_lossy().into_owned();
                is_pci_address(&parent).then_some((parent, n))
            })
            .collect();
        out.sort();
        out
    }

    /// An auxiliary device of `parent` as a pool candidate; see
    /// [`PciDevice::aux_type`].
    fn read_aux(&self, parent: &PciDevice, name: &str, pf_netdev: Option<String>) -> PciDevice {
        let sfnum = Self::read(&self.device_dir(name).join("sfnum"));
        let ports = self.ports(name);
        PciDevice {
            address: name.to_owned(),
            iommu_group: None,
            noiommu: false,
            sriov: None,
            pf: Some(PfRef {
                address: parent.address.clone(),
                vf_index: sfnum.and_then(|s| s.parse().ok()),
                netdev: pf_netdev,
                representor: None,
            }),
            netdevs: ports.netdevs,
            link_type: ports.link_type,
            rdma: ports.rdma,
            uverbs: ports.uverbs,
            mad: ports.mad,
            uio: Vec::new(),
            aux_type: aux_type(name).map(str::to_owned),
            ..parent.clone()
        }
    }

    /// Every PCI device, and every auxiliary device right under one (after
    /// its parent). A device that cannot be read is in [`Scan::errors`];
    /// the others are still there.
    ///
    /// # Errors
    /// Only when the device list itself cannot be read.
    pub fn scan(&self) -> Result<Scan, SysfsError> {
        let mut scan = Scan::default();
        let mut pfs = HashMap::new();
        let mut aux: HashMap<String, Vec<String>> = HashMap::new();
        for (parent, name) in self.aux_children() {
            aux.entry(parent).or_default().push(name);
        }
        for address in self.pci_addresses()? {
            match self.read_device(&address, &mut pfs) {
                Ok(d) => {
                    let children = aux.remove(&address).unwrap_or_default();
                    let pf_netdev = if children.is_empty() {
                        None
                    } else {
                        self.pf_netdev(&address)
                    };
                    let subs: Vec<PciDevice> = children
                        .iter()
                        .map(|n| self.read_aux(&d, n, pf_netdev.clone()))
                        .collect();
                    scan.devices.push(d);
                    scan.devices.extend(subs);
                }
                Err(e) => scan.errors.push((address, e)),
            }
        }
        Ok(scan)
    }

    /// The RDMA devices (`infiniband/`, e.g. `mlx5_2`) of a PCI or
    /// auxiliary device, as the host sees them now.
    #[must_use]
    pub fn rdma(&self, address: &str) -> Vec<String> {
        Self::list(&self.device_dir(address).join("infiniband"))
    }

    /// The `uverbs` character devices of an RDMA-capable PCI or auxiliary
    /// device
    /// (`infiniband_verbs/uverbs<N>`), as `/dev/infiniband/...` paths.
    #[must_use]
    pub fn uverbs(&self, address: &str) -> Vec<String> {
        Self::list(&self.device_dir(address).join("infiniband_verbs"))
            .into_iter()
            .map(|n| format!("/dev/infiniband/{n}"))
            .collect()
    }

    /// The `umad`/`issm` character devices of an RDMA-capable device
    /// (`infiniband_mad/`), as `/dev/infiniband/...` paths.
    #[must_use]
    pub fn mad(&self, address: &str) -> Vec<String> {
        Self::list(&self.device_dir(address).join("infiniband_mad"))
            .into_iter()
            .filter(|n| n.starts_with("umad") || n.starts_with("issm"))
            .map(|n| format!("/dev/infiniband/{n}"))
            .collect()
    }
}

/// A PCI device's vendor and device names from the bundled PCI ID
/// database, for logs and output only (never required).
#[must_use]
pub fn pci_names(vendor: &str, device: &str) -> Option<(String, String)> {
    let v = u16::from_str_radix(vendor, 16).ok()?;
    let d = u16::from_str_radix(device, 16).ok()?;
    let dev = pci_ids::Device::from_vid_pid(v, d)?;
    Some((dev.vendor().name().to_owned(), dev.name().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modalias() {
        assert_eq!(
            parse_modalias("pci:v00008086d0000154Csv00008086sd00000000bc02sc00i00\n"),
            Some(("8086".into(), "154c".into(), 0x02_00_00))
        );
        assert_eq!(parse_modalias("pci:v00008086d0000154C"), None);
        assert_eq!(parse_modalias("garbage"), None);
        assert_eq!(
            parse_modalias("pci:v00008086d0000154Csv00008086sd00000000bc02sc00i00xx"),
            None
        );
    }

    #[test]
    fn representor_names() {
        assert_eq!(representor_vf("pf0vf3"), Some((0, 3)));
        assert_eq!(representor_vf("c1pf0vf12"), Some((0, 12)));
        assert_eq!(representor_vf("p0"), None);
        assert_eq!(representor_vf("pf0"), None);
        assert!(is_uplink_port("p0") && is_uplink_port("p12"));
        assert!(!is_uplink_port("pf0vf1") && !is_uplink_port("p"));
    }

    #[test]
    fn aux_names() {
        assert_eq!(aux_type("mlx5_core.sf.4"), Some("sf"));
        assert_eq!(aux_type("mlx5_core.eth.0"), Some("eth"));
        assert_eq!(aux_type("mlx5_core.sf"), None);
        assert_eq!(aux_type("mlx5_core.sf.x"), None);
        assert_eq!(aux_type("a.b.1.2"), None);
        assert_eq!(aux_type("0000:03:00.0"), None);
        assert!(is_pci_address("0000:03:00.0"));
        assert!(!is_pci_address("mlx5_core.sf.4") && !is_pci_address("pci0000:00"));
    }

    #[test]
    fn routing_ids() {
        assert_eq!(routing_id("0000:3b:02.1"), Some((0, 0x3b11)));
        assert_eq!(routing_id("0000:3b:20.0"), None);
    }
}
