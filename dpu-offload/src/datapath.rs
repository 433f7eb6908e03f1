//! The eBPF back end's kernel side: loads Plexus's tc classifier, keeps its
//! maps pinned on a BPF filesystem, attaches it to ports, swaps flow tables
//! and reads them back.
//!
//! Owns the pinned state (`--bpf-dir`, `/sys/fs/bpf/plexus` by default:
//! `px_active`, `px_tables`, `px_masks`, `px_flows`, `px_stats`,
//! `px_ports`, and the program, `px_prog_<hash of the object>`, so the
//! verifier runs once per build rather than once per apply), the
//! classifier's attachment (one `cls_bpf` direct-action filter per port at
//! clsact ingress, preference [`PREF`], visible to `tc filter show`), and
//! the generation swap:
//!
//! 1. write the new table into the generation packets do not use;
//! 2. attach (or re-attach, atomically with `tc filter replace`) the
//!    classifier on every port of the table;
//! 3. flip `px_active`: one map update (generation = epoch parity, read
//!    with one load), so a packet sees the old table or the new one;
//! 4. wait an RCU grace period ([`grace_period`]), so no packet is still
//!    searching the old generation, then delete it and take the classifier
//!    off ports no flow uses (their clsact stays until `flush`: adding or
//!    removing one deactivates the port's queues).
//!
//! A flow present before and after keeps its counter slot, so its counters
//! run on. A crash leaves at worst a half-written inactive generation,
//! which the next apply deletes first. Everything is found again from the
//! kernel (pins and tc dumps), never from a state file.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::SchedClassifier,
};
use plexus_netlink::{
    Netlink, attr,
    tc::{self, ETH_P_ALL, PARENT_INGRESS, TcFilter},
};
use serde::Serialize;

use crate::{
    dump::Counters,
    ebpf::{
        self, EbpfTable, MAX_FLOWS, PxActive, PxBloom, PxCounter, PxFlow, PxKey, PxLookup, PxTable,
        PxTableKey, SLOT_CACHE_MISS, SLOT_ERROR, SLOT_MISS,
    },
    flow::Flow,
    flower::PortMap,
    install::Change,
};

/// The classifier object, built from `bpf/plexus_tc.c` by `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/plexus_tc.o"));

/// Where the maps are pinned unless told otherwise.
pub const DEFAULT_BPF_DIR: &str = "/sys/fs/bpf/plexus";
/// tc preference of the classifier: just below the flower range, so it is
/// Plexus's and runs before anything Plexus leaves to flower.
pub const PREF: u16 = crate::flower::PRIO_BASE - 1;
/// tc handle of the classifier.
pub const HANDLE: u32 = 1;
/// `TCA_BPF_NAME` of the classifier.
pub const FILTER_NAME: &str = "plexus_tc";
/// The program in the object.
const PROGRAM: &str = "px_classify";
/// `BPF_FS_MAGIC`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// `TCA_BPF_*` (`pkt_cls.h`).
mod cls_bpf {
    pub const FD: u16 = 6;
    pub const NAME: u16 = 7;
    pub const FLAGS: u16 = 8;
    pub const ID: u16 = 11;
    /// `TCA_BPF_FLAG_ACT_DIRECT`: the return code is the verdict.
    pub const FLAG_ACT_DIRECT: u32 = 1;
}

/// The pinned maps, by name, with the sizes this build expects
/// (key, value, max entries).
const MAPS: [(&str, u32, u32, u32); 7] = [
    ("px_active", 4, size_of::<PxActive>() as u32, 1),
    (
        "px_tables",
        size_of::<PxTableKey>() as u32,
        size_of::<PxTable>() as u32,
        2 * ebpf::MAX_TABLES as u32,
    ),
    (
        "px_masks",
        4,
        size_of::<PxKey>() as u32,
        2 * ebpf::MASK_SLOTS as u32,
    ),
    (
        "px_flows",
        size_of::<PxLookup>() as u32,
        size_of::<PxFlow>() as u32,
        2 * MAX_FLOWS as u32,
    ),
    (
        "px_stats",
        4,
        size_of::<PxCounter>() as u32,
        ebpf::STATS_SLOTS,
    ),
    ("px_ports", 4, 4, ebpf::MAX_TABLES as u32),
    (
        "px_bloom",
        4,
        size_of::<PxBloom>() as u32,
        2 * ebpf::MASK_SLOTS as u32,
    ),
];

/// `px_ports` flag: Plexus created the port's clsact qdisc (a record for
/// `bpftool`; whose the qdisc is, the qdisc's own mark says: see
/// [`crate::install::OWNER_CHAIN`]).
const PORT_CREATED_CLSACT: u32 = 1;

/// What can go wrong in the eBPF datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The pin directory is not on a BPF filesystem.
    #[error(
        "{0} is not on a BPF filesystem; mount one (mount -t bpf bpf /sys/fs/bpf) or pass --bpf-dir on one"
    )]
    NotBpffs(PathBuf),
    /// The pin directory is not on bpffs, and a bpffs mounted for it would
    /// be private to this process (a mount namespace of its own).
    #[error(
        "{0} is not on a BPF filesystem, and this process runs in a mount namespace of its own \
         (`ip netns exec` makes one and remounts /sys): a bpffs mounted here would vanish with \
         the process, and the datapath's pins with it, while its classifier kept running. \
         Pass --bpf-dir on a bpffs the host mounted outside /sys (e.g. `mount -t bpf bpf \
         /run/plexus-bpf` once, then --bpf-dir /run/plexus-bpf/plexus), or enter only the \
         network namespace (`nsenter --net=/run/netns/NAME`); nothing was installed"
    )]
    PrivateBpffs(PathBuf),
    /// The kernel refused the classifier (with the verifier's last words).
    #[error("the kernel refused the eBPF classifier: {0}")]
    Load(String),
    /// Pins from another build of the datapath.
    #[error(
        "{dir}: pinned map {map} is not this datapath's ({why}); remove it with `dpu-offload flush`"
    )]
    Incompatible {
        /// Pin directory.
        dir: PathBuf,
        /// Map.
        map: &'static str,
        /// What differs.
        why: String,
    },
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// Map.
        map: &'static str,
        /// aya's error.
        #[source]
        source: aya::maps::MapError,
    },
    /// Files under the pin directory.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// tc (attach, detach, dumps).
    #[error(transparent)]
    Netlink(#[from] plexus_netlink::Error),
}

type Result<T> = std::result::Result<T, DatapathError>;

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { map, source }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> DatapathError + '_ {
    move |source| DatapathError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The datapath's maps.
pub struct Maps {
    active: Array<MapData, PxActive>,
    tables: BpfHashMap<MapData, PxTableKey, PxTable>,
    masks: Array<MapData, PxKey>,
    bloom: Array<MapData, PxBloom>,
    flows: BpfHashMap<MapData, PxLookup, PxFlow>,
    stats: PerCpuArray<MapData, PxCounter>,
    ports: BpfHashMap<MapData, u32, u32>,
    /// `px_flows` and `px_stats` for batch operations.
    flows_fd: OwnedFd,
    stats_fd: OwnedFd,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maps").finish_non_exhaustive()
    }
}

/// One flow as the datapath holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct EbpfInstalled {
    /// The flow rebuilt from its map entries (ports by name where known).
    pub flow: Flow,
    /// Counter slot.
    pub slot: u32,
    /// Its counters, summed over CPUs (no hardware part).
    pub counters: Counters,
}

/// The classifier on one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// Port.
    pub ifindex: u32,
    /// The program's id (`bpftool prog show id N`).
    pub prog_id: Option<u32>,
}

/// Datapath-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DatapathStats {
    /// Packets that matched no flow (left to the rest of tc / the stack).
    pub miss: Counters,
    /// Failed actions: a failed mirror copy (the packet goes on, as with
    /// act_mirred) or a failed rewrite, redirect or goto (the packet is
    /// dropped).
    pub error: Counters,
    /// Table lookups the microflow cache did not answer, so that the
    /// subtable search ran: a packet's first in an epoch, or one whose
    /// cache slot another microflow took since.
    pub cache_misses: u64,
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EbpfReport {
    /// Per flow of the table (by index): added or kept, and its slot.
    pub flows: Vec<(usize, Change, u32)>,
    /// Flows of the old table not in the new one.
    pub removed: usize,
    /// Ports the classifier is attached to.
    pub ports: Vec<u32>,
}

/// Whether `dir` (or the directory it would be created in) is on bpffs.
fn on_bpffs(dir: &Path) -> bool {
    let mut p = Some(dir);
    while let Some(d) = p {
        if d.exists() {
            let Ok(c) = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()) else {
                return false;
            };
            // SAFETY: statfs writes into the zeroed struct we own; `c` is a
            // valid NUL-terminated path.
            let mut s: libc::statfs = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            if unsafe { libc::statfs(c.as_ptr(), &mut s) } != 0 {
                return false;
            }
            return s.f_type as i64 == BPF_FS_MAGIC;
        }
        p = d.parent();
    }
    false
}

/// Whether this process has a mount namespace of its own: not PID 1's, or
/// (where PID 1's cannot be read, as in some sandboxes) not its parent's.
/// `ip netns exec` makes one. `None` when neither can be read.
fn in_private_mount_ns() -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let ours = id("/proc/self/ns/mnt")?;
    // SAFETY: getppid cannot fail.
    let parent = unsafe { libc::getppid() };
    let other = id("/proc/1/ns/mnt").or_else(|| id(&format!("/proc/{parent}/ns/mnt")))?;
    Some(ours != other)
}

/// Makes sure `dir` can hold pins: mounts bpffs on `/sys/fs/bpf` when the
/// directory is under it and nothing is mounted there (as Cilium does),
/// but never in a mount namespace of this process's own, where it would
/// be gone, pins and all, when the process ends.
fn prepare_dir(dir: &Path) -> Result<()> {
    let sys = Path::new("/sys/fs/bpf");
    if !on_bpffs(dir) && dir.starts_with(sys) && sys.is_dir() {
        if in_private_mount_ns() == Some(true) {
            return Err(DatapathError::PrivateBpffs(dir.to_owned()));
        }
        let src = c"bpf";
        let target = c"/sys/fs/bpf";
        // SAFETY: all pointers are valid NUL-terminated strings or NULL.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                c"mode=0700".as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(io_err(sys)(io::Error::last_os_error()));
        }
    }
    if !on_bpffs(dir) {
        return Err(DatapathError::NotBpffs(dir.to_owned()));
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))
}

/// Checks pins left in `dir` against this build's layouts.
fn check_pins(dir: &Path) -> Result<()> {
    for (name, key, value, max) in MAPS {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let md = MapData::from_pin(&path).map_err(map_err(name))?;
        let info = md.info().map_err(map_err(name))?;
        let got = (info.key_size(), info.value_size(), info.max_entries());
        if got != (key, value, max) {
            return Err(DatapathError::Incompatible {
                dir: dir.to_owned(),
                map: name,
                why: format!(
                    "key/value/entries {}/{}/{}, this build uses {key}/{value}/{max}",
                    got.0, got.1, got.2
                ),
            });
        }
    }
    Ok(())
}

/// Holds `flock` on the pin directory: one apply or flush at a time.
#[derive(Debug)]
struct DirLock {
    _file: File,
}

impl DirLock {
    fn take(dir: &Path) -> Result<Self> {
        let f = File::open(dir).map_err(io_err(dir))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io_err(dir)(io::Error::last_os_error()));
        }
        Ok(Self { _file: f })
    }
}

/// A map's descriptor, for batch operations aya does not have.
fn map_fd(m: &Map, name: &'static str) -> Result<OwnedFd> {
    let md = match m {
        Map::HashMap(md) | Map::Array(md) | Map::PerCpuArray(md) => md,
        _ => {
            return Err(DatapathError::Map {
                map: name,
                source: aya::maps::MapError::InvalidName { name: name.into() },
            });
        }
    };
    md.fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(io_err(Path::new(name)))
}

fn take_fd(ebpf: &Ebpf, name: &'static str) -> Result<OwnedFd> {
    let m = ebpf.map(name).ok_or(DatapathError::Map {
        map: name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    })?;
    map_fd(m, name)
}

fn pinned_fd(dir: &Path, name: &'static str) -> Result<OwnedFd> {
    let md = MapData::from_pin(dir.join(name)).map_err(map_err(name))?;
    let m = Map::from_map_data(md).map_err(map_err(name))?;
    map_fd(&m, name)
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let m = ebpf.take_map(name).ok_or(DatapathError::Map {
        map: name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    })?;
    T::try_from(m).map_err(map_err(name))
}

fn pinned<T>(dir: &Path, name: &'static str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let md = MapData::from_pin(dir.join(name)).map_err(map_err(name))?;
    let m = Map::from_map_data(md).map_err(map_err(name))?;
    T::try_from(m).map_err(map_err(name))
}

fn sum(v: &PerCpuValues<PxCounter>) -> Counters {
    let mut c = Counters::default();
    for x in v.iter() {
        c.packets += x.packets;
        c.bytes += x.bytes;
    }
    c
}

impl Maps {
    /// The pinned maps in `dir`; `None` when the datapath is not there.
    ///
    /// # Errors
    /// Pins that do not open or are another build's.
    pub fn open(dir: &Path) -> Result<Option<Self>> {
        if !dir.join("px_flows").exists() {
            return Ok(None);
        }
        check_pins(dir)?;
        Ok(Some(Self {
            active: pinned(dir, "px_active")?,
            tables: pinned(dir, "px_tables")?,
            masks: pinned(dir, "px_masks")?,
            bloom: pinned(dir, "px_bloom")?,
            flows: pinned(dir, "px_flows")?,
            stats: pinned(dir, "px_stats")?,
            ports: pinned(dir, "px_ports")?,
            flows_fd: pinned_fd(dir, "px_flows")?,
            stats_fd: pinned_fd(dir, "px_stats")?,
        }))
    }

    fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self> {
        let flows_fd = take_fd(ebpf, "px_flows")?;
        let stats_fd = take_fd(ebpf, "px_stats")?;
        Ok(Self {
            flows_fd,
            stats_fd,
            active: take(ebpf, "px_active")?,
            tables: take(ebpf, "px_tables")?,
            masks: take(ebpf, "px_masks")?,
            bloom: take(ebpf, "px_bloom")?,
            flows: take(ebpf, "px_flows")?,
            stats: take(ebpf, "px_stats")?,
            ports: take(ebpf, "px_ports")?,
        })
    }

    /// The generation packets use.
    ///
    /// # Errors
    /// The map read failed.
    pub fn generation(&self) -> Result<u32> {
        Ok(self.active()?.epoch & 1)
    }

    /// The generation packets use and the epoch (flips so far).
    ///
    /// # Errors
    /// The map read failed.
    pub fn active(&self) -> Result<PxActive> {
        self.active.get(&0, 0).map_err(map_err("px_active"))
    }

    /// Every `px_flows` entry, of both generations.
    fn all_flows(&self) -> Result<Vec<(PxLookup, PxFlow)>> {
        batch::lookup_all(&self.flows_fd).map_err(io_err(Path::new("px_flows")))
    }

    fn all_tables(&self) -> Result<Vec<PxTableKey>> {
        self.tables
            .keys()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(map_err("px_tables"))
    }

    fn mask(&self, id: u32) -> Result<PxKey> {
        self.masks.get(&id, 0).map_err(map_err("px_masks"))
    }

    /// Ports the datapath has attached to since the last flush (the
    /// classifier may have left a port no flow uses; its clsact stays),
    /// with their `px_ports` flags.
    fn attached(&self) -> Result<HashMap<u32, u32>> {
        self.ports
            .iter()
            .collect::<std::result::Result<HashMap<_, _>, _>>()
            .map_err(map_err("px_ports"))
    }

    /// A counter slot, summed over CPUs.
    ///
    /// # Errors
    /// The map read failed.
    pub fn counters(&self, slot: u32) -> Result<Counters> {
        Ok(sum(&self
            .stats
            .get(&slot, 0)
            .map_err(map_err("px_stats"))?))
    }

    /// Miss and error counters.
    ///
    /// # Errors
    /// The map read failed.
    pub fn stats(&self) -> Result<DatapathStats> {
        Ok(DatapathStats {
            miss: self.counters(SLOT_MISS)?,
            error: self.counters(SLOT_ERROR)?,
            cache_misses: self.counters(SLOT_CACHE_MISS)?.packets,
        })
    }

    /// The flows of the active generation, rebuilt, with counters, in
    /// (port, table, priority descending) order.
    ///
    /// # Errors
    /// A map read failed, or an entry does not decode.
    pub fn installed(&self, ports: &PortMap) -> Result<Vec<EbpfInstalled>> {
        let g = self.generation()?;
        let mut masks: HashMap<u32, PxKey> = HashMap::new();
        let mut out = Vec::new();
        for (k, v) in self.all_flows()? {
            if k.mask_id / ebpf::MASK_SLOTS as u32 != g {
                continue;
            }
            let mask = match masks.get(&k.mask_id) {
                Some(m) => *m,
                None => {
                    let m = self.mask(k.mask_id)?;
                    masks.insert(k.mask_id, m);
                    m
                }
            };
            let n = usize::from(v.n_actions).min(ebpf::MAX_ACTIONS);
            let actions = ebpf::actions_of(&v.act[..n], ports).map_err(|why| {
                DatapathError::Incompatible {
                    dir: PathBuf::new(),
                    map: "px_flows",
                    why,
                }
            })?;
            let in_port = ports
                .name(k.key.ifindex)
                .map_or_else(|| format!("if{}", k.key.ifindex), str::to_owned);
            out.push(EbpfInstalled {
                flow: Flow {
                    line: 0,
                    table: k.key.table,
                    priority: v.priority,
                    cookie: v.cookie,
                    in_port,
                    matches: ebpf::match_of(&k.key, &mask),
                    actions,
                },
                slot: v.slot,
                counters: self.counters(v.slot)?,
            });
        }
        out.sort_by(|a, b| {
            (
                &a.flow.in_port,
                a.flow.table,
                std::cmp::Reverse(a.flow.priority),
            )
                .cmp(&(
                    &b.flow.in_port,
                    b.flow.table,
                    std::cmp::Reverse(b.flow.priority),
                ))
                .then_with(|| a.flow.to_string().cmp(&b.flow.to_string()))
        });
        Ok(out)
    }
}

/// Flows of the running generation, found by their identity across
/// generations: the bytes of the mask, the masked key and the value
/// without its counter slot. Each is indexed by a 64-bit hash of those
/// bytes (the entries themselves stay where the dump put them), and a hit
/// is confirmed byte for byte. Copying each identity into a 400-byte key
/// of a hash map, as this did first, took 5 ms of a 10k-flow apply.
struct Generation<'a> {
    flows: Vec<(&'a PxKey, &'a PxKey, &'a PxFlow)>,
    by_hash: HashMap<u64, usize, std::hash::BuildHasherDefault<WordHasher>>,
    /// Flows whose hash another one took first (rare): searched in turn.
    collided: Vec<(u64, usize)>,
    taken: Vec<bool>,
}

impl<'a> Generation<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            flows: Vec::with_capacity(n),
            by_hash: HashMap::with_capacity_and_hasher(n, Default::default()),
            collided: Vec::new(),
            taken: Vec::with_capacity(n),
        }
    }

    fn insert(&mut self, mask: &'a PxKey, key: &'a PxKey, value: &'a PxFlow) {
        let i = self.flows.len();
        self.flows.push((mask, key, value));
        self.taken.push(false);
        let h = identity_hash(mask, key, value);
        match self.by_hash.entry(h) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i);
            }
            std::collections::hash_map::Entry::Occupied(_) => self.collided.push((h, i)),
        }
    }

    /// The slot of the running flow with this identity, which it gives up.
    fn take(&mut self, mask: &PxKey, key: &PxKey, value: &PxFlow) -> Option<u32> {
        let h = identity_hash(mask, key, value);
        let first = self.by_hash.get(&h).copied();
        let more = self
            .collided
            .iter()
            .filter(|(c, _)| *c == h)
            .map(|(_, i)| *i);
        let i = first.into_iter().chain(more).find(|&i| {
            let (m, k, v) = self.flows[i];
            !self.taken[i]
                && ebpf::bytes_of(m) == ebpf::bytes_of(mask)
                && ebpf::bytes_of(k) == ebpf::bytes_of(key)
                && ebpf::bytes_of(v)[SLOT_LEN..] == ebpf::bytes_of(value)[SLOT_LEN..]
        })?;
        self.taken[i] = true;
        Some(self.flows[i].2.slot)
    }

    /// How many were not taken.
    fn left(&self) -> usize {
        self.taken.iter().filter(|t| !**t).count()
    }
}

/// `PxFlow::slot` leads the struct: the identity is the value's bytes
/// after it.
const SLOT_LEN: usize = size_of::<u32>();

/// Hashed by words (FxHash's mix): the keys are ours, not an attacker's,
/// and equality decides anyway.
#[derive(Default)]
struct WordHasher(u64);

impl std::hash::Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn identity_hash(mask: &PxKey, key: &PxKey, value: &PxFlow) -> u64 {
    use std::hash::Hasher as _;
    let mut h = WordHasher::default();
    h.write(ebpf::bytes_of(mask));
    h.write(ebpf::bytes_of(key));
    h.write(&ebpf::bytes_of(value)[SLOT_LEN..]);
    h.finish()
}

/// The classifier filter on `ifindex`.
fn filter(ifindex: u32, options: Option<Vec<u8>>) -> TcFilter {
    TcFilter {
        ifindex,
        parent: PARENT_INGRESS,
        priority: PREF,
        protocol: ETH_P_ALL,
        handle: HANDLE,
        chain: None,
        kind: "bpf".into(),
        options,
    }
}

/// `TCA_OPTIONS` of the classifier filter: program fd, name, direct action.
pub fn filter_options(prog_fd: u32) -> Vec<u8> {
    let mut w = plexus_netlink::attr::AttrWriter::with_capacity(40);
    w.put_u32(cls_bpf::FD, prog_fd)
        .put_str(cls_bpf::NAME, FILTER_NAME)
        .put_u32(cls_bpf::FLAGS, cls_bpf::FLAG_ACT_DIRECT);
    w.into_bytes()
}

/// Where the classifier is attached among `ports`.
///
/// # Errors
/// A dump failed (other than "no clsact").
pub fn attachments(nl: &mut Netlink, ports: &PortMap) -> Result<Vec<Attachment>> {
    let mut idx: Vec<u32> = ports.indexes().collect();
    idx.sort_unstable();
    idx.dedup();
    let mut out = Vec::new();
    for i in idx {
        if let Some(a) = attachment(nl, i)? {
            out.push(a);
        }
    }
    Ok(out)
}

fn attachment(nl: &mut Netlink, ifindex: u32) -> Result<Option<Attachment>> {
    let entries = match tc::dump_filters(nl, ifindex, PARENT_INGRESS, None) {
        Ok(e) => e,
        Err(plexus_netlink::Error::Other(e)) if e.errno == libc::EINVAL => return Ok(None),
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    for e in entries {
        if e.kind != "bpf" || e.priority != PREF || e.handle != HANDLE {
            continue;
        }
        let opts = e.options.unwrap_or_default();
        let attrs = attr::parse(&opts).unwrap_or_default();
        let name = attr::find(&attrs, cls_bpf::NAME).and_then(|a| a.str().map(str::to_owned));
        if name.as_deref() != Some(FILTER_NAME) {
            continue;
        }
        return Ok(Some(Attachment {
            ifindex,
            prog_id: attr::find(&attrs, cls_bpf::ID).and_then(|a| a.u32()),
        }));
    }
    Ok(None)
}

/// Removes the classifier from a port, and the port's clsact when Plexus
/// created it (the qdisc's own mark says so, whichever back end made it:
/// a port that moved from flower has flower's) and nothing else is on it.
fn detach(nl: &mut Netlink, ifindex: u32) -> Result<()> {
    remove_classifier(nl, ifindex)?;
    crate::install::remove_clsact_if_empty(nl, ifindex)?;
    Ok(())
}

/// Takes the classifier's filter off a port, if it is there.
fn remove_classifier(nl: &mut Netlink, ifindex: u32) -> Result<()> {
    match tc::del_filter(nl, &filter(ifindex, None)) {
        Err(e) if e.is_not_found() => Ok(()),
        r => r.map_err(Into::into),
    }
}

/// The datapath, loaded for writing.
#[derive(Debug)]
pub struct Datapath {
    dir: PathBuf,
    prog: OwnedFd,
    maps: Maps,
    _lock: DirLock,
}

/// The pin name of this build's program: the verifier runs once per build
/// and host, later applies reuse the pinned program (and its maps).
fn prog_pin_name() -> String {
    let h = OBJECT.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{PROG_PIN_PREFIX}{h:016x}")
}

/// The verifier's budget for one program, its subprograms included
/// (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const VERIFIER_LIMIT: u32 = 1_000_000;

/// Program pins start with this.
const PROG_PIN_PREFIX: &str = "px_prog_";

impl Datapath {
    /// Opens the datapath in `dir` for writing, taking the directory's
    /// lock: reuses this build's pinned program and the pinned maps, or
    /// loads the classifier (creating or reusing the maps) and pins it.
    ///
    /// # Errors
    /// No bpffs, pins of another build, or the verifier's refusal.
    pub fn load(dir: &Path) -> Result<Self> {
        prepare_dir(dir)?;
        let lock = DirLock::take(dir)?;
        check_pins(dir)?;
        let pin = dir.join(prog_pin_name());
        if pin.exists() {
            if let Some(maps) = Maps::open(dir)? {
                let prog = SchedClassifier::from_pin(&pin)
                    .map_err(|e| DatapathError::Load(format!("{}: {e}", pin.display())))?;
                let fd = prog
                    .fd()
                    .and_then(|f| f.as_fd().try_clone_to_owned().map_err(Into::into))
                    .map_err(|e| DatapathError::Load(format!("{e}")))?;
                return Ok(Self {
                    dir: dir.to_owned(),
                    prog: fd,
                    maps,
                    _lock: lock,
                });
            }
            std::fs::remove_file(&pin).map_err(io_err(&pin))?;
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(dir)
            .load(OBJECT)
            .map_err(|e| DatapathError::Load(format!("{e:#}")))?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| DatapathError::Load(format!("no program {PROGRAM} in the object")))?
            .try_into()
            .map_err(|e| DatapathError::Load(format!("{e}")))?;
        prog.load().map_err(|e| {
            let log = match &e {
                aya::programs::ProgramError::LoadError { verifier_log, .. } => {
                    let s = verifier_log.to_string();
                    let tail: Vec<&str> = s.lines().rev().take(12).collect();
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                }
                _ => String::new(),
            };
            DatapathError::Load(format!("{e}\n{log}"))
        })?;
        // Programs of other builds go; this one stays for the next apply.
        for e in std::fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
            if e.file_name().to_string_lossy().starts_with(PROG_PIN_PREFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        prog.pin(&pin)
            .map_err(|e| DatapathError::Load(format!("pinning {}: {e}", pin.display())))?;
        let fd = prog
            .fd()
            .and_then(|f| f.as_fd().try_clone_to_owned().map_err(Into::into))
            .map_err(|e| DatapathError::Load(format!("{e}")))?;
        let maps = Maps::from_ebpf(&mut ebpf)?;
        Ok(Self {
            dir: dir.to_owned(),
            prog: fd,
            maps,
            _lock: lock,
        })
    }

    /// How many instructions the verifier processed to load the classifier
    /// (the kernel's `verified_insns`, 5.16 and later; `None` before), out
    /// of its limit [`VERIFIER_LIMIT`].
    ///
    /// # Errors
    /// The program's pin cannot be read.
    pub fn verified_insns(&self) -> Result<Option<u32>> {
        let pin = self.dir.join(prog_pin_name());
        let info = aya::programs::ProgramInfo::from_pin(&pin)
            .map_err(|e| DatapathError::Load(format!("{}: {e}", pin.display())))?;
        Ok(info.verified_instruction_count())
    }

    /// The maps.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    fn prog_fd(&self) -> u32 {
        self.prog.as_raw_fd() as u32
    }

    /// Installs `table` (compiled by [`ebpf::compile`]) as the new
    /// generation, attaches the classifier to its ports, flips, and
    /// removes the old generation and attachments no flow needs. `ports`
    /// is every port of the host, to find stale attachments.
    ///
    /// # Errors
    /// A map update or tc request failed. Before the flip, what this call
    /// wrote is removed and the old table keeps running.
    pub fn apply(
        &mut self,
        nl: &mut Netlink,
        table: &EbpfTable,
        ports: &PortMap,
    ) -> Result<EbpfReport> {
        let g = self.maps.generation()?;
        let ng = 1 - g;
        let base = ng * ebpf::MASK_SLOTS as u32;

        // What the running generation holds; leftovers of a crashed apply
        // in the other one go first.
        let all = self.maps.all_flows()?;
        let mut used: HashSet<u32> = HashSet::with_capacity(all.len());
        let mut old_keys = Vec::with_capacity(all.len());
        let mut masks: HashMap<u32, PxKey> = HashMap::new();
        let mut leftovers = Vec::new();
        for (k, v) in &all {
            if k.mask_id / ebpf::MASK_SLOTS as u32 == g {
                if let std::collections::hash_map::Entry::Vacant(e) = masks.entry(k.mask_id) {
                    e.insert(self.maps.mask(k.mask_id)?);
                }
                used.insert(v.slot);
                old_keys.push(*k);
            } else {
                leftovers.push(*k);
            }
        }
        let mut current = Generation::with_capacity(old_keys.len());
        for (k, v) in &all {
            if k.mask_id / ebpf::MASK_SLOTS as u32 == g
                && let Some(m) = masks.get(&k.mask_id)
            {
                current.insert(m, &k.key, v);
            }
        }
        if !leftovers.is_empty() {
            // A crashed apply may have flipped to them just before: let
            // any packet still there leave first.
            grace_period();
        }
        batch::delete(&self.maps.flows_fd, &leftovers).map_err(io_err(Path::new("px_flows")))?;
        let mut old_tables = Vec::new();
        for k in self.maps.all_tables()? {
            if k.gen_ == g {
                old_tables.push(k);
            } else {
                self.maps.tables.remove(&k).map_err(map_err("px_tables"))?;
            }
        }

        // Slots: kept flows keep theirs, new ones take free ones, zeroed.
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| io_err(Path::new("/sys"))(e))?;
        let mut free = (0..MAX_FLOWS as u32).filter(|s| !used.contains(s));
        let mut report = EbpfReport::default();
        let mut entries = Vec::with_capacity(table.flows.len());
        let mut zero = Vec::new();
        for f in &table.flows {
            let kept = current.take(&table.masks[f.mask as usize], &f.key, &f.value);
            let (slot, change) = match kept {
                Some(s) => (s, Change::Kept),
                None => {
                    let s = free.next().expect("compile bounds the table to MAX_FLOWS");
                    zero.push(s);
                    (s, Change::Added)
                }
            };
            report.flows.push((f.index, change, slot));
            entries.push((
                PxLookup {
                    mask_id: base + f.mask,
                    pad: 0,
                    key: f.key,
                },
                PxFlow { slot, ..f.value },
            ));
        }
        batch::zero_percpu(&self.maps.stats_fd, &zero, size_of::<PxCounter>(), nr_cpus)
            .map_err(io_err(Path::new("px_stats")))?;
        report.removed = current.left();

        let written = self.write_generation(ng, table, &entries);
        // Where the classifier is: what px_ports recorded, and what tc
        // shows (pins removed by hand leave filters behind).
        let recorded = self.maps.attached()?;
        let mut attached_before = recorded.clone();
        for a in attachments(nl, ports)? {
            attached_before.entry(a.ifindex).or_insert(0);
        }
        let mut new_ports = Vec::new();
        let result = written
            .and_then(|()| self.attach_all(nl, &table.ports, &attached_before, &mut new_ports));
        if let Err(e) = result {
            self.clear_generation(ng, &entries, table);
            for (p, _) in new_ports {
                let _ = detach(nl, p);
                let _ = self.maps.ports.remove(&p);
            }
            return Err(e);
        }

        // The flip: the next epoch, whose parity is the new generation.
        let epoch = self.maps.active()?.epoch.wrapping_add(1);
        debug_assert_eq!(epoch & 1, ng);
        self.maps
            .active
            .set(0, PxActive { gen_: ng, epoch }, 0)
            .map_err(map_err("px_active"))?;
        // Packets that read the old epoch may still be searching the old
        // generation: it goes only once they are all out.
        grace_period();

        batch::delete(&self.maps.flows_fd, &old_keys).map_err(io_err(Path::new("px_flows")))?;
        for k in &old_tables {
            self.maps.tables.remove(k).map_err(map_err("px_tables"))?;
        }
        // Ports no flow uses lose the classifier but keep the clsact qdisc
        // (and their px_ports record, so flush still removes a qdisc it
        // created): adding or deleting a clsact deactivates the device's
        // queues, and on 6.1 a packet sent through the port meanwhile is
        // dropped uncounted (measured: ~1 packet per re-apply of a stream
        // redirected to such a port).
        let keep: HashSet<u32> = table.ports.iter().copied().collect();
        for (p, _) in attached_before {
            if !keep.contains(&p) {
                if recorded.contains_key(&p) {
                    remove_classifier(nl, p)?;
                } else {
                    // Found by tc only (pins removed by hand): nothing
                    // records its qdisc, so it goes with the filter.
                    detach(nl, p)?;
                }
            }
        }
        report.ports = table.ports.clone();
        Ok(report)
    }

    fn write_generation(
        &mut self,
        ng: u32,
        table: &EbpfTable,
        entries: &[(PxLookup, PxFlow)],
    ) -> Result<()> {
        let base = ng * ebpf::MASK_SLOTS as u32;
        let mut blooms = vec![PxBloom::default(); table.masks.len()];
        for (lk, _) in entries {
            blooms[(lk.mask_id - base) as usize].insert(&lk.key);
        }
        for (i, (m, b)) in table.masks.iter().zip(&blooms).enumerate() {
            self.maps
                .masks
                .set(base + i as u32, m, 0)
                .map_err(map_err("px_masks"))?;
            self.maps
                .bloom
                .set(base + i as u32, b, 0)
                .map_err(map_err("px_bloom"))?;
        }
        let (keys, values): (Vec<PxLookup>, Vec<PxFlow>) = entries.iter().copied().unzip();
        batch::update(&self.maps.flows_fd, &keys, &values)
            .map_err(io_err(Path::new("px_flows")))?;
        for (k, t) in &table.tables {
            let mut t = *t;
            for id in &mut t.mask_id[..t.n_masks as usize] {
                *id += base;
            }
            let k = PxTableKey { gen_: ng, ..*k };
            self.maps
                .tables
                .insert(k, t, 0)
                .map_err(map_err("px_tables"))?;
        }
        Ok(())
    }

    fn clear_generation(&mut self, ng: u32, entries: &[(PxLookup, PxFlow)], table: &EbpfTable) {
        for (k, _) in entries {
            let _ = self.maps.flows.remove(k);
        }
        for (k, _) in &table.tables {
            let _ = self.maps.tables.remove(&PxTableKey { gen_: ng, ..*k });
        }
    }

    fn attach_all(
        &mut self,
        nl: &mut Netlink,
        ports: &[u32],
        attached: &HashMap<u32, u32>,
        new_ports: &mut Vec<(u32, u32)>,
    ) -> Result<()> {
        let fd = self.prog_fd();
        for &p in ports {
            if !attached.contains_key(&p) {
                let flags = if crate::install::create_clsact(nl, p)? {
                    PORT_CREATED_CLSACT
                } else {
                    0
                };
                new_ports.push((p, flags));
                self.maps
                    .ports
                    .insert(p, flags, 0)
                    .map_err(map_err("px_ports"))?;
            }
            // Replace: a port that had the classifier gets this program
            // atomically; its table was never missing.
            nl.execute_raw(&filter(p, Some(filter_options(fd))).replace_request())?;
        }
        Ok(())
    }

    /// The pin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Waits until every packet that entered the classifier before the call
/// has left it. The classifier runs inside an RCU read-side section (tc
/// ingress runs with bottom halves off), so an RCU grace period is that
/// wait: `membarrier(MEMBARRIER_CMD_GLOBAL)` is `synchronize_rcu()` for
/// user space. Kernels booted with `nohz_full=` refuse that command; there
/// the wait is 100 ms, thousands of times a classifier run.
pub fn grace_period() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "membarrier: waiting 100 ms for the old generation's readers instead");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Removes the datapath: the classifier from every port among `ports`, the
/// clsact qdiscs that leaves empty, and the pinned maps (and the directory
/// when nothing else is in it). Returns how many flows the active table
/// held.
///
/// # Errors
/// A tc request failed or a pin could not be removed.
pub fn flush(nl: &mut Netlink, dir: &Path, ports: &PortMap) -> Result<usize> {
    let maps = if dir.exists() {
        match Maps::open(dir) {
            Ok(m) => m,
            // Pins of another build are removed all the same.
            Err(DatapathError::Incompatible { .. }) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let mut attached = match &maps {
        Some(m) => m.attached()?,
        None => HashMap::new(),
    };
    for a in attachments(nl, ports)? {
        attached.entry(a.ifindex).or_insert(0);
    }
    for p in attached.into_keys() {
        detach(nl, p)?;
    }
    let Some(maps) = maps else {
        if dir.exists() {
            remove_pins(dir)?;
        }
        return Ok(0);
    };
    let _lock = DirLock::take(dir)?;
    let g = maps.generation()?;
    let n = maps
        .all_flows()?
        .iter()
        .filter(|(k, _)| k.mask_id / ebpf::MASK_SLOTS as u32 == g)
        .count();
    drop(maps);
    remove_pins(dir)?;
    Ok(n)
}

fn remove_pins(dir: &Path) -> Result<()> {
    let progs = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(PROG_PIN_PREFIX));
    let names: Vec<String> = MAPS.iter().map(|m| m.0.to_owned()).chain(progs).collect();
    for name in names {
        let p = dir.join(name);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&p)(e)),
            _ => {}
        }
    }
    // Only if empty: the directory may be shared.
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// `BPF_MAP_*_BATCH`: one syscall per few thousand entries instead of one
/// per entry (aya 0.14 has no batch API). Hash maps and arrays, kernel ≥ 5.6.
/// Public for the install benchmark's floor.
pub mod batch {
    use std::{
        io,
        os::fd::{AsRawFd, OwnedFd},
    };

    /// The `batch` member of `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct Attr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }

    const LOOKUP: libc::c_long = 24;
    const UPDATE: libc::c_long = 26;
    const DELETE: libc::c_long = 27;
    const CHUNK: usize = 4096;

    fn call(cmd: libc::c_long, attr: &mut Attr) -> io::Result<()> {
        // SAFETY: the kernel reads and writes `attr` (its size is passed)
        // and the buffers it points at, which the callers size for
        // `count` entries.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut Attr,
                std::mem::size_of::<Attr>(),
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Writes `keys[i] -> values[i]`.
    pub fn update<K: Copy, V: Copy>(fd: &OwnedFd, keys: &[K], values: &[V]) -> io::Result<()> {
        assert_eq!(keys.len(), values.len());
        for (k, v) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
            let mut a = Attr {
                keys: k.as_ptr() as u64,
                values: v.as_ptr() as u64,
                count: k.len() as u32,
                map_fd: fd.as_raw_fd() as u32,
                ..Attr::default()
            };
            call(UPDATE, &mut a)?;
        }
        Ok(())
    }

    /// Deletes `keys` (all must exist).
    pub fn delete<K: Copy>(fd: &OwnedFd, keys: &[K]) -> io::Result<()> {
        for k in keys.chunks(CHUNK) {
            let mut a = Attr {
                keys: k.as_ptr() as u64,
                count: k.len() as u32,
                map_fd: fd.as_raw_fd() as u32,
                ..Attr::default()
            };
            call(DELETE, &mut a)?;
        }
        Ok(())
    }

    /// Zeroes `slots` of a per-CPU array whose values are `size` bytes.
    pub fn zero_percpu(fd: &OwnedFd, slots: &[u32], size: usize, cpus: usize) -> io::Result<()> {
        let stride = size.div_ceil(8) * 8 * cpus;
        for k in slots.chunks(CHUNK) {
            let zeros = vec![0u64; stride / 8 * k.len()];
            let mut a = Attr {
                keys: k.as_ptr() as u64,
                values: zeros.as_ptr() as u64,
                count: k.len() as u32,
                map_fd: fd.as_raw_fd() as u32,
                ..Attr::default()
            };
            call(UPDATE, &mut a)?;
        }
        Ok(())
    }

    /// Every entry of a hash map.
    pub fn lookup_all<K: Copy + Default, V: Copy>(fd: &OwnedFd) -> io::Result<Vec<(K, V)>> {
        let mut out = Vec::new();
        let mut keys = vec![K::default(); CHUNK];
        let mut values: Vec<std::mem::MaybeUninit<V>> = Vec::with_capacity(CHUNK);
        // SAFETY: MaybeUninit needs no initialisation.
        unsafe { values.set_len(CHUNK) };
        // The hash map's batch cursor is a bucket number (u32); 8 bytes
        // leave room.
        let mut token = [0u64; 2];
        let mut first = true;
        loop {
            let mut a = Attr {
                in_batch: if first { 0 } else { token.as_ptr() as u64 },
                out_batch: token[1..].as_mut_ptr() as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: CHUNK as u32,
                map_fd: fd.as_raw_fd() as u32,
                ..Attr::default()
            };
            let r = call(LOOKUP, &mut a);
            let n = a.count as usize;
            for i in 0..n {
                // SAFETY: the kernel filled the first `n` values.
                out.push((keys[i], unsafe { values[i].assume_init() }));
            }
            match r {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
                Err(e) => return Err(e),
            }
            token[0] = token[1];
            first = false;
        }
    }
}
