//! The `plexus` network configuration: Multus' keys, read leniently.
//!
//! This is a format Multus users already have on disk, so unknown keys are
//! ignored rather than rejected: a cluster switches by changing `"type"`.
//! Keys are read here; what they mean is applied in [`crate::plugin`] and
//! [`crate::resolve`]. The two keys Multus does not have (`nadDir`,
//! `statusDir`) only matter in standalone mode, without an API server.

use std::path::{Path, PathBuf};

use plexus_cni::CniError;
use plexus_cni::conf::{NetworkConfigList, config_files};
use plexus_cni::error::code;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Multus' default for `confDir` (C2).
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/multus/net.d";
/// Where plexus keeps its per-attachment cache (C3). Not Multus'
/// `/var/lib/cni/multus`: the file format is our own.
pub const DEFAULT_CNI_DIR: &str = "/var/lib/cni/plexus";
/// Multus' default for `binDir` (C4).
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// Multus' default for `multusNamespace` (C12).
pub const DEFAULT_MULTUS_NAMESPACE: &str = "kube-system";
/// The kubelet's PodResources socket.
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = plexus_kubelet_api::POD_RESOURCES_SOCKET;
/// The kubelet's device-manager checkpoint.
pub const DEFAULT_DEVICE_CHECKPOINT: &str =
    "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint";
/// Where device plugins and CNIs exchange device-info files.
pub const DEFAULT_DEVICE_INFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo";

/// The keys of a `plexus` (or `multus`) config that this build acts on.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlexusConf {
    /// C6: the cluster network: a NAD in `multusNamespace`, a network name
    /// in `confDir`, a directory, or a path.
    #[serde(default)]
    pub cluster_network: Option<String>,
    /// C7: networks every pod gets after the cluster network, resolved like
    /// `clusterNetwork`, except in `systemNamespaces`.
    #[serde(default)]
    pub default_networks: Vec<String>,
    /// C5: inline delegate configs; `delegates[0]` is the cluster network
    /// when `clusterNetwork` is not set.
    #[serde(default)]
    pub delegates: Vec<Value>,
    /// C2: where named networks are looked up.
    #[serde(default)]
    pub conf_dir: Option<PathBuf>,
    /// C3: the per-attachment cache directory.
    #[serde(default)]
    pub cni_dir: Option<PathBuf>,
    /// C4: prepended to `CNI_PATH` when searching delegates.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// C8: the API server's kubeconfig; in-cluster config when empty and
    /// `KUBERNETES_SERVICE_HOST` is set; standalone mode otherwise.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// C9: a pod may only use NADs of its own namespace and
    /// `globalNamespaces`.
    #[serde(default)]
    pub namespace_isolation: bool,
    /// C10: a comma-separated string in Multus (a list is accepted too);
    /// replaces the default `["default"]`.
    #[serde(default = "default_global_namespaces", deserialize_with = "comma_list")]
    pub global_namespaces: Vec<String>,
    /// C11: namespaces whose pods get no `defaultNetworks`.
    #[serde(default = "default_system_namespaces")]
    pub system_namespaces: Vec<String>,
    /// C12: the namespace of `clusterNetwork`/`defaultNetworks` NADs and of
    /// the default-network annotation.
    #[serde(default = "default_multus_namespace")]
    pub multus_namespace: String,
    /// C13: a file whose existence means the cluster network is ready.
    #[serde(default, rename = "readinessindicatorfile")]
    pub readiness_indicator_file: Option<PathBuf>,
    /// How long ADD waits for `readinessindicatorfile` (Multus: 45 s).
    #[serde(default = "default_readiness_timeout")]
    pub readiness_timeout_seconds: f64,
    /// C14: `debug`, `verbose`, `error` or `panic` (Multus' names; the
    /// tracing names `trace`/`info`/`warn` work too).
    #[serde(default)]
    pub log_level: Option<String>,
    /// C15: a log file (created 0600 in a 0700 directory).
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// C15: log to stderr as well (Multus' default: true).
    #[serde(default = "yes")]
    pub log_to_stderr: bool,
    /// Standalone mode: a directory of NetworkAttachmentDefinition YAML or
    /// JSON files, standing in for the API server.
    #[serde(default)]
    pub nad_dir: Option<PathBuf>,
    /// Standalone mode: where `<containerID>.json` network-status files go.
    #[serde(default)]
    pub status_dir: Option<PathBuf>,
    /// The kubelet's PodResources socket, asked first for a pod's devices.
    #[serde(default)]
    pub pod_resources_socket: Option<PathBuf>,
    /// The kubelet's device-manager checkpoint, read when the socket is
    /// absent.
    #[serde(default)]
    pub device_checkpoint_file: Option<PathBuf>,
    /// The device-info root, with `dp/` (written by device plugins) and
    /// `cni/` (one file per attachment) below it.
    #[serde(default)]
    pub device_info_dir: Option<PathBuf>,
}

fn default_readiness_timeout() -> f64 {
    45.0
}

fn yes() -> bool {
    true
}

fn default_global_namespaces() -> Vec<String> {
    vec!["default".into()]
}

fn default_system_namespaces() -> Vec<String> {
    vec!["kube-system".into()]
}

fn default_multus_namespace() -> String {
    DEFAULT_MULTUS_NAMESPACE.into()
}

/// `globalNamespaces` is `"a,b"` in Multus; a JSON list reads the same.
fn comma_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        List(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Either::List(l) => l,
    })
}

impl PlexusConf {
    /// Reads the keys from the whole stdin config.
    ///
    /// # Errors
    /// Code 7 when a known key has the wrong type.
    pub fn from_value(config: &Value) -> Result<Self, CniError> {
        let mut conf: Self = serde_json::from_value(config.clone()).map_err(|e| {
            CniError::new(code::INVALID_NETWORK_CONFIG, "invalid plexus configuration")
                .with_details(e.to_string())
        })?;
        // Multus: an empty clusterNetwork is no clusterNetwork.
        conf.cluster_network = conf.cluster_network.filter(|c| !c.is_empty());
        Ok(conf)
    }

    /// The delegate search path: `binDir` first, then `CNI_PATH`.
    #[must_use]
    pub fn search_path(&self, cni_path: &[PathBuf]) -> Vec<PathBuf> {
        self.bin_dir
            .iter()
            .cloned()
            .chain(cni_path.iter().cloned())
            .collect()
    }

    /// `confDir`, or Multus' default.
    #[must_use]
    pub fn conf_dir(&self) -> &Path {
        self.conf_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_CONF_DIR))
    }

    /// `cniDir`, or plexus' default.
    #[must_use]
    pub fn cni_dir(&self) -> &Path {
        self.cni_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_CNI_DIR))
    }

    /// The PodResources socket (`podResourcesSocket`).
    #[must_use]
    pub fn pod_resources_socket(&self) -> &Path {
        self.pod_resources_socket
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_POD_RESOURCES_SOCKET))
    }

    /// The device-manager checkpoint (`deviceCheckpointFile`).
    #[must_use]
    pub fn device_checkpoint_file(&self) -> &Path {
        self.device_checkpoint_file
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_DEVICE_CHECKPOINT))
    }

    /// The device-info root (`deviceInfoDir`).
    #[must_use]
    pub fn device_info_dir(&self) -> &Path {
        self.device_info_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_DEVICE_INFO_DIR))
    }

    /// Whether a pod in `pod_ns` may use a NAD in `nad_ns` (C9, C10).
    #[must_use]
    pub fn namespace_allowed(&self, pod_ns: &str, nad_ns: &str) -> bool {
        !self.namespace_isolation
            || pod_ns == nad_ns
            || self.global_namespaces.iter().any(|g| g == nad_ns)
    }

    /// Resolves a network named in the config (`clusterNetwork`,
    /// `defaultNetworks`) from files, after the NAD step: a network name in
    /// `confDir` (`.conflist` before `.conf`), a directory (its first config
    /// file), or an absolute file path. `None` when none matches.
    ///
    /// # Errors
    /// Code 7 when a matching file or directory does not hold a usable
    /// config.
    pub fn network_from_files(&self, name: &str) -> Result<Option<NetworkConfigList>, CniError> {
        if let Ok(Some(list)) = NetworkConfigList::find_in_dir(self.conf_dir(), name) {
            return Ok(Some(list));
        }
        let path = Path::new(name);
        if name.contains('/') && path.is_dir() {
            let first = config_files(path)
                .map_err(CniError::from)?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    CniError::new(
                        code::INVALID_NETWORK_CONFIG,
                        format!("network directory {name} has no CNI config"),
                    )
                })?;
            return NetworkConfigList::load_file(&first)
                .map(Some)
                .map_err(CniError::from);
        }
        if path.is_absolute() && path.is_file() {
            return NetworkConfigList::load_file(path)
                .map(Some)
                .map_err(CniError::from);
        }
        Ok(None)
    }

    /// `delegates[1..]` as networks: when `clusterNetwork` is not set,
    /// Multus runs every delegate, the first as the cluster network and
    /// the others after it (`net1`, `net2`, ...).
    ///
    /// # Errors
    /// Code 7 naming the delegate that is not a valid config.
    pub fn extra_delegates(&self) -> Result<Vec<NetworkConfigList>, CniError> {
        if self.cluster_network.is_some() {
            return Ok(Vec::new());
        }
        self.delegates
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, d)| {
                NetworkConfigList::from_value(d.clone()).map_err(|e| {
                    CniError::new(
                        code::INVALID_NETWORK_CONFIG,
                        format!("delegates[{i}] is not a valid network config"),
                    )
                    .with_details(e.to_string())
                })
            })
            .collect()
    }

    /// `delegates[0]` as a network, for configs without `clusterNetwork`.
    ///
    /// # Errors
    /// Code 7 when neither key is set or the delegate is not a valid config.
    pub fn first_delegate(&self) -> Result<NetworkConfigList, CniError> {
        let first = self.delegates.first().ok_or_else(|| {
            CniError::new(
                code::INVALID_NETWORK_CONFIG,
                "one of \"clusterNetwork\" or \"delegates\" is required",
            )
        })?;
        NetworkConfigList::from_value(first.clone()).map_err(CniError::from)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use serde_json::json;

    use super::*;

    #[test]
    fn empty_cluster_network_is_unset_and_extra_delegates_follow_the_first() {
        let d = json!([{"cniVersion": "1.0.0", "name": "a", "type": "ptp"},
                       {"cniVersion": "1.0.0", "name": "b", "type": "macvlan"}]);
        let c = PlexusConf::from_value(&json!({"clusterNetwork": "", "delegates": d})).unwrap();
        assert_eq!(c.cluster_network, None);
        assert_eq!(c.first_delegate().unwrap().name, "a");
        let extra = c.extra_delegates().unwrap();
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].name, "b");
        // With a clusterNetwork, delegates are not run (as in Multus).
        let named =
            PlexusConf::from_value(&json!({"clusterNetwork": "x", "delegates": d})).unwrap();
        assert!(named.extra_delegates().unwrap().is_empty());
        let bad = PlexusConf::from_value(&json!({"delegates": [d[0], {"type": 5}]})).unwrap();
        let e = bad.extra_delegates().unwrap_err();
        assert!(e.msg.contains("delegates[1]"), "{e:?}");
    }

    #[test]
    fn network_from_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(
            d.join("10-a.conf"),
            json!({"cniVersion": "0.3.1", "name": "k8s-pod-network", "type": "ptp"}).to_string(),
        )
        .unwrap();
        let by_name = PlexusConf::from_value(&json!({"confDir": d})).unwrap();
        let list = by_name
            .network_from_files("k8s-pod-network")
            .unwrap()
            .unwrap();
        assert_eq!(list.plugins[0].plugin_type(), "ptp");

        let elsewhere = PlexusConf::from_value(&json!({"confDir": "/nonexistent"})).unwrap();
        let by_dir = elsewhere
            .network_from_files(d.to_str().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(by_dir.name, "k8s-pod-network");
        let by_path = elsewhere
            .network_from_files(d.join("10-a.conf").to_str().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(by_path.name, "k8s-pod-network");
        assert!(elsewhere.network_from_files("nope").unwrap().is_none());

        let delegates = PlexusConf::from_value(&json!({"delegates": [
            {"cniVersion": "1.0.0", "name": "d0", "plugins": [{"type": "bridge"}]}]}))
        .unwrap();
        assert_eq!(delegates.first_delegate().unwrap().name, "d0");
    }

    #[test]
    fn missing_or_bad_delegates_are_code_7() {
        for conf in [
            json!({}),
            json!({"delegates": [{"cniVersion": "1.0.0", "name": "x", "type": "../evil"}]}),
        ] {
            let c = PlexusConf::from_value(&conf).unwrap();
            assert_eq!(c.first_delegate().unwrap_err().code, 7, "{conf}");
        }
        assert_eq!(
            PlexusConf::from_value(&json!({"delegates": 3}))
                .unwrap_err()
                .code,
            7
        );
    }

    #[test]
    fn multus_keys_and_defaults() {
        let c = PlexusConf::from_value(&json!({"type": "plexus", "unknownKey": 1})).unwrap();
        assert_eq!(c.global_namespaces, ["default"]);
        assert_eq!(c.system_namespaces, ["kube-system"]);
        assert_eq!(c.multus_namespace, "kube-system");
        assert_eq!(c.cni_dir(), Path::new(DEFAULT_CNI_DIR));
        assert!(c.log_to_stderr);

        let c = PlexusConf::from_value(&json!({"namespaceIsolation": true,
            "globalNamespaces": "default, shared", "readinessindicatorfile": "/r",
            "logLevel": "verbose", "logToStderr": false}))
        .unwrap();
        assert_eq!(c.global_namespaces, ["default", "shared"]);
        assert!(c.namespace_allowed("a", "a"));
        assert!(c.namespace_allowed("a", "shared"));
        assert!(!c.namespace_allowed("a", "b"));
        assert_eq!(c.readiness_indicator_file.as_deref(), Some(Path::new("/r")));
        let list = PlexusConf::from_value(&json!({"globalNamespaces": ["x"]})).unwrap();
        assert_eq!(list.global_namespaces, ["x"]);
        let open = PlexusConf::from_value(&json!({})).unwrap();
        assert!(open.namespace_allowed("a", "b"));
    }

    #[test]
    fn bin_dir_comes_first() {
        let c = PlexusConf::from_value(&json!({"binDir": "/opt/cni/bin"})).unwrap();
        assert_eq!(
            c.search_path(&[PathBuf::from("/usr/lib/cni")]),
            [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
    }
}
