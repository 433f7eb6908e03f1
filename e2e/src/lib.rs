//! Helpers for the black-box tests in `e2e/tests/`: where the built binaries
//! are, and the libcni conformance runner (`e2e/conformance/`).
//!
//! The tests run our binaries the way a runtime does (environment + stdin,
//! or through libcni itself), never by calling library functions.

pub mod bench;
pub mod cri;
pub mod meta;
pub mod rbac;
pub mod sriov;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// Where the reference CNI plugins are (Debian `containernetworking-plugins`).
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// The cargo target directory holding this test binary's profile
/// (`target/debug` or `target/release`).
///
/// # Panics
/// When the test binary's own path cannot be read.
#[must_use]
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PLEXUS_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test-binary>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_owned()
}

/// A built workspace binary, e.g. `bin("plexus")`.
///
/// # Panics
/// When it has not been built: `make test` builds every binary first (or
/// run `cargo build --workspace --bins`).
#[must_use]
pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --workspace --bins` (make test does)",
        path.display()
    );
    path
}

/// The libcni conformance runner, built once per test process into the
/// target directory by `e2e/conformance/build.sh` (offline, Debian's Go and
/// libcni; `make setup` installs them).
///
/// # Panics
/// When the build fails; the script's message says what is missing.
pub fn conformance_runner() -> &'static Path {
    static RUNNER: OnceLock<PathBuf> = OnceLock::new();
    RUNNER.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/build.sh");
        let out_dir = target_dir().join("conformance");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&out_dir)
            .output()
            .expect("run e2e/conformance/build.sh");
        assert!(
            out.status.success(),
            "building the libcni conformance runner failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// Parses the runner's output: one JSON object per step.
///
/// # Panics
/// When a line is not JSON (the runner prints nothing else on stdout).
#[must_use]
pub fn steps(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("runner line {l:?}: {e}")))
        .collect()
}

/// `sriov-device-plugin` (the daemon) as tests and benchmarks start it in
/// `ns`: config `<dir>/config.json`, kubelet directories, device-info and
/// the device root (`<dir>/dev`, empty until a test puts nodes there)
/// under `dir`, sysfs at `sysfs`; add the intervals and the log level.
///
/// # Panics
/// When the namespace cannot be entered.
#[must_use]
pub fn device_plugin(ns: &plexus_testkit::NetNs, dir: &Path, sysfs: &Path) -> Command {
    let mut cmd = ns.command(bin("sriov-device-plugin")).expect("netns");
    cmd.arg("--config-file")
        .arg(dir.join("config.json"))
        .arg("--sysfs-root")
        .arg(sysfs)
        .arg("--device-plugin-dir")
        .arg(dir.join("device-plugins"))
        .arg("--plugins-registry-dir")
        .arg(dir.join("plugins_registry"))
        .arg("--devinfo-dir")
        .arg(dir.join("devinfo/dp"))
        .arg("--dev-root")
        .arg(dir.join("dev"));
    cmd
}

/// Runs `sriov-device-plugin [GLOBAL...] discover --config-file CONFIG
/// --sysfs-root SYSFS [--json]` in `ns` (whose routes decide which NICs
/// carry the default route) and returns what it printed.
///
/// # Panics
/// When it cannot run or exits non-zero.
#[must_use]
pub fn discover(
    ns: &plexus_testkit::NetNs,
    global: &[&str],
    config: &Path,
    sysfs: &Path,
    json: bool,
) -> String {
    let mut cmd = ns.command(bin("sriov-device-plugin")).expect("netns");
    cmd.args(global)
        .args(["discover", "--config-file"])
        .arg(config)
        .arg("--sysfs-root")
        .arg(sysfs);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run sriov-device-plugin discover");
    assert!(
        out.status.success(),
        "discover: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}
