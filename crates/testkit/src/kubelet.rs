//! Kubelet stand-ins for its gRPC APIs, on real unix sockets with the
//! services generated from the published protos, so the code under test
//! talks to them unchanged: [`FakeKubelet`] serves PodResources,
//! [`FakeDeviceManager`] plays the device manager against device plugins.
//!
//! `List` answers with the pods the test put in, `Get` finds one of them,
//! `GetAllocatableResources` is `UNIMPLEMENTED` (nothing here needs it).
//! Every `List` is counted. The server stops when dropped, and removes its
//! socket.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use plexus_kubelet_api::podresources::v1::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use plexus_kubelet_api::podresources::v1::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, ContainerDevices,
    ContainerResources, GetPodResourcesRequest, GetPodResourcesResponse, ListPodResourcesRequest,
    ListPodResourcesResponse, NumaNode, PodResources, TopologyInfo,
};
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
struct State {
    pods: Vec<PodResources>,
    lists: usize,
}

#[derive(Debug, Clone)]
struct Service(Arc<Mutex<State>>);

#[tonic::async_trait]
impl PodResourcesLister for Service {
    async fn list(
        &self,
        _: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        let mut s = self.0.lock().unwrap();
        s.lists += 1;
        Ok(Response::new(ListPodResourcesResponse {
            pod_resources: s.pods.clone(),
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        Err(Status::unimplemented("not served by the stand-in"))
    }

    async fn get(
        &self,
        req: Request<GetPodResourcesRequest>,
    ) -> Result<Response<GetPodResourcesResponse>, Status> {
        let req = req.into_inner();
        let s = self.0.lock().unwrap();
        s.pods
            .iter()
            .find(|p| p.namespace == req.pod_namespace && p.name == req.pod_name)
            .map(|p| {
                Response::new(GetPodResourcesResponse {
                    pod_resources: Some(p.clone()),
                })
            })
            .ok_or_else(|| Status::not_found("pod not found"))
    }
}

/// The stand-in; stops when dropped.
#[derive(Debug)]
pub struct FakeKubelet {
    socket: PathBuf,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeKubelet {
    /// Serves PodResources on `socket` (which must not exist yet); the
    /// socket accepts connections when this returns.
    ///
    /// # Panics
    /// When the socket cannot be bound.
    #[must_use]
    pub fn start(socket: &Path) -> Self {
        let listener = std::os::unix::net::UnixListener::bind(socket)
            .unwrap_or_else(|e| panic!("bind {}: {e}", socket.display()));
        listener.set_nonblocking(true).expect("nonblocking");
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let service = Service(state.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).expect("listener");
                tonic::transport::Server::builder()
                    .add_service(PodResourcesListerServer::new(service))
                    .serve_with_incoming_shutdown(plexus_kubelet_api::incoming(listener), async {
                        let _ = rx.await;
                    })
                    .await
                    .expect("PodResources server");
            });
        });
        Self {
            socket: socket.to_owned(),
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The socket it serves on.
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Adds a pod with devices: `(container, resource, device IDs)` in the
    /// order the kubelet would list them; entries of one container are
    /// grouped under it, containers keep the order they first appear in.
    /// Each device entry reports NUMA node 0.
    pub fn add_pod(&self, namespace: &str, name: &str, devices: &[(&str, &str, &[&str])]) {
        let mut containers: Vec<ContainerResources> = Vec::new();
        for (container, resource, ids) in devices {
            let entry = ContainerDevices {
                resource_name: (*resource).to_owned(),
                device_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
                topology: Some(TopologyInfo {
                    nodes: vec![NumaNode { id: 0 }],
                }),
            };
            match containers.iter_mut().find(|c| c.name == *container) {
                Some(c) => c.devices.push(entry),
                None => containers.push(ContainerResources {
                    name: (*container).to_owned(),
                    devices: vec![entry],
                    ..ContainerResources::default()
                }),
            }
        }
        self.state.lock().unwrap().pods.push(PodResources {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            containers,
        });
    }

    /// How many `List` calls it answered.
    #[must_use]
    pub fn list_calls(&self) -> usize {
        self.state.lock().unwrap().lists
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

use plexus_kubelet_api::deviceplugin::v1beta1 as dp;
use plexus_kubelet_api::pluginregistration::v1 as reg;

/// A device as the kubelet last heard of it: `(id, health, NUMA nodes)`.
pub type SeenDevice = (String, String, Vec<i64>);

#[derive(Debug, Default)]
struct DmState {
    registrations: Vec<dp::RegisterRequest>,
    /// Every list each resource's ListAndWatch stream sent, in order.
    lists: std::collections::HashMap<String, Vec<Vec<SeenDevice>>>,
    endpoints: std::collections::HashMap<String, PathBuf>,
    /// Streams that ended, by resource.
    ended: std::collections::HashMap<String, usize>,
    /// What went wrong following a plugin.
    errors: Vec<String>,
    /// The streams being followed, ended by a restart (a kubelet that
    /// exits drops its connections).
    watchers: Vec<tokio::task::AbortHandle>,
}

#[derive(Debug, Clone)]
struct RegistrationService {
    dir: PathBuf,
    state: Arc<Mutex<DmState>>,
}

/// Follows a plugin's ListAndWatch like the kubelet does, recording every
/// list.
async fn watch_plugin(state: Arc<Mutex<DmState>>, resource: String, endpoint: PathBuf) {
    let Ok(channel) =
        plexus_kubelet_api::connect(&endpoint, std::time::Duration::from_secs(2)).await
    else {
        return;
    };
    let mut client = dp::device_plugin_client::DevicePluginClient::new(channel);
    if client
        .get_device_plugin_options(dp::Empty {})
        .await
        .is_err()
    {
        return;
    }
    let Ok(resp) = client.list_and_watch(dp::Empty {}).await else {
        return;
    };
    let mut stream = resp.into_inner();
    while let Ok(Some(msg)) = stream.message().await {
        let list = msg
            .devices
            .into_iter()
            .map(|d| {
                let nodes = d
                    .topology
                    .map(|t| t.nodes.into_iter().map(|n| n.id).collect())
                    .unwrap_or_default();
                (d.id, d.health, nodes)
            })
            .collect();
        state
            .lock()
            .unwrap()
            .lists
            .entry(resource.clone())
            .or_default()
            .push(list);
    }
    *state.lock().unwrap().ended.entry(resource).or_default() += 1;
}

#[tonic::async_trait]
impl dp::registration_server::Registration for RegistrationService {
    async fn register(
        &self,
        req: Request<dp::RegisterRequest>,
    ) -> Result<Response<dp::Empty>, Status> {
        let req = req.into_inner();
        if req.version != "v1beta1" {
            return Err(Status::invalid_argument(format!(
                "unsupported version {}",
                req.version
            )));
        }
        let endpoint = self.dir.join(&req.endpoint);
        {
            let mut s = self.state.lock().unwrap();
            s.endpoints
                .insert(req.resource_name.clone(), endpoint.clone());
            s.registrations.push(req.clone());
        }
        let task = tokio::spawn(watch_plugin(
            self.state.clone(),
            req.resource_name,
            endpoint,
        ));
        self.state
            .lock()
            .unwrap()
            .watchers
            .push(task.abort_handle());
        Ok(Response::new(dp::Empty {}))
    }
}

/// The kubelet's device manager, as a device plugin sees it: the
/// `v1beta1.Registration` service on `<dir>/kubelet.sock`; after a Register
/// it asks the plugin for its options and follows its ListAndWatch,
/// recording every list; tests then call GetPreferredAllocation and
/// Allocate like the kubelet. [`FakeDeviceManager::restart`] behaves like a
/// kubelet restart (every socket in the directory removed, a new
/// `kubelet.sock`). [`FakeDeviceManager::discover_plugin`] is the plugin
/// watcher's side (`pluginregistration.Registration`).
#[derive(Debug)]
pub struct FakeDeviceManager {
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
    state: Arc<Mutex<DmState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// One connection per plugin, as the kubelet keeps.
    channels: Mutex<std::collections::HashMap<String, tonic::transport::Channel>>,
}

impl FakeDeviceManager {
    /// Serves Registration on `<dir>/kubelet.sock`.
    ///
    /// # Panics
    /// When the socket cannot be bound.
    #[must_use]
    pub fn start(dir: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut me = Self {
            dir: dir.to_owned(),
            rt,
            state: Arc::default(),
            stop: None,
            channels: Mutex::default(),
        };
        me.serve();
        me
    }

    fn serve(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("device-plugin dir");
        let socket = self.dir.join("kubelet.sock");
        let _ = std::fs::remove_file(&socket);
        let svc = RegistrationService {
            dir: self.dir.clone(),
            state: self.state.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let listener = self.rt.block_on(async {
            tokio::net::UnixListener::bind(&socket).expect("bind kubelet.sock")
        });
        self.rt.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(dp::registration_server::RegistrationServer::new(svc))
                .serve_with_incoming_shutdown(plexus_kubelet_api::incoming(listener), async {
                    let _ = rx.await;
                })
                .await;
        });
        self.stop = Some(tx);
    }

    /// A kubelet restart: the service stops, every socket in the
    /// directory is removed (the kubelet does this at start), and a new
    /// `kubelet.sock` is served.
    ///
    /// # Panics
    /// When the directory cannot be read.
    pub fn restart(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        for w in self.state.lock().unwrap().watchers.drain(..) {
            w.abort();
        }
        self.channels.lock().unwrap().clear();
        for e in std::fs::read_dir(&self.dir)
            .expect("device-plugin dir")
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "sock") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        self.serve();
    }

    /// Every Register received: `(resource, endpoint, preferred allocation
    /// offered)`.
    #[must_use]
    pub fn registrations(&self) -> Vec<(String, String, bool)> {
        self.state
            .lock()
            .unwrap()
            .registrations
            .iter()
            .map(|r| {
                (
                    r.resource_name.clone(),
                    r.endpoint.clone(),
                    r.options
                        .as_ref()
                        .is_some_and(|o| o.get_preferred_allocation_available),
                )
            })
            .collect()
    }

    /// Every list a resource's streams sent, in order.
    #[must_use]
    pub fn lists(&self, resource: &str) -> Vec<Vec<SeenDevice>> {
        self.state
            .lock()
            .unwrap()
            .lists
            .get(resource)
            .cloned()
            .unwrap_or_default()
    }

    /// How many of a resource's ListAndWatch streams have ended.
    #[must_use]
    pub fn ended_streams(&self, resource: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .ended
            .get(resource)
            .copied()
            .unwrap_or(0)
    }

    /// Waits (polling every 10 ms) until the last list of `resource`
    /// satisfies `pred`; returns it.
    ///
    /// # Panics
    /// After `timeout`, with every list seen.
    pub fn wait_list(
        &self,
        resource: &str,
        timeout: std::time::Duration,
        pred: impl Fn(&[SeenDevice]) -> bool,
    ) -> Vec<SeenDevice> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(last) = self.lists(resource).last()
                && pred(last)
            {
                return last.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{resource}: no matching list within {timeout:?}; seen: {:?}; registrations: {:?}; \
                 errors: {:?}",
                self.lists(resource),
                self.registrations(),
                self.state.lock().unwrap().errors
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn client(
        &self,
        resource: &str,
    ) -> dp::device_plugin_client::DevicePluginClient<tonic::transport::Channel> {
        if let Some(c) = self.channels.lock().unwrap().get(resource) {
            return dp::device_plugin_client::DevicePluginClient::new(c.clone());
        }
        let endpoint = self.state.lock().unwrap().endpoints.get(resource).cloned();
        let endpoint = endpoint.unwrap_or_else(|| panic!("{resource} never registered"));
        let channel = self
            .rt
            .block_on(plexus_kubelet_api::connect(
                &endpoint,
                std::time::Duration::from_secs(2),
            ))
            .unwrap_or_else(|e| panic!("connect {}: {e}", endpoint.display()));
        self.channels
            .lock()
            .unwrap()
            .insert(resource.to_owned(), channel.clone());
        dp::device_plugin_client::DevicePluginClient::new(channel)
    }

    /// `Allocate` for one container, as the kubelet calls it.
    ///
    /// # Errors
    /// The plugin's error status.
    pub fn allocate(
        &self,
        resource: &str,
        ids: &[&str],
    ) -> Result<dp::ContainerAllocateResponse, Status> {
        let mut c = self.client(resource);
        let req = dp::AllocateRequest {
            container_requests: vec![dp::ContainerAllocateRequest {
                devices_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            }],
        };
        self.rt
            .block_on(c.allocate(req))
            .map(|r| r.into_inner().container_responses.remove(0))
    }

    /// `GetDevicePluginOptions`: the cheapest call, a floor for the others.
    ///
    /// # Errors
    /// The plugin's error status.
    pub fn options(&self, resource: &str) -> Result<dp::DevicePluginOptions, Status> {
        let mut c = self.client(resource);
        self.rt
            .block_on(c.get_device_plugin_options(dp::Empty {}))
            .map(tonic::Response::into_inner)
    }

    /// `GetPreferredAllocation` for one container.
    ///
    /// # Errors
    /// The plugin's error status.
    pub fn preferred(
        &self,
        resource: &str,
        available: &[&str],
        must: &[&str],
        size: i32,
    ) -> Result<Vec<String>, Status> {
        let mut c = self.client(resource);
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        let req = dp::PreferredAllocationRequest {
            container_requests: vec![dp::ContainerPreferredAllocationRequest {
                available_device_i_ds: owned(available),
                must_include_device_i_ds: owned(must),
                allocation_size: size,
            }],
        };
        self.rt
            .block_on(c.get_preferred_allocation(req))
            .map(|r| r.into_inner().container_responses.remove(0).device_i_ds)
    }

    /// The plugin watcher's part: asks the plugin on `socket` for its
    /// info, tells it it is registered, and follows its ListAndWatch.
    ///
    /// # Panics
    /// When the plugin does not answer.
    pub fn discover_plugin(&self, socket: &Path) -> reg::PluginInfo {
        let info = self.rt.block_on(async {
            let channel = plexus_kubelet_api::connect(socket, std::time::Duration::from_secs(2))
                .await
                .expect("connect to the plugin");
            let mut c = reg::registration_client::RegistrationClient::new(channel);
            let info = c
                .get_info(reg::InfoRequest {})
                .await
                .expect("GetInfo")
                .into_inner();
            c.notify_registration_status(reg::RegistrationStatus {
                plugin_registered: true,
                error: String::new(),
            })
            .await
            .expect("NotifyRegistrationStatus");
            info
        });
        let endpoint = PathBuf::from(&info.endpoint);
        self.state
            .lock()
            .unwrap()
            .endpoints
            .insert(info.name.clone(), endpoint.clone());
        self.rt.spawn(watch_plugin(
            self.state.clone(),
            info.name.clone(),
            endpoint,
        ));
        info
    }
}

impl Drop for FakeDeviceManager {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
