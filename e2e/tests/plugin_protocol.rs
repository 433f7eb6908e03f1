//! The `plexus` binary speaks the CNI protocol exactly: run as a runtime
//! runs it, with an environment and stdin, checking stdout, stderr and the
//! exit status.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use plexus_e2e::bin;
use serde_json::{Value, json};

fn plexus(env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = Command::new(bin("plexus"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // VERSION does not read stdin, so the pipe may already be closed.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// CNI_* variables for one invocation.
type Env = Vec<(&'static str, &'static str)>;

fn add_env(cmd: &'static str) -> Env {
    vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", "proto-1"),
        ("CNI_NETNS", "/run/netns/none"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
    ]
}

fn error(o: &Output) -> Value {
    assert_eq!(o.status.code(), Some(1), "errors exit 1: {o:?}");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("error JSON on stdout: {e}: {o:?}"))
}

#[test]
fn version_reply() {
    let o = plexus(&[("CNI_COMMAND", "VERSION")], "");
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn about_without_a_command() {
    let o = plexus(&[], "");
    assert!(o.status.success());
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("CNI protocol versions supported"));
}

#[test]
fn validation_errors_on_stdout_with_the_spec_codes() {
    let conf = |v: &str| {
        json!({"cniVersion": v, "name": "n", "type": "plexus", "delegates": []}).to_string()
    };
    let cases: Vec<(Env, String, u64)> = vec![
        (vec![("CNI_COMMAND", "ADD")], conf("1.0.0"), 4),
        (add_env("ADD"), "{".into(), 6),
        (
            add_env("ADD"),
            json!({"cniVersion": "1.0.0", "type": "plexus"}).to_string(),
            7,
        ),
        (add_env("ADD"), conf("0.2.0"), 1),
        (add_env("ADD"), conf("9.0.0"), 1),
        (add_env("CHECK"), conf("0.3.1"), 1),
        (add_env("STATUS"), conf("1.0.0"), 1),
        (add_env("GC"), conf("1.0.0"), 1),
        (add_env("FROB"), conf("1.0.0"), 4),
        // No cluster network configured: an invalid config.
        (add_env("ADD"), conf("1.0.0"), 7),
    ];
    for (env, stdin, code) in cases {
        let v = error(&plexus(&env, &stdin));
        assert_eq!(v["code"], code, "{env:?} {stdin}: {v}");
        for key in ["cniVersion", "msg"] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
    }
    let v = error(&plexus(&[("CNI_COMMAND", "ADD")], &conf("1.0.0")));
    assert_eq!(
        v["msg"],
        "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"
    );
    let mut env = add_env("ADD");
    env[3] = ("CNI_IFNAME", "a234567890123456");
    assert_eq!(
        error(&plexus(&env, &conf("1.0.0")))["code"],
        4,
        "16-byte ifname"
    );
}

#[test]
fn a_delegate_type_outside_the_path_is_refused() {
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "plexus",
        "delegates": [{"cniVersion": "1.0.0", "name": "evil", "type": "../../bin/sh"}]});
    let v = error(&plexus(&add_env("ADD"), &conf.to_string()));
    assert_eq!(v["code"], 7);
    assert!(v["msg"].as_str().unwrap().contains("../../bin/sh"), "{v}");
}
