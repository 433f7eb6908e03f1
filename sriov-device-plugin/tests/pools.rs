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

#[test]
fn subfunctions_go_to_aux_pools_by_sf_number_and_nowhere_else() {
    let fake = FakeSysfs::new();
    // A BlueField-style PF with SFs 1, 2 and 9, an RDMA device on SF 2;
    // the PF has no VFs and no default route, so a netDevice pool could
    // take the PF itself, never its SFs.
    fake.pf(PfSpec {
        total_vfs: 0,
        ..PfSpec::connectx5()
    });
    fake.sf(DEFAULT_PF_BDF, 4, 1, Some("enp59s0f0s1"), false);
    fake.sf(DEFAULT_PF_BDF, 5, 2, Some("enp59s0f0s2"), true);
    fake.sf(DEFAULT_PF_BDF, 6, 9, Some("enp59s0f0s9"), false);
    let cfg = config::parse(
        &json!({"resourceList": [
            {"resourceName": "sf_rdma", "deviceType": "auxNetDevice",
                "selectors": {"auxTypes": ["sf"], "isRdma": true}},
            {"resourceName": "sf_low", "deviceType": "auxNetDevice",
                "selectors": {"auxTypes": ["sf"], "vendors": ["15b3"], "drivers": ["mlx5_core"],
                    "pfNames": ["enp59s0f0np0#0-4"], "linkTypes": ["ether"]}},
            {"resourceName": "mlx_net", "selectors": {"vendors": ["15b3"]}}
        ]})
        .to_string(),
        DEFAULT_RESOURCE_PREFIX,
    );
    assert!(cfg.errors.is_empty(), "{:?}", cfg.errors);
    let (pools, report) = pools::build(
        &cfg,
        &Sysfs::new(fake.root()).scan().unwrap(),
        &HashSet::new(),
    );
    assert_eq!(addresses(&pools[0]), ["mlx5_core.sf.5"]);
    assert!(pools[0].devices[0].is_rdma);
    assert_eq!(addresses(&pools[1]), ["mlx5_core.sf.4"]);
    assert_eq!(addresses(&pools[2]), [DEFAULT_PF_BDF]);

    let sf9 = reasons(&report, "mlx5_core.sf.6");
    assert_eq!(sf9[0].1, "isRdma: it has no RDMA device");
    assert_eq!(
        sf9[1].1,
        "pfNames: SF number 9 is not in [enp59s0f0np0#0-4]"
    );
    assert_eq!(
        sf9[2].1,
        "an auxiliary device (sf): only auxNetDevice pools take those"
    );
    let pf = reasons_or_pool(&report, DEFAULT_PF_BDF);
    assert_eq!(pf, "intel.com/mlx_net");
    let text = report.to_string();
    assert!(
        text.contains(
            "mlx5_core.sf.6 15b3:1017 SF 9 of enp59s0f0np0 driver=mlx5_core netdev=enp59s0f0s9"
        ),
        "{text}"
    );
    assert!(text.contains("    -> intel.com/sf_low"), "{text}");
}

fn reasons_or_pool(report: &pools::Report, address: &str) -> String {
    let e = report
        .devices
        .iter()
        .find(|e| e.address == address)
        .unwrap();
    match &e.verdict {
        Verdict::Pooled { resource } => resource.clone(),
        v => format!("{v:?}"),
    }
}

#[test]
fn without_an_aux_pool_subfunctions_stay_out_of_the_report() {
    let fake = FakeSysfs::new();
    fake.x710();
    fake.pf(PfSpec {
        bdf: "0000:5e:00.0".into(),
        total_vfs: 0,
        ..PfSpec::connectx5()
    });
    fake.sf("0000:5e:00.0", 1, 1, Some("enp94s0f0s1"), false);
    let scan = Sysfs::new(fake.root()).scan().unwrap();
    assert!(scan.devices.iter().any(|d| d.address == "mlx5_core.sf.1"));
    let (_, report) = pools::build(&x710_config(), &scan, &HashSet::new());
    assert!(
        report.devices.iter().all(|e| e.address != "mlx5_core.sf.1"),
        "{report}"
    );
    assert!(report.devices.iter().any(|e| e.address == "0000:5e:00.0"));
}
