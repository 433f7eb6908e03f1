//! `plexus` with the reference `ipvlan` (l2, l3) and `vlan` (802.1q)
//! plugins as delegates: link types this machine's kernel does not have,
//! so this binary runs only in the kernel matrix (`make kernel-e2e`:
//! Debian's 6.1 and 6.12 in VMs, where `ipvlan` and `8021q` are modules).
//!
//! What a user checks: the pod's extra interface is of the right kind
//! (and VLAN id), has its address, carries a ping, and after DEL there is
//! no interface, lease or cache entry left.

use plexus_e2e::meta::{Pod, Source, World, describe, pod_links};
use plexus_testkit::NetNs;
use serde_json::{Value, json};

fn banner() {
    eprintln!("on Linux {}", plexus_testkit::kernel_release());
}

fn ping(from: &Pod, to: &str) {
    let out = from
        .netns
        .exec("ping", &["-c", "2", "-i", "0.2", "-W", "2", to])
        .unwrap();
    assert!(
        out.status.success(),
        "ping {to} from {}: {}",
        from.name,
        describe(&out)
    );
}

fn ipv4(pod: &Pod, ifname: &str) -> String {
    let addrs = pod.netns.addrs(ifname);
    addrs
        .iter()
        .find(|a| a.contains('.'))
        .unwrap_or_else(|| panic!("{ifname} of {} has no IPv4: {addrs:?}", pod.name))
        .clone()
}

/// `linkinfo` of a pod's interface, as `ip -d -j link` shows it.
fn linkinfo(pod: &Pod, ifname: &str) -> Value {
    let link = pod
        .netns
        .link(ifname)
        .unwrap_or_else(|| panic!("{} has no {ifname}: {:?}", pod.name, pod_links(pod)));
    link["linkinfo"].clone()
}

fn assert_clean(w: &World, pods: &[&Pod]) {
    for p in pods {
        assert!(pod_links(p).is_empty(), "{}: {:?}", p.name, pod_links(p));
    }
    assert!(w.leases().is_empty(), "leases left: {:?}", w.leases());
    assert!(
        w.cache_files().is_empty(),
        "cache left: {:?}",
        w.cache_files()
    );
    assert!(
        w.host_links().is_empty(),
        "host links left: {:?}",
        w.host_links()
    );
}

fn ipvlan(mode: &str, subnet: &str) {
    banner();
    let w = World::new(Source::Standalone);
    let nad = format!("ipvlan-{mode}");
    w.add_nad(
        "default",
        &nad,
        &json!({"cniVersion": "1.0.0", "type": "ipvlan", "master": "mv0", "mode": mode,
                "ipam": w.ipam(subnet)}),
    );
    let a = w.pod("a", Some(&nad));
    let b = w.pod(
        "b",
        Some(&format!(
            "[{{\"name\": \"{nad}\", \"interface\": \"fast0\"}}]"
        )),
    );
    w.add(&a);
    w.add(&b);

    for (pod, ifname) in [(&a, "net1"), (&b, "fast0")] {
        let info = linkinfo(pod, ifname);
        assert_eq!(info["info_kind"], "ipvlan", "{info}");
        assert_eq!(info["info_data"]["mode"], mode, "{info}");
    }
    let prefix = &subnet[..subnet.rfind('.').unwrap()];
    let b_addr = ipv4(&b, "fast0");
    assert!(ipv4(&a, "net1").starts_with(prefix), "{}", ipv4(&a, "net1"));
    assert!(b_addr.starts_with(prefix), "{b_addr}");
    // Two slaves of one master reach each other inside ipvlan, in either
    // mode (l3 routes between them, l2 switches).
    ping(&a, b_addr.split('/').next().unwrap());

    let status = w.status(&a).expect("network-status written");
    let entry = status
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["interface"] == "net1")
        .unwrap_or_else(|| panic!("{status:#}"));
    assert_eq!(entry["name"], format!("default/{nad}"));

    w.del(&a);
    w.del(&b);
    assert_clean(&w, &[&a, &b]);
}

#[test]
fn ipvlan_l2_attachments_ping_and_del_clean() {
    ipvlan("l2", "10.77.5.0/24");
}

#[test]
fn ipvlan_l3_attachments_ping_and_del_clean() {
    ipvlan("l3", "10.77.6.0/24");
}

#[test]
fn vlan_attachment_is_tagged_pings_the_trunk_and_del_clean() {
    banner();
    let w = World::new(Source::Standalone);
    // The far end of the master's wire, in its own namespace: only VLAN
    // 100 has an address there, so a reply proves the pod's frames left
    // tagged with 100 (an untagged frame reaches no address at all).
    let trunk = NetNs::with_prefix("vl-trunk").unwrap();
    w.host
        .sh("ip", &["link", "set", "mv0peer", "netns", trunk.name()]);
    trunk.sh("ip", &["link", "set", "mv0peer", "up"]);
    trunk.sh(
        "ip",
        &[
            "link",
            "add",
            "link",
            "mv0peer",
            "name",
            "trunk.100",
            "type",
            "vlan",
            "id",
            "100",
        ],
    );
    trunk.sh("ip", &["addr", "add", "10.77.7.250/24", "dev", "trunk.100"]);
    trunk.sh("ip", &["link", "set", "trunk.100", "up"]);
    for (name, id) in [("vlan-100", 100), ("vlan-200", 200)] {
        w.add_nad(
            "default",
            name,
            &json!({"cniVersion": "1.0.0", "type": "vlan", "master": "mv0", "vlanId": id,
                    "ipam": w.ipam(if id == 100 { "10.77.7.0/24" } else { "10.77.8.0/24" })}),
        );
    }
    let a = w.pod("a", Some("vlan-100"));
    let b = w.pod("b", Some("vlan-200"));
    w.add(&a);
    w.add(&b);

    for (pod, id) in [(&a, 100), (&b, 200)] {
        let info = linkinfo(pod, "net1");
        assert_eq!(info["info_kind"], "vlan", "{info}");
        assert_eq!(info["info_data"]["id"], id, "{info}");
        assert_eq!(info["info_data"]["protocol"], "802.1Q", "{info}");
    }
    assert!(ipv4(&a, "net1").starts_with("10.77.7."));
    assert!(ipv4(&b, "net1").starts_with("10.77.8."));
    ping(&a, "10.77.7.250");
    // VLAN 200 has nothing on the trunk: the same wire, no answer.
    b.netns
        .sh("ip", &["route", "add", "10.77.7.250/32", "dev", "net1"]);
    let out = b
        .netns
        .exec("ping", &["-c", "1", "-W", "1", "10.77.7.250"])
        .unwrap();
    assert!(!out.status.success(), "VLAN 200 reached VLAN 100");

    w.del(&a);
    w.del(&b);
    // A vlan link lives in the pod; the master stays on the host.
    assert_clean(&w, &[&a, &b]);
    assert!(w.host.link("mv0").is_some());
}
