//! Same decisions: flow tables run through the eBPF datapath on the real
//! kernel and through the reference evaluator (`eval`) on the same
//! synthetic packets, and they agree on every packet: which flow matched
//! in each table, what came out of which port (bytes and VLAN tag), and
//! whether the packet was left to the kernel.
//!
//! Packets are sent from netns "VFs" into veth "representors"; each VF
//! listens on its end with a raw socket. The namespaces are quiet (no
//! addresses, no ARP, no IPv6), so every frame seen is one the test sent.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use plexus_dpu_offload::{
    datapath::{Datapath, Maps},
    ebpf,
    eval::{self, Packet, Tag, Verdict, frame},
    flow::{ETH_8021AD, ETH_8021Q, ETH_ARP, ETH_IP, ETH_IPV6, Flow, Mac},
    install,
    parse::parse_flows,
};
use plexus_netlink::Netlink;
use plexus_testkit::{BpfFs, NetNs, RawSocket, bytes::Rng};

const PORTS: usize = 4;

struct Rig {
    sw: NetNs,
    /// Kept alive for the sockets' interfaces.
    _vfs: Vec<NetNs>,
    socks: Vec<RawSocket>,
    bpf: BpfFs,
}

fn quiet(ns: &NetNs) {
    for k in ["all", "default"] {
        ns.sh(
            "sysctl",
            &["-qw", &format!("net.ipv6.conf.{k}.disable_ipv6=1")],
        );
    }
}

impl Rig {
    fn new() -> Rig {
        let sw = NetNs::with_prefix("sw").unwrap();
        quiet(&sw);
        let mut vfs = Vec::new();
        let mut socks = Vec::new();
        for i in 0..PORTS {
            let vf = NetNs::with_prefix("vf").unwrap();
            quiet(&vf);
            let rep = format!("rep{i}");
            sw.veth_to(&rep, &vf, "eth0");
            sw.sh("ip", &["link", "set", &rep, "arp", "off", "up"]);
            vf.sh("ip", &["link", "set", "eth0", "arp", "off", "up"]);
            socks.push(vf.run(|| RawSocket::open("eth0").unwrap()));
            vfs.push(vf);
        }
        Rig {
            sw,
            _vfs: vfs,
            socks,
            bpf: BpfFs::new().unwrap(),
        }
    }

    /// Installs `flows`; returns each flow's counter slot.
    fn apply(&self, flows: &[Flow]) -> Vec<u32> {
        let dir = self.bpf.pin_dir();
        let flows = flows.to_vec();
        let report = self.sw.run(move || {
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

    fn maps(&self) -> Maps {
        Maps::open(&self.bpf.pin_dir()).unwrap().unwrap()
    }
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

const MARK: &[u8; 6] = b"PXTEST";

fn marker(id: u16) -> Vec<u8> {
    let mut m = MARK.to_vec();
    m.extend_from_slice(&id.to_be_bytes());
    m
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
    // Redirects are delivered synchronously in practice; give stragglers
    // a moment.
    std::thread::sleep(Duration::from_millis(3));
    let mark = marker(id);
    let mut outputs = Vec::new();
    for (j, s) in rig.socks.iter().enumerate() {
        for f in s.drain().unwrap() {
            if f.data.windows(mark.len()).any(|w| w == mark.as_slice()) {
                let tag = f.tag.map(|(tpid, tci)| Tag { tpid, tci });
                outputs.push((format!("rep{j}"), Packet { tag, frame: f.data }));
            }
        }
    }
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

/// Random packets over a small universe of values, so that flows match,
/// almost match and miss.
fn packet(rng: &mut Rng, id: u16) -> Packet {
    let pick = |rng: &mut Rng, xs: &[u64]| xs[rng.below(xs.len())];
    let macs: [Mac; 4] = [
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 1, 1],
        [2, 0, 0, 0, 0, 0x99],
        [0xff; 6],
    ];
    let src = macs[rng.below(2)];
    let dst = macs[rng.below(4)];
    let v4 = |rng: &mut Rng| {
        Ipv4Addr::from(pick(rng, &[0x0a01_0203, 0x0a01_ff01, 0x0a02_0001, 0xc0a8_0001]) as u32)
    };
    let six: [Ipv6Addr; 3] = [
        "fd00::1".parse().unwrap(),
        "fd00:0:0:1::2".parse().unwrap(),
        "fd01::1".parse().unwrap(),
    ];
    let v6 = |rng: &mut Rng| six[rng.below(3)];
    let port = |rng: &mut Rng| pick(rng, &[22, 80, 53, 1000, 0x1234, 0x1fff]) as u16;
    let mut payload = marker(id);
    payload.extend_from_slice(b"payload");
    let tos = pick(rng, &[0, 0x28, 0x2b, 0xb8]) as u8;
    let (eth_type, body) = match rng.below(7) {
        0 | 1 => (
            ETH_IP,
            frame::ipv4(
                v4(rng),
                v4(rng),
                17,
                tos,
                64,
                &frame::udp(port(rng), port(rng), &payload),
            ),
        ),
        2 => (
            ETH_IP,
            frame::ipv4(
                v4(rng),
                v4(rng),
                6,
                tos,
                64,
                &frame::tcp(
                    port(rng),
                    port(rng),
                    pick(rng, &[0x002, 0x012, 0x010, 0x011]) as u16,
                    &payload,
                ),
            ),
        ),
        3 => (
            ETH_IP,
            frame::ipv4(
                v4(rng),
                v4(rng),
                1,
                tos,
                64,
                &frame::icmp(pick(rng, &[8, 0]) as u8, 0, &payload),
            ),
        ),
        4 => (
            ETH_IPV6,
            frame::ipv6(
                v6(rng),
                v6(rng),
                17,
                tos,
                64,
                &frame::udp(port(rng), port(rng), &payload),
            ),
        ),
        5 => (
            ETH_IPV6,
            frame::ipv6(v6(rng), v6(rng), 58, 0, 255, &frame::icmp(128, 0, &payload)),
        ),
        _ => {
            let mut b = frame::arp(pick(rng, &[1, 2]) as u16, src, v4(rng), v4(rng));
            b.extend_from_slice(&payload);
            (ETH_ARP, b)
        }
    };
    let mut p = Packet::new(frame::ether(dst, src, eth_type, &body));
    p.tag = match rng.below(6) {
        0 => Some(Tag {
            tpid: ETH_8021Q,
            tci: 100 | (rng.below(8) as u16) << 13,
        }),
        1 => Some(Tag {
            tpid: ETH_8021Q,
            tci: 7,
        }),
        2 => Some(Tag {
            tpid: ETH_8021Q,
            tci: 9 | [0, 3][rng.below(2)] << 13,
        }),
        3 => Some(Tag {
            tpid: ETH_8021AD,
            tci: 100,
        }),
        _ => None,
    };
    p
}

fn check_table(name: &str, text: &str, packets: usize, seed: u64) {
    let flows = parse_flows(text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let rig = Rig::new();
    let slots = rig.apply(&flows);
    let maps = rig.maps();
    let mut rng = Rng::new(seed);
    let mut hit: BTreeMap<usize, usize> = BTreeMap::new();
    let (mut checked, mut outputs, mut misses) = (0, 0, 0);
    for id in 0..packets as u16 {
        // rep0 half the time, rep1 and rep2 a quarter each.
        let port = [0, 0, 1, 2][rng.below(4)];
        let p = packet(&mut rng, id);
        let want = eval::evaluate(&flows, &format!("rep{port}"), &p);
        if want.ambiguous {
            continue;
        }
        let attached = flows.iter().any(|f| f.in_port == format!("rep{port}"));
        let mut got = run_in_kernel(&rig, &maps, &slots, (port, attached), &p, id);
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
    check_table(
        "l3l4",
        "\
priority=300,in_port=rep0,tcp,tp_dst=22,actions=drop
priority=250,in_port=rep0,tcp,tcp_flags=+syn-ack,actions=output:rep3
priority=200,in_port=rep0,ip,nw_dst=10.1.0.0/16,actions=output:rep1
priority=200,in_port=rep0,ipv6,ipv6_dst=fd00::/16,actions=output:rep2
priority=150,in_port=rep0,udp,tp_dst=0x1000/0xf000,actions=mod_dl_dst:02:00:00:00:00:aa,output:rep2
priority=100,in_port=rep0,arp,arp_op=1,actions=output:rep1,output:rep2
priority=90,in_port=rep0,icmp,icmp_type=8,actions=output:rep3
priority=80,in_port=rep0,dl_src=02:00:00:00:00:00/ff:ff:ff:ff:ff:00,ip,nw_tos=0x28,actions=output:rep1
priority=70,in_port=rep0,udp6,tp_src=53,actions=output:rep3
priority=60,in_port=rep0,icmp6,icmp_type=128,actions=output:rep1
priority=10,in_port=rep0,ip,actions=drop
priority=100,in_port=rep2,dl_dst=ff:ff:ff:ff:ff:ff,actions=output:rep0,output:rep1,output:rep3
priority=50,in_port=rep2,arp,arp_tpa=10.1.0.0/16,actions=mod_dl_src:02:00:00:00:00:bb,mod_dl_dst:02:00:00:00:00:cc,output:rep3
",
        800,
        1,
    );
}

#[test]
fn vlan_push_pop_modify_and_goto_agree_with_the_evaluator() {
    check_table(
        "vlan",
        "\
priority=50,in_port=rep1,dl_vlan=100,ip,actions=strip_vlan,output:rep0
priority=40,in_port=rep1,dl_vlan=0xffff,ip,actions=mod_vlan_vid:200,mod_vlan_pcp:5,output:rep0
priority=35,in_port=rep1,dl_vlan=100,dl_vlan_pcp=2,actions=mod_vlan_vid:101,output:rep3
priority=30,in_port=rep1,dl_vlan=7,actions=mod_vlan_vid:8,mod_vlan_pcp:6,output:rep2
priority=20,in_port=rep1,dl_vlan=9,dl_vlan_pcp=3,actions=push_vlan:0x88a8,mod_vlan_vid:10,output:rep3,strip_vlan,output:rep2
priority=20,in_port=rep1,dl_vlan=9,dl_vlan_pcp=0,actions=drop
priority=10,in_port=rep1,dl_type=0x0806,actions=mod_dl_src:02:00:00:00:00:bb,output:rep3
table=0,in_port=rep2,actions=mod_dl_dst:02:00:00:00:00:99,goto_table:3
table=3,priority=20,in_port=rep2,dl_dst=02:00:00:00:00:99,udp,actions=output:rep0,goto_table:7
table=3,priority=20,in_port=rep2,dl_vlan=100,ip,actions=strip_vlan,goto_table:7
table=3,priority=10,in_port=rep2,actions=output:rep1
table=7,priority=5,in_port=rep2,udp,tp_src=1000,actions=push_vlan:0x8100,mod_vlan_vid:4,output:rep3
table=7,priority=5,in_port=rep2,tcp,actions=output:rep1
table=0,in_port=rep0,dl_vlan=100,actions=goto_table:1
table=1,in_port=rep0,dl_vlan=100,dl_vlan_pcp=7,actions=output:rep3
",
        800,
        2,
    );
}
