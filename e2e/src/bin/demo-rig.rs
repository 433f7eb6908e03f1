//! `demo-rig`: what `scripts/demo.sh` has no real one of, stood in for by
//! the same fakes the tests use, for as long as its stdin stays open.
//!
//! - **An SR-IOV NIC** (the hardware boundary): an emulated X710 PF in a
//!   fake sysfs tree, and VFs `ensvf<i>` as veth ends in the node's
//!   namespace (`--node`, made by the demo) whose peers `rep<i>` sit in an
//!   "eswitch" namespace of their own, as a switchdev NIC's representors
//!   do. Nothing connects the representors: the demo's flow table does.
//! - **A BPF filesystem** for the eBPF datapath's pins, private to the demo.
//! - **The kubelet**: the device manager the device plugin registers with
//!   (`<dir>/device-plugins/kubelet.sock`, the real device-plugin gRPC API)
//!   and the PodResources API plexus asks (`<dir>/pod-resources.sock`).
//!
//! It prints one JSON line describing all of that, then answers one JSON
//! line per command on stdin:
//!
//! - `wait RESOURCE N`: until the device plugin lists at least N devices
//!   of RESOURCE (10 s at most); answers `{"devices": [...]}`.
//! - `allocate NAMESPACE POD RESOURCE`: what the kubelet does when it
//!   admits a pod asking for one device: GetPreferredAllocation among the
//!   free ones, Allocate, and PodResources reporting it; answers
//!   `{"device": ID, "envs": {...}}`.
//!
//! At EOF (the demo exited, however it exited) everything goes: the
//! namespace with the representors, the VFs with it, the sysfs tree, the
//! BPF filesystem, the sockets.

use std::{
    collections::BTreeSet,
    io::{BufRead, Write},
    path::PathBuf,
    time::Duration,
};

use plexus_testkit::{BpfFs, FakeDeviceManager, FakeKubelet, NetNs};
use serde_json::{Value, json};

struct Args {
    node: String,
    dir: PathBuf,
    vfs: u32,
}

fn args() -> Result<Args, String> {
    let mut node = None;
    let mut dir = None;
    let mut vfs = 2;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--node" => node = Some(value()?),
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--vfs" => vfs = value()?.parse().map_err(|e| format!("--vfs: {e}"))?,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(Args {
        node: node.ok_or("--node NETNS is required")?,
        dir: dir.ok_or("--dir DIR is required")?,
        vfs,
    })
}

fn main() {
    let args = args().unwrap_or_else(|e| {
        eprintln!("demo-rig: {e}\nusage: demo-rig --node NETNS --dir DIR [--vfs N]");
        std::process::exit(2);
    });
    let node = NetNs::attach(&args.node).unwrap_or_else(|e| {
        eprintln!("demo-rig: {e}");
        std::process::exit(1);
    });
    let eswitch = NetNs::with_prefix("demo-eswitch").expect("eswitch netns");
    let (sysfs, _) = plexus_e2e::sriov::emulated_pf();
    let vfs: Vec<_> = (0..args.vfs)
        .map(|i| {
            plexus_testkit::EmulatedVf::create(
                &node,
                &eswitch,
                &sysfs,
                &plexus_testkit::EmulatedVfSpec {
                    vf_index: i,
                    vf_ifname: format!("ensvf{i}"),
                    peer_ifname: format!("rep{i}"),
                    ..plexus_testkit::EmulatedVfSpec::default()
                },
            )
            .expect("emulated VF")
        })
        .collect();
    let bpffs = BpfFs::new().expect("mount a bpffs (root only)");
    let dp_dir = args.dir.join("device-plugins");
    std::fs::create_dir_all(&dp_dir).expect("device-plugins dir");
    let dm = FakeDeviceManager::start(&dp_dir);
    let pod_resources = args.dir.join("pod-resources.sock");
    let kubelet = FakeKubelet::start(&pod_resources);

    let mut out = std::io::stdout().lock();
    let mut say = |v: Value| {
        writeln!(out, "{v}").expect("stdout");
        out.flush().expect("stdout");
    };
    say(json!({
        "sysfs": sysfs.root(),
        "pf": "ens1f0",
        "eswitch": eswitch.name(),
        "bpffs": bpffs.root(),
        "devicePluginDir": dp_dir,
        "podResources": kubelet.socket(),
        "vfs": vfs.iter().map(|v| json!({
            "pci": v.vf_bdf, "netdev": v.vf_ifname, "representor": v.peer_ifname,
        })).collect::<Vec<_>>(),
    }));

    let mut allocated = BTreeSet::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["wait", resource, n] => {
                let n: usize = n.parse().unwrap_or(1);
                let list = dm.wait_list(resource, Duration::from_secs(10), |l| l.len() >= n);
                json!({"devices": list.iter().map(|d| d.0.clone()).collect::<Vec<_>>()})
            }
            ["allocate", namespace, pod, resource] => {
                let listed = dm.wait_list(resource, Duration::from_secs(10), |l| !l.is_empty());
                let free: Vec<&str> = listed
                    .iter()
                    .map(|d| d.0.as_str())
                    .filter(|d| !allocated.contains(*d))
                    .collect();
                match dm.preferred(resource, &free, &[], 1) {
                    Ok(mut chosen) if !chosen.is_empty() => {
                        let device = chosen.remove(0);
                        match dm.allocate(resource, &[&device]) {
                            Ok(resp) => {
                                kubelet.add_pod(namespace, pod, &[("app", resource, &[&device])]);
                                allocated.insert(device.clone());
                                json!({"device": device, "envs": resp.envs})
                            }
                            Err(e) => json!({"error": format!("Allocate: {e}")}),
                        }
                    }
                    Ok(_) => json!({"error": format!("no free {resource}")}),
                    Err(e) => json!({"error": format!("GetPreferredAllocation: {e}")}),
                }
            }
            _ => json!({"error": format!("unknown command {line:?}")}),
        };
        say(answer);
    }
    // The VFs go before the namespace of their peers does: its teardown is
    // asynchronous, and the demo checks the node right after.
    for vf in &vfs {
        let _ = node.exec("ip", &["link", "del", &vf.vf_ifname]);
    }
}
