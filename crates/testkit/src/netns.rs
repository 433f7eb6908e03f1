//! Throwaway named network namespaces for real-kernel tests.
//!
//! Owns: creating a netns exactly the way iproute2's `ip netns add` does (so
//! `ip netns exec`, `ip -n NAME` and CNI plugins given `/run/netns/NAME` all
//! see it), running closures and commands inside it, a few `ip -j` helpers
//! for assertions, and removing it again on drop.
//!
//! Must not: touch the caller's own thread's namespace (every entry into a
//! namespace happens on a fresh thread or in a child process after `fork`),
//! shell out to `ip netns add/del`, or leave a namespace file or mount behind.
//!
//! The one-time setup of `/run/netns` (mkdir, then make it a shared mount
//! point, bind-mounting it onto itself first if it is not a mount point yet)
//! mirrors iproute2 `ip/ipnetns.c: netns_add()`. Like `ip netns add`, that
//! self bind mount of `/run/netns` stays: it is shared infrastructure, not
//! per-test state, and other tools expect it.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, DirBuilder, File};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::panic;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;
use nix::sys::statfs::{NSFS_MAGIC, statfs};
use serde_json::Value;

/// Where iproute2 (and the CNI ecosystem) keeps named network namespaces.
/// Fixed by convention (`NETNS_RUN_DIR` in iproute2 `include/namespace.h`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Longest prefix accepted by [`NetNs::with_prefix`]; keeps names readable.
const MAX_PREFIX_LEN: usize = 16;

/// Per-process counter that, with the pid and random bits, makes names unique.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace at `/run/netns/<name>`, removed on drop
/// (unless it was only [attached](NetNs::attach) to).
///
/// Creation and removal are safe from many threads and processes at once.
pub struct NetNs {
    name: String,
    path: PathBuf,
    owned: bool,
}

impl fmt::Debug for NetNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetNs")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

impl NetNs {
    /// Creates a fresh named netns (`plx-<pid>-<n>-<rand>`) with `lo` up.
    ///
    /// # Errors
    ///
    /// Any failing syscall (not root, no `/run`, mount refused ...), with the
    /// step that failed in the message.
    pub fn new() -> io::Result<NetNs> {
        Self::create("")
    }

    /// Like [`NetNs::new`] with `prefix` in the name (`plx-<prefix>-<pid>-<n>-<rand>`)
    /// so a leaked namespace points at the test that made it.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `prefix` is longer than 16 bytes or has characters
    /// other than ASCII alphanumerics, `-` and `_`; otherwise as [`NetNs::new`].
    pub fn with_prefix(prefix: &str) -> io::Result<NetNs> {
        let valid = prefix.len() <= MAX_PREFIX_LEN
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "netns prefix {prefix:?} must be at most {MAX_PREFIX_LEN} bytes of [A-Za-z0-9_-]"
                ),
            ));
        }
        Self::create(prefix)
    }

    /// An existing named namespace someone else made (`ip netns add`),
    /// for the helpers that take a `NetNs`; dropping it leaves the
    /// namespace alone.
    ///
    /// # Errors
    ///
    /// `NotFound` when `/run/netns/<name>` is not a live namespace.
    pub fn attach(name: &str) -> io::Result<NetNs> {
        let path = Path::new(NETNS_RUN_DIR).join(name);
        if !netns_exists(&path) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a network namespace", path.display()),
            ));
        }
        Ok(NetNs {
            name: name.to_owned(),
            path,
            owned: false,
        })
    }

    /// The namespace's name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, `/run/netns/<name>` (what `CNI_NETNS` carries).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode number (what `ip netns identify` and
    /// `/proc/<pid>/ns/net` links compare by).
    ///
    /// # Errors
    ///
    /// If the namespace file cannot be stat'ed.
    pub fn inode(&self) -> io::Result<u64> {
        Ok(fs::metadata(&self.path)?.ino())
    }

    /// Opens the namespace file, e.g. to `setns` into it or hand the fd on.
    ///
    /// # Errors
    ///
    /// If the namespace file cannot be opened.
    pub fn open(&self) -> io::Result<File> {
        // std opens with O_CLOEXEC, so the fd never leaks into children.
        File::open(&self.path).map_err(|e| ctx(e, &format!("open {}", self.path.display())))
    }

    /// Runs `f` on a fresh thread that has `setns()`'d into this namespace and
    /// returns its value. The calling thread's namespace is never touched.
    ///
    /// # Panics
    ///
    /// If the namespace cannot be entered, or re-raises `f`'s panic.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        let file = self
            .open()
            .unwrap_or_else(|e| panic!("netns {}: {e}", self.name));
        thread::scope(|s| {
            let handle = s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns into netns {}: {e}", self.name));
                drop(file);
                f()
            });
            match handle.join() {
                Ok(value) => value,
                Err(payload) => panic::resume_unwind(payload),
            }
        })
    }

    /// A [`Command`] that will run inside this namespace: the child
    /// `setns()`es into it between `fork` and `exec`. Unlike `ip netns exec`
    /// there is no private mount namespace and `/sys` is not remounted, so
    /// the child sees the caller's `/sys` (fine for netlink-based tools).
    ///
    /// Use this when the child needs environment or stdin (a CNI plugin).
    ///
    /// # Errors
    ///
    /// If the namespace file cannot be opened.
    pub fn command(&self, program: impl AsRef<OsStr>) -> io::Result<Command> {
        let fd: OwnedFd = self.open()?.into();
        let mut cmd = Command::new(program);
        // SAFETY: the closure runs in the child between fork and exec, where
        // only async-signal-safe calls are allowed; it makes a single
        // `setns(2)` syscall on an fd it owns (kept open by the closure for as
        // long as the Command lives, O_CLOEXEC so the program never sees it)
        // and allocates nothing on success.
        unsafe {
            cmd.pre_exec(move || {
                // SAFETY: plain syscall on a valid, open namespace fd.
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        Ok(cmd)
    }

    /// Runs `program args...` inside the namespace and collects its output
    /// (stdin is closed), like `ip netns exec NAME program args...`.
    ///
    /// # Errors
    ///
    /// If the namespace cannot be opened or the program cannot be started;
    /// a non-zero exit is *not* an error here (see [`NetNs::sh`]).
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        self.command(program)?
            .args(args)
            .output()
            .map_err(|e| ctx(e, &format!("run {program} {args:?} in netns {}", self.name)))
    }

    /// Like [`NetNs::exec`] but insists on success and returns stdout.
    ///
    /// # Panics
    ///
    /// If the program cannot start or exits non-zero; the message carries
    /// the command line, status, stdout and stderr.
    pub fn sh(&self, program: &str, args: &[&str]) -> String {
        let out = self.exec(program, args).unwrap_or_else(|e| panic!("{e}"));
        if !out.status.success() {
            panic!(
                "in netns {}: `{program} {}` failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.name,
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
        }
        String::from_utf8(out.stdout)
            .unwrap_or_else(|e| panic!("`{program} {}` printed non-UTF-8: {e}", args.join(" ")))
    }

    /// Creates a veth pair: `name` here, `peer_name` in `peer`, both up
    /// (the wiring of a "representor" to its "VF" namespace).
    ///
    /// # Panics
    ///
    /// If `ip` fails.
    pub fn veth_to(&self, name: &str, peer: &NetNs, peer_name: &str) {
        self.sh(
            "ip",
            &[
                "link",
                "add",
                name,
                "type",
                "veth",
                "peer",
                "name",
                peer_name,
                "netns",
                peer.name(),
            ],
        );
        self.sh("ip", &["link", "set", name, "up"]);
        peer.sh("ip", &["link", "set", peer_name, "up"]);
    }

    /// Every link, as `ip -j -d link show` reports it.
    ///
    /// # Panics
    ///
    /// If `ip` fails or prints something other than a JSON array.
    pub fn links(&self) -> Vec<Value> {
        self.ip_json(&["-d", "link", "show"])
    }

    /// One link by name (`ifname`), as in [`NetNs::links`]; `None` if absent.
    ///
    /// # Panics
    ///
    /// As [`NetNs::links`].
    pub fn link(&self, name: &str) -> Option<Value> {
        self.links()
            .into_iter()
            .find(|l| l.get("ifname").and_then(Value::as_str) == Some(name))
    }

    /// The addresses on `ifname` in `ADDR/PREFIXLEN` form (`"10.1.2.3/24"`,
    /// `"fe80::1/64"`), in kernel order, both families.
    ///
    /// # Panics
    ///
    /// If the link does not exist or `ip` fails.
    pub fn addrs(&self, ifname: &str) -> Vec<String> {
        self.ip_json(&["addr", "show", "dev", ifname])
            .iter()
            .filter_map(|link| link.get("addr_info").and_then(Value::as_array))
            .flatten()
            .filter_map(|a| {
                let local = a.get("local")?.as_str()?;
                let len = a.get("prefixlen")?.as_u64()?;
                Some(format!("{local}/{len}"))
            })
            .collect()
    }

    /// IPv4 routes of the main table (`ip -j route show`).
    ///
    /// # Panics
    ///
    /// If `ip` fails.
    pub fn routes(&self) -> Vec<Value> {
        self.ip_json(&["-4", "route", "show"])
    }

    /// IPv6 routes of the main table (`ip -j -6 route show`).
    ///
    /// # Panics
    ///
    /// If `ip` fails.
    pub fn routes6(&self) -> Vec<Value> {
        self.ip_json(&["-6", "route", "show"])
    }

    /// Routes of one table (`ip -j route show table TABLE`; `"all"` works).
    ///
    /// # Panics
    ///
    /// If `ip` fails.
    pub fn routes_in_table(&self, table: &str) -> Vec<Value> {
        self.ip_json(&["route", "show", "table", table])
    }

    /// Runs `ip -j ARGS...` in the namespace and parses its JSON array.
    /// `ip` prints nothing at all for some empty results; that is `[]`.
    ///
    /// # Panics
    ///
    /// If `ip` fails or its output is not a JSON array.
    pub fn ip_json(&self, args: &[&str]) -> Vec<Value> {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.sh("ip", &full);
        if out.trim().is_empty() {
            return Vec::new();
        }
        match serde_json::from_str(&out) {
            Ok(Value::Array(items)) => items,
            Ok(other) => panic!("`ip {}` printed non-array JSON: {other}", full.join(" ")),
            Err(e) => panic!("`ip {}` printed invalid JSON ({e}): {out}", full.join(" ")),
        }
    }

    fn create(prefix: &str) -> io::Result<NetNs> {
        ensure_run_dir()?;
        let pid = std::process::id();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            // RandomState is seeded from the OS RNG: no extra dependency.
            let rand = RandomState::new().hash_one(n) & 0xffff;
            let name = if prefix.is_empty() {
                format!("plx-{pid}-{n}-{rand:04x}")
            } else {
                format!("plx-{prefix}-{pid}-{n}-{rand:04x}")
            };
            let path = Path::new(NETNS_RUN_DIR).join(&name);
            // iproute2: open(O_RDONLY | O_CREAT | O_EXCL, 0).
            match nix::fcntl::open(
                &path,
                OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(file) => drop(file),
                // Another process picked the same name; draw again.
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(ctx(e, &format!("create {}", path.display()))),
            }
            // From here on, dropping `ns` unmounts and unlinks whatever exists.
            let ns = NetNs {
                name,
                path,
                owned: true,
            };
            ns.populate()?;
            return Ok(ns);
        }
    }

    /// On a throwaway thread: unshare a new netns, pin it by bind-mounting
    /// the thread's ns file onto our file, and bring `lo` up while there.
    fn populate(&self) -> io::Result<()> {
        let path = self.path.clone();
        thread::Builder::new()
            .name("plx-netns-new".into())
            .spawn(move || -> io::Result<()> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ctx(e, "unshare(CLONE_NEWNET)"))?;
                // /proc/thread-self, not /proc/self: only this thread moved.
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| ctx(e, &format!("bind-mount netns onto {}", path.display())))?;
                // The thread is inside the new namespace: an ioctl is enough
                // to set lo up, no `ip` process needed.
                set_link_up("lo").map_err(|e| ctx(e, "bring lo up"))
            })?
            .join()
            .unwrap_or_else(|p| panic::resume_unwind(p))
    }
}

impl Drop for NetNs {
    /// `umount2(MNT_DETACH)` and unlink, like `ip netns del`. Never panics;
    /// "already gone" is fine, anything else is reported on stderr.
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        match umount2(&self.path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point (creation failed half way).
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
            Err(e) => eprintln!("plexus-testkit: umount {}: {e}", self.path.display()),
        }
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("plexus-testkit: remove {}: {e}", self.path.display()),
        }
    }
}

/// Whether `path` is a live namespace file (a bind mount of an nsfs inode,
/// as under `/run/netns`), as opposed to a missing or plain file.
pub fn netns_exists(path: impl AsRef<Path>) -> bool {
    statfs(path.as_ref()).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Prefixes an error with what we were doing, keeping its kind.
fn ctx(e: impl Into<io::Error>, what: &str) -> io::Error {
    let e = e.into();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// One-time (per process) setup of `/run/netns`, as iproute2 `netns_add()`:
/// mkdir it, make it a shared mount point so the namespace bind mounts
/// propagate to other mount namespaces, and if it is not a mount point yet
/// (`EINVAL`), bind-mount it onto itself first.
///
/// A process-wide mutex serialises our threads; an `flock` on `/run` itself
/// serialises against other test processes doing the same, so the self bind
/// mount is made once rather than stacked (iproute2 does not lock; the stack
/// would be harmless anyway).
fn ensure_run_dir() -> io::Result<()> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *done {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(NETNS_RUN_DIR)
        .map_err(|e| ctx(e, &format!("mkdir {NETNS_RUN_DIR}")))?;
    let run = File::open("/run").map_err(|e| ctx(e, "open /run"))?;
    let _lock = Flock::lock(run, FlockArg::LockExclusive).map_err(|(_, e)| ctx(e, "flock /run"))?;
    let mut made_self_bind = false;
    loop {
        match mount(
            None::<&str>,
            NETNS_RUN_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => break,
            Err(Errno::EINVAL) if !made_self_bind => {
                mount(
                    Some(NETNS_RUN_DIR),
                    NETNS_RUN_DIR,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(|e| ctx(e, &format!("bind-mount {NETNS_RUN_DIR} onto itself")))?;
                made_self_bind = true;
            }
            Err(e) => return Err(ctx(e, &format!("make {NETNS_RUN_DIR} shared"))),
        }
    }
    *done = true;
    Ok(())
}

/// Sets `IFF_UP` on `ifname` in the calling thread's netns with the classic
/// `SIOCGIFFLAGS`/`SIOCSIFFLAGS` ioctl pair (netdevice(7)).
fn set_link_up(ifname: &str) -> io::Result<()> {
    use std::os::fd::FromRawFd;

    let name = ifname.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {ifname:?} too long"),
        ));
    }
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data (arrays, integers, a union of such);
    // all-zero is a valid value for it.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in ifr.ifr_name.iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_flags of the ifreq
    // we pass by valid, exclusive pointer.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &raw mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just filled ifru_flags, so reading that union field
    // is reading initialised memory of the right type.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS only reads the ifreq we pass by valid pointer.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &raw const ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// The inode of the calling thread's own netns.
    fn own_netns_inode() -> u64 {
        fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    }

    fn flags(link: &Value) -> Vec<String> {
        link["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn two_namespaces_differ_from_each_other_and_from_ours() {
        let a = NetNs::new().unwrap();
        let b = NetNs::with_prefix("two").unwrap();
        assert_ne!(a.name(), b.name());
        assert!(b.name().starts_with("plx-two-"), "{}", b.name());
        assert_eq!(a.path(), Path::new("/run/netns").join(a.name()));
        assert!(netns_exists(a.path()) && netns_exists(b.path()));
        let (ia, ib) = (a.inode().unwrap(), b.inode().unwrap());
        assert_ne!(ia, ib);
        assert_ne!(ia, own_netns_inode());
        assert_ne!(ib, own_netns_inode());
    }

    #[test]
    fn lo_is_up_inside() {
        let ns = NetNs::new().unwrap();
        // Through `ip -n NAME`, i.e. iproute2's own view of the namespace.
        let out = Command::new("ip")
            .args(["-n", ns.name(), "-j", "link", "show", "lo"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let lo = &v[0];
        let fl = flags(lo);
        assert!(fl.contains(&"UP".to_owned()), "{lo}");
        assert!(fl.contains(&"LOWER_UP".to_owned()), "{lo}");
        assert_eq!(lo["operstate"], "UNKNOWN", "{lo}");
        // The only link in a fresh namespace, and 127.0.0.1 works.
        let links = ns.links();
        assert_eq!(links.len(), 1, "{links:?}");
        assert!(ns.addrs("lo").contains(&"127.0.0.1/8".to_owned()));
        ns.sh("ping", &["-c1", "-W1", "127.0.0.1"]);
    }

    #[test]
    fn run_sees_the_namespace_and_leaves_caller_alone() {
        let ns = NetNs::new().unwrap();
        let before = own_netns_inode();
        let inside = ns.run(own_netns_inode);
        assert_eq!(inside, ns.inode().unwrap());
        assert_eq!(own_netns_inode(), before);
        // Borrowing works: run takes non-'static closures.
        let name = ns.name().to_owned();
        let got = ns.run(|| name.clone());
        assert_eq!(got, name);
    }

    #[test]
    fn run_propagates_panics() {
        let ns = NetNs::new().unwrap();
        let caught = panic::catch_unwind(|| ns.run(|| panic!("boom inside")));
        let payload = caught.unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom inside"));
    }

    #[test]
    fn exec_runs_inside_the_namespace() {
        let ns = NetNs::new().unwrap();
        let link = fs::read_link("/proc/self/ns/net").unwrap();
        let out = ns.sh("readlink", &["/proc/self/ns/net"]);
        let expected = format!("net:[{}]", ns.inode().unwrap());
        assert_eq!(out.trim(), expected);
        assert_ne!(link.to_str().unwrap(), expected);
        // `ip netns exec` sees it too.
        let out = Command::new("ip")
            .args(["netns", "exec", ns.name(), "readlink", "/proc/self/ns/net"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
    }

    #[test]
    fn exec_reports_failure_and_sh_panics_with_details() {
        let ns = NetNs::new().unwrap();
        let out = ns.exec("ip", &["link", "show", "nosuchlink0"]).unwrap();
        assert!(!out.status.success());
        let err =
            panic::catch_unwind(|| ns.sh("ip", &["link", "show", "nosuchlink0"])).unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.contains("ip link show nosuchlink0"), "{msg}");
        assert!(msg.contains("does not exist"), "{msg}");
        assert!(ns.exec("/nonexistent/program", &[]).is_err());
    }

    #[test]
    fn helpers_then_drop_removes_file_and_mount() {
        let ns = NetNs::with_prefix("drop").unwrap();
        let path = ns.path().to_owned();
        ns.sh(
            "ip",
            &[
                "link", "add", "vtest0", "type", "veth", "peer", "name", "vtest1",
            ],
        );
        ns.sh("ip", &["addr", "add", "10.1.2.3/24", "dev", "vtest0"]);
        ns.sh("ip", &["link", "set", "vtest0", "up"]);
        assert!(ns.link("vtest0").is_some());
        assert_eq!(ns.addrs("vtest0"), ["10.1.2.3/24"]);
        assert!(ns.link("nosuch").is_none());
        drop(ns);
        assert!(!path.exists(), "{} still there", path.display());
        assert!(!netns_exists(&path));
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(path.to_str().unwrap()), "{mounts}");
    }

    #[test]
    fn attached_namespaces_are_left_alone_on_drop() {
        let owner = NetNs::with_prefix("attach").unwrap();
        let attached = NetNs::attach(owner.name()).unwrap();
        assert_eq!(attached.inode().unwrap(), owner.inode().unwrap());
        attached.sh(
            "ip",
            &["link", "add", "d0", "type", "veth", "peer", "name", "d1"],
        );
        drop(attached);
        assert!(netns_exists(owner.path()));
        assert!(owner.link("d0").is_some());
        let path = owner.path().to_owned();
        drop(owner);
        assert!(!netns_exists(&path));
        let err = NetNs::attach(path.file_name().unwrap().to_str().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn veth_created_inside_is_gone_after_drop() {
        // A veth whose peer lives in another namespace disappears from that
        // other namespace when the first is removed.
        let host = NetNs::with_prefix("host").unwrap();
        let pod = NetNs::with_prefix("pod").unwrap();
        pod.sh(
            "ip",
            &[
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                "veth-h",
                "netns",
                host.name(),
            ],
        );
        assert!(host.link("veth-h").is_some());
        drop(pod);
        // Namespace teardown is asynchronous (net/core/net_namespace.c
        // cleanup_net runs from a workqueue); poll briefly.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while host.link("veth-h").is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "veth-h survived its peer's netns"
            );
            thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn concurrent_creation_gives_unique_namespaces() {
        let handles: Vec<_> = (0..16)
            .map(|_| thread::spawn(|| NetNs::with_prefix("conc").unwrap()))
            .collect();
        let all: Vec<NetNs> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let names: HashSet<_> = all.iter().map(NetNs::name).collect();
        let inodes: HashSet<_> = all.iter().map(|n| n.inode().unwrap()).collect();
        assert_eq!(names.len(), 16);
        assert_eq!(inodes.len(), 16);
        for ns in &all {
            assert!(netns_exists(ns.path()));
        }
        let paths: Vec<_> = all.iter().map(|n| n.path().to_owned()).collect();
        drop(all);
        for p in paths {
            assert!(!p.exists(), "{} left behind", p.display());
        }
    }

    #[test]
    fn bad_prefix_is_rejected() {
        let err = NetNs::with_prefix("a/b").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(NetNs::with_prefix(&"x".repeat(17)).is_err());
    }

    #[test]
    fn netns_exists_is_false_for_plain_and_missing_files() {
        assert!(!netns_exists("/nonexistent/plx"));
        assert!(!netns_exists("/proc/self/status"));
        assert!(netns_exists("/proc/self/ns/net"));
    }

    #[test]
    fn routes_helpers_parse() {
        let ns = NetNs::new().unwrap();
        assert!(ns.routes().is_empty());
        ns.sh(
            "ip",
            &["link", "add", "d0", "type", "veth", "peer", "name", "d1"],
        );
        ns.sh("ip", &["addr", "add", "192.0.2.1/24", "dev", "d0"]);
        ns.sh("ip", &["link", "set", "d0", "up"]);
        let routes = ns.routes();
        assert!(
            routes
                .iter()
                .any(|r| r["dst"] == "192.0.2.0/24" && r["dev"] == "d0"),
            "{routes:?}"
        );
        let local = ns.routes_in_table("local");
        assert!(local.iter().any(|r| r["dst"] == "192.0.2.1"), "{local:?}");
        let _ = ns.routes6();
    }
}
