//! SR-IOV rigs for the black-box tests and benchmarks: a fake sysfs with
//! an emulated X710 PF (VF attributes in its state file), and VFs emulated
//! as veth ends in a "host" namespace whose peers sit on a bridge `sw0` in
//! a "wire" namespace (the NIC's switch).

use plexus_testkit::{
    EmulatedVf, EmulatedVfSpec, FakeSysfs, NetNs, PfSpec, VfSpec, sysfs::DEFAULT_PF_BDF,
};

/// A fake sysfs holding the default X710 PF, marked emulated for the
/// `sriov` plugin; returns it and the PF's state file.
///
/// # Panics
/// When the tree cannot be written.
#[must_use]
pub fn emulated_pf() -> (FakeSysfs, std::path::PathBuf) {
    emulated(PfSpec::default())
}

/// [`emulated_pf`] with another PF (its `bdf` must be the default one):
/// the emulation refuses what that PF's driver refuses in its eswitch mode.
///
/// # Panics
/// When the tree cannot be written.
#[must_use]
pub fn emulated(pf: PfSpec) -> (FakeSysfs, std::path::PathBuf) {
    let sysfs = FakeSysfs::new();
    sysfs.pf(pf);
    let state = sysfs.emulate_pf(DEFAULT_PF_BDF);
    (sysfs, state)
}

/// The wire: a namespace with the bridge `sw0`, up.
///
/// # Panics
/// When the namespace or bridge cannot be made.
#[must_use]
pub fn wire(prefix: &str) -> NetNs {
    let wire = NetNs::with_prefix(prefix).expect("wire netns");
    wire.sh("ip", &["link", "add", "sw0", "type", "bridge"]);
    // A port that is always up, as the rest of a real wire is: with the
    // VFs' peers as its only ports, the bridge lost its carrier whenever a
    // VF netdev moved into a pod, and the kernel then flushed the wire's
    // neighbour entries, which a real wire keeps.
    wire.sh(
        "ip",
        &[
            "link",
            "add",
            "swup",
            "type",
            "veth",
            "peer",
            "name",
            "swup-peer",
        ],
    );
    wire.sh("ip", &["link", "set", "swup-peer", "up"]);
    wire.sh("ip", &["link", "set", "swup", "master", "sw0", "up"]);
    wire.sh("ip", &["link", "set", "sw0", "up"]);
    wire
}

/// VFs `0..n` of the PF: netdevs `ensvf<i>` in `host`, peers `rep<i>` on
/// the wire's `sw0`.
///
/// # Panics
/// When a link cannot be made.
#[must_use]
pub fn vfs(host: &NetNs, wire: &NetNs, sysfs: &FakeSysfs, n: u32) -> Vec<EmulatedVf> {
    vfs_of(host, wire, sysfs, n, &VfSpec::default())
}

/// [`vfs`] of another model (`VfSpec::connectx5()`).
///
/// # Panics
/// When a link cannot be made.
#[must_use]
pub fn vfs_of(
    host: &NetNs,
    wire: &NetNs,
    sysfs: &FakeSysfs,
    n: u32,
    model: &VfSpec,
) -> Vec<EmulatedVf> {
    (0..n)
        .map(|i| {
            let vf = EmulatedVf::create(
                host,
                wire,
                sysfs,
                &EmulatedVfSpec {
                    vf_index: i,
                    vf_ifname: format!("ensvf{i}"),
                    peer_ifname: format!("rep{i}"),
                    vf: model.clone(),
                    ..EmulatedVfSpec::default()
                },
            )
            .expect("emulated VF");
            wire.sh("ip", &["link", "set", &format!("rep{i}"), "master", "sw0"]);
            vf
        })
        .collect()
}
