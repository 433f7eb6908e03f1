//! Network configuration: `.conflist` lists and legacy single-plugin `.conf`
//! files (SPEC.md §1), loaded the way libcni loads them.
//!
//! Plugin objects are kept as JSON maps so that every key a delegate owns
//! reaches it unchanged; only the keys the runtime needs are read.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{CniError, code};
use crate::validate;
use crate::version::Version;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a JSON object.
    #[error("network configuration is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// A required key is missing or has the wrong type.
    #[error("network configuration: {0}")]
    Invalid(String),
    /// No version in `cniVersion`/`cniVersions` is one we speak.
    #[error("network {name:?}: no supported CNI version in {offered:?}")]
    Version {
        /// The network.
        name: String,
        /// What the config offered.
        offered: Vec<String>,
    },
}

impl From<ConfError> for CniError {
    fn from(e: ConfError) -> Self {
        let code = match &e {
            ConfError::Io { .. } => code::IO_FAILURE,
            ConfError::Json(_) => code::DECODING_FAILURE,
            ConfError::Invalid(_) => code::INVALID_NETWORK_CONFIG,
            ConfError::Version { .. } => code::INCOMPATIBLE_VERSION,
        };
        CniError::new(code, e.to_string())
    }
}

/// One plugin object of a list: its `type`, its `capabilities`, and every
/// other key untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf(Map<String, Value>);

impl PluginConf {
    /// Checks that `type` names a binary (no path, no `..`).
    ///
    /// # Errors
    /// When `type` is missing, empty, or could escape the plugin directories.
    pub fn new(map: Map<String, Value>) -> Result<Self, ConfError> {
        let ty = map
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| ConfError::Invalid("plugin object without a \"type\"".into()))?;
        check_type(ty)?;
        Ok(Self(map))
    }

    /// The plugin binary's name.
    #[must_use]
    pub fn plugin_type(&self) -> &str {
        self.0["type"].as_str().unwrap_or_default()
    }

    /// Capabilities the plugin declares as `true`.
    pub fn capabilities(&self) -> impl Iterator<Item = &str> {
        self.0
            .get("capabilities")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(_, on)| on.as_bool() == Some(true))
            .map(|(k, _)| k.as_str())
    }

    /// The object as given.
    #[must_use]
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

/// A plugin `type` must be a bare file name: libcni's `FindInPath` rejects
/// path separators, and `..` would let a config reach outside `CNI_PATH`.
///
/// # Errors
/// When the name is empty, contains `/` or NUL, or is `.`/`..`.
pub fn check_type(ty: &str) -> Result<(), ConfError> {
    if ty.is_empty() || ty == "." || ty == ".." || ty.contains(['/', '\0']) {
        return Err(ConfError::Invalid(format!(
            "plugin type {ty:?} is not a plain binary name (no \"/\" or \"..\")"
        )));
    }
    Ok(())
}

/// A network configuration list with its version chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// The network name.
    pub name: String,
    /// The version chosen: the highest we speak of `cniVersion` ∪ `cniVersions`.
    pub cni_version: Version,
    /// Skip CHECK for this network.
    pub disable_check: bool,
    /// Skip GC for this network.
    pub disable_gc: bool,
    /// The plugins, in ADD order.
    pub plugins: Vec<PluginConf>,
}

impl NetworkConfigList {
    /// Parses a `.conflist`.
    ///
    /// # Errors
    /// On bad JSON, a missing name, an empty plugin list, or no shared version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfError> {
        Self::from_value(serde_json::from_slice(bytes).map_err(ConfError::Json)?)
    }

    /// Parses either shape: an object with `plugins` is a list, anything else
    /// a single-plugin config that is wrapped into a one-plugin list (libcni's
    /// `ConfListFromConf`).
    ///
    /// # Errors
    /// As [`NetworkConfigList::from_bytes`].
    pub fn from_value(value: Value) -> Result<Self, ConfError> {
        let Value::Object(mut map) = value else {
            return Err(ConfError::Invalid("expected a JSON object".into()));
        };
        let name = map
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ConfError::Invalid("missing \"name\"".into()))?
            .to_owned();
        validate::network_name(&name).map_err(|e| ConfError::Invalid(e.to_string()))?;
        let cni_version = select_version(&name, &map)?;
        let disable_check = flag(&map, "disableCheck")?;
        let disable_gc = flag(&map, "disableGC")?;
        let plugins = match map.remove("plugins") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .into_iter()
                .map(|p| match p {
                    Value::Object(m) => PluginConf::new(m),
                    _ => Err(ConfError::Invalid("plugin entry is not an object".into())),
                })
                .collect::<Result<_, _>>()?,
            Some(Value::Array(_)) => {
                return Err(ConfError::Invalid(format!(
                    "network {name:?} has no plugins"
                )));
            }
            Some(_) => return Err(ConfError::Invalid("\"plugins\" is not a list".into())),
            None => vec![PluginConf::new(map)?],
        };
        Ok(Self {
            name,
            cni_version,
            disable_check,
            disable_gc,
            plugins,
        })
    }

    /// Loads a `.conflist`, `.conf` or `.json` file.
    ///
    /// # Errors
    /// When the file cannot be read or parsed.
    pub fn load_file(path: &Path) -> Result<Self, ConfError> {
        let bytes = fs::read(path).map_err(|source| ConfError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Finds the network `name` in a configuration directory: every
    /// `.conflist` first, then `.conf` and `.json` files, each group in file
    /// name order. Files that fail to parse are skipped, as libcni does.
    ///
    /// # Errors
    /// When the directory cannot be read.
    pub fn find_in_dir(dir: &Path, name: &str) -> Result<Option<Self>, ConfError> {
        for path in config_files(dir)? {
            if let Ok(list) = Self::load_file(&path)
                && list.name == name
            {
                return Ok(Some(list));
            }
        }
        Ok(None)
    }
}

/// The configuration files of a directory in load order: `.conflist` files,
/// then `.conf` and `.json` files, each group sorted by name.
///
/// # Errors
/// When the directory cannot be read.
pub fn config_files(dir: &Path) -> Result<Vec<PathBuf>, ConfError> {
    let io = |source| ConfError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<(u8, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let rank = match path.extension().and_then(|e| e.to_str()) {
            Some("conflist") => 0,
            Some("conf" | "json") => 1,
            _ => continue,
        };
        if path.is_file() {
            files.push((rank, path));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// `cniVersion` ∪ `cniVersions`, highest supported wins (SPEC.md §1).
fn select_version(name: &str, map: &Map<String, Value>) -> Result<Version, ConfError> {
    let mut offered: Vec<String> = Vec::new();
    match map.get("cniVersion") {
        Some(Value::String(v)) => offered.push(v.clone()),
        Some(_) => return Err(ConfError::Invalid("\"cniVersion\" is not a string".into())),
        // libcni's default for a config without a version.
        None => offered.push("0.1.0".into()),
    }
    if let Some(list) = map.get("cniVersions") {
        let items = list
            .as_array()
            .ok_or_else(|| ConfError::Invalid("\"cniVersions\" is not a list".into()))?;
        offered.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    offered
        .iter()
        .filter_map(|v| v.parse::<Version>().ok())
        .max()
        .ok_or_else(|| ConfError::Version {
            name: name.to_owned(),
            offered,
        })
}

/// A boolean flag that libcni also accepts as the strings "true"/"false".
fn flag(map: &Map<String, Value>, key: &str) -> Result<bool, ConfError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(ConfError::Invalid(format!(
            "{key:?} is not a boolean: {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conflist_keeps_unknown_keys() {
        let l = NetworkConfigList::from_value(json!({
            "cniVersion": "1.0.0", "name": "n",
            "plugins": [{"type": "ptp", "ipMasq": true, "x-custom": {"a": 1}},
                        {"type": "tuning", "capabilities": {"mac": true, "ips": false}}]
        }))
        .unwrap();
        assert_eq!(l.cni_version, Version::V1_0_0);
        assert_eq!(l.plugins[0].as_map()["x-custom"], json!({"a": 1}));
        assert_eq!(l.plugins[1].capabilities().collect::<Vec<_>>(), ["mac"]);
    }

    #[test]
    fn single_conf_becomes_a_list() {
        let l = NetworkConfigList::from_value(
            json!({"cniVersion": "0.3.1", "name": "m", "type": "macvlan", "master": "eth0"}),
        )
        .unwrap();
        assert_eq!(l.plugins.len(), 1);
        assert_eq!(l.plugins[0].plugin_type(), "macvlan");
        assert_eq!(l.plugins[0].as_map()["master"], "eth0");
    }

    #[test]
    fn highest_supported_version_wins() {
        let l = NetworkConfigList::from_value(json!({
            "cniVersion": "0.4.0", "cniVersions": ["1.0.0", "1.1.0", "9.0.0"], "name": "n",
            "plugins": [{"type": "x"}]}))
        .unwrap();
        assert_eq!(l.cni_version, Version::V1_1_0);
        let e = NetworkConfigList::from_value(
            json!({"cniVersion": "0.2.0", "name": "n", "plugins": [{"type": "x"}]}),
        )
        .unwrap_err();
        assert_eq!(CniError::from(e).code, code::INCOMPATIBLE_VERSION);
    }

    #[test]
    fn flags_accept_strings() {
        let l = NetworkConfigList::from_value(json!({"cniVersion": "1.1.0", "name": "n",
            "disableCheck": "true", "disableGC": true, "plugins": [{"type": "x"}]}))
        .unwrap();
        assert!(l.disable_check && l.disable_gc);
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let cases = [
            (
                json!({"cniVersion": "1.0.0", "plugins": [{"type": "x"}]}),
                7,
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "a b", "plugins": [{"type": "x"}]}),
                7,
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": []}),
                7,
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../x"}]}),
                7,
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "/bin/sh"}]}),
                7,
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"notype": 1}]}),
                7,
            ),
            (
                json!({"cniVersion": 1, "name": "n", "plugins": [{"type": "x"}]}),
                7,
            ),
        ];
        for (conf, want) in cases {
            let err = NetworkConfigList::from_value(conf.clone()).unwrap_err();
            assert_eq!(CniError::from(err).code, want, "{conf}");
        }
        let e = NetworkConfigList::from_bytes(b"{nope").unwrap_err();
        assert_eq!(CniError::from(e).code, 6);
    }

    #[test]
    fn directory_lookup_prefers_conflist() {
        let dir = tempfile::tempdir().unwrap();
        let w = |f: &str, v: Value| fs::write(dir.path().join(f), v.to_string()).unwrap();
        w(
            "10-a.conf",
            json!({"cniVersion": "0.3.1", "name": "net", "type": "from-conf"}),
        );
        w(
            "20-b.conflist",
            json!({"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "from-list"}]}),
        );
        w(
            "30-c.conflist",
            json!({"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "o"}]}),
        );
        fs::write(dir.path().join("05-broken.conflist"), "{").unwrap();
        fs::write(dir.path().join("README"), "not a config").unwrap();
        let l = NetworkConfigList::find_in_dir(dir.path(), "net")
            .unwrap()
            .unwrap();
        assert_eq!(l.plugins[0].plugin_type(), "from-list");
        assert!(
            NetworkConfigList::find_in_dir(dir.path(), "absent")
                .unwrap()
                .is_none()
        );
        let names: Vec<_> = config_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "05-broken.conflist",
                "20-b.conflist",
                "30-c.conflist",
                "10-a.conf"
            ]
        );
    }
}
