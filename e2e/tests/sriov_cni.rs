//! The `sriov` CNI plugin, black box, on emulated VFs: each VF netdev is a
//! veth end in a throwaway "host" namespace, registered as the VF's `net/`
//! entry in a fake sysfs tree; its peer sits on a bridge in a "wire"
//! namespace (the NIC's switch), which has 10.56.0.254. The PF is an
//! emulated one: VF attributes go to its state file in the fake sysfs
//! (what `ip link set PF vf N ...` would set on a real NIC; the netlink
//! bytes for that are golden-tested in `plexus-netlink`).
//!
//! Everything a user checks: the VF is in the pod under its new name, with
//! the MAC and the IP, pings go through; DEL puts the VF back with its
//! name, MAC and MTU, resets what ADD set on the PF, and leaves no cache,
//! allocation or IPAM lease; bad input is a CNI error that changed nothing.

use std::{path::PathBuf, process::Output};

use plexus_e2e::{REFERENCE_PLUGINS, bin, sriov};
use plexus_testkit::{EmulatedVf, FakeSysfs, NetNs, PfSpec, VfSpec, sysfs::DEFAULT_PF_BDF};
use serde_json::{Value, json};

struct Rig {
    host: NetNs,
    wire: NetNs,
    sysfs: FakeSysfs,
    tmp: tempfile::TempDir,
    vfs: Vec<EmulatedVf>,
    /// A VF bound to vfio-pci (no netdev): DPDK mode.
    dpdk: String,
    /// A VF with no netdev bound to a driver that is not a DPDK one.
    odd: String,
    state: PathBuf,
}

fn rig(n: u32) -> Rig {
    rig_of(n, PfSpec::default(), &VfSpec::default())
}

/// A rig on another NIC model (its PF must have room for VF 11).
fn rig_of(n: u32, pf: PfSpec, model: &VfSpec) -> Rig {
    let host = NetNs::with_prefix("sr-host").unwrap();
    let wire = sriov::wire("sr-wire");
    wire.sh("ip", &["addr", "add", "10.56.0.254/24", "dev", "sw0"]);
    let (sysfs, state) = sriov::emulated(pf);
    let vfs = sriov::vfs_of(&host, &wire, &sysfs, n, model);
    // VFs without a netdev, bound to `driver`.
    let bare = |index, driver: &str| {
        let spec = VfSpec {
            driver: Some(driver.into()),
            ..VfSpec::default()
        };
        sysfs.vf(DEFAULT_PF_BDF, index, spec).bdf
    };
    let dpdk = bare(10, "vfio-pci");
    let odd = bare(11, "mystery_vf");
    Rig {
        host,
        wire,
        sysfs,
        tmp: tempfile::tempdir().unwrap(),
        vfs,
        dpdk,
        odd,
        state,
    }
}

impl Rig {
    /// After a refused ADD: VF 0's netdev as it was (`host_before`), its
    /// PF state never set or set and put back (a refusal midway), and no
    /// cache, allocation or lease.
    fn assert_untouched(&self, what: &str, host_before: &Value) {
        assert_eq!(
            &self.host.link("ensvf0").unwrap(),
            host_before,
            "{what}: VF changed"
        );
        let st = self.vf_state(0);
        assert!(
            st.is_null() || st == serde_json::from_str::<Value>(DEFAULTS).unwrap(),
            "{what}: PF state changed: {st}"
        );
        assert!(
            self.data_files().is_empty(),
            "{what}: {:?}",
            self.data_files()
        );
        assert!(self.leases().is_empty(), "{what}");
    }

    fn data(&self) -> PathBuf {
        self.tmp.path().join("sriov")
    }

    fn ipam_dir(&self) -> PathBuf {
        self.tmp.path().join("ipam")
    }

    fn conf(&self, device: &str, extra: &Value) -> Value {
        let mut c = json!({"cniVersion": "1.0.0", "name": "sriov-net", "type": "sriov",
            "deviceID": device, "dataDir": self.data(), "sysfsRoot": self.sysfs.root(),
            "ipam": {"type": "host-local", "dataDir": self.ipam_dir(),
                     "ranges": [[{"subnet": "10.56.0.0/24", "rangeStart": "10.56.0.10"}]]}});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn run(&self, cmd: &str, pod: Option<&NetNs>, cid: &str, conf: &Value) -> Output {
        self.run_as(cmd, pod.map(NetNs::path), cid, "net1", conf)
    }

    /// A CNI call; `netns` may be a path that no longer exists (the
    /// runtime passes the one it had).
    fn run_as(
        &self,
        cmd: &str,
        netns: Option<&std::path::Path>,
        cid: &str,
        ifname: &str,
        conf: &Value,
    ) -> Output {
        use std::io::Write as _;
        let mut c = self.host.command(bin("sriov")).unwrap();
        c.env_clear()
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", REFERENCE_PLUGINS)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(p) = netns {
            c.env("CNI_NETNS", p);
        }
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, cmd: &str, pod: Option<&NetNs>, cid: &str, conf: &Value) -> Value {
        let out = self.run(cmd, pod, cid, conf);
        assert!(out.status.success(), "{cmd} {cid}: {}", describe(&out));
        if out.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout).unwrap()
        }
    }

    /// The emulated PF's attributes of VF `i` (`null`: never set).
    fn vf_state(&self, i: u32) -> Value {
        let text = std::fs::read_to_string(&self.state).unwrap();
        if text.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str::<Value>(&text).unwrap()[i.to_string()].clone()
    }

    /// Files under the plugin's data directory (caches, allocations).
    fn data_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["", "pci"] {
            if let Ok(rd) = std::fs::read_dir(self.data().join(sub)) {
                out.extend(
                    rd.flatten()
                        .filter(|e| e.file_type().unwrap().is_file())
                        .map(|e| format!("{sub}/{}", e.file_name().to_string_lossy())),
                );
            }
        }
        out.sort();
        out
    }

    fn leases(&self) -> Vec<String> {
        std::fs::read_dir(self.ipam_dir().join("sriov-net"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("10."))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn cni_error(out: &Output) -> (u64, String) {
    assert!(
        !out.status.success(),
        "expected a failure: {}",
        describe(out)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("error is not JSON ({e}): {}", describe(out)));
    (
        v["code"].as_u64().unwrap(),
        v["msg"].as_str().unwrap().to_owned(),
    )
}

fn ping(from: &NetNs, to: &str) -> bool {
    from.exec("ping", &["-c", "1", "-W", "2", to])
        .unwrap()
        .status
        .success()
}

const DEFAULTS: &str = r#"{"mac":"00:00:00:00:00:00","vlan":0,"qos":0,"proto":"802.1Q","minTxRate":0,"maxTxRate":0,"spoofchk":true,"trust":false,"linkState":"auto"}"#;

#[test]
fn add_gives_the_pod_its_vf_configured_and_del_puts_everything_back() {
    let r = rig(1);
    let vf = &r.vfs[0];
    let pod = NetNs::with_prefix("sr-pod").unwrap();
    let before = r.host.link("ensvf0").unwrap();
    let conf = r.conf(
        &vf.vf_bdf,
        // (min_tx_rate 0: the emulated PF is an X710, whose i40e refuses
        // any other; see the bad-input test.)
        &json!({"mac": "02:56:00:00:00:01", "vlan": 100, "vlanQoS": 2, "spoofchk": "off",
                "trust": "on", "min_tx_rate": 0, "max_tx_rate": 100, "link_state": "enable"}),
    );
    let res = r.ok("ADD", Some(&pod), "c1", &conf);

    let ifc = &res["interfaces"][0];
    assert_eq!(ifc["name"], "net1", "{res:#}");
    assert_eq!(ifc["mac"], "02:56:00:00:00:01");
    // (`pciID` and `mtu` are CNI 1.1.0 fields: not in this 1.0.0
    // result; see below.)
    assert_eq!(ifc["sandbox"], pod.path().to_str().unwrap());
    assert_eq!(res["ips"][0]["address"], "10.56.0.10/24");
    assert_eq!(res["ips"][0]["interface"], 0);
    // In the pod: the VF, renamed, with its MAC and address, up.
    let inside = pod.link("net1").expect("net1 in the pod");
    assert_eq!(inside["address"], "02:56:00:00:00:01");
    assert!(
        inside["flags"].as_array().unwrap().contains(&json!("UP")),
        "{inside:#}"
    );
    assert!(
        pod.addrs("net1").contains(&"10.56.0.10/24".to_owned()),
        "{:?}",
        pod.addrs("net1")
    );
    assert!(r.host.link("ensvf0").is_none(), "the VF stayed on the host");
    assert!(ping(&pod, "10.56.0.254"), "no ping over the VF");
    // On the PF: what the config asked for.
    let st = r.vf_state(0);
    assert_eq!(
        st,
        json!({"mac": "02:56:00:00:00:01", "vlan": 100, "qos": 2, "proto": "802.1Q",
               "minTxRate": 0, "maxTxRate": 100, "spoofchk": false, "trust": true,
               "linkState": "enable"})
    );
    assert_eq!(r.data_files(), ["/c1-net1", &format!("pci/{}", vf.vf_bdf)]);
    assert_eq!(r.leases(), ["10.56.0.10"]);

    assert!(
        !r.sysfs.device_dir(&vf.vf_bdf).join("net/ensvf0").exists(),
        "the host's sysfs lists a netdev that is in the pod"
    );
    r.ok("DEL", Some(&pod), "c1", &conf);
    let after = r.host.link("ensvf0").expect("the VF is back on the host");
    assert_eq!(after["address"], before["address"]);
    assert_eq!(after["mtu"], before["mtu"]);
    assert!(pod.link("net1").is_none());
    assert!(r.sysfs.device_dir(&vf.vf_bdf).join("net/ensvf0").is_dir());
    assert!(r.sysfs.class_net("ensvf0").exists());
    assert_eq!(
        r.vf_state(0),
        serde_json::from_str::<Value>(DEFAULTS).unwrap()
    );
    assert!(r.data_files().is_empty(), "{:?}", r.data_files());
    assert!(r.leases().is_empty(), "lease left: {:?}", r.leases());
    // DEL is idempotent.
    r.ok("DEL", Some(&pod), "c1", &conf);
    r.ok("DEL", None, "c1", &conf);
    // And the VF can be given again; a 1.1.0 result names it by PCI
    // address (no IPAM here: Debian's host-local stops at 1.0.0).
    let v11 = r.conf(&vf.vf_bdf, &json!({"cniVersion": "1.1.0", "ipam": null}));
    let res = r.ok("ADD", Some(&pod), "c2", &v11);
    assert_eq!(res["interfaces"][0]["pciID"], vf.vf_bdf.as_str(), "{res:#}");
    assert_eq!(res["interfaces"][0]["mtu"], before["mtu"]);
    assert!(res.get("ips").is_none());
    r.ok("DEL", Some(&pod), "c2", &v11);
    assert!(r.host.link("ensvf0").is_some());
}

#[test]
fn two_pods_ping_each_other_over_their_vfs() {
    let r = rig(2);
    let (a, b) = (
        NetNs::with_prefix("sr-a").unwrap(),
        NetNs::with_prefix("sr-b").unwrap(),
    );
    let ra = r.ok("ADD", Some(&a), "a", &r.conf(&r.vfs[0].vf_bdf, &json!({})));
    let rb = r.ok("ADD", Some(&b), "b", &r.conf(&r.vfs[1].vf_bdf, &json!({})));
    let ip = |res: &Value| {
        res["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_ne!(ip(&ra), ip(&rb));
    assert!(ping(&a, &ip(&rb)), "a cannot reach b");
    assert!(ping(&b, &ip(&ra)), "b cannot reach a");
    r.ok("DEL", Some(&a), "a", &r.conf(&r.vfs[0].vf_bdf, &json!({})));
    r.ok("DEL", Some(&b), "b", &r.conf(&r.vfs[1].vf_bdf, &json!({})));
    assert!(r.host.link("ensvf0").is_some() && r.host.link("ensvf1").is_some());
    assert!(r.data_files().is_empty());
}

#[test]
fn dpdk_vf_is_allocated_and_reported_without_moving_anything() {
    let r = rig(0);
    // The PF runs jumbo frames: the DPDK VF reports its MTU.
    r.sysfs.corrupt(DEFAULT_PF_BDF, "net/ens1f0/mtu", "9000\n");
    let pod = NetNs::with_prefix("sr-dpdk").unwrap();
    let conf = r.conf(&r.dpdk, &json!({"mac": "02:56:00:00:00:0a", "vlan": 7}));
    let links_before = pod.links().len();
    let res = r.ok("ADD", Some(&pod), "d1", &conf);
    assert_eq!(res["interfaces"][0]["name"], "net1", "{res:#}");
    assert_eq!(res["interfaces"][0]["mac"], "02:56:00:00:00:0a");
    assert_eq!(
        res["ips"][0]["address"], "10.56.0.10/24",
        "IPs are reported"
    );
    assert_eq!(
        pod.links().len(),
        links_before,
        "nothing moved into the pod"
    );
    assert!(pod.addrs("lo").iter().all(|a| !a.starts_with("10.56.")));
    assert_eq!(r.vf_state(10)["vlan"], 7);
    assert!(r.data_files().contains(&format!("pci/{}", r.dpdk)));
    // DEL knows it was DPDK mode (upstream loses that and errors).
    r.ok("DEL", Some(&pod), "d1", &conf);
    assert_eq!(r.vf_state(10)["vlan"], 0);
    assert!(r.data_files().is_empty());
    assert!(r.leases().is_empty());

    // CNI 1.1.0 results carry the MTU: a DPDK VF reports its PF's (the
    // reference host-local speaks up to 1.0.0, so no IPAM here).
    let v11 = r.conf(&r.dpdk, &json!({"cniVersion": "1.1.0", "ipam": null}));
    let res = r.ok("ADD", Some(&pod), "d0", &v11);
    assert_eq!(res["interfaces"][0]["mtu"], 9000, "the PF's MTU: {res:#}");
    r.ok("DEL", Some(&pod), "d0", &v11);

    // A pod gone without DEL leaves a stale allocation; the next ADD of
    // that VF takes it over.
    let gone = NetNs::with_prefix("sr-gone").unwrap();
    r.ok("ADD", Some(&gone), "d2", &conf);
    drop(gone);
    let next = NetNs::with_prefix("sr-next").unwrap();
    r.ok("ADD", Some(&next), "d3", &conf);
}

/// Pod A's namespace dies without a DEL (node reboot; the cache survives),
/// pod B takes the VF over; A's late DEL (with an empty `CNI_NETNS`, as the
/// kubelet sends it once the sandbox is gone) and a GC that no longer lists
/// a dead pod must leave the VF exactly as its new owner configured it.
#[test]
fn a_late_del_or_gc_of_a_dead_pod_leaves_the_vf_its_new_owner_configured() {
    let r = rig(0);
    let conf = |mac: &str, vlan: u16, trusted: bool| {
        r.conf(
            &r.dpdk,
            &json!({"mac": mac, "vlan": vlan, "trust": if trusted { "on" } else { "off" },
                    "spoofchk": if trusted { "off" } else { "on" }}),
        )
    };
    let (a_conf, b_conf, c_conf) = (
        conf("02:56:00:00:00:0a", 100, true),
        conf("02:56:00:00:00:0b", 200, false),
        conf("02:56:00:00:00:0c", 300, true),
    );
    let a = NetNs::with_prefix("sr-late-a").unwrap();
    r.ok("ADD", Some(&a), "a", &a_conf);
    drop(a);
    let b = NetNs::with_prefix("sr-late-b").unwrap();
    r.ok("ADD", Some(&b), "b", &b_conf);
    let owned_by_b = r.vf_state(10);
    assert_eq!(
        (
            &owned_by_b["vlan"],
            &owned_by_b["mac"],
            &owned_by_b["trust"],
            &owned_by_b["spoofchk"]
        ),
        (
            &json!(200),
            &json!("02:56:00:00:00:0b"),
            &json!(false),
            &json!(true)
        )
    );
    r.ok("DEL", None, "a", &a_conf);
    assert_eq!(r.vf_state(10), owned_by_b, "A's DEL reconfigured B's VF");
    assert_eq!(r.leases().len(), 1, "A's lease goes, B's stays");
    assert!(r.data_files().contains(&format!("pci/{}", r.dpdk)));

    // The same through GC: B dies, C takes the VF, GC lists only C.
    drop(b);
    let c = NetNs::with_prefix("sr-late-c").unwrap();
    r.ok("ADD", Some(&c), "c", &c_conf);
    let owned_by_c = r.vf_state(10);
    assert_eq!(owned_by_c["vlan"], 300);
    let mut gc = r.conf(&r.dpdk, &json!({"cniVersion": "1.1.0", "deviceID": null}));
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c", "ifname": "net1"}]);
    r.ok("GC", None, "", &gc);
    assert_eq!(r.vf_state(10), owned_by_c, "GC reconfigured C's VF");
    assert_eq!(r.leases().len(), 1, "B's lease goes, C's stays");
    r.ok("DEL", Some(&c), "c", &c_conf);
    assert_eq!(r.vf_state(10)["vlan"], 0);
    assert!(r.data_files().is_empty(), "{:?}", r.data_files());
    assert!(r.leases().is_empty());
}

/// A pod with two `sriov` networks: GC runs per network with that
/// network's attachments only, so GC for one must leave the other's VF in
/// the pod.
#[test]
fn gc_of_one_sriov_network_leaves_another_networks_vf_in_the_pod() {
    let r = rig(2);
    let pod = NetNs::with_prefix("sr-two").unwrap();
    let net = |name: &str, i: usize| r.conf(&r.vfs[i].vf_bdf, &json!({"name": name}));
    let ok = |cmd: &str, pod: Option<&NetNs>, ifname: &str, conf: &Value| {
        let out = r.run_as(cmd, pod.map(NetNs::path), "p1", ifname, conf);
        assert!(out.status.success(), "{cmd} {ifname}: {}", describe(&out));
    };
    ok("ADD", Some(&pod), "net1", &net("sriov-a", 0));
    ok("ADD", Some(&pod), "net2", &net("sriov-b", 1));
    let gc = |name: &str, valid: Value| {
        let mut c = r.conf(
            "",
            &json!({"name": name, "cniVersion": "1.1.0", "deviceID": null}),
        );
        c["cni.dev/valid-attachments"] = valid;
        ok("GC", None, "", &c);
    };
    // The runtime's GC for sriov-a lists sriov-a's attachment only.
    gc("sriov-a", json!([{"containerID": "p1", "ifname": "net1"}]));
    assert!(pod.link("net1").is_some());
    assert!(
        pod.link("net2").is_some(),
        "GC for sriov-a took sriov-b's VF"
    );
    // sriov-b's GC without it: that one goes, net1 stays.
    gc("sriov-b", json!([]));
    assert!(pod.link("net2").is_none());
    assert!(r.host.link("ensvf1").is_some());
    assert!(pod.link("net1").is_some());
    ok("DEL", Some(&pod), "net1", &net("sriov-a", 0));
    assert!(r.host.link("ensvf0").is_some());
    assert!(r.data_files().is_empty(), "{:?}", r.data_files());
}

#[test]
fn bad_input_is_a_clear_error_and_changes_nothing() {
    let r = rig(1);
    let vf = r.vfs[0].vf_bdf.clone();
    let pod = NetNs::with_prefix("sr-bad").unwrap();
    let host_before = r.host.link("ensvf0").unwrap();
    let cases: Vec<(&str, Value, u64, &str)> = vec![
        (
            "unknown deviceID",
            r.conf("0000:99:00.0", &json!({})),
            7,
            "no such PCI device",
        ),
        (
            "no deviceID",
            r.conf(&vf, &json!({"deviceID": null})),
            7,
            "resourceName",
        ),
        (
            "not a VF",
            r.conf(DEFAULT_PF_BDF, &json!({})),
            7,
            "not an SR-IOV VF",
        ),
        (
            "unknown driver",
            r.conf(&r.odd, &json!({})),
            7,
            "mystery_vf",
        ),
        (
            "vlan 5000",
            r.conf(&vf, &json!({"vlan": 5000})),
            7,
            "vlan 5000 is out of range 0-4094",
        ),
        (
            "qos without vlan",
            r.conf(&vf, &json!({"vlanQoS": 3})),
            7,
            "need vlan",
        ),
        (
            "min above max",
            r.conf(&vf, &json!({"min_tx_rate": 9, "max_tx_rate": 1})),
            7,
            "min_tx_rate 9",
        ),
        (
            "bad trust",
            r.conf(&vf, &json!({"trust": "maybe"})),
            7,
            "trust",
        ),
        // What the X710's i40e refuses, in its words.
        (
            "a min rate on i40e",
            r.conf(&vf, &json!({"min_tx_rate": 10, "max_tx_rate": 100})),
            5,
            "Invalid min tx rate (10) (greater than 0) specified for VF 0",
        ),
        (
            "802.1ad on i40e",
            r.conf(&vf, &json!({"vlan": 10, "vlanProto": "802.1ad"})),
            5,
            "VF VLAN protocol is not supported",
        ),
    ];
    for (what, conf, code, msg) in cases {
        let out = r.run("ADD", Some(&pod), "bad", &conf);
        let (c, m) = cni_error(&out);
        assert_eq!(c, code, "{what}: {m}");
        assert!(m.contains(msg), "{what}: {m:?} does not say {msg:?}");
        r.assert_untouched(what, &host_before);
    }

    // A VF another live pod has.
    let owner = NetNs::with_prefix("sr-owner").unwrap();
    let conf = r.conf(&vf, &json!({"vlan": 12}));
    r.ok("ADD", Some(&owner), "owner", &conf);
    // As the kernel's sysfs shows it from the host (and the emulated PF
    // keeps its fake tree the same): a netdev in another namespace is not
    // listed under the VF.
    assert!(!r.sysfs.device_dir(&vf).join("net/ensvf0").exists());
    let pf_then = r.vf_state(0);
    let out = r.run(
        "ADD",
        Some(&pod),
        "thief",
        &r.conf(&vf, &json!({"vlan": 99})),
    );
    let (c, m) = cni_error(&out);
    assert_eq!(c, 11, "{m}");
    assert!(m.contains("in use by container owner"), "{m}");
    assert_eq!(r.vf_state(0), pf_then, "the PF changed for the owner");
    assert!(owner.link("net1").is_some(), "the owner lost its VF");
    assert_eq!(r.leases().len(), 1);
    r.ok("DEL", Some(&owner), "owner", &conf);
}

#[test]
fn del_cleans_up_after_the_pod_netns_is_gone() {
    let r = rig(1);
    let conf = r.conf(&r.vfs[0].vf_bdf, &json!({"vlan": 33, "trust": "on"}));
    let pod = NetNs::with_prefix("sr-gone").unwrap();
    let path = pod.path().to_owned();
    r.ok("ADD", Some(&pod), "c1", &conf);
    assert_eq!(r.vf_state(0)["vlan"], 33);
    drop(pod);
    // The runtime still passes the (now dangling) path.
    let out = r.run_as("DEL", Some(&path), "c1", "net1", &conf);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(r.vf_state(0)["vlan"], 0);
    assert_eq!(r.vf_state(0)["trust"], false);
    assert!(r.data_files().is_empty(), "{:?}", r.data_files());
    assert!(r.leases().is_empty());
}

#[test]
fn check_status_and_gc() {
    let r = rig(2);
    let pod = NetNs::with_prefix("sr-chk").unwrap();
    let conf = r.conf(&r.vfs[0].vf_bdf, &json!({"mac": "02:56:00:00:00:07"}));
    let res = r.ok("ADD", Some(&pod), "c1", &conf);
    // The host's sysfs no longer lists the netdev: it is in the pod.
    assert!(
        !r.sysfs
            .device_dir(&r.vfs[0].vf_bdf)
            .join("net/ensvf0")
            .exists()
    );
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = res.clone();
    r.ok("CHECK", Some(&pod), "c1", &with_prev);

    // Someone took the address away: CHECK says so.
    pod.sh("ip", &["addr", "del", "10.56.0.10/24", "dev", "net1"]);
    let (code, msg) = cni_error(&r.run("CHECK", Some(&pod), "c1", &with_prev));
    assert_eq!(code, 3, "{msg}");
    assert!(msg.contains("10.56.0.10/24"), "{msg}");
    // A CHECK for an attachment that does not exist.
    let (code, _) = cni_error(&r.run("CHECK", Some(&pod), "nope", &with_prev));
    assert_eq!(code, 3);

    // STATUS (CNI 1.1.0): a free VF is ready; one in use is not.
    let v11 = |device: Option<&str>| {
        r.conf(
            device.unwrap_or_default(),
            &json!({"cniVersion": "1.1.0", "deviceID": device}),
        )
    };
    r.ok("STATUS", None, "", &v11(Some(&r.vfs[1].vf_bdf)));
    let (code, msg) = cni_error(&r.run("STATUS", None, "", &v11(Some(&r.vfs[0].vf_bdf))));
    assert_eq!(code, 50, "{msg}");
    assert!(msg.contains("in use"), "{msg}");
    r.ok("STATUS", None, "", &v11(None));

    // GC with nothing valid releases the attachment: the VF is back.
    let mut gc = v11(None);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "other", "ifname": "net1"}]);
    r.ok("GC", None, "", &gc);
    assert!(r.host.link("ensvf0").is_some(), "GC did not return the VF");
    assert!(pod.link("net1").is_none());
    assert_eq!(r.vf_state(0)["mac"], "00:00:00:00:00:00");
    assert!(r.data_files().is_empty(), "{:?}", r.data_files());
    assert!(r.leases().is_empty());
    // Which the wire namespace still bridges.
    assert!(r.wire.link("rep0").is_some());
}

#[test]
fn del_of_an_attachment_upstream_sriov_cni_cached_does_not_get_stuck() {
    // Upstream keeps its cache (its NetConf with OrigVfState) at the same
    // path; after a binary swap the pod's DEL must still succeed.
    let r = rig(1);
    let conf = r.conf(&r.vfs[0].vf_bdf, &json!({}));
    let pod = NetNs::with_prefix("sr-upstr").unwrap();
    std::fs::create_dir_all(r.data()).unwrap();
    let upstream = json!({"cniVersion": "0.3.1", "name": "sriov-net", "type": "sriov",
        "deviceID": r.vfs[0].vf_bdf, "ContIFNames": "net1",
        "OrigVfState": {"HostIFName": "ensvf0", "SpoofChk": true, "Trust": false,
                        "AdminMAC": "", "EffectiveMAC": r.vfs[0].vf_mac, "Vlan": 0}});
    std::fs::write(r.data().join("up1-net1"), upstream.to_string()).unwrap();
    for _ in 0..2 {
        let out = r.run("DEL", Some(&pod), "up1", &conf);
        assert!(out.status.success(), "{}", describe(&out));
    }
}

/// Sets how many more admin-MAC writes the emulated PF refuses for VF
/// `i`, as i40e does while a VF is still resetting.
fn refuse_mac(r: &Rig, i: u32, n: u32) {
    let text = std::fs::read_to_string(&r.state).unwrap();
    let mut all: Value = if text.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(&text).unwrap()
    };
    let mut st = all
        .get(i.to_string())
        .cloned()
        .unwrap_or_else(|| serde_json::from_str::<Value>(DEFAULTS).unwrap());
    st["refuseMac"] = json!(n);
    all[i.to_string()] = st;
    std::fs::write(&r.state, all.to_string()).unwrap();
}

/// The X710's i40e polices an untrusted VF's MAC: once the PF set one, the
/// VF's netdev may not take another. DEL must therefore reset the admin
/// MAC before it gives the netdev its old MAC back, and both MAC writes
/// must ride out a VF that refuses them for a while after a reset.
#[test]
fn del_of_an_untrusted_intel_vf_with_a_mac_resets_the_pf_side_first_and_retries() {
    let r = rig(1);
    let vf = &r.vfs[0];
    let pod = NetNs::with_prefix("sr-i40e").unwrap();
    let before = r.host.link("ensvf0").unwrap();
    let conf = r.conf(&vf.vf_bdf, &json!({"mac": "02:56:00:00:00:05"}));

    // ADD through two refusals of the admin MAC.
    refuse_mac(&r, 0, 2);
    let res = r.ok("ADD", Some(&pod), "c1", &conf);
    assert_eq!(res["interfaces"][0]["mac"], "02:56:00:00:00:05");
    assert_eq!(pod.link("net1").unwrap()["address"], "02:56:00:00:00:05");
    assert_eq!(r.vf_state(0)["mac"], "02:56:00:00:00:05");
    assert_eq!(r.vf_state(0)["trust"], false);
    assert!(r.vf_state(0).get("refuseMac").is_none());

    // The emulated PF refuses what i40e refuses: this VF's netdev may not
    // take the host's MAC back while the admin MAC is set.
    let mut ops = plexus_sriov_device_plugin::cni::pf::EmulatedPf::new(r.state.clone());
    let host_mac: plexus_netlink::MacAddr = before["address"].as_str().unwrap().parse().unwrap();
    let e = plexus_sriov_device_plugin::cni::pf::PfOps::netdev_mac_allowed(&mut ops, 0, host_mac)
        .unwrap_err();
    assert!(e.contains("override administratively set MAC"), "{e}");

    // DEL, the first time, through two more refusals.
    refuse_mac(&r, 0, 2);
    r.ok("DEL", Some(&pod), "c1", &conf);
    let after = r.host.link("ensvf0").expect("the VF is back on the host");
    assert_eq!(after["address"], before["address"]);
    assert_eq!(
        r.vf_state(0),
        serde_json::from_str::<Value>(DEFAULTS).unwrap()
    );
    assert!(r.data_files().is_empty(), "{:?}", r.data_files());
    assert!(r.leases().is_empty(), "{:?}", r.leases());

    // A VF that never comes out of reset: ADD gives up after 20 tries
    // (100 ms apart) with the driver's words, and leaves nothing.
    refuse_mac(&r, 0, 25);
    let out = r.run("ADD", Some(&pod), "c2", &conf);
    let (code, msg) = cni_error(&out);
    assert_eq!(code, 5, "{msg}");
    assert!(
        msg.contains("after 20 tries") && msg.contains("still in reset"),
        "{msg}"
    );
    assert!(pod.link("net1").is_none());
    assert_eq!(r.host.link("ensvf0").unwrap()["address"], before["address"]);
    assert!(r.data_files().is_empty(), "{:?}", r.data_files());
    assert!(r.leases().is_empty(), "{:?}", r.leases());
}

/// The wire's neighbour entry for `ip` (`ip neigh show`), if any.
fn wire_neigh(r: &Rig, ip: &str) -> String {
    r.wire.sh("ip", &["neigh", "show", ip, "dev", "sw0"])
}

/// An address IPAM hands out may have been another pod's a moment ago:
/// the wire still maps it to that pod's MAC. ADD announces the new owner
/// (gratuitous ARP, unsolicited NA), so the wire's entries follow at once,
/// and turns on arp_notify/ndisc_notify for later changes.
#[test]
fn add_announces_the_pods_addresses_so_neighbours_drop_a_stale_mac() {
    let r = rig(1);
    let pod = NetNs::with_prefix("sr-garp").unwrap();
    let old = "02:de:ad:00:00:01";
    for (ip, fam) in [("10.56.0.10", "-4"), ("fd00:56::a", "-6")] {
        r.wire.sh(
            "ip",
            &[
                fam, "neigh", "add", ip, "lladdr", old, "dev", "sw0", "nud", "stale",
            ],
        );
        assert!(wire_neigh(&r, ip).contains(old));
    }
    let conf = r.conf(
        &r.vfs[0].vf_bdf,
        &json!({"mac": "02:56:00:00:00:0b", "trust": "on",
                "ipam": {"type": "host-local", "dataDir": r.ipam_dir(), "ranges": [
                    [{"subnet": "10.56.0.0/24", "rangeStart": "10.56.0.10"}],
                    [{"subnet": "fd00:56::/64", "rangeStart": "fd00:56::a"}]]}}),
    );
    let res = r.ok("ADD", Some(&pod), "c1", &conf);
    let ips: Vec<&str> = res["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["10.56.0.10/24", "fd00:56::a/64"]);
    // IPv4 at once; IPv6 once the address has passed duplicate address
    // detection (about a second), when the kernel announces it.
    for ip in ["10.56.0.10", "fd00:56::a"] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !wire_neigh(&r, ip).contains("02:56:00:00:00:0b") {
            assert!(
                std::time::Instant::now() < deadline,
                "the wire still maps {ip} to the old MAC: {}",
                wire_neigh(&r, ip)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    for key in [
        "net.ipv4.conf.net1.arp_notify",
        "net.ipv6.conf.net1.ndisc_notify",
    ] {
        assert_eq!(pod.sh("sysctl", &["-n", key]).trim(), "1", "{key}");
    }
    r.ok("DEL", Some(&pod), "c1", &conf);
    assert!(r.leases().is_empty(), "{:?}", r.leases());
}

/// The pod's netns died without a DEL, and the kernel pushed the VF back
/// to the host as real VFs come back: later, as `dev<ifindex>` (its pod
/// name was taken on the host), with the pod's MAC and MTU. DEL, with the
/// dead path, finds it through sysfs and puts back its name, MAC and MTU.
#[test]
fn del_after_the_netns_died_renames_a_vf_that_came_back_as_dev_n() {
    let r = rig(1);
    let vf = &r.vfs[0];
    let before = r.host.link("ensvf0").unwrap();
    let pod = NetNs::with_prefix("sr-devn").unwrap();
    let path = pod.path().to_owned();
    let conf = r.conf(
        &vf.vf_bdf,
        &json!({"mac": "02:56:00:00:00:0c", "trust": "on"}),
    );
    r.ok("ADD", Some(&pod), "c1", &conf);
    pod.sh("ip", &["link", "set", "net1", "mtu", "1400"]);
    drop(pod);
    // Some other pod's VF, back first, holds `net1` on the host.
    r.host.sh(
        "ip",
        &[
            "link", "add", "net1", "type", "veth", "peer", "name", "net1p",
        ],
    );
    let other = r.host.link("net1").unwrap();
    let index = vf
        .come_back_as(
            &r.host,
            &r.wire,
            &r.sysfs,
            ("dev77", "02:56:00:00:00:0c", 1400),
        )
        .unwrap();

    let out = r.run_as("DEL", Some(&path), "c1", "net1", &conf);
    assert!(out.status.success(), "{}", describe(&out));
    let back = r
        .host
        .link("ensvf0")
        .expect("the VF under its host name again");
    assert_eq!(back["ifindex"], index);
    assert_eq!(back["address"], before["address"]);
    assert_eq!(back["mtu"], before["mtu"]);
    assert!(r.host.link("dev77").is_none());
    assert_eq!(
        r.host.link("net1").as_ref(),
        Some(&other),
        "the other pod's net1 was not left alone"
    );
    assert!(r.data_files().is_empty(), "{:?}", r.data_files());
    assert!(r.leases().is_empty(), "{:?}", r.leases());
}

/// A ConnectX-5 whose eswitch is in switchdev mode (its netdev is the
/// uplink representor `p0`), as mlx5 answers: the legacy VF settings, a
/// VLAN other than 0, spoof checking, trust and link state, are refused
/// with EOPNOTSUPP, and the error says what to do instead; the refused ADD
/// leaves VF and PF as they were. The MAC, the rate and VLAN 0 are taken,
/// and DEL puts them back.
#[test]
fn mlx5_in_switchdev_mode_refuses_the_legacy_vf_settings_and_changes_nothing() {
    let r = rig_of(
        1,
        PfSpec {
            total_vfs: 16,
            ..PfSpec::connectx5()
        },
        &VfSpec::connectx5(),
    );
    let vf = r.vfs[0].vf_bdf.clone();
    let pod = NetNs::with_prefix("sr-mlx5").unwrap();
    let host_before = r.host.link("ensvf0").unwrap();
    for (what, extra) in [
        ("vlan", json!({"vlan": 10})),
        (
            "spoofchk",
            json!({"mac": "02:00:00:00:07:01", "spoofchk": "off"}),
        ),
        ("trust", json!({"trust": "on"})),
        ("link_state", json!({"link_state": "enable"})),
    ] {
        let out = r.run("ADD", Some(&pod), "refused", &r.conf(&vf, &extra));
        let (c, m) = cni_error(&out);
        assert_eq!(c, 5, "{what}: {m}");
        assert!(m.contains("(EOPNOTSUPP)"), "{what}: {m}");
        assert!(m.contains("switchdev mode"), "{what}: {m}");
        r.assert_untouched(what, &host_before);
    }

    let conf = r.conf(
        &vf,
        &json!({"mac": "02:00:00:00:07:02", "vlan": 0, "max_tx_rate": 100}),
    );
    r.ok("ADD", Some(&pod), "taken", &conf);
    let st = r.vf_state(0);
    assert_eq!(
        (st["mac"].as_str(), st["maxTxRate"].as_u64()),
        (Some("02:00:00:00:07:02"), Some(100)),
        "{st}"
    );
    assert!(pod.link("net1").is_some());
    r.ok("DEL", Some(&pod), "taken", &conf);
    assert_eq!(
        r.vf_state(0),
        serde_json::from_str::<Value>(DEFAULTS).unwrap()
    );
    assert!(r.leases().is_empty());
    assert!(r.data_files().is_empty(), "{:?}", r.data_files());
}

/// The PF's link is down (cable out, switch port down). The PF still takes
/// VF settings, and a VF in link-state `auto` follows the PF, so it has no
/// carrier: the emulation says so in the PF's sysfs `operstate` and takes
/// the carrier from the VF's wire side. ADD does not wait for carrier:
/// the pod gets its VF with MAC and address, up and NO-CARRIER, at once.
/// Traffic flows once the link is back, and DEL puts everything back.
#[test]
fn a_vf_of_a_pf_whose_link_is_down_is_attached_without_carrier_and_works_once_it_is_up() {
    let r = rig(1);
    let vf = &r.vfs[0];
    r.sysfs
        .corrupt(DEFAULT_PF_BDF, "net/ens1f0/operstate", "down\n");
    r.wire.sh("ip", &["link", "set", "rep0", "down"]);
    let pod = NetNs::with_prefix("sr-pfdown").unwrap();
    let conf = r.conf(&vf.vf_bdf, &json!({"mac": "02:56:00:00:00:09"}));
    let started = std::time::Instant::now();
    let res = r.ok("ADD", Some(&pod), "down", &conf);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "ADD waited {:?} for a link that is down",
        started.elapsed()
    );
    assert_eq!(res["ips"][0]["address"], "10.56.0.10/24", "{res:#}");
    let inside = pod.link("net1").expect("net1 in the pod");
    let flags = inside["flags"].as_array().unwrap();
    assert!(
        flags.contains(&json!("UP")) && flags.contains(&json!("NO-CARRIER")),
        "{inside:#}"
    );
    assert_eq!(inside["address"], "02:56:00:00:00:09");
    assert!(pod.addrs("net1").contains(&"10.56.0.10/24".to_owned()));
    assert!(
        !ping(&pod, "10.56.0.254"),
        "a ping over a VF without carrier"
    );

    r.wire.sh("ip", &["link", "set", "rep0", "up"]);
    r.sysfs
        .corrupt(DEFAULT_PF_BDF, "net/ens1f0/operstate", "up\n");
    assert!(ping(&pod, "10.56.0.254"), "no ping once the link is up");

    r.ok("DEL", Some(&pod), "down", &conf);
    assert!(r.host.link("ensvf0").is_some(), "the VF is not back");
    assert_eq!(
        r.vf_state(0),
        serde_json::from_str::<Value>(DEFAULTS).unwrap()
    );
    assert!(r.data_files().is_empty(), "{:?}", r.data_files());
    assert!(r.leases().is_empty());
}
