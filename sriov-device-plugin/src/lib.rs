//! The SR-IOV device plugin: finds VFs (and other PCI network devices and
//! accelerators) in sysfs, groups them into resource pools from the
//! upstream config format, and serves them to the kubelet over the
//! device-plugin gRPC API.
//!
//! - [`config`]: the config file (upstream's JSON, case-insensitive keys).
//! - [`pools`]: which device goes to which pool, and why the others do not.
//! - [`host`]: the host's default routes (netlink).

pub mod config;
pub mod host;
pub mod pools;
