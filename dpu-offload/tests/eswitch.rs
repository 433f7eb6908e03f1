//! Representor discovery against fake sysfs trees: a ConnectX-style
//! SmartNIC host in switchdev mode, and a BlueField DPU's Arm side.

use std::collections::HashMap;

use plexus_dpu_offload::{
    eswitch::{self, Features, Flavour},
    flower::PortMap,
};
use plexus_sysfs::Sysfs;
use plexus_testkit::{
    FakeSysfs, PfSpec, RepresentorSpec, VfSpec,
    sysfs::{DEFAULT_PF_BDF, DEFAULT_SWITCH_ID},
};

struct FakeFeatures(HashMap<&'static str, bool>);

impl Features for FakeFeatures {
    fn hw_tc_offload(&self, netdev: &str) -> Option<bool> {
        self.0.get(netdev).copied()
    }
}

fn rep(ifname: &str, port_name: &str, switch: &str) -> RepresentorSpec {
    RepresentorSpec {
        ifname: ifname.into(),
        phys_port_name: port_name.into(),
        phys_switch_id: switch.into(),
        mac: None,
    }
}

#[test]
fn connectx_host_in_switchdev_mode() {
    let fake = FakeSysfs::new();
    fake.pf(PfSpec::connectx5()); // uplink enp59s0f0np0, phys_port_name p0
    let mut vfs = Vec::new();
    for i in 0..3 {
        vfs.push(fake.vf(
            DEFAULT_PF_BDF,
            i,
            VfSpec {
                ifname: Some(format!("enp59s0f0v{i}")),
                ..VfSpec::connectx5()
            },
        ));
        fake.switchdev_representor(
            DEFAULT_PF_BDF,
            RepresentorSpec::vf(&format!("enp59s0f0npf0vf{i}"), 0, i),
        );
    }
    // A legacy-mode NIC beside it has no phys_switch_id: not an eSwitch.
    fake.pf(PfSpec {
        bdf: "0000:5e:00.0".into(),
        ifname: Some("ens2f0".into()),
        ..PfSpec::default()
    });
    let sys = Sysfs::new(fake.root());
    let features = FakeFeatures(HashMap::from([
        ("enp59s0f0np0", true),
        ("enp59s0f0npf0vf1", false),
    ]));
    let switches = eswitch::discover(&sys, &features);
    assert_eq!(switches.len(), 1, "{switches:#?}");
    let sw = &switches[0];
    assert_eq!(sw.switch_id, DEFAULT_SWITCH_ID);
    let names: Vec<&str> = sw.ports.iter().map(|r| r.netdev.as_str()).collect();
    assert_eq!(
        names,
        [
            "enp59s0f0np0",
            "enp59s0f0npf0vf0",
            "enp59s0f0npf0vf1",
            "enp59s0f0npf0vf2"
        ]
    );
    let uplink = sw.uplinks().next().unwrap();
    assert_eq!(uplink.flavour, Flavour::Uplink { port: 0 });
    assert_eq!(
        (uplink.aliases.as_slice(), uplink.pci.as_deref()),
        (&["p0".to_string()][..], Some(DEFAULT_PF_BDF))
    );
    assert_eq!(uplink.hw_tc_offload, Some(true));
    let r1 = sw.vf(0, 1).unwrap();
    assert_eq!(
        (r1.netdev.as_str(), r1.aliases.as_slice()),
        ("enp59s0f0npf0vf1", &["pf0vf1".to_string()][..])
    );
    assert_eq!(r1.hw_tc_offload, Some(false));
    assert_eq!(sw.vf(0, 2).unwrap().hw_tc_offload, None);

    // A pod's VF (by PCI address, as the device plugin hands it out) to
    // the representor the agent must wire.
    for (i, vf) in vfs.iter().enumerate() {
        assert_eq!(
            eswitch::vf_representor(&sys, &vf.bdf),
            Some(format!("enp59s0f0npf0vf{i}"))
        );
    }
    assert_eq!(
        eswitch::vf_representor(&sys, DEFAULT_PF_BDF),
        None,
        "a PF has no VF representor"
    );

    // Flows may name ports by alias.
    let mut ports = PortMap::new();
    for (i, r) in sw.ports.iter().enumerate() {
        ports.insert(&r.netdev, 10 + i as u32);
    }
    eswitch::add_aliases(&mut ports, &switches);
    assert_eq!(
        (ports.ifindex("p0"), ports.ifindex("pf0vf2")),
        (Some(10), Some(13))
    );
    assert_eq!(ports.ifindex("pf0vf9"), None);
}

#[test]
fn bluefield_arm_side() {
    // On a DPU's Arm cores the host's PF and VFs appear only as
    // representors of controller 1 (c1pf0, c1pf0vfN); each PF has its own
    // eSwitch; subfunctions sit beside them.
    let fake = FakeSysfs::new();
    let (sw0, sw1) = ("0c42a1030016f8d0", "0c42a1030016f8d1");
    let bf = |bdf: &str, ifname: &str, switch: &str, port: &str| PfSpec {
        bdf: bdf.into(),
        device: 0xa2d6,
        total_vfs: 0,
        ifname: Some(ifname.into()),
        phys_port_name: Some(port.into()),
        phys_switch_id: Some(switch.into()),
        ..PfSpec::connectx5()
    };
    fake.pf(bf("0000:03:00.0", "p0", sw0, "p0"));
    fake.pf(bf("0000:03:00.1", "p1", sw1, "p1"));
    fake.switchdev_representor("0000:03:00.0", rep("pf0hpf", "c1pf0", sw0));
    fake.switchdev_representor("0000:03:00.0", rep("pf0vf0", "c1pf0vf0", sw0));
    fake.switchdev_representor("0000:03:00.0", rep("pf0vf1", "c1pf0vf1", sw0));
    fake.switchdev_representor("0000:03:00.0", rep("en3f0pf0sf0", "pf0sf0", sw0));
    fake.switchdev_representor("0000:03:00.1", rep("pf1hpf", "c1pf1", sw1));
    fake.switchdev_representor("0000:03:00.1", rep("pf1vf0", "c1pf1vf0", sw1));
    let sys = Sysfs::new(fake.root());
    let switches = eswitch::discover(&sys, &FakeFeatures(HashMap::new()));
    assert_eq!(
        switches
            .iter()
            .map(|s| s.switch_id.as_str())
            .collect::<Vec<_>>(),
        [sw0, sw1]
    );
    let s0 = &switches[0];
    assert_eq!(s0.ports[0].netdev, "p0", "uplink first");
    let hpf = s0.ports.iter().find(|r| r.netdev == "pf0hpf").unwrap();
    assert_eq!(
        hpf.flavour,
        Flavour::Pf {
            controller: Some(1),
            pf: 0
        }
    );
    assert_eq!(hpf.aliases, ["pf0hpf"]);
    let vf1 = s0.vf(0, 1).unwrap();
    assert_eq!(
        vf1.flavour,
        Flavour::Vf {
            controller: Some(1),
            pf: 0,
            vf: 1
        }
    );
    assert_eq!(vf1.aliases, ["pf0vf1", "c1pf0vf1"]);
    let sf = s0.ports.iter().find(|r| r.netdev == "en3f0pf0sf0").unwrap();
    assert_eq!(
        sf.flavour,
        Flavour::Sf {
            controller: None,
            pf: 0,
            sf: 0
        }
    );
    assert_eq!(switches[1].vf(1, 0).unwrap().netdev, "pf1vf0");
    assert!(
        switches[1].vf(0, 0).is_none(),
        "VF 0 of PF 0 is on the other eSwitch"
    );

    let mut ports = PortMap::new();
    for (i, r) in switches.iter().flat_map(|s| &s.ports).enumerate() {
        ports.insert(&r.netdev, 20 + i as u32);
    }
    eswitch::add_aliases(&mut ports, &switches);
    assert_eq!(ports.ifindex("c1pf0vf1"), ports.ifindex("pf0vf1"));
    assert_eq!(ports.ifindex("pf0sf0"), ports.ifindex("en3f0pf0sf0"));
    assert_eq!(
        ports.ifindex("p1"),
        Some(ports.ifindex("pf1hpf").unwrap() - 1)
    );
}

#[test]
fn the_same_alias_on_two_nics_names_neither() {
    let fake = FakeSysfs::new();
    let pf = |bdf: &str, ifname: &str, switch: &str| PfSpec {
        bdf: bdf.into(),
        ifname: Some(ifname.into()),
        phys_switch_id: Some(switch.into()),
        ..PfSpec::connectx5()
    };
    fake.pf(pf("0000:3b:00.0", "nicA", "aaaa"));
    fake.pf(pf("0000:5e:00.0", "nicB", "bbbb"));
    fake.switchdev_representor("0000:3b:00.0", rep("nicA_r0", "pf0vf0", "aaaa"));
    fake.switchdev_representor("0000:5e:00.0", rep("nicB_r0", "pf0vf0", "bbbb"));
    let sys = Sysfs::new(fake.root());
    let switches = eswitch::discover(&sys, &FakeFeatures(HashMap::new()));
    let mut ports = PortMap::new();
    for (i, n) in ["nicA", "nicA_r0", "nicB", "nicB_r0"].iter().enumerate() {
        ports.insert(n, i as u32 + 1);
    }
    eswitch::add_aliases(&mut ports, &switches);
    assert_eq!(ports.ifindex("pf0vf0"), None);
    assert_eq!(ports.ifindex("nicB_r0"), Some(4));
}
