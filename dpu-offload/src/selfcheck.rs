//! Invariants any input must keep, for the fuzz target
//! (`dpu-offload/fuzz`, cargo-fuzz) and the mutation test that runs the
//! same checks in CI (`tests/fuzz_parse.rs`): parsing never panics, every
//! flow that parses prints in a canonical form that parses back to it,
//! compiling never panics, and netlink-packet-route's flower types parse
//! whatever the compiler encodes.

use crate::{
    dump,
    flower::{self, Policy, PortMap},
    parse,
};

/// Checks the invariants on one flow file; `Err` says which broke.
///
/// # Errors
/// A broken invariant (a bug, never bad input).
pub fn check_flow_text(text: &str) -> Result<(), String> {
    let Ok(flows) = parse::parse_flows(text) else {
        return Ok(());
    };
    let mut ports = PortMap::new();
    for f in &flows {
        let again = parse::parse_flow(&f.to_string())
            .map_err(|e| format!("canonical form {f} does not parse: {e}"))?;
        if again.matches != f.matches
            || again.actions != f.actions
            || (again.table, again.priority, again.cookie, &again.in_port)
                != (f.table, f.priority, f.cookie, &f.in_port)
        {
            return Err(format!("{f} parses back as {again}"));
        }
        for p in std::iter::once(f.in_port.as_str()).chain(f.outputs()) {
            if ports.ifindex(p).is_none() {
                ports.insert(p, 2 + ports.indexes().count() as u32);
            }
        }
    }
    for policy in [Policy::HwOnly, Policy::PreferHw, Policy::SwOnly] {
        if let Ok(compiled) = flower::compile(&flows, &ports, policy) {
            for c in compiled {
                dump::parse_options(&c.options).map_err(|e| {
                    format!(
                        "netlink-packet-route cannot parse what we encoded for {}: {e}",
                        flows[c.index]
                    )
                })?;
            }
        }
    }
    Ok(())
}
