//! The `dpu-offload` binary, black box, in throwaway network namespaces,
//! each with its own BPF filesystem for the eBPF datapath's pins.
//!
//! This machine's kernel has no tc flower: `apply --backend flower` must
//! fail cleanly, name the missing classifier, and leave the ports exactly
//! as they were, while `auto` runs the same table in the eBPF datapath. On
//! a kernel that has flower (the 6.1 and 6.12 VMs of `make kernel-e2e`,
//! which run this binary too) the same test installs for real and checks
//! what `dump-flows` reports (veth has no hardware, so every flow must say
//! `tc-sw`, never `hw`); `vm_flower.rs` sends traffic through flower.

use std::{path::Path, process::Output};

use plexus_e2e::bin;
use plexus_testkit::{
    BpfFs, FakeApiServer, FakeSysfs, NetNs, PfSpec, RepresentorSpec, sysfs::DEFAULT_PF_BDF,
};
use serde_json::Value;

/// A test's ports: a throwaway namespace and a private bpffs for the
/// datapath's pins, both gone when it drops.
struct Ports {
    ns: NetNs,
    fs: BpfFs,
}

impl std::ops::Deref for Ports {
    type Target = NetNs;
    fn deref(&self) -> &NetNs {
        &self.ns
    }
}

impl Ports {
    /// A namespace with nothing in it but `lo`.
    fn bare() -> Self {
        Self {
            ns: NetNs::new().unwrap(),
            fs: BpfFs::new().unwrap(),
        }
    }
}

/// How long to wait for the agent: it returns as soon as the condition
/// holds; the bound is for the kernel matrix, whose VMs run under TCG 10
/// to 30 times slower than a host, several tests at once.
const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn bpf_dir(ports: &Ports) -> String {
    ports.fs.pin_dir().to_string_lossy().into_owned()
}

fn run(ns: &Ports, args: &[&str]) -> Output {
    ns.command(bin("dpu-offload"))
        .unwrap()
        .args(["--bpf-dir", &bpf_dir(ns)])
        .args(args)
        .output()
        .unwrap()
}

/// Runs a command that prints JSON; it must succeed.
fn json(ns: &Ports, args: &[&str]) -> Value {
    let out = run(ns, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// How many flows of an `apply --json` report have this `change`.
fn changes(report: &Value, change: &str) -> usize {
    report["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["change"] == change)
        .count()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Two "representors" (a veth pair) and a third port.
fn ports() -> Ports {
    let ns = Ports::bare();
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
    eprintln!("on Linux {}", plexus_testkit::kernel_release());
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
        // auto: veth does not offload tc, so every port gets the eBPF
        // datapath, and flush puts everything back.
        let out = run(&ns, &["apply", "--flows", &flows, "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            report["flows"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["backend"] == "ebpf" && p["location"] == "ebpf"),
            "{report}"
        );
        assert_eq!(text(&run(&ns, &["flush"]).stdout), "deleted 4 flows\n");
        assert_eq!(tc_state(&ns), before, "flush left something behind");
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
    // The same backend again: `auto` would move these veth ports (no
    // offload) to the eBPF datapath.
    let again = json(
        &ns,
        &["apply", "--flows", &flows, "--backend", "flower", "--json"],
    );
    assert_eq!(changes(&again, "kept"), 4, "{again}");
    assert_eq!(again["removed"], 0);
    let dump = json(&ns, &["dump-flows", "--json"]);
    let dumped = dump["flows"].as_array().unwrap();
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
fn ebpf_backend_applies_keeps_deletes_and_flushes_to_nothing() {
    let ns = ports();
    let dir = tempfile::tempdir().unwrap();
    let flows = write_flows(dir.path(), FLOWS);
    let before = tc_state(&ns);
    let out = run(&ns, &["apply", "--flows", &flows, "--backend", "ebpf"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("4 flows, 0 in hardware, 0 removed"),
        "{table}"
    );
    assert_eq!(
        table.matches(" ebpf ").count(),
        8,
        "backend and where: {table}"
    );

    // The classifier is a cls_bpf filter tc lists, on the two in_ports.
    let shown = ns.sh("tc", &["filter", "show", "dev", "rep0", "ingress"]);
    assert!(
        shown.contains("bpf") && shown.contains("plexus_tc") && shown.contains("direct-action"),
        "{shown}"
    );
    assert!(
        ns.sh("tc", &["filter", "show", "dev", "rep1", "ingress"])
            .is_empty()
    );
    let prog_id: u32 = shown
        .split_whitespace()
        .skip_while(|w| *w != "id")
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no program id in {shown}"));

    // Re-apply: everything kept; a changed table: one added, one removed.
    let again = json(
        &ns,
        &["apply", "--flows", &flows, "--backend", "ebpf", "--json"],
    );
    assert_eq!(changes(&again, "kept"), 4, "{again}");
    let changed = write_flows(dir.path(), &FLOWS.replace("tp_dst=22", "tp_dst=23"));
    let r = json(
        &ns,
        &["apply", "--flows", &changed, "--backend", "ebpf", "--json"],
    );
    assert_eq!(r["removed"], 1, "{r}");
    assert_eq!(changes(&r, "added"), 1, "{r}");

    let dump = json(&ns, &["dump-flows", "--json"]);
    let listed = dump["flows"].as_array().unwrap();
    assert_eq!(listed.len(), 4);
    assert!(
        listed
            .iter()
            .all(|f| f["backend"] == "ebpf" && f["in_hw"] == false),
        "{dump}"
    );
    assert!(
        listed
            .iter()
            .any(|f| f["flow"] == "table=0,priority=200,in_port=up0,tcp,tp_dst=23,actions=drop"),
        "{dump}"
    );
    // IPv6 neighbour discovery on the new links matches no flow.
    assert!(dump["ebpf"]["miss"]["packets"].is_u64(), "{dump}");

    let out = run(&ns, &["del", "--in-port", "up0"]);
    assert_eq!(
        text(&out.stdout),
        "deleted 2 flows\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(dumped(&ns).len(), 2);

    let out = run(&ns, &["flush"]);
    assert_eq!(
        text(&out.stdout),
        "deleted 2 flows\n",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(tc_state(&ns), before, "flush left a filter or qdisc");
    assert!(
        !Path::new(&bpf_dir(&ns)).exists(),
        "flush left pins: {:?}",
        ns.fs.entries()
    );
    // The program goes with its last filter (after an RCU grace period).
    let gone = (0..100).any(|_| {
        if !prog_loaded(prog_id) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        false
    });
    assert!(gone, "program {prog_id} still loaded after flush");
}

/// Whether a BPF program id is still loaded (`BPF_PROG_GET_FD_BY_ID`).
fn prog_loaded(id: u32) -> bool {
    #[repr(C)]
    struct Attr {
        prog_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let attr = Attr {
        prog_id: id,
        next_id: 0,
        open_flags: 0,
    };
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    // SAFETY: the bpf syscall reads `size_of::<Attr>()` bytes of `attr`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            &attr as *const Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a descriptor the kernel just gave us.
        unsafe { libc::close(fd as i32) };
        true
    } else {
        false
    }
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
        serde_json::json!({"flows": [], "ebpf": null})
    );
    assert_eq!(text(&run(&ns, &["flush"]).stdout), "deleted 0 flows\n");
}

#[test]
fn representors_from_a_fake_sysfs() {
    let ns = Ports::bare();
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

/// Waits until `cond` holds on the table's status file.
fn wait_status(status: &Path, file: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let path = status.join(format!("{file}.json"));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        {
            if cond(&v) {
                return v;
            }
            if std::time::Instant::now() > deadline {
                panic!("{}: never {what}: {v:#}", path.display());
            }
        } else if std::time::Instant::now() > deadline {
            panic!("{}: never written ({what})", path.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn dumped(ns: &Ports) -> Vec<Value> {
    json(ns, &["dump-flows", "--json"])["flows"]
        .as_array()
        .unwrap()
        .clone()
}

/// A running agent, killed if a test ends (or fails) while it runs.
struct AgentProc(std::process::Child);

impl std::ops::Deref for AgentProc {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for AgentProc {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start_agent(ns: &Ports, dir: &Path) -> AgentProc {
    start_agent_with(ns, dir, &[])
}

fn start_agent_with(ns: &Ports, dir: &Path, extra: &[&str]) -> AgentProc {
    AgentProc(
        ns.command(bin("dpu-offload"))
            .unwrap()
            .args([
                "--bpf-dir",
                &bpf_dir(ns),
                "agent",
                "--interval-ms",
                "100",
                "--dir",
            ])
            .arg(dir)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn sigterm(agent: &mut AgentProc) {
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) }, 0);
    let code = agent.wait().unwrap();
    assert!(code.success(), "{code}");
}

#[test]
fn agent_installs_changes_and_removes_tables_and_survives_kill_9() {
    let ns = ports();
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status");
    let before = tc_state(&ns);
    let a = "in_port=rep0,ip,actions=output:up0\nin_port=up0,ip,actions=output:rep0\n";
    std::fs::write(dir.path().join("a.flows"), a).unwrap();
    let mut agent = start_agent(&ns, dir.path());

    let st = wait_status(&status, "a.flows", "applied", |v| v["applied"] == true);
    let flows = st["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 2, "{st:#}");
    assert!(
        flows
            .iter()
            .all(|f| f["backend"] == "ebpf" && f["location"] == "ebpf"),
        "{st:#}"
    );
    assert_eq!(dumped(&ns).len(), 2);

    // Changed: a third flow appears.
    std::fs::write(
        dir.path().join("a.flows"),
        format!("{a}priority=200,in_port=up0,tcp,tp_dst=22,actions=drop\n"),
    )
    .unwrap();
    wait_status(&status, "a.flows", "three flows", |v| {
        v["flows"].as_array().is_some_and(|f| f.len() == 3)
    });
    assert_eq!(dumped(&ns).len(), 3);

    // A table that does not parse is reported and changes nothing.
    std::fs::write(
        dir.path().join("b.flows"),
        "in_port=rep1,ip,nw_dst=10.0.0.0/99,actions=drop\n",
    )
    .unwrap();
    let b = wait_status(&status, "b.flows", "an error", |v| !v["error"].is_null());
    assert!(b["error"].as_str().unwrap().contains("b.flows:1:"), "{b:#}");
    assert_eq!(b["applied"], false);
    assert_eq!(dumped(&ns).len(), 3);
    // Fixed, it joins the others.
    std::fs::write(dir.path().join("b.flows"), "in_port=rep1,ip,actions=drop\n").unwrap();
    wait_status(&status, "b.flows", "applied", |v| {
        v["applied"] == true && v["flows"].as_array().is_some_and(|f| f.len() == 1)
    });
    assert_eq!(dumped(&ns).len(), 4);

    // Removed: its flows go.
    std::fs::remove_file(dir.path().join("b.flows")).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    // The agent removes the flows, then the status file.
    while dumped(&ns).len() != 3 || status.join("b.flows.json").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "b's flow or status stayed: {:#?}",
            dumped(&ns)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // kill -9: the datapath keeps the flows; a new agent finds them and
    // keeps them (same counter slots), with nothing doubled.
    let slots = |flows: &[Value]| {
        let mut s: Vec<u64> = flows.iter().map(|f| f["slot"].as_u64().unwrap()).collect();
        s.sort_unstable();
        s
    };
    let before_kill = slots(&dumped(&ns));
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert_eq!(
        slots(&dumped(&ns)),
        before_kill,
        "flows went with the agent"
    );
    std::fs::remove_dir_all(&status).unwrap();
    let mut agent = start_agent(&ns, dir.path());
    wait_status(&status, "a.flows", "applied again", |v| {
        v["applied"] == true
    });
    let after = dumped(&ns);
    assert_eq!(after.len(), 3, "{after:#?}");
    assert_eq!(
        slots(&after),
        before_kill,
        "restart re-added flows instead of keeping them"
    );

    // SIGTERM (a rollout): the flows stay for the next agent.
    sigterm(&mut agent);
    assert_eq!(slots(&dumped(&ns)), before_kill, "a restart is an outage");

    // With --flush-on-exit, SIGTERM takes everything, and tc is as it was.
    std::fs::remove_dir_all(&status).unwrap();
    let mut agent = start_agent_with(&ns, dir.path(), &["--flush-on-exit"]);
    wait_status(&status, "a.flows", "applied by the third agent", |v| {
        v["applied"] == true
    });
    sigterm(&mut agent);
    assert!(dumped(&ns).is_empty());
    assert_eq!(tc_state(&ns), before);
    assert!(!Path::new(&bpf_dir(&ns)).exists());
}

#[test]
fn agent_restart_under_traffic_loses_no_packet() {
    eprintln!("on Linux {}", plexus_testkit::kernel_release());
    let sw = Ports::bare();
    let vfs = [
        NetNs::with_prefix("ar-vf").unwrap(),
        NetNs::with_prefix("ar-vf").unwrap(),
    ];
    for (i, vf) in vfs.iter().enumerate() {
        sw.veth_to(&format!("rep{i}"), vf, "eth0");
        vf.sh(
            "ip",
            &[
                "link",
                "set",
                "eth0",
                "address",
                &format!("02:00:00:00:08:0{}", i + 1),
            ],
        );
        vf.sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("10.8.0.{}/24", i + 1),
                "dev",
                "eth0",
            ],
        );
    }
    for (i, vf) in vfs.iter().enumerate() {
        let j = 1 - i;
        vf.sh(
            "ip",
            &[
                "neigh",
                "add",
                &format!("10.8.0.{}", j + 1),
                "lladdr",
                &format!("02:00:00:00:08:0{}", j + 1),
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("status");
    std::fs::write(
        dir.path().join("vf.flows"),
        "in_port=rep0,actions=output:rep1\nin_port=rep1,actions=output:rep0\n",
    )
    .unwrap();
    let mut agent = start_agent(&sw, dir.path());
    wait_status(&status, "vf.flows", "applied", |v| v["applied"] == true);
    let pinger = vfs[0]
        .command("ping")
        .unwrap()
        .args(["-c", "300", "-i", "0.01", "-W", "1", "-q", "10.8.0.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before: Vec<(u64, u64)> = dumped(&sw)
        .iter()
        .map(|f| (f["slot"].as_u64().unwrap(), f["packets"].as_u64().unwrap()))
        .collect();
    // A rollout: the old agent stops, a new one starts and reconciles.
    sigterm(&mut agent);
    std::fs::remove_dir_all(&status).unwrap();
    let mut agent = start_agent(&sw, dir.path());
    wait_status(&status, "vf.flows", "applied by the new agent", |v| {
        v["applied"] == true
    });
    let out = pinger.wait_with_output().unwrap();
    let pings = String::from_utf8_lossy(&out.stdout);
    assert!(
        pings.contains("300 packets transmitted, 300 received"),
        "packets lost across the restart: {pings}"
    );
    // The same flows, with their counters: kept, not reinstalled.
    let after: Vec<(u64, u64)> = dumped(&sw)
        .iter()
        .map(|f| (f["slot"].as_u64().unwrap(), f["packets"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        after.iter().map(|a| a.0).collect::<Vec<_>>(),
        before.iter().map(|b| b.0).collect::<Vec<_>>(),
        "the new agent moved the flows"
    );
    // Each flow carried all 300 echo requests (or replies), those before
    // the restart included: one counter from start to end. (How many came
    // before the restart depends on the machine's speed.)
    for (b, a) in before.iter().zip(&after) {
        assert!(
            b.1 > 0 && a.1 >= 300,
            "counters restarted: {before:?} -> {after:?}"
        );
    }
    sigterm(&mut agent);
    assert_eq!(text(&run(&sw, &["flush"]).stdout), "deleted 2 flows\n");
}

const FLOWTABLES: &str = "/apis/plexus.dev/v1alpha1/flowtables";

fn flow_table(name: &str, selector: &Value, flows: &[&str]) -> Value {
    serde_json::json!({"apiVersion": "plexus.dev/v1alpha1", "kind": "FlowTable",
                       "metadata": {"name": name},
                       "spec": {"nodeSelector": selector, "flows": flows}})
}

fn node_object(labels: &Value) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Node",
                       "metadata": {"name": "node-a", "labels": labels}})
}

/// Waits until this node's entry in a `FlowTable`'s status satisfies
/// `cond`.
fn wait_entry(
    api: &FakeApiServer,
    table: &str,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let entry = api
            .get(FLOWTABLES, table)
            .map(|t| t["status"]["nodes"]["node-a"].clone())
            .unwrap_or(Value::Null);
        if cond(&entry) {
            return entry;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flowtable {table}: never {what}: {:#}",
            api.get(FLOWTABLES, table).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn wait_flows(ns: &Ports, n: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    while dumped(ns).len() != n {
        assert!(
            std::time::Instant::now() < deadline,
            "never {n} flows: {:#?}",
            dumped(ns)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn agent_reconciles_flowtable_resources_and_reports_per_node_status() {
    let ns = ports();
    let api = ns.run(FakeApiServer::start);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let before = tc_state(&ns);
    api.put(
        "/api/v1/nodes",
        node_object(&serde_json::json!({"dpu": "yes"})),
    );
    let dpu = serde_json::json!({"dpu": "yes"});
    api.put(
        FLOWTABLES,
        flow_table(
            "uplink",
            &dpu,
            &[
                "in_port=rep0,ip,actions=output:up0",
                "in_port=up0,ip,actions=output:rep0",
            ],
        ),
    );
    api.put(
        FLOWTABLES,
        flow_table(
            "elsewhere",
            &serde_json::json!({"dpu": "other"}),
            &["in_port=rep1,actions=drop"],
        ),
    );
    api.put(
        FLOWTABLES,
        flow_table(
            "broken",
            &serde_json::json!({}),
            &[
                "in_port=rep1,actions=drop",
                "in_port=rep1,ip,nw_dst=10.0.0.0/99,actions=drop",
            ],
        ),
    );
    let mut agent = ns
        .command(bin("dpu-offload"))
        .unwrap()
        .args([
            "--bpf-dir",
            &bpf_dir(&ns),
            "agent",
            "--kube",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .args([
            "--node-name",
            "node-a",
            "--interval-ms",
            "100",
            "--list-interval-ms",
            "100",
            "--flush-on-exit",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let up = wait_entry(&api, "uplink", "applied", |e| e["applied"] == true);
    let flows = up["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 2, "{up:#}");
    assert!(
        flows
            .iter()
            .all(|f| f["backend"] == "ebpf" && f["location"] == "ebpf" && f["inHw"] == false),
        "{up:#}"
    );
    let broken = wait_entry(&api, "broken", "an error", |e| e["error"].is_string());
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .starts_with("flowtable/broken spec.flows[1]:"),
        "{broken:#}"
    );
    assert_eq!(broken["applied"], false);
    assert_eq!(
        api.get(FLOWTABLES, "elsewhere").unwrap()["status"],
        Value::Null,
        "a table for other nodes got this node's status"
    );
    assert_eq!(dumped(&ns).len(), 2, "the broken table installed something");

    // Fixed, it joins.
    api.put(
        FLOWTABLES,
        flow_table(
            "broken",
            &serde_json::json!({}),
            &["in_port=rep1,actions=drop"],
        ),
    );
    wait_entry(&api, "broken", "applied", |e| e["applied"] == true);
    wait_flows(&ns, 3);

    // The API server failing for a while changes nothing installed.
    api.fail_next(&[500; 10]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(dumped(&ns).len(), 3, "an API error removed flows");

    // The node relabelled: the uplink table goes, with this node's entry.
    api.put(
        "/api/v1/nodes",
        node_object(&serde_json::json!({"dpu": "no"})),
    );
    wait_flows(&ns, 1);
    wait_entry(&api, "uplink", "taken back", Value::is_null);

    // SIGTERM with --flush-on-exit: flows and this node's status go; tc
    // is as it was.
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) }, 0);
    let code = agent.wait().unwrap();
    assert!(code.success(), "{code}");
    assert!(dumped(&ns).is_empty());
    assert_eq!(tc_state(&ns), before);
    assert_eq!(
        api.get(FLOWTABLES, "broken").unwrap()["status"]["nodes"],
        serde_json::json!({}),
        "status left behind"
    );

    // Everything it asked of the API server, the ClusterRole deploy/ gives
    // the agent allows.
    let manifest =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dpu-offload.yaml");
    let rules = plexus_e2e::rbac::cluster_role(&manifest, "dpu-offload");
    let denied = plexus_e2e::rbac::denied(&rules, &api.requests());
    assert!(
        denied.is_empty(),
        "deploy/dpu-offload.yaml's ClusterRole refuses {denied:?}"
    );
}

#[test]
fn ip_netns_exec_without_a_shared_bpffs_is_refused_and_installs_nothing() {
    eprintln!("on Linux {}", plexus_testkit::kernel_release());
    let ns = ports();
    let dir = tempfile::tempdir().unwrap();
    let flows = write_flows(dir.path(), FLOWS);
    let before = tc_state(&ns);
    // `ip netns exec` gives the process its own mount namespace and a
    // fresh /sys, where /sys/fs/bpf holds no bpffs.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(bin("dpu-offload"))
        .args(["apply", "--flows", &flows, "--backend", "ebpf"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("mount namespace of its own"), "{err}");
    assert!(err.contains("--bpf-dir"), "says how to fix it: {err}");
    assert!(err.contains("nothing was installed"), "{err}");
    assert_eq!(tc_state(&ns), before, "something was installed");
}
