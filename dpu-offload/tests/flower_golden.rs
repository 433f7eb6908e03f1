//! Golden bytes: for every vector in `tests/fixtures/flower/` (captured by
//! its `capture.sh` from the real `tc` binary), the filter Plexus compiles
//! from the flow equals, byte for byte, the RTM_NEWTFILTER iproute2 sends
//! for the equivalent `tc filter add ... flower ... action ...` command.
//! Only `nlmsg_seq` and `nlmsg_pid` (bytes 8..16) are masked.

use std::path::Path;

use plexus_dpu_offload::{
    flower::{self, Policy, PortMap},
    parse::parse_flow,
};
use plexus_netlink::tc::{PARENT_INGRESS, TcFilter};

/// The cookie every captured action carries.
const COOKIE: [u8; 16] = [
    0x50, 0x58, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0x07, 0, 0, 0xc0, 0xde,
];
/// veth0's index in the capture namespace (see capture.sh).
const VETH0: u32 = 3;

fn ports() -> PortMap {
    let mut p = PortMap::new();
    for (name, i) in [("veth1", 2), ("veth0", 3), ("rep2p", 4), ("rep2", 5)] {
        p.insert(name, i);
    }
    p
}

struct Vector {
    name: String,
    flow: String,
    policy: Policy,
    pref: u16,
    bytes: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/flower");
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
    {
        let text = std::fs::read_to_string(&path).unwrap();
        let header = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                .unwrap_or_else(|| panic!("{}: no '# {key}:' line", path.display()))
                .to_owned()
        };
        let flow_line = header("flow");
        let (flow, policy) = match flow_line.split_once(" # policy=") {
            Some((f, p)) => (f.to_owned(), p.parse().unwrap()),
            None => (flow_line.clone(), Policy::PreferHw),
        };
        let hex: String = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
            .collect();
        out.push(Vector {
            name: path.file_stem().unwrap().to_string_lossy().into_owned(),
            flow,
            policy,
            pref: header("pref").parse().unwrap(),
            bytes: (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect(),
        });
    }
    out
}

fn dump(b: &[u8]) -> String {
    b.chunks(16)
        .enumerate()
        .map(|(i, c)| {
            let hex: Vec<String> = c.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:04x}: {}\n", i * 16, hex.join(" "))
        })
        .collect()
}

fn ours(v: &Vector) -> Vec<u8> {
    let flow = parse_flow(&v.flow).unwrap_or_else(|e| panic!("{}: {e}", v.name));
    let options = flower::flower_options(&flow, &ports(), v.policy, &COOKIE)
        .unwrap_or_else(|e| panic!("{}: {e}", v.name));
    TcFilter {
        ifindex: VETH0,
        parent: PARENT_INGRESS,
        priority: v.pref,
        protocol: flow.protocol().unwrap_or(plexus_netlink::tc::ETH_P_ALL),
        handle: 0,
        chain: (flow.table != 0).then_some(flow.table),
        kind: "flower".into(),
        options: Some(flower::encode(&options)),
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
                dump(&want),
                dump(&got)
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
