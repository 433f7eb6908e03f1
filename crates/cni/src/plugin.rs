//! The plugin side: environment and stdin validation exactly as the reference
//! skeleton (`pkg/skel/skel.go`) does it, then dispatch to a [`Plugin`].
//!
//! [`dispatch`] is pure (environment lookup and stdin in, stdout/stderr text
//! and success out) so every validation case is a unit test; [`run`] is the
//! thin edge a plugin's `main` calls. The ADD result is always printed in the
//! config's exact `cniVersion`; errors are the spec's JSON on stdout and the
//! exit status is 1, never the error code (codes ≥ 256 would wrap).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::args::CniArgs;
use crate::error::{CniError, code};
use crate::result::CniResult;
use crate::validate;
use crate::version::{self, CURRENT, SUPPORTED, Version};

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Attach a container to a network.
    Add,
    /// Detach; idempotent and best effort.
    Del,
    /// Verify an attachment is as ADD left it (0.4.0+).
    Check,
    /// Report readiness to serve ADD (1.1.0+).
    Status,
    /// Release resources of attachments not in a valid set (1.1.0+).
    Gc,
    /// Report supported versions.
    Version,
}

impl Command {
    /// The `CNI_COMMAND` spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Add,
            Self::Del,
            Self::Check,
            Self::Status,
            Self::Gc,
            Self::Version,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// One attachment named in GC's valid set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// The container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name in the container.
    pub ifname: String,
}

/// A validated invocation.
#[derive(Debug, Clone)]
pub struct Request {
    /// The operation.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for STATUS and GC).
    pub container_id: String,
    /// `CNI_NETNS`; `None` when unset or empty (DEL may come without one).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (empty for STATUS and GC).
    pub ifname: String,
    /// `CNI_ARGS`.
    pub args: CniArgs,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
    /// The config as given on stdin, unknown keys included.
    pub config: Value,
    /// The config's `cniVersion`, which the result must be printed in.
    pub version: Version,
}

impl Request {
    /// `prevResult`, converted up to the internal model.
    ///
    /// # Errors
    /// Code 6 when a `prevResult` is present but unreadable.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match self.config.get("prevResult") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => CniResult::parse(v, self.version.as_str())
                .map(|(_, r)| Some(r))
                .map_err(|e| {
                    CniError::new(code::DECODING_FAILURE, "invalid prevResult")
                        .with_details(e.to_string())
                }),
        }
    }

    /// `runtimeConfig`, or `null`.
    #[must_use]
    pub fn runtime_config(&self) -> &Value {
        self.config.get("runtimeConfig").unwrap_or(&Value::Null)
    }

    /// GC's still-valid attachments: `cni.dev/valid-attachments`, falling
    /// back to the `cni.dev/attachments` spelling of the released 1.1.0 text.
    /// Absent, `null` and `[]` all mean "none is valid".
    ///
    /// # Errors
    /// Code 6 when the list is present but malformed.
    pub fn valid_attachments(&self) -> Result<Vec<Attachment>, CniError> {
        let raw = ["cni.dev/valid-attachments", "cni.dev/attachments"]
            .iter()
            .find_map(|k| self.config.get(*k).filter(|v| !v.is_null()));
        match raw {
            None => Ok(Vec::new()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                CniError::new(code::DECODING_FAILURE, "invalid cni.dev/valid-attachments")
                    .with_details(e.to_string())
            }),
        }
    }
}

/// What a plugin implements. Every operation is explicit: a plugin that has
/// nothing to do for STATUS or GC says so in its own code.
pub trait Plugin {
    /// ADD: the result is printed by the skeleton in the config's version.
    ///
    /// # Errors
    /// A CNI error to print.
    fn add(&self, req: &Request) -> Result<CniResult, CniError>;
    /// DEL: idempotent, best effort.
    ///
    /// # Errors
    /// A CNI error to print.
    fn del(&self, req: &Request) -> Result<(), CniError>;
    /// CHECK.
    ///
    /// # Errors
    /// A CNI error to print.
    fn check(&self, req: &Request) -> Result<(), CniError>;
    /// STATUS: codes 50/51 when not ready.
    ///
    /// # Errors
    /// A CNI error to print.
    fn status(&self, req: &Request) -> Result<(), CniError>;
    /// GC, with the still-valid attachments.
    ///
    /// # Errors
    /// A CNI error to print.
    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError>;
}

/// What the process prints and whether it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Standard output: a result, a VERSION reply, an error JSON, or nothing.
    pub stdout: String,
    /// Standard error (the "about" text when `CNI_COMMAND` is unset).
    pub stderr: String,
    /// Exit status 0 or 1.
    pub success: bool,
}

impl Outcome {
    fn ok(stdout: String) -> Self {
        Self {
            stdout,
            stderr: String::new(),
            success: true,
        }
    }

    fn err(e: &CniError, version: &str) -> Self {
        Self {
            stdout: e.to_json(version),
            stderr: String::new(),
            success: false,
        }
    }
}

/// The VERSION reply.
#[must_use]
pub fn version_reply() -> String {
    serde_json::json!({
        "cniVersion": CURRENT.as_str(),
        "supportedVersions": SUPPORTED.map(Version::as_str),
    })
    .to_string()
}

/// Which commands need which variables (skel's `reqForCmd` table). The order
/// is skel's too: it decides which error wins when several apply.
const ENV: [(&str, &[Command]); 6] = {
    use Command::{Add, Check, Del, Gc, Status};
    [
        ("CNI_COMMAND", &[Add, Check, Del, Gc, Status]),
        ("CNI_CONTAINERID", &[Add, Check, Del]),
        ("CNI_NETNS", &[Add, Check]),
        ("CNI_IFNAME", &[Add, Check, Del]),
        ("CNI_ARGS", &[]),
        ("CNI_PATH", &[Add, Check, Del, Gc, Status]),
    ]
};

/// Validates the environment and stdin and calls the plugin.
///
/// `env` looks a variable up (an empty value counts as unset); `stdin` is
/// read for every command but VERSION; `about` is printed to stderr when
/// `CNI_COMMAND` is unset, as skel does for a person running the binary.
pub fn dispatch<P: Plugin + ?Sized>(
    plugin: &P,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    about: &str,
) -> Outcome {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let cmd_text = get("CNI_COMMAND").unwrap_or_default();
    let cmd = Command::parse(&cmd_text);

    let mut missing = Vec::new();
    for (var, required_for) in ENV {
        let required = var == "CNI_COMMAND" || cmd.is_some_and(|c| required_for.contains(&c));
        match get(var) {
            None if required => missing.push(var),
            Some(v) if required => {
                let checked = match var {
                    "CNI_CONTAINERID" => validate::container_id(&v),
                    "CNI_IFNAME" => validate::interface_name(&v),
                    _ => Ok(()),
                };
                if let Err(e) = checked {
                    return Outcome::err(&e, CURRENT.as_str());
                }
            }
            _ => {}
        }
    }
    if !missing.is_empty() {
        if cmd_text.is_empty() && !about.is_empty() {
            let versions = SUPPORTED.map(Version::as_str).join(", ");
            return Outcome {
                stdout: String::new(),
                stderr: format!("{about}\nCNI protocol versions supported: {versions}\n"),
                success: true,
            };
        }
        let e = CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("required env variables [{}] missing", missing.join(",")),
        );
        return Outcome::err(&e, CURRENT.as_str());
    }
    let Some(cmd) = cmd else {
        let e = CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("unknown CNI_COMMAND: {cmd_text}"),
        );
        return Outcome::err(&e, CURRENT.as_str());
    };
    if cmd == Command::Version {
        // skel does not read stdin for VERSION.
        return Outcome::ok(version_reply());
    }

    let mut bytes = Vec::new();
    if let Err(e) = stdin.read_to_end(&mut bytes) {
        let e = CniError::new(code::IO_FAILURE, format!("error reading from stdin: {e}"));
        return Outcome::err(&e, CURRENT.as_str());
    }
    let config: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            let e = CniError::new(
                code::DECODING_FAILURE,
                "network config is not a JSON object",
            );
            return Outcome::err(&e, CURRENT.as_str());
        }
        Err(e) => {
            let e = CniError::new(
                code::DECODING_FAILURE,
                format!("decoding version from network config: {e}"),
            );
            return Outcome::err(&e, CURRENT.as_str());
        }
    };
    let declared = version::declared(&config).to_owned();
    let request = build_request(cmd, &get, config, &declared);
    match request.and_then(|req| call(plugin, &req)) {
        Ok(stdout) => Outcome::ok(stdout),
        Err(e) => Outcome::err(&e, &declared),
    }
}

fn build_request(
    cmd: Command,
    get: &dyn Fn(&str) -> Option<String>,
    config: Value,
    declared: &str,
) -> Result<Request, CniError> {
    let parsed = declared.parse::<Version>();
    // CHECK, STATUS and GC first refuse configs too old for them (skel does
    // this before the supported-version check).
    let min = match cmd {
        Command::Check => Some(Version::V0_4_0),
        Command::Status | Command::Gc => Some(Version::V1_1_0),
        _ => None,
    };
    if let Some(min) = min
        && version::older_than(declared, min)
    {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("config version does not allow {}", cmd.as_str()),
        ));
    }
    let version = parsed.map_err(|_| {
        let supported: Vec<_> = SUPPORTED
            .iter()
            .map(|v| format!("{:?}", v.as_str()))
            .collect();
        CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(
            format!(
                "config is {declared:?}, plugin supports [{}]",
                supported.join(" ")
            ),
        )
    })?;
    let name = config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    validate::network_name(name)?;
    let args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())
        .map_err(|e| CniError::new(code::INVALID_ENVIRONMENT, e.to_string()))?;
    Ok(Request {
        command: cmd,
        container_id: get("CNI_CONTAINERID").unwrap_or_default(),
        netns: get("CNI_NETNS").map(PathBuf::from),
        ifname: get("CNI_IFNAME").unwrap_or_default(),
        args,
        path: get("CNI_PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default(),
        config,
        version,
    })
}

fn call<P: Plugin + ?Sized>(plugin: &P, req: &Request) -> Result<String, CniError> {
    match req.command {
        Command::Add => Ok(plugin.add(req)?.to_value(req.version).to_string()),
        Command::Del => plugin.del(req).map(|()| String::new()),
        Command::Check => plugin.check(req).map(|()| String::new()),
        Command::Status => plugin.status(req).map(|()| String::new()),
        Command::Gc => plugin
            .gc(req, &req.valid_attachments()?)
            .map(|()| String::new()),
        Command::Version => Ok(version_reply()),
    }
}

/// Runs `plugin` as a process: real environment and stdin, output printed,
/// exit status 0 or 1. Call it from `main` and return its value.
pub fn run<P: Plugin + ?Sized>(plugin: &P, about: &str) -> ExitCode {
    let outcome = dispatch(
        plugin,
        &|k| std::env::var(k).ok(),
        &mut std::io::stdin().lock(),
        about,
    );
    outcome.emit()
}

impl Outcome {
    /// Prints it as a plugin process does and returns the exit status.
    #[must_use]
    pub fn emit(&self) -> ExitCode {
        // Nothing sensible can be done if the runtime closed our pipes.
        let _ = std::io::stdout().lock().write_all(self.stdout.as_bytes());
        let _ = std::io::stderr().lock().write_all(self.stderr.as_bytes());
        if self.success {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    //! The cases of the reference `pkg/skel/skel_test.go`, over every version.
    use std::cell::RefCell;
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<(Command, Vec<Attachment>)>>,
        fail_with: Option<CniError>,
    }

    impl Recorder {
        fn record(&self, req: &Request, valid: Vec<Attachment>) -> Result<(), CniError> {
            self.calls.borrow_mut().push((req.command, valid));
            self.fail_with.clone().map_or(Ok(()), Err)
        }
    }

    impl Plugin for Recorder {
        fn add(&self, req: &Request) -> Result<CniResult, CniError> {
            self.record(req, vec![])?;
            Ok(serde_json::from_value(json!({
                "interfaces": [{"name": req.ifname, "sandbox": req.netns, "mtu": 1500}],
                "ips": [{"interface": 0, "address": "10.0.0.2/24"}]
            }))
            .unwrap())
        }
        fn del(&self, req: &Request) -> Result<(), CniError> {
            self.record(req, vec![])
        }
        fn check(&self, req: &Request) -> Result<(), CniError> {
            self.record(req, vec![])
        }
        fn status(&self, req: &Request) -> Result<(), CniError> {
            self.record(req, vec![])
        }
        fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
            self.record(req, valid.to_vec())
        }
    }

    fn env(cmd: &str) -> HashMap<&'static str, String> {
        HashMap::from([
            ("CNI_COMMAND", cmd.to_owned()),
            ("CNI_CONTAINERID", "some-container-id".to_owned()),
            ("CNI_NETNS", "/some/netns/path".to_owned()),
            ("CNI_IFNAME", "eth0".to_owned()),
            ("CNI_ARGS", "some;extra;args".replace(';', "=x;") + "=x"),
            ("CNI_PATH", "/some/cni/path".to_owned()),
        ])
    }

    fn conf(version: &str) -> String {
        json!({"cniVersion": version, "name": "skel-test", "some": "config"}).to_string()
    }

    fn go(p: &Recorder, env: &HashMap<&'static str, String>, stdin: &str) -> Outcome {
        dispatch(
            p,
            &|k| env.get(k).cloned(),
            &mut stdin.as_bytes(),
            "plexus test plugin",
        )
    }

    fn error_of(o: &Outcome) -> (u32, String) {
        assert!(!o.success, "expected failure, got {o:?}");
        let v: Value = serde_json::from_str(&o.stdout).expect("error JSON on stdout");
        assert!(v["cniVersion"].is_string(), "error carries cniVersion: {v}");
        (
            v["code"].as_u64().unwrap() as u32,
            v["msg"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn every_command_every_version() {
        for v in SUPPORTED {
            for cmd in ["ADD", "DEL", "CHECK", "STATUS", "GC"] {
                let p = Recorder::default();
                let o = go(&p, &env(cmd), &conf(v.as_str()));
                let allowed = match cmd {
                    "CHECK" => v.allows_check(),
                    "STATUS" | "GC" => v.allows_status_and_gc(),
                    _ => true,
                };
                if !allowed {
                    let (c, msg) = error_of(&o);
                    assert_eq!(c, 1, "{cmd} {v}");
                    assert_eq!(msg, format!("config version does not allow {cmd}"));
                    assert!(p.calls.borrow().is_empty(), "plugin not called");
                    continue;
                }
                assert!(o.success, "{cmd} {v}: {o:?}");
                assert_eq!(p.calls.borrow().len(), 1);
                if cmd == "ADD" {
                    let out: Value = serde_json::from_str(&o.stdout).unwrap();
                    assert_eq!(
                        out["cniVersion"],
                        v.as_str(),
                        "result in the config's version"
                    );
                    assert_eq!(out["ips"][0].get("version").is_some(), v.has_ip_version());
                } else {
                    assert_eq!(o.stdout, "", "{cmd} prints nothing on success");
                }
            }
        }
    }

    #[test]
    fn all_missing_variables_in_one_error() {
        let p = Recorder::default();
        let mut e = env("ADD");
        for k in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
            e.insert(k, String::new()); // empty counts as unset
        }
        let (c, msg) = error_of(&go(&p, &e, &conf("1.0.0")));
        assert_eq!(c, 4);
        assert_eq!(
            msg,
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"
        );
    }

    #[test]
    fn what_each_command_requires() {
        let p = Recorder::default();
        // DEL does not need CNI_NETNS.
        let mut e = env("DEL");
        e.remove("CNI_NETNS");
        assert!(go(&p, &e, &conf("1.0.0")).success);
        // GC needs only COMMAND and PATH; libcni sends the rest empty.
        let mut e = env("GC");
        for k in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"] {
            e.insert(k, String::new());
        }
        assert!(go(&p, &e, &conf("1.1.0")).success);
        e.remove("CNI_PATH");
        assert_eq!(
            error_of(&go(&p, &e, &conf("1.1.0"))).1,
            "required env variables [CNI_PATH] missing"
        );
        // VERSION needs nothing else and ignores stdin entirely.
        let e = HashMap::from([("CNI_COMMAND", "VERSION".to_owned())]);
        let o = go(&p, &e, "this is not json");
        assert!(o.success);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(
            v["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn invalid_container_id_and_ifname() {
        let p = Recorder::default();
        for (k, v) in [
            ("CNI_CONTAINERID", "-bad"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "a234567890123456"),
            ("CNI_IFNAME", "eth/0"),
            ("CNI_IFNAME", ".."),
        ] {
            let mut e = env("ADD");
            e.insert(k, v.to_owned());
            assert_eq!(error_of(&go(&p, &e, &conf("1.0.0"))).0, 4, "{k}={v}");
        }
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn unset_command_prints_about_and_succeeds() {
        let p = Recorder::default();
        let o = go(&p, &HashMap::new(), "");
        assert!(o.success);
        assert_eq!(o.stdout, "");
        assert!(o.stderr.contains("plexus test plugin"));
        assert!(o.stderr.contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"));
    }

    #[test]
    fn unknown_command() {
        let (c, msg) = error_of(&go(&Recorder::default(), &env("NOPE"), &conf("1.0.0")));
        assert_eq!((c, msg.as_str()), (4, "unknown CNI_COMMAND: NOPE"));
    }

    #[test]
    fn stdin_errors() {
        let p = Recorder::default();
        assert_eq!(error_of(&go(&p, &env("ADD"), "{not json")).0, 6);
        assert_eq!(error_of(&go(&p, &env("ADD"), "[1]")).0, 6);
        // Missing version means 0.1.0, which we do not speak.
        let (c, _) = error_of(&go(&p, &env("ADD"), r#"{"name":"n"}"#));
        assert_eq!(c, 1);
        let o = go(&p, &env("ADD"), &conf("0.2.0"));
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["code"], 1);
        assert_eq!(v["msg"], "incompatible CNI versions");
        assert_eq!(
            v["details"],
            r#"config is "0.2.0", plugin supports ["0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]"#
        );
        assert_eq!(
            v["cniVersion"], "0.2.0",
            "the error speaks the config's version"
        );
        // Bad and missing names are code 7.
        assert_eq!(
            error_of(&go(&p, &env("ADD"), r#"{"cniVersion":"1.0.0"}"#)).0,
            7
        );
        assert_eq!(
            error_of(&go(
                &p,
                &env("ADD"),
                r#"{"cniVersion":"1.0.0","name":"a b"}"#
            ))
            .0,
            7
        );
        assert!(
            p.calls.borrow().is_empty(),
            "no bad input reaches the plugin"
        );
    }

    #[test]
    fn plugin_errors_pass_through_in_the_config_version() {
        let p = Recorder {
            fail_with: Some(CniError::new(11, "try later").with_details("busy")),
            ..Recorder::default()
        };
        let o = go(&p, &env("DEL"), &conf("0.4.0"));
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "0.4.0", "code": 11, "msg": "try later", "details": "busy"})
        );
    }

    #[test]
    fn gc_attachments_with_fallback_and_empties() {
        let cases = [
            (
                json!({"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]}),
                1,
            ),
            (
                json!({"cni.dev/attachments": [{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "net1"}]}),
                2,
            ),
            (json!({"cni.dev/valid-attachments": null}), 0),
            (json!({}), 0),
            (json!({"cni.dev/valid-attachments": []}), 0),
        ];
        for (extra, n) in cases {
            let p = Recorder::default();
            let mut c: Value = serde_json::from_str(&conf("1.1.0")).unwrap();
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            assert!(go(&p, &env("GC"), &c.to_string()).success);
            assert_eq!(p.calls.borrow()[0].1.len(), n, "{extra}");
        }
        let mut c: Value = serde_json::from_str(&conf("1.1.0")).unwrap();
        c["cni.dev/valid-attachments"] = json!("nope");
        assert_eq!(
            error_of(&go(&Recorder::default(), &env("GC"), &c.to_string())).0,
            6
        );
    }

    #[test]
    fn prev_result_is_read_in_any_version() {
        let mut c: Value = serde_json::from_str(&conf("1.0.0")).unwrap();
        c["prevResult"] =
            json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.9/24"}]});
        let e = env("ADD");
        let req = build_request(Command::Add, &|k| e.get(k).cloned(), c, "1.0.0").unwrap();
        assert_eq!(
            req.prev_result().unwrap().unwrap().ips[0]
                .address
                .to_string(),
            "10.0.0.9/24"
        );
        assert_eq!(req.args.get("some"), Some("x"));
        assert_eq!(req.path, [PathBuf::from("/some/cni/path")]);
    }
}
