//! `plexus` DEL always converges, a NAD cannot reach the node, GC leaves
//! nothing and touches nothing in flight, and the Multus compatibility a
//! user migrating relies on (see `docs/meta-cni.md`, "DEL always
//! converges"). Each scenario is what a runtime or a tenant can really do.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plexus_e2e::REFERENCE_PLUGINS;
use plexus_e2e::meta::{Pod, Source, World, cni_error, describe, pod_links};
use serde_json::{Value, json};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn drop_cache(w: &World) {
    for f in w.cache_files() {
        fs::remove_file(f).unwrap();
    }
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

/// Leases of one host-local network (by its data-dir name).
fn leases_of(w: &World, network: &str) -> Vec<PathBuf> {
    w.leases()
        .into_iter()
        .filter(|p| {
            p.parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n == network)
        })
        .collect()
}

// ---- a pod whose networks cannot be rebuilt is still deleted -------------

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod standalone {
            $(#[test] fn $name() { super::$name(super::Source::Standalone) })*
        }
        mod api {
            $(#[test] fn $name() { super::$name(super::Source::Api) })*
        }
    };
}

both!(
    a_malformed_annotation_fails_add_and_del_still_succeeds,
    del_without_cache_deletes_the_cluster_network_past_a_bad_annotation,
    a_nad_that_runs_plexus_is_refused_and_touches_nothing,
);

fn a_malformed_annotation_fails_add_and_del_still_succeeds(src: Source) {
    let w = World::new(src);
    for (name, networks) in [
        (
            "too-long",
            r#"[{"name": "macvlan-dyn", "interface": "this-is-far-too-long"}]"#,
        ),
        ("clash", "macvlan-dyn@data0, bridge-net@data0"),
        ("missing", "no-such-nad"),
    ] {
        let pod = w.pod(name, Some(networks));
        let e = cni_error(&w.cni("ADD", &pod));
        assert_eq!(e["code"], 7, "{name}: {e}");
        assert!(w.leases().is_empty(), "{name}: ADD ran a delegate");
        // What containerd does next: DEL, and again until it succeeds.
        for _ in 0..2 {
            let out = w.cni("DEL", &pod);
            assert!(out.status.success(), "DEL {name}: {}", describe(&out));
        }
    }
    assert_clean(&w, &[]);
}

fn del_without_cache_deletes_the_cluster_network_past_a_bad_annotation(src: Source) {
    let w = World::new(src);
    let mut a = w.pod("a", Some("macvlan-dyn"));
    w.add(&a);
    drop_cache(&w);
    // The annotation was edited into something that does not parse.
    let bad = r#"[{"name": "macvlan-dyn", "interface": "this-is-far-too-long"}]"#;
    match src {
        Source::Api => {
            w.api()
                .set_pod_annotation("default", "a", "k8s.v1.cni.cncf.io/networks", Some(bad));
        }
        Source::Standalone => a.networks = Some(bad.into()),
    }
    let out = w.cni("DEL", &a);
    assert!(out.status.success(), "{}", describe(&out));
    // The cluster network is gone; the macvlan (which only the annotation
    // named) could not be known, and the warning says so.
    assert!(a.netns.link("eth0").is_none());
    assert!(leases_of(&w, "pod-network").is_empty(), "{:?}", w.leases());
    assert!(
        stderr(&out).contains("this-is-far-too-long"),
        "{}",
        stderr(&out)
    );
    assert_eq!(pod_links(&a), ["net1"]);
    assert!(w.cache_files().is_empty());
}

fn a_nad_that_runs_plexus_is_refused_and_touches_nothing(src: Source) {
    let w = World::new(src);
    // A tenant's NAD aiming plexus at a directory of the node's.
    let victim = w.path("node-dir");
    fs::create_dir_all(&victim).unwrap();
    fs::write(victim.join("keep"), "node data").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o755)).unwrap();
    let log = w.path("node-dir/appended.log");
    for (name, kind) in [("evil-plexus", "plexus"), ("evil-multus", "multus")] {
        w.add_nad(
            "default",
            name,
            &json!({"cniVersion": "1.0.0", "type": kind, "cniDir": victim,
                    "logFile": log, "logLevel": "debug",
                    "delegates": [{"cniVersion": "1.0.0", "name": "x", "type": "loopback"}]}),
        );
        let pod = w.pod(name, Some(name));
        let e = cni_error(&w.cni("ADD", &pod));
        assert_eq!(e["code"], 7, "{e}");
        let text = format!("{} {}", e["msg"], e["details"]);
        assert!(
            text.contains(&format!("default/{name}")),
            "names the NAD: {text}"
        );
        assert!(text.contains(kind), "{text}");
        let out = w.cni("DEL", &pod);
        assert!(out.status.success(), "{}", describe(&out));
    }
    let mode = fs::metadata(&victim).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "the node's directory changed mode");
    let entries: Vec<_> = fs::read_dir(&victim)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["keep"], "something was written into it");
    assert_clean(&w, &[]);
}

// ---- the API server's answers --------------------------------------------

/// A pod added, its cache lost: what the API server says next decides.
fn lost_cache(w: &World, name: &str) -> Pod {
    let a = w.pod(name, Some("macvlan-dyn"));
    w.add(&a);
    drop_cache(w);
    a
}

#[test]
fn del_without_cache_and_a_503ing_api_answers_11_within_10_s_then_succeeds() {
    let w = World::new(Source::Api);
    let a = lost_cache(&w, "a");
    w.api().fail_next(&[503; 500]);
    let started = Instant::now();
    let e = cni_error(&w.cni("DEL", &a));
    let took = started.elapsed();
    assert_eq!(e["code"], 11, "{e}");
    assert!(
        took < Duration::from_millis(10_500),
        "DEL took {took:?}: the promise is 10 s from the first request"
    );
    // What the config alone names (the cluster network, from its file) is
    // already gone; the macvlan waits for the API server.
    assert!(a.netns.link("eth0").is_none());
    assert_eq!(pod_links(&a), ["net1"]);
    w.api().clear_failures();
    w.del(&a);
    assert_clean(&w, &[&a]);
}

#[test]
fn del_without_cache_of_a_pod_that_is_gone_succeeds_at_once() {
    let w = World::new(Source::Api);
    let a = lost_cache(&w, "a");
    w.api().remove_pod("default", "a");
    let started = Instant::now();
    let out = w.cni("DEL", &a);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no retries for a 404"
    );
    assert!(a.netns.link("eth0").is_none());
    assert!(stderr(&out).contains("the pod is gone"), "{}", stderr(&out));
}

#[test]
fn del_without_cache_of_a_pod_that_is_another_pod_now_deletes_only_the_cluster_network() {
    let w = World::new(Source::Api);
    let a = lost_cache(&w, "a");
    // Deleted and created again under the same name: a new UID, and its
    // annotation is none of the old pod's business.
    w.api().remove_pod("default", "a");
    w.api().add_pod(
        "default",
        "a",
        &[("k8s.v1.cni.cncf.io/networks", "bridge-net")],
    );
    let out = w.cni("DEL", &a);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("another pod now"), "{}", stderr(&out));
    assert!(a.netns.link("eth0").is_none());
    assert_eq!(
        pod_links(&a),
        ["net1"],
        "the new pod's bridge-net was not DELed for it"
    );
}

#[test]
fn del_without_cache_past_a_403_or_an_unusable_kubeconfig_succeeds() {
    let w = World::new(Source::Api);
    let a = lost_cache(&w, "a");
    w.api().fail_next(&[403]);
    let out = w.cni("DEL", &a);
    assert!(out.status.success(), "403: {}", describe(&out));
    assert!(a.netns.link("eth0").is_none());

    let b = lost_cache(&w, "b");
    fs::write(w.path("kubeconfig"), "this: is not a kubeconfig\n").unwrap();
    let out = w.cni("DEL", &b);
    assert!(out.status.success(), "bad kubeconfig: {}", describe(&out));
    assert!(b.netns.link("eth0").is_none());
}

#[test]
fn api_mode_without_the_pods_name_fails_before_any_delegate_runs() {
    let w = World::new(Source::Api);
    let mut pod = w.pod("a", Some("macvlan-dyn"));
    pod.name = String::new();
    let e = cni_error(&w.cni("ADD", &pod));
    assert_eq!(e["code"], 4, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("K8S_POD_NAME"), "{e}");
    assert!(w.leases().is_empty(), "a delegate ran: {:?}", w.leases());
    assert!(w.host_links().is_empty(), "{:?}", w.host_links());
    assert!(
        !w.api().requests().iter().any(|r| r.method == "PATCH"),
        "an empty pod name was patched"
    );
}

#[test]
fn a_cluster_network_nad_lookup_that_fails_falls_back_to_its_file() {
    let w = World::new(Source::Api);
    // clusterNetwork "pod-network" is a file in confDir; the NAD lookup
    // that comes first is refused.
    w.api()
        .fail_next_path("network-attachment-definitions/pod-network", &[403]);
    let a = w.pod("a", None);
    w.add(&a);
    assert!(a.netns.link("eth0").is_some());
    w.del(&a);
    assert_clean(&w, &[&a]);
}

#[test]
fn add_records_events_as_multus_does_and_their_failure_is_harmless() {
    let w = World::new(Source::Api);
    let a = w.pod("a", Some("macvlan-dyn"));
    w.add(&a);
    let events = w.api().events();
    let added: Vec<&Value> = events
        .iter()
        .filter(|e| e["reason"] == "AddedInterface")
        .collect();
    assert_eq!(added.len(), 2, "one per attachment: {events:#?}");
    for e in &added {
        assert_eq!(e["type"], "Normal");
        assert_eq!(e["involvedObject"]["kind"], "Pod");
        assert_eq!(e["involvedObject"]["name"], "a");
        assert_eq!(e["involvedObject"]["uid"], a.uid.as_str());
    }
    let msg = added[1]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Add net1 [10.77.1.") && msg.ends_with("/24] from default/macvlan-dyn"),
        "{msg}"
    );
    assert!(
        added[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("Add eth0 [10.77.0."),
        "{added:#?}"
    );

    let b = w.pod("b", Some("no-such-nad"));
    assert_eq!(cni_error(&w.cni("ADD", &b))["code"], 7);
    let warning = w
        .api()
        .events()
        .into_iter()
        .find(|e| e["involvedObject"]["name"] == "b")
        .expect("a warning for b");
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["reason"], "NoNetworkFound");
    assert!(
        warning["message"].as_str().unwrap().contains("no-such-nad"),
        "{warning}"
    );

    // Events refused: ADD still succeeds.
    w.api().fail_next_path("/events", &[500, 500]);
    let c = w.pod("c", Some("macvlan-dyn"));
    w.add(&c);
    for p in [&a, &c] {
        w.del(p);
    }
    assert_clean(&w, &[&a, &c]);
}

// ---- delegates that are gone ---------------------------------------------

/// A CNI bin dir of links to the reference plugins, so a test can remove
/// one (an upgrade that dropped a plugin).
fn own_bin_dir(w: &mut World) -> PathBuf {
    let dir = w.path("bin");
    fs::create_dir_all(&dir).unwrap();
    for e in fs::read_dir(REFERENCE_PLUGINS).unwrap() {
        let e = e.unwrap();
        std::os::unix::fs::symlink(e.path(), dir.join(e.file_name())).unwrap();
    }
    w.cni_path = dir.to_string_lossy().into_owned();
    dir
}

#[test]
fn a_removed_delegate_fails_del_until_the_pod_is_gone() {
    let mut w = World::new(Source::Api);
    let bin = own_bin_dir(&mut w);
    let a = w.pod("a", Some("macvlan-dyn"));
    w.add(&a);
    fs::remove_file(bin.join("macvlan")).unwrap();
    let e = cni_error(&w.cni("DEL", &a));
    assert!(e["msg"].as_str().unwrap().contains("macvlan"), "{e}");
    assert!(!w.cache_files().is_empty(), "kept for the retry");
    // The pod is deleted from the API server: DEL can never do better.
    w.api().remove_pod("default", "a");
    let out = w.cni("DEL", &a);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(w.cache_files().is_empty());
    assert!(leases_of(&w, "pod-network").is_empty());
}

#[test]
fn gc_forgets_a_container_whose_delegate_is_gone() {
    let mut w = World::new(Source::Standalone);
    let bin = own_bin_dir(&mut w);
    let a = w.pod("a", Some("macvlan-dyn"));
    w.add(&a);
    fs::remove_file(bin.join("macvlan")).unwrap();
    let mut conf = w.conf.clone();
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([]);
    let out = w.cni_with("GC", &a, &conf, None);
    assert!(!out.status.success(), "the failed DEL is reported");
    assert!(w.cache_files().is_empty(), "{:?}", w.cache_files());
    assert!(leases_of(&w, "pod-network").is_empty());
    // A second GC finds nothing to retry.
    let out = w.cni_with("GC", &a, &conf, None);
    assert!(out.status.success(), "{}", describe(&out));
}

// ---- GC ------------------------------------------------------------------

/// A plugin script in `dir`: `ADD` waits until `<dir>/go` exists, then
/// succeeds; `GC` writes its stdin to `<dir>/gc-<n>.json`; the rest
/// succeed.
fn scripted_plugin(dir: &Path, name: &str) {
    let script = format!(
        r#"#!/bin/sh
d={dir}
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}}' ;;
ADD) while [ ! -e $d/go ]; do sleep 0.05; done
     cat >/dev/null; echo '{{"cniVersion":"1.1.0","interfaces":[{{"name":"'$CNI_IFNAME'"}}]}}' ;;
GC) cat > $d/gc-$$.json ;;
*) cat >/dev/null ;;
esac
"#,
        dir = dir.display()
    );
    let path = dir.join(name);
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn gc_leaves_an_add_in_flight_alone() {
    let mut w = World::new(Source::Standalone);
    let bin = w.path("scripts");
    fs::create_dir_all(&bin).unwrap();
    scripted_plugin(&bin, "slow");
    w.cni_path = format!("{}:{REFERENCE_PLUGINS}", bin.display());
    w.add_nad(
        "default",
        "slow-net",
        &json!({"cniVersion": "1.1.0", "type": "slow"}),
    );
    let a = w.pod("a", Some("slow-net"));
    let mut conf = w.conf.clone();
    conf["cniVersion"] = json!("1.1.0");
    let adding = w.spawn("ADD", &a, &conf, Some(a.netns.path()));
    // The plan is cached and the slow delegate is running.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !w
        .cache_files()
        .iter()
        .any(|f| f.extension().is_some_and(|e| e == "json"))
    {
        assert!(Instant::now() < deadline, "ADD never cached its plan");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The runtime does not list the container yet.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let out = w.cni_with("GC", &a, &gc, None);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        a.netns.link("eth0").is_some(),
        "GC undid the cluster network"
    );
    fs::write(bin.join("go"), "").unwrap();
    let out = adding.wait_with_output().unwrap();
    assert!(out.status.success(), "ADD: {}", describe(&out));
    assert!(
        w.cache_files()
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "json")),
        "the cache of a finished ADD"
    );
    w.del(&a);
    assert_clean(&w, &[&a]);
}

#[test]
fn the_cluster_networks_gc_sees_every_cached_attachment_and_stale_files_go() {
    let mut w = World::new(Source::Standalone);
    let bin = w.path("scripts");
    fs::create_dir_all(&bin).unwrap();
    scripted_plugin(&bin, "primary");
    fs::write(bin.join("go"), "").unwrap();
    w.cni_path = format!("{}:{REFERENCE_PLUGINS}", bin.display());
    let mut conf = w.conf.clone();
    conf["cniVersion"] = json!("1.1.0");
    conf["clusterNetwork"] = Value::Null;
    conf["delegates"] = json!([{"cniVersion": "1.1.0", "name": "primary-net", "type": "primary"}]);
    let a = w.pod("a", Some("macvlan-dyn"));
    let b = w.pod("b", Some("macvlan-dyn"));
    for p in [&a, &b] {
        let out = w.cni_with("ADD", p, &conf, Some(p.netns.path()));
        assert!(out.status.success(), "{}", describe(&out));
    }
    // A device-info copy of b's attachment, as a delegate leaves it.
    let info = plexus_meta_cni::devices::cni_info_file(
        &w.path("devinfo"),
        "default/macvlan-dyn",
        &b.container_id,
        "net1",
    );
    fs::create_dir_all(info.parent().unwrap()).unwrap();
    fs::write(&info, "{}").unwrap();
    let status_b = w.path(&format!("status/{}.json", b.container_id));
    assert!(status_b.exists());

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": a.container_id, "ifname": "eth0"}]);
    let out = w.cni_with("GC", &a, &gc, None);
    assert!(out.status.success(), "{}", describe(&out));
    // The primary's GC: a's eth0 and net1 (a NAD that shared its IPAM
    // would keep its leases), not b's.
    let seen: Vec<Value> = fs::read_dir(&bin)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            p.file_name()?.to_str()?.starts_with("gc-").then_some(p)
        })
        .map(|p| serde_json::from_slice(&fs::read(p).unwrap()).unwrap())
        .collect();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let valid = &seen[0]["cni.dev/valid-attachments"];
    assert_eq!(
        *valid,
        json!([{"containerID": a.container_id, "ifname": "eth0"},
               {"containerID": a.container_id, "ifname": "net1"}]),
        "{seen:#?}"
    );
    // b is gone, with its status file and device-info copy.
    assert!(!status_b.exists(), "b's status file");
    assert!(!info.exists(), "b's device-info copy");
    assert!(w.path(&format!("status/{}.json", a.container_id)).exists());
    let out = w.cni_with("DEL", &a, &conf, Some(a.netns.path()));
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn delegates_after_the_first_run_after_it_as_in_multus() {
    let w = World::new(Source::Standalone);
    let mut conf = w.conf.clone();
    let cluster: Value =
        serde_json::from_slice(&fs::read(w.path("net.d/10-pod-network.conflist")).unwrap())
            .unwrap();
    conf["clusterNetwork"] = Value::Null;
    conf["delegates"] = json!([cluster,
        {"cniVersion": "1.0.0", "name": "extra", "type": "macvlan", "master": "mv0",
         "ipam": w.ipam("10.77.6.0/24")}]);
    let a = w.pod("a", Some("macvlan-dyn"));
    let out = w.cni_with("ADD", &a, &conf, Some(a.netns.path()));
    assert!(out.status.success(), "{}", describe(&out));
    let mut links = pod_links(&a);
    links.sort();
    assert_eq!(links, ["eth0", "net1", "net2"]);
    assert!(
        a.netns.addrs("net1")[0].starts_with("10.77.6."),
        "delegates[1] is net1"
    );
    assert!(
        a.netns.addrs("net2")[0].starts_with("10.77.1."),
        "the pod's network after it"
    );
    let out = w.cni_with("DEL", &a, &conf, Some(a.netns.path()));
    assert!(out.status.success(), "{}", describe(&out));
    assert_clean(&w, &[&a]);
}
