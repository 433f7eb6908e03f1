//! The flow language: every field and action, masks, shorthands, the
//! canonical form, and bad input with its line and column.

use std::net::IpAddr;

use plexus_dpu_offload::{
    flow::{Action, DEFAULT_PRIORITY, Flow, Masked, VlanMatch},
    parse::{ParseError, parse_flow, parse_flows},
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn flow(s: &str) -> Flow {
    parse_flow(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn err(s: &str) -> ParseError {
    parse_flow(s).expect_err(s)
}

#[test]
fn defaults_and_header_fields() {
    let f = flow("in_port=p0,actions=drop");
    assert_eq!(
        (f.table, f.priority, f.cookie, f.in_port.as_str()),
        (0, DEFAULT_PRIORITY, 0, "p0")
    );
    assert_eq!(f.actions, [Action::Drop]);
    let f = flow("table=3 priority=7, cookie=0xff in_port:pf0vf3 actions=output:p0");
    assert_eq!(
        (f.table, f.priority, f.cookie, f.in_port.as_str()),
        (3, 7, 0xff, "pf0vf3")
    );
}

#[test]
fn l2_fields_with_masks_are_stored_masked() {
    let f = flow(
        "in_port=p0,dl_src=02:00:00:00:00:01,dl_dst=01:02:03:04:05:06/ff:ff:ff:00:00:00,actions=drop",
    );
    assert_eq!(
        f.matches.dl_src,
        Some(Masked {
            value: [2, 0, 0, 0, 0, 1],
            mask: [0xff; 6]
        })
    );
    assert_eq!(
        f.matches.dl_dst,
        Some(Masked {
            value: [1, 2, 3, 0, 0, 0],
            mask: [0xff, 0xff, 0xff, 0, 0, 0]
        })
    );
    // A zero mask is no match at all.
    assert_eq!(
        flow("in_port=p0,dl_dst=01:02:03:04:05:06/00:00:00:00:00:00,actions=drop")
            .matches
            .dl_dst,
        None
    );
    assert_eq!(
        flow("in_port=p0,eth_type=0x88cc,actions=drop")
            .matches
            .dl_type,
        Some(0x88cc)
    );
}

#[test]
fn shorthands_set_dl_type_and_nw_proto() {
    for (s, t, p) in [
        ("ip", 0x0800, None),
        ("ipv6", 0x86dd, None),
        ("arp", 0x0806, None),
        ("tcp", 0x0800, Some(6)),
        ("udp", 0x0800, Some(17)),
        ("sctp", 0x0800, Some(132)),
        ("icmp", 0x0800, Some(1)),
        ("tcp6", 0x86dd, Some(6)),
        ("udp6", 0x86dd, Some(17)),
        ("icmp6", 0x86dd, Some(58)),
    ] {
        let f = flow(&format!("in_port=p0,{s},actions=drop"));
        assert_eq!((f.matches.dl_type, f.matches.nw_proto), (Some(t), p), "{s}");
    }
    // The same thing twice is fine, a contradiction is not.
    flow("in_port=p0,ip,dl_type=0x0800,actions=drop");
    assert!(
        err("in_port=p0,ip,ipv6,actions=drop")
            .message
            .contains("already has dl_type=0x0800")
    );
    assert!(
        err("in_port=p0,tcp,nw_proto=17,actions=drop")
            .message
            .contains("already has nw_proto=6")
    );
}

#[test]
fn l3_fields() {
    let f = flow(
        "in_port=p0,ip,nw_src=10.1.2.3/16,nw_dst=10.0.0.0/255.0.255.0,nw_proto=47,nw_tos=184,nw_ttl=64,actions=drop",
    );
    let m = &f.matches;
    assert_eq!(
        m.nw_src,
        Some(Masked {
            value: ip("10.1.0.0"),
            mask: ip("255.255.0.0")
        })
    );
    assert_eq!(
        m.nw_dst,
        Some(Masked {
            value: ip("10.0.0.0"),
            mask: ip("255.0.255.0")
        })
    );
    assert_eq!(
        (m.nw_proto, m.nw_tos, m.nw_ttl),
        (Some(47), Some(184), Some(64))
    );
    assert_eq!(
        flow("in_port=p0,ip,ip_dscp=46,actions=drop").matches.nw_tos,
        Some(184)
    );
    let f = flow("in_port=p0,ipv6,ipv6_src=2001:db8::1,ipv6_dst=2001:db8::/32,actions=drop");
    assert_eq!(
        f.matches.nw_src,
        Some(Masked {
            value: ip("2001:db8::1"),
            mask: ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
        })
    );
    assert_eq!(f.matches.nw_dst.unwrap().mask, ip("ffff:ffff::"));
    let f = flow("in_port=p0,arp,arp_op=2,arp_spa=10.0.0.1,arp_tpa=10.0.0.2,actions=drop");
    assert_eq!(
        (f.matches.nw_proto, f.matches.nw_src.unwrap().value),
        (Some(2), ip("10.0.0.1"))
    );
}

#[test]
fn l4_fields_with_masks() {
    let f = flow("in_port=p0,tcp,tp_src=0x400/0xfc00,tp_dst=443,tcp_flags=+syn-ack,actions=drop");
    assert_eq!(
        f.matches.tp_src,
        Some(Masked {
            value: 0x400,
            mask: 0xfc00
        })
    );
    assert_eq!(
        f.matches.tp_dst,
        Some(Masked {
            value: 443,
            mask: 0xffff
        })
    );
    assert_eq!(
        f.matches.tcp_flags,
        Some(Masked {
            value: 0x002,
            mask: 0x012
        })
    );
    assert_eq!(
        flow("in_port=p0,tcp,tcp_flags=0x10/0x12,actions=drop")
            .matches
            .tcp_flags,
        Some(Masked {
            value: 0x10,
            mask: 0x12
        })
    );
    assert_eq!(
        flow("in_port=p0,tcp,tcp_flags=0x2,actions=drop")
            .matches
            .tcp_flags
            .unwrap()
            .mask,
        0x0fff
    );
    let f = flow("in_port=p0,udp,udp_dst=53,actions=drop");
    assert_eq!(f.matches.tp_dst.unwrap().value, 53);
    let f = flow("in_port=p0,icmp,icmp_type=8,icmp_code=0,actions=drop");
    assert_eq!(
        (f.matches.icmp_type, f.matches.icmp_code),
        (Some(8), Some(0))
    );
}

#[test]
fn vlan_fields() {
    let f = flow("in_port=p0,dl_vlan=100,dl_vlan_pcp=3,actions=drop");
    assert_eq!(
        f.matches.vlan,
        Some(VlanMatch::Tagged {
            vid: Some(100),
            pcp: Some(3)
        })
    );
    assert_eq!(f.protocol(), Some(0x8100));
    let f = flow("in_port=p0,dl_vlan_pcp=5,dl_vlan=7,actions=drop");
    assert_eq!(
        f.matches.vlan,
        Some(VlanMatch::Tagged {
            vid: Some(7),
            pcp: Some(5)
        })
    );
    let f = flow("in_port=p0,dl_vlan=0xffff,ip,actions=drop");
    assert_eq!(
        (f.matches.vlan, f.protocol()),
        (Some(VlanMatch::Untagged), Some(0x0800))
    );
}

#[test]
fn every_action() {
    let f = flow(
        "in_port=p0,dl_vlan=1,actions=strip_vlan,push_vlan:0x88a8,mod_vlan_vid:5,mod_vlan_pcp:2,\
         mod_dl_src:02:00:00:00:00:01,mod_dl_dst:02:00:00:00:00:02,output:pf0vf1,output:p1",
    );
    assert_eq!(
        f.actions,
        [
            Action::StripVlan,
            Action::PushVlan(0x88a8),
            Action::SetVlanVid(5),
            Action::SetVlanPcp(2),
            Action::SetDlSrc([2, 0, 0, 0, 0, 1]),
            Action::SetDlDst([2, 0, 0, 0, 0, 2]),
            Action::Output("pf0vf1".into()),
            Action::Output("p1".into()),
        ]
    );
    assert_eq!(
        flow("in_port=p0,actions=pop_vlan,output:p1").actions[0],
        Action::StripVlan
    );
    assert_eq!(
        flow("in_port=p0,actions=goto_table:4").actions,
        [Action::GotoTable(4)]
    );
    assert_eq!(
        flow("table=1,in_port=p0,actions=resubmit(,9)").actions,
        [Action::GotoTable(9)]
    );
}

#[test]
fn canonical_form_parses_back_to_the_same_flow() {
    for s in [
        "in_port=p0,actions=drop",
        "table=2,priority=9,cookie=0xabc,in_port=pf0vf1,tcp,nw_src=10.0.0.0/8,tp_dst=0x50/0xfff0,tcp_flags=+syn,actions=output:p0",
        "in_port=p0,dl_src=02:00:00:00:00:00/ff:ff:00:00:00:00,dl_vlan=9,dl_vlan_pcp=1,udp6,ipv6_dst=2001:db8::/48,actions=strip_vlan,output:p1",
        "in_port=p0,arp,arp_op=1,nw_dst=10.0.0.0/255.0.255.0,actions=output:p1,output:p2",
        "in_port=p0,dl_vlan=0xffff,dl_type=0x88cc,actions=push_vlan:0x8100,mod_vlan_vid:3,goto_table:1",
        "in_port=p0,icmp6,icmp_type=135,nw_ttl=255,actions=mod_dl_dst:02:00:00:00:00:09",
        "in_port=p0,ip,nw_tos=32,nw_proto=89,actions=drop",
    ] {
        let f = flow(s);
        let text = f.to_string();
        assert_eq!(flow(&text), f, "{s} -> {text}");
    }
}

#[test]
fn flow_files_skip_comments_and_blank_lines() {
    let flows = parse_flows("# a comment\n\nin_port=p0,actions=drop # trailing\n   \npriority=5,in_port=p1,ip,actions=output:p0\n").unwrap();
    assert_eq!(flows.len(), 2);
    assert_eq!((flows[0].line, flows[1].line), (3, 5));
}

#[test]
fn errors_name_line_and_column() {
    let errs = parse_flows("in_port=p0,actions=drop\nin_port=p0,nw_srcc=1.2.3.4,actions=drop\nin_port=p0,tcp,tp_dst=99999,actions=drop\n").unwrap_err();
    assert_eq!(errs.len(), 2);
    assert_eq!((errs[0].line, errs[0].column), (2, 12));
    assert!(
        errs[0].message.contains("unknown field \"nw_srcc\""),
        "{}",
        errs[0].message
    );
    assert_eq!((errs[1].line, errs[1].column), (3, 23));
    assert!(
        errs[1].message.contains("out of range"),
        "{}",
        errs[1].message
    );
    assert_eq!(
        errs[1].to_string(),
        format!("line 3, column 23: {}", errs[1].message)
    );
}

#[test]
fn bad_input() {
    for (s, col, want) in [
        ("in_port=p0", 11, "missing actions="),
        ("ip,actions=drop", 1, "missing in_port"),
        (
            "in_port=p0,dl_src=02:00:00:00:00,actions=drop",
            19,
            "not a MAC address",
        ),
        (
            "in_port=p0,dl_dst=02:00:00:00:00:zz,actions=drop",
            19,
            "not a MAC address",
        ),
        (
            "in_port=p0,ip,nw_src=10.0.0.300,actions=drop",
            22,
            "not an IP address",
        ),
        (
            "in_port=p0,ip,nw_src=10.0.0.0/33,actions=drop",
            31,
            "longer than 32",
        ),
        (
            "in_port=p0,ip,nw_src=2001:db8::1,actions=drop",
            22,
            "takes an IPv4 address",
        ),
        (
            "in_port=p0,nw_src=10.0.0.1,actions=drop",
            12,
            "needs ip, ipv6 or arp",
        ),
        (
            "in_port=p0,ip,tp_dst=80,actions=drop",
            15,
            "needs tcp, udp or sctp",
        ),
        (
            "in_port=p0,udp,tcp_flags=+syn,actions=drop",
            16,
            "needs tcp",
        ),
        (
            "in_port=p0,tcp,tcp_flags=+foo,actions=drop",
            27,
            "unknown flag \"foo\"",
        ),
        (
            "in_port=p0,ip,nw_tos=33,actions=drop",
            22,
            "low two bits are ECN",
        ),
        (
            "in_port=p0,arp,nw_ttl=3,actions=drop",
            16,
            "needs ip or ipv6",
        ),
        ("in_port=p0,tcp,icmp_type=3,actions=drop", 16, "needs icmp"),
        ("in_port=p0,dl_vlan=4096,actions=drop", 20, "out of range"),
        ("in_port=p0,dl_vlan_pcp=8,actions=drop", 24, "out of range"),
        (
            "in_port=p0,dl_vlan=0xffff,actions=drop",
            12,
            "needs dl_type too",
        ),
        (
            "in_port=p0,dl_vlan=0xffff,dl_vlan_pcp=1,ip,actions=drop",
            27,
            "contradicts dl_vlan=0xffff",
        ),
        (
            "in_port=p0,dl_type=0x8100,actions=drop",
            20,
            "match tags with dl_vlan",
        ),
        ("in_port=p0,dl_type=0x05dc,actions=drop", 20, "is a length"),
        (
            "in_port=p0,ip,ip,nw_proto=6,nw_proto=6,actions=drop",
            29,
            "nw_proto",
        ),
        (
            "in_port=p0,priority=1,priority=2,actions=drop",
            23,
            "priority is given twice",
        ),
        ("in_port=p0,table=255,actions=drop", 18, "out of range"),
        ("in_port=3,actions=drop", 9, "OpenFlow port number"),
        ("in_port=LOCAL,actions=drop", 9, "reserved port"),
        ("in_port=p0,ct_state=+trk,actions=drop", 12, "cannot match"),
        ("in_port=p0,cookie=1/1,actions=drop", 19, "cookie masks"),
        ("in_port=p0,ip,actions=", 15, "actions= is empty"),
        (
            "in_port=p0,actions=normal",
            20,
            "unsupported action \"normal\": there is no learning switch",
        ),
        ("in_port=p0,actions=flood", 20, "no bridge to flood"),
        ("in_port=p0,actions=ct(commit)", 20, "unknown action"),
        (
            "in_port=p0,actions=mod_nw_src:1.2.3.4",
            20,
            "only L2 rewrites",
        ),
        ("in_port=p0,actions=output:", 20, "needs a port"),
        (
            "in_port=p0,actions=outptu:p1",
            20,
            "unknown action \"outptu\"",
        ),
        ("in_port=p0,actions=drop:1", 25, "takes no argument"),
        (
            "in_port=p0,actions=push_vlan:0x0800",
            30,
            "neither 0x8100 nor 0x88a8",
        ),
        ("in_port=p0,actions=mod_vlan_vid:4096", 33, "out of range"),
        (
            "in_port=p0,actions=resubmit(p1,2)",
            20,
            "only resubmit(,TABLE)",
        ),
        (
            "in_port=p0,actions=output:p1,drop",
            12,
            "drop must be the only action",
        ),
        (
            "in_port=p0,actions=goto_table:2,output:p1",
            12,
            "must be the last action",
        ),
        (
            "table=3,in_port=p0,actions=goto_table:3",
            20,
            "tables only go forward",
        ),
        ("in_port=p0,actions=output:p0", 12, "own in_port"),
        (
            "in_port=p0,bogus,actions=drop",
            12,
            "unknown field \"bogus\"",
        ),
        ("in_port=p0,tcp=1,actions=drop", 12, "takes no value"),
        ("in_port=p0,nw_src,actions=drop", 12, "needs a value"),
    ] {
        let e = err(s);
        assert!(
            e.message.contains(want),
            "{s}: {:?} does not say {want:?}",
            e.message
        );
        assert_eq!((e.line, e.column), (1, col), "{s}: {}", e.message);
    }
}

#[test]
fn duplicate_matches_are_an_error_naming_both_lines() {
    let errs = parse_flows("in_port=p0,ip,actions=drop\npriority=1,in_port=p0,ip,actions=drop\nin_port=p0,dl_type=0x0800,actions=output:p1\n").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, 3);
    assert!(errs[0].message.contains("as line 1"), "{}", errs[0].message);
}
