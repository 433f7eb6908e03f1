//! The `FlowTable` custom resource (`plexus.dev/v1alpha1`, cluster-scoped)
//! and the agent's source that reads it from the API server.
//!
//! A `FlowTable` is one flow table: `spec.flows` holds its flows, one per
//! entry, in the same `ovs-ofctl add-flow` syntax as a `.flows` file, and
//! `spec.nodeSelector` picks the nodes it applies to (as a pod's
//! `nodeSelector`: every label must match; empty means every node). The
//! agent on each node lists the tables, applies those selecting its node,
//! and writes what happened to `status.nodes.<node>` with a JSON merge
//! patch of the status subresource, so agents on different nodes never
//! overwrite each other. A node that stops being selected (or an agent
//! that stops) takes its entry back.
//!
//! ```yaml
//! apiVersion: plexus.dev/v1alpha1
//! kind: FlowTable
//! metadata: {name: uplink}
//! spec:
//!   nodeSelector: {plexus.dev/dpu: "true"}
//!   flows:
//!   - in_port=pf0vf0,ip,actions=output:p0
//!   - in_port=p0,ip,nw_dst=10.1.0.5,actions=output:pf0vf0
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Node;
use kube::{
    Client, Config, CustomResource,
    api::{Api, ListParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::agent::{Source, TableStatus};

/// A flow table for the agents of the nodes it selects.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "plexus.dev",
    version = "v1alpha1",
    kind = "FlowTable",
    plural = "flowtables",
    shortname = "ft",
    category = "plexus",
    status = "FlowTableStatus",
    derive = "PartialEq",
    doc = "A flow table (OVS-style flows) that the Plexus dpu-offload agent of every selected \
           node installs into tc-flower or its eBPF datapath, reporting per node where each \
           flow runs and what it counted."
)]
#[serde(rename_all = "camelCase")]
pub struct FlowTableSpec {
    /// The nodes this table applies to: those whose labels include all of
    /// these, as a pod's nodeSelector. Empty or absent: every node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// The flows, one per entry, in `ovs-ofctl add-flow` syntax (e.g.
    /// `priority=100,in_port=pf0vf1,ip,nw_dst=10.0.0.0/24,actions=output:p0`).
    pub flows: Vec<String>,
}

/// What the agents did with a table.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct FlowTableStatus {
    /// Per node name: whether the table is applied there, why not, and per
    /// flow its back end, location, `in_hw` and counters.
    #[serde(default)]
    pub nodes: BTreeMap<String, TableStatus>,
}

impl FlowTable {
    /// Whether this table applies to a node with these labels.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.spec
            .node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }

    /// The table as flow-language text, entry `i` on line `i + 1` (an
    /// entry is one flow: line breaks in it become spaces, so the lines
    /// of errors still name the entry).
    pub fn text(&self) -> String {
        let mut s = String::new();
        for f in &self.spec.flows {
            s.push_str(&f.replace(['\n', '\r'], " "));
            s.push('\n');
        }
        s
    }
}

/// How often the [`KubeSource`] talks to the API server.
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    /// List the tables at most this often (in between, the last list
    /// stands).
    pub list: Duration,
    /// Publish a status whose only change is counters at most this often
    /// (any other change is published at once).
    pub counters: Duration,
}

/// A client of the API server for the agent: from a kubeconfig file, or
/// the in-cluster service account when `None`.
///
/// # Errors
/// The kubeconfig cannot be read or names no usable cluster, or there is
/// no in-cluster config.
pub fn client(kubeconfig: Option<&Path>) -> anyhow::Result<(tokio::runtime::Runtime, Client)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
            rt.block_on(Config::from_custom_kubeconfig(
                kc,
                &KubeConfigOptions::default(),
            ))
            .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?
        }
        None => Config::incluster().map_err(|e| anyhow::anyhow!("in-cluster config: {e}"))?,
    };
    // A server that is down costs a cycle seconds, not minutes.
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(5));
    config.write_timeout = Some(Duration::from_secs(5));
    let client = {
        let _guard = rt.enter();
        Client::try_from(config)?
    };
    Ok((rt, client))
}

/// Tables from the `FlowTable` resources selecting one node; status into
/// their `status.nodes.<node>`.
pub struct KubeSource {
    rt: tokio::runtime::Runtime,
    tables: Api<FlowTable>,
    nodes: Api<Node>,
    node: String,
    every: Intervals,
    /// The last list: when, and the tables selecting this node.
    listed: Option<(Instant, Vec<(String, String)>)>,
    /// Tables not selecting this node that still carry its status.
    stale: BTreeSet<String>,
    /// What was last published per table, and when.
    published: BTreeMap<String, (TableStatus, Instant)>,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("node", &self.node)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// The status without what changes on its own (counters, time).
fn shape(s: &TableStatus) -> TableStatus {
    let mut s = s.clone();
    s.updated = 0;
    for f in &mut s.flows {
        f.packets = 0;
        f.bytes = 0;
    }
    s
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// An API error as a person reads it: `500 InternalError: message`.
fn said(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        e => e.to_string(),
    }
}

impl KubeSource {
    /// The source for node `node`, talking through `client` on `rt`.
    pub fn new(
        rt: tokio::runtime::Runtime,
        client: Client,
        node: String,
        every: Intervals,
    ) -> Self {
        Self {
            rt,
            tables: Api::all(client.clone()),
            nodes: Api::all(client),
            node,
            every,
            listed: None,
            stale: BTreeSet::new(),
            published: BTreeMap::new(),
        }
    }

    fn patch_node_entry(&self, table: &str, entry: &serde_json::Value) -> anyhow::Result<()> {
        let patch = json!({"status": {"nodes": {&self.node: entry}}});
        match self.rt.block_on(self.tables.patch_status(
            table,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )) {
            Ok(_) => Ok(()),
            // Deleted meanwhile: its status went with it.
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(anyhow::anyhow!("flowtable {table}: status: {}", said(&e))),
        }
    }
}

impl Source for KubeSource {
    fn tables(&mut self) -> anyhow::Result<Vec<(String, String)>> {
        if let Some((at, tables)) = &self.listed
            && at.elapsed() < self.every.list
        {
            return Ok(tables.clone());
        }
        // resourceVersion=0: served from the API server's watch cache.
        let list = self
            .rt
            .block_on(self.tables.list(&ListParams::default().match_any()))
            .map_err(|e| anyhow::anyhow!("listing flowtables: {}", said(&e)))?;
        let labels = if list.items.iter().any(|t| !t.spec.node_selector.is_empty()) {
            let node = self
                .rt
                .block_on(self.nodes.get(&self.node))
                .map_err(|e| anyhow::anyhow!("node {}: {}", self.node, said(&e)))?;
            node.metadata.labels.unwrap_or_default()
        } else {
            BTreeMap::new()
        };
        let mut tables = Vec::new();
        self.stale.clear();
        for t in &list.items {
            let Some(name) = t.metadata.name.clone() else {
                continue;
            };
            if t.selects(&labels) {
                tables.push((name, t.text()));
            } else if t
                .status
                .as_ref()
                .is_some_and(|s| s.nodes.contains_key(&self.node))
            {
                self.stale.insert(name);
            }
        }
        tables.sort();
        self.listed = Some((Instant::now(), tables.clone()));
        Ok(tables)
    }

    fn place(&self, table: &str, line: usize) -> String {
        format!("flowtable/{table} spec.flows[{}]", line.saturating_sub(1))
    }

    fn publish(&mut self, status: &[TableStatus]) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        for st in status {
            let due = match self.published.get(&st.table) {
                None => true,
                Some((last, at)) => {
                    shape(last) != shape(st) || (last != st && at.elapsed() >= self.every.counters)
                }
            };
            if !due {
                continue;
            }
            match self.patch_node_entry(&st.table, &serde_json::to_value(st)?) {
                Ok(()) => {
                    self.published
                        .insert(st.table.clone(), (st.clone(), Instant::now()));
                    self.stale.remove(&st.table);
                }
                Err(e) => failed.push(format!("{e:#}")),
            }
        }
        // Tables this node no longer runs: take its entry back.
        let gone: BTreeSet<String> = self
            .published
            .keys()
            .filter(|t| !status.iter().any(|s| &s.table == *t))
            .cloned()
            .chain(std::mem::take(&mut self.stale))
            .collect();
        for t in gone {
            match self.patch_node_entry(&t, &serde_json::Value::Null) {
                Ok(()) => {
                    self.published.remove(&t);
                }
                Err(e) => {
                    self.stale.insert(t);
                    failed.push(format!("{e:#}"));
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", failed.join("; "))
        }
    }

    fn retract(&mut self) -> anyhow::Result<()> {
        let mine: BTreeSet<String> = std::mem::take(&mut self.published)
            .into_keys()
            .chain(std::mem::take(&mut self.stale))
            .collect();
        let mut failed = Vec::new();
        for t in mine {
            if let Err(e) = self.patch_node_entry(&t, &serde_json::Value::Null) {
                failed.push(format!("{e:#}"));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", failed.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn crd_is_cluster_scoped_with_a_status_subresource() {
        let crd = FlowTable::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("flowtables.plexus.dev"));
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.short_names, Some(vec!["ft".to_owned()]));
        let v = &crd.spec.versions[0];
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let schema = serde_json::to_value(&v.schema).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], json!(["flows"]), "{spec:#}");
        assert_eq!(spec["properties"]["flows"]["items"]["type"], "string");
        let node = &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["nodes"];
        assert_eq!(
            node["additionalProperties"]["properties"]["flows"]["items"]["properties"]["inHw"]["type"],
            "boolean",
            "{node:#}"
        );
    }

    #[test]
    fn selector_and_text() {
        let t: FlowTable = serde_json::from_value(json!({
            "apiVersion": "plexus.dev/v1alpha1", "kind": "FlowTable",
            "metadata": {"name": "t"},
            "spec": {"nodeSelector": {"dpu": "yes"},
                     "flows": ["in_port=a,actions=drop", "in_port=b,\nactions=drop"]}
        }))
        .unwrap();
        let mut labels = BTreeMap::from([("dpu".to_owned(), "no".to_owned())]);
        assert!(!t.selects(&labels));
        labels.insert("dpu".into(), "yes".into());
        assert!(t.selects(&labels));
        assert_eq!(
            t.text(),
            "in_port=a,actions=drop\nin_port=b, actions=drop\n"
        );
        let all: FlowTable = serde_json::from_value(json!({
            "apiVersion": "plexus.dev/v1alpha1", "kind": "FlowTable",
            "metadata": {"name": "all"}, "spec": {"flows": []}
        }))
        .unwrap();
        assert!(all.selects(&BTreeMap::new()));
    }
}
