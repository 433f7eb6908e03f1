//! The fuzz target's checks ([`selfcheck::check_flow_text`]) on 40k
//! mutated flow files, deterministic so a failure reproduces: cargo-fuzz
//! needs a nightly toolchain this CI does not have, so CI runs the same
//! invariants on inputs mutated from the golden vectors' flows.

mod common;

use plexus_dpu_offload::selfcheck;
use plexus_testkit::bytes::Rng;

const ALPHABET: &[u8] = b",=:/()0123456789abcdefx.-+ #\n_";
const WORDS: &[&str] = &[
    "ip",
    "ipv6",
    "arp",
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "dl_vlan=",
    "dl_vlan=0xffff",
    "nw_src=",
    "nw_dst=",
    "tp_dst=",
    "tcp_flags=",
    "actions=",
    "output:",
    "drop",
    "push_vlan:0x8100",
    "mod_vlan_vid:",
    "mod_vlan_pcp:",
    "strip_vlan",
    "mod_dl_dst:02:00:00:00:00:01",
    "goto_table:",
    "resubmit(,",
    "table=",
    "priority=",
    "/0xff00",
    "/24",
    "::",
    "in_port=",
    "nw_tos=",
    "nw_ttl=",
];

fn mutate(rng: &mut Rng, corpus: &[String]) -> String {
    let mut s = corpus[rng.below(corpus.len())].clone().into_bytes();
    for _ in 0..1 + rng.below(2) {
        let at = rng.below(s.len() + 1);
        match rng.below(6) {
            0 if !s.is_empty() => {
                let i = rng.below(s.len());
                s[i] = ALPHABET[rng.below(ALPHABET.len())];
            }
            1 => s.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            2 if !s.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(s.len());
                s.drain(at.min(end)..end);
            }
            3 => {
                let w = WORDS[rng.below(WORDS.len())];
                s.splice(at..at, w.bytes());
            }
            4 if s.len() < 400 => {
                let other = &corpus[rng.below(corpus.len())];
                s.extend_from_slice(b"\n");
                s.extend_from_slice(other.as_bytes());
            }
            _ => {
                let n = rng.below(20);
                s.splice(at..at, std::iter::repeat_n(b'9', n));
            }
        }
    }
    String::from_utf8_lossy(&s).into_owned()
}

#[test]
fn mutated_flow_files_keep_every_invariant() {
    let mut corpus: Vec<String> = common::vectors()
        .into_iter()
        .map(|v| v.flow.split(" # ").next().unwrap().to_owned())
        .collect();
    corpus.push(
        "priority=10,in_port=p0,dl_vlan=5,dl_vlan_pcp=1,actions=mod_vlan_pcp:2,output:p1".into(),
    );
    corpus.push(
        "in_port=p0,arp,arp_op=2,nw_src=10.0.0.0/255.0.255.0,actions=output:p1,output:p2".into(),
    );
    let mut rng = Rng::new(0x005e_ed0f_f10e);
    let (mut parsed, mut total) = (0, 0);
    for _ in 0..40_000 {
        let input = mutate(&mut rng, &corpus);
        total += 1;
        if plexus_dpu_offload::parse::parse_flows(&input).is_ok() {
            parsed += 1;
        }
        if let Err(e) = selfcheck::check_flow_text(&input) {
            panic!("input {input:?}: {e}");
        }
    }
    // The mutations must leave enough valid flows to exercise the
    // round trip and the compiler, and enough invalid ones for the errors.
    assert!(
        parsed > total / 20 && parsed < total * 9 / 10,
        "{parsed} of {total} parsed"
    );
}
