//! The SR-IOV device plugin: finds VFs (and other PCI network devices and
//! accelerators) in sysfs, groups them into resource pools from the
//! upstream config format, and serves them to the kubelet over the
//! device-plugin gRPC API.
//!
//! - [`config`]: the config file (upstream's JSON, case-insensitive keys).
//! - [`pools`]: which device goes to which pool, and why the others do not.
//! - [`alloc`]: Allocate responses, device-info files, preferred allocation.
//! - [`host`]: the host's default routes (netlink).
//! - [`server`]: the daemon: gRPC servers, registration, health, rediscovery.
//! - [`cni`]: the `sriov` CNI plugin that gives a pod its allocated VF.

pub mod alloc;
pub mod cni;
pub mod config;
pub mod host;
pub mod pools;
pub mod server;
