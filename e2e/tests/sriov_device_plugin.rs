//! The `sriov-device-plugin` daemon against a kubelet stand-in that speaks
//! the real device-plugin gRPC API on unix sockets (registration,
//! ListAndWatch, GetPreferredAllocation, Allocate, plugin watcher).
//!
//! The hardware is the fake sysfs tree of the testkit (an X710 with four
//! VFs): there is no SR-IOV NIC here. The daemon runs in a throwaway
//! network namespace so that the host's own routes play no part.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use plexus_testkit::sysfs::{DEFAULT_PF_BDF, NetdevSpec, PfSpec, VfSpec};
use plexus_testkit::{FakeDeviceManager, FakeSysfs, NetNs};
use serde_json::{Value, json};

const NET: &str = "intel.com/x710_net";
const DPDK: &str = "intel.com/x710_dpdk";
const WAIT: Duration = Duration::from_secs(10);

struct Daemon {
    child: Child,
    /// The namespace it runs in.
    ns: NetNs,
}

impl Daemon {
    fn start(dir: &Path, sysfs: &Path) -> Self {
        Self::start_rescanning(dir, sysfs, 300)
    }

    fn start_rescanning(dir: &Path, sysfs: &Path, rescan_ms: u64) -> Self {
        let ns = NetNs::with_prefix("dp").unwrap();
        let child = plexus_e2e::device_plugin(&ns, dir, sysfs)
            .args(["--health-interval-ms", "100", "--rescan-interval-ms"])
            .arg(rescan_ms.to_string())
            .env(
                "PLEXUS_LOG",
                "debug,h2=info,tower=info,hyper=info,tonic=info",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self { child, ns }
    }

    /// SIGTERM, then the exit status and the log.
    fn stop(mut self) -> (bool, String) {
        let pid = self.child.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let out = std::mem::replace(
            &mut self.child,
            std::process::Command::new("true").spawn().unwrap(),
        )
        .wait_with_output()
        .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the daemon said.
        if std::thread::panicking()
            && let Some(mut err) = self.child.stderr.take()
        {
            let mut log = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut log);
            eprintln!("--- sriov-device-plugin log ---\n{log}");
        }
    }
}

fn write_config(dir: &Path, pools: &Value) {
    // Written whole and renamed, as a ConfigMap update swaps its files.
    let tmp = dir.join("config.json.tmp");
    fs::write(&tmp, json!({"resourceList": pools}).to_string()).unwrap();
    fs::rename(&tmp, dir.join("config.json")).unwrap();
}

fn reference_pools() -> Value {
    json!([
        {"resourceName": "x710_net", "selectors": [{"vendors": ["8086"], "devices": ["154c"],
            "drivers": ["iavf"], "pfNames": ["ens1f0#1-7"]}]},
        {"resourceName": "x710_dpdk", "selectors": [{"drivers": ["vfio-pci"],
            "rootDevices": ["0000:3b:00.0#0"]}]},
        // Bad: reported, the others still served.
        {"resourceName": "broken", "selectors": {"pfNames": ["ens1f0#9-3"]}}
    ])
}

fn ids(list: &[(String, String, Vec<i64>)]) -> Vec<&str> {
    list.iter().map(|d| d.0.as_str()).collect()
}

fn health<'a>(list: &'a [(String, String, Vec<i64>)], id: &str) -> &'a str {
    &list.iter().find(|d| d.0 == id).unwrap().1
}

fn sockets(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == "sock"));
    v.sort();
    v
}

#[test]
fn serves_pools_to_the_kubelet_and_lives_with_the_node() {
    let fake = FakeSysfs::new();
    fake.x710();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, &reference_pools());
    let mut kubelet = FakeDeviceManager::start(&d.join("device-plugins"));
    let daemon = Daemon::start(d, fake.root());

    // Registration (legacy mode: no plugins_registry directory).
    let net = kubelet.wait_list(NET, WAIT, |l| l.len() == 3);
    assert_eq!(ids(&net), ["0000:3b:02.1", "0000:3b:02.2", "0000:3b:02.3"]);
    assert!(
        net.iter()
            .all(|(_, h, numa)| h == "Healthy" && numa == &[0]),
        "{net:?}"
    );
    let dpdk = kubelet.wait_list(DPDK, WAIT, |l| l.len() == 1);
    assert_eq!(ids(&dpdk), ["0000:3b:02.0"]);
    let mut regs = kubelet.registrations();
    regs.sort();
    assert_eq!(
        regs,
        [
            (DPDK.into(), "intel.com_x710_dpdk.sock".into(), true),
            (NET.into(), "intel.com_x710_net.sock".into(), true)
        ]
    );

    // Allocate, as the reference fixture says.
    let r = kubelet.allocate(DPDK, &["0000:3b:02.0"]).unwrap();
    assert_eq!(r.envs["PCIDEVICE_INTEL_COM_X710_DPDK"], "0000:3b:02.0");
    let info: Value = serde_json::from_str(&r.envs["PCIDEVICE_INTEL_COM_X710_DPDK_INFO"]).unwrap();
    assert_eq!(
        info,
        json!({"0000:3b:02.0": {"generic": {"deviceID": "0000:3b:02.0"},
            "vfio": {"dev-mount": "/dev/vfio/90", "mount": "/dev/vfio/vfio"}}})
    );
    let specs: Vec<(&str, &str, &str)> = r
        .devices
        .iter()
        .map(|s| {
            (
                s.container_path.as_str(),
                s.host_path.as_str(),
                s.permissions.as_str(),
            )
        })
        .collect();
    assert_eq!(
        specs,
        [
            ("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"),
            ("/dev/vfio/90", "/dev/vfio/90", "rw")
        ]
    );
    let devinfo = d.join("devinfo/dp/intel.com-x710_dpdk-0000:3b:02.0-device.json");
    let v: Value = serde_json::from_slice(&fs::read(&devinfo).unwrap()).unwrap();
    assert_eq!(
        v,
        json!({"type": "pci", "version": "1.1.0",
            "pci": {"pci-address": "0000:3b:02.0", "pf-pci-address": DEFAULT_PF_BDF}})
    );
    let e = kubelet.allocate(DPDK, &["0000:3b:02.1"]).unwrap_err();
    assert!(
        e.message().contains("not in pool intel.com/x710_dpdk"),
        "{e:?}"
    );
    assert_eq!(
        kubelet
            .preferred(
                NET,
                &["0000:3b:02.3", "0000:3b:02.1", "0000:3b:02.2"],
                &[],
                2
            )
            .unwrap(),
        ["0000:3b:02.1", "0000:3b:02.2"]
    );

    // Health: a VF losing its netdev (driver trouble) turns Unhealthy
    // within a second; one handed to a container (its netdev now in the
    // pod) does not.
    kubelet.allocate(NET, &["0000:3b:02.2"]).unwrap();
    fake.remove_netdev("0000:3b:02.2", "ens1f0v2");
    fake.remove_netdev("0000:3b:02.3", "ens1f0v3");
    let l = kubelet.wait_list(NET, Duration::from_secs(1), |l| {
        health(l, "0000:3b:02.3") == "Unhealthy"
    });
    assert_eq!(health(&l, "0000:3b:02.2"), "Healthy");
    // And stays Unhealthy over four rescans (300 ms each), which see the
    // VF without a netdev: only the netdev's return makes it Healthy.
    std::thread::sleep(Duration::from_millis(1200));
    let last = kubelet.lists(NET).last().cloned().unwrap();
    assert_eq!(
        health(&last, "0000:3b:02.3"),
        "Unhealthy",
        "a rescan made the VF without a netdev Healthy again: {last:?}"
    );
    fake.add_netdev(
        "0000:3b:02.3",
        NetdevSpec {
            ifname: "ens1f0v3".into(),
            ..NetdevSpec::default()
        },
    );
    kubelet.wait_list(NET, WAIT, |l| l.iter().all(|d| d.1 == "Healthy"));

    // Rediscovery: a new VF joins its pool without a restart.
    fake.vf(
        DEFAULT_PF_BDF,
        4,
        VfSpec {
            ifname: Some("ens1f0v4".into()),
            ..VfSpec::default()
        },
    );
    kubelet.wait_list(NET, WAIT, |l| l.len() == 4);

    // The PF's link goes down: every VF on it is Unhealthy; back up, healthy.
    fake.corrupt(DEFAULT_PF_BDF, "net/ens1f0/operstate", "down\n");
    kubelet.wait_list(NET, Duration::from_secs(1), |l| {
        l.iter().all(|d| d.1 == "Unhealthy")
    });
    fake.corrupt(DEFAULT_PF_BDF, "net/ens1f0/operstate", "up\n");
    kubelet.wait_list(NET, WAIT, |l| l.iter().all(|d| d.1 == "Healthy"));

    // Kubelet restart: sockets wiped, a new kubelet.sock; both pools
    // register again and stream again.
    let before = kubelet.registrations().len();
    let streams = kubelet.lists(NET).len();
    kubelet.restart();
    let deadline = std::time::Instant::now() + WAIT;
    while kubelet.registrations().len() < before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no re-registration: {:?}",
            kubelet.registrations()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    while kubelet.lists(NET).len() <= streams {
        assert!(
            std::time::Instant::now() < deadline,
            "the new stream sent no list"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kubelet.wait_list(NET, WAIT, |l| l.len() == 4);

    // A config change: the DPDK pool is withdrawn (its stream ends with an
    // empty list), a new pool is served.
    write_config(
        d,
        &json!([
            {"resourceName": "x710_net", "selectors": {"drivers": ["iavf"]}},
            {"resourceName": "x710_vfio", "selectors": {"drivers": ["vfio-pci"]}}
        ]),
    );
    kubelet.wait_list("intel.com/x710_vfio", WAIT, |l| l.len() == 1);
    kubelet.wait_list(DPDK, WAIT, <[_]>::is_empty);
    assert!(
        !devinfo.exists(),
        "a withdrawn pool's device-info files go with it"
    );

    // Shutdown: every stream's last word is an empty list; nothing left.
    let (ok, log) = daemon.stop();
    assert!(ok, "{log}");
    assert!(
        log.contains("pool left out") && log.contains("runs backwards"),
        "{log}"
    );
    for r in [NET, "intel.com/x710_vfio"] {
        kubelet.wait_list(r, WAIT, <[_]>::is_empty);
    }
    assert_eq!(
        sockets(&d.join("device-plugins")),
        [d.join("device-plugins/kubelet.sock")]
    );
}

#[test]
fn serves_subfunctions_from_an_aux_pool() {
    // A ConnectX-5 on NUMA 1 with no VFs and two SFs, one with RDMA.
    let fake = FakeSysfs::new();
    fake.pf(PfSpec {
        total_vfs: 0,
        numa_node: 1,
        ..PfSpec::connectx5()
    });
    let sf = fake.sf(DEFAULT_PF_BDF, 2, 88, Some("enp59s0f0s88"), true);
    fake.sf(DEFAULT_PF_BDF, 3, 89, Some("enp59s0f0s89"), false);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(
        d,
        &json!([{"resourceName": "sf", "resourcePrefix": "nvidia.com",
            "deviceType": "auxNetDevice",
            "additionalInfo": {DEFAULT_PF_BDF: {"tier": "gold"}},
            "selectors": {"auxTypes": ["sf"], "pfNames": ["enp59s0f0np0#80-99"],
                "isRdma": false}}]),
    );
    let kubelet = FakeDeviceManager::start(&d.join("device-plugins"));
    let daemon = Daemon::start(d, fake.root());
    const SF: &str = "nvidia.com/sf";

    let l = kubelet.wait_list(SF, WAIT, |l| l.len() == 2);
    assert_eq!(ids(&l), ["mlx5_core.sf.2", "mlx5_core.sf.3"]);
    assert!(
        l.iter().all(|(_, h, numa)| h == "Healthy" && numa == &[1]),
        "{l:?}"
    );

    // Allocate: the SF's name is the device ID; extra info is keyed by the
    // parent's PCI address; no VFIO, no device-info file (upstream writes
    // none for SFs).
    let r = kubelet.allocate(SF, &[&sf]).unwrap();
    assert_eq!(r.envs["PCIDEVICE_NVIDIA_COM_SF"], "mlx5_core.sf.2");
    let info: Value = serde_json::from_str(&r.envs["PCIDEVICE_NVIDIA_COM_SF_INFO"]).unwrap();
    assert_eq!(
        info,
        json!({"mlx5_core.sf.2": {"generic": {"deviceID": "mlx5_core.sf.2"},
            "extra": {"tier": "gold"}}})
    );
    assert!(r.devices.is_empty(), "{:?}", r.devices);
    let devinfo = fs::read_dir(d.join("devinfo/dp")).map_or(0, Iterator::count);
    assert_eq!(devinfo, 0, "a device-info file for an SF");

    // Health: an SF whose netdev vanishes (not in a pod) turns Unhealthy.
    let rel = format!("{DEFAULT_PF_BDF}/mlx5_core.sf.3");
    fake.remove_netdev(&rel, "enp59s0f0s89");
    let l = kubelet.wait_list(SF, Duration::from_secs(1), |l| {
        health(l, "mlx5_core.sf.3") == "Unhealthy"
    });
    assert_eq!(health(&l, "mlx5_core.sf.2"), "Healthy");

    // Rediscovery: a new SF in the range joins; one outside does not.
    fake.sf(DEFAULT_PF_BDF, 4, 90, Some("enp59s0f0s90"), false);
    fake.sf(DEFAULT_PF_BDF, 5, 7, Some("enp59s0f0s7"), false);
    let l = kubelet.wait_list(SF, WAIT, |l| l.len() == 3);
    assert_eq!(
        ids(&l),
        ["mlx5_core.sf.2", "mlx5_core.sf.3", "mlx5_core.sf.4"]
    );

    let (ok, log) = daemon.stop();
    assert!(ok, "{log}");
    kubelet.wait_list(SF, WAIT, <[_]>::is_empty);
}

#[test]
fn plugin_watcher_mode() {
    let fake = FakeSysfs::new();
    fake.x710();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, &reference_pools());
    fs::create_dir_all(d.join("plugins_registry")).unwrap();
    let kubelet = FakeDeviceManager::start(&d.join("device-plugins"));
    let daemon = Daemon::start(d, fake.root());
    let socket = d.join("plugins_registry/intel.com_x710_net.sock");
    let deadline = std::time::Instant::now() + WAIT;
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no socket in plugins_registry"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = kubelet.discover_plugin(&socket);
    assert_eq!(info.r#type, "DevicePlugin");
    assert_eq!(info.name, NET);
    assert_eq!(info.endpoint, socket.to_string_lossy());
    assert_eq!(info.supported_versions, ["v1beta1"]);
    let l = kubelet.wait_list(NET, WAIT, |l| l.len() == 3);
    assert_eq!(ids(&l), ["0000:3b:02.1", "0000:3b:02.2", "0000:3b:02.3"]);
    // The watcher finds plugins itself: nothing calls Register.
    assert!(kubelet.registrations().is_empty());
    let (ok, log) = daemon.stop();
    assert!(ok, "{log}");
    assert!(sockets(&d.join("plugins_registry")).is_empty());
}

/// A config file caught half written (a hostPath file being edited): the
/// daemon keeps serving the pools of the last good file: same sockets,
/// same device-info files, no empty device list to the kubelet; the error,
/// with its line and column, is in the log and in `discover`.
#[test]
fn a_half_written_config_keeps_the_last_good_pools() {
    let fake = FakeSysfs::new();
    fake.x710();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, &reference_pools());
    let kubelet = FakeDeviceManager::start(&d.join("device-plugins"));
    let daemon = Daemon::start(d, fake.root());
    kubelet.wait_list(NET, WAIT, |l| l.len() == 3);
    kubelet.wait_list(DPDK, WAIT, |l| l.len() == 1);
    kubelet.allocate(DPDK, &["0000:3b:02.0"]).unwrap();
    let files = |sub: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(d.join(sub))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let (socks, infos) = (sockets(&d.join("device-plugins")), files("devinfo/dp"));
    assert_eq!(socks.len(), 3, "two pools and the kubelet: {socks:?}");
    assert_eq!(infos.len(), 1, "{infos:?}");

    let whole = json!({"resourceList": reference_pools()}).to_string();
    fs::write(d.join("config.json"), &whole[..whole.len() / 2]).unwrap();
    // Several health ticks (100 ms) and rescans (300 ms) see it.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sockets(&d.join("device-plugins")), socks);
    assert_eq!(files("devinfo/dp"), infos);
    for (pool, n) in [(NET, 3), (DPDK, 1)] {
        let lists = kubelet.lists(pool);
        assert!(
            lists.iter().all(|l| l.len() == n),
            "{pool}: the kubelet was sent {lists:?}"
        );
    }
    let text = plexus_e2e::discover(&daemon.ns, &[], &d.join("config.json"), fake.root(), false);
    assert!(
        text.contains("config: the config is not JSON: EOF while parsing")
            && text.contains("at line 1 column"),
        "{text}"
    );

    // The file completed: served as before, nothing was restarted.
    write_config(d, &reference_pools());
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(sockets(&d.join("device-plugins")), socks);
    let (ok, log) = daemon.stop();
    assert!(ok, "{log}");
    assert_eq!(
        log.matches("config unusable: keeping the pools of the last good one")
            .count(),
        1,
        "logged once, when the file changed:\n{log}"
    );
    assert!(log.contains("at line 1 column"), "{log}");
}

/// RDMA in exclusive netns mode: a VF handed to a pod takes its RDMA
/// device into the pod's netns, and the host's sysfs no longer shows it.
/// The `isRdma` pool keeps the VF (the kubelet's capacity must not drop
/// while the pod holds it); a VF that loses its RDMA device while on the
/// host (mlx5_ib unloaded, say) does leave the pool.
/// A ConnectX-5 with three VFs, netdev `enp59s0f0v<i>` and RDMA device
/// `mlx5_<i+2>` each, and a config with one `isRdma` pool of them,
/// `nvidia.com/cx5_rdma`, in a fresh directory.
fn rdma_rig() -> (FakeSysfs, Vec<String>, tempfile::TempDir) {
    use plexus_testkit::sysfs::vf_bdf;
    let fake = FakeSysfs::new();
    fake.pf(PfSpec::connectx5());
    let vfs: Vec<String> = (0..3u32)
        .map(|i| {
            let bdf = vf_bdf(DEFAULT_PF_BDF, 2, 1, i);
            fake.vf(
                DEFAULT_PF_BDF,
                i,
                VfSpec {
                    ifname: Some(format!("enp59s0f0v{i}")),
                    ..VfSpec::connectx5()
                },
            );
            fake.add_rdma(&bdf, &format!("mlx5_{}", i + 2), i + 2);
            bdf
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &json!([{"resourceName": "cx5_rdma", "resourcePrefix": "nvidia.com",
            "selectors": {"vendors": ["15b3"], "devices": ["1018"], "isRdma": true}}]),
    );
    (fake, vfs, dir)
}

/// VF `i` of [`rdma_rig`] as the kernel shows it once its pod ended: its
/// netdev and RDMA device back on the host.
fn back_on_host(fake: &FakeSysfs, vf: &str, i: u32) {
    fake.add_netdev(
        vf,
        NetdevSpec {
            ifname: format!("enp59s0f0v{i}"),
            ..NetdevSpec::default()
        },
    );
    fake.add_rdma(vf, &format!("mlx5_{}", i + 2), i + 2);
}

#[test]
fn an_allocated_vf_stays_in_its_rdma_pool_while_its_rdma_device_is_in_the_pod() {
    let (fake, vfs, dir) = rdma_rig();
    let d = dir.path();
    let kubelet = FakeDeviceManager::start(&d.join("device-plugins"));
    let daemon = Daemon::start(d, fake.root());
    const RDMA: &str = "nvidia.com/cx5_rdma";
    kubelet.wait_list(RDMA, WAIT, |l| l.len() == 3);

    let r = kubelet.allocate(RDMA, &[&vfs[0]]).unwrap();
    let info: Value = serde_json::from_str(&r.envs["PCIDEVICE_NVIDIA_COM_CX5_RDMA_INFO"]).unwrap();
    // No rdma_cm under the device root (rdma_ucm not loaded): left out,
    // or container creation would fail on the missing node.
    assert_eq!(
        info[&vfs[0]]["rdma"],
        json!({"rdma_dev": "mlx5_2", "uverbs": "/dev/infiniband/uverbs2",
               "umad": "/dev/infiniband/umad2", "issm": "/dev/infiniband/issm2"}),
        "{info}"
    );
    let nodes = |r: &plexus_kubelet_api::deviceplugin::v1beta1::ContainerAllocateResponse| {
        r.devices
            .iter()
            .map(|s| s.host_path.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        nodes(&r),
        [
            "/dev/infiniband/uverbs2",
            "/dev/infiniband/issm2",
            "/dev/infiniband/umad2"
        ]
    );
    let devinfo = d.join(format!(
        "devinfo/dp/nvidia.com-cx5_rdma-{}-device.json",
        vfs[0]
    ));
    let v: Value = serde_json::from_slice(&fs::read(&devinfo).unwrap()).unwrap();
    assert_eq!(v["pci"]["rdma-device"], "mlx5_2", "{v}");
    // rdma_ucm loaded: the node is given.
    fs::create_dir_all(d.join("dev/infiniband")).unwrap();
    fs::write(d.join("dev/infiniband/rdma_cm"), "").unwrap();
    let r2 = kubelet.allocate(RDMA, &[&vfs[2]]).unwrap();
    assert_eq!(
        nodes(&r2).last().map(String::as_str),
        Some("/dev/infiniband/rdma_cm")
    );
    // The pod's netns takes the netdev and, in exclusive mode, the RDMA
    // device.
    fake.remove_netdev(&vfs[0], "enp59s0f0v0");
    fake.hide_rdma(&vfs[0]);
    // Four rescans (300 ms each) see VF 0 without an RDMA device.
    let streams = kubelet.lists(RDMA).len();
    std::thread::sleep(Duration::from_millis(1200));
    let lists = kubelet.lists(RDMA);
    assert!(
        lists[streams - 1..]
            .iter()
            .all(|l| l.len() == 3 && l.iter().all(|d| d.1 == "Healthy")),
        "the capacity dropped while a pod held the VF: {lists:?}"
    );

    // Not allocated: a VF whose RDMA device goes away on the host is no
    // longer an RDMA device, and leaves the pool.
    fake.hide_rdma(&vfs[1]);
    let l = kubelet.wait_list(RDMA, WAIT, |l| l.len() == 2);
    assert_eq!(ids(&l), [vfs[0].as_str(), vfs[2].as_str()]);

    // The pod is gone: netdev and RDMA device are back on the host; the
    // VF is free and still in the pool. Then, its RDMA device going away
    // on the host takes it out like any other.
    back_on_host(&fake, &vfs[0], 0);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(kubelet.lists(RDMA).last().unwrap().len(), 2);
    fake.hide_rdma(&vfs[0]);
    let l = kubelet.wait_list(RDMA, WAIT, |l| l.len() == 1);
    assert_eq!(ids(&l), [vfs[2].as_str()]);

    let (ok, log) = daemon.stop();
    assert!(ok, "{log}");
}

/// RDMA exclusive mode across a restart of the plugin: the new process has
/// no record of what it handed out, and the host sees neither the netdevs
/// nor the RDMA devices of the VFs in pods. devlink's `enable_rdma` (mlx5
/// has an instance per VF) says VF 0 is an RDMA device all the same, so it
/// stays in its `isRdma` pool; VF 1, whose RDMA function is off, has
/// nothing to keep. When VF 0's pod ends, an Allocate that comes before
/// the next rescan still gives the container its RDMA nodes.
#[test]
fn a_restarted_plugin_keeps_a_vf_whose_rdma_device_is_in_a_pod_as_devlink_says() {
    let (fake, vfs, dir) = rdma_rig();
    for (i, vf) in vfs.iter().enumerate() {
        fake.devlink_enable_rdma(vf, i != 1);
    }
    let d = dir.path();
    let kubelet = FakeDeviceManager::start(&d.join("device-plugins"));
    const RDMA: &str = "nvidia.com/cx5_rdma";
    let first = Daemon::start(d, fake.root());
    kubelet.wait_list(RDMA, WAIT, |l| l.len() == 3);
    kubelet.allocate(RDMA, &[&vfs[0], &vfs[1]]).unwrap();
    // Two pods take VF 0 and VF 1, netdev and RDMA device.
    for (i, vf) in vfs.iter().enumerate().take(2) {
        fake.remove_netdev(vf, &format!("enp59s0f0v{i}"));
        fake.hide_rdma(vf);
    }
    let (ok, log) = first.stop();
    assert!(ok, "{log}");

    // Restarted, rescanning only once a minute from now on.
    let second = Daemon::start_rescanning(d, fake.root(), 60_000);
    let l = kubelet.wait_list(RDMA, WAIT, |l| l.len() == 2);
    assert_eq!(ids(&l), [vfs[0].as_str(), vfs[2].as_str()]);
    assert!(l.iter().all(|d| d.1 == "Healthy"), "{l:?}");

    // VF 0's pod ends; the kubelet hands it out again before any rescan.
    back_on_host(&fake, &vfs[0], 0);
    let r = kubelet.allocate(RDMA, &[&vfs[0]]).unwrap();
    let nodes: Vec<&str> = r.devices.iter().map(|s| s.host_path.as_str()).collect();
    assert!(nodes.contains(&"/dev/infiniband/uverbs2"), "{nodes:?}");
    let info: Value = serde_json::from_str(&r.envs["PCIDEVICE_NVIDIA_COM_CX5_RDMA_INFO"]).unwrap();
    assert_eq!(info[&vfs[0]]["rdma"]["rdma_dev"], "mlx5_2", "{info}");
    let (ok, log) = second.stop();
    assert!(ok, "{log}");
}
