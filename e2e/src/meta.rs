//! A small world for black-box `plexus` tests: a throwaway "host" network
//! namespace with a macvlan master, a confDir with the cluster network
//! (`ptp` + `host-local`), a set of NADs served either from a standalone
//! directory or from the API server stand-in, and pods (network namespaces)
//! driven through the built `plexus` binary exactly as a runtime would.
//!
//! Every path lives in one temp dir; every link in the host or pod
//! namespaces, which go away on drop.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

use plexus_testkit::{FakeApiServer, NetNs};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{REFERENCE_PLUGINS, bin};

/// Where NADs and the pod's annotations come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// No API server: a NAD directory and `CNI_ARGS`.
    Standalone,
    /// The API server stand-in, through a kubeconfig.
    Api,
}

/// The macvlan master in the host namespace.
pub const MASTER: &str = "mv0";

/// The NADs every world has, as `(name, spec.config)`; `None` = empty spec.
fn nads(data: &Path) -> Vec<(&'static str, Option<Value>)> {
    let ipam = |subnet: &str| json!({"type": "host-local", "dataDir": data, "ranges": [[{"subnet": subnet}]]});
    vec![
        // Multus' e2e NAD: macvlan + static IPAM, then tuning for the MAC.
        (
            "macvlan-static",
            Some(json!({"cniVersion": "1.0.0", "plugins": [
                {"type": "macvlan", "master": MASTER, "mode": "bridge",
                 "ipam": {"type": "static"}, "capabilities": {"ips": true}},
                {"type": "tuning", "capabilities": {"mac": true}}]})),
        ),
        (
            "macvlan-dyn",
            Some(
                json!({"cniVersion": "0.4.0", "type": "macvlan", "master": MASTER,
                "mode": "bridge", "ipam": ipam("10.77.1.0/24")}),
            ),
        ),
        (
            "bridge-net",
            Some(
                json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "plxbr0",
                "ipam": ipam("10.77.2.0/24")}),
            ),
        ),
        // No capabilities: asking it for static IPs must fail.
        (
            "no-caps",
            Some(
                json!({"cniVersion": "1.0.0", "type": "macvlan", "master": MASTER,
                "ipam": {"type": "static"}}),
            ),
        ),
        // Fails at ADD (the "bridge" is the macvlan master, a veth), while
        // its DEL works: the failure a rollback must clean up after.
        (
            "broken",
            Some(
                json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": MASTER,
                "ipam": ipam("10.77.9.0/24")}),
            ),
        ),
        ("evil", Some(json!({"cniVersion": "1.0.0", "type": "../x"}))),
        // Empty spec: the config is the file of that name in confDir.
        ("from-file", None),
    ]
}

/// The world.
#[derive(Debug)]
pub struct World {
    /// Thick mode: `plexus daemon` in the host namespace, which every
    /// `plexus` call (a shim, through `daemonSocketDir`) hands its request.
    /// (First, so that it is stopped, and its log shown, before `tmp` goes.)
    pub daemon: Option<Daemon>,
    /// Where plexus and the delegates run.
    pub host: NetNs,
    /// All state.
    pub tmp: TempDir,
    /// Standalone or API.
    pub source: Source,
    /// The stand-in, in API mode.
    pub api: Option<FakeApiServer>,
    /// plexus' config (the stdin of every call).
    pub conf: Value,
    /// `CNI_PATH` for plexus and its delegates (the reference plugins;
    /// add the target directory for Plexus's own, such as `sriov`).
    pub cni_path: String,
}

thread_local! {
    static THICK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every [`World`] it makes in thick mode: a `plexus daemon`
/// per world, and `plexus` as its shim. (nextest runs each test in its own
/// process, so a scenario is simply run again, through the daemon.)
pub fn through_daemon<T>(f: impl FnOnce() -> T) -> T {
    THICK.with(|t| t.set(true));
    let out = f();
    THICK.with(|t| t.set(false));
    out
}

/// Waits until `f` holds, at most 5 s.
///
/// # Panics
/// When it never does, naming `what`.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `plexus daemon`, killed on drop; its log is `<tmp>/daemon.log`.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// Its socket directory (`daemonSocketDir`).
    pub socket_dir: PathBuf,
    /// Its log.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `plexus daemon` in `host` with its socket under `dir/run`,
    /// and waits for the socket.
    ///
    /// # Panics
    /// When it does not come up within 10 s.
    #[must_use]
    pub fn start(host: &NetNs, dir: &Path) -> Self {
        Self::start_with(host, dir, &[])
    }

    /// [`Daemon::start`] with more arguments (`--metrics-address ...`).
    ///
    /// # Panics
    /// When it does not come up within 10 s.
    #[must_use]
    pub fn start_with(host: &NetNs, dir: &Path, args: &[&str]) -> Self {
        Self::start_after(host, dir, None, args)
    }

    /// [`Daemon::start_with`], in a mount namespace of its own (private
    /// propagation) after `setup` (a `sh` script) ran in it when given:
    /// what a DaemonSet pod's mounts are, without touching the host's.
    fn start_after(host: &NetNs, dir: &Path, setup: Option<&str>, args: &[&str]) -> Self {
        let socket_dir = dir.join("run");
        let log = dir.join("daemon.log");
        let mut cmd = match setup {
            None => host.command(bin("plexus")).expect("host netns"),
            Some(script) => {
                let mut c = host.command("unshare").expect("host netns");
                c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                    .arg(format!("{script}\nexec \"$0\" \"$@\""))
                    .arg(bin("plexus"));
                c
            }
        };
        let child = cmd
            .arg("daemon")
            .arg("--socket-dir")
            .arg(&socket_dir)
            .args(args)
            .env("PLEXUS_LOG", "debug")
            // The stand-in binds its pods to this node.
            .env("NODE_NAME", plexus_testkit::apiserver::NODE)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("daemon log"))
            .spawn()
            .expect("spawn plexus daemon");
        let d = Self {
            child,
            socket_dir,
            log,
        };
        // Until it answers: a socket file left by a killed daemon exists
        // before the new one listens.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(d.socket_dir.join("plexus.sock")).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "plexus daemon did not come up: {}",
                fs::read_to_string(&d.log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        d
    }

    /// Stops it (SIGKILL, as a node losing the DaemonSet pod would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let exited = self.child.try_wait().ok().flatten();
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- plexus daemon log (exited by itself: {exited:?}) ---\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// A pod: its namespace and identity.
#[derive(Debug)]
pub struct Pod {
    /// Its network namespace.
    pub netns: NetNs,
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_NAME`.
    pub name: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `K8S_POD_UID`.
    pub uid: String,
    /// The networks annotation (standalone mode passes it in `CNI_ARGS`).
    pub networks: Option<String>,
    /// The default-network annotation.
    pub default_network: Option<String>,
}

impl World {
    /// Builds the world.
    ///
    /// # Panics
    /// When any part of it cannot be set up.
    #[must_use]
    pub fn new(source: Source) -> Self {
        let host = NetNs::with_prefix("mc-host").expect("host netns");
        host.sh(
            "ip",
            &[
                "link", "add", MASTER, "type", "veth", "peer", "name", "mv0peer",
            ],
        );
        host.sh("ip", &["link", "set", MASTER, "up"]);
        host.sh("ip", &["link", "set", "mv0peer", "up"]);
        host.sh("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        let tmp = tempfile::tempdir().expect("temp dir");
        let data = tmp.path().join("ipam");
        let conf_dir = tmp.path().join("net.d");
        fs::create_dir_all(&conf_dir).unwrap();
        fs::write(
            conf_dir.join("10-pod-network.conflist"),
            json!({"cniVersion": "1.0.0", "name": "pod-network", "plugins": [
                {"type": "ptp", "ipam": {"type": "host-local", "dataDir": data,
                    "ranges": [[{"subnet": "10.77.0.0/24"}]],
                    "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": true}}]})
            .to_string(),
        )
        .unwrap();
        fs::write(
            conf_dir.join("20-from-file.conflist"),
            json!({"cniVersion": "1.0.0", "name": "from-file", "plugins": [
                {"type": "macvlan", "master": MASTER, "mode": "bridge",
                 "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": "10.77.3.0/24"}]]}}]})
            .to_string(),
        )
        .unwrap();
        let mut conf = json!({
            "cniVersion": "1.0.0", "name": "plexus-net", "type": "plexus",
            "clusterNetwork": "pod-network",
            "confDir": conf_dir,
            "cniDir": tmp.path().join("cache"),
            "logLevel": "debug", "logToStderr": true,
            // The kubelet's paths, in this world (nothing of the machine's).
            "podResourcesSocket": tmp.path().join("kubelet/pod-resources.sock"),
            "deviceCheckpointFile": tmp.path().join("kubelet/kubelet_internal_checkpoint"),
            "deviceInfoDir": tmp.path().join("devinfo"),
        });
        fs::create_dir_all(tmp.path().join("kubelet")).unwrap();
        let mut api = None;
        match source {
            Source::Standalone => {
                let nad_dir = tmp.path().join("nads");
                fs::create_dir_all(&nad_dir).unwrap();
                for (name, config) in nads(&data) {
                    let mut obj = json!({"apiVersion": "k8s.cni.cncf.io/v1",
                        "kind": "NetworkAttachmentDefinition",
                        "metadata": {"name": name, "namespace": "default"}});
                    if let Some(c) = config {
                        obj["spec"] = json!({"config": c.to_string()});
                    }
                    fs::write(nad_dir.join(format!("{name}.json")), obj.to_string()).unwrap();
                }
                conf["nadDir"] = json!(nad_dir);
                conf["statusDir"] = json!(tmp.path().join("status"));
            }
            Source::Api => {
                // Listening inside the host namespace, where plexus runs.
                let server = host.run(FakeApiServer::start);
                for (name, config) in nads(&data) {
                    server.add_nad("default", name, config.map(|c| c.to_string()).as_deref());
                }
                let kc = tmp.path().join("kubeconfig");
                server.write_kubeconfig(&kc);
                conf["kubeconfig"] = json!(kc);
                api = Some(server);
            }
        }
        // The daemon caches the stand-in's pods and NADs from its start,
        // as a DaemonSet with the node's kubeconfig does.
        let daemon = THICK.with(std::cell::Cell::get).then(|| {
            let mut args = Vec::new();
            if let Some(kc) = conf.get("kubeconfig") {
                let path = tmp.path().join("daemon-config.json");
                fs::write(&path, json!({ "kubeconfig": kc }).to_string()).unwrap();
                args.push(path.display().to_string());
            }
            let args: Vec<&str> = args.iter().flat_map(|p| ["--config", p.as_str()]).collect();
            Daemon::start_with(&host, tmp.path(), &args)
        });
        if let Some(d) = &daemon {
            conf["daemonSocketDir"] = json!(d.socket_dir);
        }
        Self {
            host,
            tmp,
            source,
            api,
            conf,
            cni_path: REFERENCE_PLUGINS.to_owned(),
            daemon,
        }
    }

    /// Adds a NAD in either mode.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn add_nad(&self, namespace: &str, name: &str, config: &Value) {
        self.add_nad_annotated(namespace, name, config, &[]);
    }

    /// [`World::add_nad`] with annotations on the NAD.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn add_nad_annotated(
        &self,
        namespace: &str,
        name: &str,
        config: &Value,
        annotations: &[(&str, &str)],
    ) {
        match &self.api {
            Some(api) => {
                api.add_nad_annotated(namespace, name, Some(&config.to_string()), annotations);
            }
            None => {
                let ann: serde_json::Map<String, Value> = annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                    .collect();
                let obj = json!({"apiVersion": "k8s.cni.cncf.io/v1",
                    "kind": "NetworkAttachmentDefinition",
                    "metadata": {"name": name, "namespace": namespace, "annotations": ann},
                    "spec": {"config": config.to_string()}});
                fs::write(
                    self.tmp
                        .path()
                        .join("nads")
                        .join(format!("{namespace}-{name}.json")),
                    obj.to_string(),
                )
                .unwrap();
            }
        }
    }

    /// A path in this world's temp dir.
    #[must_use]
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// A host-local IPAM section in this world's data dir.
    #[must_use]
    pub fn ipam(&self, subnet: &str) -> Value {
        json!({"type": "host-local", "dataDir": self.tmp.path().join("ipam"),
               "ranges": [[{"subnet": subnet}]]})
    }

    /// Stops this world's daemon and starts another whose
    /// `daemon-config.json` is the world's kubeconfig plus `keys`, after
    /// `mounts` (a `sh` script run in a mount namespace of its own; see
    /// [`Daemon::start_after`]) when given.
    ///
    /// # Panics
    /// When the config cannot be written or the daemon does not come up.
    pub fn restart_daemon(&mut self, keys: &Value, mounts: Option<&str>) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
        let mut config = json!({"kubeconfig": self.conf["kubeconfig"]});
        for (k, v) in keys.as_object().into_iter().flatten() {
            config[k] = v.clone();
        }
        let path = self.tmp.path().join("daemon-config.json");
        fs::write(&path, config.to_string()).expect("daemon config");
        let args = ["--config", path.to_str().expect("UTF-8 temp path")];
        self.daemon = Some(Daemon::start_after(
            &self.host,
            self.tmp.path(),
            mounts,
            &args,
        ));
    }

    /// Starts a new API server stand-in in the host namespace (the old one
    /// stays as it is) and points the kubeconfig at it.
    #[must_use]
    pub fn restart_api(&self) -> FakeApiServer {
        let server = self.host.run(FakeApiServer::start);
        server.write_kubeconfig(&self.tmp.path().join("kubeconfig"));
        server
    }

    /// The stand-in (API mode only).
    ///
    /// # Panics
    /// In standalone mode.
    #[must_use]
    pub fn api(&self) -> &FakeApiServer {
        self.api.as_ref().expect("API mode")
    }

    /// A new pod in namespace `default` with this networks annotation.
    ///
    /// # Panics
    /// When its namespace cannot be made.
    #[must_use]
    pub fn pod(&self, name: &str, networks: Option<&str>) -> Pod {
        self.pod_in("default", name, networks, None)
    }

    /// A new pod with both annotations.
    ///
    /// # Panics
    /// When its namespace cannot be made.
    #[must_use]
    pub fn pod_in(
        &self,
        namespace: &str,
        name: &str,
        networks: Option<&str>,
        default_network: Option<&str>,
    ) -> Pod {
        let netns = NetNs::with_prefix("mc-pod").expect("pod netns");
        let uid = self.register_pod(namespace, name, &annotations(networks, default_network));
        Pod {
            container_id: format!("ctr-{name}-{}", netns.name()),
            netns,
            namespace: namespace.into(),
            name: name.into(),
            uid,
            networks: networks.map(str::to_owned),
            default_network: default_network.map(str::to_owned),
        }
    }

    /// A pod's identity: in API mode the pod object (with these
    /// annotations) is created in the stand-in, which gives its UID; in
    /// standalone mode the UID is `uid-<name>`.
    #[must_use]
    pub fn register_pod(
        &self,
        namespace: &str,
        name: &str,
        annotations: &[(&str, &str)],
    ) -> String {
        match &self.api {
            Some(api) => api.add_pod(namespace, name, annotations),
            None => format!("uid-{name}"),
        }
    }

    /// Runs `plexus` for `pod` with `command`, as a runtime would.
    ///
    /// # Panics
    /// When it cannot be started.
    #[must_use]
    pub fn cni(&self, command: &str, pod: &Pod) -> Output {
        self.cni_with(command, pod, &self.conf, Some(pod.netns.path()))
    }

    /// [`World::cni`] with another config or netns path.
    ///
    /// # Panics
    /// When it cannot be started.
    #[must_use]
    pub fn cni_with(&self, command: &str, pod: &Pod, conf: &Value, netns: Option<&Path>) -> Output {
        self.spawn(command, pod, conf, netns)
            .wait_with_output()
            .expect("plexus output")
    }

    /// Starts `plexus` without waiting for it (stdin already written).
    ///
    /// # Panics
    /// When it cannot be started.
    #[must_use]
    pub fn spawn(&self, command: &str, pod: &Pod, conf: &Value, netns: Option<&Path>) -> Child {
        let mut args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            pod.namespace, pod.name, pod.container_id, pod.uid
        );
        if self.source == Source::Standalone {
            if let Some(n) = &pod.networks {
                args.push_str(&format!(";K8S_ANNOTATION_NETWORKS={n}"));
            }
            if let Some(d) = &pod.default_network {
                args.push_str(&format!(";K8S_ANNOTATION_DEFAULT_NETWORK={d}"));
            }
        }
        let mut cmd = self.host.command(bin("plexus")).expect("host netns");
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &pod.container_id)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.cni_path)
            .env("CNI_ARGS", args)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ns) = netns {
            cmd.env("CNI_NETNS", ns);
        }
        let mut child = cmd.spawn().expect("spawn plexus");
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes());
        child
    }

    /// `ADD`, insisting on success; returns the result JSON.
    ///
    /// # Panics
    /// When ADD fails.
    pub fn add(&self, pod: &Pod) -> Value {
        let out = self.cni("ADD", pod);
        assert!(
            out.status.success(),
            "ADD {} failed: {}",
            pod.name,
            describe(&out)
        );
        serde_json::from_slice(&out.stdout).expect("result JSON")
    }

    /// `DEL`, insisting on success.
    ///
    /// # Panics
    /// When DEL fails.
    pub fn del(&self, pod: &Pod) {
        let out = self.cni("DEL", pod);
        assert!(
            out.status.success(),
            "DEL {} failed: {}",
            pod.name,
            describe(&out)
        );
    }

    /// The pod's network-status, from the API server or the status file.
    #[must_use]
    pub fn status(&self, pod: &Pod) -> Option<Value> {
        let text = match &self.api {
            Some(api) => api.pod_annotation(
                &pod.namespace,
                &pod.name,
                "k8s.v1.cni.cncf.io/network-status",
            ),
            None => fs::read_to_string(
                self.tmp
                    .path()
                    .join("status")
                    .join(format!("{}.json", pod.container_id)),
            )
            .ok(),
        }?;
        Some(serde_json::from_str(&text).expect("network-status is JSON"))
    }

    /// Files left in the plexus cache directory.
    #[must_use]
    pub fn cache_files(&self) -> Vec<PathBuf> {
        files(&self.tmp.path().join("cache"))
    }

    /// Lease files of every host-local network (IPs only, not the
    /// `last_reserved_ip` bookkeeping or the lock).
    #[must_use]
    pub fn leases(&self) -> Vec<PathBuf> {
        let Ok(nets) = fs::read_dir(self.tmp.path().join("ipam")) else {
            return Vec::new();
        };
        nets.filter_map(Result::ok)
            .flat_map(|n| files(&n.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
            })
            .collect()
    }

    /// Links in the host namespace besides `lo` and the macvlan master pair.
    #[must_use]
    pub fn host_links(&self) -> Vec<String> {
        self.host
            .links()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .filter(|n| !matches!(n.as_str(), "lo" | MASTER | "mv0peer" | "plxbr0"))
            .collect()
    }
}

/// The networks and default-network annotations, as a pod carries them.
#[must_use]
pub fn annotations<'a>(
    networks: Option<&'a str>,
    default_network: Option<&'a str>,
) -> Vec<(&'static str, &'a str)> {
    let mut ann = Vec::new();
    if let Some(n) = networks {
        ann.push(("k8s.v1.cni.cncf.io/networks", n));
    }
    if let Some(d) = default_network {
        ann.push(("v1.multus-cni.io/default-network", d));
    }
    ann
}

/// Links in a pod besides `lo`.
#[must_use]
pub fn pod_links(pod: &Pod) -> Vec<String> {
    netns_links(&pod.netns)
}

/// The interfaces in `ns` but `lo`, in the kernel's order.
#[must_use]
pub fn netns_links(ns: &NetNs) -> Vec<String> {
    ns.links()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .filter(|n| n != "lo")
        .collect()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(d) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = d.filter_map(Result::ok).map(|e| e.path()).collect();
    v.sort();
    v
}

/// Status, stdout and stderr of a run, for assertion messages.
#[must_use]
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The CNI error a failed run printed.
///
/// # Panics
/// When the run succeeded or stdout is not a CNI error.
#[must_use]
pub fn cni_error(out: &Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a CNI error: {}",
        describe(out)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("CNI error JSON on stdout ({e}): {}", describe(out)));
    assert!(v["code"].is_u64(), "{v}");
    v
}
