//! The `sriov` CNI plugin (binary `sriov`, type `"sriov"`): gives a pod
//! the SR-IOV VF the device plugin allocated to it, a drop-in for
//! k8snetworkplumbingwg's sriov-cni.
//!
//! - [`announce`]: `arp_notify`/`ndisc_notify`, and the kernel asked to
//!   announce the addresses once they are set.
//! - [`conf`]: the config, validated before anything is touched.
//! - [`pf`]: the hardware seam: VF attributes through the PF (netlink in
//!   production, a state file for emulated PFs).
//! - [`state`]: the attachment cache, allocation records, per-VF locks.
//! - [`plugin`]: ADD, DEL, CHECK, STATUS, GC.

pub mod announce;
pub mod conf;
pub mod pf;
pub mod plugin;
pub mod state;
