//! dpu-offload: OVS-style flows compiled to tc-flower on switchdev
//! representors, or run by Plexus's own eBPF tc datapath where flower or
//! the hardware is missing, with an installer that reports where each flow
//! really lives.
//!
//! - [`flow`]: the intermediate flow table every back end consumes.
//! - [`parse`]: the `ovs-ofctl add-flow` syntax, with line and column in
//!   every error.
//! - [`eswitch`]: representor discovery from sysfs (injectable root).
//! - [`flower`]: the tc-flower compiler (pure).
//! - [`dump`]: flower filters read back: flow, `in_hw`, counters.
//! - [`install`]: the flower installer: apply / delete / flush.
//! - [`ebpf`]: the eBPF back end's compiler (map entries; pure).
//! - [`datapath`]: the eBPF classifier in the kernel: load, pin, attach,
//!   swap tables, read back.
//! - [`backend`]: flower or eBPF per port; apply, dump and flush both.
//! - [`agent`]: reconciles flow tables and reports per-flow status.
//! - [`flowtable`]: the `FlowTable` custom resource and the agent's
//!   API-server source.
//! - [`eval`]: the reference evaluator: a table applied to one packet, the
//!   obvious way, for tests to hold the back ends against.
//! - [`selfcheck`]: invariants for the fuzz target.
//!
//! ```
//! use plexus_dpu_offload::{flower::{self, Policy, PortMap}, parse::parse_flows};
//!
//! let flows = parse_flows("in_port=pf0vf1,ip,nw_dst=10.0.0.0/24,actions=output:p0\n").unwrap();
//! let mut ports = PortMap::new();
//! ports.insert("p0", 2);
//! ports.insert("enp3s0f0r1", 7);
//! ports.alias("pf0vf1", "enp3s0f0r1");
//! let filters = flower::compile(&flows, &ports, Policy::PreferHw).unwrap();
//! assert_eq!((filters[0].ifindex, filters[0].protocol), (7, 0x0800));
//! ```

pub mod agent;
pub mod backend;
pub mod datapath;
pub mod dump;
pub mod ebpf;
pub mod eswitch;
mod ethtool;
pub mod eval;
pub mod flow;
pub mod flower;
pub mod flowtable;
pub mod install;
pub mod parse;
pub mod selfcheck;
pub mod shadow;
