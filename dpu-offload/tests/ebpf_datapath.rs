//! The eBPF datapath on the real kernel: netns "VFs" wired to veth
//! "representors" in a switch namespace where nothing else forwards; the
//! classifier decides everything, and traffic proves each decision.

use std::{net::UdpSocket, time::Duration};

use plexus_dpu_offload::{
    datapath::{self, Datapath, Maps},
    ebpf,
    install::{self, Change},
    parse::parse_flows,
};
use plexus_netlink::Netlink;
use plexus_testkit::{BpfFs, NetNs, pin_to_cpu};

/// A switch namespace with `n` representors `rep0..`, each the peer of
/// `eth0` in its own VF namespace with 10.9.0.(i+1)/24 and MAC
/// 02:00:00:00:00:0(i+1), and static neighbour entries for the others.
struct Rig {
    sw: NetNs,
    vfs: Vec<NetNs>,
    bpf: BpfFs,
}

fn mac(i: usize) -> String {
    format!("02:00:00:00:00:{:02x}", i + 1)
}

fn ip(i: usize) -> String {
    format!("10.9.0.{}", i + 1)
}

impl Rig {
    fn new(n: usize) -> Rig {
        let sw = NetNs::with_prefix("sw").unwrap();
        let mut vfs = Vec::new();
        for i in 0..n {
            let vf = NetNs::with_prefix("vf").unwrap();
            let rep = format!("rep{i}");
            sw.veth_to(&rep, &vf, "eth0");
            vf.sh("ip", &["link", "set", "eth0", "address", &mac(i)]);
            vf.sh(
                "ip",
                &["addr", "add", &format!("{}/24", ip(i)), "dev", "eth0"],
            );
            vf.sh("ip", &["link", "set", "eth0", "up"]);
            vf.sh("ip", &["link", "set", "lo", "up"]);
            vfs.push(vf);
        }
        // Static neighbours: no ARP to wait for or to queue packets behind,
        // so every packet a test sends is one the classifier sees at once.
        for (i, vf) in vfs.iter().enumerate() {
            for j in (0..n).filter(|j| *j != i) {
                vf.sh(
                    "ip",
                    &[
                        "neigh",
                        "add",
                        &ip(j),
                        "lladdr",
                        &mac(j),
                        "dev",
                        "eth0",
                        "nud",
                        "permanent",
                    ],
                );
            }
        }
        Rig {
            sw,
            vfs,
            bpf: BpfFs::new().unwrap(),
        }
    }

    fn apply(&self, text: &str) -> datapath::EbpfReport {
        let flows = parse_flows(text).unwrap();
        let dir = self.bpf.pin_dir();
        self.sw.run(move || {
            let mut nl = Netlink::new().unwrap();
            let ports = install::host_ports(&mut nl, &[]).unwrap();
            let table = ebpf::compile(&flows, &ports).unwrap();
            let mut dp = Datapath::load(&dir).unwrap();
            dp.apply(&mut nl, &table, &ports).unwrap()
        })
    }

    /// Packets of a flow, found by its canonical text.
    fn packets(&self, flow: &str) -> u64 {
        let all = self.installed();
        all.iter()
            .find(|f| f.flow.to_string() == flow)
            .unwrap_or_else(|| {
                let have: Vec<String> = all.iter().map(|f| f.flow.to_string()).collect();
                panic!("{flow} not installed: {have:#?}")
            })
            .counters
            .packets
    }

    fn installed(&self) -> Vec<datapath::EbpfInstalled> {
        let dir = self.bpf.pin_dir();
        self.sw.run(move || {
            let mut nl = Netlink::new().unwrap();
            let ports = install::host_ports(&mut nl, &[]).unwrap();
            Maps::open(&dir)
                .unwrap()
                .unwrap()
                .installed(&ports)
                .unwrap()
        })
    }

    fn ping(&self, from: usize, to: usize, count: u32) -> bool {
        self.vfs[from]
            .exec(
                "ping",
                &[
                    "-c",
                    &count.to_string(),
                    "-i",
                    "0.05",
                    "-W",
                    "1",
                    "-q",
                    &ip(to),
                ],
            )
            .unwrap()
            .status
            .success()
    }
}

#[test]
fn redirect_flows_carry_pings_and_count_them() {
    let rig = Rig::new(3);
    assert!(!rig.ping(0, 1, 1), "nothing forwards before the flows");
    let report = rig.apply(
        "in_port=rep0,arp,actions=output:rep1\n\
         in_port=rep1,arp,actions=output:rep0\n\
         in_port=rep0,icmp,nw_dst=10.9.0.2,actions=output:rep1\n\
         in_port=rep1,icmp,nw_dst=10.9.0.1,actions=output:rep0\n",
    );
    assert_eq!(report.flows.len(), 4);
    assert!(rig.ping(0, 1, 3));
    assert!(!rig.ping(0, 2, 1), "no flow to rep2");
    let flows = rig.installed();
    let icmp: Vec<u64> = flows
        .iter()
        .filter(|f| f.flow.matches.nw_proto == Some(1))
        .map(|f| f.counters.packets)
        .collect();
    assert_eq!(icmp, vec![3, 3], "{flows:#?}");
}

/// A UDP socket bound in VF `i` (port `port`), with a short read timeout.
fn udp_in(rig: &Rig, i: usize, port: u16) -> UdpSocket {
    let addr = format!("{}:{port}", ip(i));
    rig.vfs[i].run(move || {
        let s = UdpSocket::bind(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    })
}

fn count_received(s: &UdpSocket) -> usize {
    let mut buf = [0u8; 64];
    let mut n = 0;
    while s.recv(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// Counts datagrams until `expected` arrived, or, once the sender is `done`,
/// until 3 s pass without one: under TCG the last packets of a stream can
/// still be in a veth backlog when the sender finishes.
fn count_received_until(
    s: &UdpSocket,
    done: &std::sync::atomic::AtomicBool,
    expected: usize,
) -> usize {
    let mut buf = [0u8; 64];
    let (mut n, mut quiet) = (0, 0);
    while n < expected {
        if s.recv(&mut buf).is_ok() {
            n += 1;
            quiet = 0;
        } else if done.load(std::sync::atomic::Ordering::SeqCst) {
            quiet += 1;
            if quiet == 10 {
                break;
            }
        }
    }
    n
}

#[test]
fn a_five_tuple_drop_stops_exactly_its_packets() {
    let rig = Rig::new(2);
    rig.apply(
        "priority=200,in_port=rep0,udp,nw_src=10.9.0.1,nw_dst=10.9.0.2,tp_src=4000,tp_dst=5001,actions=drop\n\
         priority=100,in_port=rep0,ip,actions=output:rep1\n",
    );
    let open = udp_in(&rig, 1, 5000);
    let closed = udp_in(&rig, 1, 5001);
    let tx = rig.vfs[0].run(|| UdpSocket::bind("10.9.0.1:4000").unwrap());
    for _ in 0..50 {
        tx.send_to(b"a", "10.9.0.2:5000").unwrap();
        tx.send_to(b"b", "10.9.0.2:5001").unwrap();
    }
    assert_eq!(count_received(&open), 50);
    assert_eq!(
        count_received(&closed),
        0,
        "the 5-tuple drop let packets through"
    );
    assert_eq!(
        rig.packets("table=0,priority=200,in_port=rep0,udp,nw_src=10.9.0.1,nw_dst=10.9.0.2,tp_src=4000,tp_dst=5001,actions=drop"),
        50
    );
    assert_eq!(
        rig.packets("table=0,priority=100,in_port=rep0,ip,actions=output:rep1"),
        50
    );
}

#[test]
fn vlan_push_and_pop_carry_pings_across_a_tagged_trunk() {
    // rep0 -> push 100 -> trunk0 ~ trunk1 -> pop -> rep1, and back with
    // VID 200: pings pass only if both tags are pushed, matched and popped.
    let rig = Rig::new(2);
    rig.sw.sh(
        "ip",
        &[
            "link", "add", "trunk0", "type", "veth", "peer", "name", "trunk1",
        ],
    );
    for l in ["trunk0", "trunk1"] {
        rig.sw.sh("ip", &["link", "set", l, "up"]);
    }
    rig.apply(
        "in_port=rep0,ip,actions=push_vlan:0x8100,mod_vlan_vid:100,output:trunk0\n\
         in_port=trunk1,dl_vlan=100,ip,actions=strip_vlan,output:rep1\n\
         in_port=rep1,ip,actions=mod_vlan_vid:200,output:trunk1\n\
         in_port=trunk0,dl_vlan=200,ip,actions=pop_vlan,output:rep0\n",
    );
    assert!(rig.ping(0, 1, 4));
    for f in [
        "table=0,priority=32768,in_port=trunk1,ip,dl_vlan=100,actions=strip_vlan,output:rep1",
        "table=0,priority=32768,in_port=trunk0,ip,dl_vlan=200,actions=strip_vlan,output:rep0",
    ] {
        assert_eq!(rig.packets(f), 4, "{f}");
    }
}

#[test]
fn a_mac_rewrite_makes_a_misaddressed_ping_arrive() {
    let rig = Rig::new(2);
    // VF0 believes 10.9.0.2 is at 02:00:00:00:00:ee; only the rewrite to
    // VF1's real MAC gets the echo accepted there.
    rig.vfs[0].sh(
        "ip",
        &[
            "neigh",
            "replace",
            "10.9.0.2",
            "lladdr",
            "02:00:00:00:00:ee",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
    );
    let base = "in_port=rep1,ip,actions=output:rep0\n";
    rig.apply(&format!("in_port=rep0,ip,actions=output:rep1\n{base}"));
    assert!(!rig.ping(0, 1, 1), "VF1 accepted a frame for another MAC");
    rig.apply(&format!(
        "in_port=rep0,ip,dl_dst=02:00:00:00:00:ee,actions=mod_dl_dst:{},output:rep1\n{base}",
        mac(1)
    ));
    assert!(rig.ping(0, 1, 2));
}

#[test]
fn reapplying_a_changed_table_loses_no_packet_of_an_unchanged_flow() {
    let rig = Rig::new(3);
    // No IPv6 chatter (router solicitations, MLD): every frame VF1's
    // interface receives is one of the stream's.
    for ns in std::iter::once(&rig.sw).chain(&rig.vfs) {
        ns.sh("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    }
    let stream = "in_port=rep0,udp,tp_dst=6000,actions=output:rep1\n";
    // Every port the swaps use has the classifier (and so its clsact)
    // before the stream starts: creating a port's first clsact deactivates
    // its queues, and on 6.1 a packet redirected to it meanwhile is lost.
    let report = rig.apply(&format!(
        "{stream}in_port=rep2,ip,actions=output:rep0\nin_port=rep1,arp,actions=output:rep2\n"
    ));
    let rx = udp_in(&rig, 1, 6000);
    // Room for the whole stream, so a busy CPU cannot make the socket drop
    // what the datapath delivered; read as they come all the same.
    let size: libc::c_int = 16 << 20;
    // SAFETY: setsockopt with a valid fd and a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&rx),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            4,
        )
    };
    assert_eq!(rc, 0);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver = {
        let done = done.clone();
        std::thread::spawn(move || count_received_until(&rx, &done, N))
    };
    let vf1_rx = || {
        rig.vfs[1].ip_json(&["-s", "link", "show", "eth0"])[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .unwrap()
    };
    let rx_before = vf1_rx();
    let tx = rig.vfs[0].run(|| UdpSocket::bind("10.9.0.1:0").unwrap());
    const N: usize = 3000;
    let sender = {
        let done = done.clone();
        std::thread::spawn(move || {
            for _ in 0..N {
                tx.send_to(b"s", "10.9.0.2:6000").unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    // Swap tables under the stream: other flows come and go, the stream's
    // flow stays and keeps its counter slot.
    let mut swaps = 0;
    while !sender.is_finished() {
        let extra = if swaps % 2 == 0 {
            "in_port=rep2,ip,actions=output:rep0\nin_port=rep0,tcp,actions=drop\n"
        } else {
            "in_port=rep1,arp,actions=output:rep2\n"
        };
        let r = rig.apply(&format!("{stream}{extra}"));
        assert_eq!(r.flows[0].1, Change::Kept);
        assert_eq!(
            r.flows[0].2, report.flows[0].2,
            "the stream's flow moved to another slot"
        );
        swaps += 1;
    }
    sender.join().unwrap();
    assert!(swaps >= 3, "only {swaps} swaps during the stream");
    let got = receiver.join().unwrap();
    // Every packet matched the stream's flow through all the swaps, and
    // reached VF1's interface unless the veth queue behind rep1 dropped it
    // (a CPU busy with swaps on a small machine), which says so. What VF1's
    // own stack does with it after (a socket under TCG) is not the
    // datapath's: the socket's count is shown, not asserted.
    assert_eq!(
        rig.packets("table=0,priority=32768,in_port=rep0,udp,tp_dst=6000,actions=output:rep1"),
        N as u64
    );
    let queue_drops =
        rig.sw.ip_json(&["-s", "link", "show", "rep1"])[0]["stats64"]["tx"]["dropped"]
            .as_u64()
            .unwrap();
    let delivered = vf1_rx() - rx_before;
    assert_eq!(
        delivered + queue_drops,
        N as u64,
        "packets lost across {swaps} swaps: VF1 received {delivered} (its socket {got}), \
         the veth queue dropped {queue_drops}; rep1 {}, datapath {}",
        rig.sw.ip_json(&["-s", "link", "show", "rep1"])[0]["stats64"],
        {
            let dir = rig.bpf.pin_dir();
            rig.sw
                .run(move || format!("{:?}", Maps::open(&dir).unwrap().unwrap().stats().unwrap()))
        },
    );
    assert!(
        got as u64 <= delivered,
        "the socket got {got} of {delivered}"
    );
}

#[test]
fn a_kept_drop_stops_every_packet_through_a_hundred_generation_swaps() {
    // Each re-apply changes one unrelated flow (a new subtable between the
    // drop and the forward, or one at the bottom), so every swap writes a
    // whole new generation and deletes the old one while a stream that only
    // the kept high-priority drop stops is in flight. A packet that saw a
    // mix of the two generations (the drop already gone from the one it
    // searches, the forward still there) would reach VF1.
    let rig = Rig::new(2);
    let head = "priority=200,in_port=rep0,udp,tp_dst=7000,actions=drop
                priority=100,in_port=rep0,ip,actions=output:rep1
";
    let first = rig.apply(head);
    let blocked = udp_in(&rig, 1, 7000);
    let open = udp_in(&rig, 1, 7001);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tx = rig.vfs[0].run(|| UdpSocket::bind("10.9.0.1:0").unwrap());
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                tx.send_to(b"x", "10.9.0.2:7000").unwrap();
                tx.send_to(b"y", "10.9.0.2:7001").unwrap();
                sent += 1;
                std::thread::sleep(Duration::from_micros(100));
            }
            sent
        })
    };
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver = {
        let done = done.clone();
        std::thread::spawn(move || count_received_until(&open, &done, usize::MAX))
    };
    const SWAPS: usize = 100;
    for i in 0..SWAPS {
        let extra = match i % 3 {
            0 => format!(
                "priority=150,in_port=rep0,udp,nw_dst=10.9.1.{},actions=drop\n",
                i % 200
            ),
            1 => format!(
                "priority=50,in_port=rep0,tcp,tp_src={},actions=drop\n",
                1000 + i
            ),
            _ => String::new(),
        };
        let r = rig.apply(&format!("{head}{extra}"));
        assert_eq!(r.flows[0].1, Change::Kept, "swap {i}");
        assert_eq!(
            r.flows[0].2, first.flows[0].2,
            "the drop moved slot at swap {i}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent = sender.join().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let forwarded = receiver.join().unwrap();
    let leaked = count_received(&blocked);
    assert_eq!(
        leaked, 0,
        "{leaked} of {sent} packets got past the kept drop in {SWAPS} swaps"
    );
    // The stream ran through the swaps: the forward carried its twin, and
    // the drop counted every packet it stopped.
    assert!(
        sent >= SWAPS as u64,
        "only {sent} packets during {SWAPS} swaps"
    );
    assert!(forwarded > 0, "nothing was forwarded: the stream never ran");
    assert_eq!(
        rig.packets("table=0,priority=200,in_port=rep0,udp,tp_dst=7000,actions=drop"),
        sent
    );
}

#[test]
fn ten_thousand_flows_install_read_back_and_reapply_as_kept() {
    // More than one batch (4096) of map writes, reads and deletes.
    let rig = Rig::new(2);
    let table = |base: u32| {
        (0..10_000u32)
            .map(|i| {
                let a = base + i;
                format!(
                    "in_port=rep0,ip,nw_dst=10.{}.{}.{},actions=output:rep1\n",
                    a >> 16 & 0xff,
                    a >> 8 & 0xff,
                    a & 0xff
                )
            })
            .collect::<String>()
    };
    let first = rig.apply(&table(0));
    assert!(first.flows.iter().all(|f| f.1 == Change::Added));
    let again = rig.apply(&table(0));
    assert!(again.flows.iter().all(|f| f.1 == Change::Kept));
    assert_eq!(again.removed, 0);
    let half = rig.apply(&table(5_000));
    assert_eq!(half.removed, 5_000);
    assert_eq!(
        half.flows.iter().filter(|f| f.1 == Change::Kept).count(),
        5_000
    );
    let installed = rig.installed();
    assert_eq!(installed.len(), 10_000);
    let mut slots: Vec<u32> = installed.iter().map(|f| f.slot).collect();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(slots.len(), 10_000, "two flows share a counter slot");
}

/// The key the classifier builds for a UDP packet from VF `from` to VF
/// `to` as it arrives at `rep{from}` (`ifindex`): untagged IPv4, TOS 0,
/// TTL 64, what `parse` in plexus_tc.c fills in.
fn udp_key(ifindex: u32, from: usize, to: usize, sport: u16, dport: u16) -> ebpf::PxKey {
    let mac = |i: usize| [2, 0, 0, 0, 0, i as u8 + 1];
    let ip = |i: usize| {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[10, 9, 0, i as u8 + 1]);
        a
    };
    ebpf::PxKey {
        ifindex,
        dl_dst: mac(to),
        dl_src: mac(from),
        eth_type: 0x0800u16.to_be_bytes(),
        nw_proto: 17,
        nw_ttl: 64,
        nw_src: ip(from),
        nw_dst: ip(to),
        tp_src: sport.to_be_bytes(),
        tp_dst: dport.to_be_bytes(),
        ..Default::default()
    }
}

#[test]
fn two_microflows_in_one_cache_slot_each_get_their_own_flow() {
    let rig = Rig::new(2);
    // Nothing but the test's packets at rep0: every cache miss is theirs.
    for k in ["all", "default", "eth0"] {
        rig.vfs[0].sh(
            "sysctl",
            &["-qw", &format!("net.ipv6.conf.{k}.disable_ipv6=1")],
        );
    }
    // Different masks: under a wrong cache hit, B would be looked up with
    // A's mask, find nothing and pass instead of being dropped.
    let a_flow =
        "table=0,priority=200,in_port=rep0,udp,nw_dst=10.9.0.2,tp_dst=5000,actions=output:rep1";
    let b_flow = "table=0,priority=100,in_port=rep0,ip,actions=drop";
    rig.apply(&format!("{a_flow}\n{b_flow}\n"));
    let maps = Maps::open(&rig.bpf.pin_dir()).unwrap().unwrap();
    let epoch = maps.active().unwrap().epoch;
    let rep0 = rig.sw.ip_json(&["link", "show", "rep0"])[0]["ifindex"]
        .as_u64()
        .unwrap() as u32;

    // A: 4000 -> 5000; B: a source port whose key takes A's slot.
    let slot = ebpf::cache_slot(&udp_key(rep0, 0, 1, 4000, 5000), epoch);
    let b_port = (1024..=u16::MAX)
        .find(|p| ebpf::cache_slot(&udp_key(rep0, 0, 1, *p, 5001), epoch) == slot)
        .expect("a colliding source port");
    let rx = udp_in(&rig, 1, 5000);
    let (a, b) = rig.vfs[0].run(|| {
        (
            UdpSocket::bind("10.9.0.1:4000").unwrap(),
            UdpSocket::bind(format!("10.9.0.1:{b_port}")).unwrap(),
        )
    });
    let send = |order: &[&UdpSocket]| {
        // One CPU: the cache is per CPU, and the slot must be shared.
        std::thread::scope(|s| {
            s.spawn(|| {
                pin_to_cpu(0);
                for sock in order {
                    let port = if std::ptr::eq(*sock, &a) { 5000 } else { 5001 };
                    sock.send_to(b"x", format!("10.9.0.2:{port}")).unwrap();
                }
            });
        });
    };

    let before = maps.stats().unwrap();
    send(&[&a, &b, &a, &b]);
    assert_eq!(count_received(&rx), 2);
    let after = maps.stats().unwrap();
    assert_eq!(
        after.cache_misses - before.cache_misses,
        4,
        "A and B did not evict each other: cache_slot disagrees with the classifier"
    );
    assert_eq!(rig.packets(a_flow), 2);
    assert_eq!(rig.packets(b_flow), 2, "B took A's cached answer");
    assert_eq!(after.miss.packets, before.miss.packets);

    // A alone: the second packet is a hit.
    send(&[&a, &a]);
    assert_eq!(count_received(&rx), 2);
    assert_eq!(maps.stats().unwrap().cache_misses - after.cache_misses, 1);
    assert_eq!(rig.packets(a_flow), 4);
}

/// `px_active` as user space would leave it half-written: its `gen` field
/// still naming one generation while its epoch already names the other.
/// The classifier takes the generation from the epoch alone (one load), so
/// a packet never searches a generation other than its epoch's, and no
/// cache slot of an epoch ever holds a mask of the other generation.
#[test]
fn a_torn_active_record_never_serves_or_caches_the_other_generation() {
    use aya::maps::{Array, Map, MapData};

    let rig = Rig::new(2);
    for k in ["all", "default", "eth0"] {
        rig.vfs[0].sh(
            "sysctl",
            &["-qw", &format!("net.ipv6.conf.{k}.disable_ipv6=1")],
        );
    }
    let flow = "table=0,priority=100,in_port=rep0,udp,actions=output:rep1";
    rig.apply(&format!("{flow}\n"));
    let maps = Maps::open(&rig.bpf.pin_dir()).unwrap().unwrap();
    let live = maps.active().unwrap();
    assert_eq!(live.gen_, live.epoch & 1);
    let pin = MapData::from_pin(rig.bpf.pin_dir().join("px_active")).unwrap();
    let mut active: Array<MapData, ebpf::PxActive> =
        Array::try_from(Map::from_map_data(pin).unwrap()).unwrap();

    let rx = udp_in(&rig, 1, 5000);
    let tx = rig.vfs[0].run(|| UdpSocket::bind("10.9.0.1:4000").unwrap());
    let send = |n: usize| {
        std::thread::scope(|s| {
            s.spawn(|| {
                pin_to_cpu(0);
                for _ in 0..n {
                    tx.send_to(b"x", "10.9.0.2:5000").unwrap();
                }
            });
        });
    };
    // The live table carries the flow, and its mask is now cached for
    // this epoch on CPU 0.
    send(3);
    assert_eq!(count_received(&rx), 3);
    assert_eq!(rig.packets(flow), 3);

    // Torn: gen still the full generation, epoch the next, empty one.
    let next = live.epoch.wrapping_add(1);
    let torn = ebpf::PxActive {
        gen_: live.gen_,
        epoch: next,
    };
    active.set(0, torn, 0).unwrap();
    let before = maps.stats().unwrap();
    send(3);
    assert_eq!(
        count_received(&rx),
        0,
        "a packet searched the generation of px_active.gen, not its epoch's"
    );
    let after = maps.stats().unwrap();
    assert_eq!(after.miss.packets - before.miss.packets, 3);

    // Whole again at the same epoch: had the torn read cached the full
    // generation's mask under this epoch, these would hit it.
    active
        .set(
            0,
            ebpf::PxActive {
                gen_: next & 1,
                epoch: next,
            },
            0,
        )
        .unwrap();
    send(3);
    assert_eq!(count_received(&rx), 0, "a foreign mask was cached");
    assert_eq!(maps.stats().unwrap().miss.packets - after.miss.packets, 3);

    // Back to the full generation at a later epoch: found again.
    let back = next.wrapping_add(1);
    active
        .set(
            0,
            ebpf::PxActive {
                gen_: back & 1,
                epoch: back,
            },
            0,
        )
        .unwrap();
    send(3);
    assert_eq!(count_received(&rx), 3);
    // (The flow's counter is read through the live generation, so only
    // now: none of the six missed packets was counted on it.)
    assert_eq!(rig.packets(flow), 6);
}
