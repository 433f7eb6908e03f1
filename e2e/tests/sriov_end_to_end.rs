//! SR-IOV end to end: the device plugin serves emulated VFs to a kubelet
//! stand-in (the device-plugin gRPC API), the kubelet picks and allocates
//! one per pod (GetPreferredAllocation, Allocate) and reports it over the
//! PodResources API, `plexus` finds it there for the NAD whose
//! `k8s.v1.cni.cncf.io/resourceName` names the pool, and the `sriov`
//! plugin moves that VF into the pod. Two pods then ping each other over
//! their VFs, whose peers share a bridge (the NIC's switch).
//!
//! The VFs are veth ends registered in a fake sysfs tree, the PF an
//! emulated one (see `e2e/tests/sriov_cni.rs`); everything else is the
//! real binaries and protocols.

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use plexus_e2e::{
    REFERENCE_PLUGINS,
    meta::{Source, World},
    sriov, target_dir,
};
use plexus_testkit::{FakeDeviceManager, FakeKubelet, NetNs};
use serde_json::{Value, json};

const RESOURCE: &str = "intel.com/vf_pool";

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pods_get_the_vfs_the_device_plugin_allocated_and_ping_over_them() {
    let mut w = World::new(Source::Standalone);
    w.cni_path = format!("{}:{REFERENCE_PLUGINS}", target_dir().display());
    let wire = sriov::wire("e2e-wire");
    let (sysfs, _) = sriov::emulated_pf();
    let vfs = sriov::vfs(&w.host, &wire, &sysfs, 2);

    // The device plugin, with a pool of the iavf VFs of ens1f0.
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
    let mut free: Vec<String> = listed.iter().map(|d| d.0.clone()).collect();
    let kubelet = FakeKubelet::start(&w.path("kubelet/pod-resources.sock"));

    w.add_nad_annotated(
        "default",
        "sriov-net",
        &json!({"cniVersion": "1.0.0", "type": "sriov", "vlan": 0,
            "dataDir": w.path("sriov"), "sysfsRoot": sysfs.root(),
            "ipam": w.ipam("10.57.0.0/24")}),
        &[("k8s.v1.cni.cncf.io/resourceName", RESOURCE)],
    );

    let mut pods = Vec::new();
    for name in ["pod-a", "pod-b"] {
        // The kubelet's part: pick (the plugin's preference), allocate,
        // remember for PodResources.
        let refs: Vec<&str> = free.iter().map(String::as_str).collect();
        let chosen = dm.preferred(RESOURCE, &refs, &[], 1).unwrap().remove(0);
        free.retain(|f| *f != chosen);
        let env = dm.allocate(RESOURCE, &[&chosen]).unwrap().envs;
        assert_eq!(env["PCIDEVICE_INTEL_COM_VF_POOL"], chosen);
        kubelet.add_pod("default", name, &[("app", RESOURCE, &[&chosen])]);

        let pod = w.pod(name, Some("sriov-net"));
        w.add(&pod);
        let status = w.status(&pod).expect("network-status");
        let net1 = status
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["interface"] == "net1")
            .unwrap_or_else(|| panic!("no net1 in {status:#}"))
            .clone();
        assert_eq!(net1["name"], "default/sriov-net");
        assert_eq!(
            net1["device-info"]["pci"]["pci-address"],
            chosen.as_str(),
            "{net1:#}"
        );
        let vf = vfs.iter().find(|v| v.vf_bdf == chosen).unwrap();
        assert!(
            w.host.link(&vf.vf_ifname).is_none(),
            "{chosen} is still on the host"
        );
        let link = pod.netns.link("net1").expect("the VF is the pod's net1");
        assert_eq!(link["address"], net1["mac"]);
        let ip = net1["ips"][0].as_str().unwrap().to_owned();
        assert!(ip.starts_with("10.57.0."), "{net1:#}");
        pods.push((pod, ip, vf.vf_ifname.clone()));
    }

    let ping = |from: &NetNs, to: &str| {
        from.exec("ping", &["-c", "1", "-W", "2", "-I", "net1", to])
            .unwrap()
            .status
            .success()
    };
    assert!(
        ping(&pods[0].0.netns, &pods[1].1),
        "pod-a cannot reach pod-b"
    );
    assert!(
        ping(&pods[1].0.netns, &pods[0].1),
        "pod-b cannot reach pod-a"
    );

    for (pod, _, host_name) in &pods {
        w.del(pod);
        assert!(
            w.host.link(host_name).is_some(),
            "{host_name} did not come back to the host"
        );
    }
    let left: Vec<Value> = std::fs::read_dir(w.path("sriov"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().unwrap().is_file())
                .map(|e| json!(e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "sriov state left: {left:?}");
}
