//! tc flower in software on a kernel that has it: the `dpu-offload` binary
//! with `--backend flower --policy sw-only` on veth "representors", the
//! same netlink requests it sends to a NIC's eSwitch, minus `in_hw`.
//!
//! This machine's kernel has no cls_flower, so this binary runs only in
//! the kernel matrix (`make kernel-e2e`: Debian's 6.1 and 6.12 in VMs).
//! On a kernel without flower it fails at the first apply, naming the
//! missing classifier.
//!
//! Two "VFs" (namespaces) hang off the representors `rep0` and `rep1` in a
//! switch namespace where nothing forwards but the flows. Someone else's
//! clsact and u32 filter sit on `rep0`; they must be exactly as they were
//! after every step.

use std::net::UdpSocket;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use plexus_e2e::bin;
use plexus_testkit::{BpfFs, NetNs};
use serde_json::Value;

struct Rig {
    sw: NetNs,
    vfs: [NetNs; 2],
    bpf: BpfFs,
    dir: tempfile::TempDir,
}

fn ip(i: usize) -> String {
    format!("10.9.0.{}", i + 1)
}

fn mac(i: usize) -> String {
    format!("02:00:00:00:00:{:02x}", i + 1)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Rig {
    fn new() -> Rig {
        let sw = NetNs::with_prefix("fl-sw").unwrap();
        let vfs = [
            NetNs::with_prefix("fl-vf").unwrap(),
            NetNs::with_prefix("fl-vf").unwrap(),
        ];
        for (i, vf) in vfs.iter().enumerate() {
            sw.veth_to(&format!("rep{i}"), vf, "eth0");
            vf.sh("ip", &["link", "set", "eth0", "address", &mac(i)]);
            vf.sh(
                "ip",
                &["addr", "add", &format!("{}/24", ip(i)), "dev", "eth0"],
            );
        }
        // Static neighbours: every packet a test sends is one a flow sees.
        for (i, vf) in vfs.iter().enumerate() {
            let j = 1 - i;
            vf.sh(
                "ip",
                &[
                    "neigh",
                    "add",
                    &ip(j),
                    "lladdr",
                    &mac(j),
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ],
            );
        }
        // Someone else's: a clsact and a u32 filter that never matches our
        // traffic (TEST-NET-1).
        sw.sh("tc", &["qdisc", "add", "dev", "rep0", "clsact"]);
        sw.sh(
            "tc",
            &[
                "filter",
                "add",
                "dev",
                "rep0",
                "ingress",
                "pref",
                "7",
                "protocol",
                "ip",
                "u32",
                "match",
                "ip",
                "dst",
                "192.0.2.1/32",
                "classid",
                "1:1",
            ],
        );
        Rig {
            sw,
            vfs,
            bpf: BpfFs::new().unwrap(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        self.sw
            .command(bin("dpu-offload"))
            .unwrap()
            .args(["--bpf-dir", &self.bpf.pin_dir().to_string_lossy()])
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "dpu-offload {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn flows_file(&self, flows: &str) -> String {
        let p = self.dir.path().join("flows.txt");
        std::fs::write(&p, flows).unwrap();
        p.to_string_lossy().into_owned()
    }

    /// Everything tc shows of the representors, handles included.
    fn tc_state(&self) -> String {
        let mut s = self.sw.sh("tc", &["qdisc", "show"]);
        for dev in ["rep0", "rep1"] {
            for hook in ["ingress", "egress"] {
                s.push_str(&self.sw.sh("tc", &["filter", "show", "dev", dev, hook]));
            }
        }
        s
    }

    fn ping(&self, from: usize, count: u32) -> bool {
        self.vfs[from]
            .exec(
                "ping",
                &[
                    "-c",
                    &count.to_string(),
                    "-i",
                    "0.1",
                    "-W",
                    "1",
                    "-q",
                    &ip(1 - from),
                ],
            )
            .unwrap()
            .status
            .success()
    }

    /// Sends `n` UDP datagrams from VF 0 to VF 1's `port` and returns how
    /// many VF 1 received.
    fn udp(&self, port: u16, n: usize) -> usize {
        let to = format!("{}:{port}", ip(1));
        let rx = self.vfs[1].run(|| UdpSocket::bind(&to).unwrap());
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let from = ip(0);
        self.vfs[0].run(|| {
            let tx = UdpSocket::bind(format!("{from}:0")).unwrap();
            for i in 0..n {
                tx.send_to(format!("datagram {i}").as_bytes(), &to).unwrap();
            }
        });
        let mut got = 0;
        let mut buf = [0u8; 64];
        while rx.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    }

    fn packets(&self, flow: &str) -> u64 {
        let dump = self.json(&["dump-flows", "--json"]);
        dump["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["flow"] == flow)
            .unwrap_or_else(|| panic!("{flow} not dumped: {dump:#}"))["packets"]
            .as_u64()
            .unwrap()
    }
}

const FLOWS: &str = "\
# VF 0 <-> VF 1 through the representors; UDP to port 9 from VF 0 is dropped
cookie=0x1,priority=100,in_port=rep0,arp,actions=output:rep1
cookie=0x1,priority=100,in_port=rep1,arp,actions=output:rep0
cookie=0x2,priority=100,in_port=rep0,ip,actions=output:rep1
cookie=0x2,priority=100,in_port=rep1,ip,actions=output:rep0
cookie=0x3,priority=200,in_port=rep0,udp,tp_dst=9,actions=drop
";

// As `dump-flows` prints them (canonical order).
const REP0_IP: &str = "table=0,priority=100,cookie=0x2,in_port=rep0,ip,actions=output:rep1";
const REP1_IP: &str = "table=0,priority=100,cookie=0x2,in_port=rep1,ip,actions=output:rep0";
const DROP9: &str = "table=0,priority=200,cookie=0x3,in_port=rep0,udp,tp_dst=9,actions=drop";

#[test]
fn flower_in_software_forwards_drops_counts_and_flushes_to_nothing() {
    eprintln!("on Linux {}", plexus_testkit::kernel_release());
    let rig = Rig::new();
    let before = rig.tc_state();
    assert!(!rig.ping(0, 1), "nothing forwards before the flows");
    let flows = rig.flows_file(FLOWS);
    let apply = [
        "apply",
        "--flows",
        &flows,
        "--backend",
        "flower",
        "--policy",
        "sw-only",
        "--json",
    ];

    let report = rig.json(&apply);
    let placed = report["flows"].as_array().unwrap();
    assert_eq!(placed.len(), 5, "{report:#}");
    for p in placed {
        assert_eq!(p["backend"], "flower", "{p}");
        assert_eq!(p["location"], "tc-sw", "sw-only on veth: {p}");
        assert_eq!(p["change"], "added", "{p}");
    }

    // Traffic: pings both ways, UDP through, the dropped port stopped.
    assert!(rig.ping(0, 3), "ping through the flows");
    assert_eq!(rig.udp(5000, 10), 10, "UDP to an open port");
    assert_eq!(rig.udp(9, 10), 0, "UDP to port 9 is dropped");
    // The counters are the kernel's own (flower's actions count in
    // software on veth): 3 echo requests and 10 datagrams, 3 replies.
    assert_eq!(rig.packets(REP0_IP), 13);
    assert_eq!(rig.packets(REP1_IP), 3);
    assert_eq!(rig.packets(DROP9), 10);

    // Re-apply: everything kept, the filters untouched (same handles).
    let installed = rig.tc_state();
    let again = rig.json(&apply);
    assert!(
        again["flows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["change"] == "kept"),
        "{again:#}"
    );
    assert_eq!(again["removed"], 0, "{again:#}");
    assert_eq!(rig.tc_state(), installed, "a re-apply touched tc");

    // del by cookie: the drop goes, port 9 is reachable.
    assert_eq!(rig.ok(&["del", "--cookie", "0x3"]), "deleted 1 flows\n");
    assert_eq!(rig.udp(9, 5), 5, "the drop was deleted");
    // del by port: nothing comes back from VF 1.
    assert_eq!(rig.ok(&["del", "--in-port", "rep1"]), "deleted 2 flows\n");
    assert!(!rig.ping(0, 1), "replies need rep1's flows");
    let left = rig.json(&["dump-flows", "--json"]);
    assert_eq!(left["flows"].as_array().unwrap().len(), 2, "{left:#}");

    // flush: tc exactly as before, someone else's filter included.
    assert_eq!(rig.ok(&["flush"]), "deleted 2 flows\n");
    assert_eq!(
        rig.tc_state(),
        before,
        "flush left something or took too much"
    );
    assert!(!Path::new(&rig.bpf.pin_dir()).exists());
}

/// The filters tc lists, one line per filter, with their preference and
/// handle (`tc filter show` prints each filter's header line with both).
fn filter_lines(rig: &Rig, dev: &str) -> Vec<String> {
    rig.sw
        .sh("tc", &["filter", "show", "dev", dev, "ingress"])
        .lines()
        .filter(|l| l.starts_with("filter") && l.contains(" handle "))
        .map(str::to_owned)
        .collect()
}

fn apply_report(rig: &Rig, flows: &str) -> Value {
    let file = rig.flows_file(flows);
    rig.json(&[
        "apply",
        "--flows",
        &file,
        "--backend",
        "flower",
        "--policy",
        "sw-only",
        "--json",
    ])
}

fn changes(report: &Value, change: &str) -> usize {
    report["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["change"] == change)
        .count()
}

#[test]
fn changing_a_flows_actions_under_traffic_replaces_it_without_a_lost_ping() {
    eprintln!("on Linux {}", plexus_testkit::kernel_release());
    let rig = Rig::new();
    apply_report(&rig, FLOWS);
    let before = filter_lines(&rig, "rep0");
    // Pings 20 ms apart while the flow carrying them changes twice (under
    // TCG an apply takes seconds: enough pings to outlast both).
    let mut pinger = rig.vfs[0]
        .command("ping")
        .unwrap()
        .args(["-c", "800", "-i", "0.02", "-W", "1", "-q", &ip(1)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let rewritten = FLOWS.replace(
        "in_port=rep0,ip,actions=output:rep1",
        "in_port=rep0,ip,actions=mod_dl_src:02:00:00:00:00:aa,output:rep1",
    );
    let r = apply_report(&rig, &rewritten);
    assert_eq!(changes(&r, "replaced"), 1, "{r:#}");
    assert_eq!(changes(&r, "kept"), 4, "{r:#}");
    assert_eq!(r["removed"], 0, "{r:#}");
    // The new action counts the pings now.
    let now = "table=0,priority=100,cookie=0x2,in_port=rep0,ip,actions=mod_dl_src:02:00:00:00:00:aa,output:rep1";
    assert!(rig.ping(0, 2));
    assert!(rig.packets(now) >= 2, "the replaced filter counts nothing");
    let back = apply_report(&rig, FLOWS);
    assert_eq!(changes(&back, "replaced"), 1, "{back:#}");
    assert!(
        pinger.try_wait().unwrap().is_none(),
        "the pings ended before the second replace: nothing was measured"
    );
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("800 packets transmitted, 800 received"),
        "pings lost while the flow was replaced: {text}"
    );
    // The filter kept its preference and its handle.
    assert_eq!(filter_lines(&rig, "rep0"), before);
    assert_eq!(rig.ok(&["flush"]), "deleted 5 flows\n");
}

#[test]
fn a_flow_with_a_new_priority_adds_one_filter_and_moves_none() {
    eprintln!("on Linux {}", plexus_testkit::kernel_release());
    let rig = Rig::new();
    apply_report(&rig, FLOWS);
    let (rep0, rep1) = (filter_lines(&rig, "rep0"), filter_lines(&rig, "rep1"));
    let r = apply_report(
        &rig,
        &format!("{FLOWS}priority=300,in_port=rep0,icmp,actions=output:rep1\n"),
    );
    assert_eq!(changes(&r, "added"), 1, "{r:#}");
    assert_eq!(changes(&r, "kept"), 5, "{r:#}");
    assert_eq!(r["removed"], 0, "{r:#}");
    // Every filter that was there is there, with its preference and handle.
    let now = filter_lines(&rig, "rep0");
    for line in &rep0 {
        assert!(now.contains(line), "{line} moved: {now:#?}");
    }
    assert_eq!(now.len(), rep0.len() + 1);
    assert_eq!(filter_lines(&rig, "rep1"), rep1);
    assert!(rig.ping(0, 2), "pings take the new flow");
    assert!(
        rig.packets("table=0,priority=300,in_port=rep0,icmp,actions=output:rep1") >= 2,
        "the new flow comes first for icmp"
    );
    assert_eq!(rig.ok(&["flush"]), "deleted 6 flows\n");
}

/// Applies `flows` with one back end, all ports; returns the report.
fn apply_with(rig: &Rig, flows: &str, backend: &str) -> Value {
    let file = rig.flows_file(flows);
    rig.json(&[
        "apply",
        "--flows",
        &file,
        "--backend",
        backend,
        "--policy",
        "sw-only",
        "--json",
    ])
}

#[test]
fn moving_ports_between_back_ends_under_traffic_loses_no_packet() {
    eprintln!("on Linux {}", plexus_testkit::kernel_release());
    let rig = Rig::new();
    let before = rig.tc_state();
    apply_with(&rig, FLOWS, "ebpf");
    let mut pinger = rig.vfs[0]
        .command("ping")
        .unwrap()
        .args(["-c", "800", "-i", "0.02", "-W", "1", "-q", &ip(1)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // eBPF -> flower: the flower filters exist before eBPF lets go.
    let r = apply_with(&rig, FLOWS, "flower");
    assert!(
        r["flows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["backend"] == "flower"),
        "{r:#}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    // flower -> eBPF: eBPF takes the ports before flower's filters go.
    let r = apply_with(&rig, FLOWS, "ebpf");
    assert!(
        r["flows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["backend"] == "ebpf"),
        "{r:#}"
    );
    assert!(
        pinger.try_wait().unwrap().is_none(),
        "the pings ended before the second move: nothing was measured"
    );
    let out = pinger.wait_with_output().unwrap();
    let pings = String::from_utf8_lossy(&out.stdout);
    assert!(
        pings.contains("800 packets transmitted, 800 received"),
        "pings lost while the ports moved: {pings}"
    );
    assert!(
        filter_lines(&rig, "rep0")
            .iter()
            .all(|l| !l.contains("flower")),
        "flower filters left behind"
    );
    assert_eq!(rig.ok(&["flush"]), "deleted 5 flows\n");
    assert_eq!(rig.tc_state(), before);
}

/// `prefer-hw` on veth: the kernel tries a NIC that is not there, so every
/// flow lands in software. With nothing in hardware nothing can be
/// shadowed: the drop above the overlapping `ip` flow still drops, no flow
/// is demoted under either `--shadowed` policy, and `dump-flows` says
/// `tc-sw` with no shadow. (A NIC that holds some flows is emulated in
/// `shadow.rs`'s unit tests: no kernel here offloads flower.)
#[test]
fn prefer_hw_on_veth_lands_in_software_and_shadows_nothing() {
    eprintln!("on Linux {}", plexus_testkit::kernel_release());
    let rig = Rig::new();
    let file = rig.flows_file(FLOWS);
    for shadowed in ["demote", "refuse"] {
        let r = rig.json(&[
            "apply",
            "--flows",
            &file,
            "--backend",
            "flower",
            "--policy",
            "prefer-hw",
            "--shadowed",
            shadowed,
            "--json",
        ]);
        let placed = r["flows"].as_array().unwrap();
        assert_eq!(placed.len(), 5, "{r:#}");
        for p in placed {
            assert_eq!(p["location"], "tc-sw", "veth holds nothing: {p}");
            assert_eq!(p["in_hw_count"].as_u64().unwrap_or(0), 0, "{p}");
            assert_eq!(p["demoted"], false, "{p}");
        }
    }
    assert!(rig.ping(0, 2));
    assert_eq!(rig.udp(9, 5), 0, "the drop above the ip flow drops");
    let dump = rig.json(&["dump-flows", "--json"]);
    for f in dump["flows"].as_array().unwrap() {
        assert_eq!(f["location"], "tc-sw", "{f}");
        assert!(f["shadowed_by"].is_null(), "{f}");
    }
    let table = rig.ok(&["dump-flows"]);
    assert!(!table.contains("shadow"), "{table}");
    assert_eq!(rig.ok(&["flush"]), "deleted 5 flows\n");
}
