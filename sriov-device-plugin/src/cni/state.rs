//! What the `sriov` plugin keeps on disk, under `dataDir` (upstream's
//! `/var/lib/cni/sriov` layout):
//!
//! - `<containerID>-<ifname>`: the attachment cache, written before the VF
//!   is touched and updated as ADD goes, so DEL can undo exactly what ADD
//!   did even after a crash half-way (the DPDK flag included, which
//!   upstream does not persist).
//! - `pci/<pci>`: the allocation record: which container and netns have
//!   the VF. Upstream's plain netns-path form is read too.
//! - `pci/vf_lock/<pci>.lock`: the per-VF lock that serializes ADD and DEL
//!   on one VF (an old pod's slow DEL against a new pod's ADD).
//!
//! Files are 0600 in 0700 directories and replaced atomically.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use plexus_netlink::vf::{VfConfig, VfLinkMode, VlanProto};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::pf::write_atomic;

/// The VF's PF-side attributes before ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedVf {
    /// Admin MAC.
    pub mac: String,
    /// Port VLAN.
    pub vlan: u32,
    /// Its priority.
    pub qos: u32,
    /// Tag protocol was 802.1ad.
    pub dot1ad: bool,
    /// Mbit/s.
    pub min_tx_rate: u32,
    /// Mbit/s.
    pub max_tx_rate: u32,
    /// `None`: the driver does not report it.
    pub spoofchk: Option<bool>,
    /// `None`: the driver does not report it.
    pub trust: Option<bool>,
    /// `auto`, `enable`, `disable`.
    pub link_state: String,
}

impl From<&VfConfig> for SavedVf {
    fn from(c: &VfConfig) -> Self {
        Self {
            mac: c.mac.to_string(),
            vlan: c.vlan,
            qos: c.qos,
            dot1ad: c.vlan_proto == VlanProto::Dot1Ad,
            min_tx_rate: c.min_tx_rate,
            max_tx_rate: c.max_tx_rate,
            spoofchk: c.spoofchk,
            trust: c.trust,
            link_state: match c.link_state {
                VfLinkMode::Auto => "auto",
                VfLinkMode::Enable => "enable",
                VfLinkMode::Disable => "disable",
            }
            .into(),
        }
    }
}

impl SavedVf {
    /// Takes over what a stale attachment of the same VF saved (its pod
    /// died without a DEL, so the VF still has that pod's settings): for
    /// each group it `changed`, the value from before that pod is the one
    /// to restore, not the one the VF has now.
    pub fn inherit(&mut self, stale: &SavedVf, changed: Changed) {
        if changed.vlan {
            self.vlan = stale.vlan;
            self.qos = stale.qos;
            self.dot1ad = stale.dot1ad;
        }
        if changed.mac {
            self.mac.clone_from(&stale.mac);
        }
        if changed.rate {
            self.min_tx_rate = stale.min_tx_rate;
            self.max_tx_rate = stale.max_tx_rate;
        }
        if changed.spoofchk {
            self.spoofchk = stale.spoofchk;
        }
        if changed.trust {
            self.trust = stale.trust;
        }
        if changed.link_state {
            self.link_state.clone_from(&stale.link_state);
        }
    }
}

/// Which PF-side attributes ADD set (only those are restored).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Changed {
    /// VLAN, priority, protocol.
    pub vlan: bool,
    /// Admin MAC.
    pub mac: bool,
    /// TX rates.
    pub rate: bool,
    /// Spoof checking.
    pub spoofchk: bool,
    /// Trust.
    pub trust: bool,
    /// Link state.
    pub link_state: bool,
}

impl Changed {
    /// Changed by either.
    #[must_use]
    pub fn or(self, o: Changed) -> Changed {
        Changed {
            vlan: self.vlan || o.vlan,
            mac: self.mac || o.mac,
            rate: self.rate || o.rate,
            spoofchk: self.spoofchk || o.spoofchk,
            trust: self.trust || o.trust,
            link_state: self.link_state || o.link_state,
        }
    }
}

/// How far ADD got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Recorded; the VF may have PF-side changes (see `changed`).
    Prepared,
    /// The netdev may have left the host namespace.
    Moving,
    /// ADD finished.
    Done,
}

/// One attachment, as DEL, CHECK and GC need it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`: the VF's name in the pod.
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    pub netns: String,
    /// The VF's PCI address.
    pub device_id: String,
    /// Its PF's PCI address.
    pub pf_address: String,
    /// The PF's netdev.
    pub pf_netdev: Option<String>,
    /// The VF's index on the PF.
    pub vf_index: u32,
    /// Bound to a userspace (DPDK) driver: no netdev was moved.
    pub dpdk: bool,
    /// The VF netdev's name on the host before ADD (kernel mode).
    pub host_ifname: Option<String>,
    /// Its MAC then.
    pub host_mac: Option<String>,
    /// Its MTU then.
    pub host_mtu: Option<u32>,
    /// The PF-side attributes then.
    pub saved: SavedVf,
    /// What ADD set through the PF.
    pub changed: Changed,
    /// The MAC the VF has in the pod.
    pub mac: Option<String>,
    /// How far ADD got.
    pub stage: Stage,
    /// The config ADD had (IPAM's DEL gets it again).
    pub config: Value,
}

fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        ensure_dir(dir)?;
    }
    write_atomic(path, data)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Who has a VF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// The container (empty in upstream's format).
    #[serde(default)]
    pub container_id: String,
    /// Its interface (empty in upstream's format).
    #[serde(default)]
    pub ifname: String,
    /// Its network namespace path.
    pub netns: String,
}

impl Store {
    /// The store under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn cache_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}-{ifname}"))
    }

    fn alloc_path(&self, pci: &str) -> PathBuf {
        self.dir.join("pci").join(pci)
    }

    /// The cache of an attachment, if there is one.
    ///
    /// # Errors
    /// It exists but cannot be read or parsed.
    pub fn load(&self, container_id: &str, ifname: &str) -> Result<Option<Attachment>, String> {
        let p = self.cache_path(container_id, ifname);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }

    /// Writes an attachment's cache.
    ///
    /// # Errors
    /// I/O.
    pub fn save(&self, a: &Attachment) -> Result<(), String> {
        let p = self.cache_path(&a.container_id, &a.ifname);
        write_private(&p, &serde_json::to_vec_pretty(a).expect("plain data"))
            .map_err(|e| format!("{}: {e}", p.display()))
    }

    /// Removes an attachment's cache (absent is fine).
    ///
    /// # Errors
    /// I/O.
    pub fn forget(&self, container_id: &str, ifname: &str) -> Result<(), String> {
        remove(&self.cache_path(container_id, ifname))
    }

    /// Every attachment cache.
    pub fn attachments(&self) -> Vec<Attachment> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// Who has VF `pci`, if anyone.
    pub fn allocation(&self, pci: &str) -> Option<Allocation> {
        let text = std::fs::read_to_string(self.alloc_path(pci)).ok()?;
        serde_json::from_str(&text).ok().or_else(|| {
            // Upstream's record: the netns path alone.
            Some(Allocation {
                container_id: String::new(),
                ifname: String::new(),
                netns: text.trim().to_owned(),
            })
        })
    }

    /// Records that `a` has VF `pci`.
    ///
    /// # Errors
    /// I/O.
    pub fn allocate(&self, pci: &str, a: &Allocation) -> Result<(), String> {
        let p = self.alloc_path(pci);
        write_private(&p, &serde_json::to_vec(a).expect("plain data"))
            .map_err(|e| format!("{}: {e}", p.display()))
    }

    /// Releases VF `pci` (absent is fine).
    ///
    /// # Errors
    /// I/O.
    pub fn release(&self, pci: &str) -> Result<(), String> {
        remove(&self.alloc_path(pci))
    }

    /// Every VF with an allocation record.
    pub fn allocated(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.join("pci"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Takes VF `pci`'s lock, waiting up to `timeout` (upstream: 60 s).
    ///
    /// # Errors
    /// I/O, or someone held it all that time.
    pub fn lock(&self, pci: &str, timeout: Duration) -> Result<VfLock, String> {
        let dir = self.dir.join("pci").join("vf_lock");
        ensure_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("{pci}.lock"));
        let file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let started = Instant::now();
        loop {
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(VfLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(format!("lock {}: {err}", path.display()));
            }
            if started.elapsed() >= timeout {
                return Err(format!(
                    "VF {pci} is busy: another ADD or DEL held its lock for {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn remove(p: &Path) -> Result<(), String> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("{}: {e}", p.display())),
        _ => Ok(()),
    }
}

/// A held per-VF lock; released on drop (or when the process ends).
#[derive(Debug)]
pub struct VfLock {
    _file: File,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_records_and_upstream_form() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path());
        assert_eq!(s.allocation("0000:03:02.0"), None);
        let a = Allocation {
            container_id: "c1".into(),
            ifname: "net1".into(),
            netns: "/var/run/netns/x".into(),
        };
        s.allocate("0000:03:02.0", &a).unwrap();
        assert_eq!(s.allocation("0000:03:02.0"), Some(a));
        let mode = std::fs::metadata(d.path().join("pci/0000:03:02.0"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(d.path().join("pci/0000:03:02.1"), "/proc/1/ns/net\n").unwrap();
        assert_eq!(
            s.allocation("0000:03:02.1").unwrap().netns,
            "/proc/1/ns/net"
        );
        let mut all = s.allocated();
        all.sort();
        assert_eq!(all, ["0000:03:02.0", "0000:03:02.1"]);
        s.release("0000:03:02.0").unwrap();
        s.release("0000:03:02.0").unwrap();
        assert_eq!(s.allocated(), ["0000:03:02.1"]);
    }

    #[test]
    fn the_vf_lock_excludes_and_times_out() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path());
        let held = s.lock("0000:03:02.0", Duration::ZERO).unwrap();
        let e = s
            .lock("0000:03:02.0", Duration::from_millis(50))
            .unwrap_err();
        assert!(e.contains("is busy"), "{e}");
        s.lock("0000:03:02.1", Duration::ZERO).unwrap();
        drop(held);
        s.lock("0000:03:02.0", Duration::ZERO).unwrap();
    }
}
