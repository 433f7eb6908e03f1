//! `plexus`, the delegating CNI plugin: a drop-in for Multus.
//!
//! The runtime calls `plexus` for every pod. It resolves the cluster network
//! and runs it as the primary interface through the invoker of
//! [`plexus_cni`], printing the result in its own `cniVersion`.
//!
//! Owns: reading the plexus/Multus config keys ([`config`]) and deciding
//! which delegate runs with which parameters ([`plugin`]). Must not: print
//! anything on stdout but through the plugin skeleton, or talk to the kernel
//! itself (delegates do).

pub mod config;
pub mod plugin;
pub mod selection;

pub use plugin::Plexus;
