//! `sriov-device-plugin discover` as an operator runs it: a fake sysfs
//! tree (the hardware boundary: no SR-IOV NIC here) and the real netlink
//! of a throwaway "host" namespace, where one NIC carries the default
//! route.

use std::fs;

use plexus_e2e::bin;
use plexus_testkit::sysfs::{PfSpec, VfSpec};
use plexus_testkit::{FakeSysfs, NetNs};
use serde_json::{Value, json};

#[test]
fn discover_explains_every_device() {
    let host = NetNs::with_prefix("dp-host").unwrap();
    // The node's uplink, as netlink sees it: a link named like the NIC in
    // the fake tree, holding the default route.
    host.sh(
        "ip",
        &[
            "link", "add", "eno1", "type", "veth", "peer", "name", "eno1p",
        ],
    );
    host.sh("ip", &["addr", "add", "192.0.2.10/24", "dev", "eno1"]);
    host.sh("ip", &["link", "set", "eno1", "up"]);
    host.sh("ip", &["link", "set", "eno1p", "up"]);
    host.sh(
        "ip",
        &["route", "add", "default", "via", "192.0.2.1", "dev", "eno1"],
    );

    let fake = FakeSysfs::new();
    fake.x710();
    fake.pf(PfSpec {
        bdf: "0000:5e:00.0".into(),
        ifname: Some("eno1".into()),
        total_vfs: 0,
        ..PfSpec::default()
    });
    fake.pf(PfSpec {
        bdf: "0000:af:00.0".into(),
        ifname: Some("ens2f0".into()),
        total_vfs: 8,
        ..PfSpec::default()
    });
    let broken = fake.vf("0000:af:00.0", 0, VfSpec::default());
    fake.corrupt(&broken.bdf, "modalias", "");
    fake.remove_attr(&broken.bdf, "device");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    fs::write(
        &cfg,
        json!({"resourceList": [
            {"resourceName": "x710_net", "selectors": {"drivers": ["iavf"], "pfNames": ["ens1f0#1-2"]}},
            {"resourceName": "any_nic", "resourcePrefix": "example.com",
             "selectors": {"vendors": ["8086"], "devices": ["1572"]}},
            {"resourceName": "broken", "selectors": {"rootDevices": ["0000:3b:00.0#5-1"]}}
        ]})
        .to_string(),
    )
    .unwrap();
    let run = |json: bool| plexus_e2e::discover(&host, &[], &cfg, fake.root(), json);

    let text = run(false);
    for want in [
        "config: pool \"broken\" selector 0: rootDevices: \"0000:3b:00.0#5-1\": range \"5-1\" runs backwards",
        "0000:3b:02.1 8086:154c VF 1 of ens1f0 driver=iavf netdev=ens1f0v1",
        "    -> intel.com/x710_net",
        "0000:3b:02.3 8086:154c VF 3 of ens1f0",
        "    not intel.com/x710_net: pfNames: VF index 3 is not in [ens1f0#1-2]",
        "    not example.com/any_nic: devices: device ID 154c is not in [1572]",
        "0000:3b:00.0 8086:1572 PF (4 of 64 VFs)",
        "    not intel.com/x710_net: a PF with 4 VFs configured",
        "    not example.com/any_nic: its netdev eno1 carries a default route",
        "0000:af:00.0 8086:1572 PF (1 of 8 VFs)",
        "unreadable: PCI device 0000:af:02.0: unreadable IDs",
        "Intel Corporation",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // any_nic matches two PFs and takes neither: eno1 carries the default
    // route and ens2f0 has a VF configured. Saying so is the point.
    assert!(
        text.contains("pool example.com/any_nic: no devices; it is not served"),
        "{text}"
    );

    let v: Value = serde_json::from_str(&run(true)).unwrap();
    let pooled: Vec<&str> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["verdict"]["state"] == "pooled")
        .map(|d| d["address"].as_str().unwrap())
        .collect();
    assert_eq!(pooled, ["0000:3b:02.1", "0000:3b:02.2"]);
    assert_eq!(v["configErrors"].as_array().unwrap().len(), 1);
}

#[test]
fn upstream_daemonset_arguments_are_accepted_and_cdi_is_refused_clearly() {
    // Upstream's DaemonSet: --log-dir=sriovdp --log-level=10.
    let fake = FakeSysfs::new();
    fake.x710();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    fs::write(&cfg, r#"{"resourceList": []}"#).unwrap();
    let host = NetNs::with_prefix("dp-upstr").unwrap();
    let text = plexus_e2e::discover(
        &host,
        &["--log-dir=sriovdp", "--log-level=10"],
        &cfg,
        fake.root(),
        false,
    );
    assert!(text.contains("0000:3b:02.1"), "{text}");

    let out = std::process::Command::new(bin("sriov-device-plugin"))
        .args(["--use-cdi", "--config-file"])
        .arg(&cfg)
        .arg("--device-plugin-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--use-cdi: CDI mode is not supported yet"),
        "{err}"
    );
}
