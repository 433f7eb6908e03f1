//! Pools from fixture trees (no hardware here: fake sysfs, see the testkit),
//! and the reasons given for every device left out.

use std::collections::HashSet;

use plexus_sriov_device_plugin::config::{self, DEFAULT_RESOURCE_PREFIX};
use plexus_sriov_device_plugin::pools::{self, Verdict};
use plexus_sysfs::Sysfs;
use plexus_testkit::FakeSysfs;
use plexus_testkit::sysfs::{DEFAULT_PF_BDF, PfSpec, VfSpec};
use serde_json::json;

/// The reference config for the X710 tree.
fn x710_config() -> config::Config {
    config::parse(
        &json!({"resourceList": [
            {"resourceName": "x710_net", "selectors": [{"vendors": ["8086"], "devices": ["154c"],
                "drivers": ["iavf"], "pfNames": ["ens1f0#1-3"]}]},
            {"resourceName": "x710_dpdk", "selectors": [{"drivers": ["vfio-pci"],
                "rootDevices": ["0000:3b:00.0#0"]}]}
        ]})
        .to_string(),
        DEFAULT_RESOURCE_PREFIX,
    )
}

fn addresses(p: &pools::Pool) -> Vec<&str> {
    p.devices.iter().map(|d| d.dev.address.as_str()).collect()
}

fn reasons<'a>(report: &'a pools::Report, address: &str) -> &'a [(String, String)] {
    let e = report
        .devices
        .iter()
        .find(|e| e.address == address)
        .unwrap();
    match &e.verdict {
        Verdict::Rejected { reasons } => reasons,
        v => panic!("{address}: {v:?}"),
    }
}

#[test]
fn x710_reference_pools() {
    let fake = FakeSysfs::new();
    fake.x710();
    let scan = Sysfs::new(fake.root()).scan().unwrap();
    let (pools, report) = pools::build(&x710_config(), &scan, &HashSet::new());
    assert_eq!(pools[0].config.resource(), "intel.com/x710_net");
    assert_eq!(
        addresses(&pools[0]),
        ["0000:3b:02.1", "0000:3b:02.2", "0000:3b:02.3"]
    );
    assert_eq!(pools[1].config.resource(), "intel.com/x710_dpdk");
    assert_eq!(addresses(&pools[1]), ["0000:3b:02.0"]);
    let pf = reasons(&report, DEFAULT_PF_BDF);
    assert_eq!(pf.len(), 2);
    assert!(pf[0].1.contains("a PF with 4 VFs configured"), "{pf:?}");
    let text = report.to_string();
    assert!(
        text.contains("0000:3b:02.0 8086:154c VF 0 of ens1f0 driver=vfio-pci numa=0"),
        "{text}"
    );
    assert!(text.contains("    -> intel.com/x710_dpdk"), "{text}");
}

#[test]
fn reasons_name_the_rule_and_default_routes_are_left_alone() {
    let fake = FakeSysfs::new();
    fake.x710();
    // A plain NIC carrying the host's default route, and one that does not.
    for (bdf, ifname) in [("0000:5e:00.0", "eno1"), ("0000:5e:00.1", "eno2")] {
        fake.pf(PfSpec {
            bdf: bdf.into(),
            ifname: Some(ifname.into()),
            total_vfs: 0,
            ..PfSpec::default()
        });
    }
    let cfg = config::parse(
        &json!({"resourceList": [
            {"resourceName": "vf_1_2", "selectors": {"drivers": ["iavf"], "pfNames": ["ENS1F0#1-2"]}},
            {"resourceName": "plain", "selectors": {"devices": ["1572"]}},
            {"resourceName": "mlx", "selectors": [{"vendors": ["15b3"]}, {"drivers": ["mlx5_core"]}]}
        ]})
        .to_string(),
        DEFAULT_RESOURCE_PREFIX,
    );
    let routes: HashSet<String> = ["eno1".to_owned()].into();
    let (pools, report) = pools::build(&cfg, &Sysfs::new(fake.root()).scan().unwrap(), &routes);
    // pfNames' PF part matches case-insensitively, as upstream.
    assert_eq!(addresses(&pools[0]), ["0000:3b:02.1", "0000:3b:02.2"]);
    assert_eq!(addresses(&pools[1]), ["0000:5e:00.1"]);
    assert!(pools[2].devices.is_empty());
    assert_eq!(report.empty_pools, ["intel.com/mlx"]);

    let vf3 = reasons(&report, "0000:3b:02.3");
    assert_eq!(vf3[0].1, "pfNames: VF index 3 is not in [ENS1F0#1-2]");
    assert_eq!(vf3[1].1, "devices: device ID 154c is not in [1572]");
    assert_eq!(
        vf3[2].1,
        "selector 0: vendors: vendor 8086 is not in [15b3]"
    );
    let vf0 = reasons(&report, "0000:3b:02.0");
    assert_eq!(vf0[0].1, "drivers: driver vfio-pci is not in [iavf]");
    let eno1 = reasons(&report, "0000:5e:00.0");
    assert!(
        eno1[1].1.contains("eno1 carries a default route"),
        "{eno1:?}"
    );
}

#[test]
fn a_corrupt_device_is_reported_and_the_rest_pooled() {
    let fake = FakeSysfs::new();
    fake.x710();
    fake.pf(PfSpec {
        bdf: "0000:af:00.0".into(),
        ifname: None,
        total_vfs: 8,
        numa_node: 1,
        ..PfSpec::default()
    });
    let vf = fake.vf("0000:af:00.0", 0, VfSpec::default());
    fake.corrupt(&vf.bdf, "modalias", "junk");
    fake.remove_attr(&vf.bdf, "class");
    let (pools, report) = pools::build(
        &x710_config(),
        &Sysfs::new(fake.root()).scan().unwrap(),
        &HashSet::new(),
    );
    assert_eq!(pools[0].devices.len(), 3);
    let e = report.devices.iter().find(|e| e.address == vf.bdf).unwrap();
    assert!(
        matches!(&e.verdict, Verdict::Unreadable { error } if error.contains("unreadable IDs"))
    );
}
