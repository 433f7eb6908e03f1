//! What a container gets for its devices (Allocate), and which devices the
//! plugin would rather it got (GetPreferredAllocation).
//!
//! Allocate, per device: the env `PCIDEVICE_<PREFIX>_<NAME>` (comma-joined
//! IDs) and `..._INFO` (per device, the providers upstream uses: `generic`,
//! `vfio`, `rdma`, `vhost`, `extra`), DeviceSpecs for `/dev/vfio/vfio` and
//! the device's group (`noiommu-<N>` on the host for a no-IOMMU group),
//! the RDMA and vhost-net character devices, and a device-info file in the
//! network-plumbing format for the CNI (netDevice pools only, as upstream:
//! the format has no type for a subfunction). Everything is computed from the
//! device, in one pass (upstream filled some env values only as a side
//! effect of building the specs, so the first Allocate lacked them).
//!
//! Preferred allocation: all on one NUMA node when possible, and VFs of as
//! few PFs as possible (packed: the PF with the fewest free devices that
//! still fits goes first, keeping whole PFs free for larger requests).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use plexus_kubelet_api::deviceplugin::v1beta1::{ContainerAllocateResponse, DeviceSpec};
use serde_json::{Map, Value, json};

use crate::config::{DeviceType, PoolConfig};
use crate::pools::PoolDevice;

/// `PCIDEVICE_<PREFIX>_<NAME>` as upstream builds it: `.` → `_`,
/// upper-cased, hyphens kept.
#[must_use]
pub fn env_name(pool: &PoolConfig) -> String {
    format!("PCIDEVICE_{}_{}", pool.prefix, pool.name)
        .replace('.', "_")
        .to_uppercase()
}

/// Drivers whose devices are used from user space through VFIO.
fn is_vfio(d: &PoolDevice) -> bool {
    d.dev.driver.as_deref() == Some("vfio-pci")
}

/// Device nodes that exist only when their module is loaded (`rdma_ucm`,
/// `vhost_net`, `tun`): a DeviceSpec naming a missing one makes container
/// creation fail, so each is given only when it exists under the device
/// root (`/dev`, or a test's directory), as upstream does for vhost-net.
const RDMA_CM: &str = "/dev/infiniband/rdma_cm";
const VHOST_NET: &str = "/dev/vhost-net";
const TUN: &str = "/dev/net/tun";

/// Whether the device node `path` (`/dev/...`) exists under `dev_root`.
fn node_exists(dev_root: &Path, path: &str) -> bool {
    let rel = path.strip_prefix("/dev/").unwrap_or(path);
    let ok = dev_root.join(rel).exists();
    if !ok {
        tracing::warn!(
            node = path,
            dev_root = %dev_root.display(),
            "device node missing (module not loaded?): left out of the container"
        );
    }
    ok
}

/// The RDMA character devices of a device, as upstream's rdma provider
/// gives them: verbs, then umad/issm, then `rdma_cm` when it exists.
fn rdma_nodes(d: &PoolDevice, dev_root: &Path) -> Vec<String> {
    let mut v: Vec<String> = d.dev.uverbs.iter().chain(&d.dev.mad).cloned().collect();
    if node_exists(dev_root, RDMA_CM) {
        v.push(RDMA_CM.into());
    }
    v
}

fn is_uio(d: &PoolDevice) -> bool {
    matches!(d.dev.driver.as_deref(), Some("uio_pci_generic" | "igb_uio"))
}

/// The `_INFO` entry of one device.
fn info(pool: &PoolConfig, d: &PoolDevice, dev_root: &Path) -> Value {
    let mut m = Map::new();
    m.insert("generic".into(), json!({"deviceID": d.dev.address}));
    if is_vfio(d)
        && let Some(g) = d.dev.iommu_group
    {
        m.insert(
            "vfio".into(),
            json!({"mount": "/dev/vfio/vfio", "dev-mount": format!("/dev/vfio/{g}")}),
        );
    }
    if d.is_rdma && !d.dev.rdma.is_empty() {
        let mut r = Map::new();
        r.insert("rdma_dev".into(), d.dev.rdma[0].clone().into());
        // Upstream's keys, one node each (the first of a kind).
        for n in rdma_nodes(d, dev_root) {
            let key = ["uverbs", "umad", "issm", "rdma_cm"]
                .into_iter()
                .find(|k| n.contains(k));
            if let Some(k) = key {
                r.entry(k).or_insert_with(|| n.into());
            }
        }
        m.insert("rdma".into(), Value::Object(r));
    }
    if d.need_vhost_net {
        m.insert(
            "vhost".into(),
            json!({"net-mount": VHOST_NET, "tun-mount": TUN}),
        );
    }
    // Keyed by PCI address; a subfunction's is its parent's (upstream).
    let mut extra: BTreeMap<&str, &str> = BTreeMap::new();
    for key in ["*", d.dev.pci_address()] {
        for (k, v) in pool.additional_info.get(key).into_iter().flatten() {
            extra.insert(k, v);
        }
    }
    if !extra.is_empty() {
        m.insert("extra".into(), json!(extra));
    }
    Value::Object(m)
}

fn spec(container: &str, host: &str) -> DeviceSpec {
    DeviceSpec {
        container_path: container.to_owned(),
        host_path: host.to_owned(),
        permissions: "rw".to_owned(),
    }
}

/// The device nodes one device needs in the container.
fn specs(d: &PoolDevice, dev_root: &Path) -> Vec<DeviceSpec> {
    let mut v = Vec::new();
    if is_vfio(d)
        && let Some(g) = d.dev.iommu_group
    {
        v.push(spec("/dev/vfio/vfio", "/dev/vfio/vfio"));
        let host = if d.dev.noiommu {
            format!("/dev/vfio/noiommu-{g}")
        } else {
            format!("/dev/vfio/{g}")
        };
        v.push(spec(&format!("/dev/vfio/{g}"), &host));
    }
    if is_uio(d) {
        // Upstream's uio provider: `mrw`.
        for u in &d.dev.uio {
            v.push(DeviceSpec {
                permissions: "mrw".into(),
                ..spec(u, u)
            });
        }
    }
    if d.is_rdma && !d.dev.rdma.is_empty() {
        for n in rdma_nodes(d, dev_root) {
            v.push(spec(&n, &n));
        }
    }
    // Upstream gives both or neither.
    if d.need_vhost_net && node_exists(dev_root, VHOST_NET) && node_exists(dev_root, TUN) {
        v.push(spec(VHOST_NET, VHOST_NET));
        v.push(spec(TUN, TUN));
    }
    v
}

/// A device the kubelet asked for that is not in the pool.
#[derive(Debug, thiserror::Error)]
#[error("device {id} is not in pool {resource}")]
pub struct UnknownDevice {
    /// The device.
    pub id: String,
    /// The pool.
    pub resource: String,
}

/// The response for one container's devices.
///
/// # Errors
/// When an ID is not a device of the pool.
pub fn container_response(
    pool: &PoolConfig,
    devices: &HashMap<String, PoolDevice>,
    ids: &[String],
    dev_root: &Path,
) -> Result<ContainerAllocateResponse, UnknownDevice> {
    let mut envs = HashMap::new();
    let mut infos = Map::new();
    let mut seen = BTreeSet::new();
    let mut out_specs = Vec::new();
    for id in ids {
        let d = devices.get(id).ok_or_else(|| UnknownDevice {
            id: id.clone(),
            resource: pool.resource(),
        })?;
        infos.insert(id.clone(), info(pool, d, dev_root));
        for s in specs(d, dev_root) {
            if seen.insert(s.host_path.clone()) {
                out_specs.push(s);
            }
        }
    }
    let name = env_name(pool);
    let list = ids.join(",");
    let info = Value::Object(infos).to_string();
    // A '-' in the name makes the variable unusable from a shell; give a
    // sanitised copy too, keeping upstream's name for compatibility.
    let sane = name.replace('-', "_");
    if sane != name {
        envs.insert(sane.clone(), list.clone());
        envs.insert(format!("{sane}_INFO"), info.clone());
    }
    envs.insert(format!("{name}_INFO"), info);
    envs.insert(name, list);
    Ok(ContainerAllocateResponse {
        envs,
        devices: out_specs,
        ..ContainerAllocateResponse::default()
    })
}

/// The device-info file of a device
/// (`<dir>/<prefix>-<name>-<id>-device.json`, as the NAD client names it).
#[must_use]
pub fn device_info_path(dir: &Path, pool: &PoolConfig, id: &str) -> PathBuf {
    dir.join(format!(
        "{}-{}-device.json",
        pool.resource().replace('/', "-"),
        id.replace('/', "-")
    ))
}

/// The device-info content (network-plumbing device-info spec 1.1.0).
#[must_use]
pub fn device_info(d: &PoolDevice) -> Value {
    let mut pci = Map::new();
    pci.insert("pci-address".into(), d.dev.address.clone().into());
    if let Some(pf) = &d.dev.pf {
        pci.insert("pf-pci-address".into(), pf.address.clone().into());
        if let Some(r) = &pf.representor {
            pci.insert("representor-device".into(), r.clone().into());
        }
    }
    if d.is_rdma && !d.dev.rdma.is_empty() {
        // Every RDMA device of the function (a multi-port one has several).
        pci.insert("rdma-device".into(), d.dev.rdma.join(",").into());
    }
    if d.need_vhost_net {
        pci.insert("vhost-net".into(), "/dev/vhost-net".into());
    }
    json!({"type": "pci", "version": "1.1.0", "pci": pci})
}

/// Writes (replacing) the device-info file of a device, mode 0444; `None`
/// for a pool that has none (not netDevice).
///
/// # Errors
/// When the directory or file cannot be written.
pub fn write_device_info(
    dir: &Path,
    pool: &PoolConfig,
    d: &PoolDevice,
) -> std::io::Result<Option<PathBuf>> {
    if pool.device_type != DeviceType::NetDevice {
        return Ok(None);
    }
    fs::create_dir_all(dir)?;
    let path = device_info_path(dir, pool, &d.dev.address);
    // The file is read-only once written: replace it, never edit it.
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)?;
    f.write_all(device_info(d).to_string().as_bytes())?;
    Ok(Some(path))
}

/// The preferred `size` devices out of `available`, `must` included: one
/// NUMA node if the request fits on one (the node of the `must` devices
/// first, then the one with the fewest free devices that fits), else as few
/// nodes as it can (the biggest first), and within
/// it PFs packed (the PF of the `must` devices first, then the PF with the
/// fewest free devices that fits the rest alone, then the fullest ones).
/// Unknown IDs are never chosen unless required.
#[must_use]
pub fn preferred(
    devices: &HashMap<String, PoolDevice>,
    available: &[String],
    must: &[String],
    size: usize,
) -> Vec<String> {
    let mut chosen: Vec<String> = must.iter().take(size).cloned().collect();
    let need = size.saturating_sub(chosen.len());
    if need == 0 {
        return chosen;
    }
    let free: Vec<&PoolDevice> = available
        .iter()
        .filter(|id| !chosen.contains(id))
        .filter_map(|id| devices.get(id))
        .collect();
    let numa = |d: &PoolDevice| d.dev.numa_node;
    let pf = |d: &PoolDevice| d.dev.pf.as_ref().map(|p| p.address.clone());
    let must_numa: BTreeSet<Option<u32>> = must
        .iter()
        .filter_map(|id| devices.get(id))
        .map(numa)
        .collect();
    let must_pf: BTreeSet<Option<String>> = must
        .iter()
        .filter_map(|id| devices.get(id))
        .map(pf)
        .collect();

    // Candidate nodes, best first.
    let mut per_node: BTreeMap<Option<u32>, Vec<&PoolDevice>> = BTreeMap::new();
    for d in &free {
        per_node.entry(numa(d)).or_default().push(d);
    }
    let mut nodes: Vec<(Option<u32>, Vec<&PoolDevice>)> = per_node.into_iter().collect();
    // A node that fits: the one with the fewest free devices (keeps the
    // bigger ones whole). None fits: the biggest first, so that the request
    // spans as few nodes as it can (6/2/2 free, 7 asked: two nodes).
    nodes.sort_by_key(|(n, ds)| {
        let fits = ds.len() >= need;
        let size = ds.len() as isize;
        (
            !must_numa.contains(n),
            !fits,
            if fits { size } else { -size },
            *n,
        )
    });
    for (_, ds) in nodes {
        // Within a node, PFs best first; then devices in address order.
        let mut per_pf: BTreeMap<Option<String>, Vec<&PoolDevice>> = BTreeMap::new();
        for d in ds {
            per_pf.entry(pf(d)).or_default().push(d);
        }
        let left = size - chosen.len();
        let mut pfs: Vec<(Option<String>, Vec<&PoolDevice>)> = per_pf.into_iter().collect();
        pfs.sort_by(|(a, da), (b, db)| {
            let key = |p: &Option<String>, d: &Vec<&PoolDevice>| {
                (!must_pf.contains(p), d.len() < left, d.len())
            };
            key(a, da).cmp(&key(b, db)).then_with(|| a.cmp(b))
        });
        for (_, mut ds) in pfs {
            ds.sort_by(|a, b| a.dev.address.cmp(&b.dev.address));
            for d in ds {
                if chosen.len() == size {
                    return chosen;
                }
                chosen.push(d.dev.address.clone());
            }
        }
        if chosen.len() == size {
            break;
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use plexus_sysfs::{PciDevice, PfRef};

    use super::*;

    fn dev(addr: &str, pf: &str, numa: u32, driver: &str, group: u32) -> PoolDevice {
        PoolDevice {
            dev: PciDevice {
                address: addr.into(),
                vendor: "8086".into(),
                device: "154c".into(),
                class: 0x02_00_00,
                driver: Some(driver.into()),
                iommu_group: Some(group),
                noiommu: false,
                numa_node: Some(numa),
                acpi_index: None,
                sriov: None,
                pf: Some(PfRef {
                    address: pf.into(),
                    vf_index: Some(0),
                    netdev: None,
                    representor: None,
                }),
                netdevs: Vec::new(),
                link_type: None,
                rdma: Vec::new(),
                uverbs: Vec::new(),
                mad: Vec::new(),
                uio: Vec::new(),
                aux_type: None,
                rdma_in_netns: false,
            },
            need_vhost_net: false,
            is_rdma: false,
        }
    }

    fn map(ds: Vec<PoolDevice>) -> HashMap<String, PoolDevice> {
        ds.into_iter().map(|d| (d.dev.address.clone(), d)).collect()
    }

    #[test]
    fn preferred_keeps_one_numa_node_and_packs_pfs() {
        // PF A (NUMA 0): 3 free; PF B (NUMA 0): 1 free; PF C (NUMA 1): 2 free.
        let devices = map(vec![
            dev("0000:3b:02.0", "A", 0, "iavf", 1),
            dev("0000:3b:02.1", "A", 0, "iavf", 2),
            dev("0000:3b:02.2", "A", 0, "iavf", 3),
            dev("0000:3c:02.0", "B", 0, "iavf", 4),
            dev("0000:af:02.0", "C", 1, "iavf", 5),
            dev("0000:af:02.1", "C", 1, "iavf", 6),
        ]);
        let all: Vec<String> = {
            let mut v: Vec<String> = devices.keys().cloned().collect();
            v.sort();
            v
        };
        // Two devices: NUMA 1 fits exactly (fewest free that fits), one PF.
        assert_eq!(
            preferred(&devices, &all, &[], 2),
            ["0000:af:02.0", "0000:af:02.1"]
        );
        // One device: the node with the fewest free devices.
        assert_eq!(preferred(&devices, &all, &[], 1), ["0000:af:02.0"]);
        // Within a node, B's single VF first, keeping A whole.
        let node0: Vec<String> = all
            .iter()
            .filter(|a| !a.starts_with("0000:af"))
            .cloned()
            .collect();
        assert_eq!(preferred(&devices, &node0, &[], 1), ["0000:3c:02.0"]);
        // Three: only NUMA 0 fits; A alone holds all three.
        assert_eq!(
            preferred(&devices, &all, &[], 3),
            ["0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2"]
        );
        // A required device pulls the rest to its node and PF.
        assert_eq!(
            preferred(&devices, &all, &["0000:3b:02.2".into()], 2),
            ["0000:3b:02.2", "0000:3b:02.0"]
        );
        // Five: more than one node holds; node 0 first, then node 1.
        assert_eq!(preferred(&devices, &all, &[], 5).len(), 5);
    }

    #[test]
    fn preferred_spans_as_few_numa_nodes_as_it_can() {
        // 6 free on node 0, 2 on node 1, 2 on node 2; 7 asked: two nodes.
        let mut ds = Vec::new();
        for i in 0..6 {
            ds.push(dev(&format!("0000:3b:02.{i}"), "A", 0, "iavf", i));
        }
        for (node, bus) in [(1, "5e"), (2, "af")] {
            for i in 0..2 {
                ds.push(dev(
                    &format!("0000:{bus}:02.{i}"),
                    bus,
                    node,
                    "iavf",
                    10 + i,
                ));
            }
        }
        let devices = map(ds);
        let mut all: Vec<String> = devices.keys().cloned().collect();
        all.sort();
        let got = preferred(&devices, &all, &[], 7);
        let nodes: BTreeSet<Option<u32>> = got.iter().map(|id| devices[id].dev.numa_node).collect();
        assert_eq!(got.len(), 7);
        assert_eq!(nodes.len(), 2, "{got:?}");
    }

    #[test]
    fn allocate_env_specs_and_info() {
        let pool = crate::config::parse(
            r#"{"resourceList": [{"resourceName": "x710-dpdk", "selectors": {"drivers": ["vfio-pci"]},
                "additionalInfo": {"*": {"k": "all"}, "0000:3b:02.0": {"k": "mine", "j": "1"}}}]}"#,
            "intel.com",
        )
        .pools
        .remove(0);
        let devices = map(vec![dev("0000:3b:02.0", "0000:3b:00.0", 0, "vfio-pci", 90)]);
        let r = container_response(&pool, &devices, &["0000:3b:02.0".into()], Path::new("/dev"))
            .unwrap();
        assert_eq!(r.envs["PCIDEVICE_INTEL_COM_X710-DPDK"], "0000:3b:02.0");
        assert_eq!(r.envs["PCIDEVICE_INTEL_COM_X710_DPDK"], "0000:3b:02.0");
        let info: Value =
            serde_json::from_str(&r.envs["PCIDEVICE_INTEL_COM_X710-DPDK_INFO"]).unwrap();
        assert_eq!(
            info,
            json!({"0000:3b:02.0": {"generic": {"deviceID": "0000:3b:02.0"},
                "vfio": {"dev-mount": "/dev/vfio/90", "mount": "/dev/vfio/vfio"},
                "extra": {"j": "1", "k": "mine"}}})
        );
        let specs: Vec<(&str, &str)> = r
            .devices
            .iter()
            .map(|s| (s.container_path.as_str(), s.host_path.as_str()))
            .collect();
        assert_eq!(
            specs,
            [
                ("/dev/vfio/vfio", "/dev/vfio/vfio"),
                ("/dev/vfio/90", "/dev/vfio/90")
            ]
        );
        let e = container_response(&pool, &devices, &["0000:00:00.0".into()], Path::new("/dev"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "device 0000:00:00.0 is not in pool intel.com/x710-dpdk"
        );
    }

    #[test]
    fn module_nodes_are_given_only_when_they_exist_and_uio_devices_are() {
        let pool = crate::config::parse(
            r#"{"resourceList": [{"resourceName": "vhost", "selectors": {"needVhostNet": true}}]}"#,
            "intel.com",
        )
        .pools
        .remove(0);
        let mut d = dev("0000:3b:02.0", "0000:3b:00.0", 0, "uio_pci_generic", 7);
        d.need_vhost_net = true;
        d.dev.uio = vec!["/dev/uio3".into()];
        let devices = map(vec![d]);
        let root = tempfile::tempdir().unwrap();
        let nodes = |root: &Path| -> Vec<(String, String)> {
            container_response(&pool, &devices, &["0000:3b:02.0".into()], root)
                .unwrap()
                .devices
                .into_iter()
                .map(|s| (s.host_path, s.permissions))
                .collect()
        };
        // Neither vhost-net nor tun: only the UIO node (upstream's `mrw`).
        assert_eq!(nodes(root.path()), [("/dev/uio3".into(), "mrw".into())]);
        // vhost-net without tun: still neither (upstream gives both or none).
        fs::write(root.path().join("vhost-net"), "").unwrap();
        assert_eq!(nodes(root.path()).len(), 1);
        fs::create_dir_all(root.path().join("net")).unwrap();
        fs::write(root.path().join("net/tun"), "").unwrap();
        assert_eq!(
            nodes(root.path()),
            [
                ("/dev/uio3".into(), "mrw".into()),
                ("/dev/vhost-net".into(), "rw".into()),
                ("/dev/net/tun".into(), "rw".into())
            ]
        );
    }
}
