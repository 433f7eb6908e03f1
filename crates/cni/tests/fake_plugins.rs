//! The invoker against small shell-script plugins that record what they were
//! given (the way libcni's own tests use `plugins/test/noop`): injected keys,
//! environment, order, timeouts, "text file busy", and STATUS/GC, which no
//! reference plugin implements yet.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plexus_cni::conf::NetworkConfigList;
use plexus_cni::invoke::{Error, Invoker, RuntimeConf};
use plexus_cni::plugin::Attachment;
use plexus_cni::{CniError, CniResult};
use serde_json::{Value, json};

/// A plugin that appends "<name> <CNI_COMMAND>" to `log`, saves its stdin
/// and CNI_* environment, then prints `reply` for ADD.
fn recorder(dir: &Path, name: &str, reply: &str) -> PathBuf {
    script(
        dir,
        name,
        &format!(
            r#"d={dir}
echo "{name} $CNI_COMMAND" >> "$d/log"
cat > "$d/{name}.$CNI_COMMAND.stdin"
env | grep '^CNI_' | sort > "$d/{name}.$CNI_COMMAND.env"
[ "$CNI_COMMAND" = ADD ] && printf '%s' '{reply}'
exit 0"#,
            dir = dir.display()
        ),
    )
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn log(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn rt() -> RuntimeConf {
    RuntimeConf {
        container_id: "ctr1".into(),
        netns: Some("/run/netns/whatever".into()),
        ifname: "eth0".into(),
        args: plexus_cni::args::CniArgs::parse("K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns").unwrap(),
        capability_args: json!({"mac": "02:00:00:00:00:01", "portMappings": []})
            .as_object()
            .unwrap()
            .clone(),
    }
}

#[test]
fn chain_order_prev_result_env_and_reverse_del() {
    let d = tempfile::tempdir().unwrap();
    // The first plugin answers in 0.4.0 (with ips[].version) although the
    // list is 1.0.0: the next one must get it converted to 1.0.0.
    recorder(
        d.path(),
        "first",
        r#"{"cniVersion":"0.4.0","interfaces":[{"name":"eth0"}],"ips":[{"version":"4","interface":0,"address":"10.9.0.2/24"}]}"#,
    );
    recorder(
        d.path(),
        "second",
        r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01"}],"ips":[{"interface":0,"address":"10.9.0.2/24"}]}"#,
    );
    let l =
        NetworkConfigList::from_value(json!({"cniVersion": "1.0.0", "name": "rec", "plugins": [
            {"type": "first", "keep": {"nested": [1, 2]}},
            {"type": "second", "capabilities": {"mac": true}}
        ]}))
        .unwrap();
    let inv = Invoker::new(vec![PathBuf::from("/nonexistent"), d.path().to_owned()]);
    let r = inv.add_list(&l, &rt()).unwrap();
    assert_eq!(
        r.interfaces[0].mac, "02:00:00:00:00:01",
        "the last plugin's result wins"
    );

    let first = read_json(&d.path().join("first.ADD.stdin"));
    assert_eq!(
        first,
        json!({"type": "first", "keep": {"nested": [1, 2]}, "name": "rec", "cniVersion": "1.0.0"})
    );
    let second = read_json(&d.path().join("second.ADD.stdin"));
    assert_eq!(
        second["runtimeConfig"],
        json!({"mac": "02:00:00:00:00:01"}),
        "only declared capabilities"
    );
    assert_eq!(
        second["prevResult"]["cniVersion"], "1.0.0",
        "prevResult converted to the list version"
    );
    assert!(second["prevResult"]["ips"][0].get("version").is_none());

    let env = fs::read_to_string(d.path().join("first.ADD.env")).unwrap();
    for line in [
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=ctr1",
        "CNI_NETNS=/run/netns/whatever",
        "CNI_IFNAME=eth0",
        "CNI_ARGS=K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in\n{env}");
    }
    assert!(env.contains(&format!("CNI_PATH=/nonexistent:{}", d.path().display())));

    inv.del_list(&l, &rt(), Some(&r)).unwrap();
    assert_eq!(
        log(d.path()),
        ["first ADD", "second ADD", "second DEL", "first DEL"]
    );
    let del = read_json(&d.path().join("first.DEL.stdin"));
    assert_eq!(
        del["prevResult"],
        r.to_value(l.cni_version),
        "DEL gets the cached result"
    );

    inv.check_list(&l, &rt(), &r).unwrap();
    assert_eq!(
        read_json(&d.path().join("second.CHECK.stdin"))["prevResult"],
        r.to_value(l.cni_version)
    );
}

#[test]
fn del_below_0_4_0_gets_no_prev_result_and_disable_check_skips() {
    let d = tempfile::tempdir().unwrap();
    recorder(d.path(), "p", r#"{"cniVersion":"0.3.1"}"#);
    let inv = Invoker::new(vec![d.path().to_owned()]);
    let l =
        NetworkConfigList::from_value(json!({"cniVersion": "0.3.1", "name": "old", "type": "p"}))
            .unwrap();
    inv.del_list(&l, &rt(), Some(&CniResult::default()))
        .unwrap();
    assert!(
        read_json(&d.path().join("p.DEL.stdin"))
            .get("prevResult")
            .is_none()
    );

    let l = NetworkConfigList::from_value(
        json!({"cniVersion": "1.0.0", "name": "nc", "disableCheck": true, "type": "p"}),
    )
    .unwrap();
    inv.check_list(&l, &rt(), &CniResult::default()).unwrap();
    assert!(
        !log(d.path()).iter().any(|l| l.ends_with("CHECK")),
        "disableCheck: plugin not run"
    );
}

#[test]
fn status_and_gc_for_1_1_lists() {
    let d = tempfile::tempdir().unwrap();
    recorder(d.path(), "a", "{}");
    script(
        d.path(),
        "b",
        r#"echo "b $CNI_COMMAND" >> "$(dirname "$0")/log"; echo '{"code":50,"msg":"PF gone"}'; exit 1"#,
    );
    let inv = Invoker::new(vec![d.path().to_owned()]);
    let l = NetworkConfigList::from_value(
        json!({"cniVersion": "1.1.0", "name": "new", "plugins": [{"type": "b"}, {"type": "a"}]}),
    )
    .unwrap();

    let err = inv.status_list(&l).unwrap_err();
    assert_eq!(CniError::from(err).code, 50, "the delegate's code is kept");
    assert_eq!(
        log(d.path()),
        ["b STATUS"],
        "STATUS stops at the first failure"
    );

    let valid = [Attachment {
        container_id: "c1".into(),
        ifname: "net1".into(),
    }];
    let errs = inv.gc_list(&l, &valid).unwrap_err();
    assert_eq!(errs.len(), 1, "GC goes on past failures and returns them");
    assert_eq!(&log(d.path())[1..], ["b GC", "a GC"]);
    let gc = read_json(&d.path().join("a.GC.stdin"));
    let want = json!([{"containerID": "c1", "ifname": "net1"}]);
    assert_eq!(gc["cni.dev/valid-attachments"], want);
    assert_eq!(gc["cni.dev/attachments"], want);
    assert!(gc.get("runtimeConfig").is_none() && gc.get("prevResult").is_none());
    let env = fs::read_to_string(d.path().join("a.GC.env")).unwrap();
    assert!(
        env.lines().any(|l| l == "CNI_CONTAINERID="),
        "set, but empty, as libcni does"
    );

    // Below 1.1.0 there is no STATUS or GC to send.
    let old =
        NetworkConfigList::from_value(json!({"cniVersion": "1.0.0", "name": "o", "type": "b"}))
            .unwrap();
    inv.status_list(&old).unwrap();
    inv.gc_list(&old, &[]).unwrap();
    assert_eq!(log(d.path()).len(), 3);
}

#[test]
fn a_hung_plugin_is_killed_at_the_timeout() {
    let d = tempfile::tempdir().unwrap();
    script(d.path(), "hang", "exec sleep 30");
    let inv = Invoker::new(vec![d.path().to_owned()]).with_timeout(Duration::from_millis(300));
    let l =
        NetworkConfigList::from_value(json!({"cniVersion": "1.0.0", "name": "h", "type": "hang"}))
            .unwrap();
    let t = Instant::now();
    let err = inv.add_list(&l, &rt()).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        CniError::from(err).code,
        plexus_cni::error::code::DELEGATE_TIMEOUT
    );
}

#[test]
fn text_file_busy_is_retried() {
    let d = tempfile::tempdir().unwrap();
    let path = recorder(d.path(), "busy", r#"{"cniVersion":"1.0.0"}"#);
    // Hold the binary open for writing, as an installer copying it would:
    // exec fails with ETXTBSY until the writer closes it.
    let writer = fs::OpenOptions::new().append(true).open(&path).unwrap();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(60));
        drop(writer);
    });
    let inv = Invoker::new(vec![d.path().to_owned()]);
    let l =
        NetworkConfigList::from_value(json!({"cniVersion": "1.0.0", "name": "b", "type": "busy"}))
            .unwrap();
    inv.add_list(&l, &rt()).unwrap();
    closer.join().unwrap();
}

#[test]
fn bad_outputs_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    script(d.path(), "silent", "exit 0");
    script(d.path(), "garbage", "echo 'not json'");
    script(
        d.path(),
        "dies",
        "echo 'panic: something broke' >&2; exit 2",
    );
    script(
        d.path(),
        "goerr",
        r#"echo '{"code":7,"msg":"invalid config","details":"no master"}'; exit 1"#,
    );
    let inv = Invoker::new(vec![d.path().to_owned()]);
    let run = |ty: &str| {
        let l =
            NetworkConfigList::from_value(json!({"cniVersion": "1.0.0", "name": "x", "type": ty}))
                .unwrap();
        CniError::from(inv.add_list(&l, &rt()).unwrap_err())
    };
    let e = run("silent");
    assert_eq!(e.code, 102);
    assert!(e.msg.contains("no result"), "{e}");
    assert_eq!(run("garbage").code, 102);
    let e = run("dies");
    assert!(
        e.msg.contains("panic: something broke"),
        "stderr becomes the message: {e}"
    );
    let e = run("goerr");
    assert_eq!((e.code, e.details.as_str()), (7, "no master"));
    assert!(e.msg.contains("delegate goerr ADD: invalid config"), "{e}");
    let e = run("absent");
    assert_eq!(e.code, 100);
    assert!(e.msg.contains("failed to find plugin \"absent\""), "{e}");
}

#[test]
fn del_goes_on_past_a_failing_plugin() {
    let d = tempfile::tempdir().unwrap();
    recorder(d.path(), "ipam-holder", "{}");
    script(
        d.path(),
        "broken",
        r#"echo "broken $CNI_COMMAND" >> "$(dirname "$0")/log"; echo '{"code":11,"msg":"busy"}'; exit 1"#,
    );
    let inv = Invoker::new(vec![d.path().to_owned()]);
    let l = NetworkConfigList::from_value(json!({"cniVersion": "1.0.0", "name": "t", "plugins": [
        {"type": "ipam-holder"}, {"type": "absent"}, {"type": "broken"}]}))
    .unwrap();
    let err = inv.del_list(&l, &rt(), None).unwrap_err();
    assert_eq!(
        log(d.path()),
        ["broken DEL", "ipam-holder DEL"],
        "every plugin still gets its DEL"
    );
    let Error::Several(all) = &err else {
        panic!("{err}")
    };
    assert_eq!(all.len(), 2);
    assert_eq!(err.code(), 11, "the first failure's code");
    assert!(err.to_string().contains("absent"), "{err}");
}
