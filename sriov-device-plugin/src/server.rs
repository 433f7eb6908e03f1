//! The daemon: one kubelet device-plugin gRPC server per pool, on its own
//! unix socket, kept registered, healthy and current.
//!
//! - **Registration.** If the plugin-watcher directory exists, each socket
//!   goes there and also serves `pluginregistration.Registration` (the
//!   kubelet finds it, asks `GetInfo` and reports back); otherwise the
//!   socket goes into the device-plugin directory and the plugin calls
//!   `v1beta1.Registration/Register` on the kubelet's `kubelet.sock`.
//! - **Kubelet restarts.** A restarting kubelet removes the sockets in its
//!   directory and makes a new `kubelet.sock`: every health tick checks both
//!   (our socket still there, `kubelet.sock` still the same file) and
//!   serves again and registers again when either changed. A failed
//!   registration is retried, never fatal.
//! - **Health.** Every health tick, per device: still present, same driver,
//!   its netdev still there (unless the device was handed to a container,
//!   whose netns now holds it), its PF's link not down. A change is sent
//!   through ListAndWatch at once. A rescan does not forget that a device
//!   had a netdev: it stays Unhealthy until the netdev is back.
//! - **Rediscovery.** The config file is re-read every tick and the devices
//!   rescanned every rescan interval (and at once when the config changed
//!   or on SIGHUP): pools gain and lose devices, new pools are served,
//!   removed ones are withdrawn, with no restart.
//! - **Shutdown** (SIGTERM, SIGINT): every pool first sends an empty device
//!   list, so the kubelet stops placing pods on devices no one serves, then
//!   its socket and device-info files are removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use plexus_kubelet_api::deviceplugin::v1beta1::device_plugin_server::{
    DevicePlugin, DevicePluginServer,
};
use plexus_kubelet_api::deviceplugin::v1beta1::registration_client::RegistrationClient;
use plexus_kubelet_api::deviceplugin::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, Device,
    DevicePluginOptions, Empty, ListAndWatchResponse, NumaNode, PreStartContainerRequest,
    PreStartContainerResponse, PreferredAllocationRequest, PreferredAllocationResponse,
    RegisterRequest, TopologyInfo,
};
use plexus_kubelet_api::pluginregistration::v1::registration_server::{
    Registration, RegistrationServer,
};
use plexus_kubelet_api::pluginregistration::v1::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use plexus_sysfs::Sysfs;
use tokio::sync::{oneshot, watch};
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use crate::config::{self, PoolConfig};
use crate::pools::{self, PoolDevice};
use crate::{alloc, host};

/// The device-plugin API version plexus serves.
pub const API_VERSION: &str = "v1beta1";
/// `Device.health` values.
const HEALTHY: &str = "Healthy";
const UNHEALTHY: &str = "Unhealthy";

/// Where everything is; every host path is a parameter.
#[derive(Debug, Clone)]
pub struct Options {
    /// The pools.
    pub config_file: PathBuf,
    /// The prefix of pools without `resourcePrefix`.
    pub resource_prefix: String,
    /// sysfs.
    pub sysfs_root: PathBuf,
    /// The kubelet's device-plugin directory (holds `kubelet.sock`).
    pub device_plugin_dir: PathBuf,
    /// The kubelet's plugin-watcher directory.
    pub plugins_registry_dir: PathBuf,
    /// Where device-info files go (`.../devinfo/dp`).
    pub devinfo_dir: PathBuf,
    /// Where device nodes are (`/dev`): nodes that need a module
    /// (`rdma_cm`, `vhost-net`, `tun`) are given to containers only when
    /// they exist here.
    pub dev_root: PathBuf,
    /// How often health is checked (and the config re-read).
    pub health_interval: Duration,
    /// How often devices are rescanned.
    pub rescan_interval: Duration,
}

/// One pool's live state.
#[derive(Debug)]
struct PoolState {
    config: PoolConfig,
    devices: HashMap<String, PoolDevice>,
    healthy: BTreeMap<String, bool>,
    /// Devices handed to containers: their netdevs may be in a pod.
    allocated: HashSet<String>,
    /// Device-info files written.
    info_files: HashSet<PathBuf>,
}

impl PoolState {
    fn list(&self) -> Vec<Device> {
        self.healthy
            .iter()
            .map(|(id, ok)| Device {
                id: id.clone(),
                health: if *ok { HEALTHY } else { UNHEALTHY }.to_owned(),
                topology: self
                    .devices
                    .get(id)
                    .and_then(|d| d.dev.numa_node)
                    .filter(|_| !self.config.exclude_topology)
                    .map(|n| TopologyInfo {
                        nodes: vec![NumaNode { id: i64::from(n) }],
                    }),
            })
            .collect()
    }
}

/// What ListAndWatch streams see: the list, and whether it is the last
/// one (the pool is being withdrawn: the stream sends it and ends).
#[derive(Debug, Clone, Default, PartialEq)]
struct Published {
    devices: Vec<Device>,
    last: bool,
}

#[derive(Debug)]
struct Shared {
    state: RwLock<PoolState>,
    tx: watch::Sender<Published>,
    devinfo_dir: PathBuf,
    dev_root: PathBuf,
    /// For what is read at allocation time.
    sysfs: Sysfs,
    /// Set by the kubelet's NotifyRegistrationStatus (watcher mode).
    registration_failed: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// An `isRdma` device on record without its RDMA device (it was in a
    /// pod's netns at the last scan, exclusive mode) reads it again now:
    /// the pod may have ended since, and the container being created needs
    /// the device's nodes (upstream reads RDMA specs at allocation for the
    /// same reason, PR 611).
    fn refresh_rdma(&self, st: &mut PoolState, ids: &[String]) {
        for id in ids {
            let Some(d) = st.devices.get_mut(id) else {
                continue;
            };
            if !d.is_rdma || !d.dev.rdma.is_empty() {
                continue;
            }
            d.dev.rdma = self.sysfs.rdma(id);
            if d.dev.rdma.is_empty() {
                tracing::warn!(
                    device = id,
                    "allocated while its RDMA device is still in a pod's netns: no RDMA nodes"
                );
            } else {
                d.dev.uverbs = self.sysfs.uverbs(id);
                d.dev.mad = self.sysfs.mad(id);
                d.dev.rdma_in_netns = false;
                tracing::info!(device = id, rdma = ?d.dev.rdma, "RDMA device back on the host");
            }
        }
    }

    fn publish(&self) {
        let list = self.state.read().expect("pool state").list();
        self.tx.send_if_modified(|cur| {
            let changed = cur.devices != list && !cur.last;
            if changed {
                cur.devices = list;
            }
            changed
        });
    }

    /// The empty list, as the last word of every stream.
    fn close(&self) {
        self.tx.send_replace(Published {
            devices: Vec::new(),
            last: true,
        });
    }
}

#[derive(Debug, Clone)]
struct Plugin(Arc<Shared>);

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Plugin {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<DeviceStream>, Status> {
        // Every change (and the current list first); when the pool is
        // withdrawn, an empty list and the end of the stream.
        let stream = tokio_stream::wrappers::WatchStream::new(self.0.tx.subscribe())
            .take_while(|p| !p.last)
            .map(|p| Ok(ListAndWatchResponse { devices: p.devices }))
            .chain(tokio_stream::once(Ok(ListAndWatchResponse::default())));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let st = self.0.state.read().expect("pool state");
        let container_responses = req
            .into_inner()
            .container_requests
            .iter()
            .map(|c| ContainerPreferredAllocationResponse {
                device_i_ds: alloc::preferred(
                    &st.devices,
                    &c.available_device_i_ds,
                    &c.must_include_device_i_ds,
                    usize::try_from(c.allocation_size).unwrap_or(0),
                ),
            })
            .collect();
        Ok(Response::new(PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        req: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let mut st = self.0.state.write().expect("pool state");
        let mut container_responses = Vec::new();
        for c in &req.into_inner().container_requests {
            self.0.refresh_rdma(&mut st, &c.devices_ids);
            let r = alloc::container_response(
                &st.config,
                &st.devices,
                &c.devices_ids,
                &self.0.dev_root,
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
            for id in &c.devices_ids {
                let d = &st.devices[id];
                match alloc::write_device_info(&self.0.devinfo_dir, &st.config, d) {
                    Ok(Some(p)) => {
                        st.info_files.insert(p);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(device = id, error = %e, "cannot write device-info"),
                }
            }
            st.allocated.extend(c.devices_ids.iter().cloned());
            tracing::info!(resource = st.config.resource(), devices = ?c.devices_ids, "allocated");
            container_responses.push(r);
        }
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

fn options() -> DevicePluginOptions {
    DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}

/// The plugin-watcher side of a socket.
#[derive(Debug, Clone)]
struct Registrar {
    shared: Arc<Shared>,
    resource: String,
    endpoint: String,
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: "DevicePlugin".into(),
            name: self.resource.clone(),
            endpoint: self.endpoint.clone(),
            supported_versions: vec![API_VERSION.into()],
        }))
    }

    async fn notify_registration_status(
        &self,
        req: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let s = req.into_inner();
        if s.plugin_registered {
            tracing::info!(
                resource = self.resource,
                "registered with the kubelet (plugin watcher)"
            );
        } else {
            tracing::error!(
                resource = self.resource,
                error = s.error,
                "the kubelet refused the registration; serving again to be rediscovered"
            );
            self.shared
                .registration_failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// A pool being served.
#[derive(Debug)]
struct Running {
    shared: Arc<Shared>,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Legacy mode: the `kubelet.sock` (device, inode) registered with.
    registered_with: Option<(u64, u64)>,
}

fn file_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// The daemon.
#[derive(Debug)]
pub struct Daemon {
    opts: Options,
    sysfs: Sysfs,
    watcher_mode: bool,
    running: BTreeMap<String, Running>,
    config_text: Option<String>,
    /// The last config whose file was usable as a whole.
    last_good: Option<config::Config>,
}

impl Daemon {
    /// A daemon for these paths; the mode is chosen here, as upstream: the
    /// plugin watcher when its directory exists.
    #[must_use]
    pub fn new(opts: Options) -> Self {
        let watcher_mode = opts.plugins_registry_dir.is_dir();
        Self {
            sysfs: Sysfs::new(&opts.sysfs_root),
            opts,
            watcher_mode,
            running: BTreeMap::new(),
            config_text: None,
            last_good: None,
        }
    }

    fn socket_dir(&self) -> &Path {
        if self.watcher_mode {
            &self.opts.plugins_registry_dir
        } else {
            &self.opts.device_plugin_dir
        }
    }

    fn kubelet_socket(&self) -> PathBuf {
        self.opts.device_plugin_dir.join("kubelet.sock")
    }

    /// Reads the config and rescans; serves, updates and withdraws pools.
    /// A file unusable as a whole (caught half written, say) changes
    /// nothing: the pools of the last good file stay served and rescanned.
    fn rescan(&mut self, text: &str, changed: bool) {
        let parsed = config::parse(text, &self.opts.resource_prefix);
        let cfg = match (&parsed.unusable, &self.last_good) {
            (Some(e), last) => {
                if changed {
                    tracing::error!(
                        file = %self.opts.config_file.display(),
                        error = e,
                        "config unusable: keeping the pools of the last good one"
                    );
                }
                match last {
                    Some(c) => c.clone(),
                    None => return,
                }
            }
            (None, _) => {
                if changed {
                    for e in &parsed.errors {
                        tracing::error!(error = e, "config: pool left out");
                    }
                    for k in &parsed.unknown_keys {
                        tracing::warn!(key = k, "config: unknown key ignored");
                    }
                }
                self.last_good = Some(parsed.clone());
                parsed
            }
        };
        let mut scan = match self.sysfs.scan() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot scan PCI devices; keeping the pools as they are");
                return;
            }
        };
        for (addr, e) in &scan.errors {
            tracing::warn!(device = addr, error = %e, "device skipped");
        }
        let routes = host::default_route_netdevs().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the host's routes");
            HashSet::new()
        });
        self.keep_rdma_of_allocated(&mut scan.devices);
        host::mark_rdma_in_netns(&self.sysfs, &mut scan.devices);
        let (built, report) = pools::build(&cfg, &scan, &routes);
        for p in &report.empty_pools {
            tracing::warn!(
                pool = p,
                "no devices; not served (see `sriov-device-plugin discover`)"
            );
        }
        let mut wanted = HashSet::new();
        for pool in built.into_iter().filter(|p| !p.devices.is_empty()) {
            let resource = pool.config.resource();
            wanted.insert(resource.clone());
            let mut devices: HashMap<String, PoolDevice> = pool
                .devices
                .into_iter()
                .map(|d| (d.dev.address.clone(), d))
                .collect();
            match self.running.get(&resource) {
                Some(r) => {
                    {
                        let mut st = r.shared.state.write().expect("pool state");
                        // Health has memory: a device that had a netdev and
                        // still has its driver keeps it on record while the
                        // netdev is missing, so it stays Unhealthy (or, when
                        // handed to a pod, allocated) until the netdev is
                        // back, whatever this scan saw.
                        for (id, d) in &mut devices {
                            if let Some(old) = st.devices.get(id)
                                && d.dev.netdevs.is_empty()
                                && !old.dev.netdevs.is_empty()
                                && old.dev.driver == d.dev.driver
                            {
                                d.dev.netdevs.clone_from(&old.dev.netdevs);
                            }
                        }
                        st.healthy = devices
                            .keys()
                            .map(|id| (id.clone(), st.healthy.get(id).copied().unwrap_or(true)))
                            .collect();
                        st.allocated.retain(|id| devices.contains_key(id));
                        st.devices = devices;
                        st.config = pool.config;
                    }
                    r.shared.publish();
                }
                None => {
                    tracing::info!(resource, devices = devices.len(), "serving pool");
                    let state = PoolState {
                        healthy: devices.keys().map(|id| (id.clone(), true)).collect(),
                        config: pool.config,
                        devices,
                        allocated: HashSet::new(),
                        info_files: HashSet::new(),
                    };
                    let (tx, _) = watch::channel(Published {
                        devices: state.list(),
                        last: false,
                    });
                    let shared = Arc::new(Shared {
                        state: RwLock::new(state),
                        tx,
                        devinfo_dir: self.opts.devinfo_dir.clone(),
                        dev_root: self.opts.dev_root.clone(),
                        sysfs: self.sysfs.clone(),
                        registration_failed: false.into(),
                    });
                    let socket = self
                        .socket_dir()
                        .join(format!("{}.sock", resource.replace('/', "_")));
                    self.running.insert(
                        resource,
                        Running {
                            shared,
                            socket,
                            stop: None,
                            task: None,
                            registered_with: None,
                        },
                    );
                }
            }
        }
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|r| !wanted.contains(*r))
            .cloned()
            .collect();
        for r in gone {
            tracing::info!(resource = r, "pool withdrawn");
            if let Some(run) = self.running.remove(&r) {
                withdraw(run);
            }
        }
    }

    /// RDMA in exclusive netns mode (`rdma system set netns exclusive`):
    /// the RDMA device of a VF handed to a pod goes into the pod's netns
    /// with it, and the host's sysfs no longer shows it. Such a VF is
    /// still the RDMA device it was when it was allocated: it keeps that
    /// on record (so `isRdma` keeps it in its pool, and the kubelet's
    /// capacity does not drop while the pod holds it) until its netdev is
    /// back on the host, which ends the allocation. Upstream's fix of the
    /// same defect reads devlink's `enable_rdma` instead (PR 603).
    fn keep_rdma_of_allocated(&self, devices: &mut [plexus_sysfs::PciDevice]) {
        for run in self.running.values() {
            let st = run.shared.state.read().expect("pool state");
            for id in &st.allocated {
                let Some(old) = st.devices.get(id).map(|d| &d.dev) else {
                    continue;
                };
                if let Some(d) = devices.iter_mut().find(|d| {
                    d.address == *id
                        && d.rdma.is_empty()
                        && d.driver == old.driver
                        && !old.rdma.is_empty()
                }) {
                    tracing::debug!(device = id, rdma = ?old.rdma, "allocated: keeping its RDMA device on record");
                    d.rdma.clone_from(&old.rdma);
                    d.uverbs.clone_from(&old.uverbs);
                }
            }
        }
    }

    /// Health of every device of every pool.
    fn check_health(&self) {
        // A PF's link is read once per tick, not once per VF.
        let mut pf_up: HashMap<String, bool> = HashMap::new();
        for run in self.running.values() {
            let mut changed = false;
            {
                let mut st = run.shared.state.write().expect("pool state");
                let ids: Vec<String> = st.devices.keys().cloned().collect();
                for id in ids {
                    let d = &st.devices[&id];
                    let present = self.sysfs.device_dir(&id).is_dir();
                    // A subfunction carries its parent's driver.
                    let same_driver = self.sysfs.driver(d.dev.pci_address()) == d.dev.driver;
                    let had_netdev = !d.dev.netdevs.is_empty();
                    // Only a device that had a netdev can lose it.
                    let has_netdev = had_netdev && !self.sysfs.netdevs(&id).is_empty();
                    let netdev_ok = !had_netdev || has_netdev || st.allocated.contains(&id);
                    let pf_up = match d.dev.pf.as_ref().and_then(|p| p.netdev.as_deref()) {
                        Some(n) => *pf_up.entry(n.to_owned()).or_insert_with(|| {
                            self.sysfs
                                .netdev_attr(n, "operstate")
                                .is_none_or(|s| s != "down")
                        }),
                        None => true,
                    };
                    if has_netdev {
                        // Back on the host: no longer in a container.
                        st.allocated.remove(&id);
                    }
                    let ok = present && same_driver && netdev_ok && pf_up;
                    if st.healthy.get(&id) != Some(&ok) {
                        tracing::warn!(
                            device = id,
                            healthy = ok,
                            present,
                            same_driver,
                            netdev_ok,
                            pf_up,
                            "device health changed"
                        );
                        st.healthy.insert(id, ok);
                        changed = true;
                    }
                }
            }
            if changed {
                run.shared.publish();
            }
        }
    }

    /// Serves every pool whose socket is missing, and (legacy mode)
    /// registers every pool not registered with the current kubelet.
    async fn keep_registered(&mut self) {
        let kubelet = self.kubelet_socket();
        let kubelet_id = file_id(&kubelet);
        let watcher = self.watcher_mode;
        for (resource, run) in &mut self.running {
            let refused = run
                .shared
                .registration_failed
                .swap(false, std::sync::atomic::Ordering::Relaxed);
            if run.task.is_none() || !run.socket.exists() || refused {
                if let Err(e) = serve(resource, run, watcher) {
                    tracing::error!(resource, socket = %run.socket.display(), error = %e, "cannot serve");
                    continue;
                }
                run.registered_with = None;
            }
            if watcher || kubelet_id.is_none() || run.registered_with == kubelet_id {
                continue;
            }
            match register(&kubelet, &run.socket, resource).await {
                Ok(()) => {
                    tracing::info!(resource, "registered with the kubelet");
                    run.registered_with = kubelet_id;
                }
                Err(e) => tracing::warn!(resource, error = e, "registration failed; retrying"),
            }
        }
    }

    /// Runs until SIGTERM or SIGINT.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed.
    pub async fn run(mut self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let rescan_every = (self.opts.rescan_interval.as_millis()
            / self.opts.health_interval.as_millis().max(1))
        .max(1);
        let mut tick: u128 = 0;
        loop {
            let text = std::fs::read_to_string(&self.opts.config_file);
            let force = match &text {
                Ok(t) => self.config_text.as_deref() != Some(t.as_str()),
                Err(e) => {
                    if tick == 0 {
                        tracing::error!(file = %self.opts.config_file.display(), error = %e,
                            "cannot read the config; waiting for it");
                    }
                    false
                }
            };
            if let Ok(t) = text
                && (force || tick.is_multiple_of(rescan_every))
            {
                self.rescan(&t, force);
                self.config_text = Some(t);
            }
            self.check_health();
            self.keep_registered().await;
            tick += 1;
            tokio::select! {
                () = tokio::time::sleep(self.opts.health_interval) => {}
                _ = hup.recv() => { self.config_text = None; }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!("shutting down: withdrawing every pool");
        let running = std::mem::take(&mut self.running);
        let mut tasks = Vec::new();
        for (_, mut run) in running {
            tasks.push(run.task.take());
            withdraw(run);
        }
        for t in tasks.into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        Ok(())
    }
}

/// Sends an empty list, stops the server, removes the socket and the
/// device-info files of a pool.
fn withdraw(mut run: Running) {
    run.shared.close();
    if let Some(stop) = run.stop.take() {
        let _ = stop.send(());
    }
    let _ = std::fs::remove_file(&run.socket);
    for f in &run.shared.state.read().expect("pool state").info_files {
        let _ = std::fs::remove_file(f);
    }
}

/// (Re)starts a pool's gRPC server on its socket.
fn serve(resource: &str, run: &mut Running, watcher: bool) -> std::io::Result<()> {
    if let Some(stop) = run.stop.take() {
        let _ = stop.send(());
    }
    if let Some(dir) = run.socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(&run.socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(&run.socket)?;
    let (tx, rx) = oneshot::channel::<()>();
    let plugin = DevicePluginServer::new(Plugin(run.shared.clone()));
    let registrar = watcher.then(|| {
        RegistrationServer::new(Registrar {
            shared: run.shared.clone(),
            resource: resource.to_owned(),
            endpoint: run.socket.to_string_lossy().into_owned(),
        })
    });
    let resource = resource.to_owned();
    run.task = Some(tokio::spawn(async move {
        let res = tonic::transport::Server::builder()
            .add_service(plugin)
            .add_optional_service(registrar)
            .serve_with_incoming_shutdown(plexus_kubelet_api::incoming(listener), async {
                let _ = rx.await;
            })
            .await;
        if let Err(e) = res {
            tracing::error!(resource, error = %e, "device plugin server stopped");
        }
    }));
    run.stop = Some(tx);
    tracing::info!(socket = %run.socket.display(), "serving");
    Ok(())
}

/// `v1beta1.Registration/Register` on the kubelet's socket.
async fn register(kubelet: &Path, socket: &Path, resource: &str) -> Result<(), String> {
    let channel = plexus_kubelet_api::connect(kubelet, Duration::from_secs(5))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", kubelet.display()))?;
    let endpoint = socket
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut client = RegistrationClient::new(channel);
    let call = client.register(RegisterRequest {
        version: API_VERSION.into(),
        endpoint,
        resource_name: resource.to_owned(),
        options: Some(options()),
    });
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .map_err(|_| "Register timed out".to_owned())?
        .map_err(|s| format!("Register: {:?}: {}", s.code(), s.message()))?;
    Ok(())
}
