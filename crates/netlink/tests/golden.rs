//! Golden bytes: every request we build equals what iproute2 sends for the
//! same command, captured by `tests/fixtures/capture.sh` (strace of `ip`/`tc`
//! in a throwaway netns). Only `nlmsg_seq` and `nlmsg_pid` (bytes 8..16) are
//! masked: iproute2 uses `time()` as its sequence number. No other field
//! differs: where netlink-packet-route would encode differently from
//! iproute2 (`IFLA_INFO_KIND` without a NUL), the builders hand-encode.
//!
//! Interface indexes and the netns fd come from the capture namespace's
//! layout (see the script): 2 = veth1, 3 = veth0, 4 = br0, 6 = veth2; `ip`
//! opens the peer netns file as fd 4.

use std::net::IpAddr;

use plexus_testkit::bytes::{hex_fixture, hexdump};

use plexus_netlink::{
    IpFamily, MacAddr, Request, addr, link,
    link::MacvlanMode,
    route::{self, Route},
    tc::{self, TcFilter},
    vf::{self, VfLinkMode, VfSetting, VlanProto},
};

const VETH1: u32 = 2;
const VETH0: u32 = 3;
const BR0: u32 = 4;
const VETH2: u32 = 6;
const NETNS_FD: i32 = 4;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    hex_fixture(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn assert_golden(name: &str, req: &Request) {
    let mut want = fixture(name);
    let mut got = req.encode(0);
    for b in [&mut want, &mut got] {
        if b.len() >= 16 {
            b[8..16].fill(0);
        }
    }
    assert!(
        want == got,
        "{name}: encoded request differs from iproute2's\n--- iproute2\n{}--- ours\n{}",
        hexdump(&want),
        hexdump(&got)
    );
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn link_requests() {
    assert_golden("link_get_by_name", &link::req::get_by_name("veth0"));
    assert_golden(
        "link_get_by_altname",
        &link::req::get_by_name("plexus-long-alternative-name"),
    );
    assert_golden("link_get_by_index", &link::req::get(VETH1));
    assert_golden("link_dump", &link::req::list());
    assert_golden(
        "link_add_veth",
        &link::req::add_veth("veth2", "veth3", None),
    );
    assert_golden(
        "link_add_veth_peer_netns",
        &link::req::add_veth("veth4", "veth5", Some(NETNS_FD)),
    );
    assert_golden(
        "link_add_macvlan_bridge",
        &link::req::add_macvlan("mv0", VETH0, MacvlanMode::Bridge, None),
    );
    assert_golden(
        "link_add_macvlan_passthru_netns",
        &link::req::add_macvlan("mv1", VETH0, MacvlanMode::Passthru, Some(NETNS_FD)),
    );
    assert_golden("link_add_bridge", &link::req::add_bridge("br1"));
    assert_golden("link_set_up", &link::req::set_up(VETH1, true));
    assert_golden("link_set_down", &link::req::set_up(VETH1, false));
    assert_golden(
        "link_set_mac",
        &link::req::set_mac(VETH1, mac("02:00:00:00:00:01")),
    );
    assert_golden("link_set_mtu", &link::req::set_mtu(VETH1, 1400));
    assert_golden(
        "link_set_broadcast",
        &link::req::set_broadcast(VETH1, &[0xff; 6]),
    );
    assert_golden("link_rename", &link::req::rename(VETH1, "eth9"));
    assert_golden("link_set_master", &link::req::set_master(VETH1, Some(BR0)));
    assert_golden("link_set_nomaster", &link::req::set_master(VETH1, None));
    assert_golden(
        "link_altname_add",
        &link::req::altname(VETH1, "plexus-alt", true),
    );
    assert_golden(
        "link_altname_del",
        &link::req::altname(VETH1, "plexus-alt", false),
    );
    assert_golden("link_set_netns", &link::req::set_netns(VETH1, NETNS_FD));
    assert_golden(
        "link_set_netns_name",
        &link::req::set_netns_named(VETH1, NETNS_FD, "net1"),
    );
    assert_golden("link_del", &link::req::delete(VETH2));
}

#[test]
fn addr_requests() {
    let v4 = "192.0.2.10/24".parse().unwrap();
    let v6 = "2001:db8::10/64".parse().unwrap();
    assert_golden("addr_add_v4", &addr::req::add(VETH0, v4));
    assert_golden("addr_add_v6", &addr::req::add(VETH0, v6));
    assert_golden("addr_del_v4", &addr::req::del(VETH0, v4));
    assert_golden("addr_del_v6", &addr::req::del(VETH0, v6));
    assert_golden("addr_dump", &addr::req::list(None, None));
}

#[test]
fn route_requests() {
    let via = Route::new("10.1.0.0/16".parse().unwrap())
        .via(ip("10.0.0.254"))
        .dev(VETH0);
    assert_golden("route_add_via", &route::req::add(&via));
    assert_golden("route_del_via", &route::req::del(&via));
    assert_golden(
        "route_add_default_table_metric",
        &route::req::add(
            &Route::default_route(IpFamily::V4)
                .via(ip("10.0.0.254"))
                .dev(VETH0)
                .table(100)
                .metric(50),
        ),
    );
    assert_golden(
        "route_replace_scope_proto_mtu",
        &route::req::replace(
            &Route::new("10.2.0.0/16".parse().unwrap())
                .dev(VETH0)
                .protocol(route::PROTO_STATIC)
                .scope(route::SCOPE_LINK)
                .mtu(1400)
                .advmss(1360),
        ),
    );
    assert_golden(
        "route_add_v6_via_metric",
        &route::req::add(
            &Route::new("2001:db8:1::/48".parse().unwrap())
                .via(ip("fe80::1"))
                .dev(VETH0)
                .metric(10),
        ),
    );
    assert_golden("route_dump", &route::req::list(None));
}

#[test]
fn vf_requests() {
    let set = |s: VfSetting| vf::req::set(VETH0, 3, &s);
    assert_golden("vf_info_get", &vf::req::list("veth0"));
    assert_golden("vf_mac", &set(VfSetting::Mac(mac("02:00:00:00:00:aa"))));
    assert_golden(
        "vf_vlan",
        &set(VfSetting::Vlan {
            id: 100,
            qos: 0,
            proto: VlanProto::Dot1Q,
        }),
    );
    assert_golden(
        "vf_vlan_qos",
        &set(VfSetting::Vlan {
            id: 100,
            qos: 5,
            proto: VlanProto::Dot1Q,
        }),
    );
    assert_golden(
        "vf_vlan_8021ad",
        &set(VfSetting::Vlan {
            id: 100,
            qos: 5,
            proto: VlanProto::Dot1Ad,
        }),
    );
    assert_golden(
        "vf_rate",
        &set(VfSetting::Rate {
            min_mbps: 100,
            max_mbps: 1000,
        }),
    );
    assert_golden("vf_spoofchk_on", &set(VfSetting::SpoofCheck(true)));
    assert_golden("vf_spoofchk_off", &set(VfSetting::SpoofCheck(false)));
    assert_golden("vf_trust_on", &set(VfSetting::Trust(true)));
    assert_golden(
        "vf_state_auto",
        &set(VfSetting::LinkState(VfLinkMode::Auto)),
    );
    assert_golden(
        "vf_state_enable",
        &set(VfSetting::LinkState(VfLinkMode::Enable)),
    );
    assert_golden(
        "vf_state_disable",
        &set(VfSetting::LinkState(VfLinkMode::Disable)),
    );
}

/// `u32 match u32 0 0`: the `TCA_OPTIONS` payload a caller (dpu-offload)
/// encodes itself; the tc module only wraps it.
#[rustfmt::skip]
const U32_MATCH_ALL: [u8; 36] = [
    0x24, 0x00, 0x05, 0x00,             // TCA_U32_SEL, len 36
    0x00,                               //   flags (TC_U32_TERMINAL only with a classid/action)
    0x00,                               //   offshift
    0x01,                               //   nkeys = 1
    0x00,                               //   pad
    0x00, 0x00,                         //   offmask
    0x00, 0x00,                         //   off
    0x00, 0x00,                         //   offoff
    0x00, 0x00,                         //   hoff
    0x00, 0x00, 0x00, 0x00,             //   hmask
    0x00, 0x00, 0x00, 0x00,             //   keys[0].mask = 0
    0x00, 0x00, 0x00, 0x00,             //   keys[0].val = 0
    0x00, 0x00, 0x00, 0x00,             //   keys[0].off = 0
    0x00, 0x00, 0x00, 0x00,             //   keys[0].offmask = 0
];

#[test]
fn tc_requests() {
    assert_golden("qdisc_add_clsact", &tc::clsact_add_request(VETH0));
    assert_golden("qdisc_del_clsact", &tc::clsact_del_request(VETH0));
    let mut filter = TcFilter {
        ifindex: VETH0,
        parent: tc::PARENT_INGRESS,
        priority: 10,
        protocol: tc::ETH_P_ALL,
        handle: 0x8000_0001, // 800::1
        chain: None,
        kind: "u32".into(),
        options: Some(U32_MATCH_ALL.to_vec()),
    };
    assert_golden("filter_add_u32", &filter.add_request());
    filter.options = None;
    assert_golden("filter_del_u32", &filter.del_request());
    let chained = TcFilter {
        ifindex: VETH0,
        parent: tc::PARENT_EGRESS,
        priority: 20,
        protocol: tc::ETH_P_IP,
        handle: 0,
        chain: Some(3),
        kind: "u32".into(),
        options: Some(U32_MATCH_ALL.to_vec()),
    };
    assert_golden("filter_add_u32_egress_chain", &chained.add_request());
    assert_golden(
        "filter_dump_ingress",
        &tc::filter_dump_request(VETH0, tc::PARENT_INGRESS, None),
    );
    assert_golden(
        "filter_dump_egress_chain",
        &tc::filter_dump_request(VETH0, tc::PARENT_EGRESS, Some(3)),
    );
}

/// The one request iproute2 cannot show us: `NLM_F_ECHO` on a filter add
/// (tc 6.1 has no `-echo`). Same bytes as `filter_add_u32` but the flags.
#[test]
fn filter_add_echo_sets_nlm_f_echo() {
    let filter = TcFilter {
        ifindex: VETH0,
        parent: tc::PARENT_INGRESS,
        priority: 10,
        protocol: tc::ETH_P_ALL,
        handle: 0x8000_0001,
        chain: None,
        kind: "u32".into(),
        options: Some(U32_MATCH_ALL.to_vec()),
    };
    let plain = filter.add_request().encode(0);
    let echo = filter.add_request().with_flags(0x8).encode(0);
    // nlmsg_flags: NLM_F_REQUEST|NLM_F_ACK|NLM_F_ECHO|NLM_F_EXCL|NLM_F_CREATE
    assert_eq!(&echo[6..8], &[0x0d, 0x06]);
    assert_eq!(&plain[6..8], &[0x05, 0x06]);
    assert_eq!(echo[8..], plain[8..]);
}
