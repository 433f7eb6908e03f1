//! The `dpu-offload` binary, black box, in throwaway network namespaces.
//!
//! This kernel has no tc flower: `apply --backend flower` must fail
//! cleanly, name the missing classifier, and leave the ports exactly as
//! they were. On a kernel that has flower the same test installs for real
//! and checks what `dump-flows` reports (veth has no hardware, so every
//! flow must say `tc-sw`, never `hw`).

use std::{path::Path, process::Output};

use plexus_e2e::bin;
use plexus_testkit::{FakeSysfs, NetNs, PfSpec, RepresentorSpec, sysfs::DEFAULT_PF_BDF};
use serde_json::Value;

fn run(ns: &NetNs, args: &[&str]) -> Output {
    ns.command(bin("dpu-offload"))
        .unwrap()
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Two "representors" (a veth pair) and a third port.
fn ports() -> NetNs {
    let ns = NetNs::new().unwrap();
    ns.sh(
        "ip",
        &[
            "link", "add", "rep0", "type", "veth", "peer", "name", "rep1",
        ],
    );
    ns.sh(
        "ip",
        &["link", "add", "up0", "type", "veth", "peer", "name", "up0p"],
    );
    for l in ["rep0", "rep1", "up0", "up0p"] {
        ns.sh("ip", &["link", "set", l, "up"]);
    }
    ns
}

fn tc_state(ns: &NetNs) -> String {
    let mut s = ns.sh("tc", &["qdisc", "show"]);
    for dev in ["rep0", "rep1", "up0"] {
        for hook in ["ingress", "egress"] {
            s.push_str(
                &ns.exec("tc", &["filter", "show", "dev", dev, hook])
                    .map(|o| text(&o.stdout))
                    .unwrap(),
            );
        }
    }
    s
}

fn write_flows(dir: &Path, flows: &str) -> String {
    let p = dir.join("flows.txt");
    std::fs::write(&p, flows).unwrap();
    p.to_string_lossy().into_owned()
}

const FLOWS: &str = "\
# rep0 <-> up0, ARP and IPv4 only; SSH to the pod is dropped
priority=100,in_port=rep0,arp,actions=output:up0
priority=100,in_port=rep0,ip,actions=output:up0
priority=200,in_port=up0,tcp,tp_dst=22,actions=drop
priority=100,in_port=up0,ip,nw_dst=10.0.0.0/24,actions=mod_dl_dst:02:00:00:00:00:01,output:rep0
";

fn kernel_has_flower(ns: &NetNs) -> bool {
    ns.sh("tc", &["qdisc", "add", "dev", "up0p", "clsact"]);
    let out = ns
        .exec(
            "tc",
            &[
                "filter", "add", "dev", "up0p", "ingress", "protocol", "all", "flower", "action",
                "drop",
            ],
        )
        .unwrap();
    ns.sh("tc", &["qdisc", "del", "dev", "up0p", "clsact"]);
    out.status.success()
}

#[test]
fn apply_with_flower_tells_the_truth_or_fails_cleanly() {
    let ns = ports();
    let dir = tempfile::tempdir().unwrap();
    let flows = write_flows(dir.path(), FLOWS);
    // Someone else's clsact on up0 must survive whatever happens.
    ns.sh("tc", &["qdisc", "add", "dev", "up0", "clsact"]);
    let before = tc_state(&ns);
    if !kernel_has_flower(&ns) {
        let out = run(&ns, &["apply", "--flows", &flows, "--backend", "flower"]);
        let err = text(&out.stderr);
        assert!(
            !out.status.success(),
            "apply succeeded without flower: {}",
            text(&out.stdout)
        );
        assert!(
            err.contains("no tc flower classifier (cls_flower)"),
            "{err}"
        );
        assert!(err.contains("nothing was installed"), "{err}");
        assert!(
            err.contains("classifier not found"),
            "the kernel's own words are kept: {err}"
        );
        assert_eq!(tc_state(&ns), before, "the failed apply changed tc state");
        // auto is flower until the eBPF back end lands: the same answer.
        let out = run(&ns, &["apply", "--flows", &flows]);
        assert!(!out.status.success());
        assert_eq!(tc_state(&ns), before);
        return;
    }
    let out = run(
        &ns,
        &["apply", "--flows", &flows, "--backend", "flower", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let placed = report["flows"].as_array().unwrap();
    assert_eq!(placed.len(), 4);
    for p in placed {
        assert_eq!(p["location"], "tc-sw", "veth has no eSwitch: {p}");
        assert_eq!(p["change"], "added");
    }
    let again: Value =
        serde_json::from_slice(&run(&ns, &["apply", "--flows", &flows, "--json"]).stdout).unwrap();
    assert!(
        again["flows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["change"] == "kept"),
        "{again}"
    );
    assert_eq!(again["removed"], 0);
    let dump: Value = serde_json::from_slice(&run(&ns, &["dump-flows", "--json"]).stdout).unwrap();
    let dumped = dump.as_array().unwrap();
    assert_eq!(dumped.len(), 4);
    assert!(
        dumped
            .iter()
            .all(|f| f["backend"] == "flower" && f["in_hw"] == false)
    );
    let out = run(&ns, &["flush"]);
    assert_eq!(text(&out.stdout), "deleted 4 flows\n");
    assert_eq!(tc_state(&ns), before, "flush left something behind");
}

#[test]
fn ebpf_backend_is_not_there_yet() {
    let ns = ports();
    let dir = tempfile::tempdir().unwrap();
    let flows = write_flows(dir.path(), FLOWS);
    let before = tc_state(&ns);
    let out = run(&ns, &["apply", "--flows", &flows, "--backend", "ebpf"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("eBPF back end is not there yet"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(tc_state(&ns), before);
}

#[test]
fn bad_flows_and_unknown_ports_touch_nothing() {
    let ns = ports();
    let dir = tempfile::tempdir().unwrap();
    let before = tc_state(&ns);
    let flows = write_flows(
        dir.path(),
        "in_port=rep0,actions=output:up0\nin_port=rep0,ip,nw_dst=10.0.0.0/40,actions=drop\n",
    );
    let out = run(&ns, &["apply", "--flows", &flows]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{flows}:2:")),
        "errors name file and line: {err}"
    );
    assert!(err.contains("prefix length 40 is longer than 32"), "{err}");
    let flows = write_flows(
        dir.path(),
        "in_port=rep0,actions=output:up0\nin_port=rep9,actions=output:up0\n",
    );
    let out = run(&ns, &["apply", "--flows", &flows]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("line 2: in_port rep9: no such netdev or representor"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(tc_state(&ns), before);
}

#[test]
fn check_dump_flush_on_an_empty_host() {
    let ns = ports();
    let dir = tempfile::tempdir().unwrap();
    let flows = write_flows(dir.path(), FLOWS);
    let out = run(&ns, &["check", "--flows", &flows]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[2],
        "table=0,priority=200,in_port=up0,tcp,tp_dst=22,actions=drop"
    );
    let out = run(&ns, &["dump-flows", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
    assert_eq!(text(&run(&ns, &["flush"]).stdout), "deleted 0 flows\n");
}

#[test]
fn representors_from_a_fake_sysfs() {
    let ns = NetNs::new().unwrap();
    let fake = FakeSysfs::new();
    fake.pf(PfSpec::connectx5());
    fake.switchdev_representor(
        DEFAULT_PF_BDF,
        RepresentorSpec::vf("enp59s0f0npf0vf0", 0, 0),
    );
    let root = fake.root().to_string_lossy().into_owned();
    let out = run(&ns, &["--sysfs-root", &root, "representors", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ports = v[0]["ports"].as_array().unwrap();
    assert_eq!(ports[0]["netdev"], "enp59s0f0np0");
    assert_eq!(ports[0]["flavour"]["kind"], "uplink");
    assert_eq!(ports[1]["aliases"], serde_json::json!(["pf0vf0"]));
    // The netdevs are not in this netns: offload state is unknown, not off.
    assert_eq!(ports[1]["hw_tc_offload"], Value::Null);
    let out = run(&ns, &["--sysfs-root", &root, "representors"]);
    assert!(
        text(&out.stdout).contains("enp59s0f0npf0vf0 pf0vf0"),
        "{}",
        text(&out.stdout)
    );
}
