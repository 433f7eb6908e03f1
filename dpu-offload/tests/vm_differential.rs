//! The differential check: the same flow tables and the same generated
//! packets go once through tc flower (in software, `sw-only`) and once
//! through Plexus's eBPF datapath, and both agree with the reference
//! evaluator (`eval`) on every packet: which flows matched, what came out
//! of which port (bytes and VLAN tag), and whether the packet was left to
//! the kernel; so the per-flow packet counts are identical too.
//!
//! The packets cover every key and action of the language and each case
//! flower's flow dissector treats apart (fragments, IPv6 extension headers
//! up to past its header budget, ARP opcodes beyond request and reply,
//! short TCP headers, stacked VLAN tags): `common/traffic.rs`.
//!
//! Differences by design, asserted here:
//! - byte counters: flower counts from the network header (the skb at tc
//!   ingress starts there), the eBPF datapath the frame as on the wire,
//!   tag included: 14 bytes a packet more, 18 for a tagged one;
//! - a copy (`output` before the last) to a port that is down or gone:
//!   both lose the copy and deliver the packet; when the port is gone the
//!   eBPF datapath also counts a failed action (flower counts an overlimit
//!   on the action, which Plexus does not report).
//!
//! Needs cls_flower: runs in the kernel matrix (`make kernel-e2e`).

#[path = "common/traffic.rs"]
mod traffic;

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use plexus_dpu_offload::{
    datapath::{Datapath, Maps},
    ebpf,
    eval::{self, Packet, Verdict},
    flow::{Action, Flow},
    flower::{Policy, PortMap},
    install::{self, Shadowed},
    parse::parse_flows,
};
use plexus_netlink::Netlink;
use plexus_testkit::{NetNs, bytes::Rng};
use traffic::Rig;

/// Per flow (by table index): packets and bytes.
type Counts = Vec<(u64, u64)>;

trait Backend {
    fn name(&self) -> &'static str;
    /// Installs the table.
    fn apply(&mut self, rig: &Rig, flows: &[Flow]);
    /// Per-flow counters.
    fn counts(&self, rig: &Rig) -> Counts;
    /// Packets the back end itself says missed, if it counts them.
    fn misses(&self) -> Option<u64>;
    /// Actions that failed, if it counts them.
    fn failed_actions(&self) -> Option<u64>;
    /// Removes everything.
    fn flush(&mut self, rig: &Rig);
}

fn ports(rig: &Rig) -> PortMap {
    rig.sw.run(|| {
        let mut nl = Netlink::new().unwrap();
        install::host_ports(&mut nl, &[]).unwrap()
    })
}

/// tc flower in software.
struct Flower {
    /// Table index by (ifindex, chain, pref, handle).
    filters: HashMap<(u32, u32, u16, u32), usize>,
    n: usize,
}

impl Backend for Flower {
    fn name(&self) -> &'static str {
        "flower"
    }

    fn apply(&mut self, rig: &Rig, flows: &[Flow]) {
        let flows = flows.to_vec();
        let ports = ports(rig);
        let report = rig.sw.run(move || {
            let mut nl = Netlink::new().unwrap();
            install::apply(&mut nl, &flows, &ports, Policy::SwOnly, Shadowed::Demote).unwrap()
        });
        let ports = self::ports(rig);
        self.n = report.flows.len();
        self.filters = report
            .flows
            .iter()
            .map(|p| {
                (
                    (
                        ports.ifindex(&p.port).unwrap(),
                        p.chain,
                        p.prio.unwrap(),
                        p.handle.unwrap(),
                    ),
                    p.index,
                )
            })
            .collect();
    }

    fn counts(&self, rig: &Rig) -> Counts {
        let ports = ports(rig);
        let installed = rig.sw.run(move || {
            let mut nl = Netlink::new().unwrap();
            install::installed(&mut nl, &ports).unwrap()
        });
        let mut out = vec![(0, 0); self.n];
        for f in installed {
            let i = self.filters[&(f.ifindex, f.chain, f.prio, f.handle)];
            out[i] = (f.counters.packets, f.counters.bytes);
        }
        out
    }

    fn misses(&self) -> Option<u64> {
        None
    }

    fn failed_actions(&self) -> Option<u64> {
        None
    }

    fn flush(&mut self, rig: &Rig) {
        let ports = ports(rig);
        rig.sw.run(move || {
            let mut nl = Netlink::new().unwrap();
            install::delete_selected(&mut nl, &ports, &install::Selector::default()).unwrap();
        });
    }
}

/// The eBPF datapath.
struct Ebpf {
    slots: Vec<u32>,
    maps: Option<Maps>,
}

impl Backend for Ebpf {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn apply(&mut self, rig: &Rig, flows: &[Flow]) {
        let dir = rig.bpf.pin_dir();
        let flows = flows.to_vec();
        let ports = ports(rig);
        let report = rig.sw.run(move || {
            let mut nl = Netlink::new().unwrap();
            let table = ebpf::compile(&flows, &ports).unwrap();
            Datapath::load(&dir)
                .unwrap()
                .apply(&mut nl, &table, &ports)
                .unwrap()
        });
        self.slots = vec![0; report.flows.len()];
        for (i, _, slot) in report.flows {
            self.slots[i] = slot;
        }
        self.maps = Some(Maps::open(&rig.bpf.pin_dir()).unwrap().unwrap());
    }

    fn counts(&self, _rig: &Rig) -> Counts {
        let maps = self.maps.as_ref().unwrap();
        self.slots
            .iter()
            .map(|s| {
                let c = maps.counters(*s).unwrap();
                (c.packets, c.bytes)
            })
            .collect()
    }

    fn misses(&self) -> Option<u64> {
        Some(self.maps.as_ref().unwrap().stats().unwrap().miss.packets)
    }

    fn failed_actions(&self) -> Option<u64> {
        Some(self.maps.as_ref().unwrap().stats().unwrap().error.packets)
    }

    fn flush(&mut self, rig: &Rig) {
        self.maps = None;
        let dir = rig.bpf.pin_dir();
        let ports = ports(rig);
        rig.sw.run(move || {
            let mut nl = Netlink::new().unwrap();
            plexus_dpu_offload::datapath::flush(&mut nl, &dir, &ports).unwrap();
        });
    }
}

/// How long to wait for a batch's outcome: generous, since the kernel
/// matrix runs under TCG; a wait ends as soon as the outcome is in.
const PATIENCE: Duration = Duration::from_secs(5);

/// Packets sent together. Each packet's outputs are told apart by its
/// marker; counters and misses are compared per batch.
const BATCH: usize = 20;

/// The sum of `b`'s counters' packets and its misses.
fn moved(b: &dyn Backend, rig: &Rig) -> (Counts, Option<u64>) {
    (b.counts(rig), b.misses())
}

/// The evaluator's outputs of one packet, in the order `outputs_of` sorts.
fn expected(want: &eval::Outcome) -> Vec<(String, Packet)> {
    let mut outputs = want.outputs.clone();
    outputs.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    outputs
}

/// Sends `packets` generated packets through both back ends and the
/// evaluator; returns, per back end, each flow's packet count.
fn differential(name: &str, text: &str, packets: u16, seed: u64) {
    eprintln!("on Linux {}", plexus_testkit::kernel_release());
    let flows = parse_flows(text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let rig = Rig::new();
    let cases: Vec<(usize, Packet, eval::Outcome)> = traffic::cases(&flows, packets, seed)
        .into_iter()
        .map(|(port, p)| {
            let want = eval::evaluate(&flows, &format!("rep{port}"), &p);
            (port, p, want)
        })
        .collect();
    let mut backends = backends();
    let mut totals: BTreeMap<&str, Counts> = BTreeMap::new();
    let mut wire_bytes = vec![0u64; flows.len()];
    let mut table0_packets = vec![0u64; flows.len()];
    for b in &mut backends {
        b.apply(&rig, &flows);
        let (mut checked, mut outs, mut misses) = (0, 0, 0);
        let mut hit = vec![0u64; flows.len()];
        let live: Vec<(u16, &(usize, Packet, eval::Outcome))> = cases
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.2.ambiguous)
            .map(|(id, c)| (id as u16, c))
            .collect();
        for batch in live.chunks(BATCH) {
            let (before, miss_before) = moved(b.as_ref(), &rig);
            // What the evaluator says the batch does to the counters.
            let mut want_counts = vec![0u64; flows.len()];
            let mut want_misses = 0;
            let mut want_outputs = 0;
            for (_, (port, p, want)) in batch {
                let attached = flows.iter().any(|f| f.in_port == format!("rep{port}"));
                for m in &want.matched {
                    want_counts[*m] += 1;
                }
                // A port without a classifier counts nothing.
                want_misses += u64::from(attached && want.verdict == Verdict::Miss);
                want_outputs += want.outputs.len();
                rig.socks[*port].send(&p.wire()).unwrap();
            }
            let deadline = Instant::now() + PATIENCE;
            let (after, miss_after) = loop {
                let (now, m) = moved(b.as_ref(), &rig);
                let counted: Vec<u64> = now.iter().zip(&before).map(|(a, b)| a.0 - b.0).collect();
                let missed = m.zip(miss_before).map(|(a, b)| a - b);
                if (counted == want_counts && missed.is_none_or(|x| x == want_misses))
                    || Instant::now() > deadline
                {
                    break (now, m);
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            let first = batch[0].0;
            let got = rig.outputs_of(
                first..first + batch.len() as u16,
                want_outputs,
                PATIENCE,
                Duration::from_millis(5),
            );
            let describe = |id: u16| {
                let (port, p, _) = &cases[usize::from(id)];
                format!(
                    "packet {id} on rep{port} (tag {:?}, frame {:02x?})",
                    p.tag, p.frame
                )
            };
            for (id, (_, _, want)) in batch {
                let outputs = got.get(id).cloned().unwrap_or_default();
                assert_eq!(
                    outputs,
                    expected(want),
                    "{name}: {}: {}: outputs differ from the evaluator's (it matched {:?})",
                    b.name(),
                    describe(*id),
                    want.matched
                );
            }
            let counted: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).collect();
            if counted != want_counts {
                let diff: Vec<String> = (0..flows.len())
                    .filter(|i| counted[*i] != want_counts[*i])
                    .map(|i| {
                        format!(
                            "{}: {} counted, {} expected",
                            flows[i], counted[i], want_counts[i]
                        )
                    })
                    .collect();
                let who: Vec<String> = batch.iter().map(|(id, _)| describe(*id)).collect();
                panic!(
                    "{name}: {}: counters of the batch differ from the evaluator's:\n{}\nthe batch:\n{}",
                    b.name(),
                    diff.join("\n"),
                    who.join("\n")
                );
            }
            if let (Some(m0), Some(m1)) = (miss_before, miss_after) {
                assert_eq!(
                    m1 - m0,
                    want_misses,
                    "{name}: {}: misses of the batch",
                    b.name()
                );
            }
            for (_, (_, p, want)) in batch {
                for m in &want.matched {
                    hit[*m] += 1;
                }
                if let Some(first) = want.matched.first()
                    && b.name() == "ebpf"
                {
                    wire_bytes[*first] += p.wire().len() as u64;
                    table0_packets[*first] += 1;
                }
                checked += 1;
                outs += want.outputs.len();
                misses += usize::from(want.verdict == Verdict::Miss);
            }
        }
        let late = rig.leftovers();
        assert!(
            late.is_empty(),
            "{name}: {}: late outputs {late:?}",
            b.name()
        );
        // Not vacuous: every flow matched something, and there were
        // outputs and misses.
        let unhit: Vec<String> = (0..flows.len())
            .filter(|i| hit[*i] == 0)
            .map(|i| flows[i].to_string())
            .collect();
        assert!(unhit.is_empty(), "{name}: no packet matched {unhit:#?}");
        assert!(
            checked > usize::from(packets) * 9 / 10 && outs > 0 && misses > 0,
            "{name}: {checked} {outs} {misses}"
        );
        let counts = b.counts(&rig);
        assert_eq!(
            counts.iter().map(|c| c.0).collect::<Vec<_>>(),
            hit,
            "{name}: {}: per-flow packet counts",
            b.name()
        );
        eprintln!(
            "{name}: {}: {checked} packets agree with the evaluator ({outs} outputs, {misses} misses)",
            b.name()
        );
        totals.insert(b.name(), counts);
        b.flush(&rig);
    }
    // The documented difference in bytes, for the flows of table 0, which
    // see the packets as sent: eBPF counts the wire frame, flower from the
    // network header (the frame less 14 bytes and the outer tag).
    let (fl, eb) = (&totals["flower"], &totals["ebpf"]);
    for (i, f) in flows.iter().enumerate() {
        assert_eq!(fl[i].0, eb[i].0, "{name}: packets of {f}");
        // Actions that change the length would change what flower's later
        // actions count (it reports the largest count of a filter's
        // actions).
        let same_length = f.actions.iter().all(|a| {
            matches!(
                a,
                Action::Output(_)
                    | Action::Drop
                    | Action::GotoTable(_)
                    | Action::SetDlSrc(_)
                    | Action::SetDlDst(_)
            )
        });
        if f.table == 0 && same_length {
            let tagged: u64 = cases
                .iter()
                .filter(|(_, p, w)| {
                    !w.ambiguous && w.matched.first() == Some(&i) && p.tag.is_some()
                })
                .count() as u64;
            assert_eq!(eb[i].1, wire_bytes[i], "{name}: eBPF bytes of {f}");
            assert_eq!(
                fl[i].1,
                wire_bytes[i] - 14 * table0_packets[i] - 4 * tagged,
                "{name}: flower bytes of {f}"
            );
        }
    }
}

#[test]
fn flower_ebpf_and_the_evaluator_agree_on_what_the_dissector_treats_apart() {
    differential("dissector", traffic::DISSECTOR, 1200, 11);
}

#[test]
fn flower_ebpf_and_the_evaluator_agree_on_l2_to_l4_matches_and_rewrites() {
    differential("l2-l4", traffic::L2_L4, 800, 1);
}

#[test]
fn flower_ebpf_and_the_evaluator_agree_on_vlan_actions_and_gotos() {
    differential("vlan-goto", traffic::VLAN_GOTO, 800, 2);
}

fn backends() -> Vec<Box<dyn Backend>> {
    vec![
        Box::new(Flower {
            filters: HashMap::new(),
            n: 0,
        }),
        Box::new(Ebpf {
            slots: Vec::new(),
            maps: None,
        }),
    ]
}

/// Sends 20 packets into `in_port=rep0,actions=output:rep2,output:rep1`
/// after `break_rep2` did something to rep2, on a fresh rig per back end;
/// returns each back end's failed-action count (None: it counts none).
fn copy_to_a_broken_port(break_rep2: impl Fn(&Rig)) -> Vec<(&'static str, Option<u64>)> {
    eprintln!("on Linux {}", plexus_testkit::kernel_release());
    let flows = parse_flows("in_port=rep0,actions=output:rep2,output:rep1\n").unwrap();
    let mut rng = Rng::new(5);
    let mut failed = Vec::new();
    for mut b in backends() {
        let rig = Rig::new();
        b.apply(&rig, &flows);
        break_rep2(&rig);
        for id in 0..20 {
            let p = traffic::packet(&mut rng, id);
            rig.socks[0].send(&p.wire()).unwrap();
            let out = rig.outputs(id, 1, PATIENCE, Duration::from_millis(20));
            let ports: Vec<&str> = out.iter().map(|(port, _)| port.as_str()).collect();
            assert_eq!(ports, ["rep1"], "{}: packet {id}", b.name());
        }
        assert_eq!(b.counts(&rig)[0].0, 20, "{}", b.name());
        failed.push((b.name(), b.failed_actions()));
        b.flush(&rig);
    }
    failed
}

/// A copy to a port that is down: act_mirred loses the copy and goes on,
/// and so does the eBPF datapath. The redirect itself succeeds there (the
/// down device's qdisc drops the clone), so no action failed.
#[test]
fn a_copy_to_a_port_that_is_down_loses_only_the_copy_on_both_back_ends() {
    let failed = copy_to_a_broken_port(|rig| {
        rig.sw.sh("ip", &["link", "set", "rep2", "down"]);
    });
    assert_eq!(failed, [("flower", None), ("ebpf", Some(0))]);
}

/// A copy to a port that is gone (moved to another namespace, so its
/// ifindex no longer resolves): act_mirred ("target device is gone") goes
/// on; `bpf_clone_redirect` fails, and the eBPF datapath counts the failed
/// action and runs the next one.
#[test]
fn a_copy_to_a_port_that_is_gone_loses_only_the_copy_on_both_back_ends() {
    let elsewhere = NetNs::with_prefix("gone").unwrap();
    let failed = copy_to_a_broken_port(|rig| {
        rig.sw
            .sh("ip", &["link", "set", "rep2", "netns", elsewhere.name()]);
    });
    assert_eq!(failed, [("flower", None), ("ebpf", Some(20))]);
}
