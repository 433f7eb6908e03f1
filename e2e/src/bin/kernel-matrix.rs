//! `kernel-matrix`: runs the kernel suite (`plexus_e2e::vm::SUITE`) in a VM
//! per kernel and prints which test passed on which kernel.
//!
//! ```text
//! kernel-matrix [--kernel SERIES]... [--filter EXPR] [--boot DIR] [--timeout-secs N]
//! kernel-matrix guest --nextest PATH --filter EXPR    (inside the VM)
//! ```
//!
//! On the host it writes nextest's build metadata (building the test
//! binaries if they are stale), then boots each kernel with virtme-ng
//! under TCG (`vng --disable-kvm`; nested KVM does not work on these
//! machines) with the host's filesystem as the guest's root, read-only
//! but for `target/nextest`, where the guest's nextest writes its JUnit
//! report. One boot per kernel; all suites inside it.
//!
//! `guest` is what runs inside: it names the kernel, loads the modules the
//! suites need (so a missing one fails by name) and runs nextest on the
//! prebuilt binaries.

#![expect(
    clippy::print_stdout,
    reason = "the matrix and its progress are this tool's output"
)]

use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use plexus_e2e::vm::{self, Column, Kernel};

const USAGE: &str = "usage: kernel-matrix [--kernel SERIES]... [--filter EXPR] [--boot DIR] [--timeout-secs N]\n       kernel-matrix guest --nextest PATH --filter EXPR";

struct Args {
    kernels: Vec<String>,
    filter: String,
    boot: PathBuf,
    timeout: Duration,
    nextest: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        kernels: Vec::new(),
        filter: vm::SUITE.to_owned(),
        boot: PathBuf::from("/boot"),
        timeout: Duration::from_secs(900),
        nextest: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--kernel" => a.kernels.push(value()?),
            "--filter" => {
                let f = value()?;
                if !f.trim().is_empty() {
                    a.filter = f;
                }
            }
            "--boot" => a.boot = PathBuf::from(value()?),
            "--timeout-secs" => {
                a.timeout = Duration::from_secs(
                    value()?
                        .parse()
                        .map_err(|e| format!("--timeout-secs: {e}"))?,
                );
            }
            "--nextest" => a.nextest = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if a.kernels.is_empty() {
        a.kernels = vec!["6.1".into(), "6.12".into()];
    }
    Ok(a)
}

/// `target/<profile>/`, where this binary is.
fn own_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .expect("kernel-matrix lives in target/<profile>/")
        .to_owned()
}

/// `target/`.
fn target_root() -> PathBuf {
    own_dir()
        .parent()
        .expect("kernel-matrix lives in target/<profile>/")
        .to_owned()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ is in the workspace")
        .to_owned()
}

fn in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// Runs a command whose stdout goes to `out`; stderr stays on the terminal.
fn capture(cmd: &mut Command, out: &Path) -> Result<(), String> {
    let file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let status = cmd
        .current_dir(workspace())
        .stdout(file)
        .status()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} exited with {status}"))
    }
}

fn metadata_dir() -> PathBuf {
    target_root().join("kernel-e2e")
}

/// Writes the metadata nextest needs to run prebuilt tests without cargo.
fn write_metadata() -> Result<(), String> {
    let dir = metadata_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    capture(
        Command::new("cargo").args([
            "nextest",
            "list",
            "--workspace",
            "--list-type",
            "binaries-only",
            "--message-format",
            "json",
        ]),
        &dir.join("binaries.json"),
    )?;
    capture(
        Command::new("cargo").args([
            "metadata",
            "--format-version",
            "1",
            "--all-features",
            "--no-deps",
        ]),
        &dir.join("cargo.json"),
    )
}

/// Copies a child's output to ours as it comes.
fn relay(
    from: Option<Box<dyn Read + Send>>,
    to_stderr: bool,
) -> Option<std::thread::JoinHandle<()>> {
    let mut from = from?;
    Some(std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = if to_stderr {
                std::io::stderr().write_all(&buf[..n])
            } else {
                std::io::stdout().write_all(&buf[..n])
            };
        }
    }))
}

/// A VM gone sooner than this without a report failed to boot.
const BOOT_RETRY_WITHIN: Duration = Duration::from_secs(60);

/// Boots `kernel` and runs the suite; returns its column of the matrix.
fn run_vm(kernel: &Kernel, filter: &str, nextest: &Path, timeout: Duration) -> Column {
    let junit_dir = target_root().join("nextest/vm");
    let junit = junit_dir.join("junit.xml");
    let _ = std::fs::remove_file(&junit);
    std::fs::create_dir_all(&junit_dir).expect("target/nextest/vm");
    // By name, not current_exe(): writing the metadata may have rebuilt
    // this binary, and /proc/self/exe then names the deleted file.
    let me = own_dir().join("kernel-matrix");
    let guest = [
        me.to_string_lossy().as_ref(),
        "guest",
        "--nextest",
        &nextest.to_string_lossy(),
        "--filter",
        &vm::filter_for(&kernel.series, filter),
    ]
    .iter()
    .map(|w| vm::sh_quote(w))
    .collect::<Vec<_>>()
    .join(" ");
    println!(
        "\n== Linux {} ({}): booting under TCG ==",
        kernel.release,
        kernel.image.display()
    );
    let _ = std::io::stdout().flush();
    let started = Instant::now();
    let mut child = Command::new("vng")
        .arg("--disable-kvm")
        .arg("--run")
        .arg(&kernel.image)
        .args(["--user", "root", "--memory", "2G", "--cpus", "2"])
        .arg("--rwdir")
        .arg(target_root().join("nextest"))
        .arg("--cwd")
        .arg(workspace())
        .arg("--exec")
        .arg(&guest)
        .current_dir(workspace())
        .stdin(Stdio::null())
        // Through pipes, not our own stdout: virtme-ng reopens the
        // console's output, which truncates it when it is a file (a CI
        // log would lose everything printed before the VM booted).
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout stops qemu too.
        .process_group(0)
        .spawn()
        .expect("run vng (make setup installs virtme-ng)");
    let relays = [
        relay(
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
            false,
        ),
        relay(
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
            true,
        ),
    ];
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for vng") {
            break Some(s);
        }
        if started.elapsed() > timeout {
            eprintln!(
                "kernel-matrix: Linux {} ran over {} s; stopping the VM",
                kernel.release,
                timeout.as_secs()
            );
            // SAFETY: kill(2) of the process group we made for vng.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for r in relays.into_iter().flatten() {
        let _ = r.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let cases = std::fs::read_to_string(&junit).ok().map(|x| {
        let keep = metadata_dir().join(format!("{}.junit.xml", kernel.release));
        let _ = std::fs::write(keep, &x);
        vm::parse_junit(&x)
    });
    if let Some(s) = status {
        println!("== Linux {}: the VM exited with {s} ==", kernel.release);
    }
    Column {
        kernel: kernel.clone(),
        cases,
        secs,
    }
}

fn host(args: &Args) -> Result<bool, String> {
    let kernels = args
        .kernels
        .iter()
        .map(|s| vm::find_kernel(&args.boot, s))
        .collect::<Result<Vec<_>, _>>()?;
    if in_path("vng").is_none() {
        return Err("vng not found: make setup installs virtme-ng (pip)".into());
    }
    let nextest = in_path("cargo-nextest").ok_or("cargo-nextest not found in PATH")?;
    write_metadata()?;
    let columns: Vec<Column> = kernels
        .iter()
        .map(|k| {
            let column = run_vm(k, &args.filter, &nextest, args.timeout);
            // A VM that is gone within a minute with no report never ran
            // the suite (qemu under TCG once exited 255 after 11 s with no
            // output, and booted fine again): boot it once more. A suite
            // that fails still fails, with its report.
            if column.cases.is_none() && column.secs < BOOT_RETRY_WITHIN.as_secs_f64() {
                println!(
                    "== Linux {}: the VM stopped after {:.0} s without running the suite; \
                     booting it once more ==",
                    k.release, column.secs
                );
                return run_vm(k, &args.filter, &nextest, args.timeout);
            }
            column
        })
        .collect();
    println!("\n== kernel matrix (VMs under TCG: behaviour, not timings) ==");
    print!("{}", vm::table(&columns));
    Ok(vm::all_passed(&columns))
}

fn uname_r() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

fn guest(args: &Args) -> Result<bool, String> {
    let nextest = args.nextest.as_ref().ok_or("guest needs --nextest")?;
    // The guest's PATH is the init's; the tests call ip, tc, sysctl, ping.
    let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    // SAFETY: single-threaded here; nothing else reads the environment.
    unsafe { std::env::set_var("PATH", path) };
    println!("== inside the VM: Linux {} ==", uname_r());
    let out = Command::new("modprobe")
        .arg("-a")
        .args(vm::MODULES)
        .output()
        .map_err(|e| format!("modprobe: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "Linux {} lacks a module the suites need: {}",
            uname_r(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let meta = metadata_dir();
    let status = Command::new(nextest)
        .args(["nextest", "run", "--profile", "vm", "--binaries-metadata"])
        .arg(meta.join("binaries.json"))
        .arg("--cargo-metadata")
        .arg(meta.join("cargo.json"))
        .args(["-E", &args.filter])
        .current_dir(workspace())
        .status()
        .map_err(|e| format!("{}: {e}", nextest.display()))?;
    Ok(status.success())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (is_guest, rest) = match argv.first().map(String::as_str) {
        Some("guest") => (true, &argv[1..]),
        Some("-h" | "--help") => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => (false, &argv[..]),
    };
    let result = parse(rest).and_then(|a| if is_guest { guest(&a) } else { host(&a) });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("kernel-matrix: {e}");
            ExitCode::FAILURE
        }
    }
}
