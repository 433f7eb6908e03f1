//! Conformance through libcni: the reference runtime library (Debian's
//! libcni 1.1.2, the code inside containerd's go-cni and CRI-O's ocicni)
//! drives the `plexus` binary: it validates every plugin's VERSION, runs
//! the list, caches and reads back the result, CHECKs with it and DELs in
//! reverse. `plexus` delegates to the reference `ptp` + `host-local`, and
//! the Go `tuning` plugin is chained after it, so the result plexus prints
//! is parsed by a Go plugin (as prevResult) and by libcni (as the result).
//! libcni 1.1.2 knows CNI versions up to 1.0.0.

use std::fs;
use std::path::Path;

use plexus_e2e::{REFERENCE_PLUGINS, bin, conformance_runner, steps};
use plexus_testkit::NetNs;
use serde_json::{Value, json};

const VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

struct Run {
    ok: bool,
    steps: Vec<Value>,
}

fn run(host: &NetNs, pod: &NetNs, conflist: &Path, cache: &Path, steps_: &[&str]) -> Run {
    let bin_dir = format!(
        "{}:{REFERENCE_PLUGINS}",
        bin("plexus").parent().unwrap().display()
    );
    let out = host
        .command(conformance_runner())
        .unwrap()
        .args([
            "-conflist",
            &conflist.to_string_lossy(),
            "-bin-dir",
            &bin_dir,
        ])
        .args([
            "-cache-dir",
            &cache.to_string_lossy(),
            "-netns",
            &pod.path().to_string_lossy(),
        ])
        .args([
            "-container-id",
            "conformance-1",
            "-ifname",
            "eth0",
            "-keep-going",
        ])
        .args([
            "-args",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        ])
        .args(steps_)
        .output()
        .unwrap();
    Run {
        ok: out.status.success(),
        steps: steps(&out.stdout),
    }
}

fn conflist(
    version: &str,
    delegate_version: &str,
    data_dir: &Path,
    subnet: &str,
    mac: &str,
) -> Value {
    json!({
        "cniVersion": version,
        "name": "plexus-conformance",
        "plugins": [
            {"type": "plexus", "cniDir": data_dir.parent().unwrap().join("plexus"), "delegates": [{
                "cniVersion": delegate_version, "name": "pod-network",
                "plugins": [{"type": "ptp", "ipam": {"type": "host-local", "dataDir": data_dir,
                                                      "ranges": [[{"subnet": subnet}]]}}]
            }]},
            {"type": "tuning", "mac": mac}
        ]
    })
}

#[test]
fn libcni_drives_plexus_for_every_version() {
    for (i, version) in VERSIONS.into_iter().enumerate() {
        // The delegate speaks another version than plexus: plexus must still
        // answer in its own.
        let delegate_version = if version == "1.0.0" { "0.3.1" } else { "1.0.0" };
        let host = NetNs::with_prefix("cf-host").unwrap();
        let pod = NetNs::with_prefix("cf-pod").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("ipam");
        let cache = tmp.path().join("cache");
        let file = tmp.path().join("net.conflist");
        let mac = format!("02:00:00:00:0c:0{i}");
        let subnet = format!("10.210.{i}.0/24");
        fs::write(
            &file,
            conflist(version, delegate_version, &data, &subnet, &mac).to_string(),
        )
        .unwrap();

        let with_check = version != "0.3.0" && version != "0.3.1";
        let mut plan = vec!["validate", "add", "cached"];
        if with_check {
            plan.push("check");
        }
        plan.extend(["del", "del"]);
        let r = run(&host, &pod, &file, &cache, &plan);
        assert!(r.ok, "{version}: {:#?}", r.steps);
        let by = |name: &str| r.steps.iter().find(|s| s["step"] == name).unwrap().clone();

        let add = by("add");
        assert_eq!(
            add["cniVersion"], version,
            "the result is in exactly the list version"
        );
        assert_eq!(add["result"]["cniVersion"], version);
        assert!(
            add["ips"][0]
                .as_str()
                .unwrap()
                .starts_with(&format!("10.210.{i}.")),
            "{add}"
        );
        let eth0 = add["result"]["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "eth0")
            .expect("eth0 in the result")
            .clone();
        assert_eq!(
            eth0["mac"],
            mac.as_str(),
            "tuning parsed plexus' result and set the MAC"
        );
        assert_eq!(
            by("cached")["result"],
            add["result"],
            "libcni cached what it got"
        );
        if with_check {
            assert_eq!(by("check")["ok"], true);
        }
        // After DEL, twice: nothing in the pod, nothing cached, no lease.
        assert!(pod.link("eth0").is_none(), "{version}: eth0 removed");
        assert!(
            !cache.join("results").exists()
                || fs::read_dir(cache.join("results")).unwrap().count() == 0
        );
        let leases: Vec<_> = fs::read_dir(data.join("pod-network"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
            .collect();
        assert!(leases.is_empty(), "{version}: leases left {leases:?}");
    }
}

#[test]
fn check_through_libcni_fails_after_tampering() {
    let host = NetNs::with_prefix("cf-host").unwrap();
    let pod = NetNs::with_prefix("cf-pod").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("net.conflist");
    let cache = tmp.path().join("cache");
    let c = conflist(
        "1.0.0",
        "1.0.0",
        &tmp.path().join("ipam"),
        "10.211.0.0/24",
        "02:00:00:00:0d:01",
    );
    fs::write(&file, c.to_string()).unwrap();
    assert!(run(&host, &pod, &file, &cache, &["add", "check"]).ok);
    pod.sh("ip", &["addr", "flush", "dev", "eth0"]);
    let r = run(&host, &pod, &file, &cache, &["check"]);
    assert!(!r.ok);
    let err = r.steps[0]["error"].as_str().unwrap();
    assert!(
        err.contains("ptp"),
        "the delegate's failure reaches libcni: {err}"
    );
    assert!(run(&host, &pod, &file, &cache, &["del"]).ok);
}

#[test]
fn libcni_refuses_plexus_with_an_unknown_delegate_and_nothing_is_left() {
    let host = NetNs::with_prefix("cf-host").unwrap();
    let pod = NetNs::with_prefix("cf-pod").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("net.conflist");
    let mut c = conflist(
        "1.0.0",
        "1.0.0",
        &tmp.path().join("ipam"),
        "10.212.0.0/24",
        "02:00:00:00:0e:01",
    );
    c["plugins"][0]["delegates"][0]["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "no-such-plugin"}));
    fs::write(&file, c.to_string()).unwrap();
    let r = run(&host, &pod, &file, &tmp.path().join("cache"), &["add"]);
    assert!(!r.ok);
    assert_eq!(r.steps[0]["code"], 100, "{:?}", r.steps);
    assert!(
        r.steps[0]["error"]
            .as_str()
            .unwrap()
            .contains("no-such-plugin")
    );
    // plexus rolled the ptp half back: no interface, no lease.
    assert!(pod.link("eth0").is_none());
    assert!(
        host.links().iter().all(|l| l["ifname"] == "lo"),
        "host veth removed: {:?}",
        host.links()
    );
    let left: Vec<_> = fs::read_dir(tmp.path().join("plexus"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "no attachment cache after rollback: {left:?}"
    );
}
