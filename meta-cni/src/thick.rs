//! Thick mode: `plexus daemon` on every node, and the `plexus` binary as a
//! shim that hands each CNI request to it over a unix socket.
//!
//! The protocol is Multus thick's: `POST /cni` with JSON `{"env": {...},
//! "config": <the stdin bytes, base64>}` over HTTP/1.1 on
//! `<socketDir>/plexus.sock`; `GET /healthz`, `GET /readyz` and
//! `GET /metrics` ([`crate::metrics`]), which are also served over TCP on
//! `metricsAddress` when set. A success
//! is `200 {"Result": <the CNI result or null>}`; a failure is `400` with
//! the CNI error JSON as the body, so its code reaches the runtime
//! unchanged (Multus's daemon answers plain text there).
//!
//! The daemon runs the same [`Plexus`] as thin mode, in process, one
//! request per blocking thread: the state on disk (cache, locks) is the
//! truth, exactly as in thin mode, so either can take over from the other.
//! Keys of the daemon's config file override the request's config (as
//! Multus's `daemon-config.json` does), except the daemon's own keys.
//!
//! The shim: a config with `daemonSocketDir` is forwarded. With the daemon
//! down, ADD and CHECK fail at once with code 11 (try again later), STATUS
//! with 50, and DEL and GC run here, in thin mode, from the cache.

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use plexus_cni::CniError;
use plexus_cni::error::code;
use plexus_cni::plugin::{Outcome, dispatch};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Plexus;

/// The socket's file name in the socket directory.
pub const SOCKET_NAME: &str = "plexus.sock";
/// The default socket directory.
pub const DEFAULT_SOCKET_DIR: &str = "/run/plexus";
/// The config key that makes `plexus` a shim: the daemon's socket directory.
pub const SHIM_KEY: &str = "daemonSocketDir";

/// Keys of the daemon's config file that are the daemon's own, never
/// merged into a request's config (Multus `daemon-config.json` keys
/// included, so that file works unchanged).
const DAEMON_ONLY_KEYS: &[&str] = &[
    "socketDir",
    "metricsPort",
    "chrootDir",
    "metricsAddress",
    "multusConfigFile",
    "multusAutoconfigDir",
    "multusMasterCNI",
    "cniConfigDir",
    "perNodeCertificate",
    HOTPLUG_KEY,
];

/// One request on the socket: Multus thick's `api.Request`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiRequest {
    /// The CNI environment (`CNI_COMMAND`, `CNI_NETNS`, ...).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The CNI config (stdin), as bytes: base64 in JSON, as Go encodes
    /// a `[]byte`.
    #[serde(default, with = "b64")]
    pub config: Vec<u8>,
    /// `/delegate` only (hot-plug): requested IPs, MAC, CNI args.
    #[serde(
        default,
        rename = "interfaceAttributes",
        skip_serializing_if = "Option::is_none"
    )]
    pub interface_attributes: Option<Value>,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// The daemon's settings: its config file's keys (Multus's
/// `daemon-config.json` works) and the socket directory.
#[derive(Debug, Clone, Default)]
pub struct DaemonConfig {
    /// Where `plexus.sock` goes (`socketDir`).
    pub socket_dir: PathBuf,
    /// Keys merged over every request's config.
    pub overrides: Map<String, Value>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served over TCP
    /// (`metricsAddress`, or Multus's `metricsPort` on every address).
    pub metrics_address: Option<String>,
    /// This node's name: the pod informer watches the pods bound to it
    /// (`--node-name`, `NODE_NAME`, `MULTUS_NODE_NAME`).
    pub node_name: Option<String>,
    /// Whether the daemon hot-plugs networks itself (`hotplug`, default
    /// true; false leaves it to multus-dynamic-networks-controller).
    pub hotplug: bool,
    /// `chrootDir`: the node's root as mounted into the daemon's
    /// container; delegates run chrooted there
    /// ([`plexus_cni::invoke::set_chroot`]).
    pub chroot_dir: Option<PathBuf>,
}

impl DaemonConfig {
    /// From the config file's JSON; `socket_dir` wins over its `socketDir`.
    ///
    /// # Errors
    /// The file is not a JSON object.
    pub fn from_value(v: &Value, socket_dir: Option<&Path>) -> Result<Self, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| "the daemon config is not a JSON object".to_owned())?;
        let dir = socket_dir.map(Path::to_path_buf).unwrap_or_else(|| {
            PathBuf::from(
                obj.get("socketDir")
                    .and_then(Value::as_str)
                    .unwrap_or(DEFAULT_SOCKET_DIR),
            )
        });
        let chroot_dir = match obj.get("chrootDir") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) if d.is_empty() => None,
            Some(Value::String(d)) if Path::new(d).is_absolute() => Some(PathBuf::from(d)),
            Some(other) => {
                return Err(format!(
                    "chrootDir must be an absolute directory (the node's root as mounted \
                     into the daemon, e.g. \"/hostroot\"), not {other}"
                ));
            }
        };
        let overrides = obj
            .iter()
            .filter(|(k, _)| !DAEMON_ONLY_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let metrics_address = match (obj.get("metricsAddress"), obj.get("metricsPort")) {
            (Some(Value::String(a)), _) if !a.is_empty() => Some(a.clone()),
            (_, Some(Value::Number(p))) => Some(format!("0.0.0.0:{p}")),
            (None | Some(Value::Null), None | Some(Value::Null)) => None,
            (a, p) => {
                return Err(format!(
                    "metricsAddress must be \"host:port\" and metricsPort a number, not {} / {}",
                    a.unwrap_or(&Value::Null),
                    p.unwrap_or(&Value::Null)
                ));
            }
        };
        Ok(Self {
            socket_dir: dir,
            overrides,
            metrics_address,
            node_name: None,
            hotplug: obj
                .get(HOTPLUG_KEY)
                .and_then(Value::as_bool)
                .unwrap_or(true),
            chroot_dir,
        })
    }

    /// The socket's path.
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.socket_dir.join(SOCKET_NAME)
    }
}

/// The outcome of one request, as the daemon answers it: the HTTP status
/// and body.
fn answer(outcome: &Outcome) -> (u16, String) {
    if outcome.success {
        let result: Value = if outcome.stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&outcome.stdout).unwrap_or(Value::Null)
        };
        (200, json!({ "Result": result }).to_string())
    } else {
        (400, outcome.stdout.clone())
    }
}

fn error_body(c: u32, msg: impl Into<String>) -> (u16, String) {
    (400, CniError::new(c, msg).to_json("1.1.0"))
}

/// Handles the body of a `POST /cni`: runs the request through [`Plexus`]
/// with the request's environment and config (daemon overrides merged).
#[must_use]
pub fn handle_cni(cfg: &DaemonConfig, body: &[u8]) -> (u16, String) {
    let req: ApiRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error_body(
                code::DECODING_FAILURE,
                format!("the request is not a plexus/Multus thick request: {e}"),
            );
        }
    };
    if req.env.get("CNI_COMMAND").is_none_or(String::is_empty) {
        return error_body(
            code::INVALID_ENVIRONMENT,
            "the request's env has no CNI_COMMAND",
        );
    }
    let config = match merge(&req.config, &cfg.overrides) {
        Ok(c) => c,
        Err(e) => return error_body(code::DECODING_FAILURE, e),
    };
    let env = |k: &str| req.env.get(k).cloned();
    let verb = req.env.get("CNI_COMMAND").map_or("", String::as_str);
    // The config's own keys the daemon reads (the plugin parses it again).
    let keys = serde_json::from_slice::<Value>(&config).ok();
    let key = |k: &str| {
        keys.as_ref()
            .and_then(|c| c.get(k))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    // Hot-plug's pass after an ADD: the pod, its cluster's caches and its
    // networks annotation as the ADD starts, looked up once.
    let watched = (cfg.hotplug && verb == "ADD")
        .then(|| cached_pod(&req.env, key("kubeconfig").as_deref()))
        .flatten()
        .map(|(pod, informers)| {
            let before = networks_of(&informers, &pod);
            (pod, informers, before)
        });
    let started = std::time::Instant::now();
    let outcome = dispatch(&Plexus, &env, &mut config.as_slice(), "");
    if let Some(m) = crate::metrics::get() {
        m.cache_dir(
            &key("cniDir").unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CNI_DIR)),
        );
        let result = if outcome.success {
            "ok".to_owned()
        } else {
            error_code(&outcome)
        };
        m.request(verb, &result, started.elapsed());
    }
    // The pod's ADD is kept whether or not the daemon hot-plugs itself:
    // `/delegate` reads it too.
    if outcome.success {
        remember(cfg, verb, &req.env, &config);
    }
    if let Some((pod, informers, before)) = watched
        && outcome.success
    {
        replug_after_add(
            &req.env,
            &config,
            networks_of(&informers, &pod).as_deref(),
            before.as_deref(),
        );
    }
    answer(&outcome)
}

/// `/delegate` as a CNI plugin over the request's own config (the one
/// delegate network), so that its environment is checked as a runtime's.
struct Delegator<'a> {
    plexus_conf: Value,
    attributes: Option<&'a Value>,
}

impl plexus_cni::plugin::Plugin for Delegator<'_> {
    fn add(&self, req: &plexus_cni::plugin::Request) -> Result<plexus_cni::CniResult, CniError> {
        Plexus::delegate(req, &self.plexus_conf, self.attributes).map(Option::unwrap_or_default)
    }
    fn del(&self, req: &plexus_cni::plugin::Request) -> Result<(), CniError> {
        Plexus::delegate(req, &self.plexus_conf, self.attributes).map(drop)
    }
    fn check(&self, req: &plexus_cni::plugin::Request) -> Result<(), CniError> {
        Plexus::delegate(req, &self.plexus_conf, self.attributes).map(drop)
    }
    fn status(&self, req: &plexus_cni::plugin::Request) -> Result<(), CniError> {
        Plexus::delegate(req, &self.plexus_conf, self.attributes).map(drop)
    }
    fn gc(
        &self,
        req: &plexus_cni::plugin::Request,
        _: &[plexus_cni::plugin::Attachment],
    ) -> Result<(), CniError> {
        Plexus::delegate(req, &self.plexus_conf, self.attributes).map(drop)
    }
}

/// Handles the body of a `POST /delegate` (Multus thick's shape: `env`,
/// `config` = the delegate network's own config, `interfaceAttributes`):
/// see [`Plexus::delegate`].
#[must_use]
pub fn handle_delegate(cfg: &DaemonConfig, body: &[u8]) -> (u16, String) {
    let req: ApiRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error_body(
                code::DECODING_FAILURE,
                format!("the request is not a Multus /delegate request: {e}"),
            );
        }
    };
    let mut env = req.env.clone();
    // The pod's own ADD, kept by the daemon, says where its cache is
    // (`cniDir`) and where plugins are (`binDir`, `CNI_PATH`):
    // multus-dynamic-networks-controller sends no CNI_PATH.
    let pod_add = env
        .get("CNI_CONTAINERID")
        .and_then(|cid| record_of_container(&cfg.socket_dir, cid));
    let cni_path = pod_add
        .as_ref()
        .and_then(|r| r.env.get("CNI_PATH").cloned())
        .unwrap_or_else(|| crate::config::DEFAULT_BIN_DIR.to_owned());
    env.entry("CNI_PATH".into()).or_insert(cni_path);
    let plexus_conf = pod_add
        .and_then(|r| serde_json::from_slice::<Value>(&r.config).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| {
            let mut c = json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus"});
            if let Some(o) = c.as_object_mut() {
                o.extend(cfg.overrides.clone());
            }
            c
        });
    let delegator = Delegator {
        plexus_conf,
        attributes: req.interface_attributes.as_ref(),
    };
    let get = |k: &str| env.get(k).cloned();
    let started = std::time::Instant::now();
    let outcome = dispatch(&delegator, &get, &mut req.config.as_slice(), "");
    if let Some(m) = crate::metrics::get() {
        let verb = env.get("CNI_COMMAND").map_or("?", String::as_str);
        let result = if outcome.success {
            "ok".to_owned()
        } else {
            error_code(&outcome)
        };
        m.request(&format!("delegate {verb}"), &result, started.elapsed());
    }
    answer(&outcome)
}

/// The CNI error code of a failed outcome, as text.
fn error_code(outcome: &Outcome) -> String {
    serde_json::from_str::<Value>(&outcome.stdout)
        .ok()
        .and_then(|v| v.get("code").map(Value::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The request's config with the daemon's keys over it.
fn merge(config: &[u8], overrides: &Map<String, Value>) -> Result<Vec<u8>, String> {
    if overrides.is_empty() || config.is_empty() {
        return Ok(config.to_vec());
    }
    let mut v: Value = serde_json::from_slice(config)
        .map_err(|e| format!("decoding the request's network config: {e}"))?;
    let Some(obj) = v.as_object_mut() else {
        return Ok(config.to_vec());
    };
    for (k, val) in overrides {
        obj.insert(k.clone(), val.clone());
    }
    obj.remove(SHIM_KEY);
    Ok(v.to_string().into_bytes())
}

/// Serves the socket until the process is told to stop (SIGTERM/SIGINT),
/// then removes it.
///
/// # Errors
/// The socket cannot be made.
pub fn serve(cfg: DaemonConfig) -> io::Result<()> {
    if let Some(root) = &cfg.chroot_dir {
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "chrootDir {}: not a directory (mount the node's / there)",
                    root.display()
                ),
            ));
        }
        plexus_cni::invoke::set_chroot(root.clone())?;
        tracing::info!(chroot = %root.display(), "delegates run chrooted into the node's root");
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.socket_dir)?;
    let path = cfg.socket();
    // A socket left by a daemon that died: nothing listens on it.
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{}: another plexus daemon serves it", path.display()),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    crate::metrics::enable();
    crate::informer::enable(rt.handle().clone(), cfg.node_name.clone());
    // The daemon's own cluster is cached from the start (`/readyz` waits
    // for it); a request naming another kubeconfig starts its own.
    match cfg.overrides.get("kubeconfig").and_then(Value::as_str) {
        Some(k) if !k.is_empty() => {
            crate::informer::for_kubeconfig(Some(Path::new(k)));
        }
        _ if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            crate::informer::for_kubeconfig(None);
        }
        _ => {}
    }
    let pruned = prune_records(&cfg.socket_dir);
    if pruned > 0 {
        tracing::info!(
            pruned,
            "forgot the kept requests of pods whose cache is gone"
        );
    }
    if cfg.hotplug {
        enable_hotplug(cfg.socket_dir.clone());
    }
    let cfg = Arc::new(cfg);
    rt.block_on(async move {
        let listener = tokio::net::UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        tracing::info!(socket = %path.display(), "plexus daemon serving");
        if let Some(addr) = &cfg.metrics_address {
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("metrics address {addr}: {e}")))?;
            tracing::info!(address = %tcp.local_addr()?, "metrics, /healthz and /readyz served");
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = tcp.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        // Only what a scraper and a probe ask for: never /cni.
                        let svc = hyper::service::service_fn(|r| async move {
                            let path = r.uri().path();
                            let (status, body) = match (r.method().as_str(), path) {
                                ("GET", "/metrics") => (200, metrics_text()),
                                ("GET", "/healthz") => (200, String::new()),
                                ("GET", "/readyz") => readyz(),
                                _ => (
                                    404,
                                    format!("{path}: /metrics, /healthz and /readyz only\n"),
                                ),
                            };
                            let mut resp = hyper::Response::new(Body::from(body));
                            *resp.status_mut() =
                                hyper::StatusCode::from_u16(status).unwrap_or_default();
                            Ok::<_, std::convert::Infallible>(resp)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(false)
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept");
                            continue;
                        }
                    };
                    let cfg = Arc::clone(&cfg);
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |r| {
                            let cfg = Arc::clone(&cfg);
                            async move { route(cfg, r).await }
                        });
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .keep_alive(false)
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await
                        {
                            tracing::debug!(error = %e, "connection");
                        }
                    });
                }
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        tracing::info!("plexus daemon stopping");
        let _ = std::fs::remove_file(&path);
        Ok::<_, io::Error>(())
    })
}

type Body = http_body_util::Full<hyper::body::Bytes>;

async fn route(
    cfg: Arc<DaemonConfig>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    use http_body_util::BodyExt as _;
    let (parts, body) = req.into_parts();
    let reply = |status: u16, body: String| {
        let mut r = hyper::Response::new(Body::from(body));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        Ok(r)
    };
    // The body is read whatever the endpoint: answering first and closing
    // would cut a client still sending it (EPIPE on its side).
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let (s, b) = error_body(code::IO_FAILURE, format!("reading the request: {e}"));
            return reply(s, b);
        }
    };
    match (parts.method.as_str(), parts.uri.path()) {
        ("GET" | "POST", "/healthz") => reply(200, String::new()),
        ("GET" | "POST", "/readyz") => {
            let (status, body) = readyz();
            reply(status, body)
        }
        ("GET", "/metrics") => reply(200, metrics_text()),
        ("POST", "/delegate") => {
            let (status, body) = tokio::task::spawn_blocking(move || handle_delegate(&cfg, &bytes))
                .await
                .unwrap_or_else(|e| {
                    error_body(code::INTERNAL, format!("the request's thread failed: {e}"))
                });
            reply(status, body)
        }
        ("POST", "/cni") => {
            let started = std::time::Instant::now();
            let (status, body) = tokio::task::spawn_blocking(move || handle_cni(&cfg, &bytes))
                .await
                .unwrap_or_else(|e| {
                    error_body(code::INTERNAL, format!("the request's thread failed: {e}"))
                });
            tracing::debug!(status, ms = started.elapsed().as_millis(), "/cni");
            reply(status, body)
        }
        (_, "/cni" | "/delegate" | "/healthz" | "/readyz") => {
            let (_, b) = error_body(
                code::INVALID_ENVIRONMENT,
                format!("{} {}: method not allowed", parts.method, parts.uri.path()),
            );
            reply(405, b)
        }
        (m, p) => {
            let (_, b) = error_body(
                code::INVALID_ENVIRONMENT,
                format!(
                    "{m} {p}: no such endpoint (plexus daemon serves /cni, /delegate, /healthz, /readyz, /metrics)"
                ),
            );
            reply(404, b)
        }
    }
}

/// Ready once every informer cache has listed its objects.
fn readyz() -> (u16, String) {
    if crate::informer::ready() {
        (200, String::new())
    } else {
        (503, "informer caches not synced yet\n".to_owned())
    }
}

fn metrics_text() -> String {
    crate::metrics::get()
        .map(crate::metrics::Metrics::render)
        .unwrap_or_default()
}

/// The daemon's socket named by a CNI config, when it makes `plexus` a
/// shim (`daemonSocketDir`).
#[must_use]
pub fn shim_socket(config: &Value) -> Option<PathBuf> {
    config
        .get(SHIM_KEY)
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(SOCKET_NAME))
}

/// Sends one request over the socket and returns the HTTP status and body.
///
/// # Errors
/// The socket cannot be reached, or the answer is not HTTP.
pub fn post(socket: &Path, path: &str, req: &ApiRequest) -> io::Result<(u16, Vec<u8>)> {
    let body = serde_json::to_vec(req).map_err(io::Error::other)?;
    let mut s = UnixStream::connect(socket)?;
    let mut msg = format!(
        "POST {path} HTTP/1.1\r\nHost: plexus\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    msg.extend_from_slice(&body);
    // A server that answered before reading everything may have closed its
    // side: its answer is still there to read.
    if let Err(e) = s.write_all(&msg)
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        return Err(e);
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Status and body of an HTTP/1.1 response read to the end (the server
/// closes the connection; a body is sized by `Content-Length`).
fn parse_response(raw: &[u8]) -> io::Result<(u16, Vec<u8>)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no HTTP header in the daemon's answer"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("header not UTF-8"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status in the daemon's answer"))?;
    let mut body = raw[end + 4..].to_vec();
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    if let Some(n) = len {
        body.truncate(n);
    }
    Ok((status, body))
}

/// The shim: forwards this process's CNI request (its environment and
/// `stdin`) to the daemon at `socket`, and turns the answer into what the
/// runtime expects. With the daemon unreachable, DEL and GC run here in
/// thin mode; ADD and CHECK fail with 11, STATUS with 50.
#[must_use]
pub fn forward(socket: &Path, stdin: &[u8]) -> Outcome {
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CNI_") || k == "PATH" || k.starts_with("KUBERNETES_"))
        .collect();
    let command = env.get("CNI_COMMAND").cloned().unwrap_or_default();
    let version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "1.0.0".to_owned());
    let req = ApiRequest {
        env,
        config: stdin.to_vec(),
        interface_attributes: None,
    };
    let fail = |c: u32, msg: String| Outcome {
        stdout: CniError::new(c, msg).to_json(&version),
        stderr: String::new(),
        success: false,
    };
    match post(socket, "/cni", &req) {
        Ok((200, body)) => {
            let result = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("Result").cloned())
                .filter(|r| !r.is_null());
            Outcome {
                stdout: result.map(|r| r.to_string()).unwrap_or_default(),
                stderr: String::new(),
                success: true,
            }
        }
        Ok((400, body))
            if serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.get("code").is_some()) =>
        {
            Outcome {
                stdout: String::from_utf8_lossy(&body).into_owned(),
                stderr: String::new(),
                success: false,
            }
        }
        Ok((status, body)) => fail(
            code::IO_FAILURE,
            format!(
                "the plexus daemon at {} answered {status}: {}",
                socket.display(),
                String::from_utf8_lossy(&body).trim()
            ),
        ),
        Err(e) => match command.as_str() {
            "DEL" | "GC" => {
                tracing::warn!(socket = %socket.display(), error = %e, "daemon unreachable: {command} in thin mode");
                let env = |k: &str| std::env::var(k).ok();
                dispatch(&Plexus, &env, &mut &stdin[..], "")
            }
            "STATUS" => fail(
                code::NOT_AVAILABLE,
                format!(
                    "the plexus daemon at {} is not reachable: {e}",
                    socket.display()
                ),
            ),
            _ => fail(
                code::TRY_AGAIN_LATER,
                format!(
                    "the plexus daemon at {} is not reachable: {e} (is the plexus DaemonSet \
                     running on this node?)",
                    socket.display()
                ),
            ),
        },
    }
}

// ------------------------------------------------------------- hot-plug

/// The daemon config key that turns the daemon's own hot-plug off (leave
/// it to multus-dynamic-networks-controller through `/delegate`).
pub const HOTPLUG_KEY: &str = "hotplug";

/// Where the daemon keeps the ADD request of every pod it set up, for
/// hot-plug and `/delegate`: `<socketDir>/pods/<containerID>_<ifname>.json` (0600, in the
/// 0700 socket directory). DEL removes it. It is the request as the
/// runtime sent it, so a restarted daemon still knows the pod's netns,
/// `CNI_ARGS` and config.
fn record_path(socket_dir: &Path, env: &BTreeMap<String, String>) -> Option<PathBuf> {
    let cid = env.get("CNI_CONTAINERID").filter(|c| !c.is_empty())?;
    let ifname = env.get("CNI_IFNAME").filter(|i| !i.is_empty())?;
    let safe = |s: &str| !s.contains('/') && s != "." && s != "..";
    (safe(cid) && safe(ifname))
        .then(|| socket_dir.join("pods").join(format!("{cid}_{ifname}.json")))
}

/// Keeps (after an ADD) or forgets (after a DEL) the request of a pod.
fn remember(cfg: &DaemonConfig, verb: &str, env: &BTreeMap<String, String>, config: &[u8]) {
    let Some(path) = record_path(&cfg.socket_dir, env) else {
        return;
    };
    let outcome = match verb {
        "ADD" => {
            let req = ApiRequest {
                env: env.clone(),
                config: config.to_vec(),
                interface_attributes: None,
            };
            serde_json::to_vec(&req)
                .map_err(io::Error::other)
                .and_then(|b| crate::state::write_private(&path, &b, false))
        }
        "DEL" => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        _ => Ok(()),
    };
    if let Err(e) = outcome {
        tracing::warn!(path = %path.display(), error = %e, "hot-plug record");
    }
}

/// Forgets the kept requests whose pod cache is gone (a DEL that ran thin
/// while the daemon was down, or a cache removed by GC): at start, so that
/// `<socketDir>/pods` holds only pods plexus still has set up.
fn prune_records(socket_dir: &Path) -> usize {
    let Ok(dir) = std::fs::read_dir(socket_dir.join("pods")) else {
        return 0;
    };
    let mut pruned = 0;
    for e in dir.flatten() {
        let path = e.path();
        let Some(req) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<ApiRequest>(&b).ok())
        else {
            continue;
        };
        let cni_dir = serde_json::from_slice::<Value>(&req.config)
            .ok()
            .and_then(|c| c.get("cniDir").and_then(Value::as_str).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CNI_DIR));
        let (Some(cid), Some(ifname)) = (req.env.get("CNI_CONTAINERID"), req.env.get("CNI_IFNAME"))
        else {
            continue;
        };
        if !crate::state::path(&cni_dir, cid, ifname).exists()
            && std::fs::remove_file(&path).is_ok()
        {
            pruned += 1;
        }
    }
    pruned
}

/// The kept ADD request of a container (its sandbox, for `/delegate`).
fn record_of_container(socket_dir: &Path, container_id: &str) -> Option<ApiRequest> {
    let prefix = format!("{container_id}_");
    std::fs::read_dir(socket_dir.join("pods"))
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .find_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
}

/// The kept ADD requests of a pod.
fn records_of(
    socket_dir: &Path,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
) -> Vec<ApiRequest> {
    let Ok(dir) = std::fs::read_dir(socket_dir.join("pods")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| serde_json::from_slice::<ApiRequest>(&std::fs::read(e.path()).ok()?).ok())
        .filter(|r| {
            let args =
                plexus_cni::args::CniArgs::parse(r.env.get("CNI_ARGS").map_or("", String::as_str))
                    .unwrap_or_default();
            args.get("K8S_POD_NAMESPACE") == Some(namespace)
                && args.get("K8S_POD_NAME") == Some(name)
                && match (args.get("K8S_POD_UID"), uid) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
        .collect()
}

/// [`Plexus::replug`] as a CNI plugin, so that a kept request goes through
/// the same checks as the runtime's own (its ADD, replayed).
struct Replugger;

impl plexus_cni::plugin::Plugin for Replugger {
    fn add(&self, req: &plexus_cni::plugin::Request) -> Result<plexus_cni::CniResult, CniError> {
        Plexus::replug(req).map(|_| plexus_cni::CniResult::default())
    }
    fn del(&self, _: &plexus_cni::plugin::Request) -> Result<(), CniError> {
        Ok(())
    }
    fn check(&self, _: &plexus_cni::plugin::Request) -> Result<(), CniError> {
        Ok(())
    }
    fn status(&self, _: &plexus_cni::plugin::Request) -> Result<(), CniError> {
        Ok(())
    }
    fn gc(
        &self,
        _: &plexus_cni::plugin::Request,
        _: &[plexus_cni::plugin::Attachment],
    ) -> Result<(), CniError> {
        Ok(())
    }
}

/// Replays a kept request as a hot-plug pass.
fn replug(req: &ApiRequest) {
    let mut env = req.env.clone();
    env.insert("CNI_COMMAND".into(), "ADD".into());
    let get = |k: &str| env.get(k).cloned();
    let outcome = dispatch(&Replugger, &get, &mut req.config.as_slice(), "");
    if !outcome.success {
        tracing::warn!(
            container = env.get("CNI_CONTAINERID").map_or("", String::as_str),
            error = outcome.stdout.trim(),
            "hot-plug failed"
        );
    }
}

/// The pod of a CNI request as the kept request names it, and the
/// informer caches of the request's cluster (its config's `kubeconfig`).
fn cached_pod(
    env: &BTreeMap<String, String>,
    kubeconfig: Option<&Path>,
) -> Option<(
    crate::cluster::PodRef,
    std::sync::Arc<crate::informer::Informers>,
)> {
    let args = plexus_cni::args::CniArgs::parse(env.get("CNI_ARGS").map_or("", String::as_str))
        .unwrap_or_default();
    let (Some(ns), Some(name)) = (args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")) else {
        return None;
    };
    let pod = crate::cluster::PodRef {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        uid: args.get("K8S_POD_UID").map(str::to_owned),
    };
    Some((pod, crate::informer::for_kubeconfig(kubeconfig)?))
}

/// The networks annotation of `pod` in the informer cache (`Some("")`
/// without one); `None` when the cache does not have the pod.
fn networks_of(
    informers: &crate::informer::Informers,
    pod: &crate::cluster::PodRef,
) -> Option<String> {
    let info = informers.peek(pod)?;
    Some(
        info.annotations
            .get(crate::selection::NETWORKS_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
    )
}

/// After an ADD: one hot-plug pass for the pod when the informer cache
/// has it (`now` is its networks annotation) and the annotation is no
/// longer `before`, the one it had when the ADD started (`None`: the pod
/// was not cached then). The pod informer's own pass may have come while
/// the ADD ran, before the request was kept, and found nothing to replug;
/// this one catches that edit. An ADD during which nothing moved (nearly
/// all of them) costs no pass.
fn replug_after_add(
    env: &BTreeMap<String, String>,
    config: &[u8],
    now: Option<&str>,
    before: Option<&str>,
) {
    if now.is_none() || now == before {
        return;
    }
    let Some(h) = crate::informer::handle() else {
        return;
    };
    let req = ApiRequest {
        env: env.clone(),
        config: config.to_vec(),
        interface_attributes: None,
    };
    h.spawn_blocking(move || replug(&req));
}

/// Watches the node's pods (the pod informer) and replugs a pod whose
/// networks annotation changed since the daemon last looked.
fn enable_hotplug(socket_dir: PathBuf) {
    let seen: Arc<std::sync::Mutex<BTreeMap<String, String>>> = Arc::default();
    crate::informer::on_pod(Arc::new(move |pod| {
        let meta = &pod.metadata;
        let (Some(ns), Some(name)) = (meta.namespace.clone(), meta.name.clone()) else {
            return;
        };
        let uid = meta.uid.clone();
        let networks = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::selection::NETWORKS_ANNOTATION))
            .cloned()
            .unwrap_or_default();
        let key = format!("{ns}/{name}/{}", uid.as_deref().unwrap_or_default());
        if let Ok(mut s) = seen.lock() {
            if s.get(&key) == Some(&networks) {
                return;
            }
            // Pods come and go: forget them all now and then (a pod seen
            // anew costs one pass that changes nothing).
            if s.len() > 4096 {
                s.clear();
            }
            s.insert(key, networks);
        }
        let records = records_of(&socket_dir, &ns, &name, uid.as_deref());
        if records.is_empty() {
            return;
        }
        if let Some(h) = crate::informer::handle() {
            h.spawn_blocking(move || records.iter().for_each(replug));
        }
    }));
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    #[test]
    fn a_request_is_multus_thicks_json_with_the_config_in_base64() {
        let req = ApiRequest {
            env: BTreeMap::from([("CNI_COMMAND".into(), "ADD".into())]),
            config: br#"{"type":"plexus"}"#.to_vec(),
            interface_attributes: None,
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v,
            json!({"env": {"CNI_COMMAND": "ADD"},
                   "config": base64::engine::general_purpose::STANDARD.encode(br#"{"type":"plexus"}"#)})
        );
        let back: ApiRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back, req);
        // Multus's /delegate shape: interfaceAttributes with ips, mac, cni-args.
        let d: ApiRequest = serde_json::from_value(json!({
            "env": {"CNI_COMMAND": "ADD"}, "config": "e30=",
            "interfaceAttributes": {"ips": ["10.0.0.5/24"], "mac": "02:00:00:00:00:01",
                                     "cni-args": null}}))
        .unwrap();
        assert_eq!(d.config, b"{}");
        assert_eq!(d.interface_attributes.unwrap()["mac"], "02:00:00:00:00:01");
    }

    #[test]
    fn daemon_keys_stay_out_and_the_rest_overrides_the_request() {
        let cfg = DaemonConfig::from_value(
            &json!({"socketDir": "/run/x", "chrootDir": "/hostroot", "cniDir": "/var/lib/x",
                    "kubeconfig": "/etc/k"}),
            None,
        )
        .unwrap();
        assert_eq!(cfg.socket(), Path::new("/run/x/plexus.sock"));
        assert_eq!(cfg.chroot_dir.as_deref(), Some(Path::new("/hostroot")));
        for bad in [json!({"chrootDir": "hostroot"}), json!({"chrootDir": 1})] {
            let e = DaemonConfig::from_value(&bad, None).unwrap_err();
            assert!(e.contains("chrootDir must be an absolute directory"), "{e}");
        }
        let merged: Value = serde_json::from_slice(
            &merge(
                br#"{"type":"plexus","cniDir":"/tmp/c","daemonSocketDir":"/run/x"}"#,
                &cfg.overrides,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            merged,
            json!({"type": "plexus", "cniDir": "/var/lib/x", "kubeconfig": "/etc/k"})
        );
    }

    #[test]
    fn bad_requests_get_a_cni_error_naming_what_is_wrong() {
        let cfg = DaemonConfig::default();
        let (s, b) = handle_cni(&cfg, b"not json");
        assert_eq!(s, 400);
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["code"], code::DECODING_FAILURE);
        let (s, b) = handle_cni(&cfg, br#"{"env": {}}"#);
        assert_eq!(s, 400);
        assert!(b.contains("no CNI_COMMAND"), "{b}");
        // VERSION needs nothing else and answers through the same path.
        let (s, b) = handle_cni(&cfg, br#"{"env": {"CNI_COMMAND": "VERSION"}}"#);
        assert_eq!(s, 200, "{b}");
        assert!(b.contains("supportedVersions"), "{b}");
    }

    #[test]
    fn kept_requests_of_pods_without_a_cache_are_pruned_and_found_by_pod() {
        let d = tempfile::tempdir().unwrap();
        let (sock, cache) = (d.path().join("run"), d.path().join("cache"));
        let config = json!({"type": "plexus", "cniDir": cache}).to_string();
        let env = |cid: &str, pod: &str| -> BTreeMap<String, String> {
            [
                ("CNI_CONTAINERID", cid.to_owned()),
                ("CNI_IFNAME", "eth0".to_owned()),
                (
                    "CNI_ARGS",
                    format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_UID=u-{pod}"),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
        };
        let cfg = DaemonConfig {
            socket_dir: sock.clone(),
            ..DaemonConfig::default()
        };
        remember(&cfg, "ADD", &env("c1", "a"), config.as_bytes());
        remember(&cfg, "ADD", &env("c2", "b"), config.as_bytes());
        // Only c1 has a cache.
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(crate::state::path(&cache, "c1", "eth0"), "{}").unwrap();
        assert_eq!(records_of(&sock, "default", "b", Some("u-b")).len(), 1);
        assert_eq!(prune_records(&sock), 1);
        assert!(records_of(&sock, "default", "b", None).is_empty());
        let a = records_of(&sock, "default", "a", Some("u-a"));
        assert_eq!(a.len(), 1);
        assert!(records_of(&sock, "default", "a", Some("another-uid")).is_empty());
        assert!(record_of_container(&sock, "c1").is_some());
        remember(&cfg, "DEL", &env("c1", "a"), b"");
        assert!(record_of_container(&sock, "c1").is_none());
    }

    #[test]
    fn http_answers_are_read_by_content_length() {
        let (s, b) =
            parse_response(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}xx").unwrap();
        assert_eq!((s, b.as_slice()), (400, &b"{}"[..]));
        assert!(parse_response(b"garbage").is_err());
    }
}
