//! Devices for NADs with `k8s.v1.cni.cncf.io/resourceName`: found through a
//! real PodResources gRPC server on a unix socket (the kubelet stand-in) or
//! the kubelet's checkpoint file, injected into the delegates, and their
//! device-info files copied, reported in network-status and removed on DEL.
//!
//! The delegates are real macvlan attachments (the VFs themselves are
//! issue 6's business): what a user checks here is which device each
//! interface got, in network-status and in the config the delegate was
//! given.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use plexus_e2e::meta::{MASTER, Pod, Source, World, cni_error, describe, pod_links};
use plexus_testkit::FakeKubelet;
use serde_json::{Value, json};

const RESOURCE: &str = "example.com/vf_pool";
const VF1: &str = "0000:03:02.1";
const VF2: &str = "0000:03:02.3";

/// Two NADs of one resource (macvlan, so they really attach) and a
/// device-info file for each device, as a device plugin writes them.
fn world(source: Source) -> World {
    let w = World::new(source);
    for (name, subnet) in [("vf-a", "10.77.5.0/24"), ("vf-b", "10.77.6.0/24")] {
        w.add_nad_annotated(
            "default",
            name,
            &json!({"cniVersion": "1.0.0", "type": "macvlan", "master": MASTER,
                "mode": "bridge", "ipam": w.ipam(subnet),
                "capabilities": {"deviceID": true, "CNIDeviceInfoFile": true}}),
            &[("k8s.v1.cni.cncf.io/resourceName", RESOURCE)],
        );
    }
    let dp = w.path("devinfo/dp");
    fs::create_dir_all(&dp).unwrap();
    for id in [VF1, VF2] {
        fs::write(
            dp.join(format!("example.com-vf_pool-{id}-device.json")),
            json!({"type": "pci", "version": "1.1.0",
                "pci": {"pci-address": id, "pf-pci-address": "0000:03:00.0"}})
            .to_string(),
        )
        .unwrap();
    }
    w
}

fn socket(w: &World) -> PathBuf {
    w.path("kubelet/pod-resources.sock")
}

fn cni_info_files(w: &World) -> Vec<PathBuf> {
    let Ok(d) = fs::read_dir(w.path("devinfo/cni")) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = d.filter_map(Result::ok).map(|e| e.path()).collect();
    v.sort();
    v
}

/// The PCI address each interface got, from network-status `device-info`.
fn devices_in_status(w: &World, pod: &Pod) -> Vec<(String, String)> {
    let status = w.status(pod).expect("network-status written");
    status
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["device-info"].is_null())
        .map(|e| {
            (
                e["interface"].as_str().unwrap().to_owned(),
                e["device-info"]["pci"]["pci-address"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

/// The deviceID each attachment's delegate config carried, from the cache
/// (the exact configs the delegates were given).
fn injected(w: &World) -> Vec<(String, Value, Value)> {
    let cache = &w.cache_files()[0];
    let c: Value = serde_json::from_slice(&fs::read(cache).unwrap()).unwrap();
    c["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let p = &a["config"]["plugins"][0];
            assert_eq!(p["pciBusID"], p["deviceID"], "both keys are set");
            (
                a["ifname"].as_str().unwrap().to_owned(),
                p["deviceID"].clone(),
                a["capabilityArgs"]["deviceID"].clone(),
            )
        })
        .collect()
}

fn expect_two_devices(w: &World, pod: &Pod, first: &str, second: &str) {
    assert_eq!(
        devices_in_status(w, pod),
        [
            ("net1".into(), first.into()),
            ("net2".into(), second.into())
        ]
    );
    assert_eq!(
        injected(w),
        [
            ("eth0".into(), Value::Null, Value::Null),
            ("net1".into(), json!(first), json!(first)),
            ("net2".into(), json!(second), json!(second)),
        ]
    );
    let links = pod_links(pod);
    assert!(
        links.contains(&"net1".into()) && links.contains(&"net2".into()),
        "{links:?}"
    );
    // One device-info file per device attachment, read-only, a copy of the
    // device plugin's.
    let files = cni_info_files(w);
    assert_eq!(files.len(), 2, "{files:?}");
    for (ifname, id) in [("net1", first), ("net2", second)] {
        let nad = if ifname == "net1" { "vf-a" } else { "vf-b" };
        let f = w.path(&format!(
            "devinfo/cni/default-{nad}-{}_{ifname}",
            pod.container_id
        ));
        let mode = fs::metadata(&f)
            .expect("device-info copied")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444, "{}", f.display());
        let v: Value = serde_json::from_slice(&fs::read(&f).unwrap()).unwrap();
        assert_eq!(v["pci"]["pci-address"], id);
    }
}

fn expect_clean_after_del(w: &World, pod: &Pod) {
    w.del(pod);
    assert_eq!(
        cni_info_files(w),
        Vec::<PathBuf>::new(),
        "DEL removes device-info"
    );
    assert!(w.cache_files().is_empty());
    assert_eq!(pod_links(pod), Vec::<String>::new());
    // The device plugin's files are its own.
    assert!(
        w.path(&format!("devinfo/dp/example.com-vf_pool-{VF1}-device.json"))
            .exists()
    );
}

#[test]
fn pod_resources_gives_each_nad_one_device_in_order() {
    for source in [Source::Standalone, Source::Api] {
        let w = world(source);
        let kubelet = FakeKubelet::start(&socket(&w));
        let pod = w.pod("vfs", Some("vf-a,vf-b"));
        // The kubelet lists IDs in no stable order: plexus sorts within the
        // container. Another container's devices of another resource, and
        // another pod with devices of the same resource, must not interfere.
        kubelet.add_pod("default", "other", &[("app", RESOURCE, &["0000:03:02.0"])]);
        kubelet.add_pod(
            "default",
            "vfs",
            &[
                ("app", RESOURCE, &[VF2, VF1]),
                ("sidecar", "example.com/gpu", &["GPU-0"]),
            ],
        );
        w.add(&pod);
        assert_eq!(kubelet.list_calls(), 1, "{source:?}: one List per ADD");
        expect_two_devices(&w, &pod, VF1, VF2);
        expect_clean_after_del(&w, &pod);
        assert_eq!(kubelet.list_calls(), 1, "{source:?}: DEL needs no kubelet");

        // A pod without device networks never asks the kubelet.
        let plain = w.pod("plain", Some("macvlan-dyn"));
        w.add(&plain);
        w.del(&plain);
        assert_eq!(kubelet.list_calls(), 1, "{source:?}");
    }
}

/// A checkpoint as kubelet 1.20+ writes it: per-NUMA IDs, a device on two
/// NUMA nodes listed under both, a `BootID`, an unverifiable checksum.
fn write_checkpoint(w: &World, uid: &str) {
    fs::write(
        w.path("kubelet/kubelet_internal_checkpoint"),
        json!({"Data": {"PodDeviceEntries": [
            {"PodUID": "someone-else", "ContainerName": "app", "ResourceName": RESOURCE,
             "DeviceIDs": {"0": ["0000:03:02.0"]}, "AllocResp": "CgA="},
            {"PodUID": uid, "ContainerName": "app", "ResourceName": RESOURCE,
             "DeviceIDs": {"1": [VF2, VF1], "0": [VF1]}, "AllocResp": "CgA="}
        ], "RegisteredDevices": {RESOURCE: ["0000:03:02.0", VF1, VF2]}},
        "Checksum": 3_511_045_187u64, "BootID": "b7a3"})
        .to_string(),
    )
    .unwrap();
}

#[test]
fn checkpoint_is_used_when_the_socket_is_absent_or_dead() {
    for source in [Source::Standalone, Source::Api] {
        let w = world(source);
        let pod = w.pod("vfs", Some("vf-a,vf-b"));
        write_checkpoint(&w, &pod.uid);
        w.add(&pod);
        expect_two_devices(&w, &pod, VF1, VF2);
        expect_clean_after_del(&w, &pod);

        // A socket left behind by a kubelet that is gone (connection
        // refused): the checkpoint still answers. The same NAD twice takes
        // two devices.
        drop(std::os::unix::net::UnixListener::bind(socket(&w)).unwrap());
        assert!(socket(&w).exists());
        let twice = w.pod("twice", Some("vf-a,vf-a"));
        write_checkpoint(&w, &twice.uid);
        w.add(&twice);
        assert_eq!(
            devices_in_status(&w, &twice),
            [("net1".into(), VF1.into()), ("net2".into(), VF2.into())],
            "{source:?}"
        );
        w.del(&twice);
        assert_eq!(cni_info_files(&w), Vec::<PathBuf>::new());
    }
}

#[test]
fn no_device_source_is_a_clear_error_naming_the_resource() {
    let w = world(Source::Api);
    let pod = w.pod("vfs", Some("macvlan-dyn,vf-a"));
    let out = w.cni("ADD", &pod);
    assert!(!out.status.success(), "{}", describe(&out));
    let e = cni_error(&out);
    assert_eq!(e["code"], 11, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("default/vf-a") && msg.contains(RESOURCE),
        "names the network and the resource: {msg}"
    );
    assert!(msg.contains("pod-resources.sock does not exist"), "{msg}");
    assert!(
        msg.contains("kubelet_internal_checkpoint does not exist"),
        "{msg}"
    );
    // Decided before the first delegate: nothing ran, nothing is left.
    assert_eq!(pod_links(&pod), Vec::<String>::new());
    assert!(w.cache_files().is_empty());
    assert!(w.leases().is_empty());
    assert!(cni_info_files(&w).is_empty());
}

#[test]
fn a_delegate_that_fails_takes_its_device_info_with_it() {
    let w = world(Source::Standalone);
    let kubelet = FakeKubelet::start(&socket(&w));
    kubelet.add_pod("default", "vfs", &[("app", RESOURCE, &[VF1])]);
    // vf-a gets the device, then "broken" fails: the rollback removes the
    // device-info file with vf-a's attachment.
    let pod = w.pod("vfs", Some("vf-a,broken"));
    let out = w.cni("ADD", &pod);
    assert!(!out.status.success(), "{}", describe(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("device assigned"),
        "vf-a had its device: {log}"
    );
    assert_eq!(cni_info_files(&w), Vec::<PathBuf>::new());
    assert!(w.cache_files().is_empty());
    assert_eq!(pod_links(&pod), Vec::<String>::new());
}
