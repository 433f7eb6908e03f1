//! Where pods and NADs come from, and where network-status goes: the
//! Kubernetes API server ([`KubeCluster`], the `kube` crate) or, without
//! one, a directory of NAD files and the runtime's own arguments
//! ([`Standalone`]).
//!
//! This is the only module that talks to the API server. It must not decide
//! anything about networks: it fetches and stores, with bounded retries.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use plexus_cni::CniError;
use plexus_cni::error::code;
use serde_json::json;

use crate::nad::{self, Nad};
use crate::state::write_private;

/// The pod annotation plexus writes.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

/// A failure reaching or using the cluster's data.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API server did not answer usefully after every retry.
    #[error("API server unreachable after {attempts} attempts: {last}")]
    Unreachable {
        /// How many requests were made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The API server answered with an error that retrying cannot fix.
    #[error("API server refused {what}: {message}")]
    Refused {
        /// The request.
        what: String,
        /// The server's message.
        message: String,
    },
    /// Local configuration (kubeconfig, NAD directory) is unusable.
    #[error("{0}")]
    Config(String),
}

impl ClusterError {
    /// Whether it may go away by itself (the server did not answer, or
    /// answered 5xx/429): a DEL then asks the runtime to try again. A
    /// refusal (403, 404 on a GET that must exist) or an unusable
    /// kubeconfig stays until someone changes something.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

impl From<ClusterError> for CniError {
    fn from(e: ClusterError) -> Self {
        let c = match e {
            ClusterError::Unreachable { .. } => code::TRY_AGAIN_LATER,
            ClusterError::Refused { .. } => code::IO_FAILURE,
            ClusterError::Config(_) => code::INVALID_NETWORK_CONFIG,
        };
        CniError::new(c, e.to_string())
    }
}

/// The type of a Kubernetes Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `Normal`.
    Normal,
    /// `Warning`.
    Warning,
}

/// The pod a CNI request is for, from `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodRef {
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_NAME`.
    pub name: String,
    /// `K8S_POD_UID`, when the runtime sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What plexus needs of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Its metadata.uid.
    pub uid: Option<String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Pods, NADs and network-status.
pub trait Cluster {
    /// The pod, or `None` when it does not exist.
    ///
    /// # Errors
    /// When the source cannot be read.
    fn pod(&self, pod: &PodRef) -> Result<Option<PodInfo>, ClusterError>;

    /// Whether this source holds NADs at all. Without one (standalone mode
    /// with no `nadDir`), a network name is looked up in `confDir`, as the
    /// spec does for a NAD with an empty spec.
    fn has_nads(&self) -> bool {
        true
    }

    /// A NAD, or `None` when it does not exist.
    ///
    /// # Errors
    /// When the source cannot be read.
    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, ClusterError>;

    /// A NAD that plexus's own config names (`clusterNetwork`,
    /// `defaultNetworks`), which falls back to a file of that name when
    /// absent: the node's cache, once synced, answers for good (a NAD the
    /// cache has not seen is not asked for at every ADD).
    ///
    /// # Errors
    /// When the source cannot be read.
    fn config_nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, ClusterError> {
        self.nad(namespace, name)
    }

    /// Records a Kubernetes Event about the pod, best effort: a failure is
    /// logged and never fails the CNI call. Nothing without an API server.
    fn event(&self, _pod: &PodRef, _kind: EventKind, _reason: &str, _message: &str) {}

    /// Records the pod's network-status (a JSON list).
    ///
    /// # Errors
    /// When it cannot be written.
    fn set_network_status(
        &self,
        pod: &PodRef,
        container_id: &str,
        status: &str,
    ) -> Result<(), ClusterError>;
}

/// Standalone mode: NADs from a directory, the pod's annotations from the
/// runtime (`CNI_ARGS` or the `io.kubernetes.cri.pod-annotations`
/// capability), network-status to `<statusDir>/<containerID>.json`.
#[derive(Debug)]
pub struct Standalone {
    nads: Option<Vec<Nad>>,
    annotations: BTreeMap<String, String>,
    status_dir: Option<PathBuf>,
}

impl Standalone {
    /// Loads `nad_dir` (when given) and takes the pod's annotations as the
    /// runtime passed them.
    ///
    /// # Errors
    /// When the NAD directory cannot be read or holds a bad file.
    pub fn new(
        nad_dir: Option<&Path>,
        annotations: BTreeMap<String, String>,
        status_dir: Option<PathBuf>,
    ) -> Result<Self, ClusterError> {
        let nads = nad_dir
            .map(|d| nad::load_dir(d).map_err(ClusterError::Config))
            .transpose()?;
        Ok(Self {
            nads,
            annotations,
            status_dir,
        })
    }

    fn status_path(&self, container_id: &str) -> Option<PathBuf> {
        self.status_dir
            .as_ref()
            .map(|d| status_file(d, container_id))
    }
}

impl Cluster for Standalone {
    fn pod(&self, _pod: &PodRef) -> Result<Option<PodInfo>, ClusterError> {
        Ok(Some(PodInfo {
            uid: None,
            annotations: self.annotations.clone(),
        }))
    }

    fn has_nads(&self) -> bool {
        self.nads.is_some()
    }

    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, ClusterError> {
        Ok(self
            .nads
            .iter()
            .flatten()
            .find(|n| n.namespace == namespace && n.name == name)
            .cloned())
    }

    fn set_network_status(
        &self,
        _pod: &PodRef,
        container_id: &str,
        status: &str,
    ) -> Result<(), ClusterError> {
        match self.status_path(container_id) {
            Some(path) => write_private(&path, status.as_bytes(), false)
                .map_err(|e| ClusterError::Config(format!("{}: {e}", path.display()))),
            None => Ok(()),
        }
    }
}

/// The standalone network-status file of a container.
#[must_use]
pub fn status_file(status_dir: &Path, container_id: &str) -> PathBuf {
    status_dir.join(format!("{container_id}.json"))
}

/// Removes a standalone network-status file (on DEL; the API server's
/// annotation goes with the pod object instead). Absent is fine.
///
/// # Errors
/// On I/O failure other than "not found".
pub fn remove_status_file(status_dir: &Path, container_id: &str) -> std::io::Result<()> {
    match fs::remove_file(status_file(status_dir, container_id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// How often a request is tried before giving up, and the first pause
/// between tries (doubled each time): about 2.5 s of pauses, as Multus'
/// GetPod. A request with its retries takes at most [`BUDGET`], a try in
/// flight included (kube's own retry layer is off: retries are counted
/// here only), so a hung server costs one CNI call seconds, not minutes.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(150);
/// The most one request may take, with its retries.
pub const BUDGET: Duration = Duration::from_secs(10);

/// The API server, through the `kube` crate: on a single-threaded runtime
/// of its own in a CNI call (plexus is a short-lived process; nothing here
/// outlives the call), or in the daemon on the daemon's runtime, with the
/// client it keeps per cluster.
pub struct KubeCluster {
    rt: Rt,
    client: Client,
    /// The most every request of this client together may take, counted
    /// from the first one (DEL: one bound for the pod and all its NADs).
    total: Option<Duration>,
    first_request: std::cell::OnceCell<Instant>,
    /// The daemon's informer caches for this cluster (thick mode only).
    cache: Option<std::sync::Arc<crate::informer::Informers>>,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster").finish_non_exhaustive()
    }
}

/// Where a [`KubeCluster`]'s requests run.
enum Rt {
    /// Its own single-threaded runtime (a CNI call of its own).
    Own(tokio::runtime::Runtime),
    /// The daemon's runtime, whose client it shares.
    Daemon(tokio::runtime::Handle),
}

impl Rt {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match self {
            Self::Own(rt) => rt.block_on(f),
            Self::Daemon(h) => h.block_on(f),
        }
    }
}

/// Whether an API error may go away by itself.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 409 || s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The client config from `kubeconfig`, or the in-cluster config when
/// `None`, with plexus's timeouts and no retries of kube's own.
///
/// # Errors
/// When the kubeconfig cannot be read or names no usable cluster.
pub async fn kube_config(kubeconfig: Option<&Path>) -> Result<Config, ClusterError> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| ClusterError::Config(format!("kubeconfig {}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| ClusterError::Config(format!("kubeconfig {}: {e}", path.display())))?
        }
        None => Config::incluster()
            .map_err(|e| ClusterError::Config(format!("in-cluster config: {e}")))?,
    };
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(5));
    config.write_timeout = Some(Duration::from_secs(5));
    // kube retries 429/503/504 by itself, under our retries: a DEL
    // against a 503ing server took minutes. Only `retry` below retries.
    config.default_retry = false;
    Ok(config)
}

impl KubeCluster {
    /// A client from `kubeconfig`, or the in-cluster config when `None`.
    ///
    /// # Errors
    /// When the kubeconfig cannot be read or names no usable cluster.
    pub fn new(kubeconfig: Option<&Path>) -> Result<Self, ClusterError> {
        // In the daemon: its runtime, and one client per cluster for all
        // the calls it serves.
        if let (Some(cache), Some(handle)) = (
            crate::informer::for_kubeconfig(kubeconfig),
            crate::informer::handle(),
        ) {
            return Ok(Self {
                client: cache.request_client(&handle)?,
                rt: Rt::Daemon(handle),
                total: None,
                first_request: std::cell::OnceCell::new(),
                cache: Some(cache),
            });
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Config(format!("tokio runtime: {e}")))?;
        let config = rt.block_on(kube_config(kubeconfig))?;
        let client = {
            let _guard = rt.enter();
            Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))?
        };
        Ok(Self {
            rt: Rt::Own(rt),
            client,
            total: None,
            first_request: std::cell::OnceCell::new(),
            cache: None,
        })
    }

    /// Bounds every request of this client together: none starts, and none
    /// in flight goes on, later than `total` after the first.
    #[must_use]
    pub fn with_total(mut self, total: Duration) -> Self {
        self.total = Some(total);
        self
    }

    /// Runs `op` until it succeeds, fails for good, runs out of tries or of
    /// time (its own [`BUDGET`], and the client's total).
    fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let now = Instant::now();
        let first = *self.first_request.get_or_init(|| now);
        let end = match self.total {
            Some(t) => (now + BUDGET).min(first + t),
            None => now + BUDGET,
        };
        let mut pause = FIRST_BACKOFF;
        let mut last = String::from("no time left");
        let mut attempts = 0;
        for attempt in 1..=ATTEMPTS {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            attempts = attempt;
            // The timer is made inside the runtime (it needs its clock).
            let attempt_op = op();
            let answer = self
                .rt
                .block_on(async move { tokio::time::timeout(left, attempt_op).await });
            if let Some(m) = crate::metrics::get() {
                let verb = what.split_whitespace().next().unwrap_or("?");
                let result = match &answer {
                    Ok(Ok(_)) => "ok",
                    Err(_) => "timeout",
                    Ok(Err(e)) if transient(e) => "retried",
                    Ok(Err(_)) => "refused",
                };
                m.api(verb, result);
            }
            match answer {
                Ok(Ok(v)) => return Ok(v),
                Err(_) => {
                    last = format!("no answer within {:.1} s", left.as_secs_f64());
                    break;
                }
                Ok(Err(e)) if transient(&e) => {
                    tracing::debug!(what, attempt, error = %e, "API request failed; retrying");
                    last = e.to_string();
                    if attempt < ATTEMPTS {
                        std::thread::sleep(
                            pause.min(end.saturating_duration_since(Instant::now())),
                        );
                        pause *= 2;
                    }
                }
                Ok(Err(e)) => {
                    return Err(ClusterError::Refused {
                        what: what.to_owned(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Err(ClusterError::Unreachable {
            attempts,
            last: format!("{what}: {last}"),
        })
    }
}

/// The most an Event may cost a CNI call.
const EVENT_BUDGET: Duration = Duration::from_secs(2);

fn event_resource() -> ApiResource {
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "Event".into(),
        plural: "events".into(),
    }
}

pub(crate) fn nad_resource() -> ApiResource {
    ApiResource {
        group: "k8s.cni.cncf.io".into(),
        version: "v1".into(),
        api_version: "k8s.cni.cncf.io/v1".into(),
        kind: "NetworkAttachmentDefinition".into(),
        plural: "network-attachment-definitions".into(),
    }
}

/// Posts an Event, bounded by [`EVENT_BUDGET`]; failures are logged.
async fn post_event(api: Api<DynamicObject>, obj: DynamicObject, pod: &PodRef, reason: &str) {
    let sent = tokio::time::timeout(
        EVENT_BUDGET,
        api.create(&kube::api::PostParams::default(), &obj),
    )
    .await;
    if let Some(m) = crate::metrics::get() {
        m.api(
            "POST",
            if matches!(sent, Ok(Ok(_))) {
                "ok"
            } else {
                "error"
            },
        );
    }
    match sent {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(pod = %pod, reason, error = %e, "event not recorded"),
        Err(_) => tracing::warn!(pod = %pod, reason, "event not recorded: no answer in time"),
    }
}

impl Cluster for KubeCluster {
    fn pod(&self, pod: &PodRef) -> Result<Option<PodInfo>, ClusterError> {
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.pod(pod)) {
            return Ok(Some(hit));
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let found = self.retry(&format!("GET pod {pod}"), || {
            let api = api.clone();
            let name = pod.name.clone();
            async move { api.get_opt(&name).await }
        })?;
        Ok(found.map(|p| PodInfo {
            uid: p.metadata.uid,
            annotations: p.metadata.annotations.unwrap_or_default(),
        }))
    }

    fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, ClusterError> {
        if let Some(cache) = &self.cache
            && let Some(hit) = cache.nad(namespace, name)?
        {
            return Ok(Some(hit));
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &nad_resource());
        let what = format!("GET network-attachment-definition {namespace}/{name}");
        let found = self.retry(&what, || {
            let api = api.clone();
            let name = name.to_owned();
            async move { api.get_opt(&name).await }
        })?;
        found
            .map(|obj| {
                let value = serde_json::to_value(&obj).map_err(|e| ClusterError::Refused {
                    what: what.clone(),
                    message: e.to_string(),
                })?;
                Nad::from_object(&value, namespace).map_err(|message| ClusterError::Refused {
                    what: what.clone(),
                    message,
                })
            })
            .transpose()
    }

    fn config_nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, ClusterError> {
        match &self.cache {
            Some(cache) if cache.nads_synced() => cache.nad(namespace, name),
            _ => self.nad(namespace, name),
        }
    }

    fn event(&self, pod: &PodRef, kind: EventKind, reason: &str, message: &str) {
        // A core/v1 Event, as Multus records them (`kubectl describe pod`
        // shows them). One try, bounded: an Event is worth less than the
        // pod's start time.
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let name = format!(
            "{}.{:x}",
            pod.name,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": pod.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace,
                               "name": pod.name, "uid": pod.uid},
            "reason": reason, "message": message,
            "type": match kind { EventKind::Normal => "Normal", EventKind::Warning => "Warning" },
            "source": {"component": "plexus"},
            "reportingComponent": "plexus",
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        });
        let obj: DynamicObject = match serde_json::from_value(event) {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(error = %e, "event not built");
                return;
            }
        };
        // In the daemon, the Event is posted after the answer, on the
        // daemon's own client: it never delays the pod.
        if let Some(client) = self.cache.as_ref().and_then(|c| c.client())
            && let Some(handle) = crate::informer::handle()
        {
            let api = Api::namespaced_with(client, &pod.namespace, &event_resource());
            let (pod, reason) = (pod.clone(), reason.to_owned());
            handle.spawn(async move { post_event(api, obj, &pod, &reason).await });
            return;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &pod.namespace, &event_resource());
        self.rt.block_on(post_event(api, obj, pod, reason));
    }

    fn set_network_status(
        &self,
        pod: &PodRef,
        _container_id: &str,
        status: &str,
    ) -> Result<(), ClusterError> {
        // A merge patch of one annotation through pods/status: the
        // subresource the kubelet's RBAC grants, and no read-modify-write
        // race with other writers of the pod. 409s are retried like 5xx.
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let patch = json!({"metadata": {"annotations": {NETWORK_STATUS_ANNOTATION: status}}});
        let result = self.retry(&format!("PATCH pod {pod} status"), || {
            let api = api.clone();
            let name = pod.name.clone();
            let patch = patch.clone();
            async move {
                match api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if not_found(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            }
        })?;
        if !result {
            tracing::warn!(pod = %pod, "pod is gone; network-status not written");
        }
        Ok(())
    }
}
