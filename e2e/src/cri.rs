//! containerd as the runtime: the kubelet's path to `plexus`, without a
//! kubelet.
//!
//! [`Containerd::start`] runs Debian's `containerd` (and, through its
//! shim, `runc`) with its root, state, sockets and config in a temp dir,
//! inside a test's "host" network namespace, so that the CNI plugins it
//! runs find their masters there and every host-side link stays in it.
//! The sandbox (pause) image is built here from a few lines of C and
//! imported from a docker-archive tarball: nothing is pulled. The CNI
//! config dir is whatever the test gives, normally one `plexus install`
//! wrote.
//!
//! [`Containerd`] is also the kubelet's side: a CRI `runtime.v1` client
//! over the unix socket, sending `:authority: localhost` as the kubelet
//! does, with the calls the kubelet makes for a pod's sandbox.
//!
//! Dropping it stops and removes every sandbox it still lists, stops
//! containerd by its pid, kills any shim of its own left behind, unmounts
//! what it mounted under its temp dir and removes network namespaces of its
//! sandboxes that outlived it: the machine is left as it was found.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::meta::World;
use crate::{REFERENCE_PLUGINS, bin};
use plexus_kubelet_api::runtime::v1 as cri;
use plexus_kubelet_api::runtime::v1::runtime_service_client::RuntimeServiceClient;
use plexus_testkit::NetNs;
use serde_json::Value;
use tempfile::TempDir;
use tonic::transport::Channel;

/// The sandbox image's tag (local only; nothing can be pulled here).
pub const PAUSE_IMAGE: &str = "plexus.test/pause:1";

/// The node's CNI setup as plexus's DaemonSet leaves it, for `w`: a bin
/// dir with the reference plugins, `sriov` and `plexus` (copied there by
/// the installer), and `00-plexus.conflist` in `w`'s confDir, written by
/// the real `plexus install` from the cluster network's conflist with
/// `w`'s plexus keys. The pod-annotations capability is declared, so that
/// containerd hands the pod's annotations to plexus (standalone mode reads
/// them; API mode reads the pod instead).
///
/// Returns the bin dir.
///
/// # Panics
/// When a link cannot be made or the installer fails.
#[must_use]
pub fn install_plexus(w: &World) -> PathBuf {
    let bin_dir = w.path("opt-cni-bin");
    fs::create_dir_all(&bin_dir).expect("bin dir");
    for e in fs::read_dir(REFERENCE_PLUGINS).expect("reference plugins (make setup)") {
        let e = e.expect("dir entry");
        std::os::unix::fs::symlink(e.path(), bin_dir.join(e.file_name())).expect("symlink");
    }
    std::os::unix::fs::symlink(bin("sriov"), bin_dir.join("sriov")).expect("symlink sriov");
    let mut extra = w.conf.clone();
    let keys = extra.as_object_mut().expect("plexus conf is an object");
    for k in ["cniVersion", "name", "type", "clusterNetwork"] {
        keys.remove(k);
    }
    keys.insert(
        "capabilities".into(),
        serde_json::json!({"io.kubernetes.cri.pod-annotations": true}),
    );
    let conf_dir = w.path("net.d");
    let out = Command::new(bin("plexus"))
        .arg("install")
        .arg("--binary")
        .arg(bin("plexus"))
        .arg("--cni-bin-dir")
        .arg(&bin_dir)
        .arg("--cni-conf-dir")
        .arg(&conf_dir)
        .arg("--host-cni-conf-dir")
        .arg(&conf_dir)
        .args([
            "--master-conf",
            "10-pod-network.conflist",
            "--no-kubeconfig",
            "--plexus-config",
            &extra.to_string(),
        ])
        .output()
        .expect("run plexus install");
    assert!(
        out.status.success(),
        "plexus install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin_dir
}

/// A pod's sandbox request: what the kubelet puts in `PodSandboxConfig`.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// The pod's annotations (the kubelet passes all of them).
    pub annotations: Vec<(String, String)>,
}

/// What `PodSandboxStatus` says of a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxStatus {
    /// Ready or not.
    pub ready: bool,
    /// The pod IP the runtime took from the CNI result (eth0's first).
    pub ip: String,
    /// Other pod IPs.
    pub additional_ips: Vec<String>,
    /// The sandbox's network namespace (from the verbose info).
    pub netns: Option<PathBuf>,
}

/// A containerd of a test's own.
#[derive(Debug)]
pub struct Containerd {
    dir: TempDir,
    child: Option<Child>,
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
    /// Set once the CRI answers (so that a failed start still drops).
    client: Option<RuntimeServiceClient<Channel>>,
    /// Network namespaces of sandboxes seen, removed on drop if still there.
    netns_seen: std::sync::Mutex<Vec<PathBuf>>,
}

fn config(dir: &Path, bin_dir: &Path, conf_dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
plugin_dir = "{d}/plugins"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.overlayfs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # runc cannot lower oom_score_adj to -998 on these machines: without this
  # it fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
    max_conf_num = 1
"#,
        bin = bin_dir.display(),
        conf = conf_dir.display(),
    )
}

/// The pause program: PID 1 of every sandbox, waiting for SIGTERM.
const PAUSE_C: &str = r#"#include <signal.h>
#include <unistd.h>
static void bye(int sig) { (void)sig; _exit(0); }
int main(void) {
    signal(SIGTERM, bye);
    signal(SIGINT, bye);
    for (;;) pause();
}
"#;

fn run(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Builds the pause image as a docker-archive tarball in `dir`: a
/// `manifest.json` naming its config and one layer, the config with the
/// layer's diff id, and the layer holding a static `/pause`.
///
/// # Errors
/// When gcc, tar or sha256sum fail.
pub fn pause_image(dir: &Path) -> Result<PathBuf, String> {
    let work = dir.join("pause-image");
    let rootfs = work.join("rootfs");
    fs::create_dir_all(&rootfs).map_err(|e| e.to_string())?;
    fs::write(work.join("pause.c"), PAUSE_C).map_err(|e| e.to_string())?;
    run(Command::new("gcc")
        .args(["-static", "-Os", "-o"])
        .arg(rootfs.join("pause"))
        .arg(work.join("pause.c")))?;
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(work.join("layer.tar"))
        .arg("pause"))?;
    let sum = run(Command::new("sha256sum").arg(work.join("layer.tar")))?;
    let digest = String::from_utf8_lossy(&sum)
        .split_whitespace()
        .next()
        .ok_or("sha256sum printed nothing")?
        .to_owned();
    let image_config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/pause"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]},
    });
    fs::write(work.join("config.json"), image_config.to_string()).map_err(|e| e.to_string())?;
    let manifest = serde_json::json!([{
        "Config": "config.json", "RepoTags": [PAUSE_IMAGE], "Layers": ["layer.tar"],
    }]);
    fs::write(work.join("manifest.json"), manifest.to_string()).map_err(|e| e.to_string())?;
    let tarball = dir.join("pause.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&work)
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(&tarball)
        .args(["manifest.json", "config.json", "layer.tar"]))?;
    Ok(tarball)
}

impl Containerd {
    /// Starts containerd in `host` with CNI binaries from `bin_dir` and the
    /// CNI config from `conf_dir`, imports the pause image and waits for
    /// the CRI to answer.
    ///
    /// # Panics
    /// When any of it fails; the message carries containerd's log.
    #[must_use]
    pub fn start(host: &NetNs, bin_dir: &Path, conf_dir: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("plexus-containerd-")
            .tempdir()
            .expect("temp dir");
        let cfg = dir.path().join("config.toml");
        fs::write(&cfg, config(dir.path(), bin_dir, conf_dir)).expect("write config");
        let log = fs::File::create(dir.path().join("containerd.log")).expect("log file");
        let child = host
            .command("containerd")
            .expect("host netns")
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd (make setup installs it)");
        let socket = dir.path().join("containerd.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        // From here on a panic drops `this`, which stops containerd.
        let mut this = Self {
            client: None,
            dir,
            child: Some(child),
            socket,
            rt,
            netns_seen: std::sync::Mutex::new(Vec::new()),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while this.client.is_none() {
            if let Some(status) = this
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("containerd exited with {status}:\n{}", this.log());
            }
            if this.socket.exists() {
                let socket = this.socket.clone();
                this.client = this.rt.block_on(async move {
                    let channel = plexus_kubelet_api::connect(&socket, Duration::from_secs(2))
                        .await
                        .ok()?;
                    let mut c = RuntimeServiceClient::new(channel);
                    c.version(cri::VersionRequest {
                        version: "v1".into(),
                    })
                    .await
                    .ok()?;
                    Some(c)
                });
            }
            assert!(
                this.client.is_some() || Instant::now() < deadline,
                "containerd's CRI did not answer within 30 s:\n{}",
                this.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let tarball = pause_image(this.dir.path()).unwrap_or_else(|e| panic!("{e}"));
        run(Command::new("ctr")
            .arg("-a")
            .arg(&this.socket)
            .args([
                "-n",
                "k8s.io",
                "images",
                "import",
                "--snapshotter",
                "native",
            ])
            .arg(&tarball))
        .unwrap_or_else(|e| panic!("import the pause image: {e}"));
        this
    }

    fn client(&self) -> RuntimeServiceClient<Channel> {
        self.client.clone().expect("the CRI answered")
    }

    /// containerd's log so far.
    #[must_use]
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The CRI socket.
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `Version`: the runtime's name and version.
    ///
    /// # Errors
    /// The runtime's status.
    pub fn version(&self) -> Result<cri::VersionResponse, tonic::Status> {
        let mut c = self.client();
        self.rt
            .block_on(c.version(cri::VersionRequest {
                version: "v1".into(),
            }))
            .map(tonic::Response::into_inner)
    }

    /// `RunPodSandbox`: creates the sandbox; CNI ADD runs inside.
    ///
    /// # Errors
    /// The runtime's status: a failed ADD comes back here with the
    /// plugin's message.
    pub fn run_pod(&self, pod: &PodSpec) -> Result<String, tonic::Status> {
        let log_dir = self
            .dir
            .path()
            .join("pods")
            .join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid));
        let _ = fs::create_dir_all(&log_dir);
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                attempt: 0,
            }),
            hostname: pod.name.clone(),
            log_directory: log_dir.to_string_lossy().into_owned(),
            labels: HashMap::from([
                ("io.kubernetes.pod.name".into(), pod.name.clone()),
                ("io.kubernetes.pod.namespace".into(), pod.namespace.clone()),
                ("io.kubernetes.pod.uid".into(), pod.uid.clone()),
            ]),
            annotations: pod.annotations.iter().cloned().collect(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: String::new(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Pod.into(),
                        pid: cri::NamespaceMode::Container.into(),
                        ipc: cri::NamespaceMode::Pod.into(),
                        target_id: String::new(),
                    }),
                    ..Default::default()
                }),
                sysctls: HashMap::new(),
            }),
            ..Default::default()
        };
        let mut c = self.client();
        let id = self
            .rt
            .block_on(c.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }))?
            .into_inner()
            .pod_sandbox_id;
        if let Ok(st) = self.status(&id)
            && let Some(ns) = st.netns
        {
            self.netns_seen.lock().unwrap().push(ns);
        }
        Ok(id)
    }

    /// `PodSandboxStatus` (verbose, for the netns path).
    ///
    /// # Errors
    /// The runtime's status (`NotFound` for a removed sandbox).
    pub fn status(&self, id: &str) -> Result<SandboxStatus, tonic::Status> {
        let mut c = self.client();
        let r = self
            .rt
            .block_on(c.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_owned(),
                verbose: true,
            }))?
            .into_inner();
        let st = r.status.unwrap_or_default();
        let net = st.network.unwrap_or_default();
        // containerd's verbose info: runtimeSpec.linux.namespaces[] holds
        // {"type": "network", "path": "/var/run/netns/cni-..."}.
        let netns = r
            .info
            .get("info")
            .and_then(|i| serde_json::from_str::<Value>(i).ok())
            .and_then(|i| {
                i["runtimeSpec"]["linux"]["namespaces"]
                    .as_array()?
                    .iter()
                    .find(|n| n["type"] == "network")?["path"]
                    .as_str()
                    .map(PathBuf::from)
            });
        Ok(SandboxStatus {
            ready: st.state == i32::from(cri::PodSandboxState::SandboxReady),
            ip: net.ip,
            additional_ips: net.additional_ips.into_iter().map(|p| p.ip).collect(),
            netns,
        })
    }

    /// `StopPodSandbox`: CNI DEL runs inside.
    ///
    /// # Errors
    /// The runtime's status (a failed DEL comes back here).
    pub fn stop(&self, id: &str) -> Result<(), tonic::Status> {
        let mut c = self.client();
        self.rt
            .block_on(c.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            }))
            .map(drop)
    }

    /// `RemovePodSandbox`.
    ///
    /// # Errors
    /// The runtime's status.
    pub fn remove(&self, id: &str) -> Result<(), tonic::Status> {
        let mut c = self.client();
        self.rt
            .block_on(c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            }))
            .map(drop)
    }

    /// `ListPodSandbox`, unfiltered: `(id, pod name, ready)`.
    ///
    /// # Errors
    /// The runtime's status.
    pub fn list(&self) -> Result<Vec<(String, String, bool)>, tonic::Status> {
        let mut c = self.client();
        Ok(self
            .rt
            .block_on(c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }))?
            .into_inner()
            .items
            .into_iter()
            .map(|s| {
                (
                    s.id,
                    s.metadata.map(|m| m.name).unwrap_or_default(),
                    s.state == i32::from(cri::PodSandboxState::SandboxReady),
                )
            })
            .collect())
    }

    /// What the kubelet does to delete a pod: Stop, then Remove.
    ///
    /// # Errors
    /// The first failing call's status.
    pub fn delete(&self, id: &str) -> Result<(), tonic::Status> {
        self.stop(id)?;
        self.remove(id)
    }

    fn kill_own_shims(&self) {
        let needle = self.socket.to_string_lossy().into_owned();
        let Ok(procs) = fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("containerd-shim") && cmdline.contains(&needle) {
                // SAFETY: kill(2) on a pid we just read; at worst ESRCH.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    fn unmount_under_dir(&self) {
        let root = self.dir.path().to_string_lossy().into_owned();
        let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let mut points: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&root))
            .collect();
        // Deepest first.
        points.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in points {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(Ok(sandboxes)) = self.client.is_some().then(|| self.list()) {
            for (id, _, _) in sandboxes {
                if let Ok(Some(ns)) = self.status(&id).map(|s| s.netns) {
                    self.netns_seen.lock().unwrap().push(ns);
                }
                let _ = self.stop(&id);
                let _ = self.remove(&id);
            }
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_own_shims();
        self.unmount_under_dir();
        for ns in self.netns_seen.lock().unwrap().drain(..) {
            if plexus_testkit::netns_exists(&ns) {
                let _ = nix::mount::umount2(&ns, nix::mount::MntFlags::MNT_DETACH);
                let _ = fs::remove_file(&ns);
            }
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let mut err = std::io::stderr();
            let _ = writeln!(err, "--- containerd log (last 40 lines) ---");
            for l in tail.iter().rev() {
                let _ = writeln!(err, "{l}");
            }
        }
    }
}
