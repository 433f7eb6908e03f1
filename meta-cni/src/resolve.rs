//! From a pod to the ordered list of delegate networks to run: the cluster
//! network (or the pod's `v1.multus-cni.io/default-network`), then
//! `defaultNetworks`, then each network of the annotation, each with its
//! interface name, config and per-attachment runtimeConfig.
//!
//! Decisions only: NADs come through [`Cluster`]; nothing is executed here.
//! Everything is checked before the first delegate runs (a bad annotation,
//! a missing NAD or an undeclared capability fails the ADD untouched).

use std::net::IpAddr;

use plexus_cni::CniError;
use plexus_cni::conf::NetworkConfigList;
use plexus_cni::error::code;
use serde_json::{Map, Value};

use crate::cluster::{Cluster, PodInfo, PodRef};
use crate::config::PlexusConf;
use crate::devices::Device;
use crate::selection::{self, NETWORKS_ANNOTATION, NetworkSelection};
use crate::state::list_to_value;

/// The pod annotation that replaces the cluster network (Multus M26).
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";

/// A network resolved from a name: a NAD or a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// `<namespace>/<nad>`, or the network name of a file-based network.
    pub name: String,
    /// Its delegate config.
    pub list: NetworkConfigList,
    /// The NAD's `k8s.v1.cni.cncf.io/resourceName`: the device resource
    /// each attachment of it takes one device of.
    pub resource: Option<String>,
}

impl Network {
    fn from_nad(nad: &crate::nad::Nad, conf_dir: &std::path::Path) -> Result<Self, CniError> {
        Ok(Self {
            name: nad.display(),
            list: nad.network(conf_dir)?,
            resource: nad.resource_name.clone(),
        })
    }

    fn from_file(name: String, list: NetworkConfigList) -> Self {
        Self {
            name,
            list,
            resource: None,
        }
    }
}

/// One delegate network to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// `<namespace>/<nad>`, or the network name of a file-based network.
    pub network: String,
    /// The delegate config, with names, `args.cni` and device IDs injected.
    pub list: NetworkConfigList,
    /// Its interface in the pod.
    pub ifname: String,
    /// Whether this is the cluster default network.
    pub default: bool,
    /// runtimeConfig for this delegate: the runtime's own for the cluster
    /// network, the annotation's per-attachment keys for the others.
    pub capability_args: Map<String, Value>,
    /// Gateways to move the default route to, from the annotation.
    pub default_route: Option<Vec<IpAddr>>,
    /// The device resource it takes a device of (from the NAD).
    pub resource: Option<String>,
    /// The device it was given (see [`crate::devices`]).
    pub device: Option<Device>,
}

/// Why a plan is made: ADD checks everything a pod may ask for; DEL only
/// needs to name what ADD may have made, so it skips the checks that only
/// guard what a pod may ask for (capabilities, namespace isolation: a
/// setting changed since ADD must not make a pod undeletable) and leaves
/// out what it cannot resolve instead of failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// ADD: strict.
    Add,
    /// DEL rebuilding a lost cache: lenient.
    Del,
}

/// The pod, as far as it is known.
#[derive(Debug, Clone, Copy)]
pub struct PodContext<'a> {
    /// Who.
    pub pod: &'a PodRef,
    /// What the API server (or the runtime) says about it.
    pub info: &'a PodInfo,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_NETWORK_CONFIG, msg)
}

/// Resolves networks against a config and a cluster source.
#[derive(Clone, Copy)]
pub struct Resolver<'a> {
    /// The plexus config.
    pub conf: &'a PlexusConf,
    /// NADs (and pods), when there is a source.
    pub cluster: Option<&'a dyn Cluster>,
}

impl std::fmt::Debug for Resolver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver<'_> {
    /// The NAD source, if there is one that holds NADs.
    fn nads(&self) -> Option<&dyn Cluster> {
        self.cluster.filter(|c| c.has_nads())
    }

    /// A network named in the config (`clusterNetwork`, `defaultNetworks`):
    /// a NAD in `multusNamespace`, then files (Multus C6).
    ///
    /// # Errors
    /// Code 7 when nothing matches; the cluster's error when it is
    /// unreachable.
    pub fn config_network(&self, name: &str) -> Result<Network, CniError> {
        let ns = &self.conf.multus_namespace;
        // Only a DNS-1123 label can be a NAD; paths and conf names skip it.
        let is_object_name = selection::dns_label("network name", name).is_ok();
        // A failed NAD lookup falls back to files, as in Multus: the node's
        // own cluster network must not depend on the API server answering.
        let mut lookup_error = None;
        if let Some(cluster) = self.nads().filter(|_| is_object_name) {
            match cluster.config_nad(ns, name) {
                Ok(Some(nad)) => return Network::from_nad(&nad, self.conf.conf_dir()),
                Ok(None) => {}
                Err(e) => lookup_error = Some(CniError::from(e)),
            }
        }
        match self.conf.network_from_files(name)? {
            Some(list) => {
                if let Some(e) = &lookup_error {
                    tracing::warn!(network = name, error = %e, "NAD lookup failed; using the config file of that name");
                }
                Ok(Network::from_file(list.name.clone(), list))
            }
            None => Err(lookup_error.unwrap_or_else(|| {
                invalid(format!(
                    "network {name:?} is not a network attachment definition in {ns}, \
                     a network in {}, nor a config file or directory",
                    self.conf.conf_dir().display()
                ))
            })),
        }
    }

    /// The cluster network from the config: `clusterNetwork`, else
    /// `delegates[0]`.
    ///
    /// # Errors
    /// As [`Resolver::config_network`].
    pub fn cluster_network(&self) -> Result<Network, CniError> {
        match &self.conf.cluster_network {
            Some(name) => self.config_network(name),
            None => {
                let list = self.conf.first_delegate()?;
                Ok(Network::from_file(list.name.clone(), list))
            }
        }
    }

    /// The NAD a selection names, checked against namespace isolation.
    fn selected_network(
        &self,
        pod_ns: &str,
        sel: &NetworkSelection,
        default_ns: &str,
        purpose: Purpose,
    ) -> Result<Network, CniError> {
        let ns = sel.namespace.as_deref().unwrap_or(default_ns);
        if purpose == Purpose::Add && !self.conf.namespace_allowed(pod_ns, ns) {
            return Err(invalid(format!(
                "namespace isolation: a pod in {pod_ns:?} may not use network {ns}/{} \
                 (allowed: its own namespace and {:?})",
                sel.name, self.conf.global_namespaces
            )));
        }
        match self.nads() {
            Some(cluster) => {
                let nad = cluster.nad(ns, &sel.name)?.ok_or_else(|| {
                    invalid(format!(
                        "network attachment definition {ns}/{} not found",
                        sel.name
                    ))
                })?;
                Network::from_nad(&nad, self.conf.conf_dir())
            }
            // No NAD source at all: the name is looked up on disk, as the
            // spec does for a NAD with an empty spec.
            None => NetworkConfigList::find_in_dir(self.conf.conf_dir(), &sel.name)
                .ok()
                .flatten()
                .map(|l| Network::from_file(format!("{ns}/{}", sel.name), l))
                .ok_or_else(|| {
                    invalid(format!(
                        "network {ns}/{} not found in {}",
                        sel.name,
                        self.conf.conf_dir().display()
                    ))
                }),
        }
    }

    /// The primary network: the pod's default-network annotation when set,
    /// else the configured cluster network.
    fn primary(&self, pod: Option<PodContext<'_>>, purpose: Purpose) -> Result<Network, CniError> {
        let Some(ctx) = pod else {
            return self.cluster_network();
        };
        let Some(text) = ctx.info.annotations.get(DEFAULT_NETWORK_ANNOTATION) else {
            return self.cluster_network();
        };
        let sels = selection::parse(text)
            .map_err(|e| e.with_details(format!("{DEFAULT_NETWORK_ANNOTATION}: {text:?}")))?;
        let [sel] = sels.as_slice() else {
            return Err(invalid(format!(
                "{DEFAULT_NETWORK_ANNOTATION} must name exactly one network, not {}",
                sels.len()
            )));
        };
        self.selected_network(
            &ctx.pod.namespace,
            sel,
            &self.conf.multus_namespace,
            purpose,
        )
    }

    /// Every attachment of the pod, in ADD order: the cluster network,
    /// `delegates[1..]` (without `clusterNetwork`), `defaultNetworks`, the
    /// annotation's networks.
    ///
    /// For ADD the first network that cannot be resolved fails the whole
    /// plan. For DEL (rebuilding a lost cache) such networks are left out
    /// and named in the second list, and the others keep the interface
    /// names they had at ADD.
    ///
    /// # Errors
    /// A bad annotation (6/7), a missing or forbidden NAD (7), an
    /// undeclared capability (7), or an unreachable API server (11).
    pub fn plan(
        &self,
        pod: Option<PodContext<'_>>,
        primary_ifname: &str,
        runtime_config: &Map<String, Value>,
        purpose: Purpose,
    ) -> Result<(Vec<Planned>, Vec<String>), CniError> {
        let strict = purpose == Purpose::Add;
        let mut skipped = Vec::new();
        let primary = self.primary(pod, purpose)?;
        let mut out = vec![Planned {
            network: primary.name,
            list: primary.list,
            ifname: primary_ifname.to_owned(),
            default: true,
            capability_args: runtime_config.clone(),
            default_route: None,
            resource: primary.resource,
            device: None,
        }];

        let system = pod.is_some_and(|c| self.conf.system_namespaces.contains(&c.pod.namespace));
        let defaults: Vec<&String> = if system {
            Vec::new()
        } else {
            self.conf.default_networks.iter().collect()
        };
        let annotated = match pod.and_then(|c| c.info.annotations.get(NETWORKS_ANNOTATION)) {
            Some(text) => selection::parse(text)?,
            None => Vec::new(),
        };
        let delegates = self.conf.extra_delegates()?;
        // Names for every entry first, so that a network left out below
        // does not shift the names of the ones after it.
        let placeholders: Vec<NetworkSelection> = delegates
            .iter()
            .map(|_| NetworkSelection::default())
            .chain(defaults.iter().map(|_| NetworkSelection::default()))
            .chain(annotated.iter().cloned())
            .collect();
        let ifnames = selection::interface_names(&placeholders, primary_ifname, 1)?;
        let mut ifnames = ifnames.into_iter();

        for list in delegates {
            let ifname = ifnames.next().expect("one name per network");
            out.push(Planned {
                network: list.name.clone(),
                list,
                ifname,
                default: false,
                capability_args: Map::new(),
                default_route: None,
                resource: None,
                device: None,
            });
        }
        for name in defaults {
            let ifname = ifnames.next().expect("one name per network");
            match self.config_network(name) {
                Ok(n) => out.push(Planned {
                    network: n.name,
                    list: n.list,
                    ifname,
                    default: false,
                    capability_args: Map::new(),
                    default_route: None,
                    resource: n.resource,
                    device: None,
                }),
                Err(e) if !strict && e.code != code::TRY_AGAIN_LATER => {
                    skipped.push(format!("{name} ({ifname}): {}", e.msg));
                }
                Err(e) => return Err(e),
            }
        }
        let pod_ns = pod.map_or("default", |c| c.pod.namespace.as_str());
        for sel in &annotated {
            let ifname = ifnames.next().expect("one name per network");
            let resolved = self
                .selected_network(pod_ns, sel, pod_ns, purpose)
                .and_then(|n| attachment(n, sel, ifname.clone(), purpose));
            match resolved {
                Ok(p) => out.push(p),
                Err(e) if !strict && e.code != code::TRY_AGAIN_LATER => {
                    skipped.push(format!("{} ({ifname}): {}", sel.name, e.msg));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((out, skipped))
    }
}

/// The per-attachment runtimeConfig a selection asks for (spec §4.1.2).
fn requested_capabilities(sel: &NetworkSelection) -> Map<String, Value> {
    let mut m = Map::new();
    if !sel.ips.is_empty() {
        m.insert("ips".into(), sel.ips.clone().into());
    }
    if let Some(mac) = &sel.mac {
        m.insert("mac".into(), mac.clone().into());
    }
    if let Some(p) = &sel.port_mappings {
        m.insert("portMappings".into(), p.clone());
    }
    if let Some(b) = &sel.bandwidth {
        m.insert("bandwidth".into(), b.clone());
    }
    if let Some(g) = &sel.infiniband_guid {
        m.insert("infinibandGUID".into(), g.clone().into());
    }
    if let Some(d) = &sel.device_id {
        m.insert("deviceID".into(), d.clone().into());
    }
    m
}

/// Builds one annotation attachment: `cni-args` merged into every plugin's
/// `args.cni` (annotation values win), and every requested runtimeConfig key
/// declared by some plugin of the network: the spec's MUST, which Multus
/// skips (libcni then drops the value without a word).
fn attachment(
    n: Network,
    sel: &NetworkSelection,
    ifname: String,
    purpose: Purpose,
) -> Result<Planned, CniError> {
    let Network {
        name: network,
        list,
        resource,
    } = n;
    let caps = requested_capabilities(sel);
    for key in caps.keys().filter(|_| purpose == Purpose::Add) {
        if !list
            .plugins
            .iter()
            .any(|p| p.capabilities().any(|c| c == key))
        {
            return Err(invalid(format!(
                "network {network}: the pod asks for {key:?} but no plugin of {:?} \
                 declares the capability {key:?}",
                list.name
            )));
        }
    }
    let list = match &sel.cni_args {
        Some(args) if !args.is_empty() => inject_cni_args(&list, args)?,
        _ => list,
    };
    Ok(Planned {
        network,
        list,
        ifname,
        default: false,
        capability_args: caps,
        default_route: sel.default_route.clone(),
        resource,
        device: None,
    })
}

/// Merges `args` into `args.cni` of every plugin (CONVENTIONS.md "args in
/// network config"; Multus M31).
pub(crate) fn inject_cni_args(
    list: &NetworkConfigList,
    args: &Map<String, Value>,
) -> Result<NetworkConfigList, CniError> {
    let mut value = list_to_value(list);
    for plugin in value["plugins"].as_array_mut().into_iter().flatten() {
        let Value::Object(p) = plugin else { continue };
        let top = p.entry("args").or_insert_with(|| Value::Object(Map::new()));
        if !top.is_object() {
            *top = Value::Object(Map::new());
        }
        let cni = top
            .as_object_mut()
            .expect("object")
            .entry("cni")
            .or_insert_with(|| Value::Object(Map::new()));
        if !cni.is_object() {
            *cni = Value::Object(Map::new());
        }
        let cni = cni.as_object_mut().expect("object");
        for (k, v) in args {
            cni.insert(k.clone(), v.clone());
        }
    }
    NetworkConfigList::from_value(value).map_err(CniError::from)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;

    use serde_json::json;

    use super::*;
    use crate::cluster::Standalone;

    struct Fixture {
        _dir: tempfile::TempDir,
        conf: PlexusConf,
        cluster: Standalone,
    }

    fn fixture(extra: &Value) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("net.d")).unwrap();
        fs::create_dir_all(d.join("nads")).unwrap();
        fs::write(
            d.join("net.d/pod.conflist"),
            json!({"cniVersion": "1.0.0", "name": "pod-network", "plugins": [
                {"type": "ptp", "capabilities": {"portMappings": true}}]})
            .to_string(),
        )
        .unwrap();
        fs::write(
            d.join("net.d/monitoring.conf"),
            json!({"cniVersion": "0.4.0", "name": "monitoring", "type": "macvlan"}).to_string(),
        )
        .unwrap();
        let nad = |ns: &str, name: &str, config: Value| {
            fs::write(
                d.join(format!("nads/{ns}-{name}.json")),
                json!({"kind": "NetworkAttachmentDefinition",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"config": config.to_string()}})
                .to_string(),
            )
            .unwrap();
        };
        nad(
            "default",
            "mv",
            json!({"cniVersion": "1.0.0", "plugins": [
                {"type": "macvlan", "args": {"cni": {"keep": 1, "over": "nad"}},
                 "capabilities": {"ips": true, "portMappings": true}},
                {"type": "tuning", "capabilities": {"mac": true}}]}),
        );
        let mut conf = json!({"clusterNetwork": "pod-network", "confDir": d.join("net.d")});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        Fixture {
            conf: PlexusConf::from_value(&conf).unwrap(),
            cluster: Standalone::new(Some(&d.join("nads")), BTreeMap::new(), None).unwrap(),
            _dir: dir,
        }
    }

    fn plan(
        f: &Fixture,
        ns: &str,
        networks: &str,
        runtime: &Value,
    ) -> Result<Vec<Planned>, CniError> {
        let pod = PodRef {
            namespace: ns.into(),
            name: "p".into(),
            uid: None,
        };
        let info = PodInfo {
            uid: None,
            annotations: [(NETWORKS_ANNOTATION.to_owned(), networks.to_owned())].into(),
        };
        let r = Resolver {
            conf: &f.conf,
            cluster: Some(&f.cluster),
        };
        r.plan(
            Some(PodContext {
                pod: &pod,
                info: &info,
            }),
            "eth0",
            runtime.as_object().unwrap(),
            Purpose::Add,
        )
        .map(|(p, _)| p)
    }

    #[test]
    fn runtime_config_goes_to_the_cluster_network_only() {
        // Multi-net spec §7.5: the kubelet's portMappings must not reach an
        // attachment, even one whose plugin declares portMappings.
        let f = fixture(&json!({}));
        let runtime = json!({"portMappings": [{"hostPort": 8080, "containerPort": 80}]});
        let p = plan(
            &f,
            "default",
            r#"[{"name": "mv", "ips": ["10.1.1.5/24"]}]"#,
            &runtime,
        )
        .unwrap();
        assert_eq!(p[0].capability_args, *runtime.as_object().unwrap());
        assert_eq!(
            Value::Object(p[1].capability_args.clone()),
            json!({"ips": ["10.1.1.5/24"]})
        );
    }

    #[test]
    fn cni_args_merge_into_every_plugin_with_the_annotation_winning() {
        let f = fixture(&json!({}));
        let p = plan(
            &f,
            "default",
            r#"[{"name": "mv", "cni-args": {"over": "pod", "new": true}}]"#,
            &json!({}),
        )
        .unwrap();
        let plugins = &p[1].list.plugins;
        assert_eq!(
            plugins[0].as_map()["args"]["cni"],
            json!({"keep": 1, "over": "pod", "new": true})
        );
        assert_eq!(
            plugins[1].as_map()["args"]["cni"],
            json!({"over": "pod", "new": true})
        );
    }

    #[test]
    fn undeclared_capability_fails_and_declared_ones_pass() {
        let f = fixture(&json!({}));
        let ok = plan(
            &f,
            "default",
            r#"[{"name": "mv", "mac": "02:00:00:00:00:01"}]"#,
            &json!({}),
        );
        assert!(ok.is_ok(), "tuning declares mac: {ok:?}");
        let e = plan(
            &f,
            "default",
            r#"[{"name": "mv", "bandwidth": {"ingressRate": 1}}]"#,
            &json!({}),
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("\"bandwidth\""), "{e:?}");
    }

    #[test]
    fn default_networks_come_first_except_in_system_namespaces() {
        let f = fixture(&json!({"defaultNetworks": ["monitoring"]}));
        let p = plan(&f, "default", "mv, mv@fast0", &json!({})).unwrap();
        let names: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.network.as_str(), p.ifname.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("pod-network", "eth0"),
                ("monitoring", "net1"),
                ("default/mv", "net2"),
                ("default/mv", "fast0"),
            ]
        );
        assert!(p[0].default && !p[1].default);
        let system = plan(&f, "kube-system", "", &json!({})).unwrap();
        assert_eq!(system.len(), 1, "no defaultNetworks in kube-system");
    }

    #[test]
    fn a_del_plan_skips_the_checks_that_only_guard_an_add() {
        // Isolation switched on since ADD, and a request for a capability
        // the NAD does not declare (any more): ADD refuses, DEL must not.
        let f = fixture(&json!({"namespaceIsolation": true, "globalNamespaces": ""}));
        let pod = PodRef {
            namespace: "team-b".into(),
            name: "p".into(),
            uid: None,
        };
        let info = PodInfo {
            uid: None,
            annotations: [(
                NETWORKS_ANNOTATION.to_owned(),
                r#"[{"name": "mv", "namespace": "default", "bandwidth": {"ingressRate": 1}}]"#
                    .to_owned(),
            )]
            .into(),
        };
        let r = Resolver {
            conf: &f.conf,
            cluster: Some(&f.cluster),
        };
        let ctx = Some(PodContext {
            pod: &pod,
            info: &info,
        });
        let e = r.plan(ctx, "eth0", &Map::new(), Purpose::Add).unwrap_err();
        assert!(e.msg.contains("namespace isolation"), "{e:?}");
        let (p, skipped) = r.plan(ctx, "eth0", &Map::new(), Purpose::Del).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            p.iter().map(|p| p.network.as_str()).collect::<Vec<_>>(),
            ["pod-network", "default/mv"]
        );
    }

    #[test]
    fn lenient_plan_keeps_interface_names_of_what_it_can_resolve() {
        let f = fixture(&json!({}));
        let pod = PodRef {
            namespace: "default".into(),
            name: "p".into(),
            uid: None,
        };
        let info = PodInfo {
            uid: None,
            annotations: [(NETWORKS_ANNOTATION.to_owned(), "gone,mv".to_owned())].into(),
        };
        let r = Resolver {
            conf: &f.conf,
            cluster: Some(&f.cluster),
        };
        let ctx = Some(PodContext {
            pod: &pod,
            info: &info,
        });
        assert!(r.plan(ctx, "eth0", &Map::new(), Purpose::Add).is_err());
        let (p, skipped) = r.plan(ctx, "eth0", &Map::new(), Purpose::Del).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].ifname, "net2", "the missing NAD keeps net1");
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("gone"));
    }
}
