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
//! - for cluster-scoped objects put in with [`FakeApiServer::put`] (nodes,
//!   custom resources): `GET` of the collection (a list) and of one
//!   object, and `PATCH .../{name}/status` (merge patch of the status
//!   subresource: only `status` changes, and `resourceVersion` moves on)
//!
//! Unknown objects are a 404 `Status`, other paths a 404 too, and every
//! request is recorded. [`FakeApiServer::fail_next`] makes the next
//! requests answer with an error code (409 to exercise conflict retries,
//! 503 for an overloaded server, 403 for missing RBAC); [`FakeApiServer::stop`] takes it off the
//! network so clients see "connection refused", like a server that is down.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

/// One request the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
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
    /// Events created (`POST .../events`), in order.
    events: Vec<Value>,
    /// (method, path part, code): the next request matching both fails.
    failures: VecDeque<(Option<String>, Option<String>, u16)>,
    log: Vec<Recorded>,
}

/// The stand-in; stops when dropped.
pub struct FakeApiServer {
    url: String,
    state: Arc<Mutex<State>>,
    server: Option<Arc<tiny_http::Server>>,
    listen_fd: RawFd,
    stopped: Arc<AtomicBool>,
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
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("bound address").port();
        let listen_fd = listener.as_raw_fd();
        let server = Arc::new(
            tiny_http::Server::from_listener(listener, None).expect("serve on the listener"),
        );
        let state = Arc::new(Mutex::new(State::default()));
        let stopped = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, state, stopped) = (server.clone(), state.clone(), stopped.clone());
            std::thread::spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    match server.recv_timeout(Duration::from_millis(50)) {
                        Ok(Some(req)) => handle(&state, req),
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
            })
        };
        Self {
            url: format!("http://127.0.0.1:{port}"),
            state,
            server: Some(server),
            listen_fd,
            stopped,
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

    /// Adds (or replaces) a pod with these annotations; returns its UID,
    /// a new one each time (a pod deleted and created again under the same
    /// name is another pod).
    pub fn add_pod(&self, namespace: &str, name: &str, annotations: &[(&str, &str)]) -> String {
        let n = {
            let mut st = self.lock();
            st.resource_version += 1;
            st.resource_version
        };
        let uid = format!("uid-{namespace}-{name}-{}-{n}", std::process::id());
        let ann: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid,
                         "resourceVersion": "1", "annotations": ann},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Pending"}});
        self.lock()
            .pods
            .insert((namespace.to_owned(), name.to_owned()), pod);
        uid
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
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1",
                         "annotations": ann}});
        if let Some(c) = config {
            nad["spec"] = json!({"config": c});
        }
        self.lock()
            .nads
            .insert((namespace.to_owned(), name.to_owned()), nad);
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
        self.lock()
            .pods
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Sets (or, with `None`, removes) one annotation of a pod.
    pub fn set_pod_annotation(&self, namespace: &str, name: &str, key: &str, value: Option<&str>) {
        let mut st = self.lock();
        if let Some(p) = st.pods.get_mut(&(namespace.to_owned(), name.to_owned())) {
            match value {
                Some(v) => p["metadata"]["annotations"][key] = v.into(),
                None => {
                    if let Some(a) = p["metadata"]["annotations"].as_object_mut() {
                        a.remove(key);
                    }
                }
            }
        }
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
    /// refused".
    pub fn stop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(server) = self.server.take() {
            // Linux: shutdown() of a listening socket wakes tiny_http's
            // blocked accept() and refuses new connections at once, so a
            // client sees "connection refused", not a hang.
            // SAFETY: the fd is the listener tiny_http still owns (it is
            // closed only when `server` drops below).
            unsafe {
                libc::shutdown(self.listen_fd, libc::SHUT_RDWR);
            }
            server.unblock();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
            // The last reference: dropping it closes the listening socket.
            drop(server);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake API state")
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn handle(state: &Mutex<State>, mut req: tiny_http::Request) {
    let mut body = String::new();
    let _ = req.as_reader().read_to_string(&mut body);
    let method = req.method().as_str().to_owned();
    let path = req.url().split('?').next().unwrap_or_default().to_owned();
    let content_type = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Content-Type"))
        .map(|h| h.value.as_str().to_owned());
    let (code, reply) = {
        let mut st = state.lock().expect("fake API state");
        st.log.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
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
        } else {
            route(&mut st, &method, &path, content_type.as_deref(), &body)
        }
    };
    let header =
        tiny_http::Header::from_bytes("Content-Type", "application/json").expect("valid header");
    let _ = req.respond(
        tiny_http::Response::from_string(reply.to_string())
            .with_status_code(code)
            .with_header(header),
    );
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
            match st.pods.get_mut(&((*ns).to_owned(), (*name).to_owned())) {
                Some(p) => {
                    merge_patch(p, &patch);
                    (200, p.clone())
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
