//! Real-kernel tests: every operation this kernel supports, each in its own
//! fresh network namespace (plexus-testkit), checked with what a user sees
//! (`ip -j`, `tc -j`) as well as with our own reads. Needs root.
//!
//! The sockets are opened with `Netlink::in_netns`, so no test thread ever
//! changes namespace and the tests may run in parallel.

use std::{net::IpAddr, os::fd::AsFd};

use ipnet::IpNet;
use plexus_netlink::{
    AttrWriter, IpFamily, MacAddr, Netlink, addr, link,
    link::{MacvlanMode, OperState},
    route::{self, Route},
    tc::{self, TcFilter},
    vf::{self, VfSetting},
};
use plexus_testkit::NetNs;
use serde_json::Value;

fn ns(prefix: &str) -> (NetNs, Netlink) {
    let ns = NetNs::with_prefix(prefix).expect("create netns");
    let nl = Netlink::in_netns(ns.path()).expect("open netlink in netns");
    (ns, nl)
}

fn veth(nl: &mut Netlink, a: &str, b: &str) -> (u32, u32) {
    link::add_veth(nl, a, b, None).unwrap();
    let a = link::get_by_name(nl, a).unwrap().index;
    let b = link::get_by_name(nl, b).unwrap().index;
    (a, b)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn flags(l: &Value) -> Vec<&str> {
    l["flags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

fn tc_json(ns: &NetNs, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let out = ns.sh("tc", &full);
    if out.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str::<Vec<Value>>(&out).unwrap()
}

#[test]
fn new_opens_in_the_calling_threads_netns() {
    let ns = NetNs::with_prefix("nl-new").unwrap();
    let names = ns.run(|| {
        let mut nl = Netlink::new().unwrap();
        link::add_bridge(&mut nl, "br-here").unwrap();
        link::list(&mut nl)
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect::<Vec<_>>()
    });
    assert_eq!(names, ["lo", "br-here"]);
    assert!(ns.link("br-here").is_some());
}

#[test]
fn veth_pair() {
    let (ns, mut nl) = ns("nl-veth");
    let (a, b) = veth(&mut nl, "veth0", "veth1");
    let l = link::get(&mut nl, a).unwrap();
    assert_eq!(l.name, "veth0");
    assert_eq!(l.kind.as_deref(), Some("veth"));
    assert_eq!(l.link, Some(b), "IFLA_LINK is the peer");
    assert_eq!(l.mtu, Some(1500));
    assert!(!l.up);
    let j = ns.link("veth0").expect("ip sees veth0");
    assert_eq!(j["linkinfo"]["info_kind"], "veth");
    assert_eq!(j["link"], "veth1");
    assert_eq!(j["address"], l.mac.unwrap().to_string());

    link::delete(&mut nl, a).unwrap();
    assert!(ns.link("veth0").is_none());
    assert!(
        ns.link("veth1").is_none(),
        "deleting one end deletes the peer"
    );
}

#[test]
fn veth_peer_created_in_another_netns() {
    let (host, mut nl) = ns("nl-vhost");
    let pod = NetNs::with_prefix("nl-vpod").unwrap();
    let pod_fd = pod.open().unwrap();
    link::add_veth(&mut nl, "host0", "pod0", Some(pod_fd.as_fd())).unwrap();

    assert!(host.link("pod0").is_none());
    let j = pod.link("pod0").expect("peer is in the pod netns");
    assert_eq!(j["linkinfo"]["info_kind"], "veth");
    let h = link::get_by_name(&mut nl, "host0").unwrap();
    assert!(
        h.link_netnsid.is_some(),
        "peer lives in another netns: {h:?}"
    );
    assert_eq!(
        host.link("host0").unwrap()["link_netnsid"],
        h.link_netnsid.unwrap()
    );

    let mut pod_nl = Netlink::in_netns(pod.path()).unwrap();
    assert_eq!(
        link::get_by_name(&mut pod_nl, "pod0")
            .unwrap()
            .kind
            .as_deref(),
        Some("veth")
    );
}

#[test]
fn macvlan_on_a_veth_parent() {
    let (ns, mut nl) = ns("nl-mvlan");
    let (parent, _) = veth(&mut nl, "veth0", "veth1");
    link::add_macvlan(&mut nl, "mv0", parent, MacvlanMode::Bridge, None).unwrap();
    let mv = link::get_by_name(&mut nl, "mv0").unwrap();
    assert_eq!(mv.kind.as_deref(), Some("macvlan"));
    assert_eq!(mv.link, Some(parent));
    let j = ns.link("mv0").unwrap();
    assert_eq!(j["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(j["linkinfo"]["info_data"]["mode"], "bridge");
    assert_eq!(j["link"], "veth0");

    // Created straight into another netns, private mode.
    let pod = NetNs::with_prefix("nl-mvpod").unwrap();
    let fd = pod.open().unwrap();
    link::add_macvlan(
        &mut nl,
        "mv1",
        parent,
        MacvlanMode::Private,
        Some(fd.as_fd()),
    )
    .unwrap();
    assert!(ns.link("mv1").is_none());
    assert_eq!(
        pod.link("mv1").unwrap()["linkinfo"]["info_data"]["mode"],
        "private"
    );
}

#[test]
fn bridge_and_master() {
    let (ns, mut nl) = ns("nl-bridge");
    link::add_bridge(&mut nl, "br0").unwrap();
    let br = link::get_by_name(&mut nl, "br0").unwrap();
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    let (a, _) = veth(&mut nl, "veth0", "veth1");

    link::set_master(&mut nl, a, Some(br.index)).unwrap();
    assert_eq!(link::get(&mut nl, a).unwrap().master, Some(br.index));
    assert_eq!(ns.link("veth0").unwrap()["master"], "br0");

    link::set_master(&mut nl, a, None).unwrap();
    assert_eq!(link::get(&mut nl, a).unwrap().master, None);
    assert!(ns.link("veth0").unwrap().get("master").is_none());
}

#[test]
fn rename() {
    let (ns, mut nl) = ns("nl-rename");
    let (a, _) = veth(&mut nl, "veth0", "veth1");
    link::rename(&mut nl, a, "eth1").unwrap();
    assert!(ns.link("veth0").is_none());
    assert!(ns.link("eth1").is_some());
    assert_eq!(link::get(&mut nl, a).unwrap().name, "eth1");
    let e = link::get_by_name(&mut nl, "veth0").unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn move_to_another_netns() {
    let (a_ns, mut nl) = ns("nl-mvfrom");
    let b_ns = NetNs::with_prefix("nl-mvto").unwrap();
    let (_, b) = veth(&mut nl, "veth0", "veth1");
    let fd = b_ns.open().unwrap();
    link::set_netns(&mut nl, b, fd.as_fd()).unwrap();
    assert!(a_ns.link("veth1").is_none());
    assert!(b_ns.link("veth1").is_some());
    let e = link::get_by_name(&mut nl, "veth1").unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

/// The link's operational state once it is `want`, or after 5 s. The
/// kernel sets it from linkwatch, a work item that may run up to a second
/// after the flags or the carrier changed (on 6.1 under TCG it does).
fn oper_state_settled(nl: &mut Netlink, index: u32, want: OperState) -> OperState {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let l = link::get(nl, index).unwrap();
        if l.oper_state == want || std::time::Instant::now() > deadline {
            return l.oper_state;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn up_and_down() {
    let (ns, mut nl) = ns("nl-updown");
    let (a, b) = veth(&mut nl, "veth0", "veth1");
    link::set_up(&mut nl, a).unwrap();
    assert!(flags(&ns.link("veth0").unwrap()).contains(&"UP"));
    let l = link::get(&mut nl, a).unwrap();
    assert!(l.up && !l.lower_up, "peer still down: {l:?}");
    assert_eq!(
        oper_state_settled(&mut nl, a, OperState::LowerLayerDown),
        OperState::LowerLayerDown
    );

    link::set_up(&mut nl, b).unwrap();
    let l = link::get(&mut nl, a).unwrap();
    assert!(l.up && l.lower_up);
    assert_eq!(oper_state_settled(&mut nl, a, OperState::Up), OperState::Up);
    assert_eq!(ns.link("veth0").unwrap()["operstate"], "UP");

    link::set_down(&mut nl, a).unwrap();
    assert!(!flags(&ns.link("veth0").unwrap()).contains(&"UP"));
    assert!(!link::get(&mut nl, a).unwrap().up);
}

#[test]
fn mac_and_mtu() {
    let (ns, mut nl) = ns("nl-macmtu");
    let (a, _) = veth(&mut nl, "veth0", "veth1");
    let mac: MacAddr = "02:11:22:33:44:55".parse().unwrap();
    link::set_mac(&mut nl, a, mac).unwrap();
    link::set_mtu(&mut nl, a, 1400).unwrap();
    let j = ns.link("veth0").unwrap();
    assert_eq!(j["address"], "02:11:22:33:44:55");
    assert_eq!(j["mtu"], 1400);
    let l = link::get(&mut nl, a).unwrap();
    assert_eq!((l.mac, l.mtu), (Some(mac), Some(1400)));
}

#[test]
fn altnames() {
    let (ns, mut nl) = ns("nl-altname");
    let (a, _) = veth(&mut nl, "veth0", "veth1");
    let long = "a-very-long-alternative-name-for-veth0";
    link::add_altname(&mut nl, a, long).unwrap();
    assert_eq!(ns.link("veth0").unwrap()["altnames"][0], long);
    assert_eq!(link::get(&mut nl, a).unwrap().altnames, [long]);
    // The kernel resolves altnames in lookups by name.
    assert_eq!(link::get_by_name(&mut nl, long).unwrap().index, a);

    link::del_altname(&mut nl, a, long).unwrap();
    assert!(ns.link("veth0").unwrap().get("altnames").is_none());
    assert!(link::get(&mut nl, a).unwrap().altnames.is_empty());
    let e = link::del_altname(&mut nl, a, long).unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn big_dump_is_multipart() {
    let (ns, mut nl) = ns("nl-dump");
    for i in 0..60 {
        link::add_veth(&mut nl, &format!("a{i}"), &format!("b{i}"), None).unwrap();
    }
    let ours: Vec<String> = link::list(&mut nl)
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    let theirs: Vec<String> = ns
        .links()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ours.len(), 121);
    assert_eq!(ours, theirs);
}

#[test]
fn addresses_v4_and_v6() {
    let (ns, mut nl) = ns("nl-addr");
    let (a, _) = veth(&mut nl, "veth0", "veth1");
    let v4 = net("10.0.0.2/24");
    let v6 = net("2001:db8::2/64");
    addr::add(&mut nl, a, v4).unwrap();
    addr::add(&mut nl, a, v6).unwrap();
    let shown = ns.addrs("veth0");
    assert!(shown.contains(&"10.0.0.2/24".to_owned()), "{shown:?}");
    assert!(shown.contains(&"2001:db8::2/64".to_owned()), "{shown:?}");

    let ours = addr::list(&mut nl, None, Some(a)).unwrap();
    assert!(
        ours.iter()
            .any(|x| x.addr == v4 && x.label.as_deref() == Some("veth0"))
    );
    assert!(ours.iter().any(|x| x.addr == v6));
    let only_v6 = addr::list(&mut nl, Some(IpFamily::V6), Some(a)).unwrap();
    assert!(only_v6.iter().all(|x| x.addr.addr().is_ipv6()) && !only_v6.is_empty());

    let e = addr::add(&mut nl, a, v4).unwrap_err();
    assert!(e.is_exists(), "{e}");
    addr::del(&mut nl, a, v4).unwrap();
    addr::del(&mut nl, a, v6).unwrap();
    assert!(ns.addrs("veth0").iter().all(|s| s.starts_with("fe80")));
    let e = addr::del(&mut nl, a, v4).unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn routes_with_gateway_table_and_metrics() {
    let (ns, mut nl) = ns("nl-route");
    let (a, b) = veth(&mut nl, "veth0", "veth1");
    link::set_up(&mut nl, a).unwrap();
    link::set_up(&mut nl, b).unwrap();
    addr::add(&mut nl, a, net("10.0.0.2/24")).unwrap();

    let via = Route::new(net("10.1.0.0/16"))
        .via(ip("10.0.0.1"))
        .dev(a)
        .metric(100);
    route::add(&mut nl, &via).unwrap();
    let dflt = Route::default_route(IpFamily::V4)
        .via(ip("10.0.0.1"))
        .dev(a)
        .table(100);
    route::add(&mut nl, &dflt).unwrap();
    let big_table = Route::new(net("10.3.0.0/16")).dev(a).table(1000);
    route::add(&mut nl, &big_table).unwrap();
    let mtu = Route::new(net("10.2.0.0/16")).dev(a).mtu(1400).advmss(1360);
    route::replace(&mut nl, &mtu).unwrap();
    let v6 = Route::new(net("2001:db8:1::/48"))
        .via(ip("fe80::1"))
        .dev(a)
        .metric(10);
    route::add(&mut nl, &v6).unwrap();

    let main = ns.routes();
    let r = main
        .iter()
        .find(|r| r["dst"] == "10.1.0.0/16")
        .expect("ip shows the route");
    assert_eq!(
        (&r["gateway"], &r["dev"], &r["metric"]),
        (&"10.0.0.1".into(), &"veth0".into(), &100.into())
    );
    let r = main.iter().find(|r| r["dst"] == "10.2.0.0/16").unwrap();
    assert_eq!(r["scope"], "link");
    assert_eq!(r["metrics"][0]["mtu"], 1400);
    let t100 = ns.routes_in_table("100");
    assert_eq!(t100[0]["dst"], "default");
    assert_eq!(t100[0]["gateway"], "10.0.0.1");
    assert_eq!(ns.routes_in_table("1000")[0]["dst"], "10.3.0.0/16");
    assert!(
        ns.routes6()
            .iter()
            .any(|r| r["dst"] == "2001:db8:1::/48" && r["gateway"] == "fe80::1")
    );

    let ours = route::list(&mut nl, None).unwrap();
    let find = |dst: &str, table: u32| {
        ours.iter()
            .find(|r| r.dst == net(dst) && r.table == table)
            .cloned()
            .unwrap()
    };
    let r = find("10.1.0.0/16", route::TABLE_MAIN);
    assert_eq!(
        (r.gateway, r.oif, r.metric),
        (Some(ip("10.0.0.1")), Some(a), Some(100))
    );
    assert_eq!(r.protocol, route::PROTO_BOOT);
    assert!(find("0.0.0.0/0", 100).is_default());
    assert_eq!(find("10.3.0.0/16", 1000).oif, Some(a));
    let r = find("10.2.0.0/16", route::TABLE_MAIN);
    assert_eq!(
        (r.mtu, r.advmss, r.scope),
        (Some(1400), Some(1360), Some(route::SCOPE_LINK))
    );
    let r = find("2001:db8:1::/48", route::TABLE_MAIN);
    assert_eq!((r.gateway, r.metric), (Some(ip("fe80::1")), Some(10)));
    assert!(
        route::list(&mut nl, Some(IpFamily::V6))
            .unwrap()
            .iter()
            .all(|r| r.dst.addr().is_ipv6())
    );

    let e = route::add(&mut nl, &via).unwrap_err();
    assert!(e.is_exists(), "{e}");
    for r in [&via, &dflt, &big_table, &mtu, &v6] {
        route::del(&mut nl, r).unwrap();
    }
    assert!(
        ns.routes()
            .iter()
            .all(|r| r["dst"] != "10.1.0.0/16" && r["dst"] != "10.2.0.0/16")
    );
    assert!(ns.routes_in_table("100").is_empty());
    assert!(!ns.routes6().iter().any(|r| r["dst"] == "2001:db8:1::/48"));
    let e = route::del(&mut nl, &via).unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

/// `u32 match u32 0 0` options, built the way dpu-offload builds flower's:
/// `TCA_U32_SEL` (5) = struct tc_u32_sel with one all-zero key.
fn u32_match_all() -> Vec<u8> {
    let mut sel = vec![0u8, 0, 1, 0]; // flags, offshift, nkeys = 1, pad
    sel.extend_from_slice(&[0; 12]); // offmask, off, offoff, hoff, hmask
    sel.extend_from_slice(&[0; 16]); // key: mask, val, off, offmask
    let mut w = AttrWriter::new();
    w.put(5, &sel);
    w.into_bytes()
}

#[test]
fn clsact_and_u32_filters() {
    let (ns, mut nl) = ns("nl-tc");
    let (a, _) = veth(&mut nl, "veth0", "veth1");
    tc::add_clsact(&mut nl, a).unwrap();
    let q = tc_json(&ns, &["qdisc", "show", "dev", "veth0"]);
    assert!(
        q.iter()
            .any(|q| q["kind"] == "clsact" && q["parent"] == "ffff:fff1"),
        "{q:?}"
    );
    let e = tc::add_clsact(&mut nl, a).unwrap_err();
    assert!(e.is_exists(), "{e}");

    let ingress = TcFilter {
        ifindex: a,
        parent: tc::PARENT_INGRESS,
        priority: 10,
        protocol: tc::ETH_P_ALL,
        handle: 0x8000_0001,
        chain: None,
        kind: "u32".into(),
        options: Some(u32_match_all()),
    };
    let echoed = tc::add_filter_echo(&mut nl, &ingress).unwrap();
    assert_eq!(
        (
            echoed.handle,
            echoed.priority,
            echoed.protocol,
            echoed.kind.as_str()
        ),
        (0x8000_0001, 10, tc::ETH_P_ALL, "u32")
    );
    let egress = TcFilter {
        parent: tc::PARENT_EGRESS,
        priority: 0, // the kernel picks one
        protocol: tc::ETH_P_IP,
        handle: 0,
        chain: Some(3),
        ..ingress.clone()
    };
    tc::add_filter(&mut nl, &egress).unwrap();

    let shown = tc_json(&ns, &["filter", "show", "dev", "veth0", "ingress"]);
    assert!(
        shown
            .iter()
            .any(|f| f["options"]["fh"] == "800::1" && f["pref"] == 10),
        "{shown:?}"
    );
    let shown = tc_json(
        &ns,
        &["filter", "show", "dev", "veth0", "egress", "chain", "3"],
    );
    assert!(
        shown
            .iter()
            .any(|f| f["kind"] == "u32" && f["protocol"] == "ip"),
        "{shown:?}"
    );

    let dumped = tc::dump_filters(&mut nl, a, tc::PARENT_INGRESS, None).unwrap();
    let f = dumped
        .iter()
        .find(|f| f.handle == 0x8000_0001)
        .expect("our filter in the dump");
    assert_eq!((f.ifindex, f.parent, f.chain), (a, tc::PARENT_INGRESS, 0));
    assert!(f.options.is_some());
    let op = plexus_netlink::Op::new("decode filter", "filter");
    assert!(!f.tc_message(&op).unwrap().attributes.is_empty());
    let chained = tc::dump_filters(&mut nl, a, tc::PARENT_EGRESS, Some(3)).unwrap();
    assert!(!chained.is_empty());
    assert!(
        chained
            .iter()
            .all(|f| f.chain == 3 && f.protocol == tc::ETH_P_IP)
    );
    assert!(
        chained[0].priority >= 0xC000,
        "kernel-chosen prio {}",
        chained[0].priority
    );

    tc::del_filter(
        &mut nl,
        &TcFilter {
            options: None,
            ..ingress.clone()
        },
    )
    .unwrap();
    let left = tc::dump_filters(&mut nl, a, tc::PARENT_INGRESS, None).unwrap();
    assert!(left.iter().all(|f| f.handle != 0x8000_0001), "{left:?}");
    let shown = tc_json(&ns, &["filter", "show", "dev", "veth0", "ingress"]);
    assert!(shown.iter().all(|f| f["options"]["fh"] != "800::1"));

    tc::del_clsact(&mut nl, a).unwrap();
    let q = tc_json(&ns, &["qdisc", "show", "dev", "veth0"]);
    assert!(q.iter().all(|q| q["kind"] != "clsact"), "{q:?}");
    let e = tc::del_clsact(&mut nl, a).unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn empty_chains_live_and_die_with_the_qdisc() {
    let (ns, mut nl) = ns("nl-chain");
    let (a, _) = veth(&mut nl, "veth0", "veth1");
    // No qdisc, no chain.
    assert!(!tc::chain_exists(&mut nl, a, tc::PARENT_EGRESS, 0x0FFF_0001).unwrap());
    tc::add_clsact(&mut nl, a).unwrap();
    assert!(!tc::chain_exists(&mut nl, a, tc::PARENT_EGRESS, 0x0FFF_0001).unwrap());
    tc::add_chain(&mut nl, a, tc::PARENT_EGRESS, 0x0FFF_0001).unwrap();
    assert!(tc::chain_exists(&mut nl, a, tc::PARENT_EGRESS, 0x0FFF_0001).unwrap());
    // Per hook and per index.
    assert!(!tc::chain_exists(&mut nl, a, tc::PARENT_INGRESS, 0x0FFF_0001).unwrap());
    assert!(!tc::chain_exists(&mut nl, a, tc::PARENT_EGRESS, 0x0FFF_0002).unwrap());
    let e = tc::add_chain(&mut nl, a, tc::PARENT_EGRESS, 0x0FFF_0001).unwrap_err();
    assert!(e.is_exists(), "{e}");
    // tc sees it; no filter shows.
    let shown = ns.sh("tc", &["chain", "show", "dev", "veth0", "egress"]);
    assert!(shown.contains("chain 268369921"), "{shown}");
    assert!(
        tc::dump_filters(&mut nl, a, tc::PARENT_EGRESS, None)
            .unwrap()
            .is_empty()
    );
    // It goes with the qdisc.
    tc::del_clsact(&mut nl, a).unwrap();
    tc::add_clsact(&mut nl, a).unwrap();
    assert!(!tc::chain_exists(&mut nl, a, tc::PARENT_EGRESS, 0x0FFF_0001).unwrap());
}

#[test]
fn errors_name_the_operation_and_interface() {
    let (_ns, mut nl) = ns("nl-errors");
    veth(&mut nl, "veth0", "veth1");

    let e = link::add_veth(&mut nl, "veth0", "veth9", None).unwrap_err();
    assert!(e.is_exists(), "{e}");
    assert_eq!(e.errno(), Some(libc::EEXIST));
    assert!(
        e.to_string()
            .starts_with("create veth pair veth0/veth9: interface already exists (EEXIST)"),
        "{e}"
    );

    let e = link::get_by_name(&mut nl, "nope0").unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(
        e.to_string()
            .starts_with("get link nope0: interface not found (ENODEV)"),
        "{e}"
    );

    let e = link::delete(&mut nl, 4242).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(
        e.to_string()
            .starts_with("delete link ifindex 4242: interface not found (ENODEV)"),
        "{e}"
    );

    let e = addr::add(&mut nl, 4242, net("10.9.9.9/32")).unwrap_err();
    assert!(e.is_not_found(), "{e}");

    let e = link::add_bridge(&mut nl, "name-longer-than-15").unwrap_err();
    assert!(
        matches!(e, plexus_netlink::Error::InvalidInput { .. }),
        "{e}"
    );

    // A classifier no kernel has (this machine's also lacks cls_flower,
    // Debian's 6.1 and 6.12 have it): ENOENT for a kind is "not
    // supported", and the kernel's extended ack comes through.
    let a = link::get_by_name(&mut nl, "veth0").unwrap().index;
    tc::add_clsact(&mut nl, a).unwrap();
    let unknown = TcFilter {
        ifindex: a,
        parent: tc::PARENT_INGRESS,
        priority: 1,
        protocol: tc::ETH_P_IP,
        handle: 0,
        chain: None,
        kind: "plexusnone".into(),
        options: Some(Vec::new()),
    };
    let e = tc::add_filter(&mut nl, &unknown).unwrap_err();
    assert!(e.is_not_supported(), "{e}");
    assert_eq!(e.ext_ack(), Some("TC classifier not found"));
    assert!(
        e.to_string().contains("add plexusnone filter pref 1"),
        "{e}"
    );
}

#[test]
fn vf_info_on_a_link_without_vfs() {
    let (_ns, mut nl) = ns("nl-vf");
    let (a, _) = veth(&mut nl, "veth0", "veth1");
    assert_eq!(vf::list(&mut nl, "veth0").unwrap(), vec![]);
    // Writes go to the driver's ndo_set_vf_*, which veth does not have.
    let e = vf::set(&mut nl, a, 0, &VfSetting::Trust(true)).unwrap_err();
    assert!(e.is_not_supported(), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("set VF 0 trust on on PF ifindex {a}")),
        "{e}"
    );
    let e = vf::list(&mut nl, "nope0").unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

/// Whether the running kernel has function `name` (`/proc/kallsyms` lists
/// every function, whatever `kptr_restrict` hides of the addresses).
fn kernel_has(name: &str) -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .expect("/proc/kallsyms")
        .lines()
        .any(|l| l.rsplit(' ').next() == Some(name))
}

/// devlink through generic netlink: the family resolves exactly when the
/// kernel has devlink (the host's 6.18 here has none; Debian's 6.1 and
/// 6.12 do), and a PCI address no driver registered reads as "no such
/// instance", as `devlink dev param show` sees it too.
#[test]
fn devlink_family_and_a_device_without_devlink() {
    let has = kernel_has("devlink_alloc_ns");
    let dl = plexus_netlink::devlink::Devlink::open().unwrap();
    assert_eq!(dl.is_some(), has, "devlink family vs kallsyms");
    let shown = std::process::Command::new("devlink")
        .args([
            "dev",
            "param",
            "show",
            "pci/0000:ff:1f.7",
            "name",
            "enable_rdma",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&shown.stderr).into_owned();
    assert!(!shown.status.success(), "{said}");
    let Some(mut dl) = dl else {
        assert!(said.contains("Failed to connect to devlink"), "{said}");
        return;
    };
    assert!(said.contains("No such device"), "{said}");
    assert_ne!(dl.family(), 0);
    assert_eq!(
        dl.param("pci", "0000:ff:1f.7", "enable_rdma").unwrap(),
        None
    );
}
