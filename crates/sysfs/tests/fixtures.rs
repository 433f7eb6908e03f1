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

#[test]
fn subfunctions_are_found_under_their_pf_with_their_sf_number() {
    let fake = FakeSysfs::new();
    // A ConnectX-5 in switchdev mode, NUMA 1: its netdev is the uplink.
    fake.pf(PfSpec {
        numa_node: 1,
        ..PfSpec::connectx5()
    });
    fake.switchdev_representor(DEFAULT_PF_BDF, RepresentorSpec::vf("a_rep0", 0, 0));
    // Auxiliary ids are the bus's; SF numbers are the user's.
    let sf88 = fake.sf(DEFAULT_PF_BDF, 2, 88, Some("enp59s0f0s88"), true);
    let sf7 = fake.sf(DEFAULT_PF_BDF, 3, 7, None, false);
    // The PF's own Ethernet auxiliary device, and one nested under the SF
    // (as mlx5 makes them): the first is a candidate of another type, the
    // second is not a PCI device's child and is left out.
    let pf_dir = fake.device_dir(DEFAULT_PF_BDF);
    let aux = fake.root().join("bus/auxiliary/devices");
    for rel in ["mlx5_core.eth.0", "mlx5_core.sf.2/mlx5_core.eth.2"] {
        std::fs::create_dir_all(pf_dir.join(rel)).unwrap();
        let name = rel.rsplit('/').next().unwrap();
        std::os::unix::fs::symlink(
            format!("../../../devices/pci0000:00/{DEFAULT_PF_BDF}/{rel}"),
            aux.join(name),
        )
        .unwrap();
    }

    let scan = Sysfs::new(fake.root()).scan().unwrap();
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    let addrs: Vec<&str> = scan.devices.iter().map(|d| d.address.as_str()).collect();
    assert_eq!(
        addrs,
        [
            DEFAULT_PF_BDF,
            "mlx5_core.eth.0",
            "mlx5_core.sf.2",
            "mlx5_core.sf.3"
        ]
    );
    let by = |a: &str| scan.devices.iter().find(|d| d.address == a).unwrap();
    let sf = by(&sf88);
    assert_eq!(sf.aux_type.as_deref(), Some("sf"));
    assert_eq!(sf.pci_address(), DEFAULT_PF_BDF);
    assert_eq!(
        sf.pf,
        Some(PfRef {
            address: DEFAULT_PF_BDF.into(),
            vf_index: Some(88),
            netdev: Some("enp59s0f0np0".into()),
            representor: None
        })
    );
    // The parent's IDs, class, driver and NUMA node; its own netdev and RDMA.
    assert_eq!((sf.vendor.as_str(), sf.device.as_str()), ("15b3", "1017"));
    assert_eq!(sf.base_class(), 0x02);
    assert_eq!(sf.driver.as_deref(), Some("mlx5_core"));
    assert_eq!(sf.numa_node, Some(1));
    assert_eq!((sf.iommu_group, &sf.sriov), (None, &None));
    assert_eq!(sf.netdevs, ["enp59s0f0s88"]);
    assert_eq!(sf.link_type.as_deref(), Some("ether"));
    assert_eq!(sf.rdma, ["mlx5_2"]);
    assert_eq!(sf.uverbs, ["/dev/infiniband/uverbs2"]);
    let bare = by(&sf7);
    assert_eq!(bare.pf.as_ref().unwrap().vf_index, Some(7));
    assert!(bare.netdevs.is_empty() && bare.rdma.is_empty());
    assert_eq!(by("mlx5_core.eth.0").aux_type.as_deref(), Some("eth"));
    // The PF is still itself.
    assert_eq!(by(DEFAULT_PF_BDF).aux_type, None);
    assert_eq!(by(DEFAULT_PF_BDF).netdevs, ["a_rep0", "enp59s0f0np0"]);
}

#[test]
fn a_vfs_rdma_and_uio_character_devices() {
    let fake = FakeSysfs::new();
    fake.pf(PfSpec::connectx5());
    let rdma = fake.vf(DEFAULT_PF_BDF, 0, VfSpec::connectx5()).bdf;
    fake.add_rdma(&rdma, "mlx5_2", 2);
    let uio = fake
        .vf(
            DEFAULT_PF_BDF,
            1,
            VfSpec {
                driver: Some("uio_pci_generic".into()),
                ..VfSpec::connectx5()
            },
        )
        .bdf;
    fake.add_uio(&uio, 5);
    let scan = Sysfs::new(fake.root()).scan().unwrap();
    let by = |a: &str| scan.devices.iter().find(|d| d.address == a).unwrap();
    let r = by(&rdma);
    assert_eq!(r.rdma, ["mlx5_2"]);
    assert_eq!(r.uverbs, ["/dev/infiniband/uverbs2"]);
    assert_eq!(r.mad, ["/dev/infiniband/issm2", "/dev/infiniband/umad2"]);
    assert!(r.uio.is_empty());
    let u = by(&uio);
    assert_eq!(u.uio, ["/dev/uio5"]);
    assert!(u.rdma.is_empty() && u.mad.is_empty());
    // In exclusive mode, in a pod: none of it on the host.
    fake.hide_rdma(&rdma);
    let scan = Sysfs::new(fake.root()).scan().unwrap();
    let r = scan.devices.iter().find(|d| d.address == rdma).unwrap();
    assert!(r.rdma.is_empty() && r.uverbs.is_empty() && r.mad.is_empty());
}
