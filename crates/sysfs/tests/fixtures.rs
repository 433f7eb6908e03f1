//! Discovery against fake sysfs trees (no hardware here): the X710
//! reference tree, a switchdev ConnectX-5 with representors, a NUMA-2 PF,
//! a corrupt `modalias` and a no-IOMMU group.

use plexus_sysfs::{PfRef, SriovCap, Sysfs};
use plexus_testkit::FakeSysfs;
use plexus_testkit::sysfs::{DEFAULT_PF_BDF, PfSpec, RepresentorSpec, VfSpec};

#[test]
fn x710_reference_tree() {
    let fake = FakeSysfs::new();
    fake.x710();
    let scan = Sysfs::new(fake.root()).scan().unwrap();
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    let addrs: Vec<&str> = scan.devices.iter().map(|d| d.address.as_str()).collect();
    assert_eq!(
        addrs,
        [
            "0000:3b:00.0",
            "0000:3b:02.0",
            "0000:3b:02.1",
            "0000:3b:02.2",
            "0000:3b:02.3"
        ]
    );
    let pf = &scan.devices[0];
    assert_eq!((pf.vendor.as_str(), pf.device.as_str()), ("8086", "1572"));
    assert_eq!(pf.base_class(), 0x02);
    assert_eq!(
        pf.sriov,
        Some(SriovCap {
            total_vfs: 64,
            num_vfs: 4
        })
    );
    assert_eq!(pf.netdevs, ["ens1f0"]);
    assert_eq!(pf.iommu_group, Some(40));
    assert_eq!(pf.numa_node, Some(0));
    let vf0 = &scan.devices[1];
    assert_eq!(vf0.driver.as_deref(), Some("vfio-pci"));
    assert!(vf0.netdevs.is_empty());
    assert_eq!((vf0.iommu_group, vf0.noiommu), (Some(90), false));
    assert_eq!(
        vf0.pf,
        Some(PfRef {
            address: DEFAULT_PF_BDF.into(),
            vf_index: Some(0),
            netdev: Some("ens1f0".into()),
            representor: None
        })
    );
    let vf3 = &scan.devices[4];
    assert_eq!(vf3.device, "154c");
    assert_eq!(vf3.netdevs, ["ens1f0v3"]);
    assert_eq!(vf3.link_type.as_deref(), Some("ether"));
    assert_eq!(vf3.pf.as_ref().unwrap().vf_index, Some(3));
    assert_eq!(vf3.numa_node, Some(0));
    assert_eq!(
        plexus_sysfs::pci_names(&vf3.vendor, &vf3.device).map(|(v, _)| v),
        Some("Intel Corporation".to_owned())
    );
}

#[test]
fn switchdev_pf_name_is_the_uplink_not_a_representor() {
    let fake = FakeSysfs::new();
    let pf = PfSpec {
        ifname: Some("p0".into()),
        ..PfSpec::connectx5()
    };
    fake.pf(pf);
    // Representors sort before the uplink's own name in net/.
    fake.switchdev_representor(DEFAULT_PF_BDF, RepresentorSpec::vf("eth_rep1", 0, 1));
    fake.switchdev_representor(DEFAULT_PF_BDF, RepresentorSpec::vf("a_rep0", 0, 0));
    for i in 0..2 {
        fake.vf(
            DEFAULT_PF_BDF,
            i,
            VfSpec {
                ifname: Some(format!("enp59s0f0v{i}")),
                ..VfSpec::connectx5()
            },
        );
    }
    let sys = Sysfs::new(fake.root());
    let scan = sys.scan().unwrap();
    let vfs: Vec<&PfRef> = scan.devices.iter().filter_map(|d| d.pf.as_ref()).collect();
    assert_eq!(vfs.len(), 2);
    assert_eq!(vfs[0].netdev.as_deref(), Some("p0"));
    assert_eq!(vfs[0].representor.as_deref(), Some("a_rep0"));
    assert_eq!(vfs[1].representor.as_deref(), Some("eth_rep1"));
    assert_eq!(vfs[1].vf_index, Some(1));
}

#[test]
fn numa_two_noiommu_and_one_corrupt_device() {
    let fake = FakeSysfs::new();
    fake.pf(PfSpec {
        numa_node: 1,
        ..PfSpec::default()
    });
    fake.vf(DEFAULT_PF_BDF, 0, VfSpec::default());
    fake.pf(PfSpec {
        bdf: "0000:af:00.0".into(),
        ifname: Some("ens2f0".into()),
        numa_node: 2,
        ..PfSpec::default()
    });
    let vf = fake.vf(
        "0000:af:00.0",
        5,
        VfSpec {
            driver: Some("vfio-pci".into()),
            iommu_group: Some(300),
            ..VfSpec::default()
        },
    );
    std::fs::write(
        fake.root().join("kernel/iommu_groups/300/name"),
        "vfio-noiommu\n",
    )
    .unwrap();
    // modalias garbage: the vendor/device/class files still say who it is.
    fake.corrupt(&vf.bdf, "modalias", "pci:v0000");
    // Another device unreadable altogether: it alone is left out.
    fake.pf(PfSpec {
        bdf: "0000:d8:00.0".into(),
        ifname: None,
        total_vfs: 0,
        ..PfSpec::default()
    });
    fake.corrupt("0000:d8:00.0", "modalias", "");
    fake.remove_attr("0000:d8:00.0", "vendor");

    let scan = Sysfs::new(fake.root()).scan().unwrap();
    assert_eq!(scan.errors.len(), 1, "{:?}", scan.errors);
    assert_eq!(scan.errors[0].0, "0000:d8:00.0");
    assert!(scan.errors[0].1.to_string().contains("unreadable IDs"));
    let by = |a: &str| scan.devices.iter().find(|d| d.address == a).unwrap();
    assert_eq!(by("0000:3b:02.0").numa_node, Some(1));
    let dpdk = by(&vf.bdf);
    assert_eq!(
        (dpdk.vendor.as_str(), dpdk.device.as_str()),
        ("8086", "154c")
    );
    assert_eq!(dpdk.numa_node, Some(2));
    assert_eq!((dpdk.iommu_group, dpdk.noiommu), (Some(300), true));
    assert_eq!(dpdk.pf.as_ref().unwrap().vf_index, Some(5));
}
