//! `make bench`: the eBPF datapath on the real kernel, in throwaway
//! namespaces with a private BPF filesystem.
//!
//! 1. Install rate: a table of N flows (1k, 10k; five flow shapes over four
//!    ports) replaced by another of N different flows, i.e. N added and N
//!    removed per apply, through `Datapath::apply` (map writes, attach,
//!    the flip, the old generation's removal). Baseline in the same run:
//!    the same batched syscalls for the same number of entries
//!    (`BPF_MAP_UPDATE_BATCH` and `BPF_MAP_DELETE_BATCH`) on a plain hash
//!    map of the same key and value sizes. Target ≥ 100k flows/s.
//! 2. Datapath: UDP frames sent as fast as one CPU can over a veth pair
//!    (raw socket, `AF_PACKET`) into `d0`, whose ingress runs the
//!    classifier, against the same pair without a classifier, rounds
//!    interleaved. Counted: frames that reached `d0` (sent less what veth
//!    dropped for a full receive queue), per second. The table: 10k flows
//!    over 32 distinct masks, all `output:up0` (a veth whose peer's stack
//!    drops the frames, as `d0`'s does without a classifier). Traffic:
//!    65,536 distinct 5-tuples that all hit (so the microflow cache cannot
//!    hide the search), one hot 5-tuple of the last mask searched, and
//!    65,536 that all miss. A forwarding floor: one catch-all flow to
//!    `up0` with the hot traffic, the least any flow that forwards costs
//!    (parse, one probe, the redirect and the extra veth hop), so that the
//!    hot flow's cost can be split into forwarding and searching. Before
//!    measuring, the datapath's own counters check the mix. Targets: ≥ 0.85
//!    of bare veth on the hit mix, ≥ 0.90 with one hot flow.

#![expect(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::{
    hint::black_box,
    net::Ipv4Addr,
    os::fd::{FromRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use plexus_dpu_offload::{
    datapath::{self, Datapath, batch},
    ebpf::{self, PxFlow, PxLookup},
    eval::frame,
    install,
    parse::parse_flows,
};
use plexus_e2e::bench::{flow_table, median, ms, table};
use plexus_netlink::Netlink;
use plexus_testkit::{BpfFs, NetNs, RawSocket, pin_to_cpu};

const RUNS: usize = 11;
const ROUNDS: usize = 15;
const WINDOW: Duration = Duration::from_millis(400);

fn ports_ns() -> NetNs {
    let ns = NetNs::with_prefix("bench-dp").unwrap();
    for (a, b) in [("rep0", "rep1"), ("rep2", "rep3"), ("up0", "mon0")] {
        ns.sh("ip", &["link", "add", a, "type", "veth", "peer", "name", b]);
        ns.sh("ip", &["link", "set", a, "up"]);
        ns.sh("ip", &["link", "set", b, "up"]);
    }
    ns
}

fn apply(ns: &NetNs, dir: &Path, text: &str) -> Duration {
    let flows = parse_flows(text).unwrap();
    let dir = dir.to_owned();
    ns.run(move || {
        let mut nl = Netlink::new().unwrap();
        let ports = install::host_ports(&mut nl, &[]).unwrap();
        let table = ebpf::compile(&flows, &ports).unwrap();
        let t = Instant::now();
        let mut dp = Datapath::load(&dir).unwrap();
        let r = dp.apply(&mut nl, &table, &ports).unwrap();
        let d = t.elapsed();
        assert_eq!(r.flows.len(), flows.len());
        d
    })
}

/// A plain BPF hash map of the flow map's key and value sizes, made with
/// the raw syscall.
fn plain_map(max: usize) -> OwnedFd {
    #[repr(C)]
    struct Create {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_HASH: u32 = 1;
    const BPF_F_NO_PREALLOC: u32 = 1;
    let attr = Create {
        map_type: BPF_MAP_TYPE_HASH,
        key_size: size_of::<PxLookup>() as u32,
        value_size: size_of::<PxFlow>() as u32,
        max_entries: max as u32,
        map_flags: BPF_F_NO_PREALLOC,
    };
    // SAFETY: the bpf syscall reads `size_of::<Create>()` bytes of `attr`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &attr as *const Create,
            size_of::<Create>(),
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// The floor: the same batched syscalls the installer uses, for N entries
/// written and N deleted, on a plain map (no tables, masks, counters,
/// attach or flip).
fn raw_floor(n: usize) -> Duration {
    let fd = plain_map(2 * n);
    let (keys, values): (Vec<PxLookup>, Vec<PxFlow>) = (0..n)
        .map(|i| {
            let mut k = PxLookup::default();
            k.key.ifindex = i as u32;
            let v = PxFlow {
                slot: i as u32,
                priority: 1,
                n_actions: 1,
                pad: 0,
                cookie: 0,
                act: [ebpf::PxAction::default(); ebpf::MAX_ACTIONS],
            };
            (k, v)
        })
        .unzip();
    let t = Instant::now();
    batch::update(&fd, &keys, &values).unwrap();
    batch::delete(&fd, &keys).unwrap();
    let d = t.elapsed();
    black_box((keys, values));
    d
}

fn install_rate() -> Vec<(usize, Duration, Duration)> {
    let ns = ports_ns();
    let fs = BpfFs::new().unwrap();
    let dir = fs.pin_dir();
    let ports = ["rep0", "rep1", "rep2", "rep3"];
    let mut out = Vec::new();
    for n in [1_000, 10_000] {
        let tables = [flow_table(n, 0, &ports), flow_table(n, n, &ports)];
        apply(&ns, &dir, &tables[1]); // program verified and pinned once
        let mut ours = Vec::new();
        let mut floor = Vec::new();
        for r in 0..RUNS {
            ours.push(apply(&ns, &dir, &tables[r % 2]));
            floor.push(raw_floor(n));
        }
        let (o, f) = (median(&mut ours), median(&mut floor));
        print!(
            "{}",
            table(
                &format!("eBPF install: replace a table of {n} flows ({n} added, {n} removed)"),
                &mut [
                    ("Datapath::apply (ours)", ours),
                    ("batched map update + delete, plain map (floor)", floor),
                ]
            )
        );
        out.push((n, o, f));
    }
    ns.run(|| {
        let mut nl = Netlink::new().unwrap();
        let ports = install::host_ports(&mut nl, &[]).unwrap();
        datapath::flush(&mut nl, &dir, &ports).unwrap();
    });
    out
}

/// `g0`'s transmit drops: frames veth could not queue to its peer.
fn tx_dropped(ns: &NetNs) -> u64 {
    ns.ip_json(&["-s", "link", "show", "g0"])[0]["stats64"]["tx"]["dropped"]
        .as_u64()
        .unwrap()
}

/// Frames per second that reached `d0`'s ingress during `WINDOW`: sent,
/// less what veth dropped because `d0`'s queue was full (the receive path
/// was slower than the sender).
fn blast(ns: &NetNs, sock: &RawSocket, frames: &[Vec<u8>]) -> f64 {
    let dropped = tx_dropped(ns);
    let t = Instant::now();
    let mut n = 0u64;
    let mut next = frames.iter().cycle();
    while t.elapsed() < WINDOW {
        for _ in 0..64 {
            if sock.send(next.next().unwrap()).is_ok() {
                n += 1;
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    (n - (tx_dropped(ns) - dropped)) as f64 / secs
}

/// The mix's table: 10,000 UDP flows on `d0` over 32 distinct masks
/// (destination prefix lengths /32 to /17, each with and without an exact
/// destination port; every flow also matches its source address exactly).
/// Mask `k` covers destinations in 10.k.0.0/16 with priority 1000 − k, so
/// the packets of mask `k` search `k + 1` subtables before they hit: 16.5 on
/// average, as many masks as a real table spreads its traffic over.
fn mix_table() -> String {
    let mut s = String::new();
    for f in 0..MIX_FLOWS {
        let (k, i) = (f % MASKS, f / MASKS);
        let plen = 32 - k % 16;
        let port = if k >= 16 {
            format!(",tp_dst={}", 1000 + k)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "priority={},in_port=d0,udp,nw_src=192.168.{}.{},nw_dst=10.{k}.0.0/{plen}{port},actions=output:up0\n",
            1000 - k,
            i / 256,
            i % 256
        ));
    }
    s
}

const MIX_FLOWS: usize = 10_000;
const MASKS: usize = 32;
const TUPLES: usize = 65_536;

/// The frame of 5-tuple `t`: flow `t % 10,000`'s source address, source
/// port `1024 + t / 10,000` (so the 65,536 tuples are distinct), and a
/// destination its flow matches (`miss`: one in 10.(100 + k).0.0, which no
/// flow matches). Addressed to another host: whatever tc does, the stack
/// drops it at once.
fn mix_frame(t: usize, miss: bool) -> Vec<u8> {
    let f = t % MIX_FLOWS;
    let (k, i) = (f % MASKS, f / MASKS);
    let dst = Ipv4Addr::new(10, (k + if miss { 100 } else { 0 }) as u8, 0, 0);
    frame::ether(
        [2, 0, 0, 0, 0xee, 0xee],
        [2, 0, 0, 0, 0, 1],
        0x0800,
        &frame::ipv4(
            Ipv4Addr::new(192, 168, (i / 256) as u8, (i % 256) as u8),
            dst,
            17,
            0,
            64,
            &frame::udp((1024 + t / MIX_FLOWS) as u16, (1000 + k) as u16, &[0u8; 18]),
        ),
    )
}

/// A measured configuration: its name, the flows installed (none: no
/// classifier), the traffic, and the row of its baseline.
type Config<'a> = (&'static str, Option<&'a String>, &'a [Vec<u8>], usize);

fn datapath_pps() -> Vec<(&'static str, usize, f64)> {
    // The sender and the softirq work its frames cause share one CPU in
    // every configuration.
    pin_to_cpu(0);
    let gen_ns = NetNs::with_prefix("bench-gen").unwrap();
    let dut = NetNs::with_prefix("bench-dut").unwrap();
    // No IPv6: no router solicitations or DAD among the counted frames.
    for ns in [&gen_ns, &dut] {
        for k in ["all", "default"] {
            ns.sh(
                "sysctl",
                &["-qw", &format!("net.ipv6.conf.{k}.disable_ipv6=1")],
            );
        }
    }
    gen_ns.sh(
        "ip",
        &[
            "link",
            "add",
            "g0",
            "type",
            "veth",
            "peer",
            "name",
            "d0",
            "netns",
            dut.name(),
        ],
    );
    gen_ns.sh("ip", &["link", "set", "g0", "up"]);
    // Where the flows send their packets: the stack behind mon0 drops them
    // as the one behind d0 does without a classifier.
    dut.sh(
        "ip",
        &["link", "add", "up0", "type", "veth", "peer", "name", "mon0"],
    );
    for l in ["d0", "up0", "mon0"] {
        dut.sh("ip", &["link", "set", l, "up"]);
    }
    let fs = BpfFs::new().unwrap();
    let dir = fs.pin_dir();
    let sock = gen_ns.run(|| RawSocket::open("g0").unwrap());
    let hit: Vec<Vec<u8>> = (0..TUPLES).map(|t| mix_frame(t, false)).collect();
    let miss: Vec<Vec<u8>> = (0..TUPLES).map(|t| mix_frame(t, true)).collect();
    // One flow of the last mask searched: only the microflow cache makes
    // it cheap.
    let hot = vec![mix_frame(MASKS - 1, false)];
    let table = mix_table();
    let floor = "priority=0,in_port=d0,actions=output:up0\n".to_owned();
    // (name, table, traffic, index of its baseline)
    let configs: [Config<'_>; 6] = [
        ("bare veth, 65,536 5-tuples (baseline)", None, &hit, 0),
        ("bare veth, one 5-tuple (baseline)", None, &hot, 1),
        (
            "forwarding floor: one catch-all flow, one 5-tuple",
            Some(&floor),
            &hot,
            1,
        ),
        (
            "10k flows / 32 masks, 65,536 5-tuples, all hit",
            Some(&table),
            &hit,
            0,
        ),
        ("10k flows / 32 masks, one hot flow", Some(&table), &hot, 1),
        (
            "10k flows / 32 masks, 65,536 5-tuples, all miss",
            Some(&table),
            &miss,
            0,
        ),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let flush = |dut: &NetNs| {
        let dir = dir.clone();
        dut.run(move || {
            let mut nl = Netlink::new().unwrap();
            let ports = install::host_ports(&mut nl, &[]).unwrap();
            datapath::flush(&mut nl, &dir, &ports).unwrap();
        });
    };
    let mut checked = false;
    for _ in 0..ROUNDS {
        flush(&dut);
        let mut installed: Option<&String> = None;
        for (i, (_, flows, frames, _)) in configs.iter().enumerate() {
            if let Some(t) = flows
                && installed != Some(*t)
            {
                apply(&dut, &dir, t);
                installed = Some(*t);
                if !checked && std::ptr::eq(*t, &table) {
                    check_mix(&gen_ns, &dir, &sock, &hit, &miss);
                    checked = true;
                }
            }
            samples[i].push(blast(&gen_ns, &sock, frames));
        }
    }
    flush(&dut);
    configs
        .iter()
        .zip(samples)
        .map(|((name, _, _, base), mut s)| {
            s.sort_by(f64::total_cmp);
            (*name, *base, s[s.len() / 2])
        })
        .collect()
}

/// Not a benchmark of the wrong thing: one pass of each traffic set is
/// counted by the datapath itself: every hit frame matched a flow (none
/// missed), every miss frame missed, and the hit mix went mostly past the
/// microflow cache.
fn check_mix(gen_ns: &NetNs, dir: &Path, sock: &RawSocket, hit: &[Vec<u8>], miss: &[Vec<u8>]) {
    let maps = datapath::Maps::open(dir).unwrap().unwrap();
    let stats = || maps.stats().unwrap();
    let dropped = || tx_dropped(gen_ns);
    let send_all = |frames: &[Vec<u8>]| {
        let d0 = dropped();
        for f in frames {
            // Paced: a full queue would drop frames the counts miss.
            while sock.send(f).is_err() {}
            std::hint::spin_loop();
        }
        assert_eq!(dropped(), d0, "frames dropped before the classifier");
    };
    let s0 = stats();
    send_all(hit);
    let s1 = stats();
    send_all(miss);
    let s2 = stats();
    assert_eq!(s1.miss.packets - s0.miss.packets, 0, "hit mix: misses");
    assert_eq!(
        s2.miss.packets - s1.miss.packets,
        miss.len() as u64,
        "miss mix: misses"
    );
    let searched = s1.cache_misses - s0.cache_misses;
    assert!(
        searched * 2 > hit.len() as u64,
        "hit mix: only {searched} of {} packets searched the subtables",
        hit.len()
    );
    println!(
        "\nmix check: {} hit frames all matched ({searched} searched past the microflow cache), {} miss frames all missed",
        hit.len(),
        miss.len()
    );
}

fn main() {
    plexus_e2e::bench::node_env();
    let rates = install_rate();
    let pps = datapath_pps();
    println!(
        "\neBPF datapath: UDP frames over a veth pair, {ROUNDS} rounds of {} ms, median\n",
        WINDOW.as_millis()
    );
    println!("| configuration | packets/s | vs. bare veth | classifier ns/packet |");
    println!("|---|---|---|---|");
    for (name, base, r) in &pps {
        let b = pps[*base].2;
        println!(
            "| {name} | {:.0} | {:.3} | {:.0} |",
            r,
            r / b,
            (1.0 / r - 1.0 / b) * 1e9
        );
    }
    println!();
    println!("| figure | value | target |");
    println!("|---|---|---|");
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    for (n, o, f) in &rates {
        let rate = *n as f64 / o.as_secs_f64();
        let floor = o.as_secs_f64() / f.as_secs_f64();
        println!(
            "| eBPF flows installed per second, {n} flows (median {:.1} ms) | {:.0} k/s | {} |",
            ms(*o),
            rate / 1e3,
            if *n == 10_000 {
                format!("≥ 250 k/s: {}", met(rate >= 250e3))
            } else {
                String::new()
            }
        );
        println!(
            "| apply / batched map syscalls, {n} flows | {floor:.2}× | {} |",
            if *n == 10_000 {
                format!("≤ 1.5×: {}", met(floor <= 1.5))
            } else {
                String::new()
            }
        );
    }
    for (row, goal) in [(3, 0.85), (4, 0.90)] {
        let (name, base, r) = pps[row];
        let ratio = r / pps[base].2;
        println!(
            "| packets/s, {name} / bare veth | {ratio:.3} | ≥ {goal:.2}: {} |",
            met(ratio >= goal)
        );
    }
    // The hot flow against the forwarding floor: what the search of 32
    // subtables costs once the packet is forwarded at all.
    let (hot, floor) = (pps[4].2, pps[2].2);
    println!(
        "| packets/s, one hot flow / forwarding floor | {:.3} (search {:.0} ns/packet) |  |",
        hot / floor,
        (1.0 / hot - 1.0 / floor) * 1e9
    );
}
