//! containerd as the runtime: Debian's `containerd` and `runc` run the
//! pods' sandboxes, driven over the CRI the way the kubelet drives them,
//! and call `plexus` (installed by the real `plexus install`) for CNI ADD
//! and DEL. Every scenario runs in standalone mode (annotations through
//! containerd's `io.kubernetes.cri.pod-annotations`) and in Kubernetes
//! mode (the pod and NADs from the API server stand-in), and again in
//! Kubernetes mode through thick mode's daemon (containerd runs the shim).
//!
//! What is asserted is what the kubelet and a user see: the pod IP the CRI
//! reports, interfaces and pings in the sandbox's network namespace,
//! network-status, the runtime's error when ADD fails, and after Stop and
//! Remove no sandbox, lease, cache entry, status file, host link or
//! network namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use plexus_e2e::cri::{Containerd, PodSpec, install_plexus};
use plexus_e2e::meta::{Source, World, annotations, eventually};
use plexus_e2e::sriov;
use plexus_testkit::{FakeDeviceManager, FakeKubelet, NetNs};
use serde_json::{Value, json};

/// Runs a scenario in both modes.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod standalone {
            $(#[test] fn $name() { super::$name(super::Source::Standalone) })*
        }
        mod api {
            $(#[test] fn $name() { super::$name(super::Source::Api) })*
        }
        /// Thick mode: containerd runs the plexus shim, which hands every
        /// request to `plexus daemon`.
        mod thick {
            $(#[test] fn $name() {
                plexus_e2e::meta::through_daemon(|| super::$name(super::Source::Api))
            })*
        }
    };
}

both!(
    pods_attach_ping_and_leave_nothing_behind,
    failed_adds_name_their_cause_and_leave_nothing_behind,
    pods_whose_networks_cannot_be_rebuilt_are_still_deleted,
);

/// Hot-plug into a sandbox containerd made: its netns is a path containerd
/// chose, which the daemon knows only from the ADD containerd ran through
/// the shim. An element added to the running pod's annotation (at the API
/// stand-in) gets its interface there with its address and a
/// network-status entry; one removed loses its interface and lease; the
/// kubelet's Stop/Remove then deletes the pod with what was hot-plugged,
/// and nothing is left.
#[test]
fn thick_hot_plug_reaches_a_containerd_sandbox() {
    plexus_e2e::meta::through_daemon(|| {
        let node = Node::new(Source::Api);
        let a = node.spec("a", Some("mv-cap"));
        let id = node
            .cri
            .run_pod(&a)
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", node.cri.log()));
        let path = node.cri.status(&id).unwrap().netns.expect("sandbox netns");
        let ns = sandbox_ns(&path);
        assert_eq!(sandbox_links(&ns), ["eth0", "net1"]);
        let status = || -> Vec<String> {
            node.network_status(&a, &id)
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .map(|e| format!("{} {}", e["interface"].as_str().unwrap_or(""), e["name"]))
                .collect()
        };
        let set = |networks: &str| {
            node.w.api().set_pod_annotation(
                "default",
                "a",
                "k8s.v1.cni.cncf.io/networks",
                Some(networks),
            );
        };

        set("mv-cap, bridge-net");
        eventually("net2 in the sandbox", || ns.link("net2").is_some());
        eventually("net2 has its address", || {
            ns.addrs("net2").iter().any(|x| x.starts_with("10.77.2."))
        });
        eventually("network-status lists net2", || {
            status().contains(&"net2 \"default/bridge-net\"".to_owned())
        });
        assert_eq!(node.w.leases().len(), 3, "{:?}", node.w.leases());

        set("bridge-net");
        eventually("net1 gone from the sandbox", || ns.link("net1").is_none());
        eventually("net1's lease released", || node.w.leases().len() == 2);
        assert_eq!(sandbox_links(&ns), ["eth0", "net2"]);

        drop(ns);
        node.delete_all_and_check_clean(&[path], &[]);
    });
}

/// A world with containerd running plexus. containerd goes first (field
/// order is drop order): it still needs the world's CNI config and
/// plugins to delete what is left.
struct Node {
    cri: Containerd,
    w: World,
}

impl Node {
    fn new(src: Source) -> Node {
        let w = World::new(src);
        // host-local takes the `ips` capability: static IPs from a dynamic
        // range, and tuning the MAC.
        w.add_nad(
            "default",
            "mv-cap",
            &json!({"cniVersion": "1.0.0", "plugins": [
                {"type": "macvlan", "master": "mv0", "mode": "bridge",
                 "ipam": w.ipam("10.77.4.0/24"), "capabilities": {"ips": true}},
                {"type": "tuning", "capabilities": {"mac": true}}]}),
        );
        let bin_dir = install_plexus(&w);
        if let Some(d) = &w.daemon {
            // Thick mode: the installed config makes plexus the shim.
            let conf = std::fs::read_to_string(w.path("net.d/00-plexus.conflist")).unwrap();
            let v: Value = serde_json::from_str(&conf).unwrap();
            assert_eq!(
                v["plugins"][0]["daemonSocketDir"],
                json!(d.socket_dir),
                "{conf}"
            );
        }
        let cri = Containerd::start(&w.host, &bin_dir, &w.path("net.d"));
        Node { cri, w }
    }

    fn spec(&self, name: &str, networks: Option<&str>) -> PodSpec {
        let ann = annotations(networks, None);
        let uid = self.w.register_pod("default", name, &ann);
        PodSpec {
            name: name.into(),
            namespace: "default".into(),
            uid,
            annotations: ann
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn network_status(&self, spec: &PodSpec, id: &str) -> Option<Value> {
        let text = match &self.w.api {
            Some(api) => api.pod_annotation(
                &spec.namespace,
                &spec.name,
                "k8s.v1.cni.cncf.io/network-status",
            ),
            None => std::fs::read_to_string(self.w.path("status").join(format!("{id}.json"))).ok(),
        }?;
        Some(serde_json::from_str(&text).expect("network-status is JSON"))
    }

    fn status_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.w.path("status"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Stop + Remove every sandbox, as the kubelet deletes pods, then
    /// checks nothing is left: no sandbox, lease, cache entry, status file,
    /// network namespace, or host link but the world's and `host_links`.
    fn delete_all_and_check_clean(&self, netns: &[PathBuf], host_links: &[&str]) {
        for (id, name, _) in self.cri.list().unwrap() {
            self.cri
                .delete(&id)
                .unwrap_or_else(|e| panic!("Stop/Remove {name}: {e}\n{}", self.cri.log()));
        }
        assert_eq!(self.cri.list().unwrap(), [], "sandboxes left");
        assert!(
            self.w.leases().is_empty(),
            "leases left: {:?}",
            self.w.leases()
        );
        assert!(
            self.w.cache_files().is_empty(),
            "cache left: {:?}",
            self.w.cache_files()
        );
        assert!(
            self.status_files().is_empty(),
            "status files left: {:?}",
            self.status_files()
        );
        let mut left = self.w.host_links();
        left.retain(|l| !host_links.contains(&l.as_str()));
        assert!(left.is_empty(), "host links left: {left:?}");
        for ns in netns {
            assert!(
                !plexus_testkit::netns_exists(ns),
                "{} outlived its sandbox",
                ns.display()
            );
        }
    }
}

/// The sandbox's network namespace, for running commands in it (not
/// removed on drop: it is containerd's).
fn sandbox_ns(path: &Path) -> NetNs {
    NetNs::attach(&path.file_name().unwrap().to_string_lossy()).unwrap()
}

/// The sandbox's interfaces but `lo`, sorted.
fn sandbox_links(ns: &NetNs) -> Vec<String> {
    let mut l = plexus_e2e::meta::netns_links(ns);
    l.sort();
    l
}

fn ipv4(ns: &NetNs, ifname: &str) -> String {
    let addrs = ns.addrs(ifname);
    addrs
        .iter()
        .find(|a| a.contains('.'))
        .unwrap_or_else(|| panic!("{ifname} has no IPv4: {addrs:?}"))
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

fn ping(from: &NetNs, to: &str) {
    let out = from.exec("ping", &["-c", "1", "-W", "2", to]).unwrap();
    assert!(
        out.status.success(),
        "ping {to}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn pods_attach_ping_and_leave_nothing_behind(src: Source) {
    let node = Node::new(src);
    // JSON form: a static IP and MAC, a named interface, the default
    // route moved to it; and the text form with name@interface.
    let a = node.spec(
        "a",
        Some(
            r#"[{"name": "mv-cap", "ips": ["10.77.4.11/24"], "mac": "02:00:00:77:04:11"},
                {"name": "bridge-net", "interface": "data0", "default-route": ["10.77.2.254"]}]"#,
        ),
    );
    let b = node.spec("b", Some("mv-cap, default/bridge-net@data0"));
    let mut netns = Vec::new();
    let mut sandboxes = Vec::new();
    for spec in [&a, &b] {
        let id = node
            .cri
            .run_pod(spec)
            .unwrap_or_else(|e| panic!("RunPodSandbox {}: {e}\n{}", spec.name, node.cri.log()));
        let st = node.cri.status(&id).unwrap();
        assert!(st.ready, "{} not ready", spec.name);
        let path = st
            .netns
            .clone()
            .expect("the sandbox's netns in the verbose info");
        let ns = sandbox_ns(&path);
        // The pod IP the kubelet gets is eth0's, from the cluster network.
        assert_eq!(st.ip, ipv4(&ns, "eth0"), "{}", spec.name);
        assert!(st.ip.starts_with("10.77.0."), "{}", st.ip);
        assert_eq!(
            sandbox_links(&ns),
            ["data0", "eth0", "net1"],
            "{}",
            spec.name
        );
        let status = node
            .network_status(spec, &id)
            .unwrap_or_else(|| panic!("no network-status for {}", spec.name));
        let names: Vec<&str> = status
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["pod-network", "default/mv-cap", "default/bridge-net"],
            "{status:#}"
        );
        netns.push(path);
        sandboxes.push((id, ns));
    }
    let (a_ns, b_ns) = (&sandboxes[0].1, &sandboxes[1].1);
    assert_eq!(a_ns.addrs("net1")[0], "10.77.4.11/24");
    assert_eq!(a_ns.link("net1").unwrap()["address"], "02:00:00:77:04:11");
    let defaults: Vec<Value> = a_ns
        .routes()
        .into_iter()
        .filter(|r| r["dst"] == "default")
        .collect();
    assert_eq!(defaults.len(), 1, "{defaults:?}");
    assert_eq!(
        (&defaults[0]["gateway"], &defaults[0]["dev"]),
        (&json!("10.77.2.254"), &json!("data0"))
    );
    // Over every network, both ways.
    for ifname in ["eth0", "net1", "data0"] {
        ping(a_ns, &ipv4(b_ns, ifname));
        ping(b_ns, &ipv4(a_ns, ifname));
    }
    drop(sandboxes);
    node.delete_all_and_check_clean(&netns, &[]);
}

fn failed_adds_name_their_cause_and_leave_nothing_behind(src: Source) {
    let node = Node::new(src);
    for (name, networks, cause) in [
        ("missing-nad", "macvlan-dyn, no-such-nad", "no-such-nad"),
        // The third delegate fails at ADD: the two before it are undone.
        (
            "mid-add",
            "macvlan-dyn, broken",
            "\"mv0\" already exists but is not a bridge",
        ),
    ] {
        let spec = node.spec(name, Some(networks));
        let err = node
            .cri
            .run_pod(&spec)
            .expect_err(&format!("RunPodSandbox {name} succeeded"));
        let msg = err.message();
        assert!(msg.contains(cause), "{name}: {msg}");
        assert!(msg.contains("plexus"), "{name}: the plugin is named: {msg}");
    }
    node.delete_all_and_check_clean(&[], &[]);
}

/// The pods containerd could never delete before (issue 20): ADD fails,
/// and so did every DEL after it, so the sandbox stayed listed forever.
/// Now ADD fails naming the cause, and Stop/Remove leave nothing.
fn pods_whose_networks_cannot_be_rebuilt_are_still_deleted(src: Source) {
    let node = Node::new(src);
    node.w.add_nad(
        "default",
        "gone-binary",
        &json!({"cniVersion": "1.0.0", "type": "plexus-test-no-such-plugin"}),
    );
    for (name, networks, cause) in [
        (
            "malformed",
            r#"[{"name": "fast", "interface": "this-is-far-too-long"}]"#,
            "this-is-far-too-long",
        ),
        ("no-binary", "gone-binary", "plexus-test-no-such-plugin"),
    ] {
        let spec = node.spec(name, Some(networks));
        let err = node
            .cri
            .run_pod(&spec)
            .expect_err(&format!("RunPodSandbox {name} succeeded"));
        assert!(err.message().contains(cause), "{name}: {}", err.message());
    }
    node.delete_all_and_check_clean(&[], &[]);
}

const RESOURCE: &str = "intel.com/vf_pool";

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The SR-IOV path under containerd: the device plugin (real binary)
/// serves two emulated VFs, the kubelet stand-in allocates one to the pod
/// and reports it over PodResources, plexus resolves the NAD's
/// `resourceName` and `sriov` moves the VF into containerd's sandbox; Stop
/// gives it back to the host.
#[test]
fn sriov_vf_moves_into_the_sandbox_and_back() {
    let node = Node::new(Source::Standalone);
    let w = &node.w;
    let wire = sriov::wire("cri-wire");
    let (sysfs, _) = sriov::emulated_pf();
    let vfs = sriov::vfs(&w.host, &wire, &sysfs, 2);
    std::fs::write(
        w.path("config.json"),
        json!({"resourceList": [{"resourceName": "vf_pool",
            "selectors": {"drivers": ["iavf"], "pfNames": ["ens1f0"]}}]})
        .to_string(),
    )
    .unwrap();
    let dm = FakeDeviceManager::start(&w.path("device-plugins"));
    let _daemon = Daemon(
        plexus_e2e::device_plugin(&w.host, w.tmp.path(), sysfs.root())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let listed = dm.wait_list(RESOURCE, Duration::from_secs(10), |l| l.len() == 2);
    let free: Vec<&str> = listed.iter().map(|d| d.0.as_str()).collect();
    let kubelet = FakeKubelet::start(&w.path("kubelet/pod-resources.sock"));
    w.add_nad_annotated(
        "default",
        "sriov-net",
        &json!({"cniVersion": "1.0.0", "type": "sriov", "vlan": 0,
            "dataDir": w.path("sriov"), "sysfsRoot": sysfs.root(),
            "ipam": w.ipam("10.57.0.0/24")}),
        &[("k8s.v1.cni.cncf.io/resourceName", RESOURCE)],
    );
    // The kubelet's part, before the sandbox: pick, allocate, remember.
    let chosen = dm.preferred(RESOURCE, &free, &[], 1).unwrap().remove(0);
    dm.allocate(RESOURCE, &[&chosen]).unwrap();
    kubelet.add_pod("default", "vf-pod", &[("app", RESOURCE, &[&chosen])]);
    let vf = vfs.iter().find(|v| v.vf_bdf == chosen).unwrap();

    let spec = node.spec("vf-pod", Some("sriov-net"));
    let id = node
        .cri
        .run_pod(&spec)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", node.cri.log()));
    let path = node.cri.status(&id).unwrap().netns.unwrap();
    let ns = sandbox_ns(&path);
    let net1 = ns.link("net1").expect("the VF is the sandbox's net1");
    assert!(
        w.host.link(&vf.vf_ifname).is_none(),
        "{chosen} is still on the host"
    );
    let status = node.network_status(&spec, &id).unwrap();
    let entry = status
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["interface"] == "net1")
        .unwrap_or_else(|| panic!("{status:#}"));
    assert_eq!(entry["device-info"]["pci"]["pci-address"], chosen.as_str());
    assert_eq!(entry["mac"], net1["address"]);
    assert!(ipv4(&ns, "net1").starts_with("10.57.0."));
    drop(ns);

    let vf_links: Vec<&str> = vfs.iter().map(|v| v.vf_ifname.as_str()).collect();
    node.delete_all_and_check_clean(&[path], &vf_links);
    assert!(
        w.host.link(&vf.vf_ifname).is_some(),
        "{} did not come back to the host",
        vf.vf_ifname
    );
}
