//! A private BPF filesystem for one test: pins land in a temp directory
//! instead of the host's `/sys/fs/bpf`, and dropping it unmounts it, so
//! tests running in parallel never see each other's maps.

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

/// A bpffs mounted on a fresh temp directory.
#[derive(Debug)]
pub struct BpfFs {
    dir: tempfile::TempDir,
}

impl BpfFs {
    /// Mounts bpffs on a new temp directory (root only).
    pub fn new() -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("plexus-bpffs-").tempdir()?;
        let target = CString::new(dir.path().as_os_str().as_bytes())?;
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { dir })
    }

    /// The mount point.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A directory for one datapath's pins under the mount (not created).
    pub fn pin_dir(&self) -> PathBuf {
        self.root().join("plexus")
    }

    /// Names of everything pinned under the mount, relative, sorted.
    pub fn entries(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                out.push(p.strip_prefix(base).unwrap_or(&p).display().to_string());
                if p.is_dir() {
                    walk(base, &p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root(), self.root(), &mut out);
        out.sort();
        out
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        if let Ok(target) = CString::new(self.dir.path().as_os_str().as_bytes()) {
            // SAFETY: valid NUL-terminated path. Lazy unmount: pins still
            // referenced by a live program go when it does.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
