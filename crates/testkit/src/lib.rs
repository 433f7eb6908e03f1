//! Test kit for Plexus real-kernel and fixture-based tests.
//!
//! - [`netns`]: throwaway named network namespaces (`/run/netns/<name>`).
//! - [`packet`]: raw frames in and out of an interface (`AF_PACKET`).
//! - [`sysfs`]: fake sysfs trees for SR-IOV device discovery tests.
//! - [`vf`]: "emulated VFs", veth pairs registered as VF netdevs in a fake sysfs.
//! - [`bpffs`]: a private BPF filesystem per test, for pinned maps.
//! - [`apiserver`]: a Kubernetes API server stand-in over real HTTP.
//! - [`kubelet`]: a kubelet stand-in for its gRPC APIs on unix sockets.
//!
//! Only for tests: the real-kernel parts assume root and a kernel with
//! network namespaces and veth, and helpers meant for assertions panic with
//! a clear message instead of returning errors.
//!
//! ```no_run
//! use plexus_testkit::{EmulatedVf, EmulatedVfSpec, FakeSysfs, NetNs, PfSpec};
//!
//! let host = NetNs::with_prefix("host").unwrap();
//! let pod = NetNs::with_prefix("pod").unwrap();
//! let sysfs = FakeSysfs::new();
//! sysfs.pf(PfSpec::default()); // X710 at 0000:3b:00.0, netdev ens1f0
//! let vf = EmulatedVf::create(&host, &host, &sysfs, &EmulatedVfSpec::default()).unwrap();
//! // ... run the plugin in `host` (host.command(..)) with sysfs.root() as
//! // its sysfs root and CNI_NETNS=pod.path(), then:
//! assert!(host.link(&vf.vf_ifname).is_none());
//! assert!(pod.link("net1").is_some());
//! // Dropping `pod`, `host` and `sysfs` removes everything.
//! ```

pub mod apiserver;
pub mod bpffs;
pub mod bytes;
pub mod kubelet;
pub mod netns;
pub mod packet;
pub mod sysfs;
pub mod vf;

pub use apiserver::FakeApiServer;
pub use bpffs::BpfFs;
pub use kubelet::{FakeDeviceManager, FakeKubelet};
pub use netns::{NetNs, netns_exists};
pub use packet::{Frame, RawSocket, pin_to_cpu};
pub use sysfs::{FakeSysfs, NetdevSpec, PciDev, PfSpec, RepresentorSpec, VfSpec};
pub use vf::{EmulatedVf, EmulatedVfSpec};

/// The running kernel's release (`uname -r`), for tests that say which
/// kernel they ran on (the kernel matrix runs the same binaries on several).
///
/// # Panics
/// When `/proc` is not mounted.
#[must_use]
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("/proc/sys/kernel/osrelease")
        .trim()
        .to_owned()
}
