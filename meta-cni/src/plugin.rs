//! The CNI operations of `plexus`: plan, cache, delegate, roll back.
//!
//! ADD resolves every attachment first ([`crate::resolve`]), writes the plan
//! to the cache, then runs the delegates in order (cluster network first),
//! recording each result; a failure at delegate *i* runs DEL for *i..0* in
//! reverse. DEL works from the cache alone (no API server, no netns
//! needed); without a cache it rebuilds what it can. CHECK checks every
//! cached attachment; STATUS asks the cluster network; GC forwards each
//! network's valid attachments and removes stale cache entries.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use plexus_cni::args::CniArgs;
use plexus_cni::conf::NetworkConfigList;
use plexus_cni::error::code;
use plexus_cni::invoke::{Invoker, RuntimeConf};
use plexus_cni::plugin::{Attachment, Plugin, Request};
use plexus_cni::{CniError, CniResult};
use serde_json::{Map, Value};

use crate::cluster::{
    self as k8s, Cluster, ClusterError, EventKind, KubeCluster, PodInfo, PodRef, Standalone,
    remove_status_file,
};
use crate::config::PlexusConf;
use crate::devices::{self, PodDevices};
use crate::resolve::{DEFAULT_NETWORK_ANNOTATION, Planned, PodContext, Purpose, Resolver};
use crate::selection::NETWORKS_ANNOTATION;
use crate::state::{self, Cache, CachedAttachment, FORMAT};
use crate::{logging, routes, status};

/// `CNI_ARGS` key carrying the networks annotation in standalone mode.
pub const ARG_NETWORKS: &str = "K8S_ANNOTATION_NETWORKS";
/// `CNI_ARGS` key carrying the default-network annotation in standalone mode.
pub const ARG_DEFAULT_NETWORK: &str = "K8S_ANNOTATION_DEFAULT_NETWORK";
/// The runtimeConfig capability containerd fills with the pod's annotations.
pub const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

/// The plexus plugin.
#[derive(Debug, Default)]
pub struct Plexus;

/// Where pods and NADs come from.
enum Mode {
    /// The API server: a kubeconfig, or in-cluster config when `None`.
    Kube(Option<std::path::PathBuf>),
    /// No API server.
    Standalone,
}

/// Everything a verb needs from the request and the config.
struct Ctx<'r> {
    req: &'r Request,
    conf: PlexusConf,
    invoker: Invoker,
    mode: Mode,
    pod: Option<PodRef>,
    /// `CNI_ARGS` for delegates: the runtime's, without plexus' own keys,
    /// with `IgnoreUnknown` so Go plugins accept the Kubernetes keys.
    delegate_args: CniArgs,
    runtime_config: Map<String, Value>,
}

impl<'r> Ctx<'r> {
    fn new(req: &'r Request) -> Result<Self, CniError> {
        let conf = PlexusConf::from_value(&req.config)?;
        logging::init(&conf);
        let invoker = Invoker::new(conf.search_path(&req.path));
        let mode = match &conf.kubeconfig {
            Some(p) if !p.as_os_str().is_empty() => Mode::Kube(Some(p.clone())),
            _ if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|h| !h.is_empty()) => {
                Mode::Kube(None)
            }
            _ => Mode::Standalone,
        };
        let arg = |k: &str| req.args.get(k).filter(|v| !v.is_empty());
        let pod = match (arg("K8S_POD_NAMESPACE"), arg("K8S_POD_NAME")) {
            (Some(namespace), Some(name)) => Some(PodRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                uid: arg("K8S_POD_UID").map(str::to_owned),
            }),
            _ => None,
        };
        let mut pairs: Vec<(String, String)> = req
            .args
            .0
            .iter()
            .filter(|(k, _)| k != ARG_NETWORKS && k != ARG_DEFAULT_NETWORK)
            .cloned()
            .collect();
        if !pairs.iter().any(|(k, _)| k == "IgnoreUnknown") {
            pairs.insert(0, ("IgnoreUnknown".into(), "1".into()));
        }
        Ok(Self {
            req,
            invoker,
            mode,
            pod,
            delegate_args: CniArgs(pairs),
            runtime_config: req
                .runtime_config()
                .as_object()
                .cloned()
                .unwrap_or_default(),
            conf,
        })
    }

    /// The pod's annotations as the runtime passed them (standalone mode):
    /// the `io.kubernetes.cri.pod-annotations` capability, overridden by
    /// `K8S_ANNOTATION_NETWORKS` / `K8S_ANNOTATION_DEFAULT_NETWORK`.
    fn runtime_annotations(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .runtime_config
            .get(POD_ANNOTATIONS_CAPABILITY)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
            .collect();
        if let Some(v) = self.req.args.get(ARG_NETWORKS) {
            out.insert(NETWORKS_ANNOTATION.into(), v.to_owned());
        }
        if let Some(v) = self.req.args.get(ARG_DEFAULT_NETWORK) {
            out.insert(DEFAULT_NETWORK_ANNOTATION.into(), v.to_owned());
        }
        out
    }

    fn cluster(&self) -> Result<Box<dyn Cluster>, ClusterError> {
        self.cluster_with(None)
    }

    /// The cluster, with every API request of this call bounded together by
    /// `total` (counted from the first).
    fn cluster_with(&self, total: Option<Duration>) -> Result<Box<dyn Cluster>, ClusterError> {
        Ok(match &self.mode {
            Mode::Kube(path) => {
                let c = KubeCluster::new(path.as_deref())?;
                Box::new(match total {
                    Some(t) => c.with_total(t),
                    None => c,
                })
            }
            Mode::Standalone => Box::new(Standalone::new(
                self.conf.nad_dir.as_deref(),
                self.runtime_annotations(),
                self.conf.status_dir.clone(),
            )?),
        })
    }

    fn cni_dir(&self) -> &Path {
        self.conf.cni_dir()
    }

    fn rt(&self, ifname: &str, args: CniArgs, caps: Map<String, Value>) -> RuntimeConf {
        RuntimeConf {
            container_id: self.req.container_id.clone(),
            netns: self.req.netns.clone(),
            ifname: ifname.to_owned(),
            args,
            capability_args: caps,
        }
    }

    /// The pod and what is known of it, when both are.
    fn pod_context<'a>(&'a self, info: Option<&'a PodInfo>) -> Option<PodContext<'a>> {
        self.pod
            .as_ref()
            .zip(info)
            .map(|(pod, info)| PodContext { pod, info })
    }

    fn who(&self) -> String {
        match &self.pod {
            Some(p) => format!("{p}"),
            None => self.req.container_id.clone(),
        }
    }
}

/// This process' peak resident set size (`VmHWM`), for the per-call log
/// line: what plexus itself costs, without its delegates.
fn peak_rss_kib() -> u64 {
    proc_status_kib("VmHWM:")
}

/// Of the resident set now, the private (anonymous) part: `VmHWM` also
/// counts the pages of the binary's code faulted in, which every plexus
/// process shares with the others and with the page cache.
fn anon_rss_kib() -> u64 {
    proc_status_kib("RssAnon:")
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A delegate error, with which pod and network it was for.
fn delegate_error(
    who: &str,
    verb: &str,
    network: &str,
    ifname: &str,
    e: impl Into<CniError>,
) -> CniError {
    let e: CniError = e.into();
    CniError {
        msg: format!("[{who}:{network}] {verb} {ifname}: {}", e.msg),
        ..e
    }
}

fn io_error(what: &str, e: impl std::fmt::Display) -> CniError {
    CniError::new(code::IO_FAILURE, format!("{what}: {e}"))
}

/// The result to hand an attachment's DEL or CHECK: for the cluster
/// network, the runtime's `prevResult` when it sent one (in a chain, plugins
/// after plexus may have changed it, and the runtime's copy has their
/// changes); otherwise the cached one.
fn result_for(ctx: &Ctx<'_>, att: &CachedAttachment) -> Option<CniResult> {
    if att.default
        && let Ok(Some(prev)) = ctx.req.prev_result()
    {
        return Some(prev);
    }
    att.result()
}

/// DEL of one cached attachment, for the runtime's request.
fn del_attachment(ctx: &Ctx<'_>, att: &CachedAttachment) -> Result<(), CniError> {
    let rt = ctx.rt(&att.ifname, att.args(), att.capability_args.clone());
    let result = result_for(ctx, att);
    del_with(ctx, &ctx.who(), "DEL", &rt, att, result.as_ref())
}

/// DEL of one attachment with `rt`, then its device-info file: the file's
/// name is fixed by the attachment, so a rebuilt DEL (no cache) and GC
/// find it too.
fn del_with(
    ctx: &Ctx<'_>,
    who: &str,
    verb: &str,
    rt: &RuntimeConf,
    att: &CachedAttachment,
    result: Option<&CniResult>,
) -> Result<(), CniError> {
    let fail = |e: CniError| delegate_error(who, verb, &att.network, &att.ifname, e);
    let list = att.list().map_err(|e| fail(e.into()))?;
    ctx.invoker
        .del_list(&list, rt, result)
        .map_err(|e| fail(e.into()))?;
    let file = devices::cni_info_file(
        ctx.conf.device_info_dir(),
        &att.network,
        &rt.container_id,
        &att.ifname,
    );
    devices::remove_info(&file);
    if let Some(d) = att.device.as_ref().filter(|d| d.info_file != file) {
        devices::remove_info(&d.info_file);
    }
    Ok(())
}

/// DEL of every attachment in reverse order, going on past failures.
fn del_all(ctx: &Ctx<'_>, atts: &[CachedAttachment]) -> Vec<CniError> {
    atts.iter()
        .rev()
        .filter_map(|a| del_attachment(ctx, a).err())
        .collect()
}

/// One error out of several: the only one as is, or all of them in one.
fn combine(verb: &str, mut errors: Vec<CniError>) -> Result<(), CniError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        n => {
            let details = errors
                .iter()
                .map(|e| format!("{} ({})", e.msg, e.details))
                .collect::<Vec<_>>()
                .join("; ");
            Err(
                CniError::new(errors[0].code, format!("{verb} failed for {n} attachments"))
                    .with_details(details),
            )
        }
    }
}

fn cached(ctx: &Ctx<'_>, p: &Planned) -> CachedAttachment {
    CachedAttachment {
        network: p.network.clone(),
        ifname: p.ifname.clone(),
        default: p.default,
        config: state::list_to_value(&p.list),
        capability_args: p.capability_args.clone(),
        cni_args: ctx.delegate_args.to_string(),
        default_route: p.default_route.clone(),
        result: None,
        device: p.device.clone(),
    }
}

/// Whether the pod the runtime names is `info` (the same UID, or a mirror
/// pod of a static pod, whose UID is not the kubelet's).
fn same_pod(pod: &PodRef, info: &PodInfo) -> bool {
    let (Some(want), Some(have)) = (&pod.uid, &info.uid) else {
        return true;
    };
    want == have
        || info
            .annotations
            .get("kubernetes.io/config.source")
            .is_some_and(|s| s != "api")
}

/// Looks the pod up and checks it is the one the runtime means.
fn pod_info(ctx: &Ctx<'_>, cluster: &dyn Cluster) -> Result<Option<PodInfo>, CniError> {
    let Some(pod) = &ctx.pod else {
        return Ok(None);
    };
    let info = cluster.pod(pod)?.ok_or_else(|| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("pod {pod} not found on the API server"),
        )
    })?;
    if !same_pod(pod, &info) {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!(
                "pod {pod} has UID {}, the runtime expects {}",
                info.uid.as_deref().unwrap_or_default(),
                pod.uid.as_deref().unwrap_or_default()
            ),
        ));
    }
    Ok(Some(info))
}

impl Plexus {
    /// Undoes attachments `0..=last` in reverse; removes the cache when every
    /// DEL succeeded.
    fn rollback(ctx: &Ctx<'_>, cache: &Cache, last: usize) {
        let errors = del_all(ctx, &cache.attachments[..=last]);
        if errors.is_empty() {
            if let Err(e) = Cache::remove(ctx.cni_dir(), &cache.container_id, &cache.ifname) {
                tracing::warn!(error = %e, "cannot remove cache after rollback");
            }
        } else {
            for e in &errors {
                tracing::warn!(error = %e, "rollback DEL failed; cache kept for a later DEL");
            }
        }
    }
}

/// Whether the cluster network has said it is ready: its
/// `readinessindicatorfile` exists (Multus C13; multi-net spec §6.1.2).
fn is_ready(conf: &PlexusConf) -> Result<(), CniError> {
    match &conf.readiness_indicator_file {
        Some(f) if !f.as_os_str().is_empty() && !f.exists() => Err(CniError::new(
            code::NOT_AVAILABLE,
            format!(
                "the cluster network is not ready: readiness indicator file {} does not exist",
                f.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// ADD waits for the readiness indicator, polling every 100 ms (a stat is
/// cheap; Multus' 1 s poll added up to a second to every pod start) for at
/// most `readinessTimeoutSeconds`.
fn wait_ready(conf: &PlexusConf) -> Result<(), CniError> {
    let deadline =
        Instant::now() + Duration::from_secs_f64(conf.readiness_timeout_seconds.max(0.0));
    loop {
        match is_ready(conf) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!(
                        "{} after waiting {}s; is the cluster network (the CNI that writes it) running?",
                        e.msg, conf.readiness_timeout_seconds
                    ),
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// ADD after the preliminaries: plan, cache, delegates, default route,
/// network-status. Returns the cluster network's result and, per
/// attachment, the message of its `AddedInterface` event.
fn attach(
    ctx: &Ctx<'_>,
    cluster: &dyn Cluster,
    started: Instant,
) -> Result<(CniResult, Vec<String>), CniError> {
    let info = pod_info(ctx, cluster)?;
    let podctx = ctx.pod_context(info.as_ref());
    let resolver = Resolver {
        conf: &ctx.conf,
        cluster: Some(cluster),
    };
    let (mut planned, _) =
        resolver.plan(podctx, &ctx.req.ifname, &ctx.runtime_config, Purpose::Add)?;
    let mut pod_devices = PodDevices::new(
        &ctx.conf,
        ctx.pod.as_ref(),
        info.as_ref().and_then(|i| i.uid.as_deref()),
    );
    devices::assign(&mut planned, &mut pod_devices, &ctx.req.container_id)?;
    for p in &planned {
        if let Some(gws) = &p.default_route {
            routes::validate(&p.network, gws)?;
        }
        // Every binary must exist before the first one runs: a typo in
        // the last NAD must not cost a rollback (or leave state behind
        // when the missing plugin's own DEL cannot run either).
        for plugin in &p.list.plugins {
            ctx.invoker
                .find(plugin.plugin_type())
                .map_err(|e| delegate_error(&ctx.who(), "ADD", &p.network, &p.ifname, e))?;
        }
    }

    // Held until ADD returns: GC leaves this container alone meanwhile,
    // and a DEL of it waits.
    let _lock = state::AttachmentLock::take(ctx.cni_dir(), &ctx.req.container_id, &ctx.req.ifname);
    let mut cache = Cache {
        format: FORMAT,
        container_id: ctx.req.container_id.clone(),
        ifname: ctx.req.ifname.clone(),
        netns: ctx.req.netns.clone(),
        pod: ctx.pod.clone(),
        attachments: planned.iter().map(|p| cached(ctx, p)).collect(),
    };
    cache
        .save_plan(ctx.cni_dir())
        .map_err(|e| io_error("cannot write the attachment cache", e))?;

    let mut results: Vec<Option<CniResult>> = vec![None; planned.len()];
    let mut timings = String::new();
    for (i, p) in planned.iter().enumerate() {
        let t = Instant::now();
        if let Some(d) = &p.device {
            devices::copy_info(ctx.conf.device_info_dir(), d);
        }
        let rt = ctx.rt(
            &p.ifname,
            ctx.delegate_args.clone(),
            p.capability_args.clone(),
        );
        match ctx.invoker.add_list(&p.list, &rt) {
            Ok(r) => {
                cache.attachments[i].set_result(&r);
                results[i] = Some(r);
                if let Err(e) = cache.save(ctx.cni_dir()) {
                    Plexus::rollback(ctx, &cache, i);
                    return Err(io_error("cannot write the attachment cache", e));
                }
            }
            Err(e) => {
                Plexus::rollback(ctx, &cache, i);
                return Err(delegate_error(&ctx.who(), "ADD", &p.network, &p.ifname, e));
            }
        }
        let _ = write!(
            timings,
            "{}{}={}({}ms)",
            if i == 0 { "" } else { " " },
            p.ifname,
            p.network,
            t.elapsed().as_millis()
        );
    }
    let last = planned.len() - 1;

    if let Some((k, gws)) = planned.iter().enumerate().find_map(|(k, p)| {
        p.default_route
            .as_ref()
            .filter(|g| !g.is_empty())
            .map(|g| (k, g))
    }) {
        let moved = ctx
            .req
            .netns
            .as_deref()
            .ok_or_else(|| CniError::new(code::INVALID_ENVIRONMENT, "CNI_NETNS is required"))
            .and_then(|ns| {
                routes::apply(ns, &planned[k].ifname, gws).map_err(|e| {
                    CniError::new(
                        code::IO_FAILURE,
                        format!(
                            "cannot move the default route to {} ({})",
                            planned[k].ifname, planned[k].network
                        ),
                    )
                    .with_details(e.to_string())
                })
            });
        if let Err(e) = moved {
            Plexus::rollback(ctx, &cache, last);
            return Err(e);
        }
        routes::rewrite(&mut results, k, gws);
        for (att, r) in cache.attachments.iter_mut().zip(&results) {
            if let Some(r) = r {
                att.set_result(r);
            }
        }
        if let Err(e) = cache.save(ctx.cni_dir()) {
            Plexus::rollback(ctx, &cache, last);
            return Err(io_error("cannot write the attachment cache", e));
        }
    }

    let entries: Vec<status::NetworkStatus> = planned
        .iter()
        .zip(&results)
        .filter_map(|(p, r)| {
            r.as_ref().map(|r| status::NetworkStatus {
                device_info: p.device.as_ref().and_then(devices::read_info),
                ..status::entry(&p.network, &p.ifname, p.default, r)
            })
        })
        .collect();
    let text = status::render(&entries);
    let pod = ctx.pod.clone().unwrap_or_default();
    if let Err(e) = cluster.set_network_status(&pod, &ctx.req.container_id, &text) {
        Plexus::rollback(ctx, &cache, last);
        return Err(CniError::from(e).with_details("writing k8s.v1.cni.cncf.io/network-status"));
    }

    tracing::info!(
        pod = %ctx.who(),
        container = ctx.req.container_id,
        attachments = timings,
        total_ms = started.elapsed().as_millis() as u64,
        peak_rss_kib = peak_rss_kib(),
        anon_rss_kib = anon_rss_kib(),
        "ADD"
    );
    let added = planned
        .iter()
        .zip(&results)
        .filter_map(|(p, r)| {
            let ips: Vec<String> = r
                .as_ref()?
                .ips
                .iter()
                .map(|i| i.address.to_string())
                .collect();
            Some(format!(
                "Add {} [{}] from {}",
                p.ifname,
                ips.join(","),
                p.network
            ))
        })
        .collect();
    Ok((results.swap_remove(0).unwrap_or_default(), added))
}

impl Plugin for Plexus {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let started = Instant::now();
        let ctx = Ctx::new(req)?;
        if matches!(ctx.mode, Mode::Kube(_)) {
            // Without the pod, its networks cannot be read: say so now,
            // rather than run the cluster network and roll it back.
            let missing: Vec<&str> = ["K8S_POD_NAMESPACE", "K8S_POD_NAME"]
                .into_iter()
                .filter(|k| req.args.get(k).is_none_or(str::is_empty))
                .collect();
            if !missing.is_empty() {
                return Err(CniError::new(
                    code::INVALID_ENVIRONMENT,
                    format!(
                        "CNI_ARGS has no {}: with an API server, plexus reads the pod's networks from the pod",
                        missing.join(" and ")
                    ),
                ));
            }
        }
        wait_ready(&ctx.conf)?;
        let cluster = ctx.cluster()?;
        match attach(&ctx, cluster.as_ref(), started) {
            Ok((result, added)) => {
                if let Some(pod) = &ctx.pod {
                    for message in &added {
                        cluster.event(pod, EventKind::Normal, "AddedInterface", message);
                    }
                }
                Ok(result)
            }
            Err(e) => {
                if let Some(pod) = &ctx.pod {
                    // Multus' reason when a NAD is missing; ours otherwise.
                    let reason = if e.msg.contains("network attachment definition")
                        && e.msg.ends_with("not found")
                    {
                        "NoNetworkFound"
                    } else {
                        "AddInterfaceFailed"
                    };
                    let message = if e.details.is_empty() {
                        e.msg.clone()
                    } else {
                        format!("{}: {}", e.msg, e.details)
                    };
                    cluster.event(pod, EventKind::Warning, reason, &message);
                }
                Err(e)
            }
        }
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let started = Instant::now();
        let ctx = Ctx::new(req)?;
        // Waits for an ADD of the same attachment still running.
        let lock = state::AttachmentLock::take(ctx.cni_dir(), &req.container_id, &req.ifname);
        let cached = match Cache::load(ctx.cni_dir(), &req.container_id, &req.ifname) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "attachment cache unreadable; rebuilding from the pod");
                None
            }
        };
        let from_cache = cached.is_some();
        let Rebuilt {
            attachments,
            lost,
            retry,
        } = match cached {
            Some(c) => Rebuilt {
                attachments: c.attachments,
                lost: Vec::new(),
                retry: None,
            },
            None => rebuild(&ctx),
        };
        let errors = del_all(&ctx, &attachments);
        // A cached attachment whose DEL fails is kept for the runtime's
        // retry, unless its pod is gone: then no retry can ever succeed.
        let gone = if errors.is_empty() || !from_cache {
            None
        } else {
            pod_gone(&ctx)
        };
        if errors.is_empty() || gone.is_some() {
            if let Err(e) = Cache::remove(ctx.cni_dir(), &req.container_id, &req.ifname) {
                return Err(io_error("cannot remove the attachment cache", e));
            }
            if let Some(dir) = &ctx.conf.status_dir
                && matches!(ctx.mode, Mode::Standalone)
                && let Err(e) = remove_status_file(dir, &req.container_id)
            {
                tracing::warn!(error = %e, "cannot remove the network-status file");
            }
        }
        drop(lock);
        let names: Vec<String> = attachments
            .iter()
            .map(|a| format!("{}={}", a.ifname, a.network))
            .collect();
        tracing::info!(
            pod = %ctx.who(),
            container = req.container_id,
            attachments = names.join(" "),
            failed = errors.len(),
            total_ms = started.elapsed().as_millis() as u64,
            peak_rss_kib = peak_rss_kib(),
            anon_rss_kib = anon_rss_kib(),
            "DEL"
        );
        if let Some(why) = gone {
            for e in &errors {
                tracing::warn!(error = %e, "DEL failed and {why}: the attachment is forgotten");
            }
            return Ok(());
        }
        combine("DEL", errors)?;
        for what in &lost {
            tracing::warn!(
                attachment = what,
                "DEL: not rebuilt (no cache), so not deleted"
            );
        }
        match retry {
            Some(why) => Err(CniError::new(
                code::TRY_AGAIN_LATER,
                "DEL ran for the attachments plexus could name without the API server; the pod's own need it",
            )
            .with_details(why)),
            None => Ok(()),
        }
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let ctx = Ctx::new(req)?;
        let cache = Cache::load(ctx.cni_dir(), &req.container_id, &req.ifname)
            .map_err(|e| io_error("attachment cache unreadable", e))?
            .ok_or_else(|| {
                CniError::new(
                    code::UNKNOWN_CONTAINER,
                    format!(
                        "no attachments recorded for container {} ({})",
                        req.container_id, req.ifname
                    ),
                )
            })?;
        for att in &cache.attachments {
            let fail =
                |e: CniError| delegate_error(&ctx.who(), "CHECK", &att.network, &att.ifname, e);
            let list = att.list().map_err(|e| fail(e.into()))?;
            if !list.cni_version.allows_check() || list.disable_check {
                tracing::debug!(network = att.network, "delegate has no CHECK");
                continue;
            }
            let result = result_for(&ctx, att).ok_or_else(|| {
                fail(CniError::new(
                    code::INVALID_NETWORK_CONFIG,
                    "ADD never completed",
                ))
            })?;
            let rt = ctx.rt(&att.ifname, att.args(), att.capability_args.clone());
            ctx.invoker
                .check_list(&list, &rt, &result)
                .map_err(|e| fail(e.into()))?;
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let ctx = Ctx::new(req)?;
        // A probe: say "not ready" now rather than wait.
        is_ready(&ctx.conf)?;
        let cluster = ctx.cluster()?;
        let resolver = Resolver {
            conf: &ctx.conf,
            cluster: Some(cluster.as_ref()),
        };
        let primary = resolver.cluster_network()?;
        ctx.invoker.status_list(&primary.list).map_err(|e| {
            let e: CniError = e.into();
            CniError {
                msg: format!("cluster network {}: {}", primary.name, e.msg),
                ..e
            }
        })?;
        for name in &ctx.conf.default_networks {
            let ready = resolver
                .config_network(name)
                .and_then(|n| ctx.invoker.status_list(&n.list).map_err(CniError::from));
            if let Err(e) = ready {
                tracing::warn!(network = name, error = %e, "default network not ready");
            }
        }
        Ok(())
    }

    fn gc(&self, req: &Request, valid: &[Attachment]) -> Result<(), CniError> {
        let ctx = Ctx::new(req)?;
        let valid_set: HashSet<(&str, &str)> = valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        let mut errors = Vec::new();
        // Per delegate network (by config name): its config and the
        // attachments that are still valid. The cluster network's GC sees
        // every attachment plexus keeps, not only the runtime's eth0s: a
        // NAD that shares its IPAM must not lose its leases.
        let mut networks: HashMap<String, (NetworkConfigList, Vec<Attachment>)> = HashMap::new();
        let mut kept: Vec<Attachment> = valid.to_vec();
        let mut keep = |cache: &Cache, networks: &mut HashMap<_, (NetworkConfigList, Vec<_>)>| {
            for att in &cache.attachments {
                let a = Attachment {
                    container_id: cache.container_id.clone(),
                    ifname: att.ifname.clone(),
                };
                if !kept.contains(&a) {
                    kept.push(a.clone());
                }
                if !att.default
                    && let Ok(list) = att.list()
                {
                    networks
                        .entry(list.name.clone())
                        .or_insert_with(|| (list, Vec::new()))
                        .1
                        .push(a);
                }
            }
        };
        for cache in Cache::all(ctx.cni_dir()) {
            if valid_set.contains(&(cache.container_id.as_str(), cache.ifname.as_str())) {
                keep(&cache, &mut networks);
                continue;
            }
            // Not valid, but its ADD may still be running (its cache is a
            // plan without results yet): not stale, and its leases count.
            let lock = match state::AttachmentLock::try_take(
                ctx.cni_dir(),
                &cache.container_id,
                &cache.ifname,
            ) {
                Ok(Some(l)) => Some(l),
                Ok(None) => {
                    tracing::info!(
                        container = cache.container_id,
                        "GC: ADD in flight; left alone"
                    );
                    keep(&cache, &mut networks);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, container = cache.container_id, "GC: cannot lock the attachment; going on");
                    None
                }
            };
            // A stale attachment: its container is gone without a DEL.
            let stale = RuntimeConf {
                container_id: cache.container_id.clone(),
                netns: cache.netns.clone(),
                ..RuntimeConf::default()
            };
            let mut failed = 0;
            for att in cache.attachments.iter().rev() {
                let rt = RuntimeConf {
                    ifname: att.ifname.clone(),
                    args: att.args(),
                    capability_args: att.capability_args.clone(),
                    ..stale.clone()
                };
                let result = att.result();
                if let Err(e) = del_with(&ctx, &cache.container_id, "GC", &rt, att, result.as_ref())
                {
                    tracing::warn!(error = %e, "GC: DEL failed; the runtime says the container is gone, so the attachment is forgotten");
                    failed += 1;
                    errors.push(e);
                }
            }
            // The runtime named the container as gone: nothing will ever
            // DEL it again, so the cache goes whatever its DELs did (their
            // failures are reported).
            tracing::info!(
                container = cache.container_id,
                failed,
                "GC removed a stale attachment"
            );
            let _ = Cache::remove(ctx.cni_dir(), &cache.container_id, &cache.ifname);
            if let Some(dir) = &ctx.conf.status_dir
                && matches!(ctx.mode, Mode::Standalone)
                && let Err(e) = remove_status_file(dir, &cache.container_id)
            {
                tracing::warn!(error = %e, "cannot remove the network-status file");
            }
            drop(lock);
        }
        let cluster = ctx.cluster()?;
        let resolver = Resolver {
            conf: &ctx.conf,
            cluster: Some(cluster.as_ref()),
        };
        let primary = resolver.cluster_network()?.list;
        let mut lists = vec![(primary, kept)];
        lists.extend(networks.into_values());
        for (list, atts) in &lists {
            if let Err(errs) = ctx.invoker.gc_list(list, atts) {
                errors.extend(errs.into_iter().map(CniError::from));
            }
        }
        combine("GC", errors)
    }
}

/// What DEL without a cache could rebuild.
struct Rebuilt {
    /// The attachments to DEL.
    attachments: Vec<CachedAttachment>,
    /// What can never be rebuilt, each with why: logged, and DEL still
    /// succeeds (a bad annotation, a missing NAD, a pod that is gone).
    lost: Vec<String>,
    /// Why the rest has to wait for the API server: DEL then answers 11.
    retry: Option<String>,
}

/// DEL without a cache (lost, or damaged): the attachments plexus can
/// still name, from the pod when the API server (or the runtime) has it,
/// else from the config alone. Bounded: every API request of the call
/// together takes at most [`k8s::BUDGET`].
///
/// A permanent problem (an annotation that does not parse, an interface
/// clash, a missing NAD, a pod that is gone or is another pod now, 403, an
/// unusable kubeconfig) leaves out what it hides, and the cluster network
/// and the configured networks are still deleted: such a pod must not stay
/// undeletable. A transient one (no answer, 5xx) does the same and asks
/// the runtime to try again.
fn rebuild(ctx: &Ctx<'_>) -> Rebuilt {
    let mut lost = Vec::new();
    let mut retry = None;
    let note =
        |lost: &mut Vec<String>, retry: &mut Option<String>, what: String, e: &ClusterError| {
            if e.is_transient() {
                *retry = Some(format!("{what}: {e}"));
            } else {
                lost.push(format!("{what}: {e}"));
            }
        };
    let cluster = match ctx.cluster_with(Some(k8s::BUDGET)) {
        Ok(c) => Some(c),
        Err(e) => {
            note(&mut lost, &mut retry, "the pod's networks".into(), &e);
            None
        }
    };
    let info = match (&ctx.pod, &cluster) {
        (Some(pod), Some(c)) => match c.pod(pod) {
            Ok(Some(i)) if same_pod(pod, &i) => Some(i),
            Ok(Some(i)) => {
                lost.push(format!(
                    "the networks of pod {pod}: it is another pod now (UID {})",
                    i.uid.unwrap_or_default()
                ));
                None
            }
            Ok(None) => {
                lost.push(format!("the networks of pod {pod}: the pod is gone"));
                None
            }
            Err(e) => {
                note(
                    &mut lost,
                    &mut retry,
                    format!("the networks of pod {pod}"),
                    &e,
                );
                None
            }
        },
        _ => None,
    };
    let resolver = Resolver {
        conf: &ctx.conf,
        // With the API server not answering, NADs would not either: files
        // only.
        cluster: if retry.is_some() {
            None
        } else {
            cluster.as_deref()
        },
    };
    let ifname = &ctx.req.ifname;
    let rc = &ctx.runtime_config;
    let planned = match resolver.plan(ctx.pod_context(info.as_ref()), ifname, rc, Purpose::Del) {
        Ok((planned, skipped)) => {
            lost.extend(skipped);
            planned
        }
        Err(e) => {
            let why = format!("the pod's networks: {} {}", e.msg, e.details);
            if e.code == code::TRY_AGAIN_LATER {
                retry = Some(why);
            } else {
                lost.push(why);
            }
            // The configured networks only: as for a pod without
            // annotations (in its namespace, for systemNamespaces).
            let bare = PodInfo::default();
            let podctx = ctx.pod.as_ref().map(|pod| PodContext { pod, info: &bare });
            match resolver.plan(podctx, ifname, rc, Purpose::Del) {
                Ok((planned, skipped)) => {
                    lost.extend(skipped);
                    planned
                }
                Err(e) => {
                    lost.push(format!("the cluster network: {} {}", e.msg, e.details));
                    Vec::new()
                }
            }
        }
    };
    // Without a cache there is no knowing that a network whose plugin is
    // not installed was ever added (ADD checks every binary before the
    // first runs): it cannot be deleted either way.
    let mut attachments = Vec::new();
    for p in planned {
        let missing = p
            .list
            .plugins
            .iter()
            .find(|d| ctx.invoker.find(d.plugin_type()).is_err());
        match missing {
            Some(d) => lost.push(format!(
                "{} ({}): plugin {:?} is not installed",
                p.network,
                p.ifname,
                d.plugin_type()
            )),
            None => attachments.push(cached(ctx, &p)),
        }
    }
    Rebuilt {
        attachments,
        lost,
        retry,
    }
}

/// Why a pod whose cached attachments DEL could not delete will never be
/// back for them: it is gone from the API server, or its name is another
/// pod's now. `None` while it exists, in standalone mode, or when the API
/// server cannot tell (then the runtime retries).
fn pod_gone(ctx: &Ctx<'_>) -> Option<String> {
    let pod = ctx.pod.as_ref()?;
    if !matches!(ctx.mode, Mode::Kube(_)) {
        return None;
    }
    let cluster = ctx.cluster_with(Some(k8s::BUDGET)).ok()?;
    match cluster.pod(pod) {
        Ok(None) => Some(format!("pod {pod} is gone from the API server")),
        Ok(Some(i)) if !same_pod(pod, &i) => Some(format!(
            "pod {pod} is another pod now (UID {})",
            i.uid.unwrap_or_default()
        )),
        _ => None,
    }
}

/// What one hot-plug pass changed on a running pod: the messages of its
/// `AddedInterface` and `RemovedInterface` Events.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replugged {
    /// `Add net2 [10.1.2.3/24] from default/macvlan`.
    pub added: Vec<String>,
    /// `Remove net1 from default/macvlan`.
    pub removed: Vec<String>,
}

/// Whether `ifname` is a name plexus gives by position (`net<N>`).
fn positional(ifname: &str) -> bool {
    ifname
        .strip_prefix("net")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl Plexus {
    /// Hot-plug: brings a running pod's attachments in line with its
    /// networks annotation as the cluster has it now. `req` is the pod's
    /// ADD as the runtime sent it (thick mode's daemon keeps it): its
    /// netns, `CNI_ARGS` and config. An attachment whose network left the
    /// annotation gets its DEL, a new one its ADD (on the name the plan
    /// gives it, or the next free `net<N>` when that one is taken); the
    /// cluster network and the attachments that stay are not touched. The
    /// cache and network-status follow, and an Event says what changed.
    /// Nothing happens for a pod without a complete cache (its ADD has not
    /// finished, or it is gone).
    ///
    /// A network that needs a device (a `resourceName` NAD) or moves the
    /// default route cannot be hot-plugged: the kubelet allocates devices
    /// at pod start only. Such an element is refused with a Warning Event.
    ///
    /// # Errors
    /// The pod or a NAD cannot be read, or a delegate failed (the others
    /// still ran; what succeeded is cached and reported).
    pub fn replug(req: &Request) -> Result<Replugged, CniError> {
        let ctx = Ctx::new(req)?;
        let cluster = ctx.cluster()?;
        let Some(info) = pod_info(&ctx, cluster.as_ref())? else {
            return Ok(Replugged::default());
        };
        let cni_dir = ctx.cni_dir();
        let _lock = state::AttachmentLock::take(cni_dir, &req.container_id, &req.ifname);
        let Some(mut cache) = Cache::load(cni_dir, &req.container_id, &req.ifname)
            .map_err(|e| io_error("cannot read the attachment cache", e))?
        else {
            return Ok(Replugged::default());
        };
        if cache.attachments.iter().any(|a| a.result.is_none()) {
            return Ok(Replugged::default());
        }
        let resolver = Resolver {
            conf: &ctx.conf,
            cluster: Some(cluster.as_ref()),
        };
        let pod = ctx.pod.clone().unwrap_or_default();
        // An annotation that cannot be planned changes nothing; the pod's
        // Events say why (Multus's reason for a missing NAD).
        let (planned, _) = resolver
            .plan(
                ctx.pod_context(Some(&info)),
                &req.ifname,
                &ctx.runtime_config,
                Purpose::Add,
            )
            .inspect_err(|e| {
                let reason = if e.msg.contains("network attachment definition")
                    && e.msg.ends_with("not found")
                {
                    "NoNetworkFound"
                } else {
                    "AddInterfaceFailed"
                };
                cluster.event(&pod, EventKind::Warning, reason, &e.msg);
            })?;

        // Which cached attachments stay: the same network on the same
        // name, then (names given by position shift when an earlier
        // element goes) the same network on another `net<N>`.
        // Which cached attachments the plan still has: the same network on
        // the same name, then (names given by position shift when an
        // earlier element goes) the same network on another `net<N>`.
        let mut matched: Vec<bool> = cache.attachments.iter().map(|a| a.default).collect();
        let mut wanted: Vec<&Planned> = Vec::new();
        for p in planned.iter().filter(|p| !p.default) {
            match cache
                .attachments
                .iter()
                .enumerate()
                .position(|(i, a)| !matched[i] && a.network == p.network && a.ifname == p.ifname)
            {
                Some(i) => matched[i] = true,
                None => wanted.push(p),
            }
        }
        let mut to_add: Vec<&Planned> = Vec::new();
        for p in wanted {
            match cache.attachments.iter().enumerate().position(|(i, a)| {
                !matched[i]
                    && a.network == p.network
                    && positional(&a.ifname)
                    && positional(&p.ifname)
            }) {
                Some(i) => matched[i] = true,
                None => to_add.push(p),
            }
        }
        // Only the annotation's attachments (`<namespace>/<nad>`) are
        // hot-plug's to remove: config-file networks and what `/delegate`
        // added (named by their config) stay.
        let kept: Vec<bool> = cache
            .attachments
            .iter()
            .zip(&matched)
            .map(|(a, m)| *m || !a.network.contains('/'))
            .collect();
        let who = ctx.who();
        let mut out = Replugged::default();
        let mut errors = Vec::new();

        // Removals first: they free their names.
        let mut left = Vec::with_capacity(cache.attachments.len());
        for (att, keep) in cache.attachments.drain(..).zip(kept) {
            if keep {
                left.push(att);
                continue;
            }
            let rt = ctx.rt(&att.ifname, att.args(), att.capability_args.clone());
            match del_with(&ctx, &who, "DEL", &rt, &att, att.result().as_ref()) {
                Ok(()) => out
                    .removed
                    .push(format!("Remove {} from {}", att.ifname, att.network)),
                Err(e) => {
                    cluster.event(&pod, EventKind::Warning, "RemoveInterfaceFailed", &e.msg);
                    errors.push(e);
                    left.push(att);
                }
            }
        }
        cache.attachments = left;
        if !out.removed.is_empty() {
            cache
                .save(cni_dir)
                .map_err(|e| io_error("cannot write the attachment cache", e))?;
        }

        for p in to_add {
            let refuse = if p.resource.is_some() {
                Some("it needs a device, which the kubelet allocates at pod start only")
            } else if p.default_route.is_some() {
                Some("it asks for the default route, which hot-plug does not move")
            } else {
                None
            };
            if let Some(why) = refuse {
                let e = CniError::new(
                    code::INVALID_NETWORK_CONFIG,
                    format!(
                        "[{who}:{}] cannot be added to a running pod: {why}",
                        p.network
                    ),
                );
                cluster.event(&pod, EventKind::Warning, "AddInterfaceFailed", &e.msg);
                errors.push(e);
                continue;
            }
            let mut ifname = p.ifname.clone();
            if cache.attachments.iter().any(|a| a.ifname == ifname) {
                ifname = (1..)
                    .map(|n| format!("net{n}"))
                    .find(|n| !cache.attachments.iter().any(|a| &a.ifname == n))
                    .unwrap_or_default();
            }
            let mut att = CachedAttachment {
                ifname: ifname.clone(),
                ..cached(&ctx, p)
            };
            let rt = ctx.rt(
                &ifname,
                ctx.delegate_args.clone(),
                p.capability_args.clone(),
            );
            let added = ctx
                .invoker
                .find(p.list.plugins.first().map_or("", |pl| pl.plugin_type()))
                .map_err(|e| delegate_error(&who, "ADD", &p.network, &ifname, e))
                .and_then(|_| {
                    ctx.invoker
                        .add_list(&p.list, &rt)
                        .map_err(|e| delegate_error(&who, "ADD", &p.network, &ifname, e))
                });
            match added {
                Ok(r) => {
                    att.set_result(&r);
                    let ips: Vec<String> = r.ips.iter().map(|i| i.address.to_string()).collect();
                    out.added.push(format!(
                        "Add {ifname} [{}] from {}",
                        ips.join(","),
                        p.network
                    ));
                    cache.attachments.push(att);
                    cache
                        .save(cni_dir)
                        .map_err(|e| io_error("cannot write the attachment cache", e))?;
                }
                Err(e) => {
                    // What the failed ADD may have left, its DEL cleans.
                    let _ = del_with(&ctx, &who, "DEL", &rt, &att, None);
                    cluster.event(&pod, EventKind::Warning, "AddInterfaceFailed", &e.msg);
                    errors.push(e);
                }
            }
        }

        if !out.added.is_empty() || !out.removed.is_empty() {
            let entries: Vec<status::NetworkStatus> = cache
                .attachments
                .iter()
                .filter_map(|a| {
                    a.result().map(|r| status::NetworkStatus {
                        device_info: a.device.as_ref().and_then(devices::read_info),
                        ..status::entry(&a.network, &a.ifname, a.default, &r)
                    })
                })
                .collect();
            cluster
                .set_network_status(&pod, &req.container_id, &status::render(&entries))
                .map_err(|e| {
                    CniError::from(e).with_details("writing k8s.v1.cni.cncf.io/network-status")
                })?;
            for m in &out.removed {
                cluster.event(&pod, EventKind::Normal, "RemovedInterface", m);
            }
            for m in &out.added {
                cluster.event(&pod, EventKind::Normal, "AddedInterface", m);
            }
            tracing::info!(pod = %who, added = ?out.added, removed = ?out.removed, "hot-plug");
        }
        combine("hot-plug", errors).map(|()| out)
    }
}

impl Plexus {
    /// Multus thick's `/delegate` (what multus-dynamic-networks-controller
    /// calls): one delegate network, given by its own config in `req`, is
    /// added to, checked in or deleted from a running pod as `CNI_IFNAME`.
    /// `plexus_conf` holds plexus's keys (the daemon's: `cniDir`, `binDir`,
    /// ...). `attributes` is the request's `interfaceAttributes`: `ips` and
    /// `mac` go to the delegate as the `ips` and `mac` capabilities, and
    /// `cni-args` into every plugin's `args.cni`, as the annotation's
    /// `cni-args` do (Multus thick does the same with them).
    ///
    /// Unlike Multus, the attachment is recorded in the pod's cache (when
    /// plexus set the pod up), so the pod's DEL removes it too; as with
    /// Multus, the caller writes network-status. ADD returns the result.
    ///
    /// # Errors
    /// A bad config, or the delegate's own error.
    pub fn delegate(
        req: &Request,
        plexus_conf: &Value,
        attributes: Option<&Value>,
    ) -> Result<Option<CniResult>, CniError> {
        let conf = PlexusConf::from_value(plexus_conf)?;
        let invoker = Invoker::new(conf.search_path(&req.path));
        let mut list = NetworkConfigList::from_value(req.config.clone())?;
        if let Some(args) = attributes
            .and_then(|a| a.get("cni-args"))
            .and_then(Value::as_object)
            .filter(|a| !a.is_empty())
        {
            list = crate::resolve::inject_cni_args(&list, args)?;
        }
        let mut caps = Map::new();
        if let Some(a) = attributes {
            if let Some(ips) = a
                .get("ips")
                .filter(|v| v.as_array().is_some_and(|l| !l.is_empty()))
            {
                caps.insert("ips".into(), ips.clone());
            }
            if let Some(mac) = a
                .get("mac")
                .filter(|v| v.as_str().is_some_and(|m| !m.is_empty()))
            {
                caps.insert("mac".into(), mac.clone());
            }
        }
        let mut args = req.args.clone();
        if args.get("IgnoreUnknown").is_none() {
            args.0.push(("IgnoreUnknown".into(), "1".into()));
        }
        let rt = RuntimeConf {
            container_id: req.container_id.clone(),
            netns: req.netns.clone(),
            ifname: req.ifname.clone(),
            args,
            capability_args: caps,
        };
        let who = format!("{}:{}", req.container_id, list.name);
        let fail = |verb: &str, e: plexus_cni::invoke::Error| {
            delegate_error(&who, verb, &list.name, &req.ifname, e)
        };
        // The pod's cache, when plexus set the pod up: whichever of its
        // attachments' files names this container.
        let cni_dir = conf.cni_dir();
        let pod_cache = Cache::all(cni_dir)
            .into_iter()
            .find(|c| c.container_id == req.container_id);
        let _lock = pod_cache
            .as_ref()
            .and_then(|c| state::AttachmentLock::take(cni_dir, &c.container_id, &c.ifname));
        let mut cache = pod_cache.and_then(|c| {
            Cache::load(cni_dir, &c.container_id, &c.ifname)
                .ok()
                .flatten()
        });
        let cached_at = cache.as_ref().and_then(|c| {
            c.attachments
                .iter()
                .position(|a| a.ifname == req.ifname && !a.default)
        });
        let save = |cache: &Cache| {
            cache
                .save(cni_dir)
                .map_err(|e| io_error("cannot write the attachment cache", e))
        };
        match req.command {
            plexus_cni::plugin::Command::Add => {
                if let (Some(c), Some(i)) = (&cache, cached_at) {
                    return Err(CniError::new(
                        code::INVALID_ENVIRONMENT,
                        format!(
                            "{} already has {} (network {})",
                            req.container_id, req.ifname, c.attachments[i].network
                        ),
                    ));
                }
                let r = invoker.add_list(&list, &rt).map_err(|e| fail("ADD", e))?;
                if let Some(c) = cache.as_mut() {
                    let mut att = CachedAttachment {
                        network: list.name.clone(),
                        ifname: req.ifname.clone(),
                        default: false,
                        config: state::list_to_value(&list),
                        capability_args: rt.capability_args.clone(),
                        cni_args: rt.args.to_string(),
                        default_route: None,
                        result: None,
                        device: None,
                    };
                    att.set_result(&r);
                    c.attachments.push(att);
                    save(c)?;
                }
                Ok(Some(r))
            }
            plexus_cni::plugin::Command::Check => {
                let prev = cache
                    .as_ref()
                    .zip(cached_at)
                    .and_then(|(c, i)| c.attachments[i].result());
                let prev = prev.ok_or_else(|| {
                    CniError::new(
                        code::UNKNOWN_CONTAINER,
                        format!("{} has no {} to check", req.container_id, req.ifname),
                    )
                })?;
                invoker
                    .check_list(&list, &rt, &prev)
                    .map_err(|e| fail("CHECK", e))?;
                Ok(None)
            }
            plexus_cni::plugin::Command::Del => {
                let prev = cache
                    .as_ref()
                    .zip(cached_at)
                    .and_then(|(c, i)| c.attachments[i].result());
                invoker
                    .del_list(&list, &rt, prev.as_ref())
                    .map_err(|e| fail("DEL", e))?;
                if let (Some(c), Some(i)) = (cache.as_mut(), cached_at) {
                    c.attachments.remove(i);
                    save(c)?;
                }
                Ok(None)
            }
            other => Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!(
                    "/delegate serves ADD, CHECK and DEL, not {}",
                    other.as_str()
                ),
            )),
        }
    }
}
