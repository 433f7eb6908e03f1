//! NetworkAttachmentDefinitions (`k8s.cni.cncf.io/v1`) and the delegate
//! config each one stands for (multi-net spec §3.4).
//!
//! Pure: a [`Nad`] comes from the API server or a standalone directory
//! ([`crate::cluster`]); this module only turns it into a network config.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use plexus_cni::CniError;
use plexus_cni::conf::NetworkConfigList;
use plexus_cni::error::code;
use serde::Deserialize;
use serde_json::Value;

/// The NAD annotation naming the device-plugin resource its pods consume.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

/// The parts of a NetworkAttachmentDefinition plexus reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nad {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.config`; empty means "look the name up in `confDir`".
    pub config: String,
    /// `k8s.v1.cni.cncf.io/resourceName`, when set.
    pub resource_name: Option<String>,
}

impl Nad {
    /// `<namespace>/<name>`, the name network-status uses.
    #[must_use]
    pub fn display(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Reads a NAD object as the API returns it (JSON, or YAML from a
    /// standalone directory). `spec` and `spec.config` may be absent.
    ///
    /// # Errors
    /// When it is not a NAD or has no `metadata.name`.
    pub fn from_object(obj: &Value, default_namespace: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Meta {
            name: String,
            #[serde(default)]
            namespace: Option<String>,
            #[serde(default)]
            annotations: BTreeMap<String, String>,
        }
        #[derive(Deserialize, Default)]
        struct Spec {
            #[serde(default)]
            config: String,
        }
        #[derive(Deserialize)]
        struct Obj {
            kind: String,
            metadata: Meta,
            #[serde(default)]
            spec: Option<Spec>,
        }
        let o: Obj = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
        if o.kind != "NetworkAttachmentDefinition" {
            return Err(format!(
                "kind {:?} is not NetworkAttachmentDefinition",
                o.kind
            ));
        }
        Ok(Self {
            namespace: o
                .metadata
                .namespace
                .unwrap_or_else(|| default_namespace.to_owned()),
            resource_name: o
                .metadata
                .annotations
                .get(RESOURCE_NAME_ANNOTATION)
                .cloned(),
            name: o.metadata.name,
            config: o.spec.unwrap_or_default().config,
        })
    }

    /// The delegate network this NAD stands for (spec §3.4.1): `spec.config`
    /// with the NAD's name injected when it has none (§3.4.2); with an empty
    /// spec, the `.conflist` (then `.conf`) in `conf_dir` whose network name
    /// is the NAD's.
    ///
    /// # Errors
    /// Code 7 naming the NAD when the config is not valid JSON, not a valid
    /// network (a `type` with `/` or `..` included), or not found on disk.
    pub fn network(&self, conf_dir: &Path) -> Result<NetworkConfigList, CniError> {
        let invalid = |details: String| {
            CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!(
                    "invalid config in network attachment definition {}",
                    self.display()
                ),
            )
            .with_details(details)
        };
        if self.config.trim().is_empty() {
            return NetworkConfigList::find_in_dir(conf_dir, &self.name)
                .map_err(|e| invalid(e.to_string()))?
                .ok_or_else(|| {
                    invalid(format!(
                        "spec.config is empty and {} has no .conflist or .conf named {:?}",
                        conf_dir.display(),
                        self.name
                    ))
                });
        }
        let mut value: Value =
            serde_json::from_str(&self.config).map_err(|e| invalid(e.to_string()))?;
        if let Value::Object(map) = &mut value {
            let unnamed = map
                .get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if unnamed {
                map.insert("name".into(), Value::String(self.name.clone()));
            }
        }
        let list = NetworkConfigList::from_value(value).map_err(|e| invalid(e.to_string()))?;
        // A NAD is a tenant's data. A delegate of type plexus (or multus)
        // would run plexus as root with the tenant's cniDir, logFile,
        // kubeconfig and isolation settings: only the node's config file
        // configures plexus.
        if let Some(p) = list
            .plugins
            .iter()
            .find(|p| SELF_TYPES.contains(&p.plugin_type()))
        {
            return Err(invalid(format!(
                "a delegate of type {:?} runs plexus itself, which only the node's config may configure",
                p.plugin_type()
            )));
        }
        Ok(list)
    }
}

/// Delegate types that are plexus (or Multus, which a node may have
/// installed under its own name) and that no NAD may name.
pub const SELF_TYPES: &[&str] = &["plexus", "multus", "multus-shim"];

/// Every NAD in a standalone directory: `.yaml`, `.yml` and `.json` files,
/// each holding one or more objects (YAML documents, or a `List`).
/// Objects without a namespace are in `default`. Unreadable files are
/// errors: a typo must not silently drop a network.
///
/// # Errors
/// The file and what is wrong with it.
pub fn load_dir(dir: &Path) -> Result<Vec<Nad>, String> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        out.extend(parse_text(&text).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    Ok(out)
}

/// The NADs in one file's text: YAML documents (JSON is YAML), each a NAD
/// or a `List` of them; objects without a namespace are in `default`.
///
/// # Errors
/// A document that does not parse or is not a NAD.
pub fn parse_text(text: &str) -> Result<Vec<Nad>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).map_err(|e| e.to_string())?;
        if value.is_null() {
            continue;
        }
        let items = match value.get("kind").and_then(Value::as_str) {
            Some("List" | "NetworkAttachmentDefinitionList") => value
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            _ => vec![value],
        };
        for item in items {
            out.push(Nad::from_object(&item, "default")?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nad(config: &str) -> Nad {
        Nad {
            namespace: "ns1".into(),
            name: "macvlan-conf".into(),
            config: config.into(),
            resource_name: None,
        }
    }

    #[test]
    fn name_is_injected_when_missing() {
        let n = nad(r#"{"cniVersion":"0.3.1","type":"macvlan","master":"eth0"}"#);
        let list = n.network(Path::new("/nonexistent")).unwrap();
        assert_eq!(list.name, "macvlan-conf");
        let named = nad(r#"{"cniVersion":"0.3.1","name":"mine","type":"macvlan"}"#);
        assert_eq!(named.network(Path::new("/x")).unwrap().name, "mine");
    }

    #[test]
    fn empty_spec_prefers_conflist_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let conf = json!({"cniVersion":"0.3.1","name":"macvlan-conf","type":"macvlan"});
        let list = json!({"cniVersion":"1.0.0","name":"macvlan-conf",
            "plugins":[{"type":"macvlan"},{"type":"tuning"}]});
        // "00-" sorts first, but the spec wants .conflist before .conf.
        fs::write(dir.path().join("00-a.conf"), conf.to_string()).unwrap();
        fs::write(dir.path().join("99-z.conflist"), list.to_string()).unwrap();
        let got = nad("").network(dir.path()).unwrap();
        assert_eq!(got.plugins.len(), 2);
        let missing = nad("  ").network(Path::new("/nonexistent")).unwrap_err();
        assert_eq!(missing.code, 7);
        assert!(missing.msg.contains("ns1/macvlan-conf"), "{missing:?}");
    }

    #[test]
    fn a_nad_may_not_run_plexus_or_multus() {
        for t in SELF_TYPES {
            let single = format!(r#"{{"cniVersion":"1.0.0","type":"{t}","cniDir":"/etc"}}"#);
            let chained = format!(
                r#"{{"cniVersion":"1.0.0","plugins":[{{"type":"macvlan"}},{{"type":"{t}"}}]}}"#
            );
            for config in [single, chained] {
                let e = nad(&config).network(Path::new("/x")).unwrap_err();
                assert_eq!(e.code, 7, "{config}");
                assert!(e.msg.contains("ns1/macvlan-conf"), "{e:?}");
                assert!(e.details.contains(&format!("\"{t}\"")), "{e:?}");
            }
        }
        assert!(
            nad(r#"{"cniVersion":"1.0.0","type":"plexus-helper"}"#)
                .network(Path::new("/x"))
                .is_ok()
        );
    }

    #[test]
    fn type_outside_bin_dir_is_rejected() {
        let e = nad(r#"{"cniVersion":"1.0.0","type":"../x"}"#)
            .network(Path::new("/x"))
            .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.details.contains("../x"), "{e:?}");
        assert_eq!(
            nad("{not json").network(Path::new("/x")).unwrap_err().code,
            7
        );
    }

    #[test]
    fn directory_of_yaml_and_json() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("a.yaml"),
            r#"apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: macvlan-conf
  annotations:
    k8s.v1.cni.cncf.io/resourceName: intel.com/sriov
spec:
  config: '{"cniVersion":"0.3.1","type":"macvlan"}'
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: from-file
  namespace: other
"#,
        )
        .unwrap();
        fs::write(
            dir.path().join("b.json"),
            json!({"kind":"List","items":[{"kind":"NetworkAttachmentDefinition",
                "metadata":{"name":"c","namespace":"x"},"spec":{"config":"{}"}}]})
            .to_string(),
        )
        .unwrap();
        fs::write(dir.path().join("README.md"), "ignored").unwrap();
        let nads = load_dir(dir.path()).unwrap();
        let names: Vec<String> = nads.iter().map(Nad::display).collect();
        assert_eq!(names, ["default/macvlan-conf", "other/from-file", "x/c"]);
        assert_eq!(nads[0].resource_name.as_deref(), Some("intel.com/sriov"));
        assert_eq!(nads[1].config, "");

        fs::write(
            dir.path().join("c.yaml"),
            "kind: Pod\nmetadata: {name: p}\n",
        )
        .unwrap();
        let e = load_dir(dir.path()).unwrap_err();
        assert!(e.contains("c.yaml") && e.contains("Pod"), "{e}");
    }
}
