//! Reading flower filters back: a real kernel dump, every compiled vector
//! echoed back, and the offload flags and counters the installer reports.

mod common;

use common::{COOKIE, ports, vectors};
use netlink_packet_core::{DefaultNla, Emitable};
use netlink_packet_route::tc::{
    TcActionAttribute, TcFilterFlowerOption as K, TcStats2, TcStatsBasic,
};
use plexus_dpu_offload::{
    dump::{self, Counters, Location},
    flower::{self, FlowCookie, Policy, PortMap, flags},
    parse::parse_flow,
};
use plexus_netlink::{
    RawMessage,
    tc::{PARENT_INGRESS, RTM_NEWTFILTER, TcFilter, TcFilterEntry},
};

fn entry(payload: Vec<u8>) -> TcFilterEntry {
    TcFilterEntry::from_raw(RawMessage {
        msg_type: RTM_NEWTFILTER,
        flags: 0,
        payload,
    })
    .unwrap()
}

/// An RTM_NEWTFILTER payload for a flower filter on ifindex 3, handle 9.
fn filter_payload(pref: u16, protocol: u16, options: &[u8]) -> Vec<u8> {
    let mut payload = plexus_netlink::tc::tcmsg(
        3,
        9,
        PARENT_INGRESS,
        plexus_netlink::tc::filter_info(pref, protocol),
    );
    let mut w = plexus_netlink::AttrWriter::new();
    w.put_str(1, "flower");
    w.put(2, options);
    payload.extend_from_slice(w.as_bytes());
    payload
}

/// The payload of a compiled request, as the kernel would echo it: the
/// same message with the handle it chose.
fn echoed(request: &[u8], handle: u32) -> Vec<u8> {
    let mut p = request[16..].to_vec();
    p[8..12].copy_from_slice(&handle.to_ne_bytes());
    p
}

#[test]
fn a_real_kernel_dump() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dump/kernel_flower_mirred.hex"
    ))
    .unwrap();
    let e = entry(plexus_testkit::bytes::hex_fixture(&text));
    let mut p = PortMap::new();
    p.insert("veth1", 8);
    p.insert("veth1.peer", 7);
    let f = dump::decode_any(&e, &p).unwrap().expect("a flower filter");
    assert_eq!(
        f.flow.to_string(),
        "table=0,priority=0,in_port=veth1,tcp,dl_src=01:02:03:04:05:06,dl_dst=01:02:03:04:05:06,nw_src=11.0.0.0/8,nw_dst=10.0.0.0/8,actions=output:veth1.peer"
    );
    assert_eq!(
        (f.handle, f.prio, f.protocol, f.chain),
        (0x42, 49152, 0x0800, 0)
    );
    assert_eq!(
        (f.location(), f.in_hw(), f.in_hw_count),
        (Location::TcSw, false, Some(0))
    );
    assert_eq!(f.counters, Counters::default());
    assert_eq!((f.installed_secs, f.idle_secs), (Some(41.23), Some(41.23)));
    assert!(f.unknown.is_empty(), "{:?}", f.unknown);
    // Not Plexus's: another preference range and no PX cookie.
    assert_eq!(f.cookie, None);
    assert_eq!(dump::decode(&e, &p).unwrap(), None);
}

#[test]
fn every_vector_decodes_to_a_flow_that_compiles_to_the_same_bytes() {
    let ports = ports();
    for v in vectors() {
        let e = entry(echoed(&v.bytes, 7));
        let got = dump::decode(&e, &ports)
            .unwrap_or_else(|err| panic!("{}: {err}", v.name))
            .unwrap_or_else(|| panic!("{}: not recognised as ours", v.name));
        assert!(got.unknown.is_empty(), "{}: {:?}", v.name, got.unknown);
        assert_eq!(got.cookie, FlowCookie::from_bytes(&COOKIE), "{}", v.name);
        let policy = if got.flags & flags::SKIP_SW != 0 {
            Policy::HwOnly
        } else if got.flags & flags::SKIP_HW != 0 {
            Policy::SwOnly
        } else {
            Policy::PreferHw
        };
        assert_eq!(policy, v.policy, "{}", v.name);
        let original = parse_flow(&v.flow).unwrap();
        assert_eq!(
            (got.flow.table, got.flow.in_port.as_str()),
            (original.table, "veth0"),
            "{}",
            v.name
        );
        let again = TcFilter {
            ifindex: got.ifindex,
            parent: PARENT_INGRESS,
            priority: got.prio,
            protocol: got.protocol,
            handle: 0,
            chain: (got.chain != 0).then_some(got.chain),
            kind: "flower".into(),
            options: Some(flower::encode_options(&got.flow, &ports, policy, &COOKIE).unwrap()),
        }
        .add_request()
        .encode(0);
        assert_eq!(
            &again[16..],
            &v.bytes[16..],
            "{}: {} decoded as {}",
            v.name,
            v.flow,
            got.flow
        );
    }
}

/// Real dumps from Linux 6.1 (`fixtures/dump/linux-6.1/`, captured by
/// `vm_flower_kernel.rs` with `PLEXUS_CAPTURE_DUMPS` from the golden vector
/// of the same name): what a kernel says back differs from what was sent.
/// A VLAN match comes back as the filter's protocol with the inner type in
/// `KEY_ETH_TYPE`, a push always carries a priority, a modify carries the
/// vid it kept. Each must decode to a flow that compiles to the vector's
/// request again.
#[test]
fn real_kernel_dumps_of_vlan_pedit_and_goto_actions_decode_to_their_flows() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dump/linux-6.1");
    let vs = vectors();
    let ports = ports();
    let mut seen = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let v = vs
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("{name}: no golden vector of that name"));
        let text = std::fs::read_to_string(&path).unwrap();
        let got = dump::decode(&entry(plexus_testkit::bytes::hex_fixture(&text)), &ports)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: not recognised as ours"));
        assert!(got.unknown.is_empty(), "{name}: {:?}", got.unknown);
        assert_eq!(got.location(), Location::TcSw, "{name}");
        let again = TcFilter {
            ifindex: got.ifindex,
            parent: PARENT_INGRESS,
            priority: got.prio,
            protocol: got.protocol,
            handle: 0,
            chain: (got.chain != 0).then_some(got.chain),
            kind: "flower".into(),
            options: Some(flower::encode_options(&got.flow, &ports, v.policy, &COOKIE).unwrap()),
        }
        .add_request()
        .encode(0);
        assert_eq!(
            &again[16..],
            &v.bytes[16..],
            "{name}: {} decoded as {}",
            v.flow,
            got.flow
        );
        seen.push((name, got.flow.to_string()));
    }
    seen.sort();
    let flow_of = |n: &str| &seen.iter().find(|(s, _)| s == n).unwrap().1;
    // The ones whose text a user reads in dump-flows.
    assert!(
        flow_of("mod_vlan_pcp_only")
            .ends_with("in_port=veth0,dl_vlan=5,actions=mod_vlan_pcp:6,output:veth1"),
        "{seen:#?}"
    );
    assert!(
        flow_of("vlan_vid_pcp_ip")
            .contains("in_port=veth0,ip,dl_vlan=100,dl_vlan_pcp=3,nw_dst=10.0.0.1,actions=drop"),
        "{seen:#?}"
    );
    assert!(
        flow_of("mod_vlan_untagged")
            .ends_with("actions=push_vlan:0x8100,mod_vlan_vid:9,output:veth1"),
        "{seen:#?}"
    );
    let kinds: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    for needed in [
        "push_vlan",
        "strip_vlan",
        "mod_vlan_tagged",
        "mod_dl_dst",
        "goto_table",
    ] {
        assert!(kinds.contains(&needed), "no real dump of {needed}");
    }
}

/// Kernel-style additions to an echoed filter: flags, IN_HW_COUNT, and
/// per-action stats.
fn with_hw_and_stats(options: &mut [K], in_hw: bool, stats: &[Vec<TcStats2>]) {
    for o in options.iter_mut() {
        match o {
            K::Flags(f) => {
                *f |= if in_hw {
                    flags::IN_HW
                } else {
                    flags::NOT_IN_HW
                }
            }
            K::Actions(acts) => {
                for (a, s) in acts.iter_mut().zip(stats) {
                    a.attributes.insert(1, TcActionAttribute::Stats(s.clone()));
                }
            }
            _ => {}
        }
    }
}

/// Our bytes as netlink-packet-route's typed flower options (this also
/// checks that the crate parses every attribute we write).
fn typed(bytes: &[u8]) -> Vec<K> {
    dump::parse_options(bytes).unwrap()
}

/// The typed options emitted again by the crate.
fn emit(opts: &[K]) -> Vec<u8> {
    let mut buf = vec![0u8; opts.buffer_len()];
    opts.emit(&mut buf);
    buf
}

fn basic(bytes: u64, packets: u32) -> TcStatsBasic {
    let mut b = TcStatsBasic::default();
    b.bytes = bytes;
    b.packets = packets;
    b
}

#[test]
fn offload_flags_and_counters_as_ovs_reads_them() {
    let ports = ports();
    let flow =
        parse_flow("in_port=veth0,ip,actions=mod_dl_dst:02:00:00:00:00:01,output:veth1").unwrap();
    let mut opts =
        typed(&flower::encode_options(&flow, &ports, Policy::PreferHw, &COOKIE).unwrap());
    // pedit saw 10 packets (6 in hardware); mirred's 64-bit counter says
    // 5e9: the filter's count is the maximum over its actions, and
    // TCA_STATS_PKT64 overrides the 32-bit one.
    with_hw_and_stats(
        &mut opts,
        true,
        &[
            vec![
                TcStats2::Basic(basic(1000, 10)),
                TcStats2::BasicHw(basic(600, 6)),
            ],
            vec![
                TcStats2::Basic(basic(7_000_000_000_000, 705_032_704)),
                TcStats2::BasicHw(basic(600, 6)),
                TcStats2::Other(DefaultNla::new(8, 5_000_000_000u64.to_ne_bytes().to_vec())),
            ],
        ],
    );
    opts.insert(opts.len() - 1, K::InHwCount(2));
    let payload = filter_payload(flower::PRIO_BASE, 0x0800, &emit(&opts));
    let f = dump::decode(&entry(payload), &ports).unwrap().unwrap();
    assert_eq!((f.location(), f.in_hw_count), (Location::Hw, Some(2)));
    assert_eq!(
        f.counters,
        Counters {
            packets: 5_000_000_000,
            bytes: 7_000_000_000_000,
            hw_packets: 6,
            hw_bytes: 600
        }
    );
    assert_eq!(f.flow.actions, flow.actions);

    // Refused by the NIC: NOT_IN_HW.
    let mut opts =
        typed(&flower::encode_options(&flow, &ports, Policy::PreferHw, &COOKIE).unwrap());
    with_hw_and_stats(&mut opts, false, &[]);
    let payload = filter_payload(flower::PRIO_BASE, 0x0800, &emit(&opts));
    let f = dump::decode(&entry(payload), &ports).unwrap().unwrap();
    assert_eq!(
        (f.location(), f.location().name()),
        (Location::TcSw, "tc-sw")
    );
}

#[test]
fn filters_outside_our_range_or_without_our_cookie_are_not_ours() {
    let ports = ports();
    let v = &vectors()[0];
    let mut p = echoed(&v.bytes, 7);
    // Preference 1 (Cilium's): not ours even with our cookie.
    p[18..20].copy_from_slice(&1u16.to_ne_bytes());
    assert_eq!(dump::decode(&entry(p), &ports).unwrap(), None);
    // The header entry a dump starts each preference with (handle 0).
    assert_eq!(
        dump::decode(&entry(echoed(&v.bytes, 0)), &ports).unwrap(),
        None
    );
    // Our range, someone else's cookie.
    let flow = parse_flow(&v.flow).unwrap();
    let mut other = COOKIE;
    other[0] = b'Q';
    let opts = flower::encode_options(&flow, &ports, Policy::PreferHw, &other).unwrap();
    let payload = filter_payload(v.pref, 3, &opts);
    assert_eq!(dump::decode(&entry(payload), &ports).unwrap(), None);
}
