//! The committed YAML is what the types generate, and the NAD CRD is the
//! one upstream clusters already have.

use serde_json::{Value, json};

#[test]
fn committed_yaml_is_what_the_generator_writes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, crd) in crds::all() {
        let committed = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("crds/{file}: {e} (run `make crds`)"));
        assert!(
            committed == crds::render(&crd).unwrap(),
            "crds/{file} differs from the Rust types: run `make crds` and commit"
        );
    }
}

/// Upstream's `artifacts/networks-crd.yaml` (NPWG
/// network-attachment-definition-client), as a kube-apiserver compares
/// schemas: structure, types, names, scope; descriptions of spec fields.
#[test]
fn nad_crd_is_schema_identical_to_upstream() {
    let crd = serde_json::to_value(crds::network_attachment_definition()).unwrap();
    assert_eq!(
        crd["metadata"]["name"],
        "network-attachment-definitions.k8s.cni.cncf.io"
    );
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "k8s.cni.cncf.io");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(
        spec["names"],
        json!({"kind": "NetworkAttachmentDefinition", "plural": "network-attachment-definitions",
               "singular": "network-attachment-definition", "shortNames": ["net-attach-def"]})
    );
    let versions = spec["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    let v = &versions[0];
    assert_eq!(
        (&v["name"], &v["served"], &v["storage"]),
        (&json!("v1"), &json!(true), &json!(true))
    );
    assert!(
        v.get("subresources").is_none_or(Value::is_null),
        "upstream has no status"
    );
    let schema = &v["schema"]["openAPIV3Schema"];
    assert_eq!(schema["type"], "object");
    assert!(
        schema.get("required").is_none_or(Value::is_null),
        "upstream requires nothing: {schema:#}"
    );
    let props = schema["properties"].as_object().unwrap();
    let mut keys: Vec<&str> = props.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec"]);
    assert_eq!(props["metadata"]["type"], "object");
    assert_eq!(props["apiVersion"]["type"], "string");
    assert_eq!(props["kind"]["type"], "string");
    let nad_spec = &props["spec"];
    assert_eq!(nad_spec["type"], "object");
    assert_eq!(
        nad_spec["properties"],
        json!({"config": {"type": "string",
               "description": "NetworkAttachmentDefinition config is a JSON-formatted CNI configuration"}})
    );
    assert!(nad_spec.get("required").is_none_or(Value::is_null));
}
