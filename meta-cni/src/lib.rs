//! `plexus`: the delegating CNI plugin, a drop-in for Multus.
//!
//! The runtime runs `plexus` for every pod; it resolves the pod's networks
//! ([`resolve`]) from NetworkAttachmentDefinitions ([`nad`], fetched through
//! [`cluster`]), runs each delegate through the CNI library's invoker,
//! records what it did ([`state`]) and reports it as network-status
//! ([`status`]). Networks that need a device get the one the kubelet
//! allocated ([`devices`]).
//!
//! In thick mode ([`thick`]) the same plugin runs in `plexus daemon`, and
//! the binary the runtime calls forwards each request to it.
//!
//! Must not: print anything on stdout but through the plugin skeleton. The
//! only kernel change plexus makes itself is moving the default route
//! ([`routes`]); interfaces are the delegates' business.

pub mod cluster;
pub mod config;
pub mod devices;
pub mod informer;
pub mod install;
pub mod logging;
pub mod metrics;
pub mod nad;
pub mod plugin;
pub mod resolve;
pub mod routes;
pub mod selection;
pub mod selfcheck;
pub mod state;
pub mod status;
pub mod thick;

pub use plugin::Plexus;
