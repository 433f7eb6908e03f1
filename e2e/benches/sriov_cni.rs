//! `make bench`: the `sriov` plugin's ADD+DEL of an emulated VF against
//! the reference `macvlan` plugin's ADD+DEL, both with the same
//! `host-local` IPAM, both exec'd from one long-lived bash loop in the
//! same throwaway host netns, in alternating rounds. Prints medians and
//! the ratio.
//!
//! The sriov path does more real work than macvlan (sysfs lookups, a
//! per-VF lock, the cache written before and after, PF-side attributes
//! set and restored, the netdev moved through a temporary namespace both
//! ways); its PF is the emulated one (a state file in the fake sysfs),
//! where a real NIC's driver would take its own time for `ndo_set_vf_*`.

#![expect(clippy::print_stdout, reason = "a benchmark prints its table")]

use plexus_e2e::{
    bench::{bash_loop, median, table},
    bin, sriov,
};
use plexus_testkit::NetNs;
use serde_json::json;

const ROUNDS: usize = 6;
const PER_ROUND: usize = 15;

fn main() {
    plexus_e2e::bench::node_env();
    let host = NetNs::with_prefix("bench-sr").expect("netns (run as root)");
    let wire = sriov::wire("bench-srw");
    let pod = NetNs::with_prefix("bench-srp").expect("netns");
    let tmp = tempfile::tempdir().unwrap();
    let (sysfs, _) = sriov::emulated_pf();
    let vf = sriov::vfs(&host, &wire, &sysfs, 1).remove(0);
    host.sh(
        "ip",
        &["link", "add", "mv0", "type", "veth", "peer", "name", "mv0p"],
    );
    host.sh("ip", &["link", "set", "mv0", "up"]);
    let ipam = |subnet: &str| {
        json!({"type": "host-local", "dataDir": tmp.path().join("ipam"),
               "ranges": [[{"subnet": subnet}]]})
    };
    let sriov = tmp.path().join("sriov.conf");
    std::fs::write(
        &sriov,
        json!({"cniVersion": "1.0.0", "name": "sr", "type": "sriov", "deviceID": vf.vf_bdf,
            "mac": "02:11:22:33:44:55", "vlan": 10, "spoofchk": "off",
            "dataDir": tmp.path().join("state"), "sysfsRoot": sysfs.root(),
            "ipam": ipam("10.241.0.0/24")})
        .to_string(),
    )
    .unwrap();
    let macvlan = tmp.path().join("macvlan.conf");
    std::fs::write(
        &macvlan,
        json!({"cniVersion": "1.0.0", "name": "mv", "type": "macvlan", "master": "mv0",
            "mode": "bridge", "ipam": ipam("10.242.0.0/24")})
        .to_string(),
    )
    .unwrap();
    let setup = format!(
        "export CNI_CONTAINERID=bench CNI_NETNS={} CNI_IFNAME=net1 CNI_PATH=/usr/lib/cni CNI_ARGS=",
        pod.path().display()
    );
    let body = |plugin: &str, conf: &std::path::Path| {
        format!(
            "CNI_COMMAND=ADD {plugin} < {c} > /dev/null; CNI_COMMAND=DEL {plugin} < {c}",
            c = conf.display()
        )
    };
    let sriov_body = body(&bin("sriov").display().to_string(), &sriov);
    let macvlan_body = body("/usr/lib/cni/macvlan", &macvlan);

    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.extend(bash_loop(&host, &setup, &sriov_body, PER_ROUND));
        base.extend(bash_loop(&host, &setup, &macvlan_body, PER_ROUND));
    }
    // Each DEL put the VF back: it is on the host, as it was.
    assert!(
        host.link(&vf.vf_ifname).is_some(),
        "the VF did not come back"
    );

    let ratio = median(&mut ours).as_secs_f64() / median(&mut base).as_secs_f64();
    print!(
        "{}",
        table(
            "sriov CNI: ADD+DEL of one VF (host-local IPAM)",
            &mut [
                ("sriov (emulated VF: veth + fake sysfs)", ours),
                ("reference macvlan (baseline)", base),
            ],
        )
    );
    println!("\nratio sriov / macvlan: {ratio:.2}");
}
