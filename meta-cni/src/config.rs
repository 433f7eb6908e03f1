//! The `plexus` network configuration: Multus' keys, read leniently.
//!
//! This is a format Multus users already have on disk, so unknown keys are
//! ignored rather than rejected: a cluster switches by changing `"type"`.
//! Keys are read here; what they mean is applied in [`crate::plugin`].

use std::path::{Path, PathBuf};

use plexus_cni::CniError;
use plexus_cni::conf::{NetworkConfigList, config_files};
use plexus_cni::error::code;
use serde::Deserialize;
use serde_json::Value;

/// Multus' default for `confDir` (C2).
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/multus/net.d";
/// Multus' default for `binDir` (C4).
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";

/// The keys of a `plexus` (or `multus`) config that this build acts on.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlexusConf {
    /// C6: the cluster network, by name in `confDir`, a directory, or a path.
    #[serde(default)]
    pub cluster_network: Option<String>,
    /// C5: inline delegate configs; `delegates[0]` is the cluster network
    /// when `clusterNetwork` is not set.
    #[serde(default)]
    pub delegates: Vec<Value>,
    /// C2: where named networks are looked up.
    #[serde(default)]
    pub conf_dir: Option<PathBuf>,
    /// C4: prepended to `CNI_PATH` when searching delegates.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
}

impl PlexusConf {
    /// Reads the keys from the whole stdin config.
    ///
    /// # Errors
    /// Code 7 when a known key has the wrong type.
    pub fn from_value(config: &Value) -> Result<Self, CniError> {
        serde_json::from_value(config.clone()).map_err(|e| {
            CniError::new(code::INVALID_NETWORK_CONFIG, "invalid plexus configuration")
                .with_details(e.to_string())
        })
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

    /// Resolves the cluster network (C6, without the NAD step, which needs
    /// the API server): `clusterNetwork` as a network name in `confDir`, as a
    /// directory (its first config file), or as a file path; otherwise
    /// `delegates[0]`.
    ///
    /// # Errors
    /// Code 7 when neither key gives a usable network.
    pub fn cluster_network(&self) -> Result<NetworkConfigList, CniError> {
        let invalid = |msg: String| CniError::new(code::INVALID_NETWORK_CONFIG, msg);
        if let Some(name) = &self.cluster_network {
            let conf_dir = self
                .conf_dir
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_CONF_DIR));
            if let Ok(Some(list)) = NetworkConfigList::find_in_dir(conf_dir, name) {
                return Ok(list);
            }
            let path = Path::new(name);
            if name.contains('/') && path.is_dir() {
                let first = config_files(path)
                    .map_err(CniError::from)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        invalid(format!("clusterNetwork directory {name} has no CNI config"))
                    })?;
                return NetworkConfigList::load_file(&first).map_err(CniError::from);
            }
            if path.is_absolute() && path.is_file() {
                return NetworkConfigList::load_file(path).map_err(CniError::from);
            }
            return Err(invalid(format!(
                "clusterNetwork {name:?} is not a network in {} nor a config file or directory",
                conf_dir.display()
            )));
        }
        let first = self.delegates.first().ok_or_else(|| {
            invalid("one of \"clusterNetwork\" or \"delegates\" is required".into())
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
    fn resolution_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(
            d.join("10-a.conf"),
            json!({"cniVersion": "0.3.1", "name": "k8s-pod-network", "type": "ptp"}).to_string(),
        )
        .unwrap();
        let by_name =
            PlexusConf::from_value(&json!({"clusterNetwork": "k8s-pod-network", "confDir": d,
            "delegates": [{"cniVersion": "1.0.0", "name": "ignored", "type": "bridge"}]}))
            .unwrap();
        assert_eq!(
            by_name.cluster_network().unwrap().plugins[0].plugin_type(),
            "ptp"
        );

        let by_dir =
            PlexusConf::from_value(&json!({"clusterNetwork": d, "confDir": "/nonexistent"}))
                .unwrap();
        assert_eq!(by_dir.cluster_network().unwrap().name, "k8s-pod-network");

        let by_path =
            PlexusConf::from_value(&json!({"clusterNetwork": d.join("10-a.conf")})).unwrap();
        assert_eq!(by_path.cluster_network().unwrap().name, "k8s-pod-network");

        let delegates = PlexusConf::from_value(&json!({"delegates": [
            {"cniVersion": "1.0.0", "name": "d0", "plugins": [{"type": "bridge"}]}]}))
        .unwrap();
        assert_eq!(delegates.cluster_network().unwrap().name, "d0");
    }

    #[test]
    fn missing_or_bad_cluster_network_is_code_7() {
        for conf in [
            json!({}),
            json!({"clusterNetwork": "nope", "confDir": "/nonexistent"}),
            json!({"delegates": [{"cniVersion": "1.0.0", "name": "x", "type": "../evil"}]}),
        ] {
            let c = PlexusConf::from_value(&conf).unwrap();
            assert_eq!(c.cluster_network().unwrap_err().code, 7, "{conf}");
        }
        assert_eq!(
            PlexusConf::from_value(&json!({"delegates": 3}))
                .unwrap_err()
                .code,
            7
        );
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
