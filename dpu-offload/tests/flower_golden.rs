//! Golden bytes: for every vector in `tests/fixtures/flower/` (captured by
//! its `capture.sh` from the real `tc` binary), the filter Plexus compiles
//! from the flow equals, byte for byte, the RTM_NEWTFILTER iproute2 sends
//! for the equivalent `tc filter add ... flower ... action ...` command.
//! Only `nlmsg_seq` and `nlmsg_pid` (bytes 8..16) are masked.

mod common;

use common::{COOKIE, VETH0, Vector, ports, vectors};
use plexus_dpu_offload::{flower, parse::parse_flow};
use plexus_netlink::tc::{PARENT_INGRESS, TcFilter};
use plexus_testkit::bytes::hexdump;

fn ours(v: &Vector) -> Vec<u8> {
    let flow = parse_flow(&v.flow).unwrap_or_else(|e| panic!("{}: {e}", v.name));
    let options = flower::encode_options(&flow, &ports(), v.policy, &COOKIE)
        .unwrap_or_else(|e| panic!("{}: {e}", v.name));
    TcFilter {
        ifindex: VETH0,
        parent: PARENT_INGRESS,
        priority: v.pref,
        protocol: flow.protocol().unwrap_or(plexus_netlink::tc::ETH_P_ALL),
        handle: 0,
        chain: (flow.table != 0).then_some(flow.table),
        kind: "flower".into(),
        options: Some(options),
    }
    .add_request()
    .encode(0)
}

#[test]
fn every_vector_matches_iproute2() {
    let vs = vectors();
    assert!(
        vs.len() >= 25,
        "only {} vectors; the issue asks for at least 25",
        vs.len()
    );
    let mut failures = Vec::new();
    for v in &vs {
        let (mut want, mut got) = (v.bytes.clone(), ours(v));
        for b in [&mut want, &mut got] {
            b[8..16].fill(0);
        }
        if want != got {
            failures.push(format!(
                "{} ({})\n--- iproute2\n{}--- ours\n{}",
                v.name,
                v.flow,
                hexdump(&want),
                hexdump(&got)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        vs.len(),
        failures.join("\n")
    );
}

#[test]
fn vectors_cover_every_key_and_action() {
    let all: String = vectors().iter().map(|v| format!("{} ", v.flow)).collect();
    for needle in [
        "dl_dst=",
        "dl_src=",
        "/ff:ff:ff:00:00:00",
        "dl_type=",
        "arp,",
        "arp_op=",
        "ip,",
        "ipv6,",
        "nw_src=",
        "nw_dst=",
        "ipv6_src=",
        "nw_proto=",
        "nw_tos=",
        "nw_ttl=",
        "tcp,",
        "udp,",
        "sctp,",
        "icmp,",
        "icmp6,",
        "tcp6,",
        "tp_src=",
        "tp_dst=",
        "/0xfc00",
        "tcp_flags=",
        "icmp_type=",
        "icmp_code=",
        "dl_vlan=",
        "dl_vlan_pcp=",
        "dl_vlan=0xffff",
        "table=",
        "priority=",
        "cookie=",
        "output:",
        "drop",
        "push_vlan:",
        "mod_vlan_vid:",
        "mod_vlan_pcp:",
        "strip_vlan",
        "mod_dl_src:",
        "mod_dl_dst:",
        "goto_table:",
        "resubmit(,",
    ] {
        assert!(all.contains(needle), "no vector uses {needle}");
    }
}
