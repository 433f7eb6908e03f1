//! Same decisions: flow tables run through the eBPF datapath on the real
//! kernel and through the reference evaluator (`eval`) on the same
//! synthetic packets, and they agree on every packet: which flow matched
//! in each table, what came out of which port (bytes and VLAN tag), and
//! whether the packet was left to the kernel.
//!
//! Packets are sent from netns "VFs" into veth "representors"; each VF
//! listens on its end with a raw socket. The namespaces are quiet (no
//! addresses, no ARP, no IPv6), so every frame seen is one the test sent.

#[path = "common/traffic.rs"]
mod traffic;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use plexus_dpu_offload::{
    datapath::{Datapath, Maps},
    ebpf,
    eval::{self, Packet, Verdict},
    flow::Flow,
    install,
    parse::parse_flows,
};
use plexus_netlink::Netlink;
use traffic::Rig;

/// Installs `flows`; returns each flow's counter slot.
fn apply(rig: &Rig, flows: &[Flow]) -> Vec<u32> {
    let dir = rig.bpf.pin_dir();
    let flows = flows.to_vec();
    let report = rig.sw.run(move || {
        let mut nl = Netlink::new().unwrap();
        let ports = install::host_ports(&mut nl, &[]).unwrap();
        let table = ebpf::compile(&flows, &ports).unwrap();
        Datapath::load(&dir)
            .unwrap()
            .apply(&mut nl, &table, &ports)
            .unwrap()
    });
    let mut slots = vec![0; report.flows.len()];
    for (i, _, slot) in report.flows {
        slots[i] = slot;
    }
    slots
}

fn maps(rig: &Rig) -> Maps {
    Maps::open(&rig.bpf.pin_dir()).unwrap().unwrap()
}

/// Counter snapshot: per slot, plus miss and error.
fn snapshot(maps: &Maps, slots: &[u32]) -> (Vec<u64>, u64, u64) {
    let per = slots
        .iter()
        .map(|s| maps.counters(*s).unwrap().packets)
        .collect();
    let st = maps.stats().unwrap();
    (per, st.miss.packets, st.error.packets)
}

/// What the kernel did with one packet, in the evaluator's terms.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    matched: Vec<usize>,
    outputs: Vec<(String, Packet)>,
    miss: bool,
}

/// `attached`: whether the classifier runs on the port (it does on every
/// port some flow enters on); a packet on another port is left to the
/// kernel without being counted.
fn run_in_kernel(
    rig: &Rig,
    maps: &Maps,
    slots: &[u32],
    (port, attached): (usize, bool),
    p: &Packet,
    id: u16,
    expect: usize,
) -> Seen {
    let before = snapshot(maps, slots);
    rig.socks[port].send(&p.wire()).unwrap();
    // Classified once some counter moved (the program counts first).
    let deadline = Instant::now() + Duration::from_secs(if attached { 2 } else { 0 });
    let after = loop {
        let now = snapshot(maps, slots);
        if now != before || Instant::now() > deadline {
            break now;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let outputs = rig.outputs(id, expect, Duration::from_secs(2), Duration::from_millis(3));
    assert_eq!(after.2, before.2, "an action failed in the datapath");
    let matched: Vec<usize> = (0..slots.len())
        .filter(|i| after.0[*i] > before.0[*i])
        .collect();
    let miss = if attached {
        after.1 > before.1
    } else {
        assert!(
            matched.is_empty() && after.1 == before.1,
            "counted on a port without the classifier"
        );
        true
    };
    Seen {
        matched,
        outputs,
        miss,
    }
}

fn check_table(name: &str, text: &str, packets: usize, seed: u64) {
    let flows = parse_flows(text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let rig = Rig::new();
    let slots = apply(&rig, &flows);
    let maps = maps(&rig);
    let mut hit: BTreeMap<usize, usize> = BTreeMap::new();
    let (mut checked, mut outputs, mut misses) = (0, 0, 0);
    for (id, (port, p)) in traffic::cases(&flows, packets as u16, seed)
        .into_iter()
        .enumerate()
    {
        let id = id as u16;
        let want = eval::evaluate(&flows, &format!("rep{port}"), &p);
        if want.ambiguous {
            continue;
        }
        let attached = flows.iter().any(|f| f.in_port == format!("rep{port}"));
        let mut got = run_in_kernel(
            &rig,
            &maps,
            &slots,
            (port, attached),
            &p,
            id,
            want.outputs.len(),
        );
        let mut expect = Seen {
            matched: {
                let mut m = want.matched.clone();
                m.sort_unstable();
                m
            },
            outputs: want.outputs.clone(),
            miss: want.verdict == Verdict::Miss,
        };
        expect
            .outputs
            .sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        got.outputs
            .sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        assert_eq!(
            got, expect,
            "{name}: packet {id} on rep{port} ({:?} / {:02x?}) decided differently",
            p.tag, p.frame
        );
        for m in &want.matched {
            *hit.entry(*m).or_default() += 1;
        }
        checked += 1;
        outputs += want.outputs.len();
        misses += usize::from(want.verdict == Verdict::Miss);
    }
    // Not vacuous: the packets reached every flow and every kind of end.
    let unhit: Vec<String> = (0..flows.len())
        .filter(|i| !hit.contains_key(i))
        .map(|i| flows[i].to_string())
        .collect();
    assert!(unhit.is_empty(), "{name}: no packet matched {unhit:#?}");
    assert!(
        checked > packets * 9 / 10 && outputs > 0 && misses > 0,
        "{name}: {checked} {outputs} {misses}"
    );
}

#[test]
fn l2_l3_l4_matches_and_rewrites_agree_with_the_evaluator() {
    check_table("l3l4", traffic::L2_L4, 1000, 1);
}

#[test]
fn vlan_push_pop_modify_and_goto_agree_with_the_evaluator() {
    check_table("vlan", traffic::VLAN_GOTO, 1000, 2);
}

#[test]
fn what_the_flow_dissector_treats_apart_agrees_with_the_evaluator() {
    check_table("dissector", traffic::DISSECTOR, 1500, 11);
}
