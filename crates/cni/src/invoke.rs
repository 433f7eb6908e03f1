//! The runtime side: running CNI plugins the way libcni does.
//!
//! A meta-plugin is half a runtime. This module finds a plugin in `CNI_PATH`,
//! derives its stdin (SPEC.md §3 "Deriving request configuration"; libcni's
//! `buildOneConfig`), runs it with a timeout while passing its stderr
//! through, and reads back its result or error. On top of that it runs whole
//! configuration lists: ADD in order with `prevResult` chaining, DEL in
//! reverse, CHECK, STATUS and GC.
//!
//! It keeps no state: caching results between ADD and DEL is the caller's
//! job (libcni keeps `/var/lib/cni/results`; `plexus` keeps its own cache).

use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// What a long-running host of the invoker (thick mode's daemon) is told
/// of every plugin it ran: the plugin type, the command, how long it took,
/// and whether it succeeded.
pub type Observer = fn(plugin: &str, command: &str, elapsed: Duration, ok: bool);

static OBSERVER: std::sync::OnceLock<Observer> = std::sync::OnceLock::new();

/// Sets the process's [`Observer`], once (later calls change nothing).
/// Nothing is observed without one.
pub fn set_observer(f: Observer) {
    let _ = OBSERVER.set(f);
}

/// The [`set_chroot`] directory, and the same as a C string for chroot(2)
/// in the child, made once.
struct Chroot {
    dir: PathBuf,
    c: std::ffi::CString,
}

static CHROOT: std::sync::OnceLock<Chroot> = std::sync::OnceLock::new();

/// Thick mode's `chrootDir` (Multus's key): every plugin this process runs
/// runs chrooted into `dir`, the node's root filesystem as mounted into
/// the daemon's container (`/hostroot`), so that it sees the node's files,
/// not the container's: its binary and libraries, `/var/lib/cni`,
/// `/run/netns`. Plugins are looked up there, and every path a plugin is
/// given (`CNI_PATH`, `CNI_NETNS`, its binary) is the node's. Set once;
/// later calls change nothing.
///
/// # Errors
/// The path holds a NUL byte.
pub fn set_chroot(dir: PathBuf) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("chrootDir {}: a NUL byte", dir.display()),
        )
    })?;
    let _ = CHROOT.set(Chroot { dir, c });
    Ok(())
}

/// `path` (absolute, as the plugin sees it) as this process sees it.
fn outside(path: &Path) -> PathBuf {
    match CHROOT.get() {
        Some(root) => root.dir.join(path.strip_prefix("/").unwrap_or(path)),
        None => path.to_owned(),
    }
}
use serde_json::{Map, Value, json};

use crate::args::CniArgs;
use crate::conf::{NetworkConfigList, PluginConf, check_type};
use crate::error::{CniError, code};
use crate::plugin::{Attachment, Command};
use crate::result::CniResult;
use crate::version::{CURRENT, Version};

/// How long a delegate may run before it is killed, unless set otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of a delegate's stderr is kept for error messages.
const STDERR_KEEP: usize = 16 * 1024;

/// A delegate that could not be run or that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The plugin type is not a plain binary name.
    #[error(transparent)]
    InvalidType(#[from] crate::conf::ConfError),
    /// No executable of that name in any `CNI_PATH` directory.
    #[error("failed to find plugin {plugin:?} in path {path:?}")]
    NotFound {
        /// The plugin type.
        plugin: String,
        /// The directories searched.
        path: Vec<PathBuf>,
    },
    /// The binary could not be started or talked to.
    #[error("running plugin {plugin:?} ({command}): {source}")]
    Exec {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The plugin ran past the timeout and was killed.
    #[error("plugin {plugin:?} ({command}) did not finish within {after:?} and was killed")]
    Timeout {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The plugin reported a CNI error (or exited non-zero).
    #[error("plugin type={plugin:?} failed ({command}): {error}")]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// What it reported.
        error: CniError,
    },
    /// The plugin succeeded but its output is not a result.
    #[error("plugin {plugin:?} ({command}) returned an unreadable result: {detail}")]
    Output {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Several plugins failed during a best-effort operation (DEL).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<Error>),
    /// The network's version does not allow the operation.
    #[error("network {network:?} is version {version}, which does not support {command}")]
    NotSupported {
        /// The network name.
        network: String,
        /// The network's version.
        version: Version,
        /// The CNI command.
        command: &'static str,
    },
}

impl Error {
    /// The CNI code this failure is reported with: a delegate's own code is
    /// kept, so the runtime sees, e.g., 11 "try again later".
    #[must_use]
    pub fn code(&self) -> u32 {
        match self {
            Self::InvalidType(_) => code::INVALID_NETWORK_CONFIG,
            Self::NotFound { .. } | Self::Exec { .. } => code::DELEGATE_EXEC,
            Self::Timeout { .. } => code::DELEGATE_TIMEOUT,
            Self::Plugin { error, .. } => error.code,
            Self::Output { .. } => code::DELEGATE_OUTPUT,
            Self::NotSupported { .. } => code::INCOMPATIBLE_VERSION,
            Self::Several(all) => all.first().map_or(code::INTERNAL, Self::code),
        }
    }
}

impl From<Error> for CniError {
    fn from(e: Error) -> Self {
        let code = e.code();
        match e {
            Error::Plugin {
                plugin,
                command,
                error,
            } => CniError::new(code, format!("delegate {plugin} {command}: {}", error.msg))
                .with_details(error.details),
            other => CniError::new(code, other.to_string()),
        }
    }
}

/// The attachment parameters a runtime passes to every plugin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConf {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`; `None` for DEL after the netns is gone.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: CniArgs,
    /// Capability arguments; each plugin gets those it declares, as
    /// `runtimeConfig`.
    pub capability_args: Map<String, Value>,
}

/// A plugin's VERSION reply.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VersionInfo {
    /// The version the reply is in.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Every version the plugin accepts.
    #[serde(rename = "supportedVersions", default)]
    pub supported_versions: Vec<String>,
}

/// Runs plugins found in a search path.
#[derive(Debug, Clone)]
pub struct Invoker {
    path: Vec<PathBuf>,
    timeout: Duration,
}

impl Invoker {
    /// An invoker searching `path` in order (libcni's `FindInPath`).
    #[must_use]
    pub fn new(path: Vec<PathBuf>) -> Self {
        Self {
            path,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// An invoker for a `CNI_PATH`-style string (`:`-separated).
    #[must_use]
    pub fn from_path_list(list: &str) -> Self {
        Self::new(std::env::split_paths(list).collect())
    }

    /// Sets how long one plugin invocation may take.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The directories searched.
    #[must_use]
    pub fn path(&self) -> &[PathBuf] {
        &self.path
    }

    /// Finds a plugin binary: the first regular file of that name (under
    /// the [`set_chroot`] directory, when set: the path returned is then
    /// the one inside it).
    ///
    /// # Errors
    /// When the name is not a plain file name or no directory has it.
    pub fn find(&self, plugin: &str) -> Result<PathBuf, Error> {
        check_type(plugin)?;
        self.path
            .iter()
            .map(|dir| dir.join(plugin))
            .find(|p| outside(p).metadata().is_ok_and(|m| m.is_file()))
            .ok_or_else(|| Error::NotFound {
                plugin: plugin.to_owned(),
                path: self.path.clone(),
            })
    }

    /// Runs one plugin with the given command, parameters and stdin, and
    /// returns its stdout. A non-zero exit becomes [`Error::Plugin`] carrying
    /// the plugin's own error (Go plugins' errors without `cniVersion` are
    /// accepted); with no parsable error on stdout, its stderr is the message.
    ///
    /// # Errors
    /// When the plugin cannot be found, started, finishes late, or fails.
    pub fn exec(
        &self,
        plugin: &str,
        command: Command,
        rt: &RuntimeConf,
        stdin: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let binary = self.find(plugin)?;
        let started = Instant::now();
        let out = run(&binary, &self.env(command, rt), stdin, self.timeout);
        if let Some(observe) = OBSERVER.get() {
            let ok = matches!(&out, Ok(Some(f)) if f.status.success());
            observe(plugin, command.as_str(), started.elapsed(), ok);
        }
        tracing::debug!(
            plugin,
            command = command.as_str(),
            container = rt.container_id,
            ifname = rt.ifname,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "delegate finished"
        );
        let exec_err = |source| Error::Exec {
            plugin: plugin.to_owned(),
            command: command.as_str(),
            source,
        };
        let Finished {
            status,
            stdout,
            stderr,
        } = match out {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(Error::Timeout {
                    plugin: plugin.to_owned(),
                    command: command.as_str(),
                    after: self.timeout,
                });
            }
            Err(e) => return Err(exec_err(e)),
        };
        if status.success() {
            return Ok(stdout);
        }
        Err(Error::Plugin {
            plugin: plugin.to_owned(),
            command: command.as_str(),
            error: plugin_error(status, &stdout, &stderr),
        })
    }

    /// The six CNI variables, always all set (empty when not applicable),
    /// exactly as libcni's `Args.AsEnv` does; the rest of our environment is
    /// inherited.
    fn env(&self, command: Command, rt: &RuntimeConf) -> [(&'static str, OsString); 6] {
        let netns = rt.netns.as_deref().map(Path::as_os_str).unwrap_or_default();
        [
            ("CNI_COMMAND", command.as_str().into()),
            ("CNI_CONTAINERID", rt.container_id.clone().into()),
            ("CNI_NETNS", netns.to_owned()),
            ("CNI_IFNAME", rt.ifname.clone().into()),
            ("CNI_ARGS", rt.args.to_string().into()),
            (
                "CNI_PATH",
                std::env::join_paths(&self.path).unwrap_or_default(),
            ),
        ]
    }

    /// Asks a plugin which versions it speaks.
    ///
    /// # Errors
    /// When the plugin fails or replies with something that is not a
    /// VERSION reply.
    pub fn version(&self, plugin: &str) -> Result<VersionInfo, Error> {
        let stdin = json!({"cniVersion": CURRENT.as_str()}).to_string();
        let rt = RuntimeConf {
            netns: Some("dummy".into()),
            ifname: "dummy".into(),
            ..RuntimeConf::default()
        };
        let out = self.exec(plugin, Command::Version, &rt, stdin.as_bytes())?;
        let info: VersionInfo = serde_json::from_slice(&out).map_err(|e| Error::Output {
            plugin: plugin.to_owned(),
            command: "VERSION",
            detail: e.to_string(),
        })?;
        if info.supported_versions.is_empty() {
            return Err(Error::Output {
                plugin: plugin.to_owned(),
                command: "VERSION",
                detail: "no supportedVersions".into(),
            });
        }
        Ok(info)
    }

    /// Checks that every plugin of `list` exists and speaks the list's
    /// version (libcni's `ValidateNetworkList`), so a bad config fails
    /// before anything is created.
    ///
    /// # Errors
    /// The first plugin that is missing or lacks the version.
    pub fn validate_list(&self, list: &NetworkConfigList) -> Result<(), Error> {
        for p in &list.plugins {
            let info = self.version(p.plugin_type())?;
            if !info
                .supported_versions
                .iter()
                .any(|v| v == list.cni_version.as_str())
            {
                return Err(Error::Plugin {
                    plugin: p.plugin_type().to_owned(),
                    command: "VERSION",
                    error: CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions")
                        .with_details(format!(
                            "network {:?} is {}, plugin supports {:?}",
                            list.name, list.cni_version, info.supported_versions
                        )),
                });
            }
        }
        Ok(())
    }

    /// ADD every plugin of `list` in order, each getting the previous one's
    /// result as `prevResult` (converted to the list's version, so a Go
    /// plugin of that version can always parse it). Halts on the first
    /// error; undoing what succeeded is the caller's decision (a runtime
    /// calls DEL).
    ///
    /// # Errors
    /// The first plugin failure, or an unreadable result.
    pub fn add_list(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<CniResult, Error> {
        let mut prev: Option<Value> = None;
        let mut last = CniResult::default();
        for p in &list.plugins {
            let stdin = build_config(list, p, Some(rt), prev.as_ref(), &[]);
            let out = self.exec(p.plugin_type(), Command::Add, rt, &stdin)?;
            last = parse_result(p.plugin_type(), &out, list.cni_version)?;
            prev = Some(last.to_value(list.cni_version));
        }
        Ok(last)
    }

    /// DEL every plugin of `list` in reverse order. From 0.4.0 on each gets
    /// `cached` (the final ADD result, if the caller has it) as `prevResult`.
    ///
    /// Teardown is best effort: unlike libcni, which halts at the first
    /// failure, every plugin still gets its DEL (a missing plugin must not
    /// keep the IPAM lease of the one before it), and the failures come back
    /// together.
    ///
    /// # Errors
    /// The single failure, or [`Error::Several`].
    pub fn del_list(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
        cached: Option<&CniResult>,
    ) -> Result<(), Error> {
        let prev = cached
            .filter(|_| list.cni_version.passes_prev_result_on_del())
            .map(|r| r.to_value(list.cni_version));
        let mut errors: Vec<Error> = list
            .plugins
            .iter()
            .rev()
            .filter_map(|p| {
                let stdin = build_config(list, p, Some(rt), prev.as_ref(), &[]);
                self.exec(p.plugin_type(), Command::Del, rt, &stdin).err()
            })
            .collect();
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Several(errors)),
        }
    }

    /// CHECK every plugin of `list` in order with the cached ADD result.
    /// A list with `disableCheck` is not checked.
    ///
    /// # Errors
    /// [`Error::NotSupported`] below 0.4.0; otherwise the first failure.
    pub fn check_list(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
        cached: &CniResult,
    ) -> Result<(), Error> {
        if !list.cni_version.allows_check() {
            return Err(not_supported(list, Command::Check));
        }
        if list.disable_check {
            return Ok(());
        }
        let prev = cached.to_value(list.cni_version);
        for p in &list.plugins {
            let stdin = build_config(list, p, Some(rt), Some(&prev), &[]);
            self.exec(p.plugin_type(), Command::Check, rt, &stdin)?;
        }
        Ok(())
    }

    /// STATUS every plugin of `list` in order, stopping at the first that is
    /// not ready. Lists below 1.1.0 have no STATUS and are taken as ready,
    /// as libcni does.
    ///
    /// # Errors
    /// The first plugin's error (50/51 for "not available").
    pub fn status_list(&self, list: &NetworkConfigList) -> Result<(), Error> {
        if !list.cni_version.allows_status_and_gc() {
            return Ok(());
        }
        let rt = RuntimeConf::default();
        for p in &list.plugins {
            let stdin = build_config(list, p, None, None, &[]);
            self.exec(p.plugin_type(), Command::Status, &rt, &stdin)?;
        }
        Ok(())
    }

    /// GC every plugin of `list` with the still-valid attachments, going on
    /// past failures. Both key spellings are sent, as libcni ≥ 1.2.3 does.
    /// Nothing is sent below 1.1.0 or with `disableGC`.
    ///
    /// # Errors
    /// Every plugin failure, together.
    pub fn gc_list(
        &self,
        list: &NetworkConfigList,
        valid: &[Attachment],
    ) -> Result<(), Vec<Error>> {
        if !list.cni_version.allows_status_and_gc() || list.disable_gc {
            return Ok(());
        }
        let valid = serde_json::to_value(valid).expect("attachments serialise");
        let extra = [
            ("cni.dev/valid-attachments", valid.clone()),
            ("cni.dev/attachments", valid),
        ];
        let rt = RuntimeConf::default();
        let errors: Vec<Error> = list
            .plugins
            .iter()
            .filter_map(|p| {
                let stdin = build_config(list, p, None, None, &extra);
                self.exec(p.plugin_type(), Command::Gc, &rt, &stdin).err()
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn not_supported(list: &NetworkConfigList, command: Command) -> Error {
    Error::NotSupported {
        network: list.name.clone(),
        version: list.cni_version,
        command: command.as_str(),
    }
}

/// Derives one plugin's stdin from its object in `list` (libcni's
/// `buildOneConfig`): `name` and `cniVersion` overwritten with the list's,
/// `runtimeConfig` holding exactly the capability arguments the plugin
/// declares (the key left out when none apply; no runtime parameters at all
/// for STATUS and GC), `prevResult` when given, then any `extra` keys. Every
/// other key passes through unchanged, `capabilities` included: libcni does
/// not strip it either.
#[must_use]
pub fn build_config(
    list: &NetworkConfigList,
    plugin: &PluginConf,
    rt: Option<&RuntimeConf>,
    prev_result: Option<&Value>,
    extra: &[(&str, Value)],
) -> Vec<u8> {
    let mut conf = plugin.as_map().clone();
    conf.insert("name".into(), json!(list.name));
    conf.insert("cniVersion".into(), json!(list.cni_version.as_str()));
    if let Some(rt) = rt {
        let runtime_config: Map<String, Value> = plugin
            .capabilities()
            .filter_map(|cap| {
                rt.capability_args
                    .get(cap)
                    .map(|v| (cap.to_owned(), v.clone()))
            })
            .collect();
        if !runtime_config.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
        }
    }
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    for (k, v) in extra {
        conf.insert((*k).to_owned(), v.clone());
    }
    serde_json::to_vec(&Value::Object(conf)).expect("a JSON map always serialises")
}

fn parse_result(plugin: &str, out: &[u8], version: Version) -> Result<CniResult, Error> {
    if out.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::Output {
            plugin: plugin.to_owned(),
            command: "ADD",
            detail: "no result on stdout".into(),
        });
    }
    CniResult::from_slice(out, version.as_str())
        .map(|(_, r)| r)
        .map_err(|e| Error::Output {
            plugin: plugin.to_owned(),
            command: "ADD",
            detail: e.to_string(),
        })
}

/// The error a failed plugin reported: its JSON on stdout if it printed one,
/// otherwise its stderr or exit status (libcni's `pluginErr`).
fn plugin_error(status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> CniError {
    if let Ok(e) = serde_json::from_slice::<CniError>(stdout) {
        return e;
    }
    let stderr = String::from_utf8_lossy(stderr);
    let msg = if !stdout.iter().all(u8::is_ascii_whitespace) {
        format!(
            "plugin failed ({status}) and its error could not be parsed: {:?}",
            String::from_utf8_lossy(stdout)
        )
    } else if stderr.trim().is_empty() {
        format!("plugin failed with no error message ({status})")
    } else {
        format!("plugin failed ({status}): {}", stderr.trim())
    };
    CniError::new(code::DELEGATE_EXEC, msg)
}

struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl fmt::Debug for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Finished")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Spawns `binary`, feeds `stdin`, collects stdout, tees stderr to ours, and
/// waits at most `timeout`. `Ok(None)` means it was killed for running late.
fn run(
    binary: &Path,
    env: &[(&str, OsString)],
    stdin: &[u8],
    timeout: Duration,
) -> std::io::Result<Option<Finished>> {
    let deadline = Instant::now() + timeout;
    let mut child = spawn(binary, env)?;
    let mut child_in = child.stdin.take().expect("stdin is piped");
    let mut child_out = child.stdout.take().expect("stdout is piped");
    let mut child_err = child.stderr.take().expect("stderr is piped");

    let input = stdin.to_vec();
    // A plugin that exits without reading stdin closes the pipe: EPIPE is
    // not our error, its exit status will tell.
    let writer = thread::spawn(move || {
        let _ = child_in.write_all(&input);
    });
    let (out_tx, out_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = child_out.read_to_end(&mut buf);
        let _ = out_tx.send(buf);
    });
    let (err_tx, err_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = child_err.read(&mut chunk) {
            // The delegate's stderr is ours too (SPEC.md §4).
            let _ = std::io::stderr().write_all(&chunk[..n]);
            let room = STDERR_KEEP.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..n.min(room)]);
        }
        let _ = err_tx.send(kept);
    });

    let Some(status) = wait_until(&mut child, deadline)? else {
        // Not reaped yet, so the pid is still ours to kill.
        let _ = child.kill();
        let _ = child.wait();
        return Ok(None);
    };
    let _ = writer.join();
    // A daemon forked by the plugin may keep the pipes open: wait for the
    // output only until the deadline (at least a short grace period).
    let grace = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(200));
    let stdout = out_rx.recv_timeout(grace).unwrap_or_default();
    let stderr = err_rx
        .recv_timeout(Duration::from_millis(200))
        .unwrap_or_default();
    Ok(Some(Finished {
        status,
        stdout,
        stderr,
    }))
}

/// Starts the plugin, retrying "text file busy": a binary being replaced by
/// an installer (written, then renamed) can briefly be open for writing in
/// a forked child of ours. libcni retries the same way.
fn spawn(binary: &Path, env: &[(&str, OsString)]) -> std::io::Result<Child> {
    let mut attempt = 0u64;
    loop {
        let mut cmd = std::process::Command::new(binary);
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(root) = CHROOT.get() {
            chroot_before_exec(&mut cmd, &root.c);
        }
        let res = cmd.spawn();
        match res {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                attempt += 1;
                thread::sleep(Duration::from_millis(20 * attempt));
            }
            other => return other,
        }
    }
}

/// Makes `cmd` chroot into `root` (and go to its `/`) between fork and
/// exec, as Go's `SysProcAttr.Chroot` does for Multus: `cmd`'s program is
/// then resolved inside `root`.
fn chroot_before_exec(cmd: &mut std::process::Command, root: &'static std::ffi::CStr) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the child between fork and exec and makes
    // two async-signal-safe syscalls (chroot, chdir) on C strings made
    // before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Waits for the child until `deadline` without polling: a pidfd becomes
/// readable when the process exits (Linux ≥ 5.3). Falls back to short sleeps
/// where pidfds are unavailable.
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    let pid = libc::pid_t::try_from(child.id()).expect("pids fit pid_t");
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // it touches no memory of ours.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return wait_polling(child, deadline);
    }
    let fd = i32::try_from(raw).expect("file descriptors fit i32");
    // SAFETY: the kernel just gave us this fd and nobody else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, length 1.
        let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        match n {
            0 => return Ok(None),
            n if n > 0 => return child.wait().map(Some),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

fn wait_polling(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: Value) -> NetworkConfigList {
        NetworkConfigList::from_value(v).unwrap()
    }

    #[test]
    fn build_config_injects_like_libcni() {
        let l = list(json!({"cniVersion": "1.0.0", "name": "net", "plugins": [
            {"type": "portmap", "name": "ignored", "cniVersion": "0.1.0",
             "capabilities": {"portMappings": true, "bandwidth": false}, "snat": true}
        ]}));
        let rt = RuntimeConf {
            capability_args: json!({"portMappings": [{"hostPort": 80, "containerPort": 8080}],
                                    "bandwidth": {"ingressRate": 1}})
            .as_object()
            .unwrap()
            .clone(),
            ..RuntimeConf::default()
        };
        let prev = json!({"cniVersion": "1.0.0"});
        let v: Value = serde_json::from_slice(&build_config(
            &l,
            &l.plugins[0],
            Some(&rt),
            Some(&prev),
            &[],
        ))
        .unwrap();
        assert_eq!(v["name"], "net");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["snat"], true);
        assert_eq!(
            v["capabilities"]["portMappings"], true,
            "capabilities are not stripped"
        );
        assert_eq!(
            v["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 80, "containerPort": 8080}]})
        );
        assert_eq!(v["prevResult"], prev);
    }

    #[test]
    fn no_runtime_config_key_when_nothing_applies() {
        let l = list(json!({"cniVersion": "1.1.0", "name": "net", "plugins": [
            {"type": "x", "capabilities": {"mac": true}}]}));
        let v: Value = serde_json::from_slice(&build_config(
            &l,
            &l.plugins[0],
            Some(&RuntimeConf::default()),
            None,
            &[],
        ))
        .unwrap();
        assert!(v.get("runtimeConfig").is_none());
        assert!(v.get("prevResult").is_none());
    }

    #[test]
    fn find_rejects_escapes_and_reports_path() {
        let dir = tempfile::tempdir().unwrap();
        let inv = Invoker::new(vec![dir.path().to_owned()]);
        for bad in ["../x", "/bin/sh", "..", "a/b", ""] {
            assert!(matches!(inv.find(bad), Err(Error::InvalidType(_))), "{bad}");
        }
        std::fs::create_dir(dir.path().join("adir")).unwrap();
        let e = inv.find("adir").unwrap_err();
        assert!(
            e.to_string().contains("failed to find plugin \"adir\""),
            "{e}"
        );
        assert_eq!(CniError::from(e).code, code::DELEGATE_EXEC);
    }

    #[test]
    fn plugin_errors_are_read_like_libcni() {
        let status = std::process::Command::new("false").status().unwrap();
        let go = plugin_error(status, br#"{"code":7,"msg":"bad","details":"d"}"#, b"");
        assert_eq!((go.code, go.msg.as_str(), go.cni_version), (7, "bad", None));
        let e = plugin_error(status, b"", b"panic: boom\n");
        assert!(e.msg.contains("panic: boom"), "{}", e.msg);
        let e = plugin_error(status, b"garbage", b"");
        assert!(e.msg.contains("could not be parsed"), "{}", e.msg);
        let e = plugin_error(status, b"", b"");
        assert!(e.msg.contains("no error message"), "{}", e.msg);
    }
}
