//! A kubelet stand-in for its gRPC APIs: the real `v1.PodResourcesLister`
//! service (generated from the published proto) on a real unix socket, so
//! the plugin's own client talks to it unchanged.
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
