//! `plexus` end to end with the reference plugins, in throwaway namespaces:
//! every scenario runs three times, with NADs and annotations from the API
//! server stand-in (real HTTP, kube client), in standalone mode (NAD
//! directory, `CNI_ARGS`), and in thick mode (the stand-in, every call
//! handed by the `plexus` shim to `plexus daemon`).
//!
//! What is asserted is what a user checks: interfaces and addresses in the
//! pod, pings, routes, the network-status, and after DEL no interface, no
//! lease file and no cache entry.

use std::os::unix::fs::MetadataExt;

use plexus_e2e::meta::{Pod, Source, World, cni_error, describe, eventually, pod_links};
use serde_json::{Value, json};

/// Runs a scenario in both modes.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod standalone {
            $(#[test] fn $name() { super::$name(super::Source::Standalone) })*
        }
        mod api {
            $(#[test] fn $name() { super::$name(super::Source::Api) })*
        }
        /// Thick mode: the same scenario, every call through `plexus daemon`.
        mod thick {
            $(#[test] fn $name() {
                plexus_e2e::meta::through_daemon(|| super::$name(super::Source::Api))
            })*
        }
    };
}

both!(
    attachments_ping_status_and_clean_del,
    check_fails_after_an_interface_is_deleted,
    default_route_moves_to_the_chosen_network,
    del_after_the_netns_is_gone,
    failing_third_delegate_leaves_nothing,
    bad_input_gets_the_right_code_and_touches_nothing,
    namespace_isolation_covers_both_annotations,
    default_network_annotation_replaces_eth0,
    del_without_cache_rebuilds_from_the_pod,
);

fn ping(from: &Pod, to: &str) {
    let out = from
        .netns
        .exec("ping", &["-c", "1", "-W", "2", to])
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
    let a = addrs
        .iter()
        .find(|a| a.contains('.'))
        .unwrap_or_else(|| panic!("{ifname} of {} has no IPv4: {addrs:?}", pod.name));
    a.split('/').next().unwrap().to_owned()
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

fn attachments_ping_status_and_clean_del(src: Source) {
    let w = World::new(src);
    let a = w.pod(
        "a",
        Some(
            r#"[{"name": "macvlan-static", "ips": ["10.77.5.11/24"], "mac": "02:00:00:77:05:11"},
                 {"name": "bridge-net", "interface": "data0"}]"#,
        ),
    );
    let b = w.pod(
        "b",
        Some(r#"[{"name": "macvlan-static", "namespace": "default", "ips": ["10.77.5.12/24"]}]"#),
    );
    // The text form, and a NAD whose config is a file in confDir.
    let c = w.pod("c", Some("macvlan-dyn, default/from-file@ff0"));

    // The runtime's portMappings reach the cluster network's portmap.
    let mut with_ports = w.conf.clone();
    with_ports["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]});
    let out = w.cni_with("ADD", &a, &with_ports, Some(a.netns.path()));
    assert!(out.status.success(), "ADD a: {}", describe(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let nat = w.host.sh("iptables-save", &["-t", "nat"]);
    assert!(nat.contains("--dport 18080"), "portmap DNAT rule: {nat}");
    w.add(&b);
    w.add(&c);
    assert_eq!(result["cniVersion"], "1.0.0");
    let eth0 = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0")
        .expect("the cluster network's result is returned");
    assert_eq!(eth0["sandbox"], a.netns.path().to_str().unwrap());

    let mut links = pod_links(&a);
    links.sort();
    assert_eq!(links, ["data0", "eth0", "net1"]);
    assert!(ipv4(&a, "eth0").starts_with("10.77.0."));
    assert_eq!(a.netns.addrs("net1")[0], "10.77.5.11/24");
    assert_eq!(
        a.netns.link("net1").unwrap()["address"],
        "02:00:00:77:05:11"
    );
    assert!(ipv4(&a, "data0").starts_with("10.77.2."));
    assert!(ipv4(&c, "net1").starts_with("10.77.1."));
    assert!(ipv4(&c, "ff0").starts_with("10.77.3."));

    ping(&a, "10.77.5.12"); // macvlan, bridge mode on one master
    ping(&a, &ipv4(&b, "eth0")); // the cluster network (ptp via the host)

    let status = w.status(&a).expect("network-status written");
    let entries = status.as_array().unwrap();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "pod-network",
            "default/macvlan-static",
            "default/bridge-net"
        ]
    );
    let defaults: Vec<bool> = entries
        .iter()
        .map(|e| e["default"].as_bool().unwrap())
        .collect();
    assert_eq!(defaults, [true, false, false]);
    assert_eq!(entries[1]["interface"], "net1");
    assert_eq!(entries[1]["ips"], json!(["10.77.5.11"]));
    assert_eq!(entries[1]["mac"], "02:00:00:77:05:11");
    assert_eq!(entries[2]["interface"], "data0");
    let spec_keys = [
        "name",
        "interface",
        "ips",
        "mac",
        "default",
        "dns",
        "default-route",
        "device-info",
    ];
    for e in entries {
        for k in e.as_object().unwrap().keys() {
            assert!(
                spec_keys.contains(&k.as_str()),
                "key {k:?} is not in the spec"
            );
        }
    }

    let cache = w.cache_files();
    assert_eq!(cache.len(), 3);
    assert_eq!(std::fs::metadata(&cache[0]).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(cache[0].parent().unwrap())
            .unwrap()
            .mode()
            & 0o777,
        0o700
    );
    // CHECK of every attachment (not a: Debian's portmap 1.1.1 fails its own
    // CHECK of an IPv4-only mapping on the missing IPv6 chain).
    for p in [&b, &c] {
        let check = w.cni("CHECK", p);
        assert!(
            check.status.success(),
            "CHECK {}: {}",
            p.name,
            describe(&check)
        );
    }

    let out = w.cni_with("DEL", &a, &with_ports, Some(a.netns.path()));
    assert!(out.status.success(), "DEL a: {}", describe(&out));
    for p in [&b, &c] {
        w.del(p);
    }
    assert_clean(&w, &[&a, &b, &c]);
    let nat = w.host.sh("iptables-save", &["-t", "nat"]);
    assert!(!nat.contains("18080"), "portmap rule removed: {nat}");
    if src == Source::Standalone {
        assert!(w.status(&a).is_none(), "status file removed on DEL");
    }
    // DEL is idempotent.
    w.del(&a);
}

fn check_fails_after_an_interface_is_deleted(src: Source) {
    let w = World::new(src);
    let a = w.pod("a", Some("macvlan-dyn"));
    w.add(&a);
    assert!(w.cni("CHECK", &a).status.success());
    a.netns.sh("ip", &["link", "del", "net1"]);
    let e = cni_error(&w.cni("CHECK", &a));
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("default/macvlan-dyn") && msg.contains("net1"),
        "{e}"
    );
    w.del(&a);
    assert_clean(&w, &[&a]);
}

fn default_route_moves_to_the_chosen_network(src: Source) {
    let w = World::new(src);
    let a = w.pod(
        "a",
        Some(r#"[{"name": "macvlan-static", "ips": ["10.77.5.21/24"], "default-route": ["10.77.5.254"]}]"#),
    );
    let b = w.pod("b", None);
    let result = w.add(&a);
    w.add(&b);
    let defaults: Vec<Value> = a
        .netns
        .routes()
        .into_iter()
        .filter(|r| r["dst"] == "default")
        .collect();
    assert_eq!(defaults.len(), 1, "{defaults:?}");
    assert_eq!(defaults[0]["gateway"], "10.77.5.254");
    assert_eq!(defaults[0]["dev"], "net1");
    // The returned (cluster network) result no longer claims the default.
    let routes = result["routes"].as_array().cloned().unwrap_or_default();
    assert!(routes.iter().all(|r| r["dst"] != "0.0.0.0/0"), "{result}");
    let status = w.status(&a).unwrap();
    assert!(status[0].get("default-route").is_none(), "{status}");
    assert_eq!(status[1]["default-route"], json!(["10.77.5.254"]));
    assert!(w.cni("CHECK", &a).status.success());
    // A pod without the request keeps its cluster default route.
    let b_default: Vec<Value> = b
        .netns
        .routes()
        .into_iter()
        .filter(|r| r["dst"] == "default")
        .collect();
    assert_eq!(b_default[0]["dev"], "eth0");
    w.del(&a);
    w.del(&b);
    assert_clean(&w, &[&a, &b]);
}

fn del_after_the_netns_is_gone(src: Source) {
    let w = World::new(src);
    let a = w.pod("a", Some("macvlan-dyn,bridge-net"));
    w.add(&a);
    assert_eq!(w.leases().len(), 3);
    a.netns.sh("true", &[]);
    std::process::Command::new("ip")
        .args(["netns", "del", a.netns.name()])
        .status()
        .unwrap();
    w.del(&a);
    assert!(w.leases().is_empty(), "{:?}", w.leases());
    assert!(w.cache_files().is_empty());
    // The host ends of the pod's veths go with the namespace, but the
    // kernel tears a namespace down asynchronously (cleanup_net runs from a
    // workqueue), so give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !w.host_links().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(w.host_links().is_empty(), "{:?}", w.host_links());
    w.del(&a);
}

fn failing_third_delegate_leaves_nothing(src: Source) {
    let w = World::new(src);
    let a = w.pod("a", Some("macvlan-dyn,broken"));
    let e = cni_error(&w.cni("ADD", &a));
    assert!(e["msg"].as_str().unwrap().contains("default/broken"), "{e}");
    assert_clean(&w, &[&a]);
    assert!(
        w.status(&a).is_none_or(|s| s.as_array().is_none()),
        "no status"
    );
    w.del(&a);
}

fn bad_input_gets_the_right_code_and_touches_nothing(src: Source) {
    let w = World::new(src);
    let cases: [(&str, &str, u64, &str); 6] = [
        ("json", r#"[{"name": "macvlan-dyn""#, 6, "JSON"),
        (
            "long",
            "macvlan-dyn@abcdefghijklmnop",
            7,
            "abcdefghijklmnop",
        ),
        ("evil", "evil", 7, "../x"),
        (
            "nocaps",
            r#"[{"name": "no-caps", "ips": ["10.77.5.9/24"]}]"#,
            7,
            "ips",
        ),
        ("missing", "nope", 7, "default/nope"),
        ("dup", "macvlan-dyn@x1,bridge-net@x1", 7, "x1"),
    ];
    for (name, annotation, code, mentions) in cases {
        let p = w.pod(name, Some(annotation));
        let e = cni_error(&w.cni("ADD", &p));
        assert_eq!(e["code"], code, "{name}: {e}");
        let text = format!("{} {}", e["msg"], e["details"]);
        assert!(text.contains(mentions), "{name}: {e}");
        assert_clean(&w, &[&p]);
    }
    let p = w.pod("version", Some("macvlan-dyn"));
    let mut conf = w.conf.clone();
    conf["cniVersion"] = json!("9.9.9");
    let e = cni_error(&w.cni_with("ADD", &p, &conf, Some(p.netns.path())));
    assert_eq!(e["code"], 1, "{e}");
    assert_clean(&w, &[&p]);
}

fn namespace_isolation_covers_both_annotations(src: Source) {
    let mut w = World::new(src);
    w.conf["namespaceIsolation"] = json!(true);
    let cfg = json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "mv0",
        "ipam": w.ipam("10.77.6.0/24")});
    w.add_nad("team-b", "private", &cfg);
    w.add_nad("team-a", "own", &cfg);
    let denied = w.pod_in("team-a", "x", Some("team-b/private"), None);
    let e = cni_error(&w.cni("ADD", &denied));
    assert_eq!(e["code"], 7);
    assert!(
        e["msg"].as_str().unwrap().contains("namespace isolation"),
        "{e}"
    );
    // Multus forgets isolation for the default-network annotation.
    let denied = w.pod_in("team-a", "y", None, Some("team-b/private"));
    let e = cni_error(&w.cni("ADD", &denied));
    assert!(
        e["msg"].as_str().unwrap().contains("namespace isolation"),
        "{e}"
    );
    assert_clean(&w, &[&denied]);
    // Own namespace and the global "default" are fine.
    let ok = w.pod_in("team-a", "z", Some("own,default/macvlan-dyn"), None);
    w.add(&ok);
    assert_eq!(pod_links(&ok).len(), 3);
    w.del(&ok);
    assert_clean(&w, &[&ok]);
}

fn default_network_annotation_replaces_eth0(src: Source) {
    let w = World::new(src);
    let a = w.pod_in(
        "default",
        "a",
        Some("macvlan-dyn"),
        Some("default/bridge-net"),
    );
    w.add(&a);
    assert!(
        ipv4(&a, "eth0").starts_with("10.77.2."),
        "eth0 is on bridge-net"
    );
    let status = w.status(&a).unwrap();
    assert_eq!(status[0]["name"], "default/bridge-net");
    assert_eq!(status[0]["default"], true);
    assert_eq!(status[1]["name"], "default/macvlan-dyn");
    w.del(&a);
    assert_clean(&w, &[&a]);
}

fn del_without_cache_rebuilds_from_the_pod(src: Source) {
    let w = World::new(src);
    let a = w.pod("a", Some("macvlan-dyn,bridge-net"));
    w.add(&a);
    for f in w.cache_files() {
        std::fs::remove_file(f).unwrap();
    }
    w.del(&a);
    assert_clean(&w, &[&a]);
}

// ---- API-server-only scenarios --------------------------------------------

#[test]
fn api_status_goes_through_pods_status_as_a_merge_patch_and_conflicts_are_retried() {
    let w = World::new(Source::Api);
    let a = w.pod("a", Some("macvlan-dyn"));
    w.api().fail_next_method("PATCH", &[409, 409]);
    w.add(&a);
    let patches: Vec<_> = w
        .api()
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 3, "two conflicts, then success: {patches:?}");
    assert_eq!(patches[2].path, "/api/v1/namespaces/default/pods/a/status");
    assert_eq!(
        patches[2].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(w.status(&a).unwrap().as_array().unwrap().len(), 2);
    w.del(&a);
    assert_clean(&w, &[&a]);
}

#[test]
fn api_down_during_del_with_cache() {
    let mut w = World::new(Source::Api);
    let a = w.pod("a", Some("macvlan-dyn,bridge-net"));
    w.add(&a);
    w.api.as_mut().unwrap().stop();
    w.del(&a);
    assert_clean(&w, &[&a]);
}

#[test]
fn api_down_and_cache_gone_deletes_what_it_can_and_asks_to_retry() {
    let mut w = World::new(Source::Api);
    let a = w.pod("a", Some("macvlan-dyn"));
    w.add(&a);
    for f in w.cache_files() {
        std::fs::remove_file(f).unwrap();
    }
    w.api.as_mut().unwrap().stop();
    let e = cni_error(&w.cni("DEL", &a));
    assert_eq!(e["code"], 11, "try again later: {e}");
    // The cluster network came from the config and is gone; the annotation's
    // macvlan could not be known.
    assert!(a.netns.link("eth0").is_none());
    assert_eq!(pod_links(&a), ["net1"]);
    assert_eq!(w.leases().len(), 1);
    // The API server is back (on a new address): DEL finishes the job.
    let server = w.restart_api();
    server.add_pod(
        "default",
        "a",
        &[("k8s.v1.cni.cncf.io/networks", "macvlan-dyn")],
    );
    server.add_nad(
        "default",
        "macvlan-dyn",
        Some(
            &json!({"cniVersion": "0.4.0", "type": "macvlan", "master": plexus_e2e::meta::MASTER,
                "mode": "bridge", "ipam": w.ipam("10.77.1.0/24")})
            .to_string(),
        ),
    );
    w.del(&a);
    assert_clean(&w, &[&a]);
}

#[test]
fn api_missing_pod_is_an_error_and_runs_nothing() {
    let w = World::new(Source::Api);
    let mut ghost = w.pod("ghost", None);
    ghost.name = "not-there".into();
    let e = cni_error(&w.cni("ADD", &ghost));
    assert_eq!(e["code"], 3, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("default/not-there"));
    assert_clean(&w, &[&ghost]);
}

#[test]
fn api_uid_mismatch_is_refused() {
    let w = World::new(Source::Api);
    let mut a = w.pod("a", None);
    a.uid = "someone-else".into();
    let e = cni_error(&w.cni("ADD", &a));
    assert!(e["msg"].as_str().unwrap().contains("UID"), "{e}");
    assert_clean(&w, &[&a]);
}

/// Thick mode with the daemon gone (killed, as a DaemonSet pod that
/// crashed): ADD fails at once with 11 and changes nothing; DEL runs in the
/// shim itself, in thin mode, from the cache, and leaves nothing.
#[test]
fn thick_with_the_daemon_down_add_asks_to_retry_and_del_cleans_up_thin() {
    plexus_e2e::meta::through_daemon(|| {
        let mut w = World::new(Source::Api);
        let a = w.pod("a", Some("macvlan-dyn"));
        w.add(&a);
        assert_eq!(pod_links(&a).len(), 2);
        // It was the daemon that ran it.
        let log = std::fs::read_to_string(&w.daemon.as_ref().unwrap().log).unwrap();
        assert!(
            log.contains("/cni") && log.contains("status=200"),
            "the daemon served no ADD: {log}"
        );
        let sock = w.daemon.as_ref().unwrap().socket_dir.join("plexus.sock");
        let mode = std::fs::metadata(&sock).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600, "the socket is root's alone");
        let dir_mode = std::fs::metadata(sock.parent().unwrap()).unwrap().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        w.daemon.as_mut().unwrap().kill();

        let b = w.pod("b", Some("macvlan-dyn"));
        let started = std::time::Instant::now();
        let out = w.cni("ADD", &b);
        let e = cni_error(&out);
        assert_eq!(e["code"], 11, "{e}");
        assert!(e["msg"].as_str().unwrap().contains("not reachable"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(pod_links(&b).is_empty());
        assert_eq!(w.leases().len(), 2, "only a's two leases");

        w.del(&a);
        assert_clean(&w, &[&a, &b]);
    });
}

/// What the daemon's socket answers besides CNI requests: its health, and a
/// clear CNI error for a request that is not one.
#[test]
fn thick_daemon_answers_health_and_refuses_bad_requests_clearly() {
    use plexus_meta_cni::thick::{ApiRequest, post};
    plexus_e2e::meta::through_daemon(|| {
        let w = World::new(Source::Api);
        let sock = w.daemon.as_ref().unwrap().socket_dir.join("plexus.sock");
        let (s, _) = post(&sock, "/healthz", &ApiRequest::default()).unwrap();
        assert_eq!(s, 200);
        let (s, body) = post(&sock, "/cni", &ApiRequest::default()).unwrap();
        assert_eq!(s, 400);
        let e: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(e["code"], 4, "{e}");
        assert!(e["msg"].as_str().unwrap().contains("CNI_COMMAND"), "{e}");
        let (s, body) = post(&sock, "/nope", &ApiRequest::default()).unwrap();
        assert_eq!(s, 404);
        assert!(String::from_utf8_lossy(&body).contains("/cni"));
        // A config the plugin cannot read: the plugin's own error, code 6.
        let req = ApiRequest {
            env: [
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_NETNS", "/proc/self/ns/net"),
                ("CNI_PATH", "/usr/lib/cni"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            config: b"{not json".to_vec(),
            interface_attributes: None,
        };
        let (s, body) = post(&sock, "/cni", &req).unwrap();
        assert_eq!(s, 400);
        let e: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(e["code"], 6, "{e}");
    });
}

/// `GET path` over `stream` (HTTP/1.1, the server closes): the status
/// line and the body.
fn http_get(mut s: impl std::io::Read + std::io::Write, path: &str) -> (String, String) {
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// GETs `path` from the daemon's metrics address (in the world's host
/// namespace); returns the status line and the body.
fn scrape(w: &World, addr: &str, path: &str) -> (String, String) {
    let addr = addr.to_owned();
    let path = path.to_owned();
    w.host
        .run(move || http_get(std::net::TcpStream::connect(&addr).unwrap(), &path))
}

/// The daemon's metrics after a few ADD/DEL: requests by verb and result,
/// delegate runs by type, API requests, the cache gauge; and its probes.
#[test]
fn thick_daemon_metrics_count_what_it_served() {
    plexus_e2e::meta::through_daemon(|| {
        let mut w = World::new(Source::Api);
        // Again, with a metrics address (the world's daemon has none).
        drop(w.daemon.take());
        let addr = "127.0.0.1:9464";
        w.daemon = Some(plexus_e2e::meta::Daemon::start_with(
            &w.host,
            w.tmp.path(),
            &["--metrics-address", addr],
        ));
        let (a, b) = (
            w.pod("a", Some("macvlan-dyn")),
            w.pod("b", Some("macvlan-dyn")),
        );
        w.add(&a);
        w.add(&b);
        let (status, text) = scrape(&w, addr, "/metrics");
        assert!(status.contains(" 200 "), "{status}");
        let has = |line: &str| {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        };
        has("plexus_cni_requests_total{verb=\"ADD\",result=\"ok\"} 2");
        has("plexus_cni_request_duration_seconds_count{verb=\"ADD\"} 2");
        has("plexus_delegate_calls_total{type=\"ptp\",verb=\"ADD\",result=\"ok\"} 2");
        has("plexus_delegate_calls_total{type=\"macvlan\",verb=\"ADD\",result=\"ok\"} 2");
        has("plexus_delegate_duration_seconds_count{type=\"macvlan\",verb=\"ADD\"} 2");
        // Per ADD: the pod, its NAD, the status patch (and no retries).
        has("plexus_api_requests_total{verb=\"PATCH\",result=\"ok\"} 2");
        assert!(
            text.lines()
                .any(|l| l.starts_with("plexus_api_requests_total{verb=\"GET\",result=\"ok\"} ")),
            "{text}"
        );
        has("plexus_attachments_cached 2");

        w.del(&a);
        // A failed request counts under its code: a pod the API has never
        // heard of is refused at ADD.
        let ghost = w.pod("ghost", None);
        w.api().remove_pod("default", "ghost");
        assert!(!w.cni("ADD", &ghost).status.success());
        let (_, text) = scrape(&w, addr, "/metrics");
        assert!(
            text.lines().any(
                |l| l.starts_with("plexus_cni_requests_total{verb=\"ADD\",result=\"")
                    && !l.contains("\"ok\"")
            ),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "plexus_cni_requests_total{verb=\"DEL\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l == "plexus_attachments_cached 1"),
            "{text}"
        );
        for probe in ["/healthz", "/readyz"] {
            assert!(scrape(&w, addr, probe).0.contains(" 200 "));
        }
        // The metrics port never serves CNI requests.
        assert!(scrape(&w, addr, "/cni").0.contains(" 404 "));
        w.del(&b);
    });
}

/// `GET path` on the daemon's socket: the status and body.
fn daemon_get(w: &World, path: &str) -> (u16, String) {
    let sock = w.daemon.as_ref().unwrap().socket_dir.join("plexus.sock");
    let (line, body) = http_get(std::os::unix::net::UnixStream::connect(sock).unwrap(), path);
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body)
}

/// A counter of the daemon's metrics (0 when absent).
fn daemon_metric(w: &World, line_prefix: &str) -> u64 {
    let (_, text) = daemon_get(w, "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
        .unwrap_or(0)
}

/// The daemon's informer caches: once synced (`/readyz`), an ADD reads
/// the pod and its NAD from them, so the API server sees the status patch
/// and nothing else on the ADD's path (Events are posted after it), and
/// nothing at all for DEL. A NAD edited at the API server reaches the
/// next ADD through the watch; a pod the cache cannot have (another node's)
/// is read with a GET.
#[test]
fn thick_add_reads_pod_and_nads_from_the_informer_caches() {
    plexus_e2e::meta::through_daemon(|| {
        let w = World::new(Source::Api);
        eventually("/readyz answers 200", || daemon_get(&w, "/readyz").0 == 200);
        let pod_events = || daemon_metric(&w, "plexus_informer_events_total{resource=\"pods\"}");
        let seen = pod_events();
        let a = w.pod("a", Some("macvlan-dyn"));
        eventually("the pod informer has pod a", || pod_events() > seen);
        let on_path = |from: usize| -> Vec<String> {
            w.api().requests()[from..]
                .iter()
                .filter(|r| !r.path.ends_with("/events"))
                .map(|r| format!("{} {}", r.method, r.path))
                .collect()
        };
        let before = w.api().requests().len();
        w.add(&a);
        assert_eq!(
            on_path(before),
            ["PATCH /api/v1/namespaces/default/pods/a/status"],
            "ADD through the daemon"
        );
        assert_eq!(ipv4(&a, "net1").rsplit_once('.').unwrap().0, "10.77.1");
        eventually("the AddedInterface Events", || {
            w.api()
                .events()
                .iter()
                .filter(|e| e["reason"] == "AddedInterface")
                .count()
                == 2
        });
        let before = w.api().requests().len();
        w.del(&a);
        assert_eq!(
            on_path(before),
            Vec::<String>::new(),
            "DEL through the daemon"
        );

        // The NAD moves to another subnet: the watch brings it to the cache.
        let events = daemon_metric(
            &w,
            "plexus_informer_events_total{resource=\"network-attachment-definitions\"}",
        );
        w.add_nad(
            "default",
            "macvlan-dyn",
            &json!({"cniVersion": "0.4.0", "type": "macvlan", "master": plexus_e2e::meta::MASTER,
                    "mode": "bridge", "ipam": w.ipam("10.77.9.0/24")}),
        );
        eventually("the NAD informer sees the edit", || {
            daemon_metric(
                &w,
                "plexus_informer_events_total{resource=\"network-attachment-definitions\"}",
            ) > events
        });
        let seen = pod_events();
        let b = w.pod("b", Some("macvlan-dyn"));
        eventually("the pod informer has pod b", || pod_events() > seen);
        w.add(&b);
        assert_eq!(ipv4(&b, "net1").rsplit_once('.').unwrap().0, "10.77.9");

        // Another node's pod is not in this node's cache: a GET finds it.
        let c = w.pod("c", Some("macvlan-dyn"));
        let uid = w.api().add_pod_on(
            "other-node",
            "default",
            "c",
            &[("k8s.v1.cni.cncf.io/networks", "macvlan-dyn")],
        );
        let c = plexus_e2e::meta::Pod { uid, ..c };
        let before = w.api().requests().len();
        w.add(&c);
        assert!(
            on_path(before).contains(&"GET /api/v1/namespaces/default/pods/c".to_owned()),
            "{:?}",
            on_path(before)
        );
        w.del(&b);
        w.del(&c);
        assert_clean(&w, &[&a, &b, &c]);
    });
}

/// Hot-plug: the daemon watches its node's pods; an element added to a
/// running pod's networks annotation gets its interface (ADD in the pod's
/// netns), one removed loses it (DEL, lease gone), and network-status and
/// Events follow. The pod's DEL then removes what was hot-plugged too.
#[test]
fn thick_hot_plug_adds_and_removes_networks_of_a_running_pod() {
    plexus_e2e::meta::through_daemon(|| {
        let w = World::new(Source::Api);
        eventually("/readyz answers 200", || daemon_get(&w, "/readyz").0 == 200);
        let a = w.pod("a", Some("macvlan-dyn"));
        w.add(&a);
        assert_eq!(pod_links(&a), ["eth0", "net1"]);
        let status_names = || -> Vec<String> {
            let text = w
                .api()
                .pod_annotation("default", "a", "k8s.v1.cni.cncf.io/network-status")
                .unwrap_or_default();
            serde_json::from_str::<Vec<Value>>(&text)
                .unwrap_or_default()
                .iter()
                .map(|e| format!("{} {}", e["interface"].as_str().unwrap_or(""), e["name"]))
                .collect()
        };
        let events = |reason: &str| -> Vec<String> {
            w.api()
                .events()
                .iter()
                .filter(|e| e["reason"] == reason)
                .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                .collect()
        };

        // Added: net2 on the bridge network, with its address.
        w.api().set_pod_annotation(
            "default",
            "a",
            "k8s.v1.cni.cncf.io/networks",
            Some("macvlan-dyn,bridge-net"),
        );
        eventually("net2 in the pod", || a.netns.link("net2").is_some());
        eventually("net2 has its address", || {
            a.netns
                .addrs("net2")
                .iter()
                .any(|x| x.starts_with("10.77.2."))
        });
        eventually("network-status lists net2", || {
            status_names().contains(&"net2 \"default/bridge-net\"".to_owned())
        });
        eventually("an AddedInterface Event for net2", || {
            events("AddedInterface")
                .iter()
                .any(|m| m.starts_with("Add net2 [10.77.2."))
        });
        assert_eq!(pod_links(&a), ["eth0", "net1", "net2"]);
        assert_eq!(w.leases().len(), 3, "{:?}", w.leases());

        // Removed: net1 goes, its lease too; net2 keeps its name.
        w.api().set_pod_annotation(
            "default",
            "a",
            "k8s.v1.cni.cncf.io/networks",
            Some("bridge-net"),
        );
        eventually("net1 gone from the pod", || a.netns.link("net1").is_none());
        eventually("net1's lease released", || w.leases().len() == 2);
        assert_eq!(pod_links(&a), ["eth0", "net2"]);
        eventually("network-status without net1", || {
            let names = status_names();
            names.len() == 2 && !names.iter().any(|n| n.starts_with("net1 "))
        });
        eventually("a RemovedInterface Event for net1", || {
            events("RemovedInterface") == ["Remove net1 from default/macvlan-dyn"]
        });

        // A NAD that does not exist: nothing changes, a Warning says why.
        w.api().set_pod_annotation(
            "default",
            "a",
            "k8s.v1.cni.cncf.io/networks",
            Some("bridge-net,nope"),
        );
        eventually("a Warning for the missing NAD", || {
            w.api().events().iter().any(|e| {
                e["type"] == "Warning" && e["message"].as_str().unwrap_or("").contains("nope")
            })
        });
        assert_eq!(pod_links(&a), ["eth0", "net2"]);

        // The pod's DEL takes the hot-plugged interface with it.
        w.del(&a);
        assert_clean(&w, &[&a]);
    });
}

/// An annotation edited while the pod's ADD runs: the pod informer's pass
/// comes before the daemon has kept the ADD, so it has nothing to replug;
/// the pass after the ADD sees that the annotation moved and adds the
/// network. (The first delegate sleeps until the edit is made, so the ADD
/// has planned with the old annotation.)
#[test]
fn thick_hot_plug_catches_an_edit_made_while_the_add_runs() {
    use std::os::unix::fs::PermissionsExt as _;
    plexus_e2e::meta::through_daemon(|| {
        let mut w = World::new(Source::Api);
        eventually("/readyz answers 200", || daemon_get(&w, "/readyz").0 == 200);
        let bin = w.tmp.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let (started, go) = (w.tmp.path().join("started"), w.tmp.path().join("go"));
        let slow = bin.join("slow-macvlan");
        std::fs::write(
            &slow,
            format!(
                "#!/bin/sh\nif [ \"$CNI_COMMAND\" = ADD ]; then\n  touch {started}\n  \
                 for _ in $(seq 100); do [ -e {go} ] && break; sleep 0.05; done\nfi\n\
                 exec {plugins}/macvlan\n",
                started = started.display(),
                go = go.display(),
                plugins = plexus_e2e::REFERENCE_PLUGINS,
            ),
        )
        .unwrap();
        std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
        w.cni_path = format!("{}:{}", bin.display(), w.cni_path);
        let data = w.tmp.path().join("ipam");
        w.add_nad(
            "default",
            "slow-net",
            &json!({"cniVersion": "1.0.0", "type": "slow-macvlan",
                "master": plexus_e2e::meta::MASTER, "mode": "bridge",
                "ipam": {"type": "host-local", "dataDir": data,
                         "ranges": [[{"subnet": "10.77.6.0/24"}]]}}),
        );
        let pod_events = || daemon_metric(&w, "plexus_informer_events_total{resource=\"pods\"}");
        let before = pod_events();
        let a = w.pod("a", Some("slow-net"));
        eventually("the daemon's cache has the pod", || pod_events() > before);
        let add = w.spawn("ADD", &a, &w.conf, Some(a.netns.path()));
        eventually("the ADD reached its delegate", || started.exists());
        let before = pod_events();
        w.api().set_pod_annotation(
            "default",
            "a",
            "k8s.v1.cni.cncf.io/networks",
            Some("slow-net,macvlan-dyn"),
        );
        // The informer (and its hot-plug hook) has the edit before the ADD
        // goes on.
        eventually("the daemon's cache saw the edit", || pod_events() > before);
        std::fs::write(&go, "").unwrap();
        let out = add.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ADD: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        eventually("net2 hot-plugged after the ADD", || {
            a.netns.link("net2").is_some()
                && a.netns
                    .addrs("net2")
                    .iter()
                    .any(|x| x.starts_with("10.77.1."))
        });
        assert_eq!(pod_links(&a), ["eth0", "net1", "net2"]);
        w.del(&a);
        assert_clean(&w, &[&a]);
    });
}

/// Multus thick's `/delegate`, in the shape multus-dynamic-networks-
/// controller sends (`env` with the pod's sandbox, netns and the new
/// `CNI_IFNAME`; `config` = the NAD's config, base64;
/// `interfaceAttributes` with `ips` and `mac`): ADD puts the interface in
/// the running pod with the asked address and MAC and answers
/// `{"Result": ...}`; DEL takes it out; and one left in is removed by the
/// pod's own DEL, since plexus records it in the pod's cache.
#[test]
fn thick_delegate_endpoint_adds_and_deletes_one_network_in_a_running_pod() {
    use base64::Engine as _;
    use plexus_meta_cni::thick::{ApiRequest, post};
    plexus_e2e::meta::through_daemon(|| {
        let mut w = World::new(Source::Api);
        // A daemon that leaves hot-plug to the controller still keeps the
        // pod's ADD (its cache directory, CNI_PATH), which /delegate needs.
        w.restart_daemon(&json!({"hotplug": false}), None);
        let a = w.pod("a", Some("macvlan-dyn"));
        w.add(&a);
        let sock = w.daemon.as_ref().unwrap().socket_dir.join("plexus.sock");
        let nad = json!({"cniVersion": "1.0.0", "name": "macvlan-static", "plugins": [
            {"type": "macvlan", "master": plexus_e2e::meta::MASTER, "mode": "bridge",
             "ipam": {"type": "static"}, "capabilities": {"ips": true}},
            {"type": "tuning", "capabilities": {"mac": true}}]});
        let body = |cmd: &str| {
            json!({
                "env": {
                    "CNI_COMMAND": cmd,
                    "CNI_CONTAINERID": a.container_id,
                    "CNI_NETNS": a.netns.path(),
                    "CNI_IFNAME": "net5",
                    "CNI_PATH": plexus_e2e::REFERENCE_PLUGINS,
                    "CNI_ARGS": format!(
                        "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=a;\
                         K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
                        a.container_id, a.uid
                    ),
                },
                "config": base64::engine::general_purpose::STANDARD.encode(nad.to_string()),
                "interfaceAttributes": {"ips": ["10.77.4.7/24"], "mac": "02:00:00:00:00:42"},
            })
        };
        let call = |cmd: &str| -> (u16, Value) {
            let req: ApiRequest = serde_json::from_value(body(cmd)).unwrap();
            let (s, b) = post(&sock, "/delegate", &req).unwrap();
            (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
        };

        let (s, answer) = call("ADD");
        assert_eq!(s, 200, "{answer}");
        assert_eq!(
            answer["Result"]["ips"][0]["address"], "10.77.4.7/24",
            "{answer}"
        );
        assert_eq!(pod_links(&a), ["eth0", "net1", "net5"]);
        assert_eq!(ipv4(&a, "net5"), "10.77.4.7");
        let mac = a
            .netns
            .links()
            .iter()
            .find(|l| l["ifname"] == "net5")
            .unwrap()["address"]
            .clone();
        assert_eq!(mac, "02:00:00:00:00:42");
        // Twice is refused: the name is taken.
        let (s, e) = call("ADD");
        assert_eq!(s, 400, "{e}");
        assert!(
            e["msg"].as_str().unwrap().contains("already has net5"),
            "{e}"
        );

        let (s, answer) = call("DEL");
        assert_eq!(s, 200, "{answer}");
        assert_eq!(pod_links(&a), ["eth0", "net1"]);

        // `cni-args` reach every plugin's `args.cni`: host-local takes
        // the address it is asked for there (CONVENTIONS.md).
        let hl = json!({"cniVersion": "1.0.0", "name": "macvlan-args", "plugins": [
            {"type": "macvlan", "master": plexus_e2e::meta::MASTER, "mode": "bridge",
             "ipam": w.ipam("10.77.5.0/24")}]});
        let mut req = body("ADD");
        req["env"]["CNI_IFNAME"] = "net6".into();
        req["config"] = base64::engine::general_purpose::STANDARD
            .encode(hl.to_string())
            .into();
        req["interfaceAttributes"] = json!({"cni-args": {"ips": ["10.77.5.9"]}});
        let req: ApiRequest = serde_json::from_value(req).unwrap();
        let (s, b) = post(&sock, "/delegate", &req).unwrap();
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        assert_eq!(ipv4(&a, "net6"), "10.77.5.9");

        // Added again, then left to the pod's DEL (with net6).
        assert_eq!(call("ADD").0, 200);
        w.del(&a);
        assert_clean(&w, &[&a]);
    });
}

/// `chrootDir`, as Multus thick's DaemonSet uses it: the daemon's
/// container has no CNI plugins of its own and sees the node's root at
/// `/hostroot`, so delegates must run chrooted there. Emulated in a mount
/// namespace of the daemon's own: the node's `/` bind-mounted at
/// `<tmp>/hostroot`, then an empty tmpfs over the daemon's own view of the
/// plugin directory. Without `chrootDir` the pod's ADD fails (no such
/// plugin); with it the pod gets eth0 and net1 with their addresses, and
/// DEL, also chrooted, leaves nothing.
#[test]
fn thick_chroot_dir_runs_delegates_in_the_nodes_root() {
    plexus_e2e::meta::through_daemon(|| {
        let mut w = World::new(Source::Api);
        let root = w.tmp.path().join("hostroot");
        std::fs::create_dir(&root).unwrap();
        let setup = format!(
            "set -e\nmount --rbind / {}\nmount -t tmpfs plexus-no-plugins {}",
            root.display(),
            plexus_e2e::REFERENCE_PLUGINS
        );

        w.restart_daemon(&json!({}), Some(&setup));
        let a = w.pod("a", Some("macvlan-dyn"));
        let e = cni_error(&w.cni("ADD", &a));
        assert!(
            e["msg"]
                .as_str()
                .unwrap()
                .contains("failed to find plugin \"ptp\""),
            "{e}"
        );
        assert_clean(&w, &[&a]);

        w.restart_daemon(&json!({"chrootDir": root}), Some(&setup));
        w.add(&a);
        assert_eq!(pod_links(&a), ["eth0", "net1"]);
        assert!(
            ipv4(&a, "net1").starts_with("10.77."),
            "{:?}",
            a.netns.addrs("net1")
        );
        w.del(&a);
        assert_clean(&w, &[&a]);
    });
}
