//! The agent's `FlowTable` source against the fake API server (real HTTP,
//! the real paths and JSON, the `kube` client unchanged): which tables a
//! node takes, how errors name an entry, how often status is written, and
//! that a node takes back what it wrote.

use std::{collections::BTreeMap, time::Duration};

use plexus_dpu_offload::{
    agent::{FlowReport, Source, TableStatus},
    backend::Backend,
    dump::Location,
    flowtable::{FlowTable, Intervals, KubeSource, client},
};
use plexus_testkit::FakeApiServer;
use serde_json::{Value, json};

const TABLES: &str = "/apis/plexus.dev/v1alpha1/flowtables";
const NODES: &str = "/api/v1/nodes";

fn table(name: &str, selector: &Value, flows: &[&str]) -> Value {
    json!({"apiVersion": "plexus.dev/v1alpha1", "kind": "FlowTable",
           "metadata": {"name": name},
           "spec": {"nodeSelector": selector, "flows": flows}})
}

fn node(name: &str, labels: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
}

fn source(api: &FakeApiServer, node: &str, every: Intervals) -> (KubeSource, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kc);
    let (rt, c) = client(Some(&kc)).unwrap();
    (KubeSource::new(rt, c, node.to_owned(), every), dir)
}

const EAGER: Intervals = Intervals {
    list: Duration::ZERO,
    counters: Duration::ZERO,
};

fn status(table: &str, packets: u64) -> TableStatus {
    TableStatus {
        table: table.to_owned(),
        applied: true,
        error: None,
        flows: vec![FlowReport {
            line: 1,
            flow: "in_port=a,actions=drop".into(),
            backend: Some(Backend::Ebpf),
            location: Some(Location::Ebpf),
            in_hw: false,
            packets,
            bytes: packets * 100,
        }],
        updated: 1,
    }
}

fn patches(api: &FakeApiServer) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .count()
}

fn node_entry(api: &FakeApiServer, table: &str, node: &str) -> Value {
    api.get(TABLES, table).unwrap()["status"]["nodes"][node].clone()
}

#[test]
fn takes_the_tables_selecting_its_node_in_name_order() {
    let api = FakeApiServer::start();
    api.put(NODES, node("n1", &json!({"dpu": "yes", "zone": "a"})));
    api.put(
        TABLES,
        table("b", &json!({"dpu": "yes"}), &["in_port=x,actions=drop"]),
    );
    api.put(
        TABLES,
        table(
            "a",
            &json!({}),
            &["in_port=y,actions=drop", "in_port=z,actions=drop"],
        ),
    );
    api.put(
        TABLES,
        table(
            "c",
            &json!({"dpu": "yes", "zone": "b"}),
            &["in_port=q,actions=drop"],
        ),
    );
    let (mut src, _d) = source(&api, "n1", EAGER);
    let tables = src.tables().unwrap();
    assert_eq!(
        tables,
        [
            (
                "a".to_owned(),
                "in_port=y,actions=drop\nin_port=z,actions=drop\n".to_owned()
            ),
            ("b".to_owned(), "in_port=x,actions=drop\n".to_owned()),
        ]
    );
    assert_eq!(src.place("a", 2), "flowtable/a spec.flows[1]");
    // The list asks the watch cache (resourceVersion=0), and the node is
    // read for its labels.
    let reqs = api.requests();
    assert!(reqs.iter().any(|r| r.path == TABLES), "{reqs:?}");
    assert!(
        reqs.iter().any(|r| r.path == "/api/v1/nodes/n1"),
        "{reqs:?}"
    );
}

#[test]
fn no_selector_anywhere_means_the_node_is_not_read() {
    let api = FakeApiServer::start();
    api.put(TABLES, table("a", &json!({}), &["in_port=y,actions=drop"]));
    // No node object at all: a table for every node does not need one.
    let (mut src, _d) = source(&api, "n1", EAGER);
    assert_eq!(src.tables().unwrap().len(), 1);
    // One with a selector does, and a missing node is an error, not "no
    // tables" (which would remove every flow).
    api.put(
        TABLES,
        table("b", &json!({"dpu": "yes"}), &["in_port=x,actions=drop"]),
    );
    let err = src.tables().unwrap_err().to_string();
    assert!(err.contains("node n1"), "{err}");
}

#[test]
fn an_unreachable_server_is_an_error_and_lists_are_rate_limited() {
    let mut api = FakeApiServer::start();
    api.put(TABLES, table("a", &json!({}), &["in_port=y,actions=drop"]));
    let every = Intervals {
        list: Duration::from_secs(3600),
        counters: Duration::ZERO,
    };
    let (mut src, _d) = source(&api, "n1", every);
    assert_eq!(src.tables().unwrap().len(), 1);
    api.put(TABLES, table("b", &json!({}), &["in_port=x,actions=drop"]));
    // Within the list interval the last list stands: one request in all.
    assert_eq!(src.tables().unwrap().len(), 1);
    assert_eq!(api.requests().len(), 1);

    let (mut fresh, _d2) = source(&api, "n1", EAGER);
    // (503 and 429 the client retries by itself; 500 it does not.)
    api.fail_next(&[500]);
    let err = fresh.tables().unwrap_err().to_string();
    assert!(err.contains("listing flowtables"), "{err}");
    api.stop();
    assert!(fresh.tables().is_err());
}

#[test]
fn status_goes_to_its_node_entry_and_counters_alone_are_rate_limited() {
    let api = FakeApiServer::start();
    api.put(TABLES, table("a", &json!({}), &["in_port=a,actions=drop"]));
    api.put(
        TABLES,
        json!({"apiVersion": "plexus.dev/v1alpha1", "kind": "FlowTable",
               "metadata": {"name": "a"}, "spec": {"flows": ["in_port=a,actions=drop"]},
               "status": {"nodes": {"other": {"table": "a", "applied": false, "flows": [], "updated": 5}}}}),
    );
    let every = Intervals {
        list: Duration::ZERO,
        counters: Duration::from_secs(3600),
    };
    let (mut src, _d) = source(&api, "n1", every);
    src.publish(&[status("a", 1)]).unwrap();
    let entry = node_entry(&api, "a", "n1");
    assert_eq!(entry["applied"], true, "{entry:#}");
    assert_eq!(entry["flows"][0]["backend"], "ebpf");
    assert_eq!(entry["flows"][0]["inHw"], false);
    assert!(
        entry.get("error").is_none(),
        "null is a merge patch's delete"
    );
    let st: FlowTable = serde_json::from_value(api.get(TABLES, "a").unwrap()).unwrap();
    assert_eq!(st.status.unwrap().nodes["n1"], status("a", 1));
    assert_eq!(
        node_entry(&api, "a", "other")["updated"],
        5,
        "another node's entry was touched"
    );
    assert_eq!(patches(&api), 1);

    // The same again, and new counters only: nothing written yet.
    src.publish(&[status("a", 1)]).unwrap();
    src.publish(&[status("a", 9)]).unwrap();
    assert_eq!(patches(&api), 1);
    // Anything else is written at once.
    let mut failed = status("a", 9);
    failed.applied = false;
    failed.error = Some("port gone".into());
    src.publish(&[failed]).unwrap();
    assert_eq!(patches(&api), 2);
    assert_eq!(node_entry(&api, "a", "n1")["error"], "port gone");
}

#[test]
fn counters_are_published_once_their_interval_is_up() {
    let api = FakeApiServer::start();
    api.put(TABLES, table("a", &json!({}), &["in_port=a,actions=drop"]));
    let every = Intervals {
        list: Duration::ZERO,
        counters: Duration::from_millis(200),
    };
    let (mut src, _d) = source(&api, "n1", every);
    src.publish(&[status("a", 1)]).unwrap();
    std::thread::sleep(Duration::from_millis(250));
    src.publish(&[status("a", 7)]).unwrap();
    assert_eq!(patches(&api), 2);
    assert_eq!(node_entry(&api, "a", "n1")["flows"][0]["packets"], 7);
}

#[test]
fn a_node_takes_back_its_entry_when_deselected_or_stopping() {
    let api = FakeApiServer::start();
    api.put(NODES, node("n1", &json!({"dpu": "yes"})));
    api.put(
        TABLES,
        table("a", &json!({"dpu": "yes"}), &["in_port=a,actions=drop"]),
    );
    api.put(TABLES, table("b", &json!({}), &["in_port=b,actions=drop"]));
    let (mut src, _d) = source(&api, "n1", EAGER);
    assert_eq!(src.tables().unwrap().len(), 2);
    src.publish(&[status("a", 0), status("b", 0)]).unwrap();
    assert_eq!(node_entry(&api, "a", "n1")["applied"], true);

    // Relabelled: `a` is no longer this node's.
    api.put(NODES, node("n1", &json!({"dpu": "no"})));
    assert_eq!(src.tables().unwrap().len(), 1);
    src.publish(&[status("b", 0)]).unwrap();
    assert_eq!(node_entry(&api, "a", "n1"), Value::Null);
    assert_eq!(node_entry(&api, "b", "n1")["applied"], true);

    // A new agent (after kill -9) finds its stale entry in the list and
    // takes it back too.
    api.put(
        TABLES,
        json!({"apiVersion": "plexus.dev/v1alpha1", "kind": "FlowTable",
               "metadata": {"name": "a"},
               "spec": {"nodeSelector": {"dpu": "yes"}, "flows": ["in_port=a,actions=drop"]},
               "status": {"nodes": {"n1": {"table": "a", "applied": true, "flows": [], "updated": 1}}}}),
    );
    let (mut again, _d2) = source(&api, "n1", EAGER);
    assert_eq!(again.tables().unwrap().len(), 1);
    again.publish(&[status("b", 0)]).unwrap();
    assert_eq!(node_entry(&api, "a", "n1"), Value::Null);

    // Stopping takes back everything; a table deleted meanwhile is fine.
    api.delete(TABLES, "b");
    api.put(TABLES, table("c", &json!({}), &["in_port=c,actions=drop"]));
    again.tables().unwrap();
    again.publish(&[status("c", 0)]).unwrap();
    again.retract().unwrap();
    assert_eq!(node_entry(&api, "c", "n1"), Value::Null);
    let nodes: BTreeMap<String, Value> =
        serde_json::from_value(api.get(TABLES, "c").unwrap()["status"]["nodes"].clone()).unwrap();
    assert!(nodes.is_empty(), "{nodes:?}");
}
