//! `make bench`: the SR-IOV device plugin.
//!
//! 1. Discovery of a fake sysfs tree with 8 PFs × 128 VFs (1024 VFs with
//!    netdevs): `Sysfs::scan` + pool building, against a baseline measured
//!    in the same run: the same reads with upstream's VF-index method
//!    (list the PF's `virtfn*` and read links until the VF is found: O(N)
//!    per VF). Target ≤ 30 ms.
//! 2. Allocate and GetPreferredAllocation round trips over the unix socket
//!    to the release daemon serving those 1024 VFs, against
//!    GetDevicePluginOptions (an empty call: the gRPC floor) on the same
//!    connection. Target p99 ≤ 1 ms.
//! 3. The daemon's peak RSS (`VmHWM`) after all of it. Target ≤ 20 MiB.
//!
//! The tree is fake (no SR-IOV NIC here); the reads, sockets and gRPC are
//! real. Needs release binaries: `make bench` builds them first.

#![expect(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use plexus_e2e::bench::{median, ms};
use plexus_sriov_device_plugin::{config, pools};
use plexus_sysfs::Sysfs;
use plexus_testkit::sysfs::{PfSpec, VfSpec};
use plexus_testkit::{FakeDeviceManager, FakeSysfs, NetNs};
use serde_json::json;

const PFS: u32 = 8;
const VFS: u32 = 128;
const DISCOVERY_RUNS: usize = 31;
const RPCS: usize = 2000;

fn tree() -> FakeSysfs {
    let fake = FakeSysfs::new();
    for p in 0..PFS {
        let bdf = format!("0000:{:02x}:00.0", 0x10 + p * 0x10);
        fake.pf(PfSpec {
            bdf: bdf.clone(),
            ifname: Some(format!("ens{p}f0")),
            total_vfs: VFS,
            numa_node: i32::try_from(p % 2).unwrap(),
            ..PfSpec::default()
        });
        for v in 0..VFS {
            fake.vf(
                &bdf,
                v,
                VfSpec {
                    ifname: Some(format!("ens{p}f0v{v}")),
                    ..VfSpec::default()
                },
            );
        }
    }
    fake
}

/// Upstream's way, for the baseline: every device's modalias and driver,
/// and for a VF its index by listing the PF's `virtfn*` links and reading
/// them until one points at it.
fn upstream_style(root: &Path) -> usize {
    let devs = root.join("bus/pci/devices");
    let mut found = 0;
    for e in fs::read_dir(&devs).unwrap().flatten() {
        let dir = e.path();
        let _ = fs::read_to_string(dir.join("modalias"));
        let _ = fs::read_link(dir.join("driver"));
        let _ = fs::read_dir(dir.join("net")).map(Iterator::count);
        if let Ok(pf) = fs::read_link(dir.join("physfn")) {
            let name = e.file_name();
            let pf_dir = dir.join(pf);
            let mut links: Vec<_> = fs::read_dir(&pf_dir)
                .unwrap()
                .flatten()
                .filter(|l| l.file_name().to_string_lossy().starts_with("virtfn"))
                .map(|l| l.path())
                .collect();
            links.sort();
            if links.iter().any(|l| {
                fs::read_link(l)
                    .ok()
                    .and_then(|t| t.file_name().map(ToOwned::to_owned))
                    == Some(name.clone())
            }) {
                found += 1;
            }
        }
    }
    found
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn main() {
    plexus_e2e::bench::node_env();
    let fake = tree();
    let cfg_text = json!({"resourceList": [
        {"resourceName": "vfs", "selectors": {"vendors": ["8086"], "drivers": ["iavf"]}}
    ]})
    .to_string();
    let cfg = config::parse(&cfg_text, "intel.com");
    let sys = Sysfs::new(fake.root());

    // 1. Discovery.
    let mut ours = Vec::new();
    let mut base = Vec::new();
    let mut pooled = 0;
    for _ in 0..DISCOVERY_RUNS {
        let t = Instant::now();
        assert_eq!(upstream_style(fake.root()), (PFS * VFS) as usize);
        base.push(t.elapsed());
        let t = Instant::now();
        let scan = sys.scan().unwrap();
        let (p, _) = pools::build(&cfg, &scan, &HashSet::new());
        ours.push(t.elapsed());
        pooled = p[0].devices.len();
    }
    assert_eq!(pooled, (PFS * VFS) as usize);
    let (o, b) = (median(&mut ours), median(&mut base));
    println!("\nDiscovery of {PFS} PFs x {VFS} VFs, fake sysfs ({DISCOVERY_RUNS} runs each)\n");
    println!("| path | median ms |");
    println!("|---|---|");
    println!(
        "| plexus: scan + pools (O(1) VF index, every attribute) | {:.2} |",
        ms(o)
    );
    println!(
        "| baseline: modalias/driver/net + upstream's O(N) VF index | {:.2} |",
        ms(b)
    );
    println!(
        "| ratio plexus / baseline | {:.2} |",
        o.as_secs_f64() / b.as_secs_f64()
    );
    println!("| target | ≤ 30 ms |");

    // 2. Round trips to the daemon.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("config.json"), &cfg_text).unwrap();
    let kubelet = FakeDeviceManager::start(&d.join("device-plugins"));
    let ns = NetNs::with_prefix("bench-dp").unwrap();
    let mut child = plexus_e2e::device_plugin(&ns, d, fake.root())
        .env("PLEXUS_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let resource = "intel.com/vfs";
    kubelet.wait_list(resource, Duration::from_secs(30), |l| {
        l.len() == (PFS * VFS) as usize
    });
    let ids: Vec<String> = kubelet
        .lists(resource)
        .last()
        .unwrap()
        .iter()
        .map(|d| d.0.clone())
        .collect();
    let avail: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (mut floor, mut alloc, mut pref) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..RPCS {
        let t = Instant::now();
        kubelet.options(resource).unwrap();
        floor.push(t.elapsed());
        let t = Instant::now();
        let r = kubelet
            .allocate(resource, &[avail[i % avail.len()]])
            .unwrap();
        alloc.push(t.elapsed());
        assert!(r.envs.contains_key("PCIDEVICE_INTEL_COM_VFS"));
        let t = Instant::now();
        let p = kubelet.preferred(resource, &avail, &[], 2).unwrap();
        pref.push(t.elapsed());
        assert_eq!(p.len(), 2);
    }
    println!(
        "\nRound trips over the unix socket, {} VFs served ({RPCS} calls each)\n",
        PFS * VFS
    );
    println!("| call | median ms | p99 ms | ratio to floor (median) |");
    println!("|---|---|---|---|");
    let fm = median(&mut floor);
    for (name, v) in [
        ("GetDevicePluginOptions (floor)", &mut floor),
        ("Allocate, 1 VF (env, specs, device-info file)", &mut alloc),
        ("GetPreferredAllocation, 2 of 1024", &mut pref),
    ] {
        let m = median(v);
        println!(
            "| {name} | {:.3} | {:.3} | {:.2} |",
            ms(m),
            ms(percentile(v, 0.99)),
            m.as_secs_f64() / fm.as_secs_f64()
        );
    }
    println!("| target | | ≤ 1 ms | |");

    // 3. Peak RSS.
    let status = fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .to_owned();
    println!(
        "\nPeak RSS of sriov-device-plugin serving {} VFs: {hwm} (target ≤ 20 MiB)",
        PFS * VFS
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
