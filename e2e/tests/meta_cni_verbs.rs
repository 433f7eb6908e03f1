//! `plexus` GC, STATUS, logging and the containerd pod-annotations
//! capability, end to end in standalone mode.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use plexus_e2e::meta::{Source, World, cni_error, describe, pod_links};
use serde_json::json;

#[test]
fn gc_deletes_attachments_of_containers_that_are_gone() {
    let w = World::new(Source::Standalone);
    let a = w.pod("a", Some("macvlan-dyn,bridge-net"));
    let b = w.pod("b", Some("macvlan-dyn"));
    w.add(&a);
    w.add(&b);
    assert_eq!(w.leases().len(), 5);
    let mut conf = w.conf.clone();
    conf["cniVersion"] = json!("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([{"containerID": b.container_id, "ifname": "eth0"}]);
    let out = w.cni_with("GC", &b, &conf, None);
    assert!(out.status.success(), "GC: {}", describe(&out));
    // a was never deleted by the runtime: GC ran DEL for all its attachments.
    assert!(pod_links(&a).is_empty(), "{:?}", pod_links(&a));
    assert_eq!(
        w.leases().len(),
        2,
        "only b's leases are left: {:?}",
        w.leases()
    );
    let cache = w.cache_files();
    assert_eq!(cache.len(), 1);
    assert!(cache[0].to_str().unwrap().contains(&b.container_id));
    assert_eq!(pod_links(&b).len(), 2);
    w.del(&b);
    assert!(w.leases().is_empty());
}

#[test]
fn status_reports_the_cluster_networks_readiness() {
    let w = World::new(Source::Standalone);
    let bin = w.tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let ready = w.tmp.path().join("ready");
    let plugin = bin.join("fake-primary");
    fs::write(
        &plugin,
        format!(
            r#"#!/bin/sh
case "$CNI_COMMAND" in
VERSION) echo '{{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}}' ;;
STATUS) [ -e {ready} ] && exit 0
        echo '{{"cniVersion":"1.1.0","code":50,"msg":"primary has no IPs left"}}'; exit 1 ;;
*) echo '{{"cniVersion":"1.1.0","code":4,"msg":"not in this test"}}'; exit 1 ;;
esac
"#,
            ready = ready.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755)).unwrap();
    let mut conf = w.conf.clone();
    conf["cniVersion"] = json!("1.1.0");
    conf["binDir"] = json!(bin);
    conf["clusterNetwork"] = json!(null);
    conf["delegates"] = json!([{"cniVersion": "1.1.0", "name": "fake", "type": "fake-primary"}]);
    let pod = w.pod("s", None);
    let e = cni_error(&w.cni_with("STATUS", &pod, &conf, None));
    assert_eq!(e["code"], 50, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("no IPs left"), "{e}");
    fs::write(&ready, "").unwrap();
    let out = w.cni_with("STATUS", &pod, &conf, None);
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn pod_annotations_capability_and_one_log_line_per_call() {
    let w = World::new(Source::Standalone);
    let log = w.tmp.path().join("logs/plexus.log");
    let mut conf = w.conf.clone();
    conf["logFile"] = json!(log);
    conf["logLevel"] = json!("verbose");
    conf["logToStderr"] = json!(false);
    // What containerd sends when the plugin declares the capability.
    conf["runtimeConfig"] = json!({"io.kubernetes.cri.pod-annotations": {
        "k8s.v1.cni.cncf.io/networks": "macvlan-dyn@data0"}});
    let pod = w.pod("cap", None);
    let out = w.cni_with("ADD", &pod, &conf, Some(pod.netns.path()));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(pod.netns.link("data0").is_some(), "{:?}", pod_links(&pod));
    let out = w.cni_with("DEL", &pod, &conf, Some(pod.netns.path()));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        out.stderr.is_empty(),
        "logToStderr=false: {}",
        describe(&out)
    );
    assert!(pod_links(&pod).is_empty());

    let text = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("ADD") && lines[0].contains("pod=default/cap"),
        "{text}"
    );
    assert!(lines[0].contains("data0=default/macvlan-dyn("), "{text}");
    assert!(lines[1].contains("DEL"), "{text}");
    assert_eq!(fs::metadata(&log).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        fs::metadata(log.parent().unwrap()).unwrap().mode() & 0o777,
        0o700
    );
}

#[test]
fn add_waits_for_the_readiness_indicator_and_del_never_does() {
    let w = World::new(Source::Standalone);
    let ready = w.tmp.path().join("run/ready");
    let mut conf = w.conf.clone();
    conf["readinessindicatorfile"] = json!(ready);
    conf["readinessTimeoutSeconds"] = json!(60);
    let pod = w.pod("r", Some("macvlan-dyn"));

    // STATUS is a probe: "not ready" at once.
    let mut status_conf = conf.clone();
    status_conf["cniVersion"] = json!("1.1.0");
    let e = cni_error(&w.cni_with("STATUS", &pod, &status_conf, None));
    assert_eq!(e["code"], 50, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("ready"), "{e}");

    // DEL does not wait for readiness (it must clean up even then).
    let out = w.cni_with("DEL", &pod, &conf, Some(pod.netns.path()));
    assert!(out.status.success(), "{}", describe(&out));

    let mut add = w.spawn("ADD", &pod, &conf, Some(pod.netns.path()));
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(add.try_wait().unwrap().is_none(), "ADD is waiting");
    assert!(
        pod_links(&pod).is_empty(),
        "nothing runs before the network is ready"
    );
    fs::create_dir_all(ready.parent().unwrap()).unwrap();
    fs::write(&ready, "").unwrap();
    let out = add.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(pod_links(&pod).len(), 2);
    w.del(&pod);
}

#[test]
fn add_fails_clearly_when_the_cluster_network_never_becomes_ready() {
    let w = World::new(Source::Standalone);
    let ready = w.tmp.path().join("never");
    let mut conf = w.conf.clone();
    conf["readinessindicatorfile"] = json!(ready);
    conf["readinessTimeoutSeconds"] = json!(0.3);
    let pod = w.pod("n", Some("macvlan-dyn"));
    let e = cni_error(&w.cni_with("ADD", &pod, &conf, Some(pod.netns.path())));
    assert_eq!(e["code"], 11, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains(ready.to_str().unwrap()) && msg.contains("not ready"),
        "{e}"
    );
    assert!(pod_links(&pod).is_empty());
    assert!(w.cache_files().is_empty() && w.leases().is_empty());
}
