//! Thick mode's informer caches: the pods of this node and every NAD,
//! kept by kube-rs reflectors (a LIST, then a WATCH from its
//! resourceVersion, resumed or re-listed by the watcher when it breaks).
//!
//! Only `plexus daemon` turns them on ([`enable`]). A request's
//! [`crate::cluster::KubeCluster`] then reads the pod and its NADs here and
//! falls back to a GET when the cache cannot answer: not synced yet, the
//! object not (yet) seen, or a pod whose UID is not the one the runtime
//! names (a pod deleted and created again under its name, not yet seen).
//! A cached object can lag the API server by the watch's latency, as
//! Multus thick's informers do: a NAD edited a moment before an ADD may be
//! read as it was.
//!
//! One set of informers per kubeconfig (requests name theirs; the daemon
//! config's `kubeconfig` is started at boot), all on the daemon's runtime.
//! The pods are those with `spec.nodeName` = the node name (`--node-name`,
//! or `NODE_NAME` / `MULTUS_NODE_NAME` from the DaemonSet's downward API);
//! without one, pods are always read with a GET.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};

use crate::cluster::{ClusterError, PodInfo, PodRef};
use crate::nad::Nad;

/// What a pod watch event means to the daemon (hot-plug hooks in here).
pub type PodHook = Arc<dyn Fn(&Pod) + Send + Sync>;

/// The caches of one cluster (one kubeconfig).
pub struct Informers {
    kubeconfig: Option<PathBuf>,
    client: OnceLock<kube::Client>,
    /// The client of the CNI calls' own requests (status patches, GETs on
    /// a miss): the CNI timeouts, and one connection pool for the daemon's
    /// life instead of a client, runtime and connection per call.
    requests: OnceLock<kube::Client>,
    pods: Option<Store<Pod>>,
    nads: Store<DynamicObject>,
    pods_synced: Arc<AtomicBool>,
    nads_synced: Arc<AtomicBool>,
}

impl std::fmt::Debug for Informers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informers")
            .field("kubeconfig", &self.kubeconfig)
            .field("synced", &self.synced())
            .finish_non_exhaustive()
    }
}

/// A kubeconfig's path (`None`: in-cluster) and contents.
type ClusterKey = (Option<PathBuf>, Vec<u8>);

struct Registry {
    handle: tokio::runtime::Handle,
    node: Option<String>,
    /// By kubeconfig path and contents (a rewritten kubeconfig may name
    /// another server).
    started: Mutex<BTreeMap<ClusterKey, Arc<Informers>>>,
    on_pod: Mutex<Option<PodHook>>,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// Turns the caches on for this process: informers run on `handle`, pods
/// are those of `node`.
pub fn enable(handle: tokio::runtime::Handle, node: Option<String>) {
    if node.is_none() {
        tracing::warn!(
            "no node name (--node-name, NODE_NAME): pods are read from the API server at every ADD"
        );
    }
    let _ = REGISTRY.set(Registry {
        handle,
        node,
        started: Mutex::new(BTreeMap::new()),
        on_pod: Mutex::new(None),
    });
}

/// Calls `hook` for every pod the pod informer sees added or changed.
pub fn on_pod(hook: PodHook) {
    if let Some(r) = REGISTRY.get()
        && let Ok(mut h) = r.on_pod.lock()
    {
        *h = Some(hook);
    }
}

/// The caches for `kubeconfig` (`None`: in-cluster), started on first
/// use; `None` when caches are off (thin mode).
pub fn for_kubeconfig(kubeconfig: Option<&Path>) -> Option<Arc<Informers>> {
    let r = REGISTRY.get()?;
    let mut started = r.started.lock().ok()?;
    let contents = kubeconfig
        .and_then(|p| std::fs::read(p).ok())
        .unwrap_or_default();
    let key = (kubeconfig.map(Path::to_path_buf), contents);
    if let Some(i) = started.get(&key) {
        return Some(Arc::clone(i));
    }
    let i = Informers::start(r, key.0.clone());
    started.insert(key, Arc::clone(&i));
    Some(i)
}

/// The daemon's runtime, when caches are on.
pub fn handle() -> Option<tokio::runtime::Handle> {
    REGISTRY.get().map(|r| r.handle.clone())
}

/// Whether every cache started so far has synced (`/readyz`).
pub fn ready() -> bool {
    REGISTRY.get().is_none_or(|r| {
        r.started
            .lock()
            .map(|s| s.values().all(|i| i.synced()))
            .unwrap_or(false)
    })
}

fn nad_resource() -> kube::api::ApiResource {
    crate::cluster::nad_resource()
}

impl Informers {
    fn start(r: &Registry, kubeconfig: Option<PathBuf>) -> Arc<Self> {
        let pod_writer = r
            .node
            .as_ref()
            .map(|_| reflector::store::Writer::<Pod>::default());
        let nad_writer = reflector::store::Writer::<DynamicObject>::new(nad_resource());
        let me = Arc::new(Self {
            kubeconfig: kubeconfig.clone(),
            client: OnceLock::new(),
            requests: OnceLock::new(),
            pods: pod_writer.as_ref().map(reflector::store::Writer::as_reader),
            nads: nad_writer.as_reader(),
            pods_synced: Arc::new(AtomicBool::new(pod_writer.is_none())),
            nads_synced: Arc::new(AtomicBool::new(false)),
        });
        let node = r.node.clone();
        let this = Arc::clone(&me);
        r.handle.spawn(async move {
            let client = match client(kubeconfig.as_deref()).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "informers not started: requests read the API server");
                    return;
                }
            };
            let _ = this.client.set(client.clone());
            let nads: Api<DynamicObject> = Api::all_with(client.clone(), &nad_resource());
            tokio::spawn(run(
                "network-attachment-definitions",
                watcher(nads, watcher::Config::default()),
                nad_writer,
                Arc::clone(&this.nads_synced),
                false,
            ));
            if let (Some(node), Some(w)) = (node, pod_writer) {
                let pods: Api<Pod> = Api::all(client);
                let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
                tokio::spawn(run(
                    "pods",
                    watcher(pods, cfg),
                    w,
                    Arc::clone(&this.pods_synced),
                    true,
                ));
            }
        });
        me
    }

    /// Whether both caches have listed once.
    #[must_use]
    pub fn synced(&self) -> bool {
        self.pods_synced.load(Ordering::Acquire) && self.nads_synced.load(Ordering::Acquire)
    }

    /// Whether the NAD cache has listed once.
    #[must_use]
    pub fn nads_synced(&self) -> bool {
        self.nads_synced.load(Ordering::Acquire)
    }

    /// The daemon's client for this cluster, once built.
    #[must_use]
    pub fn client(&self) -> Option<kube::Client> {
        self.client.get().cloned()
    }

    /// The client for the CNI calls' requests to this cluster, made on the
    /// daemon's runtime `handle` the first time (from a blocking thread).
    ///
    /// # Errors
    /// The kubeconfig cannot be read or names no usable cluster.
    pub fn request_client(
        &self,
        handle: &tokio::runtime::Handle,
    ) -> Result<kube::Client, ClusterError> {
        if let Some(c) = self.requests.get() {
            return Ok(c.clone());
        }
        let config = handle.block_on(crate::cluster::kube_config(self.kubeconfig.as_deref()))?;
        let _guard = handle.enter();
        let client =
            kube::Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))?;
        Ok(self.requests.get_or_init(|| client).clone())
    }

    /// The pod from the cache: `None` when the cache cannot say (then a
    /// GET decides), including a cached pod whose UID is not the one
    /// the runtime names.
    #[must_use]
    pub fn pod(&self, pod: &PodRef) -> Option<PodInfo> {
        let hit = self.peek(pod);
        lookup("pods", hit.is_some());
        hit
    }

    /// [`Self::pod`] for the daemon's own bookkeeping: not counted as a
    /// lookup in the metrics.
    #[must_use]
    pub fn peek(&self, pod: &PodRef) -> Option<PodInfo> {
        let store = self.pods.as_ref()?;
        let hit = self
            .pods_synced
            .load(Ordering::Acquire)
            .then(|| store.get(&ObjectRef::new(&pod.name).within(&pod.namespace)))
            .flatten()
            .filter(|p| match (&pod.uid, &p.metadata.uid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            });
        hit.map(|p| PodInfo {
            uid: p.metadata.uid.clone(),
            annotations: p.metadata.annotations.clone().unwrap_or_default(),
        })
    }

    /// The NAD from the cache; `None` when the cache cannot say.
    ///
    /// # Errors
    /// The cached object is not a valid NAD.
    pub fn nad(&self, namespace: &str, name: &str) -> Result<Option<Nad>, ClusterError> {
        let hit = self
            .nads_synced
            .load(Ordering::Acquire)
            .then(|| {
                self.nads
                    .get(&ObjectRef::new_with(name, nad_resource()).within(namespace))
            })
            .flatten();
        lookup("network-attachment-definitions", hit.is_some());
        hit.map(|obj| {
            let what = format!("network-attachment-definition {namespace}/{name} (cached)");
            let value = serde_json::to_value(&*obj).map_err(|e| ClusterError::Refused {
                what: what.clone(),
                message: e.to_string(),
            })?;
            Nad::from_object(&value, namespace)
                .map_err(|message| ClusterError::Refused { what, message })
        })
        .transpose()
    }
}

fn lookup(resource: &str, hit: bool) {
    if let Some(m) = crate::metrics::get() {
        m.informer_lookup(resource, if hit { "hit" } else { "miss" });
    }
}

/// A client for `kubeconfig` (`None`: in-cluster).
///
/// # Errors
/// The kubeconfig cannot be read or names no usable cluster.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClusterError> {
    let mut config = crate::cluster::kube_config(kubeconfig).await?;
    // A watch waits for events: kube's own default, above the server's
    // watch timeout, not the CNI call's 5 s.
    config.read_timeout = Some(std::time::Duration::from_secs(295));
    kube::Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))
}

/// Feeds one watcher into its store until the daemon stops; marks it
/// synced after its first full list. With `pods`, applied objects go to
/// the pod hook.
async fn run<K>(
    resource: &'static str,
    stream: impl futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    writer: reflector::store::Writer<K>,
    synced: Arc<AtomicBool>,
    pods: bool,
) where
    K: reflector::Lookup + Clone + Send + Sync + 'static,
    <K as reflector::Lookup>::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let mut events = Box::pin(reflector::reflector(writer, stream).default_backoff());
    while let Some(ev) = events.next().await {
        match ev {
            Ok(ev) => {
                if let Some(m) = crate::metrics::get() {
                    m.informer_event(resource);
                }
                match &ev {
                    watcher::Event::InitDone => {
                        if !synced.swap(true, Ordering::AcqRel) {
                            tracing::info!(resource, "informer synced");
                        }
                        if let Some(m) = crate::metrics::get() {
                            m.informer_synced(resource);
                        }
                    }
                    watcher::Event::Apply(obj) if pods => {
                        if let Some(pod) = (obj as &dyn std::any::Any).downcast_ref::<Pod>() {
                            pod_changed(pod);
                        }
                    }
                    _ => {}
                }
            }
            Err(e) => tracing::warn!(resource, error = %e, "watch failed; retrying"),
        }
    }
}

fn pod_changed(pod: &Pod) {
    let hook = REGISTRY
        .get()
        .and_then(|r| r.on_pod.lock().ok().and_then(|h| h.clone()));
    if let Some(hook) = hook {
        hook(pod);
    }
}
