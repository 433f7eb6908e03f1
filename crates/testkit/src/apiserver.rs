//! A Kubernetes API server stand-in: real HTTP, the real API paths and JSON,
//! for the few requests a CNI plugin makes. Tests point a real kubeconfig at
//! it (see [`FakeApiServer::write_kubeconfig`]) and the plugin's own client
//! (the `kube` crate) talks to it unchanged.
//!
//! Serves, from objects the test puts in:
//! - `GET /api/v1/namespaces/{ns}/pods/{name}`
//! - `PATCH /api/v1/namespaces/{ns}/pods/{name}/status` with
//!   `application/merge-patch+json` (RFC 7386 applied to the stored pod)
//! - `GET /apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions/{name}`
//! - `POST /api/v1/namespaces/{ns}/events` (kept, see [`FakeApiServer::events`])
//! - the informers' LIST and WATCH of pods (`GET /api/v1/pods`, with a
//!   `spec.nodeName=...` field selector) and of NADs (`GET
//!   /apis/k8s.cni.cncf.io/v1/network-attachment-definitions`): a list
//!   carries the current `resourceVersion`; `?watch=true` streams every
//!   change after the given `resourceVersion` as chunked JSON lines
//!   (`{"type": "ADDED"|"MODIFIED"|"DELETED", "object": ...}`), as the
//!   real server does, until `timeoutSeconds` or [`FakeApiServer::stop`].
//!   Every change to a pod or NAD (by the test or by a request) moves the
//!   server's `resourceVersion` on and is seen by the watches.
//! - for cluster-scoped objects put in with [`FakeApiServer::put`] (nodes,
//!   custom resources): `GET` of the collection (a list) and of one
//!   object, and `PATCH .../{name}/status` (merge patch of the status
//!   subresource: only `status` changes, and `resourceVersion` moves on)
//!
//! Unknown objects are a 404 `Status`, other paths a 404 too, and every
//! request is recorded. Pods are bound to [`NODE`] unless put in with
//! [`FakeApiServer::add_pod_on`]. [`FakeApiServer::fail_next`] makes the next
//! requests answer with an error code (409 to exercise conflict retries,
//! 503 for an overloaded server, 403 for missing RBAC); [`FakeApiServer::stop`] takes it off the
//! network so clients see "connection refused", like a server that is down.
//!
//! HTTP/1.1 is served by hand, one thread per connection, with keep-alive
//! (as the real server does for `kube`'s pooled connections) and chunked
//! streaming for watches.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One request the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string (`watch=true&resourceVersion=...`), decoded.
    pub query: BTreeMap<String, String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The body.
    pub body: String,
}

#[derive(Debug, Default)]
struct State {
    pods: BTreeMap<(String, String), Value>,
    nads: BTreeMap<(String, String), Value>,
    /// Cluster-scoped objects: collection path, then name.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    resource_version: u64,
    /// Every change to a pod or NAD, in order, for the watches.
    history: Vec<Change>,
    /// Pods made so far, by namespace and name.
    created: BTreeMap<(String, String), u64>,
    /// Events created (`POST .../events`), in order.
    events: Vec<Value>,
    /// (method, path part, code): the next request matching both fails.
    failures: VecDeque<(Option<String>, Option<String>, u16)>,
    log: Vec<Recorded>,
}

/// The node pods are bound to (`spec.nodeName`) unless a test says.
pub const NODE: &str = "plexus-node";

/// What a watch watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watched {
    Pods,
    Nads,
}

/// One change, as a watch streams it.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    what: Watched,
    kind: &'static str,
    object: Value,
}

impl State {
    /// Moves the server's resourceVersion on, stamps `obj` with it and
    /// records the change for the watches.
    fn touch(&mut self, what: Watched, kind: &'static str, obj: &mut Value) {
        self.resource_version += 1;
        obj["metadata"]["resourceVersion"] = self.resource_version.to_string().into();
        self.history.push(Change {
            rv: self.resource_version,
            what,
            kind,
            object: obj.clone(),
        });
    }
}

/// The state and what the connection threads share.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken at every change (watches wait on it).
    changed: Condvar,
    stopped: AtomicBool,
    /// Open connections, shut down by [`FakeApiServer::stop`].
    conns: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake API state")
    }
}

/// The stand-in; stops when dropped.
pub struct FakeApiServer {
    url: String,
    shared: Arc<Shared>,
    listen_fd: RawFd,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

impl FakeApiServer {
    /// Starts on a free loopback port.
    ///
    /// # Panics
    /// When no port can be bound.
    #[must_use]
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("bound address").port();
        let listen_fd = listener.as_raw_fd();
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if shared.stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { break };
                    // Answers go out at once: with Nagle, a small write after
                    // another waits for the client's delayed ACK (40 ms).
                    let _ = conn.set_nodelay(true);
                    if let Ok(c) = conn.try_clone() {
                        shared.conns.lock().expect("connections").push(c);
                    }
                    let shared = shared.clone();
                    std::thread::spawn(move || serve_connection(&shared, conn));
                }
                // The listener closes here: clients get "connection refused".
            })
        };
        Self {
            url: format!("http://127.0.0.1:{port}"),
            shared,
            listen_fd,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes a kubeconfig for this server (no TLS, no credentials).
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn write_kubeconfig(&self, path: &Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: plexus\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    \
             cluster: fake\n    user: plexus\ncurrent-context: fake\n",
            self.url
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    /// Adds (or replaces) a pod with these annotations, bound to [`NODE`];
    /// returns its UID, a new one each time (a pod deleted and created
    /// again under the same name is another pod). The UID names the how
    /// many-th pod of that name this server made, so a stand-in restarted
    /// with the same objects (the API server back with its etcd) gives the
    /// same UIDs.
    pub fn add_pod(&self, namespace: &str, name: &str, annotations: &[(&str, &str)]) -> String {
        self.add_pod_on(NODE, namespace, name, annotations)
    }

    /// [`FakeApiServer::add_pod`] on another node.
    pub fn add_pod_on(
        &self,
        node: &str,
        namespace: &str,
        name: &str,
        annotations: &[(&str, &str)],
    ) -> String {
        let ann: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        self.change(|st| {
            let key = (namespace.to_owned(), name.to_owned());
            let n = {
                let c = st.created.entry(key.clone()).or_default();
                *c += 1;
                *c
            };
            let uid = format!("uid-{namespace}-{name}-{}-{n}", std::process::id());
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "annotations": ann},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Pending"}});
            if let Some(mut old) = st.pods.remove(&key) {
                st.touch(Watched::Pods, "DELETED", &mut old);
            }
            st.touch(Watched::Pods, "ADDED", &mut pod);
            st.pods.insert(key, pod);
            uid
        })
    }

    /// Adds a NetworkAttachmentDefinition; `config` is `spec.config` (`None`
    /// for an object without `spec`).
    pub fn add_nad(&self, namespace: &str, name: &str, config: Option<&str>) {
        self.add_nad_annotated(namespace, name, config, &[]);
    }

    /// [`FakeApiServer::add_nad`] with annotations (e.g.
    /// `k8s.v1.cni.cncf.io/resourceName`).
    pub fn add_nad_annotated(
        &self,
        namespace: &str,
        name: &str,
        config: Option<&str>,
        annotations: &[(&str, &str)],
    ) {
        let ann: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        let mut nad = json!({"apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": namespace, "annotations": ann}});
        if let Some(c) = config {
            nad["spec"] = json!({"config": c});
        }
        self.change(|st| {
            let key = (namespace.to_owned(), name.to_owned());
            let kind = if st.nads.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            st.touch(Watched::Nads, kind, &mut nad);
            st.nads.insert(key, nad);
        });
    }

    /// Creates or replaces a cluster-scoped object in `collection` (its
    /// path: `/api/v1/nodes`, `/apis/plexus.dev/v1alpha1/flowtables`),
    /// named by its `metadata.name`. As `kubectl apply` does, an object
    /// given without `status` keeps the status it had.
    ///
    /// # Panics
    /// When the object has no name.
    pub fn put(&self, collection: &str, mut obj: Value) {
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_owned();
        let mut st = self.lock();
        st.resource_version += 1;
        obj["metadata"]["resourceVersion"] = st.resource_version.to_string().into();
        let objects = st.objects.entry(collection.to_owned()).or_default();
        if obj.get("status").is_none()
            && let Some(status) = objects.get(&name).and_then(|o| o.get("status"))
        {
            obj["status"] = status.clone();
        }
        if obj["metadata"].get("uid").is_none() {
            obj["metadata"]["uid"] = format!("uid-{name}-{}", std::process::id()).into();
        }
        objects.insert(name, obj);
    }

    /// A cluster-scoped object as it is now.
    #[must_use]
    pub fn get(&self, collection: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(collection)
            .and_then(|c| c.get(name))
            .cloned()
    }

    /// Deletes a cluster-scoped object (absent is fine).
    pub fn delete(&self, collection: &str, name: &str) {
        if let Some(c) = self.lock().objects.get_mut(collection) {
            c.remove(name);
        }
    }

    /// A pod's annotation, as last written.
    #[must_use]
    pub fn pod_annotation(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        self.lock()
            .pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .and_then(|p| {
                p["metadata"]["annotations"][key]
                    .as_str()
                    .map(str::to_owned)
            })
    }

    /// The next `codes.len()` requests fail with these HTTP codes, in order.
    pub fn fail_next(&self, codes: &[u16]) {
        self.lock()
            .failures
            .extend(codes.iter().map(|c| (None, None, *c)));
    }

    /// The next `codes.len()` requests whose path contains `part` fail with
    /// these codes, in order; other requests are served.
    pub fn fail_next_path(&self, part: &str, codes: &[u16]) {
        self.lock()
            .failures
            .extend(codes.iter().map(|c| (None, Some(part.to_owned()), *c)));
    }

    /// Forgets every failure not yet served.
    pub fn clear_failures(&self) {
        self.lock().failures.clear();
    }

    /// Deletes a pod (as `kubectl delete pod` once it is gone).
    pub fn remove_pod(&self, namespace: &str, name: &str) {
        self.change(|st| {
            if let Some(mut pod) = st.pods.remove(&(namespace.to_owned(), name.to_owned())) {
                st.touch(Watched::Pods, "DELETED", &mut pod);
            }
        });
    }

    /// Sets (or, with `None`, removes) one annotation of a pod.
    pub fn set_pod_annotation(&self, namespace: &str, name: &str, key: &str, value: Option<&str>) {
        self.change(|st| {
            let key_ = (namespace.to_owned(), name.to_owned());
            if let Some(mut p) = st.pods.remove(&key_) {
                match value {
                    Some(v) => p["metadata"]["annotations"][key] = v.into(),
                    None => {
                        if let Some(a) = p["metadata"]["annotations"].as_object_mut() {
                            a.remove(key);
                        }
                    }
                }
                st.touch(Watched::Pods, "MODIFIED", &mut p);
                st.pods.insert(key_, p);
            }
        });
    }

    /// A pod as it is now.
    #[must_use]
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The next `codes.len()` requests with this method (`"PATCH"`) fail
    /// with these HTTP codes, in order; other requests are served.
    pub fn fail_next_method(&self, method: &str, codes: &[u16]) {
        self.lock()
            .failures
            .extend(codes.iter().map(|c| (Some(method.to_owned()), None, *c)));
    }

    /// The Events created so far (core/v1, as posted).
    #[must_use]
    pub fn events(&self) -> Vec<Value> {
        self.lock().events.clone()
    }

    /// Every request so far.
    #[must_use]
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().log.clone()
    }

    /// Stops serving and closes the listener: clients now get "connection
    /// refused", and open connections (watches, pooled keep-alives) are
    /// cut.
    pub fn stop(&mut self) {
        if self.shared.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        // Linux: shutdown() of a listening socket wakes the blocked
        // accept() and refuses new connections at once, so a client sees
        // "connection refused", not a hang.
        // SAFETY: the fd is the listener the accept thread still owns (it
        // is closed only when that thread ends, joined below).
        unsafe {
            libc::shutdown(self.listen_fd, libc::SHUT_RDWR);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for c in self.shared.conns.lock().expect("connections").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.shared.changed.notify_all();
    }

    /// Runs `f` on the state, then wakes the watches.
    fn change<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let out = f(&mut self.lock());
        self.shared.changed.notify_all();
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.lock()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One parsed HTTP request.
struct HttpRequest {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    content_type: Option<String>,
    body: String,
    close: bool,
}

/// `%XX` decoding of a query value (`+` is a space).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one request; `None` at the end of the connection.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<HttpRequest> {
    let mut line = Vec::new();
    if r.read_until(b'\n', &mut line).ok()? == 0 {
        return None;
    }
    let line = String::from_utf8_lossy(&line).trim().to_owned();
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let url = parts.next()?.to_owned();
    let http10 = parts.next() == Some("HTTP/1.0");
    let (mut length, mut content_type, mut close) = (0usize, None, http10);
    loop {
        let mut h = Vec::new();
        if r.read_until(b'\n', &mut h).ok()? == 0 {
            return None;
        }
        let h = String::from_utf8_lossy(&h).trim().to_owned();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse().ok()?;
        } else if k.eq_ignore_ascii_case("content-type") {
            content_type = Some(v.to_owned());
        } else if k.eq_ignore_ascii_case("connection") {
            close = v.eq_ignore_ascii_case("close");
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).ok()?;
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let query = query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    Some(HttpRequest {
        method,
        path: path.to_owned(),
        query,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
        close,
    })
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    }
}

/// Serves one connection's requests until the client closes it or the
/// server stops.
fn serve_connection(shared: &Shared, conn: TcpStream) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while let Some(req) = read_request(&mut reader) {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        if req.method == "GET"
            && matches!(
                req.query.get("watch").map(String::as_str),
                Some("true" | "1")
            )
        {
            record(shared, &req);
            serve_watch(shared, &mut out, &req);
            return;
        }
        let (code, reply) = handle(shared, &req);
        let body = reply.to_string();
        let answer = format!(
            "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
            reason_phrase(code),
            body.len(),
            if req.close {
                "Connection: close\r\n"
            } else {
                ""
            }
        );
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
        if req.close {
            return;
        }
    }
}

fn record(shared: &Shared, req: &HttpRequest) {
    shared.lock().log.push(Recorded {
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        content_type: req.content_type.clone(),
        body: req.body.clone(),
    });
}

/// What a list or watch path is about, and its node filter.
fn watched(req: &HttpRequest) -> Option<(Watched, Option<String>)> {
    let what = match req.path.trim_end_matches('/') {
        "/api/v1/pods" => Watched::Pods,
        "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions" => Watched::Nads,
        _ => return None,
    };
    let node = req.query.get("fieldSelector").and_then(|f| {
        f.split(',')
            .find_map(|sel| sel.strip_prefix("spec.nodeName="))
            .map(str::to_owned)
    });
    Some((what, node))
}

fn matches(what: Watched, node: Option<&str>, want: Watched, obj: &Value) -> bool {
    what == want && node.is_none_or(|n| obj["spec"]["nodeName"].as_str() == Some(n))
}

/// A watch: every change after the request's `resourceVersion` (all
/// objects as `ADDED` first when it is 0 or absent), one JSON line per
/// chunk, until `timeoutSeconds` or the server stops.
fn serve_watch(shared: &Shared, out: &mut TcpStream, req: &HttpRequest) {
    let Some((what, node)) = watched(req) else {
        let body = status(404, "NotFound", "not watchable in the fake API server").to_string();
        let _ = write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        return;
    };
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(300), Duration::from_secs);
    let deadline = Instant::now() + timeout;
    if out
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .is_err()
    {
        return;
    }
    let since: u64 = req
        .query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut pending: Vec<Value> = Vec::new();
    let mut last = since;
    {
        let st = shared.lock();
        if since == 0 {
            let objects: Vec<&Value> = match what {
                Watched::Pods => st.pods.values().collect(),
                Watched::Nads => st.nads.values().collect(),
            };
            pending.extend(
                objects
                    .into_iter()
                    .filter(|o| matches(what, node.as_deref(), what, o))
                    .map(|o| json!({"type": "ADDED", "object": o})),
            );
            last = st.resource_version;
        }
    }
    loop {
        for ev in pending.drain(..) {
            let line = format!("{ev}\n");
            let chunk = format!("{:x}\r\n{line}\r\n", line.len());
            if out.write_all(chunk.as_bytes()).is_err() {
                return;
            }
        }
        let mut st = shared.lock();
        loop {
            if shared.stopped.load(Ordering::SeqCst) || Instant::now() >= deadline {
                drop(st);
                let _ = out.write_all(b"0\r\n\r\n");
                return;
            }
            pending.extend(
                st.history
                    .iter()
                    .filter(|c| c.rv > last && matches(what, node.as_deref(), c.what, &c.object))
                    .map(|c| json!({"type": c.kind, "object": c.object})),
            );
            last = st.resource_version;
            if !pending.is_empty() {
                break;
            }
            st = shared
                .changed
                .wait_timeout(st, Duration::from_millis(200))
                .expect("fake API state")
                .0;
        }
    }
}

fn handle(shared: &Shared, req: &HttpRequest) -> (u16, Value) {
    let (method, path) = (req.method.as_str(), req.path.as_str());
    let reply = {
        let mut st = shared.lock();
        st.log.push(Recorded {
            method: method.to_owned(),
            path: path.to_owned(),
            query: req.query.clone(),
            content_type: req.content_type.clone(),
            body: req.body.clone(),
        });
        let inject = st.failures.iter().position(|(m, p, _)| {
            m.as_deref().is_none_or(|m| m == method)
                && p.as_deref().is_none_or(|p| path.contains(p))
        });
        if let Some(code) = inject
            .and_then(|i| st.failures.remove(i))
            .map(|(_, _, c)| c)
        {
            let reason = match code {
                403 => "Forbidden",
                404 => "NotFound",
                409 => "Conflict",
                500 => "InternalError",
                _ => "ServiceUnavailable",
            };
            (code, status(code, reason, "injected failure"))
        } else if method == "GET"
            && let Some((what, node)) = watched(req)
        {
            let items: Vec<Value> = match what {
                Watched::Pods => st.pods.values().cloned().collect::<Vec<_>>(),
                Watched::Nads => st.nads.values().cloned().collect::<Vec<_>>(),
            }
            .into_iter()
            .filter(|o| matches(what, node.as_deref(), what, o))
            .collect();
            let (api_version, kind) = match what {
                Watched::Pods => ("v1", "PodList"),
                Watched::Nads => ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinitionList"),
            };
            (
                200,
                json!({"apiVersion": api_version, "kind": kind,
                       "metadata": {"resourceVersion": st.resource_version.to_string()},
                       "items": items}),
            )
        } else {
            route(
                &mut st,
                method,
                path,
                req.content_type.as_deref(),
                &req.body,
            )
        }
    };
    shared.changed.notify_all();
    reply
}

/// `apiVersion` of a collection path: `/api/v1/x` → `v1`, `/apis/g/v/x` →
/// `g/v`.
fn api_version(collection: &str) -> String {
    let parts: Vec<&str> = collection.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", v, ..] => (*v).to_owned(),
        ["apis", g, v, ..] => format!("{g}/{v}"),
        _ => String::new(),
    }
}

/// Requests to the cluster-scoped collections; `None` when `path` is in
/// none of them.
fn route_object(
    st: &mut State,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> Option<(u16, Value)> {
    let (collection, rest) = st.objects.keys().find_map(|c| {
        let rest = path.strip_prefix(c.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then(|| (c.clone(), rest.to_owned()))
    })?;
    let rest: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let resource = collection.rsplit('/').next().unwrap_or_default().to_owned();
    let missing = |name: &str| {
        (
            404,
            status(404, "NotFound", &format!("{resource} \"{name}\" not found")),
        )
    };
    let rv = st.resource_version;
    let objects = st.objects.get_mut(&collection)?;
    Some(match (method, rest.as_slice()) {
        ("GET", [""]) => {
            let items: Vec<Value> = objects.values().cloned().collect();
            let kind = items
                .first()
                .and_then(|o| o["kind"].as_str())
                .map_or_else(|| "List".to_owned(), |k| format!("{k}List"));
            (
                200,
                json!({"apiVersion": api_version(&collection), "kind": kind,
                       "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
            )
        }
        ("GET", [name]) => match objects.get(*name) {
            Some(o) => (200, o.clone()),
            None => missing(name),
        },
        ("PATCH", [name, "status"]) => {
            if content_type != Some("application/merge-patch+json") {
                return Some((
                    415,
                    status(415, "UnsupportedMediaType", "expected a merge patch"),
                ));
            }
            let Ok(patch) = serde_json::from_str::<Value>(body) else {
                return Some((400, status(400, "BadRequest", "patch is not JSON")));
            };
            let Some(obj) = objects.get_mut(*name) else {
                return Some(missing(name));
            };
            // The status subresource: everything but `status` is ignored.
            let mut status_only =
                json!({"status": obj.get("status").cloned().unwrap_or(Value::Null)});
            if let Some(p) = patch.get("status") {
                merge_patch(&mut status_only, &json!({"status": p}));
            }
            match status_only.get("status") {
                Some(s) => obj["status"] = s.clone(),
                None => {
                    obj.as_object_mut().map(|o| o.remove("status"));
                }
            }
            obj["metadata"]["resourceVersion"] = (rv + 1).to_string().into();
            let reply = obj.clone();
            st.resource_version = rv + 1;
            (200, reply)
        }
        _ => (
            405,
            status(405, "MethodNotAllowed", "not served by the fake API server"),
        ),
    })
}

fn route(
    st: &mut State,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Value) {
    if let Some(reply) = route_object(st, method, path, content_type, body) {
        return reply;
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("GET", ["api", "v1", "namespaces", ns, "pods", name]) => {
            match st.pods.get(&((*ns).to_owned(), (*name).to_owned())) {
                Some(p) => (200, p.clone()),
                None => (
                    404,
                    status(404, "NotFound", &format!("pods \"{name}\" not found")),
                ),
            }
        }
        ("PATCH", ["api", "v1", "namespaces", ns, "pods", name, "status"]) => {
            if content_type != Some("application/merge-patch+json") {
                return (
                    415,
                    status(415, "UnsupportedMediaType", "expected a merge patch"),
                );
            }
            let Ok(patch) = serde_json::from_str::<Value>(body) else {
                return (400, status(400, "BadRequest", "patch is not JSON"));
            };
            let key = ((*ns).to_owned(), (*name).to_owned());
            match st.pods.remove(&key) {
                Some(mut p) => {
                    merge_patch(&mut p, &patch);
                    st.touch(Watched::Pods, "MODIFIED", &mut p);
                    let reply = p.clone();
                    st.pods.insert(key, reply.clone());
                    (200, reply)
                }
                None => (
                    404,
                    status(404, "NotFound", &format!("pods \"{name}\" not found")),
                ),
            }
        }
        ("POST", ["api", "v1", "namespaces", ns, "events"]) => {
            let Ok(mut event) = serde_json::from_str::<Value>(body) else {
                return (400, status(400, "BadRequest", "event is not JSON"));
            };
            if event["metadata"]["namespace"]
                .as_str()
                .is_some_and(|n| n != *ns)
            {
                return (400, status(400, "BadRequest", "namespace does not match"));
            }
            st.resource_version += 1;
            event["metadata"]["resourceVersion"] = st.resource_version.to_string().into();
            st.events.push(event.clone());
            (201, event)
        }
        (
            "GET",
            [
                "apis",
                "k8s.cni.cncf.io",
                "v1",
                "namespaces",
                ns,
                "network-attachment-definitions",
                name,
            ],
        ) => match st.nads.get(&((*ns).to_owned(), (*name).to_owned())) {
            Some(n) => (200, n.clone()),
            None => (
                404,
                status(
                    404,
                    "NotFound",
                    &format!("network-attachment-definitions.k8s.cni.cncf.io \"{name}\" not found"),
                ),
            ),
        },
        _ => (
            404,
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn cluster_objects_list_get_and_patch_status_only() {
        let mut st = State::default();
        st.objects
            .insert("/apis/x.dev/v1/things".into(), BTreeMap::new());
        st.objects.get_mut("/apis/x.dev/v1/things").unwrap().insert(
            "a".into(),
            json!({"kind": "Thing", "metadata": {"name": "a"}, "spec": {"n": 1}}),
        );
        let (code, list) = route(&mut st, "GET", "/apis/x.dev/v1/things", None, "");
        assert_eq!((code, list["kind"].as_str()), (200, Some("ThingList")));
        assert_eq!(list["apiVersion"], "x.dev/v1");
        assert_eq!(list["items"][0]["spec"]["n"], 1);
        let patch = r#"{"spec": {"n": 2}, "status": {"nodes": {"n1": {"ok": true}}}}"#;
        let mp = Some("application/merge-patch+json");
        let (code, obj) = route(
            &mut st,
            "PATCH",
            "/apis/x.dev/v1/things/a/status",
            mp,
            patch,
        );
        assert_eq!(code, 200);
        assert_eq!(obj["spec"]["n"], 1, "the status subresource changed spec");
        assert_eq!(obj["status"]["nodes"]["n1"]["ok"], true);
        let gone = r#"{"status": {"nodes": {"n1": null}}}"#;
        route(&mut st, "PATCH", "/apis/x.dev/v1/things/a/status", mp, gone);
        let (_, obj) = route(&mut st, "GET", "/apis/x.dev/v1/things/a", None, "");
        assert_eq!(obj["status"], json!({"nodes": {}}));
        let (code, _) = route(&mut st, "PATCH", "/apis/x.dev/v1/things/b/status", mp, gone);
        assert_eq!(code, 404);
    }
}
