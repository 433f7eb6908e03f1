//! The per-attachment cache under `cniDir`: everything DEL, CHECK and GC
//! need, written before the first delegate runs and after each one.
//!
//! One file per plexus attachment, `<cniDir>/<containerID>_<ifname>.json`,
//! replaced atomically (temp file, rename; the plan written before the first
//! delegate also fsynced with its directory), created 0600 in a 0700
//! directory. A crash leaves either the old or the
//! new file, never a torn one (Multus pain point P5: "unexpected end of
//! JSON input" on DEL after a reboot). The cache is removed only when DEL
//! has succeeded for every delegate.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use plexus_cni::conf::NetworkConfigList;
use plexus_cni::version::CURRENT;
use plexus_cni::{CniResult, args::CniArgs};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cluster::PodRef;

/// The cache format this build writes and reads.
pub const FORMAT: u32 = 1;

/// Everything plexus did for one `(containerID, CNI_IFNAME)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cache {
    /// [`FORMAT`].
    pub format: u32,
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME` of the plexus call (the cluster network's interface).
    pub ifname: String,
    /// `CNI_NETNS` at ADD, for GC (DEL uses the runtime's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// The pod, when the runtime named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// The attachments in ADD order; the cluster network first.
    pub attachments: Vec<CachedAttachment>,
}

/// One delegate network as it was run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CachedAttachment {
    /// `<namespace>/<nad>`, or the network name for a file-based network.
    pub network: String,
    /// The interface in the pod.
    pub ifname: String,
    /// Whether this is the cluster default network.
    #[serde(default)]
    pub default: bool,
    /// The exact delegate config list (names, args and device IDs injected).
    pub config: Value,
    /// The runtimeConfig capability arguments it was given.
    #[serde(default)]
    pub capability_args: Map<String, Value>,
    /// The `CNI_ARGS` it was given.
    #[serde(default)]
    pub cni_args: String,
    /// Gateways this attachment took the default route for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_route: Option<Vec<std::net::IpAddr>>,
    /// Its ADD result (in the newest CNI version), once ADD returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The device it was given, whose device-info file DEL removes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<crate::devices::Device>,
}

impl CachedAttachment {
    /// The config list, parsed back.
    ///
    /// # Errors
    /// When the cached config is no longer a valid network.
    pub fn list(&self) -> Result<NetworkConfigList, plexus_cni::conf::ConfError> {
        NetworkConfigList::from_value(self.config.clone())
    }

    /// The cached result, parsed back.
    #[must_use]
    pub fn result(&self) -> Option<CniResult> {
        self.result
            .as_ref()
            .and_then(|v| CniResult::parse(v, CURRENT.as_str()).ok())
            .map(|(_, r)| r)
    }

    /// Stores `result`.
    pub fn set_result(&mut self, result: &CniResult) {
        self.result = Some(result.to_value(CURRENT));
    }

    /// The cached `CNI_ARGS`.
    #[must_use]
    pub fn args(&self) -> CniArgs {
        CniArgs::parse(&self.cni_args).unwrap_or_default()
    }
}

/// The cache file of an attachment.
#[must_use]
pub fn path(cni_dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    cni_dir.join(format!("{container_id}_{ifname}.json"))
}

/// Creates `dir` (and parents) with mode 0700 for the directories it
/// makes. A directory that exists keeps its mode: plexus never changes a
/// directory it did not create (the files it writes are 0600 anyway).
///
/// # Errors
/// On I/O failure.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Replaces `path` atomically with `bytes`, mode 0600, in a 0700 directory:
/// a temp file beside it, then a rename, so a reader (a later DEL) sees the
/// old or the new file and never a torn one. With `durable`, the temp file
/// is fsynced before the rename and the directory after it, so the new
/// version also survives a power loss.
///
/// # Errors
/// On I/O failure; the old file, if any, is then untouched.
pub fn write_private(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no directory"))?;
    private_dir(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("cache");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

impl Cache {
    /// Writes the plan before the first delegate runs: atomically and
    /// durably (fsync of the file and the directory), because from now on a
    /// power loss can leave leases that only this file can name for DEL.
    ///
    /// # Errors
    /// On I/O failure.
    pub fn save_plan(&self, cni_dir: &Path) -> io::Result<()> {
        self.write(cni_dir, true)
    }

    /// Records results as delegates return: atomically, without fsync. A
    /// power loss can at worst bring back the durable plan, which names the
    /// same delegates for DEL (and the pod's namespace is gone with the
    /// power anyway); a process crash cannot tear the file. Two fsyncs per
    /// delegate would cost more than plexus' whole own work on ADD.
    ///
    /// # Errors
    /// On I/O failure.
    pub fn save(&self, cni_dir: &Path) -> io::Result<()> {
        self.write(cni_dir, false)
    }

    fn write(&self, cni_dir: &Path, durable: bool) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("cache serialises");
        write_private(
            &path(cni_dir, &self.container_id, &self.ifname),
            &bytes,
            durable,
        )
    }

    /// Reads the cache of an attachment; `Ok(None)` when there is none.
    ///
    /// # Errors
    /// When it exists but cannot be read or parsed (damaged by hand, or a
    /// format from a newer plexus).
    pub fn load(cni_dir: &Path, container_id: &str, ifname: &str) -> Result<Option<Self>, String> {
        Self::load_path(&path(cni_dir, container_id, ifname))
    }

    fn load_path(p: &Path) -> Result<Option<Self>, String> {
        let bytes = match fs::read(p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", p.display())),
        };
        Self::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", p.display()))
    }

    /// A cache file's contents, parsed and checked.
    ///
    /// # Errors
    /// JSON that is not a cache, or a format from another plexus.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let cache: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if cache.format != FORMAT {
            return Err(format!("cache format {} is not {FORMAT}", cache.format));
        }
        Ok(cache)
    }

    /// Removes the cache of an attachment (absent is fine).
    ///
    /// # Errors
    /// On I/O failure other than "not found".
    pub fn remove(cni_dir: &Path, container_id: &str, ifname: &str) -> io::Result<()> {
        match fs::remove_file(path(cni_dir, container_id, ifname)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every readable cache in `cni_dir`, for GC. Unreadable files are
    /// skipped with a warning: GC must not stop at one bad file.
    #[must_use]
    pub fn all(cni_dir: &Path) -> Vec<Self> {
        let Ok(entries) = fs::read_dir(cni_dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "json")
                    && !p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with('.'))
            })
            .collect();
        paths.sort();
        paths
            .iter()
            .filter_map(|p| match Self::load_path(p) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping unreadable cache file");
                    None
                }
            })
            .collect()
    }
}

/// An exclusive `flock(2)` on an attachment's lock file,
/// `<cniDir>/<containerID>_<ifname>.lock`: ADD holds it from before its plan
/// is cached until it returns, DEL waits for it, and GC leaves alone a
/// container whose lock is held (its ADD is still running, and its cache,
/// a plan without results, is not stale). The kernel drops the lock when
/// the process ends, however it ends; the file goes when the holder lets
/// go, so it exists only while someone works on the attachment.
#[derive(Debug)]
pub struct AttachmentLock {
    _file: File,
    path: PathBuf,
}

impl AttachmentLock {
    fn open(cni_dir: &Path, container_id: &str, ifname: &str) -> io::Result<(File, PathBuf)> {
        private_dir(cni_dir)?;
        let path = cni_dir.join(format!("{container_id}_{ifname}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        Ok((file, path))
    }

    fn flock(file: &File, nonblocking: bool) -> io::Result<bool> {
        use std::os::fd::AsRawFd as _;
        let op = libc::LOCK_EX | if nonblocking { libc::LOCK_NB } else { 0 };
        loop {
            // SAFETY: flock(2) on a descriptor `file` owns.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EWOULDBLOCK) if nonblocking => return Ok(false),
                _ => return Err(e),
            }
        }
    }

    /// Takes the lock, waiting for a holder; `None` (logged) when the lock
    /// file cannot be made, and the caller goes on without it.
    #[must_use]
    pub fn take(cni_dir: &Path, container_id: &str, ifname: &str) -> Option<Self> {
        let taken = Self::open(cni_dir, container_id, ifname)
            .and_then(|(file, path)| Self::flock(&file, false).map(|_| Self { _file: file, path }));
        match taken {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "cannot lock the attachment; going on without");
                None
            }
        }
    }

    /// Takes the lock if nobody holds it; `Ok(None)` when someone does.
    ///
    /// # Errors
    /// When the lock file cannot be made.
    pub fn try_take(cni_dir: &Path, container_id: &str, ifname: &str) -> io::Result<Option<Self>> {
        let (file, path) = Self::open(cni_dir, container_id, ifname)?;
        Ok(Self::flock(&file, true)?.then_some(Self { _file: file, path }))
    }
}

impl Drop for AttachmentLock {
    /// Removes the file, then (as the fields drop) lets go of the lock.
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A network config list as a JSON object, for the cache.
#[must_use]
pub fn list_to_value(list: &NetworkConfigList) -> Value {
    let mut m = Map::new();
    m.insert("cniVersion".into(), list.cni_version.as_str().into());
    m.insert("name".into(), list.name.clone().into());
    if list.disable_check {
        m.insert("disableCheck".into(), true.into());
    }
    if list.disable_gc {
        m.insert("disableGC".into(), true.into());
    }
    m.insert(
        "plugins".into(),
        Value::Array(
            list.plugins
                .iter()
                .map(|p| Value::Object(p.as_map().clone()))
                .collect(),
        ),
    );
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use serde_json::json;

    use super::*;

    fn sample() -> Cache {
        let list = NetworkConfigList::from_value(json!({"cniVersion": "0.4.0", "name": "n",
            "disableCheck": true, "plugins": [{"type": "macvlan", "master": "eth0"}]}))
        .unwrap();
        Cache {
            format: FORMAT,
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: Some("/run/netns/p".into()),
            pod: Some(PodRef {
                namespace: "ns".into(),
                name: "p".into(),
                uid: None,
            }),
            attachments: vec![CachedAttachment {
                network: "ns/n".into(),
                ifname: "net1".into(),
                default: false,
                config: list_to_value(&list),
                capability_args: Map::new(),
                cni_args: "IgnoreUnknown=1;K8S_POD_NAME=p".into(),
                default_route: None,
                result: None,
                device: Some(crate::devices::Device {
                    resource: "intel.com/sriov".into(),
                    id: "0000:03:02.3".into(),
                    info_file: "/run/devinfo/cni/ns-n-c1_net1".into(),
                }),
            }],
        }
    }

    #[test]
    fn a_directory_that_exists_keeps_its_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("shared");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        sample().save(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o755);
        assert_eq!(
            fs::metadata(path(&dir, "c1", "eth0")).unwrap().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn the_lock_is_exclusive_and_its_file_goes_with_it() {
        let tmp = tempfile::tempdir().unwrap();
        let held = AttachmentLock::take(tmp.path(), "c1", "eth0").unwrap();
        assert!(
            AttachmentLock::try_take(tmp.path(), "c1", "eth0")
                .unwrap()
                .is_none()
        );
        assert!(
            AttachmentLock::try_take(tmp.path(), "c2", "eth0")
                .unwrap()
                .is_some()
        );
        drop(held);
        assert!(!tmp.path().join("c1_eth0.lock").exists());
        assert!(
            AttachmentLock::try_take(tmp.path(), "c1", "eth0")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn round_trip_private_and_atomic() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let mut c = sample();
        c.save_plan(&dir).unwrap();
        let file = path(&dir, "c1", "eth0");
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let back = Cache::load(&dir, "c1", "eth0").unwrap().unwrap();
        assert_eq!(back, c);
        let list = back.attachments[0].list().unwrap();
        assert!(list.disable_check);
        assert_eq!(list.cni_version.as_str(), "0.4.0");
        assert_eq!(back.attachments[0].args().get("K8S_POD_NAME"), Some("p"));

        c.attachments[0].set_result(&CniResult::default());
        c.save(&dir).unwrap();
        // No temp file is left beside it.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("c1_eth0.json")]);
        assert_eq!(Cache::all(&dir).len(), 1);

        Cache::remove(&dir, "c1", "eth0").unwrap();
        Cache::remove(&dir, "c1", "eth0").unwrap();
        assert!(Cache::load(&dir, "c1", "eth0").unwrap().is_none());
    }

    #[test]
    fn damaged_cache_is_an_error_not_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(path(tmp.path(), "c1", "eth0"), b"{\"format\":1,").unwrap();
        let e = Cache::load(tmp.path(), "c1", "eth0").unwrap_err();
        assert!(e.contains("c1_eth0.json"), "{e}");
        assert!(Cache::all(tmp.path()).is_empty());
    }
}
