//! `plexus install`, run as the node DaemonSet runs it, against temp
//! directories standing in for the host's `/opt/cni/bin` and
//! `/etc/cni/net.d` and the pod's service-account mount.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexus_e2e::bin;
use serde_json::{Value, json};

fn install(args: &[&str]) -> Command {
    let mut c = Command::new(bin("plexus"));
    c.arg("install")
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST");
    c
}

/// Waits until `f` holds, for at most `secs`.
fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

struct Node {
    tmp: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["bin", "net.d", "sa"] {
            fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        fs::write(tmp.path().join("sa/token"), "token-one").unwrap();
        fs::write(
            tmp.path().join("sa/ca.crt"),
            "-----BEGIN CERTIFICATE-----\n",
        )
        .unwrap();
        Self { tmp }
    }

    fn p(&self, rel: &str) -> String {
        self.tmp.path().join(rel).display().to_string()
    }

    fn args(&self, master: &str) -> Vec<String> {
        [
            "--cni-bin-dir",
            &self.p("bin"),
            "--cni-conf-dir",
            &self.p("net.d"),
            "--service-account-dir",
            &self.p("sa"),
            "--api-server",
            "https://10.96.0.1:443",
            "--master-conf",
            master,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    fn conflist(&self) -> Option<Value> {
        let text = fs::read_to_string(self.tmp.path().join("net.d/00-plexus.conflist")).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }

    fn kubeconfig(&self) -> String {
        fs::read_to_string(self.tmp.path().join("net.d/plexus.d/plexus.kubeconfig"))
            .unwrap_or_default()
    }
}

#[test]
fn binary_is_replaced_while_the_old_one_runs() {
    let node = Node::new();
    let dest = node.tmp.path().join("bin/plexus");
    // The "old plexus" is a real executable that is running right now.
    fs::copy("/bin/sleep", &dest).unwrap();
    let mut old = Command::new(&dest).arg("30").spawn().unwrap();
    // What a plain `cp` over it gets: the kernel refuses to write a running
    // executable (ETXTBSY), Multus pain point P1.
    let busy = fs::OpenOptions::new().write(true).open(&dest).unwrap_err();
    assert_eq!(
        busy.kind(),
        std::io::ErrorKind::ExecutableFileBusy,
        "{busy}"
    );
    fs::write(
        node.tmp.path().join("net.d/10-ptp.conf"),
        json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ptp"}).to_string(),
    )
    .unwrap();

    let out = install(
        &node
            .args("10-ptp.conf")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(&dest).unwrap(), fs::read(bin("plexus")).unwrap());
    assert!(
        old.try_wait().unwrap().is_none(),
        "the old process is unharmed"
    );
    // The installed binary is whole and speaks CNI.
    let v = Command::new(&dest)
        .env("CNI_COMMAND", "VERSION")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains("supportedVersions"));
    let left: Vec<_> = fs::read_dir(node.tmp.path().join("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["plexus"], "no temp file left");
    old.kill().unwrap();
    old.wait().unwrap();
}

#[test]
fn named_master_not_the_first_file_and_left_in_place_on_exit() {
    let node = Node::new();
    let d = node.tmp.path().join("net.d");
    // Lexically first, and not the master (Multus P8 would take it).
    fs::write(
        d.join("05-kube-ovn.conflist"),
        json!({"cniVersion": "1.0.0", "name": "kube-ovn", "plugins": [{"type": "kube-ovn"}]})
            .to_string(),
    )
    .unwrap();
    fs::write(
        d.join("10-cilium.conflist"),
        json!({"cniVersion": "0.4.0", "name": "cilium", "plugins": [
        {"type": "cilium-cni"},
        {"type": "portmap", "capabilities": {"portMappings": true}},
        {"type": "bandwidth", "capabilities": {"bandwidth": true}}]})
        .to_string(),
    )
    .unwrap();
    let mut args = node.args("10-cilium.conflist");
    args.extend([
        "--watch".into(),
        "--interval-ms".into(),
        "100".into(),
        "--plexus-config".into(),
        r#"{"namespaceIsolation": true}"#.into(),
    ]);
    let mut child: Child = install(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(10, || node.conflist().is_some()),
        "config generated"
    );
    let c = node.conflist().unwrap();
    assert_eq!(c["cniVersion"], "0.4.0");
    let p = &c["plugins"][0];
    assert_eq!(p["type"], "plexus");
    assert_eq!(p["clusterNetwork"], "/etc/cni/net.d/10-cilium.conflist");
    assert_eq!(p["kubeconfig"], "/etc/cni/net.d/plexus.d/plexus.kubeconfig");
    assert_eq!(
        p["capabilities"],
        json!({"portMappings": true, "bandwidth": true})
    );
    assert_eq!(p["namespaceIsolation"], true);

    // The master changes (e.g. the primary CNI is upgraded): regenerated.
    fs::write(
        d.join("10-cilium.conflist"),
        json!({"cniVersion": "1.0.0", "name": "cilium",
        "plugins": [{"type": "cilium-cni"}]})
        .to_string(),
    )
    .unwrap();
    assert!(eventually(10, || node
        .conflist()
        .is_some_and(|c| c["cniVersion"] == "1.0.0")));

    // SIGTERM (a DaemonSet rollout): the config stays.
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap();
    assert!(
        node.conflist().is_some(),
        "00-plexus.conflist left in place"
    );
    assert!(d.join("05-kube-ovn.conflist").exists() && d.join("10-cilium.conflist").exists());
}

#[test]
fn kubeconfig_follows_the_token_as_it_rotates() {
    let node = Node::new();
    fs::write(
        node.tmp.path().join("net.d/10-ptp.conf"),
        json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ptp"}).to_string(),
    )
    .unwrap();
    let mut args = node.args("10-ptp.conf");
    args.extend(["--watch".into(), "--interval-ms".into(), "200".into()]);
    let mut child = install(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(10, || node
        .kubeconfig()
        .contains("token: token-one")));
    let mode = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(node.tmp.path().join("net.d/plexus.d/plexus.kubeconfig"))
            .unwrap()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o600);
    // The kubelet rotates the projected token (atomically, as it does).
    let sa = node.tmp.path().join("sa");
    fs::write(sa.join(".token.new"), "token-two").unwrap();
    fs::rename(sa.join(".token.new"), sa.join("token")).unwrap();
    assert!(
        eventually(5, || node.kubeconfig().contains("token: token-two")),
        "rewritten within seconds: {}",
        node.kubeconfig()
    );
    assert!(node.kubeconfig().contains("server: https://10.96.0.1:443"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(Path::new(&node.p("net.d/00-plexus.conflist")).exists());
}

#[test]
fn a_deleted_config_or_kubeconfig_is_back_within_a_round() {
    let node = Node::new();
    fs::write(
        node.tmp.path().join("net.d/10-ptp.conf"),
        json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ptp"}).to_string(),
    )
    .unwrap();
    let mut args = node.args("10-ptp.conf");
    args.extend(["--watch".into(), "--interval-ms".into(), "200".into()]);
    let mut child = install(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let conflist = node.p("net.d/00-plexus.conflist");
    let kubeconfig = node.p("net.d/plexus.d/plexus.kubeconfig");
    assert!(eventually(10, || Path::new(&conflist).exists()
        && Path::new(&kubeconfig).exists()));
    let (c, k) = (fs::read(&conflist).unwrap(), fs::read(&kubeconfig).unwrap());
    // Someone (a cleanup script, another CNI's installer) removes them,
    // while the master and the token stay as they were.
    for (path, was) in [(&conflist, &c), (&kubeconfig, &k)] {
        fs::remove_file(path).unwrap();
        assert!(
            eventually(2, || fs::read(path).is_ok_and(|now| now == *was)),
            "{path} not back within a few rounds"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn missing_master_is_a_clear_error() {
    let node = Node::new();
    let out = install(
        &node
            .args("10-nope.conflist")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("10-nope.conflist"), "{err}");
    assert!(node.conflist().is_none(), "nothing generated from a guess");
}
